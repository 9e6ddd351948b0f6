"""`make bench`: every contender on the same veth pair, the same feed, the same clocks, in one run.

    python -m bench.run [--quick] [--out bench/results] [--contenders engine,kernel_c,python]

For each contender (bench/receivers.py) and each repeat, with contenders interleaved and their
order rotated from repeat to repeat so that drift hits all alike:
  1. start the receiver in the node namespace, pinned to the receiver CPU;
  2. latency: a warm-up, then a trial at the fixed rate (--latency-rate messages/s);
  3. rate search: the highest packet rate with zero loss (bench/search.py), each trial
     `--trial-seconds` long; CPU time per million messages comes from the best clean trial.
Results go to OUT/latest.json, latest.md and latest.png (see bench/report.py, bench/plot.py).
"""
from __future__ import annotations

import argparse
import datetime
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass

from tickwire_demo.localnet import VethPair, netns_available

from . import placement, plot, report
from .build import BUILD_DIR, build
from .receivers import CONTENDERS, QUICK, Feed, Receiver, ReceiverError
from .search import TrialOutcome, find_zero_loss_rate
from .template import make_template
from .trial import FeedAddress, Publisher, TrialResult, run_trial

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
DAY_NS = 86_400 * 10**9


@dataclass(frozen=True)
class Profile:
    trial_s: float
    latency_s: float
    warmup_s: float
    repeats: int
    precision: float
    max_trials: int
    confirm_loss: int     # extra trials at a lossy rate before it counts as the limit
    contenders: tuple[str, ...]


PROFILES = {
    # Short trials, one repeat, the three headline contenders: checks the machinery in < 2 minutes.
    "quick": Profile(trial_s=0.3, latency_s=1.0, warmup_s=0.2, repeats=1, precision=1.3,
                     max_trials=12, confirm_loss=0, contenders=QUICK),
    "full": Profile(trial_s=1.5, latency_s=4.0, warmup_s=0.5, repeats=3, precision=1.1,
                    max_trials=20, confirm_loss=1, contenders=tuple(CONTENDERS)),
}


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def cpu_availability(cpu: int, seconds: float = 0.3) -> float:
    """Fraction of wall time a spinning thread on `cpu` actually ran: 1.0 on an idle machine,
    lower when other work (or the hypervisor) takes the CPU. Recorded, never corrected for."""
    old = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        start = last = time.perf_counter_ns()
        lost = 0
        end = start + int(seconds * 1e9)
        while last < end:
            now = time.perf_counter_ns()
            if now - last > 50_000:   # a hole: something else ran
                lost += now - last
            last = now
        return round(1 - lost / (last - start), 3)
    finally:
        os.sched_setaffinity(0, old)


def utc_midnight_ns() -> int:
    """The "exchange midnight" all parties use (the engine gets --exchange-tz UTC)."""
    return time.time_ns() // DAY_NS * DAY_NS


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="short smoke run (< 2 minutes)")
    p.add_argument("--out", default=RESULTS_DIR, help="directory for latest.json/.md/.png")
    p.add_argument("--contenders", help=f"comma-separated subset of: {', '.join(CONTENDERS)}")
    p.add_argument("--repeats", type=int, help="rounds over all contenders (medians are reported)")
    p.add_argument("--trial-seconds", type=float, help="length of one rate-search trial")
    p.add_argument("--latency-rate", type=float, default=100_000, help="messages/s of the latency trial")
    p.add_argument("--per-packet", type=int, default=4, help="mean ITCH messages per MoldUDP64 packet")
    p.add_argument("--start-pps", type=float, default=10_000, help="first rate the search tries")
    p.add_argument("--publisher-cpu", type=int, default=0)
    p.add_argument("--receiver-cpu", type=int, default=1)
    p.add_argument("--rps-cpu", type=int, help="steer the veth's receive softirq to this CPU (default: RPS off)")
    args = p.parse_args(argv)
    profile = PROFILES["quick" if args.quick else "full"]
    args.contender_keys = tuple(args.contenders.split(",")) if args.contenders else profile.contenders
    unknown = [k for k in args.contender_keys if k not in CONTENDERS]
    if unknown:
        p.error(f"unknown contender(s) {', '.join(unknown)}: choose from {', '.join(CONTENDERS)}")
    args.repeats = args.repeats or profile.repeats
    args.trial_seconds = args.trial_seconds or profile.trial_s
    if args.repeats < 1 or args.trial_seconds <= 0 or args.latency_rate <= 0:
        p.error("--repeats, --trial-seconds and --latency-rate must be positive")
    args.profile = profile
    return args


class Bench:
    def __init__(self, args: argparse.Namespace, pair: VethPair, binaries: dict, template_path: str,
                 msgs_per_packet: float, workdir: str):
        self.args, self.pair, self.binaries, self.workdir = args, pair, binaries, workdir
        self.msgs_per_packet = msgs_per_packet
        self.midnight_ns = utc_midnight_ns()
        self.address = FeedAddress()
        self.publisher = Publisher(pair, binaries["publisher"], template_path, self.address,
                                   self.midnight_ns, args.publisher_cpu)
        self.feed = Feed(pair.node_if, self.address.group, self.address.port, self.midnight_ns,
                         cpu=args.receiver_cpu, housekeeping_cpu=args.publisher_cpu)
        self.repeats: dict[str, list[report.Repeat]] = {k: [] for k in args.contender_keys}
        self.errors: dict[str, str] = {}

    def trial(self, receiver: Receiver, rate_pps: float, seconds: float) -> TrialResult:
        t = run_trial(self.publisher, receiver, rate_pps, seconds)
        log(f"  {receiver.contender.key:<20} {t.pkts_per_s:>10,.0f} pkts/s {t.msgs_per_s:>11,.0f} msgs/s"
            f"  lost {t.lost_messages:>7,}  cpu {t.receiver_cpu_s:5.2f} s"
            f"  {'ok' if t.zero_loss else 'LOSS'}"
            + "".join(f"  {k} {v:,}" for k, v in t.drops.items()))
        return t

    def round(self, key: str) -> report.Repeat:
        contender, profile = CONTENDERS[key], self.args.profile
        stats_path = os.path.join(self.workdir, f"{key}.json")
        latency_pps = self.args.latency_rate / self.msgs_per_packet
        with Receiver(self.pair, contender, self.feed, stats_path, self.binaries["kernel_rx"]) as rx:
            self.trial(rx, latency_pps, profile.warmup_s)
            latency = self.trial(rx, latency_pps, profile.latency_s)
            previous = [r.search.best.target_pps for r in self.repeats[key] if r.search.best]
            start = max(500.0, min(previous) * 0.7) if previous else self.args.start_pps

            def outcome(rate: float) -> TrialOutcome[TrialResult]:
                t = self.trial(rx, rate, self.args.trial_seconds)
                return TrialOutcome(rate, t.pkts_per_s, t.zero_loss, t)

            search = find_zero_loss_rate(outcome, start, precision=profile.precision,
                                         max_trials=profile.max_trials, min_pps=200,
                                         confirm_loss=profile.confirm_loss)
        return report.Repeat(search, latency)

    def run(self) -> None:
        keys = list(self.args.contender_keys)
        for r in range(self.args.repeats):
            order = keys[r % len(keys):] + keys[:r % len(keys)]   # rotate: no one always goes first
            for key in order:
                if key in self.errors:
                    continue
                log(f"repeat {r + 1}/{self.args.repeats}: {CONTENDERS[key].label}")
                try:
                    self.repeats[key].append(self.round(key))
                except ReceiverError as exc:
                    if key in QUICK:
                        raise          # a headline contender that cannot run fails the benchmark
                    self.errors[key] = str(exc)
                    log(f"  {key} skipped: {exc}")

    def setup(self, place: dict, template_msgs: int, template_packets: int, noise: dict) -> dict:
        profile = self.args.profile
        return {
            "when": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "quick": self.args.quick,
            "repeats": self.args.repeats,
            "host": placement.host(),
            "placement": place,
            "noise": noise,
            "latency_rate_msgs_per_s": self.args.latency_rate,
            "latency_rate_pkts_per_s": round(self.args.latency_rate / self.msgs_per_packet, 1),
            "feed": (f"ITCH 5.0 over MoldUDP64 to {self.address.group}:{self.address.port}, tickwire-feed's "
                     f"default message mix, {self.msgs_per_packet:.2f} messages per packet on average "
                     f"(1..{2 * self.args.per_packet - 1}), {template_packets} prepared packets "
                     f"({template_msgs} messages) sent in a loop with fresh sequence numbers and "
                     "send-time stamps by bench/publisher.c (AF_PACKET, PACKET_QDISC_BYPASS, sendmmsg)"),
            "method": (f"zero loss = every message sent was counted, by type, nothing malformed or "
                       f"duplicated; search: x2 steps then geometric bisection to {profile.precision:g}x, "
                       f"{self.args.trial_seconds:g} s per trial, at most {profile.max_trials} trials, a rate is "
                       f"lossy after {profile.confirm_loss + 1} lossy trial(s) in a row; "
                       f"latency: {profile.warmup_s:g} s warm-up then {profile.latency_s:g} s at the fixed "
                       "rate; CPU = the receiver process's CPU time (all threads, /proc schedstat) "
                       "during the best clean trial's send window"),
            "latency_clock": ("ITCH timestamp = publisher's CLOCK_REALTIME ns since UTC midnight at send "
                              "(once per sendmmsg batch); receiver: CLOCK_REALTIME once per receive "
                              "batch minus that; every message recorded in the engine's log-linear histogram"),
            "contenders": {k: CONTENDERS[k].label for k in self.args.contender_keys},
            "errors": self.errors,
        }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ok, why = netns_available()
    if not ok:
        print(f"bench: cannot run: {why}. The benchmark needs root to create network namespaces "
              "and attach XDP; run `sudo make bench`.", file=sys.stderr)
        return 2
    started = time.monotonic()
    binaries = build()
    template = make_template(mean_per_packet=args.per_packet)
    template_path = os.path.join(BUILD_DIR, "template.bin")
    template.write(template_path)
    cpus = (args.publisher_cpu, args.receiver_cpu)
    noise = {"before": {f"cpu{c}": cpu_availability(c) for c in cpus}}
    workdir = tempfile.mkdtemp(prefix="tickwire-bench-")
    try:
        with VethPair() as pair:
            place = placement.apply(pair, args.publisher_cpu, args.receiver_cpu, args.rps_cpu)
            log(f"placement: {place['how']}")
            bench = Bench(args, pair, binaries, template_path, template.messages_per_packet, workdir)
            bench.run()
            setup = bench.setup(place, template.messages, len(template.payloads), noise)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    noise["after"] = {f"cpu{c}": cpu_availability(c) for c in cpus}
    contenders = {k: report.summarize(CONTENDERS[k].label, reps)
                  for k, reps in bench.repeats.items() if reps}
    setup["duration_s"] = round(time.monotonic() - started, 1)
    doc = report.document(contenders, setup)
    paths = report.write(doc, args.out)
    paths["png"] = plot.plot(doc, os.path.join(args.out, "latest.png"))
    print(report.markdown(doc))
    log("written: " + ", ".join(paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
