-- A producer/consumer pipeline on tasks, channels and timers.
--   luaio examples/tasks.lua [items]
local task = require "task"
local timer = require "timer"
local system = require "system"

local n = tonumber(arg[1]) or 20
local jobs = task.channel(4)     -- room for 4 jobs: the producer waits when workers fall behind
local results = task.channel()

local ticker = timer.setInterval(100, function()
    io.write(".")
    io.flush()
end)

-- Three workers: each takes a job, "works" (sleeps) and reports.
local workers = {}
for w = 1, 3 do
    workers[w] = task.spawn(function()
        local done = 0
        for job in jobs:iter() do
            sleep(20 + (job * 7) % 30)
            results:send(("job %2d squared is %3d (worker %d)"):format(job, job * job, w))
            done = done + 1
        end
        return done
    end)
end

task.spawn(function()
    for i = 1, n do jobs:send(i) end
    jobs:close()
end)

local t0 = system.hrtime()
for _ = 1, n do print(results:receive()) end
ticker:stop()
for w = 1, 3 do
    local ok, done = workers[w]:join()
    print(("worker %d did %d jobs"):format(w, ok and done or -1))
end
print(("%d jobs in %.0f ms on %d workers"):format(n, (system.hrtime() - t0) / 1e6, #workers))
