"""Prometheus metrics: the engine's stats JSON, exposed on scrape by a custom collector.

The engine writes its counters and histograms to a file every interval; the agent reads the
latest snapshot and this collector turns it into metric families when Prometheus scrapes, so
nothing is copied per packet and nothing is kept twice. Labels are `feed` and, where the
engine keeps the number per line, `line`; counters broken down by a small fixed set (ITCH
message type, malformed reason, ring drop reason) carry that as a label too.

Counters stay monotonic across engine restarts: the engine counts from zero when it starts again,
so the agent carries each finished run's counts and exports the total over every run it has seen
(counter_reset.RunningTotals). Only an agent restart resets them, which Prometheus's rate() and
increase() handle as the counter reset it is; `tickwire_engine_restarts_total` counts the others.

Histograms: the engine keeps log-linear buckets about 3% wide; Prometheus wants fixed `le`
bounds. Each engine bucket is counted under the first bound at or above its *high* edge, so a
quantile read from these can only overstate the latency, never understate it.
"""
from __future__ import annotations

import math
from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from .counter_reset import RunningTotals

# Seconds. Dense below 10 us, where a kernel-bypass feed lives; coarser up to 10 s for the bad days.
LATENCY_BOUNDS_S = tuple(ns / 1e9 for ns in (
    100, 200, 300, 400, 500, 600, 700, 800, 900,
    1_000, 1_250, 1_500, 1_750, 2_000, 2_500, 3_000, 3_500, 4_000, 5_000, 6_000, 7_000, 8_000, 9_000,
    10_000, 12_500, 15_000, 20_000, 25_000, 35_000, 50_000, 75_000,
    100_000, 150_000, 200_000, 300_000, 500_000, 750_000,
    1_000_000, 1_500_000, 2_000_000, 3_000_000, 5_000_000, 7_500_000,
    10_000_000, 25_000_000, 100_000_000, 1_000_000_000, 10_000_000_000))

STAGES = {"kernel_to_engine": "Kernel receive (XDP) to the engine's poll thread",
          "exchange_to_engine": "Exchange timestamp (ITCH) to the engine's poll thread"}

RING_DROPS = {"rx_dropped": "dropped", "rx_invalid_descs": "invalid_descs",
              "rx_ring_full": "ring_full", "rx_fill_ring_empty_descs": "fill_ring_empty"}

SIMPLE_COUNTERS = (
    # (metric name without _total, stats key, help)
    ("tickwire_gaps", "gaps", "Sequence gaps no line filled in time"),
    ("tickwire_missing_messages", "missing", "Messages in those gaps"),
    ("tickwire_recovered_messages", "recovered", "Messages that arrived after being counted missing"),
    ("tickwire_duplicate_messages", "duplicates", "Message copies already seen (the losing line of A/B)"),
    ("tickwire_heartbeats", "heartbeats", "MoldUDP64 heartbeats (packets with no messages)"),
    ("tickwire_suspect_sequence_jumps", "suspect_jumps",
     "Packets whose sequence number jumped implausibly far, held until confirmed"),
    ("tickwire_confirmed_sequence_jumps", "confirmed_jumps", "Suspect jumps confirmed and applied"),
    ("tickwire_beyond_window_messages", "beyond_window",
     "Copies older than the sequence window, taken as first copies"),
    ("tickwire_unmatched_frames", "unmatched", "Frames that reached the engine but belong to no line"),
    ("tickwire_received_bytes", "bytes", "Bytes of the feed's frames"),
)

# The order books and their stream (contract C8), present in the stats only while books are on.
BOOK_COUNTERS = (
    ("tickwire_book_messages", "book_messages", "ITCH messages applied to the books"),
    ("tickwire_book_events_published", "book_events_published",
     "Book events written to the shared-memory stream"),
    ("tickwire_book_order_overflow", "book_order_overflow",
     "Orders refused because the books held maxOrders already (their books are incomplete)"),
    ("tickwire_book_instrument_overflow", "book_instrument_overflow",
     "Messages of instruments beyond maxInstruments, ignored"),
    ("tickwire_book_unknown_orders", "book_unknown_orders",
     "References to orders the books never saw (a start mid-day, a lost add)"),
    ("tickwire_book_inconsistent", "book_inconsistent",
     "Messages the books could not apply consistently (a duplicate add, an execution beyond an order)"),
    ("tickwire_book_losses", "book_losses", "Lost ranges reported to the books (every book marked incomplete)"),
    ("tickwire_book_resets", "book_resets", "Start-of-messages events that cleared every book"),
    ("tickwire_book_filtered", "book_filtered", "Messages of instruments outside the symbol filter"),
)
BOOK_GAUGES = (
    ("tickwire_book_instruments", "book_instruments", "Instruments with an order book"),
    ("tickwire_book_orders_live", "book_orders_live", "Live orders in the books"),
    ("tickwire_book_incomplete_instruments", "book_incomplete",
     "Instruments whose book is marked incomplete (a lost message, a start mid-day) until rebuilt"),
)
# Readers are not here: the engine never learns who reads (it never waits for anyone), and readers
# have no write access to anything of the feed's, so each reader counts its own laps
# (tickwire_engine.consumer.Reader.lapped) and exports them itself (docs/consumers.md).
# Gap recovery by MoldUDP64 re-request (stats["rerequest"]; docs/design.md "Gap recovery").
REREQUEST_COUNTERS = (
    ("tickwire_rerequest_requests", "requests_sent", "MoldUDP64 re-requests sent"),
    ("tickwire_rerequest_requested_messages", "messages_requested", "Messages those requests asked for"),
    ("tickwire_rerequest_recovered_messages", "recovered", "Messages recovered by re-request"),
    ("tickwire_rerequest_timeouts", "timed_out", "Re-requests whose wait ran out without an answer"),
    ("tickwire_rerequest_given_up", "given_up",
     "Requested ranges given up (out of attempts or of the sequence window): counted in gaps"),
    ("tickwire_rerequest_overflow_messages", "overflow",
     "Messages given up at once because the request table was full"),
    ("tickwire_rerequest_reply_packets", "reply_packets", "Packets received on the re-request socket"),
    ("tickwire_rerequest_rejected_replies", "reply_rejected",
     "Replies rejected whole: malformed, not data, or of a session not followed"),
    ("tickwire_rerequest_unsolicited_messages", "reply_unsolicited",
     "Messages in replies that no outstanding request asked for (dropped)"),
)


class AgentView:
    """What the collector reads; the agent updates it, scrapes read it (one reference swap)."""

    def __init__(self, feed: str):
        self.feed = feed
        self._totals = RunningTotals()
        self._stats: dict | None = None
        self.engine_up = False
        self.engine_restarts = 0
        self.drift_events: dict[str, int] = {}      # setting label -> times found changed
        self.drifted: dict[str, bool] = {}          # setting label -> differs right now
        self.books = False                          # the plan has books on: the book families are real
        self.engine_cpus: tuple[int, ...] = ()      # where the poll thread runs (the agent's choice)
        self.housekeeping_cpus: tuple[int, ...] = ()

    @property
    def stats(self) -> dict | None:
        """The engine's latest stats, with every counter totalled over the engine runs seen."""
        return self._stats

    @stats.setter
    def stats(self, latest: dict | None) -> None:
        self._stats = self._totals.observe(latest)


class EngineCollector(Collector):
    def __init__(self, view: AgentView):
        self.view = view

    def describe(self) -> Iterable:
        return []   # families depend on the snapshot; an empty describe keeps registration cheap

    def collect(self) -> Iterable:
        view, stats = self.view, self.view.stats
        feed = [view.feed]
        yield _gauge("tickwire_engine_up", "1 while the engine process runs", feed, float(view.engine_up))
        yield _counter("tickwire_engine_restarts", "Engine restarts after a crash", feed, view.engine_restarts)
        cpus = GaugeMetricFamily("tickwire_cpu", "1 for each CPU this feed uses: role engine (its poll thread) "
                                 "or housekeeping (the agent's own threads)", labels=["feed", "role", "cpu"])
        for role, chosen in (("engine", view.engine_cpus), ("housekeeping", view.housekeeping_cpus)):
            for c in chosen:
                cpus.add_metric([view.feed, role, str(c)], 1.0)
        yield cpus
        drift_events = CounterMetricFamily("tickwire_host_drift_events",
                                           "Times a host setting was found changed under the agent",
                                           labels=["feed", "setting"])
        drifted = GaugeMetricFamily("tickwire_host_drifted", "1 while a host setting differs from the plan",
                                    labels=["feed", "setting"])
        for setting in sorted(view.drifted):
            drift_events.add_metric([view.feed, setting], view.drift_events.get(setting, 0))
            drifted.add_metric([view.feed, setting], float(view.drifted[setting]))
        yield drift_events
        yield drifted
        if stats is None:
            return
        yield from self._counters(stats)
        yield from self._gauges(stats)
        yield from self._books(stats)
        for stage, help_text in STAGES.items():
            yield self._histogram(stats, stage, help_text)

    def _counters(self, stats: dict):
        feed = self.view.feed
        packets = CounterMetricFamily("tickwire_packets", "MoldUDP64 packets received, per line",
                                      labels=["feed", "line"])
        first = CounterMetricFamily("tickwire_line_first_messages",
                                    "Messages this line delivered first (A/B arbitration wins)",
                                    labels=["feed", "line"])
        for line, numbers in sorted(stats.get("lines", {}).items()):
            packets.add_metric([feed, line], numbers.get("packets", 0))
            first.add_metric([feed, line], numbers.get("first_messages", 0))
        yield packets
        yield first
        messages = CounterMetricFamily("tickwire_messages", "ITCH messages, counted once, by type letter",
                                       labels=["feed", "type"])
        for letter, n in sorted(stats.get("messages_by_type", {}).items()):
            messages.add_metric([feed, letter], n)
        yield messages
        for name, key, help_text in SIMPLE_COUNTERS:
            yield _counter(name, help_text, [feed], stats.get(key, 0))
        malformed = CounterMetricFamily("tickwire_malformed", "Frames, packets or messages dropped as malformed",
                                        labels=["feed", "reason"])
        for reason, n in sorted(stats.get("malformed_by_reason", {}).items()):
            malformed.add_metric([feed, reason], n)
        yield malformed
        drops = CounterMetricFamily("tickwire_afxdp_rx_drops", "AF_XDP ring drops (XDP_STATISTICS), by reason",
                                    labels=["feed", "reason"])
        ring = stats.get("ring") or {}
        for key, reason in RING_DROPS.items():
            drops.add_metric([feed, reason], ring.get(key, 0))
        yield drops
        rerequest = stats.get("rerequest") or {}
        for name, key, help_text in REREQUEST_COUNTERS:
            yield _counter(name, help_text, [feed], rerequest.get(key, 0))
        skipped = (stats.get("exchange_time") or {}).get("latency_skipped", 0)
        yield _counter("tickwire_exchange_latency_skipped", "Messages without an exchange-to-engine "
                       "latency: stamped in the engine's future, or past the exchange midnights it knows",
                       [feed], skipped)

    def _gauges(self, stats: dict):
        feed = [self.view.feed]
        rate = stats.get("rate") or {}
        yield _gauge("tickwire_messages_per_second", "ITCH message rate", feed, rate.get("messages_per_s", 0.0))
        yield _gauge("tickwire_packets_per_second", "Packet rate", feed, rate.get("packets_per_s", 0.0))
        mode = GaugeMetricFamily("tickwire_xdp_mode", "1 for the XDP mode actually attached",
                                 labels=["feed", "mode"])
        for name in ("native", "generic"):
            mode.add_metric([self.view.feed, name], float(stats.get("xdp_mode") == name))
        yield mode
        yield _gauge("tickwire_zero_copy", "1 when the AF_XDP socket runs in zero-copy mode", feed,
                     float(bool(stats.get("zero_copy"))))
        yield _gauge("tickwire_umem_hugepages", "1 when the UMEM sits on 2 MiB hugepages", feed,
                     float(bool(stats.get("hugepages"))))
        left = (stats.get("exchange_time") or {}).get("midnights_left")
        yield _gauge("tickwire_exchange_midnights_left", "Exchange midnights the engine still knows "
                     "(0: no exchange latency is recorded any more, restart the engine; NaN: a fixed day)",
                     feed, math.nan if left is None else left)
        rerequest = stats.get("rerequest") or {}
        config = rerequest.get("config")
        server = GaugeMetricFamily("tickwire_rerequest_server", "1 with the re-request server this engine "
                                   "asks and its limits (absent: re-request off)",
                                   labels=["feed", "server", "max_messages", "timeout_ms", "attempts", "rate"])
        if config:
            server.add_metric([self.view.feed, config["server"], str(config["max_messages"]),
                               str(config["timeout_ms"]), str(config["attempts"]), str(config["rate"])], 1.0)
        yield server
        yield _gauge("tickwire_rerequest_outstanding", "Requested ranges still waiting for an answer", feed,
                     rerequest.get("outstanding", 0))
        recovery = rerequest.get("recovery_latency") or {}
        quantiles = GaugeMetricFamily("tickwire_rerequest_recovery_seconds", "Time from a declared gap to "
                                      "its message recovered by request, this engine run (NaN: none yet)",
                                      labels=["feed", "quantile"])
        for name, q in (("p50", "0.5"), ("p99", "0.99")):
            quantiles.add_metric([self.view.feed, q],
                                 recovery[name] / 1e9 if recovery.get("count") else math.nan)
        yield quantiles
        age = stats.get("last_packet_age_s")
        yield _gauge("tickwire_last_packet_age_seconds", "Seconds since the last packet (NaN before the first)",
                     feed, math.nan if age is None else age)

    def _books(self, stats: dict):
        """Only while books are on: the engine reports zeros otherwise, which a dashboard would take
        for real, empty books."""
        if not self.view.books:
            return
        feed = [self.view.feed]
        for name, key, help_text in BOOK_COUNTERS:
            if key in stats:
                yield _counter(name, help_text, feed, stats[key])
        for name, key, help_text in BOOK_GAUGES:
            if key in stats:
                yield _gauge(name, help_text, feed, stats[key])

    def _histogram(self, stats: dict, stage: str, help_text: str) -> HistogramMetricFamily:
        family = HistogramMetricFamily(f"tickwire_{stage}_latency_seconds", help_text, labels=["feed", "line"])
        lines = ((stats.get("latency") or {}).get(stage) or {}).get("lines") or {}
        for line, hist in sorted(lines.items()):
            buckets, approx_sum_s = prometheus_buckets(hist.get("buckets", []))
            exact_sum_ns = hist.get("sum")
            family.add_metric([self.view.feed, line], buckets,
                              approx_sum_s if exact_sum_ns is None else exact_sum_ns / 1e9)
        return family


def prometheus_buckets(engine_buckets: list, bounds: tuple[float, ...] = LATENCY_BOUNDS_S):
    """[[low_ns, high_ns, count], ...] -> ([(le, cumulative count)..., ('+Inf', n)], sum in seconds).

    The sum uses each bucket's midpoint (within the buckets' 3%); the collector prefers the
    engine's exact sum where the stats carry one.
    """
    per_bound = [0] * len(bounds)
    overflow = 0
    total_s = 0.0
    for low, high, count in engine_buckets:
        total_s += count * (low + high) / 2 / 1e9
        index = _first_bound_at_or_above(high / 1e9, bounds)
        if index is None:
            overflow += count
        else:
            per_bound[index] += count
    result, running = [], 0
    for bound, n in zip(bounds, per_bound):
        running += n
        result.append((_le(bound), running))
    result.append(("+Inf", running + overflow))
    return result, total_s


def _first_bound_at_or_above(value: float, bounds) -> int | None:
    for i, bound in enumerate(bounds):
        if value <= bound * (1 + 1e-12):
            return i
    return None


def _le(bound: float) -> str:
    return repr(float(f"{bound:.10g}"))


def _counter(name: str, help_text: str, labels: list[str], value: float) -> CounterMetricFamily:
    family = CounterMetricFamily(name, help_text, labels=["feed"])
    family.add_metric(labels, value)
    return family


def _gauge(name: str, help_text: str, labels: list[str], value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, help_text, labels=["feed"])
    family.add_metric(labels, value)
    return family


def start_server(view: AgentView, address: str, port: int) -> tuple:
    """Serve /metrics on (address, port) from a registry of our own; returns (server, port)."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry(auto_describe=False)
    registry.register(EngineCollector(view))
    server, _thread = start_http_server(port, addr=address, registry=registry)
    return server, server.server_port
