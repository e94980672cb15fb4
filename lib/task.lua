--- task: concurrency between coroutines.
--
--   local h = task.spawn(fn, ...)   -- runs fn(...) in a new task, returns a handle
--   local ok, a, b = h:join()       -- waits; true + results, or false + error
--   local ch = task.channel(n)      -- channel with room for n values (0: rendezvous)
--   ch:send(v) / v, err = ch:receive() / ch:close()
local core = require "luaio.core"

local suspend, current, ready, describe = core.suspend, core.current, core.ready, core.describe
local setmetatable, select, unpack, type, error = setmetatable, select, unpack, type, error
local traceback = debug.traceback
local getmetatable, raise = getmetatable, require("luaio.errors").raise

-- A method called with something else as self (ch.send(5) instead of ch:send(5)) raises a
-- clear error at the caller's line.
local function check(self, class, fname, what)
    if getmetatable(self) ~= class then
        raise(fname, "expected a " .. what .. " as self, got " .. type(self) .. " (call it with ':')")
    end
end

local task = {}

local Task = {}
Task.__index = Task

local function pack(...)
    return { n = select("#", ...), ... }
end

local function finish(h, ok, ...)
    h.results, h.co = pack(ok, ...), nil
    local joiners = h.joiners
    h.joiners = nil
    if not ok and not joiners then
        core.report(h.trace)
    end
    if joiners then
        for i = 1, #joiners do
            ready(joiners[i])
        end
    end
end

local function run(h, fn, ...)
    h.co = current() -- so that the task joining itself is told, instead of waiting forever
    finish(h, xpcall(fn, function(e)
        h.trace = traceback(describe(e), 2)
        return e
    end, ...))
end

--- Starts fn(...) in a new task; returns its handle.
function task.spawn(fn, ...)
    if type(fn) ~= "function" then
        error("task.spawn: expected a function as argument 1, got " .. type(fn), 2)
    end
    local h = setmetatable({}, Task)
    core.spawn(run, h, fn, ...)
    return h
end

--- Waits for the task to end. Returns true and its results, or false and its error.
function Task:join()
    check(self, Task, "h:join", "task handle")
    if not self.results then
        local co = current()
        if not co then error("join: cannot wait outside a task", 2) end
        if co == self.co then raise("h:join", "a task cannot join itself (it would wait forever)") end
        local joiners = self.joiners
        if not joiners then
            joiners = {}
            self.joiners = joiners
        end
        joiners[#joiners + 1] = co
        suspend()
    end
    local r = self.results
    return unpack(r, 1, r.n)
end

--- True once the task has ended.
function Task:done()
    check(self, Task, "h:done", "task handle")
    return self.results ~= nil
end

--- Yields to the other ready tasks, then goes on.
task.yield = core.yield

-- Channels ---------------------------------------------------------------

local Channel = {}
Channel.__index = Channel

local new_error = require("luaio.errors").new
local EPIPE = new_error("EPIPE", "channel closed")
local EOF = new_error("EOF", "channel closed")

local function queue()
    return { first = 1, last = 0 }
end
local function push(q, v)
    local last = q.last + 1
    q.last = last
    q[last] = v
end
local function shift(q)
    local first = q.first
    if first > q.last then return nil end
    local v = q[first]
    q[first] = nil
    q.first = first + 1
    return v
end
local function qlen(q)
    return q.last - q.first + 1
end

--- A channel holding up to `capacity` values (default 0: each send waits for a receiver).
function task.channel(capacity)
    capacity = capacity or 0
    if type(capacity) ~= "number" or capacity < 0 or capacity % 1 ~= 0 then
        error("task.channel: capacity must be a non-negative integer", 2)
    end
    return setmetatable({ capacity = capacity, buffer = queue(), receivers = queue(), senders = queue(),
                          closed = false }, Channel)
end

--- Sends v. Waits while the channel is full. Returns nil, or an error table if the channel is closed.
function Channel:send(v)
    check(self, Channel, "ch:send", "channel")
    if self.closed then return EPIPE end
    local r = shift(self.receivers)
    if r then
        ready(r, v)
        return nil
    end
    if qlen(self.buffer) < self.capacity then
        push(self.buffer, { v })
        return nil
    end
    local co = current()
    if not co then error("send: cannot wait outside a task", 2) end
    push(self.senders, { co = co, v = v })
    return suspend()
end

--- Receives a value, waiting for one. Returns v, or nil and an error table once the channel
--- is closed and empty.
function Channel:receive()
    check(self, Channel, "ch:receive", "channel")
    local b = shift(self.buffer)
    if b then
        local s = shift(self.senders)
        if s then
            push(self.buffer, { s.v })
            ready(s.co)
        end
        return b[1]
    end
    local s = shift(self.senders)
    if s then
        ready(s.co)
        return s.v
    end
    if self.closed then return nil, EOF end
    local co = current()
    if not co then error("receive: cannot wait outside a task", 2) end
    push(self.receivers, co)
    return suspend()
end

--- Closes the channel: waiting receivers get nil, EOF; waiting senders get EPIPE.
--- Buffered values can still be received.
function Channel:close()
    check(self, Channel, "ch:close", "channel")
    if self.closed then return end
    self.closed = true
    for co in shift, self.receivers do
        ready(co, nil, EOF)
    end
    for s in shift, self.senders do
        ready(s.co, EPIPE)
    end
end

--- Number of buffered values.
function Channel:len()
    check(self, Channel, "ch:len", "channel")
    return qlen(self.buffer)
end

--- Iterates over received values until the channel is closed: for v in ch:iter() do ... end
function Channel:iter()
    check(self, Channel, "ch:iter", "channel")
    return function()
        return (self:receive())
    end
end

return task
