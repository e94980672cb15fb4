-- A WebSocket chat with rooms that serves its own page.
--   luaio examples/ws_chat.lua [port]   then open http://127.0.0.1:8080/ in two browser tabs
local http = require "http"
local websocket = require "websocket"

local port = tonumber(arg and arg[1]) or 8080
local rooms = {} -- room name -> set of connections

local page = [[<!doctype html>
<html><head><meta charset="utf-8"><title>luaio chat</title></head>
<body>
<p>Room <input id="room" value="lobby"> <button id="join">join</button></p>
<pre id="log" style="height: 20em; overflow: auto; border: 1px solid #ccc"></pre>
<form id="f"><input id="msg" size="60" autocomplete="off"> <button>send</button></form>
<script>
let ws;
const log = (s) => { const l = document.getElementById('log'); l.textContent += s + '\n'; l.scrollTop = 1e9; };
function join() {
  if (ws) ws.close();
  const room = encodeURIComponent(document.getElementById('room').value);
  ws = new WebSocket('ws://' + location.host + '/chat/' + room);
  ws.onopen = () => log('* joined ' + decodeURIComponent(room));
  ws.onmessage = (e) => log(e.data);
  ws.onclose = (e) => log('* closed ' + e.code);
}
document.getElementById('join').onclick = join;
document.getElementById('f').onsubmit = (e) => {
  e.preventDefault();
  const m = document.getElementById('msg');
  if (ws && m.value) ws.send(m.value);
  m.value = '';
};
join();
</script></body></html>
]]

local function broadcast(room, text)
    for peer in pairs(rooms[room] or {}) do
        peer:send(text) -- a peer that is gone returns an error; its own task removes it
    end
end

local r = http.router()
r:get("/", function(_, res)
    res:setHeader("Content-Type", "text/html; charset=utf-8")
    res:finish(page)
end)
r:websocket("/chat/:room", function(ws, _, params)
    local room = params.room
    rooms[room] = rooms[room] or {}
    rooms[room][ws] = true
    local a = ws:remoteAddress()
    local who = a.address .. ":" .. a.port
    broadcast(room, who .. " joined")
    for msg in ws:messages() do
        broadcast(room, who .. ": " .. msg)
    end
    rooms[room][ws] = nil
    if next(rooms[room]) == nil then
        rooms[room] = nil
    end
    broadcast(room, who .. " left")
end, { maxMessageSize = 4096, pingInterval = 30000, deflate = true })

assert(http.createServer({ host = "127.0.0.1", port = port }, r))
print("chat on http://127.0.0.1:" .. port .. "/")
