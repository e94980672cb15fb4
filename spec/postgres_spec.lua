-- The postgres module against a real PostgreSQL 15 that this file starts (spec/servers/postgres.lua):
-- connecting, types both ways, parameters that stay data, errors with their SQLSTATE, prepared
-- statements, transactions, LISTEN/NOTIFY, COPY, timeouts that cancel on the server, and a
-- server that is killed, that stops answering, and that comes back.
local postgres = require "postgres"
local task = require "task"
local timer = require "timer"
local helper = require "helper"
local pgserver = require "servers.postgres"

local server

setup(function()
    server = pgserver.start()
end)

teardown(function()
    if server then server:stop() end
end)

local function connect(extra)
    local o = {}
    for k, v in pairs(server.options) do o[k] = v end
    for k, v in pairs(extra or {}) do o[k] = v end
    return assert(postgres.connect(o))
end

describe("postgres.connect", function()
    it("connects with options and with a postgresql:// URL", function()
        local db = connect()
        assert.are.equal("idle", db:status())
        assert.is_true(db:info().pid > 0)
        assert.is_true(db:info().serverVersion >= 150000)
        db:close()
        assert.are.equal("closed", db:status())
        local db2, err = postgres.connect(server.url)
        assert(db2, err and tostring(err))
        assert.are.equal(1, db2:query("select 1 as one")[1].one)
        db2:close()
        -- Options beside the URL override its parts.
        local db3, err3 = postgres.connect { url = server.url, database = "template1" }
        assert(db3, err3 and tostring(err3))
        assert.are.equal("template1", db3:query("select current_database() as d")[1].d)
        db3:close()
    end)

    it("fails on a wrong password with the server's message", function()
        local db, err = postgres.connect { host = "127.0.0.1", port = server.port, user = "postgres", password = "wrong" }
        assert.is_nil(db)
        assert.are.equal("EPG", err.name)
        assert.truthy(err.message:find("password authentication failed", 1, true), err.message)
    end)

    it("fails when nothing listens on the port", function()
        local probe = require("tcp").createServer(0, function() end, { host = "127.0.0.1" })
        local port = probe:address().port
        probe:close()
        local db, err = postgres.connect { host = "127.0.0.1", port = port, user = "postgres", timeout = 2000 }
        assert.is_nil(db)
        -- Named as tcp, http and redis name it; the message is libpq's.
        assert.are.equal("ECONNREFUSED", err.name)
        assert.are.equal(-111, err.code)
        assert.truthy(err.message:find("Connection refused", 1, true), err.message)
        assert.truthy(err.message:find(tostring(port), 1, true), err.message)
    end)

    it("times out connecting to a server that never answers: ETIMEDOUT", function()
        -- A listener that reads what comes and never answers (until the client goes).
        local mute = assert(require("tcp").createServer(0, function(s) while s:read() do end end, { host = "127.0.0.1" }))
        local db, err = postgres.connect { host = "127.0.0.1", port = mute:address().port, user = "postgres",
            sslmode = "disable", timeout = 300 }
        assert.is_nil(db)
        assert.are.equal("ETIMEDOUT", err.name)
        mute:close()
    end)

    it("raises on a misspelled option and on a value that is not a string", function()
        assert.has_error(function() postgres.connect { hots = "x" } end)
        assert.has_error(function() postgres.connect { host = {} } end)
        assert.has_error(function() postgres.connect(5) end)
    end)

    it("raises on a string that is not a postgres:// or postgresql:// URL, as mysql.connect does", function()
        local function raises(msg, f, ...)
            local ok, err = pcall(f, ...)
            assert.is_false(ok)
            assert.truthy(tostring(err):find(msg, 1, true), tostring(err))
        end
        raises("postgres.connect: expected a postgres:// or postgresql:// URL, got 'not a url'", postgres.connect,
            "not a url")
        -- libpq's keyword strings too: the options table says the same.
        raises("postgres.connect: expected a postgres:// or postgresql:// URL, got 'host=127.0.0.1 dbname=x'",
            postgres.connect, { url = "host=127.0.0.1 dbname=x" })
        raises("postgres.pool: expected a postgres:// or postgresql:// URL, got 'mysql://x@127.0.0.1/db'",
            postgres.pool, "mysql://x@127.0.0.1/db")
        -- Both schemes libpq knows are taken.
        local db = assert(postgres.connect((server.url:gsub("^postgresql://", "postgres://"))))
        db:close()
    end)

    it("opens and closes connections without leaking descriptors", function()
        local before = helper.fd_count()
        for _ = 1, 20 do
            local db = connect()
            assert(db:query("select 1"))
            db:close()
        end
        assert.are.equal(before, helper.fds_back_to(before))
    end)
end)

describe("postgres types", function()
    local db
    before_each(function() db = connect() end)
    after_each(function() db:close() end)

    -- Each value goes in as a parameter and comes back as the same Lua value.
    local cases = {
        { "int2", 32767 }, { "int2", -32768 }, { "int4", 2147483647 }, { "int4", -5 },
        { "int8", 9007199254740992 }, { "int8", -9007199254740992 }, { "int8", 0 },
        { "float8", 1.5 }, { "float8", -0.1 }, { "float8", 1e300 }, { "float8", math.huge }, { "float8", -math.huge },
        { "float4", 0.5 }, { "bool", true }, { "bool", false },
        { "text", "" }, { "text", "héllo wörld ✓" }, { "varchar", "abc" }, { "char(3)", "abc" },
        { "numeric", "12345678901234567890.123456789" }, { "date", "2026-12-03" },
        { "timestamp", "2026-12-03 14:05:06.123456" }, { "timestamptz", "2026-12-03 14:05:06+00" },
        { "time", "23:59:59" }, { "interval", "1 day 02:03:04" }, { "uuid", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11" },
        { "inet", "127.0.0.1" }, { "int4[]", "{1,2,3}" }, { "text[]", '{a,"b c"}' },
    }
    for _, c in ipairs(cases) do
        it("round-trips " .. c[1] .. " " .. tostring(c[2]), function()
            local rows = assert(db:query("select $1::" .. c[1] .. " as v", c[2]))
            assert.are.equal(c[2], rows[1].v)
        end)
    end

    it("returns int8 beyond 2^53 as its exact decimal text", function()
        local rows = assert(db:query("select 9223372036854775807::int8 as big, -9007199254740993::int8 as small"))
        assert.are.equal("9223372036854775807", rows[1].big)
        assert.are.equal("-9007199254740993", rows[1].small)
    end)

    it("reads NaN floats", function()
        local v = assert(db:query("select 'NaN'::float8 as v"))[1].v
        assert.is_true(v ~= v)
    end)

    it("sends nil and postgres.null as NULL and reads NULL as postgres.null", function()
        local rows = assert(db:query("select $1::int is null as a, $2::text is null as b, null::int as c", nil, postgres.null))
        assert.is_true(rows[1].a)
        assert.is_true(rows[1].b)
        assert.are.equal(postgres.null, rows[1].c)
        assert.are.equal(require("json").null, postgres.null)
    end)

    it("round-trips every byte value through bytea", function()
        local t = {}
        for i = 0, 255 do t[#t + 1] = string.char(i) end
        local bytes = table.concat(t)
        local rows = assert(db:query("select $1::bytea as b, length($1::bytea) as n", postgres.bytea(bytes)))
        assert.are.equal(256, rows[1].n)
        assert.are.equal(bytes, rows[1].b)
        -- A string with a NUL byte goes in the binary format by itself.
        rows = assert(db:query("select $1::bytea as b", "a\0b"))
        assert.are.equal("a\0b", rows[1].b)
    end)

    it("decodes json and jsonb, sends tables as JSON, and returns the text with decodeJson = false", function()
        local rows = assert(db:query("select $1::jsonb as j, '[1, null]'::json as a", { name = "x", list = { 1, 2 } }))
        assert.are.equal("x", rows[1].j.name)
        assert.are.same({ 1, 2 }, rows[1].j.list)
        assert.are.equal(1, rows[1].a[1])
        assert.are.equal(postgres.null, rows[1].a[2])
        local raw = connect { decodeJson = false }
        assert.are.equal('{"a": 1}', raw:query([[select '{"a":1}'::jsonb as j]])[1].j)
        raw:close()
    end)

    it("gives rows.affected and exec's count", function()
        assert(db:exec("create temp table t (id serial, name text)"))
        assert.are.equal(3, db:exec("insert into t (name) values ($1), ($2), ($3)", "a", "b", "c"))
        local rows = assert(db:query("update t set name = name || '!' where id > $1 returning name", 1))
        assert.are.equal(2, rows.affected)
        assert.are.equal(2, #rows)
        assert.are.equal(0, assert(db:query("select * from t where false")).affected)
        -- exec without parameters runs several statements (the simple protocol).
        assert.are.equal(1, db:exec("delete from t where id = 1; delete from t where id = 2"))
    end)
end)

describe("postgres parameters", function()
    local db
    before_each(function()
        db = connect()
        assert(db:exec("create temp table users (id serial primary key, name text not null)"))
        assert(db:exec("insert into users (name) values ('alice'), ('bob')"))
    end)
    after_each(function() db:close() end)

    local attacks = {
        "'; drop table users; --", "' or '1'='1", "1; delete from users", "\\'; select pg_sleep(10); --",
        "$1", "') union select 1, current_user --", "\"users\"",
    }
    for _, a in ipairs(attacks) do
        it("keeps " .. a .. " as data", function()
            assert.are.equal(0, #assert(db:query("select * from users where name = $1", a)))
            assert(db:exec("insert into users (name) values ($1)", a))
            local rows = assert(db:query("select name from users where name = $1", a))
            assert.are.equal(1, #rows)
            assert.are.equal(a, rows[1].name)
            assert.are.equal(3, #assert(db:query("select * from users")))
        end)
    end

    it("quotes identifiers", function()
        assert.are.equal('"a""b"', postgres.quoteIdent('a"b'))
        assert(db:exec("create temp table " .. postgres.quoteIdent('we"ird') .. " (x int)"))
        assert.has_error(function() postgres.quoteIdent("a\0b") end)
    end)

    it("raises naming the function when the parameters do not match the placeholders", function()
        local function raises(msg, f)
            local ok, err = pcall(f)
            assert.is_false(ok)
            assert.truthy(tostring(err):find(msg, 1, true), tostring(err))
        end
        for _, prepare in ipairs({ true, false }) do
            local c = connect { prepare = prepare }
            for _ = 1, 2 do -- a new statement, then a kept one
                raises("query: the statement has 2 placeholders, the call gave 1 parameter",
                    function() c:query("select $1::int, $2::int", 1) end)
                raises("exec: the statement has 1 placeholder, the call gave 3 parameters",
                    function() c:exec("select $1::int as v", 1, 2, 3) end)
                raises("rows: the statement has 2 placeholders, the call gave 1 parameter",
                    function() for _ in c:rows({ "select $1::int, $2::int", timeout = 1000 }, 1) do end end)
            end
            local st = assert(c:prepare("select $1::int as a, $2::int as b"))
            raises("query: the statement has 2 placeholders, the call gave 1 parameter", function() st:query(1) end)
            -- A parameter whose type is not known is the server's error, not a count mismatch.
            local r, err = c:query("select $1 is null as v", 1)
            assert.is_nil(r)
            assert.are.equal("42P18", err.sqlstate)
            assert.are.same({ a = 1, b = 2 }, st:query(1, 2)[1])
            c:close()
        end
    end)

    it("raises on values that cannot be parameters", function()
        assert.has_error(function() db:query("select $1", function() end) end)
        assert.has_error(function() db:query("select $1", coroutine.create(print)) end)
        assert.has_error(function() db:query(5) end)
        assert.has_error(function() db:query({}) end)
    end)
end)

describe("postgres notices", function()
    it("are not printed on the application's stderr", function()
        local script = helper.script([[
            local db = assert(require("postgres").connect(arg[1]))
            assert(db:exec("create temp table if not exists n (a int)"))
            assert(db:exec("create temp table if not exists n (a int)")) -- NOTICE: already exists
            assert(db:exec("do $$ begin raise warning 'careful'; end $$"))
            db:close()
            print("done")
        ]])
        local out, err, status = helper.run(script .. " '" .. server.url .. "'")
        os.remove(script)
        assert.are.equal(0, status)
        assert.are.equal("done\n", out)
        assert.are.equal("", err)
    end)
end)

describe("postgres errors", function()
    it("carry the SQLSTATE, severity, detail and the server's message", function()
        local db = connect()
        assert(db:exec("create temp table u (id int primary key)"))
        assert(db:exec("insert into u values (1)"))
        local rows, err = db:query("insert into u values ($1)", 1)
        assert.is_nil(rows)
        assert.are.equal("EPG", err.name)
        assert.are.equal("23505", err.sqlstate)
        assert.are.equal("ERROR", err.severity)
        assert.truthy(err.message:find("duplicate key", 1, true))
        assert.truthy(err.detail:find("(id)=(1)", 1, true))
        assert.truthy(tostring(err):find("^EPG: duplicate key"))
        local _, e2 = db:query("selec 1")
        assert.are.equal("42601", e2.sqlstate)
        -- The connection goes on after errors.
        assert.are.equal(2, db:query("select 2 as v")[1].v)
        db:close()
    end)

    it("returns EBUSY to a second task that uses a busy connection", function()
        local db = connect()
        -- The first query lasts a second: longer than a loaded machine may take to come back here.
        local t = task.spawn(function() return db:query("select pg_sleep(1)") end)
        timer.sleep(20)
        local rows, err = db:query("select 1")
        assert.is_nil(rows)
        assert.are.equal("EBUSY", err.name)
        assert(t:join())
        db:close()
    end)

    it("wakes a waiting query with ECANCELED when its connection is closed", function()
        local db = connect()
        local t = task.spawn(function() return db:query("select pg_sleep(5)") end)
        timer.sleep(50)
        db:close()
        local ok, rows, err = t:join()
        assert.is_true(ok)
        assert.is_nil(rows)
        assert.are.equal("ECANCELED", err.name)
        assert.has_error(function() db:query("select 1") end)
    end)
end)

describe("postgres prepared statements", function()
    it("prepare once, run with parameters, deallocate", function()
        local db = connect()
        local st = assert(db:prepare("select $1::int * 2 as v, $2::text as s"))
        for i = 1, 5 do
            local rows = assert(st:query(i, "x" .. i))
            assert.are.equal(i * 2, rows[1].v)
            assert.are.equal("x" .. i, rows[1].s)
        end
        assert(st:close())
        local _, err = st.db:_execute("luaio_gone", nil)
        assert.are.equal("26000", err.sqlstate)
        local bad, perr = db:prepare("selec $1")
        assert.is_nil(bad)
        assert.are.equal("42601", perr.sqlstate)
        db:close()
    end)
end)

describe("postgres statements prepared by query", function()
    it("prepares each SQL text once and runs it with any parameters", function()
        local db = connect()
        local function count()
            return db:query("select count(*) as n from pg_prepared_statements")[1].n
        end
        for i = 1, 3 do assert.are.equal(i, db:query("select $1::int as v", i)[1].v) end
        assert.are.equal("7", db:query("select $1::text as v", 7)[1].v)
        assert.are.equal(3, count()) -- two of the queries above, and count's own
        -- The parameters' forms may change between runs.
        assert.are.equal(2, db:query("select length($1::bytea) as n", postgres.bytea("\0\1"))[1].n)
        assert.are.equal(3, db:query("select length($1::bytea) as n", "abc")[1].n)
        -- A failed first run leaves nothing behind; the SQL error is the query's.
        local _, err = db:query("selec $1", 1)
        assert.are.equal("42601", err.sqlstate)
        -- DISCARD ALL drops them: they are prepared again.
        assert(db:exec("discard all"))
        assert.are.equal(5, db:query("select $1::int as v", 5)[1].v)
        -- A table whose columns change: one failure (0A000), then the statement is made again.
        assert(db:exec("create temp table pt (a int)"))
        assert(db:query("select * from pt where a = $1", 1))
        assert(db:exec("alter table pt add column b int"))
        local r = db:query("select * from pt where a = $1", 1) or db:query("select * from pt where a = $1", 1)
        assert.is_table(r)
        db:close()
        local plain = connect { prepare = false }
        assert.are.equal(1, plain:query("select $1::int as v", 1)[1].v)
        assert.are.equal(0, plain:query("select count(*) as n from pg_prepared_statements")[1].n)
        plain:close()
    end)
end)

describe("postgres transactions", function()
    local db
    before_each(function()
        db = connect()
        assert(db:exec("create temp table acc (id int primary key, n int)"))
        assert(db:exec("insert into acc values (1, 0)"))
    end)
    after_each(function() db:close() end)
    local function n() return db:query("select n from acc where id = 1")[1].n end

    it("commits and returns the function's results", function()
        local a, b = db:transaction(function(tx)
            assert(tx:exec("update acc set n = n + 1"))
            assert.are.equal("transaction", tx:status())
            return "a", "b"
        end)
        assert.are.equal("a", a)
        assert.are.equal("b", b)
        assert.are.equal(1, n())
        assert.are.equal("idle", db:status())
    end)

    it("rolls back when the function raises, and raises again", function()
        assert.has_error(function()
            db:transaction(function(tx)
                assert(tx:exec("update acc set n = 100"))
                error("boom")
            end)
        end, "boom")
        assert.are.equal(0, n())
        assert.are.equal("idle", db:status())
    end)

    it("rolls back when the function returns nil and an error, or a statement failed", function()
        local r, err = db:transaction(function(tx)
            assert(tx:exec("update acc set n = 100"))
            return tx:query("select * from nosuch")
        end)
        assert.is_nil(r)
        assert.are.equal("42P01", err.sqlstate)
        assert.are.equal(0, n())
        r, err = db:transaction(function(tx)
            assert(tx:exec("update acc set n = 100"))
            tx:query("select * from nosuch")
            return true
        end)
        assert.is_nil(r)
        assert.are.equal("25P02", err.sqlstate)
        assert.are.equal(0, n())
    end)

    it("fails a transaction whose session was lost inside it, instead of committing on a new one", function()
        local db, other = connect(), connect()
        assert(db:exec("create table if not exists tx_lost (v int)"))
        local pid = db:info().pid
        local r, err = db:transaction(function(tx)
            assert(tx:exec("insert into tx_lost values (1)"))
            assert(other:query("select pg_terminate_backend($1)", pid))
            helper.wait_for(function()
                local _, e = tx:query("select 1")
                return e ~= nil
            end, 3000)
            return "done" -- the function ignores the error
        end)
        assert.is_nil(r)
        assert.are.equal("ECONNRESET", err.name)
        assert.are.equal(0, other:query("select count(*)::int as n from tx_lost")[1].n)
        assert.are.equal(1, assert(db:query("select 1 as v"))[1].v) -- the next call connects again
        assert(other:exec("drop table tx_lost"))
        db:close()
        other:close()
    end)

    it("commits a transaction after a db:rows loop left early inside it", function()
        local db = connect()
        assert(db:exec("create temp table tx_rows (v int)"))
        assert.are.equal("ok", db:transaction(function(tx)
            assert(tx:exec("insert into tx_rows values (1)"))
            for row in tx:rows("select g from generate_series(1, 10000) g") do if row.g == 2 then break end end
            return "ok"
        end))
        assert.are.equal(1, db:query("select count(*)::int as n from tx_rows")[1].n)
        db:close()
    end)

    it("raises on a nested transaction", function()
        assert.has_error(function()
            db:transaction(function(tx) tx:transaction(function() end) end)
        end)
        assert.are.equal("idle", db:status())
    end)
end)

describe("postgres LISTEN/NOTIFY", function()
    it("waits for a notification in a task; times out when none comes", function()
        local listener, sender = connect(), connect()
        assert(listener:listen("events"))
        local got
        local t = task.spawn(function()
            got = { listener:wait(5000) }
        end)
        timer.sleep(20)
        assert(sender:notify("events", "hello"))
        assert(t:join())
        assert.are.equal("events", got[1].channel)
        assert.are.equal("hello", got[1].payload)
        assert.are.equal(sender:info().pid, got[1].pid)
        -- Notifications that came while the connection did something else are kept.
        assert(sender:notify("events", "one"))
        assert(sender:exec("notify events, 'two'"))
        assert.are.equal("one", assert(listener:wait(2000)).payload)
        assert.are.equal("two", assert(listener:wait(2000)).payload)
        local note, err = listener:wait(100)
        assert.is_nil(note)
        assert.are.equal("ETIMEDOUT", err.name)
        assert(listener:unlisten("events"))
        listener:close()
        sender:close()
    end)
end)

describe("postgres COPY", function()
    it("streams rows in from a function and out into a sink", function()
        local db = connect()
        assert(db:exec("create temp table c (id int, name text)"))
        local i = 0
        local n = assert(db:copyIn("copy c from stdin", function()
            i = i + 1
            if i > 1000 then return nil end
            if i % 100 == 0 then timer.sleep(1) end -- a source may wait
            return i .. "\tname " .. i .. "\n"
        end))
        assert.are.equal(1000, n)
        assert.are.equal(1000, db:query("select count(*) as n from c")[1].n)
        assert.are.equal(2, assert(db:copyIn("copy c from stdin", { "1001\tx\n", "1002\ty\n" })))
        local chunks = {}
        local out = assert(db:copyOut("copy (select * from c order by id) to stdout", function(chunk)
            chunks[#chunks + 1] = chunk
        end))
        assert.are.equal(1002, out)
        local text = table.concat(chunks)
        assert.truthy(text:find("^1\tname 1\n"))
        assert.truthy(text:find("1002\ty\n$"))
        db:close()
    end)

    it("aborts a COPY whose source raises, and reports bad data", function()
        local db = connect()
        assert(db:exec("create temp table c (id int)"))
        assert.has_error(function()
            db:copyIn("copy c from stdin", function() error("source broke") end)
        end, "source broke")
        assert.are.equal("idle", db:status())
        local n, err = db:copyIn("copy c from stdin", "not a number\n")
        assert.is_nil(n)
        assert.are.equal("22P02", err.sqlstate)
        assert.are.equal(0, db:query("select count(*) as n from c")[1].n)
        local n2, err2 = db:copyIn("select 1", "x")
        assert.is_nil(n2)
        assert.are.equal("EPG", err2.name)
        db:close()
    end)
end)

describe("postgres timeouts and failures", function()
    it("cancels a query on the server when its timeout passes; the connection goes on", function()
        local db = connect()
        local rows, err = db:query({ "select pg_sleep(10)", timeout = 200 })
        assert.is_nil(rows)
        assert.are.equal("ETIMEDOUT", err.name)
        assert.are.equal("57014", err.sqlstate)
        assert.are.equal(3, db:query("select 3 as v")[1].v)
        -- No query runs on the server any more.
        -- No query runs on the server any more. (The timed-out session was closed: a late cancel
        -- request would otherwise hit the next statement, which happened under load.)
        local active, aerr = db:query("select count(*) as n from pg_stat_activity where state = 'active' and query like 'select pg_sleep(10)%'")
        assert(active, tostring(aerr))
        assert.are.equal(0, active[1].n)
        -- queryTimeout is every query's default.
        local db2 = connect { queryTimeout = 100 }
        local r2, e2 = db2:query("select pg_sleep(10)")
        assert.is_nil(r2)
        assert.are.equal("ETIMEDOUT", e2.name)
        db2:close()
        db:close()
    end)

    it("gives ETIMEDOUT and drops the connection when the server stops answering", function()
        local db = connect()
        server:pause()
        local rows, err = db:query({ "select 1", timeout = 200 })
        -- A connect to a stopped server times out as well.
        local db2, err2 = postgres.connect { host = "127.0.0.1", port = server.port, user = "postgres",
                                             password = pgserver.password, timeout = 300 }
        server:resume()
        assert.is_nil(rows)
        assert.are.equal("ETIMEDOUT", err.name)
        assert.are.equal("lost", db:status())
        -- The next call connects again (the server answers again).
        assert.are.equal(4, assert(db:query("select 4 as v"))[1].v)
        db:close()
        assert.is_nil(db2)
        assert.are.equal("ETIMEDOUT", err2.name)
        -- Once the server answers again, a new connection works.
        local db4 = connect()
        assert.are.equal(1, db4:query("select 1 as v")[1].v)
        db4:close()
    end)

    it("fails a query whose server is killed mid-query; works again once the server is back", function()
        local db = connect()
        local st = assert(db:prepare("select $1::int as v"))
        local t = task.spawn(function() return db:query("select pg_sleep(10)") end)
        timer.sleep(100)
        server:kill("SIGKILL")
        local ok, rows, err = t:join()
        assert.is_true(ok)
        assert.is_nil(rows)
        assert.are.equal("ECONNRESET", err.name)
        assert.are.equal("lost", db:status())
        -- The next call tries to connect again: no server yet.
        local r2, e2 = db:query("select 1")
        assert.is_nil(r2)
        assert.are.equal("ECONNREFUSED", e2.name)
        assert.are.equal("lost", db:status())
        local down, derr = postgres.connect(server.options)
        assert.is_nil(down)
        assert.are.equal("ECONNREFUSED", derr.name)
        server:restart()
        -- Once it is back, the same connection object works again, prepared statements too.
        local rows
        assert(helper.wait_for(function()
            rows = db:query("select 1 as v")
            return rows ~= nil
        end, 20000))
        assert.are.equal(1, rows[1].v)
        assert.are.equal("idle", db:status())
        db:close()
        -- A connection whose server died while it was idle: the next call finds the socket
        -- reset and fails at once (it waited for ever), the one after connects again and
        -- prepares the statement again.
        db = connect()
        st.db = db
        server:kill("SIGKILL")
        server:restart()
        local r3, e3 = st:queryTimeout(5000, 5)
        assert.is_nil(r3)
        assert.are.equal("ECONNRESET", e3.name)
        assert.are.equal(5, assert(st:query(5))[1].v)
        db:close()
        local db2 = assert(postgres.connect(server.options))
        assert.are.equal(1, db2:query("select 1 as v")[1].v)
        db2:close()
    end)
end)

describe("postgres db:rows", function()
    local db
    before_each(function() db = connect() end)
    after_each(function() db:close() end)

    local SERIES = "select g as id, 'name ' || g as name, g * 1.5 as f from generate_series(1, $1::int) g"

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
        peak = math.max(peak, collectgarbage("count") - base)
        return peak
    end

    it("streams 200,000 rows in bounded memory, where query holds them all", function()
        local n, sum = 0, 0
        local streamed = heap_growth(function(probe)
            for row, err in db:rows(SERIES, 200000) do
                assert(row, err and tostring(err))
                n, sum = n + 1, sum + row.id
                probe()
            end
        end)
        assert.are.equal(200000, n)
        assert.are.equal(200000 * 200001 / 2, sum)
        local rows
        local whole = heap_growth(function() rows = assert(db:query(SERIES, 200000)) end)
        assert.are.equal(200000, #rows)
        rows = nil
        -- query's result is tens of MB of Lua tables; the stream's heap stays near its batch size.
        assert.is_true(whole > 20000, "query grew the heap by only " .. whole .. " KB")
        assert.is_true(streamed < whole / 10, ("stream %d KB, query %d KB"):format(streamed, whole))
    end)

    it("gives the same Lua values as query for every column type", function()
        local sql = [[select 1::int2 as a, 2::int4 as b, 9007199254740993::int8 as c, 1.5::float8 as d,
            0.5::float4 as e, true as f, 'héllo'::text as g, '12.50'::numeric as h, '\x00ff'::bytea as i,
            '{"k": [1, null]}'::jsonb as j, null::int as k, '2026-12-03'::date as l, '{1,2}'::int4[] as m,
            $1::text as p]]
        local whole = assert(db:query(sql, "param"))
        local got = {}
        for row, err in db:rows(sql, "param") do
            assert(row, err and tostring(err))
            got[#got + 1] = row
        end
        assert.are.same(whole[1], got[1])
        assert.are.equal(1, #got)
        assert.are.equal(postgres.null, got[1].k)
        assert.are.equal("9007199254740993", got[1].c)
        -- Without parameters and on a connection that does not prepare, too.
        local raw = connect { prepare = false }
        for row in raw:rows("select 3::int8 as v, null::text as n") do got = row end
        assert.are.same({ v = 3, n = postgres.null }, got)
        raw:close()
    end)

    it("drains the rest after a break or an error in the loop; the connection goes on", function()
        local pid = db:info().pid
        for row in db:rows(SERIES, 100000) do
            if row.id == 10 then break end
        end
        assert.are.equal("busy", db:status()) -- the rest is unread
        assert.are.equal(42, assert(db:query("select 42 as v"))[1].v)
        assert.are.equal("idle", db:status())
        local ok, err = pcall(function()
            for row in db:rows(SERIES, 50000) do
                if row.id == 5 then error("boom") end
            end
        end)
        assert.is_false(ok)
        assert.truthy(tostring(err):find("boom", 1, true))
        assert.are.equal(1, assert(db:exec("select 1")))
        -- A second loop, a statement, a transaction and COPY after a loop left early.
        for row in db:rows(SERIES, 1000) do if row.id == 2 then break end end
        local n = 0
        for _ in db:rows(SERIES, 3) do n = n + 1 end
        assert.are.equal(3, n)
        for row in db:rows(SERIES, 1000) do if row.id == 2 then break end end
        local st = assert(db:prepare("select $1::int as v"))
        assert.are.equal(5, assert(st:query(5))[1].v)
        for row in db:rows(SERIES, 1000) do if row.id == 2 then break end end
        assert.are.equal("ok", db:transaction(function(tx) return tx:query("select 'ok' as v")[1].v end))
        -- Every loop ran on the same session: nothing was closed to get rid of the rows.
        assert.are.equal(pid, db:info().pid)
    end)

    it("raises in the loop when the loop's own connection ran another query inside it", function()
        local ok, err = pcall(function()
            for row in db:rows(SERIES, 1000) do
                db:query("select 1")
            end
        end)
        assert.is_false(ok)
        assert.truthy(tostring(err):find("rows: the loop's rows were dropped", 1, true), tostring(err))
        assert.are.equal(1, assert(db:query("select 1 as v"))[1].v)
    end)

    it("ends the loop with false and the error of a failed query", function()
        local got, n = nil, 0
        for row, err in db:rows("select 10 / (5 - g) as v from generate_series(1, 10) g") do
            if not row then got = err else n = n + 1 end
        end
        assert.are.equal("EPG", got.name)
        assert.are.equal("22012", got.sqlstate)
        assert.is_true(n <= 4)
        got = nil
        for row, err in db:rows("select * from no_such_table") do got = { row, err } end
        assert.is_false(got[1])
        assert.are.equal("42P01", got[2].sqlstate)
        assert.are.equal(2, assert(db:query("select 2 as v"))[1].v)
    end)

    it("cancels a stream on the server when its timeout passes; the next call connects again", function()
        local got, n = nil, 0
        for row, err in db:rows({ "select g, pg_sleep(case when g = 3 then 5 else 0 end) from generate_series(1, 5) g",
            timeout = 200 }) do
            if not row then got = err else n = n + 1 end
        end
        assert.are.equal("ETIMEDOUT", got.name)
        assert.are.equal("57014", got.sqlstate)
        assert.is_true(n <= 2)
        assert.are.equal(3, assert(db:query("select 3 as v"))[1].v)
        -- The connect option queryTimeout applies as well.
        local slow = connect { queryTimeout = 200 }
        for row, err in slow:rows("select pg_sleep(5)") do got = err end
        assert.are.equal("ETIMEDOUT", got.name)
        slow:close()
    end)

    it("streams on a pool: pool:with drains and reuses, pool:rows gives the connection back", function()
        local pool = postgres.pool { url = server.url, size = 1 }
        local pid = pool:with(function(c)
            for row in c:rows(SERIES, 10000) do if row.id == 3 then break end end
            return c:info().pid
        end)
        assert.are.equal(pid, pool:query("select pg_backend_pid() as p")[1].p)
        local n = 0
        for row, err in pool:rows(SERIES, 500) do
            assert(row, err and tostring(err))
            n = n + 1
        end
        assert.are.equal(500, n)
        assert.are.same({ size = 1, open = 1, idle = 1, busy = 0, waiting = 0 }, pool:stats())
        -- A pool:rows loop left early holds its connection until the iterator is collected; it is
        -- closed then (not drained), and the next caller gets a new one.
        -- (In a task of its own: a dead for-loop's iterator may stay in its frame's stack slots.)
        local function leave_early()
            for row in pool:rows(SERIES, 10000) do if row.id == 3 then break end end
        end
        task.spawn(leave_early):join()
        assert.are.equal(1, pool:stats().busy)
        -- Collected at some full cycle (when exactly is the collector's business).
        helper.wait_for(function()
            collectgarbage()
            return pool:stats().busy == 0
        end, 3000)
        assert.are.same({ size = 1, open = 0, idle = 0, busy = 0, waiting = 0 }, pool:stats())
        assert.are_not.equal(pid, pool:query("select pg_backend_pid() as p")[1].p)
        pool:close()
    end)
end)

describe("postgres.pool", function()
    it("runs queries on at most size connections and reuses them", function()
        local pool = postgres.pool { url = server.url, size = 4 }
        local tasks = {}
        for i = 1, 20 do
            tasks[i] = task.spawn(function() return pool:query("select $1::int as v, pg_backend_pid() as pid", i) end)
        end
        local pids = {}
        for i, t in ipairs(tasks) do
            local ok, rows = t:join()
            assert.is_true(ok)
            assert.are.equal(i, rows[1].v)
            pids[rows[1].pid] = true
        end
        local n = 0
        for _ in pairs(pids) do n = n + 1 end
        assert.is_true(n <= 4)
        assert.is_true(pool:stats().open <= 4)
        assert.are.equal(1, pool:exec("select 1"))
        assert.are.equal(7, pool:with(function(db) return db:query("select 7 as v")[1].v end))
        assert.are.equal("done", pool:transaction(function(tx)
            assert.are.equal("transaction", tx:status())
            return "done"
        end))
        pool:close()
    end)

    it("never hands out a connection left in a transaction or listening", function()
        local pool = postgres.pool { url = server.url, size = 1 }
        local db = assert(pool:acquire())
        assert(db:exec("begin"))
        pool:release(db)
        assert.are.equal("closed", db:status())
        local db2 = assert(pool:acquire())
        assert.are.equal("idle", db2:status())
        assert(db2:listen("ch"))
        pool:release(db2)
        assert.are.equal("closed", db2:status())
        pool:close()
    end)

    it("gives ETIMEDOUT to a caller when every connection is busy with slow queries", function()
        local pool = postgres.pool { url = server.url, size = 2, waitTimeout = 200, maxWaiters = 1 }
        local slow = {}
        -- Slow enough (2 s) that no connection comes free before the waiter's 200 ms are over,
        -- however long a loaded machine takes to get the waiter in line.
        for i = 1, 2 do slow[i] = task.spawn(function() return pool:query("select pg_sleep(2)") end) end
        timer.sleep(50)
        local waiter = task.spawn(function() return pool:query("select 1") end)
        timer.sleep(10)
        local rows, err = pool:query("select 1") -- the one waiter place is taken
        assert.is_nil(rows)
        assert.are.equal("EBUSY", err.name)
        local ok, r2, e2 = waiter:join()
        assert.is_true(ok)
        assert.is_nil(r2)
        assert.are.equal("ETIMEDOUT", e2.name)
        for _, t in ipairs(slow) do assert(t:join()) end
        assert.are.equal(1, pool:query("select 1 as v")[1].v)
        pool:close()
    end)

    it("replaces connections lost with the server; the next call works once it is back", function()
        local pool = postgres.pool { url = server.url, size = 2 }
        assert(pool:query("select 1"))
        local t = task.spawn(function() return pool:query("select pg_sleep(10)") end)
        timer.sleep(100)
        server:kill("SIGKILL")
        local ok, rows, err = t:join()
        assert.is_true(ok)
        assert.is_nil(rows)
        assert.are.equal("ECONNRESET", err.name)
        local r2, e2 = pool:query("select 1") -- the idle connection is found dead; no server yet
        assert.is_nil(r2)
        assert.truthy(e2.name == "ECONNREFUSED" or e2.name == "ECONNRESET", tostring(e2))
        server:restart()
        local r3
        assert(helper.wait_for(function()
            r3 = pool:query("select 3 as v")
            return r3 ~= nil
        end, 20000))
        assert.are.equal(3, r3[1].v)
        assert.is_true(pool:stats().open <= 2)
        pool:close()
    end)
end)

describe("examples/pg_redis_api.lua", function()
    it("serves items from PostgreSQL with a Redis cache in front", function()
        local http = require "http"
        local process = require "process"
        local json = require "json"
        local rserver = require("servers.redis").start()
        local port = helper.free_port()
        local child = assert(process.spawn(helper.luaio, { helper.source_dir .. "/examples/pg_redis_api.lua",
            tostring(port), server.url, tostring(rserver.port) }, { stdio = { "ignore", "pipe", "inherit" } }))
        local ok, err = pcall(function()
            assert.truthy(child.stdout:readline():find("items API on"))
            local base = "http://127.0.0.1:" .. port
            local res = assert(http.request { method = "POST", url = base .. "/items", body = '{"name":"lamp","tags":["home"]}' })
            assert.are.equal(201, res.status)
            local item = assert(json.decode(res.body))
            assert.are.equal("lamp", item.name)
            local url = base .. "/items/" .. item.id
            res = assert(http.get(url))
            assert.are.equal(200, res.status)
            assert.are.equal("miss", res.headers["x-cache"])
            assert.are.same({ "home" }, json.decode(res.body).tags)
            res = assert(http.get(url))
            assert.are.equal("hit", res.headers["x-cache"])
            assert.truthy(rserver:cli("GET", "item:" .. item.id):find("lamp", 1, true))
            res = assert(http.request { method = "PUT", url = url, body = '{"name":"desk lamp"}' })
            assert.are.equal(200, res.status)
            res = assert(http.get(url))
            assert.are.equal("miss", res.headers["x-cache"])
            assert.are.equal("desk lamp", json.decode(res.body).name)
            assert.are.equal(200, assert(http.get(base .. "/health")).status)
            assert.are.equal(204, assert(http.request { method = "DELETE", url = url }).status)
            assert.are.equal(404, assert(http.get(url)).status)
            assert.are.equal(404, assert(http.get(base .. "/items/abc")).status)
            assert.are.equal(400, assert(http.request { method = "POST", url = base .. "/items", body = "[" }).status)
        end)
        http.closeIdle()
        child.stdout:close()
        child:kill()
        child:wait()
        rserver:stop()
        assert(ok, err)
    end)
end)
