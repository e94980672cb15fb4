// luaio.postgres: PostgreSQL connections on libpq's non-blocking API, for lib/postgres.lua
// (see docs/postgres.md). libpq does the protocol; luaio waits on its socket (FdWatch) and
// parks the calling task.
//
//   conn, err = core.connect(keywords, values, connect_ms, query_ms, decode_json, prepare)
//   rows, err = conn:query(sql | {sql, timeout = ms}, ...)   -- parameters sent apart ($1, $2 ...);
//                                                             -- each SQL text prepared once
//   id, err   = conn:_rows(sql | {...}, ...)   rows, [affected] | nil, err = conn:_fetch(id, discard)
//                                                             -- single-row mode, in batches
//   n, err    = conn:exec(sql | {...}, ...)                   -- rows affected; no parameters:
//                                                             -- the simple protocol (many statements)
//   ok, err   = conn:prepare(name, sql)   rows, err = conn:execute(name, timeout_ms, ...)
//   note, err = conn:wait(timeout_ms)                         -- {channel, payload, pid}
//   ok, err   = conn:copy_start(sql)   ok, err = conn:copy_put(data)   n, err = conn:copy_end([failure])
//   chunk | false, n | nil, err = conn:copy_get()
//
// libpq is loaded with dlopen when the module is first required (runtime/dynlib.h): the
// binary does not link it, so start-up does not pay for libpq's 24 shared libraries.
//
// A query's timeout cancels it on the server: PQcancel opens a connection of its own and
// blocks until the server has read the request, so it runs on libuv's thread pool
// (uv_queue_work), never on the loop. If no answer comes within a grace period after the
// cancel (a server that stopped answering), the connection is dropped and the query fails
// with ETIMEDOUT.
#include "runtime/dynlib.h"
#include "runtime/fdwatch.h"
#include "runtime/luaio.h"
#include "runtime/object.h"

#include <libpq-fe.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cerrno>
#include <cstring>
#include <strings.h>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace {

// The libpq functions the binding calls, resolved at require time.
#define LUAIO_PQ(X)                                                                                                    \
    X(PQconnectStartParams)                                                                                            \
    X(PQconnectPoll)                                                                                                   \
    X(PQsocket)                                                                                                        \
    X(PQstatus)                                                                                                        \
    X(PQerrorMessage)                                                                                                  \
    X(PQfinish)                                                                                                        \
    X(PQsetnonblocking)                                                                                                \
    X(PQsendQuery)                                                                                                     \
    X(PQsendQueryParams)                                                                                               \
    X(PQsendPrepare)                                                                                                   \
    X(PQsendQueryPrepared)                                                                                             \
    X(PQflush)                                                                                                         \
    X(PQconsumeInput)                                                                                                  \
    X(PQisBusy)                                                                                                        \
    X(PQgetResult)                                                                                                     \
    X(PQresultStatus)                                                                                                  \
    X(PQresultErrorField)                                                                                              \
    X(PQclear)                                                                                                         \
    X(PQntuples)                                                                                                       \
    X(PQnfields)                                                                                                       \
    X(PQfname)                                                                                                         \
    X(PQftype)                                                                                                         \
    X(PQgetvalue)                                                                                                      \
    X(PQgetlength)                                                                                                     \
    X(PQgetisnull)                                                                                                     \
    X(PQcmdTuples)                                                                                                     \
    X(PQnotifies)                                                                                                      \
    X(PQfreemem)                                                                                                       \
    X(PQgetCancel)                                                                                                     \
    X(PQcancel)                                                                                                        \
    X(PQfreeCancel)                                                                                                    \
    X(PQputCopyData)                                                                                                   \
    X(PQputCopyEnd)                                                                                                    \
    X(PQgetCopyData)                                                                                                   \
    X(PQtransactionStatus)                                                                                             \
    X(PQbackendPID)                                                                                                    \
    X(PQserverVersion)                                                                                                 \
    X(PQsetNoticeProcessor)                                                                                            \
    X(PQsetSingleRowMode)

#define LUAIO_PQ_SLOT(f) decltype(&::f) f##_ = nullptr;
LUAIO_PQ(LUAIO_PQ_SLOT)
#undef LUAIO_PQ_SLOT

// Type OIDs (pg_type.h) of the columns converted to Lua values other than strings.
enum : Oid {
    kBool = 16,
    kBytea = 17,
    kInt8 = 20,
    kInt2 = 21,
    kInt4 = 23,
    kOid = 26,
    kJson = 114,
    kFloat4 = 700,
    kFloat8 = 701,
    kJsonb = 3802,
};

// Values shared with lib/postgres.lua (core.setup): the NULL sentinel (json.null, a light
// userdata), json.decode and json.encode, and the metatable of postgres.bytea values.
void* g_null = nullptr;
int g_decode_ref = LUA_NOREF;
int g_encode_ref = LUA_NOREF;
int g_bytea_mt_ref = LUA_NOREF;

// What an operation waits for, and what its waking pushes.
enum class Op : uint8_t { None, Connect, Result, Notify, CopyOut, Flush };
enum class Want : uint8_t { Rows, Affected, Ok, CopyStart, CopyDone, Stream };

// The grace period after a cancel: a server that has not answered by then is taken as gone.
constexpr uint64_t kCancelGraceMs = 2000;
// The longest timeout accepted (ms): about 31 years.
constexpr double kMaxTimeoutMs = 1e12;

// A query whose statement is being prepared (its first run on this connection): what it sends
// once the statement exists. Its parameters are copies (the Lua values may be gone by then).
struct Pending {
    std::string sql, name;
    std::vector<std::string> values;
    std::vector<int> lengths, formats;
    std::vector<bool> null;
};

// Statements a connection keeps prepared, at most (then queries use unnamed statements).
constexpr size_t kMaxStatements = 100;
// The rows a fetch of a stream (db:rows) hands to Lua at most: what libpq has parsed already is
// taken in one call, so a task parks once per network read, not once per row, and memory stays
// bounded by this many rows beside libpq's input buffer.
constexpr size_t kStreamBatch = 256;

struct Conn : luaio::Handle<Conn> {
    static constexpr const char* kClass = "luaio.postgres.conn";
    static constexpr const char* kWhat = "postgres connection";

    PGconn* pg = nullptr;
    luaio::FdWatch watch;
    uv_timer_t timer; // the deadline of the running operation
    luaio::Waiter waiter;
    PGresult* result = nullptr; // what the running query has produced so far
    PGnotify* note = nullptr;   // the notification a wait has received
    uint64_t timeout_ms = 0;    // of the running operation
    uint64_t query_timeout_ms = 0;
    uint64_t connect_timeout_ms = 0;
    std::vector<std::string> keys, values; // the connection parameters, for a reconnect
    Op op = Op::None;
    Want want = Want::Rows;
    bool decode_json = true;
    bool cancelled = false; // a cancel was sent for the running query
    bool timed_out = false; // the running wait's deadline passed
    bool closed = false;
    bool prepare = true; // query() prepares each SQL text once (the connect option `prepare`)
    std::unique_ptr<Pending> pending;
    std::unordered_map<std::string, std::string> statements; // SQL text -> prepared statement name
    unsigned statement_count = 0;
    // A query whose rows are streamed (db:rows, libpq's single-row mode): its number while its
    // results are not all read (0: none), the rows a fetch has taken, and whether the end came.
    lua_Number stream = 0, stream_count = 0;
    uint64_t stream_timeout_ms = 0;
    std::vector<PGresult*> batch;
    bool stream_end = false;
    bool discard = false; // the fetch drops the rows (a loop left early: the rest is drained)

    void proxy_gone();
};

// ---------------------------------------------------------------- errors

// libpq's message without its trailing newline.
std::string pq_message(PGconn* pg) {
    std::string m = pg ? PQerrorMessage_(pg) : "connection closed";
    while (!m.empty() && (m.back() == '\n' || m.back() == ' ')) m.pop_back();
    return m;
}

void set_field(lua_State* L, const char* key, const char* value) {
    if (!value) return;
    lua_pushstring(L, value);
    lua_setfield(L, -2, key);
}

// The error table of a failed result (or of the connection when r is null): EPG with the
// server's sqlstate, message, detail and hint; ECONNRESET when the connection is lost.
void push_pg_error(lua_State* L, Conn* c, const PGresult* r) {
    const char* primary = r ? PQresultErrorField_(r, PG_DIAG_MESSAGE_PRIMARY) : nullptr;
    std::string msg = primary ? primary : pq_message(c->pg);
    bool lost = !c->pg || PQstatus_(c->pg) == CONNECTION_BAD;
    luaio::push_error(L, lost ? static_cast<int>(UV_ECONNRESET) : static_cast<int>(luaio::LUAIO_EPG), msg.c_str());
    if (!r) return;
    set_field(L, "sqlstate", PQresultErrorField_(r, PG_DIAG_SQLSTATE));
    set_field(L, "severity", PQresultErrorField_(r, PG_DIAG_SEVERITY_NONLOCALIZED));
    set_field(L, "detail", PQresultErrorField_(r, PG_DIAG_MESSAGE_DETAIL));
    set_field(L, "hint", PQresultErrorField_(r, PG_DIAG_MESSAGE_HINT));
}

// The socket error a failed connect's message names (libpq writes strerror's text, in the C
// locale luaio runs in: "Connection refused"), as libuv's code, so that a refused connection is
// ECONNREFUSED as for tcp, http and redis; 0 when the message names none of these.
int socket_error(const std::string& message) {
    for (int e : {ECONNREFUSED, ETIMEDOUT, EHOSTUNREACH, ENETUNREACH, ECONNRESET})
        if (message.find(std::strerror(e)) != std::string::npos) return -e;
    return 0;
}

// A query the server cancelled because its timeout passed.
void push_timeout_error(lua_State* L, uint64_t ms, const char* how) {
    char m[160];
    std::snprintf(m, sizeof m, "query timed out after %llu ms (%s)", static_cast<unsigned long long>(ms), how);
    luaio::push_error(L, UV_ETIMEDOUT, m);
}

// ---------------------------------------------------------------- rows

// The hex form of bytea ("\x4142") as bytes; any other text is returned as it is.
void push_bytea(lua_State* L, const char* v, int len) {
    if (len < 2 || v[0] != '\\' || v[1] != 'x') {
        lua_pushlstring(L, v, len);
        return;
    }
    auto hex = [](char ch) { return ch <= '9' ? ch - '0' : (ch | 0x20) - 'a' + 10; };
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int i = 2; i + 1 < len; i += 2) luaL_addchar(&b, static_cast<char>(hex(v[i]) << 4 | hex(v[i + 1])));
    luaL_pushresult(&b);
}

// json.decode of a json/jsonb value; the text itself if that fails (nesting deeper than cjson's limit).
void push_json(lua_State* L, const char* v, int len) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, g_decode_ref);
    lua_pushlstring(L, v, len);
    if (lua_pcall(L, 1, 1, 0) != 0 || lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_pushlstring(L, v, len);
    }
}

// One value of the text format as a Lua value, by the column's type.
void push_value(lua_State* L, const PGresult* r, int row, int col, Oid type, bool decode_json) {
    if (PQgetisnull_(r, row, col)) {
        lua_pushlightuserdata(L, g_null);
        return;
    }
    const char* v = PQgetvalue_(r, row, col);
    int len = PQgetlength_(r, row, col);
    switch (type) {
    case kBool:
        lua_pushboolean(L, v[0] == 't');
        return;
    case kInt2:
    case kInt4:
    case kOid:
        lua_pushnumber(L, static_cast<lua_Number>(std::strtoll(v, nullptr, 10)));
        return;
    case kInt8: {
        // A Lua number holds integers exactly up to 2^53; beyond, the exact decimal text.
        long long n = std::strtoll(v, nullptr, 10);
        if (n <= (1LL << 53) && n >= -(1LL << 53))
            lua_pushnumber(L, static_cast<lua_Number>(n));
        else
            lua_pushlstring(L, v, len);
        return;
    }
    case kFloat4:
    case kFloat8:
        lua_pushnumber(L, std::strtod(v, nullptr)); // also "Infinity", "-Infinity", "NaN"
        return;
    case kBytea:
        push_bytea(L, v, len);
        return;
    case kJson:
    case kJsonb:
        if (decode_json) {
            push_json(L, v, len);
            return;
        }
        break;
    default:
        break;
    }
    lua_pushlstring(L, v, len);
}

// The rows affected of a command ("INSERT 0 3" -> 3; SELECT -> the rows returned).
lua_Number affected(const PGresult* r) {
    const char* n = PQcmdTuples_(const_cast<PGresult*>(r));
    return n && *n ? std::strtod(n, nullptr) : 0;
}

// Scratch arrays reused by every result and every query (the loop is single-threaded).
std::vector<Oid>& g_col_types = *new std::vector<Oid>;

// Pushes the column names of r (once, not per row) and keeps their types in g_col_types.
int push_columns(lua_State* L, const PGresult* r) {
    int ncols = PQnfields_(r);
    luaL_checkstack(L, ncols + 8, "postgres: too many columns");
    g_col_types.resize(static_cast<size_t>(ncols));
    for (int c = 0; c < ncols; c++) {
        lua_pushstring(L, PQfname_(r, c));
        g_col_types[static_cast<size_t>(c)] = PQftype_(r, c);
    }
    return ncols;
}

// Row i of r as a table keyed by column name (the names at names + 0 ... on the stack).
void push_row(lua_State* L, const PGresult* r, int i, int names, int ncols, bool decode_json) {
    lua_createtable(L, 0, ncols);
    for (int c = 0; c < ncols; c++) {
        lua_pushvalue(L, names + c);
        push_value(L, r, i, c, g_col_types[static_cast<size_t>(c)], decode_json);
        lua_rawset(L, -3);
    }
}

// The rows of a result: an array of tables keyed by column name, with `affected`.
void push_rows(lua_State* L, const PGresult* r, bool decode_json) {
    int nrows = PQntuples_(r);
    lua_createtable(L, nrows, 1);
    int rows = lua_gettop(L);
    int ncols = push_columns(L, r);
    for (int i = 0; i < nrows; i++) {
        push_row(L, r, i, rows + 1, ncols, decode_json);
        lua_rawseti(L, rows, i + 1);
    }
    lua_settop(L, rows);
    lua_pushnumber(L, affected(r));
    lua_setfield(L, rows, "affected");
}

// ---------------------------------------------------------------- parameters

// The parameter arrays of one query, reused (the loop is single-threaded).
struct Params {
    std::vector<const char*> values;
    std::vector<int> lengths;
    std::vector<int> formats;
    std::vector<Oid> types;
    std::vector<std::string> text; // numbers' text
    int n = 0;
};
Params& g_params = *new Params;

// The text of a number as PostgreSQL reads it (integers without an exponent).
void number_text(lua_Number d, std::string& out) {
    char buf[40];
    if (std::isnan(d))
        out = "NaN";
    else if (std::isinf(d))
        out = d > 0 ? "Infinity" : "-Infinity";
    else if (d == std::floor(d) && std::fabs(d) < 9.2e18) {
        std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(d));
        out = buf;
    } else {
        std::snprintf(buf, sizeof buf, "%.17g", d);
        out = buf;
    }
}

bool is_bytea(lua_State* L, int idx) {
    if (!lua_getmetatable(L, idx)) return false;
    lua_rawgeti(L, LUA_REGISTRYINDEX, g_bytea_mt_ref);
    bool yes = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return yes;
}

// Converts the Lua values from `first` to the top into parameters. Strings go in the text
// format, except those that hold a NUL byte and postgres.bytea values (binary, as bytea);
// tables are sent as their JSON text. Values that must live until the query is sent (JSON
// texts, bytea strings) are pushed onto L above the arguments.
void build_params(lua_State* L, int first, const char* fname) {
    Params& p = g_params;
    int top = lua_gettop(L);
    int n = top < first ? 0 : top - first + 1;
    p.n = n;
    p.values.assign(static_cast<size_t>(n), nullptr);
    p.lengths.assign(static_cast<size_t>(n), 0);
    p.formats.assign(static_cast<size_t>(n), 0);
    p.types.assign(static_cast<size_t>(n), 0);
    if (p.text.size() < static_cast<size_t>(n)) p.text.resize(static_cast<size_t>(n));
    for (int i = 0; i < n; i++) {
        int idx = first + i;
        size_t k = static_cast<size_t>(i);
        switch (lua_type(L, idx)) {
        case LUA_TNIL:
            break;
        case LUA_TLIGHTUSERDATA:
            if (lua_touserdata(L, idx) != g_null)
                luaio::raise(L, fname, "cannot send a light userdata as parameter %d (postgres.null is NULL)", i + 1);
            break;
        case LUA_TBOOLEAN:
            p.values[k] = lua_toboolean(L, idx) ? "t" : "f";
            break;
        case LUA_TNUMBER:
            number_text(lua_tonumber(L, idx), p.text[k]);
            p.values[k] = p.text[k].c_str();
            break;
        case LUA_TSTRING: {
            size_t len;
            const char* s = lua_tolstring(L, idx, &len);
            p.values[k] = s;
            p.lengths[k] = static_cast<int>(len);
            if (std::memchr(s, 0, len)) p.formats[k] = 1; // binary: the text format ends at a NUL
            break;
        }
        case LUA_TTABLE:
            if (is_bytea(L, idx)) {
                lua_rawgeti(L, idx, 1);
                size_t len;
                const char* s = lua_tolstring(L, -1, &len);
                if (!s) luaio::raise(L, fname, "parameter %d: postgres.bytea holds no string", i + 1);
                p.values[k] = s;
                p.lengths[k] = static_cast<int>(len);
                p.formats[k] = 1;
                p.types[k] = kBytea;
                break; // the string stays on the stack until the query is sent
            }
            lua_rawgeti(L, LUA_REGISTRYINDEX, g_encode_ref);
            lua_pushvalue(L, idx);
            lua_call(L, 1, 2);
            if (!lua_isstring(L, -2)) {
                lua_getfield(L, -1, "message");
                luaio::raise(L, fname, "parameter %d: %s", i + 1, lua_tostring(L, -1));
            }
            lua_pop(L, 1);
            p.values[k] = lua_tostring(L, -1);
            break;
        default:
            luaio::raise(L, fname, "cannot send a %s as parameter %d", luaL_typename(L, idx), i + 1);
        }
    }
}

// ---------------------------------------------------------------- the operation engine

void on_io(void* ctx, int status, int events);
void on_timer(uv_timer_t* t);
void finish(Conn* c);
void fail_lost(Conn* c, int uverr, const char* message);
void close_conn(Conn* c);

// Watches the socket for `events` (0 stops).
void watch(Conn* c, int events) {
    int fd = c->pg ? PQsocket_(c->pg) : -1;
    if (fd < 0 || events == 0) {
        c->watch.stop();
        return;
    }
    if (int err = c->watch.watch(fd, events, on_io, c)) fail_lost(c, err, "cannot watch the connection's socket");
}

// libpq closes its socket when it finds the connection gone: the watch must go at once,
// before any other descriptor can take the number.
bool lost(Conn* c) {
    if (PQstatus_(c->pg) != CONNECTION_BAD) return false;
    c->watch.close();
    return true;
}

void start_deadline(Conn* c, uint64_t ms) {
    c->timeout_ms = ms;
    c->cancelled = c->timed_out = false;
    if (ms) luaio::start_timer(&c->timer, on_timer, ms);
}

void clear_batch(Conn* c) {
    for (PGresult* r : c->batch) PQclear_(r);
    c->batch.clear();
}

// Drops the server connection (its socket and libpq's state); the object stays, closed for queries.
void drop(Conn* c) {
    c->watch.close();
    if (c->result) PQclear_(c->result);
    c->result = nullptr;
    if (c->note) PQfreemem_(c->note);
    c->note = nullptr;
    c->pending.reset();
    c->statements.clear();
    clear_batch(c);
    c->stream = 0;
    if (c->pg) PQfinish_(c->pg);
    c->pg = nullptr;
}

// Ends the running operation with an error that is not the server's: the connection is gone.
// A connect that fails leaves no object behind (no proxy was made for it).
void fail_lost(Conn* c, int uverr, const char* message) {
    std::string m = message ? message : pq_message(c->pg);
    uv_timer_stop(&c->timer);
    drop(c);
    Op op = c->op;
    c->op = Op::None;
    luaio::wake(c->waiter, [&](lua_State* co) {
        lua_pushnil(co);
        luaio::push_error(co, uverr, m.c_str());
        return 2;
    });
    if (op == Op::Connect && !c->has_proxy()) close_conn(c); // a reconnect keeps its object
}

// The cancel request, on libuv's thread pool (PQcancel blocks). It owns its PGcancel, so the
// connection may go meanwhile.
struct Cancel {
    uv_work_t req;
    PGcancel* cancel;
};

void send_cancel(Conn* c) {
    auto* k = new Cancel;
    k->cancel = PQgetCancel_(c->pg);
    k->req.data = k;
    if (!k->cancel) {
        delete k;
        return;
    }
    int err = uv_queue_work(
        luaio::loop(), &k->req,
        [](uv_work_t* req) {
            auto* k = static_cast<Cancel*>(req->data);
            char buf[256];
            PQcancel_(k->cancel, buf, sizeof buf);
        },
        [](uv_work_t* req, int) {
            auto* k = static_cast<Cancel*>(req->data);
            PQfreeCancel_(k->cancel);
            delete k;
        });
    if (err) {
        PQfreeCancel_(k->cancel);
        delete k;
    }
}

void on_timer(uv_timer_t* t) {
    Conn* c = static_cast<Conn*>(t->data);
    switch (c->op) {
    case Op::Connect:
        fail_lost(c, UV_ETIMEDOUT, "connect timed out");
        return;
    case Op::Result:
    case Op::CopyOut:
    case Op::Flush:
        if (!c->cancelled) {
            c->cancelled = true;
            send_cancel(c);
            luaio::start_timer(&c->timer, on_timer, kCancelGraceMs);
            return;
        }
        {
            char m[160];
            std::snprintf(m, sizeof m,
                          "query timed out after %llu ms and the server did not answer its cancel; connection closed",
                          static_cast<unsigned long long>(c->timeout_ms));
            fail_lost(c, UV_ETIMEDOUT, m);
        }
        return;
    case Op::Notify:
        c->timed_out = true;
        finish(c);
        return;
    case Op::None:
        return;
    }
}

// Keeps what a query produced: the first error, else the last result.
void keep(Conn* c, PGresult* r) {
    ExecStatusType s = PQresultStatus_(r);
    bool error = s == PGRES_FATAL_ERROR || s == PGRES_BAD_RESPONSE || s == PGRES_NONFATAL_ERROR;
    if (c->result && !error) {
        ExecStatusType prev = PQresultStatus_(c->result);
        if (prev == PGRES_FATAL_ERROR || prev == PGRES_BAD_RESPONSE) {
            PQclear_(r);
            return;
        }
    }
    if (c->result) PQclear_(c->result);
    c->result = r;
}

// Takes the rows of a streamed query that libpq has parsed, up to kStreamBatch; true when the
// fetch can end: with rows, at the end of the results (an error is kept as for a whole result).
bool collect_stream(Conn* c) {
    while (!PQisBusy_(c->pg)) {
        PGresult* r = PQgetResult_(c->pg);
        if (!r) {
            c->stream_end = true;
            return true;
        }
        if (PQresultStatus_(r) == PGRES_SINGLE_TUPLE) {
            if (c->discard)
                PQclear_(r);
            else
                c->batch.push_back(r);
            if (c->batch.size() >= kStreamBatch) return true;
            continue;
        }
        keep(c, r); // the end of the rows (PGRES_TUPLES_OK, with the count), or an error
    }
    // After the end or an error, the fetch waits for the query to be complete (libpq's NULL).
    return !c->batch.empty() && !c->result;
}

// Takes the results that libpq has parsed; true when the query is complete (or in COPY).
bool collect(Conn* c) {
    if (c->want == Want::Stream) return collect_stream(c);
    while (!PQisBusy_(c->pg)) {
        PGresult* r = PQgetResult_(c->pg);
        if (!r) return true;
        ExecStatusType s = PQresultStatus_(r);
        keep(c, r);
        if (s == PGRES_COPY_IN || s == PGRES_COPY_OUT || s == PGRES_COPY_BOTH) return true;
    }
    return false;
}

// The rows a fetch took, as an array of row tables (the same conversion as query's); then, at
// the end of the stream, the rows affected. An error ends the stream: nil and the error.
int push_stream(lua_State* co, Conn* c, PGresult* r) {
    bool lost = !c->pg || PQstatus_(c->pg) == CONNECTION_BAD;
    ExecStatusType s = r ? PQresultStatus_(r) : PGRES_TUPLES_OK;
    if (lost || s == PGRES_FATAL_ERROR || s == PGRES_BAD_RESPONSE) return -1;
    int n = static_cast<int>(c->batch.size());
    lua_createtable(co, n, 0);
    int rows = lua_gettop(co);
    // Every row of a stream has the same columns: their names are pushed once per batch.
    int ncols = n ? push_columns(co, c->batch[0]) : 0;
    for (int i = 0; i < n; i++) {
        push_row(co, c->batch[static_cast<size_t>(i)], 0, rows + 1, ncols, c->decode_json);
        lua_rawseti(co, rows, i + 1);
    }
    lua_settop(co, rows);
    clear_batch(c);
    if (!c->stream_end) {
        c->result = r; // a result that came before the end (there is none in single-row mode)
        return 1;
    }
    c->stream = 0;
    lua_pushnumber(co, r ? affected(r) : 0);
    if (r) PQclear_(r);
    return 2;
}

// Pushes the outcome of a completed query onto co; returns the count.
int push_outcome(lua_State* co, Conn* c) {
    PGresult* r = c->result;
    c->result = nullptr;
    if (c->want == Want::Stream) {
        int k = push_stream(co, c, r);
        if (k >= 0) return k;
        // An error: the stream ends with it (what the fetches took before is dropped).
        clear_batch(c);
        c->stream = 0;
    }
    ExecStatusType s = r ? PQresultStatus_(r) : PGRES_FATAL_ERROR;
    int n;
    if (s == PGRES_FATAL_ERROR || s == PGRES_BAD_RESPONSE) {
        const char* state = r ? PQresultErrorField_(r, PG_DIAG_SQLSTATE) : nullptr;
        // A statement the user deallocated (DEALLOCATE ALL, DISCARD ALL: 26000), or whose result
        // type changed with the table (0A000): the statements are prepared again next time.
        if (state && (std::strcmp(state, "26000") == 0 || std::strcmp(state, "0A000") == 0)) c->statements.clear();
        lua_pushnil(co);
        if (c->cancelled && state && std::strcmp(state, "57014") == 0) {
            push_timeout_error(co, c->timeout_ms, "cancelled on the server");
            set_field(co, "sqlstate", state);
            // A cancel request reaches the backend asynchronously (the postmaster signals it), so
            // a second one, or a late one, could cancel the next statement on this session: the
            // connection is closed here, before the task resumes, and the next call connects anew.
            drop(c);
        } else
            push_pg_error(co, c, r);
        n = 2;
    } else if (c->want == Want::CopyStart) {
        if (s == PGRES_COPY_IN || s == PGRES_COPY_OUT) {
            lua_pushstring(co, s == PGRES_COPY_IN ? "in" : "out");
            n = 1;
        } else {
            lua_pushnil(co);
            luaio::push_error(co, luaio::LUAIO_EPG, "the statement is not a COPY FROM STDIN or COPY TO STDOUT");
            n = 2;
        }
    } else if (c->want == Want::Rows) {
        push_rows(co, r, c->decode_json);
        n = 1;
    } else if (c->want == Want::Affected) {
        lua_pushnumber(co, affected(r));
        n = 1;
    } else if (c->want == Want::CopyDone) {
        lua_pushboolean(co, 0);
        lua_pushnumber(co, affected(r));
        n = 2;
    } else {
        lua_pushboolean(co, 1);
        n = 1;
    }
    if (r) PQclear_(r);
    return n;
}

// A notification as {channel, payload, pid}; frees it.
void push_note(lua_State* L, PGnotify* n) {
    lua_createtable(L, 0, 3);
    set_field(L, "channel", n->relname);
    set_field(L, "payload", n->extra);
    lua_pushnumber(L, n->be_pid);
    lua_setfield(L, -2, "pid");
    PQfreemem_(n);
}

// Once the statement of a pending query is prepared, sends the query itself and goes on
// waiting: true. False when the prepare failed (its error goes to the task) or the send did.
bool run_pending(Conn* c) {
    std::unique_ptr<Pending> p = std::move(c->pending);
    if (!c->result || PQresultStatus_(c->result) != PGRES_COMMAND_OK || lost(c)) return false;
    PQclear_(c->result);
    c->result = nullptr;
    size_t n = p->values.size();
    std::vector<const char*> values(n);
    for (size_t i = 0; i < n; i++) values[i] = p->null[i] ? nullptr : p->values[i].c_str();
    if (!PQsendQueryPrepared_(c->pg, p->name.c_str(), static_cast<int>(n), values.data(), p->lengths.data(),
                              p->formats.data(), 0))
        return false;
    if (c->want == Want::Stream) {
        PQsetSingleRowMode_(c->pg);
        c->stream_end = false;
    }
    c->statements.emplace(std::move(p->sql), std::move(p->name));
    int f = PQflush_(c->pg);
    watch(c, f ? UV_READABLE | UV_WRITABLE : UV_READABLE);
    return true;
}

// Ends the running operation and wakes its task with the outcome.
void finish(Conn* c) {
    if (c->pending && c->op == Op::Result && run_pending(c)) return;
    uv_timer_stop(&c->timer);
    watch(c, 0);
    Op op = c->op;
    c->op = Op::None;
    luaio::wake(c->waiter, [&](lua_State* co) {
        if (op == Op::Connect) {
            if (c->has_proxy())
                lua_pushboolean(co, 1); // a reconnect (conn:_reset)
            else
                c->push_proxy(co);
            return 1;
        }
        if (op == Op::Notify) {
            PGnotify* n = c->note;
            c->note = nullptr;
            if (!n) {
                lua_pushnil(co);
                luaio::push_error(co, UV_ETIMEDOUT, "no notification came in time");
                return 2;
            }
            push_note(co, n);
            return 1;
        }
        if (op == Op::Flush || op == Op::CopyOut) {
            lua_pushboolean(co, 1);
            return 1;
        }
        return push_outcome(co, c);
    });
}

void step_connect(Conn* c) {
    // libpq may close its socket and open another (the next address, a retry without SSL),
    // possibly under the same number: the watch is made anew for each step.
    c->watch.close();
    switch (PQconnectPoll_(c->pg)) {
    case PGRES_POLLING_READING:
        watch(c, UV_READABLE);
        return;
    case PGRES_POLLING_WRITING:
        watch(c, UV_WRITABLE);
        return;
    case PGRES_POLLING_OK:
        PQsetnonblocking_(c->pg, 1);
        finish(c);
        return;
    default: {
        int uverr = socket_error(pq_message(c->pg));
        fail_lost(c, uverr ? uverr : static_cast<int>(luaio::LUAIO_EPG), nullptr);
        return;
    }
    }
}

// The running query has something to read or its output may flush.
void step_result(Conn* c, int events) {
    if (events & UV_READABLE) {
        if (!PQconsumeInput_(c->pg) && lost(c)) {
            collect(c);
            finish(c);
            return;
        }
    }
    int f = PQflush_(c->pg);
    if (f < 0 || lost(c)) {
        collect(c);
        finish(c);
        return;
    }
    if (collect(c) || lost(c)) {
        finish(c);
        return;
    }
    watch(c, f ? UV_READABLE | UV_WRITABLE : UV_READABLE);
}

void on_io(void* ctx, int status, int events) {
    Conn* c = static_cast<Conn*>(ctx);

    if (status < 0 && c->op != Op::Connect) {
        // The socket has an error (libuv saw POLLERR: a reset by the peer) and libuv has stopped
        // the watch: the connection is gone. libpq reads what it still can (the server's FATAL
        // message, the end) for the error; waiting on would wait for ever.
        PQconsumeInput_(c->pg);
        bool gone = lost(c);
        if (gone && c->op == Op::Result) {
            collect(c);
            finish(c);
            return;
        }
        fail_lost(c, UV_ECONNRESET, gone ? nullptr : "the connection to the server was lost (socket error)");
        return;
    }
    switch (c->op) {
    case Op::Connect: // libpq finds out what a socket error is (and may try the next address)
        step_connect(c);
        return;
    case Op::Result:
        step_result(c, events);
        return;
    case Op::Notify:
        if (!PQconsumeInput_(c->pg) && lost(c)) {
            fail_lost(c, UV_ECONNRESET, nullptr);
            return;
        }
        if ((c->note = PQnotifies_(c->pg))) finish(c);
        return;
    case Op::CopyOut:
        if (!PQconsumeInput_(c->pg) && lost(c)) {
            fail_lost(c, UV_ECONNRESET, nullptr);
            return;
        }
        finish(c); // copy_get reads again
        return;
    case Op::Flush: {
        if (events & UV_READABLE) PQconsumeInput_(c->pg);
        int f = PQflush_(c->pg);
        if (f < 0 || lost(c)) {
            fail_lost(c, UV_ECONNRESET, nullptr);
            return;
        }
        if (f == 0) finish(c);
        return;
    }
    case Op::None:
        watch(c, 0);
        return;
    }
}

// ---------------------------------------------------------------- close

void close_conn(Conn* c) {
    if (c->closed) return;
    c->closed = true;
    c->detach_proxy();
    uv_timer_stop(&c->timer);
    drop(c);
    if (c->op != Op::None) {
        c->op = Op::None;
        luaio::wake(c->waiter, [](lua_State* co) {
            lua_pushnil(co);
            luaio::push_error(co, UV_ECANCELED, "connection closed");
            return 2;
        });
    }
    uv_close(reinterpret_cast<uv_handle_t*>(&c->timer), [](uv_handle_t* h) { delete static_cast<Conn*>(h->data); });
}

void Conn::proxy_gone() {
    close_conn(this);
}

// ---------------------------------------------------------------- bindings

// The connection at 1, open and free for an operation; returns nullptr after pushing
// nil and the error when it cannot take one (lost, or busy with another task's).
Conn* ready_conn(lua_State* L, const char* fname) {
    Conn* c = Conn::check(L, 1, fname);
    luaio::check_can_wait(L, fname);
    if (c->op != Op::None) {
        lua_pushnil(L);
        luaio::push_error(L, UV_EBUSY, "the connection is busy with another task's query");
        return nullptr;
    }
    if (c->stream) {
        // The rows of a streamed query are not all read (its loop was left): lib/postgres.lua
        // drains them (the fetch with discard) and calls again.
        lua_pushnil(L);
        luaio::push_error(L, UV_EBUSY, "the connection is still reading the rows of db:rows");
        lua_pushnumber(L, c->stream);
        lua_setfield(L, -2, "streaming");
        return nullptr;
    }
    if (!c->pg || PQstatus_(c->pg) == CONNECTION_BAD) {
        lua_pushnil(L);
        luaio::push_error(L, UV_ECONNRESET, "the connection to the server was lost");
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, "lost"); // lost before this call: lib/postgres.lua reconnects and calls again
        return nullptr;
    }
    return c;
}

uint64_t check_timeout(lua_State* L, int idx, const char* fname) {
    if (lua_isnoneornil(L, idx)) return 0;
    lua_Number ms = luaio::check_number(L, idx, fname);
    if (!(ms >= 0) || ms > kMaxTimeoutMs) luaio::raise(L, fname, "timeout must be between 0 and 1e12 ms");
    return static_cast<uint64_t>(ms);
}

// The SQL text of argument 2 (a string, or {sql, timeout = ms}; table_timeout reads the timeout first).
const char* check_sql(lua_State* L, const char* fname) {
    if (lua_type(L, 2) == LUA_TTABLE) {
        lua_rawgeti(L, 2, 1);
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            lua_getfield(L, 2, "sql");
        }
        if (lua_type(L, -1) != LUA_TSTRING)
            luaio::raise(L, fname, "expected the SQL text as the query table's first element");
        lua_replace(L, 2);
        return lua_tostring(L, 2);
    }
    if (lua_type(L, 2) != LUA_TSTRING)
        luaio::raise(L, fname, "expected the SQL text (a string) as argument 1, got %s", luaL_typename(L, 2));
    return lua_tostring(L, 2);
}

// Sends what PQsend* queued and parks until the query's results are in.
int wait_result(lua_State* L, Conn* c, Want want, uint64_t timeout) {
    c->op = Op::Result;
    c->want = want;
    int f = PQflush_(c->pg);
    if (f < 0 || lost(c)) {
        // The server had gone: libpq found out while sending (and closed its socket), so
        // there is nothing to wait for. The outcome is the error libpq recorded.
        collect(c);
        c->op = Op::None;
        c->pending.reset();
        return push_outcome(L, c);
    }
    start_deadline(c, timeout);
    watch(c, f ? UV_READABLE | UV_WRITABLE : UV_READABLE);
    return luaio::park(L, c->waiter);
}

int send_failed(lua_State* L, Conn* c) {
    lua_pushnil(L);
    push_pg_error(L, c, nullptr);
    return 2;
}

// The timeout of a query table at 2 (before check_sql replaces it).
uint64_t table_timeout(lua_State* L, Conn* c, const char* fname) {
    if (lua_type(L, 2) != LUA_TTABLE) return c->query_timeout_ms;
    lua_getfield(L, 2, "timeout");
    uint64_t t = lua_isnil(L, -1) ? c->query_timeout_ms : check_timeout(L, -1, fname);
    lua_pop(L, 1);
    return t;
}

// Sends a query with the parameters in g_params through a prepared statement: the one made for
// this SQL text on an earlier run, or a new one (prepared first; run_pending sends the query).
// Once kMaxStatements are kept, an unnamed statement. Returns what PQsend* returned.
int send_prepared(Conn* c, const char* sql, size_t sql_len) {
    Params& p = g_params;
    std::string key(sql, sql_len);
    auto it = c->statements.find(key);
    if (it != c->statements.end())
        return PQsendQueryPrepared_(c->pg, it->second.c_str(), p.n, p.values.data(), p.lengths.data(), p.formats.data(),
                                    0);
    if (c->statements.size() >= kMaxStatements)
        return PQsendQueryParams_(c->pg, sql, p.n, p.types.data(), p.values.data(), p.lengths.data(), p.formats.data(),
                                  0);
    auto q = std::make_unique<Pending>();
    q->name = "luaio_q" + std::to_string(++c->statement_count);
    for (int i = 0; i < p.n; i++) {
        size_t k = static_cast<size_t>(i);
        const char* v = p.values[k];
        q->null.push_back(v == nullptr);
        q->values.emplace_back(v ? (p.formats[k] ? std::string(v, static_cast<size_t>(p.lengths[k])) : std::string(v))
                                 : std::string());
    }
    q->lengths = p.lengths;
    q->formats = p.formats;
    if (!PQsendPrepare_(c->pg, q->name.c_str(), sql, p.n, p.types.data())) return 0;
    q->sql = std::move(key);
    c->pending = std::move(q);
    return 1;
}

// DISCARD ALL and DEALLOCATE drop prepared statements: the kept ones are made again.
bool drops_statements(const char* sql) {
    while (*sql == ' ' || *sql == '\n' || *sql == '\t' || *sql == '\r') sql++;
    return strncasecmp(sql, "discard", 7) == 0 || strncasecmp(sql, "deallocate", 10) == 0;
}

int query(lua_State* L, const char* fname, Want want) {
    Conn* c = ready_conn(L, fname);
    if (!c) return 2;
    uint64_t timeout = table_timeout(L, c, fname);
    const char* sql = check_sql(L, fname);
    int sent;
    if (want == Want::Affected && lua_gettop(L) == 2) {
        sent = PQsendQuery_(c->pg, sql); // the simple protocol: several statements at once
        if (drops_statements(sql)) c->statements.clear();
    } else {
        build_params(L, 3, fname);
        Params& p = g_params;
        if (c->prepare)
            sent = send_prepared(c, sql, lua_objlen(L, 2));
        else
            sent = PQsendQueryParams_(c->pg, sql, p.n, p.types.data(), p.values.data(), p.lengths.data(),
                                      p.formats.data(), 0);
    }
    if (!sent) return send_failed(L, c);
    return wait_result(L, c, want, timeout);
}

int l_query(lua_State* L) {
    return query(L, "query", Want::Rows);
}

// conn:_rows(sql | {sql, timeout = ms}, ...): sends a query whose rows come one at a time
// (libpq's single-row mode) and returns the stream's number for _fetch; nothing is awaited yet.
int l_rows(lua_State* L) {
    const char* fname = "rows";
    Conn* c = ready_conn(L, fname);
    if (!c) return 2;
    uint64_t timeout = table_timeout(L, c, fname);
    const char* sql = check_sql(L, fname);
    build_params(L, 3, fname);
    Params& p = g_params;
    c->want = Want::Stream;
    c->stream_end = false;
    int sent;
    if (c->prepare)
        sent = send_prepared(c, sql, lua_objlen(L, 2));
    else
        sent =
            PQsendQueryParams_(c->pg, sql, p.n, p.types.data(), p.values.data(), p.lengths.data(), p.formats.data(), 0);
    if (!sent) return send_failed(L, c);
    // With a statement to prepare first, single-row mode is set when the query itself goes
    // (run_pending); it applies to the query just sent.
    if (!c->pending) PQsetSingleRowMode_(c->pg);
    c->stream = ++c->stream_count;
    c->stream_timeout_ms = timeout;
    lua_pushnumber(L, c->stream);
    return 1;
}

// conn:_fetch(stream, discard): the next rows of the stream: an array of rows (more follow), or
// the last ones and the rows affected, or nil and an error. With discard, the rows are read
// and dropped until the end (the array is empty). Parks only when libpq has no row parsed.
int l_fetch(lua_State* L) {
    const char* fname = "rows";
    Conn* c = Conn::check(L, 1, fname);
    lua_Number id = luaio::check_number(L, 2, fname);
    luaio::check_can_wait(L, fname);
    if (c->op != Op::None) {
        lua_pushnil(L);
        luaio::push_error(L, UV_EBUSY, "the connection is busy with another task's query");
        return 2;
    }
    if (c->stream != id)
        luaio::raise(L, fname, "the loop's rows were dropped: its connection ran another query before the loop ended");
    c->want = Want::Stream;
    c->discard = lua_toboolean(L, 3);
    c->op = Op::Result;
    int f = c->pg ? PQflush_(c->pg) : -1;
    if (f < 0 || lost(c) || !PQconsumeInput_(c->pg)) lost(c);
    bool ready = !c->pg || PQstatus_(c->pg) == CONNECTION_BAD || collect(c);
    if (ready && c->pending && run_pending(c)) ready = false;
    if (ready) {
        c->op = Op::None;
        c->pending.reset();
        return push_outcome(L, c);
    }
    start_deadline(c, c->stream_timeout_ms);
    watch(c, f ? UV_READABLE | UV_WRITABLE : UV_READABLE);
    return luaio::park(L, c->waiter);
}
int l_exec(lua_State* L) {
    return query(L, "exec", Want::Affected);
}

// conn:prepare(name, sql)
int l_prepare(lua_State* L) {
    Conn* c = ready_conn(L, "prepare");
    if (!c) return 2;
    const char* name = luaio::check_string(L, 2, "prepare");
    const char* sql = luaio::check_string(L, 3, "prepare");
    if (!PQsendPrepare_(c->pg, name, sql, 0, nullptr)) return send_failed(L, c);
    return wait_result(L, c, Want::Ok, c->query_timeout_ms);
}

// conn:execute(name, timeout_ms or nil, ...): rows of a prepared statement.
int l_execute(lua_State* L) {
    Conn* c = ready_conn(L, "execute");
    if (!c) return 2;
    const char* name = luaio::check_string(L, 2, "execute");
    uint64_t timeout = lua_isnil(L, 3) ? c->query_timeout_ms : check_timeout(L, 3, "execute");
    build_params(L, 4, "execute");
    Params& p = g_params;
    if (!PQsendQueryPrepared_(c->pg, name, p.n, p.values.data(), p.lengths.data(), p.formats.data(), 0))
        return send_failed(L, c);
    return wait_result(L, c, Want::Rows, timeout);
}

// conn:wait([timeout_ms]): the next notification (LISTEN), or nil and ETIMEDOUT.
int l_wait(lua_State* L) {
    Conn* c = ready_conn(L, "wait");
    if (!c) return 2;
    uint64_t timeout = check_timeout(L, 2, "wait");
    if (!PQconsumeInput_(c->pg) && lost(c)) return send_failed(L, c);
    c->op = Op::Notify;
    if (PGnotify* n = PQnotifies_(c->pg)) {
        c->op = Op::None;
        push_note(L, n);
        return 1;
    }
    start_deadline(c, timeout);
    watch(c, UV_READABLE);
    return luaio::park(L, c->waiter);
}

// conn:copy_start(sql): "in" or "out" once the server is in COPY mode.
int l_copy_start(lua_State* L) {
    Conn* c = ready_conn(L, "copy");
    if (!c) return 2;
    uint64_t timeout = table_timeout(L, c, "copy");
    const char* sql = check_sql(L, "copy");
    if (!PQsendQueryParams_(c->pg, sql, 0, nullptr, nullptr, nullptr, nullptr, 0)) return send_failed(L, c);
    return wait_result(L, c, Want::CopyStart, timeout);
}

// conn:copy_put(data): queues data; waits only while libpq's output does not flush.
int l_copy_put(lua_State* L) {
    Conn* c = ready_conn(L, "copy");
    if (!c) return 2;
    size_t len;
    const char* data = luaio::check_string(L, 2, "copy", &len);
    if (PQputCopyData_(c->pg, data, static_cast<int>(len)) < 0) return send_failed(L, c);
    int f = PQflush_(c->pg);
    if (f < 0) return send_failed(L, c);
    if (f == 0) {
        lua_pushboolean(L, 1);
        return 1;
    }
    c->op = Op::Flush;
    start_deadline(c, c->query_timeout_ms);
    watch(c, UV_READABLE | UV_WRITABLE);
    return luaio::park(L, c->waiter);
}

// conn:copy_end([failure]): ends COPY FROM STDIN (failure: abort it with that message);
// returns the rows copied.
int l_copy_end(lua_State* L) {
    Conn* c = ready_conn(L, "copy");
    if (!c) return 2;
    const char* failure = lua_isnoneornil(L, 2) ? nullptr : luaio::check_string(L, 2, "copy");
    if (PQputCopyEnd_(c->pg, failure) < 0) return send_failed(L, c);
    return wait_result(L, c, Want::Affected, c->query_timeout_ms);
}

// conn:copy_get(): the next chunk of COPY TO STDOUT, or false and the rows copied at its end.
int l_copy_get(lua_State* L) {
    Conn* c = ready_conn(L, "copy");
    if (!c) return 2;
    char* buf = nullptr;
    int n = PQgetCopyData_(c->pg, &buf, 1);
    if (n > 0) {
        lua_pushlstring(L, buf, static_cast<size_t>(n));
        PQfreemem_(buf);
        return 1;
    }
    if (n == 0) {
        c->op = Op::CopyOut;
        start_deadline(c, c->query_timeout_ms);
        watch(c, UV_READABLE);
        // Woken with nothing: the Lua side calls again (lib/postgres.lua loops).
        return luaio::park(L, c->waiter);
    }
    if (n == -2) return send_failed(L, c);
    // The end of the data: the COPY's own result follows.
    c->op = Op::Result;
    c->want = Want::CopyDone;
    if (collect(c)) {
        c->op = Op::None;
        return push_outcome(L, c);
    }
    c->op = Op::None;
    return wait_result(L, c, Want::CopyDone, c->query_timeout_ms);
}

int l_close(lua_State* L) {
    if (Conn* c = Conn::check_or_closed(L, 1, "close")) close_conn(c);
    return 0;
}

// conn:reusable(): open, idle (no transaction, no operation), and still connected as far as a
// read of what the server may have sent says (a server that closed it is found here).
int l_reusable(lua_State* L) {
    Conn* c = Conn::check_or_closed(L, 1, "reusable");
    bool ok = c && c->pg && c->op == Op::None && PQstatus_(c->pg) == CONNECTION_OK &&
              PQtransactionStatus_(c->pg) == PQTRANS_IDLE;
    if (ok && !PQconsumeInput_(c->pg)) ok = false;
    if (c && c->pg && lost(c)) ok = false;
    lua_pushboolean(L, ok);
    return 1;
}

// conn:status(): "idle", "transaction", "failed" (a transaction that failed), "busy", "lost" or "closed".
int l_status(lua_State* L) {
    Conn* c = Conn::check_or_closed(L, 1, "status");
    const char* s = "closed";
    if (c && c->pg) {
        if (PQstatus_(c->pg) == CONNECTION_BAD)
            s = "lost";
        else if (c->op != Op::None)
            s = "busy";
        else
            switch (PQtransactionStatus_(c->pg)) {
            case PQTRANS_IDLE:
                s = "idle";
                break;
            case PQTRANS_INTRANS:
                s = "transaction";
                break;
            case PQTRANS_INERROR:
                s = "failed";
                break;
            default:
                s = "busy";
                break;
            }
    } else if (c)
        s = "lost";
    lua_pushstring(L, s);
    return 1;
}

// conn:unref() / conn:ref(): an idle pooled connection does not keep the process alive.
int set_ref(lua_State* L, bool ref) {
    if (Conn* c = Conn::check_or_closed(L, 1, ref ? "ref" : "unref")) {
        c->watch.set_ref(ref);
        auto* h = reinterpret_cast<uv_handle_t*>(&c->timer);
        ref ? uv_ref(h) : uv_unref(h);
    }
    return 0;
}
int l_unref(lua_State* L) {
    return set_ref(L, false);
}
int l_ref(lua_State* L) {
    return set_ref(L, true);
}

// conn:_streaming(): the number of the stream whose rows are not all read, or nil.
int l_streaming(lua_State* L) {
    Conn* c = Conn::check_or_closed(L, 1, "streaming");
    if (c && c->stream)
        lua_pushnumber(L, c->stream);
    else
        lua_pushnil(L);
    return 1;
}

int l_info(lua_State* L) {
    Conn* c = Conn::check(L, 1, "info");
    lua_createtable(L, 0, 2);
    if (c->pg) {
        lua_pushnumber(L, PQbackendPID_(c->pg));
        lua_setfield(L, -2, "pid");
        lua_pushnumber(L, PQserverVersion_(c->pg));
        lua_setfield(L, -2, "serverVersion");
    }
    return 1;
}

// core.connect(keywords, values, connect_ms, query_ms, decode_json, prepare)
// Starts connecting with the saved parameters; false (and the message) when libpq refuses at once.
bool start_connect(Conn* c, std::string* err) {
    size_t n = c->keys.size();
    std::vector<const char*> keys(n + 1, nullptr), values(n + 1, nullptr);
    for (size_t i = 0; i < n; i++) {
        keys[i] = c->keys[i].c_str();
        values[i] = c->values[i].c_str();
    }
    c->pg = PQconnectStartParams_(keys.data(), values.data(), 1);
    if (!c->pg || PQstatus_(c->pg) == CONNECTION_BAD) {
        *err = c->pg ? pq_message(c->pg) : "out of memory";
        drop(c);
        return false;
    }
    // libpq prints the server's notices (NOTICE, WARNING: "relation already exists, skipping")
    // on stderr by default; a library must not write to the application's stderr.
    PQsetNoticeProcessor_(
        c->pg, [](void*, const char*) {}, nullptr);
    c->op = Op::Connect;
    start_deadline(c, c->connect_timeout_ms);
    // Before the first PQconnectPoll, libpq waits for the socket to be writable.
    watch(c, UV_WRITABLE);
    return true;
}

int l_connect(lua_State* L) {
    const char* fname = "postgres.connect";
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checktype(L, 2, LUA_TTABLE);
    uint64_t connect_ms = check_timeout(L, 3, fname);
    uint64_t query_ms = check_timeout(L, 4, fname);
    luaio::check_can_wait(L, fname);
    auto* c = new Conn;
    uv_timer_init(luaio::loop(), &c->timer);
    c->timer.data = c;
    int n = static_cast<int>(lua_objlen(L, 1));
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, 1, i + 1);
        lua_rawgeti(L, 2, i + 1);
        const char* k = lua_tostring(L, -2);
        const char* v = lua_tostring(L, -1);
        if (k && v) {
            c->keys.emplace_back(k);
            c->values.emplace_back(v);
        }
        lua_pop(L, 2);
    }
    c->connect_timeout_ms = connect_ms;
    c->query_timeout_ms = query_ms;
    c->decode_json = lua_toboolean(L, 5);
    c->prepare = lua_toboolean(L, 6);
    std::string err;
    if (!start_connect(c, &err)) {
        close_conn(c);
        lua_pushnil(L);
        luaio::push_error(L, luaio::LUAIO_EPG, err.c_str());
        return 2;
    }
    return luaio::park(L, c->waiter);
}

// conn:_reset(): connects again with the same parameters (a new session: no prepared statement,
// no LISTEN), after the connection was lost; true or nil, err.
int l_reset(lua_State* L) {
    Conn* c = Conn::check(L, 1, "reset");
    luaio::check_can_wait(L, "reset");
    if (c->op != Op::None) {
        lua_pushnil(L);
        luaio::push_error(L, UV_EBUSY, "the connection is busy with another task's query");
        return 2;
    }
    drop(c);
    std::string err;
    if (!start_connect(c, &err)) {
        lua_pushnil(L);
        luaio::push_error(L, luaio::LUAIO_EPG, err.c_str());
        return 2;
    }
    return luaio::park(L, c->waiter);
}

// A connection whose task is parked in connect has no proxy: the waiter's task owns it.

// core.setup(null, decode, encode, bytea_mt)
int l_setup(lua_State* L) {
    luaL_checktype(L, 1, LUA_TLIGHTUSERDATA);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    luaL_checktype(L, 3, LUA_TFUNCTION);
    luaL_checktype(L, 4, LUA_TTABLE);
    g_null = lua_touserdata(L, 1);
    for (int* ref : {&g_decode_ref, &g_encode_ref, &g_bytea_mt_ref}) luaL_unref(L, LUA_REGISTRYINDEX, *ref);
    lua_pushvalue(L, 2);
    g_decode_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushvalue(L, 3);
    g_encode_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushvalue(L, 4);
    g_bytea_mt_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

} // namespace

extern "C" int luaopen_luaio_postgres(lua_State* L) {
    static const luaio::Symbol symbols[] = {
#define LUAIO_PQ_SYMBOL(f) {#f, reinterpret_cast<void**>(&f##_)},
        LUAIO_PQ(LUAIO_PQ_SYMBOL)
#undef LUAIO_PQ_SYMBOL
    };
    std::string err;
    if (!luaio::load_library("libpq.so.5", "libpq5", symbols, sizeof symbols / sizeof symbols[0], &err))
        return luaL_error(L, "postgres: %s", err.c_str());
    const luaL_Reg methods[] = {{"query", l_query},
                                {"exec", l_exec},
                                {"_prepare", l_prepare},
                                {"_execute", l_execute},
                                {"wait", l_wait},
                                {"_copy_start", l_copy_start},
                                {"_copy_put", l_copy_put},
                                {"_copy_end", l_copy_end},
                                {"_copy_get", l_copy_get},
                                {"close", l_close},
                                {"reusable", l_reusable},
                                {"status", l_status},
                                {"info", l_info},
                                {"unref", l_unref},
                                {"_reset", l_reset},
                                {"ref", l_ref},
                                {"_rows", l_rows},
                                {"_fetch", l_fetch},
                                {"_streaming", l_streaming},
                                {"__gc", Conn::l_gc},
                                {nullptr, nullptr}};
    luaio::new_class(L, Conn::kClass, methods);
    lua_getfield(L, -1, "__index");
    const luaL_Reg funcs[] = {{"connect", l_connect}, {"setup", l_setup}, {nullptr, nullptr}};
    luaL_newlib(L, funcs);
    lua_insert(L, -2);
    lua_setfield(L, -2, "methods"); // lib/postgres.lua adds its Lua methods there
    return 1;
}
