/* The large-message example, caller side: sends 300 000 content bytes and
 * chunks of 70 000, 1 and 0 bytes, and checks that every byte comes back
 * reversed. The reply's callback fields are read into malloc'd memory.
 *   ./bigfile_caller -i caller.conf          (exit status 0 only if all came back) */
#define MPRPC_IMPLEMENTATION
#include "mprpc.h"
#include "bigfile_common.h"

#include <stdio.h>
#include <stdlib.h>

/* Everything the reply's callbacks malloc, freed at the end. */
typedef struct owned { struct owned *next; } owned;
static owned *allocated;

static void *heap_alloc(void *ctx, size_t n)
{
    owned *o = (owned *)malloc(sizeof *o + n);
    (void)ctx;
    if (!o) return NULL;
    o->next = allocated;
    allocated = o;
    return o + 1;
}

static void free_all(void)
{
    while (allocated) {
        owned *o = allocated;
        allocated = o->next;
        free(o);
    }
}

static uint8_t pattern(size_t i, uint32_t seed)
{
    return (uint8_t)((i * 131u + seed * 7u) >> 3);
}

static uint8_t *make(size_t n, uint32_t seed)
{
    uint8_t *p = (uint8_t *)heap_alloc(NULL, n ? n : 1);
    size_t i;
    for (i = 0; i < n; i++) p[i] = pattern(i, seed);
    return p;
}

static int is_reversed(const mprpc_bytes *got, size_t n, uint32_t seed)
{
    size_t i;
    if (got->size != n) return 0;
    for (i = 0; i < n; i++) if (got->data[i] != pattern(n - 1 - i, seed)) return 0;
    return 1;
}

static const size_t content_size = 300000;
static const size_t chunk_sizes[] = { 70000, 1, 0 };
#define NCHUNKS (sizeof chunk_sizes / sizeof chunk_sizes[0])

/* The request: content and chunks from the list, through encode callbacks. */
static void fill_request(bigfile_StoreRequest *rq, mprpc_bytes *content, bigfile_chunk *chunks,
                         bigfile_chunk_list *list)
{
    size_t i;
    strcpy(rq->name, "example.bin");
    content->data = make(content_size, 0);
    content->size = content_size;
    rq->content.funcs.encode = mprpc_bytes_encode;
    rq->content.arg = content;
    memset(list, 0, sizeof *list);
    for (i = 0; i < NCHUNKS; i++) {
        chunks[i].index = (uint32_t)i;
        chunks[i].data.data = make(chunk_sizes[i], (uint32_t)i + 1);
        chunks[i].data.size = chunk_sizes[i];
        chunks[i].next = i + 1 < NCHUNKS ? &chunks[i + 1] : NULL;
    }
    list->head = chunks;
    rq->chunks.funcs.encode = bigfile_write_chunks;
    rq->chunks.arg = list;
}

static int check_reply(const bigfile_chunk_list *got, const bigfile_bytes_in *content, uint64_t total)
{
    const bigfile_chunk *c = got->head;
    size_t want_total = content_size, i;
    int ok = is_reversed(&content->got, content_size, 0);
    printf("Store: content %zu bytes %s\n", content->got.size, ok ? "reversed" : "WRONG");
    for (i = NCHUNKS; i-- > 0; c = c ? c->next : NULL) {      /* chunks come back in reverse order */
        int good = c && c->index == i && is_reversed(&c->data, chunk_sizes[i], (uint32_t)i + 1);
        printf("Store: chunk %zu: %zu bytes %s\n", i, c ? c->data.size : 0, good ? "reversed" : "WRONG");
        ok &= good;
        want_total += chunk_sizes[i];
    }
    printf("Store: total %llu bytes\n", (unsigned long long)total);
    return ok && c == NULL && got->count == NCHUNKS && total == want_total;
}

int main(int argc, char **argv)
{
    mprpc_config cfg;
    mprpc_channel *ch;
    mprpc_controller ctl;
    bigfile_StoreRequest rq = bigfile_StoreRequest_init_zero;
    bigfile_StoreResponse rs = bigfile_StoreResponse_init_zero;
    mprpc_bytes content;
    bigfile_chunk chunks[NCHUNKS];
    bigfile_chunk_list out_list, in_list;
    bigfile_bytes_in in_content;
    int ok = 0;
    mprpc_config_init(&cfg);
    if (mprpc_config_from_args(&cfg, argc, argv) != MPRPC_OK) {
        fprintf(stderr, "%s\n", cfg.error);
        return 2;
    }
    if (mprpc_channel_new(&ch, &cfg) != MPRPC_OK) return 1;
    mprpc_controller_init(&ctl);
    fill_request(&rq, &content, chunks, &out_list);
    memset(&in_content, 0, sizeof in_content);
    memset(&in_list, 0, sizeof in_list);
    in_content.alloc = in_list.alloc = heap_alloc;
    rs.content.funcs.decode = bigfile_read_bytes;     /* set before the call: decoded on arrival */
    rs.content.arg = &in_content;
    rs.chunks.funcs.decode = bigfile_read_chunk;
    rs.chunks.arg = &in_list;
    if (bigfile_FileService_Store(ch, &rq, &rs, &ctl) != MPRPC_OK)
        printf("Store failed: %s (%s)\n", mprpc_controller_error_text(&ctl), mprpc_status_name(ctl.status));
    else
        ok = check_reply(&in_list, &in_content, rs.total);
    mprpc_channel_free(ch);
    free_all();
    return ok ? 0 : 1;
}
