-- luaio's TLS against other TLS stacks: GnuTLS's gnutls-cli (Debian gnutls-bin) and Node.js
-- (tls and https) as clients of luaio's servers, and luaio's client against a Node.js https
-- server. The certificates (a CA, a server certificate for localhost and 127.0.0.1) are made at
-- spec time with openssl. Waits are bounded; only the processes the spec starts are stopped, by
-- their pid.
local tls = require "tls"
local http = require "http"
local process = require "process"
local timer = require "timer"
local helper = require "helper"

local dir -- the certificates

local function sh(cmd)
    local out, err, code = helper.sh(cmd)
    assert(code == 0, cmd .. ": " .. out .. err)
    return out
end

local function path(name)
    return dir .. "/" .. name
end

setup(function()
    dir = os.tmpname()
    os.remove(dir)
    sh("mkdir -p " .. dir)
    helper.make_ca(dir, "ca")
    helper.make_cert(dir, "server", "DNS:localhost,IP:127.0.0.1", "ca")
end)

teardown(function()
    if dir then
        sh("rm -rf " .. dir)
    end
end)

local function server_opts()
    return { host = "127.0.0.1", cert = path("server.pem"), key = path("server.key") }
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
    if child.stdin then child.stdin:close() end
    if child.stdout then child.stdout:close() end
end

-- Runs gnutls-cli against 127.0.0.1:port with `args`, writes `input`, and reads what it prints
-- until `want` appears or it ends (20 s at most). Returns stdout, the exit code.
local function gnutls(port, args, input, want)
    local argv = { "--x509cafile", path("ca.pem"), "-p", tostring(port) }
    for _, a in ipairs(args) do
        argv[#argv + 1] = a
    end
    local child = assert(process.spawn("gnutls-cli", argv, { stdio = { "pipe", "pipe", "pipe" } }))
    child.stdout:setTimeout(20000)
    child.stderr:setTimeout(20000)
    child.stdin:write(input)
    local out = {}
    while true do
        local chunk = child.stdout:read()
        if not chunk then break end
        out[#out + 1] = chunk
        if want and table.concat(out):find(want, 1, true) then break end
    end
    child.stdin:shutdown()
    local err = child.stderr:read() or ""
    local t = timer.setTimeout(10000, function()
        if child:status() == nil then child:kill("SIGKILL") end
    end)
    local code = child:wait()
    t:stop()
    stop(child)
    child.stderr:close()
    return table.concat(out), code, err
end

local function echo_server()
    local srv = assert(tls.createServer(0, function(sock)
        helper.echo(sock)
    end, server_opts()))
    return srv, srv:address().port
end

describe("gnutls-cli against luaio", function()
    it("does a TLS 1.3 and a TLS 1.2 handshake with a luaio server and echoes through it", function()
        local srv, port = echo_server()
        local out, _, err = gnutls(port, { "localhost" }, "hello gnutls\n", "hello gnutls")
        assert.truthy(out:find("hello gnutls", 1, true), out .. err)
        assert.truthy(out:find("TLS1.3", 1, true), out)
        out, _, err = gnutls(port, { "--priority", "NORMAL:-VERS-ALL:+VERS-TLS1.2", "localhost" }, "twelve\n",
            "twelve")
        assert.truthy(out:find("twelve", 1, true), out .. err)
        assert.truthy(out:find("TLS1.2", 1, true), out)
        srv:close()
    end)

    it("is refused TLS 1.1 and gets an https response with ALPN http/1.1", function()
        local srv, port = echo_server()
        local out, code = gnutls(port, { "--priority", "NORMAL:-VERS-ALL:+VERS-TLS1.1", "localhost" }, "x\n")
        assert.are_not.equal(0, code)
        assert.falsy(out:find("x\n", 1, true))
        srv:close()
        local hs = assert(http.createServer({ port = 0, host = "127.0.0.1", tls = { cert = path("server.pem"), key = path("server.key") } }, function(_, res)
            res:finish("hi from luaio")
        end))
        out = gnutls(hs.port, { "--alpn", "http/1.1", "localhost" },
            "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", "hi from luaio")
        assert.truthy(out:find("HTTP/1.1 200", 1, true), out)
        assert.truthy(out:find("hi from luaio", 1, true), out)
        assert.truthy(out:find("http/1.1", 1, true), out) -- the ALPN line of gnutls-cli
        hs:close()
    end)

    it("rejects the luaio server's certificate for another host name", function()
        local srv, port = echo_server()
        local out, code = gnutls(port, { "--verify-hostname", "other.example", "127.0.0.1" }, "x\n")
        assert.are_not.equal(0, code)
        assert.falsy(out:find("x\n", 1, true))
        srv:close()
    end)
end)

-- A Node.js script, run with its stdout piped; returns the child.
local function node(src, args)
    local file = helper.script(src)
    local argv = { file }
    for _, a in ipairs(args or {}) do
        argv[#argv + 1] = a
    end
    local child = assert(process.spawn("node", argv, { stdio = { "ignore", "pipe", "inherit" } }))
    child.stdout:setTimeout(20000)
    return child, file
end

local NODE_CLIENTS = [[
const tls = require('tls'), https = require('https'), fs = require('fs');
const [port, hport, ca] = [+process.argv[2], +process.argv[3], fs.readFileSync(process.argv[4])];
const s = tls.connect({ port, host: '127.0.0.1', ca, servername: 'localhost' }, () => {
    s.write('hello node\n');
});
let got = '';
s.on('data', (d) => {
    got += d;
    if (got.includes('\n')) {
        console.log('tls ' + s.getProtocol() + ' ' + s.authorized + ' ' + got.trim());
        s.end();
        https.get({ host: '127.0.0.1', port: hport, ca, path: '/x' }, (res) => {
            let body = '';
            res.on('data', (c) => (body += c));
            res.on('end', () => console.log('https ' + res.statusCode + ' ' + body));
        }).on('error', (e) => console.log('https error ' + e.message));
    }
});
s.on('error', (e) => console.log('tls error ' + e.message));
]]

local NODE_SERVER = [[
const https = require('https'), fs = require('fs');
const s = https.createServer({ cert: fs.readFileSync(process.argv[2]), key: fs.readFileSync(process.argv[3]),
                               ALPNProtocols: ['http/1.1'] }, (req, res) => {
    res.setHeader('Content-Type', 'text/plain');
    res.end('node says ' + req.url + ' ' + req.socket.getProtocol());
});
s.listen(0, '127.0.0.1', () => console.log(s.address().port));
]]

describe("Node.js and luaio", function()
    it("connects Node's tls and https clients to luaio's servers", function()
        local srv, port = echo_server()
        local hs = assert(http.createServer({ port = 0, host = "127.0.0.1", tls = { cert = path("server.pem"), key = path("server.key") } }, function(req, res)
            res:finish("luaio says " .. req.path .. " " .. req.tls.version)
        end))
        local child, file = node(NODE_CLIENTS, { tostring(port), tostring(hs.port), path("ca.pem") })
        local l1 = child.stdout:readline()
        local l2 = child.stdout:readline()
        stop(child)
        os.remove(file)
        assert.are.equal("tls TLSv1.3 true hello node", l1)
        assert.are.equal("https 200 luaio says /x TLSv1.3", l2)
        srv:close()
        hs:close()
    end)

    it("connects luaio's tls and https clients to a Node https server", function()
        local child, file = node(NODE_SERVER, { path("server.pem"), path("server.key") })
        local port = tonumber(child.stdout:readline())
        assert.truthy(port, "the Node server printed no port")
        local res = assert(http.get("https://localhost:" .. port .. "/y", { tls = { ca = path("ca.pem") } }))
        assert.are.equal(200, res.status)
        assert.are.equal("node says /y TLSv1.3", res.body)
        -- The raw client, by IP address (the certificate's IP SAN), with ALPN.
        local sock = assert(tls.connect(port, "127.0.0.1", { ca = path("ca.pem"), alpn = { "http/1.1" } }))
        local info = sock:tlsInfo()
        assert.are.equal("http/1.1", info.alpn)
        assert.is_true(info.authorized)
        sock:write("GET /z HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        local reply = ""
        for _ = 1, 100 do
            local chunk = sock:read()
            if not chunk then break end
            reply = reply .. chunk
        end
        assert.truthy(reply:find("node says /z", 1, true), reply)
        sock:close()
        -- Verification is on: another CA's certificate is refused.
        local _, err = http.get("https://localhost:" .. port .. "/", { tls = { ca = path("server.pem") } })
        assert.are.equal("ECERTVERIFY", err.name)
        http.closeIdle()
        stop(child)
        os.remove(file)
    end)
end)
