"""CPU lists and affinity: the engine's poll thread on its dedicated core, everything else off it.

Which CPUs those are is decided by `choose_cpus` from the CPUs this process was actually given
(its affinity mask: the kubelet's cpuset in a Pod, `taskset` by hand), not only from the plan:
under the kubelet's static CPU manager the kubelet picks a Guaranteed Pod's exclusive CPUs.
The engine pins its own poll thread (`--core`); the agent's part is to keep its own threads (the
metrics server, the status client, ...) on the housekeeping CPUs. Affinity is per thread and
inherited at creation, so the agent narrows every thread it has at start, before it starts more.
"""
from __future__ import annotations

import os
from dataclasses import dataclass


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


def keep_process_on(cpus, pid: int = 0) -> set[int]:
    """Move every thread of `pid` (this process by default) onto `cpus`; returns them."""
    pid = pid or os.getpid()
    allowed = set(cpus)
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


class CpuShortage(RuntimeError):
    """This agent was given too few CPUs for its plan: no restart can fix that, only a new Pod."""


@dataclass(frozen=True)
class CpuChoice:
    """Where things run: the engine's poll thread on `engine`, the agent's own threads on
    `housekeeping`, both taken from the CPUs this process may actually use."""
    engine: tuple[int, ...]
    housekeeping: tuple[int, ...]
    planned: bool          # the plan's cores were all usable; False: chosen from the given CPUs

    @property
    def poll_core(self) -> int:
        return self.engine[0]

    def describe(self, plan_cores) -> str:
        where = (f"engine poll thread on CPU {self.poll_core}, agent threads on CPU "
                 f"{format_cpulist(self.housekeeping)}")
        if self.planned:
            return where
        return (f"{where} (the plan's CPU {format_cpulist(plan_cores)} is not among the CPUs this agent "
                f"was given, {format_cpulist(self.engine + self.housekeeping)}: the kubelet's choice wins)")


def choose_cpus(plan_cores, given) -> CpuChoice:
    """Pick the engine's and the agent's CPUs from `given` (the affinity mask the kubelet, a cpuset
    or `taskset` left this process).

    The plan's cores when all of them were given and at least one more is left for the agent's
    threads. Otherwise (under the kubelet's static CPU manager the kubelet, not the operator,
    picks a Guaranteed Pod's exclusive CPUs) as many of the given CPUs as the plan has cores,
    the lowest one kept back for housekeeping. Fewer than cores + 1 CPUs is an error: a poll
    thread spinning on the agent's only CPU starves the agent (and under a CFS quota of exactly
    `cores`, gets throttled with it).
    """
    plan_cores = tuple(plan_cores)
    given = sorted(set(given))
    needed = len(plan_cores) + 1
    if len(given) < needed:
        raise CpuShortage(
            f"this agent may run on CPU {format_cpulist(given)} only ({len(given)} CPU"
            f"{'s' if len(given) != 1 else ''}), but its plan needs {needed}: {len(plan_cores)} for the "
            f"engine and 1 for the agent's own threads; give the Pod {needed} integer CPUs "
            "(requests == limits) or run the agent with a wider CPU mask")
    if set(plan_cores) <= set(given):
        rest = tuple(c for c in given if c not in plan_cores)
        return CpuChoice(plan_cores, rest, planned=True)
    engine = tuple(given[1:1 + len(plan_cores)])     # given[0] stays with the agent
    return CpuChoice(engine, tuple(c for c in given if c not in engine), planned=False)
