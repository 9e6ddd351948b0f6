"""Write the fuzzer's seed corpus: valid decoder scripts in the format fuzz_decode.c reads.

    python native/fuzz/seeds.py DIR

Each seed is one script: a config byte (bit 0: two lines), then records [op][len:2][data]. The
frames come from tests/support/frames.py (the same builders the unit tests use), addressed to the
harness's lines: A = 239.1.1.1:5000, B = 239.1.1.2:5001 from 198.18.0.1 (source-specific).
"""
from __future__ import annotations

import os
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from tests.support import frames as F  # noqa: E402  (needs the repository root on sys.path)

ONE_LINE, TWO_LINES, TIGHT_JUMPS, BOOKS, LEVELS_ONLY, REREQUEST, IN_ORDER = 0, 1, 2, 4, 8, 16, 32
FRAME, FRAME_KERNEL_TIME, MOLD_A, MOLD_B, REPLY, TICK, FLUSH = 0, 2, 3, 4, 5, 6, 7
A = ("239.1.1.1", 5000)
B = ("239.1.1.2", 5001)


def record(op: int, data: bytes = b"", wait_eighths: int = 0) -> bytes:
    """One step; wait_eighths of the arbitration window pass before it (0..31)."""
    return bytes([op | wait_eighths << 3]) + struct.pack(">H", len(data)) + data


def on(line, payload: bytes, vlans=()) -> bytes:
    return record(FRAME, F.frame(payload, *line, vlans=vlans))


def hole_table(config: int) -> bytes:
    """Over TW_MAX_HOLES (64) holes opened at once, cheaply: heartbeats that each jump 3 ahead,
    then fills in the middle of holes (the timing records are shared past 64)."""
    steps = [record(MOLD_A, F.run_of(1, 1))]
    steps += [record(MOLD_A, F.heartbeat(2 + 3 * i)) for i in range(1, 70)]
    steps += [record(MOLD_B if config == TWO_LINES else MOLD_A, F.run_of(seq, 1))
              for seq in (3, 30, 150, 206, 207, 2)]
    return bytes([config]) + b"".join(steps) + record(TICK, wait_eighths=9) + record(FLUSH)


def book_day(config: int, messages: int = 240, stocks: int = 10, seed: int = 3) -> bytes:
    """A small generated trading day (tickwire_feed's market, day mode) for books of 64 orders and
    8 instruments: adds, executions, cancels, deletes, replaces, trades; more stocks than the
    books hold, and enough orders to overflow them."""
    from tickwire_feed.market import Mix
    from tickwire_feed.schedule import Schedule, ScheduleConfig
    schedule = Schedule(ScheduleConfig(messages=messages, per_packet=6, day=True, stocks=stocks,
                                       seed=seed, mix=Mix.parse("A=30,F=6,E=8,C=3,X=6,D=22,U=12,P=3,Q=1,H=1")))
    packets = [t for chunk in iter(lambda: schedule.next_chunk(64), []) for t in chunk]
    return bytes([config]) + b"".join(record(MOLD_A, bytes(t.payload)) for t in packets)


def seeds() -> dict[str, bytes]:
    all_types = F.mold(1, [F.itch(t, timestamp_ns=34_199_999_000_000) for t in F.ITCH_LENGTHS])
    return {
        "plain": bytes([ONE_LINE]) + b"".join(on(A, F.run_of(1 + 5 * i, 5)) for i in range(4)),
        "vlan": bytes([ONE_LINE]) + on(A, F.run_of(1, 3), vlans=((F.TPID_8021Q, 141),))
        + on(A, F.run_of(4, 3), vlans=((F.TPID_8021AD, 10), (F.TPID_8021Q, 20))),
        "all-types": bytes([ONE_LINE]) + record(FRAME_KERNEL_TIME, F.frame(all_types, *A)),
        "heartbeat": bytes([ONE_LINE]) + on(A, F.run_of(1, 2)) + on(A, F.heartbeat(3))
        + on(A, F.heartbeat(7)),
        "end-of-session": bytes([ONE_LINE]) + on(A, F.run_of(1, 2)) + on(A, F.end_of_session(3))
        + on(A, F.run_of(1, 2, session=b"0000010060")),
        "gap-and-late-fill": bytes([ONE_LINE]) + on(A, F.run_of(1, 3)) + on(A, F.run_of(8, 2))
        + on(A, F.run_of(4, 4)) + on(A, F.run_of(4, 1)),
        # re-requests: a gap asked for and answered (in parts, with messages outside the request
        # and a wrong session), one that runs out of attempts, and the same through A/B
        "rerequest-fill": bytes([REREQUEST | IN_ORDER]) + on(A, F.run_of(1, 2))
        + on(A, F.run_of(9, 3)) + record(REPLY, F.run_of(3, 2)) + record(REPLY, F.run_of(5, 6))
        + record(REPLY, F.run_of(7, 1, session=b"OTHERSESS1")) + on(A, F.run_of(12, 1)),
        "rerequest-give-up": bytes([REREQUEST]) + on(A, F.run_of(1, 2)) + on(A, F.heartbeat(12))
        + record(TICK, wait_eighths=20) + record(TICK, wait_eighths=20)
        + record(REPLY, F.run_of(3, 9)) + on(A, F.run_of(3, 9)),
        "rerequest-ab": bytes([TWO_LINES | REREQUEST | IN_ORDER]) + on(A, F.run_of(1, 4))
        + on(B, F.run_of(1, 2)) + on(A, F.run_of(9, 4)) + on(B, F.run_of(9, 4))
        + record(REPLY, F.run_of(5, 4)) + on(B, F.run_of(3, 2)) + record(REPLY, b"garbage")
        + record(REPLY, F.heartbeat(13)) + on(A, F.end_of_session(13)) + record(FLUSH),
        "ab-arbitration": bytes([TWO_LINES]) + on(A, F.run_of(1, 4)) + on(B, F.run_of(1, 4))
        + on(A, F.run_of(9, 4)) + on(B, F.run_of(5, 8)) + on(A, F.run_of(20, 1))
        + record(TICK, wait_eighths=9) + on(B, F.run_of(13, 7)) + record(FLUSH),
        "mold-direct": bytes([TWO_LINES]) + record(MOLD_A, F.run_of(1, 3))
        + record(MOLD_B, F.run_of(2, 3)) + record(MOLD_B, F.heartbeat(9), wait_eighths=4),
        "malformed": bytes([ONE_LINE]) + on(A, F.run_of(1, 3)[:-4])
        + on(A, F.mold(1, [F.itch("A"), b"Z" * 12, F.itch("E", length=30)]))
        + record(FRAME, F.frame(F.run_of(4, 2), *A)[:40]),
        # every short cut of tagged frames: the length checks' edges, one byte either side
        "truncated": bytes([ONE_LINE]) + b"".join(
            record(FRAME, F.frame(F.run_of(1, 1), *A, vlans=tags)[:cut])
            for tags in (((F.TPID_8021Q, 141),), ((F.TPID_8021AD, 10), (F.TPID_8021Q, 20)))
            for cut in range(10, 70)),
        "hole-table-one-line": hole_table(ONE_LINE),
        "hole-table-two-lines": hole_table(TWO_LINES),
        "sessions": bytes([ONE_LINE]) + b"".join(
            on(A, F.run_of(1, 2, session=f"SESSION-{i:02d}".encode())) for i in range(10)),
        # Sequencing rules (docs/design.md): suspect jumps held, then confirmed by the other line
        # or by the same line continuing; saturation of `missing`.
        "suspect-and-confirmed": bytes([TWO_LINES | TIGHT_JUMPS]) + record(MOLD_A, F.run_of(1, 3))
        + record(MOLD_A, F.heartbeat(2**64 - 5)) + record(MOLD_A, F.run_of(4, 2))
        + record(MOLD_A, F.run_of(5000, 2)) + record(MOLD_B, F.run_of(5000, 2))
        + record(MOLD_A, F.run_of(90000, 1)) + record(MOLD_A, F.run_of(90001, 1), wait_eighths=2)
        + record(TICK, wait_eighths=9) + record(FLUSH),
        "missing-saturates": bytes([TWO_LINES]) + b"".join(
            record(op, payload) for session in (b"SESSION--X", b"SESSION--Y")
            for payload in (F.run_of(1, 1, session=session), F.heartbeat(2**64 - 2, session=session))
            for op in (MOLD_A, MOLD_B)),
        # a new session starts at 1 (B lost its first packet); end of session settles holes
        "session-change": bytes([TWO_LINES]) + record(MOLD_A, F.run_of(1, 5))
        + record(MOLD_B, F.run_of(1, 5)) + record(MOLD_B, F.run_of(5, 4, session=b"SESSION--Y"))
        + record(MOLD_A, F.run_of(1, 8, session=b"SESSION--Y"))
        + record(MOLD_A, F.run_of(11, 2, session=b"SESSION--Y"))
        + record(MOLD_A, F.end_of_session(13, session=b"SESSION--Y"))
        + record(MOLD_B, F.run_of(9, 6, session=b"SESSION--Y")) + record(FLUSH),
        # B ahead losing every other packet, A complete behind: the bitmap window's job
        "every-other-on-b": bytes([TWO_LINES]) + b"".join(
            record(MOLD_B, F.run_of(seq, 1)) for seq in range(1, 200, 2)) + b"".join(
            record(MOLD_A, F.run_of(seq, 2)) for seq in range(1, 200, 2)),
        # a pending hole pushed out of the window, then filled from below it
        "window-overflow": bytes([TWO_LINES]) + record(MOLD_A, F.run_of(1, 1))
        + record(MOLD_A, F.run_of(3, 1)) + record(MOLD_A, F.heartbeat(65536 + 13))
        + record(MOLD_B, F.run_of(2, 1)) + record(MOLD_B, F.run_of(65536 + 12, 1)),
        # tw_decoder_pending() at the end of a script (no flush): a hole still missing, and a hole
        # whose last messages came late on the line that revealed it (its timing record remains)
        "pending-at-end": bytes([TWO_LINES]) + record(MOLD_A, F.run_of(1, 3))
        + record(MOLD_B, F.run_of(1, 3)) + record(MOLD_A, F.run_of(9, 1)),
        # the books: a day's messages, full book and levels only, and a day with a hole in it
        "books-day": book_day(ONE_LINE | BOOKS),
        "books-levels-only": book_day(ONE_LINE | BOOKS | LEVELS_ONLY, seed=4),
        "books-gap": book_day(ONE_LINE | BOOKS, messages=60, seed=5)
        + record(MOLD_A, F.run_of(200, 2)),
        "pending-filled-late": bytes([TWO_LINES]) + record(MOLD_A, F.run_of(1, 10))
        + record(MOLD_B, F.run_of(1, 10)) + record(MOLD_A, F.run_of(15, 1), wait_eighths=1)
        + record(MOLD_B, F.run_of(11, 2), wait_eighths=1)
        + record(MOLD_A, F.run_of(13, 2), wait_eighths=1),
    }


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} DIR", file=sys.stderr)
        return 2
    os.makedirs(argv[1], exist_ok=True)
    for name, data in seeds().items():
        with open(os.path.join(argv[1], name), "wb") as f:
            f.write(data)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
