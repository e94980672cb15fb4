-- websocket.hub(): topics, publish encoded once and written without waiting, slow subscribers
-- closed or skipped at maxQueue; several tasks sending on one connection, in order.
local http = require "http"
local websocket = require "websocket"
local task = require "task"
local timer = require "timer"
local helper = require "helper"
local raw = require "ws_raw"

local rep = string.rep

describe("websocket.hub", function()
    local srv, port, hub, dropper, ended
    setup(function()
        hub = websocket.hub({ maxQueue = 256 * 1024 })
        dropper = websocket.hub({ maxQueue = 256 * 1024, slow = "drop" })
        ended = {}
        local r = http.router()
        local function sub(h)
            return function(ws, req, params)
                h:join(ws, params.topic)
                ws:send("joined")
                for msg in ws:messages() do
                    if msg == "leave" then
                        ws:send(tostring(h:leave(ws, params.topic)) .. " " .. tostring(h:leave(ws, params.topic)))
                    else
                        h:publish(params.topic, msg)
                    end
                end
                local _, err = ws:receive()
                ended[#ended + 1] = err
            end
        end
        r:websocket("/t/:topic", sub(hub))
        r:websocket("/z/:topic", sub(hub), { deflate = { noContextTakeover = true } })
        r:websocket("/zc/:topic", sub(hub), { deflate = true })
        r:websocket("/d/:topic", sub(dropper))
        r:websocket("/f/:topic", sub(hub), { fragmentSize = 1000 })
        r:websocket("/fz/:topic", sub(hub), { fragmentSize = 100, deflate = { noContextTakeover = true } })
        r:websocket("/q/:topic", sub(hub), { closeTimeout = 100 })
        r:websocket("/mix", function(ws)
            hub:join(ws, "mix")
            for msg in ws:messages() do
                -- Small published frames are corked until the loop waits; a send, a ping and a
                -- large published frame on the same connection must not overtake them.
                hub:publish("mix", "p1")
                ws:send("s1")
                hub:publish("mix", "p2")
                ws:ping("ping")
                hub:publish("mix", "p3")
                hub:publish("mix", rep("L", 40000))
                hub:publish("mix", "p4")
                ws:send("s2")
            end
        end)
        srv = assert(http.createServer({ port = 0, host = "127.0.0.1" }, r))
        port = srv.port
    end)
    teardown(function()
        srv:close()
    end)
    after_each(function() http.closeIdle() end)

    local function client(path, o)
        local ws = assert(websocket.connect("ws://127.0.0.1:" .. port .. path, o))
        assert.are.equal("joined", (ws:receive()))
        return ws
    end

    it("publishes to every subscriber of a topic, and a closed or departed one leaves", function()
        local a, b, c = client("/t/news"), client("/t/news"), client("/t/other")
        assert.are.equal(2, hub:subscribers("news"))
        assert.are.equal(1, hub:subscribers("other"))
        assert.are.equal(0, hub:subscribers("nobody"))
        assert.are.equal(2, hub:publish("news", "hello"))
        assert.are.same({ "hello", "text" }, { a:receive() })
        assert.are.same({ "hello", "text" }, { b:receive() })
        assert.are.equal(1, hub:publish("other", { "bin", "\0ary" }, "binary"))
        assert.are.same({ "bin\0ary", "binary" }, { c:receive() })
        assert.are.equal(0, hub:publish("nobody", "x"))
        -- A subscriber publishes through the server: everyone gets it, itself included.
        assert.is_nil(a:send("from a"))
        assert.are.equal("from a", (a:receive()))
        assert.are.equal("from a", (b:receive()))
        assert.is_nil(b:send("leave"))
        assert.are.equal("true false", (b:receive()))
        assert.are.equal(1, hub:subscribers("news"))
        a:close()
        assert.is_true(helper.wait_for(function() return hub:subscribers("news") == 0 end))
        b:close()
        c:close()
        assert.is_true(helper.wait_for(function() return hub:subscribers("other") == 0 end))
    end)

    it("keeps the order of published frames, sends, pings and large frames on a connection", function()
        local sock = raw.connect(port, "/mix")
        assert(sock:write(raw.frame(0x81, "go")) == nil)
        local got = {}
        for _ = 1, 8 do
            local op, p = raw.read_frame(sock)
            got[#got + 1] = op == 9 and "ping:" .. p or (#p > 100 and "L" .. #p or p)
        end
        assert.are.same({ "p1", "s1", "p2", "ping:ping", "p3", "L40000", "p4", "s2" }, got)
        sock:close()
    end)

    it("refuses text that is not UTF-8 and bad arguments with clear errors", function()
        local a = client("/t/u")
        local n, err = hub:publish("u", "\xff\xfe")
        assert.are.equal(0, n)
        assert.are.equal("EILSEQ", err.name)
        assert.are.equal(1, hub:publish("u", "\xff\xfe", "binary"))
        assert.are.equal("\xff\xfe", (a:receive()))
        assert.has_error(function() hub:publish(1, "x") end)
        assert.has_error(function() hub:publish("u", 5) end)
        assert.has_error(function() hub:join({}, "u") end, "hub:join: expected a websocket as argument 1, got table")
        assert.has_error(function() hub:leave(nil, "u") end, "hub:leave: expected a websocket as argument 1, got nil")
        assert.has_error(function() hub.publish({}, "u", "x") end)
        assert.has_error(function() websocket.hub({ slow = "ignore" }) end)
        assert.has_error(function() websocket.hub({ maxQueue = -1 }) end)
        a:close()
    end)

    it("compresses once for subscribers without context takeover and per connection otherwise", function()
        -- Two raw subscribers that negotiated no context takeover get the same bytes.
        local ext = "Sec-WebSocket-Extensions: permessage-deflate\r\n"
        local r1, h1 = raw.connect(port, "/z/zz", ext)
        local r2 = raw.connect(port, "/z/zz", ext)
        assert.truthy(h1:lower():find("server_no_context_takeover", 1, true))
        assert.truthy(h1:lower():find("client_no_context_takeover", 1, true))
        for _, s in ipairs({ r1, r2 }) do
            local op, p = raw.read_frame(s)
            assert.are.same({ 1 }, { op }) -- "joined"
            assert.truthy(#p > 0)
        end
        local ctx = client("/zc/zz", { deflate = true })
        local plain = client("/t/zz")
        local msg = rep("compressible ", 200)
        assert.are.equal(4, hub:publish("zz", msg))
        local op1, p1, b1 = raw.read_frame(r1)
        local op2, p2, b2 = raw.read_frame(r2)
        assert.are.equal(1, op1)
        assert.are.equal(0x40, bit.band(b1, 0x40)) -- RSV1: compressed
        assert.is_true(#p1 < #msg / 4)
        assert.are.same({ op1, p1, b1 }, { op2, p2, b2 })
        assert.are.equal(msg, (ctx:receive()))
        assert.are.equal(msg, (plain:receive()))
        assert.are.equal(2, hub:publish("zz", msg .. "again") - 2)
        assert.are.equal(msg .. "again", (ctx:receive()))
        assert.are.equal(msg .. "again", (plain:receive()))
        r1:close()
        r2:close()
        ctx:close()
        plain:close()
    end)

    it("closes a subscriber whose queue passes maxQueue; the others get every message", function()
        local fast = client("/t/flood")
        local slow = raw.connect(port, "/t/flood") -- reads nothing from now on
        assert.is_true(helper.wait_for(function() return hub:subscribers("flood") == 2 end))
        local got, stop = 0, false
        local reader = task.spawn(function()
            while not stop do
                local m = fast:receive()
                if not m then return end
                got = got + 1
            end
        end)
        local chunk = rep("f", 64 * 1024)
        local sent = 0
        for _ = 1, 1000 do -- 64 MiB at most: far past the kernel's buffers and maxQueue
            hub:publish("flood", chunk)
            sent = sent + 1
            if hub:subscribers("flood") == 1 then break end
            assert.is_true(helper.wait_for(function() return got == sent end))
        end
        assert.are.equal(1, hub:subscribers("flood"))
        assert.is_true(sent < 2000)
        assert.is_true(helper.wait_for(function() return got == sent end))
        stop = true
        fast:close()
        reader:join()
        -- The slow subscriber gets everything queued for it, then a close frame 1008 "too slow",
        -- then the end of the stream.
        local frames = 0
        while true do
            local op, p = raw.read_frame(slow)
            assert.is_truthy(op, p)
            if op == 8 then
                assert.are.equal(1008, raw.close_code(p))
                assert.are.equal("too slow", p:sub(3))
                break
            end
            assert.are.equal(1, op)
            frames = frames + 1
        end
        assert.is_true(frames >= 1 and frames <= sent)
        local op, e = raw.read_frame(slow)
        assert.is_nil(op)
        assert.are.equal("EOF", e.name)
        slow:close()
        -- Its receiving task saw the hub's error once the socket closed.
        local err
        assert.is_true(helper.wait_for(function()
            for _, x in ipairs(ended) do
                if x.name == "ENOBUFS" then
                    err = x
                end
            end
            return err ~= nil
        end))
        assert.truthy(err.message:find("too slow", 1, true))
        assert.are.equal(1008, err.closeCode)
        assert.are.equal("too slow", err.reason)
    end)

    it("closes a slow subscriber that reads nothing more after closeTimeout", function()
        local fast = client("/t/stuck")
        local slow = raw.connect(port, "/q/stuck") -- closeTimeout 100 ms; never reads
        assert.is_true(helper.wait_for(function() return hub:subscribers("stuck") == 2 end))
        local chunk = rep("s", 64 * 1024)
        for _ = 1, 1000 do
            hub:publish("stuck", chunk)
            if hub:subscribers("stuck") == 1 then break end
            assert.are.equal(chunk, (fast:receive()))
        end
        assert.are.equal(1, hub:subscribers("stuck"))
        -- The server's socket closes after 100 ms without the close frame written (the after_each
        -- leak check sees its timer and descriptor gone).
        timer.sleep(300)
        fast:close()
        slow:close()
    end)

    it("publishes a message longer than a subscriber's fragmentSize in fragments", function()
        local plain = raw.connect(port, "/t/frag")
        local frag = raw.connect(port, "/f/frag")
        local fz = raw.connect(port, "/fz/frag", "Sec-WebSocket-Extensions: permessage-deflate\r\n")
        for _, sock in ipairs({ plain, frag, fz }) do
            assert.are.equal(1, (raw.read_frame(sock))) -- joined
        end
        local zc = client("/fz/frag", { deflate = { noContextTakeover = true } })
        assert.is_true(helper.wait_for(function() return hub:subscribers("frag") == 4 end))
        -- 2,500 letters that deflate cannot shrink below 100 bytes.
        local letters, x = {}, 7
        for i = 1, 2500 do
            x = (x * 1103515245 + 12345) % 2147483648
            letters[i] = string.char(97 + x % 26)
        end
        local msg = table.concat(letters)
        assert.are.equal(4, hub:publish("frag", msg))
        assert.are.equal(4, hub:publish("frag", "short"))
        -- Unfragmented to a connection without fragmentSize.
        local op, p = raw.read_frame(plain)
        assert.are.equal(1, op)
        assert.are.equal(msg, p)
        local pop, pp = raw.read_frame(plain)
        assert.are.same({ 1, "short" }, { pop, pp })
        -- 1000, 1000 and 500 bytes: text, continuation, continuation (the last with FIN).
        local heads, parts = {}, {}
        for i = 1, 3 do
            local h = frag:read(2)
            heads[i] = h:byte(1)
            local n = h:byte(2) % 128
            if n == 126 then
                local e = frag:read(2)
                n = e:byte(1) * 256 + e:byte(2)
            end
            parts[i] = frag:read(n)
        end
        assert.are.same({ 0x01, 0x00, 0x80 }, heads)
        assert.are.same({ 1000, 1000, 500 }, { #parts[1], #parts[2], #parts[3] })
        assert.are.equal(msg, table.concat(parts))
        local fop, fp = raw.read_frame(frag)
        assert.are.same({ 1, "short" }, { fop, fp })
        -- Compressed, then fragmented: RSV1 on the first frame only, fragments of 100 bytes; the
        -- luaio client inflates them back.
        local n, b0 = 0, nil
        repeat
            local _, p, b = raw.read_frame(fz)
            n = n + 1
            assert.is_true(#p <= 100)
            assert.are.equal(n == 1 and 0x41 or (b >= 128 and 0x80 or 0x00), b)
            b0 = b
        until b0 >= 128
        assert.is_true(n > 10)
        assert.are.equal(msg, (zc:receive()))
        assert.are.equal("short", (zc:receive()))
        zc:close()
        fz:close()
        plain:close()
        frag:close()
    end)

    it("skips a slow subscriber with slow = 'drop' and keeps it open", function()
        local slow = raw.connect(port, "/d/drip")
        assert.are.equal(1, (raw.read_frame(slow))) -- joined
        assert.is_true(helper.wait_for(function() return dropper:subscribers("drip") == 1 end))
        local chunk = rep("d", 16 * 1024)
        local delivered, skipped = 0, 0
        for _ = 1, 2000 do
            if dropper:publish("drip", chunk) == 1 then
                delivered = delivered + 1
            else
                skipped = skipped + 1
                if skipped > 3 then break end
            end
        end
        assert.is_true(skipped > 3)
        assert.are.equal(1, dropper:subscribers("drip"))
        -- Once it reads again, it gets exactly the messages that were queued, whole, then new ones.
        for _ = 1, delivered do
            local op, p = raw.read_frame(slow)
            assert.are.equal(1, op)
            assert.are.equal(#chunk, #p)
        end
        assert.are.equal(1, dropper:publish("drip", "after"))
        local op, p = raw.read_frame(slow)
        assert.are.same({ 1, "after" }, { op, p })
        slow:close()
    end)
end)

describe("websocket sends from several tasks", function()
    it("queues them in order instead of failing with EBUSY, and answers pings meanwhile", function()
        local got = {}
        local r = http.router()
        local done = false
        r:websocket("/sink", function(ws)
            timer.sleep(100) -- the client's sends stall in the meantime
            for msg in ws:messages() do
                got[#got + 1] = msg
                if #got == 4 then break end
            end
            ws:send("pong?")
            done = true
        end)
        local srv = assert(http.createServer({ port = 0, host = "127.0.0.1" }, r))
        local ws = assert(websocket.connect("ws://127.0.0.1:" .. srv.port .. "/sink"))
        local big = rep("b", 4 * 1024 * 1024)
        local results, order = {}, {}
        local hs = {}
        for i = 1, 4 do
            hs[i] = task.spawn(function()
                local m = i .. rep(tostring(i), #big - 1)
                results[i] = ws:send(i == 2 and "two" or m)
                order[#order + 1] = i
            end)
        end
        for i = 1, 4 do hs[i]:join() end
        assert.are.same({}, results) -- no EBUSY
        assert.are.same({ 1, 2, 3, 4 }, order)
        assert.is_true(helper.wait_for(function() return done end))
        assert.are.equal(4, #got)
        assert.are.equal("two", got[2])
        for _, i in ipairs({ 1, 3, 4 }) do
            assert.are.equal(#big, #got[i])
            assert.are.equal(tostring(i), got[i]:sub(1, 1))
        end
        assert.are.equal("pong?", (ws:receive()))
        ws:close()
        srv:close()
    end)

    it("refuses outgoing text that is not UTF-8 with EILSEQ", function()
        local r = http.router()
        r:websocket("/e", function(ws) for m, k in ws:messages() do ws:send(m, k) end end)
        local srv = assert(http.createServer({ port = 0, host = "127.0.0.1" }, r))
        local ws = assert(websocket.connect("ws://127.0.0.1:" .. srv.port .. "/e"))
        for _, bad in ipairs({ "\xff", "a\xc3", "\xed\xa0\x80", { "ok", "\xc0\xaf" } }) do
            local err = ws:send(bad)
            assert.are.equal("EILSEQ", err.name)
            assert.truthy(err.message:find("UTF-8", 1, true))
        end
        assert.is_nil(ws:send({ "h\xc3", "\xa9" })) -- split across parts, whole in the message
        assert.are.equal("h\xc3\xa9", (ws:receive()))
        assert.is_nil(ws:send("\xff", "binary"))
        assert.are.equal("\xff", (ws:receive()))
        ws:close()
        srv:close()
    end)
end)
