"""The results at a glance: zero-loss rate and CPU per packet beside the latency distributions.

Left: each contender's zero-loss message rate (median, the bar's whisker the range over repeats).
Middle: its receive CPU per packet at the high fixed rate, split into the receiver's own threads
and the kernel's softirq (which on veth runs on the generator's CPU). Right: the latency
percentile plot (log-log), solid at the low fixed rate, dashed at the high one.

Latency plot: x: the percentile on a "nines" scale (50%, 90%, 99%, 99.9%, ...: 1 / (1 - q), log), y: latency in
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


def _main_contenders(doc: dict) -> list[tuple[str, dict]]:
    return [(k, c) for k, c in doc["contenders"].items() if not c.get("tuning")]


def _rate_panel(ax, doc: dict, colors: dict) -> None:
    items = _main_contenders(doc)
    names = [k for k, _ in items]
    values = [c["zero_loss_msgs_per_s"] / 1e6 for _, c in items]
    low = [v - (c.get("zero_loss_msgs_per_s_range") or [v * 1e6] * 2)[0] / 1e6 for v, (_, c) in zip(values, items)]
    high = [(c.get("zero_loss_msgs_per_s_range") or [v * 1e6] * 2)[1] / 1e6 - v for v, (_, c) in zip(values, items)]
    ax.barh(names, values, xerr=[low, high], color=[colors[k] for k in names], capsize=3)
    for i, (_, c) in enumerate(items):
        if c.get("publisher_limited"):   # the generator could not go faster: a lower bound
            ax.text(values[i], i, "  >= (generator-limited)", va="center", fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("zero-loss rate, M messages/s")
    ax.set_title("Zero-loss rate (median, range)")
    ax.grid(True, axis="x", alpha=0.3)


def _cpu_panel(ax, doc: dict, colors: dict) -> None:
    items = [(k, c) for k, c in _main_contenders(doc) if c.get("cpu_breakdown_us_per_packet")]
    names = [k for k, _ in items]
    rx = [sum(c["cpu_breakdown_us_per_packet"]["receiver"].values()) for _, c in items]
    soft = [sum(c["cpu_breakdown_us_per_packet"]["softirq"].values()) for _, c in items]
    ax.barh(names, rx, color=[colors[k] for k in names], label="receiver threads")
    ax.barh(names, soft, left=rx, color="lightgray", hatch="//", label="softirq (both CPUs)")
    ax.invert_yaxis()
    ax.set_xlabel("receive CPU per packet, us")
    rate = doc["setup"].get("high_rate_msgs_per_s")
    ax.set_title(f"CPU per packet at {rate / 1e6:g} M msgs/s" if rate else "CPU per packet")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(True, axis="x", alpha=0.3)


def _latency_panel(ax, doc: dict, colors: dict) -> None:
    setup = doc["setup"]
    for key, c in _main_contenders(doc):
        for field, buckets_field, style, rate in (
                ("latency_ns", "latency_buckets", "-", setup.get("latency_rate_msgs_per_s")),
                ("latency_high_ns", "latency_high_buckets", "--", setup.get("high_rate_msgs_per_s"))):
            buckets = c.get(buckets_field) or []
            if not sum(n for _, _, n in buckets):
                continue
            xs, ys = percentile_curve(buckets, c[field]["max"])
            label = f"{key} {rate / 1e6:g}M: p99 {c[field]['p99'] / 1000:,.1f} us" if rate else key
            ax.plot(xs, ys, style, drawstyle="steps-post", linewidth=1.4, color=colors[key], label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(FixedLocator(NINES))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{100 - 100 / x:g}%"))
    ax.xaxis.set_minor_locator(FixedLocator([]))
    ax.set_xlim(left=1)
    ax.set_xlabel("percentile")
    ax.set_ylabel("exchange stamp -> receiver, microseconds")
    ax.set_title("Latency by percentile (solid: low rate, dashed: high rate)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6, loc="lower right")   # the tails rise to the upper right


def plot(doc: dict, path: str) -> str:
    fig, (rate_ax, cpu_ax, lat_ax) = plt.subplots(1, 3, figsize=(18, 6), dpi=110,
                                                  gridspec_kw={"width_ratios": [1, 1, 1.6]})
    palette = plt.get_cmap("tab10")
    colors = {k: palette(i % 10) for i, (k, _) in enumerate(_main_contenders(doc))}
    _rate_panel(rate_ax, doc, colors)
    _cpu_panel(cpu_ax, doc, colors)
    _latency_panel(lat_ax, doc, colors)
    title = f"tickwire benchmark, {doc['setup'].get('when', '')}"
    fig.suptitle(title + (" (QUICK run: a smoke test, not a measurement)" if doc["setup"].get("quick") else ""))
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
