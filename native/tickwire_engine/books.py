"""The C books on their own (book.c): ITCH messages in, orders, levels and a stream out.

What the unit tests and the benchmarks drive; the engine builds the same books on its poll
thread (EngineConfig.books). Attach them to a Decoder to feed them the first copy of every
message, in the decoder's order, and the losses it gives up on:

    books = Books(BooksConfig(enabled=True), feed="test", root=str(tmp_path))
    dec = Decoder(lines=[...], books=books)
"""
from __future__ import annotations

from ._native import ffi, lib
from .bookconfig import BooksConfig
from .config import ConfigError
from .stats import book_stats_to_dict

SIDES = {"B": ord("B"), "S": ord("S")}


class Books:
    def __init__(self, config: BooksConfig | None = None, feed: str = "", root: str | None = None):
        from .bookconfig import fill_books_config
        self.config = config or BooksConfig(enabled=True)
        c = ffi.new("struct tw_books_config *")
        fill_books_config(c, self.config, feed, root)
        err = ffi.new("char[512]")
        books = lib.tw_books_new(c, err, len(err))
        if books == ffi.NULL:
            raise ConfigError(ffi.string(err).decode(errors="replace"))
        self._books = ffi.gc(books, lib.tw_books_free)
        self._instrument = ffi.new("struct tw_book_instrument *")

    @property
    def handle(self):
        return self._books

    def on_message(self, message: bytes, receive_ns: int = 0) -> None:
        lib.tw_books_on_message(self._books, ffi.from_buffer(message), len(message), receive_ns)

    def on_loss(self, first_seq: int = 0, count: int = 1, session: bytes = b" " * 10) -> None:
        lib.tw_books_on_loss(self._books, session, first_seq, count)

    def end_stream(self) -> None:
        lib.tw_books_end_stream(self._books)

    def close(self) -> None:
        """Free the books now (their stream is marked ended)."""
        if self._books is not None:
            ffi.release(self._books)   # runs tw_books_free now
            self._books = None

    def check(self) -> None:
        """The C books' structural self-check (tw_books_check): AssertionError saying what is
        wrong."""
        err = ffi.new("char[512]")
        if lib.tw_books_check(self._books, err, len(err)) != 0:
            raise AssertionError(ffi.string(err).decode(errors="replace"))

    def stats(self) -> dict:
        return book_stats_to_dict(lib.tw_books_stats(self._books))

    def instrument(self, locate: int) -> dict | None:
        if lib.tw_books_instrument(self._books, locate, self._instrument) != 0:
            return None
        i = self._instrument
        return {"locate": i.locate, "incomplete": bool(i.incomplete),
                "trading_state": chr(i.trading_state) if i.trading_state else "",
                "symbol": ffi.string(i.symbol, 8).decode("ascii", "replace").rstrip(),
                "bid_levels": i.bid_levels, "ask_levels": i.ask_levels,
                "orders_live": i.orders_live, "messages": i.messages}

    def levels(self, locate: int, side: str, max_levels: int = 1 << 16) -> list[tuple[int, int, int]]:
        """(price, shares, orders) best first."""
        out = ffi.new("struct tw_book_level[]", max_levels)
        n = lib.tw_books_levels(self._books, locate, SIDES[side], out, max_levels)
        return [(out[i].price, out[i].shares, out[i].orders) for i in range(n)]

    def orders(self) -> dict[int, tuple[int, str, int, int, int]]:
        """ref -> (locate, side, price, shares, queue position)."""
        max_orders = self.config.max_orders
        out = ffi.new("struct tw_book_order[]", max_orders)
        n = lib.tw_books_orders(self._books, out, max_orders)
        return {out[i].ref: (out[i].locate, chr(out[i].side), out[i].price, out[i].shares,
                             out[i].queue_position) for i in range(n)}
