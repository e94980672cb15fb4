// load_library (see dynlib.h).
#include "runtime/dynlib.h"

#include <dlfcn.h>

namespace luaio {

bool load_library(const char* soname, const char* package, const Symbol* symbols, size_t count, std::string* err) {
    // dlopen counts its own references, so a second load of the same library returns the same
    // handle at once; the library stays loaded for the life of the process.
    void* lib = dlopen(soname, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        const char* why = dlerror();
        *err = std::string("cannot load ") + soname + " (" + (why ? why : "unknown error") +
               "); install the Debian package " + package;
        return false;
    }
    for (size_t i = 0; i < count; i++) {
        dlerror();
        void* p = dlsym(lib, symbols[i].name);
        if (!p) {
            *err = std::string(soname) + " has no function " + symbols[i].name +
                   " (an older version than luaio needs; install the Debian package " + package + ")";
            return false;
        }
    }
    for (size_t i = 0; i < count; i++) *symbols[i].slot = dlsym(lib, symbols[i].name);
    return true;
}

} // namespace luaio
