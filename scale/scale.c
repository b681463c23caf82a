/* The scale harness (issue 14): mprpc.h's own registry code (section 9: mprpc__registry_open, _publish,
 * _resolve) driven with many provider registrations and caller sessions against a real 3-node ZooKeeper
 * ensemble on loopback, which scale/scale.sh starts with tests/zk/zk.sh.
 *
 *   scale HOSTS ENSDIR OUTDIR REGS SERVICES CALLERS PROCS    the whole run (scale/scale.sh calls it)
 *   scale --providers HOSTS TIMEOUT_MS OUTFILE FIRST COUNT NSERV   a provider process (re-executed)
 *
 * Every registration and every caller is one mprpc__registry: one ZooKeeper session, one worker thread
 * (MPRPC_THREAD_STACK_SIZE below) and the ZooKeeper client's two threads (their stacks follow RLIMIT_STACK:
 * scale.sh lowers it). Registrations live in PROCS child processes (so that one can be SIGKILLed), the
 * callers in this process (so that their caches can be read directly). Provider addresses are names only
 * ("127.0.0.1:<10000+i>"), except for the rolling restart, where real mprpc servers of TestService serve
 * real calls from real channels.
 *
 * Writes OUTDIR/results.txt (key value lines), OUTDIR/reg_latency.txt, OUTDIR/drop_clean.txt,
 * OUTDIR/drop_kill.txt and OUTDIR/rate.txt (the plot's data). Prints progress on stdout. */
#define _GNU_SOURCE 1
#include <malloc.h>
#include <stdlib.h>

/* mprpc.h's allocations are counted (its allocation hooks) to measure the bytes per cached service. */
static size_t g_heap;
static void *scale_malloc(size_t n)
{
    void *p = malloc(n);
    if (p) __atomic_add_fetch(&g_heap, malloc_usable_size(p), __ATOMIC_RELAXED);
    return p;
}
static void scale_free(void *p)
{
    if (p) __atomic_sub_fetch(&g_heap, malloc_usable_size(p), __ATOMIC_RELAXED);
    free(p);
}
static void *scale_realloc(void *p, size_t n)
{
    size_t old = p ? malloc_usable_size(p) : 0;
    void *q = realloc(p, n);
    if (q) __atomic_add_fetch(&g_heap, malloc_usable_size(q) - old, __ATOMIC_RELAXED);
    return q;
}
#define MPRPC_MALLOC(n) scale_malloc(n)
#define MPRPC_REALLOC(p, n) scale_realloc((p), (n))
#define MPRPC_FREE(p) scale_free(p)
#define MPRPC_THREAD_STACK_SIZE (64u << 10)
#define MPRPC_IMPLEMENTATION
#include "mprpc.h"
#include "support.h"

#include <malloc.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>

static uint64_t now_ms(void) { return mprpc__now_ms(); }

static void say(const char *fmt, ...) MPRPC_PRINTF(1, 2);
static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    printf("\n");
    fflush(stdout);
    va_end(ap);
}

static FILE *g_results;

/* One "key value" line of results.txt, also shown. */
static void result(const char *key, const char *fmt, ...) MPRPC_PRINTF(2, 3);
static void result(const char *key, const char *fmt, ...)
{
    char v[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(v, sizeof v, fmt, ap);
    va_end(ap);
    fprintf(g_results, "%s %s\n", key, v);
    fflush(g_results);
    say("  %-32s %s", key, v);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The q-quantile (0..1) of v[0..n) after sorting it; 0 when empty. */
static double quantile(double *v, size_t n, double q)
{
    size_t i;
    if (n == 0) return 0;
    qsort(v, n, sizeof *v, cmp_double);
    i = (size_t)(q * (double)(n - 1) + 0.5);
    return v[i < n ? i : n - 1];
}

static long rss_kb(void)
{
    long pages = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &rss) != 2) rss = 0;
        fclose(f);
    }
    return rss * (sysconf(_SC_PAGESIZE) / 1024);
}

static int threads_now(void)
{
    char line[256];
    int n = 0;
    FILE *f = fopen("/proc/self/status", "r");
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "Threads:", 8) == 0) n = atoi(line + 8);
    if (f) fclose(f);
    return n;
}

static void base_config(mprpc_config *cfg, const char *hosts, int session_ms)
{
    mprpc_config_init(cfg);
    snprintf(cfg->zookeeper_hosts, sizeof cfg->zookeeper_hosts, "%s", hosts);
    cfg->zookeeper_session_timeout_ms = session_ms;
    cfg->zookeeper_connect_timeout_ms = 30000; /* the ensemble is busy with thousands of sessions */
}

/* ---- provider processes ------------------------------------------------------------------------ */

typedef struct prov_job {
    const char *hosts;
    int timeout_ms, first, count, nserv, step, offset;
    mprpc__registry **regs;
    double *lat;
    int failed;
} prov_job;

static void prov_name(int idx, int nserv, char *svc, size_t scap, char *addr, size_t acap)
{
    if (nserv == 0) snprintf(svc, scap, "Edge");
    else snprintf(svc, scap, "S%03d", idx % nserv);
    snprintf(addr, acap, "127.0.0.1:%d", nserv ? 10000 + idx : idx); /* Edge: FIRST is the port */
}

/* One thread of a provider process: opens and publishes every step-th registration. */
static void *prov_thread(void *arg)
{
    prov_job *j = (prov_job *)arg;
    static const char *const methods[] = {"Echo"};
    int i;
    for (i = j->offset; i < j->count; i += j->step) {
        mprpc_config cfg;
        char svc[32], addr[64], err[256] = "";
        uint64_t t0 = now_ms();
        mprpc_status st;
        base_config(&cfg, j->hosts, j->timeout_ms);
        prov_name(j->first + i, j->nserv, svc, sizeof svc, addr, sizeof addr);
        st = mprpc__registry_open(&j->regs[i], &cfg, err, sizeof err);
        if (st == MPRPC_OK) st = mprpc__registry_publish(j->regs[i], svc, addr, methods, 1, err, sizeof err);
        j->lat[i] = (double)(now_ms() - t0);
        if (st != MPRPC_OK) {
            fprintf(stderr, "provider %s %s: %s\n", svc, addr, err);
            __atomic_add_fetch(&j->failed, 1, __ATOMIC_RELAXED);
        }
    }
    return NULL;
}

/* Publishes COUNT registrations, writes their latencies, says READY on stdout, and closes them all
 * cleanly on "stop" or EOF on stdin (SIGKILL takes them down with their sessions). */
static int providers_main(int argc, char **argv)
{
    enum { THREADS = 8 };
    pthread_t t[THREADS];
    prov_job jobs[THREADS];
    FILE *out;
    char line[64];
    int i, count, failed = 0;
    mprpc__registry **regs;
    double *lat;
    if (argc != 8) return 2;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    count = atoi(argv[6]);
    regs = (mprpc__registry **)calloc((size_t)count, sizeof *regs);
    lat = (double *)calloc((size_t)count, sizeof *lat);
    if (!regs || !lat) return 1;
    for (i = 0; i < THREADS; i++) {
        prov_job j = {argv[2], atoi(argv[3]), atoi(argv[5]), count, atoi(argv[7]), THREADS, i, regs, lat, 0};
        jobs[i] = j;
        if (mprpc__thread_start(&t[i], prov_thread, &jobs[i]) != 0) return 1;
    }
    for (i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        failed += jobs[i].failed;
    }
    out = fopen(argv[4], "w");
    for (i = 0; out && i < count; i++) fprintf(out, "%.0f\n", lat[i]);
    if (out) fclose(out);
    printf("READY %d %d\n", count, failed);
    fflush(stdout);
    while (fgets(line, sizeof line, stdin) && strncmp(line, "stop", 4) != 0) {}
    for (i = 0; i < count; i++) mprpc__registry_close(regs[i]);
    return failed ? 1 : 0;
}

typedef struct child {
    pid_t pid;
    FILE *to, *from;
    int count;
} child;

static char g_self[512];

static int spawn_providers(child *c, const char *hosts, int timeout_ms, const char *outfile, int first, int count,
                           int nserv)
{
    int in[2], out[2];
    char a[5][32];
    if (pipe(in) != 0 || pipe(out) != 0) return 0;
    c->pid = fork();
    if (c->pid < 0) return 0;
    if (c->pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        close(in[0]); close(in[1]); close(out[0]); close(out[1]);
        snprintf(a[0], 32, "%d", timeout_ms);
        snprintf(a[1], 32, "%d", first);
        snprintf(a[2], 32, "%d", count);
        snprintf(a[3], 32, "%d", nserv);
        execl(g_self, g_self, "--providers", hosts, a[0], outfile, a[1], a[2], a[3], (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    c->to = fdopen(in[1], "w");
    c->from = fdopen(out[0], "r");
    c->count = count;
    return c->to && c->from;
}

/* Waits for the child's READY line; returns its failure count, or -1. */
static int await_ready(child *c)
{
    char line[64];
    int n = 0, failed = -1;
    if (!fgets(line, sizeof line, c->from)) return -1;
    if (sscanf(line, "READY %d %d", &n, &failed) != 2) return -1;
    return failed;
}

static int stop_child(child *c, int sig)
{
    int status = 0;
    if (c->pid <= 0) return -1;
    if (sig) kill(c->pid, sig);
    else if (c->to) {
        fputs("stop\n", c->to);
        fflush(c->to);
    }
    waitpid(c->pid, &status, 0);
    if (c->to) fclose(c->to);
    if (c->from) fclose(c->from);
    c->to = c->from = NULL;
    c->pid = 0;
    return status;
}

/* ---- the ensemble: zk.sh and four-letter words ---------------------------------------------------- */

static char g_hosts[512], g_ensdir[256], g_zksh[512] = "tests/zk/zk.sh";
static int g_ports[3], g_nodes;

static int zk_cmd(const char *verb, const char *args, char *out, size_t cap)
{
    char cmd[1024];
    FILE *f;
    size_t n = 0;
    snprintf(cmd, sizeof cmd, "%s %s %s %s 2>/dev/null", g_zksh, verb, g_ensdir, args ? args : "");
    f = popen(cmd, "r");
    if (!f) return -1;
    if (out && cap) {
        n = fread(out, 1, cap - 1, f);
        out[n] = '\0';
        while (n && (out[n - 1] == '\n' || out[n - 1] == ' ')) out[--n] = '\0';
    } else {
        char sink[256];
        while (fread(sink, 1, sizeof sink, f) > 0) {}
    }
    return pclose(f);
}

/* The answer to a four-letter word on 127.0.0.1:port, bounded to 2 s; "" when the node is down. */
static void fourlw(int port, const char *word, char *out, size_t cap)
{
    struct sockaddr_in sa;
    size_t n = 0;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    out[0] = '\0';
    if (fd < 0) return;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0 && write(fd, word, 4) == 4) {
        while (n + 1 < cap) {
            size_t got = raw_recv(fd, out + n, cap - 1 - n, 2000);
            if (got == 0) break;
            n += got;
        }
    }
    out[n] = '\0';
    close(fd);
}

/* The value of "key\tvalue" in a mntr answer; -1 when absent. */
static long long mntr_value(const char *text, const char *key)
{
    size_t kl = strlen(key);
    const char *p = text;
    while ((p = strstr(p, key)) != NULL) {
        if ((p == text || p[-1] == '\n') && p[kl] == '\t') return atoll(p + kl + 1);
        p += kl;
    }
    return -1;
}

/* Sum (or, for max, the largest) of key over the live nodes. */
static long long ens_sum(const char *key, int max)
{
    static char buf[16384];
    long long total = 0, v;
    int i;
    for (i = 0; i < g_nodes; i++) {
        fourlw(g_ports[i], "mntr", buf, sizeof buf);
        v = mntr_value(buf, key);
        if (v < 0) continue;
        total = max ? (v > total ? v : total) : total + v;
    }
    return total;
}

/* Watches (data and child) over the nodes: mntr's zk_watch_count (wchs counts data watches only); each
 * session's watches live on the node it is connected to. */
static long long ens_watches(void)
{
    return ens_sum("zk_watch_count", 0);
}

/* ---- request-rate sampler: zk_packets_received over the ensemble, every 250 ms ----------------------- */

#define RATE_MAX 8192
static struct {
    pthread_t t;
    int running, n;
    double at[RATE_MAX]; /* s since the run started */
    double rate[RATE_MAX];
    char phase[RATE_MAX][16];
    char current[16];
    pthread_mutex_t mu;
} g_rate = {.mu = PTHREAD_MUTEX_INITIALIZER};
static uint64_t g_t0;

static void *rate_main(void *arg)
{
    long long last = -1, v;
    uint64_t last_t = 0, t;
    (void)arg;
    while (__atomic_load_n(&g_rate.running, __ATOMIC_RELAXED)) {
        v = ens_sum("zk_packets_received", 0);
        t = now_ms();
        pthread_mutex_lock(&g_rate.mu);
        /* a node that went down or came back changes the sum by its whole count: skip that step */
        if (last >= 0 && v >= last && g_rate.n < RATE_MAX && t > last_t) {
            g_rate.at[g_rate.n] = (double)(t - g_t0) / 1000.0;
            g_rate.rate[g_rate.n] = (double)(v - last) * 1000.0 / (double)(t - last_t);
            snprintf(g_rate.phase[g_rate.n], 16, "%s", g_rate.current);
            g_rate.n++;
        }
        pthread_mutex_unlock(&g_rate.mu);
        last = v;
        last_t = t;
        sleep_ms(250);
    }
    return NULL;
}

static void rate_phase(const char *name)
{
    pthread_mutex_lock(&g_rate.mu);
    snprintf(g_rate.current, sizeof g_rate.current, "%s", name);
    pthread_mutex_unlock(&g_rate.mu);
}

/* Peak and median request rate sampled in phase name. */
static void rate_of(const char *name, double *peak, double *median)
{
    static double v[RATE_MAX];
    int i, n = 0;
    pthread_mutex_lock(&g_rate.mu);
    for (i = 0; i < g_rate.n; i++)
        if (strcmp(g_rate.phase[i], name) == 0) v[n++] = g_rate.rate[i];
    pthread_mutex_unlock(&g_rate.mu);
    *median = quantile(v, (size_t)n, 0.5);
    *peak = n ? v[n - 1] : 0;
}

/* ---- callers ------------------------------------------------------------------------------------- */

#define CALLER_SERVICES 5
typedef struct caller {
    mprpc__registry *r;
    char svc[CALLER_SERVICES][32];
    int nsvc;
    double t; /* ms: when the awaited condition became true, -1 while not yet */
    long long session;
} caller;

static caller *g_callers;
static int g_ncallers, g_nserv;

static long long session_of(mprpc__registry *r)
{
    long long s;
    pthread_mutex_lock(&r->mu);
    s = r->state == ZOO_CONNECTED_STATE ? r->session_id : 0;
    pthread_mutex_unlock(&r->mu);
    return s;
}

/* r->mu held: the cache entry of service. */
static mprpc__reg_watch *watch_of(mprpc__registry *r, const char *service)
{
    char path[256];
    mprpc__reg_watch *w;
    snprintf(path, sizeof path, "%s/%s", r->root, service);
    for (w = r->watches; w; w = w->next)
        if (strcmp(w->path, path) == 0) return w;
    return NULL;
}

/* Does caller c's cache of service list addr? */
static int caller_has(caller *c, const char *service, const char *addr)
{
    mprpc__reg_watch *w;
    size_t i;
    int has = 0;
    pthread_mutex_lock(&c->r->mu);
    w = watch_of(c->r, service);
    for (i = 0; w && i < w->count && !has; i++) has = strcmp(w->addrs[i], addr) == 0;
    pthread_mutex_unlock(&c->r->mu);
    return has;
}

static unsigned long caller_reads(caller *c, const char *service)
{
    mprpc__reg_watch *w;
    unsigned long n = 0;
    pthread_mutex_lock(&c->r->mu);
    for (w = c->r->watches; w; w = w->next)
        if (!service || watch_of(c->r, service) == w) n += w->reads;
    pthread_mutex_unlock(&c->r->mu);
    return n;
}

static int uses(const caller *c, const char *service)
{
    int k;
    for (k = 0; k < c->nsvc; k++)
        if (strcmp(c->svc[k], service) == 0) return 1;
    return 0;
}

/* Connected, on a session other than c->session (when set), nothing left to read? */
static int caller_recovered(caller *c)
{
    mprpc__reg_watch *w;
    int ok;
    pthread_mutex_lock(&c->r->mu);
    ok = c->r->zh && c->r->state == ZOO_CONNECTED_STATE && !c->r->lost && !c->r->expired &&
         (!c->session || c->r->session_id != c->session);
    for (w = c->r->watches; ok && w; w = w->next) ok = w->fetched && !w->dirty;
    pthread_mutex_unlock(&c->r->mu);
    return ok;
}

typedef enum { WAIT_LACKS, WAIT_HAS, WAIT_RECOVERED } wait_kind;

/* Polls every caller (of service, for the list kinds) until the condition holds for all or timeout_ms;
 * c->t gets the time since t0 at which it first held. Returns how many got there. */
static int wait_callers(wait_kind kind, const char *service, const char *addr, uint64_t t0, int timeout_ms)
{
    int i, done = 0, want = 0;
    for (i = 0; i < g_ncallers; i++) {
        g_callers[i].t = -1;
        if (kind == WAIT_RECOVERED || uses(&g_callers[i], service)) want++;
    }
    while (done < want && now_ms() < t0 + (uint64_t)timeout_ms) {
        for (i = 0; i < g_ncallers; i++) {
            caller *c = &g_callers[i];
            int ok;
            if (c->t >= 0 || (kind != WAIT_RECOVERED && !uses(c, service))) continue;
            if (kind == WAIT_RECOVERED) ok = caller_recovered(c);
            else ok = caller_has(c, service, addr) == (kind == WAIT_HAS);
            if (ok) {
                c->t = (double)(now_ms() - t0);
                done++;
            }
        }
        sleep_ms(2);
    }
    return done;
}

/* p50/p99/max of the callers' c->t; writes them (sorted) to file when given. */
static void caller_times(const char *key, const char *file, int reached, int want)
{
    double *v = (double *)malloc(sizeof(double) * (size_t)(g_ncallers + 1));
    size_t n = 0;
    int i;
    for (i = 0; v && i < g_ncallers; i++)
        if (g_callers[i].t >= 0) v[n++] = g_callers[i].t;
    double p50, p99;
    if (!v) return;
    p50 = quantile(v, n, 0.5); /* sorts v */
    p99 = quantile(v, n, 0.99);
    result(key, "p50 %.0f p99 %.0f max %.0f ms (%d of %d callers)", p50, p99, n ? v[n - 1] : 0, reached, want);
    if (file) {
        FILE *f = fopen(file, "w");
        for (i = 0; f && (size_t)i < n; i++) fprintf(f, "%.0f %.4f\n", v[i], (double)(i + 1) / (double)n);
        if (f) fclose(f);
    }
    free(v);
}

/* The truth: children of every service, read on a raw handle; then counts callers whose cache differs
 * (stale) or is empty where the truth is not. */
static zhandle_t *g_raw;
static volatile int g_raw_up;
static void raw_watcher(zhandle_t *zh, int type, int state, const char *path, void *ctx)
{
    (void)zh; (void)path; (void)ctx;
    if (type == ZOO_SESSION_EVENT) g_raw_up = state == ZOO_CONNECTED_STATE;
}

static void raw_log(const char *m) { (void)m; }

static zhandle_t *raw_open(void)
{
    zhandle_t *zh = zookeeper_init2(g_hosts, raw_watcher, 30000, NULL, NULL, 0, raw_log);
    uint64_t until = now_ms() + 30000;
    while (zh && !g_raw_up && now_ms() < until) sleep_ms(20);
    return zh;
}

static int cmp_str_ptr(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Children of service as a sorted, space-joined string. */
static void truth_of(const char *service, char *out, size_t cap)
{
    char path[256];
    struct String_vector v = {0, NULL};
    size_t at = 0;
    int i, rc = ZCONNECTIONLOSS, attempt;
    out[0] = '\0';
    snprintf(path, sizeof path, "/mprpc/%s", service);
    for (attempt = 0; attempt < 20 && rc != ZOK && rc != ZNONODE; attempt++) {
        rc = zoo_get_children(g_raw, path, 0, &v);
        if (rc != ZOK && rc != ZNONODE) sleep_ms(250);
    }
    if (rc != ZOK) return;
    qsort(v.data, (size_t)v.count, sizeof *v.data, cmp_str_ptr);
    for (i = 0; i < v.count && at < cap; i++) at += (size_t)snprintf(out + at, cap - at, "%s ", v.data[i]);
    deallocate_String_vector(&v);
}

/* Callers whose cached list differs from ZooKeeper's (checked twice, 3 s apart, so that a change still
 * on its way is not counted), and those left with an empty list where ZooKeeper has providers. */
static int stale_check(const char *key)
{
    int pass, i, k, stale = 0, empty = 0;
    for (pass = 0; pass < 2; pass++) {
        stale = empty = 0;
        for (i = 0; i < g_ncallers; i++) {
            caller *c = &g_callers[i];
            for (k = 0; k < c->nsvc; k++) {
                char truth[4096], mine[4096];
                mprpc__reg_watch *w;
                size_t at = 0, j;
                truth_of(c->svc[k], truth, sizeof truth);
                mine[0] = '\0';
                pthread_mutex_lock(&c->r->mu);
                w = watch_of(c->r, c->svc[k]);
                for (j = 0; w && j < w->count && at < sizeof mine; j++)
                    at += (size_t)snprintf(mine + at, sizeof mine - at, "%s ", w->addrs[j]);
                pthread_mutex_unlock(&c->r->mu);
                if (strcmp(truth, mine) != 0) stale++;
                if (!mine[0] && truth[0]) empty++;
            }
        }
        if (stale == 0) break;
        if (pass == 0) sleep_ms(3000);
    }
    result(key, "%d stale, %d empty (caller lists compared with ZooKeeper's)", stale, empty);
    return stale + empty;
}

static unsigned long total_requests(void)
{
    unsigned long n = 0;
    int i;
    for (i = 0; i < g_ncallers; i++) {
        pthread_mutex_lock(&g_callers[i].r->mu);
        n += g_callers[i].r->requests;
        pthread_mutex_unlock(&g_callers[i].r->mu);
    }
    return n;
}

typedef struct open_job { const char *hosts; int from, to; } open_job;

static void *open_callers(void *arg)
{
    open_job *j = (open_job *)arg;
    int i;
    for (i = j->from; i < j->to; i++) {
        mprpc_config cfg;
        char err[256];
        base_config(&cfg, j->hosts, 10000);
        if (mprpc__registry_open(&g_callers[i].r, &cfg, err, sizeof err) != MPRPC_OK) {
            fprintf(stderr, "caller %d: %s\n", i, err);
            exit(1);
        }
    }
    return NULL;
}

static int g_resolve_failed;
static double *g_resolve_lat;

static void *resolve_callers(void *arg)
{
    open_job *j = (open_job *)arg;
    int i, k;
    for (i = j->from; i < j->to; i++) {
        caller *c = &g_callers[i];
        uint64_t t0 = now_ms();
        for (k = 0; k < c->nsvc; k++) {
            mprpc__addrs a = {NULL, 0, 0};
            uint64_t gen = 0;
            char err[256];
            mprpc_status st = mprpc__registry_resolve(c->r, c->svc[k], "Echo", now_ms() + 60000, &gen, &a, err,
                                                      sizeof err);
            if (st != MPRPC_OK) {
                fprintf(stderr, "caller %d resolving %s: %s\n", i, c->svc[k], err);
                __atomic_add_fetch(&g_resolve_failed, 1, __ATOMIC_RELAXED);
            }
            mprpc__addrs_free(&a);
        }
        g_resolve_lat[i] = (double)(now_ms() - t0);
    }
    return NULL;
}

/* Runs fn over the callers on 16 threads. */
static void on_callers(void *(*fn)(void *), const char *hosts)
{
    enum { T = 16 };
    pthread_t t[T];
    open_job j[T];
    int i;
    for (i = 0; i < T; i++) {
        j[i].hosts = hosts;
        j[i].from = g_ncallers * i / T;
        j[i].to = g_ncallers * (i + 1) / T;
        if (mprpc__thread_start(&t[i], fn, &j[i]) != 0) exit(1);
    }
    for (i = 0; i < T; i++) pthread_join(t[i], NULL);
}

/* ---- forced expiry: a twin handle opens each caller's session and closes it ------------------------ */

static void twin_watcher(zhandle_t *zh, int type, int state, const char *path, void *ctx)
{
    (void)zh; (void)path;
    if (type == ZOO_SESSION_EVENT && state == ZOO_CONNECTED_STATE) __atomic_store_n((int *)ctx, 1, __ATOMIC_RELAXED);
}

static int g_twins_failed;

static void *expire_callers(void *arg)
{
    open_job *j = (open_job *)arg;
    int i;
    for (i = j->from; i < j->to; i++) {
        caller *c = &g_callers[i];
        clientid_t id;
        zhandle_t *twin;
        int up = 0;
        uint64_t until = now_ms() + 10000;
        pthread_mutex_lock(&c->r->mu);
        id = *zoo_client_id(c->r->zh);
        c->session = c->r->session_id;
        pthread_mutex_unlock(&c->r->mu);
        twin = zookeeper_init2(g_hosts, twin_watcher, 10000, &id, &up, 0, raw_log);
        while (twin && !__atomic_load_n(&up, __ATOMIC_RELAXED) && now_ms() < until) sleep_ms(5);
        if (!twin || !up) __atomic_add_fetch(&g_twins_failed, 1, __ATOMIC_RELAXED);
        if (twin) zookeeper_close(twin);
    }
    return NULL;
}

/* ---- rolling restart: real providers of TestService, real calls --------------------------------- */

#define ROLL_PROVIDERS 5
#define ROLL_LOADERS 4
static mprpc_server *g_roll[ROLL_PROVIDERS];

static mprpc_server *roll_start(void)
{
    mprpc_config cfg;
    mprpc_server *srv = NULL;
    base_config(&cfg, g_hosts, 10000);
    cfg.rpcserver_port = 0;
    cfg.io_threads = 1;
    cfg.drain_timeout_ms = 2000;
    if (mprpc_server_new(&srv, &cfg) != MPRPC_OK) return NULL;
    if (mprpc_server_add_service(srv, &test_service) != MPRPC_OK || mprpc_server_start(srv) != MPRPC_OK) {
        fprintf(stderr, "rolling provider: %s\n", mprpc_server_error(srv));
        mprpc_server_free(srv);
        return NULL;
    }
    return srv;
}

typedef struct loader {
    pthread_t t;
    mprpc_channel *ch;
    int stop;
    long ok, failed;
    char last_error[256];
} loader;

static void *loader_main(void *arg)
{
    loader *l = (loader *)arg;
    uint64_t seq = 0;
    while (!__atomic_load_n(&l->stop, __ATOMIC_RELAXED)) {
        testsvc_EchoRequest rq = testsvc_EchoRequest_init_zero;
        testsvc_EchoResponse rs = testsvc_EchoResponse_init_zero;
        mprpc_controller ctl;
        mprpc_controller_init(&ctl);
        rq.seq = ++seq;
        MPRPC_CALL(l->ch, "TestService", "Echo", testsvc_EchoRequest, &rq, testsvc_EchoResponse, &rs, &ctl);
        if (mprpc_controller_failed(&ctl)) {
            l->failed++;
            snprintf(l->last_error, sizeof l->last_error, "%s", mprpc_controller_error_text(&ctl));
        } else {
            l->ok++;
        }
        sleep_ms(5);
    }
    return NULL;
}

static void addr_of(mprpc_server *srv, char *out, size_t cap)
{
    snprintf(out, cap, "127.0.0.1:%d", mprpc_server_port(srv));
}

/* ---- the phases ---------------------------------------------------------------------------------- */

static char g_out[256];
static int g_regs, g_procs;
static child *g_kids, g_edge_stop, g_edge_kill;
static int g_targets_missed;
static char g_targets[4096];
static size_t g_targets_len;

static void target(int met, const char *name, const char *fmt, ...) MPRPC_PRINTF(3, 4);
static void target(int met, const char *name, const char *fmt, ...)
{
    char v[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(v, sizeof v, fmt, ap);
    va_end(ap);
    if (!met) g_targets_missed++;
    if (g_targets_len < sizeof g_targets)
        g_targets_len += (size_t)snprintf(g_targets + g_targets_len, sizeof g_targets - g_targets_len,
                                          "TARGET %-34s %-6s %s\n", name, met ? "met" : "missed", v);
    fprintf(g_results, "target %s %s %s\n", name, met ? "met" : "missed", v);
}

static void file_in_out(char *buf, size_t cap, const char *name)
{
    snprintf(buf, cap, "%s/%s", g_out, name);
}

static void phase_register(void)
{
    char file[512], line[64];
    long long nodes0 = ens_sum("zk_znode_count", 1), watches0 = ens_watches(), nodes1, watches1;
    double *lat = (double *)malloc(sizeof(double) * (size_t)g_regs);
    size_t n = 0;
    int i, failed = 0, f;
    uint64_t t0 = now_ms();
    say("== registering %d providers of %d services from %d processes", g_regs, g_nserv, g_procs);
    rate_phase("register");
    g_kids = (child *)calloc((size_t)g_procs, sizeof *g_kids);
    for (i = 0; i < g_procs; i++) {
        int first = g_regs * i / g_procs, count = g_regs * (i + 1) / g_procs - first;
        snprintf(line, sizeof line, "reg_latency.%d", i);
        file_in_out(file, sizeof file, line);
        if (!spawn_providers(&g_kids[i], g_hosts, 10000, file, first, count, g_nserv)) exit(1);
    }
    for (i = 0; i < g_procs; i++) {
        f = await_ready(&g_kids[i]);
        failed += f < 0 ? g_kids[i].count : f;
    }
    result("register_total_ms", "%llu (%d registrations, %d failed)", (unsigned long long)(now_ms() - t0), g_regs, failed);
    for (i = 0; i < g_procs && lat; i++) {
        FILE *in;
        snprintf(line, sizeof line, "reg_latency.%d", i);
        file_in_out(file, sizeof file, line);
        in = fopen(file, "r");
        while (in && n < (size_t)g_regs && fscanf(in, "%lf", &lat[n]) == 1) n++;
        if (in) fclose(in);
        unlink(file);
    }
    {
        double p50 = quantile(lat, n, 0.5), p99 = quantile(lat, n, 0.99), mx = n ? lat[n - 1] : 0;
        FILE *o;
        file_in_out(file, sizeof file, "reg_latency.txt");
        o = fopen(file, "w");
        for (i = 0; o && (size_t)i < n; i++) fprintf(o, "%.0f %.4f\n", lat[i], (double)(i + 1) / (double)n);
        if (o) fclose(o);
        result("register_latency_ms", "p50 %.0f p99 %.0f max %.0f (open + publish, 8 at once per process)", p50, p99, mx);
        target(failed == 0 && (int)n == g_regs, "registrations", "%d of %d registered, p50 %.0f ms, p99 %.0f ms",
               g_regs - failed, g_regs, p50, p99);
    }
    free(lat);
    sleep_ms(1000);
    nodes1 = ens_sum("zk_znode_count", 1);
    watches1 = ens_watches();
    result("nodes_per_provider", "%.2f (%lld nodes before, %lld after)", (double)(nodes1 - nodes0) / g_regs, nodes0, nodes1);
    result("watches_per_provider", "%.2f (%lld watches before, %lld after)", (double)(watches1 - watches0) / g_regs,
           watches0, watches1);
}


static void phase_callers(void)
{
    long rss0 = rss_kb(), rss1, rss2;
    size_t heap1, heap2;
    long long watches0 = ens_watches(), watches1;
    int i, k, total = 0;
    uint64_t t0;
    double p50, p99;
    say("== opening %d caller sessions", g_ncallers);
    rate_phase("callers");
    g_callers = (caller *)calloc((size_t)g_ncallers, sizeof *g_callers);
    g_resolve_lat = (double *)calloc((size_t)g_ncallers, sizeof *g_resolve_lat);
    for (i = 0; i < g_ncallers; i++) {
        caller *c = &g_callers[i];
        snprintf(c->svc[c->nsvc++], 32, "Edge");
        if (i % 2 == 0) snprintf(c->svc[c->nsvc++], 32, "TestService");
        for (k = 0; k < 3; k++) snprintf(c->svc[c->nsvc++], 32, "S%03d", (i * 3 + k) % g_nserv);
        total += c->nsvc;
    }
    t0 = now_ms();
    on_callers(open_callers, g_hosts);
    rss1 = rss_kb();
    heap1 = __atomic_load_n(&g_heap, __ATOMIC_RELAXED);
    on_callers(resolve_callers, g_hosts);
    rss2 = rss_kb();
    heap2 = __atomic_load_n(&g_heap, __ATOMIC_RELAXED);
    p50 = quantile(g_resolve_lat, (size_t)g_ncallers, 0.5);
    p99 = quantile(g_resolve_lat, (size_t)g_ncallers, 0.99);
    result("callers_ready_ms", "%llu (%d callers, %d services cached, %d failed resolves)",
           (unsigned long long)(now_ms() - t0), g_ncallers, total, g_resolve_failed);
    result("first_resolve_ms", "p50 %.0f p99 %.0f (all of a caller's services, session connect included)", p50, p99);
    sleep_ms(1000);
    watches1 = ens_watches();
    result("caller_session_rss_kb", "%.1f (process RSS %ld -> %ld KiB over %d sessions, %d threads now)",
           (double)(rss1 - rss0) / g_ncallers, rss0, rss1, g_ncallers, threads_now());
    result("cached_service_rss_bytes", "%.0f (RSS %ld -> %ld KiB over %d cached services and watches)",
           (double)(rss2 - rss1) * 1024.0 / total, rss1, rss2, total);
    result("cached_service_heap_bytes", "%.0f (mprpc.h's own allocations per cached service)",
           (double)(heap2 - heap1) / total);
    result("watches_per_caller", "%.2f (%lld -> %lld; %d services per caller on average, no nodes)",
           (double)(watches1 - watches0) / g_ncallers, watches0, watches1, total / g_ncallers);
    result("ensemble", "%lld znodes, %lld watches, %lld connections, %lld ephemerals",
           ens_sum("zk_znode_count", 1), watches1, ens_sum("zk_num_alive_connections", 0),
           ens_sum("zk_ephemerals_count", 1));
    target(g_resolve_failed == 0, "caller_sessions", "%d sessions, %d services cached, %d resolves failed",
           g_ncallers, total, g_resolve_failed);
}

static void phase_roll(void)
{
    loader l[ROLL_LOADERS];
    unsigned long reads0[2] = {0, 0}, reads1[2] = {0, 0}, other0 = 0, other1 = 0, unused0 = 0, unused1 = 0;
    int i, users = 0, waited = 1;
    long ok = 0, failed = 0;
    char last[256] = "";
    say("== rolling restart of the %d providers of TestService under load", ROLL_PROVIDERS);
    rate_phase("roll");
    memset(l, 0, sizeof l);
    for (i = 0; i < ROLL_LOADERS; i++) {
        mprpc_config cfg;
        base_config(&cfg, g_hosts, 10000);
        cfg.rpc_timeout_ms = 3000;
        if (mprpc_channel_new(&l[i].ch, &cfg) != MPRPC_OK) exit(1);
        if (mprpc__thread_start(&l[i].t, loader_main, &l[i]) != 0) exit(1);
    }
    sleep_ms(1000);
    for (i = 0; i < g_ncallers; i++) {
        caller *c = &g_callers[i];
        if (uses(c, "TestService")) {
            users++;
            reads0[0] += caller_reads(c, "TestService");
            other0 += caller_reads(c, NULL) - caller_reads(c, "TestService");
        } else {
            unused0 += caller_reads(c, NULL);
        }
    }
    for (i = 0; i < ROLL_PROVIDERS; i++) {
        char addr[64];
        uint64_t t0 = now_ms();
        addr_of(g_roll[i], addr, sizeof addr);
        mprpc_server_free(g_roll[i]); /* graceful: deregisters, then drains */
        waited &= wait_callers(WAIT_LACKS, "TestService", addr, t0, 30000) == users;
        g_roll[i] = roll_start();
        if (!g_roll[i]) exit(1);
        addr_of(g_roll[i], addr, sizeof addr);
        waited &= wait_callers(WAIT_HAS, "TestService", addr, t0, 30000) == users;
    }
    sleep_ms(1000);
    for (i = 0; i < ROLL_LOADERS; i++) {
        __atomic_store_n(&l[i].stop, 1, __ATOMIC_RELAXED);
        pthread_join(l[i].t, NULL);
        ok += l[i].ok;
        failed += l[i].failed;
        if (l[i].last_error[0]) snprintf(last, sizeof last, "%s", l[i].last_error);
        mprpc_channel_free(l[i].ch);
    }
    for (i = 0; i < g_ncallers; i++) {
        caller *c = &g_callers[i];
        if (uses(c, "TestService")) {
            reads1[0] += caller_reads(c, "TestService");
            other1 += caller_reads(c, NULL) - caller_reads(c, "TestService");
        } else {
            unused1 += caller_reads(c, NULL);
        }
    }
    (void)reads1[1]; (void)reads0[1];
    {
        double per = (double)(reads1[0] - reads0[0]) / users / (2.0 * ROLL_PROVIDERS);
        result("roll_calls", "%ld ok, %ld failed%s%s", ok, failed, failed ? ": last " : "", last);
        result("roll_reads_per_change_per_caller", "%.3f (%lu reads of TestService by %d callers over %d changes)",
               per, reads1[0] - reads0[0], users, 2 * ROLL_PROVIDERS);
        result("roll_reads_other_services", "%lu by its callers, %lu by callers not using it",
               other1 - other0, unused1 - unused0);
        target(failed == 0 && ok > 0, "roll_calls_failed", "%ld of %ld calls failed", failed, ok + failed);
        target(per <= 1.0 && waited, "roll_reads_per_change", "%.3f reads per change per caller", per);
        target(other1 == other0 && unused1 == unused0, "roll_reads_unused_services", "%lu reads",
               (other1 - other0) + (unused1 - unused0));
    }
}

static void phase_drop(const char *what, child *c, int sig, const char *addr, int timeout_ms, const char *file)
{
    char path[512];
    int users = g_ncallers, got;
    uint64_t t0;
    say("== provider %s of Edge: %s", addr, what);
    rate_phase(sig ? "sigkill" : "stop");
    t0 = now_ms();
    stop_child(c, sig);
    got = wait_callers(WAIT_LACKS, "Edge", addr, t0, timeout_ms * 3);
    file_in_out(path, sizeof path, file);
    caller_times(sig ? "drop_after_sigkill" : "drop_after_clean_stop", path, got, users);
}

/* Edge gets a provider (or loses it): the time until every caller sees it, proving their watches work. */
static mprpc__registry *g_probe;

static void probe_change(const char *key)
{
    mprpc_config cfg;
    char err[256];
    static const char *const methods[] = {"Echo"};
    int got;
    uint64_t t0 = now_ms();
    if (!g_probe) {
        base_config(&cfg, g_hosts, 10000);
        if (mprpc__registry_open(&g_probe, &cfg, err, sizeof err) != MPRPC_OK ||
            mprpc__registry_publish(g_probe, "Edge", "127.0.0.1:9003", methods, 1, err, sizeof err) != MPRPC_OK)
            fprintf(stderr, "probe: %s\n", err);
        got = wait_callers(WAIT_HAS, "Edge", "127.0.0.1:9003", t0, 30000);
    } else {
        mprpc__registry_close(g_probe);
        g_probe = NULL;
        got = wait_callers(WAIT_LACKS, "Edge", "127.0.0.1:9003", t0, 30000);
    }
    caller_times(key, NULL, got, g_ncallers);
}

static int recovered_all(const char *key, uint64_t t0, int timeout_ms, double *max_ms)
{
    int got = wait_callers(WAIT_RECOVERED, NULL, NULL, t0, timeout_ms), i;
    double mx = 0;
    for (i = 0; i < g_ncallers; i++)
        if (g_callers[i].t > mx) mx = g_callers[i].t;
    caller_times(key, NULL, got, g_ncallers);
    *max_ms = mx;
    return got;
}

static unsigned long total_reads(void)
{
    unsigned long n = 0;
    int i;
    for (i = 0; i < g_ncallers; i++) n += caller_reads(&g_callers[i], NULL);
    return n;
}

static void phase_leader(void)
{
    char leader[16];
    unsigned long req0 = total_requests(), req1, reads0 = total_reads(), reads1;
    long long *saved = (long long *)calloc((size_t)g_ncallers, sizeof *saved);
    double peak, median, rec;
    int got, i, kept = 0, bad;
    uint64_t t0;
    say("== ZooKeeper leader killed (SIGKILL)");
    if (!saved || zk_cmd("leader", NULL, leader, sizeof leader) != 0) {
        result("leader_loss", "no leader found");
        return;
    }
    for (i = 0; i < g_ncallers; i++) {
        saved[i] = session_of(g_callers[i].r);
        g_callers[i].session = 0; /* recovered: connected on any session */
    }
    rate_phase("leader");
    t0 = now_ms();
    zk_cmd("kill", leader, NULL, 0);
    sleep_ms(500); /* the followers drop their clients while they elect a new leader */
    got = recovered_all("leader_loss_recovery", t0, 120000, &rec);
    req1 = total_requests();
    reads1 = total_reads();
    sleep_ms(2000);
    rate_of("leader", &peak, &median);
    for (i = 0; i < g_ncallers; i++) kept += session_of(g_callers[i].r) == saved[i];
    free(saved);
    result("leader_loss_requests", "%lu by %d callers (%.2f each, %lu list reads), ensemble peak %.0f/s, median %.0f/s",
           req1 - req0, g_ncallers, (double)(req1 - req0) / g_ncallers, reads1 - reads0, peak, median);
    result("leader_loss_sessions_kept", "%d of %d", kept, g_ncallers);
    bad = stale_check("leader_loss_stale");
    rate_phase("probe");
    probe_change("leader_loss_change_seen");
    target(got == g_ncallers, "leader_loss_recovery", "%d of %d callers back in %.0f ms", got, g_ncallers, rec);
    target(bad == 0, "leader_loss_no_stale_lists", "%d stale or empty caller lists", bad);
    target(reads1 == reads0, "leader_loss_no_reread", "%lu list reads (nothing changed)", reads1 - reads0);
    zk_cmd("revive", leader, NULL, 0);
}

/* The registry's jitter before re-opening an expired session: the delay from each caller's expiry to
 * its new session, and how far apart the re-opens landed. */
static void reopen_delays(void)
{
    double *d = (double *)malloc(sizeof(double) * (size_t)g_ncallers);
    uint64_t first = UINT64_MAX, last = 0;
    size_t n = 0;
    int i;
    if (!d) return;
    for (i = 0; i < g_ncallers; i++) {
        mprpc__registry *r = g_callers[i].r;
        pthread_mutex_lock(&r->mu);
        if (r->expired_at_ms && r->opened_at_ms >= r->expired_at_ms) {
            d[n++] = (double)(r->opened_at_ms - r->expired_at_ms);
            if (r->opened_at_ms < first) first = r->opened_at_ms;
            if (r->opened_at_ms > last) last = r->opened_at_ms;
        }
        pthread_mutex_unlock(&r->mu);
    }
    if (n)
        result("expiry_reopen_delay", "p50 %.0f p99 %.0f max %.0f ms after each expiry (jitter up to min(T/4, 2 s)); "
               "%zu re-opens over %llu ms", quantile(d, n, 0.5), quantile(d, n, 0.99), quantile(d, n, 1.0), n,
               (unsigned long long)(last - first));
    free(d);
}

static void phase_expiry(void)
{
    enum { T = 100 };
    pthread_t t[T];
    open_job j[T];
    unsigned long req0 = total_requests(), req1, reads0 = 0, reads1 = 0;
    double peak, median, rec;
    int got, i, svcs = 0, bad, kept = 0;
    uint64_t t0;
    say("== every caller's session expired at once");
    for (i = 0; i < g_ncallers; i++) {
        reads0 += caller_reads(&g_callers[i], NULL);
        svcs += g_callers[i].nsvc;
    }
    rate_phase("expiry");
    t0 = now_ms();
    for (i = 0; i < T; i++) {
        j[i].hosts = g_hosts;
        j[i].from = g_ncallers * i / T;
        j[i].to = g_ncallers * (i + 1) / T;
        if (mprpc__thread_start(&t[i], expire_callers, &j[i]) != 0) exit(1);
    }
    for (i = 0; i < T; i++) pthread_join(t[i], NULL);
    result("expiry_twins_ms", "%llu (%d sessions closed by a twin handle, %d twins failed)",
           (unsigned long long)(now_ms() - t0), g_ncallers, g_twins_failed);
    got = recovered_all("expiry_recovery", t0, 90000, &rec);
    for (i = 0; i < g_ncallers; i++) /* a twin that lost the race: the session moved back, not expired */
        if (g_callers[i].t < 0 && session_of(g_callers[i].r) == g_callers[i].session) kept++;
    result("expiry_sessions_kept", "%d (callers whose session survived its twin's close)", kept);
    reopen_delays();
    req1 = total_requests();
    for (i = 0; i < g_ncallers; i++) reads1 += caller_reads(&g_callers[i], NULL);
    sleep_ms(2000);
    rate_of("expiry", &peak, &median);
    result("expiry_requests", "%lu by %d callers (%.2f each; %lu reads for %d cached services), ensemble peak %.0f/s, median %.0f/s",
           req1 - req0, g_ncallers, (double)(req1 - req0) / g_ncallers, reads1 - reads0, svcs, peak, median);
    bad = stale_check("expiry_stale");
    rate_phase("probe");
    probe_change("expiry_change_seen");
    target(got + kept == g_ncallers, "expiry_recovery", "%d of %d expired callers back in %.0f ms", got,
           g_ncallers - kept, rec);
    target(bad == 0, "expiry_no_stale_lists", "%d stale or empty caller lists", bad);
    target(reads1 - reads0 <= (unsigned long)svcs, "expiry_reads", "%lu reads for %d cached services",
           reads1 - reads0, svcs);
}

static void write_rate(void)
{
    char file[512];
    FILE *f;
    int i;
    file_in_out(file, sizeof file, "rate.txt");
    f = fopen(file, "w");
    pthread_mutex_lock(&g_rate.mu);
    for (i = 0; f && i < g_rate.n; i++) fprintf(f, "%.2f %.0f %s\n", g_rate.at[i], g_rate.rate[i], g_rate.phase[i]);
    pthread_mutex_unlock(&g_rate.mu);
    if (f) fclose(f);
}

/* ---- main ---------------------------------------------------------------------------------------- */

static void parse_ports(void)
{
    const char *p = g_hosts;
    while (p && *p && g_nodes < 3) {
        const char *colon = strchr(p, ':');
        if (!colon) break;
        g_ports[g_nodes++] = atoi(colon + 1);
        p = strchr(colon, ',');
        if (p) p++;
    }
}

static void *close_callers(void *arg)
{
    open_job *j = (open_job *)arg;
    int i;
    for (i = j->from; i < j->to; i++) mprpc__registry_close(g_callers[i].r);
    return NULL;
}

int main(int argc, char **argv)
{
    char file[512];
    mprpc__registry *stay = NULL;
    static const char *const methods[] = {"Echo"};
    char err[256];
    mprpc_config cfg;
    ssize_t n;
    int i;
    double p99k = 0;
    if (argc > 1 && strcmp(argv[1], "--providers") == 0) return providers_main(argc, argv);
    if (argc != 8) {
        fprintf(stderr, "usage: scale HOSTS ENSDIR OUTDIR REGS SERVICES CALLERS PROCS\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    if (getenv("MPRPC_ZK_SH")) snprintf(g_zksh, sizeof g_zksh, "%s", getenv("MPRPC_ZK_SH"));
    n = readlink("/proc/self/exe", g_self, sizeof g_self - 1);
    if (n <= 0) return 1;
    g_self[n] = '\0';
    snprintf(g_hosts, sizeof g_hosts, "%s", argv[1]);
    snprintf(g_ensdir, sizeof g_ensdir, "%s", argv[2]);
    snprintf(g_out, sizeof g_out, "%s", argv[3]);
    g_regs = atoi(argv[4]);
    g_nserv = atoi(argv[5]);
    g_ncallers = atoi(argv[6]);
    g_procs = atoi(argv[7]);
    if (g_regs < 1 || g_nserv < 1 || g_ncallers < 1 || g_procs < 1) return 2;
    parse_ports();
    file_in_out(file, sizeof file, "results.txt");
    g_results = fopen(file, "w");
    if (!g_results) return 1;
    g_t0 = now_ms();
    g_rate.running = 1;
    if (mprpc__thread_start(&g_rate.t, rate_main, NULL) != 0) return 1;
    g_raw = raw_open();
    if (!g_raw || !g_raw_up) {
        fprintf(stderr, "cannot reach the ensemble at %s\n", g_hosts);
        return 1;
    }
    result("setup", "%d registrations over %d services in %d processes, %d callers, ensemble %s", g_regs, g_nserv,
           g_procs, g_ncallers, g_hosts);
    phase_register();
    /* Edge: every caller watches it; 9000 stays, 9001 is stopped cleanly, 9002 is SIGKILLed */
    base_config(&cfg, g_hosts, 4000);
    if (mprpc__registry_open(&stay, &cfg, err, sizeof err) != MPRPC_OK ||
        mprpc__registry_publish(stay, "Edge", "127.0.0.1:9000", methods, 1, err, sizeof err) != MPRPC_OK) {
        fprintf(stderr, "Edge: %s\n", err);
        return 1;
    }
    file_in_out(file, sizeof file, "edge.lat");
    if (!spawn_providers(&g_edge_stop, g_hosts, 4000, file, 9001, 1, 0) || await_ready(&g_edge_stop) != 0) return 1;
    if (!spawn_providers(&g_edge_kill, g_hosts, 4000, file, 9002, 1, 0) || await_ready(&g_edge_kill) != 0) return 1;
    unlink(file);
    for (i = 0; i < ROLL_PROVIDERS; i++)
        if ((g_roll[i] = roll_start()) == NULL) return 1;
    phase_callers();
    phase_roll();
    phase_drop("clean stop (registry closed)", &g_edge_stop, 0, "127.0.0.1:9001", 4000, "drop_clean.txt");
    {
        double mx = 0;
        for (i = 0; i < g_ncallers; i++)
            if (g_callers[i].t > mx) mx = g_callers[i].t;
        target(mx >= 0 && mx < 2000, "drop_after_clean_stop", "max %.0f ms (target under 2000 ms)", mx);
    }
    phase_drop("SIGKILL", &g_edge_kill, SIGKILL, "127.0.0.1:9002", 4000, "drop_kill.txt");
    for (i = 0; i < g_ncallers; i++)
        if (g_callers[i].t > p99k) p99k = g_callers[i].t;
    target(p99k > 0 && p99k < 4000 + 2000, "drop_after_sigkill", "max %.0f ms (session timeout 4000 ms, target under 6000)", p99k);
    phase_leader();
    sleep_ms(2000);
    phase_expiry();
    result("run_seconds", "%.0f", (double)(now_ms() - g_t0) / 1000.0);
    target(g_regs >= 1000 && g_ncallers >= 1000, "scale_1000_regs_1000_callers", "%d registrations, %d callers",
           g_regs, g_ncallers);
    __atomic_store_n(&g_rate.running, 0, __ATOMIC_RELAXED);
    pthread_join(g_rate.t, NULL);
    write_rate();
    say("== tearing down");
    on_callers(close_callers, g_hosts);
    for (i = 0; i < ROLL_PROVIDERS; i++) mprpc_server_free(g_roll[i]);
    mprpc__registry_close(stay);
    mprpc__registry_close(g_probe);
    for (i = 0; i < g_procs; i++) stop_child(&g_kids[i], 0);
    zookeeper_close(g_raw);
    fclose(g_results);
    file_in_out(file, sizeof file, "targets.txt");
    {
        FILE *f = fopen(file, "w");
        if (f) {
            fputs(g_targets, f);
            fclose(f);
        }
    }
    return 0;
}
