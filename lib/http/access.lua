--- http.access: the access log of http.createServer({accessLog = "combined" | "json" | fn}).
--- wrap(handler, mode) returns a handler that runs handler(req, res) and, when the response
--- finishes, writes one line through the log module's sink: nginx's "combined" format, a JSON
--- object, or whatever fn(req, res, info) does with info = {method, path, status, bytes, ms,
--- remoteAddress}. A handler that raises is reported as an error (through the same sink) and
--- has no access line.
--
-- Cost: no closure per request (LuaJIT does not compile closure creation, and a trace that
-- aborts sends the whole request path to the interpreter). The response gets its counting
-- write/finish and its state as fields; the referer and user agent are read from the raw head
-- rather than through req.headers.
local log = require "log"
local system = require "system"
local sink = require "luaio.log"

local type, error, tostring, getmetatable, setmetatable = type, error, tostring, getmetatable, setmetatable
local format, find, gsub, match = string.format, string.find, string.gsub, string.match
local hrtime, date, time = system.hrtime, os.date, os.time
local raw_line, stamp = sink.write, sink.stamp

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

local function escape_char(c) return format("\\x%02X", c:byte()) end

local function quoted(s)
    if s == nil then return "-" end
    if find(s, '[%c"\\]') then s = gsub(s, '[%c"\\]', escape_char) end
    return s
end

-- A field of the raw head (streaming API: req[2]) by a case-insensitive pattern of its name.
local UA = "\n[Uu][Ss][Ee][Rr]%-[Aa][Gg][Ee][Nn][Tt][ \t]*:[ \t]*([^\r\n]*)"
local REFERER = "\n[Rr][Ee][Ff][Ee][Rr][Ee][Rr][ \t]*:[ \t]*([^\r\n]*)"
local function field(req, pattern, name)
    local head = req[2]
    if type(head) == "string" then return match(head, pattern) end
    return req.headers[name]
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

-- The [time] of a combined line, made once per second.
local last_second, last_date = -1, nil
local function local_time()
    local t = time()
    if t ~= last_second then
        last_second, last_date = t, date("!%d/%b/%Y:%H:%M:%S +0000", t)
    end
    return last_date
end

local function combined(req, res, bytes)
    raw_line(format('%s - - [%s] "%s %s HTTP/%s" %d %d "%s" "%s"', remote_of(req), local_time(),
        req.method, quoted(req.url), req.httpVersion, res.status or 200, bytes, quoted(field(req, REFERER, "referer")),
        quoted(field(req, UA, "user-agent"))))
end

local function json_line(req, res, bytes, ms)
    raw_line(log.json_value({ time = stamp(), remote = remote_of(req), method = req.method, path = req.url,
        status = res.status or 200, bytes = bytes, ms = ms, ua = field(req, UA, "user-agent"),
        referer = field(req, REFERER, "referer") }) or "{}")
end

local response_write, response_finish -- Response's own, found at the first request

local function counting_write(res, data)
    res._log_bytes = res._log_bytes + size_of(data)
    return response_write(res, data)
end

local function counting_finish(res, data)
    res._log_bytes = res._log_bytes + size_of(data)
    local err = response_finish(res, data)
    local mode, req = res._log_mode, res._log_req
    local ms = (hrtime() - res._log_t0) / 1e6
    if mode == "combined" then
        combined(req, res, res._log_bytes)
    elseif mode == "json" then
        json_line(req, res, res._log_bytes, ms)
    else
        mode(req, res, { method = req.method, path = req.path, status = res.status or 200, bytes = res._log_bytes,
            ms = ms, remoteAddress = remote_of(req) })
    end
    return err
end

function access.wrap(handler, mode, fname)
    if mode ~= "combined" and mode ~= "json" and type(mode) ~= "function" then
        error(fname .. ": option 'accessLog' must be \"combined\", \"json\" or a function", 3)
    end
    return function(req, res)
        if not response_write then
            local Response = getmetatable(res)
            response_write, response_finish = Response.write, Response.finish
        end
        res._log_t0, res._log_bytes, res._log_mode, res._log_req = hrtime(), 0, mode, req
        res.write, res.finish, res.send = counting_write, counting_finish, counting_finish
        res["end"] = counting_finish
        return handler(req, res)
    end
end

return access
