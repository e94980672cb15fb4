// StringBuffer (runtime/strbuf.h) on a real LuaJIT state: big buffers become their Lua string
// without a copy, small ones are copied, and the allocator is LuaJIT's own again once no lent
// block is alive.
#include "runtime/strbuf.h"

#include <gtest/gtest.h>
#include <uv.h>

#include <cstring>
#include <string>

namespace luaio {
uv_loop_t* loop() {
    return uv_default_loop();
}
} // namespace luaio

namespace {

struct State {
    lua_State* L = luaL_newstate();
    State() {
        luaL_openlibs(L);
        luaio::init_string_buffers(L);
    }
    ~State() {
        luaio::set_string_free_in_pool(false);
        lua_close(L);
    }
};

void fill(luaio::StringBuffer& b, size_t n, char seed) {
    ASSERT_TRUE(b.reserve(n));
    for (size_t i = 0; i < n; i++) b.data()[i] = static_cast<char>(seed + i % 7);
}

lua_Alloc allocator(lua_State* L) {
    void* ud = nullptr;
    return lua_getallocf(L, &ud);
}

TEST(StringBuffer, ABigBufferBecomesItsStringWithoutACopy) {
    State s;
    ASSERT_TRUE(luaio::string_lending_enabled());
    lua_gc(s.L, LUA_GCCOLLECT, 0); // the string of the check at the first lend
    lua_Alloc own = allocator(s.L);
    luaio::StringBuffer b;
    const size_t n = 3 * 1024 * 1024 + 1;
    fill(b, n, 'a');
    const char* bytes = b.data();
    ASSERT_TRUE(b.push(s.L, n));
    size_t len = 0;
    const char* str = lua_tolstring(s.L, -1, &len);
    EXPECT_EQ(str, bytes); // the same memory: nothing was copied
    EXPECT_EQ(len, n);
    EXPECT_EQ(str[n], '\0');
    // Every byte, the last ones too (LuaJIT clears the string's last word before its copy).
    for (size_t i = 0; i < n; i++) ASSERT_EQ(str[i], static_cast<char>('a' + i % 7)) << i;
    EXPECT_EQ(b.data(), nullptr); // the buffer gave its block away
    EXPECT_NE(allocator(s.L), own);
    // The string works as any other: hashing, comparison, a substring.
    lua_pushvalue(s.L, -1);
    lua_pushinteger(s.L, 1);
    lua_settable(s.L, LUA_REGISTRYINDEX);
    lua_pushlstring(s.L, str, len); // an equal string made the usual way is the same string
    EXPECT_EQ(lua_tostring(s.L, -1), str);
    lua_rawget(s.L, LUA_REGISTRYINDEX); // and finds the table entry the lent one made
    EXPECT_EQ(lua_tointeger(s.L, -1), 1);
    lua_pop(s.L, 1);
    lua_pushnil(s.L);
    lua_settable(s.L, LUA_REGISTRYINDEX);
    lua_gc(s.L, LUA_GCCOLLECT, 0);
    lua_gc(s.L, LUA_GCCOLLECT, 0);
    // Collected: the block went back to malloc and LuaJIT's allocator is unwrapped.
    EXPECT_EQ(allocator(s.L), own);
}

TEST(StringBuffer, ASmallBufferIsCopiedAndKept) {
    State s;
    luaio::StringBuffer b;
    fill(b, 1000, 'k');
    ASSERT_TRUE(b.push(s.L, 1000));
    size_t len = 0;
    const char* str = lua_tolstring(s.L, -1, &len);
    EXPECT_NE(str, b.data());
    ASSERT_NE(b.data(), nullptr);
    EXPECT_EQ(std::string(str, len), std::string(b.data(), 1000));
}

TEST(StringBuffer, AnEqualStringAlreadyAliveIsReturnedAndTheBytesStayRight) {
    State s;
    const size_t n = 200 * 1024;
    luaio::StringBuffer a, b;
    fill(a, n, 'x');
    fill(b, n, 'x');
    std::string want(a.data(), n);
    ASSERT_TRUE(a.push(s.L, n));
    ASSERT_TRUE(b.push(s.L, n)); // interned: LuaJIT hands back the first string
    EXPECT_TRUE(lua_rawequal(s.L, -1, -2));
    size_t len = 0;
    const char* str = lua_tolstring(s.L, -1, &len);
    EXPECT_EQ(std::string(str, len), want);
    lua_settop(s.L, 0);
    lua_gc(s.L, LUA_GCCOLLECT, 0);
    // Many big strings, made and dropped, with collections between them: no block is lost or
    // freed twice (AddressSanitizer checks it in CI).
    for (int i = 0; i < 50; i++) {
        luaio::StringBuffer c;
        fill(c, n + static_cast<size_t>(i), static_cast<char>('A' + i % 20));
        ASSERT_TRUE(c.push(s.L, n + static_cast<size_t>(i) - static_cast<size_t>(i % 3)));
        if (i % 5 == 0) lua_settop(s.L, 0);
        if (i % 7 == 0) lua_gc(s.L, LUA_GCCOLLECT, 0);
    }
}

TEST(StringBuffer, AShorterStringThanReservedIsLentToo) {
    State s;
    luaio::StringBuffer b;
    fill(b, 1 << 20, 'q');
    const char* bytes = b.data();
    ASSERT_TRUE(b.push(s.L, (1 << 19) + 3));
    size_t len = 0;
    const char* str = lua_tolstring(s.L, -1, &len);
    EXPECT_EQ(str, bytes);
    ASSERT_EQ(len, static_cast<size_t>((1 << 19) + 3));
    for (size_t i = 0; i < len; i++) ASSERT_EQ(str[i], static_cast<char>('q' + i % 7)) << i;
}

} // namespace
