"""In-order delivery: messages are counted as they arrive, but handed on (to the books) strictly in
sequence order; a message past a hole waits until the hole is filled or given up, and a hole given
up is handed on as lost in its place (docs/design.md "Delivery in order"). Time is passed in."""
import pytest

from tests.support import frames as F
from tickwire_engine.config import Rerequest
from tickwire_engine.decoder import Decoder

A_GROUP, A_PORT = "239.1.1.1", 5000
B_GROUP, B_PORT = "239.1.1.2", 5001
WINDOW = 1_000_000
MIDNIGHT = 1_700_000_000 * 10**9
T0 = (5 * 10**9, MIDNIGHT + 10 * 3600 * 10**9)
MS = 1_000_000


def at(ns: int) -> tuple[int, int]:
    return (T0[0] + ns, T0[1] + ns)


def decoder(lines="A", rerequest=True, **kw) -> Decoder:
    specs = [("A", A_GROUP, A_PORT), ("B", B_GROUP, B_PORT)][:len(lines)]
    kw.setdefault("timeout_ms", 10.0)
    rr = Rerequest("10.0.0.5:26400", **kw) if rerequest else None
    return Decoder(specs, exchange_midnight_ns=MIDNIGHT, arbitration_window_ns=WINDOW,
                   rerequest=rr, in_order=True)


def send(dec, line, payload, now=T0):
    group, port = (A_GROUP, A_PORT) if line == "A" else (B_GROUP, B_PORT)
    return dec.decode_frame(F.frame(payload, group, port), now=now)


def delivery(dec) -> tuple[int, int, int]:
    d = dec.stats()["delivery"]
    return d["delivered"], d["lost"], d["held"]


def test_messages_past_a_hole_wait_for_the_answer_then_all_go_in_order():
    dec = decoder()
    send(dec, "A", F.run_of(1, 3))
    send(dec, "A", F.run_of(7, 3))                   # 4-6 lost
    assert delivery(dec) == (3, 0, 3)                # counted, but 7-9 wait behind the hole
    assert dec.stats()["messages"] == 6
    dec.requests(now=T0)
    dec.decode_reply(F.run_of(4, 2))                 # 4-5: handed on; 6 still missing
    assert delivery(dec) == (5, 0, 3)
    dec.decode_reply(F.run_of(6, 1))
    assert delivery(dec) == (9, 0, 0)


def test_a_hole_given_up_is_handed_on_as_lost_in_its_place():
    dec = decoder(attempts=1)
    send(dec, "A", F.run_of(1, 3))
    send(dec, "A", F.run_of(7, 3))
    dec.requests(now=T0)
    dec.requests(now=at(10 * MS))                    # the only attempt timed out: given up
    assert delivery(dec) == (6, 3, 0)
    send(dec, "A", F.run_of(4, 3), now=at(11 * MS))  # after all: counted, never handed on late
    assert dec.stats()["recovered"] == 3 and delivery(dec) == (6, 3, 0)


def test_without_re_requests_the_other_line_fills_in_order_or_the_window_gives_up():
    dec = decoder("AB", rerequest=False)
    send(dec, "A", F.run_of(1, 2))
    send(dec, "A", F.run_of(4, 2))                   # 3 missing on A
    assert delivery(dec) == (2, 0, 2)
    send(dec, "B", F.run_of(1, 5), now=at(10))       # B fills it: 3, then the held 4-5
    assert delivery(dec) == (5, 0, 0)
    send(dec, "A", F.run_of(7, 1), now=at(20))       # 6 missing on A and, it turns out, on B
    dec.tick(now=at(WINDOW + 20))
    assert delivery(dec) == (6, 1, 0)


def test_a_malformed_message_is_handed_on_as_lost():
    dec = decoder()
    send(dec, "A", F.mold(1, [F.itch("A"), F.itch("A", length=7), F.itch("A")]))
    assert delivery(dec) == (2, 1, 0)


def test_the_window_moving_past_a_hole_hands_on_what_waits_behind_it():
    dec = decoder(attempts=100, timeout_ms=60_000.0)
    send(dec, "A", F.run_of(1, 1))
    send(dec, "A", F.run_of(3, 1000))                # 2 lost and asked for, for a long time
    dec.requests(now=T0)
    for seq in range(1003, 70_000, 1000):
        send(dec, "A", F.run_of(seq, 1000))
    delivered, lost, held = delivery(dec)
    assert lost == 1 and delivered + held == dec.stats()["messages"]
    assert held < 65_536                             # bounded by the window


def test_one_session_holds_at_a_time_and_a_second_one_pushes_the_first_out():
    dec = decoder(attempts=100, timeout_ms=60_000.0)
    send(dec, "A", F.run_of(1, 1))
    send(dec, "A", F.run_of(3, 2))                   # session 1: 2 lost, 3-4 held
    assert (delivery(dec), dec.stats()["delivery"]["forced"]) == ((1, 0, 2), 0)
    # session 2 starts with 1 missing: its 2 needs the hold buffer
    send(dec, "A", F.run_of(2, 1, session=b"OTHERSESS1"))
    # session 1's hole is reported lost, its 3-4 handed on; session 2 holds its 2
    assert (delivery(dec), dec.stats()["delivery"]["forced"]) == ((3, 1, 1), 1)
    send(dec, "A", F.run_of(3, 1, session=b"OTHERSESS1"))
    assert (delivery(dec), dec.stats()["delivery"]["forced"]) == ((3, 1, 2), 1)


def test_flush_hands_on_everything():
    dec = decoder()
    send(dec, "A", F.run_of(1, 1))
    send(dec, "A", F.run_of(3, 4))
    dec.requests(now=T0)
    dec.flush()
    assert delivery(dec) == (5, 1, 0)


@pytest.mark.parametrize("in_order", [False, True])
def test_counting_is_the_same_with_or_without_in_order_delivery(in_order):
    rr = Rerequest("10.0.0.5:26400", timeout_ms=10.0)
    dec = Decoder([("A", A_GROUP, A_PORT), ("B", B_GROUP, B_PORT)], exchange_midnight_ns=MIDNIGHT,
                  arbitration_window_ns=WINDOW, rerequest=rr, in_order=in_order)
    for seq in range(1, 400, 4):
        if seq % 12 != 5:
            send(dec, "A", F.run_of(seq, 4), now=at(seq))
        if seq % 20 != 1:
            send(dec, "B", F.run_of(seq, 4), now=at(seq + 1))
    dec.tick(now=at(2 * WINDOW))
    for request in dec.requests(now=at(2 * WINDOW)):
        first, count = int.from_bytes(request[10:18], "big"), int.from_bytes(request[18:], "big")
        dec.decode_reply(F.run_of(first, count), now=at(2 * WINDOW + 5))
    stats = dec.stats()
    assert (stats["messages"], stats["gaps"], stats["missing"]) == (400, 0, 0)
    assert stats["delivery"]["delivered"] == (400 if in_order else 0)
