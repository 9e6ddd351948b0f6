"""What a failing agent Pod means, and what the operator does about it.

Read from the Pod's status as the kubelet writes it. Each failure has a reason (the `PodHealthy`
condition's reason on the FeedHandler) and a decision on whether replacing the Pod can help:

| reason | seen as | replace? | why |
| --- | --- | --- | --- |
| `PodAdmissionRefused` | the API server refuses the create (403/422: PodSecurity, quota, a webhook) | create again, with back-off | an admin may fix the namespace label, the quota or the webhook; nothing else would retry |
| `ImagePullFailed` | a container waits in `ErrImagePull`, `ImagePullBackOff`, `InvalidImageName` or `ErrImageNeverPull` | no | the kubelet already retries the pull with its own back-off; a new Pod would pull the same image on the same node |
| `CrashLoop` | a container restarted `crash_restarts` times or more and waits in `CrashLoopBackOff` (or is terminated) | no | the kubelet already restarts it with back-off on the node the plan is for; a new Pod would crash the same way. The last exit code and message say why |
| `PodFailed` | the Pod's phase is `Failed` (kubelet admission: `OutOfcpu`, `OutOfhugepages`, ...; eviction) | yes, with back-off | such a Pod never runs again: only a new one can |
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

IMAGE_PULL_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"})


@dataclass(frozen=True)
class PodHealth:
    healthy: bool
    reason: str
    message: str
    replace: bool = False  # only a new Pod can help


def _statuses(pod: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    status = pod.get("status") or {}
    return list(status.get("initContainerStatuses") or []) + list(status.get("containerStatuses") or [])


def pod_health(pod: Mapping[str, Any], crash_restarts: int) -> PodHealth:
    status = pod.get("status") or {}
    name = (pod.get("metadata") or {}).get("name", "")
    node = (pod.get("spec") or {}).get("nodeName", "")
    if status.get("phase") in ("Failed", "Succeeded"):
        why = status.get("reason") or status.get("phase")
        detail = f": {status['message']}" if status.get("message") else ""
        return PodHealth(False, "PodFailed", f"agent Pod {name} on {node} ended ({why}{detail}); "
                                             f"it never runs again, so it is replaced", replace=True)
    for container in _statuses(pod):
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in IMAGE_PULL_REASONS:
            return PodHealth(False, "ImagePullFailed", (
                f"container {container.get('name')} of agent Pod {name} on {node} cannot get image "
                f"{container.get('image', '')!s}: {waiting['reason']}: {waiting.get('message', '')}; "
                f"the kubelet keeps retrying the pull, fix the image or its pull secret").strip())
    for container in _statuses(pod):
        restarts = int(container.get("restartCount") or 0)
        state = container.get("state") or {}
        crashing = (state.get("waiting") or {}).get("reason") == "CrashLoopBackOff" or "terminated" in state
        if restarts >= crash_restarts and crashing:
            last = (container.get("lastState") or {}).get("terminated") or state.get("terminated") or {}
            exit_text = f"exit code {last.get('exitCode', '?')}"
            if last.get("reason"):
                exit_text += f" ({last['reason']})"
            if last.get("message"):
                exit_text += f": {last['message']}"
            return PodHealth(False, "CrashLoop", (
                f"container {container.get('name')} of agent Pod {name} on {node} restarted {restarts} times, "
                f"last {exit_text}; the kubelet keeps restarting it, a new Pod would crash the same way"))
    if status.get("phase") == "Running":
        return PodHealth(True, "Running", f"agent Pod {name} runs on {node}")
    return PodHealth(True, "Starting", f"agent Pod {name} is starting on {node}")
