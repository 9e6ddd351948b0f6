"""Drift: a setting changed under the agent is counted, reported, and put back if the plan says so
(files in a temp dir stand in for sysfs here; tests/netns changes real sysfs under a running agent)."""
from tickwire_agent.drift import DriftChecker
from tickwire_agent.tuning.host import Watched
from tickwire_agent.tuning.settings import FileSetting


def watched(tmp_path, value="200000"):
    path = tmp_path / "gro_flush_timeout"
    path.write_text(value)
    return Watched(FileSetting(str(path), "gro_flush_timeout"), value)


def test_drift_is_put_back_and_counted_once_per_change(tmp_path):
    w = watched(tmp_path)
    checker = DriftChecker([w], restore=True)
    assert checker.check() == [] and checker.events == {"gro_flush_timeout": 0}
    w.setting.write("0")
    (event,) = checker.check()
    assert event.restored and event.found == "0" and w.setting.read() == "200000"
    assert checker.events["gro_flush_timeout"] == 1 and checker.outstanding == {}
    assert "gro_flush_timeout was 0, the plan wants 200000 (put back" in checker.history[-1]
    assert checker.check() == []
    w.setting.write("5")
    checker.check()
    assert checker.events["gro_flush_timeout"] == 2


def test_drift_left_in_place_when_the_plan_says_so(tmp_path):
    w = watched(tmp_path)
    checker = DriftChecker([w], restore=False)
    w.setting.write("0")
    checker.check()
    checker.check()
    assert w.setting.read() == "0"
    assert checker.events["gro_flush_timeout"] == 1          # one change, seen twice
    assert checker.drifted["gro_flush_timeout"] is True
    assert "left as found" in checker.outstanding["gro_flush_timeout"]
    w.setting.write("200000")                                 # someone put it back
    checker.check()
    assert checker.outstanding == {} and checker.drifted["gro_flush_timeout"] is False
