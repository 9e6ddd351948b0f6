"""The agent's one-minute latency window over the engine's cumulative histograms."""
from tickwire_agent.conditions import recent_latency
from tickwire_agent.latency_window import LatencyWindow
from tickwire_agent.status import snapshot


def stats_with(*line_buckets):
    """Engine stats whose exchange-to-engine histogram holds these per-line bucket lists."""
    lines = {name: {"buckets": b} for name, b in zip("AB", line_buckets)}
    return {"latency": {"exchange_to_engine": {"count": 0, "p99": 999_000, "lines": lines}}}


SLOW = [10_000_000, 10_300_000]          # a 10 ms bucket
FAST = [4_000, 4_100]                    # a 4 us bucket


def test_a_single_snapshot_covers_the_whole_run():
    window = LatencyWindow(seconds=60)
    window.observe(0.0, stats_with([[*FAST, 90], [*SLOW, 10]]))
    summary = window.summary()
    assert summary["count"] == 100 and summary["seconds"] is None
    assert summary["p50"] == FAST[1] and summary["p99"] == SLOW[1]


def test_old_slowness_leaves_the_window():
    window = LatencyWindow(seconds=60)
    window.observe(0.0, stats_with([[*FAST, 90], [*SLOW, 10]]))            # a slow start
    window.observe(30.0, stats_with([[*FAST, 1090], [*SLOW, 10]]))
    window.observe(100.0, stats_with([[*FAST, 5090], [*SLOW, 10]]))        # only fast since
    summary = window.summary()
    assert summary["count"] == 4000 and summary["seconds"] == 70.0
    assert summary["p99"] == summary["p999"] == FAST[1]


def test_lines_are_merged_and_a_restarted_engine_starts_over():
    window = LatencyWindow(seconds=60)
    window.observe(0.0, stats_with([[*FAST, 50]], [[*FAST, 50]]))
    window.observe(10.0, stats_with([[*FAST, 80]], [[*FAST, 50], [*SLOW, 20]]))   # 30 fast on A, 20 slow on B
    assert window.summary()["count"] == 50
    window.observe(20.0, stats_with([[*FAST, 5]]))                         # counts fell: a new engine
    summary = window.summary()
    assert summary["count"] == 5 and summary["seconds"] is None


def test_status_and_slo_use_the_window_when_it_has_samples():
    window = LatencyWindow(seconds=60)
    window.observe(0.0, stats_with([[*SLOW, 100]]))
    latest = stats_with([[*SLOW, 100], [*FAST, 1000]])
    window.observe(90.0, latest)
    latest["recent_latency"] = window.summary()
    latency, words = recent_latency(latest)
    assert latency["p99"] == FAST[1] and words == "over the last 90 s"
    assert snapshot(latest, "now")["latency"]["p99Micros"] == FAST[1] / 1e3
    # No window yet: the engine's own since-start figures.
    latency, words = recent_latency(stats_with([[*FAST, 1]]))
    assert latency["p99"] == 999_000 and words == "since the engine started"


# ---- a restarted engine (issue 11, defect 6) ------------------------------------------------------

def from_engine(pid: int, *line_buckets) -> dict:
    stats = stats_with(*line_buckets)
    stats["engine"] = {"pid": pid, "started_at": 1000.0 + pid}
    return stats


def test_a_restart_with_more_samples_but_a_bucket_lower_starts_the_window_over():
    # The new engine's first snapshot holds more samples in total than the old one's last, but
    # none in the old one's bucket: subtracting the two used to raise.
    window = LatencyWindow(seconds=60)
    window.observe(0.0, stats_with([[*FAST, 10]]))
    window.observe(5.0, stats_with([[*SLOW, 50]]))
    summary = window.summary()
    assert summary["count"] == 50 and summary["p99"] == SLOW[1] and summary["seconds"] is None


def test_a_new_engine_identity_starts_the_window_over_even_when_every_count_rose():
    window = LatencyWindow(seconds=60)
    window.observe(0.0, from_engine(1, [[*FAST, 10], [*SLOW, 1]]))
    window.observe(5.0, from_engine(2, [[*FAST, 400], [*SLOW, 30]]))      # a new run, all higher
    summary = window.summary()
    assert summary["count"] == 430 and summary["seconds"] is None
    window.observe(10.0, from_engine(2, [[*FAST, 500], [*SLOW, 30]]))
    assert window.summary()["count"] == 100 and window.summary()["seconds"] == 5.0
