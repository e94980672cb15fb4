// luaio.websocket: the C++ half of lib/websocket.lua. A Frames object is the Consumer that
// turns a stream's bytes into WebSocket events (modules/websocket_frame.h), so ws:receive()
// parks on the stream's one read mechanism (Stream::read_with); send writes one frame through
// Stream::write_buffers without copying a server's payload; accept_key hashes the handshake
// key with OpenSSL.
#include "modules/websocket_frame.h"
#include "runtime/luaio.h"
#include "runtime/stream.h"

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <zlib.h>

#include <cstring>
#include <new>
#include <string>
#include <vector>

namespace {

using luaio::Stream;
namespace ws = luaio::ws;

constexpr const char* kFramesClass = "luaio.websocket.frames";

// permessage-deflate (RFC 7692) of one connection: raw deflate streams, made on first use (a
// deflater costs about 256 KiB at zlib's default memory level, so memLevel 8 is kept only by
// connections that send compressed messages).
struct Deflate {
    z_stream in{}, out{};
    bool in_open = false, out_open = false;
    int out_bits = 15;      // our window (the peer's *_max_window_bits for us), 9..15
    bool out_reset = false; // our no_context_takeover: a fresh window for every message
    ~Deflate() {
        if (in_open) inflateEnd(&in);
        if (out_open) deflateEnd(&out);
    }
};

struct Frames final : luaio::Consumer {
    explicit Frames(bool server) : parser(server) {}
    ~Frames() { delete z; }
    ws::Parser parser;
    Deflate* z = nullptr;
    std::string inflated;

    // Inflates the message (with the 00 00 ff ff tail that the sender removed) into `inflated`,
    // stopping at the message limit: a compression bomb costs at most maxMessageSize. Returns 0,
    // or the close code (1009 too big, 1007 corrupt data).
    int inflate_message(const std::string& m) {
        Deflate* d = z;
        if (!d->in_open) {
            if (inflateInit2(&d->in, -15) != Z_OK) return 1011;
            d->in_open = true;
        }
        inflated.clear();
        static const unsigned char tail[4] = {0, 0, 0xff, 0xff};
        const unsigned char* parts[2] = {reinterpret_cast<const unsigned char*>(m.data()), tail};
        size_t lens[2] = {m.size(), 4};
        unsigned char buf[16384];
        for (int i = 0; i < 2; i++) {
            d->in.next_in = const_cast<unsigned char*>(parts[i]);
            d->in.avail_in = static_cast<uInt>(lens[i]);
            do {
                d->in.next_out = buf;
                d->in.avail_out = sizeof buf;
                int r = inflate(&d->in, Z_SYNC_FLUSH);
                if (r != Z_OK && r != Z_BUF_ERROR && r != Z_STREAM_END) return 1007;
                size_t got = sizeof buf - d->in.avail_out;
                if (inflated.size() + got > parser.max_message) return 1009;
                inflated.append(reinterpret_cast<char*>(buf), got);
                if (r == Z_STREAM_END) {
                    inflateReset(&d->in);
                    if (d->in.avail_in) continue;
                }
                if (r == Z_BUF_ERROR && d->in.avail_out) break;
            } while (d->in.avail_in > 0 || d->in.avail_out == 0);
        }
        return 0;
    }

    // Compresses a message for sending (RSV1 set by the caller): deflate with a sync flush and
    // the 00 00 ff ff tail removed (RFC 7692 7.2.1).
    bool deflate_message(const uv_buf_t* parts, size_t n, std::string& out) {
        Deflate* d = z;
        if (!d->out_open) {
            if (deflateInit2(&d->out, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -d->out_bits, 8, Z_DEFAULT_STRATEGY) != Z_OK)
                return false;
            d->out_open = true;
        }
        unsigned char buf[16384];
        for (size_t i = 0; i < n; i++) {
            d->out.next_in = reinterpret_cast<unsigned char*>(parts[i].base);
            d->out.avail_in = static_cast<uInt>(parts[i].len);
            bool last = i + 1 == n;
            do {
                d->out.next_out = buf;
                d->out.avail_out = sizeof buf;
                deflate(&d->out, last ? Z_SYNC_FLUSH : Z_NO_FLUSH);
                out.append(reinterpret_cast<char*>(buf), sizeof buf - d->out.avail_out);
            } while (d->out.avail_out == 0 || d->out.avail_in > 0);
        }
        if (n == 0) {
            d->out.avail_in = 0;
            d->out.next_out = buf;
            d->out.avail_out = sizeof buf;
            deflate(&d->out, Z_SYNC_FLUSH);
            out.append(reinterpret_cast<char*>(buf), sizeof buf - d->out.avail_out);
        }
        if (out.size() >= 4 && out.compare(out.size() - 4, 4, "\0\0\xff\xff", 4) == 0) out.resize(out.size() - 4);
        // zlib flushes nothing when nothing came since the last flush (an empty message): the
        // receiver appends 00 00 ff ff, so it needs the stored block's header byte (7.2.3.6).
        if (out.empty()) out.push_back('\0');
        if (d->out_reset) deflateReset(&d->out);
        return true;
    }

    int push_error(lua_State* L, int code, const char* what) {
        parser_done = true;
        lua_pushstring(L, "error");
        lua_pushstring(L, what);
        lua_pushinteger(L, code);
        return 3;
    }
    bool parser_done = false;

    // Pushes kind, data[, code]: "text"/"binary" and the message, "ping"/"pong" and the payload,
    // "close", the reason and the code, "error", why and the close code to send; or nil and the
    // stream's error when it ended before an event was complete.
    int consume(lua_State* L, const char* data, size_t len, int err, size_t* used) override {
        ws::Event e = parser.feed(data, len, used);
        switch (e.kind) {
        case ws::Event::None:
            if (!err && !parser.done()) return -1;
            lua_pushnil(L);
            luaio::push_uv_error(L, err ? err : UV_EOF);
            return 2;
        case ws::Event::Message: {
            const std::string* m = e.data;
            if (e.compressed) {
                if (!z) return push_error(L, 1002, "compressed message without permessage-deflate");
                int code = inflate_message(*m);
                if (code) return push_error(L, code, code == 1009 ? "message too big" : "bad compressed data");
                m = &inflated;
                ws::Utf8 u;
                const uint8_t* p = reinterpret_cast<const uint8_t*>(m->data());
                if (e.text && (!u.feed(p, m->size()) || !u.complete()))
                    return push_error(L, 1007, "text message is not UTF-8");
            }
            lua_pushstring(L, e.text ? "text" : "binary");
            lua_pushlstring(L, m->data(), m->size());
            if (m == &inflated && inflated.capacity() > 64 * 1024) std::string().swap(inflated);
            return 2;
        }
        case ws::Event::Ping:
        case ws::Event::Pong:
            lua_pushstring(L, e.kind == ws::Event::Ping ? "ping" : "pong");
            lua_pushlstring(L, e.data->data(), e.data->size());
            return 2;
        case ws::Event::Close:
            lua_pushstring(L, "close");
            lua_pushlstring(L, e.data->data(), e.data->size());
            lua_pushinteger(L, e.code);
            return 3;
        case ws::Event::Error:
            lua_pushstring(L, "error");
            lua_pushstring(L, e.what);
            lua_pushinteger(L, e.code);
            return 3;
        }
        return -1;
    }
    void ready(lua_State*, int) override {} // never watched
};

Frames* check_frames(lua_State* L, const char* fname) {
    void* p = luaio::test_object(L, 1, kFramesClass);
    if (!p) luaio::raise(L, fname, "expected websocket frames as self, got %s", luaL_typename(L, 1));
    return static_cast<Frames*>(p);
}

// frames = core.frames(server, maxMessageSize, maxFrameSize[, deflateBits, noContextTakeover])
int l_frames(lua_State* L) {
    bool server = lua_toboolean(L, 1);
    lua_Number max_message = luaL_optnumber(L, 2, double(ws::kDefaultMaxMessage));
    lua_Number max_frame = luaL_optnumber(L, 3, 0);
    if (!(max_message >= 1) || !(max_frame >= 0))
        luaio::raise(L, "websocket", "maxMessageSize and maxFrameSize must be positive numbers of bytes");
    void* mem = lua_newuserdata(L, sizeof(Frames));
    Frames* f = new (mem) Frames(server);
    f->parser.max_message = static_cast<uint64_t>(max_message);
    f->parser.max_frame = static_cast<uint64_t>(max_frame);
    if (!lua_isnoneornil(L, 4)) {
        // permessage-deflate was negotiated: our window bits and whether we reset our window.
        int bits = static_cast<int>(luaL_checkinteger(L, 4));
        if (bits < 9 || bits > 15) luaio::raise(L, "websocket", "window bits must be 9 to 15");
        f->z = new Deflate;
        f->z->out_bits = bits;
        f->z->out_reset = lua_toboolean(L, 5);
        f->parser.rsv1_ok = true;
    }
    luaL_getmetatable(L, kFramesClass);
    lua_setmetatable(L, -2);
    return 1;
}

int l_frames_gc(lua_State* L) {
    if (void* p = luaio::test_object(L, 1, kFramesClass)) static_cast<Frames*>(p)->~Frames();
    return 0;
}

// kind, data[, code] = frames:receive(sock): the next event (see Frames::consume); may park.
int l_receive(lua_State* L) {
    Frames* f = check_frames(L, "receive");
    Stream* s = Stream::check(L, 2, "receive");
    luaio::check_can_wait(L, "receive");
    return s->read_with(L, f, "receive");
}

// err = core.send(sock, opcode, data, masked[, frames]): with frames whose connection has
// permessage-deflate, a data message is compressed (RSV1). Writes one whole frame (FIN set). data is a
// string or an array of strings (one message). A server's payload is written from the Lua
// strings as they are; a client's is masked with a fresh random key (RFC 6455 5.3) in a copy.
int l_send(lua_State* L) {
    Stream* s = Stream::check(L, 1, "send");
    int opcode = static_cast<int>(luaL_checkinteger(L, 2));
    bool masked = lua_toboolean(L, 4);
    std::vector<uv_buf_t> bufs(1);
    uint64_t total = 0;
    if (lua_type(L, 3) == LUA_TTABLE) {
        int n = static_cast<int>(lua_objlen(L, 3));
        for (int i = 1; i <= n; i++) {
            lua_rawgeti(L, 3, i);
            size_t len;
            const char* p = lua_tolstring(L, -1, &len);
            if (!p || lua_type(L, -1) != LUA_TSTRING)
                luaio::raise(L, "send", "expected an array of strings, got %s at %d", luaL_typename(L, -1), i);
            lua_pop(L, 1); // the table keeps the string alive
            bufs.push_back(uv_buf_init(const_cast<char*>(p), static_cast<unsigned>(len)));
            total += len;
        }
    } else if (lua_type(L, 3) == LUA_TSTRING) {
        size_t len;
        const char* p = lua_tolstring(L, 3, &len);
        bufs.push_back(uv_buf_init(const_cast<char*>(p), static_cast<unsigned>(len)));
        total = len;
    } else {
        luaio::raise(L, "send", "expected a string or an array of strings, got %s", luaL_typename(L, 3));
    }
    uint8_t key[4];
    if (masked && RAND_bytes(key, 4) != 1) luaio::raise(L, "send", "no random bytes for the mask");
    uint8_t head[ws::kMaxHead];
    Frames* f = static_cast<Frames*>(luaio::test_object(L, 5, kFramesClass));
    if (f && f->z && opcode < ws::kClose) {
        std::string z;
        if (!f->deflate_message(bufs.data() + 1, bufs.size() - 1, z))
            luaio::raise(L, "send", "zlib could not start a compressor");
        size_t hn = ws::encode_head(head, static_cast<uint8_t>(opcode), true, z.size(), masked ? key : nullptr, true);
        if (masked) ws::apply_mask(reinterpret_cast<uint8_t*>(&z[0]), z.size(), key);
        uv_buf_t b[2] = {uv_buf_init(reinterpret_cast<char*>(head), static_cast<unsigned>(hn)),
                         uv_buf_init(&z[0], static_cast<unsigned>(z.size()))};
        return s->write_buffers(L, b, 2, "send", 0, 2);
    }
    size_t hn = ws::encode_head(head, static_cast<uint8_t>(opcode), true, total, masked ? key : nullptr);
    if (!masked) {
        bufs[0] = uv_buf_init(reinterpret_cast<char*>(head), static_cast<unsigned>(hn));
        return s->write_buffers(L, bufs.data(), static_cast<unsigned>(bufs.size()), "send", 3, 1);
    }
    std::string out(reinterpret_cast<char*>(head), hn);
    out.reserve(hn + total);
    for (size_t i = 1; i < bufs.size(); i++) out.append(bufs[i].base, bufs[i].len);
    ws::apply_mask(reinterpret_cast<uint8_t*>(&out[hn]), total, key);
    uv_buf_t b = uv_buf_init(&out[0], static_cast<unsigned>(out.size()));
    return s->write_buffers(L, &b, 1, "send", 0, 1);
}

// accept = core.accept_key(key): base64(SHA-1(key .. GUID)) (RFC 6455 4.2.2).
int l_accept_key(lua_State* L) {
    size_t len;
    const char* key = luaL_checklstring(L, 1, &len);
    std::string in(key, len);
    in += "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    unsigned char md[SHA_DIGEST_LENGTH];
    SHA1(reinterpret_cast<const unsigned char*>(in.data()), in.size(), md);
    unsigned char out[4 * ((SHA_DIGEST_LENGTH + 2) / 3) + 1];
    int n = EVP_EncodeBlock(out, md, SHA_DIGEST_LENGTH);
    lua_pushlstring(L, reinterpret_cast<char*>(out), static_cast<size_t>(n));
    return 1;
}

// n = core.key_bytes(key): the length of the base64-decoded key (16 for a valid one), or nil
// when it is not base64.
int l_key_bytes(lua_State* L) {
    size_t len;
    const char* key = luaL_checklstring(L, 1, &len);
    if (len != 24) return 0;
    unsigned char out[24];
    int n = EVP_DecodeBlock(out, reinterpret_cast<const unsigned char*>(key), 24);
    if (n < 0) return 0;
    // EVP_DecodeBlock counts padding as bytes: "==" ends a 16-byte key.
    if (key[23] == '=') n--;
    if (key[22] == '=') n--;
    lua_pushinteger(L, n);
    return 1;
}

// key = core.random_key(): 16 random bytes in base64, a client's Sec-WebSocket-Key.
int l_random_key(lua_State* L) {
    unsigned char raw[16], out[25];
    if (RAND_bytes(raw, 16) != 1) luaio::raise(L, "connect", "no random bytes for the key");
    int n = EVP_EncodeBlock(out, raw, 16);
    lua_pushlstring(L, reinterpret_cast<char*>(out), static_cast<size_t>(n));
    return 1;
}

} // namespace

extern "C" int luaopen_luaio_websocket(lua_State* L) {
    const luaL_Reg methods[] = {{"receive", l_receive}, {"__gc", l_frames_gc}, {nullptr, nullptr}};
    luaio::new_class(L, kFramesClass, methods);
    lua_pop(L, 1);
    const luaL_Reg funcs[] = {{"frames", l_frames},         {"send", l_send},
                              {"accept_key", l_accept_key}, {"key_bytes", l_key_bytes},
                              {"random_key", l_random_key}, {nullptr, nullptr}};
    lua_newtable(L);
    luaL_register(L, nullptr, funcs);
    return 1;
}
