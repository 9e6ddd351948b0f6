"""`tickwire-engine run`: the engine as a process. Other parts (the agent, tests, benchmarks) drive
this interface, so keep its flags and the stats JSON keys stable.

Exit status: 0 after a clean stop (duration over, SIGINT or SIGTERM); 2 when no retry can help (a
configuration the engine cannot use, a missing capability, a driver that cannot do what was asked);
3 when the kernel refused something that may pass later (EBUSY, ENOMEM, ...); 5 when the queue or
a flow is owned by another live engine, or a foreign XDP program sits on the interface ("in use":
permanent for this plan, the message names the owner).

`tickwire-engine release --iface IF [--queue Q]` removes what a killed engine left in the
interface's shared steering program (exit 0; 5 when Q's engine is alive).
"""
from __future__ import annotations

import argparse
import errno
import json
import os
import signal
import sys
import tempfile
import time

from .bookconfig import DEFAULT_STREAM_ROOT, STREAM_ROOT_ENV, BooksConfig
from .config import (DEFAULT_BPFFS_ROOT, EXCHANGE_TIMEZONES, PROTOCOL, ConfigError, EngineConfig,
                     Line, PrivilegeError, Rerequest)

EXIT_OK, EXIT_CONFIG, EXIT_KERNEL, EXIT_IN_USE = 0, 2, 3, 5
# Refusals that no retry will change: the interface or driver cannot do what was asked
# (zero-copy, native XDP), or another program owns the interface. A supervisor must not loop.
_PERMANENT_ERRNOS = {errno.EOPNOTSUPP, errno.ENOTSUP, errno.EEXIST, errno.ENODEV, errno.EINVAL}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tickwire-engine",
                                     description="AF_XDP market-data feed engine (ITCH 5.0 over MoldUDP64)")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="receive a feed until the duration ends or a signal arrives")
    run.add_argument("--iface", required=True, help="interface the feed arrives on")
    run.add_argument("--queue", type=int, default=0, help="RX queue to bind (default 0)")
    run.add_argument("--line", action="append", required=True,
                     metavar="NAME=GROUP:PORT[@SOURCE][,vlan=ID]",
                     help="a feed line, A and optionally B (repeat the flag); no source: any "
                          "sender; no vlan: any VLAN tag or none")
    run.add_argument("--bpffs-root", default=DEFAULT_BPFFS_ROOT, metavar="DIR",
                     help="bpffs directory where the interface's shared steering program is "
                          "pinned; every engine of the node must use the same (default "
                          "%(default)s)")
    run.add_argument("--mode", choices=["auto", "native", "generic"], default="auto",
                     help="XDP attach mode; auto tries native and falls back to generic")
    run.add_argument("--zero-copy", choices=["auto", "required", "off"], default="auto")
    run.add_argument("--core", type=int, help="CPU to pin the poll thread to")
    run.add_argument("--duration", type=float, help="seconds to run (default: until a signal)")
    run.add_argument("--stats-json", metavar="PATH",
                     help="write stats as JSON here once started, at exit, and whenever SIGUSR1 "
                          "arrives")
    run.add_argument("--stats-interval", type=float, metavar="SECONDS",
                     help="also replace --stats-json atomically this often while running")
    run.add_argument("--hugepages", action=argparse.BooleanOptionalAction, default=False,
                     help="back the UMEM with 2 MiB hugepages (falls back to 4 KiB pages)")
    run.add_argument("--busy-poll", choices=["on", "off"], default="on",
                     help="on: spin on the RX ring with SO_PREFER_BUSY_POLL; off: sleep in poll()")
    run.add_argument("--busy-poll-usec", type=int, default=0, help="SO_BUSY_POLL (0: leave alone)")
    run.add_argument("--busy-poll-budget", type=int, default=0,
                     help="SO_BUSY_POLL_BUDGET (0: leave alone)")
    run.add_argument("--rt-priority", type=int, default=0, metavar="1-99",
                     help="run the poll thread SCHED_FIFO at this priority (needs CAP_SYS_NICE); "
                          "with --busy-poll on it then owns its core, but unless the host sets "
                          "kernel.sched_rt_runtime_us=-1 the kernel pauses it 50 ms every second "
                          "(RT throttling). 0: normal scheduling")
    run.add_argument("--batch-size", type=int, default=64, help="descriptors per poll")
    run.add_argument("--ring-size", type=int, default=EngineConfig.ring_size,
                     help="RX ring entries (power of two): the burst the engine absorbs while it is "
                          "off the CPU (4096: a 4 ms stall at 1 M packets/s)")
    run.add_argument("--frame-count", type=int, default=EngineConfig.frame_count,
                     help="UMEM frames of 2 KiB, all stocked in the fill ring before the XDP program "
                          "is attached (power of two, at least twice --ring-size)")
    run.add_argument("--exchange-tz", metavar="ZONE",
                     help="IANA zone of the exchange's midnight, which ITCH timestamps count from "
                          "(default: the feed's exchange, America/New_York for NASDAQ; 'local': "
                          "this node's zone)")
    run.add_argument("--exchange-midnights", metavar="NS[,NS...]", type=_midnights,
                     help="the exchange's midnights themselves (CLOCK_REALTIME ns, rising) instead "
                          "of --exchange-tz: one fixes the day (replaying a capture), more are "
                          "followed as real time passes them")
    run.add_argument("--arbitration-window-ms", type=float, metavar="MS",
                     default=EngineConfig.arbitration_window_ns / 1e6,
                     help="with lines A and B: how long a hole waits for the other line before it "
                          "counts as a gap (default %(default)s)")
    run.add_argument("--max-seq-jump", type=int, default=EngineConfig.max_seq_jump,
                     metavar="MESSAGES", help="a sequence number jumping ahead further than this "
                     "(plus --max-seq-rate per second of silence) is suspect until confirmed")
    run.add_argument("--max-seq-rate", type=int, default=EngineConfig.max_seq_rate,
                     metavar="PER_SECOND", help="messages a line can plausibly carry per second")
    run.add_argument("--rerequest", metavar="ADDRESS:PORT",
                     help="ask this MoldUDP64 re-request server for gaps no line filled (from an "
                          "own UDP socket on an ephemeral port); without it a gap is final at once")
    run.add_argument("--rerequest-max-messages", type=int, metavar="N",
                     default=Rerequest.max_messages,
                     help="messages per request: the server's limit (default %(default)s)")
    run.add_argument("--rerequest-timeout-ms", type=float, metavar="MS",
                     default=Rerequest.timeout_ms,
                     help="how long a request waits for its answer (default %(default)s)")
    run.add_argument("--rerequest-attempts", type=int, metavar="N", default=Rerequest.attempts,
                     help="requests per range without an answer before it is given up "
                          "(default %(default)s)")
    run.add_argument("--rerequest-rate", type=int, metavar="PER_SECOND", default=Rerequest.rate,
                     help="requests per second at most, all gaps together (default %(default)s)")
    run.add_argument("--rerequest-burst", type=int, metavar="N", default=Rerequest.burst,
                     help="requests that may go out at once within the rate (default %(default)s)")
    run.add_argument("--quiet", action="store_true", help="no per-second summary")
    books = run.add_argument_group("books", "order books built on the poll thread, published to "
                                   "<stream-root>/<feed>/ for local consumers")
    books.add_argument("--books", action="store_true", help="build books and publish them")
    books.add_argument("--feed", default="", help="the feed's name: its stream directory")
    books.add_argument("--stream-root", default=None,
                       help=f"default ${STREAM_ROOT_ENV} or {DEFAULT_STREAM_ROOT}")
    books.add_argument("--book-depth", type=int, default=BooksConfig.depth,
                       help="levels per side in each snapshot entry")
    books.add_argument("--book-symbols", default="", metavar="SYM[,SYM...]",
                       help="only these instruments (default: all)")
    books.add_argument("--book-max-orders", type=int, default=BooksConfig.max_orders)
    books.add_argument("--book-max-instruments", type=int, default=BooksConfig.max_instruments)
    books.add_argument("--book-ring-events", type=int, default=BooksConfig.ring_events,
                       help="events the broadcast ring holds (power of two)")
    books.add_argument("--book-levels-only", action="store_true",
                       help="aggregated price levels only: no order queues, no order events")

    top = sub.add_parser("top", help="live best bid/offer of a feed's busiest symbols")
    top.add_argument("feed", help="the feed's name (its stream directory)")
    top.add_argument("--stream-root", default=None,
                     help=f"default ${STREAM_ROOT_ENV} or {DEFAULT_STREAM_ROOT}")
    top.add_argument("--symbols", type=int, default=15, help="how many symbols to show")
    top.add_argument("--interval", type=float, default=1.0, help="seconds between screens")
    top.add_argument("--count", type=int, default=0, help="screens to show, 0: until interrupted")

    release = sub.add_parser("release", help="remove what killed engines left in an interface's "
                             "shared steering program (the program too when no engine is left)")
    release.add_argument("--iface", "--interface", dest="iface", required=True)
    release.add_argument("--queue", type=int, help="only check this queue's owner is gone "
                         "(exit 5 when it is alive); every dead owner's flows are removed")
    release.add_argument("--bpffs-root", default=DEFAULT_BPFFS_ROOT, metavar="DIR")
    return parser


def _midnights(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give whole nanoseconds separated by commas") from None


def rerequest_from_args(args: argparse.Namespace) -> Rerequest | None:
    if not args.rerequest:
        return None
    return Rerequest(args.rerequest, max_messages=args.rerequest_max_messages,
                     timeout_ms=args.rerequest_timeout_ms, attempts=args.rerequest_attempts,
                     rate=args.rerequest_rate, burst=args.rerequest_burst)


def config_from_args(args: argparse.Namespace) -> EngineConfig:
    return EngineConfig(
        interface=args.iface, queue=args.queue, lines=[Line.parse(s) for s in args.line],
        xdp_mode=args.mode, zero_copy=args.zero_copy, core=args.core, hugepages=args.hugepages,
        busy_poll=args.busy_poll == "on", busy_poll_usec=args.busy_poll_usec,
        busy_poll_budget=args.busy_poll_budget, rt_priority=args.rt_priority,
        batch_size=args.batch_size, ring_size=args.ring_size, frame_count=args.frame_count,
        exchange_tz=args.exchange_tz, exchange_midnights=args.exchange_midnights,
        arbitration_window_ns=round(args.arbitration_window_ms * 1e6),
        max_seq_jump=args.max_seq_jump, max_seq_rate=args.max_seq_rate,
        bpffs_root=args.bpffs_root,
        rerequest=rerequest_from_args(args),
        feed=args.feed, stream_root=args.stream_root,
        books=BooksConfig(enabled=args.books, depth=args.book_depth,
                          symbols=[s for s in args.book_symbols.split(",") if s],
                          max_orders=args.book_max_orders,
                          max_instruments=args.book_max_instruments,
                          ring_events=args.book_ring_events, levels_only=args.book_levels_only))


def exchange_zone_name(config: EngineConfig) -> str:
    if config.exchange_midnights is not None:
        return f"from {len(config.exchange_midnights)} given midnight(s)"
    return config.exchange_tz or EXCHANGE_TIMEZONES[PROTOCOL]


def write_json_atomically(path: str, document: dict) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".stats-", dir=directory)
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(document, out, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


class RateMeter:
    """Packets and messages per second between two snapshots."""

    def __init__(self) -> None:
        self._last: tuple[float, int, int] | None = None
        self.rate = {"packets_per_s": 0.0, "messages_per_s": 0.0}

    def update(self, stats: dict) -> dict:
        now = time.monotonic()
        if self._last is not None and now > self._last[0]:
            dt = now - self._last[0]
            self.rate = {"packets_per_s": (stats["packets"] - self._last[1]) / dt,
                         "messages_per_s": (stats["messages"] - self._last[2]) / dt}
        self._last = (now, stats["packets"], stats["messages"])
        return self.rate


def summary_line(stats: dict) -> str:
    lat = stats["latency"]["exchange_to_engine"]
    k2e = stats["latency"]["kernel_to_engine"]
    return (f"{stats['rate']['messages_per_s']:>11,.0f} msg/s  pkts {stats['packets']:,}  "
            f"msgs {stats['messages']:,}  gaps {stats['gaps']} (missing {stats['missing']}, "
            f"recovered {stats['recovered']})  "
            f"re-requested {stats['rerequest']['requests_sent']} "
            f"(recovered {stats['rerequest']['recovered']}, timed out "
            f"{stats['rerequest']['timed_out']})  dup {stats['duplicates']}  "
            f"malformed {stats['malformed']}  exch->eng p50/p99 {lat['p50'] / 1e3:.1f}/"
            f"{lat['p99'] / 1e3:.1f} us  kern->eng p99 {k2e['p99'] / 1e3:.1f} us")


def keep_off_core(core: int | None) -> None:
    """The poll thread owns its core: move this (main) thread, which wakes every 50 ms to
    report, onto the process's other CPUs where there are any."""
    if core is None:
        return
    others = os.sched_getaffinity(0) - {core}
    if others:
        os.sched_setaffinity(0, others)


def run(args: argparse.Namespace) -> int:
    from .engine import Engine, EngineError  # the native module loads only when needed

    stop = {"signal": None}
    dump_requested = {"pending": False}

    def on_signal(signum, _frame):
        stop["signal"] = signum

    def on_dump(_signum, _frame):
        dump_requested["pending"] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    # SIGUSR1: write --stats-json now. Lets a reader take a snapshot exactly when it wants one
    # instead of the engine's housekeeping thread waking on a timer.
    signal.signal(signal.SIGUSR1, on_dump)

    try:
        config = config_from_args(args)
        engine = Engine(config)
    except ConfigError as exc:
        print(f"tickwire-engine: bad configuration: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except PrivilegeError as exc:
        print(f"tickwire-engine: {exc}", file=sys.stderr)
        return EXIT_CONFIG

    meter = RateMeter()
    # Who wrote these counters: a reader that sees this change knows they started again from zero.
    identity = {"pid": os.getpid(), "started_at": time.time()}
    told = {"past_midnights": False}

    def snapshot() -> dict:
        stats = engine.stats()
        stats["rate"] = meter.update(stats)
        stats["time"] = time.time()
        stats["engine"] = identity
        if stats["exchange_time"]["midnights_left"] == 0 and not told["past_midnights"]:
            told["past_midnights"] = True
            print("tickwire-engine: past the last exchange midnight it was given: exchange-to-engine "
                  "latency is no longer recorded; restart the engine", file=sys.stderr, flush=True)
        return stats

    try:
        try:
            engine.start()
        except (EngineError, ConfigError) as exc:
            print(f"tickwire-engine: cannot start on {config.interface} queue {config.queue}: "
                  f"{exc}", file=sys.stderr)
            return exit_status(exc)
        info = engine.info
        keep_off_core(info["core"])
        if args.stats_json:   # the first write also tells a supervisor the engine is up
            write_json_atomically(args.stats_json, snapshot())
        if not args.quiet:
            print(f"tickwire-engine: {config.interface} queue {config.queue}, XDP "
                  f"{info['xdp_mode']}, {'zero-copy' if info['zero_copy'] else 'copy mode'}, "
                  f"{'hugepages' if info['hugepages'] else '4 KiB pages'}, poll thread on "
                  f"{'CPU ' + str(info['core']) if info['core'] is not None else 'any CPU'}"
                  f"{', SCHED_FIFO ' + str(info['rt_priority']) if info['rt_priority'] else ''}"
                  f", RX ring {info['rx_ring_size']}, fill ring {info['fill_stocked']} frames, "
                  f"exchange time {exchange_zone_name(config)}"
                  + (f" ({info['fallback']})" if info["fallback"] else ""), flush=True)
        deadline = time.monotonic() + args.duration if args.duration else None
        next_print = time.monotonic() + 1.0
        next_write = time.monotonic() + (args.stats_interval or 0)
        while stop["signal"] is None and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.05)
            now = time.monotonic()
            if now >= next_print:
                next_print += 1.0
                if not args.quiet:
                    print(summary_line(snapshot()), flush=True)
            due = args.stats_interval and now >= next_write
            if args.stats_json and (due or dump_requested["pending"]):
                dump_requested["pending"] = False
                if due:
                    next_write = now + args.stats_interval
                write_json_atomically(args.stats_json, snapshot())
        engine.stop()
        final = snapshot()
        if args.stats_json:
            write_json_atomically(args.stats_json, final)
        if not args.quiet:
            print("final: " + summary_line(final), flush=True)
        return EXIT_OK
    finally:
        engine.stop()
        engine.close()


def exit_status(exc: Exception) -> int:
    """The exit status a start failure means to a supervisor (see the module's docstring)."""
    if isinstance(exc, ConfigError):
        return EXIT_CONFIG
    if exc.errno == errno.EADDRINUSE:
        return EXIT_IN_USE
    return EXIT_CONFIG if exc.errno in _PERMANENT_ERRNOS else EXIT_KERNEL


def release(args: argparse.Namespace) -> int:
    from .engine import EngineError, release_steering

    try:
        report = release_steering(args.iface, args.queue, args.bpffs_root)
    except EngineError as exc:
        print(f"tickwire-engine release: {exc}", file=sys.stderr)
        return exit_status(exc)
    print(f"tickwire-engine release: {report}", flush=True)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run":
        return run(args)
    if args.command == "release":
        return release(args)
    if args.command == "top":
        from .top import top
        return top(args)
    return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
