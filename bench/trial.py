"""One trial: a generator sends N packets at a rate, a running receiver takes them, we compare.

A receiver runs for many trials; each is read as the difference between a snapshot before and
one after (cumulative counters and histograms), so no restart sits between trials. Sequence
numbers continue from trial to trial, whichever generator sends. A trial is clean ("zero loss")
when the receiver counted every message sent, by type, with nothing malformed or duplicated (a
receiver that counts packets only, DPDK's testpmd, must have every packet and no ring misses).

Two generators, one interface (`send(rate_pps, packets) -> ledger`):
  Blast      `tickwire-feed blast`'s in-kernel generator (XDP live frames), the default: it
             reaches ~2 M packets/s from one core, so the receivers are what is measured;
  Publisher  bench/publisher.c, AF_PACKET + sendmmsg, ~350k packets/s: a kernel sender, whose
             frames reach the veth as skbs (the XDP mode comparison needs both).

CPU: the receiver's threads (schedstat, per thread, with the CPU each is pinned to) and every
CPU's softirq and busy time (/proc/stat) are read right before the generator starts and right
after it ends, so a spinning receiver is charged for the sending window, not for the settling.
On veth the kernel's receive work runs in softirq on the SENDING CPU (the veth's NAPI is driven
by the transmit), so "receive CPU" = the receiver's threads + softirq on both CPUs.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field

from tickwire_demo.localnet import VethPair
from tickwire_feed import blast as feed_blast

from . import histogram
from .receivers import Receiver

SETTLE_QUIET_S = 0.25  # counts unchanged this long after the generator ended: the receiver is done
SETTLE_MAX_S = 3.0


@dataclass(frozen=True)
class FeedAddress:
    group: str = "239.77.0.1"
    port: int = 30077


class Sequence:
    """The MoldUDP64 sequence both generators continue, so a receiver sees one gap-free session."""

    def __init__(self) -> None:
        self.next = 1


class Generator:
    name = "?"

    def __init__(self, pair: VethPair, template_path: str, address: FeedAddress, midnight_ns: int,
                 cpu: int, sequence: Sequence):
        self.pair, self.template_path, self.address = pair, template_path, address
        self.midnight_ns, self.cpu, self.sequence = midnight_ns, cpu, sequence

    def command(self, rate_pps: float, packets: int, budget_s: float) -> list[str]:
        raise NotImplementedError

    def send(self, rate_pps: float, packets: int) -> dict:
        budget = packets / rate_pps * 2 + 5   # the sender's own cap, so no run can hang
        result = self.pair.run(self.pair.exchange_ns, *self.command(rate_pps, packets, budget),
                               timeout=budget + 10)
        summary = json.loads(result.stdout)
        self.sequence.next = summary["next_seq"]
        summary["generator"] = self.name
        return summary


class Publisher(Generator):
    """bench/publisher.c in the exchange namespace, pinned to its CPU."""
    name = "publisher"

    def __init__(self, binary: str, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.binary = binary

    def command(self, rate_pps: float, packets: int, budget_s: float) -> list[str]:
        return [self.binary, "--iface", self.pair.exchange_if, "--src-ip", self.pair.exchange_ip,
                "--group", self.address.group, "--port", str(self.address.port),
                "--template", self.template_path, "--midnight-ns", str(self.midnight_ns),
                "--rate", f"{rate_pps:.1f}", "--packets", str(packets), "--duration", f"{budget_s:.1f}",
                "--start-seq", str(self.sequence.next), "--core", str(self.cpu)]


class Blast(Generator):
    """tickwire-feed blast's loader in the exchange namespace, attached in native mode to an idle
    veth there (`idle_iface`) so no call pays the XDP dispatcher swap."""
    name = "blast"

    def __init__(self, idle_iface: str, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.idle_iface = idle_iface

    def command(self, rate_pps: float, packets: int, budget_s: float) -> list[str]:
        return [feed_blast.LOADER, "--iface", self.pair.exchange_if, "--idle-iface", self.idle_iface,
                "--pool", self.template_path, "--src-ip", self.pair.exchange_ip,
                "--group", self.address.group, "--port", str(self.address.port),
                "--midnight-ns", str(self.midnight_ns), "--rate", f"{rate_pps:.1f}",
                "--packets", str(packets), "--duration", f"{budget_s:.1f}",
                "--start-seq", str(self.sequence.next), "--core", str(self.cpu),
                "--bpf-object", feed_blast.BPF_OBJECT]


def cpu_times() -> dict[str, dict[str, float]]:
    """Per CPU, seconds of softirq and of busy time (everything but idle and iowait), /proc/stat.
    Without CONFIG_IRQ_TIME_ACCOUNTING these are sampled by the scheduler tick: +-1 tick."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            parts = line.split()
            if parts[0].startswith("cpu") and parts[0] != "cpu":
                v = [int(x) for x in parts[1:9]]
                out[parts[0]] = {"softirq": v[6] / tick, "busy": (sum(v) - v[3] - v[4]) / tick}
    return out


def kernel_drop_counters(pair: VethPair) -> dict[str, int]:
    """Where the kernel dropped packets in the node namespace: the veth's receive queue and the
    UDP sockets' buffers (/proc/net/snmp)."""
    out = pair.run(pair.node_ns, "sh", "-c", f"cat /sys/class/net/{pair.node_if}/statistics/rx_dropped; "
                   "grep '^Udp:' /proc/net/snmp").stdout.split("\n")
    counters = {"veth_rx_dropped": int(out[0])}
    udp = [line.split()[1:] for line in out[1:3]]
    if len(udp) == 2:
        named = dict(zip(udp[0], map(int, udp[1])))
        counters["udp_rcvbuf_errors"] = named.get("RcvbufErrors", 0)
        counters["udp_in_errors"] = named.get("InErrors", 0)
    return counters


def _ring_counters(stats: dict) -> dict[str, int]:
    """AF_XDP ring counters: the engine's XDP_STATISTICS, testpmd's RX-missed."""
    out = {f"xsk_{k}": v for k, v in (stats.get("ring") or {}).items() if isinstance(v, int)}
    if "xsk_missed" in stats:
        out["xsk_missed"] = stats["xsk_missed"]
    return out


@dataclass
class TrialResult:
    target_pps: float
    sent_packets: int
    sent_messages: int
    pkts_per_s: float          # achieved by the generator
    msgs_per_s: float
    elapsed_s: float
    received_messages: int     # packet-counting receivers: sent messages scaled by packets received
    counts_match: bool         # received messages by type == sent by type (packets: all, no misses)
    malformed: int
    duplicates: int
    receiver_cpu_s: float
    softirq_s: dict[str, float]
    latency_buckets: list[list[int]] = field(repr=False)
    latency_max_ns: int = 0    # cumulative max if it grew in this trial, else the top bucket's bound
    drops: dict[str, int] = field(default_factory=dict)  # where packets were dropped, nonzero only
    generator: str = "publisher"
    counted: str = "messages"  # what the receiver counts: "messages" (by type) or "packets"
    received_packets: int = 0
    receiver_cpu_by_cpu_s: dict[str, float] = field(default_factory=dict)
    busy_s: dict[str, float] = field(default_factory=dict)   # every CPU's busy time: context, noisy
    generator_cpu_s: float = 0.0

    @property
    def lost_messages(self) -> int:
        return self.sent_messages - self.received_messages

    @property
    def zero_loss(self) -> bool:
        return self.lost_messages == 0 and self.counts_match and not self.malformed and not self.duplicates

    @property
    def receive_cpu_s(self) -> float:
        """The receiver's own threads plus the kernel's receive work (softirq, every CPU)."""
        return self.receiver_cpu_s + sum(self.softirq_s.values())

    @property
    def cpu_us_per_packet(self) -> float | None:
        return self.receive_cpu_s / self.sent_packets * 1e6 if self.sent_packets else None

    def to_dict(self, with_buckets: bool = False) -> dict:
        d = asdict(self)
        if not with_buckets:
            d.pop("latency_buckets")
        d["lost_messages"] = self.lost_messages
        d["zero_loss"] = self.zero_loss
        d["receive_cpu_s"] = round(self.receive_cpu_s, 4)
        d["cpu_us_per_packet"] = self.cpu_us_per_packet
        return d


def _latency(stats: dict) -> dict:
    return stats["latency"]["exchange_to_engine"]["lines"]["A"]


def _settle(receiver: Receiver, before: dict, expected: int, key: str) -> dict:
    """Snapshots until the receiver has every message (packet) or its counts stop moving; bounded."""
    deadline = time.monotonic() + SETTLE_MAX_S
    last, quiet_since = None, time.monotonic()
    while True:
        stats = receiver.snapshot()
        got = stats[key] - before[key]
        if got >= expected or time.monotonic() > deadline:
            return stats
        moving = (stats["packets"], stats.get("messages"))
        if moving != last:
            last, quiet_since = moving, time.monotonic()
        elif time.monotonic() - quiet_since > SETTLE_QUIET_S:
            return stats
        time.sleep(0.02)


def by_type_delta(after: dict, before: dict) -> dict[str, int]:
    earlier = before.get("messages_by_type", {})
    delta = {t: n - earlier.get(t, 0) for t, n in after.get("messages_by_type", {}).items()}
    return {t: n for t, n in delta.items() if n}


def _cpu_by_cpu(before: dict, after: dict) -> dict[str, float]:
    """The receiver's CPU time per CPU its threads are pinned to ("unpinned" otherwise)."""
    out: dict[str, float] = {}
    for tid, (ns, cpus) in after.items():
        used = ns - before.get(tid, (0, cpus))[0]
        where = f"cpu{next(iter(cpus))}" if len(cpus) == 1 else "unpinned"
        out[where] = round(out.get(where, 0.0) + used / 1e9, 4)
    return out


def run_trial(generator: Generator, receiver: Receiver, rate_pps: float, seconds: float) -> TrialResult:
    packets = max(1, round(rate_pps * seconds))
    pair = generator.pair
    before = receiver.snapshot()
    kernel0 = kernel_drop_counters(pair)
    stat0, threads0 = cpu_times(), receiver.cpu_by_thread()
    sent = generator.send(rate_pps, packets)
    threads1, stat1 = receiver.cpu_by_thread(), cpu_times()
    counts_messages = receiver.counts_messages
    after = _settle(receiver, before, sent["messages"] if counts_messages else sent["packets"],
                    "messages" if counts_messages else "packets")
    kernel1 = kernel_drop_counters(pair)
    drops = {k: kernel1[k] - kernel0.get(k, 0) for k in kernel1}
    ring0 = _ring_counters(before)
    drops.update({k: v - ring0.get(k, 0) for k, v in _ring_counters(after).items()})
    if sent.get("refused"):
        drops["veth_refused"] = sent["refused"]   # frames the exchange veth refused (blast counts them)
    received_packets = after["packets"] - before["packets"]

    if counts_messages:
        lat_before, lat_after = _latency(before), _latency(after)
        buckets = histogram.subtract(lat_after["buckets"], lat_before["buckets"])
        top = lat_after["max"] if lat_after["max"] > lat_before["max"] else (buckets[-1][1] if buckets else 0)
        received = after["messages"] - before["messages"]
        counts_match = by_type_delta(after, before) == sent["messages_by_type"]
        malformed = after["malformed"] - before["malformed"]
        duplicates = after["duplicates"] - before["duplicates"]
    else:
        # Counts packets only (and sees the node's own few IGMP/ND packets too): clean when every
        # packet sent arrived and the ring missed none.
        buckets, top, malformed, duplicates = [], 0, 0, 0
        counts_match = received_packets >= sent["packets"] and not drops.get("xsk_missed")
        share = min(1.0, received_packets / sent["packets"]) if sent["packets"] else 1.0
        received = sent["messages"] if counts_match else round(sent["messages"] * share)
    return TrialResult(
        target_pps=rate_pps, sent_packets=sent["packets"], sent_messages=sent["messages"],
        pkts_per_s=sent["pkts_per_s"], msgs_per_s=sent["msgs_per_s"], elapsed_s=sent["elapsed_s"],
        received_messages=received, counts_match=counts_match, malformed=malformed,
        duplicates=duplicates,
        receiver_cpu_s=sum(ns - threads0.get(t, (0,))[0] for t, (ns, _) in threads1.items()) / 1e9,
        softirq_s={c: round(stat1[c]["softirq"] - stat0[c]["softirq"], 3) for c in stat1},
        latency_buckets=buckets, latency_max_ns=top, drops={k: v for k, v in drops.items() if v},
        generator=sent.get("generator", "?"), counted="messages" if counts_messages else "packets",
        received_packets=received_packets, receiver_cpu_by_cpu_s=_cpu_by_cpu(threads0, threads1),
        busy_s={c: round(stat1[c]["busy"] - stat0[c]["busy"], 3) for c in stat1},
        generator_cpu_s=sent.get("cpu_s", 0.0))
