"""Counter resets across engine restarts (issue 11, defect 6): recognised, and Prometheus counters
exported by the agent keep rising through them."""
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tickwire_agent.counter_reset import RunTracker, RunningTotals, cumulative
from tickwire_agent.metrics import AgentView, EngineCollector


def run(pid, packets, gaps, buckets, sum_ns, ring_full=0):
    return {"engine": {"pid": pid, "started_at": 1000.0 + pid}, "packets": packets, "messages": packets,
            "gaps": gaps, "messages_by_type": {"A": packets}, "lines": {"A": {"packets": packets, "first_messages": packets}},
            "ring": {"rx_ring_full": ring_full, "fill_ring_stock": 8192},
            "latency": {"exchange_to_engine": {"lines": {"A": {"count": sum(b[2] for b in buckets), "sum": sum_ns,
                                                              "buckets": buckets}}}}}


def scrape(view) -> dict:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EngineCollector(view))
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(generate_latest(registry).decode())
            for s in family.samples}


def value(samples, name, **labels):
    return samples[(name, tuple(sorted({"feed": "f", **labels}.items())))]


def test_a_restart_is_a_new_identity_or_any_count_going_down():
    runs = RunTracker()
    assert not runs.observe(run(1, 100, 2, [[1000, 1031, 100]], 10**5))        # the first: no
    assert not runs.observe(run(1, 150, 2, [[1000, 1031, 150]], 10**5))
    assert not runs.observe(None)                                               # restarting
    assert runs.observe(run(2, 900, 9, [[1000, 1031, 900]], 10**6))            # new pid: yes
    anonymous = run(2, 950, 9, [[1000, 1031, 950]], 10**6)
    del anonymous["engine"]
    assert not runs.observe(anonymous)                                          # no identity: counts rose
    lower = run(2, 960, 9, [[1000, 1031, 950]], 10**6)
    lower["ring"]["rx_ring_full"] = 0
    del lower["engine"]
    lower["lines"]["A"]["first_messages"] = 3                                   # one count went down
    assert runs.observe(lower)


def test_gauges_are_not_counts():
    flat = cumulative(run(1, 5, 0, [], 0))
    assert ("ring", "fill_ring_stock") not in flat and ("ring", "rx_ring_full") in flat


def test_prometheus_counters_keep_rising_across_an_engine_restart():
    view = AgentView("f")
    view.stats = run(1, 100, 2, [[1000, 1031, 100]], 100_000, ring_full=7)
    first = scrape(view)
    view.stats = None                                        # the agent removed the old stats file
    view.stats = run(2, 30, 1, [[2000, 2047, 30]], 60_000)   # the new engine's first snapshot
    second = scrape(view)
    assert value(first, "tickwire_packets_total", line="A") == 100
    assert value(second, "tickwire_packets_total", line="A") == 130
    assert value(second, "tickwire_messages_total", type="A") == 130
    assert value(second, "tickwire_gaps_total") == 3
    assert value(second, "tickwire_afxdp_rx_drops_total", reason="ring_full") == 7
    hist = "tickwire_exchange_to_engine_latency_seconds"
    assert value(second, hist + "_count", line="A") == 130
    assert abs(value(second, hist + "_sum", line="A") - 160_000 / 1e9) < 1e-12
    assert value(second, hist + "_bucket", line="A", le="1.25e-06") == 100
    # Every counter sample is at least what it was.
    for key, before in first.items():
        if key[0].endswith(("_total", "_count", "_sum", "_bucket")):
            assert second[key] >= before, key
    # The view keeps the engine's own non-counter figures as they are.
    assert view.stats["engine"]["pid"] == 2 and view.stats["ring"]["fill_ring_stock"] == 8192


def test_running_totals_carry_each_finished_run():
    totals = RunningTotals()
    totals.observe(run(1, 10, 0, [], 0))
    totals.observe(run(2, 20, 0, [], 0))
    third = totals.observe(run(3, 5, 0, [], 0))
    assert third["packets"] == 35 and totals.restarts_seen == 2


def test_a_buckets_high_edge_moving_with_the_maximum_is_not_a_restart():
    # The engine clamps the top bucket's high edge to the largest value seen: it moves in a run.
    runs, totals = RunTracker(), RunningTotals()
    for stats in (run(1, 10, 0, [[1000, 1010, 10]], 10_100), run(1, 20, 0, [[1000, 1025, 20]], 20_300)):
        assert not runs.observe(stats)
        assert totals.observe(stats) is stats
    assert totals.restarts_seen == 0
    carried = totals.observe(run(2, 5, 0, [[1000, 1020, 5], [4000, 4095, 1]], 9_000))
    assert carried["latency"]["exchange_to_engine"]["lines"]["A"]["buckets"] == [[1000, 1025, 25], [4000, 4095, 1]]


def test_ring_counters_missing_from_one_snapshot_are_not_a_restart():
    runs = RunTracker()
    runs.observe(run(1, 10, 0, [], 0, ring_full=4))
    unreadable = run(1, 12, 0, [], 0)
    unreadable["ring"] = {}
    del unreadable["engine"]
    assert not runs.observe(unreadable)


def test_the_exchange_day_is_exported():
    view = AgentView("f")
    stats = run(1, 10, 0, [], 0)
    stats["exchange_time"] = {"midnight_ns": 1, "midnights_left": 0, "latency_skipped": 4}
    view.stats = stats
    samples = scrape(view)
    assert value(samples, "tickwire_exchange_midnights_left") == 0
    assert value(samples, "tickwire_exchange_latency_skipped_total") == 4


def test_every_top_level_count_the_engine_reports_is_totalled_across_runs():
    # The engine's counters grew on two branches at once (sequencing: suspect_jumps...; exchange
    # time); a count missing from COUNTS would go down in Prometheus when the engine restarts.
    from tickwire_agent.counter_reset import COUNTS, GAUGES
    from tickwire_agent.metrics import SIMPLE_COUNTERS
    from tickwire_engine.decoder import Decoder

    engine_stats = Decoder([("A", "239.1.1.1", 5000)], exchange_midnight_ns=0).stats()
    top_level = {key for key, n in engine_stats.items() if isinstance(n, int)} - set(GAUGES)
    assert top_level == set(COUNTS)
    for _, key, _ in SIMPLE_COUNTERS:
        totals = RunningTotals()
        first, second = run(1, 10, 0, [], 0), run(2, 10, 0, [], 0)
        first[key], second[key] = 7, 3
        totals.observe(first)
        assert totals.observe(second)[key] == 10, key
