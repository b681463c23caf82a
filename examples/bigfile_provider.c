/* The large-message example, provider side: FileService.Store takes a request
 * with a bytes field over 64 KiB and a repeated Chunk whose data is a callback
 * field, and answers both reversed. Every byte it keeps lives in the call's
 * arena (mprpc_call_alloc), freed by mprpc.h after the reply has been encoded.
 *   ./bigfile_provider -i provider.conf      (stops on SIGINT/SIGTERM) */
#define MPRPC_IMPLEMENTATION
#include "mprpc.h"
#include "bigfile_common.h"

#include <signal.h>
#include <stdio.h>

static void *arena_alloc(void *call, size_t n)
{
    return mprpc_call_alloc((mprpc_call *)call, n);
}

/* What prepare sets up for the handler, itself in the arena. */
typedef struct store_in {
    bigfile_bytes_in   content;
    bigfile_chunk_list chunks;
} store_in;

/* Runs before the request is decoded: point the callback fields at the arena. */
static void store_prepare(mprpc_call *call, bigfile_StoreRequest *rq, bigfile_StoreResponse *rs, void *user)
{
    store_in *in = (store_in *)mprpc_call_alloc(call, sizeof *in);
    (void)rs; (void)user;
    if (!in) return;   /* callbacks unset: the fields are skipped; the handler sees NULL args */
    memset(in, 0, sizeof *in);
    in->content.alloc = in->chunks.alloc = arena_alloc;
    in->content.ctx = in->chunks.ctx = call;
    rq->content.funcs.decode = bigfile_read_bytes;
    rq->content.arg = &in->content;
    rq->chunks.funcs.decode = bigfile_read_chunk;
    rq->chunks.arg = &in->chunks;
}

/* A reversed copy of b in the arena (NULL only when the arena refuses). */
static int reversed(mprpc_call *call, const mprpc_bytes *b, mprpc_bytes *out)
{
    uint8_t *p = b->size ? (uint8_t *)mprpc_call_alloc(call, b->size) : NULL;
    size_t i;
    if (b->size && !p) return 0;
    for (i = 0; i < b->size; i++) p[i] = b->data[b->size - 1 - i];
    out->data = p;
    out->size = b->size;
    return 1;
}

static void store(mprpc_call *call, const bigfile_StoreRequest *rq, bigfile_StoreResponse *rs, void *user)
{
    const store_in *in = (const store_in *)rq->content.arg;
    mprpc_bytes *content = (mprpc_bytes *)mprpc_call_alloc(call, sizeof *content);
    bigfile_chunk_list *out = (bigfile_chunk_list *)mprpc_call_alloc(call, sizeof *out);
    const bigfile_chunk *c;
    (void)user;
    if (!in || !content || !out || !reversed(call, &in->content.got, content)) {
        mprpc_call_fail(call, "call_arena_max too small for %zu content bytes", in ? in->content.got.size : 0);
        return;
    }
    memset(out, 0, sizeof *out);
    rs->total = content->size;
    for (c = in->chunks.head; c; c = c->next) {           /* prepend: reverse order */
        bigfile_chunk *r = (bigfile_chunk *)mprpc_call_alloc(call, sizeof *r);
        if (!r || !reversed(call, &c->data, &r->data)) {
            mprpc_call_fail(call, "call_arena_max too small for chunk %u", (unsigned)c->index);
            return;
        }
        r->index = c->index;
        r->next = out->head;
        out->head = r;
        rs->total += r->data.size;
    }
    MPRPC_LOG_INFO("Store name=%s content=%zu bytes, %zu chunks, arena %zu bytes", rq->name,
                   content->size, in->chunks.count, mprpc_call_arena_used(call));
    rs->content.funcs.encode = mprpc_bytes_encode;        /* encoded after store() returns */
    rs->content.arg = content;
    rs->chunks.funcs.encode = bigfile_write_chunks;
    rs->chunks.arg = out;
}

static const bigfile_FileService_handlers handlers = { .Store = store, .Store_prepare = store_prepare };
static bigfile_FileService_service service;
static mprpc_server *server;

static void on_signal(int sig)
{
    (void)sig;
    mprpc_server_stop(server);
}

int main(int argc, char **argv)
{
    mprpc_config cfg;
    mprpc_status st;
    mprpc_config_init(&cfg);
    if (mprpc_config_from_args(&cfg, argc, argv) != MPRPC_OK) {
        fprintf(stderr, "%s\n", cfg.error);
        return 2;
    }
    if (mprpc_logger_start(&cfg) != MPRPC_OK) {
        fprintf(stderr, "logger: %s\n", cfg.error);
        return 1;
    }
    bigfile_FileService_service_init(&service, &handlers, NULL);
    if (mprpc_server_new(&server, &cfg) != MPRPC_OK || mprpc_server_add_service(server, &service.service) != MPRPC_OK ||
        mprpc_server_start(server) != MPRPC_OK) {
        fprintf(stderr, "bigfile_provider: %s\n", server ? mprpc_server_error(server) : "cannot create the server");
        mprpc_server_free(server);
        mprpc_logger_stop();
        return 1;
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    printf("provider listening on %s:%d\n", cfg.rpcserver_ip, mprpc_server_port(server));
    fflush(stdout);
    st = mprpc_server_run(server);
    mprpc_server_free(server);
    mprpc_logger_stop();
    printf("provider stopped\n");
    return st == MPRPC_OK ? 0 : 1;
}
