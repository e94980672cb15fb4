// luaio.websocket: the C++ half of lib/websocket.lua. A Frames object is the Consumer that
// turns a stream's bytes into WebSocket events (modules/websocket_frame.h), so ws:receive()
// parks on the stream's one read mechanism (Stream::read_with); send writes one frame through
// Stream::write_buffers without copying a server's payload; accept_key hashes the handshake
// key with OpenSSL. The stream owns its Frames (Stream::adopt): every function here takes the
// connection's socket and finds its Frames through it, so a connection has no Lua object for
// its protocol state.
#include "modules/websocket_frame.h"
#include "runtime/luaio.h"
#include "runtime/stream.h"

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <new>
#include <typeinfo>
#include <string>
#include <vector>

namespace {

using luaio::Stream;
namespace ws = luaio::ws;

// permessage-deflate (RFC 7692) of one connection. A direction that keeps its context (the
// LZ77 window) between messages has its own zlib stream, made on first use: a deflater costs
// 2^(windowBits+2) + 2^(memLevel+9) bytes (256 KiB with zlib's defaults), an inflater
// 2^windowBits + about 7 KiB. A direction without context takeover compresses or inflates every
// message alone, so one shared stream per setting serves every connection (see shared_deflater):
// such a connection holds no zlib memory at all.
struct Deflate {
    z_stream in{}, out{};
    bool in_open = false, out_open = false;
    int out_bits = 15;      // our window (the peer's *_max_window_bits for us), 9..15
    bool out_reset = false; // our no_context_takeover: every message compressed alone
    int in_bits = 15;       // the peer's window
    bool in_reset = false;  // the peer's no_context_takeover: every message inflated alone
    int level = Z_DEFAULT_COMPRESSION;
    int mem_level = 8;
    size_t threshold = 0; // shorter messages are sent uncompressed
    std::string inflated; // the last message inflated
    ~Deflate() {
        if (in_open) inflateEnd(&in);
        if (out_open) deflateEnd(&out);
    }
};

// The shared deflaters, one per (window bits, level, memLevel) in use; they live as long as the
// process (a handful at most: the settings come from the application's options).
struct SharedDeflater {
    int bits, level, mem;
    z_stream z;
};

z_stream* shared_deflater(int bits, int level, int mem) {
    // Never destroyed (a static vector's destructor at exit would orphan the streams).
    static auto& all = *new std::vector<SharedDeflater*>;
    for (SharedDeflater* d : all)
        if (d->bits == bits && d->level == level && d->mem == mem) {
            deflateReset(&d->z);
            return &d->z;
        }
    auto* d = new SharedDeflater{bits, level, mem, {}};
    if (deflateInit2(&d->z, level, Z_DEFLATED, -bits, mem, Z_DEFAULT_STRATEGY) != Z_OK) {
        delete d;
        return nullptr;
    }
    all.push_back(d);
    return &d->z;
}

// The shared inflater: a 15-bit window reads every peer's messages.
z_stream* shared_inflater() {
    static z_stream z{};
    static bool open = false;
    if (!open) {
        if (inflateInit2(&z, -15) != Z_OK) return nullptr;
        open = true;
    } else {
        inflateReset(&z);
    }
    return &z;
}

// "text" and "binary", referenced when the module opens: a message's kind is pushed without
// hashing its name again.
int g_text_ref = LUA_NOREF, g_binary_ref = LUA_NOREF;

struct Frames;
void forget_corked(Frames* f);

struct Frames final : luaio::Consumer {
    explicit Frames(bool server) : parser(server) {}
    // Deleted with its stream (in the stream's close callback): what it references goes.
    ~Frames() override;
    ws::Parser parser;
    // What few connections use, in one block made on first use, so that the Frames of every
    // other connection is 56 bytes (a malloc chunk of 64): permessage-deflate, a fragment size,
    // and a hub's small frames for this connection, written together before the loop next waits
    // for I/O (see cork; while any are kept, the stream's proxy is referenced by `sock`).
    struct Rare {
        Deflate* z = nullptr;
        uint32_t fragment = 0;    // data messages longer than this are sent in fragments (0: never)
        int sock = LUA_NOREF;     // while corked: the socket's proxy, held so that it is not collected
        Stream* stream = nullptr; // and its stream (the owner of these Frames)
        std::string bytes;        // the corked frames
        ~Rare() { delete z; }
    };
    Rare* rare = nullptr;
    Rare& more() { return rare ? *rare : *(rare = new Rare); }
    Deflate* z() const { return rare ? rare->z : nullptr; }
    uint32_t fragment() const { return rare ? rare->fragment : 0; }
    size_t corked() const { return rare ? rare->bytes.size() : 0; }

    // Inflates the message (with the 00 00 ff ff tail that the sender removed) into `inflated`,
    // stopping at the message limit: a compression bomb costs at most maxMessageSize. Returns 0,
    // or the close code (1009 too big, 1007 corrupt data).
    int inflate_message(const std::string& m) {
        Deflate* d = z();
        z_stream* in = &d->in;
        if (d->in_reset) {
            if (!(in = shared_inflater())) return 1011;
        } else if (!d->in_open) {
            if (inflateInit2(&d->in, -d->in_bits) != Z_OK) return 1011;
            d->in_open = true;
        }
        std::string& inflated = d->inflated;
        inflated.clear();
        static const unsigned char tail[4] = {0, 0, 0xff, 0xff};
        const unsigned char* parts[2] = {reinterpret_cast<const unsigned char*>(m.data()), tail};
        size_t lens[2] = {m.size(), 4};
        unsigned char buf[16384];
        for (int i = 0; i < 2; i++) {
            in->next_in = const_cast<unsigned char*>(parts[i]);
            in->avail_in = static_cast<uInt>(lens[i]);
            do {
                in->next_out = buf;
                in->avail_out = sizeof buf;
                int r = inflate(in, Z_SYNC_FLUSH);
                if (r != Z_OK && r != Z_BUF_ERROR && r != Z_STREAM_END) return 1007;
                size_t got = sizeof buf - in->avail_out;
                if (inflated.size() + got > parser.max_message) return 1009;
                inflated.append(reinterpret_cast<char*>(buf), got);
                if (r == Z_STREAM_END) {
                    inflateReset(in);
                    if (in->avail_in) continue;
                }
                if (r == Z_BUF_ERROR && in->avail_out) break;
            } while (in->avail_in > 0 || in->avail_out == 0);
        }
        return 0;
    }

    // Compresses a message for sending (RSV1 set by the caller): deflate with a sync flush and
    // the 00 00 ff ff tail removed (RFC 7692 7.2.1).
    bool deflate_message(const uv_buf_t* parts, size_t n, std::string& out) {
        Deflate* d = z();
        z_stream* zs = &d->out;
        if (d->out_reset) {
            if (!(zs = shared_deflater(d->out_bits, d->level, d->mem_level))) return false;
        } else if (!d->out_open) {
            if (deflateInit2(&d->out, d->level, Z_DEFLATED, -d->out_bits, d->mem_level, Z_DEFAULT_STRATEGY) != Z_OK)
                return false;
            d->out_open = true;
        }
        unsigned char buf[16384];
        for (size_t i = 0; i < n; i++) {
            zs->next_in = reinterpret_cast<unsigned char*>(parts[i].base);
            zs->avail_in = static_cast<uInt>(parts[i].len);
            bool last = i + 1 == n;
            do {
                zs->next_out = buf;
                zs->avail_out = sizeof buf;
                deflate(zs, last ? Z_SYNC_FLUSH : Z_NO_FLUSH);
                out.append(reinterpret_cast<char*>(buf), sizeof buf - zs->avail_out);
            } while (zs->avail_out == 0 || zs->avail_in > 0);
        }
        if (n == 0) {
            zs->avail_in = 0;
            zs->next_out = buf;
            zs->avail_out = sizeof buf;
            deflate(zs, Z_SYNC_FLUSH);
            out.append(reinterpret_cast<char*>(buf), sizeof buf - zs->avail_out);
        }
        if (out.size() >= 4 && out.compare(out.size() - 4, 4, "\0\0\xff\xff", 4) == 0) out.resize(out.size() - 4);
        // zlib flushes nothing when nothing came since the last flush (an empty message): the
        // receiver appends 00 00 ff ff, so it needs the stored block's header byte (7.2.3.6).
        if (out.empty()) out.push_back('\0');
        return true;
    }

    int push_error(lua_State* L, int code, const char* what) {
        lua_pushstring(L, "error");
        lua_pushstring(L, what);
        lua_pushinteger(L, code);
        return 3;
    }

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
                Deflate* z = this->z();
                if (!z) return push_error(L, 1002, "compressed message without permessage-deflate");
                int code = inflate_message(*m);
                if (code) return push_error(L, code, code == 1009 ? "message too big" : "bad compressed data");
                m = &z->inflated;
                ws::Utf8 u;
                const uint8_t* p = reinterpret_cast<const uint8_t*>(m->data());
                if (e.text && (!u.feed(p, m->size()) || !u.complete()))
                    return push_error(L, 1007, "text message is not UTF-8");
            }
            lua_rawgeti(L, LUA_REGISTRYINDEX, e.text ? g_text_ref : g_binary_ref); // "text" or "binary"
            lua_pushlstring(L, m->data(), m->size());
            if (e.compressed && m->capacity() > 64 * 1024) std::string().swap(z()->inflated);
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
    // The handler style (ws:handle): while no message handler runs, the stream is watched with
    // this object as its consumer and the ws table is referenced here (an open connection is the
    // server's, as with a parked reader); the handlers are the environment of the stream's proxy
    // (ws[1]). An event starts a task that runs the module's dispatcher with (kind, data, code, ws,
    // handlers): an idle connection holds no coroutine.
    int self_ref = LUA_NOREF;
    bool client() const { return !parser.server(); } // a client masks its frames
    void ready(lua_State* L, int n) override;
};

// Every connection has one (a malloc chunk of 64 bytes): see Rare.
static_assert(sizeof(Frames) <= 56, "Frames grew");

// The dispatcher of lib/websocket.lua (core.dispatcher), called in a task per event batch.
int g_dispatch_ref = LUA_NOREF;

void Frames::ready(lua_State* L, int n) {
    if (self_ref == LUA_NOREF) { // the connection ended while watched (a hub closed it)
        lua_pop(L, n);
        return;
    }
    // The results (kind, data[, code]) are on top, made three; after them go the ws table and the
    // handlers (the environment of the stream's proxy, ws[1]), and the dispatcher under all: one
    // insert.
    if (n == 2) lua_pushnil(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, self_ref);
    lua_rawgeti(L, -1, 1);
    lua_getfenv(L, -1);
    lua_replace(L, -2);
    lua_rawgeti(L, LUA_REGISTRYINDEX, g_dispatch_ref);
    lua_insert(L, -6);
    luaio::spawn(L, 5);
}

// The Frames of the stream s, or nullptr when s carries another protocol or none (typeid of a
// final class in an anonymous namespace: one comparison).
Frames* frames_of(Stream* s) {
    luaio::Consumer* c = s->protocol();
    return c && typeid(*c) == typeid(Frames) ? static_cast<Frames*>(c) : nullptr;
}

// The open stream at 1 and its Frames; raises for anything else (a closed stream included).
Frames* check_frames(lua_State* L, Stream** s, const char* fname) {
    *s = Stream::check(L, 1, fname);
    Frames* f = frames_of(*s);
    if (!f) luaio::raise(L, fname, "expected a websocket's socket");
    return f;
}

// Corking: a hub publishes to many connections, often several small messages in one loop turn
// (a publisher's messages come in one read). Frames of up to kCorkMax bytes are appended to the
// connection's `corked` bytes and written in one write per connection when the loop is about to
// wait for I/O (a prepare handle), as uWebSockets corks: one system call for several messages.
// A larger frame, and any other write on the connection, first writes what is corked, so the
// order of frames is kept.
constexpr size_t kCorkMax = 16 * 1024;

std::vector<Frames*>& corked_list() {
    static auto& list = *new std::vector<Frames*>; // never destroyed: may be in use at exit
    return list;
}

uv_prepare_t* g_prepare = nullptr;

// Writes f's corked bytes to its stream (what the kernel does not take is copied and queued)
// and drops the references. A stream closed meanwhile loses them.
void uncork(lua_State* L, Frames* f) {
    Frames::Rare* c = f->rare;
    Stream* s = c->stream;
    if (!s->closing()) {
        uv_buf_t b = uv_buf_init(&c->bytes[0], static_cast<unsigned>(c->bytes.size()));
        s->try_write(nullptr, &b, 1, SIZE_MAX);
    }
    c->bytes.clear();
    if (c->bytes.capacity() > 64 * 1024) std::string().swap(c->bytes);
    luaL_unref(L, LUA_REGISTRYINDEX, c->sock);
    c->sock = LUA_NOREF;
}

void on_prepare(uv_prepare_t* h) {
    uv_prepare_stop(h);
    lua_State* L = luaio::main_state();
    std::vector<Frames*> now;
    now.swap(corked_list());
    if (!L) return;
    for (Frames* f : now) uncork(L, f);
}

// Before another write on f's connection: what is corked goes first.
void uncork_now(lua_State* L, Frames* f) {
    if (!f->rare || f->rare->sock == LUA_NOREF) return;
    auto& list = corked_list();
    list.erase(std::find(list.begin(), list.end(), f));
    uncork(L, f);
}

// A Frames deleted while corked (its stream closed meanwhile) leaves the list.
void forget_corked(Frames* f) {
    if (!f->rare || f->rare->sock == LUA_NOREF) return;
    auto& list = corked_list();
    list.erase(std::find(list.begin(), list.end(), f));
    if (lua_State* L = luaio::main_state()) luaL_unref(L, LUA_REGISTRYINDEX, f->rare->sock);
}

Frames::~Frames() {
    forget_corked(this);
    if (lua_State* L = luaio::main_state()) luaL_unref(L, LUA_REGISTRYINDEX, self_ref); // after lua_close: gone
    delete rare;
}

// Appends a frame to f's corked bytes (f is s's; the socket at sock_idx on L, s's proxy, is
// referenced meanwhile).
void cork(lua_State* L, int sock_idx, Stream* s, Frames* f, const char* p, size_t n) {
    Frames::Rare* c = &f->more();
    if (c->sock == LUA_NOREF) {
        lua_pushvalue(L, sock_idx);
        c->sock = luaL_ref(L, LUA_REGISTRYINDEX);
        c->stream = s;
        corked_list().push_back(f);
        if (!g_prepare) {
            g_prepare = new uv_prepare_t; // lives as long as the loop; unreferenced, so it keeps nothing alive
            uv_prepare_init(luaio::loop(), g_prepare);
            uv_unref(reinterpret_cast<uv_handle_t*>(g_prepare));
        }
        uv_prepare_start(g_prepare, on_prepare);
    }
    c->bytes.append(p, n);
}

int opt_int(lua_State* L, int t, const char* k, int def, int lo, int hi) {
    lua_getfield(L, t, k);
    int v = lua_isnil(L, -1) ? def : static_cast<int>(lua_tointeger(L, -1));
    lua_pop(L, 1);
    if (v < lo || v > hi) luaio::raise(L, "websocket", "deflate %s must be %d to %d", k, lo, hi);
    return v;
}

// core.frames(sock, server, maxMessageSize, maxFrameSize[, z[, fragmentSize]]): the stream
// takes the connection's Frames for good (Stream::adopt); z, when permessage-deflate was
// negotiated: {bits, reset, inbits, inreset, level, memLevel, threshold}.
int l_frames(lua_State* L) {
    Stream* s = Stream::check(L, 1, "websocket");
    if (s->closing() || s->protocol()) luaio::raise(L, "websocket", "the socket is closed or already has a protocol");
    bool server = lua_toboolean(L, 2);
    lua_Number max_message = luaL_optnumber(L, 3, double(ws::kDefaultMaxMessage));
    lua_Number max_frame = luaL_optnumber(L, 4, 0);
    lua_Number fragment = luaL_optnumber(L, 6, 0);
    if (!(max_message >= 1) || !(max_frame >= 0) || !(fragment >= 0) || fragment > 9e15)
        luaio::raise(L, "websocket", "maxMessageSize, maxFrameSize and fragmentSize must be positive numbers of bytes");
    Deflate* d = nullptr;
    if (lua_istable(L, 5)) {
        // Read before anything is allocated: opt_int raises for a bad value.
        int out_bits = opt_int(L, 5, "bits", 15, 9, 15);
        int in_bits = opt_int(L, 5, "inbits", 15, 9, 15);
        int level = opt_int(L, 5, "level", Z_DEFAULT_COMPRESSION, -1, 9);
        int mem_level = opt_int(L, 5, "memLevel", 8, 1, 9);
        int threshold = opt_int(L, 5, "threshold", 0, 0, INT32_MAX);
        lua_getfield(L, 5, "reset");
        lua_getfield(L, 5, "inreset");
        d = new Deflate;
        d->out_bits = out_bits;
        d->in_bits = in_bits;
        d->level = level;
        d->mem_level = mem_level;
        d->threshold = static_cast<size_t>(threshold);
        d->out_reset = lua_toboolean(L, -2);
        d->in_reset = lua_toboolean(L, -1);
        lua_pop(L, 2);
    }
    auto* f = new Frames(server);
    f->parser.max_message = max_message > UINT32_MAX ? UINT32_MAX : static_cast<uint32_t>(max_message);
    f->parser.max_frame = max_frame > UINT32_MAX ? 0 : static_cast<uint32_t>(max_frame); // as above
    uint32_t frag = fragment > UINT32_MAX ? 0 : static_cast<uint32_t>(fragment);         // strings are < 2 GiB
    if (d || frag) {
        f->more().z = d;
        f->rare->fragment = frag;
    }
    f->parser.rsv1_ok = d != nullptr;
    s->adopt(f);
    return 0;
}

// kind, data[, code] = core.receive(sock[, closing]): the next event (see Frames::consume); may
// park. "busy", err when the connection's events go to its handlers (ws:handle), unless
// `closing` (the closing handshake reads the peer's answer).
int l_receive(lua_State* L) {
    Stream* s;
    Frames* f = check_frames(L, &s, "receive");
    if (f->self_ref != LUA_NOREF && !lua_toboolean(L, 2)) {
        lua_pushliteral(L, "busy");
        luaio::push_error(L, UV_EBUSY, "this websocket's messages go to its message handler (ws:handle)");
        return 2;
    }
    luaio::check_can_wait(L, "receive");
    return s->read_with(L, f, "receive");
}

// core.handle(sock, ws, handlers): the connection's events go to the handlers (ws:handle in
// lib/websocket.lua): ws is referenced until core.unwatch(sock), and the handlers are kept as the
// environment of the socket's proxy (every userdata has that slot: they cost the connection
// nothing).
int l_handle(lua_State* L) {
    Stream* s;
    Frames* f = check_frames(L, &s, "handle");
    luaL_checktype(L, 2, LUA_TTABLE);
    luaL_checktype(L, 3, LUA_TTABLE);
    if (f->self_ref != LUA_NOREF) luaio::raise(L, "handle", "this websocket already has handlers");
    lua_pushvalue(L, 3);
    lua_setfenv(L, 1);
    lua_pushvalue(L, 2);
    f->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

// kind, data[, code] | false = core.watch(sock): the next event when its bytes are buffered;
// otherwise false, and the stream is watched: the next event starts the dispatcher in a task
// of its own (Frames::ready).
int l_watch(lua_State* L) {
    Stream* s;
    Frames* f = check_frames(L, &s, "watch");
    if (f->self_ref == LUA_NOREF) luaio::raise(L, "watch", "this websocket has no handlers");
    int n = s->take_or_watch(L, f);
    if (n >= 0) return n;
    lua_pushboolean(L, 0);
    return 1;
}

// handlers | nothing = core.unwatch(sock): the connection is over: its ws table is no longer
// referenced; returns its handlers if it had some. Call it before closing the socket: once the
// stream is closed its Frames are out of reach (and let go of ws when the stream is freed).
int l_unwatch(lua_State* L) {
    Stream* s = Stream::check_or_closed(L, 1, "unwatch");
    Frames* f = s ? frames_of(s) : nullptr;
    if (!f || f->self_ref == LUA_NOREF) return 0;
    luaL_unref(L, LUA_REGISTRYINDEX, f->self_ref);
    f->self_ref = LUA_NOREF;
    lua_getfenv(L, 1);
    return 1;
}

// core.dispatcher(fn): the function that Frames::ready runs for a watched connection's event.
int l_dispatcher(lua_State* L) {
    luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_pushvalue(L, 1);
    luaL_unref(L, LUA_REGISTRYINDEX, g_dispatch_ref);
    g_dispatch_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

// The parts of the message at idx (a string or an array of strings) appended to bufs; returns
// their total length. The strings stay alive on L (the value at idx holds them).
uint64_t gather(lua_State* L, int idx, std::vector<uv_buf_t>& bufs, const char* fname) {
    uint64_t total = 0;
    if (lua_type(L, idx) == LUA_TTABLE) {
        int n = static_cast<int>(lua_objlen(L, idx));
        for (int i = 1; i <= n; i++) {
            lua_rawgeti(L, idx, i);
            size_t len;
            const char* p = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : nullptr;
            if (!p) luaio::raise(L, fname, "expected an array of strings, got %s at %d", luaL_typename(L, -1), i);
            lua_pop(L, 1); // the table keeps the string alive
            bufs.push_back(uv_buf_init(const_cast<char*>(p), static_cast<unsigned>(len)));
            total += len;
        }
    } else if (lua_type(L, idx) == LUA_TSTRING) {
        size_t len;
        const char* p = lua_tolstring(L, idx, &len);
        bufs.push_back(uv_buf_init(const_cast<char*>(p), static_cast<unsigned>(len)));
        total = len;
    } else {
        luaio::raise(L, fname, "expected a string or an array of strings, got %s", luaL_typename(L, idx));
    }
    return total;
}

// A text message must be UTF-8 (RFC 6455 5.6): a peer would close the connection with 1007.
bool utf8_ok(const uv_buf_t* parts, size_t n) {
    ws::Utf8 u;
    for (size_t i = 0; i < n; i++)
        if (!u.feed(reinterpret_cast<const uint8_t*>(parts[i].base), parts[i].len)) return false;
    return u.complete();
}

int push_not_utf8(lua_State* L) {
    luaio::push_error(L, UV_EILSEQ, "a text message must be UTF-8 (send it as binary)");
    return 1;
}

// Messages up to this size are written as one buffer (see l_send).
constexpr size_t kSmallFrame = 512;

// The last write of a message: it waits for the kernel (write_buffers), or with nowait queues.
int write_last(lua_State* L, Stream* s, const uv_buf_t* bufs, unsigned n, int anchor, unsigned ncopy, bool nowait) {
    if (!nowait) return s->write_buffers(L, bufs, n, "send", anchor, ncopy);
    int err = s->try_write(L, bufs, n, SIZE_MAX, anchor, ncopy);
    if (err) luaio::push_uv_error(L, err);
    return err ? 1 : 0;
}

// err = core.send(sock, opcode, data[, nowait]): one message or control frame of the
// connection. data is a string or an array of strings (one message); text must be
// UTF-8 (EILSEQ otherwise). A client masks its frames. With permessage-deflate, a data message of at least
// the threshold is compressed (RSV1); with a fragment size, a longer data message goes in
// fragments. A server's unfragmented, uncompressed payload is written from the Lua strings as
// they are; otherwise the payload is one copy, and a client masks every frame with a fresh
// random key (RFC 6455 5.3). Waits for the kernel to take the bytes unless nowait (then they
// are queued behind earlier writes: pongs, pings and close frames never wait for a writer).
int l_send(lua_State* L) {
    Stream* s;
    Frames* f = check_frames(L, &s, "send");
    int opcode = static_cast<int>(luaL_checkinteger(L, 2));
    bool masked = f->client();
    bool nowait = lua_toboolean(L, 4);
    uncork_now(L, f);
    // Reused (libuv copies the array of a queued write): no allocation per message.
    static std::vector<uv_buf_t>& bufs = *new std::vector<uv_buf_t>;
    bufs.assign(1, uv_buf_t{}); // bufs[0]: the head
    uint64_t total = gather(L, 3, bufs, "send");
    if (opcode == ws::kText && !utf8_ok(bufs.data() + 1, bufs.size() - 1)) return push_not_utf8(L);
    bool data = opcode < ws::kClose;
    size_t frag = data ? f->fragment() : 0;
    Deflate* z = data ? f->z() : nullptr;
    bool compress = z && total >= z->threshold;
    uint8_t head[ws::kMaxHead];
    if (!compress && !masked && (!frag || total <= frag)) {
        size_t hn = ws::encode_head(head, static_cast<uint8_t>(opcode), true, total, nullptr);
        if (total <= kSmallFrame) {
            // A small message goes out as one buffer (head and payload copied together): one
            // write(2) of one buffer costs the kernel less than a writev of several.
            char one[ws::kMaxHead + kSmallFrame];
            std::memcpy(one, head, hn);
            size_t at = hn;
            for (size_t i = 1; i < bufs.size(); i++) {
                std::memcpy(one + at, bufs[i].base, bufs[i].len);
                at += bufs[i].len;
            }
            uv_buf_t b = uv_buf_init(one, static_cast<unsigned>(at));
            return write_last(L, s, &b, 1, 0, 1, nowait);
        }
        bufs[0] = uv_buf_init(reinterpret_cast<char*>(head), static_cast<unsigned>(hn));
        return write_last(L, s, bufs.data(), static_cast<unsigned>(bufs.size()), 3, 1, nowait);
    }
    std::string payload;
    if (compress) {
        if (!f->deflate_message(bufs.data() + 1, bufs.size() - 1, payload))
            luaio::raise(L, "send", "zlib could not start a compressor");
    } else {
        payload.reserve(total);
        for (size_t i = 1; i < bufs.size(); i++) payload.append(bufs[i].base, bufs[i].len);
    }
    // Frames of at most frag bytes (one frame without frag), each with its own mask key; all
    // but the last are queued at once, so no other data frame comes between them.
    size_t n = payload.size(), off = 0;
    for (;;) {
        size_t len = frag && n - off > frag ? frag : n - off;
        bool fin = off + len == n;
        uint8_t key[4];
        if (masked && RAND_bytes(key, 4) != 1) luaio::raise(L, "send", "no random bytes for the mask");
        size_t hn = ws::encode_head(head, static_cast<uint8_t>(off == 0 ? opcode : ws::kCont), fin, len,
                                    masked ? key : nullptr, compress && off == 0);
        if (masked) ws::apply_mask(reinterpret_cast<uint8_t*>(&payload[off]), len, key);
        uv_buf_t b[2] = {uv_buf_init(reinterpret_cast<char*>(head), static_cast<unsigned>(hn)),
                         uv_buf_init(&payload[off], static_cast<unsigned>(len))};
        if (fin) return write_last(L, s, b, 2, 0, 2, nowait);
        int err = s->try_write(L, b, 2, SIZE_MAX, 0, 2);
        if (err) {
            luaio::push_uv_error(L, err);
            return 1;
        }
        off += len;
    }
}

// frame = core.encode(opcode, data): an unmasked, uncompressed frame, or nil, EILSEQ for text
// that is not UTF-8 (a hub's message, encoded once for all its subscribers).
int l_encode(lua_State* L) {
    int opcode = static_cast<int>(luaL_checkinteger(L, 1));
    std::vector<uv_buf_t> bufs;
    uint64_t total = gather(L, 2, bufs, "publish");
    if (opcode == ws::kText && !utf8_ok(bufs.data(), bufs.size())) {
        lua_pushnil(L);
        return 1 + push_not_utf8(L);
    }
    uint8_t head[ws::kMaxHead];
    size_t hn = ws::encode_head(head, static_cast<uint8_t>(opcode), true, total, nullptr);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addlstring(&b, reinterpret_cast<char*>(head), hn);
    for (const uv_buf_t& p : bufs) luaL_addlstring(&b, p.base, p.len);
    luaL_pushresult(&b);
    return 1;
}

// Appends to out the frames of one message: payload p[0, n) in frames of at most frag bytes (one
// frame when frag is 0): the first with the opcode (and RSV1 when compressed), continuation
// frames after it, each masked with a key of its own when `masked` (a client's frames).
void append_frames(lua_State* L, std::string& out, int opcode, const char* p, size_t n, size_t frag, bool rsv1,
                   bool masked) {
    size_t off = 0;
    do {
        size_t len = frag && n - off > frag ? frag : n - off;
        uint8_t head[ws::kMaxHead], key[4];
        if (masked && RAND_bytes(key, 4) != 1) luaio::raise(L, "publish", "no random bytes for the mask");
        size_t hn = ws::encode_head(head, static_cast<uint8_t>(off == 0 ? opcode : ws::kCont), off + len == n, len,
                                    masked ? key : nullptr, rsv1 && off == 0);
        out.append(reinterpret_cast<char*>(head), hn);
        size_t at = out.size();
        out.append(p + off, len);
        if (masked) ws::apply_mask(reinterpret_cast<uint8_t*>(&out[at]), len, key);
        off += len;
    } while (off < n);
}

// A hub's message (data, and frame, its encoding: the Lua string at frame_idx) to one subscriber, the open stream s
// with Frames f whose socket is at sock_idx, never waiting. Returns 0, or the error: UV_EAGAIN when more than limit
// bytes would be queued. The shared frame goes out as it is (not copied) to a server connection without deflate and
// without a fragmentSize the message passes. Otherwise the subscriber needs frames of its own: compressed
// (permessage-deflate, from the threshold on), in fragments of its fragmentSize, masked (a
// client). Those that do not depend on the connection (no mask, no compression context) are
// made once per setting and kept in the table at zcache_idx (made on first use where nil) for
// the other subscribers; a connection that keeps its compression context, or masks, gets its
// own. Leaves the stack as it found it.
struct Message {
    int opcode;
    const char* data;
    size_t dlen;
    const char* frame;
    size_t flen;
    int frame_idx;
};

int post(lua_State* L, int sock_idx, Stream* s, Frames* f, const Message& m, int zcache_idx, size_t limit) {
    int opcode = m.opcode, frame_idx = m.frame_idx;
    const char *data = m.data, *frame = m.frame;
    size_t dlen = m.dlen, flen = m.flen;
    size_t queued = s->write_queue_size() + f->corked();
    if (queued > 0 && queued + flen > limit) return UV_EAGAIN;
    Deflate* d = f->z();
    uint32_t frag = f->fragment();
    bool compress = d && dlen >= d->threshold;
    bool own = compress || f->client() || (frag && dlen > frag);
    if (!own) {
        if (flen <= kCorkMax) {
            cork(L, sock_idx, s, f, frame, flen);
            return 0;
        }
        uncork_now(L, f);
        uv_buf_t b = uv_buf_init(const_cast<char*>(frame), static_cast<unsigned>(flen));
        return s->try_write(L, &b, 1, limit, frame_idx, 0);
    }
    int top = lua_gettop(L);
    bool shared = !f->client() && (!compress || d->out_reset);
    // The settings the bytes depend on: the compressor's, and the fragment size.
    lua_Number key = (compress ? (d->out_bits * 16 + d->level + 1) * 16 + d->mem_level : 0) + frag * 65536.0;
    if (shared) {
        if (lua_isnil(L, zcache_idx)) {
            lua_newtable(L);
            lua_replace(L, zcache_idx);
        }
        lua_pushnumber(L, key);
        lua_rawget(L, zcache_idx);
    } else {
        lua_pushnil(L);
    }
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        std::string z, out;
        const char* p = data;
        size_t n = dlen;
        if (compress) {
            uv_buf_t part = uv_buf_init(const_cast<char*>(data), static_cast<unsigned>(dlen));
            if (!f->deflate_message(&part, 1, z)) luaio::raise(L, "publish", "zlib could not start a compressor");
            p = z.data();
            n = z.size();
        }
        append_frames(L, out, opcode, p, n, frag, compress, f->client());
        lua_pushlstring(L, out.data(), out.size());
        if (shared) {
            lua_pushnumber(L, key);
            lua_pushvalue(L, -2);
            lua_rawset(L, zcache_idx);
        }
    }
    size_t zn;
    const char* zf = lua_tolstring(L, -1, &zn);
    int err = 0;
    if (zn <= kCorkMax) {
        cork(L, sock_idx, s, f, zf, zn);
    } else {
        uncork_now(L, f);
        uv_buf_t b = uv_buf_init(const_cast<char*>(zf), static_cast<unsigned>(zn));
        err = s->try_write(L, &b, 1, limit, top + 1, 0);
    }
    lua_settop(L, top);
    return err;
}

// delivered, failed = core.publish(list, count, opcode, data, frame, limit): a hub's message
// (data, a string, and frame, its encoding) to the subscribers list[count] down to list[1] (ws
// tables) that are open, without waiting (see post): one call for all of them. Returns how many
// took it, and nil or an array of the ones that did not, each followed by its error (EAGAIN:
// more than limit bytes would be queued; EPIPE: its socket is closing), for the caller to end.
int l_publish(lua_State* L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    int count = static_cast<int>(luaL_checkinteger(L, 2));
    Message m;
    m.opcode = static_cast<int>(luaL_checkinteger(L, 3));
    m.data = luaL_checklstring(L, 4, &m.dlen);
    m.frame = luaL_checklstring(L, 5, &m.flen);
    m.frame_idx = 5;
    lua_Number lim = luaL_checknumber(L, 6);
    size_t limit = lim < 9.2e18 ? static_cast<size_t>(lim) : SIZE_MAX;
    lua_settop(L, 6);
    lua_pushliteral(L, "open"); // 7: the state of an open ws (ws[2])
    lua_pushnil(L);             // 8: the frames made for subscribers with settings (post's zcache)
    lua_pushnil(L);             // 9: the subscribers that failed, and their errors
    int delivered = 0, nfailed = 0;
    for (int i = count; i >= 1; i--) {
        lua_rawgeti(L, 1, i); // 10: ws
        if (!lua_istable(L, 10)) {
            lua_settop(L, 9);
            continue;
        }
        lua_rawgeti(L, 10, 2); // 11: its state
        if (!lua_rawequal(L, 11, 7)) {
            lua_settop(L, 9);
            continue;
        }
        lua_rawgeti(L, 10, 1); // 12: its socket
        Stream* s = Stream::check_or_closed(L, 12, "publish");
        Frames* f = s && !s->closing() ? frames_of(s) : nullptr;
        int err = f ? post(L, 12, s, f, m, 8, limit) : UV_EPIPE;
        if (err == 0) {
            delivered++;
        } else {
            if (nfailed == 0) {
                lua_newtable(L);
                lua_replace(L, 9);
            }
            lua_pushvalue(L, 10);
            lua_rawseti(L, 9, ++nfailed);
            luaio::push_uv_error(L, err);
            lua_rawseti(L, 9, ++nfailed);
        }
        lua_settop(L, 9);
    }
    lua_pushinteger(L, delivered);
    lua_pushvalue(L, 9);
    return 2;
}

// A connection that luaio ends while bytes are still queued for it (a hub's slow subscriber):
// its close frame goes behind them, and the socket closes once the frame is written, or after
// the timeout (a peer that reads nothing more never gets it).
struct Linger {
    uv_timer_t timer;
    Stream* s;
    bool done = false;
};

void linger_done(Stream* s, int, void* data) {
    auto* l = static_cast<Linger*>(data);
    if (l->done) return;
    l->done = true;
    s->close(); // idempotent
    uv_close(reinterpret_cast<uv_handle_t*>(&l->timer), [](uv_handle_t* h) { delete static_cast<Linger*>(h->data); });
}

void linger_timeout(uv_timer_t* t) {
    static_cast<Linger*>(t->data)->s->close(); // the queued close frame then fails: linger_done
}

// core.linger(sock, payload, timeout): the close frame with payload goes out
// behind everything queued (corked frames first), then the socket closes (see Linger).
int l_linger(lua_State* L) {
    Stream* s;
    Frames* f = check_frames(L, &s, "close");
    size_t n;
    const char* p = luaL_checklstring(L, 2, &n);
    bool masked = f->client();
    lua_Number ms = luaL_checknumber(L, 3);
    uncork_now(L, f);
    if (s->write_error() || n > ws::kMaxControl) {
        s->close();
        return 0;
    }
    std::string frame;
    append_frames(L, frame, ws::kClose, p, n, 0, false, masked);
    auto* l = new Linger;
    l->s = s;
    uv_timer_init(luaio::loop(), &l->timer);
    l->timer.data = l;
    uv_timer_start(&l->timer, linger_timeout, ms > 0 && ms < 1e12 ? static_cast<uint64_t>(ms) : 1, 0);
    uv_buf_t b = uv_buf_init(&frame[0], static_cast<unsigned>(frame.size()));
    int err = s->write(&b, 1, linger_done, l);
    if (err) linger_done(s, err, l); // a write refused before it was queued does not call back
    return 0;
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
    lua_pushliteral(L, "text");
    g_text_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushliteral(L, "binary");
    g_binary_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    const luaL_Reg funcs[] = {{"frames", l_frames},         {"send", l_send},
                              {"encode", l_encode},         {"publish", l_publish},
                              {"accept_key", l_accept_key}, {"key_bytes", l_key_bytes},
                              {"random_key", l_random_key}, {"dispatcher", l_dispatcher},
                              {"linger", l_linger},         {"watch", l_watch},
                              {"receive", l_receive},       {"handle", l_handle},
                              {"unwatch", l_unwatch},       {nullptr, nullptr}};
    lua_newtable(L);
    luaL_register(L, nullptr, funcs);
    return 1;
}
