-- Hello world on the seed API, http.serve (bench/http/run.sh).
local http = require "http"
local port = tonumber(arg and arg[1]) or 8080
local headers = { ["Content-Type"] = "text/plain" }
assert(http.serve({ port = port, maxRequests = 1000000, backlog = 1024 }, function(request)
    return { status = 200, headers = headers, body = "Hello, World!" }
end))
