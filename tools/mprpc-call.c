/* mprpc-call: call any mprpc.h (or seed mprpc) method from the command line, in the spirit of grpcurl.
 *
 *   mprpc-call [options] ADDRESS SERVICE METHOD            ADDRESS as mprpc.h takes it (rpcserver_address)
 *   mprpc-call [options] --zookeeper HOSTS SERVICE METHOD  the provider found through ZooKeeper
 *   mprpc-call --list --zookeeper HOSTS                    services, methods and providers registered
 *   mprpc-call --health [--service NAME] ADDRESS           exit 0 only when SERVING (a probe)
 *   mprpc-call --stats ADDRESS                             the provider's counters, per method
 *
 * The request is protobuf text format (-d TEXT, else stdin), encoded and the reply decoded by Debian's
 * protoc (--encode/--decode) with the .proto given by --proto; --raw passes binary messages through
 * stdin/stdout untouched. No generated code is needed: the call goes through mprpc_channel_call_raw.
 * Exit codes are per status class (usage() has the table; README.md too). */
#define MPRPC_IMPLEMENTATION
#include "mprpc.h"

#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <sys/time.h>
#include <unistd.h>
#ifndef MPRPC_NO_ZOOKEEPER
#include <zookeeper/zookeeper.h>
#endif

extern char **environ;

/* Exit codes, one per class of outcome. */
enum {
    EXIT_OK = 0,
    EXIT_NOT_SERVING = 1, /* --health: answered, but not SERVING */
    EXIT_USAGE = 2,       /* bad arguments or input; protoc missing or refusing the text: nothing was sent */
    EXIT_UNAVAILABLE = 3, /* no provider reached: connect refused, unavailable, connection lost, stopping, busy,
                             ZooKeeper trouble */
    EXIT_TIMEOUT = 4,     /* the call (or --list) did not finish within --timeout */
    EXIT_APPLICATION = 5, /* the handler failed the call (mprpc_call_fail) */
    EXIT_OTHER = 6        /* refused or broken otherwise: unknown service/method, the provider could not
                             decode the request, too large, protocol violation, bad reply, TLS */
};

#define INPUT_MAX (64u << 20) /* request text or bytes read, protoc output kept */
#define MAX_PROTO_IMPORTS 16

typedef struct opts {
    const char *address, *zookeeper, *root, *service, *method, *data, *proto, *health_service;
    const char *tls_ca, *tls_cert, *tls_key, *tls_server_name; /* set: the call goes over TLS */
    const char *imports[MAX_PROTO_IMPORTS];
    int nimports, raw, list, health, stats, timeout_ms, repeat;
} opts;

static const char *prog = "mprpc-call";

static void usage(FILE *f)
{
    fprintf(f,
"usage: %s [options] ADDRESS SERVICE METHOD\n"
"       %s [options] --zookeeper HOSTS SERVICE METHOD\n"
"       %s --list --zookeeper HOSTS [--root PATH]\n"
"       %s --health [--service NAME] ADDRESS\n"
"       %s --stats ADDRESS\n"
"ADDRESS is 1.2.3.4:80, [::1]:80, host.name:80, unix:/path or unix:@name. The request is protobuf text format given with -d TEXT or on stdin, encoded and\n"
"the reply decoded by protoc with the .proto given by --proto; --raw sends stdin's bytes as they are\n"
"and writes the reply's bytes to stdout.\n"
"options:\n"
"  --proto FILE       the .proto declaring SERVICE (its rpc METHOD gives the message types)\n"
"  -I, --import DIR   where protoc looks for FILE and its imports (repeatable; default FILE's dir)\n"
"  -d, --data TEXT    the request in text format (default: read stdin; empty when stdin is a tty)\n"
"  --raw              binary request on stdin, binary reply on stdout; no --proto needed\n"
"  --zookeeper HOSTS  find the provider (or --list) through ZooKeeper, host:port[,host:port]\n"
"  --root PATH        the registry's root node (default /mprpc)\n"
"  --timeout MS       bound on the whole call, or on --list (default 5000)\n"
"  --repeat N         make the call N times; prints a latency summary (p50/p99) on stderr\n"
"  --list             print the services, methods and providers registered in ZooKeeper\n"
"  --health           ask the provider's admin service; --service NAME asks for one service\n"
"  --stats            print the provider's admin statistics\n"
#ifdef MPRPC_TLS
"  --tls-ca FILE      call over TLS; the provider's certificate must be signed by these CAs\n"
"                     (any --tls-* option turns TLS on; without --tls-ca: the system's CAs)\n"
"  --tls-cert FILE    a client certificate (PEM) for a provider that asks for one (mutual TLS)\n"
"  --tls-key FILE     its key (default: in the --tls-cert file)\n"
"  --tls-server-name NAME  the name the provider's certificate must carry (default: ADDRESS's host)\n"
#endif
"exit status: 0 ok (--health: SERVING); 1 --health answered NOT_SERVING or SERVICE_UNKNOWN;\n"
"  2 usage, bad input, protoc missing or refusing the text; 3 no provider reached (connect,\n"
"  unavailable, connection lost, shutting down, busy, ZooKeeper); 4 timed out; 5 application\n"
"  error; 6 other (unknown service or method, undecodable request or reply, too large, protocol, TLS)\n",
            prog, prog, prog, prog, prog);
}

static int fail_usage(const char *fmt, const char *arg)
{
    fprintf(stderr, "%s: ", prog);
    fprintf(stderr, fmt, arg);
    fprintf(stderr, " (--help for usage)\n");
    return EXIT_USAGE;
}

/* The exit code of a call's status. */
static int exit_code(int status)
{
    switch (status) {
    case MPRPC_OK: return EXIT_OK;
    case MPRPC_ERR_CONNECT: case MPRPC_ERR_UNAVAILABLE: case MPRPC_ERR_CONNECTION_LOST:
    case MPRPC_ERR_SHUTDOWN: case MPRPC_ERR_BUSY: case MPRPC_ERR_ZOOKEEPER: case MPRPC_ERR_IO:
        return EXIT_UNAVAILABLE;
    case MPRPC_ERR_TIMEOUT: return EXIT_TIMEOUT;
    case MPRPC_ERR_APPLICATION: return EXIT_APPLICATION;
    case MPRPC_ERR_CONFIG: case MPRPC_ERR_INVALID_ARGUMENT: return EXIT_USAGE;
    default: return EXIT_OTHER;
    }
}

/* ---- reading input ---- */

static int read_all(int fd, mprpc_buf *out)
{
    for (;;) {
        ssize_t n;
        if (mprpc_buf_reserve(out, 64 * 1024, INPUT_MAX) != MPRPC_OK) return -1;
        n = read(fd, out->data + out->len, out->cap - out->len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return (int)n;
        out->len += (size_t)n;
    }
}

/* The request: -d TEXT, or stdin (nothing when stdin is a terminal). */
static int read_request(const opts *o, mprpc_buf *out)
{
    if (o->data) return mprpc_buf_append(out, o->data, strlen(o->data), INPUT_MAX) == MPRPC_OK ? 0 : -1;
    if (isatty(0)) return 0;
    if (read_all(0, out) != 0) {
        fprintf(stderr, "%s: cannot read the request from stdin (%s, or over %u bytes)\n", prog,
                strerror(errno), INPUT_MAX);
        return -1;
    }
    return 0;
}

/* ---- running protoc: argv, stdin bytes in, stdout bytes out, bounded in size and time ---- */

typedef struct child_io {
    int in, out, err;
} child_io;

static pid_t spawn_piped(char *const argv[], child_io *io)
{
    int pin[2], pout[2], perr[2];
    posix_spawn_file_actions_t fa;
    pid_t pid = -1;
    if (pipe2(pin, O_CLOEXEC) != 0) return -1;
    if (pipe2(pout, O_CLOEXEC) != 0) { close(pin[0]); close(pin[1]); return -1; }
    if (pipe2(perr, O_CLOEXEC) != 0) { close(pin[0]); close(pin[1]); close(pout[0]); close(pout[1]); return -1; }
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, pin[0], 0);
    posix_spawn_file_actions_adddup2(&fa, pout[1], 1);
    posix_spawn_file_actions_adddup2(&fa, perr[1], 2);
    if ((errno = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ)) != 0) pid = -1;
    posix_spawn_file_actions_destroy(&fa);
    close(pin[0]); close(pout[1]); close(perr[1]);
    io->in = pin[1]; io->out = pout[0]; io->err = perr[0];
    if (pid < 0) { close(io->in); close(io->out); close(io->err); }
    return pid;
}

/* One poll turn over the child's pipes: feed stdin, collect stdout and stderr. 0: all closed. */
static int pump(child_io *io, const mprpc_buf *in, size_t *sent, mprpc_buf *out, mprpc_buf *err, int ms)
{
    struct pollfd pf[3] = { { io->in, POLLOUT, 0 }, { io->out, POLLIN, 0 }, { io->err, POLLIN, 0 } };
    int *fds[3] = { &io->in, &io->out, &io->err };
    mprpc_buf *dst[3] = { NULL, out, err };
    int i, n = poll(pf, 3, ms);
    if (n <= 0) return n < 0 && errno == EINTR ? 1 : n;
    for (i = 0; i < 3; i++) {
        ssize_t k;
        if (!pf[i].revents) continue;
        if (i == 0) {
            k = write(io->in, in->data + *sent, in->len - *sent);
            if (k > 0) *sent += (size_t)k;
            if (k < 0 || *sent == in->len) { close(io->in); io->in = -1; }
            continue;
        }
        if (mprpc_buf_reserve(dst[i], 64 * 1024, INPUT_MAX) != MPRPC_OK) k = -1;
        else k = read(*fds[i], dst[i]->data + dst[i]->len, dst[i]->cap - dst[i]->len);
        if (k > 0) dst[i]->len += (size_t)k;
        else { close(*fds[i]); *fds[i] = -1; }
    }
    return io->in >= 0 || io->out >= 0 || io->err >= 0 ? 1 : 0;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Runs protoc; 0 when it exited 0 within timeout_ms. Its stderr is shown on failure. */
static int run_protoc(char *const argv[], const mprpc_buf *in, mprpc_buf *out, int timeout_ms)
{
    child_io io;
    mprpc_buf err;
    size_t sent = 0;
    uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
    int status = 0, r = 1;
    pid_t pid = spawn_piped(argv, &io);
    if (pid < 0) {
        fprintf(stderr, "%s: cannot run protoc (%s): install Debian's protobuf-compiler, or use --raw\n",
                prog, strerror(errno));
        return -1;
    }
    mprpc_buf_init(&err);
    if (in->len == 0) { close(io.in); io.in = -1; }
    while (r > 0 && now_ms() < deadline) r = pump(&io, in, &sent, out, &err, (int)(deadline - now_ms()));
    if (r != 0) kill(pid, SIGKILL); /* timed out, or poll failed: the child must not outlive us */
    if (io.in >= 0) close(io.in);
    if (io.out >= 0) close(io.out);
    if (io.err >= 0) close(io.err);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    if (r == 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0) r = -2;
    if (r != -2) {
        if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
            fprintf(stderr, "%s: protoc not found: install Debian's protobuf-compiler, or use --raw\n", prog);
        else if (r != 0)
            fprintf(stderr, "%s: protoc did not finish within %d ms\n", prog, timeout_ms);
        else
            fprintf(stderr, "%s: protoc %s failed:\n%.*s", prog, argv[1], (int)err.len, (const char *)err.data);
    }
    mprpc_buf_free(&err);
    return r == -2 ? 0 : -1;
}

/* ---- the .proto: the message types of SERVICE.METHOD ---- */

/* The next token of a .proto: an identifier (dots included) or one punctuation character; comments and
 * string literals skipped. Returns its length (0 at the end). */
static size_t next_token(const char **p, const char **tok)
{
    const char *s = *p;
    for (;;) {
        while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r') s++;
        if (s[0] == '/' && s[1] == '/') { while (*s && *s != '\n') s++; continue; }
        if (s[0] == '/' && s[1] == '*') { const char *e = strstr(s + 2, "*/"); s = e ? e + 2 : s + strlen(s); continue; }
        if (*s == '"' || *s == '\'') { char q = *s++; while (*s && *s != q) s++; if (*s) s++; continue; }
        break;
    }
    *tok = s;
    if (!*s) { *p = s; return 0; }
    if ((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '_' || *s == '.') {
        while ((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '_' ||
               *s == '.') s++;
    } else {
        s++;
    }
    *p = s;
    return (size_t)(s - *tok);
}

static int tok_is(const char *tok, size_t n, const char *word)
{
    return n == strlen(word) && memcmp(tok, word, n) == 0;
}

/* A message type as protoc wants it: fully qualified, without a leading dot. */
static void qualify(char *dst, size_t cap, const char *pkg, const char *tok, size_t n)
{
    if (tok[0] == '.') snprintf(dst, cap, "%.*s", (int)n - 1, tok + 1);
    else if (pkg[0] && !memchr(tok, '.', n)) snprintf(dst, cap, "%s.%.*s", pkg, (int)n, tok);
    else snprintf(dst, cap, "%.*s", (int)n, tok);
}

/* The wire name may be the qualified one ("mprpc.admin.Admin"); the seed's services use the bare name. */
static int service_is_qualified(const char *pkg, const char *tok, size_t n, const char *service)
{
    size_t k = strlen(pkg);
    return k && strncmp(service, pkg, k) == 0 && service[k] == '.' && tok_is(tok, n, service + k + 1);
}

/* Finds `package`, then `service SERVICE { ... rpc METHOD (stream? REQ) returns (stream? RESP)`. */
static int find_method_types(const char *text, const char *service, const char *method, char *req, char *resp,
                             size_t cap)
{
    const char *p = text, *t;
    char pkg[256] = "";
    int in_service = 0, depth = 0;
    size_t n;
    while ((n = next_token(&p, &t)) != 0) {
        if (tok_is(t, n, "package") && depth == 0 && (n = next_token(&p, &t)) != 0)
            snprintf(pkg, sizeof pkg, "%.*s", (int)n, t);
        else if (tok_is(t, n, "{")) depth++;
        else if (tok_is(t, n, "}") && --depth == 0) in_service = 0;
        else if (tok_is(t, n, "service") && depth == 0 && (n = next_token(&p, &t)) != 0)
            in_service = tok_is(t, n, service) || service_is_qualified(pkg, t, n, service);
        else if (tok_is(t, n, "rpc") && in_service && (n = next_token(&p, &t)) != 0 && tok_is(t, n, method)) {
            char *dst[2] = { req, resp };
            int i;
            for (i = 0; i < 2; i++) {
                if (i == 1 && (!next_token(&p, &t) || (n = next_token(&p, &t)) == 0 || !tok_is(t, n, "returns")))
                    return -1;
                if ((n = next_token(&p, &t)) == 0 || !tok_is(t, n, "(")) return -1;
                if ((n = next_token(&p, &t)) != 0 && tok_is(t, n, "stream")) n = next_token(&p, &t);
                if (n == 0) return -1;
                qualify(dst[i], cap, pkg, t, n);
            }
            return 0;
        }
    }
    return -1;
}

typedef struct proto_ctx {
    char req_type[256], resp_type[256];
    char *argv[MAX_PROTO_IMPORTS + 5];
    char type_arg[300], inc[MAX_PROTO_IMPORTS + 1][1100];
} proto_ctx;

/* Reads --proto, finds the method's types and prepares protoc's argument list (type filled per use). */
static int proto_prepare(const opts *o, proto_ctx *pc)
{
    mprpc_buf text;
    int fd = open(o->proto, O_RDONLY | O_CLOEXEC), i, k = 0, rc;
    const char *slash;
    mprpc_buf_init(&text);
    if (fd < 0) {
        fprintf(stderr, "%s: cannot open --proto %s: %s\n", prog, o->proto, strerror(errno));
        return EXIT_USAGE;
    }
    rc = read_all(fd, &text);
    close(fd);
    if (rc == 0) rc = mprpc_buf_append(&text, "", 1, INPUT_MAX) == MPRPC_OK ? 0 : -1;
    if (rc == 0) rc = find_method_types((const char *)text.data, o->service, o->method, pc->req_type,
                                        pc->resp_type, sizeof pc->req_type);
    mprpc_buf_free(&text);
    if (rc != 0) {
        fprintf(stderr, "%s: %s declares no rpc %s in a service %s\n", prog, o->proto, o->method, o->service);
        return EXIT_USAGE;
    }
    pc->argv[k++] = (char *)"protoc";
    pc->argv[k++] = pc->type_arg;
    for (i = 0; i < o->nimports; i++) {
        snprintf(pc->inc[i], sizeof pc->inc[i], "-I%s", o->imports[i]);
        pc->argv[k++] = pc->inc[i];
    }
    if (o->nimports == 0) { /* like protoc's own habit: the file's directory */
        slash = strrchr(o->proto, '/');
        snprintf(pc->inc[0], sizeof pc->inc[0], "-I%.*s", slash ? (int)(slash - o->proto) : 1,
                 slash ? o->proto : ".");
        pc->argv[k++] = pc->inc[0];
    }
    pc->argv[k++] = (char *)(strrchr(o->proto, '/') && o->nimports == 0 ? strrchr(o->proto, '/') + 1 : o->proto);
    pc->argv[k] = NULL;
    return EXIT_OK;
}

static int protoc_convert(proto_ctx *pc, const char *mode, const char *type, const mprpc_buf *in, mprpc_buf *out,
                          int timeout_ms)
{
    snprintf(pc->type_arg, sizeof pc->type_arg, "--%s=%s", mode, type);
    out->pos = out->len = 0;
    return run_protoc(pc->argv, in, out, timeout_ms);
}

/* ---- the call ---- */

/* The --tls-* options as config keys; any of them turns TLS on. */
static mprpc_status set_tls(const opts *o, mprpc_config *cfg)
{
    const char *keys[] = { "tls_ca_file", "tls_cert_file", "tls_key_file", "tls_server_name" };
    const char *vals[] = { o->tls_ca, o->tls_cert, o->tls_key, o->tls_server_name };
    size_t i;
    mprpc_status st = MPRPC_OK;
    for (i = 0; i < 4 && st == MPRPC_OK; i++)
        if (vals[i]) st = mprpc_config_set(cfg, keys[i], vals[i]);
    if (st == MPRPC_OK && (o->tls_ca || o->tls_cert || o->tls_key || o->tls_server_name))
        st = mprpc_config_set(cfg, "tls_enable", "1");
    return st;
}

static int open_channel(const opts *o, mprpc_channel **ch)
{
    mprpc_config cfg;
    char ms[16];
    mprpc_config_init(&cfg);
    snprintf(ms, sizeof ms, "%d", o->timeout_ms);
    if ((o->zookeeper ? mprpc_config_set(&cfg, "zookeeper_hosts", o->zookeeper)
                      : mprpc_config_set(&cfg, "rpcserver_address", o->address)) != MPRPC_OK ||
        set_tls(o, &cfg) != MPRPC_OK ||
        (o->root && mprpc_config_set(&cfg, "zookeeper_root", o->root) != MPRPC_OK) ||
        mprpc_config_set(&cfg, "rpc_timeout_ms", ms) != MPRPC_OK ||
        mprpc_config_set(&cfg, "zookeeper_connect_timeout_ms", ms) != MPRPC_OK ||
        (o->timeout_ms < cfg.connect_timeout_ms && mprpc_config_set(&cfg, "connect_timeout_ms", ms) != MPRPC_OK) ||
        mprpc_config_set(&cfg, "channel_eject_failures", "0") != MPRPC_OK) {
        fprintf(stderr, "%s: %s\n", prog, cfg.error);
        return EXIT_USAGE;
    }
    if (mprpc_channel_new(ch, &cfg) != MPRPC_OK) {
        fprintf(stderr, "%s: cannot make a channel: %s\n", prog, cfg.error[0] ? cfg.error : "see above");
        return exit_code(MPRPC_ERR_CONFIG);
    }
    return EXIT_OK;
}

static int report_failure(const mprpc_controller *ctl)
{
    fprintf(stderr, "%s: %s\n", mprpc_status_name(ctl->status), mprpc_controller_error_text(ctl));
    return exit_code(ctl->status);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* --repeat: one line on stderr (stdout keeps only the reply). */
static void latency_summary(uint64_t *us, int n, int ok)
{
    uint64_t sum = 0;
    int i;
    if (n == 0) return;
    qsort(us, (size_t)n, sizeof *us, cmp_u64);
    for (i = 0; i < n; i++) sum += us[i];
    fprintf(stderr, "%d calls, %d ok, %d failed; latency us: min %llu p50 %llu p99 %llu max %llu mean %llu\n",
            n, ok, n - ok, (unsigned long long)us[0], (unsigned long long)us[(n - 1) / 2],
            (unsigned long long)us[(int)((n - 1) * 0.99)], (unsigned long long)us[n - 1],
            (unsigned long long)(sum / (uint64_t)n));
}

/* Makes the call o->repeat times; the first successful reply is kept in *reply. Returns the exit code of
 * the first failure, or EXIT_OK. */
static int call_repeat(const opts *o, mprpc_channel *ch, const mprpc_buf *req, mprpc_buf *reply)
{
    uint64_t *us = (uint64_t *)calloc((size_t)o->repeat, sizeof *us);
    mprpc_buf tmp;
    int i, ok = 0, rc = EXIT_OK, have = 0;
    if (!us) return EXIT_OTHER;
    mprpc_buf_init(&tmp);
    for (i = 0; i < o->repeat; i++) {
        mprpc_controller ctl;
        uint64_t t0 = now_us();
        mprpc_controller_init(&ctl);
        ctl.timeout_ms = o->timeout_ms;
        mprpc_channel_call_raw(ch, o->service, o->method, req->data, req->len, have ? &tmp : reply, &ctl);
        us[i] = now_us() - t0;
        if (!mprpc_controller_failed(&ctl)) {
            ok++;
            have = 1;
        } else if (rc == EXIT_OK) {
            rc = report_failure(&ctl);
        }
    }
    if (o->repeat > 1) latency_summary(us, o->repeat, ok);
    if (!have) reply->len = 0;
    mprpc_buf_free(&tmp);
    free(us);
    return have && o->repeat > 1 ? (ok == o->repeat ? EXIT_OK : rc) : rc;
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t k = write(fd, p, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

static int cmd_call(const opts *o)
{
    proto_ctx pc;
    mprpc_buf text, req, reply;
    mprpc_channel *ch = NULL;
    int rc = EXIT_OK;
    mprpc_buf_init(&text); mprpc_buf_init(&req); mprpc_buf_init(&reply);
    if (!o->raw) rc = proto_prepare(o, &pc);
    if (rc == EXIT_OK && read_request(o, o->raw ? &req : &text) != 0) rc = EXIT_USAGE;
    if (rc == EXIT_OK && !o->raw && protoc_convert(&pc, "encode", pc.req_type, &text, &req, o->timeout_ms) != 0)
        rc = EXIT_USAGE;
    if (rc == EXIT_OK) rc = open_channel(o, &ch);
    if (rc == EXIT_OK) rc = call_repeat(o, ch, &req, &reply);
    mprpc_channel_free(ch);
    if (reply.len && !o->raw && protoc_convert(&pc, "decode", pc.resp_type, &reply, &text, o->timeout_ms) != 0) {
        fprintf(stderr, "%s: the reply (%zu bytes) does not decode as %s\n", prog, reply.len, pc.resp_type);
        if (rc == EXIT_OK) rc = EXIT_OTHER;
    } else if (reply.len || (rc == EXIT_OK && o->raw)) {
        const mprpc_buf *out = o->raw ? &reply : &text;
        if (out->len && write_all(1, out->data, out->len) != 0 && rc == EXIT_OK) rc = EXIT_OTHER;
    }
    mprpc_buf_free(&text); mprpc_buf_free(&req); mprpc_buf_free(&reply);
    return rc;
}

/* ---- --health and --stats: the provider's admin service (mprpc.h section 7i) ---- */

static int cmd_health(const opts *o)
{
    mprpc_admin_HealthRequest rq;
    mprpc_admin_HealthResponse rs;
    static const char *const names[] = { "UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN" };
    mprpc_channel *ch = NULL;
    mprpc_controller ctl;
    int rc = open_channel(o, &ch);
    if (rc != EXIT_OK) return rc;
    memset(&rq, 0, sizeof rq);
    memset(&rs, 0, sizeof rs);
    if (o->health_service) snprintf(rq.service, sizeof rq.service, "%s", o->health_service);
    mprpc_controller_init(&ctl);
    ctl.timeout_ms = o->timeout_ms;
    MPRPC_CALL(ch, MPRPC_ADMIN_SERVICE, "Health", mprpc_admin_HealthRequest, &rq, mprpc_admin_HealthResponse, &rs,
               &ctl);
    mprpc_channel_free(ch);
    if (mprpc_controller_failed(&ctl)) return report_failure(&ctl);
    printf("%s\n", (unsigned)rs.status < 4 ? names[rs.status] : "UNKNOWN");
    return rs.status == mprpc_admin_HealthResponse_ServingStatus_SERVING ? EXIT_OK : EXIT_NOT_SERVING;
}

/* The histogram's bound below which fraction q of the calls fell ("+" past the last bound). */
static void percentile(const mprpc_admin_MethodStats *m, double q, char *out, size_t cap)
{
    uint64_t total = 0, seen = 0;
    pb_size_t i;
    for (i = 0; i < m->latency_count; i++) total += m->latency[i].count;
    for (i = 0; i < m->latency_count; i++) {
        seen += m->latency[i].count;
        if ((double)seen >= q * (double)total) break;
    }
    if (total == 0) snprintf(out, cap, "-");
    else if (i == m->latency_count || m->latency[i].le_us == 0) snprintf(out, cap, "long");
    else snprintf(out, cap, "%llu", (unsigned long long)m->latency[i].le_us + 1);
}

/* Each MethodStats as it is decoded: one line. */
static bool print_method(pb_istream_t *stream, const pb_field_t *field, void **arg)
{
    mprpc_admin_MethodStats m;
    char name[300], p50[24], p99[24];
    pb_size_t i;
    (void)field; (void)arg;
    memset(&m, 0, sizeof m);
    if (!pb_decode(stream, mprpc_admin_MethodStats_fields, &m)) return false;
    snprintf(name, sizeof name, "%s.%s", m.service, m.method);
    percentile(&m, 0.5, p50, sizeof p50);
    percentile(&m, 0.99, p99, sizeof p99);
    printf("%-40s %8llu %7llu %9s %9s %9llu %10llu %10llu", name, (unsigned long long)m.calls,
           (unsigned long long)m.errors, p50, p99, (unsigned long long)(m.calls ? m.latency_sum_us / m.calls : 0),
           (unsigned long long)m.request_bytes, (unsigned long long)m.response_bytes);
    for (i = 0; i < m.errors_by_status_count; i++)
        printf("%s%s=%llu", i ? "," : " ", m.errors_by_status[i].status,
               (unsigned long long)m.errors_by_status[i].count);
    printf("\n");
    return true;
}

static bool print_header(mprpc_admin_StatsResponse *rs)
{
    printf("provider: %s, %llu io thread(s), loops busy %llu us in all\n", rs->serving ? "SERVING" : "NOT_SERVING",
           (unsigned long long)rs->io_threads, (unsigned long long)rs->loop_busy_us);
    printf("connections: open %llu, accepted %llu, rejected %llu\n", (unsigned long long)rs->connections_open,
           (unsigned long long)rs->connections_accepted, (unsigned long long)rs->connections_rejected);
    printf("calls: %llu, error replies %llu, protocol errors %llu, expired %llu, refused %llu, abandoned %llu, "
           "deadline dropped %llu, deferred now %llu\n", (unsigned long long)rs->calls,
           (unsigned long long)rs->call_errors, (unsigned long long)rs->protocol_errors,
           (unsigned long long)rs->expired, (unsigned long long)rs->refused, (unsigned long long)rs->abandoned,
           (unsigned long long)rs->deadline_dropped, (unsigned long long)rs->deferred_pending);
    printf("bytes: in %llu, out %llu\n", (unsigned long long)rs->bytes_in, (unsigned long long)rs->bytes_out);
    printf("%-40s %8s %7s %9s %9s %9s %10s %10s %s\n", "method", "calls", "errors", "p50<us", "p99<us", "mean us",
           "req bytes", "resp bytes", "errors by status");
    return true;
}

/* The reply is decoded twice: the totals first (methods skipped), then the methods, one line each, so
 * the totals print first whatever the field order. */
static int cmd_stats(const opts *o)
{
    mprpc_admin_StatsResponse rs;
    mprpc_channel *ch = NULL;
    mprpc_controller ctl;
    mprpc_buf reply;
    pb_istream_t is;
    uint8_t empty = 0;
    int rc = open_channel(o, &ch);
    if (rc != EXIT_OK) return rc;
    mprpc_buf_init(&reply);
    mprpc_controller_init(&ctl);
    ctl.timeout_ms = o->timeout_ms;
    memset(&rs, 0, sizeof rs);
    mprpc_channel_call_raw(ch, MPRPC_ADMIN_SERVICE, "Stats", &empty, 0, &reply, &ctl);
    mprpc_channel_free(ch);
    if (mprpc_controller_failed(&ctl)) {
        mprpc_buf_free(&reply);
        return report_failure(&ctl);
    }
    is = pb_istream_from_buffer(reply.data, reply.len);
    rc = pb_decode(&is, mprpc_admin_StatsResponse_fields, &rs) && print_header(&rs) ? EXIT_OK : EXIT_OTHER;
    rs.methods.funcs.decode = print_method;
    is = pb_istream_from_buffer(reply.data, reply.len);
    if (rc == EXIT_OK && !pb_decode(&is, mprpc_admin_StatsResponse_fields, &rs)) rc = EXIT_OTHER;
    if (rc != EXIT_OK) fprintf(stderr, "%s: the Stats reply (%zu bytes) does not decode\n", prog, reply.len);
    mprpc_buf_free(&reply);
    return rc;
}

/* ---- --list: the registry, read with the ZooKeeper C client (layout: mprpc.h section 9) ---- */

#ifndef MPRPC_NO_ZOOKEEPER
static int list_timeout_ms;

/* --list is bounded as a whole: the ZooKeeper client's own waits follow its session timeout. */
static void on_alarm(int sig)
{
    static const char msg[] = "MPRPC_ERR_TIMEOUT: --list did not finish within --timeout\n";
    ssize_t k = write(2, msg, sizeof msg - 1);
    (void)sig; (void)k;
    _exit(EXIT_TIMEOUT);
}

static volatile int zk_connected;

static void zk_watcher(zhandle_t *zh, int type, int state, const char *path, void *ctx)
{
    (void)zh; (void)path; (void)ctx;
    if (type == ZOO_SESSION_EVENT && state == ZOO_CONNECTED_STATE) zk_connected = 1;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* One provider node: data "ip:port\nMethod\n...", printed as "  ip:port  Method Method". */
static void list_provider(zhandle_t *zh, const char *path, const char *child, char *buf, int cap)
{
    int len = cap - 1;
    char *nl;
    if (zoo_get(zh, path, 0, buf, &len, NULL) != ZOK || len < 0) {
        printf("  %s  (gone)\n", child);
        return;
    }
    buf[len] = '\0';
    nl = strchr(buf, '\n');
    if (nl) *nl = '\0';
    printf("  %s ", buf[0] ? buf : child);
    for (; nl && nl[1]; nl = strchr(nl + 1, '\n')) {
        char *end = strchr(nl + 1, '\n');
        printf(" %.*s", end ? (int)(end - nl - 1) : (int)strlen(nl + 1), nl + 1);
        if (!end) break;
    }
    printf("\n");
}

static int list_service(zhandle_t *zh, const char *root, const char *svc, char *buf, int cap)
{
    struct String_vector kids = { 0, NULL };
    char path[1024];
    int i, rc;
    snprintf(path, sizeof path, "%s/%s", root, svc);
    rc = zoo_get_children(zh, path, 0, &kids);
    if (rc != ZOK) return rc == ZNONODE ? ZOK : rc;
    printf("%s\n", svc);
    qsort(kids.data, (size_t)kids.count, sizeof *kids.data, cmp_str);
    for (i = 0; i < kids.count; i++) {
        char p[2048];
        snprintf(p, sizeof p, "%s/%s", path, kids.data[i]);
        list_provider(zh, p, kids.data[i], buf, cap);
    }
    if (kids.count == 0) printf("  (no provider)\n");
    deallocate_String_vector(&kids);
    return ZOK;
}

static int cmd_list(const opts *o)
{
    struct String_vector svcs = { 0, NULL };
    struct itimerval it;
    const char *root = o->root ? o->root : "/mprpc";
    zhandle_t *zh;
    char *buf = (char *)malloc(1 << 20); /* ZooKeeper's own limit on a node's data */
    int i, rc;
    if (!buf) return EXIT_OTHER;
    list_timeout_ms = o->timeout_ms;
    memset(&it, 0, sizeof it);
    it.it_value.tv_sec = o->timeout_ms / 1000;
    it.it_value.tv_usec = (o->timeout_ms % 1000) * 1000;
    signal(SIGALRM, on_alarm);
    setitimer(ITIMER_REAL, &it, NULL);
    zoo_set_debug_level((ZooLogLevel)0); /* its connection chatter is not the user's business */
    zh = zookeeper_init(o->zookeeper, zk_watcher, o->timeout_ms < 4000 ? 4000 : o->timeout_ms, NULL, NULL, 0);
    if (!zh) {
        fprintf(stderr, "MPRPC_ERR_ZOOKEEPER: cannot use ZooKeeper hosts '%s': %s\n", o->zookeeper, strerror(errno));
        free(buf);
        return EXIT_UNAVAILABLE;
    }
    while (!zk_connected) usleep(5000); /* the timer bounds it */
    rc = zoo_get_children(zh, root, 0, &svcs);
    if (rc == ZNONODE) fprintf(stderr, "%s: nothing registered: %s does not exist\n", prog, root);
    else if (rc != ZOK) fprintf(stderr, "MPRPC_ERR_ZOOKEEPER: %s: %s\n", root, zerror(rc));
    if (rc == ZOK) qsort(svcs.data, (size_t)svcs.count, sizeof *svcs.data, cmp_str);
    for (i = 0; rc == ZOK && i < svcs.count; i++) rc = list_service(zh, root, svcs.data[i], buf, 1 << 20);
    if (rc != ZOK && rc != ZNONODE && i) fprintf(stderr, "MPRPC_ERR_ZOOKEEPER: %s\n", zerror(rc));
    deallocate_String_vector(&svcs);
    zookeeper_close(zh);
    free(buf);
    return rc == ZOK || rc == ZNONODE ? EXIT_OK : EXIT_UNAVAILABLE;
}
#else
static int cmd_list(const opts *o)
{
    (void)o;
    fprintf(stderr, "MPRPC_ERR_UNSUPPORTED: this mprpc-call was built with MPRPC_NO_ZOOKEEPER\n");
    return EXIT_USAGE;
}
#endif

/* ---- command line ---- */

static int parse_int(const char *s, int lo, int hi, int *out)
{
    char *end;
    long v;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return -1;
    *out = (int)v;
    return 0;
}

enum { OPT_PROTO = 256, OPT_RAW, OPT_ZK, OPT_ROOT, OPT_TIMEOUT, OPT_REPEAT, OPT_LIST, OPT_HEALTH, OPT_STATS,
       OPT_SERVICE, OPT_TLS_CA, OPT_TLS_CERT, OPT_TLS_KEY, OPT_TLS_NAME };

static int parse_option(opts *o, int c, const char *arg)
{
    switch (c) {
    case OPT_PROTO: o->proto = arg; return 0;
    case 'I':
        if (o->nimports == MAX_PROTO_IMPORTS) return fail_usage("at most %s -I directories", "16");
        o->imports[o->nimports++] = arg;
        return 0;
    case 'd': o->data = arg; return 0;
    case OPT_RAW: o->raw = 1; return 0;
    case OPT_ZK: o->zookeeper = arg; return 0;
    case OPT_ROOT: o->root = arg; return 0;
    case OPT_TIMEOUT:
        return parse_int(arg, 1, 3600000, &o->timeout_ms) ? fail_usage("--timeout %s: want 1..3600000 ms", arg) : 0;
    case OPT_REPEAT:
        return parse_int(arg, 1, 10000000, &o->repeat) ? fail_usage("--repeat %s: want 1..10000000", arg) : 0;
    case OPT_LIST: o->list = 1; return 0;
    case OPT_HEALTH: o->health = 1; return 0;
    case OPT_STATS: o->stats = 1; return 0;
    case OPT_SERVICE: o->health_service = arg; return 0;
    case OPT_TLS_CA: o->tls_ca = arg; return 0;
    case OPT_TLS_CERT: o->tls_cert = arg; return 0;
    case OPT_TLS_KEY: o->tls_key = arg; return 0;
    case OPT_TLS_NAME: o->tls_server_name = arg; return 0;
    case 'h': usage(stdout); return -1;
    default: return EXIT_USAGE;
    }
}

/* ADDRESS in mprpc.h's own syntax, checked by its own parser (the rpcserver_address key). */
static int address_check(const char *a)
{
    mprpc_config cfg;
    mprpc_config_init(&cfg);
    if (mprpc_config_set(&cfg, "rpcserver_address", a) == MPRPC_OK && mprpc_config_validate(&cfg) == MPRPC_OK)
        return EXIT_OK;
    return fail_usage("ADDRESS: %s (want 1.2.3.4:80, [::1]:80, host:80, unix:/path or unix:@name)",
                      strncmp(cfg.error, "rpcserver_address: ", 19) == 0 ? cfg.error + 19 : cfg.error);
}

/* Positional arguments: [ADDRESS] SERVICE METHOD, as many as the command wants. */
static int parse_positional(opts *o, int n, char **args)
{
    int want = (o->list ? 0 : o->health || o->stats ? 1 : 3) - (o->zookeeper ? 1 : 0);
    if (o->list && !o->zookeeper) return fail_usage("--list needs --zookeeper HOSTS%s", "");
    if ((o->health || o->stats) && o->zookeeper)
        return fail_usage("--health and --stats take the provider's ADDRESS: the admin service is not in "
                          "ZooKeeper (--list shows the addresses)%s", "");
    if (want < 0) want = 0;
    if (n != want) {
        fprintf(stderr, "%s: expected %d argument(s) (%s), got %d (--help for usage)\n", prog, want,
                o->list ? "none" : o->zookeeper ? (o->health || o->stats ? "none" : "SERVICE METHOD")
                                                : (o->health || o->stats ? "ADDRESS" : "ADDRESS SERVICE METHOD"),
                n);
        return EXIT_USAGE;
    }
    if (!o->zookeeper && !o->list && address_check(args[0]) != EXIT_OK) return EXIT_USAGE;
    if (!o->zookeeper && !o->list) o->address = args[0];
    if (!o->health && !o->stats && !o->list) {
        o->service = args[want - 2];
        o->method = args[want - 1];
        if (!o->raw && !o->proto) return fail_usage("--proto FILE is needed to encode the request (or --raw)%s", "");
    }
    return EXIT_OK;
}

static int parse_args(opts *o, int argc, char **argv)
{
    static const struct option longs[] = {
        { "proto", required_argument, NULL, OPT_PROTO }, { "import", required_argument, NULL, 'I' },
        { "data", required_argument, NULL, 'd' }, { "raw", no_argument, NULL, OPT_RAW },
        { "zookeeper", required_argument, NULL, OPT_ZK }, { "root", required_argument, NULL, OPT_ROOT },
        { "timeout", required_argument, NULL, OPT_TIMEOUT }, { "repeat", required_argument, NULL, OPT_REPEAT },
        { "list", no_argument, NULL, OPT_LIST }, { "health", no_argument, NULL, OPT_HEALTH },
        { "stats", no_argument, NULL, OPT_STATS }, { "service", required_argument, NULL, OPT_SERVICE },
#ifdef MPRPC_TLS
        { "tls-ca", required_argument, NULL, OPT_TLS_CA }, { "tls-cert", required_argument, NULL, OPT_TLS_CERT },
        { "tls-key", required_argument, NULL, OPT_TLS_KEY },
        { "tls-server-name", required_argument, NULL, OPT_TLS_NAME },
#endif
        { "help", no_argument, NULL, 'h' }, { NULL, 0, NULL, 0 }
    };
    int c, rc;
    memset(o, 0, sizeof *o);
    o->timeout_ms = 5000;
    o->repeat = 1;
    opterr = 1;
    while ((c = getopt_long(argc, argv, "I:d:h", longs, NULL)) != -1)
        if ((rc = parse_option(o, c, optarg)) != 0) return rc;
    if (o->list + o->health + o->stats > 1) return fail_usage("--list, --health and --stats go alone%s", "");
    return parse_positional(o, argc - optind, argv + optind);
}

int main(int argc, char **argv)
{
    opts o;
    int rc = parse_args(&o, argc, argv);
    if (rc < 0) return EXIT_OK; /* --help */
    if (rc != EXIT_OK) return rc;
    signal(SIGPIPE, SIG_IGN); /* protoc may exit before taking all its input: that is its error to report */
    if (o.list) return cmd_list(&o);
    if (o.health) return cmd_health(&o);
    if (o.stats) return cmd_stats(&o);
    return cmd_call(&o);
}
