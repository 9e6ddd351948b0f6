"""The undo journal: every host change, recorded with its previous value before it is made.

An append-only file of JSON lines under the state directory, fsync'd after each record so it
survives the agent being SIGKILLed or the node losing power between two changes:

    {"op": "set", "id": 3, "setting": {...}, "previous": "0", "applied": "200000"}
    {"op": "restored", "id": 3}

Writing ahead of the change means a crash between the record and the change leaves a record
whose restore writes a value that is already there: harmless.

Each record carries the kernel's boot id. A reboot resets what the agent changed (the NIC, the
XDP program) or sets it anew (the boot's hugepage pool), so a record from another boot is never
restored: writing its "previous" value would undo the boot's own settings. The default state
roots are on tmpfs and forget the journal at a reboot anyway; this keeps a state root on disk
just as safe. Restoring walks the pending
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
BOOT_ID = "/proc/sys/kernel/random/boot_id"


def boot_id() -> str:
    with open(BOOT_ID, encoding="ascii") as f:
        return f.read().strip()


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
    def __init__(self, state_dir: str, boot: str | None = None):
        self.path = os.path.join(state_dir, JOURNAL_NAME)
        self.boot = boot or boot_id()
        self._next_id = max((rec["id"] for rec in self._records()), default=0) + 1

    def exists(self) -> bool:
        return os.path.exists(self.path)

    def record(self, setting: Setting, previous: Any, applied: Any) -> Entry:
        entry = Entry(self._next_id, setting, previous, applied)
        self._next_id += 1
        self._append({"op": "set", "id": entry.id, "setting": setting.to_record(),
                      "previous": previous, "applied": applied, "boot": self.boot})
        return entry

    def mark_restored(self, entry: Entry) -> None:
        self._append({"op": "restored", "id": entry.id})

    def pending(self) -> list[Entry]:
        """Records of this boot not yet restored, oldest first."""
        entries: dict[int, Entry] = {}
        for rec in self._records():
            if rec["op"] == "set":
                if rec.get("boot", self.boot) != self.boot:
                    log.warning("journal %s: %s was changed before the last reboot; the reboot reset it, "
                                "not restoring", self.path, rec["setting"].get("label"))
                    continue
                entries[rec["id"]] = Entry(rec["id"], from_record(rec["setting"]), rec["previous"], rec["applied"])
            elif rec["op"] == "restored":
                entries.pop(rec["id"], None)
        return sorted(entries.values(), key=lambda e: e.id)

    def _records(self) -> list[dict]:
        """Every record in the file. A torn last line (crash mid-write) is skipped."""
        try:
            with open(self.path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return []
        records = []
        for number, line in enumerate(lines, 1):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                log.warning("journal %s line %d is torn (crash while writing?); skipped", self.path, number)
        return records

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
