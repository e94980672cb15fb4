// The one owner model of C++ objects behind Lua proxies (see object.h).
#include <cstring>
#include <string>
#include "runtime/object.h"

namespace luaio {

void Object::push_proxy_of(lua_State* L, void* self, const char* cls) {
    detach_proxy(); // an object has one proxy: an older one becomes a closed object
    proxy_ = push_proxy(L, self, cls);
}

void Anchor::set(lua_State* L, int idx) {
    if (ref_ != LUA_NOREF) return;
    lua_pushvalue(L, idx);
    ref_ = luaL_ref(L, LUA_REGISTRYINDEX);
}

void Anchor::clear() {
    if (ref_ == LUA_NOREF) return;
    // Once the state is closed, the registry has gone with everything it anchored.
    if (lua_State* L = main_state()) luaL_unref(L, LUA_REGISTRYINDEX, ref_);
    ref_ = LUA_NOREF;
}

void Object::detach_proxy() {
    if (proxy_) *proxy_ = nullptr;
    proxy_ = nullptr;
    unanchor();
}

void** check_proxy(lua_State* L, int idx, const char* cls, const char* fname) {
    void** ud = test_proxy(L, idx, cls);
    if (!ud) raise_arg(L, idx, fname, cls);
    return ud;
}

void raise_object_arg(lua_State* L, int idx, const char* fname, const char* what) {
    std::string a = std::string(std::strchr("aeiou", what[0]) ? "an " : "a ") + what;
    raise_arg(L, idx, fname, a.c_str());
}

} // namespace luaio
