// Lazy loading of OpenSSL: libssl and libcrypto are mapped when luaio first calls one of their
// functions, not when the process starts.
//
// Start-up time is a target (`luaio -e ''` within 1.5x of bare luajit). Linked the usual way,
// libcrypto alone costs every start ~1.7 ms here: the loader maps 4.5 MB and takes ~125 page
// faults relocating it, for scripts that mostly never use TLS. So on x86-64 the binary links no
// OpenSSL library: tools/lazy-thunks.sh finds every OpenSSL function that luaio's objects call
// and writes a thunk of that name (hidden: the binary still exports only the Lua API) that jumps
// through a slot. A slot first leads to luaio_lazy_load, which dlopens the libraries, fills every
// slot of the table at once, and returns to the thunk, which goes on to the real function with
// the caller's arguments untouched. From then on a call costs one indirect jump, as a PLT call
// does. Nothing else changes: code calls SSL_new as ever, and a new OpenSSL function used in any
// source file gets its thunk at the next build.
#include <dlfcn.h>
#include <pthread.h>

#include <cstdio>
#include <cstdlib>
#include <unistd.h>

namespace {

struct Entry {
    const char* name;
    void** slot;
};

// A table as tools/lazy-thunks.sh writes it: sonames up to a null, then name/slot pairs up to
// a null name.
void load(void** table) {
    void* handles[8];
    size_t n = 0;
    for (; table[0]; table++) {
        auto* so = static_cast<const char*>(table[0]);
        // RTLD_GLOBAL: libssl finds libcrypto's symbols whichever is opened first.
        void* h = dlopen(so, RTLD_NOW | RTLD_GLOBAL);
        if (!h) {
            // Nothing can be returned to the OpenSSL call that brought us here; the Debian
            // package depends on libssl3, so this is a broken installation.
            fprintf(stderr, "luaio: cannot load %s (%s); install the Debian package libssl3\n", so, dlerror());
            _exit(127);
        }
        if (n < sizeof handles / sizeof handles[0]) handles[n++] = h;
    }
    table++;
    for (auto* e = reinterpret_cast<Entry*>(table); e->name; e++) {
        void* p = nullptr;
        for (size_t i = 0; i < n && !p; i++) p = dlsym(handles[i], e->name);
        if (!p) {
            fprintf(stderr, "luaio: the OpenSSL library has no function %s (luaio needs OpenSSL 3)\n", e->name);
            _exit(127);
        }
        *e->slot = p;
    }
}

pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

} // namespace

// Called by the thunks' stub with the table of the function called. Threads of libuv's pool may
// call OpenSSL too: the first one loads, the others wait for it. A slot already filled by then
// is filled again with the same address.
extern "C" void luaio_lazy_load(void** table) {
    pthread_mutex_lock(&g_lock);
    static void** loaded[4];
    bool done = false;
    for (void** t : loaded) done = done || t == table;
    if (!done) {
        load(table);
        for (void**& t : loaded)
            if (!t) {
                t = table;
                break;
            }
    }
    pthread_mutex_unlock(&g_lock);
}
