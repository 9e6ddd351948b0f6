"""An engine restart under a running agent is a counter reset, not a crash (issue 11, defect 6):
the real agent runs the real engine on a veth pair between namespaces; the engine is SIGKILLed
between two published feeds. The agent keeps running, its latency window starts over from the new
engine's first snapshot, and every Prometheus counter it exports keeps rising: the second feed's
counts are added to the first's.

Needs root: fails instead of skipping when TICKWIRE_REQUIRE_NETNS=1 (CI).
"""
from __future__ import annotations

import os
import signal

import pytest

from tests.support.agent_run import AgentProcess, metric, metric_sum, plan_for, wait_for
from tests.support.engine_run import publish
from tests.support.netns import VethPair

pytestmark = pytest.mark.netns

FEED = ["--line", "A=239.7.1.1:26400", "--line", "B=239.7.1.2:26400", "--per-packet", "4", "--rate", "20000"]
HIST = "tickwire_exchange_to_engine_latency_seconds"


@pytest.fixture
def agent(tmp_path):
    with VethPair(queues=2) as pair:
        agent = AgentProcess(pair, plan_for(pair), tmp_path).start()
        try:
            yield agent
        finally:
            agent.kill_all()


def counters(samples: dict) -> dict:
    """Every counter-like sample (totals, histogram counts, sums and buckets) of a scrape."""
    return {key: v for key, v in samples.items()
            if key[0].endswith(("_total", "_count", "_sum", "_bucket")) and "restarts" not in key[0]}


def test_prometheus_counters_keep_rising_across_an_engine_restart(agent, tmp_path):
    pair = agent.pair
    agent.wait_ready()
    first = publish(pair, tmp_path, [*FEED, "--messages", "3000", "--seed", "7"])
    # Every packet of both lines, not only every message: B's copy of the last packet may be
    # counted after A's, and what a SIGKILLed engine counted since its last snapshot is gone.
    def first_feed_counted(s):
        return (metric_sum(s, "tickwire_messages_total") == 3000 and metric_sum(s, HIST + "_count") == 3000
                and all(metric(s, "tickwire_packets_total", line=line) == first["packets_sent"][line]
                        for line in "AB"))
    before = wait_for(lambda: (lambda s: s if first_feed_counted(s) else None)(agent.metrics()),
                      "the first feed to be counted")
    old_engine = agent.engine_pid()
    os.kill(old_engine, signal.SIGKILL)
    wait_for(lambda: agent.engine_pid() not in (None, old_engine), "a new engine")
    wait_for(lambda: agent.output.count("EngineReady=True") == 2, "the new engine to be ready")
    second = publish(pair, tmp_path, [*FEED, "--messages", "1000", "--seed", "8"])
    after = wait_for(lambda: (lambda s: s if metric_sum(s, "tickwire_messages_total") == 4000 and
                              metric_sum(s, HIST + "_count") == 4000 else None)(agent.metrics()),
                     "the second feed to be added to the first")
    assert (first["messages_sent"], second["messages_sent"]) == (3000, 1000)
    assert agent.proc.poll() is None and "Traceback" not in agent.output
    assert metric(after, "tickwire_engine_restarts_total") == 1
    for letter in set(first["messages_by_type"]) | set(second["messages_by_type"]):
        assert metric(after, "tickwire_messages_total", type=letter) == \
            first["messages_by_type"].get(letter, 0) + second["messages_by_type"].get(letter, 0)
    for line in "AB":
        assert metric(after, "tickwire_packets_total", line=line) == \
            first["packets_sent"][line] + second["packets_sent"][line]
    went_down = {key: (v, after.get(key)) for key, v in counters(before).items() if after.get(key, 0) < v}
    assert went_down == {}
    assert agent.stop() == 0
