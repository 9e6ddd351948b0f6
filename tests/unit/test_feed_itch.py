"""ITCH 5.0 encoders and MoldUDP64 framing of tickwire-feed, checked against the specifications.

The expected lengths and byte layouts below are typed in from the ITCH 5.0 and MoldUDP64
specifications, not taken from the code under test.
"""
import random
import struct

import pytest

from tickwire_feed import itch, moldudp64
from tickwire_feed.market import Market, Mix, MixError, malformed_message

# NASDAQ TotalView-ITCH 5.0, section 4: every message type and its total length in bytes.
SPEC_LENGTHS = {
    "S": 12, "R": 39, "H": 25, "Y": 20, "L": 26, "V": 35, "W": 12, "K": 28, "J": 35, "h": 21,
    "A": 36, "F": 40, "E": 31, "C": 36, "X": 23, "D": 19, "U": 35, "P": 44, "Q": 40, "B": 19,
    "I": 50, "N": 20, "O": 48,
}


def test_every_spec_type_is_known_with_its_exact_length():
    assert itch.LENGTHS == SPEC_LENGTHS


@pytest.mark.parametrize("letter", sorted(SPEC_LENGTHS))
def test_market_encoder_produces_spec_length_and_decodes(letter):
    market = Market(random.Random(7))
    for _ in range(3):
        message = market.message(ord(letter))
        assert len(message) == SPEC_LENGTHS[letter]
        assert message[:1] == letter.encode()
        fields = itch.decode(message)
        assert fields["type"] == letter
        assert fields["timestamp_ns"] == 0  # the sender stamps at send time


def test_encode_add_order_lays_out_fields_as_the_spec_says():
    ts = 34_200_123_456_789  # 09:30:00.123456789
    message = itch.encode("A", stock_locate=7, tracking_number=2, timestamp_ns=ts,
                          order_reference_number=0x0102030405060708, buy_sell_indicator="B",
                          shares=300, stock="AAPL", price=1_892_500)
    expected = (b"A" + (7).to_bytes(2, "big") + (2).to_bytes(2, "big") + ts.to_bytes(6, "big")
                + bytes(range(1, 9)) + b"B" + (300).to_bytes(4, "big") + b"AAPL    "
                + (1_892_500).to_bytes(4, "big"))
    assert message == expected
    assert itch.timestamp_of(message) == ts
    decoded = itch.decode(message)
    assert decoded["stock"] == "AAPL" and decoded["price"] == 1_892_500 and decoded["shares"] == 300


def test_encode_rejects_missing_unknown_and_oversized_fields():
    with pytest.raises(itch.ItchError, match="missing fields"):
        itch.encode("D")
    with pytest.raises(itch.ItchError, match="unknown fields"):
        itch.encode("D", order_reference_number=1, colour="red")
    with pytest.raises(itch.ItchError, match="longer than 8"):
        itch.encode("Y", stock="TOOLONGNAME", reg_sho_action="0")
    with pytest.raises(itch.ItchError, match="unknown ITCH 5.0 message type"):
        itch.encode("Z")
    with pytest.raises(itch.ItchError, match="6 bytes"):
        itch.encode("S", timestamp_ns=1 << 48, event_code="O")


def test_decode_rejects_wrong_length_and_unknown_type():
    good = itch.encode("D", order_reference_number=5)
    with pytest.raises(itch.ItchError, match="must be 19 bytes, got 18"):
        itch.decode(good[:-1])
    with pytest.raises(itch.ItchError, match="unknown message type"):
        itch.decode(b"?" + good[1:])


def test_malformed_messages_are_unknown_type_or_wrong_length():
    valid = itch.encode("A", order_reference_number=1, buy_sell_indicator="S", shares=1,
                        stock="X", price=1)
    unknown = malformed_message(0, valid)
    short = malformed_message(1, valid)
    assert unknown[:1] not in itch.FORMATS and len(unknown) == len(valid)
    assert short[:1] == b"A" and len(short) == SPEC_LENGTHS["A"] - 1


def test_engine_agrees_on_lengths_when_built():
    native = pytest.importorskip("tickwire_engine._native", reason="engine extension not built")
    assert {t: native.lib.tw_itch_length(ord(t)) for t in SPEC_LENGTHS} == SPEC_LENGTHS
    assert native.lib.tw_itch_length(ord("?")) == 0


def test_mix_parsing_and_draws():
    rng = random.Random(3)
    adds = Mix.parse("adds")
    assert {adds.draw(rng) for _ in range(200)} == {ord("A")}
    custom = Mix.parse("A=1, h=1")
    drawn = [custom.draw(rng) for _ in range(2000)]
    assert set(drawn) == {ord("A"), ord("h")}
    assert 800 < drawn.count(ord("h")) < 1200  # seeded: deterministic, roughly half
    default = Mix.parse("default")
    assert {chr(default.draw(rng)) for _ in range(200_000)} == set(SPEC_LENGTHS)


@pytest.mark.parametrize("text, problem", [
    ("Z=1", "unknown ITCH type 'Z'"), ("A", "not TYPE=WEIGHT"), ("A=x", "not a number"),
    ("A=0", "must be > 0"), ("", "at least one type"),
])
def test_mix_errors_name_the_problem(text, problem):
    with pytest.raises(MixError, match=problem):
        Mix.parse(text)


def test_market_keeps_a_consistent_book():
    """Executions, cancels, deletes and replaces refer to orders added before."""
    market = Market(random.Random(11))
    mix = Mix.parse("default")
    rng = random.Random(12)
    live: dict[int, int] = {}  # order reference -> open shares, replayed from the messages alone
    checked = 0
    for _ in range(20_000):
        fields = itch.decode(market.message(mix.draw(rng)))
        t = fields["type"]
        if t in "AF":
            assert fields["order_reference_number"] not in live
            live[fields["order_reference_number"]] = fields["shares"]
            continue
        if t not in "ECXDU":
            continue
        ref = fields["original_order_reference_number" if t == "U" else "order_reference_number"]
        if live:  # with an empty book the market makes a reference up
            assert ref in live, f"{t} refers to order {ref}, which is not live"
            checked += 1
        if t == "U":
            live.pop(ref, None)
            live[fields["new_order_reference_number"]] = fields["shares"]
        elif t == "D":
            live.pop(ref, None)
        elif ref in live:
            taken = fields["cancelled_shares" if t == "X" else "executed_shares"]
            assert 0 < taken <= live[ref]
            live[ref] -= taken
            if live[ref] == 0:
                del live[ref]
    assert checked > 5000


# ---- MoldUDP64 ------------------------------------------------------------------------------

def test_data_packet_layout():
    session = moldudp64.session_bytes("SESS1")
    m1, m2 = b"S" + bytes(11), b"D" + bytes(18)
    packet = moldudp64.encode_packet(session, 0x1122334455667788, [m1, m2])
    assert bytes(packet) == (b"SESS1     " + bytes.fromhex("1122334455667788") + b"\x00\x02"
                             + b"\x00\x0c" + m1 + b"\x00\x13" + m2)
    decoded = moldudp64.decode_packet(bytes(packet))
    assert (decoded.session, decoded.sequence, decoded.count, decoded.messages) == (
        b"SESS1     ", 0x1122334455667788, 2, (m1, m2))


def test_heartbeat_and_end_of_session():
    session = moldudp64.session_bytes("S")
    hb = moldudp64.heartbeat(session, 42)
    eos = moldudp64.end_of_session(session, 43)
    assert hb == b"S         " + struct.pack(">QH", 42, 0)
    assert eos == b"S         " + struct.pack(">QH", 43, 0xFFFF)
    assert moldudp64.decode_packet(hb).is_heartbeat
    assert moldudp64.decode_packet(eos).is_end_of_session


@pytest.mark.parametrize("payload, problem", [
    (b"short", "header needs 20 bytes"),
    (b"S" * 10 + struct.pack(">QH", 1, 1) + b"\x00", "length field runs past"),
    (b"S" * 10 + struct.pack(">QH", 1, 1) + b"\x00\x05abc", "5 bytes run past"),
    (b"S" * 10 + struct.pack(">QH", 1, 1) + b"\x00\x01a" + b"zz", "2 trailing bytes"),
    (b"S" * 10 + struct.pack(">QH", 1, 0) + b"x", "carries no messages"),
])
def test_decode_packet_checks_every_length(payload, problem):
    with pytest.raises(moldudp64.MoldError, match=problem):
        moldudp64.decode_packet(payload)


def test_session_name_is_limited_to_ten_characters():
    with pytest.raises(moldudp64.MoldError, match="longer than 10"):
        moldudp64.session_bytes("ELEVENCHARS")
