// The TLS transport (see runtime/tls.h).
#include "runtime/tls.h"

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <cstring>
#include <string>

namespace luaio {

namespace {

class TlsTransport final : public Transport, public Consumer {
  public:
    explicit TlsTransport(SSL* ssl) : ssl_(ssl) {}
    ~TlsTransport() override { SSL_free(ssl_); }

    SSL* ssl() const { return ssl_; }
    BIO* rbio() const { return SSL_get_rbio(ssl_); }
    BIO* wbio() const { return SSL_get_wbio(ssl_); }

    void bytes_in(Stream* s, const char* data, size_t len) override {
        if (failed_) return;
        BIO_write(rbio(), data, static_cast<int>(len));
        pump(s);
    }

    void read_end(Stream* s, int err) override {
        if (failed_) return;
        if (!done_ && err == UV_EOF) return fail(s, LUAIO_ETLS, "connection closed during the TLS handshake");
        s->end_reading(err);
    }

    int encode(Stream* s, const uv_buf_t* bufs, unsigned n, std::string* out) override {
        if (failed_) return err_;
        if (!done_) {
            err_ = LUAIO_ETLS;
            msg_ = "write before the TLS handshake is done";
            return err_;
        }
        // Small writes (a head and a short body) go out as one record.
        static char coalesce[16 * 1024];
        size_t total = 0;
        for (unsigned i = 0; i < n; i++) total += bufs[i].len;
        if (n > 1 && total <= sizeof coalesce) {
            char* to = coalesce;
            for (unsigned i = 0; i < n; i++) {
                std::memcpy(to, bufs[i].base, bufs[i].len);
                to += bufs[i].len;
            }
            if (!write_all(coalesce, total)) return fail_write(s);
        } else {
            for (unsigned i = 0; i < n; i++)
                if (bufs[i].len && !write_all(bufs[i].base, bufs[i].len)) return fail_write(s);
        }
        take_output(out);
        return 0;
    }

    void ending(Stream* s) override {
        if (!done_ || failed_ || ended_) return;
        ended_ = true;
        SSL_shutdown(ssl_); // queues close_notify in the write BIO
        flush(s);
    }

    size_t pending() const override { return static_cast<size_t>(SSL_pending(ssl_)); }

    void push_error(lua_State* L, int err) const override {
        luaio::push_error(L, err, err == err_ && !msg_.empty() ? msg_.c_str() : nullptr);
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
                return fail_handshake(s);
            }
            done_ = true;
            flush(s);
            // A task waiting for the handshake looks again.
            s->deliver(nullptr, 0);
        }
        static char plain[16 * 1024];
        while (!s->closing() && !failed_) {
            int n = SSL_read(ssl_, plain, sizeof plain);
            if (n > 0) {
                s->deliver(plain, static_cast<size_t>(n));
                continue;
            }
            int e = SSL_get_error(ssl_, n);
            flush(s); // what reading produced: alerts, tickets, key updates
            if (e == SSL_ERROR_WANT_READ) return;
            if (e == SSL_ERROR_ZERO_RETURN) return s->end_reading(UV_EOF);
            return fail(s, LUAIO_ETLS, nullptr);
        }
    }

  private:
    bool write_all(const char* p, size_t len) {
        size_t written = 0;
        return SSL_write_ex(ssl_, p, len, &written) == 1 && written == len;
    }

    int fail_write(Stream* s) {
        set_error(LUAIO_ETLS, nullptr);
        (void)s;
        return err_;
    }

    static std::string& scratch() {
        static std::string out;
        return out;
    }

    void take_output(std::string* out) {
        size_t n = BIO_ctrl_pending(wbio());
        if (!n) return;
        size_t at = out->size();
        out->resize(at + n);
        BIO_read(wbio(), &(*out)[at], static_cast<int>(n));
    }

    // Sends what the session has written (handshake records, alerts) to the handle.
    void flush(Stream* s) {
        std::string& out = scratch();
        out.clear();
        take_output(&out);
        if (out.empty()) return;
        uv_buf_t b = uv_buf_init(out.data(), static_cast<unsigned>(out.size()));
        s->send_raw(&b, 1);
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
        flush(s);
        s->end_reading(code);
    }

    SSL* ssl_;
    std::string msg_;
    int err_ = 0;
    bool done_ = false;
    bool failed_ = false;
    bool ended_ = false;
};

TlsTransport* transport_of(Stream* s) {
    return dynamic_cast<TlsTransport*>(s->transport());
}

} // namespace

int tls_attach(Stream* s, SSL_CTX* ctx, const TlsStart& how) {
    SSL* ssl = SSL_new(ctx);
    if (!ssl) return LUAIO_ETLS;
    BIO* rbio = BIO_new(BIO_s_mem());
    BIO* wbio = BIO_new(BIO_s_mem());
    if (!rbio || !wbio) {
        BIO_free(rbio);
        BIO_free(wbio);
        SSL_free(ssl);
        return LUAIO_ETLS;
    }
    // An empty read BIO means "wait for more", not end of file.
    BIO_set_mem_eof_return(rbio, -1);
    SSL_set_bio(ssl, rbio, wbio);
    if (how.server) {
        SSL_set_accept_state(ssl);
    } else {
        SSL_set_connect_state(ssl);
        if (how.servername) SSL_set_tlsext_host_name(ssl, how.servername);
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
    s->set_transport(t);
    if (!how.server && !s->closing()) t->pump(s); // the ClientHello
    s->start_reading();
    return 0;
}

SSL* tls_session(Stream* s) {
    TlsTransport* t = transport_of(s);
    return t ? t->ssl() : nullptr;
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
