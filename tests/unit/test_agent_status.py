"""Status reports against the Kubernetes emulator (tests/support/kube_emulator.py: kmock made to
behave like an API server: resourceVersion, 422 on a failed JSON-patch `test`, the status
subresource), through the official kubernetes client, as the agent talks to a real cluster."""
import kubernetes
import pytest

from tests.support.kube_emulator import KubeEmulator
from tickwire_agent.conditions import Condition
from tickwire_agent.plan import FeedHandlerRef
from tickwire_agent.status import GROUP, PLURAL, VERSION, StatusReporter, custom_objects_api

NS, NAME = "feeds", "nasdaq"
OURS = [Condition("Tuned", "True", "Applied", "host tuned"),
        Condition("EngineReady", "True", "Running", "XDP generic"),
        Condition("Receiving", "False", "NoPackets", "no packet yet"),
        Condition("GapFree", "True", "NoRecentGap", "none"),
        Condition("LatencySLOMet", "True", "NoObjective", "none")]
STATS = {"messages": 1234, "gaps": 1, "missing": 3, "recovered": 0, "duplicates": 9, "malformed": 0,
         "rate": {"messages_per_s": 5000.04, "packets_per_s": 1000.0}, "xdp_mode": "generic", "zero_copy": False,
         "latency": {"exchange_to_engine": {"p50": 2100, "p99": 3500, "p999": 9000}}}


@pytest.fixture
def kube():
    with KubeEmulator.running() as emulator:
        emulator.declare_feedhandlers()
        api = kubernetes.client.CustomObjectsApi(emulator.api_client())
        api.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "FeedHandler",
            "metadata": {"name": NAME, "namespace": NS}, "spec": {"feed": {"protocol": "moldudp64-itch50"}}})
        operator_writes(api, [{"type": "Placed", "status": "True", "reason": "Placed", "message": "node-1"}])
        yield emulator, api


def operator_writes(api, conditions):
    """What the operator does: read-modify-write of its own types with a resourceVersion."""
    current = api.get_namespaced_custom_object_status(GROUP, VERSION, NS, PLURAL, NAME)
    existing = [c for c in (current.get("status") or {}).get("conditions", [])
                if c["type"] not in {c2["type"] for c2 in conditions}]
    api.patch_namespaced_custom_object_status(GROUP, VERSION, NS, PLURAL, NAME, {
        "metadata": {"resourceVersion": current["metadata"]["resourceVersion"]},
        "status": {"conditions": existing + conditions, "observedGeneration": 1}})


def stored(emulator):
    return emulator.get(f"{GROUP}/{VERSION}/{PLURAL}", NS, NAME)


def uid_of(emulator) -> str:
    return stored(emulator)["metadata"]["uid"]


class WriteInBetween:
    """Forwards to the real client, but runs `write` once between our read and our patch, as a
    concurrent writer (the operator, or someone re-creating the object) would."""

    def __init__(self, api, write):
        self.api, self.write, self.raced = api, write, False

    def get_namespaced_custom_object_status(self, *args, **kwargs):
        return self.api.get_namespaced_custom_object_status(*args, **kwargs)

    def patch_namespaced_custom_object_status(self, *args, **kwargs):
        if not self.raced:
            self.raced = True
            self.write()
        return self.api.patch_namespaced_custom_object_status(*args, **kwargs)


def test_snapshot_and_our_conditions_land_beside_the_operators(kube):
    emulator, api = kube
    reporter = StatusReporter(FeedHandlerRef(NS, NAME, 3, uid_of(emulator)), api, interval=5)
    assert reporter.maybe_report(OURS, STATS)
    status = stored(emulator)["status"]
    types = {c["type"]: c for c in status["conditions"]}
    assert types["Placed"]["message"] == "node-1"                  # the operator's, kept
    assert types["Receiving"]["reason"] == "NoPackets" and types["Receiving"]["observedGeneration"] == 3
    assert status["observedGeneration"] == 1                       # the operator's field, kept
    snap = status["snapshot"]
    assert snap["rate"] == 5000.0 and snap["messages"] == 1234 and snap["gaps"] == 1 and snap["duplicates"] == 9
    assert snap["latency"] == {"p50Micros": 2.1, "p99Micros": 3.5, "p999Micros": 9.0}
    assert snap["xdpMode"] == "generic" and snap["zeroCopy"] is False and snap["updated"].endswith("Z")


def test_a_concurrent_operator_write_causes_a_conflict_and_a_retry_that_keeps_both(kube):
    emulator, api = kube

    in_between = WriteInBetween(api, lambda: operator_writes(
        api, [{"type": "Ready", "status": "False", "reason": "Waiting", "message": "x"}]))
    reporter = StatusReporter(FeedHandlerRef(NS, NAME, 1, uid_of(emulator)), in_between, interval=5)
    assert reporter.maybe_report(OURS, STATS)
    assert reporter.conflicts == 1 and reporter.patches == 1
    types = {c["type"] for c in stored(emulator)["status"]["conditions"]}
    assert types == {"Placed", "Ready", "Tuned", "EngineReady", "Receiving", "GapFree", "LatencySLOMet"}


OBSERVED = {"node": "node-1", "podName": "nasdaq-agent", "cores": [3], "housekeepingCores": [2]}


def recreate(api):
    """Delete the FeedHandler and create another under the same name (a new uid)."""
    api.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, NAME)
    return api.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "FeedHandler",
        "metadata": {"name": NAME, "namespace": NS}, "spec": {"feed": {"protocol": "moldudp64-itch50"}}})


def test_status_observed_says_where_the_agent_runs(kube):
    emulator, api = kube
    reporter = StatusReporter(FeedHandlerRef(NS, NAME, 1, uid_of(emulator)), api, interval=5, observed=OBSERVED)
    assert reporter.maybe_report(OURS, STATS)
    assert stored(emulator)["status"]["observed"] == OBSERVED


def test_a_feedhandler_recreated_under_the_same_name_is_never_written(kube):
    emulator, api = kube
    reporter = StatusReporter(FeedHandlerRef(NS, NAME, 1, uid_of(emulator)), api, interval=5, observed=OBSERVED)
    assert reporter.maybe_report(OURS, STATS)
    successor = recreate(api)
    assert not reporter.maybe_report(OURS, STATS, force=True)
    assert "deleted and re-created" in reporter.disowned and successor["metadata"]["uid"] in reporter.disowned
    assert "status" not in stored(emulator)                     # the new object: untouched
    assert not reporter.maybe_report(OURS, STATS, force=True)  # and it stays that way
    assert reporter.patches == 1


def test_a_recreation_between_our_read_and_our_patch_is_refused_by_the_patch_itself(kube):
    """The uid is tested inside the patch: a re-creation after the read makes the API server
    refuse the whole patch (422), so nothing of ours lands on the new object."""
    emulator, api = kube
    racing = WriteInBetween(api, lambda: recreate(api))
    reporter = StatusReporter(FeedHandlerRef(NS, NAME, 1, uid_of(emulator)), racing, interval=5, observed=OBSERVED)
    assert not reporter.maybe_report(OURS, STATS)
    assert racing.raced and reporter.conflicts == 1 and reporter.patches == 0
    assert reporter.disowned is not None
    assert "status" not in stored(emulator)


def test_the_uid_check_travels_in_the_same_patch_as_the_writes():
    """With a fake API: one JSON patch, its first op the uid test, before any write."""
    sent = []

    class FakeApi:
        def get_namespaced_custom_object_status(self, *args):
            return {"metadata": {"uid": "u-1", "resourceVersion": "7"}, "status": {"conditions": []}}

        def patch_namespaced_custom_object_status(self, group, version, ns, plural, name, body, **kwargs):
            sent.append((body, kwargs["_content_type"]))

    reporter = StatusReporter(FeedHandlerRef(NS, NAME, 1, "u-1"), FakeApi(), interval=5, observed=OBSERVED)
    assert reporter.maybe_report(OURS, STATS)
    [(ops, content_type)] = sent
    assert content_type == "application/json-patch+json"
    assert ops[:2] == [{"op": "test", "path": "/metadata/uid", "value": "u-1"},
                       {"op": "test", "path": "/metadata/resourceVersion", "value": "7"}]
    assert {op["path"] for op in ops[2:]} == {"/status/conditions", "/status/snapshot", "/status/observed"}
    assert all(op["op"] == "add" for op in ops[2:])


def test_a_plan_without_a_uid_cannot_report():
    with pytest.raises(ValueError, match="carries no uid"):
        StatusReporter(FeedHandlerRef(NS, NAME, 1), api=None, interval=5)


def test_rate_limited_to_the_interval_with_early_reports_only_on_a_flip(kube):
    emulator, api = kube
    now = [0.0]
    reporter = StatusReporter(FeedHandlerRef(NS, NAME, 1, uid_of(emulator)), api, interval=5, min_gap=1,
                              clock=lambda: now[0])
    flipped = [OURS[0], OURS[1], Condition("Receiving", "True", "Receiving", "5 msg/s"), *OURS[3:]]
    sent_at = []
    for step in range(41):                                # a 4 Hz loop for 10 s
        now[0] = step * 0.25
        conditions = OURS if now[0] < 0.5 else flipped    # Receiving flips at 0.5 s
        if reporter.maybe_report(conditions, STATS):
            sent_at.append(now[0])
    # first report; the flip waits for min_gap; then only every interval
    assert sent_at == [0.0, 1.0, 6.0] and reporter.patches == 3
    receiving = [c for c in stored(emulator)["status"]["conditions"] if c["type"] == "Receiving"]
    assert receiving[0]["status"] == "True"


def test_api_errors_back_off_instead_of_hammering(kube):
    emulator, api = kube
    now = [0.0]
    reporter = StatusReporter(FeedHandlerRef(NS, "no-such-feedhandler", 1, "0000"), api, interval=5,
                              clock=lambda: now[0])
    attempts = 0
    for _ in range(200):                              # 50 s
        now[0] += 0.25
        before = reporter.errors
        reporter.maybe_report(OURS, STATS)
        attempts += reporter.errors - before
    assert reporter.patches == 0 and "Not Found" in reporter.last_error
    assert attempts == 3                              # at 0.25, 10.25 and 30.25 s: 10, then 20 s apart


def test_client_from_a_kubeconfig_file(kube, tmp_path):
    emulator, _ = kube
    api = custom_objects_api(str(emulator.write_kubeconfig(tmp_path)))
    assert api.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, NAME)["metadata"]["name"] == NAME


def test_a_plan_naming_a_feedhandler_without_credentials_fails_before_touching_the_host(tmp_path, monkeypatch):
    import json
    from tickwire_agent import example
    from tickwire_agent.agent import Agent, AgentError, Options
    from tickwire_agent.plan import from_document
    doc = json.loads(example.example_json())
    doc["feedHandler"] = {"namespace": NS, "name": NAME, "uid": "1b4e28ba", "generation": 1}
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    agent = Agent(from_document(doc), Options(state_dir=str(tmp_path), kubeconfig=str(tmp_path / "absent")))
    with pytest.raises(AgentError, match="no Kubernetes credentials were found.*pass --kubeconfig"):
        agent._start_status()     # run() calls it before any tuning
