"""The plan: everything the node agent needs to run one FeedHandler (plan-v1, see
agent/tickwire_agent/plan.schema.json). A pure function of the validated spec and the placement.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from .placement import Allocation

PLAN_VERSION = "tickwire.dev/plan-v1"
# Where engines publish their books on a node (contract C7): <root>/<namespace>/<name>/{events,snapshot}.
# The namespace level keeps two FeedHandlers of the same name in different namespaces, placed on
# one node, from replacing each other's stream.
STREAM_ROOT = "/run/tickwire/streams"


def _line(line: Mapping[str, Any]) -> dict:
    planned = {"name": line["name"], "group": line["group"], "port": line["port"], "source": line.get("source")}
    if line.get("vlan") is not None:
        # Only when set: an untagged line's plan (and so its hash, and its running Pod) stays as it was.
        planned["vlan"] = line["vlan"]
    return planned


def build_plan(body: Mapping[str, Any], spec: Mapping[str, Any], allocation: Allocation,
               stream_root: str = STREAM_ROOT) -> dict:
    if allocation.metrics_port is None:
        raise ValueError(f"allocation {allocation} has no metrics port: placement gives one (never a fixed port)")
    meta = body["metadata"]
    plan: dict[str, Any] = {
        "apiVersion": PLAN_VERSION,
        "feedHandler": {"namespace": meta["namespace"], "name": meta["name"], "uid": meta.get("uid", ""),
                        "generation": int(meta.get("generation") or 1)},
        "feed": {"name": meta["name"], "protocol": spec["protocol"]},
        "interface": allocation.interface,
        "queue": allocation.queue,
        "lines": [_line(line) for line in spec["lines"]],
        "cores": list(allocation.cores),
        "hugepages": {"count": allocation.hugepages, "numaNode": None},
        "xdpMode": spec["xdpMode"],
        "zeroCopy": spec["zeroCopy"],
        "staleAfterSeconds": spec["staleAfterSeconds"],
        "exchangeTimezone": spec.get("exchangeTimezone"),
        # The node's port the operator gave this agent (placement.py): agents share the host network.
        "metrics": {"address": "0.0.0.0", "port": allocation.metrics_port},
        "flowSteering": spec.get("flowSteering", "auto"),
        "statusIntervalSeconds": spec["statusIntervalSeconds"],
    }
    if "busyPoll" in spec:
        plan["busyPoll"] = dict(spec["busyPoll"])
    if "rerequest" in spec:
        plan["rerequest"] = dict(spec["rerequest"])
    if "latencySLO" in spec:
        plan["latencySLO"] = {"p99Micros": spec["latencySLO"]["p99Micros"]}
    books = spec.get("books") or {}
    if books.get("enabled"):
        # Only when on: a plan without books is the plan of before, so an operator upgrade does
        # not replace every running agent Pod (the plan hash decides that).
        plan["books"] = {"enabled": True, "depth": books["depth"], "symbols": list(books.get("symbols") or []),
                         "maxOrders": books["maxOrders"], "maxInstruments": books["maxInstruments"]}
        plan["streamRoot"] = stream_directory_root(stream_root, meta["namespace"])
    return plan


def stream_directory_root(stream_root: str, namespace: str) -> str:
    """The engine's stream_root for a FeedHandler of this namespace: its stream is <that>/<name>/."""
    return f"{stream_root.rstrip('/')}/{namespace}"


def plan_hash(plan: Mapping[str, Any], *extra: str) -> str:
    """What decides whether a running agent Pod still matches: the plan without the generation
    (a spec edit that changes nothing the agent sees keeps the Pod), plus pod-level settings."""
    essence = json.loads(json.dumps(plan))
    essence.get("feedHandler", {}).pop("generation", None)
    text = json.dumps([essence, *extra], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
