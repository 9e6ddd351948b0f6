"""Choosing a node, NIC queue, cores and hugepages for a FeedHandler, never giving one out twice.

Pure functions over plain data: the caller passes the node inventories and every allocation
already held, gets back an Allocation or NoFit with the reason per node. The truth lives in the
API server (each FeedHandler's status.placement, and each agent Pod's plan while it runs); the
`Ledger` only remembers the decisions this process made that the watch has not shown back yet.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .inventory import NodeInventory, format_cpuset


@dataclass(frozen=True)
class Allocation:
    node: str
    interface: str
    queue: int
    cores: tuple[int, ...]
    hugepages: int = 0

    def overlaps(self, other: "Allocation") -> bool:
        if self.node != other.node:
            return False
        same_queue = self.interface == other.interface and self.queue == other.queue
        return same_queue or bool(set(self.cores) & set(other.cores))

    def as_status(self) -> dict:
        return {"node": self.node, "interface": self.interface, "queue": self.queue,
                "cores": list(self.cores), "coreList": format_cpuset(self.cores),
                "hugepages": self.hugepages}

    @classmethod
    def from_status(cls, placement: Mapping[str, Any] | None) -> "Allocation | None":
        """status.placement (or a plan) -> Allocation; None when absent or incomplete."""
        if not placement:
            return None
        try:
            return cls(node=str(placement["node"]), interface=str(placement["interface"]),
                       queue=int(placement["queue"]), cores=tuple(int(c) for c in placement["cores"]),
                       hugepages=int(placement.get("hugepages") or 0))
        except (KeyError, TypeError, ValueError):
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


def used_on(node: str, holdings: Iterable[Allocation]) -> tuple[set[int], set[tuple[str, int]], int]:
    cores: set[int] = set()
    queues: set[tuple[str, int]] = set()
    hugepages = 0
    for allocation in holdings:
        if allocation.node == node:
            cores.update(allocation.cores)
            queues.add((allocation.interface, allocation.queue))
            hugepages += allocation.hugepages
    return cores, queues, hugepages


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
    used_cores, used_queues, used_pages = used_on(node.name, holdings)
    wanted_cores = int(spec.get("cores", 1))
    free_cores = sorted(node.cores - used_cores)
    if len(free_cores) < wanted_cores:
        offered = format_cpuset(node.cores) or "none"
        return f"{node.name}: needs {wanted_cores} feed cores, {len(free_cores)} free (feed cores: {offered})"
    wanted_pages = int(spec.get("hugepages", 0))
    if wanted_pages > node.hugepages - used_pages:
        return (f"{node.name}: needs {wanted_pages} hugepages (2 MiB), "
                f"{node.hugepages - used_pages} free of {node.hugepages}")
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
