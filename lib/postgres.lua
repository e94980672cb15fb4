--- postgres: a PostgreSQL client on libpq's non-blocking API (see docs/postgres.md).
--
--   local db, err = postgres.connect{host, port, user, password, database, sslmode, timeout}
--   local db, err = postgres.connect("postgresql://user:pw@host:5432/db?sslmode=disable")
--   local rows, err = db:query("select * from t where id = $1", id)   -- rows[i].column, rows.affected
--   local n, err = db:exec("update t set x = $1", x)                  -- rows affected
--   db:query({"select pg_sleep(5)", timeout = 100})                   -- cancelled on the server
--   for row, err in db:rows(sql, ...) do ... end                      -- streamed; false, err on failure
--   local st = db:prepare("select $1::int")   st:query(1)   st:close()
--   db:transaction(function(tx) ... end)                              -- commit; rollback on error
--   db:listen("ch")   local note, err = db:wait(ms)                   -- {channel, payload, pid}
--   db:copyIn("copy t from stdin", source)   db:copyOut("copy t to stdout", sink)
--   local pool = postgres.pool{...connect options..., size = 32}  pool:query(...)  pool:with(fn)
--   postgres.null                                                     -- SQL NULL (json.null)
--
-- The connection is a C++ object (modules/postgres.cpp, luaio.postgres): query, exec and wait
-- are its own methods; this file adds the ones that are sequences of queries.
local core = require "luaio.postgres"
local json = require "json"
local errors = require "luaio.errors"

local type, tostring, pcall, error, setmetatable, pairs = type, tostring, pcall, error, setmetatable, pairs
local unpack = unpack
local new_error, raise = errors.new, errors.raise

local postgres = {}

--- SQL NULL in rows and parameters: the same value as json.null, so rows encode to JSON with nulls.
postgres.null = json.null

local BYTEA = { __name = "postgres.bytea" }

--- Marks a string as bytea: sent in the binary format, whatever bytes it holds.
function postgres.bytea(s)
    if type(s) ~= "string" then raise("postgres.bytea", "expected a string, got " .. type(s)) end
    return setmetatable({ s }, BYTEA)
end

core.setup(json.null, json.decode, json.encode, BYTEA)

--- "name" quoted as an SQL identifier (for LISTEN channels, table names built at run time).
function postgres.quoteIdent(s)
    if type(s) ~= "string" or s:find("%z") then
        raise("postgres.quoteIdent", "expected a string without NUL bytes")
    end
    return '"' .. s:gsub('"', '""') .. '"'
end

-- connect's options: the name libpq knows it by (or true for luaio's own).
local OPTIONS = {
    host = "host", port = "port", user = "user", password = "password", database = "dbname",
    sslmode = "sslmode", applicationName = "application_name", application_name = "application_name",
    options = "options", sslrootcert = "sslrootcert", sslcert = "sslcert", sslkey = "sslkey",
    url = true, timeout = true, queryTimeout = true, decodeJson = true, prepare = true,
}
-- What a pool's options add (lib/luaio/pool.lua).
local POOL_OPTIONS = require("luaio.pool").KEYS

local function check_ms(v, name, fname)
    if v ~= nil and (type(v) ~= "number" or v < 0) then
        raise(fname, "option '" .. name .. "' must be a non-negative number of milliseconds")
    end
    return v
end

-- The keyword and value arrays of PQconnectStartParams. The URL is the first dbname (the one
-- libpq expands); options given beside it override its parts.
local function params(options, fname)
    if type(options) == "string" then options = { url = options } end
    if type(options) ~= "table" then
        raise(fname, "expected an options table or a postgresql:// URL, got " .. type(options))
    end
    local keys, values = { "dbname" }, { options.url or "" }
    local url = options.url
    if url ~= nil and type(url) ~= "string" then raise(fname, "option 'url' must be a string") end
    -- Only URLs, as mysql.connect: libpq would also take "host=... dbname=..." (and any other
    -- text, as a database name on the default Unix socket), which the options table covers.
    if url and not (url:find("^postgresql://") or url:find("^postgres://")) then
        raise(fname, "expected a postgres:// or postgresql:// URL, got '" .. url .. "'")
    end
    for k, v in pairs(options) do
        local key = OPTIONS[k]
        if key == nil and not POOL_OPTIONS[k] then raise(fname, "unknown option '" .. tostring(k) .. "'") end
        if type(key) == "string" then
            if type(v) ~= "string" and type(v) ~= "number" then
                raise(fname, "option '" .. k .. "' must be a string")
            end
            keys[#keys + 1], values[#values + 1] = key, tostring(v)
        end
    end
    keys[#keys + 1], values[#values + 1] = "client_encoding", "UTF8"
    return keys, values, check_ms(options.timeout, "timeout", fname) or 10000,
        check_ms(options.queryTimeout, "queryTimeout", fname) or 0, options.decodeJson ~= false,
        options.prepare ~= false
end

--- Opens a connection: the connection, or nil and an error table.
function postgres.connect(options)
    return core.connect(params(options, "postgres.connect"))
end

local methods = core.methods
local reset = methods._reset

-- Connections that LISTEN: they are not handed back to a pool, and not connected again by
-- themselves (a new session would not listen). Weak keys: they may go.
local listening = setmetatable({}, { __mode = "k" })

local cfetch = methods._fetch
local sqlrows = require "luaio.sqlrows"

-- Reads and drops the rows that a db:rows loop left early did not read (err.streaming: the
-- stream's number), so that the connection takes the next query. A timeout while draining
-- closes the connection: the next call connects again.
local function drain_rows(db, id)
    return sqlrows.drain(cfetch, db, id)
end

-- The C method f, first draining the rows of a db:rows loop left early, and connecting again
-- when the connection was lost before the call (err.lost: nothing was sent). A call in flight
-- when the connection drops gets its error, never a retry.
local function reconnecting(f, no_reconnect)
    return function(db, ...)
        local r, err = f(db, ...)
        if err and err.streaming then
            drain_rows(db, err.streaming)
            r, err = f(db, ...)
        end
        if err and err.lost and not listening[db] and not no_reconnect then
            local ok, rerr = reset(db)
            if not ok then return nil, rerr end
            return f(db, ...)
        end
        return r, err
    end
end
local function count(n, what)
    return ("%d %s%s"):format(n, what, n == 1 and "" or "s")
end

-- A call whose parameters do not match the statement's placeholders is a mistake in the
-- program: it raises. The server finds it out: too few are 08P01 "bind message supplies 1
-- parameters, but prepared statement ... requires 2"; too many, 42P18 "could not determine data
-- type of parameter $3" for a $3 that the SQL text does not hold (nor any higher one).
local function check_count(err, fname, sql, n)
    local state = err and err.sqlstate
    if state == "08P01" then
        local got, want = err.message:match("^bind message supplies (%d+) parameters?, but .* requires (%d+)$")
        if got then
            raise(fname, ("the statement has %s, the call gave %s"):format(count(tonumber(want), "placeholder"),
                count(tonumber(got), "parameter")))
        end
    elseif state == "42P18" then
        local k = tonumber(err.message:match("^could not determine data type of parameter %$(%d+)$"))
        if type(sql) == "table" then sql = sql[1] or sql.sql end
        if k and k <= n and type(sql) == "string" then
            local most = 0
            for d in sql:gmatch("%$(%d+)") do most = math.max(most, tonumber(d)) end
            if k > most then
                raise(fname, ("the statement has %s, the call gave %s"):format(count(most, "placeholder"),
                    count(n, "parameter")))
            end
        end
    end
end

-- f(db, sql, ...), raising when the parameters do not match the placeholders.
local function counted(f, fname)
    return function(db, sql, ...)
        local r, err = f(db, sql, ...)
        if err then check_count(err, fname, sql, select("#", ...)) end
        return r, err
    end
end

methods.query = counted(reconnecting(methods.query), "query")
methods.exec = counted(reconnecting(methods.exec), "exec")
methods._copy_start = reconnecting(methods._copy_start)
methods._prepare = reconnecting(methods._prepare)
methods.wait = reconnecting(methods.wait, true)
local crows = reconnecting(methods._rows)

local copy_start, copy_put, copy_end, copy_get = methods._copy_start, methods._copy_put, methods._copy_end, methods._copy_get
local exec, status = methods.exec, methods.status

-- Prepared statements ------------------------------------------------------

local Statement = {}
Statement.__index = Statement
local statement_count = 0

--- Prepares sql on the server: a statement whose query(...) sends only the parameters.
function methods.prepare(db, sql)
    statement_count = statement_count + 1
    local name = "luaio_" .. statement_count
    local ok, err = methods._prepare(db, name, sql)
    if not ok then return nil, err end
    return setmetatable({ db = db, name = name, sql = sql }, Statement)
end

local cexecute = methods._execute

-- Runs the statement; on a connection lost before the call, connects again and prepares it anew.
local function execute(self, ms, ...)
    local db, name = self.db, self.name
    if not name then raise("query", "the statement was closed") end
    local rows, err = cexecute(db, name, ms, ...)
    if err and err.streaming then
        drain_rows(db, err.streaming)
        rows, err = cexecute(db, name, ms, ...)
    end
    if err then check_count(err, "query", self.sql, select("#", ...)) end
    if err and err.lost and not listening[db] then
        local ok, rerr = reset(db)
        if not ok then return nil, rerr end
        ok, rerr = methods._prepare(db, name, self.sql)
        if not ok then return nil, rerr end
        return cexecute(db, name, ms, ...)
    end
    return rows, err
end

--- The rows of the statement with these parameters (the connection's queryTimeout);
--- st:queryTimeout(ms, ...) with another timeout.
function Statement:query(...)
    return execute(self, nil, ...)
end

function Statement:queryTimeout(ms, ...)
    return execute(self, ms, ...)
end

--- Rows affected by the statement with these parameters.
function Statement:exec(...)
    local rows, err = execute(self, nil, ...)
    if not rows then return nil, err end
    return rows.affected
end

--- Deallocates the statement on the server.
function Statement:close()
    local name = self.name
    if not name then return true end
    self.name = nil
    return exec(self.db, "DEALLOCATE " .. name)
end

-- Streaming rows -------------------------------------------------------------

--- for row, err in db:rows(sql, ...) do ... end: the rows of a query one at a time (libpq's
--- single-row mode), so a result larger than memory can be read. A failure ends the loop with
--- one last (false, err). A loop left early (break, an error) leaves the rest unread: the next
--- call on the connection reads and drops it first. sql may be {sql, timeout = ms}: the timeout
--- bounds each wait for rows, not the time the loop body takes.
function methods.rows(db, sql, ...)
    local id, err = crows(db, sql, ...)
    local n = select("#", ...)
    local function fetch(d, i, discard)
        local b, e = cfetch(d, i, discard)
        if not b then check_count(e, "rows", sql, n) end
        return b, e
    end
    return sqlrows.iterate(fetch, db, id, err)
end

-- Transactions -------------------------------------------------------------

local function rollback(db)
    if status(db) ~= "lost" and status(db) ~= "closed" then exec(db, "ROLLBACK") end
end

--- Runs fn(db, ...) in a transaction: commits when it returns, rolls back when it raises (the
--- error is raised again), when it returns nil and an error (returned), or when a statement in
--- it failed. Returns fn's results.
function methods.transaction(db, fn, ...)
    if type(fn) ~= "function" then raise("transaction", "expected a function, got " .. type(fn)) end
    local s = status(db)
    if s == "transaction" or s == "failed" then raise("transaction", "the connection is already in a transaction") end
    local ok, err = exec(db, "BEGIN")
    if not ok then return nil, err end
    local r = { pcall(fn, db, ...) }
    if not r[1] then
        rollback(db)
        error(r[2], 0)
    end
    if r[2] == nil and r[3] ~= nil then
        rollback(db)
        return nil, r[3]
    end
    -- A db:rows loop left early inside fn: its rows go first (a timeout there loses the session).
    local id = db:_streaming()
    if id then drain_rows(db, id) end
    if status(db) == "failed" then
        rollback(db)
        return nil, new_error("EPG", "a statement of the transaction failed; rolled back", { sqlstate = "25P02" })
    end
    -- A session lost inside fn took the transaction with it: COMMIT must not go to a new one
    -- (it would say nothing was in progress, and the call would look like a success).
    local s2 = status(db)
    if s2 == "lost" or s2 == "closed" then
        return nil, new_error("ECONNRESET", "the connection was lost during the transaction; nothing was committed")
    end
    ok, err = exec(db, "COMMIT")
    if not ok then
        rollback(db)
        return nil, err
    end
    return unpack(r, 2, table.maxn(r))
end

-- LISTEN / NOTIFY ----------------------------------------------------------

--- LISTEN on a channel; db:wait(ms) then returns its notifications.
function methods.listen(db, channel)
    local ok, err = exec(db, "LISTEN " .. postgres.quoteIdent(channel))
    if ok then listening[db] = true end
    return ok and true, err
end

function methods.unlisten(db, channel)
    local ok, err = exec(db, "UNLISTEN " .. (channel and postgres.quoteIdent(channel) or "*"))
    return ok and true, err
end

--- NOTIFY channel with payload (pg_notify: the payload is a parameter).
function methods.notify(db, channel, payload)
    local ok, err = db:query("select pg_notify($1, $2)", channel, payload or "")
    return ok and true, err
end

-- COPY -----------------------------------------------------------------------

-- Reads what remains of a COPY TO STDOUT (after the caller stopped wanting it).
local function drain(db)
    while true do
        local chunk, n = copy_get(db)
        if chunk == false then return true end
        if chunk == nil then return nil, n end
    end
end

--- COPY ... FROM STDIN from source: a string, an array of strings, or a function that returns
--- the next chunk (nil at the end; it may wait). Returns the rows copied, or nil and an error.
--- A source that raises aborts the COPY (the error is raised again).
function methods.copyIn(db, sql, source)
    local st = type(source)
    if st ~= "string" and st ~= "table" and st ~= "function" then
        raise("copyIn", "expected a string, an array of strings or a function as the source, got " .. st)
    end
    local mode, err = copy_start(db, sql)
    if not mode then return nil, err end
    if mode ~= "in" then
        drain(db)
        return nil, new_error("EPG", "copyIn needs COPY ... FROM STDIN")
    end
    local ok, perr = pcall(function()
        if st == "string" then
            local _, e = copy_put(db, source)
            return e
        end
        local i = 0
        while true do
            local chunk
            if st == "table" then
                i = i + 1
                chunk = source[i]
            else
                chunk = source()
            end
            if chunk == nil then return end
            local _, e = copy_put(db, chunk)
            if e then return e end
        end
    end)
    if not ok then
        copy_end(db, "copy source failed")
        error(perr, 0)
    end
    if perr then
        copy_end(db, perr.message)
        return nil, perr
    end
    return copy_end(db)
end

--- COPY ... TO STDOUT into sink(chunk) (one or more rows per chunk; it may wait). Returns the
--- rows copied, or nil and an error. A sink that raises stops the COPY (raised again).
function methods.copyOut(db, sql, sink)
    if type(sink) ~= "function" then raise("copyOut", "expected a function as the sink, got " .. type(sink)) end
    local mode, err = copy_start(db, sql)
    if not mode then return nil, err end
    if mode ~= "out" then
        copy_end(db, "copyOut needs COPY ... TO STDOUT")
        return nil, new_error("EPG", "copyOut needs COPY ... TO STDOUT")
    end
    while true do
        local chunk, n = copy_get(db)
        if chunk == false then return n end
        if chunk == nil then return nil, n end
        if chunk ~= true then
            local ok, e = pcall(sink, chunk)
            if not ok then
                drain(db)
                error(e, 0)
            end
        end
    end
end

-- Pools --------------------------------------------------------------------

--- A bounded pool of connections (lib/luaio/pool.lua): connect options plus size (32),
--- idleTimeout (ms, 60000), maxWaiters (1024), waitTimeout (ms, 10000).
function postgres.pool(options)
    if type(options) == "string" then options = { url = options } end
    if type(options) ~= "table" then raise("postgres.pool", "expected an options table, got " .. type(options)) end
    params(options, "postgres.pool") -- checks the options now, not at the first connect
    local conn_options = require("luaio.pool").connect_options(options)
    local p = require("luaio.pool").new({
        name = "postgres.pool", size = options.size, idleTimeout = options.idleTimeout,
        maxWaiters = options.maxWaiters, waitTimeout = options.waitTimeout,
    }, {
        connect = function() return postgres.connect(conn_options) end,
        close = function(db) db:close() end,
        healthy = function(db) return db:reusable() end,
        -- A connection given back inside a db:rows loop (pool:with(fn) where fn left the loop
        -- early, or raised in it) has the rest of its rows read and dropped first.
        reusable = function(db)
            local id = db:_streaming()
            if id then drain_rows(db, id) end
            return not listening[db] and db:reusable()
        end,
        idle = function(db, is_idle)
            if is_idle then db:unref() else db:ref() end
        end,
    })
    return require("luaio.pool").sql(p)
end

return postgres
