"""Each agent's own identity: a ServiceAccount, a Role and a RoleBinding per FeedHandler.

The Role lets the agent `get` and `patch` the `status` of its own FeedHandler (`resourceNames`)
and nothing else: not another FeedHandler's status, not any FeedHandler object (so not the
operator's ledger annotation, see ledger.py), not the spec. All three are owned by the
FeedHandler (ownerReferences), so the garbage collector removes them with it.

RBAC's escalation rule means whoever creates this Role must hold what it grants: the operator's
ClusterRole has `get` and `patch` on `feedhandlers/status` (charts/tickwire/templates/operator-rbac.yaml).
`blockOwnerDeletion` is left unset: setting it needs `update` on `feedhandlers/finalizers` where
the OwnerReferencesPermissionEnforcement admission plugin runs, and nothing here needs the
FeedHandler to wait for them.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .pod import pod_labels
from .spec import GROUP, KIND, PLURAL, VERSION

RBAC = "rbac.authorization.k8s.io/v1"


def agent_service_account(feedhandler_name: str) -> str:
    return f"{feedhandler_name}-agent"


def agent_rules(feedhandler_name: str) -> list[dict]:
    return [{"apiGroups": [GROUP], "resources": [f"{PLURAL}/status"], "resourceNames": [feedhandler_name],
             "verbs": ["get", "patch"]}]


def agent_identity(body: Mapping[str, Any]) -> list[dict]:
    """The ServiceAccount, Role and RoleBinding, in the order to create them."""
    meta = body["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    account = agent_service_account(name)

    def metadata() -> dict:
        return {"name": account, "namespace": namespace, "labels": pod_labels(name),
                "ownerReferences": [{"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "name": name,
                                     "uid": meta["uid"], "controller": True}]}

    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata(),
         # The agent talks to the API server with its token; nothing else in the Pod needs one.
         "automountServiceAccountToken": True},
        {"apiVersion": RBAC, "kind": "Role", "metadata": metadata(), "rules": agent_rules(name)},
        {"apiVersion": RBAC, "kind": "RoleBinding", "metadata": metadata(),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account},
         "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}]},
    ]
