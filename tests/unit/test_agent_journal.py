"""The undo journal, on files in a temp dir standing in for sysfs (real sysfs in tests/netns)."""
import json
import os

from tickwire_agent.journal import Journal
from tickwire_agent.tuning.settings import FileSetting, HugepagesSetting, from_record


def knob(tmp_path, name, value):
    path = tmp_path / name
    path.write_text(f"{value}\n")
    return FileSetting(str(path), name)


def test_restore_puts_every_value_back_newest_first_and_removes_the_journal(tmp_path):
    journal = Journal(str(tmp_path))
    a = knob(tmp_path, "a", "0")
    journal.record(a, "0", "1")
    a.write("1")
    journal.record(a, "1", "2")        # the same knob twice: unwinds to the oldest value
    a.write("2")
    b = knob(tmp_path, "b", "x")
    journal.record(b, "x", "y")
    b.write("y")
    results = journal.restore_all()
    assert [r.ok for r in results] == [True, True, True]
    assert a.read() == "0" and b.read() == "x"
    assert not journal.exists()


def test_a_new_process_restores_from_the_file_alone(tmp_path):
    a = knob(tmp_path, "gro_flush_timeout", "0")
    Journal(str(tmp_path)).record(a, "0", "200000")
    a.write("200000")
    # "the agent crashed": a fresh Journal object, settings rebuilt from records
    pending = Journal(str(tmp_path)).pending()
    assert len(pending) == 1 and pending[0].setting.path == a.path and pending[0].previous == "0"
    Journal(str(tmp_path)).restore_all()
    assert a.read() == "0"


def test_a_torn_last_line_is_skipped_and_the_rest_restored(tmp_path):
    a = knob(tmp_path, "a", "0")
    journal = Journal(str(tmp_path))
    journal.record(a, "0", "5")
    a.write("5")
    with open(journal.path, "a") as f:
        f.write('{"op": "set", "id": 2, "setting": {"ki')      # power cut mid-write
    assert len(Journal(str(tmp_path)).pending()) == 1
    Journal(str(tmp_path)).restore_all()
    assert a.read() == "0"


def test_a_failed_restore_keeps_its_record_for_the_next_attempt(tmp_path):
    a = knob(tmp_path, "a", "0")
    journal = Journal(str(tmp_path))
    journal.record(a, "0", "1")
    gone = FileSetting(str(tmp_path / "vanished"), "vanished")
    journal.record(gone, "7", "8")
    results = journal.restore_all()
    assert [r.ok for r in results] == [False, True]           # newest first
    assert "vanished" not in [r.entry.setting.label for r in results if r.ok]
    assert a.read() == "0"
    left = Journal(str(tmp_path)).pending()
    assert [e.setting.label for e in left] == ["vanished"]


def test_restored_records_are_not_restored_twice(tmp_path):
    a = knob(tmp_path, "a", "0")
    journal = Journal(str(tmp_path))
    entry = journal.record(a, "0", "1")
    journal.mark_restored(entry)
    a.write("9")                       # someone else's value now: must not be clobbered
    assert journal.pending() == []
    journal.restore_all()
    assert a.read() == "9"


def test_records_are_json_lines_with_the_previous_value(tmp_path):
    a = knob(tmp_path, "a", "0")
    Journal(str(tmp_path)).record(a, "0", "1")
    (line,) = open(tmp_path / "journal.jsonl").read().splitlines()
    assert json.loads(line) == {"op": "set", "id": 1, "previous": "0", "applied": "1",
                                "setting": {"kind": "file", "path": a.path, "label": "a"},
                                "boot": open("/proc/sys/kernel/random/boot_id").read().strip()}
    assert oct(os.stat(tmp_path / "journal.jsonl").st_mode & 0o777) == "0o600"


def test_hugepages_restore_takes_back_only_our_share_when_others_grew_the_pool(tmp_path):
    pool = tmp_path / "nr_hugepages"
    pool.write_text("0\n")
    setting = HugepagesSetting(str(pool), "hugepages")
    setting.write(4)                   # we: 0 -> 4
    setting.restore(0, 4)
    assert setting.read() == 0         # nobody else: exactly as before
    setting.write(10)                  # we took 4, another tenant added 6 after us
    setting.restore(0, 4)
    assert setting.read() == 6
    assert setting.drifted(3, 4) and not setting.drifted(10, 4)   # shrinking is drift, growing is not


def test_every_kind_rebuilds_from_its_record():
    from tickwire_agent.tuning.nic import ChannelsSetting
    from tickwire_agent.tuning.xdp import XdpSetting
    for setting in (ChannelsSetting("eth9", "rx_count"), XdpSetting("eth9"),
                    HugepagesSetting("/x/nr_hugepages", "hugepages"), FileSetting("/x/y", "y")):
        rebuilt = from_record(setting.to_record())
        assert type(rebuilt) is type(setting) and rebuilt.to_record() == setting.to_record()


def test_records_from_before_a_reboot_are_not_restored(tmp_path):
    """The boot reset (or set anew) what an agent changed before it: restoring those "previous"
    values would undo the boot's own settings (a hugepage pool the boot reserved, say)."""
    pool = knob(tmp_path, "nr_hugepages", "8")            # the boot reserved 8
    Journal(str(tmp_path), boot="boot-1").record(pool, "0", "4")
    after_reboot = Journal(str(tmp_path), boot="boot-2")
    assert after_reboot.pending() == []
    results = after_reboot.restore_all()
    assert results == [] and pool.read() == "8" and not after_reboot.exists()
    entry = after_reboot.record(pool, "8", "12")          # ids never collide with the old records
    assert entry.id == 2 and [e.id for e in Journal(str(tmp_path), boot="boot-2").pending()] == [2]
