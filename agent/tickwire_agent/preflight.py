"""Does this plan fit this host? Checked before anything is touched.

A plan can be valid and still name an interface this node does not have, or a core that is
offline, or ask for more than this process's capabilities allow. Every such problem is reported at once, as a PlanError naming the field, and the agent
changes nothing: no half-applied tuning to unwind.
"""
from __future__ import annotations

import socket

from . import privileges
from .plan import Plan, PlanError, Problem
from .tuning import cpu, flow_steering, hugepages, nic


def check(plan: Plan, root: str = "/") -> None:
    problems: list[Problem] = []
    try:
        socket.if_nametoindex(plan.interface)
    except OSError:
        raise PlanError([Problem("interface", f"{plan.interface!r} does not exist on this host "
                                 "(or in this network namespace)",
                                 "name an interface `ip link` lists")], "plan") from None

    # plan.cores are not checked here: the engine runs on the CPUs this agent was given
    # (cpu.choose_cpus), the plan's only when they are among them.
    online = set(cpu.online_cpus(root))
    bad_irq = [c for c in plan.irq_affinity if c not in online]
    if bad_irq:
        problems.append(Problem("irqAffinity", f"CPU {cpu.format_cpulist(bad_irq)} is not online here "
                                f"(online: {cpu.format_cpulist(online)})", "pick online CPUs"))

    node = plan.hugepages.numa_node
    nodes = hugepages.numa_nodes(root)
    if node is not None and nodes and node not in nodes:
        problems.append(Problem("hugepages.numaNode", f"NUMA node {node} does not exist here "
                                f"(nodes: {', '.join(map(str, nodes))})", "pick one of those, or null"))

    try:
        _, _, problem = nic.channels_needed(plan.interface, plan.queue)
    except OSError as e:
        problem = "" if plan.queue == 0 else (
            f"cannot read {plan.interface}'s channels ({e}) to check that queue {plan.queue} exists; "
            "use queue 0")
    if problem:
        problems.append(Problem("queue", problem))

    if plan.flow_steering == "ntuple":
        reason = flow_steering.support(flow_steering.table_for(plan.interface))
        if reason:
            problems.append(Problem("flowSteering", f"is ntuple, but {reason}",
                                    "run the feed on a NIC with ntuple filters, or set flowSteering to auto or off"))

    problems += privileges.problems(plan)
    if problems:
        raise PlanError(problems, "plan")
