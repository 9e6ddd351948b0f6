"""The operator's pure parts: spec validation, node inventory, placement, plan, Pod, Ready.

No cluster, no emulator: plain functions on plain data, so each rule is pinned down quickly
before the kopf end-to-end tests (test_operator_kopf.py) run them for real.
"""
from __future__ import annotations

import datetime
import json
import pathlib

import jsonschema
import kubernetes_validate
import pytest

from tickwire_operator import conditions
from tickwire_operator.inventory import format_cpuset, parse_cpuset, parse_nics, read_node
from tickwire_operator.placement import Allocation, NoFit, place, still_fits
from tickwire_operator.plan import build_plan
from tickwire_operator.pod import CAPABILITIES, AgentSettings, build_agent_pod
from tickwire_operator.spec import (InvalidSpec, crd, crd_rule_messages, openapi_to_jsonschema,
                                    validated_spec, SPEC_RULES, ROOT_RULES)

REPO = pathlib.Path(__file__).resolve().parents[2]
PLAN_SCHEMA = json.loads((REPO / "agent" / "tickwire_agent" / "plan.schema.json").read_text())


def feedhandler(name="fh-a", **spec):
    spec.setdefault("lines", [{"name": "A", "group": "239.1.1.1", "port": 26477}])
    return {"apiVersion": "tickwire.dev/v1alpha1", "kind": "FeedHandler",
            "metadata": {"name": name, "namespace": "feeds", "uid": f"uid-{name}", "generation": 1,
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": spec}


def node(name, cores="2-5", nics="eth1=0-3", hugepages="64", **labels):
    return {"metadata": {"name": name, "labels": {"tickwire.dev/feed-node": "true", **labels},
                         "annotations": {"tickwire.dev/feed-cores": cores, "tickwire.dev/feed-nics": nics,
                                         "tickwire.dev/feed-hugepages": hugepages}}}


# ---- the CRD and the spec ----

def test_crd_has_printer_columns_short_name_and_status_subresource():
    version = crd()["spec"]["versions"][0]
    assert crd()["spec"]["names"]["shortNames"] == ["fh"]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Node"] == ".status.placement.node"
    assert columns["Queue"] == ".status.placement.queue"
    assert columns["Cores"] == ".status.placement.coreList"
    assert columns["XDP"] == ".status.snapshot.xdpMode"
    assert columns["Rate"] == ".status.snapshot.rate"
    assert columns["P99us"] == ".status.snapshot.latency.p99Micros"
    assert columns["Ready"] == '.status.conditions[?(@.type=="Ready")].status'
    assert "Age" in columns


def test_the_crd_itself_passes_kubernetes_validate_strict():
    kubernetes_validate.validate(crd(), kubernetes_validate.latest_version(), strict=True)


def test_every_cel_rule_has_a_python_twin():
    assert crd_rule_messages() == set(SPEC_RULES) | set(ROOT_RULES)


def test_defaults_are_applied():
    spec = validated_spec(feedhandler())
    assert (spec["cores"], spec["hugepages"], spec["xdpMode"], spec["zeroCopy"]) == (1, 0, "auto", "auto")
    assert spec["protocol"] == "moldudp64-itch50" and spec["metricsPort"] == 9470


@pytest.mark.parametrize("change, complaint", [
    ({"lines": []}, "spec.lines: [] should be non-empty"),
    ({"lines": [{"name": "A", "group": "10.1.1.1", "port": 1}]}, "spec.lines[0].group"),
    ({"lines": [{"name": "A", "group": "239.1.1.1", "port": 70000}]}, "spec.lines[0].port"),
    ({"lines": [{"name": "C", "group": "239.1.1.1", "port": 1}]}, "spec.lines[0].name"),
    ({"cores": 0}, "spec.cores"),
    ({"xdpMode": "turbo"}, "spec.xdpMode"),
    ({"cores": 2, "coress": 3}, "'coress' was unexpected"),
    ({"nodeName": "a", "nodeSelector": {"x": "y"}}, "set spec.nodeName or spec.nodeSelector, not both"),
    ({"queue": 3}, "spec.queue needs spec.interface"),
    ({"lines": [{"name": "A", "group": "239.1.1.1", "port": 1}, {"name": "A", "group": "239.1.1.2", "port": 1}]},
     "line names must differ"),
    ({"lines": [{"name": "A", "group": "239.1.1.1", "port": 1}, {"name": "B", "group": "239.1.1.1", "port": 1}]},
     "must differ in group or port"),
    ({"zeroCopy": "required", "xdpMode": "generic"}, "needs native XDP"),
])
def test_bad_specs_are_refused_naming_the_field(change, complaint):
    body = feedhandler()
    body["spec"].update(change)
    with pytest.raises(InvalidSpec) as refused:
        validated_spec(body)
    assert complaint in str(refused.value)


def test_name_too_long_for_the_pod_is_refused():
    with pytest.raises(InvalidSpec, match="at most 57"):
        validated_spec(feedhandler(name="x" * 58))


def test_crd_schema_accepts_a_full_feedhandler():
    schema = openapi_to_jsonschema(crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    body = feedhandler(nodeName="node-1", interface="ens1f0", queue=3, cores=2, hugepages=16,
                       xdpMode="native", zeroCopy="required", latencySLO={"p99Micros": 50},
                       busyPoll={"enabled": True, "usec": 50, "budget": 64},
                       lines=[{"name": "A", "group": "233.54.12.1", "port": 26477, "source": "10.0.0.1"},
                              {"name": "B", "group": "233.49.196.1", "port": 26477}])
    jsonschema.validate(body, schema)
    validated_spec(body)


# ---- node inventory ----

def test_cpusets_round_trip():
    assert parse_cpuset("2-4,8, 10") == {2, 3, 4, 8, 10}
    assert format_cpuset({2, 3, 4, 8, 10}) == "2-4,8,10"
    with pytest.raises(ValueError, match="runs backwards"):
        parse_cpuset("5-2")


def test_nics_annotation():
    assert parse_nics("ens1f0=1-3;ens1f1=0") == {"ens1f0": {1, 2, 3}, "ens1f1": {0}}
    with pytest.raises(ValueError, match="NAME=QUEUES"):
        parse_nics("ens1f0:1-3")


def test_a_bad_annotation_makes_the_node_offer_nothing_and_says_why():
    inventory = read_node(node("n1", cores="2-x"))
    assert inventory.problems and "feed-cores" in inventory.unusable_because()
    with pytest.raises(NoFit, match="n1: tickwire.dev/feed-cores"):
        place(validated_spec(feedhandler()), {"n1": inventory}, [])


def test_hugepages_fall_back_to_allocatable():
    body = node("n1")
    del body["metadata"]["annotations"]["tickwire.dev/feed-hugepages"]
    body["status"] = {"allocatable": {"hugepages-2Mi": "1Gi"}}
    assert read_node(body).hugepages == 512


# ---- placement ----

def test_many_feedhandlers_never_share_a_core_or_queue_and_the_extra_one_gets_a_reason():
    inventories = {n: read_node(node(n, cores="2-5", nics="eth1=0-2;eth2=0-1")) for n in ("n1", "n2")}
    held: list[Allocation] = []
    for i in range(8):  # 2 nodes x 4 cores; queues are plentiful (5 per node)
        held.append(place(validated_spec(feedhandler(f"f{i}")), inventories, held))
    cores = [(a.node, c) for a in held for c in a.cores]
    queues = [(a.node, a.interface, a.queue) for a in held]
    assert len(set(cores)) == len(cores) == 8
    assert len(set(queues)) == len(queues) == 8
    with pytest.raises(NoFit) as nofit:
        place(validated_spec(feedhandler("f9")), inventories, held)
    assert nofit.value.reasons == ["n1: needs 1 feed cores, 0 free (feed cores: 2-5)",
                                   "n2: needs 1 feed cores, 0 free (feed cores: 2-5)"]


def test_queues_run_out_before_cores():
    inventories = {"n1": read_node(node("n1", cores="0-7", nics="eth1=4"))}
    first = place(validated_spec(feedhandler("a", cores=2)), inventories, [])
    assert (first.interface, first.queue, first.cores) == ("eth1", 4, (0, 1))
    with pytest.raises(NoFit, match="no free feed queue on eth1"):
        place(validated_spec(feedhandler("b")), inventories, [first])


def test_named_node_queue_and_hugepages_are_honoured_or_explained():
    inventories = {n: read_node(node(n, hugepages="10")) for n in ("n1", "n2")}
    got = place(validated_spec(feedhandler(nodeName="n2", interface="eth1", queue=2, hugepages=8)), inventories, [])
    assert (got.node, got.queue, got.hugepages) == ("n2", 2, 8)
    with pytest.raises(NoFit, match="n2: needs 4 hugepages .2 MiB., 2 free of 10"):
        place(validated_spec(feedhandler(nodeName="n2", hugepages=4)), inventories, [got])
    with pytest.raises(NoFit, match="queue 2 of eth1 is taken"):
        place(validated_spec(feedhandler(nodeName="n2", interface="eth1", queue=2)), inventories, [got])
    with pytest.raises(NoFit, match="has no feed NIC eth9"):
        place(validated_spec(feedhandler(nodeName="n1", interface="eth9")), inventories, [])
    with pytest.raises(NoFit, match="node n7 does not exist"):
        place(validated_spec(feedhandler(nodeName="n7")), inventories, [])
    with pytest.raises(NoFit, match="no node has labels"):
        place(validated_spec(feedhandler(nodeSelector={"rack": "r9"})), inventories, [])


def test_cordoned_nodes_are_skipped():
    cordoned = node("n1")
    cordoned["spec"] = {"unschedulable": True}
    with pytest.raises(NoFit, match="n1: cordoned"):
        place(validated_spec(feedhandler()), {"n1": read_node(cordoned)}, [])


def test_an_allocation_survives_only_compatible_spec_changes():
    inventories = {"n1": read_node(node("n1"))}
    allocation = place(validated_spec(feedhandler()), inventories, [])
    assert still_fits(allocation, validated_spec(feedhandler(xdpMode="generic")), inventories)
    assert not still_fits(allocation, validated_spec(feedhandler(cores=2)), inventories)
    assert not still_fits(allocation, validated_spec(feedhandler(nodeName="n2")), inventories)


# ---- plan and Pod ----

def _pod(**spec):
    body = feedhandler(**spec)
    valid = validated_spec(body)
    allocation = place(valid, {"n1": read_node(node("n1"))}, [])
    plan = build_plan(body, valid, allocation)
    return plan, build_agent_pod(body, allocation, plan, AgentSettings())


def test_the_plan_validates_against_the_agent_schema():
    plan, _ = _pod(hugepages=4, latencySLO={"p99Micros": 20}, busyPoll={"usec": 10},
                   lines=[{"name": "A", "group": "239.1.1.1", "port": 1, "source": "10.1.1.1"},
                          {"name": "B", "group": "239.1.1.2", "port": 1}])
    jsonschema.Draft202012Validator(PLAN_SCHEMA, format_checker=jsonschema.FormatChecker()).validate(plan)
    assert plan["cores"] == [2] and plan["hugepages"]["count"] == 4 and plan["feedHandler"]["generation"] == 1


@pytest.mark.parametrize("hugepages", [0, 8])
def test_the_pod_passes_kubernetes_validate_strict(hugepages):
    _, pod = _pod(hugepages=hugepages)
    # Raises ValidationError (or SchemaNotFoundError) when the Pod is not a valid v1 Pod.
    kubernetes_validate.validate(pod, kubernetes_validate.latest_version(), strict=True)


def test_the_pod_is_pinned_guaranteed_least_privileged_and_owned():
    plan, pod = _pod(hugepages=8, cores=2)
    spec = pod["spec"]
    container = spec["containers"][0]
    assert spec["nodeName"] == "n1" and spec["hostNetwork"] is True
    # cores + 1: the extra CPU keeps the agent's own threads out of the poll thread's CFS quota
    assert container["resources"]["requests"] == container["resources"]["limits"] == \
        {"cpu": "3", "memory": "256Mi", "hugepages-2Mi": "16Mi"}
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": sorted(CAPABILITIES)}
    assert sorted(CAPABILITIES) == ["BPF", "IPC_LOCK", "NET_ADMIN", "NET_RAW", "PERFMON"]
    assert container["securityContext"]["privileged"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "Localhost",
                                                         "localhostProfile": "tickwire-agent-seccomp.json"}
    assert container["command"] == ["tickwire-agent", "run", "--plan-env", "TICKWIRE_PLAN",
                                    "--state-dir", "/run/tickwire/feedhandlers/feeds/fh-a",
                                    "--remove-state-on-clean-exit"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert json.loads(env["TICKWIRE_PLAN"]) == plan == json.loads(pod["metadata"]["annotations"]["tickwire.dev/plan"])
    assert container["ports"] == [{"name": "metrics", "containerPort": 9470, "hostPort": 9470, "protocol": "TCP"}]
    assert pod["metadata"]["ownerReferences"][0]["uid"] == "uid-fh-a"
    assert pod["metadata"]["labels"]["tickwire.dev/feedhandler"] == "fh-a"
    assert container["livenessProbe"]["httpGet"]["port"] == "metrics"


def _host_paths(pod) -> dict[str, tuple[str, str, bool]]:
    """{host path: (its type, where it is mounted, writable)} of the agent container."""
    container = pod["spec"]["containers"][0]
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert all(set(v) == {"name", "hostPath"} for v in volumes.values()), "host paths only, no other volumes"
    return {volumes[m["name"]]["hostPath"]["path"]: (volumes[m["name"]]["hostPath"]["type"], m["mountPath"],
                                                     not m.get("readOnly", False))
            for m in container["volumeMounts"]}


STATE = "/run/tickwire/feedhandlers/feeds/fh-a"


@pytest.mark.parametrize("changes, writable", [
    # nothing to write on the host but the journal
    ({}, {STATE}),
    # busy-poll knobs: that interface's sysfs directory
    ({"busyPoll": {"napiDeferHardIrqs": 2}}, {STATE, "/sys/class/net/eth1"}),
    # hugepages: the 2 MiB pool the agent grows (global, or the NIC's NUMA node's)
    ({"hugepages": {"count": 4, "numaNode": None}},
     {STATE, "/sys/kernel/mm/hugepages/hugepages-2048kB", "/sys/devices/system/node"}),
    ({"hugepages": {"count": 4, "numaNode": 1}},
     {STATE, "/sys/devices/system/node/node1/hugepages/hugepages-2048kB"}),
    # IRQ affinity: /proc/irq, mounted beside the container's read-only one
    ({"irqAffinity": [0]}, {STATE, "/proc/irq"}),
])
def test_the_pod_writes_on_the_host_only_what_its_plan_changes(changes, writable):
    plan, _ = _pod()
    plan.pop("busyPoll", None)
    plan["hugepages"] = {"count": 0, "numaNode": None}
    plan.update(changes)
    allocation = Allocation("n1", "eth1", 0, (2,), plan["hugepages"]["count"])
    pod = build_agent_pod(feedhandler(), allocation, plan, AgentSettings())
    mounted = _host_paths(pod)
    assert {path for path, (_, _, rw) in mounted.items() if rw} == writable
    assert "/sys" not in mounted and "/sys/fs/bpf" not in mounted     # never the whole of /sys
    assert mounted[STATE] == ("DirectoryOrCreate", STATE, True)      # same path inside: journal survives
    command = pod["spec"]["containers"][0]["command"]
    if "/proc/irq" in writable:
        assert mounted["/proc/irq"][1] == "/host/proc/irq" and command[-2:] == ["--irq-dir", "/host/proc/irq"]
    else:
        assert "--irq-dir" not in command


def test_sys_nice_only_for_a_real_time_poll_thread():
    _, plain = _pod()
    _, realtime = _pod(busyPoll={"rtPriority": 10})
    added = [p["spec"]["containers"][0]["securityContext"]["capabilities"]["add"] for p in (plain, realtime)]
    assert added == [sorted(CAPABILITIES), sorted([*CAPABILITIES, "SYS_NICE"])]


def test_each_feedhandler_has_its_own_state_dir_under_the_configured_root(tmp_path):
    settings = AgentSettings(state_root=str(tmp_path))
    pods = [build_agent_pod(feedhandler(name), Allocation("n1", "eth1", 0, (2,)), _pod()[0], settings)
            for name in ("fh-a", "fh-b")]
    assert [pod["spec"]["volumes"][0]["hostPath"]["path"] for pod in pods] == \
        [str(tmp_path / "feeds" / "fh-a"), str(tmp_path / "feeds" / "fh-b")]


def test_agent_settings_come_from_the_environment():
    settings = AgentSettings.from_env({"TICKWIRE_AGENT_IMAGE": "reg/agent:9", "TICKWIRE_AGENT_SERVICE_ACCOUNT": "sa",
                                       "TICKWIRE_AGENT_STATE_ROOT": "/tmp/tw-state",
                                       "TICKWIRE_AGENT_SECCOMP_PROFILE": "ops/agent.json"})
    assert (settings.image, settings.service_account, settings.state_root, settings.seccomp_profile) == \
        ("reg/agent:9", "sa", "/tmp/tw-state", "ops/agent.json")


# ---- Ready ----

NOW = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.timezone.utc)


def _with(conds, snapshot_age=1.0):
    body = feedhandler()
    body["status"] = {
        "placement": {"planGeneration": 1},
        "conditions": [{"type": t, "status": s, "reason": r, "observedGeneration": 1} for t, s, r in conds],
        "snapshot": {"rate": 1000.0, "latency": {"p99Micros": 3.0},
                     "updated": conditions.now_rfc3339(NOW - datetime.timedelta(seconds=snapshot_age))}}
    return body


HEALTHY = [("Placed", "True", "Placed"), ("Tuned", "True", "T"), ("EngineReady", "True", "E"),
           ("Receiving", "True", "R"), ("GapFree", "True", "G")]


@pytest.mark.parametrize("conds, age, pod, reason", [
    (HEALTHY, 1, True, "FeedHealthy"),
    (HEALTHY, 1, False, "AgentPodPending"),
    (HEALTHY[:2], 1, True, "AwaitingEngineReady"),
    ([("Placed", "False", "NoFit")], 1, False, "NoFit"),
    (HEALTHY[:3] + [("Receiving", "False", "NoPackets")], 1, True, "NoPackets"),
    (HEALTHY[:4] + [("GapFree", "False", "GapsDetected")], 1, True, "GapsDetected"),
    (HEALTHY + [("LatencySLOMet", "False", "P99AboveSLO")], 1, True, "P99AboveSLO"),
    (HEALTHY, 60, True, "AgentSilent"),
])
def test_ready_summarises_the_other_conditions(conds, age, pod, reason):
    ready = conditions.summarize(_with(conds, age), pod_exists=pod, now=NOW, stale_after=15)
    assert ready["reason"] == reason
    assert ready["status"] == ("True" if reason == "FeedHealthy" else "False")
    assert ready["observedGeneration"] == 1


def test_agent_conditions_of_an_older_plan_do_not_count():
    body = _with(HEALTHY)
    body["metadata"]["generation"] = 2
    body["status"]["placement"]["planGeneration"] = 2
    body["status"]["conditions"][0]["observedGeneration"] = 2  # Placed for generation 2
    assert conditions.summarize(body, pod_exists=True, now=NOW, stale_after=15)["reason"] == "AwaitingTuned"


def test_last_transition_time_moves_only_with_the_status():
    first = conditions.merged([], [conditions.condition("Placed", True, "Placed", "a", 1)], "T1")
    again = conditions.merged(first, [conditions.condition("Placed", True, "Placed", "b", 2)], "T2")
    flipped = conditions.merged(again, [conditions.condition("Placed", False, "NoFit", "c", 2)], "T3")
    assert [c["lastTransitionTime"] for c in (first[0], again[0], flipped[0])] == ["T1", "T1", "T3"]

