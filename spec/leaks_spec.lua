-- The leak check that spec/helper.lua runs after every spec of every file (and spec/run.lua
-- after every file): each kind of leak fails the spec that left it, naming what is left.
local helper = require "helper"
local core = require "luaio.core"

-- Runs `body` (the source of a spec file) through spec/run.lua in a child luaio.
local function run_spec(body)
    local path = os.tmpname() .. "_spec.lua"
    local f = assert(io.open(path, "w"))
    f:write(body)
    f:close()
    local out, err, status = helper.run("spec/run.lua " .. path)
    os.remove(path)
    return out .. err, status
end

describe("the leak check after every spec", function()
    it("fails a spec that leaves a server listening, and names its handle and descriptor", function()
        local out, status = run_spec([[
            local tcp = require "tcp"
            it("leaks", function() assert(tcp.createServer(0, function() end, { host = "127.0.0.1" })) end)
            it("is clean", function() end)
        ]])
        assert.are.equal(1, status)
        assert.truthy(out:find("leak check: 'leaks' left 1 handle(s) open (all open now: tcp)", 1, true), out)
        assert.truthy(out:find("1 file descriptor(s) open (", 1, true), out)
        assert.truthy(out:find("2 successes / 0 failures / 1 error", 1, true), out)
    end)

    it("fails a spec that leaves a task waiting", function()
        local out, status = run_spec([[
            local task = require "task"
            local core = require "luaio.core"
            it("leaks", function() task.spawn(function() core.suspend() end) end)
        ]])
        assert.are.equal(1, status)
        assert.truthy(out:find("leak check: 'leaks' left 1 task(s) running", 1, true), out)
    end)

    it("fails a spec that leaves a socket open without reading it", function()
        local out, status = run_spec([[
            local tcp = require "tcp"
            it("leaks", function()
                local srv = assert(tcp.createServer(0, function(s) s:read() end, { host = "127.0.0.1" }))
                _G.kept = assert(tcp.connect(srv:address().port, "127.0.0.1"))
                srv:close()
            end)
        ]])
        assert.are.equal(1, status)
        assert.truthy(out:find("leak check: 'leaks' left", 1, true), out)
        assert.truthy(out:find("file descriptor%(s%) open %(%d+ socket:%["), out)
    end)

    it("fails a file whose setup() opens what its teardown() does not close", function()
        local out, status = run_spec([[
            local tcp = require "tcp"
            describe("d", function()
                setup(function() _G.srv = assert(tcp.createServer(0, function() end, { host = "127.0.0.1" })) end)
                it("uses it", function() end)
            end)
        ]])
        assert.are.equal(1, status)
        assert.truthy(out:find("1 success / 0 failures / 0 errors", 1, true), out)
        assert.truthy(out:find("leak check: the spec file left 1 handle(s) open", 1, true), out)
    end)

    it("passes a spec that closes what it opens", function()
        local out, status = run_spec([[
            local tcp = require "tcp"
            it("is clean", function()
                local srv = assert(tcp.createServer(0, function(s) s:read() end, { host = "127.0.0.1" }))
                local c = assert(tcp.connect(srv:address().port, "127.0.0.1"))
                c:close()
                srv:close()
            end)
        ]])
        assert.are.equal(0, status, out)
    end)

    it("counts descriptors and open handles", function()
        local n, names = core.fds(true)
        assert.is_true(n >= 3)
        assert.truthy(names[0] and names[1] and names[2])
        local h, types = core.handles(true)
        assert.are.equal("number", type(h))
        assert.are.equal("string", type(types))
    end)
end)
