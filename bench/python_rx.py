"""The Python contender: a feed handler as a Python user writes it first.

A blocking UDP socket joined to the group, one recv() per datagram, MoldUDP64 and ITCH parsed
with struct and int.from_bytes: sequence gaps, counts by type, and each message's latency (its
ITCH timestamp against CLOCK_REALTIME on arrival, the same measurement the engine makes). No
batching, no busy polling, no pinning beyond the core the benchmark puts the process on.

    python -m bench.python_rx --iface IF --group G --port P --midnight-ns NS --stats-json PATH

On SIGUSR1, and at exit (SIGTERM/SIGINT), it replaces --stats-json with the keys the engine
writes (packets, messages, messages_by_type, gaps, ..., latency.exchange_to_engine.lines.A).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import struct
import sys
import time

from bench.histogram import Histogram
from tickwire_feed.itch import LENGTHS

MOLD_HEADER = struct.Struct(">10sQH")
ITCH_LENGTHS = {ord(t): n for t, n in LENGTHS.items()}


class FeedHandler:
    """Counts and latencies of MoldUDP64 packets; on_packet() is the whole hot path."""

    def __init__(self, midnight_ns: int):
        self.midnight_ns = midnight_ns
        self.next_seq: int | None = None
        self.packets = self.messages = self.gaps = self.missing = 0
        self.duplicates = self.malformed = 0
        self.by_type: dict[int, int] = {}
        self.latency = Histogram()

    def on_packet(self, data: bytes, now_ns: int) -> None:
        self.packets += 1
        if len(data) < 20:
            self.malformed += 1
            return
        _session, seq, count = MOLD_HEADER.unpack_from(data)
        if count == 0 or count == 0xFFFF:
            return  # heartbeat or end of session
        if self.next_seq is not None and seq != self.next_seq:
            if seq > self.next_seq:
                self.gaps += 1
                self.missing += seq - self.next_seq
            else:
                self.duplicates += count
                return
        self.next_seq = seq + count
        offset = 20
        for _ in range(count):
            if offset + 2 > len(data):
                self.malformed += 1
                return
            length = int.from_bytes(data[offset:offset + 2], "big")
            message = data[offset + 2:offset + 2 + length]
            offset += 2 + length
            if not message or ITCH_LENGTHS.get(message[0]) != len(message):
                self.malformed += 1
                continue
            self.messages += 1
            self.by_type[message[0]] = self.by_type.get(message[0], 0) + 1
            sent = self.midnight_ns + int.from_bytes(message[5:11], "big")
            if now_ns >= sent:
                self.latency.record(now_ns - sent)

    def stats(self) -> dict:
        return {"time": time.time(), "packets": self.packets, "messages": self.messages,
                "gaps": self.gaps, "missing": self.missing, "duplicates": self.duplicates,
                "malformed": self.malformed,
                "messages_by_type": {chr(t): n for t, n in sorted(self.by_type.items())},
                "latency": {"exchange_to_engine": {"lines": {"A": self.latency.to_dict()}}}}


def write_json_atomically(path: str, document: dict) -> None:
    with open(path + ".tmp", "w") as out:
        json.dump(document, out)
    os.replace(path + ".tmp", path)


def open_socket(iface: str, group: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((group, port))
    mreqn = socket.inet_aton(group) + socket.inet_aton("0.0.0.0") + struct.pack("=i", socket.if_nametoindex(iface))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
    return sock


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.python_rx", description=__doc__.split("\n")[0])
    parser.add_argument("--iface", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--midnight-ns", type=int, required=True)
    parser.add_argument("--stats-json", required=True)
    args = parser.parse_args(argv)

    handler = FeedHandler(args.midnight_ns)
    sock = open_socket(args.iface, args.group, args.port)
    signal.signal(signal.SIGUSR1, lambda *_: write_json_atomically(args.stats_json, handler.stats()))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    write_json_atomically(args.stats_json, handler.stats())  # "ready"
    try:
        while True:
            data = sock.recv(2048)
            handler.on_packet(data, time.clock_gettime_ns(time.CLOCK_REALTIME))
    except KeyboardInterrupt:
        pass
    finally:
        write_json_atomically(args.stats_json, handler.stats())
    return 0


if __name__ == "__main__":
    sys.exit(main())
