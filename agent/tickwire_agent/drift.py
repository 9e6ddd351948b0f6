"""Drift: settings the agent made that changed under it (irqbalance, a person, another tool).

Every few seconds the agent re-reads each watched setting. A change is counted (metrics), named
in the Tuned condition, and put back when the plan says so (restoreDrift, the default). Putting
it back needs no new journal record: the journal already holds the value from before the agent,
which is what teardown restores.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from .tuning.host import Watched

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DriftEvent:
    label: str
    expected: object
    found: object
    restored: bool
    error: str | None = None

    @property
    def message(self) -> str:
        text = f"{self.label} was {self.found}, the plan wants {self.expected}"
        if self.restored:
            return text + f" (put back at {time.strftime('%H:%M:%S')})"
        return text + (f" (cannot put back: {self.error})" if self.error else " (left as found)")


class DriftChecker:
    def __init__(self, watched: list[Watched], restore: bool):
        self.watched = watched
        self.restore = restore
        self.events: dict[str, int] = {w.setting.label: 0 for w in watched}
        self.drifted: dict[str, bool] = {w.setting.label: False for w in watched}
        self.history: list[str] = []               # drift put back, oldest first
        self.outstanding: dict[str, str] = {}      # label -> message, while it stays drifted

    def check(self) -> list[DriftEvent]:
        found = []
        for w in self.watched:
            label = w.setting.label
            try:
                current, expected = w.observe()
            except OSError as e:
                log.warning("drift check cannot read %s: %s", label, e)
                continue
            if not w.setting.drifted(current, expected):
                self.drifted[label] = False
                self.outstanding.pop(label, None)
                continue
            if not self.drifted[label]:
                self.events[label] += 1            # count a change once, not once per check
            event = self._handle(w, current, expected)
            self.drifted[label] = not event.restored
            if event.restored:
                self.outstanding.pop(label, None)
                self.history.append(event.message)
                log.warning("drift: %s", event.message)
            else:
                if label not in self.outstanding:
                    log.warning("drift: %s", event.message)
                self.outstanding[label] = event.message
            found.append(event)
        return found

    def _handle(self, w: Watched, current, expected) -> DriftEvent:
        if not self.restore:
            return DriftEvent(w.setting.label, expected, current, restored=False)
        try:
            w.put_back(expected)
        except OSError as e:
            return DriftEvent(w.setting.label, expected, current, restored=False, error=e.strerror or str(e))
        return DriftEvent(w.setting.label, expected, current, restored=True)
