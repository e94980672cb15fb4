-- Hello world on the streaming API (bench/http/run.sh).
local http = require "http"
local port = tonumber(arg and arg[1]) or 8080
assert(http.createServer({ port = port, maxRequests = 1000000, backlog = 1024 }, function(req, res)
    res:setHeader("Content-Type", "text/plain")
    res:finish("Hello, World!")
end))
