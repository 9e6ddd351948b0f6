"""Turn trials into the results: `latest.json` (a shape other tools read) and `latest.md`.

    {"contenders": {"engine": {...}, "kernel_c": {...}, "python": {...}, ...},
     "setup": {...}, "ratios": {...}, "goals": {...}}

Each contender carries zero_loss_msgs_per_s, zero_loss_pkts_per_s, cpu_s_per_million_msgs
(medians over the repeats) and latency_ns {p50, p99, p999, max} at the fixed rate `setup` names
(the repeats' histograms merged). Percentiles are the high bound of the histogram bucket holding
the rank (tickwire_engine.stats.percentile), so they err high by at most one bucket (~3%).
"""
from __future__ import annotations

import json
import os
import statistics
from dataclasses import dataclass

from tickwire_engine.stats import percentile

from . import histogram
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


def summarize(label: str, repeats: list[Repeat]) -> dict:
    bests = [r.search.best.detail for r in repeats if r.search.best is not None]
    buckets = histogram.merge(*(r.latency.latency_buckets for r in repeats))
    max_ns = max((r.latency.latency_max_ns for r in repeats), default=0)
    cpu = [b.receiver_cpu_s / b.received_messages * 1e6 for b in bests if b.received_messages]
    return {
        "label": label,
        "zero_loss_msgs_per_s": _median([b.msgs_per_s for b in bests]) or 0.0,
        "zero_loss_pkts_per_s": _median([b.pkts_per_s for b in bests]) or 0.0,
        "cpu_s_per_million_msgs": _median(cpu),
        "publisher_limited": any(r.search.publisher_limited for r in repeats),
        "latency_ns": latency_summary(buckets, max_ns),
        "latency_rate_msgs_per_s": _median([r.latency.msgs_per_s for r in repeats]),
        "latency_lost_messages": sum(r.latency.lost_messages for r in repeats),
        "latency_buckets": buckets,
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


def goals(ratio_values: dict) -> dict:
    out = {}
    for name, (op, target) in GOALS.items():
        value = ratio_values.get(name)
        met = None if value is None else (value >= target if op == ">=" else value <= target)
        out[name] = {"target": f"{op} {target}", "measured": value, "met": met}
    return out


def document(contenders: dict, setup: dict) -> dict:
    r = ratios(contenders)
    return {"contenders": contenders, "setup": setup, "ratios": r, "goals": goals(r)}


def _us(ns: int | None) -> str:
    return "-" if ns is None else f"{ns / 1000:,.1f}"


def _num(x: float | None, digits: int = 0) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def markdown(doc: dict) -> str:
    setup = doc["setup"]
    rate = setup.get("latency_rate_msgs_per_s")
    lines = [
        "# tickwire engine benchmark",
        "",
        f"{setup.get('when', '')}, kernel {setup.get('host', {}).get('kernel', '?')}, "
        f"{setup.get('placement', {}).get('cpus', '?')} CPUs; "
        f"{'QUICK run (short trials, one repeat): a smoke test, not a measurement' if setup.get('quick') else str(setup.get('repeats')) + ' repeats, interleaved; medians'}.",
        "",
        f"| contender | zero-loss msgs/s | zero-loss pkts/s | CPU s / M msgs | p50 us | p99 us | p99.9 us | max us |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, c in doc["contenders"].items():
        lat = c["latency_ns"]
        flag = " (publisher-limited: at least)" if c.get("publisher_limited") else ""
        lines.append(f"| {c['label']} `{key}`{flag} | {_num(c['zero_loss_msgs_per_s'])} | "
                     f"{_num(c['zero_loss_pkts_per_s'])} | {_num(c['cpu_s_per_million_msgs'], 3)} | "
                     f"{_us(lat['p50'])} | {_us(lat['p99'])} | {_us(lat['p999'])} | {_us(lat['max'])} |")
    lines += ["", f"Latency: exchange stamp (publisher's CLOCK_REALTIME at send) to receiver "
                  f"(CLOCK_REALTIME at batch arrival), every message, at {_num(rate)} msgs/s.", "",
              "| ratio (same run) | measured | goal | met |", "|---|---:|---:|---|"]
    for name, g in doc["goals"].items():
        met = {True: "yes", False: "**no**", None: "-"}[g["met"]]
        lines.append(f"| {name} | {_num(g['measured'], 2)} | {g['target']} | {met} |")
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
