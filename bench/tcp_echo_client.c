/* Load client of the TCP echo benchmark (bench/tcp_echo.sh): one thread, epoll.
 *
 *   tcp_echo_client echo PORT CONNS SIZE WARMUP_S SECONDS
 *       CONNS connections each send SIZE bytes, wait for the SIZE bytes echoed, and repeat.
 *       After WARMUP_S seconds of warm-up, counts round trips for SECONDS seconds and prints
 *       "msgs=<n> rate=<msgs/s> p50_us=<..> p99_us=<..> errors=<n>".
 *   tcp_echo_client idle PORT CONNS
 *       Opens CONNS connections, makes one 64-byte round trip on each (so the server has
 *       read from every one), prints "ready <n>" and holds them until standard input closes.
 *
 * Connects to 127.0.0.1 only. */
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

#define MAX_SIZE 65536
#define LAT_BUCKETS 100000 /* 1 us buckets up to 100 ms */

struct conn {
    int fd;
    size_t got;
    uint64_t sent_at;
};

static uint64_t now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int open_conn(int port) {
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
    return fd;
}

static int roundtrip(int fd, const char* msg, size_t size) {
    char buf[MAX_SIZE];
    if (write(fd, msg, size) != (ssize_t)size) return -1;
    size_t got = 0;
    while (got < size) {
        ssize_t n = read(fd, buf, size - got);
        if (n <= 0) return -1;
        got += (size_t)n;
    }
    return 0;
}

static int idle_mode(int port, int conns) {
    char msg[64];
    memset(msg, 'x', sizeof msg);
    int* fds = calloc((size_t)conns, sizeof(int));
    int n = 0;
    for (int i = 0; i < conns; i++) {
        int fd = open_conn(port);
        if (fd < 0 || roundtrip(fd, msg, sizeof msg) != 0) {
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

static int echo_mode(int port, int nconns, size_t size, double warmup, double seconds) {
    static char msg[MAX_SIZE], buf[MAX_SIZE];
    static uint32_t lat[LAT_BUCKETS + 1];
    memset(msg, 'x', size);
    int ep = epoll_create1(0);
    struct conn* conns = calloc((size_t)nconns, sizeof *conns);
    for (int i = 0; i < nconns; i++) {
        int fd = open_conn(port);
        if (fd < 0) {
            fprintf(stderr, "echo: connect failed: %s\n", strerror(errno));
            return 1;
        }
        conns[i].fd = fd;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &conns[i]};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }
    uint64_t start = now_us();
    uint64_t count_from = start + (uint64_t)(warmup * 1e6);
    uint64_t end = count_from + (uint64_t)(seconds * 1e6);
    for (int i = 0; i < nconns; i++) {
        conns[i].sent_at = now_us();
        if (write(conns[i].fd, msg, size) != (ssize_t)size) return 1;
    }
    uint64_t msgs = 0, errors = 0;
    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, 100);
        uint64_t t = now_us();
        if (t >= end) break;
        for (int i = 0; i < n; i++) {
            struct conn* c = evs[i].data.ptr;
            ssize_t r = read(c->fd, buf, size - c->got);
            if (r <= 0) {
                if (r < 0 && errno == EAGAIN) continue;
                errors++;
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                continue;
            }
            c->got += (size_t)r;
            if (c->got < size) continue;
            c->got = 0;
            if (t >= count_from) {
                uint64_t l = t - c->sent_at;
                lat[l > LAT_BUCKETS ? LAT_BUCKETS : l]++;
                msgs++;
            }
            c->sent_at = t;
            if (write(c->fd, msg, size) != (ssize_t)size) errors++;
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

int main(int argc, char** argv) {
    if (argc >= 4 && strcmp(argv[1], "idle") == 0) return idle_mode(atoi(argv[2]), atoi(argv[3]));
    if (argc >= 7 && strcmp(argv[1], "echo") == 0) {
        size_t size = (size_t)atoi(argv[4]);
        if (size == 0 || size > MAX_SIZE) size = 64;
        return echo_mode(atoi(argv[2]), atoi(argv[3]), size, atof(argv[5]), atof(argv[6]));
    }
    fprintf(stderr, "usage: %s echo PORT CONNS SIZE WARMUP_S SECONDS | idle PORT CONNS\n", argv[0]);
    return 2;
}
