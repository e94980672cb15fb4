-- A hello-world HTTP/1.1 server on raw TCP for `luaio --workers N examples/workers_hello.lua [port]`.
-- Every worker listens on the same port (SO_REUSEPORT); on SIGTERM a worker drains, stops
-- accepting, finishes the requests in progress and exits (every server does: docs/process.md).
local tcp = require "tcp"
local process = require "process"

local port = tonumber(arg[1]) or 8080
local RESPONSE = "HTTP/1.1 200 OK\r\nContent-Length: 13\r\nContent-Type: text/plain\r\n\r\nHello, world!"
local LAST = "HTTP/1.1 200 OK\r\nContent-Length: 13\r\nConnection: close\r\n\r\nHello, world!"

assert(tcp.createServer(port, function(sock)
    while true do
        local line = sock:readline()
        if not line then return end
        local keepalive = true
        local path = line:match("^%S+ (%S+)")
        while line ~= "" do
            if line:lower() == "connection: close" then keepalive = false end
            line = sock:readline()
            if not line then return end
        end
        if path == "/slow" then sleep(1000) end
        local last = not keepalive or process.stopping()
        if sock:write(last and LAST or RESPONSE) then return end
        if last then return end
    end
end, { host = "127.0.0.1", tcp_reuseport = true }))
