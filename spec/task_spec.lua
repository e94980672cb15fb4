-- The coroutine core: tasks, sleep, channels, and waits inside user coroutines.
local task = require "task"
local system = require "system"
local core = require "luaio.core"
local helper = require "helper"

local function ms_since(t0)
    return (system.hrtime() - t0) / 1e6
end

describe("sleep", function()
    it("suspends only the calling task", function()
        local order = {}
        local h = task.spawn(function()
            sleep(30)
            order[#order + 1] = "slow"
        end)
        task.spawn(function()
            order[#order + 1] = "fast"
        end)
        h:join()
        assert.are.same({ "fast", "slow" }, order)
    end)

    it("waits at least the given time", function()
        local t0 = system.hrtime()
        sleep(50)
        assert.is_true(ms_since(t0) >= 49)
    end)

    it("lets 1,000 tasks sleep 100 ms each concurrently", function()
        local t0 = system.hrtime()
        local hs = {}
        for i = 1, 1000 do
            hs[i] = task.spawn(function()
                sleep(100)
                return i
            end)
        end
        local sum = 0
        for i = 1, 1000 do
            local ok, v = hs[i]:join()
            assert.is_true(ok)
            sum = sum + v
        end
        assert.are.equal(500500, sum)
        -- Sequentially this would take 100 s; concurrently it takes a little over 100 ms.
        assert.is_true(ms_since(t0) < 10000, "took " .. ms_since(t0) .. " ms")
    end)

    it("rejects bad arguments with the function's name", function()
        assert.has_error(function() sleep("x") end, "sleep: expected milliseconds (a number) as argument 1, got string")
        assert.has_error(function() sleep(-1) end, "sleep: milliseconds must be between 0 and 1e15")
        assert.has_error(function() sleep() end)
    end)
end)

describe("waiting outside a task", function()
    it("gives a clear error across a C call boundary", function()
        local ok, err = pcall(table.sort, { 3, 2, 1 }, function(a, b)
            sleep(1)
            return a < b
        end)
        assert.is_false(ok)
        assert.matches("sleep: cannot wait outside a task", err, 1, true)
    end)

    it("gives a clear error from a metamethod run by the garbage collector", function()
        local out, err, status = helper.run([[-e 'local function make() local p = newproxy(true); getmetatable(p).__gc = function() local ok, e = pcall(sleep, 1); print(e) end end make(); collectgarbage(); collectgarbage()']])
        assert.are.equal(0, status, err)
        assert.matches("cannot wait outside a task", out, 1, true)
    end)
end)

describe("task.spawn and join", function()
    it("returns true and the results", function()
        local h = task.spawn(function(a, b)
            sleep(1)
            return a + b, "x", nil
        end, 2, 3)
        local ok, sum, x = h:join()
        assert.is_true(ok)
        assert.are.equal(5, sum)
        assert.are.equal("x", x)
        assert.is_true(h:done())
        -- Joining again returns the same results at once.
        assert.are.same({ true, 5, "x" }, { h:join() })
    end)

    it("returns false and the error of a failed task, as a value", function()
        local h = task.spawn(function()
            sleep(1)
            error({ reason = "bad" })
        end)
        local ok, err = h:join()
        assert.is_false(ok)
        assert.are.equal("bad", err.reason)
    end)

    it("lets several tasks join the same task", function()
        local h = task.spawn(function() sleep(10) return 7 end)
        local a = task.spawn(function() return select(2, h:join()) end)
        local b = task.spawn(function() return select(2, h:join()) end)
        assert.are.same({ true, 7 }, { a:join() })
        assert.are.same({ true, 7 }, { b:join() })
    end)

    it("raises when a task joins itself, instead of waiting forever", function()
        local me
        me = task.spawn(function()
            sleep(1)
            local ok, err = me:join()
            return ok, err
        end)
        local ok, err = me:join()
        assert.is_false(ok)
        assert.matches("task_spec%.lua:%d+: h:join: a task cannot join itself %(it would wait forever%)$", err)
        -- A finished task's handle still joins from anywhere, its own coroutine reused or not.
        assert.is_false((me:join()))
    end)

    it("rejects a non-function", function()
        assert.has_error(function() task.spawn(42) end, "task.spawn: expected a function as argument 1, got number")
    end)

    it("reports an unjoined failing task with a traceback, and the others keep running", function()
        local script = helper.script([[
            local task = require "task"
            task.spawn(function() sleep(5) error("task blew up") end)
            task.spawn(function() sleep(20) print("still running") end)
            sleep(40)
            print("main done")
        ]])
        local out, err, status = helper.run(script)
        assert.are.equal(0, status)
        assert.are.equal("still running\nmain done\n", out)
        assert.matches("luaio: .-:2: task blew up\nstack traceback:", err)
    end)

    it("yields to other tasks with task.yield and coroutine.yield", function()
        local log = {}
        local h = task.spawn(function()
            for i = 1, 3 do
                log[#log + 1] = "a" .. i
                coroutine.yield()
            end
        end)
        local g = task.spawn(function()
            for i = 1, 3 do
                log[#log + 1] = "b" .. i
                task.yield()
            end
        end)
        h:join()
        g:join()
        assert.are.same({ "a1", "b1", "a2", "b2", "a3", "b3" }, log)
    end)

    it("leaves no memory behind after 100,000 short-lived tasks", function()
        local function batch(n)
            for _ = 1, n / 1000 do
                local hs = {}
                for i = 1, 1000 do
                    hs[i] = task.spawn(function() sleep(0) return i end)
                end
                for i = 1, 1000 do hs[i]:join() end
            end
        end
        batch(10000) -- warm up: pools and tables reach their steady size
        collectgarbage()
        collectgarbage()
        local before = collectgarbage("count")
        batch(100000)
        collectgarbage()
        collectgarbage()
        local after = collectgarbage("count")
        assert.is_true(after - before < 64, ("grew by %.1f KiB"):format(after - before))
        assert.are.equal(0, core.pending())
    end)
end)

describe("waits inside the user's own coroutines", function()
    it("suspend the whole chain: a generator may sleep between values", function()
        local gen = coroutine.wrap(function()
            for i = 1, 3 do
                sleep(5)
                coroutine.yield(i)
            end
            return "end"
        end)
        assert.are.same({ 1, 2, 3, "end" }, { gen(), gen(), gen(), gen() })
    end)

    it("return from coroutine.resume only when the coroutine yields or ends", function()
        local co = coroutine.create(function(a)
            sleep(5)
            local b = coroutine.yield(a * 2)
            sleep(5)
            return a + b
        end)
        assert.are.same({ true, 20 }, { coroutine.resume(co, 10) })
        assert.are.equal("suspended", coroutine.status(co))
        assert.are.same({ true, 15 }, { coroutine.resume(co, 5) })
        assert.are.equal("dead", coroutine.status(co))
        assert.are.same({ false, "cannot resume dead coroutine" }, { coroutine.resume(co) })
    end)

    it("work in nested coroutines while other tasks run", function()
        local ticks = 0
        local ticker = task.spawn(function()
            for _ = 1, 5 do
                sleep(2)
                ticks = ticks + 1
            end
        end)
        local outer = coroutine.wrap(function()
            local inner = coroutine.wrap(function()
                sleep(30)
                coroutine.yield("inner")
            end)
            coroutine.yield(inner())
        end)
        assert.are.equal("inner", outer())
        ticker:join()
        assert.are.equal(5, ticks)
    end)

    it("propagate errors of a wrapped coroutine after a wait", function()
        local f = coroutine.wrap(function()
            sleep(1)
            error("inside", 0)
        end)
        assert.has_error(f, "inside")
        local co = coroutine.create(function()
            sleep(1)
            error("inside2", 0)
        end)
        assert.are.same({ false, "inside2" }, { coroutine.resume(co) })
    end)
end)

describe("yielding across", function()
    it("pcall and xpcall", function()
        assert.are.same({ true, 3 }, { pcall(function() sleep(1) return 3 end) })
        local ok, e = xpcall(function() sleep(1) error("x", 0) end, function(m) return "handled " .. m end)
        assert.is_false(ok)
        assert.are.equal("handled x", e)
    end)

    it("iterators", function()
        local function slow_range(n)
            local i = 0
            return function()
                sleep(1)
                i = i + 1
                if i <= n then return i end
            end
        end
        local sum = 0
        for i in slow_range(5) do sum = sum + i end
        assert.are.equal(15, sum)
    end)

    it("metamethods", function()
        local mt = {
            __index = function(_, k) sleep(1) return k .. "!" end,
            __add = function(a, b) sleep(1) return a.v + b.v end,
            __call = function(_, x) sleep(1) return x * 2 end,
        }
        local a, b = setmetatable({ v = 1 }, mt), setmetatable({ v = 2 }, mt)
        assert.are.equal("hi!", a.hi)
        assert.are.equal(3, a + b)
        assert.are.equal(8, a(4))
    end)
end)

describe("channels", function()
    it("hand values from one task to another (rendezvous)", function()
        local ch = task.channel()
        local got = {}
        local consumer = task.spawn(function()
            for v in ch:iter() do got[#got + 1] = v end
        end)
        for i = 1, 5 do assert.is_nil(ch:send(i)) end
        ch:close()
        consumer:join()
        assert.are.same({ 1, 2, 3, 4, 5 }, got)
    end)

    it("buffer up to their capacity, then make senders wait", function()
        local ch = task.channel(2)
        local sent = 0
        local producer = task.spawn(function()
            for i = 1, 4 do
                ch:send(i)
                sent = i
            end
        end)
        sleep(5)
        assert.are.equal(2, sent)
        assert.are.equal(2, ch:len())
        assert.are.equal(1, ch:receive())
        assert.are.equal(2, ch:receive())
        assert.are.equal(3, ch:receive())
        assert.are.equal(4, ch:receive())
        producer:join()
        assert.are.equal(4, sent)
    end)

    it("return EOF to receivers and EPIPE to senders once closed", function()
        local ch = task.channel(1)
        local waiting = task.spawn(function() return ch:receive() end)
        sleep(1)
        ch:close()
        local ok, v, err = waiting:join()
        assert.is_true(ok)
        assert.is_nil(v)
        assert.are.equal("EOF", err.name)
        local e = ch:send(1)
        assert.are.equal("EPIPE", e.name)
        -- Values buffered before close can still be received.
        local ch2 = task.channel(1)
        ch2:send("kept")
        ch2:close()
        assert.are.equal("kept", ch2:receive())
        assert.are.equal("EOF", select(2, ch2:receive()).name)
    end)

    it("wake waiting senders with EPIPE on close", function()
        local ch = task.channel()
        local h = task.spawn(function() return ch:send("x") end)
        sleep(1)
        ch:close()
        local ok, err = h:join()
        assert.is_true(ok)
        assert.are.equal("EPIPE", err.name)
    end)

    it("reject a bad capacity", function()
        assert.has_error(function() task.channel(-1) end, "task.channel: capacity must be a non-negative integer")
        assert.has_error(function() task.channel("x") end, "task.channel: capacity must be a non-negative integer")
    end)
end)

describe("C++ frames", function()
    it("are unwound (destructors run) when a binding raises", function()
        local before = core.guards_destroyed()
        core.raise_through_destructor(false)
        assert.are.equal(before + 1, core.guards_destroyed())
        local ok, err = pcall(core.raise_through_destructor, true)
        assert.is_false(ok)
        assert.matches("raised on purpose", err)
        assert.are.equal(before + 2, core.guards_destroyed())
    end)
end)

describe("afterwards", function()
    it("leaves no handle open", function()
        assert(require("helper").idle())
    end)
end)
