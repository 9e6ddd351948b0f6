/* decode.c - Ethernet/IPv4/UDP -> MoldUDP64 -> ITCH 5.0, with sequence tracking and A/B arbitration.
 *
 * A pure function of bytes and the caller's clock: no I/O, no locks, no allocation after
 * tw_decoder_new(). Every length is checked before it is read, and a MoldUDP64 packet's whole
 * block structure is validated before any session state changes, so a bad packet is counted and
 * changes nothing else.
 *
 * Sequence tracking, per MoldUDP64 session (shared by both lines):
 *   next_seq   one past the highest sequence number any line has shown;
 *   holes      ranges below next_seq that no line has delivered yet, sorted, disjoint.
 * A hole is "pending" while the other line may still fill it, and "declared" once it is counted as
 * a gap (gaps += 1, missing += its size). With one line a hole is declared when it opens; with two
 * it is declared when both lines have moved past it, when it is older than the arbitration window,
 * or on flush. Filling a declared hole counts the messages as recovered.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "decode_internal.h"
#include "exchange_time.h"
#include "tickwire.h"

struct tw_hole {
    uint64_t start;     /* first missing sequence number */
    uint64_t end;       /* one past the last missing one */
    uint64_t opened_ns; /* caller's monotonic clock when the hole opened */
    int declared;       /* already counted as a gap */
};

struct tw_session {
    int in_use;
    uint8_t id[MOLD_SESSION_LEN];
    uint64_t next_seq;
    uint64_t line_next[TW_MAX_LINES]; /* per line: one past the highest sequence it has shown */
    uint64_t last_used;               /* decoder's packet counter at the last packet: LRU order */
    uint32_t n_holes;
    struct tw_hole holes[TW_MAX_HOLES];
};

struct tw_decoder {
    struct tw_decoder_config cfg;
    struct tw_stats stats;
    uint64_t packet_counter;
    uint32_t last_session; /* the previous packet's session: almost always the next one's too */
    struct tw_session sessions[TW_MAX_SESSIONS];
    struct tw_exchange_day exchange_day; /* the day ITCH timestamps count from (exchange_time.c) */
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
    return tw_exchange_config_error(cfg, err, errlen);
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
    tw_exchange_day_init(&d->exchange_day, &d->cfg);
    d->stats.exchange_midnight_ns = d->exchange_day.midnight;
    d->stats.exchange_midnights_left = tw_exchange_midnights_left(&d->exchange_day);
    return d;
}

void tw_decoder_free(struct tw_decoder *d)
{
    free(d);
}

struct tw_stats *tw_decoder_stats(struct tw_decoder *d)
{
    return &d->stats;
}

/* ---- counting --------------------------------------------------------------------------------- */

static void count_malformed(struct tw_decoder *d, int reason)
{
    d->stats.malformed++;
    d->stats.malformed_by_reason[reason]++;
}

static void declare_gap(struct tw_decoder *d, struct tw_hole *h)
{
    h->declared = 1;
    d->stats.gaps++;
    d->stats.missing += h->end - h->start;
}

static int two_lines(const struct tw_decoder *d)
{
    return d->cfg.n_lines == 2;
}

/* ---- holes ------------------------------------------------------------------------------------ */

static void hole_remove(struct tw_session *s, uint32_t i)
{
    memmove(&s->holes[i], &s->holes[i + 1], (s->n_holes - i - 1) * sizeof(s->holes[0]));
    s->n_holes--;
}

/* With the table full, forget the oldest hole (lowest sequence numbers: the least likely to still
 * be filled). A pending one is declared a gap first; either way it can no longer be recovered. */
static void hole_make_room(struct tw_decoder *d, struct tw_session *s)
{
    if (s->n_holes < TW_MAX_HOLES)
        return;
    if (!s->holes[0].declared)
        declare_gap(d, &s->holes[0]);
    hole_remove(s, 0);
    d->stats.holes_overflow++;
}

/* A new hole [start, end) just below next_seq: it is above every existing hole. */
static void hole_open(struct tw_decoder *d, struct tw_session *s, uint64_t start, uint64_t end,
                      const struct tw_clock *now)
{
    hole_make_room(d, s);
    struct tw_hole *h = &s->holes[s->n_holes++];
    *h = (struct tw_hole){.start = start, .end = end, .opened_ns = now->mono_ns, .declared = 0};
    if (!two_lines(d))
        declare_gap(d, h); /* no other line could fill it */
}

/* Index of the hole holding seq, or -1. Holes are sorted and disjoint: binary search. */
static int hole_find(const struct tw_session *s, uint64_t seq)
{
    uint32_t lo = 0, hi = s->n_holes;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (s->holes[mid].end <= seq)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < s->n_holes && s->holes[lo].start <= seq ? (int)lo : -1;
}

/* seq arrived and lies in hole i: take it out of the hole (which may shrink, vanish or split). */
static void hole_fill(struct tw_decoder *d, struct tw_session *s, uint32_t i, uint64_t seq)
{
    struct tw_hole *h = &s->holes[i];
    if (h->start == seq && h->end == seq + 1) {
        hole_remove(s, i);
    } else if (h->start == seq) {
        h->start++;
    } else if (h->end == seq + 1) {
        h->end--;
    } else {
        struct tw_hole upper = *h;
        upper.start = seq + 1;
        h->end = seq;
        /* The upper half goes right after the lower one, at i + 1. With the table full the oldest
         * hole goes first: everything moves down one, so that slot becomes i (if i was 0, the
         * dropped hole was the lower half itself and the upper half takes its place). */
        if (s->n_holes == TW_MAX_HOLES)
            hole_make_room(d, s);
        else
            i++;
        memmove(&s->holes[i + 1], &s->holes[i], (s->n_holes - i) * sizeof(s->holes[0]));
        s->holes[i] = upper;
        s->n_holes++;
    }
}

static int hole_expired(const struct tw_decoder *d, const struct tw_hole *h,
                        const struct tw_clock *now)
{
    return now->mono_ns >= h->opened_ns && now->mono_ns - h->opened_ns >= d->cfg.arbitration_window_ns;
}

/* Declare the pending holes no line can be expected to fill any more: both lines have moved past
 * them, or they waited longer than the arbitration window. */
static void settle_holes(struct tw_decoder *d, struct tw_session *s, const struct tw_clock *now)
{
    if (!two_lines(d))
        return; /* with one line every hole is declared when it opens */
    uint64_t both_past = s->line_next[0] < s->line_next[1] ? s->line_next[0] : s->line_next[1];
    for (uint32_t i = 0; i < s->n_holes; i++) {
        struct tw_hole *h = &s->holes[i];
        if (!h->declared && (h->end <= both_past || hole_expired(d, h, now)))
            declare_gap(d, h);
    }
}

static void declare_all_pending(struct tw_decoder *d, struct tw_session *s)
{
    for (uint32_t i = 0; i < s->n_holes; i++)
        if (!s->holes[i].declared)
            declare_gap(d, &s->holes[i]);
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
    d->stats.sessions_replaced++;
    return lru;
}

/* The session with this id, or a new one that starts at first_seq: we join a session where we
 * first see it, and what came before is not a gap. */
static struct tw_session *session_for(struct tw_decoder *d, const uint8_t *id, uint64_t first_seq)
{
    struct tw_session *s = session_find(d, id);
    if (s == NULL) {
        s = session_slot(d);
        memset(s, 0, sizeof(*s));
        s->in_use = 1;
        memcpy(s->id, id, MOLD_SESSION_LEN);
        s->next_seq = first_seq;
    }
    d->last_session = (uint32_t)(s - d->sessions);
    s->last_used = ++d->packet_counter;
    return s;
}

/* A line showed everything below seq (a heartbeat's next sequence number, or the end of a data
 * packet): anything between next_seq and seq that nobody delivered is a hole. */
static void advance_to(struct tw_decoder *d, struct tw_session *s, uint32_t line, uint64_t seq,
                       const struct tw_clock *now)
{
    if (seq > s->next_seq) {
        hole_open(d, s, s->next_seq, seq, now);
        s->next_seq = seq;
    }
    if (seq > s->line_next[line])
        s->line_next[line] = seq;
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
    if (want == 0) {
        count_malformed(d, TW_MAL_ITCH_UNKNOWN_TYPE); /* an empty block has no type at all */
        return;
    }
    if (mlen != want) {
        count_malformed(d, TW_MAL_ITCH_BAD_LENGTH);
        return;
    }
    d->stats.messages++;
    d->stats.messages_by_type[msg[0]]++; /* known types are all below 128 */
    record_exchange_latency(d, line, msg, now);
}

static void take_messages(struct tw_decoder *d, struct tw_session *s, uint32_t line,
                          const uint8_t *p, uint64_t seq, uint32_t count,
                          const struct tw_clock *now)
{
    uint32_t off = MOLD_HEADER_LEN;
    for (uint32_t i = 0; i < count; i++, seq++) {
        uint32_t mlen = rd_be16(p + off);
        const uint8_t *msg = p + off + MOLD_BLOCK_LEN_SIZE;
        off += MOLD_BLOCK_LEN_SIZE + mlen;

        if (seq >= s->next_seq) {
            s->next_seq = seq + 1;
        } else {
            int h = hole_find(s, seq);
            if (h < 0) {
                d->stats.duplicates++;
                continue;
            }
            if (s->holes[h].declared)
                d->stats.recovered++;
            hole_fill(d, s, (uint32_t)h, seq);
        }
        take_message(d, line, msg, mlen, now);
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
    if (kernel_rx_ns != 0 && now->mono_ns >= kernel_rx_ns)
        tw_hist_record(&st->hist[TW_STAGE_KERNEL_TO_ENGINE][line], now->mono_ns - kernel_rx_ns);

    struct tw_session *s = session_for(d, p, seq);
    if (count == MOLD_HEARTBEAT_COUNT)
        st->heartbeats++;
    else if (count == MOLD_END_OF_SESSION_COUNT)
        st->end_of_session++;

    /* A heartbeat or end of session carries the next sequence number: a jump reveals a gap. */
    advance_to(d, s, line, seq, now);
    take_messages(d, s, line, p, seq, data_count, now);
    if (seq + data_count > s->line_next[line])
        s->line_next[line] = seq + data_count;
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
    if (now)
        follow_exchange_day(d, now);
    for (uint32_t i = 0; i < TW_MAX_SESSIONS; i++)
        if (d->sessions[i].in_use)
            settle_holes(d, &d->sessions[i], now ? now : &no_clock);
}

void tw_decoder_flush(struct tw_decoder *d)
{
    for (uint32_t i = 0; i < TW_MAX_SESSIONS; i++)
        if (d->sessions[i].in_use)
            declare_all_pending(d, &d->sessions[i]);
}

int tw_decoder_pending(const struct tw_decoder *d)
{
    if (!two_lines(d))
        return 0; /* with one line every hole is declared when it opens */
    for (uint32_t i = 0; i < TW_MAX_SESSIONS; i++) {
        const struct tw_session *s = &d->sessions[i];
        for (uint32_t h = 0; s->in_use && h < s->n_holes; h++)
            if (!s->holes[h].declared)
                return 1;
    }
    return 0;
}
