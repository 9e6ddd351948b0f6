"""Replay captured MoldUDP64 packets to a multicast group of our choosing.

The UDP payloads of the capture files are sent unchanged (sequence numbers, sessions and ITCH
timestamps as captured) to GROUP:PORT, in file order, optionally paced in packets per second.
Captures from different sessions and days (or sanitized ones, whose sequence numbers are all
zero) do not form one stream a receiver can follow; `renumber` rewrites each MoldUDP64 header so
that the replay is one gap-free session from `start_seq` on (messages untouched).
The summary says what was sent, with the ITCH messages counted by type as parsed from the
payloads, so a receiver can be checked against real exchange traffic.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from . import moldudp64
from .itch import FORMATS
from .net import describe_send_error, open_sender, parse_group_port
from .pacing import Pacer
from .pcap import CaptureStats, udp_datagrams
from .publish import ConfigError, SendError, write_summary


@dataclass
class ReplayConfig:
    to: tuple[str, int] | str
    files: list[str]
    iface: str | None = None
    source_ip: str | None = None
    rate: float | None = None          # packets per second; None = as fast as possible
    ttl: int = 1
    multicast_loop: bool = False
    summary_json: str | None = None
    renumber: bool = False
    session: str = "REPLAY"
    start_seq: int = 1
    destination: tuple[str, int] = field(init=False, default=("", 0))


def renumbered(payloads: list[bytes], session: str, start_seq: int) -> list[bytes]:
    """The payloads as one session: data packets numbered back to back, heartbeats and end of
    session announcing the next number. A payload that is not MoldUDP64 is kept as it is."""
    session_bytes = moldudp64.session_bytes(session)
    next_seq, out = start_seq, []
    for payload in payloads:
        try:
            packet = moldudp64.decode_packet(payload)
        except moldudp64.MoldError:
            out.append(payload)
            continue
        out.append(moldudp64.HEADER.pack(session_bytes, next_seq, packet.count)
                   + payload[moldudp64.HEADER_LENGTH:])
        next_seq += len(packet.messages)
    return out


def load_payloads(files: list[str]) -> tuple[list[bytes], CaptureStats]:
    stats = CaptureStats()
    payloads = [d.payload for path in files for d in udp_datagrams(path, stats)]
    return payloads, stats


def count_contents(payloads: list[bytes]) -> dict:
    """What a receiver decoding these payloads must find (every copy counted, no arbitration)."""
    by_type: Counter = Counter()
    heartbeats = end_of_session = malformed_packets = malformed_messages = messages = 0
    for payload in payloads:
        try:
            packet = moldudp64.decode_packet(payload)
        except moldudp64.MoldError:
            malformed_packets += 1
            continue
        heartbeats += packet.is_heartbeat
        end_of_session += packet.is_end_of_session
        for message in packet.messages:
            fmt = FORMATS.get(message[:1])
            if fmt is None or len(message) != fmt.length:
                malformed_messages += 1
            else:
                messages += 1
                by_type[fmt.type.decode()] += 1
    return {"messages": messages, "messages_by_type": dict(sorted(by_type.items())),
            "heartbeats": heartbeats, "end_of_session": end_of_session,
            "malformed_packets": malformed_packets, "malformed_messages": malformed_messages}


def replay(config: ReplayConfig) -> dict:
    if not config.files:
        raise ConfigError("give at least one capture file")
    if config.rate is not None and not config.rate > 0:
        raise ConfigError(f"--rate must be > 0 packets per second, got {config.rate}")
    to = config.to if isinstance(config.to, str) else f"{config.to[0]}:{config.to[1]}"
    config.destination = parse_group_port(to, "--to")
    if config.start_seq < 1:
        raise ConfigError(f"--start-seq must be >= 1, got {config.start_seq}")
    try:
        moldudp64.session_bytes(config.session)
    except (moldudp64.MoldError, UnicodeEncodeError) as exc:
        raise ConfigError(f"--session: {exc}") from None
    payloads, stats = load_payloads(config.files)  # all parsed before the first packet goes out
    if config.renumber:
        payloads = renumbered(payloads, config.session, config.start_seq)
    sock = open_sender(iface=config.iface, source_ip=config.source_ip, ttl=config.ttl,
                       loop=config.multicast_loop)
    pace = Pacer(config.rate).pace if config.rate else None
    try:
        started = time.perf_counter_ns()
        for payload in payloads:
            if pace is not None:
                pace(1)
            try:
                sock.sendto(payload, config.destination)
            except OSError as exc:
                raise SendError(describe_send_error(exc, config.destination)) from None
        seconds = (time.perf_counter_ns() - started) / 1e9
    finally:
        sock.close()
    summary = {
        "to": f"{config.destination[0]}:{config.destination[1]}",
        "files": list(config.files),
        "frames_read": stats.frames,
        "frames_skipped": stats.skipped,
        "packets_sent": len(payloads),
        "renumbered": config.renumber,
        "elapsed_s": round(seconds, 6),
        "achieved_rate_pkts_per_s": round(len(payloads) / seconds, 1) if seconds else None,
        **count_contents(payloads),
    }
    if config.summary_json:
        write_summary(config.summary_json, summary)
    return summary
