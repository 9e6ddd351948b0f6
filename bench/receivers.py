"""The contenders as processes in the node namespace, all read through one interface.

Each contender writes the same stats JSON (the keys `tickwire-engine run` writes) when sent
SIGUSR1, the engine included: no contender has a timer of its own waking up during a trial.
`snapshot()` returns a snapshot taken after the call began; `cpu_by_thread()` is the process's
CPU time per thread from /proc (schedstat), so every contender is charged the same way.

DPDK's testpmd is the exception that proves the interface: it decodes nothing and counts packets
only, so it is driven through its interactive prompt (`show port stats 0`) and its snapshot has
packets and the AF_XDP ring's misses but no messages (`counts_messages` is False).
"""
from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from tickwire_demo.localnet import VethPair

ENGINE = os.path.join(os.path.dirname(sys.executable), "tickwire-engine")
TESTPMD = "dpdk-testpmd"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPIN, SLEEP = "spin", "sleep"


@dataclass(frozen=True)
class Contender:
    key: str                     # the name in latest.json
    label: str                   # how tables and plots name it
    kind: str                    # "engine", "kernel_c", "python" or "dpdk"
    waits: str                   # SPIN: never gives its core back; SLEEP: blocks until data
    xdp_mode: str = "native"     # engine only
    busy_poll: bool = True       # engine: spin on the ring (SO_PREFER_BUSY_POLL) or sleep in poll()
    args: tuple[str, ...] = ()   # extra arguments (kernel_rx tunings)
    tuning: bool = False         # a kernel_c tuning variant, kept to show what each knob does
    note: str = ""
    start_pps: float | None = None   # where its rate search starts (None: the run's --start-pps)


# The tuned kernel receiver: what an expert does on this path. No SO_BUSY_POLL: on veth a socket's
# busy poll takes over the veth's NAPI from the receiver's CPU and the 256-entry veth ring
# overflows (see README, "kernel_c tunings"); 8 MiB SO_RCVBUF; recvmmsg batches of 64; spinning.
KERNEL_C_TUNED = ("--busy-poll-usec", "0", "--rcvbuf", str(8 << 20), "--batch", "64")

CONTENDERS = {c.key: c for c in (
    Contender("engine", "engine (AF_XDP native, busy poll)", "engine", SPIN, "native", True),
    Contender("engine_generic", "engine (AF_XDP generic, busy poll)", "engine", SPIN, "generic", True),
    Contender("engine_poll", "engine (AF_XDP native, poll())", "engine", SLEEP, "native", False),
    Contender("kernel_c", "C kernel socket (recvmmsg, spin)", "kernel_c", SPIN, args=KERNEL_C_TUNED),
    Contender("kernel_c_sleep", "C kernel socket (recvmmsg, blocking)", "kernel_c", SLEEP,
              args=KERNEL_C_TUNED + ("--wait", "1")),
    Contender("python", "Python socket", "python", SLEEP, start_pps=4_000),
    Contender("dpdk_af_xdp", "DPDK testpmd net_af_xdp (rxonly, counts packets)", "dpdk", SPIN,
              note="rxonly: receives and frees each packet, decodes nothing"),
    # Tunings of the kernel receiver, each changing one knob from kernel_c, to show its effect.
    Contender("kernel_c_busy_poll", "C kernel socket + SO_BUSY_POLL 50 us", "kernel_c", SPIN, tuning=True,
              args=("--busy-poll-usec", "50", "--rcvbuf", str(8 << 20), "--batch", "64")),
    Contender("kernel_c_small_rcvbuf", "C kernel socket, default SO_RCVBUF", "kernel_c", SPIN, tuning=True,
              args=("--busy-poll-usec", "0", "--rcvbuf", "0", "--batch", "64")),
    Contender("kernel_c_batch1", "C kernel socket, recvmmsg batch 1", "kernel_c", SPIN, tuning=True,
              args=("--busy-poll-usec", "0", "--rcvbuf", str(8 << 20), "--batch", "1")),
)}
MAIN = tuple(k for k, c in CONTENDERS.items() if not c.tuning)
TUNINGS = tuple(k for k, c in CONTENDERS.items() if c.tuning)
# Contenders whose failure fails the benchmark: the ratios are about them.
HEADLINE = ("engine", "kernel_c", "python")


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
    ring_size: int = 4096        # AF_XDP RX ring entries, the engine's and DPDK's alike


def cpu_list(contender: Contender, feed: Feed) -> str:
    """taskset's CPU list. The engine pins its poll thread to `cpu` itself and moves its main
    thread (which only reports) off that core, as it does in production; testpmd's main lcore
    (its prompt) goes to the housekeeping CPU the same way; the single-threaded contenders get
    the receiver's core only."""
    if contender.kind in ("engine", "dpdk"):
        return f"{feed.housekeeping_cpu},{feed.cpu}"
    return str(feed.cpu)


def command(contender: Contender, feed: Feed, stats_path: str, kernel_rx: str) -> list[str]:
    if contender.kind == "engine":
        return [ENGINE, "run", "--iface", feed.iface, "--line", f"A={feed.group}:{feed.port}",
                "--mode", contender.xdp_mode, "--core", str(feed.cpu),
                "--busy-poll", "on" if contender.busy_poll else "off",
                *(["--busy-poll-usec", str(feed.busy_poll_usec)] if contender.busy_poll else []),
                "--ring-size", str(feed.ring_size),
                "--exchange-tz", "UTC", "--stats-json", stats_path, "--quiet"]
    common = ["--iface", feed.iface, "--group", feed.group, "--port", str(feed.port),
              "--midnight-ns", str(feed.midnight_ns), "--stats-json", stats_path]
    if contender.kind == "kernel_c":
        return [kernel_rx, *common, "--core", str(feed.cpu), *contender.args]
    if contender.kind == "python":
        return [sys.executable, "-m", "bench.python_rx", *common]
    if contender.kind == "dpdk":
        # EAL: main lcore (the prompt) on the housekeeping CPU, the one forwarding lcore on the
        # receiver's; no hugepages, no shared config files (many runs on one host). The PMD
        # attaches its own XDP program in native mode and copies (veth has no zero-copy).
        # stdbuf: testpmd's answers at the prompt must not wait in a full stdio buffer.
        return ["stdbuf", "-oL", TESTPMD, "-l", f"{feed.housekeeping_cpu},{feed.cpu}", "--no-huge", "--no-shconf",
                "-m", "256", "--no-pci", "--log-level", "lib.eal:error",
                "--vdev", f"net_af_xdp0,iface={feed.iface},start_queue=0,queue_count=1",
                "--", "-i", "--forward-mode=rxonly", "--nb-cores=1", "--rxq=1", "--txq=1",
                f"--rxd={feed.ring_size}", "--total-num-mbufs=16384", "--auto-start"]
    raise ValueError(f"unknown contender kind {contender.kind!r}")


class ReceiverError(RuntimeError):
    pass


def thread_cpu_ns(pid: int) -> dict[int, tuple[int, frozenset[int]]]:
    """Per thread: CPU time in ns (schedstat: no tick rounding) and the CPUs it may run on."""
    out = {}
    task_dir = f"/proc/{pid}/task"
    try:
        tids = os.listdir(task_dir)
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"{task_dir}/{tid}/schedstat") as f:
                ns = int(f.read().split()[0])
            out[int(tid)] = (ns, frozenset(os.sched_getaffinity(int(tid))))
        except (OSError, ValueError, IndexError):
            pass  # a thread that just ended
    return out


class Receiver:
    """One contender running in the node namespace, pinned with taskset (see cpu_list)."""

    counts_messages = True

    def __init__(self, pair: VethPair, contender: Contender, feed: Feed, stats_path: str, kernel_rx: str):
        self.contender = contender
        self.stats_path = stats_path
        cmd = ["taskset", "-c", cpu_list(contender, feed), *command(contender, feed, stats_path, kernel_rx)]
        if os.path.exists(stats_path):
            os.unlink(stats_path)   # a stale file would look like "ready" before the signal handler is
        self._stderr = open(stats_path + ".stderr", "w+")
        env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
        # `ip netns exec` and taskset both exec, so the pid is the receiver's own.
        self.proc = self._start(pair, cmd, env)

    def _start(self, pair: VethPair, cmd: list[str], env: dict) -> subprocess.Popen:
        return pair.popen(pair.node_ns, cmd, stdout=subprocess.DEVNULL, stderr=self._stderr, env=env)

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

    def cpu_by_thread(self) -> dict[int, tuple[int, frozenset[int]]]:
        return thread_cpu_ns(self.proc.pid)

    def cpu_ns(self) -> int:
        """CPU time of all the process's threads, in ns."""
        return sum(ns for ns, _ in self.cpu_by_thread().values())

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


_PORT_STATS = re.compile(r"RX-packets:\s*(\d+)\s+RX-missed:\s*(\d+)\s+RX-bytes:\s*(\d+)")


@dataclass
class _Prompt:
    """testpmd's stdout read by a thread, so a snapshot never blocks on a full pipe."""
    lines: "queue.Queue[str]" = field(default_factory=queue.Queue)

    def pump(self, stream) -> None:
        for line in stream:
            self.lines.put(line)


class DpdkReceiver(Receiver):
    """dpdk-testpmd in rxonly mode, asked for its port counters at its prompt."""

    counts_messages = False

    def _start(self, pair: VethPair, cmd: list[str], env: dict) -> subprocess.Popen:
        if shutil.which(TESTPMD) is None:
            raise ReceiverError(f"{TESTPMD} is missing: apt-get install dpdk-dev (make setup does)")
        proc = pair.popen(pair.node_ns, cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=self._stderr, env=env, text=True, bufsize=1)
        self._prompt = _Prompt()
        threading.Thread(target=self._prompt.pump, args=(proc.stdout,), daemon=True).start()
        return proc

    def wait_ready(self, timeout: float = 30.0) -> dict:
        return self.snapshot(timeout)

    def snapshot(self, timeout: float = 5.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:   # drop whatever came before the question
            try:
                self._prompt.lines.get_nowait()
            except queue.Empty:
                break
        self._check_alive()
        self.proc.stdin.write("show port stats 0\n")
        self.proc.stdin.flush()
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                line = self._prompt.lines.get(timeout=0.05)
            except queue.Empty:
                continue
            m = _PORT_STATS.search(line)
            if m:
                return {"time": time.time(), "packets": int(m[1]), "xsk_missed": int(m[2]),
                        "bytes": int(m[3])}
        raise ReceiverError(f"{self.contender.key}: testpmd showed no port stats within {timeout:.0f} s")

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=timeout)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(timeout=timeout)
        self._stderr.close()


def open_receiver(pair: VethPair, contender: Contender, feed: Feed, stats_path: str,
                  kernel_rx: str) -> Receiver:
    cls = DpdkReceiver if contender.kind == "dpdk" else Receiver
    return cls(pair, contender, feed, stats_path, kernel_rx)
