-- luaio.compat.luars: seed 001's globals, and its handler.lua served unchanged.
local luars = require "luaio.compat.luars"
local fs = require "fs"
local http = require "http"
local process = require "process"
local system = require "system"
local helper = require "helper"

local handler_file = helper.source_dir .. "/examples/luars/handler.lua"

describe("luaio.compat.luars", function()
    it("defines read_file, http_get and sleep(seconds) as globals", function()
        assert.are.equal(luars.read_file, read_file)
        assert.are.equal(luars.http_get, http_get)
        assert.are.equal(luars.sleep, sleep)
    end)

    it("read_file returns the content and raises the error table with the path", function()
        local dir = assert(fs.mkdtemp(fs.tmpdir() .. "/luaio-luars-"))
        assert(fs.writeFile(dir .. "/a", "content"))
        assert.are.equal("content", read_file(dir .. "/a"))
        local ok, err = pcall(read_file, dir .. "/missing")
        assert.is_false(ok)
        assert.are.equal("ENOENT", err.name)
        assert.are.equal(dir .. "/missing", err.path)
        assert.has_error(function() read_file(1) end, "read_file: expected a path (a string) as argument 1, got number")
        assert(fs.rm(dir, { recursive = true }))
    end)

    it("sleep takes seconds and returns true", function()
        local t0 = system.hrtime()
        assert.is_true(sleep(0.05))
        assert.is_true((system.hrtime() - t0) / 1e6 >= 49)
        assert.has_error(function() sleep("1") end)
    end)

    it("http_get returns the body", function()
        local server = assert(http.serve({ host = "127.0.0.1", port = 0 }, function(req)
            return { status = 200, body = "got " .. req.path }
        end))
        local port = server:address().port
        assert.are.equal("got /x", http_get("http://127.0.0.1:" .. port .. "/x"))
        local ok, err = pcall(http_get, "http://127.0.0.1:1/")
        assert.is_false(ok)
        assert.are.equal("ECONNREFUSED", err.name)
        server:close()
        http.closeIdle()
    end)

    it("runs seed 001's handler.lua unchanged behind http.serve", function()
        dofile(handler_file)
        local server = assert(http.serve({ host = "127.0.0.1", port = 0 }, luars.handler(handle_request)))
        local base = "http://127.0.0.1:" .. server:address().port
        local res = assert(http.get(base .. "/"))
        assert.are.equal(200, res.status)
        assert.are.equal("text/plain", res.headers["content-type"])
        assert.are.equal("Hello from luars!", res.body)
        assert.truthy(assert(http.get(base .. "/time")).body:match("^%d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d$"))
        res = assert(http.request({ method = "POST", url = base .. "/echo", body = "ping" }))
        assert.are.equal("ping", res.body)
        local t0 = system.hrtime()
        res = assert(http.get(base .. "/sleep"))
        assert.are.equal("Slept for 1 second", res.body)
        assert.is_true((system.hrtime() - t0) / 1e6 >= 999)
        res = assert(http.get(base .. "/nope"))
        assert.are.equal(404, res.status)
        assert.are.equal("Not Found", res.body)
        server:close()
        http.closeIdle()
    end)

    it("the example runs as a program", function()
        local env = process.environ()
        env.PORT = "0"
        local child = assert(process.spawn(helper.luaio, { helper.source_dir .. "/examples/luars/main.lua" },
            { env = env, stdio = { "ignore", "pipe", "inherit" } }))
        local line = assert(child.stdout:readline())
        local port = assert(tonumber(line:match("listening on (%d+)")), line)
        local res = assert(http.get("http://127.0.0.1:" .. port .. "/"))
        assert.are.equal("Hello from luars!", res.body)
        http.closeIdle()
        child:kill("SIGKILL")
        child:wait()
        child.stdout:close()
    end)
end)
