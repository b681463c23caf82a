/* Fuzz target: the provider's input path. Arbitrary bytes from a peer go
 * through exactly the code the event loop runs for a readable connection
 * (mprpc__conn_read_target, mprpc__conn_received, mprpc__conn_settle: framing, RpcHeader,
 * routing, request decode, dispatch to the test services, replies queued,
 * pausing at max_pipeline_depth / max_pending_output, EOF), split at
 * arbitrary points, without a TCP socket: the replies go to one end of a
 * socketpair that the harness drains like a peer would.
 *
 * Input: byte 0 picks the limits, byte 1 seeds the split points and the
 * reader's pace, the rest is the byte stream.
 *
 * Invariants checked (abort() = a finding): the partial-frame buffer stays
 * within its bound; a connection is never left paused with nothing that
 * could wake it (no pending output, no call in flight, not closed); a
 * connection that may take requests has no whole request left unserved in
 * its buffer (the peer may have sent its last byte). */
#define MPRPC_IMPLEMENTATION
#include "mprpc.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "support.h"
#include "fuzz_loop.h"

#include <sys/epoll.h>
#include <sys/socket.h>

/* Deferred calls finish after the chunk that started them, through the same
 * path as mprpc_call_done from a worker thread. */
static mprpc_call *pending[1024];
static size_t npending;

static void fz_deferred(mprpc_call *call, const void *request, void *response, void *user)
{
    const testsvc_EchoRequest *rq = (const testsvc_EchoRequest *)request;
    testsvc_EchoResponse *rs = (testsvc_EchoResponse *)response;
    (void)user;
    memcpy(rs->payload.bytes, rq->payload.bytes, rq->payload.size);
    rs->payload.size = rq->payload.size;
    rs->seq = rq->seq;
    if (rq->fail) mprpc_call_fail(call, "deferred failure");
    mprpc_call_defer(call);
    pending[npending++] = call;
}

/* Big with a bounded reply (support.h's would allocate whatever size asks). */
static void fz_big(mprpc_call *call, const void *request, void *response, void *user)
{
    static uint8_t fill[20000];
    static mprpc_bytes out;
    const testsvc_BigRequest *rq = (const testsvc_BigRequest *)request;
    testsvc_BigResponse *rs = (testsvc_BigResponse *)response;
    const mprpc_bytes *in = (const mprpc_bytes *)rq->data.arg;
    uint32_t sum = 0;
    size_t i;
    (void)call; (void)user;
    for (i = 0; i < in->size; i++) sum += in->data[i];
    rs->sum = sum;
    memset(fill, (int)rq->fill, sizeof fill);
    out.data = fill;
    out.size = rq->size % (sizeof fill + 1);
    rs->data.funcs.encode = mprpc_bytes_encode;
    rs->data.arg = &out;
}

static const mprpc_method fz_methods[] = {
    MPRPC_METHOD("Echo", testsvc_EchoRequest, testsvc_EchoResponse, echo),
    MPRPC_METHOD("Deferred", testsvc_EchoRequest, testsvc_EchoResponse, fz_deferred),
    MPRPC_METHOD_PREPARED("Big", testsvc_BigRequest, testsvc_BigResponse, fz_big, big_prepare),
};
static const mprpc_service fz_service = MPRPC_SERVICE("TestService", fz_methods, NULL);

static mprpc_server *srv;
static mprpc__loop *loop;

static void fz_init(void)
{
    mprpc_config cfg;
    mprpc_config_init(&cfg);
    cfg.log_level = MPRPC_LOG_LEVEL_OFF;
    if (mprpc_server_new(&srv, &cfg) != MPRPC_OK || mprpc_server_add_service(srv, &fz_service) != MPRPC_OK ||
        mprpc_server_add_service(srv, &user_service) != MPRPC_OK || mprpc__routes_build(srv) != MPRPC_OK)
        abort();
    loop = fz_loop_new(srv);
}

/* One round of what the loop would do besides reading: finished deferred
 * calls come back, the peer reads, the connection writes. */
static void fz_events(mprpc__conn *c, int peer, int peer_reads)
{
    size_t i, n = npending;
    for (i = 0; i < n; i++) mprpc_call_done(pending[i]);
    npending = 0;
    if (n) mprpc__loop_on_wake(loop);
    if (peer_reads) fz_drain_peer(peer);
    if (c->state != MPRPC__CONN_CLOSED && (c->events & EPOLLOUT)) mprpc__conn_on_event(c, EPOLLOUT);
}

static void fz_check(const mprpc__conn *c)
{
    size_t maxframe = mprpc__max_frame(srv->cfg.max_message_size);
    if (c->state == MPRPC__CONN_CLOSED) return;
    if (mprpc_buf_readable(&c->in) > maxframe + MPRPC__READ_CHUNK) abort();
    if (!(c->events & (EPOLLIN | EPOLLOUT)) && c->inflight == 0 && npending == 0 && !c->peer_eof) {
        fprintf(stderr, "connection stalled: paused with nothing that could resume it\n");
        abort();
    }
    if (npending == 0 && mprpc__conn_can_take(c) && mprpc_buf_readable(&c->in) > 0) {
        mprpc_request_frame f;
        if (mprpc_wire_decode_request(c->in.data + c->in.pos, mprpc_buf_readable(&c->in),
                                      srv->cfg.max_message_size, &f) != MPRPC_AGAIN) {
            /* no new byte may ever come: what is buffered must be served now */
            fprintf(stderr, "connection stalled: a buffered request waits although the connection may take it\n");
            abort();
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint32_t msgsize[4] = { 64, 300, 4096, 4u << 20 };
    static const int depth[4] = { 1, 2, 8, 128 };
    int sv[2]; /* a fresh socketpair per run: the provider may shut its write side */
    mprpc__conn *c;
    int slow_reader, rounds = 0;
    size_t off = 2;
    if (!srv) fz_init();
    if (size < 2) return 0;
    srv->cfg.max_message_size = msgsize[data[0] & 3];
    srv->cfg.max_pipeline_depth = depth[(data[0] >> 2) & 3];
    srv->cfg.max_pending_output = (data[0] & 16) ? 1024 : 1u << 20;
    slow_reader = (data[0] & 32) != 0;
    c = fz_conn_new(loop, 0, data[1], sv);
    while (c->state != MPRPC__CONN_CLOSED && off < size) {
        uint8_t *dst;
        size_t room, want, n;
        int buffered;
        uint32_t r = fz_next();
        fz_events(c, sv[1], slow_reader ? (r & 63) == 0 : (r & 7) == 0);
        fz_check(c);
        if (c->state == MPRPC__CONN_CLOSED) break;
        if (!(c->events & EPOLLIN)) { /* paused: only output or deferred calls can resume it */
            if (++rounds > 1000) fz_drain_peer(sv[1]);
            continue;
        }
        rounds = 0;
        if (!mprpc__conn_read_target(c, &dst, &room, &buffered)) break;
        want = (r >> 8) % 4 == 0 ? 1 : (r >> 8) % 4 == 1 ? size - off : 1 + (r >> 12) % 97;
        n = size - off < want ? size - off : want;
        if (n > room) n = room;
        memcpy(dst, data + off, n);
        off += n;
        mprpc__conn_received(c, buffered, n);
        mprpc__conn_settle(c, mprpc__now_ms());
        fz_check(c);
    }
    /* the peer shuts its side once the loop would read again */
    while (c->state != MPRPC__CONN_CLOSED && !(c->events & EPOLLIN) && (npending || (c->events & EPOLLOUT))) fz_events(c, sv[1], 1);
    if (c->state != MPRPC__CONN_CLOSED && (c->events & EPOLLIN)) {
        uint8_t *dst;
        size_t room;
        int buffered;
        if (mprpc__conn_read_target(c, &dst, &room, &buffered)) {
            mprpc__conn_received(c, buffered, 0);
            mprpc__conn_settle(c, mprpc__now_ms());
        }
    }
    while (c->state != MPRPC__CONN_CLOSED && (npending || (c->events & EPOLLOUT))) fz_events(c, sv[1], 1);
    fz_check(c);
    if (c->state != MPRPC__CONN_CLOSED) mprpc__conn_close(c);
    mprpc__conn_free_dead(loop);
    if (loop->dead || loop->conns || loop->deferred) abort();
    close(sv[1]);
    return 0;
}
