/* The nanopb runtime must agree with the pb.h a program is compiled with.
 * Built twice: as test_nanopb_check (the normal flags: everything works, a call
 * carries its bytes) and as test_nanopb_check32 with -DPB_FIELD_32BIT against
 * Debian's libprotobuf-nanopb.a, which is built without it (the server and the
 * channel refuse to start, saying what is wrong and how to fix it, instead of
 * losing data). The messages are mprpc.h's own headers, so no .proto is needed. */
#define MPRPC_IMPLEMENTATION
#include "mprpc.h"
#include "test.h"

#ifndef PB_FIELD_32BIT
static void echo_name(mprpc_call *call, const void *request, void *response, void *user)
{
    const mprpc_RpcHeader *rq = (const mprpc_RpcHeader *)request;
    mprpc_RpcResponseHeader *rs = (mprpc_RpcResponseHeader *)response;
    (void)call; (void)user;
    memcpy(rs->error_text.bytes, rq->service_name.bytes, rq->service_name.size);
    rs->error_text.size = rq->service_name.size;
    rs->call_id = rq->args_size;
}
static const mprpc_method methods[] = {
    MPRPC_METHOD("EchoName", mprpc_RpcHeader, mprpc_RpcResponseHeader, echo_name),
};
static const mprpc_service service = MPRPC_SERVICE("Probe", methods, NULL);
#endif

static void quiet_config(mprpc_config *cfg)
{
    mprpc_config_init(cfg);
    cfg->rpcserver_port = 0;
    cfg->log_level = MPRPC_LOG_LEVEL_OFF;
}

#ifndef PB_FIELD_32BIT
static void a_matching_runtime_passes_the_check_and_carries_bytes_intact(void)
{
    char text[640] = "x";
    mprpc_config cfg;
    mprpc_server *srv = NULL;
    mprpc_channel *ch = NULL;
    mprpc_controller ctl;
    mprpc_RpcHeader rq;
    mprpc_RpcResponseHeader rs;
    CHECK_STATUS(mprpc_wire_check_nanopb(text, sizeof text), MPRPC_OK);
    CHECK(text[0] == '\0');
    CHECK_STATUS(mprpc_wire_check_nanopb(NULL, 0), MPRPC_OK); /* cached */
    quiet_config(&cfg);
    CHECK_STATUS(mprpc_server_new(&srv, &cfg), MPRPC_OK);
    if (!srv) return;
    CHECK_STATUS(mprpc_server_add_service(srv, &service), MPRPC_OK);
    CHECK_STATUS(mprpc_server_start(srv), MPRPC_OK);
    cfg.rpcserver_port = mprpc_server_port(srv);
    CHECK_STATUS(mprpc_channel_new(&ch, &cfg), MPRPC_OK);
    memset(&rq, 0, sizeof rq);
    memset(&rs, 0, sizeof rs);
    memcpy(rq.service_name.bytes, "payload", 7);
    rq.service_name.size = 7;
    rq.args_size = 42;
    mprpc_controller_init(&ctl);
    CHECK_STATUS(MPRPC_CALL(ch, "Probe", "EchoName", mprpc_RpcHeader, &rq, mprpc_RpcResponseHeader, &rs, &ctl),
                 MPRPC_OK);
    CHECK(rs.error_text.size == 7 && memcmp(rs.error_text.bytes, "payload", 7) == 0);
    CHECK(rs.call_id == 42);
    mprpc_channel_free(ch);
    mprpc_server_free(srv);
}
#else
static void a_runtime_built_without_pb_field_32bit_is_refused_with_the_fix(void)
{
    char text[640];
    mprpc_config cfg;
    mprpc_server *srv = (mprpc_server *)&cfg;   /* must be cleared to NULL */
    mprpc_channel *ch = (mprpc_channel *)&cfg;
    CHECK(sizeof(pb_size_t) == 4);
    CHECK_STATUS(mprpc_wire_check_nanopb(text, sizeof text), MPRPC_ERR_UNSUPPORTED);
    CHECK_CONTAINS(text, "this program's pb.h, which has PB_FIELD_32BIT (pb_size_t of 4 bytes)");
    CHECK_CONTAINS(text, "instead of 0a 02 61 62 18 07 20 01");
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ /* the runtime reads the low half of the 4-byte size: 2, no bytes */
    CHECK_CONTAINS(text, "encoded to 0a 02 00 00 18 07 20 01 (8 bytes)");
#else /* the high half: 0, so the field is empty and the encoding fails */
    CHECK_CONTAINS(text, "encoded to nothing (0 bytes)");
#endif
    CHECK_CONTAINS(text, "Build the nanopb runtime from source with the same options");
    CHECK_CONTAINS(text, "max_size 65535 or less");
    CHECK_STATUS(mprpc_wire_check_nanopb(text, sizeof text), MPRPC_ERR_UNSUPPORTED); /* cached */
    CHECK_CONTAINS(text, "instead of 0a 02 61 62 18 07 20 01");
    quiet_config(&cfg);
    CHECK_STATUS(mprpc_server_new(&srv, &cfg), MPRPC_ERR_UNSUPPORTED);
    CHECK(srv == NULL);
    CHECK_STATUS(mprpc_channel_new(&ch, &cfg), MPRPC_ERR_UNSUPPORTED);
    CHECK(ch == NULL);
}
#endif

int main(void)
{
#ifndef PB_FIELD_32BIT
    RUN(a_matching_runtime_passes_the_check_and_carries_bytes_intact);
    return test_summary("test_nanopb_check");
#else
    RUN(a_runtime_built_without_pb_field_32bit_is_refused_with_the_fix);
    return test_summary("test_nanopb_check32");
#endif
}
