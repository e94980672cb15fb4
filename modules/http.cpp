// The C++ core of the http module, registered as `luaio.http`; lib/http.lua is the public face.
//
// A Conn is the HTTP/1.x state of one tcp socket (a luaio::Stream), server or client side. It
// parses with modules/http_parser.h straight from the stream's buffer (Stream::read_with, no
// Lua string per read) and writes each response head, built in one reused buffer, together
// with the body in one vectored write (Stream::write_buffers).
//
//   limits = core.limits(options)                 -- parsed once per server or client
//   site = core.site(limits, serve, seed[, access]) -- a server's state; site:close()
//   core.accept(site, sock)                       -- a new connection of that server
//   conn = core.client(sock, limits)
// server side: no task waits for a request. The connection waits in C++ (Stream::watch, its
// timeouts swept by one timer per server), and a task runs serve(conn, <request values>) once
// a request head is in (see push_request); when the response is done, serve asks for the next:
//   <request values> | nothing | nil, err = conn:next()   -- nothing: C++ waits; err: close
//   headers = core.headers(head)                  -- a request's headers table, made when read
//   err = conn:respond(status, headers, body[, last]) -- a whole response
//   err = conn:head(status, headers[, data[, last]])  -- a streamed response: head (+ first data)
// (headers: a map, or with `last` its array slots 2..last hold name, value, ...)
//   err = conn:write(data)   err = conn:finish([data])
//   conn:reject(status)                           -- a canned error response; closes
//   conn:setclose()                               -- this response ends the connection
// client side:
//   head = core.requesthead(method, target, headers, framing) -- checked before connecting
//   err = conn:request(head, body | true, is_head, chunked)  -- true: conn:write/finish send the body
//   res | nil, err = conn:response(with_body, limits)
//   conn:replied()                                 -- a byte came back since the request
// both:
//   data | nil (end) | nil, err = conn:read()      -- the next piece of the body
//   body | nil, err = conn:body()                  -- the whole body (bounded)
//   conn:keepalive()  conn:reusable()  conn:sent()  conn:socket()  conn:close()
#include "modules/http_parser.h"
#include "modules/http_status.h"
#include "modules/log.h"
#include "runtime/luaio.h"
#include "runtime/object.h"
#include "runtime/stream.h"

#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <memory>
#include <new>
#include <string>
#include <unordered_map>
#include <vector>

namespace {

using luaio::Stream;
namespace H = luaio::http;

constexpr const char* kConnClass = "luaio.http.conn";
constexpr const char* kLimitsClass = "luaio.http.limits";
// ms a connection taken from the backlog by a closing server gets to send its first request.
constexpr uint64_t kFirstRequestOnClose = 2000;

// Defaults, after nginx and Node.js; every one is an option of the server or client.
struct Limits {
    size_t max_header_size = H::kDefaultMaxHeaderSize; // 431 beyond (Node.js 16 KiB)
    uint64_t max_body_size = 1024 * 1024;              // 413 beyond (nginx client_max_body_size 1m)
    uint64_t header_timeout = 60000;                   // ms, first byte to end of head (slowloris)
    uint64_t keepalive_timeout = 75000;                // ms, idle between requests (nginx 75 s)
    uint64_t request_timeout = 300000;                 // ms, first byte to end of body (Node.js 300 s)
    uint64_t max_requests = 1000;                      // per connection (nginx keepalive_requests)
    uint64_t send_timeout = 60000;                     // ms without write progress (nginx send_timeout)
};

const Limits kDefaultLimits;

enum class Op : uint8_t { None, Next, Response, Piece, Body };

constexpr uint64_t kUncounted = ~uint64_t(0); // Conn::out_left when the body is not counted

struct Site;

// What a request's access log line needs that is gone once its response ends (the head's bytes
// are consumed), kept per connection while its server logs (Site::access).
struct AccessRecord {
    std::string peer; // found at the connection's first request
    std::string method, target, referer, user_agent;
    uint64_t t0 = 0; // uv_hrtime() when the head was in
    uint64_t bytes = 0;
    int status = 0;
    luaio::log::AccessFormat format = luaio::log::AccessFormat::Off;
    uint8_t major = 1, minor = 1;
    bool active = false; // a request whose line is not written yet
};

// The lists of a server's waiting connections, each in the order of its deadlines (one timeout
// per list): waiting for a request (keep-alive timeout), or with part of a head in (header timeout).
enum class Wait : uint8_t { None, Idle, Head };

// A conn lives in its userdata (luaio::Resident: no proxy, no allocation of its own); while open
// it anchors that userdata (its requests point back at it) and its socket's proxy.
struct Conn final : luaio::Consumer, luaio::Resident<Conn> {
    static constexpr const char* kClass = kConnClass;
    static constexpr const char* kWhat = "HTTP connection";
    luaio::Anchor sock; // the socket's proxy (declared first: it fills the tail of the base)

    int consume(lua_State* L, const char* data, size_t len, int err, size_t* used) override;
    void ready(lua_State* L, int n) override;
    // Collected (an open conn only when the state closes), or __gc called by hand: closed, and
    // a closed conn while anything can still reach it. Its members own nothing once it is closed,
    // so no destructor needs to run.
    void collected();

    // A server connection holds a parser only from the start of a request to the end of its
    // response (they are pooled: an idle connection costs no parser state).
    H::Parser* parser = nullptr;
    const Limits* lim = &kDefaultLimits;
    Site* site = nullptr; // server side: the server (limits, waiting lists, serve function)
    Conn* prev = nullptr; // links in the site's list `wait`
    Conn* next = nullptr;
    void** sock_ud = nullptr;           // the socket proxy's pointer slot: nullptr once the socket closed
    std::unique_ptr<std::string> body;  // a whole body being gathered
    std::unique_ptr<AccessRecord> alog; // while its server has an access log
    uint64_t body_bytes = 0;            // body bytes of the current message so far
    uint64_t deadline = 0;              // loop time by which the current wait (head, request, idle) ends
    uint64_t requests = 0;
    // Body bytes the response's Content-Length still allows (kUncounted: none).
    uint64_t out_left = kUncounted;
    int req_ref = LUA_NOREF; // a client's response waiting for its whole body
    int lim_ref = LUA_NOREF; // client: its limits userdata; seed server: the metatable of its requests
    Op op = Op::None;
    Wait wait = Wait::None;
    bool server = true;
    bool with_body = false;   // next()/response() also gathers the whole body
    bool in_head = false;     // bytes of a head have come (server: not idle)
    bool responded = false;   // the response to the current request was sent completely
    bool head_sent = false;   // its head was sent
    bool chunked_out = false; // the response body is sent in chunks
    bool is_head = false;     // HEAD request: the response has no body
    bool no_body = false;     // 1xx/204/304 or HEAD: no body is sent
    bool expect_continue = false;
    bool continue_sent = false;
    bool keep = true;    // the connection goes on after this message
    bool broken = false; // the stream of messages is unusable (bad framing, truncated body)
    bool closed = false;
    bool replied = false;        // client: a byte came back since the request went out (no retry then)
    bool until_continue = false; // client: response() returns true at a 100 Continue

    Stream* stream() const { return sock_ud && *sock_ud ? static_cast<Stream*>(*sock_ud) : nullptr; }
    bool in_body() const { return parser && parser->in_body(); }
    std::string& body_buf() {
        if (!body) body.reset(new std::string);
        return *body;
    }
};

struct ConnList {
    Conn* head = nullptr;
    Conn* tail = nullptr;
};

// A server whose handler is http.static answers requests for the small files it served a moment
// ago here, without Lua (see serve_cached): per request path (raw, without the query), the
// header fields static sent and the body, until the time static's own open-file cache would look
// the file up again, or until static forgets the file (it changed: lib/http/static.lua watches
// the directories of the files it keeps). static decides what may be kept (a whole 200 response
// to a path that passed its checks, no precompressed variant) and hands it over with
// conn:sendfile. The cache is static's (core.filecache(max), one per handler), shared by the
// servers whose handler it is (core.site's files): each anchors it.
struct CachedFile {
    std::string bytes;          // static's header field lines, then the body
    std::string file;           // the file's path (as static names it), for forget
    std::string etag, modified; // its ETag and Last-Modified values (for a 304)
    size_t fields = 0;          // the field lines' length
    uint64_t expires = 0;       // uv_hrtime() after which static looks the file up again
};

constexpr const char* kFileCacheClass = "luaio.http.filecache";

struct FileCache {
    size_t max = 0; // entries (static's fileCache.max)
    std::unordered_map<std::string, CachedFile> files;
    std::string key;   // the lookup key, reused (no allocation per request)
    bool gone = false; // collected (or __gc called by hand): keeps nothing more
    // Lets go of every entry and its memory (the userdata's memory goes without a destructor).
    void release() {
        std::unordered_map<std::string, CachedFile>().swap(files);
        std::string().swap(key);
    }
};

// A server's state, shared by its connections: freed once the server is closed and its last
// connection is gone (and the sweep timer is closed).
void site_close(Site* site);

struct Site : luaio::Handle<Site> {
    static constexpr const char* kClass = "luaio.http.site";
    static constexpr const char* kWhat = "http site";
    // Its proxy is collected (or its __gc called by hand): the server closes.
    void proxy_gone() { site_close(this); }

    Limits lim;
    uv_timer_t timer;
    ConnList idle;         // waiting for a request
    ConnList heads;        // part of a head came
    uint64_t armed_at = 0; // the deadline the timer is set for (0: not set)
    size_t conns = 0;
    int serve_ref = LUA_NOREF; // serve(conn, req): the task of a request (lib/http/server.lua)
    bool seed = false;         // requests come with their whole body (http.serve)
    luaio::log::AccessFormat access = luaio::log::AccessFormat::Off;
    FileCache* files = nullptr; // the handler is http.static (see CachedFile); anchored by files_ref
    int files_ref = LUA_NOREF;
    bool closing = false;  // server:close(): connections end after their current request
    bool draining = false; // a graceful stop began: responses say Connection: close
    bool freeing = false;
};

// Parsers of finished requests, for the next ones (bounded).
std::vector<H::Parser*>& parser_pool() {
    // Never destroyed: the pooled parsers stay reachable until the process exits.
    static auto* pool = new std::vector<H::Parser*>;
    return *pool;
}

H::Parser* acquire_parser(llhttp_type_t type) {
    auto& pool = parser_pool();
    if (pool.empty()) return new H::Parser(type);
    H::Parser* p = pool.back();
    pool.pop_back();
    p->init(type);
    return p;
}

void release_parser(H::Parser* p) {
    auto& pool = parser_pool();
    if (pool.size() < 256)
        pool.push_back(p);
    else
        delete p;
}

void release_parser(Conn* c) {
    if (!c->parser) return;
    release_parser(c->parser);
    c->parser = nullptr;
}

// A server connection's place in its site's waiting lists (see the site section below).
void track(Conn* c);
void untrack(Conn* c);
// Closes the connection and its socket and lets go of its references. Idempotent.
void conn_close(Conn* c);
// Lets go of the connection's references, parser and site (conn_close without closing the socket).
void release(lua_State* L, Conn* c);

// Conns that passed check_conn, by address (direct-mapped): a userdata at such an address is
// that conn until it is collected, when l_gc forgets it, so its methods skip the metatable check.
constexpr size_t kCheckedSlots = 256;
Conn* g_checked[kCheckedSlots];

inline Conn*& checked_slot(const void* p) {
    return g_checked[(reinterpret_cast<uintptr_t>(p) >> 4) & (kCheckedSlots - 1)];
}

Conn* check_conn(lua_State* L, const char* fname) {
    auto* c = static_cast<Conn*>(lua_touserdata(L, 1));
    Conn*& slot = checked_slot(c);
    if (!c || c != slot) {
        c = static_cast<Conn*>(luaio::test_object(L, 1, kConnClass));
        if (!c) luaio::raise(L, fname, "expected %s as self, got %s", kConnClass, luaL_typename(L, 1));
        checked_slot(c) = c;
    }
    if (c->closed) luaio::raise(L, fname, "attempt to use a closed HTTP connection");
    return c;
}

Stream* check_stream(lua_State* L, Conn* c, const char* fname) {
    Stream* s = c->stream();
    if (!s) luaio::raise(L, fname, "attempt to use a closed socket");
    return s;
}

void push_proto_error(lua_State* L, const char* what, const char* why) {
    char msg[256];
    std::snprintf(msg, sizeof msg, "%s: %s", what, why ? why : "malformed");
    luaio::push_error(L, UV_EPROTO, msg);
}

void push_too_large(lua_State* L, const char* what, uint64_t limit) {
    char msg[128];
    std::snprintf(msg, sizeof msg, "%s larger than %llu bytes", what, static_cast<unsigned long long>(limit));
    luaio::push_error(L, UV_E2BIG, msg);
}

bool write_canned(Conn* c, int status);

// The stream of messages is unusable from here on (bad framing, an oversized or truncated
// message): these mark the conn broken and push nil and the error. A server answers a body
// that went wrong at once (413, 400), as nginx does before its handler runs: nothing the
// handler does afterwards reaches the client, and nothing after it on the connection runs.
void fail_too_large(lua_State* L, Conn* c, const char* what, uint64_t limit) {
    if (c->server) write_canned(c, 413);
    c->broken = true;
    lua_pushnil(L);
    push_too_large(L, what, limit);
}

void fail_proto(lua_State* L, Conn* c, const char* what, const char* why) {
    c->broken = true;
    lua_pushnil(L);
    push_proto_error(L, what, why);
}

// A body that went wrong: a read error (other than EOF) as it is, otherwise its framing.
void fail_body(lua_State* L, Conn* c, int err) {
    if (err && err != UV_EOF) {
        c->broken = true;
        lua_pushnil(L);
        luaio::push_uv_error(L, err);
        return;
    }
    if (c->server) write_canned(c, 400);
    fail_proto(L, c, "bad body", c->parser->error());
}

// ---------------------------------------------------------------- response heads

using luaio::http::reason_phrase;

// "Server: luaio\r\nDate: <IMF-fixdate>\r\n", the Date formatted once per second; the Date
// line alone starts at kDateOffset.
struct DefaultLines {
    char text[80];
    size_t len = 0;
};
constexpr char kServerLine[] = "Server: luaio\r\n";
constexpr size_t kDateOffset = sizeof kServerLine - 1;

const DefaultLines& default_lines() {
    static DefaultLines d;
    static time_t last = 0;
    time_t now = time(nullptr);
    if (now != last || d.len == 0) {
        last = now;
        struct tm tm;
        gmtime_r(&now, &tm);
        std::memcpy(d.text, kServerLine, kDateOffset);
        d.len = kDateOffset +
                strftime(d.text + kDateOffset, sizeof d.text - kDateOffset, "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
    }
    return d;
}

const char* date_line() {
    return default_lines().text + kDateOffset;
}

// The one buffer that every head is built in (writes copy what the kernel does not take). Its
// appends are inline copies: a head is built from a dozen small pieces, and std::string's
// out-of-line append cost more than the copying.
class OutBuf {
  public:
    void clear() { len_ = 0; }
    size_t size() const { return len_; }
    bool empty() const { return len_ == 0; }
    char* data() { return p_; }
    void append(const char* s, size_t n) {
        reserve(n);
        std::memcpy(p_ + len_, s, n);
        len_ += n;
    }
    void push_back(char ch) {
        reserve(1);
        p_[len_++] = ch;
    }
    void append_uint(uint64_t v) {
        char tmp[24];
        int n = 0;
        do {
            tmp[n++] = static_cast<char>('0' + v % 10);
            v /= 10;
        } while (v);
        reserve(static_cast<size_t>(n));
        while (n) p_[len_++] = tmp[--n];
    }
    // Room for n more bytes, written in place and then counted with added().
    char* tail(size_t n) {
        reserve(n);
        return p_ + len_;
    }
    void added(size_t n) { len_ += n; }

  private:
    void reserve(size_t n) {
        if (len_ + n <= cap_) return;
        size_t cap = cap_ ? cap_ : 4096;
        while (cap < len_ + n) cap *= 2;
        char* p = static_cast<char*>(std::realloc(p_, cap));
        if (!p) throw std::bad_alloc();
        p_ = p;
        cap_ = cap;
    }
    char* p_ = nullptr;
    size_t len_ = 0;
    size_t cap_ = 0;
};

OutBuf& out() {
    static OutBuf b; // never freed: it lives as long as the process
    return b;
}

inline char ascii_lower(char c) {
    return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c;
}

template <size_t N> bool lower_equals(const char* a, size_t alen, const char (&lower)[N]) {
    if (alen != N - 1) return false;
    for (size_t i = 0; i < N - 1; i++)
        if (ascii_lower(a[i]) != lower[i]) return false;
    return true;
}

// RFC 9110 token characters: visible ASCII except the delimiters.
struct TokenTable {
    bool ok[256] = {};
    TokenTable() {
        for (int c = 33; c < 127; c++) ok[c] = true;
        for (const char* d = "\"(),/:;<=>?@[\\]{}"; *d; d++) ok[static_cast<unsigned char>(*d)] = false;
    }
};
const TokenTable kToken;

bool is_token(const char* s, size_t len) {
    if (len == 0) return false;
    for (size_t i = 0; i < len; i++)
        if (!kToken.ok[static_cast<unsigned char>(s[i])]) return false;
    return true;
}

bool is_field_value(const char* s, size_t len) {
    for (size_t i = 0; i < len; i++) {
        unsigned char c = static_cast<unsigned char>(s[i]);
        if (c == '\r' || c == '\n' || c == 0) return false;
    }
    return true;
}

// Headers the serializer must know about when the user sets them. In a server's response
// (`framing`) the framing is luaio's: Content-Length, Transfer-Encoding and Connection are not
// copied but checked and noted here, and build_response_head writes its own.
struct Seen {
    bool server = false, date = false, length = false, te = false, connection = false, host = false;
    bool framing = false; // a server response: the fields above are owned
    bool close = false;   // framing: the handler's Connection field says close
    uint64_t length_value = 0;
};

// A handler's Content-Length: digits (or a non-negative integer number), one value.
uint64_t check_length(lua_State* L, int idx, const char* fname) {
    if (lua_type(L, idx) == LUA_TNUMBER) {
        lua_Number n = lua_tonumber(L, idx);
        if (n >= 0 && n < 9007199254740992.0 && n == static_cast<lua_Number>(static_cast<uint64_t>(n)))
            return static_cast<uint64_t>(n);
    } else if (lua_type(L, idx) == LUA_TSTRING) {
        size_t len;
        const char* v = lua_tolstring(L, idx, &len);
        uint64_t n = 0;
        bool ok = len > 0 && len <= 15;
        for (size_t i = 0; ok && i < len; i++) {
            ok = v[i] >= '0' && v[i] <= '9';
            n = n * 10 + static_cast<uint64_t>(v[i] - '0');
        }
        if (ok) return n;
    }
    luaio::raise(L, fname, "invalid Content-Length (a number of bytes, once)");
}

// True when the comma-separated list s (a Connection value) has the token `close`.
bool has_close(const char* s, size_t len) {
    for (size_t i = 0; i + 5 <= len; i++)
        if ((i == 0 || s[i - 1] == ',' || s[i - 1] == ' ') && lower_equals(s + i, 5, "close") &&
            (i + 5 == len || s[i + 5] == ',' || s[i + 5] == ' '))
            return true;
    return false;
}

// Notes a framing field of a server response (see Seen) instead of copying it. Returns false
// when name is not one.
bool own_field(lua_State* L, const char* name, size_t nlen, int value_idx, Seen& seen, const char* fname) {
    if (!lower_equals(name, nlen, "content-length") && !lower_equals(name, nlen, "transfer-encoding") &&
        !lower_equals(name, nlen, "connection"))
        return false;
    int t = lua_type(L, value_idx);
    if (t == LUA_TBOOLEAN && !lua_toboolean(L, value_idx)) return true; // false: left out
    if (lower_equals(name, nlen, "content-length")) {
        if (seen.length) luaio::raise(L, fname, "invalid Content-Length (a number of bytes, once)");
        seen.length = true;
        seen.length_value = check_length(L, value_idx, fname);
        return true;
    }
    if (lower_equals(name, nlen, "transfer-encoding")) {
        size_t vlen = 0;
        const char* v = t == LUA_TSTRING ? lua_tolstring(L, value_idx, &vlen) : nullptr;
        // Only chunked, which luaio applies itself (other codings would need a coder).
        if (!v || !lower_equals(v, vlen, "chunked"))
            luaio::raise(L, fname, "Transfer-Encoding may only be chunked (luaio frames the body)");
        seen.te = true;
        return true;
    }
    if (lower_equals(name, nlen, "connection")) {
        size_t vlen = 0;
        const char* v = t == LUA_TSTRING ? lua_tolstring(L, value_idx, &vlen) : nullptr;
        if (!v) luaio::raise(L, fname, "header 'Connection' must be a string");
        seen.close = seen.close || has_close(v, vlen);
        seen.connection = false; // luaio writes its own
        return true;
    }
    return false;
}

void append_header(lua_State* L, OutBuf& b, const char* fname, const char* name, size_t nlen, int vidx) {
    size_t vlen;
    const char* v = lua_tolstring(L, vidx, &vlen);
    if (!v) luaio::raise(L, fname, "header '%s' must be a string or a number", name);
    if (!is_field_value(v, vlen)) luaio::raise(L, fname, "header '%s' contains CR, LF or NUL", name);
    b.append(name, nlen);
    b.append(": ", 2);
    b.append(v, vlen);
    b.append("\r\n", 2);
}

// Appends the header field whose name (a string) is at name_idx and value (string, number,
// array of strings, or false to leave it out) at value_idx.
void append_field(lua_State* L, int name_idx, int value_idx, OutBuf& b, Seen& seen, const char* fname) {
    if (lua_type(L, name_idx) != LUA_TSTRING) luaio::raise(L, fname, "header names must be strings");
    size_t nlen;
    const char* name = lua_tolstring(L, name_idx, &nlen);
    if (!is_token(name, nlen)) luaio::raise(L, fname, "invalid header name '%s'", name);
    switch (ascii_lower(name[0])) {
    case 's':
        seen.server = seen.server || lower_equals(name, nlen, "server");
        break;
    case 'd':
        seen.date = seen.date || lower_equals(name, nlen, "date");
        break;
    case 'h':
        seen.host = seen.host || lower_equals(name, nlen, "host");
        break;
    case 'c':
    case 't':
        if (seen.framing) {
            if (own_field(L, name, nlen, value_idx, seen, fname)) return;
            break;
        }
        if (lower_equals(name, nlen, "content-length")) {
            seen.length = true;
            seen.length_value = static_cast<uint64_t>(lua_tonumber(L, value_idx));
        }
        seen.connection = seen.connection || lower_equals(name, nlen, "connection");
        seen.te = seen.te || lower_equals(name, nlen, "transfer-encoding");
        break;
    default:
        break;
    }
    int t = lua_type(L, value_idx);
    if (t == LUA_TSTRING || t == LUA_TNUMBER) {
        append_header(L, b, fname, name, nlen, value_idx);
    } else if (t == LUA_TTABLE) {
        int n = static_cast<int>(lua_objlen(L, value_idx));
        for (int i = 1; i <= n; i++) {
            lua_rawgeti(L, value_idx, i);
            append_header(L, b, fname, name, nlen, lua_gettop(L));
            lua_pop(L, 1);
        }
    } else if (t != LUA_TBOOLEAN || lua_toboolean(L, value_idx)) {
        luaio::raise(L, fname, "header '%s' must be a string, a number or an array of strings", name);
    } // false: the header is left out (e.g. Server = false)
}

// Appends the header fields of the table at idx: a map (name -> value) when last < 0, else its
// array slots 2..last hold name, value, name, value... (a response object's; slot 1 is its own).
void append_headers(lua_State* L, int idx, int last, OutBuf& b, Seen& seen, const char* fname) {
    if (lua_isnoneornil(L, idx)) return;
    if (!lua_istable(L, idx)) luaio::raise(L, fname, "headers must be a table, got %s", luaL_typename(L, idx));
    int top = lua_gettop(L);
    if (last >= 0) {
        for (int i = 2; i < last; i += 2) {
            lua_rawgeti(L, idx, i);
            lua_rawgeti(L, idx, i + 1);
            append_field(L, top + 1, top + 2, b, seen, fname);
            lua_settop(L, top);
        }
        return;
    }
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        append_field(L, top + 1, top + 2, b, seen, fname);
        lua_settop(L, top + 1);
    }
}

// Writes bufs on the conn's stream; returns the results of the write (see Stream).
// Buffers from bufs[ncopy] on point into the Lua value at `anchor` (see Stream::write_buffers).
int write_out(lua_State* L, Conn* c, const uv_buf_t* bufs, unsigned n, const char* fname, int anchor = 0,
              unsigned ncopy = 0) {
    Stream* s = c->stream();
    if (!s) return luaio::return_uv_error(L, UV_ECANCELED, 0);
    return s->write_buffers(L, bufs, n, fname, anchor, ncopy);
}

// ---------------------------------------------------------------- access log

// The peer address of the conn's socket, or "-".
std::string peer_of(Conn* c) {
    Stream* s = c->stream();
    sockaddr_storage ss;
    int len = sizeof ss;
    char name[INET6_ADDRSTRLEN] = "-";
    if (s && s->handle()->type == UV_TCP && uv_tcp_getpeername(s->tcp(), reinterpret_cast<sockaddr*>(&ss), &len) == 0) {
        if (ss.ss_family == AF_INET)
            uv_ip4_name(reinterpret_cast<sockaddr_in*>(&ss), name, sizeof name);
        else if (ss.ss_family == AF_INET6)
            uv_ip6_name(reinterpret_cast<sockaddr_in6*>(&ss), name, sizeof name);
    }
    return name;
}

// Writes the line of the conn's request, once. A request whose response never began (the
// client went away first) is logged as 499, nginx's "client closed request".
void access_end(Conn* c) {
    AccessRecord* a = c->alog.get();
    if (!a || !a->active) return;
    a->active = false;
    luaio::log::AccessEntry e;
    e.peer = a->peer;
    e.method = a->method;
    e.target = a->target;
    e.referer = a->referer;
    e.user_agent = a->user_agent;
    e.major = a->major;
    e.minor = a->minor;
    e.status = c->head_sent && a->status ? a->status : 499;
    e.bytes = a->bytes;
    e.micros = (uv_hrtime() - a->t0) / 1000;
    luaio::log::access(a->format, e);
}

// A request head is in (its spans in scratch_head()): keeps what its line will say.
void access_begin(Conn* c) {
    if (!c->alog) {
        c->alog.reset(new AccessRecord);
        c->alog->peer = peer_of(c);
    }
    access_end(c); // a request that was never answered
    AccessRecord& a = *c->alog;
    const H::Head& h = H::scratch_head();
    if (h.method.p)
        a.method.assign(h.method.p, h.method.len);
    else
        a.method.assign(llhttp_method_name(static_cast<llhttp_method_t>(c->parser->method())));
    a.target.assign(h.url.p ? h.url.p : "", h.url.len);
    a.referer.clear();
    a.user_agent.clear();
    for (size_t i = 0; i < h.nheaders; i++) {
        const H::Span& n = h.names[i];
        const H::Span& v = h.values[i];
        if (lower_equals(n.p, n.len, "referer"))
            a.referer.assign(v.p ? v.p : "", v.len);
        else if (lower_equals(n.p, n.len, "user-agent"))
            a.user_agent.assign(v.p ? v.p : "", v.len);
    }
    a.major = static_cast<uint8_t>(c->parser->major());
    a.minor = static_cast<uint8_t>(c->parser->minor());
    a.format = c->site->access;
    a.t0 = uv_hrtime();
    a.bytes = 0;
    a.status = 0;
    a.active = true;
}

// The response's status and body bytes, for its line.
inline void access_status(Conn* c, int status) {
    if (c->alog) c->alog->status = status;
}
inline void access_bytes(Conn* c, uint64_t n) {
    if (c->alog) c->alog->bytes += n;
}

// The line of a head that could not be parsed, which luaio answered itself (400, 431, 408):
// its request line as far as it came (data, up to the first line feed, at most 2 KiB; none: "-").
void access_unparsed(Conn* c, int status, const char* data, size_t len) {
    if (!c->site || c->site->access == luaio::log::AccessFormat::Off) return;
    if (!c->alog) {
        c->alog.reset(new AccessRecord);
        c->alog->peer = peer_of(c);
    }
    constexpr size_t kMaxLine = 2048;
    const char* nl = data ? static_cast<const char*>(std::memchr(data, '\n', len)) : nullptr;
    size_t n = nl ? static_cast<size_t>(nl - data) : len;
    if (n > kMaxLine) n = kMaxLine;
    if (n && data[n - 1] == '\r') n--;
    luaio::log::AccessEntry e;
    e.peer = c->alog->peer;
    e.request = std::string_view(data ? data : "", n);
    e.status = status;
    // From the head's first byte when it came in pieces (its timeout runs from there).
    uint64_t now = luaio::now_ms(), first = c->deadline - c->lim->header_timeout;
    e.micros = c->in_head && now > first ? (now - first) * 1000 : 0;
    luaio::log::access(c->site->access, e);
}

// A canned response (400, 408, 413, 431, 500, 503) when nothing of a response was sent; the
// connection is then closed by the caller. Only tried when no earlier write is queued, so that
// it cannot overtake the response to a pipelined request. Returns whether it was written.
bool write_canned(Conn* c, int status) {
    Stream* s = c->stream();
    c->keep = false;
    if (!s || c->head_sent || !s->write_idle()) return false;
    char buf[256];
    int n = std::snprintf(buf, sizeof buf,
                          "HTTP/1.1 %d %s\r\nServer: luaio\r\n%sContent-Length: 0\r\nConnection: close\r\n\r\n", status,
                          reason_phrase(status), date_line());
    uv_buf_t b = uv_buf_init(buf, static_cast<unsigned>(n));
    s->write(&b, 1);
    c->head_sent = true;
    c->responded = true;
    access_status(c, status);
    access_end(c);
    return true;
}

// ---------------------------------------------------------------- building requests and responses

// Pushes the head in scratch_head() as a table: lower-cased names, repeated fields joined
// with ", " (RFC 9110 5.3), except set-cookie which is kept as an array of values.
void push_headers(lua_State* L) {
    H::Head& h = H::scratch_head();
    lua_createtable(L, 0, static_cast<int>(h.nheaders));
    char name[256];
    for (size_t i = 0; i < h.nheaders; i++) {
        const H::Span& n = h.names[i];
        const H::Span& v = h.values[i];
        size_t nlen = n.len < sizeof name ? n.len : sizeof name;
        for (size_t k = 0; k < nlen; k++) name[k] = ascii_lower(n.p[k]);
        lua_pushlstring(L, name, nlen);
        lua_pushvalue(L, -1);
        lua_rawget(L, -3);
        bool cookie = nlen == 10 && std::memcmp(name, "set-cookie", 10) == 0;
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            if (cookie) {
                lua_createtable(L, 1, 0);
                lua_pushlstring(L, v.p ? v.p : "", v.len);
                lua_rawseti(L, -2, 1);
            } else {
                lua_pushlstring(L, v.p ? v.p : "", v.len);
            }
            lua_rawset(L, -3);
        } else if (cookie) {
            lua_pushlstring(L, v.p ? v.p : "", v.len);
            lua_rawseti(L, -2, static_cast<int>(lua_objlen(L, -2)) + 1);
            lua_pop(L, 2);
        } else {
            lua_pushlstring(L, nlen == 6 && std::memcmp(name, "cookie", 6) == 0 ? "; " : ", ", 2);
            lua_pushlstring(L, v.p ? v.p : "", v.len);
            lua_concat(L, 3);
            lua_rawset(L, -3);
        }
    }
}

// Strings a request needs again and again (method names, versions), interned on first use and
// kept in the registry: pushing one then costs no strlen and no string hashing.
void push_cached(lua_State* L, int& ref, const char* s) {
    if (ref != LUA_NOREF) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
        return;
    }
    lua_pushstring(L, s);
    lua_pushvalue(L, -1);
    ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

constexpr int kMaxMethod = 64; // llhttp's method numbers are below this
int g_method_refs[kMaxMethod]; // set to LUA_NOREF when the module opens
int g_version_refs[2];         // "1.0", "1.1"

void push_version(lua_State* L, const H::Parser& p) {
    if (p.major() == 1 && p.minor() <= 1)
        push_cached(L, g_version_refs[p.minor()], p.minor() ? "1.1" : "1.0");
    else
        lua_pushfstring(L, "%d.%d", p.major(), p.minor());
}

void push_method(lua_State* L, int method) {
    const char* name = llhttp_method_name(static_cast<llhttp_method_t>(method));
    if (method >= 0 && method < kMaxMethod)
        push_cached(L, g_method_refs[method], name);
    else
        lua_pushstring(L, name);
}

// A request reaches Lua as values, not as a table: lib/http/server.lua builds the request
// table from a constant template, which the interpreter does faster than the C API can.
// Pushes method, url, path (nil when it is the url: no query), the head and the version. The
// head is the raw bytes of the request line and header lines: the headers table is only made
// from it when the handler reads req.headers (core.headers), so a request whose headers are
// not read costs one string (none when the same head came before: Lua interns strings).
constexpr int kRequestValues = 6; // and the body (or nil)

void push_request(lua_State* L, Conn* c, const char* head, size_t head_len) {
    H::Head& h = H::scratch_head();
    if (h.method.p)
        lua_pushlstring(L, h.method.p, h.method.len); // a method llhttp does not know
    else
        push_method(L, c->parser->method());
    const char* u = h.url.p ? h.url.p : "";
    lua_pushlstring(L, u, h.url.len);
    const char* q = static_cast<const char*>(std::memchr(u, '?', h.url.len));
    if (q)
        lua_pushlstring(L, u, static_cast<size_t>(q - u));
    else
        lua_pushnil(L);
    lua_pushlstring(L, head, head_len);
    push_version(L, *c->parser);
}

void push_response(lua_State* L, Conn* c) {
    H::Head& h = H::scratch_head();
    lua_createtable(L, 0, 6);
    lua_pushinteger(L, c->parser->status());
    lua_setfield(L, -2, "status");
    lua_pushlstring(L, h.reason.p ? h.reason.p : "", h.reason.len);
    lua_setfield(L, -2, "reason");
    push_headers(L);
    lua_setfield(L, -2, "headers");
    push_version(L, *c->parser);
    lua_setfield(L, -2, "httpVersion");
}

// Ends the current message: the request or response waiting for its body gets it.
// Pushes the gathered body and lets go of its buffer.
void push_body(lua_State* L, Conn* c) {
    if (c->body)
        lua_pushlstring(L, c->body->data(), c->body->size());
    else
        lua_pushliteral(L, "");
    c->body.reset();
}

// The client's response that waited for its whole body gets it.
void push_with_body(lua_State* L, Conn* c) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->req_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, c->req_ref);
    c->req_ref = LUA_NOREF;
    push_body(L, c);
    lua_setfield(L, -2, "body");
}

// ---------------------------------------------------------------- reading (Stream::read_with)

// Feeds body bytes into c->body until the message ends. Returns 1 when it ended, 0 when more
// bytes are needed, -1 on an error (pushed on L as nil, err).
int gather_body(lua_State* L, Conn* c, const char* data, size_t len, int err, size_t* used) {
    size_t u = 0;
    H::Parser::Result r = c->parser->feed_body(data, len, &u);
    *used += u;
    H::Pieces& pc = H::scratch_pieces();
    c->body_bytes += pc.total;
    if (c->body_bytes + (c->server ? c->parser->pending() : 0) > c->lim->max_body_size) {
        fail_too_large(L, c, "body", c->lim->max_body_size);
        return -1;
    }
    if (pc.total) {
        std::string& b = c->body_buf();
        for (auto& s : pc.piece) b.append(s.p, s.len);
    }
    if (r == H::Parser::Result::NeedMore && err) r = c->parser->finish();
    if (r == H::Parser::Result::Bad) {
        fail_body(L, c, err);
        return -1;
    }
    return r == H::Parser::Result::Ok ? 1 : 0;
}

// A new message (request or response) begins: per-message state. A client's flags of what it
// sends are its request's (l_request): a 100 Continue comes before its body is sent.
void begin_message(Conn* c) {
    c->body_bytes = 0;
    if (!c->server) return;
    c->responded = c->head_sent = c->chunked_out = false;
    c->continue_sent = c->expect_continue = false;
}

// Returns whether the 100 Continue went out.
bool send_continue(Conn* c) {
    if (!c->server || !c->expect_continue || c->continue_sent || c->head_sent) return false;
    c->continue_sent = true;
    Stream* s = c->stream();
    static const char k100[] = "HTTP/1.1 100 Continue\r\n\r\n";
    uv_buf_t b = uv_buf_init(const_cast<char*>(k100), sizeof k100 - 1);
    // What the kernel does not take at once is queued, and still goes out before the response.
    return s && s->write_idle() && s->write(&b, 1) == 0;
}

// A status line has a status code of exactly three digits (RFC 9112 4), which llhttp does not
// check: it reads "HTTP/1.1 20 OK" as 20 and "HTTP/1.1 0200 OK" as 200.
bool valid_status_line(const char* head, size_t len) {
    const char* sp = static_cast<const char*>(std::memchr(head, ' ', len));
    if (!sp) return false;
    size_t i = static_cast<size_t>(sp - head) + 1;
    if (len < i + 4 || head[i] < '1' || head[i] > '9') return false;
    if (!std::isdigit(static_cast<unsigned char>(head[i + 1])) ||
        !std::isdigit(static_cast<unsigned char>(head[i + 2])))
        return false;
    char after = head[i + 3];
    return after == ' ' || after == '\r' || after == '\n';
}

// Answers a request from its server's cache of static files (see CachedFile): 1 when it did, 0
// when the request goes to the handler, -1 when the write failed (nil and the error pushed).
int serve_cached(lua_State* L, Conn* c);
// consume_head's result for a request serve_cached answered: the next one may be buffered.
constexpr int kAnswered = -2;

int consume_head(Conn* c, lua_State* L, const char* data, size_t len, int err, size_t* used) {
    size_t off = *used;
    if (!c->parser) c->parser = acquire_parser(HTTP_REQUEST);
    // The unread rest of the previous request's body is discarded (it is bounded by the body limit).
    while (c->in_body()) {
        size_t u = 0;
        H::Parser::Result r = c->parser->feed_body(data + off, len - off, &u);
        off += u;
        *used = off;
        c->body_bytes += H::scratch_pieces().total;
        if (r == H::Parser::Result::Bad || c->body_bytes + c->parser->pending() > c->lim->max_body_size) {
            fail_proto(L, c, "bad body", r == H::Parser::Result::Bad ? c->parser->error() : "too large");
            return 2;
        }
        if (r == H::Parser::Result::NeedMore) {
            if (!err) return -1;
            lua_pushnil(L);
            luaio::push_uv_error(L, err);
            return 2;
        }
    }
    size_t u = 0, start = off;
    if (c->server) c->parser->set_skip_body(false);
    H::Parser::Result r = c->parser->parse_head(data + off, len - off, c->lim->max_header_size, &u);
    off += u;
    *used = off;
    switch (r) {
    case H::Parser::Result::NeedMore:
        if (err) {
            lua_pushnil(L);
            if (err == UV_EOF && c->in_head)
                push_proto_error(L, "connection closed", "in the middle of a head");
            else
                luaio::push_uv_error(L, err);
            return 2;
        }
        if (!c->in_head && len > off) {
            // The first bytes of a head: from now on the head timeout applies, not the idle one.
            c->in_head = true;
            c->deadline = luaio::now_ms() + c->lim->header_timeout;
            if (c->wait != Wait::None) track(c);
        }
        return -1;
    case H::Parser::Result::TooLarge:
        if (c->responded) c->head_sent = false; // the answer is to this request, not the last one
        if (c->server && write_canned(c, 431)) access_unparsed(c, 431, data + start, len - start);
        fail_too_large(L, c, "head", c->lim->max_header_size);
        return 2;
    case H::Parser::Result::Bad:
        // The status the parser chose (400, 405, 501, 505), or none for an HTTP/0.9 request.
        if (c->responded) c->head_sent = false; // the answer is to this request, not the last one
        if (c->server && c->parser->reject_status() && write_canned(c, c->parser->reject_status()))
            access_unparsed(c, c->parser->reject_status(), data + start, len - start);
        c->keep = false;
        fail_proto(L, c, "malformed HTTP message", c->parser->error());
        return 2;
    case H::Parser::Result::Ok:
        break;
    }
    c->in_head = false;
    begin_message(c);
    if (c->server) {
        c->requests++;
        if (c->site->access != luaio::log::AccessFormat::Off) access_begin(c);
        c->is_head = c->parser->method() == HTTP_HEAD;
        c->keep =
            c->parser->keep_alive() && c->requests < c->lim->max_requests && !c->site->closing && !c->site->draining;
        c->deadline = luaio::now_ms() + c->lim->request_timeout;
        if (c->parser->has_length() && c->parser->content_length() > c->lim->max_body_size) {
            write_canned(c, 413);
            fail_too_large(L, c, "body", c->lim->max_body_size);
            return 2;
        }
        // Expect: 100-continue is answered when the body is first read; an HTTP/1.0 client
        // does not know 100 Continue (RFC 9110 10.1.1), so it gets none. Any other expectation
        // cannot be met: 417 (as Node.js).
        H::Head& h = H::scratch_head();
        bool unmet = false;
        for (size_t i = 0; i < h.nheaders && c->parser->minor() >= 1; i++) {
            if (!lower_equals(h.names[i].p, h.names[i].len, "expect")) continue;
            if (lower_equals(h.values[i].p, h.values[i].len, "100-continue"))
                c->expect_continue = true;
            else
                unmet = true;
        }
        if (unmet) {
            write_canned(c, 417);
            fail_proto(L, c, "expectation failed", "an Expect other than 100-continue");
            return 2;
        }
        if (c->site->files) {
            int answered = serve_cached(L, c);
            if (answered < 0) return 2;
            if (answered) return kAnswered;
        }
        size_t head_len = c->parser->head_len();
        const char* head = c->parser->head_data();
        if (c->with_body && c->in_body()) {
            // The whole body is wanted too. What is here of it is gathered now; when that is all
            // of it, the request carries its body. Otherwise the request comes without one and
            // its task calls conn:body(), which goes on from here (so no task waits before a
            // request is in). The head stays in the buffer meanwhile: nothing is read into it.
            send_continue(c);
            if (gather_body(L, c, data + off, len - off, err, used) < 0) {
                write_canned(c, c->body_bytes > c->lim->max_body_size ? 413 : 400);
                return 2;
            }
        }
        push_request(L, c, head, head_len);
        if (c->with_body && !c->in_body())
            push_body(L, c);
        else
            lua_pushnil(L);
        return kRequestValues;
    }
    if (!valid_status_line(c->parser->head_data(), c->parser->head_len())) {
        fail_proto(L, c, "malformed status line", "the status code must be three digits from 100");
        return 2;
    }
    int status = c->parser->status();
    if (status >= 100 && status < 200 && status != 101) {
        // A request that sent Expect: 100-continue and waits for it, its body held back.
        if (status == 100 && c->until_continue) {
            lua_pushboolean(L, 1);
            return 1;
        }
        // An interim response (100 Continue, 103 Early Hints): the final one follows.
        return consume_head(c, L, data, len, err, used);
    }
    c->keep = c->parser->keep_alive();
    if (c->with_body && c->parser->has_length() && c->parser->content_length() > c->lim->max_body_size) {
        fail_too_large(L, c, "body", c->lim->max_body_size);
        return 2;
    }
    push_response(L, c);
    if (!c->with_body || !c->in_body()) {
        if (c->with_body) {
            lua_pushliteral(L, "");
            lua_setfield(L, -2, "body");
        }
        return 1;
    }
    send_continue(c);
    // A client waits for the body: the response is kept aside while it comes.
    c->req_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    c->op = Op::Body;
    int g = gather_body(L, c, data + off, len - off, err, used);
    if (g < 0) return 2;
    if (g == 0) return -1;
    push_with_body(L, c);
    return 1;
}

int Conn::consume(lua_State* L, const char* data, size_t len, int err, size_t* used) {
    Conn* c = this;
    *used = 0;
    if (len) c->replied = true;
    switch (c->op) {
    case Op::Next: {
        int n;
        bool answered = false;
        while ((n = consume_head(c, L, data, len, err, used)) == kAnswered) answered = true;
        // The connection waits for its next request from now (keep-alive timeout, no parser).
        if (answered && n < 0 && !c->in_head) track(c);
        return n;
    }
    case Op::Response:
        return consume_head(c, L, data, len, err, used);
    case Op::Body: {
        int g = gather_body(L, c, data, len, err, used);
        if (g < 0) return 2;
        if (g == 0) return -1;
        if (c->req_ref != LUA_NOREF)
            push_with_body(L, c);
        else
            push_body(L, c);
        return 1;
    }
    case Op::Piece: {
        if (!c->in_body()) {
            lua_pushnil(L);
            return 1;
        }
        H::Parser::Result r = c->parser->feed_body(data, len, used);
        H::Pieces& pc = H::scratch_pieces();
        // A client's streamed pieces are the caller's to keep or drop: only what the client
        // gathers itself (a whole body) is bounded. A server checks each chunk's announced size.
        if (c->server) c->body_bytes += pc.total;
        if (c->body_bytes + (c->server ? c->parser->pending() : 0) > c->lim->max_body_size) {
            fail_too_large(L, c, "body", c->lim->max_body_size);
            return 2;
        }
        if (r == H::Parser::Result::NeedMore && pc.total == 0 && err) r = c->parser->finish();
        if (r == H::Parser::Result::Bad) {
            fail_body(L, c, err);
            return 2;
        }
        if (pc.total == 0) {
            if (r == H::Parser::Result::Ok) {
                lua_pushnil(L);
                return 1;
            }
            return -1;
        }
        if (pc.piece.size() == 1) {
            lua_pushlstring(L, pc.piece[0].p, pc.piece[0].len);
        } else {
            luaL_Buffer b;
            luaL_buffinit(L, &b);
            for (auto& s : pc.piece) luaL_addlstring(&b, s.p, s.len);
            luaL_pushresult(&b);
        }
        return 1;
    }
    case Op::None:
        break;
    }
    return -1;
}

// A task reads (a body; a client's response): it waits with the stream's read timeout, which
// for a server's request is what is left of the request timeout.
int start_read(lua_State* L, Conn* c, Op op, const char* fname) {
    Stream* s = check_stream(L, c, fname);
    c->op = op;
    if (c->server) { // a client's timeouts are the socket's own (settimeouts)
        uint64_t now = luaio::now_ms();
        s->read_timeout = c->deadline > now ? c->deadline - now : 1;
    }
    return s->read_with(L, c, fname);
}

// method, url, path, head, version, body | nothing | nil, err = conn:next(): the values of the
// next request (see push_request) when its head is already buffered (pipelining); otherwise
// nothing, and the connection waits for it in C++ while the task ends. nil and an error when
// the connection must close (no keep-alive, EOF, a malformed request).
int l_next(lua_State* L) {
    Conn* c = check_conn(L, "next");
    if (!c->server) luaio::raise(L, "next", "not a server connection");
    if (c->broken || !c->keep || c->site->closing) return luaio::return_uv_error(L, UV_EOF);
    Stream* s = check_stream(L, c, "next");
    if (s->write_error()) return luaio::return_uv_error(L, UV_EOF); // e.g. a send timeout
    c->op = Op::Next;
    int n = s->take_or_watch(L, c);
    if (n >= 0) return n;
    track(c);
    return 0;
}

// res | nil, err = conn:response(with_body[, limits[, until_continue]]): the limits of this
// request's response (a pooled connection serves requests with different options). With
// until_continue, a 100 Continue ends the wait with true (the request's body may go now).
int l_response(lua_State* L) {
    Conn* c = check_conn(L, "response");
    if (c->broken) return luaio::return_uv_error(L, UV_EPROTO);
    c->with_body = lua_toboolean(L, 2) != 0;
    c->until_continue = lua_toboolean(L, 4) != 0;
    if (auto* lim = static_cast<Limits*>(luaio::test_object(L, 3, kLimitsClass))) {
        lua_pushvalue(L, 3);
        luaL_unref(L, LUA_REGISTRYINDEX, c->lim_ref);
        c->lim_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        c->lim = lim;
    }
    return start_read(L, c, c->req_ref != LUA_NOREF ? Op::Body : Op::Response, "response");
}

// data | nil | nil, err = conn:read()
int l_read(lua_State* L) {
    Conn* c = check_conn(L, "read");
    if (c->broken) return luaio::return_uv_error(L, UV_EPROTO);
    if (!c->in_body()) {
        lua_pushnil(L);
        return 1;
    }
    send_continue(c);
    return start_read(L, c, Op::Piece, "read");
}

// body | nil, err = conn:body()
// (what is left of it after pieces read with read(); it goes on from a part gathered before)
int l_body(lua_State* L) {
    Conn* c = check_conn(L, "body");
    if (c->broken) return luaio::return_uv_error(L, UV_EPROTO);
    if (!c->in_body()) {
        push_body(L, c);
        return 1;
    }
    send_continue(c);
    return start_read(L, c, Op::Body, "body");
}

// ---------------------------------------------------------------- writing

// "HTTP/1.1 <status> <reason>\r\n", made once per status.
const std::string& status_line(int status) {
    static std::string* lines[1000];
    std::string*& l = lines[status];
    if (!l) {
        l = new std::string("HTTP/1.1 "); // kept for the life of the process
        *l += std::to_string(status);
        *l += ' ';
        *l += reason_phrase(status);
        *l += "\r\n";
    }
    return *l;
}

// The status argument at idx (default 200): an integer from 200 to 599. Informational (1xx)
// responses go through conn:inform; 101 only through the upgrade path (not with respond/head).
int check_status(lua_State* L, int idx, const char* fname) {
    lua_Number n = lua_tonumber(L, idx); // 0 for none, nil and what is not a number
    int status = static_cast<int>(n);
    if (status >= 200 && status <= 599 && n == static_cast<lua_Number>(status)) return status;
    if (n == 0 && lua_isnoneornil(L, idx)) return 200;
    if (status == 101 && n == 101)
        luaio::raise(L, fname, "status 101 switches protocols: only an upgrade can send it, not a response");
    if (status >= 100 && status < 200 && n == static_cast<lua_Number>(status))
        luaio::raise(L, fname, "status %d is informational, not a final status (see res:inform)", status);
    if (lua_isnumber(L, idx))
        luaio::raise(L, fname, "status must be an integer from 200 to 599, got %g", static_cast<double>(n));
    luaio::raise(L, fname, "status must be an integer from 200 to 599, got %s", luaL_typename(L, idx));
}

// Builds a response head in out(). The framing is luaio's (RFC 9112 6): a whole response
// (`whole`, body_len bytes) has a Content-Length; a streamed one is chunked, or has the
// handler's Content-Length, which write_body then holds it to (c->out_left), or (HTTP/1.0)
// ends with the connection. A handler's Content-Length must be a number and, for a whole
// response, its body's length; its Transfer-Encoding may only be chunked. Returns where the
// handler's header fields end in out() (they begin after the status line).
size_t build_response_head(lua_State* L, Conn* c, int status, int hidx, int last, bool whole, size_t body_len,
                           const char* fname) {
    if (!c->parser) luaio::raise(L, fname, "no request to respond to");
    OutBuf& b = out();
    b.clear();
    const std::string& line = status_line(status);
    b.append(line.data(), line.size());
    access_status(c, status);
    Seen seen;
    seen.framing = true;
    append_headers(L, hidx, last, b, seen, fname);
    size_t fields_end = b.size();
    if (seen.length && seen.te) luaio::raise(L, fname, "both Content-Length and Transfer-Encoding were set");
    c->no_body = c->is_head || status == 204 || status == 304;
    if (whole && seen.length && !c->no_body && seen.length_value != body_len)
        luaio::raise(L, fname, "Content-Length %llu does not match the body (%zu bytes)",
                     static_cast<unsigned long long>(seen.length_value), body_len);
    const DefaultLines& d = default_lines();
    if (!seen.server && !seen.date)
        b.append(d.text, d.len);
    else if (!seen.server)
        b.append(kServerLine, kDateOffset);
    else if (!seen.date)
        b.append(d.text + kDateOffset, d.len - kDateOffset);
    if (c->server && (!c->parser->keep_alive() || c->broken || c->site->closing || c->site->draining || seen.close))
        c->keep = false;
    // A body the handler did not read, its client waiting for 100 Continue, which goes out only
    // once the body is read (as Node.js): a whole response goes without it and the connection
    // closes after it, as the client may send the body or not (RFC 9110 10.1.1). A streamed
    // response may still read the body while it writes: the 100 goes first (else close).
    if (c->expect_continue && !c->continue_sent && c->in_body() && (whole || !send_continue(c))) c->keep = false;
    c->chunked_out = false;
    c->out_left = kUncounted;
    bool length = false; // a Content-Length field of `length_value` bytes goes out
    uint64_t length_value = seen.length ? seen.length_value : body_len;
    if (status == 204) {
        // No body and no length (RFC 9110 8.6).
    } else if (whole) {
        // A response to HEAD announces the length its GET would have; a 304 only the one set.
        length = status != 304 || seen.length;
    } else if (seen.length) {
        length = true;
        if (!c->no_body) c->out_left = seen.length_value;
    } else if (c->parser->minor() >= 1) {
        if (!c->no_body || seen.te) b.append("Transfer-Encoding: chunked\r\n", 28);
        c->chunked_out = !c->no_body;
    } else if (!c->no_body) {
        c->keep = false; // HTTP/1.0: the body ends when the connection does
    }
    if (length) {
        b.append("Content-Length: ", 16);
        b.append_uint(length_value);
        b.append("\r\n", 2);
    }
    if (!c->keep)
        b.append("Connection: close\r\n", 19);
    else if (c->parser->minor() == 0)
        b.append("Connection: keep-alive\r\n", 24);
    b.append("\r\n", 2);
    return fields_end;
}

// The response is over: an unread body without 100-continue means the client may still be
// sending it, so the connection closes (unless the body is already here to be discarded).
void end_response(Conn* c) {
    c->responded = true;
    if (c->expect_continue && !c->continue_sent && c->in_body()) c->keep = false;
    access_end(c);
}

// The optional last name, value slot of a headers argument (see append_headers).
int opt_last(lua_State* L, int idx) {
    return lua_isnoneornil(L, idx) ? -1 : static_cast<int>(luaL_checkinteger(L, idx));
}

// The body argument of respond: a string, or an array of strings written as they are (no
// concatenation). Fills `parts` (cleared first) and returns the total length.
size_t body_parts(lua_State* L, int idx, std::vector<uv_buf_t>& parts, const char* fname) {
    parts.clear();
    size_t len = 0;
    int t = lua_type(L, idx);
    if (t == LUA_TSTRING) {
        const char* p = lua_tolstring(L, idx, &len);
        parts.push_back(uv_buf_init(const_cast<char*>(p), static_cast<unsigned>(len)));
        return len;
    }
    if (t != LUA_TTABLE)
        luaio::raise(L, fname, "body must be a string or an array of strings, got %s", lua_typename(L, t));
    int n = static_cast<int>(lua_objlen(L, idx));
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, idx, i);
        if (lua_type(L, -1) != LUA_TSTRING)
            luaio::raise(L, fname, "body[%d] must be a string, got %s", i, luaL_typename(L, -1));
        size_t l;
        const char* p = lua_tolstring(L, -1, &l);
        lua_pop(L, 1); // the table keeps the string alive
        parts.push_back(uv_buf_init(const_cast<char*>(p), static_cast<unsigned>(l)));
        len += l;
    }
    return len;
}

// err = conn:respond(status, headers, body[, last])
int l_respond(lua_State* L) {
    Conn* c = check_conn(L, "respond");
    // After a canned answer to a bad request the handler's response goes nowhere.
    if (c->head_sent && c->broken) return luaio::return_uv_error(L, UV_EPROTO, 0);
    if (c->head_sent) luaio::raise(L, "respond", "the response was already sent");
    int status = check_status(L, 2, "respond");
    static std::vector<uv_buf_t> parts; // reused: no allocation per response
    size_t blen = 0;
    if (lua_isnoneornil(L, 4))
        parts.clear();
    else
        blen = body_parts(L, 4, parts, "respond");
    build_response_head(L, c, status, 3, opt_last(L, 5), true, blen, "respond");
    c->head_sent = true;
    access_bytes(c, c->no_body ? 0 : blen);
    end_response(c);
    OutBuf& b = out();
    if (c->no_body) blen = 0;
    if (blen <= 2048) {
        if (blen)
            for (const uv_buf_t& p : parts) b.append(p.base, p.len);
        uv_buf_t buf = uv_buf_init(b.data(), static_cast<unsigned>(b.size()));
        return write_out(L, c, &buf, 1, "respond");
    }
    parts.insert(parts.begin(), uv_buf_init(b.data(), static_cast<unsigned>(b.size())));
    return write_out(L, c, parts.data(), static_cast<unsigned>(parts.size()), "respond", 4, 1);
}

// A file body up to this size is read into the head's buffer and goes out with it in one write
// (one pread and one writev instead of a writev and a sendfile, and one segment on the wire).
constexpr uint64_t kSmallFileBody = 16 * 1024;

// Reads n bytes at off of fd into p; the bytes read (fewer: the file is shorter), or -errno.
ssize_t pread_all(int fd, char* p, size_t n, int64_t off) {
    size_t got = 0;
    while (got < n) {
        ssize_t k = ::pread(fd, p + got, n - got, static_cast<off_t>(off) + static_cast<off_t>(got));
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) return -errno;
        if (k == 0) break;
        got += static_cast<size_t>(k);
    }
    return static_cast<ssize_t>(got);
}

// The value of the field `name` among the header field lines fields[0, n), or "".
std::string field_value(const std::string& fields, size_t n, const char* name) {
    size_t nlen = std::strlen(name);
    for (size_t at = 0; at < n;) {
        size_t eol = fields.find("\r\n", at);
        if (eol == std::string::npos || eol > n) break;
        if (eol - at > nlen + 2 && fields.compare(at, nlen, name) == 0 && fields.compare(at + nlen, 2, ": ") == 0)
            return fields.substr(at + nlen + 2, eol - at - nlen - 2);
        at = eol + 2;
    }
    return std::string();
}

// Keeps the response just built in out() (static's fields from the end of the status line to
// fields_end, and its body, the last n bytes) of `file` as the answer to `path` until
// `expires`. When the cache is full, the entries past their time go, else one.
void keep_cached(FileCache* fc, const char* path, size_t plen, const char* file, size_t flen, size_t fields_end,
                 uint64_t n, uint64_t expires) {
    if (fc->gone) return;
    OutBuf& b = out();
    size_t start = status_line(200).size();
    if (fc->files.size() >= fc->max) {
        uint64_t now = uv_hrtime();
        for (auto it = fc->files.begin(); it != fc->files.end();)
            it = it->second.expires <= now ? fc->files.erase(it) : std::next(it);
        if (fc->files.size() >= fc->max) fc->files.erase(fc->files.begin());
    }
    CachedFile& f = fc->files[std::string(path, plen)];
    f.bytes.assign(b.data() + start, fields_end - start);
    f.bytes.append(b.data() + b.size() - n, n);
    f.file.assign(file, flen);
    f.fields = fields_end - start;
    f.expires = expires;
    f.etag = field_value(f.bytes, f.fields, "ETag");
    f.modified = field_value(f.bytes, f.fields, "Last-Modified");
}

// err = conn:sendfile(status, headers, last, fd, offset, length[, path, expires, file]): a whole response whose body is
// bytes [offset, offset + length) of the open file fd (http.static), with a Content-Length. A
// small body is read into the head's buffer; a bigger one goes with Stream::write_file (sendfile
// on a plain socket, never read into Lua). The caller keeps fd open until this returns. A file
// shorter than the range (it changed since its stat) fails the response and its connection: a
// small one before anything is sent (a canned 500), a bigger one part way (the client sees the
// connection close early). With path, expires (uv_hrtime ns) and file, static says that this 200
// response (the whole file, with nothing but its own fields) answers GET and HEAD of the raw
// request path until then: a server whose handler static is keeps it (see CachedFile).
int l_sendfile(lua_State* L) {
    Conn* c = check_conn(L, "sendfile");
    if (c->head_sent && c->broken) return luaio::return_uv_error(L, UV_EPROTO, 0);
    if (c->head_sent) luaio::raise(L, "sendfile", "the response was already sent");
    int status = check_status(L, 2, "sendfile");
    int last = opt_last(L, 4);
    lua_Integer fd = luaio::check_integer(L, 5, "sendfile");
    lua_Integer off = luaio::check_integer(L, 6, "sendfile");
    lua_Integer len = luaio::check_integer(L, 7, "sendfile");
    if (fd < 0 || fd > INT32_MAX || off < 0 || len < 0)
        luaio::raise(L, "sendfile", "expected a descriptor, an offset and a length >= 0");
    size_t fields_end = build_response_head(L, c, status, 3, last, true, static_cast<size_t>(len), "sendfile");
    uint64_t n = c->no_body ? 0 : static_cast<uint64_t>(len);
    OutBuf& b = out();
    if (n <= kSmallFileBody) {
        ssize_t got = n ? pread_all(static_cast<int>(fd), b.tail(n), n, off) : 0;
        if (got != static_cast<ssize_t>(n)) {
            write_canned(c, 500);
            c->broken = true;
            return luaio::return_uv_error(L, got < 0 ? static_cast<int>(got) : UV_EOF, 0);
        }
        b.added(n);
        FileCache* fc = c->site ? c->site->files : nullptr;
        size_t plen, flen;
        const char* path = lua_type(L, 8) == LUA_TSTRING ? lua_tolstring(L, 8, &plen) : nullptr;
        if (fc && path && status == 200 && !c->no_body) {
            auto expires = static_cast<uint64_t>(luaio::check_number(L, 9, "sendfile"));
            const char* file = luaio::check_string(L, 10, "sendfile", &flen);
            keep_cached(fc, path, plen, file, flen, fields_end, n, expires);
        }
    }
    c->head_sent = true;
    access_bytes(c, n);
    end_response(c);
    Stream* s = c->stream();
    if (!s) return luaio::return_uv_error(L, UV_ECANCELED, 0);
    uv_buf_t head = uv_buf_init(b.data(), static_cast<unsigned>(b.size()));
    if (n <= kSmallFileBody) return s->write_buffers(L, &head, 1, "sendfile");
    return s->write_file(L, &head, 1, static_cast<int>(fd), off, n, "sendfile");
}

int serve_cached(lua_State* L, Conn* c) {
    const H::Head& h = H::scratch_head();
    int method = c->parser->method();
    // Only what static would answer with the kept bytes: GET or HEAD (llhttp's GET stands for
    // unknown methods too: h.method), no body, on a connection that goes on, and nothing queued
    // (a client that pipelines without reading gets its answers from the handler, which waits).
    if (h.method.p || (method != HTTP_GET && method != HTTP_HEAD) || !c->keep || c->in_body() || c->expect_continue)
        return 0;
    Stream* s = c->stream();
    if (!s || !s->write_idle() || s->write_error()) return 0;
    const char* u = h.url.p ? h.url.p : "";
    const char* q = static_cast<const char*>(std::memchr(u, '?', h.url.len));
    FileCache* fc = c->site->files;
    fc->key.assign(u, q ? static_cast<size_t>(q - u) : h.url.len);
    auto it = fc->files.find(fc->key);
    if (it == fc->files.end()) return 0;
    const CachedFile& f = it->second;
    if (f.expires <= uv_hrtime()) {
        fc->files.erase(it);
        return 0;
    }
    // A revalidation whose validator is the file's own, as browsers send it (If-None-Match: the
    // ETag; else If-Modified-Since: the Last-Modified date), is answered 304 here as static
    // answers it. Any other validator, and ranges, are static's (a list, a weak tag, an older
    // date; 206, 416).
    const H::Span* inm = nullptr;
    const H::Span* ims = nullptr;
    for (size_t i = 0; i < h.nheaders; i++) {
        const H::Span& n = h.names[i];
        if (lower_equals(n.p, n.len, "if-none-match"))
            inm = &h.values[i];
        else if (lower_equals(n.p, n.len, "if-modified-since"))
            ims = &h.values[i];
        else if (lower_equals(n.p, n.len, "range"))
            return 0;
    }
    auto same = [](const H::Span* v, const std::string& s) {
        return v->len == s.size() && v->len > 0 && std::memcmp(v->p, s.data(), s.size()) == 0;
    };
    bool not_modified = false;
    if (inm || ims) {
        if (inm ? !same(inm, f.etag) : !same(ims, f.modified)) return 0;
        not_modified = true;
    }
    uint64_t size = f.bytes.size() - f.fields;
    OutBuf& b = out();
    b.clear();
    int status = not_modified ? 304 : 200;
    const std::string& line = status_line(status);
    b.append(line.data(), line.size());
    b.append(f.bytes.data(), f.fields);
    const DefaultLines& d = default_lines();
    b.append(d.text, d.len);
    if (!not_modified) { // a 304 has no length (static sets none)
        b.append("Content-Length: ", 16);
        b.append_uint(size);
        b.append("\r\n", 2);
    }
    if (c->parser->minor() == 0) b.append("Connection: keep-alive\r\n", 24);
    b.append("\r\n", 2);
    c->no_body = c->is_head || not_modified;
    if (!c->no_body) b.append(f.bytes.data() + f.fields, size);
    access_status(c, status);
    access_bytes(c, c->no_body ? 0 : size);
    c->head_sent = true;
    end_response(c);
    uv_buf_t buf = uv_buf_init(b.data(), static_cast<unsigned>(b.size()));
    int err = s->write(&buf, 1);
    if (err) {
        c->keep = false;
        lua_pushnil(L);
        luaio::push_uv_error(L, err);
        return -1;
    }
    return 1;
}

// Never more body bytes than the response's Content-Length (RFC 9112 6.3): raises first.
void check_count(lua_State* L, Conn* c, size_t len, const char* fname) {
    if (c->out_left != kUncounted && !c->no_body && len > c->out_left)
        luaio::raise(L, fname, "%zu bytes more than the Content-Length allows (%llu left)", len,
                     static_cast<unsigned long long>(c->out_left));
}

// Writes data (the string at stack index didx) as body bytes (a chunk when chunked), after the
// head in out() if there is one.
int write_body(lua_State* L, Conn* c, int didx, const char* data, size_t len, bool last, const char* fname) {
    OutBuf& b = out();
    uv_buf_t bufs[3];
    unsigned n = 0, ncopy = 1; // bufs[ncopy..] are in the string (or static)
    if (c->no_body) len = 0;
    access_bytes(c, len);
    if (c->out_left != kUncounted) {
        check_count(L, c, len, fname);
        c->out_left -= len;
        if (last && c->out_left > 0) c->keep = false; // fewer bytes than announced: only a close tells
    }
    if (c->chunked_out) {
        if (len > 0) {
            char hex[24];
            int hn = std::snprintf(hex, sizeof hex, "%zx\r\n", len);
            b.append(hex, static_cast<size_t>(hn));
        }
        if (len > 0 && len <= 2048) {
            b.append(data, len);
            b.append("\r\n", 2);
            len = 0;
        }
        if (len > 0) {
            bufs[n++] = uv_buf_init(b.data(), static_cast<unsigned>(b.size()));
            bufs[n++] = uv_buf_init(const_cast<char*>(data), static_cast<unsigned>(len));
            static const char crlf[] = "\r\n0\r\n\r\n";
            bufs[n++] = uv_buf_init(const_cast<char*>(crlf), last ? 7 : 2);
        } else {
            if (last) b.append("0\r\n\r\n", 5);
            bufs[n++] = uv_buf_init(b.data(), static_cast<unsigned>(b.size()));
        }
    } else {
        if (len <= 2048) {
            b.append(data, len);
            bufs[n++] = uv_buf_init(b.data(), static_cast<unsigned>(b.size()));
        } else {
            if (!b.empty()) bufs[n++] = uv_buf_init(b.data(), static_cast<unsigned>(b.size()));
            ncopy = n;
            bufs[n++] = uv_buf_init(const_cast<char*>(data), static_cast<unsigned>(len));
        }
    }
    if (last) end_response(c);
    if (n == 1 && bufs[0].len == 0) return 0;
    return write_out(L, c, bufs, n, fname, didx, ncopy);
}

const char* opt_data(lua_State* L, int idx, size_t* len, const char* fname) {
    *len = 0;
    if (lua_isnoneornil(L, idx)) return "";
    const char* d = lua_tolstring(L, idx, len);
    if (!d) luaio::raise(L, fname, "data must be a string, got %s", luaL_typename(L, idx));
    return d;
}

// err = conn:head(status, headers[, data[, last]])
int l_head(lua_State* L) {
    Conn* c = check_conn(L, "head");
    if (c->head_sent) luaio::raise(L, "head", "the response head was already sent");
    int status = check_status(L, 2, "head");
    size_t len;
    const char* d = opt_data(L, 4, &len, "head");
    build_response_head(L, c, status, 3, opt_last(L, 5), false, 0, "head");
    check_count(L, c, len, "head");
    c->head_sent = true;
    return write_body(L, c, 4, d, len, false, "head");
}

// err = conn:inform(status, headers): an informational (1xx) response before the final one,
// e.g. 103 Early Hints; nothing to an HTTP/1.0 client (RFC 9110 15.2). 101 is for the upgrade
// path, which ends the connection's HTTP (not with inform).
int l_inform(lua_State* L) {
    Conn* c = check_conn(L, "inform");
    if (c->head_sent) luaio::raise(L, "inform", "the response head was already sent");
    if (!c->parser || !c->server) luaio::raise(L, "inform", "no request to respond to");
    lua_Number n = lua_type(L, 2) == LUA_TNUMBER ? lua_tonumber(L, 2) : 0;
    if (!(n >= 100 && n <= 199) || n == 101 || n != static_cast<lua_Number>(static_cast<int>(n)))
        luaio::raise(L, "inform", "status must be an informational status from 100 to 199 other than 101");
    int status = static_cast<int>(n);
    OutBuf& b = out();
    b.clear();
    const std::string& line = status_line(status);
    b.append(line.data(), line.size());
    Seen seen;
    seen.framing = true;
    append_headers(L, 3, -1, b, seen, "inform");
    if (seen.length || seen.te) luaio::raise(L, "inform", "an informational response has no body");
    b.append("\r\n", 2);
    if (c->parser->minor() == 0) return 0;
    if (status == 100) c->continue_sent = true;
    uv_buf_t buf = uv_buf_init(b.data(), static_cast<unsigned>(b.size()));
    return write_out(L, c, &buf, 1, "inform");
}

// sock, head = conn:upgrade(headers): the upgrade path (RFC 9110 7.8), the one way to a 101, for
// a protocol module (WebSocket) that has checked its handshake: builds the "101 Switching
// Protocols" head with the given fields (and Connection: Upgrade), for the caller to write, and
// the connection leaves HTTP: its socket is the caller's, bytes received after the request still
// buffered in it, and the conn is closed without closing the socket (its task ends with the
// handler). See Response:_upgrade in lib/http/server.lua.
int l_upgrade(lua_State* L) {
    Conn* c = check_conn(L, "upgrade");
    check_stream(L, c, "upgrade");
    if (!c->server || !c->parser || c->head_sent) luaio::raise(L, "upgrade", "no request to answer");
    if (!c->parser->upgrade() || c->in_body())
        luaio::raise(L, "upgrade", "the request did not ask for an upgrade (Upgrade, Connection: upgrade)");
    OutBuf& b = out();
    b.clear();
    const std::string& line = status_line(101);
    b.append(line.data(), line.size());
    Seen seen;
    append_headers(L, 2, -1, b, seen, "upgrade");
    if (seen.length || seen.te) luaio::raise(L, "upgrade", "a 101 response has no body");
    if (!seen.connection) b.append("Connection: Upgrade\r\n", 21);
    b.append("\r\n", 2);
    c->head_sent = c->responded = true;
    access_status(c, 101);
    access_end(c);
    c->sock.push(L);
    lua_pushlstring(L, b.data(), b.size());
    c->closed = true; // detached: released without closing the socket
    release(L, c);
    return 2;
}

// A piece of an open response body: conn:write(data), or conn:finish([data]) with last.
int write_piece(lua_State* L, bool last, const char* fname) {
    Conn* c = check_conn(L, fname);
    if (c->head_sent && c->broken) return luaio::return_uv_error(L, UV_EPROTO, 0);
    if (!c->head_sent || c->responded) luaio::raise(L, fname, "no response body is open");
    size_t len;
    const char* d = opt_data(L, 2, &len, fname);
    out().clear();
    if (len == 0 && !last) return 0;
    return write_body(L, c, 2, d, len, last, fname);
}

// err = conn:write(data)
int l_write(lua_State* L) {
    return write_piece(L, false, "write");
}

// err = conn:finish([data])
int l_finish(lua_State* L) {
    return write_piece(L, true, "finish");
}

// conn:reject(status): a canned error response if nothing was sent yet; the connection ends.
int l_reject(lua_State* L) {
    Conn* c = check_conn(L, "reject");
    int status = static_cast<int>(luaL_checkinteger(L, 2));
    // Only a request in progress is answered: an idle connection just closes.
    if (c->in_head || !c->responded) write_canned(c, status);
    c->broken = true;
    return 0;
}

// head = core.requesthead(method, target, headers, framing[, fname]): a request's head, built (and
// so checked: method, target, header names and values) before a connection is made for it.
// framing is the body's length (a Content-Length), true (chunked) or nil (no body); fname the
// public name in messages (http.request, http.get).
int l_request_head(lua_State* L) {
    const char* fname = lua_type(L, 5) == LUA_TSTRING ? lua_tostring(L, 5) : "http.request";
    size_t mlen, tlen;
    const char* method = luaL_checklstring(L, 1, &mlen);
    const char* target = luaL_checklstring(L, 2, &tlen);
    if (!is_token(method, mlen)) luaio::raise(L, fname, "invalid method '%s'", method);
    for (size_t i = 0; i < tlen; i++)
        if (static_cast<unsigned char>(target[i]) <= 32 || target[i] == 127)
            luaio::raise(L, fname, "invalid request target (control character or space)");
    OutBuf& b = out();
    b.clear();
    b.append(method, mlen);
    b.push_back(' ');
    b.append(target, tlen);
    b.append(" HTTP/1.1\r\n", 11);
    Seen seen;
    append_headers(L, 3, -1, b, seen, fname);
    if (lua_type(L, 4) == LUA_TNUMBER) {
        b.append("Content-Length: ", 16);
        b.append_uint(static_cast<uint64_t>(lua_tointeger(L, 4)));
        b.append("\r\n", 2);
    } else if (lua_toboolean(L, 4)) {
        b.append("Transfer-Encoding: chunked\r\n", 28);
    }
    b.append("\r\n", 2);
    lua_pushlstring(L, b.data(), b.size());
    return 1;
}

// err = conn:request(head, body, is_head, chunked): sends a head from core.requesthead and the
// whole body (a string or nil); with body == true the body follows through conn:write and
// conn:finish (in chunks when chunked, else as the head's Content-Length said).
int l_request(lua_State* L) {
    Conn* c = check_conn(L, "request");
    size_t hlen, blen = 0;
    const char* head = luaL_checklstring(L, 2, &hlen);
    bool streamed = lua_type(L, 3) == LUA_TBOOLEAN && lua_toboolean(L, 3);
    const char* body = nullptr;
    if (!streamed && !lua_isnoneornil(L, 3)) {
        body = lua_tolstring(L, 3, &blen);
        if (!body) luaio::raise(L, "request", "body must be a string, got %s", luaL_typename(L, 3));
    }
    if (c->in_body()) luaio::raise(L, "request", "the previous response was not read");
    c->is_head = lua_toboolean(L, 4) != 0;
    c->parser->set_skip_body(c->is_head);
    c->replied = false;
    // A streamed body is open like a server's streamed response (write_piece, write_body).
    c->head_sent = streamed;
    c->responded = !streamed;
    c->chunked_out = streamed && lua_toboolean(L, 5);
    uv_buf_t bufs[2] = {uv_buf_init(const_cast<char*>(head), static_cast<unsigned>(hlen)),
                        uv_buf_init(const_cast<char*>(body), static_cast<unsigned>(blen))};
    return write_out(L, c, bufs, blen ? 2 : 1, "request", 3, 1);
}

// conn:replied(): true once a byte came back after the request went out (see Conn::replied),
// read or still buffered (a server that answers before the end of a request body).
int l_replied(lua_State* L) {
    Conn* c = check_conn(L, "replied");
    Stream* s = c->stream();
    lua_pushboolean(L, c->replied || (s && s->buffered() > 0));
    return 1;
}

// ---------------------------------------------------------------- state and life cycle

int l_keepalive(lua_State* L) {
    Conn* c = check_conn(L, "keepalive");
    lua_pushboolean(L, c->keep && !c->broken && c->stream() != nullptr);
    return 1;
}

// A client connection that may carry another request: the last response was read to its end,
// the server keeps it open, and no byte is waiting (a stale or half-read connection is never
// handed out again).
int l_reusable(lua_State* L) {
    Conn* c = Conn::check_any(L, 1, "reusable");
    Stream* s = c->closed ? nullptr : c->stream();
    lua_pushboolean(L, s && !s->closing() && c->keep && !c->broken && !c->in_body() && s->buffered() == 0 &&
                           s->read_error() == 0);
    return 1;
}

// true when the response head was sent; "finished" when the whole response was.
int l_sent(lua_State* L) {
    Conn* c = check_conn(L, "sent");
    if (c->responded)
        lua_pushliteral(L, "finished");
    else
        lua_pushboolean(L, c->head_sent);
    return 1;
}

// conn:setmeta(t): the seed API's metatable of this connection's requests, handed to each
// task of the connection after its request values (see Conn::ready).
int l_set_meta(lua_State* L) {
    Conn* c = check_conn(L, "setmeta");
    luaL_checktype(L, 2, LUA_TTABLE);
    if (!c->server || c->lim_ref != LUA_NOREF) luaio::raise(L, "setmeta", "not a fresh seed server connection");
    lua_settop(L, 2);
    c->lim_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

// Forces `Connection: close` on the current response (server closing, handler's wish).
int l_set_close(lua_State* L) {
    Conn* c = check_conn(L, "setclose");
    c->keep = false;
    return 0;
}

// conn:unref(true): an idle pooled connection does not keep the process alive; unref(false) undoes it.
int l_unref(lua_State* L) {
    Conn* c = Conn::check_any(L, 1, "unref");
    Stream* s = c->closed ? nullptr : c->stream();
    if (s && !s->closing()) {
        if (lua_toboolean(L, 2))
            uv_unref(s->handle());
        else
            uv_ref(s->handle());
    }
    return 0;
}

// conn:deadline(ms): a client's timeout, one bound over its whole request (connecting aside):
// every wait on the socket from now on, for the head, the body or a write, ends by ms from now
// (0: none) however the bytes trickle (Stream::set_deadline).
int l_deadline(lua_State* L) {
    Conn* c = check_conn(L, "deadline");
    lua_Integer ms = luaio::check_integer(L, 2, "deadline");
    if (ms < 0) luaio::raise(L, "deadline", "expected a non-negative number of milliseconds");
    check_stream(L, c, "deadline")->set_deadline(ms ? luaio::now_ms() + static_cast<uint64_t>(ms) : 0);
    return 0;
}

int l_socket(lua_State* L) {
    Conn::check_any(L, 1, "socket")->sock.push(L);
    return 1;
}

// ---------------------------------------------------------------- servers (sites)

void list_remove(ConnList& l, Conn* c) {
    (c->prev ? c->prev->next : l.head) = c->next;
    (c->next ? c->next->prev : l.tail) = c->prev;
    c->prev = c->next = nullptr;
}

void list_append(ConnList& l, Conn* c) {
    c->prev = l.tail;
    c->next = nullptr;
    (l.tail ? l.tail->next : l.head) = c;
    l.tail = c;
}

void on_site_timer(uv_timer_t* t);

// Sets the sweep timer for `deadline` unless it is set for an earlier one.
void site_arm(Site* site, uint64_t deadline) {
    if (site->freeing || (site->armed_at && site->armed_at <= deadline)) return;
    uint64_t now = luaio::now_ms();
    site->armed_at = deadline;
    uv_timer_start(&site->timer, on_site_timer, deadline > now ? deadline - now : 0, 0);
}

void untrack(Conn* c) {
    if (c->wait == Wait::None) return;
    list_remove(c->wait == Wait::Idle ? c->site->idle : c->site->heads, c);
    c->wait = Wait::None;
}

// A connection that waits without a task: for a request (keep-alive timeout from now), or for
// the rest of a head (header timeout from its first byte, c->deadline). Each list is in the
// order of its deadlines, as every entry of a list has the same timeout.
void track(Conn* c) {
    untrack(c);
    Site* site = c->site;
    if (c->in_head) {
        c->wait = Wait::Head;
        list_append(site->heads, c);
    } else {
        if (!c->in_body()) release_parser(c); // nothing of a request is here
        c->deadline = luaio::now_ms() + c->lim->keepalive_timeout;
        c->wait = Wait::Idle;
        list_append(site->idle, c);
    }
    site_arm(site, c->deadline);
}

// Ends the waits that are over: an idle connection just closes (as nginx does), one in the
// middle of a head gets 408 first. Then sets the timer for the next deadline.
void on_site_timer(uv_timer_t* t) {
    Site* site = static_cast<Site*>(t->data);
    site->armed_at = 0;
    uint64_t now = luaio::now_ms();
    while (site->idle.head && site->idle.head->deadline <= now) conn_close(site->idle.head);
    while (site->heads.head && site->heads.head->deadline <= now) {
        if (write_canned(site->heads.head, 408)) access_unparsed(site->heads.head, 408, nullptr, 0);
        conn_close(site->heads.head);
    }
    uint64_t next = 0;
    if (site->idle.head) next = site->idle.head->deadline;
    if (site->heads.head && (!next || site->heads.head->deadline < next)) next = site->heads.head->deadline;
    if (next) site_arm(site, next);
}

// Frees the site once it is closed and its last connection is gone.
void site_maybe_free(Site* site) {
    if (!site->closing || site->conns > 0 || site->freeing) return;
    site->freeing = true;
    site->detach_proxy();
    if (lua_State* L = luaio::main_state()) {
        luaL_unref(L, LUA_REGISTRYINDEX, site->serve_ref);
        luaL_unref(L, LUA_REGISTRYINDEX, site->files_ref);
    }
    site->serve_ref = site->files_ref = LUA_NOREF;
    site->files = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(&site->timer), [](uv_handle_t* h) { delete static_cast<Site*>(h->data); });
}

// No keep-alive any more: waiting connections close, those with a request in progress close
// after their response (which says Connection: close), those in the middle of a head after it.
// A connection that has not sent its first request (the server took it from the backlog as
// it closed) gets kFirstRequestOnClose ms to send it: its client has just connected.
void site_close(Site* site) {
    if (site->closing) return;
    site->closing = true;
    uint64_t deadline = luaio::now_ms() + kFirstRequestOnClose;
    for (Conn* c = site->idle.head; c;) {
        Conn* next = c->next;
        if (c->requests > 0)
            conn_close(c);
        else if (c->deadline > deadline)
            c->deadline = deadline; // the list stays in the order of its deadlines
        c = next;
    }
    if (site->idle.head) site_arm(site, site->idle.head->deadline);
    site_maybe_free(site);
}

void Conn::ready(lua_State* L, int n) {
    if (closed || n != kRequestValues) {
        // An error ends the connection (a canned response, if any, was written): EOF, a
        // malformed or oversized head, a reset.
        lua_pop(L, n);
        conn_close(this);
        return;
    }
    // A request: its task runs serve(conn, <the request's values>); the conn is closed if the
    // task fails.
    untrack(this);
    lua_rawgeti(L, LUA_REGISTRYINDEX, site->serve_ref);
    lua_insert(L, -(n + 1));
    push_self(L);
    lua_insert(L, -(n + 1));
    if (site->seed) {
        // The seed API's requests share a metatable per connection (lib/http/server.lua).
        lua_rawgeti(L, LUA_REGISTRYINDEX, lim_ref);
        n++;
    }
    luaio::spawn(L, n + 1, -(n + 1));
}

void release(lua_State* L, Conn* c) {
    untrack(c);
    access_end(c);
    c->alog.reset();
    if (L) {
        luaL_unref(L, LUA_REGISTRYINDEX, c->req_ref);
        luaL_unref(L, LUA_REGISTRYINDEX, c->lim_ref);
    }
    c->req_ref = c->lim_ref = LUA_NOREF;
    c->unanchor_self();
    c->sock.clear();
    c->sock_ud = nullptr;
    c->body.reset();
    release_parser(c);
    if (Site* site = c->site) {
        c->site = nullptr;
        c->lim = &kDefaultLimits;
        site->conns--;
        site_maybe_free(site);
    }
}

void conn_close(Conn* c) {
    if (c->closed) return;
    c->closed = true;
    if (Stream* s = c->stream()) s->close();
    release(luaio::main_state(), c);
}

// conn:close(): closes the socket too. Idempotent.
int l_close(lua_State* L) {
    conn_close(Conn::check_any(L, 1, "close"));
    return 0;
}

// The end of a request's task (the conn is its closing value): unless the connection waits for
// its next request, or the task failed, it is closed. A failed task (the runtime reports its
// error: e.g. a seed response that respond refused) answers 500 first if nothing was sent.
void task_end(lua_State*, void* ud, bool failed) {
    auto* c = static_cast<Conn*>(ud);
    Stream* s = c->closed ? nullptr : c->stream();
    if (failed && s && c->server && c->parser && !c->responded) write_canned(c, 500);
    if (failed || !s || !s->watching()) conn_close(c);
}

void Conn::collected() {
    if (checked_slot(this) == this) checked_slot(this) = nullptr;
    conn_close(this);
}

lua_Integer limit_field(lua_State* L, const char* name, lua_Integer def, lua_Integer min) {
    lua_Integer v = luaio::opt_int_field(L, 1, name, def, "limits");
    if (v < min) luaio::raise(L, "limits", "option '%s' must be at least %lld", name, static_cast<long long>(min));
    return v;
}

// limits = core.limits(options): the limits of a server or client, parsed once.
int l_limits(lua_State* L) {
    if (!lua_isnoneornil(L, 1)) luaL_checktype(L, 1, LUA_TTABLE);
    Limits lim;
    lim.max_header_size =
        static_cast<size_t>(limit_field(L, "maxHeaderSize", static_cast<lua_Integer>(lim.max_header_size), 64));
    lim.max_body_size =
        static_cast<uint64_t>(limit_field(L, "maxBodySize", static_cast<lua_Integer>(lim.max_body_size), 0));
    lim.header_timeout =
        static_cast<uint64_t>(limit_field(L, "headerTimeout", static_cast<lua_Integer>(lim.header_timeout), 1));
    lim.keepalive_timeout =
        static_cast<uint64_t>(limit_field(L, "keepAliveTimeout", static_cast<lua_Integer>(lim.keepalive_timeout), 1));
    lim.request_timeout =
        static_cast<uint64_t>(limit_field(L, "requestTimeout", static_cast<lua_Integer>(lim.request_timeout), 1));
    lim.max_requests =
        static_cast<uint64_t>(limit_field(L, "maxRequests", static_cast<lua_Integer>(lim.max_requests), 1));
    // A server's sockets get sendTimeout as their write_timeout; the tcp option is its default.
    lim.send_timeout =
        static_cast<uint64_t>(limit_field(L, "sendTimeout", limit_field(L, "write_timeout", 60000, 0), 0));
    auto* p = static_cast<Limits*>(lua_newuserdata(L, sizeof(Limits)));
    *p = lim;
    luaL_getmetatable(L, kLimitsClass);
    lua_setmetatable(L, -2);
    return 1;
}

Conn* new_conn(lua_State* L, int sock_idx, llhttp_type_t type) {
    Conn* c = Conn::push_new(L);
    c->server = type == HTTP_REQUEST;
    c->responded = true; // nothing to answer yet
    c->sock_ud = static_cast<void**>(lua_touserdata(L, sock_idx));
    c->sock.set(L, sock_idx);
    c->anchor_self(L, -1);
    return c;
}

// conn = core.client(sock[, limits])
int l_client(lua_State* L) {
    Stream::check(L, 1, "client");
    auto* lim = static_cast<Limits*>(luaio::test_object(L, 2, kLimitsClass));
    Conn* c = new_conn(L, 1, HTTP_RESPONSE);
    c->parser = acquire_parser(HTTP_RESPONSE);
    if (lim) {
        c->lim = lim;
        lua_pushvalue(L, 2);
        c->lim_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    return 1;
}

Site* check_site(lua_State* L, const char* fname) {
    return Site::check(L, 1, fname);
}

// site = core.site(limits, serve, seed[, access[, files]]): access is the access log's format,
// "combined" or "json" (a line per response, made here: modules/log.h), or nil; files, when the
// handler is http.static, its core.filecache: the server answers what it keeps (CachedFile).
int l_site(lua_State* L) {
    auto* lim = static_cast<Limits*>(luaL_checkudata(L, 1, kLimitsClass));
    luaL_checktype(L, 2, LUA_TFUNCTION);
    static const char* const kAccess[] = {"off", "combined", "json", nullptr};
    auto access = static_cast<luaio::log::AccessFormat>(luaL_checkoption(L, 4, "off", kAccess));
    auto* site = new Site;
    site->lim = *lim;
    site->seed = lua_toboolean(L, 3) != 0;
    site->access = access;
    if (auto* fc = static_cast<FileCache*>(luaio::test_object(L, 5, kFileCacheClass)); fc && !site->seed) {
        site->files = fc;
        lua_pushvalue(L, 5);
        site->files_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    uv_timer_init(luaio::loop(), &site->timer);
    site->timer.data = site;
    lua_pushvalue(L, 2);
    site->serve_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    site->push_proxy(L);
    return 1;
}

// core.accept(site, sock): a new connection waits for its first request, without a task.
int l_accept(lua_State* L) {
    Site* site = check_site(L, "accept");
    Stream* s = Stream::check(L, 2, "accept");
    if (site->closing) {
        s->close();
        return 0;
    }
    Conn* c = new_conn(L, 2, HTTP_REQUEST);
    lua_pop(L, 1);
    s->write_timeout = site->lim.send_timeout; // a response that makes no progress for it fails
    c->site = site;
    c->lim = &site->lim;
    site->conns++;
    c->with_body = site->seed;
    c->op = Op::Next;
    track(c);
    s->watch(c);
    return 0;
}

// site:drain(): a graceful stop began; responses from now on end their connection.
int l_site_drain(lua_State* L) {
    if (Site* site = Site::check_or_closed(L, 1, "drain")) site->draining = true;
    return 0;
}

int l_site_close(lua_State* L) {
    if (Site* site = Site::check_or_closed(L, 1, "close")) site_close(site);
    return 0;
}

// fc = core.filecache(max): http.static's cache of whole small responses (see CachedFile).
int l_filecache(lua_State* L) {
    lua_Integer max = luaio::check_integer(L, 1, "filecache");
    if (max < 1) luaio::raise(L, "filecache", "expected a number of entries >= 1");
    auto* fc = new (lua_newuserdata(L, sizeof(FileCache))) FileCache;
    fc->max = static_cast<size_t>(max);
    luaL_getmetatable(L, kFileCacheClass);
    lua_setmetatable(L, -2);
    return 1;
}

FileCache* check_filecache(lua_State* L, const char* fname) {
    auto* fc = static_cast<FileCache*>(luaio::test_object(L, 1, kFileCacheClass));
    if (!fc) luaio::raise(L, fname, "expected %s as self, got %s", kFileCacheClass, luaL_typename(L, 1));
    return fc;
}

// fc:forget(file): the kept responses of that file go (static saw it change).
int l_filecache_forget(lua_State* L) {
    FileCache* fc = check_filecache(L, "forget");
    size_t len;
    const char* file = luaio::check_string(L, 2, "forget", &len);
    for (auto it = fc->files.begin(); it != fc->files.end();)
        it = it->second.file.size() == len && std::memcmp(it->second.file.data(), file, len) == 0 ? fc->files.erase(it)
                                                                                                  : std::next(it);
    return 0;
}

int l_filecache_gc(lua_State* L) {
    FileCache* fc = check_filecache(L, "__gc");
    fc->gone = true;
    fc->release();
    return 0;
}

// core.headers(head): the headers table of a request's raw head (see push_request).
int l_headers(lua_State* L) {
    size_t len;
    const char* head = luaL_checklstring(L, 1, &len);
    H::Parser* p = acquire_parser(HTTP_REQUEST);
    size_t used = 0;
    H::Parser::Result r = p->parse_head(head, len, len, &used);
    release_parser(p);
    if (r != H::Parser::Result::Ok) luaio::raise(L, "headers", "not a request head");
    push_headers(L);
    return 1;
}

// ---------------------------------------------------------------- helpers for lib/http

int hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    c = std::tolower(c);
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

void push_decoded(lua_State* L, const char* s, size_t len, bool plus) {
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        if (ch == '%' && i + 2 < len) {
            int hi = hexval(static_cast<unsigned char>(s[i + 1]));
            int lo = hexval(static_cast<unsigned char>(s[i + 2]));
            if (hi >= 0 && lo >= 0) {
                luaL_addchar(&b, static_cast<char>(hi * 16 + lo));
                i += 2;
                continue;
            }
        }
        luaL_addchar(&b, plus && ch == '+' ? ' ' : ch);
    }
    luaL_pushresult(&b);
}

// core.decode(s[, plus]): percent-decoding ('+' is a space when plus is true).
int l_decode(lua_State* L) {
    size_t len;
    const char* s = luaio::check_string(L, 1, "http.decode", &len);
    push_decoded(L, s, len, lua_toboolean(L, 2) != 0);
    return 1;
}

// core.query(s): "a=1&b=2&a=3" -> {a = {"1", "3"}, b = "2"}; decoded, '+' is a space.
int l_query(lua_State* L) {
    size_t len;
    const char* s = luaio::check_string(L, 1, "http.query", &len);
    lua_createtable(L, 0, 4);
    size_t i = 0;
    while (i < len) {
        size_t j = i;
        while (j < len && s[j] != '&' && s[j] != ';') j++;
        if (j > i) {
            const char* eq = static_cast<const char*>(std::memchr(s + i, '=', j - i));
            size_t klen = eq ? static_cast<size_t>(eq - (s + i)) : j - i;
            push_decoded(L, s + i, klen, true);
            if (eq)
                push_decoded(L, eq + 1, static_cast<size_t>(s + j - eq - 1), true);
            else
                lua_pushliteral(L, "");
            lua_pushvalue(L, -2);
            lua_rawget(L, -4);
            int t = lua_type(L, -1);
            if (t == LUA_TNIL) {
                lua_pop(L, 1);
                lua_rawset(L, -3);
            } else if (t == LUA_TSTRING) {
                lua_createtable(L, 2, 0);
                lua_insert(L, -2);
                lua_rawseti(L, -2, 1);
                lua_insert(L, -2);
                lua_rawseti(L, -2, 2);
                lua_rawset(L, -3);
            } else {
                lua_insert(L, -2);
                lua_rawseti(L, -2, static_cast<int>(lua_objlen(L, -2)) + 1);
                lua_pop(L, 2);
            }
        }
        i = j + 1;
    }
    return 1;
}

// core.date(): the current Date header value.
int l_date(lua_State* L) {
    const char* d = date_line();
    lua_pushlstring(L, d + 6, std::strlen(d) - 8);
    return 1;
}

} // namespace

extern "C" int luaopen_luaio_http(lua_State* L) {
    const luaL_Reg conn_methods[] = {
        {"next", l_next},         {"response", l_response},  {"read", l_read},       {"body", l_body},
        {"respond", l_respond},   {"head", l_head},          {"write", l_write},     {"finish", l_finish},
        {"reject", l_reject},     {"request", l_request},    {"replied", l_replied}, {"keepalive", l_keepalive},
        {"reusable", l_reusable}, {"sent", l_sent},          {"inform", l_inform},   {"setmeta", l_set_meta},
        {"upgrade", l_upgrade},   {"setclose", l_set_close}, {"socket", l_socket},   {"unref", l_unref},
        {"close", l_close},       {"deadline", l_deadline},  {"__gc", Conn::l_gc},   {"sendfile", l_sendfile},
        {nullptr, nullptr}};
    luaio::new_class(L, kConnClass, conn_methods);
    lua_pop(L, 1);
    luaio::set_closer(L, kConnClass, task_end);
    const luaL_Reg site_methods[] = {
        {"close", l_site_close}, {"drain", l_site_drain}, {"__gc", Site::l_gc}, {nullptr, nullptr}};
    luaio::new_class(L, Site::kClass, site_methods);
    lua_pop(L, 1);
    luaL_newmetatable(L, kLimitsClass);
    lua_pop(L, 1);
    const luaL_Reg filecache_methods[] = {{"forget", l_filecache_forget}, {"__gc", l_filecache_gc}, {nullptr, nullptr}};
    luaio::new_class(L, kFileCacheClass, filecache_methods);
    lua_pop(L, 1);
    const luaL_Reg funcs[] = {{"limits", l_limits},
                              {"site", l_site},
                              {"accept", l_accept},
                              {"client", l_client},
                              {"requesthead", l_request_head},
                              {"headers", l_headers},
                              {"filecache", l_filecache},
                              {"decode", l_decode},
                              {"query", l_query},
                              {"date", l_date},
                              {nullptr, nullptr}};
    luaL_newlib(L, funcs);
    lua_createtable(L, 0, static_cast<int>(std::size(luaio::http::kStatuses)));
    for (const auto& st : luaio::http::kStatuses) {
        lua_pushstring(L, st.reason);
        lua_rawseti(L, -2, st.code);
    }
    lua_setfield(L, -2, "reasons");
    lua_createtable(L, 0, static_cast<int>(std::size(luaio::http::kCanned)));
    for (const auto& c : luaio::http::kCanned) {
        lua_pushinteger(L, c.status);
        lua_setfield(L, -2, c.name);
    }
    lua_setfield(L, -2, "canned");
    for (int& ref : g_method_refs) ref = LUA_NOREF;
    for (int& ref : g_version_refs) ref = LUA_NOREF;
    return 1;
}
