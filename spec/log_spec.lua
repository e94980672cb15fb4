-- log: lines through the queued sink to files, stdout and stderr; luaio's own messages and the
-- access log through the same sink.
local log = require "log"
local fs = require "fs"
local http = require "http"
local process = require "process"
local helper = require "helper"

local dir

-- The content of path once it matches pattern (the sink writes in the thread pool).
local function wait_for(path, pattern)
    local data
    for _ = 1, 400 do
        data = fs.readFile(path) or ""
        if data:find(pattern) then return data end
        sleep(5)
    end
    error("never matched " .. pattern .. " in: " .. data)
end

local function run(src)
    local script = helper.script(src)
    local out, err, code = helper.run(script)
    os.remove(script)
    return out, err, code
end

describe("log", function()
    before_each(function()
        dir = assert(fs.mkdtemp(fs.tmpdir() .. "/luaio-log-"))
        assert(log.setOutput(dir .. "/app.log"))
    end)
    after_each(function()
        log.setOutput("stderr")
        log.setFormat("text")
        log.setLevel("info")
        log.setQueueSize(1048576)
        assert(fs.rm(dir, { recursive = true }))
    end)

    it("writes text lines with a UTC time, the level, the message and sorted fields", function()
        log.info("user logged in", { user = 42, ms = 12, who = "a b" })
        local data = wait_for(dir .. "/app.log", "\n$")
        assert.truthy(data:match('^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ INFO user logged in ms=12 user=42 who="a b"\n$'), data)
    end)

    it("filters by level", function()
        log.debug("no")
        log.setLevel("debug")
        log.debug("yes")
        log.setLevel("error")
        log.warn("no")
        log.error("last")
        local data = wait_for(dir .. "/app.log", "last")
        assert.falsy(data:find(" no", 1, true))
        assert.truthy(data:find("DEBUG yes", 1, true))
        assert.are.equal("error", log.getLevel())
        assert.has_error(function() log.setLevel("loud") end)
    end)

    it("writes JSON lines", function()
        log.setFormat("json")
        log.warn("disk low", { free = 10, path = "/x" })
        local line = wait_for(dir .. "/app.log", "\n$")
        local t = require("json").decode(line)
        assert.are.equal("warn", t.level)
        assert.are.equal("disk low", t.msg)
        assert.are.equal(10, t.free)
        assert.are.equal("/x", t.path)
        assert.truthy(t.time:match("Z$"))
        assert.has_error(function() log.setFormat("xml") end)
    end)

    -- The seed's convention: a message is a string (a number is taken as its text, as Lua's
    -- string functions do); anything else is a mistake that raises naming the function.
    it("raises on arguments of the wrong type, naming the function", function()
        local function fails(pattern, fn, ...)
            local ok, err = pcall(fn, ...)
            assert.is_false(ok)
            assert.truthy(tostring(err):find(pattern, 1, true), tostring(err))
            assert.truthy(tostring(err):find("^[^:]*log_spec%.lua:%d+: "), tostring(err)) -- the caller's line
        end
        fails("log.info: expected a message (string) as argument 1, got table", log.info, {})
        fails("log.error: expected a message (string) as argument 1, got nil", log.error)
        fails("log.warn: expected a fields table as argument 2, got string", log.warn, "x", "y")
        fails('log.setLevel: expected "debug", "info", "warn" or "error", got number', log.setLevel, 5)
        fails('log.setLevel: expected "debug", "info", "warn" or "error", got "loud"', log.setLevel, "loud")
        fails('log.setFormat: expected "text" or "json", got nil', log.setFormat)
        fails('log.setOutput: expected "stderr", "stdout" or a path, got number', log.setOutput, 5)
        fails('log.setOutput: expected "stderr", "stdout" or a path, got ""', log.setOutput, "")
        fails("log.setQueueSize: expected a whole number of bytes >= 1, got 0", log.setQueueSize, 0)
        fails("log.setQueueSize: expected a whole number of bytes >= 1, got 1.5", log.setQueueSize, 1.5)
        fails("log.setQueueSize: expected a whole number of bytes >= 1, got string", log.setQueueSize, "1")
        fails("log.raw: expected a line (string), got nil", log.raw)
        log.info(5)
        log.debug({}) -- below the level: not made, not checked
        log.info("after", { t = {}, f = print, b = true })
        local data = wait_for(dir .. "/app.log", "after")
        assert.truthy(data:find("Z INFO 5\n", 1, true), data)
        assert.truthy(data:match('INFO after b=true f="function: [^"]+" t="table: 0x%x+"\n$'), data)
    end)

    it("takes its defaults from LUAIO_LOG_LEVEL, LUAIO_LOG_FORMAT and LUAIO_LOG_OUTPUT", function()
        local script = helper.script([[
            local log = require "log"
            log.info("hidden")
            log.warn("shown", { n = 1 })
            require("luaio.core").report("own info", "info")
            require("luaio.core").report("own warning", "warn")
        ]])
        local env = process.environ()
        env.LUAIO_LOG_LEVEL, env.LUAIO_LOG_FORMAT, env.LUAIO_LOG_OUTPUT = "warn", "json", dir .. "/env.log"
        local r = assert(process.run({ helper.luaio, script }, { env = env }))
        assert.are.equal(0, r.code, r.stderr)
        local json = require "json"
        local lines = {}
        for line in (fs.readFile(dir .. "/env.log") or ""):gmatch("[^\n]+") do lines[#lines + 1] = json.decode(line) end
        assert.are.equal(2, #lines)
        assert.are.same({ "warn", "shown", 1 }, { lines[1].level, lines[1].msg, lines[1].n })
        assert.are.same({ "warn", "luaio: own warning" }, { lines[2].level, lines[2].msg })
        env.LUAIO_LOG_OUTPUT, env.LUAIO_LOG_FORMAT = nil, "xml"
        r = assert(process.run({ helper.luaio, script }, { env = env }))
        os.remove(script)
        assert.are.equal(1, r.code)
        assert.truthy(r.stderr:find('log: LUAIO_LOG_FORMAT: expected "text" or "json", got "xml"', 1, true), r.stderr)
    end)

    it("drops lines when the queue is full and logs how many", function()
        log.setQueueSize(200)
        for i = 1, 100 do log.info("line " .. i) end -- no wait in between: the queue fills
        assert.is_true(log.dropped() > 0)
        local data = wait_for(dir .. "/app.log", "lines dropped")
        assert.truthy(data:find("WARN log: %d+ lines dropped"))
        assert.truthy(data:find("INFO line 1\n", 1, true))
    end)

    it("reopens its file on SIGUSR1 (logrotate)", function()
        log.info("before")
        wait_for(dir .. "/app.log", "before")
        assert(fs.rename(dir .. "/app.log", dir .. "/app.log.1"))
        assert(process.kill(process.pid, "SIGUSR1"))
        sleep(50)
        log.info("after")
        local data = wait_for(dir .. "/app.log", "after")
        assert.falsy(data:find("before", 1, true))
        assert.falsy(fs.readFile(dir .. "/app.log.1"):find("after", 1, true))
    end)

    it("refuses an output it cannot open, keeping the old one", function()
        local ok, err = log.setOutput(dir .. "/missing/app.log")
        assert.is_nil(ok)
        assert.are.equal("ENOENT", err.name)
        log.info("still here")
        wait_for(dir .. "/app.log", "still here")
    end)

    it("writes to stdout and stderr, and everything queued is out at exit", function()
        local out, err = run([[
            local log = require "log"
            log.setOutput("stdout")
            for i = 1, 5000 do log.info("n", {i = i}) end
        ]])
        local n = 0
        for _ in out:gmatch("INFO n i=%d+\n") do n = n + 1 end
        assert.are.equal(5000, n)
        assert.are.equal("", err)
        local _, err2 = run([[require("log").error("to stderr")]])
        assert.truthy(err2:find("ERROR to stderr", 1, true))
    end)

    -- The runtime's fatal-signal flush runs the log module's flush hook: the lines queued and
    -- the batch in the thread pool are written, each once and in order, before the signal's
    -- default action ends the process.
    it("writes everything queued when a signal with no handler ends the process", function()
        for _, sig in ipairs({ "SIGTERM", "SIGINT", "SIGHUP" }) do
            local path = dir .. "/" .. sig .. ".log"
            local script = helper.script(([[
                local log = require "log"
                local process = require "process"
                assert(log.setOutput(%q))
                for i = 1, 3000 do log.info("n", { i = i }) end
                sleep(0) -- over 64 KiB are queued: a batch goes to the thread pool
                for i = 3001, 6000 do log.info("n", { i = i }) end
                process.kill(process.pid, %q)
                sleep(1000)
                log.info("never")
            ]]):format(path, sig))
            local r = assert(process.run({ helper.luaio, script }, { timeout = 10000 }))
            os.remove(script)
            assert.are.equal(sig, r.signal, r.stderr)
            local data = fs.readFile(path) or ""
            local n = 0
            for i in data:gmatch("INFO n i=(%d+)\n") do
                n = n + 1
                if tonumber(i) ~= n then error(sig .. ": line " .. n .. " is " .. i) end
            end
            assert.are.equal(6000, n, sig)
            assert.falsy(data:find("never", 1, true))
        end
    end)

    it("sends luaio's own messages through the sink, in its format", function()
        local _, err = run([[
            local log = require "log"
            log.setFormat("json")
            require("task").spawn(function() error("boom") end)
        ]])
        local line = err:match("[^\n]+")
        local t = require("json").decode(line)
        assert.are.equal("error", t.level)
        assert.truthy(t.msg:find("boom", 1, true))
        assert.truthy(t.msg:find("stack traceback", 1, true))
    end)

    it("supervision messages too (process.fork forever)", function()
        local child = helper.script("os.exit(3)")
        local _, err = run(([[
            local log = require "log"
            local process = require "process"
            log.setFormat("json")
            local pid = process.fork({ file = %q, forever = { delay = 10, limit = 1 } })
            for _ = 1, 200 do
                if not process.kill(pid, 0) then break end
                sleep(10)
            end
        ]]):format(child))
        os.remove(child)
        local json = require "json"
        local msgs = {}
        for line in err:gmatch("[^\n]+") do
            local t = json.decode(line)
            if t then msgs[#msgs + 1] = t.msg end
        end
        -- Exactly the restart and the giving up: giving up failed the supervision task before
        -- (process.lua's forget() indexed the table with the nil pid of the dead child).
        assert.are.equal(2, #msgs, err)
        assert.truthy(msgs[1]:find("exited with code 3; restarting", 1, true), err)
        assert.truthy(msgs[2]:find("giving up", 1, true), err)
    end)

    describe("access log", function()
        after_each(function() http.closeIdle() end)

        it("combined, json, or a function", function()
            local s1 = assert(http.createServer({ port = 0, accessLog = "combined" }, function(_, res)
                res:finish("hello")
            end))
            assert(http.request({ url = "http://127.0.0.1:" .. s1.port .. "/a?b=1", headers = { Referer = "r" } }))
            local data = wait_for(dir .. "/app.log", "\n$")
            assert.truthy(data:match('^127%.0%.0%.1 %- %- %[%d%d/%a%a%a/%d%d%d%d:%d%d:%d%d:%d%d %+0000%] "GET /a%?b=1 HTTP/1%.1" 200 5 "r" "luaio"\n$'), data)
            s1:close()
            local s2 = assert(http.createServer({ port = 0, accessLog = "json" }, function(_, res)
                res:setStatus(201)
                res:write("ab")
                res:write("cd")
            end))
            assert(http.get("http://127.0.0.1:" .. s2.port .. "/j"))
            data = wait_for(dir .. "/app.log", "/j")
            local t = require("json").decode(data:match("\n([^\n]+)\n$"))
            assert.are.equal(201, t.status)
            assert.are.equal(4, t.bytes)
            assert.are.equal("GET", t.method)
            assert.are.equal("number", type(t.ms))
            s2:close()
            local got
            local s3 = assert(http.createServer({ port = 0, accessLog = function(req, _, info) got = info end },
                function(_, res) res:finish("xyz") end))
            assert(http.get("http://127.0.0.1:" .. s3.port .. "/f"))
            s3:close()
            assert.are.equal("/f", got.path)
            assert.are.equal(3, got.bytes)
            assert.are.equal("127.0.0.1", got.remoteAddress)
            assert.has_error(function() http.createServer({ port = 0, accessLog = "apache" }, function() end) end)
        end)

        -- The built-in formats are made in C++ as a response ends: what answers a request
        -- without the handler (a 413, a 500 after an error, http.serve) has its line too.
        it("logs what the server answers itself, and http.serve's responses", function()
            local s = assert(http.createServer({ port = 0, accessLog = "combined", maxBodySize = 10 }, function(req, res)
                if req.path == "/boom" then error("boom") end
                res:finish("hello")
            end))
            local base = "http://127.0.0.1:" .. s.port
            local r = assert(http.request({ url = base .. "/boom" }))
            assert.are.equal(500, r.status)
            r = assert(http.request({ method = "POST", url = base .. "/big", body = ("x"):rep(100) }))
            assert.are.equal(413, r.status)
            r = assert(http.request({ method = "HEAD", url = base .. "/head", headers = { ["User-Agent"] = 'a "q"' } }))
            assert.are.equal(200, r.status)
            local data = wait_for(dir .. "/app.log", "/head[^\n]*\n$")
            s:close()
            assert.truthy(data:find('"GET /boom HTTP/1.1" 500 ', 1, true), data)
            assert.truthy(data:find('"POST /big HTTP/1.1" 413 0 ', 1, true), data)
            assert.truthy(data:find('"HEAD /head HTTP/1.1" 200 0 "-" "a \\x22q\\x22"', 1, true), data)
            local seed = assert(http.serve({ port = 0, accessLog = "json" }, function() return { status = 202, body = "abc" } end))
            assert(http.get("http://127.0.0.1:" .. seed.port .. "/seed?x=1"))
            data = wait_for(dir .. "/app.log", "/seed")
            seed:close()
            local t = require("json").decode(data:match("\n([^\n]+)\n$"))
            assert.are.same({ "GET", "/seed?x=1", 202, 3, "127.0.0.1", "luaio" }, { t.method, t.path, t.status, t.bytes, t.remote, t.ua })
            assert.truthy(t.time:match("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$"), t.time)
            assert.are.equal("number", type(t.ms))
        end)

        it("logs the heads it answers itself because they cannot be parsed or come too slowly", function()
            local s = assert(http.createServer({ port = 0, accessLog = "combined", maxHeaderSize = 200,
                headerTimeout = 100 }, function(_, res) res:finish("ok") end))
            local tcp = require "tcp"
            -- Sends raw bytes and reads until the server closes; returns what came back.
            local function send(bytes)
                local sock = assert(tcp.connect(s.port, "127.0.0.1"))
                sock:settimeouts(3000, 3000, 3000)
                assert(sock:write(bytes) == nil)
                local got = {}
                while true do
                    local d = sock:read()
                    if not d then break end
                    got[#got + 1] = d
                end
                sock:close()
                return table.concat(got)
            end
            assert.truthy(send("GET /bad\1path HTTP/1.1\r\nHost: x\r\n\r\n"):find("^HTTP/1%.1 400 "))
            assert.truthy(send("GET /large HTTP/1.1\r\nX-Big: " .. ("b"):rep(300) .. "\r\n\r\n"):find("^HTTP/1%.1 431 "))
            assert.truthy(send("GET /slow HTTP/1.1\r\nHost: x\r\n"):find("^HTTP/1%.1 408 "))
            assert.truthy(send("\22\3\1garbage\r\n\r\n"):find("^HTTP/1%.1 400 "))
            local data = wait_for(dir .. "/app.log", "garbage[^\n]*\n$")
            s:close()
            assert.truthy(data:find('"GET /bad\\x01path HTTP/1.1" 400 0 "-" "-"\n', 1, true), data)
            assert.truthy(data:find('"GET /large HTTP/1.1" 431 0 "-" "-"\n', 1, true), data)
            assert.truthy(data:find('] "-" 408 0 "-" "-"\n', 1, true), data)
            assert.truthy(data:find('"\\x16\\x03\\x01garbage" 400 0 "-" "-"\n', 1, true), data)
            assert.truthy(data:find("^127%.0%.0%.1 %- %- %["), data)
            log.setFormat("json")
            local j = assert(http.createServer({ port = 0, accessLog = "json" }, function(_, res) res:finish("ok") end))
            local sock = assert(tcp.connect(j.port, "127.0.0.1"))
            assert(sock:write("BAD REQUEST LINE\r\n\r\n") == nil)
            sock:read()
            sock:close()
            data = wait_for(dir .. "/app.log", "BAD REQUEST LINE")
            j:close()
            local t = require("json").decode(data:match("\n([^\n]+)\n$"))
            assert.are.same({ "BAD REQUEST LINE", 400, 0, "127.0.0.1" }, { t.request, t.status, t.bytes, t.remote })
            assert.is_nil(t.method)
        end)

        it("logs a request whose connection closed before any response as 499", function()
            local s = assert(http.serve({ port = 0, accessLog = "combined" }, function(req)
                req.socket:close()
                return { status = "bad" } -- refused by respond: the task fails, nothing can be sent
            end))
            local _, err = http.get("http://127.0.0.1:" .. s.port .. "/gone")
            assert.truthy(err)
            local data = wait_for(dir .. "/app.log", "/gone")
            s:close()
            assert.truthy(data:find('"GET /gone HTTP/1.1" 499 0 "-" "luaio"', 1, true), data)
        end)

        it("raises on a wrong accessLog, naming the function", function()
            local ok, err = pcall(http.createServer, { port = 0, accessLog = 5 }, function() end)
            assert.is_false(ok)
            assert.truthy(err:find("createServer: option 'accessLog' must be", 1, true), err)
            ok, err = pcall(http.serve, { port = 0, accessLog = function() end }, function() end)
            assert.is_false(ok)
            assert.truthy(err:find("serve: option 'accessLog': a function works with http.createServer", 1, true), err)
        end)
    end)
end)
