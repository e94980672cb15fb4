// luaio.mysql: MySQL/MariaDB connections on MariaDB Connector/C's non-blocking API. The public
// module is lib/mysql.lua; this is its C++ core (docs/mysql.md).
//
//   core.setKiller(fn)      -- fn(host, port, user, password, thread_id, tls) kills a timed-out query
//   local c, err = core.connect(host, port, user, password, database, charset, timeout, queryTimeout)
//   local rows, err = c:_query(sql, timeout_ms | nil, ...)   -- parameters: a prepared statement
//   local id, err = c:_rows(sql, timeout_ms | nil, ...)       -- runs it, leaves its rows unread
//   local rows, last = c:_fetch(id, discard)                 -- the next batch (db:rows)
//   c:reconnect()  c:ping([timeout_ms])  c:usable()  c:close()  c:threadId()  c:ref()  c:unref()
//
// Every call of the connector is a `_start` that returns a wait status (MYSQL_WAIT_READ/WRITE/
// TIMEOUT) or 0 when done, and then a `_cont` per event until it returns 0. An operation (connect,
// query, ping) is a sequence of such steps (query, store the result, next result ...) that run()
// drives: the descriptor's events come from an FdWatch, the connector's own timeouts from a timer,
// and the operation's deadline from a second timer. A deadline aborts the step the way the
// connector's own timeout would (the step is continued with MYSQL_WAIT_TIMEOUT, so it fails and
// unwinds), after asking Lua (`killer`) to kill the query on the server from a second connection.
//
// libmariadb is loaded when the module is first required (runtime/dynlib.h): linked, it costs
// every luaio process start-up time (docs/mysql.md has the numbers).
#include "runtime/dynlib.h"
#include "runtime/fdwatch.h"
#include "runtime/luaio.h"
#include "runtime/object.h"

#include <mariadb/errmsg.h>
#include <mariadb/mysql.h>

#include <fcntl.h>
#include <sys/socket.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cerrno>
#include <cstring>
#include <iterator>
#include <string>
#include <unordered_map>
#include <vector>

namespace {

// clang-format off
#define LUAIO_MYSQL(X) \
    X(mysql_init) X(mysql_options) X(mysql_close) X(mysql_errno) X(mysql_error) X(mysql_sqlstate)                    \
    X(mysql_get_socket) X(mysql_get_timeout_value_ms) X(mysql_thread_id) X(mysql_real_connect_start)                 \
    X(mysql_real_connect_cont) X(mysql_real_query_start) X(mysql_real_query_cont) X(mysql_store_result_start)        \
    X(mysql_store_result_cont) X(mysql_next_result_start) X(mysql_next_result_cont) X(mysql_more_results)            \
    X(mysql_field_count) X(mysql_affected_rows) X(mysql_insert_id) X(mysql_warning_count) X(mysql_num_fields)        \
    X(mysql_fetch_fields) X(mysql_fetch_row) X(mysql_fetch_lengths) X(mysql_free_result) X(mysql_ping_start)         \
    X(mysql_ping_cont) X(mysql_stmt_init) X(mysql_stmt_prepare_start) X(mysql_stmt_prepare_cont)                     \
    X(mysql_stmt_param_count) X(mysql_stmt_bind_param) X(mysql_stmt_execute_start) X(mysql_stmt_execute_cont)        \
    X(mysql_stmt_attr_set) X(mysql_stmt_store_result_start) X(mysql_stmt_store_result_cont)                          \
    X(mysql_stmt_result_metadata) X(mysql_stmt_field_count) X(mysql_stmt_bind_result) X(mysql_stmt_fetch)            \
    X(mysql_stmt_fetch_column) X(mysql_stmt_next_result_start) X(mysql_stmt_next_result_cont)                        \
    X(mysql_stmt_more_results) X(mysql_stmt_affected_rows) X(mysql_stmt_insert_id) X(mysql_stmt_warning_count)       \
    X(mysql_stmt_errno) X(mysql_stmt_error) X(mysql_stmt_sqlstate) X(mysql_stmt_close) X(mysql_stmt_free_result)     \
    X(mysql_ssl_set) X(mysql_get_ssl_cipher) X(mysql_use_result) X(mysql_fetch_row_start) X(mysql_fetch_row_cont)  \
    X(mysql_stmt_fetch_start) X(mysql_stmt_fetch_cont)
// clang-format on

#define LUAIO_MYSQL_PTR(f) decltype(&::f) f##_ = nullptr;
LUAIO_MYSQL(LUAIO_MYSQL_PTR)
#undef LUAIO_MYSQL_PTR

// Integers beyond 2^53 do not fit a Lua number exactly: they come as strings of their digits.
constexpr double kMaxExact = 9007199254740992.0;
// How often a step is continued with MYSQL_WAIT_TIMEOUT to make it fail before giving up on it.
constexpr int kAbortTries = 16;

// The Lua function that kills a timed-out query from a second connection (lib/mysql.lua).
luaio::Anchor g_killer;

// Prepared statements kept per connection, by SQL text (as postgres does: a query with
// parameters then costs one round trip instead of two).
constexpr size_t kMaxStatements = 100;

enum Step : uint8_t {
    kIdle,
    kConnect,
    kQuery,
    kStore,
    kNext,
    kPrepare,
    kBind,
    kExecute,
    kStmtStore,
    kStmtNext,
    kPing,
    kFetchRow,  // the next row of a streamed text result (mysql_fetch_row_start)
    kStmtFetch, // the next row of a streamed statement result (mysql_stmt_fetch_start)
};

// What an operation of db:rows is: a whole result (query), the start of a stream (the query
// runs, its rows stay unread), or a fetch of the stream's next rows.
enum Mode : uint8_t { kWhole, kStreamStart, kStreamFetch };

// The rows a fetch of a stream hands to Lua at most: memory stays bounded by this many rows.
constexpr int kStreamBatch = 256;

// A parameter of a prepared statement, kept while the statement runs.
struct Param {
    long long i = 0;
    double d = 0;
    std::string s;
};

// The result columns of a statement bound for fetching: integers as 64-bit, floats as doubles,
// the rest as bytes (the connector formats dates and decimals as text) in buffers of the
// column's longest value when it is known (a stored result), else of 64 bytes: a longer value
// is fetched again in full.
struct RowBinds {
    std::vector<MYSQL_BIND> out;
    std::vector<long long> ints;
    std::vector<double> dbls;
    std::vector<float> flts;
    std::vector<std::string> bufs;
    std::vector<unsigned long> lens;
    std::vector<my_bool> nulls, errs;

    void setup(const MYSQL_FIELD* fields, unsigned n);
    void push(lua_State* L, MYSQL_STMT* stmt, unsigned i);
};

// TLS to the server (the `tls` option): files of the CA, client certificate and key (empty: none;
// no CA means the system's), and whether the server's certificate and name are verified.
struct TlsOptions {
    bool on = false, verify = true;
    std::string ca, cert, key;
};

struct Conn : luaio::Handle<Conn> {
    static constexpr const char* kClass = "luaio.mysql.conn";
    static constexpr const char* kWhat = "mysql connection";

    MYSQL* my = nullptr;
    MYSQL_STMT* stmt = nullptr; // the statement of the query in progress
    bool stmt_cached = false;   // it is in stmts (else it is closed when the query ends)
    std::unordered_map<std::string, MYSQL_STMT*> stmts;
    luaio::FdWatch watch;
    uv_timer_t deadline;  // the operation's timeout
    uv_timer_t libtimer;  // the connector's own timeouts (MYSQL_WAIT_TIMEOUT)
    int open_timers = 2;  // the object goes when both timers' handles are closed
    luaio::Waiter waiter; // the task of the operation in progress
    Step step = kIdle;
    int status = 0;         // the wait status of the step in progress
    bool timed_out = false; // the deadline passed: the step is being aborted
    bool closing = false;   // close() came during an operation
    bool broken = false;    // the connection cannot be used again
    int ret_int = 0;
    MYSQL* ret_my = nullptr;
    MYSQL_RES* ret_res = nullptr;
    // Where and as whom it connects (kept for reconnect() and the killer of a timed-out query).
    std::string host, user, password, database, charset;
    unsigned port = 0;
    unsigned connect_timeout = 0, query_timeout = 0; // ms, 0: none
    TlsOptions tls;
    // What the operation sends, kept until it is done (the connector reads it during the steps).
    std::string sql;
    std::vector<Param> params;
    std::vector<MYSQL_BIND> binds;
    // The result sets made so far ({rows, rows, ...}).
    luaio::Anchor results;
    // The first error of the operation: reported once the steps have unwound.
    unsigned err_no = 0;
    std::string err_state, err_msg;
    // The call gave another number of parameters than the statement has placeholders (a
    // programmer mistake: lib/mysql.lua raises): the counts, or -1 when they matched.
    long placeholders = -1, parameters = -1;

    // How the last operation ended (push_outcome pushes it).
    Step done = kIdle;
    enum Outcome : uint8_t { kOk, kFailed, kTimedOut, kClosed } outcome = kOk;
    bool starting = false; // begin() is running the first steps: the task has not parked yet

    // A result whose rows are streamed (db:rows): its number while its rows are not all read
    // (0: none), its text result (mysql_use_result; else the rows are `stmt`'s), the bound
    // columns of a statement's, the column names, and the batch a fetch fills.
    Mode mode = kWhole;
    double stream = 0, stream_count = 0;
    unsigned stream_timeout = 0;
    MYSQL_RES* stream_res = nullptr;
    MYSQL_ROW ret_row = nullptr;
    RowBinds stream_binds;
    unsigned stream_cols = 0;
    luaio::Anchor stream_names, batch;
    int batch_n = 0;
    bool discard = false; // the fetch drops the rows (a loop left early: the rest is drained)
    bool tail = false;    // the streamed result set is over: the ones after it are dropped

    void proxy_gone() { close(); }
    void close();
    void run(int events);
    int call(int events);
    bool after_step();
    void finish();
    int push_outcome(lua_State* t);
    bool wait_for(int st);
    void fail_from_mysql();
    void fail_from_stmt();
    int begin(lua_State* L, Step first, unsigned ms, Mode m = kWhole);
    bool open_handle();
    bool bind_for_execute();
    void close_statements();
    void add_text_result(lua_State* L, MYSQL_RES* res);
    bool add_stmt_result(lua_State* L);
    bool start_stream(lua_State* L, const MYSQL_FIELD* fields, unsigned n);
    void add_stream_row(lua_State* L);
    bool after_stream_end();
    void end_stream();
};

// ---------------------------------------------------------------- values

// An integer column's text: a number when exact, else the digits as a string.
void push_integer_text(lua_State* L, const char* s, size_t len) {
    char* end;
    double d = std::strtod(s, &end);
    if (std::fabs(d) < kMaxExact)
        lua_pushnumber(L, d);
    else
        lua_pushlstring(L, s, len);
}

// A FLOAT column's value as the text protocol gives it: the shortest decimal that reads back
// as the same float (1.1, not the double nearest to the float, 1.100000023841858).
double float_value(float f) {
    char buf[32];
    for (int digits = 6; digits <= 9; digits++) {
        std::snprintf(buf, sizeof buf, "%.*g", digits, static_cast<double>(f));
        if (std::strtof(buf, nullptr) == f) break;
    }
    return std::strtod(buf, nullptr);
}

bool is_integer_type(enum_field_types t) {
    return t == MYSQL_TYPE_TINY || t == MYSQL_TYPE_SHORT || t == MYSQL_TYPE_LONG || t == MYSQL_TYPE_INT24 ||
           t == MYSQL_TYPE_LONGLONG || t == MYSQL_TYPE_YEAR;
}

bool is_float_type(enum_field_types t) {
    return t == MYSQL_TYPE_FLOAT || t == MYSQL_TYPE_DOUBLE;
}

// A value of the text protocol, by its column's type.
void push_text_value(lua_State* L, const MYSQL_FIELD& f, const char* s, size_t len) {
    if (!s)
        lua_pushlightuserdata(L, nullptr); // mysql.null, which is json.null
    else if (is_integer_type(f.type))
        push_integer_text(L, s, len);
    else if (is_float_type(f.type))
        lua_pushnumber(L, std::strtod(s, nullptr));
    else
        lua_pushlstring(L, s, len);
}

// The column names of a result set, pushed once as Lua strings (at base + 1 ...).
void push_names(lua_State* L, const MYSQL_FIELD* fields, unsigned n) {
    luaL_checkstack(L, static_cast<int>(n) + 8, "mysql: too many columns");
    for (unsigned i = 0; i < n; i++) lua_pushlstring(L, fields[i].name, fields[i].name_length);
}

// Gives the rows table on top of L its metatable: affected, insertId, warnings and columns are
// read through __index, so that json.encode(rows) is an array.
void set_result_info(lua_State* L, int names_base, unsigned ncols, my_ulonglong affected, my_ulonglong insert_id,
                     unsigned warnings) {
    lua_createtable(L, 0, 1);
    lua_createtable(L, 0, 4);
    lua_pushnumber(L, affected == static_cast<my_ulonglong>(-1) ? 0 : static_cast<double>(affected));
    lua_setfield(L, -2, "affected");
    lua_pushnumber(L, static_cast<double>(insert_id));
    lua_setfield(L, -2, "insertId");
    lua_pushnumber(L, warnings);
    lua_setfield(L, -2, "warnings");
    lua_createtable(L, static_cast<int>(ncols), 0);
    for (unsigned i = 0; i < ncols; i++) {
        lua_pushvalue(L, names_base + static_cast<int>(i));
        lua_rawseti(L, -2, static_cast<int>(i) + 1);
    }
    lua_setfield(L, -2, "columns");
    lua_setfield(L, -2, "__index");
    lua_setmetatable(L, -2);
}

// Appends the table on top of L to the operation's result sets (and pops it).
void append_result(lua_State* L, luaio::Anchor& results) {
    if (!results.held()) {
        lua_newtable(L);
        results.set(L, -1);
        lua_pop(L, 1);
    }
    results.push(L);
    lua_insert(L, -2);
    lua_rawseti(L, -2, static_cast<int>(lua_objlen(L, -2)) + 1);
    lua_pop(L, 1);
}

void Conn::add_text_result(lua_State* L, MYSQL_RES* res) {
    int base = lua_gettop(L);
    unsigned n = res ? mysql_num_fields_(res) : 0;
    MYSQL_FIELD* fields = res ? mysql_fetch_fields_(res) : nullptr;
    push_names(L, fields, n);
    lua_newtable(L);
    int rows = lua_gettop(L);
    int count = 0;
    while (MYSQL_ROW row = res ? mysql_fetch_row_(res) : nullptr) {
        unsigned long* lens = mysql_fetch_lengths_(res);
        lua_createtable(L, 0, static_cast<int>(n));
        for (unsigned i = 0; i < n; i++) {
            lua_pushvalue(L, base + 1 + static_cast<int>(i));
            push_text_value(L, fields[i], row[i], lens[i]);
            lua_rawset(L, -3);
        }
        lua_rawseti(L, rows, ++count);
    }
    set_result_info(L, base + 1, n, mysql_affected_rows_(my), mysql_insert_id_(my), mysql_warning_count_(my));
    if (n) {
        lua_replace(L, base + 1);
        lua_settop(L, base + 1);
    }
    append_result(L, results);
    if (res) mysql_free_result_(res);
}

void RowBinds::setup(const MYSQL_FIELD* fields, unsigned n) {
    out.assign(n, MYSQL_BIND{});
    ints.assign(n, 0);
    dbls.assign(n, 0);
    flts.assign(n, 0);
    bufs.assign(n, std::string());
    lens.assign(n, 0);
    nulls.assign(n, 0);
    errs.assign(n, 0);
    for (unsigned i = 0; i < n; i++) {
        MYSQL_BIND& b = out[i];
        b.length = &lens[i];
        b.is_null = &nulls[i];
        b.error = &errs[i];
        if (is_integer_type(fields[i].type)) {
            b.buffer_type = MYSQL_TYPE_LONGLONG;
            b.buffer = &ints[i];
            b.is_unsigned = (fields[i].flags & UNSIGNED_FLAG) != 0;
        } else if (fields[i].type == MYSQL_TYPE_FLOAT) {
            b.buffer_type = MYSQL_TYPE_FLOAT;
            b.buffer = &flts[i];
        } else if (fields[i].type == MYSQL_TYPE_DOUBLE) {
            b.buffer_type = MYSQL_TYPE_DOUBLE;
            b.buffer = &dbls[i];
        } else {
            bufs[i].resize(std::max<unsigned long>(fields[i].max_length, 64) + 1);
            b.buffer_type = MYSQL_TYPE_STRING;
            b.buffer = &bufs[i][0];
            b.buffer_length = bufs[i].size();
        }
    }
}

// Pushes column i of the row the statement fetched last.
void RowBinds::push(lua_State* L, MYSQL_STMT* stmt, unsigned i) {
    MYSQL_BIND& b = out[i];
    if (nulls[i])
        lua_pushlightuserdata(L, nullptr);
    else if (b.buffer_type == MYSQL_TYPE_LONGLONG) {
        long long v = ints[i];
        double d = b.is_unsigned ? static_cast<double>(static_cast<unsigned long long>(v)) : static_cast<double>(v);
        if (std::fabs(d) < kMaxExact)
            lua_pushnumber(L, d);
        else
            lua_pushstring(L, b.is_unsigned ? std::to_string(static_cast<unsigned long long>(v)).c_str()
                                            : std::to_string(v).c_str());
    } else if (b.buffer_type == MYSQL_TYPE_DOUBLE) {
        lua_pushnumber(L, dbls[i]);
    } else if (b.buffer_type == MYSQL_TYPE_FLOAT) {
        lua_pushnumber(L, float_value(flts[i]));
    } else if (lens[i] <= b.buffer_length) {
        lua_pushlstring(L, bufs[i].data(), lens[i]);
    } else {
        // Longer than the buffer: fetch the column again in full.
        std::string big(lens[i], '\0');
        MYSQL_BIND again;
        std::memset(&again, 0, sizeof again);
        again.buffer_type = MYSQL_TYPE_STRING;
        again.buffer = &big[0];
        again.buffer_length = big.size();
        mysql_stmt_fetch_column_(stmt, &again, i, 0);
        lua_pushlstring(L, big.data(), big.size());
    }
}

// Reads every row of the statement's stored result into a rows table (STMT_ATTR_UPDATE_MAX_LENGTH
// gives each column's longest value, so the buffers fit).
bool Conn::add_stmt_result(lua_State* L) {
    MYSQL_RES* meta = mysql_stmt_result_metadata_(stmt);
    if (!meta) {
        // A statement without a result set (INSERT ...): only the counts.
        lua_newtable(L);
        set_result_info(L, lua_gettop(L), 0, mysql_stmt_affected_rows_(stmt), mysql_stmt_insert_id_(stmt),
                        mysql_stmt_warning_count_(stmt));
        append_result(L, results);
        return true;
    }
    unsigned n = mysql_num_fields_(meta);
    MYSQL_FIELD* fields = mysql_fetch_fields_(meta);
    RowBinds rb;
    rb.setup(fields, n);
    if (mysql_stmt_bind_result_(stmt, rb.out.data())) {
        mysql_free_result_(meta);
        fail_from_stmt();
        return false;
    }
    int base = lua_gettop(L);
    push_names(L, fields, n);
    lua_newtable(L);
    int rows = lua_gettop(L);
    int count = 0;
    int rc;
    while ((rc = mysql_stmt_fetch_(stmt)) == 0 || rc == MYSQL_DATA_TRUNCATED) {
        lua_createtable(L, 0, static_cast<int>(n));
        for (unsigned i = 0; i < n; i++) {
            lua_pushvalue(L, base + 1 + static_cast<int>(i));
            rb.push(L, stmt, i);
            lua_rawset(L, -3);
        }
        lua_rawseti(L, rows, ++count);
    }
    set_result_info(L, base + 1, n, mysql_stmt_affected_rows_(stmt), mysql_stmt_insert_id_(stmt),
                    mysql_stmt_warning_count_(stmt));
    if (n) {
        lua_replace(L, base + 1);
        lua_settop(L, base + 1);
    }
    append_result(L, results);
    mysql_free_result_(meta);
    mysql_stmt_free_result_(stmt);
    if (rc != MYSQL_NO_DATA) {
        fail_from_stmt();
        return false;
    }
    return true;
}

// ---------------------------------------------------------------- streamed rows (db:rows)

// The query of a stream has run and its result set has these columns: their names are kept,
// a statement's columns bound, and the stream gets its number. False (and the error) when the
// columns cannot be bound.
bool Conn::start_stream(lua_State* L, const MYSQL_FIELD* fields, unsigned n) {
    if (!stream_res) {
        stream_binds.setup(fields, n);
        if (mysql_stmt_bind_result_(stmt, stream_binds.out.data())) {
            fail_from_stmt();
            return false;
        }
    }
    lua_createtable(L, static_cast<int>(n), 0);
    for (unsigned i = 0; i < n; i++) {
        lua_pushlstring(L, fields[i].name, fields[i].name_length);
        lua_rawseti(L, -2, static_cast<int>(i) + 1);
    }
    stream_names.clear();
    stream_names.set(L, -1);
    lua_pop(L, 1);
    stream_cols = n;
    stream = ++stream_count;
    return true;
}

// Appends the row just fetched to the batch, converted as query() converts it.
void Conn::add_stream_row(lua_State* L) {
    batch.push(L);
    stream_names.push(L);
    int names = lua_gettop(L);
    lua_createtable(L, 0, static_cast<int>(stream_cols));
    MYSQL_FIELD* fields = stream_res ? mysql_fetch_fields_(stream_res) : nullptr;
    unsigned long* lens = stream_res ? mysql_fetch_lengths_(stream_res) : nullptr;
    for (unsigned i = 0; i < stream_cols; i++) {
        lua_rawgeti(L, names, static_cast<int>(i) + 1);
        if (stream_res)
            push_text_value(L, fields[i], ret_row[i], lens[i]);
        else
            stream_binds.push(L, stmt, i);
        lua_rawset(L, -3);
    }
    lua_rawseti(L, names - 1, ++batch_n);
    lua_pop(L, 2);
}

// The streamed result set has no row left: the stream is over, and the result sets after it
// (several statements, a CALL's status) are read and dropped. True when there are some.
bool Conn::after_stream_end() {
    end_stream();
    tail = true;
    if (stmt) {
        mysql_stmt_free_result_(stmt); // read to its end: no I/O
        if (!mysql_stmt_more_results_(stmt)) return false;
        step = kStmtNext;
        return true;
    }
    if (!mysql_more_results_(my)) return false;
    step = kNext;
    return true;
}

// Forgets the stream. Its rows must have been read to the end, or the socket shut down first:
// the connector reads what is left of an unbuffered result, blocking, when it is freed.
void Conn::end_stream() {
    if (stream_res) mysql_free_result_(stream_res);
    stream_res = nullptr;
    stream = 0;
    stream_names.clear();
}

// ---------------------------------------------------------------- the driver

void Conn::fail_from_mysql() {
    if (err_no || !my) return;
    err_no = mysql_errno_(my);
    err_state = mysql_sqlstate_(my);
    err_msg = mysql_error_(my);
    if (!err_no) err_no = CR_UNKNOWN_ERROR;
}

void Conn::fail_from_stmt() {
    if (err_no || !stmt) return;
    err_no = mysql_stmt_errno_(stmt);
    err_state = mysql_stmt_sqlstate_(stmt);
    err_msg = mysql_stmt_error_(stmt);
    if (!err_no) err_no = CR_UNKNOWN_ERROR;
}

// Calls the step's _start (ev < 0) or its _cont with the events that came: the wait status, 0
// once the step is done.
int Conn::call(int ev) {
    bool start = ev < 0;
    switch (step) {
    case kConnect:
        return start ? mysql_real_connect_start_(&ret_my, my, host.c_str(), user.c_str(), password.c_str(),
                                                 database.empty() ? nullptr : database.c_str(), port, nullptr,
                                                 CLIENT_MULTI_STATEMENTS | CLIENT_MULTI_RESULTS)
                     : mysql_real_connect_cont_(&ret_my, my, ev);
    case kQuery:
        return start ? mysql_real_query_start_(&ret_int, my, sql.data(), sql.size())
                     : mysql_real_query_cont_(&ret_int, my, ev);
    case kStore:
        return start ? mysql_store_result_start_(&ret_res, my) : mysql_store_result_cont_(&ret_res, my, ev);
    case kNext:
        return start ? mysql_next_result_start_(&ret_int, my) : mysql_next_result_cont_(&ret_int, my, ev);
    case kPrepare:
        return start ? mysql_stmt_prepare_start_(&ret_int, stmt, sql.data(), sql.size())
                     : mysql_stmt_prepare_cont_(&ret_int, stmt, ev);
    case kExecute:
        return start ? mysql_stmt_execute_start_(&ret_int, stmt) : mysql_stmt_execute_cont_(&ret_int, stmt, ev);
    case kStmtStore:
        return start ? mysql_stmt_store_result_start_(&ret_int, stmt)
                     : mysql_stmt_store_result_cont_(&ret_int, stmt, ev);
    case kStmtNext:
        return start ? mysql_stmt_next_result_start_(&ret_int, stmt) : mysql_stmt_next_result_cont_(&ret_int, stmt, ev);
    case kPing:
        return start ? mysql_ping_start_(&ret_int, my) : mysql_ping_cont_(&ret_int, my, ev);
    case kFetchRow:
        return start ? mysql_fetch_row_start_(&ret_row, stream_res) : mysql_fetch_row_cont_(&ret_row, stream_res, ev);
    case kStmtFetch:
        return start ? mysql_stmt_fetch_start_(&ret_int, stmt) : mysql_stmt_fetch_cont_(&ret_int, stmt, ev);
    case kBind: // no I/O
    case kIdle:
        break;
    }
    return 0;
}

void on_io(void* ctx, int, int events) {
    auto* c = static_cast<Conn*>(ctx);
    int ev = 0;
    if (events & UV_READABLE) ev |= MYSQL_WAIT_READ;
    if (events & UV_WRITABLE) ev |= MYSQL_WAIT_WRITE;
    // Only what the step waits for: a readable socket does not end a wait for writing.
    ev &= c->status;
    if (ev) c->run(ev);
}

void on_libtimer(uv_timer_t* t) {
    static_cast<Conn*>(t->data)->run(MYSQL_WAIT_TIMEOUT);
}

// The tls argument of core.connect for these options: nil when off, else {ca, cert, key, verify}.
void push_tls(lua_State* L, const TlsOptions& t) {
    if (!t.on) {
        lua_pushnil(L);
        return;
    }
    lua_createtable(L, 0, 4);
    const std::string* files[] = {&t.ca, &t.cert, &t.key};
    const char* names[] = {"ca", "cert", "key"};
    for (int i = 0; i < 3; i++) {
        if (files[i]->empty()) continue;
        lua_pushlstring(L, files[i]->data(), files[i]->size());
        lua_setfield(L, -2, names[i]);
    }
    lua_pushboolean(L, t.verify);
    lua_setfield(L, -2, "verify");
}

void on_deadline(uv_timer_t* t) {
    auto* c = static_cast<Conn*>(t->data);
    if (c->step == kIdle) return;
    c->timed_out = true;
    // A query goes on on the server after the client gave up: Lua kills it from a second
    // connection (KILL QUERY <thread id>), in a task of its own.
    if (c->step != kConnect && g_killer.held()) {
        lua_State* L = luaio::main_state();
        g_killer.push(L);
        lua_pushstring(L, c->host.c_str());
        lua_pushnumber(L, c->port);
        lua_pushstring(L, c->user.c_str());
        lua_pushstring(L, c->password.c_str());
        lua_pushnumber(L, static_cast<double>(mysql_thread_id_(c->my)));
        push_tls(L, c->tls); // the same TLS as the connection: a REQUIRE SSL user needs it
        luaio::spawn(L, 6);
    }
    c->run(MYSQL_WAIT_TIMEOUT);
}

// Waits for what the step asked; false when the descriptor cannot be watched.
bool Conn::wait_for(int st) {
    status = st;
    int events = (st & MYSQL_WAIT_READ ? UV_READABLE : 0) | (st & MYSQL_WAIT_WRITE ? UV_WRITABLE : 0);
    int rc = events ? watch.watch(mysql_get_socket_(my), events, on_io, this) : 0;
    if (rc < 0) {
        err_no = CR_SERVER_LOST;
        err_state = "HY000";
        err_msg = std::string("cannot watch the connection: ") + uv_strerror(rc);
        return false;
    }
    if (st & MYSQL_WAIT_TIMEOUT)
        luaio::start_timer(&libtimer, on_libtimer, mysql_get_timeout_value_ms_(my));
    else
        uv_timer_stop(&libtimer);
    return true;
}

// Advances the operation with the events that came (-1: start the step) until it must wait or
// is done. A step that must stop (the deadline passed, the connection is being closed, its
// descriptor cannot be watched) is continued as if the connector's own timeout had passed: it
// fails and unwinds, and the operation ends with the error.
void Conn::run(int events) {
    for (int tries = 0;;) {
        int st = call(events);
        if (st) {
            if (!timed_out && !closing && !err_no && wait_for(st)) return;
            if (++tries > kAbortTries) break;
            events = MYSQL_WAIT_TIMEOUT;
            continue;
        }
        tries = 0;
        events = -1;
        if (!after_step()) return;
    }
    // The connector kept waiting however often its wait failed: give up on the connection.
    broken = true;
    if (!err_no) err_no = CR_SERVER_LOST;
    finish();
}

// The step is done: picks the next one (true) or ends the operation (false).
bool Conn::after_step() {
    lua_State* L = luaio::main_state();
    switch (step) {
    case kConnect:
        if (!ret_my) {
            fail_from_mysql();
        } else if (tls.on && !mysql_get_ssl_cipher_(my)) {
            // Without verification the connector goes on in plaintext when the server has no TLS.
            err_no = CR_SSL_CONNECTION_ERROR;
            err_state = "HY000";
            err_msg = "TLS was asked for and the server does not offer it";
        } else if (tls.on) {
            // The connector leaves the socket blocking after the TLS handshake: a read would then
            // block the loop instead of returning the wait to the non-blocking API.
            int fd = mysql_get_socket_(my);
            fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        }
        break;
    case kQuery:
        if (ret_int) {
            fail_from_mysql();
            break;
        }
        if (mode == kStreamStart) {
            // The rows stay on the socket: fetches read them (no I/O here).
            stream_res = mysql_use_result_(my);
            if (stream_res) {
                start_stream(L, mysql_fetch_fields_(stream_res), mysql_num_fields_(stream_res));
                break;
            }
            if (mysql_field_count_(my) != 0) {
                fail_from_mysql();
                break;
            }
            // A statement without rows: nothing to stream, the rest is dropped.
            tail = true;
            if (!mysql_more_results_(my)) break;
            step = kNext;
            return true;
        }
        step = kStore;
        return true;
    case kStore:
        if (!ret_res && mysql_field_count_(my) != 0) {
            fail_from_mysql();
            break;
        }
        if (tail) {
            if (ret_res) mysql_free_result_(ret_res);
        } else {
            add_text_result(L, ret_res);
        }
        ret_res = nullptr;
        if (!mysql_more_results_(my)) break;
        step = kNext;
        return true;
    case kNext:
        if (ret_int > 0) fail_from_mysql();
        if (ret_int != 0) break;
        step = kStore;
        return true;
    case kPrepare:
        if (ret_int) {
            fail_from_stmt();
            break;
        }
        if (stmts.size() < kMaxStatements) {
            stmts.emplace(sql, stmt);
            stmt_cached = true;
        }
        step = kBind;
        return true;
    case kBind:
        if (!bind_for_execute()) break;
        step = kExecute;
        return true;
    case kExecute:
        if (ret_int) {
            fail_from_stmt();
            break;
        }
        if (mode == kStreamStart) {
            if (MYSQL_RES* meta = mysql_stmt_result_metadata_(stmt)) {
                start_stream(L, mysql_fetch_fields_(meta), mysql_num_fields_(meta));
                mysql_free_result_(meta);
                break;
            }
            tail = true; // a statement without rows
            if (!mysql_stmt_more_results_(stmt)) break;
            step = kStmtNext;
            return true;
        }
        step = kStmtStore;
        return true;
    case kStmtStore:
        if (ret_int) {
            fail_from_stmt();
            break;
        }
        if (tail) {
            mysql_stmt_free_result_(stmt);
            if (!mysql_stmt_more_results_(stmt)) break;
        } else if (!add_stmt_result(L) || !mysql_stmt_more_results_(stmt)) {
            break;
        }
        step = kStmtNext;
        return true;
    case kFetchRow:
        if (ret_row) {
            if (discard) return true;
            add_stream_row(L);
            if (batch_n >= kStreamBatch) break;
            return true;
        }
        if (mysql_errno_(my)) {
            fail_from_mysql();
            break;
        }
        if (after_stream_end()) return true;
        break;
    case kStmtFetch:
        if (ret_int == 0 || ret_int == MYSQL_DATA_TRUNCATED) {
            if (discard) return true;
            add_stream_row(L);
            if (batch_n >= kStreamBatch) break;
            return true;
        }
        if (ret_int != MYSQL_NO_DATA) {
            fail_from_stmt();
            break;
        }
        if (after_stream_end()) return true;
        break;
    case kStmtNext:
        if (ret_int > 0) fail_from_stmt();
        if (ret_int != 0) break;
        step = kStmtStore;
        return true;
    case kPing:
        if (ret_int) fail_from_mysql();
        break;
    case kIdle:
        return false;
    }
    finish();
    return false;
}

// A client-side error (CR_*: 2000-2999) means the connection's state is lost.
bool is_client_error(unsigned e) {
    return e >= 2000 && e < 3000;
}

// The socket error of a connector's "Can't connect to server on '127.0.0.1' (111)" (CR_CONNECTION_ERROR,
// CR_CONN_HOST_ERROR: the system's errno in parentheses at the end), as libuv's code; 0 for
// another error or errno.
int socket_error(unsigned no, const std::string& msg) {
    if (no != CR_CONNECTION_ERROR && no != CR_CONN_HOST_ERROR) return 0;
    size_t open = msg.rfind('(');
    if (open == std::string::npos) return 0;
    int e = std::atoi(msg.c_str() + open + 1);
    for (int known : {ECONNREFUSED, ETIMEDOUT, EHOSTUNREACH, ENETUNREACH, ECONNRESET})
        if (e == known) return -e;
    return 0;
}

// A TLS error about the server's certificate (its chain or its name) is ECERTVERIFY, as for the
// tls module; a socket error of the connect is named as tcp names it (ECONNREFUSED ...). The
// errno and sqlstate are kept.
void push_mysql_error(lua_State* L, unsigned no, const std::string& state, const std::string& msg) {
    bool cert = no == CR_SSL_CONNECTION_ERROR && msg.find("certificate") != std::string::npos;
    int sock = socket_error(no, msg);
    luaio::push_error(L, cert ? luaio::LUAIO_ECERTVERIFY : sock ? sock : luaio::LUAIO_EMYSQL, msg.c_str());
    lua_pushnumber(L, no);
    lua_setfield(L, -2, "errno");
    lua_pushstring(L, state.c_str());
    lua_setfield(L, -2, "sqlstate");
}

// Ends the operation: frees its statement and buffers and keeps its outcome, then wakes the task
// with it (or leaves it for the binding when the operation ended before the task parked).
void Conn::finish() {
    done = step;
    step = kIdle;
    watch.stop();
    uv_timer_stop(&libtimer);
    uv_timer_stop(&deadline);
    if (stream && (err_no || timed_out || closing)) {
        // A stream that failed: what the connector still has of it goes without reading the
        // rest (the socket is shut down first when the connection is lost anyway).
        if (timed_out || closing || is_client_error(err_no)) shutdown(mysql_get_socket_(my), SHUT_RDWR);
        end_stream();
    }
    // A stream that goes on keeps its statement and buffers for the fetches.
    if (stream) {
        // nothing to free yet
    } else if (stmt) {
        // A statement that failed may be in any state: it is prepared again next time.
        // (One given the wrong number of parameters is fine: it stays prepared.)
        bool failed = (err_no && placeholders < 0) || timed_out || closing;
        if (stmt_cached && failed) stmts.erase(sql);
        // COM_STMT_CLOSE has no reply: the blocking call only writes a few bytes.
        if (!stmt_cached || failed) mysql_stmt_close_(stmt);
        stmt = nullptr;
        stmt_cached = false;
    }
    if (!stream) {
        params.clear();
        binds.clear();
        sql.clear();
    }
    if (timed_out)
        outcome = kTimedOut;
    else if (closing)
        outcome = kClosed;
    else
        outcome = err_no ? kFailed : kOk;
    if (outcome != kOk && (outcome != kFailed || (is_client_error(err_no) && placeholders < 0) || done == kConnect))
        broken = true;
    timed_out = false;
    if (starting) return; // the binding pushes the outcome
    // A connection that failed to open, or that nobody waits for, goes (a reconnect() keeps it).
    if (!luaio::task_of(waiter)) {
        results.clear();
        if (!has_proxy()) close();
        return;
    }
    if (done == kConnect && outcome != kOk && !has_proxy()) close();
    luaio::wake(waiter, [this](lua_State* t) { return push_outcome(t); });
}

// Pushes the outcome of the last operation: the first result set (with more than one, all of
// them are rows.results), a proxy for a connect, true for a ping, or nil and the error.
int Conn::push_outcome(lua_State* t) {
    if (outcome != kOk) {
        results.clear();
        batch.clear();
        lua_pushnil(t);
        if (outcome == kTimedOut)
            luaio::push_error(t, UV_ETIMEDOUT, done == kConnect ? "connect timed out" : "query timed out");
        else if (outcome == kClosed)
            luaio::push_error(t, UV_ECANCELED, "the connection was closed");
        else
            push_mysql_error(t, err_no, err_state, err_msg);
        if (placeholders >= 0) {
            lua_pushnumber(t, static_cast<double>(placeholders));
            lua_setfield(t, -2, "placeholders");
            lua_pushnumber(t, static_cast<double>(parameters));
            lua_setfield(t, -2, "parameters");
            placeholders = parameters = -1;
        }
        err_no = 0;
        return 2;
    }
    if (done == kConnect) {
        // A new connection's proxy, or true for a reconnect() (its proxy is the caller's).
        if (has_proxy())
            lua_pushboolean(t, 1);
        else
            push_proxy(t);
        return 1;
    }
    if (done == kPing) {
        lua_pushboolean(t, 1);
        return 1;
    }
    if (mode == kStreamStart) {
        // The stream's number, or false when the statement gave no rows.
        if (stream)
            lua_pushnumber(t, stream);
        else
            lua_pushboolean(t, 0);
        return 1;
    }
    if (mode == kStreamFetch) {
        // The rows fetched; true after them once the stream is over.
        batch.push(t);
        batch.clear();
        if (stream) return 1;
        lua_pushboolean(t, 1);
        return 2;
    }
    results.push(t);
    results.clear();
    lua_rawgeti(t, -1, 1);
    if (lua_objlen(t, -2) > 1 && lua_getmetatable(t, -1)) {
        lua_getfield(t, -1, "__index");
        lua_pushvalue(t, -4);
        lua_setfield(t, -2, "results");
        lua_pop(t, 2);
    }
    lua_remove(t, -2);
    return 1;
}

void on_timer_closed(uv_handle_t* h) {
    auto* c = static_cast<Conn*>(h->data);
    if (--c->open_timers == 0) delete c;
}

// The one close path (close(), __gc, a failed connect): an operation in progress is aborted
// first (its task gets ECANCELED), then the watch goes before the connector closes the socket.
void Conn::close() {
    detach_proxy();
    if (step != kIdle) {
        closing = true;
        run(MYSQL_WAIT_TIMEOUT);
    }
    if (stream) {
        // Rows left unread: the socket is shut down first, so that freeing the result or the
        // statement does not read (blocking) the rest of them.
        shutdown(mysql_get_socket_(my), SHUT_RDWR);
        end_stream();
        if (stmt && !stmt_cached) mysql_stmt_close_(stmt);
        stmt = nullptr;
    }
    watch.close();
    close_statements();
    if (my) {
        mysql_close_(my);
        my = nullptr;
    }
    if (!uv_is_closing(reinterpret_cast<uv_handle_t*>(&deadline))) {
        uv_close(reinterpret_cast<uv_handle_t*>(&deadline), on_timer_closed);
        uv_close(reinterpret_cast<uv_handle_t*>(&libtimer), on_timer_closed);
    }
}

// Starts an operation at `first` with a deadline of ms (0: none), runs it as far as it goes
// without waiting, and parks the task, or returns the outcome when it is already there.
int Conn::begin(lua_State* L, Step first, unsigned ms, Mode m) {
    step = first;
    mode = m;
    timed_out = closing = tail = false;
    err_no = 0;
    if (ms) luaio::start_timer(&deadline, on_deadline, ms);
    starting = true;
    run(-1);
    starting = false;
    if (step == kIdle) {
        int n = push_outcome(L);
        if (done == kConnect && outcome != kOk && !has_proxy()) close();
        return n;
    }
    return luaio::park(L, waiter);
}

// ---------------------------------------------------------------- bindings

Conn* check_conn(lua_State* L, const char* fname) {
    return Conn::check(L, 1, fname);
}

unsigned check_ms(lua_State* L, int idx, const char* fname) {
    if (lua_isnoneornil(L, idx)) return 0;
    lua_Number ms = luaio::check_number(L, idx, fname);
    if (!(ms >= 0) || ms > 2147483647) luaio::raise(L, fname, "timeout must be between 0 and 2^31-1 ms");
    return static_cast<unsigned>(ms);
}

std::string opt_string(lua_State* L, int idx, const char* fname) {
    if (lua_isnoneornil(L, idx)) return std::string();
    size_t len;
    const char* s = luaio::check_string(L, idx, fname, &len);
    return std::string(s, len);
}

// One query at a time per connection: another task's call gets EBUSY (a pool shares connections).
int refuse_busy(lua_State* L) {
    lua_pushnil(L);
    luaio::push_error(L, UV_EBUSY, "the connection is busy with another query (use a pool)");
    return 2;
}

// The rows of a stream (db:rows) are not all read (its loop was left): nil and EBUSY with the
// stream's number (err.streaming), for lib/mysql.lua to drain them and call again; 0 when none.
int refuse_streaming(lua_State* L, Conn* c) {
    if (!c->stream) return 0;
    lua_pushnil(L);
    luaio::push_error(L, UV_EBUSY, "the connection is still reading the rows of db:rows");
    lua_pushnumber(L, c->stream);
    lua_setfield(L, -2, "streaming");
    return 2;
}

// The statement's parameters bound for an execution; false (and the error) for a wrong count.
bool Conn::bind_for_execute() {
    if (mysql_stmt_param_count_(stmt) != binds.size()) {
        err_no = CR_PARAMS_NOT_BOUND;
        err_state = "HY000";
        err_msg = "the number of parameters does not match the statement's placeholders";
        placeholders = static_cast<long>(mysql_stmt_param_count_(stmt));
        parameters = static_cast<long>(binds.size());
        return false;
    }
    if (!binds.empty() && mysql_stmt_bind_param_(stmt, binds.data())) {
        fail_from_stmt();
        return false;
    }
    return true;
}

// Closes the statements kept (before their connection's handle goes).
void Conn::close_statements() {
    for (auto& kv : stmts) mysql_stmt_close_(kv.second);
    stmts.clear();
}

// A new MYSQL handle for the connection, set up for the non-blocking API; false when out of memory.
bool Conn::open_handle() {
    watch.close(); // before the old handle's descriptor goes
    close_statements();
    if (my) mysql_close_(my);
    my = mysql_init_(nullptr);
    if (!my) return false;
    mysql_options_(my, MYSQL_OPT_NONBLOCK, nullptr);
    mysql_options_(my, MYSQL_SET_CHARSET_NAME, charset.c_str());
    my_bool no = 0;
    mysql_options_(my, MYSQL_OPT_LOCAL_INFILE, &no);
    if (tls.on) {
        auto file = [](const std::string& f) { return f.empty() ? nullptr : f.c_str(); };
        // The connector checks the chain whenever it has a CA: without verification it gets none.
        const char* ca = tls.verify ? file(tls.ca) : nullptr;
        mysql_ssl_set_(my, file(tls.key), file(tls.cert), ca, nullptr, nullptr);
        // Enforced: a server that offers no TLS fails the connect instead of going on in plaintext.
        my_bool yes = 1, verify = tls.verify;
        mysql_options_(my, MYSQL_OPT_SSL_ENFORCE, &yes);
        mysql_options_(my, MYSQL_OPT_SSL_VERIFY_SERVER_CERT, &verify);
    }
    broken = false;
    return true;
}

// The tls argument of core.connect (nil, or {ca =, cert =, key =, verify =} checked by lib/mysql.lua).
TlsOptions read_tls(lua_State* L, int idx, const char* fname) {
    TlsOptions t;
    if (lua_isnoneornil(L, idx)) return t;
    if (!lua_istable(L, idx)) luaio::raise(L, fname, "tls must be a table");
    t.on = true;
    std::string* files[] = {&t.ca, &t.cert, &t.key};
    const char* names[] = {"ca", "cert", "key"};
    for (int i = 0; i < 3; i++) {
        lua_getfield(L, idx, names[i]);
        *files[i] = opt_string(L, -1, fname);
        lua_pop(L, 1);
    }
    lua_getfield(L, idx, "verify");
    t.verify = lua_isnil(L, -1) || lua_toboolean(L, -1);
    lua_pop(L, 1);
    return t;
}

// core.connect(host, port, user, password, database, charset, timeout, queryTimeout, tls)
int l_connect(lua_State* L) {
    const char* fname = "mysql.connect";
    std::string host = opt_string(L, 1, fname);
    lua_Integer port = lua_isnoneornil(L, 2) ? 3306 : luaio::check_integer(L, 2, fname);
    if (port < 0 || port > 65535) luaio::raise(L, fname, "port must be between 0 and 65535");
    std::string user = opt_string(L, 3, fname), password = opt_string(L, 4, fname), db = opt_string(L, 5, fname);
    std::string charset = opt_string(L, 6, fname);
    unsigned ms = check_ms(L, 7, fname), query_ms = check_ms(L, 8, fname);
    TlsOptions tls = read_tls(L, 9, fname);
    luaio::check_can_wait(L, fname);
    auto* c = new Conn;
    uv_timer_init(luaio::loop(), &c->deadline);
    uv_timer_init(luaio::loop(), &c->libtimer);
    c->deadline.data = c->libtimer.data = c;
    c->host = host.empty() ? "127.0.0.1" : host;
    c->port = static_cast<unsigned>(port);
    c->user = user;
    c->password = password;
    c->database = db;
    c->charset = charset.empty() ? "utf8mb4" : charset;
    c->connect_timeout = ms;
    c->query_timeout = query_ms;
    c->tls = tls;
    if (!c->open_handle()) {
        c->close();
        return luaio::return_uv_error(L, UV_ENOMEM);
    }
    // The task waits in the connection until it is open; push_outcome pushes its proxy.
    return c->begin(L, kConnect, ms);
}

// c:reconnect(): a new session on the same connection object, after it was lost.
int l_reconnect(lua_State* L) {
    const char* fname = "db:reconnect";
    Conn* c = Conn::check(L, 1, fname);
    luaio::check_can_wait(L, fname);
    if (c->step != kIdle) return refuse_busy(L);
    if (int n = refuse_streaming(L, c)) return n;
    if (!c->open_handle()) return luaio::return_uv_error(L, UV_ENOMEM);
    return c->begin(L, kConnect, c->connect_timeout);
}

// A parameter of a prepared statement into its bind.
void bind_param(lua_State* L, int idx, Param& p, MYSQL_BIND& b, const char* fname) {
    std::memset(&b, 0, sizeof b);
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        b.buffer_type = MYSQL_TYPE_NULL;
        return;
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) == nullptr) {
            b.buffer_type = MYSQL_TYPE_NULL;
            return;
        }
        break;
    case LUA_TBOOLEAN:
        p.i = lua_toboolean(L, idx);
        b.buffer_type = MYSQL_TYPE_LONGLONG;
        b.buffer = &p.i;
        return;
    case LUA_TNUMBER: {
        double d = lua_tonumber(L, idx);
        if (d == std::floor(d) && std::fabs(d) < kMaxExact) {
            p.i = static_cast<long long>(d);
            b.buffer_type = MYSQL_TYPE_LONGLONG;
            b.buffer = &p.i;
        } else {
            p.d = d;
            b.buffer_type = MYSQL_TYPE_DOUBLE;
            b.buffer = &p.d;
        }
        return;
    }
    case LUA_TSTRING: {
        size_t len;
        const char* s = lua_tolstring(L, idx, &len);
        p.s.assign(s, len);
        b.buffer_type = MYSQL_TYPE_STRING;
        b.buffer = p.s.empty() ? nullptr : &p.s[0];
        b.buffer_length = len;
        return;
    }
    default:
        break;
    }
    luaio::raise(L, fname, "parameter %d: expected nil, mysql.null, a boolean, a number or a string, got %s", idx - 3,
                 luaL_typename(L, idx));
}

// Returns nil and the error of a connection that was lost (2 results), or 0 when it is usable.
int refuse_broken(lua_State* L, Conn* c) {
    if (!c->broken) return 0;
    lua_pushnil(L);
    push_mysql_error(L, CR_SERVER_GONE_ERROR, "HY000", "the connection was lost or timed out (see db:reconnect)");
    return 2;
}

// c:_query(sql, timeout_ms | nil, ...): without parameters one text query (which may hold several
// statements); with parameters a prepared statement. A nil timeout is the connection's
// queryTimeout.
int query(lua_State* L, const char* fname, Mode mode) {
    Conn* c = check_conn(L, fname);
    size_t len;
    const char* sql = luaio::check_string(L, 2, fname, &len);
    unsigned ms = lua_isnoneornil(L, 3) ? c->query_timeout : check_ms(L, 3, fname);
    luaio::check_can_wait(L, fname);
    if (c->step != kIdle) return refuse_busy(L);
    if (int n = refuse_streaming(L, c)) return n;
    if (int n = refuse_broken(L, c)) return n;
    int nparams = std::max(0, lua_gettop(L) - 3);
    c->sql.assign(sql, len);
    c->params.resize(static_cast<size_t>(nparams));
    c->binds.resize(static_cast<size_t>(nparams));
    for (int i = 0; i < nparams; i++) bind_param(L, 4 + i, c->params[i], c->binds[i], fname);
    Step first = kQuery;
    if (nparams > 0) {
        auto it = c->stmts.find(c->sql);
        if (it != c->stmts.end()) {
            c->stmt = it->second;
            c->stmt_cached = true;
            first = kBind;
        } else {
            c->stmt = mysql_stmt_init_(c->my);
            if (!c->stmt) return luaio::return_uv_error(L, UV_ENOMEM);
            my_bool on = 1;
            mysql_stmt_attr_set_(c->stmt, STMT_ATTR_UPDATE_MAX_LENGTH, &on);
            first = kPrepare;
        }
    }
    if (mode == kStreamStart) c->stream_timeout = ms;
    return c->begin(L, first, ms, mode);
}

int l_query(lua_State* L) {
    return query(L, "db:query", kWhole);
}

// c:_rows(sql, timeout_ms | nil, ...): runs the query and leaves its rows unread (the text
// protocol's mysql_use_result, or a statement's result not stored): the stream's number for
// _fetch, or false when the statement has no rows.
int l_rows(lua_State* L) {
    return query(L, "db:rows", kStreamStart);
}

// c:_fetch(stream, discard): the next rows of the stream, at most kStreamBatch (an array; true
// after it once the stream is over), or nil and an error. With discard, the rows are read and
// dropped to the end (a loop left early).
int l_fetch(lua_State* L) {
    const char* fname = "db:rows";
    Conn* c = check_conn(L, fname);
    lua_Number id = luaio::check_number(L, 2, fname);
    luaio::check_can_wait(L, fname);
    if (c->step != kIdle) return refuse_busy(L);
    if (c->stream != id)
        luaio::raise(L, fname, "the loop's rows were dropped: its connection ran another query before the loop ended");
    c->discard = lua_toboolean(L, 3);
    c->batch_n = 0;
    lua_newtable(L);
    c->batch.clear();
    c->batch.set(L, -1);
    lua_pop(L, 1);
    return c->begin(L, c->stream_res ? kFetchRow : kStmtFetch, c->stream_timeout, kStreamFetch);
}

int l_ping(lua_State* L) {
    const char* fname = "db:ping";
    Conn* c = check_conn(L, fname);
    unsigned ms = check_ms(L, 2, fname);
    luaio::check_can_wait(L, fname);
    if (c->step != kIdle) return refuse_busy(L);
    if (int n = refuse_streaming(L, c)) return n;
    if (c->broken) {
        lua_pushnil(L);
        push_mysql_error(L, CR_SERVER_GONE_ERROR, "HY000", "the connection is broken (lost or timed out)");
        return 2;
    }
    return c->begin(L, kPing, ms);
}

int l_close(lua_State* L) {
    if (Conn* c = Conn::check_or_closed(L, 1, "db:close")) c->close();
    return 0;
}

int l_thread_id(lua_State* L) {
    Conn* c = check_conn(L, "db:threadId");
    lua_pushnumber(L, static_cast<double>(mysql_thread_id_(c->my)));
    return 1;
}

// c:_streaming(): the number of the stream whose rows are not all read, or nil.
int l_streaming(lua_State* L) {
    Conn* c = Conn::check_or_closed(L, 1, "db:streaming");
    if (c && c->stream)
        lua_pushnumber(L, c->stream);
    else
        lua_pushnil(L);
    return 1;
}

// Whether the connection can take another query (false once lost, timed out or closed).
int l_usable(lua_State* L) {
    Conn* c = Conn::check_or_closed(L, 1, "db:usable");
    lua_pushboolean(L, c && !c->broken);
    return 1;
}

// An idle pooled connection does not keep the process alive.
int set_ref(lua_State* L, bool ref, const char* fname) {
    Conn* c = check_conn(L, fname);
    c->watch.set_ref(ref);
    auto* d = reinterpret_cast<uv_handle_t*>(&c->deadline);
    auto* t = reinterpret_cast<uv_handle_t*>(&c->libtimer);
    if (ref) {
        uv_ref(d);
        uv_ref(t);
    } else {
        uv_unref(d);
        uv_unref(t);
    }
    return 0;
}

int l_ref(lua_State* L) {
    return set_ref(L, true, "db:ref");
}

int l_unref(lua_State* L) {
    return set_ref(L, false, "db:unref");
}

int l_set_killer(lua_State* L) {
    if (!lua_isfunction(L, 1)) luaio::raise(L, "setKiller", "expected a function");
    g_killer.clear();
    g_killer.set(L, 1);
    return 0;
}

} // namespace

extern "C" int luaopen_luaio_mysql(lua_State* L) {
#define LUAIO_MYSQL_SYM(f) {#f, reinterpret_cast<void**>(&f##_)},
    const luaio::Symbol syms[] = {LUAIO_MYSQL(LUAIO_MYSQL_SYM)};
#undef LUAIO_MYSQL_SYM
    std::string err;
    if (!luaio::load_library("libmariadb.so.3", "libmariadb3", syms, std::size(syms), &err))
        luaio::raise(L, "require \"mysql\"", "%s", err.c_str());
    const luaL_Reg methods[] = {
        {"_query", l_query},        {"_rows", l_rows}, {"_fetch", l_fetch}, {"_streaming", l_streaming},
        {"reconnect", l_reconnect}, {"ping", l_ping},  {"close", l_close},  {"threadId", l_thread_id},
        {"usable", l_usable},       {"ref", l_ref},    {"unref", l_unref},  {"__gc", Conn::l_gc},
        {nullptr, nullptr}};
    const luaL_Reg funcs[] = {{"connect", l_connect}, {"setKiller", l_set_killer}, {nullptr, nullptr}};
    luaL_newlib(L, funcs);
    luaio::new_class(L, Conn::kClass, methods);
    lua_getfield(L, -1, "__index");
    lua_setfield(L, -3, "methods"); // lib/mysql.lua adds its methods to the class
    lua_pop(L, 1);
    return 1;
}
