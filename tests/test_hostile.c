/* Hostile and broken peers, over real loopback sockets: slow clients,
 * clients that pipeline without reading, half-open and reset connections,
 * a flood of connections up to the fd limit, max_connections. During each,
 * a well-behaved caller on another connection gets its answers, and the
 * provider's connection buffers stay within what its configuration allows
 * (mprpc_server_stats.buffer_bytes). */
#define MPRPC_IMPLEMENTATION
#include "mprpc.h"
#include "test.h"
#include "support.h"

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

/* Reads one response frame into in (64 KiB at a time: replies here are
 * large); MPRPC_OK and f filled, or why not. */
static mprpc_status read_frame(int fd, mprpc_buf *in, mprpc_response_frame *f, int timeout_ms)
{
    for (;;) {
        struct pollfd pf;
        ssize_t k;
        mprpc_status st = mprpc_wire_decode_response(in->data + in->pos, mprpc_buf_readable(in), 1u << 24, f);
        if (st != MPRPC_AGAIN) return st;
        if (mprpc_buf_reserve(in, 65536, 1u << 26) != MPRPC_OK) return MPRPC_ERR_NO_MEMORY;
        pf.fd = fd;
        pf.events = POLLIN;
        if (poll(&pf, 1, timeout_ms) <= 0) return MPRPC_ERR_TIMEOUT;
        k = recv(fd, in->data + in->len, in->cap - in->len, 0);
        if (k <= 0) return MPRPC_ERR_CONNECTION_LOST;
        in->len += (size_t)k;
    }
}

static void set_nonblocking(int fd)
{
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
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
    int fd, sent = 0, answered = 0, closed = 0;
    test_config(&cfg);
    cfg.idle_timeout_ms = 500;
    srv = start_provider(&cfg, 0);
    CHECK(srv != NULL);
    if (!srv) return;
    mprpc_channel_new(&ch, &cfg);
    fd = raw_connect(cfg.rpcserver_port);
    CHECK(fd >= 0);
    /* a header_len of 20, then header bytes one at a time */
    while (sent < 40 && !closed) {
        uint8_t b = sent == 0 ? 20 : 0;
        struct pollfd pf;
        if (send(fd, &b, 1, MSG_NOSIGNAL) != 1) { closed = 1; break; }
        sent++;
        answered += good_call(ch, (uint64_t)sent);
        pf.fd = fd;
        pf.events = POLLIN;
        if (poll(&pf, 1, 100) > 0) closed = raw_wait_closed(fd, 0) || 1;
    }
    CHECK(closed);
    CHECK(sent < 40); /* 4 s of trickle: well past the 0.5 s limit */
    CHECK(answered == sent);
    close(fd);
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
    int fd, i, answered = 0;
    size_t frame, off = 0;
    test_config(&cfg);
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
    fd = raw_connect(cfg.rpcserver_port);
    /* 1.5 frames every 20 ms: every read ends mid-frame, for ~800 ms */
    while (off < out.len) {
        size_t n = frame + frame / 2;
        if (n > out.len - off) n = out.len - off;
        if (!raw_send_all(fd, out.data + off, n)) break;
        off += n;
        sleep_ms(20);
    }
    for (i = 0; i < 60; i++) {
        mprpc_response_frame f;
        if (read_frame(fd, &in, &f, 3000) != MPRPC_OK) break;
        answered += f.header.status == 0;
        mprpc_buf_consume(&in, f.frame_size);
    }
    CHECK(off == out.len);
    CHECK(answered == 60);
    close(fd);
    mprpc_buf_free(&out);
    mprpc_buf_free(&in);
    mprpc_server_free(srv);
}

/* Sends as many copies of the frame in `req` as the socket takes within
 * `ms`, never reading; returns the number of whole frames sent. */
static size_t pipeline_without_reading(int fd, const mprpc_buf *req, size_t max_frames, int ms)
{
    size_t frames = 0, off = 0, len = mprpc_buf_readable(req);
    int idle = 0;
    set_nonblocking(fd);
    while (frames < max_frames && idle < ms) {
        ssize_t k = send(fd, req->data + req->pos + off, len - off, MSG_NOSIGNAL);
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
    int fd, i, ok = 0;
    test_config(&cfg);
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
    fd = raw_connect(cfg.rpcserver_port);
    sent = pipeline_without_reading(fd, &req, 200000, 300);
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
        if (read_frame(fd, &in, &f, 2000) != MPRPC_OK) break;
        answered += f.header.status == 0;
        if (f.header.status != 0) fprintf(stderr, "  status %d: %.*s\n", (int)f.header.status, (int)f.header.error_text.size, (const char *)f.header.error_text.bytes);
        mprpc_buf_consume(&in, f.frame_size);
        if (answered == sent) break;
    }
    CHECK(answered == sent);
    if (answered != sent) fprintf(stderr, "  %zu of %zu answered\n", answered, sent);
    close(fd);
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
    int fd, i, answered = 0;
    test_config(&cfg);
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
    fd = raw_connect(cfg.rpcserver_port);
    CHECK(raw_send_all(fd, req.data, req.len)); /* 8 KiB: one read, 200 MiB of replies */
    sleep_ms(300);
    mprpc_server_get_stats(srv, &st);
    CHECK(st.buffer_bytes <= cfg.max_pending_output + 2 * (1u << 20) + 256 * 1024);
    if (st.buffer_bytes > cfg.max_pending_output + 2 * (1u << 20) + 256 * 1024)
        fprintf(stderr, "  buffer_bytes %llu\n", (unsigned long long)st.buffer_bytes);
    CHECK(good_call(ch, 1));
    for (i = 0; i < 200; i++) {
        mprpc_response_frame f;
        if (read_frame(fd, &in, &f, 5000) != MPRPC_OK) break;
        answered += f.header.status == 0 && f.header.body_size > (1u << 20);
        if (f.header.status != 0) fprintf(stderr, "  status %d: %.*s\n", (int)f.header.status, (int)f.header.error_text.size, (const char *)f.header.error_text.bytes);
        mprpc_buf_consume(&in, f.frame_size);
    }
    CHECK(answered == 200);
    if (answered != 200) fprintf(stderr, "  %d of 200 answered\n", answered);
    close(fd);
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
    int fd, i, answered = 0;
    test_config(&cfg);
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
    fd = raw_connect(cfg.rpcserver_port);
    CHECK(raw_send_all(fd, out.data, out.len));
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
        if (read_frame(fd, &in, &f, 5000) != MPRPC_OK) break;
        answered += f.header.status == 0;
        mprpc_buf_consume(&in, f.frame_size);
    }
    CHECK(answered == 12);
    close(fd);
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
    struct linger lg;
    int fd, i, sent;
    if (!(srv = provider_up(&cfg))) return;
    mprpc_channel_new(&ch, &cfg);
    CHECK(good_call(ch, 1));
    mprpc_buf_init(&out);
    mprpc_buf_init(&in);
    set_payload(&rq, "half");
    mprpc_wire_encode_request(&out, 1u << 20, 1, "TestService", "Echo", testsvc_EchoRequest_fields, &rq);
    /* half a frame, then the write side closes */
    fd = raw_connect(cfg.rpcserver_port);
    CHECK(raw_send_all(fd, out.data, out.len / 2));
    shutdown(fd, SHUT_WR);
    CHECK(raw_wait_closed(fd, 5000));
    close(fd);
    /* two whole frames, then the write side closes: both answered */
    mprpc_wire_encode_request(&out, 1u << 20, 2, "TestService", "Echo", testsvc_EchoRequest_fields, &rq);
    fd = raw_connect(cfg.rpcserver_port);
    CHECK(raw_send_all(fd, out.data, out.len));
    shutdown(fd, SHUT_WR);
    CHECK_STATUS(read_frame(fd, &in, &f, 5000), MPRPC_OK);
    CHECK(f.header.call_id == 1);
    mprpc_buf_consume(&in, f.frame_size);
    CHECK_STATUS(read_frame(fd, &in, &f, 5000), MPRPC_OK);
    CHECK(f.header.call_id == 2);
    mprpc_buf_consume(&in, f.frame_size);
    CHECK(raw_wait_closed(fd, 5000));
    close(fd);
    /* a reset in the middle of a frame */
    lg.l_onoff = 1;
    lg.l_linger = 0;
    for (i = 0; i < 20; i++) {
        fd = raw_connect(cfg.rpcserver_port);
        raw_send_all(fd, out.data, (size_t)(i + 1) * out.len / 21);
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        close(fd);
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
    fd = raw_connect(cfg.rpcserver_port);
    sent = (int)pipeline_without_reading(fd, &out, 100000, 200);
    CHECK(sent > 100);
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
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
    struct linger lg;
    pid_t child;
    int fd, status;
    if (!(srv = provider_up(&cfg))) return;
    mprpc_channel_new(&ch, &cfg);
    fd = raw_connect(cfg.rpcserver_port);
    mprpc_buf_init(&out);
    mprpc_buf_init(&in);
    set_payload(&rq, "before the fork");
    mprpc_wire_encode_request(&out, 1u << 20, 1, "TestService", "Echo", testsvc_EchoRequest_fields, &rq);
    CHECK(raw_send_all(fd, out.data, out.len));
    CHECK_STATUS(raw_read_response(fd, &in, &f, 2000), MPRPC_OK); /* the provider holds its side now */
    mprpc_buf_free(&out);
    mprpc_buf_free(&in);
    child = fork(); /* holds a copy of every descriptor, the provider's side of fd included */
    if (child == 0) {
        struct timespec ts = {0, 600 * 1000000L};
        nanosleep(&ts, NULL);
        _exit(0);
    }
    CHECK(child > 0);
    CHECK(raw_send_all(fd, garbage, sizeof garbage)); /* the provider shuts its side ... */
    shutdown(fd, SHUT_WR);                              /* ... sees our end, closes, frees it */
    sleep_ms(150);
    lg.l_onoff = 1;
    lg.l_linger = 0;
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);                                          /* a reset: an event on the child's copy */
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
    int fds[4], extra, i;
    test_config(&cfg);
    cfg.max_connections = 4;
    srv = start_provider(&cfg, 0);
    CHECK(srv != NULL);
    if (!srv) return;
    mprpc_buf_init(&out);
    mprpc_buf_init(&in);
    mprpc_wire_encode_request(&out, 1u << 20, 1, "TestService", "Echo", testsvc_EchoRequest_fields, &rq);
    for (i = 0; i < 4; i++) {
        fds[i] = raw_connect(cfg.rpcserver_port);
        CHECK(raw_send_all(fds[i], out.data, out.len));
        CHECK_STATUS(read_frame(fds[i], &in, &f, 5000), MPRPC_OK);
        in.pos = in.len = 0;
    }
    extra = raw_connect(cfg.rpcserver_port); /* the kernel accepts; the provider refuses */
    CHECK(extra >= 0);
    CHECK(raw_send_all(extra, out.data, out.len));
    CHECK_STATUS(read_frame(extra, &in, &f, 5000), MPRPC_OK);
    CHECK_STATUS(f.header.status, MPRPC_ERR_BUSY);
    CHECK(f.header.call_id == 1);
    CHECK(f.header.error_text.size > 0 &&
          strstr((const char *)f.header.error_text.bytes, "provider at max_connections (4): not executed"));
    in.pos = in.len = 0;
    CHECK(raw_wait_closed(extra, 5000));
    close(extra);
    mprpc_server_get_stats(srv, &st);
    CHECK(st.connections_rejected == 1);
    CHECK(st.connections_open == 4);
    close(fds[0]);
    CHECK(wait_open_connections(srv, 3, 5000));
    extra = raw_connect(cfg.rpcserver_port);
    CHECK(raw_send_all(extra, out.data, out.len));
    CHECK_STATUS(read_frame(extra, &in, &f, 5000), MPRPC_OK);
    close(extra);
    for (i = 1; i < 4; i++) close(fds[i]);
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
        test_config(&cfg);
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
    test_config(&cfg);
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
        test_config(&cfg);
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
    test_config(&cfg);
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

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    RUN(slow_client_is_closed_by_the_idle_timeout);
    RUN(busy_pipeliner_straddling_reads_is_not_timed_out);
    RUN(pipeliner_that_never_reads_is_paused_not_buffered);
    RUN(small_requests_with_large_replies_stay_within_pending_output);
    RUN(pipeline_depth_bounds_calls_in_flight);
    RUN(half_open_and_reset_connections_mid_frame);
    RUN(a_connection_closed_while_a_forked_child_holds_its_socket_is_forgotten);
    RUN(max_connections_is_enforced);
    RUN(connection_flood_past_the_fd_limit);
    RUN(accepting_pauses_without_descriptors_and_resumes);
    return test_summary("test_hostile");
}
