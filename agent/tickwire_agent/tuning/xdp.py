"""The XDP program the engine attaches, and cleaning it up when the engine could not.

The engines of an interface share one steering program, attached through a BPF link pinned in
bpffs, so it outlives any one engine (docs/design.md, "Shared steering"). An engine removes its
flows on a clean stop, and the last one out detaches the program; after a SIGKILL or a crash it
cannot. So the agent journals the interface's XDP state (none) before it starts the engine, and
the restore is the engine's own release (tickwire_engine.engine.release_steering): dead engines'
flows go, and the program and pins too when no live engine is left on the interface. A program
attached the old way (netlink, no link) is then detached; one a live engine holds is left alone.
"""
from __future__ import annotations

import errno

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from .settings import Setting

XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
_ATTACHED_FLAGS = {"xdpgeneric": XDP_FLAGS_SKB_MODE, "xdp": XDP_FLAGS_DRV_MODE}


def attached(ifname: str) -> tuple[int, str | None]:
    """(program id, mode) of the XDP program on `ifname`; (0, None) when there is none."""
    with IPRoute() as ipr:
        link = ipr.link("get", ifname=ifname)[0]
    xdp = link.get_attr("IFLA_XDP")
    if xdp is None:
        return 0, None
    return xdp.get_attr("IFLA_XDP_PROG_ID") or 0, xdp.get_attr("IFLA_XDP_ATTACHED")


def detach(ifname: str) -> None:
    prog_id, mode = attached(ifname)
    if not prog_id:
        return
    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname=ifname)[0]
        ipr.link("set", index=index,
                 xdp={"attrs": [("IFLA_XDP_FD", -1), ("IFLA_XDP_FLAGS", _ATTACHED_FLAGS.get(mode, 0))]})


class XdpSetting(Setting):
    """'No XDP program on this interface', which the engine changes and the agent restores."""

    kind = "xdp"

    def __init__(self, ifname: str, label: str = "xdp_program"):
        self.ifname = ifname
        self.label = label

    def read(self) -> int:
        return attached(self.ifname)[0]

    def write(self, value: int) -> None:
        if value != 0:
            raise ValueError("the agent can only detach XDP programs (restore to 0), not attach them")
        from tickwire_engine.engine import EngineError, release_steering

        try:
            release_steering(self.ifname)
        except EngineError as e:
            raise OSError(e.errno, f"cannot release the steering program on {self.ifname}: {e}") from e
        try:
            detach(self.ifname)
        except NetlinkError as e:
            if e.code != errno.EBUSY:   # EBUSY: held by a link, i.e. a live engine: leave it
                raise OSError(e.code, f"cannot detach XDP from {self.ifname}: {e}") from e

    def to_record(self) -> dict:
        return {"kind": self.kind, "ifname": self.ifname, "label": self.label}


class SteeringQueue(Setting):
    """'This interface's shared steering program holds nothing for our queue', which the engine
    changes (it claims the queue and adds the feed's flows) and the agent restores.

    Engines on one interface share one pinned XDP program (C1); an engine stopped cleanly takes
    out its own flows and queue, and the last one out removes the program. After a SIGKILL it
    cannot: `release` (tickwire_engine.release_steering) removes what dead engines left, and the
    program and pins when no live engine is left. It never touches a live engine's queue, so
    restoring this after any engine exit, and again at `restore`, is safe and idempotent."""

    kind = "steering"

    def __init__(self, ifname: str, queue: int, bpffs_root: str, label: str = "xdp_steering"):
        self.ifname = ifname
        self.queue = queue
        self.bpffs_root = bpffs_root
        self.label = label

    def read(self) -> str:
        return "unknown"

    def write(self, value) -> None:
        if value != "released":
            raise ValueError("the agent only releases the steering program's state, never adds to it")
        from tickwire_engine.engine import EngineError, release_steering
        try:
            release_steering(self.ifname, self.queue, self.bpffs_root)
        except EngineError as e:   # the journal's restore handles OSError
            raise OSError(e.errno, f"tickwire-engine release {self.ifname} queue {self.queue}: {e}") from None

    def drifted(self, current, applied) -> bool:
        return False

    def to_record(self) -> dict:
        return {"kind": self.kind, "ifname": self.ifname, "queue": self.queue, "bpffs_root": self.bpffs_root,
                "label": self.label}
