// luaio's errors: the one table of the names, codes and default messages that luaio reports.
//
// Codes come from three ranges, so that a code alone says where an error came from:
//   negative, above UV_ERRNO_MAX   libuv's (negative errno values: UV_ECONNREFUSED, UV_EOF ...)
//   positive                       c-ares statuses, as the dns module reports them
//   kErrOwnBase and below          luaio's own, for conditions only luaio detects
// C++ pushes an error table with luaio::push_error(L, code[, message]) (runtime/luaio.h), Lua
// code makes one with require("luaio.errors").new(name[, message[, fields]]); both get the name
// and the default message from this table and the shared metatable whose __tostring prints
// "ECONNREFUSED: connection refused (127.0.0.1:8080)".
#pragma once

namespace luaio {

// luaio's own errors: X(name, code, default message). Add new ones at the end, never reuse a code.
#define LUAIO_OWN_ERRORS(X)                                                                                            \
    X(ELINETOOLONG, -5001, "line too long")                                                                            \
    X(EJSON, -5002, "invalid JSON")                                                                                    \
    X(ETOOMANYREDIRECTS, -5003, "too many redirects")                                                                  \
    X(ETLS, -5004, "TLS protocol error")                                                                               \
    X(ECERTVERIFY, -5005, "certificate verification failed")                                                           \
    X(EHOSTMISMATCH, -5006, "certificate does not match the host name")                                                \
    /* redis (-5020...): an error reply of the server (its message is the server's) */                                 \
    X(EREDIS, -5020, "Redis error")                                                                                    \
    /* postgres (-5030...): a server error (err.sqlstate) or a libpq failure */                                        \
    X(EPG, -5030, "PostgreSQL error")                                                                                  \
    /* mysql (-5040...): an error the server or MariaDB Connector/C reported (err.errno, err.sqlstate) */              \
    X(EMYSQL, -5040, "MySQL error")

constexpr int kErrOwnBase = -5001;

// LUAIO_ELINETOOLONG ...: the codes of luaio's own errors, for push_error(L, code, message).
enum OwnError : int {
#define LUAIO_OWN_ERROR_ENUM(name, code, message) LUAIO_##name = code,
    LUAIO_OWN_ERRORS(LUAIO_OWN_ERROR_ENUM)
#undef LUAIO_OWN_ERROR_ENUM
};

struct ErrorDef {
    int code;
    const char* name;
    const char* message; // the default message
};

// The definition of a code of any of the three ranges (nullptr when unknown).
const ErrorDef* find_error(int code);
// The definition of a name (nullptr when unknown). A name that libuv and c-ares both have
// (ECONNREFUSED, EOF, ENOMEM) is libuv's.
const ErrorDef* find_error(const char* name);

} // namespace luaio
