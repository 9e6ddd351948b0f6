"""The state directory: one agent at a time, and after a clean exit nothing of the agent's left."""
import os

import pytest

from tickwire_agent.statedir import OWN_FILES, StateDir, StateDirBusy


def test_remove_deletes_the_agents_files_and_the_then_empty_directory(tmp_path):
    state = StateDir(str(tmp_path / "feed"))
    state.lock()
    for name in OWN_FILES:
        (tmp_path / "feed" / name).write_text("x")
    state.remove()
    assert not (tmp_path / "feed").exists()


def test_remove_never_deletes_what_is_not_the_agents(tmp_path):
    state = StateDir(str(tmp_path))          # say, a --state-dir pointing at a directory in use
    state.lock()
    (tmp_path / "stats.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("mine")
    state.remove()
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]


def test_a_second_agent_waits_for_the_first_and_then_locks_the_new_lock_file(tmp_path):
    first, second = StateDir(str(tmp_path / "feed")), StateDir(str(tmp_path / "feed"))
    first.lock()
    with pytest.raises(StateDirBusy, match=f"pid {os.getpid()}"):
        second.lock()
    first.remove()                           # the lock file goes with the first agent
    second.lock()
    third = StateDir(str(tmp_path / "feed"))
    with pytest.raises(StateDirBusy):        # held on the file that is there now, not on a deleted one
        third.lock()
