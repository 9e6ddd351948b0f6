"""Bounded polling for tests: wait until a check returns something truthy, or fail saying what
was awaited, what the check last returned, and whatever context helps (log tails)."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any


def wait_until(what: str, check: Callable[[], Any], timeout: float, interval: float = 0.1,
               context: Callable[[], str] = lambda: "") -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; last: {last!r}{context()}")


def log_tails(paths: Iterable[Path], chars: int = 3000) -> Callable[[], str]:
    """A failure context: the end of each log file that exists."""
    def tails() -> str:
        return "".join(f"\n--- {p}:\n{Path(p).read_text(errors='replace')[-chars:]}"
                       for p in paths if Path(p).exists())
    return tails
