"""`tickwire-engine top FEED`: the live best bid/offer of a feed's busiest symbols.

Reads only the stream's snapshot file (never the ring), so it can run beside any number of
consumers and costs the engine nothing. "Busiest" is messages applied to the instrument since
the previous screen (total messages on the first).
"""
from __future__ import annotations

import sys
import time

from .config import ConfigError

CLEAR = "\x1b[H\x1b[2J"


def price_text(price: int | None) -> str:
    return f"{price / 10_000:.4f}" if price else "-"


def screen(feed: str, snapshots: dict, previous: dict, limit: int, interval: float) -> str:
    def rate(symbol: str, top: dict) -> float:
        before = previous.get(symbol)
        return (top["messages"] - before["messages"]) / interval if before else 0.0

    busiest = sorted(snapshots.items(),
                     key=lambda item: (rate(*item), item[1]["messages"]), reverse=True)[:limit]
    lines = [f"tickwire top: {feed}  {len(snapshots)} instruments  {time.strftime('%H:%M:%S')}",
             f"{'symbol':<9}{'bid size':>10} {'bid':>12} {'ask':>12} {'ask size':<10}"
             f"{'last':>12}{'msg/s':>10}{'orders':>9}  flags"]
    for symbol, top in busiest:
        bid, ask = top["bid"] or (0, 0, 0), top["ask"] or (0, 0, 0)
        last = top["last_trade"][0] if top["last_trade"] else None
        flags = ("INCOMPLETE " if top["incomplete"] else "") + (
            f"state {top['trading_state']}" if top["trading_state"] not in ("", "T") else "")
        lines.append(f"{symbol:<9}{bid[1] or '':>10} {price_text(bid[0]):>12} "
                     f"{price_text(ask[0]):>12} {str(ask[1] or ''):<10}{price_text(last):>12}"
                     f"{rate(symbol, top):>10.0f}{top['orders_live']:>9}  {flags}")
    return "\n".join(lines)


def top(args) -> int:
    from . import consumer
    try:
        reader = consumer.open(args.feed, args.stream_root, measure_latency=False)
    except (consumer.StreamError, ConfigError) as exc:
        print(f"tickwire-engine top: {exc}", file=sys.stderr)
        return 2
    previous: dict = {}
    shown = 0
    try:
        with reader:
            while args.count == 0 or shown < args.count:
                snapshots = reader.snapshots()
                text = screen(args.feed, snapshots, previous, args.symbols, args.interval)
                if reader.ended:
                    text += "\n(the engine stopped: the stream ended)"
                print((CLEAR if sys.stdout.isatty() else "") + text, flush=True)
                previous = snapshots
                shown += 1
                if reader.ended or (args.count and shown >= args.count):
                    break
                time.sleep(args.interval)
    except KeyboardInterrupt:
        pass
    return 0
