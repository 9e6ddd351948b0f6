"""`make bench`: every contender on the same veth pair, the same feed, the same clocks, in one run.

    python -m bench.run [--quick] [--out bench/results] [--contenders engine,kernel_c,python]

The feed comes from `tickwire-feed blast`'s in-kernel generator (bench/trial.py), which is not the
bottleneck: ~2 M packets/s from one core. For each contender (bench/receivers.py) and each
repeat, with contenders interleaved and their order rotated from repeat to repeat so that drift
hits all alike:
  1. start the receiver in the node namespace, pinned to the receiver CPU;
  2. latency and CPU at fixed rates: a warm-up, then a trial at --latency-rate (100k messages/s)
     and one at --high-rate (1M messages/s); the second is also where CPU per packet is compared;
  3. rate search: the highest packet rate with zero loss (bench/search.py).
Then, once: the kernel_c tunings (each one knob changed, bench/receivers.py), the XDP mode
comparison with both generators (bench/experiments.py) and the 2 ms poll-thread stall at
1M packets/s. Results go to OUT/latest.json, latest.md and latest.png (bench/report.py, plot.py).
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

from . import experiments, placement, plot, report
from .build import BUILD_DIR, build
from .receivers import CONTENDERS, HEADLINE, MAIN, TUNINGS, Feed, Receiver, ReceiverError, open_receiver
from .search import TrialOutcome, find_zero_loss_rate
from .template import make_template
from .trial import Blast, FeedAddress, Publisher, Sequence, TrialResult, run_trial

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
    tunings: tuple[str, ...]
    mode_trial_s: float   # the XDP mode comparison's trials
    stall_trial_s: float


PROFILES = {
    # Short trials, one repeat: checks the machinery (every contender, every experiment) in < 2 min.
    "quick": Profile(trial_s=0.25, latency_s=0.4, warmup_s=0.1, repeats=1, precision=1.5,
                     max_trials=7, confirm_loss=0, contenders=MAIN, tunings=(),
                     mode_trial_s=0.3, stall_trial_s=0.5),
    "full": Profile(trial_s=0.7, latency_s=1.2, warmup_s=0.3, repeats=3, precision=1.15,
                    max_trials=10, confirm_loss=1, contenders=MAIN, tunings=TUNINGS,
                    mode_trial_s=1.0, stall_trial_s=1.0),
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
    p.add_argument("--no-experiments", action="store_true",
                   help="skip the kernel_c tunings, the XDP mode comparison and the stall check")
    p.add_argument("--repeats", type=int, help="rounds over all contenders (medians are reported)")
    p.add_argument("--trial-seconds", type=float, help="length of one rate-search trial")
    p.add_argument("--latency-rate", type=float, default=100_000, help="messages/s of the first latency trial")
    p.add_argument("--high-rate", type=float, default=1_000_000,
                   help="messages/s of the second latency trial, where CPU per packet is compared")
    p.add_argument("--per-packet", type=int, default=4, help="mean ITCH messages per MoldUDP64 packet")
    p.add_argument("--start-pps", type=float, default=100_000, help="first rate the search tries")
    p.add_argument("--publisher-cpu", type=int, default=0)
    p.add_argument("--receiver-cpu", type=int, default=1)
    p.add_argument("--rps-cpu", type=int, help="steer the veth's receive softirq to this CPU (default: RPS off)")
    args = p.parse_args(argv)
    profile = PROFILES["quick" if args.quick else "full"]
    args.contender_keys = tuple(args.contenders.split(",")) if args.contenders else profile.contenders
    unknown = [k for k in args.contender_keys if k not in CONTENDERS]
    if unknown:
        p.error(f"unknown contender(s) {', '.join(unknown)}: choose from {', '.join(CONTENDERS)}")
    args.tuning_keys = () if args.no_experiments or args.contenders else profile.tunings
    args.repeats = args.repeats or profile.repeats
    args.trial_seconds = args.trial_seconds or profile.trial_s
    if args.repeats < 1 or args.trial_seconds <= 0 or args.latency_rate <= 0 or args.high_rate <= 0:
        p.error("--repeats, --trial-seconds, --latency-rate and --high-rate must be positive")
    args.profile = profile
    return args


class IdleVeth:
    """A veth pair in the exchange namespace that never carries traffic: the generator stays
    attached to it in native mode, so no BPF_PROG_TEST_RUN call swaps the XDP dispatcher."""

    def __init__(self, pair: VethPair):
        self.pair = pair
        self.name, self.peer = f"twi{pair.tag}"[:15], f"twj{pair.tag}"[:15]

    def __enter__(self) -> str:
        self.pair.run(self.pair.exchange_ns, "ip", "link", "add", self.name, "type", "veth",
                      "peer", "name", self.peer)
        return self.name

    def __exit__(self, *exc) -> None:
        self.pair.run(self.pair.exchange_ns, "ip", "link", "del", self.name, check=False)


class Bench:
    def __init__(self, args: argparse.Namespace, pair: VethPair, binaries: dict, template_path: str,
                 msgs_per_packet: float, workdir: str, idle_iface: str):
        self.args, self.pair, self.binaries, self.workdir = args, pair, binaries, workdir
        self.msgs_per_packet = msgs_per_packet
        self.midnight_ns = utc_midnight_ns()
        self.address = FeedAddress()
        sequence = Sequence()
        common = (pair, template_path, self.address, self.midnight_ns, args.publisher_cpu, sequence)
        self.blast = Blast(idle_iface, *common)
        self.publisher = Publisher(binaries["publisher"], *common)
        self.feed = Feed(pair.node_if, self.address.group, self.address.port, self.midnight_ns,
                         cpu=args.receiver_cpu, housekeeping_cpu=args.publisher_cpu)
        keys = args.contender_keys + args.tuning_keys
        self.repeats: dict[str, list[report.Repeat]] = {k: [] for k in keys}
        self.errors: dict[str, str] = {}

    def receiver(self, key: str) -> Receiver:
        return self.receiver_for(CONTENDERS[key])

    def receiver_for(self, contender) -> Receiver:
        return open_receiver(self.pair, contender, self.feed,
                             os.path.join(self.workdir, f"{contender.key}.json"), self.binaries["kernel_rx"])

    log_line = staticmethod(log)

    def trial(self, receiver: Receiver, rate_pps: float, seconds: float, generator=None) -> TrialResult:
        t = run_trial(generator or self.blast, receiver, rate_pps, seconds)
        log(f"  {receiver.contender.key:<22} {t.pkts_per_s:>10,.0f} pkts/s {t.msgs_per_s:>11,.0f} msgs/s"
            f"  lost {t.lost_messages:>8,}  rx cpu {t.receiver_cpu_s:5.2f} s softirq "
            f"{sum(t.softirq_s.values()):5.2f} s  {'ok' if t.zero_loss else 'LOSS'}"
            + "".join(f"  {k} {v:,}" for k, v in t.drops.items()))
        return t

    def round(self, key: str) -> report.Repeat:
        profile = self.args.profile
        pps = lambda msgs: msgs / self.msgs_per_packet  # noqa: E731
        with self.receiver(key) as rx:
            self.trial(rx, pps(self.args.latency_rate), profile.warmup_s)
            latency = self.trial(rx, pps(self.args.latency_rate), profile.latency_s)
            high = self.trial(rx, pps(self.args.high_rate), profile.latency_s)
            previous = [r.search.best.target_pps for r in self.repeats[key] if r.search.best]
            first = CONTENDERS[key].start_pps or self.args.start_pps
            start = max(500.0, min(previous) * 0.7) if previous else first

            def outcome(rate: float) -> TrialOutcome[TrialResult]:
                t = self.trial(rx, rate, self.args.trial_seconds)
                return TrialOutcome(rate, t.pkts_per_s, t.zero_loss, t)

            search = find_zero_loss_rate(outcome, start, precision=profile.precision,
                                         max_trials=profile.max_trials, min_pps=200,
                                         confirm_loss=profile.confirm_loss)
        return report.Repeat(search, latency, high)

    def run_rounds(self, keys: list[str], repeats: int) -> None:
        for r in range(repeats):
            order = keys[r % len(keys):] + keys[:r % len(keys)]   # rotate: no one always goes first
            for key in order:
                if key in self.errors:
                    continue
                log(f"repeat {r + 1}/{repeats}: {CONTENDERS[key].label}")
                try:
                    self.repeats[key].append(self.round(key))
                except ReceiverError as exc:
                    if key in HEADLINE:
                        raise          # a headline contender that cannot run fails the benchmark
                    self.errors[key] = str(exc)
                    log(f"  {key} skipped: {exc}")

    def run(self) -> dict:
        self.run_rounds(list(self.args.contender_keys), self.args.repeats)
        found = {}
        if self.args.tuning_keys:
            self.run_rounds(list(self.args.tuning_keys), 1)
        if not self.args.no_experiments and not self.args.contenders:
            found["xdp_modes"] = experiments.xdp_modes(self, self.args.profile.mode_trial_s,
                                                       repeats=1 if self.args.quick else 3)
            found["stall"] = experiments.stall(self, self.args.profile.stall_trial_s)
        return found

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
            "high_rate_msgs_per_s": self.args.high_rate,
            "high_rate_pkts_per_s": round(self.args.high_rate / self.msgs_per_packet, 1),
            "generator": ("tickwire-feed blast: an XDP program run by BPF_PROG_TEST_RUN with "
                          "BPF_F_TEST_XDP_LIVE_FRAMES builds each frame from the pool, writes its "
                          "MoldUDP64 sequence number from a global counter and stamps every message "
                          "with CLOCK_REALTIME, then redirects it onto the exchange veth; attached in "
                          "native mode to an idle veth; paced in calls of at most 256 frames; the "
                          "program counts what it sent (the ledger)"),
            "feed": (f"ITCH 5.0 over MoldUDP64 to {self.address.group}:{self.address.port}, tickwire-feed's "
                     f"default message mix, {self.msgs_per_packet:.2f} messages per packet on average "
                     f"(1..{2 * self.args.per_packet - 1}), a pool of {template_packets} prepared packets "
                     f"({template_msgs} messages) sent in a loop with fresh sequence numbers and send-time stamps"),
            "method": (f"zero loss = every message sent was counted, by type, nothing malformed or "
                       f"duplicated (testpmd: every packet, no ring misses); search: x2 steps then "
                       f"geometric bisection to {profile.precision:g}x, {self.args.trial_seconds:g} s per "
                       f"trial, at most {profile.max_trials} trials, a rate is lossy after "
                       f"{profile.confirm_loss + 1} lossy trial(s) in a row; latency: {profile.warmup_s:g} s "
                       f"warm-up then {profile.latency_s:g} s at each fixed rate; CPU per packet = the "
                       "receiver's threads (per-thread schedstat) + softirq on every CPU (/proc/stat, "
                       "tick-sampled) during the send window, divided by the packets sent"),
            "latency_clock": ("ITCH timestamp = CLOCK_REALTIME ns since UTC midnight when the XDP program "
                              "built the frame (bpf_ktime_get_ns + an offset fixed at start); receiver: "
                              "CLOCK_REALTIME once per receive batch minus that; every message recorded in "
                              "the engine's log-linear histogram"),
            "contenders": {k: CONTENDERS[k].label for k in self.repeats},
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
    template_path = os.path.join(BUILD_DIR, f"template-{os.getpid()}.bin")
    template.write(template_path)
    cpus = (args.publisher_cpu, args.receiver_cpu)
    noise = {"before": {f"cpu{c}": cpu_availability(c) for c in cpus}}
    workdir = tempfile.mkdtemp(prefix="tickwire-bench-")
    try:
        with VethPair() as pair, IdleVeth(pair) as idle:
            place = placement.apply(pair, args.publisher_cpu, args.receiver_cpu, args.rps_cpu)
            log(f"placement: {place['how']}")
            bench = Bench(args, pair, binaries, template_path, template.messages_per_packet, workdir, idle)
            found = bench.run()
            setup = bench.setup(place, template.messages, len(template.payloads), noise)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        os.unlink(template_path)
    noise["after"] = {f"cpu{c}": cpu_availability(c) for c in cpus}
    contenders = {k: report.summarize(CONTENDERS[k], reps) for k, reps in bench.repeats.items() if reps}
    setup["duration_s"] = round(time.monotonic() - started, 1)
    doc = report.document(contenders, setup, found)
    paths = report.write(doc, args.out)
    paths["png"] = plot.plot(doc, os.path.join(args.out, "latest.png"))
    print(report.markdown(doc))
    log("written: " + ", ".join(paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
