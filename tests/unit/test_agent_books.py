"""The agent's side of the books (contract C8): plan -> engine flags, engine stats -> /metrics and
status.snapshot.books, counters that keep rising across engine restarts. The real engine's stats
reach these through tests/e2e/test_consumer_podman.py."""
from __future__ import annotations

import json

import pytest

from tests.unit.test_agent_metrics import STATS, scrape, value
from tickwire_agent import example
from tickwire_agent.agent import books_arguments
from tickwire_agent.metrics import AgentView
from tickwire_agent.plan import PlanError, from_document
from tickwire_agent.status import snapshot

BOOK_STATS = {"book_instruments": 12, "book_orders_live": 3400, "book_order_overflow": 2,
              "book_events_published": 99_000, "book_incomplete": 1, "book_messages": 120_000}
NO_BOOKS = {key: 0 for key in BOOK_STATS}   # the engine reports zeros when it builds no books


def plan_with(**changes):
    doc = json.loads(example.example_json())
    doc.update(changes)
    return from_document(doc)


def test_books_and_the_stream_root_reach_the_engine_flags():
    plan = plan_with(books={"enabled": True, "depth": 5, "symbols": ["AAPL", "BRK.A"], "maxOrders": 4096,
                            "maxInstruments": 8}, streamRoot="/run/tickwire/streams/feeds")
    assert plan.stream_dir == "/run/tickwire/streams/feeds/nasdaq-totalview"
    assert books_arguments(plan) == [
        "--books", "--feed", "nasdaq-totalview", "--stream-root", "/run/tickwire/streams/feeds",
        "--book-depth", "5", "--book-max-orders", "4096", "--book-max-instruments", "8",
        "--book-symbols", "AAPL,BRK.A"]


@pytest.mark.parametrize("books", [None, {"enabled": False, "depth": 10, "symbols": [], "maxOrders": 4096,
                                          "maxInstruments": 8}])
def test_no_books_no_flags_and_no_stream(books):
    doc = json.loads(example.example_json())
    doc.pop("books")
    if books is not None:
        doc["books"] = books
    plan = from_document(doc)
    assert books_arguments(plan) == [] and plan.stream_dir is None


@pytest.mark.parametrize("books, path, words", [
    ({"symbols": ["A", "B", "C"], "maxInstruments": 2}, "books.symbols", "3 symbols listed"),
    ({"depth": 65}, "books.depth", "65"),
    ({"symbols": ["TOOLONGSYM"]}, "books.symbols[0]", "TOOLONGSYM"),
    ({"symbols": ["AAPL", "AAPL"]}, "books.symbols", "unique"),
    ({"symbols": ["A,B"]}, "books.symbols[0]", "A,B"),       # the engine's flag is comma-separated
])
def test_bad_books_are_refused_naming_the_field(books, path, words):
    base = {"enabled": True, "depth": 10, "symbols": [], "maxOrders": 4096, "maxInstruments": 8}
    with pytest.raises(PlanError) as refused:
        plan_with(books={**base, **books})
    assert any(p.path == path and words in str(p) for p in refused.value.problems), refused.value.problems


def books_view() -> AgentView:
    view = AgentView("f")
    view.books = True
    return view


def test_book_metrics_follow_the_engine():
    view = books_view()
    view.stats = {**STATS, **BOOK_STATS}
    samples = scrape(view)
    assert value(samples, "tickwire_book_instruments") == 12
    assert value(samples, "tickwire_book_messages_total") == 120_000
    assert value(samples, "tickwire_book_orders_live") == 3400
    assert value(samples, "tickwire_book_order_overflow_total") == 2
    assert value(samples, "tickwire_book_events_published_total") == 99_000
    assert value(samples, "tickwire_book_incomplete_instruments") == 1


def test_without_books_there_are_no_book_metrics():
    """The engine's zeros without books would read as real, empty books on a dashboard."""
    view = AgentView("f")
    view.stats = {**STATS, **NO_BOOKS}
    assert not any(name.startswith("tickwire_book_") for name, _ in scrape(view))


def test_book_counters_keep_rising_across_an_engine_restart():
    view = books_view()
    first = {**STATS, **BOOK_STATS, "engine": {"pid": 1, "started_at": 1.0}}
    again = {**STATS, **BOOK_STATS, "engine": {"pid": 2, "started_at": 2.0}, "book_events_published": 10,
             "book_order_overflow": 0, "book_orders_live": 7}
    view.stats = first
    view.stats = again
    samples = scrape(view)
    assert value(samples, "tickwire_book_events_published_total") == 99_010
    assert value(samples, "tickwire_book_order_overflow_total") == 2
    assert value(samples, "tickwire_book_orders_live") == 7          # a gauge: now, not a total


def test_status_snapshot_books():
    stats = {**STATS, **BOOK_STATS, "stream_dir": "/run/tickwire/streams/feeds/itch"}
    books = snapshot(stats, "2026-01-01T00:00:00Z", books=True)["books"]
    assert books == {"instruments": 12, "ordersLive": 3400, "orderOverflow": 2, "eventsPublished": 99_000,
                     "incomplete": 1, "stream": "/run/tickwire/streams/feeds/itch"}
    assert "books" not in snapshot({**STATS, **NO_BOOKS}, "2026-01-01T00:00:00Z")
