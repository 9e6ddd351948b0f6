/* fuzz_decode.c - libFuzzer harness for the decoder (decode.c, rerequest.c, exchange_time.c, itch.c,
 * hist.c) and the order books it feeds (book.c).
 *
 * Build and run with native/fuzz/run.sh. An input is a script for one decoder:
 *
 *   byte 0        config: bit 0 set = two lines (A and B), else line A only;
 *                 bit 1 set = tight jump bounds (max_seq_jump 100, max_seq_rate 10^6/s), so short
 *                 scripts reach suspect and confirmed jumps too;
 *                 bit 2 set = books attached (64 orders, 8 instruments, no stream: small, so
 *                 overflow is reached too); bit 3 set = those books keep levels only;
 *                 bit 4 set = re-requests on (4 messages per request, the arbitration window as
 *                 timeout, 2 attempts); after every step the harness takes every request due;
 *                 bit 5 set = in-order delivery (the hold buffer; books turn it on too)
 *   then records  [op][len hi][len lo][len bytes of data]   (a short last record takes what is left)
 *
 *   op & 7   0, 1  tw_decode_frame(data)
 *            2     tw_decode_frame(data) with a kernel receive time
 *            3     tw_decode_mold(line 0, data)
 *            4     tw_decode_mold(line 1, data)  (with one line: must be refused, changing nothing)
 *            5     tw_decode_mold(line op >> 3, data)  (any line index, mostly invalid); with
 *                  re-requests on, a reply instead: tw_decode_reply(data), one message at a time
 *                  when it is a well-formed data packet (so the harness knows which were taken)
 *            6     tw_decoder_tick()
 *            7     tw_decoder_flush()
 *   op >> 3  time that passes before the record, in eighths of the arbitration window
 *
 * After every step (abort() otherwise, which libFuzzer reports as a crash):
 *   - the counters agree with each other (gaps <= missing, recovered <= missing, sums);
 *   - no counter ever goes down: they saturate, never wrap;
 *   - a malformed packet changes no sequencing state;
 *   - every message of an accepted packet is counted exactly once (first copy, duplicate, or past
 *     its session's end), and no message is discarded whose (session, sequence number) the script
 *     never delivered before: a loss pattern on one line never costs a copy from the other. Only
 *     copies older than the bitmap window may count twice (beyond_window), or any copy of a session
 *     that was forgotten (sessions_replaced). A packet held as a suspect jump changes no message count;
 *   - with one line, a session seen for the first time starts where it is joined if it is the very
 *     first, else at sequence number 1 (what is missing before it is one gap, counted at once);
 *   - every counted message is recorded in an exchange-latency histogram or counted in
 *     exchange_latency_skipped (malformed ones are neither: they are not counted messages);
 *   - tw_decoder_pending() is 0 with one line and after a flush, and at the end of the script it is
 *     1 exactly when letting the arbitration window run out declares a message missing (with
 *     re-requests: when that and letting every request run out of attempts does);
 *   - a reply never changes gaps, missing, a line's counts or a session's state: it is rejected
 *     whole (counted), or each message is taken (recovered_by_request), a duplicate, or unsolicited;
 *     every request asks for 1..4 messages;
 *   - in-order delivery hands on no more than was counted, holds no more than the window, and
 *     holds nothing after a flush;
 *   - with books: their structural self-check passes (tw_books_check: every order findable,
 *     level totals and queues agree with the orders, trees ordered, best levels right).
 * Replaying the same script on a fresh decoder must give byte-identical stats (books' too). Sanitizers catch
 * the rest. native/fuzz/seeds.py writes valid scripts in this format; native/fuzz/regressions/
 * holds every input that ever crashed it, minimised.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tickwire.h"

#define WINDOW_NS 1000000u
#define MIDNIGHT_NS 1700000000000000000LL
#define START_MONO_NS 1000000000ull
#define START_REAL_NS (MIDNIGHT_NS + 34200000000000LL) /* 09:30 */

static uint32_t ipv4_be(uint8_t a, uint8_t b, uint8_t c, uint8_t d)
{
    uint8_t bytes[4] = {a, b, c, d};
    uint32_t v;
    memcpy(&v, bytes, 4);
    return v;
}

static uint16_t port_be(uint16_t port)
{
    return (uint16_t)(port >> 8 | port << 8);
}

#define REQ_MAX_COUNT 4
#define REQ_ATTEMPTS 2

static struct tw_decoder *new_decoder(int two_lines, int tight_jumps, int rerequest, int in_order)
{
    struct tw_decoder_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.n_lines = two_lines ? 2 : 1;
    cfg.lines[0] = (struct tw_line_config){ipv4_be(239, 1, 1, 1), port_be(5000), 0};
    /* line B is source-specific, so the SSM match is exercised too */
    cfg.lines[1] = (struct tw_line_config){ipv4_be(239, 1, 1, 2), port_be(5001), ipv4_be(198, 18, 0, 1)};
    cfg.exchange_midnight_realtime_ns = MIDNIGHT_NS;
    cfg.arbitration_window_ns = WINDOW_NS;
    if (tight_jumps) {
        cfg.max_seq_jump = 100;
        cfg.max_seq_rate = 1000000;
    } /* else 0: the decoder's defaults */
    if (rerequest)
        cfg.rerequest = (struct tw_rerequest_config){.enabled = 1, .max_count = REQ_MAX_COUNT,
                                                     .timeout_ns = WINDOW_NS,
                                                     .attempts = REQ_ATTEMPTS,
                                                     .rate = 1000000, .burst = 64};
    cfg.deliver_in_order = in_order ? 1 : 0;
    char err[256];
    struct tw_decoder *d = tw_decoder_new(&cfg, err, sizeof(err));
    if (d == NULL) {
        fprintf(stderr, "fuzz_decode: tw_decoder_new: %s\n", err);
        abort();
    }
    return d;
}

static struct tw_books *new_books(int levels_only)
{
    struct tw_books_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.depth = 4;
    cfg.max_orders = 64;
    cfg.max_instruments = 8;
    cfg.levels_only = levels_only;
    char err[256];
    struct tw_books *b = tw_books_new(&cfg, err, sizeof(err));
    if (b == NULL) {
        fprintf(stderr, "fuzz_decode: tw_books_new: %s\n", err);
        abort();
    }
    return b;
}

static void check_books(const struct tw_books *b)
{
    char err[256];
    if (b && tw_books_check(b, err, sizeof(err)) != 0) {
        fprintf(stderr, "fuzz_decode: books broken: %s\n", err);
        abort();
    }
}

#define CHECK(cond)                                                                      \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            fprintf(stderr, "fuzz_decode: invariant broken: %s (line %d)\n", #cond, __LINE__); \
            abort();                                                                     \
        }                                                                                \
    } while (0)

/* What a malformed packet or a refused call must leave alone. */
struct sequencing {
    uint64_t messages, gaps, missing, recovered, duplicates, heartbeats, end_of_session;
    uint64_t sessions_replaced, suspect_jumps, confirmed_jumps, window_overflow, beyond_window;
    uint64_t after_end, first[2], hist_counts[2][2];
};

static struct sequencing sequencing_of(const struct tw_stats *s)
{
    struct sequencing q = {s->messages, s->gaps, s->missing, s->recovered, s->duplicates,
                           s->heartbeats, s->end_of_session, s->sessions_replaced,
                           s->suspect_jumps, s->confirmed_jumps, s->window_overflow,
                           s->beyond_window, s->after_end,
                           {s->line_first_messages[0], s->line_first_messages[1]}, {{0}}};
    for (int stage = 0; stage < TW_STAGES; stage++)
        for (int line = 0; line < TW_MAX_LINES; line++)
            q.hist_counts[stage][line] = s->hist[stage][line].count;
    return q;
}

static void check_hist(const struct tw_hist *h)
{
    uint64_t total = 0;
    for (uint32_t i = 0; i < TW_HIST_BUCKETS; i++)
        total += h->buckets[i];
    CHECK(total == h->count);
    if (h->count) {
        CHECK(h->min <= h->max);
        CHECK(h->buckets[tw_hist_index(h->min)] > 0 && h->buckets[tw_hist_index(h->max)] > 0);
    }
}

struct tally {
    uint64_t frames, unmatched;
};

static void check_invariants(const struct tw_decoder *d, const struct tw_stats *s,
                             const struct tally *t, int two_lines)
{
    uint64_t sum = 0;
    for (int r = 0; r < TW_MAL_REASONS; r++)
        sum += s->malformed_by_reason[r];
    CHECK(s->malformed == sum);

    sum = 0;
    for (int type = 0; type < 128; type++) {
        if (s->messages_by_type[type])
            CHECK(tw_itch_length((uint8_t)type) != 0);
        sum += s->messages_by_type[type];
    }
    CHECK(s->messages == sum);

    /* every sequence number a line or a reply won is a counted message or a malformed one */
    CHECK(s->line_first_messages[0] + s->line_first_messages[1] + s->recovered_by_request ==
          s->messages + s->malformed_by_reason[TW_MAL_ITCH_UNKNOWN_TYPE] +
              s->malformed_by_reason[TW_MAL_ITCH_BAD_LENGTH]);
    CHECK(s->packets == s->line_packets[0] + s->line_packets[1]);
    CHECK(two_lines || (s->line_packets[1] == 0 && s->line_first_messages[1] == 0));
    CHECK(s->frames == t->frames);
    CHECK(s->unmatched == t->unmatched);
    CHECK(s->gaps <= s->missing);         /* a gap misses at least one message */
    CHECK(s->recovered <= s->missing);    /* only messages counted missing can be recovered */

    uint64_t measured = 0, packets_measured = 0;
    for (int line = 0; line < TW_MAX_LINES; line++) {
        packets_measured += s->hist[TW_STAGE_KERNEL_TO_ENGINE][line].count;
        measured += s->hist[TW_STAGE_EXCHANGE_TO_ENGINE][line].count;
    }
    CHECK(packets_measured <= s->packets);
    /* every counted message has an exchange latency or is counted without one */
    CHECK(measured + s->exchange_latency_skipped == s->messages);
    CHECK(two_lines || tw_decoder_pending(d) == 0); /* one line: holes are declared as they open */
    CHECK(s->delivered <= s->messages);
    CHECK(s->delivery_held <= TW_SEQ_WINDOW);
    CHECK(s->requests_outstanding <= TW_MAX_REQUESTS);
    CHECK(s->requests_timed_out <= s->requests_sent);
}

/* Every counter, in one array, to check that none ever goes down (a wrap would). */
#define COUNTERS(X)                                                                       \
    X(frames) X(packets) X(bytes) X(messages) X(gaps) X(missing) X(recovered) X(duplicates) \
    X(heartbeats) X(end_of_session) X(malformed) X(unmatched) X(sessions_replaced)       \
    X(suspect_jumps) X(confirmed_jumps) X(window_overflow) X(beyond_window) X(after_end)  \
    X(line_packets[0]) X(line_packets[1]) X(line_first_messages[0]) X(line_first_messages[1]) \
    X(requests_sent) X(messages_requested) X(recovered_by_request) X(requests_timed_out)    \
    X(gaps_given_up) X(request_overflow) X(reply_packets) X(reply_rejected)                 \
    X(reply_unsolicited) X(delivered) X(delivered_lost) X(delivery_forced)
#define COUNT_ONE(field) +1
#define N_COUNTERS (0 COUNTERS(COUNT_ONE) + 128 + TW_MAL_REASONS)

static void counters_of(const struct tw_stats *s, uint64_t *out)
{
    size_t n = 0;
#define COPY_ONE(field) out[n++] = s->field;
    COUNTERS(COPY_ONE)
#undef COPY_ONE
    for (int i = 0; i < 128; i++)
        out[n++] = s->messages_by_type[i];
    for (int i = 0; i < TW_MAL_REASONS; i++)
        out[n++] = s->malformed_by_reason[i];
}

static void check_monotone(const uint64_t *before, const uint64_t *after)
{
    for (size_t i = 0; i < N_COUNTERS; i++)
        CHECK(after[i] >= before[i]);
}

/* (session, sequence number) pairs the script delivered in an accepted packet: a set. */
#define DELIVERED_SLOTS 16384 /* > the blocks 8192 bytes can hold (2 bytes each at least) */
struct delivered {
    uint8_t used[DELIVERED_SLOTS];
    uint8_t id[DELIVERED_SLOTS][10];
    uint64_t seq[DELIVERED_SLOTS];
    uint32_t n_used, used_slots[DELIVERED_SLOTS]; /* to empty it in O(used), not O(slots) */
};

static struct delivered delivered_set; /* one per process: emptied after each run */

static void delivered_empty(struct delivered *set)
{
    for (uint32_t i = 0; i < set->n_used; i++)
        set->used[set->used_slots[i]] = 0;
    set->n_used = 0;
}

static size_t delivered_slot(const struct delivered *set, const uint8_t *id, uint64_t seq)
{
    uint64_t h = 1469598103934665603ull ^ seq;
    for (int i = 0; i < 10; i++)
        h = (h ^ id[i]) * 1099511628211ull;
    size_t i = (size_t)(h % DELIVERED_SLOTS);
    while (set->used[i] && !(set->seq[i] == seq && memcmp(set->id[i], id, 10) == 0))
        i = (i + 1) % DELIVERED_SLOTS;
    return i;
}

/* Known sessions, to tell a session seen for the first time. */
#define MAX_KNOWN_SESSIONS 64
struct known_sessions {
    uint32_t n;
    uint8_t id[MAX_KNOWN_SESSIONS][10];
};

static int known_session(struct known_sessions *k, const uint8_t *id) /* -1: table full */
{
    for (uint32_t i = 0; i < k->n; i++)
        if (memcmp(k->id[i], id, 10) == 0)
            return 1;
    if (k->n == MAX_KNOWN_SESSIONS)
        return -1;
    memcpy(k->id[k->n++], id, 10);
    return 0;
}

static uint64_t be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

/* The MoldUDP64 payload of a frame the decoder accepted (so it is well formed). */
static const uint8_t *payload_of_frame(const uint8_t *f, uint32_t *len)
{
    uint32_t off = 12;
    uint16_t type = (uint16_t)(f[off] << 8 | f[off + 1]);
    for (int tags = 0; tags < 2 && (type == 0x8100 || type == 0x88a8); tags++) {
        off += 4;
        type = (uint16_t)(f[off] << 8 | f[off + 1]);
    }
    const uint8_t *ip = f + off + 2;
    uint32_t ihl = (uint32_t)(ip[0] & 15) * 4, total = (uint32_t)(ip[2] << 8 | ip[3]);
    *len = total - ihl - 8;
    return ip + ihl + 8;
}

struct world {
    int two_lines;
    int rerequest;          /* a declared gap is asked for, not counted, until given up */
    int followed;           /* a session was accepted: any new one must start at 1 */
    struct delivered *delivered;
    struct known_sessions known;
};

/* The rules of an accepted MoldUDP64 packet: see the top of this file. */
static void check_packet(struct world *w, const uint8_t *p, uint32_t len,
                         const struct sequencing *before, const struct tw_stats *after)
{
    CHECK(len >= 20);
    uint64_t seq = be64(p + 10);
    uint32_t count = (uint32_t)(p[18] << 8 | p[19]);
    uint32_t blocks = count == 0 || count == 0xffff ? 0 : count;
    uint64_t first = after->line_first_messages[0] + after->line_first_messages[1] -
                     before->first[0] - before->first[1];
    uint64_t dups = after->duplicates - before->duplicates;
    uint64_t past_end = after->after_end - before->after_end;
    uint64_t older = after->beyond_window - before->beyond_window;
    int known = known_session(&w->known, p);

    if (after->suspect_jumps != before->suspect_jumps) { /* held: no message counted */
        CHECK(first == 0 && dups == 0 && past_end == 0 && after->messages == before->messages);
        CHECK(after->gaps == before->gaps && after->missing == before->missing &&
              after->sessions_replaced == before->sessions_replaced); /* takes no session slot */
        return;
    }
    size_t fresh = 0;
    for (uint32_t i = 0; i < blocks; i++) {
        size_t slot = delivered_slot(w->delivered, p, seq + i);
        if (!w->delivered->used[slot]) {
            fresh++;
            CHECK(w->delivered->n_used < DELIVERED_SLOTS - 1);
            w->delivered->used[slot] = 1;
            w->delivered->used_slots[w->delivered->n_used++] = (uint32_t)slot;
            memcpy(w->delivered->id[slot], p, 10);
            w->delivered->seq[slot] = seq + i;
        }
    }
    CHECK(first + dups + past_end == blocks); /* each message counted exactly once */
    CHECK(first + past_end >= fresh);         /* no first copy discarded */
    if (after->sessions_replaced == 0)
        CHECK(first <= fresh + older);        /* no copy counted twice inside the window */

    if (known == 0 && !w->two_lines && !w->rerequest) {
        /* A session seen for the first time: the very first starts where we join it, a later one at
         * sequence number 1, so [1, seq) is one gap. (An evicted session reappearing is "known".) */
        uint64_t gaps = after->gaps - before->gaps, missing = after->missing - before->missing;
        if (!w->followed || seq <= 1)
            CHECK(gaps == 0 && missing == 0);
        else /* (missing may have saturated already) */
            CHECK(gaps == 1 && missing == (seq - 1 < UINT64_MAX - before->missing
                                               ? seq - 1 : UINT64_MAX - before->missing));
    }
    w->followed = 1;
}

/* Take every request due now, checking each. */
static void take_requests(struct tw_decoder *d, const struct tw_clock *now)
{
    uint8_t req[TW_MOLD_REQUEST_LEN];
    for (int i = 0; i <= TW_MAX_REQUESTS && tw_decoder_next_request(d, now, req); i++) {
        uint32_t count = (uint32_t)(req[18] << 8 | req[19]);
        CHECK(count >= 1 && count <= REQ_MAX_COUNT);
    }
}

/* One reply: a well-formed data packet goes in one message at a time, so the set of what was
 * delivered learns exactly the messages that were taken; anything else goes in whole and must be
 * rejected whole. Either way nothing but reply counters, duplicates and taken messages move. */
static void reply(struct world *w, struct tw_decoder *d, const uint8_t *p, uint32_t len,
                  const struct tw_clock *now)
{
    const struct tw_stats *s = tw_decoder_stats(d);
    uint32_t count = len >= 20 ? (uint32_t)(p[18] << 8 | p[19]) : 0;
    uint32_t off = 20, blocks_ok = count != 0 && count != 0xffff && be64(p + 10) <= UINT64_MAX - count;
    for (uint32_t i = 0; blocks_ok && i < count; i++) {
        if (len - off < 2 || len - off - 2 < (uint32_t)(p[off] << 8 | p[off + 1])) {
            blocks_ok = 0;
            break;
        }
        off += 2 + (uint32_t)(p[off] << 8 | p[off + 1]);
    }
    struct sequencing before = sequencing_of(s);
    if (!blocks_ok) {
        uint64_t rejected = s->reply_rejected;
        CHECK(tw_decode_reply(d, p, len, now) == TW_FRAME_MALFORMED);
        CHECK(s->reply_rejected == rejected + 1);
        struct sequencing after = sequencing_of(s);
        CHECK(memcmp(&before, &after, sizeof(before)) == 0);
        return;
    }
    uint8_t one[20 + 2 + 65535];
    uint64_t seq = be64(p + 10);
    off = 20;
    for (uint32_t i = 0; i < count; i++, seq++) {
        uint32_t mlen = (uint32_t)(p[off] << 8 | p[off + 1]);
        memcpy(one, p, 10);
        for (int b = 0; b < 8; b++)
            one[10 + b] = (uint8_t)(seq >> (56 - 8 * b));
        one[18] = 0;
        one[19] = 1;
        memcpy(one + 20, p + off, 2 + mlen);
        off += 2 + mlen;
        uint64_t taken = s->recovered_by_request, dups = s->duplicates;
        uint64_t unsolicited = s->reply_unsolicited, rejected = s->reply_rejected;
        struct sequencing pre = sequencing_of(s);
        int result = tw_decode_reply(d, one, 22 + mlen, now);
        uint64_t took = s->recovered_by_request - taken;
        if (result == TW_FRAME_MALFORMED) { /* a session the decoder does not follow */
            CHECK(s->reply_rejected == rejected + 1);
            continue;
        }
        CHECK(took + (s->duplicates - dups) + (s->reply_unsolicited - unsolicited) == 1);
        struct sequencing post = sequencing_of(s);
        CHECK(post.gaps == pre.gaps && post.missing == pre.missing &&
              post.recovered == pre.recovered && post.first[0] == pre.first[0] &&
              post.first[1] == pre.first[1] && post.after_end == pre.after_end);
        if (took) {
            size_t slot = delivered_slot(w->delivered, one, seq);
            /* a reply only fills what no line delivered (of a session never forgotten) */
            CHECK(!w->delivered->used[slot] || s->sessions_replaced > 0);
            CHECK(w->delivered->n_used < DELIVERED_SLOTS - 1);
            w->delivered->used[slot] = 1;
            w->delivered->used_slots[w->delivered->n_used++] = (uint32_t)slot;
            memcpy(w->delivered->id[slot], one, 10);
            w->delivered->seq[slot] = seq;
        }
    }
}

/* Run the script; returns the decoder and its books (caller frees) so a replay can be compared. */
static struct tw_decoder *run(const uint8_t *data, size_t size, struct tw_books **books)
{
    int two_lines = data[0] & 1, rerequest = (data[0] & 16) != 0;
    struct tw_decoder *d = new_decoder(two_lines, data[0] & 2, rerequest, data[0] & 32);
    *books = (data[0] & 4) ? new_books(data[0] & 8) : NULL;
    tw_decoder_set_books(d, *books);
    const struct tw_stats *s = tw_decoder_stats(d);
    struct tw_clock now = {START_MONO_NS, START_REAL_NS};
    struct tally tally = {0, 0};
    struct world world = {.two_lines = two_lines, .rerequest = rerequest,
                          .delivered = &delivered_set};
    delivered_empty(world.delivered);
    uint64_t counters_before[N_COUNTERS], counters_after[N_COUNTERS];

    size_t off = 1;
    while (off < size) {
        uint8_t op = data[off];
        size_t len = 0;
        if (size - off >= 3)
            len = (size_t)data[off + 1] << 8 | data[off + 2];
        off += size - off >= 3 ? 3 : size - off;
        if (len > size - off)
            len = size - off;
        /* Each record in its own exact-size allocation, so ASan sees any read past its end. */
        uint8_t *rec = malloc(len ? len : 1);
        CHECK(rec != NULL);
        memcpy(rec, data + off, len);
        off += len;

        uint64_t step = (uint64_t)(op >> 3) * (WINDOW_NS / 8);
        now.mono_ns += step;
        now.real_ns += (int64_t)step;

        struct sequencing before = sequencing_of(s);
        uint64_t malformed_before = s->malformed;
        counters_of(s, counters_before);
        int result = TW_FRAME_DATA;
        switch (op & 7) {
        case 0:
        case 1:
        case 2:
            tally.frames++;
            result = tw_decode_frame(d, rec, (uint32_t)len, (op & 7) == 2 ? now.mono_ns - 1500 : 0,
                                     &now);
            CHECK(result == TW_FRAME_DATA || result == TW_FRAME_UNMATCHED ||
                  result == TW_FRAME_MALFORMED);
            if (result == TW_FRAME_UNMATCHED)
                tally.unmatched++;
            if (result == TW_FRAME_DATA) {
                uint32_t plen;
                const uint8_t *payload = payload_of_frame(rec, &plen);
                check_packet(&world, payload, plen, &before, s);
            }
            break;
        case 5:
            if (rerequest) {
                reply(&world, d, rec, (uint32_t)len, &now);
                break;
            }
            /* fall through */
        case 3:
        case 4: {
            uint32_t line = (op & 7) == 3 ? 0 : (op & 7) == 4 ? 1 : (uint32_t)(op >> 3);
            uint64_t packets_before = s->packets;
            result = tw_decode_mold(d, line, rec, (uint32_t)len, now.mono_ns - 800, &now);
            if (line >= (two_lines ? 2u : 1u)) {
                CHECK(result == -1);
                CHECK(s->packets == packets_before && s->malformed == malformed_before);
                struct sequencing after = sequencing_of(s);
                CHECK(memcmp(&before, &after, sizeof(before)) == 0);
            } else {
                CHECK(result == TW_FRAME_DATA || result == TW_FRAME_MALFORMED);
                CHECK(s->packets == packets_before + 1);
                if (result == TW_FRAME_DATA)
                    check_packet(&world, rec, (uint32_t)len, &before, s);
            }
            break;
        }
        case 6:
            tw_decoder_tick(d, &now);
            break;
        case 7:
            tw_decoder_flush(d);
            CHECK(tw_decoder_pending(d) == 0);
            break;
        }
        if (result == TW_FRAME_MALFORMED) {
            struct sequencing after = sequencing_of(s);
            CHECK(memcmp(&before, &after, sizeof(before)) == 0);
            CHECK(s->malformed == malformed_before + 1);
        }
        if (rerequest)
            take_requests(d, &now);
        check_invariants(d, s, &tally, two_lines);
        check_books(*books);
        counters_of(s, counters_after);
        check_monotone(counters_before, counters_after);
        free(rec);
    }
    delivered_empty(world.delivered);

    /* tw_decoder_pending() says whether time alone will declare a missing message: let every
     * arbitration window run out and see (unless `missing` saturated and can show nothing). Then
     * nothing is pending, and a flush finds nothing left to declare. */
    int pending = tw_decoder_pending(d) || tw_decoder_requests_outstanding(d);
    uint64_t missing = s->missing, gaps = s->gaps;
    now.mono_ns += 1000ull * WINDOW_NS;
    now.real_ns += 1000ll * WINDOW_NS;
    tw_decoder_tick(d, &now);
    /* nobody answers: every range runs out of attempts (the rate lets 64 go at a time) */
    for (int step = 0; rerequest && tw_decoder_requests_outstanding(d) && step < 4096; step++) {
        take_requests(d, &now);
        now.mono_ns += 2ull * WINDOW_NS;
        now.real_ns += 2ll * WINDOW_NS;
    }
    CHECK(!tw_decoder_requests_outstanding(d));
    if (missing < UINT64_MAX)
        CHECK((s->missing != missing) == pending);
    CHECK(tw_decoder_pending(d) == 0);
    missing = s->missing;
    gaps = s->gaps;
    tw_decoder_flush(d);
    CHECK(s->missing == missing && s->gaps == gaps);
    CHECK(s->delivery_held == 0);

    /* After a flush nothing is pending: however much time passes, no new gap appears. */
    now.mono_ns += 1000ull * WINDOW_NS;
    tw_decoder_tick(d, &now);
    CHECK(s->gaps == gaps);
    check_invariants(d, s, &tally, two_lines);
    for (int stage = 0; stage < TW_STAGES; stage++) /* whole histograms: once, they are big */
        for (int line = 0; line < TW_MAX_LINES; line++)
            check_hist(&s->hist[stage][line]);
    return d;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    struct tw_books *first_books, *again_books;
    struct tw_decoder *first = run(data, size, &first_books);
    struct tw_decoder *again = run(data, size, &again_books);
    CHECK(memcmp(tw_decoder_stats(first), tw_decoder_stats(again), sizeof(struct tw_stats)) == 0);
    if (first_books) {
        check_books(first_books);
        CHECK(memcmp(tw_books_stats(first_books), tw_books_stats(again_books),
                     sizeof(struct tw_book_stats)) == 0);
    }
    tw_decoder_free(first);
    tw_decoder_free(again);
    tw_books_free(first_books);
    tw_books_free(again_books);
    return 0;
}
