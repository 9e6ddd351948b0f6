"""`python -m tickwire_demo.operator_demo` (what `make demo-operator` runs): the control plane on
one machine, from `kubectl apply` to `Ready`.

There is no Kubernetes cluster here, so the pieces a cluster would provide are played as
faithfully as this machine allows, and everything else is the real product:

    the API server  the kmock-based emulator (tickwire_demo.kube_emulator), with the real CRD
    a node          network namespace "node" with one side of a veth; its Node object carries
                    the feed inventory (cores, NIC queues, hugepages) as an admin would publish it
    the exchange    network namespace "exchange" on the other side, where `tickwire-feed
                    publish` sends ITCH 5.0 over MoldUDP64 on lines A and B
    the operator    `python -m tickwire_operator`, kopf for real, against the emulator
    the kubelet     this program, with podman as its container runtime: the agent Pod the
                    operator wrote runs from the image `make images` built, under `podman kube
                    play` in the node namespace (tickwire_demo.podman_pod: the manifest is
                    translated only where podman reads it differently, docs/podman.md)
    kubectl         /usr/bin/kubectl when there is one: the emulator serves the Table kubectl
                    asks for (server-side printing from the CRD's additionalPrinterColumns);
                    without kubectl the same Table is fetched and laid out here, as kubectl would

The FeedHandler is examples/feedhandler-ab.yaml, with the fields that name production hardware
(NIC, queue, cores, hugepages, XDP mode, SSM sources) changed to fit the veth; each change is
printed with its reason. The table is printed every ~2 s until the FeedHandler is Ready (or the
timeout passes), then its conditions as `kubectl describe` lists them. Everything is torn down
on the way out, Ctrl-C and SIGTERM included. Exit status: 0 Ready, 1 not Ready in time or a
process died, 2 cannot run here (not root, no podman, no such manifest), 130 interrupted.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

import kubernetes.client as k8s
import yaml

from .kube_emulator import FEEDHANDLER_CRD, KubeEmulator, load_yaml, netns_executor
from .localnet import VethPair, netns_available
from .podman_pod import Node, PodmanPod, PodRejected, PodFailed, node_sysfs, podman_available
from .printer_columns import format_table, layout
from .processes import stop

REPO = pathlib.Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "feedhandler-ab.yaml"
# The agent's Localhost seccomp profile, which the chart installs on feed nodes.
SECCOMP_PROFILE = REPO / "charts" / "tickwire" / "files" / "tickwire-agent-seccomp.json"
BIN = pathlib.Path(sys.executable).parent
GROUP, VERSION, PLURAL = "tickwire.dev", "v1alpha1", "feedhandlers"
FEEDHANDLERS = f"{GROUP}/{VERSION}/{PLURAL}"
NODE_NAME = "tickwire-demo"
NAMESPACE = "feeds"
FEED_NODE_LABEL = "tickwire.dev/feed-node"
# The veth has two RX queues and both are offered to feeds (as in the operator's e2e test).
REREQUEST_PORT = 26400   # the exchange namespace's MoldUDP64 re-request server
VETH_QUEUES = 2
PRINT_EVERY_S = 2.0


class DemoFailed(Exception):
    """The demo cannot go on; the message says why and where to look."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tickwire_demo.operator_demo",
                                     description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--feedhandler", type=pathlib.Path, default=EXAMPLE,
                        help="FeedHandler manifest to apply (adapted to the veth; default %(default)s)")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds to wait for Ready=True before giving up (default %(default)s)")
    parser.add_argument("--duration", type=float, default=6.0,
                        help="seconds to keep showing the table once Ready (default %(default)s)")
    parser.add_argument("--rate", type=int, default=5000,
                        help="messages per second the exchange sends on each line (default %(default)s)")
    parser.add_argument("--out", default="demo-output/operator-demo",
                        help="where the logs, kubeconfig and applied manifest go (default %(default)s)")
    parser.add_argument("--no-kubectl", action="store_true",
                        help="lay the table out here even when kubectl is installed")
    args = parser.parse_args(argv)
    if args.timeout <= 0 or args.duration < 0 or args.rate <= 0:
        parser.error("--timeout and --rate must be positive and --duration not negative")
    return args


# ---- what is applied ---------------------------------------------------------------------------

def load_feedhandler(path: pathlib.Path) -> dict:
    if not path.is_file():
        raise DemoFailed(f"no FeedHandler manifest at {path}: pass one with --feedhandler FILE "
                         f"(examples/feedhandler-ab.yaml in a source tree)")
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise DemoFailed(f"{path} is not YAML: {exc}") from None
    if not isinstance(doc, dict) or doc.get("kind") != "FeedHandler":
        raise DemoFailed(f"{path} is not a FeedHandler manifest (kind: FeedHandler, one document)")
    if not (doc.get("metadata") or {}).get("name") or not (doc.get("spec") or {}).get("lines"):
        raise DemoFailed(f"{path}: a FeedHandler needs metadata.name and spec.lines")
    return doc


def adapt_to_veth(example: Mapping[str, Any], pair: VethPair) -> tuple[dict, list[str]]:
    """The example with production hardware swapped for the demo's veth; the list says what
    changed and why, so nothing is changed silently."""
    fh = copy.deepcopy(dict(example))
    fh["metadata"] = {k: v for k, v in fh["metadata"].items() if k in ("name", "labels", "annotations")}
    fh["metadata"]["namespace"] = NAMESPACE
    spec = fh["spec"]
    changes: list[str] = []

    def change(field: str, value: Any, why: str) -> None:
        """Set spec.<field> (dotted for nested fields) and say so, when it differs."""
        *parents, leaf = field.split(".")
        node = spec
        for key in parents:
            node = node.setdefault(key, {})
        if node.get(leaf) != value:
            changes.append(f"spec.{field}: {node.get(leaf, '(unset)')} -> {value}  ({why})")
            node[leaf] = value

    change("interface", pair.node_if, "the node side of the demo's veth")
    change("queue", 0, f"the veth has RX queues 0-{VETH_QUEUES - 1}; the publisher's flow arrives on 0")
    change("cores", 1, "one dedicated core; this machine may have only two")
    change("hugepages", 0, "the UMEM on normal pages: the demo node sets no hugepages aside")
    change("xdpMode", "generic", "the demo's publisher is a kernel socket: its skbs cost native mode on "
           "veth a conversion, generic none (native wins with XDP-redirected frames and on NICs; "
           "README, Benchmarks)")
    change("zeroCopy", "auto", "veth supports copy mode only")
    change("statusIntervalSeconds", 2, "status as often as the demo prints the table")
    if "latencySLO" in spec:
        # The example's objective is for an isolated core; here the "feed core" is shared with
        # the operator, the emulator, kubectl and the publisher, and the engine thread gets
        # preempted for milliseconds now and then (p99 measured 3-11 ms on a 2-core VM, p50 ~10-20 us).
        change("latencySLO.p99Micros", 50000, "the demo's core is shared, not isolated: "
               "preemptions put p99 in the milliseconds")
    if "rerequest" in spec:
        change("rerequest.server", f"{pair.exchange_ip}:{REREQUEST_PORT}",
               "the exchange namespace's re-request server, which the demo's publisher runs")
    for line in spec["lines"]:
        if line.get("source") and line["source"] != pair.exchange_ip:
            changes.append(f"spec.lines[{line['name']}].source: {line['source']} -> {pair.exchange_ip}  "
                           f"(the exchange namespace's address, where the feed comes from)")
            line["source"] = pair.exchange_ip
    return fh, changes


def node_manifest(fh: Mapping[str, Any], pair: VethPair, core: int) -> dict:
    """The demo node as a cluster admin would publish it (docs/operator.md, "Node inventory"):
    labelled so the FeedHandler's nodeSelector finds it, offering one core, the veth's queues
    and no hugepages."""
    labels = {FEED_NODE_LABEL: "true", "kubernetes.io/hostname": NODE_NAME,
              **(fh["spec"].get("nodeSelector") or {})}
    return {"apiVersion": "v1", "kind": "Node", "metadata": {
        "name": NODE_NAME, "labels": labels,
        "annotations": {"tickwire.dev/feed-cores": str(core),
                        "tickwire.dev/feed-nics": f"{pair.node_if}=0-{VETH_QUEUES - 1}",
                        "tickwire.dev/feed-hugepages": "0"}}}


def node_ready_status() -> dict:
    return {"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                       "message": "tickwire operator demo (the demo plays the kubelet, with podman)"}]}}


# ---- what is printed ---------------------------------------------------------------------------

def condition(fh: Mapping[str, Any] | None, type_: str) -> dict:
    return next((c for c in ((fh or {}).get("status") or {}).get("conditions") or [] if c.get("type") == type_), {})


def describe(fh: Mapping[str, Any]) -> str:
    """The part of `kubectl describe feedhandler` that says why: placement, snapshot, conditions."""
    status = fh.get("status") or {}
    placement, snap = status.get("placement") or {}, status.get("snapshot") or {}
    latency = snap.get("latency") or {}
    out = [f"Name:         {fh['metadata']['name']}",
           f"Namespace:    {fh['metadata'].get('namespace', '')}",
           f"Placement:    node {placement.get('node', '-')}, {placement.get('interface', '-')} queue "
           f"{placement.get('queue', '-')}, cores {placement.get('coreList', '-')}, hugepages "
           f"{placement.get('hugepages', '-')}, pod {placement.get('pod', '-')}"]
    if snap:
        out.append(f"Snapshot:     {snap.get('rate', 0):,.0f} msgs/s, {snap.get('messages', 0):,} messages, "
                   f"gaps {snap.get('gaps', 0)}, duplicates {snap.get('duplicates', 0)}, malformed "
                   f"{snap.get('malformed', 0)}; latency p50 {latency.get('p50Micros', 0):.1f} us, "
                   f"p99 {latency.get('p99Micros', 0):.1f} us; XDP {snap.get('xdpMode', '-')}, "
                   f"{'zero-copy' if snap.get('zeroCopy') else 'copy mode'}")
    rows = [["Type", "Status", "Reason", "Message"], ["----", "------", "------", "-------"]]
    rows += [[c.get("type", ""), c.get("status", ""), c.get("reason", ""), c.get("message", "")]
             for c in status.get("conditions") or []]
    out += ["Conditions:", layout(rows, indent="  ")]
    return "\n".join(out)


class TablePrinter:
    """`kubectl get feedhandlers NAME`: through kubectl when there is one, else the Table the
    emulator serves laid out here (both show the CRD's printer columns)."""

    def __init__(self, pair: VethPair, kube: KubeEmulator, kubeconfig: pathlib.Path, name: str,
                 client, use_kubectl: bool) -> None:
        self.pair, self.kube, self.kubeconfig, self.name, self.client = pair, kube, kubeconfig, name, client
        self.kubectl = shutil.which("kubectl") if use_kubectl else None
        self.command = f"kubectl get feedhandlers -n {NAMESPACE} {name}"

    def table(self) -> str:
        if self.kubectl:
            done = self.pair.run(self.pair.node_ns, self.kubectl, "--kubeconfig", str(self.kubeconfig),
                                 "--cache-dir", str(self.kubeconfig.parent / "kube-cache"), "get",
                                 PLURAL, "-n", NAMESPACE, self.name, check=False)
            if done.returncode == 0:
                return done.stdout.rstrip("\n")
            raise DemoFailed(f"{self.command} failed: {done.stderr.strip()}")
        return self.client.submit(self._fetch_and_format).result(timeout=30)

    def _fetch_and_format(self) -> str:
        request = urllib.request.Request(
            f"{self.kube.url}/apis/{GROUP}/{VERSION}/namespaces/{NAMESPACE}/{PLURAL}/{self.name}",
            headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io, application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return format_table(json.load(response))


# ---- processes ---------------------------------------------------------------------------------

def tail(path: pathlib.Path, lines: int = 15) -> str:
    if not path.exists():
        return ""
    text = path.read_text(errors="replace").splitlines()[-lines:]
    return f"\n--- last lines of {path}:\n" + "\n".join(text)


class Demo:
    def __init__(self, args: argparse.Namespace, example: Mapping[str, Any], pair: VethPair, kube: KubeEmulator,
                 client, out: pathlib.Path, sysfs: pathlib.Path):
        self.args, self.example, self.pair, self.kube, self.client, self.out = args, example, pair, kube, client, out
        self.processes: dict[str, subprocess.Popen] = {}
        self.logs = {name: out / f"{name}.log" for name in ("operator", "agent", "feed")}
        self.agent: PodmanPod | None = None
        # The agent's journal: a hostPath on the node, here inside the demo's output (no state is
        # left in the machine's /run/tickwire).
        self.state_root = out / "node-state"
        seccomp_root = out / "kubelet-seccomp"
        seccomp_root.mkdir(exist_ok=True)
        core = k8s.CoreV1Api(kube.api_client())
        self.node = Node(name=NODE_NAME, api_server=kube.url, issue_token=kube.service_account_token,
                         seccomp_root=seccomp_root, netns=pair.node_ns, sysfs=sysfs,
                         report_status=lambda namespace, pod, status: self.call(
                             core.patch_namespaced_pod_status, pod, namespace, {"status": status}))

    def call(self, fn: Callable, *args, **kwargs):
        """A client call made from the node namespace, where the emulator listens."""
        return self.client.submit(fn, *args, **kwargs).result(timeout=30)

    def start(self, name: str, ns: str, command: list[str], env: dict[str, str] | None = None) -> None:
        with open(self.logs[name], "wb") as log:
            # A session of its own: Ctrl-C reaches only the demo, which stops each in order.
            proc = self.pair.popen(ns, command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        self.processes[name] = proc
        print(f"started {name} (pid {proc.pid}) in {ns}; log {self.logs[name]}", flush=True)

    def check_alive(self) -> None:
        for name, proc in self.processes.items():
            if name != "feed" and proc.poll() is not None:
                raise DemoFailed(f"the {name} exited with status {proc.returncode}{tail(self.logs[name])}")
        if self.agent is not None:
            self.logs["agent"].write_text(self.agent.logs())
            state = self.agent.inspect()["State"]
            if state["Status"] != "running":
                raise DemoFailed(f"the agent container is {state['Status']} (exit {state.get('ExitCode')})"
                                 f"{tail(self.logs['agent'])}")

    def stop_all(self) -> None:
        stop(self.processes.get("feed"))
        if self.agent is not None:  # the agent before the operator, as a kubelet would
            try:
                self.agent.stop()   # SIGTERM: the agent puts the host back
            except PodFailed as exc:
                print(f"operator demo: {exc}", file=sys.stderr)
            finally:
                self.logs["agent"].write_text(self.agent.logs())
                self.agent.remove()
                print(f"removed the agent Pod {self.agent.name}", flush=True)
        stop(self.processes.get("operator"))
        shutil.rmtree(self.state_root, ignore_errors=True)

    def run(self) -> int:
        fh, changes = adapt_to_veth(self.example, self.pair)
        (self.out / "feedhandler.yaml").write_text(yaml.safe_dump(fh, sort_keys=False))
        pair = self.pair
        print(f"exchange {pair.exchange_ns} ({pair.exchange_if} {pair.exchange_ip}) --veth--> node "
              f"{pair.node_ns} ({pair.node_if}); Kubernetes emulator {self.kube.url} in the node namespace")
        print(f"FeedHandler {fh['metadata']['name']} from {self.args.feedhandler}, adapted to this machine:")
        print("\n".join(f"  {line}" for line in changes) or "  (nothing to change)")
        kubeconfig = self.kube.write_kubeconfig(self.out)
        self.install_cluster(fh, kubeconfig)
        return self.watch_until_ready(fh["metadata"]["name"], kubeconfig)

    def install_cluster(self, fh: Mapping[str, Any], kubeconfig: pathlib.Path) -> None:
        """What an admin and a user would do: the CRD, the node's inventory, the operator, and
        `kubectl apply` of the FeedHandler."""
        api = self.kube.api_client()
        core_api, custom = k8s.CoreV1Api(api), k8s.CustomObjectsApi(api)
        self.call(k8s.ApiextensionsV1Api(api).create_custom_resource_definition, load_yaml(FEEDHANDLER_CRD))
        # No Namespace object: kmock cannot parse /api/v1/namespaces (environment note, trap 4),
        # and the emulator, like the API server without admission, does not require one.
        core = max(os.sched_getaffinity(0))
        self.call(core_api.create_node, node_manifest(fh, self.pair, core))
        self.call(core_api.patch_node_status, NODE_NAME, node_ready_status())
        print(f"node {NODE_NAME}: feed core {core}, NIC {self.pair.node_if} queues 0-{VETH_QUEUES - 1}, "
              f"no hugepages")
        operator_env = dict(os.environ, KUBECONFIG=str(kubeconfig), TICKWIRE_RESYNC_SECONDS="2",
                            TICKWIRE_HEALTH_SECONDS="2", TICKWIRE_AGENT_STATE_ROOT=str(self.state_root))
        self.start("operator", self.pair.node_ns, [sys.executable, "-m", "tickwire_operator", "--standalone",
                                                   "--liveness", ""], operator_env)
        self.call(custom.create_namespaced_custom_object, GROUP, VERSION, NAMESPACE, PLURAL, fh)
        print(f"applied FeedHandler {NAMESPACE}/{fh['metadata']['name']} ({self.out / 'feedhandler.yaml'})\n",
              flush=True)

    def watch_until_ready(self, name: str, kubeconfig: pathlib.Path) -> int:
        """Print the table every ~2 s while playing the kubelet; once Ready, keep printing for
        --duration and describe the conditions; DemoFailed when Ready does not come in time."""
        args = self.args
        printer = TablePrinter(self.pair, self.kube, kubeconfig, name, self.client, use_kubectl=not args.no_kubectl)
        if not printer.kubectl:
            print("(kubectl not used: the demo lays out the emulator's Table the way kubectl does)")
        started = time.monotonic()
        ready_at = None
        last_print = -PRINT_EVERY_S
        while True:
            now = time.monotonic() - started
            self.check_alive()
            current = self.kube.get(FEEDHANDLERS, NAMESPACE, name)
            self.play_kubelet(current, name, kubeconfig)
            ready = condition(current, "Ready").get("status") == "True"
            if ready and ready_at is None:
                ready_at = now
            held = ready_at is not None and now - ready_at >= args.duration
            if now - last_print >= PRINT_EVERY_S or (ready and ready_at == now) or held:
                last_print = now
                print(f"[{now:5.1f} s] $ {printer.command}\n{printer.table()}\n", flush=True)
            if held:
                break
            if ready_at is None and now >= args.timeout:
                print(describe(current or {"metadata": {"name": name, "namespace": NAMESPACE}}))
                ready_condition = condition(current, "Ready")
                raise DemoFailed(
                    f"FeedHandler {name} was not Ready after {args.timeout:.0f} s: Ready="
                    f"{ready_condition.get('status', 'absent')} reason {ready_condition.get('reason', '-')}: "
                    f"{ready_condition.get('message', '')}{tail(self.logs['operator'])}{tail(self.logs['agent'])}")
            time.sleep(0.2)
        print(f"FeedHandler {name} Ready after {ready_at:.1f} s\n")
        print(describe(self.kube.get(FEEDHANDLERS, NAMESPACE, name)))
        return 0

    def run_agent_pod(self, pod: Mapping[str, Any]) -> None:
        """The kubelet's part: the Pod's Localhost seccomp profile on the node (the chart installs
        it on real nodes), then the Pod under podman."""
        profile = ((pod["spec"].get("securityContext") or {}).get("seccompProfile") or {})
        if profile.get("type") == "Localhost":
            target = self.node.seccomp_root / profile["localhostProfile"]
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(SECCOMP_PROFILE, target)
        print(f"the operator created Pod {NAMESPACE}/{pod['metadata']['name']} on node "
              f"{pod['spec']['nodeName']}; as its kubelet: podman kube play, image "
              f"{pod['spec']['containers'][0]['image']}", flush=True)
        agent = PodmanPod(pod, self.node, self.out / "pod")
        self.agent = agent
        try:
            agent.play()
            agent.wait_running()
        except (PodRejected, PodFailed) as exc:
            raise DemoFailed(f"the agent Pod did not start: {exc}") from None
        print(f"started agent Pod {agent.name} (podman container {agent.container()}, pid {agent.pid()}) "
              f"in {self.pair.node_ns}; log {self.logs['agent']}", flush=True)

    def play_kubelet(self, fh: Mapping[str, Any] | None, name: str, kubeconfig: pathlib.Path) -> None:
        """Start the agent once the operator has created its Pod, and the exchange's feed once
        the engine is up (so the feed starts at sequence 1 and the first report is gap-free)."""
        if self.agent is None:
            pod = self.kube.get("v1/pods", NAMESPACE, f"{name}-agent")
            if pod is not None:
                self.run_agent_pod(pod)
        elif "feed" not in self.processes and condition(fh, "EngineReady").get("status") == "True":
            spec = fh["spec"]
            lines = [a for line in spec["lines"] for a in ("--line", f"{line['name']}={line['group']}:{line['port']}")]
            zone = ["--exchange-tz", spec["exchangeTimezone"]] if spec.get("exchangeTimezone") else []
            # what the engine asks for again, the exchange's re-request server answers
            server = ["--rerequest-listen", spec["rerequest"]["server"]] if spec.get("rerequest") else []
            seconds = self.args.timeout + self.args.duration + 30  # stopped by the demo before that
            self.start("feed", self.pair.exchange_ns, [
                str(BIN / "tickwire-feed"), "publish", "--iface", self.pair.exchange_if, *lines, *zone, *server,
                "--rate", str(self.args.rate), "--per-packet", "4", "--duration", str(int(seconds))])


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        example = load_feedhandler(args.feedhandler)
    except DemoFailed as exc:
        print(f"operator demo: {exc}", file=sys.stderr)
        return 2
    ok, why = netns_available()
    if ok:
        ok, why = podman_available()
    if not ok:
        print(f"operator demo: cannot run here: {why}", file=sys.stderr)
        return 2
    # Ctrl-C and `kill` both tear down; SIGINT explicitly, as a shell's background job (`&`)
    # starts with it ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    out = pathlib.Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    namespaces = "none created"
    try:
        try:
            with VethPair(queues=VETH_QUEUES) as pair, KubeEmulator.running(netns=pair.node_ns) as kube, \
                    node_sysfs(pair.node_ns, out / "node-sys") as sysfs:
                namespaces = f"{pair.exchange_ns} and {pair.node_ns} deleted"
                client = netns_executor(pair.node_ns)
                demo = Demo(args, example, pair, kube, client, out, sysfs)
                try:
                    return demo.run()
                finally:
                    # A second Ctrl-C must not cut the teardown short (the agent restores the host).
                    signal.signal(signal.SIGINT, signal.SIG_IGN)
                    signal.signal(signal.SIGTERM, signal.SIG_IGN)
                    demo.stop_all()
                    client.shutdown(wait=True)
        finally:
            print(f"torn down: processes stopped, namespaces {namespaces}", flush=True)
    except DemoFailed as exc:
        print(f"operator demo: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("operator demo: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
