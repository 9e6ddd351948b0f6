/* stream.h - the writer's side of the book stream (the reader's is include/tickwire/consumer.h,
 * whose layouts both sides share).
 *
 * One writer only: the engine's poll thread. Every function here is wait-free: it never looks at
 * what readers do (it could not: they map the files read-only and keep their cursors to
 * themselves). See consumer.h for the memory-ordering protocol; the comments here say which half
 * of it each store is.
 */
#ifndef TICKWIRE_STREAM_H
#define TICKWIRE_STREAM_H

#include <stddef.h>
#include <stdint.h>

#include "../include/tickwire/consumer.h"

struct tw_stream {
    struct twc_ring_header *ring;
    struct twc_event *events;
    uint64_t mask;
    uint64_t next;                 /* events written (the writer's private copy of head) */
    size_t ring_len;
    struct twc_snap_header *snap;
    char *entries;
    size_t snap_len;
    uint32_t entry_size;
    uint32_t depth;
    uint32_t capacity;
    uint32_t count;                /* snapshot entries handed out */
};

/* Create <root>/<feed>/events and /snapshot (0644, replacing older ones atomically: a reader of
 * the old files sees them ended). 0 or a negative errno with a message. */
int tw_stream_open(struct tw_stream *s, const char *root, const char *feed, uint32_t ring_events,
                   uint32_t instruments, uint32_t depth, char *err, size_t errlen);
/* Mark both files ended (readers see TWC_ENDED once they have read everything) and unmap. */
void tw_stream_close(struct tw_stream *s);

/* Write event n = s->next into its slot (the slot's seqlock: "being written", fence, payload,
 * "holds n"). Readers see it only after tw_stream_commit(). */
static inline void tw_stream_put(struct tw_stream *s, const struct twc_event *ev)
{
    uint64_t n = s->next++;
    struct twc_event *slot = &s->events[n & s->mask];
    const uint64_t *src = (const uint64_t *)ev;
    uint64_t *dst = (uint64_t *)slot;
    __atomic_store_n(&slot->seq, 2 * n + 1, __ATOMIC_RELAXED);
    /* The payload must not become visible before the "being written" mark: a reader still
     * copying the event this slot held before (n - capacity) must see the mark change. */
    __atomic_thread_fence(__ATOMIC_RELEASE);
    for (unsigned i = 1; i < sizeof(*ev) / 8; i++)
        __atomic_store_n(&dst[i], src[i], __ATOMIC_RELAXED);
    /* Release: whoever sees 2n+2 sees the payload above. */
    __atomic_store_n(&slot->seq, 2 * n + 2, __ATOMIC_RELEASE);
}

/* Publish what tw_stream_put wrote: once per ITCH message, after its last event. */
static inline void tw_stream_commit(struct tw_stream *s)
{
    __atomic_store_n(&s->ring->head, s->next, __ATOMIC_RELEASE);
}

static inline struct twc_snap_entry *tw_stream_entry(struct tw_stream *s, uint32_t index)
{
    return (struct twc_snap_entry *)(s->entries + (size_t)index * s->entry_size);
}

/* A new snapshot entry (its index), or UINT32_MAX when all are taken. */
uint32_t tw_stream_new_entry(struct tw_stream *s, uint16_t locate, const char symbol[8]);

/* Seqlock around a snapshot entry's update: odd while writing. */
static inline void tw_stream_entry_begin(struct twc_snap_entry *e)
{
    uint64_t seq = __atomic_load_n(&e->seq, __ATOMIC_RELAXED);
    __atomic_store_n(&e->seq, seq + 1, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_RELEASE); /* the odd mark before any of the new contents */
}

static inline void tw_stream_entry_end(struct twc_snap_entry *e)
{
    uint64_t seq = __atomic_load_n(&e->seq, __ATOMIC_RELAXED);
    __atomic_store_n(&e->seq, seq + 1, __ATOMIC_RELEASE); /* contents before the even mark */
}

/* Relaxed word store into shared memory (a reader may be copying it under its seqlock). */
static inline void tw_stream_store64(uint64_t *p, uint64_t v)
{
    __atomic_store_n(p, v, __ATOMIC_RELAXED);
}

#endif
