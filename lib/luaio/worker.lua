--- The worker side of `luaio --workers N` (the master is lib/luaio/master.lua).
--
-- A worker is a plain `luaio app.lua` started by the master with LUAIO_WORKER (its slot,
-- 1..N) and LUAIO_WORKER_FD (its end of a socket pair to the master, fd 3) in its
-- environment. The boot sequence (lib/luaio/main.lua) calls start() before the app and
-- ready() once the app's main chunk has returned (its servers listen): the master waits for
-- that before it retires the worker this one replaces during a reload.
--
-- Channel protocol (one line each way, the worker blocks for the answer; start-up only):
--   worker: "ready\n"                       master: (nothing)
--   worker: "listen <host> <port> <backlog>\n"
--   master: "ok <port>\n" with the listening socket attached (SCM_RIGHTS), or
--           "error <code> <name> <message>\n"
-- The master owns one SO_REUSEPORT listening socket per (slot, host, port) and hands the
-- same socket to every worker that takes the slot: connections queued on it while a worker
-- restarts or is replaced are accepted by the next one, never reset.
local core = require "luaio.process"
local new_error = require("luaio.errors").new

local worker = {}

local fd = tonumber(os.getenv("LUAIO_WORKER_FD"))
worker.id = tonumber(os.getenv("LUAIO_WORKER"))
worker.master_pid = tonumber(os.getenv("LUAIO_MASTER_PID"))

local started, announced = false, false

--- Before the app runs: keep the channel from the app's own children, make the worker's
--- children ordinary processes, and follow the master if it dies (SIGTERM: graceful stop).
function worker.start()
    if started or not fd then return end
    started = true
    core.cloexec(fd)
    core.setenv("LUAIO_WORKER", nil)
    core.setenv("LUAIO_WORKER_FD", nil)
    core.setenv("LUAIO_MASTER_PID", nil)
    core.set_parent_death_signal(core.signum("SIGTERM"))
    if worker.master_pid and core.ppid() ~= worker.master_pid then
        -- The master died before prctl took effect.
        -- Through the one report path, in the log format the environment gives (LUAIO_LOG_*).
        require "log"
        require("luaio.core").report("worker " .. tostring(worker.id) .. ": the master is gone")
        os.exit(1)
    end
    -- A log file from the environment is opened before the app runs, so that the SIGUSR1 the
    -- master forwards (logrotate) finds the log module's watcher (lib/luaio/master.lua).
    local out = os.getenv("LUAIO_LOG_OUTPUT")
    if out and out ~= "" and out ~= "stderr" and out ~= "stdout" then require "log" end
    local process = require "process"
    process.workerId = worker.id
    process.listenSocket = worker.listen
end

--- Tells the master that this worker serves (idempotent).
function worker.ready()
    if announced or not fd then return end
    announced = true
    core.write_fd(fd, "ready\n")
end

local ticket_secret

--- The secret of the session ticket keys, the same in every worker of the master (lib/tls.lua
--- derives the keys of each period from it): 32 bytes, asked once; nil when not a worker.
function worker.ticketSecret()
    if ticket_secret or not fd then return ticket_secret end
    if not core.write_fd(fd, "tickets\n") then return nil end
    local msg, sock = core.recv_fd(fd, 10000)
    if sock then core.close_fd(sock) end
    local hex = msg and msg:match("^tickets (%x+)\n$")
    if hex and #hex == 64 then
        ticket_secret = hex:gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end)
    end
    return ticket_secret
end

--- A listening socket for host:port from the master: fd, port, or nil and an error table.
function worker.listen(host, port, backlog)
    if not fd then
        return nil, new_error("EINVAL", "not a worker of a luaio master")
    end
    local ok, err = core.write_fd(fd, ("listen %s %d %d\n"):format(host, port, backlog or 511))
    if not ok then return nil, err end
    local msg, sock = core.recv_fd(fd, 10000)
    if not msg then return nil, sock end
    local p = msg:match("^ok (%d+)\n$")
    if p and sock then return sock, tonumber(p) end
    if sock then core.close_fd(sock) end
    local code, name, message = msg:match("^error (%-?%d+) (%S+) ([^\n]*)")
    if code and name then -- the master's own error, as it made it
        return nil, new_error("EPROTO", message, { code = tonumber(code), name = name })
    end
    return nil, new_error("EPROTO", "bad answer from the master: " .. msg)
end

return worker
