/* stream_stress.c - one writer, N readers of the book stream, as threads of one process.
 *
 *   stream_stress DIR READERS MILLIS RING_EVENTS PACE_NS [CPU_WRITER CPU_READERS]
 *
 * The writer (stream.h, exactly the engine's code) publishes "messages" of 1-3 events whose
 * payload words are all derived from the event's number, stamping receive_ns with
 * CLOCK_MONOTONIC just before it puts the message (so reader latency here is publish -> read),
 * then waits PACE_NS (0: flat out). Each reader (consumer.h, exactly what a strategy compiles)
 * checks every event it gets: its number follows the previous one (or the reader was told it was
 * lapped), and every payload word matches that number: a torn or misordered read is counted.
 * One more reader opens the stream and never reads: it must change nothing.
 *
 * Prints one JSON object: per reader events, lapped, missed, torn, out_of_order; the writer's
 * events; and the publish-to-read latency percentiles over all readers (ns).
 * The test (tests/unit/test_stream.py) and the bench (bench/book_bench.py) both run it.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stream.h"

#define MAX_READERS 64

static struct tw_stream stream;
static const char *dir_path;
static int cpu_writer = -1, cpu_readers = -1;

struct reader_result {
    uint64_t events, lapped, missed, torn, out_of_order;
    struct twc_hist hist;
    pthread_t thread;
    int started;
};
static struct reader_result results[MAX_READERS];

static inline uint64_t word_of(uint64_t n, unsigned i)
{
    return (n + 1) * 0x9e3779b97f4a7c15ull ^ ((uint64_t)i << 56);
}

static void pin(int cpu)
{
    if (cpu < 0)
        return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

static void *reader_main(void *arg)
{
    struct reader_result *res = arg;
    struct twc_reader r;
    char err[256];
    pin(cpu_readers);
    if (twc_open(&r, dir_path, TWC_START_NOW, err, sizeof(err))) {
        fprintf(stderr, "reader: %s\n", err);
        exit(1);
    }
    r.measure_latency = 1;
    __atomic_store_n(&res->started, 1, __ATOMIC_RELEASE);
    struct twc_event ev;
    uint64_t expect = r.next;
    for (;;) {
        int rc = twc_next(&r, &ev);
        if (rc == TWC_OK) {
            if (ev.seq != expect)
                res->out_of_order++;
            expect = ev.seq + 1;
            /* words 4..6 (shares2, ref, exchange_ns) carry the number: all must agree */
            const uint64_t *w = (const uint64_t *)&ev;
            for (unsigned i = 4; i < 7; i++)
                if (w[i] != word_of(ev.seq, i)) {
                    res->torn++;
                    break;
                }
            res->events++;
        } else if (rc == TWC_LAPPED) {
            expect = r.next;
        } else if (rc == TWC_ENDED) {
            break; /* only twc_next may say so: it knows nothing was published after */
        }
    }
    res->lapped = r.lapped;
    res->missed = r.missed;
    res->hist = r.latency;
    twc_close(&r);
    return NULL;
}

static uint64_t percentile(const struct twc_hist *h, double q)
{
    uint64_t rank = (uint64_t)(q * (double)h->count + 0.999999), seen = 0;
    if (!h->count)
        return 0;
    for (uint32_t i = 0; i < TWC_HIST_BUCKETS; i++) {
        seen += h->buckets[i];
        if (seen >= rank) {
            uint64_t high = i + 1 < TWC_HIST_BUCKETS ? twc_hist_bucket_low(i + 1) - 1 : h->max;
            return high < h->max ? high : h->max;
        }
    }
    return h->max;
}

int main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: %s DIR READERS MILLIS RING_EVENTS PACE_NS [CPU_WRITER CPU_READERS]\n", argv[0]);
        return 2;
    }
    char err[256];
    char root[512];
    snprintf(root, sizeof(root), "%s", argv[1]);
    int readers = atoi(argv[2]);
    uint64_t millis = strtoull(argv[3], NULL, 10);
    uint32_t ring = (uint32_t)strtoul(argv[4], NULL, 10);
    uint64_t pace = strtoull(argv[5], NULL, 10);
    if (argc >= 8) {
        cpu_writer = atoi(argv[6]);
        cpu_readers = atoi(argv[7]);
    }
    if (readers < 1 || readers > MAX_READERS)
        return 2;
    if (tw_stream_open(&stream, root, "stress", ring, 4, 4, err, sizeof(err))) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    static char dir[600];
    snprintf(dir, sizeof(dir), "%s/stress", root);
    dir_path = dir;

    /* the reader that stops: opened, never read */
    struct twc_reader idle;
    if (twc_open(&idle, dir, TWC_START_NOW, err, sizeof(err)))
        return 1;

    for (int i = 0; i < readers; i++)
        pthread_create(&results[i].thread, NULL, reader_main, &results[i]);
    for (int i = 0; i < readers; i++)
        while (!__atomic_load_n(&results[i].started, __ATOMIC_ACQUIRE))
            sched_yield();

    pin(cpu_writer);
    uint64_t end = twc_now_ns() + millis * 1000000ull, n = 0, messages = 0;
    struct twc_event ev;
    memset(&ev, 0, sizeof(ev));
    while (twc_now_ns() < end) {
        unsigned count = 1 + (unsigned)(messages % 3);
        uint64_t now = twc_now_ns();
        for (unsigned k = 0; k < count; k++, n++) {
            uint64_t *w = (uint64_t *)&ev;
            for (unsigned i = 1; i < 8; i++)
                w[i] = word_of(n, i);
            ev.type = TWC_EV_LEVEL;
            ev.flags = k + 1 == count ? TWC_F_END : 0;
            ev.receive_ns = now;
            tw_stream_put(&stream, &ev);
        }
        tw_stream_commit(&stream);
        messages++;
        if (pace) {
            uint64_t until = twc_now_ns() + pace;
            while (twc_now_ns() < until)
                ;
        }
    }
    tw_stream_close(&stream);
    for (int i = 0; i < readers; i++)
        pthread_join(results[i].thread, NULL);

    struct twc_hist all;
    memset(&all, 0, sizeof(all));
    printf("{\"writer_events\": %llu, \"writer_messages\": %llu, \"idle_reader_next\": %llu, \"readers\": [",
           (unsigned long long)n, (unsigned long long)messages, (unsigned long long)idle.next);
    for (int i = 0; i < readers; i++) {
        struct reader_result *res = &results[i];
        printf("%s{\"events\": %llu, \"lapped\": %llu, \"missed\": %llu, \"torn\": %llu, "
               "\"out_of_order\": %llu}", i ? ", " : "", (unsigned long long)res->events,
               (unsigned long long)res->lapped, (unsigned long long)res->missed,
               (unsigned long long)res->torn, (unsigned long long)res->out_of_order);
        all.count += res->hist.count;
        all.max = res->hist.max > all.max ? res->hist.max : all.max;
        for (int b = 0; b < TWC_HIST_BUCKETS; b++)
            all.buckets[b] += res->hist.buckets[b];
    }
    printf("], \"latency\": {\"count\": %llu, \"p50\": %llu, \"p99\": %llu, \"p999\": %llu, \"max\": %llu}}\n",
           (unsigned long long)all.count, (unsigned long long)percentile(&all, 0.50),
           (unsigned long long)percentile(&all, 0.99), (unsigned long long)percentile(&all, 0.999),
           (unsigned long long)all.max);
    twc_close(&idle);
    return 0;
}
