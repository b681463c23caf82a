/* The built-in admin service (mprpc.h section 7i) and the command-line caller build/mprpc-call, as real
 * processes against an in-process provider on a loopback port: health before, during and after a drain,
 * stats that match the calls made, every exit code of mprpc-call, admin_service = 0. Run from the
 * repository root (tests/run.sh does); MPRPC_CALL_BIN overrides build/mprpc-call. */
#define MPRPC_IMPLEMENTATION
#include "mprpc.h"
#include "support.h"

#include <sys/wait.h>

static const char *bin(void)
{
    const char *b = getenv("MPRPC_CALL_BIN");
    return b ? b : "build/mprpc-call";
}

/* Runs build/mprpc-call with args (a shell fragment); stdout and stderr into out. Returns the exit code. */
static int run_cli(char *out, size_t cap, const char *fmt, ...) MPRPC_PRINTF(3, 4);
static int run_cli(char *out, size_t cap, const char *fmt, ...)
{
    char args[1024], cmd[1400];
    size_t n = 0;
    FILE *p;
    int st;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "%s %s 2>&1 </dev/null", bin(), args);
    out[0] = '\0';
    if (!(p = popen(cmd, "r"))) return -1;
    while (n + 1 < cap) {
        size_t k = fread(out + n, 1, cap - 1 - n, p);
        if (k == 0) break;
        n += k;
    }
    out[n] = '\0';
    st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* ---- the Stats reply, decoded as a program would: MethodStats arrive through a callback ---- */

typedef struct method_seen {
    char     name[300];
    uint64_t calls, errors, application, decode, buckets, request_bytes;
} method_seen;

typedef struct stats_seen {
    method_seen m[16];
    int n;
} stats_seen;

static bool take_method(pb_istream_t *stream, const pb_field_t *field, void **arg)
{
    stats_seen *s = (stats_seen *)*arg;
    mprpc_admin_MethodStats ms;
    method_seen *m;
    pb_size_t i;
    (void)field;
    memset(&ms, 0, sizeof ms);
    if (!pb_decode(stream, mprpc_admin_MethodStats_fields, &ms) || s->n == 16) return false;
    m = &s->m[s->n++];
    memset(m, 0, sizeof *m);
    snprintf(m->name, sizeof m->name, "%s.%s", ms.service, ms.method);
    m->calls = ms.calls;
    m->errors = ms.errors;
    m->request_bytes = ms.request_bytes;
    for (i = 0; i < ms.errors_by_status_count; i++) {
        if (strcmp(ms.errors_by_status[i].status, "MPRPC_ERR_APPLICATION") == 0)
            m->application = ms.errors_by_status[i].count;
        if (strcmp(ms.errors_by_status[i].status, "MPRPC_ERR_DECODE") == 0) m->decode = ms.errors_by_status[i].count;
    }
    for (i = 0; i < ms.latency_count; i++) m->buckets += ms.latency[i].count;
    return true;
}

static const method_seen *find_method(const stats_seen *s, const char *name)
{
    int i;
    for (i = 0; i < s->n; i++)
        if (strcmp(s->m[i].name, name) == 0) return &s->m[i];
    return NULL;
}

static void echo_once(mprpc_channel *ch, int fail, int seq)
{
    testsvc_EchoRequest rq;
    testsvc_EchoResponse rs;
    mprpc_controller ctl;
    memset(&rq, 0, sizeof rq);
    rq.fail = fail != 0;
    rq.seq = (uint64_t)seq;
    mprpc_controller_init(&ctl);
    MPRPC_CALL(ch, "TestService", "Echo", testsvc_EchoRequest, &rq, testsvc_EchoResponse, &rs, &ctl);
    CHECK_STATUS(ctl.status, fail ? MPRPC_ERR_APPLICATION : MPRPC_OK);
}

static void stats_count_every_call_by_method_and_status(void)
{
    mprpc_config cfg;
    mprpc_server *srv;
    mprpc_channel *ch;
    mprpc_controller ctl;
    mprpc_admin_StatsRequest rq;
    mprpc_admin_StatsResponse rs;
    stats_seen seen;
    const method_seen *echo_m, *login_m;
    mprpc_buf reply;
    uint8_t junk[2] = { 0xff, 0xff }; /* a truncated varint: the provider cannot decode it */
    int i;
    if (!setup(&cfg, &srv, &ch, &ctl)) return;
    for (i = 0; i < 7; i++) echo_once(ch, 0, i);
    for (i = 0; i < 3; i++) echo_once(ch, 1, i);
    mprpc_buf_init(&reply);
    CHECK_STATUS(mprpc_channel_call_raw(ch, "TestService", "Echo", junk, sizeof junk, &reply, &ctl),
                 MPRPC_ERR_DECODE);
    CHECK_STATUS(mprpc_channel_call_raw(ch, "TestService", "NoSuchMethod", junk, 0, &reply, &ctl),
                 MPRPC_ERR_UNKNOWN_METHOD);
    mprpc_buf_free(&reply);
    memset(&rq, 0, sizeof rq);
    memset(&rs, 0, sizeof rs);
    memset(&seen, 0, sizeof seen);
    rs.methods.funcs.decode = take_method;
    rs.methods.arg = &seen;
    MPRPC_CALL(ch, MPRPC_ADMIN_SERVICE, "Stats", mprpc_admin_StatsRequest, &rq, mprpc_admin_StatsResponse, &rs, &ctl);
    CHECK_STATUS(ctl.status, MPRPC_OK);
    CHECK(rs.serving);
    CHECK(rs.io_threads == (uint64_t)cfg.io_threads);
    CHECK(rs.calls == 10 + 1);          /* the Stats call itself is running; the undecodable one never ran */
    CHECK(rs.call_errors == 3 + 1 + 1); /* application, decode, unknown method */
    CHECK(rs.bytes_in > 0 && rs.bytes_out > 0);
    CHECK(rs.connections_open >= 1);
    echo_m = find_method(&seen, "TestService.Echo");
    login_m = find_method(&seen, "UserServiceRpc.Login");
    CHECK(seen.n == 3 + 1 + 3); /* TestService, UserServiceRpc, then the admin service's own three */
    CHECK(echo_m && echo_m->calls == 11 && echo_m->errors == 4);
    CHECK(echo_m && echo_m->application == 3 && echo_m->decode == 1);
    CHECK(echo_m && echo_m->buckets == echo_m->calls); /* every call in one latency bucket */
    CHECK(echo_m && echo_m->request_bytes > 0);
    CHECK(login_m && login_m->calls == 0 && login_m->errors == 0);
    CHECK(find_method(&seen, "mprpc.admin.Admin.Health") != NULL);
    teardown(srv, ch);
}

static void stats_printed_by_mprpc_call_name_each_method(void)
{
    mprpc_config cfg;
    mprpc_server *srv;
    mprpc_channel *ch;
    mprpc_controller ctl;
    char out[8192];
    if (!setup(&cfg, &srv, &ch, &ctl)) return;
    echo_once(ch, 1, 1);
    echo_once(ch, 0, 2);
    CHECK(run_cli(out, sizeof out, "--stats 127.0.0.1:%d", cfg.rpcserver_port) == 0);
    CHECK_CONTAINS(out, "provider: SERVING");
    CHECK_CONTAINS(out, "MPRPC_ERR_APPLICATION=1");
    CHECK_CONTAINS(out, "TestService.Echo");
    CHECK_CONTAINS(out, "UserServiceRpc.Login");
    teardown(srv, ch);
}

/* ---- health: before, during and after a drain held by a deferred call ---- */

static void on_done(mprpc_controller *ctl, void *response, void *user)
{
    (void)ctl; (void)response;
    __atomic_store_n((int *)user, 1, __ATOMIC_RELEASE);
}

static void wait_deferred(mprpc_server *srv, uint64_t want)
{
    mprpc_server_stats st;
    int i;
    for (i = 0; i < 500; i++) {
        mprpc_server_get_stats(srv, &st);
        if (st.deferred_pending == want) return;
        sleep_ms(10);
    }
    CHECK(!"deferred_pending never reached the wanted count");
}

static void health_is_serving_then_not_while_draining_then_refused(void)
{
    mprpc_config cfg;
    mprpc_server *srv;
    mprpc_channel *ch;
    mprpc_controller ctl;
    testsvc_EchoRequest rq;
    testsvc_EchoResponse rs;
    mprpc_admin_HealthRequest hq;
    mprpc_admin_HealthResponse hs;
    char out[2048];
    int done = 0, i;
    if (!setup(&cfg, &srv, &ch, &ctl)) return;
    CHECK(run_cli(out, sizeof out, "--health 127.0.0.1:%d", cfg.rpcserver_port) == 0);
    CHECK_CONTAINS(out, "SERVING");
    CHECK(run_cli(out, sizeof out, "--health --service TestService 127.0.0.1:%d", cfg.rpcserver_port) == 0);
    CHECK(run_cli(out, sizeof out, "--health --service Nope 127.0.0.1:%d", cfg.rpcserver_port) == 1);
    CHECK_CONTAINS(out, "SERVICE_UNKNOWN");
    memset(&rq, 0, sizeof rq);
    rq.delay_ms = 1500; /* holds the drain this long */
    CHECK(MPRPC_CALL_ASYNC(ch, "TestService", "Deferred", testsvc_EchoRequest, &rq, testsvc_EchoResponse, &rs,
                           &ctl, on_done, &done) == MPRPC_OK);
    wait_deferred(srv, 1);
    mprpc_server_stop(srv);
    for (i = 0; i < 200 && mprpc__srv_state(srv) != MPRPC__SRV_STOPPING; i++) sleep_ms(5);
    CHECK(mprpc__srv_state(srv) == MPRPC__SRV_STOPPING);
    /* During the drain the listener is closed at once: a probe is refused, exit 3, never SERVING. */
    CHECK(run_cli(out, sizeof out, "--health --timeout 1000 127.0.0.1:%d", cfg.rpcserver_port) == 3);
    CHECK_CONTAINS(out, "MPRPC_ERR_");
    /* The handler itself, had a request got through, says NOT_SERVING while the server stops. */
    memset(&hq, 0, sizeof hq);
    memset(&hs, 0, sizeof hs);
    mprpc__admin_health(NULL, &hq, &hs, srv);
    CHECK(hs.status == mprpc_admin_HealthResponse_ServingStatus_NOT_SERVING);
    mprpc_server_run(srv); /* returns once the deferred call finished and the drain is over */
    for (i = 0; i < 500 && !__atomic_load_n(&done, __ATOMIC_ACQUIRE); i++) sleep_ms(10);
    CHECK_STATUS(ctl.status, MPRPC_OK); /* the held call was answered, not cut off */
    CHECK(run_cli(out, sizeof out, "--health --timeout 1000 127.0.0.1:%d", cfg.rpcserver_port) == 3);
    teardown(srv, ch);
}

/* ---- exit codes ---- */

static void every_exit_code_means_its_status_class(void)
{
    mprpc_config cfg;
    mprpc_server *srv;
    mprpc_channel *ch;
    mprpc_controller ctl;
    char out[4096];
    int port, closed_port;
    if (!setup(&cfg, &srv, &ch, &ctl)) return;
    port = cfg.rpcserver_port;
    {   /* a port nobody listens on: bound, then closed */
        mprpc_config c2;
        mprpc_server *s2;
        test_config(&c2);
        s2 = start_provider(&c2, 0);
        closed_port = c2.rpcserver_port;
        mprpc_server_free(s2);
    }
#define P "--proto proto/testsvc.proto 127.0.0.1:%d TestService "
    CHECK(run_cli(out, sizeof out, P "Echo -d 'payload: \"hi\" seq: 7'", port) == 0);
    CHECK_CONTAINS(out, "payload: \"hi\"");
    CHECK_CONTAINS(out, "seq: 7");
    CHECK(run_cli(out, sizeof out, "%s", "") == 2); /* no arguments */
    CHECK(run_cli(out, sizeof out, "--raw 127.0.0.1 TestService Echo") == 2);
    CHECK_CONTAINS(out, "ADDRESS: address '127.0.0.1' is not host:port");
    CHECK(run_cli(out, sizeof out, P "Echo -d 'no_such_field: 1'", port) == 2);
    CHECK_CONTAINS(out, "no_such_field");
    CHECK(run_cli(out, sizeof out, P "NotInTheProto -d ''", port) == 2);
    CHECK_CONTAINS(out, "declares no rpc NotInTheProto");
    CHECK(run_cli(out, sizeof out, "--proto /nonexistent.proto 127.0.0.1:%d TestService Echo -d ''", port) == 2);
    CHECK(run_cli(out, sizeof out, P "Echo -d ''", closed_port) == 3);
    CHECK_CONTAINS(out, "MPRPC_ERR_CONNECT");
    CHECK(run_cli(out, sizeof out, P "Deferred --timeout 300 -d 'delay_ms: 2000'", port) == 4);
    CHECK_CONTAINS(out, "MPRPC_ERR_TIMEOUT");
    CHECK_CONTAINS(out, "300 ms");
    CHECK(run_cli(out, sizeof out, P "Echo -d 'fail: true seq: 9'", port) == 5);
    CHECK_CONTAINS(out, "MPRPC_ERR_APPLICATION: echo asked to fail (seq 9)");
    CHECK(run_cli(out, sizeof out, "--raw -d '' 127.0.0.1:%d TestService NoSuchMethod", port) == 6);
    CHECK_CONTAINS(out, "MPRPC_ERR_UNKNOWN_METHOD");
    CHECK(run_cli(out, sizeof out, "--raw -d '' 127.0.0.1:%d NoSuchService Echo", port) == 6);
    CHECK_CONTAINS(out, "MPRPC_ERR_UNKNOWN_SERVICE");
    CHECK(run_cli(out, sizeof out, "--health --service Nope 127.0.0.1:%d", port) == 1);
    CHECK(run_cli(out, sizeof out, "--repeat 20 " P "Echo -d 'seq: 1'", port) == 0);
    CHECK_CONTAINS(out, "20 calls, 20 ok, 0 failed; latency us: min");
    CHECK_CONTAINS(out, "p99");
#undef P
    teardown(srv, ch);
}

static void admin_service_0_serves_no_admin_service(void)
{
    mprpc_config cfg;
    mprpc_server *srv;
    char out[2048];
    test_config(&cfg);
    CHECK_STATUS(mprpc_config_set(&cfg, "admin_service", "0"), MPRPC_OK);
    srv = start_provider(&cfg, 0);
    CHECK(srv != NULL);
    if (!srv) return;
    CHECK(run_cli(out, sizeof out, "--health 127.0.0.1:%d", cfg.rpcserver_port) == 6);
    CHECK_CONTAINS(out, "MPRPC_ERR_UNKNOWN_SERVICE");
    CHECK(srv->mstats == NULL); /* and no counters are kept */
    mprpc_server_free(srv);
}

static void a_program_service_named_like_the_admin_service_needs_admin_service_0(void)
{
    static const mprpc_method m[] = { MPRPC_METHOD("Echo", testsvc_EchoRequest, testsvc_EchoResponse, echo) };
    static const mprpc_service own = MPRPC_SERVICE(MPRPC_ADMIN_SERVICE, m, NULL);
    mprpc_config cfg;
    mprpc_server *srv;
    test_config(&cfg);
    cfg.rpcserver_port = 0;
    CHECK(mprpc_server_new(&srv, &cfg) == MPRPC_OK);
    CHECK(mprpc_server_add_service(srv, &own) == MPRPC_OK);
    CHECK_STATUS(mprpc_server_start(srv), MPRPC_ERR_CONFIG);
    CHECK_CONTAINS(mprpc_server_error(srv), "admin_service = 0");
    mprpc_server_free(srv);
}

int main(void)
{
    RUN(stats_count_every_call_by_method_and_status);
    RUN(stats_printed_by_mprpc_call_name_each_method);
    RUN(health_is_serving_then_not_while_draining_then_refused);
    RUN(every_exit_code_means_its_status_class);
    RUN(admin_service_0_serves_no_admin_service);
    RUN(a_program_service_named_like_the_admin_service_needs_admin_service_0);
    return test_summary("test_admin");
}
