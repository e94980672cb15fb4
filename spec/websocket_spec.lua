-- WebSocket (RFC 6455): luaio's server against luaio's client, Node's `ws` client and raw bytes
-- judged by the RFC; the handshake's refusals; limits.
local http = require "http"
local websocket = require "websocket"
local tcp = require "tcp"
local process = require "process"
local bit = require "bit"

local char, byte, rep = string.char, string.byte, string.rep

-- A client frame in raw bytes: b0 is FIN/RSV/opcode; masked unless mask == false.
local function frame(b0, payload, mask)
    local n = #payload
    local b1 = mask == false and 0 or 0x80
    local head
    if n < 126 then
        head = char(b0, b1 + n)
    elseif n < 65536 then
        head = char(b0, b1 + 126, math.floor(n / 256), n % 256)
    else
        head = char(b0, b1 + 127, 0, 0, 0, 0, math.floor(n / 16777216) % 256, math.floor(n / 65536) % 256,
            math.floor(n / 256) % 256, n % 256)
    end
    if mask == false then
        return head .. payload
    end
    local key = { 0x12, 0x34, 0x56, 0x78 }
    local out = {}
    for i = 1, n do
        out[i] = char(bit.bxor(byte(payload, i), key[(i - 1) % 4 + 1]))
    end
    return head .. char(key[1], key[2], key[3], key[4]) .. table.concat(out)
end

-- Reads one unmasked server frame from a raw socket: opcode, payload.
local function read_frame(sock)
    local h, err = sock:read(2)
    if not h then
        return nil, err
    end
    local b0, b1 = byte(h, 1, 2)
    local n = b1 % 128
    if n == 126 then
        local e = sock:read(2)
        n = byte(e, 1) * 256 + byte(e, 2)
    elseif n == 127 then
        local e = sock:read(8)
        n = 0
        for i = 1, 8 do
            n = n * 256 + byte(e, i)
        end
    end
    local p = n > 0 and sock:read(n) or ""
    return b0 % 16, p
end

local function close_code(payload)
    return byte(payload, 1) * 256 + byte(payload, 2)
end

local KEY = "dGhlIHNhbXBsZSBub25jZQ=="

-- A raw client: the handshake by hand, then the socket (its 101 head read).
local function raw_connect(port, path, extra)
    local sock = assert(tcp.connect(port, "127.0.0.1"))
    sock:setTimeout(5000)
    assert(sock:write("GET " .. (path or "/echo") .. " HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n" ..
        "Connection: Upgrade\r\nSec-WebSocket-Key: " .. KEY .. "\r\nSec-WebSocket-Version: 13\r\n" ..
        (extra or "") .. "\r\n") == nil)
    local head = assert(sock:readuntil("\r\n\r\n"))
    return sock, head
end

-- Sends raw bytes and returns the close code the server answered (then the socket ends).
local function violation(port, bytes)
    local sock = raw_connect(port)
    assert(sock:write(bytes) == nil)
    local op, payload
    repeat
        op, payload = read_frame(sock)
    until op == nil or op == 8
    assert.are.equal(8, op)
    local code = close_code(payload)
    local rest, err = sock:read(1)
    assert.is_nil(rest)
    assert.are.equal("EOF", err.name)
    sock:close()
    return code
end

describe("websocket", function()
    local srv, port, last
    setup(function()
        local r = http.router()
        r:websocket("/echo", function(ws)
            for msg, kind in ws:messages() do
                assert(ws:send(msg, kind) == nil)
            end
        end, { maxMessageSize = 100000 })
        r:websocket("/room/:name", function(ws, req, params)
            ws:send(params.name .. " " .. tostring(ws.protocol) .. " " .. req.path)
            local _, err = ws:receive()
            last = err
        end, { protocols = { "chat", "superchat" } })
        r:websocket("/z", function(ws)
            for msg, kind in ws:messages() do
                assert(ws:send(msg, kind) == nil)
            end
        end, { deflate = true, maxMessageSize = 100000 })
        r:websocket("/origin", function(ws)
            ws:send("welcome")
        end, { origins = { "https://good.example" } })
        r:websocket("/originfn", function(ws)
            ws:send("welcome")
        end, { origins = function(o) return o:match("%.good%.example$") end })
        r:websocket("/frag", function(ws)
            for msg, kind in ws:messages() do
                assert(ws:send(msg, kind) == nil)
            end
        end, { fragmentSize = 1000 })
        r:websocket("/ztuned", function(ws)
            for msg, kind in ws:messages() do
                assert(ws:send(msg, kind) == nil)
            end
        end, { deflate = { level = 1, memLevel = 1, windowBits = 10, threshold = 100 } })
        r:websocket("/closer", function(ws)
            ws:close(4000, "done here")
        end)
        r:get("/plain", function(req, res)
            local ws, err = websocket.accept(req, res)
            last = err
            assert(not ws)
        end)
        srv = assert(http.createServer({ port = 0, host = "127.0.0.1" }, r))
        port = srv.port
    end)
    teardown(function()
        srv:close()
    end)
    after_each(function() http.closeIdle() end)

    it("exchanges text, binary, array and large messages between luaio's server and client", function()
        local ws = assert(websocket.connect("ws://127.0.0.1:" .. port .. "/echo"))
        assert.is_nil(ws:send("hello"))
        assert.are.same({ "hello", "text" }, { ws:receive() })
        assert.is_nil(ws:send({ "a", "b", "c" }, "binary"))
        assert.are.same({ "abc", "binary" }, { ws:receive() })
        assert.is_nil(ws:send("h\xc3\xa9"))
        assert.are.same({ "h\xc3\xa9", "text" }, { ws:receive() })
        local big = rep("x", 70000)
        assert.is_nil(ws:send(big, "binary"))
        assert.are.equal(big, (ws:receive()))
        assert.is_nil(ws:send(""))
        assert.are.same({ "", "text" }, { ws:receive() })
        assert.is_nil(ws:ping("p"))
        assert.is_nil(ws:send("after ping"))
        assert.are.equal("after ping", (ws:receive()))
        local a = ws:remoteAddress()
        assert.are.equal("127.0.0.1", a.address)
        assert.are.equal(port, a.port)
        assert.is_nil(ws:close())
        local m, err = ws:receive()
        assert.is_nil(m)
        assert.are.equal("EOF", err.name)
        assert.are.equal(1000, err.closeCode)
    end)

    it("negotiates a subprotocol and passes route parameters; the peer's close code reaches receive", function()
        local ws = assert(websocket.connect("ws://127.0.0.1:" .. port .. "/room/blue", { protocols = { "superchat", "x" } }))
        assert.are.equal("superchat", ws.protocol)
        assert.are.equal("blue superchat /room/blue", (ws:receive()))
        ws:close(3001, "leaving")
        -- The server's task sees the close after ours has its reply: wait for it (bounded).
        for _ = 1, 500 do
            if last and last.closeCode == 3001 then break end
            require("timer").sleep(10)
        end
        assert.are.equal("EOF", last.name)
        assert.are.equal(3001, last.closeCode)
        assert.are.equal("leaving", last.reason)
        local c = assert(websocket.connect("ws://127.0.0.1:" .. port .. "/closer"))
        local m, err = c:receive()
        assert.is_nil(m)
        assert.are.equal("EOF", err.name)
        assert.are.equal(4000, err.closeCode)
        assert.are.equal("done here", err.reason)
    end)

    it("reassembles fragments with a ping between them and answers the ping with its data", function()
        local sock = raw_connect(port)
        assert(sock:write(frame(0x01, "Hel") .. frame(0x89, "pingdata") .. frame(0x00, "lo, ") ..
            frame(0x80, "world")) == nil)
        local op, p = read_frame(sock)
        assert.are.equal(10, op)
        assert.are.equal("pingdata", p)
        op, p = read_frame(sock)
        assert.are.equal(1, op)
        assert.are.equal("Hello, world", p)
        -- An unsolicited pong is ignored.
        assert(sock:write(frame(0x8A, "x") .. frame(0x82, "\0\1")) == nil)
        op, p = read_frame(sock)
        assert.are.same({ 2, "\0\1" }, { op, p })
        -- The closing handshake: the server echoes the code and closes.
        assert(sock:write(frame(0x88, char(3, 232) .. "bye")) == nil)
        op, p = read_frame(sock)
        assert.are.equal(8, op)
        assert.are.equal(1000, close_code(p))
        assert.is_nil(sock:read(1))
        sock:close()
    end)

    it("closes a connection that breaks the protocol with the RFC's code", function()
        assert.are.equal(1002, violation(port, frame(0x81, "unmasked", false)))
        assert.are.equal(1002, violation(port, frame(0x89, rep("p", 126))))
        assert.are.equal(1002, violation(port, frame(0x09, "frag")))
        assert.are.equal(1002, violation(port, frame(0xC1, "rsv1")))
        assert.are.equal(1002, violation(port, frame(0x83, "op3")))
        assert.are.equal(1002, violation(port, frame(0x80, "cont")))
        assert.are.equal(1002, violation(port, frame(0x01, "a") .. frame(0x81, "b")))
        assert.are.equal(1002, violation(port, frame(0x88, char(3, 237))))        -- 1005 on the wire
        assert.are.equal(1002, violation(port, frame(0x88, "\3")))                 -- 1-byte close
        assert.are.equal(1002, violation(port, char(0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4)))
        assert.are.equal(1007, violation(port, frame(0x81, "\xff\xfe")))
        assert.are.equal(1007, violation(port, frame(0x01, "\xe2\x82") .. frame(0x80, "A")))
        assert.are.equal(1007, violation(port, frame(0x88, char(3, 232) .. "\xc0")))
    end)

    it("closes a message over maxMessageSize with 1009 and takes one at the limit", function()
        local sock = raw_connect(port)
        assert(sock:write(frame(0x82, rep("m", 100000))) == nil)
        local op, p = read_frame(sock)
        assert.are.equal(2, op)
        assert.are.equal(100000, #p)
        sock:close()
        assert.are.equal(1009, violation(port, frame(0x82, rep("m", 100001))))
        assert.are.equal(1009, violation(port, frame(0x02, rep("m", 60000)) .. frame(0x80, rep("m", 40001))))
    end)

    it("names the caller's URL when it is not valid", function()
        for _, url in ipairs({ "ws://127.0.0.1:99999/", "wss://127.0.0.1:0/x", "ws:///path", "ws://a b/" }) do
            local ws, err = websocket.connect(url)
            assert.is_nil(ws)
            assert.are.equal("EINVAL", err.name)
            assert.are.equal(url, err.message:sub(-#url), err.message)
            assert.is_nil(err.message:find("http", 1, true), err.message)
        end
        local _, err = websocket.connect("ws://127.0.0.1:99999/")
        assert.are.equal("invalid port in URL: ws://127.0.0.1:99999/", err.message)
    end)

    it("refuses bad upgrade requests with 400 or 426", function()
        local function status_of(req)
            local sock = assert(tcp.connect(port, "127.0.0.1"))
            sock:setTimeout(5000)
            assert(sock:write(req) == nil)
            local head = assert(sock:readuntil("\r\n\r\n"))
            sock:close()
            return tonumber(head:match("^HTTP/1%.1 (%d+)")), head
        end
        local base = "GET /plain HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        local s, head = status_of(base .. "Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: " .. KEY .. "\r\n\r\n")
        assert.are.equal(426, s)
        assert.truthy(head:find("Sec%-WebSocket%-Version: 13"))
        assert.are.equal("EPROTO", last.name)
        assert.are.equal(426, last.status)
        assert.are.equal(400, (status_of(base .. "Sec-WebSocket-Version: 13\r\n\r\n")))
        assert.are.equal(400, (status_of(base .. "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: abc\r\n\r\n")))
        assert.are.equal(400, (status_of(base .. "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " ..
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAA\r\n\r\n")))
        assert.are.equal(400, (status_of("GET /plain HTTP/1.1\r\nHost: x\r\nSec-WebSocket-Version: 13\r\n" ..
            "Sec-WebSocket-Key: " .. KEY .. "\r\n\r\n")))
        -- The accept key of RFC 6455's example.
        local sock, h = raw_connect(port)
        sock:close()
        assert.truthy(h:find("Sec%-WebSocket%-Accept: s3pPLMBiTxaQ9kYGzzhZRbK%+xOo=\r\n"))
    end)

    it("reports a peer that vanishes mid-frame as 1006, and speaks wss:// through the tls module", function()
        local got
        local r = http.router()
        r:websocket("/", function(ws)
            local m, err = ws:receive()
            got = { m, err }
        end)
        local s2 = assert(http.createServer({ port = 0, host = "127.0.0.1" }, r))
        local sock = raw_connect(s2.port, "/")
        assert(sock:write(frame(0x82, rep("x", 1000)):sub(1, 500)) == nil)
        sock:close()
        for _ = 1, 100 do
            if got then break end
            require("timer").sleep(10)
        end
        s2:close()
        assert.is_nil(got[1])
        assert.are.equal("EOF", got[2].name)
        assert.are.equal(1006, got[2].closeCode)
        -- wss:// over the tls module: a certificate made here, verified against its CA.
        local dir = os.tmpname()
        os.remove(dir)
        local helper = require "helper"
        assert(require("fs").mkdir(dir))
        helper.make_ca(dir, "ca")
        helper.make_cert(dir, "s", "IP:127.0.0.1", "ca")
        local rr = http.router()
        rr:websocket("/", function(ws)
            for m in ws:messages() do ws:send("tls " .. m) end
        end)
        local s3 = assert(http.createServer({ port = 0, host = "127.0.0.1",
            tls = { cert = dir .. "/s.pem", key = dir .. "/s.key" } }, rr))
        local ws = assert(websocket.connect("wss://127.0.0.1:" .. s3.port .. "/", { tls = { ca = dir .. "/ca.pem" } }))
        assert.is_nil(ws:send("over wss"))
        assert.are.equal("tls over wss", (ws:receive()))
        assert.is_nil(ws:close())
        local bad, err = websocket.connect("wss://127.0.0.1:" .. s3.port .. "/")
        assert.is_nil(bad)
        assert.truthy(err)
        s3:close()
        os.execute("rm -rf " .. dir)
        assert.has_error(function() websocket.connect("ws://x/", { nope = 1 }) end)
    end)

    it("serves Node's ws client: text, binary, fragments, ping, close code", function()
        -- Debian's node-ws (scripts/setup.sh installs it): no download while the specs run.
        local dir = "/usr/share/nodejs/ws"
        assert(io.open(dir .. "/package.json"), "no " .. dir .. ": run scripts/setup.sh (nodejs, node-ws)"):close()
        local script = [[
const WebSocket = require(process.argv[2]);
const ws = new WebSocket('ws://127.0.0.1:' + process.argv[3] + '/echo');
const got = [];
ws.on('open', () => {
  ws.send('hi from node');
  ws.send(Buffer.from([1, 2, 3]));
  ws.send('frag', { fin: false }); ws.send('mented', { fin: true });
  ws.ping('pp');
});
ws.on('pong', (d) => { got.push('pong:' + d.toString()); if (got.length === 4) ws.close(4001, 'node done'); });
ws.on('message', (d, isBinary) => {
  got.push((isBinary ? 'bin:' + [...d].join(',') : 'text:' + d.toString()));
  if (got.length === 4) ws.close(4001, 'node done');
});
ws.on('close', (code) => { console.log(JSON.stringify(got.sort()) + ' ' + code); });
ws.on('error', (e) => { console.log('error ' + e.message); });
]]
        local path = os.tmpname() .. ".js"
        local w = assert(io.open(path, "w"))
        w:write(script)
        w:close()
        local r = assert(process.run({ "node", path, dir, tostring(port) }, { timeout = 20000 }))
        os.remove(path)
        assert.are.equal(0, r.code, r.stderr)
        assert.are.equal('["bin:1,2,3","pong:pp","text:fragmented","text:hi from node"] 4001\n', r.stdout)
    end)

    it("pings every pingInterval and drops a peer that does not answer", function()
        local got
        local r = http.router()
        r:websocket("/", function(ws)
            local m, err = ws:receive()
            got = { m, err }
        end, { pingInterval = 50 })
        local s2 = assert(http.createServer({ port = 0, host = "127.0.0.1" }, r))
        -- A raw peer that reads the pings and never answers.
        local sock = raw_connect(s2.port, "/")
        local op = read_frame(sock)
        assert.are.equal(9, op)
        local rest = sock:read(1)
        assert.is_nil(rest)
        sock:close()
        for _ = 1, 100 do
            if got then break end
            require("timer").sleep(10)
        end
        assert.is_nil(got[1])
        assert.are.equal("ETIMEDOUT", got[2].name)
        assert.are.equal(1006, got[2].closeCode)
        -- luaio's client answers pings while a task waits in receive, and pings the server too
        -- (its pongs are seen by that receive).
        got = nil
        local ws = assert(websocket.connect("ws://127.0.0.1:" .. s2.port .. "/", { pingInterval = 30 }))
        local reader = require("task").spawn(function() return ws:receive() end)
        require("timer").sleep(200)
        assert.is_nil(got)
        assert.is_nil(ws:close(1000))
        local ok, m, err = reader:join()
        assert.is_true(ok)
        assert.is_nil(m)
        assert.are.equal(1000, err.closeCode)
        for _ = 1, 100 do
            if got then break end
            require("timer").sleep(10)
        end
        s2:close()
        assert.are.equal(1000, got[2].closeCode)
    end)

    it("connects luaio's client to Node's ws server", function()
        local dir = "/usr/share/nodejs/ws" -- Debian's node-ws (scripts/setup.sh)
        assert(io.open(dir .. "/package.json"), "no " .. dir .. ": run scripts/setup.sh (nodejs, node-ws)"):close()
        local script = [[
const { WebSocketServer } = require(process.argv[2]);
const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, handleProtocols: (p) => p.has('b') ? 'b' : false });
wss.on('listening', () => console.log(wss.address().port));
wss.on('connection', (ws, req) => {
  ws.send('hello ' + req.headers['x-who']);
  ws.on('message', (d, isBinary) => {
    if (!isBinary && d.toString() === 'bye') { ws.close(4002, 'node says bye'); return; }
    ws.send(d, { binary: isBinary });
  });
  ws.on('close', () => wss.close());
});
]]
        local path = os.tmpname() .. ".js"
        local w = assert(io.open(path, "w"))
        w:write(script)
        w:close()
        local child = assert(process.spawn("node", { path, dir }, { stdio = { "ignore", "pipe", "inherit" } }))
        local nport = tonumber(assert(child.stdout:readline()))
        local ws = assert(websocket.connect("ws://127.0.0.1:" .. nport .. "/x", { protocols = { "a", "b" },
            headers = { ["X-Who"] = "luaio" } }))
        assert.are.equal("b", ws.protocol)
        assert.are.same({ "hello luaio", "text" }, { ws:receive() })
        assert.is_nil(ws:send({ "bin", "ary" }, "binary"))
        assert.are.same({ "binary", "binary" }, { ws:receive() })
        local big = rep("\xe2\x82\xac", 30000)
        assert.is_nil(ws:send(big))
        assert.are.equal(big, (ws:receive()))
        assert.is_nil(ws:ping("x"))
        assert.is_nil(ws:send("bye"))
        local m, err = ws:receive()
        assert.is_nil(m)
        assert.are.equal("EOF", err.name)
        assert.are.equal(4002, err.closeCode)
        assert.are.equal("node says bye", err.reason)
        child.stdout:close()
        local code = child:wait()
        os.remove(path)
        assert.are.equal(0, code)
    end)

    it("compresses with permessage-deflate (RFC 7692) and stops a compression bomb at maxMessageSize", function()
        local ws = assert(websocket.connect("ws://127.0.0.1:" .. port .. "/z", { deflate = true }))
        -- Context takeover across messages, an empty message after a flush, arrays, binary.
        for _, m in ipairs({ rep("hello ", 1000), { "a", "b" }, "", rep("\xe2\x82\xac", 20000), "", "x" }) do
            assert.is_nil(ws:send(m))
            assert.are.equal(type(m) == "table" and table.concat(m) or m, (ws:receive()))
        end
        assert.is_nil(ws:send("\0\1\2", "binary"))
        assert.are.same({ "\0\1\2", "binary" }, { ws:receive() })
        -- 200,000 inflated bytes from a few hundred on the wire: over the limit, 1009.
        assert.is_nil(ws:send(rep("z", 200000)))
        local m, err = ws:receive()
        assert.is_nil(m)
        assert.are.equal(1009, err.closeCode)
        -- Without deflate on both sides nothing is compressed, and RSV1 stays a violation.
        local plain = assert(websocket.connect("ws://127.0.0.1:" .. port .. "/z"))
        assert.is_nil(plain:send("plain"))
        assert.are.equal("plain", (plain:receive()))
        plain:close()
        -- RSV1 on a continuation frame is a violation even with deflate (7692 6.1).
        local sock = raw_connect(port, "/z", "Sec-WebSocket-Extensions: permessage-deflate\r\n")
        assert(sock:write(frame(0x02, "a") .. frame(0xC0, "b")) == nil)
        local op, p = read_frame(sock)
        assert.are.equal(8, op)
        assert.are.equal(1002, close_code(p))
        sock:close()
    end)

    it("speaks permessage-deflate with Node's ws, as server and as client", function()
        local dir = "/usr/share/nodejs/ws"
        assert(io.open(dir .. "/package.json"), "no " .. dir .. ": run scripts/setup.sh (nodejs, node-ws)"):close()
        local script = [[
const WebSocket = require(process.argv[2]);
const ws = new WebSocket('ws://127.0.0.1:' + process.argv[3] + '/z',
  { perMessageDeflate: { threshold: 0, serverNoContextTakeover: process.argv[4] === 'reset', serverMaxWindowBits: 10 } });
const big = 'abc'.repeat(5000);
let n = 0;
ws.on('open', () => { ws.send(big); ws.send('small'); ws.send(Buffer.from([9, 8, 7]), { binary: true }); });
ws.on('message', (d, isBinary) => {
  n++;
  const ok = n === 1 ? d.toString() === big : n === 2 ? d.toString() === 'small' : isBinary && d.length === 3;
  if (!ok) { console.log('bad message ' + n); process.exit(1); }
  if (n === 3) ws.close(1000);
});
ws.on('close', (code) => console.log(ws.extensions + ' ' + n + ' ' + code));
]]
        local path = os.tmpname() .. ".js"
        local w = assert(io.open(path, "w"))
        w:write(script)
        w:close()
        for _, mode in ipairs({ "keep", "reset" }) do
            local r = assert(process.run({ "node", path, dir, tostring(port), mode }, { timeout = 20000 }))
            assert.are.equal(0, r.code, r.stdout .. r.stderr)
            assert.truthy(r.stdout:find("permessage%-deflate"), r.stdout)
            assert.truthy(r.stdout:find(" 3 1000\n$"), r.stdout)
        end
        -- luaio's client against Node's server with perMessageDeflate.
        local server = [[
const { WebSocketServer } = require(process.argv[2]);
const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: { threshold: 0, clientNoContextTakeover: true } });
wss.on('listening', () => console.log(wss.address().port));
wss.on('connection', (ws, req) => {
  ws.send(req.headers['sec-websocket-extensions'] || 'none');
  ws.on('message', (d, isBinary) => ws.send(d, { binary: isBinary }));
  ws.on('close', () => wss.close());
});
]]
        w = assert(io.open(path, "w"))
        w:write(server)
        w:close()
        local child = assert(process.spawn("node", { path, dir }, { stdio = { "ignore", "pipe", "inherit" } }))
        local nport = tonumber(assert(child.stdout:readline()))
        local ws = assert(websocket.connect("ws://127.0.0.1:" .. nport .. "/", { deflate = true }))
        assert.truthy((ws:receive()):find("permessage%-deflate"))
        for _, m in ipairs({ rep("xyz", 10000), "", "again", rep("xyz", 10000) }) do
            assert.is_nil(ws:send(m))
            assert.are.equal(m, (ws:receive()))
        end
        assert.is_nil(ws:close())
        child.stdout:close()
        assert.are.equal(0, child:wait())
        os.remove(path)
    end)

    it("refuses an Origin outside the allow-list with 403 (a list or a function)", function()
        local function status(path, origin)
            local sock, head = raw_connect(port, path, origin and ("Origin: " .. origin .. "\r\n") or "")
            sock:close()
            return tonumber(head:match("^HTTP/1%.1 (%d+)"))
        end
        assert.are.equal(101, status("/origin", "https://GOOD.example"))
        assert.are.equal(403, status("/origin", "https://evil.example"))
        assert.are.equal(403, status("/origin", nil))
        assert.are.equal(101, status("/originfn", "https://a.good.example"))
        assert.are.equal(403, status("/originfn", "https://good.example.evil"))
        assert.has_error(function() websocket.accept({}, {}, { origins = "x" }) end)
    end)

    it("judges close codes as RFC 6455 7.4 does (Autobahn section 7.7/7.9)", function()
        for _, c in ipairs({ 1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999 }) do
            local sock = raw_connect(port)
            assert(sock:write(frame(0x88, char(math.floor(c / 256), c % 256))) == nil)
            local op, p = read_frame(sock)
            assert.are.equal(8, op)
            assert.are.equal(c, close_code(p), "code " .. c)
            sock:close()
        end
        for _, c in ipairs({ 0, 999, 1004, 1005, 1006, 1012, 1013, 1014, 1015, 1016, 1100, 2000, 2999, 5000, 65535 }) do
            assert.are.equal(1002, violation(port, frame(0x88, char(math.floor(c / 256), c % 256))), "code " .. c)
        end
        -- Every reserved opcode, and each RSV bit alone.
        for _, b0 in ipairs({ 0x83, 0x84, 0x85, 0x86, 0x87, 0x8B, 0x8C, 0x8D, 0x8E, 0x8F, 0xC1, 0xA1, 0x91 }) do
            assert.are.equal(1002, violation(port, frame(b0, "x")), ("b0 %02x"):format(b0))
        end
        -- A reason of 123 bytes is taken, and the close frame is echoed.
        local sock = raw_connect(port)
        assert(sock:write(frame(0x88, char(3, 232) .. rep("r", 123))) == nil)
        assert.are.equal(8, (read_frame(sock)))
        sock:close()
    end)

    it("runs examples/ws_chat.lua: its page, and a message reaches everyone in the room", function()
        local helper = require "helper"
        local probe = assert(tcp.createServer and http.createServer({ port = 0, host = "127.0.0.1" }, function() end))
        local p = probe.port
        probe:close()
        local child = assert(process.spawn(helper.luaio, { helper.source_dir .. "/examples/ws_chat.lua", tostring(p) },
            { stdio = { "ignore", "pipe", "inherit" } }))
        assert.truthy(child.stdout:readline():find("chat on"))
        local res = assert(http.get("http://127.0.0.1:" .. p .. "/"))
        assert.truthy(res.body:find("new WebSocket", 1, true))
        local a = assert(websocket.connect("ws://127.0.0.1:" .. p .. "/chat/x", { deflate = true }))
        assert.truthy((a:receive()):find("joined"))
        local b = assert(websocket.connect("ws://127.0.0.1:" .. p .. "/chat/x"))
        assert.truthy((b:receive()):find("joined"))
        assert.truthy((a:receive()):find("joined"))
        assert.is_nil(a:send("hi all"))
        assert.truthy((a:receive()):find(": hi all$"))
        assert.truthy((b:receive()):find(": hi all$"))
        b:close()
        assert.truthy((a:receive()):find("left$"))
        a:close()
        child.stdout:close()
        child:kill()
        child:wait()
    end)

    it("sends messages longer than fragmentSize in fragments; both sides reassemble them", function()
        local sock = raw_connect(port, "/frag")
        local msg = rep("0123456789", 250) -- 2500 bytes: fragments of 1000, 1000, 500
        assert(sock:write(frame(0x81, msg)) == nil)
        local sizes, ops, whole = {}, {}, {}
        repeat
            local h = sock:read(2)
            local b0 = byte(h, 1)
            local op, p = b0 % 16, nil
            local n = byte(h, 2) % 128
            if n == 126 then
                local e = sock:read(2)
                n = byte(e, 1) * 256 + byte(e, 2)
            end
            p = sock:read(n)
            ops[#ops + 1], sizes[#sizes + 1], whole[#whole + 1] = op, #p, p
        until b0 >= 128
        assert.are.same({ 1, 0, 0 }, ops)
        assert.are.same({ 1000, 1000, 500 }, sizes)
        assert.are.equal(msg, table.concat(whole))
        -- A short message is one frame; luaio's client (masked fragments) and server agree.
        assert(sock:write(frame(0x82, "short")) == nil)
        local op, p = read_frame(sock)
        assert.are.same({ 2, "short" }, { op, p })
        sock:close()
        local ws = assert(websocket.connect("ws://127.0.0.1:" .. port .. "/frag", { fragmentSize = 7 }))
        local text = rep("h\xc3\xa9", 500) -- UTF-8 split across fragments on both ways
        assert.is_nil(ws:send(text))
        assert.are.same({ text, "text" }, { ws:receive() })
        assert.is_nil(ws:send({ "a", "b" }, "binary"))
        assert.are.same({ "ab", "binary" }, { ws:receive() })
        ws:close()
        assert.has_error(function() websocket.connect("ws://127.0.0.1:1/", { fragmentSize = -1 }) end)
    end)

    it("takes deflate options: level, memLevel, windowBits (negotiated) and a threshold", function()
        local sock, head = raw_connect(port, "/ztuned",
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n")
        local ext = head:lower():match("sec%-websocket%-extensions: ([^\r]+)")
        assert.truthy(ext:find("server_max_window_bits=10", 1, true), ext)
        assert.truthy(ext:find("client_max_window_bits=10", 1, true), ext)
        -- Under the threshold: uncompressed (RSV1 clear); at it: compressed.
        assert(sock:write(frame(0x81, rep("s", 99))) == nil)
        local h = sock:read(2)
        assert.are.equal(0x81, byte(h, 1))
        assert.are.equal(rep("s", 99), sock:read(byte(h, 2)))
        assert(sock:write(frame(0x81, rep("s", 100))) == nil)
        h = sock:read(2)
        assert.are.equal(0xC1, byte(h, 1))
        assert.is_true(byte(h, 2) < 20)
        sock:read(byte(h, 2))
        sock:close()
        -- luaio's client with the same options on its side.
        local ws = assert(websocket.connect("ws://127.0.0.1:" .. port .. "/ztuned",
            { deflate = { windowBits = 9, level = 9, noContextTakeover = true } }))
        for _, m in ipairs({ "tiny", rep("abc", 10000), "", rep("\1\2\3", 3000) }) do
            assert.is_nil(ws:send(m, "binary"))
            assert.are.equal(m, (ws:receive()))
        end
        ws:close()
        for _, bad in ipairs({ { level = 10 }, { memLevel = 0 }, { windowBits = 8 }, { threshold = -1 }, { speed = 1 },
            { noContextTakeover = 1 } }) do
            assert.has_error(function() websocket.connect("ws://127.0.0.1:1/", { deflate = bad }) end)
        end
    end)
end)
