// The TLS transport (see runtime/tls.h).
#include "runtime/tls.h"

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <cstring>
#include <string>

namespace luaio {

namespace {

// What sessions write (handshake records, alerts, tickets, close_notify) until it is sent; empty
// whenever control leaves the transport, so one buffer serves every session.
std::string& scratch() {
    static std::string out;
    return out;
}

class TlsTransport final : public Transport, public Consumer {
  public:
    explicit TlsTransport(SSL* ssl) : ssl_(ssl) {}
    ~TlsTransport() override { SSL_free(ssl_); }

    SSL* ssl() const { return ssl_; }

    void bytes_in(Stream* s, const char* data, size_t len) override {
        if (failed_) return;
        if (paused_) return keep_input(s, data, len);
        in_ = data;
        in_len_ = len;
        pump(s);
        // What a closing stream or a failed session did not take is dropped.
        in_ = nullptr;
        in_len_ = 0;
    }

    void read_end(Stream* s, int err) override {
        if (failed_) return;
        if (!done_ && err == UV_EOF) return fail(s, LUAIO_ETLS, "connection closed during the TLS handshake");
        // The peer closed the TCP connection without close_notify: the data may be cut short.
        if (err == UV_EOF) truncated_ = true;
        s->end_reading(err);
    }

    int encode(Stream* s, const uv_buf_t* bufs, unsigned n, std::string* out) override {
        if (failed_) return err_;
        if (!done_) {
            // Written before the handshake is done: kept, and sent once it is.
            for (unsigned i = 0; i < n; i++) early_.append(bufs[i].base, bufs[i].len);
            return 0;
        }
        Sink to(this, out);
        // Small writes (a head and a short body) go out as one record.
        static char coalesce[16 * 1024];
        size_t total = 0;
        for (unsigned i = 0; i < n; i++) total += bufs[i].len;
        if (n > 1 && total <= sizeof coalesce) {
            char* p = coalesce;
            for (unsigned i = 0; i < n; i++) {
                std::memcpy(p, bufs[i].base, bufs[i].len);
                p += bufs[i].len;
            }
            if (!write_all(coalesce, total)) return fail_write(s);
        } else {
            for (unsigned i = 0; i < n; i++)
                if (bufs[i].len && !write_all(bufs[i].base, bufs[i].len)) return fail_write(s);
        }
        return 0;
    }

    void ending(Stream* s) override {
        if (!done_ || failed_ || ended_) return;
        ended_ = true;
        SSL_shutdown(ssl_); // close_notify
        flush(s);
    }

    size_t pending() const override { return static_cast<size_t>(SSL_pending(ssl_)); }

    void push_error(lua_State* L, int err) const override {
        if (err == UV_EOF && truncated_) {
            luaio::push_error(L, err, "EOF", "connection closed without TLS close_notify (the data may be truncated)");
            lua_pushboolean(L, 1);
            lua_setfield(L, -2, "truncated");
        } else if (err <= kErrOwnBase) {
            luaio::push_error(L, err, err == err_ && !msg_.empty() ? msg_.c_str() : nullptr);
        } else {
            push_uv_error(L, err);
        }
    }

    // The handshake wait (Stream::read_with): true once the handshake is done.
    int consume(lua_State* L, const char*, size_t, int, size_t* used) override {
        *used = 0;
        if (!done_) return -1;
        lua_pushboolean(L, 1);
        return 1;
    }
    void ready(lua_State* L, int n) override { lua_pop(L, n); }

    bool done() const { return done_; }
    bool truncated() const { return truncated_; }

    // Goes on with a handshake that the client hello callback paused (see tls_resume).
    void resume(Stream* s) {
        if (!paused_ || failed_ || s->closing()) return;
        paused_ = false;
        std::string input;
        input.swap(paused_input_);
        in_ = input.data();
        in_len_ = input.size();
        pump(s);
        in_ = nullptr;
        in_len_ = 0;
    }

    // Drives the handshake, then decrypts what there is.
    void pump(Stream* s) {
        if (!done_) {
            int r = SSL_do_handshake(ssl_);
            if (r != 1) {
                int e = SSL_get_error(ssl_, r);
                if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
                    flush(s);
                    return;
                }
                if (e == SSL_ERROR_WANT_CLIENT_HELLO_CB) {
                    // The client hello callback waits for Lua (an sni function): what came after
                    // the ClientHello is kept for when it resumes.
                    paused_ = true;
                    keep_input(s, in_, in_len_);
                    in_len_ = 0;
                    return;
                }
                return fail_handshake(s);
            }
            done_ = true;
            if (!early_.empty()) {
                bool ok = write_all(early_.data(), early_.size());
                std::string().swap(early_);
                if (!ok) return fail(s, LUAIO_ETLS, nullptr);
            }
            flush(s);
            // A task waiting for the handshake looks again.
            s->deliver(nullptr, 0);
        }
        static char plain[16 * 1024];
        while (!s->closing() && !failed_) {
            int n = SSL_read(ssl_, plain, sizeof plain);
            if (n > 0) {
                // What reading produced goes out before anything a reader writes.
                flush(s);
                s->deliver(plain, static_cast<size_t>(n));
                // No bytes left beneath and none in the session: another SSL_read could only
                // say SSL_ERROR_WANT_READ (it cost ~7% of a keep-alive request's instructions).
                if (in_len_ == 0 && !SSL_has_pending(ssl_) && !s->closing()) return idle(s);
                continue;
            }
            int e = SSL_get_error(ssl_, n);
            if (e == SSL_ERROR_WANT_READ) return idle(s);
            flush(s); // alerts, tickets, key updates
            if (e == SSL_ERROR_ZERO_RETURN) return s->end_reading(UV_EOF);
            return fail(s, LUAIO_ETLS, nullptr);
        }
    }

    // Nothing is left to decrypt: what the session wrote (alerts, tickets, key updates) goes
    // out, and the record buffers go (SSL_MODE_RELEASE_BUFFERS misses the read buffer after a
    // post-handshake message such as a NewSessionTicket, and a client kept its 16.7 KB for the
    // connection's life).
    void idle(Stream* s) {
        flush(s);
        SSL_free_buffers(ssl_);
    }

    // The BIO beneath the session (see bio_method): reads take from the bytes just read from the
    // handle, writes append to the current sink.
    size_t bio_read(char* to, size_t len) {
        size_t n = len < in_len_ ? len : in_len_;
        if (n == 0) return 0; // in_ may be null between reads (memcpy must not see it)
        std::memcpy(to, in_, n);
        in_ += n;
        in_len_ -= n;
        return n;
    }
    void bio_write(const char* data, size_t len) { sink_->append(data, len); }
    size_t bio_pending() const { return in_len_; }

  private:
    // Bytes received while the handshake is paused, for resume (bounded: a client has no reason
    // to send much before the server's first flight).
    void keep_input(Stream* s, const char* data, size_t len) {
        if (paused_input_.size() + len > 64 * 1024)
            return fail(s, LUAIO_ETLS, "too much data before the TLS handshake");
        paused_input_.append(data, len);
    }

    // Points the session's output at out while it lives (an encoded write), then back.
    struct Sink {
        Sink(TlsTransport* t, std::string* out) : t_(t), saved_(t->sink_) { t->sink_ = out; }
        ~Sink() { t_->sink_ = saved_; }
        TlsTransport* t_;
        std::string* saved_;
    };

    bool write_all(const char* p, size_t len) {
        size_t written = 0;
        return SSL_write_ex(ssl_, p, len, &written) == 1 && written == len;
    }

    int fail_write(Stream* s) {
        set_error(LUAIO_ETLS, nullptr);
        (void)s;
        return err_;
    }

    // Sends what the session has written (handshake records, alerts) to the handle.
    void flush(Stream* s) {
        std::string& out = scratch();
        if (out.empty()) return;
        uv_buf_t b = uv_buf_init(out.data(), static_cast<unsigned>(out.size()));
        s->send_raw(&b, 1);
        out.clear();
        if (out.capacity() > 256 * 1024) std::string().swap(out);
    }

    void set_error(int code, const char* msg) {
        err_ = code;
        if (msg) {
            msg_ = msg;
        } else {
            unsigned long e = ERR_peek_last_error();
            const char* reason = e ? ERR_reason_error_string(e) : nullptr;
            msg_ = reason ? reason : "TLS protocol error";
        }
        ERR_clear_error();
    }

    void fail_handshake(Stream* s) {
        long vr = SSL_get_verify_result(ssl_);
        if (vr != X509_V_OK) {
            int code = vr == X509_V_ERR_HOSTNAME_MISMATCH || vr == X509_V_ERR_IP_ADDRESS_MISMATCH ? LUAIO_EHOSTMISMATCH
                                                                                                  : LUAIO_ECERTVERIFY;
            return fail(s, code, X509_verify_cert_error_string(vr));
        }
        fail(s, LUAIO_ETLS, nullptr);
    }

    // The session failed: the alert goes out, reading ends with the error.
    void fail(Stream* s, int code, const char* msg) {
        set_error(code, msg);
        failed_ = true;
        std::string().swap(early_);
        flush(s);
        s->end_reading(code);
    }

    SSL* ssl_;
    const char* in_ = nullptr; // the received bytes the session has not read yet
    size_t in_len_ = 0;
    std::string* sink_ = &scratch();
    std::string early_;        // plaintext written before the handshake was done
    std::string paused_input_; // ciphertext received while the handshake was paused
    std::string msg_;
    int err_ = 0;
    bool done_ = false;
    bool failed_ = false;
    bool ended_ = false;
    bool truncated_ = false;
    bool paused_ = false; // the client hello callback asked to wait (SSL_CLIENT_HELLO_RETRY)
};

// The BIO method of every session: no buffer of its own (an idle session holds none, and the
// bytes are not copied through one).
TlsTransport* bio_owner(BIO* b) {
    return static_cast<TlsTransport*>(BIO_get_data(b));
}

int bio_read_ex(BIO* b, char* to, size_t len, size_t* got) {
    BIO_clear_retry_flags(b);
    *got = bio_owner(b)->bio_read(to, len);
    if (*got) return 1;
    BIO_set_retry_read(b); // an empty input means "wait for more", not end of file
    return 0;
}

int bio_write_ex(BIO* b, const char* data, size_t len, size_t* written) {
    BIO_clear_retry_flags(b);
    bio_owner(b)->bio_write(data, len);
    *written = len;
    return 1;
}

long bio_ctrl(BIO* b, int cmd, long, void*) {
    switch (cmd) {
    case BIO_CTRL_FLUSH:
        return 1;
    case BIO_CTRL_PENDING:
        return static_cast<long>(bio_owner(b)->bio_pending());
    default:
        return 0;
    }
}

int bio_create(BIO* b) {
    BIO_set_init(b, 1);
    return 1;
}

BIO_METHOD* bio_method() {
    static BIO_METHOD* m = [] {
        BIO_METHOD* bm = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "luaio stream");
        BIO_meth_set_read_ex(bm, bio_read_ex);
        BIO_meth_set_write_ex(bm, bio_write_ex);
        BIO_meth_set_ctrl(bm, bio_ctrl);
        BIO_meth_set_create(bm, bio_create);
        return bm;
    }();
    return m;
}

// The ex data index of a session's Stream (tls_stream).
int stream_index() {
    static int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
    return index;
}

TlsTransport* transport_of(Stream* s) {
    return dynamic_cast<TlsTransport*>(s->transport());
}

} // namespace

int tls_attach(Stream* s, SSL_CTX* ctx, const TlsStart& how) {
    SSL* ssl = SSL_new(ctx);
    if (!ssl) return LUAIO_ETLS;
    BIO* bio = BIO_new(bio_method());
    if (!bio) {
        SSL_free(ssl);
        return LUAIO_ETLS;
    }
    SSL_set_bio(ssl, bio, bio);              // one reference for both directions
    SSL_set_ex_data(ssl, stream_index(), s); // for callbacks that resume the handshake later
    if (how.server) {
        SSL_set_accept_state(ssl);
    } else {
        SSL_set_connect_state(ssl);
        if (how.servername) SSL_set_tlsext_host_name(ssl, how.servername);
        if (how.session && SSL_set_session(ssl, how.session) != 1) ERR_clear_error();
        if (how.verify_host) {
            X509_VERIFY_PARAM* vp = SSL_get0_param(ssl);
            bool ok = X509_VERIFY_PARAM_set1_ip_asc(vp, how.verify_host) == 1;
            if (!ok) {
                ERR_clear_error();
                X509_VERIFY_PARAM_set_hostflags(vp, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
                ok = X509_VERIFY_PARAM_set1_host(vp, how.verify_host, 0) == 1;
            }
            if (!ok) {
                SSL_free(ssl);
                return LUAIO_ETLS;
            }
        }
    }
    auto* t = new TlsTransport(ssl);
    BIO_set_data(bio, t);
    s->set_transport(t);
    if (!how.server && !s->closing()) t->pump(s); // the ClientHello
    s->start_reading();
    return 0;
}

SSL* tls_session(Stream* s) {
    TlsTransport* t = transport_of(s);
    return t ? t->ssl() : nullptr;
}

Stream* tls_stream(SSL* ssl) {
    return static_cast<Stream*>(SSL_get_ex_data(ssl, stream_index()));
}

void tls_resume(Stream* s) {
    if (TlsTransport* t = transport_of(s)) t->resume(s);
}

int tls_handshake(lua_State* L, Stream* s, uint64_t timeout_ms, const char* fname) {
    TlsTransport* t = transport_of(s);
    if (!t) raise(L, fname, "not a TLS stream");
    uint64_t saved = s->read_timeout;
    s->read_timeout = timeout_ms;
    int r = s->read_with(L, t, fname);
    s->read_timeout = saved;
    return r;
}

} // namespace luaio
