"""The agent's conditions from observations, and merging them into a status owned by two writers."""
import json

from tickwire_agent import example
from tickwire_agent.conditions import GAP_WINDOW_S, Condition, Observation, evaluate, merge
from tickwire_agent.plan import loads
from tickwire_agent.supervisor import Exit, State
from tickwire_agent.tuning.host import TuningReport

PLAN = loads(example.example_json())           # latencySLO p99 50 us, stale after 5 s
RUNNING = {"running": True, "xdp_mode": "generic", "zero_copy": False, "hugepages": True, "core": 1,
           "gaps": 0, "missing": 0, "recovered": 0, "rate": {"messages_per_s": 1000.0},
           "latency": {"exchange_to_engine": {"count": 10, "p99": 3_000}}}


def observe(**changes) -> dict[str, Condition]:
    o = Observation(plan=PLAN, tuning=TuningReport(), drift_messages=[], drift_outstanding=[],
                    engine_state=State.RUNNING, last_exit=None, stats=RUNNING, packet_age_s=0.1,
                    last_gap_at=None, now=1000.0)
    for k, v in changes.items():
        setattr(o, k, v)
    return {c.type: c for c in evaluate(o)}


def test_all_well():
    found = observe()
    assert {t: (c.status, c.reason) for t, c in found.items()} == {
        "Tuned": ("True", "Applied"), "EngineReady": ("True", "Running"), "Receiving": ("True", "Receiving"),
        "GapFree": ("True", "NoRecentGap"), "LatencySLOMet": ("True", "WithinObjective")}
    assert "XDP generic, copy mode, hugepages" in found["EngineReady"].message


def test_tuning_problems_warnings_and_drift():
    assert observe(tuning=TuningReport(problems=["channels: no"]))["Tuned"].reason == "Incomplete"
    warned = observe(tuning=TuningReport(warnings=["UMEM on normal pages"]))["Tuned"]
    assert warned.status == "True" and "normal pages" in warned.message
    assert observe(drift_messages=["gro was 0"])["Tuned"].reason == "DriftCorrected"
    left = observe(drift_messages=["x"], drift_outstanding=["gro was 0"])["Tuned"]
    assert (left.status, left.reason) == ("False", "Drifted")


def test_engine_states():
    crash = Exit(-9, "", 3.0)
    assert observe(engine_state=State.BACKOFF, last_exit=crash)["EngineReady"].reason == "Crashed"
    assert "SIGKILL" in observe(engine_state=State.BACKOFF, last_exit=crash)["EngineReady"].message
    assert observe(engine_state=State.BACKOFF, last_exit=Exit(3, "attach", 1))["EngineReady"].reason == "KernelRefused"
    assert observe(engine_state=State.FAILED, last_exit=Exit(2, "bad", 0.1))["EngineReady"].reason == "BadConfig"
    in_use = observe(engine_state=State.FAILED, last_exit=Exit(5, "queue 1 of eth1 is owned by pid 7", 0.1))
    assert in_use["EngineReady"].reason == "InUse" and "pid 7" in in_use["EngineReady"].message
    assert observe(stats=None)["EngineReady"].reason == "Starting"
    hung = observe(stats_age_s=12.0)["EngineReady"]
    assert (hung.status, hung.reason) == ("False", "Unresponsive") and "12 s" in hung.message
    assert observe(stats_age_s=0.4)["EngineReady"].status == "True"
    assert observe(stats=None)["Receiving"].status == "Unknown"


def test_receiving_goes_stale_after_the_plans_window():
    assert observe(packet_age_s=None)["Receiving"].reason == "NoPackets"
    assert observe(packet_age_s=4.9)["Receiving"].status == "True"
    stale = observe(packet_age_s=12.0)["Receiving"]
    assert (stale.status, stale.reason) == ("False", "Stale") and "12 s" in stale.message


def test_a_gap_clears_after_the_window():
    assert observe(last_gap_at=1000.0 - 5)["GapFree"].reason == "RecentGap"
    assert observe(last_gap_at=1000.0 - GAP_WINDOW_S - 1)["GapFree"].status == "True"


def test_latency_objective():
    slow = dict(RUNNING, latency={"exchange_to_engine": {"count": 10, "p99": 80_000}})
    missed = observe(stats=slow)["LatencySLOMet"]
    assert (missed.status, missed.reason) == ("False", "ObjectiveMissed") and "80.0 us > 50 us" in missed.message
    empty = dict(RUNNING, latency={"exchange_to_engine": {"count": 0}})
    assert observe(stats=empty)["LatencySLOMet"].status == "Unknown"
    no_slo = json.loads(example.example_json())
    del no_slo["latencySLO"]
    assert observe(plan=loads(json.dumps(no_slo)))["LatencySLOMet"].reason == "NoObjective"


def test_merge_replaces_only_our_types_and_keeps_transition_times():
    existing = [
        {"type": "Placed", "status": "True", "reason": "Placed", "lastTransitionTime": "T0"},
        {"type": "Receiving", "status": "True", "reason": "Receiving", "lastTransitionTime": "T1"},
        {"type": "GapFree", "status": "True", "reason": "NoRecentGap", "lastTransitionTime": "T1"},
        {"type": "Ready", "status": "True", "reason": "Ready", "lastTransitionTime": "T0"},
    ]
    ours = [Condition("Receiving", "True", "Receiving", "5 msg/s"), Condition("GapFree", "False", "RecentGap", "gap")]
    merged = {c["type"]: c for c in merge(existing, ours, generation=7, now="T2")}
    assert merged["Placed"] == existing[0] and merged["Ready"] == existing[3]      # the operator's, untouched
    assert merged["Receiving"]["lastTransitionTime"] == "T1"                        # same status: kept
    assert merged["Receiving"]["message"] == "5 msg/s"
    assert merged["GapFree"]["lastTransitionTime"] == "T2"                          # flipped: now
    assert merged["GapFree"]["observedGeneration"] == 7
