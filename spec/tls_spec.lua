-- tls: luaio's TLS servers and clients against each other and against OpenSSL's s_client and
-- s_server and curl, with certificates made at spec time (a CA, a server certificate for
-- localhost and 127.0.0.1, an expired one, one for another name, a self-signed one and one from
-- an unknown CA). Everything talks to 127.0.0.1; every loop is bounded.
local tls = require "tls"
local tcp = require "tcp"
local task = require "task"
local process = require "process"
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

-- Certificates in dir (spec/helper.lua).
local function make_cert(name, san, ca, days)
    helper.make_cert(dir, name, san, ca, days)
end

local function make_ca(name, parent)
    helper.make_ca(dir, name, parent)
end

local function server_opts(name, extra)
    local o = { host = "127.0.0.1", cert = path((name or "server") .. ".pem"), key = path((name or "server") .. ".key") }
    for k, v in pairs(extra or {}) do
        o[k] = v
    end
    return o
end

-- A TLS server on a free port of 127.0.0.1; returns it and its port.
local function serve(onconnect, opts)
    local srv = assert(tls.createServer(0, onconnect, opts or server_opts()))
    return srv, srv:address().port
end

local echo = helper.echo

local free_port = helper.free_port

setup(function()
    dir = os.tmpname()
    os.remove(dir)
    sh("mkdir -p " .. dir)
    make_ca("ca")
    make_ca("otherca")
    make_cert("server", "DNS:localhost,IP:127.0.0.1", "ca")
    make_cert("expired", "DNS:localhost,IP:127.0.0.1", "ca", -1)
    make_cert("otherhost", "DNS:other.example", "ca")
    make_cert("selfsigned", "DNS:localhost,IP:127.0.0.1", nil)
    make_cert("unknownca", "DNS:localhost,IP:127.0.0.1", "otherca")
    make_cert("client", "DNS:client.example", "ca")
    make_cert("fnhost", "DNS:fn.example", "ca")
end)

teardown(function()
    if dir then
        sh("rm -rf " .. dir)
    end
end)

describe("tls server and client (luaio to luaio)", function()
    it("echoes through TLS 1.3 and reports the session in tlsInfo", function()
        local srv, port = serve(echo)
        local sock = assert(tls.connect(port, "127.0.0.1", { ca = path("ca.pem"), servername = "localhost" }))
        assert.is_nil(sock:write("hello\n"))
        assert.are.equal("hello", sock:readline())
        local info = sock:tlsInfo()
        assert.are.equal("TLSv1.3", info.version)
        assert.is_string(info.cipher)
        assert.is_false(info.resumed)
        assert.is_true(info.authorized)
        local pc = info.peerCertificate
        assert.are.equal("CN=server", pc.subject)
        assert.are.equal("CN=ca", pc.issuer)
        assert.are.same({ "DNS:localhost", "IP:127.0.0.1" }, pc.san)
        assert.matches("^%x%x:", pc.fingerprint256)
        assert.are.equal(32 * 3 - 1, #pc.fingerprint256)
        assert.is_string(pc.notBefore)
        assert.is_string(pc.notAfter)
        sock:close()
        srv:close()
    end)

    it("carries a megabyte both ways without losing or reordering a byte", function()
        local srv, port = serve(echo)
        local sock = assert(tls.connect(port, "127.0.0.1", { ca = path("ca.pem") }))
        local parts = {}
        for i = 1, 1024 do
            parts[i] = ("%07d"):format(i) .. ("x"):rep(1017)
        end
        local data = table.concat(parts)
        local got
        task.spawn(function()
            got = sock:read(#data)
        end)
        assert.is_nil(sock:write(data))
        for _ = 1, 500 do
            if got then break end
            sleep(10)
        end
        assert.are.equal(#data, got and #got)
        assert.is_true(got == data)
        sock:close()
        srv:close()
    end)

    it("sends the chain that cert holds (leaf, then an intermediate CA)", function()
        -- An intermediate CA signed by ca, and a leaf signed by the intermediate.
        make_ca("inter", "ca")
        make_cert("leaf", "DNS:localhost,IP:127.0.0.1", "inter")
        local f = assert(io.open(path("chain.pem"), "w"))
        f:write(helper.read(path("leaf.pem")), helper.read(path("inter.pem")))
        f:close()
        local srv, port = serve(echo, server_opts("server", { cert = path("chain.pem"), key = path("leaf.key") }))
        local sock = assert(tls.connect(port, "127.0.0.1", { ca = path("ca.pem") })) -- the root only
        assert.are.equal("CN=leaf", sock:tlsInfo().peerCertificate.subject)
        sock:close()
        -- The leaf alone does not verify against the root: the intermediate was what came.
        srv:close()
        srv, port = serve(echo, server_opts("server", { cert = path("leaf.pem"), key = path("leaf.key") }))
        local _, err = tls.connect(port, "127.0.0.1", { ca = path("ca.pem") })
        assert.are.equal("ECERTVERIFY", err.name)
        srv:close()
    end)

    it("takes cert and key as PEM text, negotiates ALPN and reads the server name", function()
        local seen
        local srv, port = serve(function(sock)
            seen = sock:tlsInfo()
            echo(sock)
        end, {
            host = "127.0.0.1",
            cert = helper.read(path("server.pem")),
            key = helper.read(path("server.key")),
            alpn = { "h2", "http/1.1" },
        })
        local sock = assert(tls.connect(port, "127.0.0.1", {
            ca = helper.read(path("ca.pem")), servername = "localhost", alpn = { "http/1.1" },
        }))
        assert.is_nil(sock:write("x"))
        assert.are.equal("x", sock:read())
        assert.are.equal("http/1.1", sock:tlsInfo().alpn)
        assert.are.equal("http/1.1", seen.alpn)
        assert.are.equal("localhost", seen.servername)
        assert.is_nil(seen.peerCertificate)
        sock:close()
        srv:close()
    end)

    it("asks for a client certificate (requestCert) and refuses a client without one", function()
        local peer
        local srv, port = serve(function(sock)
            peer = sock:tlsInfo().peerCertificate
            echo(sock)
        end, server_opts("server", { ca = path("ca.pem"), requestCert = true }))
        local sock = assert(tls.connect(port, "127.0.0.1", {
            ca = path("ca.pem"), cert = path("client.pem"), key = path("client.key"),
        }))
        assert.is_nil(sock:write("x"))
        assert.are.equal("x", sock:read())
        assert.are.equal("CN=client", peer.subject)
        sock:close()
        -- Without a certificate: TLS 1.3 clients learn it at their first read.
        local s2, err = tls.connect(port, "127.0.0.1", { ca = path("ca.pem") })
        if s2 then
            local data
            data, err = s2:read()
            assert.is_nil(data)
            s2:close()
        end
        assert.are.equal("ETLS", err.name)
        srv:close()
    end)

    it("upgrades a plain tcp connection (STARTTLS) on both sides", function()
        local srv = assert(tcp.createServer(0, function(sock)
            assert.are.equal("STARTTLS", sock:readline())
            sock:write("GO\n")
            assert.is_nil(sock:upgrade({ server = true, cert = path("server.pem"), key = path("server.key") }))
            echo(sock)
        end, { host = "127.0.0.1" }))
        local sock = assert(tcp.connect(srv:address().port, "127.0.0.1"))
        sock:write("STARTTLS\n")
        assert.are.equal("GO", sock:readline())
        assert.is_nil(sock:upgrade({ host = "127.0.0.1", ca = path("ca.pem") }))
        sock:write("secret\n")
        assert.are.equal("secret", sock:readline())
        assert.are.equal("TLSv1.3", sock:tlsInfo().version)
        sock:close()
        srv:close()
    end)
end)

describe("tls writes and the end of a session", function()
    it("queues writes made before the handshake is done and sends them after it", function()
        local srv, port = serve(echo)
        local core = require "luaio.tls"
        local ctx = assert(core.context({ server = false, ca = path("ca.pem") }))
        local sock = assert(tcp.connect(port, "127.0.0.1"))
        assert.is_nil(core.attach(sock, ctx, false, "localhost", "localhost"))
        -- The handshake has only begun: the write neither fails nor waits.
        assert.is_nil(sock:write("early\n"))
        assert.is_nil(sock:write({ "and ", "more\n" }))
        assert.is_true(core.handshake(sock, 3000))
        sock:setTimeout(3000)
        assert.are.equal("early", sock:readline())
        assert.are.equal("and more", sock:readline())
        sock:close()
        srv:close()
    end)

    it("encrypts a large write a chunk at a time as the peer takes it, not whole", function()
        local function rss_kib()
            local f = assert(io.open("/proc/self/status"))
            local status = f:read("*a")
            f:close()
            return tonumber(status:match("VmRSS:%s*(%d+)"))
        end
        local big = string.rep("0123456789abcdef", 2 * 1024 * 1024) -- 32 MiB
        local tail = "and the end\n"
        local result = {}
        local srv, port = serve(function(sock)
            result.write = sock:write({ big, tail }) -- waits until the kernel took it all
            result.done = true
            sock:close()
        end)
        local before = rss_kib()
        local sock = assert(tls.connect(port, "127.0.0.1", { ca = path("ca.pem") }))
        sock:setTimeout(10000)
        -- The server's write has begun once a byte arrives; the client reads no more for now.
        assert.are.equal("0", sock:read(1))
        local grown = rss_kib() - before
        assert.is_true(grown < 16 * 1024, "RSS grew by " .. grown .. " KiB while 32 MiB were being written")
        assert.is_nil(result.done)
        local rest = sock:read(#big - 1)
        assert.are.equal(#big - 1, #rest)
        assert.is_true(rest == big:sub(2), "the bytes differ")
        assert.are.equal(tail, sock:read(#tail))
        for _ = 1, 100 do
            if result.done then break end
            sleep(10)
        end
        assert.is_true(result.done)
        assert.is_nil(result.write)
        sock:close()
        srv:close()
    end)

    it("shuts down after the rest of a large write, not in the middle of it", function()
        local big = string.rep("abcdefgh", 512 * 1024) -- 4 MiB
        local result = {}
        local srv, port = serve(function(sock)
            local started = false
            local writer = task.spawn(function()
                started = true -- and the write runs at once until it waits for the peer
                return sock:write(big)
            end)
            assert(helper.wait_for(function() return started end))
            result.shutdown = sock:shutdown()
            result.write = writer:join()
            sock:close()
        end)
        local sock = assert(tls.connect(port, "127.0.0.1", { ca = path("ca.pem") }))
        sock:setTimeout(10000)
        assert.are.equal("a", sock:read(1)) -- the write has begun
        local rest, err = sock:read(#big)
        assert.are.equal("EOF", err.name)
        assert.is_nil(err.truncated) -- close_notify came, after every byte
        assert.are.equal(#big - 1, #rest)
        assert.is_true(helper.wait_for(function() return result.write ~= nil or result.shutdown ~= nil end))
        assert.is_nil(result.shutdown)
        sock:close()
        srv:close()
    end)

    it("tells a peer that closed without close_notify (truncated) from one that said close_notify", function()
        -- luaio's server says close_notify before it closes: a plain EOF.
        local srv, port = serve(function(sock)
            sock:write("bye\n")
            sock:close()
        end)
        local sock = assert(tls.connect(port, "127.0.0.1", { ca = path("ca.pem") }))
        sock:setTimeout(3000)
        assert.are.equal("bye", sock:readline())
        local data, err = sock:readline()
        assert.is_nil(data)
        assert.are.equal("EOF", err.name)
        assert.is_nil(err.truncated)
        sock:close()
        srv:close()
        -- openssl s_server killed by SIGKILL: the kernel closes the TCP connection, no close_notify.
        port = free_port()
        local child = assert(process.spawn("openssl", {
            "s_server", "-accept", "127.0.0.1:" .. port, "-cert", path("server.pem"), "-key", path("server.key"),
            "-naccept", "1", "-quiet",
        }, { stdio = { "pipe", "ignore", "ignore" } }))
        for _ = 1, 200 do
            sock, err = tls.connect(port, "127.0.0.1", { ca = path("ca.pem") })
            if sock or err.name ~= "ECONNREFUSED" then break end
            sleep(10)
        end
        assert.is_truthy(sock, tostring(err))
        sock:setTimeout(3000)
        child.stdin:write("part of a message\n")
        assert.are.equal("part of a message", sock:readline())
        child:kill("SIGKILL")
        child:wait()
        child.stdin:close()
        data, err = sock:readline()
        assert.is_nil(data)
        assert.are.equal("EOF", err.name)
        assert.is_true(err.truncated)
        assert.matches("close_notify", err.message)
        sock:close()
    end)
end)

describe("tls client memory", function()
    it("holds no record buffer on an idle client connection once the server's tickets are read", function()
        -- The servers in a process of its own, so that the RSS measured is the client's: one
        -- sends tickets, the other none. What a client connection holds is compared between
        -- the two (the same with either allocator, ASan's too): a kept read buffer made the
        -- difference 16.7 KB (39.7 KB against 23 KB per connection).
        local app = helper.script(([[
            local tls = require "tls"
            local function echo(sock)
                while true do
                    local line = sock:readline()
                    if not line then break end
                    sock:write(line .. "\n")
                end
                sock:close()
            end
            for _, tickets in ipairs({ true, false }) do
                local srv = assert(tls.createServer(0, echo,
                    { host = "127.0.0.1", cert = %q, key = %q, sessionTickets = tickets }))
                print(srv:address().port)
            end
            io.stdout:flush()
        ]]):format(path("server.pem"), path("server.key")))
        local child = assert(process.spawn(helper.luaio, { app }, { stdio = { "ignore", "pipe", "inherit" } }))
        child.stdout:setTimeout(10000)
        local ports = { tonumber(child.stdout:readline()), tonumber(child.stdout:readline()) }
        -- The client in a fresh process too: its RSS grows by what each connection holds.
        local client = helper.script([[
            local tls = require "tls"
            local port = tonumber(arg[1])
            local function rss_kib()
                local f = assert(io.open("/proc/self/status"))
                local status = f:read("*a")
                f:close()
                return tonumber(status:match("VmRSS:%s*(%d+)"))
            end
            local function open()
                local sock = assert(tls.connect(port, "127.0.0.1", { verify = false }))
                sock:write("x\n")
                assert(sock:readline() == "x") -- the tickets came before the echo
                return sock
            end
            local socks = { open() }
            collectgarbage()
            local before = rss_kib()
            local n = 300
            for i = 2, n + 1 do
                socks[i] = open()
            end
            collectgarbage()
            print((rss_kib() - before) * 1024 / n)
            for _, s in ipairs(socks) do s:close() end
        ]])
        -- Under ASan freed blocks are not reused while in quarantine: none, for this count.
        local env = process.environ()
        env.ASAN_OPTIONS = (env.ASAN_OPTIONS and env.ASAN_OPTIONS .. ":" or "") .. "quarantine_size_mb=0"
        local per = {}
        for i, port in ipairs(ports) do
            local r = assert(process.run({ helper.luaio, client, tostring(port) }, { timeout = 60000, env = env }))
            per[i] = tonumber(r.stdout)
            assert.is_number(per[i], r.stdout .. r.stderr)
        end
        child:kill("SIGTERM")
        child:wait()
        child.stdout:close()
        os.remove(app)
        os.remove(client)
        assert.is_true(per[1] - per[2] < 8 * 1024,
            ("%.0f bytes per idle client connection with tickets, %.0f without"):format(per[1], per[2]))
    end)
end)

describe("tls server names, sessions and certificate reload", function()
    -- The subject of the certificate a client connecting with servername gets.
    local function subject_for(port, servername)
        local sock, err = tls.connect(port, "127.0.0.1", { ca = path("ca.pem"), servername = servername })
        if not sock then
            return nil, err
        end
        local subject = sock:tlsInfo().peerCertificate.subject
        sock:close()
        return subject
    end

    it("picks the certificate by SNI from the sni table and the sni function", function()
        local asked = {}
        local srv, port = serve(echo, server_opts("server", {
            sni = {
                ["Other.Example"] = { cert = path("otherhost.pem"), key = path("otherhost.key") },
            },
        }))
        srv:close()
        local fn_pair = { cert = path("fnhost.pem"), key = path("fnhost.key") }
        srv, port = serve(echo, server_opts("server", {
            sni = function(name)
                asked[#asked + 1] = name
                if name == "fn.example" then return fn_pair end
            end,
        }))
        assert.are.equal("CN=fnhost", subject_for(port, "fn.example"))
        assert.are.equal("CN=fnhost", subject_for(port, "fn.example"))
        assert.are.equal("CN=server", subject_for(port, "localhost"))
        assert.are.same({ "fn.example", "fn.example", "localhost" }, asked)
        srv:close()
        srv, port = serve(echo, server_opts("server", {
            sni = { ["other.example"] = { cert = path("otherhost.pem"), key = path("otherhost.key") },
                ["*.wild.example"] = { cert = path("fnhost.pem"), key = path("fnhost.key") } },
        }))
        assert.are.equal("CN=otherhost", subject_for(port, "other.example"))
        assert.are.equal("CN=server", subject_for(port, "localhost"))
        local _, err = subject_for(port, "a.wild.example") -- fnhost's certificate is not for that name
        assert.are.equal("EHOSTMISMATCH", err.name)
        -- openssl s_client sends the name too.
        local r = assert(process.run({ "openssl", "s_client", "-connect", "127.0.0.1:" .. port, "-servername",
            "other.example", "-CAfile", path("ca.pem") }, { input = "", timeout = 5000 }))
        assert.matches("subject=CN = otherhost", r.stdout)
        srv:close()
        assert.has_error(function()
            tls.createServer(0, echo, server_opts("server", { sni = { x = "nope" } }))
        end, 'tls.createServer: sni["x"] must be a table {cert = ..., key = ...}')
        assert.has_error(function()
            tls.createServer(0, echo, server_opts("server", { sni = 5 }))
        end, "tls.createServer: option 'sni' must be a table or function, got number")
    end)

    it("lets the sni function wait (the handshake pauses), and aborts on its error", function()
        local fn_pair = { cert = path("fnhost.pem"), key = path("fnhost.key") }
        local running, ended, connected = 0, 0, 0
        local srv, port = serve(function(sock)
            connected = connected + 1
            echo(sock)
        end, server_opts("server", {
            sni = function(name)
                running = running + 1
                sleep(name == "slow.example" and 1500 or 30) -- parks this task, not the handshakes of others
                running = running - 1
                ended = ended + 1
                if name == "bad.example" then error("no certificate for " .. name) end
                if name == "fn.example" or name == "slow.example" then return fn_pair end
            end,
            handshakeTimeout = 1000, -- past what three handshakes take on a loaded machine, short of 1500
        }))
        -- Three handshakes wait at once, each gets its certificate.
        local subjects = {}
        local tasks = {}
        for i, name in ipairs({ "fn.example", "localhost", "fn.example" }) do
            tasks[i] = task.spawn(function()
                subjects[i] = subject_for(port, name)
            end)
        end
        for _, t in ipairs(tasks) do t:join() end
        assert.are.same({ "CN=fnhost", "CN=server", "CN=fnhost" }, subjects)
        assert.is_true(helper.wait_for(function() return connected == 3 end, 3000))
        -- An error of the function fails the handshake (an alert), the connection is closed.
        local fds = helper.fd_count()
        local _, err = subject_for(port, "bad.example")
        assert.are.equal("ETLS", err.name)
        assert.matches("internal error", err.message)
        -- A function that outlives the handshake timeout: the handshake fails and the connection
        -- closes; when the function returns later nothing happens to the closed connection.
        _, err = subject_for(port, "slow.example")
        assert.is_table(err)
        assert.are.equal(3, connected)
        assert.is_true(helper.wait_for(function() return running == 0 end, 5000))
        -- The client gives up while the function runs (it closes first).
        local t = task.spawn(function()
            tls.connect(port, "127.0.0.1", { ca = path("ca.pem"), servername = "slow.example", handshakeTimeout = 50 })
        end)
        t:join()
        assert.is_true(helper.wait_for(function() return running == 0 end, 5000))
        assert.is_true(helper.fds_back_to(fds, 3000) <= fds)
        assert.are.equal(6, ended)
        -- The server still serves.
        assert.are.equal("CN=fnhost", subject_for(port, "fn.example"))
        assert.is_true(helper.wait_for(function() return connected == 4 end, 3000))
        srv:close()
    end)

    -- A session of a first connection (after its first reply: TLS 1.3 tickets follow the handshake).
    local function session_of(port)
        local sock = assert(tls.connect(port, "127.0.0.1", { ca = path("ca.pem") }))
        sock:setTimeout(3000)
        sock:write("x\n")
        assert.are.equal("x", sock:readline())
        assert.is_false(sock:tlsInfo().resumed)
        local session = sock:getSession()
        sock:close()
        return session
    end

    local function resumes(port, session)
        local sock = assert(tls.connect(port, "127.0.0.1", { ca = path("ca.pem"), session = session }))
        sock:setTimeout(3000)
        sock:write("y\n")
        assert.are.equal("y", sock:readline())
        local resumed = sock:tlsInfo().resumed
        local next_session = sock:getSession()
        sock:close()
        return resumed, next_session
    end

    it("resumes a session (getSession, session) with tickets, rotating the ticket keys", function()
        local server_saw = {}
        -- Keys made every 2 s, counted from the server's start (a key rotates at the first
        -- ticket after its time, and one unused for two periods is dropped): long enough for
        -- what comes before the rotation on a loaded machine under ASan.
        local monotime = require("system").monotime
        local started = monotime()
        local srv, port = serve(function(sock)
            server_saw[#server_saw + 1] = sock:tlsInfo().resumed
            echo(sock)
        end, server_opts("server", { ticketKeyRotation = 2000 }))
        local session = session_of(port)
        assert.is_string(session)
        assert.is_true(resumes(port, session))
        assert.is_true(resumes(port, session))
        assert.is_false(resumes(port, "not a session")) -- a full handshake
        assert.are.same({ false, true, true, false }, server_saw)
        -- A TLS 1.3 client uses a ticket once: a resumed connection gets a new one, so that a
        -- client's connections resume one after the other (wrk and OpenSSL's clients did a
        -- full handshake every other connection when it did not).
        local s = session
        for _ = 1, 3 do
            local resumed, next_session = resumes(port, s)
            assert.is_true(resumed)
            assert.is_string(next_session)
            assert.are_not.equal(s, next_session)
            s = next_session
        end
        -- One rotation later the previous key still opens the ticket; two later it does not.
        sleep(math.max(0, (started + 2.5 - monotime()) * 1000))
        assert.is_true(resumes(port, session))
        sleep(2100)
        assert.is_false(resumes(port, session))
        srv:close()
        -- sessionTickets = false: nothing resumes.
        srv, port = serve(echo, server_opts("server", { sessionTickets = false }))
        assert.is_false(resumes(port, session_of(port)))
        srv:close()
    end)

    it("reloads the certificate (setCertificate) for new connections, keeping open ones", function()
        local srv, port = serve(echo)
        local old = assert(tls.connect(port, "127.0.0.1", { ca = path("ca.pem") }))
        old:setTimeout(3000)
        local session = session_of(port)
        assert.is_nil(srv:setCertificate({ cert = path("otherhost.pem"), key = path("otherhost.key") }))
        assert.are.equal("CN=otherhost", subject_for(port, "other.example"))
        -- Tickets of the old certificate's context still resume.
        local sock = assert(tls.connect(port, "127.0.0.1", { ca = path("ca.pem"), servername = "other.example",
            session = session }))
        assert.is_true(sock:tlsInfo().resumed)
        sock:close()
        old:write("still\n")
        assert.are.equal("still", old:readline())
        old:close()
        -- A bad pair: an error, and the certificate in use stays.
        local err = srv:setCertificate({ cert = path("server.pem"), key = path("otherhost.key") })
        assert.are.equal("EINVAL", err.name)
        assert.are.equal("CN=otherhost", subject_for(port, "other.example"))
        assert.has_error(function() srv:setCertificate("x") end,
            "setCertificate: argument 1 must be a table {cert = ..., key = ...}")
        srv:close()
        local plain = assert(tcp.createServer(0, function() end, { host = "127.0.0.1" }))
        assert.has_error(function() plain:setCertificate({ cert = "a", key = "b" }) end,
            "setCertificate: not a TLS server")
        plain:close()
    end)
end)

describe("tls certificate verification", function()
    it("names the option and the path of a certificate, key or CA file it cannot read", function()
        local srv, err = tls.createServer(0, function() end, { cert = "/nonexistent/cert.pem", key = path("server.key") })
        assert.is_nil(srv)
        assert.are.equal("ENOENT", err.name)
        assert.are.equal("/nonexistent/cert.pem", err.path)
        assert.matches("cannot read the certificate", err.message, 1, true)
        srv, err = tls.createServer(0, function() end, { cert = path("server.pem"), key = "/nonexistent/key.pem" })
        assert.are.equal("/nonexistent/key.pem", err.path)
        assert.matches("cannot read the private key", err.message, 1, true)
        -- A missing ca was taken as an empty directory: verification then failed later, for
        -- another reason.
        local plain = assert(tcp.createServer(0, function(s) sleep(100) s:close() end, { host = "127.0.0.1" }))
        local c
        c, err = tls.connect(plain:address().port, "127.0.0.1", { ca = "/nonexistent/ca.pem" })
        plain:close()
        assert.is_nil(c)
        assert.are.equal("ENOENT", err.name)
        assert.are.equal("/nonexistent/ca.pem", err.path)
        -- A misspelled option is named, at the caller's line (not at lib/tls.lua), before the
        -- check for cert and key.
        local ok, msg = pcall(tls.createServer, 0, function() end, { crt = path("server.pem"), key = path("server.key") })
        assert.is_false(ok)
        assert.matches("tls_spec.lua:%d+: tls.createServer: unknown option 'crt'", msg)
        ok, msg = pcall(tls.connect, 1, "127.0.0.1", { servrename = "x" })
        assert.is_false(ok)
        assert.matches("tls_spec.lua:%d+: tls.connect: unknown option 'servrename'", msg)
        ok, msg = pcall(tls.createServer, 0, function() end, { host = "127.0.0.1" })
        assert.is_false(ok)
        assert.matches("tls_spec.lua:%d+: tls.createServer: options cert and key are required", msg)
        ok, msg = pcall(tls.connect, 1, "127.0.0.1", { handshakeTimeout = -1 })
        assert.is_false(ok)
        assert.matches("tls_spec.lua:%d+: tls.connect: handshakeTimeout must be", msg)
    end)

    local function refused(name, host, opts)
        local calls = 0
        local srv, port = serve(function(sock)
            calls = calls + 1
            echo(sock)
        end, server_opts(name))
        local o = { ca = path("ca.pem") }
        for k, v in pairs(opts or {}) do
            o[k] = v
        end
        if o.ca == "none" then o.ca = nil end
        local sock, err = tls.connect(port, host or "127.0.0.1", o)
        assert.is_nil(sock)
        -- The server carries on: a good client still gets through (when the certificate is
        -- merely not the one this client wanted).
        srv:close()
        sleep(20)
        assert.are.equal(0, calls)
        return err
    end

    it("refuses an expired certificate", function()
        local err = refused("expired")
        assert.are.equal("ECERTVERIFY", err.name)
        assert.are.equal("certificate has expired", err.message)
    end)

    it("refuses a certificate for another host name, and an IP address not in it", function()
        local err = refused("otherhost")
        assert.are.equal("EHOSTMISMATCH", err.name)
        err = refused("server", "127.0.0.1", { servername = "other.example" })
        assert.are.equal("EHOSTMISMATCH", err.name)
    end)

    it("refuses a self-signed certificate and one from an unknown CA", function()
        local err = refused("selfsigned")
        assert.are.equal("ECERTVERIFY", err.name)
        assert.matches("self.signed", err.message)
        err = refused("unknownca")
        assert.are.equal("ECERTVERIFY", err.name)
        assert.are.equal("unable to get local issuer certificate", err.message)
        -- Without a ca option the system's store is used, which does not know the test CA.
        err = refused("server", "127.0.0.1", { ca = "none" })
        assert.are.equal("ECERTVERIFY", err.name)
    end)

    it("connects to an unverified server only when verify = false is said", function()
        local srv, port = serve(echo, server_opts("selfsigned"))
        local sock = assert(tls.connect(port, "127.0.0.1", { verify = false }))
        sock:write("x")
        assert.are.equal("x", sock:read())
        assert.is_false(sock:tlsInfo().authorized)
        sock:close()
        srv:close()
    end)

    it("keeps serving after refused handshakes", function()
        local srv, port = serve(echo, server_opts("otherhost"))
        for _ = 1, 3 do
            local sock, err = tls.connect(port, "127.0.0.1", { ca = path("ca.pem") })
            assert.is_nil(sock)
            assert.are.equal("EHOSTMISMATCH", err.name)
        end
        local sock = assert(tls.connect(port, "127.0.0.1", { ca = path("ca.pem"), servername = "other.example" }))
        sock:write("still here")
        assert.are.equal("still here", sock:read())
        sock:close()
        srv:close()
    end)
end)

describe("tls server against bad peers", function()
    it("closes a connection that sends garbage instead of a ClientHello", function()
        local calls = 0
        local srv, port = serve(function(sock)
            calls = calls + 1
            sock:close()
        end)
        local sock = assert(tcp.connect(port, "127.0.0.1"))
        sock:setTimeout(3000)
        sock:write("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        local err
        for _ = 1, 10 do
            local data
            data, err = sock:read()
            if not data then break end
        end
        assert.is_truthy(err.name == "EOF" or err.name == "ECONNRESET")
        sock:close()
        srv:close()
        assert.are.equal(0, calls)
    end)

    it("closes a connection whose handshake does not come within handshakeTimeout", function()
        local srv, port = serve(function(sock)
            sock:close()
        end, server_opts("server", { handshakeTimeout = 100 }))
        local sock = assert(tcp.connect(port, "127.0.0.1"))
        sock:setTimeout(3000)
        local data, err = sock:read()
        assert.is_nil(data)
        assert.are.equal("EOF", err.name)
        sock:close()
        srv:close()
    end)

    it("fails a client's handshake that gets no answer within handshakeTimeout", function()
        local srv = assert(tcp.createServer(0, function(sock)
            sock:read() -- the ClientHello, never answered
            sleep(500)
        end, { host = "127.0.0.1" }))
        local sock, err = tls.connect(srv:address().port, "127.0.0.1", { handshakeTimeout = 100 })
        assert.is_nil(sock)
        assert.are.equal("ETIMEDOUT", err.name)
        srv:close()
        sleep(500)
    end)

    it("reports a plain-text server to a TLS client as ETLS", function()
        local srv = assert(tcp.createServer(0, function(sock)
            sock:write("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            sock:read()
        end, { host = "127.0.0.1" }))
        local sock, err = tls.connect(srv:address().port, "127.0.0.1")
        assert.is_nil(sock)
        assert.are.equal("ETLS", err.name)
        assert.is_string(err.message)
        srv:close()
    end)

    it("raises for missing cert or key and answers bad ones with an error", function()
        assert.has_error(function()
            tls.createServer(0, function() end, { host = "127.0.0.1" })
        end, "tls.createServer: options cert and key are required")
        local srv, err = tls.createServer(0, function() end, {
            host = "127.0.0.1", cert = path("server.pem"), key = path("client.key"),
        })
        assert.is_nil(srv)
        assert.are.equal("EINVAL", err.name)
        assert.matches("private key", err.message)
        srv, err = tls.createServer(0, function() end, { host = "127.0.0.1", cert = "/nonexistent", key = "/x" })
        assert.is_nil(srv)
        assert.matches("certificate", err.message)
    end)
end)

describe("tls against OpenSSL and curl", function()
    it("serves openssl s_client (verified), and refuses TLS 1.1", function()
        local srv, port = serve(function(sock)
            sock:write("hi from luaio\n")
            sock:shutdown()
            sock:read()
        end)
        local r = assert(process.run({
            "openssl", "s_client", "-connect", "127.0.0.1:" .. port, "-CAfile", path("ca.pem"),
            "-verify_return_error", "-verify_ip", "127.0.0.1", "-ign_eof",
        }, { input = "", timeout = 5000 }))
        assert.matches("hi from luaio", r.stdout)
        assert.matches("Verify return code: 0 %(ok%)", r.stdout)
        r = assert(process.run({
            "openssl", "s_client", "-connect", "127.0.0.1:" .. port, "-tls1_1", "-ign_eof",
        }, { input = "", timeout = 5000 }))
        assert.are_not.equal(0, r.code)
        assert.is_nil(r.stdout:match("hi from luaio"))
        srv:close()
    end)

    it("answers curl --cacert over https", function()
        local srv, port = serve(function(sock)
            local head = sock:readuntil("\r\n\r\n")
            if head then
                sock:write("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
            end
            sock:close()
        end)
        local r = assert(process.run({
            "curl", "-sS", "--max-time", "5", "--cacert", path("ca.pem"),
            "--resolve", "localhost:" .. port .. ":127.0.0.1", "https://localhost:" .. port .. "/",
        }, { timeout = 8000 }))
        assert.are.equal("", r.stderr)
        assert.are.equal("hello", r.stdout)
        srv:close()
    end)

    it("connects to openssl s_server and verifies it", function()
        local port = free_port()
        local child = assert(process.spawn("openssl", {
            "s_server", "-accept", "127.0.0.1:" .. port, "-cert", path("server.pem"), "-key", path("server.key"),
            "-naccept", "1", "-rev", "-quiet",
        }, { stdio = { "pipe", "ignore", "ignore" } }))
        local sock, err
        for _ = 1, 200 do
            sock, err = tls.connect(port, "127.0.0.1", { ca = path("ca.pem") })
            if sock or err.name ~= "ECONNREFUSED" then break end
            sleep(10)
        end
        assert.is_truthy(sock, tostring(err))
        sock:setTimeout(3000)
        sock:write("hello\n")
        assert.are.equal("olleh", sock:readline())
        sock:close()
        child:kill()
        child:wait()
        child.stdin:close()
    end)
end)
