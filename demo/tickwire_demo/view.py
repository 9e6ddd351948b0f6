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


def final_summary(stats: dict, sent: dict) -> str:
    """What the exchange sent against what the engine counted, side by side."""
    rows = [
        ("messages", sent.get("messages_sent"), stats["messages"]),
        ("gap events", sent.get("expected_gaps"), stats["gaps"]),
        ("missing messages", sent.get("expected_missing"), stats["missing"]),
        ("duplicate copies", sent.get("expected_duplicates"), stats["duplicates"]),
        ("lost on A only or B only, covered", sent.get("covered_by_other_line"), None),
    ]
    out = ["", "  summary                              exchange sent    engine counted"]
    for label, expected, got in rows:
        exp = "-" if expected is None else f"{expected:,}"
        cnt = "-" if got is None else f"{got:,}"
        mark = "" if expected is None or got is None else ("  ok" if expected == got else "  DIFFERS")
        out.append(f"  {label:<34} {exp:>14}  {cnt:>16}{mark}")
    lat = stats["latency"]["exchange_to_engine"]
    out.append(f"  exchange -> engine latency: p50 {lat['p50'] / 1e3:.1f} us, p99 {lat['p99'] / 1e3:.1f} us, "
               f"p99.9 {lat['p999'] / 1e3:.1f} us over {lat['count']:,} messages")
    return "\n".join(out)
