"""The engine's latency histogram layout (tickwire.h, hist.c) in plain Python, and bucket arithmetic.

The Python contender records into this so its histogram has exactly the engine's buckets without
loading the C extension; tests check bucket_index() against the C tw_hist_index(). The benchmark
runner uses subtract() and merge() on the [[low_ns, high_ns, count], ...] lists that every
contender's stats JSON carries, to get one trial's latencies out of cumulative counts.
"""
from __future__ import annotations

from tickwire_engine.buckets import merge, subtract  # noqa: F401  (the runner's bucket arithmetic)

LINEAR_LIMIT = 64   # values below this have a bucket each
SUB_BUCKETS = 32    # buckets per power of two above it
BUCKETS = 1024
LAST = BUCKETS - 1
UINT64_MAX = (1 << 64) - 1


def bucket_index(value_ns: int) -> int:
    if value_ns < LINEAR_LIMIT:
        return value_ns
    e = value_ns.bit_length() - 1
    index = LINEAR_LIMIT + (e - 6) * SUB_BUCKETS + ((value_ns >> (e - 5)) & (SUB_BUCKETS - 1))
    return min(index, LAST)


def bucket_low(index: int) -> int:
    index = min(index, LAST)
    if index < LINEAR_LIMIT:
        return index
    e = 6 + (index - LINEAR_LIMIT) // SUB_BUCKETS
    sub = (index - LINEAR_LIMIT) % SUB_BUCKETS
    return (SUB_BUCKETS + sub) << (e - 5)


def bucket_high(index: int) -> int:
    return UINT64_MAX if index >= LAST else bucket_low(index + 1) - 1


class Histogram:
    """Counts per bucket plus exact count, sum, min and max, like `struct tw_hist`."""

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.count = self.sum = self.min = self.max = 0

    def record(self, value_ns: int, times: int = 1) -> None:
        if self.count == 0 or value_ns < self.min:
            self.min = value_ns
        if value_ns > self.max:
            self.max = value_ns
        self.count += times
        self.sum += value_ns * times
        index = bucket_index(value_ns)
        self.counts[index] = self.counts.get(index, 0) + times

    def to_dict(self) -> dict:
        return {"count": self.count, "sum": self.sum, "min": self.min, "max": self.max,
                "buckets": [[bucket_low(i), bucket_high(i), n] for i, n in sorted(self.counts.items())]}
