"""`struct tw_stats` as a plain dict, and percentiles from the C histograms.

The one place that turns the decoder's counters and histograms into Python: the Decoder wrapper,
the Engine, the agent and the benchmarks all read the same shape. Bucket bounds come from the C
functions (tw_hist_bucket_low/high), so Python and C always agree on them.

Percentiles are conservative: the high bound of the bucket holding the requested rank, clamped to
the largest value seen. A bucket is at most about 3% wide, so that is the error bound.
"""
from __future__ import annotations

from collections.abc import Sequence

from ._native import ffi, lib
from .buckets import percentile  # noqa: F401  (part of this module's interface)

PERCENTILES = {"p50": 0.50, "p90": 0.90, "p99": 0.99, "p999": 0.999}


def _names(prefix: str, skip: str) -> dict[int, str]:
    """Constant value -> lower-case name for the header's #defines with this prefix."""
    return {getattr(lib, name): name[len(prefix):].lower()
            for name in dir(lib) if name.startswith(prefix) and name != skip}


MALFORMED_REASONS = dict(sorted(_names("TW_MAL_", "TW_MAL_REASONS").items()))
STAGES = dict(sorted(_names("TW_STAGE_", "TW_STAGES").items()))
BUCKET_BOUNDS = [(lib.tw_hist_bucket_low(i), lib.tw_hist_bucket_high(i))
                 for i in range(lib.TW_HIST_BUCKETS)]


def hist_buckets(hist) -> list[list[int]]:
    """The non-empty buckets of a `struct tw_hist` as [[low_ns, high_ns, count], ...].

    high_ns is clamped to the largest value recorded: that only tightens the bucket holding the
    maximum, and keeps the open-ended top bucket (high bound 2^64-1) from reaching consumers."""
    counts = ffi.unpack(hist.buckets, lib.TW_HIST_BUCKETS)
    return [[BUCKET_BOUNDS[i][0], min(BUCKET_BOUNDS[i][1], hist.max), n]
            for i, n in enumerate(counts) if n]


def summarize(count: int, total_ns: int, min_ns: int, max_ns: int,
              buckets: list[list[int]]) -> dict:
    """count/sum/min/max/mean and the percentiles, integers in ns (all 0 when nothing was recorded)."""
    out = {"count": count, "sum": total_ns, "min": min_ns if count else 0,
           "max": max_ns if count else 0, "mean": round(total_ns / count) if count else 0}
    for name, q in PERCENTILES.items():
        out[name] = percentile(buckets, q, max_ns) if count else 0
    return out


def _merge(per_line: list[tuple[object, list[list[int]]]]) -> dict:
    """One summary over several lines' histograms of the same stage."""
    filled = [(h, b) for h, b in per_line if h.count]
    merged: dict[int, list[int]] = {}
    for _, buckets in filled:
        for low, high, n in buckets:
            bucket = merged.setdefault(low, [low, high, 0])
            bucket[1] = max(bucket[1], high)  # each line clamps to its own maximum
            bucket[2] += n
    return summarize(sum(h.count for h, _ in filled), sum(h.sum for h, _ in filled),
                     min((h.min for h, _ in filled), default=0),
                     max((h.max for h, _ in filled), default=0),
                     [merged[low] for low in sorted(merged)])


def latency_to_dict(stats, line_names: Sequence[str]) -> dict:
    out = {}
    for stage, stage_name in STAGES.items():
        per_line = [(stats.hist[stage][i], hist_buckets(stats.hist[stage][i]))
                    for i in range(len(line_names))]
        entry = _merge(per_line)
        entry["lines"] = {
            name: {**summarize(h.count, h.sum, h.min, h.max, buckets), "buckets": buckets}
            for name, (h, buckets) in zip(line_names, per_line)}
        out[stage_name] = entry
    return out


def stats_to_dict(stats, line_names: Sequence[str]) -> dict:
    """A `struct tw_stats` (cffi) as a plain dict; line_names name the configured lines in order
    (index 0 is line A). Zero counts are left out of messages_by_type but kept everywhere else."""
    by_type = ffi.unpack(stats.messages_by_type, 128)
    return {
        "frames": stats.frames,
        "packets": stats.packets,
        "bytes": stats.bytes,
        "messages": stats.messages,
        "messages_by_type": {chr(t): n for t, n in enumerate(by_type) if n},
        "gaps": stats.gaps,
        "missing": stats.missing,
        "recovered": stats.recovered,
        "duplicates": stats.duplicates,
        "heartbeats": stats.heartbeats,
        "end_of_session": stats.end_of_session,
        "malformed": stats.malformed,
        "malformed_by_reason": {name: stats.malformed_by_reason[reason]
                                for reason, name in MALFORMED_REASONS.items()},
        "unmatched": stats.unmatched,
        "sessions_replaced": stats.sessions_replaced,
        # sequencing under hostile or extreme input (docs/design.md, "Sequencing rules")
        "suspect_jumps": stats.suspect_jumps,
        "confirmed_jumps": stats.confirmed_jumps,
        "window_overflow": stats.window_overflow,
        "beyond_window": stats.beyond_window,
        "after_end": stats.after_end,
        "last_packet_mono_ns": stats.last_packet_mono_ns,
        "lines": {name: {"packets": stats.line_packets[i],
                         "first_messages": stats.line_first_messages[i]}
                  for i, name in enumerate(line_names)},
        "exchange_time": exchange_time_to_dict(stats),
        "latency": latency_to_dict(stats, line_names),
        **book_stats_to_dict(stats.books),
        "rerequest": rerequest_to_dict(stats),
        # in-order delivery to the books (docs/design.md "Delivery in order")
        "delivery": {"delivered": stats.delivered, "lost": stats.delivered_lost,
                     "held": stats.delivery_held, "forced": stats.delivery_forced},
    }


def rerequest_to_dict(stats) -> dict:
    """Gap recovery by MoldUDP64 re-request (docs/design.md "Gap recovery"); `recovery` is the time
    from a gap's declaration to each of its messages coming back."""
    recovery = stats.recovery
    return {
        "requests_sent": stats.requests_sent,
        "messages_requested": stats.messages_requested,
        "recovered": stats.recovered_by_request,
        "timed_out": stats.requests_timed_out,
        "given_up": stats.gaps_given_up,
        "overflow": stats.request_overflow,
        "outstanding": stats.requests_outstanding,
        "reply_packets": stats.reply_packets,
        "reply_rejected": stats.reply_rejected,
        "reply_unsolicited": stats.reply_unsolicited,
        "recovery_latency": summarize(recovery.count, recovery.sum, recovery.min, recovery.max,
                                      hist_buckets(recovery)),
    }


def book_stats_to_dict(s) -> dict:
    """`struct tw_book_stats` under the names of contract C8 (book_instruments, book_orders_live,
    book_order_overflow, book_events_published, book_incomplete) and the rest, prefixed book_.
    All 0 when the engine builds no books. `readers_lapped` is counted by each reader
    (consumer.Reader.lapped): the engine cannot see its readers."""
    return {"book_instruments": s.instruments, "book_orders_live": s.orders_live,
            "book_order_overflow": s.order_overflow,
            "book_instrument_overflow": s.instrument_overflow,
            "book_events_published": s.events_published, "book_incomplete": s.incomplete,
            "book_unknown_orders": s.unknown_orders, "book_inconsistent": s.inconsistent,
            "book_losses": s.losses, "book_resets": s.resets, "book_filtered": s.filtered,
            "book_messages": s.messages}


def exchange_time_to_dict(stats) -> dict:
    """Which exchange day the decoder counts ITCH timestamps from, and how many days it still knows."""
    left = stats.exchange_midnights_left
    return {"midnight_ns": stats.exchange_midnight_ns,
            "midnights_left": None if left == 2**64 - 1 else left,   # None: the day never changes
            "latency_skipped": stats.exchange_latency_skipped}
