--- http: HTTP/1.1 servers and clients (see docs/http.md).
--
-- Server, streaming API:
--   local server, err = http.createServer({port = 8080, host = "127.0.0.1", ...}, function(req, res)
--       res:setHeader("Content-Type", "text/plain")
--       res:finish("hello")
--   end)
-- Server, the seed's API (handler returns {status, headers, body}):
--   http.serve({host = "127.0.0.1", port = 8080, backlog = 128}, function(request) return {...} end)
-- Router:  local r = http.router(); r:get("/users/:id", fn); http.createServer(opts, r)
-- Client:  local res, err = http.request{method, url, headers, body, timeout}; http.get(url)
local server = require "http.server"
local client = require "http.client"
local router = require "http.router"

local type, getmetatable = type, getmetatable

local http = {}

local function as_handler(h)
    local mt = type(h) == "table" and getmetatable(h)
    if mt and mt.__call then
        return function(req, res)
            return h(req, res)
        end
    end
    return h
end

--- Starts a server whose handler(req, res) runs for each request (see docs/http.md).
--- Returns the server, or nil and an error table (EADDRINUSE ...).
function http.createServer(options, handler)
    if handler == nil and type(options) ~= "table" or (type(options) == "table" and getmetatable(options)) then
        options, handler = {}, options
    end
    return server.listen(options, as_handler(handler), false, "createServer")
end

--- The seed's API: handler(request) returns {status, headers, body}; request has method,
--- path, query, headers and body (a string).
function http.serve(options, handler)
    return server.listen(options, handler, true, "serve")
end

http.request = client.request
http.get = client.get
http.transports = client.transports
http.pool = client.pool
http.closeIdle = client.closeIdle
http.parseUrl = client.parse_url
http.router = router.new
http.decode = require("luaio.http").decode
http.query = require("luaio.http").query

return http
