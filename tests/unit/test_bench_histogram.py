"""bench/histogram.py must bucket exactly like the engine's C histogram (hist.c)."""
import random

import pytest

from bench import histogram
from tickwire_engine._native import lib

VALUES = [0, 1, 63, 64, 65, 127, 128, 1000, 4095, 4096, 123_456, 10**9, 2**36 - 1, 2**36, 2**40, 2**63]


@pytest.mark.parametrize("value", VALUES + [random.Random(7).getrandbits(40) for _ in range(200)])
def test_bucket_index_matches_the_c_code(value):
    assert histogram.bucket_index(value) == lib.tw_hist_index(value)


@pytest.mark.parametrize("index", [0, 1, 63, 64, 95, 96, 500, 1022, 1023])
def test_bucket_bounds_match_the_c_code(index):
    assert histogram.bucket_low(index) == lib.tw_hist_bucket_low(index)
    assert histogram.bucket_high(index) == lib.tw_hist_bucket_high(index)


def test_record_keeps_exact_count_sum_min_max():
    h = histogram.Histogram()
    for v, n in ((500, 3), (70, 1), (10**6, 2)):
        h.record(v, n)
    d = h.to_dict()
    assert (d["count"], d["sum"], d["min"], d["max"]) == (6, 1500 + 70 + 2 * 10**6, 70, 10**6)
    assert sum(n for _, _, n in d["buckets"]) == 6
    assert [b[0] for b in d["buckets"]] == sorted(b[0] for b in d["buckets"])


def test_subtract_gives_what_was_recorded_between_two_snapshots():
    h = histogram.Histogram()
    h.record(100, 5)
    before = h.to_dict()["buckets"]
    h.record(100, 2)
    h.record(5000, 1)
    assert histogram.subtract(h.to_dict()["buckets"], before) == [
        [histogram.bucket_low(histogram.bucket_index(100)), histogram.bucket_high(histogram.bucket_index(100)), 2],
        [histogram.bucket_low(histogram.bucket_index(5000)), histogram.bucket_high(histogram.bucket_index(5000)), 1]]


def test_subtract_refuses_snapshots_in_the_wrong_order():
    early, late = histogram.Histogram(), histogram.Histogram()
    early.record(100)
    late.record(100, 3)
    with pytest.raises(ValueError, match="later snapshot"):
        histogram.subtract(early.to_dict()["buckets"], late.to_dict()["buckets"])


def test_merge_adds_counts_per_bucket():
    a, b = histogram.Histogram(), histogram.Histogram()
    a.record(100, 2)
    b.record(100, 3)
    b.record(7, 1)
    merged = histogram.merge(a.to_dict()["buckets"], b.to_dict()["buckets"])
    assert merged == [[7, 7, 1], [*merged[1][:2], 5]]
