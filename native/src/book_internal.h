/* book_internal.h - the books' records and the lookups both book.c and book_check.c use.
 * Not part of the API (tickwire.h is). See book.c for how the structures fit together.
 */
#ifndef TICKWIRE_BOOK_INTERNAL_H
#define TICKWIRE_BOOK_INTERNAL_H

#include <stdint.h>

#include "stream.h"
#include "tickwire.h"

#define NIL 0u                       /* index 0 of every pool is unused: 0 means "none" */
#define SIDE_BID 0
#define SIDE_ASK 1
#define EVENTS_PER_MESSAGE 16        /* the most one message causes: a replace with both tops */
#define TREAP_STACK 256

struct order {
    uint64_t ref;
    uint32_t shares;
    uint32_t level;                  /* its price level (pool index) */
    uint32_t prev, next;             /* its level's queue (full book); next: free list too */
    uint32_t inst;                   /* instrument index */
    uint8_t side;                    /* SIDE_* */
    uint8_t pad[3];
};

struct level {
    uint32_t key;                    /* bids ~price, asks price: the best is the smallest */
    uint32_t prio;                   /* treap heap priority (random) */
    uint32_t left, right;            /* left: next free level while free */
    uint32_t orders;
    uint32_t head, tail;             /* order queue, oldest first (full book) */
    uint32_t pad;
    uint64_t shares;
};

struct hash_slot {
    uint64_t ref;                    /* 0: empty (ITCH never adds order reference 0) */
    uint32_t order;
    uint32_t pad;
};

struct instrument {
    uint32_t root[2];
    uint32_t best[2];
    uint32_t n_levels[2];
    uint32_t shown[2];               /* levels in the snapshot entry per side */
    uint32_t worst_shown[2];         /* key of the last of them (valid when shown == depth) */
    uint32_t snap;                   /* snapshot entry, UINT32_MAX: none */
    uint32_t top_price[2];           /* best bid/offer as last published (TWC_EV_TOP) */
    uint64_t top_shares[2];
    uint64_t orders_live;
    uint64_t messages;
    uint64_t exchange_ns;
    uint64_t last_trade_shares;
    uint32_t last_trade_price;
    uint16_t locate;
    uint8_t incomplete;
    uint8_t trading_state;
    uint8_t dirty[2];                /* the top `depth` of a side changed in this message */
    uint8_t named;                   /* a stock directory message named it */
    char symbol[8];
};

struct tw_books {
    struct tw_books_config cfg;
    struct tw_book_stats stats;
    struct order *orders;
    uint32_t free_order;             /* free list of orders released since the last reset */
    uint32_t orders_used;            /* orders [1, orders_used] were handed out since then */
    struct level *levels;
    uint32_t free_level;
    uint32_t levels_used;
    struct hash_slot *hash;
    uint64_t hash_mask;
    uint32_t hash_bits;              /* log2 of the table's slots */
    struct instrument *inst;
    uint32_t n_inst;
    uint32_t *by_locate;             /* locate -> instrument index + 1, 0: none */
    int all_incomplete;              /* a loss since the last start of messages: new books too */
    uint32_t rng;
    /* the message being applied */
    uint64_t receive_ns;
    uint64_t exchange_ns;
    uint32_t n_pending;
    struct twc_event pending[EVENTS_PER_MESSAGE];
    uint32_t touched[4];             /* instruments whose snapshot may need rewriting */
    uint32_t n_touched;
    int streaming;
    struct tw_stream stream;
};

/* ---- lookups ---------------------------------------------------------------------------------- */

static inline uint32_t price_of(uint32_t side, uint32_t key)
{
    return side == SIDE_BID ? ~key : key;
}

/* ITCH order references rise one by one through the day, and an order is mostly touched soon
 * after it was added: keeping neighbouring references in neighbouring slots makes the live part of
 * the table a small, cache- and TLB-friendly window (a multiplicative hash scattered them over the
 * whole table: a cache and TLB miss per lookup, measured 3x slower). The high bits folded in
 * spread references a table's size apart, so a stride in the references cannot line them up. */
static inline uint64_t hash_of(const struct tw_books *b, uint64_t ref)
{
    return (ref ^ (ref >> b->hash_bits) ^ (ref >> (2 * b->hash_bits))) & b->hash_mask;
}

/* The slot holding ref, or NULL. */
static inline struct hash_slot *hash_find(struct tw_books *b, uint64_t ref)
{
    if (ref == 0)
        return NULL; /* 0 marks the empty slots: it is never an order */
    for (uint64_t i = hash_of(b, ref);; i = (i + 1) & b->hash_mask) {
        struct hash_slot *s = &b->hash[i];
        if (s->ref == ref)
            return s;
        if (s->ref == 0)
            return NULL;
    }
}

/* The best level of a side's tree (its leftmost node). */
static inline uint32_t treap_leftmost(const struct level *L, uint32_t t)
{
    if (t == NIL)
        return NIL;
    while (L[t].left != NIL)
        t = L[t].left;
    return t;
}

/* The first `max` levels of a tree in key order (best first) into out; returns how many. */
static inline uint32_t treap_top(const struct level *L, uint32_t t, uint32_t *out, uint32_t max)
{
    uint32_t stack[TREAP_STACK], depth = 0, n = 0;
    while ((t != NIL || depth > 0) && n < max) {
        while (t != NIL && depth < TREAP_STACK) {
            stack[depth++] = t;
            t = L[t].left;
        }
        t = stack[--depth];
        out[n++] = t;
        t = L[t].right;
    }
    return n;
}

#endif
