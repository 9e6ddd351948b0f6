"""The Linux capabilities the engine needs, why, and the check that names the missing ones before
anything on the host is touched.

This is the one list: the engine checks it before its C part starts, and the agent's pre-flight
(agent/tickwire_agent/privileges.py) builds on it, so the engine depends on nothing of the agent's.
Each entry is one the kernel refuses the engine without (tests/netns/test_agent_privileges.py and
tests/netns/test_engine.py take them away one at a time). The C engine names the same capabilities
when the kernel refuses anyway (native/src/caps.c), using the kernel's own numbers.
"""
from __future__ import annotations

import resource

from .config import PrivilegeError

# name -> (bit in include/uapi/linux/capability.h, what the engine needs it for)
NEEDED = {
    "CAP_NET_ADMIN": (12, "create the XDP program's socket map (XSKMAP) and attach the program"),
    "CAP_NET_RAW": (13, "open the AF_XDP socket"),
    "CAP_BPF": (39, "load the XDP steering program and create its maps"),
    "CAP_PERFMON": (38, "let the verifier accept the steering program's packet-pointer arithmetic"),
    "CAP_IPC_LOCK": (14, "pin the UMEM: without it AF_XDP charges it to RLIMIT_MEMLOCK, a budget shared "
                         "by every process of this uid on the node"),
}
# Only for a real-time poll thread. The engine asks for SCHED_FIFO and, refused, runs on normally
# scheduled and says so; a supervisor that promised real time (the agent) requires it.
REALTIME = {"CAP_SYS_NICE": (23, "run the poll thread SCHED_FIFO")}
CAP_SYS_ADMIN = 21
# Before Linux 5.8 split CAP_BPF and CAP_PERFMON off CAP_SYS_ADMIN it covered them; it still does.
COVERED_BY_SYS_ADMIN = {"CAP_BPF", "CAP_PERFMON"}
MEMLOCK_FIX = "grant CAP_IPC_LOCK, or raise the memlock limit (prlimit --memlock, systemd LimitMEMLOCK=)"


def effective() -> int:
    """This process's effective capabilities as a mask (CapEff in /proc/self/status)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def memlock_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_MEMLOCK)[0]


def missing(wanted: dict[str, tuple[int, str]], caps: int, memlock: int,
            umem_bytes: int | None = None) -> list[str]:
    """The names in `wanted` that `caps` (a CapEff mask) lacks, in `wanted`'s order.

    Without CAP_IPC_LOCK the UMEM is charged to RLIMIT_MEMLOCK (`memlock`), so the capability is
    missing only when the limit cannot hold it: never when unlimited; when `umem_bytes` is given,
    only when the limit is below it (what the kernel refuses for certain); else at any finite limit,
    since other processes of the same uid spend the same budget."""
    names = []
    for name, (bit, _) in wanted.items():
        if caps & (1 << bit):
            continue
        if name in COVERED_BY_SYS_ADMIN and caps & (1 << CAP_SYS_ADMIN):
            continue
        if name == "CAP_IPC_LOCK" and (memlock == resource.RLIM_INFINITY or
                                       (umem_bytes is not None and memlock >= umem_bytes)):
            continue
        names.append(name)
    return names


def mib(size: int) -> str:
    return f"{size / (1 << 20):g} MiB"


def check_privileges(umem_bytes: int, caps: int | None = None, memlock: int | None = None) -> None:
    """Raise PrivilegeError naming each capability the engine (with a UMEM of `umem_bytes`) needs
    and this process lacks, why it needs it, and for CAP_IPC_LOCK the limit and how to fix it."""
    caps = effective() if caps is None else caps
    memlock = memlock_limit() if memlock is None else memlock
    reasons = []
    for name in missing(NEEDED, caps, memlock, umem_bytes):
        reason = f"{name} (to {NEEDED[name][1]}"
        if name == "CAP_IPC_LOCK":
            reason += (f"; RLIMIT_MEMLOCK is {mib(memlock)}, below the UMEM's {mib(umem_bytes)}: "
                       f"{MEMLOCK_FIX}")
        reasons.append(reason + ")")
    if reasons:
        raise PrivilegeError("the engine lacks " + ", ".join(reasons) +
                             ": run as root or grant these capabilities")
