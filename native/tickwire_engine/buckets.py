"""Arithmetic on histogram bucket lists, [[low_ns, high_ns, count], ...] in ascending order: the
shape the engine's stats JSON carries. Pure Python (no native module), so the agent and the
benchmark's receivers can use it anywhere."""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence


def percentile(buckets: Iterable[Sequence[int]], q: float, max_ns: int | None = None) -> int:
    """The q-quantile (0 < q <= 1) of [[low_ns, high_ns, count], ...] in ascending order: the high
    bound of the bucket holding rank ceil(q * total), clamped to max_ns when given. 0 if empty."""
    if not 0 < q <= 1:
        raise ValueError(f"quantile {q} is outside (0, 1]: use 0.99 for p99")
    buckets = [b for b in buckets if b[2] > 0]
    total = sum(b[2] for b in buckets)
    if total == 0:
        return 0
    rank = max(1, math.ceil(q * total))
    seen = 0
    for _low, high, count in buckets:
        seen += count
        if seen >= rank:
            return high if max_ns is None else min(high, max_ns)
    raise AssertionError("unreachable: rank <= total")


def subtract(after: list[list[int]], before: list[list[int]]) -> list[list[int]]:
    """Buckets recorded between two cumulative snapshots (same layout), in ascending order."""
    earlier = {low: n for low, _high, n in before}
    delta = [[low, high, n - earlier.get(low, 0)] for low, high, n in after]
    if any(n < 0 for _, _, n in delta) or set(earlier) - {low for low, _, _ in after}:
        raise ValueError("the 'after' histogram is not a later snapshot of the 'before' one")
    return [b for b in delta if b[2] > 0]


def merge(*bucket_lists: list[list[int]]) -> list[list[int]]:
    """One bucket list holding the counts of all the given ones."""
    merged: dict[int, list[int]] = {}
    for buckets in bucket_lists:
        for low, high, n in buckets:
            merged.setdefault(low, [low, high, 0])[2] += n
    return [merged[low] for low in sorted(merged)]
