"""Two network namespaces joined by a veth pair: the "exchange" side and the "node" side.

The local demo, the benchmarks and every netns test build on this. Names carry the pid and a counter so parallel runs never collide
(an interface name has at most 15 characters), and everything is deleted in `close()`, which the
context manager calls from a `finally`.

Addresses come from 198.18.0.0/15, the range RFC 2544 sets aside for benchmarking: only these
namespaces use them.
"""
from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from dataclasses import dataclass, field

_counter = itertools.count()


def netns_available() -> tuple[bool, str]:
    """Whether this process can create namespaces and veths (root, iproute2)."""
    if os.geteuid() != 0:
        return False, "needs root (network namespaces, veth, XDP)"
    if shutil.which("ip") is None:
        return False, "needs iproute2 (`ip`)"
    probe = f"tw-probe-{os.getpid()}"
    created = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if created.returncode != 0:
        return False, f"cannot create a network namespace: {created.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return True, ""


def sh(*cmd: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    result = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


@dataclass
class VethPair:
    """exchange_ns/exchange_if  <-- veth -->  node_ns/node_if"""

    queues: int = 1
    mtu: int = 1500
    tag: str = field(default_factory=lambda: f"{os.getpid()}{next(_counter)}")

    def __post_init__(self) -> None:
        n = int(self.tag) % 250 + 1
        self.exchange_ns = f"tw-ex-{self.tag}"
        self.node_ns = f"tw-nd-{self.tag}"
        self.exchange_if = f"twx{self.tag}"[:15]
        self.node_if = f"twn{self.tag}"[:15]
        self.exchange_ip = f"198.18.{n}.1"
        self.node_ip = f"198.18.{n}.2"
        self._created = False

    def create(self) -> "VethPair":
        ok, why = netns_available()
        if not ok:
            raise RuntimeError(why)
        sh("ip", "netns", "add", self.exchange_ns)
        self._created = True
        sh("ip", "netns", "add", self.node_ns)
        q = str(self.queues)
        sh("ip", "link", "add", self.exchange_if, "numtxqueues", q, "numrxqueues", q,
           "netns", self.exchange_ns, "type", "veth",
           "peer", "name", self.node_if, "numtxqueues", q, "numrxqueues", q, "netns", self.node_ns)
        for ns, ifname, ip in ((self.exchange_ns, self.exchange_if, self.exchange_ip),
                               (self.node_ns, self.node_if, self.node_ip)):
            self.run(ns, "ip", "link", "set", "lo", "up")
            self.run(ns, "ip", "link", "set", ifname, "mtu", str(self.mtu), "up")
            self.run(ns, "ip", "addr", "add", f"{ip}/24", "dev", ifname)
        # Multicast leaves the exchange through the veth; the node side needs the route too so
        # kernel sockets that join a group (baselines, the agent's IGMP join) use this interface.
        self.run(self.exchange_ns, "ip", "route", "add", "224.0.0.0/4", "dev", self.exchange_if)
        self.run(self.node_ns, "ip", "route", "add", "224.0.0.0/4", "dev", self.node_if)
        return self

    def run(self, ns: str, *cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        return sh("ip", "netns", "exec", ns, *cmd, check=check, timeout=timeout)

    def popen(self, ns: str, cmd: list[str], **kwargs) -> subprocess.Popen:
        return subprocess.Popen(["ip", "netns", "exec", ns, *cmd], **kwargs)

    def close(self) -> None:
        if not self._created:
            return
        for ns in (self.exchange_ns, self.node_ns):
            sh("ip", "netns", "del", ns, check=False)
        self._created = False

    def __enter__(self) -> "VethPair":
        try:
            return self.create()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc) -> None:
        self.close()
