"""Holes age on time, not on traffic (issue 11, defect 5): what the engine's idle loop relies on.

A hole that only one line has revealed waits for the other line; when the feed then goes quiet,
only ticks (no packets) can turn it into a gap. tw_decoder_pending() tells an idle caller whether
it must keep ticking. Clocks are chosen by the test: nothing is read or timed.
"""
from tests.support import frames as F
from tickwire_engine.decoder import Decoder

A, B = ("A", "239.1.1.1", 5000), ("B", "239.1.1.2", 5001)
WINDOW = 2_000_000
T0 = 10**12


def at(ns: int) -> tuple[int, int]:
    return (T0 + ns, T0 + ns)


def test_a_hole_opened_just_before_the_feed_stops_becomes_a_gap_on_ticks_alone():
    dec = Decoder([A, B], exchange_midnight_ns=0, arbitration_window_ns=WINDOW)
    assert not dec.pending()
    dec.decode_mold("A", F.run_of(1, 10), now=at(0))
    dec.decode_mold("B", F.run_of(1, 10), now=at(0))
    dec.decode_mold("A", F.run_of(20, 1), now=at(1000))      # 11..19 lost on A; B falls silent
    assert dec.pending()
    dec.tick(now=at(1000 + WINDOW - 1))
    assert (dec.stats()["gaps"], dec.stats()["missing"]) == (0, 0) and dec.pending()
    dec.tick(now=at(1000 + WINDOW))
    assert (dec.stats()["gaps"], dec.stats()["missing"]) == (1, 9)
    assert not dec.pending()


def test_with_one_line_nothing_is_ever_pending():
    dec = Decoder([A], exchange_midnight_ns=0)
    dec.decode_mold("A", F.run_of(1, 3), now=at(0))
    dec.decode_mold("A", F.run_of(10, 1), now=at(0))
    assert dec.stats()["gaps"] == 1 and not dec.pending()


def test_pending_follows_the_missing_messages_not_the_holes_timing_records():
    # The sequence window keeps one timing record per group of holes until the frontier passes
    # it; a record whose messages all arrived late must not keep the engine ticking every 1 ms.
    dec = Decoder([A, B], exchange_midnight_ns=0, arbitration_window_ns=WINDOW)
    dec.decode_mold("A", F.run_of(1, 10), now=at(0))
    dec.decode_mold("B", F.run_of(1, 10), now=at(0))
    dec.decode_mold("A", F.run_of(15, 1), now=at(1000))      # 11..14 missing so far
    assert dec.pending()
    dec.decode_mold("B", F.run_of(11, 2), now=at(2000))      # B fills 11..12 and stops
    assert dec.pending()                                     # 13..14 still wait for a line
    dec.decode_mold("A", F.run_of(13, 2), now=at(3000))      # A's late copies fill them
    assert not dec.pending()
    dec.tick(now=at(3000 + 10 * WINDOW))
    s = dec.stats()
    assert (s["gaps"], s["missing"], s["messages"], s["duplicates"]) == (0, 0, 15, 10)   # B's 1..10


def test_an_end_of_session_settles_what_was_pending():
    dec = Decoder([A, B], exchange_midnight_ns=0, arbitration_window_ns=WINDOW)
    dec.decode_mold("A", F.run_of(1, 10), now=at(0))
    dec.decode_mold("B", F.run_of(1, 10), now=at(0))
    dec.decode_mold("A", F.run_of(20, 1), now=at(1000))      # 11..19 missing so far
    assert dec.pending()
    dec.decode_mold("A", F.end_of_session(21), now=at(2000))
    assert not dec.pending()
    assert (dec.stats()["gaps"], dec.stats()["missing"]) == (1, 9)
