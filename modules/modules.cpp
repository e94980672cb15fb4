// The list of C++ modules built into luaio: each is loaded by `require "<name>"`.
#include "runtime/luaio.h"
#include "runtime/runtime.h"

extern "C" {
int luaopen_system(lua_State* L);
int luaopen_timer(lua_State* L);
int luaopen_luaio_process(lua_State* L);
int luaopen_dns(lua_State* L);
int luaopen_luaio_tcp(lua_State* L);
int luaopen_luaio_http(lua_State* L);
int luaopen_luaio_fs(lua_State* L);
int luaopen_luaio_log(lua_State* L);
int luaopen_luaio_websocket(lua_State* L);
int luaopen_luaio_tls(lua_State* L);
int luaopen_luaio_redis(lua_State* L);
int luaopen_luaio_postgres(lua_State* L);
int luaopen_luaio_mysql(lua_State* L);
}

namespace luaio {

void register_modules(lua_State* L) {
    preload(L, "system", luaopen_system);
    preload(L, "timer", luaopen_timer);
    preload(L, "luaio.process", luaopen_luaio_process);
    preload(L, "dns", luaopen_dns);
    preload(L, "luaio.tcp", luaopen_luaio_tcp);
    preload(L, "luaio.http", luaopen_luaio_http);
    preload(L, "luaio.fs", luaopen_luaio_fs);
    preload(L, "luaio.log", luaopen_luaio_log);
    preload(L, "luaio.websocket", luaopen_luaio_websocket);
    preload(L, "luaio.tls", luaopen_luaio_tls);
    preload(L, "luaio.redis", luaopen_luaio_redis);
    preload(L, "luaio.postgres", luaopen_luaio_postgres);
    preload(L, "luaio.mysql", luaopen_luaio_mysql);
}

} // namespace luaio
