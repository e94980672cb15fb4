/* Load client of the WebSocket benchmarks (bench/websocket/run.sh): one thread, epoll, masked
 * client frames (RFC 6455 5.3), no extensions. Connects to 127.0.0.1 only.
 *
 *   ws_client echo PORT CONNS SIZE WARMUP_S SECONDS
 *       CONNS connections to /echo each send a SIZE-byte text message, wait for its echo and
 *       repeat. Prints "msgs=<n> rate=<msgs/s> p50_us=<..> p99_us=<..> errors=<n>".
 *   ws_client broadcast PORT SUBS SIZE WARMUP_S SECONDS
 *       SUBS connections to /pub (the server subscribes each to one topic); the first one also
 *       publishes: it sends a SIZE-byte message that the server publishes to all, keeping about
 *       WINDOW messages in flight (it sends the next one when the subscribers have received the
 *       earlier ones). Prints "delivered=<n> rate=<deliveries/s> published=<n> errors=<n>".
 *   ws_client idle PORT CONNS
 *       Opens CONNS connections to /echo, makes one round trip on each, prints "ready <n>" and
 *       holds them until standard input closes. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_SIZE 125 /* messages with a 7-bit length: a 2-byte server head */
#define LAT_BUCKETS 100000
#define WINDOW 8

struct conn {
    int fd;
    size_t got;
    uint64_t sent_at;
    uint64_t frames;
};

static uint64_t now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int write_all(int fd, const char* p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Connects and does the opening handshake (blocking); returns the fd or -1. */
static int open_ws(int port, const char* path) {
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    if (connect(fd, (struct sockaddr*)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char req[512];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                     path, port);
    if (write_all(fd, req, (size_t)n) != 0) goto fail;
    /* Reads the 101 head byte by byte: nothing of the first frame is taken with it. */
    char head[2048];
    size_t h = 0;
    while (h < sizeof head - 1) {
        if (read(fd, head + h, 1) != 1) goto fail;
        h++;
        if (h >= 4 && memcmp(head + h - 4, "\r\n\r\n", 4) == 0) break;
    }
    head[h] = 0;
    if (strncmp(head, "HTTP/1.1 101", 12) != 0) goto fail;
    return fd;
fail:
    close(fd);
    return -1;
}

/* A masked text frame of size bytes (size <= 125). */
static size_t make_frame(char* out, size_t size) {
    static const unsigned char key[4] = {0x37, 0xfa, 0x21, 0x3d};
    out[0] = (char)0x81;
    out[1] = (char)(0x80 | size);
    memcpy(out + 2, key, 4);
    for (size_t i = 0; i < size; i++) out[6 + i] = (char)('x' ^ key[i % 4]);
    return size + 6;
}

static int roundtrip(int fd, const char* frame, size_t flen, size_t reply) {
    char buf[256];
    if (write_all(fd, frame, flen) != 0) return -1;
    size_t got = 0;
    while (got < reply) {
        ssize_t n = read(fd, buf, reply - got);
        if (n <= 0) return -1;
        got += (size_t)n;
    }
    return 0;
}

/* The echo route: ECHO_PATH (default /echo), so that run.sh can compare a server's styles. */
static const char* echo_path(void) {
    const char* p = getenv("ECHO_PATH");
    return p && *p ? p : "/echo";
}

static int idle_mode(int port, int conns) {
    char frame[256];
    size_t flen = make_frame(frame, 64);
    int* fds = calloc((size_t)conns, sizeof(int));
    int n = 0;
    for (int i = 0; i < conns; i++) {
        int fd = open_ws(port, echo_path());
        if (fd < 0 || roundtrip(fd, frame, flen, 66) != 0) {
            fprintf(stderr, "idle: connection %d failed: %s\n", i, strerror(errno));
            if (fd >= 0) close(fd);
            break;
        }
        fds[n++] = fd;
    }
    printf("ready %d\n", n);
    fflush(stdout);
    char c;
    while (read(0, &c, 1) > 0) {
    }
    for (int i = 0; i < n; i++) close(fds[i]);
    free(fds);
    return n == conns ? 0 : 1;
}

static struct conn* open_all(int port, const char* path, int nconns, int ep) {
    struct conn* conns = calloc((size_t)nconns, sizeof *conns);
    for (int i = 0; i < nconns; i++) {
        int fd = open_ws(port, path);
        if (fd < 0) {
            fprintf(stderr, "connect %d failed: %s\n", i, strerror(errno));
            exit(1);
        }
        conns[i].fd = fd;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &conns[i]};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }
    return conns;
}

static int echo_mode(int port, int nconns, size_t size, double warmup, double seconds) {
    static char frame[256], buf[65536];
    static uint32_t lat[LAT_BUCKETS + 1];
    size_t flen = make_frame(frame, size), reply = size + 2;
    int ep = epoll_create1(0);
    struct conn* conns = open_all(port, echo_path(), nconns, ep);
    uint64_t start = now_us();
    uint64_t count_from = start + (uint64_t)(warmup * 1e6);
    uint64_t end = count_from + (uint64_t)(seconds * 1e6);
    for (int i = 0; i < nconns; i++) {
        conns[i].sent_at = now_us();
        if (write_all(conns[i].fd, frame, flen) != 0) return 1;
    }
    uint64_t msgs = 0, errors = 0;
    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, 100);
        uint64_t t = now_us();
        if (t >= end) break;
        for (int i = 0; i < n; i++) {
            struct conn* c = evs[i].data.ptr;
            ssize_t r = read(c->fd, buf, reply - c->got);
            if (r <= 0) {
                if (r < 0 && errno == EAGAIN) continue;
                errors++;
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                continue;
            }
            c->got += (size_t)r;
            if (c->got < reply) continue;
            c->got = 0;
            if (t >= count_from) {
                uint64_t l = t - c->sent_at;
                lat[l > LAT_BUCKETS ? LAT_BUCKETS : l]++;
                msgs++;
            }
            c->sent_at = t;
            if (write_all(c->fd, frame, flen) != 0) errors++;
        }
    }
    uint64_t p50 = 0, p99 = 0, acc = 0;
    for (uint64_t i = 0; i <= LAT_BUCKETS; i++) {
        acc += lat[i];
        if (!p50 && acc * 2 >= msgs) p50 = i;
        if (!p99 && acc * 100 >= msgs * 99) {
            p99 = i;
            break;
        }
    }
    printf("msgs=%llu rate=%.0f p50_us=%llu p99_us=%llu errors=%llu\n", (unsigned long long)msgs, msgs / seconds,
           (unsigned long long)p50, (unsigned long long)p99, (unsigned long long)errors);
    for (int i = 0; i < nconns; i++) close(conns[i].fd);
    free(conns);
    return 0;
}

static int broadcast_mode(int port, int nsubs, size_t size, double warmup, double seconds) {
    static char frame[256], buf[65536];
    size_t flen = make_frame(frame, size), fsize = size + 2;
    int ep = epoll_create1(0);
    struct conn* conns = open_all(port, "/pub", nsubs, ep);
    usleep(200000); /* the server has subscribed everyone */
    uint64_t start = now_us();
    uint64_t count_from = start + (uint64_t)(warmup * 1e6);
    uint64_t end = count_from + (uint64_t)(seconds * 1e6);
    uint64_t published = 0, total = 0, counted = 0, errors = 0;
    struct epoll_event evs[256];
    for (;;) {
        /* Deliveries so far, in whole messages per subscriber: keep WINDOW messages in flight. */
        while (published < WINDOW + total / (uint64_t)nsubs) {
            if (write_all(conns[0].fd, frame, flen) != 0) return 1;
            published++;
        }
        int n = epoll_wait(ep, evs, 256, 100);
        uint64_t t = now_us();
        if (t >= end) break;
        for (int i = 0; i < n; i++) {
            struct conn* c = evs[i].data.ptr;
            ssize_t r = read(c->fd, buf, sizeof buf);
            if (r <= 0) {
                if (r < 0 && errno == EAGAIN) continue;
                errors++;
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                continue;
            }
            c->got += (size_t)r;
            uint64_t frames = c->got / fsize;
            c->got -= frames * fsize;
            total += frames;
            if (t >= count_from) counted += frames;
        }
    }
    printf("delivered=%llu rate=%.0f published=%llu errors=%llu\n", (unsigned long long)counted, counted / seconds,
           (unsigned long long)published, (unsigned long long)errors);
    for (int i = 0; i < nsubs; i++) close(conns[i].fd);
    free(conns);
    return 0;
}

int main(int argc, char** argv) {
    if (argc >= 4 && strcmp(argv[1], "idle") == 0) return idle_mode(atoi(argv[2]), atoi(argv[3]));
    if (argc >= 7) {
        size_t size = (size_t)atoi(argv[4]);
        if (size == 0 || size > MAX_SIZE) size = 64;
        if (strcmp(argv[1], "echo") == 0) return echo_mode(atoi(argv[2]), atoi(argv[3]), size, atof(argv[5]), atof(argv[6]));
        if (strcmp(argv[1], "broadcast") == 0)
            return broadcast_mode(atoi(argv[2]), atoi(argv[3]), size, atof(argv[5]), atof(argv[6]));
    }
    fprintf(stderr, "usage: %s echo|broadcast PORT CONNS SIZE WARMUP_S SECONDS | idle PORT CONNS\n", argv[0]);
    return 2;
}
