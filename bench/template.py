"""The packets the publisher sends: MoldUDP64 payloads of ITCH 5.0 messages from tickwire_feed's market.

The C publisher (bench/publisher.c) loops over a fixed set of prepared packets, rewriting only
the sequence numbers and timestamps at send time, so its per-packet cost stays flat. This module
makes that set from the same market model and message mix as `tickwire-feed` (adds, deletes and
replaces dominate, every ITCH type appears), with a varying number of messages per packet the
way a real feed batches them: uniformly 1..2*mean-1 (the publisher counts what it really sent).

File format, read by publisher.c: repeated [uint16 little-endian length][payload].
"""
from __future__ import annotations

import random
import struct
from collections import Counter
from dataclasses import dataclass

from tickwire_feed import moldudp64
from tickwire_feed.market import Market, Mix

SESSION = "TWBENCH"


@dataclass(frozen=True)
class Template:
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


def make_template(packets: int = 4096, mean_per_packet: int = 4, mix: str = "default",
                  seed: int = 1) -> Template:
    if packets < 1 or packets > 65536:
        raise ValueError(f"template packets must be 1..65536 (the publisher's limit), got {packets}")
    if not 1 <= mean_per_packet <= 16:
        raise ValueError(f"messages per packet must average 1..16 (to fit 1400 bytes), got {mean_per_packet}")
    rng = random.Random(f"tickwire-bench/{seed}")
    market, chosen = Market(random.Random(f"tickwire-bench/{seed}/market")), Mix.parse(mix)
    session = moldudp64.session_bytes(SESSION)
    payloads = []
    for _ in range(packets):
        count = rng.randint(1, 2 * mean_per_packet - 1)
        messages = [market.message(chosen.draw(rng)) for _ in range(count)]
        payloads.append(bytes(moldudp64.encode_packet(session, 0, messages)))
    return Template(payloads)
