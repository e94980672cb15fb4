--- http.access: the access log of http.createServer({accessLog = "combined" | "json" | fn}).
--- wrap(handler, mode) returns a handler that runs handler(req, res), then writes one line
--- through the log module's sink: nginx's "combined" format, a JSON object, or whatever
--- fn(req, res, info) does with info = {method, path, status, bytes, ms, remoteAddress}.
--- A handler that raises is reported as an error (through the same sink) and has no access line.
local log = require "log"
local system = require "system"

local type, error, tostring, format = type, error, tostring, string.format
local hrtime, date = system.hrtime, os.date

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

local function quoted(s)
    if s == nil then return "-" end
    return (s:gsub('[%c"\\]', function(c) return format("\\x%02X", c:byte()) end))
end

local function combined(req, info)
    local h = req.headers
    log.raw(format('%s - - [%s] "%s %s HTTP/%s" %d %d "%s" "%s"', info.remoteAddress or "-",
        date("!%d/%b/%Y:%H:%M:%S +0000"), req.method, quoted(req.url), req.httpVersion, info.status, info.bytes,
        quoted(h.referer), quoted(h["user-agent"])))
end

local function json_line(req, info)
    local h = req.headers
    log.raw(log.json_value({ time = require("luaio.log").stamp(), remote = info.remoteAddress, method = req.method,
        path = req.url, status = info.status, bytes = info.bytes, ms = info.ms, ua = h["user-agent"],
        referer = h.referer }) or "{}")
end

function access.wrap(handler, mode, fname)
    local out
    if mode == "combined" then
        out = function(req, _, info) combined(req, info) end
    elseif mode == "json" then
        out = function(req, _, info) json_line(req, info) end
    elseif type(mode) == "function" then
        out = mode
    else
        error(fname .. ": option 'accessLog' must be \"combined\", \"json\" or a function", 3)
    end
    return function(req, res)
        local t0, bytes = hrtime(), 0
        local write, finish = res.write, res.finish
        res.write = function(self, data)
            bytes = bytes + size_of(data)
            return write(self, data)
        end
        res.finish = function(self, data)
            bytes = bytes + size_of(data)
            local err = finish(self, data)
            out(req, res, { method = req.method, path = req.path, status = res.status or 200, bytes = bytes,
                ms = (hrtime() - t0) / 1e6, remoteAddress = req.remoteAddress })
            return err
        end
        res.send, res["end"] = res.finish, res.finish
        return handler(req, res)
    end
end

return access
