// White-box tests of the http module's parser (modules/http_parser.h).
#include "modules/http_parser.h"

#include <gtest/gtest.h>

#include <string>

using luaio::http::Parser;
using luaio::http::scratch_head;
using luaio::http::scratch_pieces;

namespace {

std::string str(const luaio::http::Span& s) {
    return std::string(s.p ? s.p : "", s.len);
}

std::string body_of_pieces() {
    std::string b;
    for (auto& s : scratch_pieces().piece) b.append(s.p, s.len);
    return b;
}

TEST(HttpParser, FindHeadEnd) {
    EXPECT_EQ(luaio::http::find_head_end("GET / HTTP/1.1\r\n\r\n", 18), 18u);
    EXPECT_EQ(luaio::http::find_head_end("GET / HTTP/1.1\n\n", 16), 16u);
    EXPECT_EQ(luaio::http::find_head_end("GET / HTTP/1.1\r\nA: b\r\n", 22), 0u);
    EXPECT_EQ(luaio::http::find_head_end("GET / HTTP/1.1\r\n\r", 17), 0u);
}

TEST(HttpParser, SimpleGet) {
    Parser p(HTTP_REQUEST);
    std::string req = "GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-Y:  z  \r\n\r\n";
    size_t used;
    ASSERT_EQ(p.parse_head(req.data(), req.size(), 8192, &used), Parser::Result::Ok);
    EXPECT_EQ(used, req.size());
    EXPECT_EQ(str(scratch_head().url), "/a?b=1");
    ASSERT_EQ(scratch_head().nheaders, 2u);
    EXPECT_EQ(str(scratch_head().names[1]), "X-Y");
    EXPECT_EQ(str(scratch_head().values[1]), "z");
    EXPECT_FALSE(p.in_body());
    EXPECT_TRUE(p.keep_alive());
    EXPECT_EQ(p.method(), HTTP_GET);
}

TEST(HttpParser, PipelinedAndLeadingCrlf) {
    Parser p(HTTP_REQUEST);
    std::string two = "\r\nGET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n";
    size_t used;
    ASSERT_EQ(p.parse_head(two.data(), two.size(), 8192, &used), Parser::Result::Ok);
    EXPECT_EQ(str(scratch_head().url), "/1");
    size_t off = used;
    ASSERT_EQ(p.parse_head(two.data() + off, two.size() - off, 8192, &used), Parser::Result::Ok);
    EXPECT_EQ(str(scratch_head().url), "/2");
    EXPECT_EQ(off + used, two.size());
}

TEST(HttpParser, ContentLengthBodyStopsAtMessageEnd) {
    Parser p(HTTP_REQUEST);
    std::string req = "POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\n\r\n";
    size_t used;
    ASSERT_EQ(p.parse_head(req.data(), req.size(), 8192, &used), Parser::Result::Ok);
    EXPECT_TRUE(p.in_body());
    EXPECT_EQ(p.content_length(), 5u);
    size_t off = used;
    ASSERT_EQ(p.feed_body(req.data() + off, 2, &used), Parser::Result::NeedMore);
    EXPECT_EQ(used, 2u);
    EXPECT_EQ(body_of_pieces(), "he");
    off += used;
    ASSERT_EQ(p.feed_body(req.data() + off, req.size() - off, &used), Parser::Result::Ok);
    EXPECT_EQ(used, 3u);
    EXPECT_EQ(body_of_pieces(), "llo");
    off += used;
    ASSERT_EQ(p.parse_head(req.data() + off, req.size() - off, 8192, &used), Parser::Result::Ok);
    EXPECT_EQ(off + used, req.size());
}

TEST(HttpParser, ChunkedBody) {
    Parser p(HTTP_REQUEST);
    std::string req = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\nX";
    size_t used;
    ASSERT_EQ(p.parse_head(req.data(), req.size(), 8192, &used), Parser::Result::Ok);
    EXPECT_TRUE(p.chunked());
    size_t off = used;
    ASSERT_EQ(p.feed_body(req.data() + off, req.size() - off, &used), Parser::Result::Ok);
    EXPECT_EQ(body_of_pieces(), "abcde");
    EXPECT_EQ(off + used, req.size() - 1);
}

TEST(HttpParser, TooLargeAndMalformed) {
    Parser p(HTTP_REQUEST);
    std::string big = "GET / HTTP/1.1\r\nX: " + std::string(100, 'a') + "\r\n";
    size_t used;
    EXPECT_EQ(p.parse_head(big.data(), big.size(), 64, &used), Parser::Result::TooLarge);
    EXPECT_EQ(p.parse_head(big.data(), big.size(), 8192, &used), Parser::Result::NeedMore);
    Parser q(HTTP_REQUEST);
    std::string bad = "GET / HTTP/1.1\r\nNoColon\r\n\r\n";
    EXPECT_EQ(q.parse_head(bad.data(), bad.size(), 8192, &used), Parser::Result::Bad);
    EXPECT_NE(q.error(), nullptr);
    Parser r(HTTP_REQUEST);
    std::string smuggle = "POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
    EXPECT_EQ(r.parse_head(smuggle.data(), smuggle.size(), 8192, &used), Parser::Result::Bad);
}

TEST(HttpParser, ResponseUntilEof) {
    Parser p(HTTP_RESPONSE);
    std::string res = "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nabc";
    size_t used;
    ASSERT_EQ(p.parse_head(res.data(), res.size(), 8192, &used), Parser::Result::Ok);
    EXPECT_EQ(p.status(), 200);
    EXPECT_EQ(str(scratch_head().reason), "OK");
    EXPECT_TRUE(p.in_body());
    size_t off = used;
    ASSERT_EQ(p.feed_body(res.data() + off, res.size() - off, &used), Parser::Result::NeedMore);
    EXPECT_EQ(body_of_pieces(), "abc");
    EXPECT_EQ(p.finish(), Parser::Result::Ok);
}

TEST(HttpParser, HeadResponseSkipsBody) {
    Parser p(HTTP_RESPONSE);
    p.set_skip_body(true);
    std::string res = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n";
    size_t used;
    ASSERT_EQ(p.parse_head(res.data(), res.size(), 8192, &used), Parser::Result::Ok);
    EXPECT_FALSE(p.in_body());
}

TEST(HttpParser, TruncatedBodyIsBad) {
    Parser p(HTTP_RESPONSE);
    std::string res = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc";
    size_t used;
    ASSERT_EQ(p.parse_head(res.data(), res.size(), 8192, &used), Parser::Result::Ok);
    size_t off = used;
    ASSERT_EQ(p.feed_body(res.data() + off, res.size() - off, &used), Parser::Result::NeedMore);
    EXPECT_EQ(p.finish(), Parser::Result::Bad);
}

} // namespace
