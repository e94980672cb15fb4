--- http.access: the access log of http.createServer({accessLog = fn}): wrap(handler, fn) returns
--- a handler that runs handler(req, res) and, when the response finishes, calls fn(req, res,
--- info) with info = {method, path, status, bytes, ms, remoteAddress}. A handler that raises has
--- no call (it is reported as an error). The built-in formats ("combined", "json") are made in
--- C++ when a response ends (modules/http.cpp, modules/log.h), with no Lua per request.
--
-- Cost: no closure per request (LuaJIT does not compile closure creation, and a trace that
-- aborts sends the whole request path to the interpreter). The response gets its counting
-- write/finish and its state as fields.
local system = require "system"

local type, tostring, getmetatable, setmetatable = type, tostring, getmetatable, setmetatable
local hrtime = system.hrtime

local access = {}

local function size_of(data)
    local t = type(data)
    if t == "string" then return #data end
    if t == "table" then
        local n = 0
        for i = 1, #data do n = n + #tostring(data[i]) end
        return n
    end
    return 0
end

-- The peer address of a request's connection, looked up once per connection (req.remoteAddress
-- costs a getpeername and three fields on the request). A connection is a userdata of its own
-- (req[1]); the weak keys let it go with its connection.
local peers = setmetatable({}, { __mode = "k" })
local function remote_of(req)
    local conn = req[1]
    if type(conn) ~= "userdata" then return req.remoteAddress end
    local a = peers[conn]
    if not a then
        a = req.remoteAddress or "-"
        peers[conn] = a
    end
    return a
end

local response_write, response_finish -- Response's own, found at the first request

local function counting_write(res, data)
    res._log_bytes = res._log_bytes + size_of(data)
    return response_write(res, data)
end

local function counting_finish(res, data)
    -- A file body (Response:_file, http.static) is sent by finish and counted by its length.
    res._log_bytes = res._log_bytes + size_of(data) + (res._fd and res._len or 0)
    local err = response_finish(res, data)
    local req = res._log_req
    res._log_fn(req, res, { method = req.method, path = req.path, status = res.status or 200, bytes = res._log_bytes,
        ms = (hrtime() - res._log_t0) / 1e6, remoteAddress = remote_of(req) })
    return err
end

function access.wrap(handler, fn)
    return function(req, res)
        if not response_write then
            local Response = getmetatable(res)
            response_write, response_finish = Response.write, Response.finish
        end
        res._log_t0, res._log_bytes, res._log_fn, res._log_req = hrtime(), 0, fn, req
        res.write, res.finish, res.send = counting_write, counting_finish, counting_finish
        res["end"] = counting_finish
        return handler(req, res)
    end
end

return access
