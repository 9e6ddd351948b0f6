"""One full run, with the test playing the kubelet.

A FeedHandler is applied with the official client; the operator (kopf, for real) places it on a
node whose inventory names the node side of a veth pair; the test then starts what the operator's
Pod describes (its command, its plan, its environment, with the downward-API fields resolved) as a
process in the node's network namespace; `tickwire-feed` publishes into the exchange side; the
agent runs the AF_XDP engine and reports through the emulator; the FeedHandler must reach Ready
with a rate and a latency in its status.

Everything Kubernetes here lives in the node namespace: the emulator listens on that namespace's
loopback, the operator and the agent run there, and the test's client calls go through a thread
that entered it. Root and namespaces are needed: fails instead of skipping when
TICKWIRE_REQUIRE_NETNS=1 (CI).
"""
from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys

import kubernetes.client as k8s
import pytest

from tickwire_demo.kubelet import container_process
from tests.support.kube_emulator import FEEDHANDLER_CRD, KubeEmulator, load_yaml, netns_executor
from tests.support.netns import VethPair
from tests.support.waiting import log_tails, wait_until

pytestmark = [pytest.mark.netns, pytest.mark.slow]

GROUP, VERSION, PLURAL = "tickwire.dev", "v1alpha1", "feedhandlers"
NS = "feeds"
BIN = pathlib.Path(sys.executable).parent


def condition(fh, type_):
    return next((c for c in ((fh or {}).get("status") or {}).get("conditions") or [] if c["type"] == type_), None)


def wait_for(what, check, timeout, logs=()):
    return wait_until(what, check, timeout, 0.2, log_tails(logs))


def test_apply_place_run_receive_ready(tmp_path):
    processes: list[subprocess.Popen] = []
    with VethPair(queues=2) as pair, KubeEmulator.running(netns=pair.node_ns) as kube:
        client = netns_executor(pair.node_ns)
        try:
            kubeconfig = kube.write_kubeconfig(tmp_path)
            api = kube.api_client()
            core, custom = k8s.CoreV1Api(api), k8s.CustomObjectsApi(api)
            call = lambda fn, *args, **kw: client.submit(fn, *args, **kw).result(timeout=30)  # noqa: E731
            call(k8s.ApiextensionsV1Api(api).create_custom_resource_definition, load_yaml(FEEDHANDLER_CRD))
            core_id = max(os.sched_getaffinity(0))
            call(core.create_node, {"apiVersion": "v1", "kind": "Node", "metadata": {
                "name": "trading-1", "labels": {"tickwire.dev/feed-node": "true"},
                "annotations": {"tickwire.dev/feed-cores": str(core_id),
                                "tickwire.dev/feed-nics": f"{pair.node_if}=0-1",
                                "tickwire.dev/feed-hugepages": "0"}}})

            operator_log = tmp_path / "operator.log"
            # The agent's state root (a hostPath on a node) in this test's own directory.
            env = dict(os.environ, KUBECONFIG=str(kubeconfig), TICKWIRE_RESYNC_SECONDS="1",
                       TICKWIRE_HEALTH_SECONDS="1", TICKWIRE_OPERATOR_METRICS_PORT="0",
                       TICKWIRE_AGENT_STATE_ROOT=str(tmp_path / "node-state"))
            processes.append(pair.popen(pair.node_ns, [
                sys.executable, "-m", "tickwire_operator", "--standalone", "--liveness", ""],
                env=env, stdout=open(operator_log, "wb"), stderr=subprocess.STDOUT))

            call(custom.create_namespaced_custom_object, GROUP, VERSION, NS, PLURAL, {
                "apiVersion": f"{GROUP}/{VERSION}", "kind": "FeedHandler", "metadata": {"name": "itch-a"},
                "spec": {"lines": [{"name": "A", "group": "239.7.1.1", "port": 26400}],
                         "xdpMode": "generic", "statusIntervalSeconds": 1, "staleAfterSeconds": 3,
                         "latencySLO": {"p99Micros": 1_000_000}}})
            pod = wait_for("the agent Pod", lambda: kube.get("v1/pods", NS, "itch-a-agent"), 30, [operator_log])
            plan = json.loads(pod["metadata"]["annotations"]["tickwire.dev/plan"])
            assert (plan["interface"], plan["cores"], plan["queue"]) == (pair.node_if, [core_id], 0)

            # -- the test is the kubelet now --
            command, agent_env = container_process(pod, kubeconfig, BIN)
            state_dir = tmp_path / "node-state" / NS / "itch-a"
            assert command[1:] == ["run", "--plan-env", "TICKWIRE_PLAN", "--state-dir", str(state_dir)]
            state_dir.mkdir(parents=True)    # the hostPath's DirectoryOrCreate
            agent_log = tmp_path / "agent.log"
            processes.append(pair.popen(pair.node_ns, command, env=agent_env,
                                        stdout=open(agent_log, "wb"), stderr=subprocess.STDOUT))
            logs = [operator_log, agent_log]
            wait_for("EngineReady", lambda: (condition(kube.get(f"{GROUP}/{VERSION}/{PLURAL}", NS, "itch-a"),
                                                       "EngineReady") or {}).get("status") == "True", 60, logs)

            feed = pair.popen(pair.exchange_ns, [
                str(BIN / "tickwire-feed"), "publish", "--iface", pair.exchange_if,
                # 5k msgs/s: on a busy 2-core machine a faster feed can overflow the ring once,
                # and the gap would keep GapFree (so Ready) False for a minute.
                "--line", "A=239.7.1.1:26400", "--duration", "90", "--rate", "5000"],
                stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
            processes.append(feed)

            def ready_with_numbers():
                fh = kube.get(f"{GROUP}/{VERSION}/{PLURAL}", NS, "itch-a")
                snap = ((fh or {}).get("status") or {}).get("snapshot") or {}
                numbers = snap.get("rate", 0) > 0 and (snap.get("latency") or {}).get("p99Micros", 0) > 0
                return fh if numbers and (condition(fh, "Ready") or {}).get("status") == "True" else None

            # Ready, and a snapshot with a message rate and a latency (one snapshot may show a rate
            # of 0 when the publisher was descheduled for a whole interval on a busy machine).
            fh = wait_for("Ready=True with a rate and a p99", ready_with_numbers, 60, logs)
            snapshot = fh["status"]["snapshot"]
            assert snapshot["messages"] > 0
            assert snapshot["xdpMode"] == "generic"
            assert condition(fh, "Ready")["reason"] == "FeedHealthy"
            assert condition(fh, "Ready")["observedGeneration"] == fh["metadata"]["generation"]
            print(f"\nReady: {snapshot['rate']:.0f} msgs/s, p99 {snapshot['latency']['p99Micros']:.1f} us")

            # The feed stops: the agent says Receiving=False and Ready follows with its reason.
            feed.send_signal(signal.SIGTERM)
            feed.wait(timeout=20)
            fh = wait_for("Ready=False after the feed stops",
                          lambda: (lambda f: f if (condition(f, "Ready") or {}).get("status") == "False" else None)(
                              kube.get(f"{GROUP}/{VERSION}/{PLURAL}", NS, "itch-a")), 60, logs)
            assert condition(fh, "Receiving")["status"] == "False"
            assert condition(fh, "Ready")["reason"] == condition(fh, "Receiving")["reason"]
        finally:
            for proc in reversed(processes):  # the agent first: it restores the host on SIGTERM
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait(timeout=10)
            client.shutdown(wait=True)
