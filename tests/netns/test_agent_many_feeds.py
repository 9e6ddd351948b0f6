"""Issue 10's "done when", agent side: four agents (four FeedHandlers' plans) on ONE multi-queue
veth in a network namespace, each feed on its own queue with A and B lines, sharing one steering
program, the interface's device knobs and the node's hugepage pool through one node account.

Real AF_XDP (generic mode), real agents and engines, real sysfs, ethtool channels and hugepages.
The exchange side puts each feed's flows on the feed's queue with a tc egress program
(tests/support/tx_queues.py), as a NIC's ntuple rule would (veth has none: the agents report
flowSteering "none" and say why). An AF_XDP socket only receives frames of its own queue, so
exact counts per feed prove the frames were spread over the queues and each feed saw only its own.

Then two agents stop while the other two keep counting without a single lost message: one by
SIGTERM, one by SIGKILL followed by `tickwire-agent restore`. At the end every host setting
(channels, sysfs knobs, hugepages, busy-poll sysctls) equals the snapshot before, no BPF object
is pinned or attached, and the node account is empty.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.support.agent_run import AgentProcess, host_snapshot, plan_for, wait_for
from tests.support.engine_run import FEED, publish
from tests.support.netns import VethPair
from tests.support.tx_queues import steer_feeds

pytestmark = pytest.mark.netns

FEEDS = 4
QUEUES = FEEDS + 1                  # generic XDP on veth: the exchange side needs one transmit queue more
NAPI_DEFER = {0: 2, 1: 2, 2: 5, 3: 3}   # the device keeps the highest any holder asked for
HUGEPAGES_EACH = 8
SYSCTLS = ("net/core/busy_read", "net/core/busy_poll")


def flows_of(feed: int) -> list[tuple[str, int]]:
    return [(f"239.11.{feed}.1", 5300 + feed), (f"239.21.{feed}.1", 5400 + feed)]


def line_args(feed: int) -> list[str]:
    (a_group, a_port), (b_group, b_port) = flows_of(feed)
    return ["--line", f"A={a_group}:{a_port}", "--line", f"B={b_group}:{b_port}"]


def plan_of(pair, feed: int) -> dict:
    (a_group, a_port), (b_group, b_port) = flows_of(feed)
    return plan_for(pair, feed={"name": f"feed-{feed}", "protocol": "moldudp64-itch50"}, queue=feed,
                    lines=[{"name": "A", "group": a_group, "port": a_port},
                           {"name": "B", "group": b_group, "port": b_port}],
                    hugepages={"count": HUGEPAGES_EACH},
                    busyPoll={"enabled": False, "napiDeferHardIrqs": NAPI_DEFER[feed],
                              "groFlushTimeoutNs": 200000})


def engine_stats(agent: AgentProcess) -> dict:
    path = agent.state_dir / "stats.json"
    return json.loads(path.read_text()) if path.exists() else {}


def settle(agent: AgentProcess, messages: int, timeout: float = 60.0) -> dict:
    """The engine's stats once it counted `messages` and nothing moved for a moment."""
    last: tuple = ()

    def done():
        nonlocal last
        stats = engine_stats(agent)
        counted = tuple(stats.get(k, 0) for k in ("messages", "packets", "gaps", "duplicates"))
        if stats.get("messages", 0) >= messages and counted == last:
            return stats
        last = counted
        return None
    return wait_for(done, f"{agent.state_dir.name} to count {messages} messages", timeout, interval=0.6)


def publish_in_background(pair, tmp_path, feed: int, messages: int, rate: int):
    summary = tmp_path / f"live-{feed}.json"
    proc = pair.popen(pair.exchange_ns, [FEED, "publish", "--iface", pair.exchange_if, *line_args(feed),
                                         "--messages", str(messages), "--rate", str(rate), "--per-packet", "4",
                                         "--session", f"LIVE{feed}", "--seed", str(100 + feed),
                                         "--summary-json", str(summary)])
    return proc, summary


def sysctls() -> dict:
    """The busy-poll sysctls: global, not per network namespace, so read from here."""
    values = {}
    for name in SYSCTLS:
        with open(f"/proc/sys/{name}", encoding="ascii") as f:
            values[name] = f.read().strip()
    return values


def program_exists(prog_id: int) -> bool:
    """Whether the kernel still has BPF program `prog_id` (programs are not per namespace)."""
    return subprocess.run(["bpftool", "prog", "show", "id", str(prog_id)], capture_output=True).returncode == 0


def pinned(root: str) -> list[str]:
    found = []
    for directory, dirs, files in os.walk(root):
        found += [os.path.relpath(os.path.join(directory, n), root) for n in dirs + files]
    return sorted(found)


def account(node_dir) -> dict:
    path = node_dir / "account.json"
    return json.loads(path.read_text()) if path.exists() else {"knobs": {}, "hugepages": {}}


def holders_of(acc: dict, label: str) -> int:
    (knob,) = [k for key, k in acc["knobs"].items() if key.endswith("/" + label)]
    return len(knob["holders"])


@pytest.fixture
def pair():
    with VethPair(queues=QUEUES) as p:
        yield p


@pytest.fixture
def steering(pair, bpffs_root, tmp_path):
    tx = steer_feeds(pair, bpffs_root, tmp_path, [flows_of(feed) for feed in range(FEEDS)])
    yield tx
    tx.close()


def test_four_agents_share_one_nic_and_two_stop_while_the_others_count_every_message(
        pair, bpffs_root, steering, tmp_path, agents):
    pair.run(pair.node_ns, "ethtool", "-L", pair.node_if, "rx", "1")   # the agents must raise it
    before = host_snapshot(pair)
    sysctls_before = sysctls()
    assert before["rx_channels"] == 1
    node_dir = tmp_path / "node"

    # -- four agents started at the same instant, one node account --
    fleet = {}
    for feed in range(FEEDS):
        fleet[feed] = AgentProcess(pair, plan_of(pair, feed), tmp_path, state_dir=tmp_path / f"state-{feed}",
                                   node_state_dir=node_dir, bpffs_root=bpffs_root)
        agents.append(fleet[feed])
    for agent in fleet.values():
        agent.start()
    for agent in fleet.values():
        agent.wait_ready(timeout=90)

    during = host_snapshot(pair)
    assert during["rx_channels"] == FEEDS, "raised to the highest queue any feed needs"
    assert during["napi_defer_hard_irqs"] == "5" and during["gro_flush_timeout"] == "200000"
    assert during["nr_hugepages"] == before["nr_hugepages"] + FEEDS * HUGEPAGES_EACH, \
        "every reservation kept, none counted twice"
    acc = account(node_dir)
    assert holders_of(acc, "channels") == holders_of(acc, "napi_defer_hard_irqs") == FEEDS
    (pool,) = acc["hugepages"].values()
    assert sorted(h["pages"] for h in pool["holders"].values()) == [HUGEPAGES_EACH] * FEEDS
    assert {k["original"] for key, k in acc["knobs"].items() if key.endswith("/channels")} == {1}
    # the last agent to join was told it shares the knobs, and with the original before them all
    assert any(f"shared with {FEEDS - 1} other agent(s) (original {before['napi_defer_hard_irqs']})" in a.output
               for a in fleet.values())
    for feed, agent in fleet.items():
        assert "flow steering: none: " in agent.output and "(veth) has no ntuple flow steering" in agent.output
    (prog_id,) = {engine_stats(a)["prog_id"] for a in fleet.values()}      # one steering program for all
    assert program_exists(prog_id)

    # -- each feed counts exactly its own messages on both lines --
    for feed in range(FEEDS):
        sent = publish(pair, tmp_path, [*line_args(feed), "--messages", "2000", "--per-packet", "4",
                                        "--session", f"FEED{feed}", "--seed", str(feed)])
        assert sent["messages_sent"] == 2000
    for feed, agent in fleet.items():
        stats = settle(agent, 2000)
        assert stats["messages"] == 2000 and stats["gaps"] == 0, (feed, stats)
        assert stats["duplicates"] == 2000, (feed, stats)          # A and B both arrived
        assert stats["lines"]["A"]["packets"] == stats["lines"]["B"]["packets"] > 0, (feed, stats)

    # -- feeds 0 and 1 keep flowing while agent 3 stops (SIGTERM) and agent 2 is SIGKILLed --
    live = {feed: publish_in_background(pair, tmp_path, feed, 20000, 4000) for feed in (0, 1)}
    try:
        time.sleep(1.0)
        assert fleet[3].stop(signal.SIGTERM, timeout=60) == 0, fleet[3].output
        # hugepages, channels, napi_defer_hard_irqs, gro_flush_timeout (released from the account), steering
        assert "restored 5 of 5 host setting(s)" in fleet[3].output, fleet[3].output
        orphan = fleet[2].engine_pid()
        fleet[2].stop(signal.SIGKILL)
        assert holders_of(account(node_dir), "channels") == 3, "a SIGKILLed agent's holdings stay on record"
        restored = pair.run(pair.node_ns, sys.executable, "-m", "tickwire_agent", "restore",
                            "--state-dir", str(fleet[2].state_dir), check=False)
        assert restored.returncode == 0, restored.stdout + restored.stderr
        assert f"stopped engine {orphan}" in restored.stdout
        again = pair.run(pair.node_ns, sys.executable, "-m", "tickwire_agent", "restore",
                         "--state-dir", str(fleet[2].state_dir), check=False)
        assert again.returncode == 0 and "nothing to restore" in again.stdout   # exactly once
    finally:
        for proc, _summary in live.values():
            proc.wait(timeout=120)
    for feed, (proc, summary) in live.items():
        assert proc.returncode == 0 and json.loads(summary.read_text())["messages_sent"] == 20000
    for feed in (0, 1):
        stats = settle(fleet[feed], 22000)
        assert stats["messages"] == 22000 and stats["gaps"] == 0 and stats["missing"] == 0, (feed, stats)

    middle = host_snapshot(pair)
    acc = account(node_dir)
    assert holders_of(acc, "channels") == 2 and holders_of(acc, "napi_defer_hard_irqs") == 2
    assert middle["rx_channels"] == FEEDS, "channels stay while anyone holds them (no ring rebuild)"
    assert middle["napi_defer_hard_irqs"] == "2", "the leavers' higher wishes no longer count"
    assert middle["nr_hugepages"] == before["nr_hugepages"] + 2 * HUGEPAGES_EACH
    assert middle["xdp_prog"] == during["xdp_prog"] != 0, "the shared program stayed for the others"

    # -- the last two stop: the host is as it was --
    for feed in (0, 1):
        assert fleet[feed].stop(signal.SIGTERM, timeout=60) == 0, fleet[feed].output
    after = host_snapshot(pair)
    assert after == before
    assert sysctls() == sysctls_before
    assert pinned(bpffs_root) == [], "every BPF object is gone"
    wait_for(lambda: not program_exists(prog_id), f"the kernel to free steering program {prog_id}", 10)
    assert account(node_dir) == {"knobs": {}, "hugepages": {}}
    assert os.listdir(node_dir / "holders") == []


def test_two_agents_started_at_the_same_instant_keep_both_hugepage_reservations(
        pair, bpffs_root, steering, tmp_path, agents):
    before = host_snapshot(pair)
    node_dir = tmp_path / "node"
    two = [AgentProcess(pair, plan_of(pair, feed), tmp_path, state_dir=tmp_path / f"state-{feed}",
                        node_state_dir=node_dir, bpffs_root=bpffs_root) for feed in (0, 1)]
    agents.extend(two)
    for agent in two:
        agent.start()
    for agent in two:
        agent.wait_ready(timeout=90)
    assert host_snapshot(pair)["nr_hugepages"] == before["nr_hugepages"] + 2 * HUGEPAGES_EACH
    for agent in two:
        assert "hugepages of 2 MiB reserved" in agent.output
        assert json.loads((agent.state_dir / "stats.json").read_text())["hugepages"] is True
    for agent in two:
        assert agent.stop() == 0
    assert host_snapshot(pair) == before and pinned(bpffs_root) == []


def test_an_agent_stopped_many_times_puts_the_channels_back_every_time(pair, bpffs_root, tmp_path, agents):
    """The engine's AF_XDP pool leaves its queue in the background after the engine exits; the
    restore of the channel count used to race it (EINVAL in 5-30% of stops, exit 4)."""
    pair.run(pair.node_ns, "ethtool", "-L", pair.node_if, "rx", "1")
    before = host_snapshot(pair)
    plan = plan_of(pair, 3)
    plan["hugepages"] = {"count": 0}
    for cycle in range(8):
        agent = AgentProcess(pair, plan, tmp_path, state_dir=tmp_path / f"state-{cycle}",
                             node_state_dir=tmp_path / "node", bpffs_root=bpffs_root)
        agents.append(agent)
        agent.start().wait_ready(timeout=60)
        assert host_snapshot(pair)["rx_channels"] == 4
        code = agent.stop(signal.SIGTERM, timeout=60)
        assert code == 0, f"cycle {cycle}: exit {code}\n{agent.output}"
        assert host_snapshot(pair) == before, f"cycle {cycle}"
