"""The capabilities the agent and its engine need, checked before anything on the host is touched.

The list is the engine's (native/tickwire_engine/capabilities.py), which the engine checks for
itself too; the agent adds CAP_SYS_NICE for a real-time plan and refuses any finite memlock limit.

Each one is refused by the kernel without it (tests/netns/test_agent_privileges.py removes them
one at a time and watches the kernel say no), and the Pod builder grants exactly these
(operator/tickwire_operator/pod.py; a unit test keeps the two lists equal). Checking up front
turns "Permission denied" from deep inside libbpf into a message that names the capability and
leaves the host as it was.
"""
from __future__ import annotations

from tickwire_engine import capabilities

from .plan import Plan, Problem

# name -> (bit in include/uapi/linux/capability.h, why): the engine's own list (the engine checks
# it too), with what the agent itself does with CAP_NET_ADMIN besides attaching the program.
ALWAYS = dict(capabilities.NEEDED)
ALWAYS["CAP_NET_ADMIN"] = (ALWAYS["CAP_NET_ADMIN"][0],
                           ALWAYS["CAP_NET_ADMIN"][1] + ", set the NIC's channels and busy-poll knobs")
REALTIME = {name: (bit, why + " (busyPoll.rtPriority)") for name, (bit, why) in capabilities.REALTIME.items()}
CAP_SYS_ADMIN = capabilities.CAP_SYS_ADMIN


def needed(plan: Plan) -> dict[str, tuple[int, str]]:
    wanted = dict(ALWAYS)
    if plan.busy_poll.rt_priority > 0:
        wanted.update(REALTIME)
    return wanted


def problems(plan: Plan, caps: int | None = None, memlock: int | None = None) -> list[Problem]:
    """One problem per capability this process lacks for `plan` (`caps`: a CapEff mask).

    Without CAP_IPC_LOCK any finite RLIMIT_MEMLOCK counts as too small: it is shared with every
    process of this uid on the node, so what fits now may not fit when the engine restarts."""
    caps = capabilities.effective() if caps is None else caps
    memlock = capabilities.memlock_limit() if memlock is None else memlock
    wanted = needed(plan)
    return [Problem("capabilities", f"this agent lacks {name}, needed to {wanted[name][1]}",
                    f"grant {name} (the operator's agent Pod does)")
            for name in capabilities.missing(wanted, caps, memlock)]
