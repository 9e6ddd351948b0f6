"""scripts/kind-e2e.sh, as far as it can be checked on machines without Docker.

The script itself cannot run here (no Docker engine, no images): see its header. These tests
check what can be: bash accepts it, it agrees with the example FeedHandler it applies and with the
files it builds from, and without Docker it stops before doing anything, saying why. The "no
engine" case uses stand-in commands on PATH, since a docker client without an engine is exactly
what such a stand-in is.
"""
from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "kind-e2e.sh"
TEXT = SCRIPT.read_text()
EXAMPLE = yaml.safe_load((ROOT / "examples" / "feedhandler-kind.yaml").read_text())


def variable(name: str) -> str:
    match = re.search(rf"\b{name}=(\S+)", TEXT)
    assert match, f"{name} not set in {SCRIPT.name}"
    value = match.group(1).strip('"')
    return value.replace("$CLUSTER", variable("CLUSTER")) if "$CLUSTER" in value else value


def test_bash_accepts_the_script():
    result = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert os.access(SCRIPT, os.X_OK)
    assert "set -euo pipefail" in TEXT


def test_script_and_example_agree():
    spec = EXAMPLE["spec"]
    assert spec["nodeName"] == variable("WORKER") == "tickwire-e2e-worker"
    assert spec["interface"] == variable("FEED_IF")
    assert spec["lines"][0]["group"] == variable("GROUP") and spec["lines"][0]["port"] == int(variable("PORT"))
    assert spec["xdpMode"] == "generic", "veth in a kind node: generic (SKB) mode"
    assert f'{variable("FEED_IF")}=0' in TEXT.replace("$FEED_IF", variable("FEED_IF"))
    assert spec["queue"] == 0


def test_every_file_the_script_uses_exists():
    for path in re.findall(r"\b((?:docker|charts|examples)/[\w./-]+)", TEXT):
        assert (ROOT / path).exists(), f"{SCRIPT.name} uses {path}, which does not exist"


def test_script_says_it_cannot_run_here():
    assert "CANNOT run on tickwire's development and CI machines" in TEXT


def run_with_path(tmp_path: pathlib.Path, tools: dict[str, str]) -> subprocess.CompletedProcess:
    """Run the script with PATH = the basic utilities + stand-ins named in `tools`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("dirname", "env", "cat", "printf"):
        found = shutil.which(name)
        if found:
            (bin_dir / name).symlink_to(found)
    for name, body in tools.items():
        stand_in = bin_dir / name
        stand_in.write_text(f"#!/bin/sh\n{body}\n")
        stand_in.chmod(0o755)
    bash = shutil.which("bash")
    return subprocess.run([bash, str(SCRIPT)], capture_output=True, text=True, timeout=30,
                          env={"PATH": str(bin_dir), "HOME": str(tmp_path)}, cwd=tmp_path)


def test_without_docker_it_stops_before_doing_anything(tmp_path):
    result = run_with_path(tmp_path, {"kubectl": "exit 0"})
    assert result.returncode == 2
    assert "needs docker kind helm on PATH" in result.stderr
    assert "cannot run on machines without Docker" in result.stderr
    assert "==>" not in result.stdout


def test_without_a_docker_engine_it_stops_before_doing_anything(tmp_path):
    marker = tmp_path / "touched"
    result = run_with_path(tmp_path, {
        "docker": f'[ "$1" = info ] && exit 1; echo "$@" >> {marker}',
        "kind": f"echo kind >> {marker}", "kubectl": f"echo kubectl >> {marker}", "helm": f"echo helm >> {marker}",
    })
    assert result.returncode == 2
    assert "engine is not reachable" in result.stderr
    assert not marker.exists(), "nothing may be built or created without an engine"
