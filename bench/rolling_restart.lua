-- A rolling restart behind HAProxy loses no request: `luaio bench/rolling_restart.lua [runs]`.
--
-- HAProxy (/usr/sbin/haproxy, a temporary config on 127.0.0.1) balances two luaio instances:
-- one plain `luaio app.lua`, one `luaio --workers 1 app.lua` (the master holds the listening
-- socket). Client tasks send requests in a loop, half of them on a new connection each time,
-- half on keep-alive connections, while each instance in turn gets SIGTERM, must exit 0, and
-- is started again on the same port. Every request must get a 200. Prints one line per run;
-- exits 1 if any request failed. spec/deploy_spec.lua runs it once; docs/deploy.md explains
-- the configuration.
local process = require "process"
local tcp = require "tcp"
local task = require "task"

local LUAIO = process.execPath
local HAPROXY = os.getenv("HAPROXY") or "/usr/sbin/haproxy"
local RUNS = tonumber(arg and arg[1]) or 1
local CLIENTS = 4 -- tasks; the odd ones use keep-alive

local APP = [[
local http = require "http"
local name, port = arg[1], tonumber(arg[2])
local r = http.router()
r:get("/healthz", http.health())
r:get("/", function(req, res)
    sleep(5) -- a request takes a while: some are always in flight
    res:finish(name)
end)
assert(http.createServer({ host = "127.0.0.1", port = port }, r))
]]

local function write_file(path, text)
    local f = assert(io.open(path, "w"))
    f:write(text)
    f:close()
end

-- A port below 32768 that nothing listens on now (bind and close a socket to find one).
local function free_port(from)
    for p = from, from + 2000 do
        local s = tcp.createServer(p, function() end, { host = "127.0.0.1" })
        if s then
            s:close()
            return p
        end
    end
    error("no free port from " .. from)
end

local function wait_until(cond, ms)
    for _ = 1, ms / 20 do
        if cond() then return true end
        sleep(20)
    end
    return cond()
end

-- One request on `sock` (a new connection when sock is nil): status, body, sock (kept open
-- when the response allows it), or nil and a reason.
local function request(port, sock, keep)
    local err
    if not sock then
        sock, err = tcp.connect(port, "127.0.0.1", { timeout = 5000 })
        if not sock then return nil, "connect " .. tostring(err and err.name) end
        sock:setTimeout(10000)
    end
    err = sock:write("GET / HTTP/1.1\r\nHost: luaio\r\n" .. (keep and "" or "Connection: close\r\n") .. "\r\n")
    if err then
        sock:close()
        return nil, "write " .. tostring(err.name)
    end
    local line = sock:readline()
    if not line then
        sock:close()
        return nil, "no response"
    end
    local status = tonumber(line:match("^HTTP/1%.1 (%d%d%d)"))
    local length, close = 0, not keep
    while true do
        local h = sock:readline()
        if not h then
            sock:close()
            return nil, "truncated head"
        end
        if h == "" then break end
        local n, v = h:match("^([^:]+):%s*(.*)$")
        n = n and n:lower()
        if n == "content-length" then length = tonumber(v) end
        if n == "connection" and v:lower() == "close" then close = true end
    end
    local body = length > 0 and sock:read(length) or ""
    if close then
        sock:close()
        sock = nil
    end
    return status, body, sock
end

local function run_once(run)
    local dir = os.tmpname()
    os.remove(dir)
    assert(process.run({ "mkdir", "-p", dir }))
    local app = dir .. "/app.lua"
    write_file(app, APP)
    local base = 20000 + (process.pid * 7 + run * 31) % 8000
    local fe = free_port(base)
    local ports = { a = free_port(fe + 1) }
    ports.b = free_port(ports.a + 1)
    local cfg = dir .. "/haproxy.cfg"
    write_file(cfg, ([[
global
    maxconn 2000
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout check 1s
    retries 3
    option redispatch
frontend fe
    bind 127.0.0.1:%d
    default_backend luaio
backend luaio
    balance roundrobin
    option httpchk GET /healthz
    http-check expect status 200
    default-server inter 100ms fall 1 rise 2
    server a 127.0.0.1:%d check
    server b 127.0.0.1:%d check
]]):format(fe, ports.a, ports.b))

    local instances = {}
    local function start(name)
        local args = name == "b" and { "--workers", "1", app, name, tostring(ports[name]) }
            or { app, name, tostring(ports[name]) }
        local c = assert(process.spawn(LUAIO, args, { stdio = { "ignore", "ignore", "inherit" } }))
        instances[name] = c
        return c
    end
    start("a")
    start("b")
    local haproxy = assert(process.spawn(HAPROXY, { "-db", "-f", cfg }, { stdio = { "ignore", "ignore", "inherit" } }))

    local seen = {}
    local function served_by_both()
        local s, body = request(fe)
        if s == 200 then seen[body] = true end
        return seen.a and seen.b
    end
    assert(wait_until(served_by_both, 10000), "haproxy does not reach both instances")

    local running, ok, failures, by = true, 0, {}, { a = 0, b = 0 }
    local clients = {}
    for i = 1, CLIENTS do
        local keep = i % 2 == 0
        clients[i] = task.spawn(function()
            local sock
            while running do
                local status, body
                status, body, sock = request(fe, sock, keep)
                if status == 200 then
                    ok = ok + 1
                    by[body] = (by[body] or 0) + 1
                else
                    failures[#failures + 1] = tostring(status) .. " " .. tostring(body)
                end
            end
            if sock then sock:close() end
        end)
    end

    local exits = {}
    sleep(500)
    for _, name in ipairs({ "a", "b" }) do
        local before = by[name]
        instances[name]:kill("SIGTERM")
        exits[#exits + 1] = name .. "=" .. tostring((instances[name]:wait()))
        start(name)
        -- Back in rotation: it serves through HAProxy again.
        assert(wait_until(function() return by[name] > before + 20 end, 15000), name .. " did not come back")
        sleep(300)
    end
    running = false
    for _, c in ipairs(clients) do c:join() end

    haproxy:kill("SIGTERM")
    haproxy:wait()
    for _, c in pairs(instances) do
        c:kill("SIGTERM")
        c:wait()
    end
    os.remove(app)
    os.remove(cfg)
    os.remove(dir)
    local line = ("run %d: %d requests, %d failed (a %d, b %d), exit status %s"):format(run, ok + #failures,
        #failures, by.a, by.b, table.concat(exits, " "))
    if #failures > 0 then line = line .. "; failures: " .. table.concat(failures, ", ", 1, math.min(#failures, 10)) end
    print(line)
    io.stdout:flush()
    return #failures == 0 and exits[1] == "a=0" and exits[2] == "b=0"
end

local all = true
for run = 1, RUNS do
    if not run_once(run) then all = false end
end
-- Success ends as a script does (the Lua state closed); os.exit would skip that.
if not all then os.exit(1) end
