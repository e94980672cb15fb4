// Stream: reading, writing, timeouts and closing of libuv streams for Lua (see stream.h).
#include "runtime/stream.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/sendfile.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <list>
#include <vector>

namespace luaio {

namespace {

// libuv reads into this buffer, one read callback at a time; whatever no reader takes at
// once is copied into the stream's own pending buffer.
constexpr size_t kScratchSize = 64 * 1024;
char g_scratch[kScratchSize];

constexpr int kMaxIovecs = 64;

// A queued write: the bytes it copied follow it; the rest stay where they are, in the Lua value
// that `anchor` references until the write is done (see write_bufs).
struct WriteReq {
    uv_write_t req;
    Stream* stream;
    int anchor;
    WriteDone done; // a C++ write's completion, or nullptr
    void* done_data;
    char data[1]; // the copied bytes follow
};

// A file range being sent (Stream::write_file): at most one per stream, the waiting writer's.
struct FileSend {
    int fd;
    int64_t off;
    uint64_t left;
    bool no_sendfile; // the kernel refused sendfile(2) for this pair of descriptors: blocks only
    bool corked;      // TCP_CORK is on for the send (cork_file)
};

// A plain stream waits for a full socket with one queued block of this size (a transport uses
// kFileBlock); one buffer serves every stream, as the blocks are copied when queued.
constexpr size_t kWaitBlock = 16 * 1024;
// The most one sendfile(2) call sends (nginx's sendfile_max_chunk default). On loopback one call
// sent a whole 100 MB file while the loop waited 55 ms, and at 0.7x the throughput of chunks;
// after a chunk the send goes on at the next loop turn (behind a queued block), so other
// connections run in between.
constexpr size_t kSendfileChunk = 2 * 1024 * 1024;
// A plain TCP stream sends a file range at least this long corked (TCP_CORK, nginx's tcp_nopush):
// only full segments go out until the send ends, the head with the file's first bytes. Without
// it each sendfile call's last partial segment was pushed at once: 0.81x nginx's throughput for
// one 100 MB download on loopback, 1.0x with it. Shorter ranges skip the two setsockopt calls.
constexpr uint64_t kCorkMin = 128 * 1024;

// Turns TCP_CORK on or off on the TCP stream s (errors ignored: a closing socket needs neither).
void set_cork(Stream* s, int on) {
    uv_os_fd_t fd;
    if (uv_fileno(s->handle(), &fd) == 0) ::setsockopt(fd, IPPROTO_TCP, TCP_CORK, &on, sizeof on);
}
char g_file_block[kFileBlock];

void push_line_too_long(lua_State* L, size_t max) {
    char msg[96];
    std::snprintf(msg, sizeof msg, "line longer than %zu bytes", max);
    push_error(L, LUAIO_ELINETOOLONG, msg);
}

// A write larger than this on a stream with a transport is encoded a chunk at a time, the next
// once the kernel took the one before: a large body never exists whole as ciphertext.
constexpr size_t kEncodeChunk = 128 * 1024;

// The rest of such a write: the plaintext buffers, in `copied` (bytes the write did not get from
// a Lua value) or in the value `anchor` references.
struct Chunked {
    std::vector<uv_buf_t> bufs;
    std::string copied;
    std::list<std::string> later; // writes made while this one goes out (by no waiting task)
    size_t next = 0;              // the first buffer not encoded whole
    size_t off = 0;               // its bytes already encoded
    int anchor = LUA_NOREF;
    bool shutdown = false; // a shutdown waits for the rest to be encoded
    ~Chunked() {
        if (anchor != LUA_NOREF && main_state()) luaL_unref(main_state(), LUA_REGISTRYINDEX, anchor);
    }
};

} // namespace

struct Stream::Extra {
    uv_timer_t timer;
    bool timer_open = false;
    uint64_t read_deadline = 0;
    uint64_t write_deadline = 0; // the waiting writer's next progress check
    uint64_t write_progress = 0; // when the kernel was last seen taking its bytes
    uint64_t deadline = 0;       // set_deadline: no wait goes on beyond it
    size_t write_queued = 0;     // the bytes still queued then
    Waiter writer;
    Waiter shutter;
    std::string delim;
    Transport* transport = nullptr; // owned; nullptr for a plain stream
    Chunked* chunked = nullptr;     // a large write being encoded
    FileSend* file = nullptr;       // a write_file in progress (counted in writes_in_flight_)
    ~Extra() {
        delete chunked;
        delete file;
        delete transport;
    }
};

Stream::~Stream() {
    delete extra_;
    if (owns_consumer_) delete consumer_;
}

// Everything that touches Stream internals from libuv callbacks and Lua bindings.
struct Stream::Impl {
    // Try to complete the current read request from data[0, len). Returns the number of
    // results pushed on L, or -1 if the request needs more data. *used is set to the
    // number of bytes consumed.
    static int satisfy(Stream* s, lua_State* L, const char* data, size_t len, size_t* used) {
        *used = 0;
        switch (s->mode_) {
        case ReadMode::Count:
            if (len >= s->want_) {
                lua_pushlstring(L, data, s->want_);
                *used = s->want_;
                return 1;
            }
            break;
        case ReadMode::Any:
            if (len > 0) {
                lua_pushlstring(L, data, len);
                *used = len;
                return 1;
            }
            break;
        case ReadMode::Line:
        case ReadMode::Until: {
            const char* d = s->mode_ == ReadMode::Line ? "\n" : s->extra_->delim.data();
            size_t dlen = s->mode_ == ReadMode::Line ? 1 : s->extra_->delim.size();
            // len > 0 first: at the end of the stream data is null with len 0, and GCC -O3 cannot
            // tell that dlen >= 1 keeps memmem from seeing it (a -Wnonnull false positive).
            const void* hit = len > 0 && dlen <= len ? memmem(data, len, d, dlen) : nullptr;
            if (hit) {
                size_t n = static_cast<const char*>(hit) - data;
                if (n > s->want_) {
                    lua_pushnil(L);
                    push_line_too_long(L, s->want_);
                    return 2;
                }
                *used = n + dlen;
                if (s->mode_ == ReadMode::Line && n > 0 && data[n - 1] == '\r') n--;
                lua_pushlstring(L, data, n);
                return 1;
            }
            // The delimiter may straddle the end: only bytes that cannot start it count.
            if (len >= size_t(s->want_) + dlen) {
                lua_pushnil(L);
                push_line_too_long(L, s->want_);
                return 2;
            }
            break;
        }
        case ReadMode::None:
            return -1;
        case ReadMode::Custom:
            return consume(s, L, data, len, used);
        }
        if (!s->read_err_) return -1;
        // End of stream (or a read error): hand over what is left, then the error.
        if (len > 0) {
            lua_pushlstring(L, data, len);
            *used = len;
        } else {
            lua_pushnil(L);
        }
        push_read_error(L, s);
        return 2;
    }

    // The error that ended reading, with the transport's message when it is the transport's.
    static void push_read_error(lua_State* L, Stream* s) {
        Transport* t = s->extra_ ? s->extra_->transport : nullptr;
        if (t)
            t->push_error(L, s->read_err_);
        else
            push_uv_error(L, s->read_err_);
    }

    // The consumer's results; when it waits for bytes that cannot come, nil and the error.
    static int consume(Stream* s, lua_State* L, const char* data, size_t len, size_t* used) {
        int n = s->consumer_->consume(L, data, len, s->read_err_, used);
        if (n >= 0 || !s->read_err_) return n;
        lua_pushnil(L);
        push_read_error(L, s);
        return 2;
    }

    static void consume_pending(Stream* s, size_t n) {
        Buffer& b = s->pending_;
        b.off += n;
        if (b.off >= b.size) release(b); // an idle stream holds no buffer
    }

    static size_t pending_size(const Stream* s) { return s->pending_.size - s->pending_.off; }
    static const char* pending_data(const Stream* s) { return s->pending_.data + s->pending_.off; }

    static void release(Buffer& b) {
        std::free(b.data);
        b = Buffer();
    }

    // Appends after the unread bytes, first moving them to the front of the block.
    static void append(Buffer& b, const char* data, size_t len) {
        if (len == 0) return; // data may be null then (end of stream)
        if (b.off > 0) {
            std::memmove(b.data, b.data + b.off, b.size - b.off);
            b.size -= b.off;
            b.off = 0;
        }
        size_t need = size_t(b.size) + len;
        if (need > b.cap) {
            size_t cap = b.cap ? b.cap : 256;
            while (cap < need) cap *= 2;
            char* p = need <= UINT32_MAX ? static_cast<char*>(std::realloc(b.data, cap)) : nullptr;
            if (!p) {
                // No exception may leave a libuv callback; like LuaJIT, give up on exhaustion.
                std::fputs("luaio: out of memory\n", stderr);
                std::abort();
            }
            b.data = p;
            b.cap = static_cast<uint32_t>(cap < UINT32_MAX ? cap : UINT32_MAX);
        }
        std::memcpy(b.data + b.size, data, len);
        b.size = static_cast<uint32_t>(need);
    }

    static Extra* extra(Stream* s) {
        if (!s->extra_) s->extra_ = new Extra;
        return s->extra_;
    }

    static void on_alloc(uv_handle_t*, size_t, uv_buf_t* buf) {
        buf->base = g_scratch;
        buf->len = kScratchSize;
    }

    static void on_read(uv_stream_t* handle, ssize_t nread, const uv_buf_t* buf) {
        Stream* s = static_cast<Stream*>(handle->data);
        if (nread == 0) return;
        Transport* t = s->extra_ ? s->extra_->transport : nullptr;
        if (nread < 0) {
            if (t) return t->read_end(s, static_cast<int>(nread)); // it calls end_reading
            s->end_reading(static_cast<int>(nread));
            return;
        }
        if (t) return t->bytes_in(s, buf->base, static_cast<size_t>(nread));
        deliver(s, buf->base, static_cast<size_t>(nread));
    }

    // New bytes (or the end of the stream, len 0) arrive: feed a waiting reader, or the watching
    // consumer, and keep the rest.
    static void deliver(Stream* s, const char* data, size_t len) {
        if (s->reader_.waiting() || s->watching_) {
            // A watching consumer produces its results on the main state (no task waits).
            lua_State* L = s->watching_ ? main_state() : task_of(s->reader_);
            size_t used = 0;
            int n;
            if (pending_size(s) == 0) {
                n = satisfy(s, L, data, len, &used);
                data += used;
                len -= used;
            } else {
                append(s->pending_, data, len);
                len = 0;
                n = satisfy(s, L, pending_data(s), pending_size(s), &used);
                consume_pending(s, used);
            }
            if (len > 0) append(s->pending_, data, len); // settled before anything runs
            if (n >= 0) {
                s->mode_ = ReadMode::None;
                if (s->watching_) {
                    s->watching_ = false;
                    s->consumer_->ready(L, n);
                } else {
                    Parked p = detach(s->reader_);
                    arm_timer(s);
                    resume_parked(p, n);
                }
            }
        } else if (len > 0) {
            append(s->pending_, data, len);
        }
        // The resumed reader may have closed the stream. A watching consumer bounds what it
        // buffers itself (a head up to its size limit).
        if (s->reading_ && !s->closing_ && !s->reader_.waiting() && !s->watching_ && pending_size(s) > s->high_water) {
            uv_read_stop(s->stream());
            s->reading_ = false;
        }
    }

    // Timeouts: one lazily created timer per stream, armed for the nearest deadline of the
    // waiting reader and writer.
    static void arm_timer(Stream* s) {
        Extra* x = s->extra_;
        if (!x || !x->timer_open) return;
        uint64_t next = 0;
        if (s->reader_.waiting() && x->read_deadline) next = x->read_deadline;
        if (x->writer.waiting() && x->write_deadline && (!next || x->write_deadline < next)) next = x->write_deadline;
        if (!next) {
            uv_timer_stop(&x->timer);
            return;
        }
        uint64_t now = now_ms();
        uv_timer_start(&x->timer, on_timer, next > now ? next - now : 0, 0);
    }

    // Sets a waiter's deadline to `timeout` from now (0: none), or to the stream's own deadline
    // when that comes first, and arms the timer.
    static void set_deadline(Stream* s, uint64_t* deadline, uint64_t timeout) {
        uint64_t at = timeout ? now_ms() + timeout : 0;
        uint64_t bound = s->extra_ ? s->extra_->deadline : 0;
        if (bound && (!at || bound < at)) at = bound;
        *deadline = at;
        if (!at) return;
        Extra* x = extra(s);
        if (!x->timer_open) {
            uv_timer_init(loop(), &x->timer);
            x->timer.data = s;
            x->timer_open = true;
            s->open_handles_++;
        }
        arm_timer(s);
    }

    static void on_timer(uv_timer_t* t) {
        Stream* s = static_cast<Stream*>(t->data);
        uint64_t now = now_ms();
        Extra* x = s->extra_;
        if (s->reader_.waiting() && x->read_deadline && x->read_deadline <= now) {
            // Bytes that arrive later stay in the buffer for the next read: nothing is lost.
            s->mode_ = ReadMode::None;
            wake_uv_error(s->reader_, UV_ETIMEDOUT);
        }
        // The woken reader runs at once and may have closed the stream (and its timer).
        if (s->closing_) return;
        if (x->writer.waiting() && x->write_deadline && x->write_deadline <= now) {
            // write_timeout is the longest time without progress (nginx's send_timeout), not
            // for the whole write: progress is the kernel taking queued bytes, checked every
            // quarter of the timeout, so a stalled writer fails within 1.25 times it. The
            // stream's deadline (set_deadline) ends the wait whatever the progress.
            size_t queued = uv_stream_get_write_queue_size(s->stream());
            if (queued < x->write_queued) {
                x->write_queued = queued;
                x->write_progress = now;
            }
            bool past = x->deadline && x->deadline <= now;
            if (past || (s->write_timeout && now - x->write_progress >= s->write_timeout)) {
                // The data stays queued in the kernel's order; the writer stops waiting for it,
                // and later writes fail too (they would queue behind it: the peer is stuck).
                if (!s->write_err_) s->write_err_ = UV_ETIMEDOUT;
                wake_uv_error(x->writer, UV_ETIMEDOUT, 0);
            } else {
                uint64_t next = s->write_timeout ? std::min(now + write_step(s), x->write_progress + s->write_timeout)
                                                 : x->deadline;
                x->write_deadline = x->deadline ? std::min(next, x->deadline) : next;
            }
        }
        if (!s->closing_) arm_timer(s);
    }

    static uint64_t write_step(Stream* s) { return s->write_timeout >= 4 ? s->write_timeout / 4 : s->write_timeout; }

    static void on_handle_closed(uv_handle_t* h) {
        Stream* s = static_cast<Stream*>(h->data);
        if (--s->open_handles_ > 0) return;
        if (s->on_close) s->on_close(s, s->on_close_data);
        s->~Stream();
        ::operator delete(s);
    }

    static void on_write(uv_write_t* req, int status) {
        WriteReq* w = reinterpret_cast<WriteReq*>(req);
        Stream* s = w->stream;
        // After lua_close (the last loop turn at exit) the state, and the anchored value, are gone.
        if (w->anchor != LUA_NOREF && main_state()) luaL_unref(main_state(), LUA_REGISTRYINDEX, w->anchor);
        WriteDone done = w->done;
        void* done_data = w->done_data;
        ::operator delete(w);
        s->writes_in_flight_--;
        if (status < 0 && !s->write_err_) s->write_err_ = status;
        if (done) done(s, status, done_data);
        if (s->writes_in_flight_ == 0 && s->extra_ && s->extra_->writer.waiting()) {
            Parked p = detach(s->extra_->writer);
            arm_timer(s);
            // A chunked write whose next chunk failed reports that.
            if (status >= 0) status = s->write_err_;
            if (status < 0) {
                push_uv_error(p.task, status);
                resume_parked(p, 1);
            } else {
                resume_parked(p, 0);
            }
        }
    }

    static void on_shutdown(uv_shutdown_t* req, int status) {
        Stream* s = static_cast<Stream*>(req->data);
        delete req;
        if (status < 0)
            wake_uv_error(s->extra_->shutter, status, 0);
        else
            wake(s->extra_->shutter, [](lua_State*) { return 0; });
    }

    // ---------------------------------------------------------------- Lua methods

    // Starts a read request on L: returns its results at once when the buffer can satisfy
    // it, otherwise parks the task.
    static int start_read(lua_State* L, Stream* s, const char* fname) {
        if (s->reader_.waiting()) {
            lua_pushnil(L);
            push_error(L, UV_EBUSY, "another task is already reading this stream");
            return 2;
        }
        s->watching_ = false; // a task reads now
        size_t used = 0;
        int n = satisfy(s, L, pending_data(s), pending_size(s), &used);
        if (used) consume_pending(s, used); // a Custom consumer may take bytes and wait for more
        if (n >= 0) {
            s->mode_ = ReadMode::None;
            return n;
        }
        check_can_wait(L, fname);
        if (!s->reading_ && !s->read_err_) {
            int err = uv_read_start(s->stream(), on_alloc, on_read);
            if (err) {
                s->mode_ = ReadMode::None;
                return return_uv_error(L, err);
            }
            s->reading_ = true;
        }
        int r = park(L, s->reader_);
        if (s->read_timeout)
            set_deadline(s, &extra(s)->read_deadline, s->read_timeout);
        else if (s->extra_)
            set_deadline(s, &s->extra_->read_deadline, 0);
        return r;
    }

    static int l_read(lua_State* L) {
        Stream* s = check(L, 1, "read");
        if (lua_isnoneornil(L, 2)) {
            s->mode_ = ReadMode::Any;
        } else {
            lua_Number n = check_number(L, 2, "read");
            if (!(n >= 0) || n != static_cast<lua_Number>(static_cast<size_t>(n)))
                raise(L, "read", "byte count must be a non-negative integer");
            if (n > static_cast<lua_Number>(kMaxRead)) raise(L, "read", "byte count larger than %zu", kMaxRead);
            if (n == 0) {
                lua_pushliteral(L, "");
                return 1;
            }
            s->mode_ = ReadMode::Count;
            s->want_ = static_cast<uint32_t>(n);
        }
        return start_read(L, s, "read");
    }

    // The longest line a readline/readuntil accepts (default kDefaultMaxLine).
    static size_t check_max(lua_State* L, int idx, const char* fname) {
        lua_Number max =
            lua_isnoneornil(L, idx) ? static_cast<lua_Number>(kDefaultMaxLine) : check_number(L, idx, fname);
        if (!(max >= 0)) raise(L, fname, "maximum length must be a non-negative integer");
        return max < static_cast<lua_Number>(kMaxRead) ? static_cast<size_t>(max) : kMaxRead;
    }

    static int l_readline(lua_State* L) {
        Stream* s = check(L, 1, "readline");
        s->want_ = static_cast<uint32_t>(check_max(L, 2, "readline"));
        s->mode_ = ReadMode::Line;
        return start_read(L, s, "readline");
    }

    static int l_readuntil(lua_State* L) {
        Stream* s = check(L, 1, "readuntil");
        size_t dlen;
        const char* d = check_string(L, 2, "readuntil", &dlen);
        if (dlen == 0) raise(L, "readuntil", "delimiter must not be empty");
        s->want_ = static_cast<uint32_t>(check_max(L, 3, "readuntil"));
        s->mode_ = ReadMode::Until;
        extra(s)->delim.assign(d, dlen);
        return start_read(L, s, "readuntil");
    }

    static int l_write(lua_State* L) { return write_value(L, check(L, 1, "write"), "write", false); }

    // err = s:trywrite(data[, limit]): Stream::try_write (limit: bytes queued, high_water by default).
    static int l_trywrite(lua_State* L) {
        Stream* s = check(L, 1, "trywrite");
        if (!lua_isnoneornil(L, 3) && !(check_number(L, 3, "trywrite") >= 0))
            raise(L, "trywrite", "limit must be a non-negative number of bytes");
        return write_value(L, s, "trywrite", true);
    }

    // The string or array of strings at 2 written (write) or tried (trywrite).
    static int write_value(lua_State* L, Stream* s, const char* fname, bool nowait) {
        uv_buf_t small[kMaxIovecs];
        std::vector<uv_buf_t> big;
        uv_buf_t* bufs = small;
        unsigned nbufs = 0;
        size_t total = 0;
        int t = lua_type(L, 2);
        if (t == LUA_TSTRING) {
            size_t len;
            const char* p = lua_tolstring(L, 2, &len);
            small[0] = uv_buf_init(const_cast<char*>(p), static_cast<unsigned>(len));
            nbufs = 1;
            total = len;
        } else if (t == LUA_TTABLE) {
            size_t n = lua_objlen(L, 2);
            if (n > kMaxIovecs) {
                big.resize(n);
                bufs = big.data();
            }
            for (size_t i = 0; i < n; i++) {
                lua_rawgeti(L, 2, static_cast<int>(i + 1));
                size_t len;
                const char* p = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : nullptr;
                if (!p) raise(L, fname, "element %d of the array is not a string", static_cast<int>(i + 1));
                // The table keeps the string alive while we use the pointer.
                lua_pop(L, 1);
                bufs[nbufs++] = uv_buf_init(const_cast<char*>(p), static_cast<unsigned>(len));
                total += len;
            }
        } else {
            raise(L, fname, "expected a string or an array of strings, got %s", luaL_typename(L, 2));
        }
        if (!nowait) return write_bufs(L, s, bufs, nbufs, total, 2, 0);
        lua_Number n = lua_isnoneornil(L, 3) ? s->high_water : lua_tonumber(L, 3);
        size_t limit = n < 9.2e18 ? static_cast<size_t>(n) : SIZE_MAX; // math.huge: no limit
        int err = s->try_write(L, bufs, nbufs, limit, 2, 0);
        if (err == UV_EAGAIN) {
            char msg[96];
            std::snprintf(msg, sizeof msg, "the peer is slow: %zu bytes are queued", s->write_queue_size());
            push_error(L, UV_EAGAIN, msg);
            return 1;
        }
        if (err) push_uv_error(L, err);
        return err ? 1 : 0;
    }

    // Keeps the value at `anchor` alive until a write is done: a string as it is, an array of
    // strings as a copy of the array (its owner may change it; the strings cannot change).
    static int ref_anchor(lua_State* L, int anchor) {
        if (lua_type(L, anchor) == LUA_TTABLE) {
            int n = static_cast<int>(lua_objlen(L, anchor));
            lua_createtable(L, n, 0);
            for (int i = 1; i <= n; i++) {
                lua_rawgeti(L, anchor, i);
                lua_rawseti(L, -2, i);
            }
        } else {
            lua_pushvalue(L, anchor);
        }
        return luaL_ref(L, LUA_REGISTRYINDEX);
    }

    // The bytes a transport made of a write (reused: no allocation per write once grown).
    static std::string& encoded() {
        static std::string out;
        return out;
    }

    // See Stream::write_buffers (anchor 0: everything is copied).
    static int write_bufs(lua_State* L, Stream* s, uv_buf_t* bufs, unsigned nbufs, size_t total, int anchor,
                          unsigned ncopy) {
        if (s->write_err_) {
            push_uv_error(L, s->write_err_);
            return 1;
        }
        if (s->extra_ && s->extra_->writer.waiting()) {
            push_error(L, UV_EBUSY, "another task is already writing to this stream");
            return 1;
        }
        if (total == 0) return 0;
        uv_buf_t enc;
        if (Transport* t = s->extra_ ? s->extra_->transport : nullptr) {
            if (Chunked* c = s->extra_->chunked) {
                // Behind the rest of a chunked write, in order.
                std::string& copy = *c->later.emplace(c->later.end());
                for (unsigned i = 0; i < nbufs; i++) copy.append(bufs[i].base, bufs[i].len);
                c->bufs.push_back(uv_buf_init(&copy[0], static_cast<unsigned>(copy.size())));
                return wait_written(L, s);
            }
            if (total > kEncodeChunk) return write_chunked(L, s, bufs, nbufs, anchor, ncopy);
            std::string& out = encoded();
            out.clear();
            int err = t->encode(s, bufs, nbufs, &out);
            if (err) {
                s->write_err_ = err;
                t->push_error(L, err);
                return 1;
            }
            enc = uv_buf_init(out.data(), static_cast<unsigned>(out.size()));
            bufs = &enc;
            nbufs = 1;
            total = out.size();
            anchor = 0;
        }
        bool queued = false;
        int err = send(s, L, bufs, nbufs, total, anchor, ncopy, nullptr, nullptr, &queued);
        if (err) {
            push_uv_error(L, err);
            return 1;
        }
        if (!queued) return 0;
        return wait_written(L, s);
    }

    // The writer waits for the queued bytes to be written (write_timeout bounding the time
    // without progress); returns at once when nobody can wait.
    static int wait_written(lua_State* L, Stream* s) {
        if (!in_task() || !lua_isyieldable(L)) return 0; // queued; nobody can wait for it
        int r = park(L, extra(s)->writer);
        if (s->write_timeout) {
            Extra* x = extra(s);
            x->write_queued = uv_stream_get_write_queue_size(s->stream());
            x->write_progress = now_ms();
            set_deadline(s, &x->write_deadline, write_step(s));
        } else if (s->extra_) {
            set_deadline(s, &s->extra_->write_deadline, 0);
        }
        return r;
    }

    // A large write on a transport stream (see kEncodeChunk): bytes not in the Lua value at
    // anchor are copied, that value is referenced, and the chunks go out one by one.
    static int write_chunked(lua_State* L, Stream* s, const uv_buf_t* bufs, unsigned nbufs, int anchor,
                             unsigned ncopy) {
        auto* c = new Chunked;
        if (!anchor) ncopy = nbufs;
        for (unsigned i = 0; i < ncopy; i++) c->copied.append(bufs[i].base, bufs[i].len);
        char* at = &c->copied[0];
        for (unsigned i = 0; i < nbufs; i++) {
            if (i < ncopy) {
                c->bufs.push_back(uv_buf_init(at, bufs[i].len));
                at += bufs[i].len;
            } else {
                c->bufs.push_back(bufs[i]);
            }
        }
        if (ncopy < nbufs) c->anchor = ref_anchor(L, anchor);
        extra(s)->chunked = c;
        int err = encode_next(s);
        if (err) {
            push_write_error(L, s, err);
            return 1;
        }
        if (s->writes_in_flight_ == 0) return 0; // the kernel took it all at once
        return wait_written(L, s);
    }

    // Ends the chunked write; a shutdown that waited for it starts now, after its last bytes.
    static void drop_chunked(Stream* s) {
        bool shut = s->extra_->chunked->shutdown;
        delete s->extra_->chunked;
        s->extra_->chunked = nullptr;
        if (!shut || s->closing_) return;
        if (int err = start_shutdown(s)) wake_uv_error(s->extra_->shutter, err, 0);
    }

    // Encodes and sends chunks of the chunked write until the kernel does not take one at once
    // (on_chunk_sent goes on) or the write is done. Returns 0 or the error (the write is dropped).
    static int encode_next(Stream* s) {
        Transport* t = s->extra_->transport;
        while (Chunked* c = s->extra_->chunked) {
            uv_buf_t part[kMaxIovecs];
            unsigned n = 0;
            size_t len = 0;
            while (c->next < c->bufs.size() && len < kEncodeChunk && n < kMaxIovecs) {
                const uv_buf_t& b = c->bufs[c->next];
                size_t take = std::min(b.len - c->off, kEncodeChunk - len);
                part[n++] = uv_buf_init(b.base + c->off, static_cast<unsigned>(take));
                len += take;
                c->off += take;
                if (c->off == b.len) {
                    c->next++;
                    c->off = 0;
                }
            }
            bool last = c->next == c->bufs.size();
            std::string& out = encoded();
            out.clear();
            int err = t->encode(s, part, n, &out);
            if (err) {
                drop_chunked(s);
                return s->write_err_ = err;
            }
            bool queued = false;
            uv_buf_t b = uv_buf_init(out.data(), static_cast<unsigned>(out.size()));
            err = send(s, nullptr, &b, 1, out.size(), 0, 0, last ? nullptr : on_chunk_sent, nullptr, &queued);
            if (last || err) drop_chunked(s); // after the last bytes were sent or queued
            if (err) return err;
            if (queued || last) return 0;
        }
        return 0;
    }

    // A chunk is written: the kernel made progress, the next chunk goes (see on_write: the writer
    // wakes once nothing is in flight).
    static void on_chunk_sent(Stream* s, int status, void*) {
        if (!s->extra_->chunked) return;
        if (status < 0 || s->closing_) return drop_chunked(s);
        Extra* x = s->extra_;
        x->write_progress = now_ms();
        x->write_queued = uv_stream_get_write_queue_size(s->stream());
        encode_next(s);
    }

    // Writes to the handle: what the kernel takes at once, then the rest queued (a writer never
    // runs ahead of its peer). Bytes in Lua strings (bufs[ncopy, nbufs), from the value at anchor
    // on L) are not copied: the value is referenced until the write is done, so a large body
    // shared by slow clients exists once; the others are copied. Returns 0 or the error;
    // *queued tells whether anything was queued (done is then called when it is written).
    static int send(Stream* s, lua_State* L, const uv_buf_t* bufs, unsigned nbufs, size_t total, int anchor,
                    unsigned ncopy, WriteDone done, void* done_data, bool* queued) {
        *queued = false;
        // Fast path: the kernel takes it all now, no allocation, no wait.
        size_t sent = 0;
        if (s->writes_in_flight_ == 0) {
            int r = uv_try_write(s->stream(), bufs, nbufs);
            if (r < 0 && r != UV_EAGAIN && r != UV_ENOSYS) {
                s->write_err_ = r;
                return r;
            }
            if (r > 0) sent = static_cast<size_t>(r);
            if (sent == total) return 0;
        }
        if (!anchor) ncopy = nbufs;
        unsigned first = 0; // the first buffer not written whole
        size_t skip = sent; // its bytes already written
        for (; first < nbufs && skip >= bufs[first].len; first++) skip -= bufs[first].len;
        size_t copy = 0;
        for (unsigned i = first; i < nbufs && i < ncopy; i++) copy += bufs[i].len - (i == first ? skip : 0);
        WriteReq* w = static_cast<WriteReq*>(::operator new(sizeof(WriteReq) + copy));
        w->stream = s;
        w->anchor = LUA_NOREF;
        w->done = done;
        w->done_data = done_data;
        uv_buf_t small[kMaxIovecs];
        std::vector<uv_buf_t> big;
        uv_buf_t* q = small;
        if (nbufs - first + 1 > kMaxIovecs) {
            big.resize(nbufs - first + 1);
            q = big.data();
        }
        unsigned nq = 0;
        if (copy) q[nq++] = uv_buf_init(w->data, static_cast<unsigned>(copy));
        char* to = w->data;
        for (unsigned i = first; i < nbufs; i++) {
            size_t off = i == first ? skip : 0, len = bufs[i].len - off;
            if (i < ncopy) {
                std::memcpy(to, bufs[i].base + off, len);
                to += len;
            } else if (len) {
                q[nq++] = uv_buf_init(bufs[i].base + off, static_cast<unsigned>(len));
            }
        }
        if (ncopy < nbufs) w->anchor = ref_anchor(L, anchor);
        int err = uv_write(&w->req, s->stream(), q, nq, on_write);
        if (err) {
            if (w->anchor != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, w->anchor);
            ::operator delete(w);
            return err;
        }
        s->writes_in_flight_++;
        *queued = true;
        return 0;
    }

    // The write error err as the Lua error table (a transport's own errors with its message).
    static void push_write_error(lua_State* L, Stream* s, int err) {
        Transport* t = s->extra_ ? s->extra_->transport : nullptr;
        if (t && err <= kErrOwnBase)
            t->push_error(L, err);
        else if (err == UV_EOF)
            push_error(L, UV_EOF, "the file ended before the range to send did");
        else
            push_uv_error(L, err);
    }

    // The waiting writer's deadline starts over: the kernel took bytes of a file being sent.
    static void file_progress(Stream* s) {
        if (!s->write_timeout) return;
        s->extra_->write_progress = now_ms();
        s->extra_->write_queued = uv_stream_get_write_queue_size(s->stream());
    }

    // The file send ends (err 0: everything went out): its count in writes_in_flight_ goes, and
    // the writer waiting for it is woken.
    static void file_end(Stream* s, int err) {
        Extra* x = s->extra_;
        if (x->file->corked) set_cork(s, 0); // what is left goes out now
        delete x->file;
        x->file = nullptr;
        s->writes_in_flight_--;
        if (err && !s->write_err_) s->write_err_ = err;
        if (s->writes_in_flight_ > 0 || !x->writer.waiting()) return;
        Parked p = detach(x->writer);
        arm_timer(s);
        if (err) {
            push_write_error(p.task, s, err);
            resume_parked(p, 1);
        } else {
            resume_parked(p, 0);
        }
    }

    static void on_file_block(Stream* s, int status, void*) {
        if (status < 0) return file_end(s, status);
        file_progress(s);
        file_step(s);
    }

    // The file send's next step: sendfile(2) while the socket takes bytes and nothing is queued
    // before; otherwise one block read (pread) and queued as a write, whose completion comes back
    // here. The descriptor is used only while the send is not abandoned (closed, failed).
    static void file_step(Stream* s) {
        Extra* x = s->extra_;
        FileSend* f = x->file;
        for (;;) {
            if (s->closing_ || s->write_err_) return file_end(s, s->write_err_ ? s->write_err_ : UV_ECANCELED);
            if (f->left == 0) return file_end(s, 0);
            Transport* t = x->transport;
            if (!t && !f->no_sendfile && s->writes_in_flight_ == 1) {
                uv_os_fd_t sock;
                uv_fileno(s->handle(), &sock);
                size_t want = static_cast<size_t>(std::min<uint64_t>(f->left, kSendfileChunk));
                off_t off = static_cast<off_t>(f->off);
                ssize_t n = ::sendfile(sock, f->fd, &off, want);
                if (n > 0) {
                    f->off += n;
                    f->left -= static_cast<uint64_t>(n);
                    file_progress(s);
                    // Fewer bytes than wanted: the socket is full. Either way the block below
                    // waits: for the socket, or for the next loop turn (kSendfileChunk).
                } else if (n == 0) {
                    return file_end(s, UV_EOF); // the file is shorter than the range
                } else if (errno == EINTR) {
                    continue;
                } else if (errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP) {
                    f->no_sendfile = true; // e.g. a file system without splice support: blocks
                } else if (errno != EAGAIN) {
                    return file_end(s, -errno);
                }
                if (f->left == 0) return file_end(s, 0);
            }
            size_t want = static_cast<size_t>(std::min<uint64_t>(f->left, t ? kFileBlock : kWaitBlock));
            ssize_t n;
            do n = ::pread(f->fd, g_file_block, want, static_cast<off_t>(f->off));
            while (n < 0 && errno == EINTR);
            if (n <= 0) return file_end(s, n == 0 ? UV_EOF : -errno);
            f->off += n;
            f->left -= static_cast<uint64_t>(n);
            uv_buf_t b = uv_buf_init(g_file_block, static_cast<unsigned>(n));
            if (t) {
                std::string& out = encoded();
                out.clear();
                int err = t->encode(s, &b, 1, &out);
                if (err) return file_end(s, err);
                b = uv_buf_init(out.data(), static_cast<unsigned>(out.size()));
            }
            bool queued = false;
            // Queued behind everything (this send counts as a write in flight): its completion
            // comes on a later loop turn, so a fast socket cannot keep this loop turn busy.
            int err = send(s, nullptr, &b, 1, b.len, 0, 0, on_file_block, nullptr, &queued);
            if (err) return file_end(s, err);
            if (queued) return;
        }
    }

    static int l_shutdown(lua_State* L) {
        Stream* s = check(L, 1, "shutdown");
        if (s->extra_ && s->extra_->shutter.waiting()) {
            push_error(L, UV_EBUSY, "shutdown already in progress");
            return 1;
        }
        check_can_wait(L, "shutdown");
        if (s->extra_ && s->extra_->chunked) {
            // The rest of a large write goes first (drop_chunked starts the shutdown).
            s->extra_->chunked->shutdown = true;
        } else if (int err = start_shutdown(s)) {
            push_uv_error(L, err);
            return 1;
        }
        return park(L, extra(s)->shutter);
    }

    // The transport's last bytes (close_notify), then the half-close behind the queued writes.
    static int start_shutdown(Stream* s) {
        if (s->extra_ && s->extra_->transport) s->extra_->transport->ending(s);
        auto* req = new uv_shutdown_t;
        req->data = s;
        int err = uv_shutdown(req, s->stream(), on_shutdown);
        if (err) delete req;
        return err;
    }

    // Closing a closed stream does nothing; closing something else raises. Also __close,
    // which getmetatable reaches with any argument.
    static int l_close(lua_State* L) {
        if (Stream* s = check_or_closed(L, 1, "close")) s->close();
        return 0;
    }

    static uint64_t check_timeout(lua_State* L, int idx, const char* fname) {
        if (lua_isnoneornil(L, idx)) return 0;
        lua_Number ms = check_number(L, idx, fname);
        if (!(ms >= 0)) raise(L, fname, "timeout must be a non-negative number of milliseconds");
        return static_cast<uint64_t>(ms);
    }

    static int l_set_timeout(lua_State* L) {
        Stream* s = check(L, 1, "setTimeout");
        uint64_t ms = check_timeout(L, 2, "setTimeout");
        s->read_timeout = s->write_timeout = ms;
        return 0;
    }

    static int l_settimeouts(lua_State* L) {
        Stream* s = check(L, 1, "settimeouts");
        check_timeout(L, 2, "settimeouts"); // connecting is over: tcp.connect has its own timeout
        s->write_timeout = check_timeout(L, 3, "settimeouts");
        s->read_timeout = check_timeout(L, 4, "settimeouts");
        return 0;
    }

    static int l_is_closed(lua_State* L) {
        lua_pushboolean(L, !check_or_closed(L, 1, "isClosed"));
        return 1;
    }
};

// Every idle connection holds a Stream: it must not grow.
static_assert(sizeof(Stream) <= 112, "Stream grew");

Stream* Stream::create(uv_handle_type type) {
    void* mem = ::operator new(sizeof(Stream) + uv_handle_size(type));
    Stream* s = new (mem) Stream;
    s->handle()->data = s;
    return s;
}

void Stream::set_deadline(uint64_t at) {
    if (at || extra_) Impl::extra(this)->deadline = at;
}

int Stream::read_with(lua_State* L, Consumer* c, const char* fname) {
    mode_ = ReadMode::Custom;
    consumer_ = c;
    return Impl::start_read(L, this, fname);
}

int Stream::take_or_watch(lua_State* L, Consumer* c) {
    consumer_ = c;
    mode_ = ReadMode::Custom;
    size_t used = 0;
    int n = Impl::satisfy(this, L, Impl::pending_data(this), Impl::pending_size(this), &used);
    if (used) Impl::consume_pending(this, used);
    mode_ = ReadMode::None;
    if (n >= 0) return n;
    watch(c);
    return -1;
}

void Stream::watch(Consumer* c) {
    if (closing_) return;
    consumer_ = c;
    mode_ = ReadMode::Custom;
    watching_ = true;
    start_reading();
}

int Stream::write_buffers(lua_State* L, const uv_buf_t* bufs, unsigned nbufs, const char* fname, int anchor,
                          unsigned ncopy) {
    (void)fname;
    size_t total = 0;
    for (unsigned i = 0; i < nbufs; i++) total += bufs[i].len;
    if (anchor < 0) anchor = lua_gettop(L) + anchor + 1;
    return Impl::write_bufs(L, this, const_cast<uv_buf_t*>(bufs), nbufs, total, anchor, ncopy);
}

int Stream::write_file(lua_State* L, const uv_buf_t* head, unsigned nhead, int fd, int64_t offset, uint64_t length,
                       const char* fname) {
    if (length == 0) return write_buffers(L, head, nhead, fname);
    if (write_err_) {
        Impl::push_write_error(L, this, write_err_);
        return 1;
    }
    if (extra_ && (extra_->writer.waiting() || extra_->chunked)) {
        push_error(L, UV_EBUSY, "another task is already writing to this stream");
        return 1;
    }
    if (closing_) return return_uv_error(L, UV_ECANCELED, 0);
    bool cork = length >= kCorkMin && handle()->type == UV_TCP && !transport();
    if (cork) set_cork(this, 1);
    int err = nhead ? write(head, nhead) : 0;
    if (err) {
        if (cork) set_cork(this, 0);
        Impl::push_write_error(L, this, err);
        return 1;
    }
    Extra* x = Impl::extra(this);
    x->file = new FileSend{fd, offset, length, false, cork};
    writes_in_flight_++;
    Impl::file_step(this);
    if (!x->file) { // all sent at once, or failed
        if (!write_err_) return 0;
        Impl::push_write_error(L, this, write_err_);
        return 1;
    }
    if (!in_task() || !lua_isyieldable(L)) return 0; // queued; nobody can wait for it
    int r = park(L, x->writer);
    if (write_timeout) {
        x->write_queued = uv_stream_get_write_queue_size(stream());
        x->write_progress = now_ms();
        Impl::set_deadline(this, &x->write_deadline, Impl::write_step(this));
    } else {
        x->write_deadline = 0;
    }
    return r;
}

// The metatables of the stream classes (a handful: tcp sockets, pipes, tls sockets), recorded by
// add_methods: test_proxy compares addresses instead of looking a marker up in the metatable
// (a lightuserdata key costs LuaJIT an interning per call, on every read and write).
std::vector<const void*>& stream_metatables() {
    static auto& mts = *new std::vector<const void*>;
    return mts;
}

void** Stream::test_proxy(lua_State* L, int idx) {
    void* ud;
    const void* mt = userdata_metatable(L, idx, &ud);
    if (!mt) return nullptr;
    for (const void* m : stream_metatables())
        if (m == mt) return static_cast<void**>(ud);
    return nullptr;
}

void Stream::close_proxy(lua_State*, void* ud, bool) {
    if (void* s = *static_cast<void**>(ud)) static_cast<Stream*>(s)->close();
}

void Stream::add_methods(lua_State* L) {
    const luaL_Reg methods[] = {{"read", Impl::l_read},
                                {"readline", Impl::l_readline},
                                {"readuntil", Impl::l_readuntil},
                                {"write", Impl::l_write},
                                {"trywrite", Impl::l_trywrite},
                                {"shutdown", Impl::l_shutdown},
                                {"end", Impl::l_shutdown},
                                {"close", Impl::l_close},
                                {"isClosed", Impl::l_is_closed},
                                {"setTimeout", Impl::l_set_timeout},
                                {"settimeouts", Impl::l_settimeouts},
                                {"__gc", Stream::l_gc},
                                {"__close", Impl::l_close},
                                {nullptr, nullptr}};
    add_to_class(L, methods);
    stream_metatables().push_back(lua_topointer(L, -1));
}

int Stream::write(const uv_buf_t* bufs, unsigned nbufs, WriteDone on_done, void* data) {
    if (write_err_) return write_err_;
    if (Transport* t = transport()) {
        std::string& out = Impl::encoded();
        out.clear();
        int err = t->encode(this, bufs, nbufs, &out);
        if (err) return write_err_ = err;
        uv_buf_t b = uv_buf_init(out.data(), static_cast<unsigned>(out.size()));
        return send_raw(&b, 1, on_done, data);
    }
    return send_raw(bufs, nbufs, on_done, data);
}

int Stream::try_write(lua_State* L, const uv_buf_t* bufs, unsigned nbufs, size_t limit, int anchor, unsigned ncopy) {
    if (closing_) return UV_ECANCELED;
    if (write_err_) return write_err_;
    size_t total = 0;
    for (unsigned i = 0; i < nbufs; i++) total += bufs[i].len;
    if (total == 0) return 0;
    size_t queued = write_queue_size();
    if (queued > 0 && queued + total > limit) return UV_EAGAIN;
    if (extra_ && extra_->chunked) return UV_EAGAIN; // a large write is still being encoded
    uv_buf_t enc;
    if (Transport* t = transport()) {
        std::string& out = Impl::encoded();
        out.clear();
        int err = t->encode(this, bufs, nbufs, &out);
        if (err) return write_err_ = err;
        enc = uv_buf_init(out.data(), static_cast<unsigned>(out.size()));
        bufs = &enc;
        nbufs = 1;
        total = out.size();
        anchor = 0;
    }
    if (anchor < 0) anchor = lua_gettop(L) + anchor + 1;
    bool queued_now = false;
    return Impl::send(this, L, bufs, nbufs, total, anchor, ncopy, nullptr, nullptr, &queued_now);
}

int Stream::send_raw(const uv_buf_t* bufs, unsigned nbufs, WriteDone on_done, void* data) {
    if (closing_) return UV_ECANCELED;
    size_t total = 0;
    for (unsigned i = 0; i < nbufs; i++) total += bufs[i].len;
    if (total == 0) {
        // Nothing to send now (a transport holding the bytes until its handshake is done).
        if (on_done) on_done(this, 0, data);
        return 0;
    }
    bool queued = false;
    int err = Impl::send(this, nullptr, bufs, nbufs, total, 0, 0, on_done, data, &queued);
    if (!queued && on_done) on_done(this, err, data);
    return err;
}

Transport* Stream::transport() const {
    return extra_ ? extra_->transport : nullptr;
}

size_t Stream::transport_pending() const {
    return extra_->transport ? extra_->transport->pending() : 0;
}

void Stream::set_transport(Transport* t) {
    Extra* x = Impl::extra(this);
    delete x->transport;
    x->transport = t;
    if (Impl::pending_size(this) == 0) return;
    // What came before the transport was attached is the transport's (a ClientHello).
    Buffer b = pending_;
    pending_ = Buffer();
    t->bytes_in(this, b.data + b.off, b.size - b.off);
    std::free(b.data);
}

void Stream::deliver(const char* data, size_t len) {
    Impl::deliver(this, data, len);
}

void Stream::end_reading(int err) {
    read_err_ = err;
    if (reading_) {
        uv_read_stop(stream());
        reading_ = false;
    }
    Impl::deliver(this, nullptr, 0);
}

void Stream::start_reading() {
    if (reading_ || closing_ || read_err_) return;
    if (uv_read_start(stream(), Impl::on_alloc, Impl::on_read) == 0) reading_ = true;
}

void Stream::close() {
    if (closing_) return;
    // The transport's last bytes (close_notify) go first, as far as the kernel takes them now.
    if (extra_ && extra_->transport) extra_->transport->ending(this);
    closing_ = true;
    detach_proxy();
    mode_ = ReadMode::None;
    watching_ = false;
    if (!owns_consumer_) consumer_ = nullptr; // an adopted protocol lives until the Stream is freed
    wake_uv_error(reader_, UV_ECANCELED);
    if (extra_) {
        wake_uv_error(extra_->writer, UV_ECANCELED, 0);
        wake_uv_error(extra_->shutter, UV_ECANCELED, 0);
    }
    Impl::release(pending_);
    if (extra_ && extra_->timer_open) uv_close(reinterpret_cast<uv_handle_t*>(&extra_->timer), Impl::on_handle_closed);
    uv_close(handle(), Impl::on_handle_closed);
}

} // namespace luaio
