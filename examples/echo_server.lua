-- An echo server: every connection gets back what it sends.
--   luaio examples/echo_server.lua [port]      then: nc 127.0.0.1 7000
local tcp = require "tcp"

local port = tonumber((...)) or 7000
local server = assert(tcp.createServer(port, function(sock)
    -- Each connection runs in its own task; the socket is closed when this function returns.
    while true do
        local data = sock:read() -- whatever has arrived (nil, err at EOF)
        if not data or sock:write(data) then
            return
        end
    end
end, { host = "127.0.0.1" }))
print("echo server on 127.0.0.1:" .. server:address().port)
