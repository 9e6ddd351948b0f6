"""The example consumer Pod (charts/tickwire/examples/consumer-pod.yaml) and the chart's admission
policy for consumer namespaces (docs/consumers.md).

- The example passes kubernetes-validate --strict, keeps each promise of the docs (no capability,
  non-root, read-only root and stream, placed beside the feed's agent Pod), and mounts exactly the
  directory the operator's agent Pod for that FeedHandler writes the stream in.
- The ValidatingAdmissionPolicy, rendered by the real Helm SDK, is run with cel-python the way the
  API server would run it (variables first, then each validation, the expressions exactly as
  rendered): it admits the example and refuses each variant that breaks one rule, for that rule.
  There is no API server here; celpy implements standard CEL, and the policy uses nothing of
  Kubernetes' CEL libraries (an expression that did would fail to compile here and fail the test).
"""
from __future__ import annotations

import copy
import pathlib

import celpy
import kubernetes_validate
import pytest
import yaml

from tests.chart.test_chart_render import NEWEST_KUBERNETES, OLDEST_KUBERNETES, by_kind, clean, render
from tickwire_operator.inventory import read_node
from tickwire_operator.placement import place
from tickwire_operator.plan import build_plan
from tickwire_operator.pod import FEED_NODE_TAINT, FEEDHANDLER_LABEL, AgentSettings, build_agent_pod
from tickwire_operator.spec import validated_spec

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "charts" / "tickwire" / "examples" / "consumer-pod.yaml"
FEEDHANDLER = ROOT / "examples" / "feedhandler-ab.yaml"
FEED_NAMESPACE = "feeds"


def documents() -> dict[str, dict]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all(EXAMPLE.read_text()) if doc}


def consumer_pod() -> dict:
    return copy.deepcopy(documents()["Pod"])


def agent_pod_of_the_example_feed() -> dict:
    body = yaml.safe_load(FEEDHANDLER.read_text())
    body["metadata"].update(namespace=FEED_NAMESPACE, uid="uid-1", generation=1)
    spec = validated_spec(body)
    node = {"metadata": {"name": "n1", "labels": {"tickwire.dev/feed-node": "true",
                                                  "topology.kubernetes.io/zone": "carteret-1"},
                         "annotations": {"tickwire.dev/feed-cores": "2-5", "tickwire.dev/feed-nics": "ens1f0=0-7",
                                         "tickwire.dev/feed-hugepages": "128"}}}
    allocation = place(spec, {"n1": read_node(node)}, [])
    settings = AgentSettings()
    return build_agent_pod(body, allocation, build_plan(body, spec, allocation, settings.stream_root), settings)


@pytest.mark.parametrize("kube_version", [OLDEST_KUBERNETES, NEWEST_KUBERNETES])
def test_the_example_passes_kubernetes_validate_strict(kube_version):
    for doc in documents().values():
        kubernetes_validate.validate(doc, kube_version, strict=True)


def test_the_consumer_has_no_privilege_and_reads_the_stream_read_only():
    pod = consumer_pod()
    spec = pod["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] != 0
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    assert not any(spec.get(host) for host in ("hostNetwork", "hostPID", "hostIPC"))
    (container,) = spec["containers"]
    security = container["securityContext"]
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["allowPrivilegeEscalation"] is False and security["privileged"] is False
    assert security["readOnlyRootFilesystem"] is True
    (volume,) = spec["volumes"]
    (mount,) = container["volumeMounts"]
    assert mount["name"] == volume["name"] and mount["readOnly"] is True
    assert volume["hostPath"]["type"] == "Directory"       # never created on a node without the feed
    assert mount["mountPath"] == volume["hostPath"]["path"]  # the same path inside (contract C8)


def test_the_consumer_reads_the_directory_the_feed_s_agent_pod_writes():
    agent = agent_pod_of_the_example_feed()
    written = {v["hostPath"]["path"] for v in agent["spec"]["volumes"] if v["name"] == "stream"}
    consumer = consumer_pod()
    read = {v["hostPath"]["path"] for v in consumer["spec"]["volumes"]}
    assert read == written == {"/run/tickwire/streams/feeds/nasdaq-totalview"}
    # tickwire-engine top FEED opens $TICKWIRE_STREAM_ROOT/FEED
    (container,) = consumer["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    feed = container["command"][2]
    assert container["command"][:2] == ["tickwire-engine", "top"]
    assert f"{env['TICKWIRE_STREAM_ROOT']}/{feed}" in read


def test_the_consumer_lands_beside_the_feed_s_agent_pod():
    agent = agent_pod_of_the_example_feed()
    spec = consumer_pod()["spec"]
    (term,) = spec["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["namespaces"] == [agent["metadata"]["namespace"]]
    selector = term["labelSelector"]["matchLabels"]
    assert selector == {FEEDHANDLER_LABEL: "nasdaq-totalview"}
    assert all(agent["metadata"]["labels"].get(k) == v for k, v in selector.items())
    # the agent Pod tolerates the feed-node taint; a consumer must too, or it never lands there
    assert {"key": FEED_NODE_TAINT, "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    assert consumer_pod()["spec"]["containers"][0]["image"].split(":")[0] == \
        agent["spec"]["containers"][0]["image"].split(":")[0]


def test_the_namespace_is_set_up_as_the_docs_recommend():
    labels = documents()["Namespace"]["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "privileged"   # hostPath: nothing less admits it
    assert labels["pod-security.kubernetes.io/warn"] == labels["pod-security.kubernetes.io/audit"] == "restricted"
    policy_labels = yaml.safe_load((ROOT / "charts" / "tickwire" / "values.yaml").read_text())[
        "consumers"]["admissionPolicy"]["namespaceLabels"]
    assert policy_labels.items() <= labels.items()
    assert consumer_pod()["metadata"]["namespace"] == documents()["Namespace"]["metadata"]["name"]


# ---- the admission policy ----------------------------------------------------------------------

def policy(values: dict | None = None) -> tuple[dict, dict]:
    manifests = render({"consumers": {"admissionPolicy": {"enabled": True}}, **(values or {})})
    (vap,) = by_kind(manifests, "ValidatingAdmissionPolicy")
    (binding,) = by_kind(manifests, "ValidatingAdmissionPolicyBinding")
    return clean(vap), clean(binding)


_cel = celpy.Environment()


def _evaluate(expression: str, activation: dict):
    return _cel.program(_cel.compile(expression)).evaluate(activation)


def refusals(vap: dict, pod: dict) -> list[str]:
    """The messages of every validation the Pod fails, as the API server would evaluate them."""
    obj = celpy.json_to_cel(pod)
    variables = {}
    for variable in vap["spec"]["variables"]:   # in order: a later one may use an earlier one
        variables[variable["name"]] = _evaluate(variable["expression"],
                                                {"object": obj, "variables": celpy.celtypes.MapType(variables)})
    activation = {"object": obj, "variables": celpy.celtypes.MapType(variables)}
    failed = []
    for validation in vap["spec"]["validations"]:
        result = _evaluate(validation["expression"], activation)
        assert isinstance(result, celpy.celtypes.BoolType), (validation["expression"], result)
        if not result:
            failed.append(validation["message"])
    return failed


def test_the_policy_is_off_by_default_and_binds_to_the_consumer_namespaces():
    assert not by_kind(render({}), "ValidatingAdmissionPolicy")
    vap, binding = policy()
    assert binding["spec"]["policyName"] == vap["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    assert binding["spec"]["matchResources"]["namespaceSelector"]["matchLabels"] == {"tickwire.dev/consumers": "true"}
    assert vap["spec"]["failurePolicy"] == "Fail"


def test_the_policy_admits_the_example_consumer():
    vap, _ = policy()
    assert refusals(vap, consumer_pod()) == []


def _variant(change):
    pod = consumer_pod()
    change(pod)
    return pod


def _container(pod):
    return pod["spec"]["containers"][0]


VARIANTS = {
    "writable stream": (lambda p: _container(p)["volumeMounts"][0].update(readOnly=False), "mounted readOnly"),
    "readOnly left out": (lambda p: _container(p)["volumeMounts"][0].pop("readOnly"), "mounted readOnly"),
    "a second container mounting it writable": (
        lambda p: p["spec"]["containers"].append({**copy.deepcopy(_container(p)), "name": "writer",
                                                  "volumeMounts": [{"name": "stream", "mountPath": "/s"}]}),
        "mounted readOnly"),
    "an init container mounting it writable": (
        lambda p: p["spec"].__setitem__("initContainers", [{**copy.deepcopy(_container(p)), "name": "init",
                                                            "volumeMounts": [{"name": "stream", "mountPath": "/s"}]}]),
        "mounted readOnly"),
    "another host path": (lambda p: p["spec"]["volumes"][0]["hostPath"].update(path="/etc"), "stream directory"),
    "the whole stream root": (lambda p: p["spec"]["volumes"][0]["hostPath"].update(path="/run/tickwire/streams"),
                              "stream directory"),
    "a path climbing out": (lambda p: p["spec"]["volumes"][0]["hostPath"].update(
        path="/run/tickwire/streams/feeds/../../../etc"), "stream directory"),
    "DirectoryOrCreate": (lambda p: p["spec"]["volumes"][0]["hostPath"].update(type="DirectoryOrCreate"),
                          "stream directory"),
    "no type": (lambda p: p["spec"]["volumes"][0]["hostPath"].pop("type"), "stream directory"),
    "root allowed": (lambda p: p["spec"]["securityContext"].pop("runAsNonRoot"), "non-root"),
    "root in a container": (lambda p: _container(p)["securityContext"].update(runAsNonRoot=False), "non-root"),
    "privilege escalation": (lambda p: _container(p)["securityContext"].pop("allowPrivilegeEscalation"),
                             "allowPrivilegeEscalation"),
    "a capability added": (lambda p: _container(p)["securityContext"]["capabilities"].update(add=["SYS_ADMIN"]),
                           "drop ALL capabilities"),
    "capabilities kept": (lambda p: _container(p)["securityContext"].pop("capabilities"), "drop ALL capabilities"),
    "privileged": (lambda p: _container(p)["securityContext"].update(privileged=True), "privileged"),
    "host network": (lambda p: p["spec"].update(hostNetwork=True), "host network"),
    "host PID": (lambda p: p["spec"].update(hostPID=True), "host network"),
    "unconfined seccomp": (lambda p: p["spec"]["securityContext"].update(seccompProfile={"type": "Unconfined"}),
                           "seccomp"),
    "no seccomp": (lambda p: p["spec"]["securityContext"].pop("seccompProfile"), "seccomp"),
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_the_policy_refuses_each_broken_rule_for_its_reason(name):
    vap, _ = policy()
    change, reason = VARIANTS[name]
    refused = refusals(vap, _variant(change))
    assert refused and all(reason in message for message in refused), (name, refused)


def test_the_policy_refuses_the_agent_pod_itself():
    """The agent's own Pod (capabilities, host network, root) is no consumer."""
    vap, _ = policy()
    refused = refusals(vap, agent_pod_of_the_example_feed())
    assert len(refused) >= 4, refused


def test_the_policy_follows_the_stream_root():
    vap, _ = policy({"agent": {"streamRoot": "/run/feeds/"}})
    moved = _variant(lambda p: p["spec"]["volumes"][0]["hostPath"].update(path="/run/feeds/feeds/nasdaq-totalview"))
    assert refusals(vap, moved) == []
    assert refusals(vap, consumer_pod()) != []
