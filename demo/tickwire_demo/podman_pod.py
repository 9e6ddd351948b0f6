"""Playing the kubelet with a real container runtime: the operator's Pod under `podman kube play`.

There is no kubelet on these machines, but there is podman 4.3, which runs a Pod manifest with the
image, user, capabilities, read-only root, seccomp filter, volumes and CPU/memory limits it names.
Where podman reads the same manifest differently from a kubelet, `podman_manifest()` translates it,
one documented rule each, and never so that the container gets more than a kubelet would give.
Where a kubelet would refuse the Pod, `admit()` refuses it too instead of running it anyway.

The node is a network namespace here (the "node" side of a veth): `hostNetwork: true` must mean
that namespace, so podman runs inside it (nsenter --net) and the container shares it.

    node = Node(name="trading-1", api_server=kube.url, issue_token=kube.service_account_token,
                seccomp_root=..., netns="tw-nd-123", sysfs=...)
    with PodmanPod(pod, node, workdir) as running:     # admit, translate, kube play, wait
        running.exec("cat", "/proc/1/status")
        running.stop()                                  # `podman pod stop`, the Pod's grace period
    # removed on the way out, whatever happened

The full list of rules and what podman does not enforce: docs/podman.md.
"""
from __future__ import annotations

import contextlib
import copy
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

# The limit podman 4.3 puts on annotation values (it refuses the whole Pod above it).
PODMAN_ANNOTATION_MAX = 63
# Where a kubelet mounts the service-account token; the kubeconfig goes there instead.
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
KUBECONFIG_IN_POD = f"{SERVICE_ACCOUNT_DIR}/kubeconfig"
SECCOMP_ANNOTATION_POD = "seccomp.security.alpha.kubernetes.io/pod"
SECCOMP_ANNOTATION_CONTAINER = "container.seccomp.security.alpha.kubernetes.io/"
HUGEPAGES_2M = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"
BPFFS = "/sys/fs/bpf"
COMMAND_TIMEOUT_S = 120


class PodRejected(Exception):
    """What a kubelet would refuse (admission, a missing image or profile): nothing was started.
    `reason` is the kubelet's word for it (OutOfcpu, ErrImagePull, ...), `waiting` whether the
    kubelet would keep the Pod Pending (a container waiting) rather than fail it."""

    def __init__(self, message: str, reason: str = "Invalid", waiting: bool = False):
        super().__init__(message)
        self.reason, self.waiting = reason, waiting


class PodFailed(Exception):
    """The Pod was started but did not run as it should; the message carries podman's words."""


@dataclass(frozen=True)
class Node:
    """The node this runner is the kubelet of.

    name          spec.nodeName of the Pods it runs (others are not its Pods)
    api_server    the API server's URL, as reachable from the node
    issue_token   (namespace, service account) -> a bearer token for it, as the kubelet gets one
                  from the API server's TokenRequest for the Pod's serviceAccountName
    seccomp_root  the kubelet's seccomp directory: Localhost profiles are relative to it
    netns         the node's network namespace (None: this machine's own)
    sysfs         a sysfs mounted from inside `netns` (see `node_sysfs`): hostPaths under /sys
                  mean the node's /sys, and its net/ part depends on who mounted it
    report_status (namespace, pod name, status) -> None: writes the Pod's status to the API
                  server, as the kubelet does (None: nothing is reported)
    """
    name: str
    api_server: str
    issue_token: Callable[[str, str], str]
    seccomp_root: pathlib.Path
    netns: str | None = None
    sysfs: pathlib.Path | None = None
    report_status: Callable[[str, str, dict], None] | None = None


def _seccomp_annotation(profile: Mapping[str, Any], where: str) -> str:
    kind = profile.get("type")
    if kind == "RuntimeDefault":
        return "runtime/default"
    if kind == "Unconfined":
        return "unconfined"
    if kind == "Localhost" and profile.get("localhostProfile"):
        if "/" in profile["localhostProfile"]:
            # podman 4.3 opens only the first path segment under --seccomp-profile-root ("read
            # <root>/<dir>: is a directory"); running without the profile is not an option.
            raise PodRejected(f"{where}.seccompProfile: podman cannot open a Localhost profile in a "
                              f"subdirectory ({profile['localhostProfile']!r})")
        return f"localhost/{profile['localhostProfile']}"
    raise PodRejected(f"{where}.seccompProfile {dict(profile)}: not a profile a kubelet accepts")


def _downward_api(pod: Mapping[str, Any], field_path: str, where: str) -> str:
    meta, spec = pod["metadata"], pod["spec"]
    fields = {"metadata.name": meta["name"], "metadata.namespace": meta.get("namespace", "default"),
              "metadata.uid": meta.get("uid", ""), "spec.nodeName": spec.get("nodeName", ""),
              "spec.serviceAccountName": spec.get("serviceAccountName", "default")}
    if field_path in fields:
        return fields[field_path]
    match = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", field_path)
    if match:
        return (meta.get(match[1]) or {}).get(match[2], "")
    raise PodRejected(f"{where}: downward-API field {field_path!r} cannot be resolved by this runner")


def write_pod_kubeconfig(pod: Mapping[str, Any], node: Node, directory: pathlib.Path) -> pathlib.Path:
    """A kubeconfig holding the token of the Pod's service account: what the kubelet would mount
    as the token, in a form the agent reads where no KUBERNETES_SERVICE_HOST is set. The API
    server applies the service account's RBAC to every call made with it."""
    namespace = pod["metadata"].get("namespace", "default")
    account = pod["spec"].get("serviceAccountName") or "default"
    path = pathlib.Path(directory) / f"{pod['metadata']['name']}.kubeconfig"
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "pod",
        "clusters": [{"name": "cluster", "cluster": {"server": node.api_server}}],
        "users": [{"name": f"system:serviceaccount:{namespace}:{account}",
                   "user": {"token": node.issue_token(namespace, account)}}],
        "contexts": [{"name": "pod", "context": {"cluster": "cluster", "namespace": namespace,
                                                  "user": f"system:serviceaccount:{namespace}:{account}"}}],
    }))
    path.chmod(0o600)
    return path


def mounts_token(pod: Mapping[str, Any]) -> bool:
    """Whether a kubelet would mount the service account's token (automountServiceAccountToken)."""
    return pod["spec"].get("automountServiceAccountToken") is not False


def podman_manifest(pod: Mapping[str, Any], node: Node, kubeconfig: pathlib.Path | None) -> dict:
    """The Pod as `podman kube play` must be given it to run as a kubelet would run `pod`.

    `kubeconfig` is the Pod's own (write_pod_kubeconfig), None for a Pod that opts out of the
    token (automountServiceAccountToken: false): it gets none. Every rule is here, each with the
    podman behaviour that forces it. Nothing a kubelet enforces
    is dropped: capabilities, runAsUser, readOnlyRootFilesystem, allowPrivilegeEscalation,
    resources and volumes pass through unchanged (only where a hostPath points is adapted).
    """
    out = copy.deepcopy(dict(pod))
    out.pop("status", None)
    meta, spec = out["metadata"], out["spec"]
    annotations = dict(meta.get("annotations") or {})

    # R1 seccomp. podman 4.3 ignores securityContext.seccompProfile (pod and container level) and
    # reads only the old annotations; Localhost profiles are looked up under --seccomp-profile-root
    # (the runner passes node.seccomp_root, as a kubelet looks under <root-dir>/seccomp). A Pod
    # that names none gets podman's default filter, which is stricter than a kubelet's Unconfined.
    pod_profile = (spec.get("securityContext") or {}).get("seccompProfile")
    if pod_profile:
        annotations[SECCOMP_ANNOTATION_POD] = _seccomp_annotation(pod_profile, "spec.securityContext")
    for container in spec["containers"]:
        profile = (container.get("securityContext") or {}).get("seccompProfile")
        if profile:
            annotations[SECCOMP_ANNOTATION_CONTAINER + container["name"]] = _seccomp_annotation(
                profile, f"container {container['name']} securityContext")

    for container in spec["containers"]:
        where = f"container {container['name']}"
        env = []
        for var in container.get("env") or []:
            field_ref = (var.get("valueFrom") or {}).get("fieldRef")
            if field_ref:
                # R2 downward API. podman 4.3 refuses spec.nodeName and metadata.namespace ("not
                # valid or not supported") and gives its own pod ID for metadata.uid: the values
                # the kubelet would put there, taken from the Pod object, are set as literals.
                var = {"name": var["name"], "value": _downward_api(pod, field_ref["fieldPath"], where)}
            env.append(var)
        # R3 API access. A kubelet mounts the service account's token in this directory and
        # sets KUBERNETES_SERVICE_HOST; podman does neither. A kubeconfig holding that same
        # account's token is mounted read-only in the token's place and KUBECONFIG names it (the
        # agent reads a kubeconfig when KUBERNETES_SERVICE_HOST is not set). RBAC is unchanged:
        # the API server sees the service account's token.
        # A Pod with automountServiceAccountToken: false gets no token from a kubelet: none here.
        if kubeconfig is not None:
            env.append({"name": "KUBECONFIG", "value": KUBECONFIG_IN_POD})
            container.setdefault("volumeMounts", []).append(
                {"name": "tickwire-kubeconfig", "mountPath": KUBECONFIG_IN_POD, "readOnly": True})
        container["env"] = env
        # R4 ports. Under hostNetwork, podman 4.3 refuses any `ports` ("PortMappings can only be
        # used with Bridge or slirp4netns networking"); a kubelet publishes nothing for them
        # either (the process binds the node's port itself), so they are left out.
        if spec.get("hostNetwork"):
            container.pop("ports", None)
    if kubeconfig is not None:
        spec.setdefault("volumes", []).append(
            {"name": "tickwire-kubeconfig", "hostPath": {"path": str(kubeconfig), "type": "File"}})

    for volume in spec.get("volumes") or []:
        host_path = volume.get("hostPath")
        empty_dir = volume.get("emptyDir")
        if host_path and _is_bpffs(host_path["path"]):
            # R8 the node's bpffs. Not the sysfs of R5 (where /sys/fs/bpf is an empty directory):
            # BPF objects belong to the kernel, not to a network namespace, so the node's bpffs
            # is the host's, at the same path. The runner mounts it there when the host has none
            # (ensure_host_bpffs, in play()), as a node's init system does at boot.
            pass
        elif host_path and node.sysfs and _is_node_sysfs(host_path["path"]):
            # R5 the node's /sys. Here the node is a network namespace: the host's /sys shows the
            # host's network devices, a sysfs mounted from inside the node's namespace shows the
            # node's. Same files otherwise (the kernel's, not a copy).
            host_path["path"] = str(node.sysfs) + host_path["path"][len("/sys"):]
        elif empty_dir is not None and empty_dir.get("medium"):
            # podman makes every emptyDir a directory on disk: no tmpfs, no hugetlbfs.
            raise PodRejected(f"volume {volume['name']}: emptyDir medium {empty_dir['medium']!r} "
                              f"cannot be honoured by podman (it would be a plain directory)")
        elif empty_dir is not None:
            # R6 emptyDir. podman makes it a volume named after the volume, shared by every Pod
            # that uses the same name; a kubelet's belongs to one Pod. Renamed after the Pod (the
            # runner removes it with the Pod).
            unique = _pod_volume(pod, volume["name"])
            for container in spec["containers"]:
                for mount in container.get("volumeMounts") or []:
                    if mount["name"] == volume["name"]:
                        mount["name"] = unique
            volume["name"] = unique

    # R7 annotations. podman 4.3 refuses a value over 63 characters (the plan is JSON, far
    # longer). A kubelet only passes annotations on through the downward API, resolved above.
    meta["annotations"] = {k: v for k, v in annotations.items() if len(str(v)) <= PODMAN_ANNOTATION_MAX}
    return out


def _is_bpffs(path: str) -> bool:
    return path == BPFFS or path.startswith(BPFFS + "/")


def needs_host_bpffs(pod: Mapping[str, Any]) -> bool:
    """Whether the Pod mounts the node's bpffs (R8)."""
    return any(_is_bpffs((volume.get("hostPath") or {}).get("path", "")) for volume in pod["spec"].get("volumes") or [])


def mount_fstype(mount_point: str, mountinfo: str) -> str | None:
    """The type of the filesystem on top at `mount_point`, from /proc/<pid>/mountinfo text (the
    last line for a mount point is the one on top); None when nothing is mounted right there."""
    found = None
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 4 and fields[4] == mount_point and " - " in line:
            found = line.split(" - ", 1)[1].split()[0]
    return found


def ensure_host_bpffs(path: str = BPFFS, mountinfo: pathlib.Path = pathlib.Path("/proc/self/mountinfo")) -> bool:
    """Mount a bpffs at `path` in this (the host's) mount namespace unless one is there; True when
    this call mounted it. It stays mounted: pins of other engines on the machine may live in it,
    and a node keeps its bpffs for its lifetime."""
    if mount_fstype(path, mountinfo.read_text()) == "bpf":
        return False
    done = subprocess.run(["mount", "-t", "bpf", "bpf", path], capture_output=True, text=True, timeout=30)
    if done.returncode != 0 and mount_fstype(path, mountinfo.read_text()) != "bpf":   # lost a race: fine
        raise PodFailed(f"the node has no bpffs at {path} and mounting one failed: {done.stderr.strip()}")
    return done.returncode == 0


def _is_node_sysfs(path: str) -> bool:
    # /sys/fs/* are other filesystems mounted there (bpffs, cgroup): not the netns's sysfs.
    return (path == "/sys" or path.startswith("/sys/")) and not path.startswith("/sys/fs/")


def _pod_volume(pod: Mapping[str, Any], name: str) -> str:
    meta = pod["metadata"]
    return f"{meta.get('namespace', 'default')}-{meta['name']}-{name}"


# ---- the kubelet's admission and the image --------------------------------------------------------

def _quantity(value: Any) -> float:
    """A Kubernetes quantity as a number (cpu in cores, memory in bytes)."""
    text = str(value)
    units = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
             "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", text)
    if not match or (match[2] and match[2] not in units):
        raise PodRejected(f"resource quantity {text!r} is not valid")
    return float(match[1]) * units.get(match[2], 1)


def node_cpus() -> int:
    return len(os.sched_getaffinity(0))


def node_hugepages_bytes() -> int:
    try:
        return int(pathlib.Path(HUGEPAGES_2M).read_text()) * 2 * 2**20
    except OSError:
        return 0


def admit(pod: Mapping[str, Any], node: Node) -> None:
    """Refuse what a kubelet would refuse, before anything runs: a Pod bound to another node, more
    CPUs or hugepages than the node has (the kubelet's OutOfcpu / OutOfhugepages-2Mi admission;
    podman enforces no hugepages limit at all, so this is the only check), a Localhost seccomp
    profile the node does not have (CreateContainerError), an image that is not on the node (no
    registry: ErrImagePull)."""
    meta, spec = pod["metadata"], pod["spec"]
    name = f"{meta.get('namespace', 'default')}/{meta['name']}"
    if spec.get("nodeName") != node.name:
        raise PodRejected(f"Pod {name} is bound to node {spec.get('nodeName')!r}, not {node.name!r}")
    cpu, hugepages = 0.0, 0.0
    for container in spec["containers"]:
        limits = (container.get("resources") or {}).get("limits") or {}
        cpu += _quantity(limits.get("cpu", 0))
        hugepages += _quantity(limits.get("hugepages-2Mi", 0))
    if cpu > node_cpus():
        raise PodRejected(f"Pod {name}: OutOfcpu: asks for {cpu:g} CPUs, node {node.name} has {node_cpus()}",
                          "OutOfcpu")
    if hugepages > node_hugepages_bytes():
        raise PodRejected(f"Pod {name}: OutOfhugepages-2Mi: asks for {hugepages / 2**20:g} MiB, node "
                          f"{node.name} has {node_hugepages_bytes() / 2**20:g} MiB", "OutOfhugepages-2Mi")
    profiles = [(spec.get("securityContext") or {}).get("seccompProfile")]
    profiles += [(c.get("securityContext") or {}).get("seccompProfile") for c in spec["containers"]]
    for profile in profiles:
        if profile and profile.get("type") == "Localhost":
            path = node.seccomp_root / profile.get("localhostProfile", "")
            if not path.is_file():
                raise PodRejected(f"Pod {name}: CreateContainerError: seccomp profile {path} is not on "
                                  f"node {node.name}", "CreateContainerError", waiting=True)
    for container in spec["containers"]:
        if _podman("image", "exists", container["image"], check=False).returncode != 0:
            raise PodRejected(f"Pod {name}: ErrImagePull: image {container['image']} is not on this node "
                              f"and there is no registry (build it: make images)", "ErrImagePull", waiting=True)


# ---- running it ------------------------------------------------------------------------------------

def _podman(*args: str, netns: str | None = None, check: bool = True,
            timeout: float = COMMAND_TIMEOUT_S) -> subprocess.CompletedProcess:
    argv = ["podman", *args]
    if netns:
        # Only the network namespace: the host's mounts (podman's storage, /sys/fs/cgroup) stay.
        argv = ["nsenter", f"--net=/run/netns/{netns}", *argv]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise PodFailed(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def podman_available() -> tuple[bool, str]:
    if shutil.which("podman") is None:
        return False, "podman is not installed (scripts/podman-host.sh installs it; make images runs it)"
    done = subprocess.run(["podman", "info", "--format", "{{.Host.OCIRuntime.Name}}"],
                          capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        return False, f"podman does not work here: {done.stderr.strip()} (run scripts/podman-host.sh)"
    return True, ""


@contextlib.contextmanager
def node_sysfs(netns: str, directory: pathlib.Path):
    """A sysfs mounted at `directory` by a process inside `netns`: its class/net shows that
    namespace's devices (the kernel tags a sysfs mount with its mounter's network namespace).
    Unmounted on the way out."""
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(["nsenter", f"--net=/run/netns/{netns}", "mount", "-t", "sysfs", "sysfs", str(directory)],
                   check=True, capture_output=True, timeout=30)
    try:
        yield directory
    finally:
        subprocess.run(["umount", "--lazy", str(directory)], capture_output=True, timeout=30)


class PodmanPod:
    """One Pod run by podman as this node's kubelet. A context manager: removed on the way out,
    whatever happened (containers, the Pod, its emptyDir volumes)."""

    def __init__(self, pod: Mapping[str, Any], node: Node, workdir: pathlib.Path):
        self.pod, self.node, self.workdir = pod, node, pathlib.Path(workdir)
        self.name = pod["metadata"]["name"]
        self.grace = int(pod["spec"].get("terminationGracePeriodSeconds", 30))
        self.manifest_path = self.workdir / f"{self.name}.podman.yaml"

    # -- lifecycle ---------------------------------------------------------------------------------

    def __enter__(self) -> "PodmanPod":
        try:
            self.play()
            self.wait_running()
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def play(self) -> None:
        try:
            admit(self.pod, self.node)
        except PodRejected as refused:
            if self.pod["spec"].get("nodeName") == self.node.name:   # another node's Pod is not ours to report
                self._report(self._refused_status(refused))
            raise
        if _podman("pod", "exists", self.name, check=False).returncode == 0:
            raise PodRejected(f"a Pod named {self.name} already runs on this machine")
        self.workdir.mkdir(parents=True, exist_ok=True)
        kubeconfig = write_pod_kubeconfig(self.pod, self.node, self.workdir) if mounts_token(self.pod) else None
        manifest = podman_manifest(self.pod, self.node, kubeconfig)
        if needs_host_bpffs(self.pod):
            ensure_host_bpffs()
        self.manifest_path.write_text(json.dumps(manifest, indent=2))
        self._played = True
        _podman("kube", "play", "--seccomp-profile-root", str(self.node.seccomp_root),
                str(self.manifest_path), netns=self.node.netns)

    # -- what the kubelet writes to the Pod's status -----------------------------------------------

    def _report(self, status: dict) -> None:
        if self.node.report_status is not None:
            self.node.report_status(self.pod["metadata"].get("namespace", "default"), self.name, status)

    def _refused_status(self, refused: PodRejected) -> dict:
        if refused.waiting:   # the kubelet keeps the Pod and retries: a container waits
            return {"phase": "Pending", "containerStatuses": [
                {"name": c["name"], "image": c["image"], "ready": False, "restartCount": 0,
                 "state": {"waiting": {"reason": refused.reason, "message": str(refused)}}}
                for c in self.pod["spec"]["containers"]]}
        return {"phase": "Failed", "reason": refused.reason, "message": str(refused)}

    def sync_status(self) -> dict:
        """Report what podman shows as the kubelet would: phase and each container's state and
        restart count. Returns the status written."""
        containers, phase = [], "Running"
        for spec in self.pod["spec"]["containers"]:
            info = self.inspect(spec["name"])
            state = info["State"]
            running = state["Status"] == "running"
            phase = phase if running else "Pending"
            containers.append({
                "name": spec["name"], "image": spec["image"], "imageID": info.get("Image", ""),
                "containerID": f"podman://{info['Id']}", "ready": running, "started": running,
                "restartCount": int(info.get("RestartCount") or 0),
                "state": {"running": {"startedAt": state["StartedAt"]}} if running else
                         {"terminated": {"exitCode": state.get("ExitCode", 0), "reason": "Error" if state.get("ExitCode") else "Completed",
                                         "finishedAt": state.get("FinishedAt", "")}}})
        status = {"phase": phase, "containerStatuses": containers}
        self._report(status)
        return status

    def container(self, name: str | None = None) -> str:
        """podman's name for a container of the Pod (the first unless named)."""
        containers = self.pod["spec"]["containers"]
        chosen = next((c for c in containers if name in (None, c["name"])), None)
        if chosen is None:
            raise ValueError(f"Pod {self.name} has no container {name!r}")
        return f"{self.name}-{chosen['name']}"

    def wait_running(self, timeout: float = 60.0, container: str | None = None) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            state = self.inspect(container)["State"]
            if state["Status"] == "running":
                self.sync_status()
                return state
            if state["Status"] in ("exited", "stopped", "dead") and state.get("ExitCode"):
                raise PodFailed(f"container {self.container(container)} exited with {state['ExitCode']}: "
                                f"{state.get('Error') or ''}\n{self.logs(container)[-3000:]}")
            if time.monotonic() > deadline:
                raise PodFailed(f"container {self.container(container)} not running after {timeout:.0f} s: "
                                f"{state['Status']}\n{self.logs(container)[-3000:]}")
            time.sleep(0.2)

    def inspect(self, container: str | None = None) -> dict:
        return json.loads(_podman("container", "inspect", self.container(container)).stdout)[0]

    def pid(self, container: str | None = None) -> int:
        """The container's main process, as the host sees it."""
        return int(self.inspect(container)["State"]["Pid"])

    def exec(self, *argv: str, container: str | None = None, check: bool = False) -> subprocess.CompletedProcess:
        """Run `argv` inside the running container (its user, capabilities, filter and mounts)."""
        return _podman("exec", self.container(container), *argv, check=check)

    def logs(self, container: str | None = None, current_run: bool = False) -> str:
        """The container's output, of every run podman started (after restarts), or only of the
        current one."""
        since = ["--since", self.inspect(container)["State"]["StartedAt"]] if current_run else []
        done = _podman("logs", *since, self.container(container), check=False)
        return done.stdout + done.stderr

    def stop(self) -> None:
        """`podman pod stop`: SIGTERM, and SIGKILL after the Pod's terminationGracePeriodSeconds, as a
        kubelet deleting the Pod would (podman's own default would be 10 s)."""
        _podman("pod", "stop", "--time", str(self.grace), self.name, timeout=self.grace + COMMAND_TIMEOUT_S)

    def kill(self, container: str | None = None) -> int:
        """SIGKILL the container's main process from outside, as a crash or the OOM killer would
        (not `podman kill`: podman takes that for a user's stop and does not restart). What
        follows is the Pod's restartPolicy, which podman applies as a kubelet would (Always:
        started again). Returns the killed pid."""
        pid = self.pid(container)
        os.kill(pid, signal.SIGKILL)
        return pid

    def remove(self) -> None:
        if not getattr(self, "_played", False):
            return
        _podman("pod", "rm", "--force", "--time", "0", self.name, check=False)
        for volume in self.pod["spec"].get("volumes") or []:
            if "emptyDir" in volume:
                _podman("volume", "rm", "--force", _pod_volume(self.pod, volume["name"]), check=False)
        self._played = False
