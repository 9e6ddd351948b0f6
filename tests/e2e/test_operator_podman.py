"""One full run with a real container runtime: the operator's own agent Pod under podman.

A FeedHandler is applied with the official client; the operator (kopf, for real) places it on a
node whose inventory names the node side of a veth pair and creates the agent Pod; the test is
that node's kubelet: it runs the Pod exactly as the operator wrote it, through
tickwire_demo.podman_pod (`podman kube play` of the image `make images` built, translated only by
the documented rules of `podman_manifest`, inside the node's network namespace so hostNetwork
means that namespace). There is no token issuer here: the kubelet's service-account token is
replaced by a kubeconfig holding the Pod's service-account token from the emulator (RBAC applies),
mounted in the token's place, with KUBECONFIG naming it.

From the running container it checks what a kubelet would enforce: the capability set, the
read-only root, the seccomp filter, no CFS throttling of the CPU quota the Pod asked for; and the
product's promises: the feed counted exactly (against tickwire-feed's ledger), Ready in status,
every host setting back after `podman pod stop`, and again after the container is SIGKILLed
(podman restarts it, as a kubelet would for restartPolicy Always, and the new agent finds the
journal the killed one left on the node) and the Pod replaced.

Needs root, namespaces, podman and the images: fails instead of skipping when
TICKWIRE_REQUIRE_NETNS=1 (CI, where `make test` builds the images first).
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys

import kubernetes.client as k8s
import pytest

from tests.support.agent_run import host_snapshot
from tests.support.kube_emulator import FEEDHANDLER_CRD, KubeEmulator, load_yaml, netns_executor
from tests.support.netns import VethPair
from tests.support.waiting import log_tails, wait_until
from tickwire_demo.podman_pod import Node, PodmanPod, node_sysfs, podman_available

pytestmark = [pytest.mark.netns, pytest.mark.slow]

ROOT = pathlib.Path(__file__).resolve().parents[2]
GROUP, VERSION, PLURAL = "tickwire.dev", "v1alpha1", "feedhandlers"
FEEDHANDLERS = f"{GROUP}/{VERSION}/{PLURAL}"
NS = "feeds"
NODE = "trading-1"
BIN = pathlib.Path(sys.executable).parent
SECCOMP_PROFILE = ROOT / "charts" / "tickwire" / "files" / "tickwire-agent-seccomp.json"
MESSAGES = 20_000
AGENT_IMAGE = "localhost/tickwire/agent:0.1.0"
INPUTS_LABEL = "dev.tickwire.inputs"
# Linux capability numbers (include/uapi/linux/capability.h) of the names a Pod may add.
CAPABILITY_BITS = {"CHOWN": 0, "DAC_OVERRIDE": 1, "FOWNER": 3, "KILL": 5, "SETGID": 6, "SETUID": 7,
                   "NET_BIND_SERVICE": 10, "NET_ADMIN": 12, "NET_RAW": 13, "IPC_LOCK": 14,
                   "SYS_ADMIN": 21, "SYS_NICE": 23, "SYS_RESOURCE": 24, "PERFMON": 38, "BPF": 39}


def image_inputs(image: str) -> str:
    """The hash of the inputs an image was built from, as build-images.sh labels it."""
    return subprocess.run(["podman", "image", "inspect", "--format", f'{{{{index .Labels "{INPUTS_LABEL}"}}}}', image],
                          capture_output=True, text=True, check=True, timeout=60).stdout.strip()


def require_podman() -> str:
    """Skip without podman or without images built from this tree (a test of old code would
    prove nothing), but fail under TICKWIRE_REQUIRE_NETNS=1 (CI). The agent image's inputs hash."""
    ok, why = podman_available()
    if ok:
        check = subprocess.run([str(ROOT / "scripts" / "build-images.sh"), "--check"],
                               capture_output=True, text=True, timeout=120)
        ok, why = check.returncode == 0, check.stderr.strip().replace("\n", "; ")
    if ok:
        return image_inputs(AGENT_IMAGE)
    if os.environ.get("TICKWIRE_REQUIRE_NETNS") == "1":
        pytest.fail(f"TICKWIRE_REQUIRE_NETNS=1 but {why}")
    pytest.skip(why)


def condition(fh, type_):
    return next((c for c in ((fh or {}).get("status") or {}).get("conditions") or [] if c["type"] == type_), None)


def status_is(kube, name, type_, value="True"):
    fh = kube.get(FEEDHANDLERS, NS, name)
    return fh if (condition(fh, type_) or {}).get("status") == value else None


def proc_status(pid: int) -> dict[str, str]:
    lines = pathlib.Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


def cpu_cgroup(pid: int) -> pathlib.Path:
    """The cgroup v1 cpu controller directory of a process (this machine's layout is hybrid: v1
    controllers, each mounted under /sys/fs/cgroup/<controllers>)."""
    for line in pathlib.Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "cpu" in controllers.split(","):
            return pathlib.Path("/sys/fs/cgroup") / controllers / path.lstrip("/")
    raise AssertionError(f"process {pid} has no cgroup v1 cpu controller: {pathlib.Path(f'/proc/{pid}/cgroup').read_text()}")


def cpu_stat(cgroup: pathlib.Path) -> dict[str, int]:
    return {k: int(v) for k, v in (line.split() for line in (cgroup / "cpu.stat").read_text().splitlines())}


def test_the_operator_s_pod_runs_in_podman_counts_the_feed_and_restores_the_host(tmp_path):
    built = require_podman()
    name = f"itch-{os.getpid()}"
    state_root = tmp_path / "node-state"   # the agent's hostPath state root (TICKWIRE_AGENT_STATE_ROOT)
    seccomp_root = tmp_path / "kubelet-seccomp"
    processes: list[subprocess.Popen] = []
    with VethPair(queues=2) as pair, KubeEmulator.running(netns=pair.node_ns) as kube, \
            node_sysfs(pair.node_ns, tmp_path / "node-sys") as sysfs:
        client = netns_executor(pair.node_ns)
        call = lambda fn, *args, **kw: client.submit(fn, *args, **kw).result(timeout=30)  # noqa: E731
        operator_log = tmp_path / "operator.log"
        try:
            api = kube.api_client()
            core, custom = k8s.CoreV1Api(api), k8s.CustomObjectsApi(api)
            call(k8s.ApiextensionsV1Api(api).create_custom_resource_definition, load_yaml(FEEDHANDLER_CRD))
            feed_core = max(os.sched_getaffinity(0))
            call(core.create_node, {"apiVersion": "v1", "kind": "Node", "metadata": {
                "name": NODE, "labels": {"tickwire.dev/feed-node": "true"},
                "annotations": {"tickwire.dev/feed-cores": str(feed_core),
                                "tickwire.dev/feed-nics": f"{pair.node_if}=0-1",
                                "tickwire.dev/feed-hugepages": "0"}}})
            call(core.patch_node_status, NODE, {"status": {"conditions": [
                {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "podman"}]}})

            kubeconfig = kube.write_kubeconfig(tmp_path)
            env = dict(os.environ, KUBECONFIG=str(kubeconfig), TICKWIRE_RESYNC_SECONDS="1",
                       TICKWIRE_HEALTH_SECONDS="1", TICKWIRE_OPERATOR_METRICS_PORT="0",
                       TICKWIRE_AGENT_STATE_ROOT=str(state_root),
                       # The node's shared accounts: this test's own, not the machine's.
                       TICKWIRE_AGENT_NODE_STATE_DIR=str(tmp_path / "node-shared"))
            processes.append(pair.popen(pair.node_ns, [
                sys.executable, "-m", "tickwire_operator", "--standalone", "--liveness", ""],
                env=env, stdout=open(operator_log, "wb"), stderr=subprocess.STDOUT))
            logs = [operator_log]

            def wait_for(what, check, timeout=60):
                return wait_until(what, check, timeout, 0.2, log_tails(logs))

            call(custom.create_namespaced_custom_object, GROUP, VERSION, NS, PLURAL, {
                "apiVersion": f"{GROUP}/{VERSION}", "kind": "FeedHandler", "metadata": {"name": name},
                "spec": {"lines": [{"name": "A", "group": "239.7.1.1", "port": 26400}],
                         "xdpMode": "generic", "statusIntervalSeconds": 1, "staleAfterSeconds": 30,
                         # napi_defer_hard_irqs, gro_flush_timeout: host settings in the node's
                         # sysfs, through a hostPath (rule R5). A stall once seen with them under
                         # podman did not reproduce with this tree's image: docs/podman.md.
                         "busyPoll": {"enabled": True, "napiDeferHardIrqs": 2, "groFlushTimeoutNs": 200000},
                         "latencySLO": {"p99Micros": 1_000_000}}})
            pod = wait_for("the agent Pod", lambda: kube.get("v1/pods", NS, f"{name}-agent"), 30)
            assert pod["spec"]["nodeName"] == NODE
            # The operator's default image, which `make images` tags localhost/tickwire/agent.
            assert pod["spec"]["containers"][0]["image"] == "tickwire/agent:0.1.0"
            profile = pod["spec"]["securityContext"]["seccompProfile"]
            assert profile["type"] == "Localhost"
            (seccomp_root / profile["localhostProfile"]).parent.mkdir(parents=True)
            shutil.copy(SECCOMP_PROFILE, seccomp_root / profile["localhostProfile"])

            node = Node(name=NODE, api_server=kube.url, issue_token=kube.service_account_token,
                        seccomp_root=seccomp_root, netns=pair.node_ns, sysfs=sysfs,
                        report_status=lambda namespace, pod_name, status: call(
                            core.patch_namespaced_pod_status, pod_name, namespace, {"status": status}))
            before = host_snapshot(pair)
            fh = run_until_ready_and_check(pod, node, pair, kube, name, tmp_path, logs, wait_for, built)
            assert host_snapshot(pair) == before, "the host after `podman pod stop`"
            print(f"\nReady: {fh['status']['snapshot']['messages']} messages counted, "
                  f"p99 {fh['status']['snapshot']['latency']['p99Micros']:.1f} us")

            # Killed: podman starts the container again (restartPolicy Always) and the new agent
            # finds the journal the killed one left on the node; killed again and the Pod removed,
            # then replaced: the replacement's agent restores it. Stopped, every setting is back to
            # its value from before the first agent (a journal lost with a container would make a
            # later agent take tuned values for the originals).
            kill_restart_and_remove(pod, node, pair, kube, name, tmp_path, logs, wait_for, before)
            replace_and_stop(pod, node, pair, kube, name, tmp_path, logs, wait_for)
            assert host_snapshot(pair) == before, "the host after SIGKILLed containers, a replacement and a stop"
            # Stopped cleanly, the last agent left nothing in its state directory on the node.
            state_dir = state_root / NS / name
            assert not state_dir.exists() or not any(state_dir.iterdir()), sorted(state_dir.iterdir())
        finally:
            for proc in reversed(processes):
                if proc.poll() is None:
                    proc.terminate()
                    try:
                        proc.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait(timeout=10)
            client.shutdown(wait=True)
            shutil.rmtree(state_root, ignore_errors=True)


def run_until_ready_and_check(pod, node, pair, kube, name, tmp_path, logs, wait_for, built):
    with PodmanPod(pod, node, tmp_path / "run-1") as running:
        agent_log = tmp_path / "agent-1.log"
        logs.append(agent_log)
        def save_logs() -> None:
            agent_log.write_text(running.logs())

        def engine_ready() -> bool:
            save_logs()          # returns nothing: the wait is on the condition alone
            return status_is(kube, name, "EngineReady")

        try:
            wait_for("EngineReady", engine_ready, 90)
            pid = running.pid()
            container = pod["spec"]["containers"][0]
            # The image tag is one for every checkout on a machine: a `make images` elsewhere after
            # require_podman() would have this Pod run another tree's agent (and did, before the
            # check existed: docs/podman.md, the napi_defer_hard_irqs stall).
            assert image_inputs(running.inspect()["Image"]) == built, "the Pod ran an agent image built after the check"
            # The Pod's infra container: podman's own pause image, built here from catatonit.
            infra = json.loads(subprocess.run(["podman", "pod", "inspect", running.name], capture_output=True,
                                              text=True, check=True).stdout)["InfraContainerID"]
            infra_image = subprocess.run(["podman", "container", "inspect", "--format", "{{.ImageName}}", infra],
                                         capture_output=True, text=True, check=True).stdout.strip()
            assert infra_image.startswith("localhost/podman-pause:"), infra_image

            # What a kubelet enforces, seen from the running container.
            status = proc_status(pid)
            wanted = sum(1 << CAPABILITY_BITS[c] for c in container["securityContext"]["capabilities"]["add"])
            assert int(status["CapEff"], 16) == wanted, (status["CapEff"], container["securityContext"])
            assert int(status["CapBnd"], 16) == wanted and int(status["CapAmb"], 16) == 0
            assert status["NoNewPrivs"] == "1"                      # allowPrivilegeEscalation: false
            assert status["Seccomp"] == "2"                          # a filter, the Pod's Localhost profile
            write = running.exec("python3", "-c", "open('/written-by-test', 'w')")
            assert write.returncode != 0 and "Read-only file system" in write.stderr, write
            cgroup = cpu_cgroup(pid)
            cpus = int(container["resources"]["limits"]["cpu"])
            quota, period = (int((cgroup / f).read_text()) for f in ("cpu.cfs_quota_us", "cpu.cfs_period_us"))
            assert quota == cpus * period, (quota, period, cpus)      # the Pod's CPU limit is in force
            throttled_at_start = cpu_stat(cgroup)
            # The busy-poll knobs landed on the node's veth, read from the node's own namespace:
            # the agent wrote them through the sysfs R5 mounts, not to a device of the host.
            tuned = host_snapshot(pair)
            assert (tuned["napi_defer_hard_irqs"], tuned["gro_flush_timeout"]) == ("2", "200000"), tuned

            # The feed, counted exactly against the publisher's ledger.
            summary_path = tmp_path / "feed-summary.json"
            feed = pair.run(pair.exchange_ns, str(BIN / "tickwire-feed"), "publish", "--iface", pair.exchange_if,
                            "--line", "A=239.7.1.1:26400", "--messages", str(MESSAGES), "--rate", "5000", "--heartbeat-every-s", "1",
                            "--summary-json", str(summary_path), timeout=120)
            assert feed.returncode == 0, feed.stderr
            sent = json.loads(summary_path.read_text())["messages_sent"]
            assert sent == MESSAGES

            def counted_and_ready():
                save_logs()
                fh = kube.get(FEEDHANDLERS, NS, name)
                snapshot = ((fh or {}).get("status") or {}).get("snapshot") or {}
                ready = (condition(fh, "Ready") or {}).get("status") == "True"
                return fh if ready and snapshot.get("messages") == sent else None

            fh = wait_for(f"Ready with all {sent} messages counted", counted_and_ready, 60)
            snapshot = fh["status"]["snapshot"]
            assert (snapshot["gaps"], snapshot["malformed"]) == (0, 0)
            assert condition(fh, "Ready")["reason"] == "FeedHealthy"

            # No CFS throttling of the Pod's quota while the poll thread spun and the feed ran.
            stats = cpu_stat(cgroup)
            assert stats["nr_periods"] > throttled_at_start["nr_periods"], stats   # the quota was live
            assert stats["nr_throttled"] == 0, stats

            running.stop()
        finally:
            save_logs()
    return fh


ENGINE_UP = "EngineReady=True"   # what the agent logs once its engine runs


def wait_engine_up(running, save_logs, wait_for, what: str) -> str:
    """Until the current run of the container logged its engine up (the FeedHandler's status may
    still be an earlier agent's); its log so far."""
    def up():
        save_logs()
        current = running.logs(current_run=True)
        return current if ENGINE_UP in current else None
    return wait_for(what, up, 90)


def kill_restart_and_remove(pod, node, pair, kube, name, tmp_path, logs, wait_for, before):
    """A crash and a restart in place, then a crash and the Pod deleted (its host settings stay)."""
    with PodmanPod(pod, node, tmp_path / "run-2") as running:
        agent_log = tmp_path / "agent-2.log"
        logs.append(agent_log)
        save_logs = lambda: agent_log.write_text(running.logs())  # noqa: E731
        try:
            wait_engine_up(running, save_logs, wait_for, "the engine of the second Pod")
            tuned = host_snapshot(pair)
            assert tuned != before, "the agent tuned nothing: nothing to restore would prove nothing"
            killed = running.kill()
            # podman may show the new process a moment before it counts the restart: wait for both.
            wait_for("the container started again (restartPolicy Always)",
                     lambda: running.inspect()["State"]["Status"] == "running" and running.pid() != killed
                     and running.inspect()["RestartCount"] >= 1, 60)
            # As a kubelet, the runner reports the restart in the Pod's status.
            reported = running.sync_status()["containerStatuses"][0]
            assert reported["restartCount"] >= 1 and "running" in reported["state"]
            in_api = kube.get("v1/pods", NS, f"{name}-agent")["status"]
            assert in_api["phase"] == "Running" and in_api["containerStatuses"][0]["restartCount"] >= 1, in_api
            restarted = wait_engine_up(running, save_logs, wait_for, "the engine after the restart")
            # The journal on the node outlived the container: the new agent put back what the
            # killed one changed, then tuned again from the values of before.
            assert "left by an earlier agent" in restarted, restarted
            running.kill()
            wait_for("the killed agent's process gone", lambda: running.inspect()["State"]["Pid"] != killed, 30)
        finally:
            save_logs()
    # Removed with the agent dead (SIGKILL, then `podman pod rm --force`): nothing restored it.
    assert host_snapshot(pair) != before


def replace_and_stop(pod, node, pair, kube, name, tmp_path, logs, wait_for):
    """The replacement Pod's agent finds the journal on the node and puts the host back first."""
    with PodmanPod(pod, node, tmp_path / "run-3") as running:
        agent_log = tmp_path / "agent-3.log"
        logs.append(agent_log)
        save_logs = lambda: agent_log.write_text(running.logs())  # noqa: E731
        try:
            current = wait_engine_up(running, save_logs, wait_for, "the engine of the replacement Pod")
            assert "left by an earlier agent" in current, current
            running.stop()
        finally:
            save_logs()
