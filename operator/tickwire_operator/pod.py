"""The agent Pod of one FeedHandler: a pure function of (FeedHandler, placement, plan, settings).

The operator is the scheduler for feed resources (cores, NIC queue, hugepages): it pins the Pod
to the node it chose with spec.nodeName. The Pod asks the kubelet for the same CPUs count as
integer requests equal to limits, so it gets Guaranteed QoS and, under the static CPU manager,
exclusive CPUs.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .placement import Allocation
from .plan import plan_hash
from .spec import GROUP, KIND, VERSION

FEEDHANDLER_LABEL = "tickwire.dev/feedhandler"
MANAGED_BY = {"app.kubernetes.io/managed-by": "tickwire-operator"}
PLAN_ANNOTATION = "tickwire.dev/plan"
PLAN_HASH_ANNOTATION = "tickwire.dev/plan-hash"
PLAN_ENV = "TICKWIRE_PLAN"
# Nodes kept for feeds may carry this taint so that nothing else lands on them.
FEED_NODE_TAINT = "tickwire.dev/feed-node"

# Each capability the agent gets, and why it needs it. Nothing else: the rest is dropped.
CAPABILITIES = {
    "NET_ADMIN": "attach the XDP program to the NIC, set its channels, busy-poll and IRQ settings",
    "NET_RAW": "open the AF_XDP socket (AF_XDP needs CAP_NET_RAW)",
    "BPF": "load the XDP steering program and create its maps",
    "IPC_LOCK": "pin the UMEM (AF_XDP charges it against RLIMIT_MEMLOCK without IPC_LOCK)",
    "SYS_NICE": "give the poll thread a real-time priority and keep other threads off its cores",
}

AGENT_MEMORY = "256Mi"  # the agent process and a UMEM on normal pages; requests == limits


@dataclass(frozen=True)
class AgentSettings:
    image: str = "tickwire/agent:0.1.0"
    service_account: str = "tickwire-agent"

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "AgentSettings":
        return cls(image=env.get("TICKWIRE_AGENT_IMAGE") or cls.image,
                   service_account=env.get("TICKWIRE_AGENT_SERVICE_ACCOUNT") or cls.service_account)


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


def build_agent_pod(body: Mapping[str, Any], allocation: Allocation, plan: Mapping[str, Any],
                    settings: AgentSettings) -> dict:
    meta = body["metadata"]
    name = meta["name"]
    plan_json = json.dumps(plan, sort_keys=True, separators=(",", ":"))
    metrics_port = plan["metrics"]["port"]
    resources = {"cpu": str(len(allocation.cores)), "memory": AGENT_MEMORY}
    if allocation.hugepages:
        resources["hugepages-2Mi"] = f"{allocation.hugepages * 2}Mi"
    mounts = [
        # sysfs read-write: NIC channels, napi_defer_hard_irqs, gro_flush_timeout, hugepage counts.
        {"name": "sys", "mountPath": "/sys"},
        # bpffs: the XDP program's maps are pinned here so a restarted agent finds and removes them.
        {"name": "bpffs", "mountPath": "/sys/fs/bpf", "mountPropagation": "HostToContainer"},
    ]
    volumes = [
        {"name": "sys", "hostPath": {"path": "/sys", "type": "Directory"}},
        {"name": "bpffs", "hostPath": {"path": "/sys/fs/bpf", "type": "Directory"}},
    ]
    if allocation.hugepages:
        mounts.append({"name": "hugepages", "mountPath": "/dev/hugepages"})
        volumes.append({"name": "hugepages", "emptyDir": {"medium": "HugePages-2Mi"}})
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
            "containers": [{
                "name": "agent",
                "image": settings.image,
                "imagePullPolicy": "IfNotPresent",
                "command": ["tickwire-agent", "run", "--plan-env", PLAN_ENV],
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
                    "capabilities": {"drop": ["ALL"], "add": sorted(CAPABILITIES)},
                },
                "volumeMounts": mounts,
                "livenessProbe": {**probe, "initialDelaySeconds": 10, "failureThreshold": 3},
                "readinessProbe": {**probe, "initialDelaySeconds": 2},
            }],
            "volumes": volumes,
        },
    }
