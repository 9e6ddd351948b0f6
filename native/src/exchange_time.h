/* exchange_time.h - which exchange day an ITCH timestamp belongs to.
 *
 * ITCH timestamps count nanoseconds from the exchange's local midnight. The decoder is given the
 * midnights themselves (CLOCK_REALTIME ns, computed by the caller from the zone's rules, so days of
 * 23 and 25 hours need nothing here) and follows them as real time passes: one compare per
 * message, no clock read, no allocation. Not part of the API: cffi never sees this header.
 */
#ifndef TICKWIRE_EXCHANGE_TIME_H
#define TICKWIRE_EXCHANGE_TIME_H

#include <stddef.h>
#include <stdint.h>

struct tw_decoder_config;

#define TW_NO_MIDNIGHT INT64_MIN /* a day we do not know */

struct tw_exchange_day {
    int64_t prev;      /* the previous day's midnight, or TW_NO_MIDNIGHT */
    int64_t midnight;  /* the day real time is in: ITCH timestamps count from here */
    int64_t next;      /* the next day's: reaching it moves the day on (INT64_MAX: never) */
    const int64_t *later; /* the config's later midnights, ascending */
    uint32_t n_later;
    uint32_t i_next;   /* index of `next` in later[] */
    int past_table;    /* real time went past the last midnight given: the day is unknown */
};

/* 0, or 1 with a message in err: the later midnights must rise strictly from the first one. */
int tw_exchange_config_error(const struct tw_decoder_config *cfg, char *err, size_t errlen);

/* Start at the first midnight of cfg (which must outlive x: the decoder's own copy). */
void tw_exchange_day_init(struct tw_exchange_day *x, const struct tw_decoder_config *cfg);

/* Move on to the day real time now_real is in; 1 if the day changed. Real time never moves the
 * day back (a clock stepped back across midnight keeps the later day: yesterday stays in reach,
 * see tw_exchange_latency). */
int tw_exchange_day_advance(struct tw_exchange_day *x, int64_t now_real);
static inline int tw_exchange_day_follow(struct tw_exchange_day *x, int64_t now_real)
{
    return now_real >= x->next ? tw_exchange_day_advance(x, now_real) : 0;
}

/* Midnights still ahead in the table (0 once the last one is reached; UINT64_MAX with no table). */
uint64_t tw_exchange_midnights_left(const struct tw_exchange_day *x);

/* The latency of a message stamped since_midnight, seen at now_real: 1 and *out, or 0 when there
 * is no meaningful one (the stamp lies in our future: the clocks disagree; or the day is unknown). */
int tw_exchange_latency(const struct tw_exchange_day *x, uint64_t since_midnight, int64_t now_real,
                        uint64_t *out);

#endif
