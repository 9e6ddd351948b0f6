"""Kubernetes-style conditions and the Ready summary.

The operator owns `Placed`, `PodHealthy` (the agent Pod as the API server and kubelet see it),
`CoresExclusive` (no other FeedHandler's agent runs on the same CPUs) and `Ready`; the agent owns
`Tuned`, `EngineReady`, `Receiving`, `GapFree` and `LatencySLOMet`. Ready is True only when
Placed, Tuned, EngineReady and Receiving are True for the current plan, PodHealthy,
CoresExclusive, GapFree and LatencySLOMet are not False, and the agent's snapshot is fresh.
Otherwise Ready is False with the reason of the first thing that is wrong, in this order:
Placed, PodHealthy, the agent Pod, CoresExclusive, Tuned, EngineReady, Receiving, GapFree,
LatencySLOMet, freshness.
"""
from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

OPERATOR_TYPES = ("Placed", "PodHealthy", "CoresExclusive", "Ready")
REQUIRED_AGENT_TYPES = ("Tuned", "EngineReady", "Receiving")
VETO_AGENT_TYPES = ("GapFree", "LatencySLOMet")  # False vetoes Ready; absent does not


def now_rfc3339(now: datetime.datetime | None = None) -> str:
    now = now or datetime.datetime.now(tz=datetime.timezone.utc)
    return now.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str | None) -> datetime.datetime | None:
    if not text:
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def find(conditions: Sequence[Mapping[str, Any]] | None, type_: str) -> Mapping[str, Any] | None:
    return next((c for c in conditions or () if c.get("type") == type_), None)


def condition(type_: str, status: bool, reason: str, message: str, generation: int) -> dict:
    return {"type": type_, "status": "True" if status else "False", "reason": reason,
            "message": message, "observedGeneration": generation}


def merged(conditions: Sequence[Mapping[str, Any]] | None, updates: Sequence[Mapping[str, Any]],
           now: str) -> list[dict]:
    """Replace the conditions of the updates' types, keep the others; lastTransitionTime moves
    only when the status does."""
    result = [dict(c) for c in conditions or ()]
    for update in updates:
        old = find(result, update["type"])
        new = dict(update)
        new["lastTransitionTime"] = (old.get("lastTransitionTime") if old and old.get("status") == new["status"]
                                     and old.get("lastTransitionTime") else now)
        if old is None:
            result.append(new)
        else:
            result[result.index(old)] = new
    return result


def same(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    """Equal but for lastTransitionTime."""
    strip = lambda c: {k: v for k, v in (c or {}).items() if k != "lastTransitionTime"}  # noqa: E731
    return a is not None and b is not None and strip(a) == strip(b)


def summarize(body: Mapping[str, Any], *, pod_exists: bool, now: datetime.datetime,
              stale_after: float) -> dict:
    """The Ready condition this FeedHandler should carry now."""
    generation = int(body.get("metadata", {}).get("generation") or 1)
    status = body.get("status") or {}
    conditions = status.get("conditions") or []
    placement = status.get("placement") or {}
    plan_generation = int(placement.get("planGeneration") or generation)

    def ready(ok: bool, reason: str, message: str) -> dict:
        return condition("Ready", ok, reason, message, generation)

    placed = find(conditions, "Placed")
    if placed is None or placed.get("status") != "True" or placed.get("observedGeneration") != generation:
        if placed is None or placed.get("observedGeneration") != generation:
            return ready(False, "Placing", "the operator has not placed this generation yet")
        return ready(False, placed.get("reason", "NotPlaced"), placed.get("message", ""))
    pod_healthy = find(conditions, "PodHealthy")
    if pod_healthy is not None and pod_healthy.get("status") == "False":
        return ready(False, pod_healthy.get("reason") or "PodUnhealthy", pod_healthy.get("message", ""))
    if not pod_exists:
        return ready(False, "AgentPodPending", f"agent Pod {placement.get('pod', '')} is not running yet")
    exclusive = find(conditions, "CoresExclusive")
    if exclusive is not None and exclusive.get("status") == "False":
        return ready(False, exclusive.get("reason") or "CoreClash", exclusive.get("message", ""))
    for type_ in REQUIRED_AGENT_TYPES:
        found = find(conditions, type_)
        if found is None or int(found.get("observedGeneration") or 0) < plan_generation:
            return ready(False, f"Awaiting{type_}", f"the agent has not reported {type_} for this plan yet")
        if found.get("status") != "True":
            return ready(False, found.get("reason") or f"Not{type_}", found.get("message", ""))
    for type_ in VETO_AGENT_TYPES:
        found = find(conditions, type_)
        if found is not None and found.get("status") == "False" \
                and int(found.get("observedGeneration") or 0) >= plan_generation:
            return ready(False, found.get("reason") or f"Not{type_}", found.get("message", ""))
    updated = parse_rfc3339((status.get("snapshot") or {}).get("updated"))
    if updated is None:
        return ready(False, "AwaitingSnapshot", "the agent has not reported a status snapshot yet")
    age = (now - updated).total_seconds()
    if age > stale_after:
        return ready(False, "AgentSilent", f"the agent's last snapshot is {age:.0f}s old (limit {stale_after:.0f}s)")
    snapshot = status["snapshot"]
    return ready(True, "FeedHealthy",
                 f"receiving {snapshot.get('rate', 0):.0f} msgs/s, p99 "
                 f"{(snapshot.get('latency') or {}).get('p99Micros', 0):.1f} us")


def stale_limit(spec: Mapping[str, Any]) -> float:
    """How old the agent's snapshot may get: three missed reports, never under 15 s."""
    return max(15.0, 3.0 * float(spec.get("statusIntervalSeconds", 5)))
