/* Soak driver (make soak; not part of make test). Two providers run as
 * child processes: A lives the whole run and is watched, B is restarted
 * every SOAK_RESTART_S seconds. Caller threads call both through channels
 * they drop and recreate now and then (reconnects), with Echo, Deferred,
 * Big and Login calls; a garbage thread opens connections to A that send
 * junk, stall or reset. Every second A's VmRSS (/proc/pid/status) and open
 * descriptors (/proc/pid/fd) are sampled.
 * Fails if: any well-formed call to A fails, any call to B fails while B is
 * up (calls overlapping a restart are not judged), or after warm-up the
 * maximum RSS/fd count of the last third of the run exceeds the maximum of
 * the first third by more than SOAK_RSS_SLACK_KB (default 4096) / 8 fds.
 *   soak MINUTES            (driver)
 *   soak provider PORT      (internal: a provider until SIGTERM) */
#define MPRPC_IMPLEMENTATION
#include "mprpc.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "support.h"

#include <dirent.h>
#include <signal.h>
#include <sys/wait.h>

static volatile sig_atomic_t term;
static void on_term(int sig) { (void)sig; term = 1; }

static int provider_main(int port)
{
    mprpc_config cfg;
    mprpc_server *srv;
    test_config(&cfg);
    cfg.idle_timeout_ms = 5000;
    signal(SIGTERM, on_term);
    srv = start_provider(&cfg, port);
    if (!srv) return 1;
    while (!term) pause();
    mprpc_server_free(srv);
    return 0;
}

static pid_t spawn_provider(int port)
{
    pid_t pid = fork();
    if (pid == 0) {
        char p[16];
        snprintf(p, sizeof p, "%d", port);
        execl("/proc/self/exe", "soak", "provider", p, (char *)NULL);
        _exit(127);
    }
    return pid;
}

static void stop_provider(pid_t pid)
{
    int st;
    kill(pid, SIGTERM);
    waitpid(pid, &st, 0);
}

static int free_port(void)
{
    mprpc_config cfg;
    mprpc_server *srv;
    int port;
    test_config(&cfg);
    srv = start_provider(&cfg, 0);
    port = srv ? cfg.rpcserver_port : 0;
    mprpc_server_free(srv);
    return port;
}

static int wait_up(int port)
{
    int i;
    for (i = 0; i < 500; i++) {
        int fd = raw_connect(port);
        if (fd >= 0) { close(fd); return 1; }
        sleep_ms(10);
    }
    return 0;
}

static int port_a, port_b;
static volatile int done;
static int b_epoch;            /* odd while B is down or restarting */
static uint64_t calls_a, fail_a, calls_b, fail_b, skipped_b, garbage_conns;

static int one_call(mprpc_channel *ch, unsigned kind, uint64_t seq)
{
    mprpc_controller ctl;
    mprpc_controller_init(&ctl);
    ctl.timeout_ms = 10000;
    if (kind % 4 == 0) {
        testsvc_EchoResponse rs;
        return echo_call(ch, "soak", seq, &ctl, &rs) == MPRPC_OK && rs.seq == seq;
    }
    if (kind % 4 == 1) {
        testsvc_EchoRequest rq = testsvc_EchoRequest_init_zero;
        testsvc_EchoResponse rs = testsvc_EchoResponse_init_zero;
        rq.seq = seq;
        rq.delay_ms = 1;
        return MPRPC_CALL(ch, "TestService", "Deferred", testsvc_EchoRequest, &rq, testsvc_EchoResponse, &rs, &ctl) == MPRPC_OK &&
               rs.seq == seq;
    }
    if (kind % 4 == 2) {
        testsvc_BigRequest rq = testsvc_BigRequest_init_zero;
        testsvc_BigResponse rs = testsvc_BigResponse_init_zero;
        rq.size = 65536;
        rq.fill = 1;
        return MPRPC_CALL(ch, "TestService", "Big", testsvc_BigRequest, &rq, testsvc_BigResponse, &rs, &ctl) == MPRPC_OK;
    }
    {
        fixbug_LoginRequest rq = fixbug_LoginRequest_init_zero;
        fixbug_LoginResponse rs = fixbug_LoginResponse_init_zero;
        rq.name.size = 1;
        rq.name.bytes[0] = 'x';
        return MPRPC_CALL(ch, "UserServiceRpc", "Login", fixbug_LoginRequest, &rq, fixbug_LoginResponse, &rs, &ctl) == MPRPC_OK &&
               rs.success;
    }
}

static void *caller(void *arg)
{
    unsigned id = (unsigned)(uintptr_t)arg, n = 0;
    mprpc_config ca, cb;
    mprpc_channel *a = NULL, *b = NULL;
    test_config(&ca);
    ca.rpcserver_port = port_a;
    cb = ca;
    cb.rpcserver_port = port_b;
    while (!__atomic_load_n(&done, __ATOMIC_RELAXED)) {
        int e0, ok;
        if (n % 300 == 0) { /* reconnect: a fresh channel now and then */
            mprpc_channel_free(a);
            mprpc_channel_free(b);
            mprpc_channel_new(&a, &ca);
            mprpc_channel_new(&b, &cb);
        }
        n++;
        __atomic_add_fetch(&calls_a, 1, __ATOMIC_RELAXED);
        if (!one_call(a, n + id, n)) {
            __atomic_add_fetch(&fail_a, 1, __ATOMIC_RELAXED);
            fprintf(stderr, "soak: call to A failed (kind %u)\n", (n + id) % 4);
        }
        e0 = __atomic_load_n(&b_epoch, __ATOMIC_ACQUIRE);
        ok = one_call(b, n + id + 1, n);
        if (e0 % 2 == 1 || __atomic_load_n(&b_epoch, __ATOMIC_ACQUIRE) != e0) {
            __atomic_add_fetch(&skipped_b, 1, __ATOMIC_RELAXED); /* overlapped a restart */
        } else {
            __atomic_add_fetch(&calls_b, 1, __ATOMIC_RELAXED);
            if (!ok) {
                __atomic_add_fetch(&fail_b, 1, __ATOMIC_RELAXED);
                fprintf(stderr, "soak: call to B failed while up\n");
            }
        }
    }
    mprpc_channel_free(a);
    mprpc_channel_free(b);
    return NULL;
}

static void *garbage(void *arg)
{
    unsigned r = 12345;
    (void)arg;
    while (!__atomic_load_n(&done, __ATOMIC_RELAXED)) {
        uint8_t junk[300];
        size_t i;
        int fd = raw_connect(port_a);
        if (fd >= 0) {
            struct linger lg = { 1, 0 };
            for (i = 0; i < sizeof junk; i++) { r = r * 1103515245u + 12345u; junk[i] = (uint8_t)(r >> 16); }
            if (r & 1) junk[0] = 10, junk[1] = junk[2] = junk[3] = 0; /* plausible header length */
            raw_send_all(fd, junk, (r >> 3) % sizeof junk);
            if ((r >> 5) % 3 == 0) setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
            close(fd);
            __atomic_add_fetch(&garbage_conns, 1, __ATOMIC_RELAXED);
        }
        sleep_ms(100);
    }
    return NULL;
}

static long rss_kb(pid_t pid)
{
    char path[64], line[256];
    long kb = -1;
    FILE *f;
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    if (!(f = fopen(path, "r"))) return -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1) break;
    fclose(f);
    return kb;
}

static int fd_count(pid_t pid)
{
    char path[64];
    struct dirent *e;
    int n = 0;
    DIR *d;
    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    if (!(d = opendir(path))) return -1;
    while ((e = readdir(d)) != NULL) n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

int main(int argc, char **argv)
{
    enum { THREADS = 4 };
    double minutes = argc > 1 ? atof(argv[1]) : 10;
    int secs, restart_s = getenv("SOAK_RESTART_S") ? atoi(getenv("SOAK_RESTART_S")) : 30;
    long slack_kb = getenv("SOAK_RSS_SLACK_KB") ? atol(getenv("SOAK_RSS_SLACK_KB")) : 4096;
    long *rss;
    int *fds, t, i, warm, n, third, ok = 1;
    long rss_first = 0, rss_last = 0;
    int fd_first = 0, fd_last = 0, restarts = 0;
    pid_t a, b;
    pthread_t th[THREADS + 1];
    if (argc == 3 && strcmp(argv[1], "provider") == 0) return provider_main(atoi(argv[2]));
    signal(SIGPIPE, SIG_IGN);
    secs = (int)(minutes * 60);
    if (secs < 30) secs = 30;
    rss = (long *)calloc((size_t)secs + 1, sizeof *rss);
    fds = (int *)calloc((size_t)secs + 1, sizeof *fds);
    port_a = free_port();
    port_b = free_port();
    a = spawn_provider(port_a);
    b = spawn_provider(port_b);
    if (!wait_up(port_a) || !wait_up(port_b)) { fprintf(stderr, "soak: providers did not start\n"); return 1; }
    for (i = 0; i < THREADS; i++) pthread_create(&th[i], NULL, caller, (void *)(uintptr_t)i);
    pthread_create(&th[THREADS], NULL, garbage, NULL);
    printf("soak: %d s, A pid %d port %d (watched), B port %d restarted every %d s\n", secs, (int)a, port_a, port_b, restart_s);
    for (t = 0; t < secs; t++) {
        sleep_ms(1000);
        rss[t] = rss_kb(a);
        fds[t] = fd_count(a);
        if (t % 10 == 9)
            printf("t=%4ds A: rss %ld kB fds %d | calls A %llu (failed %llu) B %llu (failed %llu, %llu across restarts) garbage %llu\n",
                   t + 1, rss[t], fds[t], (unsigned long long)calls_a, (unsigned long long)fail_a,
                   (unsigned long long)calls_b, (unsigned long long)fail_b, (unsigned long long)skipped_b,
                   (unsigned long long)garbage_conns);
        fflush(stdout);
        if (restart_s > 0 && t % restart_s == restart_s - 1 && t + 5 < secs) {
            __atomic_add_fetch(&b_epoch, 1, __ATOMIC_ACQ_REL); /* odd: down */
            stop_provider(b);
            b = spawn_provider(port_b);
            if (!wait_up(port_b)) { fprintf(stderr, "soak: B did not restart\n"); ok = 0; }
            __atomic_add_fetch(&b_epoch, 1, __ATOMIC_ACQ_REL);
            restarts++;
        }
    }
    __atomic_store_n(&done, 1, __ATOMIC_RELAXED);
    for (i = 0; i <= THREADS; i++) pthread_join(th[i], NULL);
    stop_provider(a);
    stop_provider(b);
    /* growth rule over the samples after warm-up (the first fifth, at least 10 s) */
    warm = secs / 5 > 10 ? secs / 5 : 10;
    n = secs - warm;
    third = n / 3;
    for (i = 0; i < third; i++) {
        if (rss[warm + i] > rss_first) rss_first = rss[warm + i];
        if (fds[warm + i] > fd_first) fd_first = fds[warm + i];
        if (rss[secs - 1 - i] > rss_last) rss_last = rss[secs - 1 - i];
        if (fds[secs - 1 - i] > fd_last) fd_last = fds[secs - 1 - i];
    }
    printf("soak: A rss max first third %ld kB, last third %ld kB (slack %ld kB); fds max first third %d, last third %d (slack 8)\n",
           rss_first, rss_last, slack_kb, fd_first, fd_last);
    printf("soak: calls A %llu failed %llu; calls B %llu failed while up %llu, %llu across %d restarts; garbage connections %llu\n",
           (unsigned long long)calls_a, (unsigned long long)fail_a, (unsigned long long)calls_b,
           (unsigned long long)fail_b, (unsigned long long)skipped_b, restarts, (unsigned long long)garbage_conns);
    if (rss_last > rss_first + slack_kb) { printf("soak: FAIL: RSS grew\n"); ok = 0; }
    if (fd_last > fd_first + 8) { printf("soak: FAIL: descriptors grew\n"); ok = 0; }
    if (fail_a || fail_b) { printf("soak: FAIL: well-formed calls failed while the provider was up\n"); ok = 0; }
    if (calls_a == 0 || calls_b == 0) { printf("soak: FAIL: no calls made\n"); ok = 0; }
    printf("soak: %s\n", ok ? "PASS" : "FAIL");
    free(rss);
    free(fds);
    return ok ? 0 : 1;
}
