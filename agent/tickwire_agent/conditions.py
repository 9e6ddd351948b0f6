"""The conditions the agent owns, computed from what it observes, and merged into a status.

Pure functions of their inputs (no I/O, the time is passed in), so every reason is unit-tested.
The agent owns Tuned, EngineReady, Receiving, GapFree and LatencySLOMet; the operator owns the
others (Placed, Ready). `merge` replaces only our types in an existing list and keeps
lastTransitionTime when a condition's status did not change, as Kubernetes conventions ask.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from .plan import Plan
from .supervisor import EXIT_IN_USE, EXIT_KERNEL_REFUSED, Exit, State
from .tuning.host import TuningReport

OWNED = ("Tuned", "EngineReady", "Receiving", "GapFree", "LatencySLOMet")

GAP_WINDOW_S = 60.0   # GapFree is False while a gap was seen this recently
UNRESPONSIVE_S = 5.0  # the engine writes stats twice a second: this much silence means it hangs


@dataclass(frozen=True)
class Condition:
    type: str
    status: str        # "True" | "False" | "Unknown"
    reason: str
    message: str


@dataclass
class Observation:
    """Everything the conditions are computed from, gathered once per evaluation."""
    plan: Plan
    tuning: TuningReport | None
    drift_messages: list[str]          # drift found (and maybe put back) since start
    drift_outstanding: list[str]       # drift found and left in place (restoreDrift false)
    engine_state: State
    last_exit: Exit | None
    stats: dict | None                 # the engine's latest stats, from this engine run
    packet_age_s: float | None         # seconds since the last packet, now (None: none yet)
    last_gap_at: float | None          # monotonic time a gap was last counted
    now: float                         # monotonic
    stats_age_s: float | None = None   # seconds since the engine last wrote its stats


def evaluate(o: Observation) -> list[Condition]:
    return [_tuned(o), _engine_ready(o), _receiving(o), _gap_free(o), _latency(o)]


def _tuned(o: Observation) -> Condition:
    if o.tuning is None:
        return Condition("Tuned", "Unknown", "Tuning", "applying the plan's host settings")
    if o.tuning.problems:
        return Condition("Tuned", "False", "Incomplete", "; ".join(o.tuning.problems))
    if o.drift_outstanding:
        return Condition("Tuned", "False", "Drifted",
                         "changed under the agent and left so (restoreDrift is false): "
                         + "; ".join(o.drift_outstanding))
    if o.drift_messages:
        return Condition("Tuned", "True", "DriftCorrected",
                         f"{len(o.drift_messages)} change(s) under the agent put back, last: {o.drift_messages[-1]}")
    message = "host tuned as planned"
    if o.tuning.warnings:
        message += "; " + "; ".join(o.tuning.warnings)
    return Condition("Tuned", "True", "Applied", message)


def _engine_ready(o: Observation) -> Condition:
    state, last = o.engine_state, o.last_exit
    if state is State.RUNNING and o.stats_age_s is not None and o.stats_age_s > UNRESPONSIVE_S:
        return Condition("EngineReady", "False", "Unresponsive",
                         f"the engine runs but has written no stats for {o.stats_age_s:.0f} s")
    if state is State.RUNNING and o.stats is not None and o.stats.get("running"):
        s = o.stats
        text = (f"XDP {s.get('xdp_mode')}, {'zero-copy' if s.get('zero_copy') else 'copy mode'}, "
                f"{'hugepages' if s.get('hugepages') else 'normal pages'}, poll thread on CPU {s.get('core')}")
        if s.get("fallback"):
            text += f" ({s['fallback']})"
        return Condition("EngineReady", "True", "Running", text)
    if state is State.FAILED and last is not None:
        reason = "InUse" if last.returncode == EXIT_IN_USE else "BadConfig"
        return Condition("EngineReady", "False", reason, last.description)
    if state is State.BACKOFF and last is not None:
        reason = "KernelRefused" if last.returncode == EXIT_KERNEL_REFUSED else "Crashed"
        return Condition("EngineReady", "False", reason, f"{last.description}; restarting")
    if state in (State.STARTING, State.RUNNING):
        return Condition("EngineReady", "False", "Starting", "engine starting (no stats yet)")
    return Condition("EngineReady", "False", "Stopped", "engine not running")


def _receiving(o: Observation) -> Condition:
    if o.stats is None or o.engine_state is not State.RUNNING:
        return Condition("Receiving", "Unknown", "EngineNotReady", "no engine to receive with")
    stale = o.plan.stale_after_seconds
    if o.packet_age_s is None:
        return Condition("Receiving", "False", "NoPackets",
                         f"no packet yet on {', '.join(l.group + ':' + str(l.port) for l in o.plan.lines)}")
    if o.packet_age_s > stale:
        return Condition("Receiving", "False", "Stale",
                         f"no packet for {o.packet_age_s:.0f} s (stale after {stale:g} s)")
    rate = (o.stats.get("rate") or {}).get("messages_per_s", 0.0)
    return Condition("Receiving", "True", "Receiving", f"{rate:,.0f} messages/s")


def _gap_free(o: Observation) -> Condition:
    if o.stats is None:
        return Condition("GapFree", "Unknown", "EngineNotReady", "no engine stats yet")
    totals = f"{o.stats.get('gaps', 0)} gaps, {o.stats.get('missing', 0)} messages missing, " \
             f"{o.stats.get('recovered', 0)} recovered since the engine started"
    rerequest = o.stats.get("rerequest") or {}
    if rerequest.get("config"):
        # with re-requests, gaps and missing count only what the server could not give back
        totals += f"; {rerequest.get('recovered', 0)} recovered by re-request " \
                  f"({rerequest.get('given_up', 0)} ranges given up)"
    if o.last_gap_at is not None and o.now - o.last_gap_at < GAP_WINDOW_S:
        return Condition("GapFree", "False", "RecentGap",
                         f"gap {o.now - o.last_gap_at:.0f} s ago; {totals}")
    return Condition("GapFree", "True", "NoRecentGap", f"no gap in the last {GAP_WINDOW_S:.0f} s; {totals}")


def _latency(o: Observation) -> Condition:
    slo = o.plan.latency_slo_p99_micros
    if slo is None:
        return Condition("LatencySLOMet", "True", "NoObjective", "the plan sets no latency objective")
    if o.stats is None:
        return Condition("LatencySLOMet", "Unknown", "EngineNotReady", "no engine stats yet")
    stage, span = recent_latency(o.stats)
    if not stage.get("count"):
        return Condition("LatencySLOMet", "Unknown", "NoSamples", "no exchange-to-engine latency measured yet")
    p99_us = stage["p99"] / 1e3
    if p99_us <= slo:
        return Condition("LatencySLOMet", "True", "WithinObjective",
                         f"exchange-to-engine p99 {p99_us:.1f} us <= {slo:g} us {span}")
    return Condition("LatencySLOMet", "False", "ObjectiveMissed",
                     f"exchange-to-engine p99 {p99_us:.1f} us > {slo:g} us {span}")


def recent_latency(stats: dict) -> tuple[dict, str]:
    """Exchange-to-engine percentiles over the agent's window where it has samples, else since
    the engine started; and words saying which."""
    recent = stats.get("recent_latency") or {}
    if recent.get("count") and recent.get("seconds"):
        return recent, f"over the last {recent['seconds']:.0f} s"
    return (stats.get("latency") or {}).get("exchange_to_engine") or {}, "since the engine started"


def rfc3339(when: datetime | None = None) -> str:
    return (when or datetime.now(timezone.utc)).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge(existing: list[dict], ours: list[Condition], generation: int, now: str) -> list[dict]:
    """`existing` with our condition types replaced; others' conditions kept as they are, in order."""
    previous = {c.get("type"): c for c in existing}
    merged = [c for c in existing if c.get("type") not in OWNED]
    for cond in ours:
        old = previous.get(cond.type)
        changed = old is None or old.get("status") != cond.status
        merged.append({
            "type": cond.type, "status": cond.status, "reason": cond.reason, "message": cond.message,
            "observedGeneration": generation,
            "lastTransitionTime": now if changed else old.get("lastTransitionTime", now),
        })
    return merged
