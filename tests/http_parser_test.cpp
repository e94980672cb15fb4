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
    std::string two = "\r\nGET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n";
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
    std::string req = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\nHost: a\r\n\r\n";
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
    std::string req =
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\nX";
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

// Each request is parsed alone; returns the result and, for Bad, the status it is answered with.
std::pair<Parser::Result, int> head_of(const std::string& req) {
    Parser p(HTTP_REQUEST);
    size_t used;
    Parser::Result r = p.parse_head(req.data(), req.size(), 8192, &used);
    return {r, r == Parser::Result::Bad ? p.reject_status() : 0};
}

TEST(HttpParser, RequestSyntaxIsStrict) {
    using R = Parser::Result;
    const std::pair<R, int> ok{R::Ok, 0}, bad{R::Bad, 400};
    EXPECT_EQ(head_of("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), ok);
    EXPECT_EQ(head_of("GET / HTTP/1.1\r\nHost : a\r\n\r\n"), bad);
    EXPECT_EQ(head_of("GET / HTTP/1.1\r\nHost: a\r\nX\t: b\r\n\r\n"), bad);
    EXPECT_EQ(head_of("GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n"), bad);
    EXPECT_EQ(head_of("GET / HTTP/1.1\r\nHost: a\r\nX: b\r\n c\r\n\r\n"), bad);
    EXPECT_EQ(head_of("GET / HTTP/1.1\r\n\r\n"), bad);
    EXPECT_EQ(head_of("GET / HTTP/1.0\r\n\r\n"), ok);
    EXPECT_EQ(head_of("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"), bad);
    EXPECT_EQ(head_of("GET / HTTP/1.1\r\nHost: a b\r\n\r\n"), bad);
    EXPECT_EQ(head_of("GET / HTTP/1.1\r\nHost: a..b\r\n\r\n"), bad);
    EXPECT_EQ(head_of("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"), bad);
    EXPECT_EQ(head_of("GET / HTTP/1.1\r\nHost:\r\n\r\n"), bad);
    EXPECT_EQ(head_of("GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n"), ok);
    EXPECT_EQ(head_of("GET / HTTP/1.1\r\nHost: a.\r\n\r\n"), ok);
    EXPECT_EQ(head_of("GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n"), bad);
    EXPECT_EQ(head_of("CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n"), bad);
    EXPECT_EQ(head_of("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"), bad);
    EXPECT_EQ(head_of("TRACE / HTTP/1.1\r\nHost: a\r\n\r\n"), std::make_pair(R::Bad, 405));
    EXPECT_EQ(head_of("GET / HTTP/2.0\r\nHost: a\r\n\r\n"), std::make_pair(R::Bad, 505));
    EXPECT_EQ(head_of("GET / HTTP/3.0\r\nHost: a\r\n\r\n"), std::make_pair(R::Bad, 505));
    EXPECT_EQ(head_of("GET /\r\n\r\n"), std::make_pair(R::Bad, 0));
    EXPECT_EQ(head_of("GET / HTTP/0.9\r\n\r\n"), bad);
    EXPECT_EQ(head_of("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n"), std::make_pair(R::Bad, 501));
    EXPECT_EQ(head_of("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), bad);
    EXPECT_EQ(head_of("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"),
              bad);
    EXPECT_EQ(head_of("GET / HTTP/1.1\rHost: a\r"), bad);
    // Bare CRs that llhttp skips as blanks or takes as the end of the head.
    EXPECT_EQ(head_of("GET / HTTP/1.1\r\nHost: a\r\nX:\rb\r\n\r\n"), bad);
    EXPECT_EQ(head_of("GET / HTTP/1.1\r\nHost: a\r\nX: \rb\r\n\r\n"), bad);
    EXPECT_EQ(head_of("GET / HTTP/1.1\r\nHost: a\r\nX:\r\r\n\r\n"), bad);
    EXPECT_EQ(head_of("GET / HTTP/1.1\r\nHost: a\r\n\r\r\nY: b\r\n\r\n"), bad);
    EXPECT_EQ(head_of("GET / HTTP/1.1\r\nHost: a\r\nX:  \r\n\r\n"), ok);
}

TEST(HttpParser, FormsLlhttpRefusesAreNormalized) {
    Parser p(HTTP_REQUEST);
    std::string lf = "GET /x HTTP/1.1\nHost: a\nX-A: b\n\nGET /y HTTP/1.1\r\nHost: a\r\n\r\n";
    size_t used;
    ASSERT_EQ(p.parse_head(lf.data(), lf.size(), 8192, &used), Parser::Result::Ok);
    EXPECT_EQ(used, 32u);
    EXPECT_EQ(std::string(p.head_data(), p.head_len()), lf.substr(0, 32));
    EXPECT_EQ(str(scratch_head().url), "/x");
    ASSERT_EQ(scratch_head().nheaders, 2u);
    EXPECT_EQ(str(scratch_head().values[1]), "b");
    ASSERT_EQ(p.parse_head(lf.data() + used, lf.size() - used, 8192, &used), Parser::Result::Ok);
    EXPECT_EQ(str(scratch_head().url), "/y");

    Parser q(HTTP_REQUEST);
    std::string v = "GET / HTTP/1.2\r\nHost: a\r\n\r\n";
    ASSERT_EQ(q.parse_head(v.data(), v.size(), 8192, &used), Parser::Result::Ok);
    EXPECT_EQ(q.minor(), 1);
    EXPECT_EQ(scratch_head().method.p, nullptr);

    Parser r(HTTP_REQUEST);
    std::string m = "FOO_BAR-X /m HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nok";
    ASSERT_EQ(r.parse_head(m.data(), m.size(), 8192, &used), Parser::Result::Ok);
    EXPECT_EQ(str(scratch_head().method), "FOO_BAR-X");
    EXPECT_EQ(str(scratch_head().url), "/m");
    EXPECT_EQ(used, m.size() - 2);
    EXPECT_TRUE(r.in_body());
    EXPECT_EQ(head_of("get / HTTP/1.1\r\nHost: a\r\n\r\n"), std::make_pair(Parser::Result::Bad, 400));
    // Field lines as nginx reads them: a name with a non-token byte is ignored, a line without a
    // colon is a field with an empty value; control bytes in a value pass, NUL does not.
    Parser f(HTTP_REQUEST);
    std::string fields = "GET / HTTP/1.1\r\nX@Y: 1\r\nHost: a\r\nBare\r\nX-C: a\x01b\x7f\r\n\r\n";
    ASSERT_EQ(f.parse_head(fields.data(), fields.size(), 8192, &used), Parser::Result::Ok);
    EXPECT_EQ(used, fields.size());
    ASSERT_EQ(scratch_head().nheaders, 3u);
    EXPECT_EQ(str(scratch_head().names[0]), "Host");
    EXPECT_EQ(str(scratch_head().names[1]), "Bare");
    EXPECT_EQ(str(scratch_head().values[1]), "");
    EXPECT_EQ(str(scratch_head().values[2]), "a\x01b\x7f");
    EXPECT_EQ(std::string(f.head_data(), f.head_len()),
              "GET / HTTP/1.1\r\nHost: a\r\nBare:\r\nX-C: a\x01b\x7f\r\n\r\n");
    EXPECT_EQ(head_of(std::string("GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n", 35)),
              std::make_pair(Parser::Result::Bad, 400));
    EXPECT_EQ(head_of("GET / HTTP/1.1\r\nHo@st: a\r\n\r\n"), std::make_pair(Parser::Result::Bad, 400));
    EXPECT_EQ(head_of("GET / HTTP/1.1\r\nHost: a\r\nX\x01: b\r\n\r\n"), std::make_pair(Parser::Result::Bad, 400));
    EXPECT_EQ(head_of("G3T / HTTP/1.1\r\nHost: a\r\n\r\n"), std::make_pair(Parser::Result::Bad, 400));
}

// Feeds the body after the head one byte at a time; returns the body, or "BAD:<why>".
std::string chunked_body(const std::string& chunks, size_t* rest = nullptr) {
    std::string req = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks;
    Parser p(HTTP_REQUEST);
    size_t used;
    if (p.parse_head(req.data(), req.size(), 8192, &used) != Parser::Result::Ok) return "BAD:head";
    std::string body;
    for (size_t off = used; off < req.size();) {
        Parser::Result r = p.feed_body(req.data() + off, 1, &used);
        body += body_of_pieces();
        off += used;
        if (r == Parser::Result::Bad) return std::string("BAD:") + p.error();
        if (r == Parser::Result::Ok) {
            if (rest) *rest = req.size() - off;
            return body;
        }
    }
    return "MORE:" + body;
}

TEST(HttpParser, ChunkedFraming) {
    EXPECT_EQ(chunked_body("3;name=\"quoted value\"\r\nabc\r\n0\r\n\r\n"), "abc");
    EXPECT_EQ(chunked_body("3;a=1;b=\"x\\\"y\"\r\nabc\r\n0;c\r\n\r\n"), "abc");
    EXPECT_EQ(chunked_body("3 ;a\r\nabc\r\n0\r\n\r\n"), "abc");
    EXPECT_EQ(chunked_body("3\nabc\n0\n\n"), "abc");
    EXPECT_EQ(chunked_body("3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n"), "abc");
    size_t rest = 0;
    EXPECT_EQ(chunked_body("A\r\n0123456789\r\n0\r\n\r\nGET", &rest), "0123456789");
    EXPECT_EQ(rest, 3u);
    EXPECT_EQ(chunked_body("3\r\nabcX\r\n0\r\n\r\n"), "BAD:chunk data not followed by CRLF");
    EXPECT_EQ(chunked_body("zz\r\n"), "BAD:invalid chunk size");
    EXPECT_EQ(chunked_body(" 3\r\nabc\r\n0\r\n\r\n"), "BAD:invalid chunk size");
    EXPECT_EQ(chunked_body("\r\n"), "BAD:invalid chunk size");
    EXPECT_EQ(chunked_body("fffffffffffffffff1\r\n"), "BAD:chunk size too large");
    EXPECT_EQ(chunked_body("3;a\rb\r\nabc\r\n0\r\n\r\n"), "BAD:CR without LF after the chunk size");
    EXPECT_EQ(chunked_body("3\r\nab"), "MORE:ab");
}

TEST(HttpParser, ChunkedPendingAndTruncation) {
    Parser p(HTTP_REQUEST);
    std::string req = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nffff\r\nab";
    size_t used;
    ASSERT_EQ(p.parse_head(req.data(), req.size(), 8192, &used), Parser::Result::Ok);
    size_t off = used;
    ASSERT_EQ(p.feed_body(req.data() + off, req.size() - off, &used), Parser::Result::NeedMore);
    EXPECT_EQ(p.pending(), 0xffffu - 2);
    EXPECT_EQ(p.finish(), Parser::Result::Bad);
}

} // namespace
