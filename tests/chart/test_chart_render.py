"""The Helm chart lints, renders and produces manifests a Kubernetes API server would accept.

Helm runs for real (helm_python binds the Helm v4 Go SDK, offline). Every rendered manifest goes
through kubernetes-validate --strict (the API's own OpenAPI schemas, unknown fields rejected)
for Kubernetes 1.30 (the chart's kubeVersion floor) and the newest version it knows. The one kind
it has no schema for, the Prometheus Operator's ServiceMonitor, is checked for the fields that
operator requires, and the test says so.

Beyond schemas, the checks here pin down the promises the chart makes: an unprivileged operator,
least-privilege RBAC, and the right to make agent identities in exactly the namespaces asked for.
"""
from __future__ import annotations

import json
import pathlib

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "tickwire"
OLDEST_KUBERNETES = "1.30.0"
NEWEST_KUBERNETES = kubernetes_validate.latest_version()

# Every value the chart has, set away from its default, so each template branch renders.
NON_DEFAULT_VALUES = {
    "fullnameOverride": "tw",
    "operator": {
        "image": {"repository": "registry.example/tickwire/operator", "digest": "sha256:" + "ab" * 32,
                  "pullPolicy": "Always"},
        "imagePullSecrets": [{"name": "pull-secret"}],
        "verbose": True,
        "livenessPort": 18081,
        "metricsPort": 18080,
        "resources": {"requests": {"cpu": "100m", "memory": "200Mi"}, "limits": {"cpu": 1, "memory": "1Gi"}},
        "nodeSelector": {"node-role.kubernetes.io/control-plane": ""},
        "tolerations": [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]}]}]}}},
        "priorityClassName": "system-cluster-critical",
        "podAnnotations": {"example.com/team": "market-data"},
        "podLabels": {"team": "market-data"},
        "extraEnv": [{"name": "TICKWIRE_PLACEMENT_POLICY", "value": "spread"}],
        "replicas": 3,
        "peering": {"name": "feeds-operator", "installCRD": False},
    },
    "agent": {
        "image": {"repository": "registry.example/tickwire/agent", "tag": "0.1.0-rc1"},
        "namespaces": ["feeds-equities", "feeds-options"],
    },
    "crds": {"upgradeJob": {"enabled": False}},
    "consumers": {"admissionPolicy": {"enabled": True, "namespaceLabels": {"team": "strategies"}}},
    "monitoring": {
        "serviceMonitor": {"enabled": True, "interval": "5s", "scrapeTimeout": "4s",
                           "labels": {"release": "kube-prometheus-stack"}},
        "dashboard": {"enabled": True, "namespace": "monitoring", "labels": {"grafana_dashboard": "tickwire"},
                      "folder": "Market data"},
    },
}
# Two replicas with everything else at its default: kopf peering, with the chart installing its CRD.
PEERING_VALUES = {"operator": {"replicas": 2}}
VALUE_SETS = {"default": {}, "non-default": NON_DEFAULT_VALUES, "peering": PEERING_VALUES}


def render(values: dict, namespace: str = "tickwire-system") -> list[dict]:
    with helm.Chart.load(str(CHART)) as chart:
        rendered = chart.render(values, name="tw-release", namespace=namespace, is_install=True)
    manifests = []
    for template, text in rendered.items():
        if template.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc.setdefault("metadata", {}).setdefault("annotations", {})
                manifests.append({**doc, "_template": template})
    return manifests


def clean(manifest: dict) -> dict:
    out = {k: v for k, v in manifest.items() if k != "_template"}
    if not out["metadata"]["annotations"]:
        out["metadata"] = {k: v for k, v in out["metadata"].items() if k != "annotations"}
    return out


def by_kind(manifests: list[dict], kind: str) -> list[dict]:
    return [m for m in manifests if m["kind"] == kind]


def one(manifests: list[dict], kind: str, name_suffix: str) -> dict:
    found = [m for m in by_kind(manifests, kind) if m["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, f"expected one {kind} named *{name_suffix}, got {[m['metadata']['name'] for m in found]}"
    return found[0]


@pytest.fixture(scope="module", params=list(VALUE_SETS), ids=list(VALUE_SETS))
def rendered(request) -> tuple[str, list[dict]]:
    return request.param, render(VALUE_SETS[request.param])


@pytest.mark.parametrize("values_name", list(VALUE_SETS))
def test_lint_is_clean(values_name):
    for kube_version in (OLDEST_KUBERNETES, NEWEST_KUBERNETES):
        report = helm.lint(str(CHART), VALUE_SETS[values_name], strict=True, namespace="tickwire-system",
                           kube_version=f"v{kube_version}")
        problems = [m for m in report["messages"] if m["severity"] >= 2]
        assert report["errors"] == [] and problems == [], (kube_version, report)


@pytest.mark.parametrize("kube_version", [OLDEST_KUBERNETES, NEWEST_KUBERNETES])
def test_every_manifest_passes_kubernetes_validate_strict(rendered, kube_version):
    _, manifests = rendered
    checked = 0
    for manifest in manifests:
        if manifest["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # no bundled schema: see test_service_monitor_has_what_prometheus_operator_needs
        if manifest["apiVersion"].startswith("kopf.dev/"):
            continue  # no bundled schema: see test_peering_object_is_valid_for_the_peering_crd
        try:
            kubernetes_validate.validate(clean(manifest), kube_version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{manifest['_template']} {manifest['kind']}/{manifest['metadata']['name']} "
                        f"is invalid for Kubernetes {kube_version}: {error}")
        checked += 1
    assert checked >= 8


def test_validation_would_catch_a_wrong_field():
    """kubernetes-validate --strict really rejects unknown and mistyped fields in our manifests."""
    deployment = clean(one(render({}), "Deployment", "-operator"))
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFileSystem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, NEWEST_KUBERNETES, strict=True)


def test_operator_runs_unprivileged(rendered):
    values_name, manifests = rendered
    deployment = one(manifests, "Deployment", "-operator")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod.get("hostNetwork") is not True and pod.get("hostPID") is not True
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["privileged"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    replicas = VALUE_SETS[values_name].get("operator", {}).get("replicas", 1)
    assert deployment["spec"]["replicas"] == replicas
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    assert ("--standalone" in container["args"]) == (replicas == 1)
    assert any(a.startswith("--liveness=http://0.0.0.0:") and a.endswith("/healthz") for a in container["args"])
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_operator_is_told_the_agent_image_and_service_account():
    manifests = render(NON_DEFAULT_VALUES)
    container = one(manifests, "Deployment", "-operator")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["TICKWIRE_AGENT_IMAGE"] == "registry.example/tickwire/agent:0.1.0-rc1"
    assert "TICKWIRE_AGENT_SERVICE_ACCOUNT" not in env  # each agent has its own, made by the operator
    assert env["TICKWIRE_PLACEMENT_POLICY"] == "spread"
    assert container["image"] == "registry.example/tickwire/operator@sha256:" + "ab" * 32
    assert "--verbose" in container["args"]
    assert "--liveness=http://0.0.0.0:18081/healthz" in container["args"]
    assert env["TICKWIRE_OPERATOR_METRICS_PORT"] == "18080"
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"health": 18081, "metrics": 18080}

    default = one(render({}), "Deployment", "-operator")["spec"]["template"]["spec"]["containers"][0]
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    assert default["image"] == f"tickwire/operator:{app_version}"


def rules_of(manifests: list[dict], suffix: str) -> set[tuple[str, str, str]]:
    role = one(manifests, "ClusterRole", suffix)
    return {(group, resource, verb)
            for rule in role["rules"] for group in rule["apiGroups"]
            for resource in rule["resources"] for verb in rule["verbs"]}


def test_operator_rbac_is_exactly_what_it_uses(rendered):
    name, manifests = rendered
    granted = rules_of(manifests, "-operator")
    wanted = (
        {("tickwire.dev", "feedhandlers", v) for v in ("get", "list", "watch", "patch")}
        | {("tickwire.dev", "feedhandlers/status", v) for v in ("get", "patch")}
        | {("", "pods", v) for v in ("get", "list", "watch", "create", "delete")}
        | {("", "nodes", v) for v in ("list", "watch")}
        | {("", "events", "create")}
        | {("apiextensions.k8s.io", "customresourcedefinitions", v) for v in ("list", "watch")}
    )
    if name != "default":  # several replicas: kopf peering
        wanted |= {("kopf.dev", "clusterkopfpeerings", v) for v in ("get", "list", "watch", "patch")}
    assert granted == wanted, f"extra: {granted - wanted}, missing: {wanted - granted}"
    assert not any("*" in rule for rule in granted)


def test_the_operator_makes_agent_identities_only_in_agent_namespaces(rendered):
    name, manifests = rendered
    assert rules_of(manifests, "-operator-agents") == {
        (group, resource, verb) for group, resource in
        (("", "serviceaccounts"), ("rbac.authorization.k8s.io", "roles"), ("rbac.authorization.k8s.io", "rolebindings"))
        for verb in ("create", "patch")}
    # Granted per namespace only: no ClusterRoleBinding ever grants it.
    for binding in by_kind(manifests, "ClusterRoleBinding"):
        assert not binding["roleRef"]["name"].endswith("-operator-agents")
    expected = ["feeds-equities", "feeds-options"] if name == "non-default" else ["tickwire-system"]
    bindings = [rb for rb in by_kind(manifests, "RoleBinding") if rb["roleRef"]["name"].endswith("-operator-agents")]
    assert sorted(rb["metadata"]["namespace"] for rb in bindings) == expected
    operator_account = one(manifests, "ServiceAccount", "-operator")["metadata"]
    for binding in bindings:
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": operator_account["name"],
                                        "namespace": operator_account["namespace"]}]
    # The chart makes no agent ServiceAccount any more: the operator makes one per FeedHandler.
    assert [sa["metadata"]["name"] for sa in by_kind(manifests, "ServiceAccount")
            if not sa["metadata"]["annotations"].get("helm.sh/hook")] == [operator_account["name"]]


def test_the_operator_holds_everything_it_grants_an_agent(rendered):
    """RBAC refuses to create a Role granting what its creator does not hold (escalation)."""
    from tickwire_operator.identity import agent_rules

    _, manifests = rendered
    held = rules_of(manifests, "-operator")
    granted = {(group, resource, verb) for rule in agent_rules("any-feed")
               for group in rule["apiGroups"] for resource in rule["resources"] for verb in rule["verbs"]}
    assert granted == {("tickwire.dev", "feedhandlers/status", "get"), ("tickwire.dev", "feedhandlers/status", "patch")}
    assert granted <= held, f"the operator would escalate: {granted - held}"


def test_crd_upgrade_hook_can_only_touch_the_chart_crds():
    manifests = render({})
    hooks = [m for m in manifests if m["metadata"]["annotations"].get("helm.sh/hook")]
    assert {m["kind"] for m in hooks} == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "Job"}
    assert all(m["metadata"]["annotations"]["helm.sh/hook"] == "pre-upgrade" for m in hooks)
    role = one(hooks, "ClusterRole", "-crd-upgrade")
    (rule,) = role["rules"]
    assert rule["resourceNames"] == ["feedhandlers.tickwire.dev"]
    assert sorted(rule["verbs"]) == ["get", "patch"]
    config_map = one(hooks, "ConfigMap", "-crd-upgrade")
    assert config_map["data"]["feedhandler.yaml"] == (ROOT / "crds" / "feedhandler.yaml").read_text().rstrip("\n")
    job = one(hooks, "Job", "-crd-upgrade")
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["/crd-upgrade/feedhandler.yaml"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert not [m for m in render(NON_DEFAULT_VALUES)
                if m["metadata"]["annotations"].get("helm.sh/hook") and m["metadata"]["name"].endswith("-crd-upgrade")]


def test_service_monitors_have_what_prometheus_operator_needs():
    """Checked by hand: kubernetes-validate bundles no schema for monitoring.coreos.com."""
    manifests = render(NON_DEFAULT_VALUES)
    assert not [m for m in render({}) if m["kind"] in ("ServiceMonitor", "Service")], "monitoring must be opt-in"
    for suffix, namespaces in (("-agents", ["feeds-equities", "feeds-options"]), ("-operator", None)):
        monitor = one(manifests, "ServiceMonitor", suffix)
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        spec = monitor["spec"]
        assert set(spec) <= {"namespaceSelector", "selector", "endpoints", "jobLabel"}
        assert spec.get("namespaceSelector") == ({"matchNames": namespaces} if namespaces else None)
        (endpoint,) = spec["endpoints"]
        assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
        assert endpoint["interval"] == "5s" and endpoint["scrapeTimeout"] == "4s"
        followed = [svc for svc in by_kind(manifests, "Service")
                    if all(svc["metadata"]["labels"].get(k) == v for k, v in spec["selector"]["matchLabels"].items())]
        assert sorted(svc["metadata"]["namespace"] for svc in followed) == (namespaces or ["tickwire-system"])
        assert all([p["name"] for p in svc["spec"]["ports"]] == ["metrics"] for svc in followed)


def test_agent_metrics_service_selects_the_pods_the_operator_builds():
    """The Service's selector against the labels operator/tickwire_operator/pod.py really sets."""
    from tickwire_operator.pod import pod_labels

    manifests = render(NON_DEFAULT_VALUES)
    service = [s for s in by_kind(manifests, "Service") if s["metadata"]["name"].endswith("-agent-metrics")][0]
    labels = pod_labels("itch-minimal")
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    relabel_sources = {r["sourceLabels"][0] for r in one(manifests, "ServiceMonitor", "-agents")["spec"]["endpoints"][0]["relabelings"]}
    prometheus_names = {"__meta_kubernetes_pod_label_" + "".join(c if c.isalnum() else "_" for c in key) for key in labels}
    assert relabel_sources - {"__meta_kubernetes_pod_node_name"} <= prometheus_names

    operator_service = one(manifests, "Service", "-operator-metrics")
    operator_pod = one(manifests, "Deployment", "-operator")["spec"]["template"]
    assert operator_service["spec"]["selector"].items() <= operator_pod["metadata"]["labels"].items()


def test_dashboard_configmap_carries_the_dashboard_for_the_grafana_sidecar():
    manifests = render(NON_DEFAULT_VALUES)
    config_map = one(manifests, "ConfigMap", "-dashboard")
    assert config_map["metadata"]["namespace"] == "monitoring"
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "tickwire"
    assert config_map["metadata"]["annotations"]["grafana_folder"] == "Market data"
    shipped = json.loads((CHART / "dashboards" / "tickwire.json").read_text())
    assert json.loads(config_map["data"]["tickwire.json"]) == shipped
    disabled = {**NON_DEFAULT_VALUES, "monitoring": {"dashboard": {"enabled": False}}}
    assert not [m for m in render(disabled) if m["metadata"]["name"].endswith("-dashboard")]


def test_notes_tell_the_user_what_to_do_next():
    with helm.Chart.load(str(CHART)) as chart:
        notes = chart.render(NON_DEFAULT_VALUES, name="tw-release", namespace="tickwire-system",
                             is_install=True)["tickwire/templates/NOTES.txt"]
    assert "rollout status deployment/tw-operator" in notes
    assert "kubectl label namespace feeds-equities pod-security.kubernetes.io/enforce=privileged" in notes
    assert "kubectl -n feeds-equities apply -f examples/feedhandler-minimal.yaml" in notes
    assert "--for=condition=Ready" in notes
    assert "kubectl apply --server-side -f" in notes  # upgrade job off: the user is told the manual step
