"""`tickwire-agent plan --example`: a plan that validates, and a field reference made from the schema.

The example goes to stdout as plain JSON (so `> plan.json` gives a usable file); the reference,
one line per field with its meaning and default, is generated from plan.schema.json so it can
never disagree with what the agent actually accepts.
"""
from __future__ import annotations

import json

from . import plan as plan_module

EXAMPLE = {
    "apiVersion": plan_module.API_VERSION,
    "feedHandler": None,
    "feed": {"name": "nasdaq-totalview", "protocol": "moldudp64-itch50"},
    "interface": "eth0",
    "queue": 0,
    "lines": [
        {"name": "A", "group": "239.1.1.1", "port": 26400, "source": None},
        {"name": "B", "group": "239.1.1.2", "port": 26400, "source": None},
    ],
    "cores": [1],
    "hugepages": {"count": 8, "numaNode": None},
    "xdpMode": "auto",
    "zeroCopy": "auto",
    "busyPoll": {"enabled": True, "usec": 50, "budget": 64, "napiDeferHardIrqs": 2,
                 "groFlushTimeoutNs": 200000},
    "irqAffinity": [],
    "latencySLO": {"p99Micros": 50},
    "staleAfterSeconds": 5,
    "exchangeTimezone": "America/New_York",
    "metrics": {"address": "0.0.0.0", "port": 9470},
    "restoreDrift": True,
    "statusIntervalSeconds": 5,
    "books": {"enabled": True, "depth": 10, "symbols": [], "maxOrders": 1048576, "maxInstruments": 16384},
    "streamRoot": "/run/tickwire/streams",
}


def example_json() -> str:
    return json.dumps(EXAMPLE, indent=2) + "\n"


def field_reference() -> str:
    """Every field of the schema: `path  [required]  description (default: x)`."""
    rows: list[tuple[str, str]] = []
    _walk(plan_module.schema(), "", rows)
    width = max(len(path) for path, _ in rows)
    header = (f"# Fields of a {plan_module.API_VERSION} plan "
              "(validate one with `tickwire-agent plan --check FILE`):")
    return "\n".join([header] + [f"#   {path:<{width}}  {text}" for path, text in rows]) + "\n"


def _walk(node: dict, prefix: str, rows: list) -> None:
    for variant in node.get("oneOf", []):
        if variant.get("type") == "object":
            node = {**variant, "description": node.get("description", "")}
    if node.get("type") == "array" and isinstance(node.get("items"), dict) and "properties" in node["items"]:
        node = node["items"]
        prefix += "[]"
    for name, prop in node.get("properties", {}).items():
        path = f"{prefix}.{name}" if prefix else name
        text = prop.get("description", "")
        if "enum" in prop:
            text = f"one of {', '.join(map(str, prop['enum']))}. {text}".strip()
        if "default" in prop:
            text += f" (default: {json.dumps(prop['default'])})"
        if name in node.get("required", []):
            text = "[required] " + text
        rows.append((path, text.strip()))
        if "properties" in prop or "oneOf" in prop or "items" in prop:
            _walk(prop, path, rows)
