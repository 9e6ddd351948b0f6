"""The example consumer Pod under a real container runtime, beside the operator's agent Pod.

The operator (kopf, for real, against the emulator) places a FeedHandler with books enabled and
writes its agent Pod; podman runs that Pod as in tests/e2e/test_operator_podman.py (the node is a
network namespace, see tickwire_demo.podman_pod). Then charts/tickwire/examples/consumer-pod.yaml
runs beside it, changed only where the example names its feed (the FeedHandler's name and
namespace here, and the stream root the operator was configured with) and with spec.nodeName set:
the test is the scheduler, and the example's required podAffinity says "the node of the Pod
labelled tickwire.dev/feedhandler=<name>", which is this node (checked, not assumed).

The test's own traffic (a start of messages, a stock directory naming the symbol, four adds on
each side and an execution, as ITCH 5.0 in MoldUDP64 frames entering the node's veth) sets a known
best bid and offer; the consumer must print exactly it. From inside the consumer's container the
test then tries to write to the stream directory every way a reader could (create, open for
writing, unlink, rename, chmod, a writable shared mapping) and each must fail; the container runs
with no capability, as a non-root user, under the runtime's seccomp filter.

The consumer Pod does not use the host network, so podman gives it a network namespace of its own
(made from the host's; it talks to nobody). Needs root, namespaces, podman and images built from
this tree: fails instead of skipping when TICKWIRE_REQUIRE_NETNS=1.
"""
from __future__ import annotations

import copy
import json
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import kubernetes.client as k8s
import pytest
import yaml

from tests.e2e.test_operator_podman import image_inputs, proc_status, require_podman, status_is
from tests.support.frames import frame, mold
from tests.support.kube_emulator import FEEDHANDLER_CRD, KubeEmulator, load_yaml, netns_executor
from tests.support.netns import VethPair
from tests.support.waiting import log_tails, wait_until
from tickwire_demo.podman_pod import Node, PodmanPod, node_sysfs
from tickwire_feed import itch
from tickwire_operator.pod import FEEDHANDLER_LABEL

pytestmark = [pytest.mark.netns, pytest.mark.slow]

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "charts" / "tickwire" / "examples" / "consumer-pod.yaml"
SECCOMP_PROFILE = ROOT / "charts" / "tickwire" / "files" / "tickwire-agent-seccomp.json"
GROUP, VERSION, PLURAL = "tickwire.dev", "v1alpha1", "feedhandlers"
FEEDHANDLERS = f"{GROUP}/{VERSION}/{PLURAL}"
NS = "feeds"
NODE = "trading-1"
LINE = ("239.7.2.1", 26410)
SYMBOL, LOCATE = "TWBOOK", 77
# (side, shares, price in ITCH's 1/10000): two bids at the top, 300 shares in all; asks 200 at
# 100.25 of which 50 are executed, leaving 150. Best bid 100.0000 x 300, offer 100.2500 x 150.
ORDERS = [("B", 100, 1_000_000), ("B", 200, 1_000_000), ("B", 500, 999_900), ("S", 200, 1_002_500),
          ("S", 700, 1_003_000), ("S", 900, 1_010_000), ("B", 50, 990_000), ("S", 25, 1_020_000)]
BEST = ("300", "100.0000", "100.2500", "150")


def book_traffic() -> list[bytes]:
    """The day's first messages for one symbol, in MoldUDP64 frames for line A."""
    messages = [itch.encode("S", event_code="O"),
                itch.encode("R", stock_locate=LOCATE, stock=SYMBOL, market_category="Q",
                            financial_status_indicator="N", round_lot_size=100, round_lots_only="N",
                            issue_classification="C", issue_sub_type="Z", authenticity="P",
                            short_sale_threshold_indicator="N", ipo_flag="N", luld_reference_price_tier="1",
                            etp_flag="N", etp_leverage_factor=0, inverse_indicator="N")]
    for ref, (side, shares, price) in enumerate(ORDERS, start=1):
        messages.append(itch.encode("A", stock_locate=LOCATE, order_reference_number=ref, buy_sell_indicator=side,
                                    shares=shares, stock=SYMBOL, price=price))
    messages.append(itch.encode("E", stock_locate=LOCATE, order_reference_number=4, executed_shares=50,
                                match_number=1))
    session = b"TWBOOK" + str(os.getpid() % 10000).zfill(4).encode()
    return [frame(mold(seq, [message], session), group=LINE[0], port=LINE[1])
            for seq, message in enumerate(messages, start=1)]


def send_frames(pair: VethPair, frames: list[bytes]) -> None:
    """Into the node's veth from the exchange side, as a NIC would deliver them (AF_PACKET)."""
    script = textwrap.dedent(f"""
        import socket
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        s.bind(({pair.exchange_if!r}, 0))
        for h in {[f.hex() for f in frames]!r}:
            s.send(bytes.fromhex(h))
    """)
    pair.run(pair.exchange_ns, sys.executable, "-c", script)


def example_consumer(feed: str, namespace: str, stream_root: str, node: str) -> dict:
    """The shipped example, pointed at this test's FeedHandler; every other field as shipped."""
    pod = copy.deepcopy(next(d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d and d["kind"] == "Pod"))
    shipped_feed = pod["spec"]["containers"][0]["command"][2]
    stream = f"{stream_root}/{namespace}/{feed}"
    pod["metadata"]["name"] = f"{feed}-top"
    term = pod["spec"]["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
    assert term["labelSelector"]["matchLabels"] == {FEEDHANDLER_LABEL: shipped_feed}
    term["labelSelector"]["matchLabels"] = {FEEDHANDLER_LABEL: feed}
    term["namespaces"] = [namespace]
    container = pod["spec"]["containers"][0]
    container["command"][2] = feed
    container["env"] = [{"name": "TICKWIRE_STREAM_ROOT", "value": f"{stream_root}/{namespace}"}]
    container["volumeMounts"][0]["mountPath"] = stream
    pod["spec"]["volumes"][0]["hostPath"]["path"] = stream
    # make images tags localhost/tickwire/agent; the operator's default image name resolves to it
    assert container["image"] == "tickwire/agent:0.1.0"
    pod["spec"]["nodeName"] = node
    return pod


def best_line(log: str) -> list[str] | None:
    """The last line `tickwire-engine top` printed for SYMBOL, split into its columns."""
    rows = [line.split() for line in log.splitlines() if line.split()[:1] == [SYMBOL]]
    return rows[-1] if rows else None


# Every way a reader could change the feed's files, tried from inside the consumer's container;
# prints {attempt: errno name or "ALLOWED"}.
WRITE_ATTEMPTS = textwrap.dedent("""
    import errno, json, mmap, os, sys
    stream = sys.argv[1]
    events = os.path.join(stream, "events")
    def attempt(fn):
        try:
            fn()
        except OSError as e:
            return errno.errorcode.get(e.errno, str(e.errno))
        return "ALLOWED"
    def writable_mapping():
        with open(events, "rb") as f:
            mmap.mmap(f.fileno(), 4096, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    print(json.dumps({
        "create": attempt(lambda: open(os.path.join(stream, "mine"), "w")),
        "open events for writing": attempt(lambda: open(events, "r+b")),
        "unlink snapshot": attempt(lambda: os.unlink(os.path.join(stream, "snapshot"))),
        "rename events": attempt(lambda: os.rename(events, events + ".x")),
        "chmod events": attempt(lambda: os.chmod(events, 0o666)),
        "writable shared mapping": attempt(writable_mapping),
        "read events": "ok" if open(events, "rb").read(8) else "empty",
    }))
""")


def test_the_example_consumer_prints_the_best_bid_and_offer_and_cannot_write(tmp_path):
    built = require_podman()
    name = f"bk-{os.getpid()}"
    stream_root = tmp_path / "streams"        # the operator's TICKWIRE_AGENT_STREAM_ROOT
    state_root = tmp_path / "node-state"
    seccomp_root = tmp_path / "kubelet-seccomp"
    processes: list[subprocess.Popen] = []
    with VethPair(queues=2) as pair, KubeEmulator.running(netns=pair.node_ns) as kube, \
            node_sysfs(pair.node_ns, tmp_path / "node-sys") as sysfs:
        client = netns_executor(pair.node_ns)
        call = lambda fn, *args, **kw: client.submit(fn, *args, **kw).result(timeout=30)  # noqa: E731
        operator_log = tmp_path / "operator.log"
        logs = [operator_log]

        def wait_for(what, check, timeout=60):
            return wait_until(what, check, timeout, 0.2, log_tails(logs))

        try:
            api = kube.api_client()
            core, custom = k8s.CoreV1Api(api), k8s.CustomObjectsApi(api)
            call(k8s.ApiextensionsV1Api(api).create_custom_resource_definition, load_yaml(FEEDHANDLER_CRD))
            call(core.create_node, {"apiVersion": "v1", "kind": "Node", "metadata": {
                "name": NODE, "labels": {"tickwire.dev/feed-node": "true", "kubernetes.io/hostname": NODE},
                "annotations": {"tickwire.dev/feed-cores": str(max(os.sched_getaffinity(0))),
                                "tickwire.dev/feed-nics": f"{pair.node_if}=0-1",
                                "tickwire.dev/feed-hugepages": "0"}}})
            call(core.patch_node_status, NODE, {"status": {"conditions": [
                {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "podman"}]}})
            env = dict(os.environ, KUBECONFIG=str(kube.write_kubeconfig(tmp_path)), TICKWIRE_RESYNC_SECONDS="1",
                       TICKWIRE_HEALTH_SECONDS="1", TICKWIRE_OPERATOR_METRICS_PORT="0",
                       TICKWIRE_AGENT_STATE_ROOT=str(state_root), TICKWIRE_AGENT_STREAM_ROOT=str(stream_root))
            processes.append(pair.popen(pair.node_ns, [
                sys.executable, "-m", "tickwire_operator", "--standalone", "--liveness", ""],
                env=env, stdout=open(operator_log, "wb"), stderr=subprocess.STDOUT))

            call(custom.create_namespaced_custom_object, GROUP, VERSION, NS, PLURAL, {
                "apiVersion": f"{GROUP}/{VERSION}", "kind": "FeedHandler", "metadata": {"name": name},
                "spec": {"lines": [{"name": "A", "group": LINE[0], "port": LINE[1]}], "xdpMode": "generic",
                         "statusIntervalSeconds": 1, "staleAfterSeconds": 300,
                         "books": {"enabled": True, "depth": 5, "maxOrders": 65536, "maxInstruments": 64}}})
            agent_pod = wait_for("the agent Pod", lambda: kube.get("v1/pods", NS, f"{name}-agent"), 30)
            stream = stream_root / NS / name
            volumes = {v["name"]: v for v in agent_pod["spec"]["volumes"]}
            assert volumes["stream"]["hostPath"] == {"path": str(stream), "type": "DirectoryOrCreate"}
            profile = agent_pod["spec"]["securityContext"]["seccompProfile"]["localhostProfile"]
            seccomp_root.mkdir(parents=True)
            shutil.copy(SECCOMP_PROFILE, seccomp_root / profile)
            node = Node(name=NODE, api_server=kube.url, issue_token=kube.service_account_token,
                        seccomp_root=seccomp_root, netns=pair.node_ns, sysfs=sysfs)

            with PodmanPod(agent_pod, node, tmp_path / "agent") as agent:
                agent_log = tmp_path / "agent.log"
                logs.append(agent_log)

                def save() -> None:   # None, not write_text's count: `save() or check()` must check
                    agent_log.write_text(agent.logs())
                try:
                    wait_for("EngineReady", lambda: save() or status_is(kube, name, "EngineReady"), 90)
                    assert image_inputs(agent.inspect()["Image"]) == built, "an agent image built after the check"
                    wait_for("the engine's stream files", lambda: (stream / "events").exists()
                             and (stream / "snapshot").exists(), 30)
                    assert {p.name: oct(p.stat().st_mode & 0o777) for p in stream.iterdir()} == \
                        {"events": "0o644", "snapshot": "0o644"}
                    run_consumer_and_check(kube, name, stream, str(stream_root), seccomp_root, pair, tmp_path,
                                           logs, wait_for, built)
                    fh = wait_for("status.snapshot.books with the test's orders", lambda: books_status(kube, name), 30)
                    print(f"\nstatus.snapshot.books: {fh['status']['snapshot']['books']}")
                    agent.stop()
                    # Stopped for good: the agent ended the stream for its readers and freed the
                    # node's memory; the directory (the hostPath) stays.
                    assert stream.is_dir() and list(stream.iterdir()) == []
                finally:
                    save()
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


def books_status(kube, name):
    fh = kube.get(FEEDHANDLERS, NS, name)
    books = (((fh or {}).get("status") or {}).get("snapshot") or {}).get("books") or {}
    # 8 adds, none gone (the execution leaves 150 of 200): 8 live orders of one instrument
    if books.get("instruments") == 1 and books.get("ordersLive") == len(ORDERS) and books.get("eventsPublished"):
        return fh
    return None


def run_consumer_and_check(kube, name, stream, stream_root, seccomp_root, pair, tmp_path, logs, wait_for, built):
    agent_pod = kube.get("v1/pods", NS, f"{name}-agent")
    consumer = example_consumer(name, NS, stream_root, NODE)
    # As the scheduler: the required podAffinity term selects the agent Pod, which is on NODE.
    term = consumer["spec"]["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
    assert NS in term["namespaces"]
    assert term["labelSelector"]["matchLabels"].items() <= agent_pod["metadata"]["labels"].items()
    assert agent_pod["spec"]["nodeName"] == NODE and term["topologyKey"] == "kubernetes.io/hostname"
    consumer_node = Node(name=NODE, api_server=kube.url, issue_token=kube.service_account_token,
                         seccomp_root=seccomp_root)   # not hostNetwork: its own network namespace
    with PodmanPod(consumer, consumer_node, tmp_path / "consumer") as running:
        consumer_log = tmp_path / "consumer.log"
        logs.append(consumer_log)

        def save() -> None:
            consumer_log.write_text(running.logs())
        try:
            assert image_inputs(running.inspect()["Image"]) == built
            send_frames(pair, book_traffic())
            row = wait_for(f"the consumer printing {SYMBOL}'s best bid and offer",
                           lambda: save() or (lambda r: r if r and tuple(r[1:5]) == BEST else None)(
                               best_line(running.logs())), 60)
            assert "INCOMPLETE" not in row, row       # a start of messages came first: a complete book
            print(f"\nconsumer: {' '.join(row)}")

            # No privilege, seen from the running container.
            status = proc_status(running.pid())
            assert int(status["CapEff"], 16) == int(status["CapPrm"], 16) == int(status["CapBnd"], 16) == 0
            assert status["Uid"].split()[:2] == ["10001", "10001"] and status["NoNewPrivs"] == "1"
            assert status["Seccomp"] == "2"

            # It cannot change anything of the feed's, whichever way it tries.
            tried = running.exec("python3", "-c", WRITE_ATTEMPTS, str(stream), check=True)
            attempts = json.loads(tried.stdout)
            assert attempts.pop("read events") == "ok"
            print(f"consumer's write attempts: {attempts}")
            assert attempts and all(result in ("EROFS", "EACCES", "EPERM") for result in attempts.values()), attempts
            # The read-only mount itself is in force (not only the files' modes and the user): the
            # kernel checks it first for these, so they fail with EROFS.
            assert [attempts[a] for a in ("unlink snapshot", "rename events", "chmod events")] == ["EROFS"] * 3
            root_write = running.exec("python3", "-c", "open('/written-by-test', 'w')")
            assert root_write.returncode != 0 and "Read-only file system" in root_write.stderr
            # Nothing was written into the stream directory by anyone but the engine.
            assert sorted(p.name for p in stream.iterdir()) == ["events", "snapshot"]
        finally:
            save()
