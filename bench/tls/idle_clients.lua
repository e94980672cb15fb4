-- Opens N TLS keep-alive connections to 127.0.0.1:PORT, sends one GET on each, reads the
-- response, then holds them idle for HOLD ms (bench/tls/idle_rss.sh measures the server's RSS).
-- Prints "connected N B": B is this client's own RSS growth per connection (bytes).
local tls = require "tls"
local port, n, hold = tonumber(arg[1]), tonumber(arg[2]) or 5000, tonumber(arg[3]) or 3000
local function rss_kib()
    for l in io.lines("/proc/self/status") do
        local v = l:match("^VmRSS:%s+(%d+)")
        if v then return tonumber(v) end
    end
end
local socks, done = {}, 0
local before = rss_kib()
local req = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"
for i = 1, n do
    local s, err = tls.connect(port, "127.0.0.1", { verify = false })
    if not s then
        io.stderr:write("connect ", i, ": ", err.message, "\n")
        break
    end
    socks[#socks + 1] = s
    s:write(req)
    s:readuntil("\r\n\r\n")
    s:read(13)
    done = done + 1
end
collectgarbage()
print(("connected %d %.0f"):format(done, (rss_kib() - before) * 1024 / math.max(done, 1)))
io.stdout:flush()
sleep(hold)
for _, s in ipairs(socks) do
    s:close()
end
