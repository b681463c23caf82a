/* mprpc-call: call any mprpc.h (or seed mprpc) method from the command line, in the spirit of grpcurl.
 *
 *   mprpc-call [options] ADDRESS SERVICE METHOD            ADDRESS is ip:port
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
#include <unistd.h>

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
                             decode the request, too large, protocol violation, bad reply */
};

#define INPUT_MAX (64u << 20) /* request text or bytes read, protoc output kept */
#define MAX_PROTO_IMPORTS 16

typedef struct opts {
    const char *address, *zookeeper, *root, *service, *method, *data, *proto, *health_service;
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
"       %s --health [--service NAME] ADDRESS      (or --zookeeper HOSTS)\n"
"       %s --stats ADDRESS                        (or --zookeeper HOSTS)\n"
"ADDRESS is ip:port. The request is protobuf text format given with -d TEXT or on stdin, encoded and\n"
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
"exit status: 0 ok (--health: SERVING); 1 --health answered NOT_SERVING or SERVICE_UNKNOWN;\n"
"  2 usage, bad input, protoc missing or refusing the text; 3 no provider reached (connect,\n"
"  unavailable, connection lost, shutting down, busy, ZooKeeper); 4 timed out; 5 application\n"
"  error; 6 other (unknown service or method, undecodable request or reply, too large, protocol)\n",
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

static int open_channel(const opts *o, mprpc_channel **ch)
{
    mprpc_config cfg;
    char ms[16];
    mprpc_config_init(&cfg);
    snprintf(ms, sizeof ms, "%d", o->timeout_ms);
    if ((o->zookeeper ? mprpc_config_set(&cfg, "zookeeper_hosts", o->zookeeper)
                      : mprpc_config_set(&cfg, "rpcserver_list", o->address)) != MPRPC_OK ||
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
       OPT_SERVICE };

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
    case 'h': usage(stdout); return -1;
    default: return EXIT_USAGE;
    }
}

static int address_check(const char *a)
{
    char ip[MPRPC_ADDR_MAX];
    const char *colon = strrchr(a, ':');
    struct in_addr in;
    int port;
    if (!colon || (size_t)(colon - a) >= sizeof ip) return -1;
    memcpy(ip, a, (size_t)(colon - a));
    ip[colon - a] = '\0';
    return inet_pton(AF_INET, ip, &in) == 1 && parse_int(colon + 1, 1, 65535, &port) == 0 ? 0 : -1;
}

/* Positional arguments: [ADDRESS] SERVICE METHOD, as many as the command wants. */
static int parse_positional(opts *o, int n, char **args)
{
    int want = (o->list ? 0 : o->health || o->stats ? 1 : 3) - (o->zookeeper ? 1 : 0);
    if (o->list && !o->zookeeper) return fail_usage("--list needs --zookeeper HOSTS%s", "");
    if (want < 0) want = 0;
    if (n != want) {
        fprintf(stderr, "%s: expected %d argument(s) (%s), got %d (--help for usage)\n", prog, want,
                o->list ? "none" : o->zookeeper ? (o->health || o->stats ? "none" : "SERVICE METHOD")
                                                : (o->health || o->stats ? "ADDRESS" : "ADDRESS SERVICE METHOD"),
                n);
        return EXIT_USAGE;
    }
    if (!o->zookeeper && !o->list && address_check(args[0]) != 0)
        return fail_usage("ADDRESS %s: want ip:port (IPv4, port 1-65535)", args[0]);
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
    return cmd_call(&o);
}
