// Instructions per reply of luaio's RESP reader (modules/resp_reader.h + resp_lua.h) against
// hiredis 0.14's redisReader with the object functions luaio used before (which built Lua
// values the same way), both feeding the bytes of one read at a time and building each reply on
// a Lua stack. Not part of the build (hiredis is no dependency of luaio any more); run by hand:
//   g++ -O2 -std=c++17 -I. -I/usr/include/luajit-2.1 bench/redis/reader_bench.cpp \
//       /usr/lib/x86_64-linux-gnu/libhiredis.a /usr/lib/x86_64-linux-gnu/libluajit-5.1.a -ldl -o /tmp/rb
//   for r in hiredis luaio; do for k in get array; do for n in 0 100000; do
//     valgrind --tool=callgrind --callgrind-out-file=/dev/null /tmp/rb $r $k $n 2>&1 | grep Collected
//   done; done; done
// (instructions of n replies minus those of 0, divided by n.)
#include "modules/resp_lua.h"

#include <hiredis/read.h>

#include <cstdlib>
#include <cstring>
#include <string>

void luaio::resp::push_server_error(lua_State* L, const char* s, size_t len) {
    lua_pushlstring(L, s, len);
}

namespace {

lua_State* g_L;

// hiredis's side, as modules/redis.cpp had it.
void* settle(const redisReadTask* t, bool open) {
    if (!t->parent || open) return g_L;
    lua_rawseti(g_L, -2, t->idx + 1);
    const redisReadTask* n = t;
    while (n->parent && n->idx == n->parent->elements - 1 && n->parent->parent) {
        n = n->parent;
        lua_rawseti(g_L, -2, n->idx + 1);
    }
    return g_L;
}
void* create_string(const redisReadTask* t, char* s, size_t len) {
    lua_pushlstring(g_L, s, len);
    return settle(t, false);
}
void* create_array(const redisReadTask* t, int n) {
    lua_createtable(g_L, n > 0 ? n : 0, 0);
    return settle(t, n > 0);
}
void* create_integer(const redisReadTask* t, long long v) {
    lua_pushnumber(g_L, static_cast<lua_Number>(v));
    return settle(t, false);
}
void* create_nil(const redisReadTask* t) {
    lua_pushlightuserdata(g_L, nullptr);
    return settle(t, false);
}
redisReplyObjectFunctions g_functions = {create_string, create_array, create_integer, create_nil, nullptr};

} // namespace

int main(int argc, char** argv) {
    if (argc < 4) return 2;
    bool hiredis = std::strcmp(argv[1], "hiredis") == 0;
    bool array = std::strcmp(argv[2], "array") == 0;
    long n = std::atol(argv[3]);
    g_L = luaL_newstate();
    // One read: 16 GET replies, or one reply of 100 elements (as LRANGE 0 99 sends).
    std::string chunk;
    int per_chunk = 16;
    if (array) {
        per_chunk = 1;
        chunk = "*100\r\n";
        for (int i = 0; i < 100; i++) chunk += "$8\r\nelement" + std::to_string(i % 10) + "\r\n";
    } else {
        for (int i = 0; i < per_chunk; i++) chunk += "$10\r\nvalue-0001\r\n";
    }
    long chunks = n / per_chunk;
    redisReader* rd = hiredis ? redisReaderCreateWithFunctions(&g_functions) : nullptr;
    luaio::resp::Reader reader;
    luaio::resp::LuaBuilder b;
    b.L = g_L;
    for (long i = 0; i < chunks; i++) {
        if (hiredis) {
            redisReaderFeed(rd, chunk.data(), chunk.size());
            void* reply;
            for (int k = 0; k < per_chunk; k++) {
                if (redisReaderGetReply(rd, &reply) != REDIS_OK || !reply) return 1;
                lua_settop(g_L, 0);
            }
        } else {
            reader.feed(chunk.data(), chunk.size());
            for (int k = 0; k < per_chunk; k++) {
                if (reader.parse(b) != luaio::resp::Status::Reply) return 1;
                lua_settop(g_L, 0);
            }
        }
    }
    if (rd) redisReaderFree(rd);
    lua_close(g_L);
    return 0;
}
