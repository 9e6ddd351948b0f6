/* fuzz_decode.c - libFuzzer harness for the decoder (decode.c, itch.c, hist.c).
 *
 * Build and run with native/fuzz/run.sh. An input is a script for one decoder:
 *
 *   byte 0        config: bit 0 set = two lines (A and B), else line A only
 *   then records  [op][len hi][len lo][len bytes of data]   (a short last record takes what is left)
 *
 *   op & 7   0, 1  tw_decode_frame(data)
 *            2     tw_decode_frame(data) with a kernel receive time
 *            3     tw_decode_mold(line 0, data)
 *            4     tw_decode_mold(line 1, data)  (with one line: must be refused, changing nothing)
 *            5     tw_decode_mold(line op >> 3, data)  (any line index, mostly invalid)
 *            6     tw_decoder_tick()
 *            7     tw_decoder_flush()
 *   op >> 3  time that passes before the record, in eighths of the arbitration window
 *
 * After every step the counters must agree with each other (abort() otherwise, which libFuzzer
 * reports as a crash), a malformed packet must change no sequencing state, and replaying the same
 * script on a fresh decoder must give byte-identical stats. Sanitizers catch the rest.
 * native/fuzz/seeds.py writes valid scripts in this format.
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

static struct tw_decoder *new_decoder(int two_lines)
{
    struct tw_decoder_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.n_lines = two_lines ? 2 : 1;
    cfg.lines[0] = (struct tw_line_config){ipv4_be(239, 1, 1, 1), port_be(5000), 0};
    /* line B is source-specific, so the SSM match is exercised too */
    cfg.lines[1] = (struct tw_line_config){ipv4_be(239, 1, 1, 2), port_be(5001), ipv4_be(198, 18, 0, 1)};
    cfg.exchange_midnight_realtime_ns = MIDNIGHT_NS;
    cfg.arbitration_window_ns = WINDOW_NS;
    char err[256];
    struct tw_decoder *d = tw_decoder_new(&cfg, err, sizeof(err));
    if (d == NULL) {
        fprintf(stderr, "fuzz_decode: tw_decoder_new: %s\n", err);
        abort();
    }
    return d;
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
    uint64_t sessions_replaced, holes_overflow, first[2], hist_counts[2][2];
};

static struct sequencing sequencing_of(const struct tw_stats *s)
{
    struct sequencing q = {s->messages, s->gaps, s->missing, s->recovered, s->duplicates,
                           s->heartbeats, s->end_of_session, s->sessions_replaced,
                           s->holes_overflow, {s->line_first_messages[0], s->line_first_messages[1]},
                           {{0}}};
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

static void check_invariants(const struct tw_stats *s, const struct tally *t, int two_lines)
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

    /* every sequence number a line won is a counted message or a malformed one */
    CHECK(s->line_first_messages[0] + s->line_first_messages[1] ==
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
    CHECK(measured <= s->messages);
}

/* Run the script; returns the decoder (caller frees) so a replay can be compared. */
static struct tw_decoder *run(const uint8_t *data, size_t size)
{
    int two_lines = data[0] & 1;
    struct tw_decoder *d = new_decoder(two_lines);
    const struct tw_stats *s = tw_decoder_stats(d);
    struct tw_clock now = {START_MONO_NS, START_REAL_NS};
    struct tally tally = {0, 0};

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
            break;
        case 3:
        case 4:
        case 5: {
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
            }
            break;
        }
        case 6:
            tw_decoder_tick(d, &now);
            break;
        case 7:
            tw_decoder_flush(d);
            break;
        }
        if (result == TW_FRAME_MALFORMED) {
            struct sequencing after = sequencing_of(s);
            CHECK(memcmp(&before, &after, sizeof(before)) == 0);
            CHECK(s->malformed == malformed_before + 1);
        }
        check_invariants(s, &tally, two_lines);
        free(rec);
    }

    /* After a flush nothing is pending: however much time passes, no new gap appears. */
    tw_decoder_flush(d);
    uint64_t gaps = s->gaps;
    now.mono_ns += 1000ull * WINDOW_NS;
    tw_decoder_tick(d, &now);
    CHECK(s->gaps == gaps);
    check_invariants(s, &tally, two_lines);
    for (int stage = 0; stage < TW_STAGES; stage++) /* whole histograms: once, they are big */
        for (int line = 0; line < TW_MAX_LINES; line++)
            check_hist(&s->hist[stage][line]);
    return d;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    struct tw_decoder *first = run(data, size);
    struct tw_decoder *again = run(data, size);
    CHECK(memcmp(tw_decoder_stats(first), tw_decoder_stats(again), sizeof(struct tw_stats)) == 0);
    tw_decoder_free(first);
    tw_decoder_free(again);
    return 0;
}
