"""Turn trials into the results: `latest.json` (a shape other tools read) and `latest.md`.

    {"contenders": {"engine": {...}, "kernel_c": {...}, "python": {...}, "dpdk_af_xdp": {...}, ...},
     "setup": {...}, "ratios": {...}, "goals": {...}, "experiments": {...}}

`engine` is the headline (AF_XDP native, busy poll), `kernel_c` the tuned kernel-socket receiver.
Each contender carries zero_loss_msgs_per_s, zero_loss_pkts_per_s (medians over the repeats, with
the range), cpu_s_per_million_msgs (receive CPU, receiver + softirq, in the best clean trial),
cpu_us_per_packet (receive CPU per packet in the trial at the fixed high rate: comparable across
contenders), latency_ns {p50, p99, p999, max} at the first fixed rate and latency_high_ns at the
second (each the median over the repeats; latency_buckets holds the histogram of the repeat with
the median p99, which the plot draws), and every repeat's trials. Percentiles are the high bound
of the histogram bucket holding the rank (tickwire_engine.stats.percentile): at most ~3% high.
"""
from __future__ import annotations

import json
import os
import statistics
from dataclasses import dataclass

from tickwire_engine.stats import percentile

from .search import SearchResult
from .trial import TrialResult

# The goals, each a ratio measured in one run. CPU is compared between the receivers that
# sleep (engine with poll() against the blocking kernel socket): a spinning receiver burns its
# core whatever the rate, so its CPU per packet says how busy the feed was, not what it costs.
GOALS = {
    "engine_vs_kernel_c_zero_loss_rate": (">=", 2.5),
    "engine_vs_python_zero_loss_rate": (">=", 30.0),
    "engine_vs_kernel_c_cpu_per_packet_sleeping": ("<=", 0.5),
    "engine_vs_kernel_c_p99": ("<=", 1.0),
    "engine_vs_kernel_c_p99_high_rate": ("<=", 1.0),
    "engine_vs_dpdk_zero_loss_rate": (">=", 1.0),
}


NOISY = 0.95  # below this CPU availability the results carry a warning


@dataclass
class Repeat:
    """One contender's showing in one round: its rate search and its fixed-rate trials."""
    search: SearchResult[TrialResult]
    latency: TrialResult
    high: TrialResult | None = None     # the trial at the high fixed rate (CPU per packet, latency)


def latency_summary(buckets: list[list[int]], max_ns: int) -> dict:
    count = sum(n for _, _, n in buckets)
    if not count:
        return {"count": 0, "p50": None, "p90": None, "p99": None, "p999": None, "max": None}
    return {"count": count, "p50": percentile(buckets, 0.50, max_ns), "p90": percentile(buckets, 0.90, max_ns),
            "p99": percentile(buckets, 0.99, max_ns), "p999": percentile(buckets, 0.999, max_ns),
            "max": max_ns}


def _median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _median_is_capped(repeats: list[Repeat]) -> bool:
    """Whether the median zero-loss rate came from a repeat the generator capped (with an even
    count, either of the two middle ones): then the median is only a lower bound."""
    ranked = sorted(repeats, key=lambda r: r.search.best.detail.msgs_per_s if r.search.best else 0.0)
    if not ranked:
        return False
    middle = ranked[(len(ranked) - 1) // 2:len(ranked) // 2 + 1]
    return any(r.search.publisher_limited for r in middle)


def _latencies(trials: list[TrialResult]) -> tuple[dict, list]:
    """Median over repeats of each percentile (one noisy repeat moves it less than it would move a
    merged histogram's tail), and the buckets of the repeat with the median p99."""
    per_repeat = [latency_summary(t.latency_buckets, t.latency_max_ns) for t in trials]
    typical = sorted(zip(per_repeat, trials), key=lambda pr: pr[0]["p99"] or 0)[(len(trials) - 1) // 2]
    latency = {"count": sum(lat["count"] for lat in per_repeat)}
    for name in ("p50", "p90", "p99", "p999", "max"):
        latency[name] = _median([lat[name] for lat in per_repeat])
    return latency, typical[1].latency_buckets


def _cpu_breakdown(t: TrialResult) -> dict:
    """Where one trial's receive CPU went, in us per packet: the receiver's threads by the CPU
    each is pinned to, and softirq by CPU."""
    n = t.sent_packets or 1
    return {"receiver": {c: round(s / n * 1e6, 3) for c, s in t.receiver_cpu_by_cpu_s.items()},
            "softirq": {c: round(s / n * 1e6, 3) for c, s in t.softirq_s.items()},
            "total": round(t.receive_cpu_s / n * 1e6, 3)}


def summarize(contender, repeats: list[Repeat]) -> dict:
    label = contender if isinstance(contender, str) else contender.label
    bests = [r.search.best.detail for r in repeats if r.search.best is not None]
    latency, buckets = _latencies([r.latency for r in repeats])
    highs = [r.high for r in repeats if r.high is not None]
    cpu = [b.receive_cpu_s / b.received_messages * 1e6 for b in bests if b.received_messages]
    rates = [b.msgs_per_s for b in bests]
    out = {
        "label": label,
        "zero_loss_msgs_per_s": _median(rates) or 0.0,
        "zero_loss_pkts_per_s": _median([b.pkts_per_s for b in bests]) or 0.0,
        "zero_loss_msgs_per_s_range": [min(rates), max(rates)] if rates else None,
        "cpu_s_per_million_msgs": _median(cpu),
        "publisher_limited": _median_is_capped(repeats),
        "latency_ns": latency,
        "latency_rate_msgs_per_s": _median([r.latency.msgs_per_s for r in repeats]),
        "latency_lost_messages": sum(r.latency.lost_messages for r in repeats),
        "latency_buckets": buckets,
    }
    if not isinstance(contender, str):
        out.update({"kind": contender.kind, "waits": contender.waits, "tuning": contender.tuning,
                    "counts": "packets" if contender.kind == "dpdk" else "messages"})
        if contender.note:
            out["note"] = contender.note
    if highs:
        high_latency, high_buckets = _latencies(highs)
        per_packet = [t.cpu_us_per_packet for t in highs]
        typical = min(highs, key=lambda t: abs(t.cpu_us_per_packet - _median(per_packet)))
        out.update({
            "cpu_us_per_packet": _median(per_packet),
            "cpu_us_per_packet_range": [min(per_packet), max(per_packet)],
            "cpu_breakdown_us_per_packet": _cpu_breakdown(typical),
            "latency_high_ns": high_latency,
            "latency_high_rate_msgs_per_s": _median([t.msgs_per_s for t in highs]),
            "latency_high_lost_messages": sum(t.lost_messages for t in highs),
            "latency_high_buckets": high_buckets,
        })
    out["repeats"] = [{
        "zero_loss_msgs_per_s": r.search.best.detail.msgs_per_s if r.search.best else 0.0,
        "zero_loss_pkts_per_s": r.search.best.detail.pkts_per_s if r.search.best else 0.0,
        "stopped_by": r.search.stopped_by,
        "trials": [t.detail.to_dict() for t in r.search.trials],
        "latency_trial": r.latency.to_dict(),
        "latency_ns": latency_summary(r.latency.latency_buckets, r.latency.latency_max_ns),
        **({"high_rate_trial": r.high.to_dict(),
            "latency_high_ns": latency_summary(r.high.latency_buckets, r.high.latency_max_ns)}
           if r.high is not None else {}),
    } for r in repeats]
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def ratios(contenders: dict) -> dict:
    get = contenders.get
    rate = lambda k: get(k)["zero_loss_msgs_per_s"] if get(k) else None        # noqa: E731
    p99 = lambda k, f="latency_ns": get(k)[f]["p99"] if get(k) and get(k).get(f) else None  # noqa: E731
    cpu = lambda k: get(k).get("cpu_us_per_packet") if get(k) else None         # noqa: E731
    return {
        "engine_vs_kernel_c_zero_loss_rate": _ratio(rate("engine"), rate("kernel_c")),
        "engine_vs_python_zero_loss_rate": _ratio(rate("engine"), rate("python")),
        "engine_vs_dpdk_zero_loss_rate": _ratio(rate("engine"), rate("dpdk_af_xdp")),
        "engine_vs_kernel_c_p99": _ratio(p99("engine"), p99("kernel_c")),
        "engine_vs_kernel_c_p99_high_rate": _ratio(p99("engine", "latency_high_ns"),
                                                   p99("kernel_c", "latency_high_ns")),
        "engine_vs_kernel_c_cpu_per_packet_sleeping": _ratio(cpu("engine_poll"), cpu("kernel_c_sleep")),
        "engine_vs_kernel_c_cpu_per_packet_spinning": _ratio(cpu("engine"), cpu("kernel_c")),
        "engine_vs_kernel_c_cpu_per_msg": _ratio(get("engine") and get("engine")["cpu_s_per_million_msgs"],
                                                 get("kernel_c") and get("kernel_c")["cpu_s_per_million_msgs"]),
    }


# Which contenders a rate ratio compares: a publisher-limited rate is only a lower bound.
_RATE_PAIRS = {"engine_vs_kernel_c_zero_loss_rate": ("engine", "kernel_c"),
               "engine_vs_python_zero_loss_rate": ("engine", "python"),
               "engine_vs_dpdk_zero_loss_rate": ("engine", "dpdk_af_xdp")}


def goals(ratio_values: dict, contenders: dict | None = None) -> dict:
    """Each goal met, missed, or None when the run cannot tell: a ratio of two rates of which
    the generator capped one is a bound, not a measurement."""
    contenders = contenders or {}
    out = {}
    for name, (op, target) in GOALS.items():
        value = ratio_values.get(name)
        met = None if value is None else (value >= target if op == ">=" else value <= target)
        note = ""
        if value is not None and name in _RATE_PAIRS:
            capped = [contenders.get(k, {}).get("publisher_limited", False) for k in _RATE_PAIRS[name]]
            if all(capped):
                met, note = None, "both generator-limited: the generator set both rates"
            elif capped[0] and not met:
                met, note = None, "engine generator-limited: the ratio is a lower bound"
            elif capped[1] and met:
                met, note = None, "baseline generator-limited: the ratio is an upper bound"
        out[name] = {"target": f"{op} {target}", "measured": value, "met": met, "note": note}
    return out


def document(contenders: dict, setup: dict, experiments: dict | None = None) -> dict:
    r = ratios(contenders)
    doc = {"contenders": contenders, "setup": setup, "ratios": r, "goals": goals(r, contenders)}
    if experiments:
        doc["experiments"] = experiments
    return doc


def _us(ns: int | None) -> str:
    return "-" if ns is None else f"{ns / 1000:,.1f}"


def _num(x: float | None, digits: int = 0) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def _range(r: list | None) -> str:
    return "" if not r else f" ({r[0] / 1e6:.2f}-{r[1] / 1e6:.2f})"


def _where(c: dict) -> str:
    """CPU per packet by place: the receiver's threads and softirq, per CPU."""
    b = c.get("cpu_breakdown_us_per_packet")
    if not b:
        return "-"
    parts = [f"rx {cpu} {v:.2f}" for cpu, v in sorted(b["receiver"].items()) if v >= 0.005]
    parts += [f"softirq {cpu} {v:.2f}" for cpu, v in sorted(b["softirq"].items()) if v >= 0.005]
    return ", ".join(parts) or "-"


def _contender_rows(doc: dict, tuning: bool) -> list[str]:
    rows = []
    for key, c in doc["contenders"].items():
        if bool(c.get("tuning")) != tuning:
            continue
        lat, high = c["latency_ns"], c.get("latency_high_ns") or {}
        flag = " (generator-limited: at least)" if c.get("publisher_limited") else ""
        rows.append(
            f"| {c['label']} `{key}`{flag} | {c.get('waits', '-')} | "
            f"{c['zero_loss_msgs_per_s'] / 1e6:.2f}{_range(c.get('zero_loss_msgs_per_s_range'))} | "
            f"{c['zero_loss_pkts_per_s'] / 1e6:.2f} | {_num(c.get('cpu_us_per_packet'), 2)} | {_where(c)} | "
            f"{_us(lat['p50'])} / {_us(lat['p99'])} / {_us(lat['p999'])} / {_us(lat['max'])} | "
            f"{_us(high.get('p50'))} / {_us(high.get('p99'))} / {_us(high.get('p999'))} / {_us(high.get('max'))} |")
    return rows


_HEADER = ["| contender | waits | zero-loss M msgs/s (range) | M pkts/s | CPU us/pkt | where the CPU goes (us/pkt) "
           "| p50 / p99 / p99.9 / max us, low rate | same, high rate |",
           "|---|---|---:|---:|---:|---|---|---|"]


def markdown(doc: dict) -> str:
    setup = doc["setup"]
    low, high = setup.get("latency_rate_msgs_per_s"), setup.get("high_rate_msgs_per_s")
    runs = ("QUICK run (short trials, one repeat): a smoke test, not a measurement" if setup.get("quick")
            else f"{setup.get('repeats')} repeats, interleaved; medians (range over repeats)")
    lines = [
        "# tickwire engine benchmark",
        "",
        f"{setup.get('when', '')}, kernel {setup.get('host', {}).get('kernel', '?')}, "
        f"{setup.get('placement', {}).get('cpus', '?')} CPUs; {runs}. Generator: in-kernel "
        f"(`tickwire-feed blast`) on CPU {setup.get('placement', {}).get('publisher_cpu', '?')}.",
        "",
        *_HEADER, *_contender_rows(doc, tuning=False),
        "",
        f"CPU us/pkt: the receiver's threads + softirq on both CPUs, per packet, in the trial at "
        f"{_num(high)} msgs/s ({_num(setup.get('high_rate_pkts_per_s'))} pkts/s); a spinning "
        "receiver is charged its whole core. Latency: ITCH stamp (written by the generator when it "
        "builds the frame) to the receiver's CLOCK_REALTIME at batch arrival, every message, at "
        f"{_num(low)} and {_num(high)} msgs/s. testpmd counts packets and decodes nothing, so it has "
        "no latency.",
    ]
    for key, c in doc["contenders"].items():
        for field, rate in (("latency_lost_messages", low), ("latency_high_lost_messages", high)):
            if c.get(field):
                lines.append(f"`{key}` could not keep up at {_num(rate)} msgs/s: it lost {c[field]:,} "
                             "messages in those trials" + (", so its latencies there include queueing."
                                                           if c.get("counts") != "packets" else "."))
    tunings = _contender_rows(doc, tuning=True)
    if tunings:
        lines += ["", "## kernel_c tunings (one knob changed from `kernel_c` each, one repeat)", "",
                  *_HEADER, *tunings]
    lines += ["", "| ratio (same run) | measured | goal | met |", "|---|---:|---:|---|"]
    for name, g in doc["goals"].items():
        met = {True: "yes", False: "**no**", None: "cannot tell"}[g["met"]]
        if g["measured"] is None:
            met = "-"
        lines.append(f"| {name} | {_num(g['measured'], 2)} | {g['target']} | {met}"
                     + (f" ({g['note']})" if g.get("note") else "") + " |")
    spin = doc["ratios"].get("engine_vs_kernel_c_cpu_per_packet_spinning")
    lines += ["", f"Spinning receivers' CPU per packet at the high rate, engine vs kernel_c: {_num(spin, 2)}x "
                  "(both burn their core; the difference is the softirq beside the generator)."]
    lines += _experiments_md(doc.get("experiments") or {})
    lines += ["", "## Setup", "", f"- placement: {setup.get('placement', {}).get('how', '?')}",
              f"- generator: {setup.get('generator', '')}",
              f"- feed: {setup.get('feed', '')}",
              f"- trials: {setup.get('method', '')}"]
    noise = setup.get("noise", {})
    for when, cpus in noise.items():
        lines.append(f"- CPU availability {when} (share of time a spinning probe ran): "
                     + ", ".join(f"{cpu} {share:.0%}" for cpu, share in cpus.items()))
    if any(share < NOISY for cpus in noise.values() for share in cpus.values()):
        lines.append("- **other work shared these CPUs during the run: rates and tails above measure "
                     "that contention as much as the contenders; rerun on a quiet machine**")
    if setup.get("errors"):
        lines += [f"- `{k}` could not run: {v}" for k, v in setup["errors"].items()]
    lines.append("")
    return "\n".join(lines)


def _experiments_md(found: dict) -> list[str]:
    lines = []
    modes = found.get("xdp_modes")
    if modes:
        lines += ["", f"## XDP mode by generator (engine sleeping in poll(), {modes['rate_pps']:,} pkts/s, "
                      f"median of {modes['repeats']})", "",
                  "| generator | mode | CPU us/pkt | engine thread | softirq by CPU | lost msgs | cheaper |",
                  "|---|---|---:|---:|---|---:|---|"]
        for gen, by_mode in modes["summary"].items():
            for mode, m in by_mode.items():
                soft = ", ".join(f"{c} {v:.2f}" for c, v in sorted(m["softirq_us_per_packet"].items()) if v)
                lines.append(f"| {gen} | {mode} | {m['cpu_us_per_packet']:.2f} | {m['receiver_us_per_packet']:.2f} "
                             f"| {soft or '-'} | {m['lost_messages']:,} | "
                             f"{'yes' if modes['cheaper_mode'][gen] == mode else ''} |")
    st = found.get("stall")
    if st:
        lines += ["", f"## Poll-thread stall at {st['rate_pps']:,} pkts/s", "",
                  f"Engine process stopped {len(st['stalls_ms'])} times for {st['stall_ms']:g} ms "
                  f"(measured {', '.join(f'{x:.2f}' for x in st['stalls_ms'])} ms) in one trial; RX ring "
                  f"{st['rx_ring_entries']} entries, UMEM {st['umem_frames']} frames, about "
                  f"{st['packets_per_stall']:,} packets arrive per stall. Lost: {st['lost_messages']:,} "
                  f"messages with stalls ({st['stalled_pkts_per_s']:,} pkts/s reached), "
                  f"{st['control_lost_messages']:,} in the control trial without "
                  f"({st['control_pkts_per_s']:,} pkts/s): {'held' if st['held'] else '**did not hold**'}."]
    return lines


def write(doc: dict, out_dir: str) -> dict[str, str]:
    os.makedirs(out_dir, exist_ok=True)
    paths = {"json": os.path.join(out_dir, "latest.json"), "md": os.path.join(out_dir, "latest.md")}
    for kind, text in (("json", json.dumps(doc, indent=1, sort_keys=False) + "\n"), ("md", markdown(doc))):
        tmp = paths[kind] + ".tmp"
        with open(tmp, "w") as out:
            out.write(text)
        os.replace(tmp, paths[kind])
    return paths
