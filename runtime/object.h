// One owner model for the C++ objects behind Lua values (Stream, the tcp Server, the http Site,
// Timer, Child), after luv's lhandle.c.
//
//     struct Server : luaio::Handle<Server> {
//         static constexpr const char* kClass = "luaio.tcp.server";
//         static constexpr const char* kWhat = "tcp server";   // for error messages
//         void proxy_gone();                       // its proxy was collected (or __gc called by hand)
//     };
//     sv->push_proxy(L);  sv->anchor(L, -1);       // a listening server keeps its proxy
//     Server* sv = Server::check(L, 1, "address"); // raises for anything else, or once closed
//     {"__gc", Server::l_gc}                       // checks its argument, then proxy_gone()
//
// The object belongs to C++: its own close path frees it (for a libuv handle, the handle's close
// callback), never the collector. Lua holds a proxy, a userdata of one pointer (the slot) with
// the class's metatable. The object knows its slot and clears it when it goes, so a proxy that
// outlives its object is a closed object (its methods raise) instead of a dangling pointer.
// While the object must keep its proxy (a listening server hands it to every connection's task),
// anchor() holds the proxy in the registry; detach_proxy() lets go of both.
#pragma once

#include "runtime/luaio.h"

#include <new>

namespace luaio {

// A registry reference that keeps one Lua value alive while C++ needs it (a proxy, a socket
// handed to an http conn). Holds at most one value; clear() is idempotent and safe after the
// state has closed (the registry went with it).
class Anchor {
  public:
    // Holds the value at idx (unless one is held already).
    void set(lua_State* L, int idx);
    void clear();
    bool held() const { return ref_ != LUA_NOREF; }
    // Pushes the held value (nil when there is none).
    void push(lua_State* L) const { lua_rawgeti(L, LUA_REGISTRYINDEX, ref_); }

  private:
    int ref_ = LUA_NOREF;
};

class Object {
  public:
    Object(const Object&) = delete;
    Object& operator=(const Object&) = delete;

    bool has_proxy() const { return proxy_ != nullptr; }
    // Keeps the proxy at idx (this object's) alive until unanchor() or detach_proxy().
    void anchor(lua_State* L, int idx) {
        if (proxy_ && lua_touserdata(L, idx) == proxy_) anchor_.set(L, idx);
    }
    void unanchor() { anchor_.clear(); }
    bool anchored() const { return anchor_.held(); }
    // Pushes the anchored proxy (nil when there is none).
    void push_anchored(lua_State* L) const { anchor_.push(L); }
    // Cuts the proxy off: its slot is cleared (it is a closed object from now on) and the anchor
    // goes. Idempotent; the destructor does it too.
    void detach_proxy();

  protected:
    Object() = default;
    ~Object() { detach_proxy(); }
    // Pushes a new proxy holding `self` (the derived object) with the metatable `cls`.
    void push_proxy_of(lua_State* L, void* self, const char* cls);

  private:
    void** proxy_ = nullptr;
    Anchor anchor_;
};

// The proxy slot at idx if the value is a proxy of class `cls`, else nullptr (its memory is not
// read before its metatable is known).
inline void** test_proxy(lua_State* L, int idx, const char* cls) {
    return static_cast<void**>(test_object(L, idx, cls));
}
// The proxy slot of class `cls` at idx (holding nullptr once the object has gone); raises
// "<fname>: expected <cls> ..." for any other value.
void** check_proxy(lua_State* L, int idx, const char* cls, const char* fname);
// raise_arg (runtime/luaio.h) for an object named what ("stream", "file"): "expected a stream as
// argument 1, got number".
[[noreturn]] void raise_object_arg(lua_State* L, int idx, const char* fname, const char* what);

// The class-checked accessors and the proxy's __gc of a class T of objects. T defines kClass (its
// metatable's name), kWhat (its name in error messages) and proxy_gone(); a T whose proxies have
// several classes (Stream) defines its own static test_proxy(L, idx), which is used instead.
template <class T> class Handle : public Object {
  public:
    static void** test_proxy(lua_State* L, int idx) { return luaio::test_proxy(L, idx, T::kClass); }
    // The slot of T's proxy at idx (nullptr in it once closed); raises for any other value.
    static void** check_slot(lua_State* L, int idx, const char* fname) {
        void** ud = T::test_proxy(L, idx);
        if (!ud) raise_object_arg(L, idx, fname, T::kWhat);
        return ud;
    }
    // The object behind T's proxy at idx; raises for any other value and for a closed object.
    static T* check(lua_State* L, int idx, const char* fname) {
        void* o = *T::check_slot(L, idx, fname);
        if (!o) raise(L, fname, "attempt to use a closed %s", T::kWhat);
        return static_cast<T*>(o);
    }
    // The object behind T's proxy at idx, or nullptr when it has gone; raises for other values.
    static T* check_or_closed(lua_State* L, int idx, const char* fname) {
        return static_cast<T*>(*T::check_slot(L, idx, fname));
    }
    // The __gc of T's proxies: the proxy is cut off, then the object is told (T::proxy_gone).
    // getmetatable reaches it with any argument, so it checks it; a second call does nothing.
    static int l_gc(lua_State* L) {
        if (T* o = T::check_or_closed(L, 1, "__gc")) {
            o->detach_proxy();
            o->proxy_gone();
        }
        return 0;
    }

    // Pushes the one proxy of this object (an older one becomes a closed object).
    void push_proxy(lua_State* L, const char* cls = T::kClass) { push_proxy_of(L, static_cast<T*>(this), cls); }
};

// An object that lives in its own userdata instead of behind a proxy: one allocation less for
// objects of which every idle connection has one (the http conn; a proxy would cost each idle
// connection about 70 bytes more). The collector frees it, so while it is open it anchors its
// own userdata (anchor_self), and its close path lets go (the userdata then lives as long as
// Lua code can reach it: a closed object). T defines kClass, kWhat and collected(), which must
// leave T closed (its __gc may be called by hand, and again later).
template <class T> class Resident {
  public:
    Resident(const Resident&) = delete;
    Resident& operator=(const Resident&) = delete;

    // Pushes a new T in its userdata, with the metatable of T::kClass.
    static T* push_new(lua_State* L) {
        T* o = new (lua_newuserdata(L, sizeof(T))) T;
        luaL_getmetatable(L, T::kClass);
        lua_setmetatable(L, -2);
        return o;
    }
    // The T at idx, or nullptr when the value is something else.
    static T* test(lua_State* L, int idx) { return static_cast<T*>(test_object(L, idx, T::kClass)); }
    // The T at idx, open or closed; raises for any other value.
    static T* check_any(lua_State* L, int idx, const char* fname) {
        T* o = test(L, idx);
        if (!o) raise_object_arg(L, idx, fname, T::kWhat);
        return o;
    }
    // The __gc of T: checks its argument, then T::collected().
    static int l_gc(lua_State* L) {
        check_any(L, 1, "__gc")->collected();
        return 0;
    }

    // Keeps this object's userdata (at idx) alive until unanchor_self().
    void anchor_self(lua_State* L, int idx) {
        if (lua_touserdata(L, idx) == static_cast<T*>(this)) self_.set(L, idx);
    }
    void unanchor_self() { self_.clear(); }
    void push_self(lua_State* L) const { self_.push(L); }

  protected:
    Resident() = default;
    ~Resident() = default;

  private:
    Anchor self_;
};

} // namespace luaio
