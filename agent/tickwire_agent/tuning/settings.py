"""A host setting the agent may change: read it, write it, describe it for the journal.

Every change the agent makes to the host goes through one of these, so that the journal can
record the previous value before the change, the drift checker can re-read it, and a later agent
process (after a crash) can rebuild the setting from its journal record and put it back.
"""
from __future__ import annotations

import os
from abc import ABC, abstractmethod
from typing import Any, ClassVar

KINDS: dict[str, type["Setting"]] = {}


class Setting(ABC):
    kind: ClassVar[str]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "kind" in cls.__dict__:
            KINDS[cls.kind] = cls

    label: str   # short, stable name for metrics and conditions: "gro_flush_timeout", "hugepages", ...

    @abstractmethod
    def read(self) -> Any: ...

    @abstractmethod
    def write(self, value: Any) -> None: ...

    @abstractmethod
    def to_record(self) -> dict: ...

    def drifted(self, current: Any, applied: Any) -> bool:
        return current != applied

    def restore(self, previous: Any, applied: Any) -> None:
        self.write(previous)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.to_record()})"


def from_record(record: dict) -> Setting:
    from . import flow_steering, nic, shared, xdp  # noqa: F401  (importing them registers their kinds)

    fields = dict(record)
    kind = fields.pop("kind")
    try:
        cls = KINDS[kind]
    except KeyError:
        raise ValueError(f"journal names an unknown setting kind {kind!r}") from None
    return cls(**fields)


class FileSetting(Setting):
    """One value in sysfs or procfs, e.g. /sys/class/net/eth0/gro_flush_timeout."""

    kind = "file"

    def __init__(self, path: str, label: str):
        self.path = path
        self.label = label

    def read(self) -> str:
        with open(self.path, encoding="ascii") as f:
            return f.read().strip()

    def write(self, value: Any) -> None:
        # sysfs wants one write() of the whole value (O_TRUNC, as `echo >` does, is harmless there
        # and right for regular files); no O_CREAT, so a wrong path fails loudly.
        fd = os.open(self.path, os.O_WRONLY | os.O_TRUNC)
        try:
            os.write(fd, str(value).encode("ascii"))
        finally:
            os.close(fd)

    def to_record(self) -> dict:
        return {"kind": self.kind, "path": self.path, "label": self.label}


class HugepagesSetting(FileSetting):
    """nr_hugepages: a pool the whole node shares, so restore takes back only what we added.

    When nobody else touched it, that is exactly the previous value. When another agent grew the
    pool after us, setting the old number would take its pages away, so we subtract our share.
    Others growing the pool is not drift; only a pool smaller than ours is.
    """

    kind = "hugepages"

    def read(self) -> int:
        """The persistent pool: nr_hugepages minus surplus_hugepages. After a shrink below the pages
        in use (an engine that just died: the kernel frees an AF_XDP UMEM in the background),
        nr_hugepages still counts those pages, as surplus, until they are freed; taking that for
        the pool's size would journal it as "previous" and leak it at restore."""
        total = int(super().read())
        try:
            with open(os.path.join(os.path.dirname(self.path), "surplus_hugepages"), encoding="ascii") as f:
                return total - int(f.read())
        except FileNotFoundError:
            return total

    def drifted(self, current: int, applied: int) -> bool:
        return current < applied

    def restore(self, previous: int, applied: int) -> None:
        current = self.read()
        target = previous if current == applied else max(0, current - (applied - previous))
        self.write(target)
