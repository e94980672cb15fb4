-- Raw WebSocket bytes for the specs: client frames built by hand, server frames read by hand, a
-- handshake without luaio's client (spec/websocket_*_spec.lua).
local tcp = require "tcp"
local bit = require "bit"

local char, byte = string.char, string.byte
local M = {}

M.KEY = "dGhlIHNhbXBsZSBub25jZQ=="

-- A client frame: b0 is FIN/RSV/opcode; masked unless mask == false. len overrides the length
-- written in the head (for lying frames); key the mask key.
function M.frame(b0, payload, mask, len, key)
    local n = len or #payload
    local b1 = mask == false and 0 or 0x80
    local head
    if n < 126 then
        head = char(b0, b1 + n)
    elseif n < 65536 then
        head = char(b0, b1 + 126, math.floor(n / 256), n % 256)
    else
        local t = {}
        for i = 8, 1, -1 do
            t[i] = n % 256
            n = math.floor(n / 256)
        end
        head = char(b0, b1 + 127, unpack(t))
    end
    if mask == false then
        return head .. payload
    end
    key = key or { 0x12, 0x34, 0x56, 0x78 }
    local out = {}
    for i = 1, #payload do
        out[i] = char(bit.bxor(byte(payload, i), key[(i - 1) % 4 + 1]))
    end
    return head .. char(key[1], key[2], key[3], key[4]) .. table.concat(out)
end

-- Reads one server frame: opcode, payload, b0 (FIN/RSV bits), whether it was masked.
function M.read_frame(sock)
    local h, err = sock:read(2)
    if not h then
        return nil, err
    end
    local b0, b1 = byte(h, 1, 2)
    local n = b1 % 128
    if n == 126 then
        local e = assert(sock:read(2))
        n = byte(e, 1) * 256 + byte(e, 2)
    elseif n == 127 then
        local e = assert(sock:read(8))
        n = 0
        for i = 1, 8 do
            n = n * 256 + byte(e, i)
        end
    end
    local p = n > 0 and assert(sock:read(n)) or ""
    return b0 % 16, p, b0, b1 >= 128
end

function M.close_code(payload)
    if #payload < 2 then
        return nil
    end
    return byte(payload, 1) * 256 + byte(payload, 2)
end

-- The handshake by hand; returns the socket (its 101 head read) and the head.
function M.connect(port, path, extra)
    local sock = assert(tcp.connect(port, "127.0.0.1"))
    sock:setTimeout(5000)
    assert(sock:write("GET " .. (path or "/echo") .. " HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n" ..
        "Connection: Upgrade\r\nSec-WebSocket-Key: " .. M.KEY .. "\r\nSec-WebSocket-Version: 13\r\n" ..
        (extra or "") .. "\r\n") == nil)
    local head = assert(sock:readuntil("\r\n\r\n"))
    assert(head:find("^HTTP/1.1 101"), head)
    return sock, head
end

return M
