"""The agent's state directory: its journal, the engine's stats file, and a lock.

One directory per feed (default /run/tickwire/<feed>/; in the agent Pod a hostPath under
/run/tickwire/feedhandlers/: tmpfs, so a reboot, which resets every host setting anyway, also
forgets the journal). The lock is an flock held for the agent's life: the kernel drops it when
the process dies, however it dies, so a second agent for the same feed is refused while the
first lives and allowed as soon as it is gone.

`remove()` (the Pod asks for it with --remove-state-on-clean-exit) deletes the agent's own files
once the host is fully restored, so that nodes and test machines do not collect a directory per
FeedHandler ever run; only the files named here, never anything else someone put there.
"""
from __future__ import annotations

import fcntl
import json
import os

DEFAULT_ROOT = "/run/tickwire"
# Everything the agent and its engine write here; the lock goes last.
OWN_FILES = ("journal.jsonl", "stats.json", "engine.log", "engine.pid", "agent.json", "agent.json.tmp")
LOCK_ATTEMPTS = 3


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
        for _ in range(LOCK_ATTEMPTS):
            fd = os.open(self.file("lock"), os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise StateDirBusy(f"another agent (pid {holder}) holds {self.path}; stop it first, or give "
                                   "this one its own --state-dir") from None
            if _same_file(fd, self.file("lock")):
                break
            os.close(fd)   # an exiting agent removed the file we opened: lock the new one
        else:
            raise StateDirBusy(f"{self.file('lock')} keeps being replaced; is another agent starting and "
                               "stopping there?")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def remove(self) -> None:
        """Delete the agent's own files, then the directory if that leaves it empty (a mount point,
        such as the Pod's hostPath, stays: the node keeps the empty directory)."""
        for name in (*OWN_FILES, "lock"):
            try:
                os.unlink(self.file(name))
            except FileNotFoundError:
                pass
        self.unlock()
        try:
            os.rmdir(self.path)
        except OSError:
            pass   # not empty (someone else's files), or a mount point

    def write_runtime(self, info: dict) -> None:
        """agent.json: what a person or a test needs to find this agent (pid, metrics port, ...)."""
        tmp = self.file("agent.json.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(info, f, indent=2, sort_keys=True)
        os.replace(tmp, self.file("agent.json"))


def _same_file(fd: int, path: str) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (st.st_dev, st.st_ino)
