"""Per-node resources without clashes, one agent at a time on a real veth: a metrics port that is
taken names its holder; flowSteering on a NIC without ntuple filters (veth) reports why in auto
mode and is a permanent error, before anything changes, when ntuple is required."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.agent_run import AgentProcess, host_snapshot, plan_for
from tests.support.netns import VethPair

pytestmark = pytest.mark.netns

HOLD_PORT = r"""
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0))
s.listen()
print(s.getsockname()[1], flush=True)
time.sleep(120)
"""


@pytest.fixture
def pair():
    with VethPair(queues=2) as p:
        yield p


def test_a_taken_metrics_port_is_an_error_naming_the_port_and_its_holder(pair, tmp_path, agents, bpffs_root):
    holder = pair.popen(pair.node_ns, [sys.executable, "-c", HOLD_PORT], stdout=subprocess.PIPE, text=True)
    try:
        port = int(holder.stdout.readline())
        before = host_snapshot(pair)
        agent = AgentProcess(pair, plan_for(pair, metrics={"address": "127.0.0.1", "port": port}), tmp_path,
                             bpffs_root=bpffs_root)
        agents.append(agent)
        assert agent.start().proc.wait(60) == 1
        assert f"cannot serve metrics on 127.0.0.1:{port} (Address already in use)" in agent.output
        # `ip netns exec` runs the holder as a child: the pid the agent names is the python3 one
        assert "the port is held by pid " in agent.output and "(python3)" in agent.output, agent.output
        assert host_snapshot(pair) == before, "nothing was tuned"
    finally:
        holder.kill()
        holder.wait(10)


def test_flow_steering_ntuple_on_veth_is_a_permanent_error_and_changes_nothing(pair, tmp_path, agents, bpffs_root):
    before = host_snapshot(pair)
    agent = AgentProcess(pair, plan_for(pair, flowSteering="ntuple"), tmp_path, bpffs_root=bpffs_root)
    agents.append(agent)
    assert agent.start().proc.wait(60) == 2, agent.output       # a plan that does not fit this host
    assert (f"flowSteering: is ntuple, but {pair.node_if} (veth) has no ntuple flow steering "
            "(ETHTOOL_GRXCLSRLCNT: Operation not supported)") in agent.output
    assert host_snapshot(pair) == before
    assert not (agent.state_dir / "journal.jsonl").exists()


def test_flow_steering_auto_on_veth_runs_and_says_why_there_are_no_rules(pair, tmp_path, agents, bpffs_root):
    agent = AgentProcess(pair, plan_for(pair, flowSteering="auto"), tmp_path, bpffs_root=bpffs_root)
    agents.append(agent)
    agent.start().wait_ready()
    assert (f"flow steering: none: {pair.node_if} (veth) has no ntuple flow steering "
            "(ETHTOOL_GRXCLSRLCNT: Operation not supported)") in agent.output
    assert agent.stop() == 0
