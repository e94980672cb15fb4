// The log module's sink seen from C++ (modules/log.cpp): lines that another module makes itself
// go to the same bounded queue as log.info's, without Lua. The http server's access log
// (modules/http.cpp) formats its line here when a response ends.
#pragma once

#include <cstdint>
#include <string_view>

namespace luaio::log {

enum class AccessFormat : uint8_t { Off, Combined, Json };

// What an access log line says about one request and its response. An empty referer or user
// agent is shown as "-" (combined) or left out (JSON). A head that could not be parsed (luaio
// answered 400, 431 or 408 itself) has no method: its line shows `request`, the request line as
// it came (or "-"), in place of method, target and version (JSON: "request" for method, path).
struct AccessEntry {
    std::string_view peer, method, target, referer, user_agent, request;
    int major = 1, minor = 1, status = 0;
    uint64_t bytes = 0;  // body bytes sent
    uint64_t micros = 0; // from the request's head to the end of its response
};

// Queues the line of `e` in `format` (nginx's combined format, or a JSON object); a full queue
// drops it and counts it, as for every line.
void access(AccessFormat format, const AccessEntry& e);

} // namespace luaio::log
