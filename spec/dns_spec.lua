-- dns: resolve4/resolve6/lookup/reverse against a dnsmasq started by this spec on
-- 127.0.0.1 (Debian's dnsmasq-base), a UDP socket that never answers, and a closed port.
-- Nothing here queries the internet or the resolvers of /etc/resolv.conf; only the
-- `localhost` cases read /etc/hosts.
local dns = require "dns"
local task = require "task"
local system = require "system"
local helper = require "helper"
local ffi = require "ffi"

-- ------------------------------------------------------------------ test servers

for _, decl in ipairs({
    "int socket(int domain, int type, int protocol);",
    "int bind(int fd, const void* addr, uint32_t len);",
    "int getsockname(int fd, void* addr, uint32_t* len);",
    "int close(int fd);",
    "long recvfrom(int fd, void* buf, size_t len, int flags, void* from, uint32_t* fromlen);",
    "long sendto(int fd, const void* buf, size_t len, int flags, const void* to, uint32_t tolen);",
}) do
    pcall(ffi.cdef, decl)
end

local AF_INET, SOCK_DGRAM, SOCK_CLOEXEC = 2, 2, 0x80000

-- A UDP socket bound to 127.0.0.1 on a free port, outside the loop: it never answers.
-- Returns its fd and port.
local function udp_socket()
    local fd = ffi.C.socket(AF_INET, SOCK_DGRAM + SOCK_CLOEXEC, 0)
    assert(fd >= 0, "socket() failed")
    local sa = ffi.new("uint8_t[16]")
    sa[0] = AF_INET -- sa_family, little-endian; port 0: any free port
    sa[4], sa[5], sa[6], sa[7] = 127, 0, 0, 1
    assert(ffi.C.bind(fd, sa, 16) == 0, "bind() failed")
    local len = ffi.new("uint32_t[1]", 16)
    assert(ffi.C.getsockname(fd, sa, len) == 0, "getsockname() failed")
    return fd, sa[2] * 256 + sa[3]
end

-- A port nothing listens on (ICMP port unreachable: ECONNREFUSED).
local function closed_port()
    local fd, port = udp_socket()
    ffi.C.close(fd)
    return port
end

-- A DNS server in this process, on a UDP socket polled by a task: respond(query) returns the
-- reply (a string) or nil to stay silent. For answers dnsmasq cannot be made to give.
local function fake_server(respond)
    local fd, port = udp_socket()
    local srv = { port = port, running = true }
    srv.task = task.spawn(function()
        local buf, from, fromlen = ffi.new("uint8_t[512]"), ffi.new("uint8_t[128]"), ffi.new("uint32_t[1]")
        while srv.running do
            fromlen[0] = 128
            local n = tonumber(ffi.C.recvfrom(fd, buf, 512, 0x40 --[[MSG_DONTWAIT]], from, fromlen))
            if n > 12 then
                local reply = respond(ffi.string(buf, n))
                if reply then ffi.C.sendto(fd, reply, #reply, 0, from, fromlen[0]) end
            else
                sleep(2)
            end
        end
        ffi.C.close(fd)
    end)
    function srv.stop()
        srv.running = false
        srv.task:join()
    end
    return srv
end

-- A reply to `query` with the response code `rcode` and `ancount` answers (none follow).
local function reply(query, rcode, ancount)
    return query:sub(1, 2) .. string.char(0x81, 0x80 + rcode) .. query:sub(5, 6) .. string.char(0, ancount or 0, 0, 0, 0, 0)
        .. query:sub(13)
end

local dnsmasq = {}

-- Starts dnsmasq on a free UDP port; returns false when that port is taken for TCP (dnsmasq
-- listens on both), so the caller tries another one.
local function launch()
    local bin = io.open("/usr/sbin/dnsmasq") and "/usr/sbin/dnsmasq" or "dnsmasq"
    local user = helper.sh("id -un"):gsub("%s+$", "")
    dnsmasq.port = closed_port()
    dnsmasq.log = os.tmpname()
    os.remove(dnsmasq.log)
    local args = {
        bin,
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--bind-interfaces",
        "--listen-address=127.0.0.1",
        "--port=" .. dnsmasq.port,
        "--pid-file=",
        "--user=" .. user,
        -- Every name it does not know is NXDOMAIN, never forwarded.
        "--local=/#/",
        "--host-record=host.test,192.0.2.1,2001:db8::1,300",
        "--host-record=multi.test,192.0.2.10,300",
        "--host-record=multi.test,192.0.2.11,300",
        "--host-record=v4only.test,192.0.2.7,300",
        "--host-record=v6only.test,2001:db8::6,300",
        "--host-record=ttl1.test,192.0.2.5,1",
        "--host-record=Mixed.Case.test,192.0.2.8,300",
        "--ptr-record=20.2.0.192.in-addr.arpa,ptr.test",
        "--log-queries",
        "--log-facility=" .. dnsmasq.log,
    }
    for i = 1, 20 do
        args[#args + 1] = ("--host-record=n%d.test,192.0.2.%d,300"):format(i, 100 + i)
    end
    dnsmasq.stderr = os.tmpname()
    local out, err = helper.sh(table.concat(args, " ") .. " >/dev/null 2>" .. dnsmasq.stderr .. " & echo $!")
    dnsmasq.pid = tonumber(out:match("%d+"))
    assert(dnsmasq.pid, "could not start dnsmasq (apt-get install dnsmasq-base): " .. err)
    dnsmasq.server = "127.0.0.1:" .. dnsmasq.port
    dns.setServers({ dnsmasq.server })
    -- Wait until it answers: up to 15 s, since a loaded machine (CI, sanitizers) may start it slowly.
    for _ = 1, 500 do
        local a = dns.resolve4("host.test", { timeout = 200, cache = false })
        if a then return true end
        if (helper.read(dnsmasq.stderr) or ""):find("already in use", 1, true) then
            dnsmasq.stop()
            return false
        end
        sleep(30)
    end
    local log = (helper.read(dnsmasq.log) or "(no log)") .. "\n" .. (helper.read(dnsmasq.stderr) or "")
    error("dnsmasq did not answer on " .. dnsmasq.server .. "; its log:\n" .. log)
end

function dnsmasq.start()
    for _ = 1, 5 do
        if launch() then return end
    end
    error("dnsmasq: no free port found in 5 tries")
end

function dnsmasq.stop()
    if dnsmasq.pid then helper.sh("kill " .. dnsmasq.pid) end
    dnsmasq.pid = nil
    if dnsmasq.log then os.remove(dnsmasq.log) end
    if dnsmasq.stderr then os.remove(dnsmasq.stderr) end
end

-- How many queries of `kind` (A, AAAA, PTR) for `name` dnsmasq has received.
function dnsmasq.count(kind, name)
    sleep(30) -- dnsmasq writes its log after answering
    local n = 0
    local f = io.open(dnsmasq.log)
    if not f then return 0 end
    local needle = "query[" .. kind .. "] " .. name .. " from"
    for line in f:lines() do
        if line:find(needle, 1, true) then n = n + 1 end
    end
    f:close()
    return n
end

-- ------------------------------------------------------------------ helpers

local function raises(pattern, fn, ...)
    local ok, err = pcall(fn, ...)
    assert.is_false(ok, "expected an error matching " .. pattern)
    assert.matches(pattern, tostring(err))
end

local function sorted(t)
    local c = {}
    for i, v in ipairs(t) do c[i] = v end
    table.sort(c)
    return c
end

local function ms_since(t0) return (system.hrtime() - t0) / 1e6 end

-- Runs `src` in a child luaio; returns its stdout, stderr, exit status.
local function run_child(src)
    local path = helper.script(src)
    local out, err, status = helper.run(path)
    os.remove(path)
    return out, err, status
end

local function use_dnsmasq()
    dns.setServers({ dnsmasq.server })
end

-- ------------------------------------------------------------------ specs

describe("dns", function()
    local silent_fd, silent_port

    setup(function()
        silent_fd, silent_port = udp_socket()
        dnsmasq.start()
    end)

    teardown(function()
        dnsmasq.stop()
        if silent_fd then ffi.C.close(silent_fd) end
        dns.setServers()
        dns.setTimeout(5000)
        dns.setCache({ size = 1000, max_ttl = 3600 })
    end)

    before_each(function()
        use_dnsmasq() -- also flushes the cache
    end)

    describe("resolve4", function()
        it("returns the A records of a name", function()
            local addrs, err = dns.resolve4("host.test")
            assert.is_nil(err)
            assert.are.same({ "192.0.2.1" }, addrs)
        end)

        it("returns every A record", function()
            assert.are.same({ "192.0.2.10", "192.0.2.11" }, sorted(dns.resolve4("multi.test")))
        end)

        it("returns addresses with their TTL when asked", function()
            local addrs = dns.resolve4("host.test", { ttl = true })
            assert.are.equal("192.0.2.1", addrs[1].address)
            assert.are.equal(300, addrs[1].ttl)
        end)

        it("ignores the case of names and a trailing dot", function()
            assert.are.same({ "192.0.2.8" }, dns.resolve4("mixed.case.TEST."))
        end)

        it("returns ENOTFOUND for a missing name", function()
            local addrs, err = dns.resolve4("missing.test")
            assert.is_nil(addrs)
            assert.are.equal("ENOTFOUND", err.name)
            assert.are.equal(4, err.code) -- ARES_ENOTFOUND
            assert.are.equal("missing.test", err.hostname)
            assert.is_string(err.message)
        end)

        it("returns ENODATA for a name without A records", function()
            local addrs, err = dns.resolve4("v6only.test")
            assert.is_nil(addrs)
            assert.are.equal("ENODATA", err.name)
        end)

        it("returns EBADNAME for names that cannot be asked", function()
            for _, name in ipairs({ "", "a\0b.test", string.rep("a", 64) .. ".test", string.rep("a.", 600) }) do
                local addrs, err = dns.resolve4(name)
                assert.is_nil(addrs)
                assert.are.equal("EBADNAME", err.name)
            end
        end)

        it("raises on bad arguments, with its name", function()
            raises("resolve4: expected a hostname", dns.resolve4)
            raises("resolve4: expected a hostname", dns.resolve4, 42)
            raises("resolve4: expected a hostname", dns.resolve4, {})
            raises("resolve4: expected an options table", dns.resolve4, "host.test", "fast")
            raises("resolve4: timeout must be", dns.resolve4, "host.test", { timeout = 0 })
            raises("resolve4: timeout must be", dns.resolve4, "host.test", { timeout = -5 })
            raises("resolve4: timeout must be", dns.resolve4, "host.test", { timeout = 3600001 })
            raises("resolve4: option 'timeout' must be an integer", dns.resolve4, "host.test", { timeout = 1.5 })
            raises("resolve4: option 'timeout' must be an integer", dns.resolve4, "host.test", { timeout = "1" })
            raises("resolve4: option 'ttl' must be a boolean", dns.resolve4, "host.test", { ttl = "yes" })
            raises("resolve4: option 'cache' must be a boolean", dns.resolve4, "host.test", { cache = 1 })
        end)

        it("raises on a misspelled option, in every function that takes options", function()
            raises("resolve4: unknown option 'timout'", dns.resolve4, "host.test", { timout = 100 })
            raises("resolve6: unknown option 'family'", dns.resolve6, "host.test", { family = 6 })
            raises("resolve4: option names must be strings, got number", dns.resolve4, "host.test", { 100 })
            raises("lookup: unknown option 'famliy'", dns.lookup, "host.test", { famliy = 4 })
            raises("reverse: unknown option 'ttl'", dns.reverse, "192.0.2.1", { ttl = true })
            raises("setCache: unknown option 'maxttl'", dns.setCache, { maxttl = 5 })
            -- Each function's own options are accepted.
            assert.truthy(dns.resolve4("host.test", { timeout = 1000, ttl = true, cache = false }))
            assert.truthy(dns.lookup("host.test", { family = 4, timeout = 1000, ttl = true, cache = false }))
        end)

        it("cannot wait outside a task", function()
            raises("resolve4: cannot wait outside a task", table.sort, { 1, 2 }, function()
                dns.resolve4("host.test", { cache = false })
                return false
            end)
        end)
    end)

    describe("resolve6", function()
        it("returns the AAAA records of a name", function()
            local addrs, err = dns.resolve6("host.test")
            assert.is_nil(err)
            assert.are.same({ "2001:db8::1" }, addrs)
        end)

        it("returns ENODATA for a name with only an A record, ENOTFOUND for a missing one", function()
            local addrs, err = dns.resolve6("v4only.test")
            assert.is_nil(addrs)
            assert.are.equal("ENODATA", err.name)
            addrs, err = dns.resolve6("missing.test")
            assert.is_nil(addrs)
            assert.are.equal("ENOTFOUND", err.name)
        end)

        it("raises on bad arguments, with its name", function()
            raises("resolve6: expected a hostname", dns.resolve6, nil)
            raises("resolve6: expected an options table", dns.resolve6, "host.test", 5)
        end)
    end)

    describe("a server that does not answer", function()
        it("gives ETIMEOUT after the per-query timeout", function()
            dns.setServers({ "127.0.0.1:" .. silent_port })
            local t0 = system.hrtime()
            local addrs, err = dns.resolve4("host.test", { timeout = 200 })
            local ms = ms_since(t0)
            assert.is_nil(addrs)
            assert.are.equal("ETIMEOUT", err.name)
            assert.are.equal(12, err.code) -- ARES_ETIMEOUT
            assert.is_true(ms >= 190 and ms < 4000, "took " .. ms .. " ms") -- c-ares alone: 5000
        end)

        it("gives ETIMEOUT after the module's default timeout", function()
            assert.are.equal(5000, dns.getTimeout())
            dns.setTimeout(150)
            dns.setServers({ "127.0.0.1:" .. silent_port })
            local t0 = system.hrtime()
            local _, err6 = dns.resolve6("host.test")
            local _, errl = dns.lookup("host.test")
            local _, errr = dns.reverse("192.0.2.1")
            local ms = ms_since(t0)
            dns.setTimeout(5000)
            assert.are.equal("ETIMEOUT", err6.name)
            assert.are.equal("ETIMEOUT", errl.name)
            assert.are.equal("ETIMEOUT", errr.name)
            assert.is_true(ms >= 440 and ms < 4500, "took " .. ms .. " ms") -- c-ares alone: 15000
        end)

        it("times out many concurrent queries, each on its own deadline", function()
            dns.setServers({ "127.0.0.1:" .. silent_port })
            local handles = {}
            for i = 1, 10 do
                handles[i] = task.spawn(function()
                    local t0 = system.hrtime()
                    local _, err = dns.resolve4("n" .. i .. ".test", { timeout = 50 * i })
                    return err.name, ms_since(t0)
                end)
            end
            for i = 1, 10 do
                local ok, name, ms = handles[i]:join()
                assert.is_true(ok)
                assert.are.equal("ETIMEOUT", name)
                assert.is_true(ms >= 50 * i - 10 and ms < 50 * i + 3000, "query " .. i .. " took " .. ms .. " ms")
            end
        end)

        it("raises on a bad default timeout", function()
            raises("setTimeout: expected milliseconds", dns.setTimeout, "1s")
            raises("setTimeout: timeout must be", dns.setTimeout, 0)
            raises("setTimeout: timeout must be", dns.setTimeout, -1)
            assert.are.equal(5000, dns.getTimeout())
        end)
    end)

    it("returns ECONNREFUSED when nothing listens on the server's port", function()
        dns.setServers({ "127.0.0.1:" .. closed_port() })
        local t0 = system.hrtime()
        local addrs, err = dns.resolve4("host.test", { timeout = 10000 })
        assert.is_nil(addrs)
        assert.are.equal("ECONNREFUSED", err.name)
        -- At once, not after the timeout (generous: a loaded machine under ASan is slow).
        assert.is_true(ms_since(t0) < 5000, "took " .. ms_since(t0) .. " ms")
    end)

    it("maps the server's response codes and bad answers to error names", function()
        -- c-ares 1.18 tries the next server (or again) after SERVFAIL, NOTIMP and REFUSED,
        -- and when every attempt got one of them it reports ECONNREFUSED.
        local cases = { { 1, "EFORMERR", 2 }, { 2, "ECONNREFUSED", 11 }, { 3, "ENOTFOUND", 4 },
            { 4, "ECONNREFUSED", 11 }, { 5, "ECONNREFUSED", 11 } }
        for _, case in ipairs(cases) do
            local srv = fake_server(function(q) return reply(q, case[1]) end)
            dns.setServers({ "127.0.0.1:" .. srv.port })
            local addrs, err = dns.resolve4("host.test", { timeout = 2000 })
            srv.stop()
            assert.is_nil(addrs)
            assert.are.equal(case[2], err.name, "rcode " .. case[1])
            assert.are.equal(case[3], err.code)
        end
        -- An answer count without answers.
        local srv = fake_server(function(q) return reply(q, 0, 1) end)
        dns.setServers({ "127.0.0.1:" .. srv.port })
        local addrs, err = dns.resolve6("host.test", { timeout = 2000 })
        srv.stop()
        assert.is_nil(addrs)
        assert.are.equal("EBADRESP", err.name)
        assert.are.equal(10, err.code)
    end)

    it("asks the next server when one refuses", function()
        local asked = 0
        local srv = fake_server(function(q)
            asked = asked + 1
            return reply(q, 5)
        end)
        dns.setServers({ "127.0.0.1:" .. srv.port, dnsmasq.server })
        local addrs, err = dns.resolve4("host.test", { timeout = 2000 })
        srv.stop()
        assert.is_nil(err)
        assert.are.same({ "192.0.2.1" }, addrs)
        assert.are.equal(1, asked)
    end)

    it("runs many queries concurrently", function()
        local handles = {}
        for i = 1, 20 do
            handles[i] = task.spawn(function() return dns.resolve4("n" .. i .. ".test", { cache = false }) end)
        end
        for i = 1, 20 do
            local ok, addrs, err = handles[i]:join()
            assert.is_true(ok)
            assert.is_nil(err)
            assert.are.same({ "192.0.2." .. (100 + i) }, addrs)
        end
    end)

    describe("lookup", function()
        it("resolves localhost from /etc/hosts without asking the server", function()
            local addrs, err = dns.lookup("localhost")
            assert.is_nil(err)
            assert.are.equal("127.0.0.1", addrs[1])
            assert.are.same({ "127.0.0.1" }, dns.lookup("localhost", 4))
            assert.are.equal(0, dnsmasq.count("A", "localhost"))
        end)

        it("returns an IP address itself without a query", function()
            dns.setServers({ "127.0.0.1:" .. silent_port })
            assert.are.same({ "192.0.2.55" }, dns.lookup("192.0.2.55"))
            assert.are.same({ "::1" }, dns.lookup("::1", 6))
            assert.are.same({ "2001:db8::5" }, dns.lookup("2001:db8::5", 4))
        end)

        it("asks DNS for both families, IPv4 first", function()
            assert.are.same({ "192.0.2.1", "2001:db8::1" }, dns.lookup("host.test"))
            assert.are.same({ "192.0.2.1" }, dns.lookup("host.test", 4))
            assert.are.same({ "2001:db8::1" }, dns.lookup("host.test", { family = 6 }))
            assert.are.same({ "192.0.2.7" }, dns.lookup("v4only.test"))
        end)

        it("returns ENOTFOUND for a missing name", function()
            local addrs, err = dns.lookup("missing.test")
            assert.is_nil(addrs)
            assert.are.equal("ENOTFOUND", err.name)
            assert.are.equal("missing.test", err.hostname)
            addrs, err = dns.lookup("", 4)
            assert.is_nil(addrs)
            assert.are.equal("EBADNAME", err.name)
        end)

        it("raises on bad arguments, with its name", function()
            raises("lookup: expected a hostname", dns.lookup)
            raises("lookup: family must be 4, 6 or nil", dns.lookup, "host.test", 5)
            raises("lookup: family must be 4, 6 or nil", dns.lookup, "host.test", { family = 2 })
            raises("lookup: expected a family", dns.lookup, "host.test", "4")
            raises("lookup: timeout must be", dns.lookup, "host.test", { timeout = 0 })
        end)
    end)

    describe("reverse", function()
        it("returns the names of an address (PTR records)", function()
            assert.are.same({ "ptr.test" }, dns.reverse("192.0.2.20"))
            assert.are.same({ "host.test" }, dns.reverse("192.0.2.1"))
            assert.are.same({ "host.test" }, dns.reverse("2001:db8::1"))
        end)

        it("reads /etc/hosts first", function()
            local names = dns.reverse("127.0.0.1")
            local found = false
            for _, n in ipairs(names) do found = found or n == "localhost" end
            assert.is_true(found)
        end)

        it("returns ENOTFOUND for an address without names", function()
            local names, err = dns.reverse("192.0.2.99")
            assert.is_nil(names)
            assert.are.equal("ENOTFOUND", err.name)
        end)

        it("returns EINVAL for a string that is not an IP address", function()
            for _, s in ipairs({ "host.test", "", "1.2.3.4\0", "1.2.3.256" }) do
                local names, err = dns.reverse(s)
                assert.is_nil(names)
                assert.are.equal("EINVAL", err.name)
            end
        end)

        it("raises on bad arguments, with its name", function()
            raises("reverse: expected an IP address", dns.reverse)
            raises("reverse: expected an IP address", dns.reverse, 1234)
            raises("reverse: expected an options table", dns.reverse, "192.0.2.1", true)
        end)
    end)

    describe("setServers and getServers", function()
        it("set and report the servers", function()
            dns.setServers({ "127.0.0.1:5353", "[::1]:5300", "192.0.2.1", "[2001:db8::2]", "::3" })
            assert.are.same({ "127.0.0.1:5353", "[::1]:5300", "192.0.2.1", "2001:db8::2", "::3" }, dns.getServers())
        end)

        it("go back to the system's servers with no argument", function()
            dns.setServers()
            local servers = dns.getServers()
            assert.is_table(servers)
            assert.is_true(#servers >= 1)
        end)

        it("apply to new queries while older ones finish on the old servers", function()
            dns.setServers({ "127.0.0.1:" .. silent_port })
            local h = task.spawn(function() return dns.resolve4("slow.test", { timeout = 300 }) end)
            sleep(20) -- the query is on its way to the silent server
            use_dnsmasq()
            assert.are.same({ "192.0.2.1" }, dns.resolve4("host.test"))
            local ok, addrs, err = h:join()
            assert.is_true(ok)
            assert.is_nil(addrs)
            assert.are.equal("ETIMEOUT", err.name)
        end)

        it("raise on bad lists and addresses", function()
            raises("setServers: expected a list of servers", dns.setServers, "127.0.0.1")
            raises("setServers: expected at least one server", dns.setServers, {})
            raises("setServers: server 1 must be a string", dns.setServers, { 53 })
            for _, bad in ipairs({ "nonsense", "1.2.3.4:99999", "1.2.3.4:0", "1.2.3.4:", "1.2.3.4:5x", "[::1",
                "[::1]x", "[::1]:", "::1]:53", "[1.2.3.4]:53", "1.2.3.4.5", "" }) do
                raises("setServers: invalid server address", dns.setServers, { "127.0.0.1", bad })
            end
            -- A rejected list changes nothing.
            assert.are.same({ dnsmasq.server }, dns.getServers())
        end)
    end)

    describe("cache", function()
        after_each(function() dns.setCache({ size = 1000, max_ttl = 3600 }) end)

        it("answers again from the cache without a query, whatever the case of the name", function()
            local n0 = dnsmasq.count("A", "multi.test")
            local s0 = dns.cacheStats()
            assert.are.same({ "192.0.2.10", "192.0.2.11" }, sorted(dns.resolve4("multi.test")))
            assert.are.same({ "192.0.2.10", "192.0.2.11" }, sorted(dns.resolve4("multi.test")))
            assert.are.same({ "192.0.2.10", "192.0.2.11" }, sorted(dns.resolve4("MULTI.test.")))
            assert.are.equal(n0 + 1, dnsmasq.count("A", "multi.test"))
            local s1 = dns.cacheStats()
            assert.are.equal(s0.hits + 2, s1.hits)
            assert.are.equal(s0.misses + 1, s1.misses)
            -- Another type, another entry.
            assert.are.same({ "2001:db8::1" }, dns.resolve6("host.test"))
            assert.are.same({ "192.0.2.1" }, dns.resolve4("host.test"))
            assert.are.equal(3, dns.cacheStats().entries)
        end)

        it("forgets an answer when its TTL has passed", function()
            local n0 = dnsmasq.count("A", "ttl1.test")
            assert.are.same({ "192.0.2.5" }, dns.resolve4("ttl1.test"))
            assert.are.same({ "192.0.2.5" }, dns.resolve4("ttl1.test"))
            assert.are.equal(n0 + 1, dnsmasq.count("A", "ttl1.test"))
            sleep(1100)
            assert.are.same({ "192.0.2.5" }, dns.resolve4("ttl1.test"))
            assert.are.equal(n0 + 2, dnsmasq.count("A", "ttl1.test"))
        end)

        it("reports the remaining TTL of a cached answer", function()
            assert.are.equal(300, dns.resolve4("host.test", { ttl = true })[1].ttl)
            sleep(1100)
            local ttl = dns.resolve4("host.test", { ttl = true })[1].ttl
            -- Counted down (by at least the second slept; more when the machine is slow).
            assert.is_true(ttl >= 250 and ttl <= 299, "ttl " .. ttl)
        end)

        it("caps TTLs at max_ttl", function()
            dns.setCache({ max_ttl = 1 })
            local n0 = dnsmasq.count("A", "host.test")
            dns.resolve4("host.test")
            dns.resolve4("host.test")
            assert.are.equal(n0 + 1, dnsmasq.count("A", "host.test"))
            sleep(1100)
            dns.resolve4("host.test")
            assert.are.equal(n0 + 2, dnsmasq.count("A", "host.test"))
        end)

        it("caches lookups, and not the hosts file or IP addresses", function()
            local n0 = dnsmasq.count("AAAA", "host.test")
            assert.are.same({ "192.0.2.1", "2001:db8::1" }, dns.lookup("host.test"))
            assert.are.same({ "192.0.2.1", "2001:db8::1" }, dns.lookup("host.test"))
            assert.are.equal(n0 + 1, dnsmasq.count("AAAA", "host.test"))
            dns.lookup("localhost")
            dns.lookup("192.0.2.1")
            assert.are.equal(1, dns.cacheStats().entries)
        end)

        it("is bypassed with cache = false", function()
            local n0 = dnsmasq.count("A", "v4only.test")
            dns.resolve4("v4only.test", { cache = false })
            dns.resolve4("v4only.test", { cache = false })
            assert.are.equal(n0 + 2, dnsmasq.count("A", "v4only.test"))
            assert.are.equal(0, dns.cacheStats().entries)
        end)

        it("keeps at most `size` answers, evicting the least recently used", function()
            dns.setCache({ size = 2 })
            dns.resolve4("n1.test")
            dns.resolve4("n2.test")
            dns.resolve4("n1.test") -- n2 is now the least recently used
            dns.resolve4("n3.test")
            local stats = dns.cacheStats()
            assert.are.equal(2, stats.entries)
            assert.are.equal(2, stats.size)
            local n0 = dnsmasq.count("A", "n1.test")
            dns.resolve4("n1.test")
            assert.are.equal(n0, dnsmasq.count("A", "n1.test"))
            n0 = dnsmasq.count("A", "n2.test")
            dns.resolve4("n2.test")
            assert.are.equal(n0 + 1, dnsmasq.count("A", "n2.test"))
        end)

        it("is disabled by size = 0 and emptied by flushCache and setServers", function()
            dns.resolve4("n4.test")
            assert.are.equal(1, dns.cacheStats().entries)
            dns.flushCache()
            assert.are.equal(0, dns.cacheStats().entries)
            dns.resolve4("n4.test")
            use_dnsmasq()
            assert.are.equal(0, dns.cacheStats().entries)
            dns.setCache({ size = 0 })
            local n0 = dnsmasq.count("A", "n4.test")
            dns.resolve4("n4.test")
            dns.resolve4("n4.test")
            assert.are.equal(n0 + 2, dnsmasq.count("A", "n4.test"))
            assert.are.equal(0, dns.cacheStats().entries)
        end)

        it("does not cache errors", function()
            local n0 = dnsmasq.count("A", "missing.test")
            dns.resolve4("missing.test")
            dns.resolve4("missing.test")
            assert.are.equal(n0 + 2, dnsmasq.count("A", "missing.test"))
        end)

        it("raises on bad settings", function()
            raises("setCache: expected an options table", dns.setCache, 10)
            raises("setCache: size must be", dns.setCache, { size = -1 })
            raises("setCache: option 'size' must be an integer", dns.setCache, { size = "big" })
            raises("setCache: max_ttl must be", dns.setCache, { max_ttl = -1 })
            raises("setCache: option 'max_ttl' must be an integer", dns.setCache, { max_ttl = 0.5 })
        end)
    end)

    describe("resources", function()
        it("opens no descriptor before the first query, and leaks none after queries", function()
            local out, err, status = run_child([[
local dns = require "dns"
local fds = require("luaio.core").fds
local before = fds()
dns.setServers({"127.0.0.1:1"})
dns.setTimeout(1000)
print(fds() - before)
]])
            assert.are.equal(0, status, err)
            assert.are.equal("0\n", out)
            local fd0 = helper.fd_count()
            for i = 1, 5 do
                dns.resolve4("n" .. i .. ".test", { cache = false })
                dns.lookup("n" .. i .. ".test", { cache = false })
                dns.reverse("192.0.2.1")
            end
            dns.setServers({ "127.0.0.1:" .. silent_port })
            dns.resolve4("host.test", { timeout = 30 })
            dns.setServers({ "127.0.0.1:" .. closed_port() })
            dns.resolve4("host.test")
            assert.are.equal(fd0, helper.fds_back_to(fd0))
        end)

        it("lets the process exit when an abandoned query is still unanswered", function()
            local t0 = system.hrtime()
            local out, err, status = run_child(([[
local dns = require "dns"
dns.setServers({"127.0.0.1:%d"})
local task = require "task"
task.spawn(function() local _, e = dns.resolve4("a.test", {timeout = 100}) print(e.name) end)
local _, e = dns.resolve6("b.test", {timeout = 100})
print(e.name)
]]):format(silent_port))
            assert.are.equal(0, status, err)
            assert.are.equal("ETIMEOUT\nETIMEOUT\n", out)
            assert.is_true(ms_since(t0) < 3000, "the child took " .. ms_since(t0) .. " ms")
        end)

        it("lets the process exit right after an answer", function()
            local t0 = system.hrtime()
            local out, err, status = run_child(([[
local dns = require "dns"
dns.setServers({"%s"})
print(dns.resolve4("host.test")[1])
]]):format(dnsmasq.server))
            assert.are.equal(0, status, err)
            assert.are.equal("192.0.2.1\n", out)
            assert.is_true(ms_since(t0) < 3000, "the child took " .. ms_since(t0) .. " ms")
        end)
    end)
end)

-- ------------------------------------------------------------------ bad answers

-- A DNS server in Python on 127.0.0.1 (UDP), for answers dnsmasq does not give: big.test has
-- an answer of about 64 KB in one datagram (4000 A records, no TC bit), tc.test a truncated
-- answer (TC bit, no records); gN.test is 192.0.2.N, answered 200 ms late so that the good
-- queries are in flight when a bad answer comes. With "notcp" it holds its TCP port bound but
-- not listening (a fallback to TCP is refused); with "tcp" it answers over TCP too, in full.
local BAD_SERVER = [==[
import select, socket, struct, sys, threading, time
tcp_mode = sys.argv[1] == "tcp"
while True:
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("127.0.0.1", 0))
    port = u.getsockname()[1]
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        t.bind(("127.0.0.1", port))
        break
    except OSError:
        u.close()
        t.close()

def answer(q, over_tcp):
    i, labels = 12, []
    while i < len(q) and q[i]:
        labels.append(q[i + 1:i + 1 + q[i]].decode("ascii", "replace"))
        i += 1 + q[i]
    qtype = struct.unpack(">H", q[i + 1:i + 3])[0]
    name = ".".join(labels).lower()
    flags, records = 0x8180, []
    if name == "big.test" and qtype == 1:
        records = [bytes([192, 0, 2 + k // 250, k % 250 + 1]) for k in range(4000)]
    elif name == "tc.test" and qtype == 1:
        if over_tcp:
            records = [bytes([192, 0, 2, 99])]
        else:
            flags |= 0x0200
    elif name == "99.2.0.192.in-addr.arpa" and qtype == 12:
        if over_tcp:
            records = [b"\x02tc\x04test\x00"]
        else:
            flags |= 0x0200
    elif qtype == 1 and name.startswith("g") and name[1:-5].isdigit():
        records = [bytes([192, 0, 2, int(name[1:-5])])]
    rr = b"".join(b"\xc0\x0c" + struct.pack(">HHIH", qtype, 1, 300, len(r)) + r for r in records)
    return name, q[:2] + struct.pack(">HHHHH", flags, 1, len(records), 0, 0) + q[12:i + 5] + rr

def serve_tcp():
    t.listen(16)
    while True:
        c, _ = t.accept()
        def one(c):
            with c:
                while True:
                    head = c.recv(2, socket.MSG_WAITALL)
                    if len(head) < 2:
                        return
                    q = c.recv(struct.unpack(">H", head)[0], socket.MSG_WAITALL)
                    reply = answer(q, True)[1]
                    c.sendall(struct.pack(">H", len(reply)) + reply)
        threading.Thread(target=one, args=(c,), daemon=True).start()

if tcp_mode:
    threading.Thread(target=serve_tcp, daemon=True).start()
print(port, flush=True)
late = []
while True:
    now = time.monotonic()
    while late and late[0][0] <= now:
        u.sendto(late[0][1], late[0][2])
        late.pop(0)
    if not select.select([u], [], [], max(0, late[0][0] - now) if late else None)[0]:
        continue
    q, addr = u.recvfrom(65535)
    if len(q) < 17:
        continue
    name, reply = answer(q, False)
    if name in ("big.test", "tc.test", "99.2.0.192.in-addr.arpa"):
        u.sendto(reply, addr)
    else:
        late.append((time.monotonic() + 0.2, reply, addr))
]==]

describe("dns with a server that sends oversized or truncated answers", function()
    local process = require "process"
    local server

    local function start(mode)
        server = assert(process.spawn("python3", { "-c", BAD_SERVER, mode }, { stdio = { "ignore", "pipe", "inherit" } }))
        local port = assert(tonumber(server.stdout:readline()), "the python server did not start")
        dns.setServers({ "127.0.0.1:" .. port })
        dns.flushCache()
    end

    after_each(function()
        if server then
            server:kill()
            server:wait()
            server.stdout:close()
            server = nil
        end
        dns.setServers()
    end)

    -- Resolves g1.test .. g40.test with resolve4 (or `fn`), and `bad` with `badfn`, all at once;
    -- returns how many good ones got their address, and the bad one's results.
    local function forty_and_one(bad, badfn, fn)
        local good, tasks, a, e = 0, {}, nil, nil
        for i = 1, 40 do
            tasks[i] = task.spawn(function()
                local r = dns[fn or "resolve4"]("g" .. i .. ".test", { cache = false })
                if r and r[1] == "192.0.2." .. i then good = good + 1 end
            end)
        end
        tasks[41] = task.spawn(function()
            a, e = dns[badfn](bad, badfn ~= "reverse" and { cache = false } or nil)
        end)
        for _, t in ipairs(tasks) do t:join() end
        return good, a, e
    end

    for _, case in ipairs({ { "big.test", "resolve4" }, { "tc.test", "resolve4" }, { "big.test", "lookup" }, { "tc.test", "lookup" },
        -- ares_gethostbyaddr reports any failure of its DNS lookup as ENOTFOUND.
        { "192.0.2.99", "reverse", "ENOTFOUND" } }) do
        it(("fails only its own query when %s's answer needs TCP and TCP is refused (%s)"):format(case[1], case[2]), function()
            start("notcp")
            local good, a, e = forty_and_one(case[1], case[2], case[2] == "lookup" and "lookup" or nil)
            assert.are.equal(40, good)
            assert.is_nil(a)
            assert.are.equal(case[3] or "ECONNREFUSED", e.name)
            assert.are.equal(case[1], e.hostname)
        end)
    end

    it("asks a truncated or oversized answer again over TCP, and gets it whole", function()
        start("tcp")
        local good, a = forty_and_one("big.test", "resolve4")
        assert.are.equal(40, good)
        assert.are.equal(256, #a) -- resolve4 reads at most 256 addresses of an answer
        assert.are.equal("192.0.2.1", a[1])
        assert.are.same({ "192.0.2.99" }, dns.resolve4("tc.test", { cache = false }))
        local all = assert(dns.lookup("big.test", { family = 4, cache = false }))
        assert.are.equal(4000, #all)
        assert.are.same({ "tc.test" }, dns.reverse("192.0.2.99"))
    end)
end)
