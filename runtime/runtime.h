// The runtime's life cycle, used by bin/main.cpp only. Modules use runtime/luaio.h.
#pragma once

#include <lua.hpp>

#include "runtime/embedded.h"

namespace luaio {

// Creates the loop and the Lua state, installs the module searchers (script_dir first on
// package.path) and runs the prelude. Returns the main state.
lua_State* init(const char* script_dir);
// Registers the luaio.errors module (runtime/errors.cpp).
void open_errors_module(lua_State* L);
// Registers every C++ module in package.preload (modules/modules.cpp).
void register_modules(lua_State* L);
// Runs the function and its nargs arguments on top of L as the main task, then the loop
// until nothing is left to do. An error in the main task exits with status 1.
void run_main(lua_State* L, int nargs);
// Closes the state and the loop; returns the exit status.
int shutdown();
const EmbeddedModule* find_embedded(const char* name);

} // namespace luaio
