-- Iterators over a resource (a directory, a file) let a forgotten one be collected and closed,
-- also after LuaJIT compiled the loop over it: a trace keeps the function its loop calls alive
-- for as long as it lives, so an iterator closure made per loop that held its directory or file
-- kept the descriptor open (docs/CONTRIBUTING-internals.md).
local fs = require "fs"
local task = require "task"
local helper = require "helper"

describe("iterators over resources", function()
    local dir
    setup(function()
        dir = assert(fs.mkdtemp(fs.tmpdir() .. "/luaio-iter-"))
        for i = 1, 20 do
            assert(fs.writeFile(dir .. "/f" .. i, ("line\n"):rep(10)))
        end
    end)
    teardown(function()
        fs.rm(dir, { recursive = true, force = true })
    end)

    -- Runs loop in a task of its own (a dead loop's iterator may stay in its frame's stack
    -- slots) with every loop compiled at once, then checks the descriptors come back.
    local function forgotten(loop)
        local fds = helper.fd_count()
        jit.opt.start("hotloop=1")
        task.spawn(loop):join()
        jit.opt.start("hotloop=56") -- LuaJIT's default
        local back = helper.wait_for(function()
            collectgarbage()
            return helper.fd_count() <= fds
        end, 3000)
        assert.is_true(back, "a descriptor stayed open: " .. helper.fd_count() .. " > " .. fds)
    end

    it("fs.dir: a directory whose loop was left early is closed once collected", function()
        forgotten(function()
            local n = 0
            for name in fs.dir(dir) do
                n = n + 1
                if n == 5 then break end
            end
            assert.are.equal(5, n)
        end)
        -- And a whole loop still lists every entry, then ends.
        local names = {}
        for name, kind in fs.dir(dir) do
            names[#names + 1] = name
            assert.are.equal("file", kind)
        end
        assert.are.equal(20, #names)
    end)

    it("f:lines: a file whose loop was left early is closed once collected", function()
        forgotten(function()
            local n = 0
            for line in assert(fs.open(dir .. "/f1", "r")):lines() do
                n = n + 1
                if n == 5 then break end
            end
            assert.are.equal(5, n)
        end)
        local f = assert(fs.open(dir .. "/f2", "r"))
        local n = 0
        for line in f:lines() do
            n = n + 1
            assert.are.equal("line", line)
        end
        assert.are.equal(10, n)
        f:close()
    end)
end)

describe("iterators over connections", function()
    local http = require "http"
    local websocket = require "websocket"

    -- As above, for a connection: the descriptor of a forgotten one comes back once collected.
    local function forgotten(loop)
        local fds = helper.fd_count()
        jit.opt.start("hotloop=1")
        task.spawn(loop):join()
        jit.opt.start("hotloop=56") -- LuaJIT's default
        local back = helper.wait_for(function()
            collectgarbage()
            return helper.fd_count() <= fds
        end, 3000)
        assert.is_true(back, "a descriptor stayed open: " .. helper.fd_count() .. " > " .. fds)
    end

    it("ws:messages: a client connection whose loop was left early is closed once collected", function()
        local srv = assert(http.createServer({ port = 0, host = "127.0.0.1" }, function(req, res)
            local ws = websocket.accept(req, res)
            if not ws then return end
            for i = 1, 10 do
                if ws:send("m" .. i) then return end
            end
            -- Stays open: the client forgets its side.
            for _ in ws:messages() do end
        end))
        local fds = helper.fd_count()
        forgotten(function()
            local ws = assert(websocket.connect("ws://127.0.0.1:" .. srv.port .. "/"))
            local n = 0
            for msg in ws:messages() do
                n = n + 1
                if n == 5 then break end
            end
            assert.are.equal(5, n)
        end)
        srv:close()
        assert.is_true(helper.fds_back_to(fds, 3000) <= fds)
    end)
end)
