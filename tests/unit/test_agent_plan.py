"""The plan: the example validates, and every kind of bad plan is refused with the field named."""
import json
import subprocess
import sys

import pytest

from tickwire_engine.config import Line

from tickwire_agent import example, plan


def doc(**changes):
    d = json.loads(example.example_json())
    d.update(changes)
    return d


def problems_of(document) -> list[plan.Problem]:
    with pytest.raises(plan.PlanError) as err:
        plan.from_document(document)
    return err.value.problems


def test_the_example_is_a_valid_plan_and_round_trips_into_typed_fields():
    p = plan.loads(example.example_json())
    assert p.feed == "nasdaq-totalview"
    assert [l.engine_arg for l in p.lines] == ["A=239.1.1.1:26400", "B=239.1.1.2:26400"]
    assert p.hugepages == plan.Hugepages(count=8, numa_node=None)
    assert p.busy_poll.gro_flush_timeout_ns == 200000
    assert p.feed_handler is None


def test_defaults_fill_what_a_minimal_plan_leaves_out():
    minimal = {"apiVersion": plan.API_VERSION, "feed": {"name": "f", "protocol": "moldudp64-itch50"},
               "interface": "eth0", "queue": 0, "lines": [{"name": "A", "group": "239.0.0.1", "port": 1}],
               "cores": [0]}
    p = plan.from_document(minimal)
    assert (p.xdp_mode, p.zero_copy, p.metrics_port, p.restore_drift) == ("auto", "auto", 9470, True)
    assert p.busy_poll == plan.BusyPoll() and p.hugepages.count == 0 and p.irq_affinity == ()


def test_ssm_source_goes_into_the_engine_line_argument():
    d = doc(lines=[{"name": "A", "group": "232.1.1.1", "port": 9000, "source": "198.18.1.1"}])
    assert plan.from_document(d).lines[0].engine_arg == "A=232.1.1.1:9000@198.18.1.1"


def test_a_lines_vlan_goes_into_the_engine_line_argument_and_parses_back():
    d = doc(lines=[{"name": "A", "group": "232.1.1.1", "port": 9000, "source": "198.18.1.1", "vlan": 100},
                   {"name": "B", "group": "239.1.1.2", "port": 9000, "vlan": None}])
    a, b = plan.from_document(d).lines
    assert a.engine_arg == "A=232.1.1.1:9000@198.18.1.1,vlan=100" and b.engine_arg == "B=239.1.1.2:9000"
    assert Line.parse(a.engine_arg) == a and Line.parse(b.engine_arg) == b


@pytest.mark.parametrize("mutate, path, words", [
    (lambda d: d.pop("queue"), "queue", "required"),
    (lambda d: d.update(apiVersion="tickwire.dev/plan-v9"), "apiVersion", "plan-v1"),
    (lambda d: d.update(colour="red"), "colour", "unknown field"),
    (lambda d: d["busyPoll"].update(usecs=5), "busyPoll.usecs", "unknown field"),
    (lambda d: d.update(xdpMode="turbo"), "xdpMode", "'auto', 'native', 'generic'"),
    (lambda d: d["lines"][1].update(port=70000), "lines[1].port", "maximum"),
    (lambda d: d["lines"][0].update(vlan=4095), "lines[0].vlan", "maximum"),
    (lambda d: d["lines"][0].update(vlan=0), "lines[0].vlan", "minimum"),
    (lambda d: d["lines"][0].update(group="not-an-ip"), "lines[0].group", "IPv4"),
    (lambda d: d.update(cores=[]), "cores", "non-empty"),
    (lambda d: d.update(cores=[1, 1]), "cores", "each value once"),
    (lambda d: d.update(queue="0"), "queue", "type integer"),
    (lambda d: d["feed"].update(name="Bad_Name"), "feed.name", "lower-case"),
    (lambda d: d.update(feedHandler={"namespace": "ns", "name": "x"}), "feedHandler", "generation"),
    (lambda d: d.update(lines=[]), "lines", "line A alone"),
])
def test_schema_problems_name_the_field_and_say_what_to_do(mutate, path, words):
    d = doc()
    mutate(d)
    found = problems_of(d)
    assert [p.path for p in found] == [path], found
    assert words in str(found[0])


@pytest.mark.parametrize("lines, path, words", [
    ([{"name": "A", "group": "10.1.1.1", "port": 1}], "lines[0].group", "not a multicast group"),
    ([{"name": "A", "group": "224.0.0.5", "port": 1}], "lines[0].group", "224.0.0.0/24"),
    ([{"name": "A", "group": "232.1.1.1", "port": 1}], "lines[0].source", "source-specific"),
    ([{"name": "A", "group": "239.1.1.1", "port": 1, "source": "239.9.9.9"}], "lines[0].source", "cannot send"),
    ([{"name": "A", "group": "239.1.1.1", "port": 1}, {"name": "A", "group": "239.1.1.2", "port": 1}],
     "lines[1].name", "listed twice"),
    ([{"name": "A", "group": "239.1.1.1", "port": 1}, {"name": "B", "group": "239.1.1.1", "port": 1}],
     "lines[1]", "same group and port"),
])
def test_semantic_problems_a_schema_cannot_see(lines, path, words):
    found = problems_of(doc(lines=lines))
    assert [p.path for p in found] == [path]
    assert words in str(found[0])


def test_every_problem_is_reported_at_once():
    d = doc(exchangeTimezone="Mars/Olympus_Mons", metrics={"address": "localhost", "port": 1})
    d["lines"][0]["group"] = "10.0.0.1"
    assert {p.path for p in problems_of(d)} == {"lines[0].group", "exchangeTimezone", "metrics.address"}


def test_not_json_and_missing_file_say_so(tmp_path):
    with pytest.raises(plan.PlanError, match="not JSON: .* line 1"):
        plan.loads("{'single': quotes}")
    with pytest.raises(plan.PlanError, match="cannot read"):
        plan.load_file(str(tmp_path / "absent.json"))


def test_plan_from_environment(monkeypatch):
    monkeypatch.setenv("TW_TEST_PLAN", example.example_json())
    assert plan.load_env("TW_TEST_PLAN").interface == "eth0"
    monkeypatch.delenv("TW_TEST_PLAN")
    with pytest.raises(plan.PlanError, match="TW_TEST_PLAN is empty or unset"):
        plan.load_env("TW_TEST_PLAN")


def test_cli_example_is_valid_json_and_documents_every_field(tmp_path):
    out = subprocess.run([sys.executable, "-m", "tickwire_agent", "plan", "--example"],
                         capture_output=True, text=True, check=True)
    path = tmp_path / "plan.json"
    path.write_text(out.stdout)
    assert plan.load_file(str(path)).feed == "nasdaq-totalview"
    for field in ("busyPoll.groFlushTimeoutNs", "lines[].source", "hugepages.numaNode", "latencySLO.p99Micros"):
        assert field in out.stderr
    checked = subprocess.run([sys.executable, "-m", "tickwire_agent", "plan", "--check", str(path)],
                             capture_output=True, text=True)
    assert checked.returncode == 0 and "valid plan" in checked.stdout


def test_cli_refuses_a_bad_plan_with_exit_2_and_changes_nothing(tmp_path):
    d = doc()
    d["lines"][0]["group"] = "10.0.0.1"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(d))
    state = tmp_path / "state"
    for command in (["plan", "--check", str(path)], ["run", "--plan", str(path), "--state-dir", str(state)]):
        out = subprocess.run([sys.executable, "-m", "tickwire_agent", *command], capture_output=True, text=True)
        assert out.returncode == 2
        assert "lines[0].group: 10.0.0.1 is not a multicast group" in out.stderr
    assert not state.exists()


def test_too_few_hugepages_for_the_umem_is_refused():
    from tickwire_agent.example import EXAMPLE as EXAMPLE_PLAN
    from tickwire_agent.plan import PlanError, from_document
    import copy

    doc = copy.deepcopy(EXAMPLE_PLAN)
    doc["hugepages"]["count"] = 2
    with pytest.raises(PlanError) as err:
        from_document(doc)
    assert "hugepages.count" in str(err.value) and "at least 8" in str(err.value)
    doc["hugepages"]["count"] = 0
    from_document(doc)
