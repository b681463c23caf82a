/* bench_common.h - code shared by the load generators (mprpc_bench.c and
 * grpc_bench.cc): command line, payload pattern, server /proc sampling,
 * the warm-up/measure window and the final report incl. the RESULT line.
 *
 * Header-only, compiles as C11 and C++17; every function is static.
 */
#ifndef MPRPC_BENCH_COMMON_H
#define MPRPC_BENCH_COMMON_H

#include <errno.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "hist.h"

/* ---- options ---------------------------------------------------------- */

typedef struct bench_opts {
    const char *host;
    int port;
    int conns;
    int threads;
    size_t size;
    int depth;
    double warmup_s;
    double duration_s;
    const char *proto;      /* only used by mprpc_bench */
    const char *system;     /* name printed in RESULT; default = proto */
    long server_pid;        /* 0 = unknown: server figures print as 0 */
    int list_protos;
} bench_opts;

static void bench_usage(FILE *f, const char *prog)
{
    fprintf(f,
        "usage: %s -p PORT [options]\n"
        "  -H, --host ADDR        server IPv4 address (default 127.0.0.1)\n"
        "  -p, --port N           server port (required)\n"
        "  -c, --conns N          connections (default 1)\n"
        "  -t, --threads N        client threads, conns spread round-robin (default 1)\n"
        "  -s, --size N           payload bytes per call (default 32)\n"
        "  -q, --depth N          calls in flight per connection (default 1)\n"
        "  -w, --warmup SEC       warm-up seconds, not measured (default 1)\n"
        "  -d, --duration SEC     measured seconds (default 3)\n"
        "  -P, --proto NAME       wire protocol (mprpc_bench only; default raw)\n"
        "  -n, --system NAME      name for the RESULT line (default: protocol)\n"
        "      --server-pid PID   sample VmRSS and CPU time of this process\n"
        "      --list-protos      print the compiled-in protocols and exit\n",
        prog);
}

static long bench_parse_num(const char *prog, const char *what, const char *s, long lo, long hi)
{
    char *end;
    long v;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "%s: bad %s '%s' (expected %ld..%ld)\n", prog, what, s, lo, hi);
        exit(2);
    }
    return v;
}

static double bench_parse_sec(const char *prog, const char *what, const char *s)
{
    char *end;
    double v;
    errno = 0;
    v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= 0.0) || v > 86400.0) {
        fprintf(stderr, "%s: bad %s '%s'\n", prog, what, s);
        exit(2);
    }
    return v;
}

/* default_system: RESULT name when -n is absent (NULL = the protocol name). */
static void bench_parse_opts(int argc, char **argv, bench_opts *o, const char *default_system)
{
    static const struct option longopts[] = {
        {"host", required_argument, NULL, 'H'},
        {"port", required_argument, NULL, 'p'},
        {"conns", required_argument, NULL, 'c'},
        {"threads", required_argument, NULL, 't'},
        {"size", required_argument, NULL, 's'},
        {"depth", required_argument, NULL, 'q'},
        {"warmup", required_argument, NULL, 'w'},
        {"duration", required_argument, NULL, 'd'},
        {"proto", required_argument, NULL, 'P'},
        {"system", required_argument, NULL, 'n'},
        {"server-pid", required_argument, NULL, 1000},
        {"list-protos", no_argument, NULL, 1001},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *prog = argv[0];
    int c;

    o->host = "127.0.0.1";
    o->port = -1;
    o->conns = 1;
    o->threads = 1;
    o->size = 32;
    o->depth = 1;
    o->warmup_s = 1.0;
    o->duration_s = 3.0;
    o->proto = "raw";
    o->system = NULL;
    o->server_pid = 0;
    o->list_protos = 0;

    while ((c = getopt_long(argc, argv, "H:p:c:t:s:q:w:d:P:n:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'H': o->host = optarg; break;
        case 'p': o->port = (int)bench_parse_num(prog, "port", optarg, 1, 65535); break;
        case 'c': o->conns = (int)bench_parse_num(prog, "conns", optarg, 1, 100000); break;
        case 't': o->threads = (int)bench_parse_num(prog, "threads", optarg, 1, 1024); break;
        case 's': o->size = (size_t)bench_parse_num(prog, "size", optarg, 0, 16L << 20); break;
        case 'q': o->depth = (int)bench_parse_num(prog, "depth", optarg, 1, 4096); break;
        case 'w': o->warmup_s = bench_parse_sec(prog, "warmup", optarg); break;
        case 'd': o->duration_s = bench_parse_sec(prog, "duration", optarg); break;
        case 'P': o->proto = optarg; break;
        case 'n': o->system = optarg; break;
        case 1000: o->server_pid = bench_parse_num(prog, "server pid", optarg, 1, 0x7fffffffL); break;
        case 1001: o->list_protos = 1; break;
        case 'h': bench_usage(stdout, prog); exit(0);
        default: bench_usage(stderr, prog); exit(2);
        }
    }
    if (optind != argc) {
        bench_usage(stderr, prog);
        exit(2);
    }
    if (o->list_protos)
        return;
    if (o->port < 0) {
        fprintf(stderr, "%s: --port is required\n", prog);
        exit(2);
    }
    if (o->duration_s <= 0.0) {
        fprintf(stderr, "%s: --duration must be > 0\n", prog);
        exit(2);
    }
    if (o->threads > o->conns)
        o->threads = o->conns;
    if (!o->system)
        o->system = default_system ? default_system : o->proto;
}

/* ---- time ------------------------------------------------------------- */

static inline uint64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void bench_sleep_s(double s)
{
    struct timespec ts;
    ts.tv_sec = (time_t)s;
    ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* ---- payload ---------------------------------------------------------- */

/* Each call sends PATTERN + (call_id % BENCH_PAT_PERIOD) so consecutive
 * calls carry different bytes; a reply is checked with one memcmp. */
#define BENCH_PAT_PERIOD 251u

static uint8_t *bench_pattern_new(size_t size)
{
    size_t i, n = size + BENCH_PAT_PERIOD + 1;
    uint8_t *p = (uint8_t *)malloc(n);
    if (!p) {
        perror("malloc");
        exit(1);
    }
    for (i = 0; i < n; i++)
        p[i] = (uint8_t)(i * 131u + (i >> 8) + 7u);
    return p;
}

static inline const uint8_t *bench_payload(const uint8_t *pattern, uint32_t call_id)
{
    return pattern + call_id % BENCH_PAT_PERIOD;
}

/* ---- measurement phases ----------------------------------------------- */

enum { BENCH_WARMUP = 0, BENCH_MEASURE = 1, BENCH_STOP = 2 };

static inline int bench_phase_get(const int *phase)
{
    return __atomic_load_n(phase, __ATOMIC_ACQUIRE);
}

static inline void bench_phase_set(int *phase, int v)
{
    __atomic_store_n(phase, v, __ATOMIC_RELEASE);
}

/* ---- server process sampling ------------------------------------------ */

typedef struct bench_proc {
    int ok;
    unsigned long long cpu_ticks;   /* utime + stime */
    long rss_kib;
} bench_proc;

static void bench_proc_sample(long pid, bench_proc *s)
{
    char path[64], buf[4096];
    FILE *f;
    size_t n;
    const char *p;
    unsigned long long ut = 0, st = 0;

    memset(s, 0, sizeof *s);
    if (pid <= 0)
        return;
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    f = fopen(path, "r");
    if (!f)
        return;
    n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    p = strrchr(buf, ')');      /* comm may contain spaces and parens */
    if (!p || sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
                     &ut, &st) != 2)
        return;
    s->cpu_ticks = ut + st;

    snprintf(path, sizeof path, "/proc/%ld/status", pid);
    f = fopen(path, "r");
    if (!f)
        return;
    while (fgets(buf, sizeof buf, f)) {
        if (strncmp(buf, "VmRSS:", 6) == 0) {
            s->rss_kib = strtol(buf + 6, NULL, 10);
            break;
        }
    }
    fclose(f);
    s->ok = 1;
}

/* Sleeps through warm-up and the measured window, flipping *phase, and
 * samples the server around the measured window. */
typedef struct bench_window {
    uint64_t t0_ns, t1_ns;
    bench_proc before, after;
    double client_cpu_s;        /* this process, over the measured window */
    unsigned long long busy0, busy1, all0, all1;   /* /proc/stat ticks, whole machine */
} bench_window;

/* Busy (not idle/iowait) and total ticks of all CPUs, from /proc/stat. */
static void bench_machine_ticks(unsigned long long *busy, unsigned long long *all)
{
    unsigned long long v[10] = {0};
    FILE *f = fopen("/proc/stat", "r");
    int i;
    *busy = *all = 0;
    if (!f)
        return;
    if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2],
               &v[3], &v[4], &v[5], &v[6], &v[7], &v[8], &v[9]) >= 8) {
        for (i = 0; i < 8; i++)     /* guest time is already in user */
            *all += v[i];
        *busy = *all - v[3] - v[4];
    }
    fclose(f);
}

static double bench_self_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void bench_run_window(const bench_opts *o, int *phase, bench_window *w)
{
    bench_sleep_s(o->warmup_s);
    bench_proc_sample(o->server_pid, &w->before);
    bench_machine_ticks(&w->busy0, &w->all0);
    w->client_cpu_s = bench_self_cpu_s();
    w->t0_ns = bench_now_ns();
    bench_phase_set(phase, BENCH_MEASURE);
    bench_sleep_s(o->duration_s);
    bench_phase_set(phase, BENCH_STOP);
    w->t1_ns = bench_now_ns();
    w->client_cpu_s = bench_self_cpu_s() - w->client_cpu_s;
    bench_machine_ticks(&w->busy1, &w->all1);
    bench_proc_sample(o->server_pid, &w->after);
}

/* ---- report ----------------------------------------------------------- */

/* Prints a human-readable summary and, as the last line, the RESULT line.
 * Latencies are in microseconds with one decimal, server CPU per call in
 * microseconds with two decimals; QPS is an integer. */
static void bench_report(const bench_opts *o, const hist *h, uint64_t errors,
                         const bench_window *w)
{
    double secs = (double)(w->t1_ns - w->t0_ns) / 1e9;
    double qps = secs > 0 ? (double)h->count / secs : 0.0;
    double p50 = hist_quantile_ns(h, 0.50) / 1e3;
    double p99 = hist_quantile_ns(h, 0.99) / 1e3;
    double p999 = hist_quantile_ns(h, 0.999) / 1e3;
    double cpu_us_per_call = 0.0;
    long rss = 0;

    if (o->server_pid > 0 && (!w->before.ok || !w->after.ok))
        fprintf(stderr, "warning: could not read /proc/%ld/{stat,status}\n", o->server_pid);
    if (w->before.ok && w->after.ok) {
        long hz = sysconf(_SC_CLK_TCK);
        rss = w->after.rss_kib;
        if (h->count && hz > 0)
            cpu_us_per_call = (double)(w->after.cpu_ticks - w->before.cpu_ticks) * 1e6 /
                              (double)hz / (double)h->count;
    }

    printf("system %s: %d conns, %d threads, %zu B payload, depth %d, %.1f s measured\n",
           o->system, o->conns, o->threads, o->size, o->depth, secs);
    printf("  calls %llu  qps %.0f  errors %llu\n", (unsigned long long)h->count, qps,
           (unsigned long long)errors);
    printf("  latency us: min %.1f  mean %.1f  p50 %.1f  p90 %.1f  p99 %.1f  p999 %.1f  max %.1f\n",
           h->count ? (double)h->min_ns / 1e3 : 0.0, hist_mean_ns(h) / 1e3, p50,
           hist_quantile_ns(h, 0.90) / 1e3, p99, p999, (double)h->max_ns / 1e3);
    if (h->count)
        printf("  client CPU %.2f us/call\n", w->client_cpu_s * 1e6 / (double)h->count);
    if (w->before.ok && w->after.ok)
        printf("  server pid %ld: VmRSS %ld KiB, CPU %.2f us/call\n", o->server_pid, rss,
               cpu_us_per_call);
    /* CPU used by other processes on the machine during the window, as a
     * share of all CPUs: the benchmark is only as good as this is small. */
    if (w->all1 > w->all0 && w->before.ok && w->after.ok) {
        long hz = sysconf(_SC_CLK_TCK);
        double busy = (double)(w->busy1 - w->busy0);
        double ours = (double)(w->after.cpu_ticks - w->before.cpu_ticks) +
                      (hz > 0 ? w->client_cpu_s * (double)hz : 0.0);
        double pct = 100.0 * (busy - ours) / (double)(w->all1 - w->all0);
        printf("  foreign CPU %.1f %% of the machine\n", pct < 0.0 ? 0.0 : pct);
    }
    printf("RESULT system=%s conns=%d threads=%d size=%zu qps=%.0f p50_us=%.1f p99_us=%.1f "
           "p999_us=%.1f errors=%llu server_rss_kib=%ld server_cpu_us_per_call=%.2f\n",
           o->system, o->conns, o->threads, o->size, qps, p50, p99, p999,
           (unsigned long long)errors, rss, cpu_us_per_call);
    fflush(stdout);
}

#endif /* MPRPC_BENCH_COMMON_H */
