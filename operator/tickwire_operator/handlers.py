"""kopf wiring: which events run which part of the reconciler.

Indexes hold what placement needs in memory: the feed nodes' inventories, the allocations in
FeedHandlers' ledger annotations (ledger.py) and the agent Pods' plans and health. kopf fills
every index before any handler runs, so a restarted operator sees every allocation before it
makes a new one.

Intervals come from the environment when this module is imported (kopf fixes them then):
TICKWIRE_RESYNC_SECONDS (re-check each FeedHandler: a lost Pod, a lost node, capacity freed for
one that did not fit; default 5) and TICKWIRE_HEALTH_SECONDS (staleness and latency SLO;
default 5). How long the operator waits on trouble: reconcile.Policy.
"""
from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Mapping
from typing import Any

import kopf

from . import conditions, metrics
from .inventory import read_node
from .kube import KubeApi, load_config
from .ledger import LEDGER_ANNOTATION, read_ledger
from .pod import FEEDHANDLER_LABEL, MANAGED_BY, AgentSettings
from .reconcile import Holding, PodView, Policy, Reconciler, read_pod
from .spec import GROUP, PLURAL, VERSION, InvalidSpec, validated_spec

RESYNC_SECONDS = float(os.environ.get("TICKWIRE_RESYNC_SECONDS", "5"))
HEALTH_SECONDS = float(os.environ.get("TICKWIRE_HEALTH_SECONDS", "5"))
FINALIZER = "tickwire.dev/release-allocation"
FH = (GROUP, VERSION, PLURAL)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.posting.level = logging.WARNING  # Kubernetes Events only for what a human should see
    settings.watching.server_timeout = 300  # re-list now and then: a watch can silently stall
    # The ledger annotation is the operator's own bookkeeping, not a change to react to.
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        ignored_fields=[("metadata", "annotations", LEDGER_ANNOTATION)])
    memo.setdefault("breaching", set())  # FeedHandlers whose SLO breach was already announced
    if "reconciler" not in memo:
        memo.reconciler = Reconciler(KubeApi(load_config()), AgentSettings.from_env(), Policy.from_env())
    port = int(os.environ.get("TICKWIRE_OPERATOR_METRICS_PORT", "8080"))
    if port and not memo.get("metrics_started"):
        metrics.serve(port)
        memo.metrics_started = True


# ---- indexes ----

@kopf.index("nodes")
def feed_nodes(name: str, body: kopf.Body, **_: Any) -> dict:
    return {name: read_node(body)}


@kopf.index(*FH)
def placements(uid: str, body: kopf.Body, meta: kopf.Meta, **_: Any) -> dict | None:
    """The ledger (an annotation agents cannot write), never status.placement (they could)."""
    allocation = read_ledger(body)
    if allocation is None:
        return None
    return {uid: Holding(allocation, uid, meta.get("creationTimestamp") or "",
                         f"{meta.get('namespace')}/{meta.get('name')}")}


@kopf.index("pods", labels=MANAGED_BY)
def agent_pods(uid: str, body: kopf.Body, **_: Any) -> dict | None:
    view = read_pod(body)
    return {uid: view} if view is not None else None


def _single(index: kopf.Index) -> dict:
    """kopf keeps a collection per key; ours hold one value each."""
    return {key: value for key, store in index.items() for value in store}


def _views(feed_nodes: kopf.Index, placements: kopf.Index, agent_pods: kopf.Index) -> dict:
    return {"inventories": _single(feed_nodes), "placements": _single(placements), "pods": _single(agent_pods)}


# ---- FeedHandlers: create, update, resume, resync ----

@kopf.on.resume(*FH, backoff=2)
@kopf.on.update(*FH, backoff=2)
@kopf.on.create(*FH, backoff=2)
async def reconcile(body: kopf.Body, reason: str, memo: kopf.Memo, feed_nodes: kopf.Index,
                    placements: kopf.Index, agent_pods: kopf.Index, **_: Any) -> None:
    outcome = await memo.reconciler.reconcile(body, trigger=str(reason), **_views(feed_nodes, placements, agent_pods))
    if outcome == "backoff":
        # Retried by kopf after the back-off (the resync timer meanwhile finds the gate closed).
        delay = max(memo.reconciler.backoff.wait_left(body["metadata"]["uid"]), 1.0)
        raise kopf.TemporaryError(f"the agent Pod cannot be created yet; next attempt in {delay:.0f} s",
                                  delay=delay)


@kopf.timer(*FH, interval=RESYNC_SECONDS, initial_delay=RESYNC_SECONDS)
async def resync(body: kopf.Body, memo: kopf.Memo, feed_nodes: kopf.Index, placements: kopf.Index,
                 agent_pods: kopf.Index, **_: Any) -> None:
    await memo.reconciler.reconcile(body, trigger="resync", **_views(feed_nodes, placements, agent_pods))


@kopf.on.delete(*FH)
async def release(body: kopf.Body, memo: kopf.Memo, agent_pods: kopf.Index, feed_nodes: kopf.Index,
                  **_: Any) -> None:
    if not await memo.reconciler.release(body, _single(agent_pods), _single(feed_nodes)):
        raise kopf.TemporaryError("waiting for the agent Pod to go before freeing its cores and queue",
                                  delay=1)


# ---- Ready: when the agent reports, and as time passes ----

@kopf.on.event(*FH)
async def agent_reported(type: str, body: kopf.Body, memo: kopf.Memo, feed_nodes: kopf.Index,
                         placements: kopf.Index, agent_pods: kopf.Index, **_: Any) -> None:
    if type not in ("ADDED", "MODIFIED"):
        return
    if _reports_new_cores(body):
        # The agent said which CPUs it runs on: adopt them into the ledger now, not at the next resync.
        await memo.reconciler.reconcile(body, trigger="observed", **_views(feed_nodes, placements, agent_pods))
    else:
        await memo.reconciler.refresh_ready(body, _single(agent_pods))


def _reports_new_cores(body: kopf.Body) -> bool:
    observed = (body.get("status") or {}).get("observed") or {}
    recorded = read_ledger(body)
    if not observed.get("cores") or recorded is None or body["metadata"].get("deletionTimestamp"):
        return False
    return sorted(observed.get("cores") or []) != sorted(recorded.running_cores) or \
        sorted(observed.get("housekeepingCores") or []) != sorted(recorded.housekeeping_cores)


@kopf.timer(*FH, interval=HEALTH_SECONDS, initial_delay=HEALTH_SECONDS)
async def staleness(body: kopf.Body, memo: kopf.Memo, agent_pods: kopf.Index, **_: Any) -> None:
    """Ready turns False with AgentSilent when the agent stops reporting (no event would say so)."""
    await memo.reconciler.refresh_ready(body, _single(agent_pods))


@kopf.timer(*FH, interval=HEALTH_SECONDS, initial_delay=HEALTH_SECONDS)
def latency_slo(body: kopf.Body, meta: kopf.Meta, status: kopf.Status, memo: kopf.Memo, **_: Any) -> None:
    """Export SLO breaches as a metric and warn once (an Event) when one starts."""
    try:
        slo = validated_spec(body).get("latencySLO")
    except InvalidSpec:
        return
    p99 = ((status.get("snapshot") or {}).get("latency") or {}).get("p99Micros")
    gauge = metrics.SLO_BREACHED.labels(meta["namespace"], meta["name"])
    breached = bool(slo and p99 is not None and p99 > slo["p99Micros"])
    if breached and meta["uid"] not in memo.breaching:
        kopf.warn(body, reason="LatencySLOBreached",
                  message=f"p99 {p99:.1f} us exceeds the SLO of {slo['p99Micros']} us")
    if breached:
        memo.breaching.add(meta["uid"])
    else:
        memo.breaching.discard(meta["uid"])
    gauge.set(1 if breached else 0)


# ---- agent Pods: bring back the one that disappears, act on the one that fails ----

@kopf.on.event("pods", labels=MANAGED_BY)
async def agent_pod_changed(type: str, body: kopf.Body, memo: kopf.Memo, feed_nodes: kopf.Index,
                            placements: kopf.Index, agent_pods: kopf.Index, **_: Any) -> None:
    """A Pod went (create it again) or the kubelet reported on it (failed, crash loop, image):
    reconcile its FeedHandler now rather than at the next resync."""
    if type not in ("DELETED", "MODIFIED"):
        return
    labels: Mapping[str, str] = body.get("metadata", {}).get("labels") or {}
    owner = labels.get(FEEDHANDLER_LABEL)
    namespace = body.get("metadata", {}).get("namespace")
    if not owner or not namespace:
        return
    feedhandler = await memo.reconciler.kube.get_feedhandler(namespace, owner)
    if feedhandler is None:
        return
    pods: dict[str, PodView] = _single(agent_pods)
    if type == "DELETED":
        pods = {uid: pod for uid, pod in pods.items() if uid != body["metadata"].get("uid")}
    await memo.reconciler.reconcile(feedhandler, trigger=f"pod-{type.lower()}", inventories=_single(feed_nodes),
                                    placements=_single(placements), pods=pods)


# ---- the operator's own health ----

@kopf.on.probe(id="placed")
def placed_count(placements: kopf.Index, **_: Any) -> int:
    count = len(_single(placements))
    metrics.PLACED.set(count)
    return count


@kopf.on.probe(id="now")
def now(**_: Any) -> str:
    return conditions.now_rfc3339(datetime.datetime.now(tz=datetime.timezone.utc))
