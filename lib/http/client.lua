--- http.client: HTTP/1.1 requests with a keep-alive connection pool (see docs/http.md).
--
-- A transport turns (host, port, options) into a connected stream; "http" is plain tcp and
-- the TLS module registers "https" in http.transports with the same shape. Framing and
-- parsing are C++ (modules/http.cpp); this file does URLs, the pool and redirects.
local core = require "luaio.http"
local tcp = require "tcp"
local system = require "system"

local type, tostring, tonumber, setmetatable, error, pairs, pcall =
    type, tostring, tonumber, setmetatable, error, pairs, pcall
local match, lower, format, find, sub = string.match, string.lower, string.format, string.find, string.sub
local remove = table.remove

local client = {}

-- ---------------------------------------------------------------- transports

client.transports = {
    http = {
        default_port = 80,
        connect = function(host, port, options)
            return tcp.connect(port, host, options)
        end,
    },
}

-- ---------------------------------------------------------------- URLs

--- Splits an absolute URL: scheme, host, port, target ("/path?query"). nil and a message if invalid.
function client.parse_url(url)
    local scheme, authority, rest = match(url, "^(%a[%w+.-]*)://([^/?#]*)(.*)$")
    if not scheme then
        return nil, "not an absolute URL: " .. url
    end
    scheme = lower(scheme)
    authority = match(authority, "^.*@(.*)$") or authority
    local host, port
    if sub(authority, 1, 1) == "[" then
        host, port = match(authority, "^%[([^%]]+)%]:?(%d*)$")
    else
        host, port = match(authority, "^([^:]+):?(%d*)$")
    end
    if not host or host == "" then
        return nil, "no host in URL: " .. url
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

local function now_ms()
    return system.monotime and system.monotime() or (system.hrtime() / 1e6)
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
    if not conn:reusable() then
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

--- The next piece of a streamed body, nil at its end (the connection then goes back to the
--- pool), or nil and an error table.
function Response:read()
    local conn = self._conn
    if not conn then
        return nil
    end
    local piece, err = conn:read()
    if piece == nil then
        self._conn = nil
        if err then
            conn:close()
        else
            checkin(self._key, conn)
        end
    end
    return piece, err
end

--- The rest of a streamed body as one string.
function Response:readAll()
    local conn = self._conn
    if not conn then
        return ""
    end
    self._conn = nil
    local body, err = conn:body()
    if body then
        checkin(self._key, conn)
    else
        conn:close()
    end
    return body, err
end

--- Gives up a streamed body that will not be read: the connection is closed.
function Response:close()
    if self._conn then
        self._conn:close()
        self._conn = nil
    end
end

local client_error = require("luaio.errors").new

local limits_cache = setmetatable({}, { __mode = "k" })

-- One request on one connection (from the pool or new). Returns the response or nil, err.
local function once(u, opts)
    local key = u.scheme .. "://" .. u.host .. ":" .. u.port
    local method = opts.method
    local conn = checkout(key)
    local reused = conn ~= nil
    local timeout = opts.timeout
    if not conn then
        local sock, err = client.transports[u.scheme].connect(u.host, u.port, { timeout = timeout })
        if not sock then
            return nil, err
        end
        local limits = limits_cache[opts]
        if not limits then
            limits = core.limits({ maxHeaderSize = opts.maxHeaderSize, maxBodySize = opts.maxBodySize or 1e15 })
            limits_cache[opts] = limits
        end
        conn = core.client(sock, limits)
    end
    local sock = conn:socket()
    if timeout then
        sock:settimeouts(timeout, timeout, timeout)
    else
        sock:settimeouts(0, 0, 0)
    end
    local headers = { Host = u.port == client.transports[u.scheme].default_port and u.host or (u.host .. ":" .. u.port) }
    if find(u.host, ":", 1, true) then
        headers.Host = "[" .. u.host .. "]" .. (u.port == client.transports[u.scheme].default_port and "" or (":" .. u.port))
    end
    headers["User-Agent"] = "luaio"
    if opts.headers then
        for k, v in pairs(opts.headers) do
            local l = lower(k)
            if l == "host" then
                headers.Host = nil
            elseif l == "user-agent" then
                headers["User-Agent"] = nil
            end
            headers[k] = v
        end
    end
    local err = conn:request(method, u.target, headers, opts.body)
    if err then
        conn:close()
        if reused then
            return nil, "retry"
        end
        return nil, err
    end
    local res
    res, err = conn:response(not opts.stream)
    if not res then
        conn:close()
        if reused and err and (err.name == "EOF" or err.name == "ECONNRESET") and res == nil then
            return nil, "retry" -- the server closed the pooled connection meanwhile
        end
        return nil, err
    end
    if opts.stream then
        res._conn, res._key = conn, key
        setmetatable(res, Response)
    else
        checkin(key, conn)
    end
    return res
end

local function check_request(opts, fname)
    if type(opts) ~= "table" then
        error(format("%s: expected a table {method, url, headers, body, timeout}, got %s", fname, type(opts)), 3)
    end
    if type(opts.url) ~= "string" then
        error(fname .. ": 'url' must be a string", 3)
    end
    if opts.body ~= nil and type(opts.body) ~= "string" then
        error(fname .. ": 'body' must be a string", 3)
    end
    if opts.headers ~= nil and type(opts.headers) ~= "table" then
        error(fname .. ": 'headers' must be a table", 3)
    end
    if opts.timeout ~= nil and (type(opts.timeout) ~= "number" or opts.timeout < 0) then
        error(fname .. ": 'timeout' must be a non-negative number of milliseconds", 3)
    end
end

--- http.request{method = "GET", url, headers, body, timeout = ms, redirect = n, stream = bool}
--- Returns the response {status, reason, headers, httpVersion, body} or nil and an error table.
function client.request(opts)
    check_request(opts, "request")
    local method = opts.method or "GET"
    local url = opts.url
    local redirects = opts.redirect == true and 5 or tonumber(opts.redirect) or 0
    local o = opts
    if method ~= opts.method then
        o = setmetatable({ method = method }, { __index = opts })
    end
    for _ = 0, redirects do
        local u, msg = client.parse_url(url)
        if not u then
            return nil, client_error("EINVAL", msg)
        end
        local res, err = once(u, o)
        if err == "retry" then
            res, err = once(u, o)
            if err == "retry" then
                err = client_error("ECONNRESET", "connection closed by the server")
            end
        end
        if not res then
            return nil, err
        end
        local status = res.status
        local location = res.headers.location
        if redirects == 0 or not location or not (status == 301 or status == 302 or status == 303 or status == 307 or status == 308) then
            return res
        end
        if res.close then
            res:close()
        end
        url = resolve_location(u, location)
        if status == 303 or ((status == 301 or status == 302) and method == "POST") then
            local copy = {}
            for k, v in pairs(opts) do
                copy[k] = v
            end
            copy.method, copy.body, method = "GET", nil, "GET"
            o = copy
        end
    end
    return nil, client_error("ETOOMANYREDIRECTS", "more than " .. redirects .. " redirects")
end

--- http.get(url[, options]): a GET request.
function client.get(url, options)
    if type(url) ~= "string" then
        error("get: expected a URL string as argument 1, got " .. type(url), 2)
    end
    local o = { url = url, method = "GET" }
    if options then
        for k, v in pairs(options) do
            if k ~= "url" then
                o[k] = v
            end
        end
    end
    return client.request(o)
end

return client
