// The C++ core of the tcp module, registered as `luaio.tcp`; lib/tcp.lua is the public face
// (it resolves host names through the dns module and adopts the master's socket in workers).
//
//   server, err = core.listen(port, onconnect, options)
//   sock, err = core.connect(port, ip, options)
//   core.isIP(address) -> 4 | 6 | 0
//   server:address() server:connections() server:refused() server:close()
//   sock: the Stream methods (runtime/stream.h) + localAddress remoteAddress setNodelay setKeepalive
//
// Every connection is a luaio::Stream. A server counts its connections through
// Stream::on_close and lives until its listener is closed and its last connection is gone.
#include "runtime/luaio.h"
#include "runtime/object.h"
#include "runtime/stream.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace {

using luaio::Stream;

constexpr const char* kSocketClass = "luaio.tcp.socket";

// Defaults of the seed (tcp.createServer and tcp.connect).
constexpr lua_Integer kDefaultBacklog = 511;
constexpr lua_Integer kDefaultReadBufferKiB = 16;
constexpr lua_Integer kDefaultMaxConnections = 65535;
// The most connections server:close() takes from the backlog (the kernel caps a backlog at
// net.core.somaxconn, 4096 by default).
constexpr lua_Integer kMaxBacklogOnClose = 65535;

// ---------------------------------------------------------------- options

// Socket options shared by accepted and connected sockets.
struct SocketOptions {
    bool nodelay = true;
    bool keepalive = true;
    unsigned keepidle = 0; // seconds; 0 keeps the system's default
    uint64_t read_timeout = 0;
    uint64_t write_timeout = 0;
    uint64_t connect_timeout = 0;
    size_t high_water = kDefaultReadBufferKiB * 1024;
};

using luaio::check_option_names;

lua_Integer int_option(lua_State* L, int idx, const char* name, lua_Integer def, lua_Integer min, lua_Integer max,
                       const char* fname) {
    lua_Integer v = luaio::opt_int_field(L, idx, name, def, fname);
    if (v < min || v > max)
        luaio::raise(L, fname, "option '%s' must be between %lld and %lld, got %lld", name, static_cast<long long>(min),
                     static_cast<long long>(max), static_cast<long long>(v));
    return v;
}

constexpr lua_Integer kMaxMs = 1000LL * 1000 * 1000 * 1000; // about 31 years

SocketOptions socket_options(lua_State* L, int idx, const char* fname) {
    SocketOptions o;
    o.nodelay = luaio::opt_bool_field(L, idx, "tcp_nodelay", true, fname);
    o.keepalive = luaio::opt_bool_field(L, idx, "tcp_keepalive", true, fname);
    o.keepidle = static_cast<unsigned>(int_option(L, idx, "tcp_keepidle", 0, 0, 1 << 20, fname));
    lua_Integer t = int_option(L, idx, "timeout", 0, 0, kMaxMs, fname);
    o.connect_timeout = static_cast<uint64_t>(int_option(L, idx, "connect_timeout", t, 0, kMaxMs, fname));
    o.read_timeout = static_cast<uint64_t>(int_option(L, idx, "read_timeout", t, 0, kMaxMs, fname));
    o.write_timeout = static_cast<uint64_t>(int_option(L, idx, "write_timeout", t, 0, kMaxMs, fname));
    o.high_water =
        static_cast<size_t>(int_option(L, idx, "read_buffer_size", kDefaultReadBufferKiB, 1, 1024 * 1024, fname)) *
        1024;
    return o;
}

int set_keepalive(uv_tcp_t* tcp, bool on, unsigned idle) {
    // libuv sets TCP_KEEPIDLE whenever keep-alive is on, and 0 is not a valid idle time:
    // with no idle time only SO_KEEPALIVE is set, so the system's default applies.
    if (on && idle) return uv_tcp_keepalive(tcp, 1, idle);
    uv_os_fd_t fd;
    int err = uv_fileno(reinterpret_cast<uv_handle_t*>(tcp), &fd);
    if (err) return err;
    int v = on ? 1 : 0;
    return setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &v, sizeof v) ? uv_translate_sys_error(errno) : 0;
}

void apply_options(Stream* s, const SocketOptions& o) {
    if (o.nodelay) uv_tcp_nodelay(s->tcp(), 1);
    if (o.keepalive) set_keepalive(s->tcp(), true, o.keepidle);
    s->read_timeout = o.read_timeout;
    s->write_timeout = o.write_timeout;
    s->high_water = o.high_water;
}

// ---------------------------------------------------------------- addresses

void push_address(lua_State* L, const sockaddr_storage& ss) {
    char ip[INET6_ADDRSTRLEN] = "";
    int port = 0, family = 0;
    if (ss.ss_family == AF_INET) {
        auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
        uv_ip4_name(a, ip, sizeof ip);
        port = ntohs(a->sin_port);
        family = 4;
    } else if (ss.ss_family == AF_INET6) {
        auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
        uv_ip6_name(a, ip, sizeof ip);
        port = ntohs(a->sin6_port);
        family = 6;
    }
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, family);
    lua_setfield(L, -2, "family");
    lua_pushinteger(L, port);
    lua_setfield(L, -2, "port");
    lua_pushstring(L, ip);
    lua_setfield(L, -2, "address");
}

int ip_family(const char* s) {
    unsigned char buf[sizeof(in6_addr)];
    if (uv_inet_pton(AF_INET, s, buf) == 0) return 4;
    if (uv_inet_pton(AF_INET6, s, buf) == 0) return 6;
    return 0;
}

// Fills `ss` from an IP literal; returns a libuv error when it is not one of `family`.
int make_sockaddr(const char* ip, int port, int family, sockaddr_storage* ss) {
    std::memset(ss, 0, sizeof *ss);
    if (family == 4) return uv_ip4_addr(ip, port, reinterpret_cast<sockaddr_in*>(ss));
    return uv_ip6_addr(ip, port, reinterpret_cast<sockaddr_in6*>(ss));
}

lua_Integer check_port(lua_State* L, int idx, const char* fname) {
    if (lua_type(L, idx) != LUA_TNUMBER) luaio::raise_arg(L, idx, fname, "a port number");
    lua_Number n = lua_tonumber(L, idx);
    if (!(n >= 0 && n <= 65535) || n != static_cast<lua_Number>(static_cast<int>(n)))
        luaio::raise(L, fname, "port must be an integer between 0 and 65535");
    return static_cast<lua_Integer>(n);
}

// Reads `family` (4 or 6, default: the family of `host`, else 4) and `host`.
int check_family(lua_State* L, int opts, const char* host, const char* fname) {
    int host_family = host ? ip_family(host) : 0;
    lua_Integer family = luaio::opt_int_field(L, opts, "family", host_family ? host_family : 4, fname);
    if (family != 4 && family != 6) luaio::raise(L, fname, "option 'family' must be 4 or 6");
    return static_cast<int>(family);
}

// ---------------------------------------------------------------- sockets

Stream* check_tcp(lua_State* L, const char* fname) {
    Stream* s = Stream::check(L, 1, fname);
    if (s->handle()->type != UV_TCP) luaio::raise(L, fname, "expected a tcp socket as self");
    return s;
}

int l_sock_address(lua_State* L, bool remote) {
    const char* fname = remote ? "remoteAddress" : "localAddress";
    Stream* s = check_tcp(L, fname);
    sockaddr_storage ss;
    int len = sizeof ss;
    int err = remote ? uv_tcp_getpeername(s->tcp(), reinterpret_cast<sockaddr*>(&ss), &len)
                     : uv_tcp_getsockname(s->tcp(), reinterpret_cast<sockaddr*>(&ss), &len);
    if (err) return luaio::return_uv_error(L, err);
    push_address(L, ss);
    return 1;
}

int l_sock_local_address(lua_State* L) {
    return l_sock_address(L, false);
}
int l_sock_remote_address(lua_State* L) {
    return l_sock_address(L, true);
}

bool check_bool(lua_State* L, int idx, const char* fname) {
    if (lua_isnoneornil(L, idx)) return true;
    if (lua_type(L, idx) != LUA_TBOOLEAN) luaio::raise_arg(L, idx, fname, "a boolean");
    return lua_toboolean(L, idx) != 0;
}

// err = sock:setNodelay([on = true])
int l_sock_set_nodelay(lua_State* L) {
    Stream* s = check_tcp(L, "setNodelay");
    bool on = check_bool(L, 2, "setNodelay");
    int err = uv_tcp_nodelay(s->tcp(), on ? 1 : 0);
    if (err) return luaio::return_uv_error(L, err, 0);
    return 0;
}

// err = sock:setKeepalive([on = true[, idle_seconds = 0 (system default)]])
int l_sock_set_keepalive(lua_State* L) {
    Stream* s = check_tcp(L, "setKeepalive");
    bool on = check_bool(L, 2, "setKeepalive");
    lua_Number idle = lua_isnoneornil(L, 3) ? 0 : luaio::check_number(L, 3, "setKeepalive");
    if (!(idle >= 0 && idle <= (1 << 20)) || idle != static_cast<lua_Number>(static_cast<unsigned>(idle)))
        luaio::raise(L, "setKeepalive", "idle time must be a non-negative integer number of seconds");
    int err = set_keepalive(s->tcp(), on, static_cast<unsigned>(idle));
    if (err) return luaio::return_uv_error(L, err, 0);
    return 0;
}

// ---------------------------------------------------------------- connect

// One connection attempt. Freed when both the connect request has completed and the timer
// (if any) is closed; the task is woken once, by whichever comes first.
struct Connect {
    uv_connect_t req;
    uv_timer_t timer;
    luaio::Waiter waiter;
    Stream* stream;
    SocketOptions opts;
    int open = 1; // the request, plus the timer when there is one
    int port;
    char ip[INET6_ADDRSTRLEN]; // the address and port that a failure concerns
};

// Wakes the connecting task with nil and the error, which says the address it concerns.
void wake_connect_error(Connect* c, int err) {
    luaio::wake(c->waiter, [c, err](lua_State* co) {
        int n = luaio::return_uv_error(co, err);
        luaio::set_error_address(co, c->ip, c->port);
        return n;
    });
}

void connect_release(Connect* c) {
    if (--c->open == 0) delete c;
}

void on_connect_timer_closed(uv_handle_t* h) {
    connect_release(static_cast<Connect*>(h->data));
}

void on_connect(uv_connect_t* req, int status) {
    auto* c = static_cast<Connect*>(req->data);
    if (c->opts.connect_timeout) uv_close(reinterpret_cast<uv_handle_t*>(&c->timer), on_connect_timer_closed);
    Stream* s = c->stream;
    if (c->waiter.waiting()) {
        if (status == 0) {
            apply_options(s, c->opts);
            luaio::wake(c->waiter, [s](lua_State* co) {
                s->push_proxy(co, kSocketClass);
                return 1;
            });
        } else {
            s->close();
            wake_connect_error(c, status);
        }
    } else if (!s->closing()) {
        s->close();
    }
    connect_release(c);
}

void on_connect_timeout(uv_timer_t* t) {
    auto* c = static_cast<Connect*>(t->data);
    // Closing the stream cancels the request: on_connect then runs with ECANCELED and frees c.
    c->stream->close();
    wake_connect_error(c, UV_ETIMEDOUT);
}

// The option names of core.connect and core.listen (also core.connectOptions/listenOptions, for
// modules that take tcp's options among their own, as lib/tls.lua does).
const char* const kConnectOptions[] = {"family",           "timeout",     "connect_timeout", "read_timeout",
                                       "write_timeout",    "tcp_nodelay", "tcp_keepalive",   "tcp_keepidle",
                                       "read_buffer_size", nullptr};
const char* const kListenOptions[] = {
    "family",           "host",           "timeout",      "read_timeout", "write_timeout",
    "tcp_nodelay",      "tcp_keepalive",  "tcp_keepidle", "tcp_backlog",  "tcp_reuseport",
    "read_buffer_size", "maxconnections", "fd",           "spawn",        nullptr};

// sock, err = core.connect(port, ip, options[, fname])
int l_connect(lua_State* L) {
    // The public name for messages: lib/tcp.lua's caller's (argument 4), else tcp.connect.
    const char* fname = lua_type(L, 4) == LUA_TSTRING ? lua_tostring(L, 4) : "tcp.connect";
    int port = static_cast<int>(check_port(L, 1, fname));
    const char* ip = luaio::check_string(L, 2, fname);
    check_option_names(L, 3, kConnectOptions, fname);
    // `family` chooses the default host and the addresses of a host name (lib/tcp.lua); here
    // the address itself says its family.
    check_family(L, 3, ip, fname);
    int family = ip_family(ip);
    SocketOptions opts = socket_options(L, 3, fname);
    sockaddr_storage ss;
    if (!family || make_sockaddr(ip, port, family, &ss) != 0) luaio::raise(L, fname, "'%s' is not an IP address", ip);
    luaio::check_can_wait(L, fname);

    Stream* s = Stream::create(UV_TCP);
    int err = uv_tcp_init(luaio::loop(), s->tcp());
    if (err) {
        s->close();
        return luaio::return_uv_error(L, err);
    }
    auto* c = new Connect;
    c->req.data = c;
    c->stream = s;
    c->opts = opts;
    c->port = port;
    std::snprintf(c->ip, sizeof c->ip, "%s", ip);
    err = uv_tcp_connect(&c->req, s->tcp(), reinterpret_cast<const sockaddr*>(&ss), on_connect);
    if (err) {
        delete c;
        s->close();
        int n = luaio::return_uv_error(L, err);
        luaio::set_error_address(L, ip, port);
        return n;
    }
    if (opts.connect_timeout) {
        uv_timer_init(luaio::loop(), &c->timer);
        c->timer.data = c;
        c->open++;
        luaio::start_timer(&c->timer, on_connect_timeout, opts.connect_timeout);
    }
    return luaio::park(L, c->waiter);
}

// ---------------------------------------------------------------- servers

struct Server;
void server_close(Server* sv);

// A listening server anchors its proxy, which every connection's task gets; it is freed once its
// listener is closed and its last connection is gone.
struct Server : luaio::Handle<Server> {
    static constexpr const char* kClass = "luaio.tcp.server";
    static constexpr const char* kWhat = "tcp server";
    uv_tcp_t tcp;
    SocketOptions opts;
    size_t max_connections = kDefaultMaxConnections;
    size_t connections = 0;
    size_t refused = 0;
    int handler_ref = LUA_NOREF; // onconnect
    bool spawn = true;           // onconnect runs in a task of its own (else at once, no waiting)
    bool listening = false;      // the listener is open (not yet closed)
    bool listener_open = false;  // the listener handle exists (its close callback has not run)
    double last_accept_error = -1e9;

    // Reached only once the server is closed (a listening server anchors its proxy), or when
    // the Lua state closes, or by hand.
    void proxy_gone() { server_close(this); }
};

void server_maybe_free(Server* sv) {
    if (sv->listener_open || sv->connections > 0) return;
    delete sv;
}

void on_connection_closed(Stream*, void* data) {
    auto* sv = static_cast<Server*>(data);
    sv->connections--;
    server_maybe_free(sv);
}

void server_close(Server* sv) {
    if (!sv->listening) return;
    sv->listening = false;
    if (lua_State* L = luaio::main_state()) luaL_unref(L, LUA_REGISTRYINDEX, sv->handler_ref);
    sv->handler_ref = LUA_NOREF;
    sv->unanchor();
    uv_close(reinterpret_cast<uv_handle_t*>(&sv->tcp), [](uv_handle_t* h) {
        auto* sv = static_cast<Server*>(h->data);
        sv->listener_open = false;
        server_maybe_free(sv);
    });
}

void serve_accepted(Server* sv, Stream* s);

void on_connection(uv_stream_t* listener, int status) {
    auto* sv = static_cast<Server*>(listener->data);
    if (status < 0) {
        // libuv already copes with EMFILE (it drops the connection with a reserved descriptor
        // instead of spinning); report it at most once a second.
        double now = static_cast<double>(uv_now(luaio::loop()));
        if (now - sv->last_accept_error >= 1000) {
            sv->last_accept_error = now;
            char msg[128];
            std::snprintf(msg, sizeof msg, "tcp server: accept failed: %s", uv_strerror(status));
            luaio::report_error(luaio::main_state(), "", msg);
        }
        return;
    }
    Stream* s = Stream::create(UV_TCP);
    uv_tcp_init(luaio::loop(), s->tcp());
    if (uv_accept(listener, s->stream()) != 0 || !sv->listening) {
        s->close();
        return;
    }
    serve_accepted(sv, s);
}

// Accepts what is queued on the listener (its backlog) before server:close() closes it: the
// clients there are connected already, and closing the socket would reset them. Bounded, so a
// flood of connections cannot keep a closing server here.
void accept_backlog(Server* sv) {
    uv_os_fd_t lfd;
    if (!sv->listening || uv_fileno(reinterpret_cast<uv_handle_t*>(&sv->tcp), &lfd) != 0) return;
    for (lua_Integer n = 0; n < kMaxBacklogOnClose; n++) {
        int fd = accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0 && errno == EINTR) continue;
        if (fd < 0) return;
        Stream* s = Stream::create(UV_TCP);
        uv_tcp_init(luaio::loop(), s->tcp());
        if (uv_tcp_open(s->tcp(), fd) != 0) {
            ::close(fd);
            s->close();
            continue;
        }
        serve_accepted(sv, s);
    }
}

// A new connection: counted, set up, and handed to onconnect (in a task of its own unless the
// server was made with spawn = false).
void serve_accepted(Server* sv, Stream* s) {
    if (sv->connections >= sv->max_connections) {
        sv->refused++;
        s->close();
        return;
    }
    sv->connections++;
    s->on_close = on_connection_closed;
    s->on_close_data = sv;
    apply_options(s, sv->opts);
    lua_State* L = luaio::main_state();
    lua_rawgeti(L, LUA_REGISTRYINDEX, sv->handler_ref);
    s->push_proxy(L, kSocketClass);
    sv->push_anchored(L);
    if (sv->spawn) {
        // The socket is closed when the task ends, however it ends.
        luaio::spawn(L, 2, -2);
        return;
    }
    if (lua_pcall(L, 2, 0, 0) != 0) {
        const char* msg = lua_tostring(L, -1);
        luaio::report_error(L, "tcp server onconnect: ", msg ? msg : "(error object is not a string)");
        lua_pop(L, 1);
        s->close();
    }
}

Server* check_server(lua_State* L, const char* fname) {
    return Server::check(L, 1, fname);
}

// server, err = core.listen(port, onconnect, options[, fname])
int l_listen(lua_State* L) {
    // The public name for messages: lib/tcp.lua's caller's (argument 4), else tcp.createServer.
    const char* fname = lua_type(L, 4) == LUA_TSTRING ? lua_tostring(L, 4) : "tcp.createServer";
    int port = static_cast<int>(check_port(L, 1, fname));
    if (!lua_isfunction(L, 2))
        luaio::raise(L, fname, "expected a function as argument 2 (onconnect), got %s", luaL_typename(L, 2));
    check_option_names(L, 3, kListenOptions, fname);
    const char* host = luaio::opt_string_field(L, 3, "host", fname);
    int family = check_family(L, 3, host, fname);
    if (!host) host = family == 4 ? "0.0.0.0" : "::";
    SocketOptions opts = socket_options(L, 3, fname);
    int backlog = static_cast<int>(int_option(L, 3, "tcp_backlog", kDefaultBacklog, 1, 65535, fname));
    bool reuseport = luaio::opt_bool_field(L, 3, "tcp_reuseport", false, fname);
    lua_Integer maxconn = int_option(L, 3, "maxconnections", kDefaultMaxConnections, 1, 1LL << 40, fname);
    // A listening socket made elsewhere (the master of `luaio --workers` hands each worker
    // the same bound SO_REUSEPORT socket across restarts): adopt it instead of binding.
    lua_Integer fd = int_option(L, 3, "fd", -1, -1, 1 << 30, fname);
    bool spawn = luaio::opt_bool_field(L, 3, "spawn", true, fname);
    sockaddr_storage ss;
    if (make_sockaddr(host, port, family, &ss) != 0)
        luaio::raise(L, fname, "host '%s' is not an IPv%d address", host, family);

    auto* sv = new Server;
    sv->opts = opts;
    sv->max_connections = static_cast<size_t>(maxconn);
    sv->spawn = spawn;
    sv->tcp.data = sv;
    int err = fd >= 0 ? uv_tcp_init(luaio::loop(), &sv->tcp)
                      : uv_tcp_init_ex(luaio::loop(), &sv->tcp, family == 4 ? AF_INET : AF_INET6);
    if (err) {
        delete sv;
        return luaio::return_uv_error(L, err);
    }
    sv->listener_open = true;
    sv->listening = true;
    if (fd >= 0) {
        err = uv_tcp_open(&sv->tcp, static_cast<uv_os_sock_t>(fd));
    } else if (reuseport) {
        uv_os_fd_t fd;
        int on = 1;
        err = uv_fileno(reinterpret_cast<uv_handle_t*>(&sv->tcp), &fd);
        if (!err && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on) != 0) err = uv_translate_sys_error(errno);
    }
    if (!err && fd < 0) err = uv_tcp_bind(&sv->tcp, reinterpret_cast<const sockaddr*>(&ss), 0);
    if (!err) err = uv_listen(reinterpret_cast<uv_stream_t*>(&sv->tcp), backlog, on_connection);
    if (err) {
        server_close(sv);
        int n = luaio::return_uv_error(L, err);
        luaio::set_error_address(L, host, static_cast<int>(port));
        return n;
    }
    lua_pushvalue(L, 2);
    sv->handler_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    sv->push_proxy(L);
    sv->anchor(L, -1);
    return 1;
}

// address, err = server:address()
int l_server_address(lua_State* L) {
    Server* sv = check_server(L, "address");
    if (!sv->listening) luaio::raise(L, "address", "attempt to use a closed server");
    sockaddr_storage ss;
    int len = sizeof ss;
    int err = uv_tcp_getsockname(&sv->tcp, reinterpret_cast<sockaddr*>(&ss), &len);
    if (err) return luaio::return_uv_error(L, err);
    push_address(L, ss);
    return 1;
}

// The open connections; still counts after close() while connections in progress finish.
int l_server_connections(lua_State* L) {
    Server* sv = Server::check_or_closed(L, 1, "connections");
    lua_pushinteger(L, sv ? static_cast<lua_Integer>(sv->connections) : 0);
    return 1;
}

// Connections refused because `maxconnections` were open.
int l_server_refused(lua_State* L) {
    Server* sv = Server::check_or_closed(L, 1, "refused");
    lua_pushinteger(L, sv ? static_cast<lua_Integer>(sv->refused) : 0);
    return 1;
}

// Stops accepting; the connections already queued are accepted and served, and connections
// in progress go on until their handlers return. Idempotent.
int l_server_close(lua_State* L) {
    if (Server* sv = Server::check_or_closed(L, 1, "close")) {
        accept_backlog(sv);
        server_close(sv);
    }
    return 0;
}

int l_is_ip(lua_State* L) {
    if (lua_type(L, 1) != LUA_TSTRING)
        luaio::raise(L, "tcp.isIP", "expected a string as argument 1, got %s", luaL_typename(L, 1));
    lua_pushinteger(L, ip_family(lua_tostring(L, 1)));
    return 1;
}

// {name = true, ...} of a nullptr-ended list of names.
void push_name_set(lua_State* L, const char* const* names) {
    lua_newtable(L);
    for (; *names; names++) {
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, *names);
    }
}

} // namespace

extern "C" int luaopen_luaio_tcp(lua_State* L) {
    const luaL_Reg sock_methods[] = {{"localAddress", l_sock_local_address},
                                     {"remoteAddress", l_sock_remote_address},
                                     {"setNodelay", l_sock_set_nodelay},
                                     {"setKeepalive", l_sock_set_keepalive},
                                     {nullptr, nullptr}};
    luaio::new_class(L, kSocketClass, sock_methods);
    Stream::add_methods(L);
    lua_pop(L, 1);
    luaio::set_closer(L, kSocketClass, Stream::close_proxy);

    const luaL_Reg server_methods[] = {{"address", l_server_address}, {"connections", l_server_connections},
                                       {"refused", l_server_refused}, {"close", l_server_close},
                                       {"__gc", Server::l_gc},        {nullptr, nullptr}};
    luaio::new_class(L, Server::kClass, server_methods);
    lua_pop(L, 1);

    const luaL_Reg funcs[] = {{"listen", l_listen}, {"connect", l_connect}, {"isIP", l_is_ip}, {nullptr, nullptr}};
    luaL_newlib(L, funcs);
    push_name_set(L, kConnectOptions);
    lua_setfield(L, -2, "connectOptions");
    push_name_set(L, kListenOptions);
    lua_setfield(L, -2, "listenOptions");
    return 1;
}
