"""Latency plots from the engine's histogram buckets: percentile curves on a log axis."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only: the demo and the benchmark run without a display
import matplotlib.pyplot as plt  # noqa: E402

# Percentiles shown on the x axis as "nines": 50, 90, 99, 99.9, 99.99, ...
_NINES = [0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999]


def percentile_curve(buckets: list[list[int]]) -> tuple[list[float], list[float]]:
    """(percentile, microseconds) pairs from [[low_ns, high_ns, count], ...] buckets."""
    total = sum(b[2] for b in buckets)
    xs, ys = [], []
    if not total:
        return xs, ys
    ordered = sorted(buckets)
    for q in _NINES:
        rank, seen = q * total, 0
        for low, high, count in ordered:
            seen += count
            if seen >= rank:
                xs.append(q * 100)
                ys.append(high / 1e3)
                break
    return xs, ys


def plot_percentiles(series: dict[str, list[list[int]]], path: str, title: str) -> str:
    """One curve per named bucket list; y in microseconds on a log scale."""
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    for name, buckets in series.items():
        xs, ys = percentile_curve(buckets)
        if xs:
            ax.plot(range(len(xs)), ys, marker="o", label=name)
    ax.set_xticks(range(len(_NINES)))
    ax.set_xticklabels([f"p{q * 100:g}" for q in _NINES])
    ax.set_yscale("log")
    ax.set_ylabel("latency (microseconds, log scale)")
    ax.set_xlabel("percentile")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
