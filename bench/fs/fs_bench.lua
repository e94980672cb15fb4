-- fs throughput: readFile of a 1 MB and a 100 MB file, 10,000 stat calls, and the lateness of
-- a 10 ms interval timer while the big file is read (whole, then in 1 MiB blocks).
-- Prints "name value" lines; bench/fs/run.sh runs it beside bench/fs/node_bench.js.
local fs = require "fs"
local system = require "system"
local timer = require "timer"

local dir = assert(arg[1], "usage: fs_bench.lua DIR (with small.bin and big.bin)")
local small, big = dir .. "/small.bin", dir .. "/big.bin"

local function now() return system.hrtime() / 1e9 end

local function rate(name, n, bytes, fn)
    local t0 = now()
    for _ = 1, n do fn() end
    local dt = now() - t0
    if bytes then
        print(("%s_MBps %.0f"):format(name, n * bytes / dt / 1e6))
    else
        print(("%s_per_s %.0f"):format(name, n / dt))
    end
end

local small_size, big_size = fs.stat(small).size, fs.stat(big).size
rate("readFile_1MB", 300, small_size, function() assert(fs.readFile(small)) end)
rate("readFile_100MB", 5, big_size, function() assert(fs.readFile(big)) end)
rate("stat", 10000, nil, function() assert(fs.stat(small)) end)

-- The loop thread's own CPU time (getrusage RUSAGE_THREAD through LuaJIT's FFI, for this bench
-- only): unlike lateness, it does not count the time a loaded machine leaves the thread waiting.
local ffi = require "ffi"
ffi.cdef [[
struct luaio_bench_rusage { long utime_s, utime_us, stime_s, stime_us; long rest[14]; };
int getrusage(int who, struct luaio_bench_rusage *usage);
]]
local ru = ffi.new("struct luaio_bench_rusage")
local function thread_cpu()
    ffi.C.getrusage(1, ru) -- RUSAGE_THREAD
    return tonumber(ru.utime_s + ru.stime_s) + tonumber(ru.utime_us + ru.stime_us) / 1e6
end

-- The worst lateness of a 10 ms interval while fn runs (and 30 ms after, so that the tick after
-- its last step counts: a whole-file read makes its string at the very end), and the lateness
-- that the loop thread's own work explains: the most CPU time it spent between two ticks, less
-- the 10 ms of the interval (a busy but responsive loop spends up to 10 ms between ticks).
local busy_worst = {}
local function lateness(fn, name)
    local worst, last, busy, last_cpu = 0, now(), 0, thread_cpu()
    local t = timer.setInterval(10, function()
        local n, c = now(), thread_cpu()
        local late = (n - last) * 1000 - 10
        if late > worst then worst = late end
        if (c - last_cpu) * 1000 - 10 > busy then busy = (c - last_cpu) * 1000 - 10 end
        last, last_cpu = n, c
    end)
    fn()
    timer.sleep(30)
    t:stop()
    if name then busy_worst[#busy_worst + 1] = ("loop_late_cpu_ms_%s %.1f"):format(name, busy) end
    return worst
end

print(("timer_late_ms_readFile_100MB %.1f"):format(lateness(function() assert(fs.readFile(big)) end, "readFile_100MB")))
local function blocks(path)
    return function()
        local f = assert(fs.open(path))
        while f:read(1048576) do end
        f:close()
    end
end
print(("timer_late_ms_blocks_100MB %.1f"):format(lateness(blocks(big), "blocks_100MB")))
local t0 = now()
print(("timer_late_ms_blocks_1GB %.1f"):format(lateness(blocks(dir .. "/huge.bin"), "blocks_1GB")))
-- The noise floor: the same interval over as long with nothing read (a loaded machine delays
-- any timer; lateness above this is the reading's).
local idle = now() - t0
print(("timer_late_ms_idle %.1f"):format(lateness(function() timer.sleep(idle * 1000) end, "idle")))
for _, line in ipairs(busy_worst) do print(line) end
