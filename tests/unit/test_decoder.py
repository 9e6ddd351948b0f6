"""The C decoder through its Python wrapper: exact counts for sequencing, A/B arbitration,
malformed input of every kind, frame parsing and latency, then real NASDAQ captures.

Time is passed in explicitly (no clocks read, nothing timed): `now=(mono_ns, real_ns)`.
"""
import glob
import os
import struct
import time
from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest

from tests.support import frames as F
from tickwire_engine._native import ffi, lib
from tickwire_engine import config
from tickwire_engine.config import ConfigError
from tickwire_engine.decoder import Decoder, FrameResult
from tests.support.testdata import CAPTURES_DIR

A_GROUP, A_PORT = "239.1.1.1", 5000
B_GROUP, B_PORT = "239.1.1.2", 5001
WINDOW = 1_000_000
MIDNIGHT = 1_700_000_000 * 10**9
T0 = (5 * 10**9, MIDNIGHT + 10 * 3600 * 10**9)
CAPTURES = CAPTURES_DIR

DATA, UNMATCHED, MALFORMED = FrameResult.DATA, FrameResult.UNMATCHED, FrameResult.MALFORMED


def at(ns_after_t0: int) -> tuple[int, int]:
    return (T0[0] + ns_after_t0, T0[1] + ns_after_t0)


def one_line(**kw) -> Decoder:
    return Decoder([("A", A_GROUP, A_PORT)], exchange_midnight_ns=MIDNIGHT, **kw)


def two_lines(**kw) -> Decoder:
    kw.setdefault("arbitration_window_ns", WINDOW)
    return Decoder([("A", A_GROUP, A_PORT), ("B", B_GROUP, B_PORT)], exchange_midnight_ns=MIDNIGHT,
                   **kw)


def send(dec: Decoder, line: str, payload: bytes, now=T0, **kw) -> FrameResult:
    group, port = (A_GROUP, A_PORT) if line == "A" else (B_GROUP, B_PORT)
    return dec.decode_frame(F.frame(payload, group, port, **kw), now=now)


def counts(dec: Decoder, *keys: str) -> tuple:
    stats = dec.stats()
    return tuple(stats[k] for k in keys)


def assert_consistent(stats: dict) -> None:
    """Invariants that hold after any input."""
    assert stats["malformed"] == sum(stats["malformed_by_reason"].values())
    assert stats["messages"] == sum(stats["messages_by_type"].values())
    assert stats["packets"] == sum(line["packets"] for line in stats["lines"].values())
    assert stats["recovered"] <= stats["missing"]


# ---- counting and sequencing on one line -----------------------------------------------------------

def test_n_messages_in_packets_of_any_size_count_n():
    dec = one_line()
    seq = 1
    for size in (1, 2, 7, 30, 100):
        assert send(dec, "A", F.run_of(seq, size, "A")) is DATA
        seq += size
    send(dec, "A", F.mold(seq, [F.itch("E"), F.itch("D"), F.itch("P")]))
    stats = dec.stats()
    assert (stats["frames"], stats["packets"], stats["messages"]) == (6, 6, 143)
    assert stats["messages_by_type"] == {"A": 140, "E": 1, "D": 1, "P": 1}
    assert (stats["gaps"], stats["missing"], stats["duplicates"], stats["malformed"]) == (0, 0, 0, 0)
    assert stats["lines"] == {"A": {"packets": 6, "first_messages": 143}}
    assert stats["bytes"] == sum(len(F.frame(F.run_of(1, n, "A"))) for n in (1, 2, 7, 30, 100)) \
        + len(F.frame(F.mold(seq, [F.itch("E"), F.itch("D"), F.itch("P")])))
    assert_consistent(stats)


def test_a_jump_ahead_is_a_gap_at_once_with_one_line():
    dec = one_line()
    send(dec, "A", F.run_of(1, 10))
    send(dec, "A", F.run_of(15, 6))            # 11..14 missing
    assert counts(dec, "gaps", "missing") == (1, 4)
    send(dec, "A", F.run_of(100, 1))           # 21..99 missing
    assert counts(dec, "gaps", "missing", "messages") == (2, 83, 17)


def test_late_fill_after_a_gap_is_recovered_once():
    dec = one_line()
    send(dec, "A", F.run_of(1, 5))
    send(dec, "A", F.run_of(9, 2))             # hole 6..8 declared
    send(dec, "A", F.run_of(6, 2))             # 6, 7 recovered
    assert counts(dec, "gaps", "missing", "recovered", "messages") == (1, 3, 2, 9)
    send(dec, "A", F.run_of(8, 1))
    send(dec, "A", F.run_of(8, 1))             # second copy: a duplicate, not recovered again
    assert counts(dec, "recovered", "messages", "duplicates") == (3, 10, 1)


def test_reordering_on_one_line_is_a_gap_then_a_recovery():
    dec = one_line()
    for seq in (1, 2, 4, 3, 5):
        send(dec, "A", F.run_of(seq, 1))
    assert counts(dec, "gaps", "missing", "recovered", "messages", "duplicates") == (1, 1, 1, 5, 0)


def test_duplicates_are_counted_and_not_decoded_twice():
    dec = one_line()
    packet = F.run_of(1, 8, "D")
    for _ in range(3):
        send(dec, "A", packet)
    assert counts(dec, "messages", "duplicates", "gaps") == (8, 16, 0)
    assert dec.stats()["messages_by_type"] == {"D": 8}


def test_partial_overlap_is_handled_message_by_message():
    dec = one_line()
    send(dec, "A", F.run_of(1, 10))
    send(dec, "A", F.run_of(8, 6))             # 8..10 duplicates, 11..13 new
    assert counts(dec, "messages", "duplicates") == (13, 3)
    send(dec, "A", F.run_of(30, 1))            # hole 14..29 (16)
    send(dec, "A", F.run_of(20, 3))            # fills the middle: hole splits into 14..19, 23..29
    send(dec, "A", F.run_of(18, 8))            # 18, 19 recovered, 20..22 dup, 23..25 recovered
    assert counts(dec, "gaps", "missing", "recovered", "duplicates") == (1, 16, 3 + 2 + 3, 6)
    send(dec, "A", F.run_of(14, 16))           # the rest: 14..17 and 26..29 recovered
    assert counts(dec, "recovered", "messages", "duplicates") == (16, 30, 6 + 8)


# ---- heartbeats, end of session, sessions -------------------------------------------------------

def test_heartbeat_at_the_next_sequence_number_is_no_gap():
    dec = one_line()
    send(dec, "A", F.run_of(1, 5))
    send(dec, "A", F.heartbeat(6))
    send(dec, "A", F.heartbeat(6))
    assert counts(dec, "heartbeats", "gaps", "messages", "packets") == (2, 0, 5, 3)


def test_heartbeat_ahead_reveals_a_gap():
    dec = one_line()
    send(dec, "A", F.run_of(1, 5))
    send(dec, "A", F.heartbeat(9))             # 6, 7, 8 were sent and lost
    assert counts(dec, "heartbeats", "gaps", "missing") == (1, 1, 3)
    send(dec, "A", F.run_of(9, 1))
    assert counts(dec, "gaps", "messages") == (1, 6)


def test_end_of_session_is_counted_and_reveals_a_gap():
    dec = one_line()
    send(dec, "A", F.run_of(1, 5))
    send(dec, "A", F.end_of_session(8))        # 6, 7 were sent and lost
    assert counts(dec, "end_of_session", "gaps", "missing", "heartbeats") == (1, 1, 2, 0)
    send(dec, "A", F.end_of_session(8))        # the usual repeats: nothing new
    assert counts(dec, "end_of_session", "gaps", "missing") == (2, 1, 2)


def test_sessions_are_tracked_separately():
    dec = one_line()
    x, y = b"SESSION--X", b"SESSION--Y"
    send(dec, "A", F.run_of(1, 10, session=x))
    send(dec, "A", F.run_of(1, 5, session=y))
    send(dec, "A", F.run_of(11, 10, session=x))
    send(dec, "A", F.run_of(6, 5, session=y))
    send(dec, "A", F.run_of(1, 5, session=y))  # y's first five again
    assert counts(dec, "messages", "gaps", "duplicates", "sessions_replaced") == (30, 0, 5, 0)


def test_a_session_starts_where_we_join_it():
    dec = one_line()
    send(dec, "A", F.run_of(1_000_000, 3))
    assert counts(dec, "messages", "gaps", "missing") == (3, 0, 0)


def test_the_least_recently_used_session_is_replaced():
    dec = one_line()
    sessions = [f"SESSION-{i:02d}".encode() for i in range(lib.TW_MAX_SESSIONS + 1)]
    for s in sessions[:-1]:
        send(dec, "A", F.run_of(1, 1, session=s))
    send(dec, "A", F.run_of(2, 1, session=sessions[0]))   # session 1 is now the oldest
    send(dec, "A", F.run_of(1, 1, session=sessions[-1]))  # replaces session 1
    assert counts(dec, "sessions_replaced") == (1,)
    send(dec, "A", F.run_of(1, 1, session=sessions[0]))   # still tracked: a duplicate
    assert counts(dec, "duplicates", "messages") == (1, 10)
    send(dec, "A", F.run_of(1, 1, session=sessions[1]))   # forgotten: new again, replaces another
    assert counts(dec, "duplicates", "messages", "sessions_replaced") == (1, 11, 2)


def test_a_replaced_session_declares_its_pending_holes():
    dec = two_lines()
    send(dec, "A", F.run_of(1, 1, session=b"SESSION-00"))
    send(dec, "A", F.run_of(5, 1, session=b"SESSION-00"))  # 2..4 pending on line B
    assert counts(dec, "gaps") == (0,)
    for i in range(1, lib.TW_MAX_SESSIONS + 1):
        send(dec, "A", F.run_of(1, 1, session=f"SESSION-{i:02d}".encode()))
    assert counts(dec, "sessions_replaced", "gaps", "missing") == (1, 1, 3)


# ---- A/B arbitration ------------------------------------------------------------------------------

def test_holes_on_one_line_filled_by_the_other_are_no_gaps():
    dec = two_lines()
    for seq in range(1, 101, 10):
        if seq not in (21, 51, 61):                 # line A loses three packets
            send(dec, "A", F.run_of(seq, 10))
        send(dec, "B", F.run_of(seq, 10))
    stats = dec.stats()
    assert (stats["messages"], stats["gaps"], stats["missing"], stats["recovered"]) == (100, 0, 0, 0)
    assert stats["duplicates"] == 70
    assert stats["lines"]["A"] == {"packets": 7, "first_messages": 70}
    assert stats["lines"]["B"] == {"packets": 10, "first_messages": 30}
    dec.flush()
    assert counts(dec, "gaps") == (0,)


def test_the_first_copy_wins_whichever_line_it_comes_from():
    dec = two_lines()
    send(dec, "B", F.run_of(1, 5))
    send(dec, "A", F.run_of(1, 5))
    send(dec, "A", F.run_of(6, 5))
    send(dec, "B", F.run_of(6, 5))
    lines = dec.stats()["lines"]
    assert (lines["A"]["first_messages"], lines["B"]["first_messages"]) == (5, 5)
    assert counts(dec, "duplicates", "messages") == (10, 10)


def test_a_hole_both_lines_skipped_is_a_gap_without_waiting():
    dec = two_lines()
    send(dec, "A", F.run_of(1, 10))
    send(dec, "B", F.run_of(1, 10))
    send(dec, "A", F.run_of(16, 5))             # 11..15 lost on A: pending
    assert counts(dec, "gaps", "missing") == (0, 0)
    send(dec, "B", F.run_of(16, 5))             # ... and on B: both moved past it
    assert counts(dec, "gaps", "missing", "recovered", "duplicates") == (1, 5, 0, 15)


def test_a_pending_hole_becomes_a_gap_when_the_window_expires():
    dec = two_lines()
    send(dec, "A", F.run_of(1, 10))
    send(dec, "A", F.run_of(16, 5))             # hole 11..15 opens at T0, B is silent
    dec.tick(at(WINDOW - 1))
    assert counts(dec, "gaps") == (0,)
    dec.tick(at(WINDOW))
    assert counts(dec, "gaps", "missing") == (1, 5)
    send(dec, "B", F.run_of(11, 5), now=at(WINDOW + 10))  # B catches up late: recovered
    assert counts(dec, "gaps", "missing", "recovered", "messages") == (1, 5, 5, 20)


def test_expiry_is_also_checked_on_each_packet():
    dec = two_lines()
    send(dec, "A", F.run_of(1, 10))
    send(dec, "A", F.run_of(16, 5))
    send(dec, "A", F.heartbeat(21), now=at(WINDOW))   # no tick: the packet settles the hole
    assert counts(dec, "gaps", "missing") == (1, 5)


def test_a_pending_hole_filled_within_the_window_is_neither_gap_nor_recovered():
    dec = two_lines()
    send(dec, "A", F.run_of(1, 10))
    send(dec, "A", F.run_of(16, 5))
    send(dec, "B", F.run_of(11, 3), now=at(WINDOW // 2))  # part of it in time
    dec.tick(at(2 * WINDOW))                             # 14, 15 never came
    assert counts(dec, "gaps", "missing", "recovered", "messages") == (1, 2, 0, 18)


def test_reordering_on_one_of_two_lines_is_no_gap():
    dec = two_lines()
    for seq in (1, 2, 4, 3, 5):
        send(dec, "A", F.run_of(seq, 1))
    dec.tick(at(10 * WINDOW))
    assert counts(dec, "gaps", "recovered", "messages") == (0, 0, 5)


def test_flush_declares_every_pending_hole():
    dec = two_lines()
    send(dec, "A", F.run_of(1, 1))
    send(dec, "A", F.run_of(3, 1))
    send(dec, "A", F.run_of(10, 1))
    assert counts(dec, "gaps") == (0,)
    dec.flush()
    assert counts(dec, "gaps", "missing") == (2, 1 + 6)
    dec.flush()
    assert counts(dec, "gaps") == (2,)


def test_heartbeat_on_the_other_line_reveals_a_shared_hole():
    dec = two_lines()
    send(dec, "A", F.run_of(1, 5))
    send(dec, "B", F.run_of(1, 5))
    send(dec, "A", F.run_of(8, 1))              # 6, 7 pending
    send(dec, "B", F.heartbeat(9))              # B says it sent up to 8: it lost them too
    assert counts(dec, "gaps", "missing", "heartbeats") == (1, 2, 1)


# ---- implausible jumps ----------------------------------------------------------------------------

NEAR_2_64 = 2**64 - 5


@pytest.mark.parametrize("bad", [F.heartbeat(NEAR_2_64), F.run_of(NEAR_2_64, 3)],
                         ids=["heartbeat", "data"])
def test_a_jump_near_2_64_is_suspect_and_changes_nothing(bad):
    """Issue 11, defect 1: it once opened a hole of ~2^64 (missing wrapped) and every real message
    after it counted as recovered."""
    dec = one_line()
    send(dec, "A", F.run_of(1, 10))
    send(dec, "A", bad)
    assert counts(dec, "suspect_jumps", "gaps", "missing", "messages") == (1, 0, 0, 10)
    send(dec, "A", F.run_of(11, 10))               # the feed goes on: nothing missing or recovered
    send(dec, "A", F.run_of(25, 1))                # a real loss is still seen: 21..24
    stats = dec.stats()
    assert (stats["messages"], stats["gaps"], stats["missing"], stats["recovered"]) == (21, 1, 4, 0)
    assert stats["confirmed_jumps"] == 0
    assert_consistent(stats)


def test_a_jump_the_other_line_confirms_is_a_real_gap():
    dec = two_lines()
    for line in "AB":
        send(dec, line, F.run_of(1, 10))
    far = 50_000_000
    send(dec, "A", F.run_of(far, 2))               # suspect: held, the session stays at 11
    send(dec, "A", F.run_of(11, 2))                # meanwhile plausible traffic goes on
    assert counts(dec, "suspect_jumps", "messages", "gaps") == (1, 12, 0)
    send(dec, "B", F.run_of(far, 2))               # B shows the same jump: confirmed
    dec.flush()
    stats = dec.stats()
    assert (stats["confirmed_jumps"], stats["gaps"], stats["missing"]) == (1, 1, far - 13)
    assert stats["messages"] == 14 and stats["lines"]["B"]["first_messages"] == 2  # the held copy


def test_the_same_line_continuing_confirms_a_jump_and_a_repeat_does_not():
    dec = one_line()
    send(dec, "A", F.run_of(1, 10))
    far = 5_000_000
    send(dec, "A", F.heartbeat(far))
    send(dec, "A", F.heartbeat(far))               # the same heartbeat again confirms nothing
    assert counts(dec, "suspect_jumps", "confirmed_jumps", "gaps") == (2, 0, 0)
    send(dec, "A", F.run_of(far, 3))               # data from where it said: confirmed
    assert counts(dec, "confirmed_jumps", "gaps", "missing", "messages") == (1, 1, far - 11, 13)


def test_the_held_packets_messages_are_missing_when_the_same_line_confirms_it():
    dec = one_line()
    send(dec, "A", F.run_of(1, 10))
    far = 5_000_000
    send(dec, "A", F.run_of(far, 2))               # held: its two messages are not decoded
    send(dec, "A", F.run_of(far + 2, 2))
    assert counts(dec, "confirmed_jumps", "gaps", "missing", "messages") == (1, 1, far + 2 - 11, 12)


def test_the_rate_bound_allows_a_longer_jump_after_a_silence():
    dec = one_line(max_seq_jump=100, max_seq_rate=1000)
    send(dec, "A", F.run_of(1, 10), now=at(0))
    send(dec, "A", F.run_of(11 + 101, 1), now=at(0))             # 101 > 100: suspect
    assert counts(dec, "suspect_jumps", "gaps") == (1, 0)
    send(dec, "A", F.run_of(11 + 1100, 1), now=at(10**9))        # 1 s later 100 + 1000 may pass
    assert counts(dec, "suspect_jumps", "gaps", "missing") == (1, 1, 1100)
    send(dec, "A", F.run_of(1112 + 1101, 1), now=at(2 * 10**9))  # 1101 > 1100: suspect
    assert counts(dec, "suspect_jumps", "gaps") == (2, 1)


def test_missing_saturates_instead_of_wrapping():
    dec = two_lines()
    for session in (b"SESSION--X", b"SESSION--Y"):              # Y is new: it starts at 1
        for line in "AB":
            send(dec, line, F.run_of(1, 1, session=session))
            send(dec, line, F.heartbeat(2**64 - 2, session=session))
    dec.flush()
    stats = dec.stats()
    assert stats["confirmed_jumps"] == 2 and stats["gaps"] == 2
    assert stats["missing"] == 2**64 - 1                         # 2 * (2^64 - 4) saturated
    assert_consistent(stats)


def test_a_new_session_far_from_1_is_suspect_and_evicts_no_session():
    dec = two_lines()
    sessions = [f"SESSION-{i:02d}".encode() for i in range(lib.TW_MAX_SESSIONS)]
    for s in sessions:
        send(dec, "A", F.run_of(1, 1, session=s))
    far = 10**9
    send(dec, "A", F.run_of(far, 1, session=b"SESSION-XX"))   # held: no slot taken
    send(dec, "A", F.run_of(2, 1, session=sessions[0]))       # every session still tracked
    assert counts(dec, "suspect_jumps", "sessions_replaced", "gaps", "messages") == (1, 0, 0, 9)
    send(dec, "B", F.run_of(far, 1, session=b"SESSION-XX"))   # confirmed: now it takes a slot
    dec.flush()
    assert counts(dec, "confirmed_jumps", "sessions_replaced", "gaps", "missing", "messages") == (
        1, 1, 1, far - 1, 10)


def test_plausibility_defaults_agree_with_c_and_bad_bounds_are_refused():
    assert (config.DEFAULT_MAX_SEQ_JUMP, config.DEFAULT_MAX_SEQ_RATE) == (
        lib.TW_DEFAULT_MAX_SEQ_JUMP, lib.TW_DEFAULT_MAX_SEQ_RATE)
    for bad in (0, -1, 2**64, 1.5, True):
        with pytest.raises(ConfigError, match="max_seq_jump"):
            one_line(max_seq_jump=bad)
        with pytest.raises(ConfigError, match="max_seq_rate"):
            one_line(max_seq_rate=bad)
    engine = config.EngineConfig("lo", [config.Line.parse("A=239.1.1.1:5000")], max_seq_jump=0)
    with pytest.raises(ConfigError, match="max_seq_jump 0"):
        engine.validate()
    engine = config.EngineConfig("lo", [config.Line.parse("A=239.1.1.1:5000")],
                                 arbitration_window_ns=-1)
    with pytest.raises(ConfigError, match="arbitration window -1"):
        engine.validate()


# ---- session start and end -------------------------------------------------------------------------

def test_a_new_session_starts_at_1_so_its_first_packet_lost_on_b_is_no_duplicate():
    """Issue 11, defect 3: the new session started at B's first packet, so A's copy of the packet B
    lost was counted a duplicate and dropped."""
    dec = two_lines()
    x, y = b"SESSION--X", b"SESSION--Y"
    for line in "AB":
        send(dec, line, F.run_of(1, 5, session=x))
    send(dec, "B", F.run_of(5, 4, session=y))      # B lost y's first packet (1..4)
    send(dec, "A", F.run_of(1, 4, session=y))
    send(dec, "A", F.run_of(5, 4, session=y))
    dec.flush()
    stats = dec.stats()
    assert (stats["messages"], stats["duplicates"], stats["gaps"], stats["missing"]) == (13, 9, 0, 0)
    assert stats["lines"]["A"]["first_messages"] == 5 + 4


def test_a_new_sessions_lost_start_is_a_gap_with_one_line():
    dec = one_line()
    send(dec, "A", F.run_of(500, 5, session=b"SESSION--X"))   # the first session: joined mid-way
    send(dec, "A", F.run_of(3, 2, session=b"SESSION--Y"))     # a new one: 1, 2 were lost
    assert counts(dec, "gaps", "missing", "messages") == (1, 2, 7)


def test_copies_from_before_we_joined_are_taken_not_duplicates():
    dec = two_lines()
    send(dec, "A", F.run_of(1000, 5))              # joined here: nothing before is a gap
    send(dec, "B", F.run_of(998, 7))               # B, behind, still has 998 and 999
    dec.flush()
    assert counts(dec, "messages", "duplicates", "gaps", "missing", "recovered") == (7, 5, 0, 0, 0)


def test_end_of_session_declares_pending_holes_and_nothing_after_it_opens_one():
    dec = two_lines()
    send(dec, "A", F.run_of(1, 5))
    send(dec, "A", F.run_of(8, 2))                 # 6, 7 pending for B
    send(dec, "A", F.end_of_session(10))           # no waiting for the window
    assert counts(dec, "gaps", "missing") == (1, 2)
    send(dec, "B", F.run_of(6, 2))                 # late copies still count, as recovered
    send(dec, "B", F.run_of(11, 3))                # past the end: ignored, no hole
    send(dec, "B", F.heartbeat(40))
    dec.tick(at(10 * WINDOW))
    dec.flush()
    stats = dec.stats()
    assert (stats["gaps"], stats["missing"], stats["recovered"], stats["messages"]) == (1, 2, 2, 9)
    assert (stats["after_end"], stats["duplicates"]) == (3, 0)


# ---- A/B holes: the sequence bitmap ---------------------------------------------------------------

def test_b_losing_every_other_packet_never_costs_a_message_a_delivered():
    """Issue 11, defect 2: over TW_MAX_HOLES pending holes once dropped the oldest, and A's copies
    of those messages were then thrown away as duplicates."""
    dec = two_lines(arbitration_window_ns=10**9)
    n = 200
    for seq in range(1, n + 1, 2):                 # B ahead, losing every other packet: 100 holes
        send(dec, "B", F.run_of(seq, 1))
    for seq in range(1, n + 1):                    # A complete, behind
        send(dec, "A", F.run_of(seq, 1))
    stats = dec.stats()
    assert (stats["messages"], stats["duplicates"], stats["gaps"], stats["missing"]) == (n, n // 2, 0, 0)
    assert stats["lines"]["A"]["first_messages"] == n // 2
    assert stats["window_overflow"] == 0
    dec.flush()
    assert counts(dec, "gaps", "missing") == (0, 0)


def test_more_pending_holes_than_timing_records_all_expire_and_stay_fillable():
    dec = two_lines()
    n = lib.TW_MAX_HOLES * 3
    for i in range(n):                             # a hole every packet, each at its own time
        send(dec, "A", F.run_of(1 + 2 * i, 1), now=at(i))
    assert counts(dec, "gaps") == (0,)
    send(dec, "B", F.run_of(2, 1), now=at(n))      # the oldest still fills in time: no recovery
    dec.tick(at(n + WINDOW))                       # every hole has waited at least the window
    assert counts(dec, "gaps", "missing", "recovered") == (n - 2, n - 2, 0)
    send(dec, "B", F.run_of(2 * n - 2, 1), now=at(n + WINDOW))   # the newest: declared, recovered
    assert counts(dec, "recovered", "messages", "duplicates") == (1, n + 2, 0)


def test_a_pending_hole_that_leaves_the_bitmap_is_declared_early_and_counted():
    dec = two_lines()
    send(dec, "A", F.run_of(1, 1))
    send(dec, "A", F.run_of(3, 1))                 # 2 pending
    w = lib.TW_SEQ_WINDOW
    send(dec, "A", F.heartbeat(w + 13))            # 4 .. w+12 missing on A; only w+13-w.. fit
    assert counts(dec, "window_overflow", "gaps", "missing") == (1, 2, 1 + 9)
    send(dec, "B", F.run_of(2, 1))                 # older than the window: taken, never dropped
    assert counts(dec, "beyond_window", "messages", "recovered", "duplicates") == (1, 3, 0, 0)
    dec.flush()
    assert counts(dec, "gaps", "missing") == (2, 1 + (w + 13 - 4))     # 2, and 4 .. w+12


def test_every_loss_pattern_is_exact_inside_the_window():
    """Against a plain model: which sequence numbers arrived on some line."""
    dec = two_lines(arbitration_window_ns=10**9)
    a = [seq for seq in range(1, 3001) if seq % 3 != 0]
    b = [seq for seq in range(1, 3001) if seq % 5 != 0 and seq % 7 != 0]
    for seq in b:
        send(dec, "B", F.run_of(seq, 1))
    for seq in a:
        send(dec, "A", F.run_of(seq, 1))
    dec.flush()
    arrived = set(a) | set(b)
    shown = range(1, max(arrived) + 1)             # what the lines showed was sent
    runs = sum(1 for seq in shown if seq not in arrived and seq - 1 in arrived)
    assert counts(dec, "messages", "duplicates", "missing", "gaps") == (
        len(arrived), len(a) + len(b) - len(arrived), len(shown) - len(arrived), runs)


# ---- malformed input ------------------------------------------------------------------------------

def reasons(dec: Decoder) -> dict:
    return {k: v for k, v in dec.stats()["malformed_by_reason"].items() if v}


def ip_frame(ip_packet: bytes, vlans=()) -> bytes:
    return F.ethernet(ip_packet, F.multicast_mac(A_GROUP), vlans=vlans)


def udp_packet(payload: bytes, **ip_kw) -> bytes:
    return F.ipv4(F.udp(payload, 40000, A_PORT), "198.18.0.1", A_GROUP, **ip_kw)


GOOD = F.run_of(1, 2)

MALFORMED_FRAMES = {
    "frame_short": [
        b"\x01\x00\x5e\x01\x01\x01",                                     # 6 bytes
        F.frame(GOOD)[:13],
        F.frame(GOOD, vlans=((F.TPID_8021Q, 5),))[:16],                 # tag cut in half
        F.frame(GOOD, vlans=((F.TPID_8021AD, 5), (F.TPID_8021Q, 6)))[:20],
    ],
    "ip_header": [
        ip_frame(udp_packet(GOOD, version=6)),
        ip_frame(udp_packet(GOOD, ihl=4)),
        ip_frame(udp_packet(GOOD, total_length=2000)),                   # longer than the frame
        ip_frame(udp_packet(GOOD, total_length=19)),                     # shorter than its header
        F.frame(GOOD)[:14 + 19],                                         # header cut
    ],
    "ip_fragment": [
        ip_frame(udp_packet(GOOD, flags_frag=0x2000)),                   # more fragments
        ip_frame(udp_packet(GOOD, flags_frag=0x0010)),                   # offset 128
    ],
    "udp_header": [
        ip_frame(F.ipv4(F.udp(GOOD, 40000, A_PORT, length=30), "198.18.0.1", A_GROUP)),
        ip_frame(F.ipv4(F.udp(GOOD, 40000, A_PORT, length=200), "198.18.0.1", A_GROUP)),
        ip_frame(F.ipv4(b"\x9c\x40\x13", "198.18.0.1", A_GROUP)),        # 3 bytes of UDP
    ],
    "mold_header": [
        F.frame(GOOD[:19]),
        F.frame(b""),
        F.frame(F.mold(2**64 - 1, [F.itch("A"), F.itch("A")])),          # sequence would wrap
    ],
    "mold_truncated": [
        F.frame(F.mold(1, [F.itch("A"), F.itch("A")], count=3)),
        F.frame(F.run_of(1, 3)[:-1]),                                    # last block cut short
        F.frame(F.run_of(1, 3)[:-37]),                                   # last length cut in half
    ],
}


@pytest.mark.parametrize("reason, index", [(r, i) for r, fs in MALFORMED_FRAMES.items()
                                           for i in range(len(fs))])
def test_each_malformed_frame_is_counted_under_its_reason_and_changes_nothing(reason, index):
    dec = one_line()
    assert dec.decode_frame(MALFORMED_FRAMES[reason][index], now=T0) is MALFORMED
    assert reasons(dec) == {reason: 1}
    assert counts(dec, "messages", "unmatched", "frames") == (0, 0, 1)
    # No session was opened or moved: the stream that follows starts cleanly at sequence 1.
    assert send(dec, "A", F.run_of(1, 4)) is DATA
    assert counts(dec, "messages", "gaps", "duplicates", "malformed") == (4, 0, 0, 1)


def test_a_truncated_packet_leaves_session_state_untouched():
    dec = one_line()
    send(dec, "A", F.run_of(1, 5))
    truncated = F.run_of(100, 3)[:-5]
    assert send(dec, "A", truncated) is MALFORMED
    send(dec, "A", F.run_of(6, 5))
    stats = dec.stats()
    assert (stats["gaps"], stats["messages"], stats["packets"]) == (0, 10, 3)
    assert stats["malformed_by_reason"]["mold_truncated"] == 1


def test_bad_messages_are_skipped_but_keep_their_sequence_numbers():
    dec = one_line()
    send(dec, "A", F.mold(1, [F.itch("A"), b"Z" + bytes(11), F.itch("A", length=35), b"",
                              F.itch("E")]))
    send(dec, "A", F.run_of(6, 1))
    stats = dec.stats()
    assert reasons(dec) == {"itch_unknown_type": 2, "itch_bad_length": 1}
    assert (stats["messages"], stats["gaps"], stats["messages_by_type"]) == (3, 0, {"A": 2, "E": 1})
    assert stats["lines"]["A"]["first_messages"] == 6
    assert_consistent(stats)


def test_every_truncation_of_a_frame_is_malformed_and_decodes_nothing():
    for vlans, eth_len in (((), 14), (((F.TPID_8021Q, 100),), 18)):
        whole = F.frame(F.run_of(1, 3), vlans=vlans)
        for cut in range(len(whole)):
            dec = one_line()
            assert dec.decode_frame(whole[:cut], now=T0) is MALFORMED, cut
            expected = "frame_short" if cut < eth_len else "ip_header"
            assert reasons(dec) == {expected: 1}, cut
            assert counts(dec, "messages", "packets") == (0, 0)


def test_ethernet_padding_after_the_ip_packet_is_ignored():
    dec = one_line()
    assert dec.decode_frame(F.frame(F.heartbeat(1)) + bytes(20), now=T0) is DATA
    assert counts(dec, "heartbeats", "malformed") == (1, 0)


def test_bytes_after_the_last_block_are_ignored():
    dec = one_line()
    assert send(dec, "A", F.run_of(1, 2) + b"\x00\x00\x00") is DATA
    assert counts(dec, "messages", "malformed") == (2, 0)


# ---- frame parsing: tags and matching -------------------------------------------------------------

@pytest.mark.parametrize("vlans", [
    (),
    ((F.TPID_8021Q, 141),),
    ((F.TPID_8021AD, 10), (F.TPID_8021Q, 20)),
    ((F.TPID_8021Q, 10), (F.TPID_8021Q, 20)),
])
def test_untagged_vlan_and_qinq_frames_decode(vlans):
    dec = one_line()
    assert send(dec, "A", F.run_of(1, 3), vlans=vlans) is DATA
    assert counts(dec, "messages", "malformed", "unmatched") == (3, 0, 0)


def test_three_tags_are_not_a_feed_packet():
    dec = one_line()
    vlans = ((F.TPID_8021AD, 1), (F.TPID_8021Q, 2), (F.TPID_8021Q, 3))
    assert send(dec, "A", F.run_of(1, 3), vlans=vlans) is UNMATCHED


@pytest.mark.parametrize("frame", [
    F.frame(GOOD, A_GROUP, A_PORT + 1),                                    # other port
    F.frame(GOOD, "239.9.9.9", A_PORT),                                    # other group
    F.frame(GOOD, B_GROUP, B_PORT),                                        # line B, not configured
    F.ethernet(bytes(40), b"\xff" * 6, ethertype=0x0806),                  # ARP
    F.ethernet(bytes(60), b"\x33\x33\x00\x00\x00\x01", ethertype=0x86DD),  # IPv6
    ip_frame(F.ipv4(bytes(40), "198.18.0.1", A_GROUP, proto=6)),           # TCP
    ip_frame(F.ipv4(F.udp(GOOD, 1, A_PORT), "198.18.0.1", "239.7.7.7", flags_frag=0x2000)),
])
def test_frames_of_other_flows_are_unmatched_not_malformed(frame):
    dec = one_line()
    assert dec.decode_frame(frame, now=T0) is UNMATCHED
    assert counts(dec, "unmatched", "malformed", "packets", "frames") == (1, 0, 0, 1)


def test_ssm_source_must_match_when_set():
    dec = Decoder([("A", A_GROUP, A_PORT, "198.18.0.7")], exchange_midnight_ns=MIDNIGHT)
    assert send(dec, "A", F.run_of(1, 1), src="198.18.0.8") is UNMATCHED
    assert send(dec, "A", F.run_of(1, 1), src="198.18.0.7") is DATA
    assert counts(dec, "messages", "unmatched") == (1, 1)


def test_each_line_is_matched_to_its_own_flow():
    dec = two_lines()
    send(dec, "B", F.run_of(1, 2))
    send(dec, "A", F.run_of(3, 2))
    lines = dec.stats()["lines"]
    assert lines == {"A": {"packets": 1, "first_messages": 2}, "B": {"packets": 1, "first_messages": 2}}


# ---- latency --------------------------------------------------------------------------------------

def test_exchange_to_engine_latency_per_message_and_line():
    dec = two_lines()
    sent = 10 * 3600 * 10**9 - 5_000             # ITCH timestamp: 5 us before T0's wall clock
    send(dec, "A", F.run_of(1, 3, timestamp_ns=sent))
    send(dec, "B", F.run_of(4, 1, timestamp_ns=sent - 1_000_000))
    send(dec, "B", F.run_of(4, 1, timestamp_ns=sent))          # duplicate: not measured
    lat = dec.stats()["latency"]["exchange_to_engine"]
    assert (lat["count"], lat["min"], lat["max"]) == (4, 5_000, 1_005_000)
    assert lat["lines"]["A"]["count"] == 3 and lat["lines"]["A"]["p99"] == 5_000
    assert lat["lines"]["B"]["min"] == 1_005_000
    assert lat["p50"] == 5_000       # A's bucket of 5000 reports its high bound clamped to A's max
    assert lat["p99"] == 1_005_000   # clamped to max
    low, high, n = lat["lines"]["A"]["buckets"][0]
    assert low <= 5_000 <= high and n == 3


def test_timestamps_after_now_are_not_measured():
    dec = one_line()
    send(dec, "A", F.run_of(1, 2, timestamp_ns=10 * 3600 * 10**9 + 1))
    assert dec.stats()["latency"]["exchange_to_engine"]["count"] == 0
    assert counts(dec, "messages") == (2,)


def test_kernel_to_engine_latency_once_per_packet_when_known():
    dec = one_line()
    dec.decode_frame(F.frame(F.run_of(1, 5)), kernel_rx_ns=T0[0] - 700, now=T0)
    dec.decode_frame(F.frame(F.run_of(6, 5)), kernel_rx_ns=0, now=T0)
    dec.decode_mold("A", F.run_of(11, 5), kernel_rx_ns=T0[0] - 900, now=T0)
    k2e = dec.stats()["latency"]["kernel_to_engine"]
    assert (k2e["count"], k2e["min"], k2e["max"], k2e["mean"]) == (2, 700, 900, 800)
    assert k2e["lines"]["A"]["buckets"] == [[688, 703, 1], [896, 900, 1]]  # top one clamped to max
    assert lib.tw_hist_bucket_high(lib.tw_hist_index(900)) == 911


# ---- the wrapper ------------------------------------------------------------------------------------

def test_stats_shape():
    dec = two_lines()
    send(dec, "A", F.run_of(1, 1))
    stats = dec.stats()
    assert set(stats) >= {"frames", "packets", "bytes", "messages", "messages_by_type", "gaps",
                          "missing", "recovered", "duplicates", "heartbeats", "end_of_session",
                          "malformed", "malformed_by_reason", "unmatched", "sessions_replaced",
                          "suspect_jumps", "confirmed_jumps", "window_overflow", "beyond_window",
                          "after_end", "lines", "latency"}
    assert list(stats["malformed_by_reason"]) == [
        "frame_short", "ip_header", "ip_fragment", "udp_header", "mold_header", "mold_truncated",
        "itch_unknown_type", "itch_bad_length"]
    assert list(stats["latency"]) == ["kernel_to_engine", "exchange_to_engine"]
    for entry in stats["latency"].values():
        assert set(entry) == {"count", "sum", "min", "max", "mean", "p50", "p90", "p99", "p999", "lines"}
        assert set(entry["lines"]) == {"A", "B"}
    assert set(one_line().stats()["lines"]) == {"A"}


def test_decode_mold_accepts_a_line_by_index_or_name():
    dec = two_lines()
    assert dec.decode_mold(1, F.run_of(1, 2), now=T0) is DATA
    assert dec.decode_mold("A", F.run_of(1, 2), now=T0) is DATA
    assert dec.stats()["lines"]["B"]["first_messages"] == 2
    for bad in (2, -1, "C", True):
        with pytest.raises(ValueError, match="not configured"):
            dec.decode_mold(bad, F.run_of(3, 1), now=T0)
    assert counts(dec, "packets") == (2,)


def test_c_rejects_an_unconfigured_line_without_counting():
    dec = one_line()
    payload = F.run_of(1, 1)
    clock = ffi.new("struct tw_clock *")
    assert lib.tw_decode_mold(dec._decoder, 1, ffi.from_buffer(payload), len(payload), 0, clock) == -1
    assert counts(dec, "packets", "frames", "messages") == (0, 0, 0)


@pytest.mark.parametrize("lines, message", [
    ([], "0 lines given"),
    ([("A", A_GROUP, 1), ("B", B_GROUP, 2), ("C", "239.1.1.3", 3)], "3 lines given"),
    ([("A", "10.0.0.1", 5000)], "not a multicast address"),
    ([("A", "239.1.1", 5000)], "not an IPv4 address"),
    ([("A", A_GROUP, 0)], "out of range 1-65535"),
    ([("A", A_GROUP, 70000)], "out of range 1-65535"),
    ([("A", A_GROUP, "5000")], "not an integer"),
    ([("A", A_GROUP, A_PORT), ("B", A_GROUP, A_PORT)], "both use 239.1.1.1:5000"),
    ([("A", A_GROUP, A_PORT), ("A", B_GROUP, B_PORT)], "names repeat"),
    ([("X", A_GROUP, A_PORT)], "must be A or B"),
    ([("A", A_GROUP, A_PORT, "239.0.0.1")], "unicast sender"),
    (["A=239.1.1.1:5000"], "give (name, group, port)"),
])
def test_bad_config_is_refused_with_a_clear_error(lines, message):
    with pytest.raises(ValueError) as info:
        Decoder(lines)
    assert message in str(info.value)


def test_bad_arbitration_window_is_refused():
    with pytest.raises(ConfigError, match="arbitration window"):
        Decoder([("A", A_GROUP, A_PORT)], arbitration_window_ns=-1)


def test_c_refuses_bad_config_with_a_message():
    cfg = ffi.new("struct tw_decoder_config *")
    err = ffi.new("char[256]")
    cfg.n_lines = 3
    assert lib.tw_decoder_new(cfg, err, 256) == ffi.NULL
    assert b"n_lines is 3" in ffi.string(err)
    cfg.n_lines = 1
    cfg.lines[0].group_be = struct.unpack("=I", bytes([10, 0, 0, 1]))[0]
    cfg.lines[0].port_be = 5000
    assert lib.tw_decoder_new(cfg, err, 256) == ffi.NULL
    assert b"not an IPv4 multicast" in ffi.string(err)
    cfg.lines[0].group_be = struct.unpack("=I", bytes([239, 0, 0, 1]))[0]
    cfg.lines[0].port_be = 0
    assert lib.tw_decoder_new(cfg, err, 256) == ffi.NULL
    assert b"port 0" in ffi.string(err)


def test_default_midnight_is_the_exchanges_midnight_today():
    # NASDAQ stamps New York time, whatever the node's zone (issue 11, defect 4).
    zone = ZoneInfo("America/New_York")
    dec = Decoder([("A", A_GROUP, A_PORT)])
    now = time.time_ns()
    midnight = datetime.combine(datetime.fromtimestamp(now / 1e9, zone).date(), datetime.min.time(),
                                tzinfo=zone)
    send(dec, "A", F.run_of(1, 1, timestamp_ns=0), now=(1, now))
    lat = dec.stats()["latency"]["exchange_to_engine"]
    assert lat["count"] == 1 and lat["max"] == now - int(midnight.timestamp()) * 10**9


# ---- real captures -------------------------------------------------------------------------------

needs_captures = pytest.mark.skipif(not os.path.isdir(CAPTURES),
                                    reason=f"{CAPTURES} is absent (shared test data)")


def captures(kind: str) -> list[str]:
    return sorted(glob.glob(os.path.join(CAPTURES, kind, "*.pcap")))


@needs_captures
@pytest.mark.parametrize("path", captures("production-2023"), ids=os.path.basename)
def test_production_capture_decodes_with_the_right_counts(path):
    frames = F.read_pcap(path)
    group, port, _ = F.udp_of(frames[0])
    # Packets sampled across the day, decoded with one clock: allow their real jumps of millions.
    dec = Decoder([("A", group, port)], max_seq_jump=2**40)
    for eth in frames:
        assert eth[12:14] == b"\x81\x00", "production frames are 802.1Q-tagged"
        assert dec.decode_frame(eth, now=(1, 1)) is DATA
    stats = dec.stats()
    expected = F.count_types([F.udp_of(eth)[2] for eth in frames])
    assert stats["malformed"] == 0 and stats["unmatched"] == 0
    assert stats["messages_by_type"] == dict(expected)
    assert stats["messages"] == sum(expected.values())


@needs_captures
def test_all_production_packets_in_sequence_order_give_exact_gaps():
    payloads = {}
    for path in captures("production-2023"):
        for eth in F.read_pcap(path):
            payloads[F.mold_fields(F.udp_of(eth)[2])[1]] = eth
    # One clock for packets sampled across the day: allow their real jumps of millions.
    dec = Decoder([("A", "233.54.12.111", 26477)], max_seq_jump=2**40)
    expected_gaps = expected_missing = messages = 0
    next_seq = None
    for seq in sorted(payloads):
        n = len(F.mold_fields(F.udp_of(payloads[seq])[2])[2])
        if next_seq is not None and seq > next_seq:
            expected_gaps, expected_missing = expected_gaps + 1, expected_missing + seq - next_seq
        next_seq, messages = seq + n, messages + n
        dec.decode_frame(payloads[seq], now=(1, 1))
    assert counts(dec, "gaps", "missing", "messages", "malformed") == (
        expected_gaps, expected_missing, messages, 0)
    assert expected_gaps >= 5


def _patch_sanitized(eth: bytes, seq: int) -> bytes:
    """Fill the zeroed destination, port, session and sequence number of a sanitized frame."""
    off = 12
    while eth[off:off + 2] in (b"\x81\x00", b"\x88\xa8"):
        off += 4
    ip = off + 2
    udp = ip + (eth[ip] & 15) * 4
    mold = udp + 8
    out = bytearray(eth)
    out[ip + 16:ip + 20] = bytes(int(x) for x in A_GROUP.split("."))
    out[udp + 2:udp + 4] = struct.pack(">H", A_PORT)
    out[mold:mold + 10] = F.SESSION
    out[mold + 10:mold + 18] = struct.pack(">Q", seq)
    return bytes(out)


@needs_captures
@pytest.mark.parametrize("path", captures("sanitized-2023-08-22"), ids=os.path.basename)
def test_sanitized_capture_decodes_with_the_right_counts(path):
    frames = F.read_pcap(path)
    dec = one_line()
    for eth in frames:  # as captured: addressed to 0.0.0.0:0, so well-formed but not ours
        assert dec.decode_frame(eth, now=T0) is UNMATCHED
    assert counts(dec, "unmatched", "malformed") == (len(frames), 0)

    dec = one_line()
    seq, patched = 1, []
    for eth in frames:
        patched.append(_patch_sanitized(eth, seq))
        seq += len(F.mold_fields(F.udp_of(eth)[2])[2])
    for eth in patched:
        assert dec.decode_frame(eth, now=T0) is DATA
    stats = dec.stats()
    expected = F.count_types([F.udp_of(eth)[2] for eth in patched])
    assert (stats["malformed"], stats["gaps"], stats["duplicates"]) == (0, 0, 0)
    assert stats["messages_by_type"] == dict(expected)
