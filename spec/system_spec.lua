-- The system module, cross-checked against /proc.
local system = require "system"

local helper = require "helper"

local function read(path)
    return assert(helper.read(path))
end

describe("system", function()
    it("cpuinfo() lists every cpu with model, speed and times", function()
        local cpus = system.cpuinfo()
        local n = 0
        for _ in read("/proc/cpuinfo"):gmatch("\nprocessor%s*:") do n = n + 1 end
        if read("/proc/cpuinfo"):match("^processor%s*:") then n = n + 1 end
        assert.are.equal(n, #cpus)
        for _, c in ipairs(cpus) do
            assert.is_string(c.model)
            assert.is_number(c.speed)
            for _, k in ipairs({ "user", "nice", "sys", "idle", "irq" }) do
                assert.is_number(c.times[k])
                assert.is_true(c.times[k] >= 0)
            end
        end
    end)

    it("meminfo() gives total and free bytes as /proc/meminfo", function()
        local m = system.meminfo()
        local total = tonumber(read("/proc/meminfo"):match("MemTotal:%s*(%d+) kB")) * 1024
        assert.are.equal(total, m.total)
        assert.is_true(m.free > 0 and m.free <= m.total)
    end)

    it("loadavg() gives the 1, 5 and 15 minute averages", function()
        local l = system.loadavg()
        local a, b, c = read("/proc/loadavg"):match("^(%S+) (%S+) (%S+)")
        assert.are.equal(3, #l)
        assert.is_true(math.abs(l[1] - tonumber(a)) < 1)
        assert.is_true(math.abs(l[2] - tonumber(b)) < 1)
        assert.is_true(math.abs(l[3] - tonumber(c)) < 1)
    end)

    it("uptime() agrees with /proc/uptime", function()
        local up = tonumber(read("/proc/uptime"):match("^(%S+)"))
        assert.is_true(math.abs(system.uptime() - up) < 2)
    end)

    it("hrtime() is in nanoseconds and monotonic", function()
        local a = system.hrtime()
        sleep(20)
        local b = system.hrtime()
        assert.is_true(b - a >= 19e6)
        assert.is_true(b - a < 2e9)
    end)

    it("offers luasystem's gettime/monotime/sleep for Lua tools such as busted", function()
        assert.is_true(math.abs(system.gettime() - os.time()) < 2)
        local t = system.monotime()
        system.sleep(0.01)
        assert.is_true(system.monotime() - t >= 0.009)
    end)
end)
