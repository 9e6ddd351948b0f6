"""Read a feed's book stream: the Python face of native/include/tickwire/consumer.h.

    from tickwire_engine import consumer

    with consumer.open("nasdaq-a") as stream:          # <stream_root>/nasdaq-a
        print(stream.snapshot("AAPL"))                 # best bid/offer and the top levels
        for item in stream.events(timeout=1.0):
            if isinstance(item, consumer.Lapped):      # the engine overwrote what we had not read
                books = item.snapshots                 # resynchronise from these
                continue
            ...                                        # an Event

The stream root is, in order: the `stream_root` argument, $TICKWIRE_STREAM_ROOT, then
/run/tickwire/streams (contract C7). Reading needs read access to the two files only. The reader
never slows the engine: if it falls a whole ring behind it is lapped, counts it (`lapped`,
`missed`) and is told so.

`latency()` is the stage "engine to consumer": CLOCK_MONOTONIC at the read minus the engine's
receive time of the packet, recorded at the last event of each ITCH message, in the engine's
log-linear histogram buckets.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Iterator, NamedTuple

from ._consumer import ffi, lib
from .buckets import percentile

DEFAULT_STREAM_ROOT = "/run/tickwire/streams"
STREAM_ROOT_ENV = "TICKWIRE_STREAM_ROOT"
BATCH = 4096

EVENT_TYPES = {lib.TWC_EV_ORDER: "order", lib.TWC_EV_LEVEL: "level", lib.TWC_EV_TOP: "top",
               lib.TWC_EV_TRADE: "trade", lib.TWC_EV_STATUS: "status"}
STATUS_KINDS = {lib.TWC_STATUS_TRADING: "trading", lib.TWC_STATUS_SYSTEM: "system",
                lib.TWC_STATUS_INCOMPLETE: "incomplete", lib.TWC_STATUS_RESET: "reset",
                lib.TWC_STATUS_DIRECTORY: "directory"}
PERCENTILES = {"p50": 0.50, "p90": 0.90, "p99": 0.99, "p999": 0.999}


class StreamError(RuntimeError):
    """The stream cannot be opened or read (missing, not a tickwire stream, no permission)."""


def stream_root(root: str | None = None) -> str:
    return root or os.environ.get(STREAM_ROOT_ENV) or DEFAULT_STREAM_ROOT


def stream_dir(feed: str, root: str | None = None) -> str:
    if not feed or "/" in feed or feed in (".", ".."):
        raise StreamError(f"feed name {feed!r} cannot name a stream directory")
    return os.path.join(stream_root(root), feed)


class Event(NamedTuple):
    """One book event. Prices carry ITCH's 4 implied decimals; `type` is a name of EVENT_TYPES.

    order:  side, price, shares (0: the order left), ref
    level:  side, price, shares (0: the level is gone), orders
    top:    bid_price/bid_shares = price/shares, ask_price/ask_shares = price2/shares2 (0: none)
    trade:  side (or ""), price, shares, ref (match number)
    status: kind (STATUS_KINDS), state (the ITCH code)"""
    seq: int
    type: str
    end: bool            # the last event of its ITCH message
    incomplete: bool     # the instrument's book is known to be incomplete
    locate: int
    side: str
    price: int
    price2: int
    shares: int
    shares2: int
    ref: int
    kind: str
    state: str
    exchange_ns: int
    receive_ns: int

    @property
    def orders(self) -> int:
        return self.price2


@dataclass
class Lapped:
    """The reader fell a whole ring behind: `missed` events are gone. `snapshots` (symbol ->
    snapshot dict) is the state to resume from; events after it follow in the iteration."""
    missed: int
    snapshots: dict = field(default_factory=dict)


def _text(code: int) -> str:
    return chr(code) if code else ""


def _event(ev) -> Event:
    return Event(ev.seq, EVENT_TYPES.get(ev.type, str(ev.type)), bool(ev.flags & lib.TWC_F_END),
                 bool(ev.flags & lib.TWC_F_INCOMPLETE), ev.locate, _text(ev.side), ev.price,
                 ev.price2, ev.shares, ev.shares2, ev.ref, STATUS_KINDS.get(ev.kind, ""),
                 _text(ev.state), ev.exchange_ns, ev.receive_ns)


def _levels(levels, n: int) -> list[tuple[int, int, int]]:
    return [(levels[i].price, levels[i].shares, levels[i].orders) for i in range(n)]


def _top(t) -> dict:
    bids, asks = _levels(t.bids, t.n_bids), _levels(t.asks, t.n_asks)
    return {"symbol": ffi.string(t.symbol).decode("ascii", "replace"), "locate": t.locate,
            "incomplete": bool(t.flags & lib.TWC_SNAP_INCOMPLETE),
            "trading_state": _text(t.trading_state),
            "bid": bids[0] if bids else None, "ask": asks[0] if asks else None,
            "bids": bids, "asks": asks, "messages": t.messages, "orders_live": t.orders_live,
            "last_trade": (t.last_trade_price, t.last_trade_shares) if t.last_trade_shares else None,
            "event_seq": t.event_seq, "exchange_ns": t.exchange_ns}


class Reader:
    """One reader of one feed's stream; see the module doc. start: "now" (join where the engine
    is) or "oldest" (from the oldest event still in the ring)."""

    def __init__(self, feed: str, stream_root: str | None = None, *, start: str = "now",
                 measure_latency: bool = True, path: str | None = None):
        if start not in ("now", "oldest"):
            raise StreamError(f"start {start!r}: use 'now' or 'oldest'")
        self.path = path or stream_dir(feed, stream_root)
        self._r = ffi.new("struct twc_reader *")
        err = ffi.new("char[512]")
        where = lib.TWC_START_NOW if start == "now" else lib.TWC_START_OLDEST
        rc = lib.twc_open(self._r, self.path.encode(), where, err, len(err))
        if rc != 0:
            raise StreamError(ffi.string(err).decode(errors="replace") or f"cannot open {self.path}")
        self._r.measure_latency = int(measure_latency)
        self._batch = ffi.new("struct twc_event[]", BATCH)
        self._result = ffi.new("int *")
        self._top = ffi.new("struct twc_book_top *")
        self.status = lib.TWC_EMPTY

    # -- events ---------------------------------------------------------------------------------

    def read(self, max_events: int = BATCH) -> list[Event]:
        """What is there now, up to max_events; `status` tells why it stopped ("ok", "empty",
        "lapped" or "ended"). After "lapped" the next read continues from the present."""
        out: list[Event] = []
        while True:
            want = min(max_events - len(out), BATCH)
            n = lib.twc_read(self._r, self._batch, want, self._result)
            self.status = self._result[0]
            out.extend(_event(self._batch[i]) for i in range(n))
            if n < want or len(out) >= max_events:
                return out

    def events(self, timeout: float | None = None, idle_sleep: float = 0.0005) -> Iterator[Event | Lapped]:
        """Events as they come; a Lapped (with fresh snapshots) where the reader was lapped. Ends
        when the engine's stream ends or nothing arrives for `timeout` seconds (None: never)."""
        quiet_since = time.monotonic()
        while True:
            missed_before = self._r.missed
            batch = self.read()
            yield from batch
            if self.status == lib.TWC_LAPPED:
                yield Lapped(self._r.missed - missed_before, self.snapshots())
                quiet_since = time.monotonic()
                continue
            if self.status == lib.TWC_ENDED:
                return
            if batch:
                quiet_since = time.monotonic()
            elif timeout is not None and time.monotonic() - quiet_since >= timeout:
                return
            elif not batch:
                time.sleep(idle_sleep)

    def seek_head(self) -> None:
        """Skip to the present (what a lapped reader does)."""
        lib.twc_seek_head(self._r)

    @property
    def position(self) -> int:
        return self._r.next

    @property
    def head(self) -> int:
        return lib.twc_head(self._r)

    @property
    def capacity(self) -> int:
        return lib.twc_capacity(self._r)

    @property
    def lapped(self) -> int:
        """How often this reader was lapped (the readers_lapped metric)."""
        return self._r.lapped

    @property
    def missed(self) -> int:
        return self._r.missed

    @property
    def events_read(self) -> int:
        return self._r.events_read

    @property
    def ended(self) -> bool:
        return bool(lib.twc_ended(self._r))

    def replaced(self) -> bool:
        """A new engine replaced the stream files: reopen to follow it."""
        return bool(lib.twc_replaced(self._r))

    # -- snapshots ------------------------------------------------------------------------------

    def snapshot(self, symbol: str) -> dict | None:
        """Best bid/offer and the top levels of one symbol (None if the engine has no book of
        it): bids/asks as [(price, shares, orders)], best first."""
        rc = lib.twc_snapshot_find(self._r, symbol.encode("ascii"), self._top)
        return _top(self._top) if rc == 0 else None

    def snapshots(self) -> dict[str, dict]:
        """Every instrument's snapshot, by symbol (an instrument not yet named by a stock
        directory message is keyed "#<locate>")."""
        out = {}
        for i in range(lib.twc_snapshot_count(self._r)):
            if lib.twc_snapshot_at(self._r, i, self._top) == 0:
                top = _top(self._top)
                out[top["symbol"] or f"#{top['locate']}"] = top
        return out

    @property
    def depth(self) -> int:
        return lib.twc_snapshot_depth(self._r)

    # -- latency --------------------------------------------------------------------------------

    def latency(self) -> dict:
        """Engine-to-consumer latency so far: count/sum/min/max/mean/p50/p90/p99/p999 (ns) and
        the non-empty buckets [[low, high, count]]: the shape of the engine's latency stages."""
        h = self._r.latency
        counts = ffi.unpack(h.buckets, lib.TWC_HIST_BUCKETS)
        buckets = []
        for i, n in enumerate(counts):
            if n:
                high = (lib.twc_hist_bucket_low(i + 1) - 1) if i + 1 < lib.TWC_HIST_BUCKETS else h.max
                buckets.append([lib.twc_hist_bucket_low(i), min(high, h.max), n])
        out = {"count": h.count, "sum": h.sum, "min": h.min if h.count else 0,
               "max": h.max if h.count else 0, "mean": round(h.sum / h.count) if h.count else 0}
        for name, q in PERCENTILES.items():
            out[name] = percentile(buckets, q, h.max) if h.count else 0
        out["buckets"] = buckets
        return out

    # -- lifetime -------------------------------------------------------------------------------

    def close(self) -> None:
        if self._r is not None:
            lib.twc_close(self._r)
            self._r = None

    def __enter__(self) -> "Reader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_r", None) is not None:
            self.close()


def open(feed: str, stream_root: str | None = None, **kwargs) -> Reader:  # noqa: A001 (the C7 name)
    """A Reader of `feed`'s stream (see Reader for the keyword arguments)."""
    return Reader(feed, stream_root, **kwargs)
