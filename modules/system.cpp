// The system module, per the seed: cpuinfo(), meminfo(), loadavg(), hrtime(), uptime().
#include "runtime/luaio.h"

namespace {

void set_int(lua_State* L, const char* key, double v) {
    lua_pushnumber(L, v);
    lua_setfield(L, -2, key);
}

int l_cpuinfo(lua_State* L) {
    uv_cpu_info_t* cpus = nullptr;
    int count = 0;
    int err = uv_cpu_info(&cpus, &count);
    if (err) return luaio::return_uv_error(L, err);
    lua_createtable(L, count, 0);
    for (int i = 0; i < count; i++) {
        lua_createtable(L, 0, 3);
        lua_pushstring(L, cpus[i].model);
        lua_setfield(L, -2, "model");
        set_int(L, "speed", cpus[i].speed);
        lua_createtable(L, 0, 5);
        set_int(L, "user", static_cast<double>(cpus[i].cpu_times.user));
        set_int(L, "nice", static_cast<double>(cpus[i].cpu_times.nice));
        set_int(L, "sys", static_cast<double>(cpus[i].cpu_times.sys));
        set_int(L, "idle", static_cast<double>(cpus[i].cpu_times.idle));
        set_int(L, "irq", static_cast<double>(cpus[i].cpu_times.irq));
        lua_setfield(L, -2, "times");
        lua_rawseti(L, -2, i + 1);
    }
    uv_free_cpu_info(cpus, count);
    return 1;
}

int l_meminfo(lua_State* L) {
    lua_createtable(L, 0, 2);
    set_int(L, "total", static_cast<double>(uv_get_total_memory()));
    set_int(L, "free", static_cast<double>(uv_get_free_memory()));
    return 1;
}

int l_loadavg(lua_State* L) {
    double avg[3];
    uv_loadavg(avg);
    lua_createtable(L, 3, 0);
    for (int i = 0; i < 3; i++) {
        lua_pushnumber(L, avg[i]);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

// Nanoseconds as a Lua number: exact up to 2^53 ns (104 days of uptime), then rounded to
// a few hundred nanoseconds, which a difference of two readings tolerates.
int l_hrtime(lua_State* L) {
    lua_pushnumber(L, static_cast<lua_Number>(uv_hrtime()));
    return 1;
}

int l_uptime(lua_State* L) {
    double up = 0;
    int err = uv_uptime(&up);
    if (err) return luaio::return_uv_error(L, err);
    lua_pushnumber(L, up);
    return 1;
}

// gettime(), monotime() and sleep(seconds) are luasystem's API (the `system` module that
// busted and other Lua tools expect); luaio's `system` takes that name, so it offers them too.
int l_gettime(lua_State* L) {
    uv_timeval64_t tv;
    int err = uv_gettimeofday(&tv);
    if (err) return luaio::return_uv_error(L, err);
    lua_pushnumber(L, static_cast<double>(tv.tv_sec) + tv.tv_usec / 1e6);
    return 1;
}

int l_monotime(lua_State* L) {
    lua_pushnumber(L, static_cast<double>(uv_hrtime()) / 1e9);
    return 1;
}

// Blocks the whole process, as luasystem's does. Tasks should call the global sleep(ms).
int l_blocking_sleep(lua_State* L) {
    lua_Number s = luaio::check_number(L, 1, "system.sleep");
    if (s > 0) uv_sleep(static_cast<unsigned int>(s * 1000));
    return 0;
}

} // namespace

extern "C" int luaopen_system(lua_State* L) {
    const luaL_Reg funcs[] = {{"cpuinfo", l_cpuinfo},   {"meminfo", l_meminfo},      {"loadavg", l_loadavg},
                              {"hrtime", l_hrtime},     {"uptime", l_uptime},        {"gettime", l_gettime},
                              {"monotime", l_monotime}, {"sleep", l_blocking_sleep}, {nullptr, nullptr}};
    luaL_newlib(L, funcs);
    return 1;
}
