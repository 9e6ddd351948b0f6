"""The chart's CRDs are the repository's crds/, and the chart's upgrade path really upgrades them.

- charts/tickwire/crds/ must equal crds/ byte for byte (scripts/sync-chart-crds.sh copies them; its
  --check mode is what CI relies on, so it is tested against a real drift too).
- Helm never upgrades crds/; the chart's pre-upgrade hook runs charts/tickwire/files/upgrade_crds.py.
  That script runs here for real, with the real Kubernetes client, against the kmock Kubernetes
  emulator over HTTP on loopback (no API server can run on these machines).
"""
from __future__ import annotations

import asyncio
import copy
import importlib.util
import json
import pathlib
import shutil
import subprocess
import threading

import helm_python as helm
import kmock
import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "tickwire"
SYNC = ROOT / "scripts" / "sync-chart-crds.sh"
SOURCE_CRDS = sorted((ROOT / "crds").glob("*.yaml"))


def test_chart_crds_equal_the_repository_crds():
    chart_crds = sorted((CHART / "crds").glob("*.yaml"))
    assert [p.name for p in chart_crds] == [p.name for p in SOURCE_CRDS], \
        "charts/tickwire/crds/ and crds/ hold different files: run scripts/sync-chart-crds.sh"
    for source, copied in zip(SOURCE_CRDS, chart_crds):
        assert copied.read_bytes() == source.read_bytes(), \
            f"charts/tickwire/crds/{copied.name} differs from crds/{source.name}: run scripts/sync-chart-crds.sh"


def test_helm_ships_the_crds_from_the_crds_folder():
    with helm.Chart.load(str(CHART)) as chart:
        shipped = {crd["filename"]: crd["data"] for crd in chart.crds}
    assert sorted(pathlib.PurePath(name).name for name in shipped) == [p.name for p in SOURCE_CRDS]
    for name, data in shipped.items():
        source = ROOT / "crds" / pathlib.PurePath(name).name
        assert yaml.safe_load(data) == yaml.safe_load(source.read_text())


def sync(tree: pathlib.Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(tree / "scripts" / SYNC.name), *args],
                          capture_output=True, text=True, timeout=30)


@pytest.fixture
def tree(tmp_path) -> pathlib.Path:
    """A copy of the parts of the repository the sync script touches."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(SYNC, tmp_path / "scripts")
    shutil.copytree(ROOT / "crds", tmp_path / "crds")
    shutil.copytree(CHART / "crds", tmp_path / "charts" / "tickwire" / "crds")
    return tmp_path


def test_sync_check_passes_on_the_repository():
    result = subprocess.run(["bash", str(SYNC), "--check"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


def test_sync_check_names_drift_and_sync_repairs_it(tree):
    crd = tree / "crds" / "feedhandler.yaml"
    crd.write_text(crd.read_text() + "# an edit nobody synced\n")
    stale = tree / "charts" / "tickwire" / "crds" / "removed.yaml"
    stale.write_text("kind: CustomResourceDefinition\n")

    check = sync(tree, "--check")
    assert check.returncode == 1
    assert "feedhandler.yaml" in check.stderr and "removed.yaml (not in crds/)" in check.stderr
    assert "Run scripts/sync-chart-crds.sh" in check.stderr
    assert stale.exists(), "--check must not change anything"

    assert sync(tree).returncode == 0
    assert (tree / "charts" / "tickwire" / "crds" / "feedhandler.yaml").read_bytes() == crd.read_bytes()
    assert not stale.exists()
    assert sync(tree, "--check").returncode == 0


def test_sync_refuses_unknown_arguments(tree):
    result = sync(tree, "--force")
    assert result.returncode == 2 and "usage" in result.stderr


# ---- the pre-upgrade hook's script, against the kmock emulator ---------------------------------

def load_upgrade_script():
    spec = importlib.util.spec_from_file_location("upgrade_crds", CHART / "files" / "upgrade_crds.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class EmulatedApiServer:
    """kmock's Kubernetes emulator on a loopback port, served from its own thread and event loop
    so the synchronous Kubernetes client can talk to it."""

    def __enter__(self):
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._serve(),), daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout=15):
            raise RuntimeError("the kmock emulator did not start within 15 s")
        config = client.Configuration()
        config.host = self.url
        self.api_client = client.ApiClient(config)
        return self

    async def _serve(self):
        self._stop = asyncio.Event()
        async with kmock.KubernetesEmulator() as emulator, kmock.Server(emulator) as server:
            self.url = str(server.url).rstrip("/")
            self._ready.set()
            await self._stop.wait()

    def __exit__(self, *exc):
        self.api_client.close()
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)


def read_crd(api: client.ApiextensionsV1Api, name: str) -> dict:
    return json.loads(api.read_custom_resource_definition(name, _preload_content=False).data)


@pytest.fixture
def crd() -> dict:
    return yaml.safe_load((ROOT / "crds" / "feedhandler.yaml").read_text())


def an_older(crd: dict) -> dict:
    """The same CRD as an earlier release might have had it: a field fewer, other labels."""
    old = copy.deepcopy(crd)
    old["metadata"]["resourceVersion"] = "41"  # kmock does not keep resourceVersions itself
    old["metadata"]["labels"] = {"app.kubernetes.io/name": "tickwire", "stale": "yes"}
    spec_properties = old["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    spec_properties.pop("metricsPort")
    return old


def test_upgrade_hook_replaces_an_older_crd(crd):
    script = load_upgrade_script()
    with EmulatedApiServer() as server:
        api = client.ApiextensionsV1Api(server.api_client)
        api.create_custom_resource_definition(an_older(crd), _preload_content=False)
        assert read_crd(api, crd["metadata"]["name"])["spec"] != crd["spec"]

        report = script.upgrade(api, crd)

        live = read_crd(api, crd["metadata"]["name"])
        assert live["spec"] == crd["spec"]
        assert live["metadata"]["labels"] == crd["metadata"]["labels"]
        assert "replaced spec" in report and "41" in report


def test_upgrade_hook_does_not_overwrite_a_concurrent_change(crd):
    """The patch carries a resourceVersion test: a CRD changed after the read is left alone."""
    script = load_upgrade_script()
    with EmulatedApiServer() as server:
        api = client.ApiextensionsV1Api(server.api_client)
        older = an_older(crd)
        api.create_custom_resource_definition(older, _preload_content=False)
        read_before_the_change = copy.deepcopy(older)
        read_before_the_change["metadata"]["resourceVersion"] = "40"
        with pytest.raises(ApiException):
            api.patch_custom_resource_definition(
                crd["metadata"]["name"], script.replacement_patch(read_before_the_change, crd),
                _content_type="application/json-patch+json")
        assert read_crd(api, crd["metadata"]["name"])["spec"] == older["spec"]


def test_upgrade_hook_explains_a_missing_crd(crd):
    script = load_upgrade_script()
    with EmulatedApiServer() as server:
        api = client.ApiextensionsV1Api(server.api_client)
        with pytest.raises(SystemExit) as stop:
            script.upgrade(api, crd)
    assert "is not in the cluster" in str(stop.value)
    assert "kubectl apply --server-side -f crds/" in str(stop.value)
