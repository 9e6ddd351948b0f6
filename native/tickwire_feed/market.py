"""What the messages say: a small simulated market that fills in plausible ITCH fields.

The feed's job is to exercise a receiver, so the contents only need to look like a trading day:
a handful of stocks with reference prices, an order book of live orders (adds, executions,
cancels, deletes and replaces refer to orders that were added before, and an order that is
fully executed, cancelled or deleted leaves the book), increasing order and match numbers, and
the rarer administrative messages now and then. A `Mix` says how often each type is drawn.

With `day=True` the market keeps the exchange's own book (`ExchangeBook`: every live order, as the
exchange holds it) and behaves like a trading day a book can be checked against: it opens with a
start-of-messages system event and a stock directory message per stock, never sends another start
of messages, and never refers to an order it did not add (a modify drawn while no order is live
becomes an add). `resolve()` tells the planner which type a drawn one will really be.

Speed matters more than elegance here (the generator runs ahead of a sender that aims at
hundreds of thousands of packets per second), so each type has its own small function that
calls the pre-compiled struct of its format directly.
"""
from __future__ import annotations

import random

from .itch import FORMATS, TYPES, ItchError

# Roughly the proportions of a real TotalView-ITCH day: adds, deletes and replaces dominate,
# executions are a few percent, administrative messages are rare but all present, so that a
# default run exercises every decoder path.
DEFAULT_WEIGHTS: dict[str, float] = {
    "A": 30.0, "D": 28.0, "U": 9.0, "E": 6.0, "X": 4.0, "F": 3.0, "P": 2.0, "C": 1.0,
    "I": 2.0, "N": 0.5, "R": 0.5, "H": 0.3, "Y": 0.3, "L": 0.3, "J": 0.2, "Q": 0.2,
    "B": 0.1, "S": 0.1, "K": 0.1, "h": 0.1, "O": 0.1, "V": 0.05, "W": 0.05,
}
ADDS_WEIGHTS: dict[str, float] = {"A": 1.0}
NAMED_MIXES = {"default": DEFAULT_WEIGHTS, "adds": ADDS_WEIGHTS}

_TABLE_BITS = 16  # a type is drawn by indexing a 65536-slot table with 16 random bits


class MixError(ValueError):
    pass


class Mix:
    """Relative weights of message types, drawn with one getrandbits() per message."""

    def __init__(self, weights: dict[str, float]):
        if not weights:
            raise MixError("a mix needs at least one type with a positive weight")
        for letter, weight in weights.items():
            if letter not in TYPES:
                raise MixError(f"unknown ITCH type {letter!r} in mix; known: {' '.join(TYPES)}")
            if not weight > 0:
                raise MixError(f"weight of {letter!r} must be > 0, got {weight}")
        self.weights = dict(weights)
        self._table = self._build_table()

    @classmethod
    def parse(cls, text: str) -> "Mix":
        """`default`, `adds`, or `TYPE=WEIGHT,...` such as `A=50,F=5,D=40,h=1` (case matters)."""
        text = text.strip()
        if text in NAMED_MIXES:
            return cls(NAMED_MIXES[text])
        weights: dict[str, float] = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            letter, sep, weight = item.partition("=")
            if not sep:
                raise MixError(f"mix item {item!r} is not TYPE=WEIGHT (named mixes: "
                               f"{', '.join(NAMED_MIXES)})")
            try:
                weights[letter.strip()] = float(weight)
            except ValueError:
                raise MixError(f"mix item {item!r}: weight {weight!r} is not a number") from None
        return cls(weights)

    def _build_table(self) -> bytes:
        size = 1 << _TABLE_BITS
        total = sum(self.weights.values())
        # Every type gets at least one slot so that a tiny weight is rare, never absent.
        slots = {t: max(1, round(w / total * size)) for t, w in self.weights.items()}
        heaviest = max(slots, key=slots.get)
        slots[heaviest] += size - sum(slots.values())
        return b"".join(t.encode() * n for t, n in slots.items())

    def draw(self, rng: random.Random) -> int:
        """A type letter as its byte value."""
        return self._table[rng.getrandbits(_TABLE_BITS)]


def _alpha(text: str, width: int) -> bytes:
    return text.encode("ascii").ljust(width, b" ")


_STOCKS = ("AAPL", "MSFT", "AMZN", "NVDA", "GOOGL", "META", "TSLA", "AVGO", "COST", "PEP",
           "ADBE", "CSCO", "NFLX", "AMD", "INTC", "QCOM")
_MPIDS = tuple(_alpha(m, 4) for m in ("GSCO", "MSCO", "NITE", "VIRT", "CDRG", "JPMS"))
_MAX_TRACKED_ORDERS = 100_000  # bounds memory on long runs; older orders are forgotten
_NEEDS_ORDER = frozenset(b"ECXDU")  # types that refer to a live order


def stock_symbols(count: int) -> list[str]:
    """`count` distinct symbols: the 16 well-known ones first, then made-up ones (S0001...)."""
    if not 1 <= count <= 65535:
        raise MixError(f"stocks: {count}: give 1..65535 (stock locates are 16 bits)")
    return list(_STOCKS[:count]) + [f"S{i:04d}" for i in range(1, count - len(_STOCKS) + 1)]


class ExchangeBook:
    """The exchange's book: every live order (including those the generator stopped choosing
    from), in the order they were added, which is their time priority at their price."""

    def __init__(self):
        self.orders: dict[int, list] = {}          # ref -> [locate, side b"B"/b"S", price, shares]

    def add(self, ref: int, locate: int, side: bytes, shares: int, price: int) -> None:
        self.orders[ref] = [locate, side, price, shares]

    def take(self, ref: int, shares: int) -> None:
        order = self.orders.get(ref)
        if order is None:
            return
        order[3] -= shares
        if order[3] <= 0:
            del self.orders[ref]

    def delete(self, ref: int) -> None:
        self.orders.pop(ref, None)

    def levels(self, locate: int, side: bytes) -> list[tuple[int, int, int]]:
        """(price, shares, orders) best first: highest bid, lowest offer."""
        totals: dict[int, list[int]] = {}
        for order_locate, order_side, price, shares in self.orders.values():
            if order_locate == locate and order_side == side:
                level = totals.setdefault(price, [0, 0])
                level[0] += shares
                level[1] += 1
        return [(p, t[0], t[1]) for p, t in sorted(totals.items(), reverse=side == b"B")]

    def queues(self) -> dict[int, int]:
        """ref -> its 0-based place in its level's time-priority queue."""
        seen: dict[tuple, int] = {}
        out = {}
        for ref, (locate, side, price, _shares) in self.orders.items():
            key = (locate, side, price)
            out[ref] = seen.get(key, 0)
            seen[key] = out[ref] + 1
        return out


class Market:
    """Generates message bodies with a zero timestamp; the sender stamps them at send time."""

    def __init__(self, rng: random.Random, *, day: bool = False, stocks: int = len(_STOCKS)):
        self.rng = rng
        self.stocks = [(i + 1, _alpha(sym, 8), (20 + 37 * (i % 97)) * 10000)
                       for i, sym in enumerate(stock_symbols(stocks))]
        self.next_order_ref = 1_000_000
        self.next_match = 1
        self.live: list[int] = []                  # refs of live orders, for random choice
        self.orders: dict[int, list] = {}          # ref -> [slot in live, stock, side, shares, price]
        self._encoders = {ord(t): getattr(self, "_" + FORMATS[t.encode()].name) for t in TYPES}
        self.day = day
        self.book = ExchangeBook() if day else None
        # A day opens with start of messages, then the stock directory.
        self._opening = ([_S.pack(b"S", 0, 0, 0, 0, b"O")] +
                         [self._directory_of(stock) for stock in self.stocks]) if day else []
        self._opening.reverse()

    def resolve(self, type_byte: int) -> int:
        """The type `message(type_byte)` will really produce (a day's opening, or an add for a
        modify drawn while no order is live)."""
        if self._opening:
            return self._opening[-1][0]
        if self.day and not self.live and type_byte in _NEEDS_ORDER:
            return ord("A")
        return type_byte

    def message(self, type_byte: int) -> bytes:
        if self._opening:
            return self._opening.pop()
        return self._encoders[self.resolve(type_byte)]()

    # -- book keeping --------------------------------------------------------------------------

    def _stock(self):
        if len(self.stocks) <= 16:
            return self.stocks[self.rng.getrandbits(4) % len(self.stocks)]
        return self.stocks[self.rng.getrandbits(16) % len(self.stocks)]

    def _price_near(self, ref_price: int) -> int:
        return max(100, ref_price + (self.rng.getrandbits(6) - 32) * 100)

    def _resting_price(self, side: bytes, ref_price: int) -> int:
        """A limit price 1-32 cents on its own side of the reference, so the books never cross (a
        real exchange would have matched a bid at or above the best offer)."""
        ticks = (self.rng.getrandbits(5) + 1) * 100
        return ref_price - ticks if side == b"B" else ref_price + ticks

    def _add(self, stock, side: bytes, shares: int, price: int) -> int:
        ref = self.next_order_ref
        self.next_order_ref += 1
        if len(self.live) >= _MAX_TRACKED_ORDERS:
            self._forget(self.live[self.rng.getrandbits(16) % len(self.live)])
        self.orders[ref] = [len(self.live), stock, side, shares, price]
        self.live.append(ref)
        if self.book is not None:
            self.book.add(ref, stock[0], side, shares, price)
        return ref

    def _forget(self, ref: int) -> None:
        slot = self.orders.pop(ref)[0]
        last = self.live.pop()
        if last != ref:
            self.live[slot] = last
            self.orders[last][0] = slot

    def _some_order(self):
        """A live order, or (while the book is empty) a made-up one that was never added."""
        if self.live:
            ref = self.live[self.rng.getrandbits(20) % len(self.live)]
            return ref, self.orders[ref]
        stock = self._stock()
        return self.next_order_ref + 1_000_000_000, [None, stock, b"B", 100, stock[2]]

    def _take_shares(self, ref: int, order: list, wanted: int) -> int:
        """Removes up to `wanted` shares from an order; a depleted order leaves the book."""
        taken = min(wanted, order[3])
        order[3] -= taken
        if order[3] == 0 and ref in self.orders:
            self._forget(ref)
        if self.book is not None:
            self.book.take(ref, taken)
        return taken

    def _match(self) -> int:
        self.next_match += 1
        return self.next_match

    def _side(self) -> bytes:
        return b"B" if self.rng.getrandbits(1) else b"S"

    def _shares(self) -> int:
        return 100 * (1 + self.rng.getrandbits(4))

    # -- one function per type -----------------------------------------------------------------
    # Each packs header (type, locate, tracking 0, timestamp 0) followed by the type's fields.

    def _system_event(self):
        code = b"OSQMEC"[self.rng.getrandbits(8) % 6:][:1]
        if self.day and code == b"O":
            code = b"Q"   # a day starts once
        return _S.pack(b"S", 0, 0, 0, 0, code)

    def _stock_directory(self):
        return self._directory_of(self._stock())

    @staticmethod
    def _directory_of(stock):
        locate, sym, _ = stock
        return _R.pack(b"R", locate, 0, 0, 0, sym, b"Q", b"N", 100, b"N", b"C", b"Z ", b"P",
                       b"N", b" ", b"1", b"N", 0, b"N")

    def _stock_trading_action(self):
        locate, sym, _ = self._stock()
        return _H.pack(b"H", locate, 0, 0, 0, sym, b"T", b" ", b"    ")

    def _reg_sho_restriction(self):
        locate, sym, _ = self._stock()
        return _Y.pack(b"Y", locate, 0, 0, 0, sym, b"0")

    def _market_participant_position(self):
        locate, sym, _ = self._stock()
        mpid = _MPIDS[self.rng.getrandbits(8) % len(_MPIDS)]
        return _L.pack(b"L", locate, 0, 0, 0, mpid, sym, b"Y", b"N", b"A")

    def _mwcb_decline_level(self):
        return _V.pack(b"V", 0, 0, 0, 0, 4_200_00000000, 3_900_00000000, 3_500_00000000)

    def _mwcb_status(self):
        return _W.pack(b"W", 0, 0, 0, 0, b"1")

    def _ipo_quoting_period_update(self):
        locate, sym, price = self._stock()
        return _K.pack(b"K", locate, 0, 0, 0, sym, 34_200, b"A", price)

    def _luld_auction_collar(self):
        locate, sym, price = self._stock()
        return _J.pack(b"J", locate, 0, 0, 0, sym, price, price * 11 // 10, price * 9 // 10, 0)

    def _operational_halt(self):
        locate, sym, _ = self._stock()
        return _h.pack(b"h", locate, 0, 0, 0, sym, b"Q", b"T")

    def _add_order(self):
        stock = self._stock()
        side, shares = self._side(), self._shares()
        price = self._resting_price(side, stock[2])
        ref = self._add(stock, side, shares, price)
        return _A.pack(b"A", stock[0], 0, 0, 0, ref, side, shares, stock[1], price)

    def _add_order_mpid(self):
        stock = self._stock()
        side, shares = self._side(), self._shares()
        price = self._resting_price(side, stock[2])
        ref = self._add(stock, side, shares, price)
        mpid = _MPIDS[self.rng.getrandbits(8) % len(_MPIDS)]
        return _F.pack(b"F", stock[0], 0, 0, 0, ref, side, shares, stock[1], price, mpid)

    def _order_executed(self):
        ref, order = self._some_order()
        shares = self._take_shares(ref, order, self._shares())
        return _E.pack(b"E", order[1][0], 0, 0, 0, ref, shares, self._match())

    def _order_executed_with_price(self):
        ref, order = self._some_order()
        price = order[4]
        shares = self._take_shares(ref, order, self._shares())
        return _C.pack(b"C", order[1][0], 0, 0, 0, ref, shares, self._match(), b"Y", price)

    def _order_cancel(self):
        ref, order = self._some_order()
        shares = self._take_shares(ref, order, 100)
        return _X.pack(b"X", order[1][0], 0, 0, 0, ref, shares)

    def _order_delete(self):
        ref, order = self._some_order()
        if ref in self.orders:
            self._forget(ref)
        if self.book is not None:
            self.book.delete(ref)
        return _D.pack(b"D", order[1][0], 0, 0, 0, ref)

    def _order_replace(self):
        ref, order = self._some_order()
        if ref in self.orders:
            self._forget(ref)
        if self.book is not None:
            self.book.delete(ref)
        stock = order[1]
        shares = self._shares()
        price = self._resting_price(order[2], stock[2])
        new_ref = self._add(stock, order[2], shares, price)
        return _U.pack(b"U", stock[0], 0, 0, 0, ref, new_ref, shares, price)

    def _trade(self):
        # Trades against non-displayable orders carry order reference 0.
        locate, sym, price = self._stock()
        return _P.pack(b"P", locate, 0, 0, 0, 0, b"B", self._shares(), sym,
                       self._price_near(price), self._match())

    def _cross_trade(self):
        locate, sym, price = self._stock()
        return _Q.pack(b"Q", locate, 0, 0, 0, 10 * self._shares(), sym, price, self._match(), b"O")

    def _broken_trade(self):
        return _B.pack(b"B", 0, 0, 0, 0, 1 + self.rng.getrandbits(20) % self.next_match)

    def _noii(self):
        locate, sym, price = self._stock()
        return _I.pack(b"I", locate, 0, 0, 0, 10 * self._shares(), self._shares(), b"B", sym,
                       price, price, price, b"C", b" ")

    def _rpii(self):
        locate, sym, _ = self._stock()
        return _N.pack(b"N", locate, 0, 0, 0, sym, b"B")

    def _dlcr_price_discovery(self):
        locate, sym, price = self._stock()
        return _O.pack(b"O", locate, 0, 0, 0, sym, b"Y", price * 8 // 10, price * 12 // 10,
                       price, 34_200_000_000, price * 9 // 10, price * 11 // 10)


# Pre-compiled structs, one per type, named by their letter for the functions above.
_S, _R, _H, _Y, _L, _V, _W, _K, _J, _h, _A, _F, _E, _C, _X, _D, _U, _P, _Q, _B, _I, _N, _O = (
    FORMATS[t.encode()].struct for t in "SRHYLVWKJhAFECXDUPQBINO")


def malformed_message(kind: int, valid: bytes) -> bytes:
    """A message a receiver must reject, built from a valid one so it keeps a real timestamp.

    kind 0: an unknown type byte ('?') with the valid message's length;
    kind 1: a known type cut short by one byte (wrong length for its type).
    """
    if kind == 0:
        return b"?" + valid[1:]
    if kind == 1:
        return valid[:-1]
    raise ItchError(f"no malformed kind {kind}")
