-- A port scanner: tries many ports of one host at once, each connect in its own task.
--   luaio examples/port_scanner.lua [host] [first] [last] [concurrency]
--   luaio examples/port_scanner.lua 127.0.0.1 1 1024 200
local dns = require "dns"
local tcp = require "tcp"
local task = require "task"

local args = { ... }
local host = args[1] or "127.0.0.1"
local first = tonumber(args[2]) or 1
local last = tonumber(args[3]) or 1024
local concurrency = tonumber(args[4]) or 200

-- One lookup first: a bad host name is one error, not one per port.
local addrs, lookup_err = dns.lookup(host)
if not addrs then
    io.stderr:write(("%s: %s\n"):format(host, tostring(lookup_err)))
    os.exit(1)
end
local address = addrs[1]

local open, next_port = {}, first

-- `concurrency` workers share the port range; each connect waits at most 500 ms.
local function worker()
    while next_port <= last do
        local port = next_port
        next_port = next_port + 1
        local sock, err = tcp.connect(port, address, { timeout = 500 })
        if sock then
            open[#open + 1] = port
            sock:close()
        elseif err.name ~= "ECONNREFUSED" and err.name ~= "ETIMEDOUT" then
            io.stderr:write(("port %d: %s\n"):format(port, err.message))
        end
    end
end

local workers = {}
for i = 1, math.min(concurrency, last - first + 1) do
    workers[i] = task.spawn(worker)
end
for _, w in ipairs(workers) do
    w:join()
end
table.sort(open)
print(("%s: %d open port(s) in %d-%d: %s"):format(host, #open, first, last, table.concat(open, " ")))
