"""The operator runs with exactly the RBAC the chart gives it, and that is enough.

The rendered ClusterRole, ClusterRoleBinding and per-namespace RoleBindings go into the
Kubernetes emulator, which enforces RBAC for service-account tokens (rules, resourceNames, and
the escalation check on creating Roles and RoleBindings; see tests/support/kube_emulator.py).
The real operator (kopf, a subprocess) then runs with its ServiceAccount's token: it places a
FeedHandler, makes the agent's identity and Pod, and releases it on delete. Where the chart
gives it no right (a namespace outside agent.namespaces, or a Role it could not hold) the
FeedHandler says so in PodHealthy instead of failing silently.
"""
from __future__ import annotations

import kubernetes.client as k8s
import pytest

from tests.chart.test_chart_render import by_kind, clean, render
from tests.e2e.test_operator_kopf import (GROUP, NS, PLURAL, VERSION, Cluster, OperatorProcess, condition,
                                          placed, wait_for)
from tests.support.kube_emulator import KubeEmulator

RELEASE_NS = "tickwire-system"


def install_rbac(kube: KubeEmulator, manifests: list[dict]) -> str:
    """Create the chart's RBAC objects; the operator's ServiceAccount name."""
    rbac = k8s.RbacAuthorizationV1Api(kube.api_client())
    for manifest in by_kind(manifests, "ClusterRole"):
        rbac.create_cluster_role(clean(manifest))
    for manifest in by_kind(manifests, "ClusterRoleBinding"):
        rbac.create_cluster_role_binding(clean(manifest))
    for manifest in by_kind(manifests, "RoleBinding"):
        rbac.create_namespaced_role_binding(manifest["metadata"]["namespace"], clean(manifest))
    (account,) = [m["metadata"]["name"] for m in by_kind(manifests, "ServiceAccount")
                  if m["metadata"]["name"].endswith("-operator")]
    return account


def test_the_operator_works_with_the_charts_rbac_and_no_more(tmp_path):
    manifests = [m for m in render({"agent": {"namespaces": [NS]}}, namespace=RELEASE_NS)
                 if not m["metadata"]["annotations"].get("helm.sh/hook")]
    with KubeEmulator.running() as kube:
        c = Cluster(kube)
        account = install_rbac(kube, manifests)
        kubeconfig = kube.write_kubeconfig(tmp_path, token=kube.service_account_token(RELEASE_NS, account))
        c.add_node("node-a")
        op = OperatorProcess(kubeconfig, tmp_path / "operator.log")
        try:
            c.apply("feed")
            fh = wait_for("placed with the chart's RBAC", lambda: (lambda f: f if placed(f) else None)(c.fh("feed")), op=op)
            pod = wait_for("the agent Pod", lambda: c.pod("feed-agent"), op=op)
            assert pod["spec"]["serviceAccountName"] == "feed-agent"
            assert kube.get("rbac.authorization.k8s.io/v1/roles", NS, "feed-agent")["rules"][0]["resourceNames"] == ["feed"]
            assert condition(fh, "PodHealthy")["status"] == "True"

            # A namespace the chart was not told about: no agent identity, and the reason.
            # (The emulator needs no Namespace object: kmock serves no /api/v1/namespaces.)
            c.custom.create_namespaced_custom_object(GROUP, VERSION, "elsewhere", PLURAL, {
                "apiVersion": f"{GROUP}/{VERSION}", "kind": "FeedHandler", "metadata": {"name": "stray"},
                "spec": {"lines": [{"name": "A", "group": "239.1.1.2", "port": 26477}]}})

            def stray_refused():
                stray = c.custom.get_namespaced_custom_object(GROUP, VERSION, "elsewhere", PLURAL, "stray")
                return stray if (condition(stray, "PodHealthy") or {}).get("reason") == "PodAdmissionRefused" else None

            message = condition(wait_for("stray refused", stray_refused, op=op), "PodHealthy")["message"]
            assert "ServiceAccount stray-agent (403)" in message and "agent.namespaces" in message
            assert kube.get("v1/pods", "elsewhere", "stray-agent") is None

            # Without `get` on feedhandlers/status the operator could not hand it to an agent:
            # RBAC's escalation check refuses the Role, and the FeedHandler says so.
            rbac = k8s.RbacAuthorizationV1Api(kube.api_client())
            role_name = next(m["metadata"]["name"] for m in by_kind(manifests, "ClusterRole")
                             if m["metadata"]["name"].endswith("-operator"))
            role = clean(next(m for m in by_kind(manifests, "ClusterRole") if m["metadata"]["name"] == role_name))
            for rule in role["rules"]:
                if rule["resources"] == ["feedhandlers/status"]:
                    rule["verbs"] = ["patch"]
            rbac.patch_cluster_role(role_name, {"rules": role["rules"]})
            c.apply("second")
            second = wait_for("second refused", lambda: (lambda f: f if (condition(f, "PodHealthy") or {}).get("reason") == "PodAdmissionRefused" else None)(c.fh("second")), op=op)
            message = condition(second, "PodHealthy")["message"]
            assert "Role second-agent (403)" in message and "not currently held" in message
            assert c.pod("second-agent") is None

            # Deleting works with the chart's rights: the Pod goes, then the FeedHandler.
            c.custom.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "feed")
            wait_for("feed released", lambda: c.fh("feed") is None, op=op)
            assert c.pod("feed-agent") is None
        finally:
            op.stop()


@pytest.mark.parametrize("namespaces", [["feeds"], ["feeds-a", "feeds-b"]])
def test_the_agent_identity_rights_are_bound_in_each_agent_namespace(namespaces):
    manifests = render({"agent": {"namespaces": namespaces}}, namespace=RELEASE_NS)
    bound = sorted(rb["metadata"]["namespace"] for rb in by_kind(manifests, "RoleBinding")
                   if rb["roleRef"]["name"].endswith("-operator-agents"))
    assert bound == sorted(namespaces)
