"""The operator for real: `python -m tickwire_operator` (kopf) in a subprocess against the kmock
emulator (tests/support/kube_emulator.py), FeedHandlers applied with the official client.

The emulator is not a cluster (no kubelet, no schema admission; see its docstring), so no Pod
ever runs here; test_operator_podman.py runs the agent Pod in podman for one full run. Where a test needs
what a kubelet or the node lifecycle controller would write (a Pod's container states or phase,
a node's Ready condition) it writes it itself, through the API, as they would; admission refusals,
unreachable nodes and RBAC are the emulator's (refuse, unreachable_nodes, service_account_token).
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

import kubernetes.client as k8s
import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from tests.support.kube_emulator import FEEDHANDLER_CRD, KubeEmulator, load_yaml
from tests.support.waiting import wait_until

GROUP, VERSION, PLURAL = "tickwire.dev", "v1alpha1", "feedhandlers"
NS = "feeds"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OperatorProcess:
    """One operator replica; stopped (by its pid) in `stop`, or killed to simulate a crash."""

    def __init__(self, kubeconfig, log_path, *, resync=1.0, health=1.0, extra=("--standalone",), env=None):
        self.metrics_port, self.liveness_port = free_port(), free_port()
        env = dict(os.environ, KUBECONFIG=str(kubeconfig), TICKWIRE_RESYNC_SECONDS=str(resync),
                   TICKWIRE_HEALTH_SECONDS=str(health), TICKWIRE_OPERATOR_METRICS_PORT=str(self.metrics_port),
                   TICKWIRE_AGENT_IMAGE="example.invalid/tickwire-agent:test", **(env or {}))
        self.log_path = log_path
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tickwire_operator", "--liveness",
             f"http://127.0.0.1:{self.liveness_port}/healthz", *extra],
            env=env, stdout=open(log_path, "ab"), stderr=subprocess.STDOUT)

    def get(self, port: int, path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as rsp:
            return rsp.read().decode()

    def stop(self, sig=signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def log_tail(self) -> str:
        return open(self.log_path, errors="replace").read()[-4000:]


def wait_for(what: str, check, timeout: float = 60.0, interval: float = 0.1, op: OperatorProcess | None = None):
    return wait_until(what, check, timeout, interval,
                      (lambda: f"\noperator log:\n{op.log_tail()}") if op else (lambda: ""))


class Cluster:
    def __init__(self, kube: KubeEmulator):
        self.kube = kube
        api = kube.api_client()
        self.core = k8s.CoreV1Api(api)
        self.custom = k8s.CustomObjectsApi(api)
        k8s.ApiextensionsV1Api(api).create_custom_resource_definition(load_yaml(FEEDHANDLER_CRD))

    def add_node(self, name, cores="2-5", nics="eth1=0-3", hugepages="64", **labels):
        self.core.create_node({"apiVersion": "v1", "kind": "Node", "metadata": {
            "name": name, "labels": {"tickwire.dev/feed-node": "true", **labels},
            "annotations": {"tickwire.dev/feed-cores": cores, "tickwire.dev/feed-nics": nics,
                            "tickwire.dev/feed-hugepages": hugepages}}})

    def set_node_ready(self, name, ready: bool):
        """What the node lifecycle controller writes when a kubelet stops (or resumes) reporting."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.core.patch_node_status(name, {"status": {"conditions": [{
            "type": "Ready", "status": "True" if ready else "Unknown", "lastTransitionTime": stamp,
            "reason": "KubeletReady" if ready else "NodeStatusUnknown",
            "message": "" if ready else "Kubelet stopped posting node status."}]}})

    def kubelet_reports(self, pod_name, status):
        """Write a Pod's status as its kubelet would (the emulator has no kubelet)."""
        self.core.patch_namespaced_pod_status(pod_name, NS, {"status": status})

    def events(self, reason):
        return [e for e in self.core.list_namespaced_event(NS).items if e.reason == reason]

    def apply(self, name, **spec):
        spec.setdefault("lines", [{"name": "A", "group": "239.1.1.1", "port": 26477}])
        return self.custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "FeedHandler", "metadata": {"name": name}, "spec": spec})

    def fh(self, name):
        try:
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def fhs(self):
        return self.custom.list_namespaced_custom_object(GROUP, VERSION, NS, PLURAL)["items"]

    def pod(self, name):
        return self.kube.get("v1/pods", NS, name)

    def pods(self):
        return [self.core.api_client.sanitize_for_serialization(p)
                for p in self.core.list_namespaced_pod(NS, label_selector="app.kubernetes.io/managed-by=tickwire-operator").items]


def condition(fh, type_):
    return next((c for c in ((fh or {}).get("status") or {}).get("conditions") or [] if c["type"] == type_), None)


def placed(fh) -> bool:
    c = condition(fh, "Placed")
    return bool(c and c["status"] == "True" and c["observedGeneration"] == fh["metadata"]["generation"]
                and (fh["status"].get("placement") or {}).get("planHash"))


def printer_columns(fh) -> dict:
    """Evaluate the CRD's printer-column JSONPaths (the two shapes they use) like kubectl."""
    crd = load_yaml(FEEDHANDLER_CRD)
    out = {}
    for column in crd["spec"]["versions"][0]["additionalPrinterColumns"]:
        path = column["jsonPath"]
        if "[?(@.type==" in path:
            head, rest = path.split("[?(@.type==", 1)
            wanted, tail = rest.split(")]", 1)
            items = printer_value(fh, head) or []
            match = next((i for i in items if i.get("type") == json.loads(wanted)), {})
            out[column["name"]] = match.get(tail.lstrip("."))
        else:
            out[column["name"]] = printer_value(fh, path)
    return out


def printer_value(obj, path):
    for part in path.strip(".").split("."):
        obj = obj.get(part) if isinstance(obj, dict) else None
    return obj


def assert_no_double_allocation(fhs, pods):
    """No core, queue or metrics port given twice on a node, in the ledgers (their display copies)
    or in the agent Pods' plans; returns the (node, core) and (node, interface, queue) sets."""
    cores, queues, ports = set(), set(), set()
    for fh in fhs:
        placement = (fh.get("status") or {}).get("placement")
        if not placement:
            continue
        for core in placement["cores"]:
            assert (placement["node"], core) not in cores, f"core {core} given twice on {placement['node']}"
            cores.add((placement["node"], core))
        queue = (placement["node"], placement["interface"], placement["queue"])
        assert queue not in queues, f"queue {queue} given twice"
        queues.add(queue)
        port = (placement["node"], placement["metricsPort"])
        assert port not in ports, f"metrics port {port} given twice"
        ports.add(port)
    pod_cores, pod_queues, pod_ports = set(), set(), set()
    for pod in pods:
        plan = json.loads(pod["metadata"]["annotations"]["tickwire.dev/plan"])
        node = pod["spec"]["nodeName"]
        for core in plan["cores"]:
            assert (node, core) not in pod_cores, f"two agent Pods run on core {(node, core)}"
            pod_cores.add((node, core))
        assert (node, plan["interface"], plan["queue"]) not in pod_queues, f"two agent Pods bind {plan['queue']}"
        pod_queues.add((node, plan["interface"], plan["queue"]))
        assert (node, plan["metrics"]["port"]) not in pod_ports, f"two agent Pods bind port {plan['metrics']['port']}"
        pod_ports.add((node, plan["metrics"]["port"]))
        assert pod["spec"]["containers"][0]["ports"][0]["hostPort"] == plan["metrics"]["port"]
    return cores, queues


@pytest.fixture
def cluster(tmp_path):
    with KubeEmulator.running() as kube:
        yield Cluster(kube), kube.write_kubeconfig(tmp_path)


@pytest.fixture
def operator(cluster, tmp_path):
    _, kubeconfig = cluster
    started: list[OperatorProcess] = []

    def start(**kwargs) -> OperatorProcess:
        op = OperatorProcess(kubeconfig, tmp_path / f"operator-{len(started)}.log", **kwargs)
        started.append(op)
        return op

    yield start
    for op in started:
        op.stop()


def test_many_feedhandlers_on_few_nodes_then_delete_frees_for_the_next(cluster, operator):
    c, _ = cluster
    c.add_node("node-a", cores="2-4", nics="eth1=0-3")
    c.add_node("node-b", cores="2-4", nics="eth1=0-1;eth2=0-1")
    op = operator()
    for i in range(6):
        c.apply(f"fh-{i}")
    wait_for("six placements", lambda: sum(placed(fh) for fh in c.fhs()) == 6, op=op)
    c.apply("fh-big", cores=2)  # 6 cores taken by six one-core feeds: nothing left for two more
    big = wait_for("fh-big's reason", lambda: (lambda f: f if condition(f, "Placed") else None)(c.fh("fh-big")), op=op)
    reason = condition(big, "Placed")
    assert (reason["status"], reason["reason"]) == ("False", "NoFit")
    assert "node-a: needs 2 feed cores, 0 free (feed cores: 2-4)" in reason["message"]
    assert "node-b: needs 2 feed cores, 0 free (feed cores: 2-4)" in reason["message"]
    assert condition(big, "Ready")["reason"] == "NoFit"

    wait_for("six agent Pods", lambda: len(c.pods()) == 6, op=op)
    cores, queues = assert_no_double_allocation(c.fhs(), c.pods())
    assert len(cores) == 6 and len(queues) == 6

    fh = c.fh("fh-0")
    columns = printer_columns(fh)
    assert columns["Node"] in ("node-a", "node-b") and isinstance(columns["Queue"], int)
    assert columns["Cores"] == str(fh["status"]["placement"]["cores"][0])
    assert columns["Ready"] == "False"  # no agent runs here: the emulator has no kubelet
    assert condition(fh, "Ready")["reason"] == "AwaitingTuned"
    assert all(cond["observedGeneration"] == 1 for cond in fh["status"]["conditions"])
    assert fh["status"]["observedGeneration"] == 1
    assert "tickwire.dev/release-allocation" in fh["metadata"]["finalizers"]

    # Deleting one runs the finalizer: its Pod goes, then its core is free for fh-big... which
    # needs two on one node, so free a second one on the same node.
    victims = [f["metadata"]["name"] for f in c.fhs() if (f["status"].get("placement") or {}).get("node") == "node-a"][:2]
    for victim in victims:
        c.custom.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, victim)
    wait_for("the finalizer to finish", lambda: all(c.fh(v) is None for v in victims), op=op)
    assert all(c.pod(f"{v}-agent") is None for v in victims)
    big = wait_for("fh-big placed on the freed cores", lambda: (lambda f: f if placed(f) else None)(c.fh("fh-big")), op=op)
    assert big["status"]["placement"]["node"] == "node-a" and len(big["status"]["placement"]["cores"]) == 2
    assert_no_double_allocation(c.fhs(), wait_for("fh-big's Pod", lambda: c.pods() if len(c.pods()) == 5 else None))

    # The operator's own health and metrics.
    health = json.loads(op.get(op.liveness_port, "/healthz"))
    assert health["placed"] == 5
    text = op.get(op.metrics_port, "/metrics")
    assert 'tickwire_operator_placement_failures_total{reason="NoFit"}' in text
    assert "tickwire_operator_reconcile_duration_seconds_bucket" in text
    assert "tickwire_operator_releases_total 2.0" in text


def test_eight_feedhandlers_created_at_once_on_two_nodes_share_an_interface_and_nothing_else(cluster, operator):
    """Four feeds per node on one NIC each: created in one burst (kopf reconciles them
    concurrently), every core, queue and metrics port goes to one feed only, also in the Pods'
    plans; a full port range is a Placed=False/NoMetricsPort naming the range; a restarted operator
    rebuilds who holds which port from the ledgers and gives a freed one, never a held one."""
    c, _ = cluster
    c.add_node("node-a", cores="2-9", nics="eth1=1-4")
    c.add_node("node-b", cores="2-9", nics="eth1=1-4")
    op = operator(env={"TICKWIRE_AGENT_METRICS_PORTS": "9480-9483"})
    names = [f"feed-{i}" for i in range(8)]
    for i, name in enumerate(names):
        c.apply(name, lines=[{"name": "A", "group": f"239.1.1.{i + 1}", "port": 26400 + i}])
    wait_for("eight placements", lambda: sum(placed(fh) for fh in c.fhs()) == 8, op=op)
    wait_for("eight agent Pods", lambda: len(c.pods()) == 8, op=op)
    cores, queues = assert_no_double_allocation(c.fhs(), c.pods())
    placements = [fh["status"]["placement"] for fh in c.fhs()]
    assert sorted((p["node"], p["interface"], p["queue"], p["metricsPort"]) for p in placements) == \
        sorted((n, "eth1", q, 9479 + q) for n in ("node-a", "node-b") for q in range(1, 5))
    assert len(cores) == 8
    for fh in c.fhs():   # the ledger, not only its display copy
        assert ledger(fh)["metricsPort"] == fh["status"]["placement"]["metricsPort"]

    c.apply("feed-9")
    nofit = wait_for("feed-9 refused", lambda: (lambda f: f if condition(f, "Placed") else None)(c.fh("feed-9")), op=op)
    refused = condition(nofit, "Placed")
    # Queues ran out as well as ports: the first thing missing is named, the reason is NoFit.
    assert (refused["status"], refused["reason"]) == ("False", "NoFit"), refused
    for node in ("node-a", "node-b"):
        assert f"{node}: no free feed queue on eth1" in refused["message"], refused

    # Queues to spare, ports not: only the port range is missing, and the reason says so.
    c.add_node("node-c", cores="2-9", nics="eth1=1-8")
    op.stop()
    op = operator(env={"TICKWIRE_AGENT_METRICS_PORTS": "9480-9483"})
    wait_for("feed-9 on node-c", lambda: placed(c.fh("feed-9")), op=op)
    assert c.fh("feed-9")["status"]["placement"]["metricsPort"] == 9480
    for i in range(10, 14):
        c.apply(f"feed-{i}", nodeName="node-c")
    wait_for("node-c full of ports", lambda: sum(placed(c.fh(f"feed-{i}")) for i in range(10, 14)) == 3, op=op)
    last = wait_for("the fourth refused", lambda: next(
        (f for f in (c.fh(f"feed-{i}") for i in range(10, 14)) if (condition(f, "Placed") or {}).get("status") == "False"),
        None), op=op)
    assert condition(last, "Placed")["reason"] == "NoMetricsPort"
    assert "node-c: no free metrics port in 9480-9483 (the operator's agent metrics port range" in \
        condition(last, "Placed")["message"]
    assert condition(last, "Ready")["reason"] == "NoMetricsPort"
    # One on node-c goes: its port is the only one free, and the waiting feed gets it.
    victim = next(f["metadata"]["name"] for f in c.fhs()
                  if f["metadata"]["name"] != last["metadata"]["name"] and placed(f)
                  and f["status"]["placement"]["node"] == "node-c" and f["status"]["placement"]["metricsPort"] == 9482)
    c.custom.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, victim)
    moved = wait_for("the waiting feed placed", lambda: (lambda f: f if placed(f) else None)(c.fh(last["metadata"]["name"])),
                     op=op)
    assert moved["status"]["placement"]["metricsPort"] == 9482
    assert_no_double_allocation(c.fhs(), wait_for("Pods", lambda: c.pods() if len(c.pods()) == 12 else None, op=op))


def kubernetes_validate_strict(obj: dict, path) -> str:
    """Run the `kubernetes-validate --strict` CLI on one object; its complaints, or ""."""
    path.write_text(yaml.safe_dump(obj))
    result = subprocess.run([os.path.join(os.path.dirname(sys.executable), "kubernetes-validate"),
                             "--strict", "--quiet", str(path)], capture_output=True, text=True, timeout=60)
    return "" if result.returncode == 0 else (result.stdout + result.stderr)


def test_spec_change_replaces_the_pod_and_a_deleted_pod_comes_back(cluster, operator, tmp_path):
    c, _ = cluster
    c.add_node("node-a")
    op = operator()
    c.apply("feed")
    first = wait_for("the agent Pod", lambda: c.pod("feed-agent"), op=op)
    assert kubernetes_validate_strict(first, tmp_path / "pod.yaml") == ""
    spoiled = json.loads(json.dumps(first))
    spoiled["spec"]["containers"][0]["cpuPinning"] = "yes"  # the check can fail: an unknown field
    assert "cpuPinning" in kubernetes_validate_strict(spoiled, tmp_path / "spoiled.yaml")

    # A label is not spec: no new generation, same Pod.
    c.custom.patch_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "feed", {"metadata": {"labels": {"x": "y"}}})
    # A spec change the agent must see: a new Pod with the new plan.
    c.custom.patch_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "feed", {"spec": {"xdpMode": "generic"}})
    second = wait_for("the replaced Pod", lambda: (lambda p: p if p and p["metadata"]["uid"] != first["metadata"]["uid"] else None)(c.pod("feed-agent")), op=op)
    plan = json.loads(second["metadata"]["annotations"]["tickwire.dev/plan"])
    assert plan["xdpMode"] == "generic" and plan["feedHandler"]["generation"] == 2
    fh = wait_for("generation 2 observed", lambda: (lambda f: f if f["status"].get("observedGeneration") == 2 and f["status"]["placement"].get("planGeneration") == 2 else None)(c.fh("feed")), op=op)
    assert condition(fh, "Placed")["observedGeneration"] == 2

    # The Pod disappears (evicted, deleted by hand): the operator brings it back, same plan.
    c.core.delete_namespaced_pod("feed-agent", NS)
    third = wait_for("the recreated Pod", lambda: (lambda p: p if p and p["metadata"]["uid"] != second["metadata"]["uid"] else None)(c.pod("feed-agent")), op=op)
    assert third["metadata"]["annotations"]["tickwire.dev/plan"] == second["metadata"]["annotations"]["tickwire.dev/plan"]

    # A bad update is refused with a reason; the running Pod and the placement stay as they were.
    c.custom.patch_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "feed", {"spec": {"cores": 0}})
    fh = wait_for("InvalidSpec", lambda: (lambda f: f if (condition(f, "Placed") or {}).get("reason") == "InvalidSpec" else None)(c.fh("feed")), op=op)
    assert "spec.cores: 0 is less than the minimum of 1" in condition(fh, "Placed")["message"]
    assert condition(fh, "Placed")["observedGeneration"] == 3
    assert c.pod("feed-agent")["metadata"]["uid"] == third["metadata"]["uid"]
    assert fh["status"]["placement"]["planGeneration"] == 2


def test_a_bad_spec_creates_nothing(cluster, operator):
    c, _ = cluster
    c.add_node("node-a")
    op = operator()
    c.apply("bad", nodeName="node-a", nodeSelector={"a": "b"}, lines=[{"name": "A", "group": "10.0.0.1", "port": 1}])
    fh = wait_for("InvalidSpec", lambda: (lambda f: f if condition(f, "Placed") else None)(c.fh("bad")), op=op)
    placed_condition = condition(fh, "Placed")
    assert (placed_condition["status"], placed_condition["reason"]) == ("False", "InvalidSpec")
    assert "spec.lines[0].group" in placed_condition["message"]
    assert condition(fh, "Ready")["reason"] == "InvalidSpec"
    assert "placement" not in fh["status"] and c.pods() == []


def test_a_restarted_operator_gives_nothing_twice(cluster, operator):
    c, _ = cluster
    for n in range(3):
        c.add_node(f"node-{n}", cores="0-9", nics="eth1=0-9")
    op = operator()
    for i in range(30):
        c.apply(f"fh-{i}")
    wait_for("a few placements", lambda: sum(placed(f) for f in c.fhs()) >= 5, interval=0.02, op=op)
    op.stop(signal.SIGKILL)  # a crash: no clean-up of any kind
    halfway = sum(placed(f) for f in c.fhs())
    op = operator()
    wait_for("all 30 placed", lambda: sum(placed(f) for f in c.fhs()) == 30, timeout=60, op=op)
    wait_for("30 Pods", lambda: len(c.pods()) == 30, op=op)
    cores, queues = assert_no_double_allocation(c.fhs(), c.pods())
    assert len(cores) == len(queues) == 30
    assert halfway < 30, "the crash came too late to prove anything"


@pytest.mark.slow
def test_placement_speed(cluster, operator, record_property):
    """Apply-to-Placed latency, and the time to place 200 FeedHandlers (printed for the note)."""
    c, _ = cluster
    for n in range(10):
        c.add_node(f"node-{n}", cores="0-19", nics="eth1=0-19")
    op = operator(resync=30, health=30)
    wait_for("the operator to be live", lambda: _live(op), op=op)
    latencies = []
    for i in range(5):
        start = time.monotonic()
        c.apply(f"single-{i}")
        wait_for("Placed", lambda: placed(c.fh(f"single-{i}")), interval=0.005, op=op)
        latencies.append(time.monotonic() - start)
    start = time.monotonic()
    for i in range(195):
        c.apply(f"bulk-{i}")
    wait_for("200 placed", lambda: sum(placed(f) for f in c.fhs()) == 200, timeout=240, interval=0.5, op=op)
    bulk = time.monotonic() - start
    assert_no_double_allocation(c.fhs(), c.pods())
    record_property("apply_to_placed_median_s", statistics.median(latencies))
    record_property("place_200_s", bulk)
    print(f"\napply->Placed median {statistics.median(latencies) * 1000:.0f} ms "
          f"(max {max(latencies) * 1000:.0f} ms); 195 more FeedHandlers placed in {bulk:.1f} s")


def _live(op: OperatorProcess) -> bool:
    try:
        op.get(op.liveness_port, "/healthz")
        return True
    except OSError:
        return False


def test_two_replicas_with_peering_only_one_acts(cluster, operator):
    c, _ = cluster
    c.kube.declare_kopf_peering()
    c.custom.create_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", {
        "apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": "tickwire-operator"}})
    c.add_node("node-a", cores="0-9", nics="eth1=0-9")
    high = operator(extra=("--peering", "tickwire-operator", "--priority", "200"))
    peers = lambda: (c.kube.get("kopf.dev/v1/clusterkopfpeerings", None, "tickwire-operator") or {}).get("status") or {}  # noqa: E731
    wait_for("the first replica's keep-alive", lambda: len(peers()) == 1, op=high)
    low = operator(extra=("--peering", "tickwire-operator", "--priority", "100"))
    wait_for("both replicas in the peering", lambda: len(peers()) == 2, op=low)
    assert sorted(p["priority"] for p in peers().values()) == [100, 200]
    for i in range(8):
        c.apply(f"fh-{i}")
    wait_for("8 placed", lambda: sum(placed(f) for f in c.fhs()) == 8, op=high)
    assert_no_double_allocation(c.fhs(), c.pods())
    assert low.proc.poll() is None and _live(low), "the standby replica must stay up"
    assert open(high.log_path, errors="replace").read().count("placed feeds/") == 8
    assert "placed feeds/" not in open(low.log_path, errors="replace").read()


# ---- what the operator does when an agent Pod fails (reconcile.Policy, podhealth.py) ----

def fh_with(c, name, check):
    """A predicate over FeedHandler `name` for wait_for: the FeedHandler when `check` holds."""
    return lambda: (lambda f: f if f is not None and check(f) else None)(c.fh(name))


def reason_of(fh, type_):
    return (condition(fh, type_) or {}).get("reason")


def test_a_refused_pod_is_reported_and_created_again_with_back_off(cluster, operator):
    c, _ = cluster
    c.add_node("node-a")
    attempts = []
    refusing = [True]

    def pod_security(resource, obj):
        if resource == "v1/pods":
            attempts.append(time.monotonic())
            if refusing[0]:
                return ('violates PodSecurity "baseline:latest": host namespaces (hostNetwork=true), '
                        'hostPath volumes (volumes "sys", "bpffs")')
        return None

    c.kube.refuse(pod_security)
    op = operator(env={"TICKWIRE_POD_BACKOFF_SECONDS": "2", "TICKWIRE_POD_BACKOFF_MAX_SECONDS": "8"})
    c.apply("feed")
    fh = wait_for("PodAdmissionRefused", fh_with(c, "feed", lambda f: reason_of(f, "PodHealthy") == "PodAdmissionRefused"), op=op)
    message = condition(fh, "PodHealthy")["message"]
    assert "the API server refused agent Pod feed-agent (403): " in message
    assert "violates PodSecurity" in message and "next agent Pod in 2 s" in message
    assert reason_of(fh, "Ready") == "PodAdmissionRefused"
    assert reason_of(fh, "Placed") == "Placed"  # the allocation stays: the node is fine
    first = attempts[0]
    time.sleep(9)
    # Back-off 2, 4, 8 s: creates at about 0, 2, 6 s. Without it, the 1 s resync and kopf's own
    # retries would try at least eight times. A slow machine can only make fewer attempts.
    early = [t for t in attempts if t - first < 9]
    assert 2 <= len(early) <= 4, f"{len(early)} creates in 9 s: {[round(t - first, 1) for t in early]}"
    assert c.pod("feed-agent") is None

    refusing[0] = False  # the admin labels the namespace
    wait_for("the Pod created after the refusal ends", lambda: c.pod("feed-agent"), timeout=30, op=op)
    fh = wait_for("PodHealthy again", fh_with(c, "feed", lambda f: reason_of(f, "PodHealthy") == "Starting"), op=op)
    assert reason_of(fh, "Ready") == "AwaitingTuned"


def test_image_pull_and_crash_loop_are_reported_without_a_replacement_loop(cluster, operator):
    c, _ = cluster
    c.add_node("node-a")
    op = operator(env={"TICKWIRE_CRASHLOOP_RESTARTS": "5"})
    c.apply("feed")
    pod = wait_for("the agent Pod", lambda: c.pod("feed-agent"), op=op)
    uid = pod["metadata"]["uid"]

    c.kubelet_reports("feed-agent", {"phase": "Pending", "containerStatuses": [{
        "name": "agent", "image": "example.invalid/tickwire-agent:test", "imageID": "", "ready": False,
        "restartCount": 0, "state": {"waiting": {"reason": "ImagePullBackOff",
                                                 "message": 'Back-off pulling image "example.invalid/tickwire-agent:test"'}}}]})
    fh = wait_for("ImagePullFailed", fh_with(c, "feed", lambda f: reason_of(f, "PodHealthy") == "ImagePullFailed"), op=op)
    assert "example.invalid/tickwire-agent:test" in condition(fh, "PodHealthy")["message"]
    assert reason_of(fh, "Ready") == "ImagePullFailed"

    # Four restarts: below the limit, nothing to report yet.
    crash = {"name": "agent", "image": "example.invalid/tickwire-agent:test", "imageID": "", "ready": False,
             "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container"}},
             "lastState": {"terminated": {"exitCode": 2, "reason": "Error",
                                          "message": "engine: CAP_BPF missing: cannot load the steering program"}}}
    c.kubelet_reports("feed-agent", {"phase": "Running", "containerStatuses": [{**crash, "restartCount": 4}]})
    wait_for("the image pull report cleared", fh_with(c, "feed", lambda f: reason_of(f, "PodHealthy") == "Running"), op=op)
    c.kubelet_reports("feed-agent", {"phase": "Running", "containerStatuses": [{**crash, "restartCount": 5}]})
    fh = wait_for("CrashLoop", fh_with(c, "feed", lambda f: reason_of(f, "PodHealthy") == "CrashLoop"), op=op)
    message = condition(fh, "PodHealthy")["message"]
    assert "restarted 5 times" in message and "exit code 2 (Error): engine: CAP_BPF missing" in message
    assert reason_of(fh, "Ready") == "CrashLoop"
    time.sleep(3)  # three resyncs: the kubelet restarts the container, the operator must not
    assert c.pod("feed-agent")["metadata"]["uid"] == uid


def test_a_failed_pod_is_replaced_with_back_off(cluster, operator):
    c, _ = cluster
    c.add_node("node-a")
    op = operator(env={"TICKWIRE_POD_BACKOFF_SECONDS": "2"})
    c.apply("feed")
    first = wait_for("the agent Pod", lambda: c.pod("feed-agent"), op=op)
    uids = [first["metadata"]["uid"]]
    for wait in (2, 4):  # the back-off doubles
        # The kubelet's own admission refused it: such a Pod never runs again.
        c.kubelet_reports("feed-agent", {"phase": "Failed", "reason": "OutOfcpu",
                                         "message": "Pod was rejected: Node didn't have enough resource: cpu"})
        # This failure's report, not the previous round's (its status may still show that one).
        fh = wait_for(f"PodFailed, next Pod in {wait} s", fh_with(c, "feed", lambda f: reason_of(f, "PodHealthy") == "PodFailed"
                                                                and f"in {wait} s" in condition(f, "PodHealthy")["message"]), op=op)
        message = condition(fh, "PodHealthy")["message"]
        assert "OutOfcpu" in message and f"next agent Pod in {wait} s" in message, message
        assert reason_of(fh, "Ready") == "PodFailed"
        new = wait_for("the replacement", lambda: (lambda p: p if p and p["metadata"]["uid"] not in uids else None)(c.pod("feed-agent")), op=op)
        assert new["metadata"]["annotations"]["tickwire.dev/plan"] == first["metadata"]["annotations"]["tickwire.dev/plan"]
        uids.append(new["metadata"]["uid"])
    wait_for("PodHealthy again", fh_with(c, "feed", lambda f: reason_of(f, "PodHealthy") == "Starting"), op=op)


# ---- lost nodes and Pods stuck Terminating ----

def test_a_feedhandler_leaves_a_node_that_stays_not_ready(cluster, operator):
    c, _ = cluster
    c.add_node("node-a")
    c.add_node("node-b")
    op = operator(env={"TICKWIRE_NODE_LOST_SECONDS": "4"})
    c.apply("feed", nodeSelector={"tickwire.dev/feed-node": "true"})
    fh = wait_for("placed", fh_with(c, "feed", placed), op=op)
    assert fh["status"]["placement"]["node"] == "node-a"
    old = c.pod("feed-agent")

    c.kube.unreachable_nodes.add("node-a")  # its kubelet is gone: nothing there confirms a deletion
    c.set_node_ready("node-a", False)
    fh = wait_for("NodeNotReady while the grace period runs",
                  fh_with(c, "feed", lambda f: reason_of(f, "PodHealthy") == "NodeNotReady"), op=op)
    assert "moves to another node if it is still not Ready after 4 s" in condition(fh, "PodHealthy")["message"]
    assert fh["status"]["placement"]["node"] == "node-a"

    fh = wait_for("moved to node-b", fh_with(c, "feed", lambda f: placed(f) and f["status"]["placement"]["node"] == "node-b"),
                  timeout=30, op=op)
    ledger = json.loads(fh["metadata"]["annotations"]["tickwire.dev/allocation"])
    assert ledger["node"] == "node-b"
    new = wait_for("the new Pod on node-b", lambda: (lambda p: p if p and p["spec"]["nodeName"] == "node-b" else None)(c.pod("feed-agent")), op=op)
    assert new["metadata"]["uid"] != old["metadata"]["uid"]
    forced = c.events("AgentPodForceDeleted")
    assert forced and "Host settings on node-a stay as that agent left them" in forced[0].message
    assert c.events("NodeLost")


def test_deleting_a_feedhandler_whose_pod_hangs_terminating_ends(cluster, operator):
    c, _ = cluster
    c.add_node("node-a", cores="2")
    op = operator(env={"TICKWIRE_POD_STUCK_SECONDS": "1"})
    c.apply("feed")
    wait_for("the agent Pod", lambda: c.pod("feed-agent"), op=op)
    c.kube.unreachable_nodes.add("node-a")  # the node still says Ready; its kubelet hangs
    c.custom.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "feed")
    terminating = wait_for("the Pod Terminating", lambda: (lambda p: p if p and p["metadata"].get("deletionTimestamp") else None)(c.pod("feed-agent")), op=op)
    assert terminating["metadata"]["deletionGracePeriodSeconds"] == 30
    # The Pod's 30 s grace period, then 1 s more: forced, and the FeedHandler goes.
    wait_for("the FeedHandler gone", lambda: c.fh("feed") is None, timeout=60, interval=0.5, op=op)
    assert c.pod("feed-agent") is None
    forced = c.events("AgentPodForceDeleted")
    assert forced and "Terminating" in forced[0].message and "past its grace period" in forced[0].message
    c.apply("next")  # its core is free again
    wait_for("the next one placed on the freed core", fh_with(c, "next", placed), op=op)


# ---- the ledger, and what an agent may write (contracts 4 and 5) ----

def agent_api(c, account):
    """The official client as an agent: the ServiceAccount's token, RBAC enforced by the emulator."""
    config = c.kube.configuration()
    config.api_key = {"authorization": f"Bearer {c.kube.service_account_token(NS, account)}"}
    return k8s.CustomObjectsApi(k8s.ApiClient(config))


def refused(call) -> int:
    with pytest.raises(ApiException) as failure:
        call()
    return failure.value.status


def ledger(fh):
    return json.loads(fh["metadata"]["annotations"]["tickwire.dev/allocation"])


def test_an_agent_writes_only_its_own_status_and_never_the_ledger(cluster, operator):
    c, _ = cluster
    c.add_node("node-a", cores="2-5")
    op = operator()
    c.apply("fh-a")
    c.apply("fh-b")
    fh_a = wait_for("fh-a placed", fh_with(c, "fh-a", placed), op=op)
    fh_b = wait_for("fh-b placed", fh_with(c, "fh-b", placed), op=op)
    pod = wait_for("fh-a's Pod", lambda: c.pod("fh-a-agent"), op=op)

    # Its own identity, owned by its FeedHandler, allowed its own status and nothing else.
    assert pod["spec"]["serviceAccountName"] == "fh-a-agent"
    rbac = "rbac.authorization.k8s.io/v1"
    role = c.kube.get(f"{rbac}/roles", NS, "fh-a-agent")
    assert role["rules"] == [{"apiGroups": ["tickwire.dev"], "resources": ["feedhandlers/status"],
                              "resourceNames": ["fh-a"], "verbs": ["get", "patch"]}]
    binding = c.kube.get(f"{rbac}/rolebindings", NS, "fh-a-agent")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "fh-a-agent", "namespace": NS}]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "fh-a-agent"}
    for kind in ("v1/serviceaccounts", f"{rbac}/roles", f"{rbac}/rolebindings"):
        owner = c.kube.get(kind, NS, "fh-a-agent")["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["uid"]) == ("FeedHandler", fh_a["metadata"]["uid"])

    agent = agent_api(c, "fh-a-agent")
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    agent.patch_namespaced_custom_object_status(GROUP, VERSION, NS, PLURAL, "fh-a", {"status": {"snapshot": {"updated": now}}})
    assert c.fh("fh-a")["status"]["snapshot"]["updated"] == now

    # A forged ledger through the status subresource: accepted by the API server, which drops
    # every metadata change from a status patch; the forged display copy is put right again.
    before = ledger(c.fh("fh-a"))
    stolen = {**fh_b["status"]["placement"], "planHash": "forged"}
    agent.patch_namespaced_custom_object_status(GROUP, VERSION, NS, PLURAL, "fh-a", {
        "metadata": {"annotations": {"tickwire.dev/allocation": json.dumps(ledger(fh_b))}},
        "status": {"placement": stolen}})
    assert ledger(c.fh("fh-a")) == before
    fh_a = wait_for("the display copy restored", fh_with(c, "fh-a", lambda f: f["status"]["placement"]["cores"] == before["cores"]
                                                          and f["status"]["placement"]["planHash"] != "forged"), op=op)
    assert c.pod("fh-a-agent")["metadata"]["uid"] == pod["metadata"]["uid"], "a forged status moved nothing"

    # Everything else is refused: another FeedHandler's status, any FeedHandler object, listing.
    assert refused(lambda: agent.patch_namespaced_custom_object_status(
        GROUP, VERSION, NS, PLURAL, "fh-b", {"status": {"placement": None}})) == 403
    assert refused(lambda: agent.get_namespaced_custom_object_status(GROUP, VERSION, NS, PLURAL, "fh-b")) == 403
    assert refused(lambda: agent.patch_namespaced_custom_object(
        GROUP, VERSION, NS, PLURAL, "fh-a", {"metadata": {"annotations": {"tickwire.dev/allocation": None}}})) == 403
    assert refused(lambda: agent.list_namespaced_custom_object(GROUP, VERSION, NS, PLURAL)) == 403
    assert ledger(c.fh("fh-b"))["cores"] == fh_b["status"]["placement"]["cores"]

    # The uid check an agent makes (contract 4): a JSON patch whose `test` fails is 422, as from a
    # real API server, and changes nothing.
    uid_test = [{"op": "test", "path": "/metadata/uid", "value": "uid-of-an-older-fh-a"},
                {"op": "replace", "path": "/status/snapshot", "value": {"updated": "2000-01-01T00:00:00Z"}}]
    assert refused(lambda: agent.patch_namespaced_custom_object_status(
        GROUP, VERSION, NS, PLURAL, "fh-a", uid_test, _content_type="application/json-patch+json")) == 422
    assert c.fh("fh-a")["status"]["snapshot"]["updated"] == now
    uid_test[0]["value"] = fh_a["metadata"]["uid"]
    agent.patch_namespaced_custom_object_status(GROUP, VERSION, NS, PLURAL, "fh-a", uid_test,
                                                _content_type="application/json-patch+json")
    assert c.fh("fh-a")["status"]["snapshot"]["updated"] == "2000-01-01T00:00:00Z"

    # The identity goes with its FeedHandler (garbage collection through ownerReferences).
    c.custom.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "fh-a")
    wait_for("fh-a gone", lambda: c.fh("fh-a") is None, op=op)
    assert all(c.kube.get(kind, NS, "fh-a-agent") is None
               for kind in ("v1/serviceaccounts", f"{rbac}/roles", f"{rbac}/rolebindings"))


def test_feedhandlers_of_the_previous_release_are_adopted_once(cluster, operator):
    from tickwire_operator.placement import Allocation
    from tickwire_operator.plan import build_plan
    from tickwire_operator.pod import AgentSettings, build_agent_pod
    from tickwire_operator.spec import validated_spec

    c, _ = cluster
    c.add_node("node-a", cores="2-5")
    # What the previous release left: the ledger in status.placement, a Pod running its plan
    # under the shared "tickwire-agent" ServiceAccount ...
    old = c.apply("old")
    # kopf's own record that the old operator handled it: the new one resumes it.
    c.custom.patch_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "old", {"metadata": {"annotations": {
        "kopf.zalando.org/last-handled-configuration": json.dumps({"spec": old["spec"]})}}})
    legacy = Allocation(node="node-a", interface="eth1", queue=2, cores=(4,))
    c.custom.patch_namespaced_custom_object_status(GROUP, VERSION, NS, PLURAL, "old", {
        "status": {"placement": {**legacy.as_status(), "pod": "old-agent"}}})
    old = c.fh("old")
    old_settings = AgentSettings(image="example.invalid/tickwire-agent:test", service_account="tickwire-agent")
    # The previous release's plan took its port from spec.metricsPort, 9470 by default.
    old_plan = build_plan(old, validated_spec(old), dataclasses.replace(legacy, metrics_port=9470))
    old_pod = build_agent_pod(old, legacy, old_plan, old_settings)
    c.core.create_namespaced_pod(NS, old_pod)
    first_uid = c.pod("old-agent")["metadata"]["uid"]
    # ... and one whose status.placement overlaps it (a lost write of the old release): not adopted.
    c.apply("stray")
    c.custom.patch_namespaced_custom_object_status(GROUP, VERSION, NS, PLURAL, "stray", {
        "status": {"placement": {**legacy.as_status(), "pod": "stray-agent"}}})

    op = operator()
    fh = wait_for("old adopted", fh_with(c, "old", placed), op=op)
    # The ledger gains the port the running agent binds (in the range and free: kept).
    assert ledger(fh) == {"node": "node-a", "interface": "eth1", "queue": 2, "cores": [4], "hugepages": 0,
                          "metricsPort": 9470}
    new_pod = wait_for("old's Pod under its own ServiceAccount", lambda: (lambda p: p if p and p["metadata"]["uid"] != first_uid else None)(c.pod("old-agent")), op=op)
    assert new_pod["spec"]["serviceAccountName"] == "old-agent"
    plan = json.loads(new_pod["metadata"]["annotations"]["tickwire.dev/plan"])
    assert (plan["queue"], plan["cores"]) == (2, [4]), "the adopted allocation is kept, not moved"
    stray = wait_for("stray placed anew", fh_with(c, "stray", placed), op=op)
    assert ledger(stray)["queue"] != 2 and 4 not in ledger(stray)["cores"] and ledger(stray)["metricsPort"] == 9471
    assert_no_double_allocation(c.fhs(), wait_for("two Pods", lambda: c.pods() if len(c.pods()) == 2 else None))

    # Once: from now on status.placement is a display copy; editing it moves nothing.
    c.custom.patch_namespaced_custom_object_status(GROUP, VERSION, NS, PLURAL, "old", {
        "status": {"placement": {**fh["status"]["placement"], "queue": 3, "cores": [5]}}})
    wait_for("the display copy restored", fh_with(c, "old", lambda f: f["status"]["placement"]["queue"] == 2), op=op)
    assert ledger(c.fh("old"))["queue"] == 2


def test_the_ledger_follows_the_cpus_the_agent_runs_on_and_a_clash_is_reported(cluster, operator):
    c, _ = cluster
    c.add_node("node-a", cores="2-5")
    op = operator()
    c.apply("fh-a")
    fh_a = wait_for("fh-a placed", fh_with(c, "fh-a", placed), op=op)
    assert ledger(fh_a)["cores"] == [2]
    pod_a = wait_for("fh-a's Pod", lambda: c.pod("fh-a-agent"), op=op)

    # The kubelet's static CPU manager gave the Pod CPUs 4 and 5; the agent says so (contract 3).
    agent_a = agent_api(c, "fh-a-agent")
    agent_a.patch_namespaced_custom_object_status(GROUP, VERSION, NS, PLURAL, "fh-a", {"status": {"observed": {
        "node": "node-a", "cores": [4], "housekeepingCores": [5], "podName": "fh-a-agent"}}})
    fh_a = wait_for("the running CPUs in the ledger", fh_with(c, "fh-a", lambda f: ledger(f).get("runningCores") == [4]), op=op)
    assert ledger(fh_a) == {"node": "node-a", "interface": "eth1", "queue": 0, "cores": [2], "hugepages": 0,
                            "metricsPort": 9470, "runningCores": [4], "housekeepingCores": [5]}
    fh_a = wait_for("CoresExclusive", fh_with(c, "fh-a", lambda f: reason_of(f, "CoresExclusive") == "Exclusive"), op=op)
    assert fh_a["status"]["placement"]["coreList"] == "4"  # kubectl get shows where it runs
    assert c.pod("fh-a-agent")["metadata"]["uid"] == pod_a["metadata"]["uid"], "the plan did not change"

    # Nobody else is given a CPU fh-a plans or runs on.
    c.apply("fh-b")
    fh_b = wait_for("fh-b placed", fh_with(c, "fh-b", placed), op=op)
    assert ledger(fh_b)["cores"] == [3]
    c.apply("fh-c")
    fh_c = wait_for("fh-c refused", fh_with(c, "fh-c", lambda f: reason_of(f, "Placed") == "NoFit"), op=op)
    assert "needs 1 feed cores, 0 free" in condition(fh_c, "Placed")["message"]

    # fh-b's agent was put on CPU 4 too (a kubelet without the static policy): both are told.
    wait_for("fh-b's Pod", lambda: c.pod("fh-b-agent"), op=op)
    agent_api(c, "fh-b-agent").patch_namespaced_custom_object_status(GROUP, VERSION, NS, PLURAL, "fh-b", {"status": {"observed": {
        "node": "node-a", "cores": [4], "housekeepingCores": [3], "podName": "fh-b-agent"}}})
    fh_b = wait_for("fh-b's clash", fh_with(c, "fh-b", lambda f: reason_of(f, "CoresExclusive") == "CoreClash"), op=op)
    assert "CPUs 4 also run feeds/fh-a's agent" in condition(fh_b, "CoresExclusive")["message"]
    assert reason_of(fh_b, "Ready") == "CoreClash"
    fh_a = wait_for("fh-a's clash", fh_with(c, "fh-a", lambda f: reason_of(f, "CoresExclusive") == "CoreClash"), op=op)
    assert "CPUs 4 also run feeds/fh-b's agent" in condition(fh_a, "CoresExclusive")["message"]
