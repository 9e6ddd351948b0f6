"""The Python contender's parsing (bench/python_rx.py) on the benchmark's own packets."""
import struct
from collections import Counter

from bench.python_rx import FeedHandler
from bench.template import make_template
from tickwire_feed import moldudp64

MIDNIGHT = 1_700_000_000 * 10**9


def stamped(payload: bytes, seq: int, since_midnight_ns: int) -> bytes:
    """A template payload with a sequence number and every message's timestamp set."""
    packet = bytearray(payload)
    struct.pack_into(">Q", packet, 10, seq)
    offset = 20
    for _ in range(struct.unpack_from(">H", packet, 18)[0]):
        length = struct.unpack_from(">H", packet, offset)[0]
        packet[offset + 2 + 5:offset + 2 + 11] = since_midnight_ns.to_bytes(6, "big")
        offset += 2 + length
    return bytes(packet)


def test_counts_by_type_and_latency_of_every_message():
    template = make_template(packets=300, mean_per_packet=4)
    handler, seq = FeedHandler(MIDNIGHT), 1
    for payload in template.payloads:
        packet = stamped(payload, seq, 5_000_000)
        handler.on_packet(packet, MIDNIGHT + 5_000_000 + 2_500)   # arrived 2.5 us after the stamp
        seq += moldudp64.decode_packet(packet).count
    stats = handler.stats()
    assert stats["messages"] == template.messages
    assert Counter(stats["messages_by_type"]) == template.by_type()
    assert (stats["gaps"], stats["malformed"], stats["duplicates"]) == (0, 0, 0)
    lat = stats["latency"]["exchange_to_engine"]["lines"]["A"]
    assert lat["count"] == template.messages and lat["min"] == lat["max"] == 2_500


def test_gaps_duplicates_and_malformed_are_counted():
    session = moldudp64.session_bytes("T")
    add = b"A" + bytes(35)
    handler = FeedHandler(MIDNIGHT)
    handler.on_packet(bytes(moldudp64.encode_packet(session, 1, [add, add])), MIDNIGHT)
    handler.on_packet(bytes(moldudp64.encode_packet(session, 6, [add])), MIDNIGHT)       # 3, 4, 5 lost
    handler.on_packet(bytes(moldudp64.encode_packet(session, 6, [add])), MIDNIGHT)       # a resend
    handler.on_packet(bytes(moldudp64.encode_packet(session, 7, [b"A" + bytes(10), b"?" * 36])), MIDNIGHT)
    handler.on_packet(b"short", MIDNIGHT)
    s = handler.stats()
    assert (s["messages"], s["gaps"], s["missing"], s["duplicates"], s["malformed"]) == (3, 1, 3, 1, 3)
