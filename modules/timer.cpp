// The timer module: sleep(ms), and one-shot and repeating timers whose callbacks run in
// their own tasks.
//
//   timer.sleep(ms)                       -- also the global sleep(ms)
//   local t = timer.setTimeout(ms, fn, ...)
//   local t = timer.setInterval(ms, fn, ...)
//   t:stop()  t:unref()  t:ref()  t:active()
#include "runtime/luaio.h"
#include "runtime/object.h"

#include <vector>

namespace {

// A sleeping task's timer. Stopped timers are kept in a free list and reused, so a sleep
// costs no allocation and no handle initialisation in the steady state.
struct Sleep {
    uv_timer_t timer;
    luaio::Waiter waiter;
    uint64_t deadline_ns;
};
// Never destroyed: pooled timers stay reachable until the process ends (the runtime's
// shutdown closes their handles with every other one).
std::vector<Sleep*>& g_free_sleeps = *new std::vector<Sleep*>;
constexpr size_t kMaxFreeSleeps = 4096;

// libuv counts time in whole milliseconds of a cached clock, so a timer may fire up to a
// millisecond early; sleep(ms) promises at least ms, so it checks the precise clock and
// waits out the remainder.
uint64_t remaining_ms(uint64_t deadline_ns) {
    uint64_t now = uv_hrtime();
    return now >= deadline_ns ? 0 : (deadline_ns - now + 999999) / 1000000;
}

void on_sleep_done(uv_timer_t* t) {
    auto* s = reinterpret_cast<Sleep*>(t);
    if (uint64_t left = remaining_ms(s->deadline_ns)) {
        luaio::start_timer(t, on_sleep_done, left);
        return;
    }
    luaio::Waiter w = s->waiter;
    s->waiter = {};
    if (g_free_sleeps.size() < kMaxFreeSleeps) {
        // A pooled timer belongs to the runtime, not to a script: unreferenced, it is not
        // counted as a handle left open (core.handles(true), the specs' leak check).
        uv_unref(reinterpret_cast<uv_handle_t*>(t));
        g_free_sleeps.push_back(s);
    } else
        uv_close(reinterpret_cast<uv_handle_t*>(t), [](uv_handle_t* h) { delete reinterpret_cast<Sleep*>(h); });
    luaio::wake(w, [](lua_State*) { return 0; });
}

lua_Integer check_ms(lua_State* L, int idx, const char* fname) {
    if (lua_type(L, idx) != LUA_TNUMBER) luaio::raise_arg(L, idx, fname, "milliseconds (a number)");
    lua_Number ms = lua_tonumber(L, idx);
    if (!(ms >= 0) || ms > 1e15) luaio::raise(L, fname, "milliseconds must be between 0 and 1e15");
    return static_cast<lua_Integer>(ms);
}

int l_sleep(lua_State* L) {
    lua_Integer ms = check_ms(L, 1, "sleep");
    luaio::check_can_wait(L, "sleep");
    Sleep* s;
    if (!g_free_sleeps.empty()) {
        s = g_free_sleeps.back();
        g_free_sleeps.pop_back();
        uv_ref(reinterpret_cast<uv_handle_t*>(&s->timer));
    } else {
        s = new Sleep;
        uv_timer_init(luaio::loop(), &s->timer);
    }
    s->deadline_ns = uv_hrtime() + static_cast<uint64_t>(ms) * 1000000;
    luaio::start_timer(&s->timer, on_sleep_done, static_cast<uint64_t>(ms)); // from now, as Node's
    return luaio::park(L, s->waiter);
}

// A setTimeout/setInterval timer. It owns its callback (a registry reference to the table
// {fn, args...}) until it fires for the last time or is stopped; the Lua handle is only a
// proxy, so a timer whose handle is dropped still fires, as in Node.js.
struct Timer : luaio::Handle<Timer> {
    static constexpr const char* kClass = "luaio.timer.timer";
    static constexpr const char* kWhat = "timer";
    uv_timer_t timer;
    int callback_ref = LUA_NOREF;
    int nargs = 0;
    bool repeat = false;
    uint64_t deadline_ns = 0; // of the first expiry

    // The timer goes on without its proxy.
    void proxy_gone() {}
};

// The one close path: the proxy becomes a stopped timer, the handle's close callback frees it.
void close_timer(Timer* t) {
    t->detach_proxy();
    if (lua_State* L = luaio::main_state()) luaL_unref(L, LUA_REGISTRYINDEX, t->callback_ref);
    t->callback_ref = LUA_NOREF;
    uv_close(reinterpret_cast<uv_handle_t*>(&t->timer), [](uv_handle_t* h) { delete static_cast<Timer*>(h->data); });
}

void on_timer(uv_timer_t* handle) {
    auto* t = static_cast<Timer*>(handle->data);
    if (t->deadline_ns) {
        if (uint64_t left = remaining_ms(t->deadline_ns)) {
            luaio::start_timer(handle, on_timer, left, t->repeat ? uv_timer_get_repeat(handle) : 0);
            return;
        }
        t->deadline_ns = 0;
    }
    lua_State* L = luaio::main_state();
    // The state has closed (the runtime's last loop turn runs the close callbacks of what its
    // finalizers closed, and a timer left behind, such as a pool's unreferenced sweeper, may
    // come due then): there is no callback to run any more.
    if (!L) {
        close_timer(t);
        return;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->callback_ref);
    int n = t->nargs;
    for (int i = 1; i <= n + 1; i++) lua_rawgeti(L, -i, i);
    lua_remove(L, -(n + 2));
    // Read before spawning: the callback may stop this timer.
    if (!t->repeat) close_timer(t);
    luaio::spawn(L, n);
    // The callback may have run longer than the period and brought the loop time up to date
    // (every deadline does, luaio::now_ms): libuv would then run this timer again in the same
    // pass, and again, starving I/O. The next period counts from now instead.
    if (t->repeat && !uv_is_closing(reinterpret_cast<uv_handle_t*>(handle))) {
        uint64_t period = uv_timer_get_repeat(handle);
        luaio::start_timer(handle, on_timer, period, period);
    }
}

int start_timer(lua_State* L, bool repeat, const char* fname) {
    lua_Integer ms = check_ms(L, 1, fname);
    if (!lua_isfunction(L, 2)) luaio::raise(L, fname, "expected a function as argument 2, got %s", luaL_typename(L, 2));
    int nargs = lua_gettop(L) - 2;
    lua_createtable(L, nargs + 1, 0);
    for (int i = 0; i <= nargs; i++) {
        lua_pushvalue(L, 2 + i);
        lua_rawseti(L, -2, i + 1);
    }
    auto* t = new Timer;
    t->callback_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    t->nargs = nargs;
    t->repeat = repeat;
    uv_timer_init(luaio::loop(), &t->timer);
    t->timer.data = t;
    // A repeating timer of 0 ms would never let the loop block: repeat at least every 1 ms.
    uint64_t period = static_cast<uint64_t>(ms);
    t->deadline_ns = uv_hrtime() + period * 1000000;
    luaio::start_timer(&t->timer, on_timer, period, repeat ? (period ? period : 1) : 0);
    t->push_proxy(L);
    return 1;
}

int l_set_timeout(lua_State* L) {
    return start_timer(L, false, "setTimeout");
}
int l_set_interval(lua_State* L) {
    return start_timer(L, true, "setInterval");
}

// The timer of the proxy at 1, nullptr once it has fired for the last time or was stopped.
Timer* to_timer(lua_State* L, const char* fname) {
    return Timer::check_or_closed(L, 1, fname);
}

// Stopping a timer that has fired or was stopped already does nothing.
int l_timer_stop(lua_State* L) {
    if (Timer* t = to_timer(L, "stop")) close_timer(t);
    return 0;
}

int l_timer_active(lua_State* L) {
    lua_pushboolean(L, to_timer(L, "active") != nullptr);
    return 1;
}

int l_timer_unref(lua_State* L) {
    if (Timer* t = to_timer(L, "unref")) uv_unref(reinterpret_cast<uv_handle_t*>(&t->timer));
    return 0;
}

int l_timer_ref(lua_State* L) {
    if (Timer* t = to_timer(L, "ref")) uv_ref(reinterpret_cast<uv_handle_t*>(&t->timer));
    return 0;
}

} // namespace

extern "C" int luaopen_timer(lua_State* L) {
    const luaL_Reg methods[] = {{"stop", l_timer_stop}, {"active", l_timer_active}, {"unref", l_timer_unref},
                                {"ref", l_timer_ref},   {"__gc", Timer::l_gc},      {nullptr, nullptr}};
    luaio::new_class(L, Timer::kClass, methods);
    lua_pop(L, 1);
    const luaL_Reg funcs[] = {
        {"sleep", l_sleep}, {"setTimeout", l_set_timeout}, {"setInterval", l_set_interval}, {nullptr, nullptr}};
    luaL_newlib(L, funcs);
    return 1;
}
