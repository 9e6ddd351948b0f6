"""Rate pacing against time.perf_counter_ns: sleep while far from the deadline, then spin.

time.sleep() on Linux wakes up some 50-100 us late, too coarse for packet gaps of a few
microseconds, so the last stretch is a busy wait. Every wait is bounded (in spins and, through the
deadline, in time). A sender that falls behind (preempted by the scheduler on a busy host, or
planning a chunk) catches up in a burst of at most MAX_LAG_NS worth of packets, which keeps the
average rate on target through the usual few-millisecond preemptions; beyond that the schedule
slides, so a long stall never turns into a long line-rate burst. The summary reports the slide.
"""
from __future__ import annotations

import time

SLEEP_MARGIN_NS = 200_000    # spin through the last 200 us before a deadline
MAX_SPINS = 2_000_000        # hard bound on one busy wait (~100 ms of perf_counter_ns calls)
MAX_LAG_NS = 20_000_000      # catch up at most 20 ms of backlog at full speed


def wait_until(deadline_ns: int, clock=time.perf_counter_ns) -> int:
    """Returns the clock once it reached the deadline (or the spin bound ran out)."""
    now = clock()
    remaining = deadline_ns - now
    if remaining > SLEEP_MARGIN_NS:
        time.sleep((remaining - SLEEP_MARGIN_NS) / 1e9)
    for _ in range(MAX_SPINS):
        now = clock()
        if now >= deadline_ns:
            break
    return now


class Pacer:
    """Spaces units (messages or packets) at `rate` per second from the first call on."""

    def __init__(self, rate_per_s: float, clock=time.perf_counter_ns):
        if not rate_per_s > 0:
            raise ValueError(f"rate must be > 0, got {rate_per_s}")
        self.ns_per_unit = 1e9 / rate_per_s
        self.clock = clock
        self.base_ns: int | None = None
        self.units = 0
        self.slid_ns = 0             # total time the schedule slid because the sender fell behind

    def due_ns(self) -> int:
        if self.base_ns is None:
            self.base_ns = self.clock()
        return self.base_ns + int(self.units * self.ns_per_unit)

    def pace(self, units: int) -> None:
        """Waits until the next `units` may go, then counts them as sent."""
        due = self.due_ns()
        now = self.clock()
        if now < due:
            wait_until(due, self.clock)
        elif now - due > MAX_LAG_NS:
            slide = now - due - MAX_LAG_NS
            self.base_ns += slide
            self.slid_ns += slide
        self.units += units
