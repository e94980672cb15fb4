// luaio's incremental reader of the Redis protocol, RESP2 and RESP3 (modules/redis.cpp).
//
// Bytes go in with feed(); parse() reads the next reply and hands its values to a Builder as it
// goes, parents before their elements, so replies are built straight into the caller's values
// (Lua values in modules/redis.cpp) without a tree of its own. It is resumable: a value whose
// bytes are not all in yet is left for the next parse() (its header line is read again, an
// aggregate's elements so far stay built), so a reply may come in any number of pieces.
// Protocol errors (an unknown type, a bad length, a missing CRLF, nesting deeper than kMaxDepth,
// a bulk string or aggregate larger than the limits below) make parse() return Error with a
// message; the reader is then done (the connection must be closed).
//
// The Builder is a template parameter (no virtual calls on the hot path):
//   void begin(char type)                      a reply starts; type is its first byte (after attributes)
//   void string(char type, const char* s, size_t n, bool root)
//        type '+' simple, '$' bulk, '=' verbatim (its "txt:" prefix removed), '(' big number,
//        '-' or '!' an error reply
//   void integer(long long v)  void number(double v)  void boolean(bool v)  void null(bool root)
//   void aggregate(char type, size_t n)        '*' array, '~' set, '>' push: n elements; '%' map: n pairs
//   void add(char parent_type, size_t idx)     the value just built is element idx of the open
//                                              aggregate below it (a map's keys are the even idx)
// Attributes ('|') are read and dropped: the builder never sees them. Streamed strings and
// aggregates ("$?", "*?") are not sent by Redis and are refused.
#pragma once

#include <charconv>
#include <cstdint>
#include <cstring>
#include <string>

namespace luaio::resp {

constexpr int kMaxDepth = 32;                          // nested aggregates
constexpr size_t kMaxBulk = size_t(512) * 1024 * 1024; // Redis's own proto-max-bulk-len default
constexpr size_t kMaxLine = size_t(64) * 1024 * 1024;  // a header or simple line without its CRLF
constexpr uint64_t kMaxElements = uint64_t(1) << 28;   // elements of one aggregate (a map: pairs)

enum class Status { Reply, More, Error };

class Reader {
  public:
    void feed(const char* data, size_t len) {
        if (pos_ == buf_.size()) {
            buf_.clear();
            pos_ = 0;
        } else if (pos_ >= 16 * 1024 && pos_ * 2 >= buf_.size()) {
            buf_.erase(0, pos_);
            pos_ = 0;
        }
        buf_.append(data, len);
    }

    // True while bytes are buffered or a reply is half read.
    bool pending() const { return pos_ < buf_.size() || depth_ > 0 || skip_ > 0; }
    const std::string& error() const { return error_; }
    size_t buffered() const { return buf_.size() - pos_; }

    // Reads values until one reply is complete (Reply), the bytes run out (More) or the stream is
    // not RESP (Error, and error() says why).
    template <class Builder> Status parse(Builder& b) {
        if (!error_.empty()) return Status::Error;
        for (;;) {
            size_t avail = buf_.size() - pos_;
            if (avail == 0) return Status::More;
            const char* p = buf_.data() + pos_;
            // The header line: the type byte, then up to CRLF. A number (a length, an integer)
            // is read as it is scanned; other lines are searched for their CR.
            const char* cr = nullptr;
            long long num = 0;
            if (numeric(p[0])) {
                const char* q = p + 1;
                const char* end = p + avail;
                bool neg = q < end && *q == '-';
                if (neg) q++;
                const char* digits = q;
                unsigned long long v = 0; // 19 digits at most: no overflow
                while (q < end && q - digits < 20) {
                    unsigned d = static_cast<unsigned>(*q - '0');
                    if (d > 9) break;
                    v = v * 10 + d;
                    q++;
                }
                if (q == end) return Status::More;
                if (*q != '\r' || q == digits || q - digits > 19 ||
                    v > (neg ? 9223372036854775808ULL : 9223372036854775807ULL))
                    return fail(p[0] == ':'       ? "a bad integer"
                                : is_string(p[0]) ? "a bad length"
                                                  : "a bad aggregate length");
                num = neg ? static_cast<long long>(0 - v) : static_cast<long long>(v);
                cr = q;
            } else if (!known_type(p[0])) {
                return fail("an unknown reply type");
            } else if (avail > 1 + scanned_) {
                cr = static_cast<const char*>(std::memchr(p + 1 + scanned_, '\r', avail - 1 - scanned_));
            }
            if (!cr) {
                scanned_ = avail - 1;
                if (avail > kMaxLine) return fail("a line longer than 64 MiB");
                return Status::More;
            }
            if (static_cast<size_t>(cr + 1 - p) >= avail) {
                scanned_ = static_cast<size_t>(cr - p - 1); // the CR again next time, with its LF
                return Status::More;
            }
            if (cr[1] != '\n') return fail("a CR without LF");
            const char* line = p + 1;
            size_t n = static_cast<size_t>(cr - line);
            size_t head = n + 3; // type byte, line, CRLF
            char type = p[0];
            bool skipped = skip_ > 0;
            // A reply starts with its first value that is built (not an attribute), once the
            // value's bytes are all in.
            bool starts = !skipped && depth_ == 0;
            switch (type) {
            case '+':
            case '-':
                if (starts) b.begin(type);
                if (!skipped) b.string(type, line, n, depth_ == 0);
                break;
            case ':': {
                if (starts) b.begin(type);
                if (!skipped) b.integer(num);
                break;
            }
            case ',': {
                double v = 0;
                const char* s = line;
                // from_chars takes no '+' sign; Redis writes "inf", "-inf" and "nan".
                auto r = std::from_chars(s, s + n, v);
                if (n == 0 || r.ec != std::errc() || r.ptr != s + n) return fail("a bad double");
                if (starts) b.begin(type);
                if (!skipped) b.number(v);
                break;
            }
            case '#':
                if (n != 1 || (line[0] != 't' && line[0] != 'f')) return fail("a bad boolean");
                if (starts) b.begin(type);
                if (!skipped) b.boolean(line[0] == 't');
                break;
            case '_':
                if (n != 0) return fail("a bad null");
                if (starts) b.begin(type);
                if (!skipped) b.null(depth_ == 0);
                break;
            case '(':
                if (!big_number(line, n)) return fail("a bad big number");
                if (starts) b.begin(type);
                if (!skipped) b.string(type, line, n, depth_ == 0);
                break;
            case '$':
            case '!':
            case '=': {
                long long len = num;
                if (type == '$' && len == -1) {
                    if (starts) b.begin(type);
                    if (!skipped) b.null(depth_ == 0); // RESP2's nil bulk string
                    break;
                }
                if (len < 0) return fail("a bad length");
                if (static_cast<unsigned long long>(len) > kMaxBulk) return fail("a string longer than 512 MiB");
                size_t ulen = static_cast<size_t>(len);
                if (avail < head + ulen + 2) {
                    scanned_ = n; // the header is complete: only its body is missing
                    return Status::More;
                }
                const char* body = p + head;
                if (body[ulen] != '\r' || body[ulen + 1] != '\n') return fail("a string without its CRLF");
                if (type == '=') {
                    if (ulen < 4 || body[3] != ':') return fail("a bad verbatim string");
                    body += 4;
                    ulen -= 4;
                }
                if (starts) b.begin(type);
                if (!skipped) b.string(type == '!' ? '-' : type, body, ulen, depth_ == 0);
                head += static_cast<size_t>(len) + 2;
                break;
            }
            case '*':
            case '%':
            case '~':
            case '>':
            case '|': {
                long long count = num;
                if (type == '*' && count == -1) {
                    if (starts) b.begin(type);
                    if (!skipped) b.null(depth_ == 0); // RESP2's nil array
                    break;
                }
                if (count < 0) return fail("a bad aggregate length");
                if (static_cast<unsigned long long>(count) > kMaxElements) return fail("an aggregate too large");
                if (depth_ == kMaxDepth) return fail("replies nested deeper than 32 levels");
                uint64_t elements = static_cast<uint64_t>(count) * (type == '%' || type == '|' ? 2 : 1);
                consume(head);
                if (type == '|') {
                    skip_++;
                } else if (!skipped) {
                    if (starts) b.begin(type);
                    b.aggregate(type, static_cast<size_t>(count));
                }
                if (elements > 0) {
                    stack_[depth_++] = Frame{type, elements, 0};
                    continue;
                }
                if (type == '|') {
                    skip_--;
                    continue;
                }
                if (done(b)) return Status::Reply;
                continue;
            }
            default:
                return fail("an unknown reply type");
            }
            consume(head);
            if (done(b)) return Status::Reply;
        }
    }

  private:
    struct Frame {
        char type;
        uint64_t left; // elements still to come
        uint64_t idx;  // the next element's index
    };

    void consume(size_t n) {
        pos_ += n;
        scanned_ = 0;
    }

    Status fail(const char* what) {
        error_ = std::string("redis protocol error: ") + what;
        return Status::Error;
    }

    // A value is complete: it goes into its parent, which may complete in turn. True when the
    // reply is complete.
    template <class Builder> bool done(Builder& b) {
        for (;;) {
            if (depth_ == 0) return skip_ == 0;
            Frame& f = stack_[depth_ - 1];
            if (skip_ == 0) b.add(f.type, static_cast<size_t>(f.idx));
            f.idx++;
            if (--f.left > 0) return false;
            depth_--;
            if (f.type == '|') {
                // An attribute is no value: the one after it takes its place.
                skip_--;
                return false;
            }
            // The aggregate is complete, a value of its parent (dropped when inside an attribute).
        }
    }

    static bool known_type(char t) {
        switch (t) {
        case '$':
        case '*':
        case ':':
        case '+':
        case '-':
        case '%':
        case '~':
        case '>':
        case '|':
        case ',':
        case '#':
        case '_':
        case '(':
        case '!':
        case '=':
            return true;
        default:
            return false;
        }
    }

    // Types whose header line is a number.
    static bool numeric(char t) {
        return t == '$' || t == '*' || t == ':' || t == '%' || t == '~' || t == '>' || t == '|' || t == '!' || t == '=';
    }
    static bool is_string(char t) { return t == '$' || t == '!' || t == '='; }

    static bool big_number(const char* s, size_t n) {
        size_t i = n > 0 && s[0] == '-' ? 1 : 0;
        if (i == n) return false;
        for (; i < n; i++)
            if (s[i] < '0' || s[i] > '9') return false;
        return true;
    }

    std::string buf_;
    size_t pos_ = 0;
    size_t scanned_ = 0; // bytes of the line after the type byte already searched for its CR
    Frame stack_[kMaxDepth];
    int depth_ = 0;
    int skip_ = 0; // attributes open: their values are not built
    std::string error_;
};

} // namespace luaio::resp
