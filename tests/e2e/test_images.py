"""The images `make images` builds, started for real with podman: each one's `--help` and its
default command (the Dockerfiles are checked statically in tests/chart/test_chart_dockerfiles.py).

The operator's default command is what the chart runs by default; it is started as the chart
would start it (its image's own user, read-only root, host network of a node namespace) against
the Kubernetes emulator, with a kubeconfig where its service-account token would be, and must
serve kopf's liveness probe on the chart's port.

Needs root, podman and the images: fails instead of skipping when TICKWIRE_REQUIRE_NETNS=1 (CI).
"""
from __future__ import annotations

import subprocess
import sys

import kubernetes.client as k8s
import pytest

from tests.e2e.test_operator_podman import require_podman
from tests.support.kube_emulator import FEEDHANDLER_CRD, KubeEmulator, load_yaml, netns_executor
from tests.support.netns import VethPair
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.netns, pytest.mark.slow]

IMAGES = {"agent": "tickwire/agent:0.1.0", "operator": "tickwire/operator:0.1.0"}
LIVENESS_PORT = 8081   # charts/tickwire/values.yaml operator.livenessPort
HEALTHZ = (f"import urllib.request; print(urllib.request.urlopen("
           f"'http://127.0.0.1:{LIVENESS_PORT}/healthz', timeout=3).status)")


def podman(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_help(image):
    require_podman()
    done = podman("run", "--rm", "--read-only", IMAGES[image], "--help")
    assert done.returncode == 0, done.stderr
    assert f"usage: tickwire-{image}" in done.stdout


def test_agent_default_command_is_its_help():
    require_podman()
    done = podman("run", "--rm", "--read-only", IMAGES["agent"])
    assert done.returncode == 0, done.stderr
    assert "usage: tickwire-agent" in done.stdout and "{run,plan,restore}" in done.stdout


def test_operator_default_command_runs_against_an_api_server(tmp_path):
    require_podman()
    name = f"tw-operator-image-{tmp_path.name[-20:]}".replace("_", "-").lower()
    with VethPair() as pair, KubeEmulator.running(netns=pair.node_ns) as kube:
        client = netns_executor(pair.node_ns)
        try:
            client.submit(k8s.ApiextensionsV1Api(kube.api_client()).create_custom_resource_definition,
                          load_yaml(FEEDHANDLER_CRD)).result(timeout=30)
            kubeconfig = kube.write_kubeconfig(tmp_path)
            kubeconfig.chmod(0o644)   # the image's user (10001) reads it
            started = subprocess.run([
                "nsenter", f"--net=/run/netns/{pair.node_ns}", "podman", "run", "--detach", "--name", name,
                "--network", "host", "--read-only",
                "-v", f"{kubeconfig}:/var/run/secrets/kubernetes.io/serviceaccount/kubeconfig:ro",
                "-e", "KUBECONFIG=/var/run/secrets/kubernetes.io/serviceaccount/kubeconfig",
                IMAGES["operator"]], capture_output=True, text=True, timeout=120)
            assert started.returncode == 0, started.stderr

            def healthy():
                state = podman("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", name).stdout.split()
                assert state and state[0] == "running", f"the operator exited: {state}\n{podman('logs', name).stderr}"
                probe = pair.run(pair.node_ns, sys.executable, "-c", HEALTHZ, check=False)
                return probe.returncode == 0 and probe.stdout.strip() == "200"

            wait_until("kopf's liveness probe from the operator image's default command", healthy, 90, 0.5,
                       lambda: podman("logs", name).stderr[-3000:])
            user = podman("exec", name, "id", "-u").stdout.strip()
            assert user == "10001"
        finally:
            podman("rm", "--force", "--time", "0", name)
            client.shutdown(wait=True)
