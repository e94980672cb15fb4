--- http.server: HTTP/1.1 servers on the tcp module (see docs/http.md).
--
-- No task waits for a request: a connection waits in C++ (modules/http.cpp) until a request
-- head is in, then a task runs serve(conn, req) below; it handles the requests already
-- buffered (pipelined ones, so responses go out in order) and ends when the connection waits
-- again. An idle keep-alive connection thus holds no coroutine. Parsing, limits, timeouts and
-- response framing are C++.
local core = require "luaio.http"
local tcp = require "tcp"
local luaio_core = require "luaio.core"
local raise = require("luaio.errors").raise
local report, describe = luaio_core.report, luaio_core.describe

local type, tostring, xpcall, setmetatable, getmetatable, rawget, rawset, pairs, error =
    type, tostring, xpcall, setmetatable, getmetatable, rawget, rawset, pairs, error
local traceback, lower, format, sub, find = debug.traceback, string.lower, string.format, string.sub, string.find


local server = {}

local function process_stopping()
    return require("process").stopping()
end

-- ---------------------------------------------------------------- requests

local Request = {}

-- A streaming request keeps its connection and raw head in slots 1 and 2 (and its body, once
-- read, in 3): they live in the table's own allocation. A seed request holds only its fields,
-- so that json.encode(request) works: its connection and head are in its metatable, which the
-- requests of one connection share (see seed_meta), so that it costs no table per request.
local function conn_of(req, fname)
    if type(req) ~= "table" then
        raise(fname, "expected a request as self, got " .. type(req) .. " (call it with ':')")
    end
    return rawget(req, 1) or getmetatable(req)[1]
end

local function head_of(req)
    local head = rawget(req, 2)
    if head then
        return head
    end
    local m = getmetatable(req)
    if m[3] ~= req then
        error("request.headers: read them in the handler (this request's response was sent)", 3)
    end
    return m[2]
end

-- Body errors raised by req:pieces(), by identity: the server answers them with their status
-- (E2BIG 413, ETIMEDOUT 408, EPROTO 400) instead of a 500, as a reader that was told would.
local raised = setmetatable({}, { __mode = "k" })

--- The whole body as a string (bounded by maxBodySize), or nil and an error table.
function Request.body(req)
    conn_of(req, "req:body")
    local b = req[3]
    if b then
        return b
    end
    local err
    b, err = req[1]:body()
    if b then
        req[3] = b
    end
    return b, err
end

--- The next piece of the body, nil at its end, or nil and an error table.
function Request.read(req)
    return conn_of(req, "req:read"):read()
end

--- An iterator over the pieces of the body: `for piece in req:pieces() do ... end`. A failed
--- read raises its error table (E2BIG beyond maxBodySize); unless the handler catches it, the
--- client gets the matching status (413).
function Request.pieces(req)
    local conn = conn_of(req, "req:pieces")
    return function()
        local piece, err = conn:read()
        if err then
            raised[err] = true
            error(err, 2)
        end
        return piece
    end
end

local lazy = {}

function lazy.query(req)
    local url = req.url
    local q = find(url, "?", 1, true)
    return q and core.query(sub(url, q + 1)) or {}
end

local function remote(req)
    local addr = conn_of(req):socket():remoteAddress() or {}
    rawset(req, "remoteAddress", addr.address)
    rawset(req, "remotePort", addr.port)
    rawset(req, "remoteFamily", addr.family)
end

function lazy.remoteAddress(req)
    remote(req)
    return rawget(req, "remoteAddress")
end

function lazy.remotePort(req)
    remote(req)
    return rawget(req, "remotePort")
end

function lazy.socket(req)
    return conn_of(req):socket()
end

-- https: the connection's TLS session (sock:tlsInfo() of lib/tls.lua: version, cipher, alpn,
-- servername, resumed, authorized, peerCertificate); false on a plain connection.
function lazy.tls(req)
    local sock = conn_of(req):socket()
    return sock.tlsInfo and sock:tlsInfo() or false
end

function Request.tlsInfo(req)
    return req.tls or nil
end

-- The headers table is made from the raw head only when it is read.
local parse_headers = core.headers

function lazy.headers(req)
    return parse_headers(head_of(req))
end

local function request_index(req, k)
    local m = Request[k]
    if m then
        return m
    end
    local f = lazy[k]
    if f then
        local v = f(req)
        rawset(req, k, v)
        return v
    end
end

local RequestMeta = { __index = request_index }

-- The metatable of a connection's seed requests: [1] the conn, [2] the raw head of its current
-- request, [3] that request (false once its response is sent). Made with the connection's
-- first request; C++ keeps it and hands it to the connection's tasks (Conn::ready).
local function seed_meta(conn)
    local m = { false, false, false, __index = false }
    m[1], m.__index = conn, request_index
    conn:setmeta(m)
    return m
end

-- ---------------------------------------------------------------- responses

local Response = {}
Response.__index = Response

-- A method called with something else as self (res.finish("x") instead of res:finish("x")).
local function check_response(res, fname)
    if getmetatable(res) ~= Response then
        raise(fname, "expected a response as self, got " .. type(res) .. " (call it with ':')")
    end
end

local function check_open(res, fname)
    check_response(res, fname)
    if res._finished then
        error(fname .. ": the response is already finished", 3)
    end
end

-- A response keeps its connection in slot 1 and its header fields in its own array part from
-- slot 2, name, value, name, value... up to slot _n: no headers table to allocate, and C++ reads
-- them by index (conn:respond). The hash part keeps only status and the state (four keys).

--- Sets a header (replacing one of the same name in any case); value nil removes it.
function Response:setHeader(name, value)
    check_response(self, "setHeader")
    if type(name) ~= "string" then
        error("setHeader: expected a header name (string), got " .. type(name), 2)
    end
    if self._sent then
        error("setHeader: the headers were already sent", 2)
    end
    local n = self._n
    if n > 1 then
        local l = lower(name)
        local i = 2
        while i < n do
            if lower(self[i]) == l then
                for j = i, n - 2 do
                    self[j] = self[j + 2]
                end
                self[n - 1], self[n] = false, false
                n = n - 2
            else
                i = i + 2
            end
        end
    end
    if value ~= nil then
        self[n + 1], self[n + 2] = name, value
        n = n + 2
    end
    self._n = n
    return self
end

function Response:getHeader(name)
    check_response(self, "getHeader")
    if type(name) ~= "string" then
        error("getHeader: expected a header name (string), got " .. type(name), 2)
    end
    local l = lower(name)
    for i = 2, self._n, 2 do
        if lower(self[i]) == l then
            return self[i + 1]
        end
    end
end

function Response:setStatus(status)
    self.status = status
    return self
end

--- Sends an informational (1xx) response before the final one, e.g. res:inform(103, {Link =
--- "</style.css>; rel=preload"}) (Early Hints); nothing to an HTTP/1.0 client. Returns nil or
--- an error table.
function Response:inform(status, headers)
    check_open(self, "inform")
    if self._sent then
        error("inform: the headers were already sent", 2)
    end
    return self[1]:inform(status, headers)
end

-- The upgrade path, for a protocol module (WebSocket) once it has checked the handshake; not
-- public API. Sends 101 Switching Protocols with `headers` and hands the socket over: the
-- connection leaves HTTP, and its task ends with the handler. Returns the socket or nil, err.
function Response:_upgrade(headers)
    check_open(self, "upgrade")
    if self._sent then
        error("upgrade: the headers were already sent", 2)
    end
    local sock, head = self[1]:upgrade(headers)
    self._sent, self._finished = true, "upgraded"
    local err = sock:write(head)
    if err then
        sock:close()
        return nil, err
    end
    return sock
end

--- Sends the head (if not yet sent) and a piece of the body: chunked unless a Content-Length
--- header was set. Returns nil or an error table.
function Response:write(data)
    check_open(self, "write")
    if not self._sent then
        self._sent = true
        return self[1]:head(self.status or 200, self, data, self._n)
    end
    return self[1]:write(data)
end

--- Ends the response, with an optional last piece of the body (the whole body when nothing
--- was written before: then it is sent with a Content-Length). Also res:send() and res["end"]().
function Response:finish(data)
    check_open(self, "finish")
    self._finished = true
    if not self._sent then
        self._sent = true
        local fd = self._fd
        if fd then -- a file body (Response:_file)
            return self[1]:sendfile(self.status or 200, self, self._n, fd, self._off, self._len, self._path,
                self._expires, self._source)
        end
        return self[1]:respond(self.status or 200, self, data, self._n)
    end
    return self[1]:finish(data)
end
Response.send = Response.finish

-- A file body, for http.static (not public API): bytes [offset, offset + length) of the open
-- descriptor fd are the body that finish() sends (with sendfile on a plain socket, never read
-- into Lua), with a Content-Length. fd must stay open until finish returns. With path, expires
-- (hrtime ns) and source (the file's name in static's cache), the response is the whole file
-- with only static's own fields: the server may answer GET and HEAD of that raw request path
-- with it until then, or until static forgets the file (modules/http.cpp, CachedFile).
function Response:_file(fd, offset, length, path, expires, source)
    check_open(self, "file")
    self._fd, self._off, self._len = fd, offset, length
    if path then
        self._path, self._expires, self._source = path, expires, source
    end
end
Response["end"] = Response.finish

--- Sends `value` as JSON (with Content-Type application/json) and ends the response.
local json -- loaded on first use (lua-cjson)

function Response:json(value, status)
    json = json or require "json"
    local body, err = json.encode(value)
    if not body then
        raise("res:json", "cannot encode the value: " .. err.message)
    end
    if status then
        self.status = status
    end
    self:setHeader("Content-Type", "application/json")
    return self:finish(body)
end

function Response:headersSent()
    return self._sent == true
end

-- ---------------------------------------------------------------- connections

local function on_error(e)
    if raised[e] then
        return e -- a body error that the handler let through: answered with its status
    end
    return traceback("http handler: " .. describe(e), 2)
end

local INTERNAL = core.reasons[500] .. "\n"

-- The answer to a request that failed before its handler ran (when nothing was sent yet).
local REJECT = core.canned

-- The response of the seed API: {status, headers, body (a string or an array of strings)}, or
-- a string (a 200 text body). A response that conn:respond refuses (a bad status, header or
-- body) raises, which fails the task: the runtime logs why, and the connection answers 500
-- and closes (modules/http.cpp, task_end).
local function seed_respond(conn, ok, r)
    if not ok then
        report(r)
        return conn:respond(500, nil, INTERNAL)
    end
    local tr = type(r)
    if tr == "table" then
        return conn:respond(r.status or 200, r.headers, r.body)
    elseif tr == "string" then
        return conn:respond(200, nil, r)
    end
    report(traceback("http handler: returned " .. tr .. " instead of a response table", 1))
    return conn:respond(500, nil, INTERNAL)
end

-- The task of a request (and of the requests pipelined after it) on one connection. C++ hands
-- a request over as values (modules/http.cpp, push_request): method, url, path (nil: the url),
-- the raw head, the version and, for the seed API, the body when it came with the head and the
-- connection's request metatable (nil at its first request).
local function make_serve(handler, seed)
    return function(conn, method, url, path, head, version, body, meta)
        local next = conn.next
        if seed and not meta then
            meta = seed_meta(conn)
        end
        repeat
            -- Every field is created here, so the table never grows (rehashes). Constant values
            -- only: LuaJIT then copies a template that has every key, and the fields are existing
            -- keys when they are set. The conn and the raw head are array slots 1 and 2: they
            -- live in the table's own allocation, and the hash part needs only four keys (five
            -- with the seed API's body).
            local req
            if seed then
                req = setmetatable({ method = false, url = false, path = false, httpVersion = false, body = false },
                    meta)
                meta[2], meta[3] = head, req
            else -- slot 3: the body once req:body() has read it
                req = setmetatable({ false, false, false, method = false, url = false, path = false,
                    httpVersion = false }, RequestMeta)
            end
            req.method, req.url, req.path, req.httpVersion = method, url, path or url, version
            if seed then
                if body == nil then
                    -- The body was not all in with the head: wait for the rest.
                    local err
                    body, err = conn:body()
                    if not body then
                        local status = REJECT[err.name]
                        if status then
                            conn:reject(status)
                        end
                        return conn:close()
                    end
                end
                req.body = body
                local err = seed_respond(conn, xpcall(handler, on_error, req))
                meta[2], meta[3] = false, false
                if err then
                    return conn:close()
                end
            else
                req[1], req[2] = conn, head
                local res = setmetatable({ false, false, false, false, false, false, false, false, false,
                    status = 200, _n = 1, _sent = false, _finished = false }, Response)
                res[1] = conn
                local ok, e = xpcall(handler, on_error, req, res)
                if not ok and res._finished == "upgraded" then
                    return report(e) -- the socket is the handler's now
                elseif not ok then
                    if raised[e] then
                        -- The body could not be read (too large, too slow, malformed): its status.
                        if not conn:sent() then
                            conn:reject(REJECT[e.name] or 400)
                        end
                        return conn:close()
                    end
                    report(e)
                    if conn:sent() then
                        return conn:close() -- part of the response is out: only closing tells the client
                    end
                    res._finished = true
                    conn:setclose()
                    conn:respond(500, nil, INTERNAL)
                elseif res._finished == "upgraded" then
                    return -- the socket left HTTP (Response:_upgrade)
                elseif not res._finished then
                    -- The handler returned without ending its response: end it as it stands.
                    if res:finish() then
                        return conn:close()
                    end
                end
            end
            -- The next request if it is already here; nothing when the connection waits for it
            -- (the task ends, the conn is not closed); nil and an error when it must close.
            method, url, path, head, version, body = next(conn)
            if method == nil and url then
                return conn:close()
            end
        until not method
    end
end

local Server = {}
Server.__index = Server

-- A method called with something else as self (srv.close() instead of srv:close()).
local function check_server(self, fname)
    if getmetatable(self) ~= Server then
        raise(fname, "expected a server as self, got " .. type(self) .. " (call it with ':')")
    end
end

--- Stops accepting connections; requests in progress finish (their responses say
--- Connection: close) and idle keep-alive connections are closed.
function Server:close()
    check_server(self, "server:close")
    -- The listener first: the connections it takes from its backlog as it closes are served.
    self.tcp:close()
    self._site:close()
end

--- True once a graceful stop has begun: the server still serves, but a load balancer should
--- take it out of rotation (see http.health).
function Server:draining()
    return process_stopping()
end

function Server:address()
    check_server(self, "server:address")
    return self.tcp:address()
end

--- https: uses another certificate and key (paths or PEM text) for the connections that come
--- next; open ones keep theirs. Returns nil, or the error (the old certificate stays).
function Server:setCertificate(pair)
    check_server(self, "server:setCertificate")
    if not self._certs then
        raise("server:setCertificate", "not an https server (no tls option)")
    end
    return self._certs.reload(pair)
end

--- Open connections (still counted after close() while they finish).
function Server:connections()
    check_server(self, "server:connections")
    return self.tcp:connections()
end

local tcp_options = {
    "family", "timeout", "read_timeout", "write_timeout", "tcp_nodelay", "tcp_keepalive",
    "tcp_keepidle", "tcp_reuseport", "read_buffer_size", "maxconnections",
}

local known = {
    host = true, port = true, backlog = true, tcp_backlog = true, maxHeaderSize = true, maxBodySize = true,
    headerTimeout = true, keepAliveTimeout = true, requestTimeout = true, maxRequests = true, sendTimeout = true,
    accessLog = true, -- "combined" | "json" (modules/http.cpp) | fn (lib/http/access.lua)
    tls = true, -- {cert, key, ...}: https (lib/tls.lua)
}
for _, k in ipairs(tcp_options) do
    known[k] = true
end

--- Starts a server; `seed` selects the handler convention of http.serve.
function server.listen(options, handler, seed, fname)
    if type(options) == "function" and handler == nil then
        options, handler = {}, options
    end
    options = options or {}
    if type(options) ~= "table" then
        raise(fname, "expected an options table as argument 1, got " .. type(options))
    end
    if type(handler) ~= "function" then
        raise(fname, "expected a handler function as argument 2, got " .. type(handler))
    end
    for k in pairs(options) do
        if not known[k] then
            raise(fname, format("unknown option '%s'", tostring(k)))
        end
    end
    local port = options.port or 8080
    if type(port) ~= "number" then
        raise(fname, "option 'port' must be a number")
    end
    local topts = { host = options.host or "127.0.0.1", tcp_backlog = options.backlog or options.tcp_backlog or 128 }
    for _, k in ipairs(tcp_options) do
        topts[k] = options[k]
    end
    local ok, limits = pcall(core.limits, options)
    if not ok then
        raise(fname, (tostring(limits):gsub("^.-limits: ", "")))
    end
    local certs
    if options.tls ~= nil then
        if type(options.tls) ~= "table" then
            raise(fname, "option 'tls' must be a table {cert, key, ...}")
        end
        local t = options.tls
        if t.alpn == nil then
            local copy = { alpn = { "http/1.1" } }
            for k, v in pairs(t) do
                copy[k] = v
            end
            t = copy
        end
        local cerr
        certs, cerr = require("tls")._server_context(t, fname)
        if not certs then
            return nil, cerr
        end
    end
    -- The access log: the built-in formats are made in C++ as each response ends (the sink is
    -- the log module's, so requiring it also sends luaio's own messages there); a function is
    -- http.createServer's (lib/http/access.lua wrapped the handler).
    local access = options.accessLog
    if access == "combined" or access == "json" then
        require "log"
    elseif access == nil or access == false or (type(access) == "function" and not seed) then
        access = nil
    elseif type(access) == "function" then
        raise(fname, "option 'accessLog': a function works with http.createServer; use \"combined\" or \"json\"")
    else
        raise(fname, "option 'accessLog' must be \"combined\", \"json\"" .. (seed and "" or " or a function") ..
            ", got " .. (type(access) == "string" and format("%q", access) or type(access)))
    end
    -- A server whose handler is http.static answers requests for small files it served a moment
    -- ago in C++ (modules/http.cpp, CachedFile), from the handler's cache of them.
    local files = not seed and require("http.static").cached_files(handler) or nil
    local site = core.site(limits, make_serve(handler, seed), seed, access, files)
    local accept = core.accept
    -- Connections are accepted without a task of their own (see the top of this file). A TLS
    -- connection's handshake runs beneath its stream while it waits for its first request.
    topts.spawn = false
    local attach = certs and require("tls")._attach
    local ctx = certs and certs.ctx
    -- A tcp option that raises (tcp_backlog = 0) must not leave the site (and its timer) behind.
    local ok, srv, err = pcall(tcp._createServer, port, function(sock)
        if attach then
            attach(sock, ctx(), true)
        end
        accept(site, sock)
    end, topts, fname)
    if not ok or not srv then
        site:close()
        if not ok then
            error(srv, 0) -- the message already names the caller's line
        end
        return nil, err
    end
    local self = setmetatable({ tcp = srv, _site = site, _certs = certs }, Server)
    -- A graceful stop: first responses end their connections, then the listener closes.
    require("process")._serve(srv, function(listener, phase)
        if phase == "drain" then
            site:drain()
        else
            listener:close()
            site:close()
        end
    end)
    local addr = srv:address()
    self.port = addr and addr.port
    self.host = addr and addr.address
    return self
end

return server
