"""The demo's live terminal view: a pure function from the engine's stats to text."""
from __future__ import annotations

CLEAR = "\x1b[H\x1b[2J"


def micros(ns: float | None) -> str:
    return "    -   " if not ns else f"{ns / 1e3:8.1f}"


def render(stats: dict, elapsed_s: float, feed_name: str) -> str:
    """A few lines a person can take in at a glance: rate, sequencing, latency per stage."""
    rate = stats.get("rate", {})
    lines = stats.get("lines", {})
    first = "  ".join(f"{name} first {line['first_messages']:,}" for name, line in lines.items())
    out = [
        f"tickwire demo - feed {feed_name} - {elapsed_s:5.1f} s - XDP {stats.get('xdp_mode', '?')}, "
        f"{'zero-copy' if stats.get('zero_copy') else 'copy mode'}, "
        f"{'hugepages' if stats.get('hugepages') else '4 KiB pages'}, poll thread on CPU "
        f"{stats.get('core', '-')}",
        "",
        f"  rate        {rate.get('messages_per_s', 0):>12,.0f} msg/s {rate.get('packets_per_s', 0):>10,.0f} pkt/s",
        f"  messages    {stats['messages']:>12,}   ({first})",
        f"  gaps        {stats['gaps']:>12,}   missing {stats['missing']:,}   recovered "
        f"{stats['recovered']:,}   duplicates {stats['duplicates']:,}   malformed {stats['malformed']:,}",
        *_rerequest_line(stats),
        f"  ring drops  {stats.get('ring', {}).get('rx_dropped', 0):>12,}",
        "",
        "  latency (us)             p50      p99    p99.9      max    samples",
    ]
    for stage, label in (("exchange_to_engine", "exchange -> engine"),
                         ("kernel_to_engine", "kernel -> engine  ")):
        h = stats["latency"][stage]
        out.append(f"  {label}  {micros(h['p50'])} {micros(h['p99'])} {micros(h['p999'])} "
                   f"{micros(h['max'])} {h['count']:>10,}")
    return "\n".join(out)


def _rerequest_line(stats: dict) -> list[str]:
    rr = stats.get("rerequest") or {}
    if not rr.get("config"):
        return []
    lat = rr.get("recovery_latency") or {}
    return [f"  re-request  {rr.get('requests_sent', 0):>12,}   recovered {rr.get('recovered', 0):,}   "
            f"timed out {rr.get('timed_out', 0):,}   given up {rr.get('given_up', 0):,}   "
            f"gap -> recovered p50 {micros(lat.get('p50'))} us"]


def final_summary(stats: dict, sent: dict) -> str:
    """What the exchange sent against what the engine counted, side by side. With a re-request
    server the exchange can give back everything it published: nothing should stay missing."""
    rerequest = (stats.get("rerequest") or {}).get("config") is not None
    if rerequest:
        rows = [
            ("messages", sent.get("messages_scheduled"), stats["messages"]),
            ("gap events left", 0, stats["gaps"]),
            ("missing messages left", 0, stats["missing"]),
            ("lost on both lines, recovered by request", sent.get("lost_on_all_lines"),
             stats["rerequest"]["recovered"]),
            ("duplicate copies", sent.get("expected_duplicates"), stats["duplicates"]),
            ("lost on A only or B only, covered", sent.get("covered_by_other_line"), None),
        ]
    else:
        rows = [
            ("messages", sent.get("messages_sent"), stats["messages"]),
            ("gap events", sent.get("expected_gaps"), stats["gaps"]),
            ("missing messages", sent.get("expected_missing"), stats["missing"]),
            ("duplicate copies", sent.get("expected_duplicates"), stats["duplicates"]),
            ("lost on A only or B only, covered", sent.get("covered_by_other_line"), None),
        ]
    out = ["", "  summary                                     exchange sent    engine counted"]
    for label, expected, got in rows:
        exp = "-" if expected is None else f"{expected:,}"
        cnt = "-" if got is None else f"{got:,}"
        mark = "" if expected is None or got is None else ("  ok" if expected == got else "  DIFFERS")
        out.append(f"  {label:<41} {exp:>14}  {cnt:>16}{mark}")
    if rerequest:
        rr = stats["rerequest"]
        lat = rr.get("recovery_latency") or {}
        out.append(f"  re-requests: {rr.get('requests_sent', 0):,} sent, {rr.get('timed_out', 0):,} timed out, "
                   f"{rr.get('given_up', 0):,} ranges given up; gap declared -> recovered p50 "
                   f"{lat.get('p50', 0) / 1e3:.0f} us, p99 {lat.get('p99', 0) / 1e3:.0f} us")
    lat = stats["latency"]["exchange_to_engine"]
    out.append(f"  exchange -> engine latency: p50 {lat['p50'] / 1e3:.1f} us, p99 {lat['p99'] / 1e3:.1f} us, "
               f"p99.9 {lat['p999'] / 1e3:.1f} us over {lat['count']:,} messages")
    return "\n".join(out)
