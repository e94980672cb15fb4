// luaio.tls: TLS contexts and sessions on streams, for lib/tls.lua (see docs/tls.md).
//
//   ctx = core.context(options)                 -- an SSL_CTX: certificates, CAs, ALPN, versions
//   err = core.attach(sock, ctx, server[, servername[, verify_host[, session]]])
//   session = core.session(sock)                -- the client's session, serialized (resumption)
//   ok, err = core.handshake(sock, timeout_ms)  -- waits for the handshake
//   info = core.info(sock)                      -- also sock:tlsInfo()
// The session itself is the Stream's TLS transport (runtime/tls.cpp): reads, writes, timeouts
// and closing of a TLS socket are the Stream's.
#include "runtime/luaio.h"
#include "runtime/stream.h"
#include "runtime/tls.h"

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>

#include <unistd.h>

namespace {

using luaio::Stream;

constexpr const char* kContextClass = "luaio.tls.context";

// How long a session ticket key makes tickets before the next one does (ms); tickets of the
// previous key are still accepted, so a ticket lives up to twice this.
constexpr lua_Number kDefaultTicketRotation = 12 * 3600 * 1000;

struct Context {
    SSL_CTX* ctx;
};

// The ALPN protocols a server accepts (wire format), kept with its SSL_CTX.
int g_alpn_index = -1;

void free_alpn(void*, void* ptr, CRYPTO_EX_DATA*, int, long, void*) {
    delete static_cast<std::string*>(ptr);
}

// A server context's SNI selector: a registry reference to select(servername) -> context or nil.
int g_select_index = -1;

void free_select(void*, void* ptr, CRYPTO_EX_DATA*, int, long, void*) {
    auto* ref = static_cast<int*>(ptr);
    if (!ref) return;
    // After lua_close (the last loop turn at exit) the registry is gone with the state.
    if (lua_State* L = luaio::main_state()) luaL_unref(L, LUA_REGISTRYINDEX, *ref);
    delete ref;
}

// Session ticket keys of a server context, rotated: tickets made with the previous key are still
// accepted (and renewed), older ones are not.
struct TicketKey {
    unsigned char name[16];
    unsigned char aes[32];
    unsigned char hmac[32];
};

struct TicketKeys {
    TicketKey current, previous;
    bool has_previous = false;
    uint64_t rotated_at = 0; // ms (luaio::now_ms)
    uint64_t lifetime = 0;   // ms a key makes tickets; 0: never rotated
    // Keys derived from a secret (the workers of one master share it): the key of a period of
    // the wall clock is the same in every process, so a ticket of one worker resumes on another.
    bool derived = false;
    unsigned char secret[32];
    uint64_t period = UINT64_MAX; // the wall-clock period (ms since the epoch / lifetime) of current
};

int g_tickets_index = -1;

// A context's keys (ex data): shared by the contexts of one server (its SNI contexts, the ones a
// certificate reload makes), so that a ticket from one is accepted by the others.
using SharedKeys = std::shared_ptr<TicketKeys>;

void free_tickets(void*, void* ptr, CRYPTO_EX_DATA*, int, long, void*) {
    auto* keys = static_cast<SharedKeys*>(ptr);
    if (keys && keys->use_count() == 1) OPENSSL_cleanse(keys->get(), sizeof(TicketKeys));
    delete keys;
}

TicketKeys* ticket_keys(SSL_CTX* ctx) {
    auto* keys = static_cast<SharedKeys*>(SSL_CTX_get_ex_data(ctx, g_tickets_index));
    return keys ? keys->get() : nullptr;
}

bool new_ticket_key(TicketKey* k) {
    return RAND_bytes(k->name, sizeof k->name) == 1 && RAND_priv_bytes(k->aes, sizeof k->aes) == 1 &&
           RAND_priv_bytes(k->hmac, sizeof k->hmac) == 1;
}

// The key of `period` derived from the secret: HMAC-SHA256(secret, label || period) for each part.
void derive_ticket_key(const unsigned char* secret, uint64_t period, TicketKey* k) {
    unsigned char msg[16 + 8];
    for (int i = 0; i < 8; i++) msg[16 + i] = static_cast<unsigned char>(period >> (56 - 8 * i));
    struct Part {
        const char* label;
        unsigned char* out;
        size_t len;
    } parts[] = {{"luaio ticket nam", k->name, sizeof k->name},
                 {"luaio ticket aes", k->aes, sizeof k->aes},
                 {"luaio ticket mac", k->hmac, sizeof k->hmac}};
    for (const Part& p : parts) {
        std::memcpy(msg, p.label, 16);
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned mdlen = 0;
        HMAC(EVP_sha256(), secret, 32, msg, sizeof msg, md, &mdlen);
        std::memcpy(p.out, md, p.len);
        OPENSSL_cleanse(md, sizeof md);
    }
}

// Derived keys: current is the key of this period of the wall clock, previous the one before.
void derive_current(TicketKeys* keys) {
    uv_timeval64_t tv;
    uv_gettimeofday(&tv);
    uint64_t wall_ms = static_cast<uint64_t>(tv.tv_sec) * 1000 + static_cast<uint64_t>(tv.tv_usec) / 1000;
    uint64_t period = keys->lifetime ? wall_ms / keys->lifetime : 0;
    if (keys->period == period) return;
    keys->period = period;
    derive_ticket_key(keys->secret, period, &keys->current);
    keys->has_previous = period > 0;
    if (keys->has_previous) derive_ticket_key(keys->secret, period - 1, &keys->previous);
}

bool init_ticket(const TicketKey& k, unsigned char* iv, EVP_CIPHER_CTX* cctx, EVP_MAC_CTX* hctx, int enc) {
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", const_cast<char*>("SHA256"), 0),
                           OSSL_PARAM_construct_end()};
    if (EVP_MAC_CTX_set_params(hctx, params) != 1) return false;
    if (EVP_MAC_init(hctx, k.hmac, sizeof k.hmac, nullptr) != 1) return false;
    return (enc ? EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), nullptr, k.aes, iv)
                : EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), nullptr, k.aes, iv)) == 1;
}

// OpenSSL's ticket key callback: 1 ticket ok, 2 ok and to be renewed, 0 unknown key, -1 failure.
int ticket_key_cb(SSL* ssl, unsigned char* name, unsigned char* iv, EVP_CIPHER_CTX* cctx, EVP_MAC_CTX* hctx, int enc) {
    TicketKeys* keys = ticket_keys(SSL_get_SSL_CTX(ssl));
    if (!keys) return -1;
    uint64_t now = luaio::now_ms();
    if (keys->derived) {
        derive_current(keys);
    } else if (keys->lifetime && now - keys->rotated_at >= keys->lifetime) {
        TicketKey next;
        if (new_ticket_key(&next)) {
            // A key unused for a whole period is dropped, not kept as the previous one.
            keys->has_previous = now - keys->rotated_at < 2 * keys->lifetime;
            keys->previous = keys->current;
            keys->current = next;
            keys->rotated_at = now;
            OPENSSL_cleanse(&next, sizeof next);
        }
    }
    if (enc) {
        std::memcpy(name, keys->current.name, sizeof keys->current.name);
        if (RAND_bytes(iv, EVP_MAX_IV_LENGTH) != 1) return -1;
        return init_ticket(keys->current, iv, cctx, hctx, 1) ? 1 : -1;
    }
    // A TLS 1.3 client uses a ticket once (RFC 8446, appendix C.4; OpenSSL's clients do): a
    // resumed session gets a new ticket, or the client's next connection is a full handshake.
    // OpenSSL sends one after a resumption only for a ticket "to be renewed".
    int ok = SSL_version(ssl) == TLS1_3_VERSION ? 2 : 1;
    if (!std::memcmp(name, keys->current.name, sizeof keys->current.name))
        return init_ticket(keys->current, iv, cctx, hctx, 0) ? ok : -1;
    if (keys->has_previous && !std::memcmp(name, keys->previous.name, sizeof keys->previous.name))
        return init_ticket(keys->previous, iv, cctx, hctx, 0) ? 2 : -1;
    return 0;
}

// An SNI selection that waits for Lua (an sni function that parks): the session's handshake
// is paused (SSL_CLIENT_HELLO_RETRY) until core.sniDone gives the context, on a later loop turn.
// Shared by the session (its ex data, freed with it) and the waiting Lua code (a userdata), so
// that whichever goes first leaves the other something valid.
struct SniWait {
    luaio::Stream* stream = nullptr; // nullptr once the session is freed (the connection closed)
    SSL_CTX* ctx = nullptr;          // the chosen context (a reference), nullptr: the default one
    bool waiting = true;             // until core.sniDone
    bool failed = false;             // the selector raised: the handshake fails
    bool calling = false;            // the client hello callback is calling the selector
    ~SniWait() { SSL_CTX_free(ctx); }
};
using SharedSni = std::shared_ptr<SniWait>;

constexpr const char* kSniClass = "luaio.tls.sniwait";
int g_sni_index = -1;

void free_sni(void*, void* ptr, CRYPTO_EX_DATA*, int, long, void*) {
    auto* w = static_cast<SharedSni*>(ptr);
    if (!w) return;
    (*w)->stream = nullptr;
    delete w;
}

// The host name of the ClientHello's server_name extension (RFC 6066), "" when there is none.
std::string client_hello_name(SSL* ssl) {
    const unsigned char* p;
    size_t len;
    if (!SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_server_name, &p, &len) || len < 5) return "";
    size_t list = (size_t(p[0]) << 8) | p[1];
    if (list + 2 != len || p[2] != TLSEXT_NAMETYPE_host_name) return "";
    size_t n = (size_t(p[3]) << 8) | p[4];
    if (n == 0 || n + 5 > len || std::memchr(p + 5, 0, n)) return "";
    return std::string(reinterpret_cast<const char*>(p + 5), n);
}

// The client hello callback of a server context with a selector: select(servername, wait) on
// the main state returns a context (its certificate is used), nil (this context's), or the
// wait userdata: the selector started a task that will call core.sniDone(wait, ok, context),
// and the handshake waits for it (called again then, this returns what it gave). An error of the
// selector fails the handshake (an internal_error alert), after it is reported.
int client_hello_cb(SSL* ssl, int* alert, void*) {
    if (auto* held = static_cast<SharedSni*>(SSL_get_ex_data(ssl, g_sni_index))) {
        SniWait& w = **held;
        if (w.waiting) return SSL_CLIENT_HELLO_RETRY;
        *alert = SSL_AD_INTERNAL_ERROR;
        if (w.failed) return SSL_CLIENT_HELLO_ERROR;
        if (w.ctx) SSL_set_SSL_CTX(ssl, w.ctx);
        return SSL_CLIENT_HELLO_SUCCESS;
    }
    auto* ref = static_cast<int*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), g_select_index));
    lua_State* L = luaio::main_state();
    if (!ref || !L) return SSL_CLIENT_HELLO_SUCCESS;
    std::string name = client_hello_name(ssl);
    if (name.empty()) return SSL_CLIENT_HELLO_SUCCESS;
    auto* stream = luaio::tls_stream(ssl);
    lua_rawgeti(L, LUA_REGISTRYINDEX, *ref);
    lua_pushlstring(L, name.data(), name.size());
    auto* ud = new (lua_newuserdata(L, sizeof(SharedSni))) SharedSni(std::make_shared<SniWait>());
    SharedSni w = *ud;
    luaL_getmetatable(L, kSniClass);
    lua_setmetatable(L, -2);
    // The selector's task may end before it returns (a function that does not wait).
    w->calling = true;
    int failed = lua_pcall(L, 2, 1, 0);
    w->calling = false;
    if (failed) {
        luaio::report_error(L, "tls sni: ", lua_tostring(L, -1));
        lua_pop(L, 1);
        *alert = SSL_AD_INTERNAL_ERROR;
        return SSL_CLIENT_HELLO_ERROR;
    }
    int result = SSL_CLIENT_HELLO_SUCCESS;
    if (auto* c = static_cast<Context*>(luaio::test_object(L, -1, kContextClass))) {
        if (c->ctx) SSL_set_SSL_CTX(ssl, c->ctx);
    } else if (lua_touserdata(L, -1) == ud) {
        if (!w->waiting) {
            // Done already.
            if (w->failed) result = SSL_CLIENT_HELLO_ERROR;
            if (w->ctx) SSL_set_SSL_CTX(ssl, w->ctx);
        } else if (stream) {
            w->stream = stream;
            SSL_set_ex_data(ssl, g_sni_index, new SharedSni(w));
            result = SSL_CLIENT_HELLO_RETRY;
        } else {
            result = SSL_CLIENT_HELLO_ERROR;
        }
    }
    lua_pop(L, 1);
    if (result == SSL_CLIENT_HELLO_ERROR) *alert = SSL_AD_INTERNAL_ERROR;
    return result;
}

void on_sni_resume(uv_timer_t* t) {
    auto* w = static_cast<SharedSni*>(t->data);
    if ((*w)->stream) luaio::tls_resume((*w)->stream);
    delete w;
    uv_close(reinterpret_cast<uv_handle_t*>(t), [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
}

// core.sniDone(wait, ok, context | error): the end of a selection that waited. The handshake
// goes on at the next loop turn (not inside the calling task: it may deliver bytes and wake
// readers); nothing happens when the connection closed meanwhile.
int l_sni_done(lua_State* L) {
    auto* ud = static_cast<SharedSni*>(luaio::test_object(L, 1, kSniClass));
    if (!ud) luaio::raise(L, "sniDone", "expected an sni wait as argument 1");
    SniWait& w = **ud;
    if (!w.waiting) return 0;
    w.waiting = false;
    if (!lua_toboolean(L, 2)) {
        w.failed = true;
        const char* msg = lua_tostring(L, 3);
        luaio::report_error(L, "tls sni: ", msg ? msg : "the sni function failed");
    } else if (auto* c = static_cast<Context*>(luaio::test_object(L, 3, kContextClass))) {
        if (c->ctx && SSL_CTX_up_ref(c->ctx) == 1) w.ctx = c->ctx;
    }
    if (!w.stream || w.calling) return 0;
    auto* t = new uv_timer_t;
    uv_timer_init(luaio::loop(), t);
    t->data = new SharedSni(*ud);
    uv_timer_start(t, on_sni_resume, 0, 0);
    return 0;
}

int l_sni_gc(lua_State* L) {
    if (auto* ud = static_cast<SharedSni*>(luaio::test_object(L, 1, kSniClass))) ud->~SharedSni();
    return 0;
}

// OpenSSL's reason for the last failure, and the error queue cleared.
std::string ssl_reason(const char* what) {
    unsigned long e = ERR_peek_last_error();
    const char* reason = e ? ERR_reason_error_string(e) : nullptr;
    ERR_clear_error();
    std::string m = what;
    if (reason) m += std::string(": ") + reason;
    return m;
}

bool is_pem(const char* s) {
    return std::strstr(s, "-----BEGIN") != nullptr;
}

// A BIO reading PEM text or a file.
BIO* open_pem(const char* v) {
    return is_pem(v) ? BIO_new_mem_buf(v, -1) : BIO_new_file(v, "r");
}

// The certificate chain: the leaf first, then its intermediates.
bool use_chain(SSL_CTX* ctx, const char* v) {
    BIO* b = open_pem(v);
    if (!b) return false;
    X509* leaf = PEM_read_bio_X509_AUX(b, nullptr, nullptr, nullptr);
    bool ok = leaf && SSL_CTX_use_certificate(ctx, leaf) == 1;
    X509_free(leaf);
    while (ok) {
        X509* ca = PEM_read_bio_X509(b, nullptr, nullptr, nullptr);
        if (!ca) {
            ERR_clear_error(); // the end of the chain
            break;
        }
        ok = SSL_CTX_add0_chain_cert(ctx, ca) == 1;
        if (!ok) X509_free(ca);
    }
    BIO_free(b);
    return ok;
}

bool use_key(SSL_CTX* ctx, const char* v) {
    BIO* b = open_pem(v);
    if (!b) return false;
    EVP_PKEY* k = PEM_read_bio_PrivateKey(b, nullptr, nullptr, nullptr);
    BIO_free(b);
    bool ok = k && SSL_CTX_use_PrivateKey(ctx, k) == 1;
    EVP_PKEY_free(k);
    return ok && SSL_CTX_check_private_key(ctx) == 1;
}

// Trusted CAs from PEM text, a file or a directory of hashed certificates.
bool use_ca(SSL_CTX* ctx, const char* v) {
    if (!is_pem(v)) {
        FILE* f = std::fopen(v, "r");
        if (f) {
            std::fclose(f);
            return SSL_CTX_load_verify_locations(ctx, v, nullptr) == 1 ||
                   SSL_CTX_load_verify_locations(ctx, nullptr, v) == 1;
        }
        return SSL_CTX_load_verify_locations(ctx, nullptr, v) == 1;
    }
    BIO* b = BIO_new_mem_buf(v, -1);
    X509_STORE* store = SSL_CTX_get_cert_store(ctx);
    int n = 0;
    while (X509* c = PEM_read_bio_X509(b, nullptr, nullptr, nullptr)) {
        X509_STORE_add_cert(store, c);
        X509_free(c);
        n++;
    }
    ERR_clear_error();
    BIO_free(b);
    return n > 0;
}

int alpn_select(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in, unsigned inlen,
                void* arg) {
    auto* wire = static_cast<std::string*>(arg);
    unsigned char* sel = nullptr;
    if (SSL_select_next_proto(&sel, outlen, reinterpret_cast<const unsigned char*>(wire->data()),
                              static_cast<unsigned>(wire->size()), in, inlen) != OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

// A verify callback that accepts every certificate (rejectUnauthorized = false): the result is
// still in SSL_get_verify_result for tlsInfo.
int accept_any(int, X509_STORE_CTX*) {
    return 1;
}

const char* opt_string(lua_State* L, int idx, const char* key) {
    lua_getfield(L, idx, key);
    const char* v = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : nullptr;
    lua_pop(L, 1); // the options table keeps the string
    return v;
}

bool opt_bool(lua_State* L, int idx, const char* key, bool dflt) {
    lua_getfield(L, idx, key);
    bool v = lua_isnil(L, -1) ? dflt : lua_toboolean(L, -1) != 0;
    lua_pop(L, 1);
    return v;
}

int fail(lua_State* L, SSL_CTX* ctx, const std::string& msg) {
    SSL_CTX_free(ctx);
    lua_pushnil(L);
    luaio::push_error(L, UV_EINVAL, msg.c_str());
    return 2;
}

// A cert, key or ca option that names a file (not PEM text) which cannot be read: the error of
// the file system, naming the option and the path, instead of OpenSSL's "no such file" alone (and
// instead of a ca directory that does not exist being taken as empty).
int fail_unreadable(lua_State* L, SSL_CTX* ctx, const char* what, const char* v) {
    if (!v || is_pem(v) || access(v, R_OK) == 0) return 0;
    int e = -errno;
    SSL_CTX_free(ctx);
    lua_pushnil(L);
    std::string msg = std::string("tls: cannot read the ") + what + ": " + uv_strerror(e);
    luaio::push_error(L, e, msg.c_str());
    luaio::set_error_path(L, "open", v);
    return 2;
}

// ctx, err = core.context(options): options are checked by lib/tls.lua.
int l_context(lua_State* L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    bool server = opt_bool(L, 1, "server", false);
    SSL_CTX* ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    if (!ctx) return fail(L, nullptr, ssl_reason("tls: cannot make a context"));
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    // An idle connection holds no record buffers.
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    const char* minv = opt_string(L, 1, "minVersion");
    int ver = TLS1_2_VERSION;
    if (minv) {
        if (!std::strcmp(minv, "TLSv1.3"))
            ver = TLS1_3_VERSION;
        else if (std::strcmp(minv, "TLSv1.2") != 0)
            return fail(L, ctx, "tls: minVersion must be \"TLSv1.2\" or \"TLSv1.3\"");
    }
    SSL_CTX_set_min_proto_version(ctx, ver);
    if (const char* c = opt_string(L, 1, "ciphers"))
        if (SSL_CTX_set_cipher_list(ctx, c) != 1) return fail(L, ctx, ssl_reason("tls: bad ciphers"));
    if (const char* c = opt_string(L, 1, "ciphersuites"))
        if (SSL_CTX_set_ciphersuites(ctx, c) != 1) return fail(L, ctx, ssl_reason("tls: bad ciphersuites"));
    const char* cert = opt_string(L, 1, "cert");
    const char* key = opt_string(L, 1, "key");
    const char* ca = opt_string(L, 1, "ca");
    if (int n = fail_unreadable(L, ctx, "certificate", cert)) return n;
    if (int n = fail_unreadable(L, ctx, "private key", key)) return n;
    if (int n = fail_unreadable(L, ctx, "CA certificates", ca)) return n;
    if (cert && !use_chain(ctx, cert)) return fail(L, ctx, ssl_reason("tls: cannot use the certificate"));
    if (key && !use_key(ctx, key)) return fail(L, ctx, ssl_reason("tls: cannot use the private key"));
    if (ca && !use_ca(ctx, ca)) return fail(L, ctx, ssl_reason("tls: cannot load the CA certificates"));
    if (server) {
        // The chain sent is what `cert` holds: OpenSSL does not build (and verify) one from the
        // store at every handshake.
        SSL_CTX_set_mode(ctx, SSL_MODE_NO_AUTO_CHAIN);
        // Sessions resume by tickets only: no server-side cache grows with the clients.
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
        if (!opt_bool(L, 1, "sessionTickets", true)) {
            SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
            SSL_CTX_set_num_tickets(ctx, 0);
        } else {
            lua_getfield(L, 1, "ticketsOf");
            auto* of = static_cast<Context*>(luaio::test_object(L, -1, kContextClass));
            lua_pop(L, 1);
            auto* shared =
                of && of->ctx ? static_cast<SharedKeys*>(SSL_CTX_get_ex_data(of->ctx, g_tickets_index)) : nullptr;
            if (shared) {
                SSL_CTX_set_ex_data(ctx, g_tickets_index, new SharedKeys(*shared));
            } else {
                auto keys = std::make_shared<TicketKeys>();
                lua_getfield(L, 1, "ticketKeyRotation");
                lua_Number ms = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : kDefaultTicketRotation;
                lua_pop(L, 1);
                keys->lifetime = ms > 0 ? static_cast<uint64_t>(ms) : 0;
                keys->rotated_at = luaio::now_ms();
                SSL_CTX_set_ex_data(ctx, g_tickets_index, new SharedKeys(keys));
                size_t slen = 0;
                lua_getfield(L, 1, "ticketSecret");
                const char* secret = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &slen) : nullptr;
                lua_pop(L, 1);
                if (secret && slen == sizeof keys->secret) {
                    keys->derived = true;
                    std::memcpy(keys->secret, secret, slen);
                    derive_current(keys.get());
                } else if (!new_ticket_key(&keys->current)) {
                    return fail(L, ctx, ssl_reason("tls: cannot make a ticket key"));
                }
            }
            SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_key_cb);
        }
        lua_getfield(L, 1, "select");
        if (lua_isfunction(L, -1)) {
            SSL_CTX_set_ex_data(ctx, g_select_index, new int(luaL_ref(L, LUA_REGISTRYINDEX)));
            SSL_CTX_set_client_hello_cb(ctx, client_hello_cb, nullptr);
        } else {
            lua_pop(L, 1);
        }
        if (opt_bool(L, 1, "requestCert", false)) {
            bool reject = opt_bool(L, 1, "rejectUnauthorized", true);
            SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | (reject ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0),
                               reject ? nullptr : accept_any);
        }
    } else {
        if (!ca && SSL_CTX_set_default_verify_paths(ctx) != 1) ERR_clear_error();
        SSL_CTX_set_verify(ctx, opt_bool(L, 1, "verify", true) ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, nullptr);
    }
    lua_getfield(L, 1, "alpn");
    if (lua_istable(L, -1)) {
        std::string wire;
        for (int i = 1;; i++) {
            lua_rawgeti(L, -1, i);
            size_t len;
            const char* p = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : nullptr;
            lua_pop(L, 1);
            if (!p) break;
            if (len == 0 || len > 255) return fail(L, ctx, "tls: an alpn protocol name has 1 to 255 bytes");
            wire += static_cast<char>(len);
            wire.append(p, len);
        }
        if (server) {
            auto* w = new std::string(wire);
            SSL_CTX_set_ex_data(ctx, g_alpn_index, w);
            SSL_CTX_set_alpn_select_cb(ctx, alpn_select, w);
        } else if (!wire.empty()) {
            SSL_CTX_set_alpn_protos(ctx, reinterpret_cast<const unsigned char*>(wire.data()),
                                    static_cast<unsigned>(wire.size()));
        }
    }
    lua_pop(L, 1);
    auto* c = static_cast<Context*>(lua_newuserdata(L, sizeof(Context)));
    c->ctx = ctx;
    luaL_getmetatable(L, kContextClass);
    lua_setmetatable(L, -2);
    return 1;
}

Context* check_context(lua_State* L, int idx, const char* fname) {
    auto* c = static_cast<Context*>(luaio::test_object(L, idx, kContextClass));
    if (!c || !c->ctx) luaio::raise(L, fname, "expected a tls context as argument %d", idx);
    return c;
}

int l_context_gc(lua_State* L) {
    if (auto* c = static_cast<Context*>(luaio::test_object(L, 1, kContextClass))) {
        SSL_CTX_free(c->ctx);
        c->ctx = nullptr;
    }
    return 0;
}

// err = core.attach(sock, ctx, server[, servername[, verify_host]])
int l_attach(lua_State* L) {
    Stream* s = Stream::check(L, 1, "attach");
    Context* c = check_context(L, 2, "attach");
    if (s->transport()) luaio::raise(L, "attach", "the stream already has TLS");
    luaio::TlsStart how;
    how.server = lua_toboolean(L, 3) != 0;
    how.servername = lua_tostring(L, 4);
    how.verify_host = lua_tostring(L, 5);
    SSL_SESSION* session = nullptr;
    if (lua_type(L, 6) == LUA_TSTRING) {
        size_t len;
        auto* p = reinterpret_cast<const unsigned char*>(lua_tolstring(L, 6, &len));
        // A session that does not parse (or is from elsewhere) means a full handshake.
        session = d2i_SSL_SESSION(nullptr, &p, static_cast<long>(len));
        if (!session) ERR_clear_error();
    }
    how.session = session;
    int err = luaio::tls_attach(s, c->ctx, how);
    SSL_SESSION_free(session);
    if (err) {
        luaio::push_error(L, err, ssl_reason("tls: cannot start a session").c_str());
        return 1;
    }
    return 0;
}

// session = core.session(sock), also sock:getSession(): the client's session (with the latest
// ticket the server sent), serialized for tls.connect's session option; nil when there is none
// that can resume.
int l_session(lua_State* L) {
    Stream* s = Stream::check(L, 1, "getSession");
    SSL* ssl = luaio::tls_session(s);
    SSL_SESSION* sess = ssl ? SSL_get1_session(ssl) : nullptr;
    if (!sess) return 0;
    int len = SSL_SESSION_is_resumable(sess) ? i2d_SSL_SESSION(sess, nullptr) : 0;
    if (len > 0) {
        std::string buf(static_cast<size_t>(len), '\0');
        auto* p = reinterpret_cast<unsigned char*>(&buf[0]);
        i2d_SSL_SESSION(sess, &p);
        lua_pushlstring(L, buf.data(), buf.size());
    }
    SSL_SESSION_free(sess);
    return len > 0 ? 1 : 0;
}

// ok, err = core.handshake(sock, timeout_ms)
int l_handshake(lua_State* L) {
    Stream* s = Stream::check(L, 1, "handshake");
    lua_Number ms = luaL_optnumber(L, 2, 0);
    if (!(ms >= 0)) luaio::raise(L, "handshake", "timeout must be a non-negative number of milliseconds");
    return luaio::tls_handshake(L, s, static_cast<uint64_t>(ms), "handshake");
}

void push_name(lua_State* L, X509_NAME* n) {
    BIO* b = BIO_new(BIO_s_mem());
    X509_NAME_print_ex(b, n, 0, XN_FLAG_RFC2253);
    char* p;
    long len = BIO_get_mem_data(b, &p);
    lua_pushlstring(L, p, static_cast<size_t>(len));
    BIO_free(b);
}

void push_time(lua_State* L, const ASN1_TIME* t) {
    BIO* b = BIO_new(BIO_s_mem());
    ASN1_TIME_print(b, t);
    char* p;
    long len = BIO_get_mem_data(b, &p);
    lua_pushlstring(L, p, static_cast<size_t>(len));
    BIO_free(b);
}

void push_certificate(lua_State* L, X509* x) {
    lua_createtable(L, 0, 6);
    push_name(L, X509_get_subject_name(x));
    lua_setfield(L, -2, "subject");
    push_name(L, X509_get_issuer_name(x));
    lua_setfield(L, -2, "issuer");
    push_time(L, X509_get0_notBefore(x));
    lua_setfield(L, -2, "notBefore");
    push_time(L, X509_get0_notAfter(x));
    lua_setfield(L, -2, "notAfter");
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    X509_digest(x, EVP_sha256(), md, &mdlen);
    char hex[EVP_MAX_MD_SIZE * 3];
    for (unsigned i = 0; i < mdlen; i++) std::snprintf(hex + i * 3, 4, i + 1 < mdlen ? "%02X:" : "%02X", md[i]);
    lua_pushstring(L, mdlen ? hex : "");
    lua_setfield(L, -2, "fingerprint256");
    lua_newtable(L);
    auto* names = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(x, NID_subject_alt_name, nullptr, nullptr));
    int n = 0;
    for (int i = 0; names && i < sk_GENERAL_NAME_num(names); i++) {
        GENERAL_NAME* g = sk_GENERAL_NAME_value(names, i);
        if (g->type == GEN_DNS) {
            const ASN1_IA5STRING* d = g->d.dNSName;
            lua_pushfstring(L, "DNS:%s", std::string(reinterpret_cast<const char*>(d->data), d->length).c_str());
        } else if (g->type == GEN_IPADD) {
            char buf[64];
            const ASN1_OCTET_STRING* ip = g->d.iPAddress;
            if (ip->length == 4 && uv_inet_ntop(AF_INET, ip->data, buf, sizeof buf) == 0)
                lua_pushfstring(L, "IP:%s", buf);
            else if (ip->length == 16 && uv_inet_ntop(AF_INET6, ip->data, buf, sizeof buf) == 0)
                lua_pushfstring(L, "IP:%s", buf);
            else
                continue;
        } else {
            continue;
        }
        lua_rawseti(L, -2, ++n);
    }
    GENERAL_NAMES_free(names);
    lua_setfield(L, -2, "san");
}

// info = core.info(sock), also sock:tlsInfo(): nil for a stream without TLS.
int l_info(lua_State* L) {
    Stream* s = Stream::check(L, 1, "tlsInfo");
    SSL* ssl = luaio::tls_session(s);
    if (!ssl) return 0;
    lua_createtable(L, 0, 7);
    lua_pushstring(L, SSL_get_version(ssl));
    lua_setfield(L, -2, "version");
    if (const char* c = SSL_get_cipher_name(ssl)) {
        lua_pushstring(L, c);
        lua_setfield(L, -2, "cipher");
    }
    const unsigned char* alpn = nullptr;
    unsigned alen = 0;
    SSL_get0_alpn_selected(ssl, &alpn, &alen);
    if (alen) {
        lua_pushlstring(L, reinterpret_cast<const char*>(alpn), alen);
        lua_setfield(L, -2, "alpn");
    }
    if (const char* sn = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name)) {
        lua_pushstring(L, sn);
        lua_setfield(L, -2, "servername");
    }
    lua_pushboolean(L, SSL_session_reused(ssl));
    lua_setfield(L, -2, "resumed");
    lua_pushboolean(L, SSL_get_verify_result(ssl) == X509_V_OK);
    lua_setfield(L, -2, "authorized");
    if (X509* peer = SSL_get1_peer_certificate(ssl)) {
        push_certificate(L, peer);
        X509_free(peer);
        lua_setfield(L, -2, "peerCertificate");
    }
    return 1;
}

} // namespace

extern "C" int luaopen_luaio_tls(lua_State* L) {
    if (g_alpn_index < 0) g_alpn_index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, free_alpn);
    if (g_select_index < 0) g_select_index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, free_select);
    if (g_tickets_index < 0) g_tickets_index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, free_tickets);
    if (g_sni_index < 0) g_sni_index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, free_sni);
    const luaL_Reg ctx_methods[] = {{"__gc", l_context_gc}, {nullptr, nullptr}};
    luaio::new_class(L, kContextClass, ctx_methods);
    lua_pop(L, 1);
    const luaL_Reg sni_methods[] = {{"__gc", l_sni_gc}, {nullptr, nullptr}};
    luaio::new_class(L, kSniClass, sni_methods);
    lua_pop(L, 1);
    // Every tcp socket answers tlsInfo() (nil without TLS).
    luaL_getmetatable(L, "luaio.tcp.socket");
    if (lua_istable(L, -1)) {
        const luaL_Reg sock_methods[] = {{"tlsInfo", l_info}, {"getSession", l_session}, {nullptr, nullptr}};
        luaio::add_to_class(L, sock_methods);
    }
    lua_pop(L, 1);
    const luaL_Reg funcs[] = {{"context", l_context}, {"attach", l_attach},   {"handshake", l_handshake},
                              {"info", l_info},       {"session", l_session}, {"sniDone", l_sni_done},
                              {nullptr, nullptr}};
    luaL_newlib(L, funcs);
    return 1;
}
