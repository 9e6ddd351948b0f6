"""tickwire-feed: the exchange side of tickwire's tests, benchmarks and demos.

    tickwire-feed publish --line A=239.1.1.1:26477 [--line B=239.1.1.2:26477] --messages 100000 ...
    tickwire-feed replay --to 239.1.1.1:26477 [--renumber] capture.pcap ...
    tickwire-feed blast --iface veth0 --to 239.1.1.1:26477 --packets 1000000 --rate 1000000

The run's summary (the ground truth a receiver is checked against) is printed as JSON on stdout
and written to --summary-json if given. Bad options exit with status 2 and a message naming the
problem; a failure while sending exits with 1. SIGTERM and SIGINT end a publish run cleanly
between chunks (the end-of-session packet and the summary still go out).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys

from .blast import BlastConfig, BlastError, blast
from .blast import ConfigError as BlastConfigError
from .clock import ClockError
from .market import MixError
from .net import EndpointError
from .pcap import CaptureError
from .pool import PoolError
from .pool import SESSION
from .publish import ConfigError, PublishConfig, SendError, publish
from .replay import ReplayConfig, replay
from .schedule import ScheduleError

_BAD_INPUT = (ConfigError, EndpointError, MixError, ScheduleError, ClockError, CaptureError,
              BlastConfigError, PoolError)


def _line(text: str) -> tuple[str, str]:
    name, sep, endpoint = text.partition("=")
    if not sep or name not in ("A", "B"):
        raise argparse.ArgumentTypeError(f"{text!r} is not A=GROUP:PORT or B=GROUP:PORT")
    return name, endpoint


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tickwire-feed", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    pub = commands.add_parser("publish", help="send a generated ITCH 5.0 feed over MoldUDP64")
    pub.add_argument("--line", action="append", type=_line, required=True, metavar="A=GROUP:PORT",
                     help="a feed line; line A is required, line B optional")
    out = pub.add_mutually_exclusive_group()
    out.add_argument("--iface", help="send multicast out of this interface")
    out.add_argument("--source-ip", help="send from this local address (its interface)")
    amount = pub.add_mutually_exclusive_group(required=True)
    amount.add_argument("--messages", type=int, metavar="N", help="send N messages")
    amount.add_argument("--duration", type=float, metavar="S", help="send for S seconds")
    pub.add_argument("--rate", type=float, metavar="MSGS_PER_S", help="pace to this message rate")
    pub.add_argument("--per-packet", type=int, default=1, metavar="K",
                     help="messages per packet (fewer when K would not fit a 1500-byte MTU)")
    pub.add_argument("--mix", default="default",
                     help="message types: default, adds, or TYPE=WEIGHT,... (e.g. A=60,D=40)")
    pub.add_argument("--loss-a", type=float, default=0.0, metavar="PCT",
                     help="drop this percentage of data packets on line A (seeded)")
    pub.add_argument("--loss-b", type=float, default=0.0, metavar="PCT",
                     help="the same for line B, independently of A")
    pub.add_argument("--gap-every", type=int, default=0, metavar="N",
                     help="skip sequence numbers after every N-th data packet")
    pub.add_argument("--gap-size", type=int, default=1, metavar="M", help="numbers skipped per gap")
    pub.add_argument("--loss-burst-every", type=int, default=0, metavar="N",
                     help="every N-th data packet starts a burst lost on every line")
    pub.add_argument("--loss-burst-size", type=int, default=1, metavar="M",
                     help="data packets in each such burst")
    pub.add_argument("--rerequest-listen", metavar="ADDRESS:PORT",
                     help="run a MoldUDP64 re-request server here that answers from what was sent")
    pub.add_argument("--rerequest-buffer", type=int, default=1_000_000, metavar="MESSAGES",
                     help="messages the re-request server holds (older ones are not answered)")
    pub.add_argument("--rerequest-max-messages", type=int, default=100, metavar="N",
                     help="messages per answer at most (one packet within a 1500-byte MTU)")
    pub.add_argument("--rerequest-linger-s", type=float, default=2.0, metavar="S",
                     help="keep answering this long after the last packet")
    pub.add_argument("--duplicate-every", type=int, default=0, metavar="N",
                     help="send every N-th data packet twice")
    pub.add_argument("--reorder-every", type=int, default=0, metavar="N",
                     help="swap every N-th data packet with the next one (N >= 2)")
    pub.add_argument("--malformed-every", type=int, default=0, metavar="N",
                     help="make every N-th message malformed")
    pub.add_argument("--heartbeat-every-s", type=float, metavar="S",
                     help="send MoldUDP64 heartbeats this often, and one after the data")
    pub.add_argument("--end-session", action="store_true", help="finish with an end-of-session packet")
    pub.add_argument("--session", default="TICKWIRE", help="MoldUDP64 session (up to 10 characters)")
    pub.add_argument("--start-seq", type=int, default=1, metavar="N", help="first sequence number")
    pub.add_argument("--seed", type=int, default=1, metavar="N",
                     help="seed of contents, mix and losses (same seed, same packets)")
    pub.add_argument("--day", action="store_true",
                     help="a trading day a book can be checked against: start of messages and the "
                          "stock directory first, no order referred to before it is added")
    pub.add_argument("--stocks", type=int, default=16, metavar="N", help="instruments traded")
    pub.add_argument("--ttl", type=int, default=1, metavar="N", help="multicast TTL")
    pub.add_argument("--multicast-loop", action="store_true",
                     help="let local sockets receive the feed (off by default)")
    pub.add_argument("--exchange-tz", metavar="ZONE", default="America/New_York",
                     help="time zone whose midnight ITCH timestamps count from (default: NASDAQ's, "
                          "America/New_York, as the engine expects; 'local': this host's)")
    pub.add_argument("--summary-json", metavar="PATH",
                     help="also write the summary (the receiver's ground truth) here")

    rep = commands.add_parser("replay", help="send the MoldUDP64 payloads of pcap/pcapng files")
    rep.add_argument("--to", required=True, metavar="GROUP:PORT")
    out = rep.add_mutually_exclusive_group()
    out.add_argument("--iface")
    out.add_argument("--source-ip")
    rep.add_argument("--rate", type=float, metavar="PKTS_PER_S")
    rep.add_argument("--ttl", type=int, default=1, metavar="N")
    rep.add_argument("--multicast-loop", action="store_true")
    rep.add_argument("--summary-json", metavar="PATH")
    rep.add_argument("--renumber", action="store_true",
                     help="rewrite MoldUDP64 sessions/sequence numbers into one gap-free session")
    rep.add_argument("--session", default="REPLAY", help="session name with --renumber")
    rep.add_argument("--start-seq", type=int, default=1, metavar="N", help="first number with --renumber")
    rep.add_argument("files", nargs="+", metavar="FILE.pcap")

    bl = commands.add_parser("blast", help="generate the feed inside the kernel (XDP live frames), "
                             "millions of packets/s from one core; needs root")
    bl.add_argument("--iface", required=True,
                    help="send out of this interface: the exchange side of a veth whose peer has "
                         "a native XDP program or GRO on (veth drops redirected frames otherwise)")
    bl.add_argument("--to", required=True, metavar="GROUP:PORT")
    amount = bl.add_mutually_exclusive_group(required=True)
    amount.add_argument("--packets", type=int, metavar="N", help="send N packets")
    amount.add_argument("--duration", type=float, metavar="S", help="send for S seconds")
    bl.add_argument("--rate", type=float, default=0.0, metavar="PKTS_PER_S",
                    help="pace to this packet rate (default 0: as fast as one core can)")
    bl.add_argument("--per-packet", type=int, default=4, metavar="K",
                    help="mean messages per packet; each packet carries 1..2K-1 (default 4)")
    bl.add_argument("--mix", default="default", help="message types, as for publish")
    bl.add_argument("--pool", type=int, default=4096, metavar="N",
                    help="prepared packets the generator cycles through (1..8192)")
    bl.add_argument("--seed", type=int, default=1, metavar="N")
    bl.add_argument("--session", default=SESSION, help="MoldUDP64 session (up to 10 characters)")
    bl.add_argument("--start-seq", type=int, default=1, metavar="N")
    bl.add_argument("--source-ip", help="source address (default: the interface's)")
    bl.add_argument("--exchange-tz", metavar="ZONE", default="America/New_York")
    bl.add_argument("--core", type=int, metavar="CPU", help="pin the generator to this CPU")
    bl.add_argument("--idle-iface", metavar="IF",
                    help="an interface without traffic to keep the generator attached to in native "
                         "mode (default: a veth pair made for the run)")
    bl.add_argument("--burst", type=int, default=256, metavar="N",
                    help="frames per kernel call at most (larger: less overhead, burstier)")
    bl.add_argument("--summary-json", metavar="PATH")
    return parser


def _blast_config(parser: argparse.ArgumentParser, args) -> BlastConfig:
    group, sep, port = args.to.rpartition(":")
    if not sep or not port.isdigit():
        parser.error(f"--to {args.to!r}: expected GROUP:PORT")
    return BlastConfig(
        iface=args.iface, group=group, port=int(port), packets=args.packets,
        duration_s=args.duration, rate_pps=args.rate, per_packet=args.per_packet, mix=args.mix,
        pool_packets=args.pool, seed=args.seed, session=args.session, start_seq=args.start_seq,
        source_ip=args.source_ip, exchange_tz=args.exchange_tz, core=args.core,
        idle_iface=args.idle_iface, burst=args.burst, summary_json=args.summary_json)


def _publish_config(parser: argparse.ArgumentParser, args) -> PublishConfig:
    lines = dict(args.line)
    if len(lines) != len(args.line):
        parser.error("each of --line A and --line B may be given once")
    if "A" not in lines:
        parser.error("--line A=GROUP:PORT is required (line B is optional)")
    return PublishConfig(
        lines=[lines[name] for name in ("A", "B") if name in lines],
        iface=args.iface, source_ip=args.source_ip, messages=args.messages,
        duration_s=args.duration, rate=args.rate, per_packet=args.per_packet, mix=args.mix,
        loss_a=args.loss_a, loss_b=args.loss_b, gap_every=args.gap_every,
        gap_size=args.gap_size, duplicate_every=args.duplicate_every,
        loss_burst_every=args.loss_burst_every, loss_burst_size=args.loss_burst_size,
        rerequest_listen=args.rerequest_listen, rerequest_buffer=args.rerequest_buffer,
        rerequest_max_messages=args.rerequest_max_messages,
        rerequest_linger_s=args.rerequest_linger_s,
        reorder_every=args.reorder_every, malformed_every=args.malformed_every,
        heartbeat_every_s=args.heartbeat_every_s, end_session=args.end_session,
        session=args.session, start_seq=args.start_seq, seed=args.seed, ttl=args.ttl,
        day=args.day, stocks=args.stocks,
        multicast_loop=args.multicast_loop, exchange_tz=args.exchange_tz,
        summary_json=args.summary_json)


@contextlib.contextmanager
def _stopped_by_signals():
    """SIGTERM and SIGINT end the run between chunks instead of killing it (so the end of
    session and the summary still go out); the previous handlers come back afterwards."""
    stopping = []
    previous = {sig: signal.signal(sig, lambda signum, _frame: stopping.append(signum))
                for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield lambda: bool(stopping)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "publish":
            config = _publish_config(parser, args)
            with _stopped_by_signals() as should_stop:
                summary = publish(config, should_stop=should_stop)
        elif args.command == "blast":
            summary = blast(_blast_config(parser, args))
        else:
            summary = replay(ReplayConfig(
                to=args.to, files=args.files, iface=args.iface, source_ip=args.source_ip,
                rate=args.rate, ttl=args.ttl, multicast_loop=args.multicast_loop,
                summary_json=args.summary_json, renumber=args.renumber, session=args.session,
                start_seq=args.start_seq))
    except _BAD_INPUT as exc:
        parser.error(str(exc))
    except FileNotFoundError as exc:
        parser.error(f"no such file: {exc.filename}")
    except (SendError, BlastError) as exc:
        print(f"tickwire-feed: error: {exc}", file=sys.stderr)
        return 1
    json.dump(summary, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
