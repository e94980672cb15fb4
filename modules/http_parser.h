// The HTTP/1.x message parser of the http module: llhttp driven in two phases, without Lua.
//
// Head: the bytes of a head are parsed only once the whole head (through its blank line) is
// buffered, so every token is one contiguous span of the caller's buffer. The spans are
// recorded in a shared scratch table (parsing is synchronous and single-threaded) and turned
// into Lua values by the caller at once; a parser itself holds only llhttp's state, so an idle
// connection costs no buffer.
//
// Body: bytes after the head are fed through llhttp, which removes the chunked framing; the
// pieces are spans of the buffer passed to feed_body(). Parsing stops at the end of each
// message (llhttp pauses in on_message_complete), so pipelined messages stay in the caller's
// buffer, in order.
#pragma once

#include <llhttp.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
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
        in_body_ = false;
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
        if (head_len == 0) return len > max_size ? Result::TooLarge : Result::NeedMore;
        if (head_len > max_size) return Result::TooLarge;
        Head& h = scratch_head();
        h.url = h.reason = Span{nullptr, 0};
        h.nheaders = 0;
        h.too_many = false;
        last_ = Last::None;
        message_done_ = false;
        headers_done_ = false;
        llhttp_errno_t err = llhttp_execute(&p_, data, head_len);
        if (h.too_many) return Result::TooLarge;
        if (err == HPE_PAUSED) {
            llhttp_resume(&p_);
        } else if (err != HPE_OK) {
            error_ = llhttp_get_error_reason(&p_);
            if (!error_) error_ = llhttp_errno_name(err);
            return Result::Bad;
        }
        if (!headers_done_) {
            error_ = "incomplete head";
            return Result::Bad;
        }
        for (size_t i = 0; i < h.nheaders; i++) trim_right(h.values[i]);
        head_len_ = head_len;
        *used = skip + head_len;
        in_body_ = !message_done_;
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
    bool keep_alive() const { return llhttp_should_keep_alive(&p_) != 0; }
    bool chunked() const { return (p_.flags & F_CHUNKED) != 0; }
    bool has_length() const { return (p_.flags & F_CONTENT_LENGTH) != 0; }
    uint64_t content_length() const { return has_length() ? p_.content_length : 0; }
    bool upgrade() const { return p_.upgrade != 0; }
    int method() const { return p_.method; }
    int status() const { return p_.status_code; }
    int major() const { return p_.http_major; }
    int minor() const { return p_.http_minor; }
    const char* error() const { return error_; }

  private:
    enum class Last : uint8_t { None, Field, Value };

    static Parser* self(llhttp_t* p) { return static_cast<Parser*>(p->data); }

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
        extend(h.values[h.nheaders - 1], at, len);
        self_->last_ = Last::Value;
        return 0;
    }

    static int on_headers_complete(llhttp_t* p) {
        Parser* s = self(p);
        s->headers_done_ = true;
        if (s->skip_body_) return 1;
        return 0;
    }

    static int on_body(llhttp_t* p, const char* at, size_t len) {
        (void)p;
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
    const char* error_ = nullptr;
    size_t head_len_ = 0;
    Last last_ = Last::None;
    bool message_done_ = false;
    bool headers_done_ = false;
    bool in_body_ = false;
    bool skip_body_ = false;
};

} // namespace luaio::http
