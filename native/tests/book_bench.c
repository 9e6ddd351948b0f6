/* book_bench.c - what a book update costs: a replayed day of ITCH messages through tw_books.
 *
 *   book_bench DAY_FILE STREAM_ROOT REPEATS
 *
 * DAY_FILE holds the messages as [length: 2 bytes big endian][message], as bench/books.py writes
 * them. Each variant (full book + stream, full book without stream, levels only + stream) builds
 * fresh books and applies the whole day REPEATS times (a start-of-messages at the top of the day
 * clears them each time); the best repeat is reported, as CPU ns per message, on one pinned thread.
 * Prints one JSON object.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tickwire.h"

/* The thread's CPU time: on a shared machine the time this thread sat descheduled is not what a
 * book update costs (cache pollution by the others still counts, and is still noise). */
static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

struct day {
    uint8_t *bytes;
    size_t len;
    uint64_t messages;
};

static struct day load(const char *path)
{
    struct day d = {0};
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        exit(1);
    }
    fseek(f, 0, SEEK_END);
    d.len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    d.bytes = malloc(d.len);
    if (fread(d.bytes, 1, d.len, f) != d.len)
        exit(1);
    fclose(f);
    for (size_t off = 0; off + 2 <= d.len; d.messages++)
        off += 2 + ((size_t)d.bytes[off] << 8 | d.bytes[off + 1]);
    return d;
}

static double run_variant(const struct day *d, const char *root, const char *feed, int levels_only,
                          int repeats, struct tw_book_stats *stats)
{
    struct tw_books_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.depth = 10;
    cfg.max_orders = 1u << 22;
    cfg.max_instruments = 16384;
    cfg.ring_events = 1u << 20;
    cfg.levels_only = levels_only;
    snprintf(cfg.stream_root, sizeof(cfg.stream_root), "%s", root);
    snprintf(cfg.feed, sizeof(cfg.feed), "%s", feed);
    char err[256];
    struct tw_books *b = tw_books_new(&cfg, err, sizeof(err));
    if (!b) {
        fprintf(stderr, "%s\n", err);
        exit(1);
    }
    double best = 1e30;
    for (int r = 0; r < repeats; r++) {
        uint64_t t0 = now_ns();
        for (size_t off = 0; off + 2 <= d->len;) {
            uint32_t mlen = (uint32_t)d->bytes[off] << 8 | d->bytes[off + 1];
            tw_books_on_message(b, d->bytes + off + 2, mlen, t0);
            off += 2 + mlen;
        }
        double ns = (double)(now_ns() - t0) / (double)d->messages;
        if (ns < best)
            best = ns;
    }
    *stats = *tw_books_stats(b);
    tw_books_free(b);
    return best;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s DAY_FILE STREAM_ROOT REPEATS\n", argv[0]);
        return 2;
    }
    struct day d = load(argv[1]);
    int repeats = atoi(argv[3]);
    struct tw_book_stats full_s, bare_s, lvl_s;
    double full = run_variant(&d, argv[2], "bench-full", 0, repeats, &full_s);
    double bare = run_variant(&d, argv[2], "", 0, repeats, &bare_s);
    double levels = run_variant(&d, argv[2], "bench-levels", 1, repeats, &lvl_s);
    printf("{\"messages\": %llu, \"full_book_stream_ns\": %.1f, \"full_book_no_stream_ns\": %.1f, "
           "\"levels_only_stream_ns\": %.1f, \"orders_live_at_end\": %llu, \"instruments\": %llu, "
           "\"events_per_message\": %.2f, \"incomplete\": %llu, \"order_overflow\": %llu}\n",
           (unsigned long long)d.messages, full, bare, levels,
           (unsigned long long)full_s.orders_live, (unsigned long long)full_s.instruments,
           (double)full_s.events_published / (double)d.messages / repeats,
           (unsigned long long)full_s.incomplete, (unsigned long long)full_s.order_overflow);
    return 0;
}
