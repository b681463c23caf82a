/* The callbacks both sides of the bigfile example share: a bytes field read
 * into memory from an allocator, and a repeated Chunk (a submessage with a
 * callback bytes field) read into and written from a linked list. The provider
 * allocates from the call's arena (mprpc_call_alloc: freed after the reply is
 * encoded), the caller with malloc. */
#ifndef BIGFILE_COMMON_H
#define BIGFILE_COMMON_H
#include "bigfile.mprpc.h"

typedef void *(*bigfile_alloc_fn)(void *ctx, size_t n);

/* Where a callback bytes field goes: alloc(ctx, size) gives the storage. */
typedef struct bigfile_bytes_in {
    bigfile_alloc_fn alloc;
    void            *ctx;
    mprpc_bytes      got;
} bigfile_bytes_in;

typedef struct bigfile_chunk {
    struct bigfile_chunk *next;
    uint32_t              index;
    mprpc_bytes           data;
} bigfile_chunk;

typedef struct bigfile_chunk_list {
    bigfile_alloc_fn alloc;
    void            *ctx;
    bigfile_chunk   *head, *tail;
    size_t           count;
} bigfile_chunk_list;

/* Decode callback of a bytes field: copies it into alloc'd memory. */
static bool bigfile_read_bytes(pb_istream_t *stream, const pb_field_t *field, void **arg)
{
    bigfile_bytes_in *in = (bigfile_bytes_in *)*arg;
    size_t n = stream->bytes_left;
    uint8_t *p = n ? (uint8_t *)in->alloc(in->ctx, n) : NULL;
    (void)field;
    if (n && !p) PB_RETURN_ERROR(stream, "no memory for a bytes field");
    in->got.data = p;
    in->got.size = n;
    return pb_read(stream, p, n);
}

/* Decode callback of `repeated Chunk`: nanopb calls it once per element. */
static bool bigfile_read_chunk(pb_istream_t *stream, const pb_field_t *field, void **arg)
{
    bigfile_chunk_list *list = (bigfile_chunk_list *)*arg;
    bigfile_Chunk msg = bigfile_Chunk_init_zero;
    bigfile_bytes_in data;
    bigfile_chunk *c = (bigfile_chunk *)list->alloc(list->ctx, sizeof *c);
    (void)field;
    if (!c) PB_RETURN_ERROR(stream, "no memory for a chunk");
    memset(&data, 0, sizeof data);
    data.alloc = list->alloc;
    data.ctx = list->ctx;
    msg.data.funcs.decode = bigfile_read_bytes;   /* set before the element is decoded */
    msg.data.arg = &data;
    if (!pb_decode(stream, bigfile_Chunk_fields, &msg)) return false;
    c->next = NULL;
    c->index = msg.index;
    c->data = data.got;
    if (list->tail) list->tail->next = c; else list->head = c;
    list->tail = c;
    list->count++;
    return true;
}

/* Encode callback of `repeated Chunk`: one tag + submessage per element. nanopb
 * runs it twice (sizing, then writing), so it only reads the list. */
static bool bigfile_write_chunks(pb_ostream_t *stream, const pb_field_t *field, void *const *arg)
{
    const bigfile_chunk_list *list = (const bigfile_chunk_list *)*arg;
    const bigfile_chunk *c;
    for (c = list->head; c; c = c->next) {
        bigfile_Chunk msg = bigfile_Chunk_init_zero;
        msg.index = c->index;
        msg.data.funcs.encode = mprpc_bytes_encode;
        msg.data.arg = (void *)&c->data;
        if (!pb_encode_tag_for_field(stream, field) || !pb_encode_submessage(stream, bigfile_Chunk_fields, &msg))
            return false;
    }
    return true;
}
#endif
