"""The contenders as processes in the node namespace, all read through one interface.

Each contender writes the same stats JSON (the keys `tickwire-engine run` writes) when sent
SIGUSR1, the engine included: no contender has a timer of its own waking up during a trial (the
engine's used to, on the publisher's CPU, and it showed in the engine's p99). `snapshot()` returns
a snapshot taken after the call began; `cpu_ns()` is the process's
CPU time (all threads) from /proc, so every contender is charged the same way.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

from tickwire_demo.localnet import VethPair

ENGINE = os.path.join(os.path.dirname(sys.executable), "tickwire-engine")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass(frozen=True)
class Contender:
    key: str                     # the name in latest.json
    label: str                   # how tables and plots name it
    kind: str                    # "engine", "kernel_c" or "python"
    xdp_mode: str = "generic"    # engine only
    busy_poll: bool = True       # engine: spin on the ring (SO_PREFER_BUSY_POLL) or sleep in poll()


CONTENDERS = {c.key: c for c in (
    Contender("engine", "engine (AF_XDP generic, busy poll)", "engine", "generic", True),
    Contender("kernel_c", "C kernel socket (recvmmsg, spin)", "kernel_c"),
    Contender("python", "Python socket", "python"),
    Contender("engine_native", "engine (AF_XDP native, busy poll)", "engine", "native", True),
    Contender("engine_no_busy_poll", "engine (AF_XDP generic, poll())", "engine", "generic", False),
)}
QUICK = ("engine", "kernel_c", "python")


@dataclass(frozen=True)
class Feed:
    """What every receiver needs to know about the feed and the placement."""
    iface: str
    group: str
    port: int
    midnight_ns: int
    cpu: int                     # the receiver's core
    housekeeping_cpu: int        # where the engine's reporting thread may run (not `cpu`)
    busy_poll_usec: int = 50


def cpu_list(contender: Contender, feed: Feed) -> str:
    """taskset's CPU list. The engine pins its poll thread to `cpu` itself and moves its main
    thread (which wakes every 50 ms to write stats) off that core, as it does in production; the
    single-threaded contenders get the receiver's core only."""
    if contender.kind == "engine":
        return f"{feed.housekeeping_cpu},{feed.cpu}"
    return str(feed.cpu)


def command(contender: Contender, feed: Feed, stats_path: str, kernel_rx: str) -> list[str]:
    if contender.kind == "engine":
        return [ENGINE, "run", "--iface", feed.iface, "--line", f"A={feed.group}:{feed.port}",
                "--mode", contender.xdp_mode, "--core", str(feed.cpu),
                "--busy-poll", "on" if contender.busy_poll else "off",
                *(["--busy-poll-usec", str(feed.busy_poll_usec)] if contender.busy_poll else []),
                "--exchange-tz", "UTC", "--stats-json", stats_path, "--quiet"]
    common = ["--iface", feed.iface, "--group", feed.group, "--port", str(feed.port),
              "--midnight-ns", str(feed.midnight_ns), "--stats-json", stats_path]
    if contender.kind == "kernel_c":
        return [kernel_rx, *common, "--core", str(feed.cpu), "--busy-poll-usec", str(feed.busy_poll_usec)]
    if contender.kind == "python":
        return [sys.executable, "-m", "bench.python_rx", *common]
    raise ValueError(f"unknown contender kind {contender.kind!r}")


class ReceiverError(RuntimeError):
    pass


class Receiver:
    """One contender running in the node namespace, pinned with taskset (see cpu_list)."""

    def __init__(self, pair: VethPair, contender: Contender, feed: Feed, stats_path: str, kernel_rx: str):
        self.contender = contender
        self.stats_path = stats_path
        cmd = ["taskset", "-c", cpu_list(contender, feed), *command(contender, feed, stats_path, kernel_rx)]
        if os.path.exists(stats_path):
            os.unlink(stats_path)   # a stale file would look like "ready" before the signal handler is
        self._stderr = open(stats_path + ".stderr", "w+")
        env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
        # `ip netns exec` and taskset both exec, so the pid is the receiver's own.
        self.proc = pair.popen(pair.node_ns, cmd, stdout=subprocess.DEVNULL, stderr=self._stderr, env=env)

    def wait_ready(self, timeout: float = 20.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            if os.path.exists(self.stats_path):
                return self._read()
            time.sleep(0.02)
        raise ReceiverError(f"{self.contender.key} wrote no stats within {timeout:.0f} s")

    def _check_alive(self) -> None:
        if self.proc.poll() is not None:
            self._stderr.seek(0)
            raise ReceiverError(f"{self.contender.key} exited with {self.proc.returncode}: "
                                f"{self._stderr.read().strip()[-800:]}")

    def _read(self) -> dict:
        with open(self.stats_path) as f:
            return json.load(f)

    def snapshot(self, timeout: float = 5.0) -> dict:
        asked = time.time()
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                stats = self._read()
            except (OSError, ValueError):   # replaced between open and read: try again
                stats = {}
            if stats.get("time", 0) > asked:
                return stats
            time.sleep(0.005)
        raise ReceiverError(f"{self.contender.key} gave no fresh stats within {timeout:.0f} s")

    def cpu_ns(self) -> int:
        """CPU time of all the process's threads, in ns (schedstat: no tick rounding)."""
        total = 0
        task_dir = f"/proc/{self.proc.pid}/task"
        for tid in os.listdir(task_dir):
            try:
                with open(f"{task_dir}/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass  # a thread that just ended
        return total

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout)
        self._stderr.close()

    def __enter__(self) -> "Receiver":
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
