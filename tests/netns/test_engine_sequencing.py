"""Sequencing rules through the real engine (AF_XDP on a veth pair, generic XDP): issue 11's
defects 1-3 with hand-made MoldUDP64 frames sent from the exchange namespace, exact counts.

The frames go out of one AF_PACKET socket in the order given, so the engine sees them in that
order. A long arbitration window (--arbitration-window-ms) keeps every pending hole pending for
the whole test: what the counts show is the sequencing rule, never a timer. Needs root: fails
instead of skipping when TICKWIRE_REQUIRE_NETNS=1 (CI).
"""
from __future__ import annotations

import textwrap

import pytest

from tests.support import frames as F
from tests.support.engine_run import engine_running
from tests.support.netns import VethPair

pytestmark = pytest.mark.netns

GROUP_A, GROUP_B, PORT = "239.78.1.1", "239.78.1.2", 26478
LINE_A, LINE_B = f"A={GROUP_A}:{PORT}", f"B={GROUP_B}:{PORT}"
LONG_WINDOW = ["--arbitration-window-ms", "30000"]
NEAR_2_64 = 2**64 - 5


@pytest.fixture
def pair():
    with VethPair() as p:
        yield p


def on(line: str, payload: bytes) -> bytes:
    """A MoldUDP64 payload as a frame of line A or B."""
    return F.frame(payload, GROUP_A if line == "A" else GROUP_B, PORT)


def send(pair: VethPair, tmp_path, frames: list[bytes]) -> None:
    """Send frames, in order, from the exchange side of the pair (AF_PACKET)."""
    path = tmp_path / f"frames-{len(list(tmp_path.iterdir()))}.bin"
    path.write_bytes(b"".join(len(f).to_bytes(2, "big") + f for f in frames))
    script = textwrap.dedent(f"""
        import socket
        data = open({str(path)!r}, "rb").read()
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        s.bind(({pair.exchange_if!r}, 0))
        off = 0
        while off < len(data):
            n = int.from_bytes(data[off:off + 2], "big")
            s.send(data[off + 2:off + 2 + n])
            off += 2 + n
    """)
    pair.run(pair.exchange_ns, "python3", "-c", script)


def test_an_implausible_jump_is_held_and_real_gaps_are_still_counted(pair, tmp_path):
    """Defect 1: a heartbeat or packet near 2^64 once opened a hole that wrapped `missing` and made
    every later message "recovered"."""
    before = [on(line, F.run_of(seq, 5)) for seq in (1, 6) for line in "AB"]
    hostile = [on("A", F.heartbeat(NEAR_2_64)), on("B", F.run_of(NEAR_2_64 - 10, 3))]
    after = [on(line, F.run_of(seq, 5)) for seq in (11, 16) for line in "AB"]
    after += [on(line, F.run_of(25, 6)) for line in "AB"]            # 21..24 lost on both lines
    with engine_running(pair, [LINE_A, LINE_B], tmp_path, LONG_WINDOW) as engine:
        send(pair, tmp_path, before + hostile + after)
        engine.settle(messages=26)
        final = engine.stop()
    assert (final["suspect_jumps"], final["confirmed_jumps"]) == (2, 0)
    assert (final["messages"], final["gaps"], final["missing"], final["recovered"]) == (26, 1, 4, 0)
    assert final["duplicates"] == 26
    assert final["packets"] == len(before + hostile + after)


def test_b_losing_every_other_packet_costs_none_of_as_messages(pair, tmp_path):
    """Defect 2: more than 64 pending holes once dropped the oldest, and A's copies of those
    messages were then discarded as duplicates."""
    n = 200
    b_ahead = [on("B", F.run_of(seq, 1)) for seq in range(1, n + 1, 2)]  # 100 holes on B
    a_complete = [on("A", F.run_of(seq, 1)) for seq in range(1, n + 1)]
    with engine_running(pair, [LINE_A, LINE_B], tmp_path, LONG_WINDOW) as engine:
        send(pair, tmp_path, b_ahead + a_complete)
        engine.settle(messages=n)
        final = engine.stop()
    assert (final["messages"], final["duplicates"], final["gaps"], final["missing"]) == (n, n // 2, 0, 0)
    assert final["lines"]["A"]["first_messages"] == n // 2
    assert final["lines"]["B"]["first_messages"] == n // 2
    assert final["window_overflow"] == 0 and final["beyond_window"] == 0


def test_a_new_session_starts_at_1_and_its_end_settles_its_holes(pair, tmp_path):
    """Defect 3: a new session started at B's first packet, so A's copy of what B lost before it
    was discarded; and an end of session left its holes pending."""
    x, y = b"TWSESSIONX", b"TWSESSIONY"
    first = [on(line, F.run_of(1, 5, session=x)) for line in "AB"]
    first += [on("B", F.run_of(5, 4, session=y))]                    # B lost y's first packet
    first += [on("A", F.run_of(1, 4, session=y)), on("A", F.run_of(5, 4, session=y))]
    first += [on("A", F.run_of(11, 2, session=y))]                   # 9, 10 pending for B
    first += [on("A", F.end_of_session(13, session=y))]              # ... declared at once
    with engine_running(pair, [LINE_A, LINE_B], tmp_path, LONG_WINDOW) as engine:
        send(pair, tmp_path, first)
        settled = engine.settle(messages=15)
        late = [on("B", F.run_of(9, 2, session=y))]                 # recovered
        late += [on("B", F.run_of(13, 3, session=y))]                # past the end: ignored
        late += [on("B", F.heartbeat(40, session=y))]                # no hole past the end
        send(pair, tmp_path, late)
        engine.settle(messages=17)
        final = engine.stop()
    assert (settled["messages"], settled["duplicates"]) == (15, 9)
    assert (settled["gaps"], settled["missing"]) == (1, 2)            # long before the window ends
    assert (final["messages"], final["duplicates"], final["gaps"], final["missing"]) == (17, 9, 1, 2)
    assert (final["recovered"], final["after_end"], final["end_of_session"]) == (2, 3, 1)
