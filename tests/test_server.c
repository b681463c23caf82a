/* Provider (RpcProvider): every example method over real loopback sockets,
 * pipelining, error replies, large messages, hostile frames while others are
 * served, seed (v0) callers, deferred calls, graceful stop, and no heap
 * allocation per call once warm. */
#define _GNU_SOURCE 1
#include <stdint.h>
#include <stdlib.h>

/* Count every allocation the library makes (all three hooks, as required). */
static uint64_t lib_allocs;
static void *counting_malloc(size_t n) { __atomic_add_fetch(&lib_allocs, 1, __ATOMIC_RELAXED); return malloc(n); }
static void *counting_realloc(void *p, size_t n) { __atomic_add_fetch(&lib_allocs, 1, __ATOMIC_RELAXED); return realloc(p, n); }
#define MPRPC_MALLOC(n) counting_malloc(n)
#define MPRPC_REALLOC(p, n) counting_realloc((p), (n))
#define MPRPC_FREE(p) free(p)

#define MPRPC_IMPLEMENTATION
#include "mprpc.h"
#include "test.h"
#include "support.h"

static void example_methods_answer_over_tcp(void)
{
    mprpc_config cfg;
    mprpc_server *srv;
    mprpc_channel *ch;
    mprpc_controller ctl;
    fixbug_LoginRequest rq = fixbug_LoginRequest_init_zero;
    fixbug_LoginResponse rs = fixbug_LoginResponse_init_zero;
    testsvc_EchoResponse ers;
    if (!setup(&cfg, &srv, &ch, &ctl)) return;
    CHECK(mprpc_server_port(srv) > 0);
    memcpy(rq.name.bytes, "zhang san", 9);
    rq.name.size = 9;
    CHECK_STATUS(MPRPC_CALL(ch, "UserServiceRpc", "Login", fixbug_LoginRequest, &rq, fixbug_LoginResponse, &rs, &ctl), MPRPC_OK);
    CHECK(rs.success && rs.result.errcode == 0);
    rq.name.size = 0;
    CHECK_STATUS(MPRPC_CALL(ch, "UserServiceRpc", "Login", fixbug_LoginRequest, &rq, fixbug_LoginResponse, &rs, &ctl), MPRPC_OK);
    CHECK(!rs.success && rs.result.errcode == 1);
    CHECK_STATUS(echo_call(ch, "hello", 42, &ctl, &ers), MPRPC_OK);
    CHECK(ers.seq == 42 && ers.payload.size == 5 && memcmp(ers.payload.bytes, "hello", 5) == 0);
    teardown(srv, ch);
}

static void unknown_service_and_method_are_distinct_errors(void)
{
    mprpc_config cfg;
    mprpc_server *srv;
    mprpc_channel *ch;
    mprpc_controller ctl;
    testsvc_EchoRequest rq = testsvc_EchoRequest_init_zero;
    testsvc_EchoResponse rs;
    if (!setup(&cfg, &srv, &ch, &ctl)) return;
    CHECK_STATUS(MPRPC_CALL(ch, "NoSuchService", "Echo", testsvc_EchoRequest, &rq, testsvc_EchoResponse, &rs, &ctl),
                 MPRPC_ERR_UNKNOWN_SERVICE);
    CHECK(mprpc_controller_failed(&ctl));
    CHECK_CONTAINS(mprpc_controller_error_text(&ctl), "NoSuchService");
    CHECK_STATUS(MPRPC_CALL(ch, "TestService", "Nope", testsvc_EchoRequest, &rq, testsvc_EchoResponse, &rs, &ctl),
                 MPRPC_ERR_UNKNOWN_METHOD);
    CHECK_CONTAINS(mprpc_controller_error_text(&ctl), "Nope");
    /* the same connection still serves good calls afterwards */
    CHECK_STATUS(echo_call(ch, "after", 1, &ctl, &rs), MPRPC_OK);
    teardown(srv, ch);
}

static void application_failure_reaches_the_controller(void)
{
    mprpc_config cfg;
    mprpc_server *srv;
    mprpc_channel *ch;
    mprpc_controller ctl;
    testsvc_EchoRequest rq = testsvc_EchoRequest_init_zero;
    testsvc_EchoResponse rs;
    if (!setup(&cfg, &srv, &ch, &ctl)) return;
    rq.fail = true;
    rq.seq = 77;
    CHECK_STATUS(MPRPC_CALL(ch, "TestService", "Echo", testsvc_EchoRequest, &rq, testsvc_EchoResponse, &rs, &ctl),
                 MPRPC_ERR_APPLICATION);
    CHECK_CONTAINS(ctl.error_text, "echo asked to fail (seq 77)");
    mprpc_controller_reset(&ctl);
    CHECK(!mprpc_controller_failed(&ctl) && ctl.error_text[0] == '\0');
    teardown(srv, ch);
}

static void undecodable_request_gets_a_decode_error(void)
{
    mprpc_config cfg;
    mprpc_server *srv;
    mprpc_buf b;
    mprpc_response_frame f;
    int fd;
    /* a hand-made frame whose body is not an EchoRequest (a truncated varint) */
    static const uint8_t frame[] = { 0x19, 0, 0, 0,
        0x0a, 0x0b, 'T', 'e', 's', 't', 'S', 'e', 'r', 'v', 'i', 'c', 'e',
        0x12, 0x04, 'E', 'c', 'h', 'o', 0x18, 0x02, 0x20, 0x05, 0x28, 0x01,
        0x10, 0xff };
    if (!(srv = provider_up(&cfg))) return;
    fd = raw_connect(cfg.rpcserver_port);
    CHECK(raw_send_all(fd, frame, sizeof frame));
    mprpc_buf_init(&b);
    CHECK_STATUS(raw_read_response(fd, &b, &f, 5000), MPRPC_OK);
    CHECK(f.header.call_id == 5);
    CHECK(f.header.status == MPRPC_ERR_DECODE);
    CHECK(f.header.error_text.size > 0);
    mprpc_buf_free(&b);
    close(fd);
    mprpc_server_free(srv);
}

static void pipelined_requests_are_all_answered(void)
{
    mprpc_config cfg;
    mprpc_server *srv;
    mprpc_buf out, in;
    int fd, i, seen[200];
    if (!(srv = provider_up(&cfg))) return;
    mprpc_buf_init(&out);
    mprpc_buf_init(&in);
    for (i = 0; i < 200; i++) {
        testsvc_EchoRequest rq = testsvc_EchoRequest_init_zero;
        set_payload(&rq, "pipelined");
        rq.seq = (uint64_t)i;
        mprpc_wire_encode_request(&out, 1u << 20, (uint64_t)i + 1, "TestService", "Echo", testsvc_EchoRequest_fields, &rq);
        seen[i] = 0;
    }
    fd = raw_connect(cfg.rpcserver_port);
    CHECK(raw_send_all(fd, out.data, out.len)); /* one burst */
    for (i = 0; i < 200; i++) {
        mprpc_response_frame f;
        testsvc_EchoResponse rs;
        pb_istream_t is;
        if (raw_read_response(fd, &in, &f, 5000) != MPRPC_OK) break;
        is = pb_istream_from_buffer(f.body, f.header.body_size);
        CHECK(f.header.status == 0 && pb_decode(&is, testsvc_EchoResponse_fields, &rs));
        CHECK(f.header.call_id == rs.seq + 1);
        if (rs.seq < 200) seen[rs.seq]++;
        mprpc_buf_consume(&in, f.frame_size);
    }
    CHECK(i == 200);
    for (i = 0; i < 200; i++) CHECK(seen[i] == 1);
    close(fd);
    mprpc_buf_free(&out);
    mprpc_buf_free(&in);
    mprpc_server_free(srv);
}

/* 1 MiB each way: nanopb callback fields, zero-copy on the provider. */
static bool copy_big(pb_istream_t *stream, const pb_field_t *field, void **arg)
{
    return mprpc_bytes_copy_decode(stream, field, arg);
}

static void one_mebibyte_messages_travel_both_ways(void)
{
    enum { SIZE = 1 << 20 };
    mprpc_config cfg;
    mprpc_server *srv;
    mprpc_channel *ch;
    mprpc_controller ctl;
    testsvc_BigRequest rq = testsvc_BigRequest_init_zero;
    testsvc_BigResponse rs = testsvc_BigResponse_init_zero;
    mprpc_bytes payload;
    mprpc_bytes_sink sink;
    uint8_t *data = (uint8_t *)malloc(SIZE), *back = (uint8_t *)malloc(SIZE);
    uint32_t sum = 0;
    size_t i;
    for (i = 0; i < SIZE; i++) { data[i] = (uint8_t)(i * 7 + 3); sum += data[i]; }
    test_config(&cfg);
    srv = start_provider(&cfg, 0);
    CHECK(srv != NULL);
    if (!srv) { free(data); free(back); return; }
    mprpc_channel_new(&ch, &cfg);
    mprpc_controller_init(&ctl);
    payload.data = data;
    payload.size = SIZE;
    rq.data.funcs.encode = mprpc_bytes_encode;
    rq.data.arg = &payload;
    rq.fill = 0xab;
    rq.size = SIZE;
    sink.data = back;
    sink.capacity = SIZE;
    sink.size = 0;
    rs.data.funcs.decode = copy_big;
    rs.data.arg = &sink;
    CHECK_STATUS(MPRPC_CALL(ch, "TestService", "Big", testsvc_BigRequest, &rq, testsvc_BigResponse, &rs, &ctl), MPRPC_OK);
    CHECK(rs.sum == sum);
    CHECK(sink.size == SIZE);
    CHECK(back[0] == 0xab && back[SIZE - 1] == 0xab);
    /* over max_message_size: refused by the caller before sending */
    {
        mprpc_config small = cfg;
        mprpc_channel *ch2;
        small.max_message_size = 1000;
        mprpc_channel_new(&ch2, &small);
        CHECK_STATUS(MPRPC_CALL(ch2, "TestService", "Big", testsvc_BigRequest, &rq, testsvc_BigResponse, &rs, &ctl),
                     MPRPC_ERR_TOO_LARGE);
        mprpc_channel_free(ch2);
    }
    teardown(srv, ch);
    free(data);
    free(back);
}

static void oversized_frame_is_refused_while_others_are_served(void)
{
    mprpc_config cfg;
    mprpc_server *srv;
    mprpc_channel *ch;
    mprpc_controller ctl;
    testsvc_EchoResponse rs;
    mprpc_buf b;
    mprpc_response_frame f;
    int fd;
    /* header says args_size = 2^31 */
    static const uint8_t frame[] = { 0x1d, 0, 0, 0,
        0x0a, 0x0b, 'T', 'e', 's', 't', 'S', 'e', 'r', 'v', 'i', 'c', 'e',
        0x12, 0x04, 'E', 'c', 'h', 'o', 0x18, 0x80, 0x80, 0x80, 0x80, 0x08, 0x20, 0x09, 0x28, 0x01 };
    test_config(&cfg);
    cfg.max_message_size = 64 * 1024;
    srv = start_provider(&cfg, 0);
    CHECK(srv != NULL);
    if (!srv) return;
    mprpc_channel_new(&ch, &cfg);
    mprpc_controller_init(&ctl);
    fd = raw_connect(cfg.rpcserver_port);
    CHECK(raw_send_all(fd, frame, sizeof frame));
    mprpc_buf_init(&b);
    CHECK_STATUS(raw_read_response(fd, &b, &f, 5000), MPRPC_OK);
    CHECK(f.header.call_id == 9 && f.header.status == MPRPC_ERR_TOO_LARGE);
    mprpc_buf_consume(&b, f.frame_size);
    CHECK(raw_wait_closed(fd, 5000));
    CHECK_STATUS(echo_call(ch, "still here", 3, &ctl, &rs), MPRPC_OK);
    mprpc_buf_free(&b);
    close(fd);
    teardown(srv, ch);
}

static void garbage_connections_are_closed_while_others_are_served(void)
{
    mprpc_config cfg;
    mprpc_server *srv;
    mprpc_channel *ch;
    mprpc_controller ctl;
    testsvc_EchoResponse rs;
    mprpc_server_stats st;
    uint8_t junk[512];
    int fds[8], i, j;
    if (!setup(&cfg, &srv, &ch, &ctl)) return;
    srand(1234);
    for (i = 0; i < 8; i++) {
        for (j = 0; j < (int)sizeof junk; j++) junk[j] = (uint8_t)rand();
        junk[0] = (uint8_t)(i * 31 + 7); junk[1] = 0; junk[2] = 0; junk[3] = 0; /* a small header_len of junk */
        fds[i] = raw_connect(cfg.rpcserver_port);
        raw_send_all(fds[i], junk, sizeof junk);
        CHECK_STATUS(echo_call(ch, "between garbage", (uint64_t)i, &ctl, &rs), MPRPC_OK);
    }
    for (i = 0; i < 8; i++) {
        CHECK(raw_wait_closed(fds[i], 5000));
        close(fds[i]);
    }
    mprpc_server_get_stats(srv, &st);
    CHECK(st.protocol_errors >= 1);
    CHECK_STATUS(echo_call(ch, "after garbage", 99, &ctl, &rs), MPRPC_OK);
    teardown(srv, ch);
}

/* A seed (C++ mprpc) caller: no call_id, no version; gets the bare response
 * message and then the connection closes, as with the seed's RpcProvider. */
static void seed_callers_get_the_bare_response_then_close(void)
{
    mprpc_config cfg;
    mprpc_server *srv;
    uint8_t frame[256], reply[256];
    fixbug_LoginRequest rq = fixbug_LoginRequest_init_zero;
    fixbug_LoginResponse rs = fixbug_LoginResponse_init_zero;
    pb_ostream_t os;
    pb_istream_t is;
    size_t n = 0, body, got;
    int fd;
    if (!(srv = provider_up(&cfg))) return;
    memcpy(rq.name.bytes, "li si", 5);
    rq.name.size = 5;
    os = pb_ostream_from_buffer(frame + 64, 100);
    CHECK(pb_encode(&os, fixbug_LoginRequest_fields, &rq));
    body = os.bytes_written;
    /* header: service, method, args_size: exactly the seed's three fields */
    frame[4 + n++] = 0x0a; frame[4 + n++] = 14; memcpy(frame + 4 + n, "UserServiceRpc", 14); n += 14;
    frame[4 + n++] = 0x12; frame[4 + n++] = 5; memcpy(frame + 4 + n, "Login", 5); n += 5;
    frame[4 + n++] = 0x18; frame[4 + n++] = (uint8_t)body;
    frame[0] = (uint8_t)n; frame[1] = frame[2] = frame[3] = 0;
    memmove(frame + 4 + n, frame + 64, body);
    fd = raw_connect(cfg.rpcserver_port);
    CHECK(raw_send_all(fd, frame, 4 + n + body));
    got = raw_recv(fd, reply, sizeof reply, 5000); /* stops at EOF: the provider closed */
    is = pb_istream_from_buffer(reply, got);
    CHECK(got > 0 && pb_decode(&is, fixbug_LoginResponse_fields, &rs));
    CHECK(rs.success);
    CHECK(raw_wait_closed(fd, 2000));
    close(fd);
    mprpc_server_free(srv);
}

static void deferred_calls_finish_from_other_threads(void)
{
    mprpc_config cfg;
    mprpc_server *srv;
    mprpc_channel *ch;
    mprpc_controller ctl;
    testsvc_EchoRequest rq = testsvc_EchoRequest_init_zero;
    testsvc_EchoResponse rs;
    int i;
    if (!setup(&cfg, &srv, &ch, &ctl)) return;
    for (i = 0; i < 20; i++) {
        set_payload(&rq, "later");
        rq.seq = (uint64_t)i;
        rq.delay_ms = (uint32_t)(i % 3);
        memset(&rs, 0, sizeof rs);
        CHECK_STATUS(MPRPC_CALL(ch, "TestService", "Deferred", testsvc_EchoRequest, &rq, testsvc_EchoResponse, &rs, &ctl), MPRPC_OK);
        CHECK(rs.seq == (uint64_t)i && rs.payload.size == 5);
    }
    teardown(srv, ch);
}

/* Graceful stop: every request the provider received before the stop is
 * answered, including deferred ones still running. */
typedef struct stop_ctx { mprpc_server *srv; int delay_ms; } stop_ctx;
static void *stop_later(void *arg)
{
    stop_ctx *s = (stop_ctx *)arg;
    sleep_ms(s->delay_ms);
    mprpc_server_stop(s->srv);
    return NULL;
}

static void graceful_stop_answers_calls_in_flight(void)
{
    mprpc_config cfg;
    mprpc_server *srv;
    mprpc_buf out, in;
    stop_ctx sc;
    pthread_t t;
    int fd, i, answered = 0;
    if (!(srv = provider_up(&cfg))) return;
    mprpc_buf_init(&out);
    mprpc_buf_init(&in);
    for (i = 0; i < 10; i++) {
        testsvc_EchoRequest rq = testsvc_EchoRequest_init_zero;
        rq.delay_ms = 300; /* still running when the stop comes */
        rq.seq = (uint64_t)i;
        mprpc_wire_encode_request(&out, 1u << 20, (uint64_t)i + 1, "TestService", "Deferred", testsvc_EchoRequest_fields, &rq);
    }
    fd = raw_connect(cfg.rpcserver_port);
    CHECK(raw_send_all(fd, out.data, out.len));
    sleep_ms(100); /* the provider has read them */
    sc.srv = srv;
    sc.delay_ms = 0;
    pthread_create(&t, NULL, stop_later, &sc);
    CHECK_STATUS(mprpc_server_run(srv), MPRPC_OK); /* returns after the drain */
    pthread_join(t, NULL);
    for (;;) {
        mprpc_response_frame f;
        if (raw_read_response(fd, &in, &f, 2000) != MPRPC_OK) break;
        CHECK(f.header.status == 0);
        answered++;
        mprpc_buf_consume(&in, f.frame_size);
    }
    CHECK(answered == 10);
    /* and new connections are refused once it has stopped */
    CHECK(raw_connect(cfg.rpcserver_port) < 0);
    close(fd);
    mprpc_buf_free(&out);
    mprpc_buf_free(&in);
    mprpc_server_free(srv);
}

static void a_restarted_provider_is_reached_by_a_live_channel(void)
{
    mprpc_config cfg;
    mprpc_server *srv;
    mprpc_channel *ch;
    mprpc_controller ctl;
    testsvc_EchoResponse rs;
    int port;
    if (!(srv = provider_up(&cfg))) return;
    port = cfg.rpcserver_port;
    mprpc_channel_new(&ch, &cfg);
    mprpc_controller_init(&ctl);
    CHECK_STATUS(echo_call(ch, "before", 1, &ctl, &rs), MPRPC_OK);
    mprpc_server_free(srv);
    CHECK_STATUS(echo_call(ch, "while down", 2, &ctl, &rs), MPRPC_ERR_CONNECT);
    CHECK_CONTAINS(ctl.error_text, "refused");
    srv = start_provider(&cfg, port);
    CHECK(srv != NULL);
    CHECK_STATUS(echo_call(ch, "after", 3, &ctl, &rs), MPRPC_OK);
    CHECK(rs.seq == 3);
    /* a second restart, with the pooled connection idle in between */
    mprpc_server_free(srv);
    srv = start_provider(&cfg, port);
    CHECK(srv != NULL);
    CHECK_STATUS(echo_call(ch, "again", 4, &ctl, &rs), MPRPC_OK);
    teardown(srv, ch);
}

typedef struct caller_ctx {
    mprpc_channel *ch;
    int id;
    int ok;
} caller_ctx;

static void *caller_thread(void *arg)
{
    caller_ctx *c = (caller_ctx *)arg;
    mprpc_controller ctl;
    int i;
    mprpc_controller_init(&ctl);
    for (i = 0; i < 2000; i++) {
        char text[32];
        testsvc_EchoResponse rs;
        uint64_t seq = (uint64_t)c->id * 1000000u + (uint64_t)i;
        snprintf(text, sizeof text, "t%d-%d", c->id, i);
        if (echo_call(c->ch, text, seq, &ctl, &rs) != MPRPC_OK) continue;
        if (rs.seq == seq && rs.payload.size == strlen(text) && memcmp(rs.payload.bytes, text, rs.payload.size) == 0)
            c->ok++;
    }
    return NULL;
}

static void one_channel_serves_eight_threads(void)
{
    mprpc_config cfg;
    mprpc_server *srv;
    mprpc_channel *ch;
    caller_ctx ctx[8];
    pthread_t t[8];
    int i;
    if (!(srv = provider_up(&cfg))) return;
    mprpc_channel_new(&ch, &cfg);
    for (i = 0; i < 8; i++) {
        ctx[i].ch = ch;
        ctx[i].id = i;
        ctx[i].ok = 0;
        pthread_create(&t[i], NULL, caller_thread, &ctx[i]);
    }
    for (i = 0; i < 8; i++) {
        pthread_join(t[i], NULL);
        CHECK(ctx[i].ok == 2000);
    }
    teardown(srv, ch);
}

static void warm_calls_allocate_nothing(void)
{
    mprpc_config cfg;
    mprpc_server *srv;
    mprpc_channel *ch;
    mprpc_controller ctl;
    testsvc_EchoResponse rs;
    uint64_t before;
    int i, ok = 0;
    if (!setup(&cfg, &srv, &ch, &ctl)) return;
    for (i = 0; i < 100; i++) echo_call(ch, "warm-up", (uint64_t)i, &ctl, &rs);
    before = __atomic_load_n(&lib_allocs, __ATOMIC_RELAXED);
    for (i = 0; i < 5000; i++) ok += echo_call(ch, "steady", (uint64_t)i, &ctl, &rs) == MPRPC_OK;
    CHECK(ok == 5000);
    CHECK(__atomic_load_n(&lib_allocs, __ATOMIC_RELAXED) == before);
    if (__atomic_load_n(&lib_allocs, __ATOMIC_RELAXED) != before)
        fprintf(stderr, "  %llu allocations in 5000 warm calls\n",
                (unsigned long long)(__atomic_load_n(&lib_allocs, __ATOMIC_RELAXED) - before));
    teardown(srv, ch);
}

static void bad_setup_is_reported_not_crashed(void)
{
    mprpc_config cfg;
    mprpc_server *a, *b;
    mprpc_method bad = MPRPC_METHOD("X", testsvc_EchoRequest, testsvc_EchoResponse, echo);
    mprpc_service svc = { "Bad", &bad, 1, NULL };
    test_config(&cfg);
    a = start_provider(&cfg, 0);
    CHECK(a != NULL);
    /* the same port twice: the bind error is reported */
    CHECK_STATUS(mprpc_server_new(&b, &cfg), MPRPC_OK);
    CHECK_STATUS(mprpc_server_start(b), MPRPC_ERR_IO);
    CHECK_CONTAINS(mprpc_server_error(b), strerror(EADDRINUSE)); /* glibc and musl word it differently */
    /* a server that failed to start is not half-alive: it says to make a new one */
    CHECK_STATUS(mprpc_server_start(b), MPRPC_ERR_INVALID_ARGUMENT);
    CHECK_CONTAINS(mprpc_server_error(b), "create a new one");
    mprpc_server_free(b);
    /* a method without a handler, a duplicate service, adding after start */
    bad.handler = NULL;
    CHECK_STATUS(mprpc_server_new(&b, &cfg), MPRPC_OK);
    CHECK_STATUS(mprpc_server_add_service(b, &svc), MPRPC_ERR_INVALID_ARGUMENT);
    CHECK_CONTAINS(mprpc_server_error(b), "handler");
    CHECK_STATUS(mprpc_server_add_service(b, &test_service), MPRPC_OK);
    CHECK_STATUS(mprpc_server_add_service(b, &test_service), MPRPC_ERR_INVALID_ARGUMENT);
    mprpc_server_free(b);
    CHECK_STATUS(mprpc_server_add_service(a, &user_service), MPRPC_ERR_INVALID_ARGUMENT);
    CHECK_CONTAINS(mprpc_server_error(a), "already started");
    mprpc_server_free(a);
    mprpc_server_free(NULL);
    CHECK_STATUS(mprpc_server_new(NULL, &cfg), MPRPC_ERR_INVALID_ARGUMENT);
#ifndef MPRPC_NO_ZOOKEEPER
    /* 0.0.0.0 is no address to publish: refused before ZooKeeper is even asked */
    test_config(&cfg);
    cfg.rpcserver_port = 0;
    strcpy(cfg.rpcserver_ip, "0.0.0.0");
    strcpy(cfg.zookeeper_ip, "127.0.0.1");
    CHECK_STATUS(mprpc_server_new(&b, &cfg), MPRPC_OK);
    CHECK_STATUS(mprpc_server_start(b), MPRPC_ERR_CONFIG);
    CHECK_CONTAINS(mprpc_server_error(b), "advertise_ip");
    mprpc_server_free(b);
#endif
}

int main(void)
{
    RUN(example_methods_answer_over_tcp);
    RUN(unknown_service_and_method_are_distinct_errors);
    RUN(application_failure_reaches_the_controller);
    RUN(undecodable_request_gets_a_decode_error);
    RUN(pipelined_requests_are_all_answered);
    RUN(one_mebibyte_messages_travel_both_ways);
    RUN(oversized_frame_is_refused_while_others_are_served);
    RUN(garbage_connections_are_closed_while_others_are_served);
    RUN(seed_callers_get_the_bare_response_then_close);
    RUN(deferred_calls_finish_from_other_threads);
    RUN(graceful_stop_answers_calls_in_flight);
    RUN(a_restarted_provider_is_reached_by_a_live_channel);
    RUN(one_channel_serves_eight_threads);
    RUN(warm_calls_allocate_nothing);
    RUN(bad_setup_is_reported_not_crashed);
    return test_summary("test_server");
}
