"""The ground truth of a run: what was actually sent, and what a correct receiver must report.

The sender records every transmission it has sent (`record`, in any order of chunks), every
heartbeat and the end of session; `summary()` turns that into the numbers the tests compare a
receiver with.

Definitions (a "sequence number" is a MoldUDP64 message sequence number; "delivered on a line"
means the sender put a packet holding it on that line's socket):

first_seq         the first sequence number of the run (--start-seq).
last_seq          the highest sequence number assigned: the end of the last data packet sent,
                  whether or not a line carried it. Injected gaps lie inside [first_seq, last_seq].
next_seq          last_seq + 1: where a run continuing this session starts (--start-seq).
messages_scheduled  messages that got a sequence number (every data packet sent, lost or not).
messages_sent     unique sequence numbers delivered on at least one line (malformed ones too).
messages_by_type  {type letter: unique well-formed messages delivered}, over the same set.
malformed_sent    unique malformed messages delivered (messages_sent = sum(messages_by_type)
                  + malformed_sent).
packets_sent      {line: data packets sent on it, duplicate copies included}; heartbeats and
                  end-of-session packets are counted apart.
gaps_injected     gap events injected (sequence-number skips); gap_numbers_injected: numbers skipped.
lost_on_a/b       scheduled messages the line's random loss kept off that line (never counts
                  injected gap numbers).
lost_on_all_lines scheduled messages no line delivered.
covered_by_other_line  messages lost on one line but delivered on the other.
missing_injected  sequence numbers in [first_seq, last_seq] delivered on no line:
                  gap_numbers_injected + lost_on_all_lines.
duplicates_sent   message copies sent by deliberate duplicate packets, summed over lines.
expected_duplicates  every message copy delivered beyond the first of its sequence number
                  (the losing line of A/B arbitration plus deliberate duplicates): what a receiver
                  that counts each later copy of a message as a duplicate must report.
reordered         adjacent data-packet pairs sent in swapped order.
heartbeats        heartbeat packets sent on each line (each line gets the same ones).
end_of_session    end-of-session packets sent on each line (0 or 1).
first_delivered_seq / last_announced_seq
                  the window a receiver can see: from the lowest sequence number delivered, to the
                  highest one it learnt of, either delivered in a data packet or announced by a
                  heartbeat or end-of-session packet (their sequence number minus one).
expected_gaps     gap EVENTS a correct receiver counts: maximal runs of consecutive sequence
                  numbers inside that window that no line delivered. An injected gap next to a
                  packet lost on every line makes ONE event.
expected_missing  sequence numbers inside those runs.
leading_missing   undelivered numbers before first_delivered_seq (a receiver that knows the session
                  starts at first_seq sees them as one more gap; one that starts from the first
                  packet it sees does not).
trailing_missing  undelivered numbers after last_announced_seq (no receiver can know of them).
"""
from __future__ import annotations

import re

from .schedule import MALFORMED_TYPE, Transmission

_SCHEDULED = 0x80            # per sequence number: a data message was assigned this number
_LINE_BITS = (0x01, 0x02)    # per sequence number: delivered on line A / line B
_UNDELIVERED_RUN = re.compile(rb"[\x00\x80]+")
_DELIVERED = re.compile(rb"[^\x00\x80]")
LINE_NAMES = ("A", "B")


def _count_where(flags: bytearray, predicate) -> int:
    table = bytes(1 if predicate(b) else 0 for b in range(256))
    return flags.translate(table).count(1)


class Ledger:
    def __init__(self, first_seq: int, lines: int):
        self.first_seq = first_seq
        self.lines = lines
        self.flags = bytearray()             # index: sequence number - first_seq
        self.type_counts = [0] * 256         # unique delivered messages by type byte
        self.packets = [0] * lines
        self.copies_delivered = 0            # message copies on all lines, duplicates included
        self.duplicates_sent = 0
        self.reordered = 0
        self.gaps_injected = 0
        self.gap_numbers = 0
        self.heartbeats = 0
        self.end_of_session = 0
        self.announced_seq = first_seq - 1   # highest sequence number a receiver learnt of

    def record(self, sent: list[Transmission]) -> None:
        flags = self.flags
        for t in sent:
            start = t.first_seq - self.first_seq
            end = start + t.count
            if end > len(flags):
                flags.extend(bytes(end - len(flags)))
            mask = 0
            for line in t.lines:
                mask |= _LINE_BITS[line]
                self.packets[line] += 1
            copies = t.count * len(t.lines)
            self.copies_delivered += copies
            if t.is_copy:
                self.duplicates_sent += copies
            else:
                self.gaps_injected += t.gap_before > 0
                self.gap_numbers += t.gap_before
                self.reordered += t.swapped
            # All numbers of one packet share their state, so the first one speaks for them.
            before = flags[start] | _SCHEDULED
            after = before | mask
            if after != flags[start]:
                flags[start:end] = bytes((after,)) * t.count
            if before == _SCHEDULED and mask:
                counts = self.type_counts
                for type_byte in t.types:
                    counts[type_byte] += 1
            if mask and end - 1 + self.first_seq > self.announced_seq:
                self.announced_seq = end - 1 + self.first_seq

    # Heartbeats and end of session announce `next_seq`; only the highest announcement matters,
    # so these may be recorded before or after the data they followed.
    def record_heartbeat(self, next_seq: int) -> None:
        self.heartbeats += 1
        self.announced_seq = max(self.announced_seq, next_seq - 1)

    def record_end_of_session(self, next_seq: int) -> None:
        self.end_of_session += 1
        self.announced_seq = max(self.announced_seq, next_seq - 1)

    def summary(self) -> dict:
        flags = self.flags
        scheduled = _count_where(flags, lambda b: b & _SCHEDULED)
        delivered = _count_where(flags, lambda b: b & 0x03)
        lost = [_count_where(flags, lambda b, bit=bit: b & _SCHEDULED and not b & bit)
                for bit in _LINE_BITS[:self.lines]]
        lost_on_all = flags.count(_SCHEDULED)
        covered = sum(lost) - self.lines * lost_on_all if self.lines == 2 else 0

        first_hit = _DELIVERED.search(flags)
        if first_hit is None:
            window_start, window_end = len(flags), len(flags)
        else:
            window_start = first_hit.start()
            window_end = self.announced_seq - self.first_seq + 1  # exclusive
        runs = [m.end() - m.start() for m in _UNDELIVERED_RUN.finditer(flags, window_start, window_end)]
        undelivered_total = len(flags) - delivered

        by_type = {chr(b): n for b, n in enumerate(self.type_counts) if n and b != MALFORMED_TYPE}
        return {
            "first_seq": self.first_seq,
            "last_seq": self.first_seq + len(flags) - 1,
            "next_seq": self.first_seq + len(flags),
            "messages_scheduled": scheduled,
            "messages_sent": delivered,
            "messages_by_type": dict(sorted(by_type.items())),
            "malformed_sent": self.type_counts[MALFORMED_TYPE],
            "packets_sent": {LINE_NAMES[i]: n for i, n in enumerate(self.packets)},
            "gaps_injected": self.gaps_injected,
            "gap_numbers_injected": self.gap_numbers,
            "lost_on_a": lost[0],
            "lost_on_b": lost[1] if self.lines == 2 else 0,
            "lost_on_all_lines": lost_on_all,
            "covered_by_other_line": covered,
            "missing_injected": self.gap_numbers + lost_on_all,
            "duplicates_sent": self.duplicates_sent,
            "expected_duplicates": self.copies_delivered - delivered,
            "reordered": self.reordered,
            "heartbeats": self.heartbeats,
            "end_of_session": self.end_of_session,
            "first_delivered_seq": self.first_seq + window_start if first_hit else None,
            "last_announced_seq": self.announced_seq if first_hit else None,
            "expected_gaps": len(runs),
            "expected_missing": sum(runs),
            "leading_missing": window_start,
            "trailing_missing": undelivered_total - window_start - sum(runs),
        }
