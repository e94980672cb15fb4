// FdWatch: a libuv poll handle on a socket that a C library owns (libpq, MariaDB Connector/C).
//
//     struct Conn { luaio::FdWatch watch; ... };
//     conn->watch.watch(PQsocket(pg), UV_READABLE, on_ready, conn);   // (re)arm
//     void on_ready(void* ctx, int status, int events) { ... PQconsumeInput ... }
//     conn->watch.close();  PQfinish(pg);                              // close BEFORE the fd goes
//
// The library reads and writes the descriptor; luaio only waits for it. The uv_poll_t lives in
// an allocation of its own, so the owner may be deleted right after close() (the handle is freed
// in its close callback), and no callback is made after close(). A library may replace its socket
// (libpq tries the addresses of a host one after another): watch() with another fd closes the
// old handle first, as libuv requires one poll handle per descriptor.
#pragma once

#include <uv.h>

namespace luaio {

class FdWatch {
  public:
    // status is 0 or a libuv error (the descriptor failed); events is UV_READABLE|UV_WRITABLE.
    using Callback = void (*)(void* ctx, int status, int events);

    FdWatch() = default;
    FdWatch(const FdWatch&) = delete;
    FdWatch& operator=(const FdWatch&) = delete;
    ~FdWatch() { close(); }

    // Waits for `events` on fd and calls cb(ctx, ...) each time one is ready, until stopped,
    // closed or re-armed. events == 0 stops. Returns 0 or a libuv error.
    int watch(int fd, int events, Callback cb, void* ctx);
    void stop();
    // Idempotent. Call it before the library closes the descriptor.
    void close();
    bool active() const;
    int fd() const { return fd_; }
    // An unreferenced watch does not keep the process alive (an idle pooled connection).
    void set_ref(bool ref);

    // The handle and where its events go (defined in fdwatch.cpp).
    struct Poll;

  private:
    Poll* poll_ = nullptr;
    int fd_ = -1;
    bool ref_ = true;
};

} // namespace luaio
