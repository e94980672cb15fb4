-- The http server: both APIs, the protocol, limits and timeouts, driven by curl, by luaio's
-- own client and by raw bytes over tcp.
local http = require "http"
local tcp = require "tcp"
local process = require "process"
local task = require "task"
local system = require "system"

-- The client keeps idle connections for reuse: each spec ends with none, for the leak check.
after_each(function() http.closeIdle() end)

local function start(handler, opts, seed)
    opts = opts or {}
    opts.port = 0
    local srv = assert((seed and http.serve or http.createServer)(opts, handler))
    return srv, srv.port, "http://127.0.0.1:" .. srv.port
end

local function hello(req, res)
    res:setHeader("Content-Type", "text/plain")
    res:finish("hello")
end

-- Sends raw bytes and reads until the server closes (or `ms` pass); returns what came.
local function raw(port, bytes, ms)
    local sock = assert(tcp.connect(port, "127.0.0.1"))
    sock:settimeouts(ms or 2000, ms or 2000, ms or 2000)
    if bytes then
        assert(sock:write(bytes) == nil)
    end
    local parts = {}
    while true do
        local d, err = sock:read()
        if d then
            parts[#parts + 1] = d
        end
        if err or not d then
            break
        end
    end
    sock:close()
    return table.concat(parts)
end

local function curl(args)
    local cmd = { "curl", "-s", "-S", "--max-time", "5" }
    for _, a in ipairs(args) do
        cmd[#cmd + 1] = a
    end
    local r = assert(process.run(cmd))
    return r.stdout, r.stderr, r.code
end

local function count(s, pat)
    local n = 0
    for _ in s:gmatch(pat) do
        n = n + 1
    end
    return n
end

describe("http server, seed API (http.serve)", function()
    it("runs the seed's hello server with only the require line changed", function()
        local srv, _, base = start(function(request)
            return {
                status = 200,
                headers = { ["Content-Type"] = "text/plain" },
                body = "Hello from Motor! " .. request.method .. " " .. request.path .. " " .. (request.query.id or "-"),
            }
        end, nil, true)
        local out, _, code = curl({ "-i", base .. "/users/123?id=123" })
        assert.are.equal(0, code)
        assert.truthy(out:find("HTTP/1.1 200 OK", 1, true))
        assert.truthy(out:find("Content-Type: text/plain", 1, true))
        assert.truthy(out:find("Hello from Motor! GET /users/123 123", 1, true))
        srv:close()
    end)

    it("gives the handler the body as a string and the lower-cased headers", function()
        local seen, thing
        local srv, _, base = start(function(request)
            seen, thing = request, request.headers["x-thing"]
            return { status = 201, body = "got " .. #request.body }
        end, nil, true)
        local out = curl({ "-X", "POST", "-H", "X-Thing: 1", "--data-binary", "abcdef", base .. "/p" })
        assert.are.equal("got 6", out)
        assert.are.equal("abcdef", seen.body)
        assert.are.equal("1", thing)
        assert.are.equal("1", seen.headers["x-thing"]) -- read once in the handler, they stay
        assert.are.equal("POST", seen.method)
        srv:close()
    end)

    it("applies the seed defaults host 127.0.0.1, port 8080, backlog 128", function()
        local srv = http.serve({}, function()
            return { status = 200, body = "x" }
        end)
        if srv then -- port 8080 may be taken by someone else on this machine
            assert.are.equal(8080, srv.port)
            assert.are.equal("127.0.0.1", srv.host)
            srv:close()
        end
    end)

    it("answers 500 when the handler fails or returns no table, and carries on", function()
        local srv, port = start(function(request)
            if request.path == "/boom" then
                error("boom")
            elseif request.path == "/nil" then
                return nil
            end
            return { body = "fine" }
        end, nil, true)
        local out = raw(port, "GET /boom HTTP/1.1\r\nHost: x\r\n\r\nGET /nil HTTP/1.1\r\nHost: x\r\n\r\n"
            .. "GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert.are.equal(2, count(out, "HTTP/1.1 500"))
        assert.truthy(out:find("fine$"))
        srv:close()
    end)
end)

describe("http server, streaming API (http.createServer)", function()
    it("gives method, path, url, decoded query, headers, version and remote address", function()
        local seen
        local srv, _, base = start(function(req, res)
            seen = { method = req.method, path = req.path, url = req.url, query = req.query, headers = req.headers,
                httpVersion = req.httpVersion, remote = req.remoteAddress, port = req.remotePort }
            res:finish("ok")
        end)
        local out = curl({ "-H", "X-A: 1", "-H", "X-A: 2", "-H", "Cookie: a=1", "-H", "Cookie: b=2",
            base .. "/a%20b?x=1+2&y=%C3%A9&x=3&flag" })
        assert.are.equal("ok", out)
        assert.are.equal("GET", seen.method)
        assert.are.equal("/a%20b", seen.path)
        assert.are.equal("/a%20b?x=1+2&y=%C3%A9&x=3&flag", seen.url)
        assert.are.same({ "1 2", "3" }, seen.query.x)
        assert.are.equal("é", seen.query.y)
        assert.are.equal("", seen.query.flag)
        assert.are.equal("1, 2", seen.headers["x-a"])
        assert.are.equal("a=1; b=2", seen.headers.cookie)
        assert.are.equal("1.1", seen.httpVersion)
        assert.are.equal("127.0.0.1", seen.remote)
        assert.is_number(seen.port)
        srv:close()
    end)

    it("reads the body whole (req:body) and in pieces (req:read), chunked or not", function()
        local srv, _, base = start(function(req, res)
            if req.path == "/whole" then
                local b = assert(req:body())
                res:finish("whole " .. #b .. " " .. b:sub(1, 3))
            else
                local n, pieces = 0, 0
                for piece in req:pieces() do
                    n, pieces = n + #piece, pieces + 1
                end
                res:finish("pieces " .. n)
            end
        end)
        local big = string.rep("x", 300000)
        local f = os.tmpname()
        local h = io.open(f, "w")
        h:write(big)
        h:close()
        assert.are.equal("whole 300000 xxx", curl({ "--data-binary", "@" .. f, base .. "/whole" }))
        assert.are.equal("pieces 300000", curl({ "--data-binary", "@" .. f, base .. "/pieces" }))
        assert.are.equal("whole 300000 xxx",
            curl({ "-H", "Transfer-Encoding: chunked", "--data-binary", "@" .. f, base .. "/whole" }))
        assert.are.equal("pieces 300000",
            curl({ "-H", "Transfer-Encoding: chunked", "--data-binary", "@" .. f, base .. "/pieces" }))
        os.remove(f)
        srv:close()
    end)

    it("streams a chunked response when no length is set, and a fixed one when it is", function()
        local srv, port, base = start(function(req, res)
            if req.path == "/fixed" then
                res:setHeader("Content-Length", "10")
            end
            for i = 1, 5 do
                res:write(tostring(i) .. "a")
            end
            res:finish()
        end)
        assert.are.equal("1a2a3a4a5a", curl({ base .. "/chunked" }))
        assert.are.equal("1a2a3a4a5a", curl({ base .. "/fixed" }))
        local out = raw(port, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert.truthy(out:find("Transfer-Encoding: chunked\r\n", 1, true))
        assert.truthy(out:find("2\r\n1a\r\n", 1, true))
        assert.truthy(out:find("0\r\n\r\n$"))
        out = raw(port, "GET /fixed HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert.falsy(out:find("chunked", 1, true))
        assert.truthy(out:find("\r\n\r\n1a2a3a4a5a$"))
        -- HTTP/1.0 has no chunks: the body ends with the connection.
        out = raw(port, "GET / HTTP/1.0\r\n\r\n")
        assert.falsy(out:find("chunked", 1, true))
        assert.truthy(out:find("Connection: close", 1, true))
        assert.truthy(out:find("\r\n\r\n1a2a3a4a5a$"))
        srv:close()
    end)

    it("sets status and headers, with arrays of values, and ends responses left open", function()
        local srv, port = start(function(req, res)
            if req.path == "/open" then
                res.status = 202
                return
            end
            res:setStatus(201):setHeader("X-Multi", { "a", "b" })
            res:setHeader("content-type", "text/x")
            res:setHeader("Content-Type", "text/y")
            assert.are.equal("text/y", res:getHeader("CONTENT-TYPE"))
            -- Replacing and removing among several: the others keep their values and order.
            res:setHeader("X-A", "1"):setHeader("X-B", "2"):setHeader("X-C", "3"):setHeader("X-D", "4")
            res:setHeader("x-b", "22"):setHeader("X-A", nil):setHeader("X-Gone", "x"):setHeader("X-GONE", nil)
            assert.is_nil(res:getHeader("x-a"))
            assert.are.equal("22", res:getHeader("X-B"))
            assert.are.equal("4", res:getHeader("X-D"))
            assert.has_error(function() res:setHeader(1, "x") end,
                "setHeader: expected a header name (string), got number")
            assert.has_error(function() res:getHeader(nil) end, "getHeader: expected a header name (string), got nil")
            assert.has_error(function() require("luaio.http").headers("not a head") end,
                "headers: not a request head")
            res:send("done")
        end)
        local out = raw(port, "GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /open HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert.truthy(out:find("HTTP/1.1 201 Created\r\n", 1, true))
        assert.truthy(out:find("X-Multi: a\r\nX-Multi: b\r\n", 1, true))
        assert.are.equal(1, count(out, "[Cc]ontent%-[Tt]ype: text/y"))
        assert.are.equal(0, count(out, "text/x"))
        assert.truthy(out:find("X-C: 3\r\nX-D: 4\r\nx-b: 22\r\n", 1, true))
        assert.are.equal(0, count(out, "X%-A:") + count(out, "X%-Gone") + count(out, "X%-B:"))
        assert.truthy(out:find("HTTP/1.1 202 Accepted\r\n", 1, true))
        assert.truthy(out:find("Content-Length: 0\r\n", 1, true))
        srv:close()
    end)

    it("refuses header values with CR or LF (500, nothing injected)", function()
        local srv, port = start(function(_, res)
            res:setHeader("X-Evil", "a\r\nSet-Cookie: x=1")
            res:finish("no")
        end)
        local out = raw(port, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert.truthy(out:find("^HTTP/1.1 500"))
        assert.falsy(out:find("Set-Cookie", 1, true))
        srv:close()
    end)

    it("sends res:json with its content type", function()
        local srv, _, base = start(function(_, res)
            res:json({ ok = true, list = { 1, 2 } }, 200)
        end)
        local out = curl({ "-i", base })
        assert.truthy(out:find("Content-Type: application/json", 1, true))
        local json = require "json"
        assert.are.same({ ok = true, list = { 1, 2 } }, json.decode(out:match("\r\n\r\n(.*)$")))
        srv:close()
    end)
end)

describe("http protocol", function()
    it("keeps 1.1 connections alive, closes 1.0 unless asked, honours Connection: close", function()
        local srv, port = start(hello)
        local out = raw(port, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 300)
        assert.truthy(out:find("^HTTP/1.1 200"))
        assert.falsy(out:find("Connection: close", 1, true))
        out = raw(port, "GET / HTTP/1.0\r\n\r\n")
        assert.truthy(out:find("Connection: close", 1, true))
        out = raw(port, "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 300)
        assert.truthy(out:find("Connection: keep-alive", 1, true))
        out = raw(port, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert.are.equal(1, count(out, "HTTP/1.1 200"))
        assert.truthy(out:find("Connection: close", 1, true))
        srv:close()
    end)

    it("answers pipelined requests in order", function()
        local srv, port = start(function(req, res)
            if req.path == "/slow" then
                sleep(30)
            end
            res:finish(req.path .. ";")
        end)
        local out = raw(port, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n"
            .. "POST /3 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET /4 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        local order = {}
        for p in out:gmatch("\r\n\r\n(/[%w]+);") do
            order[#order + 1] = p
        end
        assert.are.same({ "/slow", "/2", "/3", "/4" }, order)
        srv:close()
    end)

    it("keeps each request's headers its own, read late or after its body (pipelined)", function()
        local kept = {}
        local srv, port = start(function(req, res)
            kept[#kept + 1] = req
            if req.method == "POST" then
                assert.are.equal("abc", req:body())
                assert.are.equal("b", req.headers["x-id"]) -- read after the body: still its own
            end
            res:finish("ok")
        end)
        raw(port, "GET /1 HTTP/1.1\r\nX-Id: a\r\nHost: x\r\n\r\n"
            .. "POST /2 HTTP/1.1\r\nHost: x\r\nX-Id: b\r\nContent-Length: 3\r\n\r\nabc"
            .. "GET /3 HTTP/1.1\r\nX-Id: c\r\nX-Id: d\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert.are.equal(3, #kept)
        -- Read only now, after every request of the connection was parsed and answered.
        assert.are.equal("a", kept[1].headers["x-id"])
        assert.are.equal("x", kept[1].headers.host)
        assert.are.equal("3", kept[2].headers["content-length"])
        assert.are.equal("c, d", kept[3].headers["x-id"])
        assert.are.equal("close", kept[3].headers.connection)
        assert.are.equal("x", kept[3].headers.host)
        assert.are.equal("/3", kept[3].path)
        srv:close()
    end)

    it("handles Expect: 100-continue", function()
        local srv, port, base = start(function(req, res)
            res:finish("len " .. #assert(req:body()))
        end)
        local big = string.rep("y", 2000)
        assert.are.equal("len 2000", curl({ "-H", "Expect: 100-continue", "--data-binary", big, base }))
        local sock = assert(tcp.connect(port, "127.0.0.1"))
        sock:settimeouts(2000, 2000, 2000)
        sock:write("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
        assert.are.equal("HTTP/1.1 100 Continue", sock:readline())
        assert.are.equal("", sock:readline())
        sock:write("abc")
        assert.are.equal("HTTP/1.1 200 OK", sock:readline())
        sock:close()
        -- The seed API reads the body before the handler: 100 Continue comes at once.
        local srv2, port2 = start(function(request)
            return { body = request.body }
        end, nil, true)
        sock = assert(tcp.connect(port2, "127.0.0.1"))
        sock:settimeouts(2000, 2000, 2000)
        sock:write("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
        assert.are.equal("HTTP/1.1 100 Continue", sock:readline())
        sock:close()
        srv:close()
        srv2:close()
    end)

    it("sends no 100 Continue to a handler that answers without reading the body, and closes", function()
        local srv, port, base = start(function(req, res)
            if req.path == "/read" then
                return res:finish("len " .. #assert(req:body()))
            end
            res.status = 401
            res:finish("no")
        end, { maxBodySize = 4 * 1024 * 1024 })
        local sock = assert(tcp.connect(port, "127.0.0.1"))
        sock:settimeouts(2000, 2000, 2000)
        sock:write("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
        assert.are.equal("HTTP/1.1 401 Unauthorized", sock:readline())
        local rest = {}
        while true do
            local d = sock:read()
            if not d then break end
            rest[#rest + 1] = d
        end
        sock:close()
        -- The client may send the body or not (RFC 9110 10.1.1): the connection ends.
        rest = table.concat(rest)
        assert.truthy(rest:find("\r\nConnection: close\r\n", 1, true))
        assert.are.equal("no", rest:match("\r\n\r\n(.*)$"))
        -- curl sends Expect by itself for a large upload: it gets the 401 and sends no body; the
        -- handler that reads gets all of it.
        local file = os.tmpname()
        local f = assert(io.open(file, "wb"))
        f:write(string.rep("z", 2 * 1024 * 1024))
        f:close()
        local out = curl({ "-w", " %{http_code} %{size_upload}", "--data-binary", "@" .. file, base })
        assert.are.equal("no 401 0", out)
        out = curl({ "-w", " %{http_code} %{size_upload}", "--data-binary", "@" .. file, base .. "/read" })
        assert.are.equal("len 2097152 200 2097152", out)
        os.remove(file)
        srv:close()
    end)

    it("answers an Expect other than 100-continue with 417", function()
        local ran = false
        local srv, port = start(function(_, res)
            ran = true
            res:finish("ran")
        end)
        local got = raw(port, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: foo\r\n\r\nabc", 2000)
        assert.are.equal("HTTP/1.1 417 Expectation Failed", got:match("^[^\r]*"))
        got = raw(port, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n"
            .. "Expect: 200-ok\r\n\r\nabc", 2000)
        assert.are.equal("HTTP/1.1 417 Expectation Failed", got:match("^[^\r]*"))
        -- HTTP/1.0 knows no expectations: ignored.
        got = raw(port, "POST / HTTP/1.0\r\nContent-Length: 3\r\nExpect: foo\r\n\r\nabc", 2000)
        assert.are.equal("HTTP/1.1 200 OK", got:match("^[^\r]*"))
        assert.is_true(ran)
        srv:close()
    end)

    it("answers HEAD without a body but with the length", function()
        local srv, port = start(hello)
        local out = raw(port, "HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        local first = out:match("^(.-\r\n\r\n)")
        assert.truthy(first:find("Content-Length: 5", 1, true))
        assert.truthy(out:sub(#first + 1):find("^HTTP/1.1 200"))
        srv:close()
    end)

    it("sends Date and Server headers", function()
        local srv, port = start(hello)
        local out = raw(port, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert.truthy(out:find("\r\nServer: luaio\r\n", 1, true))
        assert.truthy(out:find("\r\nDate: %a%a%a, %d%d %a%a%a %d%d%d%d %d%d:%d%d:%d%d GMT\r\n"))
        srv:close()
    end)

    it("discards an unread body before the next request", function()
        local srv, port = start(hello)
        local out = raw(port, "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
            .. "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert.are.equal(2, count(out, "HTTP/1.1 200"))
        srv:close()
    end)

    it("serves 1,000 sequential keep-alive requests on one connection", function()
        local srv, port = start(hello, { maxRequests = 5000 })
        local sock = assert(tcp.connect(port, "127.0.0.1"))
        sock:settimeouts(2000, 2000, 2000)
        local ok = 0
        for _ = 1, 1000 do
            sock:write("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            local head = sock:readuntil("\r\n\r\n")
            local body = sock:read(5)
            if head and head:find("^HTTP/1.1 200") and body == "hello" then
                ok = ok + 1
            end
        end
        sock:close()
        assert.are.equal(1000, ok)
        srv:close()
    end)

    it("closes after maxRequests", function()
        local srv, port = start(hello, { maxRequests = 2 })
        local out = raw(port, ("GET / HTTP/1.1\r\nHost: x\r\n\r\n"):rep(3))
        assert.are.equal(2, count(out, "HTTP/1.1 200"))
        assert.truthy(out:find("Connection: close", 1, true))
        srv:close()
    end)
end)

describe("http hardening", function()
    it("answers a malformed request with 400 and closes", function()
        local srv, port = start(hello)
        for _, bad in ipairs({ "GET / HTTP/1.1\r\nNoColon\r\n\r\n", "NOT A REQUEST\r\n\r\n", "GET / HTTP/1.1\r\nHost: x\r\n"
            .. "Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", "GET / HTTP/1.1\r\nContent-Length: abc\r\n\r\n" }) do
            local out = raw(port, bad)
            assert.truthy(out:find("^HTTP/1.1 400 Bad Request"), bad)
            assert.truthy(out:find("Connection: close", 1, true))
        end
        srv:close()
    end)

    it("answers bad chunked framing with 400 at once; the handler sees EPROTO, its response goes nowhere", function()
        local seen, sent
        local srv, port = start(function(req, res)
            local b, err = req:body()
            seen = b or err.name
            sent = res:finish("too late")
        end)
        local out = raw(port, "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
        assert.truthy(out:find("^HTTP/1.1 400 Bad Request"))
        assert.truthy(out:find("Connection: close", 1, true))
        assert.falsy(out:find("too late", 1, true))
        assert.are.equal("EPROTO", seen)
        assert.are.equal("EPROTO", sent and sent.name)
        srv:close()
    end)

    it("limits the head size: at the limit it passes, one byte past it is 431", function()
        local limit = 1024
        local srv, port = start(hello, { maxHeaderSize = limit })
        local base = "GET / HTTP/1.1\r\nHost: x\r\nX: "
        local fill = limit - #base - 4
        local out = raw(port, base .. ("a"):rep(fill) .. "\r\n\r\n", 500)
        assert.truthy(out:find("^HTTP/1.1 200"))
        out = raw(port, base .. ("a"):rep(fill + 1) .. "\r\n\r\n")
        assert.truthy(out:find("^HTTP/1.1 431"))
        -- A head that never ends is refused as soon as it passes the limit.
        out = raw(port, base .. ("a"):rep(limit * 2))
        assert.truthy(out:find("^HTTP/1.1 431"))
        -- Too many header lines are refused too.
        out = raw(port, "GET / HTTP/1.1\r\n" .. ("A: b\r\n"):rep(101) .. "\r\n")
        assert.truthy(out:find("^HTTP/1.1 431"))
        srv:close()
    end)

    it("limits the body size: at the limit it passes, one byte past it is 413", function()
        local srv, port = start(function(req, res)
            local b, err = req:body()
            res:finish(b and ("ok " .. #b) or err.name)
        end, { maxBodySize = 100 })
        local out = raw(port, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\nConnection: close\r\n\r\n" .. ("z"):rep(100))
        assert.truthy(out:find("ok 100$"))
        out = raw(port, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n\r\n" .. ("z"):rep(101))
        assert.truthy(out:find("^HTTP/1.1 413"))
        -- A chunked body is refused by the first chunk that announces too much: 413 at once, the
        -- handler sees E2BIG, the connection closes.
        out = raw(port, "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n65\r\n" .. ("z"):rep(101) .. "\r\n0\r\n\r\n")
        assert.truthy(out:find("^HTTP/1.1 413"))
        assert.falsy(out:find("E2BIG", 1, true))
        assert.truthy(out:find("Connection: close", 1, true))
        local srv2, port2 = start(function(r)
            return { body = r.body }
        end, { maxBodySize = 100 }, true)
        out = raw(port2, "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n65\r\n" .. ("z"):rep(101) .. "\r\n0\r\n\r\n")
        assert.truthy(out:find("^HTTP/1.1 413"))
        srv:close()
        srv2:close()
    end)

    it("times out a head trickled byte by byte (slowloris) with 408", function()
        local srv, port = start(hello, { headerTimeout = 300 })
        local sock = assert(tcp.connect(port, "127.0.0.1"))
        sock:settimeouts(3000, 3000, 3000)
        local req = "GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " .. ("s"):rep(40) .. "\r\n\r\n"
        local t0 = os.clock()
        local closed_at
        local reader = task.spawn(function()
            local d = sock:read()
            local all = d or ""
            while d do
                d = sock:read()
                all = all .. (d or "")
            end
            closed_at = true
            return all
        end)
        for i = 1, #req do
            if closed_at or sock:write(req:sub(i, i)) then
                break
            end
            sleep(20)
        end
        local _, got = reader:join()
        assert.truthy(got:find("^HTTP/1.1 408"))
        sock:close()
        srv:close()
        assert.truthy(os.clock() - t0 < 5)
    end)

    it("closes idle keep-alive connections after keepAliveTimeout", function()
        local srv, port = start(hello, { keepAliveTimeout = 100 })
        local sock = assert(tcp.connect(port, "127.0.0.1"))
        sock:settimeouts(2000, 2000, 2000)
        sock:write("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert.truthy(sock:readuntil("\r\n\r\n"))
        assert.are.equal("hello", sock:read(5))
        local d, err = sock:read()
        assert.is_nil(d)
        assert.are.equal("EOF", err.name)
        sock:close()
        srv:close()
    end)

    it("closes each idle connection at its own keepAliveTimeout (one sweep timer, in order)", function()
        -- The tolerance above each close (half a second) is what a loaded CI machine under ASan can
        -- add; the lower bounds are exact. b opens 600 ms after a, so a closed at b's time fails.
        local srv, port = start(hello, { keepAliveTimeout = 1000 })
        local function open()
            local sock = assert(tcp.connect(port, "127.0.0.1"))
            sock:settimeouts(5000, 5000, 5000)
            sock:write("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert.truthy(sock:readuntil("\r\n\r\n"))
            assert.are.equal("hello", sock:read(5))
            return sock
        end
        local a = open()
        local ta0 = system.monotime()
        sleep(600)
        local b = open()
        local tb0 = system.monotime()
        -- Each closes about 1000 ms after its request: a first, b about 600 ms later.
        local d, err = a:read()
        assert.is_nil(d)
        assert.are.equal("EOF", err.name)
        local ta = system.monotime() - ta0
        d, err = b:read()
        assert.is_nil(d)
        assert.are.equal("EOF", err.name)
        local tb = system.monotime() - tb0
        assert.is_true(ta >= 0.99 and ta < 1.5, "a closed after " .. ta)
        assert.is_true(tb >= 0.99 and tb < 1.5, "b closed after " .. tb)
        a:close()
        b:close()
        srv:close()
    end)

    it("holds no task while keep-alive connections wait for their next request", function()
        local core = require "luaio.core"
        local srv, port = start(hello)
        local before = core.tasks()
        local socks = {}
        for i = 1, 30 do
            local sock = assert(tcp.connect(port, "127.0.0.1"))
            sock:settimeouts(2000, 2000, 2000)
            sock:write("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert.truthy(sock:readuntil("\r\n\r\n"))
            assert.are.equal("hello", sock:read(5))
            socks[i] = sock
        end
        assert.are.equal(30, srv:connections())
        -- A handler's task ends once its response is written (the client has read it by now).
        assert.is_true(require("helper").wait_for(function() return core.tasks() == before end))
        -- and each still answers its next request
        for _, sock in ipairs(socks) do
            sock:write("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert.truthy(sock:readuntil("\r\n\r\n"))
            assert.are.equal("hello", sock:read(5))
            sock:close()
        end
        srv:close()
    end)

    it("times out a request whose body comes too slowly (requestTimeout, 408)", function()
        local srv, port = start(function(req, res)
            local b, err = req:body()
            res:finish(b or err.name)
        end, { requestTimeout = 200 }, false)
        local srv2, port2 = start(function(r)
            return { body = r.body }
        end, { requestTimeout = 200 }, true)
        local out = raw(port2, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab")
        assert.truthy(out:find("^HTTP/1.1 408"))
        out = raw(port, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab")
        assert.truthy(out:find("ETIMEDOUT", 1, true))
        srv:close()
        srv2:close()
    end)

    it("survives a client that disconnects mid-body; other requests go on", function()
        local errs = {}
        local srv, port, base = start(function(req, res)
            local b, err = req:body()
            if not b then
                errs[#errs + 1] = err.name
                return
            end
            res:finish("ok")
        end)
        local sock = assert(tcp.connect(port, "127.0.0.1"))
        sock:write("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
        sleep(30)
        sock:close()
        assert.is_true(require("helper").wait_for(function() return #errs == 1 end))
        local res = assert(http.request({ method = "POST", url = base, body = "x" }))
        assert.are.equal("ok", res.body)
        srv:close()
    end)

    it("keeps one handler's error from affecting another request", function()
        local srv, port, base = start(function(req, res)
            if req.path == "/fail" then
                error("handler failure")
            elseif req.path == "/late" then
                res:write("partial")
                error("after the head")
            end
            res:finish("fine")
        end)
        local out = raw(port, "GET /fail HTTP/1.1\r\nHost: x\r\n\r\n")
        assert.truthy(out:find("^HTTP/1.1 500"))
        out = raw(port, "GET /late HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert.truthy(out:find("partial", 1, true))
        assert.falsy(out:find("0\r\n\r\n", 1, true)) -- closed mid-response: the client sees it truncated
        assert.are.equal(1, count(out, "HTTP/1.1 "))
        assert.are.equal("fine", assert(http.get(base)).body)
        srv:close()
    end)

    it("reports a handler's error table by its name and message", function()
        local helper = require "helper"
        local path = helper.script([[
local http = require "http"
local srv = assert(http.createServer({ port = 0 }, function() error({ name = "EX", message = "described" }) end))
print(assert(http.get("http://127.0.0.1:" .. srv.port .. "/")).status)
srv:close()
]])
        local out, err, status = helper.run(path)
        assert.are.equal(0, status, err)
        assert.are.equal("500\n", out)
        assert.matches("luaio: http handler: EX: described\nstack traceback:", err, 1, true)
    end)

    it("rejects bad options and handlers", function()
        assert.has_error(function()
            http.createServer({ port = 0, bogus = 1 }, hello)
        end, "http.createServer: unknown option 'bogus'")
        assert.has_error(function()
            http.createServer({ port = 0 }, 42)
        end)
        assert.has_error(function()
            http.createServer({ port = 0, maxHeaderSize = 1 }, hello)
        end)
        assert.has_error(function()
            http.serve({ port = "x" }, hello)
        end)
    end)

    it("returns an error table when the port is taken", function()
        local srv, port = start(hello)
        local s2, err = http.createServer({ port = port }, hello)
        assert.is_nil(s2)
        assert.are.equal("EADDRINUSE", err.name)
        srv:close()
    end)
end)

describe("http graceful close", function()
    it("stops accepting and lets requests in progress finish", function()
        local started = false
        local srv, port, base = start(function(req, res)
            if req.path == "/slow" then
                started = true
                sleep(150)
            end
            res:finish("done " .. req.path)
        end)
        local idle = assert(tcp.connect(port, "127.0.0.1"))
        idle:settimeouts(2000, 2000, 2000)
        idle:write("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert.truthy(idle:readuntil("\r\n\r\n"))
        assert.are.equal("done /", idle:read(6))
        local slow = task.spawn(function()
            return http.get(base .. "/slow")
        end)
        assert.is_true(require("helper").wait_for(function() return started end))
        srv:close()
        local ok, res = slow:join()
        assert.is_true(ok)
        assert.are.equal("done /slow", res.body)
        assert.are.equal("close", res.headers.connection)
        local d, err = idle:read()
        assert.is_nil(d)
        assert.are.equal("EOF", err.name)
        idle:close()
        local _, cerr = tcp.connect(port, "127.0.0.1")
        assert.are.equal("ECONNREFUSED", cerr.name)
    end)
end)
