"""The level-triggered reconcile of one FeedHandler, and the finalizer's release.

Every entry point (create, update, resume, the resync timer, an agent Pod's event) runs the same
`reconcile`, so running it twice, or after a restart, reaches the same state:

  1. validate the spec; a bad one gets Placed=False/InvalidSpec and nothing is created or changed;
  2. keep the current allocation if it still fits the spec and its node is not lost, else place
     anew under one lock; adopt the CPUs the agent reports it runs on; record the allocation in
     the ledger annotation (ledger.py) *before* any Pod exists;
  3. make the agent Pod match the plan: create its identity (identity.py) and the Pod, or delete a
     Pod whose plan is out of date, or that failed for good, and create the new one once the old
     one is gone (two agents never share a queue); a Pod on a lost node is force-deleted;
  4. write the operator's status (the placement's display copy, Placed, PodHealthy,
     CoresExclusive, Ready, observedGeneration) only if it changed.

What the operator does about a failing Pod, a lost node and a Pod stuck Terminating is in
`Policy` below and podhealth.py, and in docs/operator.md.
"""
from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json
import logging
import os
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import kopf

from . import conditions, metrics
from .identity import agent_identity, agent_service_account
from .inventory import NodeInventory, format_cpuset
from .kube import AdmissionRefused, KubeApi
from .ledger import LEDGER_ANNOTATION, has_ledger, ledger_text, legacy_allocation, read_ledger
from .placement import Allocation, Ledger, NoFit, free_metrics_port, metrics_port_fits, place, still_fits
from .plan import build_plan
from .pod import PLAN_ANNOTATION, PLAN_HASH_ANNOTATION, AgentSettings, build_agent_pod, desired_hash, pod_name
from .podhealth import PodHealth, pod_health
from .spec import InvalidSpec, validated_spec

log = logging.getLogger("tickwire.operator")


@dataclass(frozen=True)
class Policy:
    """How long the operator waits before it acts on trouble, from the environment."""
    node_lost_seconds: float = 300.0  # NotReady this long: move the FeedHandler elsewhere
    pod_stuck_seconds: float = 60.0  # Terminating this long past its grace period: force it
    crash_restarts: int = 5  # restarts before a crash loop is reported
    backoff_seconds: float = 10.0  # first wait before creating a refused or failed Pod again
    backoff_max_seconds: float = 300.0  # the wait doubles up to this

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "Policy":
        def number(name: str, default: float) -> float:
            return float(env.get(name) or default)
        return cls(node_lost_seconds=number("TICKWIRE_NODE_LOST_SECONDS", cls.node_lost_seconds),
                   pod_stuck_seconds=number("TICKWIRE_POD_STUCK_SECONDS", cls.pod_stuck_seconds),
                   crash_restarts=int(number("TICKWIRE_CRASHLOOP_RESTARTS", cls.crash_restarts)),
                   backoff_seconds=number("TICKWIRE_POD_BACKOFF_SECONDS", cls.backoff_seconds),
                   backoff_max_seconds=number("TICKWIRE_POD_BACKOFF_MAX_SECONDS", cls.backoff_max_seconds))


class Backoff:
    """Per FeedHandler: how many Pod creates failed in a row, why the last one did, and when the
    next may happen. In memory on purpose: after an operator restart one early retry is harmless."""

    def __init__(self, first: float, cap: float, clock: Callable[[], float] = time.monotonic):
        self.first, self.cap, self.clock = first, cap, clock
        self._state: dict[str, tuple[int, float, str, str, str]] = {}

    def wait_left(self, uid: str) -> float:
        failures, not_before, *_ = self._state.get(uid, (0, 0.0, "", "", ""))
        return max(0.0, not_before - self.clock()) if failures else 0.0

    def failed(self, uid: str, reason: str, message: str, cause: str = "") -> float:
        """Record a failure; the wait before the next attempt (doubling up to the cap). The same
        `cause` (a failed Pod's uid, seen again before its deletion shows) counts once."""
        failures, not_before, _, _, last_cause = self._state.get(uid, (0, 0.0, "", "", ""))
        if cause and cause == last_cause:
            return max(0.0, not_before - self.clock())
        failures += 1
        delay = min(self.first * 2 ** (failures - 1), self.cap)
        self._state[uid] = (failures, self.clock() + delay, reason,
                            f"{message}; next agent Pod in {delay:.0f} s", cause)
        return delay

    def last_failure(self, uid: str) -> tuple[str, str] | None:
        """(reason, message) of the failure the current wait is for; the message names the
        wait, not the time left, so that re-writing it every resync changes nothing."""
        state = self._state.get(uid)
        return (state[2], state[3]) if state else None

    def succeeded(self, uid: str) -> None:
        self._state.pop(uid, None)


@dataclass(frozen=True)
class PodView:
    """What the operator needs to know about an agent Pod (from the pods index or the API)."""
    name: str
    owner_uid: str
    plan_hash: str
    plan_generation: int
    allocation: Allocation | None
    deleting: bool
    node: str = ""
    status: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # as the kubelet wrote it
    deletion_timestamp: str | None = None
    uid: str = ""

    def health(self, crash_restarts: int) -> PodHealth:
        return pod_health({"metadata": {"name": self.name}, "spec": {"nodeName": self.node},
                           "status": self.status}, crash_restarts)


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
        "cores": plan.get("cores"), "hugepages": (plan.get("hugepages") or {}).get("count", 0),
        "metricsPort": (plan.get("metrics") or {}).get("port")})
    return PodView(name=meta["name"], owner_uid=owner, plan_hash=annotations.get(PLAN_HASH_ANNOTATION, ""),
                   plan_generation=int((plan.get("feedHandler") or {}).get("generation") or 0),
                   allocation=allocation, deleting=bool(meta.get("deletionTimestamp")), node=node or "",
                   status=dict(pod.get("status") or {}), deletion_timestamp=meta.get("deletionTimestamp"),
                   uid=meta.get("uid") or "")


@dataclass(frozen=True)
class Holding:
    """One allocation somebody holds, with who and since when (the older one wins a conflict)."""
    allocation: Allocation
    owner_uid: str
    since: str
    owner: str = ""  # namespace/name, for messages


def _seconds_since(stamp: str | None, now: datetime.datetime) -> float:
    moment = conditions.parse_rfc3339(stamp)
    return 0.0 if moment is None else (now - moment).total_seconds()


def adopt_observed(allocation: Allocation, body: Mapping[str, Any], pod: PodView | None) -> Allocation:
    """The allocation with the CPUs the agent reports it runs on (status.observed), when that
    report is about this allocation's running Pod; else the allocation as it is. The ledger must
    never disagree with what runs: under the static CPU manager the kubelet picks the CPUs."""
    observed = (body.get("status") or {}).get("observed") or {}
    if pod is None or pod.deleting or pod.allocation != allocation.planned():
        return allocation
    try:
        cores = tuple(sorted({int(c) for c in observed.get("cores") or ()}))
        housekeeping = tuple(sorted({int(c) for c in observed.get("housekeepingCores") or ()}))
    except (TypeError, ValueError):
        return allocation
    if (observed.get("node") != allocation.node or observed.get("podName") != pod.name
            or len(cores) != len(allocation.cores) or any(c < 0 for c in cores + housekeeping)):
        return allocation
    return dataclasses.replace(allocation, running_cores=cores, housekeeping_cores=housekeeping)


KEEP = object()  # leave status.placement as it is


def _count_failure(body: Mapping[str, Any], reason: str) -> None:
    """Count a Pod failure when it is news (not at every resync that sees it again)."""
    shown = conditions.find((body.get("status") or {}).get("conditions"), "PodHealthy") or {}
    if (shown.get("status"), shown.get("reason")) != ("False", reason):
        metrics.POD_FAILURES.labels(reason).inc()


def _placed(allocation: Allocation, generation: int) -> dict:
    return conditions.condition(
        "Placed", True, "Placed",
        f"node {allocation.node}, {allocation.interface} queue {allocation.queue}, "
        f"cores {allocation.as_status()['coreList']}, {allocation.hugepages} hugepages, "
        f"metrics port {allocation.metrics_port}", generation)


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
    def __init__(self, kube: KubeApi, settings: AgentSettings, policy: Policy | None = None):
        self.kube = kube
        self.settings = settings
        self.policy = policy or Policy()
        self.ledger = Ledger()
        self.backoff = Backoff(self.policy.backoff_seconds, self.policy.backoff_max_seconds)
        self.placement_lock = asyncio.Lock()
        self._locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    def lock_for(self, uid: str) -> asyncio.Lock:
        return self._locks[uid]

    # ---- the ledger: the API server's view plus this process's own decisions ----

    def holdings(self, placements: Mapping[str, Holding], pods: Mapping[str, PodView]) -> dict[str, Holding]:
        """Everything held: FeedHandlers' ledgers, running Pods' plans, our claims. A Pod that
        runs its FeedHandler's current allocation is the same holding, counted once (hugepages and
        CPUs are counted, not only compared); one running an older plan holds that too, until it
        is gone."""
        held = dict(placements)
        for uid, allocation in self.ledger.claimed.items():
            owner = placements[uid].owner if uid in placements else ""
            held[uid] = Holding(allocation, uid, "", owner)  # our own decisions outrank any observation
        seniority = {uid: h.since for uid, h in placements.items()}
        for pod in pods.values():
            own = held.get(pod.owner_uid)
            if pod.allocation is not None and (own is None or own.allocation.planned() != pod.allocation):
                held[f"pod:{pod.owner_uid}"] = Holding(pod.allocation, pod.owner_uid,
                                                       seniority.get(pod.owner_uid, ""))
        return held

    @staticmethod
    def _others(held: Mapping[str, Holding], uid: str) -> list[Holding]:
        return [h for key, h in held.items() if h.owner_uid != uid]

    def _loses_conflict(self, allocation: Allocation, uid: str, since: str,
                        held: Mapping[str, Holding]) -> bool:
        """True when someone senior holds part of `allocation` (e.g. after a lost status write)."""
        return any(h.allocation.overlaps(allocation) and (h.since, h.owner_uid) < (since, uid)
                   for h in self._others(held, uid))

    def _with_metrics_port(self, allocation: Allocation, spec: Mapping[str, Any], uid: str, since: str,
                           held: Mapping[str, Holding], pod: PodView | None) -> Allocation:
        """The kept allocation with a metrics port that is still right: its own, unless the spec
        or the range changed, it has none (a ledger of the previous release) or someone senior
        holds the same port of the node; then a free one of the same node, preferring the port its
        running Pod binds (no new Pod for nothing). Only the port changes: a feed never moves for
        a port. NoFit when the node has none left."""
        clash = any(h.allocation.port_clash(allocation) and (h.since, h.owner_uid) < (since, uid)
                    for h in self._others(held, uid))
        if allocation.metrics_port is not None and not clash \
                and metrics_port_fits(allocation, spec, self.settings.metrics_ports):
            return allocation
        others = [h.allocation for h in self._others(held, uid)]
        running = pod.allocation.metrics_port if pod is not None and pod.allocation is not None else None
        port = free_metrics_port(allocation.node, spec, others, self.settings.metrics_ports, prefer=running)
        if isinstance(port, str):
            raise NoFit([port], ports_only=True)
        return dataclasses.replace(allocation, metrics_port=port)

    # ---- nodes ----

    def _node_trouble(self, node_name: str, inventories: Mapping[str, NodeInventory],
                      now: datetime.datetime) -> tuple[bool, str] | None:
        """None while the node is fine; else (lost, why): lost once it is gone from the API or
        NotReady for longer than the grace period (only then is leaving it worth a move)."""
        node = inventories.get(node_name)
        if node is None:
            return True, f"node {node_name} no longer exists"
        if node.not_ready_since is None:
            return None
        away = _seconds_since(node.not_ready_since, now)
        grace = self.policy.node_lost_seconds
        if away > grace:
            return True, f"node {node_name} has not been Ready for {away:.0f} s (more than {grace:.0f} s)"
        return False, (f"node {node_name} has not been Ready for {away:.0f} s; the FeedHandler moves to "
                       f"another node if it is still not Ready after {grace:.0f} s")

    # ---- reconcile ----

    async def reconcile(self, body: Mapping[str, Any], *, inventories: Mapping[str, NodeInventory],
                        placements: Mapping[str, Holding], pods: Mapping[str, PodView],
                        trigger: str) -> str:
        """One pass; the outcome ("placed", "nofit", "backoff", ...). "backoff" means a Pod
        create waits: `self.backoff.wait_left(uid)` says how long."""
        meta = body["metadata"]
        if meta.get("deletionTimestamp"):
            return "deleting"
        uid = meta["uid"]
        async with self.lock_for(uid):
            with metrics.timed_reconcile(trigger) as outcome:
                outcome[0] = await self._reconcile(body, inventories, placements, pods, trigger)
                return outcome[0]

    def _current(self, body, pod: PodView | None, trigger: str, held: Mapping[str, Holding]) -> Allocation | None:
        """What this FeedHandler holds: our claim, else its ledger; on resume, a FeedHandler of
        the previous release (no ledger annotation yet) is adopted once from its running Pod's
        plan or, without a Pod, from status.placement, provided nobody else holds any of it.
        (kopf calls it a create when the old operator's kopf annotations are missing.)"""
        uid = body["metadata"]["uid"]
        current = self.ledger.claimed.get(uid) or read_ledger(body)
        if current is not None or trigger not in ("resume", "create") or has_ledger(body):
            return current
        legacy = pod.allocation if pod is not None and pod.allocation is not None else legacy_allocation(body)
        if legacy is None or any(h.allocation.overlaps(legacy) for h in self._others(held, uid)):
            return None
        log.info("adopting %s/%s's allocation from the previous release: %s",
                 body["metadata"]["namespace"], body["metadata"]["name"], legacy)
        return legacy

    async def _reconcile(self, body, inventories, placements, pods, trigger) -> str:
        meta = body["metadata"]
        namespace, name, uid = meta["namespace"], meta["name"], meta["uid"]
        generation = int(meta.get("generation") or 1)
        pod = next((p for p in pods.values() if p.owner_uid == uid), None)
        now = datetime.datetime.now(tz=datetime.timezone.utc)

        try:
            spec = validated_spec(body)
        except InvalidSpec as exc:
            metrics.PLACEMENT_FAILURES.labels("InvalidSpec").inc()
            placed = conditions.condition("Placed", False, "InvalidSpec",
                                          f"{exc}. Fix the spec; nothing was changed.", generation)
            await self._write(body, generation, [placed], KEEP, pod is not None, 15.0)
            return "invalid"

        stale_after = conditions.stale_limit(spec)
        recorded = read_ledger(body)
        allocation = None
        async with self.placement_lock:
            held = self.holdings(placements, pods)
            current = self._current(body, pod, trigger, held)
            trouble = self._node_trouble(current.node, inventories, now) if current is not None else None
            since = meta.get("creationTimestamp", "")
            others = [h.allocation for h in self._others(held, uid)]
            try:
                if current is not None and still_fits(current, spec, inventories) and not (trouble and trouble[0]) \
                        and not self._loses_conflict(current, uid, since, held):
                    allocation = self._with_metrics_port(adopt_observed(current, body, pod), spec, uid, since,
                                                         held, pod)
                else:
                    allocation = place(spec, inventories, others, self.settings.metrics_ports)
                    if trouble:
                        kopf.warn(body, reason="NodeLost", message=f"{trouble[1]}: placed again on {allocation.node}")
            except NoFit as exc:
                metrics.PLACEMENT_FAILURES.labels(exc.condition_reason).inc()
                message = f"no node fits: {exc}"
                if current is not None:
                    message += " (the agent keeps running on its previous placement)"
                if trouble:
                    message = f"{trouble[1]}; {message}"
                placed = conditions.condition("Placed", False, exc.condition_reason, message, generation)
                await self._write(body, generation, [placed], KEEP, pod is not None, stale_after)
                return "nofit"
            if allocation != recorded:
                # What this FeedHandler held before: our own decision outranks the body, which a
                # timer may hand us long stale (a decision is news once, not at every stale pass).
                before = self.ledger.claimed.get(uid) or recorded
                self.ledger.claim(uid, allocation)
                try:
                    fresh = await self._record(body, allocation)
                except BaseException:
                    self.ledger.release(uid)  # not recorded: not held
                    raise
                if fresh is None:
                    self.ledger.release(uid)
                    return "gone"
                body = fresh
                if allocation.planned() != (before.planned() if before else None):
                    log.info("placed %s/%s: %s", namespace, name, allocation)

        settings = dataclasses.replace(self.settings, service_account=agent_service_account(name))
        planned = allocation.planned()
        plan = build_plan(body, spec, planned, settings.stream_root)
        wanted_hash = desired_hash(plan, settings)
        plan_generation = generation
        health: dict | None = None  # the PodHealthy condition to write; None keeps the one there
        if pod is not None and (pod.plan_hash != wanted_hash or pod.allocation != planned):
            live = await self.kube.get_pod(namespace, pod.name)
            live_view = read_pod(live) if live else None
            if live_view is not None and live_view.plan_hash == wanted_hash and live_view.allocation == planned:
                pod = live_view  # the index was behind; the Pod is already right
            elif live_view is not None:
                if not await self._remove_pod(body, live_view, inventories, now, "its plan is out of date"):
                    return "replacing"  # the Pod's deletion event brings us back
                pod = None
            else:
                pod = None
        if pod is not None and pod.deleting:
            # Going already (by hand, an eviction): forced if its node is lost or it hangs.
            if not await self._remove_pod(body, pod, inventories, now, "it is being deleted"):
                return "replacing"
            pod = None
        if pod is not None:
            pod_state = pod.health(self.policy.crash_restarts)
            if pod_state.replace:
                # Gone for good: delete it now, create the next one after the back-off.
                _count_failure(body, pod_state.reason)
                self.backoff.failed(uid, pod_state.reason, pod_state.message, cause=pod.uid)
                if not await self._remove_pod(body, pod, inventories, now, pod_state.message):
                    return "replacing"
                pod = None
            else:
                if pod_state.reason == "Running":
                    self.backoff.succeeded(uid)
                if not pod_state.healthy:
                    _count_failure(body, pod_state.reason)
                trouble = self._node_trouble(pod.node, inventories, now)
                if pod_state.healthy and trouble is not None:
                    health = conditions.condition("PodHealthy", False, "NodeNotReady", trouble[1], generation)
                else:
                    health = conditions.condition("PodHealthy", pod_state.healthy, pod_state.reason,
                                                  pod_state.message, generation)
        if pod is None:
            wait = self.backoff.wait_left(uid)
            last = self.backoff.last_failure(uid)
            if wait > 0 and last is not None:
                health = conditions.condition("PodHealthy", False, last[0], last[1], generation)
                await self._write(body, generation, [_placed(allocation, generation), health],
                                  self._display(allocation, name, wanted_hash, plan_generation), False,
                                  stale_after)
                return "backoff"  # the handler retries after `wait`
            try:
                await self.kube.apply(agent_identity(body))
                created = await self.kube.create_pod(build_agent_pod(body, planned, plan, settings))
            except AdmissionRefused as refused:
                message = f"the API server refused {refused.what} ({refused.status}): {refused}"
                delay = self.backoff.failed(uid, "PodAdmissionRefused", message)
                _count_failure(body, "PodAdmissionRefused")
                log.warning("%s/%s: %s; trying again in %.0f s", namespace, name, message, delay)
                health = conditions.condition("PodHealthy", False, *self.backoff.last_failure(uid), generation)
                await self._write(body, generation, [_placed(allocation, generation), health],
                                  self._display(allocation, name, wanted_hash, plan_generation), False,
                                  stale_after)
                return "backoff"
            if created:
                metrics.PODS_CREATED.inc()
            health = conditions.condition("PodHealthy", True, "Starting",
                                          f"agent Pod {pod_name(name)} is starting on {allocation.node}", generation)
        else:
            plan_generation = pod.plan_generation

        updates = [_placed(allocation, generation)] + ([health] if health else [])
        exclusive = self._exclusive(body, allocation, uid, placements, generation)
        if exclusive is not None:
            updates.append(exclusive)
        fresh = await self._write(body, generation, updates,
                                  self._display(allocation, name, wanted_hash, plan_generation), True, stale_after)
        return "gone" if fresh is None else "placed"

    @staticmethod
    def _display(allocation: Allocation, name: str, wanted_hash: str, plan_generation: int) -> dict:
        """status.placement: a copy of the ledger for `kubectl get`, never read back as truth."""
        return {**allocation.as_status(), "pod": pod_name(name), "planHash": wanted_hash,
                "planGeneration": plan_generation}

    def _exclusive(self, body, allocation: Allocation, uid: str, placements: Mapping[str, Holding],
                   generation: int) -> dict | None:
        """CoresExclusive, once the agent has said where it runs: False naming every FeedHandler
        whose agent was seen on one of the same CPUs (the ledger keeps both: it records what runs)."""
        if not allocation.running_cores:
            if conditions.find((body.get("status") or {}).get("conditions"), "CoresExclusive") is None:
                return None
            # Placed anew: an old clash says nothing about the new placement.
            return conditions.condition("CoresExclusive", True, "AwaitingReport",
                                        "the agent has not reported its CPUs for this placement yet", generation)
        clashes = [(h.owner or h.owner_uid, allocation.running_clash(h.allocation))
                   for h in placements.values() if h.owner_uid != uid]
        clashes = [(owner, cpus) for owner, cpus in clashes if cpus]
        if not clashes:
            return conditions.condition("CoresExclusive", True, "Exclusive",
                                        f"the agent runs alone on CPUs "
                                        f"{format_cpuset(allocation.running_cores + allocation.housekeeping_cores)} "
                                        f"of {allocation.node}", generation)
        text = "; ".join(f"CPUs {format_cpuset(cpus)} also run {owner}'s agent" for owner, cpus in sorted(clashes))
        return conditions.condition("CoresExclusive", False, "CoreClash",
                                    f"on {allocation.node}: {text} (check the kubelet's static CPU manager "
                                    f"and that the feed cores are not shared)", generation)

    async def _remove_pod(self, body, pod: PodView, inventories, now: datetime.datetime, why: str) -> bool:
        """Delete an agent Pod; True once it is gone. Forced (grace 0) when its node is lost or it
        has hung Terminating past its grace period by `pod_stuck_seconds`: nobody will confirm it."""
        namespace = body["metadata"]["namespace"]
        force = self._force_reason(pod, inventories, now)
        if force is not None:
            metrics.PODS_FORCE_DELETED.labels(force[0]).inc()
            message = (f"agent Pod {pod.name} force-deleted: {force[1]}. Host settings on {pod.node} stay "
                       f"as that agent left them until the node restarts or an agent of this FeedHandler "
                       f"runs there again and restores them from its journal")
            log.warning("%s/%s: %s", namespace, body["metadata"]["name"], message)
            kopf.warn(body, reason="AgentPodForceDeleted", message=message)
            await self.kube.delete_pod(namespace, pod.name, grace=0)
        elif not pod.deleting:
            log.info("deleting agent Pod %s/%s: %s", namespace, pod.name, why)
            metrics.PODS_REPLACED.inc()
            await self.kube.delete_pod(namespace, pod.name)
        return await self.kube.get_pod(namespace, pod.name) is None

    def _force_reason(self, pod: PodView, inventories, now: datetime.datetime) -> tuple[str, str] | None:
        trouble = self._node_trouble(pod.node, inventories, now)
        if trouble is not None and trouble[0]:
            return "node-lost", trouble[1]
        if pod.deletion_timestamp:
            late = _seconds_since(pod.deletion_timestamp, now)  # the grace period ended then
            if late > self.policy.pod_stuck_seconds:
                return "stuck-terminating", (f"it has been Terminating {late:.0f} s past its grace period "
                                             f"(limit {self.policy.pod_stuck_seconds:.0f} s); its kubelet "
                                             f"on {pod.node} does not confirm the end")
        return None

    async def _record(self, body, allocation: Allocation) -> dict | None:
        """Write the ledger annotation (a patch of the object, never of /status); the body after."""
        meta = body["metadata"]
        text = ledger_text(allocation)
        return await self.kube.update_annotation(meta["namespace"], meta["name"], LEDGER_ANNOTATION,
                                                 lambda fresh: (not fresh["metadata"].get("deletionTimestamp"), text))

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

    async def release(self, body: Mapping[str, Any], pods: Mapping[str, PodView],
                      inventories: Mapping[str, NodeInventory]) -> bool:
        """Delete the agent Pod; once it is gone, free the allocation. False while waiting. The
        wait is bounded: a Pod whose node is lost, or that hangs Terminating past its grace period
        by `pod_stuck_seconds`, is force-deleted with a Warning event (see _remove_pod)."""
        meta = body["metadata"]
        namespace, uid = meta["namespace"], meta["uid"]
        now = datetime.datetime.now(tz=datetime.timezone.utc)
        async with self.lock_for(uid):
            name = pod_name(meta["name"])
            live = await self.kube.get_pod(namespace, name)
            view = read_pod(live) if live is not None else None
            if view is not None and view.owner_uid == uid:
                if not await self._remove_pod(body, view, inventories, now, "its FeedHandler is being deleted"):
                    return False
            self.ledger.release(uid)
            self.backoff.succeeded(uid)
            await self.kube.update_annotation(namespace, meta["name"], LEDGER_ANNOTATION,
                                              lambda fresh: (has_ledger(fresh), None))
            metrics.RELEASES.inc()
            log.info("released %s/%s: its agent Pod is gone", namespace, meta["name"])
        self._locks.pop(uid, None)
        return True
