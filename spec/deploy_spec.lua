-- Behind a load balancer: HAProxy in front of two luaio instances, each stopped with SIGTERM
-- and started again in turn while clients send requests (bench/rolling_restart.lua; see
-- docs/deploy.md). Every request must get a 200 and every stop must exit 0.
local process = require "process"
local helper = require "helper"

describe("a rolling restart behind HAProxy", function()
    it("loses no request, on new and keep-alive connections", function()
        local haproxy = io.open("/usr/sbin/haproxy")
        assert(haproxy, "HAProxy is needed: apt-get install haproxy (scripts/setup.sh installs it)")
        haproxy:close()
        local r = assert(process.run({ helper.luaio, helper.source_dir .. "/bench/rolling_restart.lua", "1" },
            { timeout = 120000 }))
        assert.are.equal(0, r.code, r.stdout .. r.stderr)
        local total, failed, a, b = r.stdout:match("(%d+) requests, (%d+) failed %(a (%d+), b (%d+)%)")
        assert.are.equal("0", failed, r.stdout)
        -- Each instance served over 20 requests after its restart (the bench waits for that: how
        -- many more come in its fixed pauses depends on how fast the machine is).
        assert.is_true(tonumber(a) > 20 and tonumber(b) > 20, r.stdout)
        assert.is_true(tonumber(total) > 40, r.stdout)
        assert.matches("exit status a=0 b=0", r.stdout, 1, true)
    end)
end)

describe("socket activation (systemd's LISTEN_FDS)", function()
    local APP = [[
        local http = require "http"
        local process = require "process"
        local fds = process.listenFds()
        local srv = assert(http.createServer({ port = tonumber(arg[1]) }, function(_, res)
            res:finish(("adopted %d, LISTEN_FDS now %s"):format(#fds, tostring(process.env.LISTEN_FDS)))
        end))
        print("listening")
        io.stdout:flush()
    ]]

    -- Runs `luaio [opts] app port` with a listening socket of ours as its descriptor 3 and
    -- LISTEN_PID/LISTEN_FDS set as systemd sets them; returns what a request gets.
    local function activated(opts)
        local path = helper.script(APP)
        local fd, port = assert(process.listenSocket("127.0.0.1", 0))
        local args = { "-c", 'LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@"', helper.luaio }
        for _, o in ipairs(opts) do args[#args + 1] = o end
        args[#args + 1] = path
        args[#args + 1] = tostring(port)
        local c = assert(process.spawn("sh", args, { stdio = { "ignore", "pipe", "pipe", fd } }))
        process.closeSocket(fd) -- the child holds the socket now
        finally(function()
            if not c:status() then c:kill("SIGKILL") end
            os.remove(path)
        end)
        c.stdout:setTimeout(10000)
        local line = c.stdout:readline()
        local r = assert(process.run({ "curl", "-s", "-m", "5", "http://127.0.0.1:" .. port .. "/" }, { timeout = 10000 }))
        c:kill("SIGTERM")
        local code = c:wait()
        c.stdout:close()
        local err = c.stderr:read() or ""
        c.stderr:close()
        return line, r.stdout, code, err
    end

    it("a server on the socket's port adopts it (no bind of its own), and children do not see it", function()
        local line, body, code, err = activated({})
        assert.are.equal("listening", line, err)
        assert.are.equal("adopted 1, LISTEN_FDS now nil", body)
        assert.are.equal(0, code, err)
    end)

    it("with --workers, the master hands systemd's socket to its workers", function()
        local line, body, code, err = activated({ "--workers", "1" })
        assert.are.equal("listening", line, err)
        assert.are.equal("adopted 0, LISTEN_FDS now nil", body) -- the master took it, not the worker
        assert.are.equal(0, code, err)
    end)
end)
