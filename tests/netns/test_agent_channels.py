"""Channels put back only once no AF_XDP pool is left on the queues that go away (issue 10,
"Also found": the agent's `ethtool -L` restore raced the kernel freeing the engine's socket,
EINVAL "too low for existing AF_XDP sockets", exit 4, channels left raised).

The race is made certain here instead of waited for: a real engine holds an AF_XDP socket on
queue 3 while the restore starts and is stopped a moment later. The restore must wait for the
kernel to let go of the queue (netdev queue-get's xsk attribute) and then succeed; with an engine
that never goes, it fails after its bounded wait, naming the queue, and changes nothing. The
start/stop cycles through the whole agent are in test_agent_many_feeds.py.
"""
from __future__ import annotations

import sys

import pytest

from tests.support.engine_run import ENGINE
from tests.support.netns import VethPair

pytestmark = pytest.mark.netns

SCRIPT = r"""
import json, os, signal, subprocess, sys, threading, time
from pyroute2.ethtool import Ethtool
from tickwire_agent.tuning import nic, xsk

ifname, engine, root, stop_after, stats = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), sys.argv[5]
Ethtool().set_channels(ifname, {"rx_count": 4})
proc = subprocess.Popen([engine, "run", "--iface", ifname, "--queue", "3", "--line", "A=239.1.1.1:1000",
                         "--mode", "generic", "--bpffs-root", root, "--quiet", "--stats-json", stats])
deadline = time.monotonic() + 30
while not os.path.exists(stats) and time.monotonic() < deadline:
    time.sleep(0.05)
result = {"pools_while_running": sorted(xsk.pool_queues(ifname))}
if stop_after >= 0:
    threading.Timer(stop_after, proc.send_signal, (signal.SIGTERM,)).start()
started = time.monotonic()
try:
    nic.ChannelsSetting(ifname, "rx_count")._lower(1, timeout=5.0 if stop_after >= 0 else 1.0)
    result["error"] = None
except OSError as e:
    result["error"] = str(e)
result["waited_s"] = time.monotonic() - started
result["rx_count"] = Ethtool().get_channels(ifname).rx_count
proc.send_signal(signal.SIGTERM)
proc.wait(30)
result["pools_after"] = sorted(xsk.pool_queues(ifname))
print(json.dumps(result))
"""


@pytest.fixture
def pair():
    with VethPair(queues=4) as p:
        yield p


def lower_with_an_engine_on_queue_3(pair, bpffs_root, tmp_path, stop_after: float) -> dict:
    import json
    out = pair.run(pair.node_ns, sys.executable, "-c", SCRIPT, pair.node_if, ENGINE, bpffs_root,
                   str(stop_after), str(tmp_path / "stats.json"), timeout=120).stdout
    return json.loads(out.splitlines()[-1])


def test_channels_are_lowered_once_the_engines_socket_has_left_the_queue(pair, bpffs_root, tmp_path):
    result = lower_with_an_engine_on_queue_3(pair, bpffs_root, tmp_path, stop_after=0.7)
    assert result["pools_while_running"] == [3], "the kernel reports the engine's pool on queue 3"
    assert result["error"] is None, result
    assert result["waited_s"] >= 0.6, "it waited for the engine's socket instead of failing at once"
    assert result["rx_count"] == 1 and result["pools_after"] == []


def test_a_socket_that_never_leaves_fails_the_restore_after_a_bounded_wait(pair, bpffs_root, tmp_path):
    result = lower_with_an_engine_on_queue_3(pair, bpffs_root, tmp_path, stop_after=-1)
    assert result["error"] and "still bound to queue [3]" in result["error"], result
    assert 0.9 <= result["waited_s"] < 10, result
    assert result["rx_count"] == 4, "nothing changed"
