--- log: leveled log lines, as text or JSON, to stderr, stdout or a file (see docs/log.md).
--
--   log.info("user logged in", {user = 42, ms = 12})
--   -- 2026-12-03T10:00:00.123Z INFO user logged in ms=12 user=42
--   log.setLevel("debug"); log.setFormat("json"); log.setOutput("/var/log/app.log")
--
-- Lines are made here and handed to the sink (modules/log.cpp, luaio.log), which queues them
-- and writes them out in libuv's thread pool: a log call never waits. Requiring this module
-- also sends luaio's own messages (failed tasks, handler errors, supervisors' restarts) through
-- the same sink. LUAIO_LOG_LEVEL, LUAIO_LOG_FORMAT and LUAIO_LOG_OUTPUT in the environment set
-- the defaults (a `--workers` master, which does not run the app, uses them too).
local sink = require "luaio.log"
local raise = require("luaio.errors").raise

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

-- A message is a string; a number is taken as its text, as Lua's string functions do. Anything
-- else is a mistake that raises (log.info(err) with an error table: log.info(tostring(err)), or
-- put it in the fields, whose values may be anything).
local function emit(level, msg, fields, fname)
    local tm = type(msg)
    if tm ~= "string" and tm ~= "number" then
        raise(fname, "expected a message (string) as argument 1, got " .. tm)
    end
    if fields ~= nil and type(fields) ~= "table" then
        raise(fname, "expected a fields table as argument 2, got " .. type(fields))
    end
    if json_format then
        write(json_line(level, msg, fields))
    else
        write(text_line(level, msg, fields))
    end
end

for level, name in ipairs({ "debug", "info", "warn", "error" }) do
    local fname = "log." .. name
    log[name] = function(msg, fields)
        if level < threshold then return end
        return emit(level, msg, fields, fname)
    end
end

local function shown(v)
    return type(v) == "string" and format("%q", v) or type(v)
end

--- setLevel("debug" | "info" | "warn" | "error"): lines below it are not made at all (luaio's
--- own messages below it are not written either).
function log.setLevel(name)
    local l = LEVELS[name]
    if not l then raise("log.setLevel", "expected \"debug\", \"info\", \"warn\" or \"error\", got " .. shown(name)) end
    threshold = l
    sink.setLevel(name)
end

function log.getLevel() return NAMES[threshold] end

--- setFormat("text" | "json").
function log.setFormat(name)
    if name ~= "text" and name ~= "json" then
        raise("log.setFormat", "expected \"text\" or \"json\", got " .. shown(name))
    end
    json_format = name == "json"
    if json_format then json = json or load_json() end
    sink.setFormat(name)
end

--- setOutput("stderr" | "stdout" | path): true, or nil and the error (the output is unchanged).
--- A file is opened for appending; SIGUSR1 reopens it (after logrotate moved it).
function log.setOutput(target)
    if type(target) ~= "string" or target == "" then
        raise("log.setOutput", "expected \"stderr\", \"stdout\" or a path, got " .. shown(target))
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
    if type(n) ~= "number" or n < 1 or n % 1 ~= 0 or n ~= n then
        raise("log.setQueueSize", "expected a whole number of bytes >= 1, got " ..
            (type(n) == "number" and tostring(n) or type(n)))
    end
    sink.setQueueSize(n)
end

--- A line as it is (an access log line in its own format), bypassing levels.
function log.raw(line)
    local t = type(line)
    if t ~= "string" and t ~= "number" then raise("log.raw", "expected a line (string), got " .. t) end
    write(line)
end

--- The JSON text of a table (for access log lines); nil when cjson refuses it.
function log.json_value(t)
    json = json or load_json()
    local ok, s = pcall(json.encode, t)
    return ok and s or nil
end

-- The defaults from the environment; a value that is not one of the choices raises here, at the
-- require, rather than being ignored.
local function from_env(var, set)
    local v = os.getenv(var)
    if v == nil or v == "" then return end
    local ok, err = pcall(set, v)
    if not ok then raise("log", var .. ": " .. (tostring(err):gsub("^.-log%.%a+: ", ""))) end
end
from_env("LUAIO_LOG_LEVEL", log.setLevel)
from_env("LUAIO_LOG_FORMAT", log.setFormat)
do
    local out = os.getenv("LUAIO_LOG_OUTPUT")
    if out and out ~= "" then
        local ok, err = log.setOutput(out)
        if not ok then raise("log", "LUAIO_LOG_OUTPUT: " .. tostring(err)) end
    end
end

sink.capture()

return log
