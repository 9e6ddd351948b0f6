"""What `kubectl get` shows for a custom resource: its CRD's additionalPrinterColumns.

A real API server does the work (server-side printing): kubectl asks for a `meta.k8s.io/v1`
Table, the server evaluates each column's JSONPath on each object and sends the cells, and
kubectl only lays them out. Both halves live here so the emulator and the demo agree:

    to_table(objects, columns)     the API server's half (the emulator serves it)
    format_table(table)            kubectl's half, for machines without kubectl
    layout(rows)                   kubectl's column alignment, for describe-style blocks too

The JSONPath dialect is the subset printer columns use: `.a.b`, `['a']`, `[0]`, `[*]` and
filters `[?(@.type=="Ready")]` (==, !=, <, <=, >, >=, or bare existence). Anything else raises a
ValueError that names the expression, rather than printing an empty column.
"""
from __future__ import annotations

import datetime
import decimal
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

# The column every Table starts with, and the one a CRD without printer columns gets.
NAME_COLUMN = {"name": "Name", "type": "string", "format": "name", "priority": 0,
               "description": "Name must be unique within a namespace."}
DEFAULT_COLUMNS = [{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}]

_MISSING = object()


# ---- JSONPath (the printer-column subset) --------------------------------------------------------

_STEP = re.compile(r"""
    \.(?P<field>[A-Za-z0-9_$-]+)            # .name
  | \.\*|\[\*\](?P<all>)                    # .* or [*]
  | \[(?P<index>-?\d+)\]                    # [3]
  | \[(?P<quote>['"])(?P<key>.*?)(?P=quote)\]    # ['name']
  | \[\?\(@(?P<path>(?:\.[A-Za-z0-9_$-]+)+)\s*(?:(?P<op>==|!=|<=|>=|<|>)\s*(?P<literal>"[^"]*"|'[^']*'|[^)\s]+))?\s*\)\]
""", re.VERBOSE)


def compile_jsonpath(expression: str) -> list[tuple[str, Any]]:
    """Parse once; ValueError naming the expression and where it stops making sense."""
    text = expression.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1].strip()
    if not text.startswith((".", "[")):
        raise ValueError(f"jsonPath {expression!r} must start with '.' (e.g. .status.phase)")
    steps: list[tuple[str, Any]] = []
    pos = 0
    while pos < len(text):
        match = _STEP.match(text, pos)
        if match is None:
            raise ValueError(f"jsonPath {expression!r}: cannot read {text[pos:]!r} (supported: .field, "
                             f"['field'], [N], [*], [?(@.field==\"value\")])")
        if match["field"] is not None:
            steps.append(("field", match["field"]))
        elif match["index"] is not None:
            steps.append(("index", int(match["index"])))
        elif match["key"] is not None:
            steps.append(("field", match["key"]))
        elif match["path"] is not None:
            literal = _MISSING if match["literal"] is None else _parse_literal(match["literal"])
            steps.append(("filter", (match["path"].split(".")[1:], match["op"], literal)))
        else:
            steps.append(("all", None))
        pos = match.end()
    return steps


def _parse_literal(text: str) -> Any:
    if text[0] in "'\"":
        return text[1:-1]
    try:
        return json.loads(text)  # numbers, true, false, null
    except json.JSONDecodeError:
        raise ValueError(f"jsonPath filter value {text!r} is neither a quoted string nor a number") from None


def _lookup(node: Any, keys: Sequence[str]) -> Any:
    for key in keys:
        if not isinstance(node, Mapping) or key not in node:
            return _MISSING
        node = node[key]
    return node


def _compare(left: Any, op: str, right: Any) -> bool:
    if op == "==":
        return left == right
    if op == "!=":
        return left != right
    try:
        return {"<": left < right, "<=": left <= right, ">": left > right, ">=": left >= right}[op]
    except TypeError:
        return False


def evaluate(steps: list[tuple[str, Any]], obj: Any) -> list[Any]:
    """Every value the path reaches in `obj` (empty when it reaches nothing)."""
    nodes = [obj]
    for kind, arg in steps:
        found = []
        for node in nodes:
            if kind == "field" and isinstance(node, Mapping) and arg in node:
                found.append(node[arg])
            elif kind == "index" and isinstance(node, list) and -len(node) <= arg < len(node):
                found.append(node[arg])
            elif kind == "all" and isinstance(node, list):
                found.extend(node)
            elif kind == "all" and isinstance(node, Mapping):
                found.extend(node.values())
            elif kind == "filter" and isinstance(node, list):
                keys, op, literal = arg
                for item in node:
                    value = _lookup(item, keys)
                    if value is _MISSING:
                        continue
                    if op is None or _compare(value, op, literal):
                        found.append(item)
        nodes = found
    return nodes


# ---- the API server's half -----------------------------------------------------------------------

def human_duration(seconds: float) -> str:
    """Kubernetes' HumanDuration: 45s, 5m3s, 3h10m, 2d4h, 3y10d (what the AGE column shows)."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes, hours = s // 60, s // 3600
    if minutes < 10:
        return f"{minutes}m" if s % 60 == 0 else f"{minutes}m{s % 60}s"
    if minutes < 180:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h" if minutes % 60 == 0 else f"{hours}h{minutes % 60}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d" if hours % 24 == 0 else f"{hours // 24}d{hours % 24}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y" if days == 0 else f"{hours // 24 // 365}y{days}d"
    return f"{hours // 24 // 365}y"


def _cell(column_type: str, value: Any, now: datetime.datetime) -> Any:
    """One cell the way the API server types it: a value of the wrong type is no value (None)."""
    if value is None:
        return None
    if column_type == "string":
        return value if isinstance(value, str) else json.dumps(value) if isinstance(value, (dict, list)) \
            else _go_value(value)
    if column_type == "integer" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    if column_type == "number" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if column_type == "boolean" and isinstance(value, bool):
        return value
    if column_type == "date" and isinstance(value, str):
        try:
            when = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return "<invalid>"
        return human_duration((now - when).total_seconds())
    return None


def to_table(objects: Iterable[Mapping[str, Any]], printer_columns: Sequence[Mapping[str, Any]] | None,
             *, resource_version: str = "", include_object: str = "Metadata",
             now: datetime.datetime | None = None) -> dict:
    """A meta.k8s.io/v1 Table of `objects` with the CRD's printer columns (Name first)."""
    now = now or datetime.datetime.now(tz=datetime.timezone.utc)
    declared = list(printer_columns or DEFAULT_COLUMNS)
    paths = [compile_jsonpath(column["jsonPath"]) for column in declared]
    definitions = [dict(NAME_COLUMN)] + [
        {"name": c["name"], "type": c["type"], "format": c.get("format", ""),
         "description": c.get("description", ""), "priority": int(c.get("priority", 0))} for c in declared]
    rows = []
    for obj in objects:
        cells: list[Any] = [obj.get("metadata", {}).get("name")]
        for column, path in zip(declared, paths):
            found = evaluate(path, obj)
            cells.append(_cell(column["type"], found[0], now) if found else None)
        row: dict[str, Any] = {"cells": cells}
        if include_object == "Object":
            row["object"] = obj
        elif include_object != "None":
            row["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                             "metadata": obj.get("metadata", {})}
        rows.append(row)
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": resource_version},
            "columnDefinitions": definitions, "rows": rows}


# ---- kubectl's half ------------------------------------------------------------------------------

def _go_float(value: float) -> str:
    """Go's %v for a float64 (what kubectl prints): shortest digits, an exponent from 1e+06 up
    and below 1e-04 (Go's %g with the shortest precision)."""
    if value != value or value in (float("inf"), float("-inf")):
        return {"nan": "NaN", "inf": "+Inf", "-inf": "-Inf"}[repr(value)]
    if value == 0:
        return "0"
    sign, digits, exponent = decimal.Decimal(repr(value)).normalize().as_tuple()
    text = "".join(map(str, digits))
    point = len(text) + exponent          # where the decimal point falls in `text`
    exp10 = point - 1
    if exp10 < -4 or exp10 >= 6:
        mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
        out = f"{mantissa}e{'+' if exp10 >= 0 else '-'}{abs(exp10):02d}"
    elif point <= 0:
        out = "0." + "0" * -point + text
    elif point >= len(text):
        out = text + "0" * (point - len(text))
    else:
        out = text[:point] + "." + text[point:]
    return ("-" if sign else "") + out


def _go_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _go_float(value)
    return str(value)


def format_table(table: Mapping[str, Any], *, wide: bool = False) -> str:
    """The Table as `kubectl get` lays it out: upper-case headers, columns three spaces apart,
    empty cells left blank, priority>0 columns only with `wide` (-o wide)."""
    columns = [(i, c) for i, c in enumerate(table["columnDefinitions"]) if wide or not c.get("priority")]
    grid = [[c["name"].upper() for _, c in columns]]
    for row in table.get("rows") or []:
        grid.append(["" if row["cells"][i] is None else _go_value(row["cells"][i]) for i, _ in columns])
    return layout(grid)


def layout(grid: Sequence[Sequence[str]], indent: str = "") -> str:
    """Rows of cells aligned as kubectl's text/tabwriter does it: minimum width 6, padding 3,
    the last column unpadded."""
    count = max((len(line) for line in grid), default=0)
    widths = [max(6, max(len(line[k]) for line in grid if k < len(line)) + 3) for k in range(count)]
    return "\n".join(indent + "".join(cell.ljust(widths[k]) if k < len(line) - 1 else cell
                                      for k, cell in enumerate(line)) for line in grid)
