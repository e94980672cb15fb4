-- Shared helpers for specs: `local helper = require "helper"` (spec/ is on package.path).
local helper = {}

helper.luaio = os.getenv("LUAIO_BIN") or "build/luaio"
helper.source_dir = os.getenv("LUAIO_SOURCE_DIR") or "."

--- This process's pid (from /proc/self/stat, without the process module).
function helper.pid()
    if not helper._pid then
        local f = assert(io.open("/proc/self/stat"))
        helper._pid = tonumber(f:read("*a"):match("^(%d+)"))
        f:close()
    end
    return helper._pid
end

--- Number of open file descriptors of this process (read in-process: `ls` through io.popen
--- raced with popen's closing of the pipe, and counted one too many under load).
function helper.fd_count()
    return require("luaio.core").fds()
end

--- Waits (up to `ms`, default 5000) until cond() is true; returns whether it became true. Waits
--- for what a spec expects instead of sleeping a fixed time that a loaded machine can overrun.
function helper.wait_for(cond, ms)
    local sleep = require("timer").sleep -- not the global, which a spec may replace
    for _ = 1, (ms or 5000) / 5 do
        if cond() then return true end
        sleep(5)
    end
    return cond() and true or false
end

--- A connection handler that sends back what it reads until the peer closes or a write fails.
function helper.echo(sock)
    while true do
        local data = sock:read()
        if not data or sock:write(data) then return end
    end
end

--- The open descriptor count once it is at most `n`, or what it is after `ms` (default 2000):
--- a closed handle gives its descriptor back in a later turn of the loop, so a count taken
--- right after a close can be one too high on a loaded machine.
function helper.fds_back_to(n, ms)
    local sleep = require("timer").sleep -- not the global, which a spec may replace
    for _ = 1, (ms or 2000) / 10 do
        local f = helper.fd_count()
        if f <= n then return f end
        sleep(10)
    end
    return helper.fd_count()
end

--- The whole content of a file, or nil if it cannot be opened.
function helper.read(path)
    local f = io.open(path)
    if not f then return nil end
    local s = f:read("*a")
    f:close()
    return s
end

--- A TCP port on 127.0.0.1 that was free a moment ago, for servers started by a spec that cannot
--- listen on port 0 and tell which port they got (redis-server, postgres, mariadbd, openssl).
--- It is below 32768, outside the kernel's range of ephemeral ports (32768-60999), which port 0 and
--- every outgoing connection's source port come from: there a client's source port could take the
--- port while a killed server is down (its restart then fails with EADDRINUSE), or a client
--- reconnecting to the stopped server could get the dialed port as its own source port and be
--- connected to itself. Each spec process starts at its own place (from its pid) in 20000-32767.
local next_port
function helper.free_port()
    local tcp = require "tcp"
    next_port = next_port or 20000 + helper.pid() * 37 % 12768
    for _ = 1, 1000 do
        local port = next_port
        next_port = port < 32767 and port + 1 or 20000
        local srv = tcp.createServer(port, function() end, { host = "127.0.0.1" })
        if srv then
            srv:close()
            return port
        end
    end
    error("helper.free_port: no free port in 20000-32767")
end

--- Waits (up to `ms`, default 5000) until every thread of process `pid` is stopped (state T in
--- /proc): SIGSTOP is delivered asynchronously, and a thread already running on another core
--- may still answer a request after kill() has returned. Returns true once all are stopped.
function helper.wait_stopped(pid, ms)
    local fs = require "fs"
    return helper.wait_for(function()
        local threads = fs.readdir("/proc/" .. pid .. "/task")
        if not threads then return true end -- gone: it answers nothing either
        for _, t in ipairs(threads) do
            local f = io.open("/proc/" .. pid .. "/task/" .. t.name .. "/stat")
            local stat = f and f:read("*a")
            if f then f:close() end
            -- The state follows the command name in parentheses, which may itself hold spaces.
            local state = stat and stat:match("%) (%a)")
            if state and state ~= "T" and state ~= "t" then return false end
        end
        return true
    end, ms or 5000)
end

--- Writes `src` to a temporary .lua file and returns its path.
function helper.script(src)
    local path = os.tmpname() .. ".lua"
    local f = assert(io.open(path, "w"))
    f:write(src)
    f:close()
    return path
end

--- Runs a shell command (blocking; for short commands only) and returns its stdout,
--- stderr and exit status.
function helper.sh(cmd)
    local out, err = os.tmpname(), os.tmpname()
    local ok, _, code = os.execute("(" .. cmd .. ") >" .. out .. " 2>" .. err)
    local function slurp(p)
        local f = io.open(p)
        local s = f and f:read("*a") or ""
        if f then f:close() end
        os.remove(p)
        return s
    end
    -- LuaJIT's os.execute returns the raw status (exit code * 256) unless built with 5.2 compat.
    local status
    if type(ok) == "number" then
        status = ok >= 256 and math.floor(ok / 256) or ok
    else
        status = code
    end
    return slurp(out), slurp(err), status
end

--- Runs luaio with the given shell-quoted arguments; returns stdout, stderr, exit status.
function helper.run(args, stdin)
    local cmd = helper.luaio .. " " .. args
    if stdin then
        local p = os.tmpname()
        local f = io.open(p, "w")
        f:write(stdin)
        f:close()
        cmd = cmd .. " <" .. p
    end
    return helper.sh(cmd)
end

--- Waits (up to `ms`, default 1000) until no libuv handle keeps the loop alive and, if
--- `fds` is given, the open descriptor count is back to it. Returns true, or false and what
--- is left. A leaked socket, timer or child fails the spec that calls this.
function helper.idle(fds, ms)
    local core = require "luaio.core"
    local waited = 0
    while true do
        local h, f = core.handles(), fds and helper.fd_count() or nil
        if h == 0 and (not fds or f <= fds) then return true end
        if waited >= (ms or 1000) then
            return false, ("%d handle(s) active, %s descriptors (baseline %s)"):format(h, tostring(f), tostring(fds))
        end
        require("timer").sleep(10) -- not the global, which a spec may replace
        waited = waited + 10
    end
end

-- The leak check after every spec. spec/run.lua loads this file as busted's helper, so the
-- hooks below sit in the root context and run around every spec of every file: what a spec
-- opens (libuv handles, tasks, file descriptors) must be gone when it ends, else the spec fails
-- with what is left. Things a spec's setup() opens for all its specs are in both counts; its
-- teardown() must close them, which run.lua checks when the file ends.
local leaks = require "leaks"
helper.snapshot, helper.leaks = leaks.snapshot, leaks.wait

local busted = package.loaded.busted
if busted and busted.after_each and not helper.leak_hooks then
    helper.leak_hooks = true
    local before, name
    busted.subscribe({ "test", "start" }, function(element)
        name = element.name
        for p in function(_, e) return busted.parent(e) end, nil, element do
            if p.name and p.descriptor ~= "file" then name = p.name .. " " .. name end
        end
        return nil, true
    end)
    busted.before_each(function()
        before = leaks.snapshot()
    end)
    busted.after_each(function()
        local left = leaks.wait(before)
        if left then error(("leak check: '%s' left %s"):format(name, left), 0) end
    end)
end

-- Test certificates, made with openssl (ECDSA P-256) in directory dir: a CA `name` (name.pem,
-- name.key), self-signed or an intermediate signed by the CA `parent`; and a key and certificate
-- `name` for subjectAltName `san` ("DNS:localhost,IP:...") signed by the CA `ca` (nil:
-- self-signed), valid `days` (default 2; -1: already expired).
local function run_openssl(cmd)
    local out, err, code = helper.sh(cmd)
    assert(code == 0, cmd .. ": " .. out .. err)
end

-- A key and a certificate `name` with the extensions `ext` (lines of openssl's extfile), signed
-- by the CA `ca` or self-signed.
local function sign(dir, name, ext, ca, days)
    local base = dir .. "/" .. name
    run_openssl(("openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout %s.key -out %s.csr -subj /CN=%s")
        :format(base, base, name))
    local f = assert(io.open(base .. ".ext", "w"))
    f:write(ext)
    f:close()
    if ca then
        run_openssl(("openssl x509 -req -in %s.csr -CA %s/%s.pem -CAkey %s/%s.key -CAcreateserial -out %s.pem -days %d -extfile %s.ext")
            :format(base, dir, ca, dir, ca, base, days or 2, base))
    else
        run_openssl(("openssl x509 -req -in %s.csr -signkey %s.key -out %s.pem -days 2 -extfile %s.ext")
            :format(base, base, base, base))
    end
end

function helper.make_ca(dir, name, parent)
    if parent then
        return sign(dir, name, "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n", parent)
    end
    run_openssl(("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout %s/%s.key -out %s/%s.pem -days 2 -subj '/CN=%s'")
        :format(dir, name, dir, name, name))
end

function helper.make_cert(dir, name, san, ca, days)
    sign(dir, name, "subjectAltName=" .. san .. "\n", ca, days)
end

return helper
