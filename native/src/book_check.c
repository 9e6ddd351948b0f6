/* book_check.c - the books' structural self-check (tw_books_check), for tests and the fuzzer.
 *
 * A file of its own so the fuzzer can build it without coverage instrumentation: it walks every
 * structure after every step, and tracing its comparisons would only slow the search down.
 */
#include <stdio.h>
#include <stdlib.h>

#include "book_internal.h"

#define SMALL_BOOK 256

#define CHECK_FAIL(...)                        \
    do {                                       \
        snprintf(err, errlen, __VA_ARGS__);    \
        release(small, level_orders, level_shares); \
        return -1;                             \
    } while (0)

static void release(int small, uint32_t *orders, uint64_t *shares)
{
    if (!small) {
        free(orders);
        free(shares);
    }
}

/* Walk a treap: keys in order, heap-ordered priorities; returns levels seen or -1. */
static int64_t check_treap(const struct tw_books *b, uint32_t t, uint32_t *prev_key, int *have_prev,
                           uint32_t depth)
{
    if (t == NIL)
        return 0;
    const struct level *L = b->levels;
    if (t > b->cfg.max_orders || depth > 100000)
        return -1;
    if ((L[t].left && L[L[t].left].prio > L[t].prio) || (L[t].right && L[L[t].right].prio > L[t].prio))
        return -1;
    int64_t left = check_treap(b, L[t].left, prev_key, have_prev, depth + 1);
    if (left < 0 || (*have_prev && L[t].key <= *prev_key))
        return -1;
    *prev_key = L[t].key;
    *have_prev = 1;
    int64_t right = check_treap(b, L[t].right, prev_key, have_prev, depth + 1);
    return right < 0 ? -1 : left + right + 1;
}

int tw_books_check(const struct tw_books *b, char *err, size_t errlen)
{
    /* small books (the fuzzer's) on the stack: it runs after every step */
    uint32_t small_orders[SMALL_BOOK + 1] = {0};
    uint64_t small_shares[SMALL_BOOK + 1] = {0};
    int small = b->cfg.max_orders <= SMALL_BOOK;
    uint32_t *level_orders = small ? small_orders : calloc((size_t)b->cfg.max_orders + 1, sizeof(*level_orders));
    uint64_t *level_shares = small ? small_shares : calloc((size_t)b->cfg.max_orders + 1, sizeof(*level_shares));
    uint64_t live = 0, incomplete = 0;
    if (!level_orders || !level_shares)
        CHECK_FAIL("out of memory");
    for (uint32_t o = 1; o <= b->orders_used; o++) {
        const struct order *ord = &b->orders[o];
        if (ord->ref == 0)
            continue;
        live++;
        const struct hash_slot *slot = hash_find((struct tw_books *)b, ord->ref);
        if (!slot || slot->order != o)
            CHECK_FAIL("order %u (ref %llu) is not found by its reference", o,
                       (unsigned long long)ord->ref);
        if (ord->level == NIL || ord->level > b->levels_used || ord->inst >= b->n_inst ||
            ord->shares == 0)
            CHECK_FAIL("order %u has a bad level, instrument or zero shares", o);
        level_orders[ord->level]++;
        level_shares[ord->level] += ord->shares;
    }
    if (live != b->stats.orders_live)
        CHECK_FAIL("orders_live %llu, but %llu orders are live", (unsigned long long)b->stats.orders_live,
                   (unsigned long long)live);
    uint64_t hashed = 0;
    for (uint64_t i = 0; i <= b->hash_mask; i++)
        hashed += b->hash[i].ref != 0;
    if (hashed != live)
        CHECK_FAIL("the hash holds %llu references for %llu orders", (unsigned long long)hashed,
                   (unsigned long long)live);
    for (uint32_t i = 0; i < b->n_inst; i++) {
        const struct instrument *in = &b->inst[i];
        incomplete += in->incomplete;
        if (b->by_locate[in->locate] != i + 1)
            CHECK_FAIL("instrument %u is not found by its locate %u", i, in->locate);
        for (uint32_t side = 0; side < 2; side++) {
            uint32_t prev_key = 0;
            int have_prev = 0;
            int64_t n = check_treap(b, in->root[side], &prev_key, &have_prev, 0);
            if (n < 0 || (uint64_t)n != in->n_levels[side])
                CHECK_FAIL("instrument %u side %u: the level tree is broken or miscounted", i, side);
            if (in->best[side] != treap_leftmost(b->levels, in->root[side]))
                CHECK_FAIL("instrument %u side %u: the cached best is not the best level", i, side);
            uint32_t idx[TREAP_STACK];
            uint32_t shown = treap_top(b->levels, in->root[side], idx, in->n_levels[side] < TREAP_STACK ? in->n_levels[side] : TREAP_STACK);
            for (uint32_t k = 0; k < shown; k++) {
                const struct level *lv = &b->levels[idx[k]];
                if (lv->orders == 0 || lv->orders != level_orders[idx[k]] ||
                    lv->shares != level_shares[idx[k]])
                    CHECK_FAIL("instrument %u side %u: level %u totals disagree with its orders",
                               i, side, price_of(side, lv->key));
                if (!b->cfg.levels_only) {
                    uint32_t count = 0, prev = NIL;
                    for (uint32_t o = lv->head; o != NIL && count <= lv->orders; o = b->orders[o].next) {
                        if (b->orders[o].prev != prev || b->orders[o].level != idx[k])
                            CHECK_FAIL("instrument %u: a level's order queue is broken", i);
                        prev = o;
                        count++;
                    }
                    if (count != lv->orders || lv->tail != prev)
                        CHECK_FAIL("instrument %u: a level's queue holds %u of %u orders", i, count,
                                   lv->orders);
                }
            }
        }
    }
    if (incomplete != b->stats.incomplete)
        CHECK_FAIL("incomplete %llu, but %llu instruments are", (unsigned long long)b->stats.incomplete,
                   (unsigned long long)incomplete);
    release(small, level_orders, level_shares);
    return 0;
}
