"""Run the engine as a child process: start it, watch it, restart it after a crash, stop it.

Restarts back off exponentially (1 s, 2 s, 4 s, ... capped), and the backoff resets once a run
has lasted long enough to count as healthy. Exit status 2 means the engine cannot use its
configuration, 5 that its queue or flows are in use by another live engine or a foreign XDP
program holds the interface: restarting would fail the same way, so the supervisor gives up and
says why (with the owner the engine named).
A stop sends SIGTERM (the engine detaches XDP and writes its last stats), then SIGKILL if it
has not exited within the timeout.
"""
from __future__ import annotations

import contextlib
import enum
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

EXIT_BAD_CONFIG = 2
EXIT_KERNEL_REFUSED = 3
EXIT_IN_USE = 5
# Exits no restart can change: the supervisor stops and reports them.
PERMANENT_EXITS = (EXIT_BAD_CONFIG, EXIT_IN_USE)


class State(enum.Enum):
    STARTING = "Starting"
    RUNNING = "Running"
    BACKOFF = "Restarting"
    FAILED = "Failed"
    STOPPED = "Stopped"


@dataclass(frozen=True)
class Exit:
    returncode: int
    message: str          # the engine's last stderr/stdout line, or a description of the signal
    runtime_s: float

    @property
    def description(self) -> str:
        if self.returncode < 0:
            how = f"killed by {signal.Signals(-self.returncode).name}"
        elif self.returncode == EXIT_BAD_CONFIG:
            how = "rejected its configuration (exit 2)"
        elif self.returncode == EXIT_KERNEL_REFUSED:
            how = "was refused by the kernel (exit 3)"
        elif self.returncode == EXIT_IN_USE:
            how = "found its queue or interface in use (exit 5)"
        else:
            how = f"exited with status {self.returncode}"
        return f"engine {how} after {self.runtime_s:.1f} s" + (f": {self.message}" if self.message else "")


class Supervisor:
    def __init__(self, command: list[str], log_path: str, *,
                 before_start: Callable[[], None] = lambda: None,
                 after_exit: Callable[[Exit], None] = lambda exit: None,
                 backoff_initial: float = 1.0, backoff_max: float = 30.0,
                 healthy_after: float = 30.0, stop_timeout: float = 5.0,
                 child_cpus: set[int] | None = None, pid_path: str | None = None):
        self.command = command
        self.child_cpus = child_cpus
        self.pid_path = pid_path
        self.log_path = log_path
        self.before_start = before_start
        self.after_exit = after_exit
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.healthy_after = healthy_after
        self.stop_timeout = stop_timeout
        self.state = State.STOPPED
        self.restarts = 0
        self.last_exit: Exit | None = None
        self.next_start_at: float | None = None    # monotonic time of the next restart in BACKOFF
        self._proc: subprocess.Popen | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def start(self) -> None:
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="engine-supervisor", daemon=True)
        self._thread.start()

    def stop(self) -> Exit | None:
        """Stop the engine (SIGTERM, then SIGKILL after stop_timeout) and wait for the watcher."""
        self._stopping.set()
        with self._lock:
            proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                log.warning("engine did not stop within %.0f s of SIGTERM: SIGKILL", self.stop_timeout)
                proc.kill()
        if self._thread is not None:
            self._thread.join()
        if self.state is not State.FAILED:   # a failure stays visible to whoever asks after
            self.state = State.STOPPED
        return self.last_exit

    def _write_pid(self, pid: int | None) -> None:
        """engine.pid: lets the next agent stop an engine this one left behind when it died."""
        if self.pid_path is None:
            return
        if pid is None:
            try:
                os.unlink(self.pid_path)
            except FileNotFoundError:
                pass
            return
        with open(self.pid_path, "w", encoding="ascii") as f:
            f.write(f"{pid}\n")

    def _run(self) -> None:
        backoff = self.backoff_initial
        while not self._stopping.is_set():
            self.state = State.STARTING
            self.before_start()
            started = time.monotonic()
            log_offset = _size(self.log_path)
            with open(self.log_path, "ab") as engine_log, self._lock:
                if self._stopping.is_set():
                    break
                with _thread_affinity(self.child_cpus):
                    self._proc = subprocess.Popen(self.command, stdout=engine_log, stderr=subprocess.STDOUT,
                                                  stdin=subprocess.DEVNULL, start_new_session=True)
            self.state = State.RUNNING
            log.info("engine started (pid %d): %s", self._proc.pid, " ".join(self.command))
            self._write_pid(self._proc.pid)
            returncode = self._proc.wait()
            self._write_pid(None)
            runtime = time.monotonic() - started
            self.last_exit = Exit(returncode, _last_line(self.log_path, log_offset), runtime)
            try:
                self.after_exit(self.last_exit)
            except Exception:   # a failing hook must not end supervision with the state RUNNING
                log.exception("after-exit hook failed for: %s", self.last_exit.description)
            if self._stopping.is_set():
                break
            log.warning("%s", self.last_exit.description)
            if returncode in PERMANENT_EXITS:
                self.state = State.FAILED
                return
            if runtime >= self.healthy_after:
                backoff = self.backoff_initial
            self.state = State.BACKOFF
            self.next_start_at = time.monotonic() + backoff
            if self._stopping.wait(backoff):
                break
            self.next_start_at = None
            self.restarts += 1
            backoff = min(backoff * 2, self.backoff_max)
        self.state = State.STOPPED


def stop_orphan(pid_path: str, marker: str, timeout: float = 5.0) -> int | None:
    """Stop an engine a dead agent left running (its pid file names it; its command line must
    contain `marker`, so a recycled pid is never hit). Returns the pid stopped, or None."""
    try:
        with open(pid_path, encoding="ascii") as f:
            pid = int(f.read())
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, ValueError):
        return None
    if marker not in cmdline:
        return None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
        if _is_zombie(pid):
            break
        time.sleep(0.05)
    else:
        if os.path.exists(f"/proc/{pid}"):
            os.kill(pid, signal.SIGKILL)
    os.unlink(pid_path)
    return pid


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@contextlib.contextmanager
def _thread_affinity(cpus: set[int] | None):
    """Widen this thread's CPUs while it forks: a child starts with its parent thread's affinity,
    and the engine must be allowed onto its dedicated core, which the agent's threads avoid.
    Per thread, so the agent's other threads never move."""
    if cpus is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _last_line(path: str, since: int, limit: int = 4096) -> str:
    """The last non-empty line this run wrote (not one left from an earlier run)."""
    try:
        with open(path, "rb") as f:
            f.seek(max(since, os.path.getsize(path) - limit))
            lines = [l for l in f.read().decode(errors="replace").splitlines() if l.strip()]
    except OSError:
        return ""
    return lines[-1].strip() if lines else ""
