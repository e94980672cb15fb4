-- Serves a directory with an access log (issue 13's example).
--   luaio examples/static_site.lua [dir]   then   curl -i http://127.0.0.1:8080/
local http = require "http"
local log = require "log"

local root = arg and arg[1] or "."
log.info("serving", { root = root, port = 8080 })
assert(http.createServer({ host = "127.0.0.1", port = 8080, accessLog = "combined" },
    http.static(root, { maxAge = 60, listing = true })))
