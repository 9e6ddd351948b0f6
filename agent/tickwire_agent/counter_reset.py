"""Counter resets: an engine that restarts counts from zero again, and that is a normal event.

The engine's stats are cumulative since *its* start. Whatever the agent derives from two snapshots
(a latency window, "was there a new gap", Prometheus counters) must notice when the second one
comes from a new engine run, or it subtracts across the restart: negative counts, a crash, a
missed gap, a Prometheus counter that goes down.

A new run is recognised by the engine's identity (`stats["engine"]`: pid and start time, written
by the engine CLI) changing, or, without one, by any cumulative count being lower than before.
Pure functions and small classes with no I/O: unit-tested in tests/unit/test_agent_counter_reset.py.
"""
from __future__ import annotations

import copy

# Top-level cumulative counts in the engine's stats (SIMPLE_COUNTERS in metrics.py and more).
COUNTS = ("frames", "packets", "bytes", "messages", "gaps", "missing", "recovered", "duplicates",
          "heartbeats", "end_of_session", "malformed", "unmatched", "sessions_replaced",
          "suspect_jumps", "confirmed_jumps", "window_overflow", "beyond_window", "after_end",
          # the books (contract C8); their gauges (instruments, live orders, incomplete) are not counts
          "book_events_published", "book_order_overflow", "book_instrument_overflow",
          "book_unknown_orders", "book_inconsistent", "book_losses", "book_resets", "book_filtered",
          "book_messages")
# Top-level numbers in the engine's stats that are not counts.
GAUGES = ("last_packet_mono_ns", "book_instruments", "book_orders_live", "book_incomplete")
# Counts kept per key (ITCH type letter, malformed reason) and per line.
KEYED = ("messages_by_type", "malformed_by_reason")
LINE_COUNTS = ("packets", "first_messages")
# Gap recovery (stats["rerequest"]): cumulative per engine run.
REREQUEST_COUNTS = ("requests_sent", "messages_requested", "recovered", "timed_out", "given_up",
                    "overflow", "reply_packets", "reply_rejected", "reply_unsolicited")
# XDP_STATISTICS: cumulative per socket (a new engine opens a new one). fill_ring_stock is a gauge.
RING_COUNTS = ("rx_dropped", "rx_invalid_descs", "rx_ring_full", "rx_fill_ring_empty_descs",
               "tx_invalid_descs")

Path = tuple


def identity(stats: dict | None):
    """Who wrote these counters (the engine CLI's pid and start time), or None if not said."""
    engine = (stats or {}).get("engine")
    return (engine.get("pid"), engine.get("started_at")) if isinstance(engine, dict) else None


def cumulative(stats: dict) -> dict[Path, float]:
    """Every cumulative number in an engine stats document, by its path. Histogram buckets are
    ("latency", stage, "lines", line, "bucket", low_ns): by their low edge only, because the engine
    clamps a bucket's high edge to the largest value seen, which moves within a run."""
    flat: dict[Path, float] = {}
    for key in COUNTS:
        if isinstance(stats.get(key), (int, float)):
            flat[(key,)] = stats[key]
    for group in KEYED:
        for key, n in (stats.get(group) or {}).items():
            flat[(group, key)] = n
    for line, numbers in (stats.get("lines") or {}).items():
        for key in LINE_COUNTS:
            if key in numbers:
                flat[("lines", line, key)] = numbers[key]
    skipped = (stats.get("exchange_time") or {}).get("latency_skipped")
    if skipped is not None:
        flat[("exchange_time", "latency_skipped")] = skipped
    rerequest = stats.get("rerequest") or {}
    for key in REREQUEST_COUNTS:
        if isinstance(rerequest.get(key), (int, float)):
            flat[("rerequest", key)] = rerequest[key]
    ring = stats.get("ring") or {}
    for key in RING_COUNTS:
        if key in ring:
            flat[("ring", key)] = ring[key]
    for stage, entry in (stats.get("latency") or {}).items():
        for line, hist in ((entry or {}).get("lines") or {}).items():
            base = ("latency", stage, "lines", line)
            for key in ("count", "sum"):
                if key in hist:
                    flat[(*base, key)] = hist[key]
            for low, _high, n in hist.get("buckets") or []:
                flat[(*base, "bucket", low)] = n
    return flat


def bucket_highs(stats: dict) -> dict[Path, int]:
    """The high edge of every histogram bucket in the stats, by the bucket's path."""
    return {("latency", stage, "lines", line, "bucket", low): high
            for stage, entry in (stats.get("latency") or {}).items()
            for line, hist in ((entry or {}).get("lines") or {}).items()
            for low, high, _n in hist.get("buckets") or []}


def went_backwards(before: dict[Path, float], after: dict[Path, float]) -> bool:
    """Any count lower after than before. A count that disappeared counts as 0 (the engine never
    drops a bucket or a line), unless its whole group did: the ring counters are absent when the
    socket could not be read, which says nothing about a restart."""
    groups = {path[0] for path in after}
    return any(after.get(path, 0) < n for path, n in before.items() if path[0] in groups)


class RunTracker:
    """Remembers the last stats seen (across gaps with none, while an engine restarts) and says
    whether the next ones begin a new engine run."""

    def __init__(self) -> None:
        self._identity = None
        self._last: dict[Path, float] | None = None

    def observe(self, stats: dict | None) -> bool:
        """True when `stats` start a new run (never for the first stats, nor for None)."""
        if stats is None:
            return False
        flat, ident = cumulative(stats), identity(stats)
        new_run = self._last is not None and (
            (ident is not None and self._identity is not None and ident != self._identity)
            or went_backwards(self._last, flat))
        self._last, self._identity = flat, ident
        return new_run

    @property
    def last(self) -> dict[Path, float]:
        return self._last or {}


class RunningTotals:
    """Cumulative counts that keep rising across engine restarts: each finished run's last counts
    are carried, and the current run's added on top. What Prometheus counters need: a counter
    exported by a process that keeps running (the agent) must never go down."""

    def __init__(self) -> None:
        self._runs = RunTracker()
        self._carried: dict[Path, float] = {}
        self._highs: dict[Path, int] = {}      # histogram buckets' high edges, widest seen
        self.restarts_seen = 0

    def observe(self, stats: dict | None) -> dict | None:
        """`stats` with every cumulative count replaced by its total over all runs seen."""
        if stats is None:
            return None
        finished = self._runs.last
        for path, high in bucket_highs(stats).items():
            self._highs[path] = max(high, self._highs.get(path, high))
        if self._runs.observe(stats):
            self.restarts_seen += 1
            for path, n in finished.items():
                self._carried[path] = self._carried.get(path, 0) + n
        if not self._carried:
            return stats
        current = self._runs.last
        return with_counts(stats, {path: self._carried.get(path, 0) + current.get(path, 0)
                                   for path in self._carried.keys() | current.keys()}, self._highs)


def with_counts(stats: dict, counts: dict[Path, float], highs: dict[Path, int]) -> dict:
    """A copy of `stats` with the counts at these paths; histogram buckets are rebuilt in order,
    each with its high edge from `highs`."""
    out = copy.deepcopy(stats)
    buckets: dict[Path, dict[tuple, float]] = {}
    for path, n in counts.items():
        if len(path) == 6 and path[4] == "bucket":
            buckets.setdefault(path[:4], {})[(path[5], highs[path])] = n
            continue
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = n
    for (_, stage, _, line), by_edge in buckets.items():
        hist = out.setdefault("latency", {}).setdefault(stage, {}).setdefault("lines", {}).setdefault(line, {})
        hist["buckets"] = [[low, high, n] for (low, high), n in sorted(by_edge.items()) if n]
    return out
