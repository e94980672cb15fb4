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
//   err = s:shutdown()  (also s["end"])   s:close()
//   s:setTimeout(ms)   s:settimeouts(connect_ms, send_ms, read_ms)
// At end of stream with partial data, read(n)/readline()/readuntil() return the partial data
// and the EOF error; once nothing is left they return nil and the EOF error.
#pragma once

#include "runtime/luaio.h"

#include <cstdint>
#include <string>

namespace luaio {

// Default limits (each configurable per stream).
constexpr size_t kDefaultMaxLine = 64 * 1024;   // readline/readuntil: longest accepted line
constexpr size_t kDefaultHighWater = 64 * 1024; // pending bytes before reading pauses

class Stream {
  public:
    // Every idle connection pays for this union, so it holds the handles of sockets and pipes
    // only: a uv_tty_t would add 48 bytes to each. A terminal is opened as a pipe
    // (uv_pipe_open on its descriptor).
    union Handle {
        uv_handle_t handle;
        uv_stream_t stream;
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    } h;

    // Creates a Stream; the caller initialises `h` (uv_tcp_init, uv_pipe_init, ...), then
    // calls start_reading() once the handle is connected.
    static Stream* create();

    // Raises unless the value at idx is an open stream proxy.
    static Stream* check(lua_State* L, int idx, const char* fname);
    // Pushes a new proxy of this stream with the metatable `cls` (which must have been set
    // up with add_methods). A stream has at most one proxy.
    void push_proxy(lua_State* L, const char* cls);
    // Adds the stream methods, __gc and the stream marker to the metatable on top of L.
    static void add_methods(lua_State* L);

    void start_reading();

    // C++ consumers of incoming bytes (protocol parsers) that need no Lua string per read.
    // `fn` gets the buffered bytes data[0, len) and `err`, the error that ended reading (UV_EOF
    // ...) or 0. It sets *used to the bytes it consumed and returns the number of results it
    // pushed on L to complete the read, or -1 to wait for more bytes.
    using ConsumeFn = int (*)(void* ctx, lua_State* L, const char* data, size_t len, int err, size_t* used);
    // Returns fn's results at once when the buffered bytes suffice, otherwise parks the running
    // task until they do (read_timeout applies). Use as `return s->read_with(L, fn, ctx, fname);`.
    int read_with(lua_State* L, ConsumeFn fn, void* ctx, const char* fname);
    // Writes the buffers as the Lua method write does; returns its results (none, or the error
    // table) and may park the running task. Use as `return s->write_buffers(...)`.
    int write_buffers(lua_State* L, const uv_buf_t* bufs, unsigned nbufs, const char* fname);
    // Bytes received and not yet read; the error that ended reading (0 while the peer sends).
    size_t buffered() const { return pending_.size - pending_.off; }
    int read_error() const { return read_err_; }
    // Idempotent. Wakes waiting readers and writers with ECANCELED.
    void close();
    bool closing() const { return closing_; }

    // Called once from the close callback, before the Stream is freed (e.g. a server's
    // connection count). `data` is the owner's.
    void (*on_close)(Stream*, void* data) = nullptr;
    void* on_close_data = nullptr;

    // Limits and timeouts (milliseconds; 0 means none).
    size_t max_line = kDefaultMaxLine;
    size_t high_water = kDefaultHighWater;
    uint64_t connect_timeout = 0;
    uint64_t read_timeout = 0;
    uint64_t write_timeout = 0;

    // Public for the bindings in stream.cpp.
    enum class ReadMode : uint8_t { None, Count, Any, Line, Until, Custom };
    struct Impl;
    friend struct Impl;

  private:
    Stream() = default;
    ~Stream();

    // Received bytes not yet read: [off, size) of a malloc'd block, freed as soon as it is
    // empty so that an idle stream holds no read buffer.
    struct Buffer {
        char* data = nullptr;
        size_t size = 0;
        size_t off = 0;
        size_t cap = 0;
    };
    // What only some streams use, allocated on first use (a stream's size is the memory of
    // an idle connection): the timeout timer and deadlines, a waiting shutdown, the delimiter
    // of a waiting readuntil.
    struct Extra;

    Buffer pending_;
    Extra* extra_ = nullptr;
    int read_err_ = 0;  // UV_EOF or the error that ended reading
    int write_err_ = 0; // the error of a failed write: later writes return it
    uint32_t writes_in_flight_ = 0;
    ReadMode mode_ = ReadMode::None;
    bool reading_ = false;
    bool closing_ = false;
    uint8_t open_handles_ = 1; // the stream handle, plus the timer once created
    size_t want_ = 0;          // Count: the bytes wanted; Line, Until: the longest accepted line
    ConsumeFn consume_ = nullptr;
    void* consume_ctx_ = nullptr;

    Waiter reader_;
    Waiter writer_;
    void** proxy_ = nullptr;
};

} // namespace luaio
