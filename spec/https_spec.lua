-- https: http.createServer/http.serve with tls = {cert, key}, driven by curl --cacert and by
-- luaio's client for https:// URLs (verified by default, pooled per origin and TLS settings).
-- Certificates are made at spec time; everything talks to 127.0.0.1.
local http = require "http"
local process = require "process"
local helper = require "helper"

local dir

local function sh(cmd)
    local out, err, code = helper.sh(cmd)
    assert(code == 0, cmd .. ": " .. out .. err)
end

setup(function()
    dir = os.tmpname()
    os.remove(dir)
    sh("mkdir -p " .. dir)
    helper.make_ca(dir, "ca")
    helper.make_cert(dir, "localhost", "DNS:localhost,IP:127.0.0.1", "ca")
    helper.make_cert(dir, "client", "DNS:client.example", "ca")
    helper.make_cert(dir, "new", "DNS:localhost,IP:127.0.0.1", "ca")
end)

teardown(function()
    http.closeIdle()
    if dir then
        sh("rm -rf " .. dir)
    end
end)

local function start(handler, seed, tls_extra)
    local opts = { port = 0, host = "127.0.0.1", tls = { cert = dir .. "/localhost.pem", key = dir .. "/localhost.key" } }
    for k, v in pairs(tls_extra or {}) do
        opts.tls[k] = v
    end
    local srv = assert((seed and http.serve or http.createServer)(opts, handler))
    return srv, "https://127.0.0.1:" .. srv:address().port
end

describe("https server", function()
    it("answers curl --cacert, two requests on one keep-alive connection, with ALPN http/1.1", function()
        local srv, base = start(function(req)
            return { status = 200, body = "hello " .. req.path }
        end, true)
        local r = assert(process.run({
            "curl", "-sS", "-v", "--max-time", "5", "--cacert", dir .. "/ca.pem", base .. "/a", base .. "/b",
        }, { timeout = 8000 }))
        assert.are.equal(0, r.code, r.stderr)
        assert.are.equal("hello /ahello /b", r.stdout)
        assert.matches("ALPN: server accepted http/1.1", r.stderr)
        assert.matches("Re%-using existing connection", r.stderr)
        srv:close()
    end)

    it("closes a plain-HTTP client's connection without calling the handler", function()
        local calls = 0
        local srv, base = start(function(_, res)
            calls = calls + 1
            res:finish()
        end)
        local r = assert(process.run({ "curl", "-sS", "--max-time", "5", (base:gsub("^https", "http")) .. "/" },
            { timeout = 8000 }))
        assert.are_not.equal(0, r.code)
        assert.are.equal(0, calls)
        srv:close()
    end)
end)

describe("https requests", function()
    it("tell the handler their TLS session (req.tls, req:tlsInfo()) with the client's certificate", function()
        local seen = {}
        local srv, base = start(function(req, res)
            seen[#seen + 1] = req.tls
            assert.are.equal(req.tls, req:tlsInfo())
            res:finish("ok")
        end, false, { ca = dir .. "/ca.pem", requestCert = true, rejectUnauthorized = false })
        local tls = { ca = dir .. "/ca.pem", cert = dir .. "/client.pem", key = dir .. "/client.key", servername = "localhost" }
        local res = assert(http.request({ url = base .. "/", tls = tls }))
        assert.are.equal("ok", res.body)
        local info = seen[1]
        assert.are.equal("TLSv1.3", info.version)
        assert.is_string(info.cipher)
        assert.are.equal("http/1.1", info.alpn)
        assert.are.equal("localhost", info.servername)
        assert.is_true(info.authorized)
        assert.are.equal("CN=client", info.peerCertificate.subject)
        assert.are.equal("CN=ca", info.peerCertificate.issuer)
        -- Without a client certificate: no peerCertificate.
        res = assert(http.request({ url = base .. "/", tls = { ca = dir .. "/ca.pem" } }))
        assert.are.equal("ok", res.body)
        assert.is_nil(seen[2].peerCertificate)
        http.closeIdle()
        srv:close()
        -- The seed API's request, and a plain server's (false: no TLS).
        local got
        srv, base = start(function(req)
            got = req:tlsInfo()
            return { status = 200, body = "" }
        end, true)
        assert(http.request({ url = base .. "/", tls = { ca = dir .. "/ca.pem" } }))
        assert.are.equal("TLSv1.3", got.version)
        http.closeIdle()
        srv:close()
        srv = assert(http.createServer({ port = 0, host = "127.0.0.1" }, function(req, res)
            got = { req.tls, req:tlsInfo() }
            res:finish()
        end))
        assert(http.get("http://127.0.0.1:" .. srv:address().port .. "/"))
        assert.are.same({ false }, got)
        http.closeIdle()
        srv:close()
    end)

    it("reload the server's certificate with server:setCertificate", function()
        local srv, base = start(function(req)
            return { status = 200, body = req.tls.servername or "" }
        end, true)
        local r = assert(process.run({ "curl", "-sS", "-v", "--max-time", "5", "--cacert", dir .. "/ca.pem", base .. "/" },
            { timeout = 8000 }))
        assert.matches("subject: CN=localhost", r.stderr)
        assert.is_nil(srv:setCertificate({ cert = dir .. "/new.pem", key = dir .. "/new.key" }))
        r = assert(process.run({ "curl", "-sS", "-v", "--max-time", "5", "--cacert", dir .. "/ca.pem", base .. "/" },
            { timeout = 8000 }))
        assert.are.equal(0, r.code, r.stderr)
        assert.matches("subject: CN=new", r.stderr)
        local err = srv:setCertificate({ cert = dir .. "/new.pem", key = dir .. "/localhost.key" })
        assert.are.equal("EINVAL", err.name)
        srv:close()
        local plain = assert(http.createServer({ port = 0, host = "127.0.0.1" }, function() end))
        assert.has_error(function() plain:setCertificate({ cert = "a", key = "b" }) end,
            "server:setCertificate: not an https server (no tls option)")
        plain:close()
    end)
end)

describe("https server names", function()
    it("wait for an sni function that parks, per connection", function()
        local asked = 0
        local srv = start(function(req)
            return { status = 200, body = req.tls.servername or "" }
        end, true, {
            sni = function(name)
                asked = asked + 1
                sleep(30) -- as a lookup in a database or a file would
                if name == "localhost" then return { cert = dir .. "/new.pem", key = dir .. "/new.key" } end
            end,
        })
        local port = srv:address().port
        local function get(name)
            return assert(process.run({ "curl", "-sS", "-v", "-k", "--max-time", "5", "--resolve",
                name .. ":" .. port .. ":127.0.0.1", "https://" .. name .. ":" .. port .. "/" }, { timeout = 8000 }))
        end
        local r = get("localhost")
        assert.are.equal(0, r.code, r.stderr)
        assert.are.equal("localhost", r.stdout)
        assert.matches("subject: CN=new", r.stderr)
        r = get("other.example")
        assert.are.equal("other.example", r.stdout)
        assert.matches("subject: CN=localhost", r.stderr)
        assert.are.equal(2, asked)
        srv:close()
    end)
end)

describe("https under luaio --workers", function()
    it("serves the certificate files anew after SIGHUP", function()
        sh(("cp %s/localhost.pem %s/live.pem && cp %s/localhost.key %s/live.key"):format(dir, dir, dir, dir))
        local port = helper.free_port()
        local app = helper.script(([[
            local http = require "http"
            assert(http.createServer({ port = %d, host = "127.0.0.1", tls = { cert = %q, key = %q } },
                function(req, res) res:finish("ok") end))
        ]]):format(port, dir .. "/live.pem", dir .. "/live.key"))
        local m = assert(process.spawn(helper.luaio, { "--workers", "1", app }, { stdio = { "ignore", "ignore", "ignore" } }))
        finally(function()
            if not m:status() then
                m:kill("SIGKILL")
                m:wait()
            end
            os.remove(app)
        end)
        local function subject()
            local r = process.run({ "curl", "-sS", "-v", "--max-time", "3", "--cacert", dir .. "/ca.pem",
                "https://127.0.0.1:" .. port .. "/" }, { timeout = 5000 })
            return r and r.code == 0 and r.stderr:match("subject: (CN=%w+)") or nil
        end
        assert.is_true(helper.wait_for(function() return subject() == "CN=localhost" end, 10000))
        sh(("cp %s/new.pem %s/live.pem && cp %s/new.key %s/live.key"):format(dir, dir, dir, dir))
        m:kill("SIGHUP")
        assert.is_true(helper.wait_for(function() return subject() == "CN=new" end, 10000))
        m:kill("SIGTERM")
        assert.are.equal(0, m:wait())
    end)
end)

describe("tls session tickets under luaio --workers", function()
    it("resume a session that one worker issued on another, and after SIGHUP", function()
        -- Each worker listens on a port of its own, so the spec knows which one it reaches.
        local ports = { helper.free_port(), helper.free_port() }
        local app = helper.script(([[
            local http = require "http"
            local process = require "process"
            local port = ({ %d, %d })[process.workerId]
            assert(http.createServer({ port = port, host = "127.0.0.1", tls = { cert = %q, key = %q } },
                function(req, res) res:finish(process.workerId .. " " .. tostring(req.tls.resumed)) end))
        ]]):format(ports[1], ports[2], dir .. "/localhost.pem", dir .. "/localhost.key"))
        local m = assert(process.spawn(helper.luaio, { "--workers", "2", app }, { stdio = { "ignore", "ignore", "ignore" } }))
        finally(function()
            if not m:status() then
                m:kill("SIGKILL")
                m:wait()
            end
            os.remove(app)
        end)
        local tls = require "tls"
        -- One request on a new connection to the worker behind `port`: its answer and the session.
        local function get(port, session)
            local sock = tls.connect(port, "127.0.0.1", { ca = dir .. "/ca.pem", session = session })
            if not sock then return nil end
            sock:setTimeout(5000)
            sock:write("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            local reply = ""
            for _ = 1, 100 do
                local d = sock:read()
                if not d then break end
                reply = reply .. d
            end
            local s = sock:getSession()
            sock:close()
            return reply:match("\r\n\r\n(.*)$"), s
        end
        assert.is_true(helper.wait_for(function() return get(ports[1]) ~= nil and get(ports[2]) ~= nil end, 10000))
        local body, session = get(ports[1])
        assert.are.equal("1 false", body)
        assert.is_string(session)
        assert.are.equal("2 true", (get(ports[2], session)))
        -- New workers (a reload) derive the same keys from the master's secret.
        m:kill("SIGHUP")
        sleep(1500)
        assert.is_true(helper.wait_for(function() return get(ports[2]) ~= nil end, 10000))
        assert.are.equal("2 true", (get(ports[2], session)))
        assert.are.equal("1 true", (get(ports[1], session)))
        m:kill("SIGTERM")
        assert.are.equal(0, m:wait())
    end)
end)

describe("https client", function()
    it("resumes the TLS session of the origin on a new connection", function()
        local resumed = {}
        local srv, base = start(function(req)
            resumed[#resumed + 1] = req.tls.resumed
            return { status = 200, body = "r" }
        end, true)
        local tls = { ca = dir .. "/ca.pem" }
        for _ = 1, 3 do
            assert.are.equal("r", assert(http.request({ url = base .. "/", tls = tls })).body)
            http.closeIdle() -- the next request needs a new connection
        end
        assert.are.same({ false, true, true }, resumed)
        srv:close()
    end)

    it("fetches https:// URLs, verifying the certificate, pooled per origin and TLS settings", function()
        local srv, base = start(function(req)
            return { status = 200, body = "hi " .. req.path }
        end, true)
        local res, err = http.get(base .. "/x")
        assert.is_nil(res)
        assert.are.equal("ECERTVERIFY", err.name)
        local tls = { ca = dir .. "/ca.pem" }
        res = assert(http.request({ url = base .. "/1", tls = tls }))
        assert.are.equal(200, res.status)
        assert.are.equal("hi /1", res.body)
        res = assert(http.request({ url = base .. "/2", tls = tls }))
        assert.are.equal("hi /2", res.body)
        -- One connection served both (the pooled one is still open).
        assert.are.equal(1, srv:connections())
        -- Other TLS settings: a connection of their own.
        res = assert(http.request({ url = base .. "/3", tls = { verify = false } }))
        assert.are.equal("hi /3", res.body)
        assert.are.equal(2, srv:connections())
        http.closeIdle()
        srv:close()
    end)
    it("serves static files: the body read and encrypted in blocks, ranges too", function()
        local fs = require "fs"
        local www = dir .. "/www"
        assert(fs.mkdir(www))
        local parts = {}
        for i = 1, 40000 do parts[i] = ("%07d\n"):format(i) end -- 320,000 bytes, no block alike
        local body = table.concat(parts)
        assert(fs.writeFile(www .. "/big.txt", body))
        assert(fs.writeFile(www .. "/small.txt", "small"))
        local srv, base = start(http.static(www, { fileCache = false }))
        local out = dir .. "/out"
        local r = assert(process.run({ "curl", "-sS", "--max-time", "10", "--cacert", dir .. "/ca.pem", "-o", out,
            base .. "/big.txt" }, { timeout = 12000 }))
        assert.are.equal(0, r.code, r.stderr)
        assert.are.equal(#body, #helper.read(out))
        assert.is_true(body == helper.read(out))
        r = assert(process.run({ "curl", "-sS", "--max-time", "10", "--cacert", dir .. "/ca.pem", "-r", "65530-200000",
            base .. "/big.txt" }, { timeout = 12000 }))
        local r2 = assert(process.run({ "curl", "-sS", "--max-time", "10", "--cacert", dir .. "/ca.pem",
            base .. "/small.txt" }, { timeout = 12000 }))
        srv:close()
        assert.are.equal(0, r.code, r.stderr)
        assert.are.equal(body:sub(65531, 200001), r.stdout)
        assert.are.equal("small", r2.stdout)
    end)
end)
