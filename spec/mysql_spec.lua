-- The mysql module against a real MariaDB started for this file (spec/servers/mariadb.lua).
local mysql = require "mysql"
local json = require "json"
local task = require "task"
local core = require "luaio.core"
local sleep = require("timer").sleep
local helper = require "helper"
local mariadb = require "servers.mariadb"

local srv

local function connect(extra)
    return assert(mysql.connect(srv:options(extra)))
end

-- Waits for the tasks that kill timed-out queries to end (they are part of the leak check).
local function settle(tasks)
    helper.wait_for(function() return core.tasks() <= tasks end, 5000)
end

-- The statements the server runs now for user luaio, except the one asking.
local function running(db, pattern)
    local rows = assert(db:query("select info from information_schema.processlist where info like ?", pattern))
    local n = 0
    for _, r in ipairs(rows) do
        if r.info ~= mysql.null and not r.info:find("processlist", 1, true) then n = n + 1 end
    end
    return n
end

describe("mysql", function()
    setup(function()
        srv = mariadb.start()
    end)

    teardown(function()
        if srv then srv:stop() end
    end)

    it("connects, queries and closes", function()
        local db = connect()
        local rows, err = db:query("select 1 as one, 'x' as s")
        assert.is_nil(err)
        assert.same({ { one = 1, s = "x" } }, rows)
        assert.same({ "one", "s" }, rows.columns)
        assert.is_true(db:ping())
        db:close()
        assert.has_error(function() db:query("select 1") end)
    end)

    it("connects with a mysql:// URL, and the options beside it win", function()
        local db = assert(mysql.connect(srv.url))
        assert.equal("luaio_test", db:query("select database() as d")[1].d)
        db:close()
        local db2 = assert(mysql.connect({ url = srv.url:gsub("/luaio_test$", "/mysql"), database = "luaio_test" }))
        assert.equal("luaio_test", db2:query("select database() as d")[1].d)
        db2:close()
    end)

    it("resolves host names (localhost is TCP, not the Unix socket)", function()
        local db = connect({ host = "localhost" })
        assert.equal(1, db:query("select 1 as x")[1].x)
        db:close()
    end)

    it("round-trips every common column type, in the text and the binary protocol", function()
        local db = connect()
        assert(db:exec([[create table types (
            id int primary key, ti tinyint, si smallint, mi mediumint, i int, bi bigint,
            ubi bigint unsigned, f float, d double, dec_ decimal(12,3), dt date, dtt datetime,
            ts timestamp null, tm time, y year, c char(4), vc varchar(40), tx text, bl blob,
            vb varbinary(16), bt bit(8), en enum('a','b'), js json, n int)]]))
        local blob = "\0\1\2\255binary\0"
        local values = { 1, -128, -32768, -8388608, -2147483648, -9007199254740991, 9007199254740991, 1.1,
            3.141592653589793, "123456789.125", "2024-02-29", "2024-02-29 23:59:58", "2001-02-03 04:05:06",
            "-838:59:59", 2155, "abcd", "héllo wörld", string.rep("t", 1000), blob, "\0\255", "\255", "b",
            '{"a": [1, 2]}', mysql.null }
        local marks = ("?,"):rep(#values):sub(1, -2)
        local r = assert(db:query("insert into types values (" .. marks .. ")", unpack(values)))
        assert.equal(1, r.affected)
        local expected = {
            id = 1, ti = -128, si = -32768, mi = -8388608, i = -2147483648, bi = -9007199254740991,
            ubi = 9007199254740991, f = 1.1, d = 3.141592653589793, dec_ = "123456789.125", dt = "2024-02-29",
            dtt = "2024-02-29 23:59:58", ts = "2001-02-03 04:05:06", tm = "-838:59:59", y = 2155, c = "abcd",
            vc = "héllo wörld", tx = string.rep("t", 1000), bl = blob, vb = "\0\255", bt = "\255", en = "b",
            js = '{"a": [1, 2]}', n = mysql.null,
        }
        assert.same({ expected }, (assert(db:query("select * from types"))))
        assert.same({ expected }, (assert(db:query("select * from types where id = ?", 1))))
        db:close()
    end)

    it("carries large values and many rows", function()
        local db = connect()
        assert(db:exec("create table big (id int primary key, b longblob)"))
        local blob = ("0123456789abcdef"):rep(131072) .. "\0end" -- 2 MiB and a bit
        assert(db:exec("insert into big values (?, ?)", 1, blob))
        assert.equal(blob, assert(db:query("select b from big"))[1].b)
        assert.equal(blob, assert(db:query("select b from big where id = ?", 1))[1].b)
        local rows = assert(db:query("select seq from seq_1_to_5000"))
        assert.equal(5000, #rows)
        assert.equal(5000, rows[5000].seq)
        rows = assert(db:query("select seq, ? as k from seq_1_to_5000", "k"))
        assert.equal(5000, #rows)
        assert.equal("k", rows[4999].k)
        db:close()
    end)

    it("gives integers beyond 2^53 as strings of their digits (signed and unsigned)", function()
        local db = connect()
        local sql = "select cast(9223372036854775807 as signed) as big, cast(-9223372036854775808 as signed) as small,"
            .. " cast(18446744073709551615 as unsigned) as ubig, 9007199254740993 as beyond, 9007199254740991 as fits"
        local want = { big = "9223372036854775807", small = "-9223372036854775808", ubig = "18446744073709551615",
            beyond = "9007199254740993", fits = 9007199254740991 }
        assert.same(want, assert(db:query(sql))[1])
        -- The binary protocol (a query with parameters) gives the same.
        local row = assert(db:query(sql .. ", ? as p", 1))[1]
        row.p = nil
        assert.same(want, row)
        -- A string parameter reaches a BIGINT column exactly.
        assert(db:exec("create table bigs (v bigint unsigned)"))
        assert(db:exec("insert into bigs values (?)", "18446744073709551615"))
        assert.equal("18446744073709551615", db:query("select v from bigs")[1].v)
        db:close()
    end)

    it("sends parameters as data: injection attempts stay strings", function()
        local db = connect()
        assert(db:exec("create table users (id int auto_increment primary key, name varchar(100))"))
        local evil = { "'; drop table users; --", "1 or 1=1", "\\'; select 1; --", "\" or \"\"=\"", "?", "\0" }
        for _, s in ipairs(evil) do
            local r = assert(db:query("insert into users (name) values (?)", s))
            assert.equal(1, r.affected)
        end
        local rows = assert(db:query("select name from users order by id"))
        assert.equal(#evil, #rows)
        for i, s in ipairs(evil) do assert.equal(s, rows[i].name) end
        assert.equal(0, #assert(db:query("select * from users where name = ?", "x' or '1'='1")))
        assert.equal(0, #assert(db:query("select * from users where name = ? or 0", "1 or 1=1 --")))
        assert.equal(#evil, db:query("select count(*) as n from users")[1].n)
        db:close()
    end)

    it("returns rows.affected and rows.insertId, and exec the affected count", function()
        local db = connect()
        assert(db:exec("create table ai (id int auto_increment primary key, v int)"))
        local r = assert(db:query("insert into ai (v) values (?), (?), (?)", 1, 2, 3))
        assert.equal(3, r.affected)
        assert.equal(1, r.insertId)
        assert.equal(2, db:exec("update ai set v = v + 10 where v < ?", 3))
        assert.equal(0, db:exec("update ai set v = 0 where id = ?", 99))
        -- rows.affected and the others are not keys: rows encode as a JSON array.
        assert.equal('[{"v":11}]', json.encode(db:query("select v from ai where id = ?", 1)))
        assert.equal(0, #assert(db:query("select v from ai where id = 99")))
        db:close()
    end)

    it("returns every result set of a multi-statement query", function()
        local db = connect()
        local rows = assert(db:query("select 1 as a; select 2 as b, 3 as c; do 0"))
        assert.same({ { a = 1 } }, rows)
        assert.equal(3, #rows.results)
        assert.equal(rows, rows.results[1])
        assert.same({ { b = 2, c = 3 } }, rows.results[2])
        assert.same({}, rows.results[3])
        -- One result set: no results list.
        assert.is_nil(db:query("select 1 as a").results)
        -- An error in a later statement is the call's error; the connection goes on.
        local r, err = db:query("select 1 as a; select * from no_such; select 3 as c")
        assert.is_nil(r)
        assert.equal(1146, err.errno)
        assert.equal(2, db:query("select 2 as b")[1].b)
        db:close()
    end)

    it("returns the result sets of a procedure called with parameters", function()
        local db = connect()
        assert(db:exec("create procedure two(x int) begin select x as first; select x * 2 as second; end"))
        local rows = assert(db:query("call two(?)", 21))
        assert.same({ { first = 21 } }, rows)
        assert.same({ { second = 42 } }, rows.results[2])
        db:close()
    end)

    it("prepares each SQL text once per connection", function()
        local db = connect()
        local function prepares()
            return tonumber(db:query("show session status like 'Com_stmt_prepare'")[1].Value)
        end
        assert(db:exec("create table st (id int, v varchar(10))"))
        local before = prepares()
        for i = 1, 5 do
            assert(db:exec("insert into st values (?, ?)", i, "v" .. i))
        end
        for i = 1, 5 do
            assert.same({ { v = "v" .. i } }, (assert(db:query("select v from st where id = ?", i))))
        end
        assert.equal(before + 2, prepares())
        -- A failed execution drops the statement; the next call prepares it again and works.
        assert(db:exec("alter table st add unique (id)"))
        local r, err = db:query("insert into st values (?, ?)", 1, "dup")
        assert.is_nil(r)
        assert.equal(1062, err.errno)
        assert(db:exec("insert into st values (?, ?)", 6, "v6"))
        -- A wrong count of parameters for a kept statement raises (a mistake in the program).
        assert.has_error(function() db:query("select v from st where id = ?", 1, 2) end)
        -- After its table changed columns, a kept `select *` fails once (as Connector/C says:
        -- CR_NEW_STMT_METADATA), then is prepared again.
        local old = assert(db:query("select * from st where id = ?", 1))[1]
        assert.is_nil(old.w)
        assert(db:exec("alter table st add column w int default 7"))
        r, err = db:query("select * from st where id = ?", 1)
        if r then
            assert.equal(7, r[1].w)
        else
            assert.equal(2057, err.errno)
        end
        assert.equal(7, assert(db:query("select * from st where id = ?", 1))[1].w)
        assert.equal(1, db:query("select 1 as x")[1].x)
        db:close()
    end)

    it("reports server errors with errno, sqlstate and message", function()
        local db = connect()
        local rows, err = db:query("select * from no_such_table")
        assert.is_nil(rows)
        assert.equal("EMYSQL", err.name)
        assert.equal(1146, err.errno)
        assert.equal("42S02", err.sqlstate)
        assert.matches("no_such_table", err.message)
        assert.matches("^EMYSQL: ", tostring(err))
        rows, err = db:query("selec 1 where ?", 1)
        assert.equal(1064, err.errno)
        assert.equal("42000", err.sqlstate)
        -- A wrong count of parameters raises, and is not a crash.
        assert.has_error(function() db:query("select ? + ?", 1) end)
        -- The connection goes on after errors.
        assert.equal(2, db:query("select 2 as x")[1].x)
        db:close()
    end)

    it("fails a wrong password with the server's access-denied error", function()
        local db, err = mysql.connect(srv:options({ password = "wrong" }))
        assert.is_nil(db)
        assert.equal("EMYSQL", err.name)
        assert.equal(1045, err.errno)
        assert.equal("28000", err.sqlstate)
        assert.matches("Access denied", err.message)
    end)

    it("fails to connect to a port nobody listens on", function()
        local probe = assert(require("tcp").createServer(0, function() end, { host = "127.0.0.1" }))
        local port = probe:address().port
        probe:close()
        local db, err = mysql.connect(srv:options({ port = port }))
        assert.is_nil(db)
        -- Named as tcp, http and redis name it; the connector's errno, sqlstate and message stay.
        assert.equal("ECONNREFUSED", err.name)
        assert.equal(-111, err.code)
        assert.equal(2002, err.errno)
        assert.equal("HY000", err.sqlstate)
        assert.matches("Can't connect to server on '127.0.0.1' %(111%)", err.message)
    end)

    it("times out connecting to a server that never greets: ETIMEDOUT", function()
        -- A listener that reads what comes and never answers (until the client goes).
        local mute = assert(require("tcp").createServer(0, function(s) while s:read() do end end, { host = "127.0.0.1" }))
        local db, err = mysql.connect(srv:options({ port = mute:address().port, timeout = 300 }))
        assert.is_nil(db)
        assert.equal("ETIMEDOUT", err.name)
        mute:close()
    end)

    it("raises naming the function when the parameters do not match the placeholders", function()
        local db = connect()
        local id = db:threadId()
        local function raises(msg, f)
            local ok, err = pcall(f)
            assert.is_false(ok)
            assert.truthy(tostring(err):find(msg, 1, true), tostring(err))
        end
        -- New statements (prepared by the call) and kept ones (the second time) alike.
        for _ = 1, 2 do
            raises("db:query: the statement has 2 placeholders, the call gave 1 parameter",
                function() db:query("select ?, ?", 1) end)
            raises("db:query: the statement has 1 placeholder, the call gave 3 parameters",
                function() db:query("select ? as v", 1, 2, 3) end)
            raises("db:rows: the statement has 2 placeholders, the call gave 1 parameter",
                function() db:rows("select ?, ?", 1) end)
        end
        -- The connection goes on (the same session), and so does the statement.
        assert.same({ a = 1, b = 2 }, db:query("select ? as a, ? as b", 1, 2)[1])
        assert.equal(id, db:threadId())
        db:close()
    end)

    it("raises for programmer mistakes; a busy connection is EBUSY", function()
        local db = connect()
        assert.has_error(function() db:query(42) end)
        assert.has_error(function() db:query("select ?", {}) end)
        assert.has_error(function() db:query("select ?", print) end)
        assert.has_error(function() mysql.connect({ bogus = 1 }) end)
        assert.has_error(function() mysql.connect({ port = "x" }) end)
        assert.has_error(function() mysql.connect("http://x") end)
        assert.has_error(function() db:transaction(5) end)
        -- A second query on a busy connection (two tasks sharing one) gets EBUSY. (The first
        -- lasts a second: longer than a loaded machine may take to come back to this task.)
        local t = task.spawn(function() return db:query("select sleep(1) as s") end)
        task.yield()
        local r, err = db:query("select 1")
        assert.is_nil(r)
        assert.equal("EBUSY", err.name)
        local _, rows = t:join()
        assert.equal(0, rows[1].s)
        db:close()
    end)

    it("commits a transaction and rolls back when it raises or returns an error", function()
        local db = connect()
        assert(db:exec("create table tx (v int) engine=innodb"))
        assert.equal("done", db:transaction(function(tx)
            assert(tx:exec("insert into tx values (?)", 1))
            return "done"
        end))
        local ok, e = pcall(db.transaction, db, function(tx)
            assert(tx:exec("insert into tx values (?)", 2))
            error("boom", 0)
        end)
        assert.is_false(ok)
        assert.equal("boom", e)
        local r, err = db:transaction(function(tx)
            assert(tx:exec("insert into tx values (?)", 3))
            return nil, "nope"
        end)
        assert.is_nil(r)
        assert.equal("nope", err)
        assert.same({ { v = 1 } }, (assert(db:query("select v from tx"))))
        assert.is_true(db:reusable())
        db:close()
    end)

    it("kills a query that times out on the server, and the next call works", function()
        local tasks = core.tasks()
        local db = connect()
        local watcher = connect()
        local t0 = require("system").hrtime()
        local rows, err = db:query({ "select sleep(30) as s", timeout = 200 })
        local ms = (require("system").hrtime() - t0) / 1e6
        assert.is_nil(rows)
        assert.equal("ETIMEDOUT", err.name)
        assert.is_true(ms >= 190 and ms < 5000, "took " .. ms)
        assert.is_false(db:reusable())
        -- KILL QUERY from a second connection ends it on the server.
        assert.is_true(helper.wait_for(function() return running(watcher, "select sleep(30)%") == 0 end, 5000))
        assert.equal(1, db:query("select 1 as x")[1].x) -- reconnected
        -- The connection's queryTimeout applies to every query.
        local db2 = connect({ queryTimeout = 100 })
        rows, err = db2:query("select sleep(10)")
        assert.equal("ETIMEDOUT", err.name)
        db2:close()
        db:close()
        watcher:close()
        settle(tasks)
    end)

    it("times out on a server that stops answering, and works once it is back", function()
        local tasks = core.tasks()
        local db = connect()
        srv:pause()
        local rows, err = db:query({ "select 1", timeout = 300 })
        assert.is_nil(rows)
        assert.equal("ETIMEDOUT", err.name)
        local db2, err2 = mysql.connect(srv:options({ timeout = 300 }))
        assert.is_nil(db2)
        assert.equal("ETIMEDOUT", err2.name)
        srv:resume()
        assert.equal(1, db:query("select 1 as x")[1].x)
        db:close()
        settle(tasks)
    end)

    it("fails a query whose server is killed mid-query, and works once it is back", function()
        local db = connect()
        local t = task.spawn(function()
            sleep(200)
            srv:kill()
        end)
        local rows, err = db:query("select sleep(30)")
        assert.is_nil(rows)
        assert.equal("EMYSQL", err.name)
        assert.is_true(err.errno == 2013 or err.errno == 2006, tostring(err.errno))
        t:join()
        assert.is_false(db:reusable())
        -- While the server is down, calls fail at once with a clear error.
        rows, err = db:query("select 1")
        assert.is_nil(rows)
        assert.equal("ECONNREFUSED", err.name)
        assert.equal(2002, err.errno)
        srv:restart()
        assert.equal(1, db:query("select 1 as x")[1].x)
        db:close()
    end)

    it("runs queries of many tasks on their own connections at once", function()
        local results = {}
        local tasks = {}
        for i = 1, 8 do
            tasks[i] = task.spawn(function()
                local db = connect()
                local r = assert(db:query("select ? as i, sleep(0.1) as s", i))
                results[i] = r[1].i
                db:close()
            end)
        end
        for i = 1, 8 do tasks[i]:join() end
        for i = 1, 8 do assert.equal(i, results[i]) end
    end)

    it("closes a connection whose query is in progress: the query gets ECANCELED", function()
        local db = connect()
        local got
        local t = task.spawn(function() got = { db:query("select sleep(5)") } end)
        task.yield()
        db:close()
        t:join()
        assert.is_nil(got[1])
        assert.equal("ECANCELED", got[2].name)
    end)

    it("lets a forgotten connection be collected", function()
        local fds = helper.fd_count()
        do
            local db = connect()
            db:query("select 1")
        end
        collectgarbage()
        collectgarbage()
        assert.is_true(helper.fds_back_to(fds) <= fds)
    end)

    it("lets a forgotten connection be collected after a db:rows loop the JIT compiled", function()
        local fds = helper.fd_count()
        -- LuaJIT compiles a hot loop (hotloop=1: at once) and specializes the trace on the
        -- function the loop calls, which the trace keeps alive as long as it lives: an iterator
        -- closure that held its connection kept it open.
        jit.opt.start("hotloop=1")
        task.spawn(function()
            local db = connect()
            for row in db:rows("select seq as id from seq_1_to_100") do if row.id == 3 then break end end
        end):join()
        jit.opt.start("hotloop=56") -- LuaJIT's default
        collectgarbage()
        collectgarbage()
        assert.is_true(helper.fds_back_to(fds) <= fds)
    end)

    it("fails against a server without TLS instead of going on in plaintext", function()
        local db, err = mysql.connect(srv:options({ tls = { verify = false } }))
        assert.is_nil(db)
        assert.equal("EMYSQL", err.name)
        assert.equal(2026, err.errno)
    end)

    -- The growth of the Lua heap while fn runs, sampled every 1000 calls of the probe it gets.
    local function heap_growth(fn)
        collectgarbage()
        collectgarbage()
        local base, peak, calls = collectgarbage("count"), 0, 0
        local function probe()
            calls = calls + 1
            if calls % 1000 == 0 then peak = math.max(peak, collectgarbage("count") - base) end
        end
        fn(probe)
        return math.max(peak, collectgarbage("count") - base)
    end

    local SERIES = "select seq as id, concat('name ', seq) as name, seq * 1.5 as f from seq_1_to_200000"

    it("streams 200,000 rows with db:rows in bounded memory, in both protocols, where query holds them all", function()
        local db = connect()
        for _, params in ipairs({ {}, { 0 } }) do
            local sql = SERIES .. (params[1] and " where seq > ?" or "")
            local n, sum = 0, 0
            local streamed = heap_growth(function(probe)
                for row, err in db:rows(sql, unpack(params)) do
                    assert(row, err and tostring(err))
                    n, sum = n + 1, sum + row.id
                    probe()
                end
            end)
            assert.equal(200000, n)
            assert.equal(200000 * 200001 / 2, sum)
            local rows
            local whole = heap_growth(function() rows = assert(db:query(sql, unpack(params))) end)
            assert.equal(200000, #rows)
            rows = nil
            assert.is_true(whole > 20000, "query grew the heap by only " .. whole .. " KB")
            assert.is_true(streamed < whole / 10, ("stream %d KB, query %d KB"):format(streamed, whole))
        end
        db:close()
    end)

    it("gives db:rows the same Lua values as query, in the text and the binary protocol", function()
        local db = connect()
        assert(db:exec([[create table stream_types (id int, bi bigint unsigned, f float, d double,
            dec_ decimal(8,2), dt datetime, tx text, bl blob, js json, n int)]]))
        local long = string.rep("long text ", 100) -- longer than a fetch's 64-byte buffer
        assert(db:query("insert into stream_types values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?), (2, 18446744073709551615, 0.5, -1, 1, null, 'x', '', '[]', 7)",
            1, 9007199254740991, 1.1, 2.5, "12.50", "2026-12-03 01:02:03", long, "\0\255", '{"a": 1}', mysql.null))
        for _, params in ipairs({ {}, { 0 } }) do
            local sql = "select * from stream_types" .. (params[1] and " where id > ? order by id" or " order by id")
            local whole = assert(db:query(sql, unpack(params)))
            local got = {}
            for row, err in db:rows(sql, unpack(params)) do
                assert(row, err and tostring(err))
                got[#got + 1] = row
            end
            assert.same({ whole[1], whole[2] }, got)
            assert.equal(long, got[1].tx)
            assert.equal("18446744073709551615", got[2].bi)
            assert.equal(mysql.null, got[1].n)
        end
        assert(db:exec("drop table stream_types"))
        db:close()
    end)

    it("drains the rest after a db:rows loop is left early; the connection goes on", function()
        local db = connect()
        local id = db:threadId()
        for _, param in ipairs({ false, 0 }) do
            local sql = SERIES .. (param and " where seq > ?" or "")
            local args = param and { param } or {}
            for row in db:rows(sql, unpack(args)) do
                if row.id == 10 then break end
            end
            assert.equal(42, assert(db:query("select 42 as v"))[1].v)
            local ok, err = pcall(function()
                for row in db:rows(sql, unpack(args)) do
                    if row.id == 5 then error("boom") end
                end
            end)
            assert.is_false(ok)
            assert.truthy(tostring(err):find("boom", 1, true))
            assert.equal(7, assert(db:query("select ? as v", 7))[1].v)
            for row in db:rows(sql, unpack(args)) do if row.id == 2 then break end end
            assert.is_true(db:ping())
            for row in db:rows(sql, unpack(args)) do if row.id == 2 then break end end
            assert.equal("ok", db:transaction(function(tx) return tx:query("select 'ok' as v")[1].v end))
        end
        -- Statements without rows, and several statements: the first result set is streamed.
        local n = 0
        for _ in db:rows("do 1") do n = n + 1 end
        assert.equal(0, n)
        for row in db:rows("select 1 as a union select 2; select 3 as b") do n = n + row.a end
        assert.equal(3, n)
        assert.equal(id, db:threadId()) -- the same session all along
        assert.equal(1, assert(db:query("select 1 as v"))[1].v)
        db:close()
    end)

    it("commits a transaction after a db:rows loop left early inside it", function()
        local db = connect()
        assert(db:exec("create table tx_rows (v int)"))
        assert.equal("ok", db:transaction(function(tx)
            assert(tx:exec("insert into tx_rows values (?)", 1))
            for row in tx:rows("select seq from seq_1_to_10000") do if row.seq == 2 then break end end
            return "ok"
        end))
        assert.equal(1, db:query("select count(*) as n from tx_rows")[1].n)
        assert(db:exec("drop table tx_rows"))
        db:close()
    end)

    it("raises in a db:rows loop whose own connection ran another query inside it", function()
        local db = connect()
        local ok, err = pcall(function()
            for _ in db:rows(SERIES) do db:query("select 1") end
        end)
        assert.is_false(ok)
        assert.truthy(tostring(err):find("db:rows: the loop's rows were dropped", 1, true), tostring(err))
        assert.equal(1, assert(db:query("select 1 as v"))[1].v)
        db:close()
    end)

    it("ends a db:rows loop with false and the error; a timeout kills the query", function()
        local db = connect()
        local got
        for row, err in db:rows("select * from no_such_table") do got = { row, err } end
        assert.is_false(got[1])
        assert.equal(1146, got[2].errno)
        for row, err in db:rows("select * from no_such_table where id = ?", 1) do got = { row, err } end
        assert.equal(1146, got[2].errno)
        local before = core.tasks()
        for row, err in db:rows({ "select seq, sleep(if(seq = 3, 5, 0)) from seq_1_to_5", timeout = 300 }) do
            if not row then got = err end
        end
        assert.equal("ETIMEDOUT", got.name)
        local admin = connect()
        helper.wait_for(function() return running(admin, "%sleep(if(seq%") == 0 end, 3000)
        assert.equal(0, running(admin, "%sleep(if(seq%"))
        admin:close()
        settle(before)
        assert.equal(3, assert(db:query("select 3 as v"))[1].v)
        db:close()
    end)

    it("closes a connection in the middle of a db:rows loop without reading the rest", function()
        local fds = helper.fd_count()
        local db = connect()
        for row in db:rows("select seq as id, repeat('x', 200) as pad from seq_1_to_2000000") do
            if row.id == 3 then break end
        end
        -- With the server stopped, reading the rest would block the loop until the connector's
        -- read timeout (34 s measured without the shutdown of the socket); close returns at once.
        srv:pause()
        local t0 = require("system").hrtime()
        db:close()
        local ms = (require("system").hrtime() - t0) / 1e6
        srv:resume()
        assert.is_true(ms < 10000, "close took " .. ms .. " ms")
        local db2 = connect()
        for _ in db2:rows(SERIES .. " where seq > ?", 0) do break end
        db2 = nil
        collectgarbage()
        collectgarbage()
        assert.is_true(helper.fds_back_to(fds) <= fds)
    end)

end)

describe("mysql.pool", function()
    setup(function()
        srv = mariadb.start()
    end)

    teardown(function()
        if srv then srv:stop() end
    end)

    it("runs queries on pooled connections and returns with's results", function()
        local pool = mysql.pool(srv:options({ size = 2 }))
        assert.equal(1, pool:query("select ? as x", 1)[1].x)
        assert.equal(0, pool:exec("do 1"))
        assert.same({ "a", 2 }, { pool:with(function(db, v) return "a", db:query("select ? as v", v)[1].v end, 2) })
        local s = pool:stats()
        assert.equal(1, s.open)
        assert.equal(1, s.idle)
        pool:close()
    end)

    it("streams rows on a pool: pool:with drains and reuses, pool:rows gives the connection back", function()
        local pool = mysql.pool(srv:options({ size = 1 }))
        local SERIES = "select seq as id from seq_1_to_10000"
        local id = pool:with(function(db)
            for row in db:rows(SERIES) do if row.id == 3 then break end end
            return db:threadId()
        end)
        assert.equal(id, pool:with(function(db) return db:threadId() end))
        local n = 0
        for row, err in pool:rows(SERIES .. " where seq <= ?", 500) do
            assert(row, err and tostring(err))
            n = n + 1
        end
        assert.equal(500, n)
        assert.same({ size = 1, open = 1, idle = 1, busy = 0, waiting = 0 }, pool:stats())
        -- A pool:rows loop left early holds its connection until the iterator is collected; it is
        -- closed then, and the next caller gets a new one.
        -- (In a task of its own: a dead for-loop's iterator may stay in its frame's stack slots.)
        local function leave_early()
            for row in pool:rows(SERIES) do if row.id == 3 then break end end
        end
        task.spawn(leave_early):join()
        assert.equal(1, pool:stats().busy)
        -- Collected at some full cycle (when exactly is the collector's business).
        helper.wait_for(function()
            collectgarbage()
            return pool:stats().busy == 0
        end, 3000)
        assert.same({ size = 1, open = 0, idle = 0, busy = 0, waiting = 0 }, pool:stats())
        assert.are_not.equal(id, pool:with(function(db) return db:threadId() end))
        pool:close()
    end)

    it("is exhausted by slow queries: waiters time out, then get a connection", function()
        local tasks = core.tasks()
        local pool = mysql.pool(srv:options({ size = 2, waitTimeout = 200, maxWaiters = 1 }))
        local slow = {}
        -- Slow enough (2 s) that no connection comes free before the waiter's 200 ms are over,
        -- however long a loaded machine takes to get the waiter in line.
        for i = 1, 2 do slow[i] = task.spawn(function() return pool:query("select sleep(2)") end) end
        sleep(50)
        local waiter = task.spawn(function() return pool:query("select 1 as x") end)
        sleep(20)
        -- Past maxWaiters: refused at once.
        local r, err = pool:query("select 1")
        assert.is_nil(r)
        assert.equal("EBUSY", err.name)
        local _, rows, werr = waiter:join()
        assert.is_nil(rows)
        assert.equal("ETIMEDOUT", werr.name)
        for i = 1, 2 do slow[i]:join() end
        assert.equal(1, pool:query("select 1 as x")[1].x)
        pool:close()
        settle(tasks)
    end)

    it("does not hand out a connection in a transaction or lost, and idle ones keep nothing alive", function()
        local handles = core.handles()
        local pool = mysql.pool(srv:options({ size = 1 }))
        local id1 = pool:with(function(db) return db:threadId() end)
        -- A connection that timed out is closed at release: the next caller gets a new one.
        local r, err = pool:query({ "select sleep(5)", timeout = 100 })
        assert.is_nil(r)
        assert.equal("ETIMEDOUT", err.name)
        local id2 = pool:with(function(db) return db:threadId() end)
        assert.is_true(id2 ~= id1)
        -- A transaction through the pool commits.
        assert(pool:exec("create table if not exists pt (v int)"))
        assert.equal(7, pool:transaction(function(db)
            db:exec("insert into pt values (?)", 7)
            return 7
        end))
        assert.equal(1, pool:query("select count(*) as n from pt")[1].n)
        -- An idle pooled connection holds no referenced handle.
        assert.equal(handles, core.handles())
        pool:close()
        helper.wait_for(function() return core.tasks() <= 1 end, 5000)
    end)

    it("recovers once the server is back after it was killed", function()
        local pool = mysql.pool(srv:options({ size = 2 }))
        assert.equal(1, pool:query("select 1 as x")[1].x)
        srv:kill()
        local r, err = pool:query("select 1")
        assert.is_nil(r)
        assert.equal("EMYSQL", err.name)
        srv:restart()
        assert.equal(1, pool:query("select 1 as x")[1].x)
        pool:close()
    end)

end)

describe("mysql tls", function()
    local tsrv

    setup(function()
        tsrv = mariadb.start({ tls = true })
    end)

    teardown(function()
        if tsrv then tsrv:stop() end
    end)

    it("connects with the server's CA and the session is encrypted", function()
        local db, err = mysql.connect(tsrv:options({ tls = { ca = tsrv.ca } }))
        assert.is_nil(err)
        local cipher = assert(db:query("show status like 'Ssl_cipher'"))[1].Value
        assert.is_true(#cipher > 0)
        db:close()
        -- Through the pool, which passes the option on.
        local pool = mysql.pool(tsrv:options({ tls = { ca = tsrv.ca }, size = 1 }))
        assert.is_true(#assert(pool:query("show status like 'Ssl_cipher'"))[1].Value > 0)
        pool:close()
    end)

    it("fails clearly with a CA that did not sign the server's certificate", function()
        local db, err = mysql.connect(tsrv:options({ tls = { ca = tsrv.otherCa } }))
        assert.is_nil(db)
        assert.equal("ECERTVERIFY", err.name)
        assert.equal(2026, err.errno)
        assert.is_truthy(err.message:lower():find("certificate", 1, true))
        -- tls = true verifies against the system's CAs, which do not hold the spec's CA.
        db, err = mysql.connect(tsrv:options({ tls = true }))
        assert.is_nil(db)
        assert.equal("ECERTVERIFY", err.name)
        -- verify = false encrypts without checking.
        db = assert(mysql.connect(tsrv:options({ tls = { ca = tsrv.otherCa, verify = false } })))
        assert.is_true(#db:query("show status like 'Ssl_cipher'")[1].Value > 0)
        db:close()
    end)

    it("waits for a query over TLS without blocking the loop, and its timeout applies", function()
        local tasks = core.tasks()
        local db = assert(mysql.connect(tsrv:options({ tls = { ca = tsrv.ca } })))
        local ticks = 0
        local ticker = task.spawn(function()
            for _ = 1, 10 do
                sleep(50)
                ticks = ticks + 1
            end
        end)
        assert.equal(0, db:query("select sleep(1) as s")[1].s)
        -- Ticks while the query waits (a blocked loop would give none; a loaded machine fewer than 20).
        assert.is_true(ticks >= 1, "ticks " .. ticks)
        local rows, err = db:query({ "select sleep(5) as s", timeout = 200 })
        assert.is_nil(rows)
        assert.equal("ETIMEDOUT", err.name)
        db:close()
        ticker:join()
        settle(tasks)
    end)

    it("kills a timed-out query of a REQUIRE SSL user: the killer connects with the same tls options", function()
        local tasks = core.tasks()
        local opts = tsrv:options({ user = tsrv.sslUser, tls = { ca = tsrv.ca } })
        -- Without TLS this user is refused: the killer must not go without it.
        local plain, perr = mysql.connect(tsrv:options({ user = tsrv.sslUser }))
        assert.is_nil(plain)
        assert.equal(1045, perr.errno)
        local db = assert(mysql.connect(opts))
        local rows, err = db:query({ "select sleep(30) as s", timeout = 200 })
        assert.is_nil(rows)
        assert.equal("ETIMEDOUT", err.name)
        settle(tasks)
        local admin = assert(mysql.connect(tsrv:options()))
        helper.wait_for(function() return running(admin, "select sleep(30)%") == 0 end, 3000)
        assert.equal(0, running(admin, "select sleep(30)%"))
        admin:close()
        db:close()
    end)

    it("connects without tls to the TLS server as before", function()
        local db = assert(mysql.connect(tsrv:options()))
        assert.equal(1, db:query("select 1 as x")[1].x)
        db:close()
    end)

    it("raises with the function's name for a wrong tls option", function()
        assert.has_error(function() mysql.connect(tsrv:options({ tls = 5 })) end,
            "mysql.connect: option 'tls' must be true or a table of tls options, got number")
        assert.has_error(function() mysql.pool(tsrv:options({ tls = 5 })) end,
            "mysql.pool: option 'tls' must be true or a table of tls options, got number")
        assert.has_error(function() mysql.connect(tsrv:options({ tls = { ca = 1 } })) end,
            "mysql.connect: tls option 'ca' must be a string, got number")
        assert.has_error(function() mysql.connect(tsrv:options({ tls = { servername = "x" } })) end,
            "mysql.connect: unknown tls option 'servername'")
    end)
end)
