-- The http client: requests, bodies, the keep-alive pool, redirects and errors.
local http = require "http"
local tcp = require "tcp"
local json = require "json"
local helper = require "helper"

-- The client keeps idle connections for reuse: each spec ends with none, for the leak check.
after_each(function() http.closeIdle() end)

local function start(handler, opts)
    opts = opts or {}
    opts.port = 0
    local srv = assert(http.createServer(opts, handler))
    return srv, "http://127.0.0.1:" .. srv.port, srv.port
end

-- A raw server that answers every connection with `reply` (a string or function(sock, n)).
local function raw_server(reply)
    local n = 0
    local srv = assert(tcp.createServer(0, function(sock)
        n = n + 1
        sock:settimeouts(2000, 2000, 2000)
        sock:readuntil("\r\n\r\n")
        if type(reply) == "function" then
            reply(sock, n)
        else
            sock:write(reply)
        end
    end, { host = "127.0.0.1" }))
    return srv, srv:address().port
end

-- A raw server that reads whole requests (Content-Length bodies) on each connection and calls
-- on_request(sock, req, conn_n, req_n) for each; it keeps the connection while that returns true.
-- Returns the server, its base URL and the list of requests {method, target, body, conn}.
local function recording_server(on_request)
    local seen, conns = {}, 0
    local srv = assert(tcp.createServer(0, function(sock)
        conns = conns + 1
        local conn, n = conns, 0
        sock:settimeouts(2000, 2000, 2000)
        while true do
            local head = sock:readuntil("\r\n\r\n")
            if not head then
                return
            end
            local method, target = head:match("^(%S+) (%S+)")
            local len = tonumber(head:lower():match("\ncontent%-length: *(%d+)")) or 0
            local body = len > 0 and sock:read(len) or ""
            n = n + 1
            local req = { method = method, target = target, body = body, conn = conn }
            seen[#seen + 1] = req
            if not on_request(sock, req, conn, n) then
                sock:close()
                return
            end
        end
    end, { host = "127.0.0.1" }))
    return srv, "http://127.0.0.1:" .. srv:address().port, seen
end

local function count(list, method)
    local n = 0
    for _, r in ipairs(list) do
        if r.method == method then
            n = n + 1
        end
    end
    return n
end

describe("http client", function()
    after_each(function()
        http.closeIdle()
    end)

    it("gets and posts, with headers, status and body", function()
        local srv, base = start(function(req, res)
            res.status = req.method == "POST" and 201 or 200
            res:setHeader("X-Echo", req.headers["x-in"] or "")
            res:finish(req.method .. " " .. req.url .. " " .. (req:body() or ""))
        end)
        local res = assert(http.get(base .. "/a?b=1"))
        assert.are.equal(200, res.status)
        assert.are.equal("OK", res.reason)
        assert.are.equal("GET /a?b=1 ", res.body)
        res = assert(http.request({ method = "POST", url = base .. "/p", headers = { ["X-In"] = "v" }, body = "data" }))
        assert.are.equal(201, res.status)
        assert.are.equal("v", res.headers["x-echo"])
        assert.are.equal("POST /p data", res.body)
        assert.are.equal("1.1", res.httpVersion)
        srv:close()
    end)

    it("reads chunked, length-delimited and until-close bodies", function()
        local srv, base = start(function(req, res)
            if req.path == "/chunked" then
                for i = 1, 3 do
                    res:write("c" .. i)
                end
                res:finish()
            else
                res:finish("fixed")
            end
        end)
        assert.are.equal("c1c2c3", assert(http.get(base .. "/chunked")).body)
        assert.are.equal("fixed", assert(http.get(base .. "/fixed")).body)
        srv:close()
        local rs, port = raw_server("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
        local res = assert(http.get("http://127.0.0.1:" .. port .. "/"))
        assert.are.equal("until the end", res.body)
        rs:close()
    end)

    it("streams large bodies in pieces", function()
        local big = string.rep("0123456789", 50000)
        local srv, base = start(function(_, res)
            res:write(big:sub(1, 250000))
            res:finish(big:sub(250001))
        end)
        local res = assert(http.request({ url = base, stream = true }))
        assert.is_nil(res.body)
        local n, pieces = 0, 0
        while true do
            local piece, err = res:read()
            assert.is_nil(err)
            if not piece then
                break
            end
            n, pieces = n + #piece, pieces + 1
        end
        assert.are.equal(#big, n)
        assert.truthy(pieces >= 1)
        srv:close()
    end)

    it("reuses pooled keep-alive connections", function()
        local srv, base = start(function(_, res)
            res:finish("x")
        end)
        for _ = 1, 5 do
            assert.are.equal("x", assert(http.get(base)).body)
        end
        assert.are.equal(1, srv:connections())
        srv:close()
    end)

    it("never reuses a connection with an unread body or a timed-out request", function()
        local srv, base = start(function(req, res)
            if req.path == "/slow" then
                sleep(200)
            end
            res:finish(string.rep("b", 1000))
        end)
        local res = assert(http.request({ url = base, stream = true }))
        res:close()
        assert.are.equal(1000, #assert(http.get(base)).body)
        local _, err = http.request({ url = base .. "/slow", timeout = 50 })
        assert.are.equal("ETIMEDOUT", err.name)
        assert.are.equal(1000, #assert(http.get(base)).body)
        srv:close()
    end)

    it("expires idle connections and caps the pool", function()
        local srv, base, seen = recording_server(function(sock, req)
            if req.target == "/slow" then
                sleep(30)
            end
            sock:write("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx")
            return true
        end)
        local old, oldmax = http.pool.idleTimeout, http.pool.maxIdle
        -- Reuse needs the gap between two requests under the idle timeout, which a loaded
        -- machine can stretch by a hundred milliseconds; expiry is certain after a longer sleep.
        http.pool.idleTimeout = 1000
        assert(http.get(base))
        assert(http.get(base))
        assert.are.equal(1, seen[2].conn) -- within the idle timeout: reused
        sleep(1100)
        assert(http.get(base))
        assert.are.equal(2, seen[3].conn) -- expired: a new connection
        -- Three requests at once need three connections; two stay in the pool.
        http.pool.maxIdle = 2
        local task, done = require "task", 0
        for _ = 1, 3 do
            task.spawn(function()
                assert(http.get(base .. "/slow"))
                done = done + 1
            end)
        end
        for _ = 1, 200 do
            if done == 3 then
                break
            end
            sleep(10)
        end
        assert.are.equal(3, done)
        assert.are.equal(2, #http.pool.idle[base])
        http.pool.idleTimeout, http.pool.maxIdle = old, oldmax
        srv:close()
    end)

    it("bounds the whole request by its timeout, however the server trickles", function()
        local system = require "system"
        local function ms_since(t0)
            return (system.hrtime() - t0) / 1e6
        end
        -- The body of a streamed response, one byte every 100 ms: each wait is short.
        local rs, rport = raw_server(function(sock)
            sock:write("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
            for _ = 1, 100 do
                sleep(100)
                if sock:write("x") then
                    return
                end
            end
        end)
        local t0 = system.hrtime()
        local res = assert(http.request({ url = "http://127.0.0.1:" .. rport, timeout = 500, stream = true }))
        local piece, err
        repeat
            piece, err = res:read()
        until not piece
        assert.are.equal("ETIMEDOUT", err.name)
        assert.are.equal(rport, err.port)
        assert.is_true(ms_since(t0) >= 450 and ms_since(t0) < 5000, "took " .. ms_since(t0) .. " ms")
        rs:close()
        -- A server that reads an upload 256 KiB every 50 ms (32 MiB take it over 6 s): each write
        -- makes progress.
        local srv = assert(tcp.createServer(0, function(sock)
            sock:readuntil("\r\n\r\n")
            for _ = 1, 400 do
                if not sock:read(262144) then
                    return
                end
                sleep(50)
            end
        end, { host = "127.0.0.1" }))
        t0 = system.hrtime()
        local _
        _, err = http.request({ method = "PUT", url = "http://127.0.0.1:" .. srv:address().port,
            body = string.rep("u", 32 * 1024 * 1024), timeout = 500 })
        assert.are.equal("ETIMEDOUT", err.name)
        assert.is_true(ms_since(t0) < 5000, "took " .. ms_since(t0) .. " ms")
        srv:close()
        -- A body function that gives a piece every 100 ms (all 60 take 6 s).
        local hs, base = start(function(req, res)
            res:finish(req:body() or "")
        end)
        local n = 0
        t0 = system.hrtime()
        _, err = http.request({ method = "POST", url = base, timeout = 500, body = function()
            n = n + 1
            if n <= 60 then
                sleep(100)
                return "p"
            end
        end })
        assert.are.equal("ETIMEDOUT", err.name)
        assert.is_true(ms_since(t0) < 5000, "took " .. ms_since(t0) .. " ms")
        hs:close()
        -- A chain of redirects, each answered after 150 ms: one deadline over the whole chain.
        hs, base = start(function(req, res)
            sleep(150)
            local k = tonumber(req.path:match("^/r/(%d+)$"))
            if k and k < 5 then
                res.status = 302
                res:setHeader("Location", "/r/" .. (k + 1))
            end
            res:finish("end")
        end)
        _, err = http.request({ url = base .. "/r/1", redirect = 5, timeout = 500 })
        assert.are.equal("ETIMEDOUT", err.name)
        assert.are.equal("end", assert(http.request({ url = base .. "/r/1", redirect = 5, timeout = 5000 })).body)
        hs:close()
    end)

    it("sends Expect: 100-continue with a large body and holds the body back until the 100", function()
        -- A raw server that answers each request head as `answer(head, sock)` says.
        local function expect_server(answer)
            local heads = {}
            local srv = assert(tcp.createServer(0, function(sock)
                sock:settimeouts(3000, 3000, 3000)
                while true do
                    local head = sock:readuntil("\r\n\r\n")
                    if not head then
                        return
                    end
                    heads[#heads + 1] = head
                    if not answer(head, sock) then
                        return
                    end
                end
            end, { host = "127.0.0.1" }))
            return srv, "http://127.0.0.1:" .. srv:address().port, heads
        end
        local function length(head)
            return tonumber(head:lower():match("\ncontent%-length: *(%d+)"))
        end
        local size = http.expectContinue.size
        -- A final answer instead of the 100: the body is not sent.
        local got
        local srv, base, heads = expect_server(function(head, sock)
            sock:write("HTTP/1.1 401 Unauthorized\r\nContent-Length: 2\r\n\r\nno")
            sock:settimeouts(300, 300, 300)
            got = sock:read()
        end)
        local res = assert(http.request({ method = "PUT", url = base, body = string.rep("b", size + 1) }))
        assert.are.equal(401, res.status)
        assert.are.equal("no", res.body)
        assert.truthy(heads[1]:find("\r\nExpect: 100-continue", 1, true))
        http.closeIdle()
        sleep(400)
        assert.is_nil(got)
        srv:close()
        -- The 100, then the body; at the size no Expect (the body goes at once), one byte past it one.
        srv, base, heads = expect_server(function(head, sock)
            if head:find("\r\nExpect: 100-continue", 1, true) then
                sock:write("HTTP/1.1 100 Continue\r\n\r\n")
            end
            local body = sock:read(length(head))
            sock:write("HTTP/1.1 200 OK\r\nContent-Length: " .. #tostring(#body) .. "\r\n\r\n" .. #body)
            return true
        end)
        assert.are.equal(tostring(size + 1), assert(http.request({ method = "PUT", url = base, body = string.rep("c", size + 1) })).body)
        assert.are.equal(tostring(size), assert(http.request({ method = "PUT", url = base, body = string.rep("c", size) })).body)
        assert.truthy(heads[1]:find("Expect: 100-continue", 1, true))
        assert.falsy(heads[2]:find("Expect", 1, true))
        -- Asked for with a small body (also as a header), a function body, or refused for a large one.
        assert.are.equal("3", assert(http.request({ method = "POST", url = base, body = "abc", expectContinue = true })).body)
        assert.are.equal("2", assert(http.request({ method = "POST", url = base, body = "ab", headers = { expect = "100-Continue" } })).body)
        local n = 0
        assert.are.equal("4", assert(http.request({ method = "POST", url = base, expectContinue = true,
            headers = { ["Content-Length"] = 4 }, body = function()
                n = n + 1
                return n <= 2 and "xy" or nil
            end })).body)
        assert.are.equal(tostring(size + 1), assert(http.request({ method = "PUT", url = base, body = string.rep("c", size + 1), expectContinue = false })).body)
        for k = 3, 5 do -- once each, also when given as a header
            assert.are.equal(1, select(2, heads[k]:lower():gsub("\nexpect: 100%-continue\r", "")))
        end
        assert.falsy(heads[6]:find("Expect", 1, true))
        srv:close()
        -- A server that never answers the 100 (HTTP/1.0): the body goes after the wait.
        local wait = http.expectContinue.wait
        http.expectContinue.wait = 100
        srv, base = expect_server(function(head, sock)
            local body = sock:read(length(head))
            sock:write("HTTP/1.1 200 OK\r\nContent-Length: " .. #body .. "\r\n\r\n" .. body)
            return true
        end)
        local ok, r = pcall(http.request, { method = "POST", url = base, body = "late", expectContinue = true })
        http.expectContinue.wait = wait
        assert.are.equal("late", assert(r).body, tostring(ok))
        srv:close()
        -- A luaio server: the 100 when the handler reads, a 413 without reading.
        local hs, hbase = start(function(req, res)
            if req.path == "/no" then
                res.status = 413
                return res:finish()
            end
            res:finish("got " .. #assert(req:body()))
        end, { maxBodySize = 4 * size })
        assert.are.equal("got " .. (size + 1), assert(http.request({ method = "PUT", url = hbase, body = string.rep("d", size + 1) })).body)
        assert.are.equal(413, assert(http.request({ method = "PUT", url = hbase .. "/no", body = string.rep("d", size + 1) })).status)
        hs:close()
    end)

    it("follows redirects when asked", function()
        local srv, base = start(function(req, res)
            if req.path == "/old" then
                res.status = 302
                res:setHeader("Location", "/new")
                return res:finish()
            elseif req.path == "/loop" then
                res.status = 301
                res:setHeader("Location", "/loop")
                return res:finish()
            end
            res:finish(req.method .. " new")
        end)
        local res = assert(http.get(base .. "/old"))
        assert.are.equal(302, res.status)
        res = assert(http.request({ url = base .. "/old", redirect = true }))
        assert.are.equal("GET new", res.body)
        res = assert(http.request({ method = "POST", body = "x", url = base .. "/old", redirect = 3 }))
        assert.are.equal("GET new", res.body)
        local _, err = http.request({ url = base .. "/loop", redirect = 2 })
        assert.are.equal("ETOOMANYREDIRECTS", err.name)
        srv:close()
    end)

    it("returns clear errors: refused, timeout, malformed response, bad URL", function()
        local srv, base, port = start(function(_, res)
            res:finish()
        end)
        srv:close()
        sleep(10)
        local res, err = http.get(base)
        assert.is_nil(res)
        assert.are.equal("ECONNREFUSED", err.name)
        local rs, rport = raw_server(function(sock)
            sleep(300)
            sock:write("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        end)
        res, err = http.request({ url = "http://127.0.0.1:" .. rport, timeout = 50 })
        assert.are.equal("ETIMEDOUT", err.name)
        rs:close()
        rs, rport = raw_server("HTTP/1.1 abc nonsense\r\n\r\n")
        res, err = http.get("http://127.0.0.1:" .. rport)
        assert.are.equal("EPROTO", err.name)
        rs:close()
        rs, rport = raw_server("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        res, err = http.get("http://127.0.0.1:" .. rport)
        assert.are.equal("EPROTO", err.name)
        rs:close()
        res, err = http.get("nonsense")
        assert.are.equal("EINVAL", err.name)
        res, err = http.get("ftp://x/")
        assert.truthy(err.message:find("unsupported scheme", 1, true))
        -- A bad port is the URL's fault: EINVAL naming the URL, not a raise from tcp.connect.
        for _, url in ipairs({ "http://127.0.0.1:99999/", "http://127.0.0.1:abc/", "http://127.0.0.1:0/",
            "http://[::1]x/" }) do
            res, err = http.get(url)
            assert.are.equal("EINVAL", err.name, url)
            assert.are.equal("invalid port in URL: " .. url, err.message)
        end
        assert.is_number(port)
    end)

    it("raises on programmer mistakes", function()
        assert.has_error(function()
            http.request("http://x/")
        end)
        assert.has_error(function()
            http.request({ url = 1 })
        end)
        assert.has_error(function()
            http.request({ url = "http://127.0.0.1:1/", body = {} })
        end)
        assert.has_error(function()
            http.request({ url = "http://127.0.0.1:1/", timeout = -1 })
        end)
        assert.has_error(function()
            http.get(nil)
        end)
    end)

    it("parses URLs, with IPv6 hosts and default ports", function()
        local u = http.parseUrl("http://[::1]:8080/a?b#frag")
        assert.are.same({ "::1", 8080, "/a?b" }, { u.host, u.port, u.target })
        u = http.parseUrl("http://user@example.com?x")
        assert.are.same({ "example.com", 80, "/?x" }, { u.host, u.port, u.target })
    end)

    it("has transports for http and https", function()
        assert.is_function(http.transports.http.connect)
        assert.is_function(http.transports.https.connect) -- spec/https_spec.lua drives it
        assert.are.equal(443, http.transports.https.default_port)
    end)

    -- issue 10, item 2
    it("sends a request again only when idempotent, pooled and unanswered (RFC 9110 9.2.2)", function()
        local srv, base, seen = recording_server(function(sock, req, _, n)
            -- The first request of a connection is answered; then /drop closes unanswered, /part
            -- sends part of a status line first.
            if n > 1 and req.target == "/drop" then
                return false
            elseif n > 1 and req.target == "/part" then
                sock:write("HTTP/1.1 200")
                return false
            end
            sock:write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            return true
        end)
        assert(http.get(base .. "/"))
        local res, err = http.request({ method = "POST", url = base .. "/drop", body = "once" })
        assert.is_nil(res)
        assert.is_table(err)
        assert.are.equal(1, count(seen, "POST"))
        -- GET is idempotent: sent again on a new connection, which answers it.
        assert(http.get(base .. "/"))
        res = assert(http.get(base .. "/drop"))
        assert.are.equal("ok", res.body)
        assert.are.same({ "/drop", "/drop" }, { seen[#seen - 1].target, seen[#seen].target })
        assert.are.equal(seen[#seen - 1].conn + 1, seen[#seen].conn)
        -- A byte of a response came back: no second try.
        local before = #seen
        assert(http.get(base .. "/"))
        res, err = http.get(base .. "/part")
        assert.is_nil(res)
        assert.are.equal("EPROTO", err.name)
        assert.are.equal(before + 2, #seen)
        -- A streamed body cannot be sent again, even with PUT.
        assert(http.get(base .. "/"))
        res, err = http.request({ method = "PUT", url = base .. "/drop", body = function() end })
        assert.is_nil(res)
        assert.is_table(err)
        assert.are.equal(1, count(seen, "PUT"))
        srv:close()
    end)

    -- issue 10, item 13
    it("checks a request before connecting: a request that raises keeps no descriptor", function()
        local srv, base = start(function(_, res)
            res:finish("x")
        end)
        assert(http.get(base)) -- a pooled connection, which the failures below must leave alone
        local fds = helper.fd_count()
        for _ = 1, 100 do
            local ok, msg = pcall(function()
                http.request({ url = base, headers = { ["X-Bad"] = "a\r\nb" } })
            end)
            assert.is_false(ok)
            assert.matches("^[^:]*spec.lua:%d+: http%.request: header 'X%-Bad' contains CR, LF or NUL$", msg)
            assert.has_error(function()
                http.request({ url = base, method = "GE T" })
            end)
            assert.has_error(function()
                http.request({ url = base, headers = { [1] = "x" } })
            end)
            local ok, _, err = pcall(http.get, base .. "/a b")
            assert.is_true(ok)
            assert.are.equal("EINVAL", err.name)
        end
        assert.are.equal(fds, helper.fd_count())
        assert.are.equal("x", assert(http.get(base)).body)
        assert.are.equal(1, srv:connections())
        srv:close()
        -- The raising request does not hold the pooled connection: the process exits.
        local script = helper.script([[
            local http = require "http"
            local srv = assert(http.createServer({ port = 0 }, function(_, res) res:finish("x") end))
            local base = "http://127.0.0.1:" .. srv.port
            assert(http.get(base))
            assert(not pcall(http.request, { url = base, headers = { ["X-Bad"] = "a\nb" } }))
            srv:close()
            print("done")
        ]])
        local out, _, status = helper.sh("timeout 10 " .. helper.luaio .. " " .. script)
        os.remove(script)
        assert.are.same({ "done\n", 0 }, { out, status })
    end)

    it("raises at the caller's line on a bad option", function()
        local ok, msg = pcall(function()
            http.request({ url = "http://127.0.0.1:1/", bogus = 1 })
        end)
        assert.is_false(ok)
        assert.truthy(msg:find("http_client_spec.lua:%d+: http%.request: unknown option 'bogus'"), msg)
        ok, msg = pcall(function()
            http.get("http://127.0.0.1:1/", { headers = { ["X-Bad"] = "\n" } })
        end)
        assert.is_false(ok)
        assert.truthy(msg:find("http_client_spec.lua:%d+: http%.get: header 'X%-Bad'"), msg)
        assert.has_error(function()
            http.request({ url = "http://127.0.0.1:1/", body = "abc", headers = { ["Content-Length"] = 4 } })
        end)
        assert.has_error(function()
            http.request({ url = "http://127.0.0.1:1/", headers = { ["Content-Length"] = "abc" } })
        end)
        assert.has_error(function()
            http.request({ url = "http://127.0.0.1:1/", body = "abc", headers = { ["Transfer-Encoding"] = "chunked" } })
        end)
        assert.has_error(function()
            http.request({ url = "http://127.0.0.1:1/", redirect = -1 })
        end, "http.request: 'redirect' must be true, false or a non-negative integer")
        local srv, base = start(function(_, res)
            res:finish("x")
        end)
        local res = assert(http.request({ url = base, stream = true }))
        for _, name in ipairs({ "read", "readAll", "close" }) do
            assert.has_error(function()
                res[name](5)
            end, "res:" .. name .. ": expected a streamed response as self, got number")
        end
        res:close()
        srv:close()
    end)

    -- issue 10, item 11
    it("bounds a whole body by maxBodySize (64 MiB by default), whatever its framing", function()
        local srv, base = recording_server(function(sock, req)
            local n = tonumber(req.target:match("%d+"))
            if req.target:find("^/length") then
                sock:write("HTTP/1.1 200 OK\r\nContent-Length: " .. n .. "\r\n\r\n" .. string.rep("a", math.min(n, 100)))
                return n <= 100
            elseif req.target:find("^/chunked") then
                sock:write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                for _ = 1, n do
                    sock:write("1\r\nc\r\n")
                end
                sock:write("0\r\n\r\n")
                return true
            end
            sock:write("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" .. string.rep("u", n))
            return false
        end)
        -- The default: a Content-Length one byte past 64 MiB is refused at the head; at the limit
        -- the client waits for the body (the server closes: truncated).
        local res, err = http.get(base .. "/length/67108865")
        assert.is_nil(res)
        assert.are.equal("E2BIG", err.name)
        res, err = http.get(base .. "/length/67108864")
        assert.are.equal("EPROTO", err.name)
        for _, kind in ipairs({ "length", "chunked", "close" }) do
            res = assert(http.get(base .. "/" .. kind .. "/10", { maxBodySize = 10 }))
            assert.are.equal(10, #res.body)
            res, err = http.get(base .. "/" .. kind .. "/11", { maxBodySize = 10 })
            assert.is_nil(res)
            assert.are.equal("E2BIG", err.name, kind)
        end
        -- A pooled connection bounds each response by its own request's limit.
        assert(http.get(base .. "/chunked/50", { maxBodySize = 100 }))
        res, err = http.get(base .. "/chunked/50", { maxBodySize = 10 })
        assert.are.equal("E2BIG", err.name)
        -- A streamed body is the caller's to keep: its pieces are not bounded, readAll is.
        res = assert(http.request({ url = base .. "/chunked/50", stream = true, maxBodySize = 10 }))
        local n = 0
        for _ = 1, 100 do
            local piece = assert(res:read())
            n = n + #piece
            if n == 50 then
                break
            end
        end
        assert.is_nil(res:read())
        res = assert(http.request({ url = base .. "/chunked/50", stream = true, maxBodySize = 10 }))
        res, err = res:readAll()
        assert.are.equal("E2BIG", err.name)
        srv:close()
    end)

    it("streams a request body from a function, chunked or with its Content-Length", function()
        local srv, base = start(function(req, res)
            local body = req:body()
            if not body then
                return res:finish() -- the client gave up on its body (the failures below)
            end
            res:json({ te = req.headers["transfer-encoding"], length = req.headers["content-length"], body = body })
        end)
        local function pieces(list)
            local i = 0
            return function()
                i = i + 1
                return list[i]
            end
        end
        local res = assert(http.request({ method = "POST", url = base, body = pieces({ "ab", "", "cd", "ef" }) }))
        assert.are.same({ te = "chunked", body = "abcdef" }, json.decode(res.body))
        res = assert(http.request({
            method = "PUT", url = base, body = pieces({ "ab", "cdef" }), headers = { ["content-length"] = "6" },
        }))
        assert.are.same({ length = "6", body = "abcdef" }, json.decode(res.body))
        -- More or fewer bytes than the Content-Length said: an error, and the connection closes.
        local fds = helper.fd_count()
        local _, err = http.request({ method = "PUT", url = base, body = pieces({ "abc" }), headers = { ["Content-Length"] = 2 } })
        assert.are.equal("EINVAL", err.name)
        _, err = http.request({ method = "PUT", url = base, body = pieces({ "a" }), headers = { ["Content-Length"] = 2 } })
        assert.are.equal("EINVAL", err.name)
        -- The producer's own error is the request's; a producer that raises raises.
        _, err = http.request({ method = "POST", url = base, body = function() return nil, { name = "EUP", message = "upstream" } end })
        assert.are.equal("EUP", err.name)
        assert.has_error(function()
            http.request({ method = "POST", url = base, body = function() error("boom", 0) end })
        end, "boom")
        assert.has_error(function()
            http.request({ method = "POST", url = base, body = function() return 5 end })
        end)
        -- An object with a read method: a Lua file here.
        local path = os.tmpname()
        local f = assert(io.open(path, "w"))
        f:write(string.rep("f", 100000))
        f:close()
        f = assert(io.open(path, "rb"))
        res = assert(http.request({ method = "POST", url = base, body = f }))
        f:close()
        os.remove(path)
        assert.are.equal(100000, #json.decode(res.body).body)
        -- Closed descriptors go in the next turns of the loop.
        for _ = 1, 100 do
            if helper.fd_count() <= fds then
                break
            end
            sleep(10)
        end
        assert.is_true(helper.fd_count() <= fds)
        srv:close()
    end)

    it("returns the answer of a server that refuses a body before its end (413)", function()
        local srv, base = start(function(_, res)
            res:finish("taken")
        end, { maxBodySize = 1024 })
        local big = string.rep("x", 20 * 1024 * 1024)
        local res = assert(http.request({ method = "POST", url = base, body = big }))
        assert.are.equal(413, res.status)
        local sent = 0
        res = assert(http.request({ method = "POST", url = base, headers = { ["Content-Length"] = #big }, body = function()
            if sent < #big then
                sent = sent + 1024 * 1024
                return big:sub(1, 1024 * 1024)
            end
        end }))
        assert.are.equal(413, res.status)
        assert.are.equal("taken", assert(http.get(base)).body)
        srv:close()
    end)

    it("lets a proxy pass a body through without holding it", function()
        local upstream, up = start(function(req, res)
            local n = 0
            for piece in req:pieces() do
                n = n + #piece
            end
            res:finish(tostring(n))
        end, { maxBodySize = 16 * 1024 * 1024 })
        local proxy, base = start(function(req, res)
            local r, err = http.request({ method = "POST", url = up, body = req })
            res:finish(r and r.body or err.message)
        end, { maxBodySize = 16 * 1024 * 1024 })
        local big = string.rep("x", 4 * 1024 * 1024)
        local res = assert(http.request({ method = "POST", url = base, body = big }))
        assert.are.equal(tostring(#big), res.body)
        proxy:close()
        upstream:close()
    end)

    -- issue 10, item 12
    it("does not carry credentials to another origin on a redirect", function()
        local target = start(function(req, res)
            res:json({
                host = req.headers.host, auth = req.headers.authorization or false, cookie = req.headers.cookie or false,
                proxy = req.headers["proxy-authorization"] or false, keep = req.headers["x-keep"] or false,
            })
        end)
        local other = "http://127.0.0.1:" .. target.port
        local srv, base, port = start(function(req, res)
            res.status = 302
            res:setHeader("Location", req.path == "/away" and (other .. "/there") or "/here")
            if req.path == "/here" then
                res.status = 200
                return res:finish(req.headers.authorization or "none")
            end
            res:finish()
        end)
        local headers = { Authorization = "Bearer s", Cookie = "a=b", ["Proxy-Authorization"] = "Basic x", ["X-Keep"] = "1" }
        local res = assert(http.request({ url = base .. "/away", headers = headers, redirect = true }))
        assert.are.same({ host = "127.0.0.1:" .. target.port, auth = false, cookie = false, proxy = false, keep = "1" },
            json.decode(res.body))
        headers.Host = "127.0.0.1:" .. port
        res = assert(http.request({ url = base .. "/away", headers = headers, redirect = true }))
        assert.are.equal("127.0.0.1:" .. target.port, json.decode(res.body).host)
        -- The same origin keeps them.
        res = assert(http.request({ url = base .. "/near", headers = headers, redirect = true }))
        assert.are.equal("Bearer s", res.body)
        srv:close()
        target:close()
    end)

    it("turns a POST into a GET on 301, 302 and 303, and keeps it on 307 and 308", function()
        local srv, base = start(function(req, res)
            local code = tonumber(req.path:match("^/r/(%d+)$"))
            if code then
                res.status = code
                res:setHeader("Location", "/echo")
                return res:finish()
            end
            res:finish(table.concat({ req.method, req:body(), req.headers["content-type"] or "-",
                req.headers["content-length"] or "-" }, " "))
        end)
        local expect = { [301] = "GET  - -", [302] = "GET  - -", [303] = "GET  - -",
            [307] = "POST data text/plain 4", [308] = "POST data text/plain 4" }
        for code, body in pairs(expect) do
            local res = assert(http.request({ method = "POST", url = base .. "/r/" .. code, body = "data",
                headers = { ["Content-Type"] = "text/plain" }, redirect = 1 }))
            assert.are.equal(body, res.body, code)
        end
        local res = assert(http.request({ method = "PUT", url = base .. "/r/302", body = "data", redirect = 1 }))
        assert.are.equal("PUT data - 4", res.body)
        res = assert(http.request({ method = "DELETE", url = base .. "/r/303", redirect = 1 }))
        assert.are.equal("GET  - -", res.body)
        -- A streamed body cannot be sent again: a 307 is returned as it is.
        res = assert(http.request({ method = "POST", url = base .. "/r/307", body = function() end, redirect = 1 }))
        assert.are.equal(307, res.status)
        srv:close()
    end)

    it("rejects a malformed status line", function()
        for _, line in ipairs({ "HTTP/1.1 20 OK", "HTTP/1.1 020 OK", "HTTP/1.1 0200 OK", "HTTP/1.1 099 Low", "HTTP/1.1 2000 OK" }) do
            local rs, port = raw_server(line .. "\r\nContent-Length: 0\r\n\r\n")
            local res, err = http.get("http://127.0.0.1:" .. port)
            assert.is_nil(res, line)
            assert.are.equal("EPROTO", err.name)
            rs:close()
        end
        local rs, port = raw_server("HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n")
        assert.are.equal(200, assert(http.get("http://127.0.0.1:" .. port)).status)
        rs:close()
        -- Lines that end in a bare LF (RFC 9112 2.2) are read as CRLF, the status code checked alike.
        rs, port = raw_server("HTTP/1.1 201 Made\nX-A: b\nContent-Length: 2\n\nok")
        local res = assert(http.get("http://127.0.0.1:" .. port))
        assert.are.same({ 201, "Made", "b", "ok" }, { res.status, res.reason, res.headers["x-a"], res.body })
        rs:close()
        rs, port = raw_server("HTTP/1.1 20 OK\nContent-Length: 0\n\n")
        local _, err = http.get("http://127.0.0.1:" .. port)
        assert.are.equal("EPROTO", err.name)
        rs:close()
    end)
end)
