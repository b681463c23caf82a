/* mprpc_echo_server.c - the mprpc.h provider of the benchmarks (bench/).
 *
 * EchoService.Echo from bench/echo.proto (bytes in, the same bytes out),
 * written like examples/provider.c: one method table, one service, the
 * default config with io_threads = 2.
 *
 * The payload is a nanopb callback field (bench/echo.options), read and
 * written with mprpc_bytes_decode / mprpc_bytes_encode: the request bytes
 * are never copied into a struct, the reply is encoded straight from the
 * received frame into the loop's send buffer.  (With "max_size:4096" instead,
 * the same file builds the static-struct variant; docs/BENCHMARKS.md says
 * which was faster.)
 *
 *   mprpc_echo_server [-p PORT] [-t IO_THREADS] [-i IDLE_TIMEOUT_MS]
 *
 * PORT 0 (the default) picks a free port; prints "PORT <n>" once serving and
 * stops gracefully on SIGINT/SIGTERM (mprpc_server_stop).  The fd limit is
 * raised to the hard maximum at start (10,000-connection test).
 */
#define MPRPC_IMPLEMENTATION
#include "mprpc.h"
#include "echo.pb.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#ifdef mprpcbench_EchoRequest_size
/* ---- static variant: payload is a pb_bytes_array (max_size in echo.options) ---- */

static void echo(mprpc_call *call, const void *request, void *response, void *user)
{
    const mprpcbench_EchoRequest *rq = (const mprpcbench_EchoRequest *)request;
    mprpcbench_EchoResponse *rs = (mprpcbench_EchoResponse *)response;
    (void)call; (void)user;
    memcpy(rs->payload.bytes, rq->payload.bytes, rq->payload.size);
    rs->payload.size = rq->payload.size;
}

static const mprpc_method echo_methods[] = {
    MPRPC_METHOD("Echo", mprpcbench_EchoRequest, mprpcbench_EchoResponse, echo),
};

#else
/* ---- zero-copy variant: payload is a callback field (FT_CALLBACK) ---- */

/* One call at a time runs on a loop thread, and its reply is encoded before
 * the loop reads on, so per-thread storage for the bytes is enough. */
static _Thread_local mprpc_bytes echo_in, echo_out;

static void echo_prepare(mprpc_call *call, void *request, void *response, void *user)
{
    mprpcbench_EchoRequest *rq = (mprpcbench_EchoRequest *)request;
    mprpcbench_EchoResponse *rs = (mprpcbench_EchoResponse *)response;
    (void)call; (void)user;
    echo_in.data = NULL;    /* an empty payload is not on the wire: no callback */
    echo_in.size = 0;
    rq->payload.funcs.decode = mprpc_bytes_decode;
    rq->payload.arg = &echo_in;
    rs->payload.funcs.encode = mprpc_bytes_encode;
    rs->payload.arg = &echo_out;
}

static void echo(mprpc_call *call, const void *request, void *response, void *user)
{
    (void)call; (void)request; (void)response; (void)user;
    echo_out = echo_in;     /* points into the request frame, valid until the reply is encoded */
}

static const mprpc_method echo_methods[] = {
    MPRPC_METHOD_PREPARED("Echo", mprpcbench_EchoRequest, mprpcbench_EchoResponse, echo,
                          echo_prepare),
};
#endif

static const mprpc_service echo_service = MPRPC_SERVICE("EchoService", echo_methods, NULL);

static mprpc_server *server;

static void on_signal(int sig)
{
    (void)sig;
    mprpc_server_stop(server); /* async-signal-safe */
}

/* Up to the hard limit; as root, raise the hard limit too (to nr_open). */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    FILE *f;
    unsigned long nr_open = 0;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
    f = fopen("/proc/sys/fs/nr_open", "r");
    if (f) {
        if (fscanf(f, "%lu", &nr_open) != 1) nr_open = 0;
        fclose(f);
    }
    if (nr_open > 1048576) nr_open = 1048576;
    if (nr_open > rl.rlim_max) {
        struct rlimit up = { (rlim_t)nr_open, (rlim_t)nr_open };
        if (setrlimit(RLIMIT_NOFILE, &up) == 0) return;
    }
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
}

int main(int argc, char **argv)
{
    mprpc_config cfg;
    mprpc_status st;
    int opt;

    mprpc_config_init(&cfg);
    cfg.rpcserver_port = 0;
    cfg.io_threads = 2;
    cfg.max_connections = 100000;   /* the 10,000-idle-connection test opens more */
    while ((opt = getopt(argc, argv, "p:t:i:h")) != -1) {
        if (opt == 'h' || opt == '?' || !optarg) {
            fprintf(stderr, "usage: %s [-p PORT] [-t IO_THREADS] [-i IDLE_TIMEOUT_MS]\n", argv[0]);
            return opt == 'h' ? 0 : 2;
        }
        if ((opt == 'p' && mprpc_config_set(&cfg, "rpcserver_port", optarg) != MPRPC_OK) ||
            (opt == 't' && mprpc_config_set(&cfg, "io_threads", optarg) != MPRPC_OK) ||
            (opt == 'i' && mprpc_config_set(&cfg, "idle_timeout_ms", optarg) != MPRPC_OK)) {
            fprintf(stderr, "%s: bad -%c '%s': %s\n", argv[0], opt, optarg, cfg.error);
            return 2;
        }
    }
#ifdef MPRPC_TLS
    /* mprpc-tls: bench/run.sh names the certificates made by scripts/tls-certs.sh */
    if (getenv("MPRPC_BENCH_TLS_DIR")) {
        const char *d = getenv("MPRPC_BENCH_TLS_DIR");
        cfg.tls_enable = 1;
        snprintf(cfg.tls_cert_file, sizeof cfg.tls_cert_file, "%s/server.crt", d);
        snprintf(cfg.tls_key_file, sizeof cfg.tls_key_file, "%s/server.key", d);
    }
#endif
    raise_fd_limit();
    signal(SIGPIPE, SIG_IGN);

    if (mprpc_server_new(&server, &cfg) != MPRPC_OK ||
        mprpc_server_add_service(server, &echo_service) != MPRPC_OK ||
        mprpc_server_start(server) != MPRPC_OK) {
        fprintf(stderr, "mprpc_echo_server: %s\n", server ? mprpc_server_error(server) : "out of memory");
        mprpc_server_free(server);
        return 1;
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    printf("PORT %d\n", mprpc_server_port(server));
    fflush(stdout);
    st = mprpc_server_run(server);
    mprpc_server_free(server);
    return st == MPRPC_OK ? 0 : 1;
}
