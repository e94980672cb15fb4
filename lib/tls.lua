--- tls: TLS servers and clients, tcp sockets with a TLS session (see docs/tls.md).
--
--   local server, err = tls.createServer(port, function(sock, server) ... end, options)
--   local sock, err = tls.connect(port, host, options)
--   local err = tls.upgrade(sock, options)       -- also sock:upgrade(options): STARTTLS
--   sock:tlsInfo() -> {version, cipher, alpn, servername, resumed, authorized, peerCertificate}
--   sock:getSession() -> a session string for tls.connect{session = ...}; server:setCertificate{cert, key}
--
-- A TLS socket is a tcp socket whose Stream has a TLS transport (runtime/tls.cpp): read, write,
-- readline, timeouts and close are the tcp socket's. The contexts (certificates, CAs, ALPN,
-- versions) are OpenSSL's SSL_CTX, made by modules/tls.cpp.
local tcp = require "tcp" -- first: luaio.tls adds tlsInfo to its sockets
local core = require "luaio.tls"
local tcp_core = require "luaio.tcp"
local raise = require("luaio.errors").raise

local type, error, pairs, tostring, concat = type, error, pairs, tostring, table.concat
local format, find, gsub, lower, match = string.format, string.find, string.gsub, string.lower, string.match
local context, attach, handshake, sni_done = core.context, core.attach, core.handshake, core.sniDone
local spawn = require("task").spawn

local tls = {}

-- Default handshake timeout (milliseconds), Node's.
tls.handshakeTimeout = 10000

-- The options that are TLS's; the others go to tcp.
local TLS_OPTIONS = {
    cert = "string", key = "string", ca = "string", alpn = "table", minVersion = "string",
    ciphers = "string", ciphersuites = "string", handshakeTimeout = "number", requestCert = "boolean",
    rejectUnauthorized = "boolean", servername = "string", verify = "boolean", sni = "table|function",
    session = "string", sessionTickets = "boolean", ticketKeyRotation = "number",
}

-- Splits options into the TLS ones (checked) and a copy of the others, for tcp: those must be
-- names in `tcp_names` (tcp's options of the call; nil: none), so that a misspelled option is
-- reported first, at the caller's line, not as a missing certificate.
local function split(options, fname, tcp_names)
    if options == nil then
        return {}, nil
    end
    if type(options) ~= "table" then
        raise(fname, "expected an options table, got " .. type(options))
    end
    local t, rest = {}, nil
    for k, v in pairs(options) do
        local want = TLS_OPTIONS[k]
        if want then
            if type(v) ~= want and not find(want, type(v), 1, true) then
                raise(fname, format("option '%s' must be a %s, got %s", k, (gsub(want, "|", " or ")), type(v)))
            end
            t[k] = v
        elseif tcp_names and tcp_names[k] then
            rest = rest or {}
            rest[k] = v
        else
            raise(fname, format("unknown option '%s'", tostring(k)))
        end
    end
    return t, rest
end

-- The certificate reload of each TLS server (server:setCertificate).
local reloaders = setmetatable({}, { __mode = "k" })

-- Client contexts are cached by their settings: loading the system's CA store costs milliseconds.
local client_contexts = setmetatable({}, { __mode = "v" })

local function client_context(t)
    local key = concat({ tostring(t.ca), tostring(t.cert), tostring(t.key), tostring(t.verify),
        t.alpn and concat(t.alpn, ",") or "", tostring(t.minVersion), tostring(t.ciphers),
        tostring(t.ciphersuites) }, "\0")
    local ctx = client_contexts[key]
    if ctx then
        return ctx
    end
    local err
    ctx, err = context({ server = false, ca = t.ca, cert = t.cert, key = t.key, verify = t.verify,
        alpn = t.alpn, minVersion = t.minVersion, ciphers = t.ciphers, ciphersuites = t.ciphersuites })
    if ctx then
        client_contexts[key] = ctx
    end
    return ctx, err
end

-- The secret that session ticket keys are derived from under `luaio --workers`: the master's,
-- the same in every worker, so a session resumes on whichever worker the connection reaches.
-- nil in a process of its own (its keys are random).
local function worker_secret()
    local worker = package.loaded["luaio.worker"]
    return worker and worker.ticketSecret and worker.ticketSecret() or nil
end

-- The options of a server context: t's, with `with`'s on top (a certificate of sni, a reload).
-- A context with keys of its own (not those of another, ticketsOf) gets the workers' secret.
local function context_options(t, with)
    local o = { server = true }
    for k, v in pairs(t) do
        if k ~= "sni" then
            o[k] = v
        end
    end
    for k, v in pairs(with or {}) do
        o[k] = v
    end
    if not o.ticketsOf and o.sessionTickets ~= false then
        o.ticketSecret = worker_secret()
    end
    return o
end

local function check_pair(c, fname, what)
    if type(c) ~= "table" or type(c.cert) ~= "string" or type(c.key) ~= "string" then
        raise(fname, what .. " must be a table {cert = ..., key = ...}")
    end
end

-- The SNI selector of a server context: modules/tls.cpp calls select(name, wait) with the name
-- the client sent, in its client hello callback. The host names of the sni table (exact, then
-- "*.example.com") answer at once; the sni function runs in a task of its own (it may wait:
-- dns, fs, redis ...) and select returns `wait`: the handshake waits for core.sniDone(wait,
-- ok, context). The function's {cert, key} tables become contexts once.
local function sni_selector(t, base_of, fname)
    local sni = t.sni
    local hosts, made = {}, setmetatable({}, { __mode = "k" })
    local fn = type(sni) == "function" and sni or nil
    local function make(pair)
        local ctx, err = context(context_options(t, { cert = pair.cert, key = pair.key, ticketsOf = base_of() }))
        if not ctx then
            error(err)
        end
        return ctx
    end
    local function pick(name)
        local pair = fn(name)
        if pair == nil then
            return nil
        end
        check_pair(pair, "sni", "the result of the sni function")
        local ctx = made[pair] or make(pair)
        made[pair] = ctx
        return ctx
    end
    local function run(name, wait)
        sni_done(wait, pcall(pick, name))
    end
    return function(name, wait)
        name = lower(name)
        local ctx = hosts[name] or hosts["*." .. (match(name, "^[^.]+%.(.+)$") or "")]
        if ctx or not fn then
            return ctx
        end
        spawn(run, name, wait)
        return wait
    end, function()
        if type(sni) ~= "table" then
            return
        end
        for host, pair in pairs(sni) do
            if type(host) ~= "string" then
                raise(fname, "the keys of option 'sni' must be host names")
            end
            check_pair(pair, fname, format("sni[%q]", host))
            local ctx, err = context(context_options(t, { cert = pair.cert, key = pair.key, ticketsOf = base_of() }))
            if not ctx then
                return err
            end
            hosts[lower(host)] = ctx
        end
    end
end

local function server_context(t, fname)
    if not t.cert or not t.key then
        raise(fname, "options cert and key are required")
    end
    if not t.sni then
        return context(context_options(t))
    end
    local base
    local select, fill = sni_selector(t, function()
        return base
    end, fname)
    local err
    base, err = context(context_options(t, { select = select }))
    if not base then
        return nil, err
    end
    err = fill()
    if err then
        return nil, err
    end
    return base
end

-- A server's reloadable context: ctx() the current one; reload{cert, key} makes a new one (same
-- options, same session ticket keys) for the connections that come next.
local function reloadable(t, fname)
    local ctx, err = server_context(t, fname)
    if not ctx then
        return nil, err
    end
    local holder = {}
    function holder.ctx()
        return ctx
    end
    function holder.reload(pair)
        check_pair(pair, "setCertificate", "argument 1")
        local o = {}
        for k, v in pairs(t) do
            o[k] = v
        end
        o.cert, o.key, o.ticketsOf = pair.cert, pair.key, ctx
        local new, rerr = server_context(o, "setCertificate")
        if not new then
            return rerr
        end
        ctx = new
        return nil
    end
    return holder
end

local function timeout_of(t, fname)
    local ms = t.handshakeTimeout or tls.handshakeTimeout
    if ms < 0 then
        raise(fname or "tls", "handshakeTimeout must be a non-negative number of milliseconds")
    end
    return ms
end

-- Starts a client session on sock and waits for its handshake. Returns nil or the error
-- (the socket is then closed).
local function client_session(sock, host, t, fname)
    local ctx, err = client_context(t)
    if not ctx then
        sock:close()
        return err
    end
    local servername = t.servername
    if servername == nil and host and tcp.isIP(host) == 0 then
        servername = host
    end
    local verify_host = t.verify ~= false and (t.servername or host) or nil
    err = attach(sock, ctx, false, servername, verify_host, t.session)
    if not err then
        local ok
        ok, err = handshake(sock, timeout_of(t, fname))
        if ok then
            return nil
        end
    end
    sock:close()
    if type(err) == "table" and host then
        err.host = host
    end
    return err
end

--- Listens on port and runs onconnect(sock, server) in a new task for every connection whose
--- handshake succeeded (the others are closed). Options: tcp.createServer's, cert, key (paths or
--- PEM), ca, requestCert, rejectUnauthorized, alpn, minVersion, ciphers, ciphersuites,
--- handshakeTimeout, sni, sessionTickets, ticketKeyRotation. Returns the server, or nil and an
--- error table.
function tls.createServer(port, onconnect, options)
    local fname = "tls.createServer"
    if type(onconnect) ~= "function" then
        raise(fname, "expected a function as argument 2, got " .. type(onconnect))
    end
    local t, rest = split(options, fname, tcp_core.listenOptions)
    local ms = timeout_of(t, fname)
    local holder, err = reloadable(t, fname)
    if not holder then
        return nil, err
    end
    local ctx = holder.ctx
    local srv
    srv, err = tcp._createServer(port, function(sock, server)
        attach(sock, ctx(), true)
        if not handshake(sock, ms) then
            return sock:close()
        end
        return onconnect(sock, server)
    end, rest, fname)
    if srv then
        reloaders[srv] = holder.reload
    end
    return srv, err
end

--- Connects to host:port and does the handshake, verifying the server's certificate chain
--- (against ca, default the system's store) and its name (servername, default host). Options:
--- tcp.connect's, servername, ca, verify (default true), cert, key, alpn, minVersion,
--- handshakeTimeout. Returns the socket, or nil and an error table.
function tls.connect(port, host, options)
    if type(host) == "table" and options == nil then
        host, options = nil, host
    end
    local fname = "tls.connect"
    local t, rest = split(options, fname, tcp_core.connectOptions)
    timeout_of(t, fname)
    local sock, err = tcp._connect(port, host, rest, fname)
    if not sock then
        return nil, err
    end
    err = client_session(sock, host or (rest and rest.family == 6 and "::1") or "127.0.0.1", t, fname)
    if err then
        return nil, err
    end
    return sock
end

--- STARTTLS: puts a TLS session on a connected tcp socket. options.server = true for the
--- server side (with cert and key), otherwise the client side (options.host: the name to verify).
--- Returns nil, or the error (the socket is then closed).
function tls.upgrade(sock, options)
    if type(options) ~= "table" then
        raise("tls.upgrade", "expected an options table as argument 2, got " .. type(options))
    end
    local server, host = options.server, options.host
    local copy = {}
    for k, v in pairs(options) do
        if k ~= "server" and k ~= "host" then
            copy[k] = v
        end
    end
    local t = split(copy, "tls.upgrade")
    if server then
        local ctx, err = server_context(t, "tls.upgrade")
        if not ctx then
            return err
        end
        attach(sock, ctx, true)
        local ok, herr = handshake(sock, timeout_of(t, "tls.upgrade"))
        if not ok then
            sock:close()
            return herr
        end
        return nil
    end
    return client_session(sock, host, t, "tls.upgrade")
end

-- For http: the reloadable server context of http.createServer's tls options (nil, err when
-- they are bad): holder.ctx() and holder.reload{cert, key}.
function tls._server_context(options, fname)
    local t = split(options, fname)
    return reloadable(t, fname)
end
tls._attach, tls._handshake, tls._client_session = attach, handshake, client_session
tls._split = split

-- sock:upgrade(options) on every tcp socket; server:setCertificate{cert, key} on tcp servers
-- (those of tls.createServer; the others raise).
do
    local mt = debug.getregistry()["luaio.tcp.socket"]
    if mt and type(mt.__index) == "table" then
        mt.__index.upgrade = tls.upgrade
    end
    local smt = debug.getregistry()["luaio.tcp.server"]
    if smt and type(smt.__index) == "table" then
        --- Uses another certificate and key (paths or PEM) for the connections that come next; the
        --- open ones keep theirs. Returns nil, or the error (the old certificate stays).
        smt.__index.setCertificate = function(server, pair)
            local reload = reloaders[server]
            if not reload then
                error("setCertificate: not a TLS server", 2)
            end
            return reload(pair)
        end
    end
end

return tls
