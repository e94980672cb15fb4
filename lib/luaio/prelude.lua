-- Runs once at start-up, before the user's script.
--
-- Waiting calls park the task that runs them by yielding a sentinel (core.PARK) from the
-- coroutine that made the call. When that coroutine is one the user created, the yield
-- first reaches the user's coroutine.resume; these wrappers pass it on up to the task's
-- root, and pass the values that wake the task back down, so the user's resume returns
-- only when the user's coroutine itself yields or ends (OpenResty's semantics).
local core = require "luaio.core"

local PARK = core.PARK
local co_create, co_resume, co_yield = coroutine.create, coroutine.resume, coroutine.yield
local error, select = error, select

local function relay(co, ok, first, ...)
    if ok and first == PARK and select("#", ...) == 0 then
        return relay(co, co_resume(co, co_yield(PARK)))
    end
    return ok, first, ...
end

function coroutine.resume(co, ...)
    return relay(co, co_resume(co, ...))
end

local function unwrap(ok, ...)
    if not ok then error((...), 0) end
    return ...
end

function coroutine.wrap(fn)
    local co = co_create(fn)
    return function(...)
        return unwrap(relay(co, co_resume(co, ...)))
    end
end

-- os.exit ends the process as process.exit does: the state is closed first, so finalizers run
-- and LeakSanitizer finds no JIT buffers. A code of true or false means success or failure.
local process_core = require "luaio.process"
function os.exit(code)
    if code == true or code == nil then
        code = 0
    elseif code == false then
        code = 1
    end
    return process_core.exit(code)
end

-- The seed runtime's global sleep(ms): suspends only the calling task.
sleep = require("timer").sleep
