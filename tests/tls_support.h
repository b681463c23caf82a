/* Test certificates and a hostile peer that may speak TLS. Include after support.h.
 *
 * Certificates: tls_certs_make() runs scripts/tls-certs.sh (the openssl command) into a fresh
 * /tmp/mprpc-tls-PID; tls_pem() names a file there. Built with MPRPC_TLS only.
 *
 * A peer is one client connection driven by hand, byte by byte: plain TCP, or (peer_tls_ctx set,
 * MPRPC_TLS) a TLS session over it, so a hostile test sends the same bytes either way, inside TLS
 * records when the provider speaks TLS. Its socket is non-blocking once connected; every wait is
 * bounded. */
#ifndef MPRPC_TLS_SUPPORT_H
#define MPRPC_TLS_SUPPORT_H

#include <errno.h>
#include <fcntl.h>

#ifdef MPRPC_TLS
#include <openssl/ssl.h>
#include <openssl/err.h>

static char tls_dir[64];

static void tls_pem(char *dst, size_t cap, const char *name)
{
    snprintf(dst, cap, "%s/%s", tls_dir, name);
}

/* 1 once the certificates of scripts/tls-certs.sh are in tls_dir (run from the repository root). */
static int tls_certs_make(void)
{
    char cmd[160];
    snprintf(tls_dir, sizeof tls_dir, "/tmp/mprpc-tls-%d", (int)getpid());
    snprintf(cmd, sizeof cmd, "scripts/tls-certs.sh %s >/dev/null", tls_dir);
    if (system(cmd) == 0) return 1;
    fprintf(stderr, "scripts/tls-certs.sh failed (run from the repository root)\n");
    return 0;
}

static void tls_certs_remove(void)
{
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tls_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tls_dir);
}

/* One config for a provider and its callers alike: mutual TLS where both present server.crt (no
 * extended key usage: it serves as a client certificate too) and trust ca.crt; callers dial
 * 127.0.0.1, which server.crt names. */
static void tls_mutual_config(mprpc_config *cfg)
{
    cfg->tls_enable = 1;
    tls_pem(cfg->tls_cert_file, sizeof cfg->tls_cert_file, "server.crt");
    tls_pem(cfg->tls_key_file, sizeof cfg->tls_key_file, "server.key");
    tls_pem(cfg->tls_ca_file, sizeof cfg->tls_ca_file, "ca.crt");
    /* the default; valgrind (MPRPC_TEST_SLOW) makes a first handshake slow */
    cfg->tls_handshake_timeout_ms = 5000 * slow_factor();
}

/* A hand-driven client's context: trusts ca.crt, presents client.crt (CN=alice); writes like send()
 * (partial writes, a retry may come from a moved buffer). */
static SSL_CTX *tls_client_ctx(void)
{
    char ca[128], crt[128], key[128];
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    tls_pem(ca, sizeof ca, "ca.crt");
    tls_pem(crt, sizeof crt, "client.crt");
    tls_pem(key, sizeof key, "client.key");
    if (!ctx || SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1 ||
        SSL_CTX_use_certificate_chain_file(ctx, crt) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        if (ctx) SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    return ctx;
}

/* The first flight a real client sends (its ClientHello record), made in memory: n bytes, malloc'd. */
static uint8_t *tls_client_hello(SSL_CTX *ctx, size_t *n)
{
    SSL *ssl = SSL_new(ctx);
    BIO *rb = BIO_new(BIO_s_mem()), *wb = BIO_new(BIO_s_mem());
    char *p;
    uint8_t *out = NULL;
    long len;
    *n = 0;
    if (!ssl || !rb || !wb) goto done;
    SSL_set_bio(ssl, rb, wb); /* owned by the session now */
    rb = wb = NULL;
    SSL_set_connect_state(ssl);
    SSL_do_handshake(ssl); /* wants to read: the hello is written */
    len = BIO_get_mem_data(SSL_get_wbio(ssl), &p);
    if (len > 0 && (out = (uint8_t *)malloc((size_t)len)) != NULL) {
        memcpy(out, p, (size_t)len);
        *n = (size_t)len;
    }
done:
    if (rb) BIO_free(rb);
    if (wb) BIO_free(wb);
    if (ssl) SSL_free(ssl);
    ERR_clear_error();
    return out;
}
#endif

/* ---- a peer: a client connection driven by hand ---- */

typedef struct peer {
    int fd;
#ifdef MPRPC_TLS
    SSL *ssl; /* NULL: plain TCP */
#endif
} peer;

#ifdef MPRPC_TLS
static SSL_CTX *peer_tls_ctx; /* set: peer_connect makes a TLS session and completes its handshake */
#endif

/* Waits up to ms for events on p's socket; 1 if they came. */
static int peer_poll(const peer *p, short events, int ms)
{
    struct pollfd pf;
    pf.fd = p->fd;
    pf.events = events;
    return poll(&pf, 1, ms) > 0;
}

#ifdef MPRPC_TLS
/* SSL result rc as send/recv would give it: n, 0 for an end, -1 with errno EAGAIN (and *want the
 * poll events to wait for) or another errno. */
static ssize_t peer_ssl_result(peer *p, int rc, short *want)
{
    int err = SSL_get_error(p->ssl, rc);
    if (rc > 0) return rc;
    ERR_clear_error();
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
        *want = err == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT;
        errno = EAGAIN;
        return -1;
    }
    if (err == SSL_ERROR_ZERO_RETURN || err == SSL_ERROR_SSL || err == SSL_ERROR_SYSCALL) {
        errno = ECONNRESET; /* the session ended, cleanly or not: the provider closed it */
        return err == SSL_ERROR_ZERO_RETURN ? 0 : -1;
    }
    errno = EPROTO;
    return -1;
}

static int peer_tls_handshake(peer *p)
{
    int waited = 0, limit = 5000 * slow_factor();
    p->ssl = SSL_new(peer_tls_ctx);
    if (!p->ssl || SSL_set_fd(p->ssl, p->fd) != 1) return 0;
    SSL_set_connect_state(p->ssl);
    while (waited < limit) {
        short want = POLLIN;
        if (peer_ssl_result(p, SSL_do_handshake(p->ssl), &want) > 0) return 1;
        if (errno != EAGAIN) return 0;
        if (!peer_poll(p, want, 50)) waited += 50;
    }
    return 0;
}
#endif

/* Connects to 127.0.0.1:port (and completes the TLS handshake when peers speak TLS); 1 if it did. */
static int peer_connect(peer *p, int port)
{
    memset(p, 0, sizeof *p);
    p->fd = raw_connect(port);
    if (p->fd < 0) return 0;
    fcntl(p->fd, F_SETFL, fcntl(p->fd, F_GETFL) | O_NONBLOCK);
#ifdef MPRPC_TLS
    if (peer_tls_ctx) return peer_tls_handshake(p);
#endif
    return 1;
}

/* send() on the non-blocking socket, inside the session if there is one: n > 0, or -1 and errno. */
static ssize_t peer_send_some(peer *p, const void *b, size_t n, short *want)
{
    *want = POLLOUT;
#ifdef MPRPC_TLS
    if (p->ssl) {
        ERR_clear_error();
        return peer_ssl_result(p, SSL_write(p->ssl, b, (int)n), want);
    }
#endif
    return send(p->fd, b, n, MSG_NOSIGNAL);
}

/* Sends all n bytes (waiting up to 5 s for room at a time); 1 if it did. */
static int peer_send_all(peer *p, const void *b, size_t n)
{
    const uint8_t *q = (const uint8_t *)b;
    while (n > 0) {
        short want;
        ssize_t k = peer_send_some(p, q, n, &want);
        if (k > 0) {
            q += k;
            n -= (size_t)k;
        } else if (k == 0 || errno != EAGAIN || !peer_poll(p, want, 5000 * slow_factor())) {
            return 0;
        }
    }
    return 1;
}

/* Reads what has come, waiting up to timeout_ms for something: > 0 bytes, 0 the provider ended the
 * connection (an EOF, a reset, or a TLS session ended), -1 nothing came in time. */
static ssize_t peer_recv(peer *p, void *b, size_t n, int timeout_ms)
{
    for (;;) {
        short want = POLLIN;
        ssize_t k;
#ifdef MPRPC_TLS
        if (p->ssl) {
            ERR_clear_error();
            k = peer_ssl_result(p, SSL_read(p->ssl, b, (int)n), &want);
        } else
#endif
            k = recv(p->fd, b, n, 0);
        if (k >= 0) return k;
        if (errno != EAGAIN && errno != EINTR) return 0;
        if (errno == EAGAIN && !peer_poll(p, want, timeout_ms)) return -1;
    }
}

/* 1 if the provider ended the connection within timeout_ms (after any data): its TCP end, not
 * just the end of a TLS session (an alert, a close_notify), which it could send and stay open. */
static int peer_wait_closed(peer *p, int timeout_ms)
{
    uint8_t junk[4096];
    ssize_t k;
    while ((k = peer_recv(p, junk, sizeof junk, timeout_ms)) > 0) {}
    if (k != 0) return 0;
#ifdef MPRPC_TLS
    if (p->ssl) {
        while ((k = recv(p->fd, junk, sizeof junk, 0)) > 0 || (k < 0 && errno == EAGAIN && peer_poll(p, POLLIN, timeout_ms))) {}
        return k == 0 || (k < 0 && errno == ECONNRESET);
    }
#endif
    return 1;
}

/* Reads one response frame into in (64 KiB at a time: replies can be large); MPRPC_OK and f, or why
 * not. */
static mprpc_status peer_read_frame(peer *p, mprpc_buf *in, mprpc_response_frame *f, int timeout_ms)
{
    for (;;) {
        ssize_t k;
        mprpc_status st = mprpc_wire_decode_response(in->data + in->pos, mprpc_buf_readable(in), 1u << 24, f);
        if (st != MPRPC_AGAIN) return st;
        if (mprpc_buf_reserve(in, 65536, 1u << 26) != MPRPC_OK) return MPRPC_ERR_NO_MEMORY;
        k = peer_recv(p, in->data + in->len, in->cap - in->len, timeout_ms);
        if (k < 0) return MPRPC_ERR_TIMEOUT;
        if (k == 0) return MPRPC_ERR_CONNECTION_LOST;
        in->len += (size_t)k;
    }
}

/* Our side ends (close_notify first, in TLS); the provider may still answer. */
static void peer_shut_wr(peer *p)
{
#ifdef MPRPC_TLS
    if (p->ssl) {
        ERR_clear_error();
        SSL_shutdown(p->ssl);
        ERR_clear_error();
    }
#endif
    shutdown(p->fd, SHUT_WR);
}

static void peer_close(peer *p)
{
#ifdef MPRPC_TLS
    if (p->ssl) SSL_free(p->ssl); /* no close_notify: the socket just closes */
    p->ssl = NULL;
#endif
    if (p->fd >= 0) close(p->fd);
    p->fd = -1;
}

/* A reset (SO_LINGER 0): the provider's next read or write fails. */
static void peer_reset(peer *p)
{
    struct linger lg;
    lg.l_onoff = 1;
    lg.l_linger = 0;
    setsockopt(p->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    peer_close(p);
}

#endif
