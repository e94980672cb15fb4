--- process: child processes, signals, the environment and the life of this process.
--
-- The seed's API:
--   pid, err = process.fork{file =, args =, uid =, gid =, forever =, cpu =, detached =}
--   pid, err = process.exec(command)
--   process.cwd()  process.exit([code])  process.abort()  process.uptime()
--   ok, err = process.kill(pid[, signal])          -- "SIGTERM", "TERM" or 15; default SIGTERM
-- Beside it (node and luvit users expect these):
--   child, err = process.spawn(file[, args[, options]])   -- child.pid, child.stdin/stdout/stderr
--   code, signal = child:wait()   child:kill([signal])   code, signal = process.wait(pid)
--   result, err = process.run(command[, options])  -- {code, signal, stdout, stderr}
--   process.pid  process.ppid  process.argv  process.execPath  process.env[name]
--   process.on(signal, fn)  process.off(signal[, fn])  name, err = process.waitSignal(signal[, ms])
--   process.onShutdown(fn)  process.offShutdown(fn)  process.shutdown([code])
-- See docs/process.md.
local core = require "luaio.process"
local lcore = require "luaio.core"
local task = require "task"
local timer = require "timer"
-- timer's sleep, not the global one: a script may replace the global (luaio.compat.luars makes
-- it take seconds), and the graceful stop and the restart back-off must not follow it.
local sleep = timer.sleep
local system = require "system"

local type, tostring, tonumber, ipairs, pairs, select = type, tostring, tonumber, ipairs, pairs, select
local error, setmetatable, unpack, concat = error, setmetatable, unpack, table.concat
local current, suspend, ready = lcore.current, lcore.suspend, lcore.ready

local process = {}

process.pid = core.pid()
process.execPath = core.exepath()

-- process.argv: {execPath, script, args...} as in Node.js (1-based).
do
    local argv = { process.execPath }
    local a = rawget(_G, "arg")
    if type(a) == "table" and a[0] then
        for i = 0, #a do argv[#argv + 1] = a[i] end
    end
    process.argv = argv
end

--- The environment: process.env.NAME reads, process.env.NAME = "v" sets, = nil unsets.
process.env = setmetatable({}, {
    __index = function(_, k)
        return core.getenv(tostring(k))
    end,
    __newindex = function(_, k, v)
        if v ~= nil then v = tostring(v) end
        local ok, err = core.setenv(tostring(k), v)
        if not ok then error("process.env: " .. err.message, 2) end
    end,
})

--- A copy of the whole environment as a table of name = value.
process.environ = core.environ

setmetatable(process, {
    __index = function(_, k)
        if k == "ppid" then return core.ppid() end
    end,
})

function process.cwd() return core.cwd() end
function process.chdir(dir) return core.chdir(dir) end
function process.uptime() return core.uptime() end
function process.abort() core.abort() end

--- Ends the process with `code` (default 0) after flushing stdout and stderr.
function process.exit(code)
    if code == true or code == nil then
        code = 0
    elseif code == false then
        code = 1
    elseif type(code) ~= "number" then
        error("process.exit: expected an exit code (a number), got " .. type(code), 2)
    end
    io.stdout:flush()
    io.stderr:flush()
    core.exit(code)
end

local new_error, raise = require("luaio.errors").new, require("luaio.errors").raise

-- Signal numbers ----------------------------------------------------------

--- The number of a signal name ("SIGTERM", "TERM") or nil and an EINVAL error.
process.signum = core.signum
process.signame = core.signame

local function check_signal(sig, fname)
    local n, err = core.signum(sig)
    if not n then raise("process." .. fname, err.message) end
    return n
end

-- Children ----------------------------------------------------------------

local function copy(t)
    local r = {}
    if t then for k, v in pairs(t) do r[k] = v end end
    return r
end

-- The options each function takes: a misspelled one raises, as in tcp and http.
local SPAWN_OPTIONS = { cwd = true, env = true, uid = true, gid = true, detached = true, cpu = true, argv0 = true }
local OPTIONS = {
    spawn = setmetatable({ stdio = true }, { __index = SPAWN_OPTIONS }),
    exec = SPAWN_OPTIONS,
    run = setmetatable({ input = true, timeout = true, maxBuffer = true }, { __index = SPAWN_OPTIONS }),
    fork = setmetatable({ file = true, args = true, forever = true, stdio = true }, { __index = SPAWN_OPTIONS }),
}

local function check_options(options, fname)
    if options == nil then return end
    if type(options) ~= "table" then
        error(("process.%s: expected an options table, got %s"):format(fname, type(options)), 3)
    end
    local known = OPTIONS[fname]
    for k in pairs(options) do
        if not known[k] then error(("process.%s: unknown option '%s'"):format(fname, tostring(k)), 3) end
    end
end

--- Starts `file` (looked up in PATH) with `args`; returns the child object or nil and an error.
--- options: cwd, env (replaces the environment), uid, gid, detached, cpu, argv0,
--- stdio = {"pipe"|"inherit"|"ignore"|fd, ...} (default: three pipes).
function process.spawn(file, args, options)
    if type(file) ~= "string" then
        error("process.spawn: expected a file name (a string) as argument 1, got " .. type(file), 2)
    end
    if args ~= nil and type(args) ~= "table" then
        error("process.spawn: expected an array of arguments as argument 2, got " .. type(args), 2)
    end
    if options ~= nil and type(options) ~= "table" then
        error("process.spawn: expected an options table as argument 3, got " .. type(options), 2)
    end
    check_options(options, "spawn")
    local o = copy(options)
    o.args = args
    o.stdio = o.stdio or { "pipe", "pipe", "pipe" }
    local child, err = core.spawn(file, o)
    if not child and err.name == "ENOENT" then
        err.message = "no such file or command: " .. file
    end
    return child, err
end

--- Waits for a child started by this process (by pid) to end: code, signal (code is 128 + the
--- signal's number after a signal), or nil and an ECHILD error.
process.wait = core.wait

-- A command line: an array is argv; a string is run by /bin/sh -c when it has shell syntax
-- (metacharacters, builtins, reserved words) and otherwise split on blanks and run directly,
-- so a missing command is an ENOENT error rather than a shell's exit code 127 (Ruby's rule).
local SHELL_META = "[%*%?{}%[%]<>%(%)~&|\\%$;'`\"\n#=%%]"
local SHELL_WORDS = {}
for w in ("! . : break case cd continue do done elif else esac eval exec exit export fi for if in "
          .. "readonly return set shift source then times trap ulimit umask unset until wait while "
          .. "alias unalias command type read getopts jobs fg bg"):gmatch("%S+") do
    SHELL_WORDS[w] = true
end

local function command_line(command, fname)
    if type(command) == "table" then
        if type(command[1]) ~= "string" then
            raise("process." .. fname, "the command array needs a program name as its first element")
        end
        return command[1], { unpack(command, 2) }
    end
    if type(command) ~= "string" then
        raise("process." .. fname, "expected a command (a string or an array), got " .. type(command))
    end
    local words = {}
    for w in command:gmatch("%S+") do words[#words + 1] = w end
    if #words == 0 then raise("process." .. fname, "the command is empty") end
    if command:find(SHELL_META) or SHELL_WORDS[words[1]] then
        return "/bin/sh", { "-c", command }
    end
    return words[1], { unpack(words, 2) }
end

local function spawn_command(command, options, stdio, fname)
    local file, args = command_line(command, fname)
    local o = copy(options)
    o.args, o.stdio, o._fname = args, stdio, fname
    o.input, o.timeout, o.maxBuffer = nil, nil, nil
    local child, err = core.spawn(file, o)
    if not child and err.name == "ENOENT" then
        err.message = "command not found: " .. file
    end
    return child, err
end

--- Runs a command with this process's stdin, stdout and stderr; returns its pid.
function process.exec(command, options)
    check_options(options, "exec")
    local child, err = spawn_command(command, options, nil, "exec")
    if not child then return nil, err end
    return child.pid
end

--- The most output process.run keeps of each stream (Node.js's maxBuffer).
process.MAX_BUFFER = 1024 * 1024

--- Runs a command to its end; returns {code, signal, stdout, stderr} or nil and an error.
--- options: input (a string for its stdin), timeout (ms), maxBuffer (bytes), cwd, env, uid, gid.
function process.run(command, options)
    if options ~= nil and type(options) ~= "table" then
        error("process.run: expected an options table as argument 2, got " .. type(options), 2)
    end
    check_options(options, "run")
    options = options or {}
    local input, timeout = options.input, options.timeout
    local max = options.maxBuffer or process.MAX_BUFFER
    if input ~= nil and type(input) ~= "string" then error("process.run: option 'input' must be a string", 2) end
    if timeout ~= nil and (type(timeout) ~= "number" or timeout < 0) then
        error("process.run: option 'timeout' must be a non-negative number of milliseconds", 2)
    end
    if type(max) ~= "number" or max < 0 then error("process.run: option 'maxBuffer' must be a non-negative number", 2) end
    local child, err = spawn_command(command, options, { input and "pipe" or "ignore", "pipe", "pipe" }, "run")
    if not child then return nil, err end

    local failure
    local function fail(e)
        if not failure then
            failure = e
            child:kill("SIGKILL")
            -- A grandchild may hold the pipes open: stop reading them now.
            child.stdout:close()
            child.stderr:close()
        end
    end
    local function collect(pipe, name)
        local parts, size = {}, 0
        while true do
            local data = pipe:read()
            if not data then break end
            size = size + #data
            if size > max then
                fail(new_error("ENOBUFS", name .. " longer than maxBuffer (" .. max .. " bytes)"))
                break
            end
            parts[#parts + 1] = data
        end
        pipe:close()
        return concat(parts)
    end
    local errors = task.spawn(collect, child.stderr, "stderr")
    if input then
        task.spawn(function()
            local stdin = child.stdin
            if #input > 0 then stdin:write(input) end
            if not stdin:isClosed() then stdin:shutdown() end
            stdin:close()
        end)
    end
    local t = timeout and timer.setTimeout(timeout, function()
        fail(new_error("ETIMEDOUT", "command timed out after " .. timeout .. " ms"))
    end)
    local out = collect(child.stdout, "stdout")
    local _, errout = errors:join()
    local code, signal = child:wait()
    if t then t:stop() end
    if failure then
        failure.stdout, failure.stderr = out, errout
        return nil, failure
    end
    return { code = code, signal = signal, stdout = out, stderr = errout }
end

-- fork and `forever` ------------------------------------------------------

-- Children kept alive by `forever`. The pid fork returned is the handle of the supervision:
-- supervised[first pid] and supervised[current pid] are its record, so process.kill() by
-- this process of either reaches the current child and stops the supervision (the parent
-- meant it to end), however often it was restarted.
local supervised = {}

local RESTART_DEFAULTS = { delay = 100, max_delay = 10000, limit = 10, window = 60000, stable = 10000 }

local function now_ms() return system.monotime() * 1000 end

-- Through the runtime's one report path, which is the log module's sink once `log` is loaded
-- (so supervision messages come out in the user's log format), else stderr as "luaio: msg".
local report = require("luaio.core").report
local function say(msg, level)
    report(msg, level)
end

local function describe_exit(code, signal)
    if signal then return "was killed by " .. tostring(signal) end
    return "exited with code " .. tostring(code)
end

-- Restarts `child` (made by `start()`) whenever it dies: after a back-off that doubles while it
-- keeps dying within `stable` ms of its start, and never more than `limit` times in `window` ms.
local function supervise(child, start, label, policy)
    local sup = { stopped = false, pid = child.pid, first = child.pid }
    supervised[child.pid] = sup
    local function forget()
        -- sup.pid is nil between a death and the restart (and once supervision gives up).
        if sup.pid then supervised[sup.pid] = nil end
        supervised[sup.first] = nil
    end
    task.spawn(function()
        local restarts, delay = {}, 0
        local started = now_ms()
        while true do
            local code, signal = child:wait()
            if sup.pid ~= sup.first then supervised[sup.pid] = nil end
            sup.pid = nil -- no child runs until the restart
            if sup.stopped then return forget() end
            local t = now_ms()
            if t - started >= policy.stable then
                delay = policy.delay
            else
                delay = delay == 0 and policy.delay or math.min(delay * 2, policy.max_delay)
            end
            local recent = {}
            for _, r in ipairs(restarts) do
                if t - r < policy.window then recent[#recent + 1] = r end
            end
            restarts = recent
            local pid = child.pid
            if #restarts >= policy.limit then
                say(("%s (pid %d) %s; it was restarted %d times in %d ms: giving up"):format(
                    label, pid, describe_exit(code, signal), #restarts, policy.window), "error")
                return forget()
            end
            say(("%s (pid %d) %s; restarting in %d ms"):format(label, pid, describe_exit(code, signal), delay), "warn")
            sleep(delay)
            if sup.stopped then return forget() end
            restarts[#restarts + 1] = now_ms()
            local err
            child, err = start()
            started = now_ms()
            if child then
                sup.pid = child.pid
                supervised[child.pid] = sup
            else
                say(("%s cannot be restarted: %s"):format(label, err.message), "error")
                child = { pid = pid, wait = function() return 1 end }
            end
        end
    end)
    return sup
end

--- Starts another luaio running options.file with options.args; returns its pid.
function process.fork(options)
    if type(options) ~= "table" then
        error("process.fork: expected an options table, got " .. type(options), 2)
    end
    check_options(options, "fork")
    local file, args = options.file, options.args
    if type(file) ~= "string" then error("process.fork: option 'file' must be a string", 2) end
    if args ~= nil and type(args) ~= "table" then error("process.fork: option 'args' must be an array of strings", 2) end
    local forever = options.forever
    if forever ~= nil and type(forever) ~= "boolean" and type(forever) ~= "table" then
        error("process.fork: option 'forever' must be a boolean (or a table of restart limits)", 2)
    end
    local policy = copy(RESTART_DEFAULTS)
    if type(forever) == "table" then
        for k, v in pairs(forever) do
            if RESTART_DEFAULTS[k] == nil or type(v) ~= "number" or v < 0 then
                error("process.fork: forever." .. tostring(k) .. " is not a restart limit", 2)
            end
            policy[k] = v
        end
    end
    local f, ferr = io.open(file, "r")
    if not f then return nil, new_error("ENOENT", "cannot open the file to fork: " .. tostring(ferr)) end
    f:close()
    local o = copy(options)
    o.file, o.forever = nil, nil
    o.args = { file }
    for i, a in ipairs(args or {}) do o.args[i + 1] = a end
    o._fname = "fork"
    local function start() return core.spawn(process.execPath, o) end
    local child, err = start()
    if not child then return nil, err end
    if forever then supervise(child, start, "process.fork: '" .. file .. "'", policy) end
    return child.pid
end

--- Sends a signal (default SIGTERM) to a process: true, or nil and an error.
function process.kill(pid, signal)
    if type(pid) ~= "number" then error("process.kill: expected a pid (a number), got " .. type(pid), 2) end
    local sup = supervised[pid]
    if not sup then return core.kill(pid, signal) end
    -- A supervised child: the signal goes to its current process; any signal but 0 (a test of
    -- existence) ends the supervision, even between two restarts (no process runs then).
    local signo, serr = core.signum(signal == nil and "SIGTERM" or signal)
    if not signo then return nil, serr end
    local ok, err = true, nil
    if sup.pid then ok, err = core.kill(sup.pid, signo) end
    if ok and signo ~= 0 then sup.stopped = true end
    return ok, err
end

-- Signals -----------------------------------------------------------------

local handlers = {}   -- signo -> array of functions
local sigwaiters = {} -- signo -> array of waiting records {co, done}
local shutdown_hooks = {}
local SIGTERM, SIGINT = core.signum("SIGTERM"), core.signum("SIGINT")
-- Listening servers that a graceful stop drains: tcp server -> its stop function or false
-- (weak keys: a listening server is anchored by its C++ side, a closed one may go).
local servers = setmetatable({}, { __mode = "k" })
local stopping = false

-- SIGTERM and SIGINT start a graceful stop while there is something to stop (a hook, a
-- server), and are kept caught once it began: a second SIGTERM (systemd signals a master and
-- its workers, then the master signals them again) must not cut the drain.
local function stops(signo)
    return (signo == SIGTERM or signo == SIGINT) and (stopping or #shutdown_hooks > 0 or next(servers) ~= nil)
end

local function update_watch(signo)
    local h, w = handlers[signo], sigwaiters[signo]
    local waiting = w ~= nil and #w > 0
    local need = (h ~= nil and #h > 0) or waiting or stops(signo)
    if need then
        local ok, err = core.watch_signal(signo, waiting)
        if not ok then return err end
    else
        core.unwatch_signal(signo)
    end
end

core.set_signal_dispatch(function(signo)
    local name = core.signame(signo) or signo
    local ws = sigwaiters[signo]
    sigwaiters[signo] = nil
    if ws then
        for _, w in ipairs(ws) do
            if not w.done then
                w.done = true
                ready(w.co, name)
            end
        end
    end
    local hs = handlers[signo]
    if hs and #hs > 0 then
        for _, fn in ipairs({ unpack(hs) }) do task.spawn(fn, name) end
    elseif stops(signo) then
        if stopping and signo == SIGINT then
            -- A second Ctrl-C: the user does not want to wait.
            say("SIGINT again: exiting without waiting", "warn")
            process.exit(128 + SIGINT)
        end
        process.shutdown(0)
    end
    update_watch(signo)
end)

local function signals_of(sig, fname)
    local list = type(sig) == "table" and sig or { sig }
    local r = {}
    for i, s in ipairs(list) do r[i] = check_signal(s, fname) end
    if #r == 0 then raise("process." .. fname, "no signal given") end
    return r
end

--- Runs fn(signal_name) in a new task each time the signal arrives. While a handler is
--- registered the signal no longer has its default effect (SIGTERM no longer kills).
function process.on(signal, fn)
    local signo = check_signal(signal, "on")
    if type(fn) ~= "function" then error("process.on: expected a function as argument 2, got " .. type(fn), 2) end
    local h = handlers[signo] or {}
    handlers[signo] = h
    h[#h + 1] = fn
    local err = update_watch(signo)
    if err then
        h[#h] = nil
        error("process.on: cannot handle " .. tostring(signal) .. ": " .. err.message, 2)
    end
end

--- Removes a handler (or all handlers of the signal when fn is nil).
function process.off(signal, fn)
    local signo = check_signal(signal, "off")
    local h = handlers[signo]
    if h then
        for i = #h, 1, -1 do
            if fn == nil or h[i] == fn then table.remove(h, i) end
        end
    end
    update_watch(signo)
end

--- Waits for one of the signals (a name, a number or an array of them); returns its name, or
--- nil and an ETIMEDOUT error after `timeout` ms. While it waits, the process stays alive.
function process.waitSignal(signal, timeout)
    local signos = signals_of(signal, "waitSignal")
    if timeout ~= nil and (type(timeout) ~= "number" or timeout < 0) then
        error("process.waitSignal: timeout must be a non-negative number of milliseconds", 2)
    end
    local co = current()
    if not co then error("process.waitSignal: cannot wait outside a task", 2) end
    local w = { co = co }
    for _, signo in ipairs(signos) do
        local list = sigwaiters[signo] or {}
        sigwaiters[signo] = list
        list[#list + 1] = w
        local err = update_watch(signo)
        if err then
            list[#list] = nil
            error("process.waitSignal: cannot wait for " .. tostring(signo) .. ": " .. err.message, 2)
        end
    end
    local t = timeout and timer.setTimeout(timeout, function()
        if not w.done then
            w.done = true
            ready(co, nil, new_error("ETIMEDOUT", "no signal within " .. timeout .. " ms"))
        end
    end)
    local name, err = suspend()
    if t then t:stop() end
    for _, signo in ipairs(signos) do
        local list = sigwaiters[signo]
        if list then
            for i = #list, 1, -1 do
                if list[i] == w then table.remove(list, i) end
            end
            if #list == 0 then sigwaiters[signo] = nil end
        end
        update_watch(signo)
    end
    return name, err
end

-- Graceful shutdown -------------------------------------------------------
--
-- Anything that must finish its work before the process ends registers a hook; servers
-- (tcp, http) register themselves. On SIGTERM or SIGINT (unless the app handles the signal
-- itself) or on process.shutdown(), the servers are stopped in load balancer order: for
-- drainDelay ms they go on serving but report draining (http responses end their connection,
-- http.health answers 503), then they stop accepting, serve what is queued in their backlog
-- and finish the requests in progress; every hook runs meanwhile in its own task. When all
-- are done the process exits 0; after shutdownTimeout ms (from the signal) it exits anyway,
-- with status 1.

local function env_ms(name, default)
    local v = tonumber(os.getenv(name))
    return v and v >= 0 and v or default
end

--- Milliseconds servers keep serving, reporting themselves draining, before they stop accepting.
process.drainDelay = env_ms("LUAIO_DRAIN_DELAY", 1000)

--- Milliseconds a graceful stop may take (the grace period) before the process exits with status 1.
process.shutdownTimeout = env_ms("LUAIO_SHUTDOWN_TIMEOUT", 10000)

--- Registers fn() to run on graceful shutdown; returns fn (the key for offShutdown).
function process.onShutdown(fn)
    if type(fn) ~= "function" then
        error("process.onShutdown: expected a function, got " .. type(fn), 2)
    end
    shutdown_hooks[#shutdown_hooks + 1] = fn
    update_watch(SIGTERM)
    update_watch(SIGINT)
    return fn
end

--- Removes a hook registered with onShutdown (e.g. when a server is closed early).
function process.offShutdown(fn)
    for i = #shutdown_hooks, 1, -1 do
        if shutdown_hooks[i] == fn then table.remove(shutdown_hooks, i) end
    end
    update_watch(SIGTERM)
    update_watch(SIGINT)
end

--- For tcp and http: `srv` (a listening tcp server) is stopped by a graceful stop. stop(srv,
--- "drain") begins its drain and stop(srv, "close") stops it accepting; without stop, it is
--- srv:close(). It must not hold a reference to srv (the table's keys are weak).
function process._serve(srv, stop)
    servers[srv] = stop or false
    update_watch(SIGTERM)
    update_watch(SIGINT)
end

local function open_servers()
    local open = {}
    for srv in pairs(servers) do
        if pcall(srv.address, srv) then open[#open + 1] = srv end -- address() raises once closed
    end
    return open
end

local function stop_servers()
    local open = open_servers()
    if #open == 0 then return end
    for _, srv in ipairs(open) do
        if servers[srv] then servers[srv](srv, "drain") end
    end
    if process.drainDelay > 0 then sleep(process.drainDelay) end
    for _, srv in ipairs(open) do
        if servers[srv] then servers[srv](srv, "close") else srv:close() end
    end
    for _, srv in ipairs(open) do
        while srv:connections() > 0 do sleep(10) end
    end
end

--- True once a graceful shutdown has begun (servers drain, then refuse new work).
function process.stopping() return stopping end

--- Stops gracefully (see above), then exits with `code` (default 0). Returns at once;
--- repeated calls do nothing.
function process.shutdown(code)
    if stopping then return end
    stopping = true
    local hooks = shutdown_hooks
    shutdown_hooks = {}
    task.spawn(function()
        local t = timer.setTimeout(process.shutdownTimeout, function()
            say(("graceful stop still running after %d ms: exiting"):format(process.shutdownTimeout), "error")
            process.exit(1)
        end)
        local running = { task.spawn(stop_servers) }
        for _, fn in ipairs(hooks) do running[#running + 1] = task.spawn(fn) end
        for _, h in ipairs(running) do h:join() end
        t:stop()
        if code and code ~= 0 then process.exit(code) end
        -- End as a script does when nothing is left, so the Lua state is closed and every
        -- object finalized; whatever the app still keeps open (a timer, a child) is cut by
        -- the exit on the next turn of the loop.
        io.stdout:flush()
        timer.setTimeout(0, function() process.exit(0) end):unref()
    end)
end

-- Multi-process servers -------------------------------------------------

--- In a worker of `luaio --workers N`: its slot (1..N); nil otherwise.
process.workerId = nil

--- A listening TCP socket (descriptor) for host:port with SO_REUSEPORT: fd, port or nil, err.
--- In a worker of `luaio --workers`, the master's socket for this worker's slot (the same
--- socket survives the worker's restarts and reloads); elsewhere a new socket.
function process.listenSocket(host, port, backlog)
    return core.listen_socket(host, port, backlog or 511)
end

-- Socket activation: the listening sockets systemd handed over (LISTEN_PID, LISTEN_FDS), read
-- once when this module loads, before any child can inherit the variables.
local activated = core.listen_fds()

--- The listening sockets systemd passed to this process: an array of {fd, family, address,
--- port} (empty without socket activation).
function process.listenFds()
    local r = {}
    for i, s in ipairs(activated) do r[i] = { fd = s.fd, family = s.family, address = s.address, port = s.port } end
    return r
end

--- For tcp and the master: the descriptor of the socket systemd passed for `port`, or nil.
--- `shared` (the master, for all its slots) leaves it for the next caller; otherwise it is
--- taken, as one server adopts it.
function process._activated(port, shared)
    for _, s in ipairs(activated) do
        if s.port == port and port ~= 0 and not s.taken then
            s.taken = not shared
            return s.fd
        end
    end
end

--- Closes a descriptor from listenSocket that was not handed over.
process.closeSocket = core.close_fd

--- The number of CPUs this process may run on, and the CPUs a process may run on.
process.ncpus = core.ncpus
process.affinity = core.affinity

return process
