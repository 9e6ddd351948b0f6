"""Results shape (bench/report.py) and the plot (bench/plot.py), from made-up trials."""
import json

import pytest

from bench import histogram, plot, report
from bench.search import SearchResult, TrialOutcome
from bench.trial import TrialResult


def trial(msgs_per_s, latency_ns, cpu_s=0.5, lost=0, samples=1000):
    h = histogram.Histogram()
    for i in range(samples):   # latency_ns, with a tail: the slowest 1% ten times slower
        h.record(latency_ns * (10 if i >= samples * 0.99 else 1))
    sent = int(msgs_per_s)
    return TrialResult(target_pps=msgs_per_s / 4, sent_packets=sent // 4, sent_messages=sent,
                       pkts_per_s=msgs_per_s / 4, msgs_per_s=msgs_per_s, elapsed_s=1.0,
                       received_messages=sent - lost, counts_match=not lost, malformed=0, duplicates=0,
                       receiver_cpu_s=cpu_s, softirq_s={"cpu0": 0.1}, latency_buckets=h.to_dict()["buckets"],
                       latency_max_ns=h.max)


def repeat(best_msgs_per_s, latency_ns, publisher_limited=False, high_cpu_s=None):
    best = trial(best_msgs_per_s, latency_ns)
    outcome = TrialOutcome(best.target_pps, best.pkts_per_s * (0.5 if publisher_limited else 1), True, best)
    lossy = trial(best_msgs_per_s * 2, latency_ns, lost=10)
    search = SearchResult(best=outcome, trials=[outcome, TrialOutcome(lossy.target_pps, lossy.pkts_per_s, False, lossy)],
                          stopped_by="publisher" if publisher_limited else "precision")
    high = trial(1_000_000, latency_ns * 2, cpu_s=high_cpu_s) if high_cpu_s is not None else None
    return report.Repeat(search, trial(100_000, latency_ns), high)


@pytest.fixture
def doc():
    contenders = {
        "engine": report.summarize("engine", [repeat(2.0e6, 3_000), repeat(2.4e6, 3_000), repeat(1.0e6, 3_000)]),
        "kernel_c": report.summarize("kernel", [repeat(0.8e6, 8_000)]),
        "python": report.summarize("python", [repeat(50_000, 60_000, publisher_limited=True)]),
    }
    return report.document(contenders, {"latency_rate_msgs_per_s": 100_000, "quick": True})


def test_latest_json_has_the_shape_other_tools_read(doc, tmp_path):
    paths = report.write(doc, str(tmp_path))
    loaded = json.loads(open(paths["json"]).read())
    assert set(loaded) >= {"contenders", "setup"}
    for key in ("engine", "kernel_c", "python"):
        c = loaded["contenders"][key]
        for field in ("zero_loss_msgs_per_s", "zero_loss_pkts_per_s", "cpu_s_per_million_msgs"):
            assert isinstance(c[field], (int, float)) and c[field] > 0
        assert set(c["latency_ns"]) >= {"p50", "p99", "p999", "max"}
    assert loaded["setup"]["latency_rate_msgs_per_s"] == 100_000


def test_rates_and_latencies_are_medians_of_the_repeats(doc):
    engine = doc["contenders"]["engine"]
    assert engine["zero_loss_msgs_per_s"] == 2.0e6            # median of 2.0, 2.4, 1.0
    assert engine["zero_loss_pkts_per_s"] == 0.5e6
    # receive CPU: the receiver's 0.5 s plus the softirq's 0.1 s, per million messages
    assert engine["cpu_s_per_million_msgs"] == pytest.approx((0.5 + 0.1) / 2.0)
    lat = engine["latency_ns"]
    assert lat["count"] == 3000
    assert 3_000 <= lat["p50"] <= 3_000 * 1.04                 # one bucket (~3%) high at most
    assert lat["p999"] >= 30_000 and lat["max"] == 30_000
    assert len(engine["repeats"]) == 3 and engine["repeats"][0]["trials"][1]["zero_loss"] is False


def test_ratios_and_goals(doc):
    r = doc["ratios"]
    assert r["engine_vs_kernel_c_zero_loss_rate"] == 2.5
    assert r["engine_vs_python_zero_loss_rate"] == 40.0
    assert r["engine_vs_kernel_c_p99"] == pytest.approx(3_000 / 8_000, rel=0.05)
    assert doc["goals"]["engine_vs_kernel_c_zero_loss_rate"]["met"] is True
    assert doc["goals"]["engine_vs_kernel_c_p99"]["met"] is True
    assert doc["contenders"]["python"]["publisher_limited"] is True
    # Python's rate was capped by the publisher, so 40x is only an upper bound: undecided.
    assert doc["goals"]["engine_vs_python_zero_loss_rate"]["met"] is None


def test_a_missing_contender_leaves_its_ratios_empty_not_wrong():
    doc = report.document({"engine": report.summarize("engine", [repeat(1e6, 3_000)])}, {})
    assert doc["ratios"]["engine_vs_kernel_c_zero_loss_rate"] is None
    assert doc["goals"]["engine_vs_kernel_c_p99"]["met"] is None


def test_markdown_table_names_every_contender_and_the_ratios(doc):
    text = report.markdown(doc)
    for label in ("`engine`", "`kernel_c`", "`python` (generator-limited: at least)", "| 2.00 (1.00-2.40) |",
                  "2.50"):
        assert label in text


def test_plot_writes_a_png(doc, tmp_path):
    path = plot.plot(doc, str(tmp_path / "latest.png"))
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_percentile_curve_reaches_the_max_at_the_tail():
    h = histogram.Histogram()
    for v in (1_000,) * 99 + (50_000,):
        h.record(v)
    xs, ys = plot.percentile_curve(h.to_dict()["buckets"], h.max)
    assert ys[-1] == 50.0 and xs == sorted(xs) and xs[0] == 1.0


def test_a_noisy_machine_is_called_out_in_the_table(doc):
    doc["setup"]["noise"] = {"before": {"cpu0": 0.99, "cpu1": 0.99}}
    assert "quiet machine" not in report.markdown(doc)
    doc["setup"]["noise"]["after"] = {"cpu0": 0.99, "cpu1": 0.6}
    text = report.markdown(doc)
    assert "cpu1 60%" in text and "rerun on a quiet machine" in text


def test_a_contender_that_lost_messages_in_the_latency_trial_is_flagged():
    lossy = repeat(1e6, 3_000)
    lossy.latency.received_messages -= 7
    doc = report.document({"python": report.summarize("python", [lossy])}, {})
    assert doc["contenders"]["python"]["latency_lost_messages"] == 7
    assert "`python` could not keep up" in report.markdown(doc)


@pytest.mark.parametrize("engine_capped, kernel_capped, engine_rate, met", [
    (False, False, 1.0e6, False),   # a plain measurement: 1.25x misses 2x
    (True, True, 3.0e6, None),      # the publisher set both rates: nothing to conclude
    (True, False, 1.0e6, None),     # engine capped below target: a lower bound, undecided
    (True, False, 3.0e6, True),     # engine capped but already above target: met
    (False, True, 3.0e6, None),     # baseline capped: the ratio is an upper bound
    (False, True, 1.0e6, False),    # an upper bound below target: missed
])
def test_rate_goals_know_a_publisher_limited_rate_is_only_a_bound(engine_capped, kernel_capped, engine_rate, met):
    contenders = {"engine": report.summarize("engine", [repeat(engine_rate, 3_000, engine_capped)]),
                  "kernel_c": report.summarize("kernel", [repeat(0.8e6, 8_000, kernel_capped)])}
    goal = report.document(contenders, {})["goals"]["engine_vs_kernel_c_zero_loss_rate"]
    assert goal["met"] is met
    assert bool(goal["note"]) == (met is None)


def test_publisher_limited_follows_the_repeat_that_gives_the_median():
    capped_high = [repeat(1e6, 3_000), repeat(2e6, 3_000), repeat(3e6, 3_000, publisher_limited=True)]
    assert report.summarize("e", capped_high)["publisher_limited"] is False
    capped_middle = [repeat(1e6, 3_000), repeat(2e6, 3_000, publisher_limited=True), repeat(3e6, 3_000)]
    assert report.summarize("e", capped_middle)["publisher_limited"] is True


def test_one_noisy_repeat_does_not_set_the_latency():
    repeats = [repeat(1e6, 3_000), repeat(1e6, 2_000_000), repeat(1e6, 3_100)]
    summary = report.summarize("e", repeats)
    assert summary["latency_ns"]["p99"] <= 31_000 * 1.04
    assert summary["latency_buckets"] == repeats[2].latency.latency_buckets   # the median-p99 repeat


def test_cpu_per_packet_comes_from_the_high_rate_trial_and_says_where_it_went():
    # 250k packets in the high-rate trial; 0.5 s receiver + 0.1 s softirq -> 2.4 us per packet
    reps = [repeat(1e6, 3_000, high_cpu_s=0.5), repeat(1e6, 3_000, high_cpu_s=0.9), repeat(1e6, 3_000, high_cpu_s=0.3)]
    reps[0].high.receiver_cpu_by_cpu_s = {"cpu1": 0.5}
    c = report.summarize("engine", reps)
    assert c["cpu_us_per_packet"] == pytest.approx(2.4)
    assert c["cpu_us_per_packet_range"] == [pytest.approx(1.6), pytest.approx(4.0)]
    breakdown = c["cpu_breakdown_us_per_packet"]
    assert breakdown["receiver"] == {"cpu1": 2.0} and breakdown["softirq"] == {"cpu0": 0.4}
    assert c["latency_high_ns"]["p50"] >= 6_000 and len(c["repeats"][0]["high_rate_trial"]) > 5


def test_sleeping_cpu_and_dpdk_ratios_and_their_goals():
    contenders = {
        "engine": report.summarize("engine", [repeat(2e6, 3_000, high_cpu_s=1.0)]),
        "engine_poll": report.summarize("engine_poll", [repeat(1e6, 3_000, high_cpu_s=0.2)]),
        "kernel_c_sleep": report.summarize("kernel_c_sleep", [repeat(0.5e6, 3_000, high_cpu_s=0.5)]),
        "dpdk_af_xdp": report.summarize("dpdk", [repeat(1.6e6, 3_000)]),
    }
    doc = report.document(contenders, {})
    assert doc["ratios"]["engine_vs_kernel_c_cpu_per_packet_sleeping"] == pytest.approx(0.3 / 0.6, rel=1e-3)
    assert doc["goals"]["engine_vs_kernel_c_cpu_per_packet_sleeping"]["met"] is True
    assert doc["ratios"]["engine_vs_dpdk_zero_loss_rate"] == 1.25
    assert doc["goals"]["engine_vs_dpdk_zero_loss_rate"]["met"] is True
