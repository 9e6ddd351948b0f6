"""The C books (book.c) against two Python books on generated ITCH: the exchange's own book the
market generator keeps, and a reference rebuilt from the messages themselves; and the stream
(stream.c / consumer.h) a reader rebuilds them from. No network: messages go straight into the
books or through the C decoder."""
from __future__ import annotations

import struct

import pytest

from tests.support.itch_book import ReferenceBook, exchange_orders
from tickwire_engine import consumer
from tickwire_engine.bookconfig import BooksConfig
from tickwire_engine.books import Books
from tickwire_engine.config import ConfigError
from tickwire_engine.decoder import Decoder
from tickwire_feed import itch, moldudp64
from tickwire_feed.market import Mix
from tickwire_feed.schedule import Schedule, ScheduleConfig

# Every book-changing type, well represented, plus trades and administrative messages.
BOOK_MIX = "A=30,F=6,E=8,C=3,X=6,D=22,U=12,P=3,Q=0.5,H=0.5,S=0.2,R=0.2,I=1,B=0.2"
GROUP, PORT = "239.1.2.3", 26477


def generated_day(messages: int, stocks: int = 120, seed: int = 7, per_packet: int = 4,
                  mix: str = BOOK_MIX, **faults):
    """(payloads in send order, the exchange book, the Transmissions) of a generated day."""
    schedule = Schedule(ScheduleConfig(messages=messages, per_packet=per_packet, mix=Mix.parse(mix),
                                       day=True, stocks=stocks, seed=seed, **faults))
    sent = [t for chunk in iter(lambda: schedule.next_chunk(256), []) for t in chunk]
    return sent, schedule.market.book


def day_messages(sent) -> list[bytes]:
    out = []
    for t in sent:
        if not t.is_copy:
            out.extend(moldudp64.decode_packet(bytes(t.payload)).messages)
    return out


def book_config(**kw) -> BooksConfig:
    base = dict(enabled=True, max_orders=1 << 16, max_instruments=512, ring_events=1 << 18, depth=10)
    base.update(kw)
    return BooksConfig(**base)


def assert_books_equal(books: Books, reference: dict, locates) -> None:
    """Order by order (with queue positions) and level by level, every locate and side."""
    books.check()
    assert books.orders() == reference["orders"]
    for locate in locates:
        for side in "BS":
            assert books.levels(locate, side) == reference["levels"](locate, side), (locate, side)


def reference_of(exchange) -> dict:
    return {"orders": exchange_orders(exchange),
            "levels": lambda locate, side: exchange.levels(locate, side.encode())}


@pytest.fixture(scope="module")
def day():
    sent, exchange = generated_day(30_000)
    return sent, exchange, day_messages(sent)


def test_book_equals_the_exchange_book_and_a_reference_rebuilt_from_the_messages(day):
    sent, exchange, messages = day
    books = Books(book_config())
    reference = ReferenceBook()
    for message in messages:
        books.on_message(message)
        reference.apply(message)
    orders = exchange_orders(exchange)
    assert len(orders) > 1000, "the day must leave a real book behind"
    assert reference.as_orders() == orders, "the generator's book and the messages disagree"
    assert reference.unknown_refs == 0
    assert_books_equal(books, reference_of(exchange), range(1, 121))
    stats = books.stats()
    assert stats["book_orders_live"] == len(orders)
    assert stats["book_instruments"] == 120
    assert stats["book_incomplete"] == 0 and stats["book_unknown_orders"] == 0
    assert stats["book_inconsistent"] == 0 and stats["book_order_overflow"] == 0
    # every message type that changes a book was exercised
    kinds = {m[:1] for m in messages}
    assert set(b"AFECXDUPQHSR") <= {k[0] for k in kinds}


def test_decoder_feeds_the_books_every_first_copy_in_order(day):
    sent, exchange, _ = day
    books = Books(book_config())
    decoder = Decoder([("A", GROUP, PORT)], exchange_midnight_ns=0, books=books)
    for t in sent:
        decoder.decode_mold(0, bytes(t.payload), now=(1, 1))
    assert decoder.stats()["messages"] == 30_000
    assert_books_equal(books, reference_of(exchange), range(1, 121))
    assert books.stats()["book_incomplete"] == 0


def test_levels_only_books_hold_the_same_levels_and_no_order_queues(day):
    sent, exchange, messages = day
    books = Books(book_config(levels_only=True))
    for message in messages:
        books.on_message(message)
    books.check()
    for locate in range(1, 121):
        for side in "BS":
            assert books.levels(locate, side) == exchange.levels(locate, side.encode())
    assert {ref: o[:4] for ref, o in books.orders().items()} == \
        {ref: o[:4] for ref, o in exchange_orders(exchange).items()}
    assert all(o[4] == 0 for o in books.orders().values())   # no queue kept


def test_a_reader_rebuilds_the_book_from_the_stream(day, tmp_path):
    sent, exchange, messages = day
    books = Books(book_config(), feed="day", root=str(tmp_path))
    reader = consumer.open("day", str(tmp_path), start="oldest")
    rebuilt = ReferenceBook()
    levels: dict[tuple, tuple] = {}
    tops: dict[int, tuple] = {}
    ends = 0
    for i, message in enumerate(messages):
        books.on_message(message, receive_ns=1)
        if i % 1000 == 999 or i == len(messages) - 1:   # read as we go: never lapped
            for ev in reader.read(1 << 18):
                ends += ev.end
                if ev.type == "order":
                    rebuilt.apply_order_event(ev)
                elif ev.type == "level":
                    if ev.shares:
                        levels[(ev.locate, ev.side, ev.price)] = (ev.shares, ev.orders)
                    else:
                        levels.pop((ev.locate, ev.side, ev.price), None)
                elif ev.type == "top":
                    tops[ev.locate] = (ev.price, ev.shares, ev.price2, ev.shares2)
            assert reader.status == consumer.lib.TWC_EMPTY
    assert reader.lapped == 0
    assert rebuilt.as_orders() == exchange_orders(exchange)
    for locate in range(1, 121):
        for side in "BS":
            from_levels = sorted(((p, s, n) for (l, sd, p), (s, n) in levels.items()
                                  if l == locate and sd == side), reverse=side == "B")
            assert from_levels == exchange.levels(locate, side.encode())
        bids, asks = exchange.levels(locate, b"B"), exchange.levels(locate, b"S")
        want_top = (bids[0][0] if bids else 0, bids[0][1] if bids else 0,
                    asks[0][0] if asks else 0, asks[0][1] if asks else 0)
        assert tops.get(locate, (0, 0, 0, 0)) == want_top
        snap = reader.snapshot(exchange_symbol(locate))
        assert snap["bids"] == bids[:10] and snap["asks"] == asks[:10]
        assert not snap["incomplete"]
    # one END per message that changed something, and the engine-to-consumer stage was measured
    assert 0 < ends <= len(messages)
    assert reader.latency()["count"] == ends


def exchange_symbol(locate: int) -> str:
    from tickwire_feed.market import stock_symbols
    return stock_symbols(120)[locate - 1]


def test_joining_mid_day_marks_books_that_refer_to_unseen_orders_incomplete_until_a_new_day(day):
    _, _, messages = day
    books = Books(book_config())
    for message in messages[5000:10000]:       # the opening and the first orders never seen
        books.on_message(message)
    books.check()
    stats = books.stats()
    assert stats["book_unknown_orders"] > 0 and stats["book_incomplete"] > 0
    incomplete = [books.instrument(l)["incomplete"] for l in range(1, 121) if books.instrument(l)]
    assert any(incomplete)
    # a new day (start of messages) rebuilds: every book empty and complete again
    books.on_message(itch.encode("S", event_code="O"))
    stats = books.stats()
    assert stats["book_incomplete"] == 0 and stats["book_orders_live"] == 0
    assert stats["book_resets"] == 1
    assert not any(books.instrument(l)["incomplete"] for l in range(1, 121) if books.instrument(l))


def test_a_gap_the_decoder_gives_up_on_marks_every_book_incomplete_even_new_ones(tmp_path):
    sent, _ = generated_day(4000, stocks=20, gap_every=300, gap_size=2)
    books = Books(book_config(), feed="gaps", root=str(tmp_path))
    reader = consumer.open("gaps", str(tmp_path), start="oldest")
    decoder = Decoder([("A", GROUP, PORT)], exchange_midnight_ns=0, books=books)
    first_gap = next(i for i, t in enumerate(sent) if t.gap_before)
    for t in sent[:first_gap]:
        decoder.decode_mold(0, bytes(t.payload), now=(1, 1))
    assert books.stats()["book_incomplete"] == 0 and books.stats()["book_losses"] == 0
    decoder.decode_mold(0, bytes(sent[first_gap].payload), now=(1, 1))
    stats = books.stats()
    assert decoder.stats()["gaps"] == 1 and stats["book_losses"] == 1
    assert stats["book_incomplete"] == stats["book_instruments"] > 0
    events = reader.read(1 << 18)
    assert any(ev.type == "status" and ev.kind == "incomplete" and ev.locate == 0 for ev in events)
    # an instrument first seen after the loss starts incomplete too
    books.on_message(itch.encode("A", stock_locate=999, order_reference_number=1, buy_sell_indicator="B",
                                 shares=1, stock="LATE", price=10000))
    assert books.instrument(999)["incomplete"]
    assert reader.snapshot("ZZZZ") is None
    assert all(snap["incomplete"] for snap in reader.snapshots().values())


def test_a_message_taken_out_of_order_marks_the_books_incomplete():
    books = Books(book_config())
    decoder = Decoder([("A", GROUP, PORT)], exchange_midnight_ns=0, books=books)
    add = itch.encode("A", stock_locate=1, order_reference_number=5, buy_sell_indicator="B",
                      shares=100, stock="AAPL", price=10000)
    delete = itch.encode("D", stock_locate=1, order_reference_number=5)
    session = moldudp64.session_bytes("T")
    decoder.decode_mold(0, bytes(moldudp64.encode_packet(session, 1, [itch.encode("S", event_code="O")])), now=(1, 1))
    decoder.decode_mold(0, bytes(moldudp64.encode_packet(session, 3, [delete])), now=(1, 1))
    decoder.decode_mold(0, bytes(moldudp64.encode_packet(session, 2, [add])), now=(1, 1))
    # the add came after its delete: the order lingers in the book, which says it is not to be trusted
    assert books.stats()["book_incomplete"] >= 1
    assert books.instrument(1)["incomplete"]


def test_order_overflow_is_counted_never_fatal_and_instrument_overflow_too(day):
    _, _, messages = day
    books = Books(book_config(max_orders=100, max_instruments=8))
    for message in messages:
        books.on_message(message)
    books.check()
    stats = books.stats()
    assert stats["book_order_overflow"] > 0
    assert stats["book_instrument_overflow"] > 0
    assert stats["book_instruments"] == 8
    assert stats["book_orders_live"] <= 100
    assert stats["book_incomplete"] > 0
    assert len(books.orders()) == stats["book_orders_live"]


def test_symbol_filter_builds_only_the_named_books(day):
    sent, exchange, messages = day
    books = Books(book_config(symbols=["AAPL", "S0042"]))
    for message in messages:
        books.on_message(message)
    books.check()
    assert books.stats()["book_instruments"] == 2
    aapl, s42 = 1, 16 + 42
    want = {ref: o for ref, o in exchange_orders(exchange).items() if o[0] in (aapl, s42)}
    assert books.orders() == want
    assert books.instrument(2) is None
    assert books.stats()["book_filtered"] > 0


@pytest.mark.parametrize("kw, fragment", [
    (dict(depth=0), "depth"), (dict(depth=65), "depth"), (dict(max_orders=0), "maxOrders"),
    (dict(max_instruments=70000), "maxInstruments"), (dict(ring_events=1000), "power of two"),
    (dict(symbols=["TOO LONG NAME"]), "symbols"),
])
def test_bad_book_configs_are_refused_with_the_field_named(kw, fragment):
    with pytest.raises(ConfigError, match=fragment):
        Books(book_config(**kw))


def test_plan_books_object_maps_to_the_config():
    config = BooksConfig.from_plan({"enabled": True, "depth": 5, "symbols": ["AAPL"],
                                    "maxOrders": 1000, "maxInstruments": 10})
    assert (config.enabled, config.depth, config.symbols, config.max_orders,
            config.max_instruments) == (True, 5, ["AAPL"], 1000, 10)
    assert BooksConfig.from_plan(None).enabled is False
    with pytest.raises(ConfigError, match="unknown keys"):
        BooksConfig.from_plan({"enable": True})


def test_a_stream_root_the_engine_cannot_write_is_a_config_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="stream"):
        Books(book_config(), feed="x", root=str(blocker))


def test_the_reader_histogram_uses_the_engines_buckets():
    from tickwire_engine._native import lib as native
    for value in (0, 1, 63, 64, 65, 100, 1000, 12345, 10**6, 2**35, 2**40):
        assert consumer.lib.twc_hist_index(value) == native.tw_hist_index(value)
    for index in (0, 63, 64, 100, 500, 1023):
        assert consumer.lib.twc_hist_bucket_low(index) == native.tw_hist_bucket_low(index)


@pytest.mark.parametrize("message", [
    itch.encode("D", stock_locate=1, order_reference_number=0),
    itch.encode("E", stock_locate=1, order_reference_number=0, executed_shares=100, match_number=1),
    itch.encode("X", stock_locate=1, order_reference_number=0, cancelled_shares=100),
    itch.encode("U", stock_locate=1, original_order_reference_number=0, new_order_reference_number=9,
                shares=1, price=1),
], ids=["D", "E", "X", "U"])
def test_order_reference_zero_is_never_an_order(message):
    # Found by the fuzzer: the hash's empty slots hold reference 0, so a lookup of 0 "found" one.
    books = Books(book_config())
    books.on_message(itch.encode("A", stock_locate=1, order_reference_number=5, buy_sell_indicator="B",
                                 shares=100, stock="AAPL", price=10000))
    books.on_message(itch.encode("D", stock_locate=1, order_reference_number=5))
    books.on_message(message)
    books.check()
    assert books.stats()["book_orders_live"] == 0 and books.stats()["book_unknown_orders"] == 1


def test_an_add_or_replace_of_zero_shares_is_refused_as_inconsistent():
    # Found by the fuzzer: a live order holding no shares broke the level totals' invariant.
    books = Books(book_config())
    books.on_message(itch.encode("A", stock_locate=1, order_reference_number=5, buy_sell_indicator="B",
                                 shares=0, stock="AAPL", price=10000))
    books.on_message(itch.encode("A", stock_locate=1, order_reference_number=6, buy_sell_indicator="B",
                                 shares=10, stock="AAPL", price=10000))
    books.on_message(itch.encode("U", stock_locate=1, original_order_reference_number=6,
                                 new_order_reference_number=7, shares=0, price=10000))
    books.check()
    stats = books.stats()
    assert stats["book_orders_live"] == 0 and stats["book_inconsistent"] == 2
    assert books.instrument(1)["incomplete"] and books.levels(1, "B") == []


def test_a_second_day_on_the_same_books_builds_the_same_book_again(day):
    # start of messages clears what the first day used (not the whole pool): the second day's
    # book must be exactly the first's
    _, exchange, messages = day
    books = Books(book_config())
    for _ in range(2):
        for message in messages:      # each day opens with start of messages ('S' 'O')
            books.on_message(message)
        assert_books_equal(books, reference_of(exchange), range(1, 121))
    assert books.stats()["book_resets"] == 2


def test_a_new_day_empties_a_crowded_order_hash_whole():
    # Random references in a small table collide and share probe runs: the reset at start of
    # messages must empty the table without breaking the runs of entries it has yet to remove.
    import random
    rng = random.Random(5)
    books = Books(book_config(max_orders=64))
    refs = rng.sample(range(1, 1 << 40), 60)
    for day in range(2):
        books.on_message(itch.encode("S", event_code="O"))
        for i, ref in enumerate(refs):
            books.on_message(itch.encode("A", stock_locate=1 + i % 3, order_reference_number=ref,
                                         buy_sell_indicator="BS"[i % 2], shares=100, stock="AAPL",
                                         price=10000 + i))
        books.check()
        assert books.stats()["book_orders_live"] == 60 and books.stats()["book_inconsistent"] == 0
    books.on_message(itch.encode("S", event_code="O"))
    books.check()
    assert books.orders() == {} and books.stats()["book_orders_live"] == 0
