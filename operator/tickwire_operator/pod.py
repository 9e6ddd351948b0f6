"""The agent Pod of one FeedHandler: a pure function of (FeedHandler, placement, plan, settings).

The operator is the scheduler for feed resources (cores, NIC queue, hugepages): it pins the Pod
to the node it chose with spec.nodeName. The Pod asks the kubelet for the plan's cores plus one
CPU, as integer requests equal to limits, so it gets Guaranteed QoS and, under the static CPU
manager, exclusive CPUs: the extra one is the housekeeping CPU for the agent's own threads, so
that a poll thread spinning at 100% never exhausts the CFS quota. The kubelet picks which CPUs;
the agent runs on what it was given and reports them in status.observed.

Everything the Pod may touch on the host follows from the plan (docs/privileges.md says why for
each): a capability set with nothing to spare, a Localhost seccomp profile that adds bpf() to
the runtime's default, and read-write host paths only where the plan writes.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .placement import DEFAULT_METRICS_PORTS, Allocation, PortRange
from .plan import STREAM_ROOT, plan_hash
from .sizing import agent_memory
from .spec import GROUP, KIND, VERSION

FEEDHANDLER_LABEL = "tickwire.dev/feedhandler"
MANAGED_BY = {"app.kubernetes.io/managed-by": "tickwire-operator"}
PLAN_ANNOTATION = "tickwire.dev/plan"
PLAN_HASH_ANNOTATION = "tickwire.dev/plan-hash"
PLAN_ENV = "TICKWIRE_PLAN"
# Nodes kept for feeds may carry this taint so that nothing else lands on them.
FEED_NODE_TAINT = "tickwire.dev/feed-node"

# Each capability every agent gets, and why it needs it. Nothing else: the rest is dropped.
# tests/netns/test_agent_privileges.py runs the engine without each one and sees the kernel refuse.
CAPABILITIES = {
    "NET_ADMIN": "attach the XDP program to the NIC, set its channels, busy-poll and IRQ settings",
    "NET_RAW": "open the AF_XDP socket (AF_XDP needs CAP_NET_RAW)",
    "BPF": "load the XDP steering program and create its maps",
    "PERFMON": "let the verifier accept the steering program's packet-pointer arithmetic "
               "(without it, a non-CAP_SYS_ADMIN loader gets the Spectre-v1 restrictions)",
    "IPC_LOCK": "pin the UMEM (without it AF_XDP charges it to RLIMIT_MEMLOCK, shared by every uid-0 "
                "process of the node)",
}
# Only for a plan asking for a real-time poll thread (busyPoll.rtPriority > 0).
RT_CAPABILITY = ("SYS_NICE", "run the poll thread SCHED_FIFO at busyPoll.rtPriority")

HOUSEKEEPING_CPUS = 1   # for the agent's own threads, beside the plan's dedicated cores

# Host paths. The state root is tmpfs on the node: it outlives the container and the Pod (the
# journal must reach the next agent) but not a reboot, which resets the host settings too.
STATE_ROOT = "/run/tickwire/feedhandlers"
# Shared by every agent of the node (same tmpfs): the locks and exact accounts of what feeds share,
# the hugepage pool and the reference-counted NIC and busy-poll knobs (docs/agent.md).
NODE_STATE_DIR = "/run/tickwire/node"
# The host's bpffs: one steering program per interface, pinned with its maps, shared by every
# engine on that interface (docs/design.md). The same path inside, where the engine looks.
BPFFS = "/sys/fs/bpf"
IRQ_MOUNT = "/host/proc/irq"   # a container's own /proc/irq is read-only, whatever its capabilities
HUGEPAGES_2M = "hugepages/hugepages-2048kB"
SECCOMP_PROFILE = "tickwire-agent-seccomp.json"   # under the kubelet's seccomp dir on each feed node


@dataclass(frozen=True)
class AgentSettings:
    image: str = "tickwire/agent:0.1.0"
    service_account: str = "tickwire-agent"
    state_root: str = STATE_ROOT
    seccomp_profile: str = SECCOMP_PROFILE
    node_state_dir: str = NODE_STATE_DIR
    # The node ports placement gives agents for /metrics (one per agent, never one twice on a node).
    metrics_ports: PortRange = DEFAULT_METRICS_PORTS
    stream_root: str = STREAM_ROOT

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "AgentSettings":
        """From the operator's environment; ValueError naming a bad setting (the operator then
        does not start, rather than hand out ports nobody meant)."""
        ports = env.get("TICKWIRE_AGENT_METRICS_PORTS")
        try:
            metrics_ports = PortRange.parse(ports) if ports else cls.metrics_ports
        except ValueError as exc:
            raise ValueError(f"TICKWIRE_AGENT_METRICS_PORTS: {exc}") from None
        return cls(image=env.get("TICKWIRE_AGENT_IMAGE") or cls.image,
                   service_account=env.get("TICKWIRE_AGENT_SERVICE_ACCOUNT") or cls.service_account,
                   state_root=env.get("TICKWIRE_AGENT_STATE_ROOT") or cls.state_root,
                   seccomp_profile=env.get("TICKWIRE_AGENT_SECCOMP_PROFILE") or cls.seccomp_profile,
                   node_state_dir=env.get("TICKWIRE_AGENT_NODE_STATE_DIR") or cls.node_state_dir,
                   metrics_ports=metrics_ports,
                   stream_root=env.get("TICKWIRE_AGENT_STREAM_ROOT") or cls.stream_root)


def pod_name(feedhandler_name: str) -> str:
    return f"{feedhandler_name}-agent"


def pod_labels(feedhandler_name: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "tickwire-agent",
        "app.kubernetes.io/instance": feedhandler_name,
        "app.kubernetes.io/component": "feed-handler",
        **MANAGED_BY,
        FEEDHANDLER_LABEL: feedhandler_name,
    }


def desired_hash(plan: Mapping[str, Any], settings: AgentSettings) -> str:
    return plan_hash(plan, settings.image, settings.service_account)


def capabilities(plan: Mapping[str, Any]) -> list[str]:
    """The capabilities this plan's agent needs: CAPABILITIES, and SYS_NICE only for a real-time
    poll thread (without it the engine runs on, normally scheduled, and says so)."""
    wanted = set(CAPABILITIES)
    if (plan.get("busyPoll") or {}).get("rtPriority", 0) > 0:
        wanted.add(RT_CAPABILITY[0])
    return sorted(wanted)


def state_dir(body: Mapping[str, Any], settings: AgentSettings) -> str:
    """The agent's journal on the node, per FeedHandler: the same path in the container."""
    return os.path.join(settings.state_root, body["metadata"]["namespace"], body["metadata"]["name"])


def stream_dir(plan: Mapping[str, Any]) -> str | None:
    """The host directory the engine publishes this plan's books in (None: books off)."""
    if not (plan.get("books") or {}).get("enabled"):
        return None
    return f"{plan['streamRoot'].rstrip('/')}/{plan['feed']['name']}"


def _host_path(name: str, path: str, kind: str, mount_path: str | None = None) -> tuple[dict, dict]:
    """A read-write host path (every one the agent gets is written)."""
    return {"name": name, "mountPath": mount_path or path}, {"name": name, "hostPath": {"path": path, "type": kind}}


def host_access(body: Mapping[str, Any], plan: Mapping[str, Any], settings: AgentSettings
                ) -> tuple[list[dict], list[dict], list[str]]:
    """(volumeMounts, volumes, agent arguments): read-write host paths only where the plan writes.

    The runtime mounts the container's /sys read-only (hostNetwork shows the node's interfaces
    there), which covers every read; these bind mounts make writable exactly the files the plan
    changes. Every agent also gets the node's shared state directory (the accounts of what feeds
    on the node share) and the host's bpffs (the interface's steering program and maps, pinned
    there for every engine on it). The engine maps its UMEM with MAP_HUGETLB (no hugetlbfs)."""
    pairs = [_host_path("state", state_dir(body, settings), "DirectoryOrCreate"),
             _host_path("node-state", settings.node_state_dir, "DirectoryOrCreate"),
             # The mount point exists on every node (sysfs has it). A bpffs mounted there is the
             # node's set-up (systemd does it at boot): the agent may not mount one (no
             # CAP_SYS_ADMIN), and the engine refuses to pin anywhere that is not a bpffs.
             _host_path("bpffs", BPFFS, "Directory")]
    args = ["--state-dir", state_dir(body, settings), "--remove-state-on-clean-exit",
            "--node-state-dir", settings.node_state_dir]
    busy_poll = plan.get("busyPoll") or {}
    if busy_poll.get("napiDeferHardIrqs") is not None or busy_poll.get("groFlushTimeoutNs") is not None:
        # napi_defer_hard_irqs, gro_flush_timeout of the plan's interface (a symlink the kubelet and
        # the runtime resolve to the device's directory)
        netdev = f"/sys/class/net/{plan['interface']}"
        pairs.append(_host_path("netdev", netdev, "Directory"))
    hugepages = plan.get("hugepages") or {}
    if hugepages.get("count", 0) > 0:
        # The agent grows the global pool on a one-node host and the node's pool on a multi-node
        # one (the plan's node, else the NIC's): which applies only the host can say.
        pairs.append(_host_path("hugepages", f"/sys/kernel/mm/{HUGEPAGES_2M}", "Directory"))
        node = hugepages.get("numaNode")
        if node is not None:
            pairs.append(_host_path("hugepages-node", f"/sys/devices/system/node/node{node}/{HUGEPAGES_2M}",
                                    "Directory"))
        else:
            pairs.append(_host_path("numa-nodes", "/sys/devices/system/node", "Directory"))
    if plan.get("irqAffinity"):
        pairs.append(_host_path("irq", "/proc/irq", "Directory", mount_path=IRQ_MOUNT))
        args += ["--irq-dir", IRQ_MOUNT]
    stream = stream_dir(plan)
    if stream is not None:
        # The engine writes its books' stream here, at the same path, for consumer Pods on the node
        # to mount read-only (docs/consumers.md). Only this feed's directory, not the root.
        pairs.append(_host_path("stream", stream, "DirectoryOrCreate"))
    return [m for m, _ in pairs], [v for _, v in pairs], args


def build_agent_pod(body: Mapping[str, Any], allocation: Allocation, plan: Mapping[str, Any],
                    settings: AgentSettings) -> dict:
    meta = body["metadata"]
    name = meta["name"]
    plan_json = json.dumps(plan, sort_keys=True, separators=(",", ":"))
    metrics_port = plan["metrics"]["port"]
    # The books' memory (sizing.py) is part of the limit: they are sized from the plan at start.
    resources = {"cpu": str(len(allocation.cores) + HOUSEKEEPING_CPUS), "memory": agent_memory(plan)}
    if allocation.hugepages:
        # Charged to the Pod's hugetlb cgroup; the engine maps them with MAP_HUGETLB.
        resources["hugepages-2Mi"] = f"{allocation.hugepages * 2}Mi"
    mounts, volumes, host_args = host_access(body, plan, settings)
    probe = {"httpGet": {"path": "/metrics", "port": "metrics"}, "periodSeconds": 10, "timeoutSeconds": 2}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name(name),
            "namespace": meta["namespace"],
            "labels": pod_labels(name),
            "annotations": {PLAN_ANNOTATION: plan_json,
                            PLAN_HASH_ANNOTATION: desired_hash(plan, settings)},
            "ownerReferences": [{
                "apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "name": name, "uid": meta["uid"],
                "controller": True, "blockOwnerDeletion": True}],
        },
        "spec": {
            "nodeName": allocation.node,
            "hostNetwork": True,  # AF_XDP binds the node's own NIC queue
            "dnsPolicy": "ClusterFirstWithHostNet",
            "serviceAccountName": settings.service_account,  # patches its FeedHandler's status
            "restartPolicy": "Always",
            # Time to detach XDP and put every host setting back (the agent's journal).
            "terminationGracePeriodSeconds": 30,
            "tolerations": [{"key": FEED_NODE_TAINT, "operator": "Exists", "effect": "NoSchedule"}],
            "securityContext": {
                # The runtime's default profile refuses bpf() without CAP_SYS_ADMIN; this one is
                # that default plus bpf() (charts/tickwire/files/tickwire-agent-seccomp.json).
                "seccompProfile": {"type": "Localhost", "localhostProfile": settings.seccomp_profile},
            },
            "containers": [{
                "name": "agent",
                "image": settings.image,
                "imagePullPolicy": "IfNotPresent",
                "command": ["tickwire-agent", "run", "--plan-env", PLAN_ENV, *host_args],
                "env": [
                    {"name": PLAN_ENV, "value": plan_json},
                    {"name": "TICKWIRE_NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                    {"name": "TICKWIRE_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "TICKWIRE_POD_NAMESPACE",
                     "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                ],
                "ports": [{"name": "metrics", "containerPort": metrics_port, "hostPort": metrics_port,
                           "protocol": "TCP"}],
                "resources": {"requests": dict(resources), "limits": dict(resources)},
                "securityContext": {
                    "runAsUser": 0,  # writes root-owned sysfs files; confined by the capabilities
                    "privileged": False,
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "capabilities": {"drop": ["ALL"], "add": capabilities(plan)},
                },
                "volumeMounts": mounts,
                "livenessProbe": {**probe, "initialDelaySeconds": 10, "failureThreshold": 3},
                "readinessProbe": {**probe, "initialDelaySeconds": 2},
            }],
            "volumes": volumes,
        },
    }
