"""Bad chart values are refused before anything is applied, with a message naming the key and why.

Helm checks values against values.schema.json on lint, template, install and upgrade; these tests
run that real check (helm_python) and the render that follows it. A refused render means a refused
install: Helm renders everything before it sends anything to the API server.
"""
from __future__ import annotations

import json
import pathlib

import helm_python as helm
import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "tickwire"

# (values, words the error must contain: where it is, and what is wrong)
BAD_VALUES = {
    "misspelt top-level key": ({"operater": {"verbose": True}}, ["additional properties 'operater'"]),
    "misspelt nested key": ({"agent": {"namespace": ["feeds"]}}, ["/agent", "'namespace'"]),
    "namespace not a DNS label": ({"agent": {"namespaces": ["Feeds_1"]}}, ["/agent/namespaces/0", "Feeds_1"]),
    "namespaces as a string": ({"agent": {"namespaces": "feeds"}}, ["/agent/namespaces", "want array"]),
    "namespace twice": ({"agent": {"namespaces": ["feeds", "feeds"]}}, ["/agent/namespaces", "equal"]),
    "privileged liveness port": ({"operator": {"livenessPort": 80}}, ["/operator/livenessPort", "80"]),
    "verbose as a string": ({"operator": {"verbose": "yes"}}, ["/operator/verbose", "want boolean"]),
    "tag with a colon": ({"operator": {"image": {"tag": "v1:2"}}}, ["/operator/image/tag", "v1:2"]),
    "short digest": ({"agent": {"image": {"digest": "sha256:abc"}}}, ["/agent/image/digest", "sha256:abc"]),
    "image without repository": ({"operator": {"image": {"repository": ""}}}, ["/operator/image/repository"]),
    "unknown pull policy": ({"operator": {"image": {"pullPolicy": "Sometimes"}}}, ["/operator/image/pullPolicy"]),
    "scrape interval without unit": ({"monitoring": {"serviceMonitor": {"interval": "15"}}},
                                     ["/monitoring/serviceMonitor/interval", "'15'"]),
    "enabled as a string": ({"monitoring": {"dashboard": {"enabled": "yes"}}},
                            ["/monitoring/dashboard/enabled", "want boolean"]),
    "resources with a typo": ({"operator": {"resources": {"limit": {"memory": "1Gi"}}}},
                              ["/operator/resources", "'limit'"]),
    "memory not a quantity": ({"operator": {"resources": {"limits": {"memory": "lots"}}}},
                              ["/operator/resources/limits/memory", "lots"]),
    "extra env without value": ({"operator": {"extraEnv": [{"name": "A"}]}}, ["/operator/extraEnv/0", "value"]),
}


@pytest.fixture(scope="module")
def chart():
    with helm.Chart.load(str(CHART)) as loaded:
        yield loaded


def test_default_values_pass_the_schema(chart):
    chart.validate_schema({})
    chart.validate_schema(yaml.safe_load((CHART / "values.yaml").read_text()))


@pytest.mark.parametrize("values,words", BAD_VALUES.values(), ids=list(BAD_VALUES))
def test_bad_values_are_refused_with_a_clear_message(chart, values, words):
    with pytest.raises(helm.HelmValuesError) as schema_error:
        chart.validate_schema(values)
    message = str(schema_error.value)
    assert all(word in message for word in words), message
    with pytest.raises(helm.HelmValuesError):
        chart.render(values, name="tw", namespace="tickwire-system", is_install=True)


@pytest.mark.parametrize("key", ["operator", "agent"])
def test_latest_tag_is_refused_with_a_reason(chart, key):
    with pytest.raises(helm.HelmRenderError) as error:
        chart.render({key: {"image": {"tag": "latest"}}}, name="tw", namespace="tickwire-system",
                     is_install=True)
    assert f'{key}.image.tag is "latest": pin a version' in str(error.value)


def test_schema_is_strict_everywhere_it_helps():
    """Every object in the schema with fixed properties refuses unknown keys (typos are errors)."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    open_objects = []

    def walk(node, path):
        if isinstance(node, dict):
            if "properties" in node and node.get("additionalProperties") is not False:
                open_objects.append(path)
            for key, sub in node.items():
                walk(sub, f"{path}/{key}")
        elif isinstance(node, list):
            for index, sub in enumerate(node):
                walk(sub, f"{path}/{index}")

    walk(schema, "")
    assert open_objects == []


def test_every_default_value_is_described_by_the_schema():
    """values.yaml and the schema cannot drift apart: each default key has a schema entry."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())

    def resolve(node):
        while "$ref" in node:
            node = schema["definitions"][node["$ref"].rsplit("/", 1)[1]]
        return node

    def walk(values, node, path):
        node = resolve(node)
        for key, value in values.items():
            properties = node.get("properties", {})
            assert key in properties or isinstance(node.get("additionalProperties"), dict), \
                f"{path}{key} is in values.yaml but not in values.schema.json"
            if isinstance(value, dict) and key in properties:
                walk(value, properties[key], f"{path}{key}.")

    walk(defaults, schema, "")
