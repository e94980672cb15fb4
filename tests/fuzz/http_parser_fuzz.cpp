// libFuzzer driver for the http module's message parser (modules/http_parser.h): request and
// response heads, Content-Length, chunked and close-delimited bodies, pipelined messages.
//
// Input: byte 0 chooses the message type (bit 0: responses) and how the rest of the input is
// cut into reads (bits 1-7); the rest is the byte stream of a connection. The stream is parsed
// twice, as the server glue in modules/http.cpp does (a buffer that grows by each read, heads
// parsed whole, body bytes fed as they come): once in the chosen reads, once whole. Both must
// see the same messages, heads and bodies; every span must lie inside the buffer. A difference
// or an out-of-range span aborts, so libFuzzer reports it.
#include "modules/http_parser.h"

#include <cstdio>
#include <cstdlib>
#include <string>

namespace {

using luaio::http::Parser;

void check(bool ok, const char* what) {
    if (!ok) {
        std::fprintf(stderr, "invariant failed: %s\n", what);
        std::abort();
    }
}

// A span of a head lies in the buffer, or in the rewritten copy of the head (Parser::normalize).
void check_span(const luaio::http::Span& s, const std::string& buf) {
    if (s.len == 0) return;
    const std::string& c = luaio::http::scratch_copy();
    bool in_buf = s.p >= buf.data() && s.p + s.len <= buf.data() + buf.size();
    bool in_copy = s.p >= c.data() && s.p + s.len <= c.data() + c.size();
    check(in_buf || in_copy, "span inside the buffer");
}

// Parses the stream arriving in reads of the given sizes (cycled; 0: all at once) and returns a
// transcript of what was seen: heads, body bytes, ends, errors.
std::string run(llhttp_type_t type, const uint8_t* data, size_t size, const uint8_t* cuts, size_t ncuts) {
    Parser p(type);
    std::string buf, log;
    size_t fed = 0, k = 0;
    bool in_body = false, done = false;
    while (!done) {
        bool eof = fed == size;
        if (!eof) {
            size_t n = ncuts ? 1 + cuts[k++ % ncuts] % 64 : size;
            if (n > size - fed) n = size - fed;
            buf.append(reinterpret_cast<const char*>(data) + fed, n);
            fed += n;
            eof = fed == size;
        }
        // Consume what the buffer holds, as Conn::consume does.
        for (;;) {
            size_t used = 0;
            if (!in_body) {
                Parser::Result r = p.parse_head(buf.data(), buf.size(), 4096, &used);
                check(used <= buf.size(), "head used");
                if (r == Parser::Result::NeedMore) {
                    buf.erase(0, used);
                    if (eof) done = true;
                    break;
                }
                if (r != Parser::Result::Ok) {
                    // Too large or malformed: which one may depend on how much of a long bad head
                    // has come, so both are one outcome here.
                    log += "[rejected]";
                    done = true;
                    break;
                }
                const luaio::http::Head& h = luaio::http::scratch_head();
                check_span(h.method, buf);
                check_span(h.url, buf);
                check_span(h.reason, buf);
                log += "[head " + std::to_string(type == HTTP_REQUEST ? p.method() : p.status()) + " ";
                log.append(h.method.p ? h.method.p : "", h.method.len);
                log.append(h.url.p ? h.url.p : "", h.url.len);
                for (size_t i = 0; i < h.nheaders; i++) {
                    check_span(h.names[i], buf);
                    check_span(h.values[i], buf);
                    log += "|";
                    log.append(h.names[i].p ? h.names[i].p : "", h.names[i].len);
                    log += ":";
                    log.append(h.values[i].p ? h.values[i].p : "", h.values[i].len);
                }
                log += p.keep_alive() ? " keep]" : " close]";
                // The head to read: the last head_len() bytes of what was used, or the rewritten copy.
                bool in_copy = p.head_data() == luaio::http::scratch_copy().data();
                check(in_copy ? p.head_len() == luaio::http::scratch_copy().size()
                              : p.head_len() <= used && p.head_data() == buf.data() + used - p.head_len(),
                      "head data and length");
                buf.erase(0, used);
                in_body = p.in_body();
                if (!in_body) {
                    if (!p.keep_alive()) {
                        done = true;
                        break;
                    }
                    continue;
                }
            }
            Parser::Result r = p.feed_body(buf.data(), buf.size(), &used);
            check(used <= buf.size(), "body used");
            const luaio::http::Pieces& pc = luaio::http::scratch_pieces();
            size_t total = 0;
            for (auto& s : pc.piece) {
                check(s.p >= buf.data() && s.p + s.len <= buf.data() + buf.size(), "piece inside the buffer");
                log.append(s.p, s.len);
                total += s.len;
            }
            check(total == pc.total, "pieces total");
            buf.erase(0, used);
            if (r == Parser::Result::NeedMore) {
                if (eof) {
                    Parser::Result f = p.finish();
                    log += f == Parser::Result::Ok ? "[end at eof]" : "[truncated]";
                    done = true;
                }
                break;
            }
            if (r == Parser::Result::Bad) {
                log += "[bad body]";
                done = true;
                break;
            }
            log += "[end]";
            in_body = false;
            if (!p.keep_alive()) {
                done = true;
                break;
            }
        }
    }
    return log;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size < 1) return 0;
    llhttp_type_t type = (data[0] & 1) ? HTTP_RESPONSE : HTTP_REQUEST;
    // The read sizes come from the end of the input (up to 8 bytes), so the same stream is also
    // tried in other cuts by mutations of those bytes.
    size_t ncuts = (data[0] >> 1) % 9;
    if (ncuts > size - 1) ncuts = size - 1;
    const uint8_t* stream = data + 1;
    size_t len = size - 1 - ncuts;
    const uint8_t* cuts = stream + len;
    std::string whole = run(type, stream, len, nullptr, 0);
    std::string cut = run(type, stream, len, cuts, ncuts);
    if (whole != cut) {
        std::fprintf(stderr, "whole: %s\ncut:   %s\n", whole.c_str(), cut.c_str());
        std::abort();
    }
    return 0;
}
