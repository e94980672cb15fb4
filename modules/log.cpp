// The log module's sink (luaio.log; the public module is lib/log.lua): finished lines go to a
// bounded in-memory queue that libuv writes out in the thread pool, so a log call never waits
// for a terminal, a pipe or a disk. Under overload lines are dropped and counted, and the count
// is itself logged once the queue drains.
//
//   sink.write(line)              queue one line ("\n" is added)
//   sink.setOutput("stderr" | "stdout" | path) -> true | nil, err
//   sink.setFormat("text" | "json")   the format of the lines the sink makes itself
//   sink.setLevel("debug" | "info" | "warn" | "error")   the least level of luaio's own messages
//   sink.stamp()                  "2026-12-03T10:00:00.123Z"
//   sink.dropped(), sink.flush(), sink.reopen(), sink.setQueueSize(bytes), sink.capture()
//
// sink.capture() routes luaio's own messages (luaio::report_error: failed tasks, handler errors)
// through the sink, formatted as the user's lines are. The queue is written out at exit and when a
// fatal signal ends the process (luaio::add_flush_hook) with plain blocking writes.
#include "runtime/luaio.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>

#include "modules/log.h"

namespace {

constexpr size_t kDefaultQueue = 1 << 20; // bytes waiting to be written

struct Sink {
    int fd = 2;
    std::string path;    // of a file output (empty: stdout/stderr)
    int retired_fd = -1; // a file replaced while a write to it was in flight
    std::string pending, writing;
    uv_work_t work;
    int write_fd = 2;  // the output of the batch in `writing`
    bool busy = false; // a batch is in the thread pool (until its after-work callback)
    size_t cap = kDefaultQueue;
    uint64_t dropped = 0, unreported = 0;
    bool json = false;
    int threshold = 1; // luaio's own messages below it are not written (0 debug ... 3 error)
    uv_signal_t usr1;
    bool usr1_started = false;
    // Lines are written in batches, as nginx's buffered access_log: once 64 KiB are queued
    // (checked after each poll phase) or 20 ms after the first queued line (the timer), and at
    // once for luaio's own error messages. A write per line would cost a thread-pool round trip
    // each, more than the request it logs. Both handles are unreferenced: they do not keep the
    // process alive, and what is queued at exit is written by the atexit flush.
    uv_check_t check;
    uv_timer_t timer;
    bool handles = false;
    bool urgent = false;
};

constexpr size_t kBatch = 64 * 1024;
constexpr uint64_t kFlushMs = 20;

Sink& g_sink = *new Sink; // never destroyed: atexit and late writes use it

// Where the batch in g_sink.writing is, shared with the thread pool's worker: a flush at exit or
// on a fatal signal (flush_now) writes a batch the worker has not begun itself, or waits for the
// one it is writing, so that no line is lost and none is written twice.
enum BatchState : int { kIdle, kQueued, kWriting, kWritten, kTaken };
std::atomic<int> g_batch{kIdle};

// The clock of log lines, formatted once per second: the ISO 8601 time of text and JSON lines
// (its milliseconds added per line) and the [time] of combined access log lines.
struct Clock {
    int64_t second = -1;
    char iso[80]; // "2026-12-03T10:00:00." (20 bytes)
    char clf[80]; // "03/Dec/2026:10:00:00 +0000"
    size_t clf_len = 0;
    int millis = 0;
};

Clock& clock_now() {
    static Clock c;
    uv_timeval64_t tv;
    uv_gettimeofday(&tv);
    c.millis = static_cast<int>(tv.tv_usec / 1000);
    if (tv.tv_sec != c.second) {
        c.second = tv.tv_sec;
        time_t secs = static_cast<time_t>(tv.tv_sec);
        struct tm tm;
        gmtime_r(&secs, &tm);
        std::snprintf(c.iso, sizeof c.iso, "%04d-%02d-%02dT%02d:%02d:%02d.", tm.tm_year + 1900, tm.tm_mon + 1,
                      tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
        // Month names are English whatever the locale (os.setlocale), as nginx's.
        static const char kMonths[][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                          "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
        int n = std::snprintf(c.clf, sizeof c.clf, "%02d/%s/%04d:%02d:%02d:%02d +0000", tm.tm_mday, kMonths[tm.tm_mon],
                              tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
        c.clf_len = n > 0 ? static_cast<size_t>(n) : 0;
    }
    return c;
}

// Appends "2026-12-03T10:00:00.123Z".
void append_stamp(std::string& out) {
    Clock& c = clock_now();
    out.append(c.iso, 20);
    out += static_cast<char>('0' + c.millis / 100);
    out += static_cast<char>('0' + c.millis / 10 % 10);
    out += static_cast<char>('0' + c.millis % 10);
    out += 'Z';
}

std::string stamp() {
    std::string s;
    append_stamp(s);
    return s;
}

void json_string(std::string& out, const char* s, size_t n) {
    out += '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = static_cast<unsigned char>(s[i]);
        if (c == '"' || c == '\\') {
            out += '\\';
            out += static_cast<char>(c);
        } else if (c == '\n') {
            out += "\\n";
        } else if (c == '\t') {
            out += "\\t";
        } else if (c < 0x20) {
            char esc[8];
            std::snprintf(esc, sizeof esc, "\\u%04x", c);
            out += esc;
        } else {
            out += static_cast<char>(c);
        }
    }
    out += '"';
}

// A line the sink makes itself (luaio's messages, the dropped count), in the current format.
std::string own_line(const char* level, const char* upper, const std::string& msg) {
    std::string line;
    if (g_sink.json) {
        line = "{\"time\":\"" + stamp() + "\",\"level\":\"" + level + "\",\"msg\":";
        json_string(line, msg.data(), msg.size());
        line += ",\"source\":\"luaio\"}";
    } else {
        line = stamp() + " " + upper + " " + msg;
    }
    return line;
}

// A blocking write of all of p (as far as the output takes it).
void write_all(int fd, const char* p, size_t n) {
    while (n > 0) {
        ssize_t k = ::write(fd, p, n);
        if (k < 0) {
            if (errno == EINTR) continue;
            return;
        }
        p += k;
        n -= static_cast<size_t>(k);
    }
}

// In the thread pool: writes the batch unless a flush took it first.
void write_batch(uv_work_t*) {
    int expected = kQueued;
    if (!g_batch.compare_exchange_strong(expected, kWriting)) return;
    write_all(g_sink.write_fd, g_sink.writing.data(), g_sink.writing.size());
    g_batch.store(kWritten);
}

void batch_done(uv_work_t*, int);

// Starts writing the queue when no write is in flight.
void kick() {
    if (g_sink.busy || g_sink.pending.empty() || !luaio::loop()) return;
    g_sink.writing.swap(g_sink.pending);
    g_sink.pending.clear();
    g_sink.busy = true;
    g_sink.write_fd = g_sink.fd;
    g_batch.store(kQueued);
    if (uv_queue_work(luaio::loop(), &g_sink.work, write_batch, batch_done) < 0) {
        g_batch.store(kIdle);
        g_sink.busy = false;
        write_all(g_sink.write_fd, g_sink.writing.data(), g_sink.writing.size());
        g_sink.writing.clear();
    }
}

// Writes now when a batch is full or a line is urgent, else makes sure the timer will.
void maybe_kick() {
    if (g_sink.pending.empty()) return;
    if (g_sink.pending.size() >= kBatch || g_sink.urgent) {
        g_sink.urgent = false;
        kick();
    } else if (g_sink.handles && !uv_is_active(reinterpret_cast<uv_handle_t*>(&g_sink.timer))) {
        luaio::start_timer(
            &g_sink.timer, [](uv_timer_t*) { kick(); }, kFlushMs);
    }
}

// A line was appended to the queue: makes sure it will be written (the handles are made with the
// first line, when the loop exists).
void queued(bool urgent) {
    if (urgent) g_sink.urgent = true;
    if (!g_sink.handles && luaio::loop()) {
        g_sink.handles = true;
        uv_check_init(luaio::loop(), &g_sink.check);
        uv_check_start(&g_sink.check, [](uv_check_t*) { maybe_kick(); });
        uv_unref(reinterpret_cast<uv_handle_t*>(&g_sink.check));
        uv_timer_init(luaio::loop(), &g_sink.timer);
        uv_unref(reinterpret_cast<uv_handle_t*>(&g_sink.timer));
    }
    if (g_sink.handles && !uv_is_active(reinterpret_cast<uv_handle_t*>(&g_sink.timer)))
        luaio::start_timer(
            &g_sink.timer, [](uv_timer_t*) { kick(); }, kFlushMs);
}

void drop() {
    g_sink.dropped++;
    g_sink.unreported++;
}

void push_line(const std::string& line, bool urgent = false) {
    if (g_sink.pending.size() + line.size() + 1 > g_sink.cap) return drop();
    g_sink.pending += line;
    g_sink.pending += '\n';
    queued(urgent);
}

void batch_done(uv_work_t*, int) {
    g_batch.store(kIdle);
    g_sink.busy = false;
    g_sink.writing.clear();
    if (g_sink.retired_fd >= 0) {
        ::close(g_sink.retired_fd);
        g_sink.retired_fd = -1;
    }
    if (g_sink.unreported) {
        std::string msg = "log: " + std::to_string(g_sink.unreported) + " lines dropped (the queue was full)";
        g_sink.unreported = 0;
        std::string line = own_line("warn", "WARN", msg);
        g_sink.pending += line;
        g_sink.pending += '\n';
    }
    maybe_kick();
}

// Writes everything queued with blocking writes, in order: the batch in flight first (unless the
// worker wrote it), then the queue. Runs at exit and when a fatal signal ends the process (a
// flush hook of the runtime: no allocation), and for log.flush().
void flush_now() {
    if (g_sink.busy) {
        int expected = kQueued;
        if (g_batch.compare_exchange_strong(expected, kTaken)) {
            write_all(g_sink.write_fd, g_sink.writing.data(), g_sink.writing.size());
        } else {
            // The worker is writing it: wait for that (bounded, in case this runs in a signal
            // handler on the worker's own thread).
            for (int i = 0; i < 1000 && g_batch.load() == kWriting; i++) {
                struct timespec ms = {0, 1000000};
                nanosleep(&ms, nullptr);
            }
        }
    }
    write_all(g_sink.fd, g_sink.pending.data(), g_sink.pending.size());
    g_sink.pending.clear();
}

// luaio's own messages, at their level ("error", "warn", "info"), unless below log.setLevel's.
void report_hook(const char* level, const char* prefix, const char* msg) {
    static const char* const kNames[] = {"debug", "info", "warn", "error"};
    static const char* const kUpper[] = {"DEBUG", "INFO", "WARN", "ERROR"};
    int l = 3;
    while (l > 0 && std::strcmp(kNames[l], level) != 0) l--;
    if (l < g_sink.threshold) return;
    push_line(own_line(kNames[l], kUpper[l], std::string("luaio: ") + prefix + msg), true);
}

int open_file(lua_State* L, const char* path) {
    int fd = ::open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        lua_pushnil(L);
        luaio::push_uv_error(L, -errno);
        luaio::set_error_path(L, "open", path);
        return -1;
    }
    return fd;
}

void switch_fd(int fd) {
    int old = g_sink.fd;
    g_sink.fd = fd;
    if (old <= 2) return;
    if (g_sink.busy)
        g_sink.retired_fd = old; // closed once the write to it is done
    else
        ::close(old);
}

void on_usr1(uv_signal_t*, int) {
    if (g_sink.path.empty()) return;
    int fd = ::open(g_sink.path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0) switch_fd(fd);
}

int l_write(lua_State* L) {
    size_t len;
    const char* s = luaio::check_string(L, 1, "log.raw", &len);
    push_line(std::string(s, len));
    return 0;
}

int l_set_output(lua_State* L) {
    const char* target = luaio::check_string(L, 1, "log.setOutput");
    int fd;
    std::string path;
    if (!std::strcmp(target, "stderr")) {
        fd = 2;
    } else if (!std::strcmp(target, "stdout")) {
        fd = 1;
    } else {
        fd = open_file(L, target);
        if (fd < 0) return 2;
        path = target;
    }
    switch_fd(fd);
    g_sink.path = path;
    // SIGUSR1 reopens a log file (nginx's convention for logrotate). Unreferenced: the watcher
    // does not keep the process alive.
    if (!path.empty() && !g_sink.usr1_started) {
        uv_signal_init(luaio::loop(), &g_sink.usr1);
        uv_signal_start(&g_sink.usr1, on_usr1, SIGUSR1);
        uv_unref(reinterpret_cast<uv_handle_t*>(&g_sink.usr1));
        g_sink.usr1_started = true;
    }
    lua_pushboolean(L, 1);
    return 1;
}

int l_reopen(lua_State*) {
    on_usr1(nullptr, SIGUSR1);
    return 0;
}

int l_set_format(lua_State* L) {
    static const char* const kFormats[] = {"text", "json", nullptr};
    g_sink.json = luaL_checkoption(L, 1, nullptr, kFormats) == 1;
    return 0;
}

int l_set_level(lua_State* L) {
    static const char* const kLevels[] = {"debug", "info", "warn", "error", nullptr};
    g_sink.threshold = luaL_checkoption(L, 1, nullptr, kLevels);
    return 0;
}

int l_stamp(lua_State* L) {
    std::string s = stamp();
    lua_pushlstring(L, s.data(), s.size());
    return 1;
}

int l_dropped(lua_State* L) {
    lua_pushnumber(L, static_cast<lua_Number>(g_sink.dropped));
    return 1;
}

int l_flush(lua_State*) {
    flush_now();
    return 0;
}

int l_set_queue_size(lua_State* L) {
    lua_Integer n = luaio::check_integer(L, 1, "log.setQueueSize");
    if (n < 1) luaio::raise(L, "log.setQueueSize", "the queue size must be at least 1 byte");
    g_sink.cap = static_cast<size_t>(n);
    return 0;
}

int l_capture(lua_State*) {
    luaio::set_report_hook(report_hook);
    return 0;
}

} // namespace

namespace {

// The access line is written through a raw pointer into room reserved in the queue (a line is
// made per request: appending byte by byte to a std::string costs more than the request's own
// head). Every writer returns the position after what it wrote.
char* put(char* p, const char* s, size_t n) {
    std::memcpy(p, s, n);
    return p + n;
}
template <size_t N> char* put(char* p, const char (&lit)[N]) {
    return put(p, lit, N - 1);
}

char* put_uint(char* p, uint64_t v) {
    char d[20];
    int n = 0;
    do {
        d[n++] = static_cast<char>('0' + v % 10);
        v /= 10;
    } while (v);
    while (n) *p++ = d[--n];
    return p;
}

// Bytes a value of a line shows escaped: control bytes, '"' and '\' (both formats).
struct EscapeTable {
    bool esc[256] = {};
    constexpr EscapeTable() {
        for (int c = 0; c < 0x20; c++) esc[c] = true;
        esc[0x7f] = esc['"'] = esc['\\'] = true;
    }
};
constexpr EscapeTable kEscape;

// A value of a combined line: escaped bytes as \xHH (as nginx escapes them), "-" when empty.
// Needs 4 bytes of room per byte of v (and 1 for an empty one). Values are short: copied byte
// by byte as they are checked, which costs less than a memcpy call per value.
char* put_clf(char* p, std::string_view v) {
    if (v.empty()) {
        *p++ = '-';
        return p;
    }
    static const char kHex[] = "0123456789ABCDEF";
    for (char ch : v) {
        unsigned char c = static_cast<unsigned char>(ch);
        if (!kEscape.esc[c]) {
            *p++ = ch;
            continue;
        }
        *p++ = '\\';
        *p++ = 'x';
        *p++ = kHex[c >> 4];
        *p++ = kHex[c & 15];
    }
    return p;
}

// A JSON string: '"' and '\' escaped by a backslash, control bytes as \u00XX. Needs 6 bytes of
// room per byte of v, and 2.
char* put_json(char* p, std::string_view v) {
    static const char kHex[] = "0123456789abcdef";
    *p++ = '"';
    size_t run = 0;
    for (size_t i = 0; i < v.size(); i++) {
        unsigned char c = static_cast<unsigned char>(v[i]);
        if (!kEscape.esc[c]) continue;
        p = put(p, v.data() + run, i - run);
        *p++ = '\\';
        if (c == '"' || c == '\\') {
            *p++ = static_cast<char>(c);
        } else {
            p = put(p, "u00");
            *p++ = kHex[c >> 4];
            *p++ = kHex[c & 15];
        }
        run = i + 1;
    }
    p = put(p, v.data() + run, v.size() - run);
    *p++ = '"';
    return p;
}

// 127.0.0.1 - - [03/Dec/2026:10:00:00 +0000] "GET /a?b=1 HTTP/1.1" 200 5 "referer" "user agent"
char* put_combined(char* p, const luaio::log::AccessEntry& e) {
    p = put_clf(p, e.peer);
    p = put(p, " - - [");
    Clock& c = clock_now();
    p = put(p, c.clf, c.clf_len);
    p = put(p, "] \"");
    if (e.method.empty()) { // a head that could not be parsed: what came of its request line
        p = put_clf(p, e.request);
    } else {
        p = put_clf(p, e.method);
        *p++ = ' ';
        p = put_clf(p, e.target);
        p = put(p, " HTTP/");
        *p++ = static_cast<char>('0' + e.major % 10);
        *p++ = '.';
        *p++ = static_cast<char>('0' + e.minor % 10);
    }
    p = put(p, "\" ");
    if (e.status >= 100 && e.status <= 999) {
        *p++ = static_cast<char>('0' + e.status / 100);
        *p++ = static_cast<char>('0' + e.status / 10 % 10);
        *p++ = static_cast<char>('0' + e.status % 10);
    } else {
        p = put_uint(p, static_cast<uint64_t>(e.status));
    }
    *p++ = ' ';
    p = put_uint(p, e.bytes);
    p = put(p, " \"");
    p = put_clf(p, e.referer);
    p = put(p, "\" \"");
    p = put_clf(p, e.user_agent);
    *p++ = '"';
    return p;
}

// {"time":"...","remote":"...","method":"GET","path":"/a?b=1","status":200,"bytes":5,"ms":0.042,
//  "ua":"...","referer":"..."} (ua and referer only when the request had them; "request" in
//  place of method and path for a head that could not be parsed)
char* put_json_line(char* p, const luaio::log::AccessEntry& e) {
    Clock& c = clock_now();
    p = put(p, "{\"time\":\"");
    p = put(p, c.iso, 20);
    *p++ = static_cast<char>('0' + c.millis / 100);
    *p++ = static_cast<char>('0' + c.millis / 10 % 10);
    *p++ = static_cast<char>('0' + c.millis % 10);
    p = put(p, "Z\",\"remote\":");
    p = put_json(p, e.peer.empty() ? std::string_view("-") : e.peer);
    if (e.method.empty()) {
        p = put(p, ",\"request\":");
        p = put_json(p, e.request);
    } else {
        p = put(p, ",\"method\":");
        p = put_json(p, e.method);
        p = put(p, ",\"path\":");
        p = put_json(p, e.target);
    }
    p = put(p, ",\"status\":");
    p = put_uint(p, static_cast<uint64_t>(e.status));
    p = put(p, ",\"bytes\":");
    p = put_uint(p, e.bytes);
    p = put(p, ",\"ms\":");
    p = put_uint(p, e.micros / 1000);
    uint64_t frac = e.micros % 1000;
    *p++ = '.';
    *p++ = static_cast<char>('0' + frac / 100);
    *p++ = static_cast<char>('0' + frac / 10 % 10);
    *p++ = static_cast<char>('0' + frac % 10);
    if (!e.user_agent.empty()) {
        p = put(p, ",\"ua\":");
        p = put_json(p, e.user_agent);
    }
    if (!e.referer.empty()) {
        p = put(p, ",\"referer\":");
        p = put_json(p, e.referer);
    }
    *p++ = '}';
    return p;
}

} // namespace

namespace luaio::log {

// Formats the line on the stack (a long one in a string of its own) and appends it to the queue;
// a line that does not fit is dropped and counted.
void access(AccessFormat format, const AccessEntry& e) {
    // The most a line can take: every byte of its values escaped, plus its fixed parts.
    size_t values =
        e.peer.size() + e.method.size() + e.target.size() + e.referer.size() + e.user_agent.size() + e.request.size();
    size_t room = values * 6 + 256;
    char stack[4096];
    std::string big;
    char* p = stack;
    if (room > sizeof stack) {
        big.resize(room);
        p = &big[0];
    }
    char* end = format == AccessFormat::Json ? put_json_line(p, e) : put_combined(p, e);
    *end++ = '\n';
    size_t len = static_cast<size_t>(end - p);
    if (g_sink.pending.size() + len > g_sink.cap) return drop();
    g_sink.pending.append(p, len);
    queued(false);
}

} // namespace luaio::log

extern "C" int luaopen_luaio_log(lua_State* L) {
    static bool registered = false;
    if (!registered) {
        registered = true;
        luaio::add_flush_hook(flush_now);
    }
    const luaL_Reg funcs[] = {
        {"write", l_write},          {"setOutput", l_set_output}, {"reopen", l_reopen},
        {"setFormat", l_set_format}, {"setLevel", l_set_level},   {"stamp", l_stamp},
        {"dropped", l_dropped},      {"flush", l_flush},          {"setQueueSize", l_set_queue_size},
        {"capture", l_capture},      {nullptr, nullptr}};
    luaL_newlib(L, funcs);
    return 1;
}
