"""Run `tickwire-engine` and `tickwire-feed` in the namespaces of a VethPair, as separate
processes, the way an operator would run them, and read back their JSON."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager

from .netns import VethPair

BIN = os.path.dirname(sys.executable)
ENGINE = os.path.join(BIN, "tickwire-engine")
FEED = os.path.join(BIN, "tickwire-feed")
# The engine with its own capability pre-check taken out, so that the kernel alone decides.
ENGINE_UNCHECKED = [sys.executable, "-c", "import sys, tickwire_engine.engine as e; "
                    "e.check_privileges = lambda **_: None; from tickwire_engine.cli import main; "
                    "sys.exit(main(sys.argv[1:]))"]


def xdp_attached(pair: VethPair) -> str:
    """The XDP part of `ip link show` for the node interface, or "" when nothing is attached."""
    out = pair.run(pair.node_ns, "ip", "-d", "link", "show", pair.node_if).stdout
    return " ".join(line.strip() for line in out.splitlines() if "xdp" in line and "prog/xdp" in line)


class EngineProcess:
    def __init__(self, pair: VethPair, lines: list[str], tmp_path, extra: list[str] = ()):
        self.pair = pair
        self.stats_path = str(tmp_path / f"engine-{time.monotonic_ns()}.json")
        self.cmd = [ENGINE, "run", "--iface", pair.node_if, "--mode", "generic",
                    "--stats-json", self.stats_path, "--stats-interval", "0.1", "--quiet",
                    *[arg for line in lines for arg in ("--line", line)], *extra]
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> "EngineProcess":
        self.proc = self.pair.popen(self.pair.node_ns, self.cmd, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"engine exited {self.proc.returncode}: {self.proc.stderr.read()}")
            if os.path.exists(self.stats_path):
                return self
            time.sleep(0.05)
        raise TimeoutError("engine did not write its first stats in time")

    def stats(self) -> dict:
        with open(self.stats_path) as f:
            return json.load(f)

    def settle(self, messages: int | None = None, timeout: float = 10.0) -> dict:
        """Wait until the counts stop moving (and reach `messages` if given); bounded in time."""
        deadline = time.monotonic() + timeout
        last, stable_since = None, time.monotonic()
        while time.monotonic() < deadline:
            stats = self.stats()
            key = (stats["packets"], stats["messages"], stats["malformed"], stats["gaps"])
            if key != last:
                last, stable_since = key, time.monotonic()
            elif time.monotonic() - stable_since > 0.5 and (messages is None or stats["messages"] >= messages):
                return stats
            time.sleep(0.1)
        return self.stats()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> dict:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(timeout=timeout)
        return self.stats()

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@contextmanager
def engine_running(pair: VethPair, lines: list[str], tmp_path, extra: list[str] = ()):
    engine = EngineProcess(pair, lines, tmp_path, extra).start()
    try:
        yield engine
    finally:
        engine.kill()


def publish(pair: VethPair, tmp_path, args: list[str], timeout: float = 60.0) -> dict:
    """Run `tickwire-feed publish` in the exchange namespace; returns its summary JSON."""
    summary = tmp_path / f"feed-{time.monotonic_ns()}.json"
    pair.run(pair.exchange_ns, FEED, "publish", "--iface", pair.exchange_if,
             "--summary-json", str(summary), *args, timeout=timeout)
    return json.loads(summary.read_text())
