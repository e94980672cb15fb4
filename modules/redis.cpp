// The C++ core of the redis module, registered as `luaio.redis`; lib/redis.lua is the public face.
//
// A Conn is the Redis protocol state of one socket (a luaio::Stream, plain or TLS). Commands are
// written in RESP by our own writer into one buffer; replies (RESP2 and RESP3) are read by luaio's
// own incremental reader (modules/resp_reader.h), which builds each reply straight into Lua
// values on the stack of the task that waits for it (modules/resp_lua.h). Replies are matched to callers in
// the order the commands went out (FIFO), so any number of tasks may call one connection at once:
// each parks until its reply, and what they send while replies are being handed out goes out in
// one write (pipelining without asking for it).
//
//   conn = core.conn(sock, timeout_ms)          -- takes the socket over (its reads and writes)
//   value | nil, err = conn:call(cmd, args...)  -- one command; err == core.DOWN: reconnect first
//   results | nil, err = conn:pipeline(flat, len, count)  -- commands in one write, replies in a table
//   results | nil, err = conn:send(count, cmd, args...)  -- (p)(un)subscribe: count replies
//   kind, channel, message[, pattern] | nil[, err] = conn:message([timeout_ms])
//   conn:attach(sock)  conn:drop()  conn:reusable()  conn:alive()  conn:close()
//
// The stream is watched (Stream::watch) while the connection is open: bytes are fed to the
// reader as they come, and replies are handed out in Consumer::ready, once the stream's buffer is
// settled. A reply the connection cannot match, a protocol error, a timeout or the end of the
// stream fails every waiting call and drops the socket: no call ever gets another's reply, and
// the next call (lib/redis.lua) reconnects.
#include "runtime/luaio.h"
#include "runtime/object.h"
#include "runtime/stream.h"

#include "modules/resp_lua.h"
#include "modules/resp_reader.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <vector>

namespace {

using luaio::Stream;

constexpr const char* kConnClass = "luaio.redis.conn";
// The output buffer's capacity kept between writes; a larger one (a big pipeline) is let go.
constexpr size_t kKeepOut = 64 * 1024;
// Output gathered during a dispatch goes out once it reaches kFirstFlush, then each time it reaches
// twice the last size, up to kFlushAt, without waiting for the check phase: the server then works
// on the first commands while we make the next ones, and a turn of many pipelines costs a few
// writes. (One write per turn made client and server take turns: pipelines of 16 from 64 tasks
// ran at 0.85x Bun's rate, 1.17x with this, medians of 6 rounds each paired with Bun's.) Less
// than kFirstFlush per turn (64 tasks' GETs: 1.4 KiB) goes out in one write in the check phase.
constexpr size_t kFirstFlush = 2 * 1024;
constexpr size_t kFlushAt = 16 * 1024;

// The error a call returns when the connection has no socket (dropped): lib/redis.lua then
// reconnects and calls again. One table, compared by identity.
int g_down_ref = LUA_NOREF;
// What a call returns for a programmer's mistake, for lib/redis.lua to raise with its own name.
int g_misuse_ref = LUA_NOREF;

// A caller waiting for replies: one reply (its value), or `count` replies in a table.
struct Entry {
    luaio::Waiter w;
    uint32_t count = 0; // replies awaited; 0: one reply, returned as it is
    uint32_t got = 0;
    uint64_t deadline = 0;  // loop time by which the reply must be in (0: none)
    bool started = false;   // the results table of a `count` entry is on the task's stack
    bool sub = false;       // sent while subscribed: messages may come before its replies
    bool subscribe = false; // a (P)SUBSCRIBE: subscribed mode goes on after its replies
    bool track = false;     // a CLIENT TRACKING: on OK, Conn::track_next takes effect
};

struct Conn final : luaio::Consumer, luaio::Handle<Conn> {
    static constexpr const char* kClass = kConnClass;
    static constexpr const char* kWhat = "redis connection";

    int consume(lua_State* L, const char* data, size_t len, int err, size_t* used) override;
    void ready(lua_State* L, int n) override;
    void proxy_gone() { close(); }
    void close();

    luaio::Anchor sock;       // the socket's proxy
    void** sock_ud = nullptr; // its pointer slot: nullptr once the socket closed
    std::unique_ptr<luaio::resp::Reader> reader;
    std::string out; // commands not yet written
    std::deque<Entry> fifo;
    uv_timer_t timer;
    uint64_t timeout = 0; // ms a reply may take (0: no limit)
    // Where replies that no task's stack receives are built (pub/sub messages, replies to
    // nobody): a thread of the connection's own, with the queue of unread messages at index 1.
    lua_State* scratch = nullptr;
    luaio::Anchor scratch_ref;
    int q_first = 1, q_last = 0;
    luaio::Waiter msg_waiter; // a task waiting in conn:message()
    uint64_t msg_deadline = 0;
    char root_type = 0;    // the first byte of the reply being read ('>': a push)
    bool resp3 = false;    // HELLO 3 was sent: messages come as pushes
    bool tracking = false; // CLIENT TRACKING ON (RESP3): invalidations come as pushes
    // The last CLIENT TRACKING ON command, kept across drops: lib/redis.lua sends it again on the
    // next connection (conn:tracking()). Empty once tracking was switched off.
    std::vector<std::string> track_cmd;
    std::vector<std::string> track_next; // a CLIENT TRACKING command sent, its reply not in yet
    bool track_noted = false;            // note_command saw one: the next Entry carries it
    std::string proto_error;             // what the reader found wrong (a drop with UV_EPROTO)
    unsigned gen = 0;                    // changes when the socket is dropped or attached
    int down_err = 0;                    // what dropped the socket
    bool flush_queued = false;           // in g_to_flush
    bool closed = false;
    bool refd = false;
    bool sub_mode = false; // subscribed: message arrays go to the queue
    bool in_multi = false;
    bool watching = false;
    bool dirty = false;         // SELECT or the like: not for a pool
    size_t flush_at = kFlushAt; // this dispatch's next early write, at this many bytes

    Stream* stream() const { return sock_ud && *sock_ud ? static_cast<Stream*>(*sock_ud) : nullptr; }
};

// Commands issued while replies are handed out (in the poll phase: read callbacks) are written
// in the check phase right after it, once every connection has handed out its replies: all the
// writes of a loop turn then go out together, instead of each waking the server (which then takes
// the CPU from us on a busy machine) between two connections' replies.
std::vector<Conn*> g_to_flush;
uv_check_t g_flush_check;
bool g_flush_check_init = false;
int g_dispatching = 0; // dispatches in progress (nested: a woken task's call on another connection)

} // namespace

// The error table of a server's error reply: EREDIS, the server's message, and its first word
// (ERR, WRONGTYPE, WRONGPASS ...) as `kind`.
void luaio::resp::push_server_error(lua_State* L, const char* s, size_t len) {
    std::string msg(s, len);
    luaio::push_error(L, luaio::LUAIO_EREDIS, msg.c_str());
    size_t k = msg.find(' ');
    lua_pushlstring(L, msg.data(), k == std::string::npos ? msg.size() : k);
    lua_setfield(L, -2, "kind");
}

namespace {

// ---------------------------------------------------------------- building replies

// Each reply is built on the stack of the task it is for, chosen when its first byte is read:
// the head entry's task, or the connection's scratch thread for messages (pushes, and in RESP2
// everything read while subscribed) and replies nobody waits for.
struct Build : luaio::resp::LuaBuilder {
    Conn* c;
    explicit Build(Conn* conn) : c(conn) {}
    void begin(char type);
};

// ---------------------------------------------------------------- the connection's state

void update_ref(Conn* c) {
    Stream* s = c->stream();
    bool busy = !c->fifo.empty() || c->msg_waiter.waiting();
    if (!s || busy == c->refd) return;
    c->refd = busy;
    if (busy)
        uv_ref(s->handle());
    else
        uv_unref(s->handle()); // an idle connection does not keep the process alive
}

void on_timer(uv_timer_t* t);

void arm_timer(Conn* c) {
    if (c->closed) return;
    uint64_t next = c->fifo.empty() ? 0 : c->fifo.front().deadline;
    if (c->msg_waiter.waiting() && c->msg_deadline && (!next || c->msg_deadline < next)) next = c->msg_deadline;
    if (!next) {
        uv_timer_stop(&c->timer);
        return;
    }
    uint64_t now = luaio::now_ms();
    uv_timer_start(&c->timer, on_timer, next > now ? next - now : 0, 0);
}

lua_State* scratch_of(Conn* c) {
    if (!c->scratch) {
        lua_State* L = luaio::main_state();
        c->scratch = lua_newthread(L);
        c->scratch_ref.set(L, -1);
        lua_pop(L, 1);
        lua_newtable(c->scratch); // the message queue
    }
    return c->scratch;
}

void push_down_error(lua_State* L, Conn* c, int err) {
    Stream* s = c->stream();
    luaio::Transport* t = s ? s->transport() : nullptr;
    if (err == UV_EPROTO && !c->proto_error.empty())
        luaio::push_error(L, UV_EPROTO, c->proto_error.c_str());
    else if (t && err <= luaio::kErrOwnBase && err != luaio::LUAIO_EREDIS)
        t->push_error(L, err);
    else
        luaio::push_uv_error(L, err);
}

// The socket goes (closed) and every waiting call fails with err: nothing sent before can be
// answered any more. The callers are woken after the state is settled, since they run at once
// and may call (and reconnect) this connection again.
void drop(Conn* c, int err) {
    std::deque<Entry> waiting;
    waiting.swap(c->fifo);
    Stream* s = c->stream();
    if (c->scratch) lua_settop(c->scratch, 1); // a message half built
    // The error tables are made before the socket goes (a TLS error's message is its transport's).
    for (Entry& e : waiting) {
        if (lua_State* co = luaio::task_of(e.w)) {
            lua_settop(co, 0); // a reply half built
            lua_pushnil(co);
            push_down_error(co, c, err);
        }
    }
    lua_State* mco = luaio::task_of(c->msg_waiter);
    if (mco) {
        lua_pushnil(mco);
        push_down_error(mco, c, err);
    }
    if (s) s->close();
    c->refd = false;
    c->sock.clear();
    c->sock_ud = nullptr;
    c->reader.reset();
    c->down_err = err;
    c->gen++;
    // The server forgets a dropped connection's tracking table: invalidations may have been lost,
    // so whoever caches must drop everything. That is the message of a FLUSHALL: ("invalidate",
    // null), queued for the next conn:message().
    if (c->tracking) {
        lua_State* S = scratch_of(c);
        lua_createtable(S, 2, 0);
        lua_pushliteral(S, "invalidate");
        lua_rawseti(S, -2, 1);
        lua_pushlightuserdata(S, nullptr);
        lua_rawseti(S, -2, 2);
        lua_rawseti(S, 1, ++c->q_last);
    }
    c->sub_mode = c->in_multi = c->watching = c->dirty = c->resp3 = c->tracking = false;
    c->out.clear();
    if (!c->closed) uv_timer_stop(&c->timer);
    for (Entry& e : waiting)
        if (e.w.waiting()) luaio::resume_parked(luaio::detach(e.w), 2);
    if (mco) luaio::resume_parked(luaio::detach(c->msg_waiter), 2);
}

void on_timer(uv_timer_t* t) {
    Conn* c = static_cast<Conn*>(t->data);
    uint64_t now = luaio::now_ms();
    if (c->msg_waiter.waiting() && c->msg_deadline && c->msg_deadline <= now) {
        c->msg_deadline = 0;
        luaio::wake_uv_error(c->msg_waiter, UV_ETIMEDOUT);
        update_ref(c);
    }
    // A reply that does not come in time: the server is stuck or gone, and the replies after it
    // would be late too. The connection is dropped so that no later reply reaches a wrong caller.
    if (!c->fifo.empty() && c->fifo.front().deadline && c->fifo.front().deadline <= now) drop(c, UV_ETIMEDOUT);
    arm_timer(c);
}

int flush(Conn* c) {
    if (c->out.empty()) return 0;
    Stream* s = c->stream();
    int err = UV_ENOTCONN;
    if (s) {
        uv_buf_t b = uv_buf_init(c->out.data(), static_cast<unsigned>(c->out.size()));
        err = s->write(&b, 1); // what the kernel does not take now is copied and queued
    }
    c->out.clear();
    if (c->out.capacity() > kKeepOut) std::string().swap(c->out);
    return err;
}

void on_flush_check(uv_check_t*) {
    std::vector<Conn*> conns;
    conns.swap(g_to_flush);
    for (Conn* c : conns) c->flush_queued = false;
    // A flush that fails drops its connection and wakes its callers, who may queue new writes:
    // those go out at once (no dispatch is running now).
    for (Conn* c : conns)
        if (!c->closed)
            if (int err = flush(c)) drop(c, err);
    if (g_to_flush.empty()) uv_check_stop(&g_flush_check);
}

// c's commands go out in this loop turn's check phase.
void queue_flush(Conn* c) {
    if (c->flush_queued || c->out.empty()) return;
    if (!g_flush_check_init) {
        uv_check_init(luaio::loop(), &g_flush_check);
        uv_unref(reinterpret_cast<uv_handle_t*>(&g_flush_check)); // it never keeps the process alive
        g_flush_check_init = true;
    }
    c->flush_queued = true;
    g_to_flush.push_back(c);
    uv_check_start(&g_flush_check, on_flush_check);
}

void unqueue_flush(Conn* c) {
    if (!c->flush_queued) return;
    c->flush_queued = false;
    for (auto& q : g_to_flush)
        if (q == c) q = nullptr;
    std::vector<Conn*> rest;
    for (Conn* q : g_to_flush)
        if (q) rest.push_back(q);
    g_to_flush.swap(rest);
}

// ---------------------------------------------------------------- handing out replies

// A message of the subscribed mode: ["message", channel, payload] or ["pmessage", pattern,
// channel, payload], on top of L.
bool is_message(lua_State* L) {
    if (!lua_istable(L, -1)) return false;
    size_t n = lua_objlen(L, -1);
    if (n != 3 && n != 4) return false;
    lua_rawgeti(L, -1, 1);
    size_t len = 0;
    const char* k = lua_tolstring(L, -1, &len);
    bool yes = k && ((n == 3 && len == 7 && std::memcmp(k, "message", 7) == 0) ||
                     (n == 4 && len == 8 && std::memcmp(k, "pmessage", 8) == 0));
    lua_pop(L, 1);
    return yes;
}

// Replaces the message table on top of L by its values: kind, channel, payload for a message,
// kind, channel, payload, pattern for a pmessage, and the elements in order for other pushes
// (RESP3: "invalidate", keys). Returns the count.
int unpack_message(lua_State* L) {
    int t = lua_gettop(L);
    int n = static_cast<int>(lua_objlen(L, t));
    lua_checkstack(L, n + 2);
    lua_rawgeti(L, t, 1);
    size_t len = 0;
    const char* k = lua_tolstring(L, -1, &len);
    if (n == 4 && k && len == 8 && std::memcmp(k, "pmessage", 8) == 0) {
        lua_rawgeti(L, t, 3);
        lua_rawgeti(L, t, 4);
        lua_rawgeti(L, t, 2);
    } else {
        for (int i = 2; i <= n; i++) lua_rawgeti(L, t, i);
    }
    lua_remove(L, t);
    return n > 0 ? n : 1;
}

// A RESP3 push that confirms a (un)subscription: the reply of a subscribe entry, no message.
bool is_confirmation(lua_State* L) {
    if (!lua_istable(L, -1)) return false;
    lua_rawgeti(L, -1, 1);
    size_t len = 0;
    const char* k = lua_tolstring(L, -1, &len);
    bool yes = k && len >= 9 && len <= 12 && std::memcmp(k + len - 9, "subscribe", 9) == 0;
    lua_pop(L, 1);
    return yes;
}

// An unsubscribe confirmation that leaves no subscription: ["unsubscribe", channel, 0].
bool ends_subscriptions(lua_State* L) {
    if (!lua_istable(L, -1) || lua_objlen(L, -1) != 3) return false;
    lua_rawgeti(L, -1, 1);
    lua_rawgeti(L, -2, 3);
    size_t len = 0;
    const char* k = lua_tolstring(L, -2, &len);
    bool yes = k && lua_type(L, -1) == LUA_TNUMBER && lua_tonumber(L, -1) == 0 &&
               ((len == 11 && std::memcmp(k, "unsubscribe", 11) == 0) ||
                (len == 12 && std::memcmp(k, "punsubscribe", 12) == 0));
    lua_pop(L, 2);
    return yes;
}

void queue_message(Conn* c) {
    lua_State* S = c->scratch;
    if (lua_State* co = luaio::task_of(c->msg_waiter)) {
        lua_xmove(S, co, 1);
        int n = unpack_message(co);
        c->msg_deadline = 0;
        luaio::Parked p = luaio::detach(c->msg_waiter);
        // Nobody waits now: an idle subscriber does not keep the process alive.
        update_ref(c);
        luaio::resume_parked(p, n);
        return;
    }
    lua_rawseti(S, 1, ++c->q_last);
}

// The complete reply on top of co (the head entry's task) is that entry's. Once the entry has all
// its replies it leaves the queue and its task is resumed.
void complete(Conn* c, lua_State* co, bool error) {
    Entry& e = c->fifo.front();
    int n = 1;
    if (e.count) {
        lua_rawseti(co, -2, static_cast<int>(++e.got));
        if (e.got < e.count) return;
    } else if (error) {
        lua_pushnil(co);
        lua_insert(co, -2);
        n = 2;
    }
    if (e.track && !error) {
        c->track_cmd.swap(c->track_next);
        c->track_next.clear();
        c->tracking = !c->track_cmd.empty();
    }
    luaio::Parked p = luaio::detach(e.w);
    c->fifo.pop_front();
    arm_timer(c);
    update_ref(c);
    if (p.task) luaio::resume_parked(p, n);
}

// A complete reply on the scratch thread (a RESP3 push, RESP2's subscribed mode, or nobody's): a
// message, or the head entry's reply.
void route(Conn* c, bool error) {
    lua_State* S = c->scratch;
    Entry* e = c->fifo.empty() ? nullptr : &c->fifo.front();
    if (c->root_type == '>') {
        if (!is_confirmation(S)) return queue_message(c);
    } else if (c->sub_mode && (!e || e->sub) && is_message(S)) {
        return queue_message(c);
    }
    if (c->sub_mode && ends_subscriptions(S)) {
        bool more = false;
        for (size_t i = 1; i < c->fifo.size(); i++) more = more || c->fifo[i].subscribe;
        if (!more && (!e || e->count <= e->got + 1)) {
            c->sub_mode = false;
            // A task waiting for messages learns that none will come.
            luaio::wake(c->msg_waiter, [](lua_State*) { return 0; });
            update_ref(c);
        }
    }
    lua_State* co = e ? luaio::task_of(e->w) : nullptr;
    if (!co) {
        lua_pop(S, 1);
        if (e) c->fifo.pop_front();
        return;
    }
    lua_xmove(S, co, 1);
    complete(c, co, error);
}

void Build::begin(char type) {
    c->root_type = type;
    Entry* e = c->fifo.empty() ? nullptr : &c->fifo.front();
    // RESP2 sends messages as arrays while subscribed: everything goes to the scratch thread then.
    lua_State* co = e && type != '>' && (c->resp3 || !c->sub_mode) ? luaio::task_of(e->w) : nullptr;
    L = co ? co : scratch_of(c);
    nil_is_null = !co || e->count;
    if (e && e->count && !e->started) {
        if (lua_State* eco = luaio::task_of(e->w)) lua_createtable(eco, static_cast<int>(e->count), 0);
        e->started = true;
    }
    start();
}

// Hands out every complete reply in the reader. Tasks woken here run at once and may call this
// connection again (their commands wait in c->out and go out in the check phase), close it,
// or drop and reattach it (gen changes): the loop stops then.
void dispatch(Conn* c) {
    unsigned gen = c->gen;
    c->flush_at = kFirstFlush;
    g_dispatching++;
    Build b(c);
    while (!c->closed && c->gen == gen && c->reader) {
        luaio::resp::Status st = c->reader->parse(b);
        if (st == luaio::resp::Status::More) break;
        if (st == luaio::resp::Status::Error) {
            // Not RESP: the stream cannot be trusted past this point.
            c->proto_error = c->reader->error();
            drop(c, UV_EPROTO);
            break;
        }
        if (b.L == c->scratch)
            route(c, b.root_error);
        else
            complete(c, b.L, b.root_error);
    }
    g_dispatching--;
    if (c->closed || c->gen != gen) return;
    queue_flush(c);
}

int Conn::consume(lua_State*, const char* data, size_t len, int, size_t* used) {
    if (len && reader) reader->feed(data, len);
    *used = len;
    return 0; // ready() hands the replies out, once the stream is settled
}

void Conn::ready(lua_State*, int) {
    Stream* s = stream();
    if (!s) return;
    unsigned g = gen;
    dispatch(this);
    if (closed || gen != g) return;
    if (int err = s->read_error()) {
        // The server closed (or the connection broke): what is still awaited never comes.
        drop(this, err);
        return;
    }
    s->watch(this);
}

void on_closed(uv_handle_t* h) {
    delete static_cast<Conn*>(h->data);
}

void Conn::close() {
    if (closed) return;
    closed = true;
    unqueue_flush(this);
    drop(this, UV_ECANCELED);
    detach_proxy();
    msg_deadline = 0;
    scratch_ref.clear();
    scratch = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(&timer), on_closed);
}

// ---------------------------------------------------------------- writing commands

// "<kind><n>\r\n" without snprintf: the RESP header of every command and argument (a command
// costs about 150 instructions here, against 2,400 for hiredis's redisFormatCommandArgv, which
// also mallocs the command).
void append_len(std::string& out, char kind, size_t n) {
    char buf[24];
    char* e = buf + sizeof buf;
    char* p = e;
    *--p = '\n';
    *--p = '\r';
    do {
        *--p = static_cast<char>('0' + n % 10);
        n /= 10;
    } while (n);
    *--p = kind;
    out.append(p, static_cast<size_t>(e - p));
}

// Appends the argument at idx as a RESP bulk string. Numbers that are integers go as integers
// ("10", not "1e+01"), as commands expect.
void append_arg(lua_State* L, Conn* c, int idx) {
    std::string& out = c->out;
    int t = lua_type(L, idx);
    if (t == LUA_TNUMBER) {
        lua_Number v = lua_tonumber(L, idx);
        char buf[40];
        int k;
        if (std::floor(v) == v && std::fabs(v) < 9.2e18)
            k = std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(v));
        else
            k = std::snprintf(buf, sizeof buf, "%.17g", v);
        append_len(out, '$', static_cast<size_t>(k));
        out.append(buf, static_cast<size_t>(k));
    } else {
        size_t len;
        const char* s = lua_tolstring(L, idx, &len);
        append_len(out, '$', len);
        out.append(s, len);
    }
    out.append("\r\n", 2);
}

// Arguments are strings or numbers; checked before anything is appended, so that a raise leaves
// the commands of other tasks (waiting in c->out) as they are.
void check_arg(lua_State* L, int idx, const char* fname, int argn) {
    int t = lua_type(L, idx);
    if (t != LUA_TNUMBER && t != LUA_TSTRING)
        luaio::raise(L, fname, "expected a string or number as argument %d, got %s", argn, luaL_typename(L, idx));
}

bool name_is(const char* s, size_t len, const char* upper) {
    size_t n = std::strlen(upper);
    if (len != n) return false;
    for (size_t i = 0; i < n; i++)
        if ((s[i] & ~0x20) != upper[i]) return false;
    return true;
}

enum class Kind { Plain, PubSub, Refused };

// What a command does to the connection's state (a transaction, WATCH, a database). Commands
// that change the reply stream (subscriptions, MONITOR, RESP3) are refused on the plain paths.
Kind note_command(Conn* c, lua_State* L, int idx, int nargs) {
    size_t len;
    const char* s = lua_tolstring(L, idx, &len);
    if (!s || len < 4 || len > 12) return Kind::Plain;
    switch (s[0] & ~0x20) {
    case 'M':
        if (name_is(s, len, "MULTI")) c->in_multi = true;
        if (name_is(s, len, "MONITOR")) return Kind::Refused;
        break;
    case 'E':
    case 'D':
        if (name_is(s, len, "EXEC") || name_is(s, len, "DISCARD")) c->in_multi = c->watching = false;
        break;
    case 'W':
        if (name_is(s, len, "WATCH")) c->watching = true;
        break;
    case 'U':
        if (name_is(s, len, "UNWATCH")) c->watching = false;
        if (name_is(s, len, "UNSUBSCRIBE")) return Kind::PubSub;
        break;
    case 'S':
        if (name_is(s, len, "SELECT")) c->dirty = true;
        if (name_is(s, len, "SUBSCRIBE") || name_is(s, len, "SSUBSCRIBE") || name_is(s, len, "SUNSUBSCRIBE"))
            return Kind::PubSub;
        break;
    case 'P':
        if (name_is(s, len, "PSUBSCRIBE") || name_is(s, len, "PUNSUBSCRIBE")) return Kind::PubSub;
        break;
    case 'H':
        if (name_is(s, len, "HELLO") && nargs > 1) {
            // The protocol of the replies after it (the reader reads both; messages differ).
            size_t vlen;
            const char* v = lua_tolstring(L, idx + 1, &vlen);
            if (v && vlen == 1 && (v[0] == '2' || v[0] == '3')) c->resp3 = v[0] == '3';
        }
        break;
    case 'C':
        if (name_is(s, len, "CLIENT")) {
            c->dirty = true; // a name, tracking, reply modes
            size_t alen, blen;
            const char* a = nargs > 2 ? lua_tolstring(L, idx + 1, &alen) : nullptr;
            const char* b = a ? lua_tolstring(L, idx + 2, &blen) : nullptr;
            if (b && name_is(a, alen, "TRACKING")) {
                // Takes effect when the server says OK (complete()): a refused one changes nothing.
                c->track_noted = true;
                c->track_next.clear();
                for (int i = 0; name_is(b, blen, "ON") && i < nargs; i++) {
                    size_t n;
                    const char* v = lua_tolstring(L, idx + i, &n);
                    if (!v) { // a misuse, refused by the caller
                        c->track_noted = false;
                        break;
                    }
                    c->track_next.emplace_back(v, n);
                }
            }
        }
        break;
    default:
        break;
    }
    return Kind::Plain;
}

// Why the command at idx is refused (k is not Plain); the string stays on L's stack.
const char* refusal(lua_State* L, Kind k, int idx) {
    if (k == Kind::PubSub)
        return lua_pushfstring(L, "%s: use r:subscribe, r:psubscribe, r:unsubscribe or r:punsubscribe",
                               lua_tostring(L, idx));
    return lua_pushfstring(L, "%s is not supported (it turns the connection into a stream of its own)",
                           lua_tostring(L, idx));
}

void refuse(lua_State* L, Kind k, const char* fname, int idx) {
    luaio::raise(L, fname, "%s", refusal(L, k, idx));
}

// Appends the command of the nargs values from idx (checked first).
void append_command(lua_State* L, Conn* c, int idx, int nargs, const char* fname) {
    for (int i = 0; i < nargs; i++) check_arg(L, idx + i, fname, idx + i - 1);
    append_len(c->out, '*', static_cast<size_t>(nargs));
    for (int i = 0; i < nargs; i++) append_arg(L, c, idx + i);
}

// nil, MISUSE, argn, what: the value at argn (1: the command name) is not a string or number (what:
// its type), or argn 0: the command is refused (what: why).
int return_misuse(lua_State* L, int argn, const char* what) {
    lua_pushnil(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, g_misuse_ref);
    lua_pushinteger(L, argn);
    lua_pushstring(L, what);
    return 4;
}

int return_down(lua_State* L) {
    lua_pushnil(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, g_down_ref);
    return 2;
}

// Sends what was appended (now, or at the end of the dispatch that runs this task) and parks the
// task for the replies of a new entry.
int send_and_wait(lua_State* L, Conn* c, Entry e, const char* fname) {
    luaio::check_can_wait(L, fname);
    if (g_dispatching > 0 && c->out.size() < c->flush_at) {
        queue_flush(c);
    } else {
        if (c->flush_at < kFlushAt) c->flush_at *= 2;
        if (int err = flush(c)) {
            drop(c, err);
            return luaio::return_uv_error(L, err);
        }
    }
    if (c->timeout) e.deadline = luaio::now_ms() + c->timeout;
    e.sub = c->sub_mode;
    bool first = c->fifo.empty();
    c->fifo.push_back(e);
    if (first) arm_timer(c);
    update_ref(c);
    return luaio::park(L, c->fifo.back().w);
}

Conn* check_conn(lua_State* L, const char* fname) {
    return Conn::check(L, 1, fname);
}

// value | nil, err = conn:call(cmd, args...)
int l_call(lua_State* L) {
    Conn* c = check_conn(L, "redis.call");
    int nargs = lua_gettop(L) - 1;
    // A misuse is returned, not raised: lib/redis.lua raises it with the name the user called
    // (r:set, r:call) and the argument's place there.
    if (nargs < 1) return return_misuse(L, 1, "no value");
    for (int i = 0; i < nargs; i++) {
        int t = lua_type(L, 2 + i);
        if ((t != LUA_TNUMBER && t != LUA_TSTRING) || (i == 0 && t != LUA_TSTRING))
            return return_misuse(L, i + 1, luaL_typename(L, 2 + i));
    }
    if (!c->stream()) return return_down(L);
    Kind k = note_command(c, L, 2, nargs);
    if (k != Kind::Plain) return return_misuse(L, 0, refusal(L, k, 2));
    append_command(L, c, 2, nargs, "redis.call");
    Entry e;
    e.track = c->track_noted;
    c->track_noted = false;
    return send_and_wait(L, c, e, "redis.call");
}

// results | nil, err = conn:pipeline(flat, len, count): flat holds, for each command, its
// number of values and the values (name first). Checked whole before anything is appended.
int l_pipeline(lua_State* L) {
    Conn* c = check_conn(L, "pipeline");
    luaL_checktype(L, 2, LUA_TTABLE);
    int len = static_cast<int>(luaio::check_integer(L, 3, "pipeline"));
    int count = static_cast<int>(luaio::check_integer(L, 4, "pipeline"));
    if (count < 1) luaio::raise(L, "pipeline", "no commands");
    if (!c->stream()) return return_down(L);
    lua_settop(L, 4);
    lua_checkstack(L, 8);
    for (int pass = 0; pass < 2; pass++) {
        int i = 1, cmds = 0;
        while (i <= len) {
            lua_rawgeti(L, 2, i);
            int n = static_cast<int>(lua_tointeger(L, -1));
            lua_pop(L, 1);
            if (n < 1 || i + n > len) luaio::raise(L, "pipeline", "malformed command list");
            if (pass == 0) {
                lua_rawgeti(L, 2, i + 1);
                if (lua_type(L, -1) != LUA_TSTRING)
                    luaio::raise(L, "pipeline", "expected a command name, got %s", luaL_typename(L, -1));
                if (n > 1) lua_rawgeti(L, 2, i + 2);
                Kind k = note_command(c, L, 5, n);
                if (k != Kind::Plain) refuse(L, k, "pipeline", 5);
                for (int j = 1; j < n; j++) {
                    lua_settop(L, 4);
                    lua_rawgeti(L, 2, i + 1 + j);
                    check_arg(L, 5, "pipeline", j);
                }
                lua_settop(L, 4);
            } else {
                append_len(c->out, '*', static_cast<size_t>(n));
                for (int j = 0; j < n; j++) {
                    lua_rawgeti(L, 2, i + 1 + j);
                    append_arg(L, c, 5);
                    lua_pop(L, 1);
                }
            }
            i += n + 1;
            cmds++;
        }
        if (cmds != count) luaio::raise(L, "pipeline", "malformed command list");
    }
    c->track_noted = false; // only conn:call takes a CLIENT TRACKING in effect
    Entry e;
    e.count = static_cast<uint32_t>(count);
    return send_and_wait(L, c, e, "pipeline");
}

// results | nil, err = conn:send(count, cmd, args...): a (p)(un)subscribe command whose `count`
// replies (confirmations) come back in a table. lib/redis.lua counts them.
int l_send(lua_State* L) {
    Conn* c = check_conn(L, "subscribe");
    int count = static_cast<int>(luaio::check_integer(L, 2, "subscribe"));
    int nargs = lua_gettop(L) - 2;
    if (count < 1 || nargs < 1) luaio::raise(L, "subscribe", "bad arguments");
    if (!c->stream()) return return_down(L);
    size_t len;
    const char* s = luaio::check_string(L, 3, "subscribe", &len);
    bool subscribe = name_is(s, len, "SUBSCRIBE") || name_is(s, len, "PSUBSCRIBE");
    append_command(L, c, 3, nargs, "subscribe");
    if (subscribe) c->sub_mode = true;
    Entry e;
    e.count = static_cast<uint32_t>(count);
    e.subscribe = subscribe;
    return send_and_wait(L, c, e, "subscribe");
}

// kind, channel, message[, pattern] | nil (not subscribed) | nil, err = conn:message([timeout])
int l_message(lua_State* L) {
    Conn* c = check_conn(L, "message");
    lua_Integer ms = luaL_optinteger(L, 2, 0);
    if (c->scratch && c->q_first <= c->q_last) {
        lua_rawgeti(c->scratch, 1, c->q_first);
        lua_pushnil(c->scratch);
        lua_rawseti(c->scratch, 1, c->q_first++);
        if (c->q_first > c->q_last) c->q_first = 1, c->q_last = 0;
        lua_xmove(c->scratch, L, 1);
        return unpack_message(L);
    }
    if (!c->stream()) {
        lua_pushnil(L);
        luaio::push_uv_error(L, c->down_err ? c->down_err : UV_ENOTCONN);
        return 2;
    }
    if (!c->sub_mode && !c->tracking) return 0;
    if (c->msg_waiter.waiting()) {
        lua_pushnil(L);
        luaio::push_error(L, UV_EBUSY, "another task is already waiting for messages");
        return 2;
    }
    luaio::check_can_wait(L, "message");
    c->msg_deadline = ms > 0 ? luaio::now_ms() + static_cast<uint64_t>(ms) : 0;
    int r = luaio::park(L, c->msg_waiter);
    arm_timer(c);
    update_ref(c);
    return r;
}

// Takes the socket at idx over.
void attach(lua_State* L, Conn* c, int idx) {
    Stream* s = Stream::check(L, idx, "attach");
    if (c->stream()) drop(c, UV_ECANCELED);
    c->sock.set(L, idx);
    c->sock_ud = Stream::check_slot(L, idx, "attach");
    c->reader = std::make_unique<luaio::resp::Reader>();
    c->proto_error.clear();
    c->gen++;
    c->down_err = 0;
    c->refd = false;
    uv_unref(s->handle());
    s->watch(c);
}

// conn = core.conn(sock, timeout_ms)
int l_conn(lua_State* L) {
    Stream::check(L, 1, "redis.connect");
    lua_Integer ms = luaL_optinteger(L, 2, 0);
    auto* c = new Conn;
    c->timeout = ms > 0 ? static_cast<uint64_t>(ms) : 0;
    uv_timer_init(luaio::loop(), &c->timer);
    c->timer.data = c;
    uv_unref(reinterpret_cast<uv_handle_t*>(&c->timer));
    c->push_proxy(L);
    attach(L, c, 1);
    return 1;
}

int l_attach(lua_State* L) {
    attach(L, check_conn(L, "attach"), 2);
    return 0;
}

// conn:drop(): the socket goes (after a failed AUTH on connect).
int l_drop(lua_State* L) {
    Conn* c = check_conn(L, "drop");
    if (c->stream()) drop(c, UV_ECANCELED);
    return 0;
}

// For a pool: idle, connected, in no transaction or subscription, on its first database.
int l_reusable(lua_State* L) {
    Conn* c = Conn::check_or_closed(L, 1, "reusable");
    Stream* s = c ? c->stream() : nullptr;
    lua_pushboolean(L, s && !s->read_error() && !s->write_error() && c->fifo.empty() && !c->sub_mode && !c->in_multi &&
                           !c->watching && !c->dirty && !c->msg_waiter.waiting() && c->q_first > c->q_last);
    return 1;
}

int l_alive(lua_State* L) {
    Conn* c = Conn::check_or_closed(L, 1, "alive");
    Stream* s = c ? c->stream() : nullptr;
    lua_pushboolean(L, s && !s->read_error() && !s->write_error());
    return 1;
}

// conn:state([clean]) -> subscribed, in_multi, pending (for lib/redis.lua and the specs). clean:
// the connection's database is its own again (the SELECT of its `db` option).
int l_state(lua_State* L) {
    Conn* c = check_conn(L, "state");
    if (lua_toboolean(L, 2)) c->dirty = false;
    lua_pushboolean(L, c->sub_mode);
    lua_pushboolean(L, c->in_multi);
    lua_pushinteger(L, static_cast<lua_Integer>(c->fifo.size()));
    return 3;
}

// conn:tracking() -> the arguments of the last CLIENT TRACKING ON (kept across drops), or nothing;
// conn:tracking(false) forgets them (the server refused them on a new connection)
int l_tracking(lua_State* L) {
    Conn* c = check_conn(L, "tracking");
    if (lua_gettop(L) >= 2 && !lua_toboolean(L, 2)) {
        c->track_cmd.clear();
        return 0;
    }
    int n = static_cast<int>(c->track_cmd.size());
    luaL_checkstack(L, n, "tracking");
    for (const std::string& a : c->track_cmd) lua_pushlstring(L, a.data(), a.size());
    return n;
}

int l_close(lua_State* L) {
    if (Conn* c = Conn::check_or_closed(L, 1, "close")) c->close();
    return 0;
}

} // namespace

extern "C" int luaopen_luaio_redis(lua_State* L) {
    const luaL_Reg methods[] = {{"call", l_call},         {"pipeline", l_pipeline}, {"send", l_send},
                                {"message", l_message},   {"attach", l_attach},     {"drop", l_drop},
                                {"reusable", l_reusable}, {"alive", l_alive},       {"state", l_state},
                                {"tracking", l_tracking}, {"close", l_close},       {"__gc", Conn::l_gc},
                                {nullptr, nullptr}};
    luaio::new_class(L, kConnClass, methods);
    lua_pop(L, 1);
    const luaL_Reg funcs[] = {{"conn", l_conn}, {nullptr, nullptr}};
    luaL_newlib(L, funcs);
    if (g_down_ref == LUA_NOREF) {
        luaio::push_error(L, UV_ENOTCONN, "the connection to the server was lost");
        g_down_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, g_down_ref);
    lua_setfield(L, -2, "DOWN");
    if (g_misuse_ref == LUA_NOREF) {
        lua_newtable(L);
        g_misuse_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, g_misuse_ref);
    lua_setfield(L, -2, "MISUSE");
    lua_pushlightuserdata(L, nullptr);
    lua_setfield(L, -2, "null");
    return 1;
}
