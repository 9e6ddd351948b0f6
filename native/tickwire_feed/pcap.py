"""Read UDP datagrams out of packet captures: classic pcap (either byte order, micro- or
nanosecond timestamps) and pcapng.

    for datagram in udp_datagrams("capture.pcap"):
        datagram.payload   # the UDP payload, e.g. a MoldUDP64 packet

Link layers understood: Ethernet (with any number of 802.1Q / 802.1ad tags), raw IPv4, and Linux
cooked captures (SLL, SLL2). Frames that are not IPv4/UDP, IPv4 fragments and truncated frames
are skipped (counted in a `CaptureStats` if one is passed). The UDP payload is cut at the UDP
length, so Ethernet padding never leaks into it.
"""
from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Iterator

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_IPV4 = 228
LINKTYPE_LINUX_SLL = 113
LINKTYPE_LINUX_SLL2 = 276

_ETHERTYPE_IPV4 = 0x0800
_VLAN_TAGS = (0x8100, 0x88A8, 0x9100)
_IPPROTO_UDP = 17

_PCAP_MAGIC = {  # magic as read little-endian -> (byte order, timestamp fraction in ns)
    0xA1B2C3D4: ("<", 1000), 0xD4C3B2A1: (">", 1000),
    0xA1B23C4D: ("<", 1), 0x4D3CB2A1: (">", 1),
}
_PCAPNG_SHB = 0x0A0D0D0A
_PCAPNG_BYTE_ORDER_MAGIC = 0x1A2B3C4D


class CaptureError(ValueError):
    pass


@dataclass(frozen=True)
class Datagram:
    timestamp_ns: int
    src: str
    dst: str
    sport: int
    dport: int
    payload: bytes
    vlans: tuple[int, ...] = ()


@dataclass
class CaptureStats:
    frames: int = 0
    udp: int = 0
    skipped: int = 0   # not IPv4/UDP, fragments, truncated, unknown link type


def frames(path: str) -> Iterator[tuple[int, int, bytes]]:
    """(timestamp_ns, link type, frame bytes) for every captured frame."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 4:
        raise CaptureError(f"{path}: too short to be a capture ({len(data)} bytes)")
    (magic,) = struct.unpack_from("<I", data)
    if magic in _PCAP_MAGIC:
        yield from _classic(path, data, *_PCAP_MAGIC[magic])
    elif magic == _PCAPNG_SHB:
        yield from _pcapng(path, data)
    else:
        raise CaptureError(f"{path}: not a pcap or pcapng file (magic {magic:#010x})")


def _classic(path: str, data: bytes, order: str, ns_per_fraction: int):
    if len(data) < 24:
        raise CaptureError(f"{path}: truncated pcap file header")
    linktype = struct.unpack_from(order + "I", data, 20)[0] & 0x0FFFFFFF
    record = struct.Struct(order + "IIII")
    offset = 24
    while offset + record.size <= len(data):
        seconds, fraction, caplen, _ = record.unpack_from(data, offset)
        offset += record.size
        if offset + caplen > len(data):
            raise CaptureError(f"{path}: record at byte {offset - record.size} runs past the end")
        yield seconds * 1_000_000_000 + fraction * ns_per_fraction, linktype, data[offset:offset + caplen]
        offset += caplen


def _pcapng(path: str, data: bytes):
    order = "<"
    interfaces: list[tuple[int, int, int]] = []  # (link type, tsresol base, tsresol exponent)
    offset = 0
    while offset + 12 <= len(data):
        block_type = struct.unpack_from(order + "I", data, offset)[0]
        if block_type == _PCAPNG_SHB:
            (bom,) = struct.unpack_from("<I", data, offset + 8)
            order = "<" if bom == _PCAPNG_BYTE_ORDER_MAGIC else ">"
            interfaces = []  # a new section starts its own interface list
        length = struct.unpack_from(order + "I", data, offset + 4)[0]
        if length < 12 or length % 4 or offset + length > len(data):
            raise CaptureError(f"{path}: bad pcapng block length {length} at byte {offset}")
        body = data[offset + 8:offset + length - 4]
        if block_type == 1:      # Interface Description Block
            linktype = struct.unpack_from(order + "H", body)[0]
            interfaces.append((linktype, *_tsresol(body[8:], order)))
        elif block_type == 6:    # Enhanced Packet Block
            iface, ts_high, ts_low, caplen, _ = struct.unpack_from(order + "IIIII", body)
            if iface >= len(interfaces):
                raise CaptureError(f"{path}: packet refers to undeclared interface {iface}")
            linktype, base, exponent = interfaces[iface]
            units = (ts_high << 32) | ts_low
            yield _units_to_ns(units, base, exponent), linktype, body[20:20 + caplen]
        elif block_type == 3:    # Simple Packet Block: no timestamp
            (original_len,) = struct.unpack_from(order + "I", body)
            linktype = interfaces[0][0] if interfaces else LINKTYPE_ETHERNET
            yield 0, linktype, body[4:4 + min(original_len, len(body) - 4)]
        offset += length


def _tsresol(options: bytes, order: str) -> tuple[int, int]:
    """if_tsresol: (10, 6) means microseconds, the default; the high bit selects base 2."""
    offset = 0
    while offset + 4 <= len(options):
        code, length = struct.unpack_from(order + "HH", options, offset)
        if code == 0:
            break
        if code == 9 and length >= 1:
            value = options[offset + 4]
            return (2, value & 0x7F) if value & 0x80 else (10, value)
        offset += 4 + (length + 3) // 4 * 4
    return 10, 6


def _units_to_ns(units: int, base: int, exponent: int) -> int:
    return units * 1_000_000_000 // base ** exponent


def datagram_from_frame(linktype: int, frame: bytes, timestamp_ns: int = 0) -> Datagram | None:
    """The UDP datagram in one frame, or None if the frame holds none we can read."""
    vlans: list[int] = []
    if linktype == LINKTYPE_ETHERNET:
        if len(frame) < 14:
            return None
        offset, (ethertype,) = 14, struct.unpack_from(">H", frame, 12)
        while ethertype in _VLAN_TAGS:
            if len(frame) < offset + 4:
                return None
            tci, ethertype = struct.unpack_from(">HH", frame, offset)
            vlans.append(tci & 0x0FFF)
            offset += 4
    elif linktype in (LINKTYPE_RAW, LINKTYPE_IPV4):
        offset, ethertype = 0, _ETHERTYPE_IPV4 if frame[:1] and frame[0] >> 4 == 4 else 0
    elif linktype == LINKTYPE_LINUX_SLL:
        if len(frame) < 16:
            return None
        offset, (ethertype,) = 16, struct.unpack_from(">H", frame, 14)
    elif linktype == LINKTYPE_LINUX_SLL2:
        if len(frame) < 20:
            return None
        offset, (ethertype,) = 20, struct.unpack_from(">H", frame, 0)
    else:
        return None
    if ethertype != _ETHERTYPE_IPV4:
        return None
    return _udp_in_ipv4(frame, offset, timestamp_ns, tuple(vlans))


def _udp_in_ipv4(frame: bytes, offset: int, timestamp_ns: int, vlans) -> Datagram | None:
    if len(frame) < offset + 20:
        return None
    version_ihl, total_length = frame[offset], struct.unpack_from(">H", frame, offset + 2)[0]
    header_length = (version_ihl & 0x0F) * 4
    flags_fragment = struct.unpack_from(">H", frame, offset + 6)[0]
    if version_ihl >> 4 != 4 or header_length < 20 or total_length < header_length + 8:
        return None
    if flags_fragment & 0x3FFF:  # more-fragments flag or a fragment offset
        return None
    if frame[offset + 9] != _IPPROTO_UDP or len(frame) < offset + total_length:
        return None
    src = str(ipaddress.IPv4Address(frame[offset + 12:offset + 16]))
    dst = str(ipaddress.IPv4Address(frame[offset + 16:offset + 20]))
    udp = offset + header_length
    sport, dport, udp_length = struct.unpack_from(">HHH", frame, udp)
    if udp_length < 8 or udp + udp_length > offset + total_length:
        return None
    return Datagram(timestamp_ns, src, dst, sport, dport,
                    bytes(frame[udp + 8:udp + udp_length]), vlans)


def udp_datagrams(path: str, stats: CaptureStats | None = None) -> Iterator[Datagram]:
    for timestamp_ns, linktype, frame in frames(path):
        datagram = datagram_from_frame(linktype, frame, timestamp_ns)
        if stats is not None:
            stats.frames += 1
            stats.udp += datagram is not None
            stats.skipped += datagram is None
        if datagram is not None:
            yield datagram
