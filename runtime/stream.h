// Stream: the one wrapper of a libuv stream handle (TCP socket, pipe) for Lua.
//
// A Stream owns its handle and is freed only in the handle's close callback. Its Lua
// object is a proxy (a userdata holding the Stream pointer); close(), the proxy's __gc and
// the owner (a server closing a connection) all reach the same Stream::close().
//
// Reading: the handle reads continuously into one shared scratch buffer; bytes that no
// reader takes at once are kept in `pending`, which is released as soon as it is empty, so
// an idle stream holds no read buffer. With no reader waiting and more than `high_water`
// bytes pending, reading stops until the next read (backpressure on the peer).
//
// Lua methods (every stream class has them; see docs/streams.md for the exact semantics):
//   data, err = s:read([n])         n bytes, or with no n whatever is available (>= 1 byte)
//   line, err = s:readline([max])   a line without "\n" (and "\r"), at most max (max_line) bytes
//   data, err = s:readuntil(delim[, max])
//   err = s:write(string | {strings...})
//   err = s:trywrite(string | {strings...}[, limit])   never waits; EAGAIN when limit bytes are queued
//   err = s:shutdown()  (also s["end"])   s:close()
//   s:setTimeout(ms)   s:settimeouts(connect_ms, send_ms, read_ms)
// At end of stream with partial data, read(n)/readline()/readuntil() return the partial data
// and the EOF error; once nothing is left they return nil and the EOF error.
#pragma once

#include "runtime/luaio.h"
#include "runtime/object.h"

#include <cstdint>
#include <string>

namespace luaio {

// Default limits (each configurable per stream).
constexpr size_t kDefaultMaxLine = 64 * 1024;     // readline/readuntil: longest accepted line
constexpr uint32_t kDefaultHighWater = 64 * 1024; // pending bytes before reading pauses
constexpr size_t kMaxRead = size_t(1) << 30;      // the largest read(n) or line (LuaJIT strings < 2 GiB)
constexpr size_t kFileBlock = 64 * 1024;          // write_file through a transport: bytes read and encoded at a time

// A C++ consumer of a stream's incoming bytes (a protocol parser), used by Stream::read_with
// (a task waits for what it produces) and Stream::watch (no task waits: bytes are consumed as
// they come, and ready() is called once it produced something).
class Consumer {
  public:
    // Gets the buffered bytes data[0, len) and err, the error that ended reading (UV_EOF ...)
    // or 0. Sets *used to the bytes consumed and returns the number of results pushed on L, or
    // -1 to wait for more bytes.
    virtual int consume(lua_State* L, const char* data, size_t len, int err, size_t* used) = 0;
    // Watch mode: consume() returned n >= 0; its n results are on top of L (the main state) and
    // ready() pops them. The stream's buffer is settled, so ready() may start a task that reads
    // the stream at once. The stream stops watching before this call.
    virtual void ready(lua_State* L, int n) = 0;
    // Public and virtual: a stream deletes the consumer it owns (Stream::adopt).
    virtual ~Consumer() = default;
};

class Stream;

// The layer between a Stream's handle and its buffer: what the handle reads becomes the bytes the
// Stream's readers see, and what they write becomes the bytes the handle sends (TLS). A plain
// stream has none: its bytes go between the handle and the buffer as they are, which costs an
// idle connection nothing. A transport is owned by its Stream and deleted with it.
class Transport {
  public:
    virtual ~Transport() = default;
    // Bytes read from the handle (len > 0); what they decode to goes to Stream::deliver.
    virtual void bytes_in(Stream* s, const char* data, size_t len) = 0;
    // The handle's reading ended with err (UV_EOF or another error).
    virtual void read_end(Stream* s, int err) = 0;
    // Appends to *out the bytes that carry bufs (the readers' and writers' bytes) to the peer.
    // Returns 0, or the error that fails the write.
    virtual int encode(Stream* s, const uv_buf_t* bufs, unsigned n, std::string* out) = 0;
    // The stream is shut down or closed: the transport sends what ends its session (close_notify).
    virtual void ending(Stream* s) = 0;
    // Bytes decoded and not yet delivered.
    virtual size_t pending() const = 0;
    // Pushes the error table for err, the error that ended reading (the transport's own message).
    virtual void push_error(lua_State* L, int err) const = 0;
};

// Called when a C++ write (Stream::write) is done: status 0 or the error.
using WriteDone = void (*)(Stream*, int status, void* data);

class Stream : public Handle<Stream> {
    // A waiting reader (declared first, where it fills the tail padding of the Handle base).
    Waiter reader_;

  public:
    static constexpr const char* kWhat = "stream";
    // Creates a Stream for a handle of `type` (UV_TCP or UV_NAMED_PIPE); the caller initialises
    // the handle (uv_tcp_init, uv_pipe_init, ...), then calls start_reading() once it is
    // connected. The handle lives in the same allocation, right after the Stream, sized for its
    // type: every idle connection pays for these bytes.
    static Stream* create(uv_handle_type type);

    uv_handle_t* handle() { return reinterpret_cast<uv_handle_t*>(this + 1); }
    uv_stream_t* stream() { return reinterpret_cast<uv_stream_t*>(this + 1); }
    uv_tcp_t* tcp() { return reinterpret_cast<uv_tcp_t*>(this + 1); }
    uv_pipe_t* pipe() { return reinterpret_cast<uv_pipe_t*>(this + 1); }

    // Stream proxies have several classes (tcp sockets, pipes), each made with add_methods:
    // Handle<Stream>::check(L, idx, fname) and the other accessors find them by this test. The
    // pointer slot of the stream proxy at idx, or nullptr when the value is not a stream proxy.
    // A stream's proxy is pushed with push_proxy(L, cls).
    static void** test_proxy(lua_State* L, int idx);
    // The proxy was collected (or its __gc called by hand): a forgotten stream closes.
    void proxy_gone() { close(); }
    // Adds the stream methods, __gc, __close and the stream marker to the class whose metatable
    // is on top of L (made by new_class).
    static void add_methods(lua_State* L);
    // A luaio::Closer for stream proxies: closes the stream (a task's socket when it ends).
    static void close_proxy(lua_State* L, void* ud, bool failed);

    void start_reading();

    // Returns c's results at once when the buffered bytes suffice, otherwise parks the running
    // task until they do (read_timeout applies). Use as `return s->read_with(L, c, fname);`.
    int read_with(lua_State* L, Consumer* c, const char* fname);
    // Hands the incoming bytes to c while no task reads (see Consumer::ready), so a protocol
    // can wait for its next message without holding a task. Bytes already buffered are not
    // offered until more come (the caller has just tried them). Ends with the first result,
    // with read_with or with close.
    void watch(Consumer* c);
    // c's results at once when the buffered bytes suffice (n >= 0); otherwise watch(c) and -1.
    int take_or_watch(lua_State* L, Consumer* c);
    bool watching() const { return watching_; }
    // The protocol that takes over this stream's bytes for good (a WebSocket's frame parser): c
    // becomes the consumer of every read_with, watch and take_or_watch (which must be given c),
    // stays reachable as protocol() through the stream's proxy, and is deleted when the Stream is
    // freed. So the protocol's state needs no Lua object of its own: an idle connection's Lua
    // objects cost it about twice their size in RSS (the collector's pause). Once per stream.
    void adopt(Consumer* c) {
        consumer_ = c;
        owns_consumer_ = true;
    }
    Consumer* protocol() const { return owns_consumer_ ? consumer_ : nullptr; }
    // Writes the buffers as the Lua method write does; returns its results (none, or the error
    // table) and may park the running task. Use as `return s->write_buffers(...)`. What the
    // kernel does not take at once is queued: bufs[0, ncopy) are copied; the later ones point
    // into the Lua value at `anchor` (a string, or an array of strings) or into static memory,
    // and are not copied: that value is referenced until the write is done. anchor 0: all copied.
    int write_buffers(lua_State* L, const uv_buf_t* bufs, unsigned nbufs, const char* fname, int anchor = 0,
                      unsigned ncopy = 0);
    // A write from C++ (no task waits, no Lua state needed), through the transport: what the
    // kernel does not take at once is copied and queued behind earlier writes; on_done, if
    // given, is called when the bytes are written or failed. Returns 0 or the error.
    int write(const uv_buf_t* bufs, unsigned nbufs, WriteDone on_done = nullptr, void* data = nullptr);
    // A write that never waits (a broadcast to many peers): the bytes go out, or are queued
    // behind earlier writes (even a waiting writer's), unless bytes are queued already and these
    // would take the queue past `limit`: then nothing is written and UV_EAGAIN is returned (the
    // peer is slow: backpressure). Buffers are copied or anchored as in write_buffers (L may be
    // null with anchor 0). Returns 0 or the error; never parks.
    int try_write(lua_State* L, const uv_buf_t* bufs, unsigned nbufs, size_t limit, int anchor = 0, unsigned ncopy = 0);
    // Bytes queued for the kernel and not yet written.
    size_t write_queue_size() { return uv_stream_get_write_queue_size(stream()); }
    // Writes the bytes head[0, nhead) (copied), then bytes [offset, offset + length) of the open
    // file fd, after everything queued before; returns write_buffers' results and may park the
    // running task until all is written. A plain stream sends the file with sendfile(2) while the
    // socket takes bytes (the kernel copies from the page cache; nothing is read into user memory);
    // when the socket is full, one block is read and queued as a write, whose completion says the
    // socket takes bytes again. A stream with a transport (TLS) reads and encodes the file in
    // blocks of kFileBlock, one queued at a time (backpressure). fd must stay open until the call
    // returns: its task waits. After a close or a failed or timed-out write nothing touches fd
    // again. A file shorter than the range fails the write with UV_EOF. Writes that do not wait
    // (try_write, C++ writes) made meanwhile go out between its blocks.
    int write_file(lua_State* L, const uv_buf_t* head, unsigned nhead, int fd, int64_t offset, uint64_t length,
                   const char* fname);
    // No write is queued (a write now goes out before anything else).
    bool write_idle() const { return writes_in_flight_ == 0; }
    // The transport: nullptr for a plain stream. set_transport takes ownership; bytes already
    // buffered are handed to it as received bytes (what came before it was attached).
    Transport* transport() const;
    void set_transport(Transport* t);
    // For transports: decoded bytes (len > 0), or the end of reading (end_reading) for the
    // stream's readers; raw bytes to the handle, not through the transport.
    void deliver(const char* data, size_t len);
    void end_reading(int err);
    int send_raw(const uv_buf_t* bufs, unsigned nbufs, WriteDone on_done = nullptr, void* data = nullptr);

    // Bytes received and not yet read; the error that ended reading (0 while the peer sends).
    size_t buffered() const { return pending_.size - pending_.off + (extra_ ? transport_pending() : 0); }
    int read_error() const { return read_err_; }
    // The error of a failed or timed-out write (0 if none): later writes return it.
    int write_error() const { return write_err_; }
    // Idempotent. Wakes waiting readers and writers with ECANCELED.
    void close();
    bool closing() const { return closing_; }

    // Called once from the close callback, before the Stream is freed (e.g. a server's
    // connection count). `data` is the owner's.
    void (*on_close)(Stream*, void* data) = nullptr;
    void* on_close_data = nullptr;

    // Timeouts (milliseconds; 0 means none). write_timeout: the longest time a waiting writer
    // may see no progress (the kernel taking none of its bytes), not the time of the whole write.
    uint64_t read_timeout = 0;
    uint64_t write_timeout = 0;
    // A bound on every read and write wait that starts after this call, on top of those
    // timeouts: a reader or writer still waiting at `at` (a now_ms() time; 0: none) fails with
    // ETIMEDOUT, however its bytes trickle. The http client's timeout, which bounds a request.
    void set_deadline(uint64_t at);

    // Public for the bindings in stream.cpp.
    enum class ReadMode : uint8_t { None, Count, Any, Line, Until, Custom };
    struct Impl;
    friend struct Impl;

  private:
    size_t transport_pending() const;
    Stream() : closing_(false), open_handles_(1), owns_consumer_(false) {}
    ~Stream();

    // Received bytes not yet read: [off, size) of a malloc'd block, freed as soon as it is
    // empty so that an idle stream holds no read buffer. Bounded by the read limits (strings
    // are shorter than 2 GiB), so 32-bit sizes do.
    struct Buffer {
        char* data = nullptr;
        uint32_t size = 0;
        uint32_t off = 0;
        uint32_t cap = 0;
    };
    // What only some streams use, allocated on first use: the timeout timer and deadlines, a
    // waiting writer (the kernel did not take a write at once), a waiting shutdown, the
    // delimiter of a waiting readuntil.
    struct Extra;

    Extra* extra_ = nullptr;
    Consumer* consumer_ = nullptr;
    Buffer pending_;
    uint32_t want_ = 0; // Count: the bytes wanted; Line, Until: the longest accepted line (<= kMaxRead)

  public:
    // Pending bytes before reading pauses (declared here, where it packs with its neighbours).
    uint32_t high_water = kDefaultHighWater;

  private:
    int read_err_ = 0;  // UV_EOF or the error that ended reading
    int write_err_ = 0; // the error of a failed write: later writes return it
    uint32_t writes_in_flight_ = 0;
    ReadMode mode_ = ReadMode::None;
    bool reading_ = false;
    bool watching_ = false;
    // Bit fields of one byte, so that with the Handle base's anchor the Stream still fits in 112
    // bytes; these two change once or twice per stream (reading_ and watching_ on every request).
    bool closing_ : 1;
    uint8_t open_handles_ : 2; // the stream handle, plus the timer once created
    bool owns_consumer_ : 1;   // consumer_ is the protocol's, deleted with the Stream (adopt)
};

} // namespace luaio
