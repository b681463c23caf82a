/* mprpc.h - v0.1.0 - single-header C RPC over TCP for nanopb protobuf services.
 * MIT licence. https://example.invalid/mprpc.h (vendor it; there is nothing to install)
 *
 * A provider publishes C functions as protobuf RPC methods; a caller calls them
 * through a channel. Messages are nanopb structs; the transport is TCP with
 * Linux epoll; the only runtime dependencies are the nanopb runtime and
 * pthreads (plus the ZooKeeper C client when service discovery is wanted).
 * It is the C rendering of the C++ "mprpc" course framework (RpcProvider,
 * MprpcChannel, MprpcController, MprpcApplication, Logger, ZkClient) and
 * speaks its wire format, so seed callers work against a C provider.
 *
 * USE
 *   In exactly one .c file, before any other #include:
 *       #define MPRPC_IMPLEMENTATION
 *       #include "mprpc.h"
 *   Everywhere else just #include "mprpc.h".
 *   cc -std=c11 -O2 provider.c user.pb.c -lprotobuf-nanopb -lzookeeper_mt -lpthread
 *   (add -DMPRPC_NO_ZOOKEEPER and drop -lzookeeper_mt for a build without discovery)
 *
 * QUICK START (provider)                      QUICK START (caller)
 *   static void login(mprpc_call *call,         mprpc_config cfg;
 *       const void *req, void *resp,            mprpc_config_init(&cfg);
 *       void *user) {                           mprpc_config_load(&cfg, "caller.conf");
 *     const fixbug_LoginRequest *rq = req;      mprpc_channel *ch;
 *     fixbug_LoginResponse *rs = resp;          mprpc_channel_new(&ch, &cfg);
 *     rs->success = rq->name.size > 0;          fixbug_LoginRequest rq = {0};
 *     if (!rs->success)                         fixbug_LoginResponse rs = {0};
 *       mprpc_call_fail(call, "empty name");    mprpc_controller ctl;
 *   }                                           mprpc_controller_init(&ctl);
 *   static const mprpc_method user_methods[] = {  MPRPC_CALL(ch, "UserServiceRpc", "Login",
 *     MPRPC_METHOD("Login", fixbug_LoginRequest,      fixbug_LoginRequest, &rq,
 *                  fixbug_LoginResponse, login),      fixbug_LoginResponse, &rs, &ctl);
 *   };                                          if (mprpc_controller_failed(&ctl))
 *   mprpc_service svc = MPRPC_SERVICE(            puts(mprpc_controller_error_text(&ctl));
 *       "UserServiceRpc", user_methods, NULL);  mprpc_channel_free(ch);
 *   mprpc_server *srv;
 *   mprpc_server_new(&srv, &cfg);
 *   mprpc_server_add_service(srv, &svc);
 *   mprpc_server_run(srv);   // until mprpc_server_stop(srv), e.g. from SIGINT
 *   mprpc_server_free(srv);
 *
 * COMPILE-TIME OPTIONS (define before including mprpc.h, in every file that includes it)
 *   MPRPC_IMPLEMENTATION   emit the implementation (one file only)
 *   MPRPC_STATIC           make every function static (MPRPCDEF = static); the two wire
 *                          descriptors (mprpc_RpcHeader_msg, ...) stay extern, so only one
 *                          file per program may hold the implementation
 *   MPRPCDEF               linkage of every public function (default extern)
 *   MPRPC_NO_ZOOKEEPER     compile ZooKeeper discovery out; no zookeeper headers or lib needed
 *   MPRPC_TLS              TLS (OpenSSL 3: link -lssl -lcrypto); tls_* config keys, mutual TLS,
 *                          mprpc_call_peer_identity. Without it no OpenSSL header is needed
 *   MPRPC_MALLOC/MPRPC_REALLOC/MPRPC_FREE   allocator hooks (define all three or none)
 *   MPRPC_LOG_LINE_MAX     bytes per queued log line (default 512)
 *   MPRPC_READ_CHUNK       bytes of each provider loop's receive buffer (default 65536)
 *   MPRPC_THREAD_STACK_SIZE  stack bytes of the library's threads (default 0 = system default)
 *
 * CONTENTS (both halves follow this order)
 *   1. version and linkage   2. status   3. config   4. logger   5. controller
 *   6. wire (buffers, framing, headers)   7. server (provider; 7i the built-in admin service)
 *   8. channel (caller)
 *   9. registry (ZooKeeper)
 *
 * THREADS
 *   A server runs io_threads event-loop threads and one acceptor thread. Handlers run
 *   on a loop thread; one that blocks stalls that loop's other connections, so
 *   slow work defers the call (mprpc_call_defer) and finishes it from any thread
 *   (mprpc_call_done). A channel may be shared by any number of threads.
 */
#ifndef MPRPC_H_INCLUDED
#define MPRPC_H_INCLUDED

/* The implementation needs POSIX and Linux declarations (epoll, eventfd,
 * clock_gettime, localtime_r, getopt) even under -std=c11. */
#if defined(MPRPC_IMPLEMENTATION) && !defined(_GNU_SOURCE)
#  if defined(_FEATURES_H)
#    error "mprpc.h: include mprpc.h with MPRPC_IMPLEMENTATION before any system header, or compile with -D_GNU_SOURCE"
#  endif
#  define _GNU_SOURCE 1
#endif

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <stdarg.h>
#include <pb.h>
#include <pb_encode.h>
#include <pb_decode.h>

/* ======================================================================== */
/* == 1. version and linkage ============================================== */
/* ======================================================================== */

#define MPRPC_VERSION_MAJOR 0
#define MPRPC_VERSION_MINOR 1
#define MPRPC_VERSION_PATCH 0
#define MPRPC_VERSION_STRING "0.1.0"
#define MPRPC_VERSION_NUMBER \
    (MPRPC_VERSION_MAJOR * 1000000 + MPRPC_VERSION_MINOR * 1000 + MPRPC_VERSION_PATCH)

#ifndef MPRPCDEF
#  if defined(MPRPC_STATIC) && (defined(__GNUC__) || defined(__clang__))
#    define MPRPCDEF static __attribute__((unused)) /* a file need not call them all */
#  elif defined(MPRPC_STATIC)
#    define MPRPCDEF static
#  else
#    define MPRPCDEF extern
#  endif
#endif

#if defined(__GNUC__) || defined(__clang__)
#  define MPRPC_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#  define MPRPC_PRINTF(fmt, args)
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ======================================================================== */
/* == 2. status =========================================================== */
/* ======================================================================== */

/* One list generates the enum, mprpc_status_name() and mprpc_status_str().
 * The numbers travel on the wire (RpcResponseHeader.status): never renumber. */
#define MPRPC_STATUS_LIST(X)                                                   \
    X(OK,                   0,  "ok")                                          \
    X(ERR_INVALID_ARGUMENT, 1,  "invalid argument")                            \
    X(ERR_NO_MEMORY,        2,  "out of memory or over a configured bound")    \
    X(ERR_IO,               3,  "system call failed")                          \
    X(ERR_CONFIG,           4,  "bad configuration")                           \
    X(ERR_CONNECT,          5,  "cannot connect to the provider")              \
    X(ERR_TIMEOUT,          6,  "timed out")                                   \
    X(ERR_CONNECTION_LOST,  7,  "connection lost")                             \
    X(ERR_ENCODE,           8,  "cannot encode message")                       \
    X(ERR_DECODE,           9,  "cannot decode message")                       \
    X(ERR_UNKNOWN_SERVICE,  10, "unknown service")                             \
    X(ERR_UNKNOWN_METHOD,   11, "unknown method")                              \
    X(ERR_TOO_LARGE,        12, "message too large")                           \
    X(ERR_APPLICATION,      13, "application failure")                         \
    X(ERR_UNAVAILABLE,      14, "no provider available")                       \
    X(ERR_PROTOCOL,         15, "protocol violation by the peer")              \
    X(ERR_SHUTDOWN,         16, "shutting down")                               \
    X(ERR_BUSY,             17, "resource limit reached")                      \
    X(ERR_ZOOKEEPER,        18, "zookeeper error")                             \
    X(ERR_UNSUPPORTED,      19, "not supported by this build")                 \
    X(AGAIN,                20, "incomplete: more bytes needed")                \
    X(ERR_TLS,              21, "TLS handshake or certificate check failed")

typedef enum mprpc_status {
#define MPRPC__STATUS_ENUM(name, num, text) MPRPC_##name = num,
    MPRPC_STATUS_LIST(MPRPC__STATUS_ENUM)
#undef MPRPC__STATUS_ENUM
    MPRPC_STATUS_COUNT
} mprpc_status;

/* "timed out" etc. Never NULL; unknown codes give "unknown status". */
MPRPCDEF const char *mprpc_status_str(int status);
/* "MPRPC_ERR_TIMEOUT" etc. Never NULL. */
MPRPCDEF const char *mprpc_status_name(int status);

/* ======================================================================== */
/* == 3. config (the seed's MprpcApplication) ============================= */
/* ======================================================================== */

#define MPRPC_ADDR_MAX 64

/* Every field has a default set by mprpc_config_init(); the config file keys
 * have the same names as the fields (README.md has the table). The struct is
 * plain data: copy it freely. Servers and channels copy it when created. */
typedef struct mprpc_config {
    char     rpcserver_ip[MPRPC_ADDR_MAX];  /* "127.0.0.1": provider listens / caller connects; an IPv4 or
                                               IPv6 literal ("::" listens on both) or a host name */
    int      rpcserver_port;                /* 8000; a provider given 0 picks a free port */
    char     advertise_ip[MPRPC_ADDR_MAX];  /* "": host published in ZooKeeper (default rpcserver_ip) */
    char     rpcserver_address[MPRPC_ADDR_MAX]; /* "": the full syntax, overrides rpcserver_ip/_port:
                                               "1.2.3.4:80", "[::1]:80", "host:80", "unix:/path",
                                               "unix:@abstract" */
    char     advertise_address[MPRPC_ADDR_MAX]; /* "": the full syntax, published in ZooKeeper; overrides
                                               advertise_ip (needed for a unix: or wildcard listener) */
    int      io_threads;                    /* 2 event loops in a provider */
    int      rpc_timeout_ms;                /* 5000: whole call, caller side */
    int      connect_timeout_ms;            /* 2000 */
    uint32_t max_message_size;              /* 4 MiB: request or response body */
    int      max_connections;               /* 10000 open at once on a provider */
    int      idle_timeout_ms;               /* 60000: a connection with no read or write progress, or a
                                               frame unfinished, for this long is closed; 0 = never */
    int      max_pipeline_depth;            /* 128 unanswered calls per connection */
    uint32_t max_pending_output;            /* 1 MiB unsent reply bytes per connection before reading
                                               pauses (exceeded by at most one reply) */
    int      drain_timeout_ms;              /* 5000: graceful stop waits this long for calls in flight */
    int      call_arena_max;                /* 1 MiB: bytes one call may take with mprpc_call_alloc; 0 = none */
    int      admin_service;                 /* 1: serve the built-in admin service (section 7i); 0: not */
    /* -- caller side (section 8) -- */
    int      channel_max_connections;       /* 64 connections open per channel, all providers together */
    int      channel_connections_per_provider; /* 2: calls are multiplexed over this many per provider */
    int      channel_max_pending;           /* 4096 calls in flight per channel; beyond: MPRPC_ERR_BUSY */
    int      channel_protocol_version;      /* 1; 0: call the direct provider(s) as seed providers (v0) */
    int      channel_eject_failures;        /* 3 consecutive failures eject a provider; 0 = never */
    int      channel_eject_base_ms;         /* 1000: the first ejection; doubles with each further one */
    int      channel_eject_max_ms;          /* 30000: the longest ejection */
    int      channel_io_thread;             /* 1; 0: poll mode (mprpc_channel_fd/_dispatch), no thread */
    char     rpcserver_list[512];           /* "": "ip:port,ip:port" providers of a direct channel
                                               (overrides rpcserver_ip/rpcserver_port for calls) */
    /* -- end of caller side -- */
    char     zookeeper_ip[MPRPC_ADDR_MAX];  /* "": no ZooKeeper; set it (or _hosts) to use discovery */
    int      zookeeper_port;                /* 2181 */
    char     zookeeper_hosts[512];          /* "": "h1:p1,h2:p2" ensemble, overrides ip/port */
    char     zookeeper_root[128];           /* "/mprpc" */
    int      zookeeper_session_timeout_ms;  /* 10000 */
    int      zookeeper_connect_timeout_ms;  /* 5000 */
    int      zookeeper_seed_layout;         /* -1 auto: also publish the seed's /Service/Method nodes when
                                               seed_spellings says the config was written for the seed;
                                               1: publish them and resolve through them; 0: neither */
    char     zookeeper_auth[256];           /* "": "user:password" digest auth; nodes get ACLs */
    int      zookeeper_allow_open_acl;      /* 0: with auth, refuse/ignore registry nodes anyone may write */
    char     log_dir[256];                  /* "": no log file; else YYYY-MM-DD-log.txt files there */
    int      log_level;                     /* info: debug|info|warn|error|off */
    int      log_stderr;                    /* 0: also copy log lines to stderr */
    int      log_queue_size;                /* 1024 lines queued before new ones are dropped */
    /* -- TLS (builds with MPRPC_TLS; README "TLS") -- */
    int      tls_enable;                    /* 0; 1: the provider serves / the channel dials over TLS */
    char     tls_cert_file[256];            /* provider: its certificate chain (PEM), required;
                                               channel: a client certificate, optional */
    char     tls_key_file[256];             /* the key of tls_cert_file ("" = in tls_cert_file) */
    char     tls_ca_file[256];              /* provider: clients must present a certificate signed by
                                               these CAs (mutual TLS); channel: the provider's CAs
                                               ("" = the system's) */
    char     tls_server_name[256];          /* channel: the name the provider's certificate must carry
                                               ("" = the host of its address: name or IP) */
    int      tls_handshake_timeout_ms;      /* 5000: provider, a handshake not done by then is closed */
    char     error[256];                    /* why the last load/set/args call failed */
    int      seed_spellings;                /* set by load/set: a key was given in the seed's spelling
                                               (zookeeperip, zookeeperport, rpcserverip, rpcserverport) */
} mprpc_config;

/* Fills *cfg with the documented defaults. */
MPRPCDEF void mprpc_config_init(mprpc_config *cfg);
/* Applies one key=value (keys as in the file, seed spellings accepted). On
 * failure cfg is unchanged except cfg->error. */
MPRPCDEF mprpc_status mprpc_config_set(mprpc_config *cfg, const char *key, const char *value);
/* Reads a key=value file ('#' comments, blank lines, whitespace trimmed, a
 * UTF-8 byte order mark at the start skipped), then validates the result.
 * Each key may appear once: a second line with the same key (or its seed
 * spelling) is an error naming both lines. All or nothing: on any error,
 * including a file that cannot be opened or read (a directory, an I/O error),
 * a NUL byte or a line over 1023 bytes, returns MPRPC_ERR_CONFIG (or
 * MPRPC_ERR_UNSUPPORTED for a setting this build lacks) and cfg is unchanged
 * except cfg->error, which names the file, the line and the key or
 * the system's reason. */
MPRPCDEF mprpc_status mprpc_config_load(mprpc_config *cfg, const char *path);
/* The seed's command line ("-i FILE") without taking the rest of it. Scans
 * argv[1..argc), up to a "--", for "-i FILE", "-iFILE", "--config FILE" or
 * "--config=FILE" (the last one wins) and loads that file. Every other
 * argument is left to the program: argv is not permuted and getopt's optind
 * and opterr are not touched, so the program parses its own options as usual
 * (a getopt loop should list "i:" so that it skips -i and its file). -i is not
 * recognised inside a group such as "-vi". Without -i, or with -i and no file,
 * returns MPRPC_ERR_CONFIG with the usage text in cfg->error; never exits. */
MPRPCDEF mprpc_status mprpc_config_from_args(mprpc_config *cfg, int argc, char **argv);
/* Checks every field against its key's range (the errors name the key, the
 * value and the range), that strings are terminated, that the addresses are
 * well formed (rpcserver_ip and advertise_ip: an IPv4 or IPv6 literal or a
 * host name; rpcserver_address and advertise_address: "1.2.3.4:80",
 * "[::1]:80", "host.name:80", "unix:/path" or "unix:@name"), that zookeeper_root is a clean path below "/" (no trailing '/', no
 * "//", no "." or ".." components), and the cross-field rules (zookeeper_auth
 * needs a ZooKeeper; a build with MPRPC_NO_ZOOKEEPER refuses one, with
 * MPRPC_ERR_UNSUPPORTED, as does one without MPRPC_TLS given tls_enable = 1).
 * Otherwise returns MPRPC_ERR_CONFIG with the reason in cfg->error.
 * mprpc_config_load, mprpc_server_new and _start, mprpc_channel_new and
 * mprpc_logger_start call it too and fail with the status it returned;
 * server_new and channel_new log the reason, as there is no object yet to
 * hold it. */
MPRPCDEF mprpc_status mprpc_config_validate(mprpc_config *cfg);

/* ======================================================================== */
/* == 4. logger (the seed's Logger + LockQueue) =========================== */
/* ======================================================================== */

typedef enum mprpc_log_level {
    MPRPC_LOG_LEVEL_DEBUG = 0,
    MPRPC_LOG_LEVEL_INFO  = 1,
    MPRPC_LOG_LEVEL_WARN  = 2,
    MPRPC_LOG_LEVEL_ERROR = 3,
    MPRPC_LOG_LEVEL_OFF   = 4
} mprpc_log_level;

/* A sink receives each finished line (no trailing newline) on the writer
 * thread. */
typedef void (*mprpc_log_sink_fn)(mprpc_log_level level, const char *line, void *user);

typedef struct mprpc_logger_stats {
    uint64_t written;       /* lines the kernel accepted for the log file; without
                               log_dir, lines handed to stderr and the sink */
    uint64_t dropped;       /* lines dropped because the queue was full */
    uint64_t write_errors;  /* lines the file refused (disk full, I/O error; a line
                               cut short by the error counts here) */
} mprpc_logger_stats;

/* The logger is process-wide, like the seed's singleton. Until it is started
 * every message is discarded. Callers format and enqueue; one writer thread
 * does the I/O. When the queue is full the new line is dropped and counted:
 * an RPC thread never waits for the disk. Uses cfg->log_dir, log_level,
 * log_stderr and log_queue_size. Validates cfg first (MPRPC_ERR_CONFIG, text
 * in cfg->error); fails with MPRPC_ERR_IO (text in cfg->error) when log_dir
 * is not writable. */
MPRPCDEF mprpc_status mprpc_logger_start(mprpc_config *cfg);
/* Optional extra sink, e.g. syslog. Set before mprpc_logger_start. */
MPRPCDEF void mprpc_logger_set_sink(mprpc_log_sink_fn fn, void *user);
/* Writes everything still queued (at most log_queue_size lines), joins the
 * writer, closes the file. It waits for those writes: a log file on a disk
 * that hangs holds it, while callers of mprpc_log never wait. */
MPRPCDEF void mprpc_logger_stop(void);
MPRPCDEF void mprpc_logger_get_stats(mprpc_logger_stats *out);
MPRPCDEF int  mprpc_log_enabled(mprpc_log_level level);
MPRPCDEF void mprpc_log(mprpc_log_level level, const char *file, int line, const char *fmt, ...)
    MPRPC_PRINTF(4, 5);

/* The level is checked before the arguments are formatted. In the finished
 * line every byte that is not printable ASCII, and the backslash, appears as
 * \xNN, so text from the wire cannot start a line or send terminal escapes. */
#define MPRPC_LOG_(lvl, ...) \
    do { if (mprpc_log_enabled(lvl)) mprpc_log(lvl, __FILE__, __LINE__, __VA_ARGS__); } while (0)
#define MPRPC_LOG_DEBUG(...) MPRPC_LOG_(MPRPC_LOG_LEVEL_DEBUG, __VA_ARGS__)
#define MPRPC_LOG_INFO(...)  MPRPC_LOG_(MPRPC_LOG_LEVEL_INFO, __VA_ARGS__)
#define MPRPC_LOG_WARN(...)  MPRPC_LOG_(MPRPC_LOG_LEVEL_WARN, __VA_ARGS__)
#define MPRPC_LOG_ERROR(...) MPRPC_LOG_(MPRPC_LOG_LEVEL_ERROR, __VA_ARGS__)

/* ======================================================================== */
/* == 5. controller (the seed's MprpcController) ========================== */
/* ======================================================================== */

typedef struct mprpc_controller {
    mprpc_status status;       /* MPRPC_OK or why the call failed */
    int          timeout_ms;   /* per-call timeout; 0 = the channel's rpc_timeout_ms */
    int          may_have_run; /* set by the channel: see mprpc_controller_may_have_run */
    char         error_text[256];
} mprpc_controller;

/* Zeroes everything, including timeout_ms. */
MPRPCDEF void mprpc_controller_init(mprpc_controller *ctl);
/* Clears status and text for reuse; keeps timeout_ms. */
MPRPCDEF void mprpc_controller_reset(mprpc_controller *ctl);
MPRPCDEF int  mprpc_controller_failed(const mprpc_controller *ctl);
MPRPCDEF const char *mprpc_controller_error_text(const mprpc_controller *ctl);
MPRPCDEF void mprpc_controller_set_failed(mprpc_controller *ctl, mprpc_status status,
                                          const char *fmt, ...) MPRPC_PRINTF(3, 4);
/* Whether the provider may have executed the request of the finished call: 0 means it certainly did
 * not, so the call is safe to repeat. By status:
 *   MPRPC_OK, MPRPC_ERR_APPLICATION (the handler failed it), MPRPC_ERR_DECODE (the reply did not
 *   decode)                                                          1: it ran
 *   MPRPC_ERR_CONNECTION_LOST (the request had left), MPRPC_ERR_PROTOCOL, MPRPC_ERR_TOO_LARGE (a bad
 *   reply)                                                           1 if the request had been sent
 *   MPRPC_ERR_TIMEOUT                                                1 if the request had been sent
 *     (the provider drops expired work, but a seed provider or a slow handler may still run it); 0 when
 *     the provider itself answered "deadline passed before the handler ran", or nothing was sent
 *   MPRPC_ERR_SHUTDOWN                                               1 if mprpc_channel_free came after
 *     the request was queued; 0 when the provider answered "stopping: not executed" (the channel
 *     already retried elsewhere and ran out of providers or time)
 *   MPRPC_ERR_CONNECT, MPRPC_ERR_UNAVAILABLE, MPRPC_ERR_BUSY, MPRPC_ERR_UNKNOWN_SERVICE/METHOD,
 *   MPRPC_ERR_INVALID_ARGUMENT, MPRPC_ERR_ENCODE, resolving errors   0 */
MPRPCDEF int  mprpc_controller_may_have_run(const mprpc_controller *ctl);

/* ======================================================================== */
/* == 6. wire: buffers, framing, headers ================================== */
/* ======================================================================== */

/* Frames (docs/PROTOCOL.md):
 *   request  = u32le header_len | RpcHeader (header_len bytes) | body (args_size bytes)
 *   response = u32le header_len | RpcResponseHeader            | body (body_size bytes)   (v1)
 *   response = body, then the provider closes                                            (v0, seed) */
#define MPRPC_FRAME_PREFIX      4
#define MPRPC_MAX_HEADER_SIZE   1024   /* a header_len above this closes the connection */
#define MPRPC_PROTOCOL_VERSION  1
#define MPRPC_NAME_MAX          128    /* service and method names: RpcHeader's max_size */

/* Generated by nanopb 0.4.7 from proto/mprpc.proto with proto/mprpc.options;
 * tests/test_wire.c regenerates it and checks this copy. */
/* -- begin generated -- */
typedef PB_BYTES_ARRAY_T(128) mprpc_RpcHeader_service_name_t;
typedef PB_BYTES_ARRAY_T(128) mprpc_RpcHeader_method_name_t;
typedef struct _mprpc_RpcHeader {
    mprpc_RpcHeader_service_name_t service_name;
    mprpc_RpcHeader_method_name_t method_name;
    uint32_t args_size;
    uint64_t call_id;
    uint32_t version;
    uint32_t timeout_ms;
} mprpc_RpcHeader;

typedef PB_BYTES_ARRAY_T(256) mprpc_RpcResponseHeader_error_text_t;
typedef struct _mprpc_RpcResponseHeader {
    uint64_t call_id;
    int32_t status;
    mprpc_RpcResponseHeader_error_text_t error_text;
    uint32_t body_size;
} mprpc_RpcResponseHeader;

#define mprpc_RpcHeader_FIELDLIST(X, a) \
X(a, STATIC,   SINGULAR, BYTES,    service_name,      1) \
X(a, STATIC,   SINGULAR, BYTES,    method_name,       2) \
X(a, STATIC,   SINGULAR, UINT32,   args_size,         3) \
X(a, STATIC,   SINGULAR, UINT64,   call_id,           4) \
X(a, STATIC,   SINGULAR, UINT32,   version,           5) \
X(a, STATIC,   SINGULAR, UINT32,   timeout_ms,        6)
#define mprpc_RpcHeader_CALLBACK NULL
#define mprpc_RpcHeader_DEFAULT NULL

#define mprpc_RpcResponseHeader_FIELDLIST(X, a) \
X(a, STATIC,   SINGULAR, UINT64,   call_id,           1) \
X(a, STATIC,   SINGULAR, INT32,    status,            2) \
X(a, STATIC,   SINGULAR, BYTES,    error_text,        3) \
X(a, STATIC,   SINGULAR, UINT32,   body_size,         4)
#define mprpc_RpcResponseHeader_CALLBACK NULL
#define mprpc_RpcResponseHeader_DEFAULT NULL

extern const pb_msgdesc_t mprpc_RpcHeader_msg;
extern const pb_msgdesc_t mprpc_RpcResponseHeader_msg;
#define mprpc_RpcHeader_fields &mprpc_RpcHeader_msg
#define mprpc_RpcResponseHeader_fields &mprpc_RpcResponseHeader_msg
#define mprpc_RpcHeader_size                     291
#define mprpc_RpcResponseHeader_size             287
/* -- end generated -- */

/* A growable byte window: data[pos, len) holds unread bytes, cap is the
 * storage size. Never grows past the max given to mprpc_buf_reserve. */
typedef struct mprpc_buf {
    uint8_t *data;
    size_t   pos, len, cap;
} mprpc_buf;

MPRPCDEF void   mprpc_buf_init(mprpc_buf *b);
MPRPCDEF void   mprpc_buf_free(mprpc_buf *b);
/* Makes room for n more bytes at data+len, compacting or growing; fails with
 * MPRPC_ERR_TOO_LARGE if that needs more than max bytes of storage. */
MPRPCDEF mprpc_status mprpc_buf_reserve(mprpc_buf *b, size_t n, size_t max);
MPRPCDEF mprpc_status mprpc_buf_append(mprpc_buf *b, const void *p, size_t n, size_t max);
MPRPCDEF void   mprpc_buf_consume(mprpc_buf *b, size_t n);
#define mprpc_buf_readable(b) ((b)->len - (b)->pos)

/* A parsed frame: header fields plus where the body lies in the input. */
typedef struct mprpc_request_frame {
    mprpc_RpcHeader header;
    const uint8_t  *body;        /* header.args_size bytes */
    size_t          frame_size;  /* bytes to consume */
} mprpc_request_frame;

typedef struct mprpc_response_frame {
    mprpc_RpcResponseHeader header;
    const uint8_t          *body;        /* header.body_size bytes */
    size_t                  frame_size;
} mprpc_response_frame;

/* Appends a whole request frame (version 1, no deadline) to out. */
MPRPCDEF mprpc_status mprpc_wire_encode_request(mprpc_buf *out, size_t max_message_size,
                                                uint64_t call_id, const char *service,
                                                const char *method, const pb_msgdesc_t *fields,
                                                const void *msg);
/* What a request header says besides the message. */
typedef struct mprpc_request_meta {
    const char *service;
    const char *method;
    uint64_t    call_id;     /* v1 only: echoed in the response */
    uint32_t    timeout_ms;  /* v1 only: the caller's time left; 0 = none sent */
    uint32_t    version;     /* MPRPC_PROTOCOL_VERSION, or 0 for a seed-format request (fields 1-3
                                only, answered by a bare response and a close) */
} mprpc_request_meta;
/* Appends a whole request frame as meta describes. */
MPRPCDEF mprpc_status mprpc_wire_encode_request_meta(mprpc_buf *out, size_t max_message_size,
                                                     const mprpc_request_meta *meta,
                                                     const pb_msgdesc_t *fields, const void *msg);
/* Appends a whole v1 response frame; fields/msg may be NULL for an error
 * response (status != MPRPC_OK). */
MPRPCDEF mprpc_status mprpc_wire_encode_response(mprpc_buf *out, size_t max_message_size,
                                                 uint64_t call_id, int status,
                                                 const char *error_text,
                                                 const pb_msgdesc_t *fields, const void *msg);
/* Parses one frame from data[0, len). MPRPC_AGAIN: not all there yet.
 * MPRPC_ERR_TOO_LARGE: the body is over max_message_size (frame->header is
 * filled, so the caller can answer that call). MPRPC_ERR_PROTOCOL: the header
 * length is over MPRPC_MAX_HEADER_SIZE, or the header does not decode; no call
 * can be identified, so the connection cannot go on. Never reads past len. */
MPRPCDEF mprpc_status mprpc_wire_decode_request(const uint8_t *data, size_t len,
                                                size_t max_message_size,
                                                mprpc_request_frame *frame);
MPRPCDEF mprpc_status mprpc_wire_decode_response(const uint8_t *data, size_t len,
                                                 size_t max_message_size,
                                                 mprpc_response_frame *frame);

/* Large bytes fields without copies: declare the field as a nanopb callback
 * (FT_CALLBACK or no max_size) and point its arg at an mprpc_bytes.
 *  - mprpc_bytes_decode stores a pointer into the received frame; valid only
 *    until the handler returns (provider) or the decode call returns.
 *  - mprpc_bytes_encode writes the bytes an mprpc_bytes points at. */
typedef struct mprpc_bytes {
    const uint8_t *data;
    size_t         size;
} mprpc_bytes;
MPRPCDEF bool mprpc_bytes_decode(pb_istream_t *stream, const pb_field_t *field, void **arg);
MPRPCDEF bool mprpc_bytes_encode(pb_ostream_t *stream, const pb_field_t *field, void *const *arg);
/* Copying variant for callers: arg points at an mprpc_bytes_sink. */
typedef struct mprpc_bytes_sink {
    uint8_t *data;
    size_t   capacity;
    size_t   size;       /* set by the decoder */
} mprpc_bytes_sink;
MPRPCDEF bool mprpc_bytes_copy_decode(pb_istream_t *stream, const pb_field_t *field, void **arg);

/* Whether the nanopb runtime linked in (libprotobuf-nanopb) was built with the
 * same field-size options as the pb.h this file was compiled with. They can
 * differ without any compile or link error: PB_FIELD_32BIT (which nanopb's
 * generator asks for when a max_size is over 65535) changes pb_size_t and so the
 * layout of every bytes field and descriptor, and Debian's library is built
 * without it; the two sides then silently drop or garble data. The check
 * encodes and decodes one small RpcHeader through the library and compares the
 * bytes with the known encoding. MPRPC_OK, or MPRPC_ERR_UNSUPPORTED with what is
 * wrong and how to fix it in text (may be NULL; cap bytes, always terminated).
 * Runs once per process (the result is cached); any thread.
 * mprpc_server_new and mprpc_channel_new call it and fail the same way (the
 * text goes to the log, and to stderr when the logger is not running). */
MPRPCDEF mprpc_status mprpc_wire_check_nanopb(char *text, size_t cap);

/* ======================================================================== */
/* == 7. server (the seed's RpcProvider) ================================== */
/* ======================================================================== */

typedef struct mprpc_server mprpc_server;
typedef struct mprpc_call   mprpc_call;

/* A handler fills *response (zeroed, or prepared by the method's prepare
 * hook) from *request. Returning finishes the call, unless it called
 * mprpc_call_defer(), in which case mprpc_call_done() finishes it later. */
typedef void (*mprpc_handler_fn)(mprpc_call *call, const void *request, void *response,
                                 void *user);
/* Optional: runs before the request is decoded, e.g. to point nanopb
 * callback fields at mprpc_bytes_decode / mprpc_bytes_encode. A request
 * callback field left without a decoder is not skipped silently: if it is on
 * the wire the call fails with MPRPC_ERR_DECODE naming the field's number. */
typedef void (*mprpc_prepare_fn)(mprpc_call *call, void *request, void *response, void *user);

typedef struct mprpc_method {
    const char         *name;
    const pb_msgdesc_t *request_fields;
    size_t              request_size;
    const pb_msgdesc_t *response_fields;
    size_t              response_size;
    mprpc_handler_fn    handler;
    mprpc_prepare_fn    prepare;
} mprpc_method;

/* One row per method: MPRPC_METHOD("Login", fixbug_LoginRequest, fixbug_LoginResponse, login) */
#define MPRPC_METHOD(name, Req, Resp, fn) \
    { (name), Req##_fields, sizeof(Req), Resp##_fields, sizeof(Resp), (fn), NULL }
#define MPRPC_METHOD_PREPARED(name, Req, Resp, fn, prep) \
    { (name), Req##_fields, sizeof(Req), Resp##_fields, sizeof(Resp), (fn), (prep) }

typedef struct mprpc_service {
    const char         *name;     /* the protobuf service name, e.g. "UserServiceRpc" */
    const mprpc_method *methods;
    size_t              method_count;
    void               *user;     /* passed to every handler */
} mprpc_service;

#define MPRPC_COUNTOF(a) (sizeof(a) / sizeof((a)[0]))
#define MPRPC_SERVICE(name, methods, user) { (name), (methods), MPRPC_COUNTOF(methods), (user) }

typedef struct mprpc_server_stats {
    uint64_t connections_accepted;
    uint64_t connections_open;
    uint64_t connections_rejected;  /* over max_connections (answered BUSY), arrived while stopping
                                     * (answered SHUTDOWN), or shed when out of fds */
    uint64_t calls;                 /* requests dispatched to a handler */
    uint64_t call_errors;           /* error responses sent (any status) */
    uint64_t protocol_errors;       /* connections ended for bad frames */
    uint64_t buffer_bytes;          /* now held by connection input/output buffers: bounded per
                                     * connection by about max_pending_output + max_message_size
                                     * + 64 KiB */
    uint64_t expired;               /* requests not run: the caller's deadline (timeout_ms) had
                                     * passed before the handler could run; answered TIMEOUT */
    uint64_t deadline_dropped;      /* deferred calls finished after their deadline: answer dropped */
    uint64_t refused;               /* requests answered BUSY, SHUTDOWN or TLS (plaintext caller of
                                     * a TLS provider) without running */
    uint64_t abandoned;             /* deferred calls given up at drain_timeout_ms */
    uint64_t deferred_pending;      /* deferred calls now waiting for mprpc_call_done; each holds one
                                     * call object (the largest request + response structs + ~400 B),
                                     * at most max_pipeline_depth per connection */
    uint64_t call_pool_bytes;       /* idle call objects kept for reuse: at most 64 per loop, the
                                     * rest are freed when their calls finish */
    uint64_t accept_pauses;         /* times accepting paused 100 ms for lack of file descriptors */
    uint64_t arena_bytes;           /* bytes mprpc_call_alloc handed out, summed when each call was
                                     * released (not counted: calls abandoned at the drain) */
    uint64_t arena_refused;         /* mprpc_call_alloc requests refused: over call_arena_max or out
                                     * of memory */
} mprpc_server_stats;

/* LIFECYCLE. A server is new (services may be added), running, stopping
 * (draining) or stopped; every function below checks that state first.
 *   new --start/run--> running --stop--> stopping --(drained)--> stopped
 * Threads: io_threads event loops run the handlers; one acceptor thread
 * accepts (a blocked loop never stops accepting) and performs the drain.
 * The stats stay readable until mprpc_server_free. */

/* Creates a new server with a copy of cfg, validated here (mprpc_config_validate:
 * MPRPC_ERR_CONFIG, or MPRPC_ERR_UNSUPPORTED for what this build lacks; the
 * reason is logged). Also fails with MPRPC_ERR_INVALID_ARGUMENT, MPRPC_ERR_NO_MEMORY,
 * MPRPC_ERR_IO (no eventfd), and MPRPC_ERR_UNSUPPORTED when the nanopb runtime
 * does not match pb.h (mprpc_wire_check_nanopb). *out is NULL on failure. */
MPRPCDEF mprpc_status mprpc_server_new(mprpc_server **out, const mprpc_config *cfg);
/* The seed's NotifyService. The service table and its strings must outlive the
 * server (they are not copied). While new only. */
MPRPCDEF mprpc_status mprpc_server_add_service(mprpc_server *srv, const mprpc_service *svc);
/* Binds, listens, starts the loops and the acceptor, and registers in
 * ZooKeeper when configured; returns once calls are being served (MPRPC_OK
 * at once if already running). A server that failed to start, or has stopped,
 * cannot be started again (MPRPC_ERR_INVALID_ARGUMENT): free it and make
 * another. After an earlier mprpc_server_stop: MPRPC_ERR_SHUTDOWN. */
MPRPCDEF mprpc_status mprpc_server_start(mprpc_server *srv);
/* The seed's Run: starts if new, blocks until the server has stopped
 * (mprpc_server_stop, then the drain) and returns MPRPC_OK. Returns at once
 * if it has already stopped. Any number of threads may wait in it. */
MPRPCDEF mprpc_status mprpc_server_run(mprpc_server *srv);
/* Asks the server to stop; returns at once. Async-signal-safe and callable
 * from any thread, a handler included, any number of times; before start it
 * makes start refuse. The drain runs by itself (after start or run): it
 * deregisters from ZooKeeper, stops accepting (connections waiting in the
 * backlog are answered SHUTDOWN), answers every request already read, and
 * answers MPRPC_ERR_SHUTDOWN ("not executed") to each request read after the
 * stop began. A connection is closed once it has nothing left to answer and
 * has sent no request for 250 ms (or the peer closed): shutdown(SHUT_WR) first,
 * then reading until the peer's EOF (at most 1 s), so no answer is lost to a
 * reset. Deferred calls are waited for up to drain_timeout_ms; then they are
 * abandoned (their mprpc_call_done frees them, harmlessly) and the remaining
 * connections closed. */
MPRPCDEF void mprpc_server_stop(mprpc_server *srv);
/* Stops (see mprpc_server_stop), waits for the drain and for every thread in
 * mprpc_server_run to return, then frees everything. Safe from any thread but
 * the server's own: called from a handler it is refused (logged, the server
 * is only told to stop, nothing is freed). NULL is a no-op. How long it
 * waits: a start still registering (at most zookeeper_connect_timeout_ms),
 * then drain_timeout_ms for deferred calls, then at most 1 s of linger per
 * connection; a synchronous handler still running is waited for, since a
 * thread cannot be stopped from outside: handlers that may block defer. */
MPRPCDEF void mprpc_server_free(mprpc_server *srv);
/* The port actually bound (useful with rpcserver_port = 0); 0 before start. */
MPRPCDEF int  mprpc_server_port(const mprpc_server *srv);
/* Where it listens, in the address syntax with the bound port ("127.0.0.1:8000", "[::]:8000",
 * "unix:/run/x.sock"); "" before start. */
MPRPCDEF const char *mprpc_server_address(const mprpc_server *srv);
/* Why the last call on srv failed ("" if none). */
MPRPCDEF const char *mprpc_server_error(const mprpc_server *srv);
/* Any thread, any time until mprpc_server_free; also after run returned. */
MPRPCDEF void mprpc_server_get_stats(mprpc_server *srv, mprpc_server_stats *out);

/* The functions on a call accept NULL: the ones that act do nothing, the ones
 * that answer return "" (names, peer identity), -1 (time left), 0 (arena used)
 * or NULL (memory).
 * Inside a handler (or before mprpc_call_done for a deferred call). */
MPRPCDEF void mprpc_call_fail(mprpc_call *call, const char *fmt, ...) MPRPC_PRINTF(2, 3);
/* Inside the handler only: the call stays open after the handler returns. */
MPRPCDEF void mprpc_call_defer(mprpc_call *call);
/* Finishes a deferred call from any thread: the response is encoded and sent
 * by the call's loop. Exactly once per deferred call. On a call that was not
 * deferred (or is already done) it is refused: logged, nothing else happens.
 * After drain_timeout_ms of a stop the server abandons the call: this then
 * only frees it (no answer). If the caller's deadline has passed, the answer
 * is dropped (counted in stats.deadline_dropped): nobody waits for it. */
MPRPCDEF void mprpc_call_done(mprpc_call *call);
/* Milliseconds left before the caller's deadline (RpcHeader.timeout_ms,
 * counted from when the request arrived): -1 when the caller sent none,
 * 0 once it has passed. Any thread, until mprpc_call_done. */
MPRPCDEF int  mprpc_call_time_left_ms(const mprpc_call *call);
/* The service and method names of the call (the service table's strings). */
MPRPCDEF const char *mprpc_call_service(const mprpc_call *call);
MPRPCDEF const char *mprpc_call_method(const mprpc_call *call);
/* Per-call memory: n bytes (aligned for any type, not zeroed) that stay valid
 * until the call's reply has been encoded, so a handler, its prepare hook and
 * the nanopb callbacks that decode the request or encode the response (they run
 * on the call's loop thread, before and after the handler) can keep bytes there
 * without a buffer of their own. Everything is freed together when the call is
 * released: after the reply is encoded, after an error reply (a request that
 * does not decode, a reply too large), when a deferred call's answer is dropped,
 * and in mprpc_call_done of an abandoned call. NULL when the call's total would
 * exceed call_arena_max (counted in stats.arena_refused), when out of memory,
 * or for n == 0; a handler then usually calls mprpc_call_fail. From whoever holds
 * the call: its handler (and callbacks) on the loop thread, or, for a deferred
 * call, one thread at a time until mprpc_call_done. */
MPRPCDEF void *mprpc_call_alloc(mprpc_call *call, size_t n);
/* Bytes this call has taken with mprpc_call_alloc. */
MPRPCDEF size_t mprpc_call_arena_used(const mprpc_call *call);

/* ---- 7i. the built-in admin service (served unless admin_service = 0) ----
 * Service "mprpc.admin.Admin", methods Health, Services and Stats: the messages of proto/admin.proto,
 * whose nanopb code follows (generated by nanopb 0.4.7 with proto/admin.options; tests/run.sh regenerates
 * it and checks this copy). Repeated fields that grow with the provider are callbacks: a caller decoding
 * ServicesResponse.services or StatsResponse.methods sets funcs.decode (mprpc-call does). Health follows
 * grpc.health.v1: SERVING while the server runs, NOT_SERVING while it starts or stops, SERVICE_UNKNOWN
 * for a service it does not serve. The admin service is not registered in ZooKeeper: every provider has
 * it, so as a registered service it would only duplicate the provider list, and a caller resolving
 * "mprpc.admin.Admin" would reach an arbitrary provider, when an operator means a particular one (call it
 * by address; mprpc-call --list shows the addresses). */
#define MPRPC_ADMIN_SERVICE "mprpc.admin.Admin"
/* -- begin generated admin -- */
/* Enum definitions */
typedef enum _mprpc_admin_HealthResponse_ServingStatus {
    mprpc_admin_HealthResponse_ServingStatus_UNKNOWN = 0,
    mprpc_admin_HealthResponse_ServingStatus_SERVING = 1,
    mprpc_admin_HealthResponse_ServingStatus_NOT_SERVING = 2, /* stopping (draining) */
    mprpc_admin_HealthResponse_ServingStatus_SERVICE_UNKNOWN = 3 /* no such service on this provider */
} mprpc_admin_HealthResponse_ServingStatus;

/* Struct definitions */
/* Health, with the semantics of grpc.health.v1: service "" asks about the provider as a whole. */
typedef struct _mprpc_admin_HealthRequest {
    char service[129];
} mprpc_admin_HealthRequest;

typedef struct _mprpc_admin_HealthResponse {
    mprpc_admin_HealthResponse_ServingStatus status;
} mprpc_admin_HealthResponse;

typedef struct _mprpc_admin_ServicesRequest {
    char dummy_field;
} mprpc_admin_ServicesRequest;

typedef struct _mprpc_admin_ServiceInfo {
    char name[129];
    pb_callback_t methods; /* callback */
} mprpc_admin_ServiceInfo;

typedef struct _mprpc_admin_ServicesResponse {
    pb_callback_t services; /* callback */
} mprpc_admin_ServicesResponse;

typedef struct _mprpc_admin_StatsRequest {
    char dummy_field;
} mprpc_admin_StatsRequest;

/* Latencies fall in buckets by powers of two: count of calls that took at most le_us microseconds
 (and more than the previous bucket's le_us); the last bucket has le_us = 0, meaning "more". */
typedef struct _mprpc_admin_LatencyBucket {
    uint64_t le_us;
    uint64_t count;
} mprpc_admin_LatencyBucket;

typedef struct _mprpc_admin_StatusCount {
    char status[32]; /* "MPRPC_ERR_APPLICATION", ... */
    uint64_t count;
} mprpc_admin_StatusCount;

typedef struct _mprpc_admin_MethodStats {
    char service[129];
    char method[129];
    uint64_t calls; /* answered (or dropped after their deadline) */
    uint64_t errors; /* of which answered with an error status */
    pb_size_t errors_by_status_count;
    mprpc_admin_StatusCount errors_by_status[21];
    pb_size_t latency_count;
    mprpc_admin_LatencyBucket latency[24]; /* from the request's arrival to the reply being queued */
    uint64_t latency_sum_us;
    uint64_t request_bytes; /* message bodies, without frame headers */
    uint64_t response_bytes;
} mprpc_admin_MethodStats;

typedef struct _mprpc_admin_StatsResponse {
    bool serving;
    uint64_t connections_accepted;
    uint64_t connections_open;
    uint64_t connections_rejected;
    uint64_t calls;
    uint64_t call_errors;
    uint64_t protocol_errors;
    uint64_t expired;
    uint64_t deadline_dropped;
    uint64_t refused;
    uint64_t abandoned;
    uint64_t deferred_pending;
    uint64_t bytes_in; /* read from and written to provider sockets */
    uint64_t bytes_out;
    uint64_t loop_busy_us; /* all loops: time spent outside epoll_wait */
    uint64_t io_threads;
    pb_callback_t methods; /* callback */
} mprpc_admin_StatsResponse;

#define mprpc_admin_HealthResponse_status_ENUMTYPE mprpc_admin_HealthResponse_ServingStatus

/* Struct field encoding specification for nanopb */
#define mprpc_admin_HealthRequest_FIELDLIST(X, a) \
X(a, STATIC,   SINGULAR, STRING,   service,           1)
#define mprpc_admin_HealthRequest_CALLBACK NULL
#define mprpc_admin_HealthRequest_DEFAULT NULL

#define mprpc_admin_HealthResponse_FIELDLIST(X, a) \
X(a, STATIC,   SINGULAR, UENUM,    status,            1)
#define mprpc_admin_HealthResponse_CALLBACK NULL
#define mprpc_admin_HealthResponse_DEFAULT NULL

#define mprpc_admin_ServicesRequest_FIELDLIST(X, a) \

#define mprpc_admin_ServicesRequest_CALLBACK NULL
#define mprpc_admin_ServicesRequest_DEFAULT NULL

#define mprpc_admin_ServiceInfo_FIELDLIST(X, a) \
X(a, STATIC,   SINGULAR, STRING,   name,              1) \
X(a, CALLBACK, REPEATED, STRING,   methods,           2)
#define mprpc_admin_ServiceInfo_CALLBACK pb_default_field_callback
#define mprpc_admin_ServiceInfo_DEFAULT NULL

#define mprpc_admin_ServicesResponse_FIELDLIST(X, a) \
X(a, CALLBACK, REPEATED, MESSAGE,  services,          1)
#define mprpc_admin_ServicesResponse_CALLBACK pb_default_field_callback
#define mprpc_admin_ServicesResponse_DEFAULT NULL
#define mprpc_admin_ServicesResponse_services_MSGTYPE mprpc_admin_ServiceInfo

#define mprpc_admin_StatsRequest_FIELDLIST(X, a) \

#define mprpc_admin_StatsRequest_CALLBACK NULL
#define mprpc_admin_StatsRequest_DEFAULT NULL

#define mprpc_admin_LatencyBucket_FIELDLIST(X, a) \
X(a, STATIC,   SINGULAR, UINT64,   le_us,             1) \
X(a, STATIC,   SINGULAR, UINT64,   count,             2)
#define mprpc_admin_LatencyBucket_CALLBACK NULL
#define mprpc_admin_LatencyBucket_DEFAULT NULL

#define mprpc_admin_StatusCount_FIELDLIST(X, a) \
X(a, STATIC,   SINGULAR, STRING,   status,            1) \
X(a, STATIC,   SINGULAR, UINT64,   count,             2)
#define mprpc_admin_StatusCount_CALLBACK NULL
#define mprpc_admin_StatusCount_DEFAULT NULL

#define mprpc_admin_MethodStats_FIELDLIST(X, a) \
X(a, STATIC,   SINGULAR, STRING,   service,           1) \
X(a, STATIC,   SINGULAR, STRING,   method,            2) \
X(a, STATIC,   SINGULAR, UINT64,   calls,             3) \
X(a, STATIC,   SINGULAR, UINT64,   errors,            4) \
X(a, STATIC,   REPEATED, MESSAGE,  errors_by_status,   5) \
X(a, STATIC,   REPEATED, MESSAGE,  latency,           6) \
X(a, STATIC,   SINGULAR, UINT64,   latency_sum_us,    7) \
X(a, STATIC,   SINGULAR, UINT64,   request_bytes,     8) \
X(a, STATIC,   SINGULAR, UINT64,   response_bytes,    9)
#define mprpc_admin_MethodStats_CALLBACK NULL
#define mprpc_admin_MethodStats_DEFAULT NULL
#define mprpc_admin_MethodStats_errors_by_status_MSGTYPE mprpc_admin_StatusCount
#define mprpc_admin_MethodStats_latency_MSGTYPE mprpc_admin_LatencyBucket

#define mprpc_admin_StatsResponse_FIELDLIST(X, a) \
X(a, STATIC,   SINGULAR, BOOL,     serving,           1) \
X(a, STATIC,   SINGULAR, UINT64,   connections_accepted,   2) \
X(a, STATIC,   SINGULAR, UINT64,   connections_open,   3) \
X(a, STATIC,   SINGULAR, UINT64,   connections_rejected,   4) \
X(a, STATIC,   SINGULAR, UINT64,   calls,             5) \
X(a, STATIC,   SINGULAR, UINT64,   call_errors,       6) \
X(a, STATIC,   SINGULAR, UINT64,   protocol_errors,   7) \
X(a, STATIC,   SINGULAR, UINT64,   expired,           8) \
X(a, STATIC,   SINGULAR, UINT64,   deadline_dropped,   9) \
X(a, STATIC,   SINGULAR, UINT64,   refused,          10) \
X(a, STATIC,   SINGULAR, UINT64,   abandoned,        11) \
X(a, STATIC,   SINGULAR, UINT64,   deferred_pending,  12) \
X(a, STATIC,   SINGULAR, UINT64,   bytes_in,         13) \
X(a, STATIC,   SINGULAR, UINT64,   bytes_out,        14) \
X(a, STATIC,   SINGULAR, UINT64,   loop_busy_us,     15) \
X(a, STATIC,   SINGULAR, UINT64,   io_threads,       16) \
X(a, CALLBACK, REPEATED, MESSAGE,  methods,          17)
#define mprpc_admin_StatsResponse_CALLBACK pb_default_field_callback
#define mprpc_admin_StatsResponse_DEFAULT NULL
#define mprpc_admin_StatsResponse_methods_MSGTYPE mprpc_admin_MethodStats

extern const pb_msgdesc_t mprpc_admin_HealthRequest_msg;
extern const pb_msgdesc_t mprpc_admin_HealthResponse_msg;
extern const pb_msgdesc_t mprpc_admin_ServicesRequest_msg;
extern const pb_msgdesc_t mprpc_admin_ServiceInfo_msg;
extern const pb_msgdesc_t mprpc_admin_ServicesResponse_msg;
extern const pb_msgdesc_t mprpc_admin_StatsRequest_msg;
extern const pb_msgdesc_t mprpc_admin_LatencyBucket_msg;
extern const pb_msgdesc_t mprpc_admin_StatusCount_msg;
extern const pb_msgdesc_t mprpc_admin_MethodStats_msg;
extern const pb_msgdesc_t mprpc_admin_StatsResponse_msg;

#define mprpc_admin_HealthRequest_fields &mprpc_admin_HealthRequest_msg
#define mprpc_admin_HealthResponse_fields &mprpc_admin_HealthResponse_msg
#define mprpc_admin_ServicesRequest_fields &mprpc_admin_ServicesRequest_msg
#define mprpc_admin_ServiceInfo_fields &mprpc_admin_ServiceInfo_msg
#define mprpc_admin_ServicesResponse_fields &mprpc_admin_ServicesResponse_msg
#define mprpc_admin_StatsRequest_fields &mprpc_admin_StatsRequest_msg
#define mprpc_admin_LatencyBucket_fields &mprpc_admin_LatencyBucket_msg
#define mprpc_admin_StatusCount_fields &mprpc_admin_StatusCount_msg
#define mprpc_admin_MethodStats_fields &mprpc_admin_MethodStats_msg
#define mprpc_admin_StatsResponse_fields &mprpc_admin_StatsResponse_msg

#define mprpc_admin_HealthRequest_size           131
#define mprpc_admin_HealthResponse_size          2
#define mprpc_admin_LatencyBucket_size           22
#define mprpc_admin_MethodStats_size             1859
#define mprpc_admin_ServicesRequest_size         0
#define mprpc_admin_StatsRequest_size            0
#define mprpc_admin_StatusCount_size             44
/* -- end generated admin -- */
/* The caller's verified TLS client certificate (mutual TLS: tls_enable and tls_ca_file on the provider):
 * its subject in RFC 2253 form, then its DNS names, "CN=alice,O=Ops;DNS:alice.example". "" without TLS
 * or without a client certificate; never NULL. For per-method authorisation. Any thread, until
 * mprpc_call_done. */
MPRPCDEF const char *mprpc_call_peer_identity(const mprpc_call *call);

/* ======================================================================== */
/* == 8. channel (the seed's MprpcChannel) ================================ */
/* ======================================================================== */

typedef struct mprpc_channel mprpc_channel;

/* A channel calls the providers of a service: rpcserver_list (or rpcserver_ip:rpcserver_port) for a
 * direct channel, or the providers ZooKeeper lists when zookeeper_ip/zookeeper_hosts is set (refreshed
 * when the registry's list changes, never with a channel lock held).
 *
 * Connections. Calls are multiplexed: many calls in flight share a connection, matched by call_id.
 * A channel opens up to channel_connections_per_provider (2) connections per provider (a new one only
 * while every open one carries calls), and at most channel_max_connections (64) in all; past that, calls
 * share the connections it has. Blocking and async calls share the same connections. A seed provider
 * (version-0 calls) gets a fresh connection per call.
 *
 * Threads. mprpc_channel_new starts the channel's one I/O thread (epoll over its connections). It reads
 * replies, decodes them into the callers' response structs, times calls out, and runs every async
 * completion (mprpc_done_fn). Any number of threads may call through one channel at once.
 *
 * Deadlines. A call is bounded as a whole by ctl->timeout_ms (else rpc_timeout_ms): discovery,
 * connecting (each connect also by connect_timeout_ms), sending and the reply. The request carries the
 * time left (RpcHeader.timeout_ms) so the provider drops work nobody waits for. A reply that comes after
 * its call timed out is discarded.
 *
 * Failover. A call that was not executed is retried on another provider (or a fresh connection) within
 * its deadline: a connect failed, the connection died before the request had wholly left, or the provider
 * answered MPRPC_ERR_SHUTDOWN or MPRPC_ERR_BUSY ("not executed"; that connection takes no new calls).
 * A call whose request had left is never retried: see mprpc_controller_may_have_run. Providers that keep
 * failing are ejected for a while (channel_eject_failures, channel_eject_base_ms, channel_eject_max_ms;
 * README.md has the policy).
 *
 * Seed providers. With zookeeper_seed_layout = 1 the channel resolves /<Service>/<Method> and calls the
 * providers there as the seed C++ caller does (version-0 request, the bare reply read until the provider
 * closes, bounded by max_message_size and the deadline); channel_protocol_version = 0 does the same for a
 * direct channel. A seed provider that does not know the method never answers: the call times out. */
MPRPCDEF mprpc_status mprpc_channel_new(mprpc_channel **out, const mprpc_config *cfg);
/* Completes every call still in flight with MPRPC_ERR_SHUTDOWN (on the I/O thread, each exactly once;
 * may have run if its request had been queued on a connection), joins the I/O thread, closes its
 * connections and frees everything. No other thread may be inside a call on ch meanwhile (a blocking
 * call in flight is a use after free). Called from a completion callback it does nothing but log an
 * error: the I/O thread cannot join itself. NULL is a no-op. */
MPRPCDEF void mprpc_channel_free(mprpc_channel *ch);
/* The seed's CallMethod. Blocks until the response, an error, or the timeout (ctl->timeout_ms, else
 * rpc_timeout_ms). The outcome is in ctl and also returned. *response is decoded only on success (by the
 * I/O thread, before this returns); a reply carrying a response callback field whose funcs.decode is
 * NULL fails with MPRPC_ERR_DECODE naming the field (the struct is left as it was). From a completion callback it fails at once with
 * MPRPC_ERR_INVALID_ARGUMENT (it would wait for its own thread); use mprpc_channel_call_async there. */
MPRPCDEF mprpc_status mprpc_channel_call(mprpc_channel *ch, const char *service,
                                         const char *method,
                                         const pb_msgdesc_t *request_fields, const void *request,
                                         const pb_msgdesc_t *response_fields, void *response,
                                         mprpc_controller *ctl);
#define MPRPC_CALL(ch, service, method, Req, req, Resp, resp, ctl) \
    mprpc_channel_call((ch), (service), (method), Req##_fields, (req), Resp##_fields, (resp), (ctl))

/* Runs on the channel's completion thread, exactly once per call that mprpc_channel_call_async accepted.
 * ctl holds the outcome; response is decoded when ctl->status is MPRPC_OK. A callback may start new
 * async calls (they are sent together once per I/O-thread turn) and may reuse or free ctl, response and
 * its own state. It must not block: every other call of the channel waits while it runs.
 * mprpc_channel_call from it fails with MPRPC_ERR_INVALID_ARGUMENT, mprpc_channel_free from it is refused
 * (logged, no effect). With ZooKeeper, the first call of a service the channel has not called before
 * waits for discovery (up to its timeout) and so would hold up the thread: call each service once from
 * another thread first. */
typedef void (*mprpc_done_fn)(mprpc_controller *ctl, void *response, void *user);
/* Encodes the request before it returns (request may be reused at once); response and ctl must live until
 * done runs. MPRPC_OK: done will run exactly once (also on timeout, connection loss, mprpc_channel_free).
 * Any other status: done will not run; ctl holds the error (MPRPC_ERR_BUSY: channel_max_pending calls are
 * in flight). Returns at once, except that the first call of a service not yet known waits for discovery
 * (bounded by the call's timeout). Any thread, including a completion callback. */
MPRPCDEF mprpc_status mprpc_channel_call_async(mprpc_channel *ch, const char *service, const char *method,
    const pb_msgdesc_t *request_fields, const void *request,
    const pb_msgdesc_t *response_fields, void *response,
    mprpc_controller *ctl, mprpc_done_fn done, void *user);
#define MPRPC_CALL_ASYNC(ch, service, method, Req, req, Resp, resp, ctl, done, user) \
    mprpc_channel_call_async((ch), (service), (method), Req##_fields, (req), Resp##_fields, (resp), (ctl), (done), (user))

/* A blocking call with the request already encoded and the reply left encoded, for tools that have no
 * generated code (mprpc-call): request_len bytes at request are sent as the body, and on MPRPC_OK the
 * reply's body is in *response (emptied first, grown with MPRPC_REALLOC up to max_message_size; the
 * caller frees it with mprpc_buf_free). Otherwise as mprpc_channel_call. */
MPRPCDEF mprpc_status mprpc_channel_call_raw(mprpc_channel *ch, const char *service, const char *method,
                                             const void *request, size_t request_len, mprpc_buf *response,
                                             mprpc_controller *ctl);

/* Poll mode, for single-threaded programs with their own poll/epoll loop: with channel_io_thread = 0 the
 * channel starts no thread and one program thread drives it. mprpc_channel_fd is a descriptor that turns
 * readable when the channel has work (-1 for a channel with its own thread). mprpc_channel_dispatch
 * does the work without waiting (reads replies, runs completions, sends, times calls out) and returns
 * how many ms the program may wait for the fd before calling it again (deadlines are checked then; at
 * most 1000), or -1 when ch is NULL, has its own thread, or the call comes from a completion callback.
 * Completions run inside mprpc_channel_dispatch, inside a blocking call (which runs the loop itself
 * until its reply) and inside mprpc_channel_free, all on the program's thread. Every call on a
 * poll-mode channel must come from that one thread. */
MPRPCDEF int mprpc_channel_fd(mprpc_channel *ch);
MPRPCDEF int mprpc_channel_dispatch(mprpc_channel *ch);

#ifdef __cplusplus
}
#endif
#endif /* MPRPC_H_INCLUDED */

/* ######################################################################## */
/* ##                        IMPLEMENTATION                              ## */
/* ######################################################################## */
#ifdef MPRPC_IMPLEMENTATION
#ifndef MPRPC_IMPLEMENTATION_DONE
#define MPRPC_IMPLEMENTATION_DONE

#include <pb_common.h>   /* pb_field_iter: the callback-field guards (6, 7, 8) */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <netdb.h>
#include <time.h>
#include <unistd.h>

#if defined(MPRPC_MALLOC) && defined(MPRPC_REALLOC) && defined(MPRPC_FREE)
/* all three given */
#elif !defined(MPRPC_MALLOC) && !defined(MPRPC_REALLOC) && !defined(MPRPC_FREE)
#  define MPRPC_MALLOC(n)     malloc(n)
#  define MPRPC_REALLOC(p, n) realloc((p), (n))
#  define MPRPC_FREE(p)       free(p)
#else
#  error "mprpc.h: define all of MPRPC_MALLOC, MPRPC_REALLOC and MPRPC_FREE, or none"
#endif

#ifndef MPRPC_LOG_LINE_MAX
#  define MPRPC_LOG_LINE_MAX 512
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Small helpers shared by every section. */

/* Every thread the library starts (event loops, log writer) goes through here.
 * MPRPC_THREAD_STACK_SIZE, in bytes, sizes their stacks (0 = the system default,
 * usually RLIMIT_STACK, 8 MiB of address space each); docs/FOOTPRINT.md has the
 * measured use. Values under PTHREAD_STACK_MIN are raised to it. */
#ifndef MPRPC_THREAD_STACK_SIZE
#  define MPRPC_THREAD_STACK_SIZE 0
#endif
static int mprpc__thread_start(pthread_t *t, void *(*fn)(void *), void *arg)
{
#if MPRPC_THREAD_STACK_SIZE > 0
    pthread_attr_t attr;
    size_t size = (size_t)(MPRPC_THREAD_STACK_SIZE);
    int rc;
    if (size < (size_t)PTHREAD_STACK_MIN) size = (size_t)PTHREAD_STACK_MIN;
    if (pthread_attr_init(&attr) != 0) return -1;
    rc = pthread_attr_setstacksize(&attr, size);
    if (rc == 0) rc = pthread_create(t, &attr, fn, arg);
    pthread_attr_destroy(&attr);
    return rc;
#else
    return pthread_create(t, NULL, fn, arg);
#endif
}
static uint64_t mprpc__now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* snprintf that never overflows and tolerates a NULL/empty destination. */
static void mprpc__vfmt(char *dst, size_t cap, const char *fmt, va_list ap)
{
    if (!dst || cap == 0) return;
    if (vsnprintf(dst, cap, fmt, ap) < 0) dst[0] = '\0';
}

static void mprpc__fmt(char *dst, size_t cap, const char *fmt, ...) MPRPC_PRINTF(3, 4);
static void mprpc__fmt(char *dst, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    mprpc__vfmt(dst, cap, fmt, ap);
    va_end(ap);
}

/* Every object starts zeroed. */
static void *mprpc__zalloc(size_t n)
{
    void *p = MPRPC_MALLOC(n);
    if (p) memset(p, 0, n);
    return p;
}

static void mprpc__copy_str(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);
    if (n >= cap) n = cap - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* ---- addresses: one syntax for listening, dialling, advertising ----------------------------------
 * "1.2.3.4:80", "[::1]:80", "host.name:80", "unix:/path/to.sock", "unix:@name" (Linux abstract).
 * A bare IPv6 literal without brackets is accepted where there is no port to confuse it with
 * (rpcserver_ip, advertise_ip). Host names are resolved when dialling, on a thread of their own
 * (mprpc__dns), so that no loop and no lock waits on DNS. */

typedef enum mprpc__addr_kind { MPRPC__ADDR_IP, MPRPC__ADDR_NAME, MPRPC__ADDR_UNIX } mprpc__addr_kind;

typedef struct mprpc__addr {
    mprpc__addr_kind        kind;
    char                    host[MPRPC_ADDR_MAX]; /* literal or name, no brackets; unix: path or "@name" */
    int                     port;                 /* 0 for unix */
    struct sockaddr_storage sa;                   /* IP and unix: ready for bind or connect */
    socklen_t               salen;
} mprpc__addr;

static int mprpc__addr_port(const char *s, int *port)
{
    long v = 0;
    if (!*s || strlen(s) > 5) return 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9') return 0;
        v = v * 10 + (*s - '0');
    }
    if (v > 65535) return 0;
    *port = (int)v;
    return 1;
}

/* RFC 1123 host name: labels of letters, digits, '-' (and '_', common in service names). */
static int mprpc__host_name_ok(const char *h)
{
    size_t label = 0, n = strlen(h);
    if (n == 0 || n > 253 || h[0] == '.' || h[0] == '-') return 0;
    for (; *h; h++) {
        int c = (unsigned char)*h;
        if (c == '.') {
            if (label == 0) return 0;
            label = 0;
            continue;
        }
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
              c == '_') || ++label > 63)
            return 0;
    }
    return 1;
}

/* A host (IPv4 or IPv6 literal, brackets optional, or a name) and a port into *a. */
static int mprpc__addr_host(const char *host, int port, mprpc__addr *a, char *why, size_t whylen)
{
    size_t n = strlen(host);
    memset(a, 0, sizeof *a);
    if (n >= 2 && host[0] == '[' && host[n - 1] == ']') { host++; n -= 2; }
    if (n == 0 || n >= sizeof a->host) {
        mprpc__fmt(why, whylen, "host '%s' is empty or longer than %zu bytes", host, sizeof a->host - 1);
        return 0;
    }
    memcpy(a->host, host, n);
    a->port = port;
    if (inet_pton(AF_INET, a->host, &((struct sockaddr_in *)(void *)&a->sa)->sin_addr) == 1) {
        ((struct sockaddr_in *)(void *)&a->sa)->sin_family = AF_INET;
        ((struct sockaddr_in *)(void *)&a->sa)->sin_port = htons((uint16_t)port);
        a->salen = sizeof(struct sockaddr_in);
    } else if (inet_pton(AF_INET6, a->host, &((struct sockaddr_in6 *)(void *)&a->sa)->sin6_addr) == 1) {
        ((struct sockaddr_in6 *)(void *)&a->sa)->sin6_family = AF_INET6;
        ((struct sockaddr_in6 *)(void *)&a->sa)->sin6_port = htons((uint16_t)port);
        a->salen = sizeof(struct sockaddr_in6);
    } else if (mprpc__host_name_ok(a->host)) {
        a->kind = MPRPC__ADDR_NAME;
    } else {
        mprpc__fmt(why, whylen, "'%s' is neither an IPv4 nor an IPv6 address nor a host name", a->host);
        return 0;
    }
    return 1;
}

/* "unix:/path" or "unix:@abstract" (after the "unix:"). */
static int mprpc__addr_unix(const char *path, mprpc__addr *a, char *why, size_t whylen)
{
    struct sockaddr_un *un = (struct sockaddr_un *)(void *)&a->sa;
    size_t n = strlen(path);
    memset(a, 0, sizeof *a);
    a->kind = MPRPC__ADDR_UNIX;
    if (n < 2 || (path[0] != '/' && path[0] != '@') || n >= sizeof un->sun_path || n >= sizeof a->host) {
        mprpc__fmt(why, whylen, "unix socket 'unix:%s' must be unix:/absolute/path or unix:@name, "
                   "at most %zu bytes", path, (sizeof un->sun_path < sizeof a->host ? sizeof un->sun_path
                                                                                  : sizeof a->host) - 1);
        return 0;
    }
    memcpy(a->host, path, n);
    un->sun_family = AF_UNIX;
    memcpy(un->sun_path, path, n);
    if (path[0] == '@') un->sun_path[0] = '\0'; /* Linux abstract namespace: no file */
    a->salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (path[0] == '/'));
    return 1;
}

/* Any of the forms above, with its port (or unix: path) into *a; why says what is wrong. */
static int mprpc__addr_parse(const char *text, mprpc__addr *a, char *why, size_t whylen)
{
    char host[MPRPC_ADDR_MAX];
    const char *colon;
    int port;
    if (strncmp(text, "unix:", 5) == 0) return mprpc__addr_unix(text + 5, a, why, whylen);
    colon = text[0] == '[' ? strstr(text, "]:") : strrchr(text, ':');
    if (colon && text[0] == '[') colon++;
    if (!colon || colon == text) {
        mprpc__fmt(why, whylen, "address '%s' is not host:port, [ipv6]:port or unix:path", text);
        return 0;
    }
    if (text[0] != '[' && memchr(text, ':', (size_t)(colon - text))) {
        mprpc__fmt(why, whylen, "address '%s': an IPv6 address takes brackets, as in [::1]:8000", text);
        return 0;
    }
    if (!mprpc__addr_port(colon + 1, &port)) {
        mprpc__fmt(why, whylen, "address '%s': port '%s' is not a number 0..65535", text, colon + 1);
        return 0;
    }
    if ((size_t)(colon - text) >= sizeof host) {
        mprpc__fmt(why, whylen, "address '%.40s...' is longer than %zu bytes", text, sizeof host - 1);
        return 0;
    }
    memcpy(host, text, (size_t)(colon - text));
    host[colon - text] = '\0';
    return mprpc__addr_host(host, port, a, why, whylen);
}

/* host:port, with brackets around an IPv6 literal. */
static void mprpc__addr_join(char *dst, size_t cap, const char *host, int port)
{
    size_t n = strlen(host);
    int bracketed = n >= 2 && host[0] == '[';
    mprpc__fmt(dst, cap, strchr(host, ':') && !bracketed ? "[%s]:%d" : "%s:%d", host, port);
}

/* The address as written in config and logs. */
static void mprpc__addr_text(const mprpc__addr *a, char *dst, size_t cap)
{
    if (a->kind == MPRPC__ADDR_UNIX) mprpc__fmt(dst, cap, "unix:%s", a->host);
    else mprpc__addr_join(dst, cap, a->host, a->port);
}

/* 0.0.0.0 or [::]: a place to listen, not an address a caller can use. */
static int mprpc__addr_wildcard(const mprpc__addr *a)
{
    return a->kind == MPRPC__ADDR_IP && (strcmp(a->host, "0.0.0.0") == 0 || strcmp(a->host, "::") == 0);
}

/* ---- resolving a host name without blocking anyone ----
 * getaddrinfo blocks for as long as the resolver likes (seconds per server in resolv.conf), and
 * getaddrinfo_a is glibc only (musl lacks it). So a short-lived detached thread runs getaddrinfo and
 * signals an eventfd; the channel's loop watches that fd like a connecting socket, so the connection's
 * connect_timeout_ms and the call's deadline bound the wait, and a resolver that is still busy when
 * they pass is simply abandoned (it frees the shared record when it returns). */

#define MPRPC__RESOLVE_MAX 4 /* addresses tried in order (e.g. ::1 then 127.0.0.1 for localhost) */

typedef struct mprpc__dns {
    pthread_mutex_t         mu;
    int                     refs;  /* mu: the dialler and the resolver thread */
    int                     efd;   /* readable once done; closed with the last reference */
    int                     rc;    /* getaddrinfo's result (mu, once done) */
    int                     n;     /* addresses found (mu, once done) */
    char                    host[MPRPC_ADDR_MAX];
    char                    port[8];
    struct sockaddr_storage sa[MPRPC__RESOLVE_MAX];
    socklen_t               salen[MPRPC__RESOLVE_MAX];
} mprpc__dns;

static void mprpc__dns_put(mprpc__dns *r)
{
    int left;
    if (!r) return;
    pthread_mutex_lock(&r->mu);
    left = --r->refs;
    pthread_mutex_unlock(&r->mu);
    if (left > 0) return;
    close(r->efd);
    pthread_mutex_destroy(&r->mu);
    MPRPC_FREE(r);
}

static void *mprpc__dns_main(void *arg)
{
    mprpc__dns *r = (mprpc__dns *)arg;
    struct addrinfo hints, *res = NULL, *ai;
    uint64_t one = 1;
    ssize_t w;
    int rc, n = 0;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    rc = getaddrinfo(r->host, r->port, &hints, &res);
    pthread_mutex_lock(&r->mu);
    r->rc = rc;
    for (ai = rc == 0 ? res : NULL; ai && n < MPRPC__RESOLVE_MAX; ai = ai->ai_next) {
        if (ai->ai_addrlen > sizeof r->sa[0]) continue;
        memcpy(&r->sa[n], ai->ai_addr, ai->ai_addrlen);
        r->salen[n++] = (socklen_t)ai->ai_addrlen;
    }
    r->n = n;
    pthread_mutex_unlock(&r->mu);
    if (res) freeaddrinfo(res);
    w = write(r->efd, &one, sizeof one);
    (void)w; /* a full counter already reads as done */
    mprpc__dns_put(r);
    return NULL;
}

/* Starts resolving a's name; the caller watches ->efd (EPOLLIN) and owns one reference. */
static mprpc__dns *mprpc__dns_start(const mprpc__addr *a, char *why, size_t whylen)
{
    mprpc__dns *r = (mprpc__dns *)mprpc__zalloc(sizeof *r);
    pthread_t t;
    if (!r) {
        mprpc__fmt(why, whylen, "no memory to resolve '%s'", a->host);
        return NULL;
    }
    mprpc__copy_str(r->host, sizeof r->host, a->host);
    mprpc__fmt(r->port, sizeof r->port, "%d", a->port);
    r->refs = 2;
    pthread_mutex_init(&r->mu, NULL);
    r->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (r->efd < 0 || mprpc__thread_start(&t, mprpc__dns_main, r) != 0) {
        mprpc__fmt(why, whylen, "cannot start resolving '%s': %s", a->host, strerror(errno));
        if (r->efd >= 0) close(r->efd);
        pthread_mutex_destroy(&r->mu);
        MPRPC_FREE(r);
        return NULL;
    }
    pthread_detach(t);
    return r;
}

/* Once ->efd is readable: the i-th address found, or 0 with the reason in why. */
static int mprpc__dns_get(mprpc__dns *r, int i, struct sockaddr_storage *sa, socklen_t *salen,
                              char *why, size_t whylen)
{
    int ok;
    pthread_mutex_lock(&r->mu);
    ok = r->rc == 0 && i < r->n;
    if (ok) {
        *sa = r->sa[i];
        *salen = r->salen[i];
    } else if (r->rc != 0) {
        mprpc__fmt(why, whylen, "cannot resolve host name '%s': %s", r->host, gai_strerror(r->rc));
    } else {
        mprpc__fmt(why, whylen, "host name '%s' resolved to no usable address", r->host);
    }
    pthread_mutex_unlock(&r->mu);
    return ok;
}

/* A provider's own host name, resolved once when it starts (start is no call with a deadline). */
static int mprpc__resolve_now(mprpc__addr *a, char *why, size_t whylen)
{
    struct addrinfo hints, *res = NULL;
    char port[8];
    int rc;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    mprpc__fmt(port, sizeof port, "%d", a->port);
    rc = getaddrinfo(a->host, port, &hints, &res);
    if (rc != 0 || !res || res->ai_addrlen > sizeof a->sa) {
        mprpc__fmt(why, whylen, "cannot resolve host name '%s': %s", a->host,
                   rc != 0 ? gai_strerror(rc) : "no usable address");
        if (res) freeaddrinfo(res);
        return 0;
    }
    memcpy(&a->sa, res->ai_addr, res->ai_addrlen);
    a->salen = (socklen_t)res->ai_addrlen;
    freeaddrinfo(res);
    return 1;
}

static int mprpc__sockaddr_port(const struct sockaddr_storage *sa)
{
    if (sa->ss_family == AF_INET) return ntohs(((const struct sockaddr_in *)(const void *)sa)->sin_port);
    if (sa->ss_family == AF_INET6) return ntohs(((const struct sockaddr_in6 *)(const void *)sa)->sin6_port);
    return 0;
}

/* A socket's peer as text, for log lines ("10.0.0.7:51234", "[::1]:51234", "unix"). */
static void mprpc__peer_text(int fd, char *dst, size_t cap)
{
    struct sockaddr_storage sa;
    socklen_t len = sizeof sa;
    char host[INET6_ADDRSTRLEN];
    const void *in;
    if (getpeername(fd, (struct sockaddr *)&sa, &len) != 0) { /* e.g. the peer has gone already */
        mprpc__copy_str(dst, cap, "a peer that has gone");
        return;
    }
    if (sa.ss_family != AF_INET && sa.ss_family != AF_INET6) {
        mprpc__copy_str(dst, cap, "a unix socket peer");
        return;
    }
    in = sa.ss_family == AF_INET ? (const void *)&((struct sockaddr_in *)(void *)&sa)->sin_addr
                                 : (const void *)&((struct sockaddr_in6 *)(void *)&sa)->sin6_addr;
    if (!inet_ntop(sa.ss_family, in, host, sizeof host)) mprpc__copy_str(host, sizeof host, "?");
    mprpc__addr_join(dst, cap, host, mprpc__sockaddr_port(&sa));
}

/* ---- transport: TLS behind MPRPC_TLS -------------------------------------------------------------
 * The event loops see a connection's TLS session only through mprpc__tls_io, a table of functions
 * with socket-like results (bytes, 0 at the peer's end, -1 with errno EAGAIN when the session must
 * wait for the socket; `want` then says for which event: a read may have to write first, a TLS 1.3
 * post-handshake reply into a full socket, and a write may have to read), so another library (mbedTLS
 * on small boards) is one more table. A connection without TLS has no session and uses recv/send
 * directly (mprpc__xrecv, mprpc__xsend). */

typedef struct mprpc__tls     mprpc__tls;     /* one connection's session */
typedef struct mprpc__tls_ctx mprpc__tls_ctx; /* a server's or a channel's certificates and policy */

typedef enum mprpc__hs { MPRPC__HS_DONE, MPRPC__HS_WANT_READ, MPRPC__HS_WANT_WRITE, MPRPC__HS_FAILED } mprpc__hs;

typedef struct mprpc__tls_ops {
    /* server: certificate + key required, client certificates verified when tls_ca_file is set;
     * client: the provider verified against tls_ca_file (else the system's CAs) */
    mprpc__tls_ctx *(*ctx_new)(const mprpc_config *cfg, int server, char *why, size_t whylen);
    void            (*ctx_free)(mprpc__tls_ctx *ctx);
    /* name: the client's expected provider name (a host name or an IP literal) */
    mprpc__tls     *(*conn_new)(mprpc__tls_ctx *ctx, int fd, const char *name, char *why, size_t whylen);
    mprpc__hs       (*handshake)(mprpc__tls *t, char *why, size_t whylen);
    ssize_t         (*read)(mprpc__tls *t, void *buf, size_t n);
    ssize_t         (*write)(mprpc__tls *t, const void *buf, size_t n);
    size_t          (*pending)(mprpc__tls *t);  /* nonzero: bytes read ahead or decrypted are waiting,
                                                 * and no socket event will say so */
    const char     *(*error)(mprpc__tls *t);    /* why the last read or write failed */
    mprpc__hs       (*want)(mprpc__tls *t);     /* after EAGAIN: MPRPC__HS_WANT_READ or _WANT_WRITE */
    const char     *(*peer)(mprpc__tls *t);     /* verified peer certificate's identity, or "" */
    void            (*shutdown)(mprpc__tls *t); /* close_notify, best effort, never waits */
    void            (*free)(mprpc__tls *t);
} mprpc__tls_ops;

#ifdef MPRPC_TLS
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#define MPRPC__TLS_READ_BUF (64 * 1024) /* raw bytes a session reads ahead: 4 full records */

struct mprpc__tls_ctx { SSL_CTX *ctx; };
struct mprpc__tls {
    SSL      *ssl;
    int       fd;
    int       more;    /* the record being written is not the last of the caller's bytes */
    int       done;    /* handshake complete */
    int       starved; /* the last read wanted the socket: what is read ahead is not a whole record */
    mprpc__hs want;    /* what the last EAGAIN waits for */
    char      why[200];
    char      peer[256];
};

/* A socket BIO that sends with MSG_NOSIGNAL: OpenSSL's own writes with write(), and a peer that is gone
 * would raise SIGPIPE in the program. A record that more of the caller's bytes follow goes with
 * MSG_MORE: the kernel sends the records of one burst together (one TLS write is one record of at
 * most 16 KiB), and the loops always write on until they hold nothing, the last record without it. */
static int mprpc__bio_write(BIO *b, const char *d, int n)
{
    const mprpc__tls *t = (const mprpc__tls *)BIO_get_data(b);
    ssize_t k;
    BIO_clear_retry_flags(b);
    do k = send(t->fd, d, (size_t)n, MSG_NOSIGNAL | (t->more ? MSG_MORE : 0)); while (k < 0 && errno == EINTR);
    if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) BIO_set_retry_write(b);
    return (int)k;
}

static int mprpc__bio_read(BIO *b, char *d, int n)
{
    const mprpc__tls *t = (const mprpc__tls *)BIO_get_data(b);
    ssize_t k;
    BIO_clear_retry_flags(b);
    do k = recv(t->fd, d, (size_t)n, 0); while (k < 0 && errno == EINTR);
    if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) BIO_set_retry_read(b);
    return (int)k;
}

static long mprpc__bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)b; (void)num; (void)ptr;
    return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int mprpc__bio_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static BIO_METHOD *mprpc__bio_method;
static pthread_once_t mprpc__bio_once = PTHREAD_ONCE_INIT;
static void mprpc__bio_init(void)
{
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "mprpc socket");
    if (m && BIO_meth_set_write(m, mprpc__bio_write) == 1 && BIO_meth_set_read(m, mprpc__bio_read) == 1 &&
        BIO_meth_set_ctrl(m, mprpc__bio_ctrl) == 1 && BIO_meth_set_create(m, mprpc__bio_create) == 1)
        mprpc__bio_method = m; /* kept for the life of the process, as OpenSSL keeps its own */
    else if (m)
        BIO_meth_free(m);
}

static BIO *mprpc__bio_new(mprpc__tls *t)
{
    BIO *b;
    pthread_once(&mprpc__bio_once, mprpc__bio_init);
    if (!mprpc__bio_method || (b = BIO_new(mprpc__bio_method)) == NULL) return NULL;
    BIO_set_data(b, t);
    return b;
}

/* The newest OpenSSL error's reason ("certificate verify failed"), then the queue is cleared. */
static void mprpc__ossl_why(char *why, size_t whylen, const char *what)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    if (r) mprpc__fmt(why, whylen, "%s: %s", what, r);
    else if (e) mprpc__fmt(why, whylen, "%s: OpenSSL error 0x%lx", what, e);
    else mprpc__fmt(why, whylen, "%s: %s", what, errno ? strerror(errno) : "the peer closed the connection");
    ERR_clear_error();
}

static int mprpc__ossl_load(SSL_CTX *ctx, const mprpc_config *cfg, int server, char *why, size_t whylen)
{
    if (!cfg->tls_cert_file[0] && server) {
        mprpc__fmt(why, whylen, "TLS: a provider needs tls_cert_file and tls_key_file");
        return 0;
    }
    if (cfg->tls_cert_file[0] &&
        (SSL_CTX_use_certificate_chain_file(ctx, cfg->tls_cert_file) != 1 ||
         SSL_CTX_use_PrivateKey_file(ctx, cfg->tls_key_file[0] ? cfg->tls_key_file : cfg->tls_cert_file,
                                     SSL_FILETYPE_PEM) != 1 || SSL_CTX_check_private_key(ctx) != 1)) {
        mprpc__ossl_why(why, whylen, "TLS: loading tls_cert_file/tls_key_file");
        return 0;
    }
    if (cfg->tls_ca_file[0] ? SSL_CTX_load_verify_locations(ctx, cfg->tls_ca_file, NULL) != 1
                            : !server && SSL_CTX_set_default_verify_paths(ctx) != 1) {
        mprpc__ossl_why(why, whylen, "TLS: loading tls_ca_file");
        return 0;
    }
    return 1;
}

static mprpc__tls_ctx *mprpc__ossl_ctx_new(const mprpc_config *cfg, int server, char *why, size_t whylen)
{
    mprpc__tls_ctx *t = (mprpc__tls_ctx *)mprpc__zalloc(sizeof *t);
    SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    if (!t || !ctx) {
        mprpc__ossl_why(why, whylen, "TLS: SSL_CTX_new");
        goto fail;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION); /* the highest both speak wins: 1.3 */
    /* the provider's suite order below decides, not the client's (OpenSSL's own lists AES-256 first) */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | (server ? SSL_OP_CIPHER_SERVER_PREFERENCE : 0));
    /* the loops write from buffers that move (realloc) and take partial writes */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
    if (server) SSL_CTX_set_num_tickets(ctx, 0); /* callers keep connections; no resumption */
    /* One recv takes every record the socket holds, not a 5-byte header and then a body: half the
     * syscalls. The loops then ask pending() (SSL_has_pending), since epoll cannot see those bytes. */
    SSL_CTX_set_read_ahead(ctx, 1);
    SSL_CTX_set_default_read_buffer_len(ctx, MPRPC__TLS_READ_BUF);
    /* TLS 1.3's three suites, AES-128-GCM first: with AES instructions it is the fastest (AES-256
     * costs about 15 % more per byte here) and as strong as a call needs. */
    SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256");
    if (!mprpc__ossl_load(ctx, cfg, server, why, whylen)) goto fail;
    /* a provider with tls_ca_file demands a client certificate (mutual TLS) */
    if (!server || cfg->tls_ca_file[0])
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | (server ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0), NULL);
    t->ctx = ctx;
    return t;
fail:
    if (ctx) SSL_CTX_free(ctx);
    MPRPC_FREE(t);
    return NULL;
}

static void mprpc__ossl_ctx_free(mprpc__tls_ctx *t)
{
    if (!t) return;
    SSL_CTX_free(t->ctx);
    MPRPC_FREE(t);
}

/* The client checks the provider's certificate names name (a DNS SAN/CN, or an IP SAN). */
static int mprpc__ossl_expect(SSL *ssl, const char *name)
{
    unsigned char bin[16];
    if (inet_pton(AF_INET, name, bin) == 1 || inet_pton(AF_INET6, name, bin) == 1)
        return X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name) == 1;
    return SSL_set_tlsext_host_name(ssl, name) == 1 && SSL_set1_host(ssl, name) == 1;
}

static mprpc__tls *mprpc__ossl_conn_new(mprpc__tls_ctx *ctx, int fd, const char *name, char *why,
                                        size_t whylen)
{
    mprpc__tls *t = (mprpc__tls *)mprpc__zalloc(sizeof *t);
    BIO *b = NULL;
    if (!t || (t->ssl = SSL_new(ctx->ctx)) == NULL || (b = mprpc__bio_new(t)) == NULL ||
        (name && !mprpc__ossl_expect(t->ssl, name))) {
        mprpc__ossl_why(why, whylen, "TLS: a new session");
        if (b) BIO_free(b);
        if (t && t->ssl) SSL_free(t->ssl);
        MPRPC_FREE(t);
        return NULL;
    }
    t->fd = fd;
    SSL_set_bio(t->ssl, b, b); /* the session owns the BIO now */
    if (name) SSL_set_connect_state(t->ssl);
    else SSL_set_accept_state(t->ssl);
    return t;
}

/* The verified certificate's subject (RFC 2253) and its DNS names: "CN=alice,O=Ops;DNS:alice.example". */
static void mprpc__ossl_identity(mprpc__tls *t)
{
    X509 *cert = SSL_get0_peer_certificate(t->ssl);
    GENERAL_NAMES *sans;
    BIO *b;
    int i, n;
    if (!cert || SSL_get_verify_result(t->ssl) != X509_V_OK || (b = BIO_new(BIO_s_mem())) == NULL) return;
    X509_NAME_print_ex(b, X509_get_subject_name(cert), 0, XN_FLAG_RFC2253);
    sans = (GENERAL_NAMES *)X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    for (i = 0; sans && i < sk_GENERAL_NAME_num(sans); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
        if (g->type == GEN_DNS)
            BIO_printf(b, ";DNS:%.*s", ASN1_STRING_length(g->d.dNSName),
                       (const char *)ASN1_STRING_get0_data(g->d.dNSName));
    }
    if (sans) GENERAL_NAMES_free(sans);
    n = BIO_read(b, t->peer, (int)sizeof t->peer - 1);
    t->peer[n > 0 ? n : 0] = '\0';
    BIO_free(b);
}

/* Why a handshake failed, in the words an operator looks for. */
static void mprpc__ossl_hs_why(mprpc__tls *t, int err, char *why, size_t whylen)
{
    long v = SSL_get_verify_result(t->ssl);
    const char *kind = NULL;
    if (v == X509_V_ERR_CERT_HAS_EXPIRED) kind = "expired certificate";
    else if (v == X509_V_ERR_HOSTNAME_MISMATCH || v == X509_V_ERR_IP_ADDRESS_MISMATCH) kind = "name mismatch";
    else if (v == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY || v == X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN ||
             v == X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT || v == X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE)
        kind = "unknown CA";
    if (v != X509_V_OK) {
        mprpc__fmt(why, whylen, "TLS handshake: %s (%s)", kind ? kind : "certificate not accepted",
                   X509_verify_cert_error_string(v));
        ERR_clear_error();
        return;
    }
    if (ERR_GET_REASON(ERR_peek_last_error()) == SSL_R_WRONG_VERSION_NUMBER ||
        ERR_GET_REASON(ERR_peek_last_error()) == SSL_R_HTTP_REQUEST ||
        ERR_GET_REASON(ERR_peek_last_error()) == SSL_R_PACKET_LENGTH_TOO_LONG) {
        ERR_clear_error();
        mprpc__fmt(why, whylen, "TLS handshake: the peer does not speak TLS (plaintext peer)");
        return;
    }
    if (err == SSL_ERROR_SYSCALL || (err == SSL_ERROR_SSL && ERR_GET_REASON(ERR_peek_last_error()) ==
                                                                 SSL_R_UNEXPECTED_EOF_WHILE_READING)) {
        ERR_clear_error();
        mprpc__fmt(why, whylen, "TLS handshake: the peer closed the connection (a plaintext peer, or "
                   "it refused our certificate)");
        return;
    }
    mprpc__ossl_why(why, whylen, "TLS handshake");
}

static mprpc__hs mprpc__ossl_handshake(mprpc__tls *t, char *why, size_t whylen)
{
    int rc, err;
    ERR_clear_error();
    errno = 0;
    rc = SSL_do_handshake(t->ssl);
    if (rc == 1) {
        t->done = 1;
        mprpc__ossl_identity(t);
        return MPRPC__HS_DONE;
    }
    err = SSL_get_error(t->ssl, rc);
    if (err == SSL_ERROR_WANT_READ) return MPRPC__HS_WANT_READ;
    if (err == SSL_ERROR_WANT_WRITE) return MPRPC__HS_WANT_WRITE;
    mprpc__ossl_hs_why(t, err, why, whylen);
    return MPRPC__HS_FAILED;
}

/* A read or write result as recv/send would give it. */
static ssize_t mprpc__ossl_result(mprpc__tls *t, int rc, const char *what)
{
    int err = SSL_get_error(t->ssl, rc);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
        t->want = err == SSL_ERROR_WANT_WRITE ? MPRPC__HS_WANT_WRITE : MPRPC__HS_WANT_READ;
        errno = EAGAIN;
        return -1;
    }
    if (err == SSL_ERROR_ZERO_RETURN) return 0; /* close_notify */
    if (err == SSL_ERROR_SSL && ERR_GET_REASON(ERR_peek_last_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
        ERR_clear_error();
        return 0; /* closed without close_notify: an end all the same (the frames say if it was early) */
    }
    if (err == SSL_ERROR_SYSCALL && ERR_peek_last_error() == 0) {
        if (errno == 0) return 0; /* closed without close_notify: an end all the same */
        mprpc__fmt(t->why, sizeof t->why, "%s: %s", what, strerror(errno));
        return -1;
    }
    mprpc__ossl_why(t->why, sizeof t->why, what);
    errno = EPROTO;
    return -1;
}

static ssize_t mprpc__ossl_read(mprpc__tls *t, void *buf, size_t n)
{
    int rc;
    ERR_clear_error();
    errno = 0;
    rc = SSL_read(t->ssl, buf, n > INT_MAX ? INT_MAX : (int)n);
    t->starved = rc <= 0 && SSL_get_error(t->ssl, rc) == SSL_ERROR_WANT_READ;
    return rc > 0 ? rc : mprpc__ossl_result(t, rc, "TLS read");
}

static ssize_t mprpc__ossl_write(mprpc__tls *t, const void *buf, size_t n)
{
    int rc;
    ERR_clear_error();
    errno = 0;
    t->more = n > SSL3_RT_MAX_PLAIN_LENGTH;
    rc = SSL_write(t->ssl, buf, n > INT_MAX ? INT_MAX : (int)n);
    t->more = 0;
    return rc > 0 ? rc : mprpc__ossl_result(t, rc, "TLS write");
}

/* Decrypted bytes, or bytes read ahead that may hold a whole record: a partial record, once a read
 * said so, waits for the socket (else a peer sending half a record would keep the loop spinning). */
static size_t mprpc__ossl_pending(mprpc__tls *t)
{
    return SSL_pending(t->ssl) > 0 || (!t->starved && SSL_has_pending(t->ssl));
}
static const char *mprpc__ossl_error(mprpc__tls *t) { return t->why; }
static mprpc__hs mprpc__ossl_want(mprpc__tls *t) { return t->want; }
static const char *mprpc__ossl_peer(mprpc__tls *t) { return t->peer; }

static void mprpc__ossl_shutdown(mprpc__tls *t)
{
    if (!t->done) return;
    ERR_clear_error();
    SSL_shutdown(t->ssl); /* sends close_notify if the socket takes it; never waits for the peer's */
    ERR_clear_error();
}

static void mprpc__ossl_free(mprpc__tls *t)
{
    if (!t) return;
    SSL_free(t->ssl);
    MPRPC_FREE(t);
}

static const mprpc__tls_ops mprpc__tls_openssl = {
    mprpc__ossl_ctx_new, mprpc__ossl_ctx_free, mprpc__ossl_conn_new, mprpc__ossl_handshake,
    mprpc__ossl_read, mprpc__ossl_write, mprpc__ossl_pending, mprpc__ossl_error, mprpc__ossl_want,
    mprpc__ossl_peer, mprpc__ossl_shutdown, mprpc__ossl_free,
};
static const mprpc__tls_ops *const mprpc__tls_io = &mprpc__tls_openssl;
#else
static const mprpc__tls_ops *const mprpc__tls_io = NULL; /* never used: no session is ever made */
#endif

/* recv/send, through the connection's TLS session when it has one. */
static ssize_t mprpc__xrecv(int fd, mprpc__tls *t, void *buf, size_t n)
{
    return t ? mprpc__tls_io->read(t, buf, n) : recv(fd, buf, n, 0);
}

static ssize_t mprpc__xsend(int fd, mprpc__tls *t, const void *buf, size_t n)
{
    return t ? mprpc__tls_io->write(t, buf, n) : send(fd, buf, n, MSG_NOSIGNAL);
}

/* After an EAGAIN from mprpc__xrecv/xsend: does the session wait for the other direction's event (a
 * read for writability, a write for readability)? Never without TLS. */
static int mprpc__xcrossed(mprpc__tls *t, int reading)
{
    return t && mprpc__tls_io->want(t) == (reading ? MPRPC__HS_WANT_WRITE : MPRPC__HS_WANT_READ);
}

/* A non-blocking socket connecting to sa; *connected when it already did. -1 with why on failure. */
static int mprpc__connect_to(const struct sockaddr_storage *sa, socklen_t salen, const char *name,
                             int *connected, char *why, size_t whylen)
{
    int fd, one = 1;
    fd = socket(sa->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        mprpc__fmt(why, whylen, "socket: %s", strerror(errno));
        return -1;
    }
    if (sa->ss_family != AF_UNIX) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    *connected = connect(fd, (const struct sockaddr *)sa, salen) == 0;
    if (!*connected && errno != EINPROGRESS) {
        mprpc__fmt(why, whylen, "connect %s: %s", name, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

/* ======================================================================== */
/* == 2. status =========================================================== */
/* ======================================================================== */

MPRPCDEF const char *mprpc_status_str(int status)
{
    switch (status) {
#define MPRPC__STATUS_TEXT(name, num, text) case num: return text;
    MPRPC_STATUS_LIST(MPRPC__STATUS_TEXT)
#undef MPRPC__STATUS_TEXT
    default: return "unknown status";
    }
}

MPRPCDEF const char *mprpc_status_name(int status)
{
    switch (status) {
#define MPRPC__STATUS_NAME(name, num, text) case num: return "MPRPC_" #name;
    MPRPC_STATUS_LIST(MPRPC__STATUS_NAME)
#undef MPRPC__STATUS_NAME
    default: return "MPRPC_UNKNOWN";
    }
}

/* ======================================================================== */
/* == 3. config =========================================================== */
/* ======================================================================== */

/* AUTO: a boolean that may also be "auto" (-1), the default decided from other facts. */
enum { MPRPC__KEY_STR, MPRPC__KEY_INT, MPRPC__KEY_U32, MPRPC__KEY_BOOL, MPRPC__KEY_LEVEL, MPRPC__KEY_AUTO };

typedef struct mprpc__config_key {
    const char *name;
    const char *alias;   /* the seed deployments' spelling, or NULL */
    int         type;
    size_t      offset;
    size_t      size;    /* for strings: capacity */
    long long   min, max;
} mprpc__config_key;

#define MPRPC__KEY(name, alias, type, min, max) \
    { #name, alias, MPRPC__KEY_##type, offsetof(mprpc_config, name), \
      sizeof(((mprpc_config *)0)->name), min, max }

static const mprpc__config_key mprpc__config_keys[] = {
    MPRPC__KEY(rpcserver_ip,                 "rpcserverip",   STR,   0, 0),
    MPRPC__KEY(rpcserver_port,               "rpcserverport", INT,   0, 65535),
    MPRPC__KEY(advertise_ip,                 NULL,            STR,   0, 0),
    MPRPC__KEY(rpcserver_address,            NULL,            STR,   0, 0),
    MPRPC__KEY(advertise_address,            NULL,            STR,   0, 0),
    MPRPC__KEY(io_threads,                   NULL,            INT,   1, 64),
    MPRPC__KEY(rpc_timeout_ms,               NULL,            INT,   1, 86400000),
    MPRPC__KEY(connect_timeout_ms,           NULL,            INT,   1, 600000),
    MPRPC__KEY(max_message_size,             NULL,            U32,   64, 1073741824),
    MPRPC__KEY(max_connections,              NULL,            INT,   1, 1000000),
    MPRPC__KEY(idle_timeout_ms,              NULL,            INT,   0, 86400000),
    MPRPC__KEY(max_pipeline_depth,           NULL,            INT,   1, 65536),
    MPRPC__KEY(max_pending_output,           NULL,            U32,   1024, 1073741824),
    MPRPC__KEY(drain_timeout_ms,             NULL,            INT,   0, 600000),
    MPRPC__KEY(call_arena_max,               NULL,            INT,   0, 1073741824),
    MPRPC__KEY(admin_service,                NULL,            BOOL,  0, 1),
    /* -- caller side (section 8) -- */
    MPRPC__KEY(channel_max_connections,      NULL,            INT,   1, 65536),
    MPRPC__KEY(channel_connections_per_provider, NULL,        INT,   1, 64),
    MPRPC__KEY(channel_max_pending,          NULL,            INT,   1, 1048576),
    MPRPC__KEY(channel_protocol_version,     NULL,            INT,   0, 1),
    MPRPC__KEY(channel_eject_failures,       NULL,            INT,   0, 1000000),
    MPRPC__KEY(channel_eject_base_ms,        NULL,            INT,   1, 86400000),
    MPRPC__KEY(channel_eject_max_ms,         NULL,            INT,   1, 86400000),
    MPRPC__KEY(channel_io_thread,            NULL,            BOOL,  0, 1),
    MPRPC__KEY(rpcserver_list,               NULL,            STR,   0, 0),
    /* -- end of caller side -- */
    MPRPC__KEY(zookeeper_ip,                 "zookeeperip",   STR,   0, 0),
    MPRPC__KEY(zookeeper_port,               "zookeeperport", INT,   1, 65535),
    MPRPC__KEY(zookeeper_hosts,              NULL,            STR,   0, 0),
    MPRPC__KEY(zookeeper_root,               NULL,            STR,   0, 0),
    MPRPC__KEY(zookeeper_session_timeout_ms, NULL,            INT,   1000, 600000),
    MPRPC__KEY(zookeeper_connect_timeout_ms, NULL,            INT,   1, 600000),
    MPRPC__KEY(zookeeper_seed_layout,        NULL,            AUTO, -1, 1),
    MPRPC__KEY(zookeeper_auth,               NULL,            STR,   0, 0),
    MPRPC__KEY(zookeeper_allow_open_acl,     NULL,            BOOL,  0, 1),
    MPRPC__KEY(log_dir,                      NULL,            STR,   0, 0),
    MPRPC__KEY(log_level,                    NULL,            LEVEL, 0, 4),
    MPRPC__KEY(log_stderr,                   NULL,            BOOL,  0, 1),
    MPRPC__KEY(log_queue_size,               NULL,            INT,   1, 1048576),
    MPRPC__KEY(tls_enable,                   NULL,            BOOL,  0, 1),
    MPRPC__KEY(tls_cert_file,                NULL,            STR,   0, 0),
    MPRPC__KEY(tls_key_file,                 NULL,            STR,   0, 0),
    MPRPC__KEY(tls_ca_file,                  NULL,            STR,   0, 0),
    MPRPC__KEY(tls_server_name,              NULL,            STR,   0, 0),
    MPRPC__KEY(tls_handshake_timeout_ms,     NULL,            INT,   1, 600000),
};

MPRPCDEF void mprpc_config_init(mprpc_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    mprpc__copy_str(cfg->rpcserver_ip, sizeof cfg->rpcserver_ip, "127.0.0.1");
    cfg->rpcserver_port = 8000;
    cfg->io_threads = 2;
    cfg->rpc_timeout_ms = 5000;
    cfg->connect_timeout_ms = 2000;
    cfg->max_message_size = 4u << 20;
    cfg->max_connections = 10000;
    cfg->idle_timeout_ms = 60000;
    cfg->max_pipeline_depth = 128;
    cfg->max_pending_output = 1u << 20;
    cfg->drain_timeout_ms = 5000;
    /* A quarter of max_message_size: room to copy a large request field and build a large reply,
     * while io_threads running handlers plus the deferred calls (at most max_pipeline_depth per
     * connection) each hold at most this much. */
    cfg->call_arena_max = 1 << 20;
    cfg->admin_service = 1;
    /* -- caller side (section 8) -- */
    cfg->channel_max_connections = 64;
    cfg->channel_connections_per_provider = 2;
    cfg->channel_max_pending = 4096;
    cfg->channel_protocol_version = 1;
    cfg->channel_eject_failures = 3;
    cfg->channel_eject_base_ms = 1000;
    cfg->channel_eject_max_ms = 30000;
    cfg->channel_io_thread = 1;
    /* -- end of caller side -- */
    cfg->zookeeper_port = 2181;
    mprpc__copy_str(cfg->zookeeper_root, sizeof cfg->zookeeper_root, "/mprpc");
    cfg->zookeeper_session_timeout_ms = 10000;
    cfg->zookeeper_connect_timeout_ms = 5000;
    cfg->zookeeper_seed_layout = -1; /* auto: see mprpc__seed_publish */
    cfg->log_level = MPRPC_LOG_LEVEL_INFO;
    cfg->log_queue_size = 1024;
    cfg->tls_handshake_timeout_ms = 5000;
}

static const mprpc__config_key *mprpc__config_find(const char *key)
{
    size_t i;
    for (i = 0; i < MPRPC_COUNTOF(mprpc__config_keys); i++) {
        const mprpc__config_key *k = &mprpc__config_keys[i];
        if (strcmp(k->name, key) == 0 || (k->alias && strcmp(k->alias, key) == 0)) return k;
    }
    return NULL;
}

/* Parses a whole decimal number; rejects signs where unwanted, junk and overflow. */
static int mprpc__parse_num(const char *s, long long min, long long max, long long *out)
{
    char *end;
    long long v;
    if (*s == '\0') return 0;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max) return 0;
    *out = v;
    return 1;
}

static int mprpc__parse_level(const char *s, long long *out)
{
    static const char *const names[] = { "debug", "info", "warn", "error", "off" };
    size_t i;
    for (i = 0; i < MPRPC_COUNTOF(names); i++)
        if (strcmp(s, names[i]) == 0) { *out = (long long)i; return 1; }
    return mprpc__parse_num(s, 0, 4, out);
}

static int mprpc__parse_bool(const char *s, long long *out)
{
    if (!strcmp(s, "1") || !strcmp(s, "true") || !strcmp(s, "yes") || !strcmp(s, "on")) { *out = 1; return 1; }
    if (!strcmp(s, "0") || !strcmp(s, "false") || !strcmp(s, "no") || !strcmp(s, "off")) { *out = 0; return 1; }
    return 0;
}

static int mprpc__parse_auto(const char *s, long long *out)
{
    if (!strcmp(s, "auto") || !strcmp(s, "-1")) { *out = -1; return 1; }
    return mprpc__parse_bool(s, out);
}

/* Applies one value; on failure writes why into err and leaves cfg alone. */
static mprpc_status mprpc__config_apply(mprpc_config *cfg, const char *key, const char *value,
                                        char *err, size_t errlen)
{
    const mprpc__config_key *k = mprpc__config_find(key);
    char *field;
    long long v = 0;
    int ok;
    if (!k) {
        mprpc__fmt(err, errlen, "unknown key '%s'", key);
        return MPRPC_ERR_CONFIG;
    }
    field = (char *)cfg + k->offset;
    if (k->type == MPRPC__KEY_STR) {
        if (strlen(value) >= k->size) {
            mprpc__fmt(err, errlen, "value of '%s' is longer than %zu bytes", key, k->size - 1);
            return MPRPC_ERR_CONFIG;
        }
        mprpc__copy_str(field, k->size, value);
        if (k->alias && strcmp(key, k->alias) == 0) cfg->seed_spellings = 1;
        return MPRPC_OK;
    }
    if (k->type == MPRPC__KEY_BOOL) ok = mprpc__parse_bool(value, &v);
    else if (k->type == MPRPC__KEY_AUTO) ok = mprpc__parse_auto(value, &v);
    else if (k->type == MPRPC__KEY_LEVEL) ok = mprpc__parse_level(value, &v);
    else ok = mprpc__parse_num(value, k->min, k->max, &v);
    if (!ok) {
        mprpc__fmt(err, errlen, "bad value '%s' for '%s' (expected %s %lld..%lld)", value, key,
                   k->type == MPRPC__KEY_BOOL ? "a boolean" : k->type == MPRPC__KEY_AUTO ? "auto or a boolean" :
                   k->type == MPRPC__KEY_LEVEL ? "debug|info|warn|error|off or" : "a number",
                   k->min, k->max);
        return MPRPC_ERR_CONFIG;
    }
    if (k->type == MPRPC__KEY_U32) *(uint32_t *)(void *)field = (uint32_t)v;
    else *(int *)(void *)field = (int)v;
    if (k->alias && strcmp(key, k->alias) == 0) cfg->seed_spellings = 1; /* zookeeper_seed_layout auto */
    return MPRPC_OK;
}

MPRPCDEF mprpc_status mprpc_config_set(mprpc_config *cfg, const char *key, const char *value)
{
    if (!cfg || !key || !value) return MPRPC_ERR_INVALID_ARGUMENT;
    return mprpc__config_apply(cfg, key, value, cfg->error, sizeof cfg->error);
}

static char *mprpc__trim(char *s)
{
    char *e;
    while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n') s++;
    e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' || e[-1] == '\n')) e--;
    *e = '\0';
    return s;
}

/* A key given twice is an error, not "last wins": the seed kept the first
 * value and this library used to keep the last, so a file that relies on
 * either means something else to the other. set_on[i] is the line that set
 * mprpc__config_keys[i], 0 while unset. */
static int mprpc__config_once(const char *key, int lineno, int *set_on, char *err, size_t errlen)
{
    const mprpc__config_key *k = mprpc__config_find(key);
    size_t i;
    if (!k) return 1; /* mprpc__config_apply names the unknown key */
    i = (size_t)(k - mprpc__config_keys);
    if (set_on[i]) {
        mprpc__fmt(err, errlen, "key '%s' is also set on line %d (each key may appear once)", key, set_on[i]);
        return 0;
    }
    set_on[i] = lineno;
    return 1;
}

/* One line of a config file into tmp; returns 0 and fills err on failure. */
static int mprpc__config_line(mprpc_config *tmp, char *line, int lineno, int *set_on, char *err, size_t errlen)
{
    char *s = mprpc__trim(line), *eq, *key, *value;
    char why[192];
    if (*s == '\0' || *s == '#') return 1;
    eq = strchr(s, '=');
    if (!eq) {
        mprpc__fmt(err, errlen, "expected key=value, got '%.64s'", s);
        return 0;
    }
    *eq = '\0';
    key = mprpc__trim(s);
    value = mprpc__trim(eq + 1);
    if (*key == '\0') {
        mprpc__fmt(err, errlen, "missing key before '='");
        return 0;
    }
    if (!mprpc__config_once(key, lineno, set_on, err, errlen)) return 0;
    if (mprpc__config_apply(tmp, key, value, why, sizeof why) != MPRPC_OK) {
        mprpc__fmt(err, errlen, "key '%s': %s", key, why);
        return 0;
    }
    return 1;
}

enum { MPRPC__LINE_OK, MPRPC__LINE_EOF, MPRPC__LINE_LONG, MPRPC__LINE_NUL, MPRPC__LINE_ERROR };

/* Reads one line without its '\n' into buf (cap bytes with the terminator).
 * getc, not fgets: fgets cannot tell a NUL byte from the end of the line,
 * and a read error looks like the end of the file unless ferror is asked.
 * On MPRPC__LINE_ERROR errno says why. */
static int mprpc__config_read_line(FILE *f, char *buf, size_t cap)
{
    size_t n = 0;
    int c;
    while ((c = getc(f)) != EOF && c != '\n') {
        if (c == '\0') return MPRPC__LINE_NUL;
        if (n + 1 >= cap) return MPRPC__LINE_LONG;
        buf[n++] = (char)c;
    }
    buf[n] = '\0';
    if (c == EOF && ferror(f)) return MPRPC__LINE_ERROR;
    if (c == EOF && n == 0) return MPRPC__LINE_EOF;
    return MPRPC__LINE_OK;
}

static mprpc_status mprpc__config_read_failed(mprpc_config *cfg, const char *path, int lineno, int r,
                                              size_t max)
{
    if (r == MPRPC__LINE_NUL)
        mprpc__fmt(cfg->error, sizeof cfg->error, "%s:%d: NUL byte on line %d (a config file is text)",
                   path, lineno, lineno);
    else if (r == MPRPC__LINE_LONG)
        mprpc__fmt(cfg->error, sizeof cfg->error, "%s:%d: line longer than %zu bytes", path, lineno, max);
    else
        mprpc__fmt(cfg->error, sizeof cfg->error, "%s: cannot read: %s", path, strerror(errno));
    return MPRPC_ERR_CONFIG;
}

/* Editors on some systems start a UTF-8 file with a byte order mark; it is
 * invisible, so "unknown key" would puzzle. Only the file's first bytes. */
static char *mprpc__skip_bom(char *line, int lineno)
{
    return lineno == 1 && strncmp(line, "\xEF\xBB\xBF", 3) == 0 ? line + 3 : line;
}

/* The parser behind mprpc_config_load, on an open stream (the fuzz target
 * tests/fuzz/fuzz_config.c feeds it from memory). All or nothing. */
static mprpc_status mprpc__config_parse(mprpc_config *cfg, FILE *f, const char *path)
{
    mprpc_config tmp;
    int set_on[MPRPC_COUNTOF(mprpc__config_keys)];
    char line[1024], why[224];
    int lineno = 0, r;
    mprpc_status st;
    tmp = *cfg;
    memset(set_on, 0, sizeof set_on);
    while ((r = mprpc__config_read_line(f, line, sizeof line)) != MPRPC__LINE_EOF) {
        lineno++;
        if (r != MPRPC__LINE_OK) return mprpc__config_read_failed(cfg, path, lineno, r, sizeof line - 1);
        if (!mprpc__config_line(&tmp, mprpc__skip_bom(line, lineno), lineno, set_on, why, sizeof why)) {
            mprpc__fmt(cfg->error, sizeof cfg->error, "%s:%d: %s", path, lineno, why);
            return MPRPC_ERR_CONFIG;
        }
    }
    st = mprpc_config_validate(&tmp);
    if (st != MPRPC_OK) {
        mprpc__fmt(cfg->error, sizeof cfg->error, "%s: %s", path, tmp.error);
        return st;
    }
    tmp.error[0] = '\0';
    *cfg = tmp;
    return MPRPC_OK;
}

MPRPCDEF mprpc_status mprpc_config_load(mprpc_config *cfg, const char *path)
{
    mprpc_status st;
    FILE *f;
    if (!cfg || !path) return MPRPC_ERR_INVALID_ARGUMENT;
    f = fopen(path, "r");
    if (!f) {
        mprpc__fmt(cfg->error, sizeof cfg->error, "%s: cannot open: %s", path, strerror(errno));
        return MPRPC_ERR_CONFIG;
    }
    st = mprpc__config_parse(cfg, f, path);
    fclose(f);
    return st;
}

/* ---- validation: the key table's ranges, then rules the table cannot say ---- */

static mprpc_status mprpc__config_refuse(mprpc_config *cfg, const char *fmt, ...) MPRPC_PRINTF(2, 3);
static mprpc_status mprpc__config_refuse(mprpc_config *cfg, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    mprpc__vfmt(cfg->error, sizeof cfg->error, fmt, ap);
    va_end(ap);
    return MPRPC_ERR_CONFIG;
}

/* A field set from C, not from a file, may hold anything: numbers must be in
 * the table's range, strings terminated within their array. */
static mprpc_status mprpc__config_check_key(mprpc_config *cfg, const mprpc__config_key *k)
{
    const char *field = (const char *)cfg + k->offset;
    long long v;
    if (k->type == MPRPC__KEY_STR) {
        if (memchr(field, '\0', k->size)) return MPRPC_OK;
        return mprpc__config_refuse(cfg, "%s is not a terminated string of at most %zu bytes",
                                    k->name, k->size - 1);
    }
    if (k->type == MPRPC__KEY_U32) v = (long long)*(const uint32_t *)(const void *)field;
    else v = (long long)*(const int *)(const void *)field;
    if (v >= k->min && v <= k->max) return MPRPC_OK;
    return mprpc__config_refuse(cfg, "%s = %lld is out of range %lld..%lld", k->name, v, k->min, k->max);
}

/* Is one of path's '/'-separated components "." or ".."? */
static int mprpc__path_has_dots(const char *path)
{
    const char *p = path;
    while (p) {
        const char *end = strchr(p, '/');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if ((n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.')) return 1;
        p = end ? end + 1 : NULL;
    }
    return 0;
}

/* ZooKeeper refuses these paths only when the server starts, long after the
 * file was read; say so at load time instead. */
static mprpc_status mprpc__config_check_root(mprpc_config *cfg)
{
    const char *r = cfg->zookeeper_root;
    size_t n = strlen(r);
    const char *why = NULL;
    if (r[0] != '/') why = "must start with '/'";
    else if (n == 1) why = "must name a node below '/', such as /mprpc";
    else if (r[n - 1] == '/') why = "must not end with '/'";
    else if (strstr(r, "//")) why = "has an empty component ('//')";
    else if (mprpc__path_has_dots(r)) why = "has a '.' or '..' component";
    if (!why) return MPRPC_OK;
    return mprpc__config_refuse(cfg, "zookeeper_root '%s' %s", r, why);
}

/* The address keys: hosts (rpcserver_ip, advertise_ip) and whole addresses in the syntax of
 * mprpc__addr_parse. rpcserver_list is checked entry by entry when a channel reads it. */
static mprpc_status mprpc__config_check_addrs(mprpc_config *cfg)
{
    mprpc__addr a;
    char why[160];
    if (!mprpc__addr_host(cfg->rpcserver_ip, 0, &a, why, sizeof why))
        return mprpc__config_refuse(cfg, "rpcserver_ip: %s", why);
    if (cfg->advertise_ip[0] && !mprpc__addr_host(cfg->advertise_ip, 0, &a, why, sizeof why))
        return mprpc__config_refuse(cfg, "advertise_ip: %s", why);
    if (cfg->rpcserver_address[0] && !mprpc__addr_parse(cfg->rpcserver_address, &a, why, sizeof why))
        return mprpc__config_refuse(cfg, "rpcserver_address: %s", why);
    if (cfg->advertise_address[0] && !mprpc__addr_parse(cfg->advertise_address, &a, why, sizeof why))
        return mprpc__config_refuse(cfg, "advertise_address: %s", why);
    return MPRPC_OK;
}

/* Rules that involve more than one number: addresses, paths, combinations. */
static mprpc_status mprpc__config_check_rules(mprpc_config *cfg)
{
    int zk = cfg->zookeeper_ip[0] || cfg->zookeeper_hosts[0];
    if (mprpc__config_check_addrs(cfg) != MPRPC_OK) return MPRPC_ERR_CONFIG;
    if (mprpc__config_check_root(cfg) != MPRPC_OK) return MPRPC_ERR_CONFIG;
    if (cfg->zookeeper_auth[0] && !strchr(cfg->zookeeper_auth, ':'))
        return mprpc__config_refuse(cfg, "zookeeper_auth must be \"user:password\" or \"file:PATH\"");
    /* credentials with no ZooKeeper to give them to: the operator expects
     * protected registrations and would silently get none */
    if (cfg->zookeeper_auth[0] && !zk)
        return mprpc__config_refuse(cfg, "zookeeper_auth is set, but neither zookeeper_ip nor "
                                         "zookeeper_hosts: there is no ZooKeeper to authenticate to");
    return MPRPC_OK;
}

MPRPCDEF mprpc_status mprpc_config_validate(mprpc_config *cfg)
{
    size_t i;
    if (!cfg) return MPRPC_ERR_INVALID_ARGUMENT;
    for (i = 0; i < MPRPC_COUNTOF(mprpc__config_keys); i++)
        if (mprpc__config_check_key(cfg, &mprpc__config_keys[i]) != MPRPC_OK) return MPRPC_ERR_CONFIG;
    if (mprpc__config_check_rules(cfg) != MPRPC_OK) return MPRPC_ERR_CONFIG;
#ifdef MPRPC_NO_ZOOKEEPER
    if (cfg->zookeeper_ip[0] || cfg->zookeeper_hosts[0]) {
        mprpc__fmt(cfg->error, sizeof cfg->error,
                   "zookeeper_ip/zookeeper_hosts set, but mprpc.h was built with MPRPC_NO_ZOOKEEPER");
        return MPRPC_ERR_UNSUPPORTED;
    }
#endif
#ifndef MPRPC_TLS
    if (cfg->tls_enable) {
        mprpc__fmt(cfg->error, sizeof cfg->error, "tls_enable set, but mprpc.h was built without MPRPC_TLS");
        return MPRPC_ERR_UNSUPPORTED;
    }
#endif
    return MPRPC_OK;
}

/* For the consumers that take a const config (server, channel): validates a
 * copy. There is no object yet to hold the reason, so it goes to the log. */
static mprpc_status mprpc__config_check(const mprpc_config *cfg, const char *who)
{
    mprpc_config copy = *cfg;
    mprpc_status st = mprpc_config_validate(&copy);
    if (st == MPRPC_OK) return MPRPC_OK;
    MPRPC_LOG_ERROR("%s: invalid config: %s", who, copy.error);
    return st; /* MPRPC_ERR_CONFIG, or MPRPC_ERR_UNSUPPORTED for what this build lacks */
}

/* The file named by "-i FILE", "-iFILE", "--config FILE" or "--config=FILE"
 * in argv[1..argc), up to a "--"; the last one wins, as with getopt. NULL
 * when there is none; *missing when the option has no file after it. */
static const char *mprpc__config_arg(int argc, char **argv, int *missing)
{
    const char *path = NULL;
    int i;
    *missing = 0;
    for (i = 1; i < argc && argv[i]; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) break;
        if (strcmp(a, "-i") == 0 || strcmp(a, "--config") == 0) {
            if (i + 1 >= argc || !argv[i + 1] || !argv[i + 1][0]) { *missing = 1; return NULL; }
            path = argv[++i];
        } else if (strncmp(a, "-i", 2) == 0) {
            path = a + 2;
        } else if (strncmp(a, "--config=", 9) == 0) {
            path = a + 9;
        }
    }
    if (path && !path[0]) { *missing = 1; return NULL; }
    return path;
}

MPRPCDEF mprpc_status mprpc_config_from_args(mprpc_config *cfg, int argc, char **argv)
{
    const char *prog = (argc > 0 && argv && argv[0]) ? argv[0] : "program";
    const char *path;
    int missing = 0;
    if (!cfg) return MPRPC_ERR_INVALID_ARGUMENT;
    path = argv ? mprpc__config_arg(argc, argv, &missing) : NULL;
    if (!path) {
        mprpc__fmt(cfg->error, sizeof cfg->error, "usage: %s -i <configfile>%s", prog,
                   argv && missing ? " (-i needs a file name)" : "");
        return MPRPC_ERR_CONFIG;
    }
    return mprpc_config_load(cfg, path);
}

/* ======================================================================== */
/* == 4. logger =========================================================== */
/* ======================================================================== */

#include <sys/uio.h> /* writev: the writer's only user */

/* A bounded ring of fixed-size lines. Producers format on their own stack,
 * then copy into the tail slot under the lock; the writer owns the slots in
 * [head, head + count) while it writes them without the lock. */
typedef struct mprpc__log_slot {
    int    level;
    size_t len;
    char   text[MPRPC_LOG_LINE_MAX]; /* terminated, for the sink */
} mprpc__log_slot;

/* level is read by every thread that logs, without the lock, and written by
 * start and stop: only through __atomic loads and stores (relaxed: it is a
 * filter; nothing else is published through it). */
static struct {
    pthread_mutex_t    mu;
    pthread_cond_t     cv;
    int                running;    /* writer thread alive */
    int                stopping;
    int                level;
    mprpc__log_slot   *slots;
    size_t             cap, head, count;
    pthread_t          thread;
    int                fd;         /* today's file, or -1 */
    char               file_day[16];
    char               dir[256];
    int                to_stderr;
    mprpc_log_sink_fn  sink;
    void              *sink_user;
    mprpc_logger_stats stats;
} mprpc__log = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0,
                 MPRPC_LOG_LEVEL_OFF, NULL, 0, 0, 0, 0, -1, "", "", 0, NULL, NULL, {0, 0, 0} };

static const char *const mprpc__level_names[] = { "DEBUG", "INFO", "WARN", "ERROR", "OFF" };

static int mprpc__log_level_get(void)
{
    return __atomic_load_n(&mprpc__log.level, __ATOMIC_RELAXED);
}

static void mprpc__log_level_set(int level)
{
    __atomic_store_n(&mprpc__log.level, level, __ATOMIC_RELAXED);
}

/* Opens the file for today's date, switching at midnight like the seed. A
 * plain descriptor, not stdio: stdio's buffer accepts lines the disk may
 * refuse later, and then nobody can say which lines were lost. */
static int mprpc__log_fd_for_today(char *err, size_t errlen)
{
    char day[16], path[320];
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(day, sizeof day, "%Y-%m-%d", &tm);
    if (mprpc__log.fd >= 0 && strcmp(day, mprpc__log.file_day) == 0) return mprpc__log.fd;
    if (mprpc__log.fd >= 0) close(mprpc__log.fd);
    mprpc__fmt(path, sizeof path, "%s/%s-log.txt", mprpc__log.dir, day);
    mprpc__log.fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0666);
    if (mprpc__log.fd < 0) {
        mprpc__fmt(err, errlen, "cannot open log file %s: %s", path, strerror(errno));
        return -1;
    }
    mprpc__copy_str(mprpc__log.file_day, sizeof mprpc__log.file_day, day);
    return mprpc__log.fd;
}

/* Lines per writev: two iovecs each (text, newline), well under IOV_MAX. */
#define MPRPC__LOG_GROUP 32

/* writev until the whole group is written or the kernel refuses; a short
 * write goes on where it stopped. Returns the lines written whole: a line
 * cut by a failure counts as failed. */
static size_t mprpc__log_writev(int fd, struct iovec *iov, int cnt)
{
    size_t lines = 0;
    int i = 0;
    while (i < cnt) {
        ssize_t k = writev(fd, iov + i, cnt - i);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) break;
        for (; i < cnt && (size_t)k >= iov[i].iov_len; i++) {
            k -= (ssize_t)iov[i].iov_len;
            if (i % 2 == 1) lines++; /* its newline is written: the line is whole */
        }
        if (i < cnt) {
            iov[i].iov_base = (char *)iov[i].iov_base + k;
            iov[i].iov_len -= (size_t)k;
        }
    }
    return lines;
}

/* Slots [head, head + n) of the ring (n <= MPRPC__LOG_GROUP) into the file. */
static size_t mprpc__log_write_group(int fd, size_t head, size_t n)
{
    struct iovec iov[2 * MPRPC__LOG_GROUP];
    static char newline[] = "\n";
    size_t i;
    for (i = 0; i < n; i++) {
        mprpc__log_slot *s = &mprpc__log.slots[(head + i) % mprpc__log.cap];
        iov[2 * i].iov_base = s->text;
        iov[2 * i].iov_len = s->len;
        iov[2 * i + 1].iov_base = newline;
        iov[2 * i + 1].iov_len = 1;
    }
    return mprpc__log_writev(fd, iov, (int)(2 * n));
}

/* Runs on the writer thread without the lock. With a file, "written" counts
 * only the lines the kernel accepted; without one, the lines handed to
 * stderr and the sink. */
static void mprpc__log_write_batch(size_t head, size_t n)
{
    size_t i, filed = 0;
    int fd = mprpc__log.dir[0] ? mprpc__log_fd_for_today(NULL, 0) : -1;
    for (i = 0; fd >= 0 && i < n; i += MPRPC__LOG_GROUP)
        filed += mprpc__log_write_group(fd, head + i, n - i < MPRPC__LOG_GROUP ? n - i : MPRPC__LOG_GROUP);
    for (i = 0; i < n; i++) {
        const mprpc__log_slot *s = &mprpc__log.slots[(head + i) % mprpc__log.cap];
        if (mprpc__log.to_stderr) fprintf(stderr, "%.*s\n", (int)s->len, s->text);
        if (mprpc__log.sink) mprpc__log.sink((mprpc_log_level)s->level, s->text, mprpc__log.sink_user);
    }
    pthread_mutex_lock(&mprpc__log.mu);
    if (!mprpc__log.dir[0]) filed = n;
    mprpc__log.stats.written += filed;
    mprpc__log.stats.write_errors += n - filed;
    pthread_mutex_unlock(&mprpc__log.mu);
}

static void *mprpc__log_writer(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&mprpc__log.mu);
    for (;;) {
        size_t head, n;
        while (mprpc__log.count == 0 && !mprpc__log.stopping)
            pthread_cond_wait(&mprpc__log.cv, &mprpc__log.mu);
        if (mprpc__log.count == 0) break; /* stopping and drained */
        head = mprpc__log.head;
        n = mprpc__log.count;
        pthread_mutex_unlock(&mprpc__log.mu);
        mprpc__log_write_batch(head, n);
        pthread_mutex_lock(&mprpc__log.mu);
        mprpc__log.head = (head + n) % mprpc__log.cap;
        mprpc__log.count -= n;
    }
    pthread_mutex_unlock(&mprpc__log.mu);
    return NULL;
}

MPRPCDEF void mprpc_logger_set_sink(mprpc_log_sink_fn fn, void *user)
{
    pthread_mutex_lock(&mprpc__log.mu);
    mprpc__log.sink = fn;
    mprpc__log.sink_user = user;
    pthread_mutex_unlock(&mprpc__log.mu);
}

MPRPCDEF mprpc_status mprpc_logger_start(mprpc_config *cfg)
{
    mprpc__log_slot *slots;
    mprpc_status st = cfg ? mprpc_config_validate(cfg) : MPRPC_ERR_INVALID_ARGUMENT;
    if (st != MPRPC_OK) return st; /* why: cfg->error */
    pthread_mutex_lock(&mprpc__log.mu);
    if (mprpc__log.running) {
        pthread_mutex_unlock(&mprpc__log.mu);
        mprpc__fmt(cfg->error, sizeof cfg->error, "logger already started");
        return MPRPC_ERR_INVALID_ARGUMENT;
    }
    slots = (mprpc__log_slot *)MPRPC_MALLOC((size_t)cfg->log_queue_size * sizeof *slots);
    if (!slots) {
        pthread_mutex_unlock(&mprpc__log.mu);
        mprpc__fmt(cfg->error, sizeof cfg->error, "no memory for %d log slots", cfg->log_queue_size);
        return MPRPC_ERR_NO_MEMORY;
    }
    mprpc__copy_str(mprpc__log.dir, sizeof mprpc__log.dir, cfg->log_dir);
    mprpc__log.file_day[0] = '\0';
    if (mprpc__log.dir[0] && mprpc__log_fd_for_today(cfg->error, sizeof cfg->error) < 0) {
        mprpc__log.dir[0] = '\0';
        pthread_mutex_unlock(&mprpc__log.mu);
        MPRPC_FREE(slots);
        return MPRPC_ERR_IO;
    }
    mprpc__log.slots = slots;
    mprpc__log.cap = (size_t)cfg->log_queue_size;
    mprpc__log.head = mprpc__log.count = 0;
    mprpc__log.to_stderr = cfg->log_stderr;
    mprpc__log.stopping = 0;
    memset(&mprpc__log.stats, 0, sizeof mprpc__log.stats);
    if (mprpc__thread_start(&mprpc__log.thread, mprpc__log_writer, NULL) != 0) {
        if (mprpc__log.fd >= 0) close(mprpc__log.fd);
        mprpc__log.fd = -1;
        mprpc__log.slots = NULL;
        pthread_mutex_unlock(&mprpc__log.mu);
        MPRPC_FREE(slots);
        mprpc__fmt(cfg->error, sizeof cfg->error, "cannot start the log writer thread");
        return MPRPC_ERR_IO;
    }
    mprpc__log.running = 1;
    mprpc__log_level_set(cfg->log_level);
    pthread_mutex_unlock(&mprpc__log.mu);
    return MPRPC_OK;
}

MPRPCDEF void mprpc_logger_stop(void)
{
    pthread_mutex_lock(&mprpc__log.mu);
    if (!mprpc__log.running) {
        pthread_mutex_unlock(&mprpc__log.mu);
        return;
    }
    mprpc__log_level_set(MPRPC_LOG_LEVEL_OFF);
    mprpc__log.stopping = 1;
    pthread_cond_signal(&mprpc__log.cv);
    pthread_mutex_unlock(&mprpc__log.mu);
    pthread_join(mprpc__log.thread, NULL);
    pthread_mutex_lock(&mprpc__log.mu);
    if (mprpc__log.fd >= 0) close(mprpc__log.fd);
    mprpc__log.fd = -1;
    MPRPC_FREE(mprpc__log.slots);
    mprpc__log.slots = NULL;
    mprpc__log.running = 0;
    pthread_mutex_unlock(&mprpc__log.mu);
}

MPRPCDEF void mprpc_logger_get_stats(mprpc_logger_stats *out)
{
    pthread_mutex_lock(&mprpc__log.mu);
    *out = mprpc__log.stats;
    pthread_mutex_unlock(&mprpc__log.mu);
}

MPRPCDEF int mprpc_log_enabled(mprpc_log_level level)
{
    return level < MPRPC_LOG_LEVEL_OFF && (int)level >= mprpc__log_level_get();
}

/* "2026-11-25 13:45:01.123 4711 INFO server.c:42 text" */
static size_t mprpc__log_format(char *buf, size_t cap, mprpc_log_level level, const char *file,
                                int line, const char *fmt, va_list ap)
{
    struct timespec ts;
    struct tm tm;
    time_t secs;
    const char *base = strrchr(file, '/');
    int n, m;
    clock_gettime(CLOCK_REALTIME, &ts);
    secs = ts.tv_sec;
    localtime_r(&secs, &tm);
    n = snprintf(buf, cap, "%04d-%02d-%02d %02d:%02d:%02d.%03ld %ld %s %s:%d ",
                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                 tm.tm_sec, (long)(ts.tv_nsec / 1000000), (long)syscall(SYS_gettid),
                 mprpc__level_names[level], base ? base + 1 : file, line);
    if (n < 0) return 0;
    if ((size_t)n >= cap) return cap - 1;
    m = vsnprintf(buf + n, cap - (size_t)n, fmt, ap);
    if (m < 0) return (size_t)n;
    return (size_t)n + (size_t)m >= cap ? cap - 1 : (size_t)(n + m);
}

/* Every byte outside printable ASCII, and the backslash, becomes \xNN. Wire
 * bytes reach the log (a service name a peer sent, through "%s"): a newline
 * there would start a line of its own that looks like the library's, and
 * terminal escapes would act on whoever reads the log. Stops before an
 * escape that does not fit whole; out is terminated. Returns its length. */
static size_t mprpc__log_escape(const char *in, size_t n, char *out, size_t cap)
{
    static const char hex[] = "0123456789abcdef";
    size_t i, o = 0;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c >= 0x20 && c < 0x7f && c != '\\') {
            if (o + 1 >= cap) break;
            out[o++] = (char)c;
            continue;
        }
        if (o + 4 >= cap) break;
        out[o++] = '\\';
        out[o++] = 'x';
        out[o++] = hex[c >> 4];
        out[o++] = hex[c & 15];
    }
    out[o] = '\0';
    return o;
}

MPRPCDEF void mprpc_log(mprpc_log_level level, const char *file, int line, const char *fmt, ...)
{
    char raw[MPRPC_LOG_LINE_MAX], text[MPRPC_LOG_LINE_MAX];
    size_t len;
    va_list ap;
    if (!mprpc_log_enabled(level)) return;
    va_start(ap, fmt);
    len = mprpc__log_format(raw, sizeof raw, level, file ? file : "?", line, fmt, ap);
    va_end(ap);
    len = mprpc__log_escape(raw, len, text, sizeof text);
    pthread_mutex_lock(&mprpc__log.mu);
    if (!mprpc__log.running || mprpc__log.stopping) {
        pthread_mutex_unlock(&mprpc__log.mu);
        return;
    }
    if (mprpc__log.count == mprpc__log.cap) {
        mprpc__log.stats.dropped++;
    } else {
        mprpc__log_slot *s = &mprpc__log.slots[(mprpc__log.head + mprpc__log.count) % mprpc__log.cap];
        s->level = (int)level;
        s->len = len;
        memcpy(s->text, text, len + 1);
        mprpc__log.count++;
        pthread_cond_signal(&mprpc__log.cv);
    }
    pthread_mutex_unlock(&mprpc__log.mu);
}

/* ======================================================================== */
/* == 5. controller ======================================================= */
/* ======================================================================== */

MPRPCDEF void mprpc_controller_init(mprpc_controller *ctl)
{
    memset(ctl, 0, sizeof *ctl);
}

MPRPCDEF void mprpc_controller_reset(mprpc_controller *ctl)
{
    ctl->status = MPRPC_OK;
    ctl->may_have_run = 0;
    ctl->error_text[0] = '\0';
}

MPRPCDEF int mprpc_controller_may_have_run(const mprpc_controller *ctl)
{
    return ctl->status == MPRPC_OK || ctl->may_have_run != 0;
}

MPRPCDEF int mprpc_controller_failed(const mprpc_controller *ctl)
{
    return ctl->status != MPRPC_OK;
}

MPRPCDEF const char *mprpc_controller_error_text(const mprpc_controller *ctl)
{
    return ctl->error_text;
}

MPRPCDEF void mprpc_controller_set_failed(mprpc_controller *ctl, mprpc_status status,
                                          const char *fmt, ...)
{
    va_list ap;
    ctl->status = status;
    va_start(ap, fmt);
    mprpc__vfmt(ctl->error_text, sizeof ctl->error_text, fmt, ap);
    va_end(ap);
}

/* ======================================================================== */
/* == 6. wire: buffers, framing, headers ================================== */
/* ======================================================================== */

PB_BIND(mprpc_RpcHeader, mprpc_RpcHeader, 2)
PB_BIND(mprpc_RpcResponseHeader, mprpc_RpcResponseHeader, 2)

MPRPCDEF void mprpc_buf_init(mprpc_buf *b)
{
    memset(b, 0, sizeof *b);
}

MPRPCDEF void mprpc_buf_free(mprpc_buf *b)
{
    MPRPC_FREE(b->data);
    memset(b, 0, sizeof *b);
}

MPRPCDEF mprpc_status mprpc_buf_reserve(mprpc_buf *b, size_t n, size_t max)
{
    size_t need, cap;
    uint8_t *p;
    if (b->cap - b->len >= n) return MPRPC_OK;
    if (b->pos > 0) { /* slide unread bytes to the front before growing */
        memmove(b->data, b->data + b->pos, b->len - b->pos);
        b->len -= b->pos;
        b->pos = 0;
        if (b->cap - b->len >= n) return MPRPC_OK;
    }
    if (n > max || b->len > max - n) return MPRPC_ERR_TOO_LARGE;
    need = b->len + n;
    cap = b->cap ? b->cap : 256;
    while (cap < need) cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    if (cap > max) cap = max;
    p = (uint8_t *)MPRPC_REALLOC(b->data, cap);
    if (!p) return MPRPC_ERR_NO_MEMORY;
    b->data = p;
    b->cap = cap;
    return MPRPC_OK;
}

MPRPCDEF mprpc_status mprpc_buf_append(mprpc_buf *b, const void *p, size_t n, size_t max)
{
    mprpc_status st = mprpc_buf_reserve(b, n, max);
    if (st != MPRPC_OK) return st;
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    return MPRPC_OK;
}

MPRPCDEF void mprpc_buf_consume(mprpc_buf *b, size_t n)
{
    b->pos += n;
    if (b->pos >= b->len) b->pos = b->len = 0;
}

/* The length prefix is little-endian on every CPU, written byte by byte. */
static void mprpc__put_u32le(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static uint32_t mprpc__get_u32le(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* The pb_callback_t of the field under the iterator, if it is one nanopb's default field callback
 * serves (not in a oneof): the fields whose missing decoder the provider (7) and the caller (8) guard. */
static pb_callback_t *mprpc__plain_callback(const pb_field_iter_t *it)
{
    if (PB_ATYPE(it->type) != PB_ATYPE_CALLBACK || PB_HTYPE(it->type) == PB_HTYPE_ONEOF) return NULL;
    if (it->descriptor->field_callback != pb_default_field_callback) return NULL;
    return it->data_size == sizeof(pb_callback_t) ? (pb_callback_t *)it->pData : NULL;
}

/* The largest frame a peer may make us buffer (saturating: a wire-API caller
 * may pass SIZE_MAX as "no limit", which must not wrap to a tiny bound). */
static size_t mprpc__max_frame(size_t max_message_size)
{
    if (max_message_size > SIZE_MAX - MPRPC_FRAME_PREFIX - MPRPC_MAX_HEADER_SIZE) return SIZE_MAX;
    return MPRPC_FRAME_PREFIX + MPRPC_MAX_HEADER_SIZE + max_message_size;
}

/* Appends prefix + encoded header + encoded body (msg may be NULL: no body). */
static mprpc_status mprpc__append_frame(mprpc_buf *out, size_t max_message_size,
                                        const uint8_t *henc, size_t hlen,
                                        const pb_msgdesc_t *fields, const void *msg, size_t blen)
{
    pb_ostream_t os;
    mprpc_status st;
    st = mprpc_buf_reserve(out, MPRPC_FRAME_PREFIX + hlen + blen,
                           out->len - out->pos + mprpc__max_frame(max_message_size));
    if (st != MPRPC_OK) return st;
    mprpc__put_u32le(out->data + out->len, (uint32_t)hlen);
    memcpy(out->data + out->len + MPRPC_FRAME_PREFIX, henc, hlen);
    if (msg && blen) {
        os = pb_ostream_from_buffer(out->data + out->len + MPRPC_FRAME_PREFIX + hlen, blen);
        if (!pb_encode(&os, fields, msg) || os.bytes_written != blen) return MPRPC_ERR_ENCODE;
    }
    out->len += MPRPC_FRAME_PREFIX + hlen + blen;
    return MPRPC_OK;
}

static mprpc_status mprpc__body_size(size_t max_message_size, const pb_msgdesc_t *fields,
                                     const void *msg, size_t *size)
{
    *size = 0;
    if (!msg) return MPRPC_OK;
    if (!pb_get_encoded_size(size, fields, msg)) return MPRPC_ERR_ENCODE;
    /* args_size/body_size are uint32 on the wire: a bigger body cannot be framed */
    return *size > max_message_size || *size > UINT32_MAX ? MPRPC_ERR_TOO_LARGE : MPRPC_OK;
}

static int mprpc__set_name(pb_byte_t *dst, pb_size_t *dlen, size_t cap, const char *s)
{
    size_t n = strlen(s);
    if (n > cap) return 0;
    memcpy(dst, s, n);
    *dlen = (pb_size_t)n;
    return 1;
}

MPRPCDEF mprpc_status mprpc_wire_encode_request_meta(mprpc_buf *out, size_t max_message_size,
                                                     const mprpc_request_meta *m,
                                                     const pb_msgdesc_t *fields, const void *msg)
{
    mprpc_RpcHeader h;
    uint8_t henc[mprpc_RpcHeader_size];
    pb_ostream_t os = pb_ostream_from_buffer(henc, sizeof henc);
    size_t blen;
    mprpc_status st;
    if (!out || !m || !m->service || !m->method || !fields || !msg) return MPRPC_ERR_INVALID_ARGUMENT;
    memset(&h, 0, sizeof h);
    if (!mprpc__set_name(h.service_name.bytes, &h.service_name.size, sizeof h.service_name.bytes, m->service) ||
        !mprpc__set_name(h.method_name.bytes, &h.method_name.size, sizeof h.method_name.bytes, m->method))
        return MPRPC_ERR_INVALID_ARGUMENT;
    st = mprpc__body_size(max_message_size, fields, msg, &blen);
    if (st != MPRPC_OK) return st;
    h.args_size = (uint32_t)blen;
    if (m->version != 0) { /* a seed provider knows fields 1-3 only; it skips the rest, but sends none */
        h.call_id = m->call_id;
        h.version = m->version;
        h.timeout_ms = m->timeout_ms;
    }
    if (!pb_encode(&os, mprpc_RpcHeader_fields, &h)) return MPRPC_ERR_ENCODE;
    return mprpc__append_frame(out, max_message_size, henc,
                               os.bytes_written, fields, msg, blen);
}

MPRPCDEF mprpc_status mprpc_wire_encode_request(mprpc_buf *out, size_t max_message_size,
                                                uint64_t call_id, const char *service,
                                                const char *method, const pb_msgdesc_t *fields,
                                                const void *msg)
{
    mprpc_request_meta m;
    memset(&m, 0, sizeof m);
    m.service = service;
    m.method = method;
    m.call_id = call_id;
    m.version = MPRPC_PROTOCOL_VERSION;
    return mprpc_wire_encode_request_meta(out, max_message_size, &m, fields, msg);
}

MPRPCDEF mprpc_status mprpc_wire_encode_response(mprpc_buf *out, size_t max_message_size,
                                                 uint64_t call_id, int status,
                                                 const char *error_text,
                                                 const pb_msgdesc_t *fields, const void *msg)
{
    mprpc_RpcResponseHeader h;
    uint8_t henc[mprpc_RpcResponseHeader_size];
    pb_ostream_t os = pb_ostream_from_buffer(henc, sizeof henc);
    size_t blen = 0, tlen;
    mprpc_status st;
    if (!out || (msg && !fields)) return MPRPC_ERR_INVALID_ARGUMENT;
    memset(&h, 0, sizeof h);
    st = mprpc__body_size(max_message_size, fields, msg, &blen);
    if (st != MPRPC_OK) return st;
    h.call_id = call_id;
    h.status = status;
    h.body_size = (uint32_t)blen;
    if (error_text) { /* truncated to the header's bound rather than failing */
        tlen = strlen(error_text);
        if (tlen > sizeof h.error_text.bytes) tlen = sizeof h.error_text.bytes;
        memcpy(h.error_text.bytes, error_text, tlen);
        h.error_text.size = (pb_size_t)tlen;
    }
    if (!pb_encode(&os, mprpc_RpcResponseHeader_fields, &h)) return MPRPC_ERR_ENCODE;
    return mprpc__append_frame(out, max_message_size, henc,
                               os.bytes_written, fields, msg, blen);
}

/* Both frame kinds: u32le prefix, a bounded protobuf header decoded into hdr,
 * then the body whose size the header announces in *body_size (a field of
 * hdr, filled by the decode). */
static mprpc_status mprpc__decode_frame(const uint8_t *data, size_t len, size_t max_message_size,
                                        const pb_msgdesc_t *fields, void *hdr,
                                        const uint32_t *body_size, const uint8_t **body,
                                        size_t *frame_size)
{
    pb_istream_t is;
    size_t hlen;
    if (len < MPRPC_FRAME_PREFIX) return MPRPC_AGAIN;
    hlen = mprpc__get_u32le(data);
    if (hlen > MPRPC_MAX_HEADER_SIZE) return MPRPC_ERR_PROTOCOL;
    if (len - MPRPC_FRAME_PREFIX < hlen) return MPRPC_AGAIN;
    is = pb_istream_from_buffer(data + MPRPC_FRAME_PREFIX, hlen);
    if (!pb_decode(&is, fields, hdr)) return MPRPC_ERR_PROTOCOL;
    if (*body_size > max_message_size) return MPRPC_ERR_TOO_LARGE;
    if (len - MPRPC_FRAME_PREFIX - hlen < *body_size) return MPRPC_AGAIN;
    *body = data + MPRPC_FRAME_PREFIX + hlen;
    *frame_size = MPRPC_FRAME_PREFIX + hlen + *body_size;
    return MPRPC_OK;
}

MPRPCDEF mprpc_status mprpc_wire_decode_request(const uint8_t *data, size_t len,
                                                size_t max_message_size,
                                                mprpc_request_frame *frame)
{
    memset(frame, 0, sizeof *frame);
    return mprpc__decode_frame(data, len, max_message_size, mprpc_RpcHeader_fields, &frame->header,
                               &frame->header.args_size, &frame->body, &frame->frame_size);
}

MPRPCDEF mprpc_status mprpc_wire_decode_response(const uint8_t *data, size_t len,
                                                 size_t max_message_size,
                                                 mprpc_response_frame *frame)
{
    memset(frame, 0, sizeof *frame);
    return mprpc__decode_frame(data, len, max_message_size, mprpc_RpcResponseHeader_fields,
                               &frame->header, &frame->header.body_size, &frame->body,
                               &frame->frame_size);
}

/* Zero-copy: mprpc always decodes from a contiguous buffer, so the stream's
 * state is the read pointer (nanopb's buffer stream keeps it there). */
MPRPCDEF bool mprpc_bytes_decode(pb_istream_t *stream, const pb_field_t *field, void **arg)
{
    mprpc_bytes *b = (mprpc_bytes *)*arg;
    (void)field;
    if (b) {
        b->data = (const uint8_t *)stream->state;
        b->size = stream->bytes_left;
    }
    return pb_read(stream, NULL, stream->bytes_left);
}

MPRPCDEF bool mprpc_bytes_encode(pb_ostream_t *stream, const pb_field_t *field, void *const *arg)
{
    const mprpc_bytes *b = (const mprpc_bytes *)*arg;
    if (!b || b->size == 0) return true; /* proto3: empty bytes are not sent */
    return pb_encode_tag_for_field(stream, field) && pb_encode_string(stream, b->data, b->size);
}

MPRPCDEF bool mprpc_bytes_copy_decode(pb_istream_t *stream, const pb_field_t *field, void **arg)
{
    mprpc_bytes_sink *s = (mprpc_bytes_sink *)*arg;
    size_t n = stream->bytes_left;
    (void)field;
    if (!s) return pb_read(stream, NULL, n);
    if (n > s->capacity) PB_RETURN_ERROR(stream, "bytes larger than the sink");
    s->size = n;
    return pb_read(stream, s->data, n);
}

/* ---- the nanopb runtime's field-size options against this pb.h ---- */

/* RpcHeader{service_name "ab", args_size 7, call_id 1} as protobuf encodes it. */
static const uint8_t mprpc__probe_bytes[] = { 0x0a, 0x02, 0x61, 0x62, 0x18, 0x07, 0x20, 0x01 };

/* 1 when the library encodes and decodes the probe as this file's pb.h lays it out. */
static int mprpc__nanopb_agrees(uint8_t *got, size_t cap, size_t *got_len)
{
    mprpc_RpcHeader h, d;
    pb_ostream_t os = pb_ostream_from_buffer(got, cap);
    pb_istream_t is = pb_istream_from_buffer(mprpc__probe_bytes, sizeof mprpc__probe_bytes);
    memset(&h, 0, sizeof h);
    memset(&d, 0, sizeof d);
    memcpy(h.service_name.bytes, "ab", 2);
    h.service_name.size = 2;
    h.args_size = 7;
    h.call_id = 1;
    *got_len = 0;
    if (!pb_encode(&os, mprpc_RpcHeader_fields, &h)) return 0;
    *got_len = os.bytes_written;
    if (os.bytes_written != sizeof mprpc__probe_bytes ||
        memcmp(got, mprpc__probe_bytes, sizeof mprpc__probe_bytes) != 0) return 0;
    return pb_decode(&is, mprpc_RpcHeader_fields, &d) && d.service_name.size == 2 &&
           memcmp(d.service_name.bytes, "ab", 2) == 0 && d.args_size == 7 && d.call_id == 1;
}

static void mprpc__nanopb_explain(char *text, size_t cap, const uint8_t *got, size_t n)
{
    char hex[3 * 16 + 1] = "";
    size_t i;
    for (i = 0; i < n && i < 16; i++) mprpc__fmt(hex + 3 * i, sizeof hex - 3 * i, " %02x", got[i]);
    mprpc__fmt(text, cap,
               "the nanopb runtime (libprotobuf-nanopb) was built with other field-size options than "
               "this program's pb.h, which has %s (pb_size_t of %u bytes): a test header encoded to%s "
               "(%u bytes) instead of 0a 02 61 62 18 07 20 01, so messages would lose data. Build the "
               "nanopb runtime from source with the same options (PB_FIELD_32BIT), or compile without "
               "PB_FIELD_32BIT: keep fixed-size fields under 64 KiB (max_size 65535 or less) and make "
               "larger ones callback fields (FT_CALLBACK with mprpc_bytes)",
               sizeof(pb_size_t) > 2 ? "PB_FIELD_32BIT" : "no PB_FIELD_32BIT",
               (unsigned)sizeof(pb_size_t), n ? hex : " nothing", (unsigned)n);
}

MPRPCDEF mprpc_status mprpc_wire_check_nanopb(char *text, size_t cap)
{
    static int verdict; /* 0 unknown, 1 agrees, 2 differs; racing first calls compute the same */
    uint8_t got[64];
    size_t n = 0;
    int v = __atomic_load_n(&verdict, __ATOMIC_ACQUIRE);
    if (v == 0) {
        v = mprpc__nanopb_agrees(got, sizeof got, &n) ? 1 : 2;
        __atomic_store_n(&verdict, v, __ATOMIC_RELEASE);
    }
    if (text && cap) text[0] = '\0';
    if (v == 1) return MPRPC_OK;
    if (text && cap) {
        if (n == 0) mprpc__nanopb_agrees(got, sizeof got, &n); /* cached verdict: bytes again */
        mprpc__nanopb_explain(text, cap, got, n);
    }
    return MPRPC_ERR_UNSUPPORTED;
}

/* For mprpc_server_new and mprpc_channel_new: the reason to the log (or to stderr while the
 * logger is not running, since this is a build mistake nobody would see otherwise). */
static mprpc_status mprpc__nanopb_check(const char *who)
{
    char text[640];
    if (mprpc_wire_check_nanopb(text, sizeof text) == MPRPC_OK) return MPRPC_OK;
    if (mprpc_log_enabled(MPRPC_LOG_LEVEL_ERROR)) MPRPC_LOG_ERROR("%s: %s", who, text);
    else fprintf(stderr, "%s: %s\n", who, text);
    return MPRPC_ERR_UNSUPPORTED;
}

/* ======================================================================== */
/* == 7. server: event loop, connections, dispatch ======================== */
/* ======================================================================== */

/* Registry seam (section 9): the server publishes, the channel resolves. A wait
 * inside the registry is bounded by the absolute deadline it is given
 * (mprpc__now_ms clock); no lock of the caller's is held across one. */
typedef struct mprpc__registry mprpc__registry;
typedef struct mprpc__addrs { /* a provider list ("ip:port" each) owned by the caller */
    char (*v)[MPRPC_ADDR_MAX];
    size_t n, cap;
} mprpc__addrs;
static void mprpc__addrs_free(mprpc__addrs *a);
static int mprpc__seed_publish(const mprpc_config *cfg);
static int mprpc__addrs_set(mprpc__addrs *a, char (*v)[MPRPC_ADDR_MAX], size_t n);
static int mprpc__registry_wanted(const mprpc_config *cfg);
static mprpc_status mprpc__registry_open(mprpc__registry **out, const mprpc_config *cfg,
                                         char *err, size_t errlen);
static void mprpc__registry_close(mprpc__registry *r);
static mprpc_status mprpc__registry_publish(mprpc__registry *r, const char *service,
                                            const char *addr, const char *const *methods,
                                            size_t method_count, char *err, size_t errlen);
/* *gen is the caller's generation of this list (0 at first). When the registry
 * holds a newer one, it is copied into *out (no cap; grown with MPRPC_REALLOC)
 * and *gen updated; otherwise *out is left alone. An empty list gives
 * MPRPC_ERR_UNAVAILABLE; the deadline passing first, MPRPC_ERR_TIMEOUT. */
static mprpc_status mprpc__registry_resolve(mprpc__registry *r, const char *service,
                                            const char *method, uint64_t deadline_ms,
                                            uint64_t *gen, mprpc__addrs *out, char *err,
                                            size_t errlen);

/* Footprint knob (docs/FOOTPRINT.md): MPRPC_READ_CHUNK bytes is each loop's
 * receive buffer, allocated once per loop; one read per wake-up, so it also
 * bounds the work per event. Frames larger than it still arrive whole (they
 * collect in the connection's own buffer). Small providers can use 4096. */
#ifndef MPRPC_READ_CHUNK
#  define MPRPC_READ_CHUNK (64 * 1024)
#endif
#if MPRPC_READ_CHUNK < 256
#  error "mprpc.h: MPRPC_READ_CHUNK must be at least 256 bytes"
#endif
#define MPRPC__READ_CHUNK       ((size_t)(MPRPC_READ_CHUNK))
#define MPRPC__ACCEPTS_PER_WAKE 64
#define MPRPC__KEEP_BUF         (64 * 1024) /* larger empty buffers are given back at the next sweep */
#define MPRPC__CALL_POOL_MAX    64    /* idle call objects a loop keeps; the rest are freed */
#define MPRPC__REFUSED_MAX      64    /* connections held open at once only to refuse requests */
#define MPRPC__BUSY_GRACE_MS    500   /* an over-limit connection is answered BUSY this long */
#define MPRPC__DRAIN_QUIET_MS   250   /* a stopping connection closes after this long without a request */
#define MPRPC__LINGER_MS        1000  /* after shutdown(SHUT_WR), wait this long for the peer's EOF */
#define MPRPC__LINGER_BYTES     (1u << 20) /* ... or until it sent this much more */
#define MPRPC__ACCEPT_PAUSE_MS  100   /* out of descriptors: how long accepting pauses */

#define MPRPC__ADD(p, v) __atomic_add_fetch((p), (v), __ATOMIC_RELAXED)
#define MPRPC__LOAD(p)   __atomic_load_n((p), __ATOMIC_RELAXED)
/* A counter only its loop writes (the admin stats): a relaxed load and store, no locked add; readers
 * on other threads sum them with MPRPC__LOAD. */
#define MPRPC__BUMP(p, v) __atomic_store_n((p), __atomic_load_n((p), __ATOMIC_RELAXED) + (v), __ATOMIC_RELAXED)

/* One method's counters on one loop (7i): written by that loop only, summed over the loops on read. */
#define MPRPC__LAT_BUCKETS 24 /* bucket i < 23: latency below 2^i us; the last: longer (over ~4.2 s) */
typedef struct mprpc__mstats {
    uint64_t calls, request_bytes, response_bytes, latency_sum_us;
    uint64_t by_status[MPRPC_STATUS_COUNT];
    uint64_t latency[MPRPC__LAT_BUCKETS];
} mprpc__mstats;

typedef struct mprpc__loop mprpc__loop;
typedef struct mprpc__conn mprpc__conn;

/* A connection is in exactly one of these states. Event handlers only record
 * facts (bytes arrived, the peer shut its side, a send failed); the state
 * changes in mprpc__conn_settle, the one function that turns facts into
 * consequences (epoll interest, pausing, shutting down, closing). */
typedef enum mprpc__conn_state {
    MPRPC__CONN_SERVING,   /* reads requests and runs them */
    MPRPC__CONN_REFUSING,  /* reads requests and answers each with refuse_status (BUSY: over
                              max_connections; SHUTDOWN: the server stops; TLS: plaintext caller of a
                              TLS provider) without running it */
    MPRPC__CONN_FINISHING, /* takes no new request; answers what it took, then shuts its write side */
    MPRPC__CONN_LINGERING, /* write side shut; reads and discards until EOF or a bound, so that
                              the close sends no RST while the peer may still read answers */
    MPRPC__CONN_CLOSED     /* descriptor closed; the struct waits for its deferred calls */
} mprpc__conn_state;

struct mprpc__conn {
    int               fd;
    mprpc__conn_state state;
    mprpc__loop      *loop;
    mprpc__conn      *prev, *next;     /* the loop's open list, or its dead list */
    mprpc_buf         in;              /* requests not yet served: partial, or paused */
    mprpc_buf         out;             /* encoded replies the socket has not taken yet */
    uint64_t          in_read_ms;      /* when the newest bytes of `in` arrived */
    size_t            in_before_stop;  /* leading bytes of `in` read before the stop: served */
    uint64_t          last_active_ms;
    uint64_t          partial_since_ms; /* 0, or when an unfinished frame began waiting */
    uint64_t          until_ms;        /* REFUSING: close after; LINGERING: give up on EOF after */
    size_t            lingered;        /* bytes discarded while lingering */
    int               refuse_status;   /* MPRPC_ERR_BUSY, MPRPC_ERR_SHUTDOWN, or MPRPC_ERR_TLS (a plaintext
                                          caller of a TLS provider) */
    int               inflight;        /* deferred calls not yet finished */
    uint32_t          events;          /* current epoll interest */
    size_t            accounted;       /* in.cap + out.cap as counted in stats.buffer_bytes */
    unsigned          peer_eof : 1;    /* fact: the peer shut its sending side */
    unsigned          failed : 1;      /* fact: the socket failed (reset, error): close at once */
    unsigned          counted_open : 1;/* counted in open_conns (not a refused connection) */
    unsigned          handshaking : 1; /* TLS: the handshake is not done; nothing is served */
    unsigned          tls_checked : 1; /* TLS: the first bytes were a TLS record (not plaintext) */
    unsigned          rd_crossed : 1;  /* TLS: the last read waits for the socket to be writable */
    unsigned          wr_crossed : 1;  /* TLS: the last write waits for the socket to be readable */
    mprpc__tls       *tls;             /* NULL: plain TCP; freed with the struct (calls read its peer) */
    uint32_t          hs_want;         /* handshaking: EPOLLIN or EPOLLOUT */
    uint64_t          hs_deadline_ms;  /* handshaking: tls_handshake_timeout_ms after the accept */
};

/* A call's own state, changed atomically: a deferred call is finished by any
 * thread, and abandoned by its loop when drain_timeout_ms passes. */
enum {
    MPRPC__CALL_RUNNING,   /* in its handler */
    MPRPC__CALL_DEFERRED,  /* mprpc_call_defer called; mprpc_call_done not yet */
    MPRPC__CALL_POSTED,    /* mprpc_call_done called; the loop will answer it */
    MPRPC__CALL_ABANDONED  /* the server gave up on it; mprpc_call_done frees it */
};

/* One mprpc_call_alloc block: this header, then the bytes, aligned for any type. */
typedef union mprpc__arena_block {
    struct { union mprpc__arena_block *next; size_t size; } h;
    long double ld;
    long long   ll;
    void       *p;
} mprpc__arena_block;

struct mprpc_call {
    mprpc_call          *prev, *next;  /* the loop's free list or its deferred list */
    mprpc_call          *posted_next;  /* the loop's queue of finished deferred calls */
    mprpc__loop         *loop;
    mprpc__conn         *conn;
    const mprpc_service *service;
    const mprpc_method  *method;
    uint64_t             call_id;
    uint64_t             deadline_ms;  /* 0: the caller sent no deadline */
    uint32_t             version;
    int                  state;        /* MPRPC__CALL_*, atomic */
    int                  status;
    char                 error_text[256];
    void                *request;
    void                *response;
    mprpc__arena_block  *arena;        /* mprpc_call_alloc's blocks, newest first */
    size_t               arena_used;   /* bytes handed out; at most arena_max */
    size_t               arena_max;    /* cfg.call_arena_max when the call began */
    uint32_t             arena_refused;
    size_t               slot;         /* the method's admin stats slot (7i) */
    uint64_t             start_us;     /* when it was dispatched (latency, 7i) */
    uint32_t             request_bytes;
    uint32_t             unset_tag;    /* a request callback field that arrived with no decoder */
};

struct mprpc__loop {
    mprpc_server    *srv;
    int              index;
    int              epfd;
    int              wakefd;
    pthread_t        thread;
    int              thread_started;
    pthread_mutex_t  mu;              /* guards incoming, posted, drain_requested */
    mprpc__conn     *incoming;        /* handed over by the acceptor */
    mprpc_call      *posted;          /* finished deferred calls, from any thread */
    int              drain_requested;
    /* loop thread only below */
    mprpc__conn     *conns;
    mprpc__conn     *dead;
    size_t           nconns;
    mprpc_call      *deferred;        /* calls deferred and not yet answered or abandoned */
    mprpc_call      *free_calls;
    int              nfree;
    uint8_t         *rbuf;
    int              draining;
    int              tick_ms;
    uint64_t         drain_deadline_ms;
    uint64_t         next_sweep_ms;
    mprpc_server_stats stats;         /* updated with relaxed atomics */
    mprpc__mstats   *mstats;          /* per method (7i); this loop writes, anyone sums (MPRPC__BUMP) */
    uint64_t         busy_us, bytes_in, bytes_out; /* MPRPC__BUMP as well */
};

/* Request and response structs share one allocation with their call; 16
 * bytes is the strictest alignment a nanopb struct can need (long double). */
static size_t mprpc__align_up(size_t n)
{
    return (n + 15u) & ~(size_t)15u;
}

typedef struct mprpc__route {
    uint64_t             hash;
    const mprpc_service *service;
    const mprpc_method  *method;      /* NULL: the entry names the service itself */
    size_t               slot;        /* a method's admin stats slot: methods in the order added */
    int                  guard;       /* the request has callback fields: mprpc__guard_callbacks */
} mprpc__route;

/* The server's lifecycle: changed under life_mu (and stored atomically, so
 * lock-free readers see it), announced on life_cv. */
enum {
    MPRPC__SRV_NEW,       /* services may be added */
    MPRPC__SRV_STARTING,  /* mprpc_server_start is at work */
    MPRPC__SRV_RUNNING,   /* serving */
    MPRPC__SRV_STOPPING,  /* draining: deregistered, not accepting, answering what it took */
    MPRPC__SRV_STOPPED    /* loops joined, sockets closed; stats still readable */
};

struct mprpc_server {
    mprpc_config          cfg;
    const mprpc_service **services;
    size_t                nservices;
    mprpc__route         *routes;
    size_t                route_mask;
    size_t                call_size;    /* one call object: header + largest request + response */
    mprpc__loop          *loops;        /* kept until mprpc_server_free: their stats outlive the run */
    int                   nloops;
    unsigned              next_loop;    /* acceptor thread only */
    int                   listen_fd;    /* acceptor thread only once started */
    int                   spare_fd;     /* acceptor thread only: given up to shed a connection */
    int                   stop_fd;      /* eventfd written by mprpc_server_stop */
    int                   port;
    mprpc__addr           listen_addr;  /* where it listens, the bound port filled in */
    char                  listen_text[MPRPC_ADDR_MAX + 8];
    int                   unlink_path;  /* it made listen_addr's unix socket file: removed at stop */
    pthread_t             acceptor;
    int                   acceptor_started;
    pthread_mutex_t       life_mu;
    pthread_cond_t        life_cv;
    int                   state;        /* MPRPC__SRV_*, atomic */
    int                   stop_requested; /* atomic: set from signal handlers and other threads */
    int                   runners;      /* threads inside mprpc_server_run (life_mu) */
    uint64_t              open_conns;   /* atomic: connections served (max_connections) */
    uint64_t              refused_conns;/* atomic: connections held only to refuse requests */
    mprpc_server_stats    accept_stats; /* the acceptor's counters, relaxed atomics */
    mprpc__registry      *registry;
    mprpc__tls_ctx       *tls;          /* tls_enable: certificates and policy of every connection */
    char                  error[256];
    mprpc_service         admin;        /* the built-in admin service (7i), when cfg.admin_service */
    size_t                nslots;       /* methods of all services: admin stats slots per loop */
    mprpc__mstats        *mstats;       /* nloops * nslots, kept until mprpc_server_free */
};

/* The admin service's hooks (7i). */
static uint64_t mprpc__now_us(void);
static void mprpc__admin_count(mprpc__loop *l, const mprpc_call *call, int status, size_t response_bytes);
static mprpc_status mprpc__admin_open(mprpc_server *srv);

static void mprpc__srv_fail(mprpc_server *srv, const char *fmt, ...) MPRPC_PRINTF(2, 3);
static void mprpc__srv_fail(mprpc_server *srv, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    mprpc__vfmt(srv->error, sizeof srv->error, fmt, ap);
    va_end(ap);
    MPRPC_LOG_ERROR("%s", srv->error);
}

static int mprpc__srv_state(const mprpc_server *srv)
{
    return __atomic_load_n(&srv->state, __ATOMIC_ACQUIRE);
}

/* ------------------------------------------------------------------------ */
/* -- 7a. routing: (service, method) -> method, one hash probe per request - */
/* ------------------------------------------------------------------------ */

static uint64_t mprpc__hash(const uint8_t *s, size_t n, const uint8_t *m, size_t mn)
{
    uint64_t h = 1469598103934665603ull;
    size_t i;
    for (i = 0; i < n; i++) h = (h ^ s[i]) * 1099511628211ull;
    h = (h ^ 0xffu) * 1099511628211ull; /* separator: "ab"+"c" differs from "a"+"bc" */
    for (i = 0; m && i < mn; i++) h = (h ^ m[i]) * 1099511628211ull;
    return h | 1; /* 0 marks an empty slot */
}

static int mprpc__route_matches(const mprpc__route *r, const uint8_t *s, size_t n,
                                const uint8_t *m, size_t mn)
{
    const char *sn = r->service->name, *mm = r->method ? r->method->name : NULL;
    if (strlen(sn) != n || memcmp(sn, s, n) != 0) return 0;
    if (!m) return mm == NULL;
    return mm && strlen(mm) == mn && memcmp(mm, m, mn) == 0;
}

static const mprpc__route *mprpc__route_find(const mprpc_server *srv, const uint8_t *s, size_t n,
                                             const uint8_t *m, size_t mn)
{
    uint64_t h = mprpc__hash(s, n, m, mn);
    size_t i = (size_t)h & srv->route_mask;
    for (;; i = (i + 1) & srv->route_mask) {
        const mprpc__route *r = &srv->routes[i];
        if (r->hash == 0) return NULL;
        if (r->hash == h && mprpc__route_matches(r, s, n, m, mn)) return r;
    }
}

/* ---- request callback fields left without a decoder ----
 * nanopb skips a callback field whose funcs.decode is NULL, so a request whose bytes field nobody
 * prepared would reach the handler silently empty (a Put that stores 0 bytes). After the prepare hook
 * every such field gets a decoder that refuses; nanopb calls it only when the field is on the wire,
 * so an absent field still decodes. Only the fields nanopb's default field callback serves (a plain
 * pb_callback_t, not in a oneof) are guarded; whether a method needs it is decided once per method. */

static int mprpc__has_callback_fields(const pb_msgdesc_t *fields)
{
    pb_field_iter_t it;
    if (!pb_field_iter_begin(&it, fields, NULL)) return 0;
    do {
        if (PB_ATYPE(it.type) == PB_ATYPE_CALLBACK && it.descriptor->field_callback == pb_default_field_callback)
            return 1;
    } while (pb_field_iter_next(&it));
    return 0;
}

static bool mprpc__refuse_unset(pb_istream_t *stream, const pb_field_t *field, void **arg)
{
    ((mprpc_call *)*arg)->unset_tag = field->tag;
    PB_RETURN_ERROR(stream, "a callback field without a decoder");
}

/* install: the refusing decoder on each field the prepare hook left unset; otherwise take it off
 * again, so the handler sees the fields as prepare left them. */
static void mprpc__guard_callbacks(mprpc_call *call, const pb_msgdesc_t *fields, int install)
{
    pb_field_iter_t it;
    if (!pb_field_iter_begin(&it, fields, call->request)) return;
    do {
        pb_callback_t *cb = mprpc__plain_callback(&it);
        if (!cb) continue;
        if (install && !cb->funcs.decode) {
            cb->funcs.decode = mprpc__refuse_unset;
            cb->arg = call;
        } else if (!install && cb->funcs.decode == mprpc__refuse_unset) {
            cb->funcs.decode = NULL;
            cb->arg = NULL;
        }
    } while (pb_field_iter_next(&it));
}

static void mprpc__route_put(mprpc_server *srv, const mprpc_service *svc, const mprpc_method *m)
{
    const char *mn = m ? m->name : NULL;
    uint64_t h = mprpc__hash((const uint8_t *)svc->name, strlen(svc->name), (const uint8_t *)mn,
                             mn ? strlen(mn) : 0);
    size_t i = (size_t)h & srv->route_mask;
    while (srv->routes[i].hash != 0) i = (i + 1) & srv->route_mask;
    srv->routes[i].hash = h;
    srv->routes[i].service = svc;
    srv->routes[i].method = m;
    if (!m) return;
    srv->routes[i].slot = srv->nslots++;
    srv->routes[i].guard = mprpc__has_callback_fields(m->request_fields);
}

static mprpc_status mprpc__routes_build(mprpc_server *srv)
{
    size_t n = 0, cap = 16, i, j;
    for (i = 0; i < srv->nservices; i++) n += 1 + srv->services[i]->method_count;
    while (cap < 2 * n) cap *= 2; /* load factor <= 1/2 keeps probes short */
    srv->routes = (mprpc__route *)mprpc__zalloc(cap * sizeof *srv->routes);
    if (!srv->routes) return MPRPC_ERR_NO_MEMORY;
    srv->route_mask = cap - 1;
    srv->call_size = mprpc__align_up(sizeof(mprpc_call));
    for (i = 0; i < srv->nservices; i++) {
        const mprpc_service *svc = srv->services[i];
        mprpc__route_put(srv, svc, NULL);
        for (j = 0; j < svc->method_count; j++) {
            const mprpc_method *m = &svc->methods[j];
            size_t need = mprpc__align_up(sizeof(mprpc_call)) + mprpc__align_up(m->request_size) +
                          m->response_size;
            mprpc__route_put(srv, svc, m);
            if (need > srv->call_size) srv->call_size = need;
        }
    }
    return MPRPC_OK;
}

static int mprpc__name_ok(const char *s, size_t max)
{
    return s && s[0] && strlen(s) <= max;
}

/* Why svc cannot be added ("" if it can). */
static int mprpc__service_check(mprpc_server *srv, const mprpc_service *svc)
{
    size_t i, j;
    if (!mprpc__name_ok(svc->name, MPRPC_NAME_MAX) || (svc->method_count && !svc->methods)) {
        mprpc__srv_fail(srv, "add_service: service name missing or over %d bytes", MPRPC_NAME_MAX);
        return 0;
    }
    for (i = 0; i < svc->method_count; i++) {
        const mprpc_method *m = &svc->methods[i];
        if (!mprpc__name_ok(m->name, MPRPC_NAME_MAX) || !m->handler || !m->request_fields ||
            !m->response_fields) {
            mprpc__srv_fail(srv, "add_service '%s': method %zu lacks a name (<= %d bytes), "
                            "handler or field descriptors", svc->name, i, MPRPC_NAME_MAX);
            return 0;
        }
        for (j = 0; j < i; j++)
            if (strcmp(svc->methods[j].name, m->name) == 0) {
                mprpc__srv_fail(srv, "add_service '%s': method '%s' listed twice", svc->name, m->name);
                return 0;
            }
    }
    for (i = 0; i < srv->nservices; i++)
        if (strcmp(srv->services[i]->name, svc->name) == 0) {
            mprpc__srv_fail(srv, "add_service: service '%s' added twice", svc->name);
            return 0;
        }
    return 1;
}

MPRPCDEF mprpc_status mprpc_server_add_service(mprpc_server *srv, const mprpc_service *svc)
{
    const mprpc_service **grown;
    if (!srv || !svc) return MPRPC_ERR_INVALID_ARGUMENT;
    if (mprpc__srv_state(srv) != MPRPC__SRV_NEW) {
        mprpc__srv_fail(srv, "add_service '%s': the server is already started", svc->name);
        return MPRPC_ERR_INVALID_ARGUMENT;
    }
    if (!mprpc__service_check(srv, svc)) return MPRPC_ERR_INVALID_ARGUMENT;
    grown = (const mprpc_service **)MPRPC_REALLOC((void *)srv->services,
                                                  (srv->nservices + 1) * sizeof *grown);
    if (!grown) return MPRPC_ERR_NO_MEMORY;
    srv->services = grown;
    srv->services[srv->nservices++] = svc;
    return MPRPC_OK;
}

/* ------------------------------------------------------------------------ */
/* -- 7b. event loop: the epoll backend and the cross-thread hand-offs ----- */
/* ------------------------------------------------------------------------ */

/* Every epoll call of the server goes through these (as redis's ae_epoll.c);
 * each result is checked by its caller. */
static int mprpc__ep_ctl(mprpc__loop *l, int op, int fd, uint32_t events, void *ptr)
{
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = events;
    ev.data.ptr = ptr;
    return epoll_ctl(l->epfd, op, fd, &ev);
}

static int mprpc__ep_add(mprpc__loop *l, int fd, uint32_t events, void *ptr)
{
    return mprpc__ep_ctl(l, EPOLL_CTL_ADD, fd, events, ptr);
}

static int mprpc__ep_mod(mprpc__loop *l, int fd, uint32_t events, void *ptr)
{
    return mprpc__ep_ctl(l, EPOLL_CTL_MOD, fd, events, ptr);
}

static int mprpc__ep_wait(mprpc__loop *l, struct epoll_event *evs, int max, int timeout_ms)
{
    int n;
    do n = epoll_wait(l->epfd, evs, max, timeout_ms); while (n < 0 && errno == EINTR);
    return n;
}

static void mprpc__loop_wake(mprpc__loop *l)
{
    uint64_t one = 1;
    ssize_t n;
    do n = write(l->wakefd, &one, sizeof one); while (n < 0 && errno == EINTR);
}

/* Hands a connection to a loop (acceptor thread). */
static void mprpc__loop_hand_over(mprpc__loop *l, mprpc__conn *c)
{
    pthread_mutex_lock(&l->mu);
    c->next = l->incoming;
    l->incoming = c;
    pthread_mutex_unlock(&l->mu);
    mprpc__loop_wake(l);
}

/* Queues a finished deferred call for its loop (any thread). The wake is
 * written under the lock: once the loop has taken the call it may finish
 * draining and close wakefd, so nothing may touch the loop after unlocking. */
static void mprpc__loop_post(mprpc__loop *l, mprpc_call *call)
{
    int was_empty;
    pthread_mutex_lock(&l->mu);
    was_empty = l->posted == NULL;
    call->posted_next = l->posted;
    l->posted = call;
    if (was_empty) mprpc__loop_wake(l);
    pthread_mutex_unlock(&l->mu);
}

static mprpc_status mprpc__loop_init(mprpc_server *srv, mprpc__loop *l, int index)
{
    int idle = srv->cfg.idle_timeout_ms;
    memset(l, 0, sizeof *l);
    l->srv = srv;
    l->index = index;
    l->tick_ms = idle > 0 && idle < 4000 ? (idle + 3) / 4 : 1000;
    pthread_mutex_init(&l->mu, NULL);
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    l->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    l->rbuf = (uint8_t *)MPRPC_MALLOC(MPRPC__READ_CHUNK);
    l->mstats = srv->mstats ? srv->mstats + (size_t)index * srv->nslots : NULL; /* 7i */
    if (l->epfd < 0 || l->wakefd < 0 || !l->rbuf) {
        mprpc__srv_fail(srv, "loop %d: cannot create epoll/eventfd/%zu-byte buffer: %s", index,
                        MPRPC__READ_CHUNK, strerror(errno));
        return l->rbuf ? MPRPC_ERR_IO : MPRPC_ERR_NO_MEMORY;
    }
    if (mprpc__ep_add(l, l->wakefd, EPOLLIN, &l->wakefd) != 0) {
        mprpc__srv_fail(srv, "loop %d: epoll_ctl add eventfd: %s", index, strerror(errno));
        return MPRPC_ERR_IO;
    }
    return MPRPC_OK;
}

/* ------------------------------------------------------------------------ */
/* -- 7c. connection: buffers, input, output, and settling the state ------- */
/* ------------------------------------------------------------------------ */

static void mprpc__list_unlink(mprpc__conn **head, mprpc__conn *c)
{
    if (c->prev) c->prev->next = c->next;
    else *head = c->next;
    if (c->next) c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

static void mprpc__list_push(mprpc__conn **head, mprpc__conn *c)
{
    c->prev = NULL;
    c->next = *head;
    if (*head) (*head)->prev = c;
    *head = c;
}

/* Keeps stats.buffer_bytes equal to what connection buffers hold. */
static void mprpc__conn_account(mprpc__conn *c)
{
    size_t held = c->in.cap + c->out.cap;
    if (held != c->accounted) {
        MPRPC__ADD(&c->loop->stats.buffer_bytes, (uint64_t)held - (uint64_t)c->accounted);
        c->accounted = held;
    }
}

/* Timer sweep only: freeing a large buffer each time a burst drains costs an munmap, page faults and
 * TLB shootdowns per burst (10 % of a busy provider's time at 4 KiB messages); once per tick costs
 * nothing and still gives back what a burst took. */
static void mprpc__buf_shrink(mprpc_buf *b)
{
    if (mprpc_buf_readable(b) == 0 && b->cap > MPRPC__KEEP_BUF) mprpc_buf_free(b);
}

/* Closes the descriptor now. The struct is freed at the end of the loop
 * iteration (other events of this batch may still name it) and only once no
 * deferred call refers to it. It leaves the epoll set first: epoll drops a
 * socket only when its last descriptor closes, and a child the program forked
 * (popen, system) holds a copy until its exec, so the socket's events would
 * go on naming the freed struct (closed again, open_conns below zero). */
static void mprpc__conn_close(mprpc__conn *c)
{
    mprpc__loop *l = c->loop;
    if (c->state == MPRPC__CONN_CLOSED) return;
    c->state = MPRPC__CONN_CLOSED;
    mprpc__ep_ctl(l, EPOLL_CTL_DEL, c->fd, 0, NULL); /* ENOENT if never added: nothing to undo */
    close(c->fd);
    c->fd = -1;
    mprpc__list_unlink(&l->conns, c);
    l->nconns--;
    mprpc__list_push(&l->dead, c);
    MPRPC__ADD(c->counted_open ? &l->srv->open_conns : &l->srv->refused_conns, (uint64_t)-1);
}

static void mprpc__conn_free_dead(mprpc__loop *l)
{
    mprpc__conn *c = l->dead, *next;
    l->dead = NULL;
    for (; c; c = next) {
        next = c->next;
        if (c->inflight > 0) { /* a deferred call still points here */
            mprpc__list_push(&l->dead, c);
            continue;
        }
        mprpc_buf_free(&c->in);
        mprpc_buf_free(&c->out);
        mprpc__conn_account(c);
        if (c->tls) mprpc__tls_io->free(c->tls);
        MPRPC_FREE(c);
    }
}

/* The connection takes no new request; it answers what it took, then ends. */
static void mprpc__conn_finish(mprpc__conn *c)
{
    if (c->state == MPRPC__CONN_SERVING || c->state == MPRPC__CONN_REFUSING)
        c->state = MPRPC__CONN_FINISHING;
}

/* May the connection take another request now? Replies the peer has not read
 * and calls in flight count against its limits. */
static int mprpc__conn_can_take(const mprpc__conn *c)
{
    const mprpc_config *cfg = &c->loop->srv->cfg;
    if (c->state != MPRPC__CONN_SERVING && c->state != MPRPC__CONN_REFUSING) return 0;
    return c->inflight < cfg->max_pipeline_depth &&
           mprpc_buf_readable(&c->out) <= cfg->max_pending_output;
}

/* Does `in` hold at least one whole (or malformed) frame? */
static int mprpc__conn_has_frame(const mprpc__conn *c)
{
    mprpc_request_frame f;
    if (mprpc_buf_readable(&c->in) == 0) return 0;
    return mprpc_wire_decode_request(c->in.data + c->in.pos, mprpc_buf_readable(&c->in),
                                     c->loop->srv->cfg.max_message_size, &f) != MPRPC_AGAIN;
}

/* A failed TLS read, write or handshake: a log line naming the peer and the reason. A failed handshake
 * ends like a finished connection (shut our side, discard what comes until the peer's EOF), so that the
 * alert OpenSSL sent reaches the peer instead of being lost to a reset: the peer learns why. */
static void mprpc__conn_tls_failed(mprpc__conn *c, const char *why)
{
    char peer[80];
    mprpc__peer_text(c->fd, peer, sizeof peer);
    MPRPC_LOG_WARN("TLS with %s: %s; closing", peer, why);
    MPRPC__ADD(&c->loop->stats.protocol_errors, 1);
    if (c->handshaking && c->state != MPRPC__CONN_LINGERING && shutdown(c->fd, SHUT_WR) == 0) {
        mprpc__tls_io->free(c->tls); /* no call ever saw it */
        c->tls = NULL;
        c->handshaking = 0;
        c->state = MPRPC__CONN_LINGERING;
        c->until_ms = mprpc__now_ms() + MPRPC__LINGER_MS;
        return;
    }
    c->failed = 1;
}

/* A recv or send that failed (errno set). A failed session (EPROTO) is logged with the TLS library's
 * reason ("TLS write: bad record mac") and the peer's address; a reset or a vanished peer just ends
 * the connection, as without TLS. */
static void mprpc__conn_io_failed(mprpc__conn *c)
{
    if (c->tls && errno == EPROTO) mprpc__conn_tls_failed(c, mprpc__tls_io->error(c->tls));
    else c->failed = 1;
}

/* Writes what it can of c->out; a peer that is gone is recorded as a fact. */
static void mprpc__conn_flush(mprpc__conn *c)
{
    while (mprpc_buf_readable(&c->out) > 0) {
        ssize_t n = mprpc__xsend(c->fd, c->tls, c->out.data + c->out.pos, mprpc_buf_readable(&c->out));
        c->wr_crossed = n < 0 && errno == EAGAIN && mprpc__xcrossed(c->tls, 0);
        if (n > 0) { /* a peer reading a large reply slowly is not idle */
            mprpc_buf_consume(&c->out, (size_t)n);
            MPRPC__BUMP(&c->loop->bytes_out, (uint64_t)n);
            c->last_active_ms = mprpc__now_ms();
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        mprpc__conn_io_failed(c); /* EPIPE, ECONNRESET: the peer is gone; EPROTO: the session failed */
        return;
    }
}

static size_t mprpc__conn_serve(mprpc__conn *c, const uint8_t *data, size_t len, uint64_t frame_ms,
                                size_t before_stop);

/* Serves the whole requests waiting in c->in that the connection may take. */
static void mprpc__conn_serve_buffered(mprpc__conn *c)
{
    size_t used, before_stop;
    if (mprpc_buf_readable(&c->in) == 0 || !mprpc__conn_can_take(c)) return;
    before_stop = c->state == MPRPC__CONN_SERVING ? SIZE_MAX : c->in_before_stop;
    used = mprpc__conn_serve(c, c->in.data + c->in.pos, mprpc_buf_readable(&c->in), c->in_read_ms,
                             before_stop);
    mprpc_buf_consume(&c->in, used);
    c->in_before_stop = used < c->in_before_stop ? c->in_before_stop - used : 0;
    /* the unfinished-frame clock restarts with each frame served: a busy
     * pipeliner whose reads always end mid-frame is not half-finished */
    if (mprpc_buf_readable(&c->in) == 0) c->partial_since_ms = 0;
    else if (used > 0 || c->partial_since_ms == 0) c->partial_since_ms = mprpc__now_ms();
}

/* Serves and writes until neither makes progress: a pause that ends here (the
 * output drained, a deferred call finished) resumes the requests already read,
 * since no new byte may ever come to trigger it. */
static void mprpc__conn_pump(mprpc__conn *c)
{
    size_t before;
    do {
        before = mprpc_buf_readable(&c->in);
        mprpc__conn_serve_buffered(c);
        mprpc__conn_flush(c);
    } while (!c->failed && mprpc_buf_readable(&c->in) < before && mprpc__conn_can_take(c));
}

/* The state transitions that follow from the facts and the clock. */
static void mprpc__conn_advance(mprpc__conn *c, uint64_t now)
{
    int answered = c->inflight == 0 && mprpc_buf_readable(&c->out) == 0;
    int open = c->state == MPRPC__CONN_SERVING || c->state == MPRPC__CONN_REFUSING;
    if (open && c->peer_eof && !mprpc__conn_has_frame(c)) mprpc__conn_finish(c);
    if (c->state == MPRPC__CONN_REFUSING && now >= c->until_ms && answered && !mprpc__conn_has_frame(c))
        mprpc__conn_finish(c);
    if (c->state == MPRPC__CONN_FINISHING && answered) {
        if (c->peer_eof) { /* both directions done: nothing unread, so no RST */
            mprpc__conn_close(c);
            return;
        }
        if (c->tls) mprpc__tls_io->shutdown(c->tls); /* close_notify: the peer sees a clean end */
        if (shutdown(c->fd, SHUT_WR) != 0) {
            c->failed = 1;
            return;
        }
        c->state = MPRPC__CONN_LINGERING;
        c->until_ms = now + MPRPC__LINGER_MS;
    }
    if (c->state == MPRPC__CONN_LINGERING && (c->peer_eof || now >= c->until_ms))
        mprpc__conn_close(c);
}

/* Whether c's TLS session holds bytes it read ahead of the socket. */
static int mprpc__conn_tls_held(const mprpc__conn *c)
{
    return c->tls && mprpc__tls_io->pending(c->tls) > 0;
}

/* Does the connection want to read now? */
static int mprpc__conn_reading(const mprpc__conn *c)
{
    return c->state == MPRPC__CONN_LINGERING || (!c->peer_eof && mprpc__conn_can_take(c));
}

/* Reading waits for EPOLLIN and writing for EPOLLOUT, except where a TLS session crossed them. */
static uint32_t mprpc__conn_interest(const mprpc__conn *c)
{
    uint32_t ev = 0;
    if (c->handshaking) return c->hs_want;
    if (mprpc__conn_reading(c)) ev |= c->rd_crossed ? EPOLLOUT : EPOLLIN;
    if (mprpc_buf_readable(&c->out) > 0) ev |= c->wr_crossed ? EPOLLIN : EPOLLOUT;
    /* bytes a TLS session read ahead raise no EPOLLIN: a writable socket's EPOLLOUT, at once, brings
     * the loop back to take them (mprpc__conn_on_event) */
    if (mprpc__conn_reading(c) && mprpc__conn_tls_held(c)) ev |= EPOLLOUT;
    return ev;
}

/* The one place where a connection's facts become consequences: serving what
 * a pause held back, writing, the next state, then the epoll interest that
 * state needs. Called after every event on the connection and on every timer
 * sweep, so no path can forget a step. */
static void mprpc__conn_settle(mprpc__conn *c, uint64_t now)
{
    uint32_t want;
    if (c->state == MPRPC__CONN_CLOSED) return;
    if (!c->failed) mprpc__conn_pump(c);
    if (!c->failed) mprpc__conn_advance(c, now);
    if (c->failed) mprpc__conn_close(c);
    if (c->state == MPRPC__CONN_CLOSED) return;
    mprpc__conn_account(c);
    want = mprpc__conn_interest(c);
    if (want == c->events) return;
    if (mprpc__ep_mod(c->loop, c->fd, want, c) != 0) { /* interest unknown: the connection cannot go on */
        MPRPC_LOG_WARN("fd %d: epoll_ctl modify to events 0x%x: %s; closing", c->fd, (unsigned)want,
                       strerror(errno));
        mprpc__conn_close(c);
        return;
    }
    c->events = want;
}

/* Where the next read lands: the tail of c->in when a partial frame waits
 * there (continued in place), else the loop's read buffer. 0 if the
 * connection cannot read (it is closed, or c->in cannot grow). */
static int mprpc__conn_read_target(mprpc__conn *c, uint8_t **dst, size_t *room, int *buffered)
{
    mprpc__loop *l = c->loop;
    size_t maxframe = mprpc__max_frame(l->srv->cfg.max_message_size);
    *buffered = c->state != MPRPC__CONN_LINGERING && mprpc_buf_readable(&c->in) > 0;
    if (c->state == MPRPC__CONN_CLOSED) return 0;
    if (*buffered) {
        if (mprpc_buf_reserve(&c->in, MPRPC__READ_CHUNK < maxframe ? MPRPC__READ_CHUNK : maxframe,
                              maxframe + MPRPC__READ_CHUNK) != MPRPC_OK) {
            MPRPC_LOG_WARN("fd %d: cannot grow the input buffer past %zu bytes: finishing", c->fd,
                           c->in.cap);
            mprpc__conn_finish(c);
            return 0;
        }
        *dst = c->in.data + c->in.len;
        *room = c->in.cap - c->in.len;
    } else {
        *dst = l->rbuf;
        *room = MPRPC__READ_CHUNK;
    }
    return 1;
}

/* Keeps the unserved tail of a read in c->in. */
static void mprpc__conn_keep(mprpc__conn *c, const uint8_t *p, size_t n, uint64_t now)
{
    size_t maxframe = mprpc__max_frame(c->loop->srv->cfg.max_message_size);
    if (c->state != MPRPC__CONN_SERVING && c->state != MPRPC__CONN_REFUSING) return;
    if (mprpc_buf_append(&c->in, p, n, maxframe + MPRPC__READ_CHUNK) != MPRPC_OK) {
        /* the byte stream has a hole now: answer what was taken, then end */
        MPRPC_LOG_WARN("fd %d: out of memory keeping %zu unserved bytes: finishing", c->fd, n);
        mprpc__conn_finish(c);
        return;
    }
    c->partial_since_ms = now;
}

/* Handles n bytes that just landed at the read target (n == 0: the peer
 * shut its side): serves the whole requests, keeps the rest; the caller
 * settles. Everything a peer sends passes through here; the fuzz target
 * tests/fuzz/fuzz_provider.c drives it without a socket. */
static void mprpc__conn_received(mprpc__conn *c, int buffered, size_t n)
{
    mprpc__loop *l = c->loop;
    uint64_t now = mprpc__now_ms();
    size_t used;
    c->last_active_ms = now;
    if (n == 0) {
        c->peer_eof = 1;
    } else if (c->state == MPRPC__CONN_LINGERING) {
        c->lingered += n; /* discarded; a peer that keeps sending is cut off */
        if (c->lingered > MPRPC__LINGER_BYTES) c->until_ms = now;
    } else if (buffered) {
        c->in.len += n;
        c->in_read_ms = now;
        mprpc__conn_serve_buffered(c);
    } else {
        c->in_read_ms = now;
        used = mprpc__conn_serve(c, l->rbuf, n, now, c->state == MPRPC__CONN_SERVING ? SIZE_MAX : 0);
        if (used < n) mprpc__conn_keep(c, l->rbuf + used, n - used, now);
    }
}

/* Reads once, and again while a TLS session holds records it read ahead (one TLS read gives one
 * record), then settles once: the replies to all of them leave in one write and the epoll interest
 * is decided once, not per record (two epoll_ctl and a send per record cost more than the crypto). */
static void mprpc__conn_on_readable(mprpc__conn *c)
{
    uint8_t *dst;
    size_t room;
    int buffered, rounds = 0;
    ssize_t n;
    do {
        if (!mprpc__conn_read_target(c, &dst, &room, &buffered)) break;
        do n = mprpc__xrecv(c->fd, c->tls, dst, room); while (n < 0 && errno == EINTR);
        c->rd_crossed = n < 0 && errno == EAGAIN && mprpc__xcrossed(c->tls, 1);
        if (n < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK) mprpc__conn_io_failed(c);
            break;
        }
        MPRPC__BUMP(&c->loop->bytes_in, (uint64_t)n);
        mprpc__conn_received(c, buffered, (size_t)n);
    } while (n > 0 && !c->failed && c->state != MPRPC__CONN_CLOSED && mprpc__conn_tls_held(c) &&
             mprpc__conn_reading(c) && ++rounds < 16);
    mprpc__conn_settle(c, mprpc__now_ms());
}

/* Do the first bytes of a new connection open a TLS session? Every TLS client starts with a
 * handshake record (0x16, then major version 0x03); a plaintext mprpc caller starts with a frame's
 * 4-byte header length (at most 1024, so 0x16 0x03 is a rare but possible frame: it fails the
 * handshake as before). 1: TLS, 0: plaintext, -1: nothing to look at yet (or the peer has gone). */
static int mprpc__conn_speaks_tls(const mprpc__conn *c)
{
    uint8_t b[2];
    ssize_t n;
    do n = recv(c->fd, b, sizeof b, MSG_PEEK); while (n < 0 && errno == EINTR);
    if (n <= 0) return n == 0 ? 1 : -1; /* EOF: the handshake reports the close */
    return b[0] == 0x16 && (n == 1 || b[1] == 0x03);
}

/* A plaintext caller of a TLS provider: served in plaintext as a refusing connection, so that each
 * v1 request is answered MPRPC_ERR_TLS ("provider requires TLS"), not run, and the caller learns why
 * instead of seeing a closed connection. A v0 caller has no error channel: it just sees the close. */
static void mprpc__conn_refuse_plaintext(mprpc__conn *c)
{
    char peer[80];
    mprpc__peer_text(c->fd, peer, sizeof peer);
    MPRPC_LOG_WARN("TLS with %s: the peer speaks plaintext, not TLS: answering its requests "
                   "MPRPC_ERR_TLS, then closing", peer);
    MPRPC__ADD(&c->loop->stats.protocol_errors, 1);
    mprpc__tls_io->free(c->tls); /* no call ever saw it */
    c->tls = NULL;
    c->handshaking = 0;
    if (c->state == MPRPC__CONN_SERVING || c->state == MPRPC__CONN_REFUSING) {
        c->state = MPRPC__CONN_REFUSING;
        c->refuse_status = MPRPC_ERR_TLS;
        c->until_ms = mprpc__now_ms() + MPRPC__BUSY_GRACE_MS;
    }
    mprpc__conn_on_readable(c);
}

/* One step of a TLS handshake; once done the connection serves (the peer's first request may already
 * be waiting inside the session). A peer whose first bytes are no TLS record is refused in plaintext. */
static void mprpc__conn_handshake(mprpc__conn *c)
{
    char why[200];
    mprpc__hs hs;
    int tls = c->tls_checked ? 1 : mprpc__conn_speaks_tls(c);
    c->last_active_ms = mprpc__now_ms();
    if (tls <= 0) {
        if (tls == 0) mprpc__conn_refuse_plaintext(c);
        return;
    }
    c->tls_checked = 1;
    hs = mprpc__tls_io->handshake(c->tls, why, sizeof why);
    if (hs == MPRPC__HS_FAILED) {
        mprpc__conn_tls_failed(c, why);
    } else if (hs == MPRPC__HS_DONE) {
        c->handshaking = 0;
        mprpc__conn_on_readable(c);
    } else {
        c->hs_want = hs == MPRPC__HS_WANT_WRITE ? EPOLLOUT : EPOLLIN;
    }
}

static void mprpc__conn_on_event(mprpc__conn *c, uint32_t events)
{
    if (c->state == MPRPC__CONN_CLOSED) return;
    if (c->handshaking) {
        mprpc__conn_handshake(c);
        mprpc__conn_settle(c, mprpc__now_ms());
        return;
    }
    if ((events & (EPOLLHUP | EPOLLERR)) && !(events & EPOLLIN))
        c->failed = 1; /* both directions gone: nobody can read our replies */
    else if (mprpc__conn_reading(c) &&
             ((events & (c->rd_crossed ? EPOLLOUT : EPOLLIN)) || mprpc__conn_tls_held(c)))
        mprpc__conn_on_readable(c);
    mprpc__conn_settle(c, mprpc__now_ms()); /* EPOLLOUT (EPOLLIN for a crossed write): the settle writes */
}

/* A connection the acceptor handed over starts here. */
static void mprpc__conn_attach(mprpc__loop *l, mprpc__conn *c)
{
    uint64_t now = mprpc__now_ms();
    c->loop = l;
    c->events = EPOLLIN;
    c->last_active_ms = now;
    mprpc__list_push(&l->conns, c);
    l->nconns++;
    if (l->draining && c->state == MPRPC__CONN_SERVING) { /* accepted just before the stop */
        c->state = MPRPC__CONN_REFUSING;
        c->refuse_status = MPRPC_ERR_SHUTDOWN;
        c->until_ms = now + MPRPC__DRAIN_QUIET_MS;
    }
    if (mprpc__ep_add(l, c->fd, EPOLLIN, c) != 0) {
        MPRPC_LOG_WARN("fd %d: epoll_ctl add: %s; closing", c->fd, strerror(errno));
        mprpc__conn_close(c);
    }
}

/* ------------------------------------------------------------------------ */
/* -- 7d. dispatch: call objects, deadlines, handlers, replies ------------- */
/* ------------------------------------------------------------------------ */

/* Idle call objects are pooled per loop, at most MPRPC__CALL_POOL_MAX of
 * them: a burst of deferred calls gives its memory back once it is over. */
static mprpc_call *mprpc__call_get(mprpc__loop *l)
{
    mprpc_call *call = l->free_calls;
    if (!call) return (mprpc_call *)MPRPC_MALLOC(l->srv->call_size);
    l->free_calls = call->next;
    l->nfree--;
    MPRPC__ADD(&l->stats.call_pool_bytes, (uint64_t)0 - (uint64_t)l->srv->call_size);
    return call;
}

/* Frees a call's arena; the only place its blocks are freed. */
static void mprpc__arena_free(mprpc_call *call)
{
    mprpc__arena_block *b = call->arena, *next;
    for (; b; b = next) {
        next = b->h.next;
        MPRPC_FREE(b);
    }
    call->arena = NULL;
    call->arena_used = 0;
}

/* Every call the loop still owns ends here (reply encoded or dropped, error
 * replies): its arena is counted and freed, then the object pooled or freed. */
static void mprpc__call_put(mprpc__loop *l, mprpc_call *call)
{
    MPRPC__ADD(&l->stats.arena_bytes, (uint64_t)call->arena_used);
    MPRPC__ADD(&l->stats.arena_refused, (uint64_t)call->arena_refused);
    mprpc__arena_free(call);
    if (l->nfree >= MPRPC__CALL_POOL_MAX) {
        MPRPC_FREE(call);
        return;
    }
    call->next = l->free_calls;
    l->free_calls = call;
    l->nfree++;
    MPRPC__ADD(&l->stats.call_pool_bytes, (uint64_t)l->srv->call_size);
}

/* The loop's list of deferred calls (to abandon them when the drain times out). */
static void mprpc__deferred_add(mprpc__loop *l, mprpc_call *call)
{
    call->prev = NULL;
    call->next = l->deferred;
    if (l->deferred) l->deferred->prev = call;
    l->deferred = call;
    call->conn->inflight++;
    MPRPC__ADD(&l->stats.deferred_pending, 1);
}

static void mprpc__deferred_remove(mprpc__loop *l, mprpc_call *call)
{
    if (call->prev) call->prev->next = call->next;
    else l->deferred = call->next;
    if (call->next) call->next->prev = call->prev;
    call->prev = call->next = NULL;
    call->conn->inflight--;
    MPRPC__ADD(&l->stats.deferred_pending, (uint64_t)-1);
}

static void mprpc__call_setup(mprpc_call *call, mprpc__conn *c, const mprpc__route *r,
                              const mprpc_RpcHeader *h, uint64_t deadline_ms)
{
    uint8_t *base = (uint8_t *)call + mprpc__align_up(sizeof(mprpc_call));
    memset(call, 0, sizeof *call);
    call->loop = c->loop;
    call->conn = c;
    call->service = r->service;
    call->method = r->method;
    call->call_id = h->call_id;
    call->version = h->version;
    call->deadline_ms = deadline_ms;
    call->arena_max = (size_t)c->loop->srv->cfg.call_arena_max;
    call->state = MPRPC__CALL_RUNNING;
    call->status = MPRPC_OK;
    call->request = base;
    call->response = base + mprpc__align_up(r->method->request_size);
    call->slot = r->slot;
    call->start_us = mprpc__now_us();
    call->request_bytes = h->args_size;
    memset(call->request, 0, r->method->request_size);
    memset(call->response, 0, r->method->response_size);
}

/* Queues an error reply in c->out (v1) or, for a seed caller that has no
 * error channel, ends the connection after what is already queued. */
static void mprpc__reply_error(mprpc__conn *c, uint32_t version, uint64_t call_id, int status,
                               const char *fmt, ...) MPRPC_PRINTF(5, 6);
static void mprpc__reply_error(mprpc__conn *c, uint32_t version, uint64_t call_id, int status,
                               const char *fmt, ...)
{
    char text[256];
    mprpc_status st;
    va_list ap;
    va_start(ap, fmt);
    mprpc__vfmt(text, sizeof text, fmt, ap);
    va_end(ap);
    MPRPC__ADD(&c->loop->stats.call_errors, 1);
    MPRPC_LOG_DEBUG("fd %d: %s: %s", c->fd, mprpc_status_name(status), text);
    if (version == 0) {
        mprpc__conn_finish(c);
        return;
    }
    st = mprpc_wire_encode_response(&c->out, 0, call_id, status, text, NULL, NULL);
    if (st != MPRPC_OK) {
        MPRPC_LOG_WARN("fd %d: cannot queue an error reply (%s, %zu bytes queued): finishing", c->fd,
                       mprpc_status_name(st), mprpc_buf_readable(&c->out));
        mprpc__conn_finish(c);
    }
}

/* The seed's reply: the bare message, then the connection ends. */
static void mprpc__reply_seed(mprpc__conn *c, const mprpc_call *call)
{
    const mprpc_method *m = call->method;
    size_t n = 0, max = c->loop->srv->cfg.max_message_size;
    pb_ostream_t os;
    mprpc__conn_finish(c);
    if (!pb_get_encoded_size(&n, m->response_fields, call->response) || n > max ||
        mprpc_buf_reserve(&c->out, n, mprpc_buf_readable(&c->out) + n) != MPRPC_OK) {
        MPRPC_LOG_WARN("fd %d: %s.%s: cannot encode the seed reply (%zu bytes, max %zu)", c->fd,
                       call->service->name, m->name, n, max);
        return;
    }
    os = pb_ostream_from_buffer(c->out.data + c->out.len, n);
    if (pb_encode(&os, m->response_fields, call->response)) c->out.len += n;
}

/* Encodes the reply of a finished call into its own connection's buffer:
 * a reply can only ever be written to the connection that asked. */
static void mprpc__reply(mprpc__conn *c, const mprpc_call *call)
{
    const mprpc_method *m = call->method;
    mprpc_status st;
    if (call->version == 0) {
        mprpc__reply_seed(c, call);
        return;
    }
    if (call->status != MPRPC_OK) {
        mprpc__reply_error(c, call->version, call->call_id, call->status, "%s", call->error_text);
        return;
    }
    st = mprpc_wire_encode_response(&c->out, c->loop->srv->cfg.max_message_size, call->call_id,
                                    MPRPC_OK, NULL, m->response_fields, call->response);
    if (st != MPRPC_OK)
        mprpc__reply_error(c, call->version, call->call_id, st, "%s.%s: cannot encode the response: %s",
                           call->service->name, m->name, mprpc_status_str(st));
}

/* The answer to a request that did not decode; a callback field that arrived with nobody to decode it
 * is named, with what to do about it. */
static void mprpc__reply_decode_error(mprpc__conn *c, const mprpc__route *r, const mprpc_call *call,
                                      const char *why)
{
    if (call->unset_tag)
        mprpc__reply_error(c, call->version, call->call_id, MPRPC_ERR_DECODE,
                           "%s.%s: request field %u (a callback field) arrived but has no decoder: set its "
                           "funcs.decode in the method's prepare hook (MPRPC_METHOD_PREPARED, or the "
                           "generated stubs' %s_prepare)", r->service->name, r->method->name,
                           (unsigned)call->unset_tag, r->method->name);
    else
        mprpc__reply_error(c, call->version, call->call_id, MPRPC_ERR_DECODE,
                           "%s.%s: cannot decode the request: %s", r->service->name, r->method->name, why);
}

/* Decodes the request and runs the handler; the reply is queued unless the
 * handler deferred the call. */
static void mprpc__call_run(mprpc__conn *c, const mprpc__route *r, const mprpc_request_frame *f,
                            uint64_t deadline_ms)
{
    const mprpc_RpcHeader *h = &f->header;
    mprpc__loop *l = c->loop;
    mprpc_call *call = mprpc__call_get(l);
    pb_istream_t is;
    size_t out_before;
    if (!call) {
        mprpc__reply_error(c, h->version, h->call_id, MPRPC_ERR_NO_MEMORY,
                           "provider out of memory (a call object of %zu bytes)", l->srv->call_size);
        return;
    }
    mprpc__call_setup(call, c, r, h, deadline_ms);
    if (r->method->prepare) r->method->prepare(call, call->request, call->response, r->service->user);
    if (r->guard) mprpc__guard_callbacks(call, r->method->request_fields, 1);
    is = pb_istream_from_buffer(f->body, h->args_size);
    if (!pb_decode(&is, r->method->request_fields, call->request)) {
        mprpc__reply_decode_error(c, r, call, PB_GET_ERROR(&is));
        mprpc__admin_count(l, call, MPRPC_ERR_DECODE, 0);
        mprpc__call_put(l, call);
        return;
    }
    if (r->guard) mprpc__guard_callbacks(call, r->method->request_fields, 0);
    MPRPC__ADD(&l->stats.calls, 1);
    r->method->handler(call, call->request, call->response, r->service->user);
    if (__atomic_load_n(&call->state, __ATOMIC_ACQUIRE) != MPRPC__CALL_RUNNING) {
        mprpc__deferred_add(l, call); /* may be posted already: the loop answers it next wake */
        return;
    }
    out_before = mprpc_buf_readable(&c->out);
    mprpc__reply(c, call);
    mprpc__admin_count(l, call, call->status, mprpc_buf_readable(&c->out) - out_before);
    mprpc__call_put(l, call);
}

/* The route of a request, or an error reply saying which name is unknown. */
static const mprpc__route *mprpc__conn_route(mprpc__conn *c, const mprpc_RpcHeader *h)
{
    const mprpc_server *srv = c->loop->srv;
    const mprpc__route *r = mprpc__route_find(srv, h->service_name.bytes, h->service_name.size,
                                              h->method_name.bytes, h->method_name.size);
    if (r) return r;
    if (!mprpc__route_find(srv, h->service_name.bytes, h->service_name.size, NULL, 0))
        mprpc__reply_error(c, h->version, h->call_id, MPRPC_ERR_UNKNOWN_SERVICE,
                           "unknown service '%.*s'", (int)h->service_name.size,
                           (const char *)h->service_name.bytes);
    else
        mprpc__reply_error(c, h->version, h->call_id, MPRPC_ERR_UNKNOWN_METHOD,
                           "unknown method '%.*s' in service '%.*s'", (int)h->method_name.size,
                           (const char *)h->method_name.bytes, (int)h->service_name.size,
                           (const char *)h->service_name.bytes);
    return NULL;
}

/* A request the connection will not run: over max_connections, or the
 * server stops. The caller may send it elsewhere (it never ran). */
static void mprpc__conn_refuse(mprpc__conn *c, const mprpc_RpcHeader *h)
{
    MPRPC__ADD(&c->loop->stats.refused, 1);
    if (c->refuse_status == MPRPC_ERR_SHUTDOWN) {
        c->until_ms = mprpc__now_ms() + MPRPC__DRAIN_QUIET_MS;
        mprpc__reply_error(c, h->version, h->call_id, MPRPC_ERR_SHUTDOWN,
                           "provider is stopping: not executed");
        return;
    }
    if (c->refuse_status == MPRPC_ERR_TLS) {
        mprpc__reply_error(c, h->version, h->call_id, MPRPC_ERR_TLS,
                           "provider requires TLS (tls_enable): not executed");
        return;
    }
    mprpc__reply_error(c, h->version, h->call_id, MPRPC_ERR_BUSY,
                       "provider at max_connections (%d): not executed",
                       c->loop->srv->cfg.max_connections);
}

/* One whole request: refused, expired, or run. frame_ms is when its last
 * byte arrived; the caller's deadline counts from there. */
static void mprpc__conn_take(mprpc__conn *c, const mprpc_request_frame *f, uint64_t frame_ms, int run)
{
    const mprpc_RpcHeader *h = &f->header;
    const mprpc__route *r;
    uint64_t deadline = 0, now;
    if (!run) {
        mprpc__conn_refuse(c, h);
        return;
    }
    if (!(r = mprpc__conn_route(c, h))) return;
    if (h->version != 0 && h->timeout_ms != 0) {
        deadline = frame_ms + h->timeout_ms;
        now = mprpc__now_ms();
        if (now >= deadline) {
            MPRPC__ADD(&c->loop->stats.expired, 1);
            mprpc__reply_error(c, h->version, h->call_id, MPRPC_ERR_TIMEOUT,
                               "deadline passed before the handler ran (timeout_ms %u, waited %llu ms)",
                               (unsigned)h->timeout_ms, (unsigned long long)(now - frame_ms));
            return;
        }
    }
    mprpc__call_run(c, r, f, deadline);
}

/* A frame that cannot be served: say why when the header is known, then end. */
static void mprpc__conn_bad_frame(mprpc__conn *c, const mprpc_request_frame *f, mprpc_status st)
{
    MPRPC__ADD(&c->loop->stats.protocol_errors, 1);
    if (st == MPRPC_ERR_TOO_LARGE)
        mprpc__reply_error(c, f->header.version, f->header.call_id, st,
                           "request of %u bytes exceeds max_message_size %u",
                           (unsigned)f->header.args_size, (unsigned)c->loop->srv->cfg.max_message_size);
    else
        MPRPC_LOG_WARN("fd %d: unparseable request header (%s), closing", c->fd, mprpc_status_name(st));
    mprpc__conn_finish(c);
}

/* Serves every whole frame in data[0, len) the connection may take; returns
 * the bytes consumed. Frames ending within the first before_stop bytes were
 * read before the server began to stop: they run; later ones are refused. */
static size_t mprpc__conn_serve(mprpc__conn *c, const uint8_t *data, size_t len, uint64_t frame_ms,
                                size_t before_stop)
{
    size_t off = 0, max = c->loop->srv->cfg.max_message_size;
    while (off < len && mprpc__conn_can_take(c)) {
        mprpc_request_frame f;
        mprpc_status st = mprpc_wire_decode_request(data + off, len - off, max, &f);
        if (st == MPRPC_AGAIN) break;
        if (st != MPRPC_OK) {
            mprpc__conn_bad_frame(c, &f, st);
            return len;
        }
        mprpc__conn_take(c, &f, frame_ms,
                         c->state == MPRPC__CONN_SERVING || off + f.frame_size <= before_stop);
        off += f.frame_size;
        if (f.header.version == 0) mprpc__conn_finish(c); /* one call per seed connection */
    }
    return off;
}

/* A deferred call came back (mprpc_call_done): answer it, unless its
 * connection is gone or the caller's deadline has passed (then nobody waits
 * for the answer: it is dropped and counted). */
static void mprpc__call_finish_deferred(mprpc__loop *l, mprpc_call *call)
{
    mprpc__conn *c = call->conn;
    uint64_t now = mprpc__now_ms();
    size_t out_before = mprpc_buf_readable(&c->out);
    mprpc__deferred_remove(l, call);
    if (c->state != MPRPC__CONN_CLOSED && c->state != MPRPC__CONN_LINGERING) {
        if (call->deadline_ms && now > call->deadline_ms) {
            MPRPC__ADD(&l->stats.deadline_dropped, 1);
            MPRPC_LOG_DEBUG("fd %d: %s.%s call_id %llu finished %llu ms after its deadline: answer dropped",
                            c->fd, call->service->name, call->method->name,
                            (unsigned long long)call->call_id,
                            (unsigned long long)(now - call->deadline_ms));
            mprpc__admin_count(l, call, MPRPC_ERR_TIMEOUT, 0);
        } else {
            mprpc__reply(c, call);
            mprpc__admin_count(l, call, call->status, mprpc_buf_readable(&c->out) - out_before);
        }
    }
    mprpc__call_put(l, call);
    mprpc__conn_settle(c, now);
}

/* drain_timeout_ms passed: every deferred call still out is abandoned (its
 * later mprpc_call_done frees it) and every connection closed. A call already
 * posted stays: the loop answers it on its next wake. */
static void mprpc__loop_abandon(mprpc__loop *l)
{
    mprpc_call *call = l->deferred, *next, *kept = NULL;
    int abandoned = 0;
    for (; call; call = next) {
        int expected = MPRPC__CALL_DEFERRED;
        next = call->next;
        mprpc__deferred_remove(l, call); /* before the exchange: after it the call is not ours */
        if (__atomic_compare_exchange_n(&call->state, &expected, MPRPC__CALL_ABANDONED, 0,
                                        __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
            abandoned++;
            continue;
        }
        call->posted_next = kept;
        kept = call;
    }
    for (; kept; kept = next) { /* posted meanwhile: still ours */
        next = kept->posted_next;
        mprpc__deferred_add(l, kept);
    }
    if (abandoned || l->nconns)
        MPRPC_LOG_WARN("loop %d: drain_timeout_ms %d passed: abandoning %d deferred call(s), closing %zu "
                       "connection(s)", l->index, l->srv->cfg.drain_timeout_ms, abandoned, l->nconns);
    MPRPC__ADD(&l->stats.abandoned, (uint64_t)abandoned);
    while (l->conns) mprpc__conn_close(l->conns);
}

/* ------------------------------------------------------------------------ */
/* -- 7e. the loop thread: wake-ups, timers, draining ---------------------- */
/* ------------------------------------------------------------------------ */

/* The stop reached this loop: requests already read are served; anything
 * read from now on is refused with SHUTDOWN. */
static void mprpc__loop_begin_drain(mprpc__loop *l, uint64_t now)
{
    mprpc__conn *c, *next;
    l->draining = 1;
    l->drain_deadline_ms = now + (uint64_t)l->srv->cfg.drain_timeout_ms;
    for (c = l->conns; c; c = next) {
        next = c->next;
        if (c->state == MPRPC__CONN_SERVING) {
            c->state = MPRPC__CONN_REFUSING;
            c->refuse_status = MPRPC_ERR_SHUTDOWN;
            c->in_before_stop = mprpc_buf_readable(&c->in);
            c->until_ms = now + MPRPC__DRAIN_QUIET_MS;
        }
        mprpc__conn_settle(c, now);
    }
}

static void mprpc__loop_on_wake(mprpc__loop *l)
{
    uint64_t v;
    mprpc__conn *in, *next;
    mprpc_call *done, *cnext;
    int drain;
    ssize_t n;
    do n = read(l->wakefd, &v, sizeof v); while (n < 0 && errno == EINTR);
    pthread_mutex_lock(&l->mu);
    in = l->incoming;
    done = l->posted;
    drain = l->drain_requested;
    l->incoming = NULL;
    l->posted = NULL;
    pthread_mutex_unlock(&l->mu);
    for (; in; in = next) {
        next = in->next;
        mprpc__conn_attach(l, in);
    }
    for (; done; done = cnext) {
        cnext = done->posted_next;
        mprpc__call_finish_deferred(l, done);
    }
    if (drain && !l->draining) mprpc__loop_begin_drain(l, mprpc__now_ms());
}

/* Timers: idle connections and unfinished frames end; large buffers a burst
 * left empty are given back; every connection is settled, so time-based
 * transitions (refusing, lingering) happen. */
static void mprpc__loop_sweep(mprpc__loop *l, uint64_t now)
{
    int idle = l->srv->cfg.idle_timeout_ms;
    mprpc__conn *c, *next;
    for (c = l->conns; c; c = next) {
        char why[120];
        next = c->next;
        if (c->handshaking && now >= c->hs_deadline_ms) {
            mprpc__fmt(why, sizeof why, "handshake not finished within tls_handshake_timeout_ms (%d ms)",
                       l->srv->cfg.tls_handshake_timeout_ms);
            mprpc__conn_tls_failed(c, why);
        }
        if (idle > 0 && c->inflight == 0 && c->state != MPRPC__CONN_LINGERING &&
            (now - c->last_active_ms > (uint64_t)idle ||
             (c->partial_since_ms && now - c->partial_since_ms > (uint64_t)idle))) {
            MPRPC_LOG_DEBUG("fd %d: idle or unfinished frame for %d ms, closing", c->fd, idle);
            mprpc__conn_finish(c);
            if (c->state == MPRPC__CONN_FINISHING) mprpc_buf_free(&c->in); /* never completes */
        }
        mprpc__buf_shrink(&c->in);
        mprpc__buf_shrink(&c->out);
        mprpc__conn_settle(c, now);
    }
}

/* The loop may exit once every connection is closed and no deferred call of
 * its own is outstanding (those point into this loop). */
static int mprpc__loop_drained(mprpc__loop *l, uint64_t now)
{
    if (now >= l->drain_deadline_ms && (l->conns || l->deferred)) mprpc__loop_abandon(l);
    return l->nconns == 0 && l->deferred == NULL;
}

static void mprpc__loop_dispatch(mprpc__loop *l, struct epoll_event *evs, int n)
{
    int i;
    for (i = 0; i < n; i++) {
        if (evs[i].data.ptr == &l->wakefd) mprpc__loop_on_wake(l);
        else mprpc__conn_on_event((mprpc__conn *)evs[i].data.ptr, evs[i].events);
    }
}

/* The event loop: one per thread. Each iteration waits for events (at most
 * until the next sweep), handles them, frees the connections closed during
 * the iteration, then runs the timers. */
static void *mprpc__loop_main(void *arg)
{
    mprpc__loop *l = (mprpc__loop *)arg;
    struct epoll_event evs[64];
    sigset_t all;
    sigfillset(&all); /* signals belong to the application's threads */
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    for (;;) {
        uint64_t now, woke_us;
        int n = mprpc__ep_wait(l, evs, 64, l->draining ? 20 : l->tick_ms);
        woke_us = mprpc__now_us();
        if (n < 0) {
            MPRPC_LOG_ERROR("loop %d: epoll_wait: %s; the loop stops", l->index, strerror(errno));
            mprpc__loop_abandon(l);
            break;
        }
        mprpc__loop_dispatch(l, evs, n);
        mprpc__conn_free_dead(l);
        now = mprpc__now_ms();
        if (now >= l->next_sweep_ms || l->draining) {
            mprpc__loop_sweep(l, now);
            l->next_sweep_ms = now + (uint64_t)l->tick_ms;
        }
        MPRPC__BUMP(&l->busy_us, mprpc__now_us() - woke_us);
        if (l->draining && mprpc__loop_drained(l, now)) break;
    }
    mprpc__conn_free_dead(l);
    return NULL;
}

/* Releases what the loop holds; its stats stay readable. */
static void mprpc__loop_uninit(mprpc__loop *l)
{
    mprpc_call *call, *next;
    mprpc__conn *c, *cnext;
    while (l->conns) mprpc__conn_close(l->conns);
    mprpc__conn_free_dead(l);
    for (c = l->incoming; c; c = cnext) { /* handed over after the loop had stopped */
        cnext = c->next;
        close(c->fd);
        MPRPC__ADD(c->counted_open ? &l->srv->open_conns : &l->srv->refused_conns, (uint64_t)-1);
        MPRPC_FREE(c);
    }
    l->incoming = NULL;
    for (call = l->free_calls; call; call = next) {
        next = call->next;
        MPRPC_FREE(call);
    }
    l->free_calls = NULL;
    __atomic_store_n(&l->stats.call_pool_bytes, 0, __ATOMIC_RELAXED);
    l->nfree = 0;
    if (l->epfd >= 0) close(l->epfd);
    if (l->wakefd >= 0) close(l->wakefd);
    l->epfd = l->wakefd = -1;
    MPRPC_FREE(l->rbuf);
    l->rbuf = NULL;
    pthread_mutex_destroy(&l->mu);
}

/* ------------------------------------------------------------------------ */
/* -- 7f. accept: a thread of its own ------------------------------------- */
/* ------------------------------------------------------------------------ */

/* Accepting has a thread of its own rather than riding on loop 0 (or every
 * loop with SO_REUSEPORT/EPOLLEXCLUSIVE): a handler that blocks its loop can
 * then never stop new connections from being served by the other loops;
 * max_connections, the spare descriptor and the accept pause stay in one
 * thread (no shared state to race on, no per-loop listener the kernel would
 * keep feeding while that loop is stuck); and the same thread waits for
 * mprpc_server_stop and runs the drain, whether the server was started with
 * start or run. It costs one mostly idle thread. */

/* Out of file descriptors: give up the spare one to accept and drop the
 * pending connection, so it does not sit in the backlog making poll spin.
 * Returns 0, or until when accepting pauses (the spare could not be had
 * back: polling the listener would spin). */
static uint64_t mprpc__accept_shed(mprpc_server *srv)
{
    int fd = -1;
    if (srv->spare_fd >= 0) {
        close(srv->spare_fd);
        fd = accept(srv->listen_fd, NULL, NULL);
        if (fd >= 0) close(fd);
    }
    srv->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    MPRPC__ADD(&srv->accept_stats.connections_rejected, 1);
    if (fd >= 0 && srv->spare_fd >= 0) return 0;
    MPRPC__ADD(&srv->accept_stats.accept_pauses, 1);
    MPRPC_LOG_WARN("out of file descriptors: not accepting for %d ms", MPRPC__ACCEPT_PAUSE_MS);
    return mprpc__now_ms() + MPRPC__ACCEPT_PAUSE_MS;
}

/* A new connection: served, held to refuse its requests (over max_connections,
 * or the server stops), or closed at once when even that bound is reached. */
/* A TLS session for a new connection; its handshake runs on the loop, bounded by
 * tls_handshake_timeout_ms, so a silent client holds no thread. */
static int mprpc__accept_tls(mprpc_server *srv, mprpc__conn *c)
{
    char why[200];
    c->tls = mprpc__tls_io->conn_new(srv->tls, c->fd, NULL, why, sizeof why);
    if (!c->tls) {
        MPRPC_LOG_WARN("fd %d: %s; closing", c->fd, why);
        return 0;
    }
    c->handshaking = 1;
    c->hs_want = EPOLLIN;
    c->hs_deadline_ms = mprpc__now_ms() + (uint64_t)srv->cfg.tls_handshake_timeout_ms;
    return 1;
}

static void mprpc__accept_one(mprpc_server *srv, int fd, int stopping)
{
    int one = 1, over = MPRPC__LOAD(&srv->open_conns) >= (uint64_t)srv->cfg.max_connections;
    mprpc__conn *c = NULL;
    if ((!over && !stopping) || MPRPC__LOAD(&srv->refused_conns) < MPRPC__REFUSED_MAX)
        c = (mprpc__conn *)mprpc__zalloc(sizeof *c);
    if (!c) {
        MPRPC__ADD(&srv->accept_stats.connections_rejected, 1); /* counted before the peer can see it */
        close(fd);
        return;
    }
    c->fd = fd;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (srv->tls && !mprpc__accept_tls(srv, c)) {
        MPRPC__ADD(&srv->accept_stats.connections_rejected, 1);
        close(fd);
        MPRPC_FREE(c);
        return;
    }
    if (over || stopping) {
        c->state = MPRPC__CONN_REFUSING;
        c->refuse_status = stopping ? MPRPC_ERR_SHUTDOWN : MPRPC_ERR_BUSY;
        c->until_ms = mprpc__now_ms() + (stopping ? MPRPC__DRAIN_QUIET_MS : MPRPC__BUSY_GRACE_MS);
        MPRPC__ADD(&srv->refused_conns, 1);
        MPRPC__ADD(&srv->accept_stats.connections_rejected, 1);
    } else {
        c->counted_open = 1;
        MPRPC__ADD(&srv->open_conns, 1);
        MPRPC__ADD(&srv->accept_stats.connections_accepted, 1);
    }
    mprpc__loop_hand_over(&srv->loops[srv->next_loop++ % (unsigned)srv->nloops], c);
}

/* Accepts what is pending, at most max. Returns 0, or until when to pause. */
static uint64_t mprpc__accept_batch(mprpc_server *srv, int max, int stopping)
{
    int i;
    for (i = 0; i < max; i++) {
        int fd = accept4(srv->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            mprpc__accept_one(srv, fd, stopping);
            continue;
        }
        if (errno == EINTR || errno == ECONNABORTED) continue;
        if (errno == EMFILE || errno == ENFILE) {
            uint64_t pause = mprpc__accept_shed(srv);
            if (pause) return pause;
            continue;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK) MPRPC_LOG_WARN("accept: %s", strerror(errno));
        return 0;
    }
    return 0;
}

static void mprpc__server_drain(mprpc_server *srv);

/* Waits for the listener or the stop; the accept pause is a local of this
 * thread. Then drains the server. */
static void *mprpc__acceptor_main(void *arg)
{
    mprpc_server *srv = (mprpc_server *)arg;
    uint64_t paused_until = 0;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    while (!__atomic_load_n(&srv->stop_requested, __ATOMIC_SEQ_CST)) {
        struct pollfd pf[2];
        uint64_t now = mprpc__now_ms();
        int timeout = -1, n;
        if (paused_until && now >= paused_until) paused_until = 0;
        if (paused_until) timeout = (int)(paused_until - now);
        pf[0].fd = srv->stop_fd;
        pf[1].fd = paused_until ? -1 : srv->listen_fd; /* a negative fd is skipped */
        pf[0].events = pf[1].events = POLLIN;
        pf[0].revents = pf[1].revents = 0;
        n = poll(pf, 2, timeout);
        if (n < 0 && errno != EINTR) {
            MPRPC_LOG_ERROR("acceptor: poll: %s; stopping the server", strerror(errno));
            break;
        }
        if (n > 0 && pf[1].revents) paused_until = mprpc__accept_batch(srv, MPRPC__ACCEPTS_PER_WAKE, 0);
    }
    mprpc__server_drain(srv);
    return NULL;
}
/* ------------------------------------------------------------------------ */
/* -- 7g. lifecycle: new, start, run, stop, free --------------------------- */
/* ------------------------------------------------------------------------ */

MPRPCDEF mprpc_status mprpc_server_new(mprpc_server **out, const mprpc_config *cfg)
{
    mprpc_server *srv;
    mprpc_status st;
    if (!out || !cfg) return MPRPC_ERR_INVALID_ARGUMENT;
    *out = NULL;
    st = mprpc__config_check(cfg, "mprpc_server_new");
    if (st != MPRPC_OK) return st;
    if (mprpc__nanopb_check("mprpc_server_new") != MPRPC_OK) return MPRPC_ERR_UNSUPPORTED;
    srv = (mprpc_server *)mprpc__zalloc(sizeof *srv);
    if (!srv) return MPRPC_ERR_NO_MEMORY;
    srv->cfg = *cfg;
    srv->listen_fd = srv->spare_fd = -1;
    srv->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK); /* before start: stop may come any time */
    if (srv->stop_fd < 0) {
        MPRPC_FREE(srv);
        return MPRPC_ERR_IO;
    }
    pthread_mutex_init(&srv->life_mu, NULL);
    pthread_cond_init(&srv->life_cv, NULL);
    srv->state = MPRPC__SRV_NEW;
    *out = srv;
    return MPRPC_OK;
}

static void mprpc__srv_set_state(mprpc_server *srv, int state)
{
    pthread_mutex_lock(&srv->life_mu);
    __atomic_store_n(&srv->state, state, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&srv->life_cv);
    pthread_mutex_unlock(&srv->life_mu);
}

/* Waits (life_mu held) until the state is none of the two given. */
static void mprpc__srv_wait_while(mprpc_server *srv, int a, int b)
{
    while (srv->state == a || srv->state == b) pthread_cond_wait(&srv->life_cv, &srv->life_mu);
}

/* Where the provider listens: rpcserver_address, else rpcserver_ip:rpcserver_port. */
static mprpc_status mprpc__listen_addr(mprpc_server *srv, mprpc__addr *a)
{
    const mprpc_config *cfg = &srv->cfg;
    char why[200];
    int ok = cfg->rpcserver_address[0]
                 ? mprpc__addr_parse(cfg->rpcserver_address, a, why, sizeof why)
                 : mprpc__addr_host(cfg->rpcserver_ip, cfg->rpcserver_port, a, why, sizeof why);
    if (ok && a->kind == MPRPC__ADDR_NAME) ok = mprpc__resolve_now(a, why, sizeof why);
    if (ok) return MPRPC_OK;
    mprpc__srv_fail(srv, "listen: %s", why);
    return MPRPC_ERR_CONFIG;
}

static int mprpc__bind_listen(int fd, const mprpc__addr *a)
{
    return bind(fd, (const struct sockaddr *)&a->sa, a->salen) == 0 && listen(fd, 1024) == 0 ? 0 : -1;
}

/* A unix socket file left behind by a provider that died: nobody accepts on it, so it may go. */
static int mprpc__unix_stale(const mprpc__addr *a)
{
    int fd, stale;
    if (a->kind != MPRPC__ADDR_UNIX || a->host[0] != '/') return 0;
    if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0) return 0;
    stale = connect(fd, (const struct sockaddr *)&a->sa, a->salen) != 0 && errno == ECONNREFUSED;
    close(fd);
    return stale && unlink(a->host) == 0;
}

static mprpc_status mprpc__listen(mprpc_server *srv)
{
    mprpc__addr *a = &srv->listen_addr;
    struct sockaddr_storage sa;
    socklen_t len = sizeof sa;
    int one = 1, zero = 0, fd, rc;
    if (mprpc__listen_addr(srv, a) != MPRPC_OK) return MPRPC_ERR_CONFIG;
    mprpc__addr_text(a, srv->listen_text, sizeof srv->listen_text);
    fd = socket(a->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        mprpc__srv_fail(srv, "socket for %s: %s", srv->listen_text, strerror(errno));
        return MPRPC_ERR_IO;
    }
    if (a->kind != MPRPC__ADDR_UNIX) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    /* [::] serves IPv4 callers too, whatever net.ipv6.bindv6only says */
    if (a->sa.ss_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
    rc = mprpc__bind_listen(fd, a);
    if (rc != 0 && errno == EADDRINUSE && mprpc__unix_stale(a)) rc = mprpc__bind_listen(fd, a);
    if (rc != 0 || getsockname(fd, (struct sockaddr *)&sa, &len) != 0) {
        mprpc__srv_fail(srv, "listen on %s: %s", srv->listen_text, strerror(errno));
        close(fd);
        return MPRPC_ERR_IO;
    }
    srv->listen_fd = fd;
    srv->unlink_path = a->kind == MPRPC__ADDR_UNIX && a->host[0] == '/';
    srv->port = a->port = mprpc__sockaddr_port(&sa);
    mprpc__addr_text(a, srv->listen_text, sizeof srv->listen_text); /* with the bound port */
    return MPRPC_OK;
}

/* The address published in ZooKeeper: advertise_address, else advertise_ip (or the listening host)
 * with the bound port (rpcserver_port for a unix listener). A unix socket or a wildcard is no address
 * a caller on another host can dial, and seed callers read only IPv4 "ip:port". */
static mprpc_status mprpc__advertised(mprpc_server *srv, char *addr, size_t cap)
{
    const mprpc_config *cfg = &srv->cfg;
    const mprpc__addr *l = &srv->listen_addr;
    mprpc__addr a;
    char why[160];
    int unix_l = l->kind == MPRPC__ADDR_UNIX;
    if (cfg->advertise_address[0]) mprpc__copy_str(addr, cap, cfg->advertise_address);
    else if (cfg->advertise_ip[0]) mprpc__addr_join(addr, cap, cfg->advertise_ip, unix_l ? cfg->rpcserver_port : srv->port);
    else if (!unix_l && !mprpc__addr_wildcard(l)) mprpc__addr_text(l, addr, cap);
    else {
        mprpc__srv_fail(srv, "%s %s but is no address a caller can use: set advertise_address (or advertise_ip) "
                        "to publish in ZooKeeper", srv->listen_text, unix_l ? "is a unix socket" : "listens everywhere");
        return MPRPC_ERR_CONFIG;
    }
    if (!mprpc__addr_parse(addr, &a, why, sizeof why) || a.kind == MPRPC__ADDR_UNIX) {
        mprpc__srv_fail(srv, "advertised address: %s", a.kind == MPRPC__ADDR_UNIX ? "a unix socket is reachable "
                        "from this host only: advertise a TCP address to publish in ZooKeeper" : why);
        return MPRPC_ERR_CONFIG;
    }
    if (mprpc__seed_publish(cfg) && (a.kind != MPRPC__ADDR_IP || a.sa.ss_family != AF_INET)) {
        mprpc__srv_fail(srv, "zookeeper_seed_layout: seed callers read an IPv4 ip:port, and '%s' is not one: "
                        "set advertise_ip to an IPv4 address", addr);
        return MPRPC_ERR_CONFIG;
    }
    return MPRPC_OK;
}

/* ZooKeeper registration once calls can be served: every method of every service, no cap (the registry
 * decides the seed layout and says so: mprpc__seed_publish). */
static mprpc_status mprpc__server_publish(mprpc_server *srv)
{
    char addr[MPRPC_ADDR_MAX + 8];
    const char **names;
    size_t i, j, most = 1;
    mprpc_status st;
    if (!mprpc__registry_wanted(&srv->cfg)) return MPRPC_OK;
    if ((st = mprpc__advertised(srv, addr, sizeof addr)) != MPRPC_OK) return st;
    for (i = 0; i < srv->nservices; i++)
        if (srv->services[i]->method_count > most) most = srv->services[i]->method_count;
    names = (const char **)MPRPC_MALLOC(most * sizeof *names);
    if (!names) {
        mprpc__srv_fail(srv, "out of memory for the names of %zu methods to publish", most);
        return MPRPC_ERR_NO_MEMORY;
    }
    st = mprpc__registry_open(&srv->registry, &srv->cfg, srv->error, sizeof srv->error);
    for (i = 0; st == MPRPC_OK && i < srv->nservices; i++) {
        const mprpc_service *svc = srv->services[i];
        if (svc == &srv->admin) continue; /* every provider has it: not a service to discover (7i) */
        for (j = 0; j < svc->method_count; j++) names[j] = svc->methods[j].name;
        st = mprpc__registry_publish(srv->registry, svc->name, addr, names, svc->method_count, srv->error,
                                     sizeof srv->error);
    }
    MPRPC_FREE(names);
    return st;
}

/* Sockets, loops and their threads, then the acceptor. */
static mprpc_status mprpc__server_open(mprpc_server *srv)
{
    mprpc_status st;
    int i;
    st = mprpc_config_validate(&srv->cfg);
    if (st != MPRPC_OK) {
        mprpc__srv_fail(srv, "%s", srv->cfg.error);
        return st;
    }
    st = mprpc__admin_open(srv);
    if (st == MPRPC_OK) st = mprpc__routes_build(srv);
    if (st == MPRPC_OK && srv->cfg.tls_enable &&
        (srv->tls = mprpc__tls_io->ctx_new(&srv->cfg, 1, srv->error, sizeof srv->error)) == NULL)
        st = MPRPC_ERR_TLS;
    if (st == MPRPC_OK) st = mprpc__listen(srv);
    if (st != MPRPC_OK) return st;
    srv->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    srv->loops = (mprpc__loop *)mprpc__zalloc((size_t)srv->cfg.io_threads * sizeof *srv->loops);
    if (!srv->loops) return MPRPC_ERR_NO_MEMORY;
    for (i = 0; i < srv->cfg.io_threads; i++) {
        st = mprpc__loop_init(srv, &srv->loops[srv->nloops], i);
        srv->nloops++; /* every loop initialised (even partly) is torn down */
        if (st != MPRPC_OK) return st;
    }
    for (i = 0; i < srv->nloops; i++) {
        if (mprpc__thread_start(&srv->loops[i].thread, mprpc__loop_main, &srv->loops[i]) != 0) {
            mprpc__srv_fail(srv, "cannot start loop thread %d of %d", i, srv->nloops);
            return MPRPC_ERR_IO;
        }
        srv->loops[i].thread_started = 1;
    }
    if (mprpc__thread_start(&srv->acceptor, mprpc__acceptor_main, srv) != 0) {
        mprpc__srv_fail(srv, "cannot start the acceptor thread");
        return MPRPC_ERR_IO;
    }
    srv->acceptor_started = 1;
    return MPRPC_OK;
}

static void mprpc__join(pthread_t t, const char *what, int index)
{
    int rc = pthread_join(t, NULL);
    if (rc != 0) MPRPC_LOG_ERROR("pthread_join %s %d: %s", what, index, strerror(rc));
}

/* Graceful stop (on the acceptor thread, or inline when start failed):
 * deregister, refuse what waits in the backlog, drain every loop, join,
 * release everything but the loops' stats. */
static void mprpc__server_drain(mprpc_server *srv)
{
    int i;
    pthread_mutex_lock(&srv->life_mu);
    mprpc__srv_wait_while(srv, MPRPC__SRV_STARTING, -1); /* start finishes first (it may publish) */
    pthread_mutex_unlock(&srv->life_mu);
    mprpc__srv_set_state(srv, MPRPC__SRV_STOPPING);
    mprpc__registry_close(srv->registry); /* callers stop picking us before we close */
    srv->registry = NULL;
    if (srv->listen_fd >= 0 && srv->nloops > 0 && srv->loops[srv->nloops - 1].thread_started)
        mprpc__accept_batch(srv, 1024, 1); /* each answered SHUTDOWN rather than reset */
    if (srv->listen_fd >= 0) close(srv->listen_fd);
    if (srv->listen_fd >= 0 && srv->unlink_path) unlink(srv->listen_addr.host);
    srv->listen_fd = -1;
    for (i = 0; i < srv->nloops; i++) {
        mprpc__loop *l = &srv->loops[i];
        pthread_mutex_lock(&l->mu);
        l->drain_requested = 1;
        pthread_mutex_unlock(&l->mu);
        mprpc__loop_wake(l);
    }
    for (i = 0; i < srv->nloops; i++)
        if (srv->loops[i].thread_started) mprpc__join(srv->loops[i].thread, "loop", i);
    for (i = 0; i < srv->nloops; i++) mprpc__loop_uninit(&srv->loops[i]);
    if (srv->spare_fd >= 0) close(srv->spare_fd);
    srv->spare_fd = -1;
    MPRPC_LOG_INFO("provider on port %d stopped", srv->port);
    mprpc__srv_set_state(srv, MPRPC__SRV_STOPPED);
}

/* NEW -> STARTING, or why not. *running: it already runs (start is a no-op). */
static mprpc_status mprpc__server_claim_start(mprpc_server *srv, int *running)
{
    mprpc_status st = MPRPC_OK;
    *running = 0;
    pthread_mutex_lock(&srv->life_mu);
    if (srv->state == MPRPC__SRV_RUNNING) {
        *running = 1;
    } else if (srv->state != MPRPC__SRV_NEW) { /* its loops and sockets are gone, or going */
        st = MPRPC_ERR_INVALID_ARGUMENT;
    } else if (__atomic_load_n(&srv->stop_requested, __ATOMIC_SEQ_CST)) {
        __atomic_store_n(&srv->state, MPRPC__SRV_STOPPED, __ATOMIC_RELEASE);
        st = MPRPC_ERR_SHUTDOWN;
    } else {
        __atomic_store_n(&srv->state, MPRPC__SRV_STARTING, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&srv->life_mu);
    if (st == MPRPC_ERR_INVALID_ARGUMENT)
        mprpc__srv_fail(srv, "this server has stopped (or failed to start, or is starting); create a new one");
    if (st == MPRPC_ERR_SHUTDOWN)
        mprpc__srv_fail(srv, "mprpc_server_stop was called before start: not starting");
    return st;
}

/* Start failed half-way: tear down what exists, through the acceptor when it runs. */
static void mprpc__server_abort_start(mprpc_server *srv)
{
    mprpc__srv_set_state(srv, MPRPC__SRV_STOPPING);
    if (!srv->acceptor_started) {
        mprpc__server_drain(srv);
        return;
    }
    mprpc_server_stop(srv);
    mprpc__join(srv->acceptor, "acceptor", 0);
    srv->acceptor_started = 0;
}

MPRPCDEF mprpc_status mprpc_server_start(mprpc_server *srv)
{
    mprpc_status st;
    int running;
    if (!srv) return MPRPC_ERR_INVALID_ARGUMENT;
    st = mprpc__server_claim_start(srv, &running);
    if (st != MPRPC_OK || running) return st;
    srv->error[0] = '\0';
    st = mprpc__server_open(srv);
    if (st == MPRPC_OK) st = mprpc__server_publish(srv);
    if (st != MPRPC_OK) {
        mprpc__server_abort_start(srv);
        return st;
    }
    MPRPC_LOG_INFO("serving %zu service(s) on %s with %d loop(s)", srv->nservices, srv->listen_text,
                   srv->nloops);
    mprpc__srv_set_state(srv, MPRPC__SRV_RUNNING); /* a stop that came meanwhile drains now */
    return MPRPC_OK;
}

MPRPCDEF mprpc_status mprpc_server_run(mprpc_server *srv)
{
    mprpc_status st;
    if (!srv) return MPRPC_ERR_INVALID_ARGUMENT;
    if (mprpc__srv_state(srv) == MPRPC__SRV_NEW) {
        st = mprpc_server_start(srv);
        if (st != MPRPC_OK) return st;
    }
    pthread_mutex_lock(&srv->life_mu);
    srv->runners++;
    while (srv->state != MPRPC__SRV_STOPPED && srv->state != MPRPC__SRV_NEW)
        pthread_cond_wait(&srv->life_cv, &srv->life_mu);
    srv->runners--;
    pthread_cond_broadcast(&srv->life_cv);
    pthread_mutex_unlock(&srv->life_mu);
    return MPRPC_OK;
}

MPRPCDEF void mprpc_server_stop(mprpc_server *srv)
{
    int saved = errno; /* may run in a signal handler */
    uint64_t one = 1;
    if (!srv) return;
    __atomic_store_n(&srv->stop_requested, 1, __ATOMIC_SEQ_CST); /* lock-free: signal-safe */
    if (write(srv->stop_fd, &one, sizeof one) < 0) { /* full counter: already signalled */ }
    errno = saved;
}

/* Is the calling thread one of the server's own (a handler's loop, the acceptor)? */
static int mprpc__server_on_own_thread(mprpc_server *srv)
{
    pthread_t self = pthread_self();
    int i, state = mprpc__srv_state(srv);
    if (state == MPRPC__SRV_NEW || state == MPRPC__SRV_STARTING) return 0;
    if (srv->acceptor_started && pthread_equal(self, srv->acceptor)) return 1;
    for (i = 0; i < srv->nloops; i++)
        if (srv->loops[i].thread_started && pthread_equal(self, srv->loops[i].thread)) return 1;
    return 0;
}

MPRPCDEF void mprpc_server_free(mprpc_server *srv)
{
    if (!srv) return;
    if (mprpc__server_on_own_thread(srv)) { /* the drain would wait for this very thread */
        mprpc_server_stop(srv);
        mprpc__srv_fail(srv, "mprpc_server_free called on one of the server's own threads (from a "
                        "handler?): refused; the server stops, free it from another thread");
        return;
    }
    mprpc_server_stop(srv);
    pthread_mutex_lock(&srv->life_mu);
    while (srv->state == MPRPC__SRV_STARTING || srv->state == MPRPC__SRV_RUNNING ||
           srv->state == MPRPC__SRV_STOPPING || srv->runners > 0)
        pthread_cond_wait(&srv->life_cv, &srv->life_mu);
    pthread_mutex_unlock(&srv->life_mu);
    if (srv->acceptor_started) mprpc__join(srv->acceptor, "acceptor", 0);
    close(srv->stop_fd);
    pthread_cond_destroy(&srv->life_cv);
    pthread_mutex_destroy(&srv->life_mu);
    MPRPC_FREE(srv->loops);
    MPRPC_FREE(srv->mstats);
    MPRPC_FREE(srv->routes);
    MPRPC_FREE((void *)srv->services);
    if (srv->tls) mprpc__tls_io->ctx_free(srv->tls);
    MPRPC_FREE(srv);
}

MPRPCDEF int mprpc_server_port(const mprpc_server *srv)
{
    return srv ? srv->port : 0;
}

MPRPCDEF const char *mprpc_server_address(const mprpc_server *srv)
{
    return srv ? srv->listen_text : "";
}

MPRPCDEF const char *mprpc_server_error(const mprpc_server *srv)
{
    return srv ? srv->error : "no server";
}

static void mprpc__stats_add(mprpc_server_stats *out, const mprpc_server_stats *s)
{
    out->connections_accepted += MPRPC__LOAD(&s->connections_accepted);
    out->connections_rejected += MPRPC__LOAD(&s->connections_rejected);
    out->accept_pauses += MPRPC__LOAD(&s->accept_pauses);
    out->calls += MPRPC__LOAD(&s->calls);
    out->call_errors += MPRPC__LOAD(&s->call_errors);
    out->protocol_errors += MPRPC__LOAD(&s->protocol_errors);
    out->expired += MPRPC__LOAD(&s->expired);
    out->deadline_dropped += MPRPC__LOAD(&s->deadline_dropped);
    out->refused += MPRPC__LOAD(&s->refused);
    out->abandoned += MPRPC__LOAD(&s->abandoned);
    out->deferred_pending += MPRPC__LOAD(&s->deferred_pending);
    out->call_pool_bytes += MPRPC__LOAD(&s->call_pool_bytes);
    out->buffer_bytes += MPRPC__LOAD(&s->buffer_bytes);
    out->arena_bytes += MPRPC__LOAD(&s->arena_bytes);
    out->arena_refused += MPRPC__LOAD(&s->arena_refused);
}

MPRPCDEF void mprpc_server_get_stats(mprpc_server *srv, mprpc_server_stats *out)
{
    int i, state;
    if (!out) return;
    memset(out, 0, sizeof *out);
    if (!srv) return;
    state = mprpc__srv_state(srv); /* acquire: the loops are set up once RUNNING is seen */
    mprpc__stats_add(out, &srv->accept_stats);
    out->connections_open = MPRPC__LOAD(&srv->open_conns);
    if (state == MPRPC__SRV_NEW || state == MPRPC__SRV_STARTING) return;
    for (i = 0; i < srv->nloops; i++) mprpc__stats_add(out, &srv->loops[i].stats);
}

/* ------------------------------------------------------------------------ */
/* -- 7h. the call, seen from a handler ------------------------------------ */
/* ------------------------------------------------------------------------ */

MPRPCDEF void mprpc_call_fail(mprpc_call *call, const char *fmt, ...)
{
    va_list ap;
    if (!call) return;
    call->status = MPRPC_ERR_APPLICATION;
    va_start(ap, fmt);
    mprpc__vfmt(call->error_text, sizeof call->error_text, fmt, ap);
    va_end(ap);
}

MPRPCDEF void mprpc_call_defer(mprpc_call *call)
{
    int expected = MPRPC__CALL_RUNNING;
    if (!call) return;
    if (!__atomic_compare_exchange_n(&call->state, &expected, MPRPC__CALL_DEFERRED, 0,
                                     __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        MPRPC_LOG_WARN("mprpc_call_defer on %s.%s: the call is not in its handler (state %d): ignored",
                       call->service->name, call->method->name, expected);
}

MPRPCDEF void mprpc_call_done(mprpc_call *call)
{
    int expected = MPRPC__CALL_DEFERRED;
    if (!call) return;
    if (__atomic_compare_exchange_n(&call->state, &expected, MPRPC__CALL_POSTED, 0,
                                    __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        mprpc__loop_post(call->loop, call);
        return;
    }
    if (expected == MPRPC__CALL_ABANDONED) { /* the server gave up on it: this is the last reference */
        MPRPC_LOG_DEBUG("mprpc_call_done on an abandoned call: freed, no answer sent");
        mprpc__arena_free(call);
        MPRPC_FREE(call);
        return;
    }
    MPRPC_LOG_ERROR("mprpc_call_done on %s.%s (call_id %llu): the call is %s: ignored",
                    call->service->name, call->method->name, (unsigned long long)call->call_id,
                    expected == MPRPC__CALL_RUNNING ? "not deferred (call mprpc_call_defer first)"
                                                    : "already done");
}

MPRPCDEF int mprpc_call_time_left_ms(const mprpc_call *call)
{
    uint64_t now;
    if (!call || call->deadline_ms == 0) return -1;
    now = mprpc__now_ms();
    if (now >= call->deadline_ms) return 0;
    return call->deadline_ms - now > (uint64_t)INT_MAX ? INT_MAX : (int)(call->deadline_ms - now);
}

MPRPCDEF const char *mprpc_call_service(const mprpc_call *call)
{
    return call ? call->service->name : "";
}

MPRPCDEF const char *mprpc_call_peer_identity(const mprpc_call *call)
{
    return call && call->conn && call->conn->tls ? mprpc__tls_io->peer(call->conn->tls) : "";
}

MPRPCDEF const char *mprpc_call_method(const mprpc_call *call)
{
    return call ? call->method->name : "";
}

/* Touches only the call: a deferred call's worker may use it while the loop
 * goes on, and an abandoned call may outlive its server. */
MPRPCDEF void *mprpc_call_alloc(mprpc_call *call, size_t n)
{
    mprpc__arena_block *b;
    if (!call || n == 0) return NULL;
    if (n > call->arena_max - call->arena_used || n > SIZE_MAX - sizeof *b) {
        call->arena_refused++;
        MPRPC_LOG_DEBUG("%s.%s: mprpc_call_alloc(%zu) refused: %zu of call_arena_max %zu in use",
                        call->service->name, call->method->name, n, call->arena_used, call->arena_max);
        return NULL;
    }
    b = (mprpc__arena_block *)MPRPC_MALLOC(sizeof *b + n);
    if (!b) {
        call->arena_refused++;
        return NULL;
    }
    b->h.next = call->arena;
    b->h.size = n;
    call->arena = b;
    call->arena_used += n;
    return b + 1;
}

MPRPCDEF size_t mprpc_call_arena_used(const mprpc_call *call)
{
    return call ? call->arena_used : 0;
}

/* ------------------------------------------------------------------------ */
/* -- 7i. the built-in admin service: health, services, stats ------------- */
/* ------------------------------------------------------------------------ */

/* The admin messages' descriptors (the nanopb .pb.c of proto/admin.proto). */
PB_BIND(mprpc_admin_HealthRequest, mprpc_admin_HealthRequest, AUTO)
PB_BIND(mprpc_admin_HealthResponse, mprpc_admin_HealthResponse, AUTO)
PB_BIND(mprpc_admin_ServicesRequest, mprpc_admin_ServicesRequest, AUTO)
PB_BIND(mprpc_admin_ServiceInfo, mprpc_admin_ServiceInfo, AUTO)
PB_BIND(mprpc_admin_ServicesResponse, mprpc_admin_ServicesResponse, AUTO)
PB_BIND(mprpc_admin_StatsRequest, mprpc_admin_StatsRequest, AUTO)
PB_BIND(mprpc_admin_LatencyBucket, mprpc_admin_LatencyBucket, AUTO)
PB_BIND(mprpc_admin_StatusCount, mprpc_admin_StatusCount, AUTO)
PB_BIND(mprpc_admin_MethodStats, mprpc_admin_MethodStats, 2)
PB_BIND(mprpc_admin_StatsResponse, mprpc_admin_StatsResponse, AUTO)

static uint64_t mprpc__now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Bucket of a latency: i such that us < 2^i, the last bucket for anything longer. */
static size_t mprpc__lat_bucket(uint64_t us)
{
    size_t i = 0;
    while (i < MPRPC__LAT_BUCKETS - 1 && us >= ((uint64_t)1 << i)) i++;
    return i;
}

/* The per-method hook, on the call's loop thread when its reply is queued (or dropped): a handful of
 * relaxed stores into this loop's own slot, no lock, no atomic read-modify-write. */
static void mprpc__admin_count(mprpc__loop *l, const mprpc_call *call, int status, size_t response_bytes)
{
    mprpc__mstats *m;
    uint64_t us;
    if (!l->mstats) return; /* admin_service = 0 */
    m = &l->mstats[call->slot];
    us = mprpc__now_us() - call->start_us;
    if (status < 0 || status >= MPRPC_STATUS_COUNT) status = MPRPC_ERR_PROTOCOL;
    MPRPC__BUMP(&m->calls, 1);
    MPRPC__BUMP(&m->by_status[status], 1);
    MPRPC__BUMP(&m->latency[mprpc__lat_bucket(us)], 1);
    MPRPC__BUMP(&m->latency_sum_us, us);
    MPRPC__BUMP(&m->request_bytes, call->request_bytes);
    MPRPC__BUMP(&m->response_bytes, (uint64_t)response_bytes);
}

/* grpc.health.v1: SERVING only while running; starting (not yet registered) and stopping are NOT_SERVING. */
static void mprpc__admin_health(mprpc_call *call, const void *request, void *response, void *user)
{
    const mprpc_admin_HealthRequest *rq = (const mprpc_admin_HealthRequest *)request;
    mprpc_admin_HealthResponse *rs = (mprpc_admin_HealthResponse *)response;
    mprpc_server *srv = (mprpc_server *)user;
    size_t i;
    (void)call;
    rs->status = mprpc__srv_state(srv) == MPRPC__SRV_RUNNING ? mprpc_admin_HealthResponse_ServingStatus_SERVING
                                                             : mprpc_admin_HealthResponse_ServingStatus_NOT_SERVING;
    if (!rq->service[0]) return;
    for (i = 0; i < srv->nservices; i++)
        if (strcmp(srv->services[i]->name, rq->service) == 0) return;
    rs->status = mprpc_admin_HealthResponse_ServingStatus_SERVICE_UNKNOWN;
}

static bool mprpc__admin_encode_methods(pb_ostream_t *stream, const pb_field_t *field, void *const *arg)
{
    const mprpc_service *svc = (const mprpc_service *)*arg;
    size_t j;
    for (j = 0; j < svc->method_count; j++) {
        const char *name = svc->methods[j].name;
        if (!pb_encode_tag_for_field(stream, field) ||
            !pb_encode_string(stream, (const pb_byte_t *)name, strlen(name)))
            return false;
    }
    return true;
}

static bool mprpc__admin_encode_services(pb_ostream_t *stream, const pb_field_t *field, void *const *arg)
{
    const mprpc_server *srv = (const mprpc_server *)*arg;
    mprpc_admin_ServiceInfo info;
    size_t i;
    for (i = 0; i < srv->nservices; i++) {
        memset(&info, 0, sizeof info);
        mprpc__copy_str(info.name, sizeof info.name, srv->services[i]->name);
        info.methods.funcs.encode = mprpc__admin_encode_methods;
        info.methods.arg = (void *)srv->services[i];
        if (!pb_encode_tag_for_field(stream, field) ||
            !pb_encode_submessage(stream, mprpc_admin_ServiceInfo_fields, &info))
            return false;
    }
    return true;
}

static void mprpc__admin_services(mprpc_call *call, const void *request, void *response, void *user)
{
    mprpc_admin_ServicesResponse *rs = (mprpc_admin_ServicesResponse *)response;
    (void)call; (void)request;
    rs->services.funcs.encode = mprpc__admin_encode_services;
    rs->services.arg = user;
}

/* One method's counters summed over the loops (relaxed loads: each loop writes only its own). */
static void mprpc__admin_method_sum(const mprpc_server *srv, size_t slot, mprpc_admin_MethodStats *out)
{
    uint64_t by_status[MPRPC_STATUS_COUNT] = {0}, lat[MPRPC__LAT_BUCKETS] = {0};
    int i;
    size_t k;
    for (i = 0; i < srv->nloops; i++) {
        const mprpc__mstats *m = &srv->loops[i].mstats[slot];
        out->calls += MPRPC__LOAD(&m->calls);
        out->latency_sum_us += MPRPC__LOAD(&m->latency_sum_us);
        out->request_bytes += MPRPC__LOAD(&m->request_bytes);
        out->response_bytes += MPRPC__LOAD(&m->response_bytes);
        for (k = 0; k < MPRPC_STATUS_COUNT; k++) by_status[k] += MPRPC__LOAD(&m->by_status[k]);
        for (k = 0; k < MPRPC__LAT_BUCKETS; k++) lat[k] += MPRPC__LOAD(&m->latency[k]);
    }
    for (k = 1; k < MPRPC_STATUS_COUNT; k++) { /* only the statuses that occurred */
        mprpc_admin_StatusCount *sc;
        if (!by_status[k]) continue;
        out->errors += by_status[k];
        sc = &out->errors_by_status[out->errors_by_status_count++];
        mprpc__copy_str(sc->status, sizeof sc->status, mprpc_status_name((int)k));
        sc->count = by_status[k];
    }
    for (k = 0; k < MPRPC__LAT_BUCKETS; k++) {
        if (!lat[k]) continue;
        out->latency[out->latency_count].le_us = k < MPRPC__LAT_BUCKETS - 1 ? ((uint64_t)1 << k) - 1 : 0;
        out->latency[out->latency_count++].count = lat[k];
    }
}

static bool mprpc__admin_encode_methods_stats(pb_ostream_t *stream, const pb_field_t *field, void *const *arg)
{
    const mprpc_server *srv = (const mprpc_server *)*arg;
    mprpc_admin_MethodStats ms; /* ~2 KB on the loop's stack, one method at a time */
    size_t i, j, slot = 0;
    for (i = 0; i < srv->nservices; i++) {
        const mprpc_service *svc = srv->services[i];
        for (j = 0; j < svc->method_count; j++, slot++) {
            memset(&ms, 0, sizeof ms);
            mprpc__copy_str(ms.service, sizeof ms.service, svc->name);
            mprpc__copy_str(ms.method, sizeof ms.method, svc->methods[j].name);
            mprpc__admin_method_sum(srv, slot, &ms);
            if (!pb_encode_tag_for_field(stream, field) ||
                !pb_encode_submessage(stream, mprpc_admin_MethodStats_fields, &ms))
                return false;
        }
    }
    return true;
}

static void mprpc__admin_stats(mprpc_call *call, const void *request, void *response, void *user)
{
    mprpc_admin_StatsResponse *rs = (mprpc_admin_StatsResponse *)response;
    mprpc_server *srv = (mprpc_server *)user;
    mprpc_server_stats st;
    int i;
    (void)call; (void)request;
    mprpc_server_get_stats(srv, &st);
    rs->serving = mprpc__srv_state(srv) == MPRPC__SRV_RUNNING;
    rs->connections_accepted = st.connections_accepted;
    rs->connections_open = st.connections_open;
    rs->connections_rejected = st.connections_rejected;
    rs->calls = st.calls;
    rs->call_errors = st.call_errors;
    rs->protocol_errors = st.protocol_errors;
    rs->expired = st.expired;
    rs->deadline_dropped = st.deadline_dropped;
    rs->refused = st.refused;
    rs->abandoned = st.abandoned;
    rs->deferred_pending = st.deferred_pending;
    rs->io_threads = (uint64_t)srv->nloops;
    for (i = 0; i < srv->nloops; i++) {
        rs->bytes_in += MPRPC__LOAD(&srv->loops[i].bytes_in);
        rs->bytes_out += MPRPC__LOAD(&srv->loops[i].bytes_out);
        rs->loop_busy_us += MPRPC__LOAD(&srv->loops[i].busy_us);
    }
    rs->methods.funcs.encode = mprpc__admin_encode_methods_stats;
    rs->methods.arg = srv;
}

static const mprpc_method mprpc__admin_methods[] = {
    MPRPC_METHOD("Health", mprpc_admin_HealthRequest, mprpc_admin_HealthResponse, mprpc__admin_health),
    MPRPC_METHOD("Services", mprpc_admin_ServicesRequest, mprpc_admin_ServicesResponse, mprpc__admin_services),
    MPRPC_METHOD("Stats", mprpc_admin_StatsRequest, mprpc_admin_StatsResponse, mprpc__admin_stats),
};

/* At start, before the routes are built: adds the admin service (last, unless the program added one of
 * that name itself) and the per-loop counters of every method. */
static mprpc_status mprpc__admin_open(mprpc_server *srv)
{
    size_t i, methods = 0;
    const mprpc_service admin = MPRPC_SERVICE(MPRPC_ADMIN_SERVICE, mprpc__admin_methods, NULL);
    const mprpc_service **grown;
    if (!srv->cfg.admin_service) return MPRPC_OK;
    srv->admin = admin;
    srv->admin.user = srv;
    for (i = 0; i < srv->nservices; i++)
        if (strcmp(srv->services[i]->name, MPRPC_ADMIN_SERVICE) == 0) {
            mprpc__srv_fail(srv, "service '%s' is the built-in admin service: set admin_service = 0 to serve "
                            "your own", MPRPC_ADMIN_SERVICE);
            return MPRPC_ERR_CONFIG;
        }
    grown = (const mprpc_service **)MPRPC_REALLOC((void *)srv->services, (srv->nservices + 1) * sizeof *grown);
    if (!grown) {
        mprpc__srv_fail(srv, "out of memory for the admin service");
        return MPRPC_ERR_NO_MEMORY;
    }
    srv->services = grown;
    srv->services[srv->nservices++] = &srv->admin;
    for (i = 0; i < srv->nservices; i++) methods += srv->services[i]->method_count;
    srv->mstats = (mprpc__mstats *)mprpc__zalloc((size_t)srv->cfg.io_threads * methods * sizeof *srv->mstats);
    if (!srv->mstats) {
        mprpc__srv_fail(srv, "out of memory for the admin stats of %zu methods", methods);
        return MPRPC_ERR_NO_MEMORY;
    }
    return MPRPC_OK;
}

/* ======================================================================== */
/* == 8. channel ========================================================== */
/* ======================================================================== */

/* How the caller side works. One I/O thread per channel runs epoll over every provider connection
 * plus an eventfd for wake-ups.
 *
 *   caller threads (blocking and async)        the channel's I/O thread
 *   resolve providers (registry, no lock)      reads replies, matches call_id -> call record
 *   take a call record from the pool           decodes into the caller's response struct
 *   encode the request into the record         completes: signals the blocking caller's cv
 *   route: provider -> connection                or runs the async callback
 *   append to the connection's output; send    times calls out (binary heap of deadlines)
 *     at once if it was empty                  flushes output queued by callbacks once per turn
 *   blocking: wait on the record's cv          retries unsent calls, ejects failing providers
 *
 * Locks. ch->mu guards the pool, the deadline heap, providers, services, connection lists, and every
 * record's state and links. c->wmu guards one connection's output: buffer, byte counts, fd for sending.
 * Order: ch->mu before c->wmu. A caller takes c->wmu before it lets ch->mu go (hand over hand), so the
 * I/O thread, which closes a connection holding both, never sees a half-queued request. No lock is held
 * across a registry call or a user callback. */

#define MPRPC__REC_KEEP   (16 * 1024)  /* larger request buffers are given back when a record is freed */
#define MPRPC__BIG_BUF    (1024 * 1024) /* a connection's buffers above this are given back once empty */
#define MPRPC__IO_TICK_MS 1000         /* the I/O thread looks at its timers at least this often */
#define MPRPC__IO_EVENTS  64
#define MPRPC__SVC_IDLE_MS 600000      /* a service table not called for 10 minutes is dropped (as long as
                                          the registry keeps an unresolved cache entry, MPRPC__REG_IDLE_MS) */
#define MPRPC__SWEEP_MS   60000        /* the I/O thread looks for idle tables and unused providers this
                                          often, and at its next turn after a table was reinstalled */

typedef enum mprpc__rec_state {
    MPRPC__REC_FREE,      /* in the pool's free list */
    MPRPC__REC_NEW,       /* taken by a caller, being encoded */
    MPRPC__REC_ROUTED,    /* in the deadline heap; on a connection (or between two, being retried) */
    MPRPC__REC_FINISHING, /* outcome known, in ctl; the I/O thread is about to complete it */
    MPRPC__REC_DONE       /* blocking call completed: its caller returns the record */
} mprpc__rec_state;

typedef enum mprpc__pconn_state {
    MPRPC__PCONN_CONNECTING,
    MPRPC__PCONN_READY,
    MPRPC__PCONN_DRAINING, /* the provider answered SHUTDOWN or BUSY: no new calls; closed when empty */
    MPRPC__PCONN_CLOSED    /* fd closed; freed at the end of the I/O thread's turn */
} mprpc__pconn_state;

typedef enum mprpc__prov_state {
    MPRPC__PROV_OK,
    MPRPC__PROV_EJECTED, /* out of rotation until ejected_until */
    MPRPC__PROV_PROBING  /* ejection over: one probe call decides */
} mprpc__prov_state;

typedef enum mprpc__chan_state { MPRPC__CHAN_RUNNING, MPRPC__CHAN_STOPPING } mprpc__chan_state;

typedef struct mprpc__rec  mprpc__rec;
typedef struct mprpc__pconn mprpc__pconn;
typedef struct mprpc__prov mprpc__prov;

struct mprpc__pconn {
    mprpc__pconn_state state;        /* ch->mu */
    int               seed;         /* v0: one call, the bare reply read until the provider closes */
    mprpc__prov      *prov;
    mprpc__pconn      *next;         /* prov->conns (ch->mu) */
    mprpc__rec       *calls;        /* routed here and unanswered (ch->mu) */
    int               ncalls;
    unsigned          abandoned;    /* timed-out calls whose late reply may still come (ch->mu) */
    uint64_t          connect_deadline;
    mprpc__dns       *res;          /* a host name being (or resolved and) dialled; fd is its eventfd
                                        until the name resolves (I/O thread, or at open under mu) */
    int               res_next;     /* I/O thread: the resolved address to try next */
    mprpc__tls       *tls;          /* TLS session (wmu once connected: callers write, the I/O thread
                                       reads, and a session is not for two threads at once) */
    pthread_mutex_t   wmu;
    int               fd;           /* wmu to use or close; -1 once closed */
    int               connected;    /* wmu: sending allowed */
    int               out_armed;    /* wmu: EPOLLOUT is in the interest set */
    int               rd_crossed;   /* wmu, set by the I/O thread: the TLS read waits for writability */
    int               wr_crossed;   /* wmu: the TLS write waits for readability (EPOLLIN, always armed) */
    mprpc_buf         out;          /* wmu */
    uint64_t          written;      /* wmu: bytes sent since the connection opened */
    mprpc_buf         in;           /* I/O thread only */
    int               io_ready;     /* I/O thread only: seen READY or later (no lock needed to know) */
    int               io_closed;    /* I/O thread only: closed this turn */
    int               flush_listed; /* I/O thread only */
    mprpc__pconn      *flush_next, *dead_next;
};

struct mprpc__prov {
    char              addr[MPRPC_ADDR_MAX];
    mprpc__prov_state state;
    int               listed;     /* slots of service tables naming it: 0 = no longer anyone's provider */
    int               in_use;     /* mprpc__prov_sweep only: a call in flight names it */
    mprpc__pconn      *conns;
    int               nconns;
    int               fails;      /* consecutive failures */
    int               ejections;  /* since the last success: the backoff exponent */
    int               probe_out;  /* the probe call is in flight */
    uint64_t          ejected_at, ejected_until;
};

typedef struct mprpc__svc {
    char          key[2 * MPRPC_NAME_MAX + 2]; /* "Service", or "Service/Method" in the seed layout */
    uint64_t      gen;                         /* the registry's generation of v */
    mprpc__prov **v;
    size_t        n;
    unsigned      rr;
    uint64_t      used_at;                     /* the last call that resolved it */
    int           refs;                        /* calls (and resolvers about to make one) holding it */
} mprpc__svc;

struct mprpc__rec {
    mprpc__rec_state  state;
    uint32_t          idx, gen;   /* call_id = gen << 32 | (idx + 1): never 0, stale ids do not match */
    size_t            heap_at;    /* index in ch->heap, or SIZE_MAX */
    uint64_t          deadline;
    int               timeout_ms, timeout_is_ctl;
    int               attempts, probe, seed;
    mprpc__svc       *svc;
    mprpc__prov      *prov, *avoid;
    mprpc__pconn      *conn;
    mprpc__rec       *cprev, *cnext; /* conn->calls */
    mprpc__rec       *next;          /* free list or the I/O thread's completion list */
    uint64_t          end_off;       /* conn->appended once its frame is queued there; 0 = not queued */
    mprpc_buf         req;           /* the encoded frame, kept for retries */
    const pb_msgdesc_t *resp_fields;
    void             *resp;
    mprpc_controller *ctl;
    mprpc_done_fn     done;          /* NULL: a blocking caller waits on cv */
    void             *user;
    pthread_cond_t    cv;
};

struct mprpc_channel {
    mprpc_config      cfg;
    pthread_mutex_t   mu;
    mprpc__chan_state state;
    pthread_t         io;
    int               epfd, evfd;
    int               seed_calls;   /* every call is a v0 call (seed layout, channel_protocol_version 0) */
    int               threaded;     /* channel_io_thread: 0 = poll mode (one program thread drives it) */
    int               in_dispatch;  /* poll mode: a turn of the loop is running (that thread only) */
    uint64_t          wake_at;      /* mu: when the I/O thread looks at its timers next */
    mprpc__rec      **recs;         /* the pool: channel_max_pending slots, records made on demand */
    size_t            nrecs;
    mprpc__rec       *free_recs;
    mprpc__rec      **heap;         /* calls in flight by deadline */
    size_t            nheap;
    mprpc__svc      **svcs;         /* services called within MPRPC__SVC_IDLE_MS, and ch->direct */
    size_t            nsvcs;
    mprpc__prov     **provs;        /* providers listed, or with a connection or a call in flight */
    size_t            nprovs;
    uint64_t          sweep_at;     /* when the I/O thread runs mprpc__sweep next */
    int               nconns, nconnecting;
    mprpc__svc       *direct;       /* no ZooKeeper: rpcserver_list or rpcserver_ip:port */
    mprpc__registry  *registry;
    mprpc__tls_ctx   *tls;          /* tls_enable: certificates and policy of every connection */
    int               registry_opening;
    pthread_cond_t    registry_cv;
    mprpc__rec       *done_head, *done_tail; /* I/O thread only */
    mprpc__pconn      *flush, *dead;          /* I/O thread only */
};

typedef struct mprpc__call_args {
    const char *service, *method;
    const pb_msgdesc_t *req_fields, *resp_fields;
    const void *req;
    void *resp;
} mprpc__call_args;

static int mprpc__remaining_ms(uint64_t deadline)
{
    uint64_t now = mprpc__now_ms();
    return now >= deadline ? 0 : (int)(deadline - now);
}

/* Whether the caller is the completion context: the I/O thread, or in poll mode a turn of the loop
 * (mprpc_channel_dispatch, or a blocking call running it). */
static int mprpc__on_io_thread(const mprpc_channel *ch)
{
    return ch->threaded ? pthread_equal(pthread_self(), ch->io) : ch->in_dispatch;
}

static void mprpc__wake(mprpc_channel *ch)
{
    uint64_t one = 1;
    ssize_t n = write(ch->evfd, &one, sizeof one);
    (void)n; /* a full counter already means "wake up" */
}

static const char *mprpc__timeout_name(const mprpc__rec *r)
{
    return r->timeout_is_ctl ? "ctl->timeout_ms" : "rpc_timeout_ms";
}

/* ---- pool and calls ---- */

static uint64_t mprpc__call_id(const mprpc__rec *r)
{
    return (uint64_t)r->gen << 32 | (uint64_t)(r->idx + 1);
}

/* mu held. A free record, or a new one while under channel_max_pending. */
static mprpc_status mprpc__rec_take(mprpc_channel *ch, mprpc__rec **out)
{
    mprpc__rec *r = ch->free_recs;
    if (r) {
        ch->free_recs = r->next;
    } else {
        if (ch->nrecs >= (size_t)ch->cfg.channel_max_pending) return MPRPC_ERR_BUSY;
        r = (mprpc__rec *)mprpc__zalloc(sizeof *r);
        if (!r) return MPRPC_ERR_NO_MEMORY;
        pthread_cond_init(&r->cv, NULL);
        r->idx = (uint32_t)ch->nrecs;
        ch->recs[ch->nrecs++] = r;
    }
    r->gen = r->gen + 1 ? r->gen + 1 : 1;
    r->state = MPRPC__REC_NEW;
    r->heap_at = SIZE_MAX;
    r->attempts = r->probe = 0;
    r->prov = r->avoid = NULL;
    r->conn = NULL;
    r->end_off = 0;
    *out = r;
    return MPRPC_OK;
}

static void mprpc__svc_put(mprpc_channel *ch, mprpc__svc *s);

/* mu held. */
static void mprpc__rec_give(mprpc_channel *ch, mprpc__rec *r)
{
    mprpc__svc_put(ch, r->svc);
    r->svc = NULL;
    r->prov = r->avoid = NULL; /* a provider may be freed once no call names it */
    if (r->req.cap > MPRPC__REC_KEEP) mprpc_buf_free(&r->req);
    r->req.pos = r->req.len = 0;
    r->state = MPRPC__REC_FREE;
    r->next = ch->free_recs;
    ch->free_recs = r;
}

/* mu held. The record a reply's call_id names, if it waits on c. */
static mprpc__rec *mprpc__rec_find(mprpc_channel *ch, const mprpc__pconn *c, uint64_t id)
{
    uint32_t low = (uint32_t)id;
    mprpc__rec *r;
    if (low == 0 || low > ch->nrecs) return NULL;
    r = ch->recs[low - 1];
    if (r->gen != (uint32_t)(id >> 32) || r->state != MPRPC__REC_ROUTED || r->conn != c) return NULL;
    return r;
}

/* The deadline heap (mu held): a binary min-heap of records by deadline. */
static void mprpc__heap_set(mprpc_channel *ch, size_t i, mprpc__rec *r)
{
    ch->heap[i] = r;
    r->heap_at = i;
}

static void mprpc__heap_up(mprpc_channel *ch, size_t i)
{
    mprpc__rec *r = ch->heap[i];
    while (i > 0 && ch->heap[(i - 1) / 2]->deadline > r->deadline) {
        mprpc__heap_set(ch, i, ch->heap[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    mprpc__heap_set(ch, i, r);
}

static void mprpc__heap_down(mprpc_channel *ch, size_t i)
{
    mprpc__rec *r = ch->heap[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= ch->nheap) break;
        if (c + 1 < ch->nheap && ch->heap[c + 1]->deadline < ch->heap[c]->deadline) c++;
        if (ch->heap[c]->deadline >= r->deadline) break;
        mprpc__heap_set(ch, i, ch->heap[c]);
        i = c;
    }
    mprpc__heap_set(ch, i, r);
}

static void mprpc__heap_push(mprpc_channel *ch, mprpc__rec *r)
{
    mprpc__heap_set(ch, ch->nheap++, r);
    mprpc__heap_up(ch, r->heap_at);
}

static void mprpc__heap_remove(mprpc_channel *ch, mprpc__rec *r)
{
    size_t i = r->heap_at;
    mprpc__rec *last;
    if (i == SIZE_MAX) return;
    r->heap_at = SIZE_MAX;
    last = ch->heap[--ch->nheap];
    if (i == ch->nheap) return;
    mprpc__heap_set(ch, i, last);
    mprpc__heap_up(ch, i);
    mprpc__heap_down(ch, last->heap_at);
}

/* mu held. Puts r on c's list of unanswered calls, or takes it off. */
static void mprpc__rec_link(mprpc__pconn *c, mprpc__rec *r)
{
    r->conn = c;
    r->cprev = NULL;
    r->cnext = c->calls;
    if (c->calls) c->calls->cprev = r;
    c->calls = r;
    c->ncalls++;
}

static void mprpc__rec_unlink(mprpc__rec *r)
{
    mprpc__pconn *c = r->conn;
    if (!c) return;
    if (r->cprev) r->cprev->cnext = r->cnext;
    else c->calls = r->cnext;
    if (r->cnext) r->cnext->cprev = r->cprev;
    c->ncalls--;
    r->conn = NULL;
}

/* I/O thread. Queues r for completion at the end of the turn. */
static void mprpc__done_push(mprpc_channel *ch, mprpc__rec *r)
{
    r->next = NULL;
    if (ch->done_tail) ch->done_tail->next = r;
    else ch->done_head = r;
    ch->done_tail = r;
}

/* mu held, I/O thread. r's outcome (status, text) is in its controller: queue it for completion. */
static void mprpc__finish_locked(mprpc_channel *ch, mprpc__rec *r, mprpc_status st, int may_have_run)
{
    mprpc__heap_remove(ch, r);
    mprpc__rec_unlink(r);
    if (r->probe && r->prov) r->prov->probe_out = 0;
    r->state = MPRPC__REC_FINISHING;
    r->ctl->status = st;
    r->ctl->may_have_run = st == MPRPC_OK || may_have_run;
    mprpc__done_push(ch, r);
}

/* I/O thread, no lock held: wakes the blocking caller or runs the callback. */
static void mprpc__complete(mprpc_channel *ch, mprpc__rec *r)
{
    mprpc_done_fn done = r->done;
    mprpc_controller *ctl = r->ctl;
    void *resp = r->resp, *user = r->user;
    pthread_mutex_lock(&ch->mu);
    if (!done) r->state = MPRPC__REC_DONE;
    else mprpc__rec_give(ch, r); /* before the callback: it may start calls that want a record */
    pthread_mutex_unlock(&ch->mu);
    /* Signalled after the unlock, so the waiter does not wake into a held mutex. If it already saw
     * DONE and the record went to another blocking call, that call sees one spurious wake-up:
     * records live until mprpc_channel_free. */
    if (!done) pthread_cond_signal(&r->cv);
    else done(ctl, resp, user);
}

static void mprpc__run_completions(mprpc_channel *ch)
{
    mprpc__rec *r;
    while ((r = ch->done_head) != NULL) {
        ch->done_head = r->next;
        if (!ch->done_head) ch->done_tail = NULL;
        mprpc__complete(ch, r);
    }
}

/* Raw calls (mprpc_channel_call_raw) go through the same path with this one-field message: its
 * callback writes the pre-encoded body verbatim, and a reply for it is copied, not decoded. */
typedef struct mprpc__RawMsg {
    pb_callback_t body;
} mprpc__RawMsg;
#define mprpc__RawMsg_FIELDLIST(X, a) X(a, CALLBACK, SINGULAR, BYTES, body, 1)
#define mprpc__RawMsg_CALLBACK pb_default_field_callback
#define mprpc__RawMsg_DEFAULT NULL
PB_BIND(mprpc__RawMsg, mprpc__RawMsg, AUTO)

static bool mprpc__raw_write(pb_ostream_t *stream, const pb_field_t *field, void *const *arg)
{
    const mprpc_bytes *b = (const mprpc_bytes *)*arg;
    (void)field;
    return b->size == 0 || pb_write(stream, b->data, b->size);
}

/* A raw call's reply body, into the caller's mprpc_buf. */
static int mprpc__take_raw(const pb_msgdesc_t *fields, void *resp, const uint8_t *body, size_t n,
                           mprpc_controller *ctl)
{
    mprpc_buf *out = (mprpc_buf *)resp;
    if (fields != &mprpc__RawMsg_msg) return 0;
    out->pos = out->len = 0;
    if (n && mprpc_buf_append(out, body, n, n) != MPRPC_OK)
        mprpc_controller_set_failed(ctl, MPRPC_ERR_NO_MEMORY, "no memory for a reply of %zu bytes", n);
    else
        ctl->status = MPRPC_OK;
    ctl->may_have_run = 1;
    return 1;
}

/* ---- response callback fields left without a decoder ----
 * As on the provider (7): nanopb skips a callback field whose funcs.decode is NULL, so a reply's bytes
 * field the caller did not prepare would come back silently empty. While a reply decodes, each such
 * field of the response has a decoder that refuses (nanopb calls it only when the field is on the wire,
 * so an absent field still decodes); it is taken off before the call completes, and the field's arg is
 * never touched, so the caller finds its struct as it left it. The refusing decoder marks its field by
 * swapping itself for mprpc__reply_field_refused, which is never called: no state outside the struct. */
static bool mprpc__reply_field_refused(pb_istream_t *stream, const pb_field_t *field, void **arg)
{
    (void)field;
    (void)arg;
    PB_RETURN_ERROR(stream, "a callback field without a decoder");
}

static bool mprpc__refuse_reply_field(pb_istream_t *stream, const pb_field_t *field, void **arg)
{
    (void)arg;
    ((pb_callback_t *)field->pData)->funcs.decode = mprpc__reply_field_refused;
    PB_RETURN_ERROR(stream, "a callback field without a decoder");
}

/* install: the refusing decoder on each plain callback field of resp without a decoder; otherwise take
 * it off again. Returns how many were installed, or (taking off) the number of the field refused. */
static uint32_t mprpc__guard_reply(const pb_msgdesc_t *fields, void *resp, int install)
{
    pb_field_iter_t it;
    uint32_t n = 0;
    if (!pb_field_iter_begin(&it, fields, resp)) return 0;
    do {
        pb_callback_t *cb = mprpc__plain_callback(&it);
        if (!cb) continue;
        if (install && !cb->funcs.decode) {
            cb->funcs.decode = mprpc__refuse_reply_field;
            n++;
        } else if (!install && cb->funcs.decode == mprpc__reply_field_refused) {
            cb->funcs.decode = NULL;
            n = it.tag;
        } else if (!install && cb->funcs.decode == mprpc__refuse_reply_field) {
            cb->funcs.decode = NULL;
        }
    } while (pb_field_iter_next(&it));
    return n;
}

/* Decodes a reply's body into resp and says in ctl how it went. */
static void mprpc__decode_reply(const char *what, const char *addr, const uint8_t *body, size_t n,
                                const pb_msgdesc_t *fields, void *resp, mprpc_controller *ctl)
{
    pb_istream_t is = pb_istream_from_buffer(body, n);
    uint32_t guarded = mprpc__guard_reply(fields, resp, 1), unset = 0;
    bool ok = pb_decode(&is, fields, resp);
    if (guarded) unset = mprpc__guard_reply(fields, resp, 0);
    if (ok)
        ctl->status = MPRPC_OK;
    else if (unset)
        mprpc_controller_set_failed(ctl, MPRPC_ERR_DECODE, "%s from %s: response field %u (a callback field) "
                                    "arrived but has no decoder: set its funcs.decode before the call", what,
                                    addr, (unsigned)unset);
    else
        mprpc_controller_set_failed(ctl, MPRPC_ERR_DECODE, "%s from %s (%zu bytes): cannot decode the "
                                    "response: %s", what, addr, n, PB_GET_ERROR(&is));
    ctl->may_have_run = 1;
}

/* Fills ctl (and the response on success) from a v1 reply. */
static void mprpc__take_reply(const char *addr, const mprpc_response_frame *f,
                              const pb_msgdesc_t *fields, void *resp, mprpc_controller *ctl)
{
    const mprpc_RpcResponseHeader *h = &f->header;
    if (h->status != MPRPC_OK) {
        int tls = h->status == MPRPC_ERR_TLS; /* a TLS provider refused us, a plaintext caller: say which */
        int known = (h->status > 0 && h->status < MPRPC_AGAIN) || tls;
        mprpc_controller_set_failed(ctl, known ? (mprpc_status)h->status : MPRPC_ERR_PROTOCOL, "%s%s%.*s",
                                    tls ? addr : "", tls ? ": " : "", (int)h->error_text.size,
                                    (const char *)h->error_text.bytes);
        ctl->may_have_run = h->status == MPRPC_ERR_APPLICATION; /* other provider errors: not run */
        return;
    }
    if (mprpc__take_raw(fields, resp, f->body, h->body_size, ctl)) return;
    mprpc__decode_reply("reply", addr, f->body, h->body_size, fields, resp, ctl);
}

/* Decodes a seed provider's bare reply (everything it sent before closing). */
static void mprpc__take_seed_reply(const char *addr, const uint8_t *body, size_t n,
                                   const pb_msgdesc_t *fields, void *resp, mprpc_controller *ctl)
{
    if (mprpc__take_raw(fields, resp, body, n, ctl)) return;
    mprpc__decode_reply("v0 reply", addr, body, n, fields, resp, ctl);
}

/* ---- providers and ejection ---- */

/* Outlier ejection, in the manner of Envoy/gRPC outlier detection (consecutive errors eject a host for
 * base x 2^n, capped) and Dubbo's failover (an unsent call moves to the next provider):
 *  - a failure is a call timed out on the provider (connecting or waiting for the reply), a refused,
 *    reset or timed-out connect, or a connection lost with calls on it; any reply is a success;
 *  - channel_eject_failures (3) consecutive failures eject it for channel_eject_base_ms (1000) x 2^n,
 *    capped at channel_eject_max_ms (30000); n counts ejections since its last success. Envoy's
 *    defaults are 5 errors and 30 s; here each failure costs a whole call timeout, so 3 and a short
 *    first ejection, so that a stalled provider is out within about one call timeout and a restarted
 *    one is back within a second;
 *  - when the ejection ends one probe call is sent to it: a reply returns it to rotation, a failure
 *    ejects it again for twice as long;
 *  - the last provider is never out of reach: when every provider of a service is ejected, calls go to
 *    the one ejected longest ago. Ejections and returns are logged (WARN, INFO). */
static void mprpc__prov_eject(mprpc_channel *ch, mprpc__prov *p, const char *why)
{
    uint64_t ms = (uint64_t)ch->cfg.channel_eject_base_ms, now = mprpc__now_ms();
    int i;
    for (i = 0; i < p->ejections && ms < (uint64_t)ch->cfg.channel_eject_max_ms; i++) ms *= 2;
    if (ms > (uint64_t)ch->cfg.channel_eject_max_ms) ms = (uint64_t)ch->cfg.channel_eject_max_ms;
    MPRPC_LOG_WARN("channel: ejecting provider %s for %llu ms after %d consecutive failures (last: %s)",
                   p->addr, (unsigned long long)ms, p->fails, why);
    p->state = MPRPC__PROV_EJECTED;
    p->ejections++;
    p->probe_out = 0;
    p->ejected_at = now;
    p->ejected_until = now + ms;
}

/* mu held. */
static void mprpc__prov_failed(mprpc_channel *ch, mprpc__prov *p, const char *why)
{
    int k = ch->cfg.channel_eject_failures;
    p->fails++;
    if (k <= 0 || p->state == MPRPC__PROV_EJECTED) return;
    if (p->state == MPRPC__PROV_PROBING || p->fails >= k) mprpc__prov_eject(ch, p, why);
}

static void mprpc__prov_ok(mprpc__prov *p)
{
    p->fails = 0;
    if (p->state == MPRPC__PROV_OK) return;
    MPRPC_LOG_INFO("channel: provider %s answered again: back in rotation", p->addr);
    p->state = MPRPC__PROV_OK;
    p->ejections = 0;
    p->probe_out = 0;
}

/* mu held. Whether p takes r now; an ejection that ended makes r its probe. */
static int mprpc__prov_usable(mprpc__prov *p, mprpc__rec *r, uint64_t now)
{
    if (p->state == MPRPC__PROV_EJECTED && now >= p->ejected_until) {
        MPRPC_LOG_INFO("channel: provider %s: ejection over, probing it with one call", p->addr);
        p->state = MPRPC__PROV_PROBING;
        p->probe_out = 0;
    }
    if (p->state == MPRPC__PROV_OK) return 1;
    if (p->state != MPRPC__PROV_PROBING || p->probe_out) return 0;
    p->probe_out = 1;
    r->probe = 1;
    return 1;
}

/* mu held. Round-robin over the service's providers, skipping ejected ones and the one r just failed
 * on; when none is left, the one ejected longest ago (or the one r failed on). */
static mprpc__prov *mprpc__pick_prov(mprpc__rec *r)
{
    mprpc__svc *s = r->svc;
    mprpc__prov *oldest = NULL, *p;
    uint64_t now = mprpc__now_ms();
    size_t i, start;
    if (s->n == 0) return NULL;
    start = s->rr++;
    for (i = 0; i < s->n; i++) {
        p = s->v[(start + i) % s->n];
        if (p == r->avoid && s->n > 1) continue;
        if (mprpc__prov_usable(p, r, now)) return p;
        if (p->state == MPRPC__PROV_EJECTED && (!oldest || p->ejected_at < oldest->ejected_at)) oldest = p;
    }
    if (oldest) return oldest;
    return r->avoid ? r->avoid : s->v[start % s->n];
}

/* mu held. The provider object for addr, made on first sight. A linear scan: ch->provs holds the
 * providers the channel's service tables list now plus those still finishing calls (mprpc__sweep frees
 * the rest), tens in the deployments this is for; a hash would pay off past a few hundred. */
static mprpc__prov *mprpc__prov_get(mprpc_channel *ch, const char *addr)
{
    mprpc__prov *p, **grown;
    size_t i;
    for (i = 0; i < ch->nprovs; i++)
        if (strcmp(ch->provs[i]->addr, addr) == 0) return ch->provs[i];
    grown = (mprpc__prov **)MPRPC_REALLOC(ch->provs, (ch->nprovs + 1) * sizeof *grown);
    if (!grown) return NULL;
    ch->provs = grown;
    p = (mprpc__prov *)mprpc__zalloc(sizeof *p);
    if (!p) return NULL;
    mprpc__copy_str(p->addr, sizeof p->addr, addr);
    ch->provs[ch->nprovs++] = p;
    return p;
}

/* ---- services: provider tables refreshed when the registry's generation changes ---- */

/* mu held. Replaces s's providers with the list a names. Those it no longer names are left to the
 * I/O thread's next turn (mprpc__sweep): it closes their idle connections and frees them. */
static mprpc_status mprpc__svc_install(mprpc_channel *ch, mprpc__svc *s, char (*addrs)[MPRPC_ADDR_MAX],
                                       size_t n)
{
    mprpc__prov **v = (mprpc__prov **)mprpc__zalloc((n ? n : 1) * sizeof *v);
    size_t i;
    if (!v) return MPRPC_ERR_NO_MEMORY;
    for (i = 0; i < n; i++) {
        if ((v[i] = mprpc__prov_get(ch, addrs[i])) == NULL) {
            MPRPC_FREE(v); /* a provider made here and listed nowhere goes at the next sweep */
            return MPRPC_ERR_NO_MEMORY;
        }
    }
    for (i = 0; i < n; i++) v[i]->listed++;
    for (i = 0; i < s->n; i++) s->v[i]->listed--;
    MPRPC_FREE(s->v);
    s->v = v;
    s->n = n;
    ch->sweep_at = 0;
    return MPRPC_OK;
}

/* mu held. The table for key, made empty on first use. A linear scan: ch->svcs holds the services
 * called within the last MPRPC__SVC_IDLE_MS (mprpc__sweep drops the others). */
static mprpc__svc *mprpc__svc_get(mprpc_channel *ch, const char *key)
{
    mprpc__svc *s, **grown;
    size_t i;
    for (i = 0; i < ch->nsvcs; i++)
        if (strcmp(ch->svcs[i]->key, key) == 0) return ch->svcs[i];
    grown = (mprpc__svc **)MPRPC_REALLOC(ch->svcs, (ch->nsvcs + 1) * sizeof *grown);
    if (!grown) return NULL;
    ch->svcs = grown;
    s = (mprpc__svc *)mprpc__zalloc(sizeof *s);
    if (!s) return NULL;
    mprpc__copy_str(s->key, sizeof s->key, key);
    ch->svcs[ch->nsvcs++] = s;
    return s;
}

static void mprpc__svc_free(mprpc__svc *s)
{
    if (!s) return;
    MPRPC_FREE(s->v);
    MPRPC_FREE(s);
}

/* mu held. A call (or a resolver about to make one) lets go of s; the direct table is never dropped
 * and not counted. */
static void mprpc__svc_put(mprpc_channel *ch, mprpc__svc *s)
{
    if (s && s != ch->direct) s->refs--;
}

/* Opens the registry on first use. It returns at once (its worker connects in the background); a
 * second caller meanwhile waits for the first, bounded by its own deadline. */
static mprpc_status mprpc__registry_get(mprpc_channel *ch, uint64_t deadline, mprpc__registry **out,
                                        char *err, size_t errlen)
{
    mprpc_status st = MPRPC_OK;
    pthread_mutex_lock(&ch->mu);
    while (!ch->registry && ch->registry_opening && mprpc__remaining_ms(deadline) > 0) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += 10 * 1000000L; /* re-check the deadline every 10 ms */
        if (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
        pthread_cond_timedwait(&ch->registry_cv, &ch->mu, &ts);
    }
    if ((*out = ch->registry) != NULL || ch->registry_opening) {
        pthread_mutex_unlock(&ch->mu);
        if (!*out) mprpc__fmt(err, errlen, "the ZooKeeper session is still being opened");
        return *out ? MPRPC_OK : MPRPC_ERR_TIMEOUT;
    }
    ch->registry_opening = 1;
    pthread_mutex_unlock(&ch->mu);
    st = mprpc__registry_open(out, &ch->cfg, err, errlen);
    pthread_mutex_lock(&ch->mu);
    ch->registry_opening = 0;
    if (st == MPRPC_OK) ch->registry = *out;
    pthread_cond_broadcast(&ch->registry_cv);
    pthread_mutex_unlock(&ch->mu);
    return st;
}

/* Asks the registry (no lock held) and installs a list newer than the table's. */
static mprpc_status mprpc__discover(mprpc_channel *ch, const char *service, const char *method,
                                    uint64_t deadline, mprpc__svc **out, char *err, size_t errlen)
{
    mprpc__addrs addrs = {NULL, 0, 0};
    mprpc__registry *reg;
    char key[2 * MPRPC_NAME_MAX + 2];
    uint64_t gen, seen;
    mprpc_status st = mprpc__registry_get(ch, deadline, &reg, err, errlen);
    if (st != MPRPC_OK) return st;
    mprpc__fmt(key, sizeof key, "%s%s%s", service, ch->cfg.zookeeper_seed_layout > 0 ? "/" : "",
               ch->cfg.zookeeper_seed_layout > 0 ? method : ""); /* auto (-1) resolves natively */
    pthread_mutex_lock(&ch->mu);
    if ((*out = mprpc__svc_get(ch, key)) != NULL) { /* held: the sweep leaves it until the call is over */
        (*out)->refs++;
        (*out)->used_at = mprpc__now_ms();
    }
    gen = seen = *out ? (*out)->gen : 0;
    pthread_mutex_unlock(&ch->mu);
    if (!*out) return MPRPC_ERR_NO_MEMORY;
    st = mprpc__registry_resolve(reg, service, method, deadline, &gen, &addrs, err, errlen);
    if (st != MPRPC_OK || gen != seen) {
        pthread_mutex_lock(&ch->mu);
        if (st == MPRPC_OK && gen > (*out)->gen) st = mprpc__svc_install(ch, *out, addrs.v, addrs.n);
        if (st == MPRPC_OK && gen > (*out)->gen) (*out)->gen = gen;
        if (st != MPRPC_OK) mprpc__svc_put(ch, *out);
        pthread_mutex_unlock(&ch->mu);
    }
    mprpc__addrs_free(&addrs);
    return st;
}

/* The providers of service: the direct list, or what the registry names (held on MPRPC_OK: the call's
 * record lets it go, mprpc__rec_give). */
static mprpc_status mprpc__resolve(mprpc_channel *ch, const mprpc__call_args *a, uint64_t deadline,
                                   const char *tname, int tms, mprpc__svc **svc, mprpc_controller *ctl)
{
    char why[200];
    mprpc_status st;
    if (ch->direct) {
        *svc = ch->direct;
        return MPRPC_OK;
    }
    why[0] = '\0';
    st = mprpc__discover(ch, a->service, a->method, deadline, svc, why, sizeof why);
    if (st == MPRPC_OK) return MPRPC_OK;
    if (st == MPRPC_ERR_TIMEOUT)
        mprpc_controller_set_failed(ctl, st, "resolving %s: %s (%d ms) passed: %s", a->service, tname,
                                    tms, why);
    else
        mprpc_controller_set_failed(ctl, st, "resolving %s: %s", a->service, why);
    return st;
}

/* ---- connections ---- */

/* wmu held. Does connected c want EPOLLOUT: output pending (unless its TLS write waits to read), or a
 * TLS read waiting to write? */
static int mprpc__pconn_wants_out(const mprpc__pconn *c)
{
    return c->rd_crossed || (mprpc_buf_readable(&c->out) > 0 && !c->wr_crossed);
}

/* wmu held. Tells epoll whether c wants EPOLLOUT (connecting, or mprpc__pconn_wants_out). */
static void mprpc__pconn_arm(mprpc_channel *ch, mprpc__pconn *c, int want)
{
    struct epoll_event ev;
    if (c->fd < 0 || want == c->out_armed) return;
    memset(&ev, 0, sizeof ev);
    ev.events = EPOLLIN | (want ? EPOLLOUT : 0u);
    ev.data.ptr = c;
    if (epoll_ctl(ch->epfd, EPOLL_CTL_MOD, c->fd, &ev) == 0) c->out_armed = want;
}

/* A non-blocking socket connecting to addr; *connected when it already did. A host name is not
 * dialled here: *res is its resolver, whose eventfd is returned to be watched in the socket's place
 * (mprpc__io_resolved dials once it is readable). */
static int mprpc__dial(const char *addr, int *connected, mprpc__dns **res, char *why, size_t whylen)
{
    mprpc__addr a;
    char text[160];
    *res = NULL;
    if (!mprpc__addr_parse(addr, &a, text, sizeof text)) {
        mprpc__fmt(why, whylen, "bad provider address: %s", text);
        return -1;
    }
    if (a.kind == MPRPC__ADDR_IP || a.kind == MPRPC__ADDR_UNIX)
        return mprpc__connect_to(&a.sa, a.salen, addr, connected, why, whylen);
    *connected = 0;
    if ((*res = mprpc__dns_start(&a, why, whylen)) == NULL) return -1;
    return (*res)->efd;
}

/* mu held. Opens a connection to p (counted against channel_max_connections) and watches it. */
static mprpc_status mprpc__pconn_open(mprpc_channel *ch, mprpc__prov *p, int seed, mprpc__pconn **out,
                                     char *why, size_t whylen)
{
    struct epoll_event ev;
    mprpc__pconn *c;
    mprpc__dns *res;
    int fd, connected = 0;
    if (ch->nconns >= ch->cfg.channel_max_connections) {
        mprpc__fmt(why, whylen, "channel_max_connections (%d) connections open; none to %s free",
                   ch->cfg.channel_max_connections, p->addr);
        return MPRPC_ERR_BUSY;
    }
    if ((fd = mprpc__dial(p->addr, &connected, &res, why, whylen)) < 0) return MPRPC_ERR_CONNECT;
    c = (mprpc__pconn *)mprpc__zalloc(sizeof *c);
    if (!c) {
        if (res) mprpc__dns_put(res);
        else close(fd);
        mprpc__fmt(why, whylen, "no memory for a connection");
        return MPRPC_ERR_NO_MEMORY;
    }
    pthread_mutex_init(&c->wmu, NULL);
    c->fd = fd;
    c->res = res;
    c->seed = seed;
    c->prov = p;
    c->connected = connected;
    c->out_armed = !connected;
    c->state = connected ? MPRPC__PCONN_READY : MPRPC__PCONN_CONNECTING;
    c->connect_deadline = mprpc__now_ms() + (uint64_t)ch->cfg.connect_timeout_ms;
    memset(&ev, 0, sizeof ev);
    ev.events = EPOLLIN | (connected || res ? 0u : EPOLLOUT); /* an eventfd is always writable */
    ev.data.ptr = c;
    if (epoll_ctl(ch->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
        mprpc__fmt(why, whylen, "epoll_ctl: %s", strerror(errno));
        if (res) mprpc__dns_put(res);
        else close(fd);
        pthread_mutex_destroy(&c->wmu);
        MPRPC_FREE(c);
        return MPRPC_ERR_IO;
    }
    c->next = p->conns;
    p->conns = c;
    p->nconns++;
    ch->nconns++;
    if (!connected) ch->nconnecting++;
    if (!connected && c->connect_deadline < ch->wake_at) {
        ch->wake_at = c->connect_deadline;
        mprpc__wake(ch);
    }
    *out = c;
    return MPRPC_OK;
}

/* mu held, I/O thread. Closes c (its calls are the caller's business) and buries it until the end of
 * the turn; returns how many bytes of its output had left. */
static uint64_t mprpc__pconn_close(mprpc_channel *ch, mprpc__pconn *c)
{
    mprpc__pconn **pp;
    uint64_t written;
    pthread_mutex_lock(&c->wmu);
    if (c->tls) {
        mprpc__tls_io->shutdown(c->tls);
        mprpc__tls_io->free(c->tls);
        c->tls = NULL;
    }
    if (c->fd >= 0) {
        epoll_ctl(ch->epfd, EPOLL_CTL_DEL, c->fd, NULL);
        if (!c->res || c->fd != c->res->efd) close(c->fd); /* the resolver's fd goes with it */
        c->fd = -1;
    }
    mprpc__dns_put(c->res); /* a resolver still at work frees it when done */
    c->res = NULL;
    written = c->written;
    pthread_mutex_unlock(&c->wmu);
    c->io_closed = 1;
    if (c->state == MPRPC__PCONN_CLOSED) return written;
    if (c->state == MPRPC__PCONN_CONNECTING) ch->nconnecting--;
    c->state = MPRPC__PCONN_CLOSED;
    for (pp = &c->prov->conns; *pp && *pp != c; pp = &(*pp)->next) {}
    if (*pp) *pp = c->next;
    c->prov->nconns--;
    ch->nconns--;
    c->dead_next = ch->dead;
    ch->dead = c;
    return written;
}

static void mprpc__pconn_free(mprpc__pconn *c)
{
    mprpc_buf_free(&c->in);
    mprpc_buf_free(&c->out);
    pthread_mutex_destroy(&c->wmu);
    MPRPC_FREE(c);
}

/* mu held. The least loaded open connection to p, or a new one while p has fewer than
 * channel_connections_per_provider and every open one carries calls. */
static mprpc_status mprpc__pick_conn(mprpc_channel *ch, mprpc__prov *p, mprpc__pconn **out, char *why,
                                     size_t whylen)
{
    mprpc__pconn *c, *best = NULL;
    int usable = 0;
    mprpc_status st;
    for (c = p->conns; c; c = c->next) {
        if (c->seed || (c->state != MPRPC__PCONN_READY && c->state != MPRPC__PCONN_CONNECTING)) continue;
        usable++;
        if (!best || c->ncalls < best->ncalls) best = c;
    }
    if (best && (best->ncalls == 0 || usable >= ch->cfg.channel_connections_per_provider)) {
        *out = best;
        return MPRPC_OK;
    }
    st = mprpc__pconn_open(ch, p, 0, out, why, whylen);
    if (st != MPRPC_OK && best) { /* over channel_max_connections: share one */
        *out = best;
        return MPRPC_OK;
    }
    return st;
}

/* mu held. Puts r on a connection to one of its service's providers; a provider that refuses at once
 * counts a failure and the next one is tried. On failure the text is in r->ctl. */
static mprpc_status mprpc__route_call(mprpc_channel *ch, mprpc__rec *r, mprpc__pconn **out)
{
    mprpc_controller *ctl = r->ctl;
    mprpc_status st = MPRPC_ERR_UNAVAILABLE;
    size_t tries;
    for (tries = 0; tries < r->svc->n + 1; tries++) {
        mprpc__prov *p;
        r->attempts++;
        if (r->probe && r->prov) r->prov->probe_out = 0;
        r->probe = 0;
        if ((p = mprpc__pick_prov(r)) == NULL) break;
        st = r->seed ? mprpc__pconn_open(ch, p, 1, out, ctl->error_text, sizeof ctl->error_text)
                     : mprpc__pick_conn(ch, p, out, ctl->error_text, sizeof ctl->error_text);
        r->prov = p;
        if (st == MPRPC_OK) {
            mprpc__rec_link(*out, r);
            r->state = MPRPC__REC_ROUTED;
            return MPRPC_OK;
        }
        if (r->probe) p->probe_out = 0;
        r->probe = 0;
        if (st != MPRPC_ERR_CONNECT) return st;
        mprpc__prov_failed(ch, p, ctl->error_text);
        r->avoid = p;
    }
    if (r->svc->n == 0) {
        mprpc__fmt(ctl->error_text, sizeof ctl->error_text, "no provider of %s is registered", r->svc->key);
        return MPRPC_ERR_UNAVAILABLE;
    }
    return st;
}

/* wmu held. Sends what c's output holds until the socket is full. -1: the connection failed. */
static int mprpc__send_out(mprpc__pconn *c)
{
    while (mprpc_buf_readable(&c->out) > 0) {
        ssize_t n = mprpc__xsend(c->fd, c->tls, c->out.data + c->out.pos, mprpc_buf_readable(&c->out));
        c->wr_crossed = n < 0 && errno == EAGAIN && mprpc__xcrossed(c->tls, 0);
        if (n > 0) {
            mprpc_buf_consume(&c->out, (size_t)n);
            c->written += (uint64_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
        return -1;
    }
    return 0;
}

/* wmu held. A retried v1 request gets a fresh timeout_ms (the time left now); otherwise the frame
 * encoded when the call was made goes out as it is. */
static mprpc_status mprpc__append_request(mprpc_channel *ch, mprpc__pconn *c, mprpc__rec *r)
{
    mprpc_request_frame f;
    uint8_t henc[mprpc_RpcHeader_size], prefix[MPRPC_FRAME_PREFIX];
    pb_ostream_t os = pb_ostream_from_buffer(henc, sizeof henc);
    size_t body;
    mprpc_status st;
    if (r->attempts <= 1 || r->seed ||
        mprpc_wire_decode_request(r->req.data, r->req.len, ch->cfg.max_message_size, &f) != MPRPC_OK)
        return mprpc_buf_append(&c->out, r->req.data, r->req.len, SIZE_MAX);
    f.header.timeout_ms = (uint32_t)(mprpc__remaining_ms(r->deadline) > 0 ? mprpc__remaining_ms(r->deadline) : 1);
    if (!pb_encode(&os, mprpc_RpcHeader_fields, &f.header)) return MPRPC_ERR_ENCODE;
    body = f.header.args_size;
    mprpc__put_u32le(prefix, (uint32_t)os.bytes_written);
    st = mprpc_buf_reserve(&c->out, sizeof prefix + os.bytes_written + body, SIZE_MAX);
    if (st != MPRPC_OK) return st;
    mprpc_buf_append(&c->out, prefix, sizeof prefix, SIZE_MAX);
    mprpc_buf_append(&c->out, henc, os.bytes_written, SIZE_MAX);
    return mprpc_buf_append(&c->out, f.body, body, SIZE_MAX);
}

/* wmu held. Queues r's request on c. From a caller thread: sends at once when the output was empty,
 * and leaves what the socket did not take to the I/O thread (EPOLLOUT). From the I/O thread (callbacks,
 * retries): lists c to be flushed once at the end of the turn, so many calls share one send. */
static mprpc_status mprpc__enqueue(mprpc_channel *ch, mprpc__pconn *c, mprpc__rec *r, int from_io)
{
    int was_empty = mprpc_buf_readable(&c->out) == 0;
    mprpc_status st = mprpc__append_request(ch, c, r);
    if (st != MPRPC_OK) return st;
    r->end_off = c->written + mprpc_buf_readable(&c->out); /* sent once written reaches it */
    if (from_io) {
        if (!c->flush_listed) {
            c->flush_listed = 1;
            c->flush_next = ch->flush;
            ch->flush = c;
        }
        return MPRPC_OK;
    }
    if (c->connected && c->fd >= 0 && was_empty && mprpc__send_out(c) < 0) {
        mprpc__pconn_arm(ch, c, 1); /* the I/O thread meets the error and deals with the calls */
        return MPRPC_OK;
    }
    mprpc__pconn_arm(ch, c, c->connected ? mprpc__pconn_wants_out(c) : 1);
    return MPRPC_OK;
}

/* ---- the I/O thread ---- */

static void mprpc__retry(mprpc_channel *ch, mprpc__rec *r, mprpc_status last);

/* mu held, I/O thread. c failed: a call whose request had wholly left may have run and fails with st;
 * the others were never seen by the provider and are retried elsewhere. */
static void mprpc__pconn_fail_locked(mprpc_channel *ch, mprpc__pconn *c, mprpc_status st, const char *why)
{
    int had_calls = c->ncalls > 0, was_connecting = c->state == MPRPC__PCONN_CONNECTING;
    uint64_t written = mprpc__pconn_close(ch, c);
    mprpc__rec *r;
    if (had_calls || was_connecting) mprpc__prov_failed(ch, c->prov, why);
    while ((r = c->calls) != NULL) {
        mprpc__rec_unlink(r);
        if (r->end_off != 0 && r->end_off <= written) {
            mprpc_controller_set_failed(r->ctl, st, "%s (the request had been sent: it may have run)", why);
            mprpc__finish_locked(ch, r, st, 1);
        } else {
            mprpc__copy_str(r->ctl->error_text, sizeof r->ctl->error_text, why);
            r->avoid = c->prov;
            mprpc__retry(ch, r, st);
        }
    }
}

static void mprpc__pconn_fail(mprpc_channel *ch, mprpc__pconn *c, mprpc_status st, const char *fmt, ...)
    MPRPC_PRINTF(4, 5);
static void mprpc__pconn_fail(mprpc_channel *ch, mprpc__pconn *c, mprpc_status st, const char *fmt, ...)
{
    char why[200];
    va_list ap;
    va_start(ap, fmt);
    mprpc__vfmt(why, sizeof why, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&ch->mu);
    mprpc__pconn_fail_locked(ch, c, st, why);
    pthread_mutex_unlock(&ch->mu);
}

/* mu held, I/O thread. r was not executed (never sent, or answered SHUTDOWN/BUSY): route it again
 * within its deadline, at most once per provider and once more. last is why the previous try failed;
 * its text is in r->ctl. */
static void mprpc__retry(mprpc_channel *ch, mprpc__rec *r, mprpc_status last)
{
    mprpc__pconn *c;
    mprpc_status st;
    r->end_off = 0;
    if (r->attempts > (int)r->svc->n || mprpc__remaining_ms(r->deadline) == 0) {
        if (r->svc->n > 1) {
            char last_text[sizeof r->ctl->error_text];
            mprpc__copy_str(last_text, sizeof last_text, r->ctl->error_text);
            mprpc_controller_set_failed(r->ctl, MPRPC_ERR_UNAVAILABLE, "no provider of %s reachable (%d "
                                        "tries; last: %s)", r->svc->key, r->attempts, last_text);
            last = MPRPC_ERR_UNAVAILABLE;
        }
        mprpc__finish_locked(ch, r, last, 0);
        return;
    }
    st = mprpc__route_call(ch, r, &c);
    if (st == MPRPC_OK) {
        pthread_mutex_lock(&c->wmu);
        st = mprpc__enqueue(ch, c, r, 1);
        pthread_mutex_unlock(&c->wmu);
        if (st == MPRPC_OK) return;
        mprpc__fmt(r->ctl->error_text, sizeof r->ctl->error_text, "no memory to queue a request of %zu bytes "
                   "for %s", r->req.len, c->prov->addr);
    }
    mprpc__finish_locked(ch, r, st, 0);
}

/* I/O thread. A v1 reply for c: complete its call, discard a late one, or retry a call the provider
 * refused (SHUTDOWN, BUSY: not executed; the connection takes no new calls). A TLS refusal (we speak
 * plaintext to a TLS provider) fails the call, not run, and the connection takes no new calls either:
 * the configuration is wrong, and trying elsewhere would only hide that. 0: c was closed. */
static int mprpc__io_reply(mprpc_channel *ch, mprpc__pconn *c, const mprpc_response_frame *f)
{
    int32_t status = f->header.status;
    int refused = status == MPRPC_ERR_SHUTDOWN || status == MPRPC_ERR_BUSY, closed;
    mprpc__rec *r;
    pthread_mutex_lock(&ch->mu);
    r = mprpc__rec_find(ch, c, f->header.call_id);
    if (!r) {
        int late = c->abandoned > 0;
        if (late) c->abandoned--;
        pthread_mutex_unlock(&ch->mu);
        if (late) return 1;
        mprpc__pconn_fail(ch, c, MPRPC_ERR_PROTOCOL, "%s answered call %llu, which it was not sent",
                         c->prov->addr, (unsigned long long)f->header.call_id);
        return 0;
    }
    mprpc__prov_ok(r->prov);
    mprpc__rec_unlink(r);
    if ((refused || status == MPRPC_ERR_TLS) && c->state == MPRPC__PCONN_READY)
        c->state = MPRPC__PCONN_DRAINING;
    if (refused) {
        mprpc_controller_set_failed(r->ctl, (mprpc_status)status, "%s: %.*s", c->prov->addr,
                                    (int)f->header.error_text.size, (const char *)f->header.error_text.bytes);
        r->avoid = c->prov;
        mprpc__retry(ch, r, (mprpc_status)status);
    } else {
        mprpc__heap_remove(ch, r);
        if (r->probe) r->prov->probe_out = 0;
        r->state = MPRPC__REC_FINISHING;
    }
    if (c->state == MPRPC__PCONN_DRAINING && c->ncalls == 0) mprpc__pconn_close(ch, c);
    closed = c->state == MPRPC__PCONN_CLOSED;
    pthread_mutex_unlock(&ch->mu);
    if (!refused) { /* decoded outside the lock: the record is the I/O thread's now */
        mprpc__take_reply(c->prov->addr, f, r->resp_fields, r->resp, r->ctl);
        mprpc__done_push(ch, r);
    }
    return !closed;
}

/* I/O thread. A seed provider closed after its bare reply: that is the call's answer. */
static void mprpc__io_seed_reply(mprpc_channel *ch, mprpc__pconn *c)
{
    mprpc__rec *r;
    pthread_mutex_lock(&ch->mu);
    if ((r = c->calls) != NULL) {
        mprpc__rec_unlink(r);
        mprpc__heap_remove(ch, r);
        mprpc__prov_ok(r->prov);
        if (r->probe) r->prov->probe_out = 0;
        r->state = MPRPC__REC_FINISHING;
    }
    mprpc__pconn_close(ch, c);
    pthread_mutex_unlock(&ch->mu);
    if (!r) return;
    mprpc__take_seed_reply(c->prov->addr, c->in.data + c->in.pos, mprpc_buf_readable(&c->in),
                           r->resp_fields, r->resp, r->ctl);
    mprpc__done_push(ch, r);
}

/* I/O thread. Every whole v1 frame in c's input. 0: c was closed. */
static int mprpc__io_frames(mprpc_channel *ch, mprpc__pconn *c)
{
    size_t max = ch->cfg.max_message_size;
    for (;;) {
        mprpc_response_frame f;
        mprpc_status st = mprpc_wire_decode_response(c->in.data + c->in.pos, mprpc_buf_readable(&c->in),
                                                     max, &f);
        if (st == MPRPC_AGAIN) return 1;
        if (st == MPRPC_ERR_TOO_LARGE) {
            mprpc__pconn_fail(ch, c, st, "reply from %s of %u bytes exceeds max_message_size %zu",
                             c->prov->addr, (unsigned)f.header.body_size, max);
            return 0;
        }
        if (st != MPRPC_OK) {
            mprpc__pconn_fail(ch, c, st, "reply from %s: unparseable response header", c->prov->addr);
            return 0;
        }
        if (!mprpc__io_reply(ch, c, &f)) return 0;
        mprpc_buf_consume(&c->in, f.frame_size);
        if (mprpc_buf_readable(&c->in) == 0 && c->in.cap > MPRPC__BIG_BUF) mprpc_buf_free(&c->in);
    }
}

/* wmu held. Why c's last recv/send failed: the TLS session's reason ("TLS write: bad record mac"),
 * copied while no caller can overwrite it, else strerror(err). */
static void mprpc__pconn_io_why(const mprpc__pconn *c, int err, char *why, size_t cap)
{
    mprpc__copy_str(why, cap, c->tls ? mprpc__tls_io->error(c->tls) : strerror(err));
}

/* I/O thread. recv, or a TLS read under wmu (callers write the same session); why on failure. A read
 * that waits for writability arms EPOLLOUT for itself. *held: the session still holds bytes it read
 * ahead, which no epoll event will announce. */
static ssize_t mprpc__pconn_recv(mprpc_channel *ch, mprpc__pconn *c, void *buf, size_t n, char *why,
                                 size_t cap, int *held)
{
    ssize_t k;
    int err;
    *held = 0;
    if (!c->tls) {
        k = recv(c->fd, buf, n, 0);
        if (k < 0) mprpc__pconn_io_why(c, errno, why, cap);
        return k;
    }
    pthread_mutex_lock(&c->wmu);
    k = mprpc__tls_io->read(c->tls, buf, n);
    err = errno;
    if (k < 0) mprpc__pconn_io_why(c, err, why, cap);
    *held = k > 0 && mprpc__tls_io->pending(c->tls) > 0;
    c->rd_crossed = k < 0 && err == EAGAIN && mprpc__xcrossed(c->tls, 1);
    mprpc__pconn_arm(ch, c, mprpc__pconn_wants_out(c));
    pthread_mutex_unlock(&c->wmu);
    errno = err;
    return k;
}

/* I/O thread. A TLS failure: MPRPC_ERR_TLS for the calls, a log line naming the provider and why. */
static void mprpc__io_tls_failed(mprpc_channel *ch, mprpc__pconn *c, const char *why)
{
    MPRPC_LOG_WARN("channel: TLS with %s: %s", c->prov->addr, why);
    mprpc__pconn_fail(ch, c, MPRPC_ERR_TLS, "TLS with %s: %s", c->prov->addr, why);
}

/* I/O thread. A recv or send on c failed with err (what: "receiving from", "sending to"), why from
 * mprpc__pconn_io_why. A failed session (EPROTO) is MPRPC_ERR_TLS and a log line; a reset or a vanished
 * peer loses the connection, as without TLS, with the TLS text when there is a session. */
static void mprpc__io_failed(mprpc_channel *ch, mprpc__pconn *c, const char *what, int err, const char *why)
{
    if (c->tls && err == EPROTO) {
        mprpc__io_tls_failed(ch, c, why);
        return;
    }
    mprpc__pconn_fail(ch, c, MPRPC_ERR_CONNECTION_LOST, "%s %s: %s", what, c->prov->addr, why);
}

/* I/O thread. Reads what c has (a few chunks per event, for fairness, and whatever its TLS session
 * read ahead, which is bounded) and handles it. */
static void mprpc__io_read(mprpc_channel *ch, mprpc__pconn *c)
{
    size_t max = c->seed ? (size_t)ch->cfg.max_message_size + 1 : mprpc__max_frame(ch->cfg.max_message_size) + 65536;
    int i, held = 0;
    for (i = 0; i < 4 || held; i++) {
        char why[200];
        size_t room;
        ssize_t n;
        if (mprpc_buf_reserve(&c->in, 65536, max) != MPRPC_OK && mprpc_buf_reserve(&c->in, 1, max) != MPRPC_OK) {
            mprpc__pconn_fail(ch, c, MPRPC_ERR_TOO_LARGE, "reply from %s exceeds max_message_size %u (%zu "
                             "bytes read so far)", c->prov->addr, (unsigned)ch->cfg.max_message_size,
                             mprpc_buf_readable(&c->in));
            return;
        }
        room = c->in.cap - c->in.len;
        n = mprpc__pconn_recv(ch, c, c->in.data + c->in.len, room, why, sizeof why, &held);
        if (n > 0) {
            c->in.len += (size_t)n;
            if (c->seed && mprpc_buf_readable(&c->in) > ch->cfg.max_message_size) continue;
            if (!c->seed && !mprpc__io_frames(ch, c)) return;
            if ((size_t)n < room && !held) return;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (n == 0 && c->seed) mprpc__io_seed_reply(ch, c);
        else if (n == 0) mprpc__pconn_fail(ch, c, MPRPC_ERR_CONNECTION_LOST, "%s closed the connection "
                                          "before replying", c->prov->addr);
        else mprpc__io_failed(ch, c, "receiving from", errno, why);
        return;
    }
}

/* I/O thread. Sends c's pending output; drops EPOLLOUT once it is all out. crossed_only: only if a TLS
 * write waited for readability (c just became readable). */
static void mprpc__io_flush(mprpc_channel *ch, mprpc__pconn *c, int crossed_only)
{
    int failed = 0, err = 0;
    char why[200];
    pthread_mutex_lock(&c->wmu);
    if (c->fd >= 0 && c->connected && (!crossed_only || c->wr_crossed)) {
        failed = mprpc__send_out(c) < 0;
        err = errno;
        if (failed) mprpc__pconn_io_why(c, err, why, sizeof why);
        if (!failed) mprpc__pconn_arm(ch, c, mprpc__pconn_wants_out(c));
        if (!failed && mprpc_buf_readable(&c->out) == 0 && c->out.cap > MPRPC__BIG_BUF) mprpc_buf_free(&c->out);
    }
    pthread_mutex_unlock(&c->wmu);
    if (failed) mprpc__io_failed(ch, c, "sending to", err, why);
}

/* I/O thread. Dials the next address c's host name resolved to, in the place of the resolver's
 * eventfd or of the socket whose connect failed. 0: none left (or it failed), the reason in why. */
static int mprpc__io_dial_next(mprpc_channel *ch, mprpc__pconn *c, char *why, size_t whylen)
{
    struct sockaddr_storage sa;
    struct epoll_event ev;
    socklen_t salen;
    int fd, connected = 0;
    while (mprpc__dns_get(c->res, c->res_next++, &sa, &salen, why, whylen)) {
        if ((fd = mprpc__connect_to(&sa, salen, c->prov->addr, &connected, why, whylen)) < 0) continue;
        memset(&ev, 0, sizeof ev);
        ev.events = EPOLLIN | EPOLLOUT; /* EPOLLOUT (or an error) says the connect finished */
        ev.data.ptr = c;
        pthread_mutex_lock(&c->wmu);
        epoll_ctl(ch->epfd, EPOLL_CTL_DEL, c->fd, NULL);
        if (c->fd != c->res->efd) close(c->fd);
        c->fd = fd;
        c->out_armed = 1;
        pthread_mutex_unlock(&c->wmu);
        if (epoll_ctl(ch->epfd, EPOLL_CTL_ADD, fd, &ev) == 0) return 1;
        mprpc__fmt(why, whylen, "epoll_ctl: %s", strerror(errno));
        return 0;
    }
    return 0;
}

/* I/O thread. c's host name resolved (or not): dial its first address. */
static void mprpc__io_resolved(mprpc_channel *ch, mprpc__pconn *c)
{
    char why[200];
    if (!mprpc__io_dial_next(ch, c, why, sizeof why))
        mprpc__pconn_fail(ch, c, MPRPC_ERR_CONNECT, "%s", why);
}

static void mprpc__io_ready(mprpc_channel *ch, mprpc__pconn *c);

/* The name the provider's certificate must carry: tls_server_name, else the host of its address. */
static int mprpc__tls_name(const mprpc_channel *ch, const mprpc__prov *p, char *name, size_t cap)
{
    mprpc__addr a;
    char why[160];
    if (ch->cfg.tls_server_name[0]) {
        mprpc__copy_str(name, cap, ch->cfg.tls_server_name);
        return 1;
    }
    if (!mprpc__addr_parse(p->addr, &a, why, sizeof why) || a.kind == MPRPC__ADDR_UNIX) return 0;
    mprpc__copy_str(name, cap, a.host);
    return 1;
}

/* I/O thread. One step of c's TLS handshake, bounded by connect_timeout_ms (c stays CONNECTING). */
static void mprpc__io_tls_step(mprpc_channel *ch, mprpc__pconn *c)
{
    char why[200];
    mprpc__hs hs = mprpc__tls_io->handshake(c->tls, why, sizeof why);
    if (hs == MPRPC__HS_DONE) {
        mprpc__io_ready(ch, c);
        return;
    }
    if (hs == MPRPC__HS_FAILED) {
        mprpc__io_tls_failed(ch, c, why);
        return;
    }
    pthread_mutex_lock(&c->wmu);
    mprpc__pconn_arm(ch, c, hs == MPRPC__HS_WANT_WRITE);
    pthread_mutex_unlock(&c->wmu);
}

/* I/O thread. TCP is up: a TLS session expecting the provider's name, then its handshake. */
static void mprpc__io_tls_start(mprpc_channel *ch, mprpc__pconn *c)
{
    char name[256], why[200];
    mprpc__tls *t;
    if (!mprpc__tls_name(ch, c->prov, name, sizeof name)) {
        mprpc__io_tls_failed(ch, c, "a unix: address names no host to check the certificate against: "
                                    "set tls_server_name");
        return;
    }
    if ((t = mprpc__tls_io->conn_new(ch->tls, c->fd, name, why, sizeof why)) == NULL) {
        mprpc__io_tls_failed(ch, c, why);
        return;
    }
    pthread_mutex_lock(&c->wmu);
    c->tls = t;
    pthread_mutex_unlock(&c->wmu);
    mprpc__io_tls_step(ch, c);
}

/* I/O thread. A connect finished, well or not. */
static void mprpc__io_connected(mprpc_channel *ch, mprpc__pconn *c)
{
    int err = 0;
    socklen_t len = sizeof err;
    char why[200];
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
    if (err && c->res && mprpc__io_dial_next(ch, c, why, sizeof why)) return; /* the name's next address */
    if (err) {
        mprpc__pconn_fail(ch, c, MPRPC_ERR_CONNECT, "connect %s: %s", c->prov->addr, strerror(err));
        return;
    }
    if (ch->tls) {
        mprpc__io_tls_start(ch, c);
        return;
    }
    mprpc__io_ready(ch, c);
}

/* I/O thread. c may carry calls now: what they queued meanwhile goes out. */
static void mprpc__io_ready(mprpc_channel *ch, mprpc__pconn *c)
{
    pthread_mutex_lock(&ch->mu);
    if (c->state == MPRPC__PCONN_CONNECTING) {
        c->state = MPRPC__PCONN_READY;
        ch->nconnecting--;
    }
    pthread_mutex_unlock(&ch->mu);
    pthread_mutex_lock(&c->wmu);
    c->connected = 1;
    pthread_mutex_unlock(&c->wmu);
    mprpc__io_flush(ch, c, 0);
}

static void mprpc__io_event(mprpc_channel *ch, mprpc__pconn *c, uint32_t events)
{
    if (c->io_closed) return; /* closed earlier in this turn */
    if (!c->io_ready) { /* once ready it stays so (or closes, which this thread does): ask once */
        pthread_mutex_lock(&ch->mu);
        c->io_ready = c->state != MPRPC__PCONN_CONNECTING;
        pthread_mutex_unlock(&ch->mu);
    }
    if (!c->io_ready) {
        if (c->tls) {
            mprpc__io_tls_step(ch, c);
        } else if (c->res && c->fd == c->res->efd) {
            if (events & EPOLLIN) mprpc__io_resolved(ch, c);
        }
        else if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) mprpc__io_connected(ch, c);
        return;
    }
    /* a TLS read may wait for EPOLLOUT and a TLS write for EPOLLIN (rd_crossed: this thread's own) */
    if ((events & (EPOLLIN | EPOLLERR | EPOLLHUP)) || ((events & EPOLLOUT) && c->rd_crossed))
        mprpc__io_read(ch, c);
    if (!c->io_closed && (events & EPOLLOUT)) mprpc__io_flush(ch, c, 0);
    else if (!c->io_closed && c->tls && (events & EPOLLIN)) mprpc__io_flush(ch, c, 1);
}

/* mu held. Whether r's request was queued on its connection (end_off is the connection's: a caller may
 * be queuing it under wmu right now). */
static int mprpc__rec_queued(mprpc__rec *r)
{
    int queued;
    if (!r->conn) return 0;
    pthread_mutex_lock(&r->conn->wmu);
    queued = r->end_off != 0;
    pthread_mutex_unlock(&r->conn->wmu);
    return queued;
}

/* mu held, I/O thread. Where a timed-out call was, for its error text. */
static void mprpc__timeout_text(mprpc__rec *r, int sent)
{
    mprpc_controller *ctl = r->ctl;
    const char *t = mprpc__timeout_name(r);
    if (!r->conn)
        mprpc__fmt(ctl->error_text, sizeof ctl->error_text, "%s (%d ms) passed before a provider of %s "
                   "could be reached", t, r->timeout_ms, r->svc->key);
    else if (r->conn->state == MPRPC__PCONN_CONNECTING)
        mprpc__fmt(ctl->error_text, sizeof ctl->error_text, "%s (%d ms) passed while connecting to %s", t,
                   r->timeout_ms, r->conn->prov->addr);
    else
        mprpc__fmt(ctl->error_text, sizeof ctl->error_text, "no reply from %s within %s (%d ms)%s",
                   r->conn->prov->addr, t, r->timeout_ms, sent ? "; the request was sent: it may have run" : "");
}

/* mu held, I/O thread. Times out every call whose deadline passed; its late reply will be discarded. */
static void mprpc__io_expire(mprpc_channel *ch, uint64_t now)
{
    while (ch->nheap > 0 && ch->heap[0]->deadline <= now) {
        mprpc__rec *r = ch->heap[0];
        mprpc__pconn *c = r->conn;
        int sent = mprpc__rec_queued(r);
        mprpc__timeout_text(r, sent);
        if (c) mprpc__prov_failed(ch, c->prov, r->ctl->error_text);
        if (sent) c->abandoned++;
        mprpc__finish_locked(ch, r, MPRPC_ERR_TIMEOUT, sent);
        /* a seed connection's only call is over; a connection left with no calls and half a reply
         * is in an unknown state (the rest may never come): both are closed */
        if (c && (c->seed || (c->ncalls == 0 && mprpc_buf_readable(&c->in) > 0))) mprpc__pconn_close(ch, c);
    }
}

/* mu held, I/O thread. Fails connects that outlived connect_timeout_ms (their calls go elsewhere). */
static void mprpc__io_connect_timeouts(mprpc_channel *ch, uint64_t now)
{
    size_t i;
    for (i = 0; i < ch->nprovs && ch->nconnecting > 0; i++) {
        mprpc__pconn *c = ch->provs[i]->conns, *next;
        for (; c; c = next) {
            next = c->next;
            if (c->state != MPRPC__PCONN_CONNECTING || c->connect_deadline > now) continue;
            char why[160];
            mprpc__fmt(why, sizeof why, "connect %s: timed out after connect_timeout_ms (%d ms)",
                       c->prov->addr, ch->cfg.connect_timeout_ms);
            mprpc__pconn_fail_locked(ch, c, MPRPC_ERR_CONNECT, why);
        }
    }
}

/* ---- housekeeping: what a burst of services or a churn of providers took is given back ---- */

/* mu held. Drops s from ch->svcs' count of listings; the caller removes it from ch->svcs. */
static void mprpc__svc_drop(mprpc__svc *s)
{
    size_t i;
    for (i = 0; i < s->n; i++) s->v[i]->listed--;
    mprpc__svc_free(s);
}

/* mu held, I/O thread. Marks the providers a call in flight names (its connection's, or the one it
 * must avoid on a retry). */
static void mprpc__prov_mark_in_use(mprpc_channel *ch)
{
    size_t i;
    for (i = 0; i < ch->nprovs; i++) ch->provs[i]->in_use = 0;
    for (i = 0; i < ch->nrecs; i++) {
        mprpc__rec *r = ch->recs[i];
        if (r->state != MPRPC__REC_ROUTED && r->state != MPRPC__REC_NEW) continue;
        if (r->prov) r->prov->in_use = 1;
        if (r->avoid) r->avoid->in_use = 1;
    }
}

/* mu held, I/O thread. A provider no table lists any more: its connections without calls are closed,
 * and once it has neither connections nor calls it is freed. 1: freed. A connection closed here is
 * freed at the end of the next turn, and pconn_free does not look at its provider. */
static int mprpc__prov_retire(mprpc_channel *ch, mprpc__prov *p)
{
    mprpc__pconn *c, *next;
    if (p->listed > 0) return 0;
    for (c = p->conns; c; c = next) {
        next = c->next;
        if (c->ncalls == 0) mprpc__pconn_close(ch, c);
    }
    if (p->conns || p->in_use) return 0;
    MPRPC_FREE(p);
    return 1;
}

/* mu held, I/O thread. Drops service tables idle for MPRPC__SVC_IDLE_MS and providers no table lists
 * (mprpc__prov_retire); comes back in a tick while a retired provider still finishes calls. */
static void mprpc__sweep(mprpc_channel *ch, uint64_t now)
{
    size_t i, j;
    int left = 0;
    for (i = j = 0; i < ch->nsvcs; i++) {
        mprpc__svc *s = ch->svcs[i];
        if (s != ch->direct && s->refs == 0 && s->used_at + MPRPC__SVC_IDLE_MS <= now) mprpc__svc_drop(s);
        else ch->svcs[j++] = s;
    }
    ch->nsvcs = j;
    mprpc__prov_mark_in_use(ch);
    for (i = j = 0; i < ch->nprovs; i++) {
        mprpc__prov *p = ch->provs[i];
        if (mprpc__prov_retire(ch, p)) continue;
        left |= p->listed == 0;
        ch->provs[j++] = p;
    }
    ch->nprovs = j;
    ch->sweep_at = now + (left ? MPRPC__IO_TICK_MS : MPRPC__SWEEP_MS);
}

/* I/O thread. Fires the timers that are due (call deadlines, connect timeouts) and says how long
 * epoll may sleep: until the next one, at most MPRPC__IO_TICK_MS. A caller whose deadline comes sooner
 * than wake_at wakes the thread; others need not, which spares a wake-up per call. One lock for all of
 * it. -2: the channel is being freed. */
static int mprpc__io_timers(mprpc_channel *ch)
{
    uint64_t now = mprpc__now_ms(), next = now + MPRPC__IO_TICK_MS;
    size_t i;
    mprpc__pconn *c;
    pthread_mutex_lock(&ch->mu);
    if (ch->state != MPRPC__CHAN_RUNNING) {
        pthread_mutex_unlock(&ch->mu);
        return -2;
    }
    mprpc__io_expire(ch, now);
    if (ch->nconnecting > 0) mprpc__io_connect_timeouts(ch, now);
    if (now >= ch->sweep_at) mprpc__sweep(ch, now);
    if (ch->nheap > 0 && ch->heap[0]->deadline < next) next = ch->heap[0]->deadline;
    for (i = 0; i < ch->nprovs && ch->nconnecting > 0; i++)
        for (c = ch->provs[i]->conns; c; c = c->next)
            if (c->state == MPRPC__PCONN_CONNECTING && c->connect_deadline < next) next = c->connect_deadline;
    ch->wake_at = next;
    pthread_mutex_unlock(&ch->mu);
    return next > now ? (int)(next - now) : 0;
}

/* I/O thread. The end of a turn: completions (their callbacks may queue calls), then one flush per
 * connection with output queued this turn, then connections closed this turn are freed. */
static void mprpc__io_turn_end(mprpc_channel *ch)
{
    mprpc__pconn *c;
    mprpc__run_completions(ch);
    while ((c = ch->flush) != NULL) {
        ch->flush = c->flush_next;
        c->flush_listed = 0;
        mprpc__io_flush(ch, c, 0);
        mprpc__run_completions(ch); /* a failed flush may have completed calls */
    }
    while ((c = ch->dead) != NULL) {
        ch->dead = c->dead_next;
        mprpc__pconn_free(c);
    }
}

/* I/O thread. mprpc_channel_free: every call in flight completes with MPRPC_ERR_SHUTDOWN (may have run
 * if its request had been queued on a connection), every connection closes. */
static void mprpc__io_shutdown(mprpc_channel *ch)
{
    size_t i;
    pthread_mutex_lock(&ch->mu);
    while (ch->nheap > 0) {
        mprpc__rec *r = ch->heap[0];
        int queued = mprpc__rec_queued(r);
        mprpc_controller_set_failed(r->ctl, MPRPC_ERR_SHUTDOWN, "mprpc_channel_free with the call in "
                                    "flight%s", queued ? " (its request was queued: it may have run)" : "");
        mprpc__finish_locked(ch, r, MPRPC_ERR_SHUTDOWN, queued);
    }
    for (i = 0; i < ch->nprovs; i++)
        while (ch->provs[i]->conns) mprpc__pconn_close(ch, ch->provs[i]->conns);
    pthread_mutex_unlock(&ch->mu);
    mprpc__io_turn_end(ch);
}

/* One turn of the loop: wait up to sleep_ms for events, handle them, run completions and flushes, fire
 * timers. Returns how long the next turn may sleep; -2 once the channel is being freed. Run by the I/O
 * thread, or in poll mode by mprpc_channel_dispatch and blocking calls. */
static int mprpc__io_turn(mprpc_channel *ch, int sleep_ms)
{
    struct epoll_event ev[MPRPC__IO_EVENTS];
    int i, n = epoll_wait(ch->epfd, ev, MPRPC__IO_EVENTS, sleep_ms);
    for (i = 0; i < n; i++) {
        if (ev[i].data.ptr == NULL) {
            uint64_t v;
            ssize_t k = read(ch->evfd, &v, sizeof v);
            (void)k;
            continue;
        }
        mprpc__io_event(ch, (mprpc__pconn *)ev[i].data.ptr, ev[i].events);
    }
    mprpc__io_turn_end(ch);
    if ((sleep_ms = mprpc__io_timers(ch)) < -1) return sleep_ms;
    return ch->done_head || ch->flush || ch->dead ? 0 : sleep_ms; /* timers completed calls: at once */
}

static void *mprpc__io_main(void *arg)
{
    mprpc_channel *ch = (mprpc_channel *)arg;
    int sleep_ms = 0;
    while ((sleep_ms = mprpc__io_turn(ch, sleep_ms)) >= -1) {}
    mprpc__io_shutdown(ch);
    return NULL;
}

/* ---- poll mode: the program's own loop drives the channel ---- */

MPRPCDEF int mprpc_channel_fd(mprpc_channel *ch)
{
    return ch && !ch->threaded ? ch->epfd : -1;
}

MPRPCDEF int mprpc_channel_dispatch(mprpc_channel *ch)
{
    int next;
    if (!ch || ch->threaded || ch->in_dispatch) return -1;
    ch->in_dispatch = 1;
    next = mprpc__io_turn(ch, 0);
    ch->in_dispatch = 0;
    return next < 0 ? 0 : next;
}

/* Poll mode: a blocking call runs the loop itself until its record is done. */
static void mprpc__wait_polling(mprpc_channel *ch, mprpc__rec *r)
{
    int sleep_ms = 0;
    pthread_mutex_lock(&ch->mu);
    while (r->state != MPRPC__REC_DONE) {
        pthread_mutex_unlock(&ch->mu);
        ch->in_dispatch = 1;
        sleep_ms = mprpc__io_turn(ch, sleep_ms);
        ch->in_dispatch = 0;
        if (sleep_ms < 0) sleep_ms = 0;
        pthread_mutex_lock(&ch->mu);
    }
    mprpc__rec_give(ch, r);
    pthread_mutex_unlock(&ch->mu);
}

/* ---- channel lifecycle ---- */

/* Fills the direct channel's provider table: rpcserver_list, else rpcserver_address, else
 * rpcserver_ip:rpcserver_port. */
static mprpc_status mprpc__direct_list(mprpc_channel *ch)
{
    char (*v)[MPRPC_ADDR_MAX] = NULL, list[sizeof ch->cfg.rpcserver_list], *tok, *save = NULL;
    mprpc__addrs addrs = {NULL, 0, 0};
    size_t n = 0;
    mprpc_status st;
    mprpc__addr a;
    char why[160];
    mprpc__copy_str(list, sizeof list, ch->cfg.rpcserver_list[0] ? ch->cfg.rpcserver_list : "");
    /* an entry takes at least 2 bytes with its separator: at most sizeof list / 2 + 1 of them */
    v = (char (*)[MPRPC_ADDR_MAX])mprpc__zalloc((sizeof list / 2 + 1) * MPRPC_ADDR_MAX);
    if (!v) return MPRPC_ERR_NO_MEMORY;
    for (tok = strtok_r(list, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
        if (strlen(tok) >= MPRPC_ADDR_MAX || !mprpc__addr_parse(tok, &a, why, sizeof why)) {
            mprpc__fmt(ch->cfg.error, sizeof ch->cfg.error, "rpcserver_list: '%.64s': %s", tok,
                       strlen(tok) >= MPRPC_ADDR_MAX ? "too long" : why);
            MPRPC_FREE(v);
            return MPRPC_ERR_CONFIG;
        }
        mprpc__copy_str(v[n++], MPRPC_ADDR_MAX, tok);
    }
    if (n == 0 && ch->cfg.rpcserver_address[0])
        mprpc__copy_str(v[n++], MPRPC_ADDR_MAX, ch->cfg.rpcserver_address);
    else if (n == 0)
        mprpc__addr_join(v[n++], MPRPC_ADDR_MAX, ch->cfg.rpcserver_ip, ch->cfg.rpcserver_port);
    ch->direct = mprpc__svc_get(ch, "");
    st = ch->direct && mprpc__addrs_set(&addrs, v, n) ? mprpc__svc_install(ch, ch->direct, addrs.v, addrs.n)
                                                       : MPRPC_ERR_NO_MEMORY;
    mprpc__addrs_free(&addrs); /* the same shape as a registry answer */
    MPRPC_FREE(v);
    return st;
}

static void mprpc__channel_release(mprpc_channel *ch)
{
    size_t i;
    for (i = 0; i < ch->nrecs; i++) {
        mprpc_buf_free(&ch->recs[i]->req);
        pthread_cond_destroy(&ch->recs[i]->cv);
        MPRPC_FREE(ch->recs[i]);
    }
    for (i = 0; i < ch->nsvcs; i++) mprpc__svc_free(ch->svcs[i]);
    for (i = 0; i < ch->nprovs; i++) MPRPC_FREE(ch->provs[i]);
    MPRPC_FREE(ch->recs);
    MPRPC_FREE(ch->heap);
    MPRPC_FREE(ch->svcs);
    MPRPC_FREE(ch->provs);
    mprpc__registry_close(ch->registry);
    if (ch->epfd >= 0) close(ch->epfd);
    if (ch->evfd >= 0) close(ch->evfd);
    if (ch->tls) mprpc__tls_io->ctx_free(ch->tls);
    pthread_cond_destroy(&ch->registry_cv);
    pthread_mutex_destroy(&ch->mu);
    MPRPC_FREE(ch);
}

/* The kernel objects and the pool's arrays. */
static mprpc_status mprpc__channel_setup(mprpc_channel *ch)
{
    struct epoll_event ev;
    size_t slots = (size_t)ch->cfg.channel_max_pending;
    ch->recs = (mprpc__rec **)mprpc__zalloc(slots * sizeof *ch->recs);
    ch->heap = (mprpc__rec **)mprpc__zalloc(slots * sizeof *ch->heap);
    if (!ch->recs || !ch->heap) return MPRPC_ERR_NO_MEMORY;
    ch->epfd = epoll_create1(EPOLL_CLOEXEC);
    ch->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (ch->epfd < 0 || ch->evfd < 0) return MPRPC_ERR_IO;
    memset(&ev, 0, sizeof ev);
    ev.events = EPOLLIN;
    ev.data.ptr = NULL;
    if (epoll_ctl(ch->epfd, EPOLL_CTL_ADD, ch->evfd, &ev) != 0) return MPRPC_ERR_IO;
    if (ch->cfg.tls_enable &&
        (ch->tls = mprpc__tls_io->ctx_new(&ch->cfg, 0, ch->cfg.error, sizeof ch->cfg.error)) == NULL)
        return MPRPC_ERR_TLS;
    if (mprpc__registry_wanted(&ch->cfg)) return MPRPC_OK;
    return mprpc__direct_list(ch);
}

static void mprpc__channel_locks_init(mprpc_channel *ch)
{
    pthread_condattr_t ca;
    pthread_mutex_init(&ch->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&ch->registry_cv, &ca);
    pthread_condattr_destroy(&ca);
}

MPRPCDEF mprpc_status mprpc_channel_new(mprpc_channel **out, const mprpc_config *cfg)
{
    mprpc_channel *ch;
    mprpc_status st;
    if (!out || !cfg) return MPRPC_ERR_INVALID_ARGUMENT;
    *out = NULL;
    st = mprpc__config_check(cfg, "mprpc_channel_new");
    if (st != MPRPC_OK) return st;
    if (mprpc__nanopb_check("mprpc_channel_new") != MPRPC_OK) return MPRPC_ERR_UNSUPPORTED;
    ch = (mprpc_channel *)mprpc__zalloc(sizeof *ch);
    if (!ch) return MPRPC_ERR_NO_MEMORY;
    ch->cfg = *cfg;
    ch->epfd = ch->evfd = -1;
    ch->seed_calls = mprpc__registry_wanted(cfg) ? cfg->zookeeper_seed_layout > 0
                                                 : cfg->channel_protocol_version == 0;
    ch->threaded = cfg->channel_io_thread != 0;
    mprpc__channel_locks_init(ch);
    st = mprpc__channel_setup(ch);
    if (st == MPRPC_OK && ch->threaded && mprpc__thread_start(&ch->io, mprpc__io_main, ch) != 0)
        st = MPRPC_ERR_IO;
    if (st != MPRPC_OK) {
        MPRPC_LOG_ERROR("mprpc_channel_new: %s%s%s", mprpc_status_str(st), ch->cfg.error[0] ? ": " : "",
                        ch->cfg.error);
        mprpc__channel_release(ch);
        return st;
    }
    *out = ch;
    return MPRPC_OK;
}

MPRPCDEF void mprpc_channel_free(mprpc_channel *ch)
{
    if (!ch) return;
    if (mprpc__on_io_thread(ch)) {
        MPRPC_LOG_ERROR("mprpc_channel_free called from a completion callback: refused, the channel stays "
                        "open (free it from another thread)");
        return;
    }
    pthread_mutex_lock(&ch->mu);
    ch->state = MPRPC__CHAN_STOPPING;
    pthread_mutex_unlock(&ch->mu);
    if (ch->threaded) {
        mprpc__wake(ch);
        pthread_join(ch->io, NULL);
    } else { /* poll mode: the completions run here, on the program's thread */
        ch->in_dispatch = 1;
        mprpc__io_shutdown(ch);
    }
    mprpc__channel_release(ch);
}

/* ---- making calls (blocking and async share all of this) ---- */

/* Checks a call's arguments; fills ctl on failure. */
static mprpc_status mprpc__check_call(mprpc_channel *ch, const mprpc__call_args *a, mprpc_controller *ctl,
                                      const char *fn)
{
    if (!ch || !a->service || !a->method || !a->req_fields || !a->req || !a->resp_fields || !a->resp) {
        mprpc_controller_set_failed(ctl, MPRPC_ERR_INVALID_ARGUMENT, "%s: NULL argument", fn);
        return ctl->status;
    }
    if (strlen(a->service) > MPRPC_NAME_MAX || strlen(a->method) > MPRPC_NAME_MAX) {
        mprpc_controller_set_failed(ctl, MPRPC_ERR_INVALID_ARGUMENT,
                                    "service and method names are limited to %d bytes", MPRPC_NAME_MAX);
        return ctl->status;
    }
    return MPRPC_OK;
}

/* The request, encoded once into the record (v0 for seed providers) with the time left. */
static mprpc_status mprpc__encode(mprpc_channel *ch, mprpc__rec *r, const mprpc__call_args *a)
{
    mprpc_request_meta m;
    mprpc_status st;
    size_t size;
    int left = mprpc__remaining_ms(r->deadline);
    memset(&m, 0, sizeof m);
    m.service = a->service;
    m.method = a->method;
    m.call_id = mprpc__call_id(r);
    m.timeout_ms = (uint32_t)(left > 0 ? left : 1);
    m.version = r->seed ? 0 : MPRPC_PROTOCOL_VERSION;
    r->req.pos = r->req.len = 0;
    st = mprpc_wire_encode_request_meta(&r->req, ch->cfg.max_message_size, &m, a->req_fields, a->req);
    if (st == MPRPC_ERR_TOO_LARGE && pb_get_encoded_size(&size, a->req_fields, a->req))
        mprpc_controller_set_failed(r->ctl, st, "%s.%s: request of %zu bytes exceeds max_message_size %u",
                                    a->service, a->method, size, (unsigned)ch->cfg.max_message_size);
    else if (st != MPRPC_OK)
        mprpc_controller_set_failed(r->ctl, st, "%s.%s: cannot encode the request: %s", a->service,
                                    a->method, mprpc_status_str(st));
    return st;
}

/* mu held. r could not be queued: back to the pool, unless the I/O thread already took it over. */
static mprpc_status mprpc__unqueue(mprpc_channel *ch, mprpc__rec *r, mprpc__pconn *c, uint32_t gen,
                                   mprpc_status st)
{
    if (r->gen != gen || r->state != MPRPC__REC_ROUTED || r->conn != c || r->end_off != 0) return MPRPC_OK;
    mprpc__heap_remove(ch, r);
    mprpc__rec_unlink(r);
    if (r->probe) r->prov->probe_out = 0;
    mprpc_controller_set_failed(r->ctl, st, "no memory to queue a request of %zu bytes for %s", r->req.len,
                                c->prov->addr);
    mprpc__rec_give(ch, r);
    return st;
}

/* Starts r: deadline heap, route, queue. MPRPC_OK: it will complete on the I/O thread. */
static mprpc_status mprpc__launch(mprpc_channel *ch, mprpc__rec *r)
{
    mprpc_controller *ctl = r->ctl;
    uint32_t gen = r->gen;
    mprpc__pconn *c;
    mprpc_status st;
    int wake = 0;
    pthread_mutex_lock(&ch->mu);
    if (ch->state != MPRPC__CHAN_RUNNING) {
        mprpc__rec_give(ch, r);
        pthread_mutex_unlock(&ch->mu);
        mprpc_controller_set_failed(ctl, MPRPC_ERR_SHUTDOWN, "the channel is being freed");
        return MPRPC_ERR_SHUTDOWN;
    }
    mprpc__heap_push(ch, r);
    if (r->deadline < ch->wake_at) {
        ch->wake_at = r->deadline;
        wake = !mprpc__on_io_thread(ch);
    }
    st = mprpc__route_call(ch, r, &c);
    if (st != MPRPC_OK) {
        mprpc__heap_remove(ch, r);
        mprpc__rec_give(ch, r);
        pthread_mutex_unlock(&ch->mu);
        ctl->status = st;
        return st;
    }
    pthread_mutex_lock(&c->wmu);
    pthread_mutex_unlock(&ch->mu);
    st = mprpc__enqueue(ch, c, r, mprpc__on_io_thread(ch));
    pthread_mutex_unlock(&c->wmu);
    if (wake) mprpc__wake(ch);
    if (st == MPRPC_OK) return MPRPC_OK;
    pthread_mutex_lock(&ch->mu);
    st = mprpc__unqueue(ch, r, c, gen, st);
    pthread_mutex_unlock(&ch->mu);
    return st;
}

/* Everything a call does before it waits: resolve (no lock held), take a record, encode, launch. On
 * MPRPC_OK *out completes later on the I/O thread; otherwise ctl says why and nothing runs. */
static mprpc_status mprpc__submit(mprpc_channel *ch, const mprpc__call_args *a, mprpc_controller *ctl,
                                  mprpc_done_fn done, void *user, mprpc__rec **out)
{
    int from_ctl = ctl->timeout_ms > 0, tms = from_ctl ? ctl->timeout_ms : ch->cfg.rpc_timeout_ms;
    uint64_t deadline = mprpc__now_ms() + (uint64_t)tms;
    mprpc__svc *svc;
    mprpc__rec *r;
    mprpc_status st = mprpc__resolve(ch, a, deadline, from_ctl ? "ctl->timeout_ms" : "rpc_timeout_ms", tms,
                                     &svc, ctl);
    if (st != MPRPC_OK) return st;
    pthread_mutex_lock(&ch->mu);
    st = mprpc__rec_take(ch, &r);
    if (st == MPRPC_OK) r->svc = svc; /* the record holds the table now */
    else mprpc__svc_put(ch, svc);
    pthread_mutex_unlock(&ch->mu);
    if (st != MPRPC_OK) {
        mprpc_controller_set_failed(ctl, st, st == MPRPC_ERR_BUSY ? "channel_max_pending (%d) calls already "
                                    "in flight" : "no memory for a call record (%d allowed)",
                                    ch->cfg.channel_max_pending);
        return st;
    }
    r->deadline = deadline;
    r->timeout_ms = tms;
    r->timeout_is_ctl = from_ctl;
    r->seed = ch->seed_calls;
    r->ctl = ctl;
    r->resp_fields = a->resp_fields;
    r->resp = a->resp;
    r->done = done;
    r->user = user;
    if ((st = mprpc__encode(ch, r, a)) != MPRPC_OK) {
        pthread_mutex_lock(&ch->mu);
        mprpc__rec_give(ch, r);
        pthread_mutex_unlock(&ch->mu);
        return st;
    }
    *out = r;
    return mprpc__launch(ch, r);
}

/* ---- the blocking API ---- */

MPRPCDEF mprpc_status mprpc_channel_call(mprpc_channel *ch, const char *service,
                                         const char *method,
                                         const pb_msgdesc_t *request_fields, const void *request,
                                         const pb_msgdesc_t *response_fields, void *response,
                                         mprpc_controller *ctl)
{
    mprpc__call_args a;
    mprpc__rec *r;
    if (!ctl) return MPRPC_ERR_INVALID_ARGUMENT;
    mprpc_controller_reset(ctl);
    a.service = service;
    a.method = method;
    a.req_fields = request_fields;
    a.req = request;
    a.resp_fields = response_fields;
    a.resp = response;
    if (mprpc__check_call(ch, &a, ctl, "mprpc_channel_call") != MPRPC_OK) return ctl->status;
    if (mprpc__on_io_thread(ch)) {
        mprpc_controller_set_failed(ctl, MPRPC_ERR_INVALID_ARGUMENT, "mprpc_channel_call from a completion "
                                    "callback would wait for its own thread: use mprpc_channel_call_async");
        return ctl->status;
    }
    if (mprpc__submit(ch, &a, ctl, NULL, NULL, &r) != MPRPC_OK) return ctl->status;
    if (!ch->threaded) {
        mprpc__wait_polling(ch, r);
        return ctl->status;
    }
    pthread_mutex_lock(&ch->mu); /* the I/O thread completes every call, by its deadline at the latest */
    while (r->state != MPRPC__REC_DONE) pthread_cond_wait(&r->cv, &ch->mu);
    mprpc__rec_give(ch, r);
    pthread_mutex_unlock(&ch->mu);
    return ctl->status;
}

MPRPCDEF mprpc_status mprpc_channel_call_raw(mprpc_channel *ch, const char *service, const char *method,
                                             const void *request, size_t request_len, mprpc_buf *response,
                                             mprpc_controller *ctl)
{
    mprpc_bytes body;
    mprpc__RawMsg rq;
    if (ctl && (!response || (request_len && !request))) {
        mprpc_controller_reset(ctl);
        mprpc_controller_set_failed(ctl, MPRPC_ERR_INVALID_ARGUMENT, "mprpc_channel_call_raw: NULL argument");
        return ctl->status;
    }
    body.data = (const uint8_t *)request;
    body.size = request_len;
    memset(&rq, 0, sizeof rq);
    rq.body.funcs.encode = mprpc__raw_write;
    rq.body.arg = &body;
    return mprpc_channel_call(ch, service, method, &mprpc__RawMsg_msg, &rq, &mprpc__RawMsg_msg, response, ctl);
}

/* ---- the async API ---- */

MPRPCDEF mprpc_status mprpc_channel_call_async(mprpc_channel *ch, const char *service, const char *method,
    const pb_msgdesc_t *request_fields, const void *request,
    const pb_msgdesc_t *response_fields, void *response,
    mprpc_controller *ctl, mprpc_done_fn done, void *user)
{
    mprpc__call_args a;
    mprpc__rec *r;
    if (!ctl) return MPRPC_ERR_INVALID_ARGUMENT;
    mprpc_controller_reset(ctl);
    a.service = service;
    a.method = method;
    a.req_fields = request_fields;
    a.req = request;
    a.resp_fields = response_fields;
    a.resp = response;
    if (mprpc__check_call(ch, &a, ctl, "mprpc_channel_call_async") != MPRPC_OK) return ctl->status;
    if (!done) {
        mprpc_controller_set_failed(ctl, MPRPC_ERR_INVALID_ARGUMENT, "mprpc_channel_call_async: NULL done");
        return ctl->status;
    }
    return mprpc__submit(ch, &a, ctl, done, user, &r);
}

/* ======================================================================== */
/* == 9. registry (ZooKeeper) ============================================= */
/* ======================================================================== */

/* Layout (default):  <root>/<Service>            persistent
 *                     <root>/<Service>/<ip:port>  ephemeral, data "ip:port\nMethod1\nMethod2..."
 * Seed layout (written as the seed C++ framework writes it, besides the above; published with
 * zookeeper_seed_layout = 1, or auto with a config in the seed's key spellings; resolved through with 1):
 *                     /<Service>                  persistent, empty data
 *                     /<Service>/<Method>         ephemeral, data "ip:port" (the first instance owns it;
 *                                                 the others watch it and take over when it disappears)
 *
 * Threads. One worker thread per registry owns the ZooKeeper handle: it opens the session (in the
 * background: mprpc__registry_open returns at once), replaces it after expiry, and does every request.
 * Providers (publish) and callers (the first resolve of a service) post work to it, a node or a path
 * marked "dirty", and wait on r->cv up to their own deadline; the worker records the outcome and
 * broadcasts. The ZooKeeper client runs its own I/O and completion threads; the global watcher (every
 * watch is armed on it) runs on the latter, never blocks and never calls ZooKeeper: it records the session
 * state and marks nodes and paths dirty. There is one retry loop, the worker's: whatever failed stays
 * dirty and is tried again MPRPC__REG_RETRY_MS later (jittered, so callers refused together retry apart).
 * After a session expiry the new session is opened after a random delay (mprpc__reg_expiry_spread).
 *
 * Locks. r->mu guards all registry state. It is never held across a ZooKeeper request or
 * zookeeper_init/close (the worker drops it first), so a caller waits for the worker only on r->cv, with
 * its deadline. Each request in flight has its own small lock (mprpc__zkop). Order: r->mu before an op's.
 *
 * Bounds. A resolve waits until the earlier of the call's deadline and zookeeper_connect_timeout_ms from
 * its start: the call's timeout is the caller's whole budget, and zookeeper_connect_timeout_ms says how
 * much of a long one discovery may spend waiting for ZooKeeper. A publish (provider start) waits
 * zookeeper_connect_timeout_ms. Each request of the worker is bounded by zookeeper_connect_timeout_ms too
 * and aborted when the registry closes.
 *
 * Ownership. A provider replaces a node at its own address only when one of its own earlier (expired)
 * sessions left it. A node held by any other session is left alone: the worker watches it, logs once, and
 * registers when it goes (a restarted provider waits out its predecessor's session; callers reach the
 * address meanwhile anyway). Two live providers on one address so never fight over the node.
 *
 * Security. With zookeeper_auth = "user:password" (or "file:PATH", the first line of PATH) the session
 * authenticates with the digest scheme and every node it creates gets the ACL {auth ALL, world READ}: the
 * server turns the "auth" entry into the creator's digest identity, so nothing is hashed here. Others can
 * read the registry but not change or delete it. The persistent parents get the same ACL, so every
 * instance of a service must use the same credentials (they share <root>/<Service>). With credentials, a
 * provider refuses to register under a parent whose ACL lets anyone create, delete, write or administer
 * (an old deployment's or a squatter's node), and a caller ignores registrations under such a parent or
 * whose own ACL lets anyone write them, with a log line, unless zookeeper_allow_open_acl = 1. The password
 * never reaches a log line or an error text. */

static int mprpc__registry_wanted(const mprpc_config *cfg)
{
    return cfg->zookeeper_ip[0] != '\0' || cfg->zookeeper_hosts[0] != '\0';
}

/* zookeeper_seed_layout decided: does a provider also publish the seed's /<Service>/<Method> nodes? Auto
 * (-1) says yes when the config was written for the seed (a key in the seed's spelling): a provider started
 * with the seed's own config file, unchanged, is then found by seed C++ callers (issue 11, item 14). The
 * nodes cost one ephemeral node per method and harm no mprpc.h caller. A caller resolves through them only
 * with an explicit 1: auto never moves a channel to the seed's calls (a connection per call, version 0),
 * and providers with a native config publish only under zookeeper_root. */
static int mprpc__seed_publish(const mprpc_config *cfg)
{
    return cfg->zookeeper_seed_layout > 0 || (cfg->zookeeper_seed_layout < 0 && cfg->seed_spellings);
}

static void mprpc__addrs_free(mprpc__addrs *a)
{
    MPRPC_FREE(a->v);
    memset(a, 0, sizeof *a);
}

/* Copies n addresses into a, growing it to fit. */
static int mprpc__addrs_set(mprpc__addrs *a, char (*v)[MPRPC_ADDR_MAX], size_t n)
{
    if (n > a->cap) {
        char (*grown)[MPRPC_ADDR_MAX] = (char (*)[MPRPC_ADDR_MAX])MPRPC_REALLOC(a->v, n * MPRPC_ADDR_MAX);
        if (!grown) return 0;
        a->v = grown;
        a->cap = n;
    }
    if (n) memcpy(a->v, v, n * MPRPC_ADDR_MAX);
    a->n = n;
    return 1;
}

#ifdef MPRPC_NO_ZOOKEEPER

static const char mprpc__reg_compiled_out[] =
    "ZooKeeper discovery is not available: mprpc.h was built with MPRPC_NO_ZOOKEEPER";

/* Compiled out: mprpc_config_validate already refuses a config that names ZooKeeper, so these only
 * answer a caller that skipped validation. */
static mprpc_status mprpc__registry_open(mprpc__registry **out, const mprpc_config *cfg, char *err,
                                         size_t errlen)
{
    (void)cfg;
    *out = NULL;
    mprpc__fmt(err, errlen, "%s", mprpc__reg_compiled_out);
    return MPRPC_ERR_UNSUPPORTED;
}

static void mprpc__registry_close(mprpc__registry *r)
{
    (void)r;
}

static mprpc_status mprpc__registry_publish(mprpc__registry *r, const char *service, const char *addr,
                                            const char *const *methods, size_t method_count, char *err,
                                            size_t errlen)
{
    (void)r; (void)service; (void)addr; (void)methods; (void)method_count;
    mprpc__fmt(err, errlen, "%s", mprpc__reg_compiled_out);
    return MPRPC_ERR_UNSUPPORTED;
}

static mprpc_status mprpc__registry_resolve(mprpc__registry *r, const char *service, const char *method,
                                            uint64_t deadline_ms, uint64_t *gen, mprpc__addrs *out,
                                            char *err, size_t errlen)
{
    (void)r; (void)service; (void)method; (void)deadline_ms; (void)gen; (void)out;
    mprpc__fmt(err, errlen, "%s", mprpc__reg_compiled_out);
    return MPRPC_ERR_UNSUPPORTED;
}

#else /* ZooKeeper */

#ifndef THREADED
#  define THREADED /* zookeeper_mt: the client runs its own I/O and completion threads */
#endif
#include <zookeeper/zookeeper.h>
#include <netdb.h> /* getaddrinfo: naming the host that does not resolve */

#define MPRPC__REG_RETRY_MS 500  /* worker: mean pause before retrying whatever failed (jittered +-50%) */
#define MPRPC__REG_REOPEN_MS 1000 /* worker: mean pause before trying to open a session again (+-50%) */
#define MPRPC__REG_DEAD_MAX 8     /* our own expired sessions remembered (their nodes may be replaced) */
#define MPRPC__REG_EXPIRY_SPREAD_MAX_MS 2000 /* re-open after expiry: at most this much jitter (9.3) */
#define MPRPC__REG_IDLE_MS 600000 /* a cache entry not resolved for 10 minutes is dropped with its watch */
#define MPRPC__REG_ABSENT_MAX 64  /* cache entries of names with no node kept (least recently resolved go) */


/* -------------------------------------------------------------------------------------------------- */
/* 9.1 registry state                                                                                 */
/* -------------------------------------------------------------------------------------------------- */

/* One ZooKeeper request in flight. Two references: the waiter's and the completion's, so that a waiter
 * that gives up at its deadline never frees what a late completion still writes to. */
typedef struct mprpc__zkop {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs, done, aborted, rc;
    struct Stat stat;
    char **strs; /* children (strings completion) */
    int nstrs;
    char *data; /* node data (data completion); datalen -1 means the node has no data */
    int datalen;
    int world_perms;    /* ACL completion: what world:anyone may do */
    char acl_text[160]; /* ACL completion, for messages: "world:anyone cdrwa, digest:alice cdrwa" */
} mprpc__zkop;

/* A node this registry publishes and keeps alive across sessions. Never freed before the registry. */
typedef struct mprpc__reg_pub {
    struct mprpc__reg_pub *next;
    char *path; /* immutable once listed */
    char *data;
    int datalen;
    int exclusive;      /* 1: our address; 0: a seed method node, first instance wins */
    int dirty;          /* the worker must (re-)create or re-check it */
    int owned;          /* our session owns it right now */
    long long holder;   /* another session holding it, already reported (said once) */
    mprpc_status result; /* of the worker's last attempt; MPRPC_AGAIN until the first one settles */
    char error[256];     /* text of a failed result */
} mprpc__reg_pub;

/* A cache entry: the providers of one service (children of <root>/<Service>) or, in the seed layout,
 * the data of /<Service>/<Method>. Bounded (9.6): an entry not resolved for MPRPC__REG_IDLE_MS is dropped
 * with its watch, and of the entries whose node does not exist only the MPRPC__REG_ABSENT_MAX most
 * recently resolved are kept, so names from untrusted input cannot grow the cache or the watches. */
typedef struct mprpc__reg_watch {
    struct mprpc__reg_watch *next;
    char *path;  /* immutable */
    char *name;  /* for logs: "Service" or "Service/Method" */
    int is_data; /* seed layout: one node's data is the address */
    char (*addrs)[MPRPC_ADDR_MAX];
    size_t count;
    uint64_t gen;    /* from r->gen_seq whenever addrs changes: rises across eviction and re-creation,
                        as the channel installs only a list with a higher gen than it has */
    uint64_t used_at; /* last resolve (eviction is by idleness) */
    int waiters;     /* resolve callers waiting on this entry: it is not evicted meanwhile */
    int absent;      /* the last read found no node (counted against MPRPC__REG_ABSENT_MAX) */
    int fetched;     /* addrs is valid (possibly empty) */
    int dirty;       /* the worker must read it (first read, a watch fired, the session changed) */
    char error[256]; /* why the last read failed for good (not for want of a connection), or "" */
    unsigned long reads; /* reads of path so far (tests and the scale harness: one per change) */
} mprpc__reg_watch;

struct mprpc__registry {
    char hosts[512];
    char root[128];
    char auth[256];
    int session_timeout_ms, connect_timeout_ms, allow_open_acl;
    int seed_layout;  /* resolve through /<Service>/<Method> (zookeeper_seed_layout = 1 only) */
    int seed_publish; /* also publish /<Service>/<Method> (mprpc__seed_publish) */
    int seed_note;    /* said once at the first publish: 1 auto turned it on, 2 explicit 0 with seed keys */
    pthread_mutex_t mu;
    pthread_cond_t cv; /* the session changed, the worker finished something, work for it, closing */
    zhandle_t *zh;     /* the worker's; written under mu (the watcher compares), used only by the worker */
    int opening;       /* the worker is inside zookeeper_init: the watcher adopts the new handle */
    int state;         /* last session state seen on zh (0 until the first event) */
    int lost;          /* connection lost, not yet back */
    int expired;       /* session expired: the worker must open a new one */
    int auth_failed;   /* ZooKeeper rejected the credentials: final */
    int closing;
    long long session_id;
    long long dead[MPRPC__REG_DEAD_MAX]; /* our expired sessions */
    int ndead;
    char session_error[256]; /* why there is no session (cannot open one, credentials rejected), or "" */
    uint64_t reopen_at, retry_at;
    uint64_t rng;                 /* jitter (xorshift64*), under mu */
    uint64_t expired_at_ms;       /* when the last expiry was seen (tests, scale harness) */
    uint64_t opened_at_ms;        /* when the last session was opened (tests, scale harness) */
    uint64_t gen_seq;             /* last generation given to a cache entry */
    uint64_t idle_ms;             /* MPRPC__REG_IDLE_MS (tests shorten it) */
    size_t absent_max;            /* MPRPC__REG_ABSENT_MAX */
    size_t entries;               /* cache entries now (tests, scale harness) */
    unsigned long evicted;        /* cache entries dropped so far */
    mprpc__zkop *current; /* the worker's request in flight, aborted by close */
    mprpc__reg_pub *pubs;
    mprpc__reg_watch *watches;
    unsigned long caller_fetches; /* first reads asked for by resolve callers (tests: warm calls add none) */
    unsigned long sessions;       /* handles opened so far */
    unsigned long requests;       /* ZooKeeper requests queued by the worker (tests, scale harness) */
    pthread_t worker;
    int worker_started;
    struct ACL acl_entries[2];
    struct ACL_vector acl;
    char acl_auth[8], acl_empty[1], acl_world[8], acl_anyone[8];
};

/* Waits on cv (created with CLOCK_MONOTONIC) until deadline_ms; returns ETIMEDOUT when it passed. */
static int mprpc__reg_wait_until(pthread_cond_t *cv, pthread_mutex_t *mu, uint64_t deadline_ms)
{
    struct timespec ts;
    ts.tv_sec = (time_t)(deadline_ms / 1000);
    ts.tv_nsec = (long)(deadline_ms % 1000) * 1000000L;
    return pthread_cond_timedwait(cv, mu, &ts);
}

static int mprpc__reg_cond_init(pthread_cond_t *cv)
{
    pthread_condattr_t ca;
    int rc;
    if (pthread_condattr_init(&ca) != 0) return -1;
    rc = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    if (rc == 0) rc = pthread_cond_init(cv, &ca);
    pthread_condattr_destroy(&ca);
    return rc;
}

static char *mprpc__reg_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = (char *)MPRPC_MALLOC(n);
    if (p) memcpy(p, s, n);
    return p;
}

static const char *mprpc__reg_state_name(int state)
{
    if (state == ZOO_CONNECTED_STATE) return "connected";
    if (state == ZOO_CONNECTING_STATE) return "connecting";
    if (state == ZOO_ASSOCIATING_STATE) return "associating";
    if (state == ZOO_EXPIRED_SESSION_STATE) return "session expired";
    if (state == ZOO_AUTH_FAILED_STATE) return "authentication failed";
    if (state == ZOO_READONLY_STATE) return "read-only";
    if (state == ZOO_NOTCONNECTED_STATE) return "not connected";
    return "not connected yet";
}

/* r->mu held: a number uniform in [0, max_ms] (xorshift64*: cheap, and good enough to spread a herd). */
static uint64_t mprpc__reg_jitter(mprpc__registry *r, uint64_t max_ms)
{
    uint64_t x = r->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    r->rng = x;
    return ((x * 0x2545F4914F6CDD1DULL) >> 11) % (max_ms + 1);
}

/* r->mu held: when to retry what failed, MPRPC__REG_RETRY_MS on average, uniform over +-50%, so that
 * callers refused together (a server overloaded, a quorum lost) do not come back together. */
static uint64_t mprpc__reg_retry_at(mprpc__registry *r)
{
    return mprpc__now_ms() + MPRPC__REG_RETRY_MS / 2 + mprpc__reg_jitter(r, MPRPC__REG_RETRY_MS);
}

/* Failures that a (re)connected session may cure: the worker tries again. */
static int mprpc__reg_retryable(int rc)
{
    return rc == ZCONNECTIONLOSS || rc == ZINVALIDSTATE || rc == ZSESSIONEXPIRED || rc == ZSESSIONMOVED ||
           rc == ZOPERATIONTIMEOUT || rc == ZCLOSING || rc == ZNODEEXISTS;
}

/* -------------------------------------------------------------------------------------------------- */
/* 9.2 one bounded ZooKeeper request (worker thread only)                                             */
/* -------------------------------------------------------------------------------------------------- */

static mprpc__zkop *mprpc__zkop_new(void)
{
    mprpc__zkop *op = (mprpc__zkop *)MPRPC_MALLOC(sizeof *op);
    if (!op) return NULL;
    memset(op, 0, sizeof *op);
    if (pthread_mutex_init(&op->mu, NULL) != 0) {
        MPRPC_FREE(op);
        return NULL;
    }
    if (mprpc__reg_cond_init(&op->cv) != 0) {
        pthread_mutex_destroy(&op->mu);
        MPRPC_FREE(op);
        return NULL;
    }
    op->refs = 2;
    op->datalen = -1;
    return op;
}

static void mprpc__zkop_unref(mprpc__zkop *op)
{
    int left, i;
    pthread_mutex_lock(&op->mu);
    left = --op->refs;
    pthread_mutex_unlock(&op->mu);
    if (left > 0) return;
    for (i = 0; i < op->nstrs; i++) MPRPC_FREE(op->strs[i]);
    MPRPC_FREE(op->strs);
    MPRPC_FREE(op->data);
    pthread_cond_destroy(&op->cv);
    pthread_mutex_destroy(&op->mu);
    MPRPC_FREE(op);
}

/* Completion side: record rc, wake the waiter, drop the completion's reference. */
static void mprpc__zkop_finish(mprpc__zkop *op, int rc)
{
    pthread_mutex_lock(&op->mu);
    op->rc = rc;
    op->done = 1;
    pthread_cond_signal(&op->cv);
    pthread_mutex_unlock(&op->mu);
    mprpc__zkop_unref(op);
}

static void mprpc__zkop_void_cb(int rc, const void *data)
{
    mprpc__zkop_finish((mprpc__zkop *)data, rc);
}

static void mprpc__zkop_string_cb(int rc, const char *value, const void *data)
{
    (void)value;
    mprpc__zkop_finish((mprpc__zkop *)data, rc);
}

static void mprpc__zkop_stat_cb(int rc, const struct Stat *stat, const void *data)
{
    mprpc__zkop *op = (mprpc__zkop *)data;
    if (rc == ZOK && stat) op->stat = *stat; /* the waiter reads it only after done, under op->mu */
    mprpc__zkop_finish(op, rc);
}

static void mprpc__zkop_data_cb(int rc, const char *value, int value_len, const struct Stat *stat,
                                const void *data)
{
    mprpc__zkop *op = (mprpc__zkop *)data;
    if (rc == ZOK && stat) op->stat = *stat;
    if (rc == ZOK && value && value_len >= 0) {
        op->data = (char *)MPRPC_MALLOC((size_t)value_len + 1);
        if (!op->data) {
            rc = ZSYSTEMERROR;
        } else {
            memcpy(op->data, value, (size_t)value_len);
            op->data[value_len] = '\0';
            op->datalen = value_len;
        }
    }
    mprpc__zkop_finish(op, rc);
}

static void mprpc__zkop_strings_cb(int rc, const struct String_vector *strings, const void *data)
{
    mprpc__zkop *op = (mprpc__zkop *)data;
    int i;
    if (rc == ZOK && strings && strings->count > 0) {
        op->strs = (char **)MPRPC_MALLOC(sizeof(char *) * (size_t)strings->count);
        for (i = 0; op->strs && i < strings->count; i++) {
            op->strs[i] = mprpc__reg_strdup(strings->data[i]);
            if (!op->strs[i]) break;
            op->nstrs = i + 1;
        }
        if (op->nstrs < strings->count) rc = ZSYSTEMERROR;
    }
    mprpc__zkop_finish(op, rc);
}

/* "cdrwa" letters of a permission set, as ZooKeeper's own tools print them. */
static void mprpc__reg_perms_text(int perms, char out[8])
{
    char *p = out;
    if (perms & ZOO_PERM_CREATE) *p++ = 'c';
    if (perms & ZOO_PERM_DELETE) *p++ = 'd';
    if (perms & ZOO_PERM_READ) *p++ = 'r';
    if (perms & ZOO_PERM_WRITE) *p++ = 'w';
    if (perms & ZOO_PERM_ADMIN) *p++ = 'a';
    if (p == out) *p++ = '-';
    *p = '\0';
}

/* Keeps what the checks need: world:anyone's permissions and a printable summary (digest ids are
 * shortened to the user name; the hash is no secret, but it is noise). */
static void mprpc__zkop_acl_cb(int rc, struct ACL_vector *acl, struct Stat *stat, const void *data)
{
    mprpc__zkop *op = (mprpc__zkop *)data;
    size_t n = 0;
    int i;
    (void)stat;
    for (i = 0; rc == ZOK && acl && i < acl->count; i++) {
        const struct ACL *a = &acl->data[i];
        int digest = strcmp(a->id.scheme, "digest") == 0;
        char perms[8];
        if (strcmp(a->id.scheme, "world") == 0 && strcmp(a->id.id, "anyone") == 0) op->world_perms |= a->perms;
        mprpc__reg_perms_text(a->perms, perms);
        if (n < sizeof op->acl_text)
            n += (size_t)snprintf(op->acl_text + n, sizeof op->acl_text - n, "%s%s:%.*s %s", i ? ", " : "",
                                  a->id.scheme, (int)(digest ? strcspn(a->id.id, ":") : strlen(a->id.id)),
                                  a->id.id, perms);
    }
    mprpc__zkop_finish(op, rc);
}

/* qrc is what the zoo_a* call returned. Waits for the completion until deadline_ms or until the registry
 * closes (r->current lets mprpc__registry_close abort the wait). Returns the request's rc, or
 * ZOPERATIONTIMEOUT / ZCLOSING. On ZOK with out, *out = op (the caller unrefs it); else op is released. */
static int mprpc__zk_finish(mprpc__registry *r, mprpc__zkop *op, int qrc, uint64_t deadline_ms,
                            mprpc__zkop **out)
{
    int rc, closing;
    if (qrc != ZOK) {          /* not queued: the completion never runs */
        mprpc__zkop_unref(op); /* drops the completion's reference, the caller's stays */
        mprpc__zkop_unref(op);
        return qrc;
    }
    pthread_mutex_lock(&r->mu);
    closing = r->closing;
    r->current = op;
    r->requests++;
    pthread_mutex_unlock(&r->mu);
    pthread_mutex_lock(&op->mu);
    while (!op->done && !op->aborted && !closing && mprpc__now_ms() < deadline_ms)
        mprpc__reg_wait_until(&op->cv, &op->mu, deadline_ms);
    rc = op->done ? op->rc : (op->aborted || closing) ? ZCLOSING : ZOPERATIONTIMEOUT;
    pthread_mutex_unlock(&op->mu);
    pthread_mutex_lock(&r->mu);
    r->current = NULL;
    pthread_mutex_unlock(&r->mu);
    if (rc == ZOK && out)
        *out = op;
    else
        mprpc__zkop_unref(op);
    return rc;
}

static int mprpc__zk_create(mprpc__registry *r, const char *path, const char *data, int datalen, int mode,
                            uint64_t deadline)
{
    mprpc__zkop *op = mprpc__zkop_new();
    if (!op) return ZSYSTEMERROR;
    return mprpc__zk_finish(
        r, op, zoo_acreate(r->zh, path, data, datalen, &r->acl, mode, mprpc__zkop_string_cb, op), deadline,
        NULL);
}

static int mprpc__zk_delete(mprpc__registry *r, const char *path, uint64_t deadline)
{
    mprpc__zkop *op = mprpc__zkop_new();
    if (!op) return ZSYSTEMERROR;
    return mprpc__zk_finish(r, op, zoo_adelete(r->zh, path, -1, mprpc__zkop_void_cb, op), deadline, NULL);
}

/* zoo_aexists with a watch: the global watcher hears of the node's creation, change or deletion. */
static int mprpc__zk_exists(mprpc__registry *r, const char *path, struct Stat *stat, uint64_t deadline)
{
    mprpc__zkop *op = mprpc__zkop_new(), *got = NULL;
    int rc;
    if (!op) return ZSYSTEMERROR;
    rc = mprpc__zk_finish(r, op, zoo_aexists(r->zh, path, 1, mprpc__zkop_stat_cb, op), deadline, &got);
    if (got) {
        if (stat) *stat = got->stat;
        mprpc__zkop_unref(got);
    }
    return rc;
}

/* Children (with a watch) or data (with a watch) of path; on ZOK the caller unrefs *out. */
static int mprpc__zk_read(mprpc__registry *r, const char *path, int children, mprpc__zkop **out,
                          uint64_t deadline)
{
    mprpc__zkop *op = mprpc__zkop_new();
    *out = NULL;
    if (!op) return ZSYSTEMERROR;
    return mprpc__zk_finish(r, op,
                            children ? zoo_aget_children(r->zh, path, 1, mprpc__zkop_strings_cb, op)
                                     : zoo_aget(r->zh, path, 1, mprpc__zkop_data_cb, op),
                            deadline, out);
}

/* Removes every watch of ours on path, on the server and in the client (an evicted cache entry's).
 * ZooKeeper 3.8's header declares the completion as void_completion_t * (a pointer to the function
 * pointer), but the library stores the argument and calls it as the function itself (zookeeper.c,
 * aremove_watches -> add_completion_deregistration), so the function's address goes in that type. ZNOWATCHER
 * (nothing to remove: the watch fired and was not re-armed) comes back at once, without a completion. */
static int mprpc__zk_unwatch(mprpc__registry *r, const char *path, uint64_t deadline)
{
    mprpc__zkop *op = mprpc__zkop_new();
    void_completion_t *done = (void_completion_t *)(uintptr_t)mprpc__zkop_void_cb;
    if (!op) return ZSYSTEMERROR;
    return mprpc__zk_finish(r, op, zoo_aremove_all_watches(r->zh, path, ZWATCHTYPE_ANY, 0, done, op), deadline,
                            NULL);
}

/* The ACL of path: world:anyone's permissions and a summary for messages. */
static int mprpc__zk_acl(mprpc__registry *r, const char *path, int *world_perms, char *text, size_t textlen,
                         uint64_t deadline)
{
    mprpc__zkop *op = mprpc__zkop_new(), *got = NULL;
    int rc;
    if (!op) return ZSYSTEMERROR;
    rc = mprpc__zk_finish(r, op, zoo_aget_acl(r->zh, path, mprpc__zkop_acl_cb, op), deadline, &got);
    if (got) {
        *world_perms = got->world_perms;
        mprpc__copy_str(text, textlen, got->acl_text);
        mprpc__zkop_unref(got);
    }
    return rc;
}

/* -------------------------------------------------------------------------------------------------- */
/* 9.3 session: opened, watched and renewed by the worker                                             */
/* -------------------------------------------------------------------------------------------------- */

/* The ZooKeeper client's own log lines go to the debug level of mprpc's logger, not to stderr. */
static void mprpc__reg_zklog(const char *message)
{
    MPRPC_LOG_DEBUG("zookeeper client: %s", message);
}

static void mprpc__reg_mark_all_dirty(mprpc__registry *r)
{
    mprpc__reg_pub *p;
    mprpc__reg_watch *w;
    for (p = r->pubs; p; p = p->next) p->dirty = 1;
    for (w = r->watches; w; w = w->next) w->dirty = 1;
}

/* Watcher, r->mu held: the session is (again) connected. */
static void mprpc__reg_on_connected(mprpc__registry *r, zhandle_t *zh)
{
    const clientid_t *id = zoo_client_id(zh);
    long long sid = id ? (long long)id->client_id : 0;
    int user_len = (int)strcspn(r->auth, ":"); /* the user name only: the password is never logged */
    if (r->lost && sid == r->session_id)
        MPRPC_LOG_INFO("registry: connection to ZooKeeper recovered (session 0x%llx)", (unsigned long long)sid);
    if (sid != r->session_id && r->sessions > 1) {
        size_t np = 0, nw = 0;
        mprpc__reg_pub *p;
        mprpc__reg_watch *w;
        for (p = r->pubs; p; p = p->next) np++;
        for (w = r->watches; w; w = w->next) nw++;
        MPRPC_LOG_INFO("registry: new ZooKeeper session 0x%llx established; re-registering %zu node(s), "
                       "re-reading %zu watched path(s)", (unsigned long long)sid, np, nw);
    } else if (sid != r->session_id) {
        MPRPC_LOG_INFO("registry: connected to ZooKeeper at %s (session 0x%llx, timeout %d ms, root %s%s%.*s%s)",
                       r->hosts, (unsigned long long)sid, zoo_recv_timeout(zh), r->root,
                       r->auth[0] ? ", digest auth as \"" : "", user_len, r->auth, r->auth[0] ? "\"" : "");
    }
    /* A new session has no watches and no nodes of ours: everything is read and created again. The same
     * session back after a connection loss keeps both: the client re-arms its watches itself (SetWatches
     * with the last zxid it saw), so the server fires those whose node changed while we were away, and
     * whatever failed meanwhile is still dirty. Re-reading everything here would make every caller read
     * every service at once after a leader loss, when nothing changed (issue 14: a herd of all callers x
     * all services). */
    if (r->session_id != sid) mprpc__reg_mark_all_dirty(r);
    r->lost = 0;
    r->session_id = sid;
    r->session_error[0] = '\0';
}

/* The longest wait before re-opening a session after expiry: a quarter of the session timeout, at most
 * MPRPC__REG_EXPIRY_SPREAD_MAX_MS. When every caller's session expires at once (a partition between the
 * callers and the ensemble heals, a GC pause on the leader), each opens a session (a quorum write) and
 * re-reads its services: N callers at the same instant. A uniform delay spreads them. The session was
 * already gone for at least a session timeout, so a quarter more is small against it, and the cache keeps
 * answering resolves meanwhile (a resolve of a service not cached yet waits up to its own deadline, as for
 * any session not yet open); 2 s caps it for long timeouts, where spreading 100,000 callers over 2 s
 * (50,000 session creations a second) is already what an ensemble can take. */
static uint64_t mprpc__reg_expiry_spread(const mprpc__registry *r)
{
    uint64_t q = (uint64_t)r->session_timeout_ms / 4;
    return q < MPRPC__REG_EXPIRY_SPREAD_MAX_MS ? q : MPRPC__REG_EXPIRY_SPREAD_MAX_MS;
}

/* Watcher, r->mu held: a session event. */
static void mprpc__reg_on_session(mprpc__registry *r, zhandle_t *zh, int state)
{
    MPRPC_LOG_DEBUG("registry: ZooKeeper session event: %s", mprpc__reg_state_name(state));
    if (state == ZOO_CONNECTED_STATE) {
        mprpc__reg_on_connected(r, zh);
    } else if (state == ZOO_CONNECTING_STATE) {
        if (!r->lost && r->state == ZOO_CONNECTED_STATE)
            MPRPC_LOG_WARN("registry: connection to ZooKeeper lost; serving from the cache while the "
                           "client reconnects");
        r->lost = 1;
    } else if (state == ZOO_EXPIRED_SESSION_STATE) {
        uint64_t delay = mprpc__reg_jitter(r, mprpc__reg_expiry_spread(r));
        MPRPC_LOG_WARN("registry: ZooKeeper session 0x%llx expired; opening a new session in %llu ms "
                       "(serving from the cache meanwhile)", (unsigned long long)r->session_id,
                       (unsigned long long)delay);
        r->expired = 1;
        r->expired_at_ms = mprpc__now_ms();
        r->reopen_at = r->expired_at_ms + delay;
    } else if (state == ZOO_AUTH_FAILED_STATE) {
        mprpc__fmt(r->session_error, sizeof r->session_error,
                   "ZooKeeper at %s rejected the credentials of zookeeper_auth", r->hosts);
        MPRPC_LOG_ERROR("registry: %s", r->session_error);
        r->auth_failed = 1;
    }
    r->state = state;
}

/* The global watcher: runs on the client's completion thread. Records and delegates, never blocks. */
static void mprpc__reg_watcher(zhandle_t *zh, int type, int state, const char *path, void *ctx)
{
    mprpc__registry *r = (mprpc__registry *)ctx;
    mprpc__reg_pub *p;
    mprpc__reg_watch *w;
    pthread_mutex_lock(&r->mu);
    if (zh != r->zh && r->opening && !r->zh) r->zh = zh; /* an event before zookeeper_init returned */
    if (zh != r->zh || r->closing) {                    /* an old handle being closed, or we are closing */
        pthread_mutex_unlock(&r->mu);
        return;
    }
    if (type == ZOO_SESSION_EVENT) {
        mprpc__reg_on_session(r, zh, state);
    } else if (path) {
        for (w = r->watches; w; w = w->next)
            if (strcmp(w->path, path) == 0) w->dirty = 1;
        for (p = r->pubs; p; p = p->next)
            if (strcmp(p->path, path) == 0) p->dirty = 1; /* deleted, changed, or released: check it */
        MPRPC_LOG_DEBUG("registry: watch fired on %s (type %d)", path, type);
    }
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static void mprpc__reg_auth_cb(int rc, const void *data)
{
    (void)data;
    if (rc != ZOK) MPRPC_LOG_ERROR("registry: ZooKeeper digest authentication failed: %s", zerror(rc));
}

/* zookeeper_init failed: name the host that does not resolve, or say what errno says. */
static void mprpc__reg_init_error(const mprpc__registry *r, int e, char *err, size_t errlen)
{
    const char *s = r->hosts;
    while (*s && (e == ENOENT || e == EINVAL || e == 0)) {
        char host[256];
        size_t n = strcspn(s, ","), hn;
        struct addrinfo hints, *res = NULL;
        int rc;
        mprpc__fmt(host, sizeof host, "%.*s", (int)(n < sizeof host ? n : sizeof host - 1), s);
        hn = strcspn(host, "/"); /* a chroot suffix */
        host[hn] = '\0';
        if (strrchr(host, ':')) *strrchr(host, ':') = '\0';
        memset(&hints, 0, sizeof hints);
        hints.ai_socktype = SOCK_STREAM;
        rc = getaddrinfo(host, NULL, &hints, &res);
        if (res) freeaddrinfo(res);
        if (rc != 0) {
            mprpc__fmt(err, errlen, "cannot resolve ZooKeeper host %s (%s)", host, gai_strerror(rc));
            return;
        }
        s += n + (s[n] == ',');
    }
    mprpc__fmt(err, errlen, "cannot open a ZooKeeper session with \"%s\": %s", r->hosts,
               e ? strerror(e) : "invalid host list");
}

/* Opens a handle (the watcher adopts it at once) and queues the digest credentials, which the client
 * sends before any request on every connection. No lock held across zookeeper_init: it resolves names. */
static void mprpc__reg_session_open(mprpc__registry *r)
{
    zhandle_t *zh;
    char err[256] = "";
    int e;
    pthread_mutex_lock(&r->mu);
    r->opening = 1;
    r->state = r->lost = r->expired = 0;
    r->session_id = 0;
    pthread_mutex_unlock(&r->mu);
    errno = 0;
    zh = zookeeper_init2(r->hosts, mprpc__reg_watcher, r->session_timeout_ms, NULL, r, 0, mprpc__reg_zklog);
    e = errno;
    if (!zh) mprpc__reg_init_error(r, e, err, sizeof err);
    if (zh && r->auth[0] && zoo_add_auth(zh, "digest", r->auth, (int)strlen(r->auth), mprpc__reg_auth_cb, NULL) != ZOK)
        mprpc__fmt(err, sizeof err, "zoo_add_auth(digest) failed on ZooKeeper at %s", r->hosts);
    pthread_mutex_lock(&r->mu);
    r->opening = 0;
    r->zh = zh;
    r->opened_at_ms = mprpc__now_ms();
    if (zh) r->sessions++;
    if (err[0]) {
        mprpc__copy_str(r->session_error, sizeof r->session_error, err);
        r->reopen_at = r->opened_at_ms + MPRPC__REG_REOPEN_MS / 2 + mprpc__reg_jitter(r, MPRPC__REG_REOPEN_MS);
        if (zh) r->expired = 1; /* drop it and try again */
        MPRPC_LOG_ERROR("registry: %s (retrying every %d ms)", err, MPRPC__REG_REOPEN_MS);
    }
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

/* Worker: drops the expired (or never usable) handle, remembers its session as dead, opens a new one.
 * The old handle is out of r->zh before it is closed, so the watcher ignores its last events. */
static void mprpc__reg_session_renew(mprpc__registry *r)
{
    zhandle_t *old;
    pthread_mutex_lock(&r->mu);
    old = r->zh;
    r->zh = NULL;
    if (r->session_id) r->dead[r->ndead++ % MPRPC__REG_DEAD_MAX] = r->session_id;
    mprpc__reg_mark_all_dirty(r);
    pthread_mutex_unlock(&r->mu);
    if (old) zookeeper_close(old);
    mprpc__reg_session_open(r);
}

/* Was session id one of ours, now expired? Called with r->mu held. */
static int mprpc__reg_was_ours(const mprpc__registry *r, long long id)
{
    int i;
    for (i = 0; i < MPRPC__REG_DEAD_MAX && i < r->ndead; i++)
        if (r->dead[i] == id) return 1;
    return 0;
}

/* -------------------------------------------------------------------------------------------------- */
/* 9.4 publish (worker side): a node of ours made to exist                                            */
/* -------------------------------------------------------------------------------------------------- */

/* Creates the persistent ancestors of path (not path itself). */
static int mprpc__reg_ensure_parents(mprpc__registry *r, const char *path, uint64_t deadline)
{
    char buf[512];
    size_t i, n = strlen(path);
    int rc;
    if (n >= sizeof buf) return ZBADARGUMENTS;
    memcpy(buf, path, n + 1);
    for (i = 1; i < n; i++) {
        if (buf[i] != '/') continue;
        buf[i] = '\0';
        rc = mprpc__zk_create(r, buf, NULL, 0, 0, deadline); /* empty data, as the seed */
        buf[i] = '/';
        if (rc != ZOK && rc != ZNODEEXISTS) return rc;
    }
    return ZOK;
}

/* The parent of path ("/a/b" for "/a/b/c"). */
static void mprpc__reg_parent(const char *path, char *out, size_t cap)
{
    size_t n = (size_t)(strrchr(path, '/') - path);
    mprpc__fmt(out, cap, "%.*s", (int)(n ? n : 1), path);
}

/* With credentials, refuses a parent that lets anyone add, delete, rewrite or re-ACL (an old deployment's
 * node, or a squatter's): an impostor there would receive calls. Returns ZOK, a ZooKeeper error, or
 * ZNOAUTH with err filled. */
static int mprpc__reg_check_parent(mprpc__registry *r, const char *path, uint64_t deadline, char *err,
                                   size_t errlen)
{
    char parent[512], acl[160] = "";
    int world = 0, rc;
    if (!r->auth[0] || r->allow_open_acl) return ZOK;
    mprpc__reg_parent(path, parent, sizeof parent);
    rc = mprpc__zk_acl(r, parent, &world, acl, sizeof acl, deadline);
    if (rc != ZOK) return rc;
    if (!(world & (ZOO_PERM_CREATE | ZOO_PERM_DELETE | ZOO_PERM_WRITE | ZOO_PERM_ADMIN))) return ZOK;
    mprpc__fmt(err, errlen,
               "refusing to register %s: anyone may add or delete registrations under %s (fix its ACL or "
               "set zookeeper_allow_open_acl = 1); its ACL: {%s}", path, parent, acl);
    return ZNOAUTH;
}

/* Records (r->mu held) that another session holds p's node; logs only when the holder changes. */
static void mprpc__reg_note_holder(mprpc__reg_pub *p, long long holder)
{
    if (p->holder == holder) return;
    p->holder = holder;
    if (!p->exclusive)
        MPRPC_LOG_INFO("registry: %s is owned by another instance (session 0x%llx); carrying on, taking it "
                       "over when it goes", p->path, (unsigned long long)holder);
    else
        MPRPC_LOG_WARN("registry: %s is held by another live session 0x%llx (a second provider publishing "
                       "the same address?); not replacing it: registering once it goes (callers reach this "
                       "address meanwhile)", p->path, (unsigned long long)holder);
}

/* Creates p's ephemeral node, or finds it ours or held by another session (then watched, so its deletion
 * brings us back). Replaces only a node one of our own expired sessions left. */
static int mprpc__reg_claim(mprpc__registry *r, mprpc__reg_pub *p, const char *data, int datalen,
                            uint64_t deadline)
{
    struct Stat st;
    int attempt, rc, ours;
    const clientid_t *id = zoo_client_id(r->zh);
    long long me = id ? (long long)id->client_id : 0;
    for (attempt = 0; attempt < 3; attempt++) {
        rc = mprpc__zk_create(r, p->path, data, datalen, ZOO_EPHEMERAL, deadline);
        if (rc == ZNONODE) { /* a parent vanished meanwhile */
            rc = mprpc__reg_ensure_parents(r, p->path, deadline);
            if (rc != ZOK) return rc;
            continue;
        }
        if (rc == ZOK) MPRPC_LOG_INFO("registry: registered %s (session 0x%llx)", p->path, (unsigned long long)me);
        if (rc == ZOK || rc == ZNODEEXISTS) rc = mprpc__zk_exists(r, p->path, &st, deadline);
        if (rc == ZNONODE) continue; /* gone meanwhile (or a parent vanished): create again */
        if (rc != ZOK) return rc;
        pthread_mutex_lock(&r->mu);
        p->owned = (long long)st.ephemeralOwner == me;
        ours = !p->owned && p->exclusive && mprpc__reg_was_ours(r, (long long)st.ephemeralOwner);
        if (p->owned) p->holder = 0;
        if (!p->owned && !ours) mprpc__reg_note_holder(p, (long long)st.ephemeralOwner);
        pthread_mutex_unlock(&r->mu);
        if (!ours) return ZOK;
        MPRPC_LOG_WARN("registry: %s was left by our expired session 0x%llx; replacing it", p->path,
                       (unsigned long long)st.ephemeralOwner);
        rc = mprpc__zk_delete(r, p->path, deadline);
        if (rc != ZOK && rc != ZNONODE) return rc;
    }
    return ZNODEEXISTS;
}

/* Worker, r->mu held on entry and exit: (re-)creates or re-checks one dirty published node. */
static void mprpc__reg_work_pub(mprpc__registry *r, mprpc__reg_pub *p)
{
    uint64_t deadline = mprpc__now_ms() + (uint64_t)r->connect_timeout_ms;
    char *data = mprpc__reg_strdup(p->data), err[256] = "";
    int datalen = p->datalen, rc = ZSYSTEMERROR;
    p->dirty = 0;
    pthread_mutex_unlock(&r->mu);
    if (data) rc = mprpc__reg_ensure_parents(r, p->path, deadline);
    if (rc == ZOK) rc = mprpc__reg_check_parent(r, p->path, deadline, err, sizeof err);
    if (rc == ZOK) rc = mprpc__reg_claim(r, p, data, datalen, deadline);
    MPRPC_FREE(data);
    pthread_mutex_lock(&r->mu);
    if (rc == ZOK) {
        p->result = MPRPC_OK;
    } else if (mprpc__reg_retryable(rc)) {
        MPRPC_LOG_WARN("registry: cannot register %s yet: %s (retrying)", p->path, zerror(rc));
        p->dirty = 1;
        r->retry_at = mprpc__reg_retry_at(r);
    } else { /* final until published again: no retry storm against a refusal */
        if (!err[0])
            mprpc__fmt(err, sizeof err, "registering %s in ZooKeeper at %s failed: %s", p->path, r->hosts,
                       zerror(rc));
        mprpc__copy_str(p->error, sizeof p->error, err);
        p->result = rc == ZNOAUTH ? MPRPC_ERR_CONFIG : MPRPC_ERR_ZOOKEEPER;
        MPRPC_LOG_ERROR("registry: %s", err);
    }
    pthread_cond_broadcast(&r->cv);
}

/* -------------------------------------------------------------------------------------------------- */
/* 9.5 resolve (worker side): a watched path read into the cache                                      */
/* -------------------------------------------------------------------------------------------------- */

static int mprpc__reg_addr_cmp(const void *a, const void *b)
{
    return strcmp((const char *)a, (const char *)b);
}

/* Reads w's path with a watch; an absent node gets an exists watch and reads as *op = NULL. */
static int mprpc__reg_read(mprpc__registry *r, const mprpc__reg_watch *w, mprpc__zkop **op, uint64_t deadline)
{
    int attempt, rc = ZNONODE;
    for (attempt = 0; attempt < 3 && rc == ZNONODE; attempt++) {
        rc = mprpc__zk_read(r, w->path, !w->is_data, op, deadline);
        if (rc != ZNONODE) break;
        rc = mprpc__zk_exists(r, w->path, NULL, deadline);
        if (rc == ZNONODE) return ZOK; /* absent, and now watched */
        if (rc == ZOK) rc = ZNONODE;   /* created meanwhile: read again */
    }
    return rc;
}

/* The addresses an answer names: the children, or (seed layout) the first line of the data. */
static int mprpc__reg_parse(const mprpc__reg_watch *w, const mprpc__zkop *op, char (**list)[MPRPC_ADDR_MAX],
                            size_t *n)
{
    size_t cap = op ? (w->is_data ? 1 : (size_t)op->nstrs) : 0, i, len;
    *list = NULL;
    *n = 0;
    if (cap == 0) return ZOK;
    *list = (char(*)[MPRPC_ADDR_MAX])MPRPC_MALLOC(cap * MPRPC_ADDR_MAX);
    if (!*list) return ZSYSTEMERROR;
    for (i = 0; i < (w->is_data ? 0 : cap); i++) {
        if (strlen(op->strs[i]) >= MPRPC_ADDR_MAX) {
            MPRPC_LOG_WARN("registry: ignoring over-long provider name under %s", w->path);
            continue;
        }
        strcpy((*list)[(*n)++], op->strs[i]);
    }
    len = w->is_data && op->data ? strcspn(op->data, "\n") : 0; /* the seed writes "ip:port" */
    if (len > 0 && len < MPRPC_ADDR_MAX) {
        memcpy((*list)[0], op->data, len);
        (*list)[0][len] = '\0';
        *n = 1;
    }
    if (*n > 1) qsort(*list, *n, MPRPC_ADDR_MAX, mprpc__reg_addr_cmp);
    return ZOK;
}

/* A caller with credentials uses only registrations nobody else could have written: none under a parent
 * that anyone may add to or delete from, none whose own node anyone may rewrite. Drops the others from
 * list, with a log line each. */
static int mprpc__reg_filter_open(mprpc__registry *r, const mprpc__reg_watch *w, char (*list)[MPRPC_ADDR_MAX],
                                  size_t *n, uint64_t deadline)
{
    char parent[512], node[640], acl[160] = "";
    size_t i, kept = 0;
    int world = 0, rc;
    if (!r->auth[0] || r->allow_open_acl || *n == 0) return ZOK;
    if (w->is_data) mprpc__reg_parent(w->path, parent, sizeof parent);
    else mprpc__copy_str(parent, sizeof parent, w->path);
    rc = mprpc__zk_acl(r, parent, &world, acl, sizeof acl, deadline);
    if (rc != ZOK) return rc;
    if (world & (ZOO_PERM_CREATE | ZOO_PERM_DELETE | ZOO_PERM_ADMIN)) {
        MPRPC_LOG_WARN("registry: ignoring all %zu provider(s) of %s: %s has the ACL {%s}, so anyone may "
                       "have added them (zookeeper_allow_open_acl = 1 accepts them)", *n, w->name, parent, acl);
        *n = 0;
        return ZOK;
    }
    for (i = 0; i < *n; i++) {
        if (w->is_data) mprpc__copy_str(node, sizeof node, w->path);
        else mprpc__fmt(node, sizeof node, "%s/%s", w->path, list[i]);
        rc = mprpc__zk_acl(r, node, &world, acl, sizeof acl, deadline);
        if (rc == ZNONODE) continue; /* gone meanwhile: the watch brings the next list */
        if (rc != ZOK) return rc;
        if (world & (ZOO_PERM_WRITE | ZOO_PERM_ADMIN))
            MPRPC_LOG_WARN("registry: ignoring provider %s of %s: %s has the ACL {%s}, so anyone may have "
                           "written it", list[i], w->name, node, acl);
        else if (kept++ != i)
            memcpy(list[kept - 1], list[i], MPRPC_ADDR_MAX);
    }
    *n = kept;
    return ZOK;
}

/* r->mu held: installs a new list in w and logs the change ("+a -b"). Takes list over. */
static void mprpc__reg_store(mprpc__registry *r, mprpc__reg_watch *w, char (*list)[MPRPC_ADDR_MAX], size_t n)
{
    char diff[512];
    size_t dl = 0, i, j;
    diff[0] = '\0';
    for (i = 0; i < n; i++) {
        for (j = 0; j < w->count && strcmp(w->addrs[j], list[i]) != 0; j++) {}
        if (j == w->count && dl < sizeof diff) dl += (size_t)snprintf(diff + dl, sizeof diff - dl, " +%s", list[i]);
    }
    for (j = 0; j < w->count; j++) {
        for (i = 0; i < n && strcmp(w->addrs[j], list[i]) != 0; i++) {}
        if (i == n && dl < sizeof diff) dl += (size_t)snprintf(diff + dl, sizeof diff - dl, " -%s", w->addrs[j]);
    }
    if (!w->fetched)
        MPRPC_LOG_INFO("registry: %s has %zu provider(s):%s", w->name, n, n ? diff : " none");
    else if (diff[0])
        MPRPC_LOG_INFO("registry: providers of %s changed, now %zu:%s", w->name, n, diff);
    MPRPC_FREE(w->addrs);
    w->addrs = list;
    w->count = n;
    w->fetched = 1;
    w->gen = ++r->gen_seq;
    w->error[0] = '\0';
}

/* Worker, r->mu held on entry and exit: reads one dirty path (re-arming its watch) into the cache. */
static void mprpc__reg_work_watch(mprpc__registry *r, mprpc__reg_watch *w)
{
    uint64_t deadline = mprpc__now_ms() + (uint64_t)r->connect_timeout_ms;
    mprpc__zkop *op = NULL;
    char(*list)[MPRPC_ADDR_MAX] = NULL;
    size_t n = 0;
    int rc, absent;
    w->dirty = 0;
    w->reads++;
    pthread_mutex_unlock(&r->mu);
    rc = mprpc__reg_read(r, w, &op, deadline);
    absent = rc == ZOK && !op;
    if (rc == ZOK) rc = mprpc__reg_parse(w, op, &list, &n);
    if (op) mprpc__zkop_unref(op);
    if (rc == ZOK) rc = mprpc__reg_filter_open(r, w, list, &n, deadline);
    pthread_mutex_lock(&r->mu);
    if (rc == ZOK) {
        w->absent = absent;
        mprpc__reg_store(r, w, list, n);
    } else {
        MPRPC_FREE(list);
        MPRPC_LOG_WARN("registry: cannot read %s: %s (retrying)", w->path, zerror(rc));
        if (!mprpc__reg_retryable(rc))
            mprpc__fmt(w->error, sizeof w->error, "cannot look up %s in ZooKeeper at %s: %s", w->path,
                       r->hosts, zerror(rc));
        w->dirty = 1;
        r->retry_at = mprpc__reg_retry_at(r);
    }
    pthread_cond_broadcast(&r->cv);
}

/* -------------------------------------------------------------------------------------------------- */
/* 9.6 the worker: the only thread that calls ZooKeeper                                               */
/* -------------------------------------------------------------------------------------------------- */

static void mprpc__reg_watch_free(mprpc__reg_watch *w)
{
    MPRPC_FREE(w->path);
    MPRPC_FREE(w->name);
    MPRPC_FREE(w->addrs);
    MPRPC_FREE(w);
}

/* r->mu held: the cache entry to drop now, or NULL. One idle for r->idle_ms, else the least recently
 * resolved absent one when more than r->absent_max are absent. Never one a resolve is waiting on. */
static mprpc__reg_watch *mprpc__reg_victim(mprpc__registry *r, uint64_t now)
{
    mprpc__reg_watch *w, *lru = NULL;
    size_t absent = 0;
    for (w = r->watches; w; w = w->next) {
        if (w->waiters) continue;
        if (now - w->used_at >= r->idle_ms) return w;
        if (!w->absent) continue;
        absent++;
        if (!lru || w->used_at < lru->used_at) lru = w;
    }
    return absent > r->absent_max ? lru : NULL;
}

/* r->mu held on entry and exit: drops one cache entry and its watch. A watch that cannot be removed now
 * (connection lost meanwhile) stays on the server until it fires once or the session ends; the watcher
 * ignores it then, as no entry has its path. A published node's path keeps its watch. */
static void mprpc__reg_evict(mprpc__registry *r, mprpc__reg_watch *w)
{
    mprpc__reg_watch **pp;
    mprpc__reg_pub *p;
    int rc = ZOK;
    for (pp = &r->watches; *pp != w; pp = &(*pp)->next) {}
    *pp = w->next;
    r->entries--;
    r->evicted++;
    for (p = r->pubs; p && strcmp(p->path, w->path) != 0; p = p->next) {}
    pthread_mutex_unlock(&r->mu);
    if (!p) rc = mprpc__zk_unwatch(r, w->path, mprpc__now_ms() + (uint64_t)r->connect_timeout_ms);
    MPRPC_LOG_DEBUG("registry: dropped %s from the cache (%s; watch removal: %s)", w->name,
                    w->absent ? "no such node" : "not resolved for a while", zerror(rc));
    mprpc__reg_watch_free(w);
    pthread_mutex_lock(&r->mu);
}

/* r->mu held: drops one cache entry due to go. Only on a connected session, so its watch goes too.
 * Returns 0 when there was none. */
static int mprpc__reg_sweep(mprpc__registry *r)
{
    mprpc__reg_watch *w;
    if (!r->zh || r->state != ZOO_CONNECTED_STATE || r->lost) return 0;
    w = mprpc__reg_victim(r, mprpc__now_ms());
    if (w) mprpc__reg_evict(r, w);
    return w != NULL;
}

/* r->mu held: performs one piece of dirty work (published nodes first). Returns 0 when there was none. */
static int mprpc__reg_work_one(mprpc__registry *r)
{
    mprpc__reg_pub *p;
    mprpc__reg_watch *w;
    if (!r->zh || r->state != ZOO_CONNECTED_STATE || mprpc__now_ms() < r->retry_at) return 0;
    for (p = r->pubs; p && !p->dirty; p = p->next) {}
    if (p) {
        mprpc__reg_work_pub(r, p);
        return 1;
    }
    for (w = r->watches; w && !w->dirty; w = w->next) {}
    if (w) mprpc__reg_work_watch(r, w);
    return w != NULL;
}

static void *mprpc__reg_worker(void *arg)
{
    mprpc__registry *r = (mprpc__registry *)arg;
    pthread_mutex_lock(&r->mu);
    while (!r->closing) {
        uint64_t now = mprpc__now_ms(), wake = now + 1000;
        if ((!r->zh || r->expired) && !r->auth_failed && now >= r->reopen_at) {
            pthread_mutex_unlock(&r->mu);
            mprpc__reg_session_renew(r);
            pthread_mutex_lock(&r->mu);
            continue;
        }
        if (mprpc__reg_work_one(r) || mprpc__reg_sweep(r)) continue;
        if (r->retry_at > now && r->retry_at < wake) wake = r->retry_at;
        if (r->reopen_at > now && r->reopen_at < wake) wake = r->reopen_at;
        mprpc__reg_wait_until(&r->cv, &r->mu, wake);
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

/* -------------------------------------------------------------------------------------------------- */
/* 9.7 interface: open, close, publish, resolve                                                       */
/* -------------------------------------------------------------------------------------------------- */

static void mprpc__registry_free(mprpc__registry *r)
{
    while (r->pubs) {
        mprpc__reg_pub *p = r->pubs;
        r->pubs = p->next;
        MPRPC_FREE(p->path);
        MPRPC_FREE(p->data);
        MPRPC_FREE(p);
    }
    while (r->watches) {
        mprpc__reg_watch *w = r->watches;
        r->watches = w->next;
        mprpc__reg_watch_free(w);
    }
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    memset(r->auth, 0, sizeof r->auth); /* no password left behind in freed memory */
    MPRPC_FREE(r);
}

/* zookeeper_auth is "user:password", or "file:PATH" whose first line is that (so the secret can stay
 * out of the config file). Error texts name the file, never its content. */
static mprpc_status mprpc__reg_load_auth(mprpc__registry *r, const char *spec, char *err, size_t errlen)
{
    const char *colon;
    if (strncmp(spec, "file:", 5) == 0) {
        FILE *f = fopen(spec + 5, "r");
        int ok = f && fgets(r->auth, sizeof r->auth, f) != NULL;
        if (f) fclose(f);
        if (!ok) {
            mprpc__fmt(err, errlen, "zookeeper_auth: cannot read %s: %s", spec + 5,
                       f ? "empty file" : strerror(errno));
            return MPRPC_ERR_CONFIG;
        }
        r->auth[strcspn(r->auth, "\r\n")] = '\0';
    } else {
        mprpc__copy_str(r->auth, sizeof r->auth, spec);
    }
    colon = strchr(r->auth, ':');
    if (!colon || colon == r->auth || colon[1] == '\0') {
        memset(r->auth, 0, sizeof r->auth);
        mprpc__fmt(err, errlen, "zookeeper_auth must be \"user:password\" or \"file:PATH\" naming a file "
                                "whose first line is that");
        return MPRPC_ERR_CONFIG;
    }
    return MPRPC_OK;
}

/* ACL of every node we create: open, or {creator ALL, world READ} under digest auth. */
static void mprpc__reg_init_acl(mprpc__registry *r)
{
    if (!r->auth[0]) {
        r->acl = ZOO_OPEN_ACL_UNSAFE;
        return;
    }
    mprpc__copy_str(r->acl_auth, sizeof r->acl_auth, "auth");
    mprpc__copy_str(r->acl_world, sizeof r->acl_world, "world");
    mprpc__copy_str(r->acl_anyone, sizeof r->acl_anyone, "anyone");
    r->acl_entries[0].perms = ZOO_PERM_ALL;
    r->acl_entries[0].id.scheme = r->acl_auth;
    r->acl_entries[0].id.id = r->acl_empty;
    r->acl_entries[1].perms = ZOO_PERM_READ;
    r->acl_entries[1].id.scheme = r->acl_world;
    r->acl_entries[1].id.id = r->acl_anyone;
    r->acl.count = 2;
    r->acl.data = r->acl_entries;
}

/* A seed for the jitter that differs between registries of one process (address) and between processes
 * started together (pid, nanoseconds), mixed by splitmix64; never 0, as xorshift needs. */
static uint64_t mprpc__reg_seed(const mprpc__registry *r)
{
    struct timespec ts;
    uint64_t z;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    z = (uint64_t)(uintptr_t)r ^ ((uint64_t)getpid() << 32) ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20);
    z += 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    return z ? z : 1;
}

/* Copies what the registry needs from the config. */
static mprpc_status mprpc__reg_configure(mprpc__registry *r, const mprpc_config *cfg, char *err,
                                         size_t errlen)
{
    size_t n = strlen(cfg->zookeeper_root);
    if (cfg->zookeeper_hosts[0])
        mprpc__copy_str(r->hosts, sizeof r->hosts, cfg->zookeeper_hosts);
    else
        mprpc__fmt(r->hosts, sizeof r->hosts, "%s:%d", cfg->zookeeper_ip, cfg->zookeeper_port);
    while (n > 1 && cfg->zookeeper_root[n - 1] == '/') n--; /* "/mprpc/" means "/mprpc" */
    if (cfg->zookeeper_root[0] != '/' || n < 2 || n >= sizeof r->root) {
        mprpc__fmt(err, errlen, "zookeeper_root \"%s\" must be an absolute path below / such as /mprpc",
                   cfg->zookeeper_root);
        return MPRPC_ERR_CONFIG;
    }
    memcpy(r->root, cfg->zookeeper_root, n);
    r->root[n] = '\0';
    r->session_timeout_ms = cfg->zookeeper_session_timeout_ms;
    r->connect_timeout_ms = cfg->zookeeper_connect_timeout_ms;
    r->seed_layout = cfg->zookeeper_seed_layout > 0;
    r->seed_publish = mprpc__seed_publish(cfg);
    r->seed_note = !cfg->seed_spellings ? 0 : cfg->zookeeper_seed_layout < 0 ? 1
                 : cfg->zookeeper_seed_layout == 0 ? 2 : 0;
    r->idle_ms = MPRPC__REG_IDLE_MS;
    r->absent_max = MPRPC__REG_ABSENT_MAX;
    r->rng = mprpc__reg_seed(r);
    r->allow_open_acl = cfg->zookeeper_allow_open_acl != 0;
    if (cfg->zookeeper_auth[0] && mprpc__reg_load_auth(r, cfg->zookeeper_auth, err, errlen) != MPRPC_OK)
        return MPRPC_ERR_CONFIG;
    mprpc__reg_init_acl(r);
    return MPRPC_OK;
}

/* A registry whose lock and condition are initialised and nothing else; NULL when out of memory. */
static mprpc__registry *mprpc__reg_alloc(void)
{
    mprpc__registry *r = (mprpc__registry *)MPRPC_MALLOC(sizeof *r);
    if (!r) return NULL;
    memset(r, 0, sizeof *r);
    if (pthread_mutex_init(&r->mu, NULL) != 0) {
        MPRPC_FREE(r);
        return NULL;
    }
    if (mprpc__reg_cond_init(&r->cv) != 0) {
        pthread_mutex_destroy(&r->mu);
        MPRPC_FREE(r);
        return NULL;
    }
    return r;
}

/* Returns at once: checks the config and starts the worker, which connects in the background (publish
 * and resolve wait for it, each up to its own deadline). Fails only for a bad config or no memory. */
static mprpc_status mprpc__registry_open(mprpc__registry **out, const mprpc_config *cfg, char *err,
                                         size_t errlen)
{
    mprpc__registry *r;
    mprpc_status st;
    *out = NULL;
    r = mprpc__reg_alloc();
    if (!r) {
        mprpc__fmt(err, errlen, "registry: out of memory or locks");
        return MPRPC_ERR_NO_MEMORY;
    }
    st = mprpc__reg_configure(r, cfg, err, errlen);
    if (st == MPRPC_OK && mprpc__thread_start(&r->worker, mprpc__reg_worker, r) != 0) {
        mprpc__fmt(err, errlen, "registry: cannot start its thread");
        st = MPRPC_ERR_NO_MEMORY;
    }
    if (st != MPRPC_OK) {
        MPRPC_LOG_ERROR("registry: %s", err ? err : mprpc_status_str(st));
        mprpc__registry_free(r);
        return st;
    }
    r->worker_started = 1;
    MPRPC_LOG_DEBUG("registry: connecting to ZooKeeper at %s in the background", r->hosts);
    *out = r;
    return MPRPC_OK;
}

/* r->mu held: does our session own a node that a clean close would remove at once? */
static int mprpc__reg_owns_any(const mprpc__registry *r)
{
    const mprpc__reg_pub *p;
    for (p = r->pubs; p; p = p->next)
        if (p->owned) return 1;
    return 0;
}

/* Closes the session (our ephemeral nodes vanish at once) and frees everything. NULL is a no-op.
 * Only a connected session can be closed at once: a provider whose connection is down waits for it,
 * bounded by zookeeper_connect_timeout_ms; otherwise its nodes go when the session times out. */
static void mprpc__registry_close(mprpc__registry *r)
{
    uint64_t deadline;
    if (!r) return;
    pthread_mutex_lock(&r->mu);
    if (mprpc__reg_owns_any(r) && r->state != ZOO_CONNECTED_STATE && !r->expired) {
        MPRPC_LOG_INFO("registry: waiting up to %d ms for ZooKeeper to deregister", r->connect_timeout_ms);
        deadline = mprpc__now_ms() + (uint64_t)r->connect_timeout_ms;
        while (r->state != ZOO_CONNECTED_STATE && !r->expired && mprpc__now_ms() < deadline)
            mprpc__reg_wait_until(&r->cv, &r->mu, deadline);
    }
    r->closing = 1;
    if (r->current) { /* the worker's request in flight: stop waiting for it */
        pthread_mutex_lock(&r->current->mu);
        r->current->aborted = 1;
        pthread_cond_signal(&r->current->cv);
        pthread_mutex_unlock(&r->current->mu);
    }
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    if (r->worker_started) pthread_join(r->worker, NULL);
    if (r->zh) {
        int rc = zookeeper_close(r->zh);
        if (rc != ZOK)
            MPRPC_LOG_WARN("registry: closing the ZooKeeper session: %s", zerror(rc));
        else
            MPRPC_LOG_INFO("registry: ZooKeeper session 0x%llx closed", (unsigned long long)r->session_id);
    }
    mprpc__registry_free(r);
}

static int mprpc__reg_valid_name(const char *s)
{
    return s && s[0] && !strchr(s, '/') && !strchr(s, '\n') && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

/* r->mu held: finds or adds the published node path and hands it (again) to the worker. NULL when out of
 * memory. */
static mprpc__reg_pub *mprpc__reg_add_pub(mprpc__registry *r, const char *path, const char *data, int exclusive)
{
    mprpc__reg_pub *p;
    char *d = mprpc__reg_strdup(data);
    if (!d) return NULL;
    for (p = r->pubs; p && strcmp(p->path, path) != 0; p = p->next) {}
    if (!p && (p = (mprpc__reg_pub *)MPRPC_MALLOC(sizeof *p)) != NULL) {
        memset(p, 0, sizeof *p);
        p->path = mprpc__reg_strdup(path);
        if (!p->path) {
            MPRPC_FREE(p);
            p = NULL;
        } else {
            p->next = r->pubs;
            r->pubs = p;
        }
    }
    if (!p) {
        MPRPC_FREE(d);
        return NULL;
    }
    MPRPC_FREE(p->data);
    p->data = d;
    p->datalen = (int)strlen(d);
    p->exclusive = exclusive;
    p->dirty = 1;
    p->result = MPRPC_AGAIN;
    p->error[0] = '\0';
    pthread_cond_broadcast(&r->cv);
    return p;
}

/* r->mu held: waits until the worker settled p, the session cannot be had, or the deadline. */
static mprpc_status mprpc__reg_await_pub(mprpc__registry *r, mprpc__reg_pub *p, uint64_t deadline)
{
    while (p->result == MPRPC_AGAIN && !r->closing && !(r->session_error[0] && !r->zh) && !r->auth_failed &&
           mprpc__now_ms() < deadline)
        mprpc__reg_wait_until(&r->cv, &r->mu, deadline);
    if (p->result != MPRPC_AGAIN) return p->result;
    if (r->closing) return MPRPC_ERR_SHUTDOWN;
    if (r->session_error[0] && (!r->zh || r->auth_failed)) return MPRPC_ERR_ZOOKEEPER;
    return MPRPC_ERR_TIMEOUT;
}

/* Hands one node to the worker and waits for it, bounded by deadline. A node that could not be
 * registered in time stays with the worker, which keeps trying; a refusal is final. */
static mprpc_status mprpc__reg_publish_one(mprpc__registry *r, const char *path, const char *data,
                                           int exclusive, uint64_t deadline, char *err, size_t errlen)
{
    mprpc__reg_pub *p;
    mprpc_status st;
    pthread_mutex_lock(&r->mu);
    p = mprpc__reg_add_pub(r, path, data, exclusive);
    st = p ? mprpc__reg_await_pub(r, p, deadline) : MPRPC_ERR_NO_MEMORY;
    if (st == MPRPC_ERR_NO_MEMORY)
        mprpc__fmt(err, errlen, "registry: out of memory publishing %s", path);
    else if (st == MPRPC_ERR_TIMEOUT)
        mprpc__fmt(err, errlen, "registering %s: ZooKeeper at %s not reachable within %d ms (session %s)", path,
                   r->hosts, r->connect_timeout_ms, mprpc__reg_state_name(r->state));
    else if (st == MPRPC_ERR_ZOOKEEPER && p->result == MPRPC_AGAIN)
        mprpc__fmt(err, errlen, "registering %s: %s", path, r->session_error);
    else if (st == MPRPC_ERR_SHUTDOWN)
        mprpc__fmt(err, errlen, "registering %s: the registry is closing", path);
    else if (st != MPRPC_OK)
        mprpc__fmt(err, errlen, "%s", p->error);
    pthread_mutex_unlock(&r->mu);
    return st;
}

/* "addr\nMethod1\nMethod2...": the data of our node in the default layout; NULL when out of memory. */
static char *mprpc__reg_node_data(const char *addr, const char *const *methods, size_t method_count)
{
    size_t i, len = strlen(addr) + 1, at;
    char *data;
    for (i = 0; i < method_count; i++) len += strlen(methods[i]) + 1;
    data = (char *)MPRPC_MALLOC(len);
    if (!data) return NULL;
    at = strlen(addr);
    memcpy(data, addr, at);
    for (i = 0; i < method_count; i++) {
        size_t m = strlen(methods[i]);
        data[at++] = '\n';
        memcpy(data + at, methods[i], m);
        at += m;
    }
    data[at] = '\0';
    return data;
}

static mprpc_status mprpc__reg_publish_check(const mprpc__registry *r, const char *service, const char *addr,
                                             const char *const *methods, size_t method_count, char *err,
                                             size_t errlen)
{
    size_t i;
    if (!r || !mprpc__reg_valid_name(service) || !mprpc__reg_valid_name(addr) ||
        strlen(addr) >= MPRPC_ADDR_MAX || (method_count && !methods)) {
        mprpc__fmt(err, errlen, "registry publish: invalid service \"%s\" or address \"%s\"",
                   service ? service : "(null)", addr ? addr : "(null)");
        return MPRPC_ERR_INVALID_ARGUMENT;
    }
    for (i = 0; i < method_count; i++) {
        if (!mprpc__reg_valid_name(methods[i])) {
            mprpc__fmt(err, errlen, "registry publish: invalid method name in service %s", service);
            return MPRPC_ERR_INVALID_ARGUMENT;
        }
    }
    return MPRPC_OK;
}

/* Says once, at the first registration, what a config written for the seed (seed_spellings) gets. */
static void mprpc__reg_say_seed(mprpc__registry *r)
{
    int note;
    pthread_mutex_lock(&r->mu);
    note = r->seed_note;
    r->seed_note = 0;
    pthread_mutex_unlock(&r->mu);
    if (note == 1)
        MPRPC_LOG_INFO("registry: the config uses the seed's key spellings (zookeeperip, rpcserverip...): also "
                       "publishing the seed's /<Service>/<Method> nodes, so seed C++ callers find this provider "
                       "(zookeeper_seed_layout = auto; 0 turns this off)");
    else if (note == 2)
        MPRPC_LOG_WARN("registry: registered under %s/<Service> only, as zookeeper_seed_layout = 0 says, but the "
                       "config uses the seed's key spellings: seed C++ callers look up /<Service>/<Method> and "
                       "will not find this provider (remove the key or set it to 1 to serve them too)", r->root);
}

/* Provider side: <root>/<service>/<addr> (ephemeral, data = addr then the methods, one a line; persistent
 * parents created as needed), and with the seed layout (mprpc__seed_publish) also /<service>/<method>
 * (ephemeral, data "ip:port") for every method, exactly as the seed C++ framework; a seed node another instance owns is
 * watched and taken over when it goes. Remembered: re-created on every new session. Bounded: all nodes
 * together by zookeeper_connect_timeout_ms. */
static mprpc_status mprpc__registry_publish(mprpc__registry *r, const char *service, const char *addr,
                                            const char *const *methods, size_t method_count, char *err,
                                            size_t errlen)
{
    char path[512];
    char *data;
    size_t i;
    mprpc_status st = mprpc__reg_publish_check(r, service, addr, methods, method_count, err, errlen);
    uint64_t deadline;
    if (st != MPRPC_OK) return st;
    if ((size_t)snprintf(path, sizeof path, "%s/%s/%s", r->root, service, addr) >= sizeof path) {
        mprpc__fmt(err, errlen, "registry publish: path for %s too long", service);
        return MPRPC_ERR_INVALID_ARGUMENT;
    }
    data = mprpc__reg_node_data(addr, methods, method_count);
    if (!data) {
        mprpc__fmt(err, errlen, "registry: out of memory");
        return MPRPC_ERR_NO_MEMORY;
    }
    deadline = mprpc__now_ms() + (uint64_t)r->connect_timeout_ms;
    st = mprpc__reg_publish_one(r, path, data, 1, deadline, err, errlen);
    MPRPC_FREE(data);
    if (st == MPRPC_OK) mprpc__reg_say_seed(r);
    for (i = 0; st == MPRPC_OK && r->seed_publish && i < method_count; i++) {
        if ((size_t)snprintf(path, sizeof path, "/%s/%s", service, methods[i]) >= sizeof path) {
            mprpc__fmt(err, errlen, "registry publish: path for %s/%s too long", service, methods[i]);
            return MPRPC_ERR_INVALID_ARGUMENT;
        }
        st = mprpc__reg_publish_one(r, path, addr, 0, deadline, err, errlen);
    }
    return st;
}

/* r->mu held: finds or adds the cache entry for path; NULL when out of memory. */
static mprpc__reg_watch *mprpc__reg_find_watch(mprpc__registry *r, const char *path, const char *name,
                                               int is_data)
{
    mprpc__reg_watch *w;
    for (w = r->watches; w; w = w->next)
        if (strcmp(w->path, path) == 0) return w;
    w = (mprpc__reg_watch *)MPRPC_MALLOC(sizeof *w);
    if (!w) return NULL;
    memset(w, 0, sizeof *w);
    w->path = mprpc__reg_strdup(path);
    w->name = mprpc__reg_strdup(name);
    if (!w->path || !w->name) {
        MPRPC_FREE(w->path);
        MPRPC_FREE(w->name);
        MPRPC_FREE(w);
        return NULL;
    }
    w->is_data = is_data;
    w->dirty = 1; /* the worker reads it first */
    w->next = r->watches;
    r->watches = w;
    r->entries++;
    r->caller_fetches++;
    pthread_cond_broadcast(&r->cv);
    return w;
}

/* r->mu held: waits until w has been read, cannot be, or the deadline. Fills err on failure. */
static mprpc_status mprpc__reg_await_watch(mprpc__registry *r, mprpc__reg_watch *w, uint64_t start,
                                           uint64_t deadline, char *err, size_t errlen)
{
    while (!w->fetched && !w->error[0] && !r->closing && !(r->session_error[0] && (!r->zh || r->auth_failed)) &&
           mprpc__now_ms() < deadline)
        mprpc__reg_wait_until(&r->cv, &r->mu, deadline);
    if (w->fetched) return MPRPC_OK;
    if (r->closing) {
        mprpc__fmt(err, errlen, "cannot look up service %s: the registry is closing", w->name);
        return MPRPC_ERR_SHUTDOWN;
    }
    if (w->error[0] || r->session_error[0]) {
        mprpc__fmt(err, errlen, "cannot look up service %s: %s", w->name, w->error[0] ? w->error : r->session_error);
        return MPRPC_ERR_ZOOKEEPER;
    }
    mprpc__fmt(err, errlen, "cannot look up service %s: no answer from ZooKeeper at %s within %llu ms (session %s)",
               w->name, r->hosts, (unsigned long long)(mprpc__now_ms() - start), mprpc__reg_state_name(r->state));
    return MPRPC_ERR_TIMEOUT;
}

/* Consumer side: the providers of service (or, in the seed layout, of service/method). The first call for
 * a path asks the worker to read it (arming a watch) and waits, until the earlier of deadline_ms and
 * zookeeper_connect_timeout_ms from now; later calls read the cache, which watches keep current (also
 * across reconnects and session expiry). Copies into *out only when *gen differs from the cache's.
 * Empty list -> MPRPC_ERR_UNAVAILABLE naming the service. Thread-safe. */
static mprpc_status mprpc__registry_resolve(mprpc__registry *r, const char *service, const char *method,
                                            uint64_t deadline_ms, uint64_t *gen, mprpc__addrs *out,
                                            char *err, size_t errlen)
{
    char path[512], name[256];
    mprpc__reg_watch *w;
    uint64_t start = mprpc__now_ms(), deadline;
    mprpc_status st;
    size_t n = 0;
    if (!r || !mprpc__reg_valid_name(service) || !gen || !out ||
        (r->seed_layout && !mprpc__reg_valid_name(method))) {
        mprpc__fmt(err, errlen, "registry resolve: invalid arguments (service \"%s\"%s)",
                   service ? service : "(null)", r && r->seed_layout && !method ? ", the seed layout needs the method" : "");
        return MPRPC_ERR_INVALID_ARGUMENT;
    }
    if (r->seed_layout) {
        snprintf(path, sizeof path, "/%s/%s", service, method);
        snprintf(name, sizeof name, "%s/%s", service, method);
    } else {
        snprintf(path, sizeof path, "%s/%s", r->root, service);
        snprintf(name, sizeof name, "%s", service);
    }
    deadline = start + (uint64_t)r->connect_timeout_ms;
    if (deadline_ms < deadline) deadline = deadline_ms;
    pthread_mutex_lock(&r->mu);
    w = mprpc__reg_find_watch(r, path, name, r->seed_layout);
    if (!w) mprpc__fmt(err, errlen, "registry: out of memory resolving %s", name);
    if (w) {
        w->used_at = start;
        w->waiters++; /* not evicted while we wait on it */
        st = mprpc__reg_await_watch(r, w, start, deadline, err, errlen);
        w->waiters--;
    } else {
        st = MPRPC_ERR_NO_MEMORY;
    }
    if (st == MPRPC_OK && w->gen != *gen && !mprpc__addrs_set(out, w->addrs, w->count)) {
        mprpc__fmt(err, errlen, "registry: out of memory copying %zu providers of %s", w->count, name);
        st = MPRPC_ERR_NO_MEMORY;
    } else if (st == MPRPC_OK) {
        *gen = w->gen;
        n = w->count;
    }
    pthread_mutex_unlock(&r->mu);
    if (st == MPRPC_OK && n == 0) {
        mprpc__fmt(err, errlen, "no provider of service %s is registered in ZooKeeper at %s", name, r->hosts);
        st = MPRPC_ERR_UNAVAILABLE;
    }
    return st;
}

#endif /* MPRPC_NO_ZOOKEEPER */

#ifdef __cplusplus
}
#endif
#endif /* MPRPC_IMPLEMENTATION_DONE */
#endif /* MPRPC_IMPLEMENTATION */
