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
local task_core = require "luaio.core"

local type, tostring, tonumber, setmetatable, getmetatable, ipairs, pairs, pcall, xpcall, error =
    type, tostring, tonumber, setmetatable, getmetatable, ipairs, pairs, pcall, xpcall, error
local lower, find, match, gmatch, char, byte, sub, format =
    string.lower, string.find, string.match, string.gmatch, string.char, string.byte, string.sub, string.format
local floor = math.floor
local raise, new_error = errors.raise, errors.new
local send_frame, accept_key, key_bytes = core.send, core.accept_key, core.key_bytes
local watch, receive = core.watch, core.receive
local suspend, current, ready, spawn = task_core.suspend, task_core.current, task_core.ready, task_core.spawn
local report, describe, traceback = task_core.report, task_core.describe, debug.traceback
local remove = table.remove

local TEXT, BINARY, CLOSE, PING, PONG = 1, 2, 8, 9, 10
local DEFAULT_MAX_MESSAGE = 16 * 1024 * 1024
local DEFAULT_CLOSE_TIMEOUT = 5000
local DEFAULT_SEND_TIMEOUT = 60000

local websocket = {}

-- The defaults of a connection's fields are the class's, so that a connection stores only what
-- differs (every idle connection pays for its fields).
-- A connection's fields that every connection has, by index (see new_ws): its socket (whose
-- stream owns the connection's frame parser, core.frames, and whose proxy keeps ws:handle's
-- handlers), its state ("open", "closing", "closed") and whether a task is writing a message
-- (see write).
local SOCK, STATE, WRITING = 1, 2, 3
local WebSocket = { _closeTimeout = DEFAULT_CLOSE_TIMEOUT, _sendTimeout = DEFAULT_SEND_TIMEOUT }
WebSocket.__index = WebSocket

local function check(self, fname)
    if getmetatable(self) ~= WebSocket then
        raise(fname, "expected a websocket as self, got " .. type(self) .. " (call it with ':')")
    end
end

-- A websocket passed as an argument (hub:join(ws, topic)).
local function check_arg(ws, fname)
    if getmetatable(ws) ~= WebSocket then
        raise(fname, "expected a websocket as argument 1, got " .. type(ws))
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

-- Writes one message and waits for the kernel to take it. Tasks that send while another
-- task's message is being written wait their turn, in order (the stream has one waiting
-- writer); a task that cannot wait (outside a task) queues its message behind the others.
-- self[WRITING] is false, true (a task is writing) or the array of the tasks waiting their turn.
local function write(self, op, data)
    local w = self[WRITING]
    if w then
        local co = current()
        if not co then
            return send_frame(self[SOCK], op, data, true)
        end
        if w == true then
            w = {}
            self[WRITING] = w
        end
        w[#w + 1] = co
        suspend() -- the writer before us hands over (self[WRITING] stays set)
    else
        self[WRITING] = true
    end
    local ok, err = true, nil
    if self[STATE] == "open" then
        -- Protected, so that a raise (no random bytes, no compressor) still hands over the turn.
        ok, err = pcall(send_frame, self[SOCK], op, data)
    else
        err = self._err or new_error("EPIPE", "the WebSocket connection is closing")
    end
    w = self[WRITING]
    if w ~= true and w[1] then
        ready(remove(w, 1))
    else
        self[WRITING] = false
    end
    if not ok then
        error(err, 0)
    end
    return err
end

-- A control frame (pong, ping, close) never waits: it is queued behind the bytes already
-- queued, between two messages.
local function control(self, op, data)
    return send_frame(self[SOCK], op, data, true)
end

-- The connection is over: the socket closes, and later calls get `err`.
local leave_all

local function handler_trace(e)
    return traceback("websocket handler: " .. describe(e), 2)
end

-- Runs a handler of ws:handle; a failed one is reported and ends its connection (1011), never
-- the server. Returns whether it succeeded.
local function run_handler(fn, ws, ...)
    local ok, e = xpcall(fn, handler_trace, ws, ...)
    if ok then return true end
    report(e)
    ws:close(1011)
    return false
end

-- The close handler of a connection in the handler style (ws:handle), in a task of its own.
local function run_close(self, on_close, err)
    local ok, e = xpcall(on_close, handler_trace, self, err.closeCode or 1006, err.reason or "")
    if not ok then
        report(e)
    end
end

-- With `linger` (a close reason), luaio ends the connection while bytes are queued for it: the
-- close frame with err.closeCode goes behind them, and the socket closes once it is written or
-- after closeTimeout (core.linger).
local function finish(self, err, linger)
    if self[STATE] ~= "closed" then
        self[STATE] = "closed"
        self._err = err
        if self._hubs then
            leave_all(self)
        end
        local h = core.unwatch(self[SOCK]) -- before the socket closes: its stream has the frames
        if linger then
            core.linger(self[SOCK], close_payload(err.closeCode, linger), self._closeTimeout)
        else
            self[SOCK]:close()
        end
        if self._pinger then
            self._pinger:stop()
            self._pinger = nil
        end
        if self._idler then
            self._idler:stop()
            self._idler = nil
        end
        if h then
            if h.close then
                spawn(run_close, self, h.close, err)
            end
        end
    end
    return nil, self._err
end

local function closed_error(code, reason, message)
    return new_error("EOF", message or "the WebSocket connection was closed", { closeCode = code, reason = reason or "" })
end

-- An event that is not a data message, as core.receive reports it: a ping is answered, a
-- pong noted; the end of the connection (the peer's close, a violation, the stream's end)
-- closes it and returns finish's nil, err. Returns nothing while the connection goes on.
local function on_event(self, kind, data, code)
    if kind == "ping" then
        if self[STATE] == "open" then
            control(self, PONG, data)
        end
    elseif kind == "pong" then
        self._ponged = true
    elseif kind == "close" then
        -- The peer closes: answer with its code (none for 1005) unless we closed first.
        if self[STATE] == "open" then
            self[STATE] = "closing"
            control(self, CLOSE, code ~= 1005 and close_payload(code, "") or "")
        end
        return finish(self, closed_error(code, data, "closed by the peer"))
    elseif kind == "error" then
        -- The peer broke the protocol: close with the code the parser chose.
        if self[STATE] == "open" then
            self[STATE] = "closing"
            control(self, CLOSE, close_payload(code, ""))
        end
        local name = code == 1009 and "EMSGSIZE" or "EPROTO"
        return finish(self, new_error(name, data, { closeCode = code, reason = "" }))
    else
        -- The stream ended or failed without a close frame (closeCode 1006, RFC 6455 7.1.5).
        local err = data
        err.closeCode, err.reason = 1006, ""
        return finish(self, err)
    end
end

--- msg, kind = ws:receive(): the next whole message and "text" or "binary"; pings are answered
--- on the way. nil, err at the end: err.name "EOF" with err.closeCode and err.reason when the
--- peer closed; a protocol violation by the peer is closed with its code (err.closeCode).
function WebSocket:receive()
    check(self, "receive")
    if self[STATE] == "closed" then
        return nil, self._err
    end
    if self._reading then
        return nil, new_error("EBUSY", "another task is already receiving on this websocket")
    end
    self._reading = true
    while true do
        local kind, data, code = receive(self[SOCK])
        if kind == "text" or kind == "binary" then
            self._reading = false
            return data, kind
        elseif kind == "busy" then
            self._reading = false
            return nil, data
        elseif kind ~= "ping" and kind ~= "pong" then
            self._reading = false
        end
        local _, err = on_event(self, kind, data, code)
        if err then
            return nil, err
        end
    end
end

-- The handler style (ws:handle). A watched connection's event starts this function in a task
-- of its own (core.watch, Frames::ready in modules/websocket.cpp): it runs the message
-- handler, then takes the next event if its bytes are already here, and otherwise watches the
-- connection again and ends, so that an idle connection holds no task. One message at a time:
-- while a handler runs, the connection is not read (its peer is held back by TCP).
local function dispatch(kind, data, code, self, handlers)
    local on_message, idle = handlers.message, handlers._idle
    if idle then
        self._seen = "busy" -- the idle timer waits while a handler runs
    end
    repeat
        if kind == "text" or kind == "binary" then
            if on_message then
                if not run_handler(on_message, self, data, kind) then return end
            end
        else
            on_event(self, kind, data, code)
        end
        if self[STATE] ~= "open" then
            return
        end
        kind, data, code = watch(self[SOCK])
    until kind == false
    if idle then
        self._seen = true
    end
end
core.dispatcher(dispatch)

local function check_handlers(handlers, fname)
    if type(handlers) ~= "table" then
        raise(fname, "expected a table of handlers {open, message, close}, got " .. type(handlers))
    end
    for k, v in pairs(handlers) do
        if k ~= "open" and k ~= "message" and k ~= "close" then
            raise(fname, "unknown handler '" .. tostring(k) .. "' (open, message, close)")
        end
        if type(v) ~= "function" then
            raise(fname, "handler '" .. tostring(k) .. "' must be a function, got " .. type(v))
        end
    end
end
websocket._check_handlers = check_handlers -- for r:websocket (lib/http/router.lua)

--- ws:handle{open = fn(ws, ...), message = fn(ws, msg, kind), close = fn(ws, code, reason)}: the
--- connection's messages go to handlers instead of ws:receive(). open(ws, ...) runs first, in
--- the calling task (with the extra arguments); then each message runs message() in a task
--- started for it, one at a time and in order, and close() runs once when the connection ends,
--- with the close code (1006 when there was no close frame) and reason. An idle connection holds
--- no task. A handler that raises is reported and closes its connection with 1011.
function WebSocket:handle(handlers, ...)
    check(self, "handle")
    check_handlers(handlers, "handle")
    if self._reading then
        raise("handle", "another task is receiving on this websocket")
    end
    if self[STATE] == "closed" then
        if handlers.close then
            spawn(run_close, self, handlers.close, self._err)
        end
        return
    end
    local idle = self._idleTimeout
    if idle then
        -- A watched stream has no read timeout: a timer closes the connection once it has been
        -- quiet for idleTimeout while no handler ran (checked every quarter of it), as a
        -- receive() waiting that long would (ETIMEDOUT, closeCode 1006).
        local h = { _idle = true }
        for k, v in pairs(handlers) do
            h[k] = v
        end
        handlers = h
        self._seen = true
        local tick, quiet = math.max(idle / 4, 1), 0
        self._idler = timer.setInterval(tick, function()
            local seen = self._seen
            if seen then
                quiet = 0
                if seen == true then
                    self._seen = false
                end
                return
            end
            quiet = quiet + tick
            if quiet >= idle then
                finish(self, new_error("ETIMEDOUT", "no message within idleTimeout", { closeCode = 1006, reason = "" }))
            end
        end)
    end
    core.handle(self[SOCK], self, handlers) -- from now on, finish runs the close handler
    if handlers.open then
        if not run_handler(handlers.open, self, ...) then return end
    end
    if self[STATE] == "open" then
        local kind, data, code = watch(self[SOCK])
        if kind ~= false then
            spawn(dispatch, kind, data, code, self, handlers)
        end
    end
end

-- One shared iterator with the connection as the loop's state, not a closure per loop: a
-- compiled loop keeps the function it calls alive, and a forgotten connection with it
-- (docs/CONTRIBUTING-internals.md).
local function next_message(ws)
    return ws:receive()
end

--- for msg, kind in ws:messages() do ... end: messages until the connection ends.
function WebSocket:messages()
    check(self, "messages")
    return next_message, self
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
    -- The checks of every message, inline for the common case.
    if getmetatable(self) ~= WebSocket then
        check(self, "send")
    end
    if type(data) ~= "string" then
        check_payload(data, "send", 1)
    end
    local op = TEXT
    if kind == "binary" then
        op = BINARY
    elseif kind ~= nil and kind ~= "text" then
        raise("send", "kind must be 'text' or 'binary', got " .. tostring(kind))
    end
    if self[STATE] ~= "open" then
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
    if self[STATE] ~= "open" then
        return self._err or new_error("EPIPE", "the WebSocket connection is closing")
    end
    return control(self, PING, data)
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
    if self[STATE] ~= "open" then
        return nil
    end
    self[STATE] = "closing"
    code = code or 1000
    local err = control(self, CLOSE, close_payload(code, reason))
    if err then
        finish(self, err)
        return err
    end
    self._err = closed_error(code, reason or "", "closed by this side")
    if self._reading then
        return nil -- the receiving task gets the peer's answer and closes the socket
    end
    self[SOCK]:settimeouts(nil, self._sendTimeout, self._closeTimeout)
    self._reading = true
    -- Messages still coming are dropped; the handshake ends with the peer's close or a timeout.
    while true do
        local kind = receive(self[SOCK], true)
        if kind ~= "text" and kind ~= "binary" and kind ~= "ping" and kind ~= "pong" then
            break
        end
    end
    self._reading = false
    local e = self._err
    self[STATE] = "closing"
    finish(self, e)
    return nil
end

--- The peer's address (ip, port), as sock:remoteAddress().
function WebSocket:remoteAddress()
    check(self, "remoteAddress")
    return self[SOCK]:remoteAddress()
end

local known_options = {
    protocols = true, origins = true, deflate = true, pingInterval = true, maxMessageSize = true, maxFrameSize = true, idleTimeout = true, closeTimeout = true,
    sendTimeout = true, headers = true, timeout = true, tls = true, fragmentSize = true,
}

-- deflate = true or a table of these (see docs/websocket.md): {name, lowest, highest}.
local deflate_options = {
    level = { 0, 9 }, memLevel = { 1, 9 }, windowBits = { 9, 15 }, threshold = { 0, 2 ^ 31 - 1 },
    noContextTakeover = true,
}

local function check_deflate(d, fname)
    if d == nil or type(d) == "boolean" then
        return d and {} or nil
    end
    if type(d) ~= "table" then
        raise(fname, "'deflate' must be true, false or a table of deflate options")
    end
    for k, v in pairs(d) do
        local range = deflate_options[k]
        if not range then
            raise(fname, "unknown deflate option '" .. tostring(k) .. "'")
        end
        if range == true then
            if type(v) ~= "boolean" then
                raise(fname, "deflate option '" .. k .. "' must be a boolean")
            end
        elseif type(v) ~= "number" or v ~= floor(v) or v < range[1] or v > range[2] then
            raise(fname, format("deflate option '%s' must be an integer from %d to %d", k, range[1], range[2]))
        end
    end
    return d
end

local function check_options(o, fname)
    if o == nil then
        return {}, nil
    end
    if type(o) ~= "table" then
        raise(fname, "expected a table of options, got " .. type(o))
    end
    local d = check_deflate(o.deflate, fname)
    for k in pairs(o) do
        if not known_options[k] then
            raise(fname, "unknown option '" .. tostring(k) .. "'")
        end
    end
    for _, k in ipairs({ "pingInterval", "maxMessageSize", "maxFrameSize", "idleTimeout", "closeTimeout", "sendTimeout", "timeout", "fragmentSize" }) do
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
    return o, d
end

local function new_ws(sock, server, o, protocol, z)
    -- What every connection has is in the array part (8 bytes a slot; a hash slot takes 24).
    -- The socket's stream takes the frame parser (no Lua object of its own).
    core.frames(sock, server, o.maxMessageSize or DEFAULT_MAX_MESSAGE, o.maxFrameSize, z, o.fragmentSize)
    local self = setmetatable({
        sock,
        "open",
        false, -- a task is writing a message
    }, WebSocket)
    -- Only what is set (storing nil in a missing field would still make its slot).
    if o.closeTimeout then
        self._closeTimeout = o.closeTimeout
    end
    if o.sendTimeout then
        self._sendTimeout = o.sendTimeout
    end
    if protocol then
        self.protocol = protocol
    end
    sock:settimeouts(nil, self._sendTimeout, o.idleTimeout)
    if o.idleTimeout and o.idleTimeout > 0 then
        self._idleTimeout = o.idleTimeout -- for ws:handle (a watched stream has no read timeout)
    end
    if o.pingInterval and o.pingInterval > 0 then
        -- Keep-alive: a ping every interval; a peer that has not answered the previous one by
        -- the next is gone (closed without a handshake, closeCode 1006, as the ws library does).
        self._ponged = true
        self._pinger = timer.setInterval(o.pingInterval, function()
            if self[STATE] ~= "open" then
                return
            end
            if not self._ponged then
                finish(self, new_error("ETIMEDOUT", "the peer did not answer a ping", { closeCode = 1006, reason = "" }))
                return
            end
            self._ponged = false
            control(self, PING, "")
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

local function min(a, b)
    return a < b and a or b
end

-- The settings of a connection's zlib streams (core.frames): our window and context takeover,
-- the peer's, and the application's compression options.
local function zsettings(bits, reset, inbits, inreset, d)
    return {
        bits = bits, reset = reset, inbits = inbits, inreset = inreset,
        level = d.level, memLevel = d.memLevel, threshold = d.threshold,
    }
end

-- The server's choice among the client's offers, with the application's deflate options d: the
-- response value and our deflate settings. A server may always ask for no context takeover and
-- for a smaller server window (RFC 7692 7.1.1, 7.1.2.1); it limits the client's window only when
-- the client offered client_max_window_bits.
local function accept_deflate(value, d)
    local offers = parse_extensions(value)
    local wbits = d.windowBits or 15
    for _, offer in ipairs(offers or {}) do
        if offer.name == "permessage-deflate" then
            local p, ok = offer.params, true
            for k in pairs(p) do
                ok = ok and deflate_params[k]
            end
            local sbits, cbits = bits_of(p.server_max_window_bits), bits_of(p.client_max_window_bits, true)
            ok = ok and sbits ~= false and cbits ~= false
            ok = ok and (p.server_no_context_takeover == nil or p.server_no_context_takeover == true)
            ok = ok and (p.client_no_context_takeover == nil or p.client_no_context_takeover == true)
            if ok then
                local sreset = p.server_no_context_takeover == true or d.noContextTakeover == true
                local creset = p.client_no_context_takeover == true or d.noContextTakeover == true
                local answer = { "permessage-deflate" }
                if sreset then
                    answer[#answer + 1] = "server_no_context_takeover"
                end
                if creset then
                    answer[#answer + 1] = "client_no_context_takeover"
                end
                local ours = min(sbits or 15, wbits)
                if sbits or ours < 15 then
                    answer[#answer + 1] = "server_max_window_bits=" .. ours
                end
                local theirs = 15
                if cbits and (cbits < 15 or wbits < 15) then
                    theirs = min(cbits, wbits)
                    answer[#answer + 1] = "client_max_window_bits=" .. theirs
                end
                return table.concat(answer, "; "), zsettings(ours, sreset, theirs, creset, d)
            end
        end
    end
end

-- The client's offer for the application's deflate options d.
local function offer_deflate(d)
    local offer = "permessage-deflate; client_max_window_bits"
    if d.windowBits and d.windowBits < 15 then
        offer = offer .. "; server_max_window_bits=" .. d.windowBits
    end
    if d.noContextTakeover then
        offer = offer .. "; server_no_context_takeover; client_no_context_takeover"
    end
    return offer
end

-- The client's view of the server's answer: our deflate settings, or nil, why.
local function client_deflate(value, d)
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
    local cbits, sbits = bits_of(p.client_max_window_bits), bits_of(p.server_max_window_bits)
    if cbits == false or sbits == false then
        return nil, "bad permessage-deflate window bits"
    end
    -- We may always use a smaller window and drop our context; the server's window is what it said.
    local ours = min(cbits or 15, d.windowBits or 15)
    local reset = p.client_no_context_takeover ~= nil or d.noContextTakeover == true
    return zsettings(ours, reset, sbits or 15, p.server_no_context_takeover ~= nil, d)
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
    local o, zopts = check_options(options, "websocket.accept")
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
    if zopts and h["sec-websocket-extensions"] then
        ext, z = accept_deflate(h["sec-websocket-extensions"], zopts)
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
    local o, zopts = check_options(options, "websocket.connect")
    local scheme, rest = match(url, "^(%a[%w+.-]*)(://.*)$")
    scheme = scheme and lower(scheme)
    if scheme ~= "ws" and scheme ~= "wss" then
        return nil, new_error("EINVAL", "not a ws:// or wss:// URL: " .. url)
    end
    local hurl = (scheme == "wss" and "https" or "http") .. rest
    local u, msg = client.parse_url(hurl)
    if not u then
        -- parse_url's messages end with the URL it was given: name the caller's instead.
        if sub(msg, -#hurl) == hurl then
            msg = sub(msg, 1, #msg - #hurl) .. url
        end
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
    if zopts then
        lines[#lines + 1] = "Sec-WebSocket-Extensions: " .. offer_deflate(zopts)
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
        if not zopts then
            why = "the server chose an extension that was not offered"
        else
            z, why = client_deflate(headers["sec-websocket-extensions"], zopts)
        end
        if not z then
            return fail(new_error("EPROTO", why))
        end
    end
    return new_ws(sock, false, o, protocol, z)
end

-- Broadcasting. A hub keeps topics of server connections; publish encodes the frame once and
-- hands it to every subscriber without waiting (core.publish, one call for all of them: the
-- stream's non-waiting write, the frame shared, not copied). A subscriber whose queue would pass maxQueue is slow: it is closed
-- (slow = "close", the default) or misses the message (slow = "drop").
local Hub = {}
Hub.__index = Hub

local DEFAULT_MAX_QUEUE = 1024 * 1024
local SLOW_REASON = "too slow" -- the reason of the close frame a slow subscriber gets
local publish, encode = core.publish, core.encode

local function check_hub(self, fname)
    if getmetatable(self) ~= Hub then
        raise(fname, "expected a hub as self, got " .. type(self) .. " (call it with ':')")
    end
end

local function check_topic(topic, fname)
    if type(topic) ~= "string" then
        raise(fname, "expected a topic (a string), got " .. type(topic))
    end
end

--- hub = websocket.hub([{maxQueue = bytes, slow = "close" | "drop"}])
function websocket.hub(options)
    if options ~= nil and type(options) ~= "table" then
        raise("websocket.hub", "expected a table of options, got " .. type(options))
    end
    options = options or {}
    for k in pairs(options) do
        if k ~= "maxQueue" and k ~= "slow" then
            raise("websocket.hub", "unknown option '" .. tostring(k) .. "'")
        end
    end
    local limit = options.maxQueue or DEFAULT_MAX_QUEUE
    if type(limit) ~= "number" or not (limit >= 0) then
        raise("websocket.hub", "'maxQueue' must be a non-negative number of bytes")
    end
    local slow = options.slow or "close"
    if slow ~= "close" and slow ~= "drop" then
        raise("websocket.hub", "'slow' must be 'close' or 'drop'")
    end
    return setmetatable({ _topics = {}, _limit = limit, _slow = slow }, Hub)
end

-- A topic is an array of its subscribers and their positions ({n, list = {ws...}, at = {[ws] = i}}).
local function remove_from(topics, name, ws)
    local t = topics[name]
    local i = t and t.at[ws]
    if not i then
        return false
    end
    local last = t.list[t.n]
    t.list[i], t.at[last] = last, i
    t.list[t.n], t.at[ws] = nil, nil
    t.n = t.n - 1
    if t.n == 0 then
        topics[name] = nil
    end
    return true
end

--- hub:join(ws, topic): ws receives what is published to topic (until it leaves or closes).
function Hub:join(ws, topic)
    check_hub(self, "hub:join")
    check_arg(ws, "hub:join")
    check_topic(topic, "hub:join")
    if ws[STATE] ~= "open" then
        return ws._err or new_error("EPIPE", "the WebSocket connection is closing")
    end
    local t = self._topics[topic]
    if not t then
        t = { n = 0, list = {}, at = {} }
        self._topics[topic] = t
    end
    if not t.at[ws] then
        t.n = t.n + 1
        t.list[t.n], t.at[ws] = ws, t.n
        local hubs = ws._hubs or {}
        ws._hubs = hubs
        hubs[self] = hubs[self] or {}
        hubs[self][topic] = true
    end
end

--- hub:leave(ws, topic): true if ws was subscribed.
function Hub:leave(ws, topic)
    check_hub(self, "hub:leave")
    check_arg(ws, "hub:leave")
    check_topic(topic, "hub:leave")
    local mine = ws._hubs and ws._hubs[self]
    if mine then
        mine[topic] = nil
    end
    return remove_from(self._topics, topic, ws)
end

-- A closing connection leaves every topic of every hub.
leave_all = function(ws)
    for hub, topics in pairs(ws._hubs) do
        for name in pairs(topics) do
            remove_from(hub._topics, name, ws)
        end
    end
    ws._hubs = nil
end

--- n = hub:subscribers(topic)
function Hub:subscribers(topic)
    check_hub(self, "hub:subscribers")
    check_topic(topic, "hub:subscribers")
    local t = self._topics[topic]
    return t and t.n or 0
end

--- n, err = hub:publish(topic, data[, "binary"]): the message to every subscriber of topic, at
--- once (nobody waits). n is the number of subscribers it was queued for; err is set for text
--- that is not UTF-8 (EILSEQ, nothing sent).
function Hub:publish(topic, data, kind)
    check_hub(self, "hub:publish")
    check_topic(topic, "hub:publish")
    check_payload(data, "hub:publish", 2)
    local op = TEXT
    if kind == "binary" then
        op = BINARY
    elseif kind ~= nil and kind ~= "text" then
        raise("hub:publish", "kind must be 'text' or 'binary', got " .. tostring(kind))
    end
    local t = self._topics[topic]
    if type(data) == "table" then
        data = table.concat(data)
    end
    local frame, err = encode(op, data)
    if not frame then
        return 0, err
    end
    if not t then
        return 0
    end
    local n, failed = publish(t.list, t.n, op, data, frame, self._limit)
    if failed then
        -- Ended after the loop over the subscribers: finishing one changes the topic's list.
        for i = 1, #failed, 2 do
            local ws, e = failed[i], failed[i + 1]
            if e.name ~= "EAGAIN" then
                finish(ws, e)
            elseif self._slow == "close" then
                -- 1008 (policy violation): the subscriber did not take its messages in time.
                finish(ws, new_error("ENOBUFS", "closed by a hub: the peer was too slow (" .. e.message .. ")",
                    { closeCode = 1008, reason = SLOW_REASON }), SLOW_REASON)
            end
        end
    end
    return n
end

return websocket
