--- http.router: routes by method and path, with parameters (`/users/:id`) and a catch-all
--- (`/files/*path`), 404 and 405 (with Allow), and a JSON helper.
--
--   local router = http.router()
--   router:get("/users/:id", function(req, res, params) res:json{id = params.id} end)
--   http.createServer({port = 8080}, router)   -- a router is a handler
local core = require "luaio.http"

local type, error, setmetatable, concat, sort, sub, find, gmatch, byte =
    type, error, setmetatable, table.concat, table.sort, string.sub, string.find, string.gmatch, string.byte
local decode = core.decode
local getmetatable, raise = getmetatable, require("luaio.errors").raise
local xpcall, traceback, tostring = xpcall, debug.traceback, tostring

local Router = {}
Router.__index = Router

local function split(path)
    local parts = {}
    for seg in gmatch(path, "[^/]+") do
        parts[#parts + 1] = seg
    end
    return parts
end

-- Routes are kept in a tree of path segments: static children first, then one parameter child,
-- then a catch-all.
local function new_node()
    return { static = {}, param = nil, name = nil, rest = nil, handlers = nil }
end

-- A method called with something else as self (r.add(...) instead of r:add(...)).
local function check(self, fname)
    if getmetatable(self) ~= Router then
        raise(fname, "expected a router as self, got " .. type(self) .. " (call it with ':')")
    end
end

-- fname is the method the user called (router:get ...), so that its mistakes are named by it.
local function add(self, fname, method, pattern, handler)
    check(self, fname)
    if type(pattern) ~= "string" or byte(pattern, 1) ~= 47 then
        raise(fname, "expected a path starting with '/', got "
            .. (type(pattern) == "string" and "'" .. pattern .. "'" or type(pattern)))
    end
    if type(handler) ~= "function" then
        raise(fname, "expected a handler function for " .. method .. " " .. pattern .. ", got " .. type(handler))
    end
    local node = self.root
    for _, seg in ipairs(split(pattern)) do
        local c = byte(seg, 1)
        if c == 58 then -- ':'
            local name = sub(seg, 2)
            if node.param and node.param.name ~= name then
                raise(fname, "parameter :" .. name .. " conflicts with :" .. node.param.name .. " in " .. pattern)
            end
            node.param = node.param or new_node()
            node.param.name = name
            node = node.param
        elseif c == 42 then -- '*'
            node.rest = node.rest or new_node()
            node.rest.name = sub(seg, 2) ~= "" and sub(seg, 2) or "rest"
            node = node.rest
            break
        else
            local child = node.static[seg]
            if not child then
                child = new_node()
                node.static[seg] = child
            end
            node = child
        end
    end
    node.handlers = node.handlers or {}
    node.handlers[method] = handler
    return self
end

function Router:add(method, pattern, handler)
    if type(method) ~= "string" then
        check(self, "router:add")
        raise("router:add", "expected a method name (a string) as argument 1, got " .. type(method))
    end
    return add(self, "router:add", method, pattern, handler)
end

for _, m in ipairs({ "get", "post", "put", "patch", "delete", "head", "options" }) do
    local M, fname = m:upper(), "router:" .. m
    Router[m] = function(self, pattern, handler)
        return add(self, fname, M, pattern, handler)
    end
end

function Router:all(pattern, handler)
    return add(self, "router:all", "*", pattern, handler)
end

--- r:websocket(pattern, function(ws, req, params) ... end[, options]): a GET route that accepts
--- the WebSocket handshake (websocket.accept with options) and hands the connection to the
--- handler; a request that is not a good handshake gets 400 or 426. With a table of handlers
--- {open, message, close} instead of a function, the connection is served by ws:handle (open
--- gets ws, req, params) and holds no task while idle.
function Router:websocket(pattern, handler, options)
    check(self, "router:websocket")
    if type(handler) ~= "function" and type(handler) ~= "table" then
        raise("router:websocket", "expected a handler function or a table of handlers for websocket "
            .. tostring(pattern) .. ", got " .. type(handler))
    end
    local websocket = require("websocket")
    local accept = websocket.accept
    if type(handler) == "table" then
        websocket._check_handlers(handler, "router:websocket")
        return add(self, "router:websocket", "GET", pattern, function(req, res, params)
            local ws = accept(req, res, options)
            if ws then
                ws:handle(handler, req, params)
            end
        end)
    end
    return add(self, "router:websocket", "GET", pattern, function(req, res, params)
        local ws = accept(req, res, options)
        if not ws then
            return
        end
        -- The handler's end closes the connection: 1000, or 1011 when the handler failed.
        local ok, err = xpcall(handler, traceback, ws, req, params)
        ws:close(ok and 1000 or 1011)
        if not ok then
            error(err, 0)
        end
    end)
end

local function match(node, parts, i, params)
    if i > #parts then
        if node.handlers then
            return node
        end
        if node.rest and node.rest.handlers then
            params[node.rest.name] = ""
            return node.rest
        end
        return nil
    end
    local seg = parts[i]
    local child = node.static[seg]
    if child then
        local found = match(child, parts, i + 1, params)
        if found then
            return found
        end
    end
    if node.param then
        local found = match(node.param, parts, i + 1, params)
        if found then
            params[node.param.name] = decode(seg)
            return found
        end
    end
    if node.rest and node.rest.handlers then
        local rest = {}
        for k = i, #parts do
            rest[#rest + 1] = decode(parts[k])
        end
        params[node.rest.name] = concat(rest, "/")
        return node.rest
    end
    return nil
end

local function allow_of(handlers)
    local list = {}
    for m in pairs(handlers) do
        if m ~= "*" then
            list[#list + 1] = m
        end
    end
    if handlers.GET and not handlers.HEAD then
        list[#list + 1] = "HEAD"
    end
    sort(list)
    return concat(list, ", ")
end

--- Handles one request (a router is also callable as a handler).
function Router:handle(req, res)
    check(self, "router:handle")
    local params = {}
    local node = match(self.root, split(req.path), 1, params)
    if not node then
        return self.notFound(req, res)
    end
    local h = node.handlers[req.method] or node.handlers["*"]
    if not h and req.method == "HEAD" then
        h = node.handlers.GET
    end
    if not h then
        res:setHeader("Allow", allow_of(node.handlers))
        return self.methodNotAllowed(req, res)
    end
    req.params = params
    return h(req, res, params)
end

Router.__call = Router.handle

local function not_found(_, res)
    res.status = 404
    res:json({ error = "not found" })
end

local function not_allowed(_, res)
    res.status = 405
    res:json({ error = "method not allowed" })
end

local function new()
    return setmetatable({ root = new_node(), notFound = not_found, methodNotAllowed = not_allowed }, Router)
end

return { new = new, Router = Router }
