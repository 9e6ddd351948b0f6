"""The capabilities the agent and its engine need, checked before anything on the host is touched.

Each one is refused by the kernel without it (tests/netns/test_agent_privileges.py removes them
one at a time and watches the kernel say no), and the Pod builder grants exactly these
(operator/tickwire_operator/pod.py; a unit test keeps the two lists equal). Checking up front
turns "Permission denied" from deep inside libbpf into a message that names the capability and
leaves the host as it was.
"""
from __future__ import annotations

import resource

from .plan import Plan, Problem

# name -> (bit in include/uapi/linux/capability.h, why)
ALWAYS = {
    "CAP_NET_ADMIN": (12, "attach the XDP program, set the NIC's channels and busy-poll knobs"),
    "CAP_NET_RAW": (13, "open the AF_XDP socket"),
    "CAP_BPF": (39, "load the XDP steering program and create its maps"),
    "CAP_PERFMON": (38, "let the verifier accept the steering program's packet-pointer arithmetic"),
    "CAP_IPC_LOCK": (14, "pin the UMEM: without it AF_XDP charges it to RLIMIT_MEMLOCK, a budget shared "
                         "by every process of this uid on the node"),
}
REALTIME = {"CAP_SYS_NICE": (23, "run the poll thread SCHED_FIFO (busyPoll.rtPriority)")}
CAP_SYS_ADMIN = 21
# Before CAP_BPF and CAP_PERFMON (5.8) CAP_SYS_ADMIN covered them; it still does.
COVERED_BY_SYS_ADMIN = {"CAP_BPF", "CAP_PERFMON"}


def needed(plan: Plan) -> dict[str, tuple[int, str]]:
    wanted = dict(ALWAYS)
    if plan.busy_poll.rt_priority > 0:
        wanted.update(REALTIME)
    return wanted


def effective() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def problems(plan: Plan, caps: int | None = None, memlock: int | None = None) -> list[Problem]:
    """One problem per capability this process lacks for `plan` (`caps`: a CapEff mask)."""
    caps = effective() if caps is None else caps
    memlock = resource.getrlimit(resource.RLIMIT_MEMLOCK)[0] if memlock is None else memlock
    missing = []
    for name, (bit, why) in needed(plan).items():
        if caps & (1 << bit):
            continue
        if name in COVERED_BY_SYS_ADMIN and caps & (1 << CAP_SYS_ADMIN):
            continue
        if name == "CAP_IPC_LOCK" and memlock == resource.RLIM_INFINITY:
            continue   # nothing to charge against
        missing.append(Problem("capabilities", f"this agent lacks {name}, needed to {why}",
                               f"grant {name} (the operator's agent Pod does)"))
    return missing
