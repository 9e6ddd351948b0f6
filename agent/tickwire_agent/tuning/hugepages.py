"""Hugepages for the engine's UMEM: reserved on the NIC's NUMA node, given back at teardown.

The pool is counted in 2 MiB pages and shared by every agent on the node, so it is resized only
under the node lock with an exact account of who holds how many (tuning/shared.py). We read back
what the kernel granted (it grants fewer when memory is fragmented), and when the engine cannot
have them all we give back what we took and run it on normal pages: a UMEM half on hugepages is
not a thing, and pages held for nothing hurt other tenants.

The pool is not watched for drift: it moves whenever a neighbour comes or goes, and pages in use
cannot be taken from the engine anyway (the kernel keeps them as surplus until they are freed).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

from ..journal import Journal
from .settings import HugepagesSetting
from .shared import HeldPages, NodeState

PAGE_DIR = "hugepages/hugepages-2048kB"
FREE_WAIT_S = 2.0


@dataclass
class HugepagesResult:
    granted: bool                       # the engine should back its UMEM with hugepages
    message: str


def numa_nodes(root: str = "/") -> list[int]:
    base = os.path.join(root, "sys/devices/system/node")
    try:
        names = os.listdir(base)
    except FileNotFoundError:
        return []
    return sorted(int(n[4:]) for n in names if n.startswith("node") and n[4:].isdigit())


def nic_numa_node(ifname: str, root: str = "/") -> int | None:
    """The NIC's node, or None for virtual devices (veth has no `device`) and single-node hosts."""
    try:
        with open(os.path.join(root, f"sys/class/net/{ifname}/device/numa_node"), encoding="ascii") as f:
            node = int(f.read())
    except (FileNotFoundError, ValueError):
        return None
    return node if node >= 0 else None


def pool_dir(numa_node: int | None, root: str = "/") -> str:
    """Per-node pool on a multi-node host, the global pool otherwise."""
    if numa_node is not None and len(numa_nodes(root)) > 1:
        return os.path.join(root, f"sys/devices/system/node/node{numa_node}", PAGE_DIR)
    return os.path.join(root, "sys/kernel/mm", PAGE_DIR)


def reserve(count: int, numa_node: int | None, journal: Journal, node: NodeState, root: str = "/",
            free_wait_s: float = FREE_WAIT_S) -> HugepagesResult:
    """Grow the pool by `count` pages for this agent, under the node lock, in the node account.

    Every agent adds its own pages on top of the pool as it finds it (free pages already there
    belong to whoever made them: another agent between its reservation and its engine's start,
    a Pod the kubelet gave them to) and takes exactly those back at its end. The journal holds a
    record of the holding, written first, whose restore releases it from the account."""
    if count == 0:
        return HugepagesResult(False, "the plan asks for no hugepages: UMEM on normal pages")
    where = pool_dir(numa_node, root)
    node_text = f"NUMA node {numa_node}" if numa_node is not None and len(numa_nodes(root)) > 1 else "the host"
    pool = HugepagesSetting(os.path.join(where, "nr_hugepages"), label="hugepages")
    entry = journal.record(HeldPages(node.path, node.holder.id, pool.path), 0, count)
    try:
        with node.locked() as account:
            before, after = account.hold_pages(pool, node.holder, count)
    except OSError as e:
        journal.mark_restored(entry)
        return HugepagesResult(False, f"cannot reserve hugepages on {node_text} ({e.strerror or e}): "
                                      "UMEM on normal pages")
    granted = max(0, after - before)
    if granted >= count and _free_within(os.path.join(where, "free_hugepages"), count, free_wait_s):
        return HugepagesResult(True, f"{count} hugepages of 2 MiB reserved on {node_text} "
                                     f"(pool {before} -> {after})")
    # Give back a partial grant: the engine cannot use it.
    try:
        with node.locked() as account:
            account.release_pages(pool.path, node.holder.id)
        journal.mark_restored(entry)
    except OSError as e:   # the journal keeps the record: teardown or `restore` tries again
        return HugepagesResult(False, f"asked for {count} hugepages on {node_text}, the kernel granted "
                                      f"{granted}, and giving them back failed ({e}): UMEM on normal pages")
    return HugepagesResult(False, f"asked for {count} hugepages on {node_text}, the kernel granted "
                                  f"{granted} (memory fragmented?): UMEM on normal pages")


def _free_within(path: str, count: int, timeout: float) -> bool:
    """Whether `count` pages are free, waiting up to `timeout`: pages a just-stopped engine held
    come back only when the kernel has freed its UMEM, in the background."""
    deadline = time.monotonic() + timeout
    while True:
        if _read_int(path) >= count:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _read_int(path: str) -> int:
    with open(path, encoding="ascii") as f:
        return int(f.read())
