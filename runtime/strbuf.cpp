// StringBuffer (runtime/strbuf.h): the lending of big buffers to LuaJIT's allocator.
//
// While a block is lent, or any lent block is still a live Lua object, the state's allocator is
// wrapped: the first new allocation in the window of the lend gets the block, and frees and
// reallocations of lent blocks (only blocks of kAdoptMin bytes or more are looked up) go to
// malloc's free and realloc, where the block came from. With nothing lent, LuaJIT's own allocator
// is put back and costs nothing more.
//
// The string is made with ffi.string rather than lua_pushlstring: lua_pushlstring runs a GC step
// (which may allocate, even run finalizers) before it makes the string, ffi.string after. So the
// first allocation after the lend is the string's, unless an equal string already exists (LuaJIT
// interns strings): then nothing is allocated for it, and the GC step afterwards may take the
// block for another object. Either way whatever took the block is a Lua object whose memory is
// tracked here, and the bytes of the string are right: they were compared or "copied" before.
#include "runtime/strbuf.h"

#include <cstdlib>
#include <cstring>
#include <unordered_set>
#include <uv.h>

#include "runtime/luaio.h"

namespace luaio {
namespace {

// LuaJIT's string header in GC64 mode (GCstr: the GC header, hash and length): what init checks.
constexpr size_t kHeader = 24;
// Blocks at least this big are freed in the thread pool.
constexpr size_t kFreeInPool = 4 * 1024 * 1024;

lua_State* g_main = nullptr;
lua_Alloc g_orig = nullptr;
void* g_orig_ud = nullptr;
bool g_wrapped = false;
bool g_enabled = false;
bool g_checked = false;
bool g_free_in_pool = false;
int g_ffi_string = LUA_NOREF; // ffi.string, once lending has been checked

struct Lend {
    char* block = nullptr;
    size_t size = 0; // the allocation size of the string that is expected
    bool taken = false;
};
Lend g_lend;
std::unordered_set<void*>* g_lent = nullptr; // blocks that are Lua objects now

void free_block(void* p, size_t size) {
    if (size >= kFreeInPool && g_free_in_pool) {
        auto* req = new uv_work_t;
        req->data = p;
        int rc = uv_queue_work(
            loop(), req, [](uv_work_t* r) { std::free(r->data); }, [](uv_work_t* r, int) { delete r; });
        if (rc == 0) return;
        delete req;
    }
    std::free(p);
}

void unwrap_if_idle();

void* wrapped_alloc(void*, void* p, size_t osize, size_t nsize) {
    if (!p) {
        if (g_lend.block && !g_lend.taken && nsize == g_lend.size) {
            g_lend.taken = true;
            g_lent->insert(g_lend.block);
            return g_lend.block;
        }
    } else if (osize >= StringBuffer::kAdoptMin && g_lent->count(p)) {
        if (nsize == 0) {
            g_lent->erase(p);
            free_block(p, osize);
            unwrap_if_idle();
            return nullptr;
        }
        // Not a string's block (strings never grow): whatever took it is moved to LuaJIT's memory.
        void* q = g_orig(g_orig_ud, nullptr, 0, nsize);
        if (!q) return nullptr;
        std::memcpy(q, p, osize < nsize ? osize : nsize);
        g_lent->erase(p);
        free_block(p, osize);
        unwrap_if_idle();
        return q;
    }
    return g_orig(g_orig_ud, p, osize, nsize);
}

void wrap() {
    if (g_wrapped) return;
    g_orig = lua_getallocf(g_main, &g_orig_ud);
    if (!g_lent) g_lent = new std::unordered_set<void*>;
    lua_setallocf(g_main, wrapped_alloc, nullptr);
    g_wrapped = true;
}

void unwrap_if_idle() {
    if (!g_wrapped || !g_lent->empty() || g_lend.block) return;
    lua_setallocf(g_main, g_orig, g_orig_ud);
    g_wrapped = false;
}

// The size LuaJIT allocates for a string of len bytes: its header, the bytes and a NUL, rounded
// up to 4 (lj_str_size).
size_t string_alloc_size(size_t len) {
    return kHeader + ((len + 4) & ~static_cast<size_t>(3));
}

// Makes the string of len bytes at block + kHeader with block lent, on the main state, and leaves
// it on the main state's stack; the block is dropped from *owner when the allocator took it (it
// is a Lua object then, whatever happens next). False, with nothing pushed, when ffi.string
// raised (out of memory, or a finalizer's error in its GC step): the caller copies instead.
bool lend_and_make(char** owner, size_t len) {
    lua_State* M = g_main;
    char* block = *owner;
    char* bytes = block + kHeader;
    // LuaJIT zeroes the last 4-byte word of a new string (its NUL is in it) before it copies the
    // bytes in, and the copy onto themselves brings nothing back: the last len % 4 bytes are
    // saved here and put back once the string is made (its hash and the interning check were
    // made from the intact bytes, before the allocation).
    size_t tail_at = len & ~static_cast<size_t>(3);
    char tail[4];
    std::memcpy(tail, bytes + tail_at, len - tail_at);
    lua_rawgeti(M, LUA_REGISTRYINDEX, g_ffi_string);
    lua_pushlightuserdata(M, bytes);
    lua_pushnumber(M, static_cast<lua_Number>(len));
    wrap();
    g_lend = {block, string_alloc_size(len), false};
    int rc = lua_pcall(M, 2, 1, 0);
    if (g_lend.taken) *owner = nullptr;
    g_lend.block = nullptr;
    unwrap_if_idle();
    if (rc != 0) {
        lua_pop(M, 1);
        return false;
    }
    if (!*owner && lua_tostring(M, -1) == bytes) std::memcpy(bytes + tail_at, tail, len - tail_at);
    return true;
}

// Lends one block of test bytes, once: lending stays on only if LuaJIT put the string's bytes
// exactly at block + kHeader (a LuaJIT with another header or allocator keeps copying).
void check_lending() {
    g_checked = true;
    lua_State* M = g_main;
    int top = lua_gettop(M);
    lua_getglobal(M, "require");
    lua_pushliteral(M, "ffi");
    if (lua_pcall(M, 1, 1, 0) != 0 || !lua_istable(M, -1)) return lua_settop(M, top);
    lua_getfield(M, -1, "string");
    if (!lua_isfunction(M, -1)) return lua_settop(M, top);
    g_ffi_string = luaL_ref(M, LUA_REGISTRYINDEX);
    lua_settop(M, top);

    const size_t len = StringBuffer::kAdoptMin + 3;
    size_t size = string_alloc_size(len);
    char* block = static_cast<char*>(std::malloc(size));
    if (!block) return;
    // Bytes no other string has: this block's address, then a pattern.
    std::memset(block, 0, size);
    for (size_t i = 0; i < len; i++) block[kHeader + i] = static_cast<char>('a' + i % 26);
    std::memcpy(block + kHeader, &block, sizeof block);
    char* owner = block;
    if (lend_and_make(&owner, len)) {
        size_t got = 0;
        const char* s = lua_tolstring(M, -1, &got);
        g_enabled = (!owner && s == block + kHeader && got == len && s[len] == '\0' &&
                     std::memcmp(s, &block, sizeof block) == 0);
        for (size_t i = sizeof block; g_enabled && i < len; i++) g_enabled = s[i] == static_cast<char>('a' + i % 26);
    }
    lua_settop(M, top);
    std::free(owner); // not taken: still ours
}

} // namespace

size_t StringBuffer::header() {
    return kHeader;
}

bool StringBuffer::reserve(size_t n) {
    if (block_ && n <= cap_) return true;
    // Room for LuaJIT's rounding of the string's size and its NUL.
    char* p = static_cast<char*>(std::realloc(block_, kHeader + n + 4));
    if (!p) return false;
    block_ = p;
    cap_ = n;
    return true;
}

void StringBuffer::reset() {
    if (!block_) return;
    free_block(block_, cap_);
    block_ = nullptr;
    cap_ = 0;
}

bool StringBuffer::push(lua_State* L, size_t len) {
    if (len < kAdoptMin || !block_ || !g_main) {
        lua_pushlstring(L, block_ ? data() : "", len);
        return true;
    }
    if (!g_checked) check_lending();
    // Lent only when LuaJIT's allocation for a len-byte string fits the block.
    if (!g_enabled || string_alloc_size(len) > kHeader + cap_ + 4) {
        lua_pushlstring(L, data(), len);
        return true;
    }
    if (!lend_and_make(&block_, len)) {
        if (!block_) return false; // taken, then the GC step ran out of memory: the bytes are gone
        lua_pushlstring(L, data(), len);
        return true;
    }
    if (L != g_main) lua_xmove(g_main, L, 1);
    if (!block_) cap_ = 0; // the block is a Lua object now
    return true;
}

void init_string_buffers(lua_State* L) {
    g_main = L;
    g_checked = g_enabled = false;
    g_ffi_string = LUA_NOREF;
    g_free_in_pool = true;
}

bool string_lending_enabled() {
    if (g_main && !g_checked) check_lending();
    return g_enabled;
}

void set_string_free_in_pool(bool on) {
    g_free_in_pool = on;
}

} // namespace luaio
