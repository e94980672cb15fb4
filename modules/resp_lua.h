// Builds the replies of luaio's RESP reader (modules/resp_reader.h) straight into Lua values on
// one Lua stack (modules/redis.cpp; bench/redis/reader_bench.cpp measures it):
//   simple, bulk and verbatim strings, big numbers -> strings; integers and doubles (inf, nan)
//   -> numbers; booleans -> booleans; null -> nil at the top of a reply, `null` (a NULL
//   lightuserdata, json.null) inside an aggregate or when nil_is_null; arrays, sets and pushes
//   -> arrays; maps -> tables; error replies -> the error table of push_server_error.
// A complete reply is one value on top of the stack.
#pragma once

#include "modules/resp_reader.h"

#include <lua.hpp>

#include <cmath>

namespace luaio::resp {

// The error table of a server's error reply (defined by the module that builds replies).
void push_server_error(lua_State* L, const char* s, size_t len);

struct LuaBuilder {
    lua_State* L = nullptr;
    bool nil_is_null = false; // a null at the top is `null`, not nil (it goes into a table)
    bool root_error = false;  // the reply is an error reply

    // Derived builders choose L here; this one is for a stack chosen beforehand.
    void begin(char) { start(); }
    void start() {
        root_error = false;
        lua_checkstack(L, 2 * kMaxDepth + 8); // an open aggregate takes a slot, a map's key another
    }
    void string(char type, const char* s, size_t n, bool root) {
        if (type == '-') {
            push_server_error(L, s, n);
            if (root) root_error = true;
        } else {
            lua_pushlstring(L, s, n);
        }
    }
    void integer(long long v) { lua_pushnumber(L, static_cast<lua_Number>(v)); }
    void number(double v) { lua_pushnumber(L, v); }
    void boolean(bool v) { lua_pushboolean(L, v); }
    void null(bool root) {
        if (root && !nil_is_null)
            lua_pushnil(L);
        else
            lua_pushlightuserdata(L, nullptr);
    }
    void aggregate(char type, size_t n) {
        // The elements are counted by the reader but come later: a huge count from a broken
        // server must not preallocate gigabytes.
        int cap = static_cast<int>(n < 4096 ? n : 4096);
        if (type == '%')
            lua_createtable(L, 0, cap);
        else
            lua_createtable(L, cap, 0);
    }
    void add(char parent, size_t idx) {
        if (parent != '%') {
            lua_rawseti(L, -2, static_cast<int>(idx + 1));
            return;
        }
        if (!(idx & 1)) return; // a key: it waits for its value
        if (lua_type(L, -2) == LUA_TNUMBER && std::isnan(lua_tonumber(L, -2))) {
            // NaN cannot be a Lua table key.
            lua_pushliteral(L, "nan");
            lua_replace(L, -3);
        }
        lua_rawset(L, -3);
    }
};

} // namespace luaio::resp
