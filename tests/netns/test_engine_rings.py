"""AF_XDP ring set-up through the real engine (issue 11, defect 7): veth pair between two namespaces,
generic XDP, a real AF_XDP socket, hand-made frames sent from the exchange side (AF_PACKET).

- Every UMEM frame is in the fill ring before the XDP program is attached: a feed already flowing
  while the engine starts never meets an empty fill ring, and a burst sent as soon as the engine
  is up is received whole.
- A real stall of the real poll thread (the whole engine process stopped with SIGSTOP, so the
  kernel keeps delivering while nothing drains the rings) loses nothing up to the RX ring's size:
  4000 frames, a 4 ms stall at 1 M packets/s, where the old 2048-entry ring dropped half.

Needs root: fails instead of skipping when TICKWIRE_REQUIRE_NETNS=1 (CI).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.support import frames as F
from tests.support.engine_run import engine_running
from tests.support.netns import VethPair
from tests.support.raw_sender import write_frames
from tests.support.waiting import wait_until
from tickwire_engine.config import EngineConfig

pytestmark = pytest.mark.netns

GROUP, PORT = "239.79.1.1", 26479
LINE = f"A={GROUP}:{PORT}"
SENDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support", "raw_sender.py")
NO_RING_LOSS = {"rx_dropped": 0, "rx_invalid_descs": 0, "rx_ring_full": 0, "rx_fill_ring_empty_descs": 0}


@pytest.fixture
def pair():
    with VethPair() as p:
        yield p


def packets(first_seq: int, count: int, session: bytes = F.SESSION) -> list[bytes]:
    return [F.frame(F.mold(seq, [F.itch("A")], session), GROUP, PORT)
            for seq in range(first_seq, first_seq + count)]


def frames_file(tmp_path, frames: list[bytes]) -> str:
    path = tmp_path / f"frames-{time.monotonic_ns()}.bin"
    write_frames(path, frames)
    return str(path)


def burst(pair: VethPair, path: str) -> int:
    out = pair.run(pair.exchange_ns, sys.executable, SENDER, "burst", pair.exchange_if, path, timeout=120)
    return int(out.stdout.strip())


def ring_losses(stats: dict) -> dict:
    return {key: stats["ring"][key] for key in NO_RING_LOSS}


def test_the_fill_ring_holds_every_frame_before_the_program_is_attached(pair, tmp_path):
    # A feed already flowing (frames back to back from the exchange side) while the engine starts:
    # the first frame the program redirects must find a frame to land in. (At full speed on a
    # shared machine the engine may fall behind and fill its RX ring; that is overload, counted as
    # rx_ring_full, not the fault this test is about.)
    flood = pair.popen(pair.exchange_ns, [sys.executable, SENDER, "flood", pair.exchange_if,
                                          frames_file(tmp_path, packets(1, 1000)), "60"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with engine_running(pair, [LINE], tmp_path) as engine:
            started = engine.stats()
            wait_until("the flood to reach the engine", lambda: engine.stats()["packets"] > 1000,
                       timeout=20, interval=0.05)
            flood.terminate()
            flood.wait(timeout=10)
            after_flood = engine.settle()
            # Then a burst the engine must count exactly, with no loss of any kind (a session of
            # its own, from sequence number 1: nothing in it is a gap or a duplicate).
            assert burst(pair, frames_file(tmp_path, packets(1, 3000, b"TWBURST001"))) == 3000
            engine.settle(messages=after_flood["messages"] + 3000)
            final = engine.stop()
    finally:
        if flood.poll() is None:
            flood.kill()
            flood.wait(timeout=10)
    assert started["fill_stocked"] == started["fill_ring_size"] == EngineConfig.frame_count
    assert started["rx_ring_size"] == EngineConfig.ring_size
    assert after_flood["packets"] > 1000
    assert after_flood["ring"]["rx_fill_ring_empty_descs"] == 0
    assert final["packets"] - after_flood["packets"] == 3000
    assert final["messages"] - after_flood["messages"] == 3000
    assert ring_losses(final) == ring_losses(after_flood)
    assert final["ring"]["fill_ring_stock"] == EngineConfig.frame_count   # every frame given back


def test_a_stalled_poll_thread_loses_nothing_up_to_the_rx_ring(pair, tmp_path):
    stall_frames = 4000                      # a 4 ms stall at 1 M packets/s
    path = frames_file(tmp_path, packets(1, stall_frames))
    with engine_running(pair, [LINE], tmp_path) as engine:
        before = engine.stats()
        # What the kernel can deliver with nobody draining: the RX ring's room, as far as the fill
        # ring has frames for it.
        capacity = min(before["rx_ring_size"], before["ring"]["fill_ring_stock"])
        assert capacity >= stall_frames > 2048
        engine.proc.send_signal(signal.SIGSTOP)   # the poll thread (the whole process) stops for real
        try:
            assert burst(pair, path) == stall_frames
        finally:
            engine.proc.send_signal(signal.SIGCONT)
        stats = engine.settle(messages=stall_frames)
        final = engine.stop()
    assert before["messages"] == 0
    assert (final["packets"], final["messages"], final["gaps"]) == (stall_frames, stall_frames, 0)
    assert ring_losses(final) == NO_RING_LOSS
    assert stats["messages"] == stall_frames
