"""The capture reader of tickwire-feed on the real NASDAQ ITCH 5.0 captures in the shared test data,
and on pcapng / other pcap variants built here from those same frames."""
import os
import struct

import pytest

from tickwire_feed import moldudp64
from tickwire_feed.itch import LENGTHS
from tickwire_feed.pcap import CaptureError, CaptureStats, datagram_from_frame, frames, udp_datagrams
from tests.support.testdata import CAPTURES_DIR, capture_files

TESTDATA = CAPTURES_DIR
CAPTURES = capture_files()
PRODUCTION = os.path.join(TESTDATA, "production-2023", "Multiple.Packets.pcap")

needs_captures = pytest.mark.skipif(not CAPTURES, reason=f"shared test data absent ({TESTDATA})")


@needs_captures
def test_all_real_captures_yield_valid_moldudp64_itch():
    """PROVENANCE.md: 80 UDP packets carrying 117 ITCH messages of 15 types."""
    stats = CaptureStats()
    datagrams = [d for path in CAPTURES for d in udp_datagrams(path, stats)]
    assert stats.frames == stats.udp == len(datagrams) == 80 and stats.skipped == 0
    types = []
    for d in datagrams:
        packet = moldudp64.decode_packet(d.payload)
        for message in packet.messages:
            assert len(message) == LENGTHS[chr(message[0])]
            types.append(chr(message[0]))
    assert len(types) == 117
    assert set(types) == set("ACDEFHIJLPQSUXY")


@needs_captures
def test_production_capture_has_vlan_tag_and_real_addresses():
    datagrams = list(udp_datagrams(PRODUCTION))
    assert len(datagrams) > 1
    first = datagrams[0]
    assert first.vlans == (141,)
    assert (first.src, first.dst, first.dport) == ("206.200.127.138", "233.54.12.111", 26477)
    sequences = [moldudp64.decode_packet(d.payload).sequence for d in datagrams]
    assert sequences == sorted(sequences) and sequences[0] > 0
    # a nanosecond pcap of 2023
    assert 1672531200 <= first.timestamp_ns // 10**9 < 1704067200


def _classic_records(path):
    with open(path, "rb") as f:
        data = f.read()
    offset, records = 24, []
    while offset < len(data):
        seconds, fraction, caplen, _ = struct.unpack_from("<IIII", data, offset)
        records.append((seconds, fraction, data[offset + 16:offset + 16 + caplen]))
        offset += 16 + caplen
    return records


def _pcapng(records, linktype=1, tsresol=9) -> bytes:
    """A pcapng file (SHB, IDB with if_tsresol, EPBs) written straight from the pcapng spec."""
    def block(block_type, body):
        body += bytes(-len(body) % 4)
        length = 12 + len(body)
        return struct.pack("<II", block_type, length) + body + struct.pack("<I", length)

    shb = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    idb_options = struct.pack("<HHB3x", 9, 1, tsresol) + struct.pack("<HH", 0, 0)
    idb = block(1, struct.pack("<HHI", linktype, 0, 0) + idb_options)
    epbs = b""
    for seconds, fraction, frame in records:
        units = seconds * 10**tsresol + fraction
        epbs += block(6, struct.pack("<IIIII", 0, units >> 32, units & 0xFFFFFFFF,
                                     len(frame), len(frame)) + frame)
    return shb + idb + epbs


@needs_captures
def test_pcapng_and_microsecond_big_endian_pcap_give_the_same_datagrams(tmp_path):
    reference = list(udp_datagrams(PRODUCTION))
    records = _classic_records(PRODUCTION)

    ng = tmp_path / "same.pcapng"
    ng.write_bytes(_pcapng(records))
    assert list(udp_datagrams(str(ng))) == reference

    # Classic pcap, big endian, microsecond resolution (magic a1b2c3d4).
    be = tmp_path / "same-be-us.pcap"
    header = struct.pack(">IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    body = b"".join(struct.pack(">IIII", s, ns // 1000, len(f), len(f)) + f for s, ns, f in records)
    be.write_bytes(header + body)
    got = list(udp_datagrams(str(be)))
    assert [d.payload for d in got] == [d.payload for d in reference]
    assert [d.timestamp_ns // 1000 for d in got] == [d.timestamp_ns // 1000 for d in reference]


def _ipv4_udp(payload: bytes, flags_fragment: int = 0, udp_extra: int = 0) -> bytes:
    udp = struct.pack(">HHHH", 1234, 26477, 8 + len(payload) + udp_extra, 0) + payload
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, flags_fragment, 1, 17, 0,
                     bytes([10, 0, 0, 1]), bytes([239, 1, 1, 1]))
    return ip + udp


def test_frame_parsing_handles_padding_stacked_tags_and_rejects_the_rest():
    payload = b"MOLD" * 3
    eth = bytes(12)
    padded = eth + b"\x08\x00" + _ipv4_udp(payload) + bytes(20)  # Ethernet padding after IP
    assert datagram_from_frame(1, padded).payload == payload
    qinq = eth + b"\x88\xa8\x00\x64\x81\x00\x00\x8d\x08\x00" + _ipv4_udp(payload)
    d = datagram_from_frame(1, qinq)
    assert (d.vlans, d.payload, d.dst, d.dport) == ((100, 141), payload, "239.1.1.1", 26477)
    assert datagram_from_frame(101, _ipv4_udp(payload)).payload == payload
    assert datagram_from_frame(1, eth + b"\x08\x00" + _ipv4_udp(payload, flags_fragment=0x2000)) is None
    assert datagram_from_frame(1, eth + b"\x08\x00" + _ipv4_udp(payload, udp_extra=4)) is None
    assert datagram_from_frame(1, eth + b"\x86\xdd" + bytes(60)) is None  # IPv6
    assert datagram_from_frame(1, padded[:30]) is None                     # truncated


def test_not_a_capture_is_refused(tmp_path):
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"this is not a capture file")
    with pytest.raises(CaptureError, match="not a pcap or pcapng"):
        list(frames(str(junk)))
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
                    + struct.pack("<IIII", 0, 0, 100, 100) + bytes(10))
    with pytest.raises(CaptureError, match="runs past the end"):
        list(frames(str(cut)))


@needs_captures
def test_renumbered_replay_is_one_gap_free_session():
    from tickwire_feed.replay import renumbered

    payloads = [d.payload for path in CAPTURES for d in udp_datagrams(path)]
    # As captured: several sessions, and the sanitized files all start at sequence number 0.
    assert len({moldudp64.decode_packet(p).session for p in payloads}) > 1
    rewritten = renumbered(payloads, "REPLAY", 1000)
    packets = [moldudp64.decode_packet(p) for p in rewritten]
    assert {p.session for p in packets} == {b"REPLAY    "}
    expected_seq = 1000
    for before, after in zip(payloads, packets):
        assert after.sequence == expected_seq
        assert after.messages == moldudp64.decode_packet(before).messages  # messages untouched
        expected_seq += after.count
    assert expected_seq == 1000 + 117
