"""The FeedHandler spec: validated with the CRD's own schema, defaults applied, CEL rules mirrored.

A real API server validates FeedHandlers before the operator sees them, but the operator does not
rely on it: the CRD may be an older version, the emulator in the tests validates nothing, and a
bad spec must end as a clear `Placed=False, reason=InvalidSpec` condition with nothing created.
The schema is read from feedhandler.crd.yaml (a link to crds/feedhandler.yaml, so there is one
source of truth); CEL cannot run in Python without another dependency, so each `x-kubernetes-
validations` rule has a Python twin below, matched to it by its message (a unit test keeps the
two sets equal).
"""
from __future__ import annotations

import copy
import functools
import pathlib
from collections.abc import Callable, Mapping
from typing import Any

import jsonschema
import yaml

CRD_PATH = pathlib.Path(__file__).with_name("feedhandler.crd.yaml")
GROUP = "tickwire.dev"
VERSION = "v1alpha1"
PLURAL = "feedhandlers"
KIND = "FeedHandler"
MAX_NAME = 57  # the agent Pod is named "<name>-agent" and must fit 63


class InvalidSpec(ValueError):
    """A FeedHandler spec the operator will not act on; `problems` names each one."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


@functools.cache
def crd() -> dict:
    return yaml.safe_load(CRD_PATH.read_text())


@functools.cache
def _version_schema() -> dict:
    for version in crd()["spec"]["versions"]:
        if version["name"] == VERSION:
            return version["schema"]["openAPIV3Schema"]
    raise LookupError(f"{CRD_PATH} has no version {VERSION}")


def openapi_to_jsonschema(node: Any) -> Any:
    """Translate a structural OpenAPI v3.0 schema into a JSON Schema jsonschema can check.

    Differences handled: `nullable`, boolean `exclusiveMinimum/Maximum`, and unknown fields,
    which the API server prunes but the operator rejects (a typo must not pass silently).
    """
    if isinstance(node, list):
        return [openapi_to_jsonschema(item) for item in node]
    if not isinstance(node, Mapping):
        return node
    out = {key: openapi_to_jsonschema(value) for key, value in node.items()
           if not key.startswith("x-kubernetes-") and key not in ("nullable", "default")}
    for bound in ("Minimum", "Maximum"):
        if node.get("exclusive" + bound) is True:
            out["exclusive" + bound] = node[bound.lower()]
            out.pop(bound.lower(), None)
        elif node.get("exclusive" + bound) is False:
            out.pop("exclusive" + bound)
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if (node.get("type") == "object" and "properties" in node and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


@functools.cache
def _spec_validator() -> jsonschema.Draft202012Validator:
    schema = openapi_to_jsonschema(_version_schema()["properties"]["spec"])
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def apply_defaults(value: Any, schema: Mapping[str, Any]) -> Any:
    """Fill in schema defaults the way the API server does: only inside objects that exist."""
    if not isinstance(value, dict):
        return value
    for name, sub in (schema.get("properties") or {}).items():
        if name not in value and "default" in sub:
            value[name] = copy.deepcopy(sub["default"])
        if name in value:
            if sub.get("type") == "array" and isinstance(value[name], list):
                value[name] = [apply_defaults(item, sub.get("items") or {}) for item in value[name]]
            else:
                value[name] = apply_defaults(value[name], sub)
    return value


# ---- the CEL rules' twins: message (as in the CRD) -> predicate that holds for a valid spec ----

def _lines(spec: Mapping[str, Any]) -> list:
    return spec.get("lines") or []


SPEC_RULES: dict[str, Callable[[Mapping[str, Any]], bool]] = {
    "set spec.nodeName or spec.nodeSelector, not both":
        lambda s: not ("nodeName" in s and "nodeSelector" in s),
    "spec.queue needs spec.interface: a queue number means nothing without its NIC":
        lambda s: "queue" not in s or "interface" in s,
    "spec.lines: line names must differ (one A, one B)":
        lambda s: len(_lines(s)) < 2 or _lines(s)[0].get("name") != _lines(s)[1].get("name"),
    "spec.lines: lines A and B must differ in group or port":
        lambda s: len(_lines(s)) < 2 or (_lines(s)[0].get("group"), _lines(s)[0].get("port"))
        != (_lines(s)[1].get("group"), _lines(s)[1].get("port")),
    "spec.zeroCopy=required needs native XDP: generic (SKB) mode always copies":
        lambda s: not (s.get("zeroCopy") == "required" and s.get("xdpMode") == "generic"),
    "spec.hugepages must be 0 or at least 8: the engine's UMEM (8192 frames of 2 KiB) fills 8 pages of 2 MiB":
        lambda s: s.get("hugepages", 0) == 0 or s.get("hugepages", 0) >= 8,
    "spec.books.symbols lists more symbols than spec.books.maxInstruments can hold":
        lambda s: "books" not in s or len(s["books"].get("symbols") or []) <= s["books"]["maxInstruments"],
}

ROOT_RULES: dict[str, Callable[[Mapping[str, Any]], bool]] = {
    f"metadata.name must be at most {MAX_NAME} characters (the agent Pod is named <name>-agent)":
        lambda body: len(body.get("metadata", {}).get("name", "")) <= MAX_NAME,
}


def _path(error: jsonschema.ValidationError) -> str:
    where = "spec"
    for part in error.absolute_path:
        where += f"[{part}]" if isinstance(part, int) else f".{part}"
    return where


def validated_spec(body: Mapping[str, Any]) -> dict:
    """The FeedHandler's spec with defaults applied, or InvalidSpec listing every problem."""
    spec = body.get("spec")
    if not isinstance(spec, Mapping):
        raise InvalidSpec(["spec is missing: a FeedHandler needs at least spec.lines"])
    spec = apply_defaults(copy.deepcopy(dict(spec)), _version_schema()["properties"]["spec"])
    problems = [f"{_path(e)}: {e.message}"
                for e in sorted(_spec_validator().iter_errors(spec), key=lambda e: list(e.absolute_path))]
    if not problems:  # the rules assume the structure is right
        problems += [message for message, holds in SPEC_RULES.items() if not holds(spec)]
    problems += [message for message, holds in ROOT_RULES.items() if not holds(body)]
    if problems:
        raise InvalidSpec(problems)
    return spec


def crd_rule_messages() -> set[str]:
    """Every x-kubernetes-validations message in the CRD (for the drift test)."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            for rule in node.get("x-kubernetes-validations", []):
                found.add(rule["message"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(_version_schema())
    return found
