// libFuzzer driver for the WebSocket frame parser (modules/websocket_frame.h).
//
// Input: byte 0 chooses the side (bit 0: a client's parser, which refuses masks), bit 1 a small
// message limit (1 KiB), bits 2-6 the size of the reads the rest is cut into (0: all at once)
// and bit 7 whether RSV1 is allowed (permessage-deflate). The stream is parsed twice, in those reads and whole, as the
// binding does (a buffer that grows by each read, consumed bytes dropped): both must see the same events, and a parser
// must never consume more than it was given.
#include "modules/websocket_frame.h"

#include <cstdio>
#include <cstdlib>
#include <string>

namespace {

using luaio::ws::Event;

void check(bool ok, const char* what) {
    if (!ok) {
        std::fprintf(stderr, "invariant failed: %s\n", what);
        std::abort();
    }
}

std::string run(bool server, bool small, bool rsv1, const uint8_t* data, size_t size, size_t cut) {
    luaio::ws::Parser p(server);
    p.rsv1_ok = rsv1;
    if (small) p.max_message = 1024;
    std::string buf, log;
    size_t fed = 0;
    while (!p.done()) {
        if (fed < size) {
            size_t n = cut && size - fed > cut ? cut : size - fed;
            buf.append(reinterpret_cast<const char*>(data) + fed, n);
            fed += n;
        }
        size_t used = 0;
        Event e = p.feed(buf.data(), buf.size(), &used);
        check(used <= buf.size(), "used within the buffer");
        buf.erase(0, used);
        if (e.kind == Event::None) {
            if (fed == size) break;
            continue;
        }
        log += std::to_string(e.kind) + ":" + std::to_string(e.code) + ":" + std::to_string(e.text) +
               std::to_string(e.compressed) + ":" + *e.data + "|";
        if (e.kind == Event::Message && e.text && !e.compressed) {
            luaio::ws::Utf8 u;
            const uint8_t* m = reinterpret_cast<const uint8_t*>(e.data->data());
            check(u.feed(m, e.data->size()) && u.complete(), "text messages are UTF-8");
        }
        if (e.kind == Event::Close) check(e.code == 1005 || luaio::ws::valid_close_code(e.code), "close code");
    }
    return log;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size < 1) return 0;
    bool server = !(data[0] & 1), small = data[0] & 2;
    bool rsv1 = data[0] & 0x80;
    size_t cut = (data[0] >> 2) & 31;
    std::string a = run(server, small, rsv1, data + 1, size - 1, cut);
    std::string b = run(server, small, rsv1, data + 1, size - 1, 0);
    check(a == b, "reads of any size see the same events");
    return 0;
}
