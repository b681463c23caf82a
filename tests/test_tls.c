/* TLS (built with MPRPC_TLS): providers and channels over real TLS sessions, with certificates made by
 * scripts/tls-certs.sh (the openssl command) in a fresh directory. Each failure must come as
 * MPRPC_ERR_TLS with the reason in words, never a hang. */
#define MPRPC_IMPLEMENTATION
#include "mprpc.h"
#include "test.h"
#include "support.h"
#include "tls_support.h"

/* Whoami: the payload of the reply is the caller's verified identity. */
static void whoami(mprpc_call *call, const void *request, void *response, void *user)
{
    testsvc_EchoResponse *rs = (testsvc_EchoResponse *)response;
    const char *id = mprpc_call_peer_identity(call);
    size_t n = strlen(id) < sizeof rs->payload.bytes ? strlen(id) : sizeof rs->payload.bytes;
    (void)request; (void)user;
    memcpy(rs->payload.bytes, id, n);
    rs->payload.size = (pb_size_t)n;
}
static const mprpc_method who_methods[] = {
    MPRPC_METHOD("Whoami", testsvc_EchoRequest, testsvc_EchoResponse, whoami),
};
static const mprpc_service who_service = MPRPC_SERVICE("Who", who_methods, NULL);

/* A provider config: TLS with `cert` (server.crt, expired.crt, other.crt), client certificates
 * required when mtls. */
static void provider_cfg(mprpc_config *cfg, const char *cert, int mtls)
{
    char path[128];
    test_config(cfg);
    mprpc_config_set(cfg, "rpcserver_ip", "::"); /* callers on 127.0.0.1 and ::1 alike */
    cfg->tls_enable = 1;
    tls_pem(cfg->tls_cert_file, sizeof cfg->tls_cert_file, cert);
    tls_pem(path, sizeof path, strcmp(cert, "other.crt") == 0 ? "other.key" : "server.key");
    snprintf(cfg->tls_key_file, sizeof cfg->tls_key_file, "%s", path);
    if (mtls) tls_pem(cfg->tls_ca_file, sizeof cfg->tls_ca_file, "ca.crt");
    /* the default; valgrind (MPRPC_TEST_SLOW) makes a first handshake slow */
    cfg->tls_handshake_timeout_ms = 5000 * (getenv("MPRPC_TEST_SLOW") ? atoi(getenv("MPRPC_TEST_SLOW")) : 1);
}

static mprpc_server *tls_provider(const char *cert, int mtls, int port)
{
    mprpc_config cfg;
    mprpc_server *srv = NULL;
    provider_cfg(&cfg, cert, mtls);
    cfg.rpcserver_port = port;
    if (mprpc_server_new(&srv, &cfg) != MPRPC_OK) return NULL;
    mprpc_server_add_service(srv, &test_service);
    mprpc_server_add_service(srv, &who_service);
    if (mprpc_server_start(srv) != MPRPC_OK) {
        fprintf(stderr, "tls_provider: %s\n", mprpc_server_error(srv));
        mprpc_server_free(srv);
        return NULL;
    }
    return srv;
}

/* A channel to `host`:port of the provider; TLS trusting `ca` (NULL: plaintext), with the client
 * certificate when client. */
static void channel_cfg(mprpc_config *cfg, const char *host, int port, const char *ca, int client, const char *name)
{
    char list[96];
    test_config(cfg);
    cfg->rpc_timeout_ms = 5000;
    snprintf(list, sizeof list, "%s:%d", host, port);
    mprpc_config_set(cfg, "rpcserver_list", list);
    if (ca) {
        cfg->tls_enable = 1;
        tls_pem(cfg->tls_ca_file, sizeof cfg->tls_ca_file, ca);
    }
    if (client) {
        tls_pem(cfg->tls_cert_file, sizeof cfg->tls_cert_file, "client.crt");
        tls_pem(cfg->tls_key_file, sizeof cfg->tls_key_file, "client.key");
    }
    if (name) mprpc_config_set(cfg, "tls_server_name", name);
}

static mprpc_channel *tls_channel(const char *host, int port, const char *ca, int client, const char *name)
{
    mprpc_config cfg;
    mprpc_channel *ch = NULL;
    channel_cfg(&cfg, host, port, ca, client, name);
    CHECK_STATUS(mprpc_channel_new(&ch, &cfg), MPRPC_OK);
    return ch;
}

static mprpc_status whoami_call(mprpc_channel *ch, mprpc_controller *ctl, char *id, size_t cap)
{
    testsvc_EchoRequest rq = testsvc_EchoRequest_init_zero;
    testsvc_EchoResponse rs = testsvc_EchoResponse_init_zero;
    mprpc_status st;
    mprpc_controller_init(ctl);
    st = MPRPC_CALL(ch, "Who", "Whoami", testsvc_EchoRequest, &rq, testsvc_EchoResponse, &rs, ctl);
    snprintf(id, cap, "%.*s", (int)rs.payload.size, (const char *)rs.payload.bytes);
    return st;
}

static void mutual_tls_call_shows_the_client_identity_to_the_handler(void)
{
    mprpc_server *srv = tls_provider("server.crt", 1, 0);
    mprpc_channel *ch;
    mprpc_controller ctl;
    char id[200];
    CHECK(srv != NULL);
    if (!srv) return;
    ch = tls_channel("localhost", mprpc_server_port(srv), "ca.crt", 1, NULL);
    CHECK_STATUS(whoami_call(ch, &ctl, id, sizeof id), MPRPC_OK);
    CHECK_CONTAINS(id, "CN=alice");
    CHECK_CONTAINS(id, "DNS:alice.example");
    mprpc_channel_free(ch);
    mprpc_server_free(srv);
}

static void a_provider_without_a_ca_serves_callers_without_certificates(void)
{
    mprpc_server *srv = tls_provider("server.crt", 0, 0);
    mprpc_channel *ch;
    mprpc_controller ctl;
    char id[200];
    CHECK(srv != NULL);
    if (!srv) return;
    ch = tls_channel("127.0.0.1", mprpc_server_port(srv), "ca.crt", 0, NULL); /* checks IP SAN */
    CHECK_STATUS(whoami_call(ch, &ctl, id, sizeof id), MPRPC_OK);
    CHECK(id[0] == '\0'); /* no client certificate: no identity */
    mprpc_channel_free(ch);
    ch = tls_channel("[::1]", mprpc_server_port(srv), "ca.crt", 0, NULL);
    CHECK_STATUS(whoami_call(ch, &ctl, id, sizeof id), MPRPC_OK);
    mprpc_channel_free(ch);
    mprpc_server_free(srv);
}

/* The channel's call fails with MPRPC_ERR_TLS and `why`. */
static void check_tls_failure(mprpc_server *srv, const char *ca, int client, const char *name, const char *why)
{
    mprpc_channel *ch;
    mprpc_controller ctl;
    char id[200];
    CHECK(srv != NULL);
    if (!srv) return;
    ch = tls_channel("127.0.0.1", mprpc_server_port(srv), ca, client, name);
    CHECK_STATUS(whoami_call(ch, &ctl, id, sizeof id), MPRPC_ERR_TLS);
    CHECK_CONTAINS(mprpc_controller_error_text(&ctl), why);
    CHECK(!mprpc_controller_may_have_run(&ctl));
    mprpc_channel_free(ch);
    mprpc_server_free(srv);
}

static void a_provider_certificate_from_another_ca_is_an_unknown_ca(void)
{
    check_tls_failure(tls_provider("other.crt", 0, 0), "ca.crt", 0, NULL, "unknown CA");
}

static void an_expired_provider_certificate_is_refused_as_expired(void)
{
    check_tls_failure(tls_provider("expired.crt", 0, 0), "ca.crt", 0, NULL, "expired certificate");
}

static void a_certificate_for_another_name_is_a_name_mismatch(void)
{
    check_tls_failure(tls_provider("server.crt", 0, 0), "ca.crt", 0, "rpc.example.org", "name mismatch");
}

/* With TLS 1.3 the caller finishes its handshake before the provider has checked the caller's
 * certificate: the refusal (an alert) comes as the answer to the first request, which is why
 * mprpc_controller_may_have_run stays conservative here. */
static void a_caller_without_a_client_certificate_is_refused_by_mutual_tls(void)
{
    mprpc_server *srv = tls_provider("server.crt", 1, 0);
    mprpc_channel *ch;
    mprpc_controller ctl;
    char id[200];
    CHECK(srv != NULL);
    if (!srv) return;
    ch = tls_channel("127.0.0.1", mprpc_server_port(srv), "ca.crt", 0, NULL);
    CHECK_STATUS(whoami_call(ch, &ctl, id, sizeof id), MPRPC_ERR_TLS);
    CHECK_CONTAINS(mprpc_controller_error_text(&ctl), "TLS with 127.0.0.1:");
    CHECK_CONTAINS(mprpc_controller_error_text(&ctl), "certificate required");
    mprpc_channel_free(ch);
    mprpc_server_free(srv);
}

static void a_tls_caller_facing_a_plaintext_provider_fails_fast(void)
{
    mprpc_config cfg;
    mprpc_server *srv = provider_up(&cfg);
    check_tls_failure(srv, "ca.crt", 0, NULL, "plaintext");
}

static void log_start(void)
{
    mprpc_config cfg;
    test_config(&cfg);
    cfg.log_level = MPRPC_LOG_LEVEL_WARN;
    seen[0] = '\0';
    mprpc_logger_set_sink(keep_line, NULL);
    CHECK_STATUS(mprpc_logger_start(&cfg), MPRPC_OK);
}

static void log_stop(void)
{
    mprpc_logger_stop();
    mprpc_logger_set_sink(NULL, NULL);
}

/* The provider answers a plaintext request MPRPC_ERR_TLS instead of closing: the caller learns why, and
 * that nothing ran; the provider's log names the plaintext peer. */
static void a_plaintext_caller_facing_a_tls_provider_is_told_tls_is_required(void)
{
    mprpc_server *srv;
    mprpc_channel *ch;
    mprpc_controller ctl;
    char id[200], addr[64];
    log_start();
    srv = tls_provider("server.crt", 0, 0);
    CHECK(srv != NULL);
    if (!srv) {
        log_stop();
        return;
    }
    snprintf(addr, sizeof addr, "127.0.0.1:%d: ", mprpc_server_port(srv));
    ch = tls_channel("127.0.0.1", mprpc_server_port(srv), NULL, 0, NULL);
    CHECK_STATUS(whoami_call(ch, &ctl, id, sizeof id), MPRPC_ERR_TLS);
    CHECK_CONTAINS(mprpc_controller_error_text(&ctl), addr);
    CHECK_CONTAINS(mprpc_controller_error_text(&ctl), "provider requires TLS (tls_enable): not executed");
    CHECK(!mprpc_controller_may_have_run(&ctl));
    CHECK_STATUS(whoami_call(ch, &ctl, id, sizeof id), MPRPC_ERR_TLS); /* again, on a fresh connection */
    CHECK_CONTAINS(mprpc_controller_error_text(&ctl), "provider requires TLS");
    mprpc_channel_free(ch);
    mprpc_server_free(srv);
    log_stop();
    CHECK(seen_has("TLS with [::ffff:127.0.0.1]:")); /* the provider listens on :: */
    CHECK(seen_has("the peer speaks plaintext, not TLS"));
}

/* A seed (v0) caller has no error channel: the TLS provider just closes its connection, at once. */
static void a_seed_caller_facing_a_tls_provider_sees_the_connection_closed(void)
{
    mprpc_server *srv = tls_provider("server.crt", 0, 0);
    testsvc_EchoRequest rq = testsvc_EchoRequest_init_zero;
    mprpc_request_meta m = { "TestService", "Echo", 0, 0, 0 };
    mprpc_buf req = { 0 };
    int fd;
    CHECK(srv != NULL);
    if (!srv) return;
    CHECK_STATUS(mprpc_wire_encode_request_meta(&req, 4u << 20, &m, testsvc_EchoRequest_fields, &rq), MPRPC_OK);
    fd = raw_connect(mprpc_server_port(srv));
    CHECK(fd >= 0 && raw_send_all(fd, req.data, req.len));
    CHECK(raw_wait_closed(fd, 5000)); /* closed, with no answer to read */
    if (fd >= 0) close(fd);
    mprpc_buf_free(&req);
    mprpc_server_free(srv);
}

static void a_client_stalled_mid_handshake_does_not_stall_the_loop(void)
{
    mprpc_config cfg;
    mprpc_server *srv;
    mprpc_channel *ch;
    mprpc_controller ctl;
    char id[200];
    static const uint8_t half_hello[] = { 0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00 }; /* then silence */
    int fd;
    provider_cfg(&cfg, "server.crt", 0);
    cfg.io_threads = 1; /* the stalled client and the good one share the loop */
    cfg.tls_handshake_timeout_ms = 500;
    cfg.rpcserver_port = 0;
    CHECK_STATUS(mprpc_server_new(&srv, &cfg), MPRPC_OK);
    mprpc_server_add_service(srv, &who_service);
    CHECK_STATUS(mprpc_server_start(srv), MPRPC_OK);
    fd = raw_connect(mprpc_server_port(srv));
    CHECK(fd >= 0 && raw_send_all(fd, half_hello, sizeof half_hello));
    ch = tls_channel("localhost", mprpc_server_port(srv), "ca.crt", 0, NULL);
    CHECK_STATUS(whoami_call(ch, &ctl, id, sizeof id), MPRPC_OK);
    /* tls_handshake_timeout_ms = 500 (checked on the loop's sweep, at most every second); the good
     * call above took its handshake past the stalled one on the same loop */
    CHECK(raw_wait_closed(fd, 5000));
    close(fd);
    mprpc_channel_free(ch);
    mprpc_server_free(srv);
}

static void handshake_garbage_neither_crashes_nor_stalls_the_provider(void)
{
    static const uint8_t record_too_long[] = { 0x16, 0x03, 0x03, 0xff, 0xff, 0x01 };
    static const uint8_t alert_first[] = { 0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28 };
    uint8_t noise[4096];
    mprpc_server *srv = tls_provider("server.crt", 1, 0);
    mprpc_channel *ch;
    mprpc_controller ctl;
    char id[200];
    unsigned seed = 12345;
    int i, fd;
    CHECK(srv != NULL);
    if (!srv) return;
    for (i = 0; i < (int)sizeof noise; i++) noise[i] = (uint8_t)((seed = seed * 1103515245u + 12345u) >> 16);
    noise[0] = 0x16; /* a handshake record header, then nonsense */
    for (i = 0; i < 3; i++) {
        const uint8_t *p = i == 0 ? record_too_long : i == 1 ? alert_first : noise;
        size_t n = i == 0 ? sizeof record_too_long : i == 1 ? sizeof alert_first : sizeof noise;
        fd = raw_connect(mprpc_server_port(srv));
        CHECK(fd >= 0 && raw_send_all(fd, p, n));
        CHECK(raw_wait_closed(fd, 5000)); /* refused at once, not left hanging */
        close(fd);
    }
    ch = tls_channel("localhost", mprpc_server_port(srv), "ca.crt", 1, NULL);
    CHECK_STATUS(whoami_call(ch, &ctl, id, sizeof id), MPRPC_OK);
    mprpc_channel_free(ch);
    mprpc_server_free(srv);
}

static int async_done;
static pthread_mutex_t async_mu = PTHREAD_MUTEX_INITIALIZER;
static void count_done(mprpc_controller *ctl, void *response, void *user)
{
    const testsvc_EchoResponse *rs = (const testsvc_EchoResponse *)response;
    (void)user;
    pthread_mutex_lock(&async_mu);
    if (ctl->status == MPRPC_OK && rs->payload.size == 5) async_done++;
    pthread_mutex_unlock(&async_mu);
}

static void one_mib_messages_and_pipelined_async_calls_go_over_tls(void)
{
    enum { N = 200 };
    mprpc_server *srv = tls_provider("server.crt", 1, 0);
    mprpc_channel *ch;
    mprpc_controller ctl, *ctls;
    testsvc_EchoResponse *rss;
    testsvc_EchoRequest rq = testsvc_EchoRequest_init_zero;
    testsvc_BigRequest brq = testsvc_BigRequest_init_zero;
    testsvc_BigResponse brs = testsvc_BigResponse_init_zero;
    mprpc_bytes_sink sink;
    static uint8_t got[1 << 20];
    int i, n = 0;
    CHECK(srv != NULL);
    if (!srv) return;
    ch = tls_channel("localhost", mprpc_server_port(srv), "ca.crt", 1, NULL);
    brq.size = 1u << 20;
    brq.fill = 0xab;
    sink.data = got;
    sink.capacity = sizeof got;
    sink.size = 0;
    brs.data.funcs.decode = mprpc_bytes_copy_decode;
    brs.data.arg = &sink;
    mprpc_controller_init(&ctl);
    CHECK_STATUS(MPRPC_CALL(ch, "TestService", "Big", testsvc_BigRequest, &brq, testsvc_BigResponse, &brs, &ctl),
                 MPRPC_OK);
    CHECK(sink.size == 1u << 20 && got[0] == 0xab && got[(1u << 20) - 1] == 0xab);
    ctls = (mprpc_controller *)calloc(N, sizeof *ctls);
    rss = (testsvc_EchoResponse *)calloc(N, sizeof *rss);
    set_payload(&rq, "hello");
    for (i = 0; i < N; i++) {
        mprpc_controller_init(&ctls[i]);
        if (MPRPC_CALL_ASYNC(ch, "TestService", "Echo", testsvc_EchoRequest, &rq, testsvc_EchoResponse, &rss[i],
                             &ctls[i], count_done, NULL) == MPRPC_OK)
            n++;
    }
    CHECK(n == N);
    for (i = 0; i < 500; i++) {
        pthread_mutex_lock(&async_mu);
        n = async_done;
        pthread_mutex_unlock(&async_mu);
        if (n == N) break;
        sleep_ms(10);
    }
    CHECK(n == N);
    mprpc_channel_free(ch);
    free(ctls);
    free(rss);
    mprpc_server_free(srv);
}

/* ---- a TLS peer of our own (OpenSSL directly), to do what mprpc.h never does ---- */

static int peer_listen(int *port)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 8) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) != 0) {
        if (fd >= 0) close(fd);
        return -1;
    }
    *port = ntohs(sa.sin_port);
    return fd;
}

/* A blocking TLS session on fd: the server side with server.crt, or a client trusting ca.crt. */
static SSL *peer_session(int fd, int server)
{
    char crt[128], key[128];
    SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    SSL *ssl;
    tls_pem(crt, sizeof crt, "server.crt");
    tls_pem(key, sizeof key, "server.key");
    if (server && (SSL_CTX_use_certificate_chain_file(ctx, crt) != 1 ||
                   SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1)) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_num_tickets(ctx, 0);
    ssl = SSL_new(ctx);
    SSL_CTX_free(ctx); /* the session holds its own reference */
    SSL_set_fd(ssl, fd);
    if ((server ? SSL_accept(ssl) : SSL_connect(ssl)) != 1) {
        SSL_free(ssl);
        return NULL;
    }
    return ssl;
}

/* Accepts one connection on lfd (within 5 s) and completes the server side of its handshake. */
static SSL *peer_accept(int lfd, int *fd)
{
    struct pollfd pf;
    SSL *ssl;
    pf.fd = lfd;
    pf.events = POLLIN;
    if (poll(&pf, 1, 5000) != 1 || (*fd = accept(lfd, NULL, NULL)) < 0) return NULL;
    if ((ssl = peer_session(*fd, 1)) == NULL) close(*fd);
    return ssl;
}

static void peer_free(SSL *ssl, int fd)
{
    if (ssl) SSL_free(ssl);
    if (fd >= 0) close(fd);
}

/* The channel's own socket to port (the one whose peer is port): what the library holds. */
static int channel_fd_to(int port)
{
    int fd;
    for (fd = 3; fd < 1024; fd++) {
        struct sockaddr_in sa;
        socklen_t len = sizeof sa;
        if (getpeername(fd, (struct sockaddr *)&sa, &len) == 0 && sa.sin_family == AF_INET &&
            ntohs(sa.sin_port) == port)
            return fd;
    }
    return -1;
}

static int call_done;
static void note_done(mprpc_controller *ctl, void *response, void *user)
{
    (void)ctl; (void)response; (void)user;
    pthread_mutex_lock(&async_mu);
    call_done++;
    pthread_mutex_unlock(&async_mu);
}

static int wait_calls_done(int n)
{
    int i, done = 0;
    for (i = 0; i < 1000 && done < n; i++) {
        pthread_mutex_lock(&async_mu);
        done = call_done;
        pthread_mutex_unlock(&async_mu);
        if (done < n) sleep_ms(10);
    }
    return done >= n;
}

/* A channel whose one connection to our peer is up (handshake done, its first call timed out unanswered). */
static mprpc_channel *channel_to_peer(int lfd, int port, SSL **ssl, int *fd)
{
    mprpc_config cfg;
    mprpc_channel *ch = NULL;
    static testsvc_EchoRequest rq;
    static testsvc_EchoResponse rs;
    static mprpc_controller ctl;
    channel_cfg(&cfg, "127.0.0.1", port, "ca.crt", 0, NULL);
    cfg.channel_connections_per_provider = 1; /* every call on the connection our peer holds */
    CHECK_STATUS(mprpc_channel_new(&ch, &cfg), MPRPC_OK);
    pthread_mutex_lock(&async_mu);
    call_done = 0;
    pthread_mutex_unlock(&async_mu);
    mprpc_controller_init(&ctl);
    ctl.timeout_ms = 500;
    CHECK_STATUS(MPRPC_CALL_ASYNC(ch, "TestService", "Echo", testsvc_EchoRequest, &rq, testsvc_EchoResponse, &rs,
                                  &ctl, note_done, NULL), MPRPC_OK);
    *ssl = peer_accept(lfd, fd);
    CHECK(*ssl != NULL);
    CHECK(wait_calls_done(1));
    CHECK_STATUS(ctl.status, MPRPC_ERR_TIMEOUT);
    return ch;
}

/* Our TLS peer and the channel connected to it. */
typedef struct peer_link {
    int            lfd, port, fd;
    SSL           *ssl;
    mprpc_channel *ch;
} peer_link;

static void calls_done_reset(void)
{
    pthread_mutex_lock(&async_mu);
    call_done = 0;
    pthread_mutex_unlock(&async_mu);
}

/* Connected, the first call ended: note_done counts from 0 again. */
static int link_open(peer_link *l)
{
    l->fd = -1;
    l->ssl = NULL;
    l->ch = NULL;
    l->lfd = peer_listen(&l->port);
    CHECK(l->lfd >= 0);
    if (l->lfd >= 0) l->ch = channel_to_peer(l->lfd, l->port, &l->ssl, &l->fd);
    calls_done_reset();
    return l->ch != NULL && l->ssl != NULL;
}

static void link_close(peer_link *l)
{
    if (l->ch) mprpc_channel_free(l->ch);
    peer_free(l->ssl, l->fd);
    if (l->lfd >= 0) close(l->lfd);
}

/* An Echo call our peer reads (when `read`) and leaves unanswered; note_done counts it when it ends. */
static void call_unanswered(peer_link *l, mprpc_controller *ctl, testsvc_EchoResponse *rs, int read)
{
    static const testsvc_EchoRequest rq = testsvc_EchoRequest_init_zero;
    char buf[64];
    CHECK_STATUS(MPRPC_CALL_ASYNC(l->ch, "TestService", "Echo", testsvc_EchoRequest, &rq, testsvc_EchoResponse, rs,
                                  ctl, note_done, NULL), MPRPC_OK);
    if (read) CHECK(SSL_read(l->ssl, buf, sizeof buf) > 0);
}

/* After n calls ended: ctl's failed with st, its text holding both a and b. */
static void check_ended(int n, const mprpc_controller *ctl, mprpc_status st, const char *a, const char *b)
{
    CHECK(wait_calls_done(n));
    CHECK_STATUS(ctl->status, st);
    CHECK_CONTAINS(mprpc_controller_error_text(ctl), a);
    CHECK_CONTAINS(mprpc_controller_error_text(ctl), b);
}


/* A send that fails inside the session says so ("TLS write: ..."), not only strerror. Our side of the
 * socket is shut for writing under the channel, so its next send fails while nothing arrives to read;
 * the call already sent on that connection is lost with that text (the unsent one is retried). */
static void a_failed_tls_send_names_the_tls_write(void)
{
    peer_link l;
    mprpc_controller sent, unsent;
    testsvc_EchoResponse rs1, rs2;
    if (link_open(&l)) {
        mprpc_controller_init(&sent);
        mprpc_controller_init(&unsent);
        unsent.timeout_ms = 500;
        call_unanswered(&l, &sent, &rs1, 1);
        CHECK(shutdown(channel_fd_to(l.port), SHUT_WR) == 0);
        call_unanswered(&l, &unsent, &rs2, 0);
        check_ended(2, &sent, MPRPC_ERR_CONNECTION_LOST, "sending to 127.0.0.1:", "TLS write: ");
    }
    link_close(&l);
}

/* A reset under a session: the text says the TLS read failed. */
static void a_reset_under_a_tls_session_names_the_tls_read(void)
{
    struct linger lg = { 1, 0 };
    peer_link l;
    mprpc_controller ctl;
    testsvc_EchoResponse rs;
    if (link_open(&l)) {
        mprpc_controller_init(&ctl);
        call_unanswered(&l, &ctl, &rs, 1);
        setsockopt(l.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        peer_free(l.ssl, l.fd); /* RST */
        l.ssl = NULL;
        l.fd = -1;
        check_ended(1, &ctl, MPRPC_ERR_CONNECTION_LOST, "receiving from 127.0.0.1:", "TLS read: ");
    }
    link_close(&l);
}

/* A record that does not decrypt: MPRPC_ERR_TLS with OpenSSL's reason. */
static void a_forged_tls_record_fails_the_calls_with_the_tls_reason(void)
{
    static const uint8_t forged[] = { 0x17, 0x03, 0x03, 0x00, 0x20, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13,
                                      14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32 };
    peer_link l;
    mprpc_controller ctl;
    testsvc_EchoResponse rs;
    if (link_open(&l)) {
        mprpc_controller_init(&ctl);
        call_unanswered(&l, &ctl, &rs, 1);
        CHECK(raw_send_all(l.fd, forged, sizeof forged));
        check_ended(1, &ctl, MPRPC_ERR_TLS, "TLS with 127.0.0.1:", "TLS read: ");
        CHECK_CONTAINS(mprpc_controller_error_text(&ctl), "bad record mac");
    }
    link_close(&l);
}

/* Post-handshake messages under backpressure. Our client asks for a 1 MiB reply and does not read it,
 * so the provider's socket fills; then it sends a TLS 1.3 KeyUpdate that asks the provider to update
 * its keys too, and one more request. The provider must go on: both replies arrive, and its own
 * KeyUpdate comes (a session may need to write while reading, or read while writing: the loops wait
 * for the event the session names, not the one they expected). */
static int keyupdates_seen;
static void count_keyupdate(int write_p, int version, int type, const void *buf, size_t len, SSL *ssl, void *arg)
{
    (void)version; (void)ssl; (void)arg;
    if (!write_p && type == SSL3_RT_HANDSHAKE && len > 0 && ((const uint8_t *)buf)[0] == SSL3_MT_KEY_UPDATE)
        keyupdates_seen++;
}

/* Reads until n whole response frames are in buf (a socket read timeout bounds each wait). */
static int read_frames(SSL *ssl, mprpc_buf *buf, mprpc_response_frame *f, int n)
{
    static uint8_t chunk[65536];
    size_t off = 0;
    int got = 0;
    while (got < n) {
        int k;
        if (mprpc_wire_decode_response(buf->data + off, buf->len - off, 4u << 20, &f[got]) == MPRPC_OK) {
            off += f[got++].frame_size;
            continue;
        }
        if ((k = SSL_read(ssl, chunk, sizeof chunk)) <= 0 ||
            mprpc_buf_append(buf, chunk, (size_t)k, SIZE_MAX) != MPRPC_OK)
            return got;
    }
    return got;
}

static void a_key_update_while_the_provider_socket_is_full_keeps_the_connection(void)
{
    mprpc_server *srv = tls_provider("server.crt", 0, 0);
    testsvc_BigRequest brq = testsvc_BigRequest_init_zero;
    testsvc_EchoRequest erq = testsvc_EchoRequest_init_zero;
    mprpc_response_frame f[2];
    mprpc_buf big = { 0 }, small = { 0 }, in = { 0 };
    struct timeval tv = { 10, 0 };
    SSL *ssl = NULL;
    int fd;
    CHECK(srv != NULL);
    if (!srv) return;
    fd = raw_connect(mprpc_server_port(srv));
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    CHECK(fd >= 0 && (ssl = peer_session(fd, 0)) != NULL);
    if (!ssl) goto out;
    SSL_set_msg_callback(ssl, count_keyupdate);
    keyupdates_seen = 0;
    brq.size = 1u << 20;
    brq.fill = 0x5a;
    set_payload(&erq, "after");
    CHECK_STATUS(mprpc_wire_encode_request(&big, 4u << 20, 1, "TestService", "Big", testsvc_BigRequest_fields,
                                           &brq), MPRPC_OK);
    CHECK_STATUS(mprpc_wire_encode_request(&small, 4u << 20, 2, "TestService", "Echo",
                                           testsvc_EchoRequest_fields, &erq), MPRPC_OK);
    CHECK(SSL_write(ssl, big.data, (int)big.len) == (int)big.len);
    sleep_ms(200); /* the reply fills the provider's socket meanwhile: we read nothing */
    CHECK(SSL_key_update(ssl, SSL_KEY_UPDATE_REQUESTED) == 1);
    CHECK(SSL_write(ssl, small.data, (int)small.len) == (int)small.len);
    CHECK(read_frames(ssl, &in, f, 2) == 2);
    CHECK(f[0].header.call_id == 1 && f[0].header.status == MPRPC_OK && f[0].header.body_size > 1u << 20);
    CHECK(f[1].header.call_id == 2 && f[1].header.status == MPRPC_OK);
    CHECK(keyupdates_seen == 1); /* the provider updated its keys as asked */
out:
    mprpc_buf_free(&big);
    mprpc_buf_free(&small);
    mprpc_buf_free(&in);
    peer_free(ssl, fd);
    mprpc_server_free(srv);
}

static void a_provider_restart_under_a_live_channel_is_survived(void)
{
    mprpc_server *srv = tls_provider("server.crt", 1, 0);
    mprpc_channel *ch;
    mprpc_controller ctl;
    char id[200];
    int port, i;
    mprpc_status st = MPRPC_ERR_UNAVAILABLE;
    CHECK(srv != NULL);
    if (!srv) return;
    port = mprpc_server_port(srv);
    ch = tls_channel("localhost", port, "ca.crt", 1, NULL);
    CHECK_STATUS(whoami_call(ch, &ctl, id, sizeof id), MPRPC_OK);
    mprpc_server_free(srv);
    srv = tls_provider("server.crt", 1, port);
    CHECK(srv != NULL);
    for (i = 0; i < 3 && st != MPRPC_OK; i++) st = whoami_call(ch, &ctl, id, sizeof id); /* a fresh handshake */
    CHECK_STATUS(st, MPRPC_OK);
    CHECK_CONTAINS(id, "CN=alice");
    mprpc_channel_free(ch);
    mprpc_server_free(srv);
}

/* openssl s_client, with extra options, completes a mutual-TLS handshake
 * with the provider and its -brief report holds every line of want[]. */
static int s_client_reports(mprpc_server *srv, const char *extra, const char *const *want, int nwant)
{
    char cmd[768];
    int i;
    snprintf(cmd, sizeof cmd, "echo | timeout 20 openssl s_client -connect 127.0.0.1:%d -CAfile %s/ca.crt "
             "-cert %s/client.crt -key %s/client.key -verify_hostname localhost -verify_return_error -brief "
             "%s >%s/s_client.out 2>&1", mprpc_server_port(srv), tls_dir, tls_dir, tls_dir, extra, tls_dir);
    if (system(cmd) != 0) return 0;
    for (i = 0; i < nwant; i++) {
        snprintf(cmd, sizeof cmd, "grep -q '%s' %s/s_client.out", want[i], tls_dir);
        if (system(cmd) != 0) {
            fprintf(stderr, "  s_client %s: no '%s' in %s/s_client.out\n", extra, want[i], tls_dir);
            return 0;
        }
    }
    return 1;
}

static void openssl_s_client_completes_a_handshake_with_the_provider(void)
{
    static const char *const want[] = { "Protocol version: TLSv1.3", "Verification: OK" };
    mprpc_server *srv = tls_provider("server.crt", 1, 0);
    CHECK(srv != NULL);
    if (!srv) return;
    CHECK(s_client_reports(srv, "", want, 2));
    mprpc_server_free(srv);
}

/* AES-128-GCM costs the provider less per byte than AES-256-GCM, and the
 * provider's order decides: a client that lists AES-256 first (OpenSSL's
 * own default) still gets AES-128. */
static void the_provider_picks_aes_128_gcm_whatever_the_client_lists_first(void)
{
    static const char *const want[] = { "Ciphersuite: TLS_AES_128_GCM_SHA256" };
    mprpc_server *srv = tls_provider("server.crt", 1, 0);
    CHECK(srv != NULL);
    if (!srv) return;
    CHECK(s_client_reports(srv, "-ciphersuites TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256", want, 1));
    mprpc_server_free(srv);
}

static void a_provider_without_a_certificate_refuses_to_start(void)
{
    mprpc_config cfg;
    mprpc_server *srv = NULL;
    test_config(&cfg);
    cfg.tls_enable = 1;
    cfg.rpcserver_port = 0;
    CHECK_STATUS(mprpc_server_new(&srv, &cfg), MPRPC_OK);
    mprpc_server_add_service(srv, &who_service);
    CHECK_STATUS(mprpc_server_start(srv), MPRPC_ERR_TLS);
    CHECK_CONTAINS(mprpc_server_error(srv), "needs tls_cert_file");
    mprpc_server_free(srv);
}

int main(void)
{
    if (!tls_certs_make()) {
        CHECK(0);
        return test_summary("test_tls");
    }
    RUN(mutual_tls_call_shows_the_client_identity_to_the_handler);
    RUN(a_provider_without_a_ca_serves_callers_without_certificates);
    RUN(a_provider_certificate_from_another_ca_is_an_unknown_ca);
    RUN(an_expired_provider_certificate_is_refused_as_expired);
    RUN(a_certificate_for_another_name_is_a_name_mismatch);
    RUN(a_caller_without_a_client_certificate_is_refused_by_mutual_tls);
    RUN(a_tls_caller_facing_a_plaintext_provider_fails_fast);
    RUN(a_plaintext_caller_facing_a_tls_provider_is_told_tls_is_required);
    RUN(a_seed_caller_facing_a_tls_provider_sees_the_connection_closed);
    RUN(a_client_stalled_mid_handshake_does_not_stall_the_loop);
    RUN(handshake_garbage_neither_crashes_nor_stalls_the_provider);
    RUN(one_mib_messages_and_pipelined_async_calls_go_over_tls);
    RUN(a_failed_tls_send_names_the_tls_write);
    RUN(a_reset_under_a_tls_session_names_the_tls_read);
    RUN(a_forged_tls_record_fails_the_calls_with_the_tls_reason);
    RUN(a_key_update_while_the_provider_socket_is_full_keeps_the_connection);
    RUN(a_provider_restart_under_a_live_channel_is_survived);
    RUN(openssl_s_client_completes_a_handshake_with_the_provider);
    RUN(the_provider_picks_aes_128_gcm_whatever_the_client_lists_first);
    RUN(a_provider_without_a_certificate_refuses_to_start);
    tls_certs_remove();
    return test_summary("test_tls");
}
