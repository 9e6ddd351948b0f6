"""From chart values to the agent Pod: the operator's Deployment carries the agent settings the Pod
builder reads (seccomp profile, state root), and the profile the chart ships is the one the Pod
names. Helm renders for real (helm_python)."""
from __future__ import annotations

import json

from tests.chart.test_chart_render import CHART, one, render
from tickwire_operator.placement import Allocation
from tickwire_operator.pod import AgentSettings, build_agent_pod


def pod_from_chart(values: dict) -> dict:
    deployment = one(render(values), "Deployment", "-operator")
    env = {e["name"]: e["value"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
           if "value" in e}
    body = {"metadata": {"name": "itch-a", "namespace": "feeds", "uid": "u-1"}}
    plan = {"metrics": {"port": 9470}, "interface": "eth1", "hugepages": {"count": 0}}
    return build_agent_pod(body, Allocation("n1", "eth1", 0, (2,)), plan, AgentSettings.from_env(env))


def test_default_values_give_the_shipped_profile_and_a_tmpfs_state_root():
    pod = pod_from_chart({})
    profile = pod["spec"]["securityContext"]["seccompProfile"]
    assert profile["type"] == "Localhost"
    shipped = CHART / "files" / profile["localhostProfile"]     # the same name on the node
    assert json.loads(shipped.read_text())["defaultAction"] == "SCMP_ACT_ERRNO"
    assert pod["spec"]["volumes"][0]["hostPath"] == {"path": "/run/tickwire/feedhandlers/feeds/itch-a",
                                                     "type": "DirectoryOrCreate"}


def test_values_reach_the_pod():
    pod = pod_from_chart({"agent": {"seccompProfile": "ops/feeds.json", "stateRoot": "/run/feeds"}})
    assert pod["spec"]["securityContext"]["seccompProfile"]["localhostProfile"] == "ops/feeds.json"
    assert pod["spec"]["volumes"][0]["hostPath"]["path"] == "/run/feeds/feeds/itch-a"
    assert "/run/feeds/feeds/itch-a" in pod["spec"]["containers"][0]["command"]
