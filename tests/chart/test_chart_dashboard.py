"""The Grafana dashboard asks Prometheus for series the agent really exports, in valid PromQL.

- Metric names: the agent's own collector (agent/tickwire_agent/metrics.py) runs on a made-up
  engine snapshot and the sample names it yields are the truth; every series a panel queries must
  be among them, so a rename on either side fails here instead of showing empty panels.
- PromQL: every panel expression goes through Prometheus' own parser (`promtool check rules`,
  from the Debian prometheus package that `make setup` installs), with Grafana's variables
  replaced by the values Grafana would substitute.
"""
from __future__ import annotations

import json
import pathlib
import re
import shutil
import subprocess

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
DASHBOARD = json.loads((ROOT / "charts" / "tickwire" / "dashboards" / "tickwire.json").read_text())
EXPRESSIONS = [target["expr"] for panel in DASHBOARD["panels"] for target in panel["targets"]]
METRIC = re.compile(r"\b(tickwire_[a-z0-9_]+)\b")


def exported_sample_names() -> set[str]:
    from tickwire_agent.metrics import AgentView, EngineCollector

    view = AgentView("itch-test")
    view.engine_up = True
    view.books = True   # a FeedHandler with books on: their series exist
    view.stats = {
        "lines": {"A": {"packets": 10, "first_messages": 30}},
        "messages_by_type": {"A": 20, "E": 10},
        "gaps": 1, "missing": 3, "recovered": 1, "duplicates": 2,
        "malformed_by_reason": {"itch_bad_length": 1},
        "ring": {"rx_dropped": 0},
        "rate": {"messages_per_s": 1000.0, "packets_per_s": 300.0},
        "book_instruments": 3, "book_orders_live": 40, "book_incomplete": 0, "book_events_published": 90,
        "book_order_overflow": 0,
        "latency": {stage: {"lines": {"A": {"buckets": [[1000, 1031, 5]]}}}
                    for stage in ("kernel_to_engine", "exchange_to_engine")},
    }
    return {sample.name for family in EngineCollector(view).collect() for sample in family.samples}


def test_dashboard_has_the_panels_the_issue_asks_for():
    titles = " | ".join(panel["title"].lower() for panel in DASHBOARD["panels"])
    for wanted in ("rate", "gaps", "missing", "recovered", "exchange-to-engine latency", "kernel-to-engine latency"):
        assert wanted in titles, f"no panel for {wanted}: {titles}"
    for stage in ("exchange_to_engine", "kernel_to_engine"):
        quantiles = sorted(float(q) for e in EXPRESSIONS if stage in e
                           for q in re.findall(r"histogram_quantile\(([0-9.]+)", e))
        assert quantiles == [0.5, 0.99, 0.999], f"{stage}: p50, p99 and p99.9 expected, got {quantiles}"
    assert all('feed=~"$feed"' in e for e in EXPRESSIONS), "every panel follows the FeedHandler picker"
    assert len({panel["id"] for panel in DASHBOARD["panels"]}) == len(DASHBOARD["panels"])


def test_every_queried_series_is_exported_by_the_agent():
    exported = exported_sample_names()
    queried = {name for expr in EXPRESSIONS for name in METRIC.findall(expr)}
    variable_query = DASHBOARD["templating"]["list"][1]["definition"]
    queried |= set(METRIC.findall(variable_query))
    assert queried, "the dashboard queries no tickwire series"
    assert queried <= exported, f"queried but never exported: {sorted(queried - exported)}"


def test_every_expression_is_valid_promql(tmp_path):
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: `make setup` installs Debian's prometheus package, which has it"
    rules = {"groups": [{"name": "tickwire-dashboard", "rules": [
        {"record": f"tickwire:dashboard_expression_{index}:check",
         "expr": expr.replace("$__rate_interval", "1m").replace("$feed", ".*")}
        for index, expr in enumerate(EXPRESSIONS)]}]}
    rules_file = tmp_path / "dashboard-rules.yaml"
    rules_file.write_text(yaml.safe_dump(rules))
    result = subprocess.run([promtool, "check", "rules", str(rules_file)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(EXPRESSIONS)} rules found" in result.stdout


def test_promtool_would_catch_a_broken_expression(tmp_path):
    if not shutil.which("promtool"):
        pytest.fail("promtool missing: `make setup` installs Debian's prometheus package, which has it")
    rules_file = tmp_path / "broken.yaml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [
        {"record": "x:y:z", "expr": "sum by (feed (rate(tickwire_gaps_total[1m]))"}]}]}))
    result = subprocess.run(["promtool", "check", "rules", str(rules_file)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
