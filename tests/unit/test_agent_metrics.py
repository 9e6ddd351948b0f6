"""/metrics from an engine stats document (the shape the engine CLI writes; the real engine's
file is scraped in tests/netns/test_agent_netns.py), parsed back with prometheus-client's parser."""
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client import CollectorRegistry, generate_latest

from tickwire_agent.metrics import AgentView, EngineCollector, prometheus_buckets, start_server

STATS = {
    "packets": 30, "messages": 100, "messages_by_type": {"A": 60, "D": 40}, "gaps": 2, "missing": 5,
    "recovered": 1, "duplicates": 7, "malformed": 3, "suspect_jumps": 6, "confirmed_jumps": 1,
    "malformed_by_reason": {"frame_short": 0, "itch_bad_length": 3}, "heartbeats": 4, "unmatched": 9,
    "bytes": 4200, "lines": {"A": {"packets": 20, "first_messages": 70}, "B": {"packets": 10, "first_messages": 30}},
    "latency": {
        "exchange_to_engine": {"count": 4, "p50": 1500, "p99": 9000, "p999": 9000, "lines": {
            "A": {"count": 3, "buckets": [[992, 1023, 1], [1472, 1503, 2]]},
            "B": {"count": 1, "buckets": [[8960, 9215, 1]]}}},
        "kernel_to_engine": {"count": 0, "lines": {"A": {"count": 0, "buckets": []}}},
    },
    "xdp_mode": "generic", "zero_copy": False, "hugepages": True,
    "ring": {"rx_dropped": 11, "rx_invalid_descs": 0, "rx_ring_full": 2, "rx_fill_ring_empty_descs": 0},
    "rate": {"packets_per_s": 10.0, "messages_per_s": 33.5}, "last_packet_age_s": 0.2, "running": True,
}


def scrape(view) -> dict:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EngineCollector(view))
    samples = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples, name, **labels):
    return samples[(name, tuple(sorted({"feed": "f", **labels}.items())))]


@pytest.fixture
def samples():
    view = AgentView("f")
    view.stats = STATS
    view.engine_up, view.engine_restarts = True, 2
    view.drifted, view.drift_events = {"gro_flush_timeout": False}, {"gro_flush_timeout": 3}
    return scrape(view)


def test_counters_follow_prometheus_naming_and_carry_the_engines_numbers(samples):
    assert value(samples, "tickwire_packets_total", line="A") == 20
    assert value(samples, "tickwire_packets_total", line="B") == 10
    assert value(samples, "tickwire_messages_total", type="D") == 40
    assert value(samples, "tickwire_gaps_total") == 2
    assert value(samples, "tickwire_missing_messages_total") == 5
    assert value(samples, "tickwire_recovered_messages_total") == 1
    assert value(samples, "tickwire_duplicate_messages_total") == 7
    assert value(samples, "tickwire_suspect_sequence_jumps_total") == 6
    assert value(samples, "tickwire_confirmed_sequence_jumps_total") == 1
    assert value(samples, "tickwire_malformed_total", reason="itch_bad_length") == 3
    assert value(samples, "tickwire_afxdp_rx_drops_total", reason="dropped") == 11
    assert value(samples, "tickwire_afxdp_rx_drops_total", reason="ring_full") == 2
    assert value(samples, "tickwire_engine_restarts_total") == 2
    assert value(samples, "tickwire_host_drift_events_total", setting="gro_flush_timeout") == 3


def test_gauges(samples):
    assert value(samples, "tickwire_messages_per_second") == 33.5
    assert value(samples, "tickwire_xdp_mode", mode="generic") == 1
    assert value(samples, "tickwire_xdp_mode", mode="native") == 0
    assert value(samples, "tickwire_zero_copy") == 0
    assert value(samples, "tickwire_umem_hugepages") == 1
    assert value(samples, "tickwire_engine_up") == 1


def test_latency_histograms_in_seconds_per_line_with_sub_microsecond_buckets(samples):
    hist = "tickwire_exchange_to_engine_latency_seconds"
    assert value(samples, hist + "_count", line="A") == 3
    assert value(samples, hist + "_bucket", line="A", le="1e-06") == 0          # 992-1023 ns is not <= 1 us
    assert value(samples, hist + "_bucket", line="A", le="1.25e-06") == 1
    assert value(samples, hist + "_bucket", line="A", le="1.5e-06") == 1        # 1472-1503: above 1.5 us
    assert value(samples, hist + "_bucket", line="A", le="1.75e-06") == 3
    assert value(samples, hist + "_bucket", line="A", le="+Inf") == 3
    assert value(samples, hist + "_bucket", line="B", le="1e-05") == 1
    assert value(samples, hist + "_sum", line="A") == pytest.approx((1007.5 + 2 * 1487.5) / 1e9)
    assert value(samples, hist + "_bucket", line="A", le="1e-07") == 0          # 100 ns bucket exists
    label_names = {name for key, labels in samples if "latency" in key for name, _ in labels}
    assert label_names == {"feed", "line", "le"}     # low cardinality: nothing else


def test_bucket_conversion_never_understates_and_overflows_to_inf():
    buckets, total = prometheus_buckets([[100, 100, 5], [20_000_000_000, 20_100_000_000, 1]])
    as_dict = dict(buckets)
    assert as_dict["1e-07"] == 5 and as_dict["10.0"] == 5 and as_dict["+Inf"] == 6
    assert total == pytest.approx(5 * 100e-9 + 20.05)


def test_before_the_first_stats_only_agent_metrics_exist():
    samples = scrape(AgentView("f"))
    assert value(samples, "tickwire_engine_up") == 0
    assert not any(name.startswith("tickwire_packets") for name, _ in samples)


def test_served_over_http_on_loopback():
    view = AgentView("f")
    view.stats = STATS
    server, port = start_server(view, "127.0.0.1", 0)
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    finally:
        server.shutdown()
    assert 'tickwire_packets_total{feed="f",line="A"} 20.0' in text
