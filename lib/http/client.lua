--- http.client: HTTP/1.1 requests with a keep-alive connection pool (see docs/http.md).
--
-- A transport turns (host, port, options) into a connected stream; "http" is plain tcp and
-- the TLS module registers "https" in http.transports with the same shape. Framing and
-- parsing are C++ (modules/http.cpp); this file does URLs, the pool and redirects.
local core = require "luaio.http"
local tcp = require "tcp"
local system = require "system"

local type, tostring, tonumber, setmetatable, getmetatable, error, pairs, pcall =
    type, tostring, tonumber, setmetatable, getmetatable, error, pairs, pcall
local match, lower, format, find, sub, gsub =
    string.match, string.lower, string.format, string.find, string.sub, string.gsub
local remove = table.remove
local ceil, min = math.ceil, math.min

local client = {}

-- ---------------------------------------------------------------- transports

local HTTP1 = { "http/1.1" }

client.transports = {
    http = {
        default_port = 80,
        connect = function(host, port, options)
            return tcp.connect(port, host, options)
        end,
    },
    -- TLS (lib/tls.lua): the certificate chain and host name verified unless tls.verify = false.
    https = {
        default_port = 443,
        connect = function(host, port, options)
            -- ALPN: this client speaks HTTP/1.1 (a server that also has h2 must not pick it).
            options.alpn = options.alpn or HTTP1
            return require("tls").connect(port, host, options)
        end,
    },
}

-- The pool key part of a request's TLS settings: connections made with other settings (another
-- CA, a client certificate, no verification) are never handed to it.
local function tls_key(t)
    if not t then
        return ""
    end
    return "|" .. tostring(t.ca) .. "|" .. tostring(t.cert) .. "|" .. tostring(t.key) .. "|" .. tostring(t.verify)
        .. "|" .. tostring(t.servername)
end

-- ---------------------------------------------------------------- URLs

--- Splits an absolute URL: scheme, host, port, target ("/path?query"). nil and a message if invalid.
function client.parse_url(url)
    if find(url, "[%z\1-\32\127]") then
        return nil, "invalid URL (control character or space): " .. url
    end
    local scheme, authority, rest = match(url, "^(%a[%w+.-]*)://([^/?#]*)(.*)$")
    if not scheme then
        return nil, "not an absolute URL: " .. url
    end
    scheme = lower(scheme)
    authority = match(authority, "^.*@(.*)$") or authority
    local host, port
    if sub(authority, 1, 1) == "[" then
        host, port = match(authority, "^%[([^%]]+)%](.*)$")
    else
        host, port = match(authority, "^([^:]*)(.*)$")
    end
    if not host or host == "" then
        return nil, "no host in URL: " .. url
    end
    -- The port is checked here so that a bad one is this URL's EINVAL, not tcp.connect's raise.
    port = match(port, "^:?(%d*)$")
    if not port or tonumber(port) == 0 or (tonumber(port) or 0) > 65535 then
        return nil, "invalid port in URL: " .. url
    end
    local transport = client.transports[scheme]
    if not transport then
        return nil, "unsupported scheme '" .. scheme .. "' in URL: " .. url
    end
    port = tonumber(port) or transport.default_port
    rest = match(rest, "^([^#]*)") or ""
    if rest == "" then
        rest = "/"
    elseif sub(rest, 1, 1) == "?" then
        rest = "/" .. rest
    end
    return { scheme = scheme, host = host, port = port, target = rest, authority = authority }
end

local function resolve_location(base, location)
    -- Servers send spaces in Location; browsers and curl send them percent-encoded.
    location = gsub(location, " ", "%%20")
    if match(location, "^%a[%w+.-]*://") then
        return location
    end
    local origin = base.scheme .. "://" .. base.authority
    if sub(location, 1, 2) == "//" then
        return base.scheme .. ":" .. location
    end
    if sub(location, 1, 1) == "/" then
        return origin .. location
    end
    local dir = match(base.target, "^([^?]*/)") or "/"
    return origin .. dir .. location
end

-- ---------------------------------------------------------------- the pool

local pool = { idle = {}, maxIdle = 16, idleTimeout = 30000 }
client.pool = pool

-- Milliseconds of a monotonic clock (system.monotime is in seconds).
local function now_ms()
    return system.hrtime() / 1e6
end

local function checkout(key)
    local list = pool.idle[key]
    if not list then
        return nil
    end
    local t = now_ms()
    while #list > 0 do
        local e = remove(list)
        if t - e.since <= pool.idleTimeout and e.conn:reusable() then
            e.conn:unref(false)
            return e.conn
        end
        e.conn:close()
    end
end

local function checkin(key, conn)
    if not key or not conn:reusable() then
        conn:close()
        return
    end
    local list = pool.idle[key]
    if not list then
        list = {}
        pool.idle[key] = list
    end
    -- Expired connections go first; beyond the cap the oldest is closed.
    local t = now_ms()
    while #list > 0 and (#list >= pool.maxIdle or t - list[1].since > pool.idleTimeout) do
        remove(list, 1).conn:close()
    end
    conn:unref(true) -- an idle pooled connection does not keep the process alive
    list[#list + 1] = { conn = conn, since = t }
end

--- Closes every idle pooled connection.
function client.closeIdle()
    for key, list in pairs(pool.idle) do
        for i = 1, #list do
            list[i].conn:close()
        end
        pool.idle[key] = nil
    end
end

-- ---------------------------------------------------------------- requests

local Response = {}
Response.__index = Response

local where -- where(err, u): the server an error concerns (below)

-- The connection of a streamed response; raises on a wrong self (res.read(5)).
local function conn_of(res, fname)
    if getmetatable(res) ~= Response then
        error(format("%s: expected a streamed response as self, got %s", fname, type(res)), 3)
    end
    return res._conn
end

--- The next piece of a streamed body, nil at its end (the connection then goes back to the
--- pool), or nil and an error table.
function Response:read()
    local conn = conn_of(self, "res:read")
    if not conn then
        return nil
    end
    local piece, err = conn:read()
    if piece == nil then
        self._conn = nil
        if err then
            conn:close()
            err = where(err, self._url)
        else
            checkin(self._key, conn)
        end
    end
    return piece, err
end

--- The rest of a streamed body as one string.
function Response:readAll()
    local conn = conn_of(self, "res:readAll")
    if not conn then
        return ""
    end
    self._conn = nil
    local body, err = conn:body()
    if body then
        checkin(self._key, conn)
    else
        conn:close()
        err = where(err, self._url)
    end
    return body, err
end

--- Gives up a streamed body that will not be read: the connection is closed.
function Response:close()
    if conn_of(self, "res:close") then
        self._conn:close()
        self._conn = nil
    end
end

local errors = require "luaio.errors"
local client_error = errors.new

-- The default bound of a body the client gathers whole (a hostile or broken server must not be
-- able to fill the caller's memory); a streamed body (stream = true) is read piece by piece.
client.maxBodySize = 64 * 1024 * 1024

-- Limits userdata by their values, shared by requests with the same options.
local limits_cache = setmetatable({}, { __mode = "v" })

local function limits_of(opts)
    local h, b = opts.maxHeaderSize, opts.maxBodySize or client.maxBodySize
    local key = tostring(h) .. ":" .. tostring(b)
    local lim = limits_cache[key]
    if not lim then
        lim = core.limits({ maxHeaderSize = h, maxBodySize = b })
        limits_cache[key] = lim
    end
    return lim
end

-- RFC 9110 9.2.2: a request with one of these methods may be sent again.
local idempotent = { GET = true, HEAD = true, PUT = true, DELETE = true, OPTIONS = true, TRACE = true }

-- A request failed on a pooled connection that the server had closed meanwhile: it may go again
-- on a new connection only when it is idempotent, its body can be sent again, and not one byte
-- of a response came back (RFC 9110 9.2.2; Go's net/http and curl do the same).
-- The milliseconds left of the request's timeout (whole, >= 1), nil without one, or nil and
-- ETIMEDOUT once it is over: one deadline bounds connecting, sending, the response and its body,
-- over a retry and a chain of redirects.
local function time_left(req)
    local deadline = req.deadline
    if not deadline then
        return nil
    end
    local left = deadline - now_ms()
    if left <= 0 then
        return nil, client_error("ETIMEDOUT")
    end
    return ceil(left)
end

-- Expect: 100-continue goes with a body of a known length above `size` bytes (as curl does) or
-- with expectContinue = true; the client then waits up to `wait` ms for the server's word
-- before it sends the body (RFC 9110 10.1.1: it need not wait longer).
client.expectContinue = { size = 1024 * 1024, wait = 1000 }

local function expects(req)
    local e = req.expectContinue
    if req.body == nil or e == false then
        return false
    end
    return e or (type(req.framing) == "number" and req.framing > client.expectContinue.size)
end

-- Sends the head of a request that expects 100-continue and waits for the server's word.
-- Returns the final response if it came instead of the 100 (the body is then not sent), or
-- nil and the error; nil alone: the body goes now (the 100 came, or the wait is over).
local function await_continue(conn, req, head)
    local err = conn:request(head, true, req.method == "HEAD", req.framing == true)
    if err then
        return nil, err
    end
    local wait = client.expectContinue.wait
    local left = time_left(req)
    if left and left < wait then
        wait = left
    end
    local sock = conn:socket()
    sock:settimeouts(0, 0, wait >= 1 and ceil(wait) or 1)
    local res
    res, err = conn:response(not req.stream, req.limits, true)
    sock:settimeouts(0, 0, 0)
    local _, late = time_left(req)
    if res == true or (err and err.name == "ETIMEDOUT" and not late) then
        return nil
    end
    return res, err
end

local function may_retry(req, conn, reused, err)
    return reused and idempotent[req.method] and type(req.body) ~= "function" and not conn:replied()
        and err.name ~= "ETIMEDOUT"
end

-- Sends a streamed body: req.body() gives the pieces (strings), nil at the end, or nil and an
-- error table. With a Content-Length (req.framing a number) exactly that many bytes must come.
-- Returns nil or an error table; an error raised by req.body closes conn and is raised again.
local function send_body(conn, req)
    local producer, length, sent = req.body, req.framing, 0
    while true do
        -- A producer that trickles is bounded too: the stream's deadline bounds only its waits.
        local _, late = time_left(req)
        if late then
            return late
        end
        local ok, piece, perr = pcall(producer)
        if not ok then
            conn:close()
            error(piece, 0)
        end
        if piece == nil then
            if perr then
                -- A Lua file's read gives a message, luaio's readers an error table.
                return type(perr) == "table" and perr or client_error("EIO", tostring(perr))
            end
            break
        end
        if type(piece) ~= "string" then
            conn:close()
            error(req.fname .. ": the body function must return strings or nil, got " .. type(piece), 0)
        end
        sent = sent + #piece
        if length ~= true and sent > length then
            return client_error("EINVAL", format("request body: more than the %d bytes of its Content-Length", length))
        end
        local err = conn:write(piece)
        if err then
            return err
        end
    end
    if length ~= true and sent ~= length then
        return client_error("EINVAL", format("request body: %d bytes, its Content-Length is %d", sent, length))
    end
    return conn:finish()
end

-- The latest TLS session of each https pool key: a new connection resumes it (an abbreviated
-- handshake). Taken once per connection, after its first response (TLS 1.3 tickets come after
-- the handshake).
local sessions = {}

-- One request on one connection (from the pool unless fresh, or new). Returns the response, or
-- nil, the error and whether the request may be sent again on a new connection.
local function once(u, req, head, fresh)
    local key = u.scheme .. "://" .. u.host .. ":" .. u.port
    if u.scheme == "https" then
        key = key .. tls_key(req.tls)
    end
    local conn = not fresh and checkout(key) or nil
    local reused = conn ~= nil
    local left, late = time_left(req)
    if late then
        if conn then
            checkin(key, conn)
        end
        return nil, late
    end
    if not conn then
        local o = { timeout = left }
        if u.scheme == "https" then
            for k, v in pairs(req.tls or {}) do
                o[k] = v
            end
            if left then
                o.handshakeTimeout = min(o.handshakeTimeout or require("tls").handshakeTimeout, left)
            end
            o.session = o.session or sessions[key]
        end
        local sock, err = client.transports[u.scheme].connect(u.host, u.port, o)
        if not sock then
            return nil, err
        end
        conn = core.client(sock)
        left, late = time_left(req)
        if late then
            conn:close()
            return nil, late
        end
    end
    -- The request's deadline bounds every wait from here on, not each one (the socket's own
    -- timeouts are off); it stays on for a streamed body, which the caller reads afterwards.
    conn:socket():settimeouts(0, 0, 0)
    conn:deadline(left or 0)
    local streamed, expect = type(req.body) == "function", expects(req)
    local res, err
    if expect then
        res, err = await_continue(conn, req, head)
        if res then
            key = nil -- the server answered without the body, which was not sent: not reused
        end
    else
        err = conn:request(head, streamed or req.body, req.method == "HEAD", req.framing == true)
    end
    if not res and not err then
        if streamed then
            err = send_body(conn, req)
        elseif expect then
            err = conn:write(req.body) or conn:finish()
        end
    end
    if not res and not err then
        res, err = conn:response(not req.stream, req.limits)
    elseif not res and (err.name == "ECONNRESET" or err.name == "EPIPE") then
        -- The server may have answered before the end of the request (413, 401) and closed: then
        -- its answer is the result (the socket is dead, so this does not wait), and the
        -- connection, whose request was cut, is not pooled again.
        res = conn:response(not req.stream, req.limits)
        key = nil
    end
    if not res then
        local again = may_retry(req, conn, reused, err)
        conn:close()
        return nil, err, again
    end
    if not reused and u.scheme == "https" and key then
        sessions[key] = conn:socket():getSession()
    end
    if req.stream then
        res._conn, res._key, res._url = conn, key, u
        setmetatable(res, Response)
    else
        checkin(key, conn)
    end
    return res
end

local request_options = {
    method = true, url = true, headers = true, body = true, timeout = true, redirect = true, stream = true,
    maxBodySize = true, maxHeaderSize = true, tls = true, expectContinue = true,
}

-- An object that gives a body by pieces with its read method: a request being served, a streamed
-- response, a Lua file.
local function reader(body)
    local t = type(body)
    if t ~= "table" and t ~= "userdata" then
        return false
    end
    local ok, read = pcall(function()
        return body.read
    end)
    return ok and type(read) == "function"
end

local function check_request(opts, fname, level)
    if type(opts) ~= "table" then
        error(format("%s: expected a table {method, url, headers, body, timeout}, got %s", fname, type(opts)), level)
    end
    for k in pairs(opts) do
        if not request_options[k] then
            error(format("%s: unknown option '%s'", fname, tostring(k)), level)
        end
    end
    if type(opts.url) ~= "string" then
        error(fname .. ": 'url' must be a string", level)
    end
    if opts.method ~= nil and type(opts.method) ~= "string" then
        error(fname .. ": 'method' must be a string", level)
    end
    local body = opts.body
    if body ~= nil and type(body) ~= "string" and type(body) ~= "function" and not reader(body) then
        error(fname .. ": 'body' must be a string, a function that returns the pieces of the body or an object with a read method", level)
    end
    if opts.headers ~= nil and type(opts.headers) ~= "table" then
        error(fname .. ": 'headers' must be a table", level)
    end
    if opts.expectContinue ~= nil and type(opts.expectContinue) ~= "boolean" then
        error(fname .. ": 'expectContinue' must be a boolean", level)
    end
    local r = opts.redirect
    if r ~= nil and type(r) ~= "boolean" and (type(r) ~= "number" or r < 0 or r % 1 ~= 0) then
        error(fname .. ": 'redirect' must be true, false or a non-negative integer", level)
    end
    for _, k in pairs({ "timeout", "maxBodySize", "maxHeaderSize" }) do
        local v = opts[k]
        if v ~= nil and (type(v) ~= "number" or v < 0) then
            error(format("%s: '%s' must be a non-negative number", fname, k), level)
        end
    end
end

-- The request's own copy of its headers, without Content-Length and Transfer-Encoding: the
-- framing is luaio's. Returns the copy and the framing: the body's length, true (chunked) or nil.
local function framing_of(headers, body, fname, level)
    local copy, length, te = {}, nil, nil
    for k, v in pairs(headers or {}) do
        local l = type(k) == "string" and lower(k)
        if l == "content-length" then
            length = v
        elseif l == "transfer-encoding" then
            te = v
        else
            copy[k] = v
        end
    end
    if length ~= nil then
        local n = tonumber(length)
        if te ~= nil or not n or n < 0 or n % 1 ~= 0 or not match(tostring(length), "^%d+$") then
            error(format("%s: invalid Content-Length '%s'%s", fname, tostring(length), te and " with Transfer-Encoding" or ""), level)
        end
        length = n
    end
    if te ~= nil and (type(body) ~= "function" or lower(tostring(te)) ~= "chunked") then
        error(fname .. ": Transfer-Encoding is luaio's: only 'chunked' with a body function", level)
    end
    if type(body) == "string" then
        if length and length ~= #body then
            error(format("%s: Content-Length %d for a body of %d bytes", fname, length, #body), level)
        end
        return copy, #body
    elseif type(body) == "function" then
        return copy, length or true
    end
    if length and length ~= 0 then
        error(format("%s: Content-Length %d without a body", fname, length), level)
    end
    return copy, nil
end

-- The head of req for the URL u (Host and User-Agent unless given). Raises (at `level`) on an
-- invalid method, target or header, before any connection is made.
local function head_of(u, req, level)
    local default_port = client.transports[u.scheme].default_port
    local host = find(u.host, ":", 1, true) and ("[" .. u.host .. "]") or u.host
    local headers = { Host = u.port == default_port and host or (host .. ":" .. u.port), ["User-Agent"] = "luaio",
        Expect = expects(req) and "100-continue" or nil }
    for k, v in pairs(req.headers) do
        local l = type(k) == "string" and lower(k)
        if l == "host" then
            headers.Host = nil
        elseif l == "user-agent" then
            headers["User-Agent"] = nil
        end
        headers[k] = v
    end
    local ok, head = pcall(core.requesthead, req.method, u.target, headers, req.framing, req.fname)
    if not ok then
        error(head, 0) -- the binding's message already points at the caller
    end
    return head
end

local function origin(u)
    return u.scheme .. "://" .. lower(u.host) .. ":" .. u.port
end

-- Headers that must not follow a redirect to another origin, and those of a body that a
-- redirect turned into a GET drops (as the Fetch standard says).
local credentials = { authorization = true, cookie = true, ["proxy-authorization"] = true, host = true }
local body_headers = { ["content-type"] = true, ["content-encoding"] = true, ["content-language"] = true, ["content-location"] = true }

local function without(headers, names)
    local copy = {}
    for k, v in pairs(headers) do
        if not (type(k) == "string" and names[lower(k)]) then
            copy[k] = v
        end
    end
    return copy
end

-- A luaio error says which server it concerns (a connect error already has its address).
function where(err, u)
    if getmetatable(err) == errors.metatable and err.host == nil and err.address == nil then
        if tcp.isIP(u.host) ~= 0 then
            err.address = u.host
        else
            err.host = u.host
        end
        err.port = u.port
    end
    return err
end

local redirect_status = { [301] = true, [302] = true, [303] = true, [307] = true, [308] = true }

local function request(opts, fname, level)
    check_request(opts, fname, level + 1)
    local method = opts.method or "GET"
    local body = opts.body
    if reader(body) then
        local source = body
        body = function()
            return source:read(65536)
        end
    end
    local headers, framing = framing_of(opts.headers, body, fname, level + 1)
    local timeout = opts.timeout
    local req = {
        method = method, headers = headers, body = body, framing = framing,
        deadline = timeout and timeout > 0 and now_ms() + timeout or nil,
        stream = opts.stream, tls = opts.tls, limits = limits_of(opts), expectContinue = opts.expectContinue,
        fname = fname,
    }
    -- A given Expect: 100-continue is the option (and is sent once, by head_of).
    for k, v in pairs(headers) do
        if type(k) == "string" and lower(k) == "expect" and lower(tostring(v)) == "100-continue" then
            headers[k] = nil
            req.expectContinue = true
        end
    end
    local url = opts.url
    local redirects = opts.redirect == true and 5 or tonumber(opts.redirect) or 0
    local u, msg = client.parse_url(url)
    if not u then
        return nil, client_error("EINVAL", msg)
    end
    for _ = 0, redirects do
        local head = head_of(u, req, level + 1)
        local res, err, again = once(u, req, head, false)
        if again then
            res, err = once(u, req, head, true)
        end
        if not res then
            return nil, where(err, u)
        end
        local status = res.status
        local location = res.headers.location
        -- A streamed body cannot be sent again: a 307 or 308 is then the caller's to follow.
        if redirects == 0 or not location or not redirect_status[status]
            or (type(req.body) == "function" and (status == 307 or status == 308)) then
            return res
        end
        if res.close then
            res:close()
        end
        local nu
        nu, msg = client.parse_url(resolve_location(u, location))
        if not nu then
            return nil, client_error("EINVAL", "redirect: " .. msg)
        end
        if origin(nu) ~= origin(u) then
            req.headers = without(req.headers, credentials)
        end
        -- 301 and 302 turn a POST into a GET, 303 anything but GET and HEAD (as browsers and curl).
        local m = req.method
        if (status == 303 and m ~= "GET" and m ~= "HEAD") or ((status == 301 or status == 302) and m == "POST") then
            req.method, req.body, req.framing = "GET", nil, nil
            req.headers = without(req.headers, body_headers)
        end
        u = nu
    end
    return nil, client_error("ETOOMANYREDIRECTS", "more than " .. redirects .. " redirects")
end

--- http.request{method = "GET", url, headers, body, timeout = ms, redirect = n, stream = bool, expectContinue,
--- maxBodySize, maxHeaderSize}. body: a string, a function that returns the pieces (nil at the
--- end), or an object whose read method does (a request being served, a streamed response, a file). Returns the response {status, reason, headers, httpVersion, body} or nil and an error table.
function client.request(opts)
    local res, err = request(opts, "http.request", 3)
    return res, err
end

--- http.get(url[, options]): a GET request.
function client.get(url, options)
    if type(url) ~= "string" then
        error("http.get: expected a URL string as argument 1, got " .. type(url), 2)
    end
    local o = { url = url, method = "GET" }
    if options then
        for k, v in pairs(options) do
            if k ~= "url" then
                o[k] = v
            end
        end
    end
    local res, err = request(o, "http.get", 3)
    return res, err
end

return client
