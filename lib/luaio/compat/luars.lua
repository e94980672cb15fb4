--- luaio.compat.luars: a porting aid for Lua handlers written for luars (seed 001), whose Rust
--- host registers three async globals. `require "luaio.compat.luars"` defines them:
---
---   read_file(path)   the file's content (fs.readFile; parks only the task)
---   http_get(url)     the response body (http.get; any status)
---   sleep(seconds)    true after that many seconds (luaio's own global sleep takes
---                     milliseconds: this replaces it, for the whole program)
---
--- As in luars, where a failed Rust future raises in the calling Lua code, a failure raises the
--- error table (tostring gives "ENOENT: no such file or directory, open '/x'").
--- luars.handler(handle_request) adapts a handle_request(method, path, body) -> status,
--- content_type, body function to http.serve (see examples/luars/).
local fs = require "fs"
local http = require "http"
local timer = require "timer"

local type, error, tostring = type, error, tostring

local luars = {}

function luars.read_file(path)
    if type(path) ~= "string" then
        error("read_file: expected a path (a string) as argument 1, got " .. type(path), 2)
    end
    local data, err = fs.readFile(path)
    if not data then error(err, 2) end
    return data
end

function luars.http_get(url)
    if type(url) ~= "string" then
        error("http_get: expected a URL (a string) as argument 1, got " .. type(url), 2)
    end
    local res, err = http.get(url)
    if not res then error(err, 2) end
    return res.body
end

function luars.sleep(seconds)
    if type(seconds) ~= "number" or not (seconds >= 0) then
        error("sleep: expected seconds (a number >= 0) as argument 1, got " .. tostring(seconds), 2)
    end
    timer.sleep(seconds * 1000)
    return true
end

--- An http.serve handler that calls handle_request(method, path, body) (path without the
--- query string) and answers its status, content type and body.
function luars.handler(handle_request)
    if type(handle_request) ~= "function" then
        error("luars.handler: expected a function as argument 1, got " .. type(handle_request), 2)
    end
    return function(request)
        local status, content_type, body = handle_request(request.method, request.path, request.body)
        return { status = status, headers = { ["Content-Type"] = content_type }, body = body }
    end
end

read_file, http_get, sleep = luars.read_file, luars.http_get, luars.sleep

return luars
