// Loading a large client library when its module is first required, not at process start.
//
// Start-up time is a target (`luaio -e ''` within 1.5x of bare luajit), and some client
// libraries pull in many more: libpq.so.5 alone brings 24 (GSSAPI, LDAP, ...). A binding that
// uses one compiles against the library's header, links nothing, and calls it through pointers
// resolved here from its X-macro list of functions:
//
//     #include <libpq-fe.h>
//     #define LUAIO_PQ(X) X(PQconnectStartParams) X(PQconnectPoll) X(PQsocket)
//     #define X(f) decltype(&::f) f##_ = nullptr;
//     LUAIO_PQ(X)
//     #undef X
//     ...
//     #define X(f) {#f, reinterpret_cast<void**>(&f##_)},
//     const luaio::Symbol syms[] = {LUAIO_PQ(X)};
//     #undef X
//     std::string err;
//     if (!luaio::load_library("libpq.so.5", "libpq5", syms, std::size(syms), &err)) luaL_error(L, "%s", err.c_str());
#pragma once

#include <cstddef>
#include <string>

namespace luaio {

struct Symbol {
    const char* name;
    void** slot;
};

// dlopen()s `soname` (once per process; it is never unloaded) and stores the address of every
// symbol in its slot. On failure returns false, leaves the slots alone, and sets *err to a message
// that names the library, what the loader said, and the Debian package that provides it.
bool load_library(const char* soname, const char* package, const Symbol* symbols, size_t count, std::string* err);

} // namespace luaio
