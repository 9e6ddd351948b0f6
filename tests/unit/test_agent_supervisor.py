"""Engine supervision with stand-in engines: tiny Python children that exit, crash or ignore
SIGTERM on cue. (The real engine under the agent: tests/netns/test_agent_netns.py.)
Nothing here asserts a duration: waits are bounded, assertions are about states and counts."""
import os
import signal
import sys

import pytest

from tickwire_agent.supervisor import State, Supervisor
from tests.support.waiting import wait_until


def wait_for(predicate, timeout=20.0):
    return wait_until("the supervisor condition", predicate, timeout, interval=0.02)


def child(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_a_crashed_engine_is_restarted_with_growing_backoff_and_the_hooks_run(tmp_path):
    exits, starts = [], []
    sup = Supervisor(child("import sys; print('boom', flush=True); sys.exit(1)"), str(tmp_path / "e.log"),
                     before_start=lambda: starts.append(1), after_exit=exits.append,
                     backoff_initial=0.01, backoff_max=0.04)
    sup.start()
    try:
        wait_for(lambda: sup.restarts >= 4)
    finally:
        sup.stop()
    assert sup.state is State.STOPPED
    assert len(exits) >= 4 and len(starts) >= len(exits)
    assert exits[0].returncode == 1 and exits[0].message == "boom"
    assert "exited with status 1" in exits[0].description


def test_bad_config_exit_is_not_retried(tmp_path):
    sup = Supervisor(child("import sys; sys.stderr.write('core 9 is not online\\n'); sys.exit(2)"),
                     str(tmp_path / "e.log"), backoff_initial=0.01)
    sup.start()
    wait_for(lambda: sup.state is State.FAILED)
    assert sup.restarts == 0
    assert "rejected its configuration" in sup.last_exit.description
    assert sup.last_exit.message == "core 9 is not online"
    sup.stop()


def test_in_use_exit_is_permanent_and_names_the_owner(tmp_path):
    """Exit 5: another live engine owns the queue (or a foreign XDP program the interface); a
    restart would meet the same owner, so the supervisor stops after the first run."""
    sup = Supervisor(child("import sys; sys.stderr.write('queue 1 of eth1 is owned by pid 4242\\n'); "
                           "sys.exit(5)"), str(tmp_path / "e.log"), backoff_initial=0.01)
    sup.start()
    wait_for(lambda: sup.state is State.FAILED)
    sup.stop()
    assert sup.restarts == 0 and sup.state is State.FAILED
    assert "in use (exit 5)" in sup.last_exit.description
    assert sup.last_exit.message == "queue 1 of eth1 is owned by pid 4242"


def test_a_failing_after_exit_hook_does_not_stop_supervision(tmp_path):
    """The hook cleans up after the engine (XDP release); if it raises, the engine is still
    restarted, never left looking RUNNING while nothing runs."""
    def broken_hook(_exit):
        raise RuntimeError("netlink said no")

    sup = Supervisor(child("import sys; sys.exit(1)"), str(tmp_path / "e.log"),
                     after_exit=broken_hook, backoff_initial=0.01, backoff_max=0.02)
    sup.start()
    try:
        wait_for(lambda: sup.restarts >= 2)
    finally:
        sup.stop()
    assert sup.state is State.STOPPED


def test_a_killed_engine_is_noticed_and_restarted(tmp_path):
    sup = Supervisor(child("import time; time.sleep(60)"), str(tmp_path / "e.log"), backoff_initial=0.01)
    sup.start()
    try:
        wait_for(lambda: sup.pid is not None)
        first = sup.pid
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: sup.pid not in (None, first))
        assert sup.last_exit.returncode == -signal.SIGKILL and "SIGKILL" in sup.last_exit.description
        assert sup.restarts == 1
    finally:
        sup.stop()


def test_stop_escalates_to_sigkill_when_sigterm_is_ignored(tmp_path):
    code = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); "
            "time.sleep(60)")
    log = tmp_path / "e.log"
    sup = Supervisor(child(code), str(log), stop_timeout=0.3)
    sup.start()
    wait_for(lambda: log.exists() and "ready" in log.read_text())
    last = sup.stop()
    assert last.returncode == -signal.SIGKILL
    assert sup.restarts == 0 and sup.state is State.STOPPED


def test_a_clean_stop_gives_the_engines_own_exit(tmp_path):
    code = ("import signal, sys, time\n"
            "signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\n"
            "print('ready', flush=True)\n"
            "time.sleep(60)\n")
    log = tmp_path / "e.log"
    sup = Supervisor(child(code), str(log))
    sup.start()
    wait_for(lambda: log.exists() and "ready" in log.read_text())
    assert sup.stop().returncode == 0


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to tell affinities apart")
def test_the_engine_may_use_its_core_while_the_supervisor_thread_may_not(tmp_path):
    cpus = sorted(os.sched_getaffinity(0))
    log = tmp_path / "e.log"
    code = "import os; print(sorted(os.sched_getaffinity(0)), flush=True); import time; time.sleep(60)"
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpus[0]})           # the agent's thread, kept off cpus[1]
    try:
        sup = Supervisor(child(code), str(log), child_cpus={cpus[0], cpus[1]})
        sup.start()
        wait_for(lambda: log.exists() and "]" in log.read_text())
        sup.stop()
        assert log.read_text().splitlines()[0] == str([cpus[0], cpus[1]])
        assert os.sched_getaffinity(0) == {cpus[0]}
    finally:
        os.sched_setaffinity(0, before)
