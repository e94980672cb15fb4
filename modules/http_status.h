// HTTP status codes: the one constant table of reason phrases (RFC 9110 §15), used for every
// status line luaio writes (responses and canned error responses) and exported to Lua as
// require("luaio.http").reasons[status].
#pragma once

#include <uv.h>

namespace luaio::http {

struct Status {
    int code;
    const char* reason;
};

inline constexpr Status kStatuses[] = {
    {100, "Continue"},
    {101, "Switching Protocols"},
    {103, "Early Hints"},
    {200, "OK"},
    {201, "Created"},
    {202, "Accepted"},
    {203, "Non-Authoritative Information"},
    {204, "No Content"},
    {205, "Reset Content"},
    {206, "Partial Content"},
    {300, "Multiple Choices"},
    {301, "Moved Permanently"},
    {302, "Found"},
    {303, "See Other"},
    {304, "Not Modified"},
    {307, "Temporary Redirect"},
    {308, "Permanent Redirect"},
    {400, "Bad Request"},
    {401, "Unauthorized"},
    {402, "Payment Required"},
    {403, "Forbidden"},
    {404, "Not Found"},
    {405, "Method Not Allowed"},
    {406, "Not Acceptable"},
    {407, "Proxy Authentication Required"},
    {408, "Request Timeout"},
    {409, "Conflict"},
    {410, "Gone"},
    {411, "Length Required"},
    {412, "Precondition Failed"},
    {413, "Content Too Large"},
    {414, "URI Too Long"},
    {415, "Unsupported Media Type"},
    {416, "Range Not Satisfiable"},
    {417, "Expectation Failed"},
    {421, "Misdirected Request"},
    {422, "Unprocessable Content"},
    {425, "Too Early"},
    {426, "Upgrade Required"},
    {428, "Precondition Required"},
    {429, "Too Many Requests"},
    {431, "Request Header Fields Too Large"},
    {451, "Unavailable For Legal Reasons"},
    {500, "Internal Server Error"},
    {501, "Not Implemented"},
    {502, "Bad Gateway"},
    {503, "Service Unavailable"},
    {504, "Gateway Timeout"},
    {505, "HTTP Version Not Supported"},
};

// The canned answers to a request that failed before its handler could answer: the status for
// the error that ended it (exported to Lua as require("luaio.http").canned, by error name).
struct Canned {
    int error; // a libuv error code
    const char* name;
    int status;
};

inline constexpr Canned kCanned[] = {
    {UV_E2BIG, "E2BIG", 413},         // a body over maxBodySize
    {UV_EPROTO, "EPROTO", 400},       // a malformed message
    {UV_ETIMEDOUT, "ETIMEDOUT", 408}, // too slow to send the request
};

// The reason phrase of a status; an unregistered status gets its class's name.
inline const char* reason_phrase(int status) {
    for (const Status& s : kStatuses)
        if (s.code == status) return s.reason;
    return status < 200   ? "Informational"
           : status < 300 ? "OK"
           : status < 400 ? "Redirect"
           : status < 500 ? "Client Error"
                          : "Server Error";
}

} // namespace luaio::http
