/* mprpc_bench.c - closed-loop load generator for length-framed echo servers.
 *
 * C connections are spread round-robin over T threads, each running its own
 * epoll loop.  Every connection keeps D calls in flight (pipelined): each
 * reply is checked (echoed payload == sent payload), its latency recorded,
 * and a new call is sent at once.  Calls completing inside the measured
 * window are counted; see bench_common.h for options and the RESULT line.
 *
 * The wire format is a plug-in (struct bench_proto): one function builds a
 * request frame, one tries to parse a response frame from the bytes
 * received so far.  "raw" = 4-byte LE length + payload (raw_echo_server);
 * "mprpc" = mprpc.h framing (mprpc_wire_encode_request /
 * mprpc_wire_decode_response) calling EchoService.Echo, replies matched by
 * call id, so D > 1 may be answered in any order.
 *
 * Five clients are not plug-ins (chosen with --proto or --system NAME;
 * depth 1, -t ignored):
 *   "raw-blocking"   C threads, each with its own blocking connection to
 *                    raw_echo_server: send one raw frame, recv the echo, again
 *                    (the floor of any thread-per-call blocking API).
 *   "mprpc-channel"  what an application does with the blocking API: C
 *                    threads sharing ONE mprpc_channel (default settings),
 *                    each calling MPRPC_CALL in a loop.
 *   "mprpc-async"    C calls in flight through ONE channel with the async API
 *                    (MPRPC_CALL_ASYNC): C slots, each completion records its
 *                    latency and issues the slot's next call from inside the
 *                    callback.  Built only when mprpc.h has the async API
 *                    (--list-protos tells).
 *   "connect"        new connections per second: C threads, each looping
 *                    connect, ONE EchoService.Echo call in the "mprpc"
 *                    frame, close (against mprpc_echo_server).
 *   "tls-connect"    the same with a full TLS 1.3 handshake before the call
 *                    (against mprpc_echo_server_tls).  Both are built only
 *                    with MPRPC_TLS (mprpc_bench_tls): one binary runs the
 *                    same loop with and without TLS.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MPRPC_IMPLEMENTATION
#define MPRPC_STATIC
#include "mprpc.h"
#include "echo.pb.h"

#include "bench_common.h"

#ifdef MPRPC_TLS
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#endif

/* ======================================================================
 * Protocol plug-ins
 * ====================================================================== */

enum { PROTO_ERROR = -1, PROTO_NEED_MORE = 0, PROTO_OK = 1 };

/* call_id value a decoder returns when the wire carries no id: the reply
 * then belongs to the oldest call in flight on that connection. */
#define PROTO_NO_ID UINT32_MAX

typedef struct bench_proto {
    const char *name;
    /* Upper bound of the encoded size of a request with a len-byte payload. */
    size_t (*max_request_size)(size_t len);
    /* Writes one request frame into buf (cap bytes); returns its length, 0 on error. */
    size_t (*encode_request)(uint8_t *buf, size_t cap, uint32_t call_id,
                             const uint8_t *payload, size_t len);
    /* Tries to parse one response frame from buf[0..len).  On PROTO_OK sets
     * *consumed (frame length), *call_id (or PROTO_NO_ID) and the payload. */
    int (*decode_response)(const uint8_t *buf, size_t len, size_t *consumed,
                           uint32_t *call_id, const uint8_t **payload, size_t *payload_len);
} bench_proto;

/* ---- raw: 4-byte little-endian length + payload ---------------------- */

#define RAW_MAX_FRAME (64u << 20)

static size_t raw_max_request_size(size_t len)
{
    return 4 + len;
}

static size_t raw_encode_request(uint8_t *buf, size_t cap, uint32_t call_id,
                                 const uint8_t *payload, size_t len)
{
    (void)call_id;
    if (cap < 4 + len || len > RAW_MAX_FRAME)
        return 0;
    buf[0] = (uint8_t)len;
    buf[1] = (uint8_t)(len >> 8);
    buf[2] = (uint8_t)(len >> 16);
    buf[3] = (uint8_t)(len >> 24);
    memcpy(buf + 4, payload, len);
    return 4 + len;
}

static int raw_decode_response(const uint8_t *buf, size_t len, size_t *consumed,
                               uint32_t *call_id, const uint8_t **payload, size_t *payload_len)
{
    uint32_t n;
    if (len < 4)
        return PROTO_NEED_MORE;
    n = (uint32_t)buf[0] | (uint32_t)buf[1] << 8 | (uint32_t)buf[2] << 16 |
        (uint32_t)buf[3] << 24;
    if (n > RAW_MAX_FRAME)
        return PROTO_ERROR;
    if (len - 4 < n)
        return PROTO_NEED_MORE;
    *consumed = 4 + (size_t)n;
    *call_id = PROTO_NO_ID;
    *payload = buf + 4;
    *payload_len = n;
    return PROTO_OK;
}

/* ---- mprpc: mprpc.h framing (mprpc_wire_*), EchoService.Echo -------- */

/* Bounds for a client: replies up to 64 MiB (the largest -s is 16 MiB). */
#define MPRPC_BENCH_MAX_MESSAGE (64u << 20)

#ifdef mprpcbench_EchoRequest_size
#error "bench/echo.options must declare the payload FT_CALLBACK (mprpc_bench encodes without copies)"
#endif

static size_t mprpc_max_request_size(size_t len)
{
    /* prefix + the largest RpcHeader + tag + varint length + payload */
    return MPRPC_FRAME_PREFIX + mprpc_RpcHeader_size + 1 + 10 + len;
}

/* The frame is built in place: buf (cap >= mprpc_max_request_size) is
 * wrapped in an mprpc_buf that already has the room, so mprpc_buf_reserve
 * never reallocates it, and the payload goes out through
 * mprpc_bytes_encode without an intermediate copy. */
static size_t mprpc_encode_request(uint8_t *buf, size_t cap, uint32_t call_id,
                                   const uint8_t *payload, size_t len)
{
    mprpc_buf b;
    mprpc_bytes bytes;
    mprpcbench_EchoRequest rq = mprpcbench_EchoRequest_init_zero;
    if (cap < mprpc_max_request_size(len))
        return 0;
    b.data = buf;
    b.pos = b.len = 0;
    b.cap = cap;
    bytes.data = payload;
    bytes.size = len;
    rq.payload.funcs.encode = mprpc_bytes_encode;
    rq.payload.arg = &bytes;
    if (mprpc_wire_encode_request(&b, MPRPC_BENCH_MAX_MESSAGE, call_id, "EchoService", "Echo",
                                  mprpcbench_EchoRequest_fields, &rq) != MPRPC_OK)
        return 0;
    if (b.data != buf) {   /* cannot happen: the room was there */
        fprintf(stderr, "mprpc_encode_request: buffer was reallocated\n");
        abort();
    }
    return b.len;
}

/* An error reply (status != OK) or an undecodable body is returned as a
 * reply with no payload, which the caller counts as an error. */
static int mprpc_decode_response(const uint8_t *buf, size_t len, size_t *consumed,
                                 uint32_t *call_id, const uint8_t **payload,
                                 size_t *payload_len)
{
    mprpc_response_frame f;
    mprpc_bytes bytes = {NULL, 0};
    mprpcbench_EchoResponse rs = mprpcbench_EchoResponse_init_zero;
    pb_istream_t is;
    mprpc_status st = mprpc_wire_decode_response(buf, len, MPRPC_BENCH_MAX_MESSAGE, &f);
    if (st == MPRPC_AGAIN)
        return PROTO_NEED_MORE;
    if (st != MPRPC_OK)
        return PROTO_ERROR;
    *consumed = f.frame_size;
    *call_id = (uint32_t)f.header.call_id;
    *payload = NULL;
    *payload_len = SIZE_MAX;
    if (f.header.status != MPRPC_OK)
        return PROTO_OK;
    rs.payload.funcs.decode = mprpc_bytes_decode;
    rs.payload.arg = &bytes;
    is = pb_istream_from_buffer(f.body, f.header.body_size);
    if (!pb_decode(&is, mprpcbench_EchoResponse_fields, &rs))
        return PROTO_OK;
    *payload = bytes.data;
    *payload_len = bytes.size;
    return PROTO_OK;
}

static const bench_proto protos[] = {
    {"raw", raw_max_request_size, raw_encode_request, raw_decode_response},
    {"mprpc", mprpc_max_request_size, mprpc_encode_request, mprpc_decode_response},
};

#define NPROTOS (sizeof protos / sizeof protos[0])

/* ======================================================================
 * Load generator
 * ====================================================================== */

typedef struct inflight {
    uint32_t call_id;
    uint64_t t_send_ns;
} inflight;

typedef struct conn {
    int fd;
    int dead;
    uint32_t next_id;
    uint8_t *in;
    size_t in_len, in_cap;
    uint8_t *out;
    size_t out_off, out_len, out_cap;
    int want_out;               /* EPOLLOUT registered */
    inflight *ring;             /* FIFO of calls in flight, capacity depth */
    unsigned head, count;
} conn;

typedef struct worker {
    pthread_t th;
    int ep;
    conn **conns;
    int nconns;
    uint64_t errors;
    hist h;
} worker;

static bench_opts opts;
static const bench_proto *proto;
static const uint8_t *pattern;
static size_t max_req;
static int phase = BENCH_WARMUP;

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        die("malloc");
    return p;
}

static void grow(uint8_t **buf, size_t *cap, size_t need)
{
    size_t n = *cap ? *cap : 65536;
    if (need <= *cap)
        return;
    while (n < need)
        n *= 2;
    *buf = (uint8_t *)realloc(*buf, n);
    if (!*buf)
        die("realloc");
    *cap = n;
}

static void conn_fail(worker *w, conn *c, const char *why)
{
    if (c->dead)
        return;
    fprintf(stderr, "conn fd %d: %s; %u calls in flight dropped\n", c->fd, why, c->count);
    w->errors++;
    c->dead = 1;
    close(c->fd);
}

/* Appends one request to the output buffer and records it in flight. */
static void queue_call(conn *c, uint64_t now)
{
    uint32_t id = c->next_id++;
    inflight *f;
    size_t n;

    grow(&c->out, &c->out_cap, c->out_len + max_req);
    n = proto->encode_request(c->out + c->out_len, c->out_cap - c->out_len, id,
                              bench_payload(pattern, id), opts.size);
    if (n == 0) {
        fprintf(stderr, "%s: encode_request failed\n", proto->name);
        exit(1);
    }
    c->out_len += n;
    f = &c->ring[(c->head + c->count) % (unsigned)opts.depth];
    f->call_id = id;
    f->t_send_ns = now;
    c->count++;
}

static int set_want_out(worker *w, conn *c, int want)
{
    struct epoll_event e;
    if (c->want_out == want)
        return 0;
    e.events = EPOLLIN | (want ? EPOLLOUT : 0u);
    e.data.ptr = c;
    c->want_out = want;
    return epoll_ctl(w->ep, EPOLL_CTL_MOD, c->fd, &e);
}

static void flush_out(worker *w, conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            conn_fail(w, c, strerror(errno));
            return;
        }
        c->out_off += (size_t)n;
    }
    if (c->out_off == c->out_len)
        c->out_off = c->out_len = 0;
    if (set_want_out(w, c, c->out_len != 0) < 0)
        conn_fail(w, c, "epoll_ctl");
}

/* Takes the in-flight entry for call_id (or the oldest for PROTO_NO_ID). */
static int take_inflight(conn *c, uint32_t call_id, inflight *out)
{
    unsigned d = (unsigned)opts.depth, i;
    if (c->count == 0)
        return -1;
    if (call_id != PROTO_NO_ID) {
        for (i = 0; i < c->count; i++)
            if (c->ring[(c->head + i) % d].call_id == call_id)
                break;
        if (i == c->count)
            return -1;
        if (i != 0) {   /* order is irrelevant with ids: swap with the head */
            inflight t = c->ring[c->head];
            c->ring[c->head] = c->ring[(c->head + i) % d];
            c->ring[(c->head + i) % d] = t;
        }
    }
    *out = c->ring[c->head];
    c->head = (c->head + 1) % d;
    c->count--;
    return 0;
}

static void on_readable(worker *w, conn *c)
{
    size_t pos = 0;
    ssize_t n;
    uint64_t now;
    int ph, completed = 0;

    grow(&c->in, &c->in_cap, c->in_len + 65536);
    n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
    if (n <= 0) {
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        conn_fail(w, c, n == 0 ? "closed by server" : strerror(errno));
        return;
    }
    c->in_len += (size_t)n;
    now = bench_now_ns();
    ph = bench_phase_get(&phase);

    for (;;) {
        size_t used = 0, plen = 0;
        uint32_t id = 0;
        const uint8_t *payload = NULL;
        inflight f;
        int rc = proto->decode_response(c->in + pos, c->in_len - pos, &used, &id, &payload,
                                        &plen);
        if (rc == PROTO_NEED_MORE)
            break;
        if (rc != PROTO_OK) {
            conn_fail(w, c, "undecodable response");
            return;
        }
        pos += used;
        if (take_inflight(c, id, &f) < 0) {
            conn_fail(w, c, "response for no call in flight");
            return;
        }
        completed++;
        if (plen != opts.size || memcmp(payload, bench_payload(pattern, f.call_id), plen) != 0)
            w->errors++;
        else if (ph == BENCH_MEASURE)
            hist_record(&w->h, now - f.t_send_ns);
    }
    memmove(c->in, c->in + pos, c->in_len - pos);
    c->in_len -= pos;

    if (ph == BENCH_STOP || completed == 0)
        return;
    while (completed--)
        queue_call(c, now);
    flush_out(w, c);
}

static void *worker_main(void *arg)
{
    worker *w = (worker *)arg;
    struct epoll_event ev[256];
    uint64_t now = bench_now_ns();
    int i;

    for (i = 0; i < w->nconns; i++) {
        conn *c = w->conns[i];
        int k;
        for (k = 0; k < opts.depth; k++)
            queue_call(c, now);
        flush_out(w, c);
    }
    while (bench_phase_get(&phase) != BENCH_STOP) {
        int n = epoll_wait(w->ep, ev, 256, 50);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        for (i = 0; i < n; i++) {
            conn *c = (conn *)ev[i].data.ptr;
            if (c->dead)
                continue;
            if (ev[i].events & EPOLLOUT)
                flush_out(w, c);
            if (!c->dead && (ev[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
                on_readable(w, c);
        }
    }
    return NULL;
}

static conn *conn_open(const struct sockaddr_in *addr)
{
    int one = 1;
    conn *c = (conn *)calloc(1, sizeof *c);
    if (!c)
        die("calloc");
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        die("socket");
    if (connect(c->fd, (const struct sockaddr *)addr, sizeof *addr) < 0)
        die("connect");
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK) < 0)
        die("fcntl");
    c->ring = (inflight *)xmalloc((size_t)opts.depth * sizeof *c->ring);
    return c;
}

/* ======================================================================
 * mprpc-channel: the public blocking API, C threads sharing one channel
 * ====================================================================== */

/* A channel with default settings calling the provider at host:port
 * directly; exits on a bad setting. */
static mprpc_channel *bench_channel_new(const char *who)
{
    mprpc_config cfg;
    mprpc_channel *ch;
    char port[16];

    snprintf(port, sizeof port, "%d", opts.port);
    mprpc_config_init(&cfg);
    if (mprpc_config_set(&cfg, "rpcserver_ip", opts.host) != MPRPC_OK ||
        mprpc_config_set(&cfg, "rpcserver_port", port) != MPRPC_OK) {
        fprintf(stderr, "%s: %s\n", who, cfg.error);
        exit(2);
    }
    cfg.max_message_size = MPRPC_BENCH_MAX_MESSAGE;
#ifdef MPRPC_TLS
    /* mprpc-tls: the provider's certificate checked against the CA scripts/tls-certs.sh made */
    if (getenv("MPRPC_BENCH_TLS_DIR")) {
        cfg.tls_enable = 1;
        snprintf(cfg.tls_ca_file, sizeof cfg.tls_ca_file, "%s/ca.crt", getenv("MPRPC_BENCH_TLS_DIR"));
    }
#endif
    if (mprpc_channel_new(&ch, &cfg) != MPRPC_OK) {
        fprintf(stderr, "%s: mprpc_channel_new failed\n", who);
        exit(1);
    }
    return ch;
}

typedef struct chan_worker {
    pthread_t th;
    int index;
    mprpc_channel *ch;          /* shared by all workers */
    uint64_t errors;
    hist h;
} chan_worker;

static void *chan_worker_main(void *arg)
{
    chan_worker *w = (chan_worker *)arg;
    mprpc_controller ctl;
    uint8_t *sink_buf = (uint8_t *)xmalloc(opts.size + 1);
    uint32_t id = (uint32_t)w->index * 7919u;

    mprpc_controller_init(&ctl);
    while (bench_phase_get(&phase) != BENCH_STOP) {
        mprpcbench_EchoRequest rq = mprpcbench_EchoRequest_init_zero;
        mprpcbench_EchoResponse rs = mprpcbench_EchoResponse_init_zero;
        mprpc_bytes out;
        mprpc_bytes_sink in;
        const uint8_t *payload = bench_payload(pattern, id);
        uint64_t t0, t1;

        out.data = payload;
        out.size = opts.size;
        rq.payload.funcs.encode = mprpc_bytes_encode;
        rq.payload.arg = &out;
        in.data = sink_buf;
        in.capacity = opts.size + 1;
        in.size = 0;
        rs.payload.funcs.decode = mprpc_bytes_copy_decode;
        rs.payload.arg = &in;
        t0 = bench_now_ns();
        MPRPC_CALL(w->ch, "EchoService", "Echo", mprpcbench_EchoRequest, &rq,
                   mprpcbench_EchoResponse, &rs, &ctl);
        t1 = bench_now_ns();
        if (mprpc_controller_failed(&ctl)) {
            if (w->errors++ < 5)
                fprintf(stderr, "call failed: %s: %s\n", mprpc_status_name(ctl.status),
                        mprpc_controller_error_text(&ctl));
        } else if (in.size != opts.size || memcmp(sink_buf, payload, in.size) != 0) {
            w->errors++;
        } else if (bench_phase_get(&phase) == BENCH_MEASURE) {
            hist_record(&w->h, t1 - t0);
        }
        id++;
    }
    free(sink_buf);
    return NULL;
}

static int run_channel(void)
{
    chan_worker *ws;
    mprpc_channel *ch;
    hist *total;
    uint64_t errors = 0;
    bench_window win;
    int t;

    opts.threads = opts.conns;      /* T = C threads, one call in flight each */
    if (opts.depth != 1) {
        fprintf(stderr, "mprpc-channel: the blocking channel has one call in flight (-q 1)\n");
        return 2;
    }
    ch = bench_channel_new("mprpc-channel");
    ws = (chan_worker *)calloc((size_t)opts.conns, sizeof *ws);
    if (!ws)
        die("calloc");
    for (t = 0; t < opts.conns; t++) {
        chan_worker *w = &ws[t];
        w->index = t;
        w->ch = ch;
        hist_init(&w->h);
        if (pthread_create(&w->th, NULL, chan_worker_main, w) != 0)
            die("pthread_create");
    }
    bench_run_window(&opts, &phase, &win);
    total = (hist *)xmalloc(sizeof *total);
    hist_init(total);
    for (t = 0; t < opts.conns; t++) {
        pthread_join(ws[t].th, NULL);
        hist_merge(total, &ws[t].h);
        errors += ws[t].errors;
    }
    mprpc_channel_free(ch);
    bench_report(&opts, total, errors, &win);
    return 0;
}

/* ======================================================================
 * raw-blocking: the blocking baseline, one thread + connection per call in
 * flight, plain send/recv of raw frames
 * ====================================================================== */

/* A reply that does not arrive within this bound counts as an error and
 * ends the thread (a hung server must not hang the client). */
#define RAW_BLOCKING_RECV_TIMEOUT_S 5

typedef struct rb_worker {
    pthread_t th;
    int index;
    int fd;
    uint64_t errors;
    hist h;
} rb_worker;

static int rb_send_all(int fd, const uint8_t *p, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Receives one frame into buf (cap >= 4 + opts.size): the length header,
 * then the payload.  Returns the frame length, or 0 on error/EOF/timeout. */
static size_t rb_recv_frame(int fd, uint8_t *buf, size_t cap)
{
    size_t have = 0, want = 4;
    int header = 1;
    while (have < want) {
        ssize_t n = recv(fd, buf + have, cap - have, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return 0;
        have += (size_t)n;
        if (header && have >= 4) {
            uint32_t len = (uint32_t)buf[0] | (uint32_t)buf[1] << 8 |
                           (uint32_t)buf[2] << 16 | (uint32_t)buf[3] << 24;
            if ((size_t)len > cap - 4)
                return 0;   /* longer than anything we sent */
            want = 4 + (size_t)len;
            header = 0;
        }
    }
    return have == want ? want : 0;   /* more = a reply we did not ask for */
}

static void *rb_worker_main(void *arg)
{
    rb_worker *w = (rb_worker *)arg;
    size_t cap = raw_max_request_size(opts.size);
    uint8_t *out = (uint8_t *)xmalloc(cap);
    uint8_t *in = (uint8_t *)xmalloc(cap);
    uint32_t id = (uint32_t)w->index * 7919u;

    while (bench_phase_get(&phase) != BENCH_STOP) {
        const uint8_t *payload = bench_payload(pattern, id);
        size_t n = raw_encode_request(out, cap, id, payload, opts.size), got;
        uint64_t t0, t1;

        t0 = bench_now_ns();
        if (n == 0 || rb_send_all(w->fd, out, n) < 0) {
            fprintf(stderr, "raw-blocking: send: %s\n", strerror(errno));
            w->errors++;
            break;
        }
        errno = 0;
        got = rb_recv_frame(w->fd, in, cap);
        t1 = bench_now_ns();
        if (got == 0) {
            fprintf(stderr, "raw-blocking: no complete reply (%s)\n",
                    errno ? strerror(errno) : "closed by server");
            w->errors++;
            break;
        }
        if (got - 4 != opts.size || memcmp(in + 4, payload, opts.size) != 0)
            w->errors++;
        else if (bench_phase_get(&phase) == BENCH_MEASURE)
            hist_record(&w->h, t1 - t0);
        id++;
    }
    free(out);
    free(in);
    return NULL;
}

static int run_raw_blocking(const struct sockaddr_in *addr)
{
    rb_worker *ws;
    hist *total;
    uint64_t errors = 0;
    bench_window win;
    struct timeval tv;
    int t, one = 1;

    opts.threads = opts.conns;      /* T = C: one thread per connection */
    if (opts.depth != 1) {
        fprintf(stderr, "raw-blocking: one call in flight per connection (-q 1)\n");
        return 2;
    }
    tv.tv_sec = RAW_BLOCKING_RECV_TIMEOUT_S;
    tv.tv_usec = 0;
    ws = (rb_worker *)calloc((size_t)opts.conns, sizeof *ws);
    if (!ws)
        die("calloc");
    for (t = 0; t < opts.conns; t++) {
        rb_worker *w = &ws[t];
        w->index = t;
        hist_init(&w->h);
        w->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (w->fd < 0)
            die("socket");
        if (connect(w->fd, (const struct sockaddr *)addr, sizeof *addr) < 0)
            die("connect");
        setsockopt(w->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (setsockopt(w->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) < 0 ||
            setsockopt(w->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) < 0)
            die("setsockopt");
    }
    for (t = 0; t < opts.conns; t++)
        if (pthread_create(&ws[t].th, NULL, rb_worker_main, &ws[t]) != 0)
            die("pthread_create");
    bench_run_window(&opts, &phase, &win);
    total = (hist *)xmalloc(sizeof *total);
    hist_init(total);
    for (t = 0; t < opts.conns; t++) {
        pthread_join(ws[t].th, NULL);
        close(ws[t].fd);
        hist_merge(total, &ws[t].h);
        errors += ws[t].errors;
    }
    bench_report(&opts, total, errors, &win);
    return 0;
}

/* ======================================================================
 * mprpc-async: C calls in flight through one channel (async API)
 * ====================================================================== */

#ifdef MPRPC_CALL_ASYNC
#define HAVE_MPRPC_ASYNC 1

/* How long to wait, after the measured window, for the calls still in
 * flight; then the channel is freed, which completes them. */
#define ASYNC_DRAIN_TIMEOUT_S 10

/* One call in flight: everything it needs lives here until done runs. */
typedef struct async_slot {
    int index;
    uint32_t id;
    uint64_t t_send_ns;
    mprpcbench_EchoRequest rq;
    mprpcbench_EchoResponse rs;
    mprpc_bytes out;
    mprpc_bytes_sink in;
    uint8_t *sink_buf;
    mprpc_controller ctl;
    uint64_t errors;
    hist h;                     /* per slot: no sharing, whichever thread completes */
} async_slot;

static mprpc_channel *async_ch;
static pthread_mutex_t async_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t async_cv = PTHREAD_COND_INITIALIZER;
static int async_active;        /* slots with a call in flight, under async_mu */

static void async_slot_finished(void)
{
    pthread_mutex_lock(&async_mu);
    if (--async_active == 0)
        pthread_cond_broadcast(&async_cv);
    pthread_mutex_unlock(&async_mu);
}

static void async_done(mprpc_controller *ctl, void *response, void *user);

/* Issues the slot's next call; on a synchronous failure (done will not run)
 * counts an error and retires the slot. */
static void async_issue(async_slot *sl)
{
    mprpc_status st;
    sl->rq = (mprpcbench_EchoRequest)mprpcbench_EchoRequest_init_zero;
    sl->rs = (mprpcbench_EchoResponse)mprpcbench_EchoResponse_init_zero;
    sl->out.data = bench_payload(pattern, sl->id);
    sl->out.size = opts.size;
    sl->rq.payload.funcs.encode = mprpc_bytes_encode;
    sl->rq.payload.arg = &sl->out;
    sl->in.data = sl->sink_buf;
    sl->in.capacity = opts.size + 1;
    sl->in.size = 0;
    sl->rs.payload.funcs.decode = mprpc_bytes_copy_decode;
    sl->rs.payload.arg = &sl->in;
    mprpc_controller_reset(&sl->ctl);
    sl->t_send_ns = bench_now_ns();
    st = MPRPC_CALL_ASYNC(async_ch, "EchoService", "Echo", mprpcbench_EchoRequest, &sl->rq,
                          mprpcbench_EchoResponse, &sl->rs, &sl->ctl, async_done, sl);
    if (st != MPRPC_OK) {
        if (sl->errors++ < 5)
            fprintf(stderr, "mprpc-async: call not started: %s: %s\n", mprpc_status_name(st),
                    mprpc_controller_error_text(&sl->ctl));
        async_slot_finished();
    }
}

static void async_done(mprpc_controller *ctl, void *response, void *user)
{
    async_slot *sl = (async_slot *)user;
    uint64_t now = bench_now_ns();
    int ph = bench_phase_get(&phase);
    (void)response;

    if (mprpc_controller_failed(ctl)) {
        if (sl->errors++ < 5)
            fprintf(stderr, "mprpc-async: call failed: %s: %s\n", mprpc_status_name(ctl->status),
                    mprpc_controller_error_text(ctl));
    } else if (sl->in.size != opts.size ||
               memcmp(sl->sink_buf, bench_payload(pattern, sl->id), sl->in.size) != 0) {
        sl->errors++;
    } else if (ph == BENCH_MEASURE) {
        hist_record(&sl->h, now - sl->t_send_ns);
    }
    sl->id++;
    if (ph == BENCH_STOP) {
        async_slot_finished();
        return;
    }
    async_issue(sl);
}

static int run_async(void)
{
    async_slot *slots;
    hist *total;
    uint64_t errors = 0;
    bench_window win;
    struct timespec until;
    int i, left;

    opts.threads = 1;               /* no client threads: the channel's own do the work */
    if (opts.depth != 1) {
        fprintf(stderr, "mprpc-async: C slots with one call each (-q 1); use -c for depth\n");
        return 2;
    }
    async_ch = bench_channel_new("mprpc-async");
    slots = (async_slot *)calloc((size_t)opts.conns, sizeof *slots);
    if (!slots)
        die("calloc");
    for (i = 0; i < opts.conns; i++) {
        slots[i].index = i;
        slots[i].id = (uint32_t)i * 7919u;
        slots[i].sink_buf = (uint8_t *)xmalloc(opts.size + 1);
        mprpc_controller_init(&slots[i].ctl);
        hist_init(&slots[i].h);
    }
    async_active = opts.conns;
    for (i = 0; i < opts.conns; i++)
        async_issue(&slots[i]);

    bench_run_window(&opts, &phase, &win);

    /* Each completion now retires its slot instead of issuing again. */
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += ASYNC_DRAIN_TIMEOUT_S;
    pthread_mutex_lock(&async_mu);
    while (async_active > 0)
        if (pthread_cond_timedwait(&async_cv, &async_mu, &until) != 0)
            break;
    left = async_active;
    pthread_mutex_unlock(&async_mu);
    if (left > 0) {
        fprintf(stderr, "mprpc-async: %d calls still in flight after %d s\n", left,
                ASYNC_DRAIN_TIMEOUT_S);
        errors += (uint64_t)left;
    }
    mprpc_channel_free(async_ch);   /* completes anything left before it returns */

    total = (hist *)xmalloc(sizeof *total);
    hist_init(total);
    for (i = 0; i < opts.conns; i++) {
        hist_merge(total, &slots[i].h);
        errors += slots[i].errors;
        free(slots[i].sink_buf);
    }
    free(slots);
    bench_report(&opts, total, errors, &win);
    return 0;
}
#endif /* MPRPC_CALL_ASYNC */

#ifdef MPRPC_TLS
/* ======================================================================
 * connect / tls-connect: new connections per second
 *
 * T = C threads, each looping: TCP connect, (tls-connect: a blocking
 * SSL_connect, a full TLS 1.3 handshake), ONE call in the "mprpc" proto's
 * frame, the whole reply read and checked, close.  One call per connection,
 * so the RESULT line's qps is connections per second, its latency runs from
 * connect to the reply, and server_cpu_us_per_call is the provider's CPU
 * per connection.
 * ====================================================================== */

/* A connect, handshake or reply that takes longer fails the connection
 * (a hung provider must not hang the client). */
#define CX_TIMEOUT_S 5

typedef struct cx_worker {
    pthread_t th;
    int index;
    const struct sockaddr_in *addr;
    SSL_CTX *tls;               /* this thread's, made once; NULL = plaintext */
    char session[128];          /* what the first handshake negotiated */
    uint64_t errors;
    hist h;
} cx_worker;

typedef struct cx_link {
    int fd;
    SSL *ssl;                   /* NULL = plaintext */
} cx_link;

/* Counts a failed connection; the first few say why (the OpenSSL reason
 * when there is one, else errno). */
static void cx_error(cx_worker *w, const char *what)
{
    char why[256] = "";
    unsigned long e = ERR_peek_last_error();
    if (e)
        ERR_error_string_n(e, why, sizeof why);
    ERR_clear_error();
    if (!why[0])
        snprintf(why, sizeof why, "%s", errno ? strerror(errno) : "closed by the provider");
    if (w->errors++ < 5)
        fprintf(stderr, "%s: %s: %s\n", opts.system, what, why);
}

/* TLS 1.3 only, the provider's certificate checked against the CA
 * scripts/tls-certs.sh made and for the IP address dialled; no tickets, no
 * session cache: every connection is a full handshake. */
static SSL_CTX *cx_tls_new(void)
{
    const char *dir = getenv("MPRPC_BENCH_TLS_DIR");
    char ca[4096];
    SSL_CTX *ctx;

    if (!dir) {
        fprintf(stderr, "tls-connect: MPRPC_BENCH_TLS_DIR (scripts/tls-certs.sh's directory) is not set\n");
        exit(2);
    }
    snprintf(ca, sizeof ca, "%s/ca.crt", dir);
    ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx || SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) != 1 ||
        SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1 ||
        X509_VERIFY_PARAM_set1_ip_asc(SSL_CTX_get0_param(ctx), opts.host) != 1) {
        ERR_print_errors_fp(stderr);
        exit(1);
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    return ctx;
}

static int cx_handshake(cx_worker *w, cx_link *l)
{
    l->ssl = SSL_new(w->tls);
    if (!l->ssl || SSL_set_fd(l->ssl, l->fd) != 1 || SSL_connect(l->ssl) != 1)
        return -1;
    if (!w->session[0])
        snprintf(w->session, sizeof w->session, "%s %s %s", SSL_get_version(l->ssl),
                 SSL_CIPHER_get_name(SSL_get_current_cipher(l->ssl)),
                 SSL_group_to_name(l->ssl, SSL_get_negotiated_group(l->ssl)));
    return 0;
}

/* Both write and read whole messages: the socket blocks, partial writes are off. */
static ssize_t cx_tls_write(SSL *ssl, const uint8_t *p, size_t n)
{
    return SSL_write(ssl, p, (int)n) == (int)n ? 0 : -1;
}

static ssize_t cx_tls_read(SSL *ssl, uint8_t *p, size_t n)
{
    return SSL_read(ssl, p, (int)n);
}

/* close_notify sent, the provider's not waited for. */
static void cx_tls_free(SSL *ssl)
{
    SSL_shutdown(ssl);
    SSL_free(ssl);
}

/* TCP connect (and the handshake): 0, or -1 with the error counted. */
static int cx_open(cx_worker *w, cx_link *l)
{
    struct timeval tv = {CX_TIMEOUT_S, 0};
    int one = 1;

    l->ssl = NULL;
    l->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (l->fd < 0) {
        cx_error(w, "socket");
        return -1;
    }
    setsockopt(l->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(l->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(l->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(l->fd, (const struct sockaddr *)w->addr, sizeof *w->addr) < 0) {
        cx_error(w, "connect");
        return -1;
    }
    if (w->tls && cx_handshake(w, l) < 0) {
        cx_error(w, "TLS handshake");
        return -1;
    }
    return 0;
}

static void cx_close(cx_link *l)
{
    if (l->ssl)
        cx_tls_free(l->ssl);
    if (l->fd >= 0)
        close(l->fd);
}

static ssize_t cx_read(const cx_link *l, uint8_t *p, size_t n)
{
    ssize_t k;
    if (l->ssl)
        return cx_tls_read(l->ssl, p, n);
    do
        k = recv(l->fd, p, n, 0);
    while (k < 0 && errno == EINTR);
    return k;
}

/* Sends call id, reads the whole reply into buf (cap bytes) and checks it:
 * 0, or -1 with the error counted. */
static int cx_call(cx_worker *w, const cx_link *l, uint32_t id, uint8_t *buf, size_t cap)
{
    const uint8_t *payload = bench_payload(pattern, id), *got = NULL;
    size_t n = mprpc_encode_request(buf, cap, id, payload, opts.size), have = 0, used = 0;
    size_t got_len = 0;
    uint32_t got_id = 0;
    int rc = PROTO_NEED_MORE;

    if (n == 0 || (l->ssl ? cx_tls_write(l->ssl, buf, n) : rb_send_all(l->fd, buf, n)) < 0) {
        cx_error(w, "sending the call");
        return -1;
    }
    while (rc == PROTO_NEED_MORE && have < cap) {
        ssize_t k = cx_read(l, buf + have, cap - have);
        if (k <= 0) {
            cx_error(w, "reading the reply");
            return -1;
        }
        have += (size_t)k;
        rc = mprpc_decode_response(buf, have, &used, &got_id, &got, &got_len);
    }
    if (rc != PROTO_OK || used != have || got_id != id || got_len != opts.size ||
        memcmp(got, payload, got_len) != 0) {
        errno = 0;
        cx_error(w, "a wrong reply");
        return -1;
    }
    return 0;
}

static void *cx_worker_main(void *arg)
{
    cx_worker *w = (cx_worker *)arg;
    size_t cap = 2 * mprpc_max_request_size(opts.size);   /* a reply is smaller than a request */
    uint8_t *buf = (uint8_t *)xmalloc(cap);
    uint32_t id = (uint32_t)w->index * 7919u;

    while (bench_phase_get(&phase) != BENCH_STOP) {
        cx_link l;
        uint64_t t0 = bench_now_ns(), t1;
        int ok;

        errno = 0;
        ok = cx_open(w, &l) == 0 && cx_call(w, &l, id++, buf, cap) == 0;
        t1 = bench_now_ns();
        cx_close(&l);
        if (ok && bench_phase_get(&phase) == BENCH_MEASURE)
            hist_record(&w->h, t1 - t0);
    }
    free(buf);
    return NULL;
}

static int run_connect(const struct sockaddr_in *addr, int tls)
{
    cx_worker *ws;
    hist *total;
    uint64_t errors = 0;
    bench_window win;
    int t;

    opts.threads = opts.conns;      /* T = C: one thread per connection at a time */
    if (opts.depth != 1) {
        fprintf(stderr, "%s: one call per connection (-q 1)\n", opts.system);
        return 2;
    }
    ws = (cx_worker *)calloc((size_t)opts.conns, sizeof *ws);
    if (!ws)
        die("calloc");
    for (t = 0; t < opts.conns; t++) {
        ws[t].index = t;
        ws[t].addr = addr;
        ws[t].tls = tls ? cx_tls_new() : NULL;
        hist_init(&ws[t].h);
    }
    for (t = 0; t < opts.conns; t++)
        if (pthread_create(&ws[t].th, NULL, cx_worker_main, &ws[t]) != 0)
            die("pthread_create");
    bench_run_window(&opts, &phase, &win);
    total = (hist *)xmalloc(sizeof *total);
    hist_init(total);
    for (t = 0; t < opts.conns; t++) {
        pthread_join(ws[t].th, NULL);
        hist_merge(total, &ws[t].h);
        errors += ws[t].errors;
        if (ws[t].tls)
            SSL_CTX_free(ws[t].tls);
    }
    printf("  one call per connection: qps = new connections/s, server CPU per call = per connection\n");
    if (ws[0].session[0])
        printf("  TLS session %s\n", ws[0].session);
    bench_report(&opts, total, errors, &win);
    return 0;
}
#endif /* MPRPC_TLS */

/* The clients that are not protocol plug-ins are chosen by --proto or --system. */
static int is_mode(const char *name)
{
    return strcmp(opts.proto, name) == 0 || strcmp(opts.system, name) == 0;
}

int main(int argc, char **argv)
{
    struct sockaddr_in addr;
    worker *ws;
    hist *total;
    uint64_t errors = 0;
    bench_window win;
    size_t i;
    int t;

    bench_parse_opts(argc, argv, &opts, NULL);
    if (opts.list_protos) {
        for (i = 0; i < NPROTOS; i++)
            printf("%s\n", protos[i].name);
        printf("raw-blocking\nmprpc-channel\n");
#ifdef MPRPC_TLS
        printf("connect\ntls-connect\n");
#endif
#ifdef HAVE_MPRPC_ASYNC
        printf("mprpc-async\n");
#endif
#if defined(HAVE_MPRPC_ASYNC) && defined(MPRPC_TLS)
        printf("mprpc-tls\n");
#endif
        return 0;
    }
    signal(SIGPIPE, SIG_IGN);
    pattern = bench_pattern_new(opts.size);
    if (is_mode("mprpc-channel"))
        return run_channel();
    if (is_mode("mprpc-async") || is_mode("mprpc-tls")) { /* mprpc-tls: the same client over TLS */
#ifdef HAVE_MPRPC_ASYNC
        return run_async();
#else
        fprintf(stderr, "%s: mprpc-async needs mprpc_channel_call_async (not in this mprpc.h)\n",
                argv[0]);
        return 2;
#endif
    }

    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)opts.port);
    if (inet_pton(AF_INET, opts.host, &addr.sin_addr) != 1) {
        fprintf(stderr, "%s: bad IPv4 address '%s'\n", argv[0], opts.host);
        return 2;
    }
    if (is_mode("raw-blocking"))
        return run_raw_blocking(&addr);
    if (is_mode("connect") || is_mode("tls-connect")) {
#ifdef MPRPC_TLS
        return run_connect(&addr, is_mode("tls-connect"));
#else
        fprintf(stderr, "%s: %s is in the MPRPC_TLS build (mprpc_bench_tls)\n", argv[0], opts.proto);
        return 2;
#endif
    }

    for (i = 0; i < NPROTOS; i++)
        if (strcmp(protos[i].name, opts.proto) == 0)
            proto = &protos[i];
    if (!proto) {
        fprintf(stderr, "%s: unknown protocol '%s' (see --list-protos)\n", argv[0], opts.proto);
        return 2;
    }
    max_req = proto->max_request_size(opts.size);

    ws = (worker *)calloc((size_t)opts.threads, sizeof *ws);
    if (!ws)
        die("calloc");
    for (t = 0; t < opts.threads; t++) {
        ws[t].ep = epoll_create1(EPOLL_CLOEXEC);
        if (ws[t].ep < 0)
            die("epoll_create1");
        ws[t].conns = (conn **)xmalloc((size_t)opts.conns * sizeof(conn *));
        hist_init(&ws[t].h);
    }
    for (t = 0; t < opts.conns; t++) {
        worker *w = &ws[t % opts.threads];
        conn *c = conn_open(&addr);
        struct epoll_event e;
        e.events = EPOLLIN;
        e.data.ptr = c;
        if (epoll_ctl(w->ep, EPOLL_CTL_ADD, c->fd, &e) < 0)
            die("epoll_ctl");
        w->conns[w->nconns++] = c;
    }
    for (t = 0; t < opts.threads; t++)
        if (pthread_create(&ws[t].th, NULL, worker_main, &ws[t]) != 0)
            die("pthread_create");

    bench_run_window(&opts, &phase, &win);

    total = (hist *)xmalloc(sizeof *total);
    hist_init(total);
    for (t = 0; t < opts.threads; t++) {
        pthread_join(ws[t].th, NULL);
        hist_merge(total, &ws[t].h);
        errors += ws[t].errors;
    }
    bench_report(&opts, total, errors, &win);
    return 0;
}
