/* Writes the seed corpus of the fuzz targets: valid and near-valid frames
 * and config files. Run from the repository root (`make fuzz-corpus`);
 * the output is committed under tests/fuzz/corpus/. Inputs that once found
 * a bug are added there by hand (named crash-*) and never regenerated. */
#define MPRPC_IMPLEMENTATION
#include "mprpc.h"
#include "testsvc.pb.h"
#include "user.pb.h"
#include "support.h"
#include "tls_support.h" /* built with MPRPC_TLS: tls_client_hello */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void put(const char *target, const char *name, uint8_t b0, uint8_t b1, int prefix,
                const mprpc_buf *body)
{
    char path[256];
    FILE *f;
    snprintf(path, sizeof path, "tests/fuzz/corpus/%s/%s", target, name);
    f = fopen(path, "wb");
    if (!f) { perror(path); exit(1); }
    if (prefix >= 1) fputc(b0, f);
    if (prefix >= 2) fputc(b1, f);
    fwrite(body->data + body->pos, 1, mprpc_buf_readable(body), f);
    fclose(f);
}

static void echo_req(mprpc_buf *b, uint64_t id, const char *method, const char *text, int fail)
{
    testsvc_EchoRequest rq = testsvc_EchoRequest_init_zero;
    rq.payload.size = (pb_size_t)strlen(text);
    memcpy(rq.payload.bytes, text, rq.payload.size);
    rq.seq = id;
    rq.fail = fail;
    mprpc_wire_encode_request(b, 1u << 20, id, "TestService", method, testsvc_EchoRequest_fields, &rq);
}

static const uint8_t bigdata[] = { 1, 2, 3, 4, 5, 6, 7, 8 };
static bool enc_big(pb_ostream_t *s, const pb_field_t *f, void *const *arg)
{
    (void)arg;
    return pb_encode_tag_for_field(s, f) && pb_encode_string(s, bigdata, sizeof bigdata);
}

static void big_req(mprpc_buf *b, uint64_t id, uint32_t size)
{
    testsvc_BigRequest rq = testsvc_BigRequest_init_zero;
    rq.data.funcs.encode = enc_big;
    rq.fill = 0x5a;
    rq.size = size;
    mprpc_wire_encode_request(b, 1u << 20, id, "TestService", "Big", testsvc_BigRequest_fields, &rq);
}

static void login_req(mprpc_buf *b, uint64_t id, const char *name)
{
    fixbug_LoginRequest rq = fixbug_LoginRequest_init_zero;
    rq.name.size = (pb_size_t)strlen(name);
    memcpy(rq.name.bytes, name, rq.name.size);
    mprpc_wire_encode_request(b, 1u << 20, id, "UserServiceRpc", "Login", fixbug_LoginRequest_fields, &rq);
}

static void raw(mprpc_buf *b, const void *p, size_t n) { mprpc_buf_append(b, p, n, 1u << 20); }

static void provider(void)
{
    mprpc_buf b;
    int i;
    /* byte 0: limits (bits 0-1 max_message_size 64/300/4096/4M, 2-3 depth 1/2/8/128,
     * 4 pending output 1 KiB, 5 slow reader); byte 1: split seed */
    mprpc_buf_init(&b); echo_req(&b, 1, "Echo", "hello", 0); put("provider", "echo", 0x0e, 1, 2, &b);
    put("provider", "echo-small-msg", 0x0c, 2, 2, &b);
    mprpc_buf_free(&b); mprpc_buf_init(&b);
    for (i = 1; i <= 3; i++) echo_req(&b, (uint64_t)i, "Echo", "pipelined", 0);
    put("provider", "echo-x3", 0x0e, 3, 2, &b);
    put("provider", "echo-x3-depth1", 0x02, 4, 2, &b);
    mprpc_buf_free(&b); mprpc_buf_init(&b);
    for (i = 1; i <= 4; i++) echo_req(&b, (uint64_t)i, "Deferred", "later", i == 3);
    put("provider", "deferred-x4", 0x0e, 5, 2, &b);
    put("provider", "deferred-x4-depth2", 0x06, 6, 2, &b);
    mprpc_buf_free(&b); mprpc_buf_init(&b);
    big_req(&b, 7, 3000); big_req(&b, 8, 10);
    put("provider", "big", 0x0e, 7, 2, &b);
    put("provider", "big-pending1k-slow", 0x3e, 8, 2, &b);
    put("provider", "big-over-max-reply", 0x0d, 9, 2, &b);
    mprpc_buf_free(&b); mprpc_buf_init(&b);
    login_req(&b, 11, "zhang san"); login_req(&b, 12, "");
    put("provider", "login", 0x0e, 10, 2, &b);
    mprpc_buf_free(&b); mprpc_buf_init(&b);
    echo_req(&b, 1, "Echo", "x", 1); echo_req(&b, 2, "Nope", "x", 0);
    { /* unknown service */
        testsvc_EchoRequest rq = testsvc_EchoRequest_init_zero;
        mprpc_wire_encode_request(&b, 1u << 20, 3, "NoSuchService", "Echo", testsvc_EchoRequest_fields, &rq);
    }
    put("provider", "errors", 0x0e, 11, 2, &b);
    mprpc_buf_free(&b); mprpc_buf_init(&b);
    { /* the seed's v0 frame: service, method, args_size only */
        static const uint8_t v0[] = { 0x19, 0, 0, 0, 0x0a, 0x0e, 'U', 's', 'e', 'r', 'S', 'e', 'r', 'v', 'i', 'c',
            'e', 'R', 'p', 'c', 0x12, 0x05, 'L', 'o', 'g', 'i', 'n', 0x18, 0x04, 0x0a, 0x02, 'l', 'i' };
        raw(&b, v0, sizeof v0);
        put("provider", "seed-v0-login", 0x0e, 12, 2, &b);
        raw(&b, v0, sizeof v0);
        put("provider", "seed-v0-twice", 0x0e, 13, 2, &b);
    }
    mprpc_buf_free(&b); mprpc_buf_init(&b);
    { /* args_size 2^31; header_len over 1024; a body that is not an EchoRequest */
        static const uint8_t huge[] = { 0x1d, 0, 0, 0, 0x0a, 0x0b, 'T', 'e', 's', 't', 'S', 'e', 'r', 'v', 'i', 'c', 'e',
            0x12, 0x04, 'E', 'c', 'h', 'o', 0x18, 0x80, 0x80, 0x80, 0x80, 0x08, 0x20, 0x09, 0x28, 0x01 };
        static const uint8_t longhdr[] = { 0x01, 0x08, 0, 0, 0x0a };
        static const uint8_t badbody[] = { 0x19, 0, 0, 0, 0x0a, 0x0b, 'T', 'e', 's', 't', 'S', 'e', 'r', 'v', 'i', 'c', 'e',
            0x12, 0x04, 'E', 'c', 'h', 'o', 0x18, 0x02, 0x20, 0x05, 0x28, 0x01, 0x10, 0xff };
        raw(&b, huge, sizeof huge); put("provider", "args-size-huge", 0x0e, 14, 2, &b);
        mprpc_buf_free(&b); mprpc_buf_init(&b);
        raw(&b, longhdr, sizeof longhdr); put("provider", "header-len-over-bound", 0x0e, 15, 2, &b);
        mprpc_buf_free(&b); mprpc_buf_init(&b);
        echo_req(&b, 1, "Echo", "ok first", 0);
        raw(&b, badbody, sizeof badbody); echo_req(&b, 6, "Echo", "ok after", 0);
        put("provider", "undecodable-body", 0x0e, 16, 2, &b);
    }
    mprpc_buf_free(&b); mprpc_buf_init(&b);
    echo_req(&b, 1, "Echo", "half a frame", 0);
    b.len -= 5; put("provider", "truncated", 0x0e, 17, 2, &b);
    mprpc_buf_free(&b); mprpc_buf_init(&b);
    echo_req(&b, 1, "Echo", "a", 0); echo_req(&b, 2, "Deferred", "b", 0); big_req(&b, 3, 500);
    login_req(&b, 4, "w"); echo_req(&b, 5, "Deferred", "c", 0); echo_req(&b, 6, "Echo", "d", 0);
    put("provider", "mixed", 0x0e, 18, 2, &b);
    put("provider", "mixed-depth2-pending1k-slow", 0x36, 19, 2, &b);
    put("provider", "mixed-msg300", 0x39, 20, 2, &b);
    mprpc_buf_free(&b);
}

static void resp(mprpc_buf *b, uint64_t id, int status, const char *text)
{
    testsvc_EchoResponse rs = testsvc_EchoResponse_init_zero;
    rs.payload.size = 2;
    memcpy(rs.payload.bytes, "ok", 2);
    rs.seq = id;
    mprpc_wire_encode_response(b, 1u << 20, id, status, text, status ? NULL : testsvc_EchoResponse_fields,
                               status ? NULL : &rs);
}

static void channel(void)
{
    mprpc_buf b;
    /* byte 0: bits 0-1 max_message_size 64/300/4096/4M, 2-3 response type
     * (Echo, Big with sink, Login, Big without callback), 4 large sink */
    mprpc_buf_init(&b); resp(&b, 1, 0, NULL);
    put("channel", "echo-ok", 0x03, 0, 1, &b);
    put("channel", "echo-ok-msg64", 0x00, 0, 1, &b);
    mprpc_buf_free(&b); mprpc_buf_init(&b); resp(&b, 1, MPRPC_ERR_APPLICATION, "it failed");
    put("channel", "app-error", 0x03, 0, 1, &b);
    mprpc_buf_free(&b); mprpc_buf_init(&b); resp(&b, 1, 99, "from the future");
    put("channel", "unknown-status", 0x03, 0, 1, &b);
    mprpc_buf_free(&b); mprpc_buf_init(&b); resp(&b, 2, 0, NULL);
    put("channel", "wrong-call-id", 0x03, 0, 1, &b);
    mprpc_buf_free(&b); mprpc_buf_init(&b); resp(&b, 1, 0, NULL); resp(&b, 1, 0, NULL);
    put("channel", "two-frames", 0x03, 0, 1, &b);
    mprpc_buf_free(&b); mprpc_buf_init(&b); resp(&b, 1, 0, NULL); b.len -= 3;
    put("channel", "half-frame", 0x03, 0, 1, &b);
    mprpc_buf_free(&b); mprpc_buf_init(&b);
    {
        static const uint8_t huge[] = { 0x08, 0, 0, 0, 0x08, 0x01, 0x20, 0x80, 0x80, 0x80, 0x80, 0x08 };
        static const uint8_t big[] = { 0x04, 0, 0, 0, 0x08, 0x01, 0x20, 0x0e,
            0x0a, 0x0a, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0x10, 0x37 };
        static const uint8_t login[] = { 0x04, 0, 0, 0, 0x08, 0x01, 0x20, 0x0a,
            0x0a, 0x06, 0x08, 0x01, 0x12, 0x02, 'n', 'o', 0x10, 0x00 };
        raw(&b, huge, sizeof huge); put("channel", "body-size-huge", 0x03, 0, 1, &b);
        mprpc_buf_free(&b); mprpc_buf_init(&b);
        raw(&b, big, sizeof big); put("channel", "big-sink-small", 0x07, 0, 1, &b);
        put("channel", "big-sink-large", 0x17, 0, 1, &b);
        put("channel", "big-no-callback", 0x0f, 0, 1, &b);
        mprpc_buf_free(&b); mprpc_buf_init(&b);
        raw(&b, login, sizeof login); put("channel", "login", 0x0b, 0, 1, &b);
    }
    mprpc_buf_free(&b);
}

static void config(void)
{
    static const struct { const char *name, *text; } files[] = {
        { "full", "# provider\nrpcserver_ip = 127.0.0.1\nrpcserver_port=8000\nio_threads = 4\n"
                  "rpc_timeout_ms=5000\nconnect_timeout_ms = 2000\nmax_message_size = 65536\n"
                  "max_connections=100\nidle_timeout_ms=1000\nmax_pipeline_depth=16\n"
                  "max_pending_output=4096\ndrain_timeout_ms=100\nchannel_max_connections=8\n"
                  "zookeeper_root=/x\nzookeeper_session_timeout_ms=10000\nzookeeper_seed_layout=yes\n"
                  "log_dir=/tmp\nlog_level=debug\nlog_stderr=off\nlog_queue_size=16\n" },
        { "seed-spellings", "rpcserverip=127.0.0.1\r\nrpcserverport=8000\r\nzookeeperip=127.0.0.1\r\nzookeeperport=2181\r\n" },
        { "bad-number", "rpcserver_port = 70000\n" },
        { "bad-ip", "rpcserver_ip = localhost\n" },
        { "no-equals", "rpcserver_port\n" },
        { "unknown-key", "colour = blue\n" },
        { "empty-key", " = 1\n" },
        { "level-number", "log_level = 3\nlog_stderr=true\n" },
        { "sign-and-junk", "io_threads = +2\nmax_connections = 12abc\n" },
        { "advertise", "advertise_ip = 10.0.0.1\nzookeeper_hosts = a:1,b:2\nzookeeper_auth = u:p\n" },
    };
    size_t i;
    for (i = 0; i < sizeof files / sizeof files[0]; i++) {
        mprpc_buf b;
        mprpc_buf_init(&b);
        raw(&b, files[i].text, strlen(files[i].text));
        put("config", files[i].name, 0, 0, 0, &b);
        mprpc_buf_free(&b);
    }
    { /* a line longer than the parser's buffer */
        mprpc_buf b;
        char line[1100];
        memset(line, 'a', sizeof line);
        memcpy(line, "log_dir=", 8);
        line[sizeof line - 1] = '\n';
        mprpc_buf_init(&b);
        raw(&b, line, sizeof line);
        put("config", "long-line", 0, 0, 0, &b);
        mprpc_buf_free(&b);
    }
}

/* What a client sends before any key is agreed: its ClientHello (TLS 1.3, and 1.2 only), cut short,
 * twice, followed by a record it cannot have keys for, and what no TLS client sends. */
static void tls_handshake(void)
{
    static const uint8_t too_long[] = { 0x16, 0x03, 0x01, 0xff, 0xff, 0x01, 0x00 };
    static const uint8_t alert_first[] = { 0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28 };
    static const uint8_t appdata[] = { 0x17, 0x03, 0x03, 0x00, 0x08, 1, 2, 3, 4, 5, 6, 7, 8 };
    static const char http[] = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
    SSL_CTX *ctx13 = SSL_CTX_new(TLS_client_method()), *ctx12 = SSL_CTX_new(TLS_client_method());
    size_t n13, n12;
    uint8_t *h13, *h12;
    mprpc_buf b;
    if (!ctx13 || !ctx12 || SSL_CTX_set_max_proto_version(ctx12, TLS1_2_VERSION) != 1) exit(1);
    h13 = tls_client_hello(ctx13, &n13);
    h12 = tls_client_hello(ctx12, &n12);
    if (!h13 || !h12) exit(1);
    mprpc_buf_init(&b);
    raw(&b, h13, n13); put("tls_handshake", "hello", 0x10, 0, 1, &b);
    put("tls_handshake", "hello-then-silence", 0x11, 0, 1, &b);
    raw(&b, h13, n13); put("tls_handshake", "hello-twice", 0x12, 0, 1, &b);
    b.len = n13; raw(&b, appdata, sizeof appdata); put("tls_handshake", "hello-then-appdata", 0x14, 0, 1, &b);
    b.len = n13 / 2; put("tls_handshake", "hello-truncated", 0x16, 0, 1, &b);
    b.len = 0; raw(&b, h12, n12); put("tls_handshake", "hello-tls12", 0x18, 0, 1, &b);
    b.len = 0; raw(&b, too_long, sizeof too_long); put("tls_handshake", "record-too-long", 0x20, 0, 1, &b);
    b.len = 0; raw(&b, alert_first, sizeof alert_first); put("tls_handshake", "alert-first", 0x22, 0, 1, &b);
    b.len = 0; raw(&b, http, sizeof http - 1); put("tls_handshake", "http-request", 0x24, 0, 1, &b);
    mprpc_buf_free(&b);
    free(h13);
    free(h12);
    SSL_CTX_free(ctx13);
    SSL_CTX_free(ctx12);
}

int main(void)
{
    provider();
    channel();
    config();
    tls_handshake();
    return 0;
}
