/* Shared fixtures for the integration tests: an in-process provider serving
 * TestService and the seed's UserServiceRpc on an ephemeral loopback port,
 * raw-socket helpers, and a scripted fake provider for caller-side faults.
 * Include after mprpc.h (with MPRPC_IMPLEMENTATION) and test.h. */
#ifndef MPRPC_TEST_SUPPORT_H
#define MPRPC_TEST_SUPPORT_H

/* Not every test file uses every fixture. */
#pragma GCC diagnostic ignored "-Wunused-function"

#include "test.h"

#include "testsvc.pb.h"
#include "user.pb.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static void sleep_ms(int ms)
{
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) != 0) {}
}

/* make test-valgrind sets MPRPC_TEST_SLOW=4: timing limits scale with it. */
static int slow_factor(void)
{
    const char *s = getenv("MPRPC_TEST_SLOW");
    int f = s ? atoi(s) : 1;
    return f > 0 ? f : 1;
}

/* Every wait in a test is bounded, so a defect fails the case instead of hanging the suite: polls cond
 * every 5 ms for at most ms milliseconds (times MPRPC_TEST_SLOW); a CHECK after it names what never came. */
#define WAIT_UNTIL(cond, ms)                                                           \
    do {                                                                               \
        int w_left_ = (ms) / 5 * slow_factor();                                        \
        while (!(cond) && w_left_-- > 0) sleep_ms(5);                                  \
    } while (0)

/* ---- TestService ---- */

static void echo(mprpc_call *call, const void *request, void *response, void *user)
{
    const testsvc_EchoRequest *rq = (const testsvc_EchoRequest *)request;
    testsvc_EchoResponse *rs = (testsvc_EchoResponse *)response;
    (void)user;
    if (rq->fail) {
        mprpc_call_fail(call, "echo asked to fail (seq %llu)", (unsigned long long)rq->seq);
        return;
    }
    memcpy(rs->payload.bytes, rq->payload.bytes, rq->payload.size);
    rs->payload.size = rq->payload.size;
    rs->seq = rq->seq;
}

/* Deferred calls finish on a detached thread after delay_ms. */
typedef struct deferred_job {
    mprpc_call *call;
    testsvc_EchoResponse *rs;
    testsvc_EchoRequest rq;
} deferred_job;

static void *deferred_worker(void *arg)
{
    deferred_job *job = (deferred_job *)arg;
    sleep_ms((int)job->rq.delay_ms);
    memcpy(job->rs->payload.bytes, job->rq.payload.bytes, job->rq.payload.size);
    job->rs->payload.size = job->rq.payload.size;
    job->rs->seq = job->rq.seq;
    mprpc_call_done(job->call);
    free(job);
    return NULL;
}

static void deferred(mprpc_call *call, const void *request, void *response, void *user)
{
    deferred_job *job = (deferred_job *)malloc(sizeof *job);
    pthread_t t;
    (void)user;
    job->call = call;
    job->rs = (testsvc_EchoResponse *)response;
    job->rq = *(const testsvc_EchoRequest *)request;
    mprpc_call_defer(call);
    if (pthread_create(&t, NULL, deferred_worker, job) != 0) {
        free(job);
        mprpc_call_fail(call, "no thread");
        mprpc_call_done(call);
        return;
    }
    pthread_detach(t);
}

/* Big: the request's bytes arrive zero-copy; the reply carries size bytes of
 * fill, produced by an encode callback, plus the sum of the request bytes. */
typedef struct big_state {
    mprpc_bytes in;
    uint8_t    *out;
} big_state;

static void big_prepare(mprpc_call *call, void *request, void *response, void *user)
{
    testsvc_BigRequest *rq = (testsvc_BigRequest *)request;
    static _Thread_local big_state st; /* one call at a time per loop thread */
    (void)call; (void)response; (void)user;
    memset(&st.in, 0, sizeof st.in);
    rq->data.funcs.decode = mprpc_bytes_decode;
    rq->data.arg = &st.in;
}

static void big(mprpc_call *call, const void *request, void *response, void *user)
{
    const testsvc_BigRequest *rq = (const testsvc_BigRequest *)request;
    testsvc_BigResponse *rs = (testsvc_BigResponse *)response;
    const mprpc_bytes *in = (const mprpc_bytes *)rq->data.arg;
    static _Thread_local mprpc_bytes out;
    static uint8_t outbuf[1 << 20]; /* tests make one Big call at a time */
    uint32_t sum = 0;
    size_t i;
    (void)user;
    for (i = 0; i < in->size; i++) sum += in->data[i];
    rs->sum = sum;
    if (rq->size > sizeof outbuf) {
        mprpc_call_fail(call, "at most %zu bytes", sizeof outbuf);
        return;
    }
    memset(outbuf, (int)rq->fill, rq->size);
    out.data = outbuf;
    out.size = rq->size;
    rs->data.funcs.encode = mprpc_bytes_encode;
    rs->data.arg = &out;
}

static const mprpc_method test_methods[] = {
    MPRPC_METHOD("Echo", testsvc_EchoRequest, testsvc_EchoResponse, echo),
    MPRPC_METHOD("Deferred", testsvc_EchoRequest, testsvc_EchoResponse, deferred),
    MPRPC_METHOD_PREPARED("Big", testsvc_BigRequest, testsvc_BigResponse, big, big_prepare),
};
static const mprpc_service test_service = MPRPC_SERVICE("TestService", test_methods, NULL);

static void login(mprpc_call *call, const void *request, void *response, void *user)
{
    const fixbug_LoginRequest *rq = (const fixbug_LoginRequest *)request;
    fixbug_LoginResponse *rs = (fixbug_LoginResponse *)response;
    (void)call; (void)user;
    rs->has_result = true;
    rs->success = rq->name.size > 0;
    if (!rs->success) {
        rs->result.errcode = 1;
        memcpy(rs->result.errmsg.bytes, "empty name", 10);
        rs->result.errmsg.size = 10;
    }
}

static const mprpc_method user_methods[] = {
    MPRPC_METHOD("Login", fixbug_LoginRequest, fixbug_LoginResponse, login),
};
static const mprpc_service user_service = MPRPC_SERVICE("UserServiceRpc", user_methods, NULL);

/* Starts a provider with both services on 127.0.0.1:port (0 = any). */
static mprpc_server *start_provider(mprpc_config *cfg, int port)
{
    mprpc_server *srv = NULL;
    cfg->rpcserver_port = port;
    if (mprpc_server_new(&srv, cfg) != MPRPC_OK) return NULL;
    if (mprpc_server_add_service(srv, &test_service) != MPRPC_OK ||
        mprpc_server_add_service(srv, &user_service) != MPRPC_OK ||
        mprpc_server_start(srv) != MPRPC_OK) {
        fprintf(stderr, "start_provider: %s\n", mprpc_server_error(srv));
        mprpc_server_free(srv);
        return NULL;
    }
    cfg->rpcserver_port = mprpc_server_port(srv);
    return srv;
}

static void test_config(mprpc_config *cfg)
{
    mprpc_config_init(cfg);
    cfg->rpc_timeout_ms = 10000;
    cfg->log_level = MPRPC_LOG_LEVEL_OFF;
}

/* A provider with configuration cfg on a free port; NULL (after recording a
 * failure) if it could not start. */
static mprpc_server *provider_up_as(mprpc_config *cfg)
{
    mprpc_server *srv = start_provider(cfg, 0);
    CHECK(srv != NULL);
    return srv;
}

/* The same with the test configuration. */
static mprpc_server *provider_up(mprpc_config *cfg)
{
    test_config(cfg);
    return provider_up_as(cfg);
}

/* The usual start of a test: a provider on a free port, a channel to it and a
 * fresh controller. Returns 0 (after recording a failure) if the provider
 * could not start. */
static int setup(mprpc_config *cfg, mprpc_server **srv, mprpc_channel **ch, mprpc_controller *ctl)
{
    if (!(*srv = provider_up(cfg))) return 0;
    CHECK(mprpc_channel_new(ch, cfg) == MPRPC_OK);
    mprpc_controller_init(ctl);
    return 1;
}

static void teardown(mprpc_server *srv, mprpc_channel *ch)
{
    mprpc_channel_free(ch);
    mprpc_server_free(srv);
}

static void set_payload(testsvc_EchoRequest *rq, const char *s)
{
    rq->payload.size = (pb_size_t)strlen(s);
    memcpy(rq->payload.bytes, s, rq->payload.size);
}

static mprpc_status echo_call(mprpc_channel *ch, const char *text, uint64_t seq,
                              mprpc_controller *ctl, testsvc_EchoResponse *rs)
{
    testsvc_EchoRequest rq = testsvc_EchoRequest_init_zero;
    set_payload(&rq, text);
    rq.seq = seq;
    memset(rs, 0, sizeof *rs);
    return MPRPC_CALL(ch, "TestService", "Echo", testsvc_EchoRequest, &rq, testsvc_EchoResponse, rs, ctl);
}

/* ---- log lines, kept by a logger sink (mprpc_logger_set_sink(keep_line, NULL)) ---- */

static pthread_mutex_t seen_mu = PTHREAD_MUTEX_INITIALIZER;
static char seen[8192];

/* The logger (section 4, as merged) hands its sink the slot's text without a
 * terminating NUL (mprpc_log copies len bytes only), so a line is taken up
 * to its first byte that is not printable ASCII, at most a slot's length. */
static void keep_line(mprpc_log_level level, const char *line, void *user)
{
    size_t n = 0, have;
    (void)level; (void)user;
    while (n < MPRPC_LOG_LINE_MAX && line[n] >= 0x20 && line[n] < 0x7f) n++;
    pthread_mutex_lock(&seen_mu);
    have = strlen(seen);
    if (have + n + 2 < sizeof seen) {
        memcpy(seen + have, line, n);
        seen[have + n] = '\n';
        seen[have + n + 1] = '\0';
    }
    pthread_mutex_unlock(&seen_mu);
}

static int seen_has(const char *what)
{
    int yes;
    pthread_mutex_lock(&seen_mu);
    yes = strstr(seen, what) != NULL;
    pthread_mutex_unlock(&seen_mu);
    return yes;
}

/* ---- raw sockets ---- */

static int raw_connect(int port)
{
    struct sockaddr_in sa;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int raw_send_all(int fd, const void *p, size_t n)
{
    const uint8_t *b = (const uint8_t *)p;
    while (n) {
        ssize_t k = send(fd, b, n, MSG_NOSIGNAL);
        if (k <= 0) return 0;
        b += k;
        n -= (size_t)k;
    }
    return 1;
}

/* Reads until n bytes, EOF or timeout; returns the count read. */
static size_t raw_recv(int fd, void *p, size_t n, int timeout_ms)
{
    size_t got = 0;
    while (got < n) {
        struct pollfd pf;
        ssize_t k;
        pf.fd = fd;
        pf.events = POLLIN;
        if (poll(&pf, 1, timeout_ms) <= 0) break;
        k = recv(fd, (uint8_t *)p + got, n - got, 0);
        if (k <= 0) break;
        got += (size_t)k;
    }
    return got;
}

/* 1 if the peer closed the connection within timeout_ms (after any data). */
static int raw_wait_closed(int fd, int timeout_ms)
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
        if (k < 0) return errno == ECONNRESET;
    }
}

/* Reads one v1 response frame into buf; returns MPRPC_OK and fills f. */
static mprpc_status raw_read_response(int fd, mprpc_buf *buf, mprpc_response_frame *f, int timeout_ms)
{
    for (;;) {
        uint8_t tmp[4096];
        size_t k;
        mprpc_status st = mprpc_wire_decode_response(buf->data + buf->pos, mprpc_buf_readable(buf),
                                                     1u << 24, f);
        if (st != MPRPC_AGAIN) return st;
        k = raw_recv(fd, tmp, 1, timeout_ms);
        if (k == 0) return MPRPC_ERR_CONNECTION_LOST;
        if (mprpc_buf_append(buf, tmp, k, 1u << 26) != MPRPC_OK) return MPRPC_ERR_NO_MEMORY;
    }
}

/* ---- a scripted fake provider: accepts one connection at a time and
 * answers each request frame with fn(frame, out buffer) ---- */

typedef enum fake_mode {
    FAKE_GARBAGE,        /* answers with random junk */
    FAKE_WRONG_ID,       /* a well-formed reply with another call_id */
    FAKE_HALF_THEN_STALL,/* half a frame, then silence */
    FAKE_CLOSE_MID,      /* half a frame, then close */
    FAKE_SILENT,         /* reads and never answers */
    FAKE_CLOSE_AT_ONCE,  /* closes as soon as the request arrives */
    FAKE_HUGE,           /* announces a body larger than max_message_size */
    FAKE_PAIRED          /* holds each odd reply and sends it with the next one, in one send */
} fake_mode;

typedef struct fake_provider {
    int listen_fd;
    int port;
    fake_mode mode;
    int stop; /* atomic */
    pthread_t thread;
    mprpc_buf held; /* FAKE_PAIRED: the reply waiting for its partner */
    int paired;     /* FAKE_PAIRED: replies made */
} fake_provider;

static void fake_answer(fake_provider *fp, int fd, const mprpc_request_frame *f)
{
    mprpc_buf out;
    testsvc_EchoResponse rs = testsvc_EchoResponse_init_zero;
    uint8_t junk[64];
    size_t i;
    mprpc_buf_init(&out);
    switch (fp->mode) {
    case FAKE_GARBAGE:
        for (i = 0; i < sizeof junk; i++) junk[i] = (uint8_t)(i * 37 + 11);
        junk[0] = 0xff; junk[1] = 0xff; /* a header length far past the bound */
        raw_send_all(fd, junk, sizeof junk);
        break;
    case FAKE_WRONG_ID:
        mprpc_wire_encode_response(&out, 1u << 20, f->header.call_id + 1000, MPRPC_OK, NULL,
                                   testsvc_EchoResponse_fields, &rs);
        raw_send_all(fd, out.data, out.len);
        break;
    case FAKE_HALF_THEN_STALL:
    case FAKE_CLOSE_MID:
        mprpc_wire_encode_response(&out, 1u << 20, f->header.call_id, MPRPC_OK, NULL,
                                   testsvc_EchoResponse_fields, &rs);
        raw_send_all(fd, out.data, out.len / 2);
        if (fp->mode == FAKE_CLOSE_MID) shutdown(fd, SHUT_RDWR);
        break;
    case FAKE_HUGE: {
        uint8_t hdr[16];
        /* RpcResponseHeader{call_id, body_size = 2^31} by hand */
        size_t n = 0;
        hdr[n++] = 0x08; hdr[n++] = (uint8_t)f->header.call_id; /* call_id < 128 in these tests */
        hdr[n++] = 0x20; hdr[n++] = 0x80; hdr[n++] = 0x80; hdr[n++] = 0x80; hdr[n++] = 0x80; hdr[n++] = 0x08;
        junk[0] = (uint8_t)n; junk[1] = junk[2] = junk[3] = 0;
        raw_send_all(fd, junk, 4);
        raw_send_all(fd, hdr, n);
        break;
    }
    case FAKE_PAIRED:
        mprpc_wire_encode_response(&fp->held, 1u << 20, f->header.call_id, MPRPC_OK, NULL,
                                   testsvc_EchoResponse_fields, &rs);
        if (fp->held.len > 0 && (++fp->paired % 2) == 0) {
            raw_send_all(fd, fp->held.data, fp->held.len);
            fp->held.pos = fp->held.len = 0;
        }
        break;
    case FAKE_SILENT:
        break;
    case FAKE_CLOSE_AT_ONCE:
        shutdown(fd, SHUT_RDWR);
        break;
    }
    mprpc_buf_free(&out);
}

static void *fake_main(void *arg)
{
    fake_provider *fp = (fake_provider *)arg;
    while (!__atomic_load_n(&fp->stop, __ATOMIC_RELAXED)) {
        struct pollfd pf;
        int fd;
        mprpc_buf in;
        pf.fd = fp->listen_fd;
        pf.events = POLLIN;
        if (poll(&pf, 1, 50) <= 0) continue;
        fd = accept(fp->listen_fd, NULL, NULL);
        if (fd < 0) continue;
        mprpc_buf_init(&in);
        while (!__atomic_load_n(&fp->stop, __ATOMIC_RELAXED)) {
            mprpc_request_frame f;
            uint8_t tmp[4096];
            ssize_t k;
            mprpc_status st = mprpc_wire_decode_request(in.data + in.pos, mprpc_buf_readable(&in), 1u << 24, &f);
            if (st == MPRPC_OK) {
                fake_answer(fp, fd, &f);
                mprpc_buf_consume(&in, f.frame_size);
                continue;
            }
            pf.fd = fd;
            if (poll(&pf, 1, 50) <= 0) continue;
            k = recv(fd, tmp, sizeof tmp, 0);
            if (k <= 0) break;
            mprpc_buf_append(&in, tmp, (size_t)k, 1u << 26);
        }
        mprpc_buf_free(&in);
        close(fd);
    }
    return NULL;
}

static int fake_start(fake_provider *fp, fake_mode mode)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    memset(fp, 0, sizeof *fp);
    fp->mode = mode;
    fp->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fp->listen_fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fp->listen_fd, 16) != 0)
        return 0;
    getsockname(fp->listen_fd, (struct sockaddr *)&sa, &len);
    fp->port = ntohs(sa.sin_port);
    return pthread_create(&fp->thread, NULL, fake_main, fp) == 0;
}

static void fake_stop(fake_provider *fp)
{
    __atomic_store_n(&fp->stop, 1, __ATOMIC_RELAXED);
    pthread_join(fp->thread, NULL);
    close(fp->listen_fd);
    mprpc_buf_free(&fp->held);
}

#endif
