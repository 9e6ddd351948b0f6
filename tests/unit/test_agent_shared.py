"""The node account of shared host settings (tuning/shared.py): real files, real flocks, real
processes; the knobs are files shaped like sysfs ones (the real sysfs knobs, channels and the
hugepage pool are exercised by tests/netns/test_agent_sharing.py and test_agent_many_feeds.py)."""
from __future__ import annotations

import multiprocessing
import os
import signal
import time

import pytest

from tickwire_agent.drift import DriftChecker
from tickwire_agent.journal import Journal
from tickwire_agent.tuning import shared
from tickwire_agent.tuning.host import SharedWatched
from tickwire_agent.tuning.settings import FileSetting, HugepagesSetting


def knob_file(tmp_path, name="channels", value="1"):
    path = tmp_path / name
    path.write_text(value + "\n")
    return FileSetting(str(path), name)


def hold(node, setting, policy, wish, key="k"):
    with node.locked() as account:
        return account.hold_knob(key, setting, policy, node.holder, wish)


def release(node, hid, key="k"):
    with node.locked() as account:
        return account.release_knob(key, hid)


def test_first_holder_records_the_original_a_higher_need_raises_and_the_last_restores(tmp_path):
    knob = knob_file(tmp_path, value="1")
    a, b = shared.NodeState(str(tmp_path / "node")), shared.NodeState(str(tmp_path / "node"))
    a.register("feed-a")
    b.register("feed-b")      # one process stands for two agents here: each has its own holder lock

    first = hold(a, knob, shared.RAISE_ONLY, "2")
    assert (first.previous, first.value, first.original, first.others) == ("1", "2", "1", {})
    assert knob.read() == "2"
    second = hold(b, knob, shared.RAISE_ONLY, "4")               # needs queue 3: raises
    assert knob.read() == "4" and second.original == "1" and second.others == {a.holder.id: "2"}
    account = a.read_account()["knobs"]["k"]
    assert account["original"] == "1" and account["value"] == "4"
    assert {h: v["wants"] for h, v in account["holders"].items()} == {a.holder.id: "2", b.holder.id: "4"}

    # Channels are not lowered while anyone holds them (a channel change rebuilds the rings of most
    # NICs: the feeds still running would lose packets); the last one out writes the original back.
    assert release(b, b.holder.id) == "4" and knob.read() == "4"
    assert release(a, a.holder.id) == "1"
    assert knob.read() == "1" and a.read_account()["knobs"] == {}
    assert release(a, a.holder.id) is None     # released before: nothing happens, exactly once


def test_a_knob_takes_the_highest_wish_and_a_leaving_holder_recomputes(tmp_path):
    knob = knob_file(tmp_path, "gro_flush_timeout", "0")
    a, b = shared.NodeState(str(tmp_path / "node")), shared.NodeState(str(tmp_path / "node"))
    a.register("a")
    b.register("b")
    hold(a, knob, shared.HIGHEST, "200000")
    hold(b, knob, shared.HIGHEST, "100000")
    assert knob.read() == "200000"            # b asked for less: it does not undo a's value
    release(a, a.holder.id)
    assert knob.read() == "100000"            # now only b's wish counts
    release(b, b.holder.id)
    assert knob.read() == "0"


def test_drift_repair_compares_with_the_accounts_value_not_with_its_own_wish(tmp_path):
    knob = knob_file(tmp_path, value="1")
    a, b = shared.NodeState(str(tmp_path / "node")), shared.NodeState(str(tmp_path / "node"))
    a.register("a")
    b.register("b")
    held = hold(a, knob, shared.RAISE_ONLY, "2")
    drift = DriftChecker([SharedWatched(knob, held.value, node=a, key="k")], restore=True)
    hold(b, knob, shared.RAISE_ONLY, "4")      # a neighbour raises the knob: not drift for a
    assert drift.check() == [] and knob.read() == "4"
    knob.write("3")                            # someone outside the account changes it: drift
    events = drift.check()
    assert [(e.expected, e.found, e.restored) for e in events] == [("4", "3", True)]
    assert knob.read() == "4", "put back to the account's value, never to this agent's own wish (2)"


def _hold_pages_at_once(node_dir, pool_path, pages, barrier, done):
    node = shared.NodeState(node_dir)
    node.register(f"feed-{os.getpid()}")
    pool = HugepagesSetting(pool_path, "hugepages")
    barrier.wait(60)
    with node.locked() as account:
        account.hold_pages(pool, node.holder, pages)
    done.wait()          # stay alive: a live holder is never pruned


def test_agents_reserving_hugepages_at_the_same_instant_keep_every_reservation(tmp_path):
    pool = tmp_path / "nr_hugepages"
    pool.write_text("5\n")
    node_dir = str(tmp_path / "node")
    ctx = multiprocessing.get_context("fork")
    barrier, done = ctx.Barrier(6), ctx.Event()
    procs = [ctx.Process(target=_hold_pages_at_once, args=(node_dir, str(pool), 8 + i, barrier, done))
             for i in range(6)]
    for p in procs:
        p.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            entry = shared.NodeState(node_dir).read_account()["hugepages"].get(str(pool), {})
            if len(entry.get("holders", {})) == 6:
                break
            time.sleep(0.05)
        entry = shared.NodeState(node_dir).read_account()["hugepages"][str(pool)]
        assert sorted(h["pages"] for h in entry["holders"].values()) == [8, 9, 10, 11, 12, 13]
        assert entry["original"] == 5
        assert int(pool.read_text()) == 5 + sum(range(8, 14)), "no reservation lost to a concurrent one"
    finally:
        done.set()
        for p in procs:
            p.join(60)
    assert [p.exitcode for p in procs] == [0] * 6
    # All six are gone now: the next agent to take the lock for a change releases them, exactly.
    survivor = shared.NodeState(node_dir)
    survivor.register("survivor")
    with survivor.locked() as account:
        released = account.prune()
    assert len(released) == 6 and int(pool.read_text()) == 5
    assert survivor.read_account()["hugepages"] == {}


def _hold_and_hang(node_dir, knob_path, ready):
    node = shared.NodeState(node_dir)
    node.register("doomed")
    with node.locked() as account:
        account.hold_knob("k", FileSetting(knob_path, "channels"), shared.RAISE_ONLY, node.holder, "8")
    Journal(os.path.join(node_dir, "..", "doomed-state")).record(
        shared.HeldKnob(node_dir, node.holder.id, "k", "channels"), "1", "8")
    ready.set()
    time.sleep(60)


def test_a_sigkilled_holder_is_released_exactly_once_by_restore_or_by_the_next_change(tmp_path):
    knob = knob_file(tmp_path, value="1")
    node_dir = str(tmp_path / "node")
    (tmp_path / "doomed-state").mkdir()
    ctx = multiprocessing.get_context("fork")

    def killed_holder():
        ready = ctx.Event()
        p = ctx.Process(target=_hold_and_hang, args=(node_dir, knob.path, ready))
        p.start()
        assert ready.wait(20)
        os.kill(p.pid, signal.SIGKILL)
        p.join(10)

    # 1. restore (the journal) releases it; a second restore finds nothing to do
    killed_holder()
    assert knob.read() == "8", "SIGKILL leaves the holding in the account and the knob set"
    assert len(shared.NodeState(node_dir).read_account()["knobs"]["k"]["holders"]) == 1
    journal = Journal(str(tmp_path / "doomed-state"))
    assert all(r.ok for r in journal.restore_all())
    assert knob.read() == "1" and shared.NodeState(node_dir).read_account()["knobs"] == {}
    assert os.listdir(os.path.join(node_dir, "holders")) == [], "the dead holder's lock file is gone too"

    # 2. a live agent's change prunes it first; the later restore then changes nothing
    killed_holder()
    live = shared.NodeState(node_dir)
    live.register("live")
    hold(live, knob, shared.RAISE_ONLY, "2")
    assert knob.read() == "2", "the gone holder's 8 no longer counts"
    journal = Journal(str(tmp_path / "doomed-state"))
    assert len(journal.pending()) == 1
    assert all(r.ok for r in journal.restore_all())
    assert knob.read() == "2", "restore after the prune does not release anything twice"
    assert list(live.read_account()["knobs"]["k"]["holders"]) == [live.holder.id]


def test_a_refused_release_keeps_the_holder_on_record(tmp_path):
    knob = knob_file(tmp_path, value="1")
    node = shared.NodeState(str(tmp_path / "node"))
    node.register("a")
    hold(node, knob, shared.RAISE_ONLY, "3")
    os.chmod(knob.path, 0o400)
    if os.access(knob.path, os.W_OK):     # root ignores the mode: make the path unwritable instead
        os.chmod(knob.path, 0o600)
        os.rename(knob.path, knob.path + ".moved")
    try:
        with pytest.raises(OSError):
            release(node, node.holder.id)
        assert list(node.read_account()["knobs"]["k"]["holders"]) == [node.holder.id]
    finally:
        if os.path.exists(knob.path + ".moved"):
            os.rename(knob.path + ".moved", knob.path)
    assert release(node, node.holder.id) == "1" and knob.read() == "1"


def test_holders_are_alive_exactly_while_their_process_lives(tmp_path):
    node_dir = str(tmp_path / "node")
    ctx = multiprocessing.get_context("fork")
    ready, done = ctx.Event(), ctx.Event()
    found = ctx.Queue()

    def child():
        n = shared.NodeState(node_dir)
        found.put(n.register("child").id)
        ready.set()
        done.wait(30)

    p = ctx.Process(target=child)
    p.start()
    hid = found.get(timeout=20)
    observer = shared.NodeState(node_dir)
    assert observer.alive(hid)
    done.set()
    p.join(10)
    assert not observer.alive(hid)
