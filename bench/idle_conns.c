/* idle_conns.c - many idle connections against an mprpc provider.
 *
 *   idle_conns -p PORT --server-pid PID [-n 10000] [-k 1000] [-s 32]
 *
 * 1. A fresh caller (a new mprpc_channel) makes K calls of S bytes to
 *    EchoService.Echo, three times (medians of p50/p99 are reported): the
 *    latency without idle connections.
 * 2. The provider's VmRSS is sampled, N TCP connections are opened and left
 *    idle (nothing is sent on them), the provider is given time to accept
 *    them all (its /proc/PID/fd count is watched), and VmRSS is sampled again:
 *    the growth per idle connection.
 * 3. Three more fresh callers make K calls each while the N connections are open.
 * 4. The N connections are closed; three more fresh callers.
 *
 * Raises this process's RLIMIT_NOFILE (as root also the hard limit); the
 * provider must raise its own (mprpc_echo_server does).  Ends with one line
 *   IDLE conns=N rss_before_kib=.. rss_after_kib=.. bytes_per_conn=..
 *        base_p50_us=.. base_p99_us=.. idle_p50_us=.. idle_p99_us=.. after_p50_us=.. after_p99_us=.. errors=..
 */
#define _GNU_SOURCE
#define MPRPC_IMPLEMENTATION
#define MPRPC_STATIC
#include "mprpc.h"
#include "echo.pb.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#pragma GCC diagnostic ignored "-Wunused-function" /* not every helper is used here */
#include "bench_common.h"

static int port = -1, nconns = 10000, ncalls = 1000;
static size_t size = 32;
static long server_pid;

static long count_fds(long pid)
{
    char path[64];
    DIR *d;
    struct dirent *e;
    long n = 0;
    snprintf(path, sizeof path, "/proc/%ld/fd", pid);
    d = opendir(path);
    if (!d)
        return -1;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

static long rss_kib(void)
{
    bench_proc p;
    bench_proc_sample(server_pid, &p);
    return p.ok ? p.rss_kib : -1;
}

/* K calls on a new channel; fills h, returns the number of failed calls. */
static uint64_t fresh_caller(const uint8_t *pattern, hist *h)
{
    mprpc_config cfg;
    mprpc_channel *ch;
    mprpc_controller ctl;
    uint8_t *sink = (uint8_t *)malloc(size + 1);
    char p[16];
    uint64_t errors = 0;
    int i;

    hist_init(h);
    mprpc_config_init(&cfg);
    snprintf(p, sizeof p, "%d", port);
    mprpc_config_set(&cfg, "rpcserver_port", p);
    if (!sink || mprpc_channel_new(&ch, &cfg) != MPRPC_OK) {
        fprintf(stderr, "idle_conns: cannot create a channel\n");
        exit(1);
    }
    mprpc_controller_init(&ctl);
    for (i = 0; i < ncalls; i++) {
        mprpcbench_EchoRequest rq = mprpcbench_EchoRequest_init_zero;
        mprpcbench_EchoResponse rs = mprpcbench_EchoResponse_init_zero;
        mprpc_bytes out;
        mprpc_bytes_sink in;
        const uint8_t *payload = bench_payload(pattern, (uint32_t)i);
        uint64_t t0;
        out.data = payload;
        out.size = size;
        rq.payload.funcs.encode = mprpc_bytes_encode;
        rq.payload.arg = &out;
        in.data = sink;
        in.capacity = size + 1;
        in.size = 0;
        rs.payload.funcs.decode = mprpc_bytes_copy_decode;
        rs.payload.arg = &in;
        t0 = bench_now_ns();
        MPRPC_CALL(ch, "EchoService", "Echo", mprpcbench_EchoRequest, &rq, mprpcbench_EchoResponse,
                   &rs, &ctl);
        if (mprpc_controller_failed(&ctl)) {
            if (errors++ < 3)
                fprintf(stderr, "idle_conns: call failed: %s\n", mprpc_controller_error_text(&ctl));
            continue;
        }
        if (in.size != size || memcmp(sink, payload, size) != 0) {
            errors++;
            continue;
        }
        hist_record(h, bench_now_ns() - t0);
    }
    mprpc_channel_free(ch);
    free(sink);
    return errors;
}

/* Three fresh callers in a row (the scheduler may put caller and provider
 * on one core or on two, which alone moves p50 between ~17 and ~55 us here):
 * the medians of their p50 and p99. */
typedef struct phase_lat {
    double p50_us, p99_us, max_us;
    uint64_t calls;
} phase_lat;

static double median3(double a, double b, double c)
{
    if (a > b) { double t = a; a = b; b = t; }
    if (b > c) { double t = b; b = c; c = t; }
    return a > b ? a : b;
}

static uint64_t measure_phase(const uint8_t *pattern, phase_lat *out)
{
    hist h[3];
    uint64_t errors = 0;
    int i;
    memset(out, 0, sizeof *out);
    for (i = 0; i < 3; i++) {
        errors += fresh_caller(pattern, &h[i]);
        out->calls += h[i].count;
        if ((double)h[i].max_ns / 1e3 > out->max_us)
            out->max_us = (double)h[i].max_ns / 1e3;
    }
    out->p50_us = median3(hist_quantile_ns(&h[0], 0.5), hist_quantile_ns(&h[1], 0.5),
                          hist_quantile_ns(&h[2], 0.5)) / 1e3;
    out->p99_us = median3(hist_quantile_ns(&h[0], 0.99), hist_quantile_ns(&h[1], 0.99),
                          hist_quantile_ns(&h[2], 0.99)) / 1e3;
    return errors;
}

static void print_lat(const char *what, const phase_lat *l)
{
    printf("  %-34s 3 x %d calls  median p50 %.1f us  median p99 %.1f us  max %.1f us\n", what,
           ncalls, l->p50_us, l->p99_us, l->max_us);
}

static void raise_nofile(rlim_t want)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    if (rl.rlim_cur >= want)
        return;
    if (rl.rlim_max < want) {
        struct rlimit up = {want, want};
        if (setrlimit(RLIMIT_NOFILE, &up) == 0)
            return;
        fprintf(stderr, "idle_conns: cannot raise the fd limit to %lu (not root?): %s\n",
                (unsigned long)want, strerror(errno));
    }
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"port", required_argument, NULL, 'p'},
        {"conns", required_argument, NULL, 'n'},
        {"calls", required_argument, NULL, 'k'},
        {"size", required_argument, NULL, 's'},
        {"server-pid", required_argument, NULL, 1000},
        {NULL, 0, NULL, 0},
    };
    struct sockaddr_in addr;
    phase_lat base, idle, after;
    hist warm;
    uint64_t errors = 0;
    uint8_t *pattern;
    int *fds, c, i, opened = 0;
    long fd0, rss0, rss1, fdn = 0;
    uint64_t t0, t_open, t_accept;

    while ((c = getopt_long(argc, argv, "p:n:k:s:", longopts, NULL)) != -1) {
        switch (c) {
        case 'p': port = (int)bench_parse_num(argv[0], "port", optarg, 1, 65535); break;
        case 'n': nconns = (int)bench_parse_num(argv[0], "conns", optarg, 1, 1000000); break;
        case 'k': ncalls = (int)bench_parse_num(argv[0], "calls", optarg, 1, 10000000); break;
        case 's': size = (size_t)bench_parse_num(argv[0], "size", optarg, 0, 1 << 20); break;
        case 1000: server_pid = bench_parse_num(argv[0], "server pid", optarg, 1, 0x7fffffffL); break;
        default:
            fprintf(stderr, "usage: %s -p PORT --server-pid PID [-n CONNS] [-k CALLS] [-s SIZE]\n",
                    argv[0]);
            return 2;
        }
    }
    if (port < 0 || server_pid <= 0) {
        fprintf(stderr, "%s: -p and --server-pid are required\n", argv[0]);
        return 2;
    }
    raise_nofile((rlim_t)nconns + 1024);
    pattern = bench_pattern_new(size);
    fds = (int *)malloc((size_t)nconns * sizeof *fds);
    if (!fds)
        return 1;

    /* 1. without idle connections (also warms the provider's call path) */
    errors += fresh_caller(pattern, &warm);
    errors += measure_phase(pattern, &base);
    usleep(200000); /* the provider closes the callers' connections */
    fd0 = count_fds(server_pid);
    rss0 = rss_kib();

    /* 2. open N idle connections */
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    t0 = bench_now_ns();
    for (i = 0; i < nconns; i++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
            fprintf(stderr, "idle_conns: connection %d: %s\n", i, strerror(errno));
            if (fd >= 0)
                close(fd);
            break;
        }
        fds[opened++] = fd;
        if (i % 1000 == 999) { /* let the acceptor keep up with the 1024 backlog */
            long want = fd0 + opened;
            int w;
            for (w = 0; w < 200 && count_fds(server_pid) < want; w++)
                usleep(5000);
        }
    }
    t_open = bench_now_ns();
    for (i = 0; i < 2000; i++) { /* up to 10 s for the provider to take them all */
        fdn = count_fds(server_pid);
        if (fdn >= fd0 + opened)
            break;
        usleep(5000);
    }
    t_accept = bench_now_ns();
    usleep(2000000); /* let the accept burst settle before measuring */
    rss1 = rss_kib();
    fdn = count_fds(server_pid);

    /* 3. a fresh caller while they are open */
    errors += measure_phase(pattern, &idle);

    /* 4. close them; a fresh caller again */
    for (i = 0; i < opened; i++)
        close(fds[i]);
    usleep(300000);
    errors += measure_phase(pattern, &after);

    printf("idle connections: %d opened in %.2f s (provider had them all after %.2f s); provider fds %ld -> %ld\n",
           opened, (double)(t_open - t0) / 1e9, (double)(t_accept - t0) / 1e9, fd0, fdn);
    printf("  provider VmRSS %ld KiB -> %ld KiB: %.0f bytes per idle connection\n", rss0, rss1,
           opened ? (double)(rss1 - rss0) * 1024.0 / opened : 0.0);
    print_lat("fresh caller, no idle conns:", &base);
    print_lat("fresh caller, idle conns open:", &idle);
    print_lat("fresh caller, after closing them:", &after);
    printf("IDLE conns=%d accepted=%ld rss_before_kib=%ld rss_after_kib=%ld bytes_per_conn=%.0f "
           "base_p50_us=%.1f base_p99_us=%.1f idle_p50_us=%.1f idle_p99_us=%.1f "
           "after_p50_us=%.1f after_p99_us=%.1f errors=%llu\n",
           opened, fdn - fd0, rss0, rss1, opened ? (double)(rss1 - rss0) * 1024.0 / opened : 0.0,
           base.p50_us, base.p99_us, idle.p50_us, idle.p99_us, after.p50_us, after.p99_us,
           (unsigned long long)errors);
    return (opened == nconns && fdn - fd0 >= opened && errors == 0) ? 0 : 1;
}
