"""Many engines on one interface: one shared XDP program, each engine on its own RX queue.

Real AF_XDP on a multi-queue veth (generic mode). The exchange side puts each feed's flows on a
chosen queue with a tc egress program (tests/support/tx_queues.py), as a NIC's ntuple rule would;
an AF_XDP socket only receives frames of its own queue, so exact counts per engine prove the
frames were spread over the queues and each engine saw only its own.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from tests.support.engine_run import ENGINE, FEED, EngineProcess, publish, xdp_attached
from tests.support.netns import VethPair
from tests.support.tx_queues import TxQueueSteering

FEEDS = 4
QUEUES = FEEDS + 1   # generic XDP on veth: the exchange side needs one transmit queue more


def lines_of(feed: int) -> list[str]:
    return [f"A=239.10.{feed}.1:{5100 + feed}", f"B=239.20.{feed}.1:{5200 + feed}"]


def flows_of(feed: int) -> list[tuple[str, int]]:
    return [(f"239.10.{feed}.1", 5100 + feed), (f"239.20.{feed}.1", 5200 + feed)]


@pytest.fixture
def pair():
    with VethPair(queues=QUEUES) as p:
        yield p


@pytest.fixture
def steering(pair, bpffs_root, tmp_path):
    tx = TxQueueSteering(pair, os.path.join(os.path.dirname(bpffs_root), "exchange"), tmp_path)
    for feed in range(FEEDS):
        for group, port in flows_of(feed):
            tx.route(group, port, rx_queue=feed)
    yield tx
    tx.close()


def start_engine(pair, tmp_path, bpffs_root, queue: int, lines: list[str]) -> EngineProcess:
    return EngineProcess(pair, lines, tmp_path,
                         ["--queue", str(queue), "--bpffs-root", bpffs_root]).start()


def run_engine(pair, bpffs_root, queue: int, lines: list[str], *extra: str):
    """An engine run to completion (it is expected to refuse): the CompletedProcess."""
    return pair.run(pair.node_ns, ENGINE, "run", "--iface", pair.node_if, "--queue", str(queue),
                    "--bpffs-root", bpffs_root, "--duration", "1", "--quiet",
                    *[arg for line in lines for arg in ("--line", line)], *extra, check=False)


def publish_feed(pair, tmp_path, feed: int, messages: int, *extra: str) -> dict:
    args = [arg for line in lines_of(feed) for arg in ("--line", line)]
    return publish(pair, tmp_path, [*args, "--messages", str(messages), "--per-packet", "4",
                                    "--session", f"FEED{feed}", "--seed", str(feed), *extra])


def publish_in_background(pair, tmp_path, feed: int, messages: int, rate: int):
    summary = tmp_path / f"bg-{feed}-{time.monotonic_ns()}.json"
    args = [arg for line in lines_of(feed) for arg in ("--line", line)]
    proc = pair.popen(pair.exchange_ns, [FEED, "publish", "--iface", pair.exchange_if, *args,
                                         "--messages", str(messages), "--rate", str(rate),
                                         "--per-packet", "4", "--session", f"LIVE{feed}",
                                         "--seed", str(100 + feed), "--summary-json", str(summary)])
    return proc, summary


def pinned(root: str) -> list[str]:
    """Everything under the pin root, relative to it."""
    found = []
    for directory, dirs, files in os.walk(root):
        found += [os.path.relpath(os.path.join(directory, n), root) for n in dirs + files]
    return sorted(found)


def xdp_sockets(pair) -> list[str]:
    out = pair.run(pair.node_ns, "ss", "-a", "--xdp").stdout.splitlines()
    return [line for line in out[1:] if line.strip()]


def counters(pair, bpffs_root) -> dict[str, int]:
    """The shared program's counters (summed over CPUs), read from its pinned map with bpftool."""
    (interface_dir,) = [d for d in os.listdir(bpffs_root) if d.startswith("n")]
    out = pair.run(pair.node_ns, "bpftool", "-j", "map", "dump", "pinned",
                   os.path.join(bpffs_root, interface_dir, "tw_counters")).stdout
    names = {0: "redirected", 1: "passed", 2: "no_meta", 3: "wrong_queue", 4: "no_socket"}
    totals = {}
    for entry in json.loads(out):
        key = int.from_bytes(bytes(int(b, 16) for b in entry["key"]), "little")
        value = sum(int.from_bytes(bytes(int(b, 16) for b in v["value"]), "little")
                    for v in entry["values"])
        if key in names:
            totals[names[key]] = value
    return totals


def assert_nothing_left(pair, bpffs_root) -> None:
    assert pinned(bpffs_root) == []
    assert xdp_attached(pair) == ""
    assert xdp_sockets(pair) == []


def test_four_engines_share_one_program_and_keep_counting_while_others_stop(
        pair, bpffs_root, steering, tmp_path):
    engines = {q: start_engine(pair, tmp_path, bpffs_root, q, lines_of(q)) for q in range(FEEDS)}
    try:
        infos = {q: e.stats() for q, e in engines.items()}
        assert len({info["prog_id"] for info in infos.values()}) == 1        # one program
        assert [q for q, info in infos.items() if info["attached_program"]] == [0]
        assert "tw_steer" in xdp_attached(pair)

        for feed in range(FEEDS):
            sent = publish_feed(pair, tmp_path, feed, 2000)
            assert sent["messages_sent"] == 2000
        for feed, engine in engines.items():
            stats = engine.settle(messages=2000)
            # Each engine got exactly its own feed, both lines, nothing of the others'.
            assert stats["messages"] == 2000 and stats["gaps"] == 0, (feed, stats)
            assert stats["duplicates"] == 2000 and stats["unmatched"] == 0, (feed, stats)
            assert stats["lines"]["A"]["packets"] == stats["lines"]["B"]["packets"] > 0
        seen = counters(pair, bpffs_root)
        assert seen["wrong_queue"] == 0 and seen["no_socket"] == 0
        assert seen["redirected"] == sum(e.stats()["packets"] for e in engines.values())

        # Feeds 0 and 1 keep flowing while engine 2 stops and engine 3 is killed.
        live = {feed: publish_in_background(pair, tmp_path, feed, 20000, 5000) for feed in (0, 1)}
        time.sleep(1.0)
        final_2 = engines[2].stop(signal.SIGTERM)
        assert engines[2].proc.returncode == 0 and final_2["messages"] == 2000
        engines[3].proc.kill()
        engines[3].proc.wait(timeout=10)
        # A new engine takes the killed one's queue (and its flows) while the feeds still flow.
        engines[3] = start_engine(pair, tmp_path, bpffs_root, 3, lines_of(3))
        assert "removed what a stopped engine left on queue 3" in engines[3].stats()["fallback"]
        assert "tw_steer" in xdp_attached(pair)
        for feed, (proc, summary) in live.items():
            assert proc.wait(timeout=60) == 0
            assert json.loads(summary.read_text())["messages_sent"] == 20000
        for feed in (0, 1):
            stats = engines[feed].settle(messages=22000)
            assert stats["messages"] == 22000 and stats["gaps"] == 0, (feed, stats)
            assert stats["missing"] == 0, (feed, stats)
        publish_feed(pair, tmp_path, 3, 1000, "--session", "AGAIN3")
        stats = engines[3].settle(messages=1000)
        assert stats["messages"] == 1000 and stats["gaps"] == 0

        for feed in (0, 1, 3):
            engines[feed].stop(signal.SIGTERM)
            assert engines[feed].proc.returncode == 0
            if feed != 3:
                assert "tw_steer" in xdp_attached(pair)  # another engine still lives
        assert_nothing_left(pair, bpffs_root)
    finally:
        for engine in engines.values():
            engine.kill()


def test_in_use_is_exit_5_and_release_removes_what_a_killed_engine_left(
        pair, bpffs_root, steering, tmp_path):
    first = start_engine(pair, tmp_path, bpffs_root, 0, lines_of(0))
    try:
        owner = first.proc.pid
        taken = run_engine(pair, bpffs_root, 0, lines_of(1))
        assert taken.returncode == 5, taken.stderr
        assert f"queue 0 of {pair.node_if} is owned by pid" in taken.stderr

        same_flow = run_engine(pair, bpffs_root, 1, [lines_of(0)[0]])
        assert same_flow.returncode == 5, same_flow.stderr
        assert "is already steered to queue 0" in same_flow.stderr

        other_mode = run_engine(pair, bpffs_root, 1, lines_of(1), "--mode", "native")
        assert other_mode.returncode == 5, other_mode.stderr
        assert "attached in generic mode" in other_mode.stderr

        alive = pair.run(pair.node_ns, ENGINE, "release", "--iface", pair.node_if, "--queue", "0",
                         "--bpffs-root", bpffs_root, check=False)
        assert alive.returncode == 5, alive.stderr
        # None of the refusals touched the running engine.
        publish_feed(pair, tmp_path, 0, 500)
        assert first.settle(messages=500)["messages"] == 500

        first.proc.kill()
        first.proc.wait(timeout=10)
        assert owner
        # The link is pinned: the program stays for the next engine; release takes it away.
        assert "tw_steer" in xdp_attached(pair) and pinned(bpffs_root)
        released = pair.run(pair.node_ns, ENGINE, "release", "--iface", pair.node_if,
                            "--bpffs-root", bpffs_root, check=False)
        assert released.returncode == 0, released.stderr
        assert "removed what a stopped engine left on queue 0" in released.stdout
        assert "detached the steering program" in released.stdout
        assert_nothing_left(pair, bpffs_root)
        again = pair.run(pair.node_ns, ENGINE, "release", "--iface", pair.node_if,
                         "--bpffs-root", bpffs_root, check=False)
        assert again.returncode == 0 and "nothing pinned" in again.stdout
    finally:
        first.kill()


def test_two_namespaces_with_the_same_interface_name_do_not_share(bpffs_root, tmp_path):
    """The pin directory is per (network namespace, interface): two nodes' eth0s never meet."""
    with VethPair() as one, VethPair() as two:
        for pair in (one, two):
            pair.run(pair.node_ns, "ip", "link", "set", pair.node_if, "down")
            pair.run(pair.node_ns, "ip", "link", "set", pair.node_if, "name", "feed0")
            pair.run(pair.node_ns, "ip", "link", "set", "feed0", "up")
            pair.node_if = "feed0"
        a = start_engine(one, tmp_path, bpffs_root, 0, lines_of(0))
        b = start_engine(two, tmp_path, bpffs_root, 0, lines_of(0))
        try:
            assert a.stats()["attached_program"] and b.stats()["attached_program"]
            assert len([d for d in os.listdir(bpffs_root) if d.startswith("n")]) == 2
            a.stop()
            assert "tw_steer" in xdp_attached(two)
            b.stop()
            assert pinned(bpffs_root) == []
        finally:
            a.kill()
            b.kill()
