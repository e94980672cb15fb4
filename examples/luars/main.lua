-- Seed 001's handler.lua (beside this file, unchanged) behind http.serve, with the luars
-- globals read_file, http_get and sleep(seconds) from luaio.compat.luars.
--   luaio examples/luars/main.lua      then   curl http://127.0.0.1:8080/time
--   PORT=0 picks a free port (printed); workers: luaio --workers 4 examples/luars/main.lua
local luars = require "luaio.compat.luars"
local http = require "http"

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "handler.lua")

local server = assert(http.serve({ host = "127.0.0.1", port = tonumber(os.getenv("PORT")) or 8080 },
    luars.handler(handle_request)))
print("listening on " .. server:address().port)
io.stdout:flush()
