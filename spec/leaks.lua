-- Counts of what is open (libuv handles, tasks, file descriptors), for the leak check that
-- spec/helper.lua runs after every spec and spec/run.lua after every file.
local core = require "luaio.core"
-- Not the global sleep, which a spec may replace (luaio.compat.luars: seconds).
local sleep = require("timer").sleep
local leaks = { wait_ms = 2000 }

--- What is open now: referenced handles (with their types), tasks, descriptors (with what they are).
function leaks.snapshot()
    local handles, types = core.handles(true)
    local fds, names = core.fds(true)
    -- libuv's loop opens one inotify descriptor for all fs watches at the first one and keeps
    -- it until the loop closes: lasting infrastructure, like the EMFILE reserve. A watch left
    -- open is still found: its fs_event handle is counted.
    for fd, what in pairs(names or {}) do
        if what == "anon_inode:inotify" then
            fds, names[fd] = fds - 1, nil
        end
    end
    return { handles = handles, types = types, tasks = core.tasks(), fds = fds, names = names }
end

--- Waits (up to `ms`) until nothing has grown since `before` (a snapshot): closes complete and
--- tasks end on later loop turns. Returns nil, or a description of what is left.
function leaks.wait(before, ms)
    ms = ms or leaks.wait_ms
    local waited = 0
    while true do
        local now, left = leaks.snapshot(), {}
        if now.handles > before.handles then
            left[#left + 1] = ("%d handle(s) open (all open now: %s)"):format(now.handles - before.handles, now.types)
        end
        if now.tasks > before.tasks then
            left[#left + 1] = ("%d task(s) running"):format(now.tasks - before.tasks)
        end
        if now.fds > before.fds then
            local list = {}
            for fd, what in pairs(now.names) do
                if not before.names or before.names[fd] ~= what then list[#list + 1] = fd .. " " .. what end
            end
            table.sort(list)
            left[#left + 1] = ("%d file descriptor(s) open (%s)"):format(now.fds - before.fds, table.concat(list, ", "))
        end
        if #left == 0 then return nil end
        if waited >= ms then return table.concat(left, "; ") end
        sleep(5)
        waited = waited + 5
    end
end

return leaks
