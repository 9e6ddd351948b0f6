"""Run `tickwire-agent` in the node namespace of a VethPair, the way a node would, and look at the
host it tunes from outside the agent's code: files read with `cat`-like reads, channels through
pyroute2's ethtool, XDP and multicast membership from the kernel's own tables, all inside the
namespace (where sysfs shows the namespace's veth).

Shared by tests/netns/test_agent*.py and tests/integration/test_prometheus*.py. It holds no
tests itself; its name only keeps it among the agent's test files.
"""
from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

from prometheus_client.parser import text_string_to_metric_families

from tests.support.netns import VethPair
from tests.support.waiting import wait_until

AGENT = [sys.executable, "-m", "tickwire_agent"]
HUGEPAGES = "/sys/kernel/mm/hugepages/hugepages-2048kB"

# Everything the agent may touch, read inside the node namespace by a separate Python process.
SNAPSHOT = r"""
import json, sys
from pyroute2 import IPRoute
from pyroute2.ethtool import Ethtool
ifname, hp = sys.argv[1], sys.argv[2]
def read(path):
    with open(path) as f:
        return f.read().strip()
ch = Ethtool().get_channels(ifname)
with IPRoute() as ipr:
    xdp = ipr.link("get", ifname=ifname)[0].get_attr("IFLA_XDP")
groups, device = [], None
for line in read("/proc/net/igmp").splitlines()[1:]:
    if line and not line[0].isspace():
        # "%-10s:" leaves no space before the colon from 10 characters on ("5\ttwn2621412:")
        device = line.split(":", 1)[0].split()[1]
    elif device == ifname and line.split():
        groups.append(line.split()[0])
print(json.dumps({
    "napi_defer_hard_irqs": read(f"/sys/class/net/{ifname}/napi_defer_hard_irqs"),
    "gro_flush_timeout": read(f"/sys/class/net/{ifname}/gro_flush_timeout"),
    "rx_channels": ch.rx_count, "tx_channels": ch.tx_count,
    "xdp_prog": (xdp.get_attr("IFLA_XDP_PROG_ID") or 0) if xdp else 0,
    "igmp_groups": sorted(groups),
    "nr_hugepages": int(read(f"{hp}/nr_hugepages")),
}))
"""

SCRAPE = r"""
import sys, urllib.request
print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())
"""


def host_snapshot(pair: VethPair) -> dict:
    out = pair.run(pair.node_ns, sys.executable, "-c", SNAPSHOT, pair.node_if, HUGEPAGES).stdout
    return json.loads(out)


def igmp_hex(group: str) -> str:
    """A group as /proc/net/igmp prints it (host-order hex of the network-order address)."""
    import socket
    return f"{int.from_bytes(socket.inet_aton(group), sys.byteorder):08X}"


def wait_for(predicate, what: str, timeout: float = 30.0, interval: float = 0.1):
    return wait_until(what, predicate, timeout, interval)


def plan_for(pair: VethPair, **changes) -> dict:
    plan = {
        "apiVersion": "tickwire.dev/plan-v1", "feedHandler": None,
        "feed": {"name": "test-feed", "protocol": "moldudp64-itch50"},
        "interface": pair.node_if, "queue": 0,
        "lines": [{"name": "A", "group": "239.7.1.1", "port": 26400},
                  {"name": "B", "group": "239.7.1.2", "port": 26400}],
        "cores": [max(os.sched_getaffinity(0))],
        "hugepages": {"count": 8},
        "xdpMode": "generic", "zeroCopy": "auto",
        "busyPoll": {"enabled": False, "napiDeferHardIrqs": 2, "groFlushTimeoutNs": 200000},
        "latencySLO": {"p99Micros": 10000},
        "metrics": {"address": "127.0.0.1", "port": 0},
        "statusIntervalSeconds": 1,
    }
    plan.update(changes)
    return plan


class AgentProcess:
    """One agent in the node namespace; its stdout goes to a file the test can read."""

    def __init__(self, pair: VethPair, plan: dict, tmp_path, state_dir=None, extra=(), wrap=(),
                 node_state_dir=None, bpffs_root=None):
        """`wrap`: a command prefix the agent runs under (setpriv, taskset, a read-only root...);
        `node_state_dir`: the node-wide account (default: the test's own, never the host's
        /run/tickwire/node; agents meant to share must be given the same one); `bpffs_root`: the
        steering pin root (the `bpffs_root` fixture's; default the agent's own)."""
        self.pair = pair
        self.tmp = tmp_path
        self.plan_path = tmp_path / f"plan-{time.monotonic_ns()}.json"
        self.plan_path.write_text(json.dumps(plan))
        self.state_dir = pathlib.Path(state_dir or (tmp_path / "state"))
        self.log_path = tmp_path / f"agent-{time.monotonic_ns()}.log"
        self.node_state_dir = pathlib.Path(node_state_dir or (tmp_path / "node"))
        self.extra = list(extra) + (["--bpffs-root", str(bpffs_root)] if bpffs_root else [])
        self.wrap = list(wrap)
        self.proc: subprocess.Popen | None = None

    def start(self) -> "AgentProcess":
        self._log = open(self.log_path, "w")
        self.proc = self.pair.popen(self.pair.node_ns, [*self.wrap, *AGENT, "run", "--plan", str(self.plan_path),
                                                        "--state-dir", str(self.state_dir),
                                                        "--node-state-dir", str(self.node_state_dir), *self.extra],
                                    stdout=self._log, stderr=subprocess.STDOUT)
        return self

    @property
    def output(self) -> str:
        return self.log_path.read_text()

    def runtime(self) -> dict:
        path = self.state_dir / "agent.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until the engine runs and the agent has said so (EngineReady=True)."""
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"agent exited {self.proc.returncode}:\n{self.output}")
            return "EngineReady=True" in self.output and self.runtime().get("metrics_port")
        wait_for(ready, "the agent's engine to be ready", timeout)

    def engine_pid(self) -> int | None:
        path = self.state_dir / "engine.pid"
        try:
            return int(path.read_text())
        except (FileNotFoundError, ValueError):
            return None

    def metrics_text(self) -> str:
        url = f"http://127.0.0.1:{self.runtime()['metrics_port']}/metrics"
        return self.pair.run(self.pair.node_ns, sys.executable, "-c", SCRAPE, url).stdout

    def metrics(self) -> dict:
        """{(name, frozenset(labels minus feed)): value}."""
        samples = {}
        for family in text_string_to_metric_families(self.metrics_text()):
            for s in family.samples:
                labels = {k: v for k, v in s.labels.items() if k != "feed"}
                samples[(s.name, frozenset(labels.items()))] = s.value
        return samples

    def stop(self, sig=signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self._log.close()
        return code

    def kill_all(self) -> None:
        """Cleanup: the agent, and an engine it may have left (by the pid it recorded)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        pid = self.engine_pid()
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def metric(samples: dict, name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def metric_sum(samples: dict, name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


def thread_cpus(pid: int) -> dict[int, str]:
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            for line in open(f"/proc/{pid}/task/{tid}/status"):
                if line.startswith("Cpus_allowed_list:"):
                    out[int(tid)] = line.split(":", 1)[1].strip()
        except FileNotFoundError:
            pass
    return out


# ---- what a container runtime does to the agent, one piece at a time, as command prefixes ----

SECCOMP_EXEC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seccomp_exec.py")


def only_capabilities(caps) -> list[str]:
    """Run as root with exactly `caps` (names such as NET_ADMIN), as a container's runtime leaves
    it: the bounding set cut to them, so even root gets nothing else."""
    spec = ",".join(["-all", *(f"+{c.lower()}" for c in sorted(caps))])
    return ["setpriv", f"--bounding-set={spec}", f"--inh-caps={spec}"]


def under_seccomp(profile, caps) -> list[str]:
    """Under a container seccomp profile, resolved for `caps` (tests/support/seccomp_exec.py)."""
    return [sys.executable, SECCOMP_EXEC, str(profile), ",".join(sorted(caps)), "--"]


def read_only_root(*writable) -> list[str]:
    """A private mount namespace whose root filesystem is read-only, as readOnlyRootFilesystem
    makes a container's, except the `writable` directories (bind-mounted onto themselves first,
    like the Pod's hostPath volumes). /run and /tmp are on the root filesystem here, so the
    agent's default state root (/run/tickwire) is read-only too."""
    binds = " && ".join(f'mount --bind "{d}" "{d}"' for d in writable)
    script = f'{binds + " && " if binds else ""}mount -o remount,bind,ro / && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "read-only-root"]


def on_cpus(cpus) -> list[str]:
    return ["taskset", "-c", ",".join(map(str, sorted(cpus)))]


def capability_mask(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        return int(next(l for l in f if l.startswith("CapEff:")).split()[1], 16)
