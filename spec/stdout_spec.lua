-- Output of a luaio process whose stdout is a file (systemd, Docker, nohup, `> log`): every
-- printed line is in the file as soon as it is printed, and a signal that ends the process
-- leaves even a partial line there.
local process = require "process"
local helper = require "helper"

-- Runs `src` as `luaio script > out 2> err`, waits until it has printed its lines (it writes
-- "ready" to a third file), sends `signal`, and returns the exit code, stdout and stderr.
local function run_and_signal(src, signal)
    local script = helper.script(src)
    local out, err, ready = os.tmpname(), os.tmpname(), os.tmpname()
    os.remove(ready)
    local child = assert(process.spawn("/bin/sh", { "-c", ('exec "$0" "$1" "$2" >"$3" 2>"$4"'),
        helper.luaio, script, ready, out, err }, { stdio = { "ignore", "ignore", "ignore" } }))
    for _ = 1, 500 do -- at most 5 s
        if helper.read(ready) then
            break
        end
        sleep(10)
    end
    assert.truthy(helper.read(ready), "the child did not start")
    child:kill(signal)
    local code = child:wait()
    local o, e = helper.read(out), helper.read(err)
    os.remove(out)
    os.remove(err)
    os.remove(ready)
    os.remove(script)
    return code, o, e
end

local PRINTER = [[
for i = 1, 3 do print("line " .. i) end
io.write("partial")
io.stderr:write("err partial")
local f = io.open(arg[1], "w") f:write("ready") f:close()
sleep(10000)
]]

describe("stdout to a file", function()
    for _, case in ipairs({ { "SIGTERM", 143 }, { "SIGINT", 130 }, { "SIGHUP", 129 } }) do
        it("keeps printed lines, and the partial line, when " .. case[1] .. " ends the process", function()
            local code, out, err = run_and_signal(PRINTER, case[1])
            assert.are.equal(case[2], code)
            assert.are.equal("line 1\nline 2\nline 3\npartial", out)
            assert.are.equal("err partial", err)
        end)
    end

    it("writes each line when it is printed, not when the process ends", function()
        local script = helper.script([[
print("first")
local out = io.open(arg[1]):read("*a") -- what a log reader sees now
io.stderr:write("seen: " .. out)
]])
        local out = os.tmpname()
        local _, err, status = helper.sh(("%s %s %s > %s"):format(helper.luaio, script, out, out))
        os.remove(out)
        os.remove(script)
        assert.are.equal(0, status)
        assert.are.equal("seen: first\n", err)
    end)

    it("a script that handles SIGTERM itself keeps control", function()
        local code, out = run_and_signal([[
local process = require "process"
process.on("SIGTERM", function() print("handled") process.exit(7) end)
print("up")
local f = io.open(arg[1], "w") f:write("ready") f:close()
sleep(10000)
]], "SIGTERM")
        assert.are.equal(7, code)
        assert.are.equal("up\nhandled\n", out)
    end)
end)
