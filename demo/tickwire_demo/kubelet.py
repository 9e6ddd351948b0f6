"""Playing the kubelet for one Pod: its container as a local process.

There are no container images on these machines, so the agent Pod the operator creates cannot
be run by a real kubelet. What the operator decides is all in the Pod's container, though: the
command and the environment (the plan in TICKWIRE_PLAN, the downward-API fields). This turns
that into an argv and an environment for `subprocess`, resolving the downward API the way the
kubelet would, and refuses what it cannot honour instead of starting something different.

What it does not do: images, volumes, resources, security context. The process runs with the
caller's privileges in the caller's (network) namespace, which stands in for hostNetwork.
"""
from __future__ import annotations

import os
import pathlib
import shutil
from collections.abc import Mapping
from typing import Any


def _downward_api(pod: Mapping[str, Any]) -> dict[str, str]:
    meta, spec = pod["metadata"], pod["spec"]
    return {
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "metadata.name": meta["name"],
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "status.hostIP": "127.0.0.1",
        "status.podIP": "127.0.0.1",
    }


def container_process(pod: Mapping[str, Any], kubeconfig: str | os.PathLike, bin_dir: str | os.PathLike,
                      container: str | None = None) -> tuple[list[str], dict[str, str]]:
    """(argv, env) for one container of `pod` (the first unless named). The kubeconfig stands
    in for the service-account token a kubelet mounts; `bin_dir` is where the image's
    executables would be (this Python's scripts)."""
    containers = pod["spec"]["containers"]
    chosen = next((c for c in containers if container in (None, c["name"])), None)
    if chosen is None:
        raise ValueError(f"pod {pod['metadata']['name']} has no container {container!r}")
    if not chosen.get("command"):
        raise ValueError(f"container {chosen['name']} has no command: without its image, the "
                         f"image's entrypoint is unknown")
    fields = _downward_api(pod)
    path = f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}"
    env = {"PATH": path, "KUBECONFIG": str(kubeconfig)}
    for var in chosen.get("env") or []:
        if "value" in var:
            env[var["name"]] = var["value"]
            continue
        field_path = ((var.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
        if field_path not in fields:
            raise ValueError(f"env {var['name']} of container {chosen['name']}: only downward-API "
                             f"fields {sorted(fields)} can be resolved here, not {var.get('valueFrom')}")
        env[var["name"]] = fields[field_path]
    command = list(chosen["command"]) + list(chosen.get("args") or [])
    executable = shutil.which(command[0], path=path)
    if executable is None:
        raise ValueError(f"container {chosen['name']}: {command[0]!r} is not in {bin_dir} or on PATH "
                         f"(install the project: make setup)")
    command[0] = str(pathlib.Path(executable))
    return command, env
