/* hist.c - the log-linear latency histogram (layout in tickwire.h).
 *
 * Values below 64 ns get one bucket each; from 64 ns on, each power of two [2^e, 2^(e+1)) is cut
 * into 32 equal buckets, so a bucket is at most 1/32 (about 3%) of its values wide. The 1024
 * buckets end at 2^36 ns (68.7 s); the last bucket also takes everything above, so its high bound
 * is UINT64_MAX and "low <= v <= high" holds for every value.
 */
#include "tickwire.h"

#define LINEAR_LIMIT 64u   /* values below this have a bucket each */
#define SUB_BUCKETS 32u    /* buckets per power of two above it */
#define LINEAR_LOG2 6u     /* log2(LINEAR_LIMIT) */
#define SUB_LOG2 5u        /* log2(SUB_BUCKETS) */
#define LAST_BUCKET (TW_HIST_BUCKETS - 1u)

uint32_t tw_hist_index(uint64_t v)
{
    if (v < LINEAR_LIMIT)
        return (uint32_t)v;
    uint32_t e = 63u - (uint32_t)__builtin_clzll(v); /* v in [2^e, 2^(e+1)), e >= 6 */
    uint64_t index = LINEAR_LIMIT + (uint64_t)(e - LINEAR_LOG2) * SUB_BUCKETS
                     + ((v >> (e - SUB_LOG2)) & (SUB_BUCKETS - 1u));
    return index > LAST_BUCKET ? LAST_BUCKET : (uint32_t)index;
}

uint64_t tw_hist_bucket_low(uint32_t index)
{
    if (index > LAST_BUCKET)
        index = LAST_BUCKET;
    if (index < LINEAR_LIMIT)
        return index;
    uint32_t e = LINEAR_LOG2 + (index - LINEAR_LIMIT) / SUB_BUCKETS;
    uint64_t sub = (index - LINEAR_LIMIT) % SUB_BUCKETS;
    return (SUB_BUCKETS + sub) << (e - SUB_LOG2);
}

uint64_t tw_hist_bucket_high(uint32_t index)
{
    if (index >= LAST_BUCKET)
        return UINT64_MAX; /* the overflow bucket: everything from its low bound up */
    return tw_hist_bucket_low(index + 1u) - 1u;
}

void tw_hist_record(struct tw_hist *h, uint64_t v)
{
    if (h->count == 0 || v < h->min)
        h->min = v;
    if (v > h->max)
        h->max = v;
    h->count++;
    h->sum += v;
    h->buckets[tw_hist_index(v)]++;
}
