// The C++ core of the process module (`luaio.process`); lib/process.lua is the public face.
//
//   child, err = core.spawn(file, options)   -- options: args, cwd, env, uid, gid, detached,
//                                            -- cpu, stdio = {"pipe"|"inherit"|"ignore", ...}
//   child.pid  child.stdin  child.stdout  child.stderr  child.stdio[i]
//   code, signal = child:wait()              -- waits; code is 128 + signo after a signal
//   ok, err = child:kill([signo])   child:status()   child:unref()   child:ref()
//   code, signal = core.wait(pid)            -- any child started by spawn, by pid
//   ok, err = core.kill(pid, signo)   core.signum(name|number)   core.signame(signo)
//   core.watch_signal(signo, ref) / core.unwatch_signal(signo) / core.set_signal_dispatch(fn)
//   core.cwd() core.chdir(dir) core.exepath() core.pid() core.ppid() core.uptime()
//   core.exit(code) core.abort() core.getenv(k) core.setenv(k, v|nil) core.environ()
//   core.ncpus() core.affinity(pid)  core.listen_socket(host, port, backlog)  core.send_fd(pipe, fd, msg)
//   core.recv_fd(fd, timeout_ms)  core.write_fd(fd, msg)  core.close_fd(fd)  core.cloexec(fd)
//
// A child's C++ owner (Child) lives until its process has exited, its handle is closed and
// its Lua proxy is collected. Its exit status is kept for core.wait(pid) even after the proxy
// is gone (a bounded table of unclaimed statuses), so fork()/exec(), which return only a pid,
// can still be waited for, and libuv reaps every child: none is left as a zombie.
#include "runtime/luaio.h"
#include "runtime/object.h"
#include "runtime/stream.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <sched.h>
#include <sys/prctl.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <string>
#include <unordered_map>
#include <vector>

extern char** environ;

namespace {

constexpr const char* kPipeClass = "luaio.process.pipe";
constexpr int kMaxStdio = 8;
// Exit statuses of children that nobody has waited for yet, kept for core.wait(pid).
constexpr size_t kMaxUnclaimed = 1024;

const uint64_t g_start_ns = uv_hrtime();

// ---------------------------------------------------------------- signals by name

struct SignalName {
    const char* name;
    int signo;
};
const SignalName kSignals[] = {
    {"SIGHUP", SIGHUP},   {"SIGINT", SIGINT},     {"SIGQUIT", SIGQUIT}, {"SIGILL", SIGILL},   {"SIGTRAP", SIGTRAP},
    {"SIGABRT", SIGABRT}, {"SIGBUS", SIGBUS},     {"SIGFPE", SIGFPE},   {"SIGKILL", SIGKILL}, {"SIGUSR1", SIGUSR1},
    {"SIGSEGV", SIGSEGV}, {"SIGUSR2", SIGUSR2},   {"SIGPIPE", SIGPIPE}, {"SIGALRM", SIGALRM}, {"SIGTERM", SIGTERM},
    {"SIGCHLD", SIGCHLD}, {"SIGCONT", SIGCONT},   {"SIGSTOP", SIGSTOP}, {"SIGTSTP", SIGTSTP}, {"SIGTTIN", SIGTTIN},
    {"SIGTTOU", SIGTTOU}, {"SIGURG", SIGURG},     {"SIGXCPU", SIGXCPU}, {"SIGXFSZ", SIGXFSZ}, {"SIGVTALRM", SIGVTALRM},
    {"SIGPROF", SIGPROF}, {"SIGWINCH", SIGWINCH}, {"SIGIO", SIGIO},     {"SIGSYS", SIGSYS},
};

const char* signal_name(int signo) {
    for (const auto& s : kSignals)
        if (s.signo == signo) return s.name;
    return nullptr;
}

// "SIGTERM", "sigterm" and "TERM" name the same signal. Returns -1 when unknown.
int signal_number(const char* name) {
    std::string n;
    for (const char* p = name; *p; p++) n.push_back(static_cast<char>(std::toupper(static_cast<unsigned char>(*p))));
    if (n.compare(0, 3, "SIG") != 0) n = "SIG" + n;
    for (const auto& s : kSignals)
        if (n == s.name) return s.signo;
    return -1;
}

// A signal argument: a name or a number between 0 and 64. Returns -1 when unknown.
int check_signal(lua_State* L, int idx, int def, const char* fname) {
    if (lua_isnoneornil(L, idx)) return def;
    if (lua_type(L, idx) == LUA_TNUMBER) {
        lua_Number n = lua_tonumber(L, idx);
        if (n != static_cast<int>(n) || n < 0 || n > 64) return -1;
        return static_cast<int>(n);
    }
    if (lua_type(L, idx) == LUA_TSTRING) return signal_number(lua_tostring(L, idx));
    luaio::raise(L, fname, "expected a signal name or number, got %s", luaL_typename(L, idx));
}

int return_unknown_signal(lua_State* L, int idx) {
    lua_pushnil(L);
    const char* what = lua_isstring(L, idx) ? lua_tostring(L, idx) : luaL_typename(L, idx);
    std::string msg = std::string("unknown signal '") + what + "'";
    luaio::push_error(L, UV_EINVAL, msg.c_str());
    return 2;
}

// ---------------------------------------------------------------- children

struct Child;
void maybe_free(Child* c);

struct Child : luaio::Handle<Child> {
    static constexpr const char* kClass = "luaio.process.child";
    static constexpr const char* kWhat = "child process";
    // The proxy was collected (or its __gc called by hand): the child is freed once it has exited.
    void proxy_gone() { maybe_free(this); }

    uv_process_t proc;
    int pid = 0;
    bool exited = false;
    bool handle_closed = false;
    bool claimed = false; // somebody received the exit status
    int64_t exit_status = 0;
    int term_signal = 0;
    std::vector<luaio::Waiter> waiters;
};

std::unordered_map<int, Child*> g_children;
struct Unclaimed {
    int64_t status;
    int signal;
};
std::unordered_map<int, Unclaimed> g_unclaimed;
std::deque<int> g_unclaimed_order;

int exit_code(int64_t status, int signo) {
    return signo ? 128 + signo : static_cast<int>(status);
}

int push_exit(lua_State* L, int64_t status, int signo) {
    lua_pushinteger(L, exit_code(status, signo));
    if (signo) {
        const char* name = signal_name(signo);
        if (name)
            lua_pushstring(L, name);
        else
            lua_pushinteger(L, signo);
        return 2;
    }
    return 1;
}

void maybe_free(Child* c) {
    if (!c->handle_closed || c->has_proxy()) return;
    auto it = g_children.find(c->pid);
    if (it != g_children.end() && it->second == c) g_children.erase(it);
    if (c->exited && !c->claimed) {
        if (g_unclaimed.size() >= kMaxUnclaimed) {
            g_unclaimed.erase(g_unclaimed_order.front());
            g_unclaimed_order.pop_front();
        }
        g_unclaimed[c->pid] = {c->exit_status, c->term_signal};
        g_unclaimed_order.push_back(c->pid);
    }
    delete c;
}

void on_child_closed(uv_handle_t* h) {
    Child* c = static_cast<Child*>(h->data);
    c->handle_closed = true;
    maybe_free(c);
}

void on_child_exit(uv_process_t* p, int64_t status, int signo) {
    Child* c = static_cast<Child*>(p->data);
    c->exited = true;
    c->exit_status = status;
    c->term_signal = signo;
    uv_close(reinterpret_cast<uv_handle_t*>(p), on_child_closed);
    std::vector<luaio::Waiter> waiters;
    waiters.swap(c->waiters);
    if (!waiters.empty()) c->claimed = true;
    for (auto& w : waiters) luaio::wake(w, [&](lua_State* co) { return push_exit(co, status, signo); });
}

Child* check_child(lua_State* L, const char* fname) {
    return Child::check(L, 1, fname);
}

int wait_child(lua_State* L, Child* c, const char* fname) {
    if (c->exited) {
        c->claimed = true;
        return push_exit(L, c->exit_status, c->term_signal);
    }
    luaio::check_can_wait(L, fname);
    c->waiters.emplace_back();
    return luaio::park(L, c->waiters.back());
}

int l_child_wait(lua_State* L) {
    return wait_child(L, check_child(L, "wait"), "wait");
}

int l_child_kill(lua_State* L) {
    Child* c = check_child(L, "kill");
    int signo = check_signal(L, 2, SIGTERM, "kill");
    if (signo < 0) return return_unknown_signal(L, 2);
    if (c->exited) return luaio::return_uv_error(L, UV_ESRCH);
    int err = uv_process_kill(&c->proc, signo);
    if (err) return luaio::return_uv_error(L, err);
    lua_pushboolean(L, 1);
    return 1;
}

// code, signal of an exited child, or nothing while it runs.
int l_child_status(lua_State* L) {
    Child* c = check_child(L, "status");
    if (!c->exited) return 0;
    return push_exit(L, c->exit_status, c->term_signal);
}

int l_child_unref(lua_State* L) {
    Child* c = check_child(L, "unref");
    if (!c->exited) uv_unref(reinterpret_cast<uv_handle_t*>(&c->proc));
    return 0;
}

int l_child_ref(lua_State* L) {
    Child* c = check_child(L, "ref");
    if (!c->exited) uv_ref(reinterpret_cast<uv_handle_t*>(&c->proc));
    return 0;
}

// Methods first, then the fields kept in the proxy's environment (pid, stdin, ...).
int l_child_index(lua_State* L) {
    Child::check_slot(L, 1, "__index");
    lua_pushvalue(L, 2);
    lua_rawget(L, lua_upvalueindex(1));
    if (!lua_isnil(L, -1)) return 1;
    lua_getfenv(L, 1);
    lua_pushvalue(L, 2);
    lua_rawget(L, -2);
    return 1;
}

// ---------------------------------------------------------------- spawn

// A user or group option: an integer id or a name from /etc/passwd, /etc/group.
bool user_option(lua_State* L, const char* fname, const char* field, bool group, uv_uid_t* id, bool* found_gid,
                 uv_gid_t* gid) {
    lua_getfield(L, 2, field);
    bool set = false;
    if (lua_type(L, -1) == LUA_TNUMBER) {
        lua_Number n = lua_tonumber(L, -1);
        if (n != static_cast<lua_Number>(static_cast<int64_t>(n)) || n < 0 || n > 4294967294.0)
            luaio::raise(L, fname, "option '%s' must be a non-negative integer id or a name", field);
        *id = static_cast<uv_uid_t>(n);
        set = true;
        if (!group) {
            if (struct passwd* pw = getpwuid(*id)) {
                *found_gid = true;
                *gid = pw->pw_gid;
            }
        }
    } else if (lua_type(L, -1) == LUA_TSTRING) {
        const char* name = lua_tostring(L, -1);
        if (group) {
            struct group* gr = getgrnam(name);
            if (!gr) return false;
            *id = gr->gr_gid;
        } else {
            struct passwd* pw = getpwnam(name);
            if (!pw) return false;
            *id = pw->pw_uid;
            *found_gid = true;
            *gid = pw->pw_gid;
        }
        set = true;
    } else if (!lua_isnil(L, -1)) {
        luaio::raise(L, fname, "option '%s' must be an integer id or a name", field);
    }
    lua_pop(L, 1);
    if (!set) *id = static_cast<uv_uid_t>(-1);
    return true;
}

bool cpu_allowed(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0) return false;
    return cpu >= 0 && cpu < CPU_SETSIZE && CPU_ISSET(cpu, &set);
}

// core.spawn(file, options): options.args is argv[1..]; argv[0] is file (or options.argv0).
int l_spawn(lua_State* L) {
    const char* file = luaL_checkstring(L, 1);
    if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    // The public function's name for error messages (process.fork passes "fork").
    const char* fname = "spawn";
    if (!lua_isnil(L, 2)) {
        lua_getfield(L, 2, "_fname");
        if (lua_type(L, -1) == LUA_TSTRING) fname = lua_tostring(L, -1);
        lua_pop(L, 1); // the options table keeps the string alive
    }

    std::vector<std::string> args;
    const char* argv0 = luaio::opt_string_field(L, 2, "argv0", fname);
    args.emplace_back(argv0 ? argv0 : file);
    if (!lua_isnil(L, 2)) {
        lua_getfield(L, 2, "args");
        if (!lua_isnil(L, -1)) {
            if (!lua_istable(L, -1)) luaio::raise(L, fname, "option 'args' must be an array of strings");
            int n = static_cast<int>(lua_objlen(L, -1));
            for (int i = 1; i <= n; i++) {
                lua_rawgeti(L, -1, i);
                if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)
                    luaio::raise(L, fname, "args[%d] must be a string, got %s", i, luaL_typename(L, -1));
                args.emplace_back(lua_tostring(L, -1));
                lua_pop(L, 1);
            }
        }
        lua_pop(L, 1);
    }

    // env: a table of name = value; it replaces the environment (copy process.environ() to extend it).
    std::vector<std::string> env;
    bool has_env = false;
    if (!lua_isnil(L, 2)) {
        lua_getfield(L, 2, "env");
        if (!lua_isnil(L, -1)) {
            if (!lua_istable(L, -1)) luaio::raise(L, fname, "option 'env' must be a table of name = value");
            has_env = true;
            lua_pushnil(L);
            while (lua_next(L, -2)) {
                if (lua_type(L, -2) != LUA_TSTRING ||
                    (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER))
                    luaio::raise(L, fname, "option 'env' must map names to strings");
                std::string k = lua_tostring(L, -2);
                if (k.empty() || k.find('=') != std::string::npos)
                    luaio::raise(L, fname, "environment name '%s' is invalid", k.c_str());
                env.push_back(k + "=" + lua_tostring(L, -1));
                lua_pop(L, 1);
            }
        }
        lua_pop(L, 1);
    }

    const char* cwd = luaio::opt_string_field(L, 2, "cwd", fname);
    bool detached = luaio::opt_bool_field(L, 2, "detached", false, fname);
    lua_Integer cpu = luaio::opt_int_field(L, 2, "cpu", -1, fname);
    if (cpu < -1) luaio::raise(L, fname, "option 'cpu' must be a non-negative core number");

    uv_uid_t uid;
    uv_gid_t gid, user_gid = 0;
    bool has_user_gid = false, unused = false;
    if (!user_option(L, fname, "uid", false, &uid, &has_user_gid, &user_gid)) {
        lua_getfield(L, 2, "uid");
        std::string msg = std::string("unknown user '") + lua_tostring(L, -1) + "'";
        lua_pushnil(L);
        luaio::push_error(L, UV_EINVAL, msg.c_str());
        return 2;
    }
    if (!user_option(L, fname, "gid", true, reinterpret_cast<uv_uid_t*>(&gid), &unused, &user_gid)) {
        lua_getfield(L, 2, "gid");
        std::string msg = std::string("unknown group '") + lua_tostring(L, -1) + "'";
        lua_pushnil(L);
        luaio::push_error(L, UV_EINVAL, msg.c_str());
        return 2;
    }
    if (cpu >= 0 && !cpu_allowed(static_cast<int>(cpu))) {
        char msg[96];
        std::snprintf(msg, sizeof msg, "cpu %lld is not available to this process", static_cast<long long>(cpu));
        lua_pushnil(L);
        luaio::push_error(L, UV_EINVAL, msg);
        return 2;
    }

    // stdio: "inherit" (the default), "pipe", "ignore" (/dev/null) or a file descriptor.
    uv_stdio_container_t stdio[kMaxStdio];
    luaio::Stream* pipes[kMaxStdio] = {};
    int nstdio = 3;
    for (int i = 0; i < kMaxStdio; i++) {
        stdio[i].flags = UV_INHERIT_FD;
        stdio[i].data.fd = i;
    }
    int null_fd = -1;
    auto cleanup_pipes = [&]() {
        for (auto* p : pipes)
            if (p) p->close();
        if (null_fd >= 0) close(null_fd);
    };
    if (!lua_isnil(L, 2)) {
        lua_getfield(L, 2, "stdio");
        if (!lua_isnil(L, -1)) {
            if (!lua_istable(L, -1)) luaio::raise(L, fname, "option 'stdio' must be an array");
            int n = static_cast<int>(lua_objlen(L, -1));
            if (n > kMaxStdio) luaio::raise(L, fname, "option 'stdio' has more than %d entries", kMaxStdio);
            if (n > nstdio) nstdio = n;
            for (int i = 0; i < n; i++) {
                lua_rawgeti(L, -1, i + 1);
                if (lua_type(L, -1) == LUA_TNUMBER) {
                    stdio[i].flags = UV_INHERIT_FD;
                    stdio[i].data.fd = static_cast<int>(lua_tointeger(L, -1));
                } else if (lua_type(L, -1) == LUA_TSTRING) {
                    const char* kind = lua_tostring(L, -1);
                    if (std::strcmp(kind, "inherit") == 0) {
                        // Already set up.
                    } else if (std::strcmp(kind, "ignore") == 0) {
                        if (null_fd < 0) null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
                        stdio[i].flags = UV_INHERIT_FD;
                        stdio[i].data.fd = null_fd;
                    } else if (std::strcmp(kind, "pipe") == 0) {
                        luaio::Stream* s = luaio::Stream::create(UV_NAMED_PIPE);
                        uv_pipe_init(luaio::loop(), s->pipe(), 0);
                        pipes[i] = s;
                        stdio[i].flags =
                            static_cast<uv_stdio_flags>(UV_CREATE_PIPE | UV_READABLE_PIPE | UV_WRITABLE_PIPE);
                        stdio[i].data.stream = s->stream();
                    } else {
                        cleanup_pipes();
                        luaio::raise(L, fname, "stdio[%d] must be \"pipe\", \"inherit\", \"ignore\" or a descriptor",
                                     i + 1);
                    }
                } else if (!lua_isnil(L, -1)) {
                    cleanup_pipes();
                    luaio::raise(L, fname, "stdio[%d] must be \"pipe\", \"inherit\", \"ignore\" or a descriptor",
                                 i + 1);
                }
                lua_pop(L, 1);
            }
        }
        lua_pop(L, 1);
    }

    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(&a[0]);
    argv.push_back(nullptr);
    std::vector<char*> envp;
    for (auto& e : env) envp.push_back(&e[0]);
    envp.push_back(nullptr);

    uv_process_options_t opts;
    std::memset(&opts, 0, sizeof opts);
    opts.exit_cb = on_child_exit;
    opts.file = file;
    opts.args = argv.data();
    opts.env = has_env ? envp.data() : nullptr;
    opts.cwd = cwd;
    opts.stdio = stdio;
    opts.stdio_count = nstdio;
    if (detached) opts.flags |= UV_PROCESS_DETACHED;
    if (uid != static_cast<uv_uid_t>(-1)) {
        opts.flags |= UV_PROCESS_SETUID;
        opts.uid = uid;
        // A user without an explicit group gets the user's own group, not the parent's (root's).
        if (gid == static_cast<uv_gid_t>(-1) && has_user_gid) gid = user_gid;
    }
    if (gid != static_cast<uv_gid_t>(-1)) {
        opts.flags |= UV_PROCESS_SETGID;
        opts.gid = gid;
    }

    Child* c = new Child;
    c->proc.data = c;
    int err = uv_spawn(luaio::loop(), &c->proc, &opts);
    if (null_fd >= 0) close(null_fd);
    null_fd = -1;
    if (err) {
        // libuv has reaped a child whose exec failed; only the handle is left to close.
        c->exited = true;
        c->claimed = true;
        uv_close(reinterpret_cast<uv_handle_t*>(&c->proc), [](uv_handle_t* h) { delete static_cast<Child*>(h->data); });
        cleanup_pipes();
        return luaio::return_uv_error(L, err);
    }
    c->pid = c->proc.pid;
    if (cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(static_cast<int>(cpu), &set);
        if (sched_setaffinity(c->pid, sizeof set, &set) != 0) {
            int e = -errno;
            uv_process_kill(&c->proc, SIGKILL);
            c->claimed = true;
            g_children[c->pid] = c;
            cleanup_pipes();
            return luaio::return_uv_error(L, e);
        }
    }
    if (detached) uv_unref(reinterpret_cast<uv_handle_t*>(&c->proc));
    g_children[c->pid] = c;
    g_unclaimed.erase(c->pid); // a recycled pid: the old status is meaningless now

    c->push_proxy(L);
    lua_createtable(L, 0, 6);
    lua_pushinteger(L, c->pid);
    lua_setfield(L, -2, "pid");
    lua_createtable(L, nstdio, 0);
    static const char* const kNames[] = {"stdin", "stdout", "stderr"};
    for (int i = 0; i < nstdio; i++) {
        if (!pipes[i]) continue;
        pipes[i]->push_proxy(L, kPipeClass);
        if (i < 3) {
            lua_pushvalue(L, -1);
            lua_setfield(L, -4, kNames[i]);
        }
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "stdio");
    lua_setfenv(L, -2);
    return 1;
}

// ---------------------------------------------------------------- process-wide functions

int l_wait(lua_State* L) {
    lua_Number n = luaio::check_number(L, 1, "process.wait");
    int pid = static_cast<int>(n);
    if (n != pid || pid <= 0) luaio::raise(L, "process.wait", "expected a pid (a positive integer)");
    auto it = g_children.find(pid);
    // A status that somebody has received already is not handed out again by pid.
    if (it != g_children.end() && !(it->second->exited && it->second->claimed))
        return wait_child(L, it->second, "wait");
    auto u = g_unclaimed.find(pid);
    if (u != g_unclaimed.end()) {
        Unclaimed st = u->second;
        g_unclaimed.erase(u);
        for (auto o = g_unclaimed_order.begin(); o != g_unclaimed_order.end(); ++o)
            if (*o == pid) {
                g_unclaimed_order.erase(o);
                break;
            }
        return push_exit(L, st.status, st.signal);
    }
    char msg[128];
    std::snprintf(msg, sizeof msg, "no child with pid %d (not started by this process, or already waited for)", pid);
    lua_pushnil(L);
    luaio::push_error(L, -ECHILD, "ECHILD", msg);
    return 2;
}

int l_kill(lua_State* L) {
    lua_Number n = luaio::check_number(L, 1, "process.kill");
    int pid = static_cast<int>(n);
    if (n != pid) luaio::raise(L, "process.kill", "expected a pid (an integer)");
    int signo = check_signal(L, 2, SIGTERM, "kill");
    if (signo < 0) return return_unknown_signal(L, 2);
    int err = uv_kill(pid, signo);
    if (err) return luaio::return_uv_error(L, err);
    lua_pushboolean(L, 1);
    return 1;
}

int l_signum(lua_State* L) {
    int signo = check_signal(L, 1, -1, "signum");
    if (signo < 0) return return_unknown_signal(L, 1);
    lua_pushinteger(L, signo);
    return 1;
}

int l_signame(lua_State* L) {
    const char* name = signal_name(static_cast<int>(luaio::check_integer(L, 1, "process.signame")));
    if (!name) return 0;
    lua_pushstring(L, name);
    return 1;
}

// Signal watchers: one uv_signal_t per signal number; each delivery starts a task running the
// dispatch function (lib/process.lua) with the signal number. A watcher keeps the loop alive
// only while `ref` is set (someone waits for the signal); handlers alone do not.
struct SignalWatch {
    uv_signal_t handle;
    int signo;
};
std::unordered_map<int, SignalWatch*> g_signal_watches;
int g_dispatch_ref = LUA_NOREF;

void on_signal(uv_signal_t* h, int signo) {
    lua_State* L = luaio::main_state();
    if (!L || g_dispatch_ref == LUA_NOREF) return;
    (void)h;
    lua_rawgeti(L, LUA_REGISTRYINDEX, g_dispatch_ref);
    lua_pushinteger(L, signo);
    luaio::spawn(L, 1);
}

int l_set_signal_dispatch(lua_State* L) {
    luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_pushvalue(L, 1);
    luaL_unref(L, LUA_REGISTRYINDEX, g_dispatch_ref);
    g_dispatch_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

int l_watch_signal(lua_State* L) {
    int signo = static_cast<int>(luaL_checkinteger(L, 1));
    bool ref = lua_toboolean(L, 2) != 0;
    auto it = g_signal_watches.find(signo);
    SignalWatch* w;
    if (it == g_signal_watches.end()) {
        w = new SignalWatch;
        w->signo = signo;
        uv_signal_init(luaio::loop(), &w->handle);
        int err = uv_signal_start(&w->handle, on_signal, signo);
        if (err) {
            uv_close(reinterpret_cast<uv_handle_t*>(&w->handle),
                     [](uv_handle_t* h) { delete reinterpret_cast<SignalWatch*>(h); });
            return luaio::return_uv_error(L, err);
        }
        g_signal_watches[signo] = w;
    } else {
        w = it->second;
    }
    if (ref)
        uv_ref(reinterpret_cast<uv_handle_t*>(&w->handle));
    else
        uv_unref(reinterpret_cast<uv_handle_t*>(&w->handle));
    lua_pushboolean(L, 1);
    return 1;
}

int l_unwatch_signal(lua_State* L) {
    int signo = static_cast<int>(luaL_checkinteger(L, 1));
    auto it = g_signal_watches.find(signo);
    if (it != g_signal_watches.end()) {
        uv_close(reinterpret_cast<uv_handle_t*>(&it->second->handle),
                 [](uv_handle_t* h) { delete reinterpret_cast<SignalWatch*>(h); });
        g_signal_watches.erase(it);
    }
    return 0;
}

int l_cwd(lua_State* L) {
    char buf[4096];
    size_t len = sizeof buf;
    int err = uv_cwd(buf, &len);
    if (err) return luaio::return_uv_error(L, err);
    lua_pushlstring(L, buf, len);
    return 1;
}

int l_chdir(lua_State* L) {
    int err = uv_chdir(luaio::check_string(L, 1, "process.chdir"));
    if (err) return luaio::return_uv_error(L, err);
    lua_pushboolean(L, 1);
    return 1;
}

int l_exepath(lua_State* L) {
    char buf[4096];
    size_t len = sizeof buf;
    int err = uv_exepath(buf, &len);
    if (err) return luaio::return_uv_error(L, err);
    lua_pushlstring(L, buf, len);
    return 1;
}

int l_pid(lua_State* L) {
    lua_pushinteger(L, uv_os_getpid());
    return 1;
}

int l_ppid(lua_State* L) {
    lua_pushinteger(L, uv_os_getppid());
    return 1;
}

int l_uptime(lua_State* L) {
    lua_pushnumber(L, static_cast<double>(uv_hrtime() - g_start_ns) / 1e9);
    return 1;
}

// Flushes C stdio (print, io.write) first: nothing written before exit is lost.
int l_exit(lua_State* L) {
    lua_Integer code = luaL_optinteger(L, 1, 0);
    return luaio::exit_process(L, static_cast<int>(code & 0xff));
}

int l_abort(lua_State*) {
    std::fflush(nullptr);
    std::abort();
}

int l_getenv(lua_State* L) {
    const char* v = std::getenv(luaL_checkstring(L, 1));
    if (!v) return 0;
    lua_pushstring(L, v);
    return 1;
}

int l_setenv(lua_State* L) {
    const char* k = luaL_checkstring(L, 1);
    if (!*k || std::strchr(k, '=')) luaio::raise(L, "setenv", "environment name '%s' is invalid", k);
    int err = lua_isnoneornil(L, 2) ? uv_os_unsetenv(k) : uv_os_setenv(k, luaL_checkstring(L, 2));
    if (err) return luaio::return_uv_error(L, err);
    lua_pushboolean(L, 1);
    return 1;
}

int l_environ(lua_State* L) {
    lua_newtable(L);
    for (char** e = environ; e && *e; e++) {
        const char* eq = std::strchr(*e, '=');
        if (!eq) continue;
        lua_pushlstring(L, *e, eq - *e);
        lua_pushstring(L, eq + 1);
        lua_rawset(L, -3);
    }
    return 1;
}

int l_ncpus(lua_State* L) {
    cpu_set_t set;
    CPU_ZERO(&set);
    int n = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
    lua_pushinteger(L, n > 0 ? n : 1);
    return 1;
}

// ---------------------------------------------------------------- master/worker plumbing

// A listening TCP socket with SO_REUSEADDR and SO_REUSEPORT: fd, port or nil, err.
int l_listen_socket(lua_State* L) {
    const char* host = luaio::check_string(L, 1, "process.listenSocket");
    lua_Integer port = luaio::check_integer(L, 2, "process.listenSocket");
    lua_Integer backlog = lua_isnoneornil(L, 3) ? 511 : luaio::check_integer(L, 3, "process.listenSocket");
    if (port < 0 || port > 65535) luaio::raise(L, "listen_socket", "port must be between 0 and 65535");
    sockaddr_storage addr;
    std::memset(&addr, 0, sizeof addr);
    int family = AF_INET;
    if (uv_ip4_addr(host, static_cast<int>(port), reinterpret_cast<sockaddr_in*>(&addr)) != 0) {
        int err = uv_ip6_addr(host, static_cast<int>(port), reinterpret_cast<sockaddr_in6*>(&addr));
        if (err) return luaio::return_uv_error(L, err);
        family = AF_INET6;
    }
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return luaio::return_uv_error(L, -errno);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    socklen_t len = family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6);
    if (bind(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0 || listen(fd, static_cast<int>(backlog)) != 0) {
        int e = -errno;
        close(fd);
        return luaio::return_uv_error(L, e);
    }
    sockaddr_storage bound;
    socklen_t blen = sizeof bound;
    int bound_port = static_cast<int>(port);
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &blen) == 0)
        bound_port = ntohs(bound.ss_family == AF_INET ? reinterpret_cast<sockaddr_in*>(&bound)->sin_port
                                                      : reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port);
    lua_pushinteger(L, fd);
    lua_pushinteger(L, bound_port);
    return 2;
}

// The listening TCP sockets systemd passed to this process (socket activation, sd_listen_fds:
// LISTEN_PID is this process, LISTEN_FDS descriptors from 3 on): an array of {fd, family,
// address, port}. The variables are removed first, so that children do not take the sockets
// for theirs; the descriptors are kept from children with FD_CLOEXEC.
int l_listen_fds(lua_State* L) {
    const char* pid = std::getenv("LISTEN_PID");
    const char* fds = std::getenv("LISTEN_FDS");
    long for_pid = pid ? std::strtol(pid, nullptr, 10) : 0;
    long count = fds ? std::strtol(fds, nullptr, 10) : 0;
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    lua_newtable(L);
    if (for_pid != static_cast<long>(getpid()) || count <= 0 || count > 1024) return 1;
    int n = 0;
    for (int fd = 3; fd < 3 + count; fd++) {
        sockaddr_storage ss;
        socklen_t len = sizeof ss;
        int type = 0, listening = 0;
        socklen_t tlen = sizeof type, alen = sizeof listening;
        if (getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0 ||
            (ss.ss_family != AF_INET && ss.ss_family != AF_INET6) ||
            getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tlen) != 0 || type != SOCK_STREAM ||
            getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &alen) != 0 || !listening)
            continue;
        fcntl(fd, F_SETFD, FD_CLOEXEC);
        char name[INET6_ADDRSTRLEN] = "";
        int port;
        if (ss.ss_family == AF_INET) {
            auto* a = reinterpret_cast<sockaddr_in*>(&ss);
            uv_ip4_name(a, name, sizeof name);
            port = ntohs(a->sin_port);
        } else {
            auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
            uv_ip6_name(a, name, sizeof name);
            port = ntohs(a->sin6_port);
        }
        lua_createtable(L, 0, 4);
        lua_pushinteger(L, fd);
        lua_setfield(L, -2, "fd");
        lua_pushinteger(L, ss.ss_family == AF_INET ? 4 : 6);
        lua_setfield(L, -2, "family");
        lua_pushstring(L, name);
        lua_setfield(L, -2, "address");
        lua_pushinteger(L, port);
        lua_setfield(L, -2, "port");
        lua_rawseti(L, -2, ++n);
    }
    return 1;
}

// Sends msg with the descriptor fd attached (SCM_RIGHTS) on the socket pair under a pipe.
int l_send_fd(lua_State* L) {
    luaio::Stream* s = luaio::Stream::check(L, 1, "send_fd");
    int fd = static_cast<int>(luaL_checkinteger(L, 2));
    size_t len;
    const char* msg = luaL_checklstring(L, 3, &len);
    uv_os_fd_t sock;
    int err = uv_fileno(s->handle(), &sock);
    if (err) return luaio::return_uv_error(L, err);
    iovec iov{const_cast<char*>(msg), len};
    char cbuf[CMSG_SPACE(sizeof(int))];
    std::memset(cbuf, 0, sizeof cbuf);
    msghdr mh{};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    if (fd >= 0) {
        mh.msg_control = cbuf;
        mh.msg_controllen = sizeof cbuf;
        cmsghdr* cm = CMSG_FIRSTHDR(&mh);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int));
        std::memcpy(CMSG_DATA(cm), &fd, sizeof(int));
    }
    ssize_t r;
    do r = sendmsg(sock, &mh, MSG_NOSIGNAL);
    while (r < 0 && errno == EINTR);
    if (r < 0) return luaio::return_uv_error(L, -errno);
    lua_pushboolean(L, 1);
    return 1;
}

// Worker side, blocking (start-up only): waits up to timeout_ms for one message on fd and
// returns the message and the descriptor that came with it (or nil).
int l_recv_fd(lua_State* L) {
    int sock = static_cast<int>(luaL_checkinteger(L, 1));
    int timeout = static_cast<int>(luaL_optinteger(L, 2, 5000));
    pollfd p{sock, POLLIN, 0};
    int r;
    do r = poll(&p, 1, timeout);
    while (r < 0 && errno == EINTR);
    if (r == 0) return luaio::return_uv_error(L, UV_ETIMEDOUT);
    if (r < 0) return luaio::return_uv_error(L, -errno);
    char buf[512];
    iovec iov{buf, sizeof buf};
    char cbuf[CMSG_SPACE(sizeof(int))];
    msghdr mh{};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = cbuf;
    mh.msg_controllen = sizeof cbuf;
    ssize_t n;
    do n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    if (n < 0) return luaio::return_uv_error(L, -errno);
    if (n == 0) return luaio::return_uv_error(L, UV_EOF);
    int fd = -1;
    for (cmsghdr* cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm))
        if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) std::memcpy(&fd, CMSG_DATA(cm), sizeof(int));
    lua_pushlstring(L, buf, static_cast<size_t>(n));
    if (fd >= 0)
        lua_pushinteger(L, fd);
    else
        lua_pushnil(L);
    return 2;
}

// A short blocking write on a raw descriptor (the worker's channel to its master).
int l_write_fd(lua_State* L) {
    int fd = static_cast<int>(luaL_checkinteger(L, 1));
    size_t len;
    const char* msg = luaL_checklstring(L, 2, &len);
    ssize_t r;
    do r = send(fd, msg, len, MSG_NOSIGNAL);
    while (r < 0 && errno == EINTR);
    if (r < 0) return luaio::return_uv_error(L, -errno);
    lua_pushboolean(L, 1);
    return 1;
}

int l_close_fd(lua_State* L) {
    close(static_cast<int>(luaio::check_integer(L, 1, "process.closeSocket")));
    return 0;
}

int l_cloexec(lua_State* L) {
    int fd = static_cast<int>(luaL_checkinteger(L, 1));
    int flags = fcntl(fd, F_GETFD);
    if (flags < 0 || fcntl(fd, F_SETFD, flags | FD_CLOEXEC) < 0) return luaio::return_uv_error(L, -errno);
    lua_pushboolean(L, 1);
    return 1;
}

// A Stream over an inherited descriptor (the worker's end of its channel to the master).
int l_open_pipe(lua_State* L) {
    int fd = static_cast<int>(luaL_checkinteger(L, 1));
    luaio::Stream* s = luaio::Stream::create(UV_NAMED_PIPE);
    uv_pipe_init(luaio::loop(), s->pipe(), 0);
    int err = uv_pipe_open(s->pipe(), fd);
    if (err) {
        s->close();
        return luaio::return_uv_error(L, err);
    }
    s->push_proxy(L, kPipeClass);
    return 1;
}

int l_unref_pipe(lua_State* L) {
    luaio::Stream* s = luaio::Stream::check(L, 1, "unref");
    uv_unref(s->handle());
    return 0;
}

// Linux: the signal this process gets when its parent dies (a worker follows its master).
int l_set_parent_death_signal(lua_State* L) {
    int signo = static_cast<int>(luaL_checkinteger(L, 1));
    if (prctl(PR_SET_PDEATHSIG, signo) != 0) return luaio::return_uv_error(L, -errno);
    lua_pushboolean(L, 1);
    return 1;
}

// The CPUs a process may run on, as in /proc/PID/status's Cpus_allowed_list: {0, 1, ...}.
int l_affinity(lua_State* L) {
    int pid = lua_isnoneornil(L, 1) ? 0 : static_cast<int>(luaio::check_integer(L, 1, "process.affinity"));
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(pid, sizeof set, &set) != 0) return luaio::return_uv_error(L, -errno);
    lua_newtable(L);
    int k = 0;
    for (int i = 0; i < CPU_SETSIZE; i++)
        if (CPU_ISSET(i, &set)) {
            lua_pushinteger(L, i);
            lua_rawseti(L, -2, ++k);
        }
    return 1;
}

} // namespace

extern "C" int luaopen_luaio_process(lua_State* L) {
    const luaL_Reg pipe_methods[] = {{"unref", l_unref_pipe}, {nullptr, nullptr}};
    luaio::new_class(L, kPipeClass, pipe_methods);
    luaio::Stream::add_methods(L);
    lua_pop(L, 1);

    const luaL_Reg child_methods[] = {{"wait", l_child_wait},   {"kill", l_child_kill}, {"status", l_child_status},
                                      {"unref", l_child_unref}, {"ref", l_child_ref},   {nullptr, nullptr}};
    // Its __index is a function that looks in the methods table, then in the proxy's fields.
    const luaL_Reg child_meta[] = {{"__gc", Child::l_gc}, {nullptr, nullptr}};
    luaio::new_class(L, Child::kClass, child_meta);
    lua_newtable(L);
    luaL_setfuncs(L, child_methods, 0);
    lua_pushcclosure(L, l_child_index, 1);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);

    const luaL_Reg funcs[] = {{"spawn", l_spawn},
                              {"wait", l_wait},
                              {"kill", l_kill},
                              {"signum", l_signum},
                              {"signame", l_signame},
                              {"set_signal_dispatch", l_set_signal_dispatch},
                              {"watch_signal", l_watch_signal},
                              {"unwatch_signal", l_unwatch_signal},
                              {"cwd", l_cwd},
                              {"chdir", l_chdir},
                              {"exepath", l_exepath},
                              {"pid", l_pid},
                              {"ppid", l_ppid},
                              {"uptime", l_uptime},
                              {"exit", l_exit},
                              {"abort", l_abort},
                              {"getenv", l_getenv},
                              {"setenv", l_setenv},
                              {"environ", l_environ},
                              {"ncpus", l_ncpus},
                              {"affinity", l_affinity},
                              {"listen_socket", l_listen_socket},
                              {"listen_fds", l_listen_fds},
                              {"send_fd", l_send_fd},
                              {"recv_fd", l_recv_fd},
                              {"write_fd", l_write_fd},
                              {"close_fd", l_close_fd},
                              {"cloexec", l_cloexec},
                              {"open_pipe", l_open_pipe},
                              {"set_parent_death_signal", l_set_parent_death_signal},
                              {nullptr, nullptr}};
    luaL_newlib(L, funcs);
    return 1;
}
