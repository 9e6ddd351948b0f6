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
    soft0, cpu0 = softirq_seconds(), receiver.cpu_ns()
    sent = publisher.send(rate_pps, packets)
    cpu1, soft1 = receiver.cpu_ns(), softirq_seconds()
    after = _settle(receiver, before, sent["messages"])

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
        latency_buckets=buckets, latency_max_ns=top)
