-- Hello world with the access log on (bench/http/access_log.sh): hello_stream.lua plus
-- accessLog = "combined" written to the file in $LOG (default /dev/null).
local http = require "http"
local log = require "log"
local port = tonumber(arg and arg[1]) or 8080
assert(log.setOutput(os.getenv("LOG") or "/dev/null"))
assert(http.createServer({ port = port, maxRequests = 1000000, backlog = 1024, accessLog = (arg and arg[2] == "noop") and function() end or (arg and arg[2]) or "combined" },
    function(req, res)
        res:setHeader("Content-Type", "text/plain")
        res:finish("Hello, World!")
    end))
