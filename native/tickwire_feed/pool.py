"""A prepared pool of MoldUDP64 packets for the fast senders (bench/publisher.c, `tickwire-feed blast`).

A sender that must reach millions of packets per second cannot plan each packet as it goes, so it
loops over a fixed set of prepared packets and rewrites only the sequence number and the ITCH
timestamps at send time. The pool comes from the same market model and message mix as
`tickwire-feed publish` (adds, deletes and replaces dominate, every ITCH type appears), with a
varying number of messages per packet the way a real feed batches them: uniformly
1..2*mean-1. Senders count what they really sent from the pool's contents.

File format (read by publisher.c and native/blast/blast.c): repeated
[uint16 little-endian length][MoldUDP64 payload].
"""
from __future__ import annotations

import random
import struct
from collections import Counter
from dataclasses import dataclass

from . import moldudp64
from .market import Market, Mix

SESSION = "TWBENCH"
MAX_PACKETS = 8192          # the generator's pool map (native/bpf/blast.h: BLAST_POOL_MAX)
MAX_PAYLOAD = 1472          # a 1500-byte MTU minus IPv4 and UDP headers
MAX_MESSAGES = 32           # per packet (blast.h: BLAST_MAX_MSGS)


class PoolError(ValueError):
    """A pool that the senders could not use; nothing was written."""


@dataclass(frozen=True)
class Pool:
    payloads: list[bytes]

    @property
    def messages(self) -> int:
        return sum(moldudp64.decode_packet(p).count for p in self.payloads)

    @property
    def messages_per_packet(self) -> float:
        return self.messages / len(self.payloads)

    def by_type(self) -> Counter:
        return Counter(chr(m[0]) for p in self.payloads for m in moldudp64.decode_packet(p).messages)

    def write(self, path: str) -> None:
        with open(path, "wb") as out:
            for payload in self.payloads:
                out.write(struct.pack("<H", len(payload)) + payload)


def make_pool(packets: int = 4096, mean_per_packet: int = 4, mix: str = "default", seed: int = 1,
              session: str = SESSION) -> Pool:
    if not 1 <= packets <= MAX_PACKETS:
        raise PoolError(f"pool packets must be 1..{MAX_PACKETS} (the generator's pool map), got {packets}")
    if not 1 <= mean_per_packet <= MAX_MESSAGES // 2:
        raise PoolError(f"messages per packet must average 1..{MAX_MESSAGES // 2} (at most "
                        f"{MAX_MESSAGES - 1} in one packet), got {mean_per_packet}")
    rng = random.Random(f"tickwire-bench/{seed}")
    market, chosen = Market(random.Random(f"tickwire-bench/{seed}/market")), Mix.parse(mix)
    session_raw = moldudp64.session_bytes(session)
    payloads = []
    for _ in range(packets):
        count = rng.randint(1, 2 * mean_per_packet - 1)
        messages = [market.message(chosen.draw(rng)) for _ in range(count)]
        payload = bytes(moldudp64.encode_packet(session_raw, 0, messages))
        if len(payload) > MAX_PAYLOAD:
            raise PoolError(f"a packet of {count} messages is {len(payload)} bytes, more than a "
                            f"1500-byte MTU carries ({MAX_PAYLOAD}): use fewer messages per packet")
        payloads.append(payload)
    return Pool(payloads)
