"""Turn trials into the results: `latest.json` (a shape other tools read) and `latest.md`.

    {"contenders": {"engine": {...}, "kernel_c": {...}, "python": {...}, ...},
     "setup": {...}, "ratios": {...}, "goals": {...}}

Each contender carries zero_loss_msgs_per_s, zero_loss_pkts_per_s, cpu_s_per_million_msgs
(medians over the repeats) and latency_ns {p50, p99, p999, max} at the fixed rate `setup` names
(each the median over the repeats; latency_buckets holds the histogram of the repeat with the
median p99, which the plot draws). Percentiles are the high bound of the histogram bucket holding
the rank (tickwire_engine.stats.percentile), so they err high by at most one bucket (~3%).
"""
from __future__ import annotations

import json
import os
import statistics
from dataclasses import dataclass

from tickwire_engine.stats import percentile

from .search import SearchResult
from .trial import TrialResult

# The goals: engine vs the C kernel baseline and vs Python, measured in the same run.
GOALS = {
    "engine_vs_kernel_c_zero_loss_rate": (">=", 2.0),
    "engine_vs_python_zero_loss_rate": (">=", 30.0),
    "engine_vs_kernel_c_p99": ("<=", 0.5),
}


NOISY = 0.95  # below this CPU availability the results carry a warning


@dataclass
class Repeat:
    """One contender's showing in one round: its rate search and its latency trial."""
    search: SearchResult[TrialResult]
    latency: TrialResult


def latency_summary(buckets: list[list[int]], max_ns: int) -> dict:
    count = sum(n for _, _, n in buckets)
    if not count:
        return {"count": 0, "p50": None, "p99": None, "p999": None, "max": None}
    return {"count": count, "p50": percentile(buckets, 0.50, max_ns), "p90": percentile(buckets, 0.90, max_ns),
            "p99": percentile(buckets, 0.99, max_ns), "p999": percentile(buckets, 0.999, max_ns),
            "max": max_ns}


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _median_is_capped(repeats: list[Repeat]) -> bool:
    """Whether the median zero-loss rate came from a repeat the publisher capped (with an even
    count, either of the two middle ones): then the median is only a lower bound."""
    ranked = sorted(repeats, key=lambda r: r.search.best.detail.msgs_per_s if r.search.best else 0.0)
    if not ranked:
        return False
    middle = ranked[(len(ranked) - 1) // 2:len(ranked) // 2 + 1]
    return any(r.search.publisher_limited for r in middle)


def summarize(label: str, repeats: list[Repeat]) -> dict:
    bests = [r.search.best.detail for r in repeats if r.search.best is not None]
    per_repeat = [latency_summary(r.latency.latency_buckets, r.latency.latency_max_ns) for r in repeats]
    # Latency as the median over repeats of each percentile: one noisy repeat (other work taking
    # the CPU for milliseconds) moves it less than it would move a merged histogram's tail.
    typical = sorted(zip(per_repeat, repeats), key=lambda pr: pr[0]["p99"] or 0)[(len(repeats) - 1) // 2]
    latency = {"count": sum(lat["count"] for lat in per_repeat)}
    for name in ("p50", "p90", "p99", "p999", "max"):
        latency[name] = _median([lat[name] for lat in per_repeat if lat.get(name) is not None])
    cpu = [b.receiver_cpu_s / b.received_messages * 1e6 for b in bests if b.received_messages]
    return {
        "label": label,
        "zero_loss_msgs_per_s": _median([b.msgs_per_s for b in bests]) or 0.0,
        "zero_loss_pkts_per_s": _median([b.pkts_per_s for b in bests]) or 0.0,
        "cpu_s_per_million_msgs": _median(cpu),
        "publisher_limited": _median_is_capped(repeats),
        "latency_ns": latency,
        "latency_rate_msgs_per_s": _median([r.latency.msgs_per_s for r in repeats]),
        "latency_lost_messages": sum(r.latency.lost_messages for r in repeats),
        "latency_buckets": typical[1].latency.latency_buckets,   # the repeat with the median p99
        "repeats": [{
            "zero_loss_msgs_per_s": r.search.best.detail.msgs_per_s if r.search.best else 0.0,
            "zero_loss_pkts_per_s": r.search.best.detail.pkts_per_s if r.search.best else 0.0,
            "stopped_by": r.search.stopped_by,
            "trials": [t.detail.to_dict() for t in r.search.trials],
            "latency_trial": r.latency.to_dict(),
            "latency_ns": latency_summary(r.latency.latency_buckets, r.latency.latency_max_ns),
        } for r in repeats],
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def ratios(contenders: dict) -> dict:
    engine, kernel, python = (contenders.get(k) for k in ("engine", "kernel_c", "python"))
    rate = lambda c: c["zero_loss_msgs_per_s"] if c else None  # noqa: E731
    p99 = lambda c: c["latency_ns"]["p99"] if c else None      # noqa: E731
    return {
        "engine_vs_kernel_c_zero_loss_rate": _ratio(rate(engine), rate(kernel)),
        "engine_vs_python_zero_loss_rate": _ratio(rate(engine), rate(python)),
        "engine_vs_kernel_c_p99": _ratio(p99(engine), p99(kernel)),
        "engine_vs_kernel_c_cpu_per_msg": _ratio(engine and engine["cpu_s_per_million_msgs"],
                                                 kernel and kernel["cpu_s_per_million_msgs"]),
    }


# Which contenders a rate ratio compares: a publisher-limited rate is only a lower bound.
_RATE_PAIRS = {"engine_vs_kernel_c_zero_loss_rate": ("engine", "kernel_c"),
               "engine_vs_python_zero_loss_rate": ("engine", "python")}


def goals(ratio_values: dict, contenders: dict | None = None) -> dict:
    """Each goal met, missed, or None when the run cannot tell: a ratio of two rates of which
    the publisher capped one is a bound, not a measurement."""
    contenders = contenders or {}
    out = {}
    for name, (op, target) in GOALS.items():
        value = ratio_values.get(name)
        met = None if value is None else (value >= target if op == ">=" else value <= target)
        note = ""
        if value is not None and name in _RATE_PAIRS:
            capped = [contenders.get(k, {}).get("publisher_limited", False) for k in _RATE_PAIRS[name]]
            if all(capped):
                met, note = None, "both publisher-limited: the publisher set both rates"
            elif capped[0] and not met:
                met, note = None, "engine publisher-limited: the ratio is a lower bound"
            elif capped[1] and met:
                met, note = None, "baseline publisher-limited: the ratio is an upper bound"
        out[name] = {"target": f"{op} {target}", "measured": value, "met": met, "note": note}
    return out


def document(contenders: dict, setup: dict) -> dict:
    r = ratios(contenders)
    return {"contenders": contenders, "setup": setup, "ratios": r, "goals": goals(r, contenders)}


def _us(ns: int | None) -> str:
    return "-" if ns is None else f"{ns / 1000:,.1f}"


def _num(x: float | None, digits: int = 0) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def markdown(doc: dict) -> str:
    setup = doc["setup"]
    rate = setup.get("latency_rate_msgs_per_s")
    runs = ("QUICK run (short trials, one repeat): a smoke test, not a measurement" if setup.get("quick")
            else f"{setup.get('repeats')} repeats, interleaved; medians")
    lines = [
        "# tickwire engine benchmark",
        "",
        f"{setup.get('when', '')}, kernel {setup.get('host', {}).get('kernel', '?')}, "
        f"{setup.get('placement', {}).get('cpus', '?')} CPUs; "
        f"{runs}.",
        "",
        "| contender | zero-loss msgs/s | zero-loss pkts/s | CPU s / M msgs | p50 us | p99 us | p99.9 us | max us |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, c in doc["contenders"].items():
        lat = c["latency_ns"]
        flag = " (publisher-limited: at least)" if c.get("publisher_limited") else ""
        lines.append(f"| {c['label']} `{key}`{flag} | {_num(c['zero_loss_msgs_per_s'])} | "
                     f"{_num(c['zero_loss_pkts_per_s'])} | {_num(c['cpu_s_per_million_msgs'], 3)} | "
                     f"{_us(lat['p50'])} | {_us(lat['p99'])} | {_us(lat['p999'])} | {_us(lat['max'])} |")
    lines += ["", f"Latency: exchange stamp (publisher's CLOCK_REALTIME at send) to receiver "
                  f"(CLOCK_REALTIME at batch arrival), every message, at {_num(rate)} msgs/s."]
    for key, c in doc["contenders"].items():
        if c.get("latency_lost_messages"):
            lines.append(f"`{key}` could not keep up at that rate: it lost {c['latency_lost_messages']:,} "
                         "messages in its latency trials, so its latencies include queueing.")
    lines += ["",
              "| ratio (same run) | measured | goal | met |", "|---|---:|---:|---|"]
    for name, g in doc["goals"].items():
        met = {True: "yes", False: "**no**", None: "cannot tell"}[g["met"]]
        if g["measured"] is None:
            met = "-"
        lines.append(f"| {name} | {_num(g['measured'], 2)} | {g['target']} | {met}"
                     + (f" ({g['note']})" if g.get("note") else "") + " |")
    cpu = doc["ratios"].get("engine_vs_kernel_c_cpu_per_msg")
    lines += ["", f"engine CPU per message vs kernel_c: {_num(cpu, 2)}x.", "",
              "## Setup", "", f"- placement: {setup.get('placement', {}).get('how', '?')}",
              f"- feed: {setup.get('feed', '')}",
              f"- trials: {setup.get('method', '')}"]
    noise = setup.get("noise", {})
    for when, cpus in noise.items():
        lines.append(f"- CPU availability {when} (share of time a spinning probe ran): "
                     + ", ".join(f"{cpu} {share:.0%}" for cpu, share in cpus.items()))
    if any(share < NOISY for cpus in noise.values() for share in cpus.values()):
        lines.append("- **other work shared these CPUs during the run: rates and tails above measure "
                     "that contention as much as the contenders; rerun on a quiet machine**")
    lines.append("")
    return "\n".join(lines)


def write(doc: dict, out_dir: str) -> dict[str, str]:
    os.makedirs(out_dir, exist_ok=True)
    paths = {"json": os.path.join(out_dir, "latest.json"), "md": os.path.join(out_dir, "latest.md")}
    for kind, text in (("json", json.dumps(doc, indent=1, sort_keys=False) + "\n"), ("md", markdown(doc))):
        tmp = paths[kind] + ".tmp"
        with open(tmp, "w") as out:
            out.write(text)
        os.replace(tmp, paths[kind])
    return paths
