-- Misuse from Lua must never crash the process: every function of every metatable that luaio
-- registers (and of its __index table) is called with wrong arguments, on live and on closed
-- objects. Each call either works or raises a clean error; the process survives (CI runs this
-- under ASan+UBSan, where a stray read or write is a failure too).
local tcp = require "tcp"
local timer = require "timer"
local process = require "process"
local task = require "task"
local core = require "luaio.core"
local http_core = require "luaio.http"

-- Every C++ module built into luaio, so that all of their classes are registered.
for name in pairs(package.preload) do
    pcall(require, name)
end

-- The metatables luaio registers: registry entries named luaio.<module>.<type>.
local function luaio_metatables()
    local found = {}
    for name, mt in pairs(debug.getregistry()) do
        if type(name) == "string" and name:match("^luaio%.") and type(mt) == "table" then
            found[#found + 1] = { name = name, mt = mt }
        end
    end
    table.sort(found, function(a, b) return a.name < b.name end)
    return found
end

-- Every function of a metatable and of its __index table (when that is a table), with a label.
local function functions_of(class)
    local fns = {}
    local function collect(t, prefix)
        local keys = {}
        for k, v in pairs(t) do
            if type(v) == "function" then keys[#keys + 1] = k end
        end
        table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
        for _, k in ipairs(keys) do
            fns[#fns + 1] = { label = class.name .. prefix .. tostring(k), fn = t[k] }
        end
    end
    collect(class.mt, ":")
    if type(class.mt.__index) == "table" then collect(class.mt.__index, ".") end
    return fns
end

-- A live object of every class whose maker this spec knows, and what closes it again.
local function make_objects()
    local objs = {}
    local server = assert(tcp.createServer(0, function(sock)
        sock:read()
    end, { host = "127.0.0.1" }))
    local port = server:address().port
    local sock = assert(tcp.connect(port, "127.0.0.1"))
    local sock2 = assert(tcp.connect(port, "127.0.0.1"))
    sock:setTimeout(200)
    sock2:setTimeout(200)
    local limits = http_core.limits()
    local site = http_core.site(limits, function() end, false)
    local conn = http_core.client(sock2, limits)
    local sock3 = assert(tcp.connect(port, "127.0.0.1"))
    local rconn = require("luaio.redis").conn(sock3, 200)
    local t = timer.setTimeout(100000, function() end)
    local child = assert(process.spawn("sleep", { "30" }))
    objs["luaio.tcp.server"] = server
    objs["luaio.tcp.socket"] = sock
    objs["luaio.http.limits"] = limits
    objs["luaio.http.site"] = site
    objs["luaio.http.conn"] = conn
    objs["luaio.redis.conn"] = rconn
    objs["luaio.timer.timer"] = t
    objs["luaio.process.child"] = child
    objs["luaio.process.pipe"] = child.stdout
    local file = assert(require("fs").open("spec/misuse_spec.lua", "r"))
    local dir = assert(require("luaio.fs").opendir("spec"))
    objs["luaio.fs.file"] = file
    objs["luaio.fs.dir"] = dir
    -- A timer whose proxy lost its __gc by hand cannot be stopped any more: it must not keep
    -- the process alive. The child is killed by pid for the same reason.
    t:unref()
    local pid = child.pid
    local closers = {
        function() process.kill(pid, "SIGKILL") end,
        function() process.wait(pid) end,
        function() child.stdin:close() end,
        function() child.stdout:close() end,
        function() child.stderr:close() end,
        function() t:stop() end,
        function() conn:close() end,
        function() rconn:close() end,
        function() sock3:close() end,
        function() site:close() end,
        function() sock:close() end,
        function() sock2:close() end,
        function() server:close() end,
        function() file:close() end,
        function() dir:close() end,
    }
    return objs, function()
        for _, c in ipairs(closers) do pcall(c) end
    end
end

-- Values that are not the object a function expects.
local function wrong_values(objs)
    local vals = {
        nil, false, true, 0, -1, 5, 2 ^ 53, 0 / 0, math.huge, "", "x", "5", string.rep("a", 300), {}, { 1, 2 },
        setmetatable({}, { __index = function() error("no") end }), print, coroutine.create(function() end),
        newproxy(), newproxy(true), io.stdout, require("ffi").new("void *[1]"),
    }
    local n = 22 -- the nil at the start does not count for #
    for _, o in pairs(objs) do
        n = n + 1
        vals[n] = o
    end
    return vals, n
end

-- Calls fn with each wrong value as its first argument, and with the right self followed by
-- wrong values; counts the calls that raised. A call that would wait runs in its own task,
-- which the closing of the objects wakes.
local function walk(fns, vals, n, self)
    local calls, raised = 0, 0
    local function try(f, ...)
        calls = calls + 1
        local args = { n = select("#", ...), ... }
        task.spawn(function()
            if not pcall(f, unpack(args, 1, args.n)) then raised = raised + 1 end
        end)
        task.yield()
    end
    for _, f in ipairs(fns) do
        for i = 1, n do
            try(f.fn, vals[i])
            try(f.fn, vals[i], vals[i])
            try(f.fn, vals[i], "x", 5)
            if self then
                try(f.fn, self, vals[i])
                try(f.fn, self, vals[i], vals[i])
            end
        end
    end
    return calls, raised
end

describe("misuse of luaio's objects from Lua", function()
    it("finds the metatables of every module that registers objects", function()
        local names = {}
        for _, c in ipairs(luaio_metatables()) do names[c.name] = true end
        for _, expected in ipairs({ "luaio.tcp.socket", "luaio.tcp.server", "luaio.http.conn", "luaio.http.site",
            "luaio.timer.timer", "luaio.process.child", "luaio.process.pipe" }) do
            assert.is_true(names[expected], expected)
        end
    end)

    it("no metamethod is reachable as a method", function()
        for _, c in ipairs(luaio_metatables()) do
            local index = c.mt.__index
            if type(index) == "table" then
                for k in pairs(index) do
                    assert.is_falsy(type(k) == "string" and k:match("^__"), c.name .. " exposes " .. tostring(k))
                end
            end
            local objs, close = make_objects()
            local obj = objs[c.name]
            if obj then
                for _, mm in ipairs({ "__gc", "__close", "__index", "__newindex", "__tostring" }) do
                    local ok, v = pcall(function() return obj[mm] end)
                    assert.is_true(not ok or v == nil, c.name .. "." .. mm)
                end
            end
            close()
        end
    end)

    it("metamethods check their argument (the crashes of issue 10)", function()
        local objs, close = make_objects()
        local sock, server, conn, child = objs["luaio.tcp.socket"], objs["luaio.tcp.server"], objs["luaio.http.conn"],
            objs["luaio.process.child"]
        assert.is_false(pcall(getmetatable(sock).__gc, server))
        assert.is_false(pcall(getmetatable(conn).__gc, io.stdout))
        assert.is_false(pcall(getmetatable(child).__index, 5, "x"))
        assert.is_false(pcall(getmetatable(sock).__index.close, newproxy()))
        assert.is_false(pcall(getmetatable(sock).__index.isClosed, 5))
        -- A conn whose __gc was called by hand is closed, not freed.
        getmetatable(conn).__gc(conn)
        local ok, err = pcall(conn.request, conn, "GET", "/", {}, "")
        assert.is_false(ok)
        assert.matches("closed", err)
        close()
    end)

    it("a proxy's __gc called by hand cuts the proxy off; the object does what its collection does", function()
        -- A timer runs on without its proxy (as when the proxy is collected).
        local fired = false
        local t = timer.setTimeout(20, function() fired = true end)
        getmetatable(t).__gc(t)
        getmetatable(t).__gc(t)
        assert.is_false(t:active())
        for _ = 1, 100 do
            if fired then break end
            sleep(5)
        end
        assert.is_true(fired)
        -- A server closes.
        local server = assert(tcp.createServer(0, function() end, { host = "127.0.0.1" }))
        local port = server:address().port
        getmetatable(server).__gc(server)
        local ok, err = pcall(server.address, server)
        assert.is_false(ok)
        assert.matches("closed", err)
        local sock, cerr = tcp.connect(port, "127.0.0.1")
        assert.is_nil(sock)
        assert.are.equal("ECONNREFUSED", cerr.name)
        -- A socket closes.
        local s2 = assert(tcp.createServer(0, function(c) c:read() end, { host = "127.0.0.1" }))
        local c = assert(tcp.connect(s2:address().port, "127.0.0.1"))
        getmetatable(c).__gc(c)
        assert.is_true(c:isClosed())
        s2:close()
    end)

    it("every function of every luaio metatable survives wrong arguments", function()
        local tasks = core.tasks()
        local total, raised = 0, 0
        for _, c in ipairs(luaio_metatables()) do
            local objs, close = make_objects()
            local vals, n = wrong_values(objs)
            local calls, r = walk(functions_of(c), vals, n, objs[c.name])
            total, raised = total + calls, raised + r
            close()
            collectgarbage()
        end
        -- Every task of a call that waited was woken by the closing of its object.
        for _ = 1, 200 do
            if core.tasks() <= tasks then break end
            sleep(10)
        end
        assert.is_true(core.tasks() <= tasks)
        assert.is_true(total > 1000, "calls: " .. total)
        assert.is_true(raised > 0)
    end)

    it("the functions of the C++ modules survive wrong arguments", function()
        -- Everything but what ends, signals or blocks the process, changes its descriptors or
        -- waits without end (suspend, readline), or asks DNS servers.
        local modules = {
            ["luaio.tcp"] = "*",
            ["luaio.http"] = "*",
            timer = "*",
            system = { "cpuinfo", "gettime", "hrtime", "loadavg", "meminfo", "monotime", "uptime" },
            ["luaio.process"] = { "affinity", "cwd", "environ", "exepath", "getenv", "ncpus", "pid", "ppid",
                "signame", "signum", "uptime", "wait" },
            ["luaio.core"] = { "current", "describe", "fds", "handles", "pending", "ready", "tasks" },
        }
        local tasks = core.tasks()
        local objs, close = make_objects()
        local vals, n = wrong_values(objs)
        local total = 0
        for name, which in pairs(modules) do
            local m = require(name)
            local fns = {}
            if which == "*" then
                for k, v in pairs(m) do
                    if type(v) == "function" then fns[#fns + 1] = { label = name .. "." .. k, fn = v } end
                end
            else
                for _, k in ipairs(which) do
                    assert.is_function(m[k], name .. "." .. k)
                    fns[#fns + 1] = { label = name .. "." .. k, fn = m[k] }
                end
            end
            total = total + walk(fns, vals, n)
        end
        close()
        for _ = 1, 200 do
            if core.tasks() <= tasks then break end
            sleep(10)
        end
        assert.is_true(core.tasks() <= tasks)
        assert.is_true(total > 1000, "calls: " .. total)
    end)

    it("every function survives being called on closed and collected objects", function()
        for _, c in ipairs(luaio_metatables()) do
            local objs, close = make_objects()
            local obj = objs[c.name]
            close()
            if obj then
                local vals, n = wrong_values({})
                -- First the metamethods by hand (a second __gc must do no harm), then every method.
                for _, f in ipairs(functions_of(c)) do
                    if f.label:match(":__") then
                        pcall(f.fn, obj)
                        pcall(f.fn, obj)
                    end
                end
                walk(functions_of(c), vals, n, obj)
            end
        end
        collectgarbage()
        collectgarbage()
    end)

    it("methods of a live object whose __gc was called by hand raise or work", function()
        for _, c in ipairs(luaio_metatables()) do
            local objs, close = make_objects()
            local obj = objs[c.name]
            if obj and c.mt.__gc then
                c.mt.__gc(obj)
                local vals, n = wrong_values({})
                walk(functions_of(c), vals, n, obj)
            end
            close()
        end
        collectgarbage()
        collectgarbage()
    end)
end)
