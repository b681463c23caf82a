/* TLS (built with MPRPC_TLS): providers and channels over real TLS sessions, with certificates made by
 * scripts/tls-certs.sh (the openssl command) in a fresh directory. Each failure must come as
 * MPRPC_ERR_TLS (or a lost connection for a plaintext caller) with the reason in words, never a hang. */
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
static mprpc_channel *tls_channel(const char *host, int port, const char *ca, int client, const char *name)
{
    mprpc_config cfg;
    mprpc_channel *ch = NULL;
    char list[96];
    test_config(&cfg);
    cfg.rpc_timeout_ms = 5000;
    snprintf(list, sizeof list, "%s:%d", host, port);
    mprpc_config_set(&cfg, "rpcserver_list", list);
    if (ca) {
        cfg.tls_enable = 1;
        tls_pem(cfg.tls_ca_file, sizeof cfg.tls_ca_file, ca);
    }
    if (client) {
        tls_pem(cfg.tls_cert_file, sizeof cfg.tls_cert_file, "client.crt");
        tls_pem(cfg.tls_key_file, sizeof cfg.tls_key_file, "client.key");
    }
    if (name) mprpc_config_set(&cfg, "tls_server_name", name);
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

static void a_plaintext_caller_facing_a_tls_provider_fails_fast(void)
{
    mprpc_server *srv = tls_provider("server.crt", 0, 0);
    mprpc_channel *ch;
    mprpc_controller ctl;
    char id[200];
    CHECK(srv != NULL);
    if (!srv) return;
    ch = tls_channel("127.0.0.1", mprpc_server_port(srv), NULL, 0, NULL);
    /* the provider closes at the first bytes that are no TLS record: no waiting for the timeout */
    CHECK_STATUS(whoami_call(ch, &ctl, id, sizeof id), MPRPC_ERR_CONNECTION_LOST);
    CHECK_CONTAINS(mprpc_controller_error_text(&ctl), "closed the connection");
    mprpc_channel_free(ch);
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

static void openssl_s_client_completes_a_handshake_with_the_provider(void)
{
    mprpc_server *srv = tls_provider("server.crt", 1, 0);
    char cmd[512];
    CHECK(srv != NULL);
    if (!srv) return;
    snprintf(cmd, sizeof cmd, "echo | timeout 20 openssl s_client -connect 127.0.0.1:%d -CAfile %s/ca.crt "
             "-cert %s/client.crt -key %s/client.key -verify_hostname localhost -verify_return_error -brief "
             ">%s/s_client.out 2>&1", mprpc_server_port(srv), tls_dir, tls_dir, tls_dir, tls_dir);
    CHECK(system(cmd) == 0);
    snprintf(cmd, sizeof cmd, "grep -q 'Protocol version: TLSv1.3' %s/s_client.out && "
             "grep -q 'Verification: OK' %s/s_client.out", tls_dir, tls_dir);
    CHECK(system(cmd) == 0);
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
    RUN(a_plaintext_caller_facing_a_tls_provider_fails_fast);
    RUN(a_client_stalled_mid_handshake_does_not_stall_the_loop);
    RUN(handshake_garbage_neither_crashes_nor_stalls_the_provider);
    RUN(one_mib_messages_and_pipelined_async_calls_go_over_tls);
    RUN(a_provider_restart_under_a_live_channel_is_survived);
    RUN(openssl_s_client_completes_a_handshake_with_the_provider);
    RUN(a_provider_without_a_certificate_refuses_to_start);
    tls_certs_remove();
    return test_summary("test_tls");
}
