/* Fuzz target: the caller's response path. The bytes a provider sends back
 * arrive on a socket and go through the code mprpc_channel_call runs once
 * its request is out: mprpc__recv_frame (framing, RpcResponseHeader, bounds)
 * and mprpc__take_reply (call_id check, status and error text, body decode
 * into the caller's response struct, including a callback bytes sink).
 *
 * Input: byte 0 picks max_message_size and the response type, the rest is
 * what the provider sends before closing. The call waiting has call_id 1. */
#define MPRPC_IMPLEMENTATION
#include "mprpc.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "support.h"

#include <sys/socket.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint32_t msgsize[4] = { 64, 300, 4096, 4u << 20 };
    static mprpc_channel ch; /* only cfg is used on this path */
    static uint8_t sinkbuf[2048];
    mprpc__pconn pc;
    mprpc_response_frame f;
    mprpc_controller ctl;
    mprpc__call_args a;
    testsvc_EchoResponse ers;
    testsvc_BigResponse brs;
    fixbug_LoginResponse lrs;
    mprpc_bytes_sink sink;
    mprpc_status st;
    int sv[2];
    size_t off = 1;
    if (size < 1) return 0;
    mprpc_config_init(&ch.cfg);
    ch.cfg.max_message_size = msgsize[data[0] & 3];
    memset(&a, 0, sizeof a);
    a.service = "TestService";
    a.method = "Echo";
    memset(&ers, 0, sizeof ers);
    memset(&brs, 0, sizeof brs);
    memset(&lrs, 0, sizeof lrs);
    switch ((data[0] >> 2) & 3) {
    case 0: a.resp_fields = testsvc_EchoResponse_fields; a.resp = &ers; break;
    case 1: /* callback bytes copied into a bounded sink */
        sink.data = sinkbuf;
        sink.capacity = (data[0] & 16) ? sizeof sinkbuf : 8;
        sink.size = 0;
        brs.data.funcs.decode = mprpc_bytes_copy_decode;
        brs.data.arg = &sink;
        a.resp_fields = testsvc_BigResponse_fields; a.resp = &brs; break;
    case 2: a.resp_fields = fixbug_LoginResponse_fields; a.resp = &lrs; break;
    default: a.resp_fields = testsvc_BigResponse_fields; a.resp = &brs; break; /* no callback: skipped */
    }
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) return 0;
    while (off < size) { /* what fits in the socket; the rest is never sent */
        ssize_t k = send(sv[1], data + off, size - off, MSG_NOSIGNAL);
        if (k <= 0) break;
        off += (size_t)k;
    }
    shutdown(sv[1], SHUT_WR);
    memset(&pc, 0, sizeof pc);
    pc.fd = sv[0];
    mprpc__copy_str(pc.addr, sizeof pc.addr, "127.0.0.1:1");
    mprpc_buf_init(&pc.buf);
    mprpc_controller_init(&ctl);
    st = mprpc__recv_frame(&ch, &pc, mprpc__now_ms() + 1000, &f, &ctl);
    if (st == MPRPC_OK) {
        if (f.frame_size > mprpc_buf_readable(&pc.buf)) abort();
        if (f.header.body_size > ch.cfg.max_message_size) abort();
        st = mprpc__take_reply(&pc, 1, &f, &a, &ctl);
    }
    if (st != MPRPC_OK && !mprpc_controller_failed(&ctl)) abort(); /* every failure says why */
    if (strlen(ctl.error_text) >= sizeof ctl.error_text) abort();
    if (((data[0] >> 2) & 3) == 1 && sink.size > sink.capacity) abort();
    mprpc_buf_free(&pc.buf);
    close(sv[0]);
    close(sv[1]);
    return 0;
}
