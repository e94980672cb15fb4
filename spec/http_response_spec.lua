-- The http server's responses: what a handler may send, framing that a handler cannot break,
-- and slow readers. Each framing case runs on one keep-alive connection read by a raw client
-- that parses responses strictly, so a desync (bytes of one response read as the next) fails.
local http = require "http"
local tcp = require "tcp"
local json = require "json"
local process = require "process"
local helper = require "helper"

local function start(handler, opts, seed)
    opts = opts or {}
    opts.port = 0
    local srv = assert((seed and http.serve or http.createServer)(opts, handler))
    return srv, srv.port
end

local function connect(port)
    local sock = assert(tcp.connect(port, "127.0.0.1"))
    sock:settimeouts(2000, 2000, 2000)
    return sock
end

-- Reads one response strictly (status line, fields, a body framed by Content-Length, chunked or
-- by the close); returns {status =, headers = {lower-case name = value}, body =} or nil, why.
local function read_response(sock, head_request)
    local line, err = sock:readline()
    if not line then
        return nil, "no status line: " .. tostring(err and err.name)
    end
    local status = line:match("^HTTP/1%.[01] (%d%d%d) ")
    if not status then
        return nil, "bad status line: " .. line
    end
    local r = { status = tonumber(status), headers = {} }
    while true do
        local l = assert(sock:readline())
        if l == "" then
            break
        end
        local name, value = l:match("^([^:]+): (.*)$")
        assert(name, "bad header line: " .. l)
        name = name:lower()
        assert(r.headers[name] == nil, "repeated header " .. name)
        r.headers[name] = value
    end
    local h = r.headers
    assert(not (h["content-length"] and h["transfer-encoding"]), "both Content-Length and Transfer-Encoding")
    if head_request or r.status == 204 or r.status == 304 or r.status < 200 then
        r.body = ""
    elseif h["transfer-encoding"] then
        assert(h["transfer-encoding"] == "chunked", "transfer-encoding " .. h["transfer-encoding"])
        local parts = {}
        while true do
            local size = tonumber(assert(sock:readline()), 16)
            assert(size, "bad chunk size")
            if size == 0 then
                assert(sock:readline() == "")
                break
            end
            parts[#parts + 1] = assert(sock:read(size))
            assert(sock:read(2) == "\r\n", "chunk not followed by CRLF")
        end
        r.body = table.concat(parts)
    elseif h["content-length"] then
        local n = tonumber(h["content-length"])
        assert(n and h["content-length"]:match("^%d+$"), "bad Content-Length " .. h["content-length"])
        r.body = n > 0 and assert(sock:read(n)) or ""
    else
        local parts = {}
        while true do
            local d = sock:read()
            if not d then
                break
            end
            parts[#parts + 1] = d
        end
        r.body = table.concat(parts)
        r.closed = true
    end
    return r
end

-- After the responses that were expected: the connection is closed with no byte more.
local function assert_closed(sock)
    local d, err = sock:read()
    assert.is_nil(d)
    assert.is_truthy(err.name == "EOF" or err.name == "ECONNRESET", err.name)
end

local GET = "GET %s HTTP/1.1\r\nHost: x\r\n\r\n"

-- Sends GET path then GET /next on one connection; returns the first response and the second
-- (nil and why when the server closed after the first: that is no desync).
local function exchange(port, path)
    local sock = connect(port)
    assert(sock:write(GET:format(path) .. GET:format("/next")) == nil)
    local r1 = assert(read_response(sock))
    local r2, why = nil, "closed"
    if not r1.closed and r1.headers.connection ~= "close" then
        r2, why = read_response(sock)
    end
    sock:close()
    return r1, r2, why
end

-- Runs a server script in a child luaio (it prints its port); returns the child and the port.
local function child_server(src)
    local path = helper.script(src)
    local child = assert(process.spawn(helper.luaio, { path }, { stdio = { "ignore", "pipe", "pipe" } }))
    child.stdout:setTimeout(5000)
    local port = tonumber(assert(child.stdout:readline()))
    return child, port, path
end

local function stop_child(child, path)
    child:kill()
    child:wait()
    local log = child.stderr:read(1e6) or ""
    child.stdout:close()
    child.stderr:close()
    os.remove(path)
    return log
end

describe("http.serve responses", function()
    local function seed_server()
        return start(function(request)
            local p = request.path
            if p == "/next" then
                return { body = "next" }
            elseif p == "/crlf" then
                return { headers = { ["X-Evil"] = "a\r\nSet-Cookie: x=1" }, body = "no" }
            elseif p == "/lf" then
                return { headers = { ["X-Evil"] = "a\nb" }, body = "no" }
            elseif p == "/numbers" then
                return { body = { 1, 2 } }
            elseif p == "/strings" then
                return { body = { "ab", "", "cd" } }
            elseif p == "/big" then
                return { body = { ("x"):rep(3000), ("y"):rep(3000) } }
            elseif p == "/999" then
                return { status = 999, body = "no" }
            elseif p == "/100" then
                return { status = 100 }
            elseif p == "/fraction" then
                return { status = 200.5, body = "no" }
            elseif p == "/boolbody" then
                return { body = true }
            elseif p == "/headers" then
                return { headers = "nope", body = "no" }
            elseif p == "/number" then
                return 42
            end
            return { status = 404 }
        end, nil, true)
    end

    -- A refused response is a 500; the next request on the connection is answered as it should
    -- be, or not at all when the 500 closed the connection.
    local function refused(r1, r2)
        assert.are.equal(500, r1.status)
        if r1.headers.connection == "close" then
            assert.is_nil(r2)
        else
            assert.are.equal("next", r2.body)
        end
    end

    it("answers 500 to a header value with CR or LF", function()
        local srv, port = seed_server()
        for _, path in ipairs { "/crlf", "/lf" } do
            local r1, r2 = exchange(port, path)
            refused(r1, r2)
            assert.is_nil(r1.headers["set-cookie"])
            assert.is_nil(r1.headers["x-evil"])
        end
        srv:close()
    end)

    it("sends an array of strings as the body and answers 500 to any other body", function()
        local srv, port = seed_server()
        local r1, r2 = exchange(port, "/strings")
        assert.are.same({ 200, "abcd", "4" }, { r1.status, r1.body, r1.headers["content-length"] })
        assert.are.equal("next", r2.body)
        r1, r2 = exchange(port, "/big")
        assert.are.equal(("x"):rep(3000) .. ("y"):rep(3000), r1.body)
        assert.are.equal("next", r2.body)
        for _, path in ipairs { "/numbers", "/boolbody", "/headers", "/number" } do
            r1, r2 = exchange(port, path)
            refused(r1, r2)
            assert.falsy(r1.body:find("table: ", 1, true))
        end
        srv:close()
    end)

    it("answers 500 to a status that is not an integer from 200 to 599", function()
        local srv, port = seed_server()
        for _, path in ipairs { "/999", "/100", "/fraction" } do
            local r1, r2 = exchange(port, path)
            refused(r1, r2)
        end
        srv:close()
    end)

    it("logs the reason of each refused response", function()
        local child, port, path = child_server([[
            local http = require "http"
            local srv = assert(http.serve({port = 0}, function(request)
                local p = request.path
                if p == "/status" then return {status = 999} end
                if p == "/body" then return {body = {1, 2}} end
                if p == "/crlf" then return {headers = {["X-A"] = "a\r\nb"}} end
                return false
            end))
            print(srv.port)
            io.stdout:flush()
        ]])
        for _, p in ipairs { "/status", "/body", "/crlf", "/false" } do
            local r = exchange(port, p)
            assert.are.equal(500, r.status)
        end
        local log = stop_child(child, path)
        assert.truthy(log:find("status must be an integer from 200 to 599, got 999", 1, true), log)
        assert.truthy(log:find("body[1] must be a string, got number", 1, true), log)
        assert.truthy(log:find("header 'X-A' contains CR, LF or NUL", 1, true), log)
        assert.truthy(log:find("returned boolean instead of a response table", 1, true), log)
    end)

    it("gives a request table that holds only its fields (json.encode works)", function()
        local seen
        local srv, port = start(function(request)
            local keys = {}
            for k in pairs(request) do
                keys[#keys + 1] = k
            end
            table.sort(keys)
            local before = table.concat(keys, ",")
            local h = request.headers["x-a"]
            local encoded = assert(json.encode(request))
            seen = { before, h, json.decode(encoded), request }
            return { body = encoded }
        end, nil, true)
        local sock = connect(port)
        assert(sock:write("POST /p?q=1 HTTP/1.1\r\nHost: x\r\nX-A: b\r\nContent-Length: 2\r\n\r\nhi") == nil)
        local r = assert(read_response(sock))
        sock:close()
        assert.are.equal(200, r.status)
        assert.are.equal("body,httpVersion,method,path,url", seen[1])
        assert.are.equal("b", seen[2])
        assert.are.same({ method = "POST", url = "/p?q=1", path = "/p", httpVersion = "1.1", body = "hi",
            headers = { host = "x", ["x-a"] = "b", ["content-length"] = "2" } }, seen[3])
        assert.are.equal("b", seen[4].headers["x-a"]) -- read in the handler, they stay
        assert.are.equal("1", seen[4].query.q)
        srv:close()
    end)

    it("raises a clear error when a request's headers are first read after its response", function()
        local kept
        local srv, port = start(function(request)
            kept = request
            return { body = "ok" }
        end, nil, true)
        local sock = connect(port)
        assert(sock:write(GET:format("/")) == nil)
        assert.are.equal("ok", assert(read_response(sock)).body)
        sock:close()
        local ok, err = pcall(function()
            return kept.headers
        end)
        assert.is_false(ok)
        assert.truthy(tostring(err):find("read them in the handler", 1, true))
        srv:close()
    end)
end)

describe("http request bodies read in pieces", function()
    it("answers 413 to a chunked body over maxBodySize read with req:pieces()", function()
        local caught
        local srv, port = start(function(req, res)
            if req.path == "/caught" then
                local ok, err = pcall(function()
                    for _ in req:pieces() do
                    end
                end)
                caught = not ok and err
                return res:finish("caught")
            end
            local n = 0
            for piece in req:pieces() do
                n = n + #piece
            end
            res:finish(tostring(n))
        end, { maxBodySize = 1000 })
        local chunk = ("a"):rep(600)
        local body = ("%x\r\n%s\r\n"):format(#chunk, chunk):rep(3) .. "0\r\n\r\n"
        local req = "POST /%s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        local sock = connect(port)
        assert(sock:write(req:format("all") .. body) == nil)
        local r = assert(read_response(sock))
        assert.are.equal(413, r.status)
        assert.are.equal("close", r.headers.connection)
        assert_closed(sock)
        sock:close()
        -- Within the limit the same handler reads it all.
        sock = connect(port)
        assert(sock:write(req:format("all") .. ("%x\r\n%s\r\n0\r\n\r\n"):format(#chunk, chunk)) == nil)
        r = assert(read_response(sock))
        assert.are.same({ 200, "600" }, { r.status, r.body })
        sock:close()
        -- A handler that catches it gets the E2BIG error table (the client has its 413 already).
        sock = connect(port)
        assert(sock:write(req:format("caught") .. body) == nil)
        r = assert(read_response(sock))
        assert.are.equal(413, r.status)
        assert_closed(sock)
        sock:close()
        assert.are.equal("E2BIG", caught.name)
        srv:close()
    end)
end)

describe("http response framing is luaio's", function()
    local function framing_server()
        return start(function(req, res)
            local p = req.path
            if p == "/next" then
                return res:finish("next")
            elseif p == "/long-finish" then -- Content-Length 5, an 11-byte body
                res:setHeader("Content-Length", 5)
                return res:finish("hello world")
            elseif p == "/long-write" then
                res:setHeader("Content-Length", "5")
                res:write("abc")
                return res:finish("defgh")
            elseif p == "/short-finish" then
                res:setHeader("Content-Length", 50)
                return res:finish("hello")
            elseif p == "/short-write" then
                res:setHeader("Content-Length", 50)
                res:write("hello")
                return res:finish()
            elseif p == "/short-return" then
                res:setHeader("Content-Length", 50)
                res:write("hello") -- and the handler returns without finishing
                return
            elseif p == "/exact" then
                res:setHeader("content-length", "11")
                res:write("hello ")
                return res:finish("world")
            elseif p == "/te-finish" then
                res:setHeader("Transfer-Encoding", "chunked")
                return res:finish("x")
            elseif p == "/te-write" then
                res:setHeader("Transfer-Encoding", "Chunked")
                res:write("ab")
                return res:finish("c")
            elseif p == "/te-gzip" then
                res:setHeader("Transfer-Encoding", "gzip")
                return res:finish("x")
            elseif p == "/te-and-length" then
                res:setHeader("Transfer-Encoding", "chunked")
                res:setHeader("Content-Length", "1")
                return res:finish("x")
            elseif p:match("^/length/") then
                local v = p:match("^/length/(.*)$")
                res:setHeader("Content-Length", v == "table" and { "1", "1" } or tonumber(v) or v)
                return res:finish("x")
            elseif p:match("^/status/") then
                res.status = tonumber(p:match("^/status/(%d+)$"))
                return res:finish("x")
            elseif p == "/inform" then
                assert(res:inform(103, { Link = "</a.css>; rel=preload" }) == nil)
                return res:finish("x")
            elseif p == "/inform-101" then
                res:inform(101, {})
                return res:finish("x")
            elseif p == "/close" then
                res:setHeader("Connection", "close")
                return res:finish("bye")
            elseif p == "/keep-alive" then
                res:setHeader("Connection", "keep-alive")
                return res:finish("kept")
            elseif p == "/upgrade" then
                local sock = assert(res:_upgrade({ Upgrade = "echo" }))
                while true do
                    local d = sock:read()
                    if not d then
                        break
                    end
                    sock:write(d)
                end
                return sock:close()
            elseif p == "/head-length" then
                res:setHeader("Content-Length", 1234)
                return res:finish()
            end
            res.status = 404
            res:finish()
        end)
    end

    local srv, port

    before_each(function()
        srv, port = framing_server()
    end)

    after_each(function()
        srv:close()
    end)

    it("never sends more bytes than the Content-Length says", function()
        local r1, r2 = exchange(port, "/long-finish")
        assert.are.same({ 500, "close" }, { r1.status, r1.headers.connection })
        assert.is_nil(r2)
        -- Streamed: the head and "abc" are out; the write that goes past the length raises,
        -- and the connection closes with the body short (nothing of the next response).
        local sock = connect(port)
        assert(sock:write(GET:format("/long-write") .. GET:format("/next")) == nil)
        local line = assert(sock:readline())
        assert.are.equal("HTTP/1.1 200 OK", line)
        repeat
            line = assert(sock:readline())
        until line == ""
        local rest, err = sock:read(100)
        assert.are.same({ "abc", "EOF" }, { rest, err and err.name })
        sock:close()
    end)

    it("closes the connection when fewer bytes than the Content-Length were sent", function()
        local r1 = exchange(port, "/short-finish")
        assert.are.same({ 500, "close" }, { r1.status, r1.headers.connection })
        for _, path in ipairs { "/short-write", "/short-return" } do
            local sock = connect(port)
            assert(sock:write(GET:format(path) .. GET:format("/next")) == nil)
            local line
            repeat
                line = assert(sock:readline())
            until line == ""
            local rest, err = sock:read(50)
            assert.are.same({ "hello", "EOF" }, { rest, err and err.name }, path)
            sock:close()
        end
        local r2
        r1, r2 = exchange(port, "/exact")
        assert.are.same({ 200, "hello world", "11" }, { r1.status, r1.body, r1.headers["content-length"] })
        assert.are.equal("next", r2.body)
    end)

    it("rejects a Content-Length that is not one number of bytes", function()
        for _, v in ipairs { "abc", "-1", "1.5", "1,2", "table", "" } do
            local r1, r2 = exchange(port, "/length/" .. v)
            assert.are.same({ 500, "close" }, { r1.status, r1.headers.connection }, v)
            assert.is_nil(r2)
        end
        local r1, r2 = exchange(port, "/length/1")
        assert.are.same({ 200, "x", "1" }, { r1.status, r1.body, r1.headers["content-length"] })
        assert.are.equal("next", r2.body)
    end)

    it("applies a handler's Transfer-Encoding: chunked itself, and no other", function()
        local r1, r2 = exchange(port, "/te-finish")
        assert.are.same({ 200, "x", "1" }, { r1.status, r1.body, r1.headers["content-length"] })
        assert.is_nil(r1.headers["transfer-encoding"])
        assert.are.equal("next", r2.body)
        r1, r2 = exchange(port, "/te-write")
        assert.are.same({ "abc", "chunked" }, { r1.body, r1.headers["transfer-encoding"] })
        assert.are.equal("next", r2.body)
        for _, path in ipairs { "/te-gzip", "/te-and-length" } do
            r1, r2 = exchange(port, path)
            assert.are.same({ 500, "close" }, { r1.status, r1.headers.connection }, path)
            assert.is_nil(r2)
        end
    end)

    it("rejects 1xx and 101 as final statuses; res:inform sends informational responses", function()
        for _, st in ipairs { 100, 101, 103, 199, 600, 999 } do
            local r1, r2 = exchange(port, "/status/" .. st)
            assert.are.same({ 500, "close" }, { r1.status, r1.headers.connection }, st)
            assert.is_nil(r2)
        end
        local sock = connect(port)
        assert(sock:write(GET:format("/inform") .. GET:format("/next")) == nil)
        local hints = assert(read_response(sock))
        assert.are.same({ 103, "</a.css>; rel=preload" }, { hints.status, hints.headers.link })
        local final = assert(read_response(sock))
        assert.are.same({ 200, "x" }, { final.status, final.body })
        assert.are.equal("next", assert(read_response(sock)).body)
        sock:close()
        -- Not to an HTTP/1.0 client (RFC 9110 15.2).
        sock = connect(port)
        assert(sock:write("GET /inform HTTP/1.0\r\n\r\n") == nil)
        final = assert(read_response(sock))
        assert.are.same({ 200, "x" }, { final.status, final.body })
        sock:close()
        local r1, r2 = exchange(port, "/inform-101")
        assert.are.same({ 500, "close" }, { r1.status, r1.headers.connection })
        assert.is_nil(r2)
    end)

    it("sends 101 only through the upgrade path, which hands the socket over", function()
        local sock = connect(port)
        assert(sock:write("GET /upgrade HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nhello") == nil)
        local r = assert(read_response(sock))
        assert.are.same({ 101, "echo", "Upgrade" }, { r.status, r.headers.upgrade, r.headers.connection })
        assert.are.equal("hello", sock:read(5)) -- the bytes after the request went to the new owner
        assert(sock:write("again") == nil)
        assert.are.equal("again", sock:read(5))
        sock:close()
        -- A request that did not ask for it: a 500, and the connection goes on HTTP's way.
        local r1, r2 = exchange(port, "/upgrade")
        assert.are.same({ 500, "close" }, { r1.status, r1.headers.connection })
        assert.is_nil(r2)
    end)

    it("owns the Connection field: a handler's close closes, and it is sent once", function()
        local r1, r2, why = exchange(port, "/close")
        assert.are.same({ "bye", "close" }, { r1.body, r1.headers.connection })
        assert.is_nil(r2, why)
        r1, r2 = exchange(port, "/keep-alive")
        assert.are.equal("kept", r1.body)
        assert.is_nil(r1.headers.connection)
        assert.are.equal("next", r2.body)
    end)

    it("answers HEAD with the handler's Content-Length and no body", function()
        local sock = connect(port)
        assert(sock:write("HEAD /head-length HTTP/1.1\r\nHost: x\r\n\r\n" .. GET:format("/next")) == nil)
        local r1 = assert(read_response(sock, true))
        assert.are.same({ 200, "1234" }, { r1.status, r1.headers["content-length"] })
        assert.are.equal("next", assert(read_response(sock)).body)
        sock:close()
    end)
end)

describe("http slow readers", function()
    local function rss_kb()
        local status = assert(helper.read("/proc/self/status"))
        return tonumber(status:match("VmRSS:%s+(%d+) kB"))
    end

    local function wait_for(pred, ms)
        for _ = 1, (ms or 5000) / 10 do
            if pred() then
                return true
            end
            sleep(10)
        end
        return pred()
    end

    it("sends one shared body to 20 stuck clients without a copy each, and drops them after sendTimeout", function()
        local big = ("x"):rep(50 * 1024 * 1024)
        local started, results = 0, {}
        local srv, port = start(function(_, res)
            started = started + 1
            local r = res:finish(big)
            results[#results + 1] = r or "done"
        end, { sendTimeout = 400 })
        collectgarbage()
        local before = rss_kb()
        local clients = {}
        for i = 1, 20 do
            clients[i] = connect(port)
            assert(clients[i]:write(GET:format("/")) == nil) -- and never read
        end
        assert.is_true(wait_for(function() return started == 20 end))
        sleep(100) -- every response is queued by now
        local grown = rss_kb() - before
        assert.is_true(grown < 25 * 1024, ("RSS grew by %d kB for 20 clients"):format(grown))
        -- No progress for sendTimeout: each write fails and each connection is closed.
        assert.is_true(wait_for(function() return srv:connections() == 0 end, 3000),
            srv:connections() .. " connections left")
        assert.are.equal(20, #results)
        for _, r in ipairs(results) do
            assert.are.equal("ETIMEDOUT", type(r) == "table" and r.name or r)
        end
        for _, c in ipairs(clients) do
            c:close()
        end
        srv:close()
    end)

    it("drops a stuck client of http.serve after sendTimeout", function()
        local big = ("y"):rep(16 * 1024 * 1024)
        local srv, port = start(function()
            return { body = big }
        end, { sendTimeout = 200 }, true)
        local c = connect(port)
        assert(c:write(GET:format("/")) == nil)
        assert.is_true(wait_for(function() return srv:connections() == 1 end))
        assert.is_true(wait_for(function() return srv:connections() == 0 end, 3000))
        c:close()
        srv:close()
    end)

    it("keeps a slow reader that makes progress: sendTimeout is the time without progress", function()
        local big = ("z"):rep(32 * 1024 * 1024)
        local result
        local srv, port = start(function(_, res)
            result = res:finish(big) or "done"
        end, { sendTimeout = 1500 })
        local c = connect(port)
        assert(c:write(GET:format("/")) == nil)
        -- Reads 2 MiB every 200 ms: the whole write takes about twice sendTimeout, and a loaded
        -- machine has 1.3 s of slack between two reads.
        local got, t0 = 0, os.time()
        while result == nil and os.time() - t0 < 30 do
            sleep(200)
            local need = 2 * 1024 * 1024
            while need > 0 do
                local d = assert(c:read(math.min(need, 65536)))
                need = need - #d
                got = got + #d
            end
        end
        assert.are.equal("done", result)
        assert.is_true(got > 16 * 1024 * 1024)
        c:close()
        srv:close()
    end)
end)

describe("stream write timeouts", function()
    it("count the time without progress, not the whole write (tcp write_timeout)", function()
        local got, done = 0, false
        local srv = assert(tcp.createServer(0, function(sock)
            -- Reads 1 MiB every 200 ms.
            while got < 12 * 1024 * 1024 do
                sleep(200)
                local need = 1024 * 1024
                while need > 0 do
                    local d = sock:read(math.min(need, 65536))
                    if not d then
                        return
                    end
                    need = need - #d
                    got = got + #d
                end
            end
            while not done do -- and stops reading
                sleep(10)
            end
        end, { host = "127.0.0.1" }))
        local c = assert(tcp.connect(srv:address().port, "127.0.0.1"))
        c:settimeouts(0, 1200, 0)
        -- 12 MiB at about 5 MiB/s: over two seconds (twice the timeout), with progress every 200 ms
        -- (a loaded machine has a second of slack).
        assert.is_nil(c:write(("w"):rep(12 * 1024 * 1024)))
        -- A peer that stops reading: the write fails after about the timeout, and later ones too.
        local err
        for _ = 1, 64 do
            err = c:write(("s"):rep(1024 * 1024))
            if err then
                break
            end
        end
        assert.are.equal("ETIMEDOUT", err and err.name)
        assert.are.equal("ETIMEDOUT", c:write("more").name)
        done = true
        c:close()
        srv:close()
    end)
end)

describe("res:json", function()
    it("raises at the handler's line, named res:json, for a value JSON cannot hold", function()
        local seen
        local srv, port = start(function(_, res)
            local ok, err = pcall(function() res:json({ f = function() end }) end)
            seen = { ok, err }
            res:json({ ok = true })
        end)
        finally(function()
            srv:close()
            http.closeIdle()
        end)
        local r = assert(http.get("http://127.0.0.1:" .. port .. "/"))
        assert.are.equal(200, r.status)
        assert.is_false(seen[1])
        assert.matches("http_response_spec%.lua:%d+: res:json: cannot encode the value: json%.encode: ", seen[2])
    end)
end)
