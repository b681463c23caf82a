/* Hostile and broken peers, over real loopback sockets: slow clients,
 * clients that pipeline without reading, half-open and reset connections,
 * a flood of connections up to the fd limit, max_connections. During each,
 * a well-behaved caller on another connection gets its answers, and the
 * provider's connection buffers stay within what its configuration allows
 * (mprpc_server_stats.buffer_bytes).
 *
 * Built twice: test_hostile (plain TCP) and test_hostile_tls (-DMPRPC_TLS
 * -DHOSTILE_OVER_TLS): there the provider and the good caller speak mutual
 * TLS and each hostile peer completes a handshake, then sends the same
 * hostile bytes inside TLS records (tests/tls_support.h: peer_*). That build
 * adds hostile handshakes (garbage of several shapes, silence, bad records
 * after a good handshake, a crowd stopped mid-handshake). Both replay the
 * provider fuzz corpus over a real socket. */
#define MPRPC_IMPLEMENTATION
#include "mprpc.h"
#include "test.h"
#include "support.h"
#include "tls_support.h"

#include <fcntl.h>
#include <signal.h>
#include <dirent.h>
#include <sys/resource.h>
#include <sys/wait.h>

/* The good caller: one echo through its own channel; 1 if answered right. */
static int good_call(mprpc_channel *ch, uint64_t seq)
{
    mprpc_controller ctl;
    testsvc_EchoResponse rs;
    mprpc_controller_init(&ctl);
    ctl.timeout_ms = 5000;
    return echo_call(ch, "good", seq, &ctl, &rs) == MPRPC_OK && rs.seq == seq;
}

/* The test configuration; over TLS, mutual TLS for the provider and the
 * good callers alike (tests/tls_support.h). */
static void hostile_config(mprpc_config *cfg)
{
    test_config(cfg);
#ifdef HOSTILE_OVER_TLS
    tls_mutual_config(cfg);
#endif
}

/* A provider with hostile_config on a free port, or NULL (a failure recorded). */
static mprpc_server *hostile_provider(mprpc_config *cfg)
{
    hostile_config(cfg);
    return provider_up_as(cfg);
}

static uint64_t open_connections(mprpc_server *srv)
{
    mprpc_server_stats st;
    mprpc_server_get_stats(srv, &st);
    return st.connections_open;
}

/* Waits until the provider counts `want` open connections. */
static int wait_open_connections(mprpc_server *srv, uint64_t want, int timeout_ms)
{
    int waited;
    for (waited = 0; waited < timeout_ms; waited += 10) {
        if (open_connections(srv) == want) return 1;
        sleep_ms(10);
    }
    return open_connections(srv) == want;
}

/* A client that sends one byte every 100 ms and never finishes the header
 * is closed after idle_timeout_ms, although it is never silent that long. */
static void slow_client_is_closed_by_the_idle_timeout(void)
{
    mprpc_config cfg;
    mprpc_server *srv;
    mprpc_channel *ch;
    peer p;
    int sent = 0, answered = 0, closed = 0;
    hostile_config(&cfg);
    cfg.idle_timeout_ms = 500;
    srv = start_provider(&cfg, 0);
    CHECK(srv != NULL);
    if (!srv) return;
    mprpc_channel_new(&ch, &cfg);
    CHECK(peer_connect(&p, cfg.rpcserver_port));
    /* a header_len of 20, then header bytes one at a time (over TLS, a record each) */
    while (sent < 40 && !closed) {
        uint8_t b = sent == 0 ? 20 : 0;
        if (!peer_send_all(&p, &b, 1)) { closed = 1; break; }
        sent++;
        answered += good_call(ch, (uint64_t)sent);
        if (peer_poll(&p, POLLIN, 100)) closed = peer_wait_closed(&p, 0) || 1;
    }
    CHECK(closed);
    CHECK(sent < 40); /* 4 s of trickle: well past the 0.5 s limit */
    CHECK(answered == sent);
    peer_close(&p);
    CHECK(wait_open_connections(srv, 1, 5000)); /* only the good caller's */
    mprpc_channel_free(ch);
    mprpc_server_free(srv);
}

/* A healthy client whose pipelined frames keep straddling reads is never
 * "half-finished" for long: the unfinished-frame clock restarts with each
 * frame served. */
static void busy_pipeliner_straddling_reads_is_not_timed_out(void)
{
    mprpc_config cfg;
    mprpc_server *srv;
    mprpc_buf out, in;
    peer p;
    int i, answered = 0;
    size_t frame, off = 0;
    hostile_config(&cfg);
    cfg.idle_timeout_ms = 200 * slow_factor();
    srv = start_provider(&cfg, 0);
    CHECK(srv != NULL);
    if (!srv) return;
    mprpc_buf_init(&out);
    mprpc_buf_init(&in);
    for (i = 0; i < 60; i++) {
        testsvc_EchoRequest rq = testsvc_EchoRequest_init_zero;
        set_payload(&rq, "straddle");
        rq.seq = (uint64_t)i;
        mprpc_wire_encode_request(&out, 1u << 20, (uint64_t)i + 1, "TestService", "Echo", testsvc_EchoRequest_fields, &rq);
    }
    frame = out.len / 60;
    CHECK(peer_connect(&p, cfg.rpcserver_port));
    /* 1.5 frames every 20 ms: every read ends mid-frame, for ~800 ms */
    while (off < out.len) {
        size_t n = frame + frame / 2;
        if (n > out.len - off) n = out.len - off;
        if (!peer_send_all(&p, out.data + off, n)) break;
        off += n;
        sleep_ms(20);
    }
    for (i = 0; i < 60; i++) {
        mprpc_response_frame f;
        if (peer_read_frame(&p, &in, &f, 3000) != MPRPC_OK) break;
        answered += f.header.status == 0;
        mprpc_buf_consume(&in, f.frame_size);
    }
    CHECK(off == out.len);
    CHECK(answered == 60);
    peer_close(&p);
    mprpc_buf_free(&out);
    mprpc_buf_free(&in);
    mprpc_server_free(srv);
}

/* Sends as many copies of the frame in `req` as the socket takes within
 * `ms`, never reading; returns the number of whole frames sent. */
static size_t pipeline_without_reading(peer *p, const mprpc_buf *req, size_t max_frames, int ms)
{
    size_t frames = 0, off = 0, len = mprpc_buf_readable(req);
    int idle = 0;
    while (frames < max_frames && idle < ms) {
        short want;
        ssize_t k = peer_send_some(p, req->data + req->pos + off, len - off, &want);
        if (k > 0) {
            off += (size_t)k;
            if (off == len) { off = 0; frames++; }
            idle = 0;
            continue;
        }
        if (k < 0 && errno != EAGAIN) break;
        sleep_ms(10);
        idle += 10;
    }
    return frames;
}

/* Thousands of pipelined requests, replies never read: the provider stops
 * reading once max_pending_output is queued, its buffers stay bounded, and
 * the good caller is served throughout. When the client finally reads,
 * every request it got in is answered. */
static void pipeliner_that_never_reads_is_paused_not_buffered(void)
{
    mprpc_config cfg;
    mprpc_server *srv;
    mprpc_channel *ch;
    mprpc_server_stats st;
    mprpc_buf req, in;
    testsvc_EchoRequest rq = testsvc_EchoRequest_init_zero;
    char payload[1001];
    size_t sent, answered = 0;
    peer p;
    int i, ok = 0;
    hostile_config(&cfg);
    cfg.max_pending_output = 64 * 1024;
    srv = start_provider(&cfg, 0);
    CHECK(srv != NULL);
    if (!srv) return;
    mprpc_channel_new(&ch, &cfg);
    memset(payload, 'p', 1000);
    payload[1000] = '\0';
    set_payload(&rq, payload);
    mprpc_buf_init(&req);
    mprpc_buf_init(&in);
    mprpc_wire_encode_request(&req, 1u << 20, 1, "TestService", "Echo", testsvc_EchoRequest_fields, &rq);
    CHECK(peer_connect(&p, cfg.rpcserver_port));
    sent = pipeline_without_reading(&p, &req, 200000, 300);
    CHECK(sent >= 2000); /* socket buffers took thousands before the provider paused */
    CHECK(sent < 200000);
    for (i = 0; i < 20; i++) ok += good_call(ch, (uint64_t)i);
    CHECK(ok == 20);
    mprpc_server_get_stats(srv, &st);
    /* one pending-output cap plus one partial frame and one read chunk */
    CHECK(st.buffer_bytes <= cfg.max_pending_output + 2 * 1024 * 1024);
    if (st.buffer_bytes > cfg.max_pending_output + 2 * 1024 * 1024)
        fprintf(stderr, "  buffer_bytes %llu\n", (unsigned long long)st.buffer_bytes);
    /* now read everything: nothing that was sent is lost */
    for (;;) {
        mprpc_response_frame f;
        if (peer_read_frame(&p, &in, &f, 2000) != MPRPC_OK) break;
        answered += f.header.status == 0;
        if (f.header.status != 0) fprintf(stderr, "  status %d: %.*s\n", (int)f.header.status, (int)f.header.error_text.size, (const char *)f.header.error_text.bytes);
        mprpc_buf_consume(&in, f.frame_size);
        if (answered == sent) break;
    }
    CHECK(answered == sent);
    if (answered != sent) fprintf(stderr, "  %zu of %zu answered\n", answered, sent);
    peer_close(&p);
    mprpc_buf_free(&req);
    mprpc_buf_free(&in);
    mprpc_channel_free(ch);
    mprpc_server_free(srv);
}

/* Small requests whose replies are large: one read can hold hundreds of
 * them. The provider stops serving them once a pending-output cap is staged,
 * instead of encoding every reply of the read at once. */
static void small_requests_with_large_replies_stay_within_pending_output(void)
{
    mprpc_config cfg;
    mprpc_server *srv;
    mprpc_channel *ch;
    mprpc_server_stats st;
    mprpc_buf req, in;
    testsvc_BigRequest rq = testsvc_BigRequest_init_zero;
    peer p;
    int i, answered = 0;
    hostile_config(&cfg);
    cfg.max_pending_output = 256 * 1024;
    srv = start_provider(&cfg, 0);
    CHECK(srv != NULL);
    if (!srv) return;
    mprpc_channel_new(&ch, &cfg);
    mprpc_buf_init(&req);
    mprpc_buf_init(&in);
    rq.size = 1u << 20; /* 1 MiB reply to a ~40-byte request */
    rq.fill = 7;
    for (i = 0; i < 200; i++)
        mprpc_wire_encode_request(&req, 1u << 20, (uint64_t)i + 1, "TestService", "Big", testsvc_BigRequest_fields, &rq);
    CHECK(peer_connect(&p, cfg.rpcserver_port));
    CHECK(peer_send_all(&p, req.data, req.len)); /* 8 KiB: one read, 200 MiB of replies */
    sleep_ms(300);
    mprpc_server_get_stats(srv, &st);
    CHECK(st.buffer_bytes <= cfg.max_pending_output + 2 * (1u << 20) + 256 * 1024);
    if (st.buffer_bytes > cfg.max_pending_output + 2 * (1u << 20) + 256 * 1024)
        fprintf(stderr, "  buffer_bytes %llu\n", (unsigned long long)st.buffer_bytes);
    CHECK(good_call(ch, 1));
    for (i = 0; i < 200; i++) {
        mprpc_response_frame f;
        if (peer_read_frame(&p, &in, &f, 5000) != MPRPC_OK) break;
        answered += f.header.status == 0 && f.header.body_size > (1u << 20);
        if (f.header.status != 0) fprintf(stderr, "  status %d: %.*s\n", (int)f.header.status, (int)f.header.error_text.size, (const char *)f.header.error_text.bytes);
        mprpc_buf_consume(&in, f.frame_size);
    }
    CHECK(answered == 200);
    if (answered != 200) fprintf(stderr, "  %d of 200 answered\n", answered);
    peer_close(&p);
    mprpc_buf_free(&req);
    mprpc_buf_free(&in);
    mprpc_channel_free(ch);
    mprpc_server_free(srv);
}

/* max_pipeline_depth bounds the deferred calls of one connection: a burst
 * of slow calls is taken `depth` at a time, and all are answered. */
static void pipeline_depth_bounds_calls_in_flight(void)
{
    mprpc_config cfg;
    mprpc_server *srv;
    mprpc_server_stats st;
    mprpc_buf out, in;
    peer p;
    int i, answered = 0;
    hostile_config(&cfg);
    cfg.max_pipeline_depth = 4;
    srv = start_provider(&cfg, 0);
    CHECK(srv != NULL);
    if (!srv) return;
    mprpc_buf_init(&out);
    mprpc_buf_init(&in);
    for (i = 0; i < 12; i++) {
        testsvc_EchoRequest rq = testsvc_EchoRequest_init_zero;
        rq.delay_ms = 200;
        rq.seq = (uint64_t)i;
        mprpc_wire_encode_request(&out, 1u << 20, (uint64_t)i + 1, "TestService", "Deferred", testsvc_EchoRequest_fields, &rq);
    }
    CHECK(peer_connect(&p, cfg.rpcserver_port));
    CHECK(peer_send_all(&p, out.data, out.len));
    for (i = 0; i < 100 * slow_factor(); i++) { /* the first four run ... */
        mprpc_server_get_stats(srv, &st);
        if (st.calls >= 4) break;
        sleep_ms(10);
    }
    sleep_ms(50);
    mprpc_server_get_stats(srv, &st);
    CHECK(st.calls == 4); /* ... and the rest wait, unread, while they are deferred */
    for (i = 0; i < 12; i++) {
        mprpc_response_frame f;
        if (peer_read_frame(&p, &in, &f, 5000) != MPRPC_OK) break;
        answered += f.header.status == 0;
        mprpc_buf_consume(&in, f.frame_size);
    }
    CHECK(answered == 12);
    peer_close(&p);
    mprpc_buf_free(&out);
    mprpc_buf_free(&in);
    mprpc_server_free(srv);
}

/* A connection paused (max_pipeline_depth 1, deferred calls) in the middle
 * of what one read brought is resumed from what it already holds, however
 * the bytes came: over TLS, a read into a small input buffer (a small
 * max_message_size) takes part of a record and the session keeps the rest
 * decrypted, where no socket event announces it. Two writes: a request and
 * half of the next, then the other half and 300 more (one 16 KiB TLS
 * record); every request is answered. */
static void a_connection_paused_mid_read_is_resumed_from_what_it_holds(void)
{
    enum { N = 302 };
    mprpc_config cfg;
    mprpc_server *srv;
    mprpc_buf out, in;
    size_t first = 0, split;
    peer p;
    int i, answered = 0;
    hostile_config(&cfg);
    cfg.max_message_size = 300;
    cfg.max_pipeline_depth = 1;
    srv = start_provider(&cfg, 0);
    CHECK(srv != NULL);
    if (!srv) return;
    mprpc_buf_init(&out);
    mprpc_buf_init(&in);
    for (i = 0; i < N; i++) {
        testsvc_EchoRequest rq = testsvc_EchoRequest_init_zero;
        rq.delay_ms = 1;
        rq.seq = (uint64_t)i;
        mprpc_wire_encode_request(&out, 1u << 20, (uint64_t)i + 1, "TestService", "Deferred",
                                  testsvc_EchoRequest_fields, &rq);
        if (i == 0) first = out.len;
    }
    split = first + first / 2;
    CHECK(out.len - split < 16384); /* the second write is one TLS record */
    CHECK(peer_connect(&p, cfg.rpcserver_port));
    CHECK(peer_send_all(&p, out.data, split));
    CHECK(peer_send_all(&p, out.data + split, out.len - split));
    for (i = 0; i < N; i++) {
        mprpc_response_frame f;
        if (peer_read_frame(&p, &in, &f, 3000 * slow_factor()) != MPRPC_OK) break;
        answered += f.header.status == 0;
        mprpc_buf_consume(&in, f.frame_size);
    }
    CHECK(answered == N);
    if (answered != N) fprintf(stderr, "  %d of %d answered\n", answered, N);
    peer_close(&p);
    mprpc_buf_free(&out);
    mprpc_buf_free(&in);
    mprpc_server_free(srv);
}

/* Half a frame then shutdown(SHUT_WR): closed (a half frame never
 * completes). Whole frames then SHUT_WR: answered, then closed. A reset
 * (SO_LINGER 0) mid-frame, or while replies are queued: the provider drops
 * the connection and serves the good caller. */
static void half_open_and_reset_connections_mid_frame(void)
{
    mprpc_config cfg;
    mprpc_server *srv;
    mprpc_channel *ch;
    mprpc_buf out, in;
    testsvc_EchoRequest rq = testsvc_EchoRequest_init_zero;
    mprpc_response_frame f;
    peer p;
    int i, sent;
    if (!(srv = hostile_provider(&cfg))) return;
    mprpc_channel_new(&ch, &cfg);
    CHECK(good_call(ch, 1));
    mprpc_buf_init(&out);
    mprpc_buf_init(&in);
    set_payload(&rq, "half");
    mprpc_wire_encode_request(&out, 1u << 20, 1, "TestService", "Echo", testsvc_EchoRequest_fields, &rq);
    /* half a frame, then the write side closes */
    /* (over TLS, the write side closes with close_notify, then SHUT_WR) */
    CHECK(peer_connect(&p, cfg.rpcserver_port));
    CHECK(peer_send_all(&p, out.data, out.len / 2));
    peer_shut_wr(&p);
    CHECK(peer_wait_closed(&p, 5000));
    peer_close(&p);
    /* two whole frames, then the write side closes: both answered */
    mprpc_wire_encode_request(&out, 1u << 20, 2, "TestService", "Echo", testsvc_EchoRequest_fields, &rq);
    CHECK(peer_connect(&p, cfg.rpcserver_port));
    CHECK(peer_send_all(&p, out.data, out.len));
    peer_shut_wr(&p);
    CHECK_STATUS(peer_read_frame(&p, &in, &f, 5000), MPRPC_OK);
    CHECK(f.header.call_id == 1);
    mprpc_buf_consume(&in, f.frame_size);
    CHECK_STATUS(peer_read_frame(&p, &in, &f, 5000), MPRPC_OK);
    CHECK(f.header.call_id == 2);
    mprpc_buf_consume(&in, f.frame_size);
    CHECK(peer_wait_closed(&p, 5000));
    peer_close(&p);
    /* a reset in the middle of a frame */
    for (i = 0; i < 20; i++) {
        CHECK(peer_connect(&p, cfg.rpcserver_port));
        peer_send_all(&p, out.data, (size_t)(i + 1) * out.len / 21);
        peer_reset(&p);
        CHECK(good_call(ch, (uint64_t)i + 2));
    }
    /* a reset while the provider holds replies for it */
    mprpc_buf_free(&out);
    mprpc_buf_init(&out);
    {
        char payload[3001];
        memset(payload, 'r', 3000);
        payload[3000] = '\0';
        set_payload(&rq, payload);
    }
    mprpc_wire_encode_request(&out, 1u << 20, 1, "TestService", "Echo", testsvc_EchoRequest_fields, &rq);
    CHECK(peer_connect(&p, cfg.rpcserver_port));
    sent = (int)pipeline_without_reading(&p, &out, 100000, 200);
    CHECK(sent > 100);
    peer_reset(&p);
    CHECK(good_call(ch, 100));
    CHECK(wait_open_connections(srv, 1, 5000)); /* every hostile connection is gone */
    mprpc_buf_free(&out);
    mprpc_buf_free(&in);
    mprpc_channel_free(ch);
    mprpc_server_free(srv);
}

/* max_connections: a connection past the limit is not served, but each
 * request on it is answered BUSY ("not executed": the caller may go
 * elsewhere), then it ends with a FIN; it is counted as rejected. When one
 * connection leaves, a new one is served. */
/* A process that forks while connections are open (to run a helper program,
 * say) leaves copies of the provider's sockets in the child until it execs or
 * exits. epoll reports events for a socket until every copy is closed, so a
 * connection the provider closed meanwhile must be taken out of epoll first:
 * otherwise the peer's next bytes name a connection already freed. */
static void a_connection_closed_while_a_forked_child_holds_its_socket_is_forgotten(void)
{
    mprpc_config cfg;
    mprpc_server *srv;
    mprpc_channel *ch;
    static const uint8_t garbage[8] = {0xff, 0xff, 0xff, 0x7f, 1, 2, 3, 4}; /* header length 2 GiB */
    testsvc_EchoRequest rq = testsvc_EchoRequest_init_zero;
    mprpc_response_frame f;
    mprpc_buf out, in;
    peer p;
    pid_t child;
    int status;
    if (!(srv = hostile_provider(&cfg))) return;
    mprpc_channel_new(&ch, &cfg);
    CHECK(peer_connect(&p, cfg.rpcserver_port));
    mprpc_buf_init(&out);
    mprpc_buf_init(&in);
    set_payload(&rq, "before the fork");
    mprpc_wire_encode_request(&out, 1u << 20, 1, "TestService", "Echo", testsvc_EchoRequest_fields, &rq);
    CHECK(peer_send_all(&p, out.data, out.len));
    CHECK_STATUS(peer_read_frame(&p, &in, &f, 2000), MPRPC_OK); /* the provider holds its side now */
    mprpc_buf_free(&out);
    mprpc_buf_free(&in);
    child = fork(); /* holds a copy of every descriptor, the provider's side of fd included */
    if (child == 0) {
        struct timespec ts = {0, 600 * 1000000L};
        nanosleep(&ts, NULL);
        _exit(0);
    }
    CHECK(child > 0);
    CHECK(peer_send_all(&p, garbage, sizeof garbage)); /* the provider shuts its side ... */
    peer_shut_wr(&p);                                   /* ... sees our end, closes, frees it */
    sleep_ms(150);
    peer_reset(&p);                                     /* a reset: an event on the child's copy */
    sleep_ms(150);
    CHECK(good_call(ch, 2)); /* and the provider is still well */
    CHECK(waitpid(child, &status, 0) == child);
    mprpc_channel_free(ch);
    mprpc_server_free(srv);
}

static void max_connections_is_enforced(void)
{
    mprpc_config cfg;
    mprpc_server *srv;
    mprpc_server_stats st;
    mprpc_buf out, in;
    testsvc_EchoRequest rq = testsvc_EchoRequest_init_zero;
    mprpc_response_frame f;
    peer held[4], extra;
    int i;
    hostile_config(&cfg);
    cfg.max_connections = 4;
    srv = start_provider(&cfg, 0);
    CHECK(srv != NULL);
    if (!srv) return;
    mprpc_buf_init(&out);
    mprpc_buf_init(&in);
    mprpc_wire_encode_request(&out, 1u << 20, 1, "TestService", "Echo", testsvc_EchoRequest_fields, &rq);
    for (i = 0; i < 4; i++) {
        CHECK(peer_connect(&held[i], cfg.rpcserver_port));
        CHECK(peer_send_all(&held[i], out.data, out.len));
        CHECK_STATUS(peer_read_frame(&held[i], &in, &f, 5000), MPRPC_OK);
        in.pos = in.len = 0;
    }
    /* the kernel accepts (over TLS the handshake completes too); the provider refuses */
    CHECK(peer_connect(&extra, cfg.rpcserver_port));
    CHECK(peer_send_all(&extra, out.data, out.len));
    CHECK_STATUS(peer_read_frame(&extra, &in, &f, 5000), MPRPC_OK);
    CHECK_STATUS(f.header.status, MPRPC_ERR_BUSY);
    CHECK(f.header.call_id == 1);
    CHECK(f.header.error_text.size > 0 &&
          strstr((const char *)f.header.error_text.bytes, "provider at max_connections (4): not executed"));
    in.pos = in.len = 0;
    CHECK(peer_wait_closed(&extra, 5000));
    peer_close(&extra);
    mprpc_server_get_stats(srv, &st);
    CHECK(st.connections_rejected == 1);
    CHECK(st.connections_open == 4);
    peer_close(&held[0]);
    CHECK(wait_open_connections(srv, 3, 5000));
    CHECK(peer_connect(&extra, cfg.rpcserver_port));
    CHECK(peer_send_all(&extra, out.data, out.len));
    CHECK_STATUS(peer_read_frame(&extra, &in, &f, 5000), MPRPC_OK);
    peer_close(&extra);
    for (i = 1; i < 4; i++) peer_close(&held[i]);
    mprpc_buf_free(&out);
    mprpc_buf_free(&in);
    mprpc_server_free(srv);
}

/* ---- a provider in a child process with RLIMIT_NOFILE = 64 ---- */

static volatile sig_atomic_t child_stop;
static void on_term(int sig) { (void)sig; child_stop = 1; }

typedef struct child_provider {
    pid_t pid;
    int port;
    int stats_fd; /* the child writes its mprpc_server_stats here when stopped */
} child_provider;

static int child_start(child_provider *cp, int nofile)
{
    int pipefd[2];
    if (pipe(pipefd) != 0) return 0;
    cp->pid = fork();
    if (cp->pid < 0) return 0;
    if (cp->pid == 0) {
        struct rlimit rl;
        mprpc_config cfg;
        mprpc_server *srv;
        mprpc_server_stats st;
        int port;
        close(pipefd[0]);
        signal(SIGTERM, on_term);
        rl.rlim_cur = rl.rlim_max = (rlim_t)nofile;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) _exit(2);
        hostile_config(&cfg);
        srv = start_provider(&cfg, 0);
        port = srv ? cfg.rpcserver_port : 0;
        if (write(pipefd[1], &port, sizeof port) != sizeof port || !srv) _exit(3);
        while (!child_stop) pause();
        mprpc_server_get_stats(srv, &st);
        if (write(pipefd[1], &st, sizeof st) != sizeof st) _exit(4);
        mprpc_server_free(srv);
        _exit(0);
    }
    close(pipefd[1]);
    cp->stats_fd = pipefd[0];
    return read(cp->stats_fd, &cp->port, sizeof cp->port) == sizeof cp->port && cp->port > 0;
}

static int child_stop_and_stats(child_provider *cp, mprpc_server_stats *st)
{
    int status = 0, ok;
    kill(cp->pid, SIGTERM);
    ok = read(cp->stats_fd, st, sizeof *st) == sizeof *st;
    waitpid(cp->pid, &status, 0);
    close(cp->stats_fd);
    return ok && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

static long proc_cpu_ticks(pid_t pid)
{
    char path[64], buf[1024], *p;
    unsigned long ut = 0, stt = 0;
    FILE *f;
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    f = fopen(path, "r");
    if (!f) return -1;
    if (!fgets(buf, sizeof buf, f)) buf[0] = '\0';
    fclose(f);
    p = strrchr(buf, ')');
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &stt) != 2) return -1;
    return (long)(ut + stt);
}

static int proc_fd_count(pid_t pid)
{
    char path[64];
    DIR *d;
    struct dirent *e;
    int n = 0;
    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    d = opendir(path);
    if (!d) return -1;
    while ((e = readdir(d)) != NULL) n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* More connections than the provider has file descriptors: it holds what
 * it can, sheds the rest through its spare descriptor (counted as
 * rejected) instead of spinning on a backlog it cannot accept, keeps
 * serving the caller that was already connected, and serves a fresh caller
 * once the flood ends. */
static void connection_flood_past_the_fd_limit(void)
{
    enum { FLOOD = 200 };
    child_provider cp;
    mprpc_config cfg;
    mprpc_channel *ch, *fresh;
    mprpc_server_stats st;
    int fds[FLOOD], i, opened = 0, ok = 0;
    long t0, t1;
    const char *wrap = getenv("MPRPC_TEST_WRAP");
    if (wrap && strstr(wrap, "valgrind")) {
        /* valgrind keeps descriptors of its own just below the soft limit, so a
         * 64-descriptor child under it cannot start; the plain, ASan and TSan
         * runs cover this case */
        printf("     (skipped under valgrind)\n");
        return;
    }
    CHECK(child_start(&cp, 64));
    hostile_config(&cfg);
    cfg.rpcserver_port = cp.port;
    cfg.channel_max_connections = 1;
    mprpc_channel_new(&ch, &cfg);
    CHECK(good_call(ch, 1)); /* connected before the flood */
    for (i = 0; i < FLOOD; i++) {
        fds[i] = raw_connect(cp.port);
        opened += fds[i] >= 0;
    }
    CHECK(opened > 64); /* the kernel completes handshakes past the provider's limit */
    sleep_ms(300);
    i = proc_fd_count(cp.pid);
    CHECK(i >= 60); /* its table is full (descriptors inherited above the limit aside) */
    if (i < 60) {
        char cmd[64];
        fprintf(stderr, "  provider holds %d fds\n", i);
        snprintf(cmd, sizeof cmd, "ls -l /proc/%d/fd >&2", (int)cp.pid);
        if (system(cmd) != 0) {}
    }
    /* at the limit with a full backlog, the provider does not spin: far less
     * than a core's worth of CPU over one second (a spin would use all of it) */
    t0 = proc_cpu_ticks(cp.pid);
    for (i = 0; i < 10; i++) ok += good_call(ch, (uint64_t)i + 2);
    sleep_ms(1000);
    t1 = proc_cpu_ticks(cp.pid);
    CHECK(ok == 10);
    CHECK(t0 >= 0 && t1 - t0 < 50);
    for (i = 0; i < FLOOD; i++)
        if (fds[i] >= 0) close(fds[i]);
    sleep_ms(200);
    mprpc_channel_new(&fresh, &cfg);
    CHECK(good_call(fresh, 100));
    mprpc_channel_free(fresh);
    mprpc_channel_free(ch);
    CHECK(child_stop_and_stats(&cp, &st));
    CHECK(st.connections_rejected > 0);
    CHECK(st.connections_accepted + st.connections_rejected >= (uint64_t)opened);
}

/* Out of descriptors with no spare to shed the pending connection, accepting
 * pauses (100 ms at a time, counted) instead of spinning; the caller already
 * connected is served meanwhile, and a new caller is served once descriptors
 * are free again. The pause is the acceptor thread's own state
 * (it used to be a field loop 0 wrote while every loop read it). */
static void accepting_pauses_without_descriptors_and_resumes(void)
{
    int ctl[2], port = 0, ok = 0, i;
    pid_t pid;
    mprpc_config cfg;
    mprpc_channel *ch, *late;
    mprpc_server_stats st;
    long t0, t1;
    const char *wrap = getenv("MPRPC_TEST_WRAP");
    if (wrap && strstr(wrap, "valgrind")) {
        printf("     (skipped under valgrind)\n");
        return;
    }
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, ctl) == 0);
    pid = fork();
    if (pid == 0) {
        struct rlimit rl, low;
        mprpc_server *srv;
        char cmd;
        close(ctl[0]);
        hostile_config(&cfg);
        srv = start_provider(&cfg, 0);
        port = srv ? cfg.rpcserver_port : 0;
        if (write(ctl[1], &port, sizeof port) != sizeof port || !srv) _exit(3);
        getrlimit(RLIMIT_NOFILE, &rl);
        low = rl;
        low.rlim_cur = 3; /* below every descriptor the provider holds, its spare included */
        if (read(ctl[1], &cmd, 1) != 1 || setrlimit(RLIMIT_NOFILE, &low) != 0) _exit(4);
        if (read(ctl[1], &cmd, 1) != 1 || setrlimit(RLIMIT_NOFILE, &rl) != 0) _exit(5);
        if (read(ctl[1], &cmd, 1) != 1) _exit(6);
        mprpc_server_get_stats(srv, &st);
        if (write(ctl[1], &st, sizeof st) != sizeof st) _exit(7);
        mprpc_server_free(srv);
        _exit(0);
    }
    close(ctl[1]);
    CHECK(pid > 0 && read(ctl[0], &port, sizeof port) == sizeof port && port > 0);
    hostile_config(&cfg);
    cfg.rpcserver_port = port;
    cfg.channel_max_connections = 1;
    mprpc_channel_new(&ch, &cfg);
    mprpc_channel_new(&late, &cfg);
    CHECK(good_call(ch, 1)); /* connected before */
    CHECK(write(ctl[0], "l", 1) == 1); /* the provider's descriptor limit drops */
    sleep_ms(100);
    {   /* a connection now: the kernel completes it, the provider cannot take it */
        int fd = raw_connect(port);
        CHECK(fd >= 0);
        t0 = proc_cpu_ticks(pid);
        for (i = 0; i < 5; i++) ok += good_call(ch, (uint64_t)i + 2);
        sleep_ms(500);
        t1 = proc_cpu_ticks(pid);
        CHECK(ok == 5);
        CHECK(t0 >= 0 && t1 - t0 < 30); /* paused, not spinning on the backlog */
        close(fd);
    }
    CHECK(write(ctl[0], "r", 1) == 1); /* descriptors again */
    CHECK(good_call(late, 100)); /* a new caller is served */
    CHECK(write(ctl[0], "s", 1) == 1);
    CHECK(read(ctl[0], &st, sizeof st) == sizeof st);
    CHECK(st.accept_pauses > 0);
    CHECK(st.connections_rejected > 0);
    {
        int status = 0;
        waitpid(pid, &status, 0);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    close(ctl[0]);
    mprpc_channel_free(late);
    mprpc_channel_free(ch);
}

/* ---- the provider fuzz corpus over a real socket ---- */

typedef struct corpus_input {
    char name[256];
    uint8_t *data;
    size_t size;
} corpus_input;

/* The next input of tests/fuzz/corpus/provider (crash-* inputs included);
 * 0 when there is none left. */
static int corpus_next(DIR *d, corpus_input *in)
{
    struct dirent *e;
    for (errno = 0; (e = readdir(d)) != NULL; errno = 0) {
        char path[300];
        FILE *f;
        long n;
        if (e->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "tests/fuzz/corpus/provider/%s", e->d_name);
        memcpy(in->name, e->d_name, sizeof in->name);
        if ((f = fopen(path, "rb")) == NULL) continue;
        fseek(f, 0, SEEK_END);
        n = ftell(f);
        fseek(f, 0, SEEK_SET);
        in->data = (uint8_t *)malloc(n > 0 ? (size_t)n : 1);
        in->size = in->data && n > 0 && fread(in->data, 1, (size_t)n, f) == (size_t)n ? (size_t)n : 0;
        fclose(f);
        return 1;
    }
    /* A 32-bit build without a 64-bit off_t gets EOVERFLOW here when a
     * directory offset does not fit 32 bits (ext4 under qemu-arm): say so
     * rather than read nothing. */
    if (errno != 0) fprintf(stderr, "  readdir tests/fuzz/corpus/provider: %s\n", strerror(errno));
    return 0;
}

/* Sends the input's byte stream (fuzz_provider.c's bytes 0 and 1 are its
 * limits and split seed: the limits are the provider's config here, the
 * seed splits the writes) while reading whatever comes back, then ends its
 * side and reads until the provider closes; 1 if the provider closed. */
static int corpus_send(peer *p, const corpus_input *in)
{
    uint32_t rng = 0x9e3779b9u ^ ((uint32_t)in->data[1] * 2654435761u);
    size_t off = 2;
    uint8_t junk[65536];
    while (off < in->size) {
        short want;
        size_t n;
        ssize_t k;
        rng ^= rng << 13; rng ^= rng >> 17; rng ^= rng << 5;
        n = 1 + rng % 97;
        if (n > in->size - off) n = in->size - off;
        k = peer_send_some(p, in->data + off, n, &want);
        if (k > 0) off += (size_t)k;
        else if (k == 0 || errno != EAGAIN) break; /* the provider ended it: a fine answer to garbage */
        if (peer_recv(p, junk, sizeof junk, k > 0 ? 0 : 10) == 0) break;
    }
    peer_shut_wr(p);
    return peer_wait_closed(p, 5000 * slow_factor());
}

/* The limits fuzz_provider.c takes from byte 0. */
static void corpus_limits(mprpc_config *cfg, uint8_t b0)
{
    static const uint32_t msgsize[4] = { 64, 300, 4096, 4u << 20 };
    static const int depth[4] = { 1, 2, 8, 128 };
    cfg->max_message_size = msgsize[b0 & 3];
    cfg->max_pipeline_depth = depth[(b0 >> 2) & 3];
    cfg->max_pending_output = (b0 & 16) ? 1024 : 1u << 20;
}

/* Every input of the provider fuzz corpus, sent over a real socket (over
 * TLS: inside an established session) to a provider with the limits the
 * input's first byte picks: the provider ends the connection after the
 * peer's end, a good caller is served after each input, and no connection
 * is left open. */
static void provider_fuzz_corpus_over_a_real_socket_leaves_the_provider_serving(void)
{
    DIR *d = opendir("tests/fuzz/corpus/provider");
    corpus_input in;
    int inputs = 0;
    CHECK(d != NULL);
    if (!d) return;
    while (corpus_next(d, &in)) {
        mprpc_config cfg;
        mprpc_server *srv;
        mprpc_channel *ch;
        peer p;
        int closed = 0, served = 0;
        hostile_config(&cfg);
        if (in.size >= 2) corpus_limits(&cfg, in.data[0]);
        if (in.size >= 2 && (srv = start_provider(&cfg, 0)) != NULL) {
            mprpc_channel_new(&ch, &cfg);
            closed = peer_connect(&p, cfg.rpcserver_port) && corpus_send(&p, &in);
            peer_close(&p);
            served = good_call(ch, 1) && wait_open_connections(srv, 1, 5000 * slow_factor());
            mprpc_channel_free(ch);
            mprpc_server_free(srv);
            inputs++;
        }
        if (!closed || !served) fprintf(stderr, "  corpus input %s: closed %d, served after %d\n", in.name, closed, served);
        CHECK(closed && served);
        free(in.data);
    }
    closedir(d);
    CHECK(inputs >= 20);
}

#ifdef HOSTILE_OVER_TLS
/* ---- hostile handshakes (test_hostile_tls only) ---- */

/* A raw TCP connection (no TLS) that sends n bytes, then ends its side when
 * shut; returns the socket, or -1. */
static int raw_hostile(int port, const uint8_t *b, size_t n, int shut)
{
    int fd = raw_connect(port);
    if (fd < 0) return -1;
    raw_send_all(fd, b, n); /* the provider may close before taking it all */
    if (shut) shutdown(fd, SHUT_WR);
    return fd;
}

static void fill_noise(uint8_t *b, size_t n, unsigned seed)
{
    size_t i;
    for (i = 0; i < n; i++) b[i] = (uint8_t)((seed = seed * 1103515245u + 12345u) >> 16);
}

/* Handshake garbage of every shape, each on its own connection, against a
 * provider with one loop and a 300 ms handshake timeout: random bytes, a
 * handshake record header with noise, a record length past the TLS limit,
 * an HTTP request, a truncated ClientHello then EOF, a truncated
 * ClientHello then silence, a whole ClientHello then silence, a ClientHello
 * trickled a byte every 20 ms, a ClientHello followed by an application
 * record. Each is closed (at once, or by tls_handshake_timeout_ms, whose
 * deadline trickling does not move); the good caller on the same loop is
 * served after each; every connection is gone at the end and counted as a
 * protocol error. */
static void handshake_garbage_of_every_shape_is_closed_and_the_provider_serves_on(void)
{
    enum { SHAPES = 9 };
    static const uint8_t too_long[] = { 0x16, 0x03, 0x01, 0xff, 0xff, 0x01, 0x00 };
    static const char http[] = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
    uint8_t noise[4096], buf[8192];
    mprpc_config cfg;
    mprpc_server *srv;
    mprpc_channel *ch;
    mprpc_server_stats st;
    size_t hello_len, n;
    uint8_t *hello = tls_client_hello(peer_tls_ctx, &hello_len);
    int i, fd, served = 0, closed = 0;
    CHECK(hello != NULL && hello_len > 100 && hello[0] == 0x16);
    if (!hello) return;
    hostile_config(&cfg);
    cfg.io_threads = 1;
    cfg.tls_handshake_timeout_ms = 300;
    if (!(srv = start_provider(&cfg, 0))) { CHECK(0); free(hello); return; }
    mprpc_channel_new(&ch, &cfg);
    CHECK(good_call(ch, 100));
    for (i = 0; i < SHAPES; i++) {
        const uint8_t *b = buf;
        int shut = 1;
        fill_noise(noise, sizeof noise, 1000u + (unsigned)i);
        switch (i) {
        case 0: noise[0] = 0x42; b = noise; n = sizeof noise; break;                 /* random bytes */
        case 1: noise[0] = 0x16; noise[1] = 0x03; noise[2] = 0x01; b = noise; n = sizeof noise; break;
        case 2: b = too_long; n = sizeof too_long; shut = 0; break;                  /* 65535-byte record */
        case 3: b = (const uint8_t *)http; n = sizeof http - 1; shut = 0; break;
        case 4: b = hello; n = hello_len / 2; break;                                 /* truncated, EOF */
        case 5: b = hello; n = hello_len / 2; shut = 0; break;                       /* truncated, silence */
        case 6: b = hello; n = hello_len; shut = 0; break;                           /* whole, silence */
        case 7: b = hello; n = 0; shut = 0; break;                                   /* trickled below */
        default:                                                                     /* hello, app data */
            memcpy(buf, hello, hello_len);
            memcpy(buf + hello_len, "\x17\x03\x03\x00\x40", 5);
            memcpy(buf + hello_len + 5, noise, 64);
            n = hello_len + 5 + 64;
            shut = 0;
        }
        fd = raw_hostile(cfg.rpcserver_port, b, n, shut);
        CHECK(fd >= 0);
        if (i == 7) { /* 20 ms a byte: the whole hello would take seconds */
            size_t k;
            for (k = 0; k < hello_len && raw_send_all(fd, hello + k, 1); k++) sleep_ms(20);
            CHECK(k < hello_len);
        }
        if (raw_wait_closed(fd, 5000 * slow_factor())) closed++;
        else fprintf(stderr, "  shape %d was not closed\n", i);
        close(fd);
        served += good_call(ch, (uint64_t)i);
    }
    CHECK(closed == SHAPES);
    CHECK(served == SHAPES);
    CHECK(wait_open_connections(srv, 1, 5000 * slow_factor())); /* only the good caller's */
    mprpc_server_get_stats(srv, &st);
    CHECK(st.protocol_errors >= SHAPES);
    mprpc_channel_free(ch);
    mprpc_server_free(srv);
    free(hello);
}

/* After a good handshake (and a served request), the peer sends what is no
 * TLS record of this session: a record that fails its MAC check, a plain
 * RPC frame, a record length past the TLS limit, a new ClientHello, a bad
 * record while a deferred call of its own is in flight. That connection
 * ends; the deferred call finishes into nothing; the good caller is served
 * and the open connections return to its one. */
static void garbage_records_after_a_good_handshake_end_only_that_connection(void)
{
    enum { SHAPES = 5 };
    static const uint8_t too_long[] = { 0x17, 0x03, 0x03, 0xff, 0xff, 0x00 };
    uint8_t bad_mac[5 + 64], *hello;
    size_t hello_len;
    mprpc_config cfg;
    mprpc_server *srv;
    mprpc_channel *ch;
    mprpc_buf req, slow, in;
    testsvc_EchoRequest rq = testsvc_EchoRequest_init_zero;
    mprpc_response_frame f;
    int i, closed = 0, served = 0, gone = 0;
    if (!(srv = hostile_provider(&cfg))) return;
    mprpc_channel_new(&ch, &cfg);
    hello = tls_client_hello(peer_tls_ctx, &hello_len);
    memcpy(bad_mac, "\x17\x03\x03\x00\x40", 5); /* application data, 64 bytes of noise */
    fill_noise(bad_mac + 5, 64, 77);
    mprpc_buf_init(&req);
    mprpc_buf_init(&slow);
    mprpc_buf_init(&in);
    set_payload(&rq, "before the garbage");
    mprpc_wire_encode_request(&req, 1u << 20, 1, "TestService", "Echo", testsvc_EchoRequest_fields, &rq);
    rq.delay_ms = 300;
    mprpc_wire_encode_request(&slow, 1u << 20, 2, "TestService", "Deferred", testsvc_EchoRequest_fields, &rq);
    for (i = 0; i < SHAPES; i++) {
        const uint8_t *b = i == 0 || i == 4 ? bad_mac : i == 1 ? req.data : i == 2 ? too_long : hello;
        size_t n = i == 0 || i == 4 ? sizeof bad_mac : i == 1 ? req.len : i == 2 ? sizeof too_long : hello_len;
        peer p;
        CHECK(peer_connect(&p, cfg.rpcserver_port));
        CHECK(peer_send_all(&p, req.data, req.len));
        CHECK_STATUS(peer_read_frame(&p, &in, &f, 5000), MPRPC_OK); /* the session works */
        in.pos = in.len = 0;
        if (i == 4) CHECK(peer_send_all(&p, slow.data, slow.len));
        sleep_ms(20);
        raw_send_all(p.fd, b, n); /* around the session, straight onto the socket */
        if (peer_wait_closed(&p, 5000 * slow_factor())) closed++;
        else fprintf(stderr, "  shape %d was not closed\n", i);
        served += good_call(ch, (uint64_t)i);
        gone += wait_open_connections(srv, 1, 5000 * slow_factor()); /* before our side closes */
        peer_close(&p);
    }
    CHECK(closed == SHAPES);
    CHECK(served == SHAPES);
    CHECK(gone == SHAPES);
    mprpc_buf_free(&req);
    mprpc_buf_free(&slow);
    mprpc_buf_free(&in);
    free(hello);
    mprpc_channel_free(ch);
    mprpc_server_free(srv);
}

/* Twice max_connections clients stop mid-handshake (half send a
 * ClientHello, half nothing). They hold the provider's connection slots only
 * until tls_handshake_timeout_ms: meanwhile the caller already connected is
 * served and a new caller gets an answer (BUSY, or served), never a hang;
 * afterwards every one is closed, the open connections are back to the
 * caller's one, and a new caller is served. */
static void clients_stopped_mid_handshake_hold_slots_only_until_the_timeout(void)
{
    enum { CROWD = 16 };
    mprpc_config cfg;
    mprpc_server *srv;
    mprpc_channel *ch, *late;
    mprpc_controller ctl;
    testsvc_EchoResponse rs;
    mprpc_status st;
    size_t hello_len;
    uint8_t *hello = tls_client_hello(peer_tls_ctx, &hello_len);
    int fds[CROWD], i, closed = 0;
    hostile_config(&cfg);
    cfg.max_connections = CROWD / 2;
    cfg.tls_handshake_timeout_ms = 500 * slow_factor();
    if (!(srv = start_provider(&cfg, 0))) { CHECK(0); free(hello); return; }
    mprpc_channel_new(&ch, &cfg);
    CHECK(good_call(ch, 1)); /* connected before the crowd */
    for (i = 0; i < CROWD; i++) fds[i] = raw_hostile(cfg.rpcserver_port, hello, i % 2 ? hello_len : 0, 0);
    CHECK(wait_open_connections(srv, (uint64_t)cfg.max_connections, 2000));
    CHECK(good_call(ch, 2));
    mprpc_channel_new(&late, &cfg);
    mprpc_controller_init(&ctl);
    ctl.timeout_ms = 5000;
    st = echo_call(late, "late", 3, &ctl, &rs);
    CHECK(st == MPRPC_OK || st == MPRPC_ERR_BUSY);
    if (st != MPRPC_OK && st != MPRPC_ERR_BUSY) fprintf(stderr, "  late caller: %s\n", mprpc_controller_error_text(&ctl));
    mprpc_channel_free(late);
    for (i = 0; i < CROWD; i++) {
        closed += fds[i] >= 0 && raw_wait_closed(fds[i], 5000 * slow_factor());
        if (fds[i] >= 0) close(fds[i]);
    }
    CHECK(closed == CROWD);
    CHECK(wait_open_connections(srv, 1, 5000 * slow_factor()));
    mprpc_channel_new(&late, &cfg);
    CHECK(good_call(late, 4));
    CHECK(good_call(ch, 5));
    mprpc_channel_free(late);
    mprpc_channel_free(ch);
    mprpc_server_free(srv);
    free(hello);
}

/* Every input of the provider fuzz corpus as raw bytes in place of the
 * handshake: refused, the connection closed, the good caller served after
 * each, nothing left open. */
static void provider_fuzz_corpus_in_place_of_the_handshake_is_refused(void)
{
    DIR *d = opendir("tests/fuzz/corpus/provider");
    corpus_input in;
    mprpc_config cfg;
    mprpc_server *srv;
    mprpc_channel *ch;
    int inputs = 0;
    CHECK(d != NULL);
    if (!d) return;
    if (!(srv = hostile_provider(&cfg))) { closedir(d); return; }
    mprpc_channel_new(&ch, &cfg);
    while (corpus_next(d, &in)) {
        int fd = in.size > 2 ? raw_hostile(cfg.rpcserver_port, in.data + 2, in.size - 2, 1) : -1;
        int closed = fd >= 0 && raw_wait_closed(fd, 5000 * slow_factor());
        int served = good_call(ch, (uint64_t)inputs) && wait_open_connections(srv, 1, 5000 * slow_factor());
        if (fd >= 0) close(fd);
        if (!closed || !served) fprintf(stderr, "  corpus input %s: closed %d, served after %d\n", in.name, closed, served);
        CHECK(closed && served);
        inputs++;
        free(in.data);
    }
    closedir(d);
    CHECK(inputs >= 20);
    mprpc_channel_free(ch);
    mprpc_server_free(srv);
}
/* The peer's next request as one TLS record, encrypted but not sent: the
 * session writes into memory for a moment, then to its socket again. */
static size_t sealed_record(peer *p, const mprpc_buf *req, uint8_t *out, size_t cap)
{
    BIO *sock = SSL_get_wbio(p->ssl), *mem = BIO_new(BIO_s_mem());
    char *data;
    long n;
    BIO_up_ref(sock);
    SSL_set0_wbio(p->ssl, mem);
    n = SSL_write(p->ssl, req->data, (int)req->len) == (int)req->len ? BIO_get_mem_data(mem, &data) : 0;
    if (n > 0 && (size_t)n <= cap) memcpy(out, data, (size_t)n);
    SSL_set0_wbio(p->ssl, sock); /* frees mem */
    return n > 0 && (size_t)n <= cap ? (size_t)n : 0;
}

static long process_cpu_ms(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000L + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1000;
}

/* Half a TLS record, then silence: the provider's session holds bytes it
 * read ahead, but they are no whole record, so only the socket can bring
 * the rest. The loop waits for it (idle: a loop that took held bytes for
 * readable ones would spin a core for the whole second), then answers the
 * request once the other half comes. */
static void half_a_record_waits_for_the_rest_without_spinning(void)
{
    mprpc_config cfg;
    mprpc_server *srv;
    mprpc_buf req, in;
    mprpc_response_frame f;
    testsvc_EchoRequest rq = testsvc_EchoRequest_init_zero;
    uint8_t rec[2048];
    size_t n;
    long cpu;
    int window = 1000 * slow_factor();
    peer p;
    if (!(srv = hostile_provider(&cfg))) return;
    mprpc_buf_init(&req);
    mprpc_buf_init(&in);
    set_payload(&rq, "sent in two halves");
    mprpc_wire_encode_request(&req, 1u << 20, 1, "TestService", "Echo", testsvc_EchoRequest_fields, &rq);
    CHECK(peer_connect(&p, cfg.rpcserver_port));
    n = sealed_record(&p, &req, rec, sizeof rec);
    CHECK(n > 10);
    CHECK(raw_send_all(p.fd, rec, n / 2));
    cpu = process_cpu_ms();
    sleep_ms(window);
    cpu = process_cpu_ms() - cpu;
    CHECK(cpu < window * 4 / 10);
    if (cpu >= window * 4 / 10) fprintf(stderr, "  %ld ms of CPU in %d ms of waiting\n", cpu, window);
    CHECK(raw_send_all(p.fd, rec + n / 2, n - n / 2));
    CHECK_STATUS(peer_read_frame(&p, &in, &f, 5000), MPRPC_OK);
    CHECK(f.header.status == MPRPC_OK && f.header.call_id == 1);
    peer_close(&p);
    mprpc_buf_free(&req);
    mprpc_buf_free(&in);
    mprpc_server_free(srv);
}
#endif

int main(void)
{
    int rc;
    signal(SIGPIPE, SIG_IGN);
#ifdef HOSTILE_OVER_TLS
    if (!tls_certs_make() || (peer_tls_ctx = tls_client_ctx()) == NULL) {
        CHECK(0);
        return test_summary("test_hostile_tls");
    }
#endif
    RUN(slow_client_is_closed_by_the_idle_timeout);
    RUN(busy_pipeliner_straddling_reads_is_not_timed_out);
    RUN(pipeliner_that_never_reads_is_paused_not_buffered);
    RUN(small_requests_with_large_replies_stay_within_pending_output);
    RUN(pipeline_depth_bounds_calls_in_flight);
    RUN(a_connection_paused_mid_read_is_resumed_from_what_it_holds);
    RUN(half_open_and_reset_connections_mid_frame);
    RUN(a_connection_closed_while_a_forked_child_holds_its_socket_is_forgotten);
    RUN(max_connections_is_enforced);
    RUN(connection_flood_past_the_fd_limit);
    RUN(accepting_pauses_without_descriptors_and_resumes);
    RUN(provider_fuzz_corpus_over_a_real_socket_leaves_the_provider_serving);
#ifdef HOSTILE_OVER_TLS
    RUN(handshake_garbage_of_every_shape_is_closed_and_the_provider_serves_on);
    RUN(garbage_records_after_a_good_handshake_end_only_that_connection);
    RUN(half_a_record_waits_for_the_rest_without_spinning);
    RUN(clients_stopped_mid_handshake_hold_slots_only_until_the_timeout);
    RUN(provider_fuzz_corpus_in_place_of_the_handshake_is_refused);
    SSL_CTX_free(peer_tls_ctx);
    tls_certs_remove();
    rc = test_summary("test_hostile_tls");
#else
    rc = test_summary("test_hostile");
#endif
    return rc;
}
