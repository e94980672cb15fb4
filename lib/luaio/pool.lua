--- luaio.pool: the one bounded pool of connections, under redis.pool, postgres.pool and mysql.pool.
--
--   local p = Pool.new({ name = "postgres.pool", size = 32, idleTimeout = 60000,
--                        maxWaiters = 1024, waitTimeout = 10000 },
--                      { connect = fn() -> conn | nil, err,  close = fn(conn),
--                        healthy = fn(conn, idle_ms) -> bool,   -- optional: before reuse
--                        reusable = fn(conn) -> bool,           -- optional: at release
--                        idle = fn(conn, is_idle) })            -- optional: unref while idle
--   local conn, err = p:acquire()   p:release(conn)
--   p:with(fn, ...)   p:close()   p:stats()
--
-- At most `size` connections are open or being opened. A caller that finds none free waits
-- (parks its task) in line, first come first served, for at most waitTimeout ms; at most
-- maxWaiters wait, later callers get EBUSY at once. A released connection goes straight to the
-- first waiter; one that is not reusable (mid-transaction, subscribed, broken: the module's
-- reusable hook says) is closed, and its place goes to the first waiter, who opens a new one.
-- Idle connections are reused newest first (warm ones), and closed after idleTimeout ms.
local core = require "luaio.core"
local timer = require "timer"
local system = require "system"
local errors = require "luaio.errors"

local suspend, current, ready = core.suspend, core.current, core.ready
local new_error = errors.new
local type, error, pcall, select, setmetatable, format = type, error, pcall, select, setmetatable, string.format
local remove = table.remove
local max, min, floor = math.max, math.min, math.floor

local M = {}

local Pool = {}
Pool.__index = Pool

local function now_ms()
    return system.hrtime() / 1e6
end

-- What a waiter is woken with when it gets a place to open a connection in, not a connection.
local PLACE = {}

local DEFAULTS = { size = 32, idleTimeout = 60000, maxWaiters = 1024, waitTimeout = 10000 }
-- The pool's own option names: a module's pool(opts) takes these beside its connect options
-- (and checks the union for misspelled names itself).
M.KEYS = { size = true, idleTimeout = true, maxWaiters = true, waitTimeout = true }

--- A copy of a module's pool(options) without the pool's own keys: its connect options.
function M.connect_options(options)
    local c = {}
    for k, v in pairs(options) do
        if not M.KEYS[k] then c[k] = v end
    end
    return c
end

local function check_count(opts, key, least, fname)
    local v = opts[key]
    if v == nil then return DEFAULTS[key] end
    if type(v) ~= "number" or v ~= v or v < least or (v ~= math.huge and v % 1 ~= 0) then
        error(format("%s: option '%s' must be an integer >= %d, got %s", fname, key, least, tostring(v)), 4)
    end
    return v
end

--- Makes a pool. opts: the options above (other keys are ignored: a module passes its whole
--- options table, connect options and all);
--- hooks: connect and close (required), healthy, reusable and idle (optional).
function M.new(opts, hooks)
    opts = opts or {}
    if type(opts) ~= "table" then error("pool.new: expected an options table", 2) end
    local name = opts.name or "pool"
    if type(hooks) ~= "table" or type(hooks.connect) ~= "function" or type(hooks.close) ~= "function" then
        error("pool.new: hooks.connect and hooks.close must be functions", 2)
    end
    local p = setmetatable({
        name = name,
        size = check_count(opts, "size", 1, name),
        idleTimeout = check_count(opts, "idleTimeout", 0, name),
        maxWaiters = check_count(opts, "maxWaiters", 0, name),
        waitTimeout = check_count(opts, "waitTimeout", 0, name),
        hooks = hooks,
        idle = {},  -- { conn, since } newest last
        out = {},   -- conn -> true while handed out
        open = 0,   -- connections open or being opened (idle + busy + places handed to waiters)
        busy = 0,
        waiters = { first = 1, last = 0 },
        waiting = 0,
        closed = false,
        sweeper = nil,
    }, Pool)
    return p
end

local function check_self(self, fname)
    if getmetatable(self) ~= Pool then error(fname .. ": expected a pool as self (use p:" .. fname .. "(...))", 3) end
end

-- Closes one connection that leaves the pool (its place is given back by the caller).
local function drop(self, conn)
    local ok, err = pcall(self.hooks.close, conn)
    if not ok then core.report(self.name .. ": closing a connection failed: " .. tostring(err)) end
end

local function set_idle(self, conn, is_idle)
    local f = self.hooks.idle
    if f then f(conn, is_idle) end
end

local function stop_sweeper(self)
    if self.sweeper then
        self.sweeper:stop()
        self.sweeper = nil
    end
end

-- Closes the idle connections older than idleTimeout (the oldest are first in the list).
local function sweep(self)
    local idle, t, limit = self.idle, now_ms(), self.idleTimeout
    while idle[1] and t - idle[1].since >= limit do
        local e = remove(idle, 1)
        self.open = self.open - 1
        drop(self, e.conn)
    end
    if not idle[1] then stop_sweeper(self) end
end

local function start_sweeper(self)
    if self.sweeper or self.idleTimeout == math.huge then return end
    local every = max(50, min(5000, floor(self.idleTimeout / 4)))
    self.sweeper = timer.setInterval(every, sweep, self)
    self.sweeper:unref() -- an idle pool does not keep the process alive
end

-- The first waiter still in line (one that timed out is skipped), taken out of the line.
local function next_waiter(self)
    local q = self.waiters
    while q.first <= q.last do
        local w = q[q.first]
        q[q.first] = nil
        q.first = q.first + 1
        if not w.done then
            w.done = true
            self.waiting = self.waiting - 1
            if w.timer then w.timer:stop() end
            return w
        end
    end
end

-- Opens a connection in a place already counted in self.open and self.busy.
local function open_one(self)
    local conn, err = self.hooks.connect()
    if conn then
        self.out[conn] = true
        return conn
    end
    self.open = self.open - 1
    self.busy = self.busy - 1
    -- The place is free again: the next waiter may try its own luck.
    local w = next_waiter(self)
    if w then
        self.open = self.open + 1
        self.busy = self.busy + 1
        ready(w.co, PLACE)
    end
    return nil, err
end

local function wait(self)
    if self.waiting >= self.maxWaiters or self.waitTimeout == 0 then
        return nil, new_error("EBUSY", format("%s: all %d connections are busy and %d callers wait already",
            self.name, self.size, self.waiting))
    end
    local co = current()
    if not co then error(self.name .. ": acquire: cannot wait outside a task", 3) end
    local w = { co = co, done = false }
    local q = self.waiters
    q.last = q.last + 1
    q[q.last] = w
    self.waiting = self.waiting + 1
    if self.waitTimeout ~= math.huge then
        local ms = self.waitTimeout
        w.timer = timer.setTimeout(ms, function()
            if w.done then return end
            w.done = true
            self.waiting = self.waiting - 1
            ready(co, nil, new_error("ETIMEDOUT", format("%s: no connection free within %d ms", self.name, ms)))
        end)
    end
    local conn, err = suspend()
    if conn == PLACE then return open_one(self) end
    return conn, err
end

--- A connection: an idle one, a new one while fewer than `size` are open, else the first one
--- released (waiting for it). Returns conn, or nil and an error table.
function Pool:acquire()
    check_self(self, "acquire")
    if self.closed then return nil, new_error("ECANCELED", self.name .. " is closed") end
    local idle, hooks = self.idle, self.hooks
    local t
    while idle[1] do
        local e = remove(idle)
        t = t or now_ms()
        local idle_ms = t - e.since
        if idle_ms >= self.idleTimeout or (hooks.healthy and not hooks.healthy(e.conn, idle_ms)) then
            self.open = self.open - 1
            drop(self, e.conn)
        else
            if not idle[1] then stop_sweeper(self) end
            set_idle(self, e.conn, false)
            self.busy = self.busy + 1
            self.out[e.conn] = true
            return e.conn
        end
    end
    stop_sweeper(self)
    if self.open < self.size then
        self.open = self.open + 1
        self.busy = self.busy + 1
        return open_one(self)
    end
    return wait(self)
end

--- Gives a connection back: to the first waiter, to the idle list, or closed when the module
--- says it is not reusable (or the pool is closed).
function Pool:release(conn)
    check_self(self, "release")
    if not self.out[conn] then error(self.name .. ": release: not a connection handed out by this pool", 2) end
    self.out[conn] = nil
    local reusable = self.hooks.reusable
    local ok_reuse = not self.closed
    if ok_reuse and reusable then
        local ok, r = pcall(reusable, conn)
        ok_reuse = ok and r
    end
    if not ok_reuse then
        drop(self, conn)
        self.busy = self.busy - 1
        self.open = self.open - 1
        local w = not self.closed and next_waiter(self)
        if w then
            -- The place goes to the waiter, who opens a new connection in it.
            self.open = self.open + 1
            self.busy = self.busy + 1
            ready(w.co, PLACE)
        end
        return
    end
    local w = next_waiter(self)
    if w then
        self.out[conn] = true
        ready(w.co, conn)
        return
    end
    self.busy = self.busy - 1
    set_idle(self, conn, true)
    self.idle[#self.idle + 1] = { conn = conn, since = now_ms() }
    start_sweeper(self)
end

local function finish(self, conn, ok, ...)
    self:release(conn)
    if not ok then error((...), 0) end
    return ...
end

--- fn(conn, ...) on a connection of the pool, given back afterwards, also when fn raises (the
--- error is raised again). Returns fn's results, or nil and an error table when no connection.
function Pool:with(fn, ...)
    check_self(self, "with")
    if type(fn) ~= "function" then error(self.name .. ": with: expected a function as argument 1, got " .. type(fn), 2) end
    local conn, err = self:acquire()
    if not conn then return nil, err end
    return finish(self, conn, pcall(fn, conn, ...))
end

--- Closes the idle connections now and the busy ones when they are released; callers waiting
--- get ECANCELED, later acquires too.
function Pool:close()
    check_self(self, "close")
    if self.closed then return end
    self.closed = true
    stop_sweeper(self)
    local idle = self.idle
    self.idle = {}
    for i = 1, #idle do
        self.open = self.open - 1
        drop(self, idle[i].conn)
    end
    local w = next_waiter(self)
    while w do
        ready(w.co, nil, new_error("ECANCELED", self.name .. " was closed"))
        w = next_waiter(self)
    end
end

--- {size, open, idle, busy, waiting}.
function Pool:stats()
    check_self(self, "stats")
    return { size = self.size, open = self.open, idle = #self.idle, busy = self.busy, waiting = self.waiting }
end

-- The face of a pool of SQL connections (postgres.pool, mysql.pool): query, exec and
-- transaction each run on a connection of the pool, given back afterwards; the rest is the pool's.
local SqlPool = {}
SqlPool.__index = SqlPool

local function sql_query(db, sql, ...) return db:query(sql, ...) end
local function sql_exec(db, sql, ...) return db:exec(sql, ...) end
local function sql_transaction(db, fn, ...) return db:transaction(fn, ...) end

function SqlPool:query(sql, ...) return self.pool:with(sql_query, sql, ...) end
function SqlPool:exec(sql, ...) return self.pool:with(sql_exec, sql, ...) end
function SqlPool:transaction(fn, ...) return self.pool:with(sql_transaction, fn, ...) end
function SqlPool:with(fn, ...) return self.pool:with(fn, ...) end

-- The loop of pool:rows: the next row of db:rows's loop (s.next, s.state), giving the connection
-- back after the last one (or a failure). One function for every loop, and the loop's state passed
-- to it (as luaio.sqlrows does, which says why): LuaJIT
-- specializes a compiled loop on the function it calls and keeps that function alive as long as
-- the trace lives, so a closure per loop that held the connection would never be collected.
local function rows_next(s)
    local row, e = s.next(s.state)
    local db = s.db
    if not row and db then
        s.db = nil
        s.pool:release(db)
    end
    return row, e
end

--- for row, err in pool:rows(sql, ...) do ... end: db:rows on a connection of the pool, held until
--- the last row or a failure. A loop left early holds it until the loop's state is garbage-collected;
--- then the connection is closed, not reused (its rows were not all read, and a finalizer cannot
--- wait to drain them). A loop that may break belongs in pool:with, which drains and reuses.
function SqlPool:rows(sql, ...)
    local pool = self.pool
    local db, err = pool:acquire()
    if not db then return require("luaio.sqlrows").failed(err) end
    local f, state = db:rows(sql, ...)
    local s = { next = f, state = state, db = db, pool = pool }
    s.held = newproxy(true)
    -- A finalizer's error would be raised wherever the collector happened to run: none leaves it.
    getmetatable(s.held).__gc = function()
        local d = s.db
        if d then
            s.db = nil
            local ok, e = pcall(d.close, d)
            if not ok then core.report(pool.name .. ": closing a connection failed: " .. tostring(e)) end
            pool:release(d)
        end
    end
    return rows_next, s
end
function SqlPool:acquire() return self.pool:acquire() end
function SqlPool:release(db) return self.pool:release(db) end
function SqlPool:close() return self.pool:close() end
function SqlPool:stats() return self.pool:stats() end

--- Wraps pool p (M.new) in that face.
function M.sql(p)
    return setmetatable({ pool = p }, SqlPool)
end

M.Pool = Pool
return M
