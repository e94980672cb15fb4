// FdWatch (runtime/fdwatch.h) on socket pairs and a real libuv loop.
#include "runtime/fdwatch.h"

#include <gtest/gtest.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

namespace luaio {
// The one piece of the runtime that FdWatch uses.
uv_loop_t* loop() {
    return uv_default_loop();
}
} // namespace luaio

namespace {

struct Pair {
    int fd[2];
    Pair() { EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fd), 0); }
    ~Pair() {
        ::close(fd[0]);
        ::close(fd[1]);
    }
};

struct Seen {
    int calls = 0;
    int events = 0;
    luaio::FdWatch* stop_on_call = nullptr;
};

void record(void* ctx, int status, int events) {
    auto* s = static_cast<Seen*>(ctx);
    EXPECT_EQ(status, 0);
    s->calls++;
    s->events |= events;
    if (s->stop_on_call) s->stop_on_call->stop();
}

void run_once() {
    uv_run(luaio::loop(), UV_RUN_NOWAIT);
}

} // namespace

TEST(FdWatch, ReadableAfterThePeerWrites) {
    Pair p;
    Seen seen;
    luaio::FdWatch w;
    seen.stop_on_call = &w;
    ASSERT_EQ(w.watch(p.fd[0], UV_READABLE, record, &seen), 0);
    EXPECT_TRUE(w.active());
    EXPECT_EQ(w.fd(), p.fd[0]);
    run_once();
    EXPECT_EQ(seen.calls, 0); // nothing to read yet
    ASSERT_EQ(write(p.fd[1], "x", 1), 1);
    uv_run(luaio::loop(), UV_RUN_ONCE);
    EXPECT_EQ(seen.calls, 1);
    EXPECT_EQ(seen.events, UV_READABLE);
    EXPECT_FALSE(w.active()); // the callback stopped it: the loop has nothing left
    w.close();
    EXPECT_EQ(uv_run(luaio::loop(), UV_RUN_DEFAULT), 0);
}

TEST(FdWatch, WritableAtOnceAndReArmedForAnotherDescriptor) {
    Pair a, b;
    Seen seen;
    luaio::FdWatch w;
    seen.stop_on_call = &w;
    ASSERT_EQ(w.watch(a.fd[0], UV_WRITABLE, record, &seen), 0);
    uv_run(luaio::loop(), UV_RUN_ONCE);
    EXPECT_EQ(seen.calls, 1);
    // Another descriptor (libpq trying the next address): the old handle is closed first.
    ASSERT_EQ(w.watch(b.fd[0], UV_WRITABLE, record, &seen), 0);
    EXPECT_EQ(w.fd(), b.fd[0]);
    uv_run(luaio::loop(), UV_RUN_ONCE);
    EXPECT_EQ(seen.calls, 2);
    w.close();
    EXPECT_EQ(uv_run(luaio::loop(), UV_RUN_DEFAULT), 0);
}

TEST(FdWatch, NoCallbackAfterCloseAndTheOwnerMayGoAtOnce) {
    Pair p;
    Seen seen;
    auto* w = new luaio::FdWatch;
    ASSERT_EQ(w->watch(p.fd[0], UV_READABLE, record, &seen), 0);
    ASSERT_EQ(write(p.fd[1], "x", 1), 1);
    w->close();
    delete w; // the handle is freed by its close callback, not by the owner
    EXPECT_EQ(uv_run(luaio::loop(), UV_RUN_DEFAULT), 0);
    EXPECT_EQ(seen.calls, 0);
}

TEST(FdWatch, AnUnreferencedWatchDoesNotKeepTheLoopAlive) {
    Pair p;
    Seen seen;
    luaio::FdWatch w;
    w.set_ref(false);
    ASSERT_EQ(w.watch(p.fd[0], UV_READABLE, record, &seen), 0);
    EXPECT_EQ(uv_run(luaio::loop(), UV_RUN_DEFAULT), 0); // returns although the watch is active
    EXPECT_EQ(seen.calls, 0);
    w.set_ref(true);
    EXPECT_NE(uv_loop_alive(luaio::loop()), 0);
    w.close();
    EXPECT_EQ(uv_run(luaio::loop(), UV_RUN_DEFAULT), 0);
}

TEST(FdWatch, ZeroEventsStopsAndABadDescriptorFails) {
    Pair p;
    Seen seen;
    luaio::FdWatch w;
    ASSERT_EQ(w.watch(p.fd[0], UV_READABLE, record, &seen), 0);
    ASSERT_EQ(w.watch(p.fd[0], 0, record, &seen), 0);
    EXPECT_FALSE(w.active());
    luaio::FdWatch bad;
    EXPECT_LT(bad.watch(-1, UV_READABLE, record, &seen), 0);
    EXPECT_FALSE(bad.active());
    w.close();
    EXPECT_EQ(uv_run(luaio::loop(), UV_RUN_DEFAULT), 0);
}

namespace {
void count_errors(void* ctx, int status, int events) {
    auto* s = static_cast<Seen*>(ctx);
    if (status < 0) s->calls++;
    s->events |= events;
}
} // namespace

TEST(FdWatch, RestartsAfterAnErrorThatStoppedIt) {
    // A connect refused by a closed port on 127.0.0.1 leaves an error on the socket: libuv
    // reports it and stops the handle itself.
    int probe = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(bind(probe, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    socklen_t len = sizeof a;
    ASSERT_EQ(getsockname(probe, reinterpret_cast<sockaddr*>(&a), &len), 0);
    ::close(probe); // nobody listens on that port now
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
    Seen seen;
    luaio::FdWatch w;
    ASSERT_EQ(w.watch(fd, UV_READABLE | UV_WRITABLE, count_errors, &seen), 0);
    for (int i = 0; i < 100 && seen.calls == 0; i++) uv_run(luaio::loop(), UV_RUN_ONCE);
    ASSERT_EQ(seen.calls, 1);
    EXPECT_FALSE(w.active()); // stopped by libuv
    EXPECT_EQ(seen.events, UV_READABLE | UV_WRITABLE);
    // The same events again must start the handle again (it reports the error once more).
    ASSERT_EQ(w.watch(fd, UV_READABLE | UV_WRITABLE, count_errors, &seen), 0);
    EXPECT_TRUE(w.active());
    for (int i = 0; i < 100 && seen.calls == 1; i++) uv_run(luaio::loop(), UV_RUN_ONCE);
    EXPECT_EQ(seen.calls, 2);
    w.close();
    uv_run(luaio::loop(), UV_RUN_DEFAULT);
    ::close(fd);
}
