// The TLS transport of a Stream (see Transport in runtime/stream.h): OpenSSL over a BIO of its
// own that holds no buffer (an idle session keeps none). Ciphertext read from the handle goes
// into the session as it is; what SSL_read makes of it goes to
// the Stream's buffer, so its read modes and Consumers run unchanged. Handshake records and the
// records that SSL_read produces (alerts, tickets) go out through Stream::send_raw; writes are
// encrypted by encode(). close_notify goes out before shutdown and close.
#pragma once

#include "runtime/stream.h"

#include <openssl/ssl.h>

namespace luaio {

// How a session starts on a stream.
struct TlsStart {
    bool server = false;
    const char* servername = nullptr;  // client: the SNI name sent (nullptr: none)
    const char* verify_host = nullptr; // client: the name or IP literal the certificate must match
    SSL_SESSION* session = nullptr;    // client: a session to resume (the caller keeps its reference)
};

// Puts a TLS session on ctx beneath s and starts its handshake (a client sends its ClientHello).
// Returns 0, or LUAIO_ETLS when OpenSSL cannot make the session.
int tls_attach(Stream* s, SSL_CTX* ctx, const TlsStart& how);
// The session of s (nullptr when s is not a TLS stream).
SSL* tls_session(Stream* s);
// The stream of a session (in OpenSSL's callbacks).
Stream* tls_stream(SSL* ssl);
// Goes on with the handshake of s after its client hello callback returned
// SSL_CLIENT_HELLO_RETRY (the handshake waits, reading nothing, until then); the callback is
// called again. Nothing happens when s is closing or not paused.
void tls_resume(Stream* s);
// Waits (parks the task, read_timeout bounding it) until the handshake of s is done: returns
// true, or nil and the error (ECERTVERIFY, EHOSTMISMATCH, ETLS, ETIMEDOUT, EOF ...).
// Use as `return tls_handshake(L, s, timeout_ms, fname);`.
int tls_handshake(lua_State* L, Stream* s, uint64_t timeout_ms, const char* fname);

} // namespace luaio
