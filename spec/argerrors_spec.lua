-- Argument errors name the function and point at the caller's line (this file), not at
-- luaio's own lib/ code; a Lua-side method called with a wrong self says so.
local process = require "process"
local system = require "system"
local http = require "http"
local tcp = require "tcp"
local task = require "task"
local timer = require "timer"
local dns = require "dns"
local router = require "http.router"
local helper = require "helper"

local here = debug.getinfo(1, "S").short_src

-- Calls f (a closure whose one call is the mistake) and checks the message: this file's
-- position first, then "<fname>: " and the rest.
local function raises(fname, f)
    local ok, err = pcall(f)
    assert.is_false(ok, fname .. " did not raise")
    err = tostring(err)
    local prefix = here:gsub("%p", "%%%0") .. ":%d+: " .. fname:gsub("%p", "%%%0") .. ": "
    assert.matches("^" .. prefix, err)
    assert.is_nil(err:find("lib/", 1, true), err)
    assert.is_nil(err:find("'?'", 1, true), err)
end

describe("argument errors", function()
    it("name the function in C++ bindings", function()
        raises("process.wait", function() process.wait("x") end)
        raises("process.signame", function() process.signame({}) end)
        raises("process.affinity", function() process.affinity("x") end)
        raises("process.kill", function() process.kill({}) end)
        raises("process.chdir", function() process.chdir({}) end)
        raises("process.closeSocket", function() process.closeSocket("x") end)
        raises("system.sleep", function() system.sleep("x") end)
        raises("http.decode", function() http.decode({}) end)
        raises("http.query", function() http.query({}) end)
        raises("errors.new", function() require("luaio.errors").new("EBOGUS") end)
        raises("errors.raise", function() require("luaio.errors").raise({}) end)
        raises("tostring", function() require("luaio.errors").metatable.__tostring(5) end)
    end)

    it("name the method of a socket", function()
        local srv = assert(tcp.createServer(0, function(sock) sock:read() end, { host = "127.0.0.1" }))
        local s = assert(tcp.connect(srv:address().port, "127.0.0.1"))
        raises("settimeouts", function() s:settimeouts("x") end)
        raises("setTimeout", function() s:setTimeout({}) end)
        raises("read", function() s:read("x") end)
        raises("readline", function() s:readline("x") end)
        raises("readuntil", function() s:readuntil({}) end)
        raises("setKeepalive", function() s:setKeepalive(true, "x") end)
        s:close()
        srv:close()
        assert(helper.idle())
    end)

    it("number a C method's arguments as the call is written, and say when ':' was meant", function()
        local fs = require "fs"
        local function message(f)
            local ok, err = pcall(f)
            assert.is_false(ok)
            return (tostring(err):gsub("^[^:]*:%d+: ", ""))
        end
        local srv = assert(tcp.createServer(0, function(sock) sock:read() end, { host = "127.0.0.1" }))
        local s = assert(tcp.connect(srv:address().port, "127.0.0.1"))
        -- In s:setTimeout({}), the table is argument 1 (self is not counted).
        assert.are.equal("setTimeout: expected a number as argument 1, got table", message(function() s:setTimeout({}) end))
        assert.are.equal("setKeepalive: expected a number as argument 2, got string",
            message(function() s:setKeepalive(true, "x") end))
        assert.are.equal("read: expected a number as argument 1, got table", message(function() s:read({}) end))
        assert.are.equal("read: expected a stream as argument 1, got number (a method: call it with ':')",
            message(function() s.read(5) end))
        s:close()
        srv:close()
        local f = assert(fs.open(here))
        assert.are.equal("write: expected data (a string) as argument 1, got table", message(function() f:write({}) end))
        assert.are.equal("read: expected an integer as argument 1, got string", message(function() f:read("x") end))
        assert.are.equal("read: expected an offset (a number) as argument 2, got string",
            message(function() f:read(1, "x") end))
        assert.are.equal("seek: whence must be \"set\", \"cur\" or \"end\", got 'middle'",
            message(function() f:seek("middle") end))
        assert.are.equal("read: expected a file as argument 1, got number (a method: call it with ':')",
            message(function() f.read(5) end))
        assert(f:close())
        local t = timer.setTimeout(10, function() end)
        assert.are.equal("stop: expected a timer as argument 1, got number (a method: call it with ':')",
            message(function() t.stop(5) end))
        t:stop()
        -- A plain function keeps its numbering, and is not told about ':'.
        assert.are.equal("setTimeout: expected milliseconds (a number) as argument 1, got string",
            message(function() timer.setTimeout("x") end))
        assert.are.equal("readFile: expected a path (a string) as argument 1, got number",
            message(function() fs.readFile(5) end))
        assert(helper.idle())
    end)

    it("point at the caller through lib/ wrappers", function()
        raises("tcp.createServer", function() tcp.createServer(0, function() end, { bogus = 1 }) end)
        raises("tcp.createServer", function() tcp.createServer("x") end)
        raises("tcp.connect", function() tcp.connect(1, 5) end)
        raises("tcp.connect", function() tcp.connect(1, "127.0.0.1", { bogus = 1 }) end)
        raises("tcp.isIP", function() tcp.isIP(5) end)
        raises("tls.connect", function() require("tls").connect("x") end)
        raises("tls.connect", function() require("tls").connect(1, 5) end)
        raises("tls.connect", function() require("tls").connect(1, "127.0.0.1", { bogus = 1 }) end)
        raises("http.createServer", function() http.createServer({ port = 0, bogus = 1 }, function() end) end)
        raises("http.createServer", function() http.createServer({ port = 0, tcp_backlog = 0 }, function() end) end)
        raises("http.serve", function() http.serve({ port = 0, bogus = 1 }, function() end) end)
        raises("http.request", function() http.request({ url = "http://127.0.0.1:1/", bogus = 1 }) end)
        raises("http.request", function() http.request({ url = "http://127.0.0.1:1/", method = "B D" }) end)
        raises("http.get", function() http.get(5) end)
        raises("http.get", function() http.get("http://127.0.0.1:1/", { headers = { ["A B"] = "x" } }) end)
        raises("process.run", function() process.run(5) end)
        raises("process.spawn", function() process.spawn(5) end)
        raises("process.fork", function() process.fork({ args = 5 }) end)
        raises("lookup", function() dns.lookup(5) end)
        raises("setTimeout", function() timer.setTimeout("x") end)
        raises("task.spawn", function() task.spawn(5) end)
        raises("task.channel", function() task.channel(-1) end)
        raises("router:get", function() router.new():get(5, function() end) end)
    end)

    it("a Lua-side method with a wrong self raises a clear error", function()
        local ch = task.channel(1)
        raises("ch:send", function() ch.send(5) end)
        raises("ch:receive", function() ch.receive() end)
        raises("ch:close", function() ch.close("x") end)
        local h = task.spawn(function() end)
        raises("h:join", function() h.join(5) end)
        h:join()
        local seen = {}
        local srv = assert(http.createServer({ port = 0, host = "127.0.0.1" }, function(req, res)
            seen.finish = { pcall(res.finish, "x") }
            seen.setHeader = { pcall(res.setHeader, "a", "b") }
            seen.body = { pcall(req.body) }
            res:finish()
        end))
        assert(http.get("http://127.0.0.1:" .. srv.port .. "/"))
        for _, name in ipairs({ "finish", "setHeader", "body" }) do
            local r = seen[name]
            assert.is_false(r[1])
            assert.matches("^" .. here:gsub("%p", "%%%0") .. ":%d+: [a-z:]*" .. name .. ": expected a re", r[2])
        end
        http.closeIdle()
        raises("server:close", function() srv.close(5) end)
        raises("server:address", function() srv.address(5) end)
        raises("server:connections", function() srv.connections() end)
        local r = router.new()
        raises("router:add", function() r.add(5, "GET", "/", print) end)
        raises("router:handle", function() r.handle(5) end)
        srv:close()
        assert(helper.idle())
    end)
end)
