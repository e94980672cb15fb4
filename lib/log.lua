--- log: leveled log lines, as text or JSON, to stderr, stdout or a file (see docs/log.md).
--
--   log.info("user logged in", {user = 42, ms = 12})
--   -- 2026-12-03T10:00:00.123Z INFO user logged in ms=12 user=42
--   log.setLevel("debug"); log.setFormat("json"); log.setOutput("/var/log/app.log")
--
-- Lines are made here and handed to the sink (modules/log.cpp, luaio.log), which queues them
-- and writes them out in libuv's thread pool: a log call never waits. Requiring this module
-- also sends luaio's own messages (failed tasks, handler errors) through the same sink.
local sink = require "luaio.log"

local type, error, tostring, tonumber, pairs, ipairs, pcall = type, error, tostring, tonumber, pairs, ipairs, pcall
local concat, sort = table.concat, table.sort
local find, format, gsub = string.find, string.format, string.gsub
local stamp, write = sink.stamp, sink.write

local log = {}

local LEVELS = { debug = 1, info = 2, warn = 3, error = 4 }
local UPPER = { "DEBUG", "INFO", "WARN", "ERROR" }
local NAMES = { "debug", "info", "warn", "error" }

local threshold = LEVELS.info
local json_format = false
local json -- lua-cjson, loaded when the JSON format is chosen

local function load_json()
    json = require("cjson").new()
    if json.encode_escape_forward_slash then json.encode_escape_forward_slash(false) end
    json.encode_invalid_numbers("null") -- nan and inf as null, rather than an error
    return json
end

local ESCAPES = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }

-- A text field value: as is when it has no blank, quote, "=" or control byte, else quoted.
local function text_value(v)
    local s = tostring(v)
    if s == "" or find(s, '[%s"=%c\\]') then
        return '"' .. gsub(s, '[%c"\\]', function(c) return ESCAPES[c] or format("\\x%02x", c:byte()) end) .. '"'
    end
    return s
end

local function text_line(level, msg, fields)
    local line = stamp() .. " " .. UPPER[level] .. " " .. tostring(msg)
    if fields then
        local keys = {}
        for k in pairs(fields) do keys[#keys + 1] = tostring(k) end
        sort(keys)
        local parts = { line }
        for i, k in ipairs(keys) do
            local v = fields[k]
            if v == nil then v = fields[tonumber(k)] end
            parts[i + 1] = k .. "=" .. text_value(v)
        end
        line = concat(parts, " ")
    end
    return line
end

local function json_line(level, msg, fields)
    local t = {}
    if fields then
        for k, v in pairs(fields) do
            local tv = type(v)
            t[tostring(k)] = (tv == "string" or tv == "number" or tv == "boolean" or tv == "table") and v or tostring(v)
        end
    end
    t.time, t.level, t.msg = stamp(), NAMES[level], tostring(msg)
    local ok, line = pcall(json.encode, t)
    if not ok then -- a value cjson refuses (a cycle, a function in a table): its text form
        for k, v in pairs(t) do
            if type(v) == "table" then t[k] = tostring(v) end
        end
        ok, line = pcall(json.encode, t)
        line = ok and line or format('{"time":"%s","level":"%s","msg":"unencodable fields"}', t.time, t.level)
    end
    return line
end

local function emit(level, msg, fields, fname)
    if fields ~= nil and type(fields) ~= "table" then
        error(fname .. ": expected a fields table as argument 2, got " .. type(fields), 3)
    end
    if json_format then
        write(json_line(level, msg, fields))
    else
        write(text_line(level, msg, fields))
    end
end

for level, name in ipairs({ "debug", "info", "warn", "error" }) do
    log[name] = function(msg, fields)
        if level < threshold then return end
        return emit(level, msg, fields, name)
    end
end

--- setLevel("debug" | "info" | "warn" | "error"): lines below it are not made at all.
function log.setLevel(name)
    local l = LEVELS[name]
    if not l then error("setLevel: expected \"debug\", \"info\", \"warn\" or \"error\", got " .. tostring(name), 2) end
    threshold = l
end

function log.getLevel() return NAMES[threshold] end

--- setFormat("text" | "json").
function log.setFormat(name)
    if name ~= "text" and name ~= "json" then
        error("setFormat: expected \"text\" or \"json\", got " .. tostring(name), 2)
    end
    json_format = name == "json"
    if json_format then json = json or load_json() end
    sink.setFormat(name)
end

--- setOutput("stderr" | "stdout" | path): true, or nil and the error (the output is unchanged).
--- A file is opened for appending; SIGUSR1 reopens it (after logrotate moved it).
function log.setOutput(target)
    if type(target) ~= "string" then
        error("setOutput: expected \"stderr\", \"stdout\" or a path, got " .. type(target), 2)
    end
    return sink.setOutput(target)
end

--- The number of lines dropped since the start because the queue was full.
log.dropped = sink.dropped
--- Reopens the log file now (what SIGUSR1 does).
log.reopen = sink.reopen
--- Writes the queue out now, blocking (at exit this happens by itself).
log.flush = sink.flush

--- setQueueSize(bytes): the bound of the queue (default 1 MiB).
function log.setQueueSize(n)
    if type(n) ~= "number" then error("setQueueSize: expected a number of bytes, got " .. type(n), 2) end
    sink.setQueueSize(n)
end

--- A line as it is (an access log line in its own format), bypassing levels.
function log.raw(line)
    if type(line) ~= "string" then error("raw: expected a string, got " .. type(line), 2) end
    write(line)
end

--- The JSON text of a table (for access log lines); nil when cjson refuses it.
function log.json_value(t)
    json = json or load_json()
    local ok, s = pcall(json.encode, t)
    return ok and s or nil
end

sink.capture()

return log
