"""The emulator answers like a real API server where the operator's and the agent's safety
depends on it (tests/support/kube_emulator.py): status-subresource patches cannot touch metadata
or spec, uid is immutable, a failed JSON-patch `test` is 422, refused creates are 403, a Pod on
an unreachable node stays Terminating until a grace-0 delete, and service-account tokens get
exactly what RBAC grants them."""
from __future__ import annotations

import kubernetes.client as k8s
import pytest
from kubernetes.client.exceptions import ApiException

from tests.support.kube_emulator import KubeEmulator

GROUP, VERSION, PLURAL, NS = "tickwire.dev", "v1alpha1", "feedhandlers", "feeds"


@pytest.fixture
def kube():
    with KubeEmulator.running() as emulator:
        emulator.declare_feedhandlers()
        yield emulator


def feedhandler(custom, name="fh-a"):
    return custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "FeedHandler",
        "metadata": {"name": name, "annotations": {"tickwire.dev/allocation": "{}"}}, "spec": {"cores": 1}})


def status_of(error) -> int:
    return error.value.status


def test_status_patches_change_only_status_and_uid_is_immutable(kube):
    custom = k8s.CustomObjectsApi(kube.api_client())
    fh = feedhandler(custom)
    after = custom.patch_namespaced_custom_object_status(GROUP, VERSION, NS, PLURAL, "fh-a", {
        "metadata": {"annotations": {"tickwire.dev/allocation": "forged"}, "labels": {"x": "y"}},
        "spec": {"cores": 9}, "status": {"snapshot": {"rate": 1}}})
    assert after["metadata"]["annotations"] == {"tickwire.dev/allocation": "{}"} and "labels" not in after["metadata"]
    assert after["spec"] == {"cores": 1} and after["status"] == {"snapshot": {"rate": 1}}
    with pytest.raises(ApiException) as error:
        custom.patch_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "fh-a", {"metadata": {"uid": "other"}})
    assert status_of(error) == 422 and "field is immutable" in error.value.body
    with pytest.raises(ApiException) as error:
        custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, NS, PLURAL, "fh-a", [{"op": "test", "path": "/metadata/uid", "value": "other"}],
            _content_type="application/json-patch+json")
    assert status_of(error) == 422
    assert custom.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "fh-a")["metadata"]["uid"] == fh["metadata"]["uid"]


def test_refused_creates_and_pods_terminating_on_unreachable_nodes(kube):
    core = k8s.CoreV1Api(kube.api_client())
    kube.refuse(lambda resource, obj: "violates PodSecurity" if obj["metadata"]["name"] == "bad" else None)
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bad"},
           "spec": {"nodeName": "node-a", "containers": [{"name": "c", "image": "i"}]}}
    with pytest.raises(ApiException) as error:
        core.create_namespaced_pod(NS, pod)
    assert status_of(error) == 403 and 'pods \\"bad\\" is forbidden: violates PodSecurity' in error.value.body
    kube.unreachable_nodes.add("node-a")
    core.create_namespaced_pod(NS, {**pod, "metadata": {"name": "p"}})
    core.delete_namespaced_pod("p", NS)
    stuck = kube.get("v1/pods", NS, "p")
    assert stuck["metadata"]["deletionGracePeriodSeconds"] == 30 and stuck["metadata"]["deletionTimestamp"]
    core.delete_namespaced_pod("p", NS, grace_period_seconds=0)
    assert kube.get("v1/pods", NS, "p") is None


def test_a_service_account_gets_what_its_role_grants_and_no_more(kube):
    admin = kube.api_client()
    custom = k8s.CustomObjectsApi(admin)
    feedhandler(custom, "fh-a")
    feedhandler(custom, "fh-b")
    rbac = k8s.RbacAuthorizationV1Api(admin)
    rbac.create_namespaced_role(NS, {"metadata": {"name": "r"}, "rules": [{
        "apiGroups": [GROUP], "resources": ["feedhandlers/status"], "resourceNames": ["fh-a"], "verbs": ["get", "patch"]}]})
    rbac.create_namespaced_role_binding(NS, {"metadata": {"name": "r"},
                                             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
                                             "subjects": [{"kind": "ServiceAccount", "name": "agent", "namespace": NS}]})
    config = kube.configuration()
    config.api_key = {"authorization": f"Bearer {kube.service_account_token(NS, 'agent')}"}
    agent = k8s.CustomObjectsApi(k8s.ApiClient(config))
    agent.patch_namespaced_custom_object_status(GROUP, VERSION, NS, PLURAL, "fh-a", {"status": {"snapshot": {"rate": 2}}})
    assert agent.get_namespaced_custom_object_status(GROUP, VERSION, NS, PLURAL, "fh-a")["status"]["snapshot"] == {"rate": 2}
    for call in (lambda: agent.patch_namespaced_custom_object_status(GROUP, VERSION, NS, PLURAL, "fh-b", {"status": {}}),
                 lambda: agent.patch_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "fh-a", {"metadata": {}}),
                 lambda: agent.list_namespaced_custom_object(GROUP, VERSION, NS, PLURAL)):
        with pytest.raises(ApiException) as error:
            call()
        assert status_of(error) == 403
    assert 'User \\"system:serviceaccount:feeds:agent\\" cannot list resource \\"feedhandlers\\"' in error.value.body


def test_the_agents_uid_checked_json_patch_applies_whole_or_not_at_all(kube):
    """The form the agent uses (agent/tickwire_agent/status.py): tests on uid and resourceVersion,
    then adds, to the status subresource; a real API server applies all ops or none."""
    custom = k8s.CustomObjectsApi(kube.api_client())
    fh = feedhandler(custom)

    def ops(uid, version):
        return [{"op": "test", "path": "/metadata/uid", "value": uid},
                {"op": "test", "path": "/metadata/resourceVersion", "value": version},
                {"op": "add", "path": "/status", "value": {}},
                {"op": "add", "path": "/status/observed", "value": {"node": "n", "cores": [3]}},
                {"op": "add", "path": "/metadata/annotations/tickwire.dev~1allocation", "value": "forged"}]

    after = custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, NS, PLURAL, "fh-a", ops(fh["metadata"]["uid"], fh["metadata"]["resourceVersion"]),
        _content_type="application/json-patch+json")
    assert after["status"]["observed"] == {"node": "n", "cores": [3]}
    assert after["metadata"]["annotations"]["tickwire.dev/allocation"] == "{}"  # metadata: dropped
    with pytest.raises(ApiException) as error:  # the version it read is gone: 422, nothing applied
        custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, NS, PLURAL, "fh-a", ops(fh["metadata"]["uid"], fh["metadata"]["resourceVersion"]),
            _content_type="application/json-patch+json")
    assert status_of(error) == 422
