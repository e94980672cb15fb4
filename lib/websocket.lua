--- websocket: RFC 6455 servers and clients (see docs/websocket.md).
--
--   local ws, err = websocket.accept(req, res, {protocols = {"chat"}})
--   for msg, kind in ws:messages() do ws:send(msg, kind) end
--
-- Frames are parsed and judged in C++ (modules/websocket_frame.h, through modules/websocket.cpp,
-- a Consumer of the stream: ws:receive() waits on the stream's one read mechanism). This file
-- does the handshakes, the automatic pongs and the closing handshake.
local core = require "luaio.websocket"
local errors = require "luaio.errors"
local client = require "http.client"
local tcp = require "tcp"
local timer = require "timer"

local type, tostring, tonumber, setmetatable, getmetatable, ipairs, pairs =
    type, tostring, tonumber, setmetatable, getmetatable, ipairs, pairs
local lower, find, match, gmatch, char, byte, sub, format =
    string.lower, string.find, string.match, string.gmatch, string.char, string.byte, string.sub, string.format
local floor = math.floor
local raise, new_error = errors.raise, errors.new
local send_frame, accept_key, key_bytes = core.send, core.accept_key, core.key_bytes

local TEXT, BINARY, CLOSE, PING, PONG = 1, 2, 8, 9, 10
local DEFAULT_MAX_MESSAGE = 16 * 1024 * 1024
local DEFAULT_CLOSE_TIMEOUT = 5000
local DEFAULT_SEND_TIMEOUT = 60000

local websocket = {}

local WebSocket = {}
WebSocket.__index = WebSocket

local function check(self, fname)
    if getmetatable(self) ~= WebSocket then
        raise(fname, "expected a websocket as self, got " .. type(self) .. " (call it with ':')")
    end
end

-- Whether a close code may be sent (RFC 6455 7.4): the same rule as the C++ parser's.
local function valid_code(c)
    return (c >= 1000 and c <= 1003) or (c >= 1007 and c <= 1011) or (c >= 3000 and c <= 4999)
end

local function close_payload(code, reason)
    if not code then
        return ""
    end
    return char(floor(code / 256), code % 256) .. (reason or "")
end

-- Writes one frame. A pong that the reader could not write because a writer was busy goes
-- after the writer's frame (one writer at a time on a stream).
local function write(self, op, data)
    local err = send_frame(self._sock, op, data, self._mask, self._frames)
    if not err and self._pong then
        local p = self._pong
        self._pong = nil
        err = send_frame(self._sock, PONG, p, self._mask)
    end
    return err
end

-- The connection is over: the socket closes, and later calls get `err`.
local function finish(self, err)
    if self._state ~= "closed" then
        self._state = "closed"
        self._err = err
        self._sock:close()
        if self._pinger then
            self._pinger:stop()
            self._pinger = nil
        end
    end
    return nil, self._err
end

local function closed_error(code, reason, message)
    return new_error("EOF", message or "the WebSocket connection was closed", { closeCode = code, reason = reason or "" })
end

--- msg, kind = ws:receive(): the next whole message and "text" or "binary"; pings are answered
--- on the way. nil, err at the end: err.name "EOF" with err.closeCode and err.reason when the
--- peer closed; a protocol violation by the peer is closed with its code (err.closeCode).
function WebSocket:receive()
    check(self, "receive")
    if self._state == "closed" then
        return nil, self._err
    end
    if self._reading then
        return nil, new_error("EBUSY", "another task is already receiving on this websocket")
    end
    self._reading = true
    while true do
        local kind, data, code = self._frames:receive(self._sock)
        if kind == "text" or kind == "binary" then
            self._reading = false
            return data, kind
        elseif kind == "ping" then
            if self._state == "open" then
                local err = send_frame(self._sock, PONG, data, self._mask)
                if err and err.name == "EBUSY" then
                    self._pong = data
                end
            end
        elseif kind == "pong" then
            self._ponged = true
        elseif kind == "close" then
            -- The peer closes: answer with its code (none for 1005) unless we closed first.
            self._reading = false
            if self._state == "open" then
                self._state = "closing"
                send_frame(self._sock, CLOSE, code ~= 1005 and close_payload(code, "") or "", self._mask)
            end
            return finish(self, closed_error(code, data, "closed by the peer"))
        elseif kind == "error" then
            -- The peer broke the protocol: close with the code the parser chose.
            self._reading = false
            if self._state == "open" then
                self._state = "closing"
                send_frame(self._sock, CLOSE, close_payload(code, ""), self._mask)
            end
            local name = code == 1009 and "EMSGSIZE" or "EPROTO"
            return finish(self, new_error(name, data, { closeCode = code, reason = "" }))
        else
            -- The stream ended or failed without a close frame (closeCode 1006, RFC 6455 7.1.5).
            self._reading = false
            local err = data
            err.closeCode, err.reason = 1006, ""
            return finish(self, err)
        end
    end
end

--- for msg, kind in ws:messages() do ... end: messages until the connection ends.
function WebSocket:messages()
    check(self, "messages")
    return function()
        return self:receive()
    end
end

local function check_payload(data, fname, n)
    local t = type(data)
    if t == "string" then
        return
    end
    if t == "table" then
        for i = 1, #data do
            if type(data[i]) ~= "string" then
                raise(fname, format("expected an array of strings, got %s at %d", type(data[i]), i))
            end
        end
        return
    end
    raise(fname, format("expected a string or an array of strings as argument %d, got %s", n, t))
end

--- err = ws:send(data[, "binary"]): one message (text by default); a table of strings is sent
--- as one message.
function WebSocket:send(data, kind)
    check(self, "send")
    check_payload(data, "send", 1)
    local op = TEXT
    if kind == "binary" then
        op = BINARY
    elseif kind ~= nil and kind ~= "text" then
        raise("send", "kind must be 'text' or 'binary', got " .. tostring(kind))
    end
    if self._state ~= "open" then
        return self._err or new_error("EPIPE", "the WebSocket connection is closing")
    end
    return write(self, op, data)
end

--- err = ws:ping([data]): a ping (at most 125 bytes); the peer's pong is taken by receive().
function WebSocket:ping(data)
    check(self, "ping")
    data = data or ""
    if type(data) ~= "string" then
        raise("ping", "expected a string as argument 1, got " .. type(data))
    end
    if #data > 125 then
        raise("ping", "a ping carries at most 125 bytes")
    end
    if self._state ~= "open" then
        return self._err or new_error("EPIPE", "the WebSocket connection is closing")
    end
    return write(self, PING, data)
end

--- err = ws:close([code[, reason]]): the closing handshake (code 1000 by default). Waits for the
--- peer's close frame (closeTimeout, default 5 s) unless another task is receiving, which then
--- sees it; then the socket closes.
function WebSocket:close(code, reason)
    check(self, "close")
    if code ~= nil and (type(code) ~= "number" or code ~= floor(code) or not valid_code(code)) then
        raise("close", "invalid close code " .. tostring(code) .. " (1000-1003, 1007-1011, 3000-4999)")
    end
    if reason ~= nil and type(reason) ~= "string" then
        raise("close", "expected a string as the reason, got " .. type(reason))
    end
    if reason and #reason > 123 then
        raise("close", "a close reason is at most 123 bytes")
    end
    if reason and reason ~= "" and not code then
        code = 1000
    end
    if self._state ~= "open" then
        return nil
    end
    self._state = "closing"
    code = code or 1000
    local err = write(self, CLOSE, close_payload(code, reason))
    if err then
        finish(self, err)
        return err
    end
    self._err = closed_error(code, reason or "", "closed by this side")
    if self._reading then
        return nil -- the receiving task gets the peer's answer and closes the socket
    end
    self._sock:settimeouts(nil, self._sendTimeout, self._closeTimeout)
    self._reading = true
    -- Messages still coming are dropped; the handshake ends with the peer's close or a timeout.
    while true do
        local kind = self._frames:receive(self._sock)
        if kind ~= "text" and kind ~= "binary" and kind ~= "ping" and kind ~= "pong" then
            break
        end
    end
    self._reading = false
    local e = self._err
    self._state = "closing"
    finish(self, e)
    return nil
end

--- The peer's address (ip, port), as sock:remoteAddress().
function WebSocket:remoteAddress()
    check(self, "remoteAddress")
    return self._sock:remoteAddress()
end

local known_options = {
    protocols = true, origins = true, deflate = true, pingInterval = true, maxMessageSize = true, maxFrameSize = true, idleTimeout = true, closeTimeout = true,
    sendTimeout = true, headers = true, timeout = true, tls = true,
}

local function check_options(o, fname)
    if o == nil then
        return {}
    end
    if type(o) ~= "table" then
        raise(fname, "expected a table of options, got " .. type(o))
    end
    for k in pairs(o) do
        if not known_options[k] then
            raise(fname, "unknown option '" .. tostring(k) .. "'")
        end
    end
    for _, k in ipairs({ "pingInterval", "maxMessageSize", "maxFrameSize", "idleTimeout", "closeTimeout", "sendTimeout", "timeout" }) do
        local v = o[k]
        if v ~= nil and (type(v) ~= "number" or v < 0 or (k == "maxMessageSize" and v < 1)) then
            raise(fname, "'" .. k .. "' must be a positive number")
        end
    end
    if o.origins ~= nil and type(o.origins) ~= "table" and type(o.origins) ~= "function" then
        raise(fname, "'origins' must be an array of origins or a function(origin, req)")
    end
    if o.protocols ~= nil then
        if type(o.protocols) ~= "table" then
            raise(fname, "'protocols' must be an array of strings")
        end
        for _, p in ipairs(o.protocols) do
            if type(p) ~= "string" or not match(p, "^[!#$%%&'*+%-.^_`|~%w]+$") then
                raise(fname, "'protocols' must be an array of tokens, got " .. tostring(p))
            end
        end
    end
    return o
end

local function new_ws(sock, server, o, protocol, z)
    local self = setmetatable({
        _sock = sock,
        _frames = core.frames(server, o.maxMessageSize or DEFAULT_MAX_MESSAGE, o.maxFrameSize, z and z.bits,
            z and z.reset),
        _mask = not server,
        _state = "open",
        _closeTimeout = o.closeTimeout or DEFAULT_CLOSE_TIMEOUT,
        _sendTimeout = o.sendTimeout or DEFAULT_SEND_TIMEOUT,
        protocol = protocol,
    }, WebSocket)
    sock:settimeouts(nil, self._sendTimeout, o.idleTimeout)
    if o.pingInterval and o.pingInterval > 0 then
        -- Keep-alive: a ping every interval; a peer that has not answered the previous one by
        -- the next is gone (closed without a handshake, closeCode 1006, as the ws library does).
        self._ponged = true
        self._pinger = timer.setInterval(o.pingInterval, function()
            if self._state ~= "open" then
                return
            end
            if not self._ponged then
                finish(self, new_error("ETIMEDOUT", "the peer did not answer a ping", { closeCode = 1006, reason = "" }))
                return
            end
            self._ponged = false
            send_frame(self._sock, PING, "", self._mask) -- a busy writer (EBUSY) skips this round
        end)
    end
    return self
end

-- permessage-deflate (RFC 7692). The offers of a Sec-WebSocket-Extensions value: a list of
-- {name, params = {name = value or true}}, or nil for a malformed value.
local function parse_extensions(value)
    local list = {}
    for item in gmatch(value, "[^,]+") do
        local name
        local params = {}
        for part in gmatch(item, "[^;]+") do
            part = match(part, "^%s*(.-)%s*$")
            if not name then
                name = lower(part)
            else
                local k, v = match(part, "^([%w_]+)%s*=%s*\"?(%d+)\"?$")
                if not k then
                    k = match(part, "^([%w_]+)$")
                    v = true
                end
                if not k or params[lower(k)] ~= nil then
                    return nil
                end
                params[lower(k)] = v
            end
        end
        if name and name ~= "" then
            list[#list + 1] = { name = name, params = params }
        end
    end
    return list
end

local deflate_params = {
    server_no_context_takeover = true, client_no_context_takeover = true,
    server_max_window_bits = true, client_max_window_bits = true,
}

-- Window bits in a parameter: nil when absent, false when malformed. 8 is refused: zlib's raw
-- deflate cannot make an 8-bit window.
local function bits_of(v, optional)
    if v == nil then
        return nil
    end
    if v == true then
        return optional and 15 or false
    end
    local n = tonumber(v)
    if not n or n < 9 or n > 15 then
        return false
    end
    return n
end

-- The server's choice among the client's offers: the response value and our deflate settings.
local function accept_deflate(value)
    local offers = parse_extensions(value)
    for _, offer in ipairs(offers or {}) do
        if offer.name == "permessage-deflate" then
            local p, ok = offer.params, true
            for k in pairs(p) do
                ok = ok and deflate_params[k]
            end
            local sbits = bits_of(p.server_max_window_bits)
            ok = ok and sbits ~= false and bits_of(p.client_max_window_bits, true) ~= false
            ok = ok and (p.server_no_context_takeover == nil or p.server_no_context_takeover == true)
            ok = ok and (p.client_no_context_takeover == nil or p.client_no_context_takeover == true)
            if ok then
                local answer = { "permessage-deflate" }
                if p.server_no_context_takeover then
                    answer[#answer + 1] = "server_no_context_takeover"
                end
                if p.client_no_context_takeover then
                    answer[#answer + 1] = "client_no_context_takeover"
                end
                if sbits then
                    answer[#answer + 1] = "server_max_window_bits=" .. sbits
                end
                return table.concat(answer, "; "), { bits = sbits or 15, reset = p.server_no_context_takeover == true }
            end
        end
    end
end

-- The client's view of the server's answer: our deflate settings, or nil, why.
local function client_deflate(value)
    local list = parse_extensions(value)
    if not list or #list ~= 1 or list[1].name ~= "permessage-deflate" then
        return nil, "the server chose an extension that was not offered"
    end
    local p = list[1].params
    for k in pairs(p) do
        if not deflate_params[k] then
            return nil, "unknown permessage-deflate parameter " .. k
        end
    end
    local cbits = bits_of(p.client_max_window_bits)
    if cbits == false or bits_of(p.server_max_window_bits) == false then
        return nil, "bad permessage-deflate window bits"
    end
    return { bits = cbits or 15, reset = p.client_no_context_takeover ~= nil }
end

-- Whether a comma-separated header value has the token (case-insensitively).
local function has_token(value, token)
    if type(value) ~= "string" then
        return false
    end
    for t in gmatch(lower(value), "[^,%s]+") do
        if t == token then
            return true
        end
    end
    return false
end

-- The handshake is refused: an answer with `status`, and nil, err.
local function refuse(res, status, message, headers)
    res.status = status
    res:setHeader("Content-Type", "text/plain")
    res:setHeader("Connection", "close")
    for k, v in pairs(headers or {}) do
        res:setHeader(k, v)
    end
    res:finish(message .. "\n")
    return nil, new_error("EPROTO", "WebSocket handshake refused: " .. message, { status = status })
end

--- ws, err = websocket.accept(req, res[, options]): checks the upgrade request, answers 101 and
--- takes the connection from HTTP. Options: protocols (the subprotocols this server speaks, in
--- its order of preference), maxMessageSize (16 MiB), maxFrameSize, idleTimeout, closeTimeout,
--- sendTimeout (ms). A bad request gets 400 (426 for another version) and nil, err.
function websocket.accept(req, res, options)
    if type(req) ~= "table" or type(res) ~= "table" then
        raise("websocket.accept", "expected the request and the response of an http handler")
    end
    local o = check_options(options, "websocket.accept")
    local h = req.headers
    if req.method ~= "GET" then
        return refuse(res, 400, "a WebSocket handshake is a GET request")
    end
    if not has_token(h.upgrade, "websocket") then
        return refuse(res, 400, "missing Upgrade: websocket")
    end
    if not has_token(h.connection, "upgrade") then
        return refuse(res, 400, "missing Connection: upgrade")
    end
    if h["sec-websocket-version"] ~= "13" then
        return refuse(res, 426, "unsupported WebSocket version (13 only)", { ["Sec-WebSocket-Version"] = "13" })
    end
    local key = h["sec-websocket-key"]
    if type(key) ~= "string" or key_bytes(key) ~= 16 then
        return refuse(res, 400, "missing or malformed Sec-WebSocket-Key")
    end
    if o.origins then
        -- Browsers send Origin; a page of another site must not open the socket (RFC 6455 10.2).
        local origin, ok = h.origin, false
        if type(o.origins) == "function" then
            ok = origin ~= nil and o.origins(origin, req) and true or false
        else
            for _, allowed in ipairs(o.origins) do
                ok = ok or (origin ~= nil and lower(allowed) == lower(origin))
            end
        end
        if not ok then
            return refuse(res, 403, "origin not allowed")
        end
    end
    local protocol
    if o.protocols and h["sec-websocket-protocol"] then
        local offered = {}
        for p in gmatch(h["sec-websocket-protocol"], "[^,%s]+") do
            offered[p] = true
        end
        for _, p in ipairs(o.protocols) do
            if offered[p] then
                protocol = p
                break
            end
        end
    end
    local ext, z
    if o.deflate and h["sec-websocket-extensions"] then
        ext, z = accept_deflate(h["sec-websocket-extensions"])
    end
    local sock, err = res:_upgrade({
        Upgrade = "websocket",
        ["Sec-WebSocket-Accept"] = accept_key(key),
        ["Sec-WebSocket-Protocol"] = protocol,
        ["Sec-WebSocket-Extensions"] = ext,
    })
    if not sock then
        return nil, err
    end
    return new_ws(sock, true, o, protocol, z)
end

-- Reads the response head of the handshake: status, headers (lower-case names), or nil, err.
local function read_response(sock)
    local head, err = sock:readuntil("\r\n\r\n", 16384)
    if not head then
        return nil, err
    end
    local status = tonumber(match(head, "^HTTP/1%.1 (%d%d%d) "))
    if not status then
        return nil, new_error("EPROTO", "not an HTTP/1.1 response to the WebSocket handshake")
    end
    local headers = {}
    for name, value in gmatch(head, "\r?\n([^:\r\n]+):[ \t]*([^\r\n]*)") do
        name = lower(name)
        value = match(value, "^(.-)[ \t]*$")
        headers[name] = headers[name] and headers[name] .. ", " .. value or value
    end
    return status, headers
end

--- ws, err = websocket.connect(url[, options]): a client over ws:// (wss:// needs TLS).
--- Options: headers, protocols, timeout (ms, for the connection and the handshake),
--- maxMessageSize, maxFrameSize, idleTimeout, closeTimeout, sendTimeout.
function websocket.connect(url, options)
    if type(url) ~= "string" then
        raise("websocket.connect", "expected a ws:// URL as argument 1, got " .. type(url))
    end
    local o = check_options(options, "websocket.connect")
    local scheme, rest = match(url, "^(%a[%w+.-]*)(://.*)$")
    scheme = scheme and lower(scheme)
    if scheme ~= "ws" and scheme ~= "wss" then
        return nil, new_error("EINVAL", "not a ws:// or wss:// URL: " .. url)
    end
    local u, msg = client.parse_url((scheme == "wss" and "https" or "http") .. rest)
    if not u then
        return nil, new_error("EINVAL", msg)
    end
    -- The http client's transports: plain tcp, or TLS (lib/tls.lua) with options.tls.
    local co = { timeout = o.timeout }
    if scheme == "wss" and o.tls then
        for k, v in pairs(o.tls) do
            co[k] = v
        end
    end
    local sock, err = client.transports[u.scheme].connect(u.host, u.port, co)
    if not sock then
        return nil, err
    end
    if o.timeout then
        sock:setTimeout(o.timeout)
    end
    local key = core.random_key()
    local host = u.host
    if find(host, ":", 1, true) then
        host = "[" .. host .. "]"
    end
    if u.port ~= (scheme == "wss" and 443 or 80) then
        host = host .. ":" .. u.port
    end
    local lines = {
        "GET " .. u.target .. " HTTP/1.1",
        "Host: " .. host,
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: " .. key,
        "Sec-WebSocket-Version: 13",
    }
    if o.protocols and #o.protocols > 0 then
        lines[#lines + 1] = "Sec-WebSocket-Protocol: " .. table.concat(o.protocols, ", ")
    end
    if o.deflate then
        lines[#lines + 1] = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits"
    end
    if o.headers then
        for k, v in pairs(o.headers) do
            if type(k) ~= "string" or find(k, "[%c:]") or find(tostring(v), "[\r\n]") then
                sock:close()
                raise("websocket.connect", "bad header " .. tostring(k))
            end
            lines[#lines + 1] = k .. ": " .. tostring(v)
        end
    end
    lines[#lines + 1] = "\r\n"
    err = sock:write(table.concat(lines, "\r\n"))
    local status, headers
    if not err then
        status, headers = read_response(sock)
        if not status then
            err = headers
        end
    end
    local function fail(e)
        sock:close()
        return nil, e
    end
    if err then
        return fail(err)
    end
    if status ~= 101 then
        return fail(new_error("EPROTO", "the server answered " .. status .. " to the WebSocket handshake", { status = status }))
    end
    if not has_token(headers.upgrade, "websocket") or headers["sec-websocket-accept"] ~= accept_key(key) then
        return fail(new_error("EPROTO", "bad WebSocket handshake response (Upgrade or Sec-WebSocket-Accept)"))
    end
    local protocol = headers["sec-websocket-protocol"]
    if protocol then
        local ok = false
        for _, p in ipairs(o.protocols or {}) do
            ok = ok or p == protocol
        end
        if not ok then
            return fail(new_error("EPROTO", "the server chose a subprotocol that was not offered: " .. protocol))
        end
    end
    local z
    if headers["sec-websocket-extensions"] then
        local why
        if not o.deflate then
            why = "the server chose an extension that was not offered"
        else
            z, why = client_deflate(headers["sec-websocket-extensions"])
        end
        if not z then
            return fail(new_error("EPROTO", why))
        end
    end
    return new_ws(sock, false, o, protocol, z)
end

return websocket
