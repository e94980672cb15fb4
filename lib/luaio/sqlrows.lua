--- luaio.sqlrows: the `for row, err in db:rows(sql, ...)` loop of the SQL clients (postgres,
--- mysql) over their C fetch: fetch(db, id) returns the next batch of rows (an array; a second
--- result once the stream is over), or nil and the error; fetch(db, id, true) reads and drops
--- the rest. Rows come one at a time from the batch; a failure ends the loop with false, err.
local M = {}

local EMPTY = {}

--- Reads and drops what is left of stream id (its loop was left early): true, or nil and the
--- error that ended it.
function M.drain(fetch, db, id)
    while true do
        local b, last = fetch(db, id, true)
        if b == nil then return nil, last end
        if last ~= nil then return true end
    end
end

--- A loop over nothing but the error err: one iteration `false, err`, then the end.
function M.failed(err)
    return function()
        local e = err
        err = nil
        if e then return false, e end
    end
end

-- The next row of a loop's state s ({fetch, db, id, batch, i, last}). One function for every
-- loop, with its state passed by the generic for: LuaJIT specializes a compiled loop on the
-- function it calls and keeps that function alive as long as the trace lives, so a closure per
-- loop would keep its connection (and a pool:rows loop's hold on it) from being collected.
local function next_row(s)
    local i = s.i + 1
    s.i = i
    local row = s.batch[i]
    if row ~= nil then return row end
    while not s.last do
        local b, n = s.fetch(s.db, s.id)
        if b == nil then
            s.last, s.batch = true, EMPTY
            return false, n
        end
        s.batch, s.i, s.last = b, 1, n ~= nil
        if b[1] ~= nil then return b[1] end
    end
end

--- The loop's iterator and state over stream id (false: the statement had no rows), or the
--- iterator over nothing but the error err when the query could not start.
function M.iterate(fetch, db, id, err)
    if not id then return M.failed(err) end
    return next_row, { fetch = fetch, db = db, id = id, batch = EMPTY, i = 0, last = false }
end

return M
