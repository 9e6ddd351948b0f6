"""Hugepages for the engine's UMEM: reserved on the NIC's NUMA node, given back at teardown.

The pool is counted in 2 MiB pages. We ask only for what is missing (free pages already in the
pool count), read back what the kernel granted (it grants fewer when memory is fragmented), and
when the engine cannot have them all we give back what we took and run it on normal pages:
a UMEM half on hugepages is not a thing, and pages held for nothing hurt other tenants.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

from ..journal import Journal
from .settings import HugepagesSetting

PAGE_DIR = "hugepages/hugepages-2048kB"
FREE_WAIT_S = 2.0


@dataclass
class HugepagesResult:
    granted: bool                       # the engine should back its UMEM with hugepages
    message: str
    setting: HugepagesSetting | None = None
    applied: int | None = None          # the pool size we set, for drift checks


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


def reserve(count: int, numa_node: int | None, journal: Journal, root: str = "/",
            free_wait_s: float = FREE_WAIT_S) -> HugepagesResult:
    if count == 0:
        return HugepagesResult(False, "the plan asks for no hugepages: UMEM on normal pages")
    where = pool_dir(numa_node, root)
    node_text = f"NUMA node {numa_node}" if numa_node is not None and len(numa_nodes(root)) > 1 else "the host"
    pool = HugepagesSetting(os.path.join(where, "nr_hugepages"), label="hugepages")
    try:
        free = _read_int(os.path.join(where, "free_hugepages"))
        if free >= count:
            # Nothing changed, so nothing to restore or watch.
            return HugepagesResult(True, f"{count} hugepages of 2 MiB on {node_text} ({free} were free)")
        previous = pool.read()
        wanted = previous + (count - free)
        entry = journal.record(pool, previous, wanted)
        pool.write(wanted)
        granted = pool.read()
    except OSError as e:
        return HugepagesResult(False, f"cannot reserve hugepages on {node_text} ({e.strerror}): "
                                      "UMEM on normal pages")
    if _free_within(os.path.join(where, "free_hugepages"), count, free_wait_s):
        return HugepagesResult(True, f"{count} hugepages of 2 MiB reserved on {node_text}", pool, granted)
    pool.write(previous)            # give back a partial grant: the engine cannot use it
    journal.mark_restored(entry)
    return HugepagesResult(False, f"asked for {count} hugepages on {node_text}, the kernel granted "
                                  f"{granted - previous} (memory fragmented?): UMEM on normal pages")


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
