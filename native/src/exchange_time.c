/* exchange_time.c - following the exchange's days, so that ITCH timestamps (nanoseconds since the
 * exchange's local midnight) turn into the right CLOCK_REALTIME however long the engine runs.
 *
 * The caller passes the first midnight and up to TW_MAX_LATER_MIDNIGHTS after it (Python computes
 * them with zoneinfo: a spring-forward day is 23 hours long, a fall-back day 25). The day moves on
 * when real time reaches the next midnight. Past the last midnight given the day is unknown: no
 * exchange latency is recorded rather than a wrong one (the table covers more than a year; the
 * stats show how many midnights are left). With no later midnights at all the day never changes,
 * which is what replays of a single day's capture and the fuzzer want.
 *
 * Which day a stamp belongs to: the one (yesterday, today or tomorrow) that puts it nearest to now.
 * A message stamped 23:59:59.999 and read at 00:00:00.001 belongs to yesterday (2 ms, not minus a
 * day); one stamped 00:00:00.001 by an exchange clock slightly ahead of ours, read at 23:59:59.999,
 * belongs to tomorrow (a negative latency: not recorded, never 24 hours). Real latencies are far
 * below the 11.5 hours that would make "nearest" ambiguous.
 */
#include <stdio.h>

#include "exchange_time.h"
#include "tickwire.h"

int tw_exchange_config_error(const struct tw_decoder_config *cfg, char *err, size_t errlen)
{
    if (cfg->n_later_midnights > TW_MAX_LATER_MIDNIGHTS) {
        snprintf(err, errlen, "n_later_midnights is %u: at most %u", cfg->n_later_midnights,
                 (unsigned)TW_MAX_LATER_MIDNIGHTS);
        return 1;
    }
    int64_t before = cfg->exchange_midnight_realtime_ns;
    for (uint32_t i = 0; i < cfg->n_later_midnights; i++) {
        if (cfg->later_midnights_ns[i] <= before) {
            snprintf(err, errlen, "later_midnights_ns[%u] is not after the midnight before it: "
                     "give the exchange's midnights in rising order", i);
            return 1;
        }
        before = cfg->later_midnights_ns[i];
    }
    return 0;
}

void tw_exchange_day_init(struct tw_exchange_day *x, const struct tw_decoder_config *cfg)
{
    *x = (struct tw_exchange_day){
        .prev = TW_NO_MIDNIGHT,
        .midnight = cfg->exchange_midnight_realtime_ns,
        .next = cfg->n_later_midnights ? cfg->later_midnights_ns[0] : INT64_MAX,
        .later = cfg->later_midnights_ns,
        .n_later = cfg->n_later_midnights,
        .i_next = 0,
        .past_table = 0,
    };
}

int tw_exchange_day_advance(struct tw_exchange_day *x, int64_t now_real)
{
    int moved = 0;
    while (now_real >= x->next) {
        x->prev = x->midnight;
        x->midnight = x->next;
        x->i_next++;
        if (x->i_next < x->n_later) {
            x->next = x->later[x->i_next];
        } else {
            /* The last midnight we were given: when this day ends is unknown. */
            x->next = INT64_MAX;
            x->past_table = 1;
        }
        moved = 1;
    }
    return moved;
}

uint64_t tw_exchange_midnights_left(const struct tw_exchange_day *x)
{
    return x->n_later ? (uint64_t)(x->n_later - x->i_next) : UINT64_MAX;
}

static __int128 distance(int64_t midnight, uint64_t since, int64_t now)
{
    return (__int128)now - midnight - (__int128)since; /* |each term| < 2^64: no overflow */
}

static __int128 magnitude(__int128 v)
{
    return v < 0 ? -v : v;
}

int tw_exchange_latency(const struct tw_exchange_day *x, uint64_t since_midnight, int64_t now_real,
                        uint64_t *out)
{
    if (x->past_table)
        return 0;
    __int128 best = distance(x->midnight, since_midnight, now_real);
    if (best < 0 && x->prev != TW_NO_MIDNIGHT) {
        __int128 yesterday = distance(x->prev, since_midnight, now_real);
        if (magnitude(yesterday) < magnitude(best))
            best = yesterday;
    } else if (best > 0 && x->next != INT64_MAX) {
        __int128 tomorrow = distance(x->next, since_midnight, now_real);
        if (magnitude(tomorrow) < magnitude(best))
            best = tomorrow;
    }
    if (best < 0 || best > (__int128)UINT64_MAX)
        return 0;
    *out = (uint64_t)best;
    return 1;
}
