"""The few API calls the operator makes itself (kopf does the watching).

Status is shared with the agent, and merge patches replace lists whole, so every status write is
read-modify-write with a resourceVersion precondition, retried on 409 Conflict: each side replaces
only its own condition types and never loses the other's. The official client is synchronous; the
calls run in worker threads so kopf's event loop never blocks.
"""
from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from typing import Any

import kubernetes.client
from kubernetes.client.exceptions import ApiException

from .spec import GROUP, PLURAL, VERSION

CONFLICT_RETRIES = 20


class StatusConflict(RuntimeError):
    pass


class AdmissionRefused(RuntimeError):
    """The API server refused to create an object (RBAC, PodSecurity, a quota, a webhook...):
    `what` names the object, `status` is the HTTP code, the message is the API server's own."""

    def __init__(self, what: str, status: int, message: str):
        super().__init__(message)
        self.what = what
        self.status = status


def _api_message(exc: ApiException) -> str:
    try:
        return json.loads(exc.body or "{}").get("message") or str(exc.reason)
    except (ValueError, AttributeError):
        return str(exc.reason)


def load_config() -> kubernetes.client.ApiClient:
    """In a Pod: the service account; elsewhere: the current kubeconfig context."""
    import kubernetes.config
    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()
    return kubernetes.client.ApiClient()


class KubeApi:
    def __init__(self, api_client: kubernetes.client.ApiClient):
        self.custom = kubernetes.client.CustomObjectsApi(api_client)
        self.core = kubernetes.client.CoreV1Api(api_client)
        self.rbac = kubernetes.client.RbacAuthorizationV1Api(api_client)

    # ---- FeedHandlers ----

    def _get_feedhandler(self, namespace: str, name: str) -> dict | None:
        try:
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    async def get_feedhandler(self, namespace: str, name: str) -> dict | None:
        return await asyncio.to_thread(self._get_feedhandler, namespace, name)

    def _read_modify_write(self, namespace: str, name: str,
                           make_patch: Callable[[Mapping[str, Any]], dict | None],
                           send: Callable[..., dict], what: str) -> dict | None:
        """Read the FeedHandler, `make_patch(fresh body)` (None: nothing to write), send it with the
        body's resourceVersion as a precondition, and start over on 409 Conflict. Returns the body
        after, or None if the object is gone."""
        for _ in range(CONFLICT_RETRIES):
            body = self._get_feedhandler(namespace, name)
            if body is None:
                return None
            patch = make_patch(body)
            if patch is None:
                return body
            patch.setdefault("metadata", {})["resourceVersion"] = body["metadata"]["resourceVersion"]
            try:
                return send(GROUP, VERSION, namespace, PLURAL, name, patch)
            except ApiException as exc:
                if exc.status == 404:
                    return None
                if exc.status != 409:
                    raise
        raise StatusConflict(f"{what} of {namespace}/{name} kept changing under {CONFLICT_RETRIES} attempts")

    def _update_status(self, namespace: str, name: str,
                       change: Callable[[Mapping[str, Any]], dict | None]) -> dict | None:
        def make_patch(body):
            status_patch = change(body)
            return {"status": status_patch} if status_patch else None
        return self._read_modify_write(namespace, name, make_patch,
                                       self.custom.patch_namespaced_custom_object_status, "status")

    async def update_status(self, namespace: str, name: str,
                            change: Callable[[Mapping[str, Any]], dict | None]) -> dict | None:
        """Apply `change(fresh body) -> status merge patch or None`; the body after, or None if gone."""
        return await asyncio.to_thread(self._update_status, namespace, name, change)

    def _update_annotation(self, namespace: str, name: str, key: str,
                           change: Callable[[Mapping[str, Any]], tuple[bool, str | None]]) -> dict | None:
        """Set annotation `key` to `change(fresh body)`'s value (None removes it) with a
        resourceVersion precondition, on the object itself (never on /status)."""
        def make_patch(body):
            wanted, value = change(body)
            if not wanted or (body["metadata"].get("annotations") or {}).get(key) == value:
                return None
            return {"metadata": {"annotations": {key: value}}}
        return self._read_modify_write(namespace, name, make_patch,
                                       self.custom.patch_namespaced_custom_object, f"annotation {key}")

    async def update_annotation(self, namespace: str, name: str, key: str,
                                change: Callable[[Mapping[str, Any]], tuple[bool, str | None]]) -> dict | None:
        """`change(fresh) -> (write?, value)`; returns the body after, or None if it is gone."""
        return await asyncio.to_thread(self._update_annotation, namespace, name, key, change)

    # ---- the agents' identities ----

    def _apply(self, manifest: Mapping[str, Any]) -> None:
        """Create, or bring an existing one back to `manifest` (a merge patch of what we own)."""
        kind, meta = manifest["kind"], manifest["metadata"]
        create, patch = {
            "ServiceAccount": (self.core.create_namespaced_service_account, self.core.patch_namespaced_service_account),
            "Role": (self.rbac.create_namespaced_role, self.rbac.patch_namespaced_role),
            "RoleBinding": (self.rbac.create_namespaced_role_binding, self.rbac.patch_namespaced_role_binding),
        }[kind]
        try:
            create(meta["namespace"], manifest)
        except ApiException as exc:
            if exc.status == 409:
                patch(meta["name"], meta["namespace"], manifest)
                return
            if not 400 <= exc.status < 500 or exc.status in (404, 429):
                raise
            hint = (f" (may the operator make agent identities in namespace {meta['namespace']}? "
                    f"The chart grants it in agent.namespaces)") if exc.status == 403 else ""
            raise AdmissionRefused(f"{kind} {meta['name']}", exc.status, _api_message(exc) + hint) from None

    async def apply(self, manifests: list[Mapping[str, Any]]) -> None:
        for manifest in manifests:
            await asyncio.to_thread(self._apply, manifest)

    # ---- Pods ----

    def _get_pod(self, namespace: str, name: str) -> dict | None:
        try:
            return self.core.api_client.sanitize_for_serialization(self.core.read_namespaced_pod(name, namespace))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    async def get_pod(self, namespace: str, name: str) -> dict | None:
        return await asyncio.to_thread(self._get_pod, namespace, name)

    def _create_pod(self, pod: Mapping[str, Any]) -> bool:
        try:
            self.core.create_namespaced_pod(pod["metadata"]["namespace"], pod)
            return True
        except ApiException as exc:
            if exc.status == 409:
                return False  # already there: the next pass compares it
            if 400 <= exc.status < 500 and exc.status not in (404, 429):
                raise AdmissionRefused(f"agent Pod {pod['metadata']['name']}", exc.status, _api_message(exc)) from None
            raise

    async def create_pod(self, pod: Mapping[str, Any]) -> bool:
        return await asyncio.to_thread(self._create_pod, pod)

    def _delete_pod(self, namespace: str, name: str, grace: int | None) -> None:
        try:
            if grace is None:
                self.core.delete_namespaced_pod(name, namespace)
            else:
                self.core.delete_namespaced_pod(name, namespace, grace_period_seconds=grace)
        except ApiException as exc:
            if exc.status != 404:
                raise

    async def delete_pod(self, namespace: str, name: str, grace: int | None = None) -> None:
        """Delete; `grace=0` forces it (the API object goes without waiting for the kubelet)."""
        await asyncio.to_thread(self._delete_pod, namespace, name, grace)
