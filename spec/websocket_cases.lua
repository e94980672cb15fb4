-- RFC 6455 / 7692 cases sent as raw client bytes, modelled on the Autobahn testsuite's sections
-- (1 framing, 2 pings and pongs, 3 reserved bits, 4 opcodes, 5 fragmentation, 6 UTF-8, 7 close,
-- 9 limits, 12/13 compression). Each case: `id` (section.case), `send` (the bytes, or an array
-- written one after the other), `path` (the route: "/echo" by default, see the spec), `ext`
-- (extra handshake header lines), `expect` (the frames the server must answer, in order, as
-- {opcode, payload}) and `close`: the close code the server must send (then the TCP connection
-- ends), "empty" for a close frame without a payload, or nil: the connection stays open, the
-- runner closes it with 1000 and the server must answer 1000. Every expectation is the
-- behaviour RFC 6455 requires of a server (an echo server here), not whatever luaio happens to do.
local raw = require "ws_raw"

local char, rep = string.char, string.rep
local F = raw.frame
local function text(p) return F(0x81, p) end
local function bin(p) return F(0x82, p) end
local function ping(p) return F(0x89, p) end
local function pong(p) return F(0x8A, p) end
local function close(code, reason)
    return F(0x88, code and char(math.floor(code / 256), code % 256) .. (reason or "") or "")
end
local function T(p) return { 1, p } end
local function B(p) return { 2, p } end
local function P(p) return { 10, p } end -- the pong a ping is answered with

local cases = {}
local function add(c) cases[#cases + 1] = c end

-- 1 Framing: text and binary messages of every length class (7-bit, 16-bit, 64-bit lengths).
local lengths = { 0, 1, 124, 125, 126, 127, 128, 65535, 65536, 100000 }
for i, n in ipairs(lengths) do
    local t = rep("*", n)
    add({ id = "1.1." .. i, send = text(t), expect = { T(t) } })
    local b = rep("\xfe", n)
    add({ id = "1.2." .. i, send = bin(b), expect = { B(b) } })
end
-- The same bytes in chunks: one byte at a time, and a head split from its payload.
do
    local one = {}
    local f = text("Hello, world")
    for i = 1, #f do one[i] = f:sub(i, i) end
    add({ id = "1.3.1", send = one, expect = { T("Hello, world") } })
    local g = bin(rep("x", 300))
    add({ id = "1.3.2", send = { g:sub(1, 3), g:sub(4, 8), g:sub(9) }, expect = { B(rep("x", 300)) } })
    add({ id = "1.3.3", send = text("a") .. text("b") .. bin("c"), expect = { T("a"), T("b"), B("c") } })
    local mask0 = F(0x81, "zero mask", true, nil, { 0, 0, 0, 0 })
    add({ id = "1.3.4", send = mask0, expect = { T("zero mask") } })
end

-- 2 Pings and pongs.
add({ id = "2.1", send = ping(""), expect = { P("") } })
add({ id = "2.2", send = ping("Hello, world!"), expect = { P("Hello, world!") } })
add({ id = "2.3", send = ping("\0\255\254\253\252\251\0\255"), expect = { P("\0\255\254\253\252\251\0\255") } })
add({ id = "2.4", send = ping(rep("\254", 125)), expect = { P(rep("\254", 125)) } })
add({ id = "2.5", send = ping(rep("\254", 126)), close = 1002 })
add({ id = "2.6", send = { ping(rep("p", 125):sub(1, 60)), ping("second") }, expect = { P(rep("p", 60)), P("second") } })
add({ id = "2.7", send = pong(""), expect = {} })
add({ id = "2.8", send = pong("unsolicited"), expect = {} })
add({ id = "2.9", send = pong("x") .. ping("y"), expect = { P("y") } })
do
    local pings, pongs = {}, {}
    for i = 1, 10 do
        pings[i] = ping("ping " .. i)
        pongs[i] = P("ping " .. i)
    end
    add({ id = "2.10", send = table.concat(pings), expect = pongs })
    add({ id = "2.11", send = pings, expect = pongs })
end
add({ id = "2.12", send = pong(rep("q", 126)), close = 1002 })
add({ id = "2.13", send = F(0x09, "fragmented ping"), close = 1002 })

-- 3 Reserved bits (no extension negotiated): each combination, on data and control frames, alone
-- and after a message that must still be answered.
for rsv = 1, 7 do
    local bits = rsv * 16
    add({ id = "3.1." .. rsv, send = F(0x81 + bits, "rsv"), close = 1002 })
    add({ id = "3.2." .. rsv, send = text("first") .. F(0x82 + bits, "rsv"), expect = { T("first") }, close = 1002 })
    add({ id = "3.3." .. rsv, send = F(0x89 + bits, "rsv"), close = 1002 })
    add({ id = "3.4." .. rsv, send = F(0x88 + bits, char(3, 232)), close = 1002 })
end

-- 4 Opcodes: reserved non-control (3-7) and control (0xB-0xF) opcodes.
for _, op in ipairs({ 3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF }) do
    add({ id = "4.1." .. op, send = F(0x80 + op, ""), close = 1002 })
    add({ id = "4.2." .. op, send = text("before") .. F(0x80 + op, "reserved") .. text("after"), expect = { T("before") }, close = 1002 })
end

-- 5 Fragmentation.
add({ id = "5.1", send = F(0x09, "a") .. F(0x80, "b"), close = 1002 }) -- a fragmented ping
add({ id = "5.2", send = F(0x0A, "a") .. F(0x80, "b"), close = 1002 }) -- a fragmented pong
add({ id = "5.3", send = F(0x01, "frag") .. F(0x80, "ment"), expect = { T("fragment") } })
add({ id = "5.4", send = { F(0x01, "frag"), F(0x80, "ment") }, expect = { T("fragment") } })
add({ id = "5.5", send = F(0x01, "frag") .. ping("in between") .. F(0x80, "ment"), expect = { P("in between"), T("fragment") } })
add({ id = "5.6", send = { F(0x01, "frag"), ping("in between"), F(0x80, "ment") }, expect = { P("in between"), T("fragment") } })
add({ id = "5.7", send = F(0x02, "frag") .. pong("ignored") .. F(0x80, "ment"), expect = { B("fragment") } })
do
    local parts, s = {}, "Hello, fragmented world"
    for i = 1, #s do parts[i] = F(i == 1 and 0x01 or (i == #s and 0x80 or 0x00), s:sub(i, i)) end
    add({ id = "5.8", send = table.concat(parts), expect = { T(s) } })
    add({ id = "5.9", send = parts, expect = { T(s) } })
    local withpings = {}
    for i = 1, #parts do
        withpings[#withpings + 1] = parts[i]
        withpings[#withpings + 1] = ping(tostring(i))
    end
    local want = {}
    for i = 1, #parts - 1 do want[i] = P(tostring(i)) end
    want[#want + 1] = T(s) -- the message is whole before the last ping comes
    want[#want + 1] = P(tostring(#parts))
    add({ id = "5.10", send = table.concat(withpings), expect = want })
end
add({ id = "5.11", send = F(0x80, "continuation without a message"), close = 1002 })
add({ id = "5.12", send = F(0x00, "continuation without a message"), close = 1002 })
add({ id = "5.13", send = text("done") .. F(0x80, "late continuation"), expect = { T("done") }, close = 1002 })
add({ id = "5.14", send = F(0x01, "start") .. text("new message inside"), close = 1002 })
add({ id = "5.15", send = F(0x01, "start") .. F(0x02, "binary inside"), close = 1002 })
add({ id = "5.16", send = F(0x01, "") .. F(0x00, "") .. F(0x80, ""), expect = { T("") } })
add({ id = "5.17", send = F(0x01, "") .. F(0x00, "x") .. F(0x80, ""), expect = { T("x") } })
add({ id = "5.18", send = F(0x01, "frag") .. close(1000), close = 1000 }) -- a close inside a message is taken
add({ id = "5.19", send = F(0x02, "a") .. F(0x00, "b") .. F(0x00, "c") .. F(0x80, "d") .. bin("e"), expect = { B("abcd"), B("e") } })
add({ id = "5.20", send = F(0x01, "a") .. F(0x89, "p1") .. F(0x00, "b") .. F(0x89, "p2") .. F(0x80, "c"),
    expect = { P("p1"), P("p2"), T("abc") } })

-- 6 UTF-8: valid and invalid text, whole, split across fragments at every byte, and early failure.
local valid = {
    "", "Hello", "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5", -- κόσμε
    "\xc2\x80", "\xdf\xbf", "\xe0\xa0\x80", "\xef\xbf\xbf", "\xf0\x90\x80\x80", "\xf4\x8f\xbf\xbf",
    "\xed\x9f\xbf", "\xee\x80\x80", "\xef\xbb\xbf", "\xef\xbf\xbe", "\x7f", "\0",
    "Hello-\xc2\xb5@\xc3\x9f\xc3\xb6\xc3\xa4\xc3\xbc\xc3\xa0\xc3\xa1-UTF-8!!",
}
local invalid = {
    "\x80", "\xbf", "\x80\xbf\x80", "\xc0\x80", "\xc1\xbf", "\xe0\x80\x80", "\xe0\x9f\xbf", "\xf0\x80\x80\x80",
    "\xf0\x8f\xbf\xbf", "\xed\xa0\x80", "\xed\xad\xbf", "\xed\xbf\xbf", "\xed\xa0\x80\xed\xb0\x80", "\xf4\x90\x80\x80",
    "\xf5\x80\x80\x80", "\xf8\x88\x80\x80\x80", "\xfc\x84\x80\x80\x80\x80", "\xfe", "\xff", "\xc3", "\xe2\x82",
    "\xf0\x9f\x98", "a\xc3(", "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited",
}
for i, s in ipairs(valid) do
    add({ id = "6.1." .. i, send = text(s), expect = { T(s) } })
    if #s > 1 then
        local parts = {}
        for j = 1, #s do parts[j] = F(j == 1 and 0x01 or (j == #s and 0x80 or 0x00), s:sub(j, j)) end
        add({ id = "6.2." .. i, send = table.concat(parts), expect = { T(s) } })
    end
end
for i, s in ipairs(invalid) do
    add({ id = "6.3." .. i, send = text(s), close = 1007 })
    if #s > 1 then
        local parts = {}
        for j = 1, #s do parts[j] = F(j == 1 and 0x01 or (j == #s and 0x80 or 0x00), s:sub(j, j)) end
        add({ id = "6.4." .. i, send = table.concat(parts), close = 1007 })
    end
end
-- Fail fast: an invalid first fragment is closed before the message ends (no FIN ever comes).
add({ id = "6.5.1", send = F(0x01, "valid start \xff"), close = 1007 })
add({ id = "6.5.2", send = F(0x01, "\xce\xba\xe1") .. F(0x00, "\xbd\xb9\xcf\x83") .. F(0x00, "\xc0"), close = 1007 })
-- Invalid bytes in a binary message are just bytes.
add({ id = "6.6.1", send = bin("\xff\xfe\xc0\x80"), expect = { B("\xff\xfe\xc0\x80") } })

-- 7 Close handling.
add({ id = "7.1.1", send = close(), close = "empty" })
add({ id = "7.1.2", send = close(1000), close = 1000 })
add({ id = "7.1.3", send = close(1000) .. text("after close"), close = 1000 }) -- nothing after the close
add({ id = "7.1.4", send = close(1000) .. ping("after close"), close = 1000 })
add({ id = "7.1.5", send = text("before") .. close(1000), expect = { T("before") }, close = 1000 })
add({ id = "7.1.6", send = close(1000, "a reason"), close = 1000 })
add({ id = "7.1.7", send = close(1000, rep("r", 123)), close = 1000 })
add({ id = "7.3.1", send = F(0x88, "\3"), close = 1002 }) -- a one-byte payload
add({ id = "7.3.2", send = F(0x88, char(3, 232) .. rep("r", 124)), close = 1002 }) -- 126 bytes
add({ id = "7.5.1", send = close(1000, "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80"), close = 1007 })
add({ id = "7.5.2", send = close(1000, "\xff"), close = 1007 })
for i, code in ipairs({ 1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999 }) do
    add({ id = "7.7." .. i, send = close(code), close = code })
end
for i, code in ipairs({ 0, 999, 1004, 1005, 1006, 1012, 1013, 1014, 1015, 1016, 1100, 2000, 2999, 5000, 65535 }) do
    add({ id = "7.9." .. i, send = close(code), close = 1002 })
end

-- 9 Limits (route /limit: maxMessageSize 1000, maxFrameSize 600).
add({ id = "9.1.1", path = "/limit", send = bin(rep("m", 600)), expect = { B(rep("m", 600)) } })
add({ id = "9.1.2", path = "/limit", send = bin(rep("m", 601)), close = 1009 })
add({ id = "9.1.3", path = "/limit", send = F(0x02, rep("a", 500)) .. F(0x80, rep("b", 500)), expect = { B(rep("a", 500) .. rep("b", 500)) } })
add({ id = "9.1.4", path = "/limit", send = F(0x02, rep("a", 500)) .. F(0x80, rep("b", 501)), close = 1009 })
add({ id = "9.1.5", path = "/limit", send = F(0x01, rep("a", 400)) .. F(0x00, rep("b", 400)) .. F(0x80, rep("c", 201)), close = 1009 })
add({ id = "9.1.6", path = "/limit", send = F(0x82, "", true, 2 ^ 32), close = 1009 }) -- judged on the head alone
add({ id = "9.1.7", send = F(0x82, "", true, 2 ^ 63), close = 1002 }) -- the top bit of a 64-bit length
add({ id = "9.1.8", send = F(0x81, "unmasked", false), close = 1002 })
add({ id = "9.1.9", send = text("ok") .. F(0x82, "unmasked", false), expect = { T("ok") }, close = 1002 })
add({ id = "9.1.10", send = F(0x89, "unmasked ping", false), close = 1002 })
-- Lengths in a longer form than needed are allowed (RFC 6455 5.2 asks for the minimal form but
-- Autobahn and browsers accept the others; luaio's parser too).

-- 12/13 permessage-deflate (route /z: the server inflates; its answers stay uncompressed, the
-- threshold is above every message). Compressed payloads from RFC 7692 7.2.3.
local Z = "Sec-WebSocket-Extensions: permessage-deflate\r\n"
local hello = "\xf2\x48\xcd\xc9\xc9\x07\x00" -- "Hello", fixed Huffman
local hello2 = "\xf2\x00\x11\x00\x00" -- "Hello" again, with the first one's context
local function stored(s) -- a DEFLATE block with no compression (7.2.3.3)
    return "\x00" .. char(#s % 256, math.floor(#s / 256), 255 - #s % 256, 255 - math.floor(#s / 256)) .. s
end
add({ id = "12.1", path = "/z", ext = Z, send = F(0xC1, hello), expect = { T("Hello") } })
add({ id = "12.2", path = "/z", ext = Z, send = F(0xC1, hello) .. F(0xC1, hello2), expect = { T("Hello"), T("Hello") } })
add({ id = "12.3", path = "/z", ext = Z, send = F(0xC1, stored("Hello")), expect = { T("Hello") } })
add({ id = "12.4", path = "/z", ext = Z, send = F(0xC2, stored("\xff\xfe binary")), expect = { B("\xff\xfe binary") } })
add({ id = "12.5", path = "/z", ext = Z, send = F(0xC1, "\x00"), expect = { T("") } }) -- an empty stored block start
add({ id = "12.6", path = "/z", ext = Z, send = F(0x41, hello:sub(1, 3)) .. F(0x80, hello:sub(4)), expect = { T("Hello") } })
add({ id = "12.7", path = "/z", ext = Z, send = F(0x41, hello:sub(1, 3)) .. ping("z") .. F(0x80, hello:sub(4)), expect = { P("z"), T("Hello") } })
add({ id = "12.8", path = "/z", ext = Z, send = text("plain") .. F(0xC1, hello), expect = { T("plain"), T("Hello") } })
add({ id = "13.1", path = "/z", ext = Z, send = F(0x41, hello:sub(1, 3)) .. F(0xC0, hello:sub(4)), close = 1002 }) -- RSV1 on a continuation
add({ id = "13.2", path = "/z", ext = Z, send = F(0xC9, "p"), close = 1002 }) -- RSV1 on a ping
add({ id = "13.3", path = "/z", ext = Z, send = F(0xC8, char(3, 232)), close = 1002 }) -- RSV1 on a close
add({ id = "13.4", path = "/z", ext = Z, send = F(0xE1, hello), close = 1002 }) -- RSV2 is still reserved
add({ id = "13.5", path = "/z", ext = Z, send = F(0xC1, "\xff\xff\xff\xff\xff"), close = 1007 }) -- not DEFLATE data
add({ id = "13.6", path = "/z", ext = Z, send = F(0xC1, stored("bad \xc0\x80 text")), close = 1007 }) -- UTF-8 after inflating
add({ id = "13.7", path = "/z", ext = Z, send = F(0xC2, stored(rep("s", 1001))), close = 1009 }) -- inflated past maxMessageSize
add({ id = "13.8", path = "/z", ext = Z, send = F(0xC1, stored("\xce\xba\xe1")) , close = 1007 }) -- truncated UTF-8 after inflating
add({ id = "13.9", path = "/echo", send = F(0xC1, hello), close = 1002 }) -- RSV1 without the extension

return { cases = cases }
