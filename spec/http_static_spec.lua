-- http.static: files of a temporary directory served by a real server, checked with raw
-- requests (paths that a client would normalise) and with the http client.
local http = require "http"
local fs = require "fs"
local tcp = require "tcp"
local process = require "process"
local static = require "http.static"

local core = require "luaio.core"
local timer = require "timer"
local task = require "task"
local helper = require "helper"

local root, outside, server, port, base, fds_before

local function start(options, router)
    options = options or {}
    if options.fileCache == nil then options.fileCache = { valid = 50 } end
    local handler = http.static(root, options)
    if router then
        local r = http.router()
        r:get("/assets/*path", handler)
        handler = r
    end
    server = assert(http.createServer({ port = 0, host = "127.0.0.1" }, handler))
    port = server.port
    base = "http://127.0.0.1:" .. port
end

-- A raw request; returns the status, the head and the body.
local function raw(target, method, headers)
    local sock = assert(tcp.connect(port, "127.0.0.1"))
    sock:settimeouts(2000, 2000, 2000)
    local req = (method or "GET") .. " " .. target .. " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" .. (headers or "")
        .. "\r\n"
    assert(sock:write(req) == nil)
    local parts = {}
    while true do
        local d = sock:read()
        if not d then break end
        parts[#parts + 1] = d
    end
    sock:close()
    local all = table.concat(parts)
    local head, body = all:match("^(.-\r\n)\r\n(.*)$")
    return tonumber(all:match("^HTTP/1%.1 (%d+)")), head or all, body
end

local function get(path, headers, on_port)
    local b = on_port and "http://127.0.0.1:" .. on_port or base
    return assert(http.request({ url = b .. path, headers = headers }))
end

-- Sends `requests` (raw request strings) on one connection, all at once when `pipelined`, else
-- each after the answer to the one before; returns the responses as {status, head, body}.
local function exchange(requests, pipelined)
    local sock = assert(tcp.connect(port, "127.0.0.1"))
    sock:settimeouts(2000, 2000, 2000)
    if pipelined then assert(sock:write(table.concat(requests)) == nil) end
    local out = {}
    for i, req in ipairs(requests) do
        if not pipelined then assert(sock:write(req) == nil) end
        local head = assert(sock:readuntil("\r\n\r\n"))
        local len = tonumber(head:match("\r\nContent%-Length: (%d+)")) or 0
        if req:match("^HEAD ") or head:match("^HTTP/1%.%d 304") then len = 0 end
        local body = len > 0 and assert(sock:read(len)) or ""
        out[i] = { status = tonumber(head:match("^HTTP/1%.%d (%d+)")), head = head, body = body }
    end
    sock:close()
    return out
end

local function request(method, path, extra, version)
    return method .. " " .. path .. " HTTP/" .. (version or "1.1") .. "\r\nHost: x\r\n" .. (extra or "") .. "\r\n"
end

describe("http.static", function()
    before_each(function()
        -- The handler watches the directories of the files it caches: libuv opens its one inotify
        -- descriptor at the first watch and keeps it, so it is opened before anything is counted.
        assert(fs.watch(fs.tmpdir())):close()
        fds_before = core.fds()
        local tmp = assert(fs.mkdtemp(fs.tmpdir() .. "/luaio-static-"))
        root, outside = tmp .. "/root", tmp .. "/outside"
        assert(fs.mkdir(root .. "/dir/sub", { recursive = true }))
        assert(fs.mkdir(outside))
        assert(fs.writeFile(root .. "/hello.txt", "hello world"))
        assert(fs.writeFile(root .. "/index.html", "<h1>home</h1>"))
        assert(fs.writeFile(root .. "/dir/index.html", "dir index"))
        assert(fs.writeFile(root .. "/dir/sub/a.css", "body{}"))
        assert(fs.writeFile(root .. "/.env", "SECRET=1"))
        assert(fs.writeFile(root .. "/app.js", "console.log(1)"))
        assert(fs.writeFile(root .. "/app.js.gz", "GZ"))
        assert(fs.writeFile(root .. "/app.js.br", "BR"))
        assert(fs.writeFile(outside .. "/secret", "outside"))
        assert(fs.symlink(outside .. "/secret", root .. "/link-out"))
        assert(fs.symlink(root .. "/hello.txt", root .. "/link-in"))
    end)
    after_each(function()
        if server then server:close() end
        server = nil
        http.closeIdle()
        -- The handler's open-file cache closes its descriptors once they expire (start() makes
        -- that 50 ms unless a spec says otherwise).
        for _ = 1, 400 do
            if core.fds() <= fds_before then break end
            timer.sleep(10)
        end
        assert(fs.rm(root:match("^(.*)/root$"), { recursive = true }))
    end)

    it("serves a file with its type, length, ETag and Last-Modified; HEAD has no body", function()
        start()
        local res = get("/hello.txt")
        assert.are.equal(200, res.status)
        assert.are.equal("hello world", res.body)
        assert.are.equal("text/plain; charset=utf-8", res.headers["content-type"])
        assert.are.equal("11", res.headers["content-length"])
        assert.are.equal("bytes", res.headers["accept-ranges"])
        assert.truthy(res.headers.etag:match('^"%x+%-b"$'))
        assert.truthy(res.headers["last-modified"]:match("GMT$"))
        local status, head, body = raw("/hello.txt", "HEAD")
        assert.are.equal(200, status)
        assert.truthy(head:find("Content-Length: 11", 1, true))
        assert.are.equal("", body)
        assert.are.equal(405, raw("/hello.txt", "POST"))
    end)

    it("serves index.html for directories and redirects /dir to /dir/", function()
        start()
        assert.are.equal("<h1>home</h1>", get("/").body)
        local status, head = raw("/dir?x=1")
        assert.are.equal(301, status)
        assert.truthy(head:find("Location: /dir/?x=1", 1, true))
        assert.are.equal("dir index", get("/dir/").body)
        assert.are.equal("text/css; charset=utf-8", get("/dir/sub/a.css").headers["content-type"])
    end)

    it("lists a directory only when asked", function()
        start()
        assert.are.equal(404, raw("/dir/sub/"))
        server:close()
        start({ listing = true })
        local res = get("/dir/sub/")
        assert.are.equal(200, res.status)
        assert.truthy(res.body:find('<a href="a.css">a.css</a>', 1, true))
        assert.falsy(get("/").body:find(".env", 1, true))
    end)

    it("answers 304 to If-None-Match and If-Modified-Since", function()
        start()
        local res = get("/hello.txt")
        local etag, modified = res.headers.etag, res.headers["last-modified"]
        local r1 = get("/hello.txt", { ["If-None-Match"] = etag })
        assert.are.equal(304, r1.status)
        assert.are.equal("", r1.body)
        assert.are.equal(304, get("/hello.txt", { ["If-None-Match"] = 'W/"x", ' .. etag }).status)
        assert.are.equal(200, get("/hello.txt", { ["If-None-Match"] = '"other"' }).status)
        assert.are.equal(304, get("/hello.txt", { ["If-Modified-Since"] = modified }).status)
        assert.are.equal(200, get("/hello.txt", { ["If-Modified-Since"] = "Thu, 01 Jan 1970 00:00:00 GMT" }).status)
    end)

    it("answers single ranges with 206, unsatisfiable ones with 416, and honours If-Range", function()
        start()
        local r = get("/hello.txt", { Range = "bytes=0-4" })
        assert.are.equal(206, r.status)
        assert.are.equal("hello", r.body)
        assert.are.equal("bytes 0-4/11", r.headers["content-range"])
        assert.are.equal("world", get("/hello.txt", { Range = "bytes=-5" }).body)
        assert.are.equal("world", get("/hello.txt", { Range = "bytes=6-" }).body)
        assert.are.equal("world", get("/hello.txt", { Range = "bytes=6-100" }).body)
        local bad = get("/hello.txt", { Range = "bytes=20-30" })
        assert.are.equal(416, bad.status)
        assert.are.equal("bytes */11", bad.headers["content-range"])
        assert.are.equal(200, get("/hello.txt", { Range = "bytes=0-1,3-4" }).status) -- several: the whole file
        local etag = r.headers.etag
        assert.are.equal(206, get("/hello.txt", { Range = "bytes=0-4", ["If-Range"] = etag }).status)
        local changed = get("/hello.txt", { Range = "bytes=0-4", ["If-Range"] = '"old"' })
        assert.are.equal(200, changed.status)
        assert.are.equal("hello world", changed.body)
    end)

    it("streams a big file and its ranges", function()
        local block = string.rep("0123456789abcdef", 65536) -- 1 MiB
        assert(fs.writeFile(root .. "/big.bin", block:rep(3)))
        start()
        local res = get("/big.bin")
        assert.are.equal(3 * 1048576, #res.body)
        assert.are.equal(block:rep(3), res.body)
        local r = get("/big.bin", { Range = "bytes=1048570-2097160" })
        assert.are.equal(206, r.status)
        assert.are.equal(block:rep(3):sub(1048571, 2097161), r.body)
        local out = assert(process.run({ "curl", "-s", "--max-time", "10", "-o", "/dev/null", "-w", "%{size_download}",
            base .. "/big.bin" }))
        assert.are.equal(tostring(3 * 1048576), out.stdout)
    end)

    it("sends a big file in chunks, the loop going round between them", function()
        -- One sendfile(2) call sent a whole file to a client that kept up, while nothing else in
        -- the process ran (55 ms for 100 MB). The gaps between the ticks of a 1 ms timer during
        -- the download show the loop's turns: now each is a chunk of 2 MiB.
        local size = 256 * 1048576
        assert(process.run({ "sh", "-c", "head -c " .. size .. " /dev/zero > " .. root .. "/huge.bin" }))
        start()
        assert.are.equal(200, raw("/hello.txt"))
        local clock = require("system").hrtime
        local last, worst = clock(), 0
        local ticker = timer.setInterval(1, function()
            local now = clock()
            worst = math.max(worst, now - last)
            last = now
        end)
        local t0 = clock()
        last = t0
        local out = process.run({ "curl", "-s", "--max-time", "30", "-o", "/dev/null", "-w", "%{size_download}",
            base .. "/huge.bin" })
        local took = clock() - t0
        ticker:stop()
        assert(out)
        assert.are.equal(tostring(size), out.stdout)
        assert.is_true(worst < took / 3, ("the loop stood still %.1f ms of the %.1f ms download"):format(worst / 1e6,
            took / 1e6))
    end)

    it("sends a big file's body from the file to the socket, never through Lua memory", function()
        -- Blocks that differ (equal Lua strings would be interned once and not add up).
        local blocks = {}
        for i = 1, 64 do blocks[i] = string.rep(("%07d\n"):format(i), 32768) end
        local size = 64 * 262144
        assert(fs.writeFile(root .. "/big.bin", table.concat(blocks)))
        blocks = nil
        start()
        -- Warm up (the cache entry, the code paths), then count what the download allocates in
        -- Lua with the collector stopped: a body read into Lua strings would be all of it.
        assert.are.equal(200, raw("/hello.txt"))
        collectgarbage()
        collectgarbage("stop")
        local before = collectgarbage("count")
        local out = process.run({ "curl", "-s", "--max-time", "20", "-o", "/dev/null", "-w", "%{size_download}",
            base .. "/big.bin" })
        local grown = (collectgarbage("count") - before) * 1024
        collectgarbage("restart")
        assert(out)
        assert.are.equal(tostring(size), out.stdout)
        assert.is_true(grown < size / 8, ("Lua memory grew by %d bytes"):format(grown))
    end)

    it("keeps files it served open for fileCache.valid ms, then looks them up again", function()
        -- Valid for 3 s: past any stall of a loaded machine between the two requests.
        start({ fileCache = { valid = 3000, watch = false } })
        assert.are.equal("hello world", get("/hello.txt").body)
        -- Within the validity the open descriptor serves the request: no lookup sees the unlink.
        assert(fs.unlink(root .. "/hello.txt"))
        local r = get("/hello.txt")
        assert.are.equal(200, r.status)
        assert.are.equal("hello world", r.body)
        server:close()
        start({ fileCache = { valid = 20, watch = false } })
        assert.are.equal(200, get("/dir/sub/a.css").status)
        assert(fs.writeFile(root .. "/dir/sub/a.css", "p{}"))
        require("timer").sleep(40)
        local changed = get("/dir/sub/a.css")
        assert.are.equal("p{}", changed.body)
        assert(fs.unlink(root .. "/dir/sub/a.css"))
        require("timer").sleep(40)
        assert.are.equal(404, get("/dir/sub/a.css").status)
        -- Expired entries close their descriptors (the first server's within about twice 3 s).
        server:close()
        server = nil
        http.closeIdle()
        assert.is_true(helper.wait_for(function() return core.fds() <= fds_before end, 15000))
    end)

    it("sees a file change, go, be replaced or get a variant at once (inotify), within fileCache.valid", function()
        start({ fileCache = { valid = 60000 } })
        -- Waits (bounded) for a request to see what the change made.
        local function soon(path, want, headers)
            local r
            for _ = 1, 200 do
                r = exchange({ request("GET", path, headers), request("GET", path, headers) })
                if r[1].body == want and r[2].body == want then return r[2] end
                timer.sleep(10)
            end
            error(("%s: got %q, %q, wanted %q"):format(path, r[1].body, r[2].body, want))
        end
        soon("/hello.txt", "hello world")
        soon("/dir/sub/a.css", "body{}")
        soon("/dir/", "dir index")
        assert(fs.writeFile(root .. "/hello.txt", "changed in place"))
        soon("/hello.txt", "changed in place")
        assert(fs.writeFile(root .. "/dir/sub/a.css", "p{}", { atomic = true })) -- a rename over it
        soon("/dir/sub/a.css", "p{}")
        assert(fs.writeFile(root .. "/dir/index.html", "new index"))
        soon("/dir/", "new index")
        assert(fs.writeFile(root .. "/hello.txt.gz", "GZ"))
        local gz = soon("/hello.txt", "GZ", "Accept-Encoding: gzip\r\n")
        assert.truthy(gz.head:find("Content-Encoding: gzip", 1, true))
        assert(fs.unlink(root .. "/dir/sub/a.css"))
        local r
        for _ = 1, 200 do
            r = exchange({ request("GET", "/dir/sub/a.css") })[1]
            if r.status == 404 then break end
            timer.sleep(10)
        end
        assert.are.equal(404, r.status)
        -- Entries stay for fileCache.valid (a minute here) unless their files change: removing
        -- them all closes every descriptor and watch at once (the leak check counts them).
        server:close()
        assert(fs.rm(root, { recursive = true }))
        assert(fs.mkdir(root))
    end)

    it("keeps a file open for a request that waits on another lookup while its entry expires", function()
        start({ fileCache = { valid = 600, watch = false } })
        assert.are.equal(200, exchange({ request("GET", "/hello.txt") })[1].status) -- cached now
        -- Every thread of the pool blocks in open() on a FIFO: the request's next lookup (of the
        -- file's variants, which it has not: not cached) then waits while the entry expires and
        -- the sweeper runs.
        local fifos = {}
        for i = 1, tonumber(os.getenv("UV_THREADPOOL_SIZE")) or 4 do
            fifos[i] = root .. "/../fifo" .. i
            assert(process.run({ "mkfifo", fifos[i] }))
            task.spawn(fs.readFile, fifos[i])
        end
        timer.sleep(20)
        local got
        local t = task.spawn(function()
            -- (a range: the handler's to answer, not the server's)
            got = exchange({ request("GET", "/hello.txt", "Accept-Encoding: gzip\r\nRange: bytes=0-4\r\n") })[1]
        end)
        timer.sleep(1500) -- the entry expires, the sweeper runs (every 600 ms)
        -- A writer for every FIFO (a child process: the pool is busy) lets the pool go on.
        assert(process.run({ "sh", "-c", "for f in " .. table.concat(fifos, " ") .. "; do echo x > $f; done" }))
        assert(t:join())
        assert.are.equal(206, got.status)
        assert.are.equal("hello", got.body)
    end)

    it("lets the process end once its server closed, whatever its cache holds", function()
        local script = helper.script(([[
            local http = require "http"
            local srv = assert(http.createServer({ port = 0 }, http.static(%q, { fileCache = { valid = 60000 } })))
            assert(http.get("http://127.0.0.1:" .. srv.port .. "/dir/sub/a.css"))
            srv:close()
            http.closeIdle()
            print("served")
        ]]):format(root))
        local t0 = require("system").hrtime()
        local out = assert(process.run({ helper.luaio, script }, { timeout = 20000 }))
        os.remove(script)
        assert.are.equal("served\n", out.stdout)
        assert.is_true((require("system").hrtime() - t0) / 1e6 < 10000)
    end)

    it("holds at most fileCache.max open files, and none with fileCache = false", function()
        for i = 1, 4 do assert(fs.writeFile(root .. "/f" .. i, "file " .. i)) end
        start({ fileCache = { max = 2, valid = 1500 } })
        local listening = core.fds() -- with the server's socket
        for i = 1, 4 do assert.are.equal(200, raw("/f" .. i)) end
        -- raw() closes its connection: what stays open is the cache's.
        assert.are.equal(listening + 2, helper.fds_back_to(listening + 2))
        server:close()
        start({ fileCache = false })
        listening = core.fds()
        for i = 1, 4 do assert.are.equal(200, raw("/f" .. i)) end
        assert.are.equal(200, raw("/f1", "HEAD"))
        assert.are.equal(listening, helper.fds_back_to(listening))
    end)

    it("counts a file body in the access log", function()
        local log = require "log"
        local logfile = root .. "/../access.log"
        log.setOutput(logfile)
        local got
        server = assert(http.createServer({ port = 0, host = "127.0.0.1", accessLog = function(_, _, info) got = info end },
            http.static(root)))
        port, base = server.port, "http://127.0.0.1:" .. server.port
        assert.are.equal(200, raw("/hello.txt"))
        assert.are.equal(11, got.bytes)
        server:close()
        server = assert(http.createServer({ port = 0, host = "127.0.0.1", accessLog = "combined" }, http.static(root)))
        port, base = server.port, "http://127.0.0.1:" .. server.port
        assert.are.equal(200, raw("/hello.txt"))
        assert.is_true(helper.wait_for(function()
            local data = helper.read(logfile)
            return data and data:find('"GET /hello.txt HTTP/1.1" 200 11 ', 1, true) ~= nil
        end, 3000), helper.read(logfile))
        log.setOutput("stderr")
    end)

    describe("a server whose handler it is", function()
        it("answers a small file it served a moment ago without running Lua, and its revalidations", function()
            -- Valid for longer than the test runs on a loaded machine: no lookup comes between.
            start({ fileCache = { valid = 60000 } })
            local paths = {}
            for i = 1, 200 do paths[#paths + 1] = base .. "/hello.txt" end
            -- Warm up: the first answer comes from the handler, the next from the server.
            local first = exchange({ request("GET", "/hello.txt") })[1]
            assert.are.equal(200, first.status)
            local etag = first.head:match("ETag: ([^\r]+)")
            for _, extra in ipairs({ {}, { "-H", "If-None-Match: " .. etag } }) do
                collectgarbage()
                collectgarbage("stop")
                local before = collectgarbage("count")
                -- curl reuses its connection for the 200 URLs.
                local args = { "curl", "-s", "--max-time", "20", "-o", "/dev/null", "-w", "%{http_code}\n" }
                for _, a in ipairs(extra) do args[#args + 1] = a end
                for _, p in ipairs(paths) do args[#args + 1] = p end
                local out = process.run(args)
                local grown = (collectgarbage("count") - before) * 1024
                collectgarbage("restart")
                assert(out)
                local _, n = assert(out.stdout):gsub(extra[1] and "304\n" or "200\n", "")
                assert.are.equal(200, n)
                -- A request through the handler makes a request and a response table (~700 bytes).
                assert.is_true(grown < 200 * 100, ("Lua memory grew by %d bytes"):format(grown))
            end
            -- The file goes: its entry (open for a minute otherwise) closes at once (inotify).
            server:close()
            assert(fs.unlink(root .. "/hello.txt"))
        end)

        it("sends the same head and body as the handler, for GET, HEAD and HTTP/1.0", function()
            start({ fileCache = { valid = 1500 }, maxAge = 60 })
            local r = exchange({ request("GET", "/hello.txt"), request("GET", "/hello.txt?x=1"),
                request("HEAD", "/hello.txt"), request("GET", "/hello.txt", "Connection: keep-alive\r\n", "1.0") })
            local function strip(head) return (head:gsub("Date: [^\r]*\r\n", "")) end
            assert.are.equal(strip(r[1].head), strip(r[2].head))
            assert.are.equal(strip(r[1].head), strip(r[3].head))
            for i = 1, 4 do assert.are.equal(200, r[i].status) end
            assert.are.equal("hello world", r[1].body)
            assert.are.equal("hello world", r[2].body)
            assert.are.equal("", r[3].body)
            assert.are.equal("hello world", r[4].body)
            assert.truthy(r[2].head:find("Cache-Control: public, max-age=60\r\n", 1, true))
            assert.truthy(r[2].head:find("\r\nDate: ", 1, true))
            assert.truthy(r[4].head:find("\r\nConnection: keep-alive", 1, true))
            -- 304s: the handler's (a weak tag, an older style date) and the server's (the exact ones).
            local etag, modified = r[1].head:match("ETag: ([^\r]+)"), r[1].head:match("Last%-Modified: ([^\r]+)")
            local v = exchange({ request("GET", "/hello.txt", "If-None-Match: W/" .. etag .. "\r\n"),
                request("GET", "/hello.txt", "If-None-Match: " .. etag .. "\r\n"),
                request("HEAD", "/hello.txt", "If-Modified-Since: " .. modified .. "\r\n"),
                request("GET", "/hello.txt", "Connection: keep-alive\r\nIf-Modified-Since: " .. modified .. "\r\n", "1.0"),
                request("GET", "/hello.txt", "If-None-Match: \"other\"\r\nIf-Modified-Since: " .. modified .. "\r\n"),
                request("GET", "/hello.txt", "If-Modified-Since: Thu, 01 Jan 1970 00:00:00 GMT\r\n") })
            assert.are.same({ 304, 304, 304, 304, 200, 200 },
                { v[1].status, v[2].status, v[3].status, v[4].status, v[5].status, v[6].status })
            assert.are.equal(strip(v[1].head), strip(v[2].head))
            assert.are.equal(strip(v[1].head), strip(v[3].head))
            assert.is_nil(v[2].head:find("Content-Length", 1, true))
            assert.truthy(v[4].head:find("\r\nConnection: keep-alive", 1, true))
            assert.are.equal("hello world", v[5].body)
        end)

        it("leaves validators, ranges, variants and other paths to the handler", function()
            start({ fileCache = { valid = 1500 } })
            local first = exchange({ request("GET", "/hello.txt") })[1]
            local etag = first.head:match("ETag: ([^\r]+)")
            local r = exchange({ request("GET", "/hello.txt"), request("GET", "/hello.txt", "If-None-Match: " .. etag .. "\r\n"),
                request("GET", "/hello.txt", "Range: bytes=0-4\r\n"), request("GET", "/app.js"), request("GET", "/app.js"),
                request("GET", "/app.js", "Accept-Encoding: br\r\n"), request("GET", "/missing"),
                request("POST", "/hello.txt", "Content-Length: 0\r\n"), request("GET", "/hello.txt") }, true)
            assert.are.same({ 200, 304, 206, 200, 200, 200, 404, 405, 200 },
                { r[1].status, r[2].status, r[3].status, r[4].status, r[5].status, r[6].status, r[7].status, r[8].status,
                    r[9].status })
            assert.are.equal("hello", r[3].body)
            assert.are.equal("console.log(1)", r[5].body)
            assert.are.equal("BR", r[6].body)
            assert.are.equal("hello world", r[9].body)
        end)

        it("sees a changed file once fileCache.valid is over, and logs what it answers", function()
            local log = require "log"
            local logfile = root .. "/../access.log"
            log.setOutput(logfile)
            server = assert(http.createServer({ port = 0, host = "127.0.0.1", accessLog = "combined" },
                http.static(root, { fileCache = { valid = 30 } })))
            port, base = server.port, "http://127.0.0.1:" .. server.port
            local r = exchange({ request("GET", "/hello.txt"), request("GET", "/hello.txt"), request("HEAD", "/hello.txt") })
            assert.are.equal("hello world", r[2].body)
            assert(fs.writeFile(root .. "/hello.txt", "changed"))
            timer.sleep(60)
            assert.are.equal("changed", exchange({ request("GET", "/hello.txt") })[1].body)
            assert.is_true(helper.wait_for(function()
                local data = helper.read(logfile) or ""
                local _, n = data:gsub('"GET /hello.txt HTTP/1.1" 200 11 ', "")
                return n == 2 and data:find('"HEAD /hello.txt HTTP/1.1" 200 0 ', 1, true) ~= nil
                    and data:find('"GET /hello.txt HTTP/1.1" 200 7 ', 1, true) ~= nil
            end, 3000), helper.read(logfile))
            log.setOutput("stderr")
        end)
    end)

    it("sets Cache-Control from an option", function()
        start({ maxAge = 3600 })
        assert.are.equal("public, max-age=3600", get("/hello.txt").headers["cache-control"])
        server:close()
        start({ cacheControl = "no-cache" })
        assert.are.equal("no-cache", get("/hello.txt").headers["cache-control"])
    end)

    it("serves precompressed .br and .gz when Accept-Encoding allows, with Vary", function()
        start()
        local br = get("/app.js", { ["Accept-Encoding"] = "gzip, br" })
        assert.are.equal("BR", br.body)
        assert.are.equal("br", br.headers["content-encoding"])
        assert.are.equal("Accept-Encoding", br.headers.vary)
        assert.are.equal("text/javascript; charset=utf-8", br.headers["content-type"])
        local gz = get("/app.js", { ["Accept-Encoding"] = "gzip, br;q=0" })
        assert.are.equal("GZ", gz.body)
        assert.are.equal("gzip", gz.headers["content-encoding"])
        assert.are_not.equal(br.headers.etag, gz.headers.etag)
        local plain = get("/app.js", { ["Accept-Encoding"] = "identity" })
        assert.are.equal("console.log(1)", plain.body)
        assert.is_nil(plain.headers["content-encoding"])
        assert.are.equal("Accept-Encoding", plain.headers.vary)
        -- A client that says nothing gets the plain file, with Vary too (for caches on the way).
        local none = exchange({ request("GET", "/app.js"), request("GET", "/app.js") })
        assert.are.equal("console.log(1)", none[2].body)
        assert.truthy(none[1].head:find("\r\nVary: Accept-Encoding\r\n", 1, true))
        assert.truthy(none[2].head:find("\r\nVary: Accept-Encoding\r\n", 1, true))
        assert.is_nil(none[2].head:find("Content-Encoding", 1, true))
    end)

    describe("refuses to leave the root", function()
        it(".. segments", function()
            start()
            assert.are.equal(400, raw("/../outside/secret"))
            assert.are.equal(400, raw("/dir/../../outside/secret"))
            assert.are.equal(400, raw("/dir/.."))
        end)

        it("percent-encoded dots and slashes", function()
            start()
            assert.are.equal(400, raw("/%2e%2e/outside/secret"))
            assert.are.equal(400, raw("/%2E%2E/outside/secret"))
            assert.are.equal(400, raw("/.%2e/outside/secret"))
            assert.are.equal(400, raw("/dir%2f..%2f..%2foutside/secret"))
            assert.are.equal(400, raw("/dir%2Fsub/a.css"))
            assert.are.equal(400, raw("/hello%zz.txt"))
            assert.are.equal(200, raw("/hello%2etxt")) -- an encoded dot inside a name is a dot
        end)

        it("backslashes", function()
            start()
            assert.are.equal(400, raw("/..\\outside\\secret"))
            assert.are.equal(400, raw("/%5c..%5coutside/secret"))
        end)

        it("NUL bytes", function()
            start()
            assert.are.equal(400, raw("/hello.txt%00.html"))
        end)

        it("over-long paths", function()
            start()
            assert.are.equal(414, raw("/" .. string.rep("a", 5000)))
            assert.are.equal(404, raw("/" .. string.rep("a", 200)))
        end)

        it("symbolic links that lead outside, unless allowed", function()
            start()
            assert.are.equal(404, raw("/link-out"))
            assert.are.equal("hello world", get("/link-in").body)
            server:close()
            start({ symlinks = true })
            assert.are.equal("outside", get("/link-out").body)
        end)

        it("dotfiles are hidden by default", function()
            start()
            assert.are.equal(404, raw("/.env"))
            assert.are.equal(404, raw("/%2eenv"))
            server:close()
            start({ dotfiles = "deny" })
            assert.are.equal(403, raw("/.env"))
            server:close()
            start({ dotfiles = "allow" })
            assert.are.equal("SECRET=1", get("/.env").body)
        end)
    end)

    it("works as a router route with a catch-all", function()
        start(nil, true)
        assert.are.equal("hello world", get("/assets/hello.txt").body)
        assert.are.equal("body{}", get("/assets/dir/sub/a.css").body)
        assert.are.equal(400, raw("/assets/%2e%2e/%2e%2e/outside/secret"))
        assert.are.equal(400, raw("/assets/dir%2f..%2f..%2f..%2foutside%2fsecret"))
        assert.are.equal(404, raw("/assets/.env"))
    end)

    it("serves one handler under two routes: the same raw path may name two files", function()
        assert(fs.mkdir(root .. "/x"))
        assert(fs.writeFile(root .. "/x/hello.txt", "x hello"))
        local handler = http.static(root, { fileCache = { valid = 50 } })
        local a, b = http.router(), http.router()
        a:get("/x/*path", handler)
        b:get("/*path", handler)
        local sa = assert(http.createServer({ port = 0, host = "127.0.0.1" }, a))
        local sb = assert(http.createServer({ port = 0, host = "127.0.0.1" }, b))
        for _ = 1, 2 do
            assert.are.equal("hello world", get("/x/hello.txt", nil, sa.port).body)
            assert.are.equal("x hello", get("/x/hello.txt", nil, sb.port).body)
        end
        sa:close()
        sb:close()
    end)

    it("raises on wrong arguments", function()
        assert.has_error(function() http.static(1) end,
            "http.static: expected a root directory (a string) as argument 1, got number")
        assert.has_error(function() http.static("x", { idnex = "a" }) end, "http.static: unknown option 'idnex'")
        assert.has_error(function() http.static("x", { dotfiles = "yes" }) end)
    end)

    it("raises at creation on a root that does not exist or is not a directory, naming the path", function()
        local ok, err = pcall(http.static, root .. "/publc")
        assert.is_false(ok)
        assert.truthy(err:find("http_static_spec%.lua:%d+: http%.static: no such directory '"), err)
        assert.truthy(err:find("no such directory '" .. root .. "/publc'", 1, true), err)
        ok, err = pcall(http.static, root .. "/hello.txt")
        assert.is_false(ok)
        assert.truthy(err:find("http.static: not a directory '" .. root .. "/hello.txt'", 1, true), err)
        ok, err = pcall(http.static, root .. "/hello.txt/x")
        assert.truthy(err:find("http.static: no such directory '" .. root .. "/hello.txt/x'", 1, true), err)
        assert.is_function(http.static(root .. "/"))
    end)

    it("follows a root that is a symbolic link swapped to another directory", function()
        local tmp = root:match("^(.*)/root$")
        assert(fs.mkdir(tmp .. "/release2"))
        assert(fs.writeFile(tmp .. "/release2/hello.txt", "release 2"))
        assert(fs.symlink(root, tmp .. "/current"))
        server = assert(http.createServer({ port = 0, host = "127.0.0.1" },
            http.static(tmp .. "/current", { fileCache = { valid = 20 } })))
        port, base = server.port, "http://127.0.0.1:" .. server.port
        assert.are.equal("hello world", get("/hello.txt").body)
        -- A deploy: the link is replaced at once (rename over it).
        assert(fs.symlink(tmp .. "/release2", tmp .. "/next"))
        assert(fs.rename(tmp .. "/next", tmp .. "/current"))
        timer.sleep(40)
        local r = get("/hello.txt")
        assert.are.equal(200, r.status)
        assert.are.equal("release 2", r.body)
        assert.are.equal(404, raw("/link-out"))
    end)

    it("reads MIME types from a mime.types file over its built-in table", function()
        local f = root .. "/mime.types"
        assert(fs.writeFile(f, "# comment\napplication/x-luaio\tluaio lio\ntext/html html\n"))
        local types = static.load_mime_types(f)
        assert.are.equal("application/x-luaio", types.lio)
        assert.are.equal("image/png", types.png)
        assert.are.equal(784111777, static.parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"))
    end)
end)
