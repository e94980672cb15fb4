-- https hello world on the streaming API (bench/tls/run.sh): arg 1 port, arg 2 cert, arg 3 key
-- (without them: plain http, for the connection cost without TLS), arg 4 "full": no session
-- tickets, so that every handshake is a full one.
local http = require "http"
local port = tonumber(arg and arg[1]) or 8443
local tls = arg[2] and { cert = arg[2], key = arg[3], sessionTickets = arg[4] ~= "full" } or nil
assert(http.createServer({ port = port, maxRequests = 1000000, backlog = 1024, tls = tls },
    function(req, res)
        res:setHeader("Content-Type", "text/plain")
        res:finish("Hello, World!")
    end))
