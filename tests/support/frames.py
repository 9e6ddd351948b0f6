"""Feed packets as bytes, built and read in plain Python, independently of the C decoder.

Building: ITCH 5.0 messages of the right length for their type, MoldUDP64 packets (data,
heartbeat, end of session) and Ethernet[/802.1ad][/802.1Q]/IPv4/UDP frames around them.
Reading: classic pcap files, and a separate parser of those frames down to ITCH type letters, so
tests can check the decoder against something it does not share code with.
"""
from __future__ import annotations

import ipaddress
import struct
from collections import Counter

# TotalView-ITCH 5.0 (section 4): type letter -> fixed message length in bytes.
ITCH_LENGTHS = {
    "S": 12, "R": 39, "H": 25, "Y": 20, "L": 26, "V": 35, "W": 12, "K": 28, "J": 35, "h": 21,
    "A": 36, "F": 40, "E": 31, "C": 36, "X": 23, "D": 19, "U": 35, "P": 44, "Q": 40, "B": 19,
    "I": 50, "N": 20, "O": 48,
}

SESSION = b"0000010059"         # a MoldUDP64 session id: 10 ASCII bytes
HEARTBEAT_COUNT = 0
END_OF_SESSION_COUNT = 0xFFFF
TPID_8021Q = 0x8100
TPID_8021AD = 0x88A8
ETH_IPV4 = 0x0800


# ---- building ------------------------------------------------------------------------------------

def itch(msg_type: str = "A", timestamp_ns: int = 0, locate: int = 1, tracking: int = 0,
         length: int | None = None) -> bytes:
    """An ITCH 5.0 message: type, stock locate, tracking number, 48-bit timestamp, then zero
    bytes up to the type's length (or `length`, to build a wrong-length one)."""
    header = msg_type.encode("latin-1") + struct.pack(">HH", locate, tracking)
    header += timestamp_ns.to_bytes(6, "big")
    size = ITCH_LENGTHS[msg_type] if length is None else length
    return (header + bytes(max(0, size - len(header))))[:size]


def mold(seq: int, messages: list[bytes], session: bytes = SESSION,
         count: int | None = None) -> bytes:
    """A MoldUDP64 packet holding `messages` from sequence number `seq` on."""
    assert len(session) == 10, "a MoldUDP64 session id is 10 bytes"
    n = len(messages) if count is None else count
    blocks = b"".join(struct.pack(">H", len(m)) + m for m in messages)
    return session + struct.pack(">QH", seq, n) + blocks


def heartbeat(next_seq: int, session: bytes = SESSION) -> bytes:
    return mold(next_seq, [], session, HEARTBEAT_COUNT)


def end_of_session(next_seq: int, session: bytes = SESSION) -> bytes:
    return mold(next_seq, [], session, END_OF_SESSION_COUNT)


def run_of(seq: int, n: int, msg_type: str = "A", session: bytes = SESSION,
           timestamp_ns: int = 0) -> bytes:
    """A packet of n messages of one type, sequence numbers seq..seq+n-1."""
    return mold(seq, [itch(msg_type, timestamp_ns) for _ in range(n)], session)


def ipv4_checksum(header: bytes) -> int:
    total = sum(struct.unpack(f">{len(header) // 2}H", header))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def multicast_mac(group: str) -> bytes:
    """01:00:5e + the low 23 bits of the group (RFC 1112)."""
    low23 = int(ipaddress.IPv4Address(group)) & 0x7FFFFF
    return b"\x01\x00\x5e" + low23.to_bytes(3, "big")


def ipv4(payload: bytes, src: str, dst: str, proto: int = 17, flags_frag: int = 0x4000,
         ihl: int = 5, total_length: int | None = None, version: int = 4) -> bytes:
    options = bytes((ihl - 5) * 4) if ihl > 5 else b""
    total = 4 * max(ihl, 5) + len(payload) if total_length is None else total_length
    header = struct.pack(">BBHHHBBH4s4s", version << 4 | ihl, 0, total, 0, flags_frag, 64, proto,
                         0, ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed)
    header += options
    header = header[:10] + struct.pack(">H", ipv4_checksum(header)) + header[12:]
    return header + payload


def udp(payload: bytes, sport: int, dport: int, length: int | None = None) -> bytes:
    size = 8 + len(payload) if length is None else length
    return struct.pack(">HHHH", sport, dport, size, 0) + payload  # checksum 0: none (IPv4)


def ethernet(payload: bytes, dst_mac: bytes, ethertype: int = ETH_IPV4,
             vlans: tuple[tuple[int, int], ...] = (), src_mac: bytes = b"\x02\x00\x00\x00\x00\x01"
             ) -> bytes:
    """vlans: outermost first, each (TPID, VLAN id)."""
    tags = b"".join(struct.pack(">HH", tpid, vid) for tpid, vid in vlans)
    return dst_mac + src_mac + tags + struct.pack(">H", ethertype) + payload


def frame(payload: bytes, group: str = "239.1.1.1", port: int = 5000, src: str = "198.18.0.1",
          sport: int = 40000, vlans: tuple[tuple[int, int], ...] = ()) -> bytes:
    """A MoldUDP64 payload in a complete multicast UDP frame."""
    return ethernet(ipv4(udp(payload, sport, port), src, group), multicast_mac(group), vlans=vlans)


# ---- reading -------------------------------------------------------------------------------------

def read_pcap(path: str) -> list[bytes]:
    """The frames of a classic pcap file (micro- or nanosecond, either byte order)."""
    with open(path, "rb") as f:
        data = f.read()
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        endian = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        endian = ">"
    else:
        raise ValueError(f"{path}: not a classic pcap file (magic {magic.hex()})")
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    if linktype != 1:
        raise ValueError(f"{path}: link type {linktype}, expected Ethernet (1)")
    frames, off = [], 24
    while off + 16 <= len(data):
        incl_len = struct.unpack(endian + "I", data[off + 8:off + 12])[0]
        frames.append(data[off + 16:off + 16 + incl_len])
        off += 16 + incl_len
    return frames


def udp_of(eth: bytes) -> tuple[str, int, bytes]:
    """(destination group, destination port, UDP payload) of an Ethernet frame, VLAN tags skipped."""
    off = 12
    (ethertype,) = struct.unpack(">H", eth[off:off + 2])
    while ethertype in (TPID_8021Q, TPID_8021AD):
        off += 4
        (ethertype,) = struct.unpack(">H", eth[off:off + 2])
    ip = eth[off + 2:]
    assert ethertype == ETH_IPV4 and ip[9] == 17, "not IPv4/UDP"
    ihl = (ip[0] & 15) * 4
    total = struct.unpack(">H", ip[2:4])[0]
    dst = str(ipaddress.IPv4Address(ip[16:20]))
    (dport, ulen) = struct.unpack(">HH", ip[ihl + 2:ihl + 6])
    assert ulen == total - ihl, "UDP length disagrees with IPv4"
    return dst, dport, ip[ihl + 8:ihl + ulen]


def mold_fields(payload: bytes) -> tuple[bytes, int, list[bytes]]:
    """(session, sequence number, messages) of a MoldUDP64 packet."""
    session = payload[:10]
    seq, count = struct.unpack(">QH", payload[10:20])
    messages, off = [], 20
    for _ in range(0 if count == END_OF_SESSION_COUNT else count):
        (length,) = struct.unpack(">H", payload[off:off + 2])
        messages.append(payload[off + 2:off + 2 + length])
        assert len(messages[-1]) == length, "block runs past the packet"
        off += 2 + length
    return session, seq, messages


def count_types(payloads: list[bytes]) -> Counter:
    """ITCH type letters over MoldUDP64 payloads, counting each sequence number once per session."""
    seen, types = set(), Counter()
    for payload in payloads:
        session, seq, messages = mold_fields(payload)
        for i, message in enumerate(messages):
            if (session, seq + i) not in seen:
                seen.add((session, seq + i))
                types[chr(message[0])] += 1
    return types
