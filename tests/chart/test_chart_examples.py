"""The example FeedHandlers are valid against the CRD, and the bad ones are refused for their reason.

There is no API server here, so this test does what one would do with a FeedHandler, in order:
  1. structural schema: the CRD's openAPIV3Schema, turned from OpenAPI 3.0 into JSON Schema, checked
     with jsonschema; unknown fields are errors, as `kubectl apply` (field validation Strict) makes
     them;
  2. defaults: the schema's `default`s filled in, as the API server does before CEL runs;
  3. CEL: every `x-kubernetes-validations` rule of the CRD evaluated with cel-python (celpy), the
     rule text exactly as the CRD has it. celpy implements standard CEL; the rules here use
     nothing of Kubernetes' CEL extension libraries (a rule that did would fail to compile here,
     and this test would say so rather than skip it).

Every file in tests/chart/bad-examples/ says on an `# expect:` line which error it must produce, so
a bad example that fails for some other reason (a typo in the example itself) fails the test.
"""
from __future__ import annotations

import copy
import pathlib

import celpy
import jsonschema
import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "crds" / "feedhandler.yaml"
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
BAD_EXAMPLES = sorted((ROOT / "tests" / "chart" / "bad-examples").glob("*.yaml"))


def load_crd() -> dict:
    return yaml.safe_load(CRD_FILE.read_text())


def served_version(crd: dict, name: str) -> dict:
    for version in crd["spec"]["versions"]:
        if version["name"] == name:
            return version
    raise AssertionError(f"{CRD_FILE} has no version {name}")


def to_json_schema(node: dict) -> dict:
    """OpenAPI 3.0 structural schema (as Kubernetes reads it) -> JSON Schema draft 2020-12."""
    out = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-") or key == "nullable":
            continue
        if key == "properties":
            out[key] = {name: to_json_schema(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = to_json_schema(value)
        else:
            out[key] = value
    # OpenAPI 3.0 writes an exclusive bound as a boolean beside minimum/maximum.
    for flag, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if out.get(flag) is True:
            out[flag] = out.pop(bound)
        elif out.get(flag) is False:
            del out[flag]
    if node.get("nullable"):
        out["type"] = [out["type"], "null"]
    # The API server refuses unknown fields (kubectl's default field validation is Strict),
    # except where the schema says to keep them.
    if ("properties" in node and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


def apply_defaults(schema: dict, value):
    """Fill in `default`s the way the API server does before CEL rules run."""
    if isinstance(value, dict):
        for name, sub in schema.get("properties", {}).items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                apply_defaults(sub, value[name])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            apply_defaults(schema["items"], item)
    return value


def cel_rules(schema: dict, value, path: str = "self"):
    """Yield (path, rule, message, value) for every CEL rule that applies to `value`."""
    for rule in schema.get("x-kubernetes-validations", []):
        yield path, rule["rule"], rule.get("message", rule["rule"]), value
    if isinstance(value, dict):
        for name, sub in schema.get("properties", {}).items():
            if name in value:
                yield from cel_rules(sub, value[name], f"{path}.{name}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            yield from cel_rules(schema["items"], item, f"{path}[{index}]")


_cel = celpy.Environment()


def cel_holds(rule: str, value) -> bool:
    program = _cel.program(_cel.compile(rule))
    result = program.evaluate({"self": celpy.json_to_cel(value)})
    if not isinstance(result, celpy.celtypes.BoolType):
        raise AssertionError(f"CEL rule {rule!r} evaluated to {result!r}, not a bool")
    return bool(result)


def validate_feedhandler(obj: dict) -> list[str]:
    """Every reason the API server would refuse `obj`, as messages; [] when it would accept it."""
    crd = load_crd()
    group = crd["spec"]["group"]
    kind = crd["spec"]["names"]["kind"]
    api_group, _, version = obj.get("apiVersion", "").partition("/")
    if api_group != group or obj.get("kind") != kind:
        return [f"not a {kind} of {group}: apiVersion={obj.get('apiVersion')!r} kind={obj.get('kind')!r}"]
    schema = served_version(crd, version)["schema"]["openAPIV3Schema"]

    validator = jsonschema.Draft202012Validator(to_json_schema(schema))
    errors = [f"{error.json_path}: {error.message}" for error in validator.iter_errors(obj)]
    if errors:
        return errors  # the API server stops at the structural schema, before defaulting and CEL
    defaulted = apply_defaults(schema, copy.deepcopy(obj))
    return [f"{path}: {message}" for path, rule, message, value in cel_rules(schema, defaulted)
            if not cel_holds(rule, value)]


def expected_error(path: pathlib.Path) -> str:
    for line in path.read_text().splitlines():
        if line.startswith("# expect:"):
            return line.partition(":")[2].strip()
    raise AssertionError(f"{path.name} has no '# expect: <error>' line saying why it is invalid")


def test_there_are_examples_and_bad_examples():
    assert len(EXAMPLES) >= 3, "examples/ should hold the minimal, A/B and kind FeedHandlers"
    assert len(BAD_EXAMPLES) >= 10


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_is_a_valid_feedhandler(path):
    documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    assert documents, f"{path.name} is empty"
    for obj in documents:
        assert validate_feedhandler(obj) == [], path.name


@pytest.mark.parametrize("path", BAD_EXAMPLES, ids=[p.name for p in BAD_EXAMPLES])
def test_bad_example_is_refused_for_its_reason(path):
    obj = yaml.safe_load(path.read_text())
    errors = validate_feedhandler(obj)
    wanted = expected_error(path)
    assert errors, f"{path.name} was accepted, but should fail with: {wanted}"
    assert any(wanted in error for error in errors), f"{path.name}: wanted {wanted!r}, got {errors}"


def test_every_cel_rule_of_the_crd_is_exercised_by_a_bad_example():
    """Each CEL rule has a bad example that breaks it, so no rule is dead or untested."""
    crd = load_crd()
    schema = served_version(crd, "v1alpha1")["schema"]["openAPIV3Schema"]

    def messages(node):
        for rule in node.get("x-kubernetes-validations", []):
            yield rule.get("message", rule["rule"])
        for sub in node.get("properties", {}).values():
            yield from messages(sub)
        if isinstance(node.get("items"), dict):
            yield from messages(node["items"])

    expectations = [expected_error(path) for path in BAD_EXAMPLES]
    untested = [m for m in messages(schema) if not any(e in m for e in expectations)]
    assert untested == [], f"CEL rules without a bad example in tests/chart/bad-examples/: {untested}"


def test_schema_conversion_keeps_exclusive_bounds_and_strictness():
    """The OpenAPI->JSON Schema step itself: a wrong conversion would make every check above lie."""
    converted = to_json_schema({
        "type": "object",
        "properties": {
            "p": {"type": "number", "minimum": 0, "exclusiveMinimum": True},
            "open": {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                     "properties": {"a": {"type": "string"}}},
            "maybe": {"type": "object", "nullable": True, "properties": {}},
        },
    })
    validator = jsonschema.Draft202012Validator(converted)
    assert not validator.is_valid({"p": 0})
    assert validator.is_valid({"p": 0.001})
    assert not validator.is_valid({"q": 1})
    assert validator.is_valid({"open": {"anything": 1}})
    assert validator.is_valid({"maybe": None})
