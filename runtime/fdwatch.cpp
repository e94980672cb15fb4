// FdWatch (see fdwatch.h).
#include "runtime/fdwatch.h"

#include "runtime/luaio.h"

namespace luaio {

struct FdWatch::Poll {
    uv_poll_t handle;
    FdWatch::Callback cb = nullptr;
    void* ctx = nullptr;
    int events = 0; // what the handle is started with (0: stopped)
};

namespace {

void on_poll(uv_poll_t* h, int status, int events) {
    auto* p = reinterpret_cast<FdWatch::Poll*>(h->data);
    // On an error libuv has stopped the handle itself: the next watch() must start it again.
    if (status < 0) p->events = 0;
    // A failed descriptor (status < 0) reports both directions as ready: the library's own call
    // then sees the error and says what it was.
    if (p->cb) p->cb(p->ctx, status, status < 0 ? UV_READABLE | UV_WRITABLE : events);
}

} // namespace

int FdWatch::watch(int fd, int events, Callback cb, void* ctx) {
    if (events == 0) {
        stop();
        return 0;
    }
    if (poll_ && fd != fd_) close();
    if (!poll_) {
        poll_ = new Poll;
        int rc = uv_poll_init_socket(loop(), &poll_->handle, fd);
        if (rc < 0) {
            delete poll_;
            poll_ = nullptr;
            return rc;
        }
        poll_->handle.data = poll_;
        fd_ = fd;
        if (!ref_) uv_unref(reinterpret_cast<uv_handle_t*>(&poll_->handle));
    }
    poll_->cb = cb;
    poll_->ctx = ctx;
    if (events == poll_->events) return 0;
    int rc = uv_poll_start(&poll_->handle, events, on_poll);
    poll_->events = rc < 0 ? 0 : events;
    return rc;
}

void FdWatch::stop() {
    if (poll_ && poll_->events) uv_poll_stop(&poll_->handle);
    if (poll_) poll_->events = 0;
}

bool FdWatch::active() const {
    return poll_ && poll_->events != 0;
}

void FdWatch::close() {
    if (!poll_) return;
    poll_->cb = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(&poll_->handle),
             [](uv_handle_t* h) { delete reinterpret_cast<Poll*>(h->data); });
    poll_ = nullptr;
    fd_ = -1;
}

void FdWatch::set_ref(bool ref) {
    ref_ = ref;
    if (!poll_) return;
    auto* h = reinterpret_cast<uv_handle_t*>(&poll_->handle);
    if (ref)
        uv_ref(h);
    else
        uv_unref(h);
}

} // namespace luaio
