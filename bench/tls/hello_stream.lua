-- https hello world on the streaming API (bench/tls/run.sh): arg 1 port, arg 2 cert, arg 3 key
-- (without them: plain http, for the connection cost without TLS).
local http = require "http"
local port = tonumber(arg and arg[1]) or 8443
assert(http.createServer({ port = port, maxRequests = 1000000, backlog = 1024, tls = arg[2] and { cert = arg[2], key = arg[3] } or nil },
    function(req, res)
        res:setHeader("Content-Type", "text/plain")
        res:finish("Hello, World!")
    end))
