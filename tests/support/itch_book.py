"""A plain Python order book rebuilt from ITCH 5.0 messages or from the engine's stream: the
reference the C books are compared with. Slow and obvious on purpose."""
from __future__ import annotations

from tickwire_feed import itch


class ReferenceBook:
    """Every live order, in arrival order (= time priority at its price), by reference."""

    def __init__(self):
        self.orders: dict[int, list] = {}   # ref -> [locate, side "B"/"S", price, shares]
        self.unknown_refs = 0

    def apply(self, message: bytes) -> None:
        m = itch.decode(message)
        kind = m["type"]
        if kind == "S" and m["event_code"] == "O":
            self.orders.clear()
        elif kind in "AF":
            self.orders[m["order_reference_number"]] = [m["stock_locate"], m["buy_sell_indicator"],
                                                        m["price"], m["shares"]]
        elif kind in "ECX":
            shares = m["executed_shares"] if kind in "EC" else m["cancelled_shares"]
            self._take(m["order_reference_number"], shares)
        elif kind == "D":
            self._take(m["order_reference_number"], None)
        elif kind == "U":
            old = self.orders.get(m["original_order_reference_number"])
            self._take(m["original_order_reference_number"], None)
            if old is not None:
                self.orders[m["new_order_reference_number"]] = [old[0], old[1], m["price"],
                                                                m["shares"]]

    def _take(self, ref: int, shares: int | None) -> None:
        order = self.orders.get(ref)
        if order is None:
            self.unknown_refs += 1
            return
        order[3] = 0 if shares is None else order[3] - shares
        if order[3] <= 0:
            del self.orders[ref]

    # -- from the stream's order events --------------------------------------------------------

    def apply_order_event(self, ev) -> None:
        """An Event of type "order": shares 0 means the order left."""
        if ev.shares == 0:
            self.orders.pop(ev.ref, None)
        elif ev.ref in self.orders:
            self.orders[ev.ref][3] = ev.shares
        else:
            self.orders[ev.ref] = [ev.locate, ev.side, ev.price, ev.shares]

    # -- views, in the shapes Books.orders()/levels() return -----------------------------------

    def as_orders(self) -> dict[int, tuple]:
        """ref -> (locate, side, price, shares, queue position)."""
        seen: dict[tuple, int] = {}
        out = {}
        for ref, (locate, side, price, shares) in self.orders.items():
            key = (locate, side, price)
            out[ref] = (locate, side, price, shares, seen.get(key, 0))
            seen[key] = seen.get(key, 0) + 1
        return out

    def levels(self, locate: int, side: str) -> list[tuple[int, int, int]]:
        totals: dict[int, list[int]] = {}
        for order_locate, order_side, price, shares in self.orders.values():
            if order_locate == locate and order_side == side:
                level = totals.setdefault(price, [0, 0])
                level[0] += shares
                level[1] += 1
        return [(p, t[0], t[1]) for p, t in sorted(totals.items(), reverse=side == "B")]

    def locates(self) -> set[int]:
        return {order[0] for order in self.orders.values()}


def exchange_orders(book) -> dict[int, tuple]:
    """tickwire_feed.market.ExchangeBook in the shape of Books.orders()."""
    queues = book.queues()
    return {ref: (locate, side.decode(), price, shares, queues[ref])
            for ref, (locate, side, price, shares) in book.orders.items()}
