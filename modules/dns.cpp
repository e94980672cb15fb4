// The dns module: name resolution on c-ares, its sockets driven by the libuv loop (no thread
// is blocked and getaddrinfo is never called).
//
//   addrs, err = dns.resolve4(name[, {timeout = ms, ttl = bool, cache = bool}])   -- A records
//   addrs, err = dns.resolve6(name[, opts])                                        -- AAAA records
//   addrs, err = dns.lookup(name[, family | {family = 4|6, timeout = ms, cache = bool}])
//   names, err = dns.reverse(ip[, {timeout = ms}])
//   dns.setServers({"127.0.0.1:5353", "[::1]:53", ...})   dns.setServers()  -- back to resolv.conf
//   servers = dns.getServers()
//   dns.setTimeout(ms)   dns.getTimeout()
//   dns.setCache{size = n, max_ttl = s}   dns.flushCache()   stats = dns.cacheStats()
//
// c-ares runs on a Channel: the c-ares channel, one uv_poll per socket c-ares opens (told by
// its socket state callback) and one uv_timer for its retransmissions. c-ares closes its
// sockets when no query is pending, so an idle channel holds no active handle and the
// process exits when the script is done. The channel is created by the first query, so a
// script that never resolves a name costs nothing.
//
// Every query also has its own deadline timer (the `timeout` option): when it fires the
// caller gets ETIMEOUT at once and the query is abandoned; when every query pending on a
// channel is abandoned, the channel is cancelled so that its sockets close.
//
// c-ares may complete a query synchronously, inside ares_query/ares_getaddrinfo (hosts file
// hits, bad names): the binding then returns the results directly without parking. Results
// that arrive inside ares_process_fd are queued and the tasks are woken after c-ares has
// returned, so Lua never runs inside a c-ares callback.
#include "runtime/luaio.h"

#include <ares.h>
#include <ares_nameser.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <list>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace {

// Named limits and defaults.
constexpr lua_Integer kDefaultTimeoutMs = 5000;    // a whole call (the `timeout` option)
constexpr lua_Integer kMaxTimeoutMs = 3600 * 1000; // one hour
constexpr int kAttemptTimeoutMs = 1000;            // c-ares's first retransmission (doubles)
constexpr int kTries = 3;                          // c-ares attempts per server
constexpr size_t kDefaultCacheSize = 1000;         // cached answers
constexpr int kDefaultMaxTtl = 3600;               // seconds an answer may be cached at most
constexpr int kMaxAddrTtls = 256;                  // addresses read from one answer
constexpr size_t kMaxNameLength = 1024;            // longer names are EBADNAME without a query

lua_Integer g_timeout_ms = kDefaultTimeoutMs;

// ---------------------------------------------------------------- errors

// The name of a c-ares status, from luaio's one error table (runtime/errors.h: c-ares statuses
// are its positive codes).
const char* ares_error_name(int status) {
    const luaio::ErrorDef* e = status > 0 ? luaio::find_error(status) : nullptr;
    return e ? e->name : "EDNS";
}

// The error table of a c-ares status: code is the c-ares status (a positive number), name
// the c-ares name without its ARES_ prefix; `hostname` says what was asked.
void push_ares_error(lua_State* L, int status, const std::string& host, const char* message = nullptr) {
    // c-ares 1.18 also reports ECONNREFUSED when every server answered SERVFAIL, NOTIMP or
    // REFUSED (it tries the next server after those): its "Could not contact DNS servers"
    // would mislead.
    if (!message && status == ARES_ECONNREFUSED)
        message = "no DNS server answered (port unreachable, or the query was refused or failed)";
    luaio::push_error(L, status, ares_error_name(status), message ? message : ares_strerror(status));
    lua_pushlstring(L, host.data(), host.size());
    lua_setfield(L, -2, "hostname");
}

// ---------------------------------------------------------------- cache

// Answers kept for their TTL (capped at max_ttl), least recently used evicted first.
struct CacheEntry {
    std::string key;
    std::vector<std::string> addrs;
    std::vector<int> ttls; // seconds, as received
    uint64_t stored;       // loop time (ms)
    uint64_t expires;      // loop time (ms)
};

struct Cache {
    size_t size = kDefaultCacheSize;
    int max_ttl = kDefaultMaxTtl;
    std::list<CacheEntry> lru; // most recently used first
    std::unordered_map<std::string, std::list<CacheEntry>::iterator> index;
    uint64_t hits = 0, misses = 0;

    void flush() {
        lru.clear();
        index.clear();
    }

    const CacheEntry* get(const std::string& key, uint64_t now) {
        auto it = index.find(key);
        if (it == index.end()) {
            misses++;
            return nullptr;
        }
        if (it->second->expires <= now) {
            lru.erase(it->second);
            index.erase(it);
            misses++;
            return nullptr;
        }
        lru.splice(lru.begin(), lru, it->second);
        hits++;
        return &*it->second;
    }

    void put(const std::string& key, const std::vector<std::string>& addrs, const std::vector<int>& ttls,
             uint64_t now) {
        if (size == 0 || addrs.empty()) return;
        int ttl = *std::min_element(ttls.begin(), ttls.end());
        ttl = std::min(ttl, max_ttl);
        if (ttl <= 0) return;
        auto it = index.find(key);
        if (it != index.end()) {
            lru.erase(it->second);
            index.erase(it);
        }
        while (lru.size() >= size) {
            index.erase(lru.back().key);
            lru.pop_back();
        }
        lru.push_front({key, addrs, ttls, now, now + static_cast<uint64_t>(ttl) * 1000});
        index[key] = lru.begin();
    }
};
Cache g_cache;

using luaio::now_ms;

std::string cache_key(const char* kind, const std::string& name) {
    std::string key = kind;
    key += ':';
    for (char c : name) key += static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    // "example.com." and "example.com" are the same name.
    if (key.size() > 1 && key.back() == '.') key.pop_back();
    return key;
}

// ---------------------------------------------------------------- channels

struct Query;

struct Poll {
    uv_poll_t poll;
    struct Channel* chan;
    ares_socket_t fd;
};

struct Channel {
    ares_channel ares = nullptr;
    uv_timer_t timer; // c-ares's retransmission timer
    std::unordered_map<ares_socket_t, Poll*> polls;
    std::vector<Query*> completed;             // answered inside c-ares, not yet woken
    int pending = 0;                           // queries c-ares has not called back yet
    int live = 0;                              // pending queries whose caller still waits
    int busy = 0;                              // depth of our callbacks running on it
    bool retired = false;                      // replaced (setServers); destroyed when idle
    bool tcp = false;                          // the TCP channel (for answers truncated over UDP)
    std::vector<Query*> retries;               // truncated over UDP, to be asked again over TCP
    std::unordered_set<std::string> truncated; // names whose UDP answers came truncated
};

// The channels new queries go to (nullptr until first used). Queries go out over UDP on
// g_channel, which ignores truncation (ARES_FLAG_IGNTC); a truncated answer is asked again on
// g_tcp_channel (ARES_FLAG_USEVC). c-ares 1.18 treats a failed TCP connection as a failure of
// the server: handle_error closes all the server's sockets and moves every query in flight to
// it, UDP ones too, to the next server (skip_server, next_server), and with one server they
// all end with ECONNREFUSED. So c-ares's own fallback lets one oversized or truncated answer
// from a server without a TCP listener fail every concurrent query; on a channel of its own,
// a TCP failure costs only the queries that needed TCP.
Channel* g_channel = nullptr;
Channel* g_tcp_channel = nullptr;
// Servers set by setServers (empty: those of /etc/resolv.conf).
std::vector<ares_addr_port_node> g_servers;

struct Query {
    Channel* chan;
    uv_timer_t deadline;
    enum { TimerNone, TimerActive, TimerClosed } timer = TimerNone;
    luaio::Waiter waiter;
    std::string name;
    std::string cache_key;
    bool want_ttl = false;
    bool use_cache = true;
    bool parked = false;    // the caller has yielded (else it is still inside the binding)
    bool done = false;      // c-ares has called back
    bool abandoned = false; // the caller was woken by the deadline
    int status = ARES_SUCCESS;
    std::vector<std::string> addrs;
    std::vector<int> ttls;
    std::function<void(ares_channel, Query*)> start; // sends it (again, over TCP)
    std::string asked; // the name in the question when it is not `name` (reverse: the PTR name)
};

void maybe_free(Query* q) {
    if (q->done && q->timer != Query::TimerActive) delete q;
}

void on_poll(uv_poll_t* handle, int status, int events);
void leave(Channel* chan);

void on_sock_state(void* data, ares_socket_t fd, int readable, int writable) {
    auto* chan = static_cast<Channel*>(data);
    auto it = chan->polls.find(fd);
    if (readable || writable) {
        Poll* p;
        if (it == chan->polls.end()) {
            p = new Poll;
            p->chan = chan;
            p->fd = fd;
            if (uv_poll_init_socket(luaio::loop(), &p->poll, fd) != 0) {
                // Undriven, the socket's queries end by c-ares's own timeout.
                delete p;
                return;
            }
            chan->polls[fd] = p;
        } else {
            p = it->second;
        }
        uv_poll_start(&p->poll, (readable ? UV_READABLE : 0) | (writable ? UV_WRITABLE : 0), on_poll);
    } else if (it != chan->polls.end()) {
        // c-ares closes the socket right after this: stop watching it first.
        Poll* p = it->second;
        chan->polls.erase(it);
        uv_poll_stop(&p->poll);
        uv_close(reinterpret_cast<uv_handle_t*>(&p->poll), [](uv_handle_t* h) { delete reinterpret_cast<Poll*>(h); });
    }
}

// c-ares's sockets, through functions of ours only so that the UDP channel can tell which
// answers came truncated: ares_getaddrinfo does not show the answers to its caller.

// The question name of a DNS message, lowercased, or "" if it does not parse.
std::string question_name(const unsigned char* m, size_t len) {
    std::string name;
    size_t i = HFIXEDSZ;
    while (i < len && m[i] != 0) {
        size_t n = m[i];
        if (n > 63 || i + 1 + n > len) return std::string();
        if (!name.empty()) name += '.';
        for (size_t k = i + 1; k <= i + n; k++)
            name += static_cast<char>(m[k] >= 'A' && m[k] <= 'Z' ? m[k] - 'A' + 'a' : m[k]);
        i += 1 + n;
    }
    return name;
}

ares_socket_t sock_open(int domain, int type, int protocol, void*) {
    return socket(domain, type, protocol);
}
int sock_close(ares_socket_t fd, void*) {
    return close(fd);
}
int sock_connect(ares_socket_t fd, const sockaddr* addr, ares_socklen_t len, void*) {
    return connect(fd, addr, len);
}
ares_ssize_t sock_sendv(ares_socket_t fd, const iovec* iov, int n, void*) {
    return writev(fd, iov, n);
}
// A UDP read (c-ares asks for the sender's address) notes the question name of an answer
// with the TC bit, or longer than c-ares's buffer (MSG_TRUNC gives the whole length).
ares_ssize_t sock_recvfrom(ares_socket_t fd, void* buf, size_t len, int flags, sockaddr* from, ares_socklen_t* fromlen,
                           void* data) {
    if (!from) return recv(fd, buf, len, flags);
    ssize_t n = recvfrom(fd, buf, len, flags | MSG_TRUNC, from, fromlen);
    if (n < 0) return n;
    size_t got = std::min(static_cast<size_t>(n), len);
    auto* m = static_cast<unsigned char*>(buf);
    if (got >= HFIXEDSZ && (static_cast<size_t>(n) > len || (m[2] & 0x02))) {
        std::string name = question_name(m, got);
        if (!name.empty()) static_cast<Channel*>(data)->truncated.insert(name);
    }
    return static_cast<ares_ssize_t>(got);
}
const ares_socket_functions kSocketFunctions = {sock_open, sock_close, sock_connect, sock_recvfrom, sock_sendv};

Channel* new_channel(int* status, bool tcp) {
    static bool library_ready = false;
    if (!library_ready) {
        if ((*status = ares_library_init(ARES_LIB_INIT_ALL)) != ARES_SUCCESS) return nullptr;
        library_ready = true;
    }
    auto* chan = new Channel;
    chan->tcp = tcp;
    ares_options o;
    std::memset(&o, 0, sizeof o);
    char lookups[] = "fb"; // the hosts file first, then DNS
    o.sock_state_cb = on_sock_state;
    o.sock_state_cb_data = chan;
    o.lookups = lookups;
    o.timeout = kAttemptTimeoutMs;
    o.tries = kTries;
    o.flags = tcp ? ARES_FLAG_USEVC : ARES_FLAG_IGNTC;
    int mask = ARES_OPT_SOCK_STATE_CB | ARES_OPT_LOOKUPS | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_FLAGS;
    if ((*status = ares_init_options(&chan->ares, &o, mask)) != ARES_SUCCESS) {
        delete chan;
        return nullptr;
    }
    if (!g_servers.empty()) {
        for (size_t i = 0; i < g_servers.size(); i++)
            g_servers[i].next = i + 1 < g_servers.size() ? &g_servers[i + 1] : nullptr;
        if ((*status = ares_set_servers_ports(chan->ares, g_servers.data())) != ARES_SUCCESS) {
            ares_destroy(chan->ares);
            delete chan;
            return nullptr;
        }
    }
    if (!tcp) ares_set_socket_functions(chan->ares, &kSocketFunctions, chan);
    uv_timer_init(luaio::loop(), &chan->timer);
    chan->timer.data = chan;
    uv_unref(reinterpret_cast<uv_handle_t*>(&chan->timer));
    return chan;
}

Channel* current_channel(int* status, bool tcp = false) {
    Channel*& chan = tcp ? g_tcp_channel : g_channel;
    if (!chan) chan = new_channel(status, tcp);
    return chan;
}

void destroy_channel(Channel* chan) {
    if (g_channel == chan) g_channel = nullptr;
    if (g_tcp_channel == chan) g_tcp_channel = nullptr;
    ares_destroy(chan->ares); // closes its sockets: on_sock_state closes their polls
    chan->ares = nullptr;
    for (auto& kv : chan->polls) {
        uv_poll_stop(&kv.second->poll);
        uv_close(reinterpret_cast<uv_handle_t*>(&kv.second->poll),
                 [](uv_handle_t* h) { delete reinterpret_cast<Poll*>(h); });
    }
    chan->polls.clear();
    uv_close(reinterpret_cast<uv_handle_t*>(&chan->timer),
             [](uv_handle_t* h) { delete static_cast<Channel*>(h->data); });
}

// Replaces the channels new queries go to; the old ones are destroyed as soon as they are idle.
void retire_channels() {
    for (Channel** slot : {&g_channel, &g_tcp_channel}) {
        Channel* chan = *slot;
        if (!chan) continue;
        *slot = nullptr;
        chan->retired = true;
        if (chan->pending == 0 && chan->busy == 0) destroy_channel(chan);
    }
}

void on_channel_timer(uv_timer_t* t);

// Restarts the retransmission timer for the earliest c-ares deadline. The timer and the
// polls keep the loop alive only while a query is pending.
void schedule(Channel* chan) {
    if (chan->pending == 0) {
        uv_timer_stop(&chan->timer);
        for (auto& kv : chan->polls) uv_unref(reinterpret_cast<uv_handle_t*>(&kv.second->poll));
        return;
    }
    for (auto& kv : chan->polls) uv_ref(reinterpret_cast<uv_handle_t*>(&kv.second->poll));
    timeval tv;
    if (ares_timeout(chan->ares, nullptr, &tv)) {
        uint64_t ms = static_cast<uint64_t>(tv.tv_sec) * 1000 + static_cast<uint64_t>(tv.tv_usec + 999) / 1000;
        luaio::start_timer(&chan->timer, on_channel_timer, ms);
    } else {
        uv_timer_stop(&chan->timer);
    }
}

int push_results(lua_State* L, Query* q);

// Wakes the tasks whose queries c-ares has answered. Runs outside c-ares.
void flush_completed(Channel* chan) {
    while (!chan->completed.empty()) {
        std::vector<Query*> batch;
        batch.swap(chan->completed);
        for (Query* q : batch) {
            if (q->timer == Query::TimerActive) {
                uv_close(reinterpret_cast<uv_handle_t*>(&q->deadline), [](uv_handle_t* h) {
                    auto* q = static_cast<Query*>(h->data);
                    q->timer = Query::TimerClosed;
                    maybe_free(q);
                });
            }
            // The close callback runs on a later loop turn: q is alive during the wake.
            luaio::wake(q->waiter, [q](lua_State* co) { return push_results(co, q); });
        }
    }
}

// Outside c-ares and outside our callbacks: cancel what nobody waits for (so that its
// sockets close), destroy a retired channel once idle, else rearm the timer.
void settle(Channel* chan) {
    if (chan->live == 0 && chan->pending > 0) ares_cancel(chan->ares); // abandoned queries only
    if (chan->pending == 0) chan->truncated.clear();                   // names whose queries were abandoned
    if (chan->retired && chan->pending == 0)
        destroy_channel(chan);
    else
        schedule(chan);
}

void finish(Query* q, int status);

// Asks the queries whose UDP answers were truncated again, on the TCP channel. Runs outside
// c-ares.
void send_retries(Channel* chan) {
    while (!chan->retries.empty()) {
        std::vector<Query*> batch;
        batch.swap(chan->retries);
        int status = ARES_SUCCESS;
        Channel* tcp = current_channel(&status, true);
        for (Query* q : batch) {
            q->chan = tcp ? tcp : chan;
            q->chan->pending++;
            q->chan->live++;
            if (!tcp) {
                finish(q, status);
                continue;
            }
            tcp->busy++;
            q->start(tcp->ares, q);
            leave(tcp);
        }
    }
    flush_completed(chan);
}

// The end of each of our callbacks that ran c-ares: wake the tasks, send the retries over
// TCP, then settle.
void leave(Channel* chan) {
    flush_completed(chan);
    send_retries(chan);
    if (--chan->busy == 0) settle(chan);
}

void on_poll(uv_poll_t* handle, int status, int events) {
    auto* p = reinterpret_cast<Poll*>(handle);
    Channel* chan = p->chan;
    ares_socket_t fd = p->fd;
    chan->busy++;
    // On an error let c-ares read and write, so that it sees the error and moves on.
    bool readable = status < 0 || (events & UV_READABLE);
    bool writable = status < 0 || (events & UV_WRITABLE);
    ares_process_fd(chan->ares, readable ? fd : ARES_SOCKET_BAD, writable ? fd : ARES_SOCKET_BAD);
    leave(chan);
}

void on_channel_timer(uv_timer_t* t) {
    auto* chan = static_cast<Channel*>(t->data);
    chan->busy++;
    ares_process_fd(chan->ares, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    leave(chan);
}

// Called by c-ares for every query, exactly once.
void finish(Query* q, int status) {
    Channel* chan = q->chan;
    q->done = true;
    q->status = status;
    chan->pending--;
    if (q->abandoned) {
        maybe_free(q);
        return;
    }
    chan->live--;
    if (status == ARES_SUCCESS && q->use_cache && !q->cache_key.empty())
        g_cache.put(q->cache_key, q->addrs, q->ttls, now_ms());
    if (q->parked) chan->completed.push_back(q);
}

// Whether an answer to q's name (or to q's name in a search domain) came truncated over UDP.
bool truncated(Query* q) {
    Channel* chan = q->chan;
    if (chan->truncated.empty()) return false;
    std::string name = cache_key("", q->asked.empty() ? q->name : q->asked).substr(1); // lowercased, no final dot
    bool found = false;
    for (auto it = chan->truncated.begin(); it != chan->truncated.end();) {
        if (*it == name || it->compare(0, name.size() + 1, name + ".") == 0) {
            found = true;
            it = chan->truncated.erase(it);
        } else {
            ++it;
        }
    }
    return found;
}

// Called by c-ares's callbacks instead of finish when an answer came truncated over UDP (the
// TC bit, or longer than c-ares reads; c-ares ignores truncation on the UDP channel, and cuts
// such an answer to PACKETSZ): the query leaves its channel and is asked again over TCP,
// unless its caller has stopped waiting or it was asked over TCP already.
bool retry_over_tcp(Query* q) {
    Channel* chan = q->chan;
    if (chan->tcp || q->abandoned || !truncated(q)) return false;
    chan->pending--;
    chan->live--;
    q->addrs.clear();
    q->ttls.clear();
    chan->retries.push_back(q);
    return true;
}

void on_deadline(uv_timer_t* t) {
    auto* q = static_cast<Query*>(t->data);
    Channel* chan = q->chan;
    chan->busy++;
    q->abandoned = true;
    chan->live--;
    uv_close(reinterpret_cast<uv_handle_t*>(t), [](uv_handle_t* h) {
        auto* q = static_cast<Query*>(h->data);
        q->timer = Query::TimerClosed;
        maybe_free(q);
    });
    std::string name = q->name; // q may be freed by the close callback after the wake
    luaio::wake(q->waiter, [&](lua_State* co) {
        lua_pushnil(co);
        push_ares_error(co, ARES_ETIMEOUT, name, "DNS query timed out");
        return 2;
    });
    leave(chan);
}

// ---------------------------------------------------------------- c-ares callbacks

std::string ntop(int family, const void* addr) {
    char buf[INET6_ADDRSTRLEN];
    if (uv_inet_ntop(family, addr, buf, sizeof buf) != 0) return std::string();
    return buf;
}

// The answer to an A or AAAA query: its addresses and their TTLs. One template for both
// record types, which differ only in c-ares's parse function and address member.
template <typename TtlRecord, int Family, int (*Parse)(const unsigned char*, int, hostent**, TtlRecord*, int*),
          typename Addr, Addr TtlRecord::*Field>
void on_addr_answer(void* arg, int status, int, unsigned char* abuf, int alen) {
    auto* q = static_cast<Query*>(arg);
    if (retry_over_tcp(q)) return;
    if (status == ARES_SUCCESS) {
        TtlRecord ttls[kMaxAddrTtls];
        int n = kMaxAddrTtls;
        status = Parse(abuf, alen, nullptr, ttls, &n);
        for (int i = 0; status == ARES_SUCCESS && i < n; i++) {
            q->addrs.push_back(ntop(Family, &(ttls[i].*Field)));
            q->ttls.push_back(ttls[i].ttl);
        }
        if (status == ARES_SUCCESS && q->addrs.empty()) status = ARES_ENODATA;
    }
    finish(q, status);
}

constexpr ares_callback on_a_answer =
    on_addr_answer<ares_addrttl, AF_INET, ares_parse_a_reply, in_addr, &ares_addrttl::ipaddr>;
constexpr ares_callback on_aaaa_answer =
    on_addr_answer<ares_addr6ttl, AF_INET6, ares_parse_aaaa_reply, ares_in6_addr, &ares_addr6ttl::ip6addr>;

void on_addrinfo(void* arg, int status, int, ares_addrinfo* res) {
    auto* q = static_cast<Query*>(arg);
    if (status == ARES_SUCCESS && res) {
        // IPv4 first, then IPv6, each in the order received, without duplicates.
        for (int family : {AF_INET, AF_INET6}) {
            for (ares_addrinfo_node* n = res->nodes; n; n = n->ai_next) {
                if (n->ai_family != family) continue;
                std::string a = family == AF_INET
                                    ? ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(n->ai_addr)->sin_addr)
                                    : ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(n->ai_addr)->sin6_addr);
                if (std::find(q->addrs.begin(), q->addrs.end(), a) != q->addrs.end()) continue;
                q->addrs.push_back(a);
                q->ttls.push_back(n->ai_ttl);
            }
        }
        if (q->addrs.empty()) status = ARES_ENODATA;
    }
    if (res) ares_freeaddrinfo(res);
    if (retry_over_tcp(q)) return;
    finish(q, status);
}

void on_hostent(void* arg, int status, int, hostent* h) {
    auto* q = static_cast<Query*>(arg);
    if (status == ARES_SUCCESS && h) {
        if (h->h_name) q->addrs.push_back(h->h_name);
        for (char** a = h->h_aliases; a && *a; a++)
            if (std::find(q->addrs.begin(), q->addrs.end(), *a) == q->addrs.end()) q->addrs.push_back(*a);
        if (q->addrs.empty()) status = ARES_ENOTFOUND;
    }
    if (retry_over_tcp(q)) return;
    finish(q, status);
}

// ---------------------------------------------------------------- results

void push_list(lua_State* L, const std::vector<std::string>& addrs, const std::vector<int>* ttls, int elapsed_s) {
    lua_createtable(L, static_cast<int>(addrs.size()), 0);
    for (size_t i = 0; i < addrs.size(); i++) {
        if (ttls) {
            lua_createtable(L, 0, 2);
            lua_pushlstring(L, addrs[i].data(), addrs[i].size());
            lua_setfield(L, -2, "address");
            lua_pushinteger(L, std::max(0, (*ttls)[i] - elapsed_s));
            lua_setfield(L, -2, "ttl");
        } else {
            lua_pushlstring(L, addrs[i].data(), addrs[i].size());
        }
        lua_rawseti(L, -2, static_cast<int>(i + 1));
    }
}

int push_results(lua_State* L, Query* q) {
    if (q->status != ARES_SUCCESS) {
        lua_pushnil(L);
        push_ares_error(L, q->status, q->name);
        return 2;
    }
    push_list(L, q->addrs, q->want_ttl ? &q->ttls : nullptr, 0);
    return 1;
}

// ---------------------------------------------------------------- bindings

struct Options {
    lua_Integer timeout = 0;
    bool ttl = false;
    bool cache = true;
    int family = 0;
};

lua_Integer check_timeout(lua_State* L, lua_Integer ms, const char* fname) {
    if (ms <= 0 || ms > kMaxTimeoutMs)
        luaio::raise(L, fname, "timeout must be between 1 and %d milliseconds", static_cast<int>(kMaxTimeoutMs));
    return ms;
}

int check_family(lua_State* L, lua_Integer family, const char* fname) {
    if (family != 0 && family != 4 && family != 6) luaio::raise(L, fname, "family must be 4, 6 or nil");
    return static_cast<int>(family);
}

std::string check_name(lua_State* L, const char* fname, const char* what) {
    if (lua_type(L, 1) != LUA_TSTRING)
        luaio::raise(L, fname, "expected %s (a string) as argument 1, got %s", what, luaL_typename(L, 1));
    size_t len;
    const char* s = lua_tolstring(L, 1, &len);
    return std::string(s, len);
}

// The options each function takes (a misspelled one raises).
const char* const kResolveOptions[] = {"timeout", "ttl", "cache", nullptr};
const char* const kLookupOptions[] = {"family", "timeout", "ttl", "cache", nullptr};
const char* const kReverseOptions[] = {"timeout", nullptr};
const char* const kCacheOptions[] = {"size", "max_ttl", nullptr};

Options check_options(lua_State* L, int idx, const char* const* known, const char* fname) {
    Options o;
    o.timeout = g_timeout_ms;
    if (lua_isnoneornil(L, idx)) return o;
    if (!lua_istable(L, idx)) luaio::raise_arg(L, idx, fname, "an options table");
    luaio::check_option_names(L, idx, known, fname);
    o.timeout = check_timeout(L, luaio::opt_int_field(L, idx, "timeout", g_timeout_ms, fname), fname);
    o.ttl = luaio::opt_bool_field(L, idx, "ttl", false, fname);
    o.cache = luaio::opt_bool_field(L, idx, "cache", true, fname);
    o.family = check_family(L, luaio::opt_int_field(L, idx, "family", 0, fname), fname);
    return o;
}

// A name c-ares would misread (empty, an embedded NUL, absurdly long) is EBADNAME at once.
bool bad_name(const std::string& name) {
    return name.empty() || name.size() > kMaxNameLength || name.find('\0') != std::string::npos;
}

int return_error(lua_State* L, int status, const std::string& name, const char* message = nullptr) {
    lua_pushnil(L);
    push_ares_error(L, status, name, message);
    return 2;
}

// Starts `q` with `start` (which calls c-ares); returns the results at once when c-ares
// completed synchronously, else parks the caller until they arrive or the deadline passes.
template <class Start> int run_query(lua_State* L, Query* q, lua_Integer timeout, Start&& start) {
    int status = ARES_SUCCESS;
    Channel* chan = current_channel(&status);
    if (!chan) {
        int n = return_error(L, status, q->name);
        delete q;
        return n;
    }
    q->chan = chan;
    chan->pending++;
    chan->live++;
    q->start = std::forward<Start>(start);
    q->start(chan->ares, q);
    // Other queries may have completed inside the call: wake them (queued, we are in a task).
    flush_completed(chan);
    send_retries(chan);
    if (q->done) {
        int n = push_results(L, q);
        delete q;
        if (chan->busy == 0) settle(chan);
        return n;
    }
    uv_timer_init(luaio::loop(), &q->deadline);
    q->deadline.data = q;
    luaio::start_timer(&q->deadline, on_deadline, static_cast<uint64_t>(timeout));
    q->timer = Query::TimerActive;
    q->parked = true;
    if (chan->busy == 0) settle(chan);
    return luaio::park(L, q->waiter);
}

// The cached answer under `key` (when the cache may be used), else a query started by `start`
// whose answer is cached under `key`.
template <class Start>
int cached_or_query(lua_State* L, const char* fname, const std::string& name, const std::string& key, const Options& o,
                    Start&& start) {
    if (o.cache) {
        uint64_t now = now_ms();
        if (const CacheEntry* e = g_cache.get(key, now)) {
            push_list(L, e->addrs, o.ttl ? &e->ttls : nullptr, static_cast<int>((now - e->stored) / 1000));
            return 1;
        }
    }
    luaio::check_can_wait(L, fname);
    auto* q = new Query;
    q->name = name;
    q->cache_key = key;
    q->want_ttl = o.ttl;
    q->use_cache = o.cache;
    return run_query(L, q, o.timeout, start);
}

int resolve(lua_State* L, int family, const char* fname) {
    std::string name = check_name(L, fname, "a hostname");
    Options o = check_options(L, 2, kResolveOptions, fname);
    if (bad_name(name)) return return_error(L, ARES_EBADNAME, name);
    std::string key = cache_key(family == AF_INET ? "A" : "AAAA", name);
    return cached_or_query(L, fname, name, key, o, [family](ares_channel ch, Query* q) {
        ares_query(ch, q->name.c_str(), C_IN, family == AF_INET ? T_A : T_AAAA,
                   family == AF_INET ? on_a_answer : on_aaaa_answer, q);
    });
}

int l_resolve4(lua_State* L) {
    return resolve(L, AF_INET, "resolve4");
}
int l_resolve6(lua_State* L) {
    return resolve(L, AF_INET6, "resolve6");
}

int l_lookup(lua_State* L) {
    const char* fname = "lookup";
    std::string name = check_name(L, fname, "a hostname");
    Options o;
    if (lua_type(L, 2) == LUA_TNUMBER) {
        lua_Number n = lua_tonumber(L, 2);
        if (n != 0 && n != 4 && n != 6) luaio::raise(L, fname, "family must be 4, 6 or nil");
        o.timeout = g_timeout_ms;
        o.family = static_cast<int>(n);
    } else if (lua_isnoneornil(L, 2) || lua_istable(L, 2)) {
        o = check_options(L, 2, kLookupOptions, fname);
    } else {
        luaio::raise(L, fname, "expected a family (4 or 6) or an options table as argument 2, got %s",
                     luaL_typename(L, 2));
    }
    if (bad_name(name)) return return_error(L, ARES_EBADNAME, name);
    // An IP address is its own answer, whatever the family asked for.
    unsigned char buf[sizeof(in6_addr)];
    if (uv_inet_pton(AF_INET, name.c_str(), buf) == 0 || uv_inet_pton(AF_INET6, name.c_str(), buf) == 0) {
        std::vector<int> ttls{0};
        push_list(L, {name}, o.ttl ? &ttls : nullptr, 0);
        return 1;
    }
    std::string key = cache_key(o.family == 4 ? "L4" : o.family == 6 ? "L6" : "L", name);
    int family = o.family == 4 ? AF_INET : o.family == 6 ? AF_INET6 : AF_UNSPEC;
    return cached_or_query(L, fname, name, key, o, [family](ares_channel ch, Query* q) {
        ares_addrinfo_hints hints;
        std::memset(&hints, 0, sizeof hints);
        hints.ai_family = family;
        hints.ai_flags = ARES_AI_NOSORT;
        ares_getaddrinfo(ch, q->name.c_str(), nullptr, &hints, on_addrinfo, q);
    });
}

// The name a PTR query for an address asks: "4.3.2.1.in-addr.arpa", or the 32 nibbles of an
// IPv6 address in reverse, then "ip6.arpa".
std::string ptr_name(const unsigned char* a, int family) {
    std::string n;
    if (family == AF_INET) {
        for (int i = 3; i >= 0; i--) n += std::to_string(a[i]) + ".";
        return n + "in-addr.arpa";
    }
    const char* hex = "0123456789abcdef";
    for (int i = 15; i >= 0; i--) {
        n += hex[a[i] & 15];
        n += '.';
        n += hex[a[i] >> 4];
        n += '.';
    }
    return n + "ip6.arpa";
}

int l_reverse(lua_State* L) {
    const char* fname = "reverse";
    std::string ip = check_name(L, fname, "an IP address");
    Options o = check_options(L, 2, kReverseOptions, fname);
    unsigned char buf[sizeof(in6_addr)];
    int family;
    if (uv_inet_pton(AF_INET, ip.c_str(), buf) == 0 && ip.find('\0') == std::string::npos)
        family = AF_INET;
    else if (uv_inet_pton(AF_INET6, ip.c_str(), buf) == 0 && ip.find('\0') == std::string::npos)
        family = AF_INET6;
    else {
        lua_pushnil(L);
        std::string msg = "not an IP address: " + ip;
        luaio::push_error(L, UV_EINVAL, msg.c_str());
        return 2;
    }
    luaio::check_can_wait(L, fname);
    auto* q = new Query;
    q->name = ip;
    q->asked = ptr_name(buf, family);
    q->use_cache = false;
    std::string addr(reinterpret_cast<char*>(buf), family == AF_INET ? 4 : 16);
    return run_query(L, q, o.timeout, [addr, family](ares_channel ch, Query* q) {
        ares_gethostbyaddr(ch, addr.data(), static_cast<int>(addr.size()), family, on_hostent, q);
    });
}

// "1.2.3.4", "1.2.3.4:53", "::1", "[::1]", "[::1]:53" -> a c-ares server node.
bool parse_server(const std::string& s, ares_addr_port_node* node) {
    std::memset(node, 0, sizeof *node);
    std::string host = s;
    int port = 53;
    std::string port_text;
    if (!s.empty() && s[0] == '[') {
        size_t close = s.find(']');
        if (close == std::string::npos) return false;
        host = s.substr(1, close - 1);
        std::string rest = s.substr(close + 1);
        if (!rest.empty()) {
            if (rest[0] != ':') return false;
            port_text = rest.substr(1);
            if (port_text.empty()) return false;
        }
        if (uv_inet_pton(AF_INET6, host.c_str(), &node->addr.addr6) != 0) return false;
        node->family = AF_INET6;
    } else if (std::count(s.begin(), s.end(), ':') == 1) {
        size_t colon = s.find(':');
        host = s.substr(0, colon);
        port_text = s.substr(colon + 1);
        if (port_text.empty()) return false;
        if (uv_inet_pton(AF_INET, host.c_str(), &node->addr.addr4) != 0) return false;
        node->family = AF_INET;
    } else if (uv_inet_pton(AF_INET, host.c_str(), &node->addr.addr4) == 0) {
        node->family = AF_INET;
    } else if (uv_inet_pton(AF_INET6, host.c_str(), &node->addr.addr6) == 0) {
        node->family = AF_INET6;
    } else {
        return false;
    }
    if (host.find('\0') != std::string::npos) return false;
    if (!port_text.empty()) {
        if (port_text.size() > 5 || port_text.find_first_not_of("0123456789") != std::string::npos) return false;
        port = std::stoi(port_text);
        if (port < 1 || port > 65535) return false;
    }
    node->udp_port = port;
    node->tcp_port = port;
    return true;
}

int l_set_servers(lua_State* L) {
    const char* fname = "setServers";
    std::vector<ares_addr_port_node> servers;
    if (!lua_isnoneornil(L, 1)) {
        if (!lua_istable(L, 1))
            luaio::raise(L, fname, "expected a list of servers (a table) as argument 1, got %s", luaL_typename(L, 1));
        size_t n = lua_objlen(L, 1);
        if (n == 0) luaio::raise(L, fname, "expected at least one server (call setServers() to use resolv.conf)");
        for (size_t i = 1; i <= n; i++) {
            lua_rawgeti(L, 1, static_cast<int>(i));
            if (lua_type(L, -1) != LUA_TSTRING)
                luaio::raise(L, fname, "server %d must be a string, got %s", static_cast<int>(i), luaL_typename(L, -1));
            size_t len;
            const char* s = lua_tolstring(L, -1, &len);
            ares_addr_port_node node;
            if (!parse_server(std::string(s, len), &node))
                luaio::raise(L, fname, "invalid server address '%s' (expected \"ip\", \"ip:port\" or \"[ipv6]:port\")",
                             s);
            servers.push_back(node);
            lua_pop(L, 1);
        }
    }
    g_servers = servers;
    // Answers from other servers may differ: start afresh.
    g_cache.flush();
    Channel* chan = g_channel;
    if (chan && !g_servers.empty() && chan->pending == 0) {
        for (size_t i = 0; i < g_servers.size(); i++)
            g_servers[i].next = i + 1 < g_servers.size() ? &g_servers[i + 1] : nullptr;
        if (ares_set_servers_ports(chan->ares, g_servers.data()) == ARES_SUCCESS) return 0;
    }
    // c-ares cannot change the servers of a channel with pending queries (nor go back to
    // resolv.conf): those finish on the old channel, new queries go to a new one.
    retire_channels();
    return 0;
}

int l_get_servers(lua_State* L) {
    int status = ARES_SUCCESS;
    Channel* chan = current_channel(&status);
    lua_newtable(L);
    if (!chan) return 1;
    ares_addr_port_node* servers = nullptr;
    if (ares_get_servers_ports(chan->ares, &servers) != ARES_SUCCESS) return 1;
    int i = 0;
    for (ares_addr_port_node* s = servers; s; s = s->next) {
        std::string text = ntop(s->family, &s->addr);
        int port = s->udp_port ? s->udp_port : 53;
        if (port != 53) text = (s->family == AF_INET6 ? "[" + text + "]" : text) + ":" + std::to_string(port);
        lua_pushlstring(L, text.data(), text.size());
        lua_rawseti(L, -2, ++i);
    }
    ares_free_data(servers);
    return 1;
}

int l_set_timeout(lua_State* L) {
    if (lua_type(L, 1) != LUA_TNUMBER)
        luaio::raise(L, "setTimeout", "expected milliseconds (a number) as argument 1, got %s", luaL_typename(L, 1));
    g_timeout_ms = check_timeout(L, static_cast<lua_Integer>(lua_tonumber(L, 1)), "setTimeout");
    return 0;
}

int l_get_timeout(lua_State* L) {
    lua_pushinteger(L, g_timeout_ms);
    return 1;
}

int l_set_cache(lua_State* L) {
    const char* fname = "setCache";
    if (!lua_istable(L, 1))
        luaio::raise(L, fname, "expected an options table as argument 1, got %s", luaL_typename(L, 1));
    luaio::check_option_names(L, 1, kCacheOptions, fname);
    lua_Integer size = luaio::opt_int_field(L, 1, "size", static_cast<lua_Integer>(g_cache.size), fname);
    lua_Integer max_ttl = luaio::opt_int_field(L, 1, "max_ttl", g_cache.max_ttl, fname);
    if (size < 0 || size > 10000000) luaio::raise(L, fname, "size must be between 0 and 10000000");
    if (max_ttl < 0 || max_ttl > 86400 * 7) luaio::raise(L, fname, "max_ttl must be between 0 and 604800 seconds");
    g_cache.size = static_cast<size_t>(size);
    g_cache.max_ttl = static_cast<int>(max_ttl);
    while (g_cache.lru.size() > g_cache.size) {
        g_cache.index.erase(g_cache.lru.back().key);
        g_cache.lru.pop_back();
    }
    return 0;
}

int l_flush_cache(lua_State*) {
    g_cache.flush();
    return 0;
}

int l_cache_stats(lua_State* L) {
    lua_createtable(L, 0, 5);
    lua_pushinteger(L, static_cast<lua_Integer>(g_cache.lru.size()));
    lua_setfield(L, -2, "entries");
    lua_pushinteger(L, static_cast<lua_Integer>(g_cache.size));
    lua_setfield(L, -2, "size");
    lua_pushinteger(L, g_cache.max_ttl);
    lua_setfield(L, -2, "max_ttl");
    lua_pushinteger(L, static_cast<lua_Integer>(g_cache.hits));
    lua_setfield(L, -2, "hits");
    lua_pushinteger(L, static_cast<lua_Integer>(g_cache.misses));
    lua_setfield(L, -2, "misses");
    return 1;
}

} // namespace

extern "C" int luaopen_dns(lua_State* L) {
    const luaL_Reg funcs[] = {
        {"resolve4", l_resolve4},      {"resolve6", l_resolve6},      {"lookup", l_lookup},
        {"reverse", l_reverse},        {"setServers", l_set_servers}, {"getServers", l_get_servers},
        {"setTimeout", l_set_timeout}, {"getTimeout", l_get_timeout}, {"setCache", l_set_cache},
        {"flushCache", l_flush_cache}, {"cacheStats", l_cache_stats}, {nullptr, nullptr}};
    luaL_newlib(L, funcs);
    return 1;
}
