"""CPU lists and affinity: the engine's poll thread on its dedicated core, everything else off it.

The engine pins its own poll thread (`--core`); the agent's part is to keep its own threads (the
metrics server, the status client, ...) off the dedicated cores. Affinity is per thread and
inherited at creation, so the agent narrows every thread it has at start, before it starts more.
A child process inherits the narrowed mask too, which is fine: the engine's poll thread sets its
own, and sched_setaffinity is not bounded by the parent's mask (only a cpuset cgroup bounds it).
"""
from __future__ import annotations

import os


def parse_cpulist(text: str) -> list[int]:
    """'0-2,5' -> [0, 1, 2, 5] (the kernel's list format)."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        if not part:
            continue
        low, _, high = part.partition("-")
        cpus.update(range(int(low), int(high or low) + 1))
    return sorted(cpus)


def format_cpulist(cpus) -> str:
    """[0, 1, 2, 5] -> '0-2,5', the form the kernel reads back, so a re-read compares equal."""
    ordered = sorted(set(cpus))
    ranges: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        ranges.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(ranges)


def online_cpus(root: str = "/") -> list[int]:
    with open(os.path.join(root, "sys/devices/system/cpu/online"), encoding="ascii") as f:
        return parse_cpulist(f.read())


def keep_process_off(cores, pid: int = 0) -> set[int] | None:
    """Move every thread of `pid` (this process by default) off `cores`.

    Returns the CPUs left to it, or None when the dedicated cores are all there is (then the
    threads stay where they are: sharing beats not running).
    """
    pid = pid or os.getpid()
    allowed = set(os.sched_getaffinity(pid)) - set(cores)
    if not allowed:
        return None
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), allowed)
        except ProcessLookupError:
            pass   # the thread ended meanwhile
    return allowed


def thread_affinities(pid: int) -> dict[int, list[int]]:
    """{tid: CPUs it may run on} for every thread of `pid`, as the kernel reports them."""
    result = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status", encoding="ascii") as f:
                for line in f:
                    if line.startswith("Cpus_allowed_list:"):
                        result[int(tid)] = parse_cpulist(line.split(":", 1)[1])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return result
