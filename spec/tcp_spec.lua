-- tcp: servers, clients, socket reads and writes, limits, errors and leaks (docs/tcp.md).
-- Everything talks to 127.0.0.1 or ::1 only; every loop is bounded.
local tcp = require "tcp"
local task = require "task"
local helper = require "helper"

-- Starts a server on a free port of 127.0.0.1; returns it and its port.
local function serve(onconnect, options)
    options = options or {}
    options.host = options.host or "127.0.0.1"
    local srv = assert(tcp.createServer(0, onconnect, options))
    return srv, srv:address().port
end

local echo = helper.echo

local wait_for = helper.wait_for

local function weak()
    return setmetatable({}, { __mode = "k" })
end

-- Number of coroutines of a weak table that are still waiting (suspended) after a full
-- collection. Finished tasks' coroutines may live on in the runtime's pool for reuse; they
-- are dead, not waiting.
local function live(t)
    collectgarbage()
    collectgarbage()
    local n = 0
    for co in pairs(t) do
        if coroutine.status(co) ~= "dead" then
            n = n + 1
        end
    end
    return n
end

describe("tcp.isIP", function()
    it("returns 4, 6 or 0", function()
        assert.are.equal(4, tcp.isIP("127.0.0.1"))
        assert.are.equal(4, tcp.isIP("255.255.255.255"))
        assert.are.equal(6, tcp.isIP("::1"))
        assert.are.equal(6, tcp.isIP("fe80::1:2:3:4"))
        assert.are.equal(6, tcp.isIP("::ffff:127.0.0.1"))
        assert.are.equal(0, tcp.isIP("256.0.0.1"))
        assert.are.equal(0, tcp.isIP("localhost"))
        assert.are.equal(0, tcp.isIP(""))
        assert.are.equal(0, tcp.isIP("1.2.3"))
    end)

    it("raises on a non-string", function()
        assert.has_error(function() tcp.isIP(nil) end)
        assert.has_error(function() tcp.isIP(42) end, nil)
        local ok, err = pcall(tcp.isIP, {})
        assert.is_false(ok)
        assert.truthy(err:find("tcp.isIP: expected a string", 1, true))
    end)
end)

describe("tcp.createServer", function()
    it("listens on a free port with port 0 and echoes", function()
        local srv, port = serve(echo)
        local addr = srv:address()
        assert.are.same({ family = 4, address = "127.0.0.1", port = port }, addr)
        assert.is_true(port > 0)
        local c = assert(tcp.connect(port, "127.0.0.1"))
        assert.is_nil(c:write("ping"))
        assert.are.equal("ping", c:read(4))
        c:close()
        srv:close()
    end)

    it("defaults to 0.0.0.0 and family 4", function()
        local srv = assert(tcp.createServer(0, echo))
        local addr = srv:address()
        assert.are.equal("0.0.0.0", addr.address)
        assert.are.equal(4, addr.family)
        local c = assert(tcp.connect(addr.port))
        c:write("x")
        assert.are.equal("x", c:read(1))
        c:close()
        srv:close()
    end)

    it("runs every connection in its own task and passes the server", function()
        local seen = {}
        local srv, port = serve(function(sock, server)
            seen[#seen + 1] = { co = coroutine.running(), server = server }
            sock:write(sock:read(1))
        end)
        local a = assert(tcp.connect(port))
        local b = assert(tcp.connect(port))
        b:write("b")
        a:write("a")
        assert.are.equal("b", b:read(1))
        assert.are.equal("a", a:read(1))
        assert.are.equal(2, #seen)
        assert.are_not.equal(seen[1].co, seen[2].co)
        assert.are.equal(srv, seen[1].server)
        a:close()
        b:close()
        srv:close()
    end)

    it("closes the socket when onconnect returns", function()
        local srv, port = serve(function(sock)
            sock:write("bye")
        end)
        local c = assert(tcp.connect(port))
        local data, err = c:read(10)
        assert.are.equal("bye", data)
        assert.are.equal("EOF", err.name)
        assert.is_true(wait_for(function() return srv:connections() == 0 end))
        c:close()
        srv:close()
    end)

    it("closes the socket of a handler that fails after waiting on a channel", function()
        local ch = task.channel(0)
        local srv, port = serve(function(sock)
            ch:receive() -- parked from Lua (the task lets its scheduler reference go meanwhile)
            error("after the wait")
        end)
        local c = assert(tcp.connect(port))
        c:setTimeout(2000)
        sleep(20)
        ch:send(true)
        local d, err = c:read()
        assert.is_nil(d)
        assert.are.equal("EOF", err.name)
        c:close()
        srv:close()
    end)

    it("runs onconnect at once, without a task, with spawn = false", function()
        local core = require "luaio.core"
        local kept, waited = {}, nil
        local srv, port = serve(function(sock, server)
            kept[#kept + 1] = sock
            assert.is_userdata(server)
            waited = select(2, pcall(sleep, 1)) -- it cannot wait
        end, { spawn = false })
        local before = core.tasks()
        local c = assert(tcp.connect(port))
        c:setTimeout(2000)
        assert.is_true(wait_for(function() return #kept == 1 end))
        assert.are.equal(before, core.tasks())
        assert.truthy(tostring(waited):find("cannot wait outside a task", 1, true))
        -- The socket stays open after onconnect returned: it is the caller's to use and close.
        assert.is_nil(kept[1]:write("hi"))
        assert.are.equal("hi", c:read(2))
        kept[1]:close()
        local d, err = c:read()
        assert.is_nil(d)
        assert.are.equal("EOF", err.name)
        c:close()
        srv:close()
        assert.has_error(function() tcp.createServer(0, function() end, { spawn = 1 }) end,
            "tcp.createServer: option 'spawn' must be a boolean")
    end)

    it("closes the socket, reports the traceback and goes on when onconnect fails", function()
        local script = helper.script([[
            local tcp = require "tcp"
            local n = 0
            local srv = assert(tcp.createServer(0, function(sock)
                n = n + 1
                if n == 1 then
                    local t = nil
                    return t.boom -- a bug in the handler
                end
                sock:write("ok")
            end, { host = "127.0.0.1" }))
            local port = srv:address().port
            local a = assert(tcp.connect(port))
            local d1, e1 = a:read(2)
            local b = assert(tcp.connect(port))
            local d2 = b:read(2)
            print(tostring(d1), e1 and e1.name, d2)
            a:close() b:close() srv:close()
        ]])
        local out, err, status = helper.run(script)
        os.remove(script)
        assert.are.equal(0, status)
        assert.are.equal("nil\tEOF\tok\n", out)
        assert.truthy(err:find("luaio: ", 1, true))
        assert.truthy(err:find("attempt to index local 't'", 1, true))
        assert.truthy(err:find("stack traceback", 1, true))
    end)

    it("returns EADDRINUSE for a port in use", function()
        local srv, port = serve(echo)
        local srv2, err = tcp.createServer(port, echo, { host = "127.0.0.1" })
        assert.is_nil(srv2)
        assert.are.equal("EADDRINUSE", err.name)
        assert.are.equal("number", type(err.code))
        assert.are.equal("string", type(err.message))
        srv:close()
    end)

    it("shares a port with tcp_reuseport", function()
        local a = assert(tcp.createServer(0, echo, { host = "127.0.0.1", tcp_reuseport = true }))
        local port = a:address().port
        local b, err = tcp.createServer(port, echo, { host = "127.0.0.1", tcp_reuseport = true })
        assert.is_nil(err)
        assert.truthy(b)
        a:close()
        b:close()
    end)

    it("returns an error for an address that is not on this machine", function()
        local srv, err = tcp.createServer(0, echo, { host = "192.0.2.1" })
        assert.is_nil(srv)
        assert.are.equal("EADDRNOTAVAIL", err.name)
    end)

    it("returns an error for a host name that does not resolve", function()
        local srv, err = tcp.createServer(0, echo, { host = "no-such-host.invalid" })
        assert.is_nil(srv)
        assert.are.equal("table", type(err))
        assert.are.equal("string", type(err.name))
    end)

    it("raises on bad arguments and options, with the function name", function()
        local function raises(msg, ...)
            local ok, err = pcall(tcp.createServer, ...)
            assert.is_false(ok)
            assert.truthy(tostring(err):find(msg, 1, true), tostring(err))
        end
        raises("tcp.createServer: expected a port number", "80", echo)
        raises("tcp.createServer: port must be an integer between 0 and 65535", 65536, echo)
        raises("tcp.createServer: port must be an integer between 0 and 65535", -1, echo)
        raises("tcp.createServer: port must be an integer between 0 and 65535", 1.5, echo)
        raises("tcp.createServer: expected a function as argument 2", 0, "echo")
        raises("tcp.createServer: expected an options table", 0, echo, 5)
        raises("tcp.createServer: unknown option 'tcp_nodealy'", 0, echo, { tcp_nodealy = true })
        raises("tcp.createServer: option 'family' must be 4 or 6", 0, echo, { family = 5 })
        raises("tcp.createServer: host '::1' is not an IPv4 address", 0, echo, { host = "::1", family = 4 })
        raises("tcp.createServer: option 'host' must be a string", 0, echo, { host = 127 })
        raises("tcp.createServer: option 'tcp_backlog' must be between 1", 0, echo, { tcp_backlog = 0 })
        raises("tcp.createServer: option 'maxconnections' must be between 1", 0, echo, { maxconnections = 0 })
        raises("tcp.createServer: option 'timeout' must be between 0", 0, echo, { timeout = -1 })
        raises("tcp.createServer: option 'fd' must be an integer", 0, echo, { fd = "3" })
        raises("tcp.createServer: option 'fd' must be between -1", 0, echo, { fd = -5 })
        raises("tcp.createServer: option 'read_buffer_size' must be an integer", 0, echo, { read_buffer_size = "16" })
        raises("tcp.createServer: option 'tcp_nodelay' must be a boolean", 0, echo, { tcp_nodelay = 1 })
        raises("tcp.createServer: option 'tcp_keepidle' must be between 0", 0, echo, { tcp_keepidle = -5 })
        raises("tcp.createServer: option 'tcp_reuseport' must be a boolean", 0, echo, { tcp_reuseport = "yes" })
    end)
end)

describe("server", function()
    it("adopts a listening socket made elsewhere (the fd option, as workers of a master do)", function()
        local process = require "process"
        local fd, port = assert(process.listenSocket("127.0.0.1", 0, 16))
        local srv = assert(tcp.createServer(0, echo, { fd = fd }))
        assert.are.equal(port, srv:address().port)
        local c = assert(tcp.connect(port))
        assert.is_nil(c:write("ping"))
        assert.are.equal("ping", c:read(4))
        c:close()
        srv:close()
    end)

    it("counts connections and stops accepting on close(), letting connections finish", function()
        local release = false
        local srv, port = serve(function(sock)
            sock:read(1)
            while not release do
                sleep(5)
            end
            sock:write("done")
        end)
        local a = assert(tcp.connect(port))
        local b = assert(tcp.connect(port))
        a:write("1")
        b:write("1")
        assert.is_true(wait_for(function() return srv:connections() == 2 end))
        srv:close()
        srv:close() -- idempotent
        local c, err = tcp.connect(port)
        assert.is_nil(c)
        assert.are.equal("ECONNREFUSED", err.name)
        assert.are.equal(2, srv:connections())
        release = true
        assert.are.equal("done", a:read(4))
        assert.are.equal("done", b:read(4))
        assert.is_true(wait_for(function() return srv:connections() == 0 end))
        assert.has_error(function() srv:address() end, nil)
        a:close()
        b:close()
    end)

    it("refuses connections beyond maxconnections at once, counts them, keeps the others", function()
        local srv, port = serve(echo, { maxconnections = 2 })
        local a = assert(tcp.connect(port))
        local b = assert(tcp.connect(port))
        a:write("a")
        b:write("b")
        assert.are.equal("a", a:read(1))
        assert.are.equal("b", b:read(1))
        local c = assert(tcp.connect(port)) -- the kernel accepts; the server closes it at once
        local data, err = c:read(1)
        assert.is_nil(data)
        assert.truthy(err.name == "EOF" or err.name == "ECONNRESET")
        assert.are.equal(1, srv:refused())
        assert.are.equal(2, srv:connections())
        a:write("still")
        assert.are.equal("still", a:read(5))
        a:close()
        assert.is_true(wait_for(function() return srv:connections() == 1 end))
        local d = assert(tcp.connect(port))
        d:write("d")
        assert.are.equal("d", d:read(1))
        b:close()
        c:close()
        d:close()
        srv:close()
    end)

    it("applies the timeout option to every connection", function()
        local got
        local srv, port = serve(function(sock)
            got = { sock:read() }
        end, { timeout = 50 })
        local c = assert(tcp.connect(port))
        assert.is_true(wait_for(function() return got ~= nil end))
        assert.is_nil(got[1])
        assert.are.equal("ETIMEDOUT", got[2].name)
        c:close()
        srv:close()
    end)

    it("raises on a wrong self", function()
        local srv = serve(echo)
        assert.has_error(function() srv.address({}) end)
        assert.has_error(function() srv.connections(42) end)
        assert.has_error(function() srv.close("x") end)
        srv:close()
    end)
end)

describe("tcp.connect", function()
    it("returns ECONNREFUSED as an error table", function()
        local srv, port = serve(echo)
        srv:close()
        sleep(10)
        local sock, err = tcp.connect(port, "127.0.0.1")
        assert.is_nil(sock)
        assert.are.equal("ECONNREFUSED", err.name)
        assert.are.equal("number", type(err.code))
        assert.truthy(err.message:find("refused"))
    end)

    it("returns ETIMEDOUT when the connect timeout passes", function()
        -- A listener that never accepts, with a backlog of one: once it holds a connection,
        -- the kernel drops the next handshakes and connect() waits.
        local portfile = os.tmpname()
        local pid = tonumber(helper.sh(([[/usr/bin/python3 -c '
import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(0)
print(s.getsockname()[1]); sys.stdout.flush(); time.sleep(5)' >%s 2>/dev/null & echo $!]]):format(portfile)):match("%d+"))
        local port
        wait_for(function()
            local f = io.open(portfile)
            port = f and tonumber(f:read("*a"))
            if f then f:close() end
            return port ~= nil
        end, 10000)
        os.remove(portfile)
        if not port then
            helper.sh("kill " .. pid)
            error("the listener (/usr/bin/python3, installed by scripts/setup.sh) did not start within 10 s", 0)
        end
        local held = {}
        local sock, err
        for _ = 1, 8 do
            sock, err = tcp.connect(port, "127.0.0.1", { timeout = 100 })
            if not sock then break end
            held[#held + 1] = sock
        end
        assert.is_nil(sock)
        assert.are.equal("ETIMEDOUT", err.name)
        for _, s in ipairs(held) do s:close() end
        helper.sh("kill " .. pid)
    end)

    it("accepts options as the second argument and applies socket options", function()
        local srv, port = serve(echo)
        local c = assert(tcp.connect(port, { tcp_nodelay = false, tcp_keepalive = true, tcp_keepidle = 30 }))
        c:write("o")
        assert.are.equal("o", c:read(1))
        c:close()
        srv:close()
    end)

    it("raises on bad arguments", function()
        local function raises(msg, ...)
            local ok, err = pcall(tcp.connect, ...)
            assert.is_false(ok)
            assert.truthy(tostring(err):find(msg, 1, true), tostring(err))
        end
        raises("tcp.connect: expected a port number", nil)
        raises("tcp.connect: port must be an integer between 0 and 65535", 70000)
        raises("tcp.connect: expected a host name or address as argument 2", 80, 42)
        raises("tcp.connect: expected an options table", 80, "127.0.0.1", true)
        raises("tcp.connect: unknown option 'bogus'", 80, "127.0.0.1", { bogus = 1 })
        raises("tcp.connect: option 'timeout' must be between 0", 80, "127.0.0.1", { timeout = -1 })
        raises("tcp.connect: option 'family' must be 4 or 6", 80, "127.0.0.1", { family = 3 })
    end)

    it("resolves a host name through the dns module (localhost, from /etc/hosts)", function()
        local srv, port = serve(echo, { host = "localhost" })
        assert.are.equal("127.0.0.1", srv:address().address)
        local c = assert(tcp.connect(port, "localhost"))
        c:write("lh")
        assert.are.equal("lh", c:read(2))
        c:close()
        srv:close()
    end)

    it("returns an error table for a host name that does not resolve", function()
        local sock, err = tcp.connect(80, "no-such-host.invalid")
        assert.is_nil(sock)
        assert.are.equal("table", type(err))
        assert.are.equal("string", type(err.name))
    end)
end)

describe("IPv6", function()
    it("serves and connects on ::1 as IPv4 does", function()
        local srv = assert(tcp.createServer(0, echo, { family = 6, host = "::1" }))
        local addr = srv:address()
        assert.are.equal(6, addr.family)
        assert.are.equal("::1", addr.address)
        local c = assert(tcp.connect(addr.port, "::1"))
        c:write("six")
        assert.are.equal("six", c:read(3))
        assert.are.equal(6, c:remoteAddress().family)
        assert.are.equal("::1", c:localAddress().address)
        c:close()
        local c2 = assert(tcp.connect(addr.port, { family = 6 })) -- default host ::1
        c2:close()
        srv:close()
    end)

    it("infers family 6 from the host and defaults to ::", function()
        local srv = assert(tcp.createServer(0, echo, { host = "::1" }))
        assert.are.equal(6, srv:address().family)
        srv:close()
        srv = assert(tcp.createServer(0, echo, { family = 6 }))
        assert.are.equal("::", srv:address().address)
        srv:close()
    end)
end)

describe("socket reads", function()
    local srv, port, feed
    -- The server sends what the spec puts in `feed` (a list of chunks, with pauses), then closes.
    before_each(function()
        feed = nil
        srv, port = serve(function(sock)
            sock:read(1) -- the client says when to start
            for _, chunk in ipairs(feed) do
                if type(chunk) == "number" then
                    sleep(chunk)
                else
                    sock:write(chunk)
                end
            end
        end)
    end)
    after_each(function()
        srv:close()
    end)

    local function client(chunks)
        feed = chunks
        local c = assert(tcp.connect(port))
        c:write("go")
        c:read(0)
        return c
    end

    it("read(n) returns exactly n bytes, across chunks", function()
        local c = client({ "ab", 10, "cde", 10, "f" })
        assert.are.equal("abcd", c:read(4))
        assert.are.equal("ef", c:read(2))
        c:close()
    end)

    it("read() returns what is there (at least one byte)", function()
        local c = client({ "hello", 20, "world" })
        assert.are.equal("hello", c:read())
        assert.are.equal("world", c:read())
        local data, err = c:read()
        assert.is_nil(data)
        assert.are.equal("EOF", err.name)
        c:close()
    end)

    it("read(0) returns an empty string at once", function()
        local c = client({})
        assert.are.equal("", c:read(0))
        c:close()
    end)

    it("at EOF returns the partial data with the EOF error, then nil and EOF", function()
        local c = client({ "abc" })
        local data, err = c:read(10)
        assert.are.equal("abc", data)
        assert.are.equal("EOF", err.name)
        data, err = c:read(1)
        assert.is_nil(data)
        assert.are.equal("EOF", err.name)
        data, err = c:readline()
        assert.is_nil(data)
        assert.are.equal("EOF", err.name)
        c:close()
    end)

    it("readline() returns lines without \\n or \\r\\n, across chunks", function()
        local c = client({ "one\r\ntw", 10, "o\n\nthree" })
        assert.are.equal("one", c:readline())
        assert.are.equal("two", c:readline())
        assert.are.equal("", c:readline())
        local data, err = c:readline()
        assert.are.equal("three", data)
        assert.are.equal("EOF", err.name)
        c:close()
    end)

    it("readline(max) accepts a line of max bytes and refuses one byte more", function()
        local c = client({ ("a"):rep(10) .. "\n" .. ("b"):rep(11) .. "\n" })
        assert.are.equal(("a"):rep(10), c:readline(10))
        local data, err = c:readline(10)
        assert.is_nil(data)
        assert.are.equal("ELINETOOLONG", err.name)
        c:close()
    end)

    it("readline() stops a peer that never sends a newline at the default limit (64 KiB)", function()
        local c = client({ ("z"):rep(64 * 1024), 10, ("z"):rep(64 * 1024) })
        local data, err = c:readline()
        assert.is_nil(data)
        assert.are.equal("ELINETOOLONG", err.name)
        c:close()
    end)

    it("readuntil(delim) returns the bytes before the delimiter, across chunks", function()
        local c = client({ "head", 10, "er\r\n\r", 10, "\nbody--", 10, "bound--end" })
        assert.are.equal("header", c:readuntil("\r\n\r\n"))
        assert.are.equal("body", c:readuntil("--bound--"))
        local data, err = c:readuntil("--")
        assert.are.equal("end", data)
        assert.are.equal("EOF", err.name)
        c:close()
    end)

    it("readuntil(delim, max) accepts max bytes and refuses one byte more", function()
        local c = client({ "12345|123456|" })
        assert.are.equal("12345", c:readuntil("|", 5))
        local data, err = c:readuntil("|", 5)
        assert.is_nil(data)
        assert.are.equal("ELINETOOLONG", err.name)
        c:close()
    end)

    it("raises on bad read arguments", function()
        local c = client({})
        assert.has_error(function() c:read(-1) end)
        assert.has_error(function() c:read(1.5) end)
        assert.has_error(function() c:read("x") end)
        assert.has_error(function() c:readuntil("") end)
        assert.has_error(function() c:readuntil(nil) end)
        assert.has_error(function() c:readline(-2) end)
        assert.has_error(function() c.read({}) end)
        local ok, err = pcall(c.read, c, 2 ^ 31)
        assert.is_false(ok)
        assert.truthy(tostring(err):find("read: byte count larger than 1073741824", 1, true))
        c:close()
    end)
end)

describe("socket writes", function()
    it("sends an array of strings as one vectored write", function()
        local got
        local srv, port = serve(function(sock)
            got = sock:read(11)
        end)
        local c = assert(tcp.connect(port))
        assert.is_nil(c:write({ "hello", " ", "world" }))
        assert.is_nil(c:write({}))
        assert.is_nil(c:write(""))
        assert.is_true(wait_for(function() return got ~= nil end))
        assert.are.equal("hello world", got)
        c:close()
        srv:close()
    end)

    it("raises on a non-string or an array holding a non-string", function()
        local srv, port = serve(echo)
        local c = assert(tcp.connect(port))
        local ok, err = pcall(c.write, c, 42)
        assert.is_false(ok)
        assert.truthy(err:find("write: expected a string or an array of strings", 1, true))
        ok, err = pcall(c.write, c, { "a", 2 })
        assert.is_false(ok)
        assert.truthy(err:find("element 2", 1, true))
        c:close()
        srv:close()
    end)

    it("applies backpressure: a writer to a reader that stops waits, with bounded memory", function()
        local written, reading = 0, false
        local chunk = ("w"):rep(64 * 1024)
        local srv, port = serve(function(sock)
            for _ = 1, 1000 do -- at most 64 MiB
                if sock:write(chunk) then return end
                written = written + #chunk
                if reading then break end
            end
            sock:write("END")
        end)
        local c = assert(tcp.connect(port))
        local rss0 = helper.rss and helper.rss() or 0
        sleep(300) -- the client reads nothing
        local stalled = written
        assert.is_true(stalled < 16 * 1024 * 1024, "writer ran ahead: " .. stalled)
        sleep(100)
        assert.are.equal(stalled, written) -- parked in write, not spinning
        reading = true
        local total = 0
        while true do
            local data = c:read()
            if not data then break end
            total = total + #data
            if data:sub(-3) == "END" then break end
        end
        assert.are.equal(written + 3, total)
        c:close()
        srv:close()
        assert.is_true(rss0 >= 0)
    end)

    it("trywrite never waits: it queues in order while under its limit, then reports EAGAIN", function()
        local reading = false
        local got = {}
        local srv, port = serve(function(sock)
            while not reading do sleep(5) end
            while true do
                local d = sock:read()
                if not d then break end
                got[#got + 1] = d
            end
        end)
        local c = assert(tcp.connect(port))
        local chunk = ("c"):rep(64 * 1024 - 8)
        local accepted, eagain = 0, nil
        for i = 1, 2000 do -- bounded: at most 128 MiB, far beyond the kernel's buffers and the limit
            local err = c:trywrite({ ("%08d"):format(i), chunk }, 1024 * 1024)
            if err then
                eagain = err
                break
            end
            accepted = i
        end
        assert.are.equal("EAGAIN", eagain.name)
        assert.truthy(eagain.message:find("bytes are queued", 1, true))
        assert.is_true(accepted >= 1 and accepted < 1000, accepted)
        -- A waiting writer, then a trywrite: its bytes go behind the writer's, not into them.
        local tail = ("t"):rep(100000)
        local werr = "pending"
        local h = task.spawn(function() werr = c:write(tail) end)
        sleep(20)
        assert.are.equal("pending", werr)
        assert.is_nil(c:trywrite("after", math.huge))
        reading = true
        h:join()
        assert.is_nil(werr)
        c:close()
        assert.is_true(wait_for(function() return srv:connections() == 0 end))
        local expect = {}
        for i = 1, accepted do expect[i] = ("%08d"):format(i) .. chunk end
        expect[#expect + 1] = tail .. "after"
        assert.is_true(table.concat(got) == table.concat(expect))
        local ok, msg = pcall(c.trywrite, c, "x")
        assert.is_false(ok)
        assert.truthy(msg:find("trywrite", 1, true))
        srv:close()
    end)

    it("trywrite checks its limit and reports a closed peer as write does", function()
        local srv, port = serve(echo)
        local c = assert(tcp.connect(port))
        local ok, msg = pcall(c.trywrite, c, "x", -1)
        assert.is_false(ok)
        assert.truthy(msg:find("trywrite: limit must be", 1, true))
        assert.is_nil(c:trywrite("ping\n", 0)) -- nothing queued: an idle peer takes it
        assert.are.equal("ping\n", c:read(5))
        c:close()
        srv:close()
    end)

    it("stops reading from a fast writer when nobody reads (read_buffer_size)", function()
        local stop = false
        local srv, port = serve(function(sock)
            while not stop do sleep(10) end
            local n = 0
            while true do
                local d = sock:read()
                if not d then break end
                n = n + #d
            end
            sock:close()
        end, { read_buffer_size = 16 })
        local c = assert(tcp.connect(port))
        local sent = 0
        local chunk = ("r"):rep(64 * 1024)
        c:setTimeout(300)
        for _ = 1, 1000 do
            local err = c:write(chunk)
            if err then
                assert.are.equal("ETIMEDOUT", err.name)
                break
            end
            sent = sent + #chunk
        end
        assert.is_true(sent < 32 * 1024 * 1024, "the server buffered without bound: " .. sent)
        stop = true
        c:close()
        assert.is_true(wait_for(function() return srv:connections() == 0 end))
        srv:close()
    end)
end)

describe("socket", function()
    it("reports local and remote addresses", function()
        local remote
        local srv, port = serve(function(sock)
            remote = sock:remoteAddress()
            sock:read(1)
        end)
        local c = assert(tcp.connect(port))
        local l, r = c:localAddress(), c:remoteAddress()
        assert.are.same({ family = 4, address = "127.0.0.1", port = port }, r)
        assert.are.equal("127.0.0.1", l.address)
        assert.is_true(wait_for(function() return remote ~= nil end))
        assert.are.equal(l.port, remote.port)
        c:close()
        srv:close()
    end)

    it("setNodelay and setKeepalive return nothing, and raise on bad arguments", function()
        local srv, port = serve(echo)
        local c = assert(tcp.connect(port))
        assert.is_nil(c:setNodelay(true))
        assert.is_nil(c:setNodelay(false))
        assert.is_nil(c:setKeepalive(true, 10))
        assert.is_nil(c:setKeepalive(false))
        assert.is_nil(c:setKeepalive())
        assert.has_error(function() c:setNodelay("yes") end)
        assert.has_error(function() c:setKeepalive(true, -1) end)
        assert.has_error(function() c.setNodelay({}) end)
        c:close()
        srv:close()
    end)

    it("setTimeout(ms): an idle read returns ETIMEDOUT and the socket stays usable", function()
        local srv, port = serve(echo)
        local c = assert(tcp.connect(port))
        c:setTimeout(30)
        local data, err = c:read()
        assert.is_nil(data)
        assert.are.equal("ETIMEDOUT", err.name)
        c:write("late")
        assert.are.equal("late", c:read(4))
        c:setTimeout(0)
        c:close()
        srv:close()
    end)

    it("settimeouts(connect, send, read) sets separate timeouts", function()
        local srv, port = serve(echo)
        local c = assert(tcp.connect(port))
        c:settimeouts(1000, 1000, 20)
        local t0 = os.clock()
        local data, err = c:read(1)
        assert.is_nil(data)
        assert.are.equal("ETIMEDOUT", err.name)
        assert.is_true(os.clock() - t0 < 1)
        assert.has_error(function() c:settimeouts(-1) end)
        assert.has_error(function() c:setTimeout("x") end)
        c:close()
        srv:close()
    end)

    it("shutdown() (also sock['end']) half-closes: the peer reads EOF and can still answer", function()
        local srv, port = serve(function(sock)
            local all = {}
            while true do
                local d = sock:read()
                if not d then break end
                all[#all + 1] = d
            end
            sock:write("got " .. table.concat(all))
        end)
        local c = assert(tcp.connect(port))
        c:write("abc")
        assert.is_nil(c:shutdown())
        assert.are.equal("got abc", c:read(7))
        c:close()
        local c2 = assert(tcp.connect(port))
        c2:write("x")
        assert.is_nil(c2["end"](c2))
        assert.are.equal("got x", c2:read(5))
        c2:close()
        srv:close()
    end)

    it("close() is idempotent; using a closed socket raises", function()
        local srv, port = serve(echo)
        local c = assert(tcp.connect(port))
        assert.is_false(c:isClosed())
        c:close()
        c:close()
        assert.is_true(c:isClosed())
        local ok, err = pcall(c.read, c)
        assert.is_false(ok)
        assert.truthy(err:find("read: attempt to use a closed stream", 1, true))
        assert.has_error(function() c:write("x") end)
        assert.has_error(function() c:localAddress() end)
        assert.has_error(function() c.close("x") end)
        srv:close()
    end)

    it("a second reader gets EBUSY; close() wakes the first with ECANCELED", function()
        local srv, port = serve(echo)
        local c = assert(tcp.connect(port))
        local first
        local h = task.spawn(function()
            first = { c:read() }
        end)
        sleep(10)
        local data, err = c:read()
        assert.is_nil(data)
        assert.are.equal("EBUSY", err.name)
        c:close()
        h:join()
        assert.is_nil(first[1])
        assert.are.equal("ECANCELED", first[2].name)
        srv:close()
    end)

    it("a peer that resets gives ECONNRESET", function()
        local srv, port = serve(function(sock)
            sleep(30) -- unread bytes at close: the kernel answers with a reset
        end)
        local c = assert(tcp.connect(port))
        c:write("unread bytes")
        local data, err = c:read()
        assert.is_nil(data)
        assert.are.equal("ECONNRESET", err.name)
        c:close()
        srv:close()
    end)

    it("a peer that vanishes mid-write gives EPIPE or ECONNRESET, not a crash", function()
        local werr, wrote = nil, 0
        local srv, port = serve(function(sock)
            local chunk = ("v"):rep(256 * 1024)
            for _ = 1, 400 do
                werr = sock:write(chunk)
                if werr then return end
                wrote = wrote + 1
            end
        end)
        local c = assert(tcp.connect(port))
        c:read(1)
        c:close()
        assert.is_true(wait_for(function() return werr ~= nil end))
        assert.truthy(werr.name == "EPIPE" or werr.name == "ECONNRESET", werr.name)
        assert.is_true(wait_for(function() return srv:connections() == 0 end))
        srv:close()
    end)

    it("a forgotten connected socket is closed by the garbage collector", function()
        local srv, port = serve(echo)
        do
            local c = assert(tcp.connect(port))
            c:write("x")
            c:read(1)
        end
        assert.are.equal(1, srv:connections())
        collectgarbage()
        collectgarbage()
        assert.is_true(wait_for(function() return srv:connections() == 0 end))
        srv:close()
    end)
end)

describe("leaks", function()
    it("leave no descriptor and no coroutine behind", function()
        collectgarbage()
        local fds = helper.fd_count()
        local handlers = weak()
        local srv, port = serve(function(sock)
            handlers[coroutine.running()] = true
            echo(sock)
        end)
        for _ = 1, 20 do
            local c = assert(tcp.connect(port))
            c:write("x")
            c:read(1)
            c:close()
        end
        -- reset, refused, EBUSY, timeout, mid-write close
        local c = assert(tcp.connect(port))
        c:setTimeout(10)
        c:read()
        local h = task.spawn(function() c:read() end)
        sleep(5)
        c:read()
        c:close()
        h:join()
        local refused = tcp.connect(port + 1 == 65536 and 1 or port + 1)
        if refused then refused:close() end
        srv:close()
        assert.is_true(wait_for(function() return srv:connections() == 0 end))
        assert.are.equal(fds, helper.fds_back_to(fds))
        assert.are.equal(0, live(handlers))
    end)
end)

describe("descriptor exhaustion (EMFILE)", function()
    it("keeps serving once descriptors are free again, without spinning meanwhile, and says so once", function()
        local portfile, errfile = os.tmpname(), os.tmpname()
        local script = helper.script(([[
            local tcp = require "tcp"
            local srv = assert(tcp.createServer(0, function(sock)
                while true do
                    local d = sock:read()
                    if not d or sock:write(d) then return end
                end
            end, { host = "127.0.0.1" }))
            local f = io.open(%q, "w")
            f:write(srv:address().port)
            f:close()
            require("timer").setTimeout(8000, function() srv:close() end)
        ]]):format(portfile))
        local pid = helper.sh("ulimit -n 40; " .. helper.luaio .. " " .. script .. " >/dev/null 2>" .. errfile .. " & echo $!")
        pid = tonumber(pid:match("%d+"))
        local port
        assert.is_true(wait_for(function()
            local f = io.open(portfile)
            port = f and tonumber(f:read("*a"))
            if f then f:close() end
            return port ~= nil
        end, 3000))
        local function cpu_ticks()
            local f = io.open("/proc/" .. pid .. "/stat")
            local fields = {}
            for x in f:read("*a"):gmatch("%S+") do fields[#fields + 1] = x end
            f:close()
            return tonumber(fields[14]) + tonumber(fields[15])
        end
        -- Hold more connections than the server has descriptors.
        local held = {}
        for _ = 1, 60 do
            local c = tcp.connect(port)
            if c then held[#held + 1] = c end
        end
        local t0 = cpu_ticks()
        sleep(500)
        local spent = cpu_ticks() - t0
        assert.is_true(spent < 15, "the server spun: " .. spent .. " ticks in 0.5 s")
        -- The server really ran out: it dropped the connections it had no descriptor for.
        local dropped = 0
        for _, c in ipairs(held) do
            c:setTimeout(20)
            local _, err = c:read()
            if err and err.name ~= "ETIMEDOUT" then dropped = dropped + 1 end
        end
        assert.is_true(dropped > 0 and dropped < #held, dropped .. " of " .. #held)
        for _, c in ipairs(held) do c:close() end
        sleep(100)
        local c, ok
        for _ = 1, 20 do
            c = tcp.connect(port)
            if c then
                c:setTimeout(500)
                c:write("again")
                ok = c:read(5)
                c:close()
                if ok then break end
            end
            sleep(50)
        end
        helper.sh("kill " .. pid)
        local log = helper.read(errfile)
        os.remove(portfile)
        os.remove(errfile)
        os.remove(script)
        assert.are.equal("again", ok)
        -- The failure is logged (docs/tcp.md), at most once a second: once or twice here.
        local _, lines = log:gsub("tcp server: accept failed: too many open files", "")
        assert.is_true(lines >= 1 and lines <= 2, "log: " .. log)
    end)
end)
