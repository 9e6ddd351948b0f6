"""scripts/containers_conf.py: podman's containers.conf edited in place, only the keys given."""
from __future__ import annotations

import pathlib
import subprocess
import sys
import tomllib

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "containers_conf.py"
SETTINGS = ['engine.runtime="runc"', 'engine.cgroup_manager="cgroupfs"',
            'containers.default_ulimits=["nofile=20000:20000", "nproc=32768:32768"]']


def edit(path, *settings):
    return subprocess.run([sys.executable, str(SCRIPT), str(path), *settings], capture_output=True, text=True,
                          timeout=30)


def test_sets_the_keys_keeps_everything_else_and_a_second_run_changes_nothing(tmp_path):
    conf = tmp_path / "containers.conf"
    conf.write_text('# site settings\n[containers]\nlog_size_max = 4096\ndefault_ulimits = [\n  "nofile=1048576:1048576",\n]\n'
                    '\n[engine]\n# the runtime\nruntime = "crun"\nevents_logger = "file"\n\n[engine.runtimes]\nrunc = ["/usr/bin/runc"]\n')
    assert edit(conf, *SETTINGS).returncode == 0
    text = conf.read_text()
    parsed = tomllib.loads(text)
    assert parsed["engine"]["runtime"] == "runc" and parsed["engine"]["cgroup_manager"] == "cgroupfs"
    assert parsed["containers"]["default_ulimits"] == ["nofile=20000:20000", "nproc=32768:32768"]
    assert parsed["containers"]["log_size_max"] == 4096 and parsed["engine"]["events_logger"] == "file"
    assert parsed["engine"]["runtimes"]["runc"] == ["/usr/bin/runc"]
    assert "# site settings" in text and "# the runtime" in text and "1048576" not in text
    again = edit(conf, *SETTINGS)
    assert again.returncode == 0 and again.stdout == "" and conf.read_text() == text


def test_a_missing_file_is_created_and_a_bad_setting_changes_nothing(tmp_path):
    conf = tmp_path / "etc" / "containers.conf"
    assert edit(conf, *SETTINGS).returncode == 0
    assert tomllib.loads(conf.read_text())["engine"]["runtime"] == "runc"
    before = conf.read_text()
    bad = edit(conf, 'engine.runtime="runc"', 'engine.cgroup_manager=cgroupfs')   # not a TOML value
    assert bad.returncode == 1 and "not be valid TOML" in bad.stderr
    assert conf.read_text() == before
    assert edit(conf, "runtime=runc").returncode == 2
