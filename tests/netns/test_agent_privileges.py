"""The agent Pod's privileges, proven on a real veth pair: each capability it is granted is one the
kernel refuses the engine without, the runtime's default seccomp profile refuses the engine and
the chart's profile admits it, and with exactly the Pod's capabilities, under the chart's
profile, on a read-only root, the agent tunes the host, counts a feed and puts everything back.

The capabilities are cut with setpriv (the bounding set, so even root gets nothing else) and the
seccomp profile is applied with libseccomp as runc applies it (tests/support/seccomp_exec.py).
Root and network namespaces needed: fails instead of skipping when TICKWIRE_REQUIRE_NETNS=1 (CI).
"""
from __future__ import annotations

import json
import pathlib

import pytest

from tests.support.agent_run import (AgentProcess, capability_mask, host_snapshot, metric_sum, only_capabilities,
                                     plan_for, read_only_root, under_seccomp, wait_for)
from tests.support.engine_run import ENGINE_UNCHECKED, publish, xdp_attached
from tests.support.netns import VethPair
from tickwire_agent import privileges
from tickwire_operator.pod import CAPABILITIES, RT_CAPABILITY

pytestmark = pytest.mark.netns

REPO = pathlib.Path(__file__).resolve().parents[2]
PROFILE = REPO / "charts" / "tickwire" / "files" / "tickwire-agent-seccomp.json"
# The container runtime's own default (Debian's containers-common: podman's and CRI-O's).
RUNTIME_DEFAULT = pathlib.Path("/usr/share/containers/seccomp.json")
LINE = "A=239.77.3.1:26477"
# AF_XDP charges a UMEM to RLIMIT_MEMLOCK of the *user* (uid 0: every root process on the node,
# every other feed's engine included) unless the process has CAP_IPC_LOCK. 4 MiB stands for the
# share left once another feed's UMEM is charged: below this engine's 16 MiB UMEM.
MEMLOCK_LEFT = ["prlimit", f"--memlock={4 << 20}"]

# What the kernel says without each capability, from the engine's own error message.
REFUSED = {
    "NET_ADMIN": "cannot load XDP program: Operation not permitted",      # XDP programs need it to load
    "NET_RAW": "UMEM: registration failed: Operation not permitted",      # socket(AF_XDP) needs it
    "BPF": "cannot load XDP program: Operation not permitted",
    "PERFMON": "cannot load XDP program: Permission denied",              # the verifier refuses
    "IPC_LOCK": "UMEM: registration failed: No buffer space available",   # over RLIMIT_MEMLOCK
}


@pytest.fixture
def pair():
    with VethPair() as p:
        yield p


def engine(pair, tmp_path, bpffs_root, *prefix, args=()):
    """The engine under `prefix`; its pin root is mounted for it (an engine is never given
    CAP_SYS_ADMIN to mount one: in the Pod the host's bpffs is mounted)."""
    stats = tmp_path / "stats.json"
    result = pair.run(pair.node_ns, *prefix, *ENGINE_UNCHECKED, "run", "--iface", pair.node_if, "--mode", "generic",
                      "--line", LINE, "--duration", "1", "--stats-json", str(stats), "--bpffs-root", bpffs_root,
                      *args, check=False)
    return result, (json.loads(stats.read_text()) if stats.exists() else None)


def test_every_capability_the_pod_grants_is_refused_by_the_kernel_without_it(pair, tmp_path, bpffs_root):
    assert set(REFUSED) == set(CAPABILITIES)
    result, _ = engine(pair, tmp_path, bpffs_root, *only_capabilities(CAPABILITIES), *MEMLOCK_LEFT)
    assert result.returncode == 0, result.stderr          # the whole set: the engine runs
    for missing in sorted(CAPABILITIES):
        result, _ = engine(pair, tmp_path, bpffs_root, *only_capabilities(set(CAPABILITIES) - {missing}),
                           *MEMLOCK_LEFT)
        assert result.returncode == 3, f"without {missing}: {result.stderr}"
        assert REFUSED[missing] in result.stderr, f"without {missing}: {result.stderr}"
        assert xdp_attached(pair) == ""


def test_sys_nice_is_what_makes_the_poll_thread_real_time(pair, tmp_path, bpffs_root):
    rt = ["--rt-priority", "5", "--core", "1"]
    _, with_it = engine(pair, tmp_path, bpffs_root, *only_capabilities({*CAPABILITIES, RT_CAPABILITY[0]}), args=rt)
    _, without = engine(pair, tmp_path, bpffs_root, *only_capabilities(CAPABILITIES), args=rt)
    assert with_it["rt_priority"] == 5
    assert without["rt_priority"] == 0                     # refused: the engine runs on, normally scheduled


@pytest.mark.parametrize("missing", sorted(CAPABILITIES))
def test_an_agent_without_a_capability_names_it_and_touches_nothing(pair, tmp_path, agents, missing):
    before = host_snapshot(pair)
    agent = AgentProcess(pair, plan_for(pair), tmp_path, wrap=only_capabilities(set(CAPABILITIES) - {missing}))
    agents.append(agent.start())
    assert agent.proc.wait(30) == 2, agent.output
    assert f"capabilities: this agent lacks CAP_{missing}, needed to {privileges.ALWAYS[f'CAP_{missing}'][1]}" \
        in agent.output
    assert host_snapshot(pair) == before
    assert not (agent.state_dir / "journal.jsonl").exists()


def test_the_runtime_default_seccomp_profile_refuses_the_engine_and_the_charts_admits_it(pair, tmp_path, bpffs_root):
    caps = sorted(CAPABILITIES)
    refused, _ = engine(pair, tmp_path, bpffs_root, *only_capabilities(caps), *under_seccomp(RUNTIME_DEFAULT, caps))
    assert refused.returncode == 3
    assert "cannot load XDP program: Operation not permitted" in refused.stderr   # bpf(): EPERM
    admitted, stats = engine(pair, tmp_path, bpffs_root, *only_capabilities(caps), *under_seccomp(PROFILE, caps))
    assert admitted.returncode == 0, admitted.stderr
    assert stats["xdp_mode"] == "generic"


def test_the_charts_profile_is_the_runtime_default_plus_bpf_and_nothing_else():
    def allowed(profile, caps):
        """{syscall: (action, args)} the way a runtime resolves the profile for `caps`."""
        from tests.support.seccomp_exec import applies
        return {(name, rule["action"], json.dumps(rule.get("args") or [], sort_keys=True))
                for rule in profile["syscalls"] if applies(rule, caps) for name in rule["names"]}

    ours, default = json.loads(PROFILE.read_text()), json.loads(RUNTIME_DEFAULT.read_text())
    caps = {f"CAP_{c}" for c in [*CAPABILITIES, RT_CAPABILITY[0]]}
    assert ours["defaultAction"] == default["defaultAction"]
    assert allowed(ours, caps) - allowed(default, caps) == {("bpf", "SCMP_ACT_ALLOW", "[]")}
    assert allowed(default, caps) - allowed(ours, caps) == {("bpf", "SCMP_ACT_ERRNO", "[]")}


def test_with_exactly_the_pods_privileges_the_agent_tunes_counts_and_restores(pair, tmp_path, agents, bpffs_root):
    """Capabilities, seccomp profile and a read-only root as in the Pod (the state directory and
    the node state directory, its hostPaths, writable; the host's bpffs mounted): the whole
    agent, not just the engine."""
    before = host_snapshot(pair)
    state, node = tmp_path / "state", tmp_path / "node"
    state.mkdir()
    node.mkdir()
    caps = sorted(CAPABILITIES)
    agent = AgentProcess(pair, plan_for(pair), tmp_path, state_dir=state, bpffs_root=bpffs_root,
                         wrap=[*read_only_root(state, node), *only_capabilities(caps),
                               *under_seccomp(PROFILE, caps)])
    agents.append(agent.start())
    agent.wait_ready()
    assert capability_mask(agent.proc.pid) == sum(1 << privileges.ALWAYS[f"CAP_{c}"][0] for c in caps)
    assert capability_mask(agent.engine_pid()) == capability_mask(agent.proc.pid)
    assert "NOT tuned" not in agent.output
    sent = publish(pair, tmp_path, ["--line", "A=239.7.1.1:26400", "--messages", "500", "--rate", "20000"])
    wait_for(lambda: metric_sum(agent.metrics(), "tickwire_messages_total") == sent["messages_sent"],
             "the feed to be counted")
    assert agent.stop() == 0
    assert host_snapshot(pair) == before
