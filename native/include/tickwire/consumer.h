/* tickwire/consumer.h - read a tickwire engine's book stream from shared memory.
 *
 * Header-only, no dependencies beyond libc and a C11 compiler (GCC or clang: the __atomic
 * builtins, which implement the C11 memory model on plain fields). Copy it into your strategy.
 *
 * What the engine writes for feed F, in <stream_root>/<F>/ (default /run/tickwire/streams/F/),
 * both files created 0644 and replaced atomically (rename) when an engine starts:
 *
 *   events    a broadcast ring of book events. One writer (the engine's poll thread), any number
 *             of readers, each with its own cursor in its own memory. The writer never waits for
 *             anyone and never learns who reads: a reader that falls more than `capacity` events
 *             behind is lapped; it notices (twc_next() returns TWC_LAPPED), counts it and
 *             resynchronises from the snapshot. A stopped reader changes nothing.
 *   snapshot  one entry per instrument: best bid/offer and the top `depth` levels, each entry
 *             under its own sequence lock, plus the ring position it reflects.
 *
 * Events: every ITCH message that changes something yields one or more events; the last one a
 * message caused carries TWC_F_END (an atomic group: act on the book at END). Each carries the
 * exchange timestamp (ITCH: ns since the exchange's midnight) and the engine's receive time
 * (CLOCK_MONOTONIC ns of the batch the packet came in), so reader-side latency is
 * now(CLOCK_MONOTONIC) - receive_ns: the stage "engine to consumer".
 *
 * Memory ordering (why it is correct):
 *  - slot publication is a per-slot sequence lock. The writer stores slot.seq = 2n+1 ("being
 *    written", relaxed), then a release fence, then the payload, then slot.seq = 2n+2 (release).
 *    The fence keeps the payload stores from becoming visible before the "being written" mark
 *    (otherwise a reader could see new payload under the old, complete, seq of the lapped event).
 *  - a reader loads slot.seq (acquire: the payload stores before the 2n+2 store are visible),
 *    copies the payload, issues an acquire fence (the copy's loads cannot move below it) and
 *    loads slot.seq again: unchanged means nobody overwrote the slot during the copy.
 *  - `head` (events published) is stored with release once per ITCH message, after all of its
 *    events: a reader that loads head with acquire and reads events below it never sees half a
 *    message unless it is lapped in the meantime, which the slot check detects.
 *  - payload words are written and read with relaxed __atomic operations: a racing read is then
 *    defined behaviour (it is discarded by the seq check), and on x86-64/arm64 it is a plain mov.
 *  - the snapshot entries use the same seqlock protocol (seq odd while being written).
 *
 * Typical use:
 *     struct twc_reader r;
 *     char err[256];
 *     if (twc_open(&r, "/run/tickwire/streams/nasdaq-a", TWC_START_NOW, err, sizeof err)) fail(err);
 *     struct twc_event ev;
 *     for (;;) {
 *         int rc = twc_next(&r, &ev);
 *         if (rc == TWC_OK) handle(&ev);
 *         else if (rc == TWC_LAPPED) resync_from_snapshots(&r);   (twc_snapshot_find / _at)
 *         else if (rc == TWC_ENDED) break;                         (reopen: a new engine started)
 *         else spin_or_sleep();
 *     }
 *     twc_close(&r);
 *
 * Everything between the cdef markers is what tickwire_engine.consumer gives to cffi: plain
 * types, integer #defines, prototypes.
 */
#ifndef TICKWIRE_CONSUMER_H
#define TICKWIRE_CONSUMER_H

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* cdef-begin */
#define TWC_VERSION 1
#define TWC_MAX_DEPTH 64           /* levels per side a snapshot entry can hold */
#define TWC_HIST_BUCKETS 1024      /* reader latency histogram: the engine's log-linear buckets */

/* twc_next() / twc_read() results */
#define TWC_OK 1
#define TWC_EMPTY 0
#define TWC_LAPPED -1              /* the writer overwrote events this reader had not read */
#define TWC_ENDED -2               /* the engine stopped (or a new one replaced the files) */

#define TWC_START_NOW 0            /* read what is published from now on (join late) */
#define TWC_START_OLDEST 1         /* from the oldest event still in the ring */

/* event types */
#define TWC_EV_ORDER 1    /* an order appeared, changed or left (shares 0): full book only */
#define TWC_EV_LEVEL 2    /* a price level's total: price, shares (0: gone), orders (in price2) */
#define TWC_EV_TOP 3      /* best bid/offer changed: price/shares = bid, price2/shares2 = ask */
#define TWC_EV_TRADE 4    /* an execution or a trade message: price, shares, ref = match number */
#define TWC_EV_STATUS 5   /* kind says what: trading action, system event, incomplete, reset */

/* event flags */
#define TWC_F_END 1          /* the last event the message caused */
#define TWC_F_INCOMPLETE 2   /* the instrument's book is known to be incomplete */

/* TWC_EV_STATUS kinds (in `kind`; `state` holds the ITCH code where there is one) */
#define TWC_STATUS_TRADING 1      /* stock trading action 'H': state = H, P, Q or T */
#define TWC_STATUS_SYSTEM 2       /* system event 'S': state = O, S, Q, M, E or C (locate 0) */
#define TWC_STATUS_INCOMPLETE 3   /* this book (or, locate 0, every book) is known incomplete */
#define TWC_STATUS_RESET 4        /* every book was cleared: a new day starts (complete again) */
#define TWC_STATUS_DIRECTORY 5    /* a stock directory 'R' named this locate */

/* snapshot entry flags */
#define TWC_SNAP_INCOMPLETE 1
#define TWC_SNAP_IN_USE 2

#define TWC_STATE_LIVE 1
#define TWC_STATE_ENDED 2

/* One ring slot: 64 bytes, one cache line. Prices are ITCH's: 4 implied decimals. */
struct twc_event {
    uint64_t seq;          /* slot state (2n+2: holds event n); readers get the event's n */
    uint8_t type;          /* TWC_EV_* */
    uint8_t flags;         /* TWC_F_* */
    uint8_t side;          /* 'B' or 'S', 0 when none */
    uint8_t state;         /* status: the ITCH code */
    uint16_t locate;       /* ITCH stock locate (0: not about one instrument) */
    uint16_t kind;         /* status: TWC_STATUS_* */
    uint32_t price;        /* order/level/trade price; top: bid price (0: none) */
    uint32_t price2;       /* level: orders at the level; top: ask price (0: none) */
    uint64_t shares;       /* order/level/trade shares; top: bid shares */
    uint64_t shares2;      /* top: ask shares; level: the level's depth index when known */
    uint64_t ref;          /* order reference; trade: match number */
    uint64_t exchange_ns;  /* ITCH timestamp: ns since the exchange's midnight */
    uint64_t receive_ns;   /* engine receive time, CLOCK_MONOTONIC ns */
};

/* The ring file: this header (256 bytes) then `capacity` events. */
struct twc_ring_header {
    uint64_t magic;
    uint32_t version;
    uint32_t header_size;
    uint64_t capacity;         /* events, a power of two */
    uint32_t event_size;
    uint32_t state;            /* TWC_STATE_* (atomic) */
    uint64_t generation;       /* CLOCK_REALTIME ns when the engine created the file */
    char feed[64];
    uint8_t pad0[24];
    uint64_t head;             /* events published (atomic, release), on its own cache line */
    uint8_t pad1[120];
};

struct twc_level {
    uint32_t price;
    uint32_t orders;
    uint64_t shares;
};

/* The snapshot file: this header (256 bytes) then `capacity` entries of `entry_size` bytes. */
struct twc_snap_header {
    uint64_t magic;
    uint32_t version;
    uint32_t header_size;
    uint32_t capacity;         /* instrument entries */
    uint32_t entry_size;
    uint32_t depth;            /* levels per side in each entry */
    uint32_t state;            /* TWC_STATE_* (atomic) */
    uint64_t generation;
    char feed[64];
    uint32_t count;            /* entries in use (atomic): entries [0, count) */
    uint8_t pad[148];
};

/* One entry's fixed part; `depth` bids then `depth` asks (struct twc_level) follow it. */
struct twc_snap_entry {
    uint64_t seq;              /* seqlock: odd while the engine writes the entry */
    uint64_t event_seq;        /* ring events published when the entry was written */
    uint64_t exchange_ns;      /* of the last message that changed it */
    uint64_t messages;         /* ITCH messages applied to this instrument */
    uint16_t locate;
    uint8_t flags;             /* TWC_SNAP_* */
    uint8_t trading_state;     /* last 'H' state (H, P, Q, T), 0 before any */
    uint32_t last_trade_price;
    char symbol[8];            /* space-padded, as ITCH sends it */
    uint32_t n_bids;           /* levels filled in each side (<= depth) */
    uint32_t n_asks;
    uint64_t last_trade_shares;
    uint64_t orders_live;
    uint64_t reserved;
};

/* What twc_snapshot_at / _find copy out. */
struct twc_book_top {
    uint64_t event_seq;
    uint64_t exchange_ns;
    uint64_t messages;
    uint64_t last_trade_shares;
    uint64_t orders_live;
    uint32_t last_trade_price;
    uint16_t locate;
    uint8_t flags;
    uint8_t trading_state;
    char symbol[9];            /* NUL-terminated, padding removed */
    uint32_t n_bids;
    uint32_t n_asks;
    struct twc_level bids[64];
    struct twc_level asks[64];
};

struct twc_hist {
    uint64_t count;
    uint64_t sum;
    uint64_t min;
    uint64_t max;
    uint64_t buckets[1024];
};

struct twc_reader {
    void *events_map;
    size_t events_len;
    void *snap_map;
    size_t snap_len;
    uint64_t next;             /* the next event this reader will read */
    uint64_t mask;
    uint64_t generation;
    uint64_t events_read;
    uint64_t lapped;           /* times this reader was lapped (readers_lapped) */
    uint64_t missed;           /* events it lost to lapping */
    int32_t measure_latency;   /* 1: record engine-to-consumer latency at each TWC_F_END event */
    uint32_t spare;
    struct twc_hist latency;
    char dir[512];
};

#if 0 /* prototypes for cffi's cdef only: the definitions below are static inline */
int twc_open(struct twc_reader *r, const char *dir, int start, char *err, size_t errlen);
void twc_close(struct twc_reader *r);
int twc_next(struct twc_reader *r, struct twc_event *out);
int twc_read(struct twc_reader *r, struct twc_event *out, int max, int *result);
uint64_t twc_head(const struct twc_reader *r);
uint64_t twc_capacity(const struct twc_reader *r);
int twc_ended(const struct twc_reader *r);
int twc_replaced(const struct twc_reader *r);
void twc_seek_head(struct twc_reader *r);
uint32_t twc_snapshot_count(const struct twc_reader *r);
uint32_t twc_snapshot_depth(const struct twc_reader *r);
int twc_snapshot_at(const struct twc_reader *r, uint32_t index, struct twc_book_top *out);
int twc_snapshot_find(const struct twc_reader *r, const char *symbol, struct twc_book_top *out);
uint32_t twc_hist_index(uint64_t value_ns);
uint64_t twc_hist_bucket_low(uint32_t index);
uint64_t twc_now_ns(void);
#endif
/* cdef-end */

#define TWC_RING_MAGIC 0x314d525457544954ull  /* "TITWTRM1" little-endian */
#define TWC_SNAP_MAGIC 0x3150414e53545754ull  /* "TWTSNAP1" little-endian */
#define TWC_RING_HEADER_SIZE 256u
#define TWC_SNAP_HEADER_SIZE 256u
#define TWC_SNAP_ENTRY_FIXED 80u

_Static_assert(sizeof(struct twc_event) == 64, "an event is one cache line");
_Static_assert(sizeof(struct twc_ring_header) == TWC_RING_HEADER_SIZE, "ring header layout");
_Static_assert(offsetof(struct twc_ring_header, head) == 128, "head on its own cache line");
_Static_assert(sizeof(struct twc_snap_header) == TWC_SNAP_HEADER_SIZE, "snapshot header layout");
_Static_assert(sizeof(struct twc_snap_entry) == TWC_SNAP_ENTRY_FIXED, "snapshot entry layout");

/* Bytes of one snapshot entry holding `depth` levels per side, a whole number of cache lines. */
static inline uint32_t twc_snap_entry_size(uint32_t depth)
{
    uint32_t bytes = TWC_SNAP_ENTRY_FIXED + 2u * depth * (uint32_t)sizeof(struct twc_level);
    return (bytes + 63u) & ~63u;
}

static inline struct twc_level *twc_snap_levels(struct twc_snap_entry *e)
{
    return (struct twc_level *)(e + 1); /* bids[depth], then asks[depth] */
}

/* ---- the reader ------------------------------------------------------------------------------ */

static inline const struct twc_ring_header *twc_ring(const struct twc_reader *r)
{
    return (const struct twc_ring_header *)r->events_map;
}

static inline const struct twc_snap_header *twc_snap(const struct twc_reader *r)
{
    return (const struct twc_snap_header *)r->snap_map;
}

static inline uint64_t twc_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* The engine's histogram arithmetic (tickwire.h, TW_HIST_BUCKETS): below 64 ns one bucket per
 * ns; above, 32 buckets per power of two; the last bucket takes everything from 2^36 ns up. */
static inline uint32_t twc_hist_index(uint64_t v)
{
    if (v < 64)
        return (uint32_t)v;
    uint32_t e = 63u - (uint32_t)__builtin_clzll(v);
    uint64_t index = 64u + (uint64_t)(e - 6u) * 32u + ((v >> (e - 5u)) & 31u);
    return index >= TWC_HIST_BUCKETS ? TWC_HIST_BUCKETS - 1 : (uint32_t)index;
}

static inline uint64_t twc_hist_bucket_low(uint32_t index)
{
    if (index < 64)
        return index;
    uint32_t e = (index - 64u) / 32u + 6u, sub = (index - 64u) % 32u;
    return (1ull << e) + ((uint64_t)sub << (e - 5u));
}

static inline void twc_hist_record(struct twc_hist *h, uint64_t v)
{
    if (h->count == 0 || v < h->min)
        h->min = v;
    if (v > h->max)
        h->max = v;
    h->count++;
    h->sum += v;
    h->buckets[twc_hist_index(v)]++;
}

static inline int twc_fail(char *err, size_t errlen, const char *what, const char *path, int code)
{
    const char *parts[5] = {what, " ", path, ": ", code ? strerror(code) : "not a tickwire stream"};
    size_t used = 0;
    if (!err || !errlen)
        return code ? -code : -EINVAL;
    for (int i = 0; i < 5; i++) /* a long path is cut short, never overruns err */
        for (const char *c = parts[i]; *c && used + 1 < errlen; c++)
            err[used++] = *c;
    err[used] = 0;
    return code ? -code : -EINVAL;
}

/* Map one file read-only. */
static inline int twc_map(const char *path, void **map, size_t *len, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0)
        return twc_fail(err, errlen, "cannot open", path, errno);
    if (fstat(fd, &st) != 0 || st.st_size < 256) {
        int code = errno;
        close(fd);
        return twc_fail(err, errlen, "too short to be a stream file:", path, st.st_size < 256 ? 0 : code);
    }
    void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    int code = errno;
    close(fd);
    if (m == MAP_FAILED)
        return twc_fail(err, errlen, "cannot map", path, code);
    *map = m;
    *len = (size_t)st.st_size;
    return 0;
}

static inline void twc_close(struct twc_reader *r)
{
    if (r->events_map)
        munmap(r->events_map, r->events_len);
    if (r->snap_map)
        munmap(r->snap_map, r->snap_len);
    r->events_map = r->snap_map = NULL;
}

static inline uint64_t twc_head(const struct twc_reader *r)
{
    return __atomic_load_n(&twc_ring(r)->head, __ATOMIC_ACQUIRE);
}

static inline uint64_t twc_capacity(const struct twc_reader *r)
{
    return twc_ring(r)->capacity;
}

/* The engine stopped: it marks the ring ended as it stops (and a new engine marks the old file
 * ended before it replaces it, should the old one have been killed). */
static inline int twc_ended(const struct twc_reader *r)
{
    return __atomic_load_n(&twc_ring(r)->state, __ATOMIC_ACQUIRE) == TWC_STATE_ENDED;
}

/* The file at the stream's path is no longer the one this reader mapped (a new engine started).
 * A stat() call: ask now and then (when idle), not per event. */
static inline int twc_replaced(const struct twc_reader *r)
{
    char path[600];
    int fd;
    uint64_t generation = 0;
    snprintf(path, sizeof(path), "%s/events", r->dir);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 1;
    if (pread(fd, &generation, sizeof(generation),
              offsetof(struct twc_ring_header, generation)) != (ssize_t)sizeof(generation))
        generation = 0;
    close(fd);
    return generation != r->generation;
}

static inline void twc_seek_head(struct twc_reader *r)
{
    r->next = twc_head(r);
}

static inline int twc_check_ring(const struct twc_ring_header *h, size_t len)
{
    return h->magic == TWC_RING_MAGIC && h->version == TWC_VERSION &&
           h->event_size == sizeof(struct twc_event) && h->capacity &&
           (h->capacity & (h->capacity - 1)) == 0 && h->header_size == TWC_RING_HEADER_SIZE &&
           h->header_size + h->capacity * sizeof(struct twc_event) <= len;
}

static inline int twc_check_snap(const struct twc_snap_header *h, size_t len)
{
    return h->magic == TWC_SNAP_MAGIC && h->version == TWC_VERSION &&
           h->depth <= TWC_MAX_DEPTH && h->entry_size == twc_snap_entry_size(h->depth) &&
           h->header_size == TWC_SNAP_HEADER_SIZE &&
           h->header_size + (uint64_t)h->capacity * h->entry_size <= len;
}

/* Open the stream in `dir` (<stream_root>/<feed>). start: TWC_START_NOW or TWC_START_OLDEST.
 * 0, or a negative errno with a message in err. */
static inline int twc_open(struct twc_reader *r, const char *dir, int start, char *err, size_t errlen)
{
    char path[600];
    int rc;
    memset(r, 0, sizeof(*r));
    snprintf(r->dir, sizeof(r->dir), "%s", dir);
    snprintf(path, sizeof(path), "%s/events", dir);
    if ((rc = twc_map(path, &r->events_map, &r->events_len, err, errlen)) != 0)
        return rc;
    if (!twc_check_ring(twc_ring(r), r->events_len)) {
        twc_close(r);
        return twc_fail(err, errlen, "wrong magic, version or size in", path, 0);
    }
    snprintf(path, sizeof(path), "%s/snapshot", dir);
    if ((rc = twc_map(path, &r->snap_map, &r->snap_len, err, errlen)) != 0) {
        twc_close(r);
        return rc;
    }
    if (!twc_check_snap(twc_snap(r), r->snap_len)) {
        twc_close(r);
        return twc_fail(err, errlen, "wrong magic, version or size in", path, 0);
    }
    r->mask = twc_ring(r)->capacity - 1;
    r->generation = twc_ring(r)->generation;
    uint64_t head = twc_head(r);
    if (start == TWC_START_OLDEST)
        r->next = head > twc_ring(r)->capacity ? head - twc_ring(r)->capacity : 0;
    else
        r->next = head;
    return 0;
}

static inline const struct twc_event *twc_slot(const struct twc_reader *r, uint64_t n)
{
    const char *base = (const char *)r->events_map + TWC_RING_HEADER_SIZE;
    return (const struct twc_event *)base + (n & r->mask);
}

/* Lapped: count it, jump to the present (what was overwritten is gone; the snapshot has the
 * state), and tell the caller. */
static inline int twc_lapped(struct twc_reader *r, uint64_t head)
{
    r->lapped++;
    r->missed += head - r->next;
    r->next = head;
    return TWC_LAPPED;
}

/* The next event: TWC_OK (in *out), TWC_EMPTY, TWC_LAPPED or TWC_ENDED. */
static inline int twc_next(struct twc_reader *r, struct twc_event *out)
{
    const struct twc_ring_header *h = twc_ring(r);
    uint64_t head = __atomic_load_n(&h->head, __ATOMIC_ACQUIRE);
    if (r->next >= head) {
        if (!twc_ended(r))
            return TWC_EMPTY;
        /* Ended, but the last commit may have come between our load of head and of the state:
         * the writer commits before it marks the end, so after the acquire load of the state a
         * second look at head sees everything there will ever be. */
        head = __atomic_load_n(&h->head, __ATOMIC_ACQUIRE);
        if (r->next >= head)
            return TWC_ENDED;
    }
    if (head - r->next > h->capacity)
        return twc_lapped(r, head);
    const struct twc_event *slot = twc_slot(r, r->next);
    const uint64_t want = 2 * r->next + 2;
    uint64_t before = __atomic_load_n(&slot->seq, __ATOMIC_ACQUIRE);
    if (before != want)
        return twc_lapped(r, __atomic_load_n(&h->head, __ATOMIC_ACQUIRE));
    const uint64_t *src = (const uint64_t *)slot;
    uint64_t *dst = (uint64_t *)out;
    for (unsigned i = 1; i < sizeof(*out) / 8; i++)
        dst[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    if (__atomic_load_n(&slot->seq, __ATOMIC_RELAXED) != want)
        return twc_lapped(r, __atomic_load_n(&h->head, __ATOMIC_ACQUIRE));
    out->seq = r->next++;
    r->events_read++;
    if (r->measure_latency && (out->flags & TWC_F_END)) {
        uint64_t now = twc_now_ns();
        if (now >= out->receive_ns)
            twc_hist_record(&r->latency, now - out->receive_ns);
    }
    return TWC_OK;
}

/* Up to max events into out; returns how many, and the status that stopped it in *result
 * (TWC_OK when max was reached). */
static inline int twc_read(struct twc_reader *r, struct twc_event *out, int max, int *result)
{
    int n = 0, rc = TWC_OK;
    while (n < max && (rc = twc_next(r, &out[n])) == TWC_OK)
        n++;
    if (result)
        *result = n == max ? TWC_OK : rc;
    return n;
}

static inline uint32_t twc_snapshot_count(const struct twc_reader *r)
{
    uint32_t n = __atomic_load_n(&twc_snap(r)->count, __ATOMIC_ACQUIRE);
    return n < twc_snap(r)->capacity ? n : twc_snap(r)->capacity;
}

static inline uint32_t twc_snapshot_depth(const struct twc_reader *r)
{
    return twc_snap(r)->depth;
}

static inline void twc_copy_words(void *dst, const void *src, size_t bytes)
{
    const uint64_t *s = (const uint64_t *)src;
    uint64_t *d = (uint64_t *)dst;
    for (size_t i = 0; i < bytes / 8; i++)
        d[i] = __atomic_load_n(&s[i], __ATOMIC_RELAXED);
}

/* A consistent copy of entry `index`: 0, -EAGAIN if the writer kept changing it (retry later),
 * -ENOENT past the entries in use. */
static inline int twc_snapshot_at(const struct twc_reader *r, uint32_t index, struct twc_book_top *out)
{
    const struct twc_snap_header *h = twc_snap(r);
    if (index >= twc_snapshot_count(r))
        return -ENOENT;
    const char *raw = (const char *)r->snap_map + h->header_size + (size_t)index * h->entry_size;
    const struct twc_snap_entry *e = (const struct twc_snap_entry *)raw;
    uint32_t depth = h->depth;
    struct twc_snap_entry fixed;
    struct twc_level levels[2 * TWC_MAX_DEPTH];
    for (int attempt = 0; attempt < 10000; attempt++) {
        uint64_t before = __atomic_load_n(&e->seq, __ATOMIC_ACQUIRE);
        if (before & 1)
            continue;
        twc_copy_words(&fixed, e, sizeof(fixed));
        twc_copy_words(levels, e + 1, 2u * depth * sizeof(struct twc_level));
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (__atomic_load_n(&e->seq, __ATOMIC_RELAXED) != before)
            continue;
        memset(out, 0, sizeof(*out));
        out->event_seq = fixed.event_seq;
        out->exchange_ns = fixed.exchange_ns;
        out->messages = fixed.messages;
        out->last_trade_shares = fixed.last_trade_shares;
        out->orders_live = fixed.orders_live;
        out->last_trade_price = fixed.last_trade_price;
        out->locate = fixed.locate;
        out->flags = fixed.flags;
        out->trading_state = fixed.trading_state;
        memcpy(out->symbol, fixed.symbol, 8);
        for (int i = 7; i >= 0 && (out->symbol[i] == ' ' || out->symbol[i] == 0); i--)
            out->symbol[i] = 0;
        out->n_bids = fixed.n_bids <= depth ? fixed.n_bids : depth;
        out->n_asks = fixed.n_asks <= depth ? fixed.n_asks : depth;
        memcpy(out->bids, levels, out->n_bids * sizeof(struct twc_level));
        memcpy(out->asks, levels + depth, out->n_asks * sizeof(struct twc_level));
        return 0;
    }
    return -EAGAIN;
}

/* The entry of `symbol` (without padding), or -ENOENT. */
static inline int twc_snapshot_find(const struct twc_reader *r, const char *symbol,
                                    struct twc_book_top *out)
{
    uint32_t n = twc_snapshot_count(r);
    for (uint32_t i = 0; i < n; i++) {
        int rc = twc_snapshot_at(r, i, out);
        if (rc == 0 && strcmp(out->symbol, symbol) == 0)
            return 0;
    }
    return -ENOENT;
}

#endif
