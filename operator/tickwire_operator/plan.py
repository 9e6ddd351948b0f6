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


def build_plan(body: Mapping[str, Any], spec: Mapping[str, Any], allocation: Allocation) -> dict:
    meta = body["metadata"]
    plan: dict[str, Any] = {
        "apiVersion": PLAN_VERSION,
        "feedHandler": {"namespace": meta["namespace"], "name": meta["name"], "uid": meta.get("uid", ""),
                        "generation": int(meta.get("generation") or 1)},
        "feed": {"name": meta["name"], "protocol": spec["protocol"]},
        "interface": allocation.interface,
        "queue": allocation.queue,
        "lines": [{"name": line["name"], "group": line["group"], "port": line["port"],
                   "source": line.get("source")} for line in spec["lines"]],
        "cores": list(allocation.cores),
        "hugepages": {"count": allocation.hugepages, "numaNode": None},
        "xdpMode": spec["xdpMode"],
        "zeroCopy": spec["zeroCopy"],
        "staleAfterSeconds": spec["staleAfterSeconds"],
        "exchangeTimezone": spec.get("exchangeTimezone"),
        "metrics": {"address": "0.0.0.0", "port": spec["metricsPort"]},
        "statusIntervalSeconds": spec["statusIntervalSeconds"],
    }
    if "busyPoll" in spec:
        plan["busyPoll"] = dict(spec["busyPoll"])
    if "rerequest" in spec:
        plan["rerequest"] = dict(spec["rerequest"])
    if "latencySLO" in spec:
        plan["latencySLO"] = {"p99Micros": spec["latencySLO"]["p99Micros"]}
    return plan


def plan_hash(plan: Mapping[str, Any], *extra: str) -> str:
    """What decides whether a running agent Pod still matches: the plan without the generation
    (a spec edit that changes nothing the agent sees keeps the Pod), plus pod-level settings."""
    essence = json.loads(json.dumps(plan))
    essence.get("feedHandler", {}).pop("generation", None)
    text = json.dumps([essence, *extra], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
