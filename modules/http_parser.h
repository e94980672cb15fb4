// The HTTP/1.x message parser of the http module: llhttp driven in two phases, without Lua.
//
// Head: the bytes of a head are parsed only once the whole head (through its blank line) is
// buffered, so every token is one contiguous span of the caller's buffer. The spans are
// recorded in a shared scratch table (parsing is synchronous and single-threaded) and turned
// into Lua values by the caller at once; a parser itself holds only llhttp's state, so an idle
// connection costs no buffer.
//
// Requests are held to RFC 9112 beyond what llhttp checks (as nginx does): field names are
// tokens followed at once by the colon, no obs-fold, exactly one valid Host in HTTP/1.1 (at most
// one in 1.0), a target without control bytes, no CONNECT (luaio is an origin server), and
// Transfer-Encoding only as "chunked" in HTTP/1.1. A rejected request says which status to
// answer (reject_status()): nothing after it may be processed.
//
// Body: bytes after the head are fed through llhttp (Content-Length, or until the end of the
// connection) or through ChunkedDecoder below (chunked: llhttp 8.1 rejects valid chunk
// extensions such as several of them or quoted-pairs); the pieces are spans of the buffer passed
// to feed_body(). Parsing stops at the end of each message, so pipelined messages stay in the
// caller's buffer, in order.
#pragma once

#include <llhttp.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace luaio::http {

// Limits (each configurable by the server or client that owns the parser).
constexpr size_t kDefaultMaxHeaderSize = 16 * 1024; // Node.js --max-http-header-size
constexpr size_t kMaxHeaders = 100;                 // header lines per message (nginx-like)

struct Span {
    const char* p;
    size_t len;
};

// What a parsed head consists of; valid until the next parse_head() call.
struct Head {
    Span method{nullptr, 0}; // set only for a method llhttp does not know (Parser::method() is GET)
    Span url{nullptr, 0};
    Span reason{nullptr, 0};
    size_t nheaders = 0;
    Span names[kMaxHeaders];
    Span values[kMaxHeaders];
    bool too_many = false;
};

// Body pieces of the last feed_body() call (spans of its buffer).
struct Pieces {
    std::vector<Span> piece;
    size_t total = 0;
};

inline Head& scratch_head() {
    static Head h;
    return h;
}

// A head rewritten into a form llhttp takes (see Parser::normalize); spans may point into it.
inline std::string& scratch_copy() {
    static std::string s;
    return s;
}

inline Pieces& scratch_pieces() {
    static Pieces p;
    return p;
}

// Returns the length of the head at the start of data (through the empty line that ends it),
// or 0 while it is incomplete. Lines may end in CRLF or LF.
inline size_t find_head_end(const char* data, size_t len) {
    const char* p = data;
    const char* end = data + len;
    while (p < end) {
        const char* nl = static_cast<const char*>(std::memchr(p, '\n', static_cast<size_t>(end - p)));
        if (!nl) return 0;
        const char* q = nl + 1;
        if (q < end && *q == '\n') return static_cast<size_t>(q + 1 - data);
        if (q + 1 < end && q[0] == '\r' && q[1] == '\n') return static_cast<size_t>(q + 2 - data);
        p = q;
    }
    return 0;
}

// Byte classes, made at compile time (no guard on each use): token bytes (RFC 9110 5.6.2
// tchar), and the bytes of a Host value that need a look (see valid_host).
struct ByteClasses {
    bool tchar[256] = {};
    // 0 for the bytes of a host name that need no look; the others are bad or need one.
    uint8_t host[256] = {};
    constexpr ByteClasses() {
        for (int b = '0'; b <= '9'; b++) tchar[b] = true;
        for (int b = 'a'; b <= 'z'; b++) tchar[b] = tchar[b - 32] = true;
        const char* t = "!#$%&'*+-.^_`|~";
        for (int i = 0; t[i]; i++) tchar[static_cast<unsigned char>(t[i])] = true;
        for (int b = 0; b <= 0x20; b++) host[b] = 1;
        host[0x7f] = host[0x2f] = 1; // DEL, '/'
        const char* look = ".:[]";
        for (int i = 0; look[i]; i++) host[static_cast<unsigned char>(look[i])] = 2;
    }
};

inline constexpr ByteClasses kByteClasses{};

inline bool is_tchar(unsigned char c) {
    return kByteClasses.tchar[c];
}

inline bool span_iequals(const Span& s, const char* lower) {
    size_t n = std::strlen(lower);
    if (s.len != n) return false;
    for (size_t i = 0; i < n; i++) {
        char c = s.p[i];
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
        if (c != lower[i]) return false;
    }
    return true;
}

// A Host value as nginx accepts it (ngx_http_validate_host): no empty name, no "..", no path
// separator, no control bytes, spaces or NUL; a port or an IPv6 literal may follow.
inline bool valid_host(const Span& h) {
    size_t host_len = h.len, dot = h.len + 1;
    bool literal = false, rest = false;
    for (size_t i = 0; i < h.len; i++) {
        unsigned char c = static_cast<unsigned char>(h.p[i]);
        uint8_t cls = kByteClasses.host[c];
        if (cls == 0) continue; // most bytes of a host name
        if (cls == 1) return false;
        switch (c) {
        case '.':
            if (dot + 1 == i) return false;
            dot = i;
            break;
        case ':':
            if (!literal && !rest) {
                host_len = i;
                rest = true;
            }
            break;
        case '[':
            if (i == 0) literal = true;
            break;
        case ']':
            if (literal && !rest) {
                host_len = i + 1;
                rest = true;
                literal = false;
            }
            break;
        }
    }
    if (host_len > 0 && dot + 1 == host_len) host_len--; // a trailing dot names the same host
    return host_len > 0;
}

// valid_host, remembering the last valid value: a server's requests nearly all name the same
// host, which then costs one comparison instead of a look at each byte.
inline bool valid_host_cached(const Span& h) {
    static char last[64];
    static size_t last_len = 0;
    if (h.len == last_len && std::memcmp(h.p, last, h.len) == 0) return true;
    if (!valid_host(h)) return false;
    if (h.len <= sizeof last) {
        std::memcpy(last, h.p, h.len);
        last_len = h.len;
    }
    return true;
}

// The chunked transfer coding (RFC 9112 7.1), as nginx reads it: a hex size (at most 2^60),
// then an optional extension that starts with ";" (or BWS) and runs to the end of the line,
// CRLF (or a bare LF), the data, CRLF after the data, and after the last chunk a trailer
// section of bounded size, ignored.
class ChunkedDecoder {
  public:
    enum class Step { More, Done, Bad };

    void reset() {
        state_ = State::Size;
        digits_ = 0;
        left_ = 0;
        trailer_ = 0;
        line_empty_ = true;
        error_ = nullptr;
    }

    // Decodes data[0, len): the pieces of data go to pieces; *used is the bytes consumed (all of
    // them unless the body ended: the rest belongs to the next message).
    Step feed(const char* data, size_t len, Pieces& pieces, size_t* used) {
        size_t i = 0;
        while (i < len) {
            char c = data[i];
            switch (state_) {
            case State::Size: {
                int v = hex(c);
                if (v >= 0) {
                    if (++digits_ > 15) return bad("chunk size too large");
                    left_ = left_ * 16 + static_cast<uint64_t>(v);
                } else if (digits_ == 0) {
                    return bad("invalid chunk size");
                } else if (c == ';' || c == ' ' || c == '\t') {
                    state_ = State::Ext;
                } else if (c == '\r') {
                    state_ = State::SizeLf;
                } else if (c == '\n') {
                    end_size_line();
                } else {
                    return bad("invalid chunk size");
                }
                i++;
                break;
            }
            case State::Ext:
                if (c == '\r')
                    state_ = State::SizeLf;
                else if (c == '\n')
                    end_size_line();
                else if (++trailer_ > kMaxLine)
                    return bad("chunk extension too long");
                i++;
                break;
            case State::SizeLf:
                if (c != '\n') return bad("CR without LF after the chunk size");
                end_size_line();
                i++;
                break;
            case State::Data: {
                size_t n = len - i;
                if (n > left_) n = static_cast<size_t>(left_);
                pieces.piece.push_back(Span{data + i, n});
                pieces.total += n;
                left_ -= n;
                i += n;
                if (left_ == 0) state_ = State::DataCr;
                break;
            }
            case State::DataCr:
                if (c == '\r')
                    state_ = State::DataLf;
                else if (c == '\n')
                    start_size();
                else
                    return bad("chunk data not followed by CRLF");
                i++;
                break;
            case State::DataLf:
                if (c != '\n') return bad("chunk data not followed by CRLF");
                start_size();
                i++;
                break;
            case State::Trailer:
                // Trailer fields are skipped (bounded): the body ends at the first empty line.
                if (c == '\n') {
                    if (line_empty_) {
                        *used = i + 1;
                        state_ = State::Done;
                        return Step::Done;
                    }
                    line_empty_ = true;
                } else if (c == '\r') {
                    state_ = State::TrailerLf;
                } else {
                    line_empty_ = false;
                }
                if (++trailer_ > kMaxTrailer) return bad("trailer section too large");
                i++;
                break;
            case State::TrailerLf:
                if (c != '\n') return bad("CR without LF in the trailer section");
                state_ = State::Trailer;
                break; // the LF is handled as an end of line by State::Trailer
            case State::Done:
                *used = i;
                return Step::Done;
            }
        }
        *used = len;
        return Step::More;
    }

    // Bytes still announced by the current chunk's size (for an early size check).
    uint64_t pending() const { return state_ == State::Data ? left_ : 0; }
    const char* error() const { return error_; }

  private:
    enum class State : uint8_t { Size, Ext, SizeLf, Data, DataCr, DataLf, Trailer, TrailerLf, Done };
    static constexpr size_t kMaxLine = 4096;
    static constexpr size_t kMaxTrailer = kDefaultMaxHeaderSize;

    static int hex(char c) {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        return -1;
    }

    void start_size() {
        state_ = State::Size;
        digits_ = 0;
        left_ = 0;
        trailer_ = 0;
    }

    void end_size_line() {
        trailer_ = 0;
        if (left_ == 0) {
            state_ = State::Trailer;
            line_empty_ = true;
        } else {
            state_ = State::Data;
        }
    }

    Step bad(const char* why) {
        error_ = why;
        return Step::Bad;
    }

    State state_ = State::Size;
    int digits_ = 0;
    uint64_t left_ = 0;
    size_t trailer_ = 0;
    bool line_empty_ = true;
    const char* error_ = nullptr;
};

class Parser {
  public:
    enum class Result {
        Ok,       // a head was parsed, or a message's body ended
        NeedMore, // more bytes are needed
        TooLarge, // the head is larger than the limit or has too many lines (431)
        Bad,      // malformed (400); error() says why
    };

    explicit Parser(llhttp_type_t type) { init(type); }

    void init(llhttp_type_t type) {
        llhttp_init(&p_, type, &settings());
        p_.data = this;
        lenient_values();
        in_body_ = false;
        chunked_body_ = false;
    }

    // Parses the head at the start of data[0, len). Leading empty lines (allowed between
    // pipelined requests) are skipped. On Ok, *used is the number of bytes of the head and the
    // spans are in scratch_head(); on NeedMore, *used is the number of skipped empty-line bytes.
    Result parse_head(const char* data, size_t len, size_t max_size, size_t* used) {
        size_t skip = 0;
        while (skip < len && (data[skip] == '\r' || data[skip] == '\n')) skip++;
        *used = skip;
        data += skip;
        len -= skip;
        size_t head_len = find_head_end(data, len);
        if (head_len == 0 && len > max_size) return Result::TooLarge;
        if (head_len > max_size) return Result::TooLarge;
        // A CR that is not part of a CRLF is malformed wherever it is. In a whole head llhttp
        // refuses it except before a value (see on_header_value, check_empty_values) or as an
        // early end of the head (the desync guard below); a partial head is scanned, so that a
        // client using bare CRs is answered rather than left waiting for a head end.
        // (A response's status line may hold one for llhttp: a response head is scanned whole.)
        if (head_len == 0 || p_.type == HTTP_RESPONSE) {
            if (!bare_cr(data, head_len ? head_len : len)) {
                if (head_len == 0) return Result::NeedMore;
            } else {
                reject_ = 400;
                error_ = "CR without LF";
                return Result::Bad;
            }
        }
        Head& h = scratch_head();
        llhttp_errno_t err = execute_head(data, head_len);
        if (err != HPE_OK && err != HPE_PAUSED && !h.too_many && normalize(data, head_len, err)) {
            // A valid head in a form llhttp refuses: parse the rewritten copy instead.
            Span method = h.method;
            llhttp_init(&p_, static_cast<llhttp_type_t>(p_.type), &settings());
            p_.data = this;
            lenient_values();
            const std::string& copy = scratch_copy();
            err = execute_head(copy.data(), copy.size());
            h.method = method;
        }
        if (h.too_many) return Result::TooLarge;
        if (err == HPE_PAUSED && llhttp_get_error_pos(&p_) != src_ + src_len_) {
            // llhttp saw the end of the head before find_head_end did: the two would disagree on
            // where the next message starts, so the head is refused (a desync guard).
            error_ = "head ends before its blank line";
            reject_ = 400;
            return Result::Bad;
        }
        if (err == HPE_PAUSED) {
            llhttp_resume(&p_);
        } else if (err != HPE_OK) {
            error_ = llhttp_get_error_reason(&p_);
            if (!error_) error_ = llhttp_errno_name(err);
            if (err == HPE_INVALID_VERSION && p_.type == HTTP_REQUEST && version_major(src_, src_len_) > 1)
                reject_ = 505;
            // nginx answers any transfer coding but chunked (alone) with 501.
            // (two Transfer-Encoding fields are a 400, as nginx does).
            if (err == HPE_INVALID_TRANSFER_ENCODING && p_.type == HTTP_REQUEST) {
                size_t te = 0;
                for (size_t i = 0; i < h.nheaders; i++) te += span_iequals(h.names[i], "transfer-encoding");
                reject_ = te > 1 ? 400 : 501;
            }
            return Result::Bad;
        }
        if (!headers_done_) {
            error_ = "incomplete head";
            return Result::Bad;
        }
        for (size_t i = 0; i < h.nheaders; i++) trim_right(h.values[i]);
        head_len_ = src_len_; // of head_data(): the caller's bytes or the rewritten copy
        *used = skip + head_len;
        in_body_ = !message_done_ || chunked_body_;
        if (chunked_body_) chunks_.reset();
        return Result::Ok;
    }

    // Feeds body bytes of the current message. The pieces of body data are in scratch_pieces().
    // *used is the number of bytes consumed (the rest belongs to the next message). Returns Ok
    // when the message ended, NeedMore when it goes on, Bad on malformed framing.
    Result feed_body(const char* data, size_t len, size_t* used) {
        Pieces& pc = scratch_pieces();
        pc.piece.clear();
        pc.total = 0;
        *used = 0;
        if (!in_body_) return Result::Ok;
        if (len == 0) return Result::NeedMore;
        if (chunked_body_) {
            ChunkedDecoder::Step st = chunks_.feed(data, len, pc, used);
            if (st == ChunkedDecoder::Step::More) return Result::NeedMore;
            if (st == ChunkedDecoder::Step::Bad) {
                error_ = chunks_.error();
                return Result::Bad;
            }
            in_body_ = false;
            return Result::Ok;
        }
        message_done_ = false;
        llhttp_errno_t err = llhttp_execute(&p_, data, len);
        if (err == HPE_OK) {
            *used = len;
            return Result::NeedMore;
        }
        if (err == HPE_PAUSED) {
            *used = static_cast<size_t>(llhttp_get_error_pos(&p_) - data);
            llhttp_resume(&p_);
            in_body_ = false;
            return Result::Ok;
        }
        error_ = llhttp_get_error_reason(&p_);
        if (!error_) error_ = llhttp_errno_name(err);
        return Result::Bad;
    }

    // The peer closed its side: a body that lasts until the end of the connection (a response
    // without length) ends here; any other unfinished body is truncated (Bad).
    Result finish() {
        if (!in_body_) return Result::Ok;
        if (chunked_body_) {
            error_ = "connection closed before the end of the body";
            return Result::Bad;
        }
        message_done_ = false;
        llhttp_errno_t err = llhttp_finish(&p_);
        if ((err == HPE_OK || err == HPE_PAUSED) && message_done_) {
            in_body_ = false;
            return Result::Ok;
        }
        error_ = "connection closed before the end of the body";
        return Result::Bad;
    }

    // A response to HEAD (or to a request answered 1xx/204/304) has no body: set before parse_head.
    void set_skip_body(bool skip) { skip_body_ = skip; }

    bool in_body() const { return in_body_; }
    // The length of the last head parsed (it ends at *used; leading empty lines are not part of it).
    size_t head_len() const { return head_len_; }
    // The head parsed last: in the caller's buffer, or the rewritten copy when it was normalized
    // (its length is then the copy's, so the buffer must not be read by head_len()).
    const char* head_data() const { return src_; }
    bool keep_alive() const { return llhttp_should_keep_alive(&p_) != 0; }
    bool chunked() const { return (p_.flags & F_CHUNKED) != 0; }
    bool has_length() const { return (p_.flags & F_CONTENT_LENGTH) != 0; }
    uint64_t content_length() const { return has_length() ? p_.content_length : 0; }
    // Body bytes announced but not yet fed (the rest of the current chunk or of the length).
    uint64_t pending() const {
        if (!in_body_) return 0;
        return chunked_body_ ? chunks_.pending() : has_length() ? p_.content_length : 0;
    }
    // The status a rejected request (Bad) is answered with: 400, 405 (TRACE), 501 (a transfer
    // coding other than chunked) or 505 (not HTTP/1.x); 0 for none (an HTTP/0.9 request).
    int reject_status() const { return reject_; }
    bool upgrade() const { return p_.upgrade != 0; }
    int method() const { return p_.method; }
    int status() const { return p_.status_code; }
    int major() const { return p_.http_major; }
    int minor() const { return p_.http_minor; }
    const char* error() const { return error_; }

  private:
    enum class Last : uint8_t { None, Field, Value };

    static Parser* self(llhttp_t* p) { return static_cast<Parser*>(p->data); }

    // The major version of the request line at data when it ends in " HTTP/<digit>.<digit>",
    // else -1 (no version: an HTTP/0.9 request). llhttp rejects majors above 1 as malformed;
    // they are well-formed but not supported (505).
    static int version_major(const char* data, size_t len) {
        const char* nl = static_cast<const char*>(std::memchr(data, '\n', len));
        if (!nl) return -1;
        const char* e = nl;
        if (e > data && e[-1] == '\r') e--;
        if (e - data < 9) return -1;
        const char* v = e - 9;
        bool ok = v[0] == ' ' && std::memcmp(v + 1, "HTTP/", 5) == 0 && v[6] >= '0' && v[6] <= '9' && v[7] == '.' &&
                  v[8] >= '0' && v[8] <= '9';
        return ok ? v[6] - '0' : -1;
    }

    // A request's field values may hold control bytes other than NUL, as nginx takes them (RFC
    // 9110 5.5 asks only CR, LF and NUL to be refused): llhttp's lenient value parsing, with NUL
    // refused by check_request and a bare CR by parse_head. A response's values stay strict.
    void lenient_values() {
        if (p_.type == HTTP_REQUEST) llhttp_set_lenient_headers(&p_, 1);
    }

    // Resets the per-head state and runs llhttp over a whole head.
    llhttp_errno_t execute_head(const char* data, size_t len) {
        Head& h = scratch_head();
        h.method = h.url = h.reason = Span{nullptr, 0};
        h.nheaders = 0;
        h.too_many = false;
        last_ = Last::None;
        message_done_ = false;
        headers_done_ = false;
        folded_ = false;
        bare_cr_ = false;
        chunked_body_ = false;
        reject_ = 400;
        src_ = data;
        src_len_ = len;
        return llhttp_execute(&p_, data, len);
    }

    // llhttp 8.1 refuses forms that RFC 9112 allows and nginx takes: lines ending in a bare LF
    // (2.2; a response's, a request's pass lenient value parsing), an HTTP/1.x request with a
    // minor version above 1 (2.3: served as 1.1) or whitespace after its version, and a method
    // it does not know (nginx: [A-Z_-]+; the request gets its own method name and llhttp
    // parses it as a GET). After a failed parse, writes the head in the form llhttp takes into
    // scratch_copy() and returns whether that changed anything (else the error stands). Valid
    // heads never come here, so they cost nothing.
    bool normalize(const char* data, size_t len, llhttp_errno_t err) {
        // A bare CR is a 400 whatever else is wrong (and must not vanish with a dropped line).
        if (bare_cr(data, len)) return false;
        std::string& c = scratch_copy();
        c.clear();
        size_t from = 0;
        bool changed = false;
        if (p_.type == HTTP_REQUEST) {
            const char* nl = static_cast<const char*>(std::memchr(data, '\n', len));
            if (!nl) return false;
            size_t line = static_cast<size_t>(nl - data);
            if (line > 0 && data[line - 1] == '\r') line--;
            size_t m = 0;
            while (m < line && ((data[m] >= 'A' && data[m] <= 'Z') || data[m] == '_' || data[m] == '-')) m++;
            if (err == HPE_INVALID_METHOD && m > 0 && m <= 32 && m < line && data[m] == ' ') {
                scratch_head().method = Span{data, m};
                c.append("GET");
                from = m;
                changed = true;
            }
            // Whitespace after the version (nginx takes it) goes; a minor above 1 becomes 1.
            size_t trimmed = line;
            while (trimmed > from && (data[trimmed - 1] == ' ' || data[trimmed - 1] == '\t')) trimmed--;
            bool newer = trimmed >= 9 && std::memcmp(data + trimmed - 9, " HTTP/1.", 8) == 0 &&
                         data[trimmed - 1] >= '2' && data[trimmed - 1] <= '9';
            if (trimmed < line || newer) {
                c.append(data + from, trimmed - from);
                if (newer) c.back() = '1';
                from = line;
                changed = true;
            }
        }
        // Line by line from the rest of the first line: CRLF for a bare LF; in a request, field
        // lines as nginx takes them (see field_line).
        for (size_t i = from, n = 0; i < len; n++) {
            const char* nl = static_cast<const char*>(std::memchr(data + i, '\n', len - i));
            size_t end = nl ? static_cast<size_t>(nl - data) : len;
            size_t stop = end > i && data[end - 1] == '\r' ? end - 1 : end;
            Field f = n > 0 && p_.type == HTTP_REQUEST ? field_line(data + i, stop - i) : Field::Keep;
            if (f == Field::Drop) {
                changed = true;
            } else {
                c.append(data + i, stop - i);
                if (f == Field::AddColon) {
                    c.push_back(':');
                    changed = true;
                }
                if (nl) c.append("\r\n", 2);
                if (nl && stop == end) changed = true;
            }
            i = end + 1;
        }
        return changed;
    }

    enum class Field { Keep, Drop, AddColon };

    // nginx's reading of a field line (ignore_invalid_headers on): a name with a byte that is not
    // a token byte (but no control byte or space, which are a 400) is ignored, and a line without
    // a colon is a field with an empty value. The rest is left for llhttp to judge.
    static Field field_line(const char* p, size_t n) {
        if (n == 0 || p[0] == ' ' || p[0] == '\t') return Field::Keep;
        const char* colon = static_cast<const char*>(std::memchr(p, ':', n));
        size_t name = colon ? static_cast<size_t>(colon - p) : n;
        bool token = true;
        for (size_t k = 0; k < name; k++) {
            unsigned char b = static_cast<unsigned char>(p[k]);
            if (b <= 0x20 || b == 0x7f) return Field::Keep;
            if (!is_tchar(b)) token = false;
        }
        if (name == 0) return Field::Keep;
        if (!token) return Field::Drop;
        return colon ? Field::Keep : Field::AddColon;
    }

    // Whether the bytes from the colon after name up to at are SP or HTAB only.
    static bool only_blanks_after_colon(const Span& name, const char* at) {
        for (const char* q = name.p + name.len + 1; q < at; q++)
            if (*q != ' ' && *q != '\t') return false;
        return true;
    }

    // A field with an empty value has no value callback: its line, after the colon, is blanks
    // and the line end only.
    bool empty_values_clean() const {
        const Head& h = scratch_head();
        const char* end = src_ + src_len_;
        for (size_t i = 0; i < h.nheaders; i++) {
            if (h.values[i].len) continue;
            const char* q = h.names[i].p + h.names[i].len + 1;
            while (q < end && (*q == ' ' || *q == '\t')) q++;
            if (q < end && *q == '\r') q++;
            if (q >= end || *q != '\n') return false;
        }
        return true;
    }

    static bool bare_cr(const char* p, size_t n) {
        if (n == 0) return false; // p may be null (a client's read with nothing buffered yet)
        const char* end = p + n;
        for (const char* cr = static_cast<const char*>(std::memchr(p, '\r', n)); cr && cr + 1 < end;
             cr = static_cast<const char*>(std::memchr(cr + 1, '\r', static_cast<size_t>(end - cr - 1))))
            if (cr[1] != '\n') return true;
        return false;
    }

    static void trim_right(Span& s) {
        while (s.len > 0 && (s.p[s.len - 1] == ' ' || s.p[s.len - 1] == '\t')) s.len--;
    }

    static void extend(Span& s, const char* at, size_t len) {
        if (!s.p) {
            s = Span{at, len};
        } else if (s.p + s.len == at) {
            s.len += len;
        }
    }

    static int on_url(llhttp_t* p, const char* at, size_t len) {
        extend(scratch_head().url, at, len);
        (void)p;
        return 0;
    }

    static int on_status(llhttp_t* p, const char* at, size_t len) {
        extend(scratch_head().reason, at, len);
        (void)p;
        return 0;
    }

    static int on_header_field(llhttp_t* p, const char* at, size_t len) {
        Parser* self_ = self(p);
        Head& h = scratch_head();
        if (self_->last_ == Last::Field) {
            extend(h.names[h.nheaders - 1], at, len);
            return 0;
        }
        if (h.nheaders == kMaxHeaders) {
            h.too_many = true;
            return HPE_USER;
        }
        // A field line starts right after a LF: a name after whitespace is a folded line or a
        // first field line that starts with whitespace (RFC 9112 2.2, 5.2), which llhttp's
        // lenient value parsing lets through.
        if (at[-1] != '\n') self_->folded_ = true;
        h.names[h.nheaders] = Span{at, len};
        h.values[h.nheaders] = Span{nullptr, 0};
        h.nheaders++;
        self_->last_ = Last::Field;
        return 0;
    }

    static int on_header_value(llhttp_t* p, const char* at, size_t len) {
        Parser* self_ = self(p);
        Head& h = scratch_head();
        if (h.nheaders == 0) return 0;
        Span& v = h.values[h.nheaders - 1];
        // A value in two pieces: llhttp joined an obs-fold continuation line (RFC 9112 5.2).
        if (v.p && v.p + v.len != at) self_->folded_ = true;
        // Only SP and HTAB may come between the colon and the value: llhttp skips a CR there.
        // (An empty value is checked by empty_values_clean: llhttp may give it a span anywhere.)
        if (!v.p && len > 0 && !only_blanks_after_colon(h.names[h.nheaders - 1], at)) self_->bare_cr_ = true;
        extend(v, at, len);
        self_->last_ = Last::Value;
        return 0;
    }

    int reject(int status, const char* why) {
        reject_ = status;
        llhttp_set_error_reason(&p_, why);
        return HPE_USER;
    }

    // What llhttp lets through and RFC 9112 (and nginx) does not, checked once the head is in.
    int check_request() {
        Head& h = scratch_head();
        if (p_.http_major != 1) {
            if (p_.http_major > 1) return reject(505, "HTTP version not supported");
            // A request line without a version (HTTP/0.9) cannot be answered with a status line.
            return reject(version_major(src_, src_len_) < 0 ? 0 : 400, "HTTP/0.9 request");
        }
        // origin-form or absolute-form only: "*" (OPTIONS) and authority-form (CONNECT) are
        // refused as nginx does.
        if (h.url.len == 0 || (h.url.p[0] != '/' && !std::memchr(h.url.p, ':', h.url.len)))
            return reject(400, "invalid request target");
        // Of the control bytes llhttp's loose URL parsing lets only HTAB and FF through.
        if (std::memchr(h.url.p, '\t', h.url.len) || std::memchr(h.url.p, '\f', h.url.len))
            return reject(400, "invalid character in the request target");
        if (p_.method == HTTP_CONNECT) return reject(400, "CONNECT to an origin server");
        if (folded_) return reject(400, "obsolete line folding");
        // NUL is nowhere in a head (llhttp's lenient value parsing would let it into a value).
        if (std::memchr(src_, '\0', src_len_)) return reject(400, "NUL in the head");
        size_t hosts = 0, te = 0;
        const Span* host = nullptr;
        const Span* coding = nullptr;
        for (size_t i = 0; i < h.nheaders; i++) {
            const Span& n = h.names[i];
            if (n.len == 0) return reject(400, "empty field name");
            // llhttp lets a space into a name (before the colon or inside it), no other non-token
            // byte (those lines are dropped by normalize, as nginx ignores them).
            for (size_t k = 0; k < n.len; k++)
                if (n.p[k] == ' ') return reject(400, "whitespace in a field name");
            if (span_iequals(n, "host")) {
                hosts++;
                host = &h.values[i];
            } else if (span_iequals(n, "transfer-encoding")) {
                te++;
                coding = &h.values[i];
            }
        }
        if (hosts > 1) return reject(400, "more than one Host");
        if (host) {
            Span v = *host;
            trim_right(v);
            if (!v.p || !valid_host_cached(v)) return reject(400, "invalid Host");
        } else if (p_.http_minor >= 1) {
            return reject(400, "no Host in an HTTP/1.1 request");
        }
        if (te > 1) return reject(400, "more than one Transfer-Encoding");
        if (coding) {
            if (p_.http_minor == 0) return reject(400, "Transfer-Encoding in an HTTP/1.0 request");
            Span v = *coding;
            trim_right(v);
            if (!v.p || !span_iequals(v, "chunked")) return reject(501, "transfer coding not implemented");
        }
        if (p_.method == HTTP_TRACE) return reject(405, "TRACE not allowed");
        return 0;
    }

    static int on_headers_complete(llhttp_t* p) {
        Parser* s = self(p);
        s->headers_done_ = true;
        if (s->bare_cr_ || !s->empty_values_clean()) return s->reject(400, "CR without LF");
        if (p->type == HTTP_REQUEST) {
            if (int err = s->check_request()) return err;
        }
        if (s->skip_body_) return 1;
        // A chunked body is decoded by ChunkedDecoder: llhttp ends the message at its head.
        if ((p->flags & F_CHUNKED) && !(p->flags & F_CONTENT_LENGTH)) {
            s->chunked_body_ = true;
            return 1;
        }
        return 0;
    }

    static int on_body(llhttp_t* p, const char* at, size_t len) {
        // Body bytes inside a head: llhttp ended the head early (see parse_head's desync guard).
        if (!self(p)->in_body_) {
            llhttp_set_error_reason(p, "head ends before its blank line");
            return HPE_USER;
        }
        Pieces& pc = scratch_pieces();
        pc.piece.push_back(Span{at, len});
        pc.total += len;
        return 0;
    }

    static int on_message_complete(llhttp_t* p) {
        self(p)->message_done_ = true;
        return HPE_PAUSED;
    }

    static const llhttp_settings_t& settings() {
        static const llhttp_settings_t s = [] {
            llhttp_settings_t s;
            llhttp_settings_init(&s);
            s.on_url = on_url;
            s.on_status = on_status;
            s.on_header_field = on_header_field;
            s.on_header_value = on_header_value;
            s.on_headers_complete = on_headers_complete;
            s.on_body = on_body;
            s.on_message_complete = on_message_complete;
            return s;
        }();
        return s;
    }

    llhttp_t p_;
    ChunkedDecoder chunks_;
    const char* src_ = nullptr; // the bytes llhttp parses: the head or its rewritten copy
    size_t src_len_ = 0;
    const char* error_ = nullptr;
    int reject_ = 400;
    size_t head_len_ = 0;
    Last last_ = Last::None;
    bool message_done_ = false;
    bool headers_done_ = false;
    bool in_body_ = false;
    bool skip_body_ = false;
    bool folded_ = false;
    bool bare_cr_ = false;
    bool chunked_body_ = false;
};

} // namespace luaio::http
