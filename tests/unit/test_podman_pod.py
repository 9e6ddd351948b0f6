"""The Pod translation for podman (tickwire_demo.podman_pod.podman_manifest) rule by rule, and the
kubelet admission the runner emulates; on the operator's own Pod where it matters. No podman here:
tests/e2e/test_operator_podman.py runs the result for real."""
from __future__ import annotations

import copy
import json
import pathlib

import pytest

from tickwire_demo import podman_pod
from tickwire_demo.podman_pod import KUBECONFIG_IN_POD, Node, PodRejected, admit, podman_manifest
from tickwire_operator.placement import Allocation
from tickwire_operator.pod import AgentSettings, build_agent_pod

SYSFS = pathlib.Path("/run/test-node/sys")


def node(tmp_path, **changes) -> Node:
    fields = dict(name="trading-1", api_server="http://127.0.0.1:1", issue_token=lambda ns, sa: f"token-{ns}-{sa}",
                  seccomp_root=tmp_path / "seccomp", netns="tw-nd-1", sysfs=SYSFS)
    fields.update(changes)
    return Node(**fields)


def operator_pod() -> dict:
    plan = {"feedHandler": {"name": "itch-a", "namespace": "feeds", "uid": "u-1"}, "interface": "twn1", "queue": 0,
            "cores": [1], "hugepages": {"count": 0}, "metrics": {"address": "0.0.0.0", "port": 9400},
            "busyPoll": {"enabled": True, "napiDeferHardIrqs": 2, "groFlushTimeoutNs": 200000}}
    body = {"metadata": {"name": "itch-a", "namespace": "feeds", "uid": "u-1"}}
    allocation = Allocation(node="trading-1", interface="twn1", queue=0, cores=(1,), hugepages=0, metrics_port=9400)
    return build_agent_pod(body, allocation, plan, AgentSettings())


def kubeconfig(tmp_path) -> pathlib.Path:
    return tmp_path / "pod.kubeconfig"


def test_what_a_kubelet_enforces_passes_through_unchanged(tmp_path):
    pod = operator_pod()
    out = podman_manifest(pod, node(tmp_path), kubeconfig(tmp_path))
    before, after = pod["spec"]["containers"][0], out["spec"]["containers"][0]
    for field in ("securityContext", "resources", "image", "command", "imagePullPolicy"):
        assert after[field] == before[field], field
    assert after["volumeMounts"][:-1] == before["volumeMounts"]
    for key in ("hostNetwork", "restartPolicy", "nodeName", "serviceAccountName", "terminationGracePeriodSeconds"):
        assert out["spec"].get(key) == pod["spec"].get(key), key
    assert pod == operator_pod(), "the input is not modified"


def test_r1_seccomp_profile_becomes_the_annotation_podman_reads(tmp_path):
    pod = operator_pod()
    out = podman_manifest(pod, node(tmp_path), kubeconfig(tmp_path))
    name = pod["spec"]["securityContext"]["seccompProfile"]["localhostProfile"]
    assert out["metadata"]["annotations"]["seccomp.security.alpha.kubernetes.io/pod"] == f"localhost/{name}"
    pod["spec"]["containers"][0]["securityContext"]["seccompProfile"] = {"type": "RuntimeDefault"}
    out = podman_manifest(pod, node(tmp_path), kubeconfig(tmp_path))
    assert out["metadata"]["annotations"]["container.seccomp.security.alpha.kubernetes.io/agent"] == "runtime/default"
    pod["spec"]["securityContext"]["seccompProfile"] = {"type": "Localhost"}
    with pytest.raises(PodRejected, match="seccompProfile"):
        podman_manifest(pod, node(tmp_path), kubeconfig(tmp_path))
    # podman opens only the first path segment: refused rather than run with another filter.
    pod["spec"]["securityContext"]["seccompProfile"] = {"type": "Localhost", "localhostProfile": "tickwire/a.json"}
    with pytest.raises(PodRejected, match="subdirectory"):
        podman_manifest(pod, node(tmp_path), kubeconfig(tmp_path))


def test_r2_downward_api_fields_are_resolved_as_the_kubelet_would(tmp_path):
    pod = operator_pod()
    pod["metadata"]["uid"] = "pod-uid-7"
    pod["spec"]["containers"][0]["env"].append(
        {"name": "LABEL", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['tickwire.dev/feedhandler']"}}})
    env = {v["name"]: v for v in podman_manifest(pod, node(tmp_path), kubeconfig(tmp_path))["spec"]["containers"][0]["env"]}
    assert env["TICKWIRE_NODE_NAME"] == {"name": "TICKWIRE_NODE_NAME", "value": "trading-1"}
    assert env["TICKWIRE_POD_NAMESPACE"]["value"] == "feeds"
    assert env["TICKWIRE_POD_NAME"]["value"] == "itch-a-agent"
    assert env["LABEL"]["value"] == "itch-a"
    assert not any("valueFrom" in v for v in env.values())
    pod["spec"]["containers"][0]["env"].append({"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}})
    with pytest.raises(PodRejected, match="status.podIP"):
        podman_manifest(pod, node(tmp_path), kubeconfig(tmp_path))


def test_r3_the_pod_s_own_token_in_a_kubeconfig_where_the_token_would_be(tmp_path):
    pod = operator_pod()
    path = podman_pod.write_pod_kubeconfig(pod, node(tmp_path), tmp_path)
    config = json.loads(path.read_text())
    assert config["users"][0]["user"]["token"] == "token-feeds-" + pod["spec"]["serviceAccountName"]
    assert config["clusters"][0]["cluster"]["server"] == "http://127.0.0.1:1"
    assert path.stat().st_mode & 0o077 == 0
    out = podman_manifest(pod, node(tmp_path), path)
    container = out["spec"]["containers"][0]
    assert {"name": "KUBECONFIG", "value": KUBECONFIG_IN_POD} in container["env"]
    mount = container["volumeMounts"][-1]
    assert mount == {"name": "tickwire-kubeconfig", "mountPath": KUBECONFIG_IN_POD, "readOnly": True}
    assert {"name": "tickwire-kubeconfig", "hostPath": {"path": str(path), "type": "File"}} in out["spec"]["volumes"]


def test_r3_a_pod_that_opts_out_of_the_token_gets_none(tmp_path):
    """automountServiceAccountToken: false: a kubelet mounts no token, so no kubeconfig either."""
    pod = operator_pod()
    pod["spec"]["automountServiceAccountToken"] = False
    assert not podman_pod.mounts_token(pod) and podman_pod.mounts_token(operator_pod())
    out = podman_manifest(pod, node(tmp_path), None)
    container = out["spec"]["containers"][0]
    assert not any(e["name"] == "KUBECONFIG" for e in container["env"])
    assert all(m["name"] != "tickwire-kubeconfig" for m in container["volumeMounts"])
    assert all(v["name"] != "tickwire-kubeconfig" for v in out["spec"]["volumes"])


def test_r4_ports_are_left_out_only_under_host_network(tmp_path):
    pod = operator_pod()
    assert "ports" not in podman_manifest(pod, node(tmp_path), kubeconfig(tmp_path))["spec"]["containers"][0]
    pod["spec"]["hostNetwork"] = False
    out = podman_manifest(pod, node(tmp_path), kubeconfig(tmp_path))
    assert out["spec"]["containers"][0]["ports"] == pod["spec"]["containers"][0]["ports"]


def test_r5_sysfs_host_paths_point_at_the_node_namespace_s_sysfs(tmp_path):
    pod = operator_pod()
    volumes = {v["name"]: v for v in podman_manifest(pod, node(tmp_path), kubeconfig(tmp_path))["spec"]["volumes"]}
    assert volumes["netdev"]["hostPath"] == {"path": f"{SYSFS}/class/net/twn1", "type": "Directory"}
    assert volumes["state"] == next(v for v in pod["spec"]["volumes"] if v["name"] == "state")
    # On a machine that is itself the node, nothing moves.
    volumes = {v["name"]: v for v in podman_manifest(pod, node(tmp_path, netns=None, sysfs=None),
                                                     kubeconfig(tmp_path))["spec"]["volumes"]}
    assert volumes["netdev"]["hostPath"]["path"] == "/sys/class/net/twn1"


def test_r8_the_bpffs_is_the_host_s_own_and_the_runner_mounts_it_if_missing(tmp_path):
    pod = operator_pod()
    assert podman_pod.needs_host_bpffs(pod)
    volumes = {v["name"]: v for v in podman_manifest(pod, node(tmp_path), kubeconfig(tmp_path))["spec"]["volumes"]}
    # Not under the node namespace's sysfs (where /sys/fs/bpf is an empty directory): the host's.
    assert volumes["bpffs"]["hostPath"] == {"path": "/sys/fs/bpf", "type": "Directory"}
    assert volumes["node-state"]["hostPath"] == {"path": "/run/tickwire/node", "type": "DirectoryOrCreate"}
    mountinfo = ("22 1 0:21 / /sys rw,nosuid - sysfs sysfs rw\n"
                 "30 22 0:26 / /sys/fs/cgroup ro - tmpfs tmpfs ro\n")
    assert podman_pod.mount_fstype("/sys/fs/bpf", mountinfo) is None
    assert podman_pod.mount_fstype("/sys", mountinfo) == "sysfs"
    stacked = mountinfo + "41 22 0:40 / /sys/fs/bpf rw,relatime shared:9 - bpf bpf rw,mode=700\n"
    assert podman_pod.mount_fstype("/sys/fs/bpf", stacked) == "bpf"
    assert podman_pod.mount_fstype("/sys/fs/bpf", stacked + "42 41 0:41 / /sys/fs/bpf rw - tmpfs t rw\n") == "tmpfs"


def test_r8_the_runner_leaves_a_host_bpffs_alone_and_mounts_a_missing_one(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(podman_pod.subprocess, "run",
                        lambda argv, **kw: calls.append(argv) or podman_pod.subprocess.CompletedProcess(argv, 0, "", ""))
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text("41 22 0:40 / /sys/fs/bpf rw - bpf bpf rw\n")
    assert podman_pod.ensure_host_bpffs(mountinfo=mountinfo) is False and calls == []
    mountinfo.write_text("22 1 0:21 / /sys rw - sysfs sysfs rw\n")
    assert podman_pod.ensure_host_bpffs(mountinfo=mountinfo) is True
    assert calls == [["mount", "-t", "bpf", "bpf", "/sys/fs/bpf"]]


def test_r6_empty_dirs_belong_to_one_pod_and_a_medium_is_refused(tmp_path):
    pod = operator_pod()
    pod["spec"]["volumes"].append({"name": "scratch", "emptyDir": {}})
    pod["spec"]["containers"][0]["volumeMounts"].append({"name": "scratch", "mountPath": "/scratch"})
    out = podman_manifest(pod, node(tmp_path), kubeconfig(tmp_path))
    assert {"name": "feeds-itch-a-agent-scratch", "emptyDir": {}} in out["spec"]["volumes"]
    assert {"name": "feeds-itch-a-agent-scratch", "mountPath": "/scratch"} in out["spec"]["containers"][0]["volumeMounts"]
    pod["spec"]["volumes"][-1]["emptyDir"] = {"medium": "HugePages-2Mi"}
    with pytest.raises(PodRejected, match="HugePages-2Mi"):
        podman_manifest(pod, node(tmp_path), kubeconfig(tmp_path))


def test_r7_long_annotations_are_left_out_and_short_ones_kept(tmp_path):
    pod = operator_pod()
    assert len(pod["metadata"]["annotations"]["tickwire.dev/plan"]) > podman_pod.PODMAN_ANNOTATION_MAX
    pod["metadata"]["annotations"]["short"] = "x" * podman_pod.PODMAN_ANNOTATION_MAX
    annotations = podman_manifest(pod, node(tmp_path), kubeconfig(tmp_path))["metadata"]["annotations"]
    assert "tickwire.dev/plan" not in annotations
    assert annotations["short"] == "x" * podman_pod.PODMAN_ANNOTATION_MAX
    assert all(len(v) <= podman_pod.PODMAN_ANNOTATION_MAX for v in annotations.values())


@pytest.mark.parametrize("change, message", [
    (lambda pod: pod["spec"].update(nodeName="trading-2"), "bound to node 'trading-2'"),
    (lambda pod: pod["spec"]["containers"][0]["resources"]["limits"].update(cpu="4096"), "OutOfcpu"),
    (lambda pod: pod["spec"]["containers"][0]["resources"]["limits"].update({"hugepages-2Mi": "1Ti"}),
     "OutOfhugepages-2Mi"),
    (lambda pod: None, "CreateContainerError: seccomp profile"),
])
def test_admission_refuses_what_a_kubelet_would(tmp_path, change, message):
    pod = copy.deepcopy(operator_pod())
    change(pod)
    with pytest.raises(PodRejected, match=message):
        admit(pod, node(tmp_path))


def test_a_refused_pod_is_reported_as_the_kubelet_would_and_nothing_runs(tmp_path):
    reports = []
    pod = operator_pod()
    pod["spec"]["containers"][0]["resources"]["limits"]["cpu"] = "4096"
    runner = podman_pod.PodmanPod(pod, node(tmp_path, report_status=lambda *args: reports.append(args)), tmp_path)
    with pytest.raises(PodRejected, match="OutOfcpu"):
        runner.play()
    assert reports == [("feeds", "itch-a-agent", {"phase": "Failed", "reason": "OutOfcpu", "message": reports[0][2]["message"]})]
    runner.remove()   # nothing was played: nothing to do, and no podman call
    # A missing seccomp profile keeps the Pod Pending with its container waiting.
    reports.clear()
    pod["spec"]["containers"][0]["resources"]["limits"]["cpu"] = "1"
    with pytest.raises(PodRejected, match="CreateContainerError"):
        podman_pod.PodmanPod(pod, node(tmp_path, report_status=lambda *args: reports.append(args)), tmp_path).play()
    status = reports[0][2]
    assert status["phase"] == "Pending"
    assert status["containerStatuses"][0]["state"]["waiting"]["reason"] == "CreateContainerError"
