"""The agent's state directory: its journal, the engine's stats file, and a lock.

One directory per feed (default /run/tickwire/<feed>/: tmpfs, so a reboot, which resets every
host setting anyway, also forgets the journal). The lock is an flock held for the agent's life:
the kernel drops it when the process dies, however it dies, so a second agent for the same feed
is refused while the first lives and allowed as soon as it is gone.
"""
from __future__ import annotations

import fcntl
import json
import os

DEFAULT_ROOT = "/run/tickwire"


class StateDirBusy(RuntimeError):
    pass


class StateDir:
    def __init__(self, path: str):
        self.path = path
        self._lock_fd: int | None = None

    @classmethod
    def for_feed(cls, feed: str, root: str = DEFAULT_ROOT) -> "StateDir":
        return cls(os.path.join(root, feed))

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    @property
    def stats_path(self) -> str:
        return self.file("stats.json")

    def lock(self) -> None:
        os.makedirs(self.path, mode=0o700, exist_ok=True)
        fd = os.open(self.file("lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StateDirBusy(f"another agent (pid {holder}) holds {self.path}; stop it first, or give "
                               "this one its own --state-dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def write_runtime(self, info: dict) -> None:
        """agent.json: what a person or a test needs to find this agent (pid, metrics port, ...)."""
        tmp = self.file("agent.json.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(info, f, indent=2, sort_keys=True)
        os.replace(tmp, self.file("agent.json"))
