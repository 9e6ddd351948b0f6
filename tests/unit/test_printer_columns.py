"""Server-side printing of FeedHandlers (tickwire_demo.printer_columns): the CRD's printer
columns evaluated like the API server does, and laid out like kubectl does. The last test puts
the two halves against the real kubectl, through the emulator, when kubectl is installed."""
from __future__ import annotations

import datetime
import re
import shutil
import subprocess

import kubernetes.client as k8s
import pytest

from tickwire_demo.kube_emulator import FEEDHANDLER_CRD, KubeEmulator, load_yaml
from tickwire_demo.printer_columns import (
    _go_float, compile_jsonpath, evaluate, format_table, human_duration, to_table)

COLUMNS = load_yaml(FEEDHANDLER_CRD)["spec"]["versions"][0]["additionalPrinterColumns"]
NOW = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)

READY_FH = {
    "metadata": {"name": "itch-a", "namespace": "feeds", "creationTimestamp": "2026-01-02T02:59:00Z"},
    "status": {"placement": {"node": "trading-1", "queue": 3, "coreList": "2-3", "metricsPort": 9471},
               "observed": {"flowSteering": {"mode": "ntuple", "reason": "ntuple filters", "rules": [1023]}},
               "snapshot": {"xdpMode": "native", "rate": 20000.0, "latency": {"p99Micros": 3.5}},
               "conditions": [{"type": "Placed", "status": "True", "reason": "Placed"},
                              {"type": "Ready", "status": "True", "reason": "FeedHealthy"}]},
}


@pytest.mark.parametrize("path, expected", [
    (".status.placement.node", ["trading-1"]),
    (".status.conditions[?(@.type==\"Ready\")].reason", ["FeedHealthy"]),
    (".status.conditions[?(@.type!='Ready')].type", ["Placed"]),
    (".status.conditions[*].status", ["True", "True"]),
    (".status.conditions[-1].type", ["Ready"]),
    (".status['placement'].queue", [3]),
    ("{.status.snapshot.latency.p99Micros}", [3.5]),
    (".status.placement.missing", []),
    (".status.conditions[5].type", []),
    (".status.conditions[?(@.type==\"Gone\")].status", []),
])
def test_jsonpath_subset(path, expected):
    assert evaluate(compile_jsonpath(path), READY_FH) == expected


@pytest.mark.parametrize("path", ["status.node", ".status..node", ".status[?(@.a=~b)]", ".a[1:2]"])
def test_jsonpath_outside_the_subset_is_refused_by_name(path):
    with pytest.raises(ValueError, match=re.escape(repr(path))):
        compile_jsonpath(path)


@pytest.mark.parametrize("seconds, text", [
    (-5, "<invalid>"), (-0.5, "0s"), (0, "0s"), (119, "119s"), (120, "2m"), (185, "3m5s"),
    (600, "10m"), (179 * 60, "179m"), (3 * 3600, "3h"), (3 * 3600 + 60, "3h1m"), (30 * 3600, "30h"),
    (50 * 3600, "2d2h"), (9 * 86400, "9d"), (800 * 86400, "2y70d"), (9 * 365 * 86400, "9y"),
])
def test_ages_read_like_kubectl(seconds, text):
    assert human_duration(seconds) == text


@pytest.mark.parametrize("value, text", [
    (20000.0, "20000"), (19999.5, "19999.5"), (999999.0, "999999"), (1e6, "1e+06"),
    (1234567.0, "1.234567e+06"), (12.345678, "12.345678"), (0.0001, "0.0001"), (1e-5, "1e-05"),
    (0.0, "0"), (-2.5, "-2.5"),
])
def test_numbers_print_as_go_prints_them(value, text):
    assert _go_float(value) == text


def test_the_table_has_the_crd_columns_typed_as_the_api_server_types_them():
    table = to_table([READY_FH, {"metadata": {"name": "new", "creationTimestamp": "2026-01-02T03:04:05Z"}}],
                     COLUMNS, resource_version="7", now=NOW)
    assert [c["name"] for c in table["columnDefinitions"]] == \
        ["Name", "Node", "Queue", "Cores", "XDP", "Rate", "P99us", "Ready", "Reason", "Metrics", "Steering", "Age"]
    assert table["rows"][0]["cells"] == ["itch-a", "trading-1", 3, "2-3", "native", 20000.0, 3.5, "True",
                                         "FeedHealthy", 9471, "ntuple", "5m5s"]
    assert table["rows"][1]["cells"] == ["new", None, None, None, None, None, None, None, None, None, None, "0s"]
    assert table["rows"][0]["object"]["kind"] == "PartialObjectMetadata"
    assert table["metadata"]["resourceVersion"] == "7"
    text = format_table(table)
    assert text.splitlines() == [
        "NAME     NODE        QUEUE   CORES   XDP      RATE    P99US   READY   AGE",
        "itch-a   trading-1   3       2-3     native   20000   3.5     True    5m5s",
        "new                                                                   0s",
    ]
    assert "REASON" in format_table(table, wide=True) and "FeedHealthy" in format_table(table, wide=True)


def test_a_value_of_the_wrong_type_is_no_value():
    odd = {"metadata": {"name": "odd", "creationTimestamp": "yesterday"},
           "status": {"placement": {"queue": "three"}, "snapshot": {"rate": True}}}
    cells = to_table([odd], COLUMNS, now=NOW)["rows"][0]["cells"]
    assert (cells[2], cells[5], cells[-1]) == (None, None, "<invalid>")


def test_our_layout_is_kubectls_layout(tmp_path):
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: nothing to compare the layout with")
    with KubeEmulator.running() as kube:
        kubeconfig = kube.write_kubeconfig(tmp_path)
        api = kube.api_client()
        k8s.ApiextensionsV1Api(api).create_custom_resource_definition(load_yaml(FEEDHANDLER_CRD))
        custom = k8s.CustomObjectsApi(api)
        for name in ("itch-a", "a-much-longer-name"):
            custom.create_namespaced_custom_object("tickwire.dev", "v1alpha1", "feeds", "feedhandlers", {
                "apiVersion": "tickwire.dev/v1alpha1", "kind": "FeedHandler", "metadata": {"name": name},
                "spec": {"lines": [{"name": "A", "group": "239.1.1.1", "port": 1}]}})
        custom.patch_namespaced_custom_object_status("tickwire.dev", "v1alpha1", "feeds", "feedhandlers", "itch-a",
                                                     {"status": READY_FH["status"]})
        custom.patch_namespaced_custom_object_status(
            "tickwire.dev", "v1alpha1", "feeds", "feedhandlers", "a-much-longer-name",
            {"status": {"placement": {"node": "n", "queue": 0}, "snapshot": {"rate": 1234567.0}}})
        for wide in (False, True):
            shown = subprocess.run([kubectl, "--kubeconfig", str(kubeconfig), "--cache-dir", str(tmp_path / "cache"),
                                    "get", "feedhandlers", "-n", "feeds", *(["-o", "wide"] if wide else [])],
                                   capture_output=True, text=True, timeout=60, check=True).stdout
            objects = sorted((kube.get("tickwire.dev/v1alpha1/feedhandlers", "feeds", n)
                              for n in ("itch-a", "a-much-longer-name")), key=lambda o: o["metadata"]["name"])
            ours = format_table(to_table(objects, COLUMNS), wide=wide)
            # AGE is the last column (unpadded) and may tick between the two requests.
            strip_age = lambda text: [re.sub(r"\S+$", "", line) for line in text.strip("\n").splitlines()]  # noqa: E731
            assert strip_age(ours) == strip_age(shown), f"ours:\n{ours}\nkubectl:\n{shown}"
            assert "1.234567e+06" in shown
            assert ("FeedHealthy" in shown) == wide
