"""The plan of what goes on the wire: sequence numbers, packets, and the faults injected into them.

Everything here is decided ahead of sending and from seeded random generators, so a run with the
same options produces the same packets, losses and faults every time; only the ITCH timestamps
(stamped at send time) differ. The plan is cut into chunks that the sender sends in one go; a
chunk never splits a reordered pair, so a run stopped between chunks leaves no half-applied fault.

Data packets are numbered k = 1, 2, 3, ... in sequence-number order. Per option:

- per_packet K: a data packet carries K messages, fewer when the next one would push its payload
  past MAX_PAYLOAD_BYTES (so it never needs IP fragmentation), and the last one may carry fewer.
- gap_every N, gap_size M: after every N-th data packet, M sequence numbers are skipped on every
  line (never sent anywhere). A gap is only placed before a following data packet, never at the
  end, so every injected gap is visible to a receiver.
- loss A/B (percent): each line drops each data packet independently with that probability,
  drawn from its own seeded generator (changing line B's loss never changes line A's pattern).
- loss_burst_every N, loss_burst_size M: every N-th data packet starts a run of M data packets
  that no line carries (a burst lost on both lines: only a re-request can bring it back).
- duplicate_every N: every N-th data packet is sent a second time right after the first, on the
  lines that carried the first, with the same bytes (same timestamps).
- reorder_every N (N >= 2): every N-th data packet swaps places with the one after it (on every
  line; a duplicate copy stays right after its original). Pairs never overlap.
- malformed_every N: every N-th message (counting all messages from 1) is made malformed:
  alternately an unknown type byte and a known type one byte short. It still occupies its
  sequence number and is delivered like any other message.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from . import moldudp64
from .itch import FORMATS, TIMESTAMP_OFFSET
from .market import Market, Mix, malformed_message

MALFORMED_TYPE = 0  # the type recorded for a malformed message in Transmission.types
MAX_PAYLOAD_BYTES = 1500 - 20 - 8  # a 1500-byte MTU less the IPv4 and UDP headers
MAX_PER_PACKET = 1000
LENGTHS_BY_BYTE = {fmt.type[0]: fmt.length for fmt in FORMATS.values()}


class ScheduleError(ValueError):
    pass


@dataclass(frozen=True)
class ScheduleConfig:
    messages: int | None = None      # None: no end (the sender decides when to stop)
    per_packet: int = 1
    mix: Mix | None = None           # None: the default mix
    lines: int = 1                   # 1 (line A) or 2 (lines A and B)
    loss_a: float = 0.0              # percent
    loss_b: float = 0.0
    gap_every: int = 0               # 0 disables each fault
    gap_size: int = 1
    loss_burst_every: int = 0
    loss_burst_size: int = 1
    duplicate_every: int = 0
    reorder_every: int = 0
    malformed_every: int = 0
    session: str = "TICKWIRE"
    start_seq: int = 1
    seed: int = 1
    day: bool = False                # a trading day a book can be checked against (market.py)
    stocks: int = 16                 # instruments the market trades

    def validate(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ScheduleError(message)

        need(self.messages is None or self.messages >= 1, f"--messages must be >= 1, got {self.messages}")
        need(1 <= self.per_packet <= MAX_PER_PACKET,
             f"--per-packet must be 1..{MAX_PER_PACKET}, got {self.per_packet}")
        need(self.lines in (1, 2), f"a feed has 1 or 2 lines, got {self.lines}")
        for name, pct in (("--loss-a", self.loss_a), ("--loss-b", self.loss_b)):
            need(0.0 <= pct <= 100.0, f"{name} is a percentage 0..100, got {pct}")
        need(self.lines == 2 or self.loss_b == 0, "--loss-b needs a line B (--line B=GROUP:PORT)")
        need(self.loss_burst_every >= 0,
             f"--loss-burst-every must be >= 0 (0 disables it), got {self.loss_burst_every}")
        need(self.loss_burst_size >= 1, f"--loss-burst-size must be >= 1, got {self.loss_burst_size}")
        for name, value in (("--gap-every", self.gap_every), ("--duplicate-every", self.duplicate_every),
                            ("--malformed-every", self.malformed_every)):
            need(value >= 0, f"{name} must be >= 0 (0 disables it), got {value}")
        need(self.gap_size >= 1, f"--gap-size must be >= 1, got {self.gap_size}")
        need(self.reorder_every == 0 or self.reorder_every >= 2,
             f"--reorder-every must be 0 (off) or >= 2 (pairs may not overlap), got {self.reorder_every}")
        need(1 <= self.stocks <= 65535, f"--stocks must be 1..65535, got {self.stocks}")
        need(1 <= self.start_seq < 2**63, f"--start-seq must be 1..2^63-1, got {self.start_seq}")
        try:
            moldudp64.session_bytes(self.session)
        except (moldudp64.MoldError, UnicodeEncodeError) as exc:
            raise ScheduleError(f"--session: {exc}") from None


class Transmission:
    """One packet to send, on the lines listed (line 0 = A, 1 = B; lost lines are left out).

    The sender patches `stamps` (offsets of 6-byte ITCH timestamps) in `payload` just before
    sending; a duplicate copy has no stamps and so repeats its original's bytes exactly.
    """

    __slots__ = ("payload", "stamps", "lines", "first_seq", "count", "types", "is_copy",
                 "gap_before", "swapped", "duplicate")

    def __init__(self, payload: bytearray, stamps: tuple[int, ...], lines: tuple[int, ...],
                 first_seq: int, count: int, types: bytes, gap_before: int):
        self.payload = payload
        self.stamps = stamps
        self.lines = lines
        self.first_seq = first_seq
        self.count = count
        self.types = types            # one type letter per message, MALFORMED_TYPE if malformed
        self.is_copy = False
        self.gap_before = gap_before  # sequence numbers skipped right before first_seq
        self.swapped = False          # first of a reordered pair (sent before its predecessor)
        self.duplicate = False        # to be followed by a copy of itself

    def copy(self) -> "Transmission":
        twin = Transmission(self.payload, (), self.lines, self.first_seq, self.count, self.types, 0)
        twin.is_copy = True
        return twin


class Chunk(list):
    """Transmissions sent in one go. `next_seq` is the sequence number after the last data packet
    planned so far: what a heartbeat sent after this chunk announces."""

    next_seq: int = 0


class Schedule:
    def __init__(self, config: ScheduleConfig):
        config.validate()
        self.config = config
        self.session = moldudp64.session_bytes(config.session)
        seed = config.seed
        # Separate generators, so that e.g. a different loss on B leaves contents and A alone.
        self.market = Market(random.Random(f"tickwire-feed/{seed}/contents"), day=config.day,
                             stocks=config.stocks)
        self._mix_rng = random.Random(f"tickwire-feed/{seed}/mix")
        # A line without loss draws nothing and always delivers.
        self._loss_draws = tuple(
            (line, random.Random(f"tickwire-feed/{seed}/loss/{name}").random, pct / 100.0)
            for line, (name, pct) in enumerate((("A", config.loss_a), ("B", config.loss_b))[:config.lines]))
        self._all_lines = tuple(range(config.lines))
        self._lossless = config.loss_a == 0 and config.loss_b == 0 and config.loss_burst_every == 0
        self._burst_left = 0
        self.mix = config.mix or Mix.parse("default")
        self.next_seq = config.start_seq
        self.messages_planned = 0
        self.data_packets = 0
        self._pending_gap = 0
        self._carried_type = 0   # a drawn type that did not fit the previous packet

    @property
    def exhausted(self) -> bool:
        return self.config.messages is not None and self.messages_planned >= self.config.messages

    def next_chunk(self, min_packets: int) -> Chunk:
        """The next transmissions, covering at least `min_packets` data packets unless the plan
        ends first; an empty chunk once it has ended."""
        out = Chunk()
        made = 0
        while made < min_packets and not self.exhausted:
            packet = self._data_packet()
            made += 1
            if self._hit(self.config.reorder_every) and not self.exhausted:
                follower = self._data_packet()
                made += 1
                follower.swapped = True
                self._emit(out, follower)
            self._emit(out, packet)
        out.next_seq = self.next_seq
        return out

    def _hit(self, every: int) -> bool:
        return every > 0 and self.data_packets % every == 0

    @staticmethod
    def _emit(out: list[Transmission], packet: Transmission) -> None:
        out.append(packet)
        if packet.duplicate:
            out.append(packet.copy())

    def _data_packet(self) -> Transmission:
        # The hottest code of the planner (runs once per packet): locals over attribute lookups.
        cfg = self.config
        count = cfg.per_packet
        if cfg.messages is not None:
            count = min(count, cfg.messages - self.messages_planned)
        draw, rng, message_of = self.mix.draw, self._mix_rng, self.market.message
        resolve = self.market.resolve
        malformed_every = cfg.malformed_every
        messages, types, stamps = [], bytearray(), []
        size = moldudp64.HEADER_LENGTH
        for _ in range(count):
            # The type is drawn before its message is made, so one that does not fit waits for
            # the next packet without having touched the market's book.
            type_byte = resolve(self._carried_type or draw(rng))
            if messages and size + 2 + LENGTHS_BY_BYTE[type_byte] > MAX_PAYLOAD_BYTES:
                self._carried_type = type_byte
                break
            self._carried_type = 0
            self.messages_planned += 1
            message = message_of(type_byte)
            if malformed_every and self.messages_planned % malformed_every == 0:
                kind = (self.messages_planned // malformed_every - 1) % 2
                message = malformed_message(kind, message)
                type_byte = MALFORMED_TYPE
            messages.append(message)
            types.append(type_byte)
            stamps.append(size + 2 + TIMESTAMP_OFFSET)
            size += 2 + len(message)
        count = len(messages)

        self.data_packets += 1
        gap_before = self._pending_gap
        self._pending_gap = cfg.gap_size if self._hit(cfg.gap_every) else 0  # before the next packet
        first_seq = self.next_seq + gap_before
        self.next_seq = first_seq + count

        if self._hit(cfg.loss_burst_every):
            self._burst_left = cfg.loss_burst_size
        if self._lossless:
            lines = self._all_lines
        else:
            # drawn even inside a burst, so a burst never shifts the random losses after it
            lines = tuple(line for line, random_draw, p in self._loss_draws if random_draw() >= p)
            if self._burst_left:
                self._burst_left -= 1
                lines = ()
        packet = Transmission(moldudp64.encode_packet(self.session, first_seq, messages),
                              tuple(stamps), lines, first_seq, count, bytes(types), gap_before)
        packet.duplicate = self._hit(cfg.duplicate_every)
        return packet
