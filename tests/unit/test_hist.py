"""The log-linear histogram: bucket arithmetic in C against the layout tickwire.h documents, and
the percentile maths of stats.py."""
import random

import pytest

from tickwire_engine._native import ffi, lib
from tickwire_engine.stats import hist_buckets, percentile, summarize

BUCKETS = lib.TW_HIST_BUCKETS
LAST = BUCKETS - 1
U64_MAX = 2**64 - 1


def documented_index(v: int) -> int:
    """The formula in tickwire.h, written out independently of hist.c."""
    if v < 64:
        return v
    e = v.bit_length() - 1
    return min(LAST, 64 + (e - 6) * 32 + ((v >> (e - 5)) & 31))


def test_small_values_have_a_bucket_each():
    for v in range(64):
        assert lib.tw_hist_index(v) == v
        assert lib.tw_hist_bucket_low(v) == v == lib.tw_hist_bucket_high(v)


def test_buckets_are_contiguous_and_monotonic():
    for i in range(LAST):
        low, high = lib.tw_hist_bucket_low(i), lib.tw_hist_bucket_high(i)
        assert low <= high
        assert lib.tw_hist_bucket_low(i + 1) == high + 1, f"bucket {i} and {i + 1} do not touch"
        assert lib.tw_hist_index(low) == i and lib.tw_hist_index(high) == i


def test_bucket_width_is_at_most_a_32nd_of_its_values():
    for i in range(64, LAST):
        low, high = lib.tw_hist_bucket_low(i), lib.tw_hist_bucket_high(i)
        assert (high - low + 1) * 32 <= low


@pytest.mark.parametrize("value, index", [
    (63, 63), (64, 64), (65, 64), (66, 65), (127, 95), (128, 96), (1000, 64 + 3 * 32 + 30),
    (2**36 - 1, LAST), (2**35, 64 + 29 * 32),
])
def test_boundaries(value, index):
    assert lib.tw_hist_index(value) == index == documented_index(value)


def test_top_bucket_takes_everything_above_and_clamps():
    assert lib.tw_hist_bucket_low(LAST) == 63 << 30
    assert lib.tw_hist_bucket_high(LAST) == U64_MAX
    for v in (2**36, 2**40, U64_MAX):
        assert lib.tw_hist_index(v) == LAST
    # indexes past the end are clamped to the last bucket rather than read out of range
    assert lib.tw_hist_bucket_low(BUCKETS + 5) == lib.tw_hist_bucket_low(LAST)
    assert lib.tw_hist_bucket_high(BUCKETS + 5) == U64_MAX


def test_every_value_lies_within_its_bucket():
    rng = random.Random(20230822)
    values = [rng.getrandbits(rng.randint(1, 64)) for _ in range(20000)] + [0, 1, U64_MAX]
    for v in values:
        i = lib.tw_hist_index(v)
        assert i == documented_index(v)
        assert lib.tw_hist_bucket_low(i) <= v <= lib.tw_hist_bucket_high(i)


def test_record_keeps_count_sum_min_max_and_buckets():
    h = ffi.new("struct tw_hist *")
    values = [5000, 700, 700, 2**40, 64]
    for v in values:
        lib.tw_hist_record(h, v)
    assert (h.count, h.sum, h.min, h.max) == (5, sum(values), 64, 2**40)
    buckets = hist_buckets(h)
    assert sum(n for _, _, n in buckets) == 5
    assert [b for b in buckets if b[0] <= 700 <= b[1]][0][2] == 2
    assert buckets[-1] == [63 << 30, 2**40, 1]  # 2^40 in the top bucket, its bound clamped to max
    assert [b for b in buckets if b[0] <= 5000 <= b[1]][0] == [4992, 5119, 1]  # not the max: whole


def test_percentile_is_the_bucket_high_bound_clamped_to_max():
    h = ffi.new("struct tw_hist *")
    for v in range(1, 101):  # 1..100 ns
        lib.tw_hist_record(h, v)
    buckets = hist_buckets(h)
    assert percentile(buckets, 0.5) == 50          # exact below 64 ns
    assert percentile(buckets, 0.9) == lib.tw_hist_bucket_high(lib.tw_hist_index(90))
    assert buckets[-1] == [100, 100, 1]            # bucket [100, 101] clamped to the max seen
    assert percentile(buckets, 1.0) == 100
    assert percentile(buckets, 0.001) == 1
    # on raw bounds percentile() clamps by itself when told the max
    assert percentile([[64, 65, 2], [100, 101, 1]], 1.0) == 101
    assert percentile([[64, 65, 2], [100, 101, 1]], 1.0, max_ns=100) == 100
    assert percentile([[64, 65, 2], [100, 101, 1]], 0.5, max_ns=100) == 65


def test_percentile_of_one_huge_value_is_exact_through_the_clamp():
    h = ffi.new("struct tw_hist *")
    lib.tw_hist_record(h, 2**50)
    s = summarize(h.count, h.sum, h.min, h.max, hist_buckets(h))
    assert s["p50"] == s["p999"] == s["max"] == 2**50


def test_percentile_edge_cases():
    assert percentile([], 0.99) == 0
    assert percentile([[10, 10, 0]], 0.5) == 0
    with pytest.raises(ValueError, match="outside"):
        percentile([[1, 1, 1]], 0)
    with pytest.raises(ValueError, match="outside"):
        percentile([[1, 1, 1]], 1.5)


def test_summarize_empty_is_all_zero():
    assert summarize(0, 0, 0, 0, []) == {"count": 0, "sum": 0, "min": 0, "max": 0, "mean": 0, "p50": 0,
                                         "p90": 0, "p99": 0, "p999": 0}
