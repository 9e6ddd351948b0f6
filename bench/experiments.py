"""The benchmark's two one-off experiments, run after the contenders' rounds.

xdp_modes  native against generic XDP for the engine, fed by each generator: the in-kernel
           generator redirects XDP frames (native mode takes them as they are; generic mode must
           build an skb first), the kernel sender (publisher.c) transmits skbs (native mode on
           veth must turn each into an XDP frame, generic mode runs on the skb it has). Same
           fixed rate, below the kernel sender's ceiling; the engine sleeps in poll() so its CPU
           time is its work, not its spinning. Says which mode wins with which sender, and why
           (where the CPU went: the engine's thread, or softirq beside the sender).
stall      the defaults hold the rate: at 1M packets/s the engine's process is stopped
           (SIGSTOP/SIGCONT) for 2 ms three times in one trial; its RX ring (4096 entries) and
           UMEM (8192 frames) must absorb ~2000 packets each time and lose nothing. A trial at the
           same rate without stalls comes first, so a loss the rate alone causes is told apart.
"""
from __future__ import annotations

import dataclasses
import os
import signal
import statistics
import threading
import time

from .receivers import CONTENDERS
from .trial import TrialResult

MODES_RATE_PPS = 200_000     # below the kernel sender's ~350k packets/s ceiling
STALL_RATE_PPS = 1_000_000
STALL_S = 0.002
STALLS = 3


def _per_packet(t: TrialResult) -> dict:
    n = t.sent_packets or 1
    return {"cpu_us_per_packet": round(t.receive_cpu_s / n * 1e6, 3),
            "receiver_us_per_packet": round(t.receiver_cpu_s / n * 1e6, 3),
            "softirq_us_per_packet": {c: round(s / n * 1e6, 3) for c, s in t.softirq_s.items()},
            "lost_messages": t.lost_messages, "pkts_per_s": round(t.pkts_per_s)}


def xdp_modes(bench, trial_s: float, repeats: int) -> dict:
    generators = {"blast": bench.blast, "publisher": bench.publisher}
    trials: dict[str, dict[str, list[TrialResult]]] = {g: {"native": [], "generic": []} for g in generators}
    for r in range(repeats):
        for mode in (("native", "generic") if r % 2 == 0 else ("generic", "native")):
            contender = dataclasses.replace(CONTENDERS["engine_poll"], key=f"engine_{mode}_poll",
                                            label=f"engine (AF_XDP {mode}, poll())", xdp_mode=mode)
            bench.log_line(f"xdp modes {r + 1}/{repeats}: {contender.label}")
            with bench.receiver_for(contender) as rx:
                bench.trial(rx, MODES_RATE_PPS, 0.1)                        # warm-up
                for name, generator in generators.items():
                    trials[name][mode].append(bench.trial(rx, MODES_RATE_PPS, trial_s, generator))
    summary, winners = {}, {}
    for name, by_mode in trials.items():
        summary[name] = {}
        for mode, ts in by_mode.items():
            cpu = statistics.median(t.receive_cpu_s / t.sent_packets * 1e6 for t in ts)
            typical = min(ts, key=lambda t: abs(t.receive_cpu_s / t.sent_packets * 1e6 - cpu))
            summary[name][mode] = {**_per_packet(typical), "cpu_us_per_packet": round(cpu, 3),
                                   "lost_messages": sum(t.lost_messages for t in ts)}
        native, generic = summary[name]["native"], summary[name]["generic"]
        winners[name] = "native" if native["cpu_us_per_packet"] < generic["cpu_us_per_packet"] else "generic"
    return {"rate_pps": MODES_RATE_PPS, "engine_waits": "poll()", "repeats": repeats,
            "summary": summary, "cheaper_mode": winners,
            "trials": {g: {m: [t.to_dict() for t in ts] for m, ts in bm.items()} for g, bm in trials.items()}}


class Staller(threading.Thread):
    """Stops a process for `stall_s`, `count` times, starting after `delay_s`, `every_s` apart."""

    def __init__(self, pid: int, delay_s: float, every_s: float, stall_s: float = STALL_S, count: int = STALLS):
        super().__init__(daemon=True)
        self.pid, self.delay_s, self.every_s, self.stall_s, self.count = pid, delay_s, every_s, stall_s, count
        self.stalls_ms: list[float] = []

    def run(self) -> None:
        time.sleep(self.delay_s)
        for _ in range(self.count):
            start = time.perf_counter()
            os.kill(self.pid, signal.SIGSTOP)
            while time.perf_counter() - start < self.stall_s:
                pass
            os.kill(self.pid, signal.SIGCONT)
            self.stalls_ms.append(round((time.perf_counter() - start) * 1e3, 3))
            time.sleep(self.every_s)


def stall(bench, trial_s: float) -> dict:
    contender = CONTENDERS["engine"]
    bench.log_line(f"stall: {contender.label}, {STALLS} x {STALL_S * 1e3:g} ms at {STALL_RATE_PPS:,} packets/s")
    with bench.receiver_for(contender) as rx:
        bench.trial(rx, STALL_RATE_PPS, 0.1)                               # warm-up
        control = bench.trial(rx, STALL_RATE_PPS, trial_s)
        staller = Staller(rx.proc.pid, delay_s=trial_s * 0.25, every_s=trial_s * 0.2)
        staller.start()
        stalled = bench.trial(rx, STALL_RATE_PPS, trial_s)
        staller.join(timeout=trial_s + 5)
    ring, frames = bench.feed.ring_size, 8192
    return {
        "rate_pps": STALL_RATE_PPS, "stall_ms": STALL_S * 1e3, "stalls_ms": staller.stalls_ms,
        "rx_ring_entries": ring, "umem_frames": frames,
        "packets_per_stall": round(STALL_RATE_PPS * STALL_S),
        "ring_headroom": round(ring / (STALL_RATE_PPS * max(staller.stalls_ms or [STALL_S * 1e3]) / 1e3), 2),
        "control": control.to_dict(), "stalled": stalled.to_dict(),
        "control_pkts_per_s": round(control.pkts_per_s), "stalled_pkts_per_s": round(stalled.pkts_per_s),
        "lost_messages": stalled.lost_messages, "control_lost_messages": control.lost_messages,
        "held": stalled.zero_loss,
    }
