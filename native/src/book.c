/* book.c - ITCH 5.0 order books on the poll thread, published to the shared-memory stream.
 *
 * Structures (all allocated once, in tw_books_new; nothing per message):
 *   orders     a pool of max_orders records, free-listed; found by reference through an
 *              open-addressing hash (linear probing, load <= 1/2, backward-shift deletion, so
 *              no tombstones ever slow a lookup down);
 *   levels     a pool of max_orders price levels (a level exists only while an order rests on
 *              it, so it can never run out before the orders do); per instrument and side a
 *              treap keyed so that the best price is the leftmost node: bids by ~price, asks by
 *              price. The best level is cached: an add or change at the top is O(1), a new level
 *              O(log n) expected, the best level emptying O(log n) to find the next. (CppTrader
 *              keeps a red-black tree of levels per side with the best cached, the same shape; a
 *              treap gives the same expected bounds in far less code.)
 *              Full book: each level also keeps its orders in arrival order (a doubly linked
 *              queue through the order records); levels-only mode skips the queue and the
 *              per-order events;
 *   instruments by stock locate (a 65536-entry map to max_instruments records).
 *
 * A message's events are gathered in a small buffer and put into the ring together at its end,
 * the last one flagged TWC_F_END, then committed once; the instrument's snapshot entry is
 * rewritten (under its seqlock) only when its top `depth` levels changed.
 *
 * Incomplete books: a reference to an order the book never saw (the engine joined mid-day, or a
 * message was lost), an execution beyond an order's shares, a duplicate add or a refused add
 * (max_orders) marks that instrument incomplete; a loss report (tw_books_on_loss: a range given
 * up as lost, or applied out of order) marks every instrument incomplete, including those not
 * seen yet. Only a start of messages (system event 'O', the first message of a trading day)
 * rebuilds: every book is cleared and complete again. ITCH has no other way to recover a book
 * mid-day (that takes a snapshot service such as GLIMPSE).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/mman.h>

#include "book_internal.h"
#include "decode_internal.h"

#define LOCATE_MAP_BYTES (65536 * sizeof(uint32_t))

/* ---- small helpers ---------------------------------------------------------------------------- */

static inline uint32_t side_of(uint8_t itch_side)
{
    return itch_side == 'S' ? SIDE_ASK : SIDE_BID;
}

static inline uint8_t itch_side(uint32_t side)
{
    return side == SIDE_ASK ? 'S' : 'B';
}

static inline uint32_t key_of(uint32_t side, uint32_t price)
{
    return side == SIDE_BID ? ~price : price;
}

static inline uint32_t next_random(struct tw_books *b)
{
    /* xorshift32: treap priorities only need to look random to the input */
    uint32_t x = b->rng;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return b->rng = x;
}

/* ---- the order hash --------------------------------------------------------------------------- */

/* The table has twice the pool's size: there is always an empty slot. */
static inline void hash_insert(struct tw_books *b, uint64_t ref, uint32_t order)
{
    uint64_t i = hash_of(b, ref);
    while (b->hash[i].ref != 0)
        i = (i + 1) & b->hash_mask;
    b->hash[i].ref = ref;
    b->hash[i].order = order;
}

/* Backward-shift deletion: later entries of the probe run move up into the hole, so lookups
 * never need tombstones. */
static inline void hash_remove(struct tw_books *b, struct hash_slot *slot)
{
    uint64_t hole = (uint64_t)(slot - b->hash);
    for (uint64_t i = (hole + 1) & b->hash_mask;; i = (i + 1) & b->hash_mask) {
        struct hash_slot *s = &b->hash[i];
        if (s->ref == 0)
            break;
        uint64_t home = hash_of(b, s->ref);
        /* s may fill the hole if its home is not cyclically in (hole, i] */
        if (((i - home) & b->hash_mask) >= ((i - hole) & b->hash_mask)) {
            b->hash[hole] = *s;
            hole = i;
        }
    }
    b->hash[hole].ref = 0;
}

/* ---- the level treaps ------------------------------------------------------------------------- */

static uint32_t rotate_right(struct level *L, uint32_t t)
{
    uint32_t l = L[t].left;
    L[t].left = L[l].right;
    L[l].right = t;
    return l;
}

static uint32_t rotate_left(struct level *L, uint32_t t)
{
    uint32_t r = L[t].right;
    L[t].right = L[r].left;
    L[r].left = t;
    return r;
}

static uint32_t treap_insert(struct level *L, uint32_t t, uint32_t node)
{
    if (t == NIL)
        return node;
    if (L[node].key < L[t].key) {
        L[t].left = treap_insert(L, L[t].left, node);
        if (L[L[t].left].prio > L[t].prio)
            t = rotate_right(L, t);
    } else {
        L[t].right = treap_insert(L, L[t].right, node);
        if (L[L[t].right].prio > L[t].prio)
            t = rotate_left(L, t);
    }
    return t;
}

static uint32_t treap_merge(struct level *L, uint32_t a, uint32_t b)
{
    if (a == NIL)
        return b;
    if (b == NIL)
        return a;
    if (L[a].prio > L[b].prio) {
        L[a].right = treap_merge(L, L[a].right, b);
        return a;
    }
    L[b].left = treap_merge(L, a, L[b].left);
    return b;
}

static uint32_t treap_remove(struct level *L, uint32_t t, uint32_t key)
{
    if (t == NIL)
        return NIL;
    if (key < L[t].key)
        L[t].left = treap_remove(L, L[t].left, key);
    else if (key > L[t].key)
        L[t].right = treap_remove(L, L[t].right, key);
    else
        return treap_merge(L, L[t].left, L[t].right);
    return t;
}

static inline uint32_t treap_find(const struct level *L, uint32_t t, uint32_t key)
{
    while (t != NIL && L[t].key != key)
        t = key < L[t].key ? L[t].left : L[t].right;
    return t;
}


/* ---- events ----------------------------------------------------------------------------------- */

static inline struct twc_event *event(struct tw_books *b, uint8_t type, const struct instrument *in)
{
    if (!b->streaming || b->n_pending == EVENTS_PER_MESSAGE)
        return NULL;
    struct twc_event *ev = &b->pending[b->n_pending++];
    memset(ev, 0, sizeof(*ev));
    ev->type = type;
    ev->exchange_ns = b->exchange_ns;
    ev->receive_ns = b->receive_ns;
    if (in) {
        ev->locate = in->locate;
        ev->flags = in->incomplete ? TWC_F_INCOMPLETE : 0;
    }
    return ev;
}

static void status_event(struct tw_books *b, const struct instrument *in, uint16_t kind, uint8_t state)
{
    struct twc_event *ev = event(b, TWC_EV_STATUS, in);
    if (ev) {
        ev->kind = kind;
        ev->state = state;
    }
}

static void level_event(struct tw_books *b, const struct instrument *in, uint32_t side,
                        uint32_t price, const struct level *lv)
{
    struct twc_event *ev = event(b, TWC_EV_LEVEL, in);
    if (ev) {
        ev->side = itch_side(side);
        ev->price = price;
        ev->price2 = lv ? lv->orders : 0;
        ev->shares = lv ? lv->shares : 0;
    }
}

static void order_event(struct tw_books *b, const struct instrument *in, uint32_t side,
                        uint64_t ref, uint32_t price, uint32_t shares)
{
    if (b->cfg.levels_only)
        return;
    struct twc_event *ev = event(b, TWC_EV_ORDER, in);
    if (ev) {
        ev->side = itch_side(side);
        ev->ref = ref;
        ev->price = price;
        ev->shares = shares;
    }
}

static void trade_event(struct tw_books *b, struct instrument *in, uint8_t side, uint32_t price,
                        uint64_t shares, uint64_t match)
{
    in->last_trade_price = price;
    in->last_trade_shares = shares;
    struct twc_event *ev = event(b, TWC_EV_TRADE, in);
    if (ev) {
        ev->side = side;
        ev->price = price;
        ev->shares = shares;
        ev->ref = match;
    }
}

/* ---- instruments ------------------------------------------------------------------------------ */

static void touch(struct tw_books *b, uint32_t index)
{
    for (uint32_t i = 0; i < b->n_touched; i++)
        if (b->touched[i] == index)
            return;
    if (b->n_touched < 4)
        b->touched[b->n_touched++] = index;
}

static void mark_incomplete(struct tw_books *b, struct instrument *in)
{
    if (in->incomplete)
        return;
    in->incomplete = 1;
    b->stats.incomplete++;
    status_event(b, in, TWC_STATUS_INCOMPLETE, 0);
    in->dirty[0] = 1; /* the entry's flag changes */
    touch(b, (uint32_t)(in - b->inst));
}

static int symbol_wanted(const struct tw_books *b, const uint8_t *symbol)
{
    if (b->cfg.n_symbols == 0)
        return 1;
    for (uint32_t i = 0; i < b->cfg.n_symbols; i++)
        if (memcmp(b->cfg.symbols[i], symbol, 8) == 0)
            return 1;
    return 0;
}

/* The instrument of a locate: existing, or new when `create` (and the filter lets it). NULL when
 * none: counted as filtered or overflow. */
static struct instrument *instrument_for(struct tw_books *b, uint16_t locate, const uint8_t *symbol,
                                         int create)
{
    uint32_t slot = b->by_locate[locate];
    if (slot)
        return &b->inst[slot - 1];
    if (!create || (b->cfg.n_symbols && (!symbol || !symbol_wanted(b, symbol)))) {
        b->stats.filtered++;
        return NULL;
    }
    if (b->n_inst >= b->cfg.max_instruments) {
        b->stats.instrument_overflow++;
        return NULL;
    }
    struct instrument *in = &b->inst[b->n_inst];
    memset(in, 0, sizeof(*in));
    in->locate = locate;
    memset(in->symbol, ' ', 8);
    if (symbol) {
        memcpy(in->symbol, symbol, 8);
        in->named = 1;
    }
    in->snap = b->streaming ? tw_stream_new_entry(&b->stream, locate, in->symbol) : UINT32_MAX;
    b->by_locate[locate] = ++b->n_inst;
    b->stats.instruments = b->n_inst;
    if (b->all_incomplete)
        mark_incomplete(b, in);
    return in;
}

/* ---- snapshot --------------------------------------------------------------------------------- */

/* A change at `key` on `side` shows in the snapshot if it is within the top `depth`. */
static inline void note_change(struct tw_books *b, struct instrument *in, uint32_t side, uint32_t key)
{
    if (in->shown[side] < b->cfg.depth || key <= in->worst_shown[side]) {
        in->dirty[side] = 1;
        touch(b, (uint32_t)(in - b->inst));
    }
}

/* Rewrite the instrument's snapshot entry: the fixed part, and the levels of the sides that
 * changed (or both). */
static void write_snapshot(struct tw_books *b, struct instrument *in, int force_both)
{
    if (!b->streaming || in->snap == UINT32_MAX) {
        in->dirty[0] = in->dirty[1] = 0; /* nobody to show it to */
        return;
    }
    uint32_t depth = b->cfg.depth, top[2][TWC_MAX_DEPTH], n[2];
    int changed[2] = {in->dirty[0] || force_both, in->dirty[1] || force_both};
    for (uint32_t side = 0; side < 2; side++) {
        if (changed[side]) {
            n[side] = treap_top(b->levels, in->root[side], top[side], depth);
            in->shown[side] = n[side];
            in->worst_shown[side] = n[side] ? b->levels[top[side][n[side] - 1]].key : 0;
        } else {
            n[side] = in->shown[side]; /* the entry holds them already */
        }
        in->dirty[side] = 0;
    }
    struct twc_snap_entry *e = tw_stream_entry(&b->stream, in->snap);
    struct twc_snap_entry fixed;
    memset(&fixed, 0, sizeof(fixed));
    fixed.event_seq = b->stream.next;
    fixed.exchange_ns = in->exchange_ns;
    fixed.messages = in->messages;
    fixed.locate = in->locate;
    fixed.flags = TWC_SNAP_IN_USE | (in->incomplete ? TWC_SNAP_INCOMPLETE : 0);
    fixed.trading_state = in->trading_state;
    fixed.last_trade_price = in->last_trade_price;
    memcpy(fixed.symbol, in->symbol, 8);
    fixed.n_bids = n[SIDE_BID];
    fixed.n_asks = n[SIDE_ASK];
    fixed.last_trade_shares = in->last_trade_shares;
    fixed.orders_live = in->orders_live;

    tw_stream_entry_begin(e);
    const uint64_t *src = (const uint64_t *)&fixed;
    for (unsigned i = 1; i < sizeof(fixed) / 8; i++)
        tw_stream_store64((uint64_t *)e + i, src[i]);
    struct twc_level *out = twc_snap_levels(e);
    for (uint32_t side = 0; side < 2; side++) {
        if (!changed[side])
            continue;
        for (uint32_t i = 0; i < n[side]; i++) {
            const struct level *lv = &b->levels[top[side][i]];
            struct twc_level w = {price_of(side, lv->key), lv->orders, lv->shares};
            uint64_t *dst = (uint64_t *)&out[side * depth + i];
            tw_stream_store64(&dst[0], ((const uint64_t *)&w)[0]);
            tw_stream_store64(&dst[1], ((const uint64_t *)&w)[1]);
        }
    }
    tw_stream_entry_end(e);
}

/* Best bid/offer changed since last published: one TWC_EV_TOP. */
static void top_event(struct tw_books *b, struct instrument *in)
{
    uint32_t price[2];
    uint64_t shares[2];
    for (uint32_t side = 0; side < 2; side++) {
        const struct level *lv = in->best[side] ? &b->levels[in->best[side]] : NULL;
        price[side] = lv ? price_of(side, lv->key) : 0;
        shares[side] = lv ? lv->shares : 0;
    }
    if (price[0] == in->top_price[0] && price[1] == in->top_price[1] &&
        shares[0] == in->top_shares[0] && shares[1] == in->top_shares[1])
        return;
    memcpy(in->top_price, price, sizeof(price));
    memcpy(in->top_shares, shares, sizeof(shares));
    struct twc_event *ev = event(b, TWC_EV_TOP, in);
    if (ev) {
        ev->price = price[SIDE_BID];
        ev->shares = shares[SIDE_BID];
        ev->price2 = price[SIDE_ASK];
        ev->shares2 = shares[SIDE_ASK];
    }
}

/* ---- orders and levels ------------------------------------------------------------------------ */

static struct level *level_get(struct tw_books *b, struct instrument *in, uint32_t side, uint32_t price)
{
    uint32_t key = key_of(side, price);
    uint32_t best = in->best[side];
    uint32_t lv = (best != NIL && b->levels[best].key == key) ? best
                                                              : treap_find(b->levels, in->root[side], key);
    if (lv != NIL)
        return &b->levels[lv];
    /* Never runs out: there are as many levels as orders, and a level holds at least one. */
    if (b->free_level != NIL) {
        lv = b->free_level;
        b->free_level = b->levels[lv].left;
    } else {
        lv = ++b->levels_used;
    }
    struct level *l = &b->levels[lv];
    memset(l, 0, sizeof(*l));
    l->key = key;
    l->prio = next_random(b);
    in->root[side] = treap_insert(b->levels, in->root[side], lv);
    in->n_levels[side]++;
    if (best == NIL || key < b->levels[best].key)
        in->best[side] = lv;
    return l;
}

static void level_release(struct tw_books *b, struct instrument *in, uint32_t side, uint32_t lv)
{
    uint32_t key = b->levels[lv].key;
    in->root[side] = treap_remove(b->levels, in->root[side], key);
    in->n_levels[side]--;
    if (in->best[side] == lv)
        in->best[side] = treap_leftmost(b->levels, in->root[side]);
    b->levels[lv].left = b->free_level;
    b->free_level = lv;
}

static void add_order(struct tw_books *b, struct instrument *in, uint64_t ref, uint8_t side_code,
                      uint32_t shares, uint32_t price)
{
    uint32_t side = side_of(side_code);
    if (ref == 0 || shares == 0 || hash_find(b, ref) != NULL) {
        /* the exchange never adds an empty order or reuses a live reference */
        b->stats.inconsistent++;
        mark_incomplete(b, in);
        return;
    }
    uint32_t o;
    if (b->free_order != NIL) {
        o = b->free_order;
        b->free_order = b->orders[o].next;
    } else if (b->orders_used < b->cfg.max_orders) {
        o = ++b->orders_used;   /* never used since the last reset */
    } else {
        b->stats.order_overflow++;
        mark_incomplete(b, in);
        return;
    }
    struct order *ord = &b->orders[o];
    struct level *lv = level_get(b, in, side, price);
    uint32_t lvi = (uint32_t)(lv - b->levels);
    ord->ref = ref;
    ord->shares = shares;
    ord->level = lvi;
    ord->inst = (uint32_t)(in - b->inst);
    ord->side = (uint8_t)side;
    ord->next = NIL;
    if (!b->cfg.levels_only) {
        ord->prev = lv->tail;
        if (lv->tail != NIL)
            b->orders[lv->tail].next = o;
        else
            lv->head = o;
        lv->tail = o;
    }
    lv->orders++;
    lv->shares += shares;
    hash_insert(b, ref, o);
    in->orders_live++;
    b->stats.orders_live++;
    order_event(b, in, side, ref, price, shares);
    level_event(b, in, side, price, lv);
    note_change(b, in, side, lv->key);
}

#define ALL_SHARES UINT64_MAX

/* Take `shares` off an order (an execution or a cancel; ALL_SHARES for a delete). The order
 * leaves when none remain; its level leaves when no order remains. */
static void reduce_order(struct tw_books *b, struct hash_slot *slot, uint64_t shares)
{
    uint32_t o = slot->order;
    struct order *ord = &b->orders[o];
    struct instrument *in = &b->inst[ord->inst];
    uint32_t side = ord->side, lvi = ord->level;
    struct level *lv = &b->levels[lvi];
    uint32_t price = price_of(side, lv->key), key = lv->key;
    if (shares == ALL_SHARES) {
        shares = ord->shares;
    } else if (shares > ord->shares) {
        b->stats.inconsistent++; /* the exchange never does this: our book is wrong */
        mark_incomplete(b, in);
        shares = ord->shares;
    }
    ord->shares -= (uint32_t)shares;
    lv->shares -= shares;
    order_event(b, in, side, ord->ref, price, ord->shares);
    if (ord->shares == 0) {
        if (!b->cfg.levels_only) {
            if (ord->prev != NIL)
                b->orders[ord->prev].next = ord->next;
            else
                lv->head = ord->next;
            if (ord->next != NIL)
                b->orders[ord->next].prev = ord->prev;
            else
                lv->tail = ord->prev;
        }
        lv->orders--;
        hash_remove(b, slot);
        ord->ref = 0;
        ord->next = b->free_order;
        b->free_order = o;
        in->orders_live--;
        b->stats.orders_live--;
    }
    level_event(b, in, side, price, lv->orders ? lv : NULL);
    note_change(b, in, side, key);
    if (lv->orders == 0)
        level_release(b, in, side, lvi);
}

/* The order a message refers to, or NULL: the book never saw it (marks incomplete). */
static struct hash_slot *known_order(struct tw_books *b, uint16_t locate, uint64_t ref)
{
    struct hash_slot *slot = hash_find(b, ref);
    if (slot)
        return slot;
    b->stats.unknown_orders++;
    struct instrument *in = instrument_for(b, locate, NULL, b->cfg.n_symbols == 0);
    if (in)
        mark_incomplete(b, in);
    return NULL;
}

static struct instrument *order_instrument(struct tw_books *b, const struct hash_slot *slot)
{
    return &b->inst[b->orders[slot->order].inst];
}

/* ---- system events ---------------------------------------------------------------------------- */

/* Start of messages: a new day, every book empty and complete. Costs what the day used, not
 * what the pools could hold: only orders [1, orders_used] can be live. */
static void reset_all(struct tw_books *b)
{
    for (uint32_t o = 1; o <= b->orders_used; o++) {
        struct order *ord = &b->orders[o];
        if (ord->ref != 0) {
            hash_remove(b, hash_find(b, ord->ref)); /* keeps the others' probe runs whole */
            ord->ref = 0;
        }
    }
    b->orders_used = b->levels_used = 0;
    b->free_order = b->free_level = NIL;
    for (uint32_t i = 0; i < b->n_inst; i++) {
        struct instrument *in = &b->inst[i];
        memset(in->root, 0, sizeof(in->root));
        memset(in->best, 0, sizeof(in->best));
        memset(in->n_levels, 0, sizeof(in->n_levels));
        memset(in->top_price, 0, sizeof(in->top_price));
        memset(in->top_shares, 0, sizeof(in->top_shares));
        in->orders_live = 0;
        in->incomplete = 0;
        in->last_trade_price = 0;
        in->last_trade_shares = 0;
        write_snapshot(b, in, 1);
    }
    b->all_incomplete = 0;
    b->stats.incomplete = 0;
    b->stats.orders_live = 0;
    b->stats.resets++;
}

/* ---- messages --------------------------------------------------------------------------------- */

static void flush_message(struct tw_books *b)
{
    for (uint32_t i = 0; i < b->n_touched; i++) {
        struct instrument *in = &b->inst[b->touched[i]];
        top_event(b, in);
        if (in->dirty[0] || in->dirty[1])
            write_snapshot(b, in, 0);
    }
    b->n_touched = 0;
    if (b->n_pending == 0)
        return;
    b->pending[b->n_pending - 1].flags |= TWC_F_END;
    for (uint32_t i = 0; i < b->n_pending; i++)
        tw_stream_put(&b->stream, &b->pending[i]);
    tw_stream_commit(&b->stream);
    b->stats.events_published += b->n_pending;
    b->n_pending = 0;
}

static void applied(struct tw_books *b, struct instrument *in)
{
    in->messages++;
    in->exchange_ns = b->exchange_ns;
    touch(b, (uint32_t)(in - b->inst));
}

void tw_books_on_message(struct tw_books *b, const uint8_t *m, uint32_t len, uint64_t receive_ns)
{
    if (len < ITCH_TIMESTAMP_OFFSET + 6 || len != tw_itch_length(m[0]))
        return; /* the decoder checked already; the books do not trust it blindly */
    uint16_t locate = rd_be16(m + 1);
    struct instrument *in;
    struct hash_slot *slot;
    b->receive_ns = receive_ns;
    b->exchange_ns = rd_be48(m + ITCH_TIMESTAMP_OFFSET);

    switch (m[0]) {
    case 'A':
    case 'F':
        if ((in = instrument_for(b, locate, NULL, b->cfg.n_symbols == 0)) == NULL)
            return;
        add_order(b, in, rd_be64(m + 11), m[19], rd_be32(m + 20), rd_be32(m + 32));
        applied(b, in);
        break;
    case 'E':
    case 'C':
        if (!b->by_locate[locate] && b->cfg.n_symbols) {
            b->stats.filtered++;
            return;
        }
        if ((slot = known_order(b, locate, rd_be64(m + 11))) == NULL)
            break;
        in = order_instrument(b, slot);
        {
            const struct order *ord = &b->orders[slot->order];
            uint32_t price = m[0] == 'C' ? rd_be32(m + 32)
                                         : price_of(ord->side, b->levels[ord->level].key);
            /* The resting order's side; a trade's aggressor is the other one. */
            trade_event(b, in, itch_side(ord->side), price, rd_be32(m + 19), rd_be64(m + 23));
        }
        reduce_order(b, slot, rd_be32(m + 19));
        applied(b, in);
        break;
    case 'X':
    case 'D':
        if (!b->by_locate[locate] && b->cfg.n_symbols) {
            b->stats.filtered++;
            return;
        }
        if ((slot = known_order(b, locate, rd_be64(m + 11))) == NULL)
            break;
        in = order_instrument(b, slot);
        reduce_order(b, slot, m[0] == 'X' ? rd_be32(m + 19) : ALL_SHARES);
        applied(b, in);
        break;
    case 'U':
        if (!b->by_locate[locate] && b->cfg.n_symbols) {
            b->stats.filtered++;
            return;
        }
        if ((slot = known_order(b, locate, rd_be64(m + 11))) == NULL) {
            /* The new order is real even though the old one was unknown: keep it. */
            if ((in = instrument_for(b, locate, NULL, b->cfg.n_symbols == 0)) == NULL)
                break;
            /* side unknown without the original: the book cannot place it */
            break;
        }
        in = order_instrument(b, slot);
        {
            uint8_t side = itch_side(b->orders[slot->order].side);
            reduce_order(b, slot, ALL_SHARES);
            add_order(b, in, rd_be64(m + 19), side, rd_be32(m + 27), rd_be32(m + 31));
        }
        applied(b, in);
        break;
    case 'P':
        if ((in = instrument_for(b, locate, m + 24, b->cfg.n_symbols == 0)) == NULL)
            return;
        trade_event(b, in, m[19], rd_be32(m + 32), rd_be32(m + 20), rd_be64(m + 36));
        applied(b, in);
        break;
    case 'Q':
        if ((in = instrument_for(b, locate, m + 19, b->cfg.n_symbols == 0)) == NULL)
            return;
        trade_event(b, in, 0, rd_be32(m + 27), rd_be64(m + 11), rd_be64(m + 31));
        applied(b, in);
        break;
    case 'R':
        if ((in = instrument_for(b, locate, m + 11, 1)) == NULL)
            return;
        if (memcmp(in->symbol, m + 11, 8) != 0 || !in->named) {
            memcpy(in->symbol, m + 11, 8);
            in->named = 1;
            in->dirty[0] = 1;
        }
        status_event(b, in, TWC_STATUS_DIRECTORY, 'R');
        applied(b, in);
        break;
    case 'H':
        if ((in = instrument_for(b, locate, m + 11, b->cfg.n_symbols == 0)) == NULL)
            return;
        in->trading_state = m[19];
        in->dirty[0] = 1;
        status_event(b, in, TWC_STATUS_TRADING, m[19]);
        applied(b, in);
        break;
    case 'S':
        if (m[11] == 'O')
            reset_all(b);
        status_event(b, NULL, m[11] == 'O' ? TWC_STATUS_RESET : TWC_STATUS_SYSTEM, m[11]);
        break;
    default:
        return; /* no book content (imbalances, MWCB, Reg SHO, ...) */
    }
    b->stats.messages++;
    flush_message(b);
}

void tw_books_on_loss(struct tw_books *b, const uint8_t *session, uint64_t first_seq, uint64_t count)
{
    (void)session;
    (void)first_seq;
    if (count == 0)
        return;
    b->stats.losses++;
    b->all_incomplete = 1;
    b->exchange_ns = 0;
    for (uint32_t i = 0; i < b->n_inst; i++) {
        struct instrument *in = &b->inst[i];
        if (!in->incomplete) {
            in->incomplete = 1;
            b->stats.incomplete++;
            in->dirty[0] = 1;
            write_snapshot(b, in, 1);
        }
    }
    status_event(b, NULL, TWC_STATUS_INCOMPLETE, 0);
    flush_message(b);
}

/* ---- life cycle ------------------------------------------------------------------------------- */

/* The pools: zeroed, and faulted in now (MAP_POPULATE) so that the first use of a page is not a
 * page fault on the poll thread in the middle of the trading day. */
static void *pool_alloc(size_t bytes)
{
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE,
                   -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

static void pool_free(void *p, size_t bytes)
{
    if (p)
        munmap(p, bytes);
}

static int config_error(const struct tw_books_config *c, char *err, size_t errlen)
{
    if (c->depth < 1 || c->depth > TWC_MAX_DEPTH) {
        snprintf(err, errlen, "books: depth %u: give 1..%d levels", c->depth, TWC_MAX_DEPTH);
        return 1;
    }
    if (c->max_orders < 1 || c->max_orders > (1u << 30)) {
        snprintf(err, errlen, "books: max_orders %u: give 1..%u", c->max_orders, 1u << 30);
        return 1;
    }
    if (c->max_instruments < 1 || c->max_instruments > 65536) {
        snprintf(err, errlen, "books: max_instruments %u: give 1..65536 (ITCH stock locates are "
                 "16 bits)", c->max_instruments);
        return 1;
    }
    if (c->n_symbols > TW_BOOK_MAX_SYMBOLS) {
        snprintf(err, errlen, "books: %u symbols in the filter: at most %d", c->n_symbols,
                 TW_BOOK_MAX_SYMBOLS);
        return 1;
    }
    if (c->feed[0] && (c->ring_events < 64 || (c->ring_events & (c->ring_events - 1)))) {
        snprintf(err, errlen, "books: ring_events %u: give a power of two >= 64", c->ring_events);
        return 1;
    }
    return 0;
}

struct tw_books *tw_books_new(const struct tw_books_config *cfg, char *err, size_t errlen)
{
    if (config_error(cfg, err, errlen))
        return NULL;
    struct tw_books *b = calloc(1, sizeof(*b));
    if (!b) {
        snprintf(err, errlen, "books: out of memory");
        return NULL;
    }
    b->cfg = *cfg;
    b->cfg.stream_root[sizeof(b->cfg.stream_root) - 1] = 0;
    b->cfg.feed[sizeof(b->cfg.feed) - 1] = 0;
    uint64_t slots = 2;
    b->hash_bits = 1;
    while (slots < 2ull * cfg->max_orders) {
        slots <<= 1;
        b->hash_bits++;
    }
    b->hash_mask = slots - 1;
    b->orders = pool_alloc(((size_t)cfg->max_orders + 1) * sizeof(*b->orders));
    b->levels = pool_alloc(((size_t)cfg->max_orders + 1) * sizeof(*b->levels));
    b->hash = pool_alloc(slots * sizeof(*b->hash));
    b->inst = calloc(cfg->max_instruments, sizeof(*b->inst));
    /* Mapped, not calloc'd: the kernel's zero pages, faulted in only where locates are used
     * (an allocator that zeroes 256 KiB itself, as sanitizers do, pays for all of it). */
    b->by_locate = mmap(NULL, LOCATE_MAP_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                        -1, 0);
    if (b->by_locate == MAP_FAILED)
        b->by_locate = NULL;
    b->rng = 0x2545f491u;
    if (!b->orders || !b->levels || !b->hash || !b->inst || !b->by_locate) {
        snprintf(err, errlen, "books: out of memory for %u orders and %u instruments",
                 cfg->max_orders, cfg->max_instruments);
        tw_books_free(b);
        return NULL;
    }
    if (cfg->feed[0]) {
        if (tw_stream_open(&b->stream, b->cfg.stream_root[0] ? b->cfg.stream_root : "/run/tickwire/streams",
                           b->cfg.feed, cfg->ring_events, cfg->max_instruments, cfg->depth, err,
                           errlen) != 0) {
            tw_books_free(b);
            return NULL;
        }
        b->streaming = 1;
    }
    reset_all(b);
    b->stats.resets = 0;
    return b;
}

void tw_books_free(struct tw_books *b)
{
    if (!b)
        return;
    if (b->streaming)
        tw_stream_close(&b->stream);
    pool_free(b->orders, ((size_t)b->cfg.max_orders + 1) * sizeof(*b->orders));
    pool_free(b->levels, ((size_t)b->cfg.max_orders + 1) * sizeof(*b->levels));
    pool_free(b->hash, (b->hash_mask + 1) * sizeof(*b->hash));
    free(b->inst);
    if (b->by_locate)
        munmap(b->by_locate, LOCATE_MAP_BYTES);
    free(b);
}

const struct tw_book_stats *tw_books_stats(const struct tw_books *b)
{
    return &b->stats;
}

/* ---- inspection ------------------------------------------------------------------------------- */

int tw_books_instrument(const struct tw_books *b, uint16_t locate, struct tw_book_instrument *out)
{
    uint32_t slot = b->by_locate[locate];
    if (!slot)
        return -1;
    const struct instrument *in = &b->inst[slot - 1];
    memset(out, 0, sizeof(*out));
    out->locate = in->locate;
    out->incomplete = in->incomplete;
    out->trading_state = in->trading_state;
    memcpy(out->symbol, in->symbol, 8);
    out->bid_levels = in->n_levels[SIDE_BID];
    out->ask_levels = in->n_levels[SIDE_ASK];
    out->orders_live = in->orders_live;
    out->messages = in->messages;
    return 0;
}

uint32_t tw_books_levels(const struct tw_books *b, uint16_t locate, uint8_t side_code,
                         struct tw_book_level *out, uint32_t max)
{
    uint32_t slot = b->by_locate[locate];
    if (!slot || max == 0)
        return 0;
    const struct instrument *in = &b->inst[slot - 1];
    uint32_t side = side_of(side_code);
    uint32_t *idx = malloc((size_t)max * sizeof(*idx)); /* inspection only: never on the hot path */
    if (!idx)
        return 0;
    uint32_t n = treap_top(b->levels, in->root[side], idx, max);
    for (uint32_t i = 0; i < n; i++) {
        const struct level *lv = &b->levels[idx[i]];
        out[i] = (struct tw_book_level){price_of(side, lv->key), lv->orders, lv->shares};
    }
    free(idx);
    return n;
}

uint32_t tw_books_orders(const struct tw_books *b, struct tw_book_order *out, uint32_t max)
{
    uint32_t n = 0;
    for (uint32_t o = 1; o <= b->orders_used && n < max; o++) {
        const struct order *ord = &b->orders[o];
        if (ord->ref == 0)
            continue;
        const struct level *lv = &b->levels[ord->level];
        uint32_t position = 0;
        if (!b->cfg.levels_only)
            for (uint32_t p = ord->prev; p != NIL; p = b->orders[p].prev)
                position++;
        out[n++] = (struct tw_book_order){ord->ref, ord->shares, price_of(ord->side, lv->key),
                                          b->inst[ord->inst].locate, itch_side(ord->side), 0,
                                          position};
    }
    return n;
}

void tw_books_end_stream(struct tw_books *b)
{
    if (b->streaming) {
        __atomic_store_n(&b->stream.ring->state, TWC_STATE_ENDED, __ATOMIC_RELEASE);
        __atomic_store_n(&b->stream.snap->state, TWC_STATE_ENDED, __ATOMIC_RELEASE);
    }
}

