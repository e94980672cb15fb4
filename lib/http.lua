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
    handler = as_handler(handler)
    if type(options) == "table" and type(options.accessLog) == "function" then
        handler = require("http.access").wrap(handler, options.accessLog)
    end
    return server.listen(options, handler, false, "http.createServer")
end

--- The seed's API: handler(request) returns {status, headers, body}; request has method,
--- path, query, headers and body (a string).
function http.serve(options, handler)
    return server.listen(options, handler, true, "http.serve")
end

--- A handler for a health route (`/healthz`) a load balancer polls: 200 "ok", or 503
--- "draining" once a graceful stop has begun (and 503 "unhealthy" when check() returns
--- false). Works with createServer and routers (req, res) and with http.serve (returns the table).
function http.health(check)
    if check ~= nil and type(check) ~= "function" then
        error("http.health: expected a check function or nothing, got " .. type(check), 2)
    end
    local process = require "process"
    return function(req, res)
        local status, body = 200, "ok\n"
        if process.stopping() then
            status, body = 503, "draining\n"
        elseif check and not check(req) then
            status, body = 503, "unhealthy\n"
        end
        if res == nil then
            return { status = status, headers = { ["Content-Type"] = "text/plain", ["Cache-Control"] = "no-store" },
                body = body }
        end
        res:setStatus(status)
        res:setHeader("Content-Type", "text/plain")
        res:setHeader("Cache-Control", "no-store")
        res:finish(body)
    end
end

http.request = client.request
http.get = client.get
http.transports = client.transports
http.pool = client.pool
http.expectContinue = client.expectContinue
http.closeIdle = client.closeIdle
http.parseUrl = client.parse_url
http.router = router.new
http.static = require("http.static").new
http.decode = require("luaio.http").decode
http.query = require("luaio.http").query

return http
