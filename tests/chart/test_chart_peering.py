"""Two or more operator replicas: what the chart renders for kopf peering, and kopf using it.

With operator.replicas > 1 the chart drops --standalone, names the shared ClusterKopfPeering,
ships kopf's CRD for it (a template), creates the peering object (a post-install/post-upgrade
hook) and grants the RBAC kopf needs. The last test takes the rendered CRD, peering object and
container args and runs two real operator replicas (kopf) with them against the Kubernetes
emulator: both must join the peering with distinct priorities and exactly one may act.
(test_chart_render.py covers lint and kubernetes-validate --strict for the same value set.)
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import helm_python as helm
import jsonschema
import kubernetes.client as k8s
import pytest

from tests.chart.test_chart_render import CHART, PEERING_VALUES, by_kind, clean, one, render
from tests.support.kube_emulator import FEEDHANDLER_CRD, KubeEmulator, load_yaml
from tickwire_operator.spec import openapi_to_jsonschema
from tests.support.waiting import log_tails, wait_until


@pytest.fixture(scope="module")
def peering() -> list[dict]:
    return render(PEERING_VALUES)


def operator_container(manifests: list[dict]) -> dict:
    return one(manifests, "Deployment", "-operator")["spec"]["template"]["spec"]["containers"][0]


def test_two_replicas_run_kopf_peering_without_a_shared_priority(peering):
    deployment = one(peering, "Deployment", "-operator")
    assert deployment["spec"]["replicas"] == 2
    # Recreate: the old standalone Pod never overlaps new peering ones on a 1 -> 2 upgrade.
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    container = operator_container(peering)
    assert "--standalone" not in container["args"]
    assert "--peering=tickwire-operator" in container["args"]
    # Equal priorities make kopf pause every replica: none may be fixed in the Pod template.
    assert not [e for e in container["env"] if e["name"] == "TICKWIRE_OPERATOR_PRIORITY"]
    assert not any(a.startswith("--priority") for a in container["args"])
    anti = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    term = anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def test_the_peering_crd_and_object_are_shipped(peering):
    crd = one(peering, "CustomResourceDefinition", "clusterkopfpeerings.kopf.dev")
    assert crd["spec"]["group"] == "kopf.dev" and crd["spec"]["scope"] == "Cluster"
    assert crd["spec"]["names"]["kind"] == "ClusterKopfPeering"
    assert [v["name"] for v in crd["spec"]["versions"] if v["served"] and v["storage"]] == ["v1"]
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"  # other kopf operators may share it
    assert not crd["metadata"]["annotations"].get("helm.sh/hook")  # owned by the release, not a hook
    obj = one(peering, "ClusterKopfPeering", "tickwire-operator")
    assert obj["apiVersion"] == "kopf.dev/v1" and "namespace" not in obj["metadata"]
    hooks = obj["metadata"]["annotations"]
    assert hooks["helm.sh/hook"] == "post-install,post-upgrade"  # after the CRD exists
    assert hooks["helm.sh/hook-delete-policy"] == "before-hook-creation"


def test_peering_object_is_valid_for_the_peering_crd(peering):
    """kubernetes-validate has no schema for kopf.dev: check against the rendered CRD's own."""
    crd = one(peering, "CustomResourceDefinition", "clusterkopfpeerings.kopf.dev")
    schema = openapi_to_jsonschema(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    validator = jsonschema.Draft202012Validator(schema)
    obj = clean(one(peering, "ClusterKopfPeering", "tickwire-operator"))
    validator.validate(obj)
    # What kopf writes: its identity -> priority and keep-alive, kept (not pruned) by the schema.
    validator.validate({**obj, "status": {"op-1@pod-a": {"priority": 7, "lastseen": "2026-01-01T00:00:00Z",
                                                          "lifetime": 60}}})
    with pytest.raises(jsonschema.ValidationError):
        validator.validate({**obj, "status": "not an object"})


def test_peering_rbac_names_the_verbs_kopf_uses(peering):
    role = one(peering, "ClusterRole", "-operator")
    kopf_rules = [r for r in role["rules"] if r["apiGroups"] == ["kopf.dev"]]
    assert {(tuple(sorted(r["verbs"])), tuple(r.get("resourceNames", ()))) for r in kopf_rules} == {
        (("list", "watch"), ()),  # list/watch cannot be narrowed by name
        (("get", "patch"), ("tickwire-operator",)),
    }
    assert all(r["resources"] == ["clusterkopfpeerings"] for r in kopf_rules)


def test_one_replica_has_no_peering_at_all():
    manifests = render({})
    assert not [m for m in manifests if m["apiVersion"].startswith("kopf.dev/")
                or m["metadata"]["name"].endswith(".kopf.dev")]
    assert not [r for r in one(manifests, "ClusterRole", "-operator")["rules"] if "kopf.dev" in r["apiGroups"]]


def test_the_crd_can_be_left_to_whoever_installed_it():
    manifests = render({"operator": {"replicas": 3, "peering": {"name": "md-operators", "installCRD": False}}})
    assert not by_kind(manifests, "CustomResourceDefinition")
    assert one(manifests, "ClusterKopfPeering", "md-operators")
    assert "--peering=md-operators" in operator_container(manifests)["args"]
    role = one(manifests, "ClusterRole", "-operator")
    assert ["md-operators"] in [r.get("resourceNames") for r in role["rules"]]


def test_a_fixed_priority_for_several_replicas_is_refused():
    values = {"operator": {"replicas": 2, "extraEnv": [{"name": "TICKWIRE_OPERATOR_PRIORITY", "value": "5"}]}}
    with helm.Chart.load(str(CHART)) as chart, pytest.raises(helm.HelmRenderError) as error:
        chart.render(values, name="tw", namespace="tickwire-system", is_install=True)
    assert "operator.extraEnv sets TICKWIRE_OPERATOR_PRIORITY" in str(error.value)
    assert "kopf pauses them all" in str(error.value)
    # One replica has no peering, so a fixed priority is harmless there.
    render({"operator": {"extraEnv": [{"name": "TICKWIRE_OPERATOR_PRIORITY", "value": "5"}]}})


@pytest.mark.parametrize("values, words", [
    ({"operator": {"replicas": 0}}, ["/operator/replicas", "minimum"]),
    ({"operator": {"replicas": "2"}}, ["/operator/replicas", "want integer"]),
    ({"operator": {"peering": {"name": "Tickwire_Operator"}}}, ["/operator/peering/name", "Tickwire_Operator"]),
    ({"operator": {"peering": {"installCrd": False}}}, ["/operator/peering", "'installCrd'"]),
])
def test_bad_peering_values_are_refused_by_the_schema(values, words):
    with helm.Chart.load(str(CHART)) as chart, pytest.raises(helm.HelmValuesError) as error:
        chart.validate_schema(values)
    assert all(word in str(error.value) for word in words), str(error.value)


def test_notes_say_how_to_see_the_peers():
    with helm.Chart.load(str(CHART)) as chart:
        peered = chart.render(PEERING_VALUES, name="tw", namespace="tickwire-system", is_install=True)
        single = chart.render({}, name="tw", namespace="tickwire-system", is_install=True)
    assert "kubectl get clusterkopfpeering tickwire-operator" in peered["tickwire/templates/NOTES.txt"]
    assert "clusterkopfpeering" not in single["tickwire/templates/NOTES.txt"]


# ---- kopf, for real, with what the chart rendered ------------------------------------------------

def wait_for(what, check, timeout, logs):
    return wait_until(what, check, timeout, 0.1, log_tails(logs))


@pytest.mark.slow
def test_two_rendered_replicas_peer_and_only_one_acts(peering, tmp_path):
    container = operator_container(peering)
    crd = clean(one(peering, "CustomResourceDefinition", "clusterkopfpeerings.kopf.dev"))
    peering_object = clean(one(peering, "ClusterKopfPeering", "tickwire-operator"))
    # The container's args and env as rendered; only the liveness endpoint is switched off.
    args = [a for a in container["args"] if not a.startswith("--liveness=")] + ["--liveness", ""]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    processes: list[subprocess.Popen] = []
    with KubeEmulator.running() as kube:
        try:
            api = kube.api_client()
            extensions, custom = k8s.ApiextensionsV1Api(api), k8s.CustomObjectsApi(api)
            extensions.create_custom_resource_definition(load_yaml(FEEDHANDLER_CRD))
            extensions.create_custom_resource_definition(crd)  # the emulator serves what is posted
            custom.create_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", peering_object)
            kubeconfig = kube.write_kubeconfig(tmp_path)
            logs = [tmp_path / f"replica-{i}.log" for i in range(2)]
            for log in logs:
                processes.append(subprocess.Popen(
                    [sys.executable, "-m", "tickwire_operator", *args],
                    env={**os.environ, **env, "KUBECONFIG": str(kubeconfig), "TICKWIRE_OPERATOR_METRICS_PORT": "0"},
                    stdout=open(log, "wb"), stderr=subprocess.STDOUT))

            def peers():
                return (kube.get("kopf.dev/v1/clusterkopfpeerings", None, "tickwire-operator") or {}).get("status") or {}
            wait_for("both replicas in the peering", lambda: len(peers()) == 2, 60, logs)
            priorities = [p["priority"] for p in peers().values()]
            assert len(set(priorities)) == 2, f"each replica must draw its own priority: {priorities}"
            # Only one acts: a FeedHandler is placed by exactly one replica. (The other stays
            # paused: replicas start paused under mandatory peering, and a replica that sees a
            # higher peer at once pauses silently, so its log is no proof either way.)
            core = k8s.CoreV1Api(api)
            core.create_node({"apiVersion": "v1", "kind": "Node", "metadata": {
                "name": "node-a", "labels": {"tickwire.dev/feed-node": "true"},
                "annotations": {"tickwire.dev/feed-cores": "2-5", "tickwire.dev/feed-nics": "eth1=0-3",
                                "tickwire.dev/feed-hugepages": "0"}}})
            for name in ("itch-a", "itch-b"):
                custom.create_namespaced_custom_object("tickwire.dev", "v1alpha1", "feeds", "feedhandlers", {
                    "apiVersion": "tickwire.dev/v1alpha1", "kind": "FeedHandler", "metadata": {"name": name},
                    "spec": {"lines": [{"name": "A", "group": "239.1.1.1", "port": 26477}]}})
            pods = lambda: [kube.get("v1/pods", "feeds", f"{n}-agent") for n in ("itch-a", "itch-b")]  # noqa: E731
            wait_for("both agent Pods", lambda: all(pods()), 60, logs)
            placed_by = [log.read_text(errors="replace").count("placed feeds/") for log in logs]
            assert sorted(placed_by) == [0, 2], f"placements per replica: {placed_by}"
            assert all(p.poll() is None for p in processes), "both replicas must stay up"
            assert not any("Possibly conflicting operators" in log.read_text(errors="replace") for log in logs)
        finally:
            for proc in processes:  # only the processes this test started, by their handles
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(timeout=20)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait(timeout=10)

