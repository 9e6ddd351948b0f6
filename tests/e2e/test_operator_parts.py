"""The operator's pure parts: spec validation, node inventory, placement, plan, Pod, Ready.

No cluster, no emulator: plain functions on plain data, so each rule is pinned down quickly
before the kopf end-to-end tests (test_operator_kopf.py) run them for real.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import pathlib

import jsonschema
import kubernetes_validate
import pytest

from tickwire_operator import conditions
from tickwire_operator.inventory import format_cpuset, parse_cpuset, parse_nics, read_node
from tickwire_operator.placement import Allocation, NoFit, PortRange, place, still_fits
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
    assert spec["protocol"] == "moldudp64-itch50" and spec["flowSteering"] == "auto"
    assert "metricsPort" not in spec  # the operator gives one per node (placement), never one for all


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
    ({"lines": [{"name": "A", "group": "239.1.1.1", "port": 1, "vlan": 4095}]}, "spec.lines[0].vlan"),
    ({"lines": [{"name": "A", "group": "239.1.1.1", "port": 1, "vlan": 0}]}, "spec.lines[0].vlan"),
    ({"flowSteering": "rss"}, "spec.flowSteering"),
    ({"metricsPort": 80}, "spec.metricsPort"),
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
                       busyPoll={"enabled": True, "usec": 50, "budget": 64}, flowSteering="ntuple", metricsPort=9500,
                       lines=[{"name": "A", "group": "233.54.12.1", "port": 26477, "source": "10.0.0.1", "vlan": 100},
                              {"name": "B", "group": "233.49.196.1", "port": 26477}])
    body["status"] = {"placement": {"node": "node-1", "metricsPort": 9470},
                      "observed": {"metricsPort": 9470, "flowSteering": {"mode": "ntuple", "reason": "ntuple filters on",
                                                                         "rules": [1022, 1023]}}}
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
    ports = [(a.node, a.metrics_port) for a in held]
    assert len(set(cores)) == len(cores) == 8
    assert len(set(queues)) == len(queues) == 8
    assert len(set(ports)) == len(ports) == 8
    # Four feeds on one interface of each node, each on its own queue, ports from the range's start.
    assert sorted((a.node, a.interface, a.queue, a.metrics_port) for a in held) == \
        sorted([(n, "eth1", q, 9470 + q) for n in ("n1", "n2") for q in range(3)] +
               [(n, "eth2", 0, 9473) for n in ("n1", "n2")])
    with pytest.raises(NoFit) as nofit:
        place(validated_spec(feedhandler("f9")), inventories, held)
    assert nofit.value.reasons == ["n1: needs 1 feed cores, 0 free (feed cores: 2-5)",
                                   "n2: needs 1 feed cores, 0 free (feed cores: 2-5)"]


def test_metrics_ports_are_per_node_never_twice_and_a_full_range_says_so():
    inventories = {n: read_node(node(n, cores="0-9", nics="eth1=0-9")) for n in ("n1", "n2")}
    ports = PortRange.parse("9600-9602")
    held: list[Allocation] = []
    for i in range(6):
        held.append(place(validated_spec(feedhandler(f"f{i}")), inventories, held, ports))
    assert sorted((a.node, a.metrics_port) for a in held) == [(n, p) for n in ("n1", "n2") for p in (9600, 9601, 9602)]
    with pytest.raises(NoFit) as nofit:
        place(validated_spec(feedhandler("f6")), inventories, held, ports)
    assert nofit.value.condition_reason == "NoMetricsPort"
    assert nofit.value.reasons == [f"{n}: no free metrics port in 9600-9602 (the operator's agent metrics port range: "
                                   f"all 3 are held by feeds on the node)" for n in ("n1", "n2")]
    # A port named in the spec is given only if no feed of the node holds it, in the range or not.
    assert place(validated_spec(feedhandler("f7", metricsPort=9700)), inventories, held, ports).metrics_port == 9700
    with pytest.raises(NoFit, match="n1: metrics port 9601 .spec.metricsPort. is taken by another feed") as taken:
        place(validated_spec(feedhandler("f8", nodeName="n1", metricsPort=9601)), inventories, held, ports)
    assert taken.value.condition_reason == "NoMetricsPort"
    # A node short of something else as well says NoFit: ports are not the only thing missing.
    full = {"n1": read_node(node("n1", cores="0", nics="eth1=0-9"))}
    with pytest.raises(NoFit) as nofit:
        place(validated_spec(feedhandler("f9")), full, [a for a in held if a.node == "n1"], ports)
    assert nofit.value.condition_reason == "NoFit"
    # A Pod still running an older plan holds its port too (it binds it until it is gone).
    freed = [a for a in held if a.node == "n1" and a.metrics_port != 9601]
    old_pod = Allocation(node="n1", interface="eth1", queue=9, cores=(9,), metrics_port=9601)
    with pytest.raises(NoFit, match="no free metrics port"):
        place(validated_spec(feedhandler("f10", nodeName="n1")), inventories, freed + [old_pod], ports)


@pytest.mark.parametrize("text, parsed", [("9470-9569", (9470, 9569)), ("9470", (9470, 9470)), (" 9000 - 9001 ", (9000, 9001))])
def test_a_port_range_parses(text, parsed):
    assert (PortRange.parse(text).first, PortRange.parse(text).last) == parsed


@pytest.mark.parametrize("text, complaint", [("94x0", "is not a port or a range"), ("9570-9470", "first <= last"),
                                             ("80-90", "1024 <= first"), ("9470-70000", "<= 65535")])
def test_a_bad_port_range_is_refused_naming_it(text, complaint):
    with pytest.raises(ValueError, match=complaint):
        PortRange.parse(text)
    with pytest.raises(ValueError, match="TICKWIRE_AGENT_METRICS_PORTS"):
        AgentSettings.from_env({"TICKWIRE_AGENT_METRICS_PORTS": text})


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
    with pytest.raises(NoFit, match="n2: needs 8 hugepages .2 MiB., 2 free of 10"):
        place(validated_spec(feedhandler(nodeName="n2", hugepages=8)), inventories, [got])
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
    plan, _ = _pod(hugepages=8, latencySLO={"p99Micros": 20}, busyPoll={"usec": 10},
                   lines=[{"name": "A", "group": "239.1.1.1", "port": 1, "source": "10.1.1.1"},
                          {"name": "B", "group": "239.1.1.2", "port": 1}])
    jsonschema.Draft202012Validator(PLAN_SCHEMA, format_checker=jsonschema.FormatChecker()).validate(plan)
    assert plan["cores"] == [2] and plan["hugepages"]["count"] == 8 and plan["feedHandler"]["generation"] == 1


def test_the_plan_carries_the_given_port_vlans_and_flow_steering():
    plan, pod = _pod(flowSteering="ntuple", lines=[{"name": "A", "group": "239.1.1.1", "port": 1, "vlan": 100},
                                                   {"name": "B", "group": "239.1.1.2", "port": 1}])
    jsonschema.Draft202012Validator(PLAN_SCHEMA, format_checker=jsonschema.FormatChecker()).validate(plan)
    assert plan["flowSteering"] == "ntuple" and _pod()[0]["flowSteering"] == "auto"
    # Only a tagged line names its VLAN: an untagged feed's plan, and so its Pod, is as before.
    assert plan["lines"] == [{"name": "A", "group": "239.1.1.1", "port": 1, "source": None, "vlan": 100},
                             {"name": "B", "group": "239.1.1.2", "port": 1, "source": None}]
    assert plan["metrics"] == {"address": "0.0.0.0", "port": 9470}
    assert pod["spec"]["containers"][0]["ports"][0]["containerPort"] == 9470
    body = feedhandler()
    with pytest.raises(ValueError, match="has no metrics port"):
        build_plan(body, validated_spec(body), Allocation("n1", "eth1", 0, (2,)))


def test_a_kept_allocation_changes_only_its_port_when_the_port_is_wrong():
    from tickwire_operator.reconcile import Holding, Reconciler

    reconciler = Reconciler(kube=None, settings=AgentSettings(metrics_ports=PortRange.parse("9470-9472")))
    spec = validated_spec(feedhandler())
    senior = Allocation(node="n1", interface="eth1", queue=0, cores=(2,), metrics_port=9470)
    held = {"uid-s": Holding(senior, "uid-s", "2026-01-01T00:00:00Z", "feeds/senior")}
    junior_since = "2026-01-02T00:00:00Z"
    # A ledger of the previous release has no port: the queue and cores stay, the running Pod's
    # port is kept if it is free and in the range, else the lowest free one.
    legacy = Allocation(node="n1", interface="eth1", queue=1, cores=(3,))
    running = _view(dataclasses.replace(legacy, metrics_port=9472))
    assert reconciler._with_metrics_port(legacy, spec, "uid-a", junior_since, held, running) == \
        dataclasses.replace(legacy, metrics_port=9472)
    assert reconciler._with_metrics_port(legacy, spec, "uid-a", junior_since, held, None).metrics_port == 9471
    # Two ledgers with one port (a lost write, a hand edit): the younger moves its port only.
    clashing = dataclasses.replace(legacy, metrics_port=9470)
    assert reconciler._with_metrics_port(clashing, spec, "uid-a", junior_since, held, None) == \
        dataclasses.replace(legacy, metrics_port=9471)
    assert reconciler._with_metrics_port(clashing, spec, "uid-a", "2025-01-01T00:00:00Z", held, None) == clashing
    # A port out of a narrowed range, or other than the one the spec names now, is replaced.
    assert reconciler._with_metrics_port(dataclasses.replace(legacy, metrics_port=9500), spec, "uid-a",
                                         junior_since, held, None).metrics_port == 9471
    named = validated_spec(feedhandler(metricsPort=9600))
    assert reconciler._with_metrics_port(clashing, named, "uid-a", junior_since, held, None).metrics_port == 9600
    # No port left on the node: NoFit naming the range, the feed is not moved.
    full = {**held, "uid-x": Holding(dataclasses.replace(senior, queue=5, cores=(5,), metrics_port=9471), "uid-x", "", ""),
            "uid-y": Holding(dataclasses.replace(senior, queue=6, cores=(6,), metrics_port=9472), "uid-y", "", "")}
    with pytest.raises(NoFit, match="no free metrics port in 9470-9472") as nofit:
        reconciler._with_metrics_port(legacy, spec, "uid-a", junior_since, full, None)
    assert nofit.value.condition_reason == "NoMetricsPort"


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
                                    "--remove-state-on-clean-exit", "--node-state-dir", "/run/tickwire/node"]
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
# Every agent: the node's shared accounts (contract C4) and the host's bpffs (the shared program).
NODE = {"/run/tickwire/node", "/sys/fs/bpf"}


@pytest.mark.parametrize("changes, writable", [
    # nothing to write on the host but the journal
    ({}, {STATE, *NODE}),
    # busy-poll knobs: that interface's sysfs directory
    ({"busyPoll": {"napiDeferHardIrqs": 2}}, {STATE, *NODE, "/sys/class/net/eth1"}),
    # hugepages: the 2 MiB pool the agent grows (global, or the NIC's NUMA node's)
    ({"hugepages": {"count": 4, "numaNode": None}},
     {STATE, *NODE, "/sys/kernel/mm/hugepages/hugepages-2048kB", "/sys/devices/system/node"}),
    ({"hugepages": {"count": 4, "numaNode": 1}},
     {STATE, *NODE, "/sys/kernel/mm/hugepages/hugepages-2048kB",
      "/sys/devices/system/node/node1/hugepages/hugepages-2048kB"}),
    # IRQ affinity: /proc/irq, mounted beside the container's read-only one
    ({"irqAffinity": [0]}, {STATE, *NODE, "/proc/irq"}),
])
def test_the_pod_writes_on_the_host_only_what_its_plan_changes(changes, writable):
    plan, _ = _pod()
    plan.pop("busyPoll", None)
    plan["hugepages"] = {"count": 0, "numaNode": None}
    plan.update(changes)
    allocation = Allocation("n1", "eth1", 0, (2,), plan["hugepages"]["count"], metrics_port=9470)
    pod = build_agent_pod(feedhandler(), allocation, plan, AgentSettings())
    mounted = _host_paths(pod)
    assert {path for path, (_, _, rw) in mounted.items() if rw} == writable
    assert "/sys" not in mounted and "/sys/fs" not in mounted        # never the whole of /sys
    assert mounted[STATE] == ("DirectoryOrCreate", STATE, True)      # same path inside: journal survives
    # The node's shared accounts outlive every agent (created on first use); the bpffs must be
    # the host's own at the same path, where every engine of the node pins and finds the program.
    assert mounted["/run/tickwire/node"] == ("DirectoryOrCreate", "/run/tickwire/node", True)
    assert mounted["/sys/fs/bpf"] == ("Directory", "/sys/fs/bpf", True)
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
    pods = [build_agent_pod(feedhandler(name), Allocation("n1", "eth1", 0, (2,), metrics_port=9470), _pod()[0], settings)
            for name in ("fh-a", "fh-b")]
    assert [pod["spec"]["volumes"][0]["hostPath"]["path"] for pod in pods] == \
        [str(tmp_path / "feeds" / "fh-a"), str(tmp_path / "feeds" / "fh-b")]


def test_agent_settings_come_from_the_environment():
    settings = AgentSettings.from_env({"TICKWIRE_AGENT_IMAGE": "reg/agent:9", "TICKWIRE_AGENT_SERVICE_ACCOUNT": "sa",
                                       "TICKWIRE_AGENT_STATE_ROOT": "/tmp/tw-state",
                                       "TICKWIRE_AGENT_SECCOMP_PROFILE": "ops/agent.json",
                                       "TICKWIRE_AGENT_NODE_STATE_DIR": "/tmp/tw-node",
                                       "TICKWIRE_AGENT_METRICS_PORTS": "9000-9009"})
    assert (settings.image, settings.service_account, settings.state_root, settings.seccomp_profile,
            settings.node_state_dir, str(settings.metrics_ports)) == \
        ("reg/agent:9", "sa", "/tmp/tw-state", "ops/agent.json", "/tmp/tw-node", "9000-9009")
    defaults = AgentSettings.from_env({})
    assert (defaults.node_state_dir, str(defaults.metrics_ports)) == ("/run/tickwire/node", "9470-9569")
    pod = build_agent_pod(feedhandler(), Allocation("n1", "eth1", 0, (2,), metrics_port=9001), _pod()[0], settings)
    assert _host_paths(pod)["/tmp/tw-node"] == ("DirectoryOrCreate", "/tmp/tw-node", True)
    assert pod["spec"]["containers"][0]["command"][-2:] == ["--node-state-dir", "/tmp/tw-node"]


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
    (HEALTHY + [("PodHealthy", "False", "CrashLoop")], 1, True, "CrashLoop"),
    (HEALTHY + [("PodHealthy", "False", "PodAdmissionRefused")], 1, False, "PodAdmissionRefused"),
    (HEALTHY + [("PodHealthy", "True", "Running"), ("CoresExclusive", "False", "CoreClash")], 1, True, "CoreClash"),
    (HEALTHY + [("PodHealthy", "True", "Running"), ("CoresExclusive", "True", "Exclusive")], 1, True, "FeedHealthy"),
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



# ---- failing Pods, lost nodes, observed CPUs, the ledger, agent identities ----

from tickwire_operator.identity import agent_identity  # noqa: E402
from tickwire_operator.ledger import ledger_text, read_ledger  # noqa: E402
from tickwire_operator.podhealth import pod_health  # noqa: E402
from tickwire_operator.reconcile import Backoff, PodView, adopt_observed  # noqa: E402


def agent_pod_status(**status):
    return {"metadata": {"name": "fh-a-agent"}, "spec": {"nodeName": "node-1"}, "status": status}


def container(restarts=0, **state):
    return {"name": "agent", "image": "reg/agent:1", "restartCount": restarts, "state": state}


@pytest.mark.parametrize("status, reason, healthy, replace", [
    ({}, "Starting", True, False),
    ({"phase": "Running", "containerStatuses": [container(running={})]}, "Running", True, False),
    ({"phase": "Pending", "containerStatuses": [container(waiting={"reason": "ErrImagePull"})]},
     "ImagePullFailed", False, False),
    ({"phase": "Pending", "containerStatuses": [container(waiting={"reason": "InvalidImageName"})]},
     "ImagePullFailed", False, False),
    ({"phase": "Running", "containerStatuses": [container(4, waiting={"reason": "CrashLoopBackOff"})]},
     "Running", True, False),  # under the limit: the kubelet's restarts are not news yet
    ({"phase": "Running", "containerStatuses": [container(5, waiting={"reason": "CrashLoopBackOff"})]},
     "CrashLoop", False, False),
    ({"phase": "Running", "containerStatuses": [container(9, running={})]}, "Running", True, False),
    ({"phase": "Failed", "reason": "Evicted", "message": "low on memory"}, "PodFailed", False, True),
])
def test_pod_health_says_what_failed_and_whether_a_new_pod_helps(status, reason, healthy, replace):
    health = pod_health(agent_pod_status(**status), crash_restarts=5)
    assert (health.reason, health.healthy, health.replace) == (reason, healthy, replace)


def test_a_crash_loop_names_the_last_exit():
    crash = container(7, waiting={"reason": "CrashLoopBackOff"})
    crash["lastState"] = {"terminated": {"exitCode": 2, "reason": "Error", "message": "bind: queue busy"}}
    health = pod_health(agent_pod_status(phase="Running", containerStatuses=[crash]), crash_restarts=5)
    assert "restarted 7 times, last exit code 2 (Error): bind: queue busy" in health.message


def test_backoff_doubles_up_to_its_cap_and_resets():
    now = [100.0]
    backoff = Backoff(first=10, cap=35, clock=lambda: now[0])
    assert backoff.wait_left("a") == 0
    assert [backoff.failed("a", "PodFailed", "x") for _ in range(4)] == [10, 20, 35, 35]
    assert backoff.wait_left("a") == 35 and backoff.wait_left("b") == 0
    assert backoff.last_failure("a") == ("PodFailed", "x; next agent Pod in 35 s")
    now[0] += 36
    assert backoff.wait_left("a") == 0
    backoff.succeeded("a")
    assert backoff.failed("a", "PodFailed", "x", cause="pod-1") == 10 and backoff.last_failure("b") is None
    assert backoff.failed("a", "PodFailed", "x", cause="pod-1") == 10  # the same failed Pod seen again
    assert backoff.failed("a", "PodFailed", "x", cause="pod-2") == 20


def test_a_not_ready_node_says_since_when_and_what_it_has():
    body = node("node-1")
    body["status"] = {"allocatable": {"cpu": "7500m"}, "conditions": [
        {"type": "Ready", "status": "Unknown", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
    inventory = read_node(body)
    assert (inventory.not_ready_since, inventory.schedulable, inventory.cpus) == ("2026-01-01T00:00:00Z", False, 7)
    body["status"]["conditions"][0]["status"] = "True"
    assert read_node(body).not_ready_since is None
    body["status"]["allocatable"]["cpu"] = "lots"
    assert "allocatable cpu 'lots'" in read_node(body).problems[0]


def test_each_feedhandler_counts_cores_plus_one_cpus_against_the_node():
    body = node("node-1", cores="0-7")
    body["status"] = {"allocatable": {"cpu": "5"}}
    nodes = {"node-1": read_node(body)}
    first = place(validated_spec(feedhandler(cores=2)), nodes, [])  # 3 CPUs of 5
    with pytest.raises(NoFit, match=r"needs 3 CPUs \(2 cores \+ 1 housekeeping\), 2 of 5 allocatable left"):
        place(validated_spec(feedhandler(cores=2)), nodes, [first])
    assert place(validated_spec(feedhandler(cores=1)), nodes, [first]).cores == (2,)


def test_cores_an_agent_runs_on_are_never_given_to_another():
    nodes = {"node-1": read_node(node("node-1", cores="2-5"))}
    running = Allocation(node="node-1", interface="eth1", queue=0, cores=(2,), running_cores=(4,),
                         housekeeping_cores=(5,))
    assert place(validated_spec(feedhandler()), nodes, [running]).cores == (3,)


def _view(allocation, name="fh-a-agent", deleting=False):
    return PodView(name=name, owner_uid="uid-fh-a", plan_hash="h", plan_generation=1,
                   allocation=allocation.planned(), deleting=deleting, node=allocation.node)


@pytest.mark.parametrize("observed, adopted", [
    ({"node": "node-1", "cores": [7], "housekeepingCores": [8], "podName": "fh-a-agent"}, ((7,), (8,))),
    ({"node": "node-2", "cores": [7], "housekeepingCores": [8], "podName": "fh-a-agent"}, ((), ())),
    ({"node": "node-1", "cores": [7], "housekeepingCores": [8], "podName": "old-agent"}, ((), ())),
    ({"node": "node-1", "cores": [7, 9], "housekeepingCores": [8], "podName": "fh-a-agent"}, ((), ())),
    ({"node": "node-1", "cores": ["x"], "podName": "fh-a-agent"}, ((), ())),
    ({}, ((), ())),
])
def test_observed_cpus_are_adopted_only_from_the_running_pod_of_this_allocation(observed, adopted):
    allocation = Allocation(node="node-1", interface="eth1", queue=0, cores=(2,))
    body = {"status": {"observed": observed}}
    result = adopt_observed(allocation, body, _view(allocation))
    assert (result.running_cores, result.housekeeping_cores) == adopted
    assert result.planned() == allocation  # the plan (and so the Pod) never changes
    assert adopt_observed(allocation, body, None) == allocation
    assert adopt_observed(allocation, body, _view(allocation, deleting=True)) == allocation


def test_a_running_clash_is_only_between_cpus_both_agents_reported():
    a = Allocation(node="n", interface="eth1", queue=0, cores=(2,), running_cores=(4,), housekeeping_cores=(5,))
    b = Allocation(node="n", interface="eth1", queue=1, cores=(3,), running_cores=(6,), housekeeping_cores=(4,))
    assert a.running_clash(b) == {4}
    assert a.running_clash(b.planned()) == set() and not a.overlaps(b)
    assert a.running_clash(Allocation(node="m", interface="eth1", queue=0, cores=(2,), running_cores=(4,))) == set()


def test_the_ledger_round_trips_through_its_annotation():
    allocation = Allocation(node="n", interface="eth1", queue=3, cores=(2, 3), hugepages=8,
                            running_cores=(6, 7), housekeeping_cores=(8,))
    body = {"metadata": {"annotations": {"tickwire.dev/allocation": ledger_text(allocation)}}}
    assert read_ledger(body) == allocation
    assert read_ledger({"metadata": {"annotations": {"tickwire.dev/allocation": "{not json"}}}) is None
    assert read_ledger({"metadata": {}}) is None


def test_each_agent_gets_an_identity_for_its_own_feedhandler_only():
    account, role, binding = agent_identity(feedhandler("fh-a"))
    assert [m["kind"] for m in (account, role, binding)] == ["ServiceAccount", "Role", "RoleBinding"]
    assert {m["metadata"]["name"] for m in (account, role, binding)} == {"fh-a-agent"}
    assert role["rules"] == [{"apiGroups": ["tickwire.dev"], "resources": ["feedhandlers/status"],
                              "resourceNames": ["fh-a"], "verbs": ["get", "patch"]}]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "fh-a-agent", "namespace": "feeds"}]
    for manifest in (account, role, binding):
        owner = manifest["metadata"]["ownerReferences"][0]
        assert (owner["uid"], owner["controller"], "blockOwnerDeletion" in owner) == ("uid-fh-a", True, False)
        kubernetes_validate.validate(manifest, kubernetes_validate.latest_version(), strict=True)


def test_a_pod_running_its_feedhandlers_allocation_is_counted_once():
    from tickwire_operator.pod import AgentSettings
    from tickwire_operator.reconcile import Holding, Reconciler

    nodes = {"node-1": read_node(node("node-1", cores="0-7", hugepages="16"))}
    mine = Allocation(node="node-1", interface="eth1", queue=0, cores=(0,), hugepages=8)
    reconciler = Reconciler(kube=None, settings=AgentSettings())
    placements = {"uid-a": Holding(mine, "uid-a", "2026-01-01T00:00:00Z", "feeds/fh-a")}
    pods = {"pod-1": PodView(name="fh-a-agent", owner_uid="uid-a", plan_hash="h", plan_generation=1, allocation=mine,
                    deleting=False, node="node-1")}
    held = [h.allocation for h in reconciler.holdings(placements, pods).values()]
    assert place(validated_spec(feedhandler("fh-b", hugepages=8)), nodes, held).hugepages == 8
    # A Pod still running an older plan holds its resources as well, until it is gone.
    older = PodView(name="fh-a-agent", owner_uid="uid-a", plan_hash="old", plan_generation=1,
                    allocation=Allocation(node="node-1", interface="eth1", queue=1, cores=(1,), hugepages=8),
                    deleting=True, node="node-1")
    held = [h.allocation for h in reconciler.holdings(placements, {"pod-0": older}).values()]
    with pytest.raises(NoFit, match="needs 8 hugepages"):
        place(validated_spec(feedhandler("fh-b", hugepages=8)), nodes, held)


# ---- concurrent reconciles ----

class SlowApi:
    """The few calls the Reconciler makes, on dicts, each yielding to the event loop for a random
    moment first (as the real ones, run in threads, do), so that reconciles interleave at every
    call. What kopf gives the handlers (the indexes) is passed in, and left stale on purpose."""

    def __init__(self, bodies, seed):
        import random
        self.bodies = {b["metadata"]["name"]: b for b in bodies}
        self.pods: dict[str, dict] = {}
        self.random = random.Random(seed)

    async def _pause(self):
        import asyncio
        await asyncio.sleep(self.random.random() / 1000)

    async def update_annotation(self, namespace, name, key, change):
        await self._pause()
        body = self.bodies[name]
        wanted, value = change(body)
        if wanted:
            body.setdefault("metadata", {}).setdefault("annotations", {})[key] = value
        return json.loads(json.dumps(body))

    async def update_status(self, namespace, name, change):
        await self._pause()
        body = self.bodies[name]
        patch = change(body)
        if patch:
            body.setdefault("status", {}).update(patch)
        return json.loads(json.dumps(body))

    async def get_pod(self, namespace, name):
        await self._pause()
        return self.pods.get(name)

    async def apply(self, manifests):
        await self._pause()

    async def create_pod(self, pod):
        await self._pause()
        self.pods[pod["metadata"]["name"]] = pod
        return True


@pytest.mark.parametrize("seed", range(5))
def test_feedhandlers_reconciled_at_the_same_instant_never_win_the_same_resource(seed):
    """kopf runs the handlers of different FeedHandlers concurrently, each with the indexes as they
    were when it started: here all eight see none of the others' ledgers, before and after."""
    import asyncio

    from tickwire_operator.reconcile import Reconciler

    bodies = [feedhandler(f"fh-{i}") for i in range(8)]
    api = SlowApi(bodies, seed)
    reconciler = Reconciler(kube=api, settings=AgentSettings(metrics_ports=PortRange.parse("9470-9473")))
    inventories = {n: read_node(node(n, cores="2-5", nics="eth1=1-4")) for n in ("n1", "n2")}

    async def burst(trigger):
        return await asyncio.gather(*(reconciler.reconcile(body, inventories=inventories, placements={}, pods={},
                                                           trigger=trigger) for body in bodies))

    assert asyncio.run(burst("create")) == ["placed"] * 8
    ledgers = [read_ledger(api.bodies[f"fh-{i}"]) for i in range(8)]
    assert len({(a.node, c) for a in ledgers for c in a.cores}) == 8
    assert len({(a.node, a.interface, a.queue) for a in ledgers}) == 8
    assert len({(a.node, a.metrics_port) for a in ledgers}) == 8
    plans = [(pod["spec"]["nodeName"], json.loads(pod["metadata"]["annotations"]["tickwire.dev/plan"]))
             for pod in api.pods.values()]
    assert len({(n, p["queue"]) for n, p in plans}) == len({(n, p["metrics"]["port"]) for n, p in plans}) == \
        len({(n, c) for n, p in plans for c in p["cores"]}) == 8
    # Again with the same stale view (the watch has not caught up): nothing moves.
    asyncio.run(burst("resync"))
    assert [read_ledger(api.bodies[f"fh-{i}"]) for i in range(8)] == ledgers
