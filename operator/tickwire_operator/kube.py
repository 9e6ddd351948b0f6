"""The few API calls the operator makes itself (kopf does the watching).

Status is shared with the agent, and merge patches replace lists whole, so every status write is
read-modify-write with a resourceVersion precondition, retried on 409 Conflict: each side replaces
only its own condition types and never loses the other's. The official client is synchronous; the
calls run in worker threads so kopf's event loop never blocks.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import kubernetes.client
from kubernetes.client.exceptions import ApiException

from .spec import GROUP, PLURAL, VERSION

CONFLICT_RETRIES = 20


class StatusConflict(RuntimeError):
    pass


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

    def _update_status(self, namespace: str, name: str,
                       change: Callable[[Mapping[str, Any]], dict | None]) -> dict | None:
        for _ in range(CONFLICT_RETRIES):
            body = self._get_feedhandler(namespace, name)
            if body is None:
                return None
            status_patch = change(body)
            if not status_patch:
                return body
            patch = {"metadata": {"resourceVersion": body["metadata"]["resourceVersion"]},
                     "status": status_patch}
            try:
                return self.custom.patch_namespaced_custom_object_status(
                    GROUP, VERSION, namespace, PLURAL, name, patch)
            except ApiException as exc:
                if exc.status == 404:
                    return None
                if exc.status != 409:
                    raise
        raise StatusConflict(f"status of {namespace}/{name} kept changing under {CONFLICT_RETRIES} attempts")

    async def update_status(self, namespace: str, name: str,
                            change: Callable[[Mapping[str, Any]], dict | None]) -> dict | None:
        """Apply `change(fresh body) -> status merge patch or None`; the body after, or None if gone."""
        return await asyncio.to_thread(self._update_status, namespace, name, change)

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
            raise

    async def create_pod(self, pod: Mapping[str, Any]) -> bool:
        return await asyncio.to_thread(self._create_pod, pod)

    def _delete_pod(self, namespace: str, name: str) -> None:
        try:
            self.core.delete_namespaced_pod(name, namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise

    async def delete_pod(self, namespace: str, name: str) -> None:
        await asyncio.to_thread(self._delete_pod, namespace, name)
