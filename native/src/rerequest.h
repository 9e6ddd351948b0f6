/* rerequest.h - the table of ranges being asked for again (MoldUDP64 re-requests).
 *
 * Pure bookkeeping: which declared ranges are outstanding, when each may be (re)sent, when it is
 * given up, and the rate every send is charged against. It knows nothing of bitmaps, sockets or
 * packets: the decoder (decode.c) trims a range as its messages arrive and turns "send" into a
 * request packet; the engine's poll thread puts that packet on its socket. Not part of the API.
 */
#ifndef TICKWIRE_REREQUEST_H
#define TICKWIRE_REREQUEST_H

#include <stdint.h>

#include "tickwire.h"

/* A range's slot once it is gone (filled or given up): matches no session. Gone ranges are
 * compacted away in one pass (tw_req_compact), so giving up or filling many at once costs one
 * move of the table, not one per range. */
#define TW_REQ_GONE UINT32_MAX

/* One range still wanted: [first, end) of one session (the decoder's slot index). */
struct tw_req_range {
    uint32_t slot;
    uint64_t first;
    uint64_t end;
    uint64_t declared_ns;   /* when it was declared a gap: the recovery latency counts from here */
    uint64_t sent_ns;       /* last time a request for it went out (0: never yet) */
    uint32_t attempts;      /* requests sent since it last made progress */
    int answered;           /* a reply filled part of it since the last send: ask for the rest now */
    int timed_out;          /* the last send's wait ran out (counted once per send) */
};

struct tw_requester {
    struct tw_rerequest_config cfg;
    uint64_t interval_ns;   /* one request's share of the rate */
    uint64_t credit_ns;     /* time banked for sends, at most burst * interval_ns */
    uint64_t credit_at_ns;  /* when credit was last topped up */
    uint64_t wake_ns;       /* nothing can be due before this: a scan of the table is skipped
                               (0: a range was added or answered, look now) */
    /* A scan that stopped to hand out a request resumes at scan_from when asked again at the same
     * time (scan_now), so a burst of n requests costs one pass, not n; any other change to the
     * table (tw_req_add, tw_req_remove, an answer) starts the next scan from the top. */
    uint32_t scan_from;
    uint64_t scan_now;
    uint64_t scan_wake;     /* the earliest wait's end among the ranges already passed */
    uint32_t n;             /* ranges in the table, gone ones included until compacted */
    uint32_t gone;          /* of those, gone */
    /* in the order they were declared, so each session's ranges are in rising order */
    struct tw_req_range ranges[TW_MAX_REQUESTS];
};

/* What the next step for a range is, at `now_ns`. */
#define TW_REQ_WAIT 0      /* a request is out and its time has not run out */
#define TW_REQ_SEND 1      /* never asked, partly answered, or timed out with attempts left */
#define TW_REQ_GIVE_UP 2   /* timed out after the last attempt */

/* Check a config (0, or 1 with a message in err). A disabled config is always valid. */
int tw_req_config_error(const struct tw_rerequest_config *cfg, char *err, size_t errlen);
void tw_req_init(struct tw_requester *r, const struct tw_rerequest_config *cfg);

/* Take [first, end) of session `slot` in, cut into ranges of at most cfg.max_count messages.
 * Returns where the part that did not fit in the table starts (end when all of it fitted): the
 * caller gives that part up at once. */
uint64_t tw_req_add(struct tw_requester *r, uint32_t slot, uint64_t first, uint64_t end,
                    uint64_t now_ns);

/* The range of `slot` holding seq, or -1. */
int tw_req_find(const struct tw_requester *r, uint32_t slot, uint64_t seq);

/* What to do with range i now. A wait that ran out is marked (timed_out) so that it is counted
 * once; the caller checks that flag. */
int tw_req_next_step(struct tw_requester *r, uint32_t i, uint64_t now_ns);

/* 1 and one request's worth of credit taken if the rate allows a send now, else 0. */
int tw_req_take_credit(struct tw_requester *r, uint64_t now_ns);

/* When the next request's worth of credit will be there (after tw_req_take_credit said 0). */
uint64_t tw_req_credit_at(const struct tw_requester *r, uint64_t now_ns);

/* When range i's wait runs out (it is waiting for an answer). */
uint64_t tw_req_wait_ends(const struct tw_requester *r, uint32_t i);

/* A request for range i went out now. */
void tw_req_sent(struct tw_requester *r, uint32_t i, uint64_t now_ns);

/* Forget range i (filled or given up): marked gone; the others keep their places and order. */
void tw_req_remove(struct tw_requester *r, uint32_t i);

/* Drop the gone ranges, keeping the order of the others. */
void tw_req_compact(struct tw_requester *r);

#endif
