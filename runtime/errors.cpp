// The table of luaio's errors (see errors.h), the error tables pushed from C++, their shared
// metatable, and the `luaio.errors` module that gives Lua code the same table.
#include "runtime/errors.h"
#include "runtime/luaio.h"
#include "runtime/runtime.h"

#include <ares.h>

#include <cstring>
#include <string>

namespace luaio {
namespace {

// c-ares statuses as the dns module reports them: the name without ARES_, ares_strerror's text.
#define LUAIO_DNS_ERRORS(X)                                                                                            \
    X(ENODATA, ARES_ENODATA, "DNS server returned answer with no data")                                                \
    X(EFORMERR, ARES_EFORMERR, "DNS server claims query was misformatted")                                             \
    X(ESERVFAIL, ARES_ESERVFAIL, "DNS server returned general failure")                                                \
    X(ENOTFOUND, ARES_ENOTFOUND, "Domain name not found")                                                              \
    X(ENOTIMP, ARES_ENOTIMP, "DNS server does not implement requested operation")                                      \
    X(EREFUSED, ARES_EREFUSED, "DNS server refused query")                                                             \
    X(EBADQUERY, ARES_EBADQUERY, "Misformatted DNS query")                                                             \
    X(EBADNAME, ARES_EBADNAME, "Misformatted domain name")                                                             \
    X(EBADFAMILY, ARES_EBADFAMILY, "Unsupported address family")                                                       \
    X(EBADRESP, ARES_EBADRESP, "Misformatted DNS reply")                                                               \
    X(ECONNREFUSED, ARES_ECONNREFUSED, "Could not contact DNS servers")                                                \
    X(ETIMEOUT, ARES_ETIMEOUT, "Timeout while contacting DNS servers")                                                 \
    X(EOF, ARES_EOF, "End of file")                                                                                    \
    X(EFILE, ARES_EFILE, "Error reading file")                                                                         \
    X(ENOMEM, ARES_ENOMEM, "Out of memory")                                                                            \
    X(EDESTRUCTION, ARES_EDESTRUCTION, "Channel is being destroyed")                                                   \
    X(EBADSTR, ARES_EBADSTR, "Misformatted string")                                                                    \
    X(EBADFLAGS, ARES_EBADFLAGS, "Illegal flags specified")                                                            \
    X(ENONAME, ARES_ENONAME, "Given hostname is not numeric")                                                          \
    X(EBADHINTS, ARES_EBADHINTS, "Illegal hints flags specified")                                                      \
    X(ENOTINITIALIZED, ARES_ENOTINITIALIZED, "c-ares library initialization not yet performed")                        \
    X(ECANCELLED, ARES_ECANCELLED, "DNS query cancelled")

// Name lookups go through the table in this order, so libuv's name wins over c-ares's.
const ErrorDef kErrors[] = {
#define LUAIO_UV_ENTRY(name, message) {UV_##name, #name, message},
    UV_ERRNO_MAP(LUAIO_UV_ENTRY)
#undef LUAIO_UV_ENTRY
#define LUAIO_ENTRY(name, code, message) {code, #name, message},
        LUAIO_OWN_ERRORS(LUAIO_ENTRY) LUAIO_DNS_ERRORS(LUAIO_ENTRY)
#undef LUAIO_ENTRY
};

// The shared metatable of error tables (its registry reference; made on first use).
int g_error_mt_ref = LUA_NOREF;

const char* raw_string(lua_State* L, int idx, const char* key) {
    lua_pushstring(L, key);
    lua_rawget(L, idx);
    const char* s = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : nullptr;
    lua_pop(L, 1); // the table keeps the string alive
    return s;
}

// "NAME: message (host, address:port)": the parts that the table has.
int error_tostring(lua_State* L) {
    if (!lua_istable(L, 1)) raise(L, "tostring", "expected an error table as argument 1, got %s", luaL_typename(L, 1));
    const char* name = raw_string(L, 1, "name");
    const char* message = raw_string(L, 1, "message");
    const char* host = raw_string(L, 1, "host");
    if (!host) host = raw_string(L, 1, "hostname"); // the dns module's field
    const char* address = raw_string(L, 1, "address");
    lua_pushstring(L, "port");
    lua_rawget(L, 1);
    const char* port = lua_isnumber(L, -1) || lua_isstring(L, -1) ? lua_tostring(L, -1) : nullptr;
    std::string s = name ? name : "error";
    if (message) s.append(": ").append(message);
    if (const char* path = raw_string(L, 1, "path")) {
        const char* syscall = raw_string(L, 1, "syscall");
        s.append(", ").append(syscall ? syscall : "").append(syscall ? " '" : "'").append(path).append("'");
        if (const char* dest = raw_string(L, 1, "dest")) s.append(" -> '").append(dest).append("'");
    }
    std::string addr;
    if (address) {
        addr = port && std::strchr(address, ':') ? std::string("[") + address + "]" : address;
        if (port) addr.append(":").append(port);
    }
    std::string where;
    if (host && (!address || std::strcmp(host, address) != 0)) {
        where = host;
        if (!address && port) where.append(":").append(port);
    }
    if (!addr.empty()) where += where.empty() ? addr : ", " + addr;
    if (!where.empty()) s.append(" (").append(where).append(")");
    lua_pushlstring(L, s.data(), s.size());
    return 1;
}

void push_error_metatable(lua_State* L) {
    if (g_error_mt_ref == LUA_NOREF) {
        lua_createtable(L, 0, 1);
        lua_pushcfunction(L, error_tostring);
        lua_setfield(L, -2, "__tostring");
        g_error_mt_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, g_error_mt_ref);
}

// errors.new(name | code[, message[, fields]]): a new error table; fields (address, port,
// host ...) are copied into it. An unknown name or code is a programmer mistake and raises.
int l_new(lua_State* L) {
    const ErrorDef* def = nullptr;
    if (lua_type(L, 1) == LUA_TSTRING)
        def = find_error(lua_tostring(L, 1));
    else if (lua_type(L, 1) == LUA_TNUMBER)
        def = find_error(static_cast<int>(lua_tointeger(L, 1)));
    else
        raise(L, "errors.new", "expected an error name or code as argument 1, got %s", luaL_typename(L, 1));
    if (!def) raise(L, "errors.new", "unknown error '%s'", lua_tostring(L, 1));
    const char* message = lua_isnoneornil(L, 2) ? def->message : check_string(L, 2, "errors.new");
    if (!lua_isnoneornil(L, 3) && !lua_istable(L, 3))
        raise(L, "errors.new", "expected a table of fields as argument 3, got %s", luaL_typename(L, 3));
    push_error(L, def->code, def->name, message);
    if (lua_istable(L, 3)) {
        lua_pushnil(L);
        while (lua_next(L, 3)) {
            lua_pushvalue(L, -2);
            lua_insert(L, -2);
            lua_rawset(L, -4);
        }
    }
    return 1;
}

// errors.raise(fname, message): raises "<user's line>: fname: message", for argument errors
// found by Lua code in lib/ (the position is the caller's, however deep in lib/ it is found).
int l_raise(lua_State* L) {
    const char* fname = check_string(L, 1, "errors.raise");
    const char* message = check_string(L, 2, "errors.raise");
    raise(L, fname, "%s", message);
}

int open_errors(lua_State* L) {
    const luaL_Reg funcs[] = {{"new", l_new}, {"raise", l_raise}, {nullptr, nullptr}};
    luaL_newlib(L, funcs);
    for (const ErrorDef& e : kErrors) {
        lua_getfield(L, -1, e.name);
        bool taken = !lua_isnil(L, -1);
        lua_pop(L, 1);
        if (taken) continue; // libuv's name wins
        lua_pushinteger(L, e.code);
        lua_setfield(L, -2, e.name);
    }
    push_error_metatable(L);
    lua_setfield(L, -2, "metatable");
    return 1;
}

} // namespace

const ErrorDef* find_error(int code) {
    for (const ErrorDef& e : kErrors)
        if (e.code == code) return &e;
    return nullptr;
}

const ErrorDef* find_error(const char* name) {
    for (const ErrorDef& e : kErrors)
        if (std::strcmp(e.name, name) == 0) return &e;
    return nullptr;
}

void push_error(lua_State* L, int code, const char* name, const char* message) {
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, code);
    lua_setfield(L, -2, "code");
    lua_pushstring(L, name);
    lua_setfield(L, -2, "name");
    lua_pushstring(L, message);
    lua_setfield(L, -2, "message");
    push_error_metatable(L);
    lua_setmetatable(L, -2);
}

void push_error(lua_State* L, int code, const char* message) {
    const ErrorDef* def = find_error(code);
    if (def)
        push_error(L, code, def->name, message ? message : def->message);
    else
        push_error(L, code, "EUNKNOWN", message ? message : "unknown error");
}

void push_uv_error(lua_State* L, int uverr) {
    // A stream's read error may be luaio's own (ETLS from its TLS transport): libuv would name it
    // "Unknown system error" in a string it allocates and never frees.
    if (uverr <= kErrOwnBase) return push_error(L, uverr);
    push_error(L, uverr, uv_err_name(uverr), uv_strerror(uverr));
}

int return_uv_error(lua_State* L, int uverr, int nils) {
    for (int i = 0; i < nils; i++) lua_pushnil(L);
    push_uv_error(L, uverr);
    return nils + 1;
}

void set_error_address(lua_State* L, const char* address, int port) {
    if (address) {
        lua_pushstring(L, address);
        lua_setfield(L, -2, "address");
    }
    if (port >= 0) {
        lua_pushinteger(L, port);
        lua_setfield(L, -2, "port");
    }
}

void set_error_path(lua_State* L, const char* syscall, const char* path, const char* dest) {
    const char* const fields[][2] = {{"syscall", syscall}, {"path", path}, {"dest", dest}};
    for (const auto& f : fields) {
        if (!f[1]) continue;
        lua_pushstring(L, f[1]);
        lua_setfield(L, -2, f[0]);
    }
}

void open_errors_module(lua_State* L) {
    preload(L, "luaio.errors", open_errors);
}

} // namespace luaio
