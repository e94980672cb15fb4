-- A line-based chat: every line a client sends goes to all the others.
--   luaio examples/chat_server.lua [port]      then, in several terminals: nc 127.0.0.1 7001
local tcp = require "tcp"

local port = tonumber((...)) or 7001
local clients = {} -- socket -> name

local function broadcast(from, line)
    for sock in pairs(clients) do
        if sock ~= from then
            -- A write waits while the peer's kernel buffer is full: a slow reader slows only
            -- the broadcast that reaches it, and a dead one returns an error we can ignore.
            sock:write(line .. "\n")
        end
    end
end

local server = assert(tcp.createServer(port, function(sock)
    sock:setTimeout(10 * 60 * 1000) -- drop clients idle for ten minutes
    sock:write("name? ")
    local name = sock:readline(32)
    if not name or name == "" then
        return
    end
    clients[sock] = name
    broadcast(sock, "* " .. name .. " joined")
    while true do
        local line, err = sock:readline(1024) -- lines longer than 1 KiB end the session
        if not line then
            if err.name == "ELINETOOLONG" then
                sock:write("line too long, bye\n")
            end
            break
        end
        if line == "/quit" then
            break
        end
        broadcast(sock, name .. ": " .. line)
    end
    clients[sock] = nil
    broadcast(sock, "* " .. name .. " left")
end, { host = "127.0.0.1", maxconnections = 1000 }))
print("chat server on 127.0.0.1:" .. server:address().port)
