// The Lua modules of lib/, compiled to bytecode by tools/embed.cpp at build time.
#pragma once

#include <cstddef>

namespace luaio {

struct EmbeddedModule {
    const char* name; // "task", "luaio.prelude", ...
    const unsigned char* data;
    size_t size;
};

// Terminated by an entry whose name is nullptr.
extern const EmbeddedModule kEmbeddedModules[];

} // namespace luaio
