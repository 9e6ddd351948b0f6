"""Report to the FeedHandler's status: a snapshot of the numbers and the agent's conditions.

Read-modify-write with optimistic concurrency: read the object, replace only our condition types
in status.conditions, and send a merge patch to the status subresource that carries the
resourceVersion we read. If the operator wrote in between, the API server answers 409 Conflict
and we read again (a few times, then wait for the next round). The operator does the same with
its own types, so neither ever overwrites the other's conditions.

Never flooding the API server: one patch per `interval` (statusIntervalSeconds), plus at most
one early patch per `min_gap` seconds when a condition's status flips, and after an API error
the next attempt waits twice as long (up to ten intervals).
"""
from __future__ import annotations

import logging
import os
import time

from .conditions import Condition, merge, recent_latency, rfc3339
from .plan import FeedHandlerRef

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "tickwire.dev", "v1alpha1", "feedhandlers"
CONFLICT_RETRIES = 3


def snapshot(stats: dict | None, now: str) -> dict:
    """status.snapshot from the engine's stats: rates, counts, and latency in microseconds over the
    agent's window (the last minute) where it has samples."""
    if stats is None:
        return {"updated": now}
    rate = stats.get("rate") or {}
    latency, _span = recent_latency(stats)
    return {
        "rate": round(float(rate.get("messages_per_s", 0.0)), 1),
        "packetsPerSecond": round(float(rate.get("packets_per_s", 0.0)), 1),
        "messages": stats.get("messages", 0),
        "gaps": stats.get("gaps", 0),
        "missing": stats.get("missing", 0),
        "recovered": stats.get("recovered", 0),
        "duplicates": stats.get("duplicates", 0),
        "malformed": stats.get("malformed", 0),
        "latency": {"p50Micros": latency.get("p50", 0) / 1e3, "p99Micros": latency.get("p99", 0) / 1e3,
                    "p999Micros": latency.get("p999", 0) / 1e3},
        "xdpMode": stats.get("xdp_mode", "none"),
        "zeroCopy": bool(stats.get("zero_copy")),
        "updated": now,
    }


class StatusReporter:
    def __init__(self, ref: FeedHandlerRef, api, interval: float, min_gap: float = 1.0,
                 clock=time.monotonic):
        """`api`: a kubernetes.client.CustomObjectsApi."""
        self.ref = ref
        self.api = api
        self.interval = interval
        self.min_gap = min_gap
        self.clock = clock
        self.patches = 0
        self.conflicts = 0
        self.errors = 0
        self.last_error: str | None = None
        self._last_at: float | None = None
        self._last_statuses: dict[str, str] = {}
        self._wait = interval

    def due(self, conditions: list[Condition]) -> bool:
        if self._last_at is None:
            return True
        elapsed = self.clock() - self._last_at
        flipped = {c.type: c.status for c in conditions} != self._last_statuses
        return elapsed >= self._wait or (flipped and elapsed >= max(self.min_gap, self._wait - self.interval))

    def maybe_report(self, conditions: list[Condition], stats: dict | None, force: bool = False) -> bool:
        """Patch if due (or forced: the last report at exit); returns whether it was accepted."""
        if not force and not self.due(conditions):
            return False
        self._last_at = self.clock()
        try:
            self.report(conditions, stats)
        except Exception as e:   # the API being down must not take the feed down
            self.errors += 1
            self.last_error = _describe(e)
            self._wait = min(self._wait * 2, self.interval * 10)
            log.warning("status patch for %s/%s failed (%s); next try in %.0f s",
                        self.ref.namespace, self.ref.name, self.last_error, self._wait)
            return False
        self._wait = self.interval
        self._last_statuses = {c.type: c.status for c in conditions}
        return True

    def report(self, conditions: list[Condition], stats: dict | None) -> None:
        from kubernetes.client.exceptions import ApiException

        for attempt in range(CONFLICT_RETRIES):
            current = self.api.get_namespaced_custom_object_status(
                GROUP, VERSION, self.ref.namespace, PLURAL, self.ref.name)
            now = rfc3339()
            existing = (current.get("status") or {}).get("conditions") or []
            body = {
                "metadata": {"resourceVersion": current["metadata"]["resourceVersion"]},
                "status": {"conditions": merge(existing, conditions, self.ref.generation, now),
                           "snapshot": snapshot(stats, now)},
            }
            try:
                self.api.patch_namespaced_custom_object_status(
                    GROUP, VERSION, self.ref.namespace, PLURAL, self.ref.name, body,
                    _content_type="application/merge-patch+json")
            except ApiException as e:
                if e.status == 409 and attempt + 1 < CONFLICT_RETRIES:
                    self.conflicts += 1
                    continue
                raise
            self.patches += 1
            return


def _describe(error: Exception) -> str:
    status, reason = getattr(error, "status", None), getattr(error, "reason", None)
    if status is not None:                       # kubernetes ApiException: "404 Not Found"
        return f"{status} {reason}"
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def custom_objects_api(kubeconfig: str | None):
    """In a Pod: the service account; otherwise the given kubeconfig (or $KUBECONFIG)."""
    import kubernetes

    if kubeconfig is None and kubernetes.config.incluster_config.SERVICE_HOST_ENV_NAME in os.environ:
        kubernetes.config.load_incluster_config()
    else:
        kubernetes.config.load_kube_config(config_file=kubeconfig)
    return kubernetes.client.CustomObjectsApi()
