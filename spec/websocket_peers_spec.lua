-- luaio's WebSocket server and client against other peers: Python's `websockets` (Debian
-- python3-websockets) as client and server, and headless Chromium loading a page from a luaio
-- server whose JavaScript talks WebSocket and posts what it saw back. Waits are bounded; only the
-- processes the spec starts are stopped, by their pid.
local http = require "http"
local websocket = require "websocket"
local process = require "process"
local json = require "json"
local timer = require "timer"
local helper = require "helper"

local PYTHON = "/usr/bin/python3" -- Debian's, which has the websockets package
local CHROMIUM = "/usr/bin/chromium"

-- Runs a child with its stdout piped; returns it.
local function spawn(file, args, quiet)
    return assert(process.spawn(file, args, { stdio = { "ignore", "pipe", quiet and "ignore" or "inherit" } }))
end

-- Stops a child the spec started (SIGTERM, then SIGKILL after 5 s) and waits for it.
local function stop(child)
    if child:status() == nil then
        child:kill("SIGTERM")
        local t = timer.setTimeout(5000, function()
            if child:status() == nil then child:kill("SIGKILL") end
        end)
        child:wait()
        t:stop()
    end
    if child.stdout then child.stdout:close() end
end

local PY_CLIENT = [[
import asyncio, json, sys, websockets
async def main(url, compression):
    async with websockets.connect(url, compression=compression, subprotocols=["chat"], max_size=2**24) as ws:
        out = {"protocol": ws.subprotocol, "ext": ws.response_headers.get("Sec-WebSocket-Extensions")}
        await ws.send("h\u00e9llo")
        out["text"] = await ws.recv()
        await ws.send(b"\x00\x01\xff")
        out["binary"] = list(await ws.recv())
        big = "\u00e9" * 100000
        await ws.send(big)
        out["big"] = (await ws.recv()) == big
        await ws.send(["frag", "mented ", "message"])
        out["frag"] = await ws.recv()
        out["server_frag"] = await ws.recv()
        await asyncio.wait_for(await ws.ping(b"pp"), 5)
        out["pong"] = True
        await ws.close(4001, "bye")
        out["closed"] = [ws.close_code, ws.close_reason]
    print(json.dumps(out), flush=True)
asyncio.run(main(sys.argv[1], None if sys.argv[2] == "none" else "deflate"))
]]

local PY_SERVER = [[
import asyncio, sys, websockets
async def echo(ws):
    async for m in ws:
        if m == "bye":
            await ws.close(4002, "server done")
            return
        await ws.send(m)
async def main(compression):
    async with websockets.serve(echo, "127.0.0.1", 0, compression=compression, max_size=2**24) as srv:
        print(srv.sockets[0].getsockname()[1], flush=True)
        await asyncio.sleep(60)
asyncio.run(main(None if sys.argv[1] == "none" else "deflate"))
]]

describe("websocket with Python's websockets", function()
    it("serves Python's client: subprotocol, text, binary, 200 KB UTF-8, fragments both ways, ping, close code", function()
        local closes = {}
        local r = http.router()
        local function echo(ws)
            for msg, kind in ws:messages() do
                ws:send(msg, kind)
                if msg == "fragmented message" then
                    ws:send(string.rep("0123456789", 300)) -- fragmentSize 1000: three fragments
                end
            end
            local _, err = ws:receive()
            closes[#closes + 1] = err
        end
        r:websocket("/plain", echo, { protocols = { "chat" }, fragmentSize = 1000 })
        r:websocket("/z", echo, { protocols = { "chat" }, fragmentSize = 1000, deflate = true })
        local srv = assert(http.createServer({ port = 0, host = "127.0.0.1" }, r))
        local script = helper.script(PY_CLIENT)
        for _, mode in ipairs({ "none", "deflate" }) do
            local path = mode == "none" and "/plain" or "/z"
            local child = spawn(PYTHON, { script, "ws://127.0.0.1:" .. srv.port .. path, mode })
            child.stdout:setTimeout(20000)
            local line = child.stdout:readline()
            stop(child)
            assert.truthy(line, "the Python client printed nothing (" .. mode .. ")")
            local out = json.decode(line)
            assert.are.equal("chat", out.protocol)
            if mode == "deflate" then
                assert.truthy(tostring(out.ext):find("permessage-deflate", 1, true))
            else
                assert.are.equal(json.null, out.ext)
            end
            assert.are.equal("h\xc3\xa9llo", out.text)
            assert.are.same({ 0, 1, 255 }, out.binary)
            assert.is_true(out.big)
            assert.are.equal("fragmented message", out.frag)
            assert.are.equal(string.rep("0123456789", 300), out.server_frag)
            assert.is_true(out.pong)
            assert.are.same({ 4001, "" }, out.closed) -- luaio answers with the code, not the reason
        end
        os.remove(script)
        assert.is_true(helper.wait_for(function() return #closes == 2 end))
        for _, err in ipairs(closes) do
            assert.are.equal("EOF", err.name)
            assert.are.equal(4001, err.closeCode)
            assert.are.equal("bye", err.reason)
        end
        srv:close()
    end)

    it("connects luaio's client to Python's server, with and without deflate options", function()
        local script = helper.script(PY_SERVER)
        for _, mode in ipairs({ "none", "deflate" }) do
            local child = spawn(PYTHON, { script, mode })
            child.stdout:setTimeout(20000)
            local port = tonumber(child.stdout:readline())
            assert.truthy(port, "the Python server printed no port")
            local variants = mode == "none" and { {} } or {
                { deflate = true },
                { deflate = { noContextTakeover = true, level = 1, memLevel = 2 }, fragmentSize = 100 },
                { deflate = { windowBits = 10, threshold = 64 } },
            }
            for _, o in ipairs(variants) do
                local ws = assert(websocket.connect("ws://127.0.0.1:" .. port .. "/", o))
                for _, m in ipairs({ "h\xc3\xa9llo", string.rep("abc", 20000), "", "short" }) do
                    assert.is_nil(ws:send(m))
                    assert.are.same({ m, "text" }, { ws:receive() })
                end
                assert.is_nil(ws:send({ "\0\1", "\2" }, "binary"))
                assert.are.same({ "\0\1\2", "binary" }, { ws:receive() })
                assert.is_nil(ws:ping("x"))
                assert.is_nil(ws:send("bye"))
                local m, err = ws:receive()
                assert.is_nil(m)
                assert.are.equal("EOF", err.name)
                assert.are.equal(4002, err.closeCode)
                assert.are.equal("server done", err.reason)
            end
            stop(child)
        end
        os.remove(script)
    end)
end)

-- The page: the browser opens a WebSocket to each route, exchanges messages and posts its log.
local PAGE = [[<!doctype html><html><head><meta charset="utf-8"><title>ws</title></head><body><script>
const log = [];
function run(path) {
  return new Promise((resolve) => {
    const ws = new WebSocket("ws://" + location.host + path, ["chat"]);
    ws.binaryType = "arraybuffer";
    const big = "é".repeat(50000);
    let step = 0;
    ws.onopen = () => { log.push(path + " open " + ws.protocol + " [" + ws.extensions + "]"); ws.send("héllo"); };
    ws.onmessage = (e) => {
      step++;
      if (step === 1) { log.push(path + " text " + e.data); ws.send(new Uint8Array([1, 2, 255]).buffer); }
      else if (step === 2) { log.push(path + " binary " + Array.from(new Uint8Array(e.data)).join(",")); ws.send(big); }
      else if (step === 3) { log.push(path + " big " + (e.data === big)); ws.send("publish me"); }
      else if (step === 4) { log.push(path + " published " + e.data); ws.send("fragments please"); }
      else if (step === 5) { log.push(path + " fragmented " + e.data.length); ws.close(4001, "bye"); }
    };
    ws.onclose = (e) => { log.push(path + " close " + e.code + " " + e.reason); resolve(); };
  });
}
run("/plain").then(() => run("/z")).then(() => fetch("/result", {method: "POST", body: log.join("\n")}));
</script></body></html>]]

describe("websocket with headless Chromium", function()
    it("serves a page whose WebSocket exchanges text, binary, deflate, hub and fragmented messages", function()
        local hub = websocket.hub()
        local result, closes = nil, {}
        local r = http.router()
        r:get("/", function(req, res)
            res:setHeader("Content-Type", "text/html; charset=utf-8")
            res:finish(PAGE)
        end)
        local function handler(ws)
            hub:join(ws, "t")
            for msg, kind in ws:messages() do
                if msg == "publish me" then
                    hub:publish("t", "from the hub")
                elseif msg == "fragments please" then
                    ws:send(string.rep("x", 5000)) -- fragmentSize 1000
                else
                    ws:send(msg, kind)
                end
            end
            local _, err = ws:receive()
            closes[#closes + 1] = err
        end
        r:websocket("/plain", handler, { protocols = { "chat" }, fragmentSize = 1000, origins = function() return true end })
        r:websocket("/z", handler, { protocols = { "chat" }, fragmentSize = 1000, deflate = { threshold = 16 } })
        r:post("/result", function(req, res)
            result = req:body()
            res:finish("ok")
        end)
        local srv = assert(http.createServer({ port = 0, host = "127.0.0.1" }, r))
        local dir = os.tmpname()
        os.remove(dir)
        assert(os.execute("mkdir -m 700 " .. dir))
        local child = spawn(CHROMIUM, { "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--user-data-dir=" .. dir, "http://127.0.0.1:" .. srv.port .. "/" }, true)
        local got = helper.wait_for(function() return result ~= nil end, 60000)
        stop(child)
        os.execute("rm -rf " .. dir)
        srv:close()
        assert.is_true(got, "Chromium posted no result within 60 s")
        local want = {}
        for _, p in ipairs({ "/plain", "/z" }) do
            local ext = p == "/z" and "permessage-deflate" or ""
            want[#want + 1] = p .. " open chat [" .. ext .. "]"
            want[#want + 1] = p .. " text h\xc3\xa9llo"
            want[#want + 1] = p .. " binary 1,2,255"
            want[#want + 1] = p .. " big true"
            want[#want + 1] = p .. " published from the hub"
            want[#want + 1] = p .. " fragmented 5000"
            want[#want + 1] = p .. " close 4001 " -- luaio's answer echoes the code, not the reason
        end
        assert.are.equal(table.concat(want, "\n"), (result:gsub("permessage%-deflate[^%]]*", "permessage-deflate")))
        assert.is_true(helper.wait_for(function() return #closes == 2 end))
        for _, err in ipairs(closes) do
            assert.are.equal(4001, err.closeCode)
            assert.are.equal("bye", err.reason)
        end
    end)
end)
