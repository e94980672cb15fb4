// White-box tests of the WebSocket frame parser and encoder (modules/websocket_frame.h).
#include "modules/websocket_frame.h"

#include <gtest/gtest.h>

#include <string>

using luaio::ws::Event;
using luaio::ws::Parser;

namespace {

const uint8_t kKey[4] = {0x37, 0xfa, 0x21, 0x3d};

// A frame as a client sends it (masked with kKey unless masked is false).
std::string frame(uint8_t b0, const std::string& payload, bool masked = true) {
    uint8_t head[luaio::ws::kMaxHead];
    size_t n = luaio::ws::encode_head(head, b0 & 0x0F, b0 & 0x80, payload.size(), masked ? kKey : nullptr, b0 & 0x40);
    head[0] = b0;
    std::string f(reinterpret_cast<char*>(head), n);
    std::string p = payload;
    if (masked) luaio::ws::apply_mask(reinterpret_cast<uint8_t*>(&p[0]), p.size(), kKey);
    return f + p;
}

// Feeds everything (byte by byte when split) and returns the first event that is not None.
Event run(Parser& ps, const std::string& in, bool split = false, size_t* consumed = nullptr) {
    size_t off = 0;
    std::string buf;
    Event e;
    size_t total = 0;
    for (size_t i = 0; i <= in.size(); i++) {
        if (split) {
            if (i < in.size()) buf.push_back(in[i]);
        } else if (i == 0) {
            buf = in;
        }
        size_t used = 0;
        e = ps.feed(buf.data(), buf.size(), &used);
        buf.erase(0, used);
        total += used;
        if (e.kind != Event::None) break;
        if (!split) break;
    }
    (void)off;
    if (consumed) *consumed = total;
    return e;
}

TEST(WebSocketUtf8, Valid) {
    luaio::ws::Utf8 u;
    std::string s = "h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80 ascii ascii ascii";
    EXPECT_TRUE(u.feed(reinterpret_cast<const uint8_t*>(s.data()), s.size()));
    EXPECT_TRUE(u.complete());
}

TEST(WebSocketUtf8, Invalid) {
    const char* bad[] = {"\xc0\xaf", "\xe0\x80\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xff", "\x80"};
    for (const char* b : bad) {
        luaio::ws::Utf8 u;
        EXPECT_FALSE(u.feed(reinterpret_cast<const uint8_t*>(b), strlen(b))) << b;
    }
    luaio::ws::Utf8 u;
    EXPECT_TRUE(u.feed(reinterpret_cast<const uint8_t*>("\xe2\x82"), 2));
    EXPECT_FALSE(u.complete());
}

TEST(WebSocketParser, MaskedTextMessage) {
    for (bool split : {false, true}) {
        Parser ps(true);
        Event e = run(ps, frame(0x81, "Hello"), split);
        ASSERT_EQ(e.kind, Event::Message);
        EXPECT_TRUE(e.text);
        EXPECT_EQ(*e.data, "Hello");
    }
}

TEST(WebSocketParser, Lengths16And64) {
    for (size_t n : {125u, 126u, 65535u, 65536u, 200000u}) {
        Parser ps(true);
        std::string p(n, 'x');
        Event e = run(ps, frame(0x82, p));
        ASSERT_EQ(e.kind, Event::Message) << n;
        EXPECT_FALSE(e.text);
        EXPECT_EQ(*e.data, p);
    }
}

TEST(WebSocketParser, FragmentsWithPingBetween) {
    Parser ps(true);
    std::string in = frame(0x01, "Hel") + frame(0x89, "p") + frame(0x80, "lo");
    size_t used = 0;
    Event e = ps.feed(in.data(), in.size(), &used);
    ASSERT_EQ(e.kind, Event::Ping);
    EXPECT_EQ(*e.data, "p");
    EXPECT_TRUE(ps.in_message());
    in.erase(0, used);
    e = ps.feed(in.data(), in.size(), &used);
    ASSERT_EQ(e.kind, Event::Message);
    EXPECT_EQ(*e.data, "Hello");
    EXPECT_EQ(used, in.size());
}

TEST(WebSocketParser, Violations) {
    struct Case {
        std::string in;
        bool server;
        uint16_t code;
    } cases[] = {
        {frame(0x81, "x", false), true, 1002},                                // unmasked client frame
        {frame(0x81, "x", true), false, 1002},                                // masked server frame
        {frame(0xC1, "x"), true, 1002},                                       // RSV1 without an extension
        {frame(0xA1, "x"), true, 1002},                                       // RSV2
        {frame(0x83, "x"), true, 1002},                                       // reserved data opcode
        {frame(0x8B, "x"), true, 1002},                                       // reserved control opcode
        {frame(0x09, "x"), true, 1002},                                       // fragmented ping
        {frame(0x89, std::string(126, 'p')), true, 1002},                     // control frame over 125
        {frame(0x80, "x"), true, 1002},                                       // continuation without a message
        {frame(0x01, "a") + frame(0x81, "b"), true, 1002},                    // new message in a fragmented one
        {frame(0x81, "\xff"), true, 1007},                                    // bad UTF-8
        {frame(0x01, "\xe2\x82") + frame(0x80, "x"), true, 1007},             // bad UTF-8 across fragments
        {frame(0x81, "\xe2\x82"), true, 1007},                                // truncated UTF-8
        {frame(0x88, "\x03"), true, 1002},                                    // 1-byte close payload
        {frame(0x88, std::string("\x03\xed", 2)), true, 1002},                // close code 1005 is never sent
        {frame(0x88, std::string("\x03\xe8\xff", 3)), true, 1007},            // reason not UTF-8
        {std::string("\x82\xff\x80\0\0\0\0\0\0\0", 10) + "mask", true, 1002}, // 2^63 length
    };
    for (auto& c : cases) {
        Parser ps(c.server);
        Event e = run(ps, c.in);
        ASSERT_EQ(e.kind, Event::Error) << c.code;
        EXPECT_EQ(e.code, c.code) << e.what;
        EXPECT_TRUE(ps.done());
    }
}

TEST(WebSocketParser, Rsv1WithDeflate) {
    Parser ps(true);
    ps.rsv1_ok = true;
    Event e = run(ps, frame(0x41, "\xff") + frame(0x80, "z"));
    ASSERT_EQ(e.kind, Event::Message);
    EXPECT_TRUE(e.compressed); // UTF-8 is judged after inflating
    EXPECT_EQ(*e.data, "\xffz");
    Parser p2(true);
    p2.rsv1_ok = true;
    e = run(p2, frame(0x02, "a") + frame(0xC0, "b")); // RSV1 on a continuation frame
    ASSERT_EQ(e.kind, Event::Error);
    EXPECT_EQ(e.code, 1002);
    Parser p3(true);
    p3.rsv1_ok = true;
    e = run(p3, frame(0xC9, "p")); // RSV1 on a control frame
    ASSERT_EQ(e.kind, Event::Error);
}

TEST(WebSocketParser, MessageLimit) {
    Parser ps(true);
    ps.max_message = 10;
    EXPECT_EQ(run(ps, frame(0x82, std::string(10, 'a'))).kind, Event::Message);
    Event e = run(ps, frame(0x82, std::string(11, 'a')));
    ASSERT_EQ(e.kind, Event::Error);
    EXPECT_EQ(e.code, 1009);
    Parser p2(true);
    p2.max_message = 10;
    e = run(p2, frame(0x02, std::string(6, 'a')) + frame(0x80, std::string(5, 'a')));
    ASSERT_EQ(e.kind, Event::Error);
    EXPECT_EQ(e.code, 1009);
}

TEST(WebSocketParser, CloseFrames) {
    Parser ps(true);
    Event e = run(ps, frame(0x88, "\x03\xe8"
                                  "bye"));
    ASSERT_EQ(e.kind, Event::Close);
    EXPECT_EQ(e.code, 1000);
    EXPECT_EQ(*e.data, "bye");
    Parser p2(false);
    e = run(p2, frame(0x88, "", false));
    ASSERT_EQ(e.kind, Event::Close);
    EXPECT_EQ(e.code, 1005);
}

TEST(WebSocketEncoder, HeadsAndMask) {
    uint8_t h[luaio::ws::kMaxHead];
    EXPECT_EQ(luaio::ws::encode_head(h, 1, true, 5, nullptr), 2u);
    EXPECT_EQ(h[0], 0x81);
    EXPECT_EQ(h[1], 5);
    EXPECT_EQ(luaio::ws::encode_head(h, 2, true, 300, nullptr), 4u);
    EXPECT_EQ(h[1], 126);
    EXPECT_EQ(luaio::ws::encode_head(h, 2, true, 70000, kKey), 14u);
    EXPECT_EQ(h[1], 0xFF);
    std::string s = "abcdefghijklmnopqrstuvwxyz";
    std::string m = s;
    luaio::ws::apply_mask(reinterpret_cast<uint8_t*>(&m[0]), 10, kKey);
    luaio::ws::apply_mask(reinterpret_cast<uint8_t*>(&m[10]), m.size() - 10, kKey, 10);
    for (size_t i = 0; i < s.size(); i++) EXPECT_EQ(uint8_t(m[i]), uint8_t(s[i]) ^ kKey[i & 3]);
    EXPECT_TRUE(luaio::ws::valid_close_code(1000));
    EXPECT_FALSE(luaio::ws::valid_close_code(1006));
    EXPECT_FALSE(luaio::ws::valid_close_code(2999));
    EXPECT_TRUE(luaio::ws::valid_close_code(4999));
}

// copy_masked unmasks as it copies and tells whether every byte is ASCII (in the words and in
// the tail), which lets the parser skip the UTF-8 check of an ASCII text frame.
TEST(WebSocketMask, CopyMaskedReportsAscii) {
    for (size_t n : {0u, 3u, 8u, 13u, 64u}) {
        for (size_t bad = 0; bad <= n; bad++) {
            std::string plain(n, 'a');
            if (bad < n) plain[bad] = '\xC3';
            std::string masked = plain;
            luaio::ws::apply_mask(reinterpret_cast<uint8_t*>(&masked[0]), n, kKey);
            std::string out(n, '\0');
            bool ascii = luaio::ws::copy_masked(reinterpret_cast<uint8_t*>(&out[0]),
                                                reinterpret_cast<const uint8_t*>(masked.data()), n, kKey);
            EXPECT_EQ(out, plain);
            EXPECT_EQ(ascii, bad == n) << n << " " << bad;
        }
    }
    // A text frame with a byte that is not ASCII is still judged as UTF-8 (here: invalid).
    Parser p(true);
    std::string f = frame(0x81, std::string("abc\xC3", 4), true);
    size_t used = 0;
    Event e = p.feed(f.data(), f.size(), &used);
    EXPECT_EQ(e.kind, Event::Error);
    EXPECT_EQ(e.code, 1007);
}

} // namespace
