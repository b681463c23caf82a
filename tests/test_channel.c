/* Channel and controller (MprpcChannel / MprpcController) facing providers
 * that are down, lie, stall or die: each gives a distinct status within the
 * timeout, and the channel stays usable for the next call. */
#define MPRPC_IMPLEMENTATION
#include "mprpc.h"
#include "test.h"
#include "support.h"

/* Calls the fake provider in `mode`, expects `want`, then checks that the same
 * channel still works against a real provider. */
static void check_fault(fake_mode mode, mprpc_status want, const char *want_text)
{
    fake_provider fp;
    mprpc_config cfg, good;
    mprpc_server *srv;
    mprpc_channel *ch;
    mprpc_controller ctl;
    testsvc_EchoResponse rs;
    CHECK(fake_start(&fp, mode));
    test_config(&cfg);
    cfg.rpcserver_port = fp.port;
    cfg.rpc_timeout_ms = 300;
    mprpc_channel_new(&ch, &cfg);
    mprpc_controller_init(&ctl);
    CHECK_STATUS(echo_call(ch, "x", 1, &ctl, &rs), want);
    CHECK(mprpc_controller_failed(&ctl));
    CHECK_CONTAINS(ctl.error_text, want_text);
    CHECK(mprpc_controller_may_have_run(&ctl)); /* each fault comes after the request was sent */
    /* the same fault again: the channel did not get stuck */
    CHECK_STATUS(echo_call(ch, "x", 2, &ctl, &rs), want);
    mprpc_channel_free(ch);
    fake_stop(&fp);
    /* and a channel that saw a fault still calls a good provider */
    if (!(srv = provider_up(&good))) return;
    cfg.rpcserver_port = good.rpcserver_port;
    mprpc_channel_new(&ch, &cfg);
    CHECK_STATUS(echo_call(ch, "x", 3, &ctl, &rs), MPRPC_OK);
    teardown(srv, ch);
}

static void garbage_reply_is_a_protocol_error(void)       { check_fault(FAKE_GARBAGE, MPRPC_ERR_PROTOCOL, "unparseable"); }
static void wrong_call_id_is_a_protocol_error(void)       { check_fault(FAKE_WRONG_ID, MPRPC_ERR_PROTOCOL, "answered call"); }
static void half_a_reply_then_silence_times_out(void)     { check_fault(FAKE_HALF_THEN_STALL, MPRPC_ERR_TIMEOUT, "no reply"); }
static void close_mid_reply_is_connection_lost(void)      { check_fault(FAKE_CLOSE_MID, MPRPC_ERR_CONNECTION_LOST, "closed the connection"); }
static void silent_provider_times_out(void)               { check_fault(FAKE_SILENT, MPRPC_ERR_TIMEOUT, "no reply"); }
static void close_before_reply_is_connection_lost(void)   { check_fault(FAKE_CLOSE_AT_ONCE, MPRPC_ERR_CONNECTION_LOST, "before replying"); }
static void oversized_reply_is_refused_unread(void)       { check_fault(FAKE_HUGE, MPRPC_ERR_TOO_LARGE, "max_message_size"); }

static void nobody_listening_is_a_connect_error(void)
{
    mprpc_config cfg;
    mprpc_server *srv;
    mprpc_channel *ch;
    mprpc_controller ctl;
    testsvc_EchoResponse rs;
    int port;
    test_config(&cfg);
    srv = start_provider(&cfg, 0); /* find a free port, then free it */
    CHECK(srv != NULL);
    if (!srv) return;
    port = cfg.rpcserver_port;
    mprpc_server_free(srv);
    mprpc_channel_new(&ch, &cfg);
    mprpc_controller_init(&ctl);
    CHECK_STATUS(echo_call(ch, "x", 1, &ctl, &rs), MPRPC_ERR_CONNECT);
    CHECK(!mprpc_controller_may_have_run(&ctl)); /* nothing was sent: safe to repeat */
    {
        char want[64];
        snprintf(want, sizeof want, "127.0.0.1:%d", port);
        CHECK_CONTAINS(ctl.error_text, want);
    }
    mprpc_channel_free(ch);
}

static void per_call_timeout_overrides_the_default(void)
{
    fake_provider fp;
    mprpc_config cfg;
    mprpc_channel *ch;
    mprpc_controller ctl;
    testsvc_EchoResponse rs;
    struct timespec a, b;
    long elapsed_ms;
    CHECK(fake_start(&fp, FAKE_SILENT));
    test_config(&cfg);
    cfg.rpcserver_port = fp.port;
    cfg.rpc_timeout_ms = 60000;
    mprpc_channel_new(&ch, &cfg);
    mprpc_controller_init(&ctl);
    ctl.timeout_ms = 100;
    clock_gettime(CLOCK_MONOTONIC, &a);
    CHECK_STATUS(echo_call(ch, "x", 1, &ctl, &rs), MPRPC_ERR_TIMEOUT);
    clock_gettime(CLOCK_MONOTONIC, &b);
    elapsed_ms = (b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000;
    /* a functional bound, not a speed test: far below the 60 s default */
    CHECK(elapsed_ms >= 90 && elapsed_ms < 30000);
    CHECK(ctl.timeout_ms == 100); /* reset keeps the per-call timeout */
    mprpc_channel_free(ch);
    fake_stop(&fp);
}

static void bad_arguments_fail_cleanly(void)
{
    mprpc_config cfg;
    mprpc_channel *ch;
    mprpc_controller ctl;
    testsvc_EchoRequest rq = testsvc_EchoRequest_init_zero;
    testsvc_EchoResponse rs;
    char name[300];
    test_config(&cfg);
    mprpc_channel_new(&ch, &cfg);
    mprpc_controller_init(&ctl);
    CHECK_STATUS(mprpc_channel_call(ch, NULL, "Echo", testsvc_EchoRequest_fields, &rq, testsvc_EchoResponse_fields, &rs, &ctl),
                 MPRPC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(mprpc_channel_call(ch, "S", "Echo", testsvc_EchoRequest_fields, &rq, testsvc_EchoResponse_fields, &rs, NULL),
                 MPRPC_ERR_INVALID_ARGUMENT);
    memset(name, 'a', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    /* checked before any connection is made (nobody listens on this port) */
    cfg.rpcserver_port = 1;
    mprpc_channel_free(ch);
    mprpc_channel_new(&ch, &cfg);
    CHECK_STATUS(mprpc_channel_call(ch, name, "Echo", testsvc_EchoRequest_fields, &rq, testsvc_EchoResponse_fields, &rs, &ctl),
                 MPRPC_ERR_INVALID_ARGUMENT);
    CHECK_CONTAINS(ctl.error_text, "128");
    mprpc_channel_free(ch);
    mprpc_channel_free(NULL);
}

/* Five deferred (slow) calls in a row; non-NULL if all came back right. */
static void *deferred_caller(void *arg)
{
    mprpc_channel *ch = (mprpc_channel *)arg;
    mprpc_controller ctl;
    int i;
    mprpc_controller_init(&ctl);
    for (i = 0; i < 5; i++) {
        testsvc_EchoRequest rq = testsvc_EchoRequest_init_zero;
        testsvc_EchoResponse rs = testsvc_EchoResponse_init_zero;
        rq.delay_ms = 20;
        rq.seq = (uint64_t)i + 1;
        if (MPRPC_CALL(ch, "TestService", "Deferred", testsvc_EchoRequest, &rq, testsvc_EchoResponse, &rs, &ctl) != MPRPC_OK ||
            rs.seq != rq.seq)
            return NULL;
    }
    return ch;
}

/* Six threads, slow calls: they share the channel's multiplexed connections
 * (channel_connections_per_provider, 2) instead of one connection each. */
static void blocking_threads_share_two_connections(void)
{
    mprpc_config cfg;
    mprpc_server *srv;
    mprpc_channel *ch;
    mprpc_server_stats st;
    if (!(srv = provider_up(&cfg))) return;
    mprpc_channel_new(&ch, &cfg);
    {
        pthread_t t[6];
        int i;
        for (i = 0; i < 6; i++) pthread_create(&t[i], NULL, deferred_caller, ch);
        for (i = 0; i < 6; i++) {
            void *ok;
            pthread_join(t[i], &ok);
            CHECK(ok != NULL);
        }
    }
    mprpc_server_get_stats(srv, &st);
    CHECK(st.connections_accepted <= 2);
    teardown(srv, ch);
}

/* channel_max_connections bounds a channel's connections in all; past it calls share. */
static void max_connections_bounds_the_channel(void)
{
    mprpc_config cfg;
    mprpc_server *srv;
    mprpc_channel *ch;
    mprpc_server_stats st;
    pthread_t t[4];
    int i;
    if (!(srv = provider_up(&cfg))) return;
    cfg.channel_max_connections = 1;
    mprpc_channel_new(&ch, &cfg);
    for (i = 0; i < 4; i++) pthread_create(&t[i], NULL, deferred_caller, ch);
    for (i = 0; i < 4; i++) {
        void *ok;
        pthread_join(t[i], &ok);
        CHECK(ok != NULL);
    }
    mprpc_server_get_stats(srv, &st);
    CHECK(st.connections_accepted == 1);
    teardown(srv, ch);
}

/* A provider at max_connections answers BUSY ("not executed"): the call is
 * retried on the other provider and succeeds. */
static void busy_provider_passes_the_call_to_another(void)
{
    mprpc_config full_cfg, cfg, other_cfg;
    mprpc_server *full, *other;
    mprpc_channel *holder, *ch;
    mprpc_controller ctl;
    mprpc_server_stats st;
    testsvc_EchoResponse rs;
    int i, ok = 0;
    test_config(&full_cfg);
    full_cfg.max_connections = 1;
    if (!(full = start_provider(&full_cfg, 0))) { CHECK(full != NULL); return; }
    if (!(other = provider_up(&other_cfg))) { mprpc_server_free(full); return; }
    mprpc_channel_new(&holder, &full_cfg); /* holds the full provider's one connection */
    mprpc_controller_init(&ctl);
    CHECK_STATUS(echo_call(holder, "hold", 1, &ctl, &rs), MPRPC_OK);
    test_config(&cfg);
    snprintf(cfg.rpcserver_list, sizeof cfg.rpcserver_list, "127.0.0.1:%d,127.0.0.1:%d",
             full_cfg.rpcserver_port, other_cfg.rpcserver_port);
    mprpc_channel_new(&ch, &cfg);
    for (i = 0; i < 10; i++) ok += echo_call(ch, "x", (uint64_t)i, &ctl, &rs) == MPRPC_OK;
    CHECK(ok == 10);
    mprpc_server_get_stats(full, &st);
    CHECK(st.calls == 1); /* only the holder's call ran there */
    mprpc_channel_free(ch);
    mprpc_channel_free(holder);
    mprpc_server_free(other);
    mprpc_server_free(full);
}

/* ---- blocking (and async) calls sharing one connection: each reply reaches its own caller ---- */

/* One slow blocking call made on its own thread. */
typedef struct slow_call {
    mprpc_channel *ch;
    uint32_t       delay_ms;
    int            timeout_ms; /* 0: rpc_timeout_ms */
    uint64_t       seq;
    mprpc_status   status;
    uint64_t       seq_back;
    long           done_ms;    /* when it returned, from the test's start */
    struct timespec t0;
    pthread_t      t;
} slow_call;

static long ms_since(const struct timespec *t0)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - t0->tv_sec) * 1000L + (now.tv_nsec - t0->tv_nsec) / 1000000L;
}

static void *slow_call_run(void *arg)
{
    slow_call *c = (slow_call *)arg;
    mprpc_controller ctl;
    testsvc_EchoRequest rq = testsvc_EchoRequest_init_zero;
    testsvc_EchoResponse rs = testsvc_EchoResponse_init_zero;
    mprpc_controller_init(&ctl);
    ctl.timeout_ms = c->timeout_ms;
    rq.delay_ms = c->delay_ms;
    rq.seq = c->seq;
    c->status = MPRPC_CALL(c->ch, "TestService", "Deferred", testsvc_EchoRequest, &rq, testsvc_EchoResponse, &rs, &ctl);
    c->seq_back = rs.seq;
    c->done_ms = ms_since(&c->t0);
    return NULL;
}

/* Starts a slow call, then gives it time to be sent (it is then the oldest call on the connection). */
static void slow_call_start(slow_call *c, mprpc_channel *ch, uint32_t delay_ms, int timeout_ms, uint64_t seq,
                            const struct timespec *t0)
{
    memset(c, 0, sizeof *c);
    c->ch = ch;
    c->delay_ms = delay_ms;
    c->timeout_ms = timeout_ms;
    c->seq = seq;
    c->t0 = *t0;
    CHECK(pthread_create(&c->t, NULL, slow_call_run, c) == 0);
    sleep_ms(50);
}

/* A channel with one connection (open: one call made) to a fresh provider, so that every call shares it
 * and the first slow call is sent at once. */
static int one_connection(mprpc_config *cfg, mprpc_server **srv, mprpc_channel **ch)
{
    mprpc_controller ctl;
    testsvc_EchoResponse rs;
    if (!(*srv = provider_up(cfg))) return 0;
    cfg->channel_connections_per_provider = 1;
    CHECK(mprpc_channel_new(ch, cfg) == MPRPC_OK);
    mprpc_controller_init(&ctl);
    CHECK_STATUS(echo_call(*ch, "open", 99, &ctl, &rs), MPRPC_OK);
    return 1;
}

/* The reply of a later, quicker call arrives first and reaches that call's thread at once, not when the
 * first call's reply comes. */
static void a_reader_hands_a_quicker_reply_to_its_caller_at_once(void)
{
    mprpc_config cfg;
    mprpc_server *srv;
    mprpc_channel *ch;
    slow_call slow, quick;
    struct timespec t0;
    if (!one_connection(&cfg, &srv, &ch)) return;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    slow_call_start(&slow, ch, 1500, 0, 1, &t0);
    slow_call_start(&quick, ch, 10, 0, 2, &t0);
    pthread_join(quick.t, NULL);
    pthread_join(slow.t, NULL);
    CHECK_STATUS(quick.status, MPRPC_OK);
    CHECK_STATUS(slow.status, MPRPC_OK);
    CHECK(quick.seq_back == 2 && slow.seq_back == 1); /* each got its own reply */
    CHECK(quick.done_ms < slow.done_ms);
    teardown(srv, ch);
}

/* A call waiting behind a slower one on the same connection times out by its own deadline, and the
 * slower call and the connection go on as before. */
static void a_waiting_caller_times_out_on_time_while_another_reads(void)
{
    mprpc_config cfg;
    mprpc_server *srv;
    mprpc_channel *ch;
    mprpc_controller ctl;
    testsvc_EchoResponse rs;
    slow_call reader, waiter;
    struct timespec t0;
    if (!one_connection(&cfg, &srv, &ch)) return;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    slow_call_start(&reader, ch, 1500, 0, 1, &t0);
    slow_call_start(&waiter, ch, 600, 200, 2, &t0);
    pthread_join(waiter.t, NULL);
    CHECK_STATUS(waiter.status, MPRPC_ERR_TIMEOUT);
    CHECK(waiter.done_ms < 1500); /* not held until the first call's reply */
    pthread_join(reader.t, NULL);
    CHECK_STATUS(reader.status, MPRPC_OK);
    CHECK(reader.seq_back == 1);
    mprpc_controller_init(&ctl);
    CHECK_STATUS(echo_call(ch, "after", 3, &ctl, &rs), MPRPC_OK);
    CHECK(rs.seq == 3);
    teardown(srv, ch);
}

/* The first call's deadline passes while another call on the connection still waits: the other call
 * still gets its reply. */
static void when_the_reader_times_out_the_others_still_get_their_replies(void)
{
    mprpc_config cfg;
    mprpc_server *srv;
    mprpc_channel *ch;
    slow_call reader, other;
    struct timespec t0;
    if (!one_connection(&cfg, &srv, &ch)) return;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    slow_call_start(&reader, ch, 2000, 200, 1, &t0);
    slow_call_start(&other, ch, 600, 0, 2, &t0);
    pthread_join(reader.t, NULL);
    pthread_join(other.t, NULL);
    CHECK_STATUS(reader.status, MPRPC_ERR_TIMEOUT);
    CHECK_STATUS(other.status, MPRPC_OK);
    CHECK(other.seq_back == 2);
    teardown(srv, ch);
}

static pthread_t async_cb_thread;
static int async_cb_runs;
static mprpc_status async_cb_status;

static void async_cb(mprpc_controller *ctl, void *response, void *user)
{
    (void)response;
    (void)user;
    async_cb_thread = pthread_self();
    async_cb_status = ctl->status;
    __atomic_add_fetch(&async_cb_runs, 1, __ATOMIC_SEQ_CST);
}

/* An async call's reply on a connection a blocking call also waits on: its callback runs once, on the
 * channel's completion thread, not on the blocking caller's. */
static void an_async_reply_read_by_a_blocking_caller_runs_on_the_completion_thread(void)
{
    mprpc_config cfg;
    mprpc_server *srv;
    mprpc_channel *ch;
    mprpc_controller actl;
    testsvc_EchoRequest rq = testsvc_EchoRequest_init_zero;
    testsvc_EchoResponse rs = testsvc_EchoResponse_init_zero;
    slow_call reader;
    struct timespec t0;
    int i;
    if (!one_connection(&cfg, &srv, &ch)) return;
    async_cb_runs = 0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    slow_call_start(&reader, ch, 800, 0, 1, &t0);
    mprpc_controller_init(&actl);
    rq.delay_ms = 10;
    rq.seq = 2;
    CHECK_STATUS(MPRPC_CALL_ASYNC(ch, "TestService", "Deferred", testsvc_EchoRequest, &rq, testsvc_EchoResponse,
                                  &rs, &actl, async_cb, NULL), MPRPC_OK);
    for (i = 0; i < 400 && __atomic_load_n(&async_cb_runs, __ATOMIC_SEQ_CST) == 0; i++) sleep_ms(5);
    pthread_join(reader.t, NULL);
    CHECK(__atomic_load_n(&async_cb_runs, __ATOMIC_SEQ_CST) == 1);
    CHECK_STATUS(async_cb_status, MPRPC_OK);
    CHECK(rs.seq == 2);
    CHECK(!pthread_equal(async_cb_thread, reader.t) && !pthread_equal(async_cb_thread, pthread_self()));
    CHECK_STATUS(reader.status, MPRPC_OK);
    teardown(srv, ch);
}

/* A blocking call's reply and an async call's reply arrive in one segment: both are handled, the async
 * one without waiting for more data (a reader that stops after its own reply must hand on the rest: a
 * leader/follower experiment on branch perf lost it, and the async call timed out). */
static void replies_to_a_blocking_and_an_async_call_in_one_segment_both_complete(void)
{
    fake_provider fp;
    mprpc_config cfg;
    mprpc_channel *ch;
    mprpc_controller actl, ctl;
    testsvc_EchoRequest rq = testsvc_EchoRequest_init_zero;
    testsvc_EchoResponse rs = testsvc_EchoResponse_init_zero;
    slow_call reader;
    struct timespec t0;
    int i;
    mprpc_controller_init(&ctl);
    CHECK(fake_start(&fp, FAKE_PAIRED));
    test_config(&cfg);
    cfg.rpcserver_port = fp.port;
    cfg.rpc_timeout_ms = 3000;
    cfg.channel_connections_per_provider = 1;
    mprpc_channel_new(&ch, &cfg);
    /* first a pair that opens the connection (an async call, answered with a blocking one) */
    async_cb_runs = 0;
    mprpc_controller_init(&actl);
    CHECK_STATUS(MPRPC_CALL_ASYNC(ch, "TestService", "Echo", testsvc_EchoRequest, &rq, testsvc_EchoResponse,
                                  &rs, &actl, async_cb, NULL), MPRPC_OK);
    CHECK_STATUS(echo_call(ch, "open", 9, &ctl, &rs), MPRPC_OK);
    for (i = 0; i < 200 && __atomic_load_n(&async_cb_runs, __ATOMIC_SEQ_CST) == 0; i++) sleep_ms(5);
    async_cb_runs = 0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    slow_call_start(&reader, ch, 0, 0, 1, &t0); /* answered only with the next request */
    mprpc_controller_init(&actl);
    CHECK_STATUS(MPRPC_CALL_ASYNC(ch, "TestService", "Echo", testsvc_EchoRequest, &rq, testsvc_EchoResponse,
                                  &rs, &actl, async_cb, NULL), MPRPC_OK);
    pthread_join(reader.t, NULL);
    CHECK_STATUS(reader.status, MPRPC_OK);
    for (i = 0; i < 200 && __atomic_load_n(&async_cb_runs, __ATOMIC_SEQ_CST) == 0; i++) sleep_ms(5);
    CHECK(__atomic_load_n(&async_cb_runs, __ATOMIC_SEQ_CST) == 1); /* within 1 s, not at the 3 s timeout */
    CHECK_STATUS(async_cb_status, MPRPC_OK);
    mprpc_channel_free(ch);
    fake_stop(&fp);
}

/* ---- what a churn of providers or a burst of services took is given back ---- */
/* White-box: this file includes the implementation, so the tests reinstall a table as a registry
 * generation would (mprpc__svc_install) and count the channel's entries. */

static void reinstall(mprpc_channel *ch, mprpc__svc *s, const char *a, const char *b)
{
    char addrs[2][MPRPC_ADDR_MAX];
    snprintf(addrs[0], sizeof addrs[0], "%s", a);
    snprintf(addrs[1], sizeof addrs[1], "%s", b ? b : "");
    pthread_mutex_lock(&ch->mu);
    CHECK(mprpc__svc_install(ch, s, addrs, b ? 2 : 1) == MPRPC_OK);
    pthread_mutex_unlock(&ch->mu);
}

static size_t provider_entries(mprpc_channel *ch)
{
    size_t n;
    pthread_mutex_lock(&ch->mu);
    n = ch->nprovs;
    pthread_mutex_unlock(&ch->mu);
    return n;
}

/* Poll mode: runs the channel's turns for up to ms, until *flag (if given) is set. */
static void drive(mprpc_channel *ch, int ms, const int *flag)
{
    int i;
    for (i = 0; i < ms / 10 && !(flag && __atomic_load_n(flag, __ATOMIC_SEQ_CST)); i++) {
        struct pollfd pf;
        pf.fd = mprpc_channel_fd(ch);
        pf.events = POLLIN;
        poll(&pf, 1, 10);
        mprpc_channel_dispatch(ch);
    }
}

/* 1,000 generations, each listing a real provider and one on a new address (nobody listens there), with
 * a call in each: the channel keeps entries for the providers listed now, not for every one it saw. */
static void provider_churn_keeps_a_bounded_number_of_entries(void)
{
    mprpc_config cfg;
    mprpc_server *srv;
    mprpc_channel *ch;
    mprpc_controller ctl;
    testsvc_EchoResponse rs;
    char real[MPRPC_ADDR_MAX], gone[MPRPC_ADDR_MAX];
    size_t most = 0;
    int i, ok = 0;
    if (!(srv = provider_up(&cfg))) return;
    cfg.channel_io_thread = 0; /* poll mode: the sweep runs in the calls' own turns, on this thread */
    CHECK(mprpc_channel_new(&ch, &cfg) == MPRPC_OK);
    mprpc_controller_init(&ctl);
    snprintf(real, sizeof real, "127.0.0.1:%d", cfg.rpcserver_port);
    for (i = 0; i < 1000; i++) {
        snprintf(gone, sizeof gone, "unix:@mprpc-churn-%d-%d", (int)getpid(), i);
        reinstall(ch, ch->direct, i % 2 ? gone : real, i % 2 ? real : gone);
        ok += echo_call(ch, "churn", (uint64_t)i, &ctl, &rs) == MPRPC_OK; /* fails over from gone */
        if (provider_entries(ch) > most) most = provider_entries(ch);
    }
    CHECK(ok == 1000);
    CHECK(most <= 3); /* the real one, this generation's, at most the last one's; the old code kept 1,001 */
    teardown(srv, ch);
}

static int delisted_done;
static mprpc_status delisted_status;

static void delisted_cb(mprpc_controller *ctl, void *response, void *user)
{
    (void)response;
    (void)user;
    delisted_status = ctl->status;
    __atomic_store_n(&delisted_done, 1, __ATOMIC_SEQ_CST);
}

/* A provider the registry no longer lists keeps its entry and its connection while a call on it is in
 * flight (the call gets its reply); then its idle connection is closed and its entry freed. */
static void a_delisted_provider_is_freed_after_its_last_call(void)
{
    mprpc_config cfg, other;
    mprpc_server *a, *b;
    mprpc_channel *ch;
    mprpc_controller ctl, actl;
    mprpc_server_stats st;
    testsvc_EchoRequest rq = testsvc_EchoRequest_init_zero;
    testsvc_EchoResponse rs, ars = testsvc_EchoResponse_init_zero;
    char addr_b[MPRPC_ADDR_MAX];
    if (!(a = provider_up(&cfg))) return;
    if (!(b = provider_up(&other))) { mprpc_server_free(a); return; }
    cfg.channel_io_thread = 0;
    CHECK(mprpc_channel_new(&ch, &cfg) == MPRPC_OK);
    mprpc_controller_init(&ctl);
    mprpc_controller_init(&actl);
    CHECK_STATUS(echo_call(ch, "open", 1, &ctl, &rs), MPRPC_OK); /* a connection to a */
    rq.delay_ms = 300;
    delisted_done = 0;
    CHECK_STATUS(MPRPC_CALL_ASYNC(ch, "TestService", "Deferred", testsvc_EchoRequest, &rq, testsvc_EchoResponse,
                                  &ars, &actl, delisted_cb, NULL), MPRPC_OK);
    snprintf(addr_b, sizeof addr_b, "127.0.0.1:%d", other.rpcserver_port);
    reinstall(ch, ch->direct, addr_b, NULL);
    drive(ch, 100, NULL);
    CHECK(provider_entries(ch) == 2); /* a stays: its call is in flight */
    drive(ch, 5000, &delisted_done);
    CHECK(__atomic_load_n(&delisted_done, __ATOMIC_SEQ_CST) == 1);
    CHECK_STATUS(delisted_status, MPRPC_OK);
    for (int i = 0; i < 300 && provider_entries(ch) > 1; i++) drive(ch, 10, NULL);
    CHECK(provider_entries(ch) == 1);
    CHECK(ch->nconns == 0); /* a's connection closed; b not dialled yet */
    CHECK_STATUS(echo_call(ch, "after", 2, &ctl, &rs), MPRPC_OK);
    mprpc_server_get_stats(b, &st);
    CHECK(st.calls == 1);
    mprpc_channel_free(ch);
    mprpc_server_free(b);
    mprpc_server_free(a);
}

/* A service table not called for MPRPC__SVC_IDLE_MS is dropped with the providers only it listed; one a
 * call still holds stays. */
static void an_idle_service_table_is_dropped(void)
{
    mprpc_config cfg;
    mprpc_channel *ch;
    mprpc__svc *idle, *held;
    test_config(&cfg);
    cfg.rpcserver_port = 1;
    cfg.channel_io_thread = 0; /* no I/O thread: this thread may run the sweep itself */
    CHECK(mprpc_channel_new(&ch, &cfg) == MPRPC_OK);
    pthread_mutex_lock(&ch->mu);
    idle = mprpc__svc_get(ch, "Idle");
    held = mprpc__svc_get(ch, "Held");
    pthread_mutex_unlock(&ch->mu);
    if (!idle || !held) { CHECK(idle && held); mprpc_channel_free(ch); return; }
    reinstall(ch, idle, "127.0.0.1:7", "unix:@mprpc-idle-a");
    reinstall(ch, held, "unix:@mprpc-idle-b", NULL);
    pthread_mutex_lock(&ch->mu);
    CHECK(ch->nsvcs == 3 && ch->nprovs == 4);
    idle->used_at = held->used_at = mprpc__now_ms();
    held->refs = 1;
    mprpc__sweep(ch, mprpc__now_ms() + MPRPC__SVC_IDLE_MS); /* ten minutes on */
    CHECK(ch->nsvcs == 2 && ch->svcs[1] == held);
    CHECK(ch->nprovs == 2); /* the direct one and held's */
    held->refs = 0;
    pthread_mutex_unlock(&ch->mu);
    mprpc_channel_free(ch);
}

/* ---- error texts carry the numbers (issue 12) ---- */

/* A request over max_message_size is refused before anything is sent, naming its size and the limit. */
static void an_oversized_request_names_its_size_and_the_limit(void)
{
    static uint8_t data[5000000];
    mprpc_bytes b;
    mprpc_config cfg;
    mprpc_channel *ch;
    mprpc_controller ctl;
    testsvc_BigRequest rq = testsvc_BigRequest_init_zero;
    testsvc_BigResponse rs = testsvc_BigResponse_init_zero;
    size_t size = 0;
    char want[120];
    test_config(&cfg);
    cfg.rpcserver_port = 1; /* never dialled */
    CHECK(mprpc_channel_new(&ch, &cfg) == MPRPC_OK);
    mprpc_controller_init(&ctl);
    b.data = data;
    b.size = sizeof data;
    rq.data.funcs.encode = mprpc_bytes_encode;
    rq.data.arg = &b;
    CHECK(pb_get_encoded_size(&size, testsvc_BigRequest_fields, &rq));
    snprintf(want, sizeof want, "request of %zu bytes exceeds max_message_size 4194304", size);
    CHECK_STATUS(MPRPC_CALL(ch, "TestService", "Big", testsvc_BigRequest, &rq, testsvc_BigResponse, &rs, &ctl),
                 MPRPC_ERR_TOO_LARGE);
    CHECK_CONTAINS(ctl.error_text, want);
    CHECK(!mprpc_controller_may_have_run(&ctl));
    mprpc_channel_free(ch);
}

/* A v1 reply announcing a body over max_message_size: the text names the announced size and the limit. */
static void an_oversized_reply_names_its_size_and_the_limit(void)
{
    fake_provider fp;
    mprpc_config cfg;
    mprpc_channel *ch;
    mprpc_controller ctl;
    testsvc_EchoResponse rs;
    CHECK(fake_start(&fp, FAKE_HUGE));
    test_config(&cfg);
    cfg.rpcserver_port = fp.port;
    mprpc_channel_new(&ch, &cfg);
    mprpc_controller_init(&ctl);
    CHECK_STATUS(echo_call(ch, "x", 1, &ctl, &rs), MPRPC_ERR_TOO_LARGE);
    CHECK_CONTAINS(ctl.error_text, "of 2147483648 bytes exceeds max_message_size 4194304");
    mprpc_channel_free(ch);
    fake_stop(&fp);
}

/* A seed provider that answers with more bytes than max_message_size (4 KiB at once, then waits for the
 * caller to close). */
static void *seed_flood_main(void *arg)
{
    int lfd = *(int *)arg, fd;
    uint8_t junk[4096];
    struct pollfd pf;
    pf.fd = lfd;
    pf.events = POLLIN;
    if (poll(&pf, 1, 5000) <= 0 || (fd = accept(lfd, NULL, NULL)) < 0) return NULL;
    raw_recv(fd, junk, 1, 2000); /* the request has begun to arrive */
    memset(junk, 'x', sizeof junk);
    raw_send_all(fd, junk, sizeof junk);
    raw_wait_closed(fd, 5000);
    close(fd);
    return NULL;
}

/* A seed (v0) reply has no announced size: the text names the limit and how much had been read. */
static void an_oversized_seed_reply_names_the_limit_and_the_bytes_read(void)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    mprpc_config cfg;
    mprpc_channel *ch;
    mprpc_controller ctl;
    testsvc_EchoResponse rs;
    pthread_t t;
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(bind(lfd, (struct sockaddr *)&sa, sizeof sa) == 0 && listen(lfd, 4) == 0);
    getsockname(lfd, (struct sockaddr *)&sa, &len);
    CHECK(pthread_create(&t, NULL, seed_flood_main, &lfd) == 0);
    test_config(&cfg);
    cfg.rpcserver_port = ntohs(sa.sin_port);
    cfg.channel_protocol_version = 0;
    cfg.max_message_size = 1024;
    mprpc_channel_new(&ch, &cfg);
    mprpc_controller_init(&ctl);
    CHECK_STATUS(echo_call(ch, "x", 1, &ctl, &rs), MPRPC_ERR_TOO_LARGE);
    CHECK_CONTAINS(ctl.error_text, "exceeds max_message_size 1024 (1025 bytes read so far)");
    mprpc_channel_free(ch);
    pthread_join(t, NULL);
    close(lfd);
}

/* ---- response callback fields the caller left without a decoder ---- */

/* Big's reply carries its bytes in a callback field (field 1). A caller that left it without a decoder
 * gets MPRPC_ERR_DECODE naming the field, not a silently empty field, over v1 and the seed format alike,
 * and finds its struct as it left it; a reply without the field decodes without a decoder; with one the
 * same reply decodes. */
static void a_reply_callback_field_without_a_decoder_is_refused_by_number(void)
{
    int v;
    for (v = 1; v >= 0; v--) {
        mprpc_config cfg;
        mprpc_server *srv;
        mprpc_channel *ch;
        mprpc_controller ctl;
        testsvc_BigRequest rq = testsvc_BigRequest_init_zero;
        testsvc_BigResponse rs = testsvc_BigResponse_init_zero;
        mprpc_bytes got;
        int mine;
        if (!(srv = provider_up(&cfg))) return;
        cfg.channel_protocol_version = v;
        CHECK(mprpc_channel_new(&ch, &cfg) == MPRPC_OK);
        mprpc_controller_init(&ctl);
        rq.size = 100;
        rq.fill = 7;
        rs.data.arg = &mine; /* the caller's own use of arg, with no decoder */
        CHECK_STATUS(MPRPC_CALL(ch, "TestService", "Big", testsvc_BigRequest, &rq, testsvc_BigResponse, &rs,
                                &ctl), MPRPC_ERR_DECODE);
        CHECK_CONTAINS(ctl.error_text, "response field 1 (a callback field) arrived but has no decoder");
        CHECK_CONTAINS(ctl.error_text, "set its funcs.decode before the call");
        CHECK(rs.data.funcs.decode == NULL && rs.data.arg == &mine);
        rq.size = 0; /* no bytes: the field is not on the wire */
        CHECK_STATUS(MPRPC_CALL(ch, "TestService", "Big", testsvc_BigRequest, &rq, testsvc_BigResponse, &rs,
                                &ctl), MPRPC_OK);
        CHECK(rs.data.funcs.decode == NULL && rs.data.arg == &mine);
        rq.size = 100;
        memset(&got, 0, sizeof got);
        rs.data.funcs.decode = mprpc_bytes_decode;
        rs.data.arg = &got;
        CHECK_STATUS(MPRPC_CALL(ch, "TestService", "Big", testsvc_BigRequest, &rq, testsvc_BigResponse, &rs,
                                &ctl), MPRPC_OK);
        CHECK(got.size == 100);
        CHECK(rs.data.funcs.decode == mprpc_bytes_decode);
        teardown(srv, ch);
    }
}

int main(void)
{
    RUN(garbage_reply_is_a_protocol_error);
    RUN(wrong_call_id_is_a_protocol_error);
    RUN(half_a_reply_then_silence_times_out);
    RUN(close_mid_reply_is_connection_lost);
    RUN(silent_provider_times_out);
    RUN(close_before_reply_is_connection_lost);
    RUN(oversized_reply_is_refused_unread);
    RUN(nobody_listening_is_a_connect_error);
    RUN(per_call_timeout_overrides_the_default);
    RUN(bad_arguments_fail_cleanly);
    RUN(blocking_threads_share_two_connections);
    RUN(max_connections_bounds_the_channel);
    RUN(busy_provider_passes_the_call_to_another);
    RUN(a_reader_hands_a_quicker_reply_to_its_caller_at_once);
    RUN(a_waiting_caller_times_out_on_time_while_another_reads);
    RUN(when_the_reader_times_out_the_others_still_get_their_replies);
    RUN(an_async_reply_read_by_a_blocking_caller_runs_on_the_completion_thread);
    RUN(replies_to_a_blocking_and_an_async_call_in_one_segment_both_complete);
    RUN(provider_churn_keeps_a_bounded_number_of_entries);
    RUN(a_delisted_provider_is_freed_after_its_last_call);
    RUN(an_idle_service_table_is_dropped);
    RUN(an_oversized_request_names_its_size_and_the_limit);
    RUN(an_oversized_reply_names_its_size_and_the_limit);
    RUN(an_oversized_seed_reply_names_the_limit_and_the_bytes_read);
    RUN(a_reply_callback_field_without_a_decoder_is_refused_by_number);
    return test_summary("test_channel");
}
