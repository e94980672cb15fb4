// The luaio runtime core: errors, userdata helpers, the scheduler (park, wake, spawn),
// the loader of embedded lib/ modules and the internal `luaio.core` module.
#include "runtime/luaio.h"
#include "runtime/runtime.h"
#include "runtime/strbuf.h"
#include "runtime/embedded.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <deque>
#include <initializer_list>
#include <string>
#include <unordered_set>
#include <vector>

namespace luaio {
namespace {

uv_loop_t* g_loop = nullptr;
lua_State* g_L = nullptr;

// The root coroutine of the task that is running, and the registry reference that keeps it
// alive while it runs. park() takes that reference over into the waiter, so parking costs no
// extra registry operation.
lua_State* g_current = nullptr;
int g_current_ref = LUA_NOREF;

// The main chunk's task: an error there ends the process with status 1.
lua_State* g_main_task = nullptr;

// The address of this char, as a light userdata, is the value a parked coroutine yields.
// The coroutine wrappers of lib/luaio/prelude.lua pass it up to the task's root.
char kParkSentinel;

struct Ready {
    lua_State* co;
    int ref;
    int nargs;
};
std::deque<Ready> g_ready;
// Coroutines readied from Lua (luaio.core.ready) and not yet run: guards against a double wake.
std::unordered_set<lua_State*> g_ready_from_lua;
uv_idle_t g_idle;

// Closing values of tasks (spawn's close_idx), in a registry table indexed by the task's ref
// (an array: refs are small integers). A task parked from Lua (luaio.core.suspend: channels,
// join) lets its ref go meanwhile, so its value waits in a second table, with weak keys
// (coroutine -> value): a task that is never woken is collected with its entry.
int g_closing_ref = LUA_NOREF;
int g_closing_parked_ref = LUA_NOREF;

// Coroutines of finished tasks, kept with the ref that anchors them for the next spawn: a task
// then costs no coroutine allocation (and no garbage). Bounded, so a burst of tasks is given
// back to the collector.
struct Pooled {
    lua_State* co;
    int ref;
};
std::vector<Pooled> g_pool;
constexpr size_t kPoolMax = 128;

// Tasks started and not yet ended (running, ready or parked).
size_t g_live_tasks = 0;

// Set by exit_process (and a failed main task): no task runs any more, the loop stops, and main
// closes the state and returns g_exit_code.
bool g_exiting = false;
int g_exit_code = 0;

// Moves the closing value of task co (if any) from ref from_ref to ref to_ref; LUA_NOREF on
// either side stands for the parked table, where co itself is the key.
void move_closing(lua_State* co, int from_ref, int to_ref) {
    if (g_closing_ref == LUA_NOREF) return;
    lua_State* L = g_L;
    int top = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, g_closing_ref);
    lua_rawgeti(L, LUA_REGISTRYINDEX, g_closing_parked_ref);
    int closing = top + 1, parked = top + 2;
    auto get = [&](int ref) {
        if (ref != LUA_NOREF) return lua_rawgeti(L, closing, ref);
        lua_pushthread(co);
        lua_xmove(co, L, 1);
        lua_rawget(L, parked);
    };
    auto set = [&](int ref) { // pops the value
        if (ref != LUA_NOREF) return lua_rawseti(L, closing, ref);
        lua_pushthread(co);
        lua_xmove(co, L, 1);
        lua_insert(L, -2);
        lua_rawset(L, parked);
    };
    get(from_ref);
    if (!lua_isnil(L, -1)) {
        set(to_ref);
        lua_pushnil(L);
        set(from_ref);
    }
    lua_settop(L, top);
}

// The metatables of the classes, by the address of their name: a type check is then a pointer
// comparison (luaL_testudata looks the name up in the registry, hashing it, on every call).
struct ClassEntry {
    const char* name;
    const void* mt;
    Closer closer; // set_closer: ends a task's closing value of this class (nullptr: __close)
};
std::vector<ClassEntry> g_classes;

// The entry of the class `name` (made on first use; nullptr while it has no metatable).
ClassEntry* class_entry(lua_State* L, const char* name) {
    for (ClassEntry& e : g_classes)
        if (e.name == name) return &e;
    luaL_getmetatable(L, name);
    const void* mt = lua_topointer(L, -1);
    lua_pop(L, 1);
    if (!mt) return nullptr;
    g_classes.push_back({name, mt, nullptr});
    return &g_classes.back();
}

// LuaJIT's userdata header in GC64 mode (GCudata in lj_obj.h) ends right before the payload
// with the payload's length (32 bits, 24 bytes before it), the metatable (a 64-bit reference,
// 16 before it) and a pad. Read there, the metatable costs a method's self check (every stream
// read and write, a websocket send, a hub's post to each subscriber) one load instead of three
// API calls (lua_getmetatable, lua_topointer, lua_pop: about 110 instructions).
// check_userdata_layout compares it with the API's answers once, at start-up; a LuaJIT with
// another layout keeps using the API.
bool g_raw_udata = false;

const void* raw_metatable(const void* payload) {
    uint64_t ref;
    std::memcpy(&ref, static_cast<const char*>(payload) - 16, sizeof ref);
    return reinterpret_cast<const void*>(static_cast<uintptr_t>(ref));
}

uint32_t raw_length(const void* payload) {
    uint32_t n;
    std::memcpy(&n, static_cast<const char*>(payload) - 24, sizeof n);
    return n;
}

void check_userdata_layout(lua_State* L) {
    if (sizeof(void*) != 8) return;
    int top = lua_gettop(L);
    bool ok = true;
    for (size_t size : {size_t(0), size_t(8), size_t(40)}) {
        void* p = lua_newuserdata(L, size);
        if (size) std::memset(p, 0xff, size);
        ok = ok && raw_length(p) == size && !raw_metatable(p);
        lua_newtable(L);
        const void* mt = lua_topointer(L, -1);
        lua_setmetatable(L, -2);
        ok = ok && raw_metatable(p) == mt && lua_getmetatable(L, -1) && lua_topointer(L, -1) == mt;
        lua_settop(L, top);
    }
    g_raw_udata = ok;
}

// The closer of the userdata at idx, by its metatable (nullptr when it has none).
Closer closer_at(lua_State* L, int idx) {
    const void* mt = userdata_metatable(L, idx);
    if (!mt) return nullptr;
    for (const ClassEntry& e : g_classes)
        if (e.mt == mt) return e.closer;
    return nullptr;
}

// Closes the value of a task that ended (returned, or failed with its error on top of co):
// calls its __close metamethod with (value, error or nil), as Lua 5.4 does for <close>.
void close_task_value(lua_State* co, int ref, bool failed) {
    lua_State* L = g_L;
    int top = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, g_closing_ref);
    lua_rawgeti(L, top + 1, ref);
    if (!lua_isnil(L, -1)) {
        lua_pushnil(L);
        lua_rawseti(L, top + 1, ref); // a value is closed once
        if (Closer closer = closer_at(L, top + 2)) {
            closer(L, lua_touserdata(L, top + 2), failed);
        } else if (luaL_getmetafield(L, top + 2, "__close")) {
            lua_pushvalue(L, top + 2);
            if (failed) {
                lua_pushvalue(co, -1);
                lua_xmove(co, L, 1);
            } else {
                lua_pushnil(L);
            }
            if (lua_pcall(L, 2, 0, 0) != 0) report_error(L, "closing a task's value: ", lua_tostring(L, -1));
        }
    }
    lua_settop(L, top);
}

void drain_ready();

void on_idle(uv_idle_t*) {
    drain_ready();
}

void run_task(lua_State* co, int ref, int nargs);

// A string field of the table on top of co (raw: no metamethod runs), or nullptr.
const char* raw_string_field(lua_State* co, const char* key) {
    lua_pushstring(co, key);
    lua_rawget(co, -2);
    const char* v = lua_type(co, -1) == LUA_TSTRING ? lua_tostring(co, -1) : nullptr;
    lua_pop(co, 1); // the table still holds the string
    return v;
}

// What the error value on top of co says: a string as it is; a value with __tostring by it; an
// error table ({code, name, message}: what `assert(tcp.connect(...))` raises) as "NAME: message";
// anything else by its type.
std::string describe_error(lua_State* co) {
    if (lua_type(co, -1) == LUA_TSTRING || lua_type(co, -1) == LUA_TNUMBER) return lua_tostring(co, -1);
    if (luaL_callmeta(co, -1, "__tostring")) {
        std::string r = lua_isstring(co, -1) ? lua_tostring(co, -1) : "(__tostring returned no string)";
        lua_pop(co, 1);
        return r;
    }
    if (lua_istable(co, -1)) {
        const char* message = raw_string_field(co, "message");
        const char* name = raw_string_field(co, "name");
        if (message) return name ? std::string(name) + ": " + message : std::string(message);
    }
    return std::string("(error object is a ") + luaL_typename(co, -1) + " value)";
}

void task_failed(lua_State* co) {
    std::string msg = describe_error(co);
    luaL_traceback(g_L, co, msg.c_str(), 0);
    report_error(g_L, "", lua_tostring(g_L, -1));
    lua_pop(g_L, 1);
    if (co == g_main_task) {
        g_exiting = true;
        g_exit_code = 1;
        uv_stop(g_loop);
    }
}

void run_task(lua_State* co, int ref, int nargs) {
    if (g_exiting) return; // the process is ending: the task stays as it is until the state closes
    g_current = co;
    g_current_ref = ref;
    int status = lua_resume(co, nargs);
    int left_ref = g_current_ref;
    g_current = nullptr;
    g_current_ref = LUA_NOREF;
    if (status == LUA_YIELD) {
        bool parked =
            lua_gettop(co) > 0 && lua_type(co, -1) == LUA_TLIGHTUSERDATA && lua_touserdata(co, -1) == &kParkSentinel;
        lua_settop(co, 0);
        if (!parked) {
            // A plain coroutine.yield() at the top of a task: let others run, then go on.
            g_ready.push_back({co, left_ref, 0});
            uv_idle_start(&g_idle, on_idle);
            return;
        }
        // Parked by park(): the waiter holds the reference (left_ref is LUA_NOREF).
        // Parked from Lua (luaio.core.suspend): whoever will wake it holds the coroutine.
        if (left_ref != LUA_NOREF) {
            move_closing(co, left_ref, LUA_NOREF);
            luaL_unref(g_L, LUA_REGISTRYINDEX, left_ref);
        }
        return;
    }
    g_live_tasks--;
    if (status != 0) task_failed(co);
    if (co == g_main_task) g_main_task = nullptr; // its coroutine may run other tasks now
    if (g_closing_ref != LUA_NOREF) close_task_value(co, left_ref, status != 0);
    lua_settop(co, 0);
    // A coroutine that returned can run another task (lua_resume starts a new call on it); one
    // that failed is dead.
    if (status == 0 && g_pool.size() < kPoolMax)
        g_pool.push_back({co, left_ref});
    else
        luaL_unref(g_L, LUA_REGISTRYINDEX, left_ref);
}

// Runs the tasks that were ready when it started; tasks readied meanwhile run on the next
// loop iteration, so a task that yields in a loop cannot starve I/O.
void drain_ready() {
    size_t n = g_ready.size();
    while (n-- > 0 && !g_ready.empty()) {
        Ready r = g_ready.front();
        g_ready.pop_front();
        g_ready_from_lua.erase(r.co);
        run_task(r.co, r.ref, r.nargs);
    }
    if (g_ready.empty())
        uv_idle_stop(&g_idle);
    else
        uv_idle_start(&g_idle, on_idle);
}

void enqueue(lua_State* co, int ref, int nargs) {
    g_ready.push_back({co, ref, nargs});
    uv_idle_start(&g_idle, on_idle);
}

// ---------------------------------------------------------------- luaio.core (internal)

int core_suspend(lua_State* L) {
    check_can_wait(L, "suspend");
    lua_pushlightuserdata(L, &kParkSentinel);
    return lua_yield(L, 1);
}

// Lets the other ready tasks run, then goes on: the task queues itself and parks.
int core_yield(lua_State* L) {
    check_can_wait(L, "yield");
    enqueue(g_current, g_current_ref, 0);
    g_current_ref = LUA_NOREF;
    lua_pushlightuserdata(L, &kParkSentinel);
    return lua_yield(L, 1);
}

int core_current(lua_State* L) {
    if (!g_current) return 0;
    lua_pushthread(g_current);
    lua_xmove(g_current, L, 1);
    return 1;
}

int core_ready(lua_State* L) {
    lua_State* co = lua_tothread(L, 1);
    if (!co) raise(L, "ready", "expected a coroutine");
    if (co == g_current || lua_status(co) != LUA_YIELD || g_ready_from_lua.count(co))
        raise(L, "ready", "coroutine is not parked");
    int nargs = lua_gettop(L) - 1;
    lua_xmove(L, co, nargs);
    lua_pushvalue(L, 1);
    int ref = luaL_ref(L, LUA_REGISTRYINDEX);
    move_closing(co, LUA_NOREF, ref);
    g_ready_from_lua.insert(co);
    enqueue(co, ref, nargs);
    return 0;
}

int core_spawn(lua_State* L) {
    luaL_checktype(L, 1, LUA_TFUNCTION);
    spawn(L, lua_gettop(L) - 1);
    return 0;
}

// core.describe(err): the text a failed task's report gives for an error value (describe_error).
int core_describe(lua_State* L) {
    lua_settop(L, 1);
    std::string d = describe_error(L);
    lua_pushlstring(L, d.data(), d.size());
    return 1;
}

// core.report(msg[, level]): level "error" (default), "warn" or "info".
int core_report(lua_State* L) {
    static const char* const kLevels[] = {"error", "warn", "info", nullptr};
    const char* msg = check_string(L, 1, "report");
    int level = luaL_checkoption(L, 2, "error", kLevels);
    report_error(L, "", msg, kLevels[level]);
    return 0;
}

// The number of libuv handles that keep the loop alive (active and referenced), not counting
// the scheduler's own: specs assert it returns to zero, so a leaked handle fails a test.
// core.handles(true) counts every open handle that is referenced, active or not (an unread
// socket, a stopped timer), and returns their type names as a second result: the specs' leak
// check compares it with its count before each spec. An unreferenced handle is one that was
// chosen not to keep the process alive (a pooled timer, a signal watcher, timer:unref()).
int core_handles(lua_State* L) {
    struct Count {
        bool all;
        int n;
        std::string types;
    } c{lua_toboolean(L, 1) != 0, 0, {}};
    uv_walk(
        g_loop,
        [](uv_handle_t* h, void* arg) {
            auto* c = static_cast<Count*>(arg);
            if (h == reinterpret_cast<uv_handle_t*>(&g_idle) || uv_is_closing(h)) return;
            bool active = uv_is_active(h) != 0, ref = uv_has_ref(h) != 0;
            if (!ref || (!c->all && !active)) return;
            c->n++;
            if (!c->types.empty()) c->types += ", ";
            c->types += uv_handle_type_name(uv_handle_get_type(h));
        },
        &c);
    lua_pushinteger(L, c.n);
    if (!c.all) return 1;
    lua_pushlstring(L, c.types.data(), c.types.size());
    return 2;
}

// The number of open file descriptors of the process (nil where /proc/self/fd is missing);
// core.fds(true) also returns a table of what each is ({[fd] = "socket:[123]", ...}), which
// the specs' leak check prints for the descriptors a spec left open.
int core_fds(lua_State* L) {
    bool names = lua_toboolean(L, 1) != 0;
    DIR* d = opendir("/proc/self/fd");
    if (!d) return 0;
    if (names) lua_newtable(L);
    int n = 0, own = dirfd(d);
    while (dirent* e = readdir(d)) {
        int fd = std::atoi(e->d_name);
        if (e->d_name[0] == '.' || fd == own) continue;
        n++;
        if (!names) continue;
        char path[64], target[256];
        std::snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        ssize_t len = readlink(path, target, sizeof target);
        lua_pushlstring(L, target, len > 0 ? static_cast<size_t>(len) : 0);
        lua_rawseti(L, -2, fd);
    }
    closedir(d);
    lua_pushinteger(L, n);
    if (names) lua_insert(L, -2);
    return names ? 2 : 1;
}

// The tasks started and not yet ended: specs check that waiting connections hold none.
int core_tasks(lua_State* L) {
    lua_pushinteger(L, static_cast<lua_Integer>(g_live_tasks));
    return 1;
}

int core_pending(lua_State* L) {
    lua_pushinteger(L, static_cast<lua_Integer>(g_ready.size()));
    return 1;
}

// readline(prompt): one line of standard input, read on libuv's thread pool so that other
// tasks keep running while the prompt waits. Returns nil at end of input.
struct ReadLine {
    uv_work_t work;
    Waiter waiter;
    std::string prompt;
    std::string line;
    bool eof = false;
};

int core_readline(lua_State* L) {
    const char* prompt = luaL_optstring(L, 1, "");
    check_can_wait(L, "readline");
    auto* r = new ReadLine;
    r->prompt = prompt;
    uv_queue_work(
        g_loop, &r->work,
        [](uv_work_t* w) {
            auto* r = reinterpret_cast<ReadLine*>(w);
            std::fputs(r->prompt.c_str(), stdout);
            std::fflush(stdout);
            int c;
            while ((c = std::getchar()) != EOF && c != '\n') r->line.push_back(static_cast<char>(c));
            r->eof = c == EOF && r->line.empty();
        },
        [](uv_work_t* w, int) {
            auto* r = reinterpret_cast<ReadLine*>(w);
            wake(r->waiter, [r](lua_State* co) {
                if (r->eof)
                    lua_pushnil(co);
                else
                    lua_pushlstring(co, r->line.data(), r->line.size());
                return 1;
            });
            delete r;
        });
    return park(L, r->waiter);
}

// Test support: proves that a Lua error raised from C++ unwinds C++ frames (destructors
// run), which every binding relies on. Returns the number of guards destroyed so far.
int g_guards_destroyed = 0;
struct Guard {
    ~Guard() { g_guards_destroyed++; }
};
int core_raise_through_destructor(lua_State* L) {
    Guard g;
    if (lua_toboolean(L, 1)) raise(L, "raise_through_destructor", "raised on purpose");
    lua_pushinteger(L, g_guards_destroyed);
    return 1;
}
int core_guards_destroyed(lua_State* L) {
    lua_pushinteger(L, g_guards_destroyed);
    return 1;
}

// Embedded lib/ modules are found by this searcher, placed right after package.preload.
int embedded_searcher(lua_State* L) {
    const char* name = luaL_checkstring(L, 1);
    const EmbeddedModule* m = find_embedded(name);
    if (!m) {
        lua_pushfstring(L, "\n\tno module '%s' built into luaio", name);
        return 1;
    }
    std::string chunkname = std::string("=lib/") + name;
    if (luaL_loadbuffer(L, reinterpret_cast<const char*>(m->data), m->size, chunkname.c_str()) != 0)
        return lua_error(L);
    return 1;
}

int open_core(lua_State* L) {
    const luaL_Reg funcs[] = {{"suspend", core_suspend},
                              {"current", core_current},
                              {"ready", core_ready},
                              {"spawn", core_spawn},
                              {"report", core_report},
                              {"describe", core_describe},
                              {"pending", core_pending},
                              {"tasks", core_tasks},
                              {"readline", core_readline},
                              {"yield", core_yield},
                              {"handles", core_handles},
                              {"fds", core_fds},
                              {"raise_through_destructor", core_raise_through_destructor},
                              {"guards_destroyed", core_guards_destroyed},
                              {nullptr, nullptr}};
    luaL_newlib(L, funcs);
    lua_pushlightuserdata(L, &kParkSentinel);
    lua_setfield(L, -2, "PARK");
    return 1;
}

} // namespace

// ---------------------------------------------------------------- public API

uv_loop_t* loop() {
    return g_loop;
}
lua_State* main_state() {
    return g_L;
}

uint64_t now_ms() {
    uv_update_time(g_loop);
    return uv_now(g_loop);
}

int start_timer(uv_timer_t* t, uv_timer_cb cb, uint64_t timeout, uint64_t repeat) {
    uv_update_time(g_loop);
    return uv_timer_start(t, cb, timeout, repeat);
}

void push_user_where(lua_State* L) {
    lua_Debug ar;
    for (int level = 1; lua_getstack(L, level, &ar); level++) {
        lua_getinfo(L, "Sl", &ar);
        if (ar.currentline <= 0) continue;                      // a C function (pcall ...)
        if (std::strncmp(ar.source, "@lib/", 5) == 0) continue; // luaio's own Lua code
        lua_pushfstring(L, "%s:%d: ", ar.short_src, ar.currentline);
        return;
    }
    luaL_where(L, 1); // no user code on this stack (a task started by luaio itself)
}

void raise(lua_State* L, const char* fname, const char* fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    push_user_where(L);
    lua_pushfstring(L, "%s: %s", fname, buf);
    lua_concat(L, 2);
    lua_error(L);
    std::abort(); // not reached: lua_error does not return
}

int user_arg(lua_State* L, int idx) {
    lua_Debug ar;
    if (idx > 0 && lua_getstack(L, 0, &ar) && lua_getinfo(L, "n", &ar) && ar.namewhat &&
        std::strcmp(ar.namewhat, "method") == 0)
        return idx - 1;
    return idx;
}

namespace {
// Whether the running C function is a method of a luaio class called with '.' (sock.read(5)):
// its name in the call is a field, and the class's __index holds that function under that name.
bool method_called_as_field(lua_State* L) {
    lua_Debug ar;
    if (!lua_getstack(L, 0, &ar) || !lua_getinfo(L, "nf", &ar)) return false;
    lua_CFunction running = lua_tocfunction(L, -1);
    lua_pop(L, 1);
    if (!running || !ar.name || !ar.namewhat || std::strcmp(ar.namewhat, "field") != 0) return false;
    for (const ClassEntry& e : g_classes) {
        luaL_getmetatable(L, e.name);
        lua_getfield(L, -1, "__index");
        bool found = false;
        if (lua_istable(L, -1)) {
            lua_getfield(L, -1, ar.name);
            found = lua_tocfunction(L, -1) == running;
            lua_pop(L, 1);
        }
        lua_pop(L, 2);
        if (found) return true;
    }
    return false;
}
} // namespace

void raise_arg(lua_State* L, int idx, const char* fname, const char* what, const char* got) {
    if (!got) got = luaL_typename(L, idx);
    int n = user_arg(L, idx);
    if (n == 0) raise(L, fname, "expected %s as self, got %s", what, got);
    if (n == 1 && method_called_as_field(L))
        raise(L, fname, "expected %s as argument 1, got %s (a method: call it with ':')", what, got);
    raise(L, fname, "expected %s as argument %d, got %s", what, n, got);
}

lua_Number check_number(lua_State* L, int idx, const char* fname) {
    if (lua_type(L, idx) != LUA_TNUMBER) raise_arg(L, idx, fname, "a number");
    return lua_tonumber(L, idx);
}

lua_Integer check_integer(lua_State* L, int idx, const char* fname) {
    lua_Number n = lua_type(L, idx) == LUA_TNUMBER ? lua_tonumber(L, idx) : 0.5;
    auto v = static_cast<lua_Integer>(n);
    if (static_cast<lua_Number>(v) != n)
        raise_arg(L, idx, fname, "an integer", lua_type(L, idx) == LUA_TNUMBER ? "a fraction" : nullptr);
    return v;
}

const char* check_string(lua_State* L, int idx, const char* fname, size_t* len) {
    if (lua_type(L, idx) != LUA_TSTRING && lua_type(L, idx) != LUA_TNUMBER) raise_arg(L, idx, fname, "a string");
    return lua_tolstring(L, idx, len);
}

void check_option_names(lua_State* L, int idx, const char* const* known, const char* fname) {
    if (lua_isnoneornil(L, idx)) return;
    if (!lua_istable(L, idx)) raise(L, fname, "expected an options table, got %s", luaL_typename(L, idx));
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        bool ok = false;
        if (lua_type(L, -1) == LUA_TSTRING) {
            const char* k = lua_tostring(L, -1);
            for (const char* const* n = known; *n && !ok; n++) ok = std::strcmp(k, *n) == 0;
        }
        if (!ok) {
            if (lua_type(L, -1) == LUA_TSTRING) raise(L, fname, "unknown option '%s'", lua_tostring(L, -1));
            raise(L, fname, "option names must be strings, got %s", luaL_typename(L, -1));
        }
    }
}

lua_Integer opt_int_field(lua_State* L, int idx, const char* field, lua_Integer def, const char* fname) {
    if (lua_isnoneornil(L, idx)) return def;
    lua_getfield(L, idx, field);
    lua_Integer v = def;
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TNUMBER) raise(L, fname, "option '%s' must be an integer", field);
        lua_Number n = lua_tonumber(L, -1);
        v = static_cast<lua_Integer>(n);
        if (static_cast<lua_Number>(v) != n) raise(L, fname, "option '%s' must be an integer", field);
    }
    lua_pop(L, 1);
    return v;
}

bool opt_bool_field(lua_State* L, int idx, const char* field, bool def, const char* fname) {
    if (lua_isnoneornil(L, idx)) return def;
    lua_getfield(L, idx, field);
    bool v = def;
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TBOOLEAN) raise(L, fname, "option '%s' must be a boolean", field);
        v = lua_toboolean(L, -1) != 0;
    }
    lua_pop(L, 1);
    return v;
}

const char* opt_string_field(lua_State* L, int idx, const char* field, const char* fname, size_t* len) {
    if (lua_isnoneornil(L, idx)) return nullptr;
    lua_getfield(L, idx, field);
    const char* v = nullptr;
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TSTRING) raise(L, fname, "option '%s' must be a string", field);
        v = lua_tolstring(L, -1, len); // the options table keeps the string alive
    }
    lua_pop(L, 1);
    return v;
}

const void* userdata_metatable(lua_State* L, int idx, void** payload) {
    void* p;
    const void* mt;
    if (g_raw_udata) {
        if (lua_type(L, idx) != LUA_TUSERDATA) return nullptr; // not a light userdata: it has no header
        p = lua_touserdata(L, idx);
        mt = raw_metatable(p);
    } else {
        p = lua_touserdata(L, idx);
        if (!p || !lua_getmetatable(L, idx)) return nullptr;
        mt = lua_topointer(L, -1);
        lua_pop(L, 1);
    }
    if (payload) *payload = p;
    return mt;
}

void* test_object(lua_State* L, int idx, const char* name) {
    void* p;
    const void* mt = userdata_metatable(L, idx, &p);
    if (!mt) return nullptr;
    const ClassEntry* e = class_entry(L, name);
    return e && e->mt == mt ? p : nullptr;
}

void set_closer(lua_State* L, const char* name, Closer closer) {
    ClassEntry* e = class_entry(L, name);
    if (!e) raise(L, "set_closer", "no metatable %s", name);
    e->closer = closer;
}

void* check_object(lua_State* L, int idx, const char* name, const char* fname) {
    void** ud = static_cast<void**>(test_object(L, idx, name));
    if (!ud) raise_arg(L, idx, fname, name);
    if (!*ud) raise(L, fname, "attempt to use a closed %s", name);
    return *ud;
}

void** push_proxy(lua_State* L, void* obj, const char* cls) {
    void** ud = static_cast<void**>(lua_newuserdata(L, sizeof(void*)));
    *ud = obj;
    luaL_getmetatable(L, cls);
    lua_setmetatable(L, -2);
    return ud;
}

void new_class(lua_State* L, const char* name, const luaL_Reg* methods) {
    luaL_newmetatable(L, name);
    lua_newtable(L);
    lua_setfield(L, -2, "__index");
    add_to_class(L, methods);
    class_entry(L, name);
}

void add_to_class(lua_State* L, const luaL_Reg* functions) {
    lua_pushliteral(L, "__index");
    lua_rawget(L, -2);
    for (const luaL_Reg* f = functions; f->name; f++) {
        bool meta = f->name[0] == '_' && f->name[1] == '_';
        lua_pushcfunction(L, f->func);
        lua_setfield(L, meta ? -3 : -2, f->name);
    }
    lua_pop(L, 1);
}

void check_can_wait(lua_State* L, const char* fname) {
    if (!g_current || !lua_isyieldable(L))
        raise(L, fname,
              "cannot wait outside a task (call it from the main chunk, a task.spawn function or a "
              "server handler, not from a metamethod, a C callback or the main thread)");
}

int park(lua_State* L, Waiter& w) {
    w.ref = g_current_ref;
    g_current_ref = LUA_NOREF;
    lua_pushlightuserdata(L, &kParkSentinel);
    return lua_yield(L, 1);
}

lua_State* task_of(const Waiter& w) {
    if (!g_L || w.ref == LUA_NOREF) return nullptr; // the state is closed: nothing may run
    lua_rawgeti(g_L, LUA_REGISTRYINDEX, w.ref);
    lua_State* co = lua_tothread(g_L, -1);
    lua_pop(g_L, 1);
    return co;
}

Parked detach(Waiter& w) {
    Parked p{task_of(w), w.ref};
    w.ref = LUA_NOREF;
    return p;
}

void resume_parked(Parked p, int nargs) {
    if (!g_L) return; // the state is closing: nothing may run any more
    if (g_current) {
        enqueue(p.task, p.ref, nargs);
        return;
    }
    run_task(p.task, p.ref, nargs);
}

int exit_process(lua_State* L, int code) {
    std::fflush(nullptr);
    if (!g_current || !lua_isyieldable(L)) std::exit(code);
    g_exiting = true;
    g_exit_code = code;
    uv_stop(g_loop);
    lua_pushlightuserdata(L, &kParkSentinel); // yields up to the task's root, never to be resumed
    return lua_yield(L, 1);
}

bool wake_uv_error(Waiter& w, int uverr, int nils) {
    return wake(w, [&](lua_State* co) { return return_uv_error(co, uverr, nils); });
}

void spawn(lua_State* L, int nargs, int close_idx) {
    int closing = close_idx > 0 ? close_idx : lua_gettop(L) + close_idx + 1;
    lua_State* co;
    int ref;
    if (!g_pool.empty()) {
        co = g_pool.back().co;
        ref = g_pool.back().ref;
        g_pool.pop_back();
    } else {
        co = lua_newthread(L);
        ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    if (close_idx != 0) {
        if (g_closing_ref == LUA_NOREF) {
            lua_newtable(L);
            g_closing_ref = luaL_ref(L, LUA_REGISTRYINDEX);
            lua_newtable(L);
            lua_createtable(L, 0, 1);
            lua_pushliteral(L, "k");
            lua_setfield(L, -2, "__mode");
            lua_setmetatable(L, -2);
            g_closing_parked_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        }
        lua_rawgeti(L, LUA_REGISTRYINDEX, g_closing_ref);
        lua_pushvalue(L, closing);
        lua_rawseti(L, -2, ref);
        lua_pop(L, 1);
    }
    lua_xmove(L, co, nargs + 1);
    g_live_tasks++;
    if (g_current)
        enqueue(co, ref, nargs);
    else
        run_task(co, ref, nargs);
}

bool in_task() {
    return g_current != nullptr;
}

namespace {
ReportHook g_report_hook = nullptr;
}

void set_report_hook(ReportHook hook) {
    g_report_hook = hook;
}

void report_error(lua_State*, const char* prefix, const char* msg, const char* level) {
    if (g_report_hook) return g_report_hook(level, prefix, msg);
    std::fflush(stdout);
    std::fprintf(stderr, "luaio: %s%s\n", prefix, msg);
    std::fflush(stderr);
}

namespace {
FlushHook g_flush_hooks[8];
int g_flush_count = 0;

void run_flush_hooks() {
    for (int i = 0; i < g_flush_count; i++) g_flush_hooks[i]();
}
} // namespace

void add_flush_hook(FlushHook hook) {
    if (g_flush_count == 0) std::atexit(run_flush_hooks);
    if (g_flush_count < static_cast<int>(std::size(g_flush_hooks))) g_flush_hooks[g_flush_count++] = hook;
}

void preload(lua_State* L, const char* name, lua_CFunction open) {
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "preload");
    lua_pushcfunction(L, open);
    lua_setfield(L, -2, name);
    lua_pop(L, 2);
}

// ---------------------------------------------------------------- runtime.h (for bin/main.cpp)

// Output that a log collector (systemd, Docker, a file) sees as it is printed: stdout is line
// buffered even when it is not a terminal (C's default there is a 4 KiB block, so a server
// printing a line per request would show nothing for a long time, and lose it when killed),
// stderr is unbuffered. exit() flushes both; a signal that ends the process by its default
// action flushes them first (a partial line, io.write without "\n", is all that can be left),
// and runs the flush hooks (add_flush_hook: the log module's queue), as exit does.
namespace {
constexpr int kFatalSignals[] = {SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGALRM};

// Runs once (SA_RESETHAND), then the signal is raised again with its default action, so the
// process ends as it would have (status 128 + signal, a core dump for SIGQUIT). fflush is not
// async-signal-safe: the main thread is almost always waiting in epoll when a signal comes, and
// the process ends right after, so the worst case is one garbled line. A handler installed
// later (process.on, libuv's signal watchers) replaces this one.
void flush_and_die(int signo) {
    int saved = errno;
    std::fflush(stdout);
    std::fflush(stderr);
    run_flush_hooks();
    std::raise(signo);
    errno = saved;
}

void setup_output() {
    std::setvbuf(stdout, nullptr, _IOLBF, BUFSIZ);
    std::setvbuf(stderr, nullptr, _IONBF, 0);
    for (int signo : kFatalSignals) {
        struct sigaction old {};
        if (sigaction(signo, nullptr, &old) != 0 || old.sa_handler != SIG_DFL) continue; // inherited SIG_IGN stays
        struct sigaction sa {};
        sa.sa_handler = flush_and_die;
        sa.sa_flags = SA_RESETHAND | SA_RESTART;
        sigemptyset(&sa.sa_mask);
        sigaction(signo, &sa, nullptr);
    }
}
} // namespace

const EmbeddedModule* find_embedded(const char* name) {
    for (const EmbeddedModule* m = kEmbeddedModules; m->name; m++)
        if (std::strcmp(m->name, name) == 0) return m;
    return nullptr;
}

// libuv keeps one descriptor in reserve (loop->emfile_fd) for servers out of descriptors: when
// accept fails with EMFILE it closes the reserve, accepts and closes the waiting connections,
// and opens a new reserve, so it does not spin; but it tells the server nothing. So that the
// failure can be reported (docs/tcp.md), the reserve is one end of a socket pair whose other
// end is watched: libuv closing it is the sign. The watcher then reports, at most once a
// second with a count, and puts a fresh pair in place. The reserve is set up at start, so it
// exists before descriptors can run out and the descriptor count stays constant from here on
// (the specs' leak check compares it).
namespace {
struct EmfileWatch {
    uv_poll_t poll;
    int fd; // the watched end
};
uint64_t g_emfile_reported = 0; // loop time of the last report
int g_emfile_unreported = 0;    // failures since then

void on_emfile_reserve_closed(uv_poll_t* p, int, int);

void watch_emfile_reserve() {
    int pair[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) {
        // Without a watched pair libuv must still have a reserve, or a server out of
        // descriptors would spin.
        if (g_loop->emfile_fd == -1) g_loop->emfile_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        return;
    }
    // loop->emfile_fd is libuv's own field (in uv/unix.h's private loop fields).
    g_loop->emfile_fd = pair[0];
    auto* w = new EmfileWatch;
    w->fd = pair[1];
    uv_poll_init(g_loop, &w->poll, w->fd);
    uv_poll_start(&w->poll, UV_READABLE | UV_DISCONNECT, on_emfile_reserve_closed);
    uv_unref(reinterpret_cast<uv_handle_t*>(&w->poll));
}

void on_emfile_reserve_closed(uv_poll_t* p, int, int) {
    auto* w = reinterpret_cast<EmfileWatch*>(p);
    uv_close(reinterpret_cast<uv_handle_t*>(&w->poll),
             [](uv_handle_t* h) { delete reinterpret_cast<EmfileWatch*>(h); });
    close(w->fd);
    // libuv has opened a new plain reserve: the two descriptors it frees make the new pair.
    if (g_loop->emfile_fd >= 0) close(g_loop->emfile_fd);
    g_loop->emfile_fd = -1;
    watch_emfile_reserve();
    g_emfile_unreported++;
    uint64_t now = uv_now(g_loop);
    if (g_emfile_reported && now - g_emfile_reported < 1000) return;
    char msg[160];
    if (g_emfile_unreported > 1)
        std::snprintf(msg, sizeof msg,
                      "tcp server: accept failed: too many open files (%d times since the last report); the "
                      "connections are dropped until descriptors are free",
                      g_emfile_unreported);
    else
        std::snprintf(msg, sizeof msg,
                      "tcp server: accept failed: too many open files; the connections are dropped until "
                      "descriptors are free");
    report_error(g_L, "", msg);
    g_emfile_reported = now;
    g_emfile_unreported = 0;
}
// The ';'-separated templates of `parts`, in order, each once and none empty.
std::string join_paths(std::initializer_list<std::string> parts) {
    std::string out;
    std::unordered_set<std::string> seen;
    for (const std::string& part : parts) {
        for (size_t start = 0; start <= part.size();) {
            size_t end = std::min(part.find(';', start), part.size());
            std::string t = part.substr(start, end - start);
            if (!t.empty() && seen.insert(t).second) out += (out.empty() ? "" : ";") + t;
            start = end + 1;
        }
    }
    return out;
}
} // namespace

lua_State* init(const char* script_dir) {
    // A write to a peer that has gone (socket or pipe) must fail with EPIPE, not kill the
    // process; children get the default disposition back from libuv's spawn.
    std::signal(SIGPIPE, SIG_IGN);
    setup_output();
    g_loop = uv_default_loop();
    uv_idle_init(g_loop, &g_idle);
    watch_emfile_reserve();
#if defined(__SANITIZE_ADDRESS__)
    // Under AddressSanitizer, Lua's memory comes from malloc: ASan then checks it too, and
    // LeakSanitizer sees the C++ objects that only a Lua userdata points to (LuaJIT's own
    // allocator maps memory that LeakSanitizer does not scan). Needs LuaJIT's GC64 mode.
    g_L = lua_newstate(
        [](void*, void* p, size_t, size_t n) -> void* {
            if (n == 0) {
                std::free(p);
                return nullptr;
            }
            return std::realloc(p, n);
        },
        nullptr);
    if (g_L)
        lua_atpanic(g_L, [](lua_State* L) -> int {
            std::fprintf(stderr, "luaio: PANIC: %s\n", lua_tostring(L, -1));
            return 0;
        });
    if (!g_L) g_L = luaL_newstate();
#else
    g_L = luaL_newstate();
#endif
    if (!g_L) {
        std::fprintf(stderr, "luaio: cannot create the Lua state (out of memory)\n");
        std::exit(1);
    }
    lua_State* L = g_L;
    luaL_openlibs(L);
    check_userdata_layout(L);
    init_string_buffers(L);

    // Search order: package.preload (C++ modules), lib/ built into the binary, then the
    // script's directory, then the usual LuaJIT and Debian paths.
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "loaders");
    int n = static_cast<int>(lua_objlen(L, -1));
    for (int i = n; i >= 2; i--) {
        lua_rawgeti(L, -1, i);
        lua_rawseti(L, -2, i + 1);
    }
    lua_pushcfunction(L, embedded_searcher);
    lua_rawseti(L, -2, 2);
    lua_pop(L, 1);

    // LuaJIT has set package.path and cpath from LUA_PATH and LUA_CPATH (';;' in them stands for
    // its default, as in lua(1)) or to its default; the script's directory goes first, Debian's
    // directories last, each template once.
    std::string dir = script_dir ? script_dir : ".";
    lua_getfield(L, -1, "path");
    std::string path = join_paths({dir + "/?.lua;" + dir + "/?/init.lua", lua_tostring(L, -1),
                                   "/usr/local/share/lua/5.1/?.lua;/usr/local/share/lua/5.1/?/init.lua;"
                                   "/usr/share/lua/5.1/?.lua;/usr/share/lua/5.1/?/init.lua"});
    lua_pop(L, 1);
    lua_pushstring(L, path.c_str());
    lua_setfield(L, -2, "path");
    lua_getfield(L, -1, "cpath");
    std::string cpath = join_paths({dir + "/?.so", lua_tostring(L, -1),
                                    "/usr/local/lib/lua/5.1/?.so;/usr/lib/x86_64-linux-gnu/lua/5.1/?.so;"
                                    "/usr/lib/lua/5.1/?.so"});
    lua_pop(L, 1);
    lua_pushstring(L, cpath.c_str());
    lua_setfield(L, -2, "cpath");
    lua_pop(L, 1);

    preload(L, "luaio.core", open_core);
    open_errors_module(L);
    register_modules(L);

    // The prelude wraps coroutine.* so that waits inside user coroutines reach the task.
    lua_getglobal(L, "require");
    lua_pushstring(L, "luaio.prelude");
    if (lua_pcall(L, 1, 0, 0) != 0) {
        std::fprintf(stderr, "luaio: %s\n", lua_tostring(L, -1));
        std::exit(1);
    }
    return L;
}

void run_main(lua_State* L, int nargs) {
    lua_State* co = lua_newthread(L);
    g_main_task = co;
    g_live_tasks++;
    lua_insert(L, -(nargs + 2));
    lua_xmove(L, co, nargs + 1);
    int ref = luaL_ref(L, LUA_REGISTRYINDEX);
    run_task(co, ref, nargs);
    if (!g_exiting) uv_run(g_loop, UV_RUN_DEFAULT);
}

int shutdown() {
    // Closing the state runs the __gc of every remaining object, which closes its handles;
    // one more loop iteration runs their close callbacks so that every C++ owner is freed.
    // Handles nobody closed (an unref'd detached child, a pooled timer) stay linked in the
    // loop, and their owners stay reachable, until the process exits.
    set_string_free_in_pool(false); // no pool callback runs after this
    lua_close(g_L);
    g_L = nullptr;
    g_classes.clear(); // the metatables went with the state
    uv_idle_stop(&g_idle);
    uv_run(g_loop, UV_RUN_NOWAIT);
    return g_exit_code;
}

} // namespace luaio
