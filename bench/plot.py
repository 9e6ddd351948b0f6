"""The latency distributions as one percentile plot (log-log), so the difference shows at a glance.

x: the percentile on a "nines" scale (50%, 90%, 99%, 99.9%, ...: 1 / (1 - q), log), y: latency in
microseconds (log). Each contender's curve steps through its histogram buckets, plotting each
bucket's high bound at the fraction of messages at or below it, the way HdrHistogram plots do.

    python -m bench.plot bench/results/latest.json bench/results/latest.png
"""
from __future__ import annotations

import sys

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter  # noqa: E402

NINES = [2, 10, 100, 1000, 10000, 100000]  # 1/(1-q) for 50%, 90%, 99%, 99.9%, ...


def percentile_curve(buckets: list[list[int]], max_ns: int) -> tuple[list[float], list[float]]:
    """Points (1 / (1 - fraction at or below), latency us) for a percentile plot."""
    total = sum(n for _, _, n in buckets)
    xs, ys, seen = [], [], 0
    for _low, high, n in buckets:
        before = seen / total
        seen += n
        value_us = min(high, max_ns) / 1000
        after = seen / total
        xs += [1 / (1 - before), 1 / (1 - after) if after < 1 else None]
        ys += [value_us, value_us]
    # The last step has fraction 1 (infinite on this axis): end it one decade past the last point.
    finite = [x for x in xs if x is not None]
    last = max(finite) * 10 if finite else 10
    xs = [last if x is None else x for x in xs]
    return xs, ys


def plot(doc: dict, path: str) -> str:
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    rate = doc["setup"].get("latency_rate_msgs_per_s")
    for key, c in doc["contenders"].items():
        buckets = c.get("latency_buckets") or []
        if not sum(n for _, _, n in buckets):
            continue
        xs, ys = percentile_curve(buckets, c["latency_ns"]["max"])
        ax.plot(xs, ys, drawstyle="steps-post", linewidth=1.6,
                label=f"{c['label']}: p99 {c['latency_ns']['p99'] / 1000:,.1f} us")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(FixedLocator(NINES))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{100 - 100 / x:g}%"))
    ax.xaxis.set_minor_locator(FixedLocator([]))
    ax.set_xlim(left=1)
    ax.set_xlabel("percentile")
    ax.set_ylabel("exchange stamp -> receiver, microseconds")
    title = "Feed latency by percentile"
    if rate:
        title += f" at {rate:,.0f} msgs/s"
    ax.set_title(title + (" (QUICK run)" if doc["setup"].get("quick") else ""))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")  # the tails rise to the upper right
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    import json

    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m bench.plot RESULTS.json OUT.png", file=sys.stderr)
        return 2
    with open(argv[0]) as f:
        plot(json.load(f), argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
