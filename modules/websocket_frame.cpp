// WebSocket frames: see websocket_frame.h.
#include "modules/websocket_frame.h"

#include <cstring>

namespace luaio::ws {

bool Utf8::feed(const uint8_t* p, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t b = p[i];
        if (need_ == 0) {
            // ASCII runs are the common case: skip eight bytes at a time.
            if (b < 0x80) {
                while (i + 8 <= n) {
                    uint64_t w;
                    std::memcpy(&w, p + i, 8);
                    if (w & 0x8080808080808080ull) break;
                    i += 8;
                }
                while (i < n && p[i] < 0x80) i++;
                continue;
            }
            lo_ = 0x80, hi_ = 0xBF;
            if (b >= 0xC2 && b <= 0xDF) {
                need_ = 1;
            } else if (b == 0xE0) {
                need_ = 2, lo_ = 0xA0; // no overlong three-byte forms
            } else if (b == 0xED) {
                need_ = 2, hi_ = 0x9F; // no surrogates
            } else if (b >= 0xE1 && b <= 0xEF) {
                need_ = 2;
            } else if (b == 0xF0) {
                need_ = 3, lo_ = 0x90; // no overlong four-byte forms
            } else if (b >= 0xF1 && b <= 0xF3) {
                need_ = 3;
            } else if (b == 0xF4) {
                need_ = 3, hi_ = 0x8F; // nothing past U+10FFFF
            } else {
                return false;
            }
        } else {
            if (b < lo_ || b > hi_) return false;
            need_--;
            lo_ = 0x80, hi_ = 0xBF;
        }
        i++;
    }
    return true;
}

namespace {
const std::string kEmpty; // the data of an event that carries none
} // namespace

Event Parser::fail(uint16_t code, const char* what) {
    done_ = true;
    Event e;
    e.kind = Event::Error;
    e.code = code;
    e.what = what;
    e.data = &kEmpty;
    return e;
}

Event Parser::finish_control() {
    Event e;
    e.data = &bufs_->control;
    if (opcode_ == kPing) {
        e.kind = Event::Ping;
    } else if (opcode_ == kPong) {
        e.kind = Event::Pong;
    } else {
        // A close frame: nothing, or a valid code and a UTF-8 reason (5.5.1, 7.4).
        std::string& control_ = bufs_->control;
        if (control_.size() == 1) return fail(1002, "close frame with a 1-byte payload");
        e.kind = Event::Close;
        e.code = 1005;
        if (control_.size() >= 2) {
            unsigned code = (static_cast<uint8_t>(control_[0]) << 8) | static_cast<uint8_t>(control_[1]);
            if (!valid_close_code(code)) return fail(1002, "invalid close code");
            Utf8 u;
            const uint8_t* r = reinterpret_cast<const uint8_t*>(control_.data()) + 2;
            if (!u.feed(r, control_.size() - 2) || !u.complete()) return fail(1007, "close reason is not UTF-8");
            e.code = static_cast<uint16_t>(code);
            control_.erase(0, 2);
        }
        done_ = true;
    }
    return e;
}

std::string& Parser::whole_buffer() {
    static auto& w = *new std::string;                   // never destroyed: a parser may run at exit
    if (w.capacity() > 64 * 1024) std::string().swap(w); // keep no large buffer idle
    return w;
}

Event Parser::feed(const char* data, size_t len, size_t* used) {
    const uint8_t* p = reinterpret_cast<const uint8_t*>(data);
    size_t off = 0;
    Event none;
    none.data = &kEmpty;
    if (bufs_ && !in_message_ && !in_frame_) {
        // Between events: the last one's data is no longer needed.
        delete bufs_;
        bufs_ = nullptr;
    }
    while (!done_) {
        if (!in_frame_) {
            if (len - off < 2) break;
            uint8_t b0 = p[off], b1 = p[off + 1];
            size_t need = 2 + ((b1 & 0x7F) == 126 ? 2 : (b1 & 0x7F) == 127 ? 8 : 0) + ((b1 & 0x80) ? 4 : 0);
            bool fin = b0 & 0x80;
            uint8_t op = b0 & 0x0F;
            bool control = op & 0x08;
            // RSV1 (permessage-deflate, RFC 7692 6) only on the first frame of a data message.
            if ((b0 & 0x30) || ((b0 & 0x40) && (!rsv1_ok || control || op == kCont))) {
                *used = off;
                return fail(1002, "reserved bits set");
            }
            if ((op > kBinary && op < kClose) || op > kPong) {
                *used = off;
                return fail(1002, "reserved opcode");
            }
            if (server_ && !(b1 & 0x80)) {
                *used = off;
                return fail(1002, "client frame not masked");
            }
            if (!server_ && (b1 & 0x80)) {
                *used = off;
                return fail(1002, "server frame masked");
            }
            if (control && !fin) {
                *used = off;
                return fail(1002, "fragmented control frame");
            }
            if (control && (b1 & 0x7F) > kMaxControl) {
                *used = off;
                return fail(1002, "control frame over 125 bytes");
            }
            if (op == kCont && !in_message_) {
                *used = off;
                return fail(1002, "continuation frame without a message");
            }
            if ((op == kText || op == kBinary) && in_message_) {
                *used = off;
                return fail(1002, "new message inside a fragmented message");
            }
            if (len - off < need) break;
            uint64_t n = b1 & 0x7F;
            size_t q = off + 2;
            if (n == 126) {
                n = (uint64_t(p[q]) << 8) | p[q + 1];
                q += 2;
            } else if (n == 127) {
                n = 0;
                for (int i = 0; i < 8; i++) n = (n << 8) | p[q + i];
                q += 8;
                if (n >> 63) {
                    *used = off;
                    return fail(1002, "frame length over 2^63");
                }
            }
            if (!control) {
                if (max_frame && n > max_frame) {
                    *used = off;
                    return fail(1009, "frame too big");
                }
                if (n > max_message || (bufs_ ? bufs_->message.size() : 0) + n > max_message) {
                    *used = off;
                    return fail(1009, "message too big");
                }
            }
            masked_ = b1 & 0x80;
            if (masked_) {
                std::memcpy(mask_, p + q, 4);
                q += 4;
            }
            // A control frame is taken whole (it is at most 125 bytes): its head stays buffered
            // until the payload has come, so a control frame between fragments never splits.
            if (control && len - q < n) break;
            if (!control && fin && op != kCont && len - q >= n) {
                // A whole message in one frame, all of it here (the common case): unmasked into
                // the buffer that every parser shares, so that a connection keeps no buffer.
                std::string& w = whole_buffer();
                bool ascii = false; // known to be ASCII: valid UTF-8 without a closer look
                if (masked_) {
                    w.resize(static_cast<size_t>(n));
                    ascii = copy_masked(reinterpret_cast<uint8_t*>(&w[0]), p + q, w.size(), mask_);
                } else {
                    w.assign(data + q, static_cast<size_t>(n));
                }
                uint8_t* m = reinterpret_cast<uint8_t*>(&w[0]);
                *used = q + static_cast<size_t>(n);
                bool compressed = b0 & 0x40;
                Utf8 u;
                if (op == kText && !compressed && !ascii && (!u.feed(m, w.size()) || !u.complete()))
                    return fail(1007, "text message is not UTF-8");
                Event e;
                e.kind = Event::Message;
                e.text = op == kText;
                e.compressed = compressed;
                e.data = &w;
                return e;
            }
            off = q;
            in_frame_ = true;
            fin_ = fin;
            opcode_ = op;
            left_ = static_cast<uint32_t>(n); // n <= max_message (data) or 125 (control)
            phase_ = 0;
            if (op == kText || op == kBinary) {
                msg_opcode_ = op;
                in_message_ = true;
                compressed_ = b0 & 0x40;
                utf8_.reset();
            }
            if (control) bufs().control.clear();
        }
        // The payload, or as much of it as has come.
        size_t take = len - off < left_ ? len - off : static_cast<size_t>(left_);
        std::string& dst = (opcode_ & 0x08) ? bufs().control : bufs().message;
        size_t at = dst.size();
        dst.append(data + off, take);
        uint8_t* w = reinterpret_cast<uint8_t*>(&dst[0]) + at;
        if (masked_) apply_mask(w, take, mask_, phase_);
        off += take;
        left_ -= static_cast<uint32_t>(take);
        phase_ = static_cast<uint8_t>((phase_ + take) & 3);
        if (!(opcode_ & 0x08) && msg_opcode_ == kText && !compressed_ && !utf8_.feed(w, take)) {
            *used = off;
            return fail(1007, "text message is not UTF-8");
        }
        if (left_ > 0) break;
        in_frame_ = false;
        if (opcode_ & 0x08) {
            *used = off;
            return finish_control();
        }
        if (!fin_) continue;
        in_message_ = false;
        if (msg_opcode_ == kText && !compressed_ && !utf8_.complete()) {
            *used = off;
            return fail(1007, "text message is not UTF-8");
        }
        *used = off;
        Event e;
        e.kind = Event::Message;
        e.text = msg_opcode_ == kText;
        e.compressed = compressed_;
        e.data = &bufs_->message;
        return e;
    }
    *used = off;
    return none;
}

size_t encode_head(uint8_t* out, uint8_t opcode, bool fin, uint64_t len, const uint8_t* mask, bool rsv1) {
    out[0] = static_cast<uint8_t>((fin ? 0x80 : 0) | (rsv1 ? 0x40 : 0) | (opcode & 0x0F));
    uint8_t m = mask ? 0x80 : 0;
    size_t n;
    if (len < 126) {
        out[1] = static_cast<uint8_t>(m | len);
        n = 2;
    } else if (len <= 0xFFFF) {
        out[1] = m | 126;
        out[2] = static_cast<uint8_t>(len >> 8);
        out[3] = static_cast<uint8_t>(len);
        n = 4;
    } else {
        out[1] = m | 127;
        for (int i = 0; i < 8; i++) out[2 + i] = static_cast<uint8_t>(len >> (56 - 8 * i));
        n = 10;
    }
    if (mask) {
        std::memcpy(out + n, mask, 4);
        n += 4;
    }
    return n;
}

bool copy_masked(uint8_t* to, const uint8_t* from, size_t n, const uint8_t key[4]) {
    uint32_t k4;
    std::memcpy(&k4, key, 4);
    uint64_t k8 = k4 | (uint64_t(k4) << 32), all = 0;
    uint8_t k[8];
    std::memcpy(k, &k8, 8);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        std::memcpy(&w, from + i, 8);
        w ^= k8;
        all |= w;
        std::memcpy(to + i, &w, 8);
    }
    uint8_t tail = 0;
    for (; i < n; i++) tail |= to[i] = from[i] ^ k[i & 7];
    return !(all & 0x8080808080808080ull) && !(tail & 0x80);
}

void apply_mask(uint8_t* p, size_t n, const uint8_t key[4], uint64_t phase) {
    size_t i = 0;
    // Rotate the key to the phase once, then XOR eight bytes at a time.
    uint8_t k[8];
    for (int j = 0; j < 8; j++) k[j] = key[(phase + j) & 3];
    uint64_t k8;
    std::memcpy(&k8, k, 8);
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        std::memcpy(&w, p + i, 8);
        w ^= k8;
        std::memcpy(p + i, &w, 8);
    }
    for (; i < n; i++) p[i] ^= k[i & 7];
}

} // namespace luaio::ws
