"""Host settings several agents share: one lock and one exact account per node.

A node runs one agent per feed, and feeds on one NIC share that NIC's device-wide knobs (RX
channels, napi_defer_hard_irqs, gro_flush_timeout) and the node's hugepage pool. An agent that
journaled "previous value" and wrote it back at its end would undo what a neighbour still needs;
two agents that read the pool at the same instant would both count the same free pages. So every
shared setting goes through the node state directory (`--node-state-dir`, /run/tickwire/node):

    lock                 flock held while the account is read, changed, and the host written
    account.json         per knob: the original value, the value set now, who holds it wanting what;
                         per hugepage pool: who holds how many pages
    holders/<id>.lock    one per live agent, flock'ed for its whole life: the kernel drops it when
                         the agent dies however it dies, so "is this holder alive?" is one
                         non-blocking flock (no pid checks: agents in Pods live in their own pid
                         namespaces, and pids are reused)

The rules, each applied under the lock:
- the first holder of a knob records the original and sets the knob; later holders join. The
  value set is computed from every holder's wish: channels only ever go up from the original
  (the highest queue any holder needs), the other knobs take the highest wish (the most
  deferral/polling any feed asked for; a feed that asked for less is told who holds more);
- a holder leaving recomputes the other knobs from those who remain; channels stay as they are
  while anyone holds them (a channel change rebuilds the rings of most NICs, interrupting every
  feed on it); the last one out writes the original back;
- hugepages: each holder adds its pages on top of the pool as it finds it and takes exactly those
  pages back when it leaves (other users of the pool keep theirs);
- a holder that is gone (its lock free: the process is dead) is released by whoever takes the
  lock next to acquire or release; `tickwire-agent restore` releases a SIGKILLed agent's holdings
  through its journal. Releasing a holder that is no longer in the account does nothing, so
  whichever of the two comes first releases, exactly once;
- drift repair compares a knob with the account's value (what all holders together set), never
  with one agent's own wish.

The account is replaced atomically (write, fsync, rename), and it is written before the host is
changed on the way up and after on the way down: a crash in between leaves an account that
names a change the host may not have, whose release writes a value that is already there.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .settings import Setting, from_record

log = logging.getLogger(__name__)

DEFAULT_NODE_STATE_DIR = "/run/tickwire/node"
ACCOUNT_NAME = "account.json"
LOCK_TIMEOUT_S = 60.0

# How a knob's value follows from its holders' wishes.
RAISE_ONLY = "raise"      # max(original, wishes), and never lowered while anyone holds it: channels
HIGHEST = "highest"       # max(wishes): sysfs/sysctl knobs the plan sets to an exact value


class NodeStateBusy(OSError):
    """The node lock was not free within LOCK_TIMEOUT_S (an agent hung while holding it?)."""


@dataclass(frozen=True)
class Holder:
    id: str          # unique per agent process: "<identity>.<pid>.<nonce>"
    identity: str    # the FeedHandler's uid, or the plan's identity in local mode
    pid: int


def holder_id(identity: str, pid: int) -> str:
    """A file-name-safe id; the nonce keeps two agents apart that a container gave the same pid."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", identity)[:100] or "agent"
    return f"{safe}.{pid}.{secrets.token_hex(3)}"


def _numeric(value: Any) -> Any:
    try:
        return int(value)
    except (TypeError, ValueError):
        return value


def target_value(policy: str, original: Any, wishes: list[Any]) -> Any:
    """What a knob is set to with these holders; the original when nobody holds it."""
    if not wishes:
        return original
    highest = max(wishes, key=_numeric)
    if policy == RAISE_ONLY:
        return max(original, highest, key=_numeric)
    return highest


class NodeState:
    """The node state directory: its lock, its account, and this process's holder lock."""

    def __init__(self, path: str = DEFAULT_NODE_STATE_DIR, lock_timeout: float = LOCK_TIMEOUT_S):
        self.path = path
        self.lock_timeout = lock_timeout
        self.holder: Holder | None = None
        self._holder_fd: int | None = None

    # ---- this process as a holder --------------------------------------------------------------

    def register(self, identity: str) -> Holder:
        """Become a holder: create and flock holders/<id>.lock for as long as this process lives."""
        if self.holder is not None:
            return self.holder
        os.makedirs(self._holders_dir, mode=0o700, exist_ok=True)
        holder = Holder(holder_id(identity, os.getpid()), identity, os.getpid())
        fd = os.open(self._holder_lock(holder.id), os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)   # a fresh file: nobody else can hold it
        os.pwrite(fd, json.dumps({"identity": identity, "pid": holder.pid}).encode(), 0)
        self.holder, self._holder_fd = holder, fd
        return holder

    def unregister(self) -> None:
        """Drop the holder lock (after every holding was released: a later prune finds nothing)."""
        if self._holder_fd is None:
            return
        with self.locked() as account:
            if not account.holdings_of(self.holder.id):
                _unlink(self._holder_lock(self.holder.id))
        os.close(self._holder_fd)
        self._holder_fd = None
        self.holder = None

    def alive(self, hid: str) -> bool:
        """Whether holder `hid` still runs: its lock file is flock'ed by its process."""
        if self.holder is not None and hid == self.holder.id:
            return True
        try:
            fd = os.open(self._holder_lock(hid), os.O_RDWR)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)   # also drops the lock we may just have taken
        return False

    # ---- the lock and the account ---------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self) -> Iterator["Account"]:
        """The account under the node lock; saved on leaving if it changed."""
        os.makedirs(self.path, mode=0o700, exist_ok=True)
        fd = os.open(os.path.join(self.path, "lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            deadline = time.monotonic() + self.lock_timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise NodeStateBusy(f"{self.path}/lock was held for over {self.lock_timeout:g} s by "
                                            "another agent; is one hung?") from None
                    time.sleep(0.01)
            account = Account(self, self._load())
            try:
                yield account
            finally:
                if account.changed:
                    self._save(account.data)
        finally:
            os.close(fd)

    def read_account(self) -> dict:
        """A consistent copy without the lock (the file is only ever replaced whole)."""
        return self._load()

    @property
    def account_path(self) -> str:
        return os.path.join(self.path, ACCOUNT_NAME)

    @property
    def _holders_dir(self) -> str:
        return os.path.join(self.path, "holders")

    def _holder_lock(self, hid: str) -> str:
        return os.path.join(self._holders_dir, f"{hid}.lock")

    def _load(self) -> dict:
        try:
            with open(self.account_path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            data = {}
        data.setdefault("knobs", {})
        data.setdefault("hugepages", {})
        return data

    def _save(self, data: dict) -> None:
        tmp = self.account_path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.account_path)
        dir_fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


@dataclass(frozen=True)
class KnobHold:
    """The outcome of joining a knob: what it is set to now, what it was before anyone held it."""
    key: str
    value: Any
    original: Any
    previous: Any        # the value just before this holder joined
    others: dict         # other holders' ids -> their wishes

    def describe(self, label: str, wish: Any) -> str:
        if not self.others:
            return (f"{label} {self.previous} -> {self.value}" if self.previous != self.value
                    else f"{label} already {self.value}") + " (first holder)"
        text = (f"{label} {self.previous} -> {self.value}" if self.previous != self.value
                else f"{label} {self.value}")
        text += f", shared with {len(self.others)} other agent(s) (original {self.original})"
        if _numeric(wish) != _numeric(self.value):
            text += f"; this plan asked for {wish}"
        return text


class Account:
    """The node's account, changed only under the lock (NodeState.locked)."""

    def __init__(self, node: NodeState, data: dict):
        self.node = node
        self.data = data
        self.changed = False

    # ---- knobs ---------------------------------------------------------------------------------

    def hold_knob(self, key: str, setting: Setting, policy: str, holder: Holder, wish: Any) -> KnobHold:
        """Join (or re-join with a new wish) the holders of `key` and set the knob to the value they
        need together. Raises OSError when the host refuses the value (the account is then as before)."""
        self.prune()
        current = setting.read()
        knob = self.data["knobs"].get(key)
        first = knob is None
        if first:
            knob = {"setting": setting.to_record(), "policy": policy, "original": current,
                    "value": current, "holders": {}}
        others = {h: v["wants"] for h, v in knob["holders"].items() if h != holder.id}
        value = target_value(policy, knob["original"], [*others.values(), wish])
        new_holders = {**knob["holders"], holder.id: {"wants": wish, "identity": holder.identity,
                                                       "pid": holder.pid}}
        # Account first: a crash after the write then still knows the original.
        self._put_knob(key, {**knob, "value": value, "holders": new_holders})
        self.node._save(self.data)
        try:
            if current != value:
                setting.write(value)
        except OSError:
            if first:
                del self.data["knobs"][key]
            else:
                self._put_knob(key, knob)
            raise
        return KnobHold(key, value, knob["original"], current, others)

    def release_knob(self, key: str, hid: str) -> Any | None:
        """Take `hid` out of `key`'s holders and set what the others need (the original when none
        remain). Returns the value written, or None when `hid` held nothing there (released before:
        exactly once). Raises OSError when the host refuses; the holder then stays in the account."""
        knob = self.data["knobs"].get(key)
        if knob is None or hid not in knob["holders"]:
            return None
        setting = from_record(knob["setting"])
        remaining = {h: v for h, v in knob["holders"].items() if h != hid}
        if knob["policy"] == RAISE_ONLY and remaining:
            # Changing the channel count makes most drivers rebuild every ring (ixgbe, i40e, mlx5;
            # veth drops its carrier): the feeds still running would lose packets for a count
            # nobody needs lowered. So it stays until the last holder leaves.
            value = knob["value"]
        else:
            value = target_value(knob["policy"], knob["original"], [v["wants"] for v in remaining.values()])
        if setting.read() != value:
            setting.write(value)        # before the account: a refusal keeps the holder on record
        if remaining:
            self._put_knob(key, {**knob, "value": value, "holders": remaining})
        else:
            del self.data["knobs"][key]
            self.changed = True
        return value

    def knob_value(self, key: str) -> Any | None:
        knob = self.data["knobs"].get(key)
        return None if knob is None else knob["value"]

    def _put_knob(self, key: str, knob: dict) -> None:
        self.data["knobs"][key] = knob
        self.changed = True

    # ---- hugepages -----------------------------------------------------------------------------

    def hold_pages(self, pool: Setting, holder: Holder, pages: int) -> tuple[int, int]:
        """Grow the pool by `pages` for `holder`; returns (pool before, pool after as read back).
        The kernel may grant fewer (fragmented memory): the account records what was granted."""
        self.prune()
        key = pool.to_record()["path"]
        entry = self.data["hugepages"].setdefault(key, {"setting": pool.to_record(), "holders": {}})
        before = pool.read()
        if not entry["holders"]:
            entry["original"] = before
        entry["holders"][holder.id] = {"pages": pages, "identity": holder.identity, "pid": holder.pid}
        self.changed = True
        self.node._save(self.data)      # account first, as for knobs
        try:
            pool.write(before + pages)
            after = pool.read()
        except OSError:
            self._drop_pages(key, holder.id)
            raise
        granted = max(0, min(pages, after - before))
        entry["holders"][holder.id]["pages"] = granted
        if granted == 0:
            self._drop_pages(key, holder.id)
        return before, after

    def release_pages(self, pool_path: str, hid: str) -> int | None:
        """Give back exactly `hid`'s pages; None when it held none there (already released)."""
        entry = self.data["hugepages"].get(pool_path)
        if entry is None or hid not in entry["holders"]:
            return None
        pool = from_record(entry["setting"])
        pages = entry["holders"][hid]["pages"]
        pool.write(max(0, pool.read() - pages))
        self._drop_pages(pool_path, hid)
        return pages

    def _drop_pages(self, key: str, hid: str) -> None:
        entry = self.data["hugepages"].get(key)
        if entry is not None:
            entry["holders"].pop(hid, None)
            if not entry["holders"]:
                del self.data["hugepages"][key]
        self.changed = True

    # ---- holders -------------------------------------------------------------------------------

    def holdings_of(self, hid: str) -> list[str]:
        keys = [k for k, knob in self.data["knobs"].items() if hid in knob["holders"]]
        keys += [k for k, e in self.data["hugepages"].items() if hid in e["holders"]]
        return keys

    def holders(self) -> set[str]:
        found = set()
        for knob in self.data["knobs"].values():
            found.update(knob["holders"])
        for entry in self.data["hugepages"].values():
            found.update(entry["holders"])
        return found

    def forget_if_gone(self, hid: str) -> None:
        """Remove the lock file of a dead holder that holds nothing any more."""
        if not self.holdings_of(hid) and not self.node.alive(hid):
            _unlink(self.node._holder_lock(hid))

    def prune(self) -> list[str]:
        """Release every holder whose process is gone. A release the host refuses (channels while a
        dead agent's engine still has its socket on the queue) stays on record for the next try."""
        released = []
        for hid in sorted(self.holders()):
            if self.node.alive(hid):
                continue
            log.warning("node account: holder %s is gone; releasing what it held", hid)
            ok = True
            for key in list(self.data["knobs"]):
                try:
                    self.release_knob(key, hid)
                except OSError as e:
                    ok = False
                    log.warning("node account: cannot release %s of gone holder %s yet: %s", key, hid, e)
            for key in list(self.data["hugepages"]):
                try:
                    self.release_pages(key, hid)
                except OSError as e:
                    ok = False
                    log.warning("node account: cannot give back hugepages of gone holder %s yet: %s", hid, e)
            if ok:
                _unlink(self.node._holder_lock(hid))
                released.append(hid)
        return released


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        if e.errno != errno.ENOENT:
            raise


# ---- journal records: "this agent holds X in the node account"; restoring one releases it ----

class HeldKnob(Setting):
    """A journal record for a knob held in the node account. The agent journals it before it
    joins (write-ahead), so a crash at any point leaves a record whose restore releases this
    holder, or finds it already released and does nothing."""

    kind = "shared_knob"

    def __init__(self, node_dir: str, holder: str, key: str, label: str):
        self.node_dir = node_dir
        self.holder = holder
        self.key = key
        self.label = label

    def read(self) -> Any:
        return NodeState(self.node_dir).read_account()["knobs"].get(self.key, {}).get("value")

    def write(self, value: Any) -> None:
        raise ValueError("a shared knob is only ever released, never written through its journal record")

    def restore(self, previous: Any, applied: Any) -> None:
        with NodeState(self.node_dir).locked() as account:
            account.release_knob(self.key, self.holder)
            account.forget_if_gone(self.holder)

    def to_record(self) -> dict:
        return {"kind": self.kind, "node_dir": self.node_dir, "holder": self.holder, "key": self.key,
                "label": self.label}


class HeldPages(Setting):
    """A journal record for hugepages held in the node account; restoring gives them back."""

    kind = "shared_pages"

    def __init__(self, node_dir: str, holder: str, pool: str, label: str = "hugepages"):
        self.node_dir = node_dir
        self.holder = holder
        self.pool = pool
        self.label = label

    def read(self) -> Any:
        entry = NodeState(self.node_dir).read_account()["hugepages"].get(self.pool, {})
        return entry.get("holders", {}).get(self.holder, {}).get("pages", 0)

    def write(self, value: Any) -> None:
        raise ValueError("held hugepages are only ever released, never written through their journal record")

    def restore(self, previous: Any, applied: Any) -> None:
        with NodeState(self.node_dir).locked() as account:
            account.release_pages(self.pool, self.holder)
            account.forget_if_gone(self.holder)

    def to_record(self) -> dict:
        return {"kind": self.kind, "node_dir": self.node_dir, "holder": self.holder, "pool": self.pool,
                "label": self.label}
