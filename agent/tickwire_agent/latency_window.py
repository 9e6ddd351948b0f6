"""Exchange-to-engine latency over the last minute, from the engine's cumulative histograms.

The engine's histograms count from its start; a feed that was slow at 09:30 would otherwise
show that in its p99 all day. The agent keeps the snapshots it reads and subtracts the one from
a window ago, so status and the LatencySLOMet condition speak about now. A restarted engine counts
from zero again (counter_reset.py): the window then starts over from its first snapshot.
"""
from __future__ import annotations

from collections import deque

from tickwire_engine.buckets import merge, percentile, subtract

from .counter_reset import RunTracker

STAGE = "exchange_to_engine"


def _all_lines(stats: dict) -> list[list[int]]:
    lines = ((stats.get("latency") or {}).get(STAGE) or {}).get("lines") or {}
    return merge(*(line.get("buckets") or [] for line in lines.values()))


def _count(buckets: list[list[int]]) -> int:
    return sum(n for _, _, n in buckets)


class LatencyWindow:
    def __init__(self, seconds: float = 60.0):
        self.seconds = seconds
        self._snapshots: deque[tuple[float, list[list[int]]]] = deque()
        self._runs = RunTracker()

    def observe(self, now: float, stats: dict | None) -> None:
        """Keep this snapshot; forget those the window no longer needs (one older than the window
        stays: it is the base the newest is compared with)."""
        if stats is None:
            return
        buckets = _all_lines(stats)
        if self._runs.observe(stats):
            self._snapshots.clear()          # a new engine run: nothing before it subtracts
        self._snapshots.append((now, buckets))
        while len(self._snapshots) > 1 and self._snapshots[1][0] <= now - self.seconds:
            self._snapshots.popleft()

    def summary(self) -> dict | None:
        """{"count", "p50", "p99", "p999" (ns), "seconds"} over the window, or None before any
        snapshot. With a single snapshot it covers the engine's whole run ("seconds" is None)."""
        if not self._snapshots:
            return None
        (base_at, base), (now, latest) = self._snapshots[0], self._snapshots[-1]
        single = len(self._snapshots) == 1
        recent = subtract(latest, [] if single else base)
        return {"count": _count(recent), "p50": percentile(recent, 0.50),
                "p99": percentile(recent, 0.99), "p999": percentile(recent, 0.999),
                "seconds": None if single else now - base_at}
