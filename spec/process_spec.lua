-- The process module: real child processes, bounded in number and time; each spec reaps
-- what it starts and checks that no zombie is left.
local process = require "process"
local helper = require "helper"
local core = require "luaio.core"
local task = require "task"

local LUAIO = helper.luaio

local read = helper.read

local function status_field(pid, field)
    local s = read("/proc/" .. pid .. "/status")
    return s and s:match("\n" .. field .. ":%s*([^\n]*)")
end

-- Children of this process that are zombies (exited, not reaped).
local function zombies()
    local n = 0
    local p = io.popen("ps -o stat= --ppid " .. process.pid)
    for line in p:lines() do
        if line:match("^Z") then n = n + 1 end
    end
    p:close()
    return n
end

-- Runs a luaio script (source text) to its end: {code, stdout, stderr}.
local function luaio(src, args, options)
    local path = helper.script(src)
    local cmd = { LUAIO, path }
    for _, a in ipairs(args or {}) do cmd[#cmd + 1] = a end
    local o = options or {}
    o.timeout = o.timeout or 10000
    local r, err = process.run(cmd, o)
    os.remove(path)
    assert(r, err and err.message)
    return r
end

local function idle()
    for _ = 1, 100 do
        if core.handles() == 0 then return true end
        sleep(10)
    end
    return false
end

describe("process", function()
    after_each(function()
        assert.is_true(idle(), "a handle is left open")
        assert.are.equal(0, zombies())
    end)

    describe("spawn", function()
        it("gives the child's stdin, stdout and stderr as streams", function()
            local c = assert(process.spawn("sh", { "-c", "echo out; echo err >&2; read x; echo got $x; exit 3" }))
            assert.is_number(c.pid)
            assert.are.equal("out", c.stdout:readline())
            assert.are.equal("err", c.stderr:readline())
            assert.is_nil(c.stdin:write("abc\n"))
            assert.are.equal("got abc", c.stdout:readline())
            local data, err = c.stdout:read()
            assert.is_nil(data)
            assert.are.equal("EOF", err.name)
            assert.are.equal(3, c:wait())
            assert.are.equal(3, c:wait()) -- again: the same status
            c.stdin:close()
            c.stdout:close()
            c.stderr:close()
        end)

        it("pipes read and write like sockets: read(n), readuntil, shutdown, timeouts", function()
            local c = assert(process.spawn("cat"))
            c.stdin:write({ "hello ", "world|rest" })
            assert.are.equal("hello", c.stdout:read(5))
            assert.are.equal(" world", c.stdout:readuntil("|"))
            c.stdout:setTimeout(50)
            assert.are.equal("rest", c.stdout:read(4))
            local data, err = c.stdout:read(1)
            assert.is_nil(data)
            assert.are.equal("ETIMEDOUT", err.name)
            assert.is_nil(c.stdin:shutdown()) -- cat sees the end of its input and exits
            local _, e = c.stdout:read()
            assert.are.equal("EOF", e.name)
            assert.are.equal(0, c:wait())
            c.stdin:close()
            c.stdout:close()
            c.stderr:close()
        end)

        it("carries large data both ways with backpressure", function()
            local c = assert(process.spawn("cat", nil, { stdio = { "pipe", "pipe", "ignore" } }))
            local chunk = string.rep("x", 65536)
            local writer = task.spawn(function()
                for _ = 1, 64 do assert.is_nil(c.stdin:write(chunk)) end
                c.stdin:shutdown()
                c.stdin:close()
            end)
            local total = 0
            while true do
                local d = c.stdout:read()
                if not d then break end
                total = total + #d
            end
            writer:join()
            assert.are.equal(64 * 65536, total)
            assert.are.equal(0, c:wait())
            c.stdout:close()
        end)

        it("reports the signal that ended a child, by name", function()
            local c = assert(process.spawn("sleep", { "10" }, { stdio = { "ignore", "ignore", "ignore" } }))
            assert.is_true(c:kill("SIGKILL"))
            local code, signal = c:wait()
            assert.are.equal(128 + 9, code)
            assert.are.equal("SIGKILL", signal)
            local ok, err = c:kill()
            assert.is_nil(ok)
            assert.are.equal("ESRCH", err.name)
        end)

        it("kill defaults to SIGTERM and takes numbers and short names", function()
            for _, sig in ipairs({ false, 15, "TERM", "sigterm" }) do
                local c = process.spawn("sleep", { "10" }, { stdio = { "ignore", "ignore", "ignore" } })
                if sig then c:kill(sig) else c:kill() end
                local _, signal = c:wait()
                assert.are.equal("SIGTERM", signal)
            end
        end)

        it("lets several tasks wait for the same child", function()
            local c = process.spawn("sleep", { "0.05" }, { stdio = { "ignore", "ignore", "ignore" } })
            local a = task.spawn(function() return c:wait() end)
            local b = task.spawn(function() return c:wait() end)
            assert.are.same({ true, 0 }, { a:join() })
            assert.are.same({ true, 0 }, { b:join() })
        end)

        it("passes cwd, env and argv0", function()
            local c = process.spawn("sh", { "-c", "pwd; echo $FOO; echo $0" },
                { cwd = "/tmp", env = { FOO = "bar" }, argv0 = "myname" })
            assert.are.equal("/tmp", c.stdout:readline())
            assert.are.equal("bar", c.stdout:readline())
            assert.are.equal("myname", c.stdout:readline())
            c:wait()
            c.stdin:close()
            c.stdout:close()
            c.stderr:close()
        end)

        it("returns ENOENT for a file that does not exist", function()
            local c, err = process.spawn("/nonexistent/program")
            assert.is_nil(c)
            assert.are.equal("ENOENT", err.name)
            assert.matches("/nonexistent/program", err.message)
        end)

        it("raises on wrong argument types", function()
            assert.has_error(function() process.spawn(42) end)
            assert.has_error(function() process.spawn("ls", "-l") end)
            assert.has_error(function() process.spawn("ls", {}, { stdio = { "bogus" } }) end)
            assert.has_error(function() process.spawn("ls", { {} }) end)
            assert.has_error(function() process.spawn("ls", {}, { env = { 1, 2 } }) end)
            assert.has_error(function() process.spawn("ls", {}, { cpu = -2 }) end)
            assert.has_error(function() process.spawn("ls", {}, { uid = -1 }) end)
        end)
    end)

    describe("wait(pid) and exec", function()
        it("exec runs a command with this process's stdio and returns its pid", function()
            local pid = assert(process.exec("true"))
            assert.are.equal(0, process.wait(pid))
            local _, err = process.wait(pid)
            assert.are.equal("ECHILD", err.name)
        end)

        it("exec runs shell syntax through /bin/sh", function()
            local pid = assert(process.exec("exit 7"))
            assert.are.equal(7, process.wait(pid))
        end)

        it("wait(pid) works after the child has ended", function()
            local pid = assert(process.exec("true"))
            sleep(100)
            assert.are.equal(0, process.wait(pid))
        end)

        it("exec returns ENOENT for a command that does not exist", function()
            local pid, err = process.exec("no-such-command-here --flag")
            assert.is_nil(pid)
            assert.are.equal("ENOENT", err.name)
            assert.matches("command not found: no%-such%-command%-here", err.message)
        end)

        it("wait returns ECHILD for a process that is not our child", function()
            local code, err = process.wait(1)
            assert.is_nil(code)
            assert.are.equal("ECHILD", err.name)
        end)

        it("raises on a command that is not a string or array, or is empty", function()
            assert.has_error(function() process.exec(42) end)
            assert.has_error(function() process.exec("   ") end)
            assert.has_error(function() process.wait("x") end)
        end)
    end)

    describe("run", function()
        it("returns the exit code with the whole stdout and stderr", function()
            local r = assert(process.run("sh -c 'echo out; echo err >&2; exit 2'"))
            assert.are.same({ code = 2, stdout = "out\n", stderr = "err\n" }, r)
        end)

        it("runs an argv array without a shell and feeds input", function()
            local r = assert(process.run({ "cat" }, { input = "some input" }))
            assert.are.equal("some input", r.stdout)
            r = assert(process.run({ "echo", "$HOME;" }))
            assert.are.equal("$HOME;\n", r.stdout)
        end)

        it("returns ENOENT for a command that does not exist", function()
            local r, err = process.run("no-such-command-here")
            assert.is_nil(r)
            assert.are.equal("ENOENT", err.name)
        end)

        it("ends a command that outlives its timeout", function()
            local t0 = require("system").monotime()
            local r, err = process.run("sleep 5", { timeout = 100 })
            assert.is_nil(r)
            assert.are.equal("ETIMEDOUT", err.name)
            assert.is_true(require("system").monotime() - t0 < 2)
        end)

        it("keeps maxBuffer bytes of output and fails one byte past it", function()
            local r = assert(process.run("head -c 1000 /dev/zero", { maxBuffer = 1000 }))
            assert.are.equal(1000, #r.stdout)
            local r2, err = process.run("head -c 1001 /dev/zero", { maxBuffer = 1000 })
            assert.is_nil(r2)
            assert.are.equal("ENOBUFS", err.name)
            local r3, err3 = process.run("head -c " .. (process.MAX_BUFFER + 1) .. " /dev/zero")
            assert.is_nil(r3)
            assert.are.equal("ENOBUFS", err3.name)
        end)

        it("raises on bad options", function()
            assert.has_error(function() process.run("true", { timeout = -1 }) end)
            assert.has_error(function() process.run("true", { input = 5 }) end)
            assert.has_error(function() process.run("true", 5) end)
        end)
    end)

    describe("fork", function()
        it("starts luaio on a file with arguments and returns its pid", function()
            local out = os.tmpname()
            local path = helper.script(([[
                local f = io.open(%q, "w")
                f:write(table.concat(arg, ","), "|", require("process").ppid)
                f:close()
            ]]):format(out))
            local pid = assert(process.fork({ file = path, args = { "a", "b" } }))
            assert.are.equal(0, process.wait(pid))
            assert.are.equal("a,b|" .. process.pid, read(out))
            os.remove(out)
            os.remove(path)
        end)

        it("returns ENOENT for a missing file", function()
            local pid, err = process.fork({ file = "/nonexistent/app.lua" })
            assert.is_nil(pid)
            assert.are.equal("ENOENT", err.name)
            assert.matches("/nonexistent/app.lua", err.message)
        end)

        it("pins the child to a cpu (Cpus_allowed_list)", function()
            local path = helper.script("sleep(2000)")
            local cpus = process.affinity()
            local cpu = cpus[#cpus]
            local pid = assert(process.fork({ file = path, cpu = cpu }))
            assert.are.equal(tostring(cpu), status_field(pid, "Cpus_allowed_list"))
            process.kill(pid)
            process.wait(pid)
            os.remove(path)
        end)

        it("returns EINVAL for a cpu that does not exist", function()
            local path = helper.script("")
            local pid, err = process.fork({ file = path, cpu = 4096 })
            assert.is_nil(pid)
            assert.are.equal("EINVAL", err.name)
            os.remove(path)
        end)

        it("switches user and group (a root parent starts a nobody child)", function()
            if process.env.USER ~= "root" and status_field(process.pid, "Uid"):match("^(%d+)") ~= "0" then
                pending("needs root")
                return
            end
            local path = helper.script("sleep(2000)")
            os.execute("chmod 644 " .. path)
            local pid = assert(process.fork({ file = path, uid = 65534, gid = 65534 }))
            -- The child switches before it runs the script: wait for it (a loaded machine is slow).
            helper.wait_for(function() return (status_field(pid, "Uid") or ""):match("^65534%s") end)
            assert.matches("^65534%s", status_field(pid, "Uid"))
            assert.matches("^65534%s", status_field(pid, "Gid"))
            assert.are.equal("65534", status_field(pid, "Groups"):match("^(%d+)") or "65534")
            process.kill(pid)
            process.wait(pid)
            -- A user name gives that user's group too.
            pid = assert(process.fork({ file = path, uid = "nobody" }))
            helper.wait_for(function() return (status_field(pid, "Uid") or ""):match("^65534%s") end)
            assert.matches("^65534%s", status_field(pid, "Uid"))
            assert.matches("^65534%s", status_field(pid, "Gid"))
            process.kill(pid)
            process.wait(pid)
            os.remove(path)
        end)

        it("returns EINVAL for an unknown user or group name", function()
            local path = helper.script("")
            local pid, err = process.fork({ file = path, uid = "no-such-user-here" })
            assert.is_nil(pid)
            assert.are.equal("EINVAL", err.name)
            assert.matches("unknown user", err.message)
            pid, err = process.fork({ file = path, gid = "no-such-group-here" })
            assert.is_nil(pid)
            assert.matches("unknown group", err.message)
            os.remove(path)
        end)

        it("returns EPERM for a uid the parent may not switch to", function()
            local inner = helper.script("")
            os.execute("chmod 644 " .. inner)
            local r = luaio(([[
                local process = require "process"
                local pid, err = process.fork({ file = %q, uid = 0 })
                io.write(tostring(pid), " ", err and err.name or "")
            ]]):format(inner), nil, { uid = 65534 })
            assert.are.equal("nil EPERM", r.stdout)
            os.remove(inner)
        end)

        it("detached: a new session that outlives the parent", function()
            local pidfile = os.tmpname()
            local child = helper.script("sleep(3000)")
            local r = luaio(([[
                local process = require "process"
                local pid = process.fork({ file = %q, detached = true })
                local f = io.open(%q, "w") f:write(pid) f:close()
            ]]):format(child, pidfile))
            assert.are.equal(0, r.code) -- the parent did not wait for its detached child
            local pid = tonumber(read(pidfile))
            local stat = read("/proc/" .. pid .. "/stat")
            assert.is_string(stat)
            local session = stat:match("^%d+ %b() %S+ %d+ %d+ (%d+)")
            assert.are.equal(tostring(pid), session)
            process.kill(pid, "SIGKILL")
            os.remove(pidfile)
            os.remove(child)
        end)

        it("forever restarts a child that dies, until the parent kills it", function()
            local child = helper.script("sleep(5000)")
            local r = luaio(([[
                local process = require "process"
                local pid = process.fork({ file = %q, forever = { delay = 20 } })
                local function children()
                    local r = process.run("pgrep -P " .. process.pid .. " -x luaio")
                    local pids = {}
                    for l in r.stdout:gmatch("%%d+") do pids[#pids + 1] = l end
                    return pids
                end
                os.execute("kill -9 " .. pid) -- an outside kill: the child comes back
                -- Waits (bounded) for the restart, then for the end, instead of fixed sleeps
                -- that a loaded machine overruns.
                for _ = 1, 250 do
                    local c = children()
                    if c[1] and c[1] ~= tostring(pid) then break end
                    sleep(20)
                end
                local pids = children()
                io.write(#pids, " ", tostring(pids[1] ~= tostring(pid)), "\n")
                process.kill(tonumber(pids[1])) -- the parent's own kill stops the supervision
                for _ = 1, 250 do
                    if #children() == 0 then break end
                    sleep(20)
                end
                sleep(100) -- no restart follows
                io.write(#children() == 0 and "none" or "some")
            ]]):format(child))
            assert.matches("^1 true\nnone$", r.stdout)
            assert.matches("was killed by SIGKILL; restarting in 20 ms", r.stderr)
            os.remove(child)
        end)

        it("forever: the pid fork returned stops the child whatever its current pid", function()
            local child = helper.script("sleep(5000)")
            local r = luaio(([[
                local process = require "process"
                local pid = process.fork({ file = %q, forever = { delay = 20 } })
                local function children()
                    local r = process.run("pgrep -P " .. process.pid .. " -x luaio")
                    local pids = {}
                    for l in r.stdout:gmatch("%%d+") do pids[#pids + 1] = tonumber(l) end
                    return pids
                end
                sleep(100)
                for _ = 1, 2 do
                    local now = children()[1]
                    os.execute("kill -9 " .. now) -- outside kills: the child comes back, twice
                    for _ = 1, 100 do
                        local c = children()
                        if c[1] and c[1] ~= now then break end
                        sleep(20)
                    end
                end
                local now = children()[1]
                io.write(tostring(now ~= pid), " ", tostring(process.kill(pid, 0)), " ")
                io.write(tostring(process.kill(pid)), " ") -- the first pid is the supervision's handle
                for _ = 1, 100 do
                    if #children() == 0 then break end
                    sleep(20)
                end
                sleep(100) -- no restart follows
                io.write(#children() == 0 and "none " or "some ")
                local ok, err = process.kill(pid)
                io.write(err and err.name or "?")
            ]]):format(child))
            assert.are.equal("true true true none ESRCH", r.stdout, r.stderr)
            local _, restarts = r.stderr:gsub("restarting in", "")
            assert.are.equal(2, restarts)
            os.remove(child)
        end)

        it("forever: a kill of the first pid between two restarts ends the supervision", function()
            local child = helper.script("os.exit(3)")
            local r = luaio(([[
                local process = require "process"
                local pid = process.fork({ file = %q, forever = { delay = 300 } })
                -- Waits (bounded) for the child to have died and been reaped: its restart is
                -- 300 ms away. A fixed sleep could end before a slow child even started.
                for _ = 1, 2000 do
                    local f = io.open("/proc/" .. pid .. "/stat")
                    if not f then break end
                    f:close()
                    sleep(5)
                end
                io.write(tostring(process.kill(pid)))
                sleep(400)
                local r = process.run("pgrep -P " .. process.pid .. " -x luaio")
                io.write(" ", r.stdout == "" and "none" or "some")
            ]]):format(child))
            assert.are.equal("true none", r.stdout, r.stderr)
            local _, restarts = r.stderr:gsub("restarting in", "")
            assert.are.equal(1, restarts)
            os.remove(child)
        end)

        it("forever gives up, with a message, on a child that keeps crashing", function()
            local child = helper.script("os.exit(3)")
            local r = luaio(([[
                local process = require "process"
                process.fork({ file = %q, forever = { delay = 10, max_delay = 40, limit = 3 } })
            ]]):format(child))
            assert.are.equal(0, r.code)
            local _, restarts = r.stderr:gsub("restarting in", "")
            assert.are.equal(3, restarts)
            assert.matches("restarting in 10 ms.*restarting in 20 ms.*restarting in 40 ms", r.stderr)
            assert.matches("exited with code 3; it was restarted 3 times in 60000 ms: giving up", r.stderr)
            os.remove(child)
        end)

        it("raises on bad options", function()
            assert.has_error(function() process.fork("app.lua") end)
            assert.has_error(function() process.fork({}) end)
            assert.has_error(function() process.fork({ file = "x", args = "y" }) end)
            assert.has_error(function() process.fork({ file = "x", forever = "yes" }) end)
            assert.has_error(function() process.fork({ file = "x", forever = { speed = 1 } }) end)
        end)

        it("raises on a misspelled option, in fork, spawn, exec and run", function()
            local cases = {
                { "fork", function() process.fork({ file = "x", forver = true }) end, "forver" },
                { "spawn", function() process.spawn("true", {}, { cdw = "/" }) end, "cdw" },
                { "exec", function() process.exec("true", { stdio = {} }) end, "stdio" },
                { "run", function() process.run("true", { timout = 5 }) end, "timout" },
            }
            for _, c in ipairs(cases) do
                local ok, err = pcall(c[2])
                assert.is_false(ok)
                assert.matches("process." .. c[1] .. ": unknown option '" .. c[3] .. "'", err, 1, true)
                assert.matches("process_spec.lua", err, 1, true) -- the caller's line
            end
        end)
    end)

    describe("kill", function()
        it("sends signals by name or number; SIGTERM by default", function()
            local c = process.spawn("sleep", { "10" }, { stdio = { "ignore", "ignore", "ignore" } })
            assert.is_true(process.kill(c.pid, 0))
            assert.is_true(process.kill(c.pid))
            assert.are.same({ 128 + 15, "SIGTERM" }, { c:wait() })
        end)

        it("returns EINVAL for an unknown signal and ESRCH for no such process", function()
            local ok, err = process.kill(process.pid, "SIGNOPE")
            assert.is_nil(ok)
            assert.are.equal("EINVAL", err.name)
            assert.matches("unknown signal 'SIGNOPE'", err.message)
            ok, err = process.kill(process.pid, 99)
            assert.are.equal("EINVAL", err.name)
            ok, err = process.kill(4194304 + 1)
            assert.is_nil(ok)
            assert.are.equal("ESRCH", err.name)
            assert.has_error(function() process.kill("1") end)
        end)
    end)

    describe("signals", function()
        it("a task waits for a signal", function()
            task.spawn(function()
                sleep(20)
                process.kill(process.pid, "SIGUSR1")
            end)
            assert.are.equal("SIGUSR1", process.waitSignal("SIGUSR1", 2000))
        end)

        it("waits for any of several signals, with a timeout", function()
            local name, err = process.waitSignal({ "SIGUSR2", "SIGHUP" }, 30)
            assert.is_nil(name)
            assert.are.equal("ETIMEDOUT", err.name)
            task.spawn(function()
                sleep(20)
                process.kill(process.pid, "SIGHUP")
            end)
            assert.are.equal("SIGHUP", process.waitSignal({ "SIGUSR2", "SIGHUP" }, 2000))
        end)

        it("runs handlers in their own tasks until removed", function()
            local got = {}
            local function h(name) got[#got + 1] = name end
            process.on("SIGUSR2", h)
            process.kill(process.pid, "SIGUSR2")
            assert.is_true(helper.wait_for(function() return #got == 1 end))
            process.kill(process.pid, "SIGUSR2")
            assert.is_true(helper.wait_for(function() return #got == 2 end))
            process.off("SIGUSR2", h)
            assert.are.same({ "SIGUSR2", "SIGUSR2" }, got)
        end)

        it("raises for unknown or uncatchable signals", function()
            assert.has_error(function() process.on("SIGNOPE", print) end, "process.on: unknown signal 'SIGNOPE'")
            assert.has_error(function() process.on("SIGKILL", print) end)
            assert.has_error(function() process.on("SIGINT", 5) end)
            assert.has_error(function() process.waitSignal("SIGNOPE") end)
            assert.has_error(function() process.waitSignal({}) end)
        end)

        it("SIGTERM runs the shutdown hooks, lets them finish, then exits 0", function()
            local r = luaio([[
                local process = require "process"
                process.onShutdown(function() sleep(200) io.write("hook 1 done\n") end)
                process.onShutdown(function() io.write("hook 2 done\n") end)
                local off = process.onShutdown(function() io.write("removed\n") end)
                process.offShutdown(off)
                require("timer").setInterval(1000, function() end) -- would keep it alive
                process.kill(process.pid, "SIGTERM")
                sleep(5000)
                io.write("not reached\n")
            ]])
            assert.are.equal(0, r.code)
            assert.are.equal("hook 2 done\nhook 1 done\n", r.stdout)
        end)

        it("an app's own SIGTERM handler replaces the default shutdown", function()
            local r = luaio([[
                local process = require "process"
                process.onShutdown(function() io.write("hook\n") end)
                process.on("SIGTERM", function() io.write("mine\n") process.exit(5) end)
                process.kill(process.pid, "SIGTERM")
                sleep(5000)
            ]])
            assert.are.equal(5, r.code)
            assert.are.equal("mine\n", r.stdout)
        end)

        it("without hooks or handlers SIGTERM keeps its default effect", function()
            local r = luaio([[
                local process = require "process"
                process.on("SIGTERM", print)
                process.off("SIGTERM")
                process.kill(process.pid, "SIGTERM")
                sleep(5000)
            ]])
            assert.are.equal(128 + 15, r.code)
            assert.are.equal("SIGTERM", r.signal)
        end)
    end)

    describe("this process", function()
        it("has pid, ppid, argv and execPath", function()
            assert.are.equal(helper.pid(), process.pid)
            assert.are.equal(tonumber(read("/proc/self/stat"):match("^%d+ %b() %S+ (%d+)")), process.ppid)
            assert.are.equal(process.execPath, process.argv[1])
            local r = luaio([[
                local p = require "process"
                io.write(table.concat(p.argv, " ", 3), "|", p.argv[2]:match("[^/]*$"):sub(-4))
            ]], { "x", "y" })
            assert.are.equal("x y|.lua", r.stdout)
        end)

        it("reads, sets and unsets the environment, which children inherit", function()
            process.env.LUAIO_SPEC_VAR = "hello"
            assert.are.equal("hello", process.env.LUAIO_SPEC_VAR)
            assert.are.equal("hello", process.environ().LUAIO_SPEC_VAR)
            assert.are.equal("hello\n", process.run("printenv LUAIO_SPEC_VAR").stdout)
            process.env.LUAIO_SPEC_VAR = nil
            assert.is_nil(process.env.LUAIO_SPEC_VAR)
            assert.has_error(function() process.env["A=B"] = "x" end)
        end)

        it("cwd, chdir and uptime", function()
            local here = process.cwd()
            assert.is_true(process.chdir("/tmp"))
            assert.are.equal("/tmp", process.cwd())
            local _, err = process.chdir("/nonexistent")
            assert.are.equal("ENOENT", err.name)
            process.chdir(here)
            local u = process.uptime()
            sleep(20)
            assert.is_true(process.uptime() >= u + 0.015)
        end)

        it("exit flushes stdout and ends with the code", function()
            local r = luaio([[
                io.write("buffered, no newline")
                print(" and printed")
                require("process").exit(3)
            ]])
            assert.are.equal(3, r.code)
            assert.are.equal("buffered, no newline and printed\n", r.stdout)
            assert.has_error(function() process.exit("x") end)
        end)

        it("exit closes the Lua state before the process ends: finalizers run, no task runs after it", function()
            -- Closing the state is what lets LeakSanitizer see no JIT buffers under ASan; here the
            -- finalizer's line shows that it happened, and the other task's absence that exit did
            -- not return to Lua code.
            local r = luaio([[
                local gc = newproxy(true)
                getmetatable(gc).__gc = function() io.write("finalized\n") end
                require("task").spawn(function() io.write("other task ran\n") end)
                pcall(coroutine.wrap(function()
                    io.write("partial line")
                    require("process").exit(7)
                    io.write(" after exit\n")
                end))
                io.write("main chunk went on\n")
            ]])
            assert.are.equal(7, r.code)
            assert.are.equal("partial linefinalized\n", r.stdout)
            assert.are.equal("", r.stderr)
        end)

        it("abort ends with SIGABRT", function()
            local path = helper.script('io.write("before") require("process").abort()')
            local r = process.run("ulimit -c 0; exec " .. LUAIO .. " " .. path, { timeout = 10000 })
            assert.are.equal(128 + 6, r.code)
            assert.are.equal("before", r.stdout)
            os.remove(path)
        end)
    end)
end)
