"""The zero-loss rate search (bench/search.py) against receivers whose limits we choose."""
import pytest

from bench.search import TrialOutcome, find_zero_loss_rate


def receiver(capacity_pps, publisher_max_pps=float("inf")):
    """A fake trial: the publisher reaches min(rate, its max); loss above `capacity_pps`."""
    asked = []

    def run(rate):
        asked.append(rate)
        achieved = min(rate, publisher_max_pps)
        return TrialOutcome(rate, achieved, achieved <= capacity_pps)
    return run, asked


@pytest.mark.parametrize("capacity", [750.0, 12_345.0, 99_000.0, 1_234_567.0])
def test_finds_the_capacity_within_the_precision(capacity):
    run, asked = receiver(capacity)
    result = find_zero_loss_rate(run, 10_000, precision=1.05, max_trials=40)
    assert result.stopped_by == "precision"
    assert capacity / 1.05 <= result.zero_loss_pps <= capacity
    assert all(t.zero_loss == (t.target_pps <= capacity) for t in result.trials)
    assert len(asked) == len(result.trials)


def test_the_best_is_the_highest_clean_trial_not_the_last():
    run, _ = receiver(50_000)
    result = find_zero_loss_rate(run, 10_000, precision=1.1)
    clean = [t.achieved_pps for t in result.trials if t.zero_loss]
    assert result.zero_loss_pps == max(clean)


def test_a_publisher_that_falls_short_ends_the_climb_and_says_so():
    run, asked = receiver(capacity_pps=10e6, publisher_max_pps=300_000)
    result = find_zero_loss_rate(run, 10_000)
    assert result.publisher_limited
    assert result.zero_loss_pps == 300_000
    assert asked[-1] > 300_000 / 0.95   # it stopped at the first rate the publisher missed


def test_a_receiver_that_takes_nothing_gives_zero_and_stops_at_the_floor():
    run, asked = receiver(capacity_pps=0)
    result = find_zero_loss_rate(run, 10_000, min_pps=100)
    assert result.best is None and result.zero_loss_pps == 0
    assert result.stopped_by == "min_pps"
    assert min(asked) >= 100


def test_the_number_of_trials_is_bounded():
    run, asked = receiver(capacity_pps=1e12)
    result = find_zero_loss_rate(run, 1_000, max_pps=1e15, max_trials=5)
    assert len(asked) == 5 and result.stopped_by == "max_trials"


def test_stops_at_max_pps():
    run, _ = receiver(capacity_pps=1e9)
    result = find_zero_loss_rate(run, 1_000, max_pps=10_000)
    assert result.stopped_by == "max_pps" and result.zero_loss_pps == 8_000


@pytest.mark.parametrize("kwargs", [dict(factor=1.0), dict(precision=0.9), dict(min_pps=20_000)])
def test_bad_parameters_are_refused(kwargs):
    run, _ = receiver(1_000)
    with pytest.raises(ValueError):
        find_zero_loss_rate(run, 10_000, **kwargs)


def test_confirm_loss_sees_through_stray_losses_but_not_through_the_limit():
    calls = {"n": 0}

    def flaky(rate):   # every third trial loses whatever the rate: a noisy machine
        calls["n"] += 1
        return TrialOutcome(rate, rate, rate <= 80_000 and calls["n"] % 3 != 0)

    noisy = find_zero_loss_rate(flaky, 10_000, precision=1.05, max_trials=60, confirm_loss=1)
    assert 80_000 / 1.05 <= noisy.zero_loss_pps <= 80_000
    retried = [t for t in noisy.trials if t.target_pps > 80_000]
    assert retried and all(not t.zero_loss for t in retried)
    calls["n"] = 0
    unconfirmed = find_zero_loss_rate(flaky, 10_000, precision=1.05, max_trials=60)
    assert unconfirmed.zero_loss_pps < noisy.zero_loss_pps
