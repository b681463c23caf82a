/* ZooKeeper registry and discovery against real ZooKeeper servers (Debian's
 * `zookeeper` package, started by tests/zk/zk.sh on free loopback ports with
 * throw-away data dirs): registration, discovery, load spreading, a provider
 * killed with SIGKILL, a new provider, ZooKeeper stopped and restarted under
 * load, forced session expiry, ZooKeeper unreachable, the seed's node layout,
 * digest auth + ACLs, no secret in the log, and a 3-node ensemble losing its
 * leader while calls go on. Providers run in-process (when the test needs
 * their session) or as child processes (this binary re-executed with
 * --provider) so that they can be killed.
 *
 * The servers are stopped by pid at exit (atexit), on SIGINT/SIGTERM/SIGSEGV/
 * SIGABRT (handler), and, should this process die some other way (SIGKILL, a
 * sanitizer's _exit), by a guard process that waits for it to disappear. No
 * java or no ZooKeeper is a failure, never a skip.
 *   test_registry                 run the cases (from the repository root)
 *   test_registry CASE...         the named cases only (after zookeeper_server_starts)
 *   test_registry --provider NAME HOSTS [key=value ...]   a provider child */
#define MPRPC_THREAD_STACK_SIZE (2u << 20) /* the registry worker must get it too (issue 11, item 20) */
#define MPRPC_IMPLEMENTATION
#include "mprpc.h"
#include "test.h"
#include "support.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>

/* ---- environment -------------------------------------------------------- */

static char g_self[512];            /* this binary, re-executed for provider children */
static const char *g_zksh = "tests/zk/zk.sh";
static char g_zkdir[128], g_ensdir[128], g_logdir[128];
static char g_hosts[256];           /* the standalone server, "127.0.0.1:port" */
static int  g_slow = 1;             /* MPRPC_TEST_SLOW: time bounds scale with it (valgrind) */
static pid_t g_children[16];        /* provider children still to be reaped */

static uint64_t now_ms(void) { return mprpc__now_ms(); }

#define WAIT_FOR(cond, ms)                                                          \
    do {                                                                            \
        uint64_t until_ = now_ms() + (uint64_t)(ms) * (uint64_t)g_slow;             \
        while (!(cond) && now_ms() < until_) sleep_ms(20);                          \
    } while (0)

static void note(const char *fmt, ...) MPRPC_PRINTF(1, 2);
static void note(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("     ");
    vprintf(fmt, ap);
    printf("\n");
    fflush(stdout);
    va_end(ap);
}

/* test_registry CASE...: only the named cases run (zookeeper_server_starts always: the others need it). */
static char **g_only;
static int g_nonly;

static int wanted(const char *name)
{
    int i;
    if (g_nonly == 0 || strcmp(name, "zookeeper_server_starts") == 0) return 1;
    for (i = 0; i < g_nonly; i++)
        if (strcmp(g_only[i], name) == 0) return 1;
    return 0;
}

#define CASE(fn) do { if (wanted(#fn)) RUN(fn); } while (0)

/* ---- the log, as the tests see it: counts of lines containing each pattern ---- */

static const char *const g_log_patterns[] = {
    "is held by another live session",       /* 0: two providers on one address, said once */
    "registry: registered /mprpc/Dup/",      /* 1: creations of the shared node */
    "seed C++ callers look up",              /* 2: seed keys with zookeeper_seed_layout = 0 are warned about */
    "ignoring all",                          /* 3: a caller with credentials, open parent */
    "ignoring provider 7.7.7.7:777",         /* 4: a caller with credentials, open node */
    "connection to ZooKeeper recovered",     /* 5: the same session back after a connection loss */
};
static int g_log_counts[MPRPC_COUNTOF(g_log_patterns)];
static pthread_mutex_t g_log_mu = PTHREAD_MUTEX_INITIALIZER;

static void log_sink(mprpc_log_level level, const char *line, void *user)
{
    size_t i;
    (void)level; (void)user;
    pthread_mutex_lock(&g_log_mu);
    for (i = 0; i < MPRPC_COUNTOF(g_log_patterns); i++)
        if (strstr(line, g_log_patterns[i])) g_log_counts[i]++;
    pthread_mutex_unlock(&g_log_mu);
}

static int log_count(int pattern)
{
    int n;
    pthread_mutex_lock(&g_log_mu);
    n = g_log_counts[pattern];
    pthread_mutex_unlock(&g_log_mu);
    return n;
}

/* Runs zk.sh VERB DIR ARGS; its stdout (trimmed) into out. Returns the exit status. */
static int zk_run(const char *verb, const char *dir, const char *args, char *out, size_t outlen)
{
    char cmd[1024], sink[256];
    size_t n = 0;
    FILE *f;
    int rc;
    snprintf(cmd, sizeof cmd, "%s %s %s %s", g_zksh, verb, dir, args ? args : "");
    f = popen(cmd, "r");
    if (!f) return -1;
    if (out && outlen) {
        n = fread(out, 1, outlen - 1, f);
        out[n] = '\0';
        while (n && out[n - 1] == '\n') out[--n] = '\0';
    }
    while (fread(sink, 1, sizeof sink, f) > 0) {}
    rc = pclose(f);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static void kill_children(void)
{
    size_t i;
    for (i = 0; i < MPRPC_COUNTOF(g_children); i++)
        if (g_children[i] > 0) {
            kill(g_children[i], SIGKILL);
            waitpid(g_children[i], NULL, 0);
            g_children[i] = 0;
        }
}

static void stop_servers(void)
{
    char cmd[1024];
    kill_children();
    if (g_zkdir[0]) {
        snprintf(cmd, sizeof cmd, "%s stop %s >/dev/null 2>&1; rm -rf %s", g_zksh, g_zkdir, g_zkdir);
        if (system(cmd) != 0) fprintf(stderr, "could not stop ZooKeeper under %s\n", g_zkdir);
        g_zkdir[0] = '\0';
    }
    if (g_ensdir[0]) {
        snprintf(cmd, sizeof cmd, "%s stop %s >/dev/null 2>&1; rm -rf %s", g_zksh, g_ensdir, g_ensdir);
        if (system(cmd) != 0) fprintf(stderr, "could not stop the ensemble under %s\n", g_ensdir);
        g_ensdir[0] = '\0';
    }
}

static void on_fatal_signal(int sig)
{
    stop_servers(); /* not async-signal-safe, but the process is going down anyway */
    signal(sig, SIG_DFL);
    raise(sig);
}

/* A detached shell that stops what zk.sh started under dir once this process is gone, however it died. */
static void guard_dir(const char *dir)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "setsid sh -c 'while kill -0 %d 2>/dev/null; do sleep 1; done; %s stop %s; rm -rf %s' "
             ">/dev/null 2>&1 </dev/null &", (int)getpid(), g_zksh, dir, dir);
    if (system(cmd) != 0) fprintf(stderr, "could not start the guard for %s\n", dir);
}

/* ---- a raw ZooKeeper handle: what the server really holds ---------------- */

static int raw_connected; /* atomic: set by the raw client's thread */

static void raw_log(const char *m) { (void)m; }

static void raw_watcher(zhandle_t *zh, int type, int state, const char *path, void *ctx)
{
    (void)zh; (void)path; (void)ctx;
    if (type == ZOO_SESSION_EVENT && state == ZOO_CONNECTED_STATE)
        __atomic_store_n(&raw_connected, 1, __ATOMIC_SEQ_CST);
}

static zhandle_t *raw_open_id(const char *hosts, const clientid_t *id)
{
    zhandle_t *zh;
    __atomic_store_n(&raw_connected, 0, __ATOMIC_SEQ_CST);
    zh = zookeeper_init2(hosts, raw_watcher, 6000, id, NULL, 0, raw_log);
    if (!zh) return NULL;
    WAIT_FOR(__atomic_load_n(&raw_connected, __ATOMIC_SEQ_CST), 8000);
    if (!__atomic_load_n(&raw_connected, __ATOMIC_SEQ_CST)) {
        zookeeper_close(zh);
        return NULL;
    }
    return zh;
}

static zhandle_t *raw_open(const char *hosts) { return raw_open_id(hosts, NULL); }

/* zoo_get into buf (NUL-terminated); *len is -1 for a node without data. */
static int raw_get(zhandle_t *zh, const char *path, char *buf, int *len, struct Stat *st)
{
    int rc;
    *len = 511;
    rc = zoo_get(zh, path, 0, buf, len, st);
    if (rc == ZOK) buf[*len > 0 ? *len : 0] = '\0';
    return rc;
}

/* The session owning an ephemeral node; 0 for a persistent one, -1 when absent. */
static long long owner_of(zhandle_t *zh, const char *path)
{
    struct Stat st;
    if (!zh || zoo_exists(zh, path, 0, &st) != ZOK) return -1;
    return (long long)st.ephemeralOwner;
}

static long long session_of(mprpc__registry *r)
{
    long long s;
    pthread_mutex_lock(&r->mu);
    s = r->session_id;
    pthread_mutex_unlock(&r->mu);
    return s;
}

static unsigned long caller_fetches(mprpc_channel *ch)
{
    unsigned long n;
    if (!ch->registry) return 0;
    pthread_mutex_lock(&ch->registry->mu);
    n = ch->registry->caller_fetches;
    pthread_mutex_unlock(&ch->registry->mu);
    return n;
}

/* ---- the service every provider here offers: Who answers its instance name ---- */

static void who(mprpc_call *call, const void *request, void *response, void *user)
{
    testsvc_EchoResponse *rs = (testsvc_EchoResponse *)response;
    const char *name = (const char *)user;
    (void)call;
    rs->seq = ((const testsvc_EchoRequest *)request)->seq;
    rs->payload.size = (pb_size_t)strlen(name);
    memcpy(rs->payload.bytes, name, rs->payload.size);
}

static const mprpc_method who_methods[] = {
    MPRPC_METHOD("Who", testsvc_EchoRequest, testsvc_EchoResponse, who),
};

/* Calls RegTest.Who once; on success the instance name goes to name. */
static mprpc_status who_call(mprpc_channel *ch, char *name, size_t cap, mprpc_controller *ctl)
{
    testsvc_EchoRequest rq = testsvc_EchoRequest_init_zero;
    testsvc_EchoResponse rs = testsvc_EchoResponse_init_zero;
    mprpc_status st;
    mprpc_controller_init(ctl);
    st = MPRPC_CALL(ch, "RegTest", "Who", testsvc_EchoRequest, &rq, testsvc_EchoResponse, &rs, ctl);
    if (name && cap) snprintf(name, cap, "%.*s", (int)rs.payload.size, (const char *)rs.payload.bytes);
    return st;
}

/* Tallies n calls by instance; returns the number of failed calls. */
typedef struct tally { char name[8][32]; int count[8]; int kinds; int failed; char last_error[320]; } tally;

static void tally_add(tally *t, const char *name)
{
    int i;
    for (i = 0; i < t->kinds && strcmp(t->name[i], name) != 0; i++) {}
    if (i == t->kinds && t->kinds < 8) snprintf(t->name[t->kinds++], sizeof t->name[0], "%s", name);
    if (i < 8) t->count[i]++;
}

static int tally_of(const tally *t, const char *name)
{
    int i;
    for (i = 0; i < t->kinds; i++)
        if (strcmp(t->name[i], name) == 0) return t->count[i];
    return 0;
}

static void call_n(mprpc_channel *ch, int n, tally *t)
{
    mprpc_controller ctl;
    char name[32];
    int i;
    for (i = 0; i < n; i++) {
        if (who_call(ch, name, sizeof name, &ctl) == MPRPC_OK) {
            tally_add(t, name);
        } else {
            t->failed++;
            snprintf(t->last_error, sizeof t->last_error, "%s", ctl.error_text);
        }
    }
}

/* ---- configs ---- */

static void zk_config(mprpc_config *cfg, const char *hosts)
{
    test_config(cfg);
    cfg->log_level = MPRPC_LOG_LEVEL_DEBUG;
    cfg->rpc_timeout_ms = 5000 * g_slow;
    snprintf(cfg->zookeeper_hosts, sizeof cfg->zookeeper_hosts, "%s", hosts);
    cfg->zookeeper_session_timeout_ms = 4000;
    cfg->zookeeper_connect_timeout_ms = 5000 * g_slow;
}

static mprpc_server *start_who(mprpc_config *cfg, mprpc_service *svc, const char *name)
{
    mprpc_server *srv = NULL;
    mprpc_service s = MPRPC_SERVICE("RegTest", who_methods, NULL);
    s.user = (void *)(uintptr_t)name;
    *svc = s;
    cfg->rpcserver_port = 0;
    if (mprpc_server_new(&srv, cfg) != MPRPC_OK) return NULL;
    if (mprpc_server_add_service(srv, svc) != MPRPC_OK || mprpc_server_start(srv) != MPRPC_OK) {
        note("start_who %s: %s", name, mprpc_server_error(srv));
        mprpc_server_free(srv);
        return NULL;
    }
    return srv;
}

/* ---- provider children ---- */

static mprpc_server *child_server;

static void child_on_term(int sig)
{
    (void)sig;
    mprpc_server_stop(child_server);
}

/* --provider NAME HOSTS [key=value ...]: serves RegTest.Who until SIGTERM; prints "READY port". */
static int provider_main(int argc, char **argv)
{
    mprpc_config cfg;
    mprpc_service svc;
    mprpc_status st;
    int i;
    if (argc < 4) return 2;
    zk_config(&cfg, argv[3]);
    for (i = 4; i < argc; i++) {
        char key[64];
        const char *eq = strchr(argv[i], '=');
        if (!eq || (size_t)(eq - argv[i]) >= sizeof key) return 2;
        memcpy(key, argv[i], (size_t)(eq - argv[i]));
        key[eq - argv[i]] = '\0';
        if (mprpc_config_set(&cfg, key, eq + 1) != MPRPC_OK) {
            printf("ERROR %s\n", cfg.error);
            return 2;
        }
    }
    if (cfg.log_dir[0] && mprpc_logger_start(&cfg) != MPRPC_OK) {
        printf("ERROR logger: %s\n", cfg.error);
        return 1;
    }
    signal(SIGTERM, child_on_term);
    child_server = start_who(&cfg, &svc, argv[2]);
    if (!child_server) {
        printf("ERROR cannot start\n");
        return 1;
    }
    printf("READY %d\n", mprpc_server_port(child_server));
    fflush(stdout);
    st = mprpc_server_run(child_server);
    mprpc_server_free(child_server);
    mprpc_logger_stop();
    return st == MPRPC_OK ? 0 : 1;
}

typedef struct child { pid_t pid; int port; char name[32]; char node[128]; } child;

static void forget_child(pid_t pid)
{
    size_t i;
    for (i = 0; i < MPRPC_COUNTOF(g_children); i++)
        if (g_children[i] == pid) g_children[i] = 0;
}

/* Starts a provider child registered in hosts; 1 once it serves (and so is registered). */
static int spawn_provider(child *c, const char *name, const char *hosts, const char *extra)
{
    char line[128], logarg[160];
    int fds[2];
    size_t got = 0, i;
    pid_t pid;
    memset(c, 0, sizeof *c);
    snprintf(c->name, sizeof c->name, "%s", name);
    snprintf(logarg, sizeof logarg, "log_dir=%s", g_logdir);
    if (pipe(fds) != 0) return 0;
    pid = fork();
    if (pid < 0) return 0;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the test */
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        execl(g_self, g_self, "--provider", name, hosts, logarg, extra ? extra : "log_stderr=0",
              (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    for (i = 0; i < MPRPC_COUNTOF(g_children); i++)
        if (!g_children[i]) { g_children[i] = pid; break; }
    c->pid = pid;
    line[0] = '\0';
    while (got + 1 < sizeof line && !strchr(line, '\n')) {
        struct pollfd pf;
        ssize_t k;
        pf.fd = fds[0];
        pf.events = POLLIN;
        if (poll(&pf, 1, 15000 * g_slow) <= 0) break;
        k = read(fds[0], line + got, sizeof line - 1 - got);
        if (k <= 0) break;
        got += (size_t)k;
        line[got] = '\0';
    }
    line[got] = '\0';
    close(fds[0]);
    if (sscanf(line, "READY %d", &c->port) != 1) {
        note("provider %s did not start: %s", name, got ? line : "(no output)");
        return 0;
    }
    snprintf(c->node, sizeof c->node, "/mprpc/RegTest/127.0.0.1:%d", c->port);
    return 1;
}

/* Ends a child with sig and reaps it; returns its wait status. */
static int end_child(child *c, int sig)
{
    int status = -1;
    if (c->pid <= 0) return -1;
    kill(c->pid, sig);
    waitpid(c->pid, &status, 0);
    forget_child(c->pid);
    c->pid = 0;
    return status;
}

/* ---- load: threads calling through one channel ---- */

typedef struct load {
    mprpc_channel *ch;
    int stop;                 /* atomic */
    pthread_mutex_t mu;
    tally t;
    pthread_t th[2];
} load;

static void *load_main(void *arg)
{
    load *l = (load *)arg;
    while (!__atomic_load_n(&l->stop, __ATOMIC_RELAXED)) {
        mprpc_controller ctl;
        char name[32];
        mprpc_status st = who_call(l->ch, name, sizeof name, &ctl);
        pthread_mutex_lock(&l->mu);
        if (st == MPRPC_OK) {
            tally_add(&l->t, name);
        } else {
            l->t.failed++;
            snprintf(l->t.last_error, sizeof l->t.last_error, "%s: %s", mprpc_status_name(st), ctl.error_text);
        }
        pthread_mutex_unlock(&l->mu);
        sleep_ms(2);
    }
    return NULL;
}

static void load_start(load *l, mprpc_channel *ch)
{
    size_t i;
    memset(l, 0, sizeof *l);
    l->ch = ch;
    pthread_mutex_init(&l->mu, NULL);
    for (i = 0; i < MPRPC_COUNTOF(l->th); i++) pthread_create(&l->th[i], NULL, load_main, l);
}

static tally load_snapshot(load *l)
{
    tally t;
    pthread_mutex_lock(&l->mu);
    t = l->t;
    pthread_mutex_unlock(&l->mu);
    return t;
}

static int load_total(const tally *t)
{
    int i, n = 0;
    for (i = 0; i < t->kinds; i++) n += t->count[i];
    return n;
}

static tally load_stop(load *l)
{
    size_t i;
    __atomic_store_n(&l->stop, 1, __ATOMIC_RELAXED);
    for (i = 0; i < MPRPC_COUNTOF(l->th); i++) pthread_join(l->th[i], NULL);
    pthread_mutex_destroy(&l->mu);
    return l->t;
}

/* ---- the cases ---------------------------------------------------------- */

static zhandle_t *g_raw;          /* no credentials, on the standalone server */
static mprpc_channel *g_consumer; /* shared by the provider-process cases */
static child g_a, g_b, g_c;

static int zk_up(void)
{
    if (!g_hosts[0]) {
        fprintf(stderr, "no ZooKeeper server (see zookeeper_server_starts)\n");
        return 0;
    }
    return 1;
}

static void zookeeper_server_starts(void)
{
    uint64_t t0 = now_ms();
    int rc;
    snprintf(g_zkdir, sizeof g_zkdir, "/tmp/mprpc-zk.XXXXXX");
    CHECK(mkdtemp(g_zkdir) != NULL);
    guard_dir(g_zkdir);
    /* tickTime 500 ms: sessions may last 1 to 10 s */
    rc = zk_run("start", g_zkdir, "500", g_hosts, sizeof g_hosts);
    if (rc != 0 || strncmp(g_hosts, "127.0.0.1:", 10) != 0) {
        fprintf(stderr, "FAILED to start a ZooKeeper server with %s (exit %d): is the Debian package "
                "'zookeeper' installed and java on PATH? (scripts/deps.sh zk)\n", g_zksh, rc);
        g_hosts[0] = '\0';
        CHECK(!"ZooKeeper server started");
        return;
    }
    note("ZooKeeper %s ready in %llu ms", g_hosts, (unsigned long long)(now_ms() - t0));
    g_raw = raw_open(g_hosts);
    CHECK(g_raw != NULL);
}

/* An in-process provider registers <root>/RegTest/<ip:port> with its methods; a consumer finds it and
 * warm calls make no ZooKeeper round trip; no provider -> UNAVAILABLE naming the service; a clean stop
 * removes the node at once. */
static void registration_and_discovery(void)
{
    mprpc_config cfg;
    mprpc_service svc;
    mprpc_server *srv;
    mprpc_channel *ch;
    mprpc_controller ctl;
    testsvc_EchoRequest erq = testsvc_EchoRequest_init_zero;
    testsvc_EchoResponse ers = testsvc_EchoResponse_init_zero;
    char path[128], buf[512], want[128], name[32];
    struct Stat st;
    int len, i, ok = 0;
    if (!zk_up()) { CHECK(0); return; }
    zk_config(&cfg, g_hosts);
    srv = start_who(&cfg, &svc, "inproc");
    CHECK(srv != NULL);
    if (!srv) return;
    snprintf(path, sizeof path, "/mprpc/RegTest/127.0.0.1:%d", mprpc_server_port(srv));
    snprintf(want, sizeof want, "127.0.0.1:%d\nWho", mprpc_server_port(srv));
    CHECK(raw_get(g_raw, path, buf, &len, &st) == ZOK);
    CHECK(strcmp(buf, want) == 0);
    CHECK((long long)st.ephemeralOwner == session_of(srv->registry));
    CHECK(owner_of(g_raw, "/mprpc/RegTest") == 0); /* the parent is persistent */
    CHECK(owner_of(g_raw, "/mprpc") == 0);
    note("registered %s (data \"%s\")", path, strtok(buf, "\n"));

    zk_config(&cfg, g_hosts);
    CHECK_STATUS(mprpc_channel_new(&ch, &cfg), MPRPC_OK);
    CHECK_STATUS(who_call(ch, name, sizeof name, &ctl), MPRPC_OK);
    CHECK(strcmp(name, "inproc") == 0);
    for (i = 0; i < 200; i++) ok += who_call(ch, name, sizeof name, &ctl) == MPRPC_OK;
    CHECK(ok == 200);
    CHECK(caller_fetches(ch) == 1); /* 201 calls, one ZooKeeper read: the first */
    note("201 calls, %lu ZooKeeper read(s) by callers", caller_fetches(ch));

    CHECK_STATUS(MPRPC_CALL(ch, "NoSuchService", "Who", testsvc_EchoRequest, &erq, testsvc_EchoResponse, &ers,
                            &ctl), MPRPC_ERR_UNAVAILABLE);
    CHECK_CONTAINS(ctl.error_text, "NoSuchService");
    note("unknown service -> %s: %s", mprpc_status_name(ctl.status), ctl.error_text);

    mprpc_server_free(srv); /* clean stop: the session closes first */
    CHECK(owner_of(g_raw, path) == -1);
    WAIT_FOR(who_call(ch, NULL, 0, &ctl) == MPRPC_ERR_UNAVAILABLE, 3000);
    CHECK_STATUS(ctl.status, MPRPC_ERR_UNAVAILABLE);
    CHECK_CONTAINS(ctl.error_text, "RegTest");
    note("after the provider stopped -> %s: %s", mprpc_status_name(ctl.status), ctl.error_text);
    mprpc_channel_free(ch);
}

/* A provider on the dual-stack wildcard advertising an IPv6 address: the node is named with the
 * bracketed address and a caller dials it from there. The seed layout refuses it (seed callers read
 * IPv4 only). */
static void ipv6_advertise_address_is_registered_and_called(void)
{
    mprpc_config cfg;
    mprpc_service svc;
    mprpc_server *srv;
    mprpc_channel *ch;
    mprpc_controller ctl;
    char path[128], buf[512], name[32];
    struct Stat st;
    int len;
    if (!zk_up()) { CHECK(0); return; }
    zk_config(&cfg, g_hosts);
    CHECK_STATUS(mprpc_config_set(&cfg, "rpcserver_ip", "::"), MPRPC_OK);
    CHECK_STATUS(mprpc_config_set(&cfg, "advertise_ip", "::1"), MPRPC_OK);
    srv = start_who(&cfg, &svc, "v6");
    CHECK(srv != NULL);
    if (!srv) return;
    snprintf(path, sizeof path, "/mprpc/RegTest/[::1]:%d", mprpc_server_port(srv));
    CHECK(raw_get(g_raw, path, buf, &len, &st) == ZOK);
    note("registered %s", path);
    zk_config(&cfg, g_hosts);
    CHECK_STATUS(mprpc_channel_new(&ch, &cfg), MPRPC_OK);
    CHECK_STATUS(who_call(ch, name, sizeof name, &ctl), MPRPC_OK);
    CHECK(strcmp(name, "v6") == 0);
    mprpc_channel_free(ch);
    mprpc_server_free(srv);

    zk_config(&cfg, g_hosts);
    CHECK_STATUS(mprpc_config_set(&cfg, "rpcserver_ip", "::1"), MPRPC_OK);
    cfg.zookeeper_seed_layout = 1;
    srv = start_who(&cfg, &svc, "v6seed");
    CHECK(srv == NULL); /* start_who noted the reason: "seed callers read an IPv4 ip:port" */
    mprpc_server_free(srv);
}

/* Two provider processes: calls reach both. */
static void two_providers_share_calls(void)
{
    mprpc_config cfg;
    tally t;
    if (!zk_up()) { CHECK(0); return; }
    CHECK(spawn_provider(&g_a, "A", g_hosts, NULL));
    CHECK(spawn_provider(&g_b, "B", g_hosts, NULL));
    CHECK(owner_of(g_raw, g_a.node) > 0 && owner_of(g_raw, g_b.node) > 0);
    zk_config(&cfg, g_hosts);
    CHECK_STATUS(mprpc_channel_new(&g_consumer, &cfg), MPRPC_OK);
    memset(&t, 0, sizeof t);
    call_n(g_consumer, 40, &t);
    note("40 calls: A %d, B %d, failed %d %s", tally_of(&t, "A"), tally_of(&t, "B"), t.failed, t.last_error);
    CHECK(t.failed == 0);
    CHECK(tally_of(&t, "A") >= 10 && tally_of(&t, "B") >= 10);
}

/* SIGKILL one: every later call succeeds through the other; the dead node goes after the session timeout. */
static void killed_provider_is_skipped(void)
{
    tally t;
    uint64_t t0;
    int status;
    if (!zk_up() || !g_consumer || !g_a.pid) { CHECK(0); return; }
    status = end_child(&g_a, SIGKILL);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    t0 = now_ms();
    memset(&t, 0, sizeof t);
    while (owner_of(g_raw, g_a.node) > 0 && now_ms() - t0 < 15000u * (unsigned)g_slow) {
        call_n(g_consumer, 5, &t);
        sleep_ms(20);
    }
    note("dead node gone %llu ms after SIGKILL (session timeout 4000 ms); meanwhile %d calls to B, %d failed %s",
         (unsigned long long)(now_ms() - t0), tally_of(&t, "B"), t.failed, t.last_error);
    CHECK(owner_of(g_raw, g_a.node) == -1);
    CHECK(now_ms() - t0 >= 2000); /* not at once: nobody closed the session */
    CHECK(t.failed == 0 && tally_of(&t, "A") == 0 && tally_of(&t, "B") > 0);
    memset(&t, 0, sizeof t);
    call_n(g_consumer, 20, &t);
    CHECK(t.failed == 0 && tally_of(&t, "B") == 20);
}

/* A new provider appears: calls reach it without a new channel. */
static void new_provider_is_picked_up(void)
{
    tally t;
    uint64_t t0;
    if (!zk_up() || !g_consumer) { CHECK(0); return; }
    CHECK(spawn_provider(&g_c, "C", g_hosts, NULL));
    t0 = now_ms();
    memset(&t, 0, sizeof t);
    while (tally_of(&t, "C") == 0 && now_ms() - t0 < 5000u * (unsigned)g_slow) call_n(g_consumer, 2, &t);
    note("first call on C %llu ms after it registered", (unsigned long long)(now_ms() - t0));
    CHECK(tally_of(&t, "C") > 0 && t.failed == 0);
    memset(&t, 0, sizeof t);
    call_n(g_consumer, 20, &t);
    CHECK(tally_of(&t, "B") == 10 && tally_of(&t, "C") == 10 && t.failed == 0);
    CHECK(caller_fetches(g_consumer) == 1);
}

/* ZooKeeper stopped, then restarted, while two threads call: no call fails (cached providers are up),
 * and the registrations are back afterwards. */
static void zookeeper_restart_under_load(void)
{
    load l;
    tally t;
    char out[64];
    uint64_t t0;
    int before;
    if (!zk_up() || !g_consumer || !g_b.pid || !g_c.pid) { CHECK(0); return; }
    load_start(&l, g_consumer);
    sleep_ms(300);
    zookeeper_close(g_raw);
    g_raw = NULL;
    t0 = now_ms();
    CHECK(zk_run("stop", g_zkdir, NULL, NULL, 0) == 0);
    note("ZooKeeper stopped in %llu ms", (unsigned long long)(now_ms() - t0));
    t = load_snapshot(&l);
    before = load_total(&t);
    sleep_ms(1500);
    t = load_snapshot(&l);
    note("%d calls while ZooKeeper was down, %d failed", load_total(&t) - before, t.failed);
    CHECK(load_total(&t) > before);
    t0 = now_ms();
    CHECK(zk_run("restart", g_zkdir, NULL, out, sizeof out) == 0);
    CHECK(strcmp(out, g_hosts) == 0);
    note("ZooKeeper restarted on %s in %llu ms", out, (unsigned long long)(now_ms() - t0));
    g_raw = raw_open(g_hosts);
    CHECK(g_raw != NULL);
    WAIT_FOR(owner_of(g_raw, g_b.node) > 0 && owner_of(g_raw, g_c.node) > 0, 12000);
    note("registrations of B and C back %llu ms after the restart", (unsigned long long)(now_ms() - t0));
    CHECK(owner_of(g_raw, g_b.node) > 0 && owner_of(g_raw, g_c.node) > 0);
    sleep_ms(500);
    t = load_stop(&l);
    note("under load: %d calls (B %d, C %d), %d failed %s", load_total(&t), tally_of(&t, "B"),
         tally_of(&t, "C"), t.failed, t.last_error);
    CHECK(t.failed == 0);
    CHECK(tally_of(&t, "B") > 0 && tally_of(&t, "C") > 0);
}

/* Expires r's session: a second handle opens the same session (id and password) and closes it. If r's
 * client reconnects in between, the session moves back to it and the close does not end it: retry. */
static int force_expiry(mprpc__registry *r)
{
    long long old = session_of(r);
    int attempt;
    for (attempt = 1; attempt <= 5; attempt++) {
        clientid_t id;
        zhandle_t *twin;
        pthread_mutex_lock(&r->mu);
        id = *zoo_client_id(r->zh);
        pthread_mutex_unlock(&r->mu);
        twin = raw_open_id(g_hosts, &id);
        if (twin) zookeeper_close(twin);
        WAIT_FOR(session_of(r) != old && session_of(r) != 0, 6000);
        if (session_of(r) != old && session_of(r) != 0) return attempt;
    }
    return 0;
}

/* A forced session expiry: the provider opens a new session and registers again. */
static void session_expiry_reregisters(void)
{
    mprpc_config cfg;
    mprpc_service svc;
    mprpc_server *srv;
    mprpc_controller ctl;
    char path[128], name[32];
    long long old;
    uint64_t t0;
    int attempts;
    if (!zk_up() || !g_raw) { CHECK(0); return; }
    zk_config(&cfg, g_hosts);
    srv = start_who(&cfg, &svc, "expiring");
    CHECK(srv != NULL);
    if (!srv) return;
    snprintf(path, sizeof path, "/mprpc/RegTest/127.0.0.1:%d", mprpc_server_port(srv));
    old = session_of(srv->registry);
    CHECK(owner_of(g_raw, path) == old);
    t0 = now_ms();
    attempts = force_expiry(srv->registry);
    CHECK(attempts > 0);
    WAIT_FOR(owner_of(g_raw, path) == session_of(srv->registry), 10000);
    note("session 0x%llx expired (attempt %d); node re-created under 0x%llx after %llu ms",
         (unsigned long long)old, attempts, (unsigned long long)session_of(srv->registry),
         (unsigned long long)(now_ms() - t0));
    CHECK(session_of(srv->registry) != old);
    CHECK(owner_of(g_raw, path) == session_of(srv->registry));
    /* the consumer still reaches it (among the others) */
    WAIT_FOR(who_call(g_consumer, name, sizeof name, &ctl) == MPRPC_OK && strcmp(name, "expiring") == 0, 5000);
    CHECK(strcmp(name, "expiring") == 0);
    mprpc_server_free(srv);
    CHECK(owner_of(g_raw, path) == -1);
}

/* ---- discovery bounded by the call's deadline (issue 10) ---- */

#define STORM_THREADS 16

typedef struct storm_arg { mprpc_channel *ch; int timeout_ms; mprpc_status st; uint64_t ms; char text[320]; } storm_arg;

static void *storm_main(void *arg)
{
    storm_arg *a = (storm_arg *)arg;
    testsvc_EchoRequest rq = testsvc_EchoRequest_init_zero;
    testsvc_EchoResponse rs = testsvc_EchoResponse_init_zero;
    mprpc_controller ctl;
    uint64_t t0 = now_ms();
    mprpc_controller_init(&ctl);
    ctl.timeout_ms = a->timeout_ms;
    a->st = MPRPC_CALL(a->ch, "RegTest", "Who", testsvc_EchoRequest, &rq, testsvc_EchoResponse, &rs, &ctl);
    a->ms = now_ms() - t0;
    snprintf(a->text, sizeof a->text, "%s", ctl.error_text);
    return NULL;
}

/* 16 threads share one new channel whose ZooKeeper at hosts cannot answer; each calls with
 * ctl.timeout_ms = 1000 (zookeeper_connect_timeout_ms stays 5000): every one gets MPRPC_ERR_TIMEOUT
 * naming the hosts, after about 1 s, none queued behind another. */
static void deadline_storm(const char *hosts, const char *what)
{
    mprpc_config cfg;
    mprpc_channel *ch;
    storm_arg a[STORM_THREADS];
    pthread_t th[STORM_THREADS];
    uint64_t lo = (uint64_t)-1, hi = 0;
    int i;
    zk_config(&cfg, hosts);
    cfg.zookeeper_connect_timeout_ms = 5000;
    CHECK_STATUS(mprpc_channel_new(&ch, &cfg), MPRPC_OK);
    for (i = 0; i < STORM_THREADS; i++) {
        memset(&a[i], 0, sizeof a[i]);
        a[i].ch = ch;
        a[i].timeout_ms = 1000;
        CHECK(pthread_create(&th[i], NULL, storm_main, &a[i]) == 0);
    }
    for (i = 0; i < STORM_THREADS; i++) {
        pthread_join(th[i], NULL);
        CHECK_STATUS(a[i].st, MPRPC_ERR_TIMEOUT);
        CHECK_CONTAINS(a[i].text, hosts);
        CHECK(a[i].ms >= 950 && a[i].ms < 2500u * (unsigned)g_slow);
        if (a[i].ms < lo) lo = a[i].ms;
        if (a[i].ms > hi) hi = a[i].ms;
    }
    note("ZooKeeper %s: %d threads x 1000 ms calls -> %s after %llu..%llu ms: %s", what, STORM_THREADS,
         mprpc_status_name(a[0].st), (unsigned long long)lo, (unsigned long long)hi, a[0].text);
    mprpc_channel_free(ch);
}

/* A loopback port nothing listens on (bound, then released). */
static int refused_port(void)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0), port = 0;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    if (fd >= 0) close(fd);
    return port;
}

/* Nothing listens: every connection attempt is refused at once. */
static void discovery_deadline_zookeeper_refused(void)
{
    char hosts[64];
    int port = refused_port();
    CHECK(port > 0);
    snprintf(hosts, sizeof hosts, "127.0.0.1:%d", port);
    deadline_storm(hosts, "refused");
}

/* A listener that never accepts and never answers: TCP connects (the kernel's backlog), ZooKeeper's
 * handshake never comes back. */
static void discovery_deadline_zookeeper_black_holed(void)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    char hosts[64];
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 && listen(fd, 1) == 0 &&
          getsockname(fd, (struct sockaddr *)&sa, &len) == 0);
    snprintf(hosts, sizeof hosts, "127.0.0.1:%d", ntohs(sa.sin_port));
    deadline_storm(hosts, "black-holed");
    close(fd);
}

static pid_t zk_server_pid(void)
{
    char path[200];
    int pid = 0;
    FILE *f;
    snprintf(path, sizeof path, "%s/pid", g_zkdir);
    f = fopen(path, "r");
    if (f) {
        if (fscanf(f, "%d", &pid) != 1) pid = 0;
        fclose(f);
    }
    return (pid_t)pid;
}

/* The ZooKeeper server SIGSTOPped: a new channel's 16 callers time out on time, and a connected
 * channel's first lookup of a service returns within its 500 ms; after SIGCONT that lookup works. */
static void discovery_deadline_zookeeper_paused(void)
{
    mprpc_config cfg;
    mprpc_channel *ch;
    mprpc_controller ctl;
    testsvc_EchoRequest rq = testsvc_EchoRequest_init_zero;
    testsvc_EchoResponse rs = testsvc_EchoResponse_init_zero;
    mprpc_service svc;
    mprpc_server *srv;
    pid_t pid = zk_server_pid();
    uint64_t t0, el;
    mprpc_status st;
    if (!zk_up() || pid <= 0) { CHECK(0); return; }
    zk_config(&cfg, g_hosts);
    srv = start_who(&cfg, &svc, "paused");
    CHECK(srv != NULL);
    zk_config(&cfg, g_hosts);
    CHECK_STATUS(mprpc_channel_new(&ch, &cfg), MPRPC_OK);
    mprpc_controller_init(&ctl);
    CHECK_STATUS(who_call(ch, NULL, 0, &ctl), MPRPC_OK); /* connected, RegTest cached */
    CHECK(kill(pid, SIGSTOP) == 0);
    deadline_storm(g_hosts, "paused (SIGSTOP)");
    mprpc_controller_init(&ctl);
    ctl.timeout_ms = 500;
    t0 = now_ms();
    st = MPRPC_CALL(ch, "NeverLookedUp", "Who", testsvc_EchoRequest, &rq, testsvc_EchoResponse, &rs, &ctl);
    el = now_ms() - t0;
    CHECK(kill(pid, SIGCONT) == 0);
    note("paused: first lookup of NeverLookedUp with a 500 ms timeout -> %s after %llu ms: %s",
         mprpc_status_name(st), (unsigned long long)el, ctl.error_text);
    CHECK_STATUS(st, MPRPC_ERR_TIMEOUT);
    CHECK(el >= 450 && el < 1500u * (unsigned)g_slow);
    CHECK_CONTAINS(ctl.error_text, "NeverLookedUp");
    WAIT_FOR(MPRPC_CALL(ch, "NeverLookedUp", "Who", testsvc_EchoRequest, &rq, testsvc_EchoResponse, &rs, &ctl) ==
             MPRPC_ERR_UNAVAILABLE, 5000);
    CHECK_STATUS(ctl.status, MPRPC_ERR_UNAVAILABLE); /* read once ZooKeeper is back: nobody offers it */
    CHECK_STATUS(who_call(ch, NULL, 0, &ctl), MPRPC_OK);
    mprpc_channel_free(ch);
    mprpc_server_free(srv);
}

/* Nothing listens where ZooKeeper should be: start and call fail with a clear error within the bound. */
static void unreachable_zookeeper_fails_within_bound(void)
{
    mprpc_config cfg;
    mprpc_service svc = MPRPC_SERVICE("RegTest", who_methods, NULL);
    mprpc_server *srv;
    mprpc_channel *ch;
    mprpc_controller ctl;
    mprpc_status st;
    uint64_t t0, el;
    zk_config(&cfg, "127.0.0.1:1");
    cfg.zookeeper_connect_timeout_ms = 1000;
    cfg.rpcserver_port = 0;
    CHECK_STATUS(mprpc_server_new(&srv, &cfg), MPRPC_OK);
    CHECK_STATUS(mprpc_server_add_service(srv, &svc), MPRPC_OK);
    t0 = now_ms();
    st = mprpc_server_start(srv);
    el = now_ms() - t0;
    note("provider start -> %s after %llu ms: %s", mprpc_status_name(st), (unsigned long long)el,
         mprpc_server_error(srv));
    CHECK_STATUS(st, MPRPC_ERR_TIMEOUT);
    CHECK(el >= 1000 && el < 1000 + 1000u * (unsigned)g_slow);
    CHECK_CONTAINS(mprpc_server_error(srv), "127.0.0.1:1");
    CHECK_CONTAINS(mprpc_server_error(srv), "not reachable within 1000 ms");
    mprpc_server_free(srv);

    CHECK_STATUS(mprpc_channel_new(&ch, &cfg), MPRPC_OK);
    t0 = now_ms();
    st = who_call(ch, NULL, 0, &ctl);
    el = now_ms() - t0;
    note("call -> %s after %llu ms: %s", mprpc_status_name(st), (unsigned long long)el, ctl.error_text);
    CHECK_STATUS(st, MPRPC_ERR_TIMEOUT);
    CHECK(el >= 1000 && el < 1000 + 1000u * (unsigned)g_slow);
    CHECK_CONTAINS(ctl.error_text, "127.0.0.1:1");
    mprpc_channel_free(ch);
}

/* zookeeper_seed_layout: /Service persistent with empty data and /Service/Method ephemeral with data
 * "ip:port", open ACL, exactly as the seed's ZkClient writes them; a seed-layout consumer resolves both
 * a node written by hand (a seed C++ provider) and ours; a second instance carries on. */
static void seed_layout_nodes_as_the_seed_writes_them(void)
{
    mprpc_config cfg, pcfg;
    mprpc_server *plain, *srv, *srv2;
    mprpc_channel *ch;
    mprpc_controller ctl;
    fixbug_LoginRequest rq = fixbug_LoginRequest_init_zero;
    fixbug_LoginResponse rs = fixbug_LoginResponse_init_zero;
    struct ACL_vector acl;
    struct Stat st;
    char buf[512], want[64];
    int len;
    if (!zk_up() || !g_raw) { CHECK(0); return; }
    /* a seed provider's nodes, by hand, naming a provider that knows nothing of ZooKeeper */
    if (!(plain = provider_up(&pcfg))) return;
    snprintf(want, sizeof want, "127.0.0.1:%d", pcfg.rpcserver_port);
    CHECK(zoo_create(g_raw, "/UserServiceRpc", NULL, 0, &ZOO_OPEN_ACL_UNSAFE, 0, NULL, 0) == ZOK);
    CHECK(zoo_create(g_raw, "/UserServiceRpc/Login", want, (int)strlen(want), &ZOO_OPEN_ACL_UNSAFE,
                     ZOO_EPHEMERAL, NULL, 0) == ZOK);
    zk_config(&cfg, g_hosts);
    cfg.zookeeper_seed_layout = 1;
    CHECK_STATUS(mprpc_channel_new(&ch, &cfg), MPRPC_OK);
    memcpy(rq.name.bytes, "seed", 4);
    rq.name.size = 4;
    mprpc_controller_init(&ctl);
    CHECK_STATUS(MPRPC_CALL(ch, "UserServiceRpc", "Login", fixbug_LoginRequest, &rq, fixbug_LoginResponse,
                            &rs, &ctl), MPRPC_OK);
    CHECK(rs.success);
    CHECK(zoo_delete(g_raw, "/UserServiceRpc/Login", -1) == ZOK);
    mprpc_server_free(plain);

    /* our provider in the seed layout */
    zk_config(&pcfg, g_hosts);
    pcfg.zookeeper_seed_layout = 1;
    srv = start_provider(&pcfg, 0);
    CHECK(srv != NULL);
    if (!srv) { mprpc_channel_free(ch); return; }
    snprintf(want, sizeof want, "127.0.0.1:%d", pcfg.rpcserver_port);
    CHECK(raw_get(g_raw, "/UserServiceRpc", buf, &len, &st) == ZOK);
    CHECK(len == 0 && st.ephemeralOwner == 0 && st.numChildren == 1);
    CHECK(raw_get(g_raw, "/UserServiceRpc/Login", buf, &len, &st) == ZOK);
    CHECK(len == (int)strlen(want) && memcmp(buf, want, (size_t)len) == 0);
    CHECK((long long)st.ephemeralOwner == session_of(srv->registry));
    CHECK(raw_get(g_raw, "/TestService/Echo", buf, &len, &st) == ZOK && strcmp(buf, want) == 0);
    CHECK(raw_get(g_raw, "/TestService", buf, &len, &st) == ZOK); /* a parent we created, as the seed does */
    CHECK(len == 0 && st.ephemeralOwner == 0 && st.numChildren == 3);
    CHECK(zoo_get_acl(g_raw, "/UserServiceRpc/Login", &acl, &st) == ZOK);
    CHECK(acl.count == 1 && acl.data[0].perms == ZOO_PERM_ALL && strcmp(acl.data[0].id.scheme, "world") == 0 &&
          strcmp(acl.data[0].id.id, "anyone") == 0);
    deallocate_ACL_vector(&acl);
    note("/UserServiceRpc (empty, persistent), /UserServiceRpc/Login = \"%s\" (ephemeral, world:anyone ALL)", want);
    /* the default layout is there too */
    snprintf(buf, sizeof buf, "/mprpc/UserServiceRpc/%s", want);
    CHECK(owner_of(g_raw, buf) == session_of(srv->registry));

    /* a second instance finds the seed nodes taken, says so, and carries on */
    {
        mprpc_config c2 = pcfg;
        srv2 = start_provider(&c2, 0);
        CHECK(srv2 != NULL);
        CHECK(raw_get(g_raw, "/UserServiceRpc/Login", buf, &len, &st) == ZOK && strcmp(buf, want) == 0);
        /* the first one leaves: the second takes the seed nodes over */
        mprpc_server_free(srv);
        snprintf(want, sizeof want, "127.0.0.1:%d", c2.rpcserver_port);
        WAIT_FOR(raw_get(g_raw, "/UserServiceRpc/Login", buf, &len, &st) == ZOK && strcmp(buf, want) == 0, 5000);
        CHECK(strcmp(buf, want) == 0);
        note("after the first instance stopped, /UserServiceRpc/Login = \"%s\"", buf);
        WAIT_FOR(MPRPC_CALL(ch, "UserServiceRpc", "Login", fixbug_LoginRequest, &rq, fixbug_LoginResponse, &rs,
                            &ctl) == MPRPC_OK, 5000);
        CHECK_STATUS(ctl.status, MPRPC_OK);
        mprpc_server_free(srv2);
    }
    mprpc_channel_free(ch);
}

static const char g_secret[] = "s3cr3t-Pw0rd";

/* zookeeper_auth: nodes get {creator ALL, world READ}; a client without credentials reads and resolves
 * them but cannot overwrite, delete or add; a second instance with the same credentials (from a file)
 * registers beside the first. */
static void auth_acl_protects_registrations(void)
{
    mprpc_config cfg, c2;
    mprpc_service svc, svc2;
    mprpc_server *srv, *srv2;
    mprpc_channel *ch;
    mprpc_controller ctl;
    struct ACL_vector acl;
    struct Stat st;
    char path[128], buf[512], name[32], authfile[200];
    int len, i, world_read = 0, auth_all = 0;
    FILE *f;
    if (!zk_up() || !g_raw) { CHECK(0); return; }
    zk_config(&cfg, g_hosts);
    snprintf(cfg.zookeeper_auth, sizeof cfg.zookeeper_auth, "alice:%s", g_secret);
    snprintf(cfg.zookeeper_root, sizeof cfg.zookeeper_root, "/secure");
    srv = start_who(&cfg, &svc, "secure1");
    CHECK(srv != NULL);
    if (!srv) return;
    snprintf(path, sizeof path, "/secure/RegTest/127.0.0.1:%d", mprpc_server_port(srv));
    CHECK(raw_get(g_raw, path, buf, &len, &st) == ZOK); /* world may read */
    CHECK(zoo_get_acl(g_raw, path, &acl, &st) == ZOK);
    for (i = 0; i < acl.count; i++) {
        note("acl of %s: %s:%s perms %d", path, acl.data[i].id.scheme,
             strncmp(acl.data[i].id.id, "alice:", 6) == 0 ? "alice:<digest>" : acl.data[i].id.id,
             acl.data[i].perms);
        world_read += strcmp(acl.data[i].id.scheme, "world") == 0 && acl.data[i].perms == ZOO_PERM_READ;
        auth_all += strcmp(acl.data[i].id.scheme, "digest") == 0 && acl.data[i].perms == ZOO_PERM_ALL &&
                    strncmp(acl.data[i].id.id, "alice:", 6) == 0 && !strstr(acl.data[i].id.id, g_secret);
    }
    deallocate_ACL_vector(&acl);
    CHECK(world_read == 1 && auth_all == 1);
    CHECK(zoo_set(g_raw, path, "x", 1, -1) == ZNOAUTH);
    CHECK(zoo_delete(g_raw, path, -1) == ZNOAUTH);
    CHECK(zoo_create(g_raw, "/secure/RegTest/6.6.6.6:666", "x", 1, &ZOO_OPEN_ACL_UNSAFE, ZOO_EPHEMERAL, NULL, 0) ==
          ZNOAUTH);
    CHECK(zoo_delete(g_raw, "/secure/RegTest", -1) == ZNOAUTH);
    CHECK(zoo_set(g_raw, "/secure/RegTest", "x", 1, -1) == ZNOAUTH);
    CHECK(zoo_set_acl(g_raw, path, -1, &ZOO_OPEN_ACL_UNSAFE) == ZNOAUTH);
    CHECK(owner_of(g_raw, path) == session_of(srv->registry));
    note("without credentials: read ok; set, delete, create, setACL -> ZNOAUTH");

    /* a consumer without credentials resolves and calls it */
    zk_config(&c2, g_hosts);
    snprintf(c2.zookeeper_root, sizeof c2.zookeeper_root, "/secure");
    CHECK_STATUS(mprpc_channel_new(&ch, &c2), MPRPC_OK);
    CHECK_STATUS(who_call(ch, name, sizeof name, &ctl), MPRPC_OK);
    CHECK(strcmp(name, "secure1") == 0);

    /* a second instance, its credentials from a file */
    snprintf(authfile, sizeof authfile, "%s/zk-auth", g_logdir);
    f = fopen(authfile, "w");
    CHECK(f != NULL);
    if (f) { fprintf(f, "alice:%s\n", g_secret); fclose(f); }
    c2 = cfg;
    snprintf(c2.zookeeper_auth, sizeof c2.zookeeper_auth, "file:%s", authfile);
    srv2 = start_who(&c2, &svc2, "secure2");
    CHECK(srv2 != NULL);
    WAIT_FOR(who_call(ch, name, sizeof name, &ctl) == MPRPC_OK && strcmp(name, "secure2") == 0, 5000);
    CHECK(strcmp(name, "secure2") == 0);
    mprpc_server_free(srv2);
    unlink(authfile);

    /* wrong or missing credentials in the config are refused up front, without echoing them */
    c2 = cfg;
    snprintf(c2.zookeeper_auth, sizeof c2.zookeeper_auth, "no-colon-%s", g_secret);
    CHECK(start_who(&c2, &svc2, "bad") == NULL);
    snprintf(c2.zookeeper_auth, sizeof c2.zookeeper_auth, "file:/nonexistent/zk-auth");
    CHECK(start_who(&c2, &svc2, "bad") == NULL);
    mprpc_channel_free(ch);
    mprpc_server_free(srv);
    CHECK(owner_of(g_raw, path) == -1);
}

/* ---- issue 11: registry defects ---- */

/* A registry of our own (as a server or channel opens it), for cases that look at the seam directly. */
static mprpc__registry *open_registry(mprpc_config *cfg)
{
    mprpc__registry *r = NULL;
    char err[256] = "";
    if (mprpc__registry_open(&r, cfg, err, sizeof err) != MPRPC_OK) note("registry open: %s", err);
    return r;
}

static void resolve_list(mprpc__registry *r, const char *service, mprpc_status *st, char *list, size_t cap)
{
    mprpc__addrs a = {NULL, 0, 0};
    uint64_t gen = 0;
    char err[256] = "";
    size_t i, at = 0;
    *st = mprpc__registry_resolve(r, service, "Who", now_ms() + 5000u * (unsigned)g_slow, &gen, &a, err, sizeof err);
    list[0] = '\0';
    for (i = 0; i < a.n && at < cap; i++) at += (size_t)snprintf(list + at, cap - at, "%s ", a.v[i]);
    if (*st != MPRPC_OK) snprintf(list, cap, "%s", err);
    mprpc__addrs_free(&a);
}

/* Item 10: the seed layout publishes every method, however many (the old cap was 64). */
static void seed_layout_publishes_every_method(void)
{
    static mprpc_method many[70];
    static char names[70][16];
    mprpc_config cfg;
    mprpc_service svc;
    mprpc_server *srv;
    char buf[512], want[64];
    struct Stat st;
    int len, i, found = 0;
    if (!zk_up() || !g_raw) { CHECK(0); return; }
    for (i = 0; i < 70; i++) {
        snprintf(names[i], sizeof names[i], "M%d", i);
        many[i] = who_methods[0];
        many[i].name = names[i];
    }
    svc.name = "ManyMethods";
    svc.methods = many;
    svc.method_count = 70;
    svc.user = (void *)"many";
    zk_config(&cfg, g_hosts);
    cfg.zookeeper_seed_layout = 1;
    cfg.rpcserver_port = 0;
    CHECK_STATUS(mprpc_server_new(&srv, &cfg), MPRPC_OK);
    CHECK_STATUS(mprpc_server_add_service(srv, &svc), MPRPC_OK);
    CHECK_STATUS(mprpc_server_start(srv), MPRPC_OK);
    snprintf(want, sizeof want, "127.0.0.1:%d", mprpc_server_port(srv));
    for (i = 0; i < 70; i++) {
        char path[64];
        snprintf(path, sizeof path, "/ManyMethods/M%d", i);
        found += raw_get(g_raw, path, buf, &len, &st) == ZOK && strcmp(buf, want) == 0;
    }
    snprintf(buf, sizeof buf, "/mprpc/ManyMethods/%s", want);
    CHECK(owner_of(g_raw, buf) == session_of(srv->registry));
    note("70 methods: %d seed nodes /ManyMethods/M0..M69 name %s", found, want);
    CHECK(found == 70);
    mprpc_server_free(srv);
}

/* Item 11, provider side: with credentials, a parent that anyone may write to (here made by a client
 * without credentials, as an old deployment or a squatter would) is refused with an error naming it and
 * its ACL; zookeeper_allow_open_acl = 1 accepts it. */
static void auth_provider_refuses_open_parent(void)
{
    mprpc_config cfg;
    mprpc_service svc;
    mprpc_server *srv;
    char err[512];
    if (!zk_up() || !g_raw) { CHECK(0); return; }
    CHECK(zoo_create(g_raw, "/open", NULL, 0, &ZOO_OPEN_ACL_UNSAFE, 0, NULL, 0) == ZOK);
    CHECK(zoo_create(g_raw, "/open/RegTest", NULL, 0, &ZOO_OPEN_ACL_UNSAFE, 0, NULL, 0) == ZOK);
    CHECK(zoo_create(g_raw, "/open/RegTest/6.6.6.6:666", "x", 1, &ZOO_OPEN_ACL_UNSAFE, ZOO_EPHEMERAL, NULL, 0) == ZOK);
    zk_config(&cfg, g_hosts);
    snprintf(cfg.zookeeper_auth, sizeof cfg.zookeeper_auth, "alice:%s", g_secret);
    snprintf(cfg.zookeeper_root, sizeof cfg.zookeeper_root, "/open");
    cfg.rpcserver_port = 0;
    svc = (mprpc_service)MPRPC_SERVICE("RegTest", who_methods, (void *)"open");
    CHECK_STATUS(mprpc_server_new(&srv, &cfg), MPRPC_OK);
    CHECK_STATUS(mprpc_server_add_service(srv, &svc), MPRPC_OK);
    CHECK_STATUS(mprpc_server_start(srv), MPRPC_ERR_CONFIG);
    snprintf(err, sizeof err, "%s", mprpc_server_error(srv));
    note("provider with credentials under an open parent -> %s", err);
    CHECK_CONTAINS(err, "/open/RegTest");
    CHECK_CONTAINS(err, "world:anyone cdrwa");
    CHECK_CONTAINS(err, "zookeeper_allow_open_acl");
    CHECK(strstr(err, g_secret) == NULL);
    mprpc_server_free(srv);
    CHECK_STATUS(mprpc_config_set(&cfg, "zookeeper_allow_open_acl", "1"), MPRPC_OK);
    srv = start_who(&cfg, &svc, "open");
    CHECK(srv != NULL);
    note("with zookeeper_allow_open_acl = 1 it registers");
    mprpc_server_free(srv);
}

/* Item 11, caller side: a caller with credentials uses no registration anyone could have written: none
 * under an open parent (the impostor 6.6.6.6:666 of the case above), none whose own node is open (here
 * 7.7.7.7:777, written with the right credentials but an open ACL beside a proper registration). */
static void auth_caller_ignores_open_registrations(void)
{
    mprpc_config cfg;
    mprpc_service svc;
    mprpc_server *srv;
    mprpc__registry *r;
    zhandle_t *alice;
    mprpc_status st;
    char list[512], good[64], auth[64];
    if (!zk_up() || !g_raw) { CHECK(0); return; }
    zk_config(&cfg, g_hosts);
    snprintf(cfg.zookeeper_auth, sizeof cfg.zookeeper_auth, "alice:%s", g_secret);
    snprintf(cfg.zookeeper_root, sizeof cfg.zookeeper_root, "/secure2");
    srv = start_who(&cfg, &svc, "secure");
    CHECK(srv != NULL);
    if (!srv) return;
    snprintf(good, sizeof good, "127.0.0.1:%d", mprpc_server_port(srv));
    alice = raw_open(g_hosts);
    CHECK(alice != NULL);
    snprintf(auth, sizeof auth, "alice:%s", g_secret);
    CHECK(alice && zoo_add_auth(alice, "digest", auth, (int)strlen(auth), NULL, NULL) == ZOK);
    CHECK(alice && zoo_create(alice, "/secure2/RegTest/7.7.7.7:777", "x", 1, &ZOO_OPEN_ACL_UNSAFE, ZOO_EPHEMERAL,
                              NULL, 0) == ZOK);

    r = open_registry(&cfg); /* a caller with the same credentials */
    CHECK(r != NULL);
    if (r) {
        resolve_list(r, "RegTest", &st, list, sizeof list);
        note("caller with credentials, /secure2/RegTest -> %s: %s", mprpc_status_name(st), list);
        CHECK_STATUS(st, MPRPC_OK);
        CHECK(strstr(list, good) != NULL && strstr(list, "7.7.7.7") == NULL);
        mprpc__registry_close(r);
    }
    WAIT_FOR(log_count(4) > 0, 2000);
    CHECK(log_count(4) > 0);

    snprintf(cfg.zookeeper_root, sizeof cfg.zookeeper_root, "/open");
    r = open_registry(&cfg);
    CHECK(r != NULL);
    if (r) {
        resolve_list(r, "RegTest", &st, list, sizeof list);
        note("caller with credentials, /open/RegTest -> %s: %s", mprpc_status_name(st), list);
        CHECK_STATUS(st, MPRPC_ERR_UNAVAILABLE);
        mprpc__registry_close(r);
    }
    WAIT_FOR(log_count(3) > 0, 2000);
    CHECK(log_count(3) > 0);
    CHECK_STATUS(mprpc_config_set(&cfg, "zookeeper_allow_open_acl", "1"), MPRPC_OK);
    r = open_registry(&cfg);
    if (r) {
        resolve_list(r, "RegTest", &st, list, sizeof list);
        CHECK_STATUS(st, MPRPC_OK);
        CHECK(strstr(list, "6.6.6.6:666") != NULL); /* the opt-out sees everything */
        mprpc__registry_close(r);
    }
    if (alice) zookeeper_close(alice);
    mprpc_server_free(srv);
}

/* Item 12: two live registries publish the same ip:port. The first keeps the node; the second says so
 * once and waits, without deleting it: over 5 s the node is created once. When the first goes, the
 * second takes over. */
static void same_address_two_live_providers_no_storm(void)
{
    static const char *const methods[] = {"Who"};
    const char *node = "/mprpc/Dup/127.0.0.1:9";
    mprpc_config cfg;
    mprpc__registry *r1, *r2;
    struct Stat st;
    char err[256];
    int64_t czxids[64];
    int nczxid = 0, i, creations0 = log_count(1);
    uint64_t until;
    if (!zk_up() || !g_raw) { CHECK(0); return; }
    zk_config(&cfg, g_hosts);
    r1 = open_registry(&cfg);
    r2 = open_registry(&cfg);
    CHECK(r1 && r2);
    if (!r1 || !r2) return;
    CHECK_STATUS(mprpc__registry_publish(r1, "Dup", "127.0.0.1:9", methods, 1, err, sizeof err), MPRPC_OK);
    CHECK_STATUS(mprpc__registry_publish(r2, "Dup", "127.0.0.1:9", methods, 1, err, sizeof err), MPRPC_OK);
    until = now_ms() + 5000;
    while (now_ms() < until) {
        if (zoo_exists(g_raw, node, 0, &st) == ZOK) {
            for (i = 0; i < nczxid && czxids[i] != st.czxid; i++) {}
            if (i == nczxid && nczxid < 64) czxids[nczxid++] = st.czxid;
        }
        sleep_ms(20);
    }
    note("5 s with two live providers on 127.0.0.1:9: %d node(s) seen, %d registration(s) logged, "
         "%d \"held by another live session\" line(s)", nczxid, log_count(1) - creations0, log_count(0));
    CHECK(nczxid == 1);
    CHECK(log_count(1) - creations0 == 1);
    CHECK(log_count(0) == 1);
    CHECK(owner_of(g_raw, node) == session_of(r1));
    mprpc__registry_close(r1);
    WAIT_FOR(owner_of(g_raw, node) == session_of(r2), 5000);
    CHECK(owner_of(g_raw, node) == session_of(r2));
    mprpc__registry_close(r2);
    CHECK(owner_of(g_raw, node) == -1);
}

/* Item 13: a ZooKeeper host that does not resolve is named as such, by the provider and by a caller. */
static void unresolvable_zookeeper_host_named(void)
{
    mprpc_config cfg;
    mprpc_service svc;
    mprpc_server *srv;
    mprpc_channel *ch;
    mprpc_controller ctl;
    uint64_t t0;
    zk_config(&cfg, "no-such-host.invalid:2181");
    cfg.zookeeper_connect_timeout_ms = 2000;
    cfg.rpcserver_port = 0;
    svc = (mprpc_service)MPRPC_SERVICE("RegTest", who_methods, (void *)"x");
    CHECK_STATUS(mprpc_server_new(&srv, &cfg), MPRPC_OK);
    CHECK_STATUS(mprpc_server_add_service(srv, &svc), MPRPC_OK);
    CHECK(mprpc_server_start(srv) != MPRPC_OK);
    note("provider -> %s", mprpc_server_error(srv));
    CHECK_CONTAINS(mprpc_server_error(srv), "cannot resolve ZooKeeper host no-such-host.invalid");
    mprpc_server_free(srv);
    CHECK_STATUS(mprpc_channel_new(&ch, &cfg), MPRPC_OK);
    t0 = now_ms();
    CHECK(who_call(ch, NULL, 0, &ctl) != MPRPC_OK);
    note("caller -> %s after %llu ms: %s", mprpc_status_name(ctl.status), (unsigned long long)(now_ms() - t0),
         ctl.error_text);
    CHECK_CONTAINS(ctl.error_text, "cannot resolve ZooKeeper host no-such-host.invalid");
    mprpc_channel_free(ch);
}

/* Writes a config file of the given lines into the log dir; the path into out. */
static int write_conf(char *out, size_t cap, const char *name, const char *text)
{
    FILE *f;
    snprintf(out, cap, "%s/%s", g_logdir, name);
    f = fopen(out, "w");
    if (!f) return 0;
    fputs(text, f);
    fclose(f);
    return 1;
}

/* Starts RegTest/Who from the config file text (its port given as %s); NULL when it does not start. */
static mprpc_server *start_from_file(const char *text, mprpc_config *cfg, mprpc_service *svc)
{
    const char *colon = strrchr(g_hosts, ':');
    char path[200], body[512];
    mprpc_server *srv;
    snprintf(body, sizeof body, text, colon ? colon + 1 : "0");
    if (!write_conf(path, sizeof path, "seed.conf", body)) return NULL;
    test_config(cfg);
    CHECK_STATUS(mprpc_config_load(cfg, path), MPRPC_OK);
    unlink(path);
    srv = start_who(cfg, svc, "seedconf");
    CHECK(srv != NULL);
    return srv;
}

static const char g_seed_conf[] = "# the seed's test.conf\nrpcserverip=127.0.0.1\nrpcserverport=0\n"
                                  "zookeeperip=127.0.0.1\nzookeeperport=%s\n";

/* Item 14: a provider started with the seed's own config file (its four keys, unchanged) publishes the
 * seed's /<Service>/<Method> nodes (zookeeper_seed_layout defaults to auto), where a seed C++ caller
 * reads "ip:port", and a seed-layout caller reaches it; the same keys spelt natively publish only under
 * /mprpc; the seed's keys with zookeeper_seed_layout = 0 warn once that seed callers will not find it. The
 * old code published only under /mprpc for the seed's file (and warned). */
static void seed_config_file_serves_seed_callers(void)
{
    mprpc_config cfg, ccfg;
    mprpc_service svc;
    mprpc_server *srv;
    mprpc_channel *ch;
    mprpc_controller ctl;
    char want[64], buf[512], name[32];
    struct Stat st;
    int len, before = log_count(2);
    if (!zk_up() || !g_raw) { CHECK(0); return; }
    /* the seed's file, unchanged */
    srv = start_from_file(g_seed_conf, &cfg, &svc);
    if (!srv) return;
    CHECK(cfg.zookeeper_seed_layout == -1 && cfg.seed_spellings == 1);
    snprintf(want, sizeof want, "127.0.0.1:%d", mprpc_server_port(srv));
    CHECK(raw_get(g_raw, "/RegTest/Who", buf, &len, &st) == ZOK);
    CHECK(strcmp(buf, want) == 0);
    CHECK((long long)st.ephemeralOwner == session_of(srv->registry));
    note("seed config: /RegTest/Who = \"%s\" (what a seed caller reads)", buf);
    snprintf(buf, sizeof buf, "/mprpc/RegTest/%s", want);
    CHECK(owner_of(g_raw, buf) == session_of(srv->registry)); /* and the native node */
    zk_config(&ccfg, g_hosts);
    ccfg.zookeeper_seed_layout = 1; /* a caller that looks where the seed's caller looks */
    CHECK_STATUS(mprpc_channel_new(&ch, &ccfg), MPRPC_OK);
    CHECK_STATUS(who_call(ch, name, sizeof name, &ctl), MPRPC_OK);
    CHECK(strcmp(name, "seedconf") == 0);
    mprpc_channel_free(ch);
    mprpc_server_free(srv);
    CHECK(owner_of(g_raw, "/RegTest/Who") == -1);
    CHECK(log_count(2) == before);

    /* the same keys in mprpc.h's spelling: native layout only */
    srv = start_from_file("rpcserver_ip=127.0.0.1\nrpcserver_port=0\nzookeeper_ip=127.0.0.1\nzookeeper_port=%s\n",
                          &cfg, &svc);
    if (!srv) return;
    CHECK(cfg.seed_spellings == 0);
    snprintf(buf, sizeof buf, "/mprpc/RegTest/127.0.0.1:%d", mprpc_server_port(srv));
    CHECK(owner_of(g_raw, buf) == session_of(srv->registry));
    CHECK(owner_of(g_raw, "/RegTest/Who") == -1);
    mprpc_server_free(srv);
    CHECK(log_count(2) == before);

    /* the seed's keys, seed layout turned off explicitly: native only, and a warning, once */
    srv = start_from_file("rpcserverip=127.0.0.1\nrpcserverport=0\nzookeeperip=127.0.0.1\nzookeeperport=%s\n"
                          "zookeeper_seed_layout = 0\n", &cfg, &svc);
    if (!srv) return;
    CHECK(owner_of(g_raw, "/RegTest/Who") == -1);
    WAIT_FOR(log_count(2) > before, 2000);
    CHECK(log_count(2) == before + 1);
    mprpc_server_free(srv);
}

/* Item 20: the registry's worker starts through mprpc__thread_start, so MPRPC_THREAD_STACK_SIZE (defined
 * at the top of this file) applies to it. */
static void registry_worker_gets_the_stack_size(void)
{
    mprpc_config cfg;
    mprpc__registry *r;
    pthread_attr_t attr;
    size_t size = 0;
    if (!zk_up()) { CHECK(0); return; }
    zk_config(&cfg, g_hosts);
    r = open_registry(&cfg);
    CHECK(r != NULL);
    if (!r) return;
    CHECK(pthread_getattr_np(r->worker, &attr) == 0);
    CHECK(pthread_attr_getstacksize(&attr, &size) == 0);
    pthread_attr_destroy(&attr);
    note("registry worker stack: %zu bytes (MPRPC_THREAD_STACK_SIZE %u)", size, (unsigned)MPRPC_THREAD_STACK_SIZE);
    CHECK(size == (size_t)MPRPC_THREAD_STACK_SIZE);
    mprpc__registry_close(r);
}

/* ---- issue 14: discovery at scale (herds, stale lists, growth; make scale measures them) ---- */

/* Reads of one cached path so far (each is one ZooKeeper request). */
static unsigned long reads_of(mprpc__registry *r, const char *path)
{
    mprpc__reg_watch *w;
    unsigned long n = 0;
    pthread_mutex_lock(&r->mu);
    for (w = r->watches; w; w = w->next)
        if (strcmp(w->path, path) == 0) n = w->reads;
    pthread_mutex_unlock(&r->mu);
    return n;
}

static int connected(mprpc__registry *r)
{
    int ok;
    pthread_mutex_lock(&r->mu);
    ok = r->zh && r->state == ZOO_CONNECTED_STATE && !r->lost;
    pthread_mutex_unlock(&r->mu);
    return ok;
}

static const char *const g_quiet_methods[] = {"Who"};

/* A connection loss the session survives (ZooKeeper restarted) costs a caller no read when nothing
 * changed, and its watch still works: a provider added afterwards is seen with exactly one read. The old
 * code re-read every cached service on every reconnect: after a leader loss, every caller read every
 * service at once (make scale: 4.5 reads per caller for nothing). */
static void reconnect_of_the_same_session_rereads_nothing(void)
{
    mprpc_config cfg;
    mprpc__registry *prov, *caller, *late = NULL;
    char err[256] = "", list[256];
    mprpc_status st;
    unsigned long reads0;
    long long sid;
    int recovered0 = log_count(5);
    if (!zk_up()) { CHECK(0); return; }
    zk_config(&cfg, g_hosts);
    prov = open_registry(&cfg);
    caller = open_registry(&cfg);
    CHECK(prov != NULL && caller != NULL);
    if (!prov || !caller) return;
    CHECK_STATUS(mprpc__registry_publish(prov, "Quiet", "10.0.0.1:1", g_quiet_methods, 1, err, sizeof err), MPRPC_OK);
    resolve_list(caller, "Quiet", &st, list, sizeof list);
    CHECK_STATUS(st, MPRPC_OK);
    reads0 = reads_of(caller, "/mprpc/Quiet");
    sid = session_of(caller);
    CHECK(reads0 == 1);
    CHECK(zk_run("restart", g_zkdir, NULL, NULL, 0) == 0);
    WAIT_FOR(log_count(5) > recovered0 && connected(caller) && connected(prov), 15000);
    sleep_ms(500); /* a re-read, had one been asked for, happens now */
    note("ZooKeeper restarted: session 0x%llx kept, %lu read(s) of Quiet since (was %lu)", (unsigned long long)sid,
         reads_of(caller, "/mprpc/Quiet") - reads0, reads0);
    CHECK(log_count(5) > recovered0); /* the connection was lost and came back */
    CHECK(session_of(caller) == sid);
    CHECK(reads_of(caller, "/mprpc/Quiet") == reads0);
    late = open_registry(&cfg);
    CHECK(late != NULL);
    if (late)
        CHECK_STATUS(mprpc__registry_publish(late, "Quiet", "10.0.0.2:2", g_quiet_methods, 1, err, sizeof err),
                     MPRPC_OK);
    WAIT_FOR((resolve_list(caller, "Quiet", &st, list, sizeof list), strstr(list, "10.0.0.2:2") != NULL), 5000);
    CHECK_CONTAINS(list, "10.0.0.1:1 10.0.0.2:2");
    CHECK(reads_of(caller, "/mprpc/Quiet") == reads0 + 1);
    mprpc__registry_close(late);
    mprpc__registry_close(prov);
    mprpc__registry_close(caller);
}

/* zk_watch_count from the standalone server's mntr (data and child watches of every session). */
static long long server_watches(void)
{
    const char *colon = strrchr(g_hosts, ':');
    struct sockaddr_in sa;
    char buf[4096], *at;
    size_t n = 0;
    ssize_t got;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || !colon) return -1;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)atoi(colon + 1));
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || write(fd, "mntr", 4) != 4) {
        close(fd);
        return -1;
    }
    while (n < sizeof buf - 1 && (got = read(fd, buf + n, sizeof buf - 1 - n)) > 0) n += (size_t)got;
    close(fd);
    buf[n] = '\0';
    at = strstr(buf, "zk_watch_count\t");
    return at ? atoll(at + 15) : -1;
}

static size_t cache_entries(mprpc__registry *r)
{
    size_t n;
    pthread_mutex_lock(&r->mu);
    n = r->entries;
    pthread_mutex_unlock(&r->mu);
    return n;
}

/* Expires r's session from another thread (force_expiry's twin, with a flag of its own), so that several
 * sessions expire together. */
typedef struct expirer { mprpc__registry *r; pthread_t t; int up, ok; } expirer;

static void expirer_watcher(zhandle_t *zh, int type, int state, const char *path, void *ctx)
{
    (void)zh; (void)path;
    if (type == ZOO_SESSION_EVENT && state == ZOO_CONNECTED_STATE) __atomic_store_n((int *)ctx, 1, __ATOMIC_SEQ_CST);
}

static void *expirer_main(void *arg)
{
    expirer *e = (expirer *)arg;
    long long old = session_of(e->r);
    int attempt;
    for (attempt = 0; attempt < 5 && !e->ok; attempt++) {
        clientid_t id;
        zhandle_t *twin;
        pthread_mutex_lock(&e->r->mu);
        id = *zoo_client_id(e->r->zh);
        pthread_mutex_unlock(&e->r->mu);
        __atomic_store_n(&e->up, 0, __ATOMIC_SEQ_CST);
        twin = zookeeper_init2(g_hosts, expirer_watcher, 6000, &id, &e->up, 0, raw_log);
        WAIT_FOR(__atomic_load_n(&e->up, __ATOMIC_SEQ_CST), 8000);
        if (twin) zookeeper_close(twin);
        WAIT_FOR(session_of(e->r) != old && session_of(e->r) != 0, 6000);
        e->ok = session_of(e->r) != old && session_of(e->r) != 0;
    }
    return NULL;
}

#define HERD 8

/* Every caller's session expires at once: each re-opens its session after its own random delay, uniform
 * in [0, min(session timeout / 4, 2 s)] (1 s here), not all at the same instant. The cache answers
 * meanwhile, within the caller's deadline, and every list is current afterwards. The old code re-opened
 * at once: every delay a few ms, so 8 callers (at scale, all of them) hit the ensemble together. */
static void sessions_expired_together_reopen_spread_out(void)
{
    mprpc_config cfg;
    mprpc__registry *prov, *late = NULL, *c[HERD];
    expirer ex[HERD];
    char err[256] = "", list[256];
    mprpc_status st;
    uint64_t delay[HERD], dmin = UINT64_MAX, dmax = 0, omin = UINT64_MAX, omax = 0, t0, planned_max = 0, late_max = 0;
    int i, reopened = 0, current = 0;
    if (!zk_up()) { CHECK(0); return; }
    zk_config(&cfg, g_hosts); /* session timeout 4000 ms: delays up to 1000 ms */
    prov = open_registry(&cfg);
    CHECK(prov != NULL);
    if (!prov) return;
    CHECK_STATUS(mprpc__registry_publish(prov, "Herd", "10.0.0.1:1", g_quiet_methods, 1, err, sizeof err), MPRPC_OK);
    for (i = 0; i < HERD; i++) {
        c[i] = open_registry(&cfg);
        CHECK(c[i] != NULL);
        if (!c[i]) return;
        resolve_list(c[i], "Herd", &st, list, sizeof list);
        CHECK_STATUS(st, MPRPC_OK);
    }
    for (i = 0; i < HERD; i++) {
        memset(&ex[i], 0, sizeof ex[i]);
        ex[i].r = c[i];
        CHECK(pthread_create(&ex[i].t, NULL, expirer_main, &ex[i]) == 0);
    }
    /* meanwhile every caller is answered from its cache, at once */
    for (i = 0; i < HERD; i++) {
        t0 = now_ms();
        resolve_list(c[i], "Herd", &st, list, sizeof list);
        CHECK_STATUS(st, MPRPC_OK);
        CHECK(now_ms() - t0 < 1000u * (unsigned)g_slow);
    }
    for (i = 0; i < HERD; i++) pthread_join(ex[i].t, NULL);
    for (i = 0; i < HERD; i++) {
        uint64_t opened, expired, planned;
        pthread_mutex_lock(&c[i]->mu);
        opened = c[i]->opened_at_ms;
        expired = c[i]->expired_at_ms;
        planned = c[i]->reopen_at - expired;
        pthread_mutex_unlock(&c[i]->mu);
        if (!ex[i].ok || expired == 0 || opened < expired + planned) continue; /* never before its time */
        reopened++;
        delay[i] = opened - expired;
        planned_max = planned > planned_max ? planned : planned_max;
        late_max = delay[i] - planned > late_max ? delay[i] - planned : late_max;
        if (delay[i] < dmin) dmin = delay[i];
        if (delay[i] > dmax) dmax = delay[i];
        if (opened < omin) omin = opened;
        if (opened > omax) omax = opened;
    }
    note("%d of %d sessions expired and re-opened; delay after expiry %llu..%llu ms (drawn at most %llu, opened at "
         "most %llu ms after the drawn time); re-opens spread over %llu ms", reopened, HERD, (unsigned long long)dmin,
         (unsigned long long)dmax, (unsigned long long)planned_max, (unsigned long long)late_max,
         (unsigned long long)(reopened ? omax - omin : 0));
    CHECK(reopened == HERD);
    CHECK(dmax - dmin >= 150);   /* old code: every delay a few ms (P(new code fails) = 0.15^8) */
    CHECK(planned_max <= 1000);  /* min(4000 / 4, 2000) */
    CHECK(late_max <= 2000u * (unsigned)g_slow); /* the worker's wake-up and zookeeper_init on a loaded machine */
    /* a resolve of a service not cached yet ends at its own deadline at the latest */
    {
        mprpc__addrs a = {NULL, 0, 0};
        uint64_t gen = 0;
        t0 = now_ms();
        st = mprpc__registry_resolve(c[0], "NotCachedYet", "Who", t0 + 300, &gen, &a, err, sizeof err);
        CHECK(st == MPRPC_ERR_UNAVAILABLE || st == MPRPC_ERR_TIMEOUT);
        CHECK(now_ms() - t0 <= 300u + 200u * (unsigned)g_slow);
        mprpc__addrs_free(&a);
    }
    /* every list is current: a provider added now is seen by every caller */
    late = open_registry(&cfg);
    CHECK(late != NULL);
    if (late)
        CHECK_STATUS(mprpc__registry_publish(late, "Herd", "10.0.0.2:2", g_quiet_methods, 1, err, sizeof err),
                     MPRPC_OK);
    for (i = 0; i < HERD; i++) {
        WAIT_FOR((resolve_list(c[i], "Herd", &st, list, sizeof list), strstr(list, "10.0.0.2:2") != NULL), 5000);
        current += strcmp(list, "10.0.0.1:1 10.0.0.2:2 ") == 0;
    }
    CHECK(current == HERD);
    for (i = 0; i < HERD; i++) mprpc__registry_close(c[i]);
    mprpc__registry_close(late);
    mprpc__registry_close(prov);
}

/* The cache is bounded: resolving 1,000 distinct names that have no node leaves at most
 * MPRPC__REG_ABSENT_MAX entries (and watches on the server), the least recently resolved dropped with their
 * watch; an entry not resolved for idle_ms goes too, and resolving it again reads it afresh, with a higher
 * generation (a channel installs only a higher one). The old code kept all 1,000 entries and watches. */
static void missing_names_leave_a_bounded_cache(void)
{
    mprpc_config cfg;
    mprpc__registry *prov, *caller;
    mprpc__addrs a = {NULL, 0, 0};
    char err[256] = "", name[32];
    uint64_t gen1 = 0, gen2 = 0, t0;
    long long w0, w1, w2;
    int i, unavailable = 0;
    unsigned long evicted;
    if (!zk_up()) { CHECK(0); return; }
    zk_config(&cfg, g_hosts);
    prov = open_registry(&cfg);
    caller = open_registry(&cfg);
    CHECK(prov != NULL && caller != NULL);
    if (!prov || !caller) return;
    CHECK_STATUS(mprpc__registry_publish(prov, "Kept", "10.0.0.3:3", g_quiet_methods, 1, err, sizeof err), MPRPC_OK);
    WAIT_FOR(connected(caller), 5000);
    w0 = server_watches();
    t0 = now_ms();
    for (i = 0; i < 1000; i++) {
        uint64_t gen = 0;
        snprintf(name, sizeof name, "Missing%04d", i);
        unavailable += mprpc__registry_resolve(caller, name, "Who", now_ms() + 5000u * (unsigned)g_slow, &gen, &a,
                                               err, sizeof err) == MPRPC_ERR_UNAVAILABLE;
    }
    WAIT_FOR(cache_entries(caller) <= MPRPC__REG_ABSENT_MAX, 5000);
    sleep_ms(200);
    w1 = server_watches();
    pthread_mutex_lock(&caller->mu);
    evicted = caller->evicted;
    pthread_mutex_unlock(&caller->mu);
    note("1000 missing names resolved in %llu ms: %zu cache entries left, %lu dropped; server watches %lld -> %lld",
         (unsigned long long)(now_ms() - t0), cache_entries(caller), evicted, w0, w1);
    CHECK(unavailable == 1000);
    CHECK(cache_entries(caller) <= MPRPC__REG_ABSENT_MAX);
    CHECK(evicted >= 1000 - MPRPC__REG_ABSENT_MAX);
    CHECK(w0 >= 0 && w1 >= 0 && w1 - w0 <= MPRPC__REG_ABSENT_MAX + 4); /* the old code: +1000 */
    /* idleness: every entry goes, its watch too; a later resolve reads afresh */
    CHECK_STATUS(mprpc__registry_resolve(caller, "Kept", "Who", now_ms() + 5000u * (unsigned)g_slow, &gen1, &a, err,
                                         sizeof err), MPRPC_OK);
    pthread_mutex_lock(&caller->mu);
    caller->idle_ms = 300;
    pthread_mutex_unlock(&caller->mu);
    WAIT_FOR(cache_entries(caller) == 0, 5000);
    CHECK(cache_entries(caller) == 0);
    sleep_ms(200);
    w2 = server_watches();
    note("after %d ms without a resolve: %zu entries, server watches %lld", 300, cache_entries(caller), w2);
    CHECK(w2 >= 0 && w2 <= w0);
    gen2 = gen1;
    CHECK_STATUS(mprpc__registry_resolve(caller, "Kept", "Who", now_ms() + 5000u * (unsigned)g_slow, &gen2, &a, err,
                                         sizeof err), MPRPC_OK);
    CHECK(gen2 > gen1);
    CHECK(a.n == 1 && strcmp(a.v[0], "10.0.0.3:3") == 0);
    mprpc__addrs_free(&a);
    mprpc__registry_close(caller);
    mprpc__registry_close(prov);
}

/* 3 ZooKeeper servers on loopback; the leader is killed while two threads call: no call fails, the
 * provider sessions survive, and a provider registering after the kill is reached. */
static void ensemble_leader_killed_mid_run(void)
{
    mprpc_config cfg;
    mprpc_channel *ch;
    child d, e, f;
    zhandle_t *raw;
    load l;
    tally t;
    char ehosts[256], leader[16];
    long long d_owner;
    uint64_t t0 = now_ms();
    snprintf(g_ensdir, sizeof g_ensdir, "/tmp/mprpc-zkens.XXXXXX");
    CHECK(mkdtemp(g_ensdir) != NULL);
    guard_dir(g_ensdir);
    if (zk_run("ensemble", g_ensdir, "3 300", ehosts, sizeof ehosts) != 0 || !strchr(ehosts, ',')) {
        fprintf(stderr, "FAILED to start a 3-node ZooKeeper ensemble with %s\n", g_zksh);
        CHECK(!"ensemble started");
        return;
    }
    note("ensemble %s ready in %llu ms", ehosts, (unsigned long long)(now_ms() - t0));
    raw = raw_open(ehosts);
    CHECK(raw != NULL);
    CHECK(spawn_provider(&d, "D", ehosts, NULL));
    CHECK(spawn_provider(&e, "E", ehosts, NULL));
    d_owner = owner_of(raw, d.node);
    CHECK(d_owner > 0);
    zk_config(&cfg, ehosts);
    CHECK_STATUS(mprpc_channel_new(&ch, &cfg), MPRPC_OK);
    load_start(&l, ch);
    sleep_ms(500);
    CHECK(zk_run("leader", g_ensdir, NULL, leader, sizeof leader) == 0);
    t0 = now_ms();
    CHECK(zk_run("kill", g_ensdir, leader, NULL, 0) == 0);
    note("killed leader node %s (SIGKILL)", leader);
    CHECK(spawn_provider(&f, "F", ehosts, NULL));
    note("provider F registered %llu ms after the kill", (unsigned long long)(now_ms() - t0));
    t = load_snapshot(&l);
    WAIT_FOR((t = load_snapshot(&l), tally_of(&t, "F") > 0), 10000);
    sleep_ms(1000);
    t = load_stop(&l);
    note("%d calls (D %d, E %d, F %d), %d failed %s", load_total(&t), tally_of(&t, "D"), tally_of(&t, "E"),
         tally_of(&t, "F"), t.failed, t.last_error);
    CHECK(t.failed == 0);
    CHECK(tally_of(&t, "D") > 0 && tally_of(&t, "E") > 0 && tally_of(&t, "F") > 0);
    if (raw) zookeeper_close(raw);
    raw = raw_open(ehosts); /* whichever servers are left */
    CHECK(raw != NULL);
    CHECK(owner_of(raw, d.node) == d_owner); /* D's session survived the leader change */
    CHECK(owner_of(raw, f.node) > 0);
    /* a clean stop deregisters through the new leader at once */
    CHECK(end_child(&f, SIGTERM) == 0);
    CHECK(owner_of(raw, f.node) == -1);
    mprpc_channel_free(ch);
    end_child(&d, SIGKILL);
    end_child(&e, SIGKILL);
    if (raw) zookeeper_close(raw);
    {
        char cmd[512];
        snprintf(cmd, sizeof cmd, "%s stop %s >/dev/null 2>&1; rm -rf %s", g_zksh, g_ensdir, g_ensdir);
        CHECK(system(cmd) == 0);
        g_ensdir[0] = '\0';
    }
}

/* Clean stops of the provider processes; then the log: registrations, list changes, loss and recovery are
 * there, the password is not. */
static void log_records_events_but_no_secret(void)
{
    char cmd[512], path[300];
    int rc;
    CHECK(end_child(&g_b, SIGTERM) == 0); /* graceful exit code 0 (and a clean LeakSanitizer run) */
    CHECK(end_child(&g_c, SIGTERM) == 0);
    if (g_consumer) mprpc_channel_free(g_consumer);
    g_consumer = NULL;
    mprpc_logger_stop();
    snprintf(path, sizeof path, "%s/*-log.txt", g_logdir);
    snprintf(cmd, sizeof cmd, "grep -c . %s >/dev/null", path);
    CHECK(system(cmd) == 0);
    snprintf(cmd, sizeof cmd, "grep -rqF -- '%s' %s", g_secret, g_logdir);
    rc = system(cmd);
    CHECK(WIFEXITED(rc) && WEXITSTATUS(rc) == 1); /* grep: 1 = not found */
    {
        static const char *const expected[] = {
            "registry: registered /mprpc/RegTest/", "providers of RegTest changed",
            "connection to ZooKeeper lost", "connection to ZooKeeper recovered", "expired; opening a new session",
            "new ZooKeeper session", "owned by another instance", "digest auth as \\\"alice\\\"",
            "ZooKeeper session 0x",
        };
        size_t i;
        for (i = 0; i < MPRPC_COUNTOF(expected); i++) {
            snprintf(cmd, sizeof cmd, "grep -qF -- \"%s\" %s", expected[i], path);
            if (system(cmd) != 0) {
                fprintf(stderr, "log lacks \"%s\"\n", expected[i]);
                CHECK(!"log line present");
            }
        }
    }
    note("log %s: every expected event present, \"%s\" nowhere", path, g_secret);
}

int main(int argc, char **argv)
{
    mprpc_config lc;
    ssize_t n;
    if (argc > 1 && strcmp(argv[1], "--provider") == 0) return provider_main(argc, argv);
    if (getenv("MPRPC_TEST_SLOW")) g_slow = atoi(getenv("MPRPC_TEST_SLOW")) > 0 ? atoi(getenv("MPRPC_TEST_SLOW")) : 1;
    if (getenv("MPRPC_ZK_SH")) g_zksh = getenv("MPRPC_ZK_SH");
    n = readlink("/proc/self/exe", g_self, sizeof g_self - 1);
    if (n <= 0) return 1;
    g_self[n] = '\0';
    atexit(stop_servers);
    signal(SIGINT, on_fatal_signal);
    signal(SIGTERM, on_fatal_signal);
    signal(SIGSEGV, on_fatal_signal);
    signal(SIGABRT, on_fatal_signal);
    signal(SIGPIPE, SIG_IGN);
    snprintf(g_logdir, sizeof g_logdir, "/tmp/mprpc-zklog.XXXXXX");
    if (!mkdtemp(g_logdir)) return 1;
    test_config(&lc);
    lc.log_level = MPRPC_LOG_LEVEL_DEBUG;
    lc.log_queue_size = 65536;
    snprintf(lc.log_dir, sizeof lc.log_dir, "%s", g_logdir);
    mprpc_logger_set_sink(log_sink, NULL);
    if (mprpc_logger_start(&lc) != MPRPC_OK) return 1;

    g_only = argv + 1;
    g_nonly = argc - 1;
    CASE(zookeeper_server_starts);
    CASE(registration_and_discovery);
    CASE(ipv6_advertise_address_is_registered_and_called);
    CASE(two_providers_share_calls);
    CASE(killed_provider_is_skipped);
    CASE(new_provider_is_picked_up);
    CASE(zookeeper_restart_under_load);
    CASE(session_expiry_reregisters);
    CASE(discovery_deadline_zookeeper_refused);
    CASE(discovery_deadline_zookeeper_black_holed);
    CASE(discovery_deadline_zookeeper_paused);
    CASE(unreachable_zookeeper_fails_within_bound);
    CASE(seed_layout_nodes_as_the_seed_writes_them);
    CASE(auth_acl_protects_registrations);
    CASE(seed_layout_publishes_every_method);
    CASE(auth_provider_refuses_open_parent);
    CASE(auth_caller_ignores_open_registrations);
    CASE(same_address_two_live_providers_no_storm);
    CASE(unresolvable_zookeeper_host_named);
    CASE(seed_config_file_serves_seed_callers);
    CASE(registry_worker_gets_the_stack_size);
    CASE(reconnect_of_the_same_session_rereads_nothing);
    CASE(sessions_expired_together_reopen_spread_out);
    CASE(missing_names_leave_a_bounded_cache);
    CASE(ensemble_leader_killed_mid_run);
    CASE(log_records_events_but_no_secret);

    if (g_raw) zookeeper_close(g_raw);
    stop_servers();
    {
        char cmd[256];
        snprintf(cmd, sizeof cmd, "rm -rf %s", g_logdir);
        if (system(cmd) != 0) {}
    }
    return test_summary("test_registry");
}
