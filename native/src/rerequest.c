/* rerequest.c - the re-request table: splitting, timing, attempts and the request rate.
 *
 * A declared gap is cut into ranges of at most max_count messages (the re-request server's limit
 * per request), kept in the order they were declared, so requests go out lowest sequence number
 * first. Each range is sent, waited for (timeout_ns), and sent again up to `attempts` times in a
 * row without an answer; then it is given up. A reply that fills part of a range resets its
 * attempts and makes the rest due at once: the server answers one packet per request (as many
 * messages as fit), so a big range is fetched in several round trips, each of them progress.
 *
 * Every send is charged against one token bucket: `rate` requests per second with bursts of up to
 * `burst`, so a storm of gaps (or a dead server) never turns into a storm of requests.
 */
#include <stdio.h>
#include <string.h>

#include "rerequest.h"

#define NS_PER_S 1000000000ull
#define MOLD_MAX_COUNT 0xfffeu /* 0xffff is end of session, 0 a heartbeat */

int tw_req_config_error(const struct tw_rerequest_config *cfg, char *err, size_t errlen)
{
    if (!cfg->enabled)
        return 0;
    if (cfg->max_count < 1 || cfg->max_count > MOLD_MAX_COUNT) {
        snprintf(err, errlen, "re-request max_count is %u: give 1..%u messages per request",
                 cfg->max_count, MOLD_MAX_COUNT);
        return 1;
    }
    if (cfg->timeout_ns == 0) {
        snprintf(err, errlen, "re-request timeout_ns is 0: give how long to wait for an answer");
        return 1;
    }
    if (cfg->attempts < 1) {
        snprintf(err, errlen, "re-request attempts is 0: give how many requests a range gets");
        return 1;
    }
    if (cfg->rate < 1 || cfg->rate > NS_PER_S) {
        snprintf(err, errlen, "re-request rate is %u: give 1..%llu requests per second", cfg->rate,
                 NS_PER_S);
        return 1;
    }
    if (cfg->burst < 1 || cfg->burst > TW_MAX_REQUESTS) {
        snprintf(err, errlen, "re-request burst is %u: give 1..%u requests", cfg->burst,
                 TW_MAX_REQUESTS);
        return 1;
    }
    return 0;
}

void tw_req_init(struct tw_requester *r, const struct tw_rerequest_config *cfg)
{
    memset(r, 0, sizeof(*r));
    r->cfg = *cfg;
    if (!cfg->enabled)
        return;
    r->interval_ns = NS_PER_S / cfg->rate;
    r->credit_ns = r->interval_ns * cfg->burst; /* a full bucket: the first burst goes at once */
}

uint64_t tw_req_add(struct tw_requester *r, uint32_t slot, uint64_t first, uint64_t end,
                    uint64_t now_ns)
{
    tw_req_compact(r);
    while (first < end && r->n < TW_MAX_REQUESTS) {
        uint64_t cut = end - first > r->cfg.max_count ? first + r->cfg.max_count : end;
        r->ranges[r->n++] = (struct tw_req_range){.slot = slot, .first = first, .end = cut,
                                                  .declared_ns = now_ns};
        first = cut;
    }
    r->wake_ns = 0;
    r->scan_from = 0;
    return first;
}

int tw_req_find(const struct tw_requester *r, uint32_t slot, uint64_t seq)
{
    for (uint32_t i = 0; i < r->n; i++) {
        const struct tw_req_range *q = &r->ranges[i];
        if (q->slot == slot && seq >= q->first && seq < q->end)
            return (int)i;
    }
    return -1;
}

int tw_req_next_step(struct tw_requester *r, uint32_t i, uint64_t now_ns)
{
    struct tw_req_range *q = &r->ranges[i];
    if (q->sent_ns == 0 || q->answered)
        return TW_REQ_SEND;
    if (!q->timed_out) {
        if (now_ns < q->sent_ns || now_ns - q->sent_ns < r->cfg.timeout_ns)
            return TW_REQ_WAIT;
        q->timed_out = 1;
    }
    return q->attempts >= r->cfg.attempts ? TW_REQ_GIVE_UP : TW_REQ_SEND;
}

int tw_req_take_credit(struct tw_requester *r, uint64_t now_ns)
{
    uint64_t cap = r->interval_ns * r->cfg.burst;
    if (now_ns > r->credit_at_ns) {
        uint64_t earned = now_ns - r->credit_at_ns;
        r->credit_ns = earned >= cap - r->credit_ns ? cap : r->credit_ns + earned;
    }
    r->credit_at_ns = now_ns > r->credit_at_ns ? now_ns : r->credit_at_ns;
    if (r->credit_ns < r->interval_ns)
        return 0;
    r->credit_ns -= r->interval_ns;
    return 1;
}

void tw_req_sent(struct tw_requester *r, uint32_t i, uint64_t now_ns)
{
    struct tw_req_range *q = &r->ranges[i];
    q->attempts = q->answered ? 1 : q->attempts + 1;
    q->answered = 0;
    q->timed_out = 0;
    q->sent_ns = now_ns ? now_ns : 1; /* 0 means "never sent" */
}

void tw_req_remove(struct tw_requester *r, uint32_t i)
{
    if (r->ranges[i].slot == TW_REQ_GONE)
        return;
    r->ranges[i].slot = TW_REQ_GONE;
    r->gone++;
}

void tw_req_compact(struct tw_requester *r)
{
    if (r->gone == 0)
        return;
    uint32_t kept = 0;
    for (uint32_t i = 0; i < r->n; i++)
        if (r->ranges[i].slot != TW_REQ_GONE)
            r->ranges[kept++] = r->ranges[i];
    r->n = kept;
    r->gone = 0;
    r->scan_from = 0;
}

uint64_t tw_req_credit_at(const struct tw_requester *r, uint64_t now_ns)
{
    return r->credit_ns >= r->interval_ns ? now_ns : now_ns + (r->interval_ns - r->credit_ns);
}

uint64_t tw_req_wait_ends(const struct tw_requester *r, uint32_t i)
{
    const struct tw_req_range *q = &r->ranges[i];
    return q->sent_ns > UINT64_MAX - r->cfg.timeout_ns ? UINT64_MAX : q->sent_ns + r->cfg.timeout_ns;
}
