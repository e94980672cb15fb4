-- redis: the client against a real redis-server started by spec/servers/redis.lua (127.0.0.1,
-- a free port, a temporary directory, stopped by PID), including the failures: a wrong
-- password, the server killed mid-call (SIGKILL), a server that stops answering (SIGSTOP) with
-- a timeout, and reconnecting once it is back.
local redis = require "redis"
local task = require "task"
local timer = require "timer"
local helper = require "helper"
local process = require "process"
local servers = require "servers.redis"

describe("redis", function()
    local server, r

    setup(function()
        server = servers.start()
    end)
    teardown(function()
        server:stop()
    end)
    before_each(function()
        r = assert(redis.connect { port = server.port })
        assert(r:flushall())
    end)
    after_each(function()
        r:close()
    end)

    describe("replies", function()
        it("maps status, bulk, integer, nil and error replies to Lua values", function()
            assert.equal("OK", r:set("k", "v"))
            assert.equal("v", r:get("k"))
            local v, err = r:get("missing")
            assert.is_nil(v)
            assert.is_nil(err)
            assert.equal(1, r:incr("n"))
            assert.equal(11, r:incrby("n", 10))
            v, err = r:incr("k")
            assert.is_nil(v)
            assert.equal("EREDIS", err.name)
            assert.equal("ERR", err.kind)
            assert.matches("not an integer", err.message)
            v, err = r:lpush("k", "x")
            assert.equal("WRONGTYPE", err.kind)
        end)

        it("keeps binary values intact, large ones too", function()
            local bin = "a\0b\r\nc\255"
            assert.equal("OK", r:set("bin", bin))
            assert.equal(bin, r:get("bin"))
            local big = ("0123456789abcdef"):rep(65536) -- 1 MiB
            assert.equal("OK", r:set("big", big))
            assert.equal(big, r:get("big"))
        end)

        it("sends integral numbers as integers", function()
            assert.equal("OK", r:set("n", 1e15))
            assert.equal("1000000000000000", r:get("n"))
            assert.equal(1000000000000001, r:incr("n"))
            assert.equal("OK", r:set("f", 0.5))
            assert.equal("0.5", r:get("f"))
            r:set("ttl", "x", "EX", 100)
            assert.equal(100, r:ttl("ttl"))
        end)

        it("builds arrays, nested arrays and nils in arrays (redis.null)", function()
            r:rpush("l", "a", "b", "c")
            assert.same({ "a", "b", "c" }, r:lrange("l", 0, -1))
            assert.same({}, r:lrange("none", 0, -1))
            local m = r:mget("l", "missing")
            assert.equal(2, #m)
            assert.equal(redis.null, m[1] == redis.null and m[1] or m[2])
            assert.equal(redis.null, m[2])
            assert.equal(require("json").null, redis.null)
            local nested = r:eval("return {1, {2, {3, 'x'}, {}}, 'y', {}}", 0)
            assert.same({ 1, { 2, { 3, "x" }, {} }, "y", {} }, nested)
            r:hset("h", "f1", "v1", "f2", "v2")
            local h = r:hgetall("h")
            assert.equal(4, #h)
        end)

        it("an unknown command is the server's error", function()
            local v, err = r:call("NOSUCHCOMMAND", 1)
            assert.is_nil(v)
            assert.equal("EREDIS", err.name)
            assert.matches("unknown command", err.message)
            assert.equal("PONG", r:call("ping"))
        end)
    end)

    describe("concurrency", function()
        it("matches replies to many tasks calling one connection at once", function()
            local tasks = {}
            for i = 1, 50 do
                tasks[i] = task.spawn(function()
                    for j = 1, 40 do
                        local key = "k" .. i .. ":" .. j
                        assert.equal("OK", r:set(key, key .. "!"))
                        assert.equal(key .. "!", r:get(key))
                        r:incr("total")
                    end
                end)
            end
            for i = 1, 50 do assert.is_true((tasks[i]:join())) end
            assert.equal("2000", r:get("total"))
        end)
    end)

    describe("pipeline", function()
        it("returns every reply in one table, with nulls and error replies in place", function()
            local res, err = r:pipeline(function(p)
                p:set("a", "1")
                p:get("a")
                p:get("missing")
                p:incr("a")
                p:lpush("a", "x")
                p:call("GET", "a")
            end)
            assert.is_nil(err)
            assert.equal("OK", res[1])
            assert.equal("1", res[2])
            assert.equal(redis.null, res[3])
            assert.equal(2, res[4])
            assert.equal("EREDIS", res[5].name)
            assert.equal("WRONGTYPE", res[5].kind)
            assert.equal("2", res[6])
            assert.equal(6, #res)
        end)

        it("sends 20000 commands in one write", function()
            local res = assert(r:pipeline(function(p)
                for i = 1, 20000 do p:incr("c") end
            end))
            assert.equal(20000, #res)
            assert.equal(20000, res[20000])
        end)

        it("an empty pipeline needs no round trip", function()
            assert.same({ n = 0 }, r:pipeline(function() end))
        end)
    end)

    describe("transactions", function()
        it("r:transaction runs MULTI ... EXEC in one write", function()
            local res = assert(r:transaction(function(t)
                t:incr("x")
                t:incr("x")
                t:get("x")
            end))
            assert.same({ 1, 2, "2" }, res)
        end)

        it("a command the server refuses to queue aborts it (EXECABORT)", function()
            local res, err = r:transaction(function(t)
                t:set("y", 1)
                t:call("NOSUCHCOMMAND")
            end)
            assert.is_nil(res)
            assert.equal("EXECABORT", err.kind)
            assert.is_nil(r:get("y"))
        end)

        it("MULTI, commands and EXEC as calls; WATCH aborts on a change", function()
            assert.equal("OK", r:multi())
            assert.equal("QUEUED", r:set("z", 1))
            assert.equal("QUEUED", r:incr("z"))
            assert.same({ "OK", 2 }, r:exec())
            local other = assert(redis.connect { port = server.port })
            assert.equal("OK", r:watch("z"))
            other:set("z", 100)
            other:close()
            r:multi()
            r:incr("z")
            assert.equal(redis.null, r:exec() or redis.null)
            assert.equal("100", r:get("z"))
        end)
    end)

    describe("pub/sub", function()
        it("delivers messages to r:messages() until unsubscribed", function()
            local sub = assert(redis.connect { port = server.port })
            assert.equal(2, sub:subscribe("news", "sport"))
            assert.equal(3, sub:psubscribe("we*"))
            local got = {}
            local reader = task.spawn(function()
                for kind, channel, msg, pattern in sub:messages() do
                    got[#got + 1] = { kind, channel, msg, pattern }
                    if #got == 3 then
                        sub:unsubscribe()
                        sub:punsubscribe()
                    end
                end
            end)
            assert.equal(1, r:publish("news", "one"))
            assert.equal(1, r:publish("sport", "two"))
            assert.equal(1, r:publish("weather", "three"))
            assert.is_true((reader:join()))
            assert.same({ { "message", "news", "one" }, { "message", "sport", "two" },
                { "pmessage", "weather", "three", "we*" } }, got)
            -- Not subscribed any more: the connection takes plain commands again.
            assert.equal("PONG", sub:ping())
            sub:close()
        end)

        it("r:message(timeout) gives up with ETIMEDOUT and keeps the subscription", function()
            local sub = assert(redis.connect { port = server.port })
            assert.equal(1, sub:subscribe("quiet"))
            local kind, err = sub:message(50)
            assert.is_nil(kind)
            assert.equal("ETIMEDOUT", err.name)
            r:publish("quiet", "now")
            local k, ch, msg = sub:message(2000)
            assert.same({ "message", "quiet", "now" }, { k, ch, msg })
            sub:close()
        end)

        it("messages queued while nobody reads are kept, in order", function()
            local sub = assert(redis.connect { port = server.port })
            sub:subscribe("q")
            for i = 1, 20 do r:publish("q", tostring(i)) end
            for i = 1, 20 do
                local _, _, msg = sub:message(2000)
                assert.equal(tostring(i), msg)
            end
            sub:close()
        end)
    end)

    -- A client the program forgot (no reference left) is collected and its connection closed,
    -- also after LuaJIT compiled the loop and the calls (hotloop=1: at once): a trace keeps a
    -- closure it called alive, and r:messages()'s iterator and r:subscribe()'s reply counter
    -- were closures holding the client. The clients are made in tasks of their own (a dead local
    -- may stay in its frame's stack slots) and named, to be found in CLIENT LIST; a weak table
    -- tells whether the collector took one.
    describe("a forgotten subscriber", function()
        local function listed(name)
            return assert(r:client("LIST")):find("name=" .. name .. " ", 1, true) ~= nil
        end
        local function subscriber(name, weak, ...)
            local sub = assert(redis.connect { port = server.port })
            assert.equal("OK", sub:client("SETNAME", name))
            assert.equal(select("#", ...), sub:subscribe(...))
            weak[1] = sub
            return sub
        end
        local function compiled(fn, ...)
            jit.opt.start("hotloop=1")
            local ok, err = task.spawn(fn, ...):join()
            jit.opt.start("hotloop=56") -- LuaJIT's default
            assert(ok, err)
        end
        local function closed_once_collected(name, weak)
            assert.is_true(helper.wait_for(function()
                collectgarbage()
                return weak[1] == nil and not listed(name)
            end, 3000), name .. " stayed open (collected: " .. tostring(weak[1] == nil) .. ")")
        end

        -- Messages published by another task while the loop waits for them, as in a program.
        local function publish(channel, n)
            return task.spawn(function()
                for i = 1, n do assert.equal(1, r:publish(channel, "m" .. i)) end
            end)
        end

        -- In fresh processes, three in turn: a trace kept r:subscribe()'s closure only for the
        -- first client of a process (later ones failed its guard), in most runs.
        it("is closed once collected, after its r:messages() loop was left early", function()
            local child = helper.script([[
                local redis, task, timer = require "redis", require "task", require "timer"
                local port = tonumber(arg[1])
                local admin = assert(redis.connect { port = port })
                local weak = setmetatable({}, { __mode = "v" })
                local got = {}
                jit.opt.start("hotloop=1")
                assert(task.spawn(function()
                    local sub = assert(redis.connect { port = port })
                    assert(sub:client("SETNAME", "luaio-forgotten-sub"))
                    assert(sub:subscribe("gc") == 1)
                    weak[1] = sub
                    local publisher = task.spawn(function()
                        local pub = assert(redis.connect { port = port })
                        for i = 1, 10 do assert(pub:publish("gc", "m" .. i) == 1) end
                        pub:close()
                    end)
                    for _, _, msg in sub:messages() do
                        got[#got + 1] = msg
                        if #got == 5 then break end
                    end
                    assert(publisher:join())
                end):join())
                jit.opt.start("hotloop=56")
                assert(table.concat(got, " ") == "m1 m2 m3 m4 m5", table.concat(got, " "))
                for _ = 1, 600 do
                    collectgarbage()
                    if weak[1] == nil and not assert(admin:client("LIST")):find("name=luaio-forgotten-sub ", 1, true) then
                        print("closed")
                        break
                    end
                    timer.sleep(5)
                end
                admin:close()
                print(weak[1] == nil and "collected" or "kept")
                os.exit(0) -- a kept subscriber would keep the process
            ]])
            finally(function() os.remove(child) end)
            for round = 1, 3 do
                local res = assert(process.run({ helper.luaio, child, tostring(server.port) }, { timeout = 10000 }))
                assert.equal(0, res.code, res.stderr)
                assert.equal("closed\ncollected\n", res.stdout, "round " .. round)
            end
        end)

        it("is closed once collected after it unsubscribed, and r:messages(timeout) ends", function()
            local weak = setmetatable({}, { __mode = "v" })
            local got = {}
            compiled(function()
                local sub = subscriber("luaio-forgotten-unsub", weak, "gc1", "gc2")
                local publisher = publish("gc1", 3)
                for _, _, msg in sub:messages(2000) do
                    got[#got + 1] = msg
                    if #got == 3 then sub:unsubscribe() end
                end
                assert.is_true((publisher:join()))
                assert.equal("PONG", sub:ping())
            end)
            assert.same({ "m1", "m2", "m3" }, got)
            closed_once_collected("luaio-forgotten-unsub", weak)
        end)

        -- The rule (docs/redis.md): a task waiting in r:message() holds its client, as any
        -- waiting call holds what it waits on; once it has its message and ends, nothing does.
        it("stays open while a task waits in r:message(), and is closed once that task ended", function()
            local weak = setmetatable({}, { __mode = "v" })
            local got = {}
            local reader
            compiled(function()
                local sub = subscriber("luaio-forgotten-parked", weak, "parked")
                reader = task.spawn(function(s)
                    got[1], got[2], got[3] = s:message()
                end, sub)
            end)
            for _ = 1, 3 do collectgarbage() end
            assert.is_not_nil(weak[1])
            assert.is_true(listed("luaio-forgotten-parked"))
            assert.equal(1, r:publish("parked", "now"))
            assert.is_true((reader:join()))
            assert.same({ "message", "parked", "now" }, got)
            closed_once_collected("luaio-forgotten-parked", weak)
        end)
    end)

    it("a subscriber that got its message in a waiting r:message() does not keep the loop alive", function()
        local core = require "luaio.core"
        local before = core.handles()
        local sub = assert(redis.connect { port = server.port })
        finally(function() sub:close() end)
        assert.equal(1, sub:subscribe("idle"))
        local reader = task.spawn(function()
            return sub:message(2000)
        end)
        -- While the reader waits, its connection keeps the loop alive.
        assert.is_true(helper.wait_for(function() return core.handles() > before end, 2000))
        assert.equal(1, r:publish("idle", "x"))
        local ok, kind, ch, msg = reader:join()
        assert.is_true(ok)
        assert.same({ "message", "idle", "x" }, { kind, ch, msg })
        -- Subscribed but idle: no more than an idle connection.
        assert.is_true(helper.wait_for(function() return core.handles() <= before end, 2000),
            core.handles() .. " handles keep the loop alive, " .. before .. " before")
    end)

    describe("misuse", function()
        it("raises for arguments that are not strings or numbers", function()
            assert.has_error(function() r:set("k", {}) end)
            assert.has_error(function() r:set("k", true) end)
            assert.has_error(function() r:pipeline(function(p) p:set("k", {}) end) end)
            -- Nothing half-written: the connection goes on.
            assert.equal("PONG", r:ping())
        end)

        -- The message of what fn raises, checked to name the caller's line (this file).
        local function raised(fn)
            local ok, e = pcall(fn)
            assert.is_false(ok)
            assert.matches("^[^:]*redis_spec%.lua:%d+: ", e)
            return (e:gsub("^[^:]*:%d+: ", ""))
        end

        it("errors name what the user called and the argument's place there", function()
            assert.equal("r:set: expected a string or number as argument 2, got table", raised(function() r:set("k", {}) end))
            assert.equal("r:get: expected a string or number as argument 1, got nil", raised(function() r:get(nil) end))
            assert.equal("r:call: expected a string or number as argument 3, got boolean",
                raised(function() r:call("SET", "k", true) end))
            assert.equal("r:call: expected a command name as argument 1, got number", raised(function() r:call(42) end))
            assert.equal("p:set: expected a string or number as argument 2, got table",
                raised(function() r:pipeline(function(p) p:set("k", {}) end) end))
            assert.equal("r:call: SUBSCRIBE: use r:subscribe, r:psubscribe, r:unsubscribe or r:punsubscribe",
                raised(function() r:call("SUBSCRIBE", "x") end))
            local pool = redis.pool { port = server.port, size = 1 }
            assert.equal("pool:set: expected a string or number as argument 2, got table",
                raised(function() pool:set("k", {}) end))
            assert.equal("pool:call: expected a string or number as argument 2, got table",
                raised(function() pool:call("GET", {}) end))
            pool:close()
            assert.equal("PONG", r:ping())
        end)

        it("calls on a closed connection say so, naming the call", function()
            local c = assert(redis.connect { port = server.port })
            c:close()
            c:close() -- once is enough; twice is no error
            assert.equal("r:get: attempt to use a closed redis connection", raised(function() c:get("k") end))
            assert.equal("r:call: attempt to use a closed redis connection", raised(function() c:call("GET", "k") end))
            assert.equal("r:pipeline: attempt to use a closed redis connection",
                raised(function() c:pipeline(function(p) p:get("k") end) end))
            assert.equal("r:subscribe: attempt to use a closed redis connection", raised(function() c:subscribe("x") end))
            assert.equal("r:message: attempt to use a closed redis connection", raised(function() c:message(10) end))
            assert.is_false(c:connected())
        end)

        it("a misspelled command is an error naming it", function()
            assert.equal("r:gett: unknown redis command 'gett' (r:call(name, ...) sends any command)",
                raised(function() r:gett("k") end))
            assert.equal("p:sett: unknown redis command 'sett' (p:call(name, ...) sends any command)",
                raised(function() r:pipeline(function(p) p:sett("k", 1) end) end))
            local pool = redis.pool { port = server.port, size = 1 }
            assert.equal("pool:gett: unknown redis command 'gett' (pool:call(name, ...) sends any command)",
                raised(function() pool:gett("k") end))
            pool:close()
            -- Commands that exist are methods as before.
            assert.equal("PONG", r:ping())
        end)

        it("refuses subscriptions and MONITOR on the command path", function()
            assert.has_error(function() r:call("SUBSCRIBE", "x") end, nil)
            assert.has_error(function() r:call("monitor") end)
            assert.equal("PONG", r:ping())
        end)

        it("raises on a closed connection and on a wrong self", function()
            local c = assert(redis.connect { port = server.port })
            c:close()
            assert.has_error(function() c:get("k") end)
            assert.has_error(function() r.get("k") end)
            assert.has_error(function() redis.connect { nosuch = 1 } end)
            assert.has_error(function() redis.connect { port = "x" } end)
        end)

        it("a connection refused is an error table", function()
            local port = server.port
            local c, err = redis.connect { port = 1 }
            assert.is_nil(c)
            assert.equal("ECONNREFUSED", err.name)
            assert.truthy(port)
        end)
    end)

    describe("options", function()
        it("db selects the database, on every reconnect too", function()
            local c = assert(redis.connect { port = server.port, db = 3 })
            c:set("only3", "yes")
            assert.is_nil(r:get("only3"))
            assert.equal("yes", c:get("only3"))
            c:call("CLIENT", "KILL", "SKIPME", "no", "TYPE", "normal")
            assert.is_true(helper.wait_for(function() return not c:connected() end))
            assert.equal("yes", c:get("only3")) -- reconnected, to database 3
            c:close()
        end)
    end)

    it("an idle connection does not keep the process alive", function()
        local script = helper.script(([[
            local redis = require "redis"
            local r = assert(redis.connect { port = %d })
            assert(r:set("from-child", "1"))
            print("done")
        ]]):format(server.port))
        local out, _, code = helper.run(script)
        os.remove(script)
        assert.equal(0, code)
        assert.matches("done", out)
    end)
end)

describe("redis with a password", function()
    local server

    setup(function()
        server = servers.start { password = "s3cret" }
    end)
    teardown(function()
        server:stop()
    end)

    it("a wrong password is EREDIS WRONGPASS, and nothing is left open", function()
        local fds = helper.fd_count()
        local r, err = redis.connect { port = server.port, password = "wrong" }
        assert.is_nil(r)
        assert.equal("EREDIS", err.name)
        assert.equal("WRONGPASS", err.kind)
        assert.equal(fds, helper.fds_back_to(fds))
    end)

    it("no password is NOAUTH on the first command", function()
        local r = assert(redis.connect { port = server.port })
        local v, err = r:get("k")
        assert.is_nil(v)
        assert.equal("NOAUTH", err.kind)
        r:close()
    end)

    it("the right password, with and without the default username", function()
        local r = assert(redis.connect { port = server.port, password = "s3cret" })
        assert.equal("PONG", r:ping())
        r:close()
        r = assert(redis.connect { port = server.port, username = "default", password = "s3cret" })
        assert.equal("PONG", r:ping())
        r:close()
    end)
end)

describe("redis RESP3 (protocol = 3)", function()
    local server, r

    setup(function()
        server = servers.start { password = "pw", args = { "--enable-debug-command", "yes" } }
    end)
    teardown(function()
        server:stop()
    end)
    before_each(function()
        r = assert(redis.connect { port = server.port, password = "pw", protocol = 3 })
        assert(r:flushall())
    end)
    after_each(function()
        r:close()
    end)

    it("HELLO 3 authenticates and switches the connection to RESP3", function()
        local hello = assert(r:hello())
        assert.equal(3, hello.proto)
        assert.equal("redis", hello.server)
        local v, err = redis.connect { port = server.port, password = "wrong", protocol = 3 }
        assert.is_nil(v)
        assert.equal("WRONGPASS", err.kind)
        assert.has_error(function() redis.connect { port = server.port, protocol = 4 } end,
            "redis.connect: option 'protocol' must be 2 or 3, got 4")
    end)

    it("maps every RESP3 type to Lua values", function()
        assert.equal(2, r:hset("h", "a", "1", "b", "2"))
        local h = assert(r:hgetall("h")) -- a map
        assert.same({ a = "1", b = "2" }, h)
        assert.equal(2, r:sadd("s", "x", "y"))
        local set = assert(r:smembers("s")) -- a set: an array
        table.sort(set)
        assert.same({ "x", "y" }, set)
        assert.is_nil(r:get("missing")) -- null
        assert.equal(3.141, r:call("DEBUG", "PROTOCOL", "double"))
        assert.equal("1234567999999999999999999999999999999", r:call("DEBUG", "PROTOCOL", "bignum"))
        assert.equal(true, r:call("DEBUG", "PROTOCOL", "true"))
        assert.equal(false, r:call("DEBUG", "PROTOCOL", "false"))
        assert.is_nil(r:call("DEBUG", "PROTOCOL", "null"))
        assert.equal("This is a verbatim\nstring", r:call("DEBUG", "PROTOCOL", "verbatim"))
        assert.same({ [0] = false, [1] = true, [2] = false }, r:call("DEBUG", "PROTOCOL", "map"))
        -- An attribute before the reply is skipped.
        assert.equal("Some real reply following the attribute", r:call("DEBUG", "PROTOCOL", "attrib"))
        -- Scores are doubles in RESP3, inf too.
        assert.equal(1, r:zadd("z", "+inf", "top"))
        assert.equal(math.huge, r:zscore("z", "top"))
        local res = assert(r:pipeline(function(p)
            p:get("missing")
            p:hgetall("h")
            p:call("DEBUG", "PROTOCOL", "double")
        end))
        assert.equal(redis.null, res[1])
        assert.same({ a = "1", b = "2" }, res[2])
        assert.equal(3.141, res[3])
        -- A pool's connections speak RESP3 too.
        local pool = redis.pool { port = server.port, password = "pw", protocol = 3, size = 1 }
        assert.same({ a = "1", b = "2" }, pool:hgetall("h"))
        pool:close()
    end)

    it("pub/sub messages come as pushes, while other commands go on", function()
        local pub = assert(redis.connect { port = server.port, password = "pw", protocol = 3 })
        assert.equal(1, r:subscribe("ch"))
        assert.equal(2, r:psubscribe("p.*"))
        -- RESP3 allows any command on a subscribed connection.
        assert.equal("OK", r:set("k", "v"))
        assert.equal("v", r:get("k"))
        assert(pub:publish("ch", "one"))
        assert(pub:publish("p.x", "two"))
        local kind, ch, msg = r:message(2000)
        assert.same({ "message", "ch", "one" }, { kind, ch, msg })
        local pattern
        kind, ch, msg, pattern = r:message(2000)
        assert.same({ "pmessage", "p.x", "two", "p.*" }, { kind, ch, msg, pattern })
        assert.equal(1, r:unsubscribe())
        assert.equal(0, r:punsubscribe())
        assert.is_nil(r:message(100))
        pub:close()
    end)

    it("client-side caching invalidations come as push messages", function()
        assert.equal("OK", r:call("CLIENT", "TRACKING", "ON"))
        assert.equal("OK", r:set("cached", "1"))
        assert.equal("1", r:get("cached")) -- tracked now
        local other = assert(redis.connect { port = server.port, password = "pw" })
        assert.equal("OK", other:set("cached", "2"))
        local kind, keys = r:message(2000)
        assert.equal("invalidate", kind)
        assert.same({ "cached" }, keys)
        other:close()
    end)

    -- The server forgets a killed connection's tracking: the client turns it on again on the
    -- new connection and tells the cache to drop everything (invalidations may have been lost).
    it("client-side caching goes on after a reconnect, with a flush of everything first", function()
        assert.equal("OK", r:client("TRACKING", "ON"))
        assert.equal("OK", r:set("cached", "1"))
        assert.equal("1", r:get("cached")) -- tracked now
        local other = assert(redis.connect { port = server.port, password = "pw" })
        assert.equal(1, other:client("KILL", "ID", (r:client("ID"))))
        -- The drop is seen by the next call: a command that reconnects.
        local v = r:get("cached")
        assert.equal("1", v)
        local kind, keys = r:message(2000)
        assert.equal("invalidate", kind)
        assert.equal(redis.null, keys) -- drop everything
        assert.equal("OK", other:set("cached", "2"))
        kind, keys = r:message(2000)
        assert.equal("invalidate", kind)
        assert.same({ "cached" }, keys)
        other:close()
    end)

    it("a task waiting for invalidations when the connection drops reconnects and gets the flush", function()
        local r_id = r:client("ID")
        assert.equal("OK", r:client("TRACKING", "ON"))
        assert.equal("OK", r:set("cached", "1"))
        assert.equal("1", r:get("cached"))
        local got = {}
        local t = task.spawn(function()
            local kind, keys = r:message(3000)
            got[1], got[2] = kind, keys
            kind, keys = r:message(3000)
            got[3], got[4] = kind, keys
        end)
        local other = assert(redis.connect { port = server.port, password = "pw" })
        assert.equal(1, other:client("KILL", "ID", r_id))
        for _ = 1, 200 do -- the task reconnects and takes the flush
            if got[1] then break end
            timer.sleep(10)
        end
        -- r:get on the new connection is tracked again: its change comes as an invalidation.
        assert.equal("invalidate", got[1])
        assert.equal(redis.null, got[2])
        assert.equal("1", r:get("cached"))
        assert.equal("OK", other:set("cached", "2"))
        assert(t:join())
        assert.equal("invalidate", got[3])
        assert.same({ "cached" }, got[4])
        other:close()
    end)

    it("tracking switched off is not turned on again by a reconnect", function()
        assert.equal("OK", r:client("TRACKING", "ON"))
        assert.equal("OK", r:client("TRACKING", "OFF"))
        assert.equal("OK", r:set("cached", "1"))
        local other = assert(redis.connect { port = server.port, password = "pw" })
        assert.equal(1, other:client("KILL", "ID", (r:client("ID"))))
        assert.equal("1", r:get("cached"))
        assert.equal("OK", other:set("cached", "2"))
        assert.is_nil(r:message(200))
        other:close()
    end)

    it("a refused CLIENT TRACKING changes nothing", function()
        local v, err = r:client("TRACKING", "ON", "REDIRECT", 999999999)
        assert.is_nil(v)
        assert.truthy(err.message:find("redirect", 1, true) or err.message:find("client", 1, true))
        local other = assert(redis.connect { port = server.port, password = "pw" })
        assert.equal(1, other:client("KILL", "ID", (r:client("ID"))))
        assert.equal("PONG", r:ping())
        assert.is_nil(r:message(100))
        other:close()
    end)

    it("a reply that is not RESP is a protocol error that closes the connection", function()
        local tcp = require "tcp"
        local srv = assert(tcp.createServer(0, function(sock)
            sock:read()
            sock:write("*2\r\n:1\r\n?garbage\r\n")
            sock:read() -- the client closes
            sock:close()
        end, { host = "127.0.0.1" }))
        local c = assert(redis.connect { port = srv:address().port })
        local v, err = c:get("k")
        assert.is_nil(v)
        assert.equal("EPROTO", err.name)
        assert.equal("redis protocol error: an unknown reply type", err.message)
        assert.is_false(c:connected())
        c:close()
        srv:close()
    end)
end)

describe("redis failures", function()
    local server

    before_each(function()
        server = servers.start()
    end)
    after_each(function()
        server:stop()
    end)

    it("a server killed mid-call fails the call, and the next call reconnects once it is back", function()
        local r = assert(redis.connect { port = server.port })
        assert.equal("OK", r:set("k", "before"))
        local res
        local waiting = task.spawn(function()
            res = { r:blpop("never", 30) }
        end)
        assert.is_true(helper.wait_for(function() return select(3, r[1]:state()) == 1 end))
        server:kill()
        assert.is_true((waiting:join()))
        assert.is_nil(res[1])
        assert.truthy(res[2].name)
        -- While it is down, a call fails (ECONNREFUSED) instead of hanging.
        local v, err = r:get("k")
        assert.is_nil(v)
        assert.equal("ECONNREFUSED", err.name)
        server:restart()
        assert.equal("OK", r:set("k", "after"))
        assert.equal("after", r:get("k"))
        r:close()
    end)

    it("a server that stops answering times out every waiting call; the next call works once it is back", function()
        local r = assert(redis.connect { port = server.port, timeout = 200 })
        assert.equal("PONG", r:ping())
        server:pause()
        local results = {}
        local tasks = {}
        for i = 1, 5 do
            tasks[i] = task.spawn(function()
                results[i] = { r:incr("n") }
            end)
        end
        for i = 1, 5 do tasks[i]:join() end
        for i = 1, 5 do
            assert.is_nil(results[i][1])
            assert.equal("ETIMEDOUT", results[i][2].name)
        end
        server:resume()
        -- A reply of the old connection never reaches a new call: the replies to the five
        -- INCRs that timed out are discarded with their connection.
        assert.equal("OK", r:set("n", "fresh"))
        assert.equal("fresh", r:get("n"))
        r:close()
    end)

    it("a subscriber reconnects after the server restarts, subscribes again and messages() goes on", function()
        local sub = assert(redis.connect { port = server.port, timeout = 3000 })
        assert.equal(2, sub:subscribe("c", "c2"))
        assert.equal(3, sub:psubscribe("p.*"))
        local got = {}
        local t = task.spawn(function()
            for kind, channel, msg in sub:messages() do
                got[#got + 1] = kind .. " " .. channel .. " " .. msg
                if msg == "last" then break end
            end
        end)
        local pub = assert(redis.connect { port = server.port })
        assert.equal(1, pub:publish("c", "before"))
        assert.is_true(helper.wait_for(function() return #got == 1 end, 2000))
        server:kill()
        timer.sleep(100) -- the subscriber retries while the server is down
        server:restart()
        -- Published until the renewed subscription receives it, for 15 s at most: the subscriber
        -- retries up to a second apart, and a loaded machine can take seconds to start the server
        -- (4 s were not always enough under ctest -j2 beside other jobs).
        local n = 0
        local give_up = require("system").hrtime() + 15e9
        repeat
            n = pub:publish("c2", "after")
            if n == 1 then break end
            timer.sleep(20)
        until require("system").hrtime() > give_up
        assert.equal(1, n)
        assert.equal(1, pub:publish("p.x", "last"))
        assert.is_true((t:join()))
        assert.same({ "message c before", "message c2 after", "pmessage p.x last" }, got)
        -- The renewed connection counts the renewed subscriptions.
        assert.equal(1, sub:unsubscribe())
        assert.equal(0, sub:punsubscribe())
        -- Without a subscription a drop is the error of message() (nothing to renew).
        assert.is_nil(sub:message(10))
        pub:close()
        sub:close()
    end)

    it("a subscriber's message(timeout) gives up within its timeout while the server is down", function()
        local sub = assert(redis.connect { port = server.port })
        assert.equal(1, sub:subscribe("c"))
        server:kill()
        local t0 = require("system").hrtime()
        local v, err = sub:message(300)
        local ms = (require("system").hrtime() - t0) / 1e6
        assert.is_nil(v)
        assert.equal("ECONNREFUSED", err.name)
        assert.is_true(ms < 5000, "took " .. ms .. " ms")
        sub:close()
        server:restart()
    end)
end)

describe("redis.pool", function()
    local server

    setup(function()
        server = servers.start()
    end)
    teardown(function()
        server:stop()
    end)

    it("runs commands and functions on pooled connections", function()
        local pool = redis.pool { port = server.port, size = 4 }
        assert.equal("OK", pool:set("pk", "pv"))
        assert.equal("pv", pool:call("GET", "pk"))
        local a, b = pool:with(function(r, x)
            return r:get("pk"), x
        end, 42)
        assert.equal("pv", a)
        assert.equal(42, b)
        assert.same({ "OK", "1" }, pool:pipeline(function(p) p:set("n", 1) p:get("n") end))
        assert.same({ 2 }, pool:transaction(function(t) t:incr("n") end))
        local tasks = {}
        for i = 1, 20 do
            tasks[i] = task.spawn(function()
                for _ = 1, 20 do assert(pool:incr("cnt")) end
            end)
        end
        for i = 1, 20 do assert.is_true((tasks[i]:join())) end
        assert.equal("400", pool:get("cnt"))
        assert.is_true(pool:stats().open <= 4)
        pool:close()
    end)

    it("an exhausted pool makes callers wait, then ETIMEDOUT; EBUSY past maxWaiters", function()
        local pool = redis.pool { port = server.port, size = 1, waitTimeout = 100, maxWaiters = 1 }
        -- The holder keeps its connection until told (not for a fixed time a loaded machine can
        -- overrun before the waiter has timed out).
        local release = task.channel()
        local holder = task.spawn(function()
            pool:with(function() release:receive() end)
        end)
        assert.is_true(helper.wait_for(function() return pool:stats().busy == 1 end))
        local res
        local waiter = task.spawn(function() res = { pool:get("k") } end)
        assert.is_true(helper.wait_for(function() return pool:stats().waiting == 1 end))
        local v, err = pool:get("k")
        assert.is_nil(v)
        assert.equal("EBUSY", err.name)
        assert.is_true((waiter:join()))
        assert.is_nil(res[1])
        assert.equal("ETIMEDOUT", res[2].name)
        release:send(true)
        assert.is_true((holder:join()))
        assert.equal("PONG", pool:ping())
        pool:close()
    end)

    it("never gives back a connection left in a transaction, subscribed or on another database", function()
        local pool = redis.pool { port = server.port, size = 1 }
        pool:with(function(r) assert.equal("OK", r:multi()) end)
        assert.equal(0, pool:stats().open)
        assert.equal("OK", pool:set("t", "plain")) -- not QUEUED: a fresh connection
        pool:with(function(r) r:watch("t") end)
        assert.equal(0, pool:stats().open)
        pool:with(function(r) r:subscribe("ch") end)
        assert.equal(0, pool:stats().open)
        pool:with(function(r) r:select(5) end)
        assert.equal(0, pool:stats().open)
        assert.equal("plain", pool:get("t"))
        assert.equal(1, pool:stats().idle)
        -- A function that raises gives its connection back too (closed when mid-transaction).
        assert.has_error(function()
            pool:with(function(r)
                r:multi()
                error("boom")
            end)
        end)
        assert.equal(0, pool:stats().open)
        pool:close()
    end)

    it("a dropped connection is not handed out again", function()
        local pool = redis.pool { port = server.port, size = 2 }
        assert.equal("PONG", pool:ping())
        server:cli("CLIENT", "KILL", "TYPE", "normal")
        assert.is_true(helper.wait_for(function()
            return pool.pool.idle[1] and not pool.pool.idle[1].conn:connected()
        end))
        assert.equal("PONG", pool:ping())
        pool:close()
    end)
end)

describe("redis over TLS", function()
    local server, dir

    setup(function()
        local f = assert(io.popen("mktemp -d /tmp/luaio-redis-tls.XXXXXX"))
        dir = f:read("*l")
        f:close()
        -- Self-signed: the certificate is its own CA.
        helper.make_cert(dir, "localhost", "IP:127.0.0.1,DNS:localhost")
        server = servers.start { tls = { cert = dir .. "/localhost.pem", key = dir .. "/localhost.key" } }
    end)
    teardown(function()
        server:stop()
        os.execute("rm -rf '" .. dir .. "'")
    end)

    it("connects with tls, verifying the server's certificate", function()
        local r = assert(redis.connect { port = server.port, tls = { ca = dir .. "/localhost.pem" } })
        assert.equal("OK", r:set("secure", "yes"))
        assert.equal("yes", r:get("secure"))
        local res = assert(r:pipeline(function(p)
            for i = 1, 1000 do p:incr("n" .. i % 7) end
        end))
        assert.equal(1000, #res)
        r:close()
    end)

    it("timeout bounds the TLS handshake with a server that never answers", function()
        local tcp = require "tcp"
        local silent = assert(tcp.createServer(0, function(sock)
            sock:read(1048576) -- reads the ClientHello, answers nothing
        end, { host = "127.0.0.1" }))
        local t0 = require("system").hrtime()
        local r, err = redis.connect { port = silent:address().port, tls = true, timeout = 150 }
        local ms = (require("system").hrtime() - t0) / 1e6
        silent:close()
        assert.is_nil(r)
        assert.equal("ETIMEDOUT", err.name)
        assert.is_true(ms < 5000, ms)
    end)

    it("a certificate from an unknown CA is ECERTVERIFY", function()
        local r, err = redis.connect { port = server.port, tls = true }
        assert.is_nil(r)
        assert.equal("ECERTVERIFY", err.name)
    end)
end)
