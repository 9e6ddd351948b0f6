/* tickwire.h - the engine's C API.
 *
 * This one header is what Python sees: native/tickwire_engine/_build.py feeds it to cffi's cdef
 * after dropping preprocessor lines other than "#define NAME <integer>". Keep it plain C that
 * cdef understands: fixed-size types, integer #defines, no inline functions, no macros with
 * arguments, no #include that cdef would need.
 *
 * Two layers:
 *   - the decoder: a pure function of bytes (Ethernet frame or UDP payload in, counters and
 *     histograms out). No I/O, no allocation after init, no clock reads: the caller passes the
 *     time. It is what the unit tests, the fuzzer and the kernel-socket baseline drive.
 *   - the engine: an AF_XDP socket, its XDP steering program and a pinned poll thread that feeds
 *     frames to one decoder.
 */
#ifndef TICKWIRE_H
#define TICKWIRE_H

#include <stddef.h>
#include <stdint.h>

#define TW_MAX_LINES 2
#define TW_MAX_SESSIONS 8
#define TW_MAX_HOLES 64          /* pending holes timed one by one (more share the newest's time) */
/* Sequencing: the last TW_SEQ_WINDOW sequence numbers of each session are remembered one bit each
 * (arrived or not), so A/B arbitration is exact inside that window (8 KiB per session). It must be
 * above the largest MoldUDP64 message count (65534). */
#define TW_SEQ_WINDOW 65536
/* Defaults for a jump's plausibility (tw_decoder_config.max_seq_jump / max_seq_rate when 0). */
#define TW_DEFAULT_MAX_SEQ_JUMP 1000000    /* messages a jump may skip at once */
#define TW_DEFAULT_MAX_SEQ_RATE 10000000   /* plus messages per second of silence before it */
/* Exchange time: how many midnights after the first one a decoder can be given (about 17 months
 * of days; past the last one no exchange latency is recorded). See exchange_time.c. */
#define TW_MAX_LATER_MIDNIGHTS 512
/* Re-request: ranges asked for again at once (a declared gap is cut into ranges of at most the
 * server's message limit; what does not fit in the table is given up at once, counted). */
#define TW_MAX_REQUESTS 1024
#define TW_MOLD_REQUEST_LEN 20   /* a MoldUDP64 request: session (10), sequence (8), count (2) */

/* Log-linear histogram of nanoseconds: values below 64 have their own bucket (1 ns wide);
 * above, each power of two [2^e, 2^(e+1)) is split into 32 equal buckets (about 3% wide):
 * index = 64 + (e - 6) * 32 + ((v >> (e - 5)) & 31). 1024 buckets reach 2^36 ns (68.7 s);
 * larger values land in the last bucket while max stays exact. */
#define TW_HIST_BUCKETS 1024

/* Latency stages, each kept per line. */
#define TW_STAGE_KERNEL_TO_ENGINE 0   /* XDP's bpf_ktime_get_ns() -> poll thread (CLOCK_MONOTONIC) */
#define TW_STAGE_EXCHANGE_TO_ENGINE 1 /* ITCH timestamp -> poll thread (CLOCK_REALTIME) */
#define TW_STAGES 2

/* Why a frame, packet or message was dropped as malformed. */
#define TW_MAL_FRAME_SHORT 0      /* Ethernet/VLAN header truncated */
#define TW_MAL_IP_HEADER 1        /* bad IPv4 version/IHL/total length, or truncated */
#define TW_MAL_IP_FRAGMENT 2      /* fragmented IPv4 (feeds never fragment) */
#define TW_MAL_UDP_HEADER 3       /* UDP header truncated or UDP length inconsistent */
#define TW_MAL_MOLD_HEADER 4      /* MoldUDP64 header shorter than 20 bytes */
#define TW_MAL_MOLD_TRUNCATED 5   /* message blocks run past the end of the packet */
#define TW_MAL_ITCH_UNKNOWN_TYPE 6
#define TW_MAL_ITCH_BAD_LENGTH 7  /* known type, wrong length for it */
#define TW_MAL_REASONS 8

/* What tw_decode_frame() made of a frame. */
#define TW_FRAME_DATA 0          /* a MoldUDP64 packet of a configured line, processed */
#define TW_FRAME_UNMATCHED 1     /* well-formed but not one of our (group, port) flows */
#define TW_FRAME_MALFORMED 2

struct tw_hist {
    uint64_t count;
    uint64_t sum;
    uint64_t min;
    uint64_t max;
    uint64_t buckets[1024];
};

struct tw_book_stats {
    uint64_t instruments;        /* instruments with a book */
    uint64_t orders_live;
    uint64_t order_overflow;     /* adds refused: max_orders live already (book incomplete) */
    uint64_t instrument_overflow;/* messages of instruments beyond max_instruments, ignored */
    uint64_t events_published;
    uint64_t incomplete;         /* instruments whose book is known incomplete now */
    uint64_t unknown_orders;     /* references to orders the book never saw (start mid-day) */
    uint64_t inconsistent;       /* duplicate adds, executions beyond an order's shares */
    uint64_t losses;             /* loss reports (tw_books_on_loss): every book incomplete */
    uint64_t resets;             /* start of messages ('S' 'O'): every book cleared, complete */
    uint64_t filtered;           /* messages of instruments outside the symbol filter */
    uint64_t messages;           /* messages applied */
};

/* All counters are written by one thread only (the poll thread, or whoever owns the decoder). */
struct tw_stats {
    uint64_t frames;             /* every frame handed to tw_decode_frame() */
    uint64_t packets;            /* MoldUDP64 packets of a configured line (malformed ones too) */
    uint64_t bytes;              /* bytes of those packets' frames (tw_decode_mold: payload bytes) */
    uint64_t messages;           /* ITCH messages counted once: first copies, recovered ones too */
    uint64_t messages_by_type[128]; /* indexed by the ITCH type letter */
    uint64_t gaps;               /* gap events: holes no line filled in time */
    uint64_t missing;            /* messages in those holes */
    uint64_t recovered;          /* messages that arrived after their hole was counted missing */
    uint64_t duplicates;         /* message copies already seen (the losing line of A/B, resends) */
    uint64_t heartbeats;         /* MoldUDP64 packets with message count 0 */
    uint64_t end_of_session;     /* MoldUDP64 packets with message count 0xFFFF */
    uint64_t malformed;          /* sum of malformed_by_reason */
    uint64_t malformed_by_reason[8];
    uint64_t unmatched;          /* frames that reached the decoder but are not ours */
    uint64_t sessions_replaced;  /* a new session evicted the oldest of TW_MAX_SESSIONS */
    /* sequencing under hostile or extreme input (see "Sequencing rules" in docs/design.md) */
    uint64_t suspect_jumps;      /* packets whose sequence number jumped implausibly far: held back */
    uint64_t confirmed_jumps;    /* suspect jumps another packet confirmed: applied, a real gap */
    uint64_t window_overflow;    /* pending holes declared early: they left the TW_SEQ_WINDOW bitmap */
    uint64_t beyond_window;      /* copies older than the bitmap window: taken, as they may be first */
    uint64_t after_end;          /* messages at or past their session's end-of-session: ignored */
    uint64_t line_packets[2];
    uint64_t line_first_messages[2]; /* messages this line delivered first: who wins arbitration */
    uint64_t last_packet_mono_ns;    /* caller's clock at the last packet of a configured line */
    /* exchange time (exchange_time.c) */
    int64_t exchange_midnight_ns;     /* the midnight ITCH timestamps count from now (CLOCK_REALTIME) */
    uint64_t exchange_midnights_left; /* later midnights still ahead (2^64-1: the day never changes;
                                         0: past the last one, no exchange latency is recorded) */
    uint64_t exchange_latency_skipped; /* messages without an exchange latency: stamped in our
                                          future (clocks disagree), past the midnights given, or
                                          recovered by request (stats.recovery has theirs) */
    struct tw_hist hist[2][2];        /* [stage][line] */
    /* re-request (docs/design.md "Gap recovery"): with it on, gaps and missing count only what
     * was given up, not what was asked for and came back */
    uint64_t requests_sent;          /* MoldUDP64 request packets handed to the socket */
    uint64_t messages_requested;     /* messages those requests asked for */
    uint64_t recovered_by_request;   /* messages first taken from a reply */
    uint64_t requests_timed_out;     /* requests whose wait ran out without an answer */
    uint64_t gaps_given_up;          /* ranges given up: out of attempts, out of the window, or
                                        their session forgotten */
    uint64_t request_overflow;       /* messages given up at once: the request table was full */
    uint64_t requests_outstanding;   /* ranges in the table now (a gauge) */
    uint64_t reply_packets;          /* packets that came from the re-request socket */
    uint64_t reply_rejected;         /* of those: malformed, not data, or of no session asked */
    uint64_t reply_unsolicited;      /* messages in replies that no request asked for (dropped) */
    struct tw_hist recovery;         /* gap declared -> its message recovered by request */
    /* in-order delivery (cfg.deliver_in_order; docs/design.md "Delivery in order") */
    uint64_t delivered;              /* messages handed on, in sequence order */
    uint64_t delivered_lost;         /* sequence numbers handed on as lost (given up, malformed) */
    uint64_t delivery_held;          /* messages waiting behind a hole now (a gauge) */
    uint64_t delivery_forced;        /* a session's held messages pushed out, its holes reported
                                        lost, because another session needed the hold buffer */
    struct tw_book_stats books;       /* the engine's books (tw_engine_snapshot); 0 without */
};

struct tw_line_config {
    uint32_t group_be;   /* destination IPv4 address (multicast group), network order */
    uint16_t port_be;    /* destination UDP port, network order */
    uint32_t source_be;  /* SSM source, network order, or 0 for any */
    uint16_t vlan;       /* 802.1Q VLAN id 1..4094 the line arrives tagged with, or 0 for any
                            (tagged or not). Matched by the XDP program; the decoder ignores it */
};

/* MoldUDP64 re-requests of declared gaps (enabled = 0: a declared gap is final at once). */
struct tw_rerequest_config {
    uint32_t enabled;
    uint32_t max_count;      /* messages per request: the re-request server's limit (1..65534) */
    uint64_t timeout_ns;     /* how long a request waits for its answer */
    uint32_t attempts;       /* requests per range without an answer before it is given up */
    uint32_t rate;           /* requests per second at most, all ranges together... */
    uint32_t burst;          /* ...in bursts of up to this many */
};

struct tw_decoder_config {
    uint32_t n_lines;                         /* 1 or 2 */
    struct tw_line_config lines[2];
    int64_t exchange_midnight_realtime_ns;    /* CLOCK_REALTIME of the exchange day's midnight */
    uint64_t arbitration_window_ns;           /* with two lines: how long a hole may wait for the
                                                 other line before it counts as a gap */
    /* sequencing: a jump past max_seq_jump + max_seq_rate * (seconds since the session's last
     * packet) messages is suspect until confirmed; 0 selects TW_DEFAULT_MAX_SEQ_* */
    uint64_t max_seq_jump;
    uint64_t max_seq_rate;
    /* exchange time (exchange_time.c): the exchange's midnights after the first, rising. The day
     * moves on when real time reaches the next one; past the last, the day is unknown. 0 of them:
     * the day never changes (a replay of one day's capture). */
    uint32_t n_later_midnights;               /* 0..TW_MAX_LATER_MIDNIGHTS */
    int64_t later_midnights_ns[512];
    struct tw_rerequest_config rerequest;
    /* 1: hand messages on (to the books) strictly in sequence order: a message past a hole is
     * held (a 4 MiB buffer, allocated here) until the hole is filled or given up. */
    uint32_t deliver_in_order;
};

/* The caller's clocks for a batch: read once per batch, never per packet. */
struct tw_clock {
    uint64_t mono_ns;
    int64_t real_ns;
};

struct tw_decoder;

/* Returns NULL and fills err when the config is invalid (n_lines not 1-2, a group outside
 * 224.0.0.0/4, port 0, two lines on the same (group, port)).
 *
 * Sequencing, per MoldUDP64 session (up to TW_MAX_SESSIONS, least recently used replaced; both
 * lines share it); docs/design.md "Sequencing rules" has the whole story:
 *  - the first session we ever see starts at its first sequence number (what came before we
 *    joined is not a gap); any later new session starts at 1, so what is missing before its first
 *    packet is a hole;
 *  - the first copy of a sequence number wins and is decoded; later copies count as duplicates and
 *    are not inspected. Inside the last TW_SEQ_WINDOW sequence numbers this is exact, whatever the
 *    loss pattern; an older copy cannot be told from a first one and is taken (beyond_window);
 *  - a jump ahead past max_seq_jump + max_seq_rate * silence is suspect: counted, held, and applied
 *    only when confirmed (the other line shows it too, or the same line continues from it);
 *  - an end-of-session packet declares the session's pending holes; nothing past it opens a hole;
 *  - counters saturate instead of wrapping.
 * A message of unknown type or wrong length is counted malformed but still uses up its sequence
 * number. A heartbeat or end-of-session packet's sequence number is the next one expected, so a
 * jump there reveals a gap too. A malformed packet (MoldUDP64 header short, blocks past the end)
 * counts in packets, bytes and malformed, and changes nothing else; bytes after the last block are
 * ignored. */
struct tw_decoder *tw_decoder_new(const struct tw_decoder_config *cfg, char *err, size_t errlen);
void tw_decoder_free(struct tw_decoder *d);
struct tw_stats *tw_decoder_stats(struct tw_decoder *d);

/* One Ethernet frame (up to two 802.1Q/802.1ad tags) -> TW_FRAME_*. kernel_rx_ns is the XDP
 * metadata receive time, or 0 when unknown. Not IPv4/UDP, or not a configured flow: unmatched.
 * An IPv4 fragment is malformed when addressed to a configured group, else unmatched. */
int tw_decode_frame(struct tw_decoder *d, const uint8_t *frame, uint32_t len,
                    uint64_t kernel_rx_ns, const struct tw_clock *now);
/* One MoldUDP64 packet (a UDP payload) known to belong to line `line` -> TW_FRAME_DATA or
 * TW_FRAME_MALFORMED; -1 (and nothing counted) when `line` is not a configured line. */
int tw_decode_mold(struct tw_decoder *d, uint32_t line, const uint8_t *payload, uint32_t len,
                   uint64_t kernel_rx_ns, const struct tw_clock *now);
/* Let time pass: holes older than the arbitration window become gaps. Call once per batch
 * and when idle. */
void tw_decoder_tick(struct tw_decoder *d, const struct tw_clock *now);
/* Declare every pending hole a gap now (end of run). */
void tw_decoder_flush(struct tw_decoder *d);
/* 1 while a hole waits for a line to fill it (time alone will turn it into a gap: keep ticking),
 * else 0. Cheap enough to ask whenever the caller is idle: nothing to scan without a pending hole,
 * else at most the pending part of each session's bitmap, a 64-bit word at a time. */
int tw_decoder_pending(const struct tw_decoder *d);

/* Re-requests (cfg.rerequest.enabled). The caller owns the socket; the decoder decides what to
 * ask and when (docs/design.md "Gap recovery"):
 *  - tw_decoder_next_request(): 1 and a request packet (TW_MOLD_REQUEST_LEN bytes) in `out` when
 *    one should go out now, else 0. Call until 0 (the rate bounds how many come). Also gives up
 *    ranges that ran out of attempts, so call it once per batch and when idle while
 *    tw_decoder_requests_outstanding() is 1;
 *  - tw_decode_reply(): one packet that came back on the request socket -> TW_FRAME_DATA, or
 *    TW_FRAME_MALFORMED when it was rejected whole (counted in reply_rejected). Only messages that
 *    an outstanding request asked for are taken; the rest are counted (reply_unsolicited) and
 *    change nothing. */
int tw_decoder_next_request(struct tw_decoder *d, const struct tw_clock *now, uint8_t *out);
int tw_decode_reply(struct tw_decoder *d, const uint8_t *payload, uint32_t len,
                    const struct tw_clock *now);
int tw_decoder_requests_outstanding(const struct tw_decoder *d);

/* The fixed length of an ITCH 5.0 message type, or 0 for an unknown type. */
uint32_t tw_itch_length(uint8_t type);

/* Histogram bucket arithmetic, shared with Python so both agree on boundaries. */
uint32_t tw_hist_index(uint64_t value_ns);
uint64_t tw_hist_bucket_low(uint32_t index);   /* smallest value in the bucket */
uint64_t tw_hist_bucket_high(uint32_t index);  /* largest value in the bucket (UINT64_MAX for the last) */
void tw_hist_record(struct tw_hist *h, uint64_t value_ns);

/* ---- books (book.c) and their stream (stream.c, include/tickwire/consumer.h) ------------------
 *
 * Order books per instrument (ITCH stock locate), built on the poll thread from every first copy
 * of a message the decoder takes, with no allocation per message: orders in an open-addressing
 * hash of references, price levels in a treap per side with the best level cached. Sizes are
 * fixed at creation (max_orders, max_instruments); what does not fit is counted, never fatal.
 * Every change is published to the shared-memory stream (when a feed name is given) as events,
 * and the top `depth` levels of each instrument to its snapshot entry. */

#define TW_BOOK_MAX_SYMBOLS 256
#define TW_BOOK_DEFAULT_DEPTH 10
#define TW_BOOK_DEFAULT_MAX_ORDERS 1048576
#define TW_BOOK_DEFAULT_MAX_INSTRUMENTS 16384
#define TW_BOOK_DEFAULT_RING_EVENTS 1048576

struct tw_books_config {
    uint32_t depth;              /* levels per side in each snapshot entry (1..64) */
    uint32_t max_orders;         /* live orders held at once (all instruments) */
    uint32_t max_instruments;    /* instruments (stock locates) with a book */
    uint32_t ring_events;        /* events the ring holds (power of two) */
    int32_t levels_only;         /* 1: aggregated levels only: no order queues, no order events */
    uint32_t n_symbols;          /* 0: every instrument; else only these (named by 'R') */
    char symbols[256][8];        /* space-padded as in ITCH */
    char stream_root[256];       /* the stream goes to <stream_root>/<feed>/ ... */
    char feed[64];               /* ... or nowhere when feed is "" (books only) */
};

struct tw_book_order {
    uint64_t ref;
    uint32_t shares;
    uint32_t price;
    uint16_t locate;
    uint8_t side;                /* 'B' or 'S' */
    uint8_t pad;
    uint32_t queue_position;     /* 0-based place in its level's queue (full book), else 0 */
};

struct tw_book_level {
    uint32_t price;
    uint32_t orders;
    uint64_t shares;
};

struct tw_book_instrument {
    uint16_t locate;
    uint8_t incomplete;
    uint8_t trading_state;
    char symbol[8];
    uint32_t bid_levels;
    uint32_t ask_levels;
    uint64_t orders_live;
    uint64_t messages;
};

struct tw_books;

/* NULL and a message in err when the config cannot work (or the stream cannot be created). */
struct tw_books *tw_books_new(const struct tw_books_config *cfg, char *err, size_t errlen);
/* Marks the stream ended (readers see TWC_ENDED) and frees everything. */
void tw_books_free(struct tw_books *b);
/* One ITCH message, already length-checked by the caller (the decoder); receive_ns is the
 * packet's CLOCK_MONOTONIC receive time. */
void tw_books_on_message(struct tw_books *b, const uint8_t *msg, uint32_t len, uint64_t receive_ns);
/* Contract C9: count messages from first_seq of the MoldUDP64 session (10 bytes) were given up
 * as lost, or applied out of order: any book may be wrong, so every book is incomplete until
 * the next start of messages ('S' 'O') clears them all. */
void tw_books_on_loss(struct tw_books *b, const uint8_t *session, uint64_t first_seq, uint64_t count);
const struct tw_book_stats *tw_books_stats(const struct tw_books *b);
/* Mark the stream ended (the engine stopped); readers see TWC_ENDED once they caught up. */
void tw_books_end_stream(struct tw_books *b);
/* Inspection (tests, tools; not for the hot path): */
int tw_books_instrument(const struct tw_books *b, uint16_t locate, struct tw_book_instrument *out);
/* Levels of one side ('B' or 'S'), best first; returns how many were written (<= max). */
uint32_t tw_books_levels(const struct tw_books *b, uint16_t locate, uint8_t side,
                         struct tw_book_level *out, uint32_t max);
/* Every live order (in no particular order); returns how many were written (<= max). */
uint32_t tw_books_orders(const struct tw_books *b, struct tw_book_order *out, uint32_t max);
/* Structural self-check (every order findable, level totals and queues agree with the orders,
 * trees ordered, best levels right, counters right): 0, or -1 with what is wrong in err. Tests
 * and the fuzzer; it allocates and walks everything. */
int tw_books_check(const struct tw_books *b, char *err, size_t errlen);
/* The decoder hands every first copy to these books (NULL: none). */
void tw_decoder_set_books(struct tw_decoder *d, struct tw_books *b);

/* ---- engine ---------------------------------------------------------------------------------- */

#define TW_XDP_AUTO 0
#define TW_XDP_NATIVE 1
#define TW_XDP_GENERIC 2

#define TW_ZC_AUTO 0
#define TW_ZC_REQUIRED 1
#define TW_ZC_OFF 2

struct tw_engine_config {
    char ifname[16];
    uint32_t queue;
    int32_t xdp_mode;           /* TW_XDP_* */
    int32_t zero_copy;          /* TW_ZC_* */
    int32_t core;               /* CPU to pin the poll thread to, or -1 */
    /* Rings (libxdp's convention): every UMEM frame is stocked in the fill ring before the XDP
     * program is attached, so the fill ring has frame_count entries, at least twice the RX ring.
     * What the kernel can deliver while the poll thread is off the CPU is bounded by the RX ring:
     * 4096 entries hold a 4 ms stall at 1 M packets/s. */
    uint32_t frame_count;       /* UMEM frames = fill ring entries (power of two, >= 2 * ring_size) */
    uint32_t frame_size;        /* 2048 or 4096 */
    uint32_t ring_size;         /* RX ring entries (TX and completion too; power of two) */
    uint32_t batch_size;        /* descriptors taken per poll */
    int32_t hugepages;          /* 1: back the UMEM with 2 MiB hugepages, fall back to 4 KiB pages */
    int32_t busy_poll;          /* 1: spin on the RX ring (SO_PREFER_BUSY_POLL); 0: wait in poll() */
    int32_t busy_poll_usec;     /* SO_BUSY_POLL, 0 to leave alone */
    int32_t busy_poll_budget;   /* SO_BUSY_POLL_BUDGET, 0 to leave alone */
    int32_t rt_priority;        /* SCHED_FIFO priority for the poll thread (1-99), 0: normal */
    char bpf_object[512];       /* path of steer.bpf.o */
    char bpffs_root[256];       /* bpffs directory where interfaces' shared programs are pinned */
    struct tw_decoder_config decoder;
    /* The MoldUDP64 re-request server (used when decoder.rerequest.enabled): requests go out of
     * a UDP socket of the engine's own, bound to an ephemeral port and connected to the server,
     * so only the server's answers reach it. */
    uint32_t rerequest_addr_be;
    uint16_t rerequest_port_be;
    int32_t books_enabled;      /* 1: build books and publish them (books.feed names the stream) */
    struct tw_books_config books;
};

/* What the engine actually got, as opposed to what it asked for. */
struct tw_engine_info {
    int32_t xdp_mode;           /* TW_XDP_NATIVE or TW_XDP_GENERIC */
    int32_t zero_copy;          /* 1 zero-copy, 0 copy mode */
    int32_t hugepages;          /* 1 if the UMEM sits on hugepages */
    int32_t metadata;           /* 1 once a frame carried XDP receive-time metadata */
    int32_t busy_poll_applied;  /* 1 if the kernel accepted the busy-poll socket options */
    int32_t core;               /* CPU the poll thread runs on, or -1 */
    int32_t rt_priority;        /* SCHED_FIFO priority it got, or 0 */
    uint32_t prog_id;           /* id of the attached XDP program (shared by the interface's engines) */
    int32_t attached_program;   /* 1: this engine loaded and attached it (the first on the interface) */
    uint32_t rx_ring_size;      /* RX ring entries */
    uint32_t fill_ring_size;    /* fill ring entries */
    uint32_t fill_stocked;      /* frames in the fill ring when the XDP program was attached */
    uint64_t umem_bytes;
    char fallback[256];         /* what was asked but not granted, and why, or "" */
};

/* AF_XDP ring counters from getsockopt(XDP_STATISTICS), read off the hot path; after
 * tw_engine_stop(), the last ones the socket had. */
struct tw_ring_stats {
    uint64_t rx_dropped;
    uint64_t rx_invalid_descs;
    uint64_t rx_ring_full;
    uint64_t rx_fill_ring_empty_descs;
    uint64_t tx_invalid_descs;
    uint64_t fill_ring_stock;   /* frames in the fill ring now: the kernel can receive this many
                                   (as far as the RX ring has room) before the poll thread runs */
};

/* Poll-loop counters, written by the poll thread. */
struct tw_loop_stats {
    uint64_t polls;
    uint64_t empty_polls;
    uint64_t batches;
    uint64_t descriptors;
    uint64_t wakeups;           /* poll()/recvfrom() kicks when the kernel asked (need_wakeup) */
    uint64_t request_send_errors; /* request packets the kernel refused (counted, retried later) */
};

struct tw_engine;

/* All of these return 0, or a negative errno with a human message in err. */
int tw_engine_create(const struct tw_engine_config *cfg, struct tw_engine **out, char *err, size_t errlen);
int tw_engine_start(struct tw_engine *e, char *err, size_t errlen);
/* Stops the poll thread (if running), detaches XDP, closes the socket. Idempotent. */
void tw_engine_stop(struct tw_engine *e);
void tw_engine_destroy(struct tw_engine *e);
void tw_engine_get_info(struct tw_engine *e, struct tw_engine_info *out);
/* A consistent copy of the decoder's stats and the loop's counters, taken without stopping or
 * slowing the poll thread (seqlock: the reader retries, the writer never waits). */
int tw_engine_snapshot(struct tw_engine *e, struct tw_stats *stats, struct tw_loop_stats *loop);
int tw_engine_ring_stats(struct tw_engine *e, struct tw_ring_stats *out);

/* Remove what engines killed on `ifname` (in this network namespace) left under the bpffs
 * directory `root`: their flows and queue records; the program and pins too when no live engine
 * is left. queue >= 0: -EADDRINUSE if that queue's engine is alive. Interfaces that are gone
 * are swept as well. Writes what it did to `report`. 0 or a negative errno. */
int tw_steering_release(const char *root, const char *ifname, int32_t queue, char *report,
                        size_t len);

#endif
