--- redis: a Redis client (see docs/redis.md).
--
--   local r, err = redis.connect{host =, port =, password =, username =, db =, timeout =, tls =, protocol =}
--   local v, err = r:call("SET", k, v)      r:get(k)  r:set(k, v, "EX", 10)  r:hgetall(k) ...
--   local results, err = r:pipeline(function(p) p:set(k, v) p:get(k) end)
--   local results, err = r:transaction(function(t) t:incr(k) t:get(k) end)   -- MULTI ... EXEC
--   r:subscribe(ch, ...)  r:psubscribe(pattern, ...)  r:unsubscribe(...)  r:punsubscribe(...)
--   for kind, channel, message, pattern in r:messages() do ... end
--   local pool = redis.pool{size = 32, idleTimeout = 60000, <connect options>}
--   pool:call("GET", k)  pool:get(k)  pool:with(function(r) ... end)  pool:close()
--
-- A connection is a C++ object (modules/redis.cpp, luaio.redis) that owns the socket: commands
-- of any number of tasks go out as they come and replies come back in order, so concurrent calls
-- on one connection pipeline by themselves. This file adds connecting (tcp or tls, AUTH, SELECT),
-- reconnecting for the next call after the connection dropped, the generated command methods,
-- pipelines, subscriptions and the pool.
local core = require "luaio.redis"
local lcore = require "luaio.core"
local errors = require "luaio.errors"

local type, select, setmetatable, getmetatable, pairs, tostring, unpack, next = type, select, setmetatable,
    getmetatable, pairs, tostring, unpack, next
local upper, format = string.upper, string.format
local current, suspend, ready = lcore.current, lcore.suspend, lcore.ready
local raise = errors.raise
local sleep = require("timer").sleep
local hrtime = require("system").hrtime
local function now_ms()
    return hrtime() / 1e6
end
local DOWN, MISUSE = core.DOWN, core.MISUSE

local redis = {}

--- redis.null: a nil element inside an array reply, a pipeline's or a transaction's results
--- (the same value as json.null).
redis.null = core.null

-- The Redis commands that are methods (r:get, p:set ...), after `COMMAND LIST` of Redis 7.0.
-- Others go through r:call(name, ...).
local COMMANDS = {}
for name in ([[
acl append asking auth bgrewriteaof bgsave bitcount bitfield bitfield_ro bitop bitpos blmove blmpop
blpop brpop brpoplpush bzmpop bzpopmax bzpopmin client cluster command config copy dbsize debug decr
decrby del discard dump echo eval eval_ro evalsha evalsha_ro exec exists expire expireat expiretime
failover fcall fcall_ro flushall flushdb function geoadd geodist geohash geopos georadius georadius_ro
georadiusbymember georadiusbymember_ro geosearch geosearchstore get getbit getdel getex getrange getset
hdel hello hexists hget hgetall hincrby hincrbyfloat hkeys hlen hmget hmset hrandfield hscan hset
hsetnx hstrlen hvals incr incrby incrbyfloat info keys lastsave latency lcs lindex linsert llen lmove
lmpop lolwut lpop lpos lpush lpushx lrange lrem lset ltrim memory mget migrate module move mset
msetnx multi object persist pexpire pexpireat pexpiretime pfadd pfcount pfmerge ping psetex publish
pubsub pttl quit randomkey readonly readwrite rename renamenx replicaof reset restore role rpop
rpoplpush rpush rpushx sadd save scan scard script sdiff sdiffstore select set setbit setex setnx
setrange shutdown sinter sintercard sinterstore sismember slowlog smembers smismember smove sort
sort_ro spop spublish srandmember srem sscan strlen substr sunion sunionstore swapdb time touch ttl
type unlink unwatch wait watch xack xadd xautoclaim xclaim xdel xgroup xinfo xlen xpending xrange
xread xreadgroup xrevrange xsetid xtrim zadd zcard zcount zdiff zdiffstore zincrby zinter zintercard
zinterstore zlexcount zmpop zmscore zpopmax zpopmin zrandmember zrange zrangebylex zrangebyscore
zrangestore zrank zrem zremrangebylex zremrangebyrank zremrangebyscore zrevrange zrevrangebylex
zrevrangebyscore zrevrank zscan zscore zunion zunionstore
]]):gmatch("%S+") do
    COMMANDS[name] = upper(name)
end

-- Connect options and their types.
local OPTIONS = {
    host = "string", port = "number", password = "string", username = "string", db = "number",
    timeout = "number", tls = true, -- tls: true or a table of tls.connect's options
    protocol = "number", -- 2 (RESP2, the default) or 3 (RESP3, through HELLO 3)
    -- the pool's
    size = "number", idleTimeout = "number", maxWaiters = "number", waitTimeout = "number",
}

local function check_options(o, fname, pool)
    if o == nil then
        o = {}
    elseif type(o) ~= "table" then
        raise(fname, "expected an options table as argument 1, got " .. type(o))
    end
    local copy = {}
    for k, v in pairs(o) do
        local want = OPTIONS[k]
        if want == nil or (not pool and (k == "size" or k == "idleTimeout" or k == "maxWaiters" or k == "waitTimeout")) then
            raise(fname, "unknown option '" .. tostring(k) .. "'")
        end
        if k == "tls" then
            if v ~= true and v ~= false and type(v) ~= "table" then
                raise(fname, "option 'tls' must be true or a table of tls options, got " .. type(v))
            end
        elseif type(v) ~= want then
            raise(fname, format("option '%s' must be a %s, got %s", k, want, type(v)))
        end
        copy[k] = v
    end
    copy.host = copy.host or "127.0.0.1"
    copy.port = copy.port or 6379
    if copy.timeout and copy.timeout < 0 then raise(fname, "option 'timeout' must not be negative") end
    if copy.protocol and copy.protocol ~= 2 and copy.protocol ~= 3 then
        raise(fname, "option 'protocol' must be 2 or 3, got " .. tostring(copy.protocol))
    end
    return copy
end

-- Subscribes a new connection to what the old one was subscribed to (set: name -> true). Returns
-- nil or the error. Messages published in between are lost (the server keeps none).
local function renew(self, c, cmd, setname, set)
    local names = {}
    for name in pairs(set) do names[#names + 1] = name end
    if #names == 0 then return nil end
    local res, err = c:send(#names, cmd, unpack(names))
    if not res then return err end
    local last = res[#res]
    if type(last) == "table" and last.name then return last end
    self[setname] = set
    return nil
end

-- Opens the socket (tcp, or tls with the `tls` option) and makes the connection ready: AUTH and
-- SELECT. Returns nil, or the error (the socket is then closed).
local function open(self)
    local o = self.opts
    local sock, err
    local topts = o.timeout and o.timeout > 0 and { connect_timeout = o.timeout } or nil
    if o.tls then
        local t = {}
        if type(o.tls) == "table" then
            for k, v in pairs(o.tls) do t[k] = v end
        end
        if topts then
            t.connect_timeout = topts.connect_timeout
            -- `timeout` bounds the whole connect, the handshake too.
            if t.handshakeTimeout == nil then t.handshakeTimeout = o.timeout end
        end
        sock, err = require("tls").connect(o.port, o.host, t)
    else
        sock, err = require("tcp").connect(o.port, o.host, topts)
    end
    if not sock then return err end
    local c = self[1]
    -- A new connection has no subscriptions: those of the old one are renewed below.
    local channels, patterns = self.channels, self.patterns
    self.channels, self.patterns = {}, {}
    if c then
        c:attach(sock)
    else
        c = core.conn(sock, o.timeout or 0)
        self[1] = c
    end
    local ok
    if o.protocol == 3 then
        -- HELLO 3 switches the connection to RESP3 and authenticates in the same round trip.
        if o.password then
            ok, err = c:call("HELLO", 3, "AUTH", o.username or "default", o.password)
        else
            ok, err = c:call("HELLO", 3)
        end
        if not ok then
            c:drop()
            return err
        end
    elseif o.password then
        if o.username then
            ok, err = c:call("AUTH", o.username, o.password)
        else
            ok, err = c:call("AUTH", o.password)
        end
        if not ok then
            c:drop()
            return err
        end
    end
    if o.db and o.db ~= 0 then
        ok, err = c:call("SELECT", o.db)
        if not ok then
            c:drop()
            return err
        end
        -- The connection's own database: not a change a pool must refuse.
        c:state(true)
    end
    err = renew(self, c, "SUBSCRIBE", "channels", channels) or renew(self, c, "PSUBSCRIBE", "patterns", patterns)
    if err then
        -- Kept for the next attempt.
        self.channels, self.patterns = channels, patterns
        c:drop()
        return err
    end
    -- Client-side caching goes on: the CLIENT TRACKING ON of the old connection is sent again
    -- (the drop queued an ("invalidate", null) message, as everything cached may be stale).
    local track = { c:tracking() }
    if track[1] then
        ok, err = c:call(unpack(track))
        if not ok then
            if not c:alive() then return err end
            -- Refused by the server (a REDIRECT to a client that is gone): the caller gets the
            -- error, and tracking stays off until sent again.
            c:tracking(false)
            return err
        end
    end
    return nil
end

-- The connection dropped: the first task reconnects, the others wait for it. Returns nil or the
-- error of the attempt.
local function reconnect(self)
    if self.closed then return errors.new("ECANCELED", "the redis connection was closed") end
    if self.connecting then
        local co = current()
        local w = self.waiting
        w[#w + 1] = co
        suspend()
        return self.connect_err or nil
    end
    self.connecting = true
    local err = open(self)
    self.connecting, self.connect_err = false, err or false
    local w = self.waiting
    self.waiting = {}
    for i = 1, #w do ready(w[i]) end
    return err
end

local Client = {}
local Methods = {}
Client.__index = Methods

local function check_client(self, fname)
    if getmetatable(self) ~= Client then
        raise(fname, "expected a redis connection as self, got " .. type(self) .. " (call it with ':')")
    end
end

-- The connection of a client (a cold path: calls read self[1] themselves, which r:close() sets to
-- false, and come here when it is not there).
local function conn_of(self, fname)
    check_client(self, fname)
    if self.closed or not self[1] then raise(fname, "attempt to use a closed redis connection") end
    return self[1]
end

-- A call's misuse, found by C++ (luaio.redis returns it): raised with the name the user called.
-- offset: the values before the user's arguments that the method adds (the command name).
local function misuse(fname, offset, argn, what)
    if argn == 0 then raise(fname, what) end
    if argn == 1 and offset == 0 then raise(fname, "expected a command name as argument 1, got " .. what) end
    raise(fname, format("expected a string or number as argument %d, got %s", argn - offset, what))
end

local function retry(self, fname, offset, ...)
    local err = reconnect(self)
    if err then return nil, err end
    local v, e, argn, what = self[1]:call(...)
    if e == MISUSE then misuse(fname, offset, argn, what) end
    return v, e
end

-- r:call(name, ...) under the name fname (r:call, pool:call).
local function make_call(fname)
    return function(self, ...)
        local c = self[1]
        if not c then c = conn_of(self, fname) end
        local v, err, argn, what = c:call(...)
        if err then
            if err == DOWN then return retry(self, fname, 0, ...) end
            if err == MISUSE then misuse(fname, 0, argn, what) end
        end
        return v, err
    end
end

--- r:call(name, ...): any command; returns its reply, or nil and an error table.
Methods.call = make_call("r:call")
local pool_call = make_call("pool:call")

-- The method of one command, under the name fname (r:get, pool:get).
local function command(name, fname)
    return function(self, ...)
        local c = self[1]
        if not c then c = conn_of(self, fname) end
        local v, err, argn, what = c:call(name, ...)
        if err then
            if err == DOWN then return retry(self, fname, 1, name, ...) end
            if err == MISUSE then misuse(fname, 1, argn, what) end
        end
        return v, err
    end
end

-- What a misspelled method gives (no method is made for it): a function that says so when called.
local function unknown(prefix, k)
    if type(k) ~= "string" or not k:match("^[%a_][%w_]*$") then return nil end
    return function()
        raise(prefix .. k, format("unknown redis command '%s' (%scall(name, ...) sends any command)", k, prefix))
    end
end

-- The command methods are made when first used. A client's own fields are never nil (a miss
-- would come here).
setmetatable(Methods, {
    __index = function(m, k)
        local name = COMMANDS[k]
        if not name then return unknown("r:", k) end
        local f = command(name, "r:" .. k)
        m[k] = f
        return f
    end,
})

-- Pipelines: the commands are gathered in one flat array (count, name, args ...) and sent in one
-- write by C++; the replies come back in a table.
local Pipe = {}
local PipeMethods = {}
Pipe.__index = PipeMethods

local function add(p, fname, offset, name, ...)
    local n = select("#", ...)
    local buf, i = p.buf, p.len
    buf[i + 1] = n + 1
    buf[i + 2] = name
    for j = 1, n do
        local v = (select(j, ...))
        local t = type(v)
        if t ~= "string" and t ~= "number" then
            raise(fname, format("expected a string or number as argument %d, got %s", j + offset, t))
        end
        buf[i + 2 + j] = v
    end
    p.len = i + 2 + n
    p.count = p.count + 1
end

function PipeMethods:call(name, ...)
    if getmetatable(self) ~= Pipe then raise("p:call", "expected a pipeline as self (call it with ':')") end
    if type(name) ~= "string" then raise("p:call", "expected a command name as argument 1, got " .. type(name)) end
    add(self, "p:call", 1, name, ...)
end

setmetatable(PipeMethods, {
    __index = function(m, k)
        local name = COMMANDS[k]
        if not name then return unknown("p:", k) end
        local fname = "p:" .. k
        local f = function(self, ...)
            if getmetatable(self) ~= Pipe then raise(fname, "expected a pipeline as self (call it with ':')") end
            add(self, fname, 0, name, ...)
        end
        m[k] = f
        return f
    end,
})

local function run_pipeline(self, p, fname)
    if p.count == 0 then return { n = 0 } end
    local c = conn_of(self, fname)
    local res, err = c:pipeline(p.buf, p.len, p.count)
    if err == DOWN then
        err = reconnect(self)
        if err then return nil, err end
        res, err = self[1]:pipeline(p.buf, p.len, p.count)
    end
    return res, err
end

--- r:pipeline(fn): fn(p) queues commands on p (p:set(...), p:call(...)); they go out in one
--- write and the replies come back in one table, in order (redis.null for nil replies, an error
--- table for an error reply). Returns that table, or nil and the error that failed them all.
function Methods:pipeline(fn)
    check_client(self, "r:pipeline")
    if type(fn) ~= "function" then raise("r:pipeline", "expected a function as argument 1, got " .. type(fn)) end
    local p = setmetatable({ buf = {}, len = 0, count = 0 }, Pipe)
    fn(p)
    return run_pipeline(self, p, "r:pipeline")
end

--- r:transaction(fn): as pipeline, wrapped in MULTI ... EXEC, in one write (no other task's
--- command can come between). Returns EXEC's results, nil when a WATCHed key changed (nil,
--- nothing else), or nil and the error (EXECABORT for a command the server refused to queue).
function Methods:transaction(fn)
    check_client(self, "r:transaction")
    if type(fn) ~= "function" then raise("r:transaction", "expected a function as argument 1, got " .. type(fn)) end
    local p = setmetatable({ buf = {}, len = 0, count = 0 }, Pipe)
    add(p, "r:transaction", 0, "MULTI")
    fn(p)
    add(p, "r:transaction", 0, "EXEC")
    local res, err = run_pipeline(self, p, "r:transaction")
    if not res then return nil, err end
    local exec = res[p.count]
    if exec == redis.null then return nil end
    if type(exec) == "table" and exec.name then return nil, exec end
    return exec
end

-- Subscriptions. The server confirms each channel of (p)subscribe and (p)unsubscribe with one
-- reply, and an unsubscribe of all with one per subscribed channel (or one when there is none):
-- the connection keeps the channels it asked for, to know how many replies come.
local function count_of(set)
    local n = 0
    for _ in pairs(set) do n = n + 1 end
    return n
end

-- The replies to expect, counted on the connection that sends (a reconnect forgets the
-- channels), and the channels it asked for afterwards. A function of its own, not a closure made
-- per call: a compiled trace keeps a closure it called, and the client in its upvalues, alive
-- (docs/CONTRIBUTING-internals.md).
local function replies(self, setname, add_to, chans, n)
    local set = self[setname]
    local count = n
    if not add_to and n == 0 then
        count = count_of(set)
        if count == 0 then count = 1 end
        self[setname] = {}
    end
    for i = 1, n do set[tostring(chans[i])] = add_to or nil end
    return count
end

local function subscription(self, fname, cmd, setname, add_to, ...)
    check_client(self, fname)
    local n = select("#", ...)
    local chans = { ... }
    if add_to and n == 0 then raise(fname, "expected at least one channel") end
    for i = 1, n do
        local ch = select(i, ...)
        if type(ch) ~= "string" and type(ch) ~= "number" then
            raise(fname, format("expected a channel name as argument %d, got %s", i, type(ch)))
        end
    end
    local res, err = conn_of(self, fname):send(replies(self, setname, add_to, chans, n), cmd, ...)
    if err == DOWN then
        err = reconnect(self)
        if err then return nil, err end
        res, err = self[1]:send(replies(self, setname, add_to, chans, n), cmd, ...)
    end
    if not res then return nil, err end
    -- The subscriptions left after the last confirmation (or the error reply).
    local last = res[#res]
    if type(last) == "table" and last.name then return nil, last end
    return last[3]
end

--- r:subscribe(channel, ...): returns the number of subscriptions, or nil and an error.
function Methods:subscribe(...)
    return subscription(self, "r:subscribe", "SUBSCRIBE", "channels", true, ...)
end
function Methods:psubscribe(...)
    return subscription(self, "r:psubscribe", "PSUBSCRIBE", "patterns", true, ...)
end
function Methods:unsubscribe(...)
    return subscription(self, "r:unsubscribe", "UNSUBSCRIBE", "channels", false, ...)
end
function Methods:punsubscribe(...)
    return subscription(self, "r:punsubscribe", "PUNSUBSCRIBE", "patterns", false, ...)
end

--- r:message([timeout]): the next message: kind ("message" or "pmessage"), channel, payload
--- and for "pmessage" the pattern; nil once not subscribed; nil and an error when (ETIMEDOUT)
--- no message came in timeout ms. When the connection drops while subscribed, it reconnects
--- (retrying while the server is down, within timeout when one is given), subscribes again to
--- the same channels and patterns and goes on: messages published meanwhile are lost.
function Methods:message(timeout)
    check_client(self, "r:message")
    if timeout ~= nil and type(timeout) ~= "number" then
        raise("r:message", "expected a timeout in milliseconds as argument 1, got " .. type(timeout))
    end
    local deadline = timeout and timeout > 0 and now_ms() + timeout
    while true do
        local c = self[1]
        if not c then c = conn_of(self, "r:message") end
        local left = deadline and deadline - now_ms()
        if left and left < 1 then left = 1 end
        local kind, a, b, p = c:message(left)
        if kind ~= nil or a == nil or self.closed or c:alive() then return kind, a, b, p end
        if not next(self.channels) and not next(self.patterns) and not c:tracking() then return nil, a end
        -- Dropped while subscribed (or tracking): reconnect, which subscribes again.
        local delay = 20
        while true do
            local err = reconnect(self)
            if not err then break end
            if self.closed or (deadline and now_ms() + delay > deadline) then return nil, err end
            sleep(delay)
            delay = delay < 500 and delay * 2 or 1000
        end
    end
end

-- One shared iterator with the client (or the client and the timeout) as the loop's state, not a
-- closure per loop: a compiled loop keeps the function it calls alive, and a forgotten client
-- with it (docs/CONTRIBUTING-internals.md).
local function next_message(self)
    return self:message()
end
local function next_message_within(s)
    return s[1]:message(s[2])
end

--- for kind, channel, payload, pattern in r:messages() do ... end: until unsubscribed (or a
--- message timeout, or r:close()); a dropped connection is reconnected (see r:message).
function Methods:messages(timeout)
    check_client(self, "r:messages")
    if timeout ~= nil and type(timeout) ~= "number" then
        raise("r:messages", "expected a timeout in milliseconds as argument 1, got " .. type(timeout))
    end
    if timeout == nil then return next_message, self end
    return next_message_within, { self, timeout }
end

--- r:close(): closes the connection; waiting calls get ECANCELED. Later calls raise.
function Methods:close()
    check_client(self, "r:close")
    self.closed = true
    local c = self[1]
    self[1] = false
    if c then c:close() end
end

--- True while connected (the next call reconnects otherwise).
function Methods:connected()
    check_client(self, "r:connected")
    return self[1] and self[1]:alive() or false
end

local function new_client(opts)
    return setmetatable({ false, opts = opts, waiting = {}, channels = {}, patterns = {}, connecting = false,
        connect_err = false, closed = false }, Client)
end

--- redis.connect(options): a connected client, or nil and an error table (ECONNREFUSED,
--- ETIMEDOUT, EREDIS with kind WRONGPASS ...).
function redis.connect(options)
    local opts = check_options(options, "redis.connect", false)
    local self = new_client(opts)
    local err = open(self)
    if err then
        if self[1] then self[1]:close() end
        return nil, err
    end
    return self
end

-- The pool -------------------------------------------------------------------

local RPool = {}
local RPoolMethods = {}
RPool.__index = RPoolMethods

local function check_pool(self, fname)
    if getmetatable(self) ~= RPool then
        raise(fname, "expected a redis pool as self, got " .. type(self) .. " (call it with ':')")
    end
end

--- redis.pool(options): connect options and the pool's (size = 32, idleTimeout = 60000 ms,
--- maxWaiters = 1024, waitTimeout = 10000 ms; lib/luaio/pool.lua). A connection that is in a
--- transaction (MULTI or WATCH), subscribed, switched to another database, with a call in flight
--- or dropped when it is given back is closed, never handed to the next caller.
function redis.pool(options)
    local opts = check_options(options, "redis.pool", true)
    local copts = require("luaio.pool").connect_options(opts)
    local p = require("luaio.pool").new({
        name = "redis.pool", size = opts.size, idleTimeout = opts.idleTimeout,
        maxWaiters = opts.maxWaiters, waitTimeout = opts.waitTimeout,
    }, {
        connect = function()
            local self = new_client(copts)
            local err = open(self)
            if err then
                if self[1] then self[1]:close() end
                return nil, err
            end
            return self
        end,
        close = function(r) Methods.close(r) end,
        healthy = function(r) return r[1] and r[1]:alive() or false end,
        reusable = function(r) return r[1] and r[1]:reusable() or false end,
    })
    return setmetatable({ pool = p }, RPool)
end

--- pool:call(name, ...): the command on a connection of the pool.
function RPoolMethods:call(...)
    check_pool(self, "pool:call")
    return self.pool:with(pool_call, ...)
end

--- pool:with(fn, ...): fn(r, ...) on a connection of the pool; returns fn's results, or nil and an
--- error when no connection could be had (ETIMEDOUT after waitTimeout, EBUSY past maxWaiters).
function RPoolMethods:with(fn, ...)
    check_pool(self, "pool:with")
    if type(fn) ~= "function" then raise("pool:with", "expected a function as argument 1, got " .. type(fn)) end
    return self.pool:with(fn, ...)
end

--- pool:pipeline(fn) and pool:transaction(fn): r:pipeline(fn) / r:transaction(fn) on one
--- connection of the pool.
function RPoolMethods:pipeline(fn)
    check_pool(self, "pool:pipeline")
    return self.pool:with(Methods.pipeline, fn)
end
function RPoolMethods:transaction(fn)
    check_pool(self, "pool:transaction")
    return self.pool:with(Methods.transaction, fn)
end

function RPoolMethods:stats()
    check_pool(self, "pool:stats")
    return self.pool:stats()
end

function RPoolMethods:close()
    check_pool(self, "pool:close")
    self.pool:close()
end

-- pool:get(k) ... : the command methods, each on a connection of the pool.
setmetatable(RPoolMethods, {
    __index = function(m, k)
        local name = COMMANDS[k]
        if not name then return unknown("pool:", k) end
        local fname = "pool:" .. k
        local run = command(name, fname)
        local f = function(self, ...)
            check_pool(self, fname)
            return self.pool:with(run, ...)
        end
        m[k] = f
        return f
    end,
})

redis._Client, redis._Methods, redis._COMMANDS, redis._new_client, redis._open = Client, Methods, COMMANDS,
    new_client, open
redis._check_options = check_options
redis._call = Methods.call

return redis
