"""AF_XDP sockets bound to an interface's queues, as the kernel lists them (sock_diag).

The kernel refuses to take away RX channels that an AF_XDP socket's buffer pool is still
registered on (`ethtool -L` fails with EINVAL, "too low for existing AF_XDP sockets"). After the
engine exits, its socket is released and its pool unregistered in the background, a few
milliseconds later, and the agent's channel restore used to race that (5-30% of stops). So before
lowering the channel count the agent waits, bounded, until no socket is bound to a queue that
goes away (this module), and then retries EINVAL for a bounded time: the pool outlives the
socket's entry in this list by a workqueue run.

The query is NETLINK_SOCK_DIAG for family AF_XDP (what `ss --xdp` uses); it sees the sockets of
this network namespace, which is where the engine runs (the agent's own).
"""
from __future__ import annotations

import os
import socket
import struct
import time

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
AF_XDP = 44
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
XDP_SHOW_INFO = 1
XDP_DIAG_INFO = 1

_NLMSGHDR = struct.Struct("=IHHII")
_XDP_DIAG_REQ = struct.Struct("=BBHII8x")      # family, protocol, pad, ino, show, cookie[2]
_XDP_DIAG_MSG = struct.Struct("=BBHI8x")       # family, type, pad, ino, cookie[2]
_NLATTR = struct.Struct("=HH")
_XDP_DIAG_INFO = struct.Struct("=II")          # ifindex, queue_id


def dump_request(seq: int = 1) -> bytes:
    body = _XDP_DIAG_REQ.pack(AF_XDP, 0, 0, 0, XDP_SHOW_INFO)
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP,
                          seq, 0) + body


def parse_dump(data: bytes) -> tuple[list[tuple[int, int, int]], bool]:
    """[(inode, ifindex, queue)] from one recv() of the dump, and whether the dump is done."""
    found, offset, done = [], 0, False
    while offset + _NLMSGHDR.size <= len(data):
        length, kind, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size:
            break
        if kind == NLMSG_DONE:
            done = True
        elif kind == NLMSG_ERROR:
            error = struct.unpack_from("=i", data, offset + _NLMSGHDR.size)[0]
            if error:
                raise OSError(-error, f"sock_diag AF_XDP: {os.strerror(-error)}")
            done = True
        elif kind == SOCK_DIAG_BY_FAMILY:
            body = offset + _NLMSGHDR.size
            _family, _type, _pad, inode = _XDP_DIAG_MSG.unpack_from(data, body)
            attr = body + _XDP_DIAG_MSG.size
            while attr + _NLATTR.size <= offset + length:
                alen, atype = _NLATTR.unpack_from(data, attr)
                if alen < _NLATTR.size:
                    break
                if atype == XDP_DIAG_INFO:
                    ifindex, queue = _XDP_DIAG_INFO.unpack_from(data, attr + _NLATTR.size)
                    found.append((inode, ifindex, queue))
                attr += (alen + 3) & ~3
        offset += (length + 3) & ~3
    return found, done


def bound_sockets() -> list[tuple[int, int, int]]:
    """Every bound AF_XDP socket of this network namespace: [(inode, ifindex, queue)]."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG) as nl:
        nl.settimeout(5.0)
        nl.send(dump_request())
        found: list[tuple[int, int, int]] = []
        while True:
            part, done = parse_dump(nl.recv(65536))
            found += part
            if done:
                return found


def queues_in_use(ifname: str) -> set[int]:
    """Queues of `ifname` an AF_XDP socket is bound to."""
    index = socket.if_nametoindex(ifname)
    return {queue for _inode, ifindex, queue in bound_sockets() if ifindex == index}


def wait_until_free(ifname: str, first_queue: int, timeout: float) -> set[int]:
    """Wait until no AF_XDP socket is bound to a queue >= `first_queue` of `ifname`, at most
    `timeout` seconds; returns the queues still in use then (empty: free)."""
    deadline = time.monotonic() + timeout
    while True:
        busy = {q for q in queues_in_use(ifname) if q >= first_queue}
        if not busy or time.monotonic() >= deadline:
            return busy
        time.sleep(0.02)
