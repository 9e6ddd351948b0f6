"""ntuple flow-steering rules through the SIOCETHTOOL ioctl (ETHTOOL_*RXCLSRL*), byte for byte.

Why the ioctl: the ethtool generic netlink family of this kernel (6.18; 50 operations, checked
with CTRL_CMD_GETFAMILY) has RSS get/set/create/delete but no receive-classification rule
operation, and pyroute2 0.9.7's Ethtool has none either (channels, features, rings, coalesce,
...). `ethtool -N` itself still uses this ioctl.

The layouts below are <linux/ethtool.h>'s on a 64-bit host, checked against the C compiler's
offsetof in tests/unit/test_agent_flow_steering.py:

    struct ethtool_rx_flow_spec (168 bytes): flow_type u32 @0, h_u @4 (52), h_ext @56 (20),
        m_u @76 (52), m_ext @128 (20), ring_cookie u64 @152, location u32 @160
    struct ethtool_rxnfc (192 bytes): cmd u32 @0, flow_type u32 @4, data u64 @8, fs @16,
        rule_cnt u32 @184, rule_locs u32[] @188 (inside the struct's tail padding: the kernel
        copies the locations to offsetof(rule_locs), not to sizeof)
    struct ethtool_tcpip4_spec (in h_u/m_u): ip4src, ip4dst (be32), psrc, pdst (be16), tos u8
    struct ethtool_flow_ext: padding[2], h_dest[6], vlan_etype be16 @8, vlan_tci be16 @10, data[2]

In m_u/m_ext a set bit means "compare this bit" (ethtool's command line inverts its own masks
before the ioctl).
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import socket
import struct
from dataclasses import dataclass

SIOCETHTOOL = 0x8946
ETHTOOL_GDRVINFO = 0x03
ETHTOOL_GRXCLSRLCNT = 0x2E
ETHTOOL_GRXCLSRULE = 0x2F
ETHTOOL_GRXCLSRLALL = 0x30
ETHTOOL_SRXCLSRLDEL = 0x31
ETHTOOL_SRXCLSRLINS = 0x32
UDP_V4_FLOW = 0x02
FLOW_EXT = 0x80000000
RX_CLS_LOC_SPECIAL = 0x80000000
RX_CLS_LOC_ANY = 0xFFFFFFFF
VLAN_VID_MASK = 0x0FFF

FLOW_SPEC = struct.Struct("=I52s20s52s20s4xQI4x")      # 168
RXNFC_HEAD = struct.Struct("=IIQ")                      # cmd, flow_type, data
RXNFC = struct.Struct("=IIQ168sI4x")                    # 192
RULE_LOCS = 188                                         # offsetof(struct ethtool_rxnfc, rule_locs)
UDP4_SPEC = struct.Struct("!4s4sHHB")                   # network order, padded to 52 in the union
FLOW_EXT_SPEC = struct.Struct("!2x6sHH8x")              # 20
DRVINFO_SIZE = 196                                      # struct ethtool_drvinfo


@dataclass(frozen=True)
class Rule:
    """Steer UDP to (group, port) [from source] [on VLAN vid] to RX queue `queue`."""
    group: str
    port: int
    queue: int
    source: str | None = None
    vlan: int | None = None

    def flow_spec(self, location: int) -> bytes:
        flow_type = UDP_V4_FLOW | (FLOW_EXT if self.vlan is not None else 0)
        values = UDP4_SPEC.pack(socket.inet_aton(self.source or "0.0.0.0"), socket.inet_aton(self.group),
                                0, self.port, 0)
        masks = UDP4_SPEC.pack(b"\xff" * 4 if self.source else b"\0" * 4, b"\xff" * 4, 0, 0xFFFF, 0)
        h_ext = FLOW_EXT_SPEC.pack(b"\0" * 6, 0, self.vlan or 0)
        m_ext = FLOW_EXT_SPEC.pack(b"\0" * 6, 0, VLAN_VID_MASK if self.vlan is not None else 0)
        return FLOW_SPEC.pack(flow_type, values.ljust(52, b"\0"), h_ext, masks.ljust(52, b"\0"), m_ext,
                              self.queue, location)

    @classmethod
    def from_flow_spec(cls, raw: bytes) -> tuple["Rule", int] | None:
        """(rule, location) from a driver's answer; None for a rule that is not one of ours in shape."""
        flow_type, h_u, h_ext, m_u, m_ext, ring_cookie, location = FLOW_SPEC.unpack(raw)
        if flow_type & ~FLOW_EXT != UDP_V4_FLOW:
            return None
        src, dst, _psrc, pdst, _tos = UDP4_SPEC.unpack(h_u[:UDP4_SPEC.size])
        msrc, _mdst, _mpsrc, _mpdst, _mtos = UDP4_SPEC.unpack(m_u[:UDP4_SPEC.size])
        vlan = None
        if flow_type & FLOW_EXT:
            _mac, _etype, tci = FLOW_EXT_SPEC.unpack(h_ext)
            _mmac, _metype, mtci = FLOW_EXT_SPEC.unpack(m_ext)
            vlan = tci & VLAN_VID_MASK if mtci & VLAN_VID_MASK else None
        source = socket.inet_ntoa(src) if msrc != b"\0" * 4 else None
        return cls(socket.inet_ntoa(dst), pdst, ring_cookie, source, vlan), location


def rxnfc(cmd: int, fs: bytes = b"\0" * FLOW_SPEC.size, data: int = 0, rule_cnt: int = 0) -> bytes:
    return RXNFC.pack(cmd, 0, data, fs, rule_cnt)


class Ioctl:
    """SIOCETHTOOL on a real interface: `call(ifname, request) -> the kernel's reply (same size)`."""

    def call(self, ifname: str, request: bytes) -> bytes:
        buf = ctypes.create_string_buffer(request, len(request))
        ifreq = struct.pack("16sP", ifname.encode(), ctypes.addressof(buf)).ljust(40, b"\0")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            fcntl.ioctl(s, SIOCETHTOOL, ifreq)
        return buf.raw


class RuleTable:
    """The ntuple rule table of one interface."""

    def __init__(self, ifname: str, ioctl: Ioctl | None = None):
        self.ifname = ifname
        self.ioctl = ioctl or Ioctl()

    def driver(self) -> str:
        """The driver's name ('veth', 'ixgbe', ...), or '' when it will not say."""
        try:
            reply = self.ioctl.call(self.ifname, struct.pack("=I", ETHTOOL_GDRVINFO).ljust(DRVINFO_SIZE, b"\0"))
        except OSError:
            return ""
        return reply[4:36].split(b"\0", 1)[0].decode(errors="replace")

    def capacity(self) -> tuple[int, int, bool]:
        """(table size, rules in it, whether the driver picks locations itself). Raises OSError
        (EOPNOTSUPP and friends) on a NIC without ntuple filters."""
        reply = self.ioctl.call(self.ifname, rxnfc(ETHTOOL_GRXCLSRLCNT))
        _cmd, _flow_type, data, _fs, rule_cnt = RXNFC.unpack(reply[:RXNFC.size])
        return data & ~RX_CLS_LOC_SPECIAL, rule_cnt, bool(data & RX_CLS_LOC_SPECIAL)

    def locations(self) -> list[int]:
        size, count, _special = self.capacity()
        request = rxnfc(ETHTOOL_GRXCLSRLALL, data=size, rule_cnt=count)
        request += b"\0" * max(0, RULE_LOCS + 4 * count - len(request))
        reply = self.ioctl.call(self.ifname, request)
        _cmd, _ft, _data, _fs, rule_cnt = RXNFC.unpack(reply[:RXNFC.size])
        return list(struct.unpack_from(f"={rule_cnt}I", reply, RULE_LOCS))

    def free_location(self) -> int:
        """The highest free slot, as ethtool's own rule manager picks when the driver does not."""
        size, _count, _special = self.capacity()
        used = set(self.locations())
        for location in range(size - 1, -1, -1):
            if location not in used:
                return location
        raise OSError(errno.ENOSPC, f"{self.ifname}'s ntuple table is full ({size} rules)")

    def insert(self, rule: Rule, location: int) -> int:
        """Install `rule` at `location` (or RX_CLS_LOC_ANY); returns where the driver put it."""
        reply = self.ioctl.call(self.ifname, rxnfc(ETHTOOL_SRXCLSRLINS, rule.flow_spec(location)))
        _cmd, _ft, _data, fs, _cnt = RXNFC.unpack(reply[:RXNFC.size])
        return FLOW_SPEC.unpack(fs)[-1]

    def get(self, location: int) -> Rule | None:
        """The rule at `location`, None when the slot is empty (or holds a rule not of our shape)."""
        try:
            reply = self.ioctl.call(self.ifname, rxnfc(ETHTOOL_GRXCLSRULE, Rule("0.0.0.0", 0, 0).flow_spec(location)))
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.EINVAL):
                return None
            raise
        _cmd, _ft, _data, fs, _cnt = RXNFC.unpack(reply[:RXNFC.size])
        found = Rule.from_flow_spec(fs)
        return None if found is None else found[0]

    def delete(self, location: int) -> None:
        self.ioctl.call(self.ifname, rxnfc(ETHTOOL_SRXCLSRLDEL, Rule("0.0.0.0", 0, 0).flow_spec(location)))
