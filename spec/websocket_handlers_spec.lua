-- ws:handle{open, message, close} and r:websocket with a table of handlers: a task per event
-- batch and none while idle; one message at a time, in order; a failed handler closes with 1011;
-- the close handler's code and reason; idle connections kept, closed ones collected;
-- backpressure while a handler runs.
local http = require "http"
local websocket = require "websocket"
local task = require "task"
local timer = require "timer"
local raw = require "ws_raw"

local rep = string.rep

-- Waits (bounded) until cond() is true.
local function wait_for(cond, what)
    for _ = 1, 500 do
        if cond() then
            return
        end
        timer.sleep(10)
    end
    error("timed out waiting for " .. what)
end

describe("websocket handlers", function()
    local srv, port, log, gate, running, most, closes, weak
    setup(function()
        local r = http.router()
        r:websocket("/echo/:name", {
            open = function(ws, req, params)
                weak[ws] = true
                ws:send("open " .. params.name .. " " .. req.path)
            end,
            message = function(ws, msg, kind)
                running = running + 1
                most = math.max(most, running)
                log[#log + 1] = msg
                if msg == "boom" then
                    running = running - 1
                    error("handler failed on purpose")
                elseif msg == "wait" then
                    gate:receive() -- the connection is not read meanwhile
                elseif msg == "yield" then
                    task.yield()
                    timer.sleep(1)
                elseif msg == "close" then
                    running = running - 1
                    ws:close(4000, "asked")
                    return
                end
                running = running - 1
                if kind == "text" then -- binary messages are only counted
                    ws:send(msg, kind)
                end
            end,
            close = function(ws, code, reason)
                closes[#closes + 1] = { ws = ws, code = code, reason = reason }
            end,
        })
        r:websocket("/bare", { message = function(ws, msg) ws:send(msg) end })
        r:websocket("/idle", {
            message = function(ws, msg)
                if msg == "slow" then
                    timer.sleep(1500) -- longer than idleTimeout: a running handler is not idleness
                end
                ws:send(msg)
            end,
            close = function(ws, code, reason)
                closes[#closes + 1] = { ws = ws, code = code, reason = reason }
            end,
        }, { idleTimeout = 600 })
        srv = assert(http.createServer({ port = 0, host = "127.0.0.1" }, r))
        port = srv.port
    end)
    teardown(function()
        srv:close()
    end)
    before_each(function()
        log, running, most, closes = {}, 0, 0, {}
        gate = task.channel()
        weak = setmetatable({}, { __mode = "k" })
    end)
    after_each(function()
        http.closeIdle()
    end)

    local function connect(name)
        local ws = assert(websocket.connect("ws://127.0.0.1:" .. port .. "/echo/" .. (name or "a")))
        assert.are.equal("open " .. (name or "a") .. " /echo/" .. (name or "a"), (ws:receive()))
        return ws
    end

    it("runs one message at a time, in order, even when handlers wait", function()
        local ws = connect()
        local sent = {}
        for i = 1, 200 do
            local m = i % 7 == 0 and "yield" or ("m" .. i)
            sent[#sent + 1] = m
            assert.is_nil(ws:send(m))
        end
        for i = 1, 200 do
            assert.are.equal(sent[i], (ws:receive()))
        end
        assert.are.same(sent, log)
        assert.are.equal(1, most)
        assert.is_nil(ws:close())
        wait_for(function() return #closes == 1 end, "the close handler")
        assert.are.equal(1000, closes[1].code)
    end)

    it("gives the close handler the peer's code and reason, and 1006 without a close frame", function()
        local ws = connect()
        assert.is_nil(ws:close(4001, "bye"))
        wait_for(function() return #closes == 1 end, "the close handler")
        assert.are.equal(4001, closes[1].code)
        assert.are.equal("bye", closes[1].reason)

        local sock = raw.connect(port, "/echo/b")
        local op, p = raw.read_frame(sock)
        assert.are.equal(1, op)
        assert.are.equal("open b /echo/b", p)
        sock:close() -- no close frame
        wait_for(function() return #closes == 2 end, "the second close handler")
        assert.are.equal(1006, closes[2].code)
        assert.are.equal("", closes[2].reason)
    end)

    it("closes with 1011 when a handler raises, and the server goes on", function()
        local ws = connect()
        assert.is_nil(ws:send("boom"))
        local msg, err = ws:receive()
        assert.is_nil(msg)
        assert.are.equal("EOF", err.name)
        assert.are.equal(1011, err.closeCode)
        wait_for(function() return #closes == 1 end, "the close handler")
        assert.are.equal(1011, closes[1].code)
        -- Another connection is served.
        local ws2 = connect("c")
        assert.is_nil(ws2:send("still here"))
        assert.are.equal("still here", (ws2:receive()))
        assert.is_nil(ws2:close())
    end)

    it("lets a handler close its connection itself", function()
        local ws = connect()
        assert.is_nil(ws:send("close"))
        local msg, err = ws:receive()
        assert.is_nil(msg)
        assert.are.equal(4000, err.closeCode)
        assert.are.equal("asked", err.reason)
        wait_for(function() return #closes == 1 end, "the close handler")
        assert.are.equal(4000, closes[1].code)
    end)

    it("keeps idle connections through garbage collection and collects closed ones", function()
        local a, b = connect("a"), connect("b")
        wait_for(function() return next(weak) ~= nil end, "the open handlers")
        for _ = 1, 3 do
            collectgarbage()
        end
        assert.is_nil(a:send("after gc"))
        assert.are.equal("after gc", (a:receive()))
        assert.is_nil(b:send("b too"))
        assert.are.equal("b too", (b:receive()))
        assert.is_nil(a:close())
        assert.is_nil(b:close())
        wait_for(function() return #closes == 2 end, "the close handlers")
        closes = {}
        -- Collected at some full cycle (bounded): when exactly is the collector's business.
        wait_for(function()
            collectgarbage()
            return next(weak) == nil
        end, "the closed connections to be collected")
    end)

    it("does not read the connection while its message handler runs (backpressure)", function()
        local sock = raw.connect(port, "/echo/bp")
        assert.are.equal("open bp /echo/bp", select(2, raw.read_frame(sock)))
        assert.is_nil(sock:write(raw.frame(0x81, "wait")))
        wait_for(function() return #log == 1 end, "the first message")
        -- 64 MiB behind the waiting handler: more than the kernel buffers hold here (the
        -- receive buffer may grow to 32 MiB), so the client's own queue fills: luaio is not
        -- reading. Queued without copies (the same string each time).
        local big = raw.frame(0x82, rep("x", 65536))
        for _ = 1, 1024 do
            assert.is_nil(sock:trywrite(big, math.huge))
        end
        timer.sleep(50)
        assert.are.equal(1, #log) -- no other handler ran
        local err = sock:trywrite(big, 0) -- nothing is written while bytes are queued
        assert.is_truthy(err)
        assert.are.equal("EAGAIN", err.name)
        gate:send(true)
        assert.is_nil(sock:write(raw.frame(0x81, "done")))
        for _ = 1, 1100 do
            local op, p = raw.read_frame(sock)
            assert.is_truthy(op)
            if p == "done" then
                break
            end
        end
        assert.are.equal(1026, #log)
        assert.are.equal("done", log[1026])
        sock:close()
        wait_for(function() return #closes == 1 end, "the close handler")
    end)

    it("closes a connection quiet for idleTimeout, not one that talks or whose handler runs", function()
        local ws = assert(websocket.connect("ws://127.0.0.1:" .. port .. "/idle"))
        for i = 1, 16 do -- 800 ms of messages 50 ms apart (idleTimeout is 600 ms)
            assert.is_nil(ws:send("m" .. i))
            assert.are.equal("m" .. i, (ws:receive()))
            timer.sleep(50)
        end
        assert.is_nil(ws:send("slow"))
        assert.are.equal("slow", (ws:receive()))
        assert.are.equal(0, #closes)
        -- Now quiet: closed without a close frame within idleTimeout and a quarter of it.
        local msg, err = ws:receive()
        assert.is_nil(msg)
        assert.are.equal(1006, err.closeCode)
        wait_for(function() return #closes == 1 end, "the close handler")
        assert.are.equal(1006, closes[1].code)
    end)

    it("holds little Lua memory per idle connection: the stream owns the frame parser", function()
        -- Idle handled connections, each after one message, as bench/websocket/run.sh idle makes
        -- them; the Lua heap after full collections, per connection, this process's raw client
        -- sockets included (about 100 bytes each): 373 bytes when the server's share was about
        -- 300 (a ws table, a userdata of frames, the socket's proxy, a reference), 270 since the
        -- stream owns the frames. An idle connection's Lua bytes count about twice in RSS.
        local n, socks = 200, {}
        local function live()
            for _ = 1, 3 do
                collectgarbage()
            end
            return collectgarbage("count") * 1024
        end
        socks[1] = raw.connect(port, "/bare") -- what the first connection loads is not counted
        assert.is_nil(socks[1]:write(raw.frame(0x81, "hi", true)))
        assert.are.equal("hi", select(2, raw.read_frame(socks[1])))
        local before = live()
        for i = 2, n + 1 do
            socks[i] = raw.connect(port, "/bare")
            assert.is_nil(socks[i]:write(raw.frame(0x81, "hi", true)))
            assert.are.equal("hi", select(2, raw.read_frame(socks[i])))
        end
        local per = (live() - before) / n
        for _, sock in ipairs(socks) do
            sock:close()
        end
        assert.is_true(per < 320, string.format("%.0f bytes of Lua heap per idle connection", per))
    end)

    it("refuses ws:receive() on a handled connection and checks the handlers", function()
        local ws = assert(websocket.connect("ws://127.0.0.1:" .. port .. "/bare"))
        ws:handle({
            message = function(c, msg)
                log[#log + 1] = msg
                local m, e = c:receive()
                log[#log + 1] = e.name
                assert.is_nil(m)
            end,
        })
        local m, e = ws:receive()
        assert.is_nil(m)
        assert.are.equal("EBUSY", e.name)
        assert.is_nil(ws:send("ping me"))
        wait_for(function() return #log == 2 end, "the client's handler")
        assert.are.same({ "ping me", "EBUSY" }, log)
        assert.has_error(function() ws:handle({ message = print }) end, "handle: this websocket already has handlers")
        assert.is_nil(ws:close())
        local ws2 = assert(websocket.connect("ws://127.0.0.1:" .. port .. "/bare"))
        assert.has_error(function() ws2:handle({ mesage = print }) end,
            "handle: unknown handler 'mesage' (open, message, close)")
        assert.has_error(function() ws2:handle({ message = 5 }) end, "handle: handler 'message' must be a function, got number")
        assert.has_error(function() ws2:handle() end, "handle: expected a table of handlers {open, message, close}, got nil")
        assert.is_nil(ws2:close())
        local r = http.router()
        assert.has_error(function() r:websocket("/x", { mesage = print }) end,
            "router:websocket: unknown handler 'mesage' (open, message, close)")
    end)
end)
