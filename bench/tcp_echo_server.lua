-- luaio peer of the TCP echo benchmark (bench/tcp_echo.sh): luaio bench/tcp_echo_server.lua PORT
local tcp = require "tcp"

local port = tonumber((...)) or 9001
assert(tcp.createServer(port, function(sock)
    while true do
        local data = sock:read()
        if not data or sock:write(data) then
            return
        end
    end
end, { host = "127.0.0.1" }))
