"""The user-facing docs cannot drift from what they describe.

- the README's FeedHandler reference documents every field of the CRD (crds/feedhandler.yaml), with its default.
- docs/privileges.md lists exactly the capabilities the operator's Pod builder adds to the agent
  (operator/tickwire_operator/pod.py), and exactly the RBAC verbs the chart renders for the
  operator and the agent.
"""
from __future__ import annotations

import json
import pathlib
import re

import helm_python as helm
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
# The reference lives in the README, between its "FeedHandler reference" and "Benchmarks" headings.
REFERENCE = (ROOT / "README.md").read_text().split("## FeedHandler reference", 1)[1].split("\n## ", 1)[0]
PRIVILEGES = (ROOT / "docs" / "privileges.md").read_text()
CRD = yaml.safe_load((ROOT / "crds" / "feedhandler.yaml").read_text())
SCHEMA = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def crd_fields(node: dict, path: str):
    """(path, schema) for every property, lists written as `name[]`."""
    for name, sub in node.get("properties", {}).items():
        here = f"{path}.{name}"
        yield here, sub
        yield from crd_fields(sub, here)
        if isinstance(sub.get("items"), dict):
            yield from crd_fields(sub["items"], here + "[]")


def reference_rows() -> dict[str, list[str]]:
    rows = {}
    for line in REFERENCE.splitlines():
        match = re.match(r"\| `((?:spec|status)\.[^`]+)` \|(.*)\|\s*$", line)
        if match:
            rows[match.group(1)] = [cell.strip() for cell in match.group(2).split("|")]
    return rows


def test_reference_documents_every_crd_field():
    documented = reference_rows()
    fields = [path for top in ("spec", "status") for path, _ in crd_fields(SCHEMA["properties"][top], top)]
    missing = [f for f in fields if f not in documented]
    stale = [f for f in documented if f not in fields]
    assert missing == [], f"CRD fields missing from the README reference: {missing}"
    assert stale == [], f"the README reference documents fields the CRD does not have: {stale}"


def test_reference_states_each_default_as_the_crd_has_it():
    documented = reference_rows()
    for path, sub in crd_fields(SCHEMA["properties"]["spec"], "spec"):
        if "default" in sub:
            default_cell = documented[path][1]
            wanted = json.dumps(sub["default"]) if not isinstance(sub["default"], str) else sub["default"]
            assert default_cell == f"`{wanted}`", f"{path}: docs say {default_cell}, the CRD says {wanted}"


def test_reference_lists_every_condition_type():
    types = SCHEMA["properties"]["status"]["properties"]["conditions"]["items"]["properties"]["type"]["enum"]
    for condition_type in types:
        assert re.search(rf"^\| `{condition_type}` \|", REFERENCE, re.M), f"condition {condition_type} not described"


def test_privileges_lists_exactly_the_agent_capabilities():
    from tickwire_operator.pod import CAPABILITIES

    documented = set(re.findall(r"^\| `CAP_([A-Z_]+)` \|", PRIVILEGES, re.M))
    assert documented == set(CAPABILITIES), \
        f"docs/privileges.md lists {sorted(documented)}, the agent Pod gets {sorted(CAPABILITIES)}"


def documented_rbac(section: str) -> set[tuple[str, str]]:
    text = PRIVILEGES.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    granted = set()
    for resource, verbs in re.findall(r"^\| `([a-z/.]+)` \| ([a-z, ]+) \|", text, re.M):
        resource = resource.split(".")[0] if "/" not in resource else resource
        granted |= {(resource, verb.strip()) for verb in verbs.split(",")}
    return granted


def rendered_rbac(suffix: str) -> set[tuple[str, str]]:
    with helm.Chart.load(str(ROOT / "charts" / "tickwire")) as chart:
        rendered = chart.render({}, name="tw", namespace="tickwire-system", is_install=True)
    for template, text in rendered.items():
        if template.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc and doc.get("kind") == "ClusterRole" and doc["metadata"]["name"].endswith(suffix):
                return {(resource, verb) for rule in doc["rules"]
                        for resource in rule["resources"] for verb in rule["verbs"]}
    raise AssertionError(f"no ClusterRole *{suffix} rendered")


def test_privileges_shows_the_rbac_the_chart_and_the_operator_grant():
    from tickwire_operator.identity import agent_rules

    assert documented_rbac("The operator\n") == rendered_rbac("-operator")
    assert documented_rbac("The operator in agent namespaces") == rendered_rbac("-operator-agents")
    assert documented_rbac("The agent") == {(resource, verb) for rule in agent_rules("any")
                                            for resource in rule["resources"] for verb in rule["verbs"]}
