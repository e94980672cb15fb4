-- `luaio --workers N app.lua`: the master and its workers, as real processes. Every spec
-- stops the master it starts (SIGTERM, then SIGKILL of the master's remaining workers).
local process = require "process"
local helper = require "helper"
local task = require "task"

local LUAIO = helper.luaio

local read = helper.read

local function children(pid)
    local r = process.run({ "pgrep", "-P", tostring(pid), "-x", "luaio" })
    local pids = {}
    for l in r.stdout:gmatch("%d+") do pids[#pids + 1] = tonumber(l) end
    table.sort(pids)
    return pids
end

-- Waits up to ms for cond() to be true.
local function eventually(cond, ms)
    for _ = 1, (ms or 5000) / 20 do
        if cond() then return true end
        sleep(20)
    end
    return cond()
end

-- Starts a master on an app (source text); returns the master's child object and a task
-- collecting its stderr.
local function master(src, n, env)
    local path = helper.script(src)
    local e = process.environ()
    for k, v in pairs(env or {}) do e[k] = v end
    local args = { "--workers" }
    if n then args[#args + 1] = tostring(n) end
    args[#args + 1] = path
    local m = assert(process.spawn(LUAIO, args, { env = e, stdio = { "ignore", "pipe", "pipe" } }))
    -- What the master wrote to stderr so far, for a spec that waits for a line (errparts).
    local errparts = {}
    local out = task.spawn(function()
        while true do
            local d = m.stderr:read()
            if not d then break end
            errparts[#errparts + 1] = d
        end
        m.stderr:close()
        return table.concat(errparts)
    end)
    local outparts = {}
    local stdout = task.spawn(function()
        while true do
            local d = m.stdout:read()
            if not d then break end
            outparts[#outparts + 1] = d
        end
        m.stdout:close()
        return table.concat(outparts)
    end)
    -- A failed assertion must not leave the master and its workers running.
    finally(function()
        if not m:status() then
            local workers = children(m.pid)
            m:kill("SIGKILL")
            for _, pid in ipairs(workers) do process.kill(pid, "SIGKILL") end
        end
    end)
    return { child = m, path = path, stderr = out, stdout = stdout, errparts = errparts, outparts = outparts }
end

local function stop(m)
    local workers = children(m.child.pid)
    m.child:kill("SIGTERM")
    local code = m.child:wait()
    for _, pid in ipairs(workers) do process.kill(pid, "SIGKILL") end
    local _, err = m.stderr:join()
    local _, out = m.stdout:join()
    os.remove(m.path)
    return code, err, out
end

local SLEEPER = [[
    local process = require "process"
    process.onShutdown(function() sleep(100) print("worker " .. process.workerId .. " stopped") end)
    require("timer").setInterval(1000, function() end)
    print("worker " .. process.workerId .. " ready")
]]

-- Waits until n SLEEPER workers have run their main chunk (so their onShutdown is set): a
-- worker is a child as soon as it is forked, and a SIGTERM before its main chunk ran ends it
-- without its shutdown handler.
local function ready(m, n)
    return eventually(function()
        local _, k = table.concat(m.outparts):gsub("worker %d+ ready", "")
        return k == n
    end, 20000)
end

describe("luaio --workers", function()
    it("starts N workers, each pinned to its own core", function()
        local cpus = process.affinity()
        local m = master(SLEEPER, 2)
        assert.is_true(ready(m, 2))
        assert.are.equal(2, #children(m.child.pid))
        local pinned = {}
        for _, pid in ipairs(children(m.child.pid)) do
            local list = read("/proc/" .. pid .. "/status"):match("Cpus_allowed_list:%s*(%S+)")
            pinned[#pinned + 1] = list
        end
        table.sort(pinned)
        if #cpus > 1 then
            local want = { tostring(cpus[1]), tostring(cpus[2]) }
            table.sort(want)
            assert.are.same(want, pinned)
        end
        local code, err, out = stop(m)
        assert.are.equal(0, code)
        assert.matches("2 workers of", err)
        assert.matches("worker 1 stopped", out)
        assert.matches("worker 2 stopped", out)
    end)

    it("defaults to one worker per core", function()
        local m = master(SLEEPER, nil)
        local n = #process.affinity()
        assert.is_true(eventually(function() return #children(m.child.pid) == n end))
        stop(m)
    end)

    it("restarts a worker killed with SIGKILL", function()
        local m = master(SLEEPER, 2)
        assert.is_true(eventually(function() return #children(m.child.pid) == 2 end))
        local before = children(m.child.pid)
        process.kill(before[1], "SIGKILL")
        assert.is_true(eventually(function()
            local now = children(m.child.pid)
            return #now == 2 and now[1] ~= before[1] and now[2] ~= before[1]
        end))
        local _, err = stop(m)
        assert.matches("was killed by SIGKILL; restarting in 100 ms", err)
    end)

    it("SIGTERM stops the workers gracefully and leaves no process", function()
        local m = master(SLEEPER, 2)
        assert.is_true(ready(m, 2))
        local workers = children(m.child.pid)
        local code, err, out = stop(m)
        assert.are.equal(0, code)
        assert.matches("SIGTERM: stopping 2 workers.*stopped", err)
        local _, n = out:gsub("stopped", "")
        assert.are.equal(2, n)
        for _, pid in ipairs(workers) do assert.is_nil(read("/proc/" .. pid .. "/status")) end
    end)

    it("SIGHUP replaces every worker", function()
        local m = master(SLEEPER, 2)
        assert.is_true(eventually(function() return #children(m.child.pid) == 2 end))
        local before = children(m.child.pid)
        m.child:kill("SIGHUP")
        assert.is_true(eventually(function()
            local now = children(m.child.pid)
            return #now == 2 and now[1] ~= before[1] and now[1] ~= before[2] and now[2] ~= before[1]
                and now[2] ~= before[2]
        end))
        local _, err = stop(m)
        assert.matches("SIGHUP: replacing 2 workers.*reload done", err)
    end)

    it("gives up on a worker that crashes at start, with a message, and exits", function()
        local m = master("os.exit(2)", 1, { LUAIO_RESTART_DELAY = "10", LUAIO_RESTART_LIMIT = "3" })
        local code = m.child:wait()
        local _, err = m.stderr:join()
        m.stdout:join()
        os.remove(m.path)
        assert.are.equal(1, code)
        assert.matches("restarting in 10 ms.*restarting in 20 ms.*restarting in 40 ms", err)
        assert.matches("restarted 3 times in 60000 ms: giving up.*no worker left", err)
    end)

    -- The master does not run the app: its messages go through the runtime's report path and
    -- the log module's sink, in the format the environment gives workers and master alike.
    it("writes its messages through the log sink, as JSON with LUAIO_LOG_FORMAT=json", function()
        local m = master("os.exit(2)", 1, { LUAIO_RESTART_DELAY = "10", LUAIO_RESTART_LIMIT = "1",
            LUAIO_LOG_FORMAT = "json" })
        local code = m.child:wait()
        local _, err = m.stderr:join()
        m.stdout:join()
        os.remove(m.path)
        assert.are.equal(1, code)
        local json = require "json"
        local got = {}
        for line in err:gmatch("[^\n]+") do
            local t = json.decode(line)
            assert.is_table(t, err)
            got[#got + 1] = t.level .. " " .. t.msg
            assert.truthy(t.time, line)
        end
        assert.matches("^info luaio: master: pid %d+: 1 workers of ", got[1], 1, false)
        assert.matches("^warn luaio: master: worker 1 %(pid %d+%) exited with code 2; restarting in 10 ms$", got[2])
        assert.matches("^error luaio: master: worker 1 .* giving up on this worker$", got[3])
        assert.are.equal("error luaio: master: no worker left: exiting", got[4])
        assert.are.equal(4, #got, err)
    end)

    -- logrotate's postrotate signals the master: SIGUSR1 must not end it (its default action),
    -- and the master and its workers reopen the file of LUAIO_LOG_OUTPUT.
    it("reopens the log files of master and workers on SIGUSR1", function()
        local dir = assert(require("fs").mkdtemp(require("fs").tmpdir() .. "/luaio-wlog-"))
        local path = dir .. "/app.log"
        local m = master([[
            local log = require "log"
            local n = 0
            require("timer").setInterval(20, function() n = n + 1; log.info("tick", { n = n }) end)
        ]], 1, { LUAIO_LOG_OUTPUT = path })
        local fs = require "fs"
        assert.is_true(eventually(function() return (fs.readFile(path) or ""):find("INFO tick") ~= nil end, 5000))
        assert(fs.rename(path, path .. ".1"))
        m.child:kill("SIGUSR1")
        assert.is_true(eventually(function() return (fs.readFile(path) or ""):find("INFO tick") ~= nil end, 5000),
            table.concat(m.errparts))
        local code = stop(m)
        assert.are.equal(0, code)
        local new = fs.readFile(path) or ""
        assert.truthy(new:find("INFO luaio: master: SIGUSR1: reopening log files", 1, true), new)
        assert.truthy(new:find("INFO luaio: master: stopped", 1, true), new)
        assert.falsy((fs.readFile(path .. ".1") or ""):find("master: stopped", 1, true))
        assert(fs.rm(dir, { recursive = true }))
    end)

    it("a worker follows its master when the master is killed", function()
        local m = master(SLEEPER, 1)
        assert.is_true(eventually(function() return #children(m.child.pid) == 1 end))
        local w = children(m.child.pid)[1]
        m.child:kill("SIGKILL")
        m.child:wait()
        assert.is_true(eventually(function()
            local s = read("/proc/" .. w .. "/status")
            return s == nil or s:match("State:%s*Z") ~= nil
        end))
        m.stderr:join()
        m.stdout:join()
        os.remove(m.path)
    end)

    it("rejects a bad worker count", function()
        for _, a in ipairs({ "--workers=0", "--workers=x", "--workers 2000" }) do
            local r = process.run(LUAIO .. " " .. a .. " /dev/null")
            assert.are.equal(1, r.code)
            assert.matches("%-%-workers needs a number of workers between 1 and 1024", r.stderr)
        end
        local r = process.run(LUAIO .. " --workers 2")
        assert.are.equal(1, r.code)
        assert.matches("needs a script", r.stderr)
    end)
end)

describe("luaio --workers with a TCP server", function()
    local tcp = require "tcp"
    local APP = helper.source_dir .. "/examples/workers_hello.lua"

    -- GET path on a new connection; sent() (if given) is called once the request is written.
    local function get(port, path, sent)
        local sock, err = tcp.connect(port, "127.0.0.1")
        if not sock then return nil, err end
        sock:settimeouts(10000, 10000, 10000) -- a server that never answers fails the spec, not hangs it
        sock:write("GET " .. path .. " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        if sent then sent() end
        local status = sock:readline()
        local body
        while true do
            local d = sock:read()
            if not d then break end
            body = (body or "") .. d
        end
        sock:close()
        if not status then return nil, { name = "EOF" } end
        return status, body
    end

    local function start(port)
        local src = read(APP)
        local m = master(src:gsub("tonumber%(arg%[1%]%) or 8080", tostring(port)), 2)
        assert.is_true(eventually(function() return get(port, "/") ~= nil end))
        return m
    end

    it("a graceful stop finishes a slow request in flight", function()
        local port = helper.free_port()
        local m = start(port)
        -- SIGTERM once the request is in the kernel's hands: the worker has accepted it or
        -- takes it from the backlog when it stops listening, and must answer it either way.
        local sent = false
        local slow = task.spawn(get, port, "/slow", function() sent = true end)
        assert.is_true(eventually(function() return sent end))
        m.child:kill("SIGTERM")
        local _, status, body = slow:join()
        local code = m.child:wait()
        local _, log = stop(m)
        assert.are.equal("HTTP/1.1 200 OK", status)
        assert.matches("Hello, world!$", body)
        assert.are.equal(0, code, log)
    end)

    it("a reload under load loses no request", function()
        local port = helper.free_port()
        local m = start(port)
        local done, failed, running = 0, {}, true
        local clients = {}
        for i = 1, 4 do
            clients[i] = task.spawn(function()
                while running do
                    local status, err = get(port, "/")
                    if status == "HTTP/1.1 200 OK" then
                        done = done + 1
                    else
                        failed[#failed + 1] = err and err.name or tostring(status)
                    end
                end
            end)
        end
        -- Each SIGHUP waits for the previous reload to be done (the master ignores a SIGHUP
        -- during a reload), and for requests to be answered before and after it.
        local function reloads()
            local _, k = table.concat(m.errparts):gsub("reload done", "")
            return k
        end
        for i = 1, 3 do
            local before = done
            assert.is_true(eventually(function() return done >= before + 20 end, 20000), "no request answered")
            m.child:kill("SIGHUP")
            assert.is_true(eventually(function() return reloads() == i end, 20000), "reload " .. i .. " not done")
        end
        local before = done
        assert.is_true(eventually(function() return done >= before + 20 end, 20000), "no request answered")
        running = false
        for _, c in ipairs(clients) do c:join() end
        stop(m)
        assert.are.equal(3, reloads())
        assert.are.same({}, failed)
    end)
end)
