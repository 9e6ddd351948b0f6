"""One trial: the publisher sends N packets at a rate, a running receiver takes them, we compare.

A receiver runs for many trials; each is read as the difference between a snapshot before and
one after (cumulative counters and histograms), so no restart sits between trials. Sequence
numbers continue from trial to trial. A trial is clean ("zero loss") when the receiver counted
every message sent, by type, with nothing malformed or duplicated.

CPU time is read from /proc for the receiver process right before the publisher starts and right
after it ends, so a spinning receiver is charged for the sending window, not for the settling.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field

from tickwire_demo.localnet import VethPair

from . import histogram
from .receivers import Receiver

SETTLE_QUIET_S = 0.25  # counts unchanged this long after the publisher ended: the receiver is done
SETTLE_MAX_S = 3.0


@dataclass(frozen=True)
class FeedAddress:
    group: str = "239.77.0.1"
    port: int = 30077


class Publisher:
    """bench/publisher.c in the exchange namespace, pinned to its CPU."""

    def __init__(self, pair: VethPair, binary: str, template_path: str, address: FeedAddress,
                 midnight_ns: int, cpu: int):
        self.pair, self.binary, self.template_path = pair, binary, template_path
        self.address, self.midnight_ns, self.cpu = address, midnight_ns, cpu
        self.next_seq = 1

    def send(self, rate_pps: float, packets: int) -> dict:
        budget = packets / rate_pps * 2 + 5   # the publisher's own cap, so no run can hang
        result = self.pair.run(
            self.pair.exchange_ns, self.binary, "--iface", self.pair.exchange_if,
            "--src-ip", self.pair.exchange_ip, "--group", self.address.group,
            "--port", str(self.address.port), "--template", self.template_path,
            "--midnight-ns", str(self.midnight_ns), "--rate", f"{rate_pps:.1f}",
            "--packets", str(packets), "--duration", f"{budget:.1f}",
            "--start-seq", str(self.next_seq), "--core", str(self.cpu), timeout=budget + 10)
        summary = json.loads(result.stdout)
        self.next_seq = summary["next_seq"]
        return summary


def softirq_seconds() -> dict[str, float]:
    """Softirq time per CPU from /proc/stat (the kernel's receive work shows up here)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            parts = line.split()
            if parts[0].startswith("cpu") and parts[0] != "cpu":
                out[parts[0]] = int(parts[7]) / tick
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
    """The engine's AF_XDP ring counters (XDP_STATISTICS), when the receiver has them."""
    return {f"xsk_{k}": v for k, v in (stats.get("ring") or {}).items() if isinstance(v, int)}


@dataclass
class TrialResult:
    target_pps: float
    sent_packets: int
    sent_messages: int
    pkts_per_s: float          # achieved by the publisher
    msgs_per_s: float
    elapsed_s: float
    received_messages: int
    counts_match: bool         # received messages by type == sent by type
    malformed: int
    duplicates: int
    receiver_cpu_s: float
    softirq_s: dict[str, float]
    latency_buckets: list[list[int]] = field(repr=False)
    latency_max_ns: int = 0    # cumulative max if it grew in this trial, else the top bucket's bound
    drops: dict[str, int] = field(default_factory=dict)  # where packets were dropped, nonzero only

    @property
    def lost_messages(self) -> int:
        return self.sent_messages - self.received_messages

    @property
    def zero_loss(self) -> bool:
        return self.lost_messages == 0 and self.counts_match and not self.malformed and not self.duplicates

    def to_dict(self, with_buckets: bool = False) -> dict:
        d = asdict(self)
        if not with_buckets:
            d.pop("latency_buckets")
        d["lost_messages"] = self.lost_messages
        d["zero_loss"] = self.zero_loss
        return d


def _latency(stats: dict) -> dict:
    return stats["latency"]["exchange_to_engine"]["lines"]["A"]


def _settle(receiver: Receiver, before: dict, expected_messages: int) -> dict:
    """Snapshots until the receiver has every message or its counts stop moving; bounded."""
    deadline = time.monotonic() + SETTLE_MAX_S
    last, quiet_since = None, time.monotonic()
    while True:
        stats = receiver.snapshot()
        got = stats["messages"] - before["messages"]
        if got >= expected_messages or time.monotonic() > deadline:
            return stats
        key = (stats["packets"], stats["messages"])
        if key != last:
            last, quiet_since = key, time.monotonic()
        elif time.monotonic() - quiet_since > SETTLE_QUIET_S:
            return stats
        time.sleep(0.02)


def by_type_delta(after: dict, before: dict) -> dict[str, int]:
    earlier = before.get("messages_by_type", {})
    delta = {t: n - earlier.get(t, 0) for t, n in after.get("messages_by_type", {}).items()}
    return {t: n for t, n in delta.items() if n}


def run_trial(publisher: Publisher, receiver: Receiver, rate_pps: float, seconds: float) -> TrialResult:
    packets = max(1, round(rate_pps * seconds))
    before = receiver.snapshot()
    kernel0 = kernel_drop_counters(publisher.pair)
    soft0, cpu0 = softirq_seconds(), receiver.cpu_ns()
    sent = publisher.send(rate_pps, packets)
    cpu1, soft1 = receiver.cpu_ns(), softirq_seconds()
    after = _settle(receiver, before, sent["messages"])
    kernel1 = kernel_drop_counters(publisher.pair)
    drops = {k: kernel1[k] - kernel0.get(k, 0) for k in kernel1}
    ring0 = _ring_counters(before)
    drops.update({k: v - ring0.get(k, 0) for k, v in _ring_counters(after).items()})

    lat_before, lat_after = _latency(before), _latency(after)
    buckets = histogram.subtract(lat_after["buckets"], lat_before["buckets"])
    if lat_after["max"] > lat_before["max"]:
        top = lat_after["max"]           # the largest value ever seen arrived in this trial
    else:
        top = buckets[-1][1] if buckets else 0
    return TrialResult(
        target_pps=rate_pps, sent_packets=sent["packets"], sent_messages=sent["messages"],
        pkts_per_s=sent["pkts_per_s"], msgs_per_s=sent["msgs_per_s"], elapsed_s=sent["elapsed_s"],
        received_messages=after["messages"] - before["messages"],
        counts_match=by_type_delta(after, before) == sent["messages_by_type"],
        malformed=after["malformed"] - before["malformed"],
        duplicates=after["duplicates"] - before["duplicates"],
        receiver_cpu_s=(cpu1 - cpu0) / 1e9,
        softirq_s={cpu: round(soft1[cpu] - soft0.get(cpu, 0), 3) for cpu in soft1},
        latency_buckets=buckets, latency_max_ns=top, drops={k: v for k, v in drops.items() if v})
