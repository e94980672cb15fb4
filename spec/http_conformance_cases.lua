-- Hostile and borderline HTTP/1.1 requests with what a strict origin server answers (RFC 9112;
-- the expectations were calibrated on nginx 1.22 with bench/http/conformance_nginx.sh).
-- Each case: `req` (the raw bytes sent on one connection), `status` (the status codes of all
-- the responses that came, in order, separated by spaces; "" for none) and `close` (whether the
-- server closed the connection after them). The handler reads the whole body and answers 200.
-- A case where luaio answers otherwise on purpose has `luaio` = {status, close, why}: the spec
-- checks that, the calibration the nginx values. `H` is the Host line HTTP/1.1 requests need.
local H = "Host: a\r\n"

local cases = {
    -- request line
    { name = "plain GET", req = "GET / HTTP/1.1\r\n" .. H .. "\r\n", status = "200", close = false },
    { name = "HTTP/1.0 without keep-alive", req = "GET / HTTP/1.0\r\n\r\n", status = "200", close = true },
    { name = "HTTP/1.0 keep-alive", req = "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", status = "200", close = false },
    { name = "HTTP/1.1 Connection: close", req = "GET / HTTP/1.1\r\n" .. H .. "Connection: close\r\n\r\n", status = "200", close = true },
    { name = "HTTP/2.0 as text", req = "GET / HTTP/2.0\r\n" .. H .. "\r\n", status = "505", close = true },
    { name = "HTTP/3.0", req = "GET / HTTP/3.0\r\n" .. H .. "\r\n", status = "505", close = true },
    { name = "HTTP/1.2", req = "GET / HTTP/1.2\r\n" .. H .. "\r\n", status = "200", close = false },
    { name = "HTTP/1.9", req = "GET / HTTP/1.9\r\n" .. H .. "\r\n", status = "200", close = false },
    { name = "HTTP/0.9 version", req = "GET / HTTP/0.9\r\n" .. H .. "\r\n", status = "400", close = true },
    { name = "lower-case version", req = "GET / http/1.1\r\n" .. H .. "\r\n", status = "400", close = true },
    { name = "version without minor", req = "GET / HTTP/1\r\n" .. H .. "\r\n", status = "400", close = true },
    { name = "version with letters", req = "GET / HTTP/1.x\r\n" .. H .. "\r\n", status = "400", close = true },
    { name = "garbage version", req = "GET / FOO/1.1\r\n" .. H .. "\r\n", status = "400", close = true },
    { name = "extra token after version", req = "GET / HTTP/1.1 x\r\n" .. H .. "\r\n", status = "400", close = true },
    { name = "lower-case method", req = "get / HTTP/1.1\r\n" .. H .. "\r\n", status = "400", close = true },
    { name = "leading space before method", req = " GET / HTTP/1.1\r\n" .. H .. "\r\n", status = "400", close = true },
    { name = "leading empty lines", req = "\r\n\r\nGET / HTTP/1.1\r\n" .. H .. "\r\n", status = "200", close = false },
    { name = "no target", req = "GET HTTP/1.1\r\n" .. H .. "\r\n", status = "400", close = true },
    { name = "target not starting with /", req = "GET foo HTTP/1.1\r\n" .. H .. "\r\n", status = "400", close = true },
    { name = "absolute-form target", req = "GET http://a/x HTTP/1.1\r\n" .. H .. "\r\n", status = "200", close = false },
    { name = "absolute-form target, other host", req = "GET http://b/x HTTP/1.1\r\n" .. H .. "\r\n", status = "200", close = false },
    { name = "space in target", req = "GET /a b HTTP/1.1\r\n" .. H .. "\r\n", status = "400", close = true },
    { name = "NUL in target", req = "GET /a\0b HTTP/1.1\r\n" .. H .. "\r\n", status = "400", close = true },
    { name = "CR in request line", req = "GET /a\rb HTTP/1.1\r\n" .. H .. "\r\n", status = "400", close = true },
    { name = "DEL in target", req = "GET /a\127b HTTP/1.1\r\n" .. H .. "\r\n", status = "400", close = true },
    { name = "tab in target", req = "GET /a\tb HTTP/1.1\r\n" .. H .. "\r\n", status = "400", close = true },
    { name = "UTF-8 bytes in target", req = "GET /\195\169 HTTP/1.1\r\n" .. H .. "\r\n", status = "200", close = false },
    { name = "percent-encoded target", req = "GET /%41%20b HTTP/1.1\r\n" .. H .. "\r\n", status = "200", close = false },
    { name = "query and fragment", req = "GET /a?b=c#d HTTP/1.1\r\n" .. H .. "\r\n", status = "200", close = false },
    { name = "two spaces after method", req = "GET  / HTTP/1.1\r\n" .. H .. "\r\n", status = "200", close = false },
    { name = "tab between method and target", req = "GET\t/ HTTP/1.1\r\n" .. H .. "\r\n", status = "400", close = true },
    { name = "missing version (HTTP/0.9 request)", req = "GET /\r\n\r\n", status = "", close = true },
    { name = "unknown method", req = "FOO / HTTP/1.1\r\n" .. H .. "\r\n", status = "200", close = false },
    { name = "method with digits", req = "G3T / HTTP/1.1\r\n" .. H .. "\r\n", status = "400", close = true },
    { name = "CONNECT", req = "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", status = "400", close = true },
    { name = "CONNECT pipelined with GET", req = "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\nGET / HTTP/1.1\r\n" .. H .. "\r\n", status = "400", close = true },
    { name = "TRACE", req = "TRACE / HTTP/1.1\r\n" .. H .. "\r\n", status = "405", close = true },
    { name = "OPTIONS *", req = "OPTIONS * HTTP/1.1\r\n" .. H .. "\r\n", status = "400", close = true },
    { name = "HEAD", req = "HEAD / HTTP/1.1\r\n" .. H .. "\r\n", status = "200", close = false },
    { name = "DELETE", req = "DELETE / HTTP/1.1\r\n" .. H .. "\r\n", status = "200", close = false },
    { name = "PRI (HTTP/2 preface)", req = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", status = "400", close = true },
    { name = "bare LF line ends", req = "GET / HTTP/1.1\nHost: a\n\n", status = "200", close = false },
    { name = "bare CR line ends", req = "GET / HTTP/1.1\rHost: a\r\r", status = "400", close = true },

    -- header fields
    { name = "space before colon", req = "GET / HTTP/1.1\r\n" .. H .. "X-A : b\r\n\r\n", status = "400", close = true },
    { name = "space before colon in Host", req = "GET / HTTP/1.1\r\nHost : a\r\n\r\n", status = "400", close = true },
    { name = "tab before colon", req = "GET / HTTP/1.1\r\n" .. H .. "X-A\t: b\r\n\r\n", status = "400", close = true },
    { name = "empty field name", req = "GET / HTTP/1.1\r\n" .. H .. ": b\r\n\r\n", status = "400", close = true },
    { name = "line without colon", req = "GET / HTTP/1.1\r\n" .. H .. "X-A\r\n\r\n", status = "200", close = false },
    { name = "space in field name", req = "GET / HTTP/1.1\r\n" .. H .. "X A: b\r\n\r\n", status = "400", close = true },
    { name = "obs-fold continuation line", req = "GET / HTTP/1.1\r\n" .. H .. "X-A: b\r\n c\r\n\r\n", status = "400", close = true },
    { name = "tab-led continuation line", req = "GET / HTTP/1.1\r\n" .. H .. "X-A: b\r\n\tc\r\n\r\n", status = "400", close = true },
    { name = "first field line starts with space", req = "GET / HTTP/1.1\r\n " .. H .. "\r\n", status = "400", close = true },
    { name = "NUL in field value", req = "GET / HTTP/1.1\r\n" .. H .. "X-A: b\0c\r\n\r\n", status = "400", close = true },
    { name = "CR in field value", req = "GET / HTTP/1.1\r\n" .. H .. "X-A: b\rc\r\n\r\n", status = "400", close = true },
    { name = "NUL in field name", req = "GET / HTTP/1.1\r\n" .. H .. "X\0A: b\r\n\r\n", status = "400", close = true },
    { name = "empty field value", req = "GET / HTTP/1.1\r\n" .. H .. "X-A:\r\n\r\n", status = "200", close = false },
    { name = "value without space after colon", req = "GET / HTTP/1.1\r\n" .. H .. "X-A:b\r\n\r\n", status = "200", close = false },
    { name = "trailing whitespace in value", req = "GET / HTTP/1.1\r\n" .. H .. "X-A: b \t\r\n\r\n", status = "200", close = false },
    { name = "tab in field value", req = "GET / HTTP/1.1\r\n" .. H .. "X-A: b\tc\r\n\r\n", status = "200", close = false },
    { name = "UTF-8 in field value", req = "GET / HTTP/1.1\r\n" .. H .. "X-A: \195\169\r\n\r\n", status = "200", close = false },
    { name = "underscore in field name", req = "GET / HTTP/1.1\r\n" .. H .. "X_A: b\r\n\r\n", status = "200", close = false },
    { name = "many fields", req = "GET / HTTP/1.1\r\n" .. H .. ("X-A: b\r\n"):rep(50) .. "\r\n", status = "200", close = false },
    { name = "header section too large", req = "GET / HTTP/1.1\r\n" .. H .. "X-A: " .. ("b"):rep(70000) .. "\r\n\r\n", status = "400", close = true,
        luaio = { status = "431", close = true, why = "RFC 6585 has a status for it (nginx says 400)" } },

    -- Host
    { name = "HTTP/1.1 without Host", req = "GET / HTTP/1.1\r\n\r\n", status = "400", close = true },
    { name = "HTTP/1.0 without Host", req = "GET / HTTP/1.0\r\n\r\n", status = "200", close = true },
    { name = "two Host fields", req = "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", status = "400", close = true },
    { name = "two equal Host fields", req = "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", status = "400", close = true },
    { name = "two Host fields, HTTP/1.0", req = "GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", status = "400", close = true },
    { name = "Host list", req = "GET / HTTP/1.1\r\nHost: a, b\r\n\r\n", status = "400", close = true },
    { name = "Host with space", req = "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", status = "400", close = true },
    { name = "Host with slash", req = "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", status = "400", close = true },
    { name = "Host with backslash", req = "GET / HTTP/1.1\r\nHost: a\\b\r\n\r\n", status = "200", close = false },
    { name = "Host with userinfo", req = "GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", status = "200", close = false },
    { name = "Host with port", req = "GET / HTTP/1.1\r\nHost: a:80\r\n\r\n", status = "200", close = false },
    { name = "Host IPv4", req = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", status = "200", close = false },
    { name = "Host IPv6 literal", req = "GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n", status = "200", close = false },
    { name = "Host unclosed IPv6 literal", req = "GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", status = "200", close = false },
    { name = "Host with dot-dot", req = "GET / HTTP/1.1\r\nHost: a..b\r\n\r\n", status = "400", close = true },
    { name = "Host starting with dot", req = "GET / HTTP/1.1\r\nHost: .a\r\n\r\n", status = "200", close = false },
    { name = "Host with trailing dot", req = "GET / HTTP/1.1\r\nHost: a.\r\n\r\n", status = "200", close = false },
    { name = "empty Host", req = "GET / HTTP/1.1\r\nHost:\r\n\r\n", status = "400", close = true },
    { name = "Host with NUL", req = "GET / HTTP/1.1\r\nHost: a\0b\r\n\r\n", status = "400", close = true },
    { name = "Host with control byte", req = "GET / HTTP/1.1\r\nHost: a\1b\r\n\r\n", status = "400", close = true },
    { name = "Host upper case", req = "GET / HTTP/1.1\r\nHost: A.EXAMPLE\r\n\r\n", status = "200", close = false },
    { name = "Host with non-numeric port", req = "GET / HTTP/1.1\r\nHost: a:b\r\n\r\n", status = "200", close = false },
    { name = "Host with UTF-8", req = "GET / HTTP/1.1\r\nHost: \195\169\r\n\r\n", status = "200", close = false },
    { name = "Host with percent", req = "GET / HTTP/1.1\r\nHost: a%20b\r\n\r\n", status = "200", close = false },
    { name = "Host with question mark", req = "GET / HTTP/1.1\r\nHost: a?b\r\n\r\n", status = "200", close = false },

    -- Content-Length
    { name = "Content-Length body", req = "POST / HTTP/1.1\r\n" .. H .. "Content-Length: 3\r\n\r\nabc", status = "200", close = false },
    { name = "Content-Length zero", req = "POST / HTTP/1.1\r\n" .. H .. "Content-Length: 0\r\n\r\n", status = "200", close = false },
    { name = "Content-Length not a number", req = "POST / HTTP/1.1\r\n" .. H .. "Content-Length: abc\r\n\r\n", status = "400", close = true },
    { name = "Content-Length negative", req = "POST / HTTP/1.1\r\n" .. H .. "Content-Length: -1\r\n\r\n", status = "400", close = true },
    { name = "Content-Length with plus", req = "POST / HTTP/1.1\r\n" .. H .. "Content-Length: +3\r\n\r\nabc", status = "400", close = true },
    { name = "Content-Length hex", req = "POST / HTTP/1.1\r\n" .. H .. "Content-Length: 0x3\r\n\r\nabc", status = "400", close = true },
    { name = "Content-Length with inner space", req = "POST / HTTP/1.1\r\n" .. H .. "Content-Length: 1 2\r\n\r\n", status = "400", close = true },
    { name = "Content-Length list", req = "POST / HTTP/1.1\r\n" .. H .. "Content-Length: 3, 3\r\n\r\nabc", status = "400", close = true },
    { name = "two equal Content-Length", req = "POST / HTTP/1.1\r\n" .. H .. "Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc", status = "400", close = true },
    { name = "two different Content-Length", req = "POST / HTTP/1.1\r\n" .. H .. "Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", status = "400", close = true },
    { name = "Content-Length overflow", req = "POST / HTTP/1.1\r\n" .. H .. "Content-Length: 99999999999999999999999\r\n\r\n", status = "400", close = true },
    { name = "Content-Length empty", req = "POST / HTTP/1.1\r\n" .. H .. "Content-Length:\r\n\r\n", status = "400", close = true },
    { name = "Content-Length leading zeros", req = "POST / HTTP/1.1\r\n" .. H .. "Content-Length: 003\r\n\r\nabc", status = "200", close = false },
    { name = "Content-Length too large for the server", req = "POST / HTTP/1.1\r\n" .. H .. "Content-Length: 100000000000\r\n\r\n", status = "413", close = false,
        luaio = { status = "413", close = true, why = "luaio does not read 100 GB to keep a connection" } },
    { name = "Content-Length on GET", req = "GET / HTTP/1.1\r\n" .. H .. "Content-Length: 3\r\n\r\nabc", status = "200", close = false },
    { name = "body shorter than Content-Length, then close", req = "POST / HTTP/1.1\r\n" .. H .. "Content-Length: 10\r\n\r\nabc", status = "", close = false },
    { name = "body longer than Content-Length smuggles a request", req = "POST / HTTP/1.1\r\n" .. H .. "Content-Length: 3\r\n\r\nabcGET /x HTTP/1.1\r\n" .. H .. "\r\n", status = "200 200", close = false },

    -- Transfer-Encoding
    { name = "chunked body", req = "POST / HTTP/1.1\r\n" .. H .. "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", status = "200", close = false },
    { name = "chunked, upper-case coding", req = "POST / HTTP/1.1\r\n" .. H .. "Transfer-Encoding: CHUNKED\r\n\r\n3\r\nabc\r\n0\r\n\r\n", status = "200", close = false },
    { name = "chunked with trailer fields", req = "POST / HTTP/1.1\r\n" .. H .. "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n", status = "200", close = false },
    { name = "chunk extension with token value", req = "POST / HTTP/1.1\r\n" .. H .. "Transfer-Encoding: chunked\r\n\r\n3;a=b\r\nabc\r\n0\r\n\r\n", status = "200", close = false },
    { name = "chunk extension with quoted value", req = "POST / HTTP/1.1\r\n" .. H .. "Transfer-Encoding: chunked\r\n\r\n3;name=\"quoted value\"\r\nabc\r\n0\r\n\r\n", status = "200", close = false },
    { name = "chunk extension with escaped quote", req = "POST / HTTP/1.1\r\n" .. H .. "Transfer-Encoding: chunked\r\n\r\n3;n=\"a\\\"b;c\"\r\nabc\r\n0\r\n\r\n", status = "200", close = false },
    { name = "chunk extension without value", req = "POST / HTTP/1.1\r\n" .. H .. "Transfer-Encoding: chunked\r\n\r\n3;ext\r\nabc\r\n0\r\n\r\n", status = "200", close = false },
    { name = "several chunk extensions", req = "POST / HTTP/1.1\r\n" .. H .. "Transfer-Encoding: chunked\r\n\r\n3;a=1;b=\"2\"\r\nabc\r\n0;c\r\n\r\n", status = "200", close = false },
    { name = "chunk extension on the last chunk", req = "POST / HTTP/1.1\r\n" .. H .. "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0;name=\"v\"\r\n\r\n", status = "200", close = false },
    { name = "chunk extension with space before semicolon", req = "POST / HTTP/1.1\r\n" .. H .. "Transfer-Encoding: chunked\r\n\r\n3 ;a=b\r\nabc\r\n0\r\n\r\n", status = "200", close = false },
    { name = "chunk data not followed by CRLF", req = "POST / HTTP/1.1\r\n" .. H .. "Transfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n", status = "400", close = true },
    { name = "chunk data longer than its size", req = "POST / HTTP/1.1\r\n" .. H .. "Transfer-Encoding: chunked\r\n\r\n3\r\nabcdef\r\n0\r\n\r\n", status = "400", close = true },
    { name = "chunk size not hex", req = "POST / HTTP/1.1\r\n" .. H .. "Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", status = "400", close = true },
    { name = "chunk size with 0x", req = "POST / HTTP/1.1\r\n" .. H .. "Transfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n", status = "400", close = true },
    { name = "chunk size negative", req = "POST / HTTP/1.1\r\n" .. H .. "Transfer-Encoding: chunked\r\n\r\n-3\r\nabc\r\n0\r\n\r\n", status = "400", close = true },
    { name = "chunk size overflow", req = "POST / HTTP/1.1\r\n" .. H .. "Transfer-Encoding: chunked\r\n\r\nfffffffffffffffff1\r\nabc\r\n0\r\n\r\n", status = "400", close = true },
    { name = "chunk size with leading space", req = "POST / HTTP/1.1\r\n" .. H .. "Transfer-Encoding: chunked\r\n\r\n 3\r\nabc\r\n0\r\n\r\n", status = "400", close = true },
    { name = "empty chunk size line", req = "POST / HTTP/1.1\r\n" .. H .. "Transfer-Encoding: chunked\r\n\r\n\r\nabc\r\n0\r\n\r\n", status = "400", close = true },
    { name = "chunk lines ending in bare LF", req = "POST / HTTP/1.1\r\n" .. H .. "Transfer-Encoding: chunked\r\n\r\n3\nabc\n0\n\n", status = "200", close = false },
    { name = "chunk extension with bare CR", req = "POST / HTTP/1.1\r\n" .. H .. "Transfer-Encoding: chunked\r\n\r\n3;a\rb\r\nabc\r\n0\r\n\r\n", status = "400", close = true },
    { name = "chunk extension with NUL", req = "POST / HTTP/1.1\r\n" .. H .. "Transfer-Encoding: chunked\r\n\r\n3;a\0\r\nabc\r\n0\r\n\r\n", status = "200", close = false },
    { name = "chunked then Content-Length", req = "POST / HTTP/1.1\r\n" .. H .. "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n", status = "400", close = true },
    { name = "Content-Length then chunked", req = "POST / HTTP/1.1\r\n" .. H .. "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", status = "400", close = true },
    { name = "Transfer-Encoding not chunked", req = "POST / HTTP/1.1\r\n" .. H .. "Transfer-Encoding: gzip\r\n\r\nabc", status = "501", close = true },
    { name = "Transfer-Encoding gzip, chunked", req = "POST / HTTP/1.1\r\n" .. H .. "Transfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", status = "501", close = true },
    { name = "Transfer-Encoding chunked, gzip", req = "POST / HTTP/1.1\r\n" .. H .. "Transfer-Encoding: chunked, gzip\r\n\r\n3\r\nabc\r\n0\r\n\r\n", status = "501", close = true },
    { name = "Transfer-Encoding chunked twice in a list", req = "POST / HTTP/1.1\r\n" .. H .. "Transfer-Encoding: chunked, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", status = "501", close = true },
    { name = "two Transfer-Encoding fields", req = "POST / HTTP/1.1\r\n" .. H .. "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", status = "400", close = true },
    { name = "Transfer-Encoding identity", req = "POST / HTTP/1.1\r\n" .. H .. "Transfer-Encoding: identity\r\n\r\n", status = "501", close = true },
    { name = "Transfer-Encoding empty", req = "POST / HTTP/1.1\r\n" .. H .. "Transfer-Encoding:\r\n\r\n", status = "501", close = true },
    { name = "Transfer-Encoding with HTTP/1.0", req = "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", status = "400", close = true },
    { name = "Transfer-Encoding chunked with trailing space", req = "POST / HTTP/1.1\r\n" .. H .. "Transfer-Encoding: chunked \r\n\r\n3\r\nabc\r\n0\r\n\r\n", status = "200", close = false },
    { name = "Transfer-Encoding misspelled", req = "POST / HTTP/1.1\r\n" .. H .. "Transfer-Encoding: chunkedx\r\n\r\n3\r\nabc\r\n0\r\n\r\n", status = "501", close = true },
    { name = "Transfer-Encoding name with space before colon", req = "POST / HTTP/1.1\r\n" .. H .. "Transfer-Encoding : chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", status = "400", close = true },
    { name = "chunked body too large for the server", req = "POST / HTTP/1.1\r\n" .. H .. "Transfer-Encoding: chunked\r\n\r\nffffffff\r\nabc", status = "413", close = true },
    { name = "chunked GET", req = "GET / HTTP/1.1\r\n" .. H .. "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", status = "200", close = false },

    -- Expect
    { name = "Expect 100-continue, HTTP/1.1", req = "POST / HTTP/1.1\r\n" .. H .. "Expect: 100-continue\r\nContent-Length: 3\r\n\r\n", status = "100", close = false },
    { name = "Expect 100-continue, HTTP/1.0", req = "POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n", status = "", close = false },
    { name = "Expect 100-continue with the body", req = "POST / HTTP/1.1\r\n" .. H .. "Expect: 100-continue\r\nContent-Length: 3\r\n\r\nabc", status = "100 200", close = false },
    { name = "Expect unknown", req = "POST / HTTP/1.1\r\n" .. H .. "Expect: foo\r\nContent-Length: 3\r\n\r\nabc", status = "200", close = false,
        luaio = { status = "417", close = true, why = "an expectation it cannot meet: 417 Expectation Failed (RFC 9110 10.1.1), as Node.js" } },
    { name = "Expect 100-continue without body", req = "GET / HTTP/1.1\r\n" .. H .. "Expect: 100-continue\r\n\r\n", status = "100 200", close = false,
        luaio = { status = "200", close = false, why = "no 100 Continue when there is no body to wait for" } },

    -- pipelining
    { name = "two pipelined requests", req = "GET /1 HTTP/1.1\r\n" .. H .. "\r\nGET /2 HTTP/1.1\r\n" .. H .. "\r\n", status = "200 200", close = false },
    { name = "bad request then a good one", req = "GET / HTTP/1.1\r\nHost : a\r\n\r\nGET /2 HTTP/1.1\r\n" .. H .. "\r\n", status = "400", close = true },
    { name = "good, bad, good", req = "GET /1 HTTP/1.1\r\n" .. H .. "\r\nGET / HTTP/1.1\r\n: x\r\n" .. H .. "\r\nGET /3 HTTP/1.1\r\n" .. H .. "\r\n", status = "200 400", close = true },
    { name = "bad chunked body then a request", req = "POST / HTTP/1.1\r\n" .. H .. "Transfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\nGET /2 HTTP/1.1\r\n" .. H .. "\r\n", status = "400", close = true },
    { name = "Connection: close then another request", req = "GET /1 HTTP/1.1\r\n" .. H .. "Connection: close\r\n\r\nGET /2 HTTP/1.1\r\n" .. H .. "\r\n", status = "200", close = true },
    { name = "HTTP/1.0 then another request", req = "GET /1 HTTP/1.0\r\n\r\nGET /2 HTTP/1.1\r\n" .. H .. "\r\n", status = "200", close = true },
    { name = "garbage after a request", req = "GET /1 HTTP/1.1\r\n" .. H .. "\r\nxyz\r\n\r\n", status = "200 400", close = true },

    -- Connection and Upgrade
    { name = "Connection list with close", req = "GET / HTTP/1.1\r\n" .. H .. "Connection: foo, close\r\n\r\n", status = "200", close = true },
    { name = "Connection: CLOSE", req = "GET / HTTP/1.1\r\n" .. H .. "Connection: CLOSE\r\n\r\n", status = "200", close = true },
    { name = "Upgrade to h2c without handler", req = "GET / HTTP/1.1\r\n" .. H .. "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n", status = "200", close = false },
    -- more of the same kinds
    { name = "WebSocket upgrade without a handler for it", req = "GET / HTTP/1.1\r\n" .. H .. "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", status = "200", close = false },
    { name = "Host with tab", req = "GET / HTTP/1.1\r\nHost: a\tb\r\n\r\n", status = "400", close = true },
    { name = "Host with trailing space", req = "GET / HTTP/1.1\r\nHost: a \r\n\r\n", status = "200", close = false },
    { name = "host name in lower case twice", req = "GET / HTTP/1.1\r\nhost: a\r\nHOST: a\r\n\r\n", status = "400", close = true },
    { name = "Expect 100-Continue in mixed case", req = "POST / HTTP/1.1\r\n" .. H .. "Expect: 100-Continue\r\nContent-Length: 3\r\n\r\n", status = "100", close = false },
    { name = "space after the version", req = "GET / HTTP/1.1 \r\n" .. H .. "\r\n", status = "200", close = false },
    { name = "colon twice", req = "GET / HTTP/1.1\r\n" .. H .. "X-A:: b\r\n\r\n", status = "200", close = false },
    { name = "field line of only a colon", req = "GET / HTTP/1.1\r\n" .. H .. ":\r\n\r\n", status = "400", close = true },
    { name = "Content-Length with surrounding spaces", req = "POST / HTTP/1.1\r\n" .. H .. "Content-Length:  3  \r\n\r\nabc", status = "200", close = false },
    { name = "chunked with Content-Length 0", req = "POST / HTTP/1.1\r\n" .. H .. "Content-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", status = "400", close = true },
    { name = "trailer line without colon", req = "POST / HTTP/1.1\r\n" .. H .. "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nbogus\r\n\r\n", status = "200", close = false },
    { name = "Content-Length in the trailer", req = "POST / HTTP/1.1\r\n" .. H .. "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nContent-Length: 10\r\n\r\n", status = "200", close = false },
    { name = "many chunks", req = "POST / HTTP/1.1\r\n" .. H .. "Transfer-Encoding: chunked\r\n\r\n" .. ("1\r\nx\r\n"):rep(200) .. "0\r\n\r\n", status = "200", close = false },
    { name = "upper-case hex chunk size", req = "POST / HTTP/1.1\r\n" .. H .. "Transfer-Encoding: chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\n", status = "200", close = false },
    { name = "chunk size with leading zeros", req = "POST / HTTP/1.1\r\n" .. H .. "Transfer-Encoding: chunked\r\n\r\n0003\r\nabc\r\n0\r\n\r\n", status = "200", close = false },
    { name = "chunked, then a pipelined GET", req = "POST / HTTP/1.1\r\n" .. H .. "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /2 HTTP/1.1\r\n" .. H .. "\r\n", status = "200 200", close = false },
    { name = "smuggling: chunked body hiding a request", req = "POST / HTTP/1.1\r\n" .. H .. "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\n" .. H .. "\r\n", status = "200 200", close = false },
    { name = "smuggling: TE with a vertical tab", req = "POST / HTTP/1.1\r\n" .. H .. "Transfer-Encoding:\vchunked\r\n\r\n0\r\n\r\n", status = "501", close = true },
    { name = "smuggling: TE x-chunked", req = "POST / HTTP/1.1\r\n" .. H .. "Transfer-Encoding: x-chunked\r\n\r\n0\r\n\r\n", status = "501", close = true },
    { name = "Content-Length on HTTP/1.0", req = "POST / HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc", status = "200", close = true },
    { name = "NUL in method", req = "GE\0T / HTTP/1.1\r\n" .. H .. "\r\n", status = "400", close = true },
    { name = "empty request line", req = "\r\n\r\n\r\n", status = "", close = false },
    { name = "only a method", req = "GET\r\n\r\n", status = "400", close = true },
    { name = "long target", req = "GET /" .. ("a"):rep(6000) .. " HTTP/1.1\r\n" .. H .. "\r\n", status = "200", close = false },
    { name = "non-token byte in a field name (ignored)", req = "GET / HTTP/1.1\r\n" .. H .. "X@A: b\r\n\r\n", status = "200", close = false },
    { name = "parenthesis in a field name (ignored)", req = "GET / HTTP/1.1\r\n" .. H .. "X(A: b\r\n\r\n", status = "200", close = false },
    { name = "UTF-8 in a field name (ignored)", req = "GET / HTTP/1.1\r\n" .. H .. "X\195\169: b\r\n\r\n", status = "200", close = false },
    { name = "Host with a non-token byte in its name", req = "GET / HTTP/1.1\r\nHo@st: a\r\n\r\n", status = "400", close = true },
    { name = "control byte in a field name", req = "GET / HTTP/1.1\r\n" .. H .. "X-A\1: b\r\n\r\n", status = "400", close = true },
    { name = "DEL in a field name", req = "GET / HTTP/1.1\r\n" .. H .. "X-A\127: b\r\n\r\n", status = "400", close = true },
    { name = "control byte in a field value", req = "GET / HTTP/1.1\r\n" .. H .. "X-A: a\1b\r\n\r\n", status = "200", close = false },
    { name = "DEL in a field value", req = "GET / HTTP/1.1\r\n" .. H .. "X-A: a\127b\r\n\r\n", status = "200", close = false },
    { name = "bytes above 0x7f in a field value", req = "GET / HTTP/1.1\r\n" .. H .. "X-A: \128\255\r\n\r\n", status = "200", close = false },
    { name = "control byte before chunked", req = "POST / HTTP/1.1\r\n" .. H .. "Transfer-Encoding: \1chunked\r\n\r\n0\r\n\r\n", status = "501", close = true },
    { name = "field line starting with a tab after the request line", req = "GET / HTTP/1.1\r\n\tHost: a\r\n\r\n", status = "400", close = true },
    { name = "NUL at the end of a field value", req = "GET / HTTP/1.1\r\n" .. H .. "X-A: b\0\r\n\r\n", status = "400", close = true },
}

-- Sends one case's bytes on a new connection and reads until the server closes or stays quiet
-- for `quiet` ms. Returns the status codes that came ("200 400") and whether it closed.
local function probe(port, bytes, quiet)
    local tcp = require "tcp"
    local sock = assert(tcp.connect(port, "127.0.0.1"))
    sock:settimeouts(quiet, quiet, quiet)
    local parts, closed = {}, false
    local err = sock:write(bytes)
    -- A server that closes at once may reset the connection before all of a long case is written.
    if err then
        closed = true
    end
    while not closed do
        local d, rerr = sock:read()
        if d then
            parts[#parts + 1] = d
        elseif not rerr or rerr.name ~= "ETIMEDOUT" then
            closed = true
        else
            break
        end
    end
    sock:close()
    local codes = {}
    for code in table.concat(parts):gmatch("HTTP/1%.[01] (%d%d%d) ") do
        codes[#codes + 1] = code
    end
    return table.concat(codes, " "), closed
end

-- Runs every case against 127.0.0.1:port, all at once (each waits `quiet` ms at most for its
-- last bytes). Returns a list of {case, status, close} in the order of the cases.
local function run(port, quiet)
    local task = require "task"
    local results, tasks = {}, {}
    for i, c in ipairs(cases) do
        tasks[i] = task.spawn(function()
            local status, closed = probe(port, c.req, quiet)
            results[i] = { case = c, status = status, close = closed }
        end)
    end
    for _, t in ipairs(tasks) do
        assert(t:join())
    end
    return results
end

return { cases = cases, probe = probe, run = run }
