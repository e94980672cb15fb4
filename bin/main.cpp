// The luaio command line: `luaio [options] [script [args...]]`, as the stock `lua` interpreter.
#include "runtime/luaio.h"
#include "runtime/runtime.h"

#include <ares.h>
#include <llhttp.h>
#include <luajit.h>
#include <openssl/opensslv.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

const char kUsage[] = "usage: luaio [options] [script [args...]]\n"
                      "Runs a Lua script on the luaio runtime (LuaJIT + libuv).\n"
                      "\n"
                      "  -e code        run code (may be given more than once)\n"
                      "  -l name        require library 'name' and set the global of that name\n"
                      "  -i             enter the interactive prompt after running the script\n"
                      "  --workers [N]  run the script in N worker processes (default: one per core) under a\n"
                      "                 master that restarts them, stops them on SIGTERM, reloads them on SIGHUP\n"
                      "  --check        compile the script and the modules it requires from its directory,\n"
                      "                 without running them; exit 0, or print file:line: error and exit 1\n"
                      "  -v, --version  print the versions of luaio and its libraries\n"
                      "  -h, --help     print this help\n"
                      "  -              run the script read from standard input\n"
                      "  --             stop handling options\n"
                      "\n"
                      "With no script and a terminal on standard input, luaio opens the interactive prompt;\n"
                      "with no script and no terminal, it runs standard input as the script.\n"
                      "SIGTERM or SIGINT stops a script's servers gracefully: they drain for LUAIO_DRAIN_DELAY ms\n"
                      "(1000), serve their backlog, finish requests within LUAIO_SHUTDOWN_TIMEOUT ms (10000).\n"
                      "Documentation: man luaio; README.md and docs/ (in the source tree, or /usr/share/doc/luaio/).\n";

void print_version() {
    std::printf("luaio %s\n", LUAIO_VERSION);
    std::printf("%s\n", LUAJIT_VERSION);
    std::printf("libuv %s\n", uv_version_string());
    std::printf("c-ares %s\n", ares_version(nullptr));
    std::printf("llhttp %d.%d.%d\n", LLHTTP_VERSION_MAJOR, LLHTTP_VERSION_MINOR, LLHTTP_VERSION_PATCH);
    std::printf("%s\n", OPENSSL_VERSION_TEXT); // the headers built against; linked when TLS lands
}

struct Action {
    char kind; // 'e' or 'l'
    std::string value;
};

} // namespace

int main(int argc, char** argv) {
    std::vector<Action> actions;
    bool interactive = false;
    bool check = false; // --check: compile, do not run
    long workers = -1;  // --workers: -1 absent, 0 one per core
    int script = 0;     // index in argv of the script, or 0 for none
    int i = 1;
    for (; i < argc; i++) {
        const char* a = argv[i];
        if (std::strcmp(a, "--") == 0) {
            i++;
            break;
        }
        if (a[0] != '-' || std::strcmp(a, "-") == 0) break;
        if (std::strcmp(a, "-v") == 0 || std::strcmp(a, "--version") == 0) {
            print_version();
            return 0;
        }
        if (std::strcmp(a, "-h") == 0 || std::strcmp(a, "--help") == 0) {
            std::fputs(kUsage, stdout);
            return 0;
        }
        if (std::strcmp(a, "--workers") == 0 || std::strncmp(a, "--workers=", 10) == 0) {
            // N is optional: the next argument is N when it is all digits, the script when it is
            // an option, "-" or an existing file, and otherwise an error (so `--workers abc app.lua` is an
            // error rather than a run of the script "abc").
            const char* n = a[9] == '=' ? a + 10 : (i + 1 < argc ? argv[i + 1] : nullptr);
            bool digits = n && *n && std::strspn(n, "0123456789") == std::strlen(n);
            bool given = a[9] == '=' || digits || (n && n[0] != '-' && access(n, F_OK) != 0);
            if (given) {
                char* end = nullptr;
                long v = std::strtol(n, &end, 10);
                if (!*n || *end != '\0' || v < 1 || v > 1024) {
                    std::fprintf(stderr, "luaio: --workers needs a number of workers between 1 and 1024, got '%s'%s\n",
                                 n, digits ? "" : " (neither a number nor an existing script)");
                    return 1;
                }
                if (a[9] != '=') i++;
                workers = v;
            } else {
                workers = 0;
            }
            continue;
        }
        if (std::strcmp(a, "--check") == 0) {
            check = true;
            continue;
        }
        if (std::strcmp(a, "-i") == 0) {
            interactive = true;
            continue;
        }
        if (std::strcmp(a, "-e") == 0 || std::strcmp(a, "-l") == 0) {
            if (i + 1 >= argc) {
                std::fprintf(stderr, "luaio: '%s' needs an argument\n%s", a, kUsage);
                return 1;
            }
            actions.push_back({a[1], argv[i + 1]});
            i++;
            continue;
        }
        std::fprintf(stderr, "luaio: unrecognized option '%s'\n%s", a, kUsage);
        return 1;
    }
    if (i < argc) script = i;
    bool stdin_tty = isatty(0) != 0;

    std::string script_dir = ".";
    if (script && std::strcmp(argv[script], "-") != 0) {
        std::string s = argv[script];
        size_t slash = s.rfind('/');
        if (slash != std::string::npos) script_dir = slash == 0 ? "/" : s.substr(0, slash);
    }

    lua_State* L = luaio::init(script_dir.c_str());

    // The global `arg`, as in the stock interpreter: arg[0] is the script, arg[1..] its
    // arguments, negative indices the interpreter and its options.
    int base = script ? script : argc;
    lua_createtable(L, argc - base, base);
    for (int j = 0; j < argc; j++) {
        lua_pushstring(L, argv[j]);
        lua_rawseti(L, -2, j - base);
    }
    lua_setglobal(L, "arg");

    // The boot sequence runs in the main task (lib/luaio/main.lua).
    lua_getglobal(L, "require");
    lua_pushstring(L, "luaio.main");
    if (lua_pcall(L, 1, 1, 0) != 0) {
        std::fprintf(stderr, "luaio: %s\n", lua_tostring(L, -1));
        return 1;
    }
    lua_createtable(L, 0, 4);
    lua_createtable(L, static_cast<int>(actions.size()), 0);
    for (size_t k = 0; k < actions.size(); k++) {
        lua_createtable(L, 2, 0);
        lua_pushlstring(L, &actions[k].kind, 1);
        lua_rawseti(L, -2, 1);
        lua_pushstring(L, actions[k].value.c_str());
        lua_rawseti(L, -2, 2);
        lua_rawseti(L, -2, static_cast<int>(k + 1));
    }
    lua_setfield(L, -2, "actions");
    if (script) {
        lua_pushstring(L, argv[script]);
        lua_setfield(L, -2, "script");
    }
    // No script and no -e: a terminal gets the prompt, anything else is read as the script.
    bool repl = interactive || (!script && actions.empty() && stdin_tty);
    if (!script && actions.empty() && !stdin_tty && !interactive) {
        lua_pushstring(L, "-");
        lua_setfield(L, -2, "script");
    }
    lua_pushboolean(L, repl);
    lua_setfield(L, -2, "repl");
    if (check) {
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, "check");
    }
    if (workers >= 0) {
        lua_pushinteger(L, workers);
        lua_setfield(L, -2, "workers");
    }
    lua_pushinteger(L, argc - base - 1);
    lua_setfield(L, -2, "nargs");
    luaio::run_main(L, 1);
    return luaio::shutdown();
}
