"""Report to the FeedHandler's status: a snapshot of the numbers, the agent's conditions, and
where it runs (status.observed).

Only to the FeedHandler the plan was made for: a FeedHandler deleted and re-created under the
same name is another object (another metadata.uid), and this agent must never write to it.

Read-modify-write with optimistic concurrency, as one JSON patch to the status subresource:

    test /metadata/uid              == the plan's feedHandler.uid   (the object is ours)
    test /metadata/resourceVersion  == the version we read          (nobody wrote in between)
    add  /status/conditions, /status/snapshot, /status/observed

The API server applies the ops in order and applies none if a `test` fails (422). Checking the
uid inside the patch, not only on the read before it, closes the window in which the object is
deleted and re-created between our read and our write. After a 422 we read again: another uid
means the FeedHandler is gone for good and this reporter stops; the same uid means the operator
wrote in between, and we retry (a few times, then wait for the next round). We replace only our
condition types; the operator does the same with its own, so neither overwrites the other's.

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


def snapshot(stats: dict | None, now: str, books: bool = False) -> dict:
    """status.snapshot from the engine's stats: rates, counts, and latency in microseconds over the
    agent's window (the last minute) where it has samples; `books` while the plan has books on."""
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
        **(books_snapshot(stats) if books else {}),
        **_rerequest(stats.get("rerequest")),
        "updated": now,
    }


# status.snapshot.books <- the engine's stats (contract C8). No reader numbers: the engine cannot
# see its readers, and they cannot write anything of the feed's (docs/consumers.md).
BOOK_FIELDS = {"instruments": "book_instruments", "ordersLive": "book_orders_live",
               "orderOverflow": "book_order_overflow", "eventsPublished": "book_events_published",
               "incomplete": "book_incomplete"}


def books_snapshot(stats: dict) -> dict:
    """{"books": {...}}: the engine's book numbers."""
    books = {field: int(stats.get(key, 0)) for field, key in BOOK_FIELDS.items()}
    if stats.get("stream_dir"):
        books["stream"] = stats["stream_dir"]
    return {"books": books}


def _rerequest(rerequest: dict | None) -> dict:
    """status.snapshot.rerequest: the server and limits asked, and what asking it achieved."""
    if not rerequest or not rerequest.get("config"):
        return {}
    config = rerequest["config"]
    recovery = rerequest.get("recovery_latency") or {}
    return {"rerequest": {
        "server": config["server"], "maxMessages": config["max_messages"],
        "timeoutMillis": config["timeout_ms"], "attempts": config["attempts"], "rate": config["rate"],
        "requestsSent": rerequest.get("requests_sent", 0),
        "messagesRequested": rerequest.get("messages_requested", 0),
        "recovered": rerequest.get("recovered", 0), "timedOut": rerequest.get("timed_out", 0),
        "givenUp": rerequest.get("given_up", 0), "outstanding": rerequest.get("outstanding", 0),
        "recoveryP50Micros": recovery.get("p50", 0) / 1e3,
        "recoveryP99Micros": recovery.get("p99", 0) / 1e3}}


class StatusReporter:
    def __init__(self, ref: FeedHandlerRef, api, interval: float, min_gap: float = 1.0,
                 clock=time.monotonic, observed: dict | None = None, books: bool = False):
        """`api`: a kubernetes.client.CustomObjectsApi; `observed`: status.observed (node, cores,
        housekeepingCores, podName), written with every report."""
        if not ref.uid:
            raise ValueError(f"FeedHandler {ref.namespace}/{ref.name}: the plan carries no uid, so this "
                             "agent cannot tell its FeedHandler from a re-created one of the same name")
        self.ref = ref
        self.observed = observed
        self.books = books              # status.snapshot.books is written
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
        self.disowned: str | None = None   # why we stopped for good: the FeedHandler is not ours

    def due(self, conditions: list[Condition]) -> bool:
        if self._last_at is None:
            return True
        elapsed = self.clock() - self._last_at
        flipped = {c.type: c.status for c in conditions} != self._last_statuses
        return elapsed >= self._wait or (flipped and elapsed >= max(self.min_gap, self._wait - self.interval))

    def maybe_report(self, conditions: list[Condition], stats: dict | None, force: bool = False) -> bool:
        """Patch if due (or forced: the last report at exit); returns whether it was accepted."""
        if self.disowned is not None or (not force and not self.due(conditions)):
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
        if self.disowned is not None:
            return False
        self._wait = self.interval
        self._last_statuses = {c.type: c.status for c in conditions}
        return True

    def report(self, conditions: list[Condition], stats: dict | None) -> None:
        from kubernetes.client.exceptions import ApiException

        for attempt in range(CONFLICT_RETRIES):
            current = self.api.get_namespaced_custom_object_status(
                GROUP, VERSION, self.ref.namespace, PLURAL, self.ref.name)
            if self._foreign(current):
                return
            try:
                self.api.patch_namespaced_custom_object_status(
                    GROUP, VERSION, self.ref.namespace, PLURAL, self.ref.name,
                    self.patch(current, conditions, stats), _content_type="application/json-patch+json")
            except ApiException as e:
                if e.status in (409, 422) and attempt + 1 < CONFLICT_RETRIES:
                    self.conflicts += 1    # a failed `test`: re-read, and find out which one
                    continue
                raise
            self.patches += 1
            return

    def patch(self, current: dict, conditions: list[Condition], stats: dict | None) -> list[dict]:
        """The JSON patch for `current` (the object as read): ours only if it is still that object."""
        now = rfc3339()
        status = current.get("status")
        existing = (status or {}).get("conditions") or []
        ops = [{"op": "test", "path": "/metadata/uid", "value": self.ref.uid},
               {"op": "test", "path": "/metadata/resourceVersion", "value": current["metadata"]["resourceVersion"]}]
        if status is None:
            ops.append({"op": "add", "path": "/status", "value": {}})
        ops += [{"op": "add", "path": "/status/conditions",
                 "value": merge(existing, conditions, self.ref.generation, now)},
                {"op": "add", "path": "/status/snapshot", "value": snapshot(stats, now, self.books)}]
        if self.observed is not None:
            ops.append({"op": "add", "path": "/status/observed", "value": self.observed})
        return ops

    def _foreign(self, current: dict) -> bool:
        uid = current["metadata"].get("uid")
        if uid == self.ref.uid:
            return False
        self.disowned = (f"FeedHandler {self.ref.namespace}/{self.ref.name} now has uid {uid}, not this "
                         f"agent's {self.ref.uid} (deleted and re-created): no more status reports")
        log.warning("%s", self.disowned)
        return True


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
