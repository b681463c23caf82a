/* Typed stubs (mprpc_generator.py): a provider built from a generated handler
 * table answers through generated blocking and async calls; a method left out
 * of the table is unknown to callers; a typed prepare hook runs before the
 * request is decoded; an empty table is refused. The compile-time side (wrong
 * types do not compile) is tests/compile_stubs.c, run by tests/run.sh. */
#define MPRPC_IMPLEMENTATION
#include "mprpc.h"
#include "test.h"
#include "support.h"
#include "testsvc.mprpc.h"

static void typed_echo(mprpc_call *call, const testsvc_EchoRequest *rq, testsvc_EchoResponse *rs, void *user)
{
    (void)call;
    rs->seq = rq->seq + *(const uint64_t *)user;
    rs->payload.size = rq->payload.size;
    memcpy(rs->payload.bytes, rq->payload.bytes, rq->payload.size);
    if (rq->fail) mprpc_call_fail(call, "asked to fail");
}

/* Big: the request's bytes arrive through mprpc_bytes_decode set by the prepare hook. */
static void typed_big_prepare(mprpc_call *call, testsvc_BigRequest *rq, testsvc_BigResponse *rs, void *user)
{
    mprpc_bytes *in = (mprpc_bytes *)user;
    (void)call; (void)rs;
    rq->data.funcs.decode = mprpc_bytes_decode;
    rq->data.arg = in;
}

static void typed_big(mprpc_call *call, const testsvc_BigRequest *rq, testsvc_BigResponse *rs, void *user)
{
    const mprpc_bytes *in = (const mprpc_bytes *)user;
    uint32_t sum = 0;
    size_t i;
    (void)call; (void)rq;
    for (i = 0; i < in->size; i++) sum += in->data[i];
    rs->sum = sum;
}

static uint64_t seq_offset = 1000;
static mprpc_bytes big_in;     /* one call at a time in these tests */
static testsvc_TestService_service typed_service;

static mprpc_server *typed_provider_up(mprpc_config *cfg)
{
    testsvc_TestService_handlers h;
    mprpc_server *srv = NULL;
    memset(&h, 0, sizeof h);
    h.Echo = typed_echo;
    h.Big = typed_big;
    h.Big_prepare = typed_big_prepare;
    test_config(cfg);
    cfg->rpcserver_port = 0;
    CHECK_STATUS(testsvc_TestService_service_init(&typed_service, &h, &seq_offset), MPRPC_OK);
    CHECK_STATUS(mprpc_server_new(&srv, cfg), MPRPC_OK);
    CHECK_STATUS(mprpc_server_add_service(srv, &typed_service.service), MPRPC_OK);
    CHECK_STATUS(mprpc_server_start(srv), MPRPC_OK);
    cfg->rpcserver_port = mprpc_server_port(srv);
    return srv;
}

static void a_generated_handler_table_answers_generated_blocking_calls(void)
{
    mprpc_config cfg;
    mprpc_server *srv = typed_provider_up(&cfg);
    mprpc_channel *ch;
    mprpc_controller ctl;
    testsvc_EchoRequest rq = testsvc_EchoRequest_init_zero;
    testsvc_EchoResponse rs = testsvc_EchoResponse_init_zero;
    CHECK_STATUS(mprpc_channel_new(&ch, &cfg), MPRPC_OK);
    mprpc_controller_init(&ctl);
    set_payload(&rq, "typed");
    rq.seq = 7;
    CHECK_STATUS(testsvc_TestService_Echo(ch, &rq, &rs, &ctl), MPRPC_OK);
    CHECK(rs.seq == 1007);
    CHECK(rs.payload.size == 5 && memcmp(rs.payload.bytes, "typed", 5) == 0);
    rq.fail = true;
    CHECK_STATUS(testsvc_TestService_Echo(ch, &rq, &rs, &ctl), MPRPC_ERR_APPLICATION);
    CHECK_CONTAINS(mprpc_controller_error_text(&ctl), "asked to fail");
    teardown(srv, ch);
}

typedef struct async_box {
    int runs;
    mprpc_status status;
    uint64_t seq;
} async_box;

static void echo_done(mprpc_controller *ctl, void *response, void *user)
{
    async_box *box = (async_box *)user;
    const testsvc_EchoResponse *rs = (const testsvc_EchoResponse *)response;
    box->status = ctl->status;
    box->seq = rs->seq;
    __atomic_add_fetch(&box->runs, 1, __ATOMIC_RELEASE);
}

static void a_generated_async_call_completes_once_with_the_typed_response(void)
{
    mprpc_config cfg;
    mprpc_server *srv = typed_provider_up(&cfg);
    mprpc_channel *ch;
    mprpc_controller ctl;
    async_box box = { 0, MPRPC_ERR_IO, 0 };
    testsvc_EchoRequest rq = testsvc_EchoRequest_init_zero;
    testsvc_EchoResponse rs = testsvc_EchoResponse_init_zero;
    int i;
    CHECK_STATUS(mprpc_channel_new(&ch, &cfg), MPRPC_OK);
    mprpc_controller_init(&ctl);
    rq.seq = 5;
    CHECK_STATUS(testsvc_TestService_Echo_async(ch, &rq, &rs, &ctl, echo_done, &box), MPRPC_OK);
    for (i = 0; i < 500 && __atomic_load_n(&box.runs, __ATOMIC_ACQUIRE) == 0; i++) sleep_ms(10);
    CHECK(__atomic_load_n(&box.runs, __ATOMIC_ACQUIRE) == 1);
    CHECK_STATUS(box.status, MPRPC_OK);
    CHECK(box.seq == 1005 && rs.seq == 1005);
    teardown(srv, ch);
}

static void a_method_left_out_of_the_table_is_unknown_to_callers(void)
{
    mprpc_config cfg;
    mprpc_server *srv = typed_provider_up(&cfg);
    mprpc_channel *ch;
    mprpc_controller ctl;
    testsvc_EchoRequest rq = testsvc_EchoRequest_init_zero;
    testsvc_EchoResponse rs = testsvc_EchoResponse_init_zero;
    CHECK_STATUS(mprpc_channel_new(&ch, &cfg), MPRPC_OK);
    mprpc_controller_init(&ctl);
    CHECK(typed_service.service.method_count == 2);   /* Echo and Big; Deferred was NULL */
    CHECK_STATUS(testsvc_TestService_Deferred(ch, &rq, &rs, &ctl), MPRPC_ERR_UNKNOWN_METHOD);
    teardown(srv, ch);
}

static void a_typed_prepare_hook_runs_before_the_request_is_decoded(void)
{
    static uint8_t data[100000];
    mprpc_config cfg;
    mprpc_server *srv;
    mprpc_channel *ch;
    mprpc_controller ctl;
    testsvc_BigRequest rq = testsvc_BigRequest_init_zero;
    testsvc_BigResponse rs = testsvc_BigResponse_init_zero;
    mprpc_bytes out;
    uint32_t want = 0;
    size_t i;
    for (i = 0; i < sizeof data; i++) { data[i] = (uint8_t)(i * 7); want += data[i]; }
    srv = typed_provider_up(&cfg);
    typed_service.user = &big_in;   /* Big's handlers read the bytes through the user pointer */
    CHECK_STATUS(mprpc_channel_new(&ch, &cfg), MPRPC_OK);
    mprpc_controller_init(&ctl);
    out.data = data;
    out.size = sizeof data;
    rq.data.funcs.encode = mprpc_bytes_encode;
    rq.data.arg = &out;
    CHECK_STATUS(testsvc_TestService_Big(ch, &rq, &rs, &ctl), MPRPC_OK);
    CHECK(big_in.size == sizeof data);
    CHECK(rs.sum == want);
    teardown(srv, ch);
    typed_service.user = &seq_offset;
}

static void an_empty_handler_table_is_refused(void)
{
    testsvc_TestService_service s;
    testsvc_TestService_handlers h;
    memset(&h, 0, sizeof h);
    CHECK_STATUS(testsvc_TestService_service_init(&s, &h, NULL), MPRPC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(testsvc_TestService_service_init(NULL, &h, NULL), MPRPC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(testsvc_TestService_service_init(&s, NULL, NULL), MPRPC_ERR_INVALID_ARGUMENT);
}

int main(void)
{
    RUN(a_generated_handler_table_answers_generated_blocking_calls);
    RUN(a_generated_async_call_completes_once_with_the_typed_response);
    RUN(a_method_left_out_of_the_table_is_unknown_to_callers);
    RUN(a_typed_prepare_hook_runs_before_the_request_is_decoded);
    RUN(an_empty_handler_table_is_refused);
    return test_summary("test_stubs");
}
