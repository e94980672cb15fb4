// White-box tests of luaio's RESP2/RESP3 reader (modules/resp_reader.h).
#include "tests/resp_reader_test.h"

#include <gtest/gtest.h>

#include <string>

using luaio::resp::read_all;

namespace {

// The same replies whole, byte by byte and in pieces of 3 and 7 bytes.
std::string read_every_way(const std::string& in) {
    std::string whole = read_all(in);
    for (size_t cut : {1, 3, 7}) EXPECT_EQ(read_all(in, cut), whole) << "in pieces of " << cut;
    return whole;
}

TEST(RespReader, Resp2Scalars) {
    EXPECT_EQ(read_every_way("$3\r\nbar\r\n"), "$bar^|");
    EXPECT_EQ(read_every_way("$0\r\n\r\n"), "$^|");
    EXPECT_EQ(read_every_way("+OK\r\n"), "+OK^|");
    EXPECT_EQ(read_every_way("-ERR wrong\r\n"), "-ERR wrong^|");
    EXPECT_EQ(read_every_way(":42\r\n:-7\r\n:0\r\n"), ":42|:-7|:0|");
    EXPECT_EQ(read_every_way(":9223372036854775807\r\n:-9223372036854775808\r\n"),
              ":9223372036854775807|:-9223372036854775808|");
    EXPECT_EQ(read_every_way("$-1\r\n*-1\r\n"), "nil|nil|");
}

TEST(RespReader, BinaryBulkWithCrLfInside) {
    std::string body("a\r\nb\0c", 6);
    EXPECT_EQ(read_every_way("$6\r\n" + body + "\r\n"), "$" + body + "^|");
}

TEST(RespReader, Arrays) {
    EXPECT_EQ(read_every_way("*0\r\n"), "*0{|");
    EXPECT_EQ(read_every_way("*3\r\n$1\r\na\r\n$-1\r\n:5\r\n"), "*3{$a,null,:5|");
    EXPECT_EQ(read_every_way("*2\r\n*2\r\n:1\r\n:2\r\n*0\r\n"), "*2{*2{:1,:2,*0{|");
    EXPECT_EQ(read_every_way("*2\r\n-ERR x\r\n+OK\r\n"), "*2{-ERR x,+OK|");
}

TEST(RespReader, Resp3Types) {
    EXPECT_EQ(read_every_way("%2\r\n+a\r\n:1\r\n+b\r\n_\r\n"), "%2{+a,:1,+b,null|");
    EXPECT_EQ(read_every_way("~2\r\n+x\r\n+y\r\n"), "~2{+x,+y|");
    EXPECT_EQ(read_every_way(">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n"), ">3{$message,$ch,$hi|");
    EXPECT_EQ(read_every_way(",1.5\r\n,-0.25\r\n,10\r\n"), ",1.5|,-0.25|,10|");
    EXPECT_EQ(read_every_way(",inf\r\n,-inf\r\n"), ",inf|,-inf|");
    EXPECT_EQ(read_every_way(",nan\r\n"), ",nan|");
    EXPECT_EQ(read_every_way("#t\r\n#f\r\n"), "#t|#f|");
    EXPECT_EQ(read_every_way("_\r\n"), "nil|");
    EXPECT_EQ(read_every_way("(3492890328409238509324850943850943825024385\r\n"),
              "(3492890328409238509324850943850943825024385^|");
    EXPECT_EQ(read_every_way("=15\r\ntxt:Some string\r\n"), "=Some string^|");
    EXPECT_EQ(read_every_way("!21\r\nSYNTAX invalid syntax\r\n"), "-SYNTAX invalid syntax^|");
}

TEST(RespReader, AttributesAreSkipped) {
    // At the top, before a reply, and inside an aggregate, before an element; nested too.
    EXPECT_EQ(read_every_way("|1\r\n+key\r\n*2\r\n:1\r\n:2\r\n+OK\r\n"), "+OK^|");
    EXPECT_EQ(read_every_way("*2\r\n|1\r\n+ttl\r\n:3600\r\n:1\r\n:2\r\n"), "*2{:1,:2|");
    EXPECT_EQ(read_every_way("|1\r\n+a\r\n|1\r\n+b\r\n+c\r\n+d\r\n:7\r\n"), ":7|");
    EXPECT_EQ(read_every_way("|0\r\n:1\r\n"), ":1|");
}

TEST(RespReader, BeginsEachReplyOnceWithItsType) {
    luaio::resp::Reader r;
    luaio::resp::TextBuilder b;
    std::string in = "|1\r\n+a\r\n+b\r\n$5\r\nhello\r\n*1\r\n:1\r\n";
    for (char ch : in) {
        r.feed(&ch, 1);
        while (r.parse(b) == luaio::resp::Status::Reply) {
        }
    }
    EXPECT_EQ(b.begun, "$*");
    EXPECT_FALSE(r.pending());
}

TEST(RespReader, HalfAReplyIsPending) {
    luaio::resp::Reader r;
    luaio::resp::TextBuilder b;
    r.feed("*2\r\n:1\r\n", 8);
    EXPECT_EQ(r.parse(b), luaio::resp::Status::More);
    EXPECT_TRUE(r.pending());
    r.feed(":2\r\n", 4);
    EXPECT_EQ(r.parse(b), luaio::resp::Status::Reply);
    EXPECT_EQ(b.st[0], "*2{:1,:2");
    EXPECT_FALSE(r.pending());
}

TEST(RespReader, ProtocolErrors) {
    EXPECT_EQ(read_all("?x\r\n"), "ERROR: redis protocol error: an unknown reply type");
    EXPECT_EQ(read_all("+OK\rX"), "ERROR: redis protocol error: a CR without LF");
    EXPECT_EQ(read_all("$abc\r\n"), "ERROR: redis protocol error: a bad length");
    EXPECT_EQ(read_all("$-2\r\n"), "ERROR: redis protocol error: a bad length");
    EXPECT_EQ(read_all("$?\r\n"), "ERROR: redis protocol error: a bad length");
    EXPECT_EQ(read_all("*?\r\n"), "ERROR: redis protocol error: a bad aggregate length");
    EXPECT_EQ(read_all("$3\r\nabcde\r\n"), "ERROR: redis protocol error: a string without its CRLF");
    EXPECT_EQ(read_all("$999999999999\r\n"), "ERROR: redis protocol error: a string longer than 512 MiB");
    EXPECT_EQ(read_all("*999999999999\r\n"), "ERROR: redis protocol error: an aggregate too large");
    EXPECT_EQ(read_all(":12a\r\n"), "ERROR: redis protocol error: a bad integer");
    EXPECT_EQ(read_all(":99999999999999999999\r\n"), "ERROR: redis protocol error: a bad integer");
    EXPECT_EQ(read_all(":\r\n"), "ERROR: redis protocol error: a bad integer");
    EXPECT_EQ(read_all(",1.5x\r\n"), "ERROR: redis protocol error: a bad double");
    EXPECT_EQ(read_all(",\r\n"), "ERROR: redis protocol error: a bad double");
    EXPECT_EQ(read_all("#x\r\n"), "ERROR: redis protocol error: a bad boolean");
    EXPECT_EQ(read_all("_x\r\n"), "ERROR: redis protocol error: a bad null");
    EXPECT_EQ(read_all("(12x\r\n"), "ERROR: redis protocol error: a bad big number");
    EXPECT_EQ(read_all("=2\r\nab\r\n"), "ERROR: redis protocol error: a bad verbatim string");
    // A good reply before the bad bytes is still read.
    EXPECT_EQ(read_all("+OK\r\n\x01"), "+OK^|ERROR: redis protocol error: an unknown reply type");
}

TEST(RespReader, NestingIsBounded) {
    std::string ok, deep;
    for (int i = 0; i < luaio::resp::kMaxDepth; i++) ok += "*1\r\n";
    ok += ":1\r\n";
    EXPECT_EQ(read_all(ok).back(), '|');
    for (int i = 0; i <= luaio::resp::kMaxDepth; i++) deep += "*1\r\n";
    EXPECT_EQ(read_all(deep + ":1\r\n"), "ERROR: redis protocol error: replies nested deeper than 32 levels");
}

TEST(RespReader, LongLineInPiecesIsScannedOnce) {
    // A 1 MiB simple string in 1 KiB pieces: each piece is searched once for the CR.
    std::string in = "+" + std::string(1 << 20, 'x') + "\r\n";
    EXPECT_EQ(read_all(in, 1024), "+" + std::string(1 << 20, 'x') + "^|");
}

} // namespace
