"""Multicast membership: join each line's group on the feed's interface, IGMP or SSM.

XDP takes the packets before the kernel's UDP stack sees them, but the network still has to
send them: switches with IGMP snooping and multicast routers forward a group onto a port only
when a host there has joined it. So the agent keeps one kernel socket open with the joins
(MCAST_JOIN_GROUP, or MCAST_JOIN_SOURCE_GROUP for source-specific multicast) for as long as the
feed runs. The socket is never bound, so it never queues a packet. Closing it (or the agent
dying) leaves the groups: the kernel owns this state, so there is nothing to journal.
"""
from __future__ import annotations

import socket
import struct
import sys

# From <linux/in.h>; Python's socket module lacks these protocol-independent options.
MCAST_JOIN_GROUP = 42
MCAST_JOIN_SOURCE_GROUP = 46
_SOCKADDR_STORAGE = 128


def _sockaddr_in(address: str) -> bytes:
    raw = struct.pack("=HH4s", socket.AF_INET, 0, socket.inet_aton(address))
    return raw.ljust(_SOCKADDR_STORAGE, b"\0")


def group_req(ifindex: int, group: str) -> bytes:
    # struct group_req { __u32 gr_interface; struct sockaddr_storage gr_group; }: the storage is
    # 8-byte aligned, hence 4 bytes of padding after the index.
    return struct.pack("=I4x", ifindex) + _sockaddr_in(group)


def group_source_req(ifindex: int, group: str, source: str) -> bytes:
    return struct.pack("=I4x", ifindex) + _sockaddr_in(group) + _sockaddr_in(source)


class Memberships:
    def __init__(self, ifname: str):
        self.ifname = ifname
        self.joined: list[tuple[str, str | None]] = []
        self._sock: socket.socket | None = None

    def join(self, group: str, source: str | None = None) -> None:
        if self._sock is None:
            self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        ifindex = socket.if_nametoindex(self.ifname)
        if source:
            self._sock.setsockopt(socket.IPPROTO_IP, MCAST_JOIN_SOURCE_GROUP,
                                  group_source_req(ifindex, group, source))
        else:
            self._sock.setsockopt(socket.IPPROTO_IP, MCAST_JOIN_GROUP, group_req(ifindex, group))
        self.joined.append((group, source))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self.joined.clear()


def kernel_groups(ifname: str, root: str = "/") -> set[str]:
    """Groups joined on `ifname` as the kernel reports them (/proc/net/igmp, this netns)."""
    groups: set[str] = set()
    device = None
    with open(f"{root.rstrip('/')}/proc/net/igmp", encoding="ascii") as f:
        for line in f.read().splitlines()[1:]:
            fields = line.split()
            if not fields:
                continue
            if not line[0].isspace():          # "2\teth0      :     1      V3"
                # "%-10s:" leaves no space before the colon from 10 characters on ("5\tenp129s0f1:");
                # a device name never holds a colon.
                device = line.split(":", 1)[0].split()[1]
            elif device == ifname:             # "\t\t\t\tE8010101     1 0:00000000\t\t0"
                # printed as a host-order u32 of a network-order address
                groups.add(socket.inet_ntoa(int(fields[0], 16).to_bytes(4, sys.byteorder)))
    return groups


def kernel_sources(ifname: str, root: str = "/") -> set[tuple[str, str]]:
    """(group, source) pairs of SSM joins on `ifname` (/proc/net/mcfilter, this netns).

    That table cuts device names to 6 characters, so rows are matched by interface index."""
    pairs = set()
    index = str(ifindex(ifname, root))
    with open(f"{root.rstrip('/')}/proc/net/mcfilter", encoding="ascii") as f:
        for line in f.read().splitlines()[1:]:
            fields = line.split()
            if len(fields) >= 4 and fields[0] == index:
                # printed with ntohl(): big-endian value
                group = socket.inet_ntoa(int(fields[2], 16).to_bytes(4, "big"))
                source = socket.inet_ntoa(int(fields[3], 16).to_bytes(4, "big"))
                pairs.add((group, source))
    return pairs


def ifindex(ifname: str, root: str = "/") -> int:
    with open(f"{root.rstrip('/')}/sys/class/net/{ifname}/ifindex", encoding="ascii") as f:
        return int(f.read())
