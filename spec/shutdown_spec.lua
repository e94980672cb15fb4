-- The graceful stop of a single-process server: SIGTERM and SIGINT drain, the backlog is
-- served, requests in flight finish, the exit status is 0. Real luaio children and curl.
local process = require "process"
local helper = require "helper"
local task = require "task"

local LUAIO = helper.luaio

-- Starts `luaio src` with `env`; waits for its "listening <port>" line. Returns the child and
-- its port; the spec's finally kills it if it is still running.
local function server(src, env)
    local path = helper.script(src)
    local e = process.environ()
    for k, v in pairs(env or {}) do e[k] = v end
    local c = assert(process.spawn(LUAIO, { path }, { env = e, stdio = { "ignore", "pipe", "pipe" } }))
    -- A failed assertion must not leave the server running (a passing spec ends it itself).
    finally(function()
        if not c:status() then c:kill("SIGKILL") end
        os.remove(path)
    end)
    c.stdout:setTimeout(10000)
    local line = c.stdout:readline()
    local port = line and tonumber(line:match("^listening (%d+)$"))
    if not port then error("the server did not start: " .. tostring(line) .. " " .. tostring(c.stderr:read())) end
    return c, port
end

-- curl; returns its exit code, the response head and body.
local function curl(url, args)
    local cmd = { "curl", "-s", "-i", "-m", "10" }
    for _, a in ipairs(args or {}) do cmd[#cmd + 1] = a end
    cmd[#cmd + 1] = url
    local r = assert(process.run(cmd, { timeout = 15000 }))
    local head, body = r.stdout:match("^(.-)\r\n\r\n(.*)$")
    return r.code, head or r.stdout, body
end

local function rest(stream)
    local parts = {}
    while true do
        local d = stream:read()
        if not d then break end
        parts[#parts + 1] = d
    end
    stream:close()
    return table.concat(parts)
end

-- Waits for the server to end; returns its exit status and what it wrote on stderr.
local function ended(c)
    local code = c:wait()
    c.stdout:close()
    return code, rest(c.stderr)
end

local APP = [[
    local http = require "http"
    local r = http.router()
    r:get("/slow", function(req, res)
        print("in flight") -- the spec signals the server once it reads this line
        io.stdout:flush()
        sleep(tonumber(req.query.ms) or 600)
        res:finish("slow done")
    end)
    r:get("/healthz", http.health())
    r:get("/", function(req, res) res:finish("hello") end)
    local srv = assert(http.createServer({ port = 0 }, r))
    print("listening " .. srv.port)
    io.stdout:flush()
]]

describe("graceful stop of a single-process server", function()
    it("SIGTERM lets a request in flight finish, then exits 0", function()
        local c, port = server(APP, { LUAIO_DRAIN_DELAY = "0" })
        local slow = task.spawn(curl, "http://127.0.0.1:" .. port .. "/slow")
        assert.are.equal("in flight", c.stdout:readline())
        c:kill("SIGTERM")
        local _, code, head, body = slow:join()
        assert.are.equal(0, code)
        assert.matches("^HTTP/1.1 200 OK", head)
        assert.matches("Connection: close", head, 1, true)
        assert.are.equal("slow done", body)
        assert.are.equal(0, (ended(c)))
        -- The server no longer listens.
        assert.are_not.equal(0, (curl("http://127.0.0.1:" .. port .. "/")))
    end)

    it("SIGINT stops the same way; a second SIGINT exits at once", function()
        local c, port = server(APP, { LUAIO_DRAIN_DELAY = "0" })
        local slow = task.spawn(curl, "http://127.0.0.1:" .. port .. "/slow?ms=300")
        assert.are.equal("in flight", c.stdout:readline())
        c:kill("SIGINT")
        local _, code, _, body = slow:join()
        assert.are.equal(0, code)
        assert.are.equal("slow done", body)
        assert.are.equal(0, (ended(c)))

        c, port = server(APP, { LUAIO_DRAIN_DELAY = "0" })
        slow = task.spawn(curl, "http://127.0.0.1:" .. port .. "/slow?ms=5000")
        assert.are.equal("in flight", c.stdout:readline())
        c:kill("SIGINT")
        -- The first SIGINT is handled once the listener is gone (no drain): then the second.
        local tcp = require "tcp"
        for _ = 1, 250 do
            local s = tcp.connect(port, "127.0.0.1")
            if not s then break end
            s:close()
            sleep(20)
        end
        c:kill("SIGINT")
        local code2, log = ended(c)
        assert.are.equal(128 + 2, code2)
        assert.matches("SIGINT again: exiting without waiting", log, 1, true)
        local _, cut = slow:join()
        assert.are_not.equal(0, cut)
    end)

    it("drains first: for drainDelay the server serves, /healthz answers 503, connections close", function()
        local c, port = server(APP, { LUAIO_DRAIN_DELAY = "3000" })
        local url = "http://127.0.0.1:" .. port
        local code, head, body = curl(url .. "/healthz")
        assert.are.equal(0, code)
        assert.matches("^HTTP/1.1 200 OK", head)
        assert.are.equal("ok\n", body)
        c:kill("SIGTERM")
        for _ = 1, 50 do -- until the signal is handled
            code, head, body = curl(url .. "/healthz")
            if not head:match("^HTTP/1.1 200") then break end
            sleep(20)
        end
        assert.matches("^HTTP/1.1 503 Service Unavailable", head)
        assert.are.equal("draining\n", body)
        code, head, body = curl(url .. "/")
        assert.are.equal(0, code)
        assert.matches("^HTTP/1.1 200 OK", head)
        assert.matches("Connection: close", head, 1, true)
        assert.are.equal("hello", body)
        assert.are.equal(0, (ended(c)))
    end)

    it("does not use the script's global sleep (luaio.compat.luars makes it take seconds)", function()
        local c = server([[
            local http = require "http"
            local timer = require "timer"
            sleep = function(seconds) timer.sleep(seconds * 1000) end
            local srv = assert(http.createServer({ port = 0 }, function(_, res) res:finish("x") end))
            print("listening " .. srv.port)
            io.stdout:flush()
        ]], { LUAIO_DRAIN_DELAY = "50", LUAIO_SHUTDOWN_TIMEOUT = "3000" })
        c:kill("SIGTERM")
        local code, stderr = ended(c)
        assert.are.equal("", stderr)
        assert.are.equal(0, code)
    end)

    it("a script that handles SIGTERM itself keeps control", function()
        local c, port = server(APP .. [[
            require("process").on("SIGTERM", function() print("got SIGTERM") io.stdout:flush() end)
        ]], { LUAIO_DRAIN_DELAY = "0" })
        c:kill("SIGTERM")
        assert.are.equal("got SIGTERM", c.stdout:readline())
        local code, _, body = curl("http://127.0.0.1:" .. port .. "/")
        assert.are.equal(0, code)
        assert.are.equal("hello", body)
        assert.is_nil(c:status())
        c:kill("SIGKILL")
        ended(c)
    end)

    it("a request longer than the grace period: exit 1 with a message after shutdownTimeout", function()
        local c, port = server(APP, { LUAIO_DRAIN_DELAY = "0", LUAIO_SHUTDOWN_TIMEOUT = "300" })
        local slow = task.spawn(curl, "http://127.0.0.1:" .. port .. "/slow?ms=5000")
        assert.are.equal("in flight", c.stdout:readline())
        c:kill("SIGTERM")
        local code, log = ended(c)
        assert.are.equal(1, code)
        assert.matches("graceful stop still running after 300 ms: exiting", log, 1, true)
        slow:join()
    end)
end)

-- The accept queue length of the listening socket on 127.0.0.1:port (/proc/net/tcp's
-- rx_queue of a LISTEN socket), read without going back to the event loop.
local function queued(port)
    local f = assert(io.open("/proc/net/tcp"))
    local hex = ("0100007F:%04X"):format(port)
    for line in f:lines() do
        local rx = line:match("^%s*%d+: " .. hex .. " 00000000:0000 0A %x+:(%x+)")
        if rx then
            f:close()
            return tonumber(rx, 16)
        end
    end
    f:close()
    return 0
end

describe("server:close()", function()
    it("serves the connections queued in the backlog instead of resetting them", function()
        local http = require "http"
        local srv = assert(http.createServer({ port = 0 }, function(_, res) res:finish("from the backlog") end))
        local port = srv.port
        local clients = {}
        for i = 1, 3 do
            clients[i] = assert(process.spawn("curl", { "-s", "-m", "10", "http://127.0.0.1:" .. port .. "/" },
                { stdio = { "ignore", "pipe", "ignore" } }))
        end
        -- Block this process's loop (no yield) until the three connections wait in the accept
        -- queue, then close: nothing has accepted them.
        local deadline = os.time() + 10
        while queued(port) < 3 and os.time() < deadline do end
        assert.are.equal(3, queued(port))
        srv:close()
        for _, c in ipairs(clients) do
            assert.are.equal("from the backlog", rest(c.stdout))
            c.stdout:close()
            assert.are.equal(0, (c:wait()))
        end
        assert.is_true(helper.idle())
    end)
end)
