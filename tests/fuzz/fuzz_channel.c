/* Fuzz target: the caller's response path. The bytes a provider sends back
 * go through what the channel's I/O thread does with them: framing
 * (mprpc_wire_decode_response: prefix, RpcResponseHeader, bounds), then
 * mprpc__take_reply (status and error text, body decode into the caller's
 * response struct, including a callback bytes sink) for each whole frame;
 * and, as a seed provider's bare reply, mprpc__take_seed_reply.
 *
 * Input: byte 0 picks max_message_size and the response type, the rest is
 * what the provider sends before closing. */
#define MPRPC_IMPLEMENTATION
#include "mprpc.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "support.h"

typedef struct fuzz_target {
    const pb_msgdesc_t *fields;
    void *resp;
} fuzz_target;

/* Every outcome fits its controller and a failure the channel decides says why. */
static void check_ctl(const mprpc_controller *ctl, int from_provider)
{
    if (strlen(ctl->error_text) >= sizeof ctl->error_text) abort();
    if (ctl->status != MPRPC_OK && !from_provider && ctl->error_text[0] == '\0') abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint32_t msgsize[4] = { 64, 300, 4096, 4u << 20 };
    static uint8_t sinkbuf[2048];
    testsvc_EchoResponse ers;
    testsvc_BigResponse brs;
    fixbug_LoginResponse lrs;
    mprpc_bytes_sink sink;
    mprpc_controller ctl;
    fuzz_target t;
    size_t max, off = 1;
    if (size < 1) return 0;
    max = msgsize[data[0] & 3];
    memset(&ers, 0, sizeof ers);
    memset(&brs, 0, sizeof brs);
    memset(&lrs, 0, sizeof lrs);
    memset(&sink, 0, sizeof sink);
    switch ((data[0] >> 2) & 3) {
    case 0: t.fields = testsvc_EchoResponse_fields; t.resp = &ers; break;
    case 1: /* callback bytes copied into a bounded sink */
        sink.data = sinkbuf;
        sink.capacity = (data[0] & 16) ? sizeof sinkbuf : 8;
        brs.data.funcs.decode = mprpc_bytes_copy_decode;
        brs.data.arg = &sink;
        t.fields = testsvc_BigResponse_fields; t.resp = &brs; break;
    case 2: t.fields = fixbug_LoginResponse_fields; t.resp = &lrs; break;
    default: t.fields = testsvc_BigResponse_fields; t.resp = &brs; break; /* no callback: skipped */
    }
    mprpc_controller_init(&ctl);
    if (data[0] & 32) { /* a seed provider's bare reply, bounded as the channel bounds it */
        if (size - 1 <= max) mprpc__take_seed_reply("127.0.0.1:1", data + 1, size - 1, t.fields, t.resp, &ctl);
        check_ctl(&ctl, 0);
        return 0;
    }
    while (off < size) { /* the v1 frames, as the I/O thread parses them */
        mprpc_response_frame f;
        mprpc_status st = mprpc_wire_decode_response(data + off, size - off, max, &f);
        if (st != MPRPC_OK) break;
        if (f.frame_size > size - off || f.header.body_size > max) abort();
        mprpc_controller_reset(&ctl);
        mprpc__take_reply("127.0.0.1:1", &f, t.fields, t.resp, &ctl);
        check_ctl(&ctl, f.header.status != MPRPC_OK);
        if (((data[0] >> 2) & 3) == 1 && sink.size > sink.capacity) abort();
        off += f.frame_size;
    }
    return 0;
}
