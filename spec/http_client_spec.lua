-- The http client: requests, bodies, the keep-alive pool, redirects and errors.
local http = require "http"
local tcp = require "tcp"

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
        local srv, base = start(function(_, res)
            res:finish("x")
        end)
        local old = http.pool.idleTimeout
        http.pool.idleTimeout = 20
        assert(http.get(base))
        sleep(50)
        assert(http.get(base))
        http.pool.idleTimeout = old
        sleep(20)
        assert.are.equal(1, srv:connections())
        srv:close()
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

    it("has a transport table ready for https", function()
        assert.is_function(http.transports.http.connect)
        assert.is_nil(http.transports.https) -- arrives with the TLS module
    end)
end)
