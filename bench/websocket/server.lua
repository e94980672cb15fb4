-- The luaio peer of bench/websocket/run.sh: /echo echoes every message (handlers: an idle
-- connection holds no task), /echo-task does the same with a task per connection looping over
-- ws:messages(); /pub subscribes the connection to one topic of a hub, and a message from any
-- of them is published to all.
--   luaio bench/websocket/server.lua PORT
local http = require "http"
local websocket = require "websocket"

local port = tonumber(arg[1]) or 19801
local hub = websocket.hub({ maxQueue = 16 * 1024 * 1024 })
local r = http.router()
r:websocket("/echo", {
    message = function(ws, msg, kind)
        ws:send(msg, kind)
    end,
})
r:websocket("/echo-task", function(ws)
    for msg, kind in ws:messages() do
        if ws:send(msg, kind) then return end
    end
end)
r:websocket("/pub", {
    open = function(ws)
        hub:join(ws, "all")
    end,
    message = function(_, msg, kind)
        hub:publish("all", msg, kind)
    end,
})
assert(http.createServer({ port = port, host = "127.0.0.1", tcp_backlog = 4096 }, r))
