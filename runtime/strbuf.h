// StringBuffer: bytes that become one Lua string without being copied on the loop thread.
//
// lua_pushlstring copies its bytes into a new string object, on the loop thread, after the
// allocator has given it fresh pages: for a 100 MB file read in the thread pool that copy held
// the loop for about 60 ms, and every timer in the process fired that late. A StringBuffer keeps
// room in front of its bytes for LuaJIT's string header, and push() lends the whole block to the
// allocator for the string that is being made: LuaJIT then writes its header in front of the bytes
// and "copies" the bytes onto themselves (glibc's memcpy returns at once when source and
// destination are the same). The string object IS the buffer; the loop pays only for hashing a
// few sampled bytes. The block is freed when the string is collected (in the thread pool when it
// is big: returning 100 MB to the kernel is itself a few milliseconds of munmap).
//
// Small buffers (under kAdoptMin) are copied as usual and stay with the StringBuffer, as do the
// bytes under a LuaJIT where the check at the first lend fails (another string header, an
// allocator that cannot be wrapped). AddressSanitizer's memcpy allows a copy onto itself.
#pragma once

#include <lua.hpp>

#include <cstddef>

namespace luaio {

class StringBuffer {
  public:
    // Below this size push() copies: the copy is cheaper than the bookkeeping.
    static constexpr size_t kAdoptMin = 64 * 1024;

    StringBuffer() = default;
    StringBuffer(const StringBuffer&) = delete;
    StringBuffer& operator=(const StringBuffer&) = delete;
    ~StringBuffer() { reset(); }

    // Room for n bytes at data(), keeping those already there. Any thread (the thread pool
    // fills buffers). False when memory is short.
    bool reserve(size_t n);
    char* data() { return block_ ? block_ + header() : nullptr; }
    size_t capacity() const { return cap_; }
    // Loop thread: pushes the first len bytes (len <= capacity()) as a Lua string. A big buffer
    // becomes the string and is empty afterwards; a small one is copied and keeps its bytes.
    // False, with nothing pushed, only when memory ran out after the bytes were given away.
    [[nodiscard]] bool push(lua_State* L, size_t len);
    // Frees the bytes now (in the thread pool when they are big and the loop runs).
    void reset();

    // The room kept in front of the bytes: LuaJIT's string header (0 while lending is off).
    static size_t header();

  private:
    char* block_ = nullptr;
    size_t cap_ = 0;
};

// Called once on the new Lua state, before any StringBuffer is filled: finds the header size by
// lending one block and checking where LuaJIT put the string in it. Lending stays off when the
// check fails.
void init_string_buffers(lua_State* L);
// Whether push() lends big buffers (for tests and `luaio -v`).
bool string_lending_enabled();
// Whether big blocks are freed in the thread pool (on while the loop runs; off for lua_close at
// exit, when no pool callback would run again).
void set_string_free_in_pool(bool on);

} // namespace luaio
