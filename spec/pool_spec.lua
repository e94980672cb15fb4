-- luaio.pool: the bounded connection pool under redis.pool, postgres.pool and mysql.pool, with
-- connections that are plain tables (the database specs run it against real servers).
local Pool = require "luaio.pool"
local task = require "task"
local helper = require "helper"

-- A fake driver: connect takes `delay` ms and fails while `refuse` is set; every connection
-- knows whether it was closed, whether it is broken (not reusable) and whether it is idle.
local function driver(delay)
    local d = { opened = 0, closed = 0, refuse = false, conns = {} }
    d.hooks = {
        connect = function()
            if delay then sleep(delay) end
            if d.refuse then return nil, require("luaio.errors").new("ECONNREFUSED", "refused by the spec") end
            d.opened = d.opened + 1
            local c = { id = d.opened }
            d.conns[#d.conns + 1] = c
            return c
        end,
        close = function(c)
            assert.is_nil(c.closed, "closed twice")
            c.closed = true
            d.closed = d.closed + 1
        end,
        reusable = function(c) return not c.broken end,
        healthy = function(c) return not c.dead end,
        idle = function(c, is_idle) c.idle = is_idle end,
    }
    return d
end

describe("luaio.pool", function()
    it("reuses a released connection, newest first, and marks it idle", function()
        local d = driver()
        local p = Pool.new({ name = "spec.pool", size = 4 }, d.hooks)
        local a = assert(p:acquire())
        local b = assert(p:acquire())
        assert.are_not.equal(a, b)
        p:release(a)
        p:release(b)
        assert.is_true(b.idle)
        assert.are.same({ size = 4, open = 2, idle = 2, busy = 0, waiting = 0 }, p:stats())
        assert.are.equal(b, p:acquire()) -- the newest idle one
        assert.is_false(b.idle)
        assert.are.equal(2, d.opened)
        p:release(b)
        p:close()
        assert.are.equal(2, d.closed)
    end)

    it("never opens more than size connections; a waiter gets the next one released", function()
        local d = driver(5)
        local p = Pool.new({ name = "spec.pool", size = 2 }, d.hooks)
        local order = {}
        local tasks = {}
        for i = 1, 6 do
            tasks[i] = task.spawn(function()
                local c = assert(p:acquire())
                assert.is_true(p:stats().open <= 2)
                order[#order + 1] = i
                sleep(10)
                p:release(c)
            end)
        end
        for i = 1, 6 do assert.is_true((tasks[i]:join())) end
        assert.are.equal(2, d.opened)
        -- The first two open connections of their own and finish in either order; the waiters
        -- are served first come, first served.
        assert.are.same({ 3, 4, 5, 6 }, { order[3], order[4], order[5], order[6] })
        assert.are.same({ 1, 2 }, { math.min(order[1], order[2]), math.max(order[1], order[2]) })
        p:close()
    end)

    it("closes a connection that is not reusable and gives its place to a waiter", function()
        local d = driver()
        local p = Pool.new({ name = "spec.pool", size = 1 }, d.hooks)
        local a = assert(p:acquire())
        local got
        local t = task.spawn(function() got = assert(p:acquire()) end)
        task.yield()
        assert.are.equal(1, p:stats().waiting)
        a.broken = true -- mid-transaction, subscribed, or its socket failed
        p:release(a)
        assert.is_true((t:join()))
        assert.is_true(a.closed)
        assert.are_not.equal(a, got)
        assert.are.same({ size = 1, open = 1, idle = 0, busy = 1, waiting = 0 }, p:stats())
        p:release(got)
        p:close()
    end)

    it("a waiter gives up after waitTimeout with ETIMEDOUT and leaves the line", function()
        local d = driver()
        local p = Pool.new({ name = "spec.pool", size = 1, waitTimeout = 30 }, d.hooks)
        local a = assert(p:acquire())
        local t0 = require("system").hrtime()
        local c, err = p:acquire()
        local waited = (require("system").hrtime() - t0) / 1e6
        assert.is_nil(c)
        assert.are.equal("ETIMEDOUT", err.name)
        assert.matches("spec.pool: no connection free within 30 ms", err.message, 1, true)
        assert.is_true(waited >= 29, waited)
        assert.are.equal(0, p:stats().waiting)
        p:release(a) -- nobody waits any more: it goes idle, not to the one who gave up
        assert.are.equal(1, p:stats().idle)
        p:close()
    end)

    it("a caller beyond maxWaiters gets EBUSY at once", function()
        local d = driver()
        local p = Pool.new({ name = "spec.pool", size = 1, maxWaiters = 1 }, d.hooks)
        local a = assert(p:acquire())
        local t = task.spawn(function() return p:acquire() end)
        task.yield()
        local c, err = p:acquire()
        assert.is_nil(c)
        assert.are.equal("EBUSY", err.name)
        assert.matches("all 1 connections are busy", err.message, 1, true)
        p:release(a)
        local ok, b = t:join()
        assert.is_true(ok)
        assert.are.equal(a, b)
        p:release(b)
        p:close()
    end)

    it("a failed connect frees its place and the error reaches the caller", function()
        local d = driver(5)
        local p = Pool.new({ name = "spec.pool", size = 1 }, d.hooks)
        d.refuse = true
        local c, err = p:acquire()
        assert.is_nil(c)
        assert.are.equal("ECONNREFUSED", err.name)
        assert.are.same({ size = 1, open = 0, idle = 0, busy = 0, waiting = 0 }, p:stats())
        d.refuse = false
        local ok = assert(p:acquire()) -- the server is back: the next call works
        p:release(ok)
        p:close()
    end)

    it("with() gives the connection back when fn returns or raises", function()
        local d = driver()
        local p = Pool.new({ name = "spec.pool", size = 1 }, d.hooks)
        local x, y = p:with(function(c, a) return c.id, a end, "arg")
        assert.are.equal(1, x)
        assert.are.equal("arg", y)
        local ok, err = pcall(p.with, p, function() error("boom") end)
        assert.is_false(ok)
        assert.matches("boom", err)
        assert.are.same({ size = 1, open = 1, idle = 1, busy = 0, waiting = 0 }, p:stats())
        p:close()
    end)

    it("sql(p):rows gives the connection back at the end, and once collected when left early, also from a compiled loop", function()
        local d = driver()
        -- A connection of the fake driver streams the numbers 1 to 100 as its rows.
        local connect = d.hooks.connect
        d.hooks.connect = function()
            local c = connect()
            -- Closed by pool:rows's finalizer: then not reusable.
            function c.close() c.broken = true end
            function c.rows()
                local i = 0
                return function()
                    i = i + 1
                    if i <= 100 then return i end
                end
            end
            return c
        end
        local p = Pool.sql(Pool.new({ name = "spec.pool", size = 1 }, d.hooks))
        local n = 0
        for _ in p:rows("all") do n = n + 1 end
        assert.are.equal(100, n)
        assert.are.same({ size = 1, open = 1, idle = 1, busy = 0, waiting = 0 }, p:stats())
        -- LuaJIT compiles a loop once it is hot (hotloop=1: at once) and specializes the trace on
        -- the function the loop calls, which the trace then keeps alive for as long as it lives: an
        -- iterator that held the connection in its own closure was never collected (a flaky
        -- mysql_spec, whenever a hash collision of the loop counters made the short loop hot).
        -- In a task of its own: a dead for-loop's state may stay in its frame's stack slots.
        jit.opt.start("hotloop=1")
        task.spawn(function()
            for row in p:rows("some") do if row == 3 then break end end
        end):join()
        jit.opt.start("hotloop=56") -- LuaJIT's default
        assert.are.equal(1, p:stats().busy)
        collectgarbage()
        collectgarbage()
        -- Closed (its rows were not all read), and its place is free.
        assert.are.same({ size = 1, open = 0, idle = 0, busy = 0, waiting = 0 }, p:stats())
        assert.are.equal(1, d.closed)
        p:close()
    end)

    it("drops idle connections that are unhealthy or older than idleTimeout", function()
        local d = driver()
        local p = Pool.new({ name = "spec.pool", size = 2, idleTimeout = 60 }, d.hooks)
        local a = assert(p:acquire())
        p:release(a)
        a.dead = true
        local b = assert(p:acquire())
        assert.are_not.equal(a, b)
        assert.is_true(a.closed)
        p:release(b)
        helper.wait_for(function() return b.closed end, 2000)
        assert.are.equal(0, p:stats().open)
        p:close()
    end)

    it("close() wakes waiters with ECANCELED and closes busy connections at release", function()
        local d = driver()
        local p = Pool.new({ name = "spec.pool", size = 1 }, d.hooks)
        local a = assert(p:acquire())
        local t = task.spawn(function() return p:acquire() end)
        task.yield()
        p:close()
        local ok, c, err = t:join()
        assert.is_true(ok)
        assert.is_nil(c)
        assert.are.equal("ECANCELED", err.name)
        assert.is_nil(a.closed)
        p:release(a)
        assert.is_true(a.closed)
        local c2, err2 = p:acquire()
        assert.is_nil(c2)
        assert.are.equal("ECANCELED", err2.name)
    end)

    it("splits a module's options into the pool's and the connect options", function()
        local all = { host = "127.0.0.1", port = 5432, size = 4, idleTimeout = 10, maxWaiters = 1, waitTimeout = 5 }
        assert.are.same({ host = "127.0.0.1", port = 5432 }, Pool.connect_options(all))
        assert.is_true(Pool.KEYS.size and Pool.KEYS.waitTimeout and not Pool.KEYS.host)
        local d = driver()
        d.hooks.connect = function()
            return { query = function(_, sql, x) return sql .. x end, exec = function() return "done" end,
                     transaction = function(c, fn, y) return fn(c, y) end }
        end
        d.hooks.close = function() end
        local sql = Pool.sql(Pool.new({ name = "spec.pool", size = 1 }, d.hooks))
        assert.are.equal("select 1", sql:query("select ", 1))
        assert.are.equal("done", sql:exec("x"))
        assert.are.equal(7, sql:transaction(function(_, y) return y end, 7))
        assert.are.same({ size = 1, open = 1, idle = 1, busy = 0, waiting = 0 }, sql:stats())
        sql:close()
    end)

    it("raises for misuse: a foreign connection, a bad option, a method without self", function()
        local d = driver()
        local p = Pool.new({ name = "spec.pool" }, d.hooks)
        assert.has_error(function() p:release({}) end, "spec.pool: release: not a connection handed out by this pool")
        local c = assert(p:acquire())
        p:release(c)
        assert.has_error(function() p:release(c) end, "spec.pool: release: not a connection handed out by this pool")
        assert.has_error(function() Pool.new({ name = "x", size = 0 }, d.hooks) end)
        assert.has_error(function() Pool.new({ size = 1 }, {}) end, "pool.new: hooks.connect and hooks.close must be functions")
        assert.has_error(function() p.acquire() end)
        p:close()
    end)
end)
