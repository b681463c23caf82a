/* Provider (RpcProvider): every example method over real loopback sockets,
 * pipelining, error replies, large messages, hostile frames while others are
 * served, seed (v0) callers, deferred calls, deadlines, graceful stop, the
 * server's lifecycle from any thread, and no heap allocation per call once
 * warm. */
#define _GNU_SOURCE 1
#include <malloc.h>
#include <stdint.h>
#include <stdlib.h>

/* The library's allocations go through these hooks (all three, as required):
 * they count calls and live bytes, and fail on demand any request of at least
 * fail_from bytes (0: never), to drive the out-of-memory paths. */
static uint64_t lib_allocs;
static int64_t lib_live_bytes;
static size_t fail_from;
static void live_add(void *p, int64_t sign)
{
    if (p) __atomic_add_fetch(&lib_live_bytes, sign * (int64_t)malloc_usable_size(p), __ATOMIC_RELAXED);
}
static int must_fail(size_t n)
{
    size_t f = __atomic_load_n(&fail_from, __ATOMIC_RELAXED);
    return f != 0 && n >= f;
}
static void *counting_malloc(size_t n)
{
    void *p;
    __atomic_add_fetch(&lib_allocs, 1, __ATOMIC_RELAXED);
    if (must_fail(n)) return NULL;
    p = malloc(n);
    live_add(p, 1);
    return p;
}
static void *counting_realloc(void *p, size_t n)
{
    void *q;
    __atomic_add_fetch(&lib_allocs, 1, __ATOMIC_RELAXED);
    if (must_fail(n)) return NULL;
    live_add(p, -1);
    q = realloc(p, n);
    live_add(q ? q : p, 1);
    return q;
}
static void counting_free(void *p)
{
    live_add(p, -1);
    free(p);
}
#define MPRPC_MALLOC(n) counting_malloc(n)
#define MPRPC_REALLOC(p, n) counting_realloc((p), (n))
#define MPRPC_FREE(p) counting_free(p)

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

/* Issue 12: BigRequest.data is a nanopb callback field. A method without a prepare hook has no decoder
 * for it; nanopb alone would skip the bytes and the handler would see an empty request. */
static int unprepared_runs; /* atomic */
static void unprepared_big(mprpc_call *call, const void *request, void *response, void *user)
{
    const testsvc_BigRequest *rq = (const testsvc_BigRequest *)request;
    (void)call; (void)user;
    __atomic_add_fetch(&unprepared_runs, 1, __ATOMIC_RELAXED);
    ((testsvc_BigResponse *)response)->sum = rq->fill + (rq->data.funcs.decode || rq->data.arg ? 1000 : 0);
}
static const mprpc_method unprepared_methods[] = {
    MPRPC_METHOD("Big", testsvc_BigRequest, testsvc_BigResponse, unprepared_big),
};
static const mprpc_service unprepared_service = MPRPC_SERVICE("Unprepared", unprepared_methods, NULL);

static mprpc_status call_big(mprpc_channel *ch, const char *service, const mprpc_bytes *data, uint32_t fill,
                             testsvc_BigResponse *rs, mprpc_controller *ctl)
{
    testsvc_BigRequest rq = testsvc_BigRequest_init_zero;
    rq.fill = fill;
    if (data) {
        rq.data.funcs.encode = mprpc_bytes_encode;
        rq.data.arg = (void *)(uintptr_t)data;
    }
    memset(rs, 0, sizeof *rs);
    mprpc_controller_init(ctl);
    return MPRPC_CALL(ch, service, "Big", testsvc_BigRequest, &rq, testsvc_BigResponse, rs, ctl);
}

static void a_callback_field_sent_to_a_method_without_a_decoder_fails_naming_the_field(void)
{
    mprpc_config cfg;
    mprpc_server *srv = NULL;
    mprpc_channel *ch = NULL;
    mprpc_controller ctl;
    testsvc_BigResponse rs;
    static const uint8_t bytes[] = "forty-two bytes that must not vanish.....";
    mprpc_bytes data = { bytes, sizeof bytes - 1 };
    test_config(&cfg);
    cfg.rpcserver_port = 0;
    CHECK_STATUS(mprpc_server_new(&srv, &cfg), MPRPC_OK);
    if (!srv) return;
    CHECK_STATUS(mprpc_server_add_service(srv, &unprepared_service), MPRPC_OK);
    CHECK_STATUS(mprpc_server_add_service(srv, &test_service), MPRPC_OK);
    CHECK_STATUS(mprpc_server_start(srv), MPRPC_OK);
    cfg.rpcserver_port = mprpc_server_port(srv);
    CHECK_STATUS(mprpc_channel_new(&ch, &cfg), MPRPC_OK);
    /* the bytes are on the wire and nobody decodes them: a clear failure, the handler never runs */
    CHECK_STATUS(call_big(ch, "Unprepared", &data, 7, &rs, &ctl), MPRPC_ERR_DECODE);
    CHECK_CONTAINS(ctl.error_text, "Unprepared.Big: request field 1 (a callback field) arrived but has no decoder");
    CHECK_CONTAINS(ctl.error_text, "prepare hook (MPRPC_METHOD_PREPARED");
    CHECK(__atomic_load_n(&unprepared_runs, __ATOMIC_RELAXED) == 0);
    /* the field absent: the request decodes, and the handler sees the callback as it was left (unset) */
    CHECK_STATUS(call_big(ch, "Unprepared", NULL, 7, &rs, &ctl), MPRPC_OK);
    CHECK(rs.sum == 7);
    CHECK(__atomic_load_n(&unprepared_runs, __ATOMIC_RELAXED) == 1);
    /* with the prepare hook setting a decoder the same bytes arrive (the sum of the request bytes) */
    {
        uint32_t sum = 0;
        size_t i;
        for (i = 0; i < data.size; i++) sum += bytes[i];
        CHECK_STATUS(call_big(ch, "TestService", &data, 0, &rs, &ctl), MPRPC_OK);
        CHECK(rs.sum == sum);
    }
    teardown(srv, ch);
}

/* The functions on a call take NULL as sqlite's do: a harmless no-op, or an empty answer. */
static void call_functions_given_null_do_nothing(void)
{
    mprpc_call_fail(NULL, "nobody hears this %d", 1);
    mprpc_call_defer(NULL);
    mprpc_call_done(NULL);
    CHECK(strcmp(mprpc_call_service(NULL), "") == 0);
    CHECK(strcmp(mprpc_call_method(NULL), "") == 0);
    CHECK(strcmp(mprpc_call_peer_identity(NULL), "") == 0);
    CHECK(mprpc_call_time_left_ms(NULL) == -1);
    CHECK(mprpc_call_alloc(NULL, 8) == NULL);
    CHECK(mprpc_call_arena_used(NULL) == 0);
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

/* TestService.Big with size bytes of data each way (the provider answers
 * size bytes of 0xab); *sum: the provider's sum of what it received. */
static mprpc_status big_call(mprpc_channel *ch, const uint8_t *data, uint8_t *back, size_t size, uint32_t *sum,
                             size_t *got)
{
    mprpc_controller ctl;
    testsvc_BigRequest rq = testsvc_BigRequest_init_zero;
    testsvc_BigResponse rs = testsvc_BigResponse_init_zero;
    mprpc_bytes payload;
    mprpc_bytes_sink sink;
    mprpc_status st;
    mprpc_controller_init(&ctl);
    payload.data = data;
    payload.size = size;
    rq.data.funcs.encode = mprpc_bytes_encode;
    rq.data.arg = &payload;
    rq.fill = 0xab;
    rq.size = (uint32_t)size;
    sink.data = back;
    sink.capacity = size;
    sink.size = 0;
    rs.data.funcs.decode = copy_big;
    rs.data.arg = &sink;
    st = MPRPC_CALL(ch, "TestService", "Big", testsvc_BigRequest, &rq, testsvc_BigResponse, &rs, &ctl);
    *sum = rs.sum;
    *got = sink.size;
    return st;
}

static void one_mebibyte_messages_travel_both_ways(void)
{
    enum { SIZE = 1 << 20 };
    mprpc_config cfg;
    mprpc_server *srv;
    mprpc_channel *ch;
    uint8_t *data = (uint8_t *)malloc(SIZE), *back = (uint8_t *)malloc(SIZE);
    uint32_t sum = 0, got_sum = 0;
    size_t i, got = 0;
    for (i = 0; i < SIZE; i++) { data[i] = (uint8_t)(i * 7 + 3); sum += data[i]; }
    test_config(&cfg);
    srv = start_provider(&cfg, 0);
    CHECK(srv != NULL);
    if (!srv) { free(data); free(back); return; }
    mprpc_channel_new(&ch, &cfg);
    CHECK_STATUS(big_call(ch, data, back, SIZE, &got_sum, &got), MPRPC_OK);
    CHECK(got_sum == sum);
    CHECK(got == SIZE);
    CHECK(back[0] == 0xab && back[SIZE - 1] == 0xab);
    /* over max_message_size: refused by the caller before sending */
    {
        mprpc_config small = cfg;
        mprpc_channel *ch2;
        small.max_message_size = 1000;
        mprpc_channel_new(&ch2, &small);
        CHECK_STATUS(big_call(ch2, data, back, SIZE, &got_sum, &got), MPRPC_ERR_TOO_LARGE);
        mprpc_channel_free(ch2);
    }
    teardown(srv, ch);
    free(data);
    free(back);
}

static mprpc_server_stats stats_of(mprpc_server *srv);

/* What a burst took is given back though the connection stays open: its
 * buffers above 64 KiB go at the loop's next timer tick (a second by
 * default), not as each burst drains, which cost page faults and TLB
 * shootdowns per burst. */
static void a_burst_s_large_buffers_are_given_back_at_the_next_tick(void)
{
    enum { SIZE = 1 << 20 };
    mprpc_config cfg;
    mprpc_server *srv;
    mprpc_channel *ch;
    uint8_t *data = (uint8_t *)calloc(1, SIZE), *back = (uint8_t *)malloc(SIZE);
    uint32_t sum;
    size_t got;
    uint64_t held = 0;
    int i;
    test_config(&cfg);
    cfg.io_threads = 1;
    srv = start_provider(&cfg, 0);
    CHECK(srv != NULL);
    if (!srv) { free(data); free(back); return; }
    mprpc_channel_new(&ch, &cfg);
    CHECK_STATUS(big_call(ch, data, back, SIZE, &sum, &got), MPRPC_OK);
    for (i = 0; i < 300 * slow_factor() && (held = stats_of(srv).buffer_bytes) > 2 * 64 * 1024; i++) sleep_ms(10);
    CHECK(held <= 2 * 64 * 1024);
    if (held > 2 * 64 * 1024) fprintf(stderr, "  %llu buffer bytes still held %d s after the burst\n",
                                      (unsigned long long)held, 3 * slow_factor());
    CHECK(stats_of(srv).connections_open == 1);
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

/* ---- a probe service: handlers whose side effects the tests count ---- */

static int probe_runs;            /* atomic: Slow and Count handlers that ran */
static int slow_running;          /* atomic: 1 while a Slow handler sleeps */
static mprpc_call *parked[512];   /* Park: deferred calls the test finishes */
static int nparked;               /* atomic: parked[0, nparked) are set */
static int nreserved;             /* atomic: slots of parked handed out */
static mprpc_server *probe_srv;   /* FreeSelf frees this from its handler */

/* TimeLeft: seq = mprpc_call_time_left_ms + 1 (0: the caller sent no deadline). */
static void probe_time_left(mprpc_call *call, const void *request, void *response, void *user)
{
    (void)request; (void)user;
    ((testsvc_EchoResponse *)response)->seq = (uint64_t)((int64_t)mprpc_call_time_left_ms(call) + 1);
}

static void probe_slow(mprpc_call *call, const void *request, void *response, void *user)
{
    (void)call; (void)response; (void)user;
    __atomic_store_n(&slow_running, 1, __ATOMIC_SEQ_CST);
    sleep_ms((int)((const testsvc_EchoRequest *)request)->delay_ms);
    __atomic_add_fetch(&probe_runs, 1, __ATOMIC_SEQ_CST);
    __atomic_store_n(&slow_running, 0, __ATOMIC_SEQ_CST);
}

static void probe_count(mprpc_call *call, const void *request, void *response, void *user)
{
    (void)call; (void)request; (void)user;
    ((testsvc_EchoResponse *)response)->seq = (uint64_t)__atomic_add_fetch(&probe_runs, 1, __ATOMIC_SEQ_CST);
}

static void probe_park(mprpc_call *call, const void *request, void *response, void *user)
{
    int i = __atomic_fetch_add(&nreserved, 1, __ATOMIC_SEQ_CST);
    (void)user;
    ((testsvc_EchoResponse *)response)->seq = ((const testsvc_EchoRequest *)request)->seq;
    mprpc_call_defer(call);
    parked[i] = call;
    __atomic_add_fetch(&nparked, 1, __ATOMIC_SEQ_CST);
}

static void probe_done_early(mprpc_call *call, const void *request, void *response, void *user)
{
    (void)request; (void)response; (void)user;
    mprpc_call_done(call); /* never deferred: must be refused */
}

static void probe_free_self(mprpc_call *call, const void *request, void *response, void *user)
{
    (void)call; (void)request; (void)response; (void)user;
    mprpc_server_free(probe_srv);
}


/* The provider's own descriptor of the connection that raw socket fd reached (found by its addresses). */
static int provider_side_of(int fd)
{
    struct sockaddr_in mine, theirs, peer;
    socklen_t n = sizeof mine;
    int i;
    if (getsockname(fd, (struct sockaddr *)&mine, &n) != 0) return -1;
    for (i = 3; i < 1024; i++) {
        n = sizeof theirs;
        if (i == fd || getpeername(i, (struct sockaddr *)&theirs, &n) != 0 || n != sizeof theirs) continue;
        n = sizeof peer;
        if (theirs.sin_port == mine.sin_port && getsockname(i, (struct sockaddr *)&peer, &n) == 0 &&
            peer.sin_port != mine.sin_port)
            return i;
    }
    return -1;
}

/* Hold: a copy of the provider's own descriptor of the connection from raw socket hold_client, made on the
 * loop thread that owns it, as a forked child would hold it (kept in hold_copy). */
static int hold_client = -1, hold_copy = -1;
static void probe_hold(mprpc_call *call, const void *request, void *response, void *user)
{
    int theirs = provider_side_of(__atomic_load_n(&hold_client, __ATOMIC_SEQ_CST));
    (void)call; (void)request; (void)response; (void)user;
    __atomic_store_n(&hold_copy, theirs >= 0 ? dup(theirs) : -1, __ATOMIC_SEQ_CST);
}

static const mprpc_method probe_methods[] = {
    MPRPC_METHOD("TimeLeft", testsvc_EchoRequest, testsvc_EchoResponse, probe_time_left),
    MPRPC_METHOD("Slow", testsvc_EchoRequest, testsvc_EchoResponse, probe_slow),
    MPRPC_METHOD("Count", testsvc_EchoRequest, testsvc_EchoResponse, probe_count),
    MPRPC_METHOD("Park", testsvc_EchoRequest, testsvc_EchoResponse, probe_park),
    MPRPC_METHOD("DoneEarly", testsvc_EchoRequest, testsvc_EchoResponse, probe_done_early),
    MPRPC_METHOD("FreeSelf", testsvc_EchoRequest, testsvc_EchoResponse, probe_free_self),
    MPRPC_METHOD("Hold", testsvc_EchoRequest, testsvc_EchoResponse, probe_hold),
};
static const mprpc_service probe_service = MPRPC_SERVICE("Probe", probe_methods, NULL);

/* A started provider with TestService and Probe on a free port (cfg already set up). */
static mprpc_server *probe_up(mprpc_config *cfg)
{
    mprpc_server *srv = NULL;
    cfg->rpcserver_port = 0;
    __atomic_store_n(&probe_runs, 0, __ATOMIC_SEQ_CST);
    __atomic_store_n(&nparked, 0, __ATOMIC_SEQ_CST);
    __atomic_store_n(&nreserved, 0, __ATOMIC_SEQ_CST);
    CHECK_STATUS(mprpc_server_new(&srv, cfg), MPRPC_OK);
    if (!srv) return NULL;
    CHECK_STATUS(mprpc_server_add_service(srv, &test_service), MPRPC_OK);
    CHECK_STATUS(mprpc_server_add_service(srv, &probe_service), MPRPC_OK);
    if (mprpc_server_start(srv) != MPRPC_OK) {
        fprintf(stderr, "probe_up: %s\n", mprpc_server_error(srv));
        mprpc_server_free(srv);
        return NULL;
    }
    cfg->rpcserver_port = mprpc_server_port(srv);
    return srv;
}

/* Appends a v1 request with the given deadline (0: none). */
static void put_request(mprpc_buf *out, const char *service, const char *method, uint64_t call_id,
                        uint32_t timeout_ms, uint32_t delay_ms, uint64_t seq)
{
    testsvc_EchoRequest rq = testsvc_EchoRequest_init_zero;
    mprpc_request_meta m;
    memset(&m, 0, sizeof m);
    m.service = service;
    m.method = method;
    m.call_id = call_id;
    m.timeout_ms = timeout_ms;
    m.version = MPRPC_PROTOCOL_VERSION;
    rq.delay_ms = delay_ms;
    rq.seq = seq;
    CHECK_STATUS(mprpc_wire_encode_request_meta(out, 1u << 20, &m, testsvc_EchoRequest_fields, &rq), MPRPC_OK);
}

/* One answer: its call_id, status and (for OK) the response's seq. */
typedef struct answer { uint64_t call_id; int status; uint64_t seq; char text[257]; } answer;

static int read_answer(int fd, mprpc_buf *in, answer *a, int timeout_ms)
{
    mprpc_response_frame f;
    testsvc_EchoResponse rs = testsvc_EchoResponse_init_zero;
    pb_istream_t is;
    if (raw_read_response(fd, in, &f, timeout_ms) != MPRPC_OK) return 0;
    a->call_id = f.header.call_id;
    a->status = f.header.status;
    memcpy(a->text, f.header.error_text.bytes, f.header.error_text.size);
    a->text[f.header.error_text.size] = '\0';
    is = pb_istream_from_buffer(f.body, f.header.body_size);
    a->seq = pb_decode(&is, testsvc_EchoResponse_fields, &rs) ? rs.seq : 0;
    mprpc_buf_consume(in, f.frame_size);
    return 1;
}

/* 1 if the peer ended the connection with a FIN (EOF), 0 on a reset or timeout. */
static int closed_without_reset(int fd, int timeout_ms)
{
    uint8_t junk[4096];
    for (;;) {
        struct pollfd pf;
        ssize_t k;
        pf.fd = fd;
        pf.events = POLLIN;
        if (poll(&pf, 1, timeout_ms) <= 0) return 0;
        k = recv(fd, junk, sizeof junk, 0);
        if (k == 0) return 1;
        if (k < 0) return 0;
    }
}

static mprpc_server_stats stats_of(mprpc_server *srv)
{
    mprpc_server_stats st;
    mprpc_server_get_stats(srv, &st);
    return st;
}

/* ---- deadlines (RpcHeader.timeout_ms) ---- */

static void a_handler_sees_the_time_left_before_the_callers_deadline(void)
{
    mprpc_config cfg;
    mprpc_server *srv;
    mprpc_buf out, in;
    answer a, b;
    int fd;
    test_config(&cfg);
    if (!(srv = probe_up(&cfg))) return;
    mprpc_buf_init(&out);
    mprpc_buf_init(&in);
    put_request(&out, "Probe", "TimeLeft", 1, 5000, 0, 0);
    put_request(&out, "Probe", "TimeLeft", 2, 0, 0, 0);
    fd = raw_connect(cfg.rpcserver_port);
    CHECK(raw_send_all(fd, out.data, out.len));
    CHECK(read_answer(fd, &in, &a, 5000) && read_answer(fd, &in, &b, 5000));
    CHECK(a.call_id == 1 && a.status == MPRPC_OK);
    CHECK(a.seq > 1 && a.seq <= 5001); /* 0 < time left <= timeout_ms */
    CHECK(b.call_id == 2 && b.status == MPRPC_OK);
    CHECK(b.seq == 0); /* no deadline sent: -1 */
    close(fd);
    mprpc_buf_free(&out);
    mprpc_buf_free(&in);
    mprpc_server_free(srv);
}

/* One loop: a request with timeout_ms 100 waits behind a 400 ms handler. Its
 * handler never runs (the counter proves it) and the caller is told why. */
static void a_request_that_expires_behind_a_slow_handler_is_not_run(void)
{
    mprpc_config cfg;
    mprpc_server *srv;
    mprpc_buf out, in;
    answer a, b;
    int fd;
    test_config(&cfg);
    cfg.io_threads = 1;
    if (!(srv = probe_up(&cfg))) return;
    mprpc_buf_init(&out);
    mprpc_buf_init(&in);
    put_request(&out, "Probe", "Slow", 1, 0, 400, 0);
    put_request(&out, "Probe", "Count", 2, 100, 0, 0);
    fd = raw_connect(cfg.rpcserver_port);
    CHECK(raw_send_all(fd, out.data, out.len)); /* both in one write: queued on the same loop */
    CHECK(read_answer(fd, &in, &a, 5000) && read_answer(fd, &in, &b, 5000));
    CHECK(a.call_id == 1 && a.status == MPRPC_OK);
    CHECK(b.call_id == 2);
    CHECK_STATUS(b.status, MPRPC_ERR_TIMEOUT);
    CHECK_CONTAINS(b.text, "deadline passed before the handler ran (timeout_ms 100, waited");
    CHECK(__atomic_load_n(&probe_runs, __ATOMIC_SEQ_CST) == 1); /* only Slow ran */
    CHECK(stats_of(srv).expired == 1);
    close(fd);
    mprpc_buf_free(&out);
    mprpc_buf_free(&in);
    mprpc_server_free(srv);
}

/* A deferred call finished after the caller's deadline: nobody waits for the
 * answer, so it is not sent; it is counted. */
static void a_deferred_answer_after_the_deadline_is_dropped_and_counted(void)
{
    mprpc_config cfg;
    mprpc_server *srv;
    mprpc_buf out, in;
    answer a;
    int fd;
    test_config(&cfg);
    if (!(srv = probe_up(&cfg))) return;
    mprpc_buf_init(&out);
    mprpc_buf_init(&in);
    put_request(&out, "Probe", "Park", 1, 100, 0, 0);
    fd = raw_connect(cfg.rpcserver_port);
    CHECK(raw_send_all(fd, out.data, out.len));
    WAIT_UNTIL(__atomic_load_n(&nparked, __ATOMIC_SEQ_CST) >= 1, 10000);
    CHECK(__atomic_load_n(&nparked, __ATOMIC_SEQ_CST) >= 1);
    sleep_ms(200); /* past the deadline */
    CHECK(mprpc_call_time_left_ms(parked[0]) == 0);
    mprpc_call_done(parked[0]);
    out.pos = out.len = 0;
    put_request(&out, "TestService", "Echo", 2, 0, 0, 0);
    CHECK(raw_send_all(fd, out.data, out.len));
    CHECK(read_answer(fd, &in, &a, 5000));
    CHECK(a.call_id == 2); /* the late answer to call 1 never came */
    CHECK(stats_of(srv).deadline_dropped == 1);
    close(fd);
    mprpc_buf_free(&out);
    mprpc_buf_free(&in);
    mprpc_server_free(srv);
}

/* ---- graceful stop ---- */

typedef struct run_ctx { mprpc_server *srv; int returned; mprpc_status st; } run_ctx;
static void *run_thread(void *arg)
{
    run_ctx *r = (run_ctx *)arg;
    r->st = mprpc_server_run(r->srv);
    __atomic_store_n(&r->returned, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

/* A request that arrives once the stop has begun is not run: SHUTDOWN says
 * so (safe to send elsewhere). The call in flight is answered, then the
 * connection ends with a FIN, not a reset. */
static void a_request_sent_after_the_stop_began_gets_shutdown(void)
{
    mprpc_config cfg;
    mprpc_server *srv;
    mprpc_buf out, in;
    answer a, b;
    int fd;
    test_config(&cfg);
    if (!(srv = probe_up(&cfg))) return;
    mprpc_buf_init(&out);
    mprpc_buf_init(&in);
    put_request(&out, "Probe", "Park", 1, 0, 0, 11);
    fd = raw_connect(cfg.rpcserver_port);
    CHECK(raw_send_all(fd, out.data, out.len));
    WAIT_UNTIL(__atomic_load_n(&nparked, __ATOMIC_SEQ_CST) >= 1, 10000);
    CHECK(__atomic_load_n(&nparked, __ATOMIC_SEQ_CST) >= 1);
    mprpc_server_stop(srv); /* the parked call keeps the drain going */
    sleep_ms(100);
    out.pos = out.len = 0;
    put_request(&out, "Probe", "Count", 2, 0, 0, 0);
    CHECK(raw_send_all(fd, out.data, out.len));
    CHECK(read_answer(fd, &in, &b, 5000));
    CHECK(b.call_id == 2);
    CHECK_STATUS(b.status, MPRPC_ERR_SHUTDOWN);
    CHECK_CONTAINS(b.text, "provider is stopping: not executed");
    CHECK(__atomic_load_n(&probe_runs, __ATOMIC_SEQ_CST) == 0);
    mprpc_call_done(parked[0]);
    CHECK(read_answer(fd, &in, &a, 5000));
    CHECK(a.call_id == 1 && a.status == MPRPC_OK && a.seq == 11);
    shutdown(fd, SHUT_WR); /* done sending: the provider closes its side cleanly */
    CHECK(closed_without_reset(fd, 5000));
    CHECK(stats_of(srv).refused == 1);
    close(fd);
    mprpc_buf_free(&out);
    mprpc_buf_free(&in);
    mprpc_server_free(srv);
}

/* Eight raw clients pipeline Echo calls (8 in flight each) while the provider
 * is stopped. Each client stops sending at its first SHUTDOWN answer, as a
 * channel does. Every request sent gets exactly one answer, OK or SHUTDOWN,
 * and every connection ends with a FIN. The clients send until the stop
 * comes (PIPE_MAX only bounds a stop that never does), however fast the
 * machine. */
#define PIPE_MAX (1 << 20)
typedef struct pipe_client {
    int port, sent, answered, shutdowns, dup_or_bad, clean_close;
    uint8_t seen[PIPE_MAX];
} pipe_client;

static void *pipe_client_main(void *arg)
{
    pipe_client *pc = (pipe_client *)arg;
    mprpc_buf out, in;
    int fd = raw_connect(pc->port), stop_sending = 0;
    mprpc_buf_init(&out);
    mprpc_buf_init(&in);
    while (fd >= 0 && pc->answered < PIPE_MAX) {
        answer a;
        while (!stop_sending && pc->sent - pc->answered < 8 && pc->sent < PIPE_MAX) {
            out.pos = out.len = 0;
            put_request(&out, "TestService", "Echo", (uint64_t)pc->sent + 1, 0, 0, (uint64_t)pc->sent + 1);
            if (!raw_send_all(fd, out.data, out.len)) break;
            pc->sent++;
        }
        if (pc->answered == pc->sent) break;
        if (!read_answer(fd, &in, &a, 10000)) break;
        __atomic_add_fetch(&pc->answered, 1, __ATOMIC_RELAXED); /* the test thread watches it */
        if (a.call_id == 0 || a.call_id > (uint64_t)pc->sent || pc->seen[a.call_id - 1]++ ||
            (a.status != MPRPC_OK && a.status != MPRPC_ERR_SHUTDOWN) ||
            (a.status == MPRPC_OK && a.seq != a.call_id))
            pc->dup_or_bad++;
        if (a.status == MPRPC_ERR_SHUTDOWN) {
            pc->shutdowns++;
            stop_sending = 1;
        }
    }
    if (fd >= 0) {
        shutdown(fd, SHUT_WR);
        pc->clean_close = closed_without_reset(fd, 10000);
        close(fd);
    }
    mprpc_buf_free(&out);
    mprpc_buf_free(&in);
    return NULL;
}

static void a_provider_stopped_under_pipelining_clients_answers_every_request_once(void)
{
    mprpc_config cfg;
    mprpc_server *srv;
    static pipe_client pc[8];
    pthread_t t[8];
    run_ctx rc;
    pthread_t rt;
    int i, waited, shutdowns = 0;
    test_config(&cfg);
    if (!(srv = probe_up(&cfg))) return;
    rc.srv = srv;
    rc.returned = 0;
    pthread_create(&rt, NULL, run_thread, &rc);
    for (i = 0; i < 8; i++) {
        memset(&pc[i], 0, sizeof pc[i]);
        pc[i].port = cfg.rpcserver_port;
        pthread_create(&t[i], NULL, pipe_client_main, &pc[i]);
    }
    for (i = 0, waited = 0; i < 8 && waited < 5000; i++) /* every client in full flow before the stop */
        while (__atomic_load_n(&pc[i].answered, __ATOMIC_RELAXED) < 100 && waited < 5000) {
            sleep_ms(5);
            waited += 5;
        }
    mprpc_server_stop(srv);
    for (i = 0; i < 8; i++) {
        pthread_join(t[i], NULL);
        CHECK(pc[i].sent > 0);
        CHECK(pc[i].answered == pc[i].sent);
        CHECK(pc[i].dup_or_bad == 0);
        CHECK(pc[i].clean_close);
        shutdowns += pc[i].shutdowns;
        if (pc[i].answered != pc[i].sent || !pc[i].clean_close)
            fprintf(stderr, "  client %d: sent %d, answered %d, clean close %d\n", i, pc[i].sent,
                    pc[i].answered, pc[i].clean_close);
    }
    pthread_join(rt, NULL);
    CHECK_STATUS(rc.st, MPRPC_OK);
    CHECK(shutdowns > 0); /* the clients were still sending when the stop came */
    mprpc_server_free(srv);
}

/* ---- lifecycle from any thread (issue 11 items 1-3, 6, 9) ---- */

/* stop after start (no run) drains by itself: new connections are refused
 * soon, with nobody calling run or free. */
static void stop_after_start_drains_by_itself(void)
{
    mprpc_config cfg;
    mprpc_server *srv;
    int waited, fd = 0;
    test_config(&cfg);
    if (!(srv = probe_up(&cfg))) return;
    mprpc_server_stop(srv);
    for (waited = 0; waited < 5000; waited += 10) {
        fd = raw_connect(cfg.rpcserver_port);
        if (fd < 0) break;
        close(fd);
        sleep_ms(10);
    }
    CHECK(fd < 0); /* the listener is gone */
    mprpc_server_stop(srv); /* twice: harmless */
    CHECK_STATUS(mprpc_server_run(srv), MPRPC_OK); /* already stopped: returns at once */
    CHECK_STATUS(mprpc_server_start(srv), MPRPC_ERR_INVALID_ARGUMENT);
    mprpc_server_free(srv);
    /* stop before start: start refuses, with the reason */
    CHECK_STATUS(mprpc_server_new(&srv, &cfg), MPRPC_OK);
    mprpc_server_stop(srv);
    CHECK_STATUS(mprpc_server_start(srv), MPRPC_ERR_SHUTDOWN);
    CHECK_CONTAINS(mprpc_server_error(srv), "before start");
    mprpc_server_free(srv);
}

/* free from another thread while run waits: run returns, then free frees
 * (ASan: no use after free), twenty times. */
static void free_from_another_thread_while_run_waits_is_safe(void)
{
    int round, i;
    for (round = 0; round < 20; round++) {
        mprpc_config cfg;
        mprpc_server *srv;
        run_ctx rc;
        pthread_t t;
        test_config(&cfg);
        if (!(srv = probe_up(&cfg))) return;
        rc.srv = srv;
        rc.returned = 0;
        pthread_create(&t, NULL, run_thread, &rc);
        /* run has begun to wait (free before run would be the caller's bug) */
        for (i = 0; i < 10000 * slow_factor(); i++) {
            int in_run;
            pthread_mutex_lock(&srv->life_mu);
            in_run = srv->runners > 0;
            pthread_mutex_unlock(&srv->life_mu);
            if (in_run) break;
            sleep_ms(1);
        }
        sleep_ms(round % 3 * 5);
        mprpc_server_free(srv); /* waits for the drain and for run to return */
        pthread_join(t, NULL);
        CHECK_STATUS(rc.st, MPRPC_OK);
    }
}

/* free from inside a handler would wait for the very thread it runs on: it is
 * refused (the server is told to stop instead), and the caller still gets
 * its answer. */
static void free_from_a_handler_is_refused_not_crashed(void)
{
    mprpc_config cfg;
    mprpc_buf out, in;
    answer a;
    int fd;
    test_config(&cfg);
    if (!(probe_srv = probe_up(&cfg))) return;
    mprpc_buf_init(&out);
    mprpc_buf_init(&in);
    put_request(&out, "Probe", "FreeSelf", 1, 0, 0, 0);
    fd = raw_connect(cfg.rpcserver_port);
    CHECK(raw_send_all(fd, out.data, out.len));
    CHECK(read_answer(fd, &in, &a, 5000));
    CHECK(a.call_id == 1 && a.status == MPRPC_OK);
    CHECK_CONTAINS(mprpc_server_error(probe_srv), "refused");
    CHECK_STATUS(mprpc_server_run(probe_srv), MPRPC_OK); /* it was told to stop: returns */
    close(fd);
    mprpc_buf_free(&out);
    mprpc_buf_free(&in);
    mprpc_server_free(probe_srv);
    probe_srv = NULL;
}

/* A deferred call never finished does not hold the stop past
 * drain_timeout_ms; finishing it afterwards, even after free, is harmless. */
static void a_deferred_call_never_finished_is_abandoned_at_the_drain_timeout(void)
{
    mprpc_config cfg;
    mprpc_server *srv;
    mprpc_buf out;
    run_ctx rc;
    pthread_t t;
    int fd;
    test_config(&cfg);
    cfg.drain_timeout_ms = 300;
    if (!(srv = probe_up(&cfg))) return;
    mprpc_buf_init(&out);
    put_request(&out, "Probe", "Park", 1, 0, 0, 0);
    fd = raw_connect(cfg.rpcserver_port);
    CHECK(raw_send_all(fd, out.data, out.len));
    WAIT_UNTIL(__atomic_load_n(&nparked, __ATOMIC_SEQ_CST) >= 1, 10000);
    CHECK(__atomic_load_n(&nparked, __ATOMIC_SEQ_CST) >= 1);
    rc.srv = srv;
    rc.returned = 0;
    pthread_create(&t, NULL, run_thread, &rc);
    mprpc_server_stop(srv);
    pthread_join(t, NULL); /* returns: the call was abandoned */
    CHECK(stats_of(srv).abandoned == 1);
    CHECK(stats_of(srv).deferred_pending == 0);
    mprpc_server_free(srv);
    mprpc_call_done(parked[0]); /* frees the abandoned call; ASan/valgrind: no error, no leak */
    close(fd);
    mprpc_buf_free(&out);
}

/* mprpc_call_done on a call that was never deferred is refused: the call is
 * answered once, by its handler's return, and the counts stay right. */
static void call_done_on_a_call_never_deferred_is_refused(void)
{
    mprpc_config cfg;
    mprpc_server *srv;
    mprpc_buf out, in;
    answer a;
    int fd, i, answers = 0;
    test_config(&cfg);
    cfg.io_threads = 1;
    if (!(srv = probe_up(&cfg))) return;
    mprpc_buf_init(&out);
    mprpc_buf_init(&in);
    for (i = 0; i < 3; i++) put_request(&out, "Probe", "DoneEarly", (uint64_t)i + 1, 0, 0, 0);
    put_request(&out, "TestService", "Echo", 4, 0, 0, 4);
    fd = raw_connect(cfg.rpcserver_port);
    CHECK(raw_send_all(fd, out.data, out.len));
    while (read_answer(fd, &in, &a, 500)) {
        answers++;
        CHECK(a.status == MPRPC_OK && a.call_id == (uint64_t)answers);
    }
    CHECK(answers == 4);
    CHECK(stats_of(srv).deferred_pending == 0);
    close(fd);
    mprpc_buf_free(&out);
    mprpc_buf_free(&in);
    mprpc_server_free(srv);
}

/* After run returns the stats are still there to read. */
static void stats_are_readable_after_run_returns(void)
{
    mprpc_config cfg;
    mprpc_server *srv;
    mprpc_channel *ch;
    mprpc_controller ctl;
    testsvc_EchoResponse rs;
    stop_ctx sc;
    pthread_t t;
    if (!setup(&cfg, &srv, &ch, &ctl)) return;
    CHECK_STATUS(echo_call(ch, "count me", 1, &ctl, &rs), MPRPC_OK);
    mprpc_channel_free(ch);
    sc.srv = srv;
    sc.delay_ms = 50;
    pthread_create(&t, NULL, stop_later, &sc);
    CHECK_STATUS(mprpc_server_run(srv), MPRPC_OK);
    pthread_join(t, NULL);
    CHECK(stats_of(srv).calls == 1);
    CHECK(stats_of(srv).connections_accepted == 1);
    CHECK(stats_of(srv).connections_open == 0);
    mprpc_server_free(srv);
}

/* ---- memory and output (issue 11 items 4, 5, 7, 9) ---- */

/* 256 calls parked at once, then finished and their clients gone: the
 * provider keeps at most 64 idle call objects per loop, counted in the stats. */
static void the_deferred_call_pool_gives_memory_back(void)
{
    enum { CONNS = 4, EACH = 64 };
    mprpc_config cfg;
    mprpc_server *srv;
    mprpc_buf out, in;
    mprpc_server_stats st;
    int fds[CONNS], i, j, got = 0;
    int64_t base, peak, after;
    size_t call_size;
    test_config(&cfg);
    cfg.io_threads = 1;
    if (!(srv = probe_up(&cfg))) return;
    call_size = srv->call_size;
    mprpc_buf_init(&out);
    mprpc_buf_init(&in);
    base = __atomic_load_n(&lib_live_bytes, __ATOMIC_SEQ_CST);
    for (i = 0; i < CONNS; i++) {
        out.pos = out.len = 0;
        for (j = 0; j < EACH; j++) put_request(&out, "Probe", "Park", (uint64_t)j + 1, 0, 0, 0);
        fds[i] = raw_connect(cfg.rpcserver_port);
        CHECK(raw_send_all(fds[i], out.data, out.len));
    }
    for (i = 0; i < 500 && __atomic_load_n(&nparked, __ATOMIC_SEQ_CST) < CONNS * EACH; i++) sleep_ms(10);
    CHECK(__atomic_load_n(&nparked, __ATOMIC_SEQ_CST) == CONNS * EACH);
    peak = __atomic_load_n(&lib_live_bytes, __ATOMIC_SEQ_CST);
    CHECK(stats_of(srv).deferred_pending == CONNS * EACH);
    for (i = 0; i < CONNS * EACH; i++) mprpc_call_done(parked[i]);
    for (i = 0; i < CONNS; i++) {
        answer a;
        for (j = 0; j < EACH; j++) got += read_answer(fds[i], &in, &a, 5000);
        close(fds[i]);
    }
    CHECK(got == CONNS * EACH);
    for (i = 0; i < 500 && stats_of(srv).connections_open > 0; i++) sleep_ms(10);
    sleep_ms(50);
    st = stats_of(srv);
    after = __atomic_load_n(&lib_live_bytes, __ATOMIC_SEQ_CST);
    CHECK(st.deferred_pending == 0);
    CHECK(st.call_pool_bytes == 64 * (uint64_t)call_size);
    CHECK(peak - base > (int64_t)(CONNS * EACH * call_size)); /* they were all held at once */
    CHECK(after - base <= (int64_t)(64 * call_size) + 4096);  /* and given back, but the pool */
    if (after - base > (int64_t)(64 * call_size) + 4096)
        fprintf(stderr, "  %lld bytes still held (call objects of %zu bytes)\n", (long long)(after - base), call_size);
    mprpc_buf_free(&out);
    mprpc_buf_free(&in);
    mprpc_server_free(srv);
}

/* Connection A sends call 111 and the start of a large frame in one write;
 * keeping that partial frame needs memory that is refused. A still gets its
 * answer, then a clean end; B, served next on the same loop, gets its own
 * answer (222) and nothing of A's. */
static void a_reply_never_reaches_another_connection_when_memory_runs_out(void)
{
    mprpc_config cfg;
    mprpc_server *srv;
    mprpc_buf out, in;
    answer a;
    uint8_t filler[3000];
    int fa, fb;
    test_config(&cfg);
    cfg.io_threads = 1;
    if (!(srv = probe_up(&cfg))) return;
    mprpc_buf_init(&out);
    mprpc_buf_init(&in);
    fa = raw_connect(cfg.rpcserver_port);
    fb = raw_connect(cfg.rpcserver_port);
    put_request(&out, "TestService", "Echo", 110, 0, 0, 110); /* warm: a pooled call object */
    CHECK(raw_send_all(fa, out.data, out.len));
    CHECK(read_answer(fa, &in, &a, 5000) && a.call_id == 110);
    out.pos = out.len = 0;
    put_request(&out, "TestService", "Echo", 111, 0, 0, 111);
    memset(filler, 0, sizeof filler);
    filler[0] = 5; /* header_len 5, then a header announcing a 1 MiB body that never comes */
    filler[4] = 0x18; filler[5] = 0x80; filler[6] = 0x80; filler[7] = 0x40;
    CHECK(mprpc_buf_append(&out, filler, sizeof filler, 1u << 20) == MPRPC_OK);
    __atomic_store_n(&fail_from, (size_t)2048, __ATOMIC_SEQ_CST);
    CHECK(raw_send_all(fa, out.data, out.len));
    CHECK(read_answer(fa, &in, &a, 5000));
    CHECK(a.call_id == 111 && a.status == MPRPC_OK);
    if (a.call_id != 111 || a.status != MPRPC_OK) fprintf(stderr, "  got %llu %d %s\n", (unsigned long long)a.call_id, a.status, a.text);
    __atomic_store_n(&fail_from, (size_t)0, __ATOMIC_SEQ_CST);
    CHECK(raw_wait_closed(fa, 5000)); /* the byte stream had a hole: A ends */
    in.pos = in.len = 0;
    out.pos = out.len = 0;
    put_request(&out, "TestService", "Echo", 222, 0, 0, 222);
    CHECK(raw_send_all(fb, out.data, out.len));
    CHECK(read_answer(fb, &in, &a, 5000));
    CHECK(a.call_id == 222 && a.seq == 222);
    close(fa);
    close(fb);
    mprpc_buf_free(&out);
    mprpc_buf_free(&in);
    mprpc_server_free(srv);
}

/* A handler blocking its loop does not stop accepting: while it runs, a new
 * connection (on the other loop) is answered. */
static void a_handler_blocking_its_loop_does_not_stop_accepting(void)
{
    mprpc_config cfg;
    mprpc_server *srv;
    mprpc_buf out, in;
    answer a;
    int slow, fresh, answered_while_blocked;
    test_config(&cfg);
    cfg.io_threads = 2;
    if (!(srv = probe_up(&cfg))) return;
    mprpc_buf_init(&out);
    mprpc_buf_init(&in);
    put_request(&out, "Probe", "Slow", 1, 0, 2000, 0);
    slow = raw_connect(cfg.rpcserver_port); /* the first connection: loop 0 */
    CHECK(raw_send_all(slow, out.data, out.len));
    WAIT_UNTIL(__atomic_load_n(&slow_running, __ATOMIC_SEQ_CST), 10000);
    CHECK(__atomic_load_n(&slow_running, __ATOMIC_SEQ_CST));
    out.pos = out.len = 0;
    put_request(&out, "TestService", "Echo", 2, 0, 0, 2);
    fresh = raw_connect(cfg.rpcserver_port); /* the second: loop 1 */
    CHECK(raw_send_all(fresh, out.data, out.len));
    CHECK(read_answer(fresh, &in, &a, 5000) && a.call_id == 2);
    answered_while_blocked = __atomic_load_n(&slow_running, __ATOMIC_SEQ_CST);
    CHECK(answered_while_blocked);
    in.pos = in.len = 0;
    CHECK(read_answer(slow, &in, &a, 5000) && a.call_id == 1);
    close(slow);
    close(fresh);
    mprpc_buf_free(&out);
    mprpc_buf_free(&in);
    mprpc_server_free(srv);
}

/* A failed epoll_ctl is not ignored: a connection whose interest cannot be
 * changed is closed (its socket would otherwise stall forever). White box:
 * the connection's descriptor was never added to the loop's epoll set. */
static void a_failed_epoll_modify_closes_the_connection(void)
{
    mprpc_config cfg;
    mprpc_server *srv;
    mprpc__loop *l;
    mprpc__conn *c;
    int sv[2];
    test_config(&cfg);
    CHECK_STATUS(mprpc_server_new(&srv, &cfg), MPRPC_OK);
    CHECK_STATUS(mprpc__routes_build(srv), MPRPC_OK);
    l = (mprpc__loop *)calloc(1, sizeof *l);
    CHECK_STATUS(mprpc__loop_init(srv, l, 0), MPRPC_OK);
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) == 0);
    c = (mprpc__conn *)calloc(1, sizeof *c);
    c->fd = sv[0];
    c->loop = l;
    c->counted_open = 1;
    c->events = EPOLLIN; /* what the loop believes; epoll has never heard of it */
    mprpc__list_push(&l->conns, c);
    l->nconns = 1;
    srv->open_conns = 1;
    /* more output than the socket takes: the settle wants EPOLLOUT too, a modify, which fails */
    CHECK(mprpc_buf_reserve(&c->out, 1u << 20, 1u << 21) == MPRPC_OK);
    memset(c->out.data, 0, 1u << 20);
    c->out.len = 1u << 20;
    mprpc__conn_settle(c, mprpc__now_ms());
    CHECK(c->state == MPRPC__CONN_CLOSED);
    CHECK(l->nconns == 0);
    mprpc__conn_free_dead(l);
    mprpc__loop_uninit(l);
    free(l);
    close(sv[1]);
    mprpc_server_free(srv);
}

/* A process that forks (popen, system, a helper it spawns) lends every descriptor to the child until the
 * child's exec, or for good without one; here a dup() of the provider's descriptor stands for that copy.
 * epoll forgets a socket only when its last descriptor closes, so the provider must take the connection
 * out of its epoll set before closing it: otherwise the reset socket's events keep arriving for the freed
 * connection, which was then closed again and again, open_conns went below zero, and every later caller
 * was answered MPRPC_ERR_BUSY "at max_connections" (found under qemu-arm, in test_admin's popen calls). */
static void a_connection_whose_socket_another_descriptor_holds_is_closed_and_counted_once(void)
{
    mprpc_config cfg;
    mprpc_server *srv;
    mprpc_channel *ch;
    mprpc_controller ctl;
    mprpc_server_stats st;
    testsvc_EchoResponse rs;
    mprpc_buf out, in;
    answer a;
    struct linger reset = { 1, 0 };
    int fd, held, i;
    test_config(&cfg);
    if (!(srv = probe_up(&cfg))) return;
    CHECK_STATUS(mprpc_channel_new(&ch, &cfg), MPRPC_OK);
    mprpc_controller_init(&ctl);
    mprpc_buf_init(&out);
    mprpc_buf_init(&in);
    fd = raw_connect(cfg.rpcserver_port);
    __atomic_store_n(&hold_client, fd, __ATOMIC_SEQ_CST);
    __atomic_store_n(&hold_copy, -1, __ATOMIC_SEQ_CST);
    put_request(&out, "Probe", "Hold", 1, 0, 0, 0);
    CHECK(raw_send_all(fd, out.data, out.len));
    CHECK(read_answer(fd, &in, &a, 5000) && a.call_id == 1);
    held = __atomic_load_n(&hold_copy, __ATOMIC_SEQ_CST);
    CHECK(held >= 0);
    /* a reset: the provider's side fails (EPOLLHUP, reported whatever the interest) and is closed */
    CHECK(setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof reset) == 0);
    close(fd);
    for (i = 0; i < 500 * slow_factor(); i++) {
        mprpc_server_get_stats(srv, &st);
        if (st.connections_open == 0) break;
        sleep_ms(10);
    }
    sleep_ms(200); /* the loop goes round while the socket lives on in `held` */
    mprpc_server_get_stats(srv, &st);
    CHECK(st.connections_open == 0);
    CHECK_STATUS(echo_call(ch, "after", 1, &ctl, &rs), MPRPC_OK); /* not BUSY */
    mprpc_server_get_stats(srv, &st);
    CHECK(st.connections_open == 1); /* the channel's connection */
    mprpc_buf_free(&out);
    mprpc_buf_free(&in);
    teardown(srv, ch);
    if (held >= 0) close(held); /* after the loop threads are joined: no race on the descriptor */
}

int main(void)
{
    RUN(example_methods_answer_over_tcp);
    RUN(unknown_service_and_method_are_distinct_errors);
    RUN(application_failure_reaches_the_controller);
    RUN(undecodable_request_gets_a_decode_error);
    RUN(a_callback_field_sent_to_a_method_without_a_decoder_fails_naming_the_field);
    RUN(call_functions_given_null_do_nothing);
    RUN(pipelined_requests_are_all_answered);
    RUN(one_mebibyte_messages_travel_both_ways);
    RUN(a_burst_s_large_buffers_are_given_back_at_the_next_tick);
    RUN(oversized_frame_is_refused_while_others_are_served);
    RUN(garbage_connections_are_closed_while_others_are_served);
    RUN(seed_callers_get_the_bare_response_then_close);
    RUN(deferred_calls_finish_from_other_threads);
    RUN(graceful_stop_answers_calls_in_flight);
    RUN(a_restarted_provider_is_reached_by_a_live_channel);
    RUN(one_channel_serves_eight_threads);
    RUN(warm_calls_allocate_nothing);
    RUN(bad_setup_is_reported_not_crashed);
    RUN(a_handler_sees_the_time_left_before_the_callers_deadline);
    RUN(a_request_that_expires_behind_a_slow_handler_is_not_run);
    RUN(a_deferred_answer_after_the_deadline_is_dropped_and_counted);
    RUN(a_request_sent_after_the_stop_began_gets_shutdown);
    RUN(a_provider_stopped_under_pipelining_clients_answers_every_request_once);
    RUN(stop_after_start_drains_by_itself);
    RUN(free_from_another_thread_while_run_waits_is_safe);
    RUN(free_from_a_handler_is_refused_not_crashed);
    RUN(a_deferred_call_never_finished_is_abandoned_at_the_drain_timeout);
    RUN(call_done_on_a_call_never_deferred_is_refused);
    RUN(stats_are_readable_after_run_returns);
    RUN(the_deferred_call_pool_gives_memory_back);
    RUN(a_reply_never_reaches_another_connection_when_memory_runs_out);
    RUN(a_handler_blocking_its_loop_does_not_stop_accepting);
    RUN(a_failed_epoll_modify_closes_the_connection);
    RUN(a_connection_whose_socket_another_descriptor_holds_is_closed_and_counted_once);
    return test_summary("test_server");
}
