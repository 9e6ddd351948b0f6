"""Choosing a node, NIC queue, cores, hugepages and a metrics port for a FeedHandler, never giving
one out twice.

Pure functions over plain data: the caller passes the node inventories and every allocation
already held, gets back an Allocation or NoFit with the reason per node. The truth lives in the
API server (each FeedHandler's ledger annotation, see ledger.py, and each agent Pod's plan while
it runs); the `Ledger` only remembers the decisions this process made that the watch has not
shown back yet.

An allocation has the cores the operator planned (`cores`, in the plan) and, once the agent has
reported them, the CPUs it actually runs on (`running_cores` for the engine, `housekeeping_cores`
for its own threads): under the kubelet's static CPU manager the kubelet, not the operator, picks
a Guaranteed Pod's CPUs. A core is free only when nobody plans it and nobody runs on it, and each
FeedHandler counts cores + 1 CPUs against the node's allocatable CPUs (the Pod asks for that).

Agents run on the host network, so each needs a TCP port of its node for /metrics: the operator
gives one per node from its range (`PortRange`, the operator's settings), or the one the spec
names, and records it with the rest. Many feeds share one NIC, each on its own queue.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .inventory import NodeInventory, format_cpuset


@dataclass(frozen=True)
class PortRange:
    """The host ports the operator may give agents for /metrics, `first`..`last` inclusive."""
    first: int
    last: int

    def __post_init__(self) -> None:
        if not 1024 <= self.first <= self.last <= 65535:
            raise ValueError(f"metrics port range {self.first}-{self.last}: needs 1024 <= first <= last <= 65535")

    @classmethod
    def parse(cls, text: str) -> "PortRange":
        """"9470-9569" or "9470" -> PortRange; ValueError naming what is wrong."""
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", str(text))
        if not match:
            raise ValueError(f"metrics port range {text!r} is not a port or a range like 9470-9569")
        return cls(int(match[1]), int(match[2] or match[1]))

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.first <= port <= self.last

    def __iter__(self):
        return iter(range(self.first, self.last + 1))

    def __len__(self) -> int:
        return self.last - self.first + 1

    def __str__(self) -> str:
        return f"{self.first}-{self.last}" if self.last != self.first else str(self.first)


DEFAULT_METRICS_PORTS = PortRange(9470, 9569)


@dataclass(frozen=True)
class Allocation:
    node: str
    interface: str
    queue: int
    cores: tuple[int, ...]
    hugepages: int = 0
    metrics_port: int | None = None  # the agent's /metrics on the node's network; None: not given yet
    running_cores: tuple[int, ...] = ()  # what the agent reported it runs the engine on
    housekeeping_cores: tuple[int, ...] = ()  # ... and its own threads on

    @property
    def cpus(self) -> int:
        """CPUs the agent Pod asks for: the engine's cores and one for housekeeping."""
        return len(self.cores) + 1

    @property
    def held_cores(self) -> frozenset[int]:
        """Cores nobody else may plan: the planned ones and every CPU the agent runs on."""
        return frozenset(self.cores) | frozenset(self.running_cores) | frozenset(self.housekeeping_cores)

    @property
    def effective_cores(self) -> tuple[int, ...]:
        """The engine's cores as running when the agent has said so, else as planned."""
        return self.running_cores or self.cores

    def overlaps(self, other: "Allocation") -> bool:
        """Same node and the same queue or a planned core in common (what placement decides)."""
        if self.node != other.node:
            return False
        same_queue = self.interface == other.interface and self.queue == other.queue
        return same_queue or bool(set(self.cores) & set(other.cores))

    def port_clash(self, other: "Allocation") -> bool:
        """Same node and the same metrics port (two agents cannot bind one port of a node)."""
        return self.node == other.node and self.metrics_port is not None and self.metrics_port == other.metrics_port

    def running_clash(self, other: "Allocation") -> frozenset[int]:
        """CPUs both agents reported they run on (never planned that way: the kubelet's doing)."""
        if self.node != other.node or not self.running_cores or not other.running_cores:
            return frozenset()
        mine = set(self.running_cores) | set(self.housekeeping_cores)
        return frozenset(mine & (set(other.running_cores) | set(other.housekeeping_cores)))

    def planned(self) -> "Allocation":
        """The same allocation without what the agent reported (as a plan names it)."""
        return replace(self, running_cores=(), housekeeping_cores=())

    def as_status(self) -> dict:
        shown = {"node": self.node, "interface": self.interface, "queue": self.queue,
                 "cores": list(self.cores), "coreList": format_cpuset(self.effective_cores),
                 "hugepages": self.hugepages}
        if self.metrics_port is not None:
            shown["metricsPort"] = self.metrics_port
        if self.running_cores:
            shown["runningCores"] = list(self.running_cores)
            shown["housekeepingCores"] = list(self.housekeeping_cores)
        return shown

    @classmethod
    def from_status(cls, placement: Mapping[str, Any] | None) -> "Allocation | None":
        """A ledger record, status.placement or a plan -> Allocation; None when absent or incomplete."""
        if not placement:
            return None
        try:
            return cls(node=str(placement["node"]), interface=str(placement["interface"]),
                       queue=int(placement["queue"]), cores=tuple(int(c) for c in placement["cores"]),
                       hugepages=int(placement.get("hugepages") or 0),
                       metrics_port=int(placement["metricsPort"]) if placement.get("metricsPort") is not None else None,
                       running_cores=tuple(int(c) for c in placement.get("runningCores") or ()),
                       housekeeping_cores=tuple(int(c) for c in placement.get("housekeepingCores") or ()))
        except (KeyError, TypeError, ValueError, AttributeError):
            return None


class NoFit(Exception):
    """Nothing fits; `reasons` says, node by node, what was missing. `condition_reason` is the
    Placed condition's reason: `NoMetricsPort` when only the metrics ports ran out, else `NoFit`."""

    def __init__(self, reasons: list[str], ports_only: bool = False):
        self.reasons = reasons
        self.condition_reason = "NoMetricsPort" if ports_only and reasons else "NoFit"
        super().__init__("; ".join(reasons) if reasons else "no node is offered for feeds")


class _PortMisfit(str):
    """A node's reason that is about metrics ports only (the rest would fit)."""


@dataclass
class Ledger:
    """The decisions this process made, by FeedHandler uid. They outrank a stale observation of
    the same FeedHandler (the watch shows our own status write a moment later) until released."""
    claimed: dict[str, Allocation] = field(default_factory=dict)

    def claim(self, owner: str, allocation: Allocation) -> None:
        self.claimed[owner] = allocation

    def release(self, owner: str) -> None:
        self.claimed.pop(owner, None)


@dataclass
class NodeUse:
    cores: set[int] = field(default_factory=set)
    queues: set[tuple[str, int]] = field(default_factory=set)
    hugepages: int = 0
    cpus: int = 0
    ports: set[int] = field(default_factory=set)


def used_on(node: str, holdings: Iterable[Allocation]) -> NodeUse:
    """What the holdings take on `node` (a FeedHandler whose old Pod still runs counts twice,
    on purpose: the old Pod holds its resources until it is gone)."""
    use = NodeUse()
    for allocation in holdings:
        if allocation.node == node:
            use.cores.update(allocation.held_cores)
            use.queues.add((allocation.interface, allocation.queue))
            use.hugepages += allocation.hugepages
            use.cpus += allocation.cpus
            if allocation.metrics_port is not None:
                use.ports.add(allocation.metrics_port)
    return use


def candidate_nodes(spec: Mapping[str, Any], inventories: Mapping[str, NodeInventory]) -> list[NodeInventory]:
    if spec.get("nodeName"):
        node = inventories.get(spec["nodeName"])
        return [node] if node else []
    selector = spec.get("nodeSelector")
    if selector:
        return sorted((n for n in inventories.values()
                       if all(n.labels.get(k) == v for k, v in selector.items())), key=lambda n: n.name)
    return sorted((n for n in inventories.values() if n.is_feed_node), key=lambda n: n.name)


def free_metrics_port(node: str, spec: Mapping[str, Any], holdings: Iterable[Allocation],
                      ports: PortRange, prefer: int | None = None) -> int | str:
    """The agent's metrics port on `node`: spec.metricsPort if it names one and nobody on the node
    holds it, else `prefer` (the port the agent already binds) if free and in the range, else the
    lowest free port of the range; or the reason there is none."""
    used = used_on(node, holdings).ports
    wanted = spec.get("metricsPort")
    if wanted is not None:
        return wanted if wanted not in used else \
            _PortMisfit(f"{node}: metrics port {wanted} (spec.metricsPort) is taken by another feed")
    if prefer in ports and prefer not in used:
        return prefer
    free = next((port for port in ports if port not in used), None)
    if free is None:
        return _PortMisfit(f"{node}: no free metrics port in {ports} (the operator's agent metrics port range: "
                           f"all {len(ports)} are held by feeds on the node)")
    return free


def metrics_port_fits(allocation: Allocation, spec: Mapping[str, Any], ports: PortRange) -> bool:
    """Whether the allocation's port is still the one to keep: the spec's if it names one, else
    one of the range (a narrowed range moves agents off the ports it no longer has)."""
    wanted = spec.get("metricsPort")
    if wanted is not None:
        return allocation.metrics_port == wanted
    return allocation.metrics_port in ports


def _fit_on(node: NodeInventory, spec: Mapping[str, Any], holdings: list[Allocation],
            ports: PortRange) -> Allocation | str:
    """An Allocation on this node, or the reason it does not fit."""
    unusable = node.unusable_because()
    if unusable:
        return f"{node.name}: {unusable}"
    use = used_on(node.name, holdings)
    wanted_cores = int(spec.get("cores", 1))
    free_cores = sorted(node.cores - use.cores)
    if len(free_cores) < wanted_cores:
        offered = format_cpuset(node.cores) or "none"
        return f"{node.name}: needs {wanted_cores} feed cores, {len(free_cores)} free (feed cores: {offered})"
    if node.cpus is not None and use.cpus + wanted_cores + 1 > node.cpus:
        return (f"{node.name}: needs {wanted_cores + 1} CPUs ({wanted_cores} cores + 1 housekeeping), "
                f"{max(node.cpus - use.cpus, 0)} of {node.cpus} allocatable left for feeds")
    wanted_pages = int(spec.get("hugepages", 0))
    if wanted_pages > node.hugepages - use.hugepages:
        return (f"{node.name}: needs {wanted_pages} hugepages (2 MiB), "
                f"{node.hugepages - use.hugepages} free of {node.hugepages}")
    queue = _free_queue(node, spec, use.queues)
    if isinstance(queue, str):
        return queue
    # Last, so that a node short of ports only says so (NoFit.condition_reason).
    port = free_metrics_port(node.name, spec, holdings, ports)
    if isinstance(port, str):
        return port
    return Allocation(node=node.name, interface=queue[0], queue=queue[1], cores=tuple(free_cores[:wanted_cores]),
                      hugepages=wanted_pages, metrics_port=port)


def _free_queue(node: NodeInventory, spec: Mapping[str, Any], used_queues: set[tuple[str, int]]
                ) -> tuple[str, int] | str:
    """(interface, queue) for the spec on this node, or the reason there is none."""
    if spec.get("interface"):
        if spec["interface"] not in node.nics:
            offered = ", ".join(sorted(node.nics)) or "none"
            return f"{node.name}: has no feed NIC {spec['interface']} (feed NICs: {offered})"
        interfaces = [spec["interface"]]
    else:
        interfaces = sorted(node.nics)
        if not interfaces:
            return f"{node.name}: offers no feed NIC (annotation tickwire.dev/feed-nics)"
    for interface in interfaces:
        free = sorted(q for q in node.nics[interface] if (interface, q) not in used_queues)
        if "queue" in spec:
            if spec["queue"] not in node.nics[interface]:
                return (f"{node.name}: queue {spec['queue']} of {interface} is not set aside for feeds "
                        f"(feed queues: {format_cpuset(node.nics[interface])})")
            if spec["queue"] not in free:
                return f"{node.name}: queue {spec['queue']} of {interface} is taken"
            free = [spec["queue"]]
        if free:
            return interface, free[0]
    return f"{node.name}: no free feed queue on {', '.join(interfaces)}"


def place(spec: Mapping[str, Any], inventories: Mapping[str, NodeInventory],
          holdings: Iterable[Allocation], ports: PortRange = DEFAULT_METRICS_PORTS) -> Allocation:
    """First fit over the candidate nodes in name order (packing keeps whole nodes free)."""
    held = list(holdings)
    candidates = candidate_nodes(spec, inventories)
    if not candidates:
        if spec.get("nodeName"):
            raise NoFit([f"node {spec['nodeName']} does not exist"])
        if spec.get("nodeSelector"):
            raise NoFit([f"no node has labels {dict(spec['nodeSelector'])}"])
        raise NoFit(["no node is labelled tickwire.dev/feed-node=true"])
    reasons = []
    for node in candidates:
        fit = _fit_on(node, spec, held, ports)
        if isinstance(fit, Allocation):
            return fit
        reasons.append(fit)
    raise NoFit(reasons, ports_only=all(isinstance(reason, _PortMisfit) for reason in reasons))


def still_fits(allocation: Allocation, spec: Mapping[str, Any],
               inventories: Mapping[str, NodeInventory]) -> bool:
    """Whether an existing allocation still satisfies the (maybe changed) spec and node (the
    metrics port aside: metrics_port_fits, so that a new port alone never moves a feed)."""
    node = inventories.get(allocation.node)
    if node is None or node.problems:
        return False
    if node not in candidate_nodes(spec, inventories):
        return False
    return (spec.get("interface", allocation.interface) == allocation.interface
            and spec.get("queue", allocation.queue) == allocation.queue
            and allocation.interface in node.nics and allocation.queue in node.nics[allocation.interface]
            and set(allocation.cores) <= node.cores
            and len(allocation.cores) == int(spec.get("cores", 1))
            and allocation.hugepages == int(spec.get("hugepages", 0)))
