"""Which RX queues of an interface have an AF_XDP buffer pool on them, as the kernel says.

The kernel refuses to take away RX channels that an AF_XDP socket's buffer pool is registered on
(`ethtool -L` fails with EINVAL, "too low for existing AF_XDP sockets"). After the engine exits,
its socket is released and its pool unregistered in the background, a little later, and the
agent's channel restore used to race that (5-30% of stops). So before lowering the channel count
the agent waits, bounded, until no pool is left on a queue that goes away.

The kernel's own answer is the netdev generic netlink family: `queue-get` reports a queue's
`xsk` attribute exactly while a pool is registered there, the very thing the channel change
checks (the sock_diag route, `ss --xdp`, lists sockets, not pools, and needs
CONFIG_XDP_SOCKETS_DIAG, which this project's test kernel lacks). Queues of a device that is
down are not listed; the caller's bounded retry of EINVAL covers that case and kernels without
the attribute.
"""
from __future__ import annotations

import os
import socket
import struct
import time

NETLINK_GENERIC = 16
GENL_ID_CTRL = 0x10
CTRL_CMD_GETFAMILY, CTRL_ATTR_FAMILY_ID, CTRL_ATTR_FAMILY_NAME = 3, 1, 2
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
# <linux/netdev.h>
NETDEV_CMD_QUEUE_GET = 10
NETDEV_A_QUEUE_ID, NETDEV_A_QUEUE_IFINDEX, NETDEV_A_QUEUE_TYPE, NETDEV_A_QUEUE_XSK = 1, 2, 3, 7
NETDEV_QUEUE_TYPE_RX = 0

_NLMSGHDR = struct.Struct("=IHHII")
_GENLMSGHDR = struct.Struct("=BBH")
_NLATTR = struct.Struct("=HH")


def _attr(kind: int, payload: bytes) -> bytes:
    raw = _NLATTR.pack(_NLATTR.size + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def _message(family: int, flags: int, cmd: int, attrs: bytes, seq: int) -> bytes:
    body = _GENLMSGHDR.pack(cmd, 1, 0) + attrs
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), family, flags, seq, 0) + body


def attributes(data: bytes, offset: int, end: int) -> dict[int, bytes]:
    found = {}
    while offset + _NLATTR.size <= end:
        length, kind = _NLATTR.unpack_from(data, offset)
        if length < _NLATTR.size:
            break
        found[kind & 0x3FFF] = data[offset + _NLATTR.size:offset + length]   # without NLA_F_NESTED
        offset += (length + 3) & ~3
    return found


def messages(data: bytes):
    """(type, genl attributes) of each netlink message in one recv(); raises on an error reply."""
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, kind, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size:
            return
        if kind == NLMSG_ERROR:
            error = struct.unpack_from("=i", data, offset + _NLMSGHDR.size)[0]
            if error:
                raise OSError(-error, os.strerror(-error))
            yield NLMSG_DONE, {}
        elif kind == NLMSG_DONE:
            yield NLMSG_DONE, {}
        else:
            start = offset + _NLMSGHDR.size + _GENLMSGHDR.size
            yield kind, attributes(data, start, offset + length)
        offset += (length + 3) & ~3


def _family_id(nl: socket.socket, name: str) -> int:
    nl.send(_message(GENL_ID_CTRL, NLM_F_REQUEST, CTRL_CMD_GETFAMILY,
                     _attr(CTRL_ATTR_FAMILY_NAME, name.encode() + b"\0"), 1))
    for _kind, attrs in messages(nl.recv(65536)):
        if CTRL_ATTR_FAMILY_ID in attrs:
            return struct.unpack("=H", attrs[CTRL_ATTR_FAMILY_ID][:2])[0]
    raise OSError(f"no generic netlink family {name!r}")


def pool_queues(ifname: str) -> set[int]:
    """RX queues of `ifname` (this network namespace) with an AF_XDP buffer pool registered."""
    index = socket.if_nametoindex(ifname)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC) as nl:
        nl.settimeout(5.0)
        family = _family_id(nl, "netdev")
        nl.send(_message(family, NLM_F_REQUEST | NLM_F_DUMP, NETDEV_CMD_QUEUE_GET,
                         _attr(NETDEV_A_QUEUE_IFINDEX, struct.pack("=I", index)), 2))
        queues = set()
        while True:
            for kind, attrs in messages(nl.recv(65536)):
                if kind == NLMSG_DONE:
                    return queues
                if (NETDEV_A_QUEUE_XSK in attrs
                        and struct.unpack("=I", attrs.get(NETDEV_A_QUEUE_TYPE, b"\0\0\0\0"))[0] == NETDEV_QUEUE_TYPE_RX
                        and struct.unpack("=I", attrs.get(NETDEV_A_QUEUE_IFINDEX, b"\0\0\0\0"))[0] == index):
                    queues.add(struct.unpack("=I", attrs[NETDEV_A_QUEUE_ID])[0])


def wait_until_free(ifname: str, first_queue: int, timeout: float) -> set[int]:
    """Wait until no AF_XDP pool is on a queue >= `first_queue` of `ifname`, at most `timeout`
    seconds; returns the queues still taken then (empty: free)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            busy = {q for q in pool_queues(ifname) if q >= first_queue}
        except OSError:      # no netdev family (old kernel): the caller's EINVAL retry decides
            return set()
        if not busy or time.monotonic() >= deadline:
            return busy
        time.sleep(0.02)
