"""Stopping what a demo started."""
from __future__ import annotations

import signal
import subprocess


def stop(proc: subprocess.Popen | None, timeout: float = 15.0) -> None:
    """SIGTERM (the agent restores the host on it, the engine detaches XDP), then SIGKILL if the
    process will not go."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
