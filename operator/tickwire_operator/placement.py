"""Choosing a node, NIC queue, cores and hugepages for a FeedHandler, never giving one out twice.

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
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .inventory import NodeInventory, format_cpuset


@dataclass(frozen=True)
class Allocation:
    node: str
    interface: str
    queue: int
    cores: tuple[int, ...]
    hugepages: int = 0
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
                       running_cores=tuple(int(c) for c in placement.get("runningCores") or ()),
                       housekeeping_cores=tuple(int(c) for c in placement.get("housekeepingCores") or ()))
        except (KeyError, TypeError, ValueError, AttributeError):
            return None


class NoFit(Exception):
    """Nothing fits; `reasons` says, node by node, what was missing."""

    def __init__(self, reasons: list[str]):
        self.reasons = reasons
        super().__init__("; ".join(reasons) if reasons else "no node is offered for feeds")


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


def _fit_on(node: NodeInventory, spec: Mapping[str, Any], holdings: list[Allocation]) -> Allocation | str:
    """An Allocation on this node, or the reason it does not fit."""
    unusable = node.unusable_because()
    if unusable:
        return f"{node.name}: {unusable}"
    use = used_on(node.name, holdings)
    used_queues = use.queues
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
            return Allocation(node=node.name, interface=interface, queue=free[0],
                              cores=tuple(free_cores[:wanted_cores]), hugepages=wanted_pages)
    return f"{node.name}: no free feed queue on {', '.join(interfaces)}"


def place(spec: Mapping[str, Any], inventories: Mapping[str, NodeInventory],
          holdings: Iterable[Allocation]) -> Allocation:
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
        fit = _fit_on(node, spec, held)
        if isinstance(fit, Allocation):
            return fit
        reasons.append(fit)
    raise NoFit(reasons)


def still_fits(allocation: Allocation, spec: Mapping[str, Any],
               inventories: Mapping[str, NodeInventory]) -> bool:
    """Whether an existing allocation still satisfies the (maybe changed) spec and node."""
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
