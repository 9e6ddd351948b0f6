/* decode.c - Ethernet/IPv4/UDP -> MoldUDP64 -> ITCH 5.0, with sequence tracking and A/B arbitration.
 *
 * A pure function of bytes and the caller's clock: no I/O, no locks, no allocation after
 * tw_decoder_new(). Every length is checked before it is read, and a MoldUDP64 packet's whole
 * block structure is validated before any session state changes, so a bad packet is counted and
 * changes nothing else.
 *
 * Sequence tracking, per MoldUDP64 session (shared by both lines); docs/design.md "Sequencing
 * rules" explains the rules, this is how they are kept:
 *   next_seq   one past the highest sequence number the session has accepted;
 *   seen       one bit per sequence number in [next_seq - TW_SEQ_WINDOW, next_seq): it arrived;
 *   frontier   below it every sequence number that did not arrive is "declared" (counted in a gap);
 *              in [frontier, next_seq) a missing one is "pending": the other line may still fill it;
 *   pending    when the holes in [frontier, next_seq) opened, so that they expire on time.
 * A gap is a maximal run of sequence numbers declared missing (gaps += 1, missing += its length).
 * With one line a hole is declared when it opens; with two when both lines have moved past it,
 * when it is older than the arbitration window, or on flush or end of session. A declared sequence
 * number that arrives after all is recovered. The bitmap is the truth about what arrived, so no
 * loss pattern on one line can make a copy from the other look like a duplicate.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "decode_internal.h"
#include "exchange_time.h"
#include "rerequest.h"
#include "tickwire.h"

#define SEEN_WORDS (TW_SEQ_WINDOW / 64)
/* A held message: its length (0: malformed, nothing to hand on), when it was received, and its
 * bytes. ITCH 5.0's longest message is 50 bytes; anything longer is malformed and never held. */
#define HOLD_SLOT 64
#define HOLD_TIME 1
#define HOLD_MESSAGE 9
#define NO_OWNER (-1)
#define HOLD_BYTES ((size_t)TW_SEQ_WINDOW * HOLD_SLOT)
_Static_assert(TW_SEQ_WINDOW % 64 == 0 && TW_SEQ_WINDOW > 0xffff,
               "the window must hold a whole MoldUDP64 packet and be whole 64-bit words");

/* Holes [previous record's end (or frontier), end) opened at opened_ns. */
struct tw_pending {
    uint64_t end;
    uint64_t opened_ns;
};

/* A packet whose sequence number jumped implausibly far, waiting for confirmation. */
struct tw_suspect {
    int held;
    uint8_t id[MOLD_SESSION_LEN];
    uint32_t line;
    uint64_t seq;       /* its sequence number */
    uint64_t count;     /* its message count (0 for a heartbeat or end of session) */
    uint64_t held_ns;   /* caller's monotonic clock when it came */
};

struct tw_session {
    int in_use;
    int ended;                        /* an end-of-session packet came: next_seq is final */
    uint8_t id[MOLD_SESSION_LEN];
    uint64_t start;                   /* lowest sequence number that can be missing */
    uint64_t next_seq;
    uint64_t frontier;
    int frontier_in_gap;              /* the sequence number just below the frontier was declared
                                         missing: a run declared next continues its gap */
    uint64_t line_next[TW_MAX_LINES]; /* per line: one past the highest sequence it has shown */
    uint64_t lost_end;                /* re-requesting: one past the last range given up, so that
                                         a range given up right after it is the same gap */
    uint64_t deliver_next;            /* in-order delivery: everything below it was handed on (or
                                         reported lost); what arrived above it is held */
    uint64_t last_used;               /* decoder's packet counter at the last packet: LRU order */
    uint64_t last_packet_ns;          /* caller's clock at the last accepted packet */
    struct tw_suspect suspect;
    uint32_t n_pending;
    struct tw_pending pending[TW_MAX_HOLES];
    uint64_t seen[SEEN_WORDS];
};

struct tw_decoder {
    struct tw_decoder_config cfg;
    struct tw_stats stats;
    uint64_t packet_counter;
    int joined;            /* a session was followed: any new session starts at 1 */
    uint32_t last_session; /* the previous packet's session: almost always the next one's too */
    struct tw_suspect new_session; /* a new session's first packet, held: it takes no slot yet */
    struct tw_session sessions[TW_MAX_SESSIONS];
    struct tw_exchange_day exchange_day; /* the day ITCH timestamps count from (exchange_time.c) */
    uint64_t now_ns;       /* the caller's monotonic clock at its latest call that gave one */
    struct tw_requester req; /* declared ranges being asked for again (rerequest.c) */
    uint8_t (*hold)[HOLD_SLOT]; /* in-order delivery: TW_SEQ_WINDOW slots by seq % window, or NULL */
    int32_t hold_owner;         /* the session whose messages are held (one at a time), or NO_OWNER */
    struct tw_books *books; /* fed every message in sequence order, told of every loss (book.c,
                               contract C9) by the in-order delivery below; NULL: none */
};

static const struct tw_clock no_clock = {0, 0};

/* ---- configuration ---------------------------------------------------------------------------- */

static int is_multicast_be(uint32_t addr_be)
{
    const uint8_t *b = (const uint8_t *)&addr_be; /* network order: b[0] is the first octet */
    return (b[0] & 0xf0u) == 0xe0u;               /* 224.0.0.0/4 */
}

static int config_error(const struct tw_decoder_config *cfg, char *err, size_t errlen)
{
    if (cfg == NULL) {
        snprintf(err, errlen, "no decoder config given");
        return 1;
    }
    if (cfg->n_lines < 1 || cfg->n_lines > TW_MAX_LINES) {
        snprintf(err, errlen, "n_lines is %u: configure 1 line (A) or 2 lines (A and B)",
                 cfg->n_lines);
        return 1;
    }
    for (uint32_t i = 0; i < cfg->n_lines; i++) {
        const struct tw_line_config *l = &cfg->lines[i];
        if (!is_multicast_be(l->group_be)) {
            snprintf(err, errlen, "line %u: group is not an IPv4 multicast address (224.0.0.0/4)", i);
            return 1;
        }
        if (l->port_be == 0) {
            snprintf(err, errlen, "line %u: UDP port 0 is not a valid port (use 1-65535)", i);
            return 1;
        }
        for (uint32_t j = 0; j < i; j++) {
            if (cfg->lines[j].group_be == l->group_be && cfg->lines[j].port_be == l->port_be) {
                snprintf(err, errlen,
                         "lines %u and %u have the same (group, port): A and B must differ", j, i);
                return 1;
            }
        }
    }
    if (tw_req_config_error(&cfg->rerequest, err, errlen))
        return 1;
    return tw_exchange_config_error(cfg, err, errlen);
}

/* mmap, not calloc: zero pages that cost nothing until a hole makes a message wait. */
static uint8_t (*hold_map(void))[HOLD_SLOT]
{
    void *hold = mmap(NULL, HOLD_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return hold == MAP_FAILED ? NULL : hold;
}

struct tw_decoder *tw_decoder_new(const struct tw_decoder_config *cfg, char *err, size_t errlen)
{
    if (config_error(cfg, err, errlen))
        return NULL;
    struct tw_decoder *d = calloc(1, sizeof(*d));
    if (d == NULL) {
        snprintf(err, errlen, "out of memory for a decoder (%zu bytes)", sizeof(*d));
        return NULL;
    }
    d->cfg = *cfg;
    d->hold_owner = NO_OWNER;
    if (cfg->deliver_in_order) {
        d->hold = hold_map();
        if (d->hold == NULL) {
            snprintf(err, errlen, "out of memory for the in-order hold buffer (%zu bytes)",
                     HOLD_BYTES);
            free(d);
            return NULL;
        }
    }
    if (d->cfg.max_seq_jump == 0)
        d->cfg.max_seq_jump = TW_DEFAULT_MAX_SEQ_JUMP;
    if (d->cfg.max_seq_rate == 0)
        d->cfg.max_seq_rate = TW_DEFAULT_MAX_SEQ_RATE;
    tw_exchange_day_init(&d->exchange_day, &d->cfg);
    tw_req_init(&d->req, &d->cfg.rerequest);
    d->stats.exchange_midnight_ns = d->exchange_day.midnight;
    d->stats.exchange_midnights_left = tw_exchange_midnights_left(&d->exchange_day);
    return d;
}

void tw_decoder_free(struct tw_decoder *d)
{
    if (d && d->hold)
        munmap(d->hold, HOLD_BYTES);
    free(d);
}

struct tw_stats *tw_decoder_stats(struct tw_decoder *d)
{
    return &d->stats;
}

/* Books take messages strictly in sequence order (contract C9): attaching them turns in-order
 * delivery on. The engine asks for it in the config (deliver_in_order) so that the buffer is there
 * from the start; otherwise it is mapped here, and without it the books get nothing. */
void tw_decoder_set_books(struct tw_decoder *d, struct tw_books *b)
{
    d->books = b;
    if (b != NULL && d->hold == NULL)
        d->hold = hold_map();
}

/* ---- counting --------------------------------------------------------------------------------- */

/* Counters saturate: a hostile sequence number may make `missing` absurd, never small again. */
static void add_sat(uint64_t *counter, uint64_t n)
{
    *counter = *counter > UINT64_MAX - n ? UINT64_MAX : *counter + n;
}

static void count_malformed(struct tw_decoder *d, int reason)
{
    d->stats.malformed++;
    d->stats.malformed_by_reason[reason]++;
}

static int two_lines(const struct tw_decoder *d)
{
    return d->cfg.n_lines == 2;
}

static uint64_t min_u64(uint64_t a, uint64_t b)
{
    return a < b ? a : b;
}

/* ---- the window of sequence numbers that arrived ---------------------------------------------- */

/* Lowest sequence number the bitmap holds while next_seq is `next`. */
static uint64_t window_low(uint64_t next)
{
    return next > TW_SEQ_WINDOW ? next - TW_SEQ_WINDOW : 0;
}

static int in_window(const struct tw_session *s, uint64_t seq)
{
    return seq >= window_low(s->next_seq) && seq < s->next_seq;
}

static int seen_get(const struct tw_session *s, uint64_t seq)
{
    return (int)(s->seen[(seq / 64) % SEEN_WORDS] >> (seq % 64) & 1u);
}

static void seen_set(struct tw_session *s, uint64_t seq)
{
    s->seen[(seq / 64) % SEEN_WORDS] |= 1ull << (seq % 64);
}

/* Make [from, to) "not arrived": the bits are reused from sequence numbers TW_SEQ_WINDOW lower. */
static void seen_clear(struct tw_session *s, uint64_t from, uint64_t to)
{
    if (to - from >= TW_SEQ_WINDOW) {
        memset(s->seen, 0, sizeof(s->seen));
        return;
    }
    for (; from < to && from % 64 != 0; from++)
        s->seen[(from / 64) % SEEN_WORDS] &= ~(1ull << (from % 64));
    for (; to - from >= 64; from += 64)
        s->seen[(from / 64) % SEEN_WORDS] = 0;
    for (; from < to; from++)
        s->seen[(from / 64) % SEEN_WORDS] &= ~(1ull << (from % 64));
}

/* ---- gap recovery: ranges asked for again, and given up ---------------------------------------- */

static int requesting(const struct tw_decoder *d)
{
    return d->cfg.rerequest.enabled != 0;
}

static uint32_t slot_of(const struct tw_decoder *d, const struct tw_session *s)
{
    return (uint32_t)(s - d->sessions);
}

/* Whether seq is known to have arrived: only the bitmap's window can say; anything outside it
 * counts as not arrived. */
static int arrived(const struct tw_session *s, uint64_t seq)
{
    return in_window(s, seq) && seen_get(s, seq);
}

/* First sequence number in [seq, end) with arrived() == want, or end. Whole 64-bit words at a
 * time where they are all the same. */
static uint64_t scan_for(const struct tw_session *s, uint64_t seq, uint64_t end, int want)
{
    const uint64_t low = window_low(s->next_seq);
    if (!want && seq < low)
        return seq; /* below the window: not arrived */
    if (seq < low)
        seq = low;
    uint64_t stop = min_u64(end, s->next_seq);
    while (seq < stop) {
        uint64_t word = s->seen[(seq / 64) % SEEN_WORDS];
        if (seq % 64 == 0 && stop - seq >= 64 && word == (want ? 0ull : ~0ull)) {
            seq += 64;
            continue;
        }
        if (seen_get(s, seq) == want)
            return seq;
        seq++;
    }
    return want ? end : (seq < end ? seq : end); /* at and past next_seq nothing arrived */
}

/* ---- delivery in order ------------------------------------------------------------------------
 *
 * Counting happens on arrival (a first copy is counted once, whatever its order); handing on to
 * the books happens in sequence order. Per session, deliver_next is the lowest sequence number not
 * handed on yet: a first copy at deliver_next is handed on at once, one above it is held (copied
 * into the hold buffer) until everything below it arrived or was given up. A hole that is given up
 * is reported lost in its place (the books mark themselves incomplete, contract C9), then the
 * held messages after it follow. A copy that arrives after its number was reported lost is
 * counted (recovered) but not handed on: the books already know they missed it. */

static int delivering(const struct tw_decoder *d)
{
    return d->hold != NULL;
}

/* The books' two hooks (C9): a message, in order; a range that will never come. */
static void hand_on(struct tw_decoder *d, const uint8_t *msg, uint32_t len, uint64_t receive_ns)
{
    d->stats.delivered++;
    if (d->books)
        tw_books_on_message(d->books, msg, len, receive_ns);
}

static void hand_on_loss(struct tw_decoder *d, struct tw_session *s, uint64_t first, uint64_t count)
{
    add_sat(&d->stats.delivered_lost, count);
    if (d->books)
        tw_books_on_loss(d->books, s->id, first, count);
}

static int valid_itch(const uint8_t *msg, uint32_t mlen)
{
    return mlen > 0 && tw_itch_length(msg[0]) == mlen;
}

static void hand_on_held(struct tw_decoder *d, struct tw_session *s, uint64_t seq)
{
    const uint8_t *slot = d->hold[seq % TW_SEQ_WINDOW];
    d->stats.delivery_held--;
    if (slot[0] == 0) {
        hand_on_loss(d, s, seq, 1); /* malformed: its content is lost to the books */
        return;
    }
    uint64_t receive_ns;
    memcpy(&receive_ns, slot + HOLD_TIME, sizeof(receive_ns));
    hand_on(d, slot + HOLD_MESSAGE, slot[0], receive_ns);
}

static uint64_t requested_from(const struct tw_decoder *d, const struct tw_session *s,
                               uint64_t seq);

/* Hand on what can be: held messages that are next, and holes below the frontier that nobody is
 * asking for any more (reported lost). Stops at a hole that is pending or being requested. */
static void deliver_in_order(struct tw_decoder *d, struct tw_session *s)
{
    if (!delivering(d))
        return;
    for (;;) {
        uint64_t seq = s->deliver_next;
        if (arrived(s, seq)) {
            hand_on_held(d, s, seq);
            s->deliver_next++;
            continue;
        }
        if (seq >= s->frontier)
            break; /* pending: a line may still fill it */
        uint64_t asked = requested_from(d, s, seq);
        if (asked == seq)
            break; /* a request may still fill it */
        uint64_t end = scan_for(s, seq, min_u64(asked, s->frontier), 1);
        hand_on_loss(d, s, seq, end - seq);
        s->deliver_next = end;
    }
    if (d->hold_owner == (int32_t)slot_of(d, s) && d->stats.delivery_held == 0)
        d->hold_owner = NO_OWNER;
}

/* Everything of s below `upto` still waiting is handed on now: held messages in order, holes
 * as lost. */
static void deliver_upto(struct tw_decoder *d, struct tw_session *s, uint64_t upto)
{
    if (!delivering(d))
        return;
    uint64_t seq = s->deliver_next;
    while (seq < upto) {
        if (arrived(s, seq)) {
            hand_on_held(d, s, seq++);
            continue;
        }
        uint64_t end = scan_for(s, seq, upto, 1);
        hand_on_loss(d, s, seq, end - seq);
        seq = end;
    }
    s->deliver_next = seq;
    if (d->hold_owner == (int32_t)slot_of(d, s) && d->stats.delivery_held == 0)
        d->hold_owner = NO_OWNER;
}

static void deliver_all(struct tw_decoder *d, struct tw_session *s)
{
    deliver_upto(d, s, s->next_seq);
}

/* A first copy of seq in s (seen bit already set): hand it on, hold it, or (when its number was
 * reported lost already) leave it. */
static void offer(struct tw_decoder *d, struct tw_session *s, uint64_t seq, const uint8_t *msg,
                  uint32_t mlen, uint64_t receive_ns)
{
    if (!delivering(d) || seq < s->deliver_next)
        return;
    int valid = valid_itch(msg, mlen);
    if (seq == s->deliver_next) {
        if (valid)
            hand_on(d, msg, mlen, receive_ns);
        else
            hand_on_loss(d, s, seq, 1);
        s->deliver_next++;
        if (d->stats.delivery_held > 0 || s->deliver_next < s->frontier)
            deliver_in_order(d, s);
        return;
    }
    int32_t me = (int32_t)slot_of(d, s);
    if (d->hold_owner != me && d->hold_owner != NO_OWNER) {
        /* One session holds at a time: the other one's holes are given up to the books. */
        add_sat(&d->stats.delivery_forced, 1);
        deliver_all(d, &d->sessions[d->hold_owner]);
    }
    d->hold_owner = me;
    uint8_t *slot = d->hold[seq % TW_SEQ_WINDOW];
    slot[0] = valid ? (uint8_t)mlen : 0;
    if (valid) {
        memcpy(slot + HOLD_TIME, &receive_ns, sizeof(receive_ns));
        memcpy(slot + HOLD_MESSAGE, msg, mlen);
    }
    d->stats.delivery_held++;
}

/* The books' loss point (C9) is in order: a range given up is reported when delivery reaches it. */
static void range_given_up(struct tw_decoder *d, struct tw_session *s, uint64_t first,
                           uint64_t count)
{
    (void)first;
    (void)count;
    deliver_in_order(d, s);
}

/* [first, end) of s is lost for good: each run in it that did not arrive is counted in missing,
 * and is a new gap unless it starts where the last range given up ended. */
static void give_up(struct tw_decoder *d, struct tw_session *s, uint64_t first, uint64_t end)
{
    for (uint64_t seq = scan_for(s, first, end, 0); seq < end; seq = scan_for(s, seq, end, 0)) {
        uint64_t run = seq;
        seq = scan_for(s, seq, end, 1);
        if (run != s->lost_end)
            add_sat(&d->stats.gaps, 1);
        add_sat(&d->stats.missing, seq - run);
        s->lost_end = seq;
        range_given_up(d, s, run, seq - run);
    }
}

/* Range i is gone (marked; compacted away by requests_tidy at the end of the operation). */
static void request_gone(struct tw_decoder *d, uint32_t i)
{
    tw_req_remove(&d->req, i);
    d->stats.requests_outstanding = d->req.n - d->req.gone;
}

static void requests_tidy(struct tw_decoder *d)
{
    tw_req_compact(&d->req);
    d->stats.requests_outstanding = d->req.n;
}

static void give_up_request(struct tw_decoder *d, uint32_t i)
{
    struct tw_req_range q = d->req.ranges[i];
    add_sat(&d->stats.gaps_given_up, 1);
    request_gone(d, i); /* first: delivery must see that nobody asks for it any more */
    give_up(d, &d->sessions[q.slot], q.first, q.end);
}

/* A declared run [first, end) of s: asked for again, or given up at once when it cannot be
 * (its bits are about to be reused, or the table is full). */
static void ask_for(struct tw_decoder *d, struct tw_session *s, uint64_t first, uint64_t end,
                    int requestable)
{
    if (!requestable) {
        give_up(d, s, first, end);
        return;
    }
    uint64_t rest = tw_req_add(&d->req, slot_of(d, s), first, end, d->now_ns);
    d->stats.requests_outstanding = d->req.n - d->req.gone;
    if (rest < end) {
        add_sat(&d->stats.request_overflow, end - rest);
        give_up(d, s, rest, end);
    }
}

/* Every range of s is given up (the session is forgotten, or a newer one replaced it). */
static void abandon_requests(struct tw_decoder *d, const struct tw_session *s)
{
    for (uint32_t i = 0; i < d->req.n; i++)
        if (d->req.ranges[i].slot == slot_of(d, s))
            give_up_request(d, i);
    requests_tidy(d);
}

/* The window moves up to `low`: what is still wanted below it is given up, while the bits can
 * still tell what arrived (a reply below the window could not be told from a duplicate). */
static void requests_leave_window(struct tw_decoder *d, struct tw_session *s, uint64_t low)
{
    for (uint32_t i = 0; i < d->req.n;) {
        struct tw_req_range *q = &d->req.ranges[i];
        if (q->slot != slot_of(d, s)) {
            i++;
            continue;
        }
        if (q->first >= low)
            break; /* a session's ranges rise: none after this one is below the window */
        if (q->end <= low) {
            give_up_request(d, i++);
            continue;
        }
        add_sat(&d->stats.gaps_given_up, 1);
        give_up(d, s, q->first, low);
        q->first = low;
        i++;
    }
}

/* seq of s, below the frontier, just arrived from a line: 1 if it was asked for (rather than
 * counted missing). A range always starts at a number still missing, so the one that began with
 * seq moves on past what has arrived, and is forgotten when nothing is left. */
static int fill_request(struct tw_decoder *d, const struct tw_session *s, uint64_t seq)
{
    int i = requesting(d) ? tw_req_find(&d->req, slot_of(d, s), seq) : -1;
    if (i < 0)
        return 0;
    struct tw_req_range *q = &d->req.ranges[i];
    if (q->first == seq)
        q->first = scan_for(s, seq, q->end, 0);
    if (q->first >= q->end)
        request_gone(d, (uint32_t)i);
    return 1;
}

/* seq itself if a range of s asks for it, else the lowest first number of a range above it, else
 * UINT64_MAX. A session's ranges rise in table order: the first one ending past seq decides. */
static uint64_t requested_from(const struct tw_decoder *d, const struct tw_session *s, uint64_t seq)
{
    for (uint32_t i = 0; i < d->req.n && requesting(d); i++) {
        const struct tw_req_range *q = &d->req.ranges[i];
        if (q->slot == slot_of(d, s) && q->end > seq)
            return q->first <= seq ? seq : q->first;
    }
    return UINT64_MAX;
}

/* ---- declaring holes -------------------------------------------------------------------------- */

static void drop_timing_records(struct tw_session *s)
{
    uint32_t done = 0; /* timing records now wholly below the frontier */
    while (done < s->n_pending && s->pending[done].end <= s->frontier)
        done++;
    memmove(&s->pending[0], &s->pending[done], (s->n_pending - done) * sizeof(s->pending[0]));
    s->n_pending -= done;
}

/* declare_upto() when re-requesting: each run that did not arrive is asked for (ask_for); it is
 * counted in gaps and missing only if it is given up. */
static uint64_t declare_for_request(struct tw_decoder *d, struct tw_session *s, uint64_t to,
                                    int requestable)
{
    uint64_t declared = 0, end = min_u64(to, s->next_seq);
    for (uint64_t seq = scan_for(s, s->frontier, end, 0); seq < end;
         seq = scan_for(s, seq, end, 0)) {
        uint64_t run = seq;
        seq = scan_for(s, seq, end, 1);
        declared += seq - run;
        ask_for(d, s, run, seq, requestable);
    }
    if (to > end) /* above next_seq: the window moves past them before any line showed them */
        give_up(d, s, end > s->frontier ? end : s->frontier, to);
    s->frontier = to;
    s->frontier_in_gap = 0;
    drop_timing_records(s);
    deliver_in_order(d, s);
    return declared;
}

/* Move the frontier up to `to`: every sequence number in [frontier, to) that did not arrive is
 * declared missing, each maximal run of them one gap (a run that continues one declared just below
 * the frontier is the same gap). Sequence numbers at or above next_seq never arrived. Returns how
 * many of those below next_seq it declared. */
static uint64_t declare_upto(struct tw_decoder *d, struct tw_session *s, uint64_t to,
                             int requestable)
{
    if (to <= s->frontier)
        return 0;
    if (requesting(d) && !(two_lines(d) && s->n_pending == 0 && to <= s->next_seq))
        return declare_for_request(d, s, to, requestable);
    if (two_lines(d) && s->n_pending == 0 && to <= s->next_seq) {
        /* With two lines every hole has a timing record until the frontier passes it: with none
         * left, everything below next_seq arrived or is declared already. The steady state, free.
         * (With one line a hole is declared as it opens, by this very function.) */
        s->frontier = to;
        s->frontier_in_gap = 0;
        return 0;
    }
    uint64_t seq = s->frontier, from_bits = 0;
    int in_run = seq > s->start && (in_window(s, seq - 1) ? !seen_get(s, seq - 1) : s->frontier_in_gap);
    uint64_t bits_end = min_u64(to, s->next_seq);
    for (; seq < bits_end; seq++) {
        uint64_t word = s->seen[(seq / 64) % SEEN_WORDS];
        if (seq % 64 == 0 && bits_end - seq >= 64 && (word == ~0ull || word == 0)) {
            /* 64 that all arrived (the common case), or none did: a word at a time */
            if (word == 0) {
                if (!in_run)
                    add_sat(&d->stats.gaps, 1);
                from_bits += 64;
            }
            in_run = word == 0;
            seq += 63;
            continue;
        }
        if (seen_get(s, seq)) {
            in_run = 0;
            continue;
        }
        if (!in_run)
            add_sat(&d->stats.gaps, 1);
        in_run = 1;
        from_bits++;
    }
    add_sat(&d->stats.missing, from_bits);
    if (to > bits_end) { /* above next_seq: one run, all missing */
        if (!in_run)
            add_sat(&d->stats.gaps, 1);
        add_sat(&d->stats.missing, to - bits_end);
        in_run = 1;
    }
    s->frontier = to;
    s->frontier_in_gap = in_run;
    drop_timing_records(s);
    deliver_in_order(d, s);
    return from_bits;
}

/* next_seq moves up to `to`. Pending sequence numbers that would leave the bitmap are declared
 * first (early, counted in window_overflow if any was missing); [next_seq, to) is not arrived. */
static void extend_to(struct tw_decoder *d, struct tw_session *s, uint64_t to)
{
    if (to <= s->next_seq)
        return;
    uint64_t low = window_low(to);
    if (requesting(d))
        requests_leave_window(d, s, low);
    if (low > s->frontier) {
        /* their bits are about to be reused: too late to ask for them */
        if (declare_upto(d, s, min_u64(low, s->next_seq), 0) > 0 && two_lines(d))
            add_sat(&d->stats.window_overflow, 1);
        declare_upto(d, s, low, 0);
    }
    if (delivering(d) && s->deliver_next < low)
        deliver_upto(d, s, low); /* never reached: all below low is arrived or lost by now */
    seen_clear(s, s->next_seq > low ? s->next_seq : low, to);
    s->next_seq = to;
}

/* Nothing arrived in [next_seq, to): a hole. With one line no other line can fill it: a gap now.
 * With two it waits; its timing record shares the newest one's when that one opened at the same
 * time or the table is full (so it may wait longer than the window, never less). */
static void open_hole(struct tw_decoder *d, struct tw_session *s, uint64_t to,
                      const struct tw_clock *now)
{
    extend_to(d, s, to);
    if (!two_lines(d)) {
        declare_upto(d, s, to, 1);
        return;
    }
    if (s->frontier >= to)
        return; /* the whole hole left the window at once: declared */
    struct tw_pending *last = s->n_pending ? &s->pending[s->n_pending - 1] : NULL;
    if (last != NULL && (last->opened_ns == now->mono_ns || s->n_pending == TW_MAX_HOLES)) {
        last->end = to;
        last->opened_ns = now->mono_ns;
        return;
    }
    s->pending[s->n_pending++] = (struct tw_pending){.end = to, .opened_ns = now->mono_ns};
}

static int expired(const struct tw_decoder *d, const struct tw_pending *p,
                   const struct tw_clock *now)
{
    return now->mono_ns >= p->opened_ns && now->mono_ns - p->opened_ns >= d->cfg.arbitration_window_ns;
}

/* Declare the pending holes no line can be expected to fill any more: both lines have moved past
 * them, or they waited longer than the arbitration window. */
static void settle_holes(struct tw_decoder *d, struct tw_session *s, const struct tw_clock *now)
{
    if (!two_lines(d))
        return; /* with one line every hole is declared when it opens */
    while (s->n_pending > 0 && expired(d, &s->pending[0], now))
        declare_upto(d, s, s->pending[0].end, 1);
    declare_upto(d, s, min_u64(min_u64(s->line_next[0], s->line_next[1]), s->next_seq), 1);
}

static void declare_all_pending(struct tw_decoder *d, struct tw_session *s)
{
    declare_upto(d, s, s->next_seq, 1);
}

/* ---- sessions --------------------------------------------------------------------------------- */

static struct tw_session *session_find(struct tw_decoder *d, const uint8_t *id)
{
    struct tw_session *last = &d->sessions[d->last_session];
    if (last->in_use && memcmp(last->id, id, MOLD_SESSION_LEN) == 0)
        return last;
    for (uint32_t i = 0; i < TW_MAX_SESSIONS; i++) {
        struct tw_session *s = &d->sessions[i];
        if (s->in_use && memcmp(s->id, id, MOLD_SESSION_LEN) == 0)
            return s;
    }
    return NULL;
}

/* A free slot, or else the least recently used session, whose pending holes are declared. */
static struct tw_session *session_slot(struct tw_decoder *d)
{
    struct tw_session *lru = &d->sessions[0];
    for (uint32_t i = 0; i < TW_MAX_SESSIONS; i++) {
        struct tw_session *s = &d->sessions[i];
        if (!s->in_use)
            return s;
        if (s->last_used < lru->last_used)
            lru = s;
    }
    declare_all_pending(d, lru);
    abandon_requests(d, lru); /* nobody will remember what its replies are for */
    deliver_all(d, lru);
    d->stats.sessions_replaced++;
    return lru;
}

/* The session with this id, or a new one. The first session we follow starts where we join it
 * (first_seq: what came before is not a gap); one that appears after it is a new session, which
 * starts at sequence number 1. */
static struct tw_session *session_for(struct tw_decoder *d, const uint8_t *id, uint64_t first_seq,
                                      const struct tw_clock *now)
{
    struct tw_session *s = session_find(d, id);
    if (s == NULL) {
        s = session_slot(d);
        /* The exchange moved on to a new session: an ended one will not be served again. */
        for (uint32_t i = 0; i < TW_MAX_SESSIONS && requesting(d); i++)
            if (d->sessions[i].in_use && d->sessions[i].ended)
                abandon_requests(d, &d->sessions[i]);
        memset(s, 0, sizeof(*s));
        s->in_use = 1;
        memcpy(s->id, id, MOLD_SESSION_LEN);
        s->start = d->joined ? 1 : first_seq;
        s->next_seq = s->frontier = s->deliver_next = s->start;
        s->last_packet_ns = now->mono_ns;
        d->joined = 1;
    }
    d->last_session = (uint32_t)(s - d->sessions);
    s->last_used = ++d->packet_counter;
    return s;
}

/* ---- implausible jumps ------------------------------------------------------------------------ */

/* How far ahead a line can plausibly be `silence_ns` after the session's last packet. */
static uint64_t plausible_jump(const struct tw_decoder *d, uint64_t silence_ns)
{
    unsigned __int128 carried = (unsigned __int128)d->cfg.max_seq_rate * silence_ns / 1000000000u;
    unsigned __int128 total = carried + d->cfg.max_seq_jump;
    return total > UINT64_MAX ? UINT64_MAX : (uint64_t)total;
}

static uint64_t since(uint64_t then_ns, const struct tw_clock *now)
{
    return now->mono_ns > then_ns ? now->mono_ns - then_ns : 0;
}

/* The held suspect jump is confirmed by this packet of the same session: the other line shows the
 * same jump (at or a little past the suspect's sequence number), or the same line continues from
 * the suspect packet (a repeat of it confirms nothing). */
static int confirms_suspect(const struct tw_decoder *d, const struct tw_suspect *j,
                            const uint8_t *id, uint32_t line, uint64_t seq, uint64_t count,
                            const struct tw_clock *now)
{
    if (!j->held || memcmp(j->id, id, MOLD_SESSION_LEN) != 0 || seq < j->seq ||
        seq - j->seq > plausible_jump(d, since(j->held_ns, now)))
        return 0;
    if (line != j->line)
        return 1;
    return seq >= j->seq + j->count && !(seq == j->seq && count == j->count);
}

/* 1 if the packet (session id, seq, count messages) must be held back in j: from `next`, where its
 * session stood at last_ns, it jumps implausibly far and confirms no earlier suspect. Either way
 * the outcome is counted. */
static int hold_suspect(struct tw_decoder *d, struct tw_suspect *j, uint64_t next, uint64_t last_ns,
                        const uint8_t *id, uint32_t line, uint64_t seq, uint64_t count,
                        const struct tw_clock *now)
{
    if (seq <= next || seq - next <= plausible_jump(d, since(last_ns, now)))
        return 0;
    if (confirms_suspect(d, j, id, line, seq, count, now)) {
        j->held = 0;
        add_sat(&d->stats.confirmed_jumps, 1);
        return 0;
    }
    *j = (struct tw_suspect){.held = 1, .line = line, .seq = seq, .count = count,
                             .held_ns = now->mono_ns};
    memcpy(j->id, id, MOLD_SESSION_LEN);
    add_sat(&d->stats.suspect_jumps, 1);
    return 1;
}

/* ---- MoldUDP64 and ITCH ----------------------------------------------------------------------- */

/* Walk the blocks without touching any state: 0 if all `count` fit in the packet. */
static int blocks_fit(const uint8_t *p, uint32_t len, uint32_t count)
{
    uint32_t off = MOLD_HEADER_LEN;
    for (uint32_t i = 0; i < count; i++) {
        if (len - off < MOLD_BLOCK_LEN_SIZE)
            return 0;
        uint32_t mlen = rd_be16(p + off);
        off += MOLD_BLOCK_LEN_SIZE;
        if (len - off < mlen)
            return 0;
        off += mlen;
    }
    return 1;
}

/* Real time passed the exchange's next midnight: timestamps count from the new day. One compare
 * while the day lasts. */
static void follow_exchange_day(struct tw_decoder *d, const struct tw_clock *now)
{
    if (tw_exchange_day_follow(&d->exchange_day, now->real_ns)) {
        d->stats.exchange_midnight_ns = d->exchange_day.midnight;
        d->stats.exchange_midnights_left = tw_exchange_midnights_left(&d->exchange_day);
    }
}

static void record_exchange_latency(struct tw_decoder *d, uint32_t line, const uint8_t *msg,
                                    const struct tw_clock *now)
{
    uint64_t latency;
    follow_exchange_day(d, now);
    if (!tw_exchange_latency(&d->exchange_day, rd_be48(msg + ITCH_TIMESTAMP_OFFSET), now->real_ns,
                             &latency)) {
        d->stats.exchange_latency_skipped++; /* clocks disagree, or the day is unknown */
        return;
    }
    tw_hist_record(&d->stats.hist[TW_STAGE_EXCHANGE_TO_ENGINE][line], latency);
}

/* The first copy of a sequence number: check the ITCH message and count it. A malformed one still
 * used up its sequence number. */
static void take_message(struct tw_decoder *d, uint32_t line, const uint8_t *msg, uint32_t mlen,
                         const struct tw_clock *now)
{
    d->stats.line_first_messages[line]++;
    uint32_t want = mlen > 0 ? tw_itch_length(msg[0]) : 0;
    if (want == 0 || mlen != want) {
        /* an empty block has no type at all */
        count_malformed(d, want == 0 ? TW_MAL_ITCH_UNKNOWN_TYPE : TW_MAL_ITCH_BAD_LENGTH);
        return;
    }
    d->stats.messages++;
    d->stats.messages_by_type[msg[0]]++; /* known types are all below 128 */
    record_exchange_latency(d, line, msg, now);
}

/* Sort each message of a packet that passed the jump check: a first copy is decoded, anything
 * else counted. The bitmap decides inside the window; an older copy cannot be told from a first
 * one, and a first copy is never thrown away, so it is taken and counted as beyond_window. */
static void take_messages(struct tw_decoder *d, struct tw_session *s, uint32_t line,
                          const uint8_t *p, uint64_t seq, uint32_t count,
                          const struct tw_clock *now)
{
    if (!s->ended)
        extend_to(d, s, seq + count); /* the packet's own messages: arriving, not a hole */
    const uint64_t low = window_low(s->next_seq);
    uint32_t off = MOLD_HEADER_LEN;
    for (uint32_t i = 0; i < count; i++, seq++) {
        uint32_t mlen = rd_be16(p + off);
        const uint8_t *msg = p + off + MOLD_BLOCK_LEN_SIZE;
        off += MOLD_BLOCK_LEN_SIZE + mlen;

        if (seq >= s->next_seq) {
            add_sat(&d->stats.after_end, 1); /* only an ended session stops short of a packet */
            continue;
        }
        if (seq < low) {
            add_sat(&d->stats.beyond_window, 1);
        } else {
            if (seen_get(s, seq)) {
                d->stats.duplicates++;
                continue;
            }
            seen_set(s, seq);
            if (seq < s->frontier && seq >= s->start && !fill_request(d, s, seq))
                add_sat(&d->stats.recovered, 1); /* it was counted missing */
        }
        take_message(d, line, msg, mlen, now);
        offer(d, s, seq, msg, mlen, now->mono_ns);
    }
}

static int decode_packet(struct tw_decoder *d, uint32_t line, const uint8_t *p, uint32_t len,
                         uint32_t wire_bytes, uint64_t kernel_rx_ns, const struct tw_clock *now)
{
    struct tw_stats *st = &d->stats;
    st->packets++;
    st->bytes += wire_bytes;
    st->line_packets[line]++;
    st->last_packet_mono_ns = now->mono_ns;

    if (len < MOLD_HEADER_LEN) {
        count_malformed(d, TW_MAL_MOLD_HEADER);
        return TW_FRAME_MALFORMED;
    }
    uint64_t seq = rd_be64(p + MOLD_SEQ_OFFSET);
    uint32_t count = rd_be16(p + MOLD_COUNT_OFFSET);
    int control = count == MOLD_HEARTBEAT_COUNT || count == MOLD_END_OF_SESSION_COUNT;
    uint32_t data_count = control ? 0 : count;
    if (seq > UINT64_MAX - data_count) {
        count_malformed(d, TW_MAL_MOLD_HEADER); /* sequence numbers would wrap */
        return TW_FRAME_MALFORMED;
    }
    if (!blocks_fit(p, len, data_count)) {
        count_malformed(d, TW_MAL_MOLD_TRUNCATED);
        return TW_FRAME_MALFORMED;
    }

    /* Valid: from here on state changes. Bytes after the last block are ignored. */
    d->now_ns = now->mono_ns;
    if (kernel_rx_ns != 0 && now->mono_ns >= kernel_rx_ns)
        tw_hist_record(&st->hist[TW_STAGE_KERNEL_TO_ENGINE][line], now->mono_ns - kernel_rx_ns);

    if (count == MOLD_HEARTBEAT_COUNT)
        st->heartbeats++;
    else if (count == MOLD_END_OF_SESSION_COUNT)
        st->end_of_session++;

    /* A jump is measured from where the session stands; a new one (after the first we joined)
     * stands at 1. A suspect new session takes no slot, so it cannot evict a real one. */
    struct tw_session *s = session_find(d, p);
    int new_session = s == NULL;
    if (new_session && d->joined &&
        hold_suspect(d, &d->new_session, 1, now->mono_ns, p, line, seq, data_count, now))
        return TW_FRAME_DATA;
    s = session_for(d, p, seq, now);

    if (s->ended) {
        /* Settled: copies of what came before the end still count; nothing past it opens a hole. */
        take_messages(d, s, line, p, seq, data_count, now);
        return TW_FRAME_DATA;
    }
    if (!new_session && hold_suspect(d, &s->suspect, s->next_seq, s->last_packet_ns, p, line, seq,
                                     data_count, now))
        return TW_FRAME_DATA; /* the session does not move until the jump is confirmed */
    s->last_packet_ns = now->mono_ns;

    /* A heartbeat or end of session carries the next sequence number: a jump reveals a gap. */
    if (seq > s->next_seq)
        open_hole(d, s, seq, now);
    take_messages(d, s, line, p, seq, data_count, now);
    if (!two_lines(d))
        s->frontier = s->next_seq; /* its holes were declared when they opened: none is pending */
    if (seq + data_count > s->line_next[line])
        s->line_next[line] = seq + data_count;
    if (count == MOLD_END_OF_SESSION_COUNT) {
        declare_all_pending(d, s); /* no line will send this session anything new */
        s->ended = 1;
        s->suspect.held = 0;
    }
    settle_holes(d, s, now);
    return TW_FRAME_DATA;
}

int tw_decode_mold(struct tw_decoder *d, uint32_t line, const uint8_t *payload, uint32_t len,
                   uint64_t kernel_rx_ns, const struct tw_clock *now)
{
    if (line >= d->cfg.n_lines)
        return -1; /* a caller's bug, not a packet's fault: counts nothing */
    return decode_packet(d, line, payload, len, len, kernel_rx_ns, now ? now : &no_clock);
}

/* ---- Ethernet / IPv4 / UDP -------------------------------------------------------------------- */

static int line_of(const struct tw_decoder *d, uint32_t src_be, uint32_t dst_be, uint16_t port_be)
{
    for (uint32_t i = 0; i < d->cfg.n_lines; i++) {
        const struct tw_line_config *l = &d->cfg.lines[i];
        if (l->group_be == dst_be && l->port_be == port_be &&
            (l->source_be == 0 || l->source_be == src_be))
            return (int)i;
    }
    return -1;
}

static int group_configured(const struct tw_decoder *d, uint32_t dst_be)
{
    for (uint32_t i = 0; i < d->cfg.n_lines; i++)
        if (d->cfg.lines[i].group_be == dst_be)
            return 1;
    return 0;
}

static int frame_malformed(struct tw_decoder *d, int reason)
{
    count_malformed(d, reason);
    return TW_FRAME_MALFORMED;
}

static int frame_unmatched(struct tw_decoder *d)
{
    d->stats.unmatched++;
    return TW_FRAME_UNMATCHED;
}

int tw_decode_frame(struct tw_decoder *d, const uint8_t *frame, uint32_t len,
                    uint64_t kernel_rx_ns, const struct tw_clock *now)
{
    d->stats.frames++;

    /* Ethernet, then up to two VLAN tags (802.1ad outer, 802.1Q inner, in any mix) */
    if (len < ETH_HEADER_LEN)
        return frame_malformed(d, TW_MAL_FRAME_SHORT);
    uint32_t off = ETH_TYPE_OFFSET;
    uint16_t ethertype = rd_be16(frame + off);
    for (uint32_t tags = 0; tags < MAX_VLAN_TAGS; tags++) {
        if (ethertype != ETH_TYPE_VLAN && ethertype != ETH_TYPE_QINQ)
            break;
        off += VLAN_TAG_LEN;
        if (len < off + 2)
            return frame_malformed(d, TW_MAL_FRAME_SHORT);
        ethertype = rd_be16(frame + off);
    }
    off += 2;
    if (ethertype != ETH_TYPE_IPV4)
        return frame_unmatched(d); /* ARP, IPv6, a third tag...: not a feed packet */

    /* IPv4: the header must be whole; the frame may be longer (Ethernet padding), never shorter */
    const uint8_t *ip = frame + off;
    uint32_t avail = len - off;
    if (avail < IPV4_MIN_HEADER_LEN || ip[0] >> 4 != 4)
        return frame_malformed(d, TW_MAL_IP_HEADER);
    uint32_t ihl = (uint32_t)(ip[0] & 0x0fu) * 4u;
    uint32_t total = rd_be16(ip + 2);
    if (ihl < IPV4_MIN_HEADER_LEN || total < ihl || total > avail)
        return frame_malformed(d, TW_MAL_IP_HEADER);
    if (ip[9] != IPV4_PROTO_UDP)
        return frame_unmatched(d);
    uint32_t src_be, dst_be;
    memcpy(&src_be, ip + 12, 4);
    memcpy(&dst_be, ip + 16, 4);
    if (rd_be16(ip + 6) & (IPV4_FLAG_MF | IPV4_FRAG_OFFSET_MASK)) {
        /* Feeds never fragment; a fragment of someone else's traffic is simply not ours. */
        return group_configured(d, dst_be) ? frame_malformed(d, TW_MAL_IP_FRAGMENT)
                                           : frame_unmatched(d);
    }

    /* UDP: its length must be exactly what IPv4 carries */
    const uint8_t *udp = ip + ihl;
    uint32_t ip_payload = total - ihl;
    if (ip_payload < UDP_HEADER_LEN || rd_be16(udp + 4) != ip_payload)
        return frame_malformed(d, TW_MAL_UDP_HEADER);
    uint16_t port_be;
    memcpy(&port_be, udp + 2, 2);
    int line = line_of(d, src_be, dst_be, port_be);
    if (line < 0)
        return frame_unmatched(d);

    return decode_packet(d, (uint32_t)line, udp + UDP_HEADER_LEN, ip_payload - UDP_HEADER_LEN, len,
                         kernel_rx_ns, now ? now : &no_clock);
}

/* ---- time ------------------------------------------------------------------------------------- */

void tw_decoder_tick(struct tw_decoder *d, const struct tw_clock *now)
{
    if (now) {
        follow_exchange_day(d, now);
        d->now_ns = now->mono_ns;
    }
    for (uint32_t i = 0; i < TW_MAX_SESSIONS; i++)
        if (d->sessions[i].in_use)
            settle_holes(d, &d->sessions[i], now ? now : &no_clock);
}

void tw_decoder_flush(struct tw_decoder *d)
{
    for (uint32_t i = 0; i < TW_MAX_SESSIONS; i++)
        if (d->sessions[i].in_use)
            declare_all_pending(d, &d->sessions[i]);
    for (uint32_t i = 0; i < d->req.n; i++) /* the end of the run: no answer can come now */
        if (d->req.ranges[i].slot != TW_REQ_GONE)
            give_up_request(d, i);
    requests_tidy(d);
    for (uint32_t i = 0; i < TW_MAX_SESSIONS; i++)
        if (d->sessions[i].in_use)
            deliver_all(d, &d->sessions[i]);
}

/* A sequence number in [frontier, next_seq) that did not arrive: a hole still waiting for a line.
 * Holes only open with a timing record, so nothing past the newest record's end is missing, and
 * with no record nothing is (declare_upto's steady state). The frontier never falls below the
 * bitmap's window, so the bits there are the truth; whole words are checked at a time. */
static int session_pending(const struct tw_session *s)
{
    if (s->n_pending == 0)
        return 0;
    uint64_t end = min_u64(s->pending[s->n_pending - 1].end, s->next_seq);
    for (uint64_t seq = s->frontier; seq < end; seq++) {
        if (seq % 64 == 0 && end - seq >= 64) {
            if (s->seen[(seq / 64) % SEEN_WORDS] != ~0ull)
                return 1;
            seq += 63;
            continue;
        }
        if (!seen_get(s, seq))
            return 1;
    }
    return 0;
}

int tw_decoder_pending(const struct tw_decoder *d)
{
    if (!two_lines(d))
        return 0; /* with one line every hole is declared when it opens */
    for (uint32_t i = 0; i < TW_MAX_SESSIONS; i++)
        if (d->sessions[i].in_use && session_pending(&d->sessions[i]))
            return 1;
    return 0;
}

/* ---- re-requests ------------------------------------------------------------------------------ */

static void wr_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

int tw_decoder_requests_outstanding(const struct tw_decoder *d)
{
    return d->req.n > d->req.gone;
}

/* Trim the ranges of s to what is still missing; forget those that are whole again. */
static void settle_requests(struct tw_decoder *d, const struct tw_session *s)
{
    for (uint32_t i = 0; i < d->req.n; i++) {
        struct tw_req_range *q = &d->req.ranges[i];
        if (q->slot != slot_of(d, s))
            continue;
        q->first = scan_for(s, q->first, q->end, 0);
        if (q->first >= q->end)
            request_gone(d, i);
    }
    requests_tidy(d);
}

/* Walk the table in declaration order: drop what has arrived meanwhile (from a line or a reply),
 * count the waits that ran out, give up what ran out of attempts, and return the first range due
 * for a send while the rate allows one. */
int tw_decoder_next_request(struct tw_decoder *d, const struct tw_clock *now, uint8_t *out)
{
    now = now ? now : &no_clock;
    d->now_ns = now->mono_ns;
    struct tw_requester *r = &d->req;
    if (r->n == 0 || now->mono_ns < r->wake_ns)
        return 0; /* nothing can be due yet: the poll thread asks every loop, this is its cost */
    if (r->gone > 0 && !(r->scan_from > 0 && r->scan_now == now->mono_ns))
        requests_tidy(d); /* not in the middle of this moment's pass: its indexes must hold */
    uint64_t wake = UINT64_MAX;
    uint32_t i = 0;
    if (r->scan_from > 0 && r->scan_now == now->mono_ns) { /* the rest of this moment's pass */
        i = r->scan_from;
        wake = r->scan_wake;
    }
    int may_send = 1;
    for (; i < r->n; i++) {
        struct tw_req_range *q = &r->ranges[i];
        if (q->slot == TW_REQ_GONE)
            continue;
        struct tw_session *s = &d->sessions[q->slot];
        q->first = scan_for(s, q->first, q->end, 0);
        if (q->first >= q->end) {
            request_gone(d, i); /* all of it arrived */
            continue;
        }
        int was_timed_out = q->timed_out;
        int step = tw_req_next_step(r, i, now->mono_ns);
        if (q->timed_out && !was_timed_out)
            add_sat(&d->stats.requests_timed_out, 1);
        if (step == TW_REQ_GIVE_UP) {
            give_up_request(d, i);
            continue;
        }
        if (step == TW_REQ_WAIT)
            wake = min_u64(wake, tw_req_wait_ends(r, i));
        if (step == TW_REQ_SEND && may_send && !tw_req_take_credit(r, now->mono_ns)) {
            may_send = 0; /* the rate is spent: the rest wait, in order */
            wake = min_u64(wake, tw_req_credit_at(r, now->mono_ns));
        }
        if (step == TW_REQ_SEND && may_send) {
            uint64_t count = q->end - q->first;
            memcpy(out, s->id, MOLD_SESSION_LEN);
            wr_be64(out + MOLD_SEQ_OFFSET, q->first);
            out[MOLD_COUNT_OFFSET] = (uint8_t)(count >> 8);
            out[MOLD_COUNT_OFFSET + 1] = (uint8_t)count;
            tw_req_sent(r, i, now->mono_ns);
            add_sat(&d->stats.requests_sent, 1);
            add_sat(&d->stats.messages_requested, count);
            r->wake_ns = 0; /* the caller asks again at once: resume after this range */
            r->scan_from = i + 1;
            r->scan_now = now->mono_ns;
            r->scan_wake = min_u64(wake, tw_req_wait_ends(r, i));
            return 1;
        }
    }
    requests_tidy(d);
    r->wake_ns = wake;
    r->scan_from = 0;
    return 0;
}

/* A message a reply brought for a range that asked for it: the first copy of its sequence number
 * (the caller checked), checked and counted like a line's. No exchange latency (counted in
 * exchange_latency_skipped): the time it spent lost is measured from its declaration instead
 * (stats.recovery). */
static void take_recovered(struct tw_decoder *d, struct tw_req_range *q, const uint8_t *msg,
                           uint32_t mlen, const struct tw_clock *now)
{
    add_sat(&d->stats.recovered_by_request, 1);
    q->answered = 1;
    if (now->mono_ns >= q->declared_ns)
        tw_hist_record(&d->stats.recovery, now->mono_ns - q->declared_ns);
    uint32_t want = mlen > 0 ? tw_itch_length(msg[0]) : 0;
    if (want == 0) {
        count_malformed(d, TW_MAL_ITCH_UNKNOWN_TYPE);
        return;
    }
    if (mlen != want) {
        count_malformed(d, TW_MAL_ITCH_BAD_LENGTH);
        return;
    }
    d->stats.messages++;
    d->stats.messages_by_type[msg[0]]++;
    d->stats.exchange_latency_skipped++; /* its latency is stats.recovery's, not a line's */
}

static int reject_reply(struct tw_decoder *d)
{
    add_sat(&d->stats.reply_rejected, 1);
    return TW_FRAME_MALFORMED;
}

/* A reply never moves a session: it can only fill what an outstanding request asked for, so a
 * wrong session, a forged sequence number or a flood changes nothing but its own counters. */
int tw_decode_reply(struct tw_decoder *d, const uint8_t *p, uint32_t len, const struct tw_clock *now)
{
    now = now ? now : &no_clock;
    add_sat(&d->stats.reply_packets, 1);
    if (len < MOLD_HEADER_LEN)
        return reject_reply(d);
    uint64_t seq = rd_be64(p + MOLD_SEQ_OFFSET);
    uint32_t count = rd_be16(p + MOLD_COUNT_OFFSET);
    if (count == MOLD_HEARTBEAT_COUNT || count == MOLD_END_OF_SESSION_COUNT ||
        seq > UINT64_MAX - count || !blocks_fit(p, len, count))
        return reject_reply(d); /* an answer carries messages, whole */
    struct tw_session *s = requesting(d) ? session_find(d, p) : NULL;
    if (s == NULL)
        return reject_reply(d); /* no session of ours: nothing we asked for */
    d->now_ns = now->mono_ns;
    uint32_t off = MOLD_HEADER_LEN;
    int i = -1;
    for (uint32_t k = 0; k < count; k++, seq++) {
        uint32_t mlen = rd_be16(p + off);
        const uint8_t *msg = p + off + MOLD_BLOCK_LEN_SIZE;
        off += MOLD_BLOCK_LEN_SIZE + mlen;
        struct tw_req_range *q = i >= 0 ? &d->req.ranges[i] : NULL;
        if (q == NULL || seq < q->first || seq >= q->end)
            i = tw_req_find(&d->req, slot_of(d, s), seq);
        if (i < 0) {
            add_sat(&d->stats.reply_unsolicited, 1);
            continue;
        }
        if (seen_get(s, seq)) { /* ranges lie inside the window: the bit is the truth */
            d->stats.duplicates++;
            continue;
        }
        seen_set(s, seq);
        take_recovered(d, &d->req.ranges[i], msg, mlen, now);
        offer(d, s, seq, msg, mlen, now->mono_ns);
        d->req.wake_ns = 0; /* answered: the rest of the range is due at once */
        d->req.scan_from = 0;
    }
    settle_requests(d, s);
    return TW_FRAME_DATA;
}
