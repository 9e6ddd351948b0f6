"""The level-triggered reconcile of one FeedHandler, and the finalizer's release.

Every entry point (create, update, resume, the resync timer, a deleted agent Pod) runs the same
`reconcile`, so running it twice, or after a restart, reaches the same state:

  1. validate the spec; a bad one gets Placed=False/InvalidSpec and nothing is created or changed;
  2. keep the current allocation if it still fits the spec, else place anew under one lock, and
     record the allocation in status *before* any Pod exists (the API server holds the ledger);
  3. make the agent Pod match the plan: create it, or delete a Pod whose plan is out of date and
     create the new one once the old one is gone (two agents never share a queue);
  4. write the operator's status (placement, Placed, Ready, observedGeneration) only if it changed.
"""
from __future__ import annotations

import asyncio
import datetime
import json
import logging
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import conditions, metrics
from .inventory import NodeInventory
from .kube import KubeApi
from .placement import Allocation, Ledger, NoFit, place, still_fits
from .plan import build_plan
from .pod import PLAN_ANNOTATION, PLAN_HASH_ANNOTATION, AgentSettings, build_agent_pod, desired_hash, pod_name
from .spec import InvalidSpec, validated_spec

log = logging.getLogger("tickwire.operator")


@dataclass(frozen=True)
class PodView:
    """What the operator needs to know about an agent Pod (from the pods index or the API)."""
    name: str
    owner_uid: str
    plan_hash: str
    plan_generation: int
    allocation: Allocation | None
    deleting: bool


def read_pod(pod: Mapping[str, Any]) -> PodView | None:
    meta = pod.get("metadata") or {}
    owner = next((ref.get("uid") for ref in meta.get("ownerReferences") or [] if ref.get("controller")), None)
    annotations = meta.get("annotations") or {}
    if owner is None or PLAN_ANNOTATION not in annotations:
        return None
    try:
        plan = json.loads(annotations[PLAN_ANNOTATION])
    except ValueError:
        plan = {}
    node = (pod.get("spec") or {}).get("nodeName")
    allocation = Allocation.from_status({
        "node": node, "interface": plan.get("interface"), "queue": plan.get("queue"),
        "cores": plan.get("cores"), "hugepages": (plan.get("hugepages") or {}).get("count", 0)})
    return PodView(name=meta["name"], owner_uid=owner, plan_hash=annotations.get(PLAN_HASH_ANNOTATION, ""),
                   plan_generation=int((plan.get("feedHandler") or {}).get("generation") or 0),
                   allocation=allocation, deleting=bool(meta.get("deletionTimestamp")))


@dataclass(frozen=True)
class Holding:
    """One allocation somebody holds, with who and since when (the older one wins a conflict)."""
    allocation: Allocation
    owner_uid: str
    since: str


KEEP = object()  # leave status.placement as it is


def _placed(allocation: Allocation, generation: int) -> dict:
    return conditions.condition(
        "Placed", True, "Placed",
        f"node {allocation.node}, {allocation.interface} queue {allocation.queue}, "
        f"cores {allocation.as_status()['coreList']}, {allocation.hugepages} hugepages", generation)


def _status_patch(fresh: Mapping[str, Any], *, generation: int, updates: list[dict],
                  placement: Any, pod_exists: bool, stale_after: float) -> dict | None:
    """The operator's part of status for the fresh body; None when nothing would change."""
    status = fresh.get("status") or {}
    now = conditions.now_rfc3339()
    new = dict(status)
    if placement is not KEEP:
        new["placement"] = placement
    new["observedGeneration"] = generation
    new["conditions"] = conditions.merged(status.get("conditions"), updates, now)
    ready = conditions.summarize({**fresh, "status": new}, pod_exists=pod_exists,
                                 now=datetime.datetime.now(tz=datetime.timezone.utc), stale_after=stale_after)
    new["conditions"] = conditions.merged(new["conditions"], [ready], now)
    patch = {key: new.get(key) for key in ("placement", "observedGeneration", "conditions")
             if new.get(key) != status.get(key)}
    return patch or None



class Reconciler:
    def __init__(self, kube: KubeApi, settings: AgentSettings):
        self.kube = kube
        self.settings = settings
        self.ledger = Ledger()
        self.placement_lock = asyncio.Lock()
        self._locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    def lock_for(self, uid: str) -> asyncio.Lock:
        return self._locks[uid]

    # ---- the ledger: the API server's view plus this process's own decisions ----

    def holdings(self, placements: Mapping[str, Holding], pods: Mapping[str, PodView]) -> dict[str, Holding]:
        """Everything held: FeedHandlers' status.placement, running Pods' plans, our claims."""
        held = dict(placements)
        seniority = {uid: h.since for uid, h in placements.items()}
        for pod in pods.values():
            if pod.allocation is not None:
                held[f"pod:{pod.owner_uid}"] = Holding(pod.allocation, pod.owner_uid,
                                                       seniority.get(pod.owner_uid, ""))
        for uid, allocation in self.ledger.claimed.items():
            held[uid] = Holding(allocation, uid, "")  # our own decisions outrank any observation
        return held

    @staticmethod
    def _others(held: Mapping[str, Holding], uid: str) -> list[Holding]:
        return [h for key, h in held.items() if h.owner_uid != uid]

    def _loses_conflict(self, allocation: Allocation, uid: str, since: str,
                        held: Mapping[str, Holding]) -> bool:
        """True when someone senior holds part of `allocation` (e.g. after a lost status write)."""
        return any(h.allocation.overlaps(allocation) and (h.since, h.owner_uid) < (since, uid)
                   for h in self._others(held, uid))

    # ---- reconcile ----

    async def reconcile(self, body: Mapping[str, Any], *, inventories: Mapping[str, NodeInventory],
                        placements: Mapping[str, Holding], pods: Mapping[str, PodView],
                        trigger: str) -> str:
        meta = body["metadata"]
        if meta.get("deletionTimestamp"):
            return "deleting"
        uid = meta["uid"]
        async with self.lock_for(uid):
            with metrics.timed_reconcile(trigger) as outcome:
                outcome[0] = await self._reconcile(body, inventories, placements, pods)
                return outcome[0]

    async def _reconcile(self, body, inventories, placements, pods) -> str:
        meta = body["metadata"]
        namespace, name, uid = meta["namespace"], meta["name"], meta["uid"]
        generation = int(meta.get("generation") or 1)
        pod = next((p for p in pods.values() if p.owner_uid == uid), None)

        try:
            spec = validated_spec(body)
        except InvalidSpec as exc:
            metrics.PLACEMENT_FAILURES.labels("InvalidSpec").inc()
            placed = conditions.condition("Placed", False, "InvalidSpec",
                                          f"{exc}. Fix the spec; nothing was changed.", generation)
            await self._write(body, generation, [placed], KEEP, pod is not None, 15.0)
            return "invalid"

        stale_after = conditions.stale_limit(spec)
        status = body.get("status") or {}
        current = self.ledger.claimed.get(uid) or Allocation.from_status(status.get("placement"))
        allocation = None
        async with self.placement_lock:
            held = self.holdings(placements, pods)
            since = meta.get("creationTimestamp", "")
            if current is not None and still_fits(current, spec, inventories) \
                    and not self._loses_conflict(current, uid, since, held):
                allocation = current
            else:
                others = [h.allocation for h in self._others(held, uid)]
                try:
                    allocation = place(spec, inventories, others)
                except NoFit as exc:
                    metrics.PLACEMENT_FAILURES.labels("NoFit").inc()
                    message = f"no node fits: {exc}"
                    if current is not None:
                        message += " (the agent keeps running on its previous placement)"
                    placed = conditions.condition("Placed", False, "NoFit", message, generation)
                    await self._write(body, generation, [placed], KEEP, pod is not None, stale_after)
                    return "nofit"
                self.ledger.claim(uid, allocation)
                try:
                    fresh = await self._write(body, generation, [_placed(allocation, generation)],
                                              {**allocation.as_status(), "pod": pod_name(name)},
                                              pod is not None, stale_after)
                except BaseException:
                    self.ledger.release(uid)  # not recorded: not held
                    raise
                if fresh is None:
                    self.ledger.release(uid)
                    return "gone"
                log.info("placed %s/%s: %s", namespace, name, allocation)

        plan = build_plan(body, spec, allocation)
        wanted_hash = desired_hash(plan, self.settings)
        plan_generation = generation
        if pod is not None and (pod.plan_hash != wanted_hash or pod.allocation != allocation):
            live = await self.kube.get_pod(namespace, pod.name)
            live_view = read_pod(live) if live else None
            if live_view is not None and live_view.plan_hash == wanted_hash and live_view.allocation == allocation:
                pod = live_view  # the index was behind; the Pod is already right
            elif live_view is not None:
                if not live_view.deleting:
                    log.info("replacing agent Pod %s/%s: its plan is out of date", namespace, pod.name)
                    metrics.PODS_REPLACED.inc()
                    await self.kube.delete_pod(namespace, pod.name)
                if await self.kube.get_pod(namespace, pod.name) is not None:
                    return "replacing"  # the Pod's deletion event brings us back
                pod = None
            else:
                pod = None
        if pod is None:
            if await self.kube.create_pod(build_agent_pod(body, allocation, plan, self.settings)):
                metrics.PODS_CREATED.inc()
        else:
            plan_generation = pod.plan_generation

        placement = {**allocation.as_status(), "pod": pod_name(name), "planHash": wanted_hash,
                     "planGeneration": plan_generation}
        fresh = await self._write(body, generation, [_placed(allocation, generation)], placement, True,
                                  stale_after)
        return "gone" if fresh is None else "placed"

    async def _write(self, body, generation, updates, placement, pod_exists, stale_after):
        """Write the operator's status if it differs from what `body` shows; the resync timer
        runs this for every FeedHandler, so the common "nothing changed" costs no API call."""
        if _status_patch(body, generation=generation, updates=updates, placement=placement,
                         pod_exists=pod_exists, stale_after=stale_after) is None:
            return body
        meta = body["metadata"]
        return await self.kube.update_status(
            meta["namespace"], meta["name"],
            lambda fresh: _status_patch(fresh, generation=generation, updates=updates, placement=placement,
                                        pod_exists=pod_exists, stale_after=stale_after))

    # ---- Ready, recomputed when the agent reports or time passes ----

    async def refresh_ready(self, body: Mapping[str, Any], pods: Mapping[str, PodView]) -> bool:
        """Rewrite Ready if it is out of date; True when it wrote."""
        meta = body["metadata"]
        if meta.get("deletionTimestamp") or not (body.get("status") or {}).get("conditions"):
            return False
        uid = meta["uid"]
        pod_exists = any(p.owner_uid == uid for p in pods.values())
        try:
            stale_after = conditions.stale_limit(validated_spec(body))
        except InvalidSpec:
            stale_after = 15.0
        now = datetime.datetime.now(tz=datetime.timezone.utc)
        wanted = conditions.summarize(body, pod_exists=pod_exists, now=now, stale_after=stale_after)
        if conditions.same(conditions.find(body["status"]["conditions"], "Ready"), wanted):
            return False

        def change(fresh):
            fresh_status = fresh.get("status") or {}
            ready = conditions.summarize(fresh, pod_exists=pod_exists, now=now, stale_after=stale_after)
            if conditions.same(conditions.find(fresh_status.get("conditions"), "Ready"), ready):
                return None
            return {"conditions": conditions.merged(fresh_status.get("conditions"), [ready],
                                                    conditions.now_rfc3339(now))}

        async with self.lock_for(uid):
            await self.kube.update_status(meta["namespace"], meta["name"], change)
        return True

    # ---- the finalizer ----

    async def release(self, body: Mapping[str, Any], pods: Mapping[str, PodView]) -> bool:
        """Delete the agent Pod; once it is gone, free the allocation. False while waiting."""
        meta = body["metadata"]
        namespace, uid = meta["namespace"], meta["uid"]
        async with self.lock_for(uid):
            name = pod_name(meta["name"])
            live = await self.kube.get_pod(namespace, name)
            if live is not None and (live.get("metadata") or {}).get("ownerReferences", [{}])[0].get("uid") == uid:
                await self.kube.delete_pod(namespace, name)
                if await self.kube.get_pod(namespace, name) is not None:
                    return False
            self.ledger.release(uid)
            await self.kube.update_status(
                namespace, meta["name"],
                lambda fresh: {"placement": None} if (fresh.get("status") or {}).get("placement") else None)
            metrics.RELEASES.inc()
            log.info("released %s/%s: its agent Pod is gone", namespace, meta["name"])
        self._locks.pop(uid, None)
        return True

