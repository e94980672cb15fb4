-- https hello world on the seed API, http.serve (bench/tls/run.sh): arg 1 port, arg 2 cert, arg 3 key.
local http = require "http"
local port = tonumber(arg and arg[1]) or 8443
local headers = { ["Content-Type"] = "text/plain" }
assert(http.serve({ port = port, maxRequests = 1000000, backlog = 1024, tls = { cert = arg[2], key = arg[3] } },
    function(request)
        return { status = 200, headers = headers, body = "Hello, World!" }
    end))
