"""Gap recovery on the control plane: the FeedHandler's spec.rerequest goes through the operator's
plan to the agent, which starts the engine with it, and comes back as metrics and status."""
import copy
import json

import pytest

from tickwire_agent import example
from tickwire_agent.agent import rerequest_args
from tickwire_agent.metrics import AgentView
from tickwire_agent.plan import PlanError, from_document
from tickwire_agent.status import snapshot
from tickwire_engine.cli import build_parser, rerequest_from_args
from tickwire_engine.config import Rerequest
from tests.unit.test_agent_metrics import STATS, scrape, value

SPEC = {"server": "203.0.113.20:26400", "maxMessages": 50, "timeoutMillis": 7.5, "attempts": 4,
        "rate": 250, "burst": 8}
RERQ_STATS = {"requests_sent": 12, "messages_requested": 300, "recovered": 290, "timed_out": 3,
              "given_up": 1, "overflow": 0, "outstanding": 2, "reply_packets": 11,
              "reply_rejected": 1, "reply_unsolicited": 5,
              "recovery_latency": {"count": 290, "p50": 80_000, "p99": 900_000},
              "config": {"server": "203.0.113.20:26400", "max_messages": 50, "timeout_ms": 7.5,
                         "attempts": 4, "rate": 250, "burst": 8}}


def plan_doc(rerequest) -> dict:
    doc = json.loads(example.example_json())
    doc["rerequest"] = rerequest
    return doc


def test_the_plans_rerequest_reaches_the_engine_as_the_same_settings():
    plan = from_document(plan_doc(SPEC))
    assert plan.rerequest == Rerequest("203.0.113.20:26400", max_messages=50, timeout_ms=7.5,
                                       attempts=4, rate=250, burst=8)
    args = build_parser().parse_args(["run", "--iface", "x", "--line", "A=239.1.1.1:1",
                                      *rerequest_args(plan.rerequest)])
    assert rerequest_from_args(args) == plan.rerequest


def test_without_rerequest_the_engine_gets_no_server():
    plan = from_document(plan_doc(None))
    assert plan.rerequest is None and rerequest_args(None) == []
    doc = plan_doc(None)
    del doc["rerequest"]
    assert from_document(doc).rerequest is None


def test_defaults_fill_what_the_plan_leaves_out():
    plan = from_document(plan_doc({"server": "10.1.2.3:26400"}))
    assert plan.rerequest == Rerequest("10.1.2.3:26400")


@pytest.mark.parametrize("bad, words", [
    ({"server": "239.1.1.1:26400"}, "not a unicast address"),
    ({"server": "10.1.2.3"}, "server"),
    ({"server": "10.1.2.3:26400", "maxMessages": 0}, "maxMessages"),
    ({"server": "10.1.2.3:26400", "surprise": 1}, "surprise"),
])
def test_a_bad_rerequest_is_refused_naming_it(bad, words):
    with pytest.raises(PlanError, match=words) as err:
        from_document(plan_doc(bad))
    assert "rerequest" in str(err.value)


def test_metrics_carry_the_server_the_limits_and_the_counts():
    view = AgentView("f")
    view.stats = {**copy.deepcopy(STATS), "rerequest": RERQ_STATS}
    samples = scrape(view)
    assert value(samples, "tickwire_rerequest_requests_total") == 12
    assert value(samples, "tickwire_rerequest_requested_messages_total") == 300
    assert value(samples, "tickwire_rerequest_recovered_messages_total") == 290
    assert value(samples, "tickwire_rerequest_timeouts_total") == 3
    assert value(samples, "tickwire_rerequest_given_up_total") == 1
    assert value(samples, "tickwire_rerequest_unsolicited_messages_total") == 5
    assert value(samples, "tickwire_rerequest_outstanding") == 2
    assert value(samples, "tickwire_rerequest_server", server="203.0.113.20:26400",
                 max_messages="50", timeout_ms="7.5", attempts="4", rate="250") == 1
    assert value(samples, "tickwire_rerequest_recovery_seconds", quantile="0.99") == 0.0009


def test_rerequest_counters_keep_rising_across_engine_restarts():
    view = AgentView("f")
    first = {**copy.deepcopy(STATS), "rerequest": RERQ_STATS, "engine": {"pid": 1, "started_at": 1}}
    view.stats = first
    second = copy.deepcopy(first)
    second["engine"] = {"pid": 2, "started_at": 2}
    second["rerequest"]["requests_sent"] = 5
    view.stats = second
    assert value(scrape(view), "tickwire_rerequest_requests_total") == 17


def test_status_snapshot_shows_the_server_and_what_asking_it_achieved():
    snap = snapshot({**STATS, "rerequest": RERQ_STATS}, "now")
    assert snap["rerequest"] == {
        "server": "203.0.113.20:26400", "maxMessages": 50, "timeoutMillis": 7.5, "attempts": 4,
        "rate": 250, "requestsSent": 12, "messagesRequested": 300, "recovered": 290,
        "timedOut": 3, "givenUp": 1, "outstanding": 2, "recoveryP50Micros": 80.0,
        "recoveryP99Micros": 900.0}
    assert "rerequest" not in snapshot({**STATS, "rerequest": {**RERQ_STATS, "config": None}}, "now")


def test_the_operator_puts_spec_rerequest_in_the_plan_and_the_crd_accepts_it():
    from tests.chart.test_chart_examples import validate_feedhandler
    from tickwire_operator.plan import build_plan
    from tickwire_operator.placement import Allocation
    from tickwire_operator.spec import validated_spec
    import yaml
    obj = yaml.safe_load(open("examples/feedhandler-ab.yaml"))
    assert validate_feedhandler(obj) == []
    bad = copy.deepcopy(obj)
    bad["spec"]["rerequest"]["server"] = "somewhere"
    assert any("rerequest" in e for e in validate_feedhandler(bad))
    obj["metadata"].update(namespace="ns", uid="u1", generation=1)
    spec = validated_spec(obj)
    allocation = Allocation(node="n", interface="ens1f0", queue=4, cores=(2, 3), hugepages=64,
                            metrics_port=9470)
    plan = build_plan(obj, spec, allocation)
    assert plan["rerequest"] == {"server": "203.0.113.20:26400", "maxMessages": 100,
                                 "timeoutMillis": 10, "attempts": 3, "rate": 500, "burst": 32}
    assert from_document(plan).rerequest.timeout_ms == 10
