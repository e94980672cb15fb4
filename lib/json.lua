--- json: JSON encoding and decoding on lua-cjson (the library OpenResty ships), with errors
--- returned as the seed's error tables instead of raised.
--
--   local s, err = json.encode(value)      -- err: {code, name = "EJSON", message}
--   local v, err = json.decode(s)
--   json.null                               -- JSON null (decoded, and encodable)
--   json.array(t)                           -- marks t so that it encodes as an array, even empty
local ok, cjson = pcall(require, "cjson")
if not ok then
    error("json: lua-cjson is not installed (Debian package lua-cjson): " .. tostring(cjson), 0)
end

local new_error = require("luaio.errors").new
local type, pcall, tostring, setmetatable, gsub = type, pcall, tostring, setmetatable, string.gsub

-- A private instance, so that settings made by other code on the shared cjson do not leak in.
local c = cjson.new()
c.encode_sparse_array(true) -- sparse arrays become objects instead of failing
c.encode_number_precision(14)
-- Newer cjson builds (OpenResty's) keep decoded empty arrays as arrays when encoded again.
if c.decode_array_with_array_mt then
    c.decode_array_with_array_mt(true)
end

local json = { null = c.null }

-- lua-cjson's own message, which names what failed ("Cannot serialise function: type not
-- supported", "Expected value but found invalid token at character 3"); only a position prefix
-- (a Lua error raised inside, "file:12: ") is dropped.
local function failure(what, e)
    local msg = gsub(gsub(tostring(e), "^[^:\n]+:%d+: ", "", 1), "^Cannot serialise", "cannot encode", 1)
    return nil, new_error("EJSON", what .. ": " .. msg)
end

--- Encodes a Lua value (tables, strings, numbers, booleans, json.null) as JSON text.
function json.encode(value)
    local ok2, s = pcall(c.encode, value)
    if not ok2 then
        return failure("json.encode", s)
    end
    return s
end

--- Decodes JSON text; returns the value, or nil and an error table that says where it failed.
function json.decode(text)
    if type(text) ~= "string" then
        return nil, new_error("EJSON", "json.decode: expected a string, got " .. type(text))
    end
    local ok2, v = pcall(c.decode, text)
    if not ok2 then
        return failure("json.decode", v)
    end
    return v
end

--- Marks t (default: a new table) as a JSON array, so that it encodes as [] when empty
--- (with cjson builds that know array_mt; older ones encode an empty table as {}).
function json.array(t)
    t = t or {}
    if c.array_mt then
        setmetatable(t, c.array_mt)
    end
    return t
end

return json
