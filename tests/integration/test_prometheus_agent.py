"""Debian's real Prometheus scrapes the agent, and `histogram_quantile` over the agent's latency
histograms gives back the engine's own p99, within one histogram bucket.

Everything runs inside a fresh node namespace: the agent (with the real engine on a veth),
Prometheus on that namespace's private loopback, and the queries. Needs root and the
`prometheus` package (scripts/install-deps.sh installs it); fails instead of skipping when
TICKWIRE_REQUIRE_NETNS=1 (CI).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.support.agent_run import AgentProcess, metric_sum, plan_for, wait_for
from tests.support.engine_run import publish
from tests.support.netns import VethPair
from tickwire_agent.metrics import LATENCY_BOUNDS_S

pytestmark = [pytest.mark.netns, pytest.mark.slow]

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROM_ADDRESS = "127.0.0.1:9090"      # the namespace's own loopback: nothing else listens there

QUERY = r"""
import json, sys, urllib.parse, urllib.request
url = "http://%s/api/v1/query?" + urllib.parse.urlencode({"query": sys.argv[1]})
print(json.dumps(json.load(urllib.request.urlopen(url, timeout=5))))
""" % PROM_ADDRESS


def query(pair: VethPair, promql: str) -> list:
    out = pair.run(pair.node_ns, sys.executable, "-c", QUERY, promql, check=False)
    if out.returncode != 0:
        return []        # not up yet
    return json.loads(out.stdout)["data"]["result"]


def scalar(pair: VethPair, promql: str) -> float | None:
    result = query(pair, promql)
    return float(result[0]["value"][1]) if result else None


def test_prometheus_scrapes_the_agent_and_histogram_quantile_returns_the_engines_p99(tmp_path):
    if os.environ.get("TICKWIRE_REQUIRE_NETNS") != "1" and not os.path.exists(PROMETHEUS):
        pytest.skip("prometheus is not installed (scripts/install-deps.sh installs it)")
    with VethPair() as pair:
        agent = AgentProcess(pair, plan_for(pair), tmp_path).start()
        prometheus = None
        try:
            agent.wait_ready()
            config = tmp_path / "prometheus.yml"
            config.write_text(
                "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
                "scrape_configs:\n"
                "  - job_name: tickwire-agent\n"
                f"    static_configs: [{{targets: ['127.0.0.1:{agent.runtime()['metrics_port']}']}}]\n")
            prometheus = pair.popen(pair.node_ns, [
                PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address={PROM_ADDRESS}"],
                stdout=subprocess.DEVNULL, stderr=open(tmp_path / "prometheus.log", "w"))

            sent = publish(pair, tmp_path, ["--line", "A=239.7.1.1:26400", "--line", "B=239.7.1.2:26400",
                                            "--messages", "5000", "--per-packet", "5", "--rate", "20000"])
            wait_for(lambda: metric_sum(agent.metrics(), "tickwire_messages_total") == sent["messages_sent"],
                     "the agent to count the feed")
            count = "sum(tickwire_exchange_to_engine_latency_seconds_count)"
            wait_for(lambda: scalar(pair, count) == sent["messages_sent"],
                     "Prometheus to scrape the final counts", timeout=60, interval=0.5)

            p99 = scalar(pair, 'histogram_quantile(0.99, sum by (le) '
                               '(tickwire_exchange_to_engine_latency_seconds_bucket{feed="test-feed"}))')
            engine_p99_s = json.loads((agent.state_dir / "stats.json").read_text())[
                "latency"]["exchange_to_engine"]["p99"] / 1e9
            upper = next(b for b in LATENCY_BOUNDS_S if b >= engine_p99_s)
            lower = max([0.0] + [b for b in LATENCY_BOUNDS_S if b < upper])
            print(f"histogram_quantile p99 {p99 * 1e6:.1f} us, engine p99 {engine_p99_s * 1e6:.1f} us")
            assert p99 is not None and lower <= p99 <= upper, (p99, engine_p99_s)
            up = query(pair, 'up{job="tickwire-agent"}')
            assert up and up[0]["value"][1] == "1"
        finally:
            if prometheus is not None:
                prometheus.terminate()
                prometheus.wait(10)
            if agent.proc.poll() is None:
                assert agent.stop() == 0
            agent.kill_all()
