"""The demo's live terminal view: pure functions from the engine's stats (and the books a reader
sees in the stream) to text."""
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


def price(p: int | None) -> str:
    """An ITCH price (4 implied decimals) as text; '-' for none."""
    return f"{p / 10_000:,.4f}" if p else "-"


def render_books(snapshots: dict, limit: int = 6) -> str:
    """The live top of book of the `limit` busiest instruments (most messages applied), as a
    consumer reads it from the stream: best bid and offer with their sizes, the spread, the last
    trade and the live orders; INCOMPLETE where the engine knows the book is not whole."""
    busiest = sorted(snapshots.items(), key=lambda item: item[1]["messages"], reverse=True)[:limit]
    out = [f"  top of book ({len(snapshots)} instruments, read from the stream)",
           f"  {'symbol':<8} {'bid size':>9} {'bid':>10}  {'ask':<10} {'ask size':<9} {'last':>10} "
           f"{'orders':>7}  flags"]
    for symbol, top in busiest:
        bid, ask = top["bid"] or (0, 0, 0), top["ask"] or (0, 0, 0)
        last = top["last_trade"][0] if top["last_trade"] else None
        flags = " ".join(filter(None, ["INCOMPLETE" if top["incomplete"] else "",
                                       f"state {top['trading_state']}" if top["trading_state"] not in ("", "T") else "",
                                       "CROSSED" if bid[0] and ask[0] and bid[0] >= ask[0] else ""]))
        out.append(f"  {symbol:<8} {bid[1] or '':>9} {price(bid[0]):>10}  {price(ask[0]):<10} "
                   f"{str(ask[1] or ''):<9} {price(last):>10} {top['orders_live']:>7,}  {flags}")
    if not busiest:
        out.append("  (no instrument yet)")
    return "\n".join(out)


def _rerequest_line(stats: dict) -> list[str]:
    rr = stats.get("rerequest") or {}
    if not rr.get("config"):
        return []
    lat = rr.get("recovery_latency") or {}
    return [f"  re-request  {rr.get('requests_sent', 0):>12,}   recovered {rr.get('recovered', 0):,}   "
            f"timed out {rr.get('timed_out', 0):,}   given up {rr.get('given_up', 0):,}   "
            f"gap -> recovered p50 {micros(lat.get('p50'))} us"]


def final_summary(stats: dict, sent: dict, books: dict | None = None) -> str:
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
    if books is not None:
        # The exchange names `stocks` instruments in its stock directory; the rest is the engine's.
        rows += [
            ("instruments with a book", books.get("stocks"), stats.get("book_instruments")),
            ("  seen by a reader in the stream", books.get("stocks"), books.get("reader_instruments")),
            ("live orders in the books", None, stats.get("book_orders_live")),
            ("book events published", None, stats.get("book_events_published")),
            ("books marked incomplete (gaps)", None, stats.get("book_incomplete")),
            ("orders beyond maxOrders", None, stats.get("book_order_overflow")),
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
