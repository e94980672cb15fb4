-- Timers: one-shot and repeating, callbacks in their own tasks, cancellation.
local timer = require "timer"
local system = require "system"
local helper = require "helper"

describe("timer.setTimeout", function()
    it("runs the callback once, in its own task, with its arguments", function()
        local got
        local t0 = system.hrtime()
        local t = timer.setTimeout(20, function(a, b)
            sleep(1) -- callbacks run in tasks: they may wait
            got = { a, b, (system.hrtime() - t0) / 1e6 }
        end, "x", 2)
        assert.is_true(t:active())
        assert.is_true(helper.wait_for(function() return got ~= nil end))
        assert.are.equal("x", got[1])
        assert.are.equal(2, got[2])
        assert.is_true(got[3] >= 19)
        assert.is_false(t:active())
        t:stop() -- stopping a fired timer does nothing
    end)

    it("is cancelled by stop()", function()
        local fired = false
        local t = timer.setTimeout(20, function() fired = true end)
        t:stop()
        sleep(40)
        assert.is_false(fired)
        assert.is_false(t:active())
    end)

    it("fires even when its handle is dropped", function()
        local fired = false
        timer.setTimeout(5, function() fired = true end)
        collectgarbage()
        collectgarbage()
        assert.is_true(helper.wait_for(function() return fired end))
    end)

    it("keeps the process alive until it fires, unless unref'd", function()
        local out, _, status = helper.run([[-e 'require("timer").setTimeout(30, function() print("fired") end)']])
        assert.are.equal(0, status)
        assert.are.equal("fired\n", out)
        out = helper.run([[-e 'require("timer").setTimeout(5000, function() print("fired") end):unref()']])
        assert.are.equal("", out)
    end)

    it("an unref'd timer that comes due while the state closes does not crash the process", function()
        -- A socket closed by its finalizer keeps the loop alive for the runtime's last turn, and a
        -- slow finalizer lets the timer come due before it: its callback cannot run any more.
        local script = helper.script([[
            local tcp = require "tcp"
            local srv = assert(tcp.createServer(0, function() end, { host = "127.0.0.1" }))
            _G.sock = assert(tcp.connect(srv:address().port, "127.0.0.1"))
            srv:close()
            require("timer").setTimeout(5, function() print("late") end):unref()
            local p = newproxy(true)
            getmetatable(p).__gc = function()
                local t0 = os.clock()
                while os.clock() - t0 < 0.05 do end
            end
            _G.keep = p
        ]])
        local out, err, status = helper.run(script)
        os.remove(script)
        assert.are.equal("", err)
        assert.are.equal("", out)
        assert.are.equal(0, status)
    end)

    it("rejects bad arguments", function()
        assert.has_error(function() timer.setTimeout("1", function() end) end,
            "setTimeout: expected milliseconds (a number) as argument 1, got string")
        assert.has_error(function() timer.setTimeout(1, 2) end, "setTimeout: expected a function as argument 2, got number")
        assert.has_error(function() timer.setInterval(-5, function() end) end)
    end)

    it("reports an error in a callback and goes on", function()
        local out, err, status = helper.run([[-e 'local t = require "timer"; t.setTimeout(1, function() error("cb failed") end); t.setTimeout(20, function() print("next") end)']])
        assert.are.equal(0, status)
        assert.are.equal("next\n", out)
        assert.matches("cb failed", err, 1, true)
        assert.matches("stack traceback", err, 1, true)
    end)
end)

describe("timer.setInterval", function()
    it("repeats until stopped, even from its own callback", function()
        local n = 0
        local t
        t = timer.setInterval(5, function()
            n = n + 1
            if n == 3 then t:stop() end
        end)
        assert.is_true(helper.wait_for(function() return not t:active() end))
        sleep(30) -- six more periods: a timer that went on would have fired again
        assert.are.equal(3, n)
    end)
end)

describe("afterwards", function()
    it("leaves no handle open", function()
        assert(require("helper").idle())
    end)
end)
