"""`make demo-operator` (python -m tickwire_demo.operator_demo), run for real and read like a user.

The demo creates its namespaces and veth, serves the emulator, runs the operator, runs the agent
Pod under podman as the node's kubelet and publishes the feed; these tests read what it prints
(the `kubectl get feedhandlers` table by its column positions, the describe-style conditions) and
check that it left nothing behind: its namespaces, its processes, its podman Pod, its mount of the
node's sysfs and the agent's state directory are gone.

The runs need root, network namespaces, podman and the images (`make images`): they fail instead
of skipping when TICKWIRE_REQUIRE_NETNS=1 (CI). The first tests need none of it (the manifest the
demo applies).
"""
from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from tests.e2e.test_operator_podman import require_podman
from tests.support.netns import require_netns
from tickwire_demo.localnet import VethPair as PlainVethPair
from tickwire_demo.operator_demo import EXAMPLE, DemoFailed, adapt_to_veth, load_feedhandler
from tickwire_operator.spec import validated_spec

RUN_TIMEOUT_S = 180  # bounds each demo run; a Ready run takes ~15 s here


# ---- the manifest it applies (no root needed) --------------------------------------------------

def test_the_example_is_adapted_to_the_veth_and_every_change_is_said():
    example = load_feedhandler(EXAMPLE)
    pair = PlainVethPair(tag="4242")  # names and addresses only: nothing is created
    fh, changes = adapt_to_veth(example, pair)

    spec = fh["spec"]
    assert (spec["interface"], spec["queue"], spec["cores"], spec["hugepages"]) == (pair.node_if, 0, 1, 0)
    assert (spec["xdpMode"], spec["zeroCopy"]) == ("generic", "auto")
    assert {line["source"] for line in spec["lines"]} == {pair.exchange_ip}
    # What the example says about the feed itself is kept.
    assert [(l["name"], l["group"], l["port"]) for l in spec["lines"]] == \
        [(l["name"], l["group"], l["port"]) for l in example["spec"]["lines"]]
    assert spec["nodeSelector"] == example["spec"]["nodeSelector"]
    assert spec["exchangeTimezone"] == example["spec"]["exchangeTimezone"]
    # Every field that changed is listed, with its old value.
    changed = {line.split(":")[0] for line in changes}
    assert changed == {"spec.interface", "spec.queue", "spec.cores", "spec.hugepages", "spec.xdpMode",
                       "spec.zeroCopy", "spec.statusIntervalSeconds", "spec.latencySLO.p99Micros",
                       "spec.lines[A].source", "spec.lines[B].source", "spec.rerequest.server"}
    assert spec["rerequest"]["server"] == f"{pair.exchange_ip}:26400"   # the exchange namespace's
    assert "spec.interface: ens1f0 -> " + pair.node_if in "\n".join(changes)
    # The example itself is untouched, and the result passes the operator's own validation.
    assert load_feedhandler(EXAMPLE) == example
    validated_spec(fh)


@pytest.mark.parametrize("content, message", [
    ("kind: Pod\nmetadata: {name: x}\n", "is not a FeedHandler manifest"),
    ("kind: FeedHandler\nmetadata: {name: x}\nspec: {}\n", "needs metadata.name and spec.lines"),
    ("kind: [FeedHandler\n", "is not YAML"),
])
def test_a_bad_manifest_is_refused_before_anything_is_created(tmp_path, content, message):
    path = tmp_path / "fh.yaml"
    path.write_text(content)
    with pytest.raises(DemoFailed, match=re.escape(message)):
        load_feedhandler(path)
    done = subprocess.run([sys.executable, "-m", "tickwire_demo.operator_demo", "--feedhandler", str(path),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert message in done.stderr and str(path) in done.stderr
    assert "exchange tw-ex-" not in done.stdout  # no namespace was made


# ---- whole runs (root, namespaces) --------------------------------------------------------------

def run_demo(tmp_path: pathlib.Path, *extra: str) -> subprocess.CompletedProcess:
    require_netns()
    require_podman()
    return subprocess.run([sys.executable, "-m", "tickwire_demo.operator_demo", "--out", str(tmp_path / "out"),
                           *extra], capture_output=True, text=True, timeout=RUN_TIMEOUT_S)


def get_tables(stdout: str) -> list[list[dict[str, str]]]:
    """Every `kubectl get` table printed, as rows of {COLUMN: cell}; cells are cut at the
    header's column starts (an empty cell is blank, so splitting on spaces would misalign)."""
    tables, lines = [], stdout.splitlines()
    for i, line in enumerate(lines):
        if not line.startswith("NAME "):
            continue
        starts = [m.start() for m in re.finditer(r"\S+", line)]
        names = line.split()
        rows = []
        for row in lines[i + 1:]:
            if not row.strip() or row.startswith("["):
                break
            bounds = starts[1:] + [None]
            rows.append({n: row[s:e].strip() for n, s, e in zip(names, starts, bounds)})
        tables.append(rows)
    return tables


def conditions(stdout: str) -> dict[str, tuple[str, str]]:
    """The describe-style Conditions block: {type: (status, reason)}."""
    block = stdout.split("Conditions:\n", 1)[1].splitlines()
    found = {}
    for line in block[2:]:  # after the header and its dashes
        if not line.startswith("  "):
            break
        cells = line.split()
        found[cells[0]] = (cells[1], cells[2])
    return found


def assert_nothing_left(stdout: str, out: pathlib.Path, started=("operator", "agent", "feed")) -> None:
    namespaces = re.search(r"^exchange (tw-ex-\d+) .* node (tw-nd-\d+) ", stdout, re.M)
    assert namespaces, stdout[:2000]
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert namespaces[1] not in listed and namespaces[2] not in listed
    pids = {name: int(pid) for name, pid in re.findall(r"^started (\w+) \(pid (\d+)\)", stdout, re.M)}
    agent = re.search(r"^started agent Pod (\S+) \(podman container \S+, pid (\d+)\)", stdout, re.M)
    if agent:
        pids["agent"] = int(agent[2])
        assert subprocess.run(["podman", "pod", "exists", agent[1]]).returncode == 1, f"Pod {agent[1]} left"
    assert set(started) == set(pids), stdout[:3000]
    mounts = pathlib.Path("/proc/self/mountinfo").read_text()
    assert f" {out / 'node-sys'} " not in mounts, "the node's sysfs is still mounted"
    assert not (out / "node-state").exists(), "the agent's state directory was left"
    for name, pid in pids.items():
        alive = pathlib.Path(f"/proc/{pid}/cmdline")
        # A reused pid would run something else; the demo's children name these in their argv.
        assert not alive.exists() or not re.search(rb"tickwire|ip\x00netns", alive.read_bytes()), \
            f"the demo's {name} (pid {pid}) still runs"


@pytest.mark.netns
@pytest.mark.slow
@pytest.mark.parametrize("printer", ["kubectl", "own-layout"])
def test_the_demo_reaches_ready_and_cleans_up(tmp_path, printer):
    if printer == "kubectl" and shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed: the own-layout run covers machines without it")
    done = run_demo(tmp_path, "--duration", "4", "--timeout", "60",
                    *(["--no-kubectl"] if printer == "own-layout" else []))
    assert done.returncode == 0, f"stdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-4000:]}"
    out = done.stdout
    assert ("kubectl not used" in out) == (printer == "own-layout")

    tables = get_tables(out)
    assert len(tables) >= 2, out
    assert list(tables[-1][0]) == ["NAME", "NODE", "QUEUE", "CORES", "XDP", "RATE", "P99US", "READY", "AGE"]
    first, last = tables[0][0], tables[-1][0]
    assert first["NAME"] == "nasdaq-totalview" and first["READY"] in ("", "False")  # before the agent ran
    assert last["NAME"] == "nasdaq-totalview"
    assert last["READY"] == "True"
    assert (last["NODE"], last["QUEUE"], last["XDP"]) == ("tickwire-demo", "0", "generic")
    assert last["CORES"] == str(max(os.sched_getaffinity(0)))
    # Numbers once Ready (one snapshot may show a rate of 0 when a whole interval passed without
    # the publisher getting the CPU on a busy 2-core machine, so any Ready row with numbers counts).
    ready_rows = [t[0] for t in tables if t[0]["READY"] == "True"]
    assert any(float(r["RATE"] or 0) > 0 and float(r["P99US"] or 0) > 0 for r in ready_rows), ready_rows

    conds = conditions(out)
    assert conds["Ready"] == ("True", "FeedHealthy")
    for type_ in ("Placed", "Tuned", "EngineReady", "Receiving", "GapFree", "LatencySLOMet"):
        assert conds[type_][0] == "True", conds
    # What the operator put in the Pod is what ran: the agent's log names the applied feed.
    applied = yaml.safe_load((tmp_path / "out" / "feedhandler.yaml").read_text())
    assert f"FeedHandler feeds/{applied['metadata']['name']}" in (tmp_path / "out" / "agent.log").read_text()
    assert_nothing_left(out, tmp_path / "out")


@pytest.mark.netns
@pytest.mark.slow
def test_a_feedhandler_that_never_gets_ready_fails_with_the_reason(tmp_path):
    """Lines A and B on the same group and port break a CRD rule the operator enforces: Placed
    stays False (InvalidSpec) for good, so Ready cannot come; the demo must say so and exit 1."""
    manifest = yaml.safe_load(EXAMPLE.read_text())
    manifest["spec"]["lines"][1]["group"] = manifest["spec"]["lines"][0]["group"]
    path = tmp_path / "same-group.yaml"
    path.write_text(yaml.safe_dump(manifest))
    done = run_demo(tmp_path, "--feedhandler", str(path), "--timeout", "6")
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    assert "was not Ready after 6 s: Ready=False reason InvalidSpec" in done.stderr
    assert "lines A and B must differ in group or port" in done.stderr + done.stdout
    assert conditions(done.stdout)["Placed"] == ("False", "InvalidSpec")
    # No agent ran for it (the operator made no Pod), and nothing is left.
    assert_nothing_left(done.stdout, tmp_path / "out", started=("operator",))
