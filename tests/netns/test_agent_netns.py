"""The agent on a real veth pair: plan -> tuned host -> real AF_XDP engine counting a published
feed -> /metrics -> the host exactly as before, also after SIGKILL of the engine or of the agent.

Root and network namespaces needed: fails instead of skipping when TICKWIRE_REQUIRE_NETNS=1 (CI).
Hugepages are global to the machine: every test compares the pool before and after exactly.
veth has no IRQ of its own, so these plans set no irqAffinity (the IRQ code is unit-tested on
procfs-shaped files in tests/unit/test_agent_tuning.py).
"""
from __future__ import annotations

import contextlib

import os
import signal

import pytest

from tests.support.agent_run import (HUGEPAGES, AgentProcess, host_snapshot, igmp_hex, metric,
                                            metric_sum, on_cpus, plan_for, read_only_root, thread_cpus, wait_for)
from tests.support.engine_run import publish
from tests.support.netns import VethPair
from tickwire_agent.tuning.cpu import parse_cpulist

pytestmark = pytest.mark.netns


@pytest.fixture
def pair():
    with VethPair(queues=2) as p:
        yield p


def start(agents, *args, **kwargs) -> AgentProcess:
    agent = AgentProcess(*args, **kwargs)
    agents.append(agent)
    return agent.start()


def test_plan_tunes_the_host_counts_the_feed_and_teardown_restores_everything(pair, tmp_path, agents):
    before = host_snapshot(pair)
    plan = plan_for(pair)
    core = plan["cores"][0]
    free_at_start = int(open(f"{HUGEPAGES}/free_hugepages").read())
    agent = start(agents, pair, plan, tmp_path)
    agent.wait_ready()

    # -- tuning applied, read back from the kernel, not from the agent --
    during = host_snapshot(pair)
    assert during["napi_defer_hard_irqs"] == "2" and during["gro_flush_timeout"] == "200000"
    assert during["xdp_prog"] != 0
    assert {igmp_hex("239.7.1.1"), igmp_hex("239.7.1.2")} <= set(during["igmp_groups"])
    # the pool grew by exactly the plan's 8 pages (free pages already there belong to whoever made
    # them: the node account, tuning/shared.py), and the engine's UMEM sits on them
    assert during["nr_hugepages"] == before["nr_hugepages"] + 8
    assert metric(agent.metrics(), "tickwire_umem_hugepages") == 1
    engine = agent.engine_pid()
    assert [core] in [parse_cpulist(c) for c in thread_cpus(engine).values()], \
        "the engine's poll thread is pinned to its core"
    assert all(core not in parse_cpulist(c) for c in thread_cpus(agent.proc.pid).values()), \
        "the agent's threads stay off the dedicated core"

    # -- a published feed is counted exactly --
    sent = publish(pair, tmp_path, ["--line", "A=239.7.1.1:26400", "--line", "B=239.7.1.2:26400",
                                    "--messages", "3000", "--per-packet", "3", "--rate", "30000",
                                    "--gap-every", "100", "--gap-size", "2", "--seed", "4"])
    wait_for(lambda: metric_sum(agent.metrics(), "tickwire_messages_total") >= sent["messages_sent"],
             "the metrics to count every message")
    m = wait_for(lambda: (lambda s: s if metric(s, "tickwire_gaps_total") == sent["expected_gaps"] else None)(
        agent.metrics()), "the gaps to be counted")
    assert metric_sum(m, "tickwire_messages_total") == sent["messages_sent"]
    for letter, n in sent["messages_by_type"].items():
        assert metric(m, "tickwire_messages_total", type=letter) == n
    assert metric(m, "tickwire_packets_total", line="A") == sent["packets_sent"]["A"]
    assert metric(m, "tickwire_packets_total", line="B") == sent["packets_sent"]["B"]
    assert metric(m, "tickwire_missing_messages_total") == sent["expected_missing"]
    assert metric(m, "tickwire_duplicate_messages_total") == sent["expected_duplicates"]
    assert metric_sum(m, "tickwire_malformed_total") == 0
    hist = "tickwire_exchange_to_engine_latency_seconds"
    assert metric(m, hist + "_count", line="A") + metric(m, hist + "_count", line="B") == sent["messages_sent"]
    assert metric(m, "tickwire_xdp_mode", mode="generic") == 1
    assert metric(m, "tickwire_engine_up") == 1
    assert "GapFree=False (RecentGap)" in wait_for(lambda: "GapFree=False" in agent.output and agent.output,
                                                   "GapFree to turn False")

    # -- teardown restores every setting exactly --
    assert agent.stop() == 0
    assert host_snapshot(pair) == before
    assert not (agent.state_dir / "journal.jsonl").exists()
    # napi_defer_hard_irqs, gro_flush_timeout and channels (held in the node account even where
    # nothing had to change), the hugepages held there, and the XDP program
    changed = 5
    assert f"restored {changed} of {changed} host setting(s)" in agent.output


def test_a_sigkilled_engine_is_cleaned_up_and_restarted_and_teardown_is_still_exact(pair, tmp_path, agents):
    before = host_snapshot(pair)
    agent = start(agents, pair, plan_for(pair), tmp_path)
    agent.wait_ready()
    first = agent.engine_pid()
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: agent.engine_pid() not in (None, first), "a new engine")
    wait_for(lambda: metric(agent.metrics(), "tickwire_engine_restarts_total") == 1, "the restart to be counted")
    assert "engine killed by SIGKILL" in agent.output
    assert "EngineReady=False (Crashed)" in agent.output
    wait_for(lambda: agent.output.count("EngineReady=True") == 2, "the engine to be ready again")
    assert host_snapshot(pair)["xdp_prog"] != 0            # the new engine's program
    assert agent.stop() == 0
    assert host_snapshot(pair) == before


def test_a_sigkilled_agent_is_undone_by_the_next_one(pair, tmp_path, agents):
    before = host_snapshot(pair)
    first = start(agents, pair, plan_for(pair), tmp_path)
    first.wait_ready()
    orphan = first.engine_pid()
    first.stop(signal.SIGKILL)
    left = host_snapshot(pair)
    assert left != before, "a SIGKILLed agent leaves its tuning behind"
    assert (first.state_dir / "journal.jsonl").exists()

    second = start(agents, pair, plan_for(pair), tmp_path, state_dir=first.state_dir)
    second.wait_ready()
    assert f"stopped engine {orphan} left running by an earlier agent" in second.output
    changed = 5   # as in the first test: three knobs and the pages held in the node account, the XDP program
    assert f"restoring {changed} host setting(s) left by an earlier agent" in second.output
    assert not os.path.exists(f"/proc/{orphan}") or open(f"/proc/{orphan}/stat").read().split()[2] == "Z"
    assert second.stop() == 0
    assert host_snapshot(pair) == before


def test_a_replacement_agent_on_a_read_only_root_restores_the_original_values_not_the_tuned_ones(
        pair, tmp_path, agents):
    """The Pod's case: the root filesystem is read-only, the state directory is a hostPath that
    outlives the container. The first agent is killed (container killed, Pod replaced); the next
    one, on the same host directory, finds the journal, restores what was there before the first
    one, and at its own stop the host is as it was before either."""
    before = host_snapshot(pair)
    state = tmp_path / "hostpath-state"          # stands for /run/tickwire/feedhandlers/NS/NAME
    state.mkdir()
    node = tmp_path / "node"                     # stands for the hostPath /run/tickwire/node
    node.mkdir()
    first = start(agents, pair, plan_for(pair), tmp_path, state_dir=state, wrap=read_only_root(state, node))
    first.wait_ready()
    tuned = host_snapshot(pair)
    assert tuned != before and tuned["napi_defer_hard_irqs"] == "2"
    first.stop(signal.SIGKILL)

    assert (state / "journal.jsonl").exists()

    second = start(agents, pair, plan_for(pair), tmp_path, state_dir=state, wrap=read_only_root(state, node),
                   extra=["--remove-state-on-clean-exit"])        # as the Pod runs it
    second.wait_ready()
    changed = 5   # three knobs and the pages held in the node account, the XDP program
    assert f"restoring {changed} host setting(s) left by an earlier agent" in second.output
    assert "napi_defer_hard_irqs: back to 0" in second.output   # the original, not the tuned 2
    assert second.stop() == 0
    assert host_snapshot(pair) == before
    assert list(state.iterdir()) == []      # nothing left on the node but the hostPath's directory


def test_without_a_writable_state_dir_the_agent_says_so_and_touches_nothing(pair, tmp_path, agents):
    """What the Pod did before it mounted a state directory: the default one on a read-only root."""
    before = host_snapshot(pair)
    agent = start(agents, pair, plan_for(pair), tmp_path, state_dir=f"/run/tickwire/test-ro-{os.getpid()}",
                  wrap=read_only_root())
    assert agent.proc.wait(30) != 0
    assert "Read-only file system" in agent.output
    assert host_snapshot(pair) == before


def test_restore_command_undoes_a_sigkilled_agent(pair, tmp_path, agents):
    import subprocess
    import sys
    before = host_snapshot(pair)
    agent = start(agents, pair, plan_for(pair), tmp_path)
    agent.wait_ready()
    orphan = agent.engine_pid()
    agent.stop(signal.SIGKILL)
    assert host_snapshot(pair) != before
    out = pair.run(pair.node_ns, sys.executable, "-m", "tickwire_agent", "restore",
                   "--state-dir", str(agent.state_dir)).stdout
    assert f"stopped engine {orphan}" in out and "napi_defer_hard_irqs: back to 0" in out
    assert host_snapshot(pair) == before
    again = subprocess.run([sys.executable, "-m", "tickwire_agent", "restore", "--state-dir", str(agent.state_dir)],
                           capture_output=True, text=True)
    assert again.returncode == 0 and "nothing to restore" in again.stdout


def test_an_engine_the_hardware_cannot_serve_is_not_retried_and_the_host_still_restored(pair, tmp_path, agents):
    before = host_snapshot(pair)
    agent = start(agents, pair, plan_for(pair, zeroCopy="required"), tmp_path)   # veth cannot do zero-copy
    # No retry can make veth do zero-copy: the engine exits 2, and the agent reports why (log and
    # status), gives up without retrying, restores the host and exits 3.
    assert agent.proc.wait(timeout=30) == 3
    assert "EngineReady=False (BadConfig)" in agent.output
    assert "restarting" not in agent.output   # no retry: it would fail the same way
    assert "giving up" in agent.output
    assert host_snapshot(pair) == before


def test_ssm_lines_join_their_source_and_the_feed_still_arrives(pair, tmp_path, agents):
    lines = [{"name": "A", "group": "232.7.1.1", "port": 26400, "source": pair.exchange_ip}]
    agent = start(agents, pair, plan_for(pair, lines=lines), tmp_path)
    agent.wait_ready()
    # /proc/net/mcfilter: "Idx Device MCA SRC INC EXC", addresses as big-endian hex; the device
    # name is cut to 6 characters there, so match the interface by index.
    index = pair.run(pair.node_ns, "cat", f"/sys/class/net/{pair.node_if}/ifindex").stdout.strip()
    source_hex = "0x" + bytes(int(o) for o in pair.exchange_ip.split(".")).hex()
    rows = [r.split() for r in pair.run(pair.node_ns, "cat", "/proc/net/mcfilter").stdout.splitlines()[1:]]
    assert [index, "0xe8070101", source_hex] in [[r[0], r[2], r[3]] for r in rows], rows
    sent = publish(pair, tmp_path, ["--line", "A=232.7.1.1:26400", "--messages", "200", "--rate", "20000"])
    wait_for(lambda: metric_sum(agent.metrics(), "tickwire_messages_total") == sent["messages_sent"],
             "the SSM feed to be counted")
    assert agent.stop() == 0
    assert "0xe8070101" not in pair.run(pair.node_ns, "cat", "/proc/net/mcfilter").stdout   # left with the agent


def test_drift_is_seen_counted_and_put_back(pair, tmp_path, agents):
    before = host_snapshot(pair)
    agent = start(agents, pair, plan_for(pair), tmp_path)
    agent.wait_ready()
    knob = f"/sys/class/net/{pair.node_if}/gro_flush_timeout"
    pair.run(pair.node_ns, "sh", "-c", f"echo 0 > {knob}")
    wait_for(lambda: metric(agent.metrics(), "tickwire_host_drift_events_total", setting="gro_flush_timeout") == 1,
             "the drift to be counted")
    assert host_snapshot(pair)["gro_flush_timeout"] == "200000"
    assert "Tuned=True (DriftCorrected)" in wait_for(lambda: "DriftCorrected" in agent.output and agent.output,
                                                    "the Tuned condition to report the drift")
    assert agent.stop() == 0
    assert host_snapshot(pair) == before          # the value from before the agent, not the plan's


def test_channels_are_raised_for_the_planned_queue_and_restored(pair, tmp_path, agents):
    pair.run(pair.node_ns, "ethtool", "-L", pair.node_if, "rx", "1")
    before = host_snapshot(pair)
    assert before["rx_channels"] == 1
    agent = start(agents, pair, plan_for(pair, queue=1), tmp_path)
    agent.wait_ready()
    assert host_snapshot(pair)["rx_channels"] == 2
    assert "channels 1 -> 2" in agent.output
    assert agent.stop() == 0
    assert host_snapshot(pair) == before


def test_the_engine_runs_on_a_cpu_the_agent_was_given_when_the_plans_is_not(pair, tmp_path, agents):
    """Under the static CPU manager the kubelet picks the Pod's CPUs. Here `taskset` gives the agent
    CPUs that do not include the plan's core: the poll thread runs on one of the given CPUs, the
    agent's threads on the other, and the metrics and the log say which."""
    given = sorted(os.sched_getaffinity(0))[:2]
    plan_core = max(given) + 1                       # not among them (and, on a 2-CPU machine, not even online)
    agent = start(agents, pair, plan_for(pair, cores=[plan_core]), tmp_path, wrap=on_cpus(given))
    agent.wait_ready()
    engine_cpu, housekeeping = given[1], given[0]
    assert f"engine poll thread on CPU {engine_cpu}, agent threads on CPU {housekeeping}" in agent.output
    assert f"the plan's CPU {plan_core} is not among the CPUs this agent was given" in agent.output
    assert [engine_cpu] in [parse_cpulist(c) for c in thread_cpus(agent.engine_pid()).values()], \
        "the engine's poll thread is pinned to a given CPU"
    assert all(parse_cpulist(c) == [housekeeping] for c in thread_cpus(agent.proc.pid).values())
    m = agent.metrics()
    assert metric(m, "tickwire_cpu", role="engine", cpu=str(engine_cpu)) == 1
    assert metric(m, "tickwire_cpu", role="housekeeping", cpu=str(housekeeping)) == 1
    assert agent.stop() == 0


def test_too_few_cpus_is_a_permanent_error_that_touches_nothing(pair, tmp_path, agents):
    before = host_snapshot(pair)
    only = min(os.sched_getaffinity(0))
    agent = start(agents, pair, plan_for(pair, cores=[only]), tmp_path, wrap=on_cpus([only]))
    assert agent.proc.wait(30) == 2
    assert f"cores: this agent may run on CPU {only} only (1 CPU), but its plan needs 2" in agent.output
    assert host_snapshot(pair) == before


@pytest.mark.parametrize("changes, expected", [
    ({"interface": "nosuchif0"}, "interface: 'nosuchif0' does not exist on this host"),
    ({"queue": 7}, "queue: queue 7 needs 8 RX channels but"),
])
def test_a_plan_that_does_not_fit_this_host_changes_nothing(pair, tmp_path, agents, changes, expected):
    before = host_snapshot(pair)
    agent = start(agents, pair, plan_for(pair, **changes), tmp_path)
    assert agent.proc.wait(30) == 2
    assert expected in agent.output
    assert host_snapshot(pair) == before
    assert not (agent.state_dir / "journal.jsonl").exists()


def test_the_agent_reports_status_to_the_feedhandler(pair, tmp_path, agents):
    """The agent in the node namespace patches a FeedHandler's status in the Kubernetes emulator,
    which listens on that namespace's loopback (started from a thread that joined the namespace,
    so its sockets live there)."""
    def operator_did(api):
        api.create_namespaced_custom_object("tickwire.dev", "v1alpha1", "feeds", "feedhandlers", {
            "apiVersion": "tickwire.dev/v1alpha1", "kind": "FeedHandler",
            "metadata": {"name": "nasdaq", "namespace": "feeds"}, "spec": {}})
        api.patch_namespaced_custom_object_status("tickwire.dev", "v1alpha1", "feeds", "feedhandlers", "nasdaq", {
            "status": {"conditions": [{"type": "Placed", "status": "True", "reason": "Placed", "message": "n1"}]}})

    with emulator_in_namespace(pair.node_ns, setup=operator_did) as emulator:
        kubeconfig = emulator.write_kubeconfig(tmp_path)
        uid = emulator.get("tickwire.dev/v1alpha1/feedhandlers", "feeds", "nasdaq")["metadata"]["uid"]
        plan = plan_for(pair, feedHandler={"namespace": "feeds", "name": "nasdaq", "uid": uid, "generation": 4})
        agent = start(agents, pair, plan, tmp_path, extra=["--kubeconfig", str(kubeconfig)])
        agent.wait_ready()
        publish(pair, tmp_path, ["--line", "A=239.7.1.1:26400", "--messages", "500", "--rate", "20000"])

        def reported():
            status = (emulator.get("tickwire.dev/v1alpha1/feedhandlers", "feeds", "nasdaq") or {}).get("status", {})
            return status if status.get("snapshot", {}).get("messages") == 500 else None
        status = wait_for(reported, "a snapshot with every message")
        conditions = {c["type"]: c for c in status["conditions"]}
        assert conditions["Placed"]["message"] == "n1"                        # the operator's, kept
        assert conditions["EngineReady"]["status"] == "True"
        assert conditions["Receiving"]["status"] == "True"
        assert {c["observedGeneration"] for t, c in conditions.items() if t != "Placed"} == {4}
        assert status["snapshot"]["xdpMode"] == "generic" and status["snapshot"]["latency"]["p99Micros"] > 0
        engine_cpu = max(os.sched_getaffinity(0))             # plan_for's core, given to the agent
        assert status["observed"] == {
            "node": "", "podName": "", "cores": [engine_cpu],
            "housekeepingCores": sorted(os.sched_getaffinity(0) - {engine_cpu}),
            "metricsPort": agent.runtime()["metrics_port"],           # the plan's port 0: an ephemeral one
            "flowSteering": {"mode": "none", "rules": [],             # veth has no ntuple filters
                             "reason": f"{pair.node_if} (veth) has no ntuple flow steering "
                                       "(ETHTOOL_GRXCLSRLCNT: Operation not supported)"}}
        assert agent.stop() == 0
        final = emulator.get("tickwire.dev/v1alpha1/feedhandlers", "feeds", "nasdaq")["status"]
        engine_ready = {c["type"]: c for c in final["conditions"]}["EngineReady"]
        assert (engine_ready["status"], engine_ready["reason"]) == ("False", "Stopped")


@contextlib.contextmanager
def emulator_in_namespace(netns: str, setup):
    """A KubeEmulator whose sockets live in network namespace `netns`; `setup(api)` runs there
    too (a client's sockets belong to the namespace of the thread that opens them). Read what
    the agent wrote with `emulator.get`, which needs no socket."""
    import ctypes
    import queue
    import threading

    import kubernetes
    from tests.support.kube_emulator import KubeEmulator

    handed_over: queue.Queue = queue.Queue()
    done = threading.Event()

    def serve():
        try:
            fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
            if ctypes.CDLL(None, use_errno=True).setns(fd, 0x40000000) != 0:   # CLONE_NEWNET, this thread only
                raise OSError(ctypes.get_errno(), "setns")
            os.close(fd)
            with KubeEmulator.running() as emulator:
                emulator.declare_feedhandlers()
                setup(kubernetes.client.CustomObjectsApi(emulator.api_client()))
                handed_over.put(emulator)
                done.wait(120)
        except BaseException as e:   # hand the failure to the test instead of dying silently
            handed_over.put(e)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    got = handed_over.get(timeout=30)
    if isinstance(got, BaseException):
        raise got
    try:
        yield got
    finally:
        done.set()
        thread.join(30)


def test_the_local_demo_puts_the_host_back_and_leaves_no_state_dir(tmp_path):
    """`make demo` runs the agent with its state in the demo's output directory; once the agent
    has restored the host, that state goes (the plan, logs and plot stay)."""
    import subprocess
    import sys
    from tests.support.netns import require_netns
    require_netns()
    out = tmp_path / "demo"
    hugepages_before = int(open(f"{HUGEPAGES}/nr_hugepages").read())
    done = subprocess.run([sys.executable, "-m", "tickwire_demo", "--duration", "1", "--rate", "2000",
                           "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["agent.log", "feed-summary.json", "latency.png", "plan.json"]
    assert "restored" in (out / "agent.log").read_text()
    assert int(open(f"{HUGEPAGES}/nr_hugepages").read()) == hugepages_before
    # The view's top of book, read from the engine's stream, and the summary's book counts: every
    # instrument the exchange's directory named got a book, and a reader saw each in the stream.
    assert "top of book (16 instruments, read from the stream)" in done.stdout, done.stdout
    summary = {line.strip().split("  ")[0]: line.split()[-3:] for line in done.stdout.splitlines()
               if "instruments with a book" in line or "seen by a reader" in line}
    assert summary == {"instruments with a book": ["16", "16", "ok"],
                       "seen by a reader in the stream": ["16", "16", "ok"]}, done.stdout
    assert "book stream in" in (out / "agent.log").read_text()      # ended and removed at the stop
