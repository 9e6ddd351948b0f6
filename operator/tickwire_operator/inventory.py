"""What a Node offers to feed handlers, read from what the cluster admin publishes on it.

    labels:
      tickwire.dev/feed-node: "true"            the node takes feeds when a FeedHandler names no
                                                node and no selector
    annotations:
      tickwire.dev/feed-cores: "2-5,8"          CPUs set aside for feed engines (cpuset list form);
                                                keep them out of the kubelet's shared pool
      tickwire.dev/feed-nics: "ens1f0=1-7;ens1f1=0-3"
                                                NICs that carry feeds and, for each, the RX queues
                                                feeds may take (queue 0 often serves the host)
      tickwire.dev/feed-hugepages: "512"        2 MiB hugepages set aside for UMEMs; when absent,
                                                the node's allocatable hugepages-2Mi is used

The node's allocatable `cpu` (when it publishes one) bounds how many agent Pods fit: each asks
for its cores + 1 CPUs. The Ready condition's lastTransitionTime says since when a NotReady node
has been gone (the operator moves its FeedHandlers after a grace period).

A node whose annotations cannot be read offers nothing, and `problems` says why (placement
reports it), so a typo never turns into a wrong allocation.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

FEED_NODE_LABEL = "tickwire.dev/feed-node"
CORES_ANNOTATION = "tickwire.dev/feed-cores"
NICS_ANNOTATION = "tickwire.dev/feed-nics"
HUGEPAGES_ANNOTATION = "tickwire.dev/feed-hugepages"

_IFNAME = re.compile(r"^[a-zA-Z0-9][-a-zA-Z0-9_.@]{0,14}$")
_MEBI = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "": 1}


def parse_cpuset(text: str, what: str = "list") -> frozenset[int]:
    """"2-5,8" -> {2, 3, 4, 5, 8}; ValueError naming the bad part."""
    result: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not match:
            raise ValueError(f"{what}: {part!r} is not a number or a range like 2-5")
        low, high = int(match[1]), int(match[2] or match[1])
        if high < low:
            raise ValueError(f"{what}: range {part!r} runs backwards")
        result.update(range(low, high + 1))
    return frozenset(result)


def format_cpuset(values: Iterable[int]) -> str:
    """{2, 3, 4, 8} -> "2-4,8"."""
    ordered = sorted(set(values))
    runs: list[str] = []
    start = prev = None
    for value in ordered + [None]:
        if prev is not None and value == prev + 1:
            prev = value
            continue
        if start is not None:
            runs.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = value
    return ",".join(runs)


def parse_nics(text: str) -> dict[str, frozenset[int]]:
    """"ens1f0=1-7;ens1f1=0-3" -> {"ens1f0": {1..7}, "ens1f1": {0..3}}."""
    nics: dict[str, frozenset[int]] = {}
    for entry in (e.strip() for e in text.split(";")):
        if not entry:
            continue
        name, sep, queues = entry.partition("=")
        name = name.strip()
        if not sep or not _IFNAME.match(name):
            raise ValueError(f"{NICS_ANNOTATION}: {entry!r} is not NAME=QUEUES (e.g. ens1f0=0-7)")
        if name in nics:
            raise ValueError(f"{NICS_ANNOTATION}: NIC {name} is listed twice")
        nics[name] = parse_cpuset(queues, f"{NICS_ANNOTATION} queues of {name}")
        if not nics[name]:
            raise ValueError(f"{NICS_ANNOTATION}: NIC {name} lists no queues")
    return nics


def _hugepages_from_allocatable(value: str) -> int:
    """Node allocatable "hugepages-2Mi" ("1Gi", "512Mi", bytes) -> number of 2 MiB pages."""
    match = re.fullmatch(r"(\d+)([KMGT]i)?", str(value).strip())
    if not match:
        raise ValueError(f"allocatable hugepages-2Mi {value!r} is not a quantity like 1Gi")
    return int(match[1]) * _MEBI[match[2] or ""] // (2 * 2**20)


@dataclass(frozen=True)
class NodeInventory:
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    cores: frozenset[int] = frozenset()
    nics: Mapping[str, frozenset[int]] = field(default_factory=dict)
    hugepages: int = 0
    schedulable: bool = True
    problems: tuple[str, ...] = ()
    cpus: int | None = None  # allocatable CPUs, whole ones; None: the node does not say
    not_ready_since: str | None = None  # RFC 3339, when Ready turned False/Unknown; None: Ready

    @property
    def is_feed_node(self) -> bool:
        return self.labels.get(FEED_NODE_LABEL) == "true"

    def unusable_because(self) -> str | None:
        if self.problems:
            return "; ".join(self.problems)
        if not self.schedulable:
            return "cordoned or not Ready"
        return None


def _whole_cpus(value: Any) -> int:
    """Allocatable cpu ("8", "7500m") -> whole CPUs (exclusive cores are whole CPUs)."""
    text = str(value).strip()
    match = re.fullmatch(r"(\d+)(m?)", text)
    if not match:
        raise ValueError(f"allocatable cpu {text!r} is not a quantity like 8 or 7500m")
    return int(match[1]) // 1000 if match[2] else int(match[1])


def read_node(node: Mapping[str, Any]) -> NodeInventory:
    """A Node object (dict) -> its NodeInventory; never raises for a bad annotation."""
    meta = node.get("metadata", {})
    annotations = meta.get("annotations") or {}
    problems: list[str] = []
    cores: frozenset[int] = frozenset()
    nics: dict[str, frozenset[int]] = {}
    hugepages = 0
    try:
        cores = parse_cpuset(annotations.get(CORES_ANNOTATION, ""), CORES_ANNOTATION)
    except ValueError as exc:
        problems.append(str(exc))
    try:
        nics = parse_nics(annotations.get(NICS_ANNOTATION, ""))
    except ValueError as exc:
        problems.append(str(exc))
    try:
        if HUGEPAGES_ANNOTATION in annotations:
            text = str(annotations[HUGEPAGES_ANNOTATION]).strip()
            if not text.isdigit():
                raise ValueError(f"{HUGEPAGES_ANNOTATION}: {text!r} is not a number of 2 MiB pages")
            hugepages = int(text)
        else:
            allocatable = (node.get("status") or {}).get("allocatable") or {}
            hugepages = _hugepages_from_allocatable(allocatable.get("hugepages-2Mi", "0"))
    except ValueError as exc:
        problems.append(str(exc))
    cpus = None
    allocatable_cpu = ((node.get("status") or {}).get("allocatable") or {}).get("cpu")
    if allocatable_cpu is not None:
        try:
            cpus = _whole_cpus(allocatable_cpu)
        except ValueError as exc:
            problems.append(str(exc))
    ready_condition = next((c for c in (node.get("status") or {}).get("conditions") or []
                            if c.get("type") == "Ready"), None)
    ready = (ready_condition or {}).get("status", "True")  # a node that reports nothing is not held back
    not_ready_since = None
    if ready != "True":
        not_ready_since = (ready_condition or {}).get("lastTransitionTime") or "1970-01-01T00:00:00Z"
    return NodeInventory(
        name=meta["name"], labels=dict(meta.get("labels") or {}), cores=cores, nics=nics,
        hugepages=hugepages, schedulable=not (node.get("spec") or {}).get("unschedulable") and ready == "True",
        problems=tuple(problems), cpus=cpus, not_ready_since=not_ready_since)
