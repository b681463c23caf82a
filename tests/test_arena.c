/* The per-call arena (mprpc_call_alloc): bytes a handler, its prepare hook or
 * its nanopb callbacks take live until the reply is encoded and are freed on
 * every path: a normal reply, an application failure, a request that does not
 * decode, a reply too large to send, a deferred call finished from another
 * thread, and a deferred call abandoned at the drain and finished after the
 * server is gone. The allocation hooks record every arena block the library
 * hands out and see each one freed; ASan (make ... SAN=_asan) adds leak and
 * use-after-free checks. call_arena_max bounds a call; the stats count it. */
#define _GNU_SOURCE 1
#include <stdint.h>
#include <stdlib.h>

/* Arena blocks handed to handlers are recorded (block start = pointer minus the
 * block header); the free hook strikes them off. */
#define MAX_BLOCKS 256
static void *blocks[MAX_BLOCKS];
static int nblocks;                 /* guarded by block_mu */
static int blocks_live;             /* atomic */
#include <pthread.h>
static pthread_mutex_t block_mu = PTHREAD_MUTEX_INITIALIZER;

static void hook_free(void *p)
{
    int i;
    if (p) {
        pthread_mutex_lock(&block_mu);
        for (i = 0; i < nblocks; i++)
            if (blocks[i] == p) {
                blocks[i] = NULL;
                __atomic_sub_fetch(&blocks_live, 1, __ATOMIC_RELAXED);
            }
        pthread_mutex_unlock(&block_mu);
    }
    free(p);
}
#define MPRPC_MALLOC(n) malloc(n)
#define MPRPC_REALLOC(p, n) realloc((p), (n))
#define MPRPC_FREE(p) hook_free(p)

#define MPRPC_IMPLEMENTATION
#include "mprpc.h"
#include "test.h"
#include "support.h"

/* mprpc_call_alloc, recording the block it came from. */
static void *arena_take(mprpc_call *call, size_t n)
{
    uint8_t *p = (uint8_t *)mprpc_call_alloc(call, n);
    if (!p) return NULL;
    pthread_mutex_lock(&block_mu);
    if (nblocks < MAX_BLOCKS) {
        blocks[nblocks++] = p - sizeof(mprpc__arena_block);
        __atomic_add_fetch(&blocks_live, 1, __ATOMIC_RELAXED);
    }
    pthread_mutex_unlock(&block_mu);
    return p;
}

static int live_blocks(void)
{
    return __atomic_load_n(&blocks_live, __ATOMIC_RELAXED);
}

/* Build: the reply's bytes (seq of them, value fill from payload[0]) and the
 * mprpc_bytes describing them both live in the arena; encoded after return.
 * fail: allocate, then fail the call. delay_ms: defer, a thread allocates and
 * finishes. */
static mprpc_call *parked;   /* Build with delay_ms 60000: left for the test to finish */

static int build_reply(mprpc_call *call, const testsvc_EchoRequest *rq, testsvc_BigResponse *rs)
{
    mprpc_bytes *out = (mprpc_bytes *)arena_take(call, sizeof *out);
    uint8_t *data = (uint8_t *)arena_take(call, (size_t)rq->seq);
    if (!out || !data) {
        mprpc_call_fail(call, "arena refused %llu bytes (%zu in use)", (unsigned long long)rq->seq,
                        mprpc_call_arena_used(call));
        return 0;
    }
    memset(data, rq->payload.size ? rq->payload.bytes[0] : 0, (size_t)rq->seq);
    out->data = data;
    out->size = (size_t)rq->seq;
    rs->data.funcs.encode = mprpc_bytes_encode;
    rs->data.arg = out;
    rs->sum = (uint32_t)mprpc_call_arena_used(call);
    return 1;
}

typedef struct build_job {
    mprpc_call *call;
    testsvc_EchoRequest rq;
    testsvc_BigResponse *rs;
} build_job;

static void *build_worker(void *arg)
{
    build_job *job = (build_job *)arg;
    sleep_ms((int)job->rq.delay_ms);
    build_reply(job->call, &job->rq, job->rs);
    mprpc_call_done(job->call);
    free(job);
    return NULL;
}

static void build(mprpc_call *call, const void *request, void *response, void *user)
{
    const testsvc_EchoRequest *rq = (const testsvc_EchoRequest *)request;
    build_job *job;
    pthread_t t;
    (void)user;
    if (rq->delay_ms == 0) {
        if (build_reply(call, rq, (testsvc_BigResponse *)response) && rq->fail)
            mprpc_call_fail(call, "failed after taking %zu arena bytes", mprpc_call_arena_used(call));
        return;
    }
    mprpc_call_defer(call);
    if (rq->delay_ms >= 60000) {      /* parked: arena taken now, finished by the test */
        arena_take(call, 1000);
        __atomic_store_n(&parked, call, __ATOMIC_RELEASE);
        return;
    }
    job = (build_job *)malloc(sizeof *job);
    job->call = call;
    job->rq = *rq;
    job->rs = (testsvc_BigResponse *)response;
    pthread_create(&t, NULL, build_worker, job);
    pthread_detach(t);
}

/* Sink: the request's bytes are copied into the arena by the decode callback. */
static bool sink_decode(pb_istream_t *stream, const pb_field_t *field, void **arg)
{
    mprpc_bytes *dst = (mprpc_bytes *)*arg;
    mprpc_call *call = (mprpc_call *)dst->data; /* the prepare hook parked the call here */
    uint8_t *p = (uint8_t *)arena_take(call, stream->bytes_left);
    (void)field;
    if (!p) PB_RETURN_ERROR(stream, "request bytes over call_arena_max");
    dst->size = stream->bytes_left;
    dst->data = p;
    return pb_read(stream, p, dst->size);
}

static void sink_prepare(mprpc_call *call, void *request, void *response, void *user)
{
    testsvc_BigRequest *rq = (testsvc_BigRequest *)request;
    mprpc_bytes *dst = (mprpc_bytes *)arena_take(call, sizeof *dst);
    (void)response; (void)user;
    if (!dst) return;
    dst->data = (const uint8_t *)call;
    dst->size = 0;
    rq->data.funcs.decode = sink_decode;
    rq->data.arg = dst;
}

static void sink(mprpc_call *call, const void *request, void *response, void *user)
{
    const mprpc_bytes *in = (const mprpc_bytes *)((const testsvc_BigRequest *)request)->data.arg;
    testsvc_EchoResponse *rs = (testsvc_EchoResponse *)response;
    size_t i;
    uint64_t sum = 0;
    (void)call; (void)user;
    for (i = 0; i < in->size; i++) sum += in->data[i];
    rs->seq = sum;
}

static const mprpc_method arena_methods[] = {
    MPRPC_METHOD("Build", testsvc_EchoRequest, testsvc_BigResponse, build),
    MPRPC_METHOD_PREPARED("Sink", testsvc_BigRequest, testsvc_EchoResponse, sink, sink_prepare),
};
static const mprpc_service arena_service = MPRPC_SERVICE("Arena", arena_methods, NULL);

static mprpc_server *arena_up(mprpc_config *cfg, int arena_max, uint32_t max_message)
{
    mprpc_server *srv = NULL;
    test_config(cfg);
    cfg->rpcserver_port = 0;
    cfg->call_arena_max = arena_max;
    cfg->max_message_size = max_message;
    cfg->drain_timeout_ms = 200;
    CHECK_STATUS(mprpc_server_new(&srv, cfg), MPRPC_OK);
    CHECK_STATUS(mprpc_server_add_service(srv, &arena_service), MPRPC_OK);
    CHECK_STATUS(mprpc_server_start(srv), MPRPC_OK);
    cfg->rpcserver_port = mprpc_server_port(srv);
    cfg->max_message_size = 4u << 20;  /* the caller takes any reply: the provider's bound is tested */
    return srv;
}

/* Calls Build; the reply's bytes land in reply_buf. */
static uint8_t reply_buf[300000];
static mprpc_status call_build(mprpc_channel *ch, uint64_t size, uint8_t fill, int fail, uint32_t delay_ms,
                               mprpc_controller *ctl, testsvc_BigResponse *rs, mprpc_bytes_sink *got)
{
    testsvc_EchoRequest rq = testsvc_EchoRequest_init_zero;
    rq.seq = size;
    rq.payload.size = 1;
    rq.payload.bytes[0] = fill;
    rq.fail = fail != 0;
    rq.delay_ms = delay_ms;
    memset(rs, 0, sizeof *rs);
    got->data = reply_buf;
    got->capacity = sizeof reply_buf;
    got->size = 0;
    rs->data.funcs.decode = mprpc_bytes_copy_decode;
    rs->data.arg = got;
    mprpc_controller_init(ctl);
    return MPRPC_CALL(ch, "Arena", "Build", testsvc_EchoRequest, &rq, testsvc_BigResponse, rs, ctl);
}

static int all_bytes(const uint8_t *p, size_t n, uint8_t v)
{
    size_t i;
    for (i = 0; i < n; i++) if (p[i] != v) return 0;
    return 1;
}

static void a_reply_built_in_the_arena_arrives_whole_and_the_arena_is_freed(void)
{
    mprpc_config cfg;
    mprpc_server *srv = arena_up(&cfg, 1u << 20, 4u << 20);
    mprpc_channel *ch;
    mprpc_controller ctl;
    testsvc_BigResponse rs;
    mprpc_bytes_sink got;
    mprpc_server_stats st;
    CHECK_STATUS(mprpc_channel_new(&ch, &cfg), MPRPC_OK);
    CHECK_STATUS(call_build(ch, 200000, 0x5a, 0, 0, &ctl, &rs, &got), MPRPC_OK);
    CHECK(got.size == 200000 && all_bytes(reply_buf, got.size, 0x5a));
    CHECK(rs.sum == 200000 + sizeof(mprpc_bytes));   /* what the handler saw in use */
    CHECK(live_blocks() == 0);
    mprpc_server_get_stats(srv, &st);
    CHECK(st.arena_bytes == 200000 + sizeof(mprpc_bytes));
    CHECK(st.arena_refused == 0);
    teardown(srv, ch);
}

static void a_failed_call_frees_its_arena(void)
{
    mprpc_config cfg;
    mprpc_server *srv = arena_up(&cfg, 1u << 20, 4u << 20);
    mprpc_channel *ch;
    mprpc_controller ctl;
    testsvc_BigResponse rs;
    mprpc_bytes_sink got;
    char want[80];
    CHECK_STATUS(mprpc_channel_new(&ch, &cfg), MPRPC_OK);
    CHECK_STATUS(call_build(ch, 5000, 1, 1, 0, &ctl, &rs, &got), MPRPC_ERR_APPLICATION);
    snprintf(want, sizeof want, "failed after taking %zu arena bytes", 5000 + sizeof(mprpc_bytes));
    CHECK_CONTAINS(ctl.error_text, want);
    CHECK(live_blocks() == 0);
    teardown(srv, ch);
}

static void a_reply_too_large_to_send_frees_its_arena(void)
{
    mprpc_config cfg;
    mprpc_server *srv = arena_up(&cfg, 1u << 20, 100000);   /* replies up to 100000 bytes */
    mprpc_channel *ch;
    mprpc_controller ctl;
    testsvc_BigResponse rs;
    mprpc_bytes_sink got;
    CHECK_STATUS(mprpc_channel_new(&ch, &cfg), MPRPC_OK);
    CHECK_STATUS(call_build(ch, 150000, 2, 0, 0, &ctl, &rs, &got), MPRPC_ERR_TOO_LARGE);
    CHECK_CONTAINS(ctl.error_text, "cannot encode the response");
    CHECK(live_blocks() == 0);
    teardown(srv, ch);
}

static void over_call_arena_max_the_allocation_is_refused_and_counted(void)
{
    mprpc_config cfg;
    mprpc_server *srv = arena_up(&cfg, 65536, 4u << 20);
    mprpc_channel *ch;
    mprpc_controller ctl;
    testsvc_BigResponse rs;
    mprpc_bytes_sink got;
    mprpc_server_stats st;
    const size_t desc = sizeof(mprpc_bytes); /* the handler's mprpc_bytes, taken first */
    char want[80];
    CHECK_STATUS(mprpc_channel_new(&ch, &cfg), MPRPC_OK);
    CHECK_STATUS(call_build(ch, 65536, 3, 0, 0, &ctl, &rs, &got), MPRPC_ERR_APPLICATION);
    snprintf(want, sizeof want, "arena refused 65536 bytes (%zu in use)", desc);
    CHECK_CONTAINS(ctl.error_text, want);
    CHECK_STATUS(call_build(ch, 65536 - desc, 3, 0, 0, &ctl, &rs, &got), MPRPC_OK); /* exactly the max */
    CHECK(got.size == 65536 - desc);
    CHECK(live_blocks() == 0);
    mprpc_server_get_stats(srv, &st);
    CHECK(st.arena_refused == 1);
    CHECK(st.arena_bytes == desc + 65536);
    teardown(srv, ch);
}

static mprpc_status call_sink(mprpc_channel *ch, size_t n, mprpc_controller *ctl, testsvc_EchoResponse *rs)
{
    static uint8_t data[200000];
    testsvc_BigRequest rq = testsvc_BigRequest_init_zero;
    mprpc_bytes out;
    memset(data, 1, sizeof data);
    out.data = data;
    out.size = n;
    rq.data.funcs.encode = mprpc_bytes_encode;
    rq.data.arg = &out;
    memset(rs, 0, sizeof *rs);
    mprpc_controller_init(ctl);
    return MPRPC_CALL(ch, "Arena", "Sink", testsvc_BigRequest, &rq, testsvc_EchoResponse, rs, ctl);
}

static void request_bytes_copied_by_a_decode_callback_are_freed_also_when_decoding_fails(void)
{
    mprpc_config cfg;
    mprpc_server *srv = arena_up(&cfg, 150000, 4u << 20);
    mprpc_channel *ch;
    mprpc_controller ctl;
    testsvc_EchoResponse rs;
    CHECK_STATUS(mprpc_channel_new(&ch, &cfg), MPRPC_OK);
    CHECK_STATUS(call_sink(ch, 100000, &ctl, &rs), MPRPC_OK);
    CHECK(rs.seq == 100000);
    CHECK(live_blocks() == 0);
    CHECK_STATUS(call_sink(ch, 200000, &ctl, &rs), MPRPC_ERR_DECODE);  /* over the arena: decode fails */
    CHECK_CONTAINS(ctl.error_text, "request bytes over call_arena_max");
    CHECK(live_blocks() == 0);
    teardown(srv, ch);
}

static void a_deferred_call_finished_by_another_thread_frees_its_arena_after_the_reply(void)
{
    mprpc_config cfg;
    mprpc_server *srv = arena_up(&cfg, 1u << 20, 4u << 20);
    mprpc_channel *ch;
    mprpc_controller ctl;
    testsvc_BigResponse rs;
    mprpc_bytes_sink got;
    CHECK_STATUS(mprpc_channel_new(&ch, &cfg), MPRPC_OK);
    CHECK_STATUS(call_build(ch, 70000, 7, 0, 20, &ctl, &rs, &got), MPRPC_OK);
    CHECK(got.size == 70000 && all_bytes(reply_buf, got.size, 7));
    CHECK(live_blocks() == 0);
    teardown(srv, ch);
}

typedef struct parked_caller {
    mprpc_channel *ch;
    mprpc_status status;
} parked_caller;

static void *parked_caller_main(void *arg)
{
    parked_caller *pc = (parked_caller *)arg;
    mprpc_controller ctl;
    testsvc_BigResponse rs;
    mprpc_bytes_sink got;
    pc->status = call_build(pc->ch, 10, 0, 0, 60000, &ctl, &rs, &got);
    return NULL;
}

static void an_abandoned_call_frees_its_arena_when_finished_after_the_server_is_gone(void)
{
    mprpc_config cfg;
    mprpc_server *srv = arena_up(&cfg, 1u << 20, 4u << 20);
    parked_caller pc;
    pthread_t t;
    int i;
    cfg.rpc_timeout_ms = 5000;
    CHECK_STATUS(mprpc_channel_new(&pc.ch, &cfg), MPRPC_OK);
    __atomic_store_n(&parked, (mprpc_call *)NULL, __ATOMIC_RELEASE);
    pthread_create(&t, NULL, parked_caller_main, &pc);
    for (i = 0; i < 500 && !__atomic_load_n(&parked, __ATOMIC_ACQUIRE); i++) sleep_ms(10);
    CHECK(parked != NULL);
    CHECK(live_blocks() == 1);
    mprpc_server_free(srv);          /* drain_timeout_ms 200: the parked call is abandoned */
    CHECK(live_blocks() == 1);       /* still the handler's until mprpc_call_done */
    if (parked) mprpc_call_done(parked);
    CHECK(live_blocks() == 0);
    pthread_join(t, NULL);
    CHECK(pc.status != MPRPC_OK);    /* the caller got no answer */
    mprpc_channel_free(pc.ch);
}

int main(void)
{
    RUN(a_reply_built_in_the_arena_arrives_whole_and_the_arena_is_freed);
    RUN(a_failed_call_frees_its_arena);
    RUN(a_reply_too_large_to_send_frees_its_arena);
    RUN(over_call_arena_max_the_allocation_is_refused_and_counted);
    RUN(request_bytes_copied_by_a_decode_callback_are_freed_also_when_decoding_fails);
    RUN(a_deferred_call_finished_by_another_thread_frees_its_arena_after_the_reply);
    RUN(an_abandoned_call_frees_its_arena_when_finished_after_the_server_is_gone);
    return test_summary("test_arena");
}
