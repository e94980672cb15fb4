// WebSocket frames (RFC 6455 section 5), without Lua: an incremental parser that reassembles
// whole messages and judges every protocol rule, and the encoder of frame heads.
//
// The parser is fed the bytes a stream has buffered; it consumes what it can (payload bytes as
// they come, so a large frame is not buffered twice) and returns an Event once a message, a
// control frame or a violation is complete. A violation carries the close code to send (1002
// protocol error, 1007 invalid UTF-8, 1009 too big); after it, or after a close frame, the
// parser takes no more bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace luaio::ws {

enum Opcode : uint8_t { kCont = 0x0, kText = 0x1, kBinary = 0x2, kClose = 0x8, kPing = 0x9, kPong = 0xA };

constexpr uint32_t kDefaultMaxMessage = 16 * 1024 * 1024; // the ws library's 100 MiB is too generous
constexpr size_t kMaxControl = 125;                       // a control frame's payload (5.5)
constexpr size_t kMaxHead = 14;                           // 2 + 8 (64-bit length) + 4 (mask)

// Incremental UTF-8 validation (RFC 3629: no overlongs, no surrogates, nothing past U+10FFFF),
// so a text message is judged across its fragments as the bytes come.
class Utf8 {
  public:
    // False at the first byte that cannot be part of valid UTF-8.
    bool feed(const uint8_t* p, size_t n);
    // True when no sequence is left unfinished.
    bool complete() const { return need_ == 0; }
    void reset() { need_ = 0; }

  private:
    uint8_t need_ = 0; // continuation bytes still expected
    uint8_t lo_ = 0x80, hi_ = 0xBF;
};

// Whether a close code may be sent on the wire (7.4): 1000-1003, 1007-1011, 3000-4999.
inline bool valid_close_code(unsigned code) {
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1011) || (code >= 3000 && code <= 4999);
}

struct Event {
    enum Kind : uint8_t { None, Message, Ping, Pong, Close, Error } kind = None;
    bool text = false;       // Message: a text message (else binary)
    bool compressed = false; // Message: its first frame had RSV1 (permessage-deflate); not UTF-8 checked yet
    uint16_t code = 0;       // Close: the peer's code (1005 when it gave none); Error: the code to send
    const char* what = "";   // Error: why, for the error message
    const std::string* data; // Message: the message; Ping, Pong: the payload; Close: the reason
};

class Parser {
  public:
    // A server's parser requires masked frames, a client's refuses them.
    explicit Parser(bool server)
        : server_(server), in_frame_(false), fin_(false), masked_(false), in_message_(false), compressed_(false),
          done_(false), rsv1_ok(false) {}
    ~Parser() { delete bufs_; }
    Parser(const Parser&) = delete;
    Parser& operator=(const Parser&) = delete;

    // Limits below 4 GiB (a Lua string is shorter than 2 GiB anyway), so that the parser of
    // every connection stays small.
    uint32_t max_message = kDefaultMaxMessage; // 1009 beyond it
    uint32_t max_frame = 0;                    // 1009 for a longer frame; 0: only max_message

    // Consumes bytes of data[0, len) (*used says how many) until an event is complete; Event::None
    // when more bytes are needed. The event's data is valid until the next call (of any parser:
    // a message whose one frame came whole is in a buffer that all parsers share).
    Event feed(const char* data, size_t len, size_t* used);
    bool done() const { return done_; }
    bool server() const { return server_; }
    // Whether a fragmented message has begun and not ended.
    bool in_message() const { return in_message_; }

  private:
    Event fail(uint16_t code, const char* what);
    static std::string& whole_buffer();
    Event finish_control();

    // The data message being reassembled and the payload of the current control frame, made when
    // a frame does not come whole (or is a control frame) and dropped between events: an idle
    // connection holds none.
    struct Buffers {
        std::string message, control;
    };
    Buffers* bufs_ = nullptr;
    Buffers& bufs() { return bufs_ ? *bufs_ : *(bufs_ = new Buffers); }
    uint32_t left_ = 0; // payload bytes of the current frame still to come (at most max_message)
    uint8_t mask_[4] = {0, 0, 0, 0};
    uint8_t opcode_ = 0;     // of the current frame
    uint8_t msg_opcode_ = 0; // kText or kBinary of the message being reassembled
    uint8_t phase_ = 0;      // payload bytes of the current frame seen, modulo 4 (the mask's phase)
    Utf8 utf8_;              // three bytes, here where they pack with the flags
    // One byte of flags: with them the parser is 32 bytes (every connection has one).
    bool server_ : 1;
    bool in_frame_ : 1; // a head was read and its payload is coming
    bool fin_ : 1;
    bool masked_ : 1;
    bool in_message_ : 1;
    bool compressed_ : 1; // the message being reassembled is compressed (RSV1 on its first frame)
    bool done_ : 1;

  public:
    // Declared here, where it packs with the flags above.
    bool rsv1_ok : 1; // an extension (permessage-deflate) uses RSV1
};

// Writes the head of a frame to out (at most kMaxHead bytes) and returns its length. With a
// mask, the payload must be masked with it (apply_mask) by the caller.
size_t encode_head(uint8_t* out, uint8_t opcode, bool fin, uint64_t len, const uint8_t* mask, bool rsv1 = false);
// Writes from[0, n) XORed with the mask key to `to` (a whole payload: phase 0). Returns whether
// all the bytes written are ASCII.
bool copy_masked(uint8_t* to, const uint8_t* from, size_t n, const uint8_t key[4]);
// XORs p[0, n) with the mask key, starting at the key's byte `phase` (the payload offset).
void apply_mask(uint8_t* p, size_t n, const uint8_t key[4], uint64_t phase = 0);

} // namespace luaio::ws
