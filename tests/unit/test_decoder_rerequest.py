"""Gap recovery by MoldUDP64 re-request, in the C decoder through its Python wrapper: what is
asked, when, how often, what a reply may and may not change. Time is passed in (nothing timed).

The decoder decides and the caller only carries packets: `next_request()` hands out the request
packets due now, `decode_reply()` takes what the server sent back (docs/design.md "Gap recovery").
"""
import struct

import pytest

from tests.support import frames as F
from tickwire_engine.config import ConfigError, Rerequest
from tickwire_engine.decoder import Decoder, FrameResult

A_GROUP, A_PORT = "239.1.1.1", 5000
B_GROUP, B_PORT = "239.1.1.2", 5001
WINDOW = 1_000_000
MIDNIGHT = 1_700_000_000 * 10**9
T0 = (5 * 10**9, MIDNIGHT + 10 * 3600 * 10**9)
MS = 1_000_000
SESSION = F.SESSION

DATA, MALFORMED = FrameResult.DATA, FrameResult.MALFORMED


def at(ns: int) -> tuple[int, int]:
    return (T0[0] + ns, T0[1] + ns)


def rerequest(**kw) -> Rerequest:
    kw.setdefault("timeout_ms", 10.0)
    return Rerequest("10.0.0.5:26400", **kw)


def one_line(**kw) -> Decoder:
    return Decoder([("A", A_GROUP, A_PORT)], exchange_midnight_ns=MIDNIGHT,
                   rerequest=rerequest(**kw))


def two_lines(**kw) -> Decoder:
    return Decoder([("A", A_GROUP, A_PORT), ("B", B_GROUP, B_PORT)],
                   exchange_midnight_ns=MIDNIGHT, arbitration_window_ns=WINDOW,
                   rerequest=rerequest(**kw))


def send(dec: Decoder, line: str, payload: bytes, now=T0):
    group, port = (A_GROUP, A_PORT) if line == "A" else (B_GROUP, B_PORT)
    return dec.decode_frame(F.frame(payload, group, port), now=now)


def request(first: int, count: int, session: bytes = SESSION) -> bytes:
    return session + struct.pack(">QH", first, count)


def parse(packet: bytes) -> tuple[bytes, int, int]:
    assert len(packet) == 20, "a MoldUDP64 request is session (10) + sequence (8) + count (2)"
    return packet[:10], *struct.unpack(">QH", packet[10:])


def rr(dec: Decoder) -> dict:
    return dec.stats()["rerequest"]


def lose(dec: Decoder, first: int, count: int, now=T0) -> None:
    """One line: messages [1, first) arrive, [first, first + count) are lost, first + count
    arrives (which reveals the hole)."""
    if first > 1:
        send(dec, "A", F.run_of(1, first - 1), now=now)
    send(dec, "A", F.run_of(first + count, 1), now=now)


# ---- asking -----------------------------------------------------------------------------------------

def test_a_gap_is_asked_for_once_and_the_answer_fills_it_without_counting_a_gap():
    dec = one_line()
    lose(dec, 4, 3)                               # 1-3 arrive, 4-6 lost, 7 arrives
    assert dec.requests_outstanding()
    assert dec.requests(now=T0) == [request(4, 3)]
    assert dec.requests(now=T0) == []             # asked: it waits for the answer
    assert dec.decode_reply(F.run_of(4, 3, "E"), now=at(MS)) is DATA
    stats = dec.stats()
    assert (stats["gaps"], stats["missing"], stats["recovered"]) == (0, 0, 0)
    assert stats["messages"] == 7 and stats["messages_by_type"] == {"A": 4, "E": 3}
    assert rr(dec)["recovered"] == 3 and rr(dec)["requests_sent"] == 1
    assert rr(dec)["messages_requested"] == 3
    assert dec.requests(now=at(MS)) == [] and not dec.requests_outstanding()
    assert rr(dec)["outstanding"] == 0
    latency = rr(dec)["recovery_latency"]
    assert latency["count"] == 3 and MS * 0.97 <= latency["p50"] <= MS * 1.03


def test_a_large_gap_is_cut_by_the_servers_message_limit():
    dec = one_line(max_messages=100)
    lose(dec, 11, 250)
    assert [parse(p) for p in dec.requests(now=T0)] == [
        (SESSION, 11, 100), (SESSION, 111, 100), (SESSION, 211, 50)]
    assert rr(dec)["messages_requested"] == 250


def test_requests_go_out_no_faster_than_the_rate_allows():
    dec = one_line(max_messages=1, rate=1000, burst=2)   # one request per ms, bursts of 2
    lose(dec, 2, 5)
    assert [parse(p)[1] for p in dec.requests(now=T0)] == [2, 3]
    assert dec.requests(now=at(MS - 1)) == []
    assert [parse(p)[1] for p in dec.requests(now=at(MS))] == [4]
    assert [parse(p)[1] for p in dec.requests(now=at(3 * MS))] == [5, 6]   # credit for two, no more
    assert rr(dec)["requests_sent"] == 5


def test_an_unanswered_request_is_sent_again_then_given_up_after_its_attempts():
    dec = one_line(attempts=3, timeout_ms=10.0)
    lose(dec, 5, 2)
    assert dec.requests(now=T0) == [request(5, 2)]
    assert dec.requests(now=at(10 * MS - 1)) == []
    assert dec.requests(now=at(10 * MS)) == [request(5, 2)]
    assert dec.requests(now=at(20 * MS)) == [request(5, 2)]
    assert (rr(dec)["timed_out"], rr(dec)["given_up"], dec.stats()["gaps"]) == (2, 0, 0)
    assert dec.requests(now=at(30 * MS - 1)) == []
    assert dec.requests(now=at(30 * MS)) == []              # third wait over: given up
    stats = dec.stats()
    assert (stats["gaps"], stats["missing"]) == (1, 2)
    assert (rr(dec)["requests_sent"], rr(dec)["timed_out"], rr(dec)["given_up"]) == (3, 3, 1)
    assert not dec.requests_outstanding()
    # a copy that comes after all is a recovery of a counted loss, as without re-requests
    send(dec, "A", F.run_of(5, 2), now=at(31 * MS))
    assert (dec.stats()["recovered"], dec.stats()["messages"]) == (2, 7)


def test_a_partial_answer_asks_for_the_rest_at_once_and_resets_the_attempts():
    dec = one_line(attempts=2, max_messages=100)
    lose(dec, 2, 50)
    assert dec.requests(now=T0) == [request(2, 50)]
    dec.requests(now=at(10 * MS))                           # timed out once: attempt 2 went out
    dec.decode_reply(F.run_of(2, 20), now=at(11 * MS))      # the server sends what fits
    assert dec.requests(now=at(11 * MS)) == [request(22, 30)]
    assert dec.requests(now=at(20 * MS)) == []              # not timed out: attempts started over
    assert dec.requests(now=at(21 * MS)) == [request(22, 30)]
    dec.decode_reply(F.run_of(22, 30), now=at(22 * MS))
    assert not dec.requests_outstanding()
    stats = dec.stats()
    assert (stats["gaps"], stats["missing"], stats["messages"]) == (0, 0, 52)
    assert rr(dec)["recovered"] == 50


def test_with_two_lines_nothing_is_asked_while_the_other_line_may_still_fill_the_hole():
    dec = two_lines()
    send(dec, "A", F.run_of(1, 3))
    send(dec, "A", F.run_of(5, 1))                          # 4 missing on A, B may have it
    assert dec.requests(now=T0) == []
    send(dec, "B", F.run_of(1, 5), now=at(WINDOW // 2))     # B fills it in time
    dec.tick(now=at(2 * WINDOW))
    assert dec.requests(now=at(2 * WINDOW)) == [] and not dec.requests_outstanding()

    send(dec, "A", F.run_of(7, 1), now=at(3 * WINDOW))     # 6 lost on both lines
    send(dec, "B", F.run_of(7, 1), now=at(3 * WINDOW))     # both past it: declared at once
    assert dec.requests(now=at(3 * WINDOW)) == [request(6, 1)]


def test_a_hole_the_window_declares_is_asked_for_too():
    dec = two_lines()
    send(dec, "A", F.run_of(1, 3))
    send(dec, "A", F.run_of(6, 1))
    dec.tick(now=at(WINDOW))
    assert dec.requests(now=at(WINDOW)) == [request(4, 2)]


def test_a_late_copy_from_a_line_fills_a_requested_range_and_ends_its_requests():
    dec = two_lines()
    send(dec, "A", F.run_of(1, 3))
    send(dec, "A", F.run_of(6, 1))
    dec.tick(now=at(WINDOW))
    assert dec.requests(now=at(WINDOW)) == [request(4, 2)]
    send(dec, "B", F.run_of(1, 6), now=at(WINDOW + 10))     # B was late, not lost
    assert dec.requests(now=at(50 * MS)) == []
    stats = dec.stats()
    assert not dec.requests_outstanding()
    assert (stats["gaps"], stats["missing"], stats["recovered"], stats["messages"]) == (0, 0, 0, 6)
    assert rr(dec)["timed_out"] == 0                        # it was filled, never timed out


# ---- what an answer may not do ------------------------------------------------------------------------

def test_an_answer_for_another_session_is_rejected_and_changes_nothing():
    dec = one_line()
    lose(dec, 2, 1)
    dec.requests(now=T0)
    assert dec.decode_reply(F.run_of(2, 1, session=b"OTHERSESS1")) is MALFORMED
    assert (rr(dec)["reply_rejected"], rr(dec)["recovered"]) == (1, 0)
    assert dec.requests_outstanding() and dec.stats()["messages"] == 2


def test_messages_outside_the_request_are_dropped_and_counted_and_cannot_move_the_sequence():
    dec = one_line()
    lose(dec, 5, 2)                                         # asked: 5-6; next expected: 8
    dec.requests(now=T0)
    # a reply reaching from 3 (arrived long ago) over the request to 9 and 10 (not sent yet)
    assert dec.decode_reply(F.run_of(3, 8, "E")) is DATA
    stats = dec.stats()
    assert rr(dec)["recovered"] == 2 and rr(dec)["reply_unsolicited"] == 6
    assert stats["messages"] == 7 and stats["messages_by_type"] == {"A": 5, "E": 2}
    # 8-10 were not taken: when the line sends them they are first copies, not duplicates
    send(dec, "A", F.run_of(8, 3))
    stats = dec.stats()
    assert (stats["messages"], stats["duplicates"], stats["gaps"], stats["missing"]) == (10, 0, 0, 0)


def test_a_flood_of_answers_nobody_asked_for_is_counted_and_changes_no_count_of_the_feed():
    dec = one_line()
    send(dec, "A", F.run_of(1, 10))
    before = {k: v for k, v in dec.stats().items() if k not in ("rerequest", "duplicates")}
    for seq in range(1, 2000, 7):
        dec.decode_reply(F.run_of(seq, 7))
    after = dec.stats()
    assert {k: v for k, v in after.items() if k not in ("rerequest", "duplicates")} == before
    assert rr(dec)["reply_unsolicited"] == len(range(1, 2000, 7)) * 7
    assert rr(dec)["reply_packets"] == len(range(1, 2000, 7))
    send(dec, "A", F.run_of(11, 5))
    assert (dec.stats()["messages"], dec.stats()["gaps"]) == (15, 0)


@pytest.mark.parametrize("payload", [
    b"",
    SESSION + struct.pack(">Q", 2),                         # header cut short
    F.heartbeat(2),                                         # no messages: not an answer
    F.end_of_session(2),
    F.run_of(2, 1)[:-3],                                    # its message runs past the end
])
def test_a_broken_answer_is_rejected_whole(payload):
    dec = one_line()
    lose(dec, 2, 1)
    dec.requests(now=T0)
    assert dec.decode_reply(payload) is MALFORMED
    assert rr(dec)["reply_rejected"] == 1
    assert dec.requests_outstanding() and dec.stats()["messages"] == 2
    assert dec.decode_reply(F.run_of(2, 1)) is DATA and not dec.requests_outstanding()


def test_a_second_answer_for_the_same_messages_is_counted_once():
    dec = one_line()
    lose(dec, 2, 3)
    dec.requests(now=T0)
    dec.decode_reply(F.run_of(2, 2))                        # the request shrinks to 4
    dec.decode_reply(F.run_of(2, 3))                        # 2-3 again: nobody asks for them now
    stats = dec.stats()
    assert (stats["messages"], rr(dec)["recovered"], rr(dec)["reply_unsolicited"]) == (5, 3, 2)


def test_an_answer_for_a_message_a_line_delivered_meanwhile_is_a_duplicate():
    dec = two_lines()
    send(dec, "A", F.run_of(1, 1))
    send(dec, "A", F.run_of(5, 1))
    dec.tick(now=at(WINDOW))
    assert dec.requests(now=at(WINDOW)) == [request(2, 3)]
    send(dec, "B", F.run_of(3, 1), now=at(WINDOW + 1))      # late on B: 3 only
    dec.decode_reply(F.run_of(2, 3), now=at(WINDOW + 2))
    stats = dec.stats()
    assert (stats["messages"], stats["duplicates"], rr(dec)["recovered"]) == (5, 1, 2)
    assert (stats["gaps"], stats["missing"], stats["recovered"]) == (0, 0, 0)


def test_an_answer_with_a_malformed_message_uses_up_its_sequence_number():
    dec = one_line()
    lose(dec, 2, 2)
    dec.requests(now=T0)
    dec.decode_reply(F.mold(2, [F.itch("A"), F.itch("A", length=10)]))
    stats = dec.stats()
    assert stats["malformed_by_reason"]["itch_bad_length"] == 1
    assert (stats["messages"], rr(dec)["recovered"]) == (3, 2)
    assert not dec.requests_outstanding()


# ---- giving up ---------------------------------------------------------------------------------------

def test_a_requested_range_that_leaves_the_window_is_given_up():
    dec = one_line(attempts=100, timeout_ms=1000.0)
    lose(dec, 2, 1)
    dec.requests(now=T0)
    send(dec, "A", F.run_of(4, 1000))
    for seq in range(1004, 70_000, 1000):                   # 65,536 later the bits are reused
        send(dec, "A", F.run_of(seq, 1000))
    stats = dec.stats()
    assert (stats["gaps"], stats["missing"], rr(dec)["given_up"]) == (1, 1, 1)
    assert not dec.requests_outstanding()
    dec.decode_reply(F.run_of(2, 1))                        # too late to be told from a copy
    assert rr(dec)["reply_unsolicited"] == 1 and dec.stats()["recovered"] == 0


def test_what_the_table_cannot_hold_is_given_up_at_once_and_counted():
    dec = one_line(max_messages=1)                          # 1024 ranges of one message at most
    lose(dec, 2, 1500)
    stats = dec.stats()
    assert rr(dec)["overflow"] == 1500 - 1024 and rr(dec)["outstanding"] == 1024
    assert (stats["gaps"], stats["missing"]) == (1, 1500 - 1024)


def test_flush_gives_up_what_is_still_asked_for():
    dec = one_line()
    lose(dec, 2, 4)
    dec.requests(now=T0)
    dec.flush()
    stats = dec.stats()
    assert (stats["gaps"], stats["missing"], rr(dec)["given_up"]) == (1, 4, 1)
    assert not dec.requests_outstanding()


def test_ranges_of_one_gap_given_up_one_after_another_count_as_one_gap():
    dec = one_line(max_messages=10, attempts=1)
    lose(dec, 2, 30)
    assert len(dec.requests(now=T0)) == 3
    dec.requests(now=at(10 * MS))
    stats = dec.stats()
    assert (stats["gaps"], stats["missing"], rr(dec)["given_up"]) == (1, 30, 3)


# ---- sessions ----------------------------------------------------------------------------------------

def test_losses_before_an_end_of_session_are_asked_for_while_it_lasts():
    """MoldUDP64: "While the End of Session messages persist, re-requests may be made on the
    current session. This is the last chance to ensure that all messages have been received." """
    dec = one_line()
    send(dec, "A", F.run_of(1, 3))
    send(dec, "A", F.end_of_session(6))                     # 4-5 lost at the tail
    assert dec.requests(now=T0) == [request(4, 2)]
    dec.decode_reply(F.run_of(4, 2))
    assert (dec.stats()["messages"], dec.stats()["missing"]) == (5, 0)


def test_nothing_is_asked_for_a_session_that_ended_once_the_next_one_began():
    dec = one_line()
    send(dec, "A", F.run_of(1, 3))
    send(dec, "A", F.end_of_session(6))
    send(dec, "A", F.run_of(1, 2, session=b"NEXTSESS01"))
    assert dec.requests(now=T0) == []
    assert (dec.stats()["gaps"], dec.stats()["missing"], rr(dec)["given_up"]) == (1, 2, 1)
    assert not dec.requests_outstanding()


# ---- configuration -----------------------------------------------------------------------------------

@pytest.mark.parametrize("kw, words", [
    ({"max_messages": 0}, "max_messages"),
    ({"max_messages": 65535}, "max_messages"),
    ({"attempts": 0}, "attempts"),
    ({"rate": 0}, "rate"),
    ({"burst": 0}, "burst"),
    ({"timeout_ms": 0}, "timeout_ms"),
])
def test_bad_limits_are_refused_naming_the_field(kw, words):
    with pytest.raises(ConfigError, match=words):
        one_line(**kw)


@pytest.mark.parametrize("server", ["10.0.0.5", "239.1.1.1:26400", "0.0.0.0:26400",
                                    "10.0.0.5:0", "host:26400"])
def test_a_bad_server_address_is_refused(server):
    with pytest.raises(ConfigError, match="re-request server"):
        Rerequest(server).validate()
