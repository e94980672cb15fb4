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

-- The worst lateness of a 10 ms interval while fn runs.
local function lateness(fn)
    local worst, last = 0, now()
    local t = timer.setInterval(10, function()
        local n = now()
        local late = (n - last) * 1000 - 10
        if late > worst then worst = late end
        last = n
    end)
    fn()
    t:stop()
    return worst
end

print(("timer_late_ms_readFile_100MB %.1f"):format(lateness(function() assert(fs.readFile(big)) end)))
local function blocks(path)
    return function()
        local f = assert(fs.open(path))
        while f:read(1048576) do end
        f:close()
    end
end
print(("timer_late_ms_blocks_100MB %.1f"):format(lateness(blocks(big))))
print(("timer_late_ms_blocks_1GB %.1f"):format(lateness(blocks(dir .. "/huge.bin"))))
