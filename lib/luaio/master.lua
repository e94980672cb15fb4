--- The master of `luaio --workers N app.lua` (nginx's model; see docs/process.md).
--
-- It starts N workers (default: one per core this process may use), each `luaio app.lua`
-- pinned to one core, and then only supervises:
--   * a worker that dies is restarted after a back-off (doubling while it keeps dying soon
--     after its start), at most `limit` times in `window` ms per slot, then the slot is
--     given up with a message; the master exits when every slot is given up;
--   * SIGTERM or SIGINT: graceful stop. Workers get SIGTERM (they stop accepting, finish the
--     requests in progress and exit); a second SIGTERM/SIGINT, or `stop_timeout` ms, and the
--     remaining workers get SIGKILL;
--   * SIGHUP: reload, slot by slot: a new worker starts; once it is ready (its main chunk
--     returned) the old one gets SIGTERM and drains. Both accept on the slot's socket, so no
--     connection is refused or reset.
--   * SIGUSR1: log files are reopened (logrotate): the master's (the log module's watcher) and,
--     when LUAIO_LOG_OUTPUT is a file, the workers' (they get SIGUSR1 too).
-- Listening sockets are made here on the workers' request (lib/luaio/worker.lua), one
-- SO_REUSEPORT socket per slot and address, so the kernel balances connections between the
-- workers and a socket outlives the workers that accept on it. The workers also ask for the
-- one secret their TLS session ticket keys are derived from ("tickets").
local process = require "process"
local core = require "luaio.process"
local errors = require "luaio.errors"
local task = require "task"
local timer = require "timer"
local system = require "system"

local POLICY = { delay = 100, max_delay = 10000, limit = 10, window = 60000, stable = 10000 }
local READY_TIMEOUT = 10000 -- ms a new worker gets to become ready during a reload
local STOP_TIMEOUT = 30000  -- ms workers get to stop before SIGKILL

local function now_ms() return system.monotime() * 1000 end

-- The master's messages go through the runtime's one report path, which is the log module's
-- sink: with a time and a level, in the format and to the output that LUAIO_LOG_FORMAT and
-- LUAIO_LOG_OUTPUT give the workers too (the master does not run the app, so it cannot know
-- what the app's own log calls choose).
require "log"
local report = require("luaio.core").report

local function log(level, fmt, ...)
    report("master: " .. fmt:format(...), level)
end

local function describe_exit(code, signal)
    if signal then return "was killed by " .. tostring(signal) end
    return "exited with code " .. tostring(code)
end

return function(plan)
    if not plan.script or plan.script == "-" then
        io.stderr:write("luaio: --workers needs a script file\n")
        os.exit(1)
    end
    -- A script that cannot be loaded would only make every worker die at its start: say so
    -- once and exit instead of restarting them for a minute.
    local ok, err = loadfile(plan.script)
    if not ok then
        report(err)
        os.exit(1)
    end
    local cpus = process.affinity() or { 0 }
    local n = plan.workers > 0 and plan.workers or #cpus
    local policy = {}
    for k, v in pairs(POLICY) do policy[k] = tonumber(os.getenv("LUAIO_RESTART_" .. k:upper())) or v end
    local stop_timeout = tonumber(os.getenv("LUAIO_STOP_TIMEOUT")) or STOP_TIMEOUT

    -- The worker's command line: the same options (-e, -l), script and arguments.
    local args = {}
    for _, a in ipairs(plan.actions) do
        args[#args + 1] = "-" .. a[1]
        args[#args + 1] = a[2]
    end
    args[#args + 1] = plan.script
    for i = 1, plan.nargs do args[#args + 1] = arg[i] end

    local slots, workers = {}, {} -- workers: every live worker (current or draining), by pid
    local stopping, reloading, alive_slots = false, false, n
    for i = 1, n do
        slots[i] = { id = i, cpu = cpus[(i - 1) % #cpus + 1], sockets = {}, restarts = {}, delay = 0 }
    end
    local first_port = {} -- "host 0" -> the port the first slot got, for the others

    local function socket_for(slot, host, port, backlog)
        local key = host .. " " .. port
        local s = slot.sockets[key]
        if s then return s.fd, s.port end
        local want = port == 0 and first_port[key] or port
        -- Socket activation: systemd's socket for the port serves every slot.
        local fd, real = process._activated(port, true), port
        if fd then
            slot.sockets[key] = { fd = fd, port = port, shared = true }
            return fd, port
        end
        fd, real = core.listen_socket(host, want, backlog)
        if not fd then return nil, real end
        if port == 0 and not first_port[key] then first_port[key] = real end
        slot.sockets[key] = { fd = fd, port = real }
        return fd, real
    end

    -- Answers one worker's requests until its channel closes.
    -- The secret every worker derives its TLS session ticket keys from (lib/tls.lua), made on
    -- the first request and kept for the master's life: a session that one worker issued
    -- resumes on another, and on the workers that a reload (SIGHUP) starts.
    local secret
    local function ticket_secret()
        if not secret then
            local f = assert(io.open("/dev/urandom", "rb"))
            secret = f:read(32):gsub(".", function(c) return ("%02x"):format(c:byte()) end)
            f:close()
        end
        return secret
    end

    local function serve_channel(w)
        local ch = w.channel
        while true do
            local line = ch:readline()
            if not line then break end
            if line == "ready" then
                w.ready = true
                if w.on_ready then w.on_ready() end
            elseif line == "tickets" then
                core.send_fd(ch, -1, "tickets " .. ticket_secret() .. "\n")
            else
                local host, port, backlog = line:match("^listen (%S+) (%d+) (%d+)$")
                if host then
                    local fd, p = socket_for(w.slot, host, tonumber(port), tonumber(backlog))
                    if fd then
                        core.send_fd(ch, fd, ("ok %d\n"):format(p))
                    else
                        core.send_fd(ch, -1, ("error %d %s %s\n"):format(p.code, p.name, p.message))
                    end
                else
                    core.send_fd(ch, -1, ("error %d EINVAL unknown request\n"):format(errors.EINVAL))
                end
            end
        end
        ch:close()
    end

    local start

    local function on_exit(w, code, signal)
        workers[w.pid] = nil
        if w.on_ready then w.on_ready() end -- a reload waiting for it gives up
        local slot = w.slot
        if stopping or w.retired then return end
        if slot.current ~= w then return end
        slot.current = nil
        local t = now_ms()
        if t - w.started >= policy.stable then
            slot.delay = policy.delay
        else
            slot.delay = slot.delay == 0 and policy.delay or math.min(slot.delay * 2, policy.max_delay)
        end
        local recent = {}
        for _, r in ipairs(slot.restarts) do
            if t - r < policy.window then recent[#recent + 1] = r end
        end
        slot.restarts = recent
        if #recent >= policy.limit then
            log("error", "worker %d (pid %d) %s; restarted %d times in %d ms: giving up on this worker", slot.id, w.pid,
                describe_exit(code, signal), #recent, policy.window)
            alive_slots = alive_slots - 1
            if alive_slots == 0 then
                log("error", "no worker left: exiting")
                process.exit(1)
            end
            return
        end
        log("warn", "worker %d (pid %d) %s; restarting in %d ms", slot.id, w.pid, describe_exit(code, signal), slot.delay)
        sleep(slot.delay)
        if stopping or slot.current then return end
        slot.restarts[#slot.restarts + 1] = now_ms()
        start(slot)
    end

    local env = process.environ()
    env.LUAIO_MASTER_PID = tostring(process.pid)
    env.LUAIO_WORKER_FD = "3"

    -- Starts a worker in `slot`; it becomes the slot's current worker unless `spare`.
    start = function(slot, spare)
        env.LUAIO_WORKER = tostring(slot.id)
        local child, err = core.spawn(process.execPath, {
            args = args, env = env, cpu = slot.cpu, stdio = { "inherit", "inherit", "inherit", "pipe" },
        })
        if not child then
            log("error", "cannot start worker %d: %s", slot.id, err.message)
            return nil, err
        end
        local w = { child = child, pid = child.pid, slot = slot, channel = child.stdio[4], started = now_ms() }
        workers[w.pid] = w
        if not spare then slot.current = w end
        task.spawn(serve_channel, w)
        task.spawn(function() on_exit(w, child:wait()) end)
        return w
    end

    local function stop(signal)
        if stopping then
            -- A second request: do not wait any longer.
            for _, w in pairs(workers) do w.child:kill("SIGKILL") end
            return
        end
        stopping = true
        -- The workers hold the listening sockets too: closing the master's copies leaves each
        -- worker the last holder, so the connections queued on a socket are accepted and
        -- served by its worker as it stops, instead of being reset when the master exits.
        local closed = {}
        for _, slot in ipairs(slots) do
            for key, s in pairs(slot.sockets) do
                if slot.current then
                    if not closed[s.fd] then core.close_fd(s.fd) end
                    closed[s.fd] = true -- systemd's sockets are shared by the slots
                    slot.sockets[key] = nil
                end
            end
        end
        log("info", "%s: stopping %d workers", signal, n)
        for _, w in pairs(workers) do w.child:kill("SIGTERM") end
        local t = timer.setTimeout(stop_timeout, function()
            log("warn", "workers still running after %d ms: killing them", stop_timeout)
            for _, w in pairs(workers) do w.child:kill("SIGKILL") end
        end)
        while next(workers) do
            local _, w = next(workers)
            w.child:wait()
            workers[w.pid] = nil
        end
        t:stop()
        log("info", "stopped")
        process.exit(0)
    end

    local function reload()
        if reloading or stopping then return end
        reloading = true
        log("info", "SIGHUP: replacing %d workers", n)
        for _, slot in ipairs(slots) do
            local old = slot.current
            if stopping then break end
            local w = start(slot, true)
            if w then
                if not w.ready then
                    local co = require("luaio.core").current()
                    local waiting = true
                    w.on_ready = function()
                        if waiting then
                            waiting = false
                            require("luaio.core").ready(co)
                        end
                    end
                    local t = timer.setTimeout(READY_TIMEOUT, w.on_ready)
                    require("luaio.core").suspend()
                    t:stop()
                    w.on_ready = nil
                end
                if workers[w.pid] and not stopping then
                    slot.current = w
                    if old then
                        old.retired = true
                        old.child:kill("SIGTERM")
                    end
                elseif not stopping then
                    log("error", "worker %d: the new worker (pid %d) did not start; keeping the old one", slot.id, w.pid)
                end
            end
        end
        reloading = false
        log("info", "reload done")
    end

    process.on("SIGTERM", function() stop("SIGTERM") end)
    process.on("SIGINT", function() stop("SIGINT") end)
    process.on("SIGHUP", reload)
    -- Without a handler SIGUSR1 would end the master (its default action). Workers get it only
    -- when they log to a file from the start (worker.start() required log, whose watcher
    -- reopens it): a worker without a watcher would die of it.
    local out = os.getenv("LUAIO_LOG_OUTPUT")
    local to_file = out and out ~= "" and out ~= "stderr" and out ~= "stdout"
    process.on("SIGUSR1", function()
        log("info", "SIGUSR1: reopening log files")
        if to_file then
            for _, w in pairs(workers) do w.child:kill("SIGUSR1") end
        end
    end)
    for _, slot in ipairs(slots) do start(slot) end
    log("info", "pid %d: %d workers of %s", process.pid, n, plan.script)
    -- The master lives as long as it has workers: wait for signals.
    while true do
        process.waitSignal({ "SIGTERM", "SIGINT", "SIGHUP" })
    end
end
