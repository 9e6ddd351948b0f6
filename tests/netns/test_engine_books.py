"""Books through the real engine: a generated trading day published on veth between two
namespaces, AF_XDP (generic mode) into the engine, books on its poll thread, and the book a
reader rebuilds from the shared-memory stream compared with the book the exchange side kept,
order by order and level by level. Needs root: fails instead of skipping when
TICKWIRE_REQUIRE_NETNS=1 (CI)."""
from __future__ import annotations

import pytest

from tests.support.engine_run import engine_running, publish
from tests.support.itch_book import ReferenceBook, exchange_orders
from tests.support.netns import VethPair
from tickwire_engine import consumer
from tickwire_feed.market import Mix, stock_symbols
from tickwire_feed.schedule import Schedule, ScheduleConfig

pytestmark = pytest.mark.netns

GROUP_A, GROUP_B, PORT = "239.77.3.1", "239.77.3.2", 26479
LINE_A, LINE_B = f"A={GROUP_A}:{PORT}", f"B={GROUP_B}:{PORT}"
MIX = "A=30,F=6,E=8,C=3,X=6,D=22,U=12,P=3,Q=0.5,H=0.5,S=0.2,R=0.2,I=1,B=0.2"
STOCKS, DEPTH = 60, 8


def book_args(feed: str, root) -> list[str]:
    return ["--books", "--feed", feed, "--stream-root", str(root), "--book-depth", str(DEPTH),
            "--book-max-orders", "65536", "--book-max-instruments", "256",
            "--book-ring-events", str(1 << 20)]


def exchange_book(messages: int, seed: int):
    """The exchange side's book for the same day: the feed's contents depend on the seed, mix,
    day and stocks only (losses draw from their own generators)."""
    schedule = Schedule(ScheduleConfig(messages=messages, per_packet=4, mix=Mix.parse(MIX), day=True,
                                       stocks=STOCKS, seed=seed))
    while schedule.next_chunk(512):
        pass
    return schedule.market.book


def day_args(messages: int, seed: int) -> list[str]:
    return ["--messages", str(messages), "--per-packet", "4", "--mix", MIX, "--day",
            "--stocks", str(STOCKS), "--seed", str(seed), "--rate", "40000"]


def rebuild(events) -> tuple[ReferenceBook, dict]:
    """Orders from the order events, levels from the level events."""
    orders = ReferenceBook()
    levels: dict[tuple, tuple] = {}
    for ev in events:
        if ev.type == "order":
            orders.apply_order_event(ev)
        elif ev.type == "level":
            if ev.shares:
                levels[(ev.locate, ev.side, ev.price)] = (ev.shares, ev.orders)
            else:
                levels.pop((ev.locate, ev.side, ev.price), None)
    return orders, levels


def levels_of(levels: dict, locate: int, side: str) -> list[tuple[int, int, int]]:
    return sorted(((p, s, n) for (l, sd, p), (s, n) in levels.items() if l == locate and sd == side),
                  reverse=side == "B")


@pytest.fixture
def pair():
    with VethPair() as p:
        yield p


def test_a_day_with_losses_on_one_line_rebuilds_the_exchange_book_from_the_stream(pair, tmp_path):
    messages, seed = 24_000, 31
    root = tmp_path / "streams"
    with engine_running(pair, [LINE_A, LINE_B], tmp_path, book_args("day", root)) as engine:
        early = consumer.open("day", str(root), start="oldest")   # before the day starts
        stopped = consumer.open("day", str(root))                 # opens, then never reads
        sent = publish(pair, tmp_path, ["--line", LINE_A, "--line", LINE_B, "--loss-a", "5",
                                        *day_args(messages, seed)])
        stats = engine.settle(messages=sent["messages_sent"])
        late = consumer.open("day", str(root))                    # joins after the day
        events = early.read(1 << 20)
        final = engine.stop()
    exchange = exchange_book(messages, seed)

    assert sent["lost_on_a"] > 0 and sent["covered_by_other_line"] > 0
    assert final["messages"] == messages and final["gaps"] == 0
    assert early.lapped == 0 and early.status == consumer.lib.TWC_EMPTY
    assert final["book_incomplete"] == 0 and final["book_unknown_orders"] == 0
    assert final["book_orders_live"] == len(exchange.orders) > 1000
    assert final["book_instruments"] == STOCKS
    assert final["book_events_published"] == len(events) == stats["book_events_published"]

    orders, levels = rebuild(events)
    assert orders.as_orders() == exchange_orders(exchange)        # order by order, with priority
    symbols = stock_symbols(STOCKS)
    for locate in range(1, STOCKS + 1):
        for side in "BS":
            want = exchange.levels(locate, side.encode())
            assert levels_of(levels, locate, side) == want, (locate, side)
            snap = late.snapshot(symbols[locate - 1])
            assert (snap["bids"] if side == "B" else snap["asks"]) == want[:DEPTH]
            assert not snap["incomplete"]
    # the late reader starts at the present; the stopped one was never lapped, and both see the end
    assert late.read() == [] and late.status == consumer.lib.TWC_ENDED
    assert len(stopped.read(1 << 20)) == len(events) and stopped.lapped == 0
    assert early.latency()["count"] > 0


def test_an_unrecovered_loss_marks_every_book_incomplete_in_stats_stream_and_snapshots(pair, tmp_path):
    root = tmp_path / "streams"
    with engine_running(pair, [LINE_A], tmp_path, book_args("lossy", root)) as engine:
        reader = consumer.open("lossy", str(root), start="oldest")
        sent = publish(pair, tmp_path, ["--line", LINE_A, "--gap-every", "500", *day_args(6000, 5)])
        engine.settle(messages=sent["messages_sent"])
        final = engine.stop()
    assert sent["expected_gaps"] > 0 and final["gaps"] == sent["expected_gaps"]
    assert final["book_losses"] >= 1
    assert final["book_incomplete"] == final["book_instruments"] == STOCKS
    events = reader.read(1 << 20)
    assert any(ev.type == "status" and ev.kind == "incomplete" and ev.locate == 0 for ev in events)
    assert all(snap["incomplete"] for snap in reader.snapshots().values())
