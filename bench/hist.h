/* hist.h - log-linear latency histogram shared by the C and C++ load
 * generators, so that both compute percentiles identically.
 *
 * Values are recorded in nanoseconds.  Layout (HDR-histogram style):
 * values below HIST_SUB (128 ns) get one bucket each; above that, every
 * power-of-two range [2^k, 2^(k+1)) is split into HIST_HALF (64) equal
 * buckets.  Relative error is therefore below 1/64 (1.6 %) everywhere and
 * the absolute error is below 16 ns up to 1 us, i.e. far better than 1 us
 * resolution at the low end.  Values above ~550 s are clamped.
 *
 * Header-only, C99/C++11 compatible; every function is static inline.
 */
#ifndef MPRPC_BENCH_HIST_H
#define MPRPC_BENCH_HIST_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define HIST_SUB_BITS 7
#define HIST_SUB (1u << HIST_SUB_BITS)           /* 128 */
#define HIST_HALF (HIST_SUB / 2u)                /* 64 */
#define HIST_MAX_SHIFT 32u                       /* values < 2^39 ns */
#define HIST_NBUCKETS (HIST_SUB + HIST_MAX_SHIFT * HIST_HALF)

typedef struct hist {
    uint64_t count;
    uint64_t min_ns;
    uint64_t max_ns;
    double sum_ns;
    uint64_t bucket[HIST_NBUCKETS];
} hist;

static inline void hist_init(hist *h)
{
    memset(h, 0, sizeof *h);
    h->min_ns = UINT64_MAX;
}

static inline unsigned hist_index(uint64_t v)
{
    unsigned msb, shift;
    if (v < HIST_SUB)
        return (unsigned)v;
    msb = 63u - (unsigned)__builtin_clzll(v);
    shift = msb - (HIST_SUB_BITS - 1u);          /* >= 1; v >> shift in [64,128) */
    if (shift > HIST_MAX_SHIFT)
        return HIST_NBUCKETS - 1u;
    return HIST_SUB + (shift - 1u) * HIST_HALF + (unsigned)((v >> shift) - HIST_HALF);
}

/* Lowest value mapping to bucket idx, and the bucket width. */
static inline uint64_t hist_bucket_low(unsigned idx, uint64_t *width)
{
    unsigned j, shift;
    if (idx < HIST_SUB) {
        *width = 1;
        return idx;
    }
    j = idx - HIST_SUB;
    shift = j / HIST_HALF + 1u;
    *width = (uint64_t)1 << shift;
    return (uint64_t)(j % HIST_HALF + HIST_HALF) << shift;
}

static inline void hist_record(hist *h, uint64_t v_ns)
{
    h->bucket[hist_index(v_ns)]++;
    h->count++;
    h->sum_ns += (double)v_ns;
    if (v_ns < h->min_ns)
        h->min_ns = v_ns;
    if (v_ns > h->max_ns)
        h->max_ns = v_ns;
}

static inline void hist_merge(hist *dst, const hist *src)
{
    unsigned i;
    for (i = 0; i < HIST_NBUCKETS; i++)
        dst->bucket[i] += src->bucket[i];
    dst->count += src->count;
    dst->sum_ns += src->sum_ns;
    if (src->min_ns < dst->min_ns)
        dst->min_ns = src->min_ns;
    if (src->max_ns > dst->max_ns)
        dst->max_ns = src->max_ns;
}

/* Value at quantile q (0 < q <= 1) in nanoseconds: the midpoint of the
 * bucket holding the ceil(q*count)-th smallest sample, clamped to the
 * observed [min, max].  Returns 0 for an empty histogram. */
static inline double hist_quantile_ns(const hist *h, double q)
{
    uint64_t rank, seen = 0, width, low;
    double v;
    unsigned i;
    if (h->count == 0)
        return 0.0;
    rank = (uint64_t)(q * (double)h->count + 0.999999999);
    if (rank < 1)
        rank = 1;
    if (rank > h->count)
        rank = h->count;
    for (i = 0; i < HIST_NBUCKETS; i++) {
        seen += h->bucket[i];
        if (seen >= rank)
            break;
    }
    if (i == HIST_NBUCKETS)
        i = HIST_NBUCKETS - 1u;
    low = hist_bucket_low(i, &width);
    v = (double)low + (double)(width - 1u) / 2.0;
    if (v < (double)h->min_ns)
        v = (double)h->min_ns;
    if (v > (double)h->max_ns)
        v = (double)h->max_ns;
    return v;
}

static inline double hist_mean_ns(const hist *h)
{
    return h->count ? h->sum_ns / (double)h->count : 0.0;
}

#endif /* MPRPC_BENCH_HIST_H */
