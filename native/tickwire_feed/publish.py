"""The exchange side: send a planned ITCH 5.0 / MoldUDP64 feed on one or two multicast lines.

    summary = publish(PublishConfig(lines=[("239.1.1.1", 26477)], messages=10_000, rate=50_000))

The plan (schedule.py) comes in chunks of prebuilt packets, all made before the send loop starts
for a message count, each made just ahead of its turn for a duration; the loop only stamps ITCH
timestamps into the packets, paces and calls sendto(). What was sent is recorded in a
Ledger, whose summary (see ledger.py for the definitions) is the ground truth for a receiver.
"""
from __future__ import annotations

import contextlib
import functools
import gc
import json
import os
import socket
import sys
import time
from dataclasses import dataclass, field

from . import moldudp64
from . import retransmit
from .clock import midnight_realtime_ns
from .ledger import LINE_NAMES, Ledger
from .market import Mix
from .net import describe_send_error, open_sender, parse_group_port
from .pacing import Pacer, wait_until
from .schedule import Chunk, Schedule, ScheduleConfig

CHUNK_SPAN_S = 0.005        # a chunk holds about this much traffic at the target rate...
MAX_CHUNK_PACKETS = 512     # ...and never more than this many data packets
# Plans up to this size are built entirely before sending (about 400 bytes and, on a slow
# machine, 7 us of planning per message); larger ones are planned chunk by chunk as they go.
PREBUILD_LIMIT_MESSAGES = 500_000
SERVER_SWITCH_INTERVAL_S = 0.0002   # how soon the re-request server's thread gets the GIL


class PublishError(RuntimeError):
    """The run could not be carried out."""


class ConfigError(PublishError, ValueError):
    """Options that contradict each other or are out of range; nothing was sent."""


class SendError(PublishError):
    """The socket refused a packet mid-run (no route, interface gone, ...)."""


@dataclass
class PublishConfig:
    lines: list[tuple[str, int] | str]   # line A first, then optionally line B; "GROUP:PORT" allowed
    iface: str | None = None
    source_ip: str | None = None
    messages: int | None = None
    duration_s: float | None = None
    rate: float | None = None            # messages per second; None = as fast as possible
    per_packet: int = 1
    mix: str = "default"
    loss_a: float = 0.0
    loss_b: float = 0.0
    gap_every: int = 0
    gap_size: int = 1
    loss_burst_every: int = 0
    loss_burst_size: int = 1
    duplicate_every: int = 0
    reorder_every: int = 0
    malformed_every: int = 0
    heartbeat_every_s: float | None = None
    end_session: bool = False
    session: str = "TICKWIRE"
    start_seq: int = 1
    seed: int = 1
    day: bool = False
    stocks: int = 16
    ttl: int = 1
    multicast_loop: bool = False
    exchange_tz: str | None = "America/New_York"   # NASDAQ stamps New York time (None: local)
    summary_json: str | None = None
    # The re-request server (retransmit.py): listen on ADDRESS:PORT, hold the last rerequest_buffer
    # messages, answer with at most rerequest_max_messages each, and keep answering for
    # rerequest_linger_s after the last packet (receivers ask for what they lost at the tail).
    rerequest_listen: str | None = None
    rerequest_buffer: int = retransmit.DEFAULT_CAPACITY
    rerequest_max_messages: int = retransmit.DEFAULT_MAX_MESSAGES
    rerequest_linger_s: float = 2.0
    rerequest_address: tuple[str, int] | None = field(init=False, default=None)
    endpoints: list[tuple[str, int]] = field(init=False, default_factory=list)

    def validate(self) -> ScheduleConfig:
        """Checks everything before anything is sent; returns the schedule's half of the config."""
        if not 1 <= len(self.lines) <= 2:
            raise ConfigError(f"give line A and optionally line B, got {len(self.lines)} lines")
        self.endpoints = [parse_group_port(line, f"line {LINE_NAMES[i]}") if isinstance(line, str)
                          else parse_group_port(f"{line[0]}:{line[1]}", f"line {LINE_NAMES[i]}")
                          for i, line in enumerate(self.lines)]
        if (self.messages is None) == (self.duration_s is None):
            raise ConfigError("give exactly one of --messages N or --duration S")
        if self.duration_s is not None and not self.duration_s > 0:
            raise ConfigError(f"--duration must be > 0 seconds, got {self.duration_s}")
        if self.rate is not None and not self.rate > 0:
            raise ConfigError(f"--rate must be > 0 messages per second, got {self.rate}")
        if self.heartbeat_every_s is not None and not self.heartbeat_every_s > 0:
            raise ConfigError(f"--heartbeat-every-s must be > 0, got {self.heartbeat_every_s}")
        if self.rerequest_listen is not None:
            self.rerequest_address = _listen_address(self.rerequest_listen)
            if self.rerequest_buffer < 1:
                raise ConfigError(f"--rerequest-buffer must be >= 1 message, got {self.rerequest_buffer}")
            if not 1 <= self.rerequest_max_messages <= moldudp64.MAX_MESSAGES:
                raise ConfigError(f"--rerequest-max-messages must be 1..{moldudp64.MAX_MESSAGES}, "
                                  f"got {self.rerequest_max_messages}")
            if not 0 <= self.rerequest_linger_s <= 3600:
                raise ConfigError(f"--rerequest-linger-s must be 0..3600, got {self.rerequest_linger_s}")
        schedule = ScheduleConfig(
            messages=self.messages, per_packet=self.per_packet, mix=Mix.parse(self.mix),
            lines=len(self.endpoints), loss_a=self.loss_a, loss_b=self.loss_b,
            gap_every=self.gap_every, gap_size=self.gap_size,
            loss_burst_every=self.loss_burst_every, loss_burst_size=self.loss_burst_size,
            duplicate_every=self.duplicate_every, reorder_every=self.reorder_every,
            malformed_every=self.malformed_every, session=self.session,
            start_seq=self.start_seq, seed=self.seed, day=self.day, stocks=self.stocks)
        schedule.validate()
        return schedule


def _listen_address(text: str) -> tuple[str, int]:
    host, sep, port_text = text.rpartition(":")
    try:
        port = int(port_text)
        socket.inet_aton(host)
    except (ValueError, OSError):
        port = -1
    if not sep or not 0 <= port <= 65535:
        raise ConfigError(f"--rerequest-listen {text!r}: give ADDRESS:PORT, e.g. 10.0.0.1:26400")
    return host, port


def _chunk_packets(config: PublishConfig) -> int:
    if config.rate is None:
        return MAX_CHUNK_PACKETS
    per_chunk = config.rate * CHUNK_SPAN_S / config.per_packet
    return max(1, min(MAX_CHUNK_PACKETS, int(per_chunk)))


def publish(config: PublishConfig, should_stop=lambda: False) -> dict:
    """Runs the feed and returns its summary (also written to config.summary_json if set).

    `should_stop` is polled between chunks (every few milliseconds); when it returns true the run
    ends as if its time were up: the end-of-session packet still goes out if asked for.
    Bad input raises a ValueError (ConfigError, or the EndpointError/MixError/ScheduleError/
    ClockError of the module that checks it) before anything is sent; a socket failure while
    sending raises SendError.
    """
    schedule_config = config.validate()
    with _gc_paused():
        return _publish(config, schedule_config, should_stop)


@contextlib.contextmanager
def _gc_paused():
    """The plan holds millions of small objects and none of them forms a reference cycle: the
    cyclic collector would only rescan them again and again (measured here: 5-10% of planning time)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _publish(config: PublishConfig, schedule_config: ScheduleConfig, should_stop) -> dict:
    midnight_ns = midnight_realtime_ns(config.exchange_tz)
    # Opened first: a bad interface or address is refused at once, not after the planning.
    sock = open_sender(iface=config.iface, source_ip=config.source_ip, ttl=config.ttl,
                       loop=config.multicast_loop)
    server = None
    try:
        if config.rerequest_address is not None:
            store = retransmit.RetransmissionStore(moldudp64.session_bytes(config.session),
                                                   config.rerequest_buffer)
            try:
                server = retransmit.RerequestServer(store, config.rerequest_address,
                                                    config.rerequest_max_messages).start()
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
            # The send loop holds the GIL; by default the server's thread would get it back only
            # every 5 ms, which is then what every answer waits (measured: p50 16 ms).
            switch_interval = sys.getswitchinterval()
            sys.setswitchinterval(SERVER_SWITCH_INTERVAL_S)
        summary = _plan_and_send(config, schedule_config, should_stop, sock, midnight_ns, server)
        if server is not None:
            _linger(config.rerequest_linger_s, should_stop)
            summary["rerequest_server"] = server.stats()
            if config.summary_json:
                write_summary(config.summary_json, summary)
        return summary
    finally:
        if server is not None:
            server.stop()
            sys.setswitchinterval(switch_interval)
        sock.close()


def _linger(seconds: float, should_stop) -> None:
    """Keep the re-request server answering after the last packet, until time or a signal."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not should_stop():
        time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))


def _plan_and_send(config: PublishConfig, schedule_config: ScheduleConfig, should_stop, sock,
                   midnight_ns: int, server=None) -> dict:
    # A plan of known, moderate size (--messages) is built before the clock starts so that the
    # send loop runs at full speed; its bookkeeping is done after the loop for the same reason.
    # Duration runs (often long and slow) plan chunk by chunk as they go: for the highest rates,
    # give a message count.
    prebuilt = config.messages is not None and config.messages <= PREBUILD_LIMIT_MESSAGES
    schedule = Schedule(schedule_config)
    ledger = Ledger(config.start_seq, len(config.endpoints))
    next_chunk = functools.partial(schedule.next_chunk, _chunk_packets(config))
    chunks = iter(list(iter(next_chunk, []))) if prebuilt else iter(next_chunk, [])
    sent: list[Chunk] = []

    sender = _Sender(sock, config.endpoints, midnight_ns, config.rate,
                     server.store if server is not None else None)
    heartbeats = _Heartbeats(sender, schedule.session, ledger, config.heartbeat_every_s)
    next_seq = config.start_seq
    started_real_ns = time.time_ns()
    started = time.perf_counter_ns()
    deadline = None if config.duration_s is None else started + int(config.duration_s * 1e9)
    for chunk in chunks:
        if should_stop():
            break
        heartbeats.send_due(next_seq)
        sender.send_chunk(chunk)
        next_seq = chunk.next_seq
        if prebuilt:
            sent.append(chunk)
        else:
            ledger.record(chunk)
        if deadline is not None and time.perf_counter_ns() >= deadline:
            break
    heartbeats.send_final(next_seq)
    if config.end_session:
        sender.control(moldudp64.end_of_session(schedule.session, next_seq))
        ledger.record_end_of_session(next_seq)
    elapsed_ns = time.perf_counter_ns() - started

    for chunk in sent:
        ledger.record(chunk)
    summary = ledger.summary()
    summary.update(_run_facts(config, midnight_ns, started_real_ns, elapsed_ns, summary, sender))
    if config.summary_json:
        write_summary(config.summary_json, summary)
    return summary


class _Sender:
    """The hot loop: stamp, pace, sendto. Kept free of anything that is not needed per packet."""

    def __init__(self, sock, endpoints, midnight_ns: int, rate: float | None, store=None):
        self.store = store   # the re-request server's buffer: every data packet as it went out
        self.sock = sock
        self.endpoints = endpoints
        self.midnight_ns = midnight_ns
        self.pacer = Pacer(rate) if rate else None

    def send_chunk(self, chunk) -> None:
        sendto = self.sock.sendto
        endpoints = self.endpoints
        time_ns = time.time_ns
        midnight = self.midnight_ns
        pace = self.pacer.pace if self.pacer else None
        record = self.store.record if self.store is not None else None
        transmission = None
        try:
            for transmission in chunk:
                payload = transmission.payload
                if transmission.stamps:
                    if pace is not None:
                        pace(transmission.count)
                    stamp = (time_ns() - midnight).to_bytes(6, "big")
                    for offset in transmission.stamps:
                        payload[offset:offset + 6] = stamp
                if record is not None and not transmission.is_copy:
                    # before the lines: a receiver's request can never outrun the record
                    record(transmission.first_seq, transmission.count, payload)
                for line in transmission.lines:
                    sendto(payload, endpoints[line])
        except OSError as exc:
            line = transmission.lines[0] if transmission and transmission.lines else 0
            raise SendError(describe_send_error(exc, endpoints[line])) from None

    def next_due_ns(self) -> int:
        """When the next data packet may go."""
        return self.pacer.due_ns() if self.pacer else time.perf_counter_ns()

    def control(self, packet: bytes) -> None:
        """A heartbeat or end-of-session packet, on every line (never subject to loss)."""
        for endpoint in self.endpoints:
            try:
                self.sock.sendto(packet, endpoint)
            except OSError as exc:
                raise SendError(describe_send_error(exc, endpoint)) from None


class _Heartbeats:
    """MoldUDP64 heartbeats every `interval_s` during the run, checked between chunks, and a
    last one after the data so that messages lost at the tail become visible to a receiver."""

    def __init__(self, sender: _Sender, session: bytes, ledger: Ledger, interval_s: float | None):
        self.sender = sender
        self.session = session
        self.ledger = ledger
        self.interval_ns = None if interval_s is None else int(interval_s * 1e9)
        self.next_ns = None if interval_s is None else time.perf_counter_ns() + self.interval_ns

    def _send(self, next_seq: int) -> None:
        self.sender.control(moldudp64.heartbeat(self.session, next_seq))
        self.ledger.record_heartbeat(next_seq)

    def send_due(self, next_seq: int) -> None:
        """Sends those due before the next chunk may go: at a slow rate the wait for it can span
        several intervals, and heartbeats must keep flowing meanwhile."""
        if self.interval_ns is None:
            return
        chunk_due = self.sender.next_due_ns()
        for _ in range(1_000_000):  # bounded: one pass per interval
            if self.next_ns > chunk_due:
                break
            wait_until(self.next_ns)
            self._send(next_seq)
            self.next_ns += self.interval_ns

    def send_final(self, next_seq: int) -> None:
        if self.interval_ns is not None:
            self._send(next_seq)


def _run_facts(config: PublishConfig, midnight_ns: int, started_real_ns: int, elapsed_ns: int,
               summary: dict, sender: _Sender) -> dict:
    """The run's own facts, beside the ledger's counts:

    exchange_midnight_realtime_ns  what ITCH timestamps count from (a receiver's decoder config)
    started_realtime_ns            CLOCK_REALTIME when the first packet was due
    elapsed_s                      from the first packet to the end-of-session packet
    achieved_rate_msgs_per_s       messages scheduled (lost ones included) per second
    achieved_rate_pkts_per_s       data packets put on all lines together per second
    pacing_slid_s                  time the pacer gave up catching up on (see pacing.py)
    """
    seconds = elapsed_ns / 1e9
    packets = sum(summary["packets_sent"].values())
    return {
        "session": config.session,
        "lines": {LINE_NAMES[i]: f"{g}:{p}" for i, (g, p) in enumerate(config.endpoints)},
        "per_packet": config.per_packet,
        "mix": config.mix,
        "seed": config.seed,
        "exchange_tz": config.exchange_tz or "local",
        "exchange_midnight_realtime_ns": midnight_ns,
        "started_realtime_ns": started_real_ns,
        "elapsed_s": round(seconds, 6),
        "target_rate_msgs_per_s": config.rate,
        "achieved_rate_msgs_per_s": round(summary["messages_scheduled"] / seconds, 1) if seconds else None,
        "achieved_rate_pkts_per_s": round(packets / seconds, 1) if seconds else None,
        "pacing_slid_s": round(sender.pacer.slid_ns / 1e9, 6) if sender.pacer else 0.0,
    }


def write_summary(path: str, summary: dict) -> None:
    """Atomically, so a reader polling for the file never sees half of it."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as out:
        json.dump(summary, out, indent=2, sort_keys=True)
        out.write("\n")
    os.replace(tmp, path)
