--- mysql: MySQL and MariaDB on MariaDB Connector/C's non-blocking API (docs/mysql.md).
--
--   local db, err = mysql.connect{host, port, user, password, database, charset, timeout, queryTimeout, tls}
--   local db, err = mysql.connect("mysql://user:password@host:port/database")
--   local rows, err = db:query("select * from t where id = ?", id)   -- rows[i].column, rows.affected
--   local rows, err = db:query({"select sleep(5)", timeout = 100})   -- killed on the server
--   local n, err = db:exec("update t set x = ?", x)                  -- rows affected
--   for row, err in db:rows(sql, ...) do ... end                     -- streamed; false, err on failure
--   db:transaction(function(db) ... end)                             -- commit; rollback on error
--   local pool = mysql.pool{...connect options..., size = 32}        -- pool:query, pool:with ...
--   mysql.null                                                       -- SQL NULL (json.null)
--
-- The connection is a C++ object (modules/mysql.cpp, luaio.mysql); this file adds the options,
-- host names, transactions, reconnecting after a lost connection, and the pool.
local core = require "luaio.mysql"
local errors = require "luaio.errors"
local json = require "json"

local raise, new_error = errors.raise, errors.new
local type, pairs, pcall, error, tostring, tonumber, select, unpack = type, pairs, pcall, error, tostring, tonumber,
    select, unpack

local mysql = {}

--- SQL NULL in rows and parameters: the same value as json.null, so rows encode to JSON with nulls.
mysql.null = json.null

local OPTIONS = {
    host = true, port = true, user = true, password = true, database = true, charset = true, timeout = true,
    queryTimeout = true, url = true, tls = true,
}
local TLS_OPTIONS = { ca = "string", cert = "string", key = "string", verify = "boolean" }

-- The `tls` option as core.connect takes it: nil (none) or {ca, cert, key, verify}.
local function check_tls(v, fname)
    if v == nil or v == false then return nil end
    if v == true then return {} end
    if type(v) ~= "table" then
        raise(fname, "option 'tls' must be true or a table of tls options, got " .. type(v))
    end
    for k, x in pairs(v) do
        local want = TLS_OPTIONS[k]
        if not want then raise(fname, "unknown tls option '" .. tostring(k) .. "'") end
        if type(x) ~= want then raise(fname, ("tls option '%s' must be a %s, got %s"):format(k, want, type(x))) end
    end
    return v
end

-- What a pool's options add (lib/luaio/pool.lua).
local POOL_OPTIONS = require("luaio.pool").KEYS

local function unescape(s)
    return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

-- mysql://user:password@host:port/database?charset=utf8mb4 into options.
local function parse_url(url, fname)
    local rest = url:match("^mysql://(.*)$") or url:match("^mariadb://(.*)$")
    if not rest then raise(fname, "expected a mysql:// URL, got '" .. url .. "'") end
    local o = {}
    local query
    rest, query = rest:match("^([^?]*)%??(.*)$")
    local auth, hostpart = rest:match("^(.*)@([^@]*)$")
    if not auth then hostpart = rest end
    if auth then
        local u, p = auth:match("^([^:]*):(.*)$")
        o.user, o.password = unescape(u or auth), p and unescape(p) or nil
    end
    local hp, db = hostpart:match("^([^/]*)/?(.*)$")
    if db ~= "" then o.database = unescape(db) end
    local h6, p6 = hp:match("^%[(.-)%]:?(%d*)$")
    local host, port = h6, p6
    if not host then host, port = hp:match("^([^:]*):?(%d*)$") end
    if host and host ~= "" then o.host = host end
    if port and port ~= "" then o.port = tonumber(port) end
    for k, v in query:gmatch("([^&=]+)=([^&]*)") do
        if k == "charset" then o.charset = unescape(v) end
    end
    return o
end

local function check_ms(v, name, fname)
    if v ~= nil and (type(v) ~= "number" or v < 0) then
        raise(fname, "option '" .. name .. "' must be a non-negative number of milliseconds")
    end
    return v
end

-- The connect options, checked; a URL's parts are overridden by the options given beside it.
local function connect_options(options, fname)
    if type(options) == "string" then options = { url = options } end
    if type(options) ~= "table" then raise(fname, "expected an options table or a mysql:// URL, got " .. type(options)) end
    local o = {}
    if options.url ~= nil then
        if type(options.url) ~= "string" then raise(fname, "option 'url' must be a string") end
        o = parse_url(options.url, fname)
    end
    for k, v in pairs(options) do
        if not OPTIONS[k] and not POOL_OPTIONS[k] then raise(fname, "unknown option '" .. tostring(k) .. "'") end
        if OPTIONS[k] and k ~= "url" then o[k] = v end
    end
    for _, k in ipairs({ "host", "user", "password", "database", "charset" }) do
        if o[k] ~= nil and type(o[k]) ~= "string" then raise(fname, "option '" .. k .. "' must be a string") end
    end
    if o.port ~= nil and type(o.port) ~= "number" then raise(fname, "option 'port' must be a number") end
    check_ms(o.timeout, "timeout", fname)
    check_ms(o.queryTimeout, "queryTimeout", fname)
    o.tls = check_tls(o.tls, fname)
    return o
end

-- The address to connect to: libmariadb resolves names with a blocking getaddrinfo (and takes
-- "localhost" for its Unix socket), so names go through the dns module first.
local function resolve(host)
    if host == nil then return "127.0.0.1" end
    if require("tcp").isIP(host) ~= 0 then return host end
    local addrs, err = require("dns").lookup(host)
    if not addrs or #addrs == 0 then
        return nil, err or new_error("ENOTFOUND", "host not found", { host = host })
    end
    local a = addrs[1]
    return type(a) == "table" and a.address or a
end

--- Opens a connection: the connection, or nil and an error table.
function mysql.connect(options)
    local o = connect_options(options, "mysql.connect")
    local host, err = resolve(o.host)
    if not host then return nil, err end
    return core.connect(host, o.port or 3306, o.user or "", o.password or "", o.database, o.charset,
        o.timeout or 10000, o.queryTimeout or 0, o.tls)
end

-- A query that timed out goes on on the server: it is killed from a second connection. C++ calls
-- this in a task of its own (the timed-out connection itself is closed), with the connection's
-- own TLS options (a user created with REQUIRE SSL can connect only so).
core.setKiller(function(host, port, user, password, thread_id, tls)
    local k = core.connect(host, port, user, password, nil, nil, 2000, 2000, tls)
    if k then
        k:_query("KILL QUERY " .. ("%d"):format(thread_id))
        k:close()
    end
end)

local methods = core.methods

-- Connections in a transaction (weak keys: they may go).
local in_transaction = setmetatable({}, { __mode = "k" })
local _query, usable, _rows, _fetch, reconnect = methods._query, methods.usable, methods._rows, methods._fetch,
    methods.reconnect
local sqlrows = require "luaio.sqlrows"

local function count(n, what)
    return ("%d %s%s"):format(n, what, n == 1 and "" or "s")
end

-- A call with another number of parameters than the statement has placeholders is a mistake
-- in the program: it raises (the connector only finds out once the statement is prepared).
local function check_count(err, fname)
    if err and err.placeholders then
        raise(fname, ("the statement has %s, the call gave %s"):format(count(err.placeholders, "placeholder"),
            count(err.parameters, "parameter")))
    end
end

-- The C method f(db, ...), first reading and dropping the rows of a db:rows loop left early
-- (err.streaming: the stream's number), so that the connection takes the call.
local function after_stream(f, db, ...)
    local r, err = f(db, ...)
    if err and err.streaming then
        sqlrows.drain(_fetch, db, err.streaming)
        if f ~= reconnect and not usable(db) and not in_transaction[db] then
            local ok, rerr = reconnect(db)
            if not ok then return nil, rerr end
        end
        r, err = f(db, ...)
    end
    return r, err
end

local ping = methods.ping
function methods.ping(db, ...)
    return after_stream(ping, db, ...)
end
function methods.reconnect(db)
    return after_stream(reconnect, db)
end


--- The rows of sql with these parameters (`?` placeholders, sent apart through a prepared
--- statement), or nil and an error. sql may be {sql, timeout = ms}. A connection that was lost is
--- opened again first, unless it was in a transaction.
-- The SQL text and timeout of a query's first argument (a string, or {sql, timeout = ms}),
-- after connecting again when the connection was lost (not inside a transaction).
local function prepare_call(db, sql, fname)
    local timeout
    if type(sql) == "table" then
        timeout = sql.timeout
        check_ms(timeout, "timeout", fname)
        sql = sql[1]
    end
    if type(sql) ~= "string" then raise(fname, "expected the SQL text as argument 1, got " .. type(sql)) end
    if not usable(db) and not in_transaction[db] and not db:_streaming() then
        local ok, err = db:reconnect()
        if not ok then return nil, err end
    end
    return sql, timeout
end

function methods.query(db, sql, ...)
    local text, timeout = prepare_call(db, sql, "db:query")
    if not text then return nil, timeout end
    local rows, err = after_stream(_query, db, text, timeout, ...)
    check_count(err, "db:query")
    return rows, err
end

--- for row, err in db:rows(sql, ...) do ... end: the rows of the query one at a time, read from
--- the socket as the loop goes (mysql_use_result, or a statement's result not stored), so a
--- result larger than memory can be read. A failure ends the loop with one last (false, err). A
--- loop left early leaves the rest unread: the next call on the connection reads and drops it.
function methods.rows(db, sql, ...)
    local text, timeout = prepare_call(db, sql, "db:rows")
    if not text then return sqlrows.iterate(_fetch, db, nil, timeout) end
    local id, err = after_stream(_rows, db, text, timeout, ...)
    check_count(err, "db:rows")
    return sqlrows.iterate(_fetch, db, id, err)
end

--- The number of rows sql changed, or nil and an error.
function methods.exec(db, sql, ...)
    local rows, err = db:query(sql, ...)
    if not rows then return nil, err end
    return rows.affected
end

--- Whether a pool may hand the connection out again: open, not lost, not in a transaction.
function methods.reusable(db)
    return usable(db) and not in_transaction[db] and not db:_streaming()
end

local function finish_transaction(db, sql)
    in_transaction[db] = nil
    -- A db:rows loop left early inside fn: its rows go first (not through after_stream, which
    -- would connect again if that lost the session, and COMMIT on the new one).
    local id = db:_streaming()
    if id then sqlrows.drain(_fetch, db, id) end
    if usable(db) then return _query(db, sql) end
    return nil, new_error("EMYSQL", "the connection was lost during the transaction", { errno = 2013, sqlstate = "HY000" })
end

--- Runs fn(db, ...) in a transaction: commits when it returns, rolls back when it raises (the
--- error is raised again) or returns nil and an error (returned). Returns fn's results.
function methods.transaction(db, fn, ...)
    if type(fn) ~= "function" then raise("db:transaction", "expected a function, got " .. type(fn)) end
    if in_transaction[db] then raise("db:transaction", "the connection is already in a transaction") end
    local ok, err = db:query("START TRANSACTION")
    if not ok then return nil, err end
    in_transaction[db] = true
    local r = { pcall(fn, db, ...) }
    if not r[1] then
        finish_transaction(db, "ROLLBACK")
        error(r[2], 0)
    end
    if r[2] == nil and r[3] ~= nil then
        finish_transaction(db, "ROLLBACK")
        return nil, r[3]
    end
    ok, err = finish_transaction(db, "COMMIT")
    if not ok then return nil, err end
    return unpack(r, 2, table.maxn(r))
end

-- The pool --------------------------------------------------------------------

--- A bounded pool of connections (lib/luaio/pool.lua): connect options plus size (32),
--- idleTimeout (ms, 60000), maxWaiters (1024), waitTimeout (ms, 10000).
function mysql.pool(options)
    if type(options) == "string" then options = { url = options } end
    if type(options) ~= "table" then raise("mysql.pool", "expected an options table, got " .. type(options)) end
    connect_options(options, "mysql.pool") -- checks the options now, not at the first connect
    local conn_options = require("luaio.pool").connect_options(options)
    local p = require("luaio.pool").new({
        name = "mysql.pool", size = options.size, idleTimeout = options.idleTimeout,
        maxWaiters = options.maxWaiters, waitTimeout = options.waitTimeout,
    }, {
        connect = function() return mysql.connect(conn_options) end,
        close = function(db) db:close() end,
        healthy = function(db) return usable(db) end,
        -- A connection given back inside a db:rows loop (pool:with(fn) where fn left the loop
        -- early, or raised in it) has the rest of its rows read and dropped first.
        reusable = function(db)
            local id = db:_streaming()
            if id then sqlrows.drain(_fetch, db, id) end
            return db:reusable()
        end,
        -- An idle pooled connection does not keep the process alive.
        idle = function(db, is_idle)
            if is_idle then db:unref() else db:ref() end
        end,
    })
    return require("luaio.pool").sql(p)
end

return mysql
