"""The undo journal: every host change, recorded with its previous value before it is made.

An append-only file of JSON lines under the state directory, fsync'd after each record so it
survives the agent being SIGKILLed or the node losing power between two changes:

    {"op": "set", "id": 3, "setting": {...}, "previous": "0", "applied": "200000"}
    {"op": "restored", "id": 3}

Writing ahead of the change means a crash between the record and the change leaves a record
whose restore writes a value that is already there: harmless. Restoring walks the pending
records newest first (so two changes of one knob unwind to the oldest value) and deletes the
file only once every record is restored; a record that fails stays for the next attempt.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Any

from .tuning.settings import Setting, from_record

log = logging.getLogger(__name__)

JOURNAL_NAME = "journal.jsonl"


@dataclass(frozen=True)
class Entry:
    id: int
    setting: Setting
    previous: Any
    applied: Any


@dataclass(frozen=True)
class RestoreResult:
    entry: Entry
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class Journal:
    def __init__(self, state_dir: str):
        self.path = os.path.join(state_dir, JOURNAL_NAME)
        self._next_id = max((e.id for e in self.pending()), default=0) + 1

    def exists(self) -> bool:
        return os.path.exists(self.path)

    def record(self, setting: Setting, previous: Any, applied: Any) -> Entry:
        entry = Entry(self._next_id, setting, previous, applied)
        self._next_id += 1
        self._append({"op": "set", "id": entry.id, "setting": setting.to_record(),
                      "previous": previous, "applied": applied})
        return entry

    def mark_restored(self, entry: Entry) -> None:
        self._append({"op": "restored", "id": entry.id})

    def pending(self) -> list[Entry]:
        """Records not yet restored, oldest first. A torn last line (crash mid-write) is skipped."""
        try:
            with open(self.path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return []
        entries: dict[int, Entry] = {}
        for number, line in enumerate(lines, 1):
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                log.warning("journal %s line %d is torn (crash while writing?); skipped", self.path, number)
                continue
            if rec["op"] == "set":
                entries[rec["id"]] = Entry(rec["id"], from_record(rec["setting"]), rec["previous"], rec["applied"])
            elif rec["op"] == "restored":
                entries.pop(rec["id"], None)
        return sorted(entries.values(), key=lambda e: e.id)

    def restore_all(self) -> list[RestoreResult]:
        results = []
        for entry in reversed(self.pending()):
            try:
                entry.setting.restore(entry.previous, entry.applied)
            except (OSError, ValueError) as e:
                log.error("could not restore %s to %r: %s", entry.setting.label, entry.previous, e)
                results.append(RestoreResult(entry, str(e)))
                continue
            self.mark_restored(entry)
            results.append(RestoreResult(entry))
        if all(r.ok for r in results) and self.exists():
            os.unlink(self.path)
            _fsync_dir(os.path.dirname(self.path))
        return results

    def _append(self, record: dict) -> None:
        created = not os.path.exists(self.path)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (json.dumps(record, sort_keys=True) + "\n").encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            _fsync_dir(os.path.dirname(self.path))


def _fsync_dir(path: str) -> None:
    fd = os.open(path or ".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
