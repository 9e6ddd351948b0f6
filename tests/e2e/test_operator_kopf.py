"""The operator for real: `python -m tickwire_operator` (kopf) in a subprocess against the kmock
emulator (tests/support/kube_emulator.py), FeedHandlers applied with the official client.

The emulator is not a cluster (no kubelet, no admission; see its docstring), so no Pod ever runs
here; test_operator_kubelet.py plays the kubelet for one full run.
"""
from __future__ import annotations

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

    def __init__(self, kubeconfig, log_path, *, resync=1.0, health=1.0, extra=("--standalone",)):
        self.metrics_port, self.liveness_port = free_port(), free_port()
        env = dict(os.environ, KUBECONFIG=str(kubeconfig), TICKWIRE_RESYNC_SECONDS=str(resync),
                   TICKWIRE_HEALTH_SECONDS=str(health), TICKWIRE_OPERATOR_METRICS_PORT=str(self.metrics_port),
                   TICKWIRE_AGENT_IMAGE="example.invalid/tickwire-agent:test")
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
    cores, queues = set(), set()
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
    pod_cores = set()
    for pod in pods:
        plan = json.loads(pod["metadata"]["annotations"]["tickwire.dev/plan"])
        for core in plan["cores"]:
            key = (pod["spec"]["nodeName"], core)
            assert key not in pod_cores, f"two agent Pods run on core {key}"
            pod_cores.add(key)
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
