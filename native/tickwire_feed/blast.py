"""`tickwire-feed blast`: the feed generated inside the kernel, for rates a user-space sender cannot reach.

    summary = blast(BlastConfig(iface="veth0", group="239.1.1.1", port=26477, packets=1_000_000,
                                rate_pps=1_000_000))

An XDP program (native/bpf/blast.bpf.c) builds every frame from a prepared pool (pool.py),
writes its MoldUDP64 sequence number from a global counter and stamps its ITCH messages, then
redirects it onto `iface`, run by BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES (kernel
>= 5.18) from a small libbpf loader (native/blast/blast.c, built beside this module as `blast`).
The loader paces the calls; the program counts what it sent, so the ledger returned here is
exact: packets, messages, messages by type, and the next sequence number.

Two conditions of the path, both silent when missed, are handled or checked here:
- the generator must stay attached in native mode on an idle interface, or each call pays ~25 ms
  for the kernel's XDP dispatcher swap: unless `idle_iface` is given, a veth pair made for the
  run (and deleted after it) serves;
- veth drops redirected frames unless the RECEIVING peer has a native XDP program or GRO on. That
  peer is usually in another namespace, so the caller sets it up (`ethtool -K PEER gro on`). veth
  keeps no counter of those drops; the generator counts them itself (the kernel's xdp_devmap_xmit
  tracepoint) and the summary's `refused` says how many frames the device did not take.
"""
from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import socket
import struct
import subprocess
import tempfile
from dataclasses import dataclass

from .clock import midnight_realtime_ns
from .pool import SESSION, make_pool

HERE = os.path.dirname(os.path.abspath(__file__))
LOADER = os.path.join(HERE, "blast")
BPF_OBJECT = os.path.join(HERE, "blast.bpf.o")
SIOCGIFADDR = 0x8915


class BlastError(RuntimeError):
    """The generator could not run; nothing (or only what the summary says) was sent."""


class ConfigError(BlastError, ValueError):
    """Options that cannot work; nothing was sent."""


@dataclass
class BlastConfig:
    iface: str                       # where frames go out: the exchange side of a veth
    group: str
    port: int
    packets: int | None = None
    duration_s: float | None = None
    rate_pps: float = 0.0            # packets per second; 0 = as fast as the core can
    per_packet: int = 4              # mean ITCH messages per packet (1..2*mean-1)
    mix: str = "default"
    pool_packets: int = 4096
    seed: int = 1
    session: str = SESSION
    start_seq: int = 1
    source_ip: str | None = None     # default: the interface's IPv4 address
    exchange_tz: str | None = "America/New_York"
    midnight_ns: int | None = None   # overrides exchange_tz (the bench fixes it for every party)
    core: int | None = None
    idle_iface: str | None = None
    burst: int = 256                 # frames per BPF_PROG_TEST_RUN call at most
    kernel_batch: int = 64           # frames the kernel redirects before it flushes the veth
    summary_json: str | None = None

    def validate(self) -> None:
        if (self.packets is None) == (self.duration_s is None):
            raise ConfigError("give exactly one of packets and duration_s")
        if self.packets is not None and self.packets < 1:
            raise ConfigError(f"packets {self.packets}: must be at least 1")
        if self.duration_s is not None and self.duration_s <= 0:
            raise ConfigError(f"duration {self.duration_s}: must be positive")
        if self.rate_pps < 0:
            raise ConfigError(f"rate {self.rate_pps} packets/s: must be >= 0 (0: flat out)")
        try:
            group = ipaddress.IPv4Address(self.group)
        except ValueError:
            raise ConfigError(f"group {self.group!r} is not an IPv4 address") from None
        if not group.is_multicast:
            raise ConfigError(f"group {self.group} is not a multicast address (224.0.0.0/4)")
        if not 1 <= self.port <= 65535:
            raise ConfigError(f"port {self.port} is out of range 1-65535")
        if not 1 <= self.kernel_batch <= 256:
            raise ConfigError(f"kernel batch {self.kernel_batch}: the kernel takes 1..256")
        if self.burst < 1:
            raise ConfigError(f"burst {self.burst}: must be at least 1")
        if self.start_seq < 1:
            raise ConfigError(f"start sequence number {self.start_seq}: must be at least 1")
        try:
            socket.if_nametoindex(self.iface)
        except OSError:
            raise ConfigError(f"unknown interface {self.iface!r} in this network namespace") from None


def interface_ipv4(iface: str) -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            answer = fcntl.ioctl(s.fileno(), SIOCGIFADDR, struct.pack("256s", iface.encode()[:15]))
        except OSError:
            return None
    return socket.inet_ntoa(answer[20:24])


def loader_command(config: BlastConfig, pool_path: str, idle_iface: str, source_ip: str,
                   midnight_ns: int) -> list[str]:
    cmd = [LOADER, "--iface", config.iface, "--idle-iface", idle_iface, "--pool", pool_path,
           "--src-ip", source_ip, "--group", config.group, "--port", str(config.port),
           "--midnight-ns", str(midnight_ns), "--rate", f"{config.rate_pps:.1f}",
           "--start-seq", str(config.start_seq), "--burst", str(config.burst),
           "--kernel-batch", str(config.kernel_batch), "--bpf-object", BPF_OBJECT]
    cmd += ["--packets", str(config.packets)] if config.packets else ["--duration", f"{config.duration_s}"]
    if config.core is not None:
        cmd += ["--core", str(config.core)]
    return cmd


class IdleVeth:
    """A veth pair that carries no traffic: the generator's native attachment (trap 1)."""

    def __init__(self) -> None:
        tag = f"{os.getpid() % 10_000_000}"
        self.name, self.peer = f"twbl{tag}a", f"twbl{tag}b"

    def __enter__(self) -> str:
        result = subprocess.run(["ip", "link", "add", self.name, "type", "veth", "peer", "name",
                                 self.peer], capture_output=True, text=True)
        if result.returncode != 0:
            raise BlastError(f"cannot create the idle veth {self.name} the generator attaches to: "
                             f"{result.stderr.strip()} (needs root)")
        return self.name

    def __exit__(self, *exc) -> None:
        subprocess.run(["ip", "link", "del", self.name], capture_output=True)


def run_loader(cmd: list[str], timeout: float) -> dict:
    """Runs the loader; its JSON summary, or BlastError with what it said."""
    if not os.access(LOADER, os.X_OK) or not os.path.exists(BPF_OBJECT):
        raise BlastError(f"the generator is not built ({LOADER}, {BPF_OBJECT}): run `make setup` "
                         "or `pip install -e .`")
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BlastError(f"the generator did not finish within {timeout:.0f} s") from None
    if result.returncode != 0:
        raise BlastError(f"the generator failed ({result.returncode}): {result.stderr.strip()}")
    summary = json.loads(result.stdout)
    if sum(summary["messages_by_type"].values()) != summary["messages"]:
        raise BlastError(f"ledger mismatch: the program counted {summary['messages']} messages, "
                         f"the pool accounts for {sum(summary['messages_by_type'].values())}")
    return summary


def blast(config: BlastConfig) -> dict:
    """Sends the feed; returns the ledger (also written to summary_json if set)."""
    config.validate()
    source_ip = config.source_ip or interface_ipv4(config.iface)
    if source_ip is None:
        raise ConfigError(f"{config.iface} has no IPv4 address: give a source address")
    midnight = config.midnight_ns if config.midnight_ns is not None else midnight_realtime_ns(config.exchange_tz)
    pool = make_pool(config.pool_packets, config.per_packet, config.mix, config.seed, config.session)
    expected_s = (config.duration_s or (config.packets / config.rate_pps if config.rate_pps else
                                        config.packets / 100_000))
    with tempfile.TemporaryDirectory(prefix="tickwire-blast-") as tmp:
        pool_path = os.path.join(tmp, "pool.bin")
        pool.write(pool_path)
        if config.idle_iface:
            summary = run_loader(loader_command(config, pool_path, config.idle_iface, source_ip, midnight),
                                 timeout=expected_s * 3 + 30)
        else:
            with IdleVeth() as idle:
                summary = run_loader(loader_command(config, pool_path, idle, source_ip, midnight),
                                     timeout=expected_s * 3 + 30)
    summary.update({"first_seq": config.start_seq, "last_seq": summary["next_seq"] - 1,
                    "session": config.session, "group": config.group, "port": config.port,
                    "midnight_ns": midnight, "generator": "xdp-live-frames"})
    if config.summary_json:
        with open(config.summary_json, "w") as out:
            json.dump(summary, out, indent=2, sort_keys=True)
    return summary
