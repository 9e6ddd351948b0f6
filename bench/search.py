"""Find the highest packet rate a receiver takes with zero loss: grow, then bisect.

Pure logic, no I/O: the caller passes `run_trial(rate_pps) -> TrialOutcome`. The search doubles
the rate (by `factor`) until a trial loses something, then bisects geometrically between the last
clean rate and the first lossy one until they are within `precision` (1.1 = 10%). If the very
first rate loses, it steps down instead. On a shared machine a stray loss (the receiver's CPU
taken away for milliseconds) is not the receiver's limit: with `confirm_loss` N, a rate counts as
lossy only after N + 1 trials at it all lost. A trial in which the publisher could not reach the
asked rate ends the climb: the receiver kept up with everything the sender could produce, so the
result is a lower bound and says so (`publisher_limited`).

Every loop is bounded by `max_trials`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Generic, TypeVar

# What publisher shortfall still counts as "reached the rate": pacing jitter costs ~1%.
PUBLISHER_SHORTFALL = 0.95

T = TypeVar("T")


@dataclass(frozen=True)
class TrialOutcome(Generic[T]):
    target_pps: float
    achieved_pps: float   # what the publisher really sent, packets per second
    zero_loss: bool
    detail: T | None = None  # whatever the caller wants kept with the trial

    @property
    def publisher_limited(self) -> bool:
        return self.achieved_pps < PUBLISHER_SHORTFALL * self.target_pps


@dataclass
class SearchResult(Generic[T]):
    best: TrialOutcome[T] | None = None     # highest clean trial (by achieved rate)
    trials: list[TrialOutcome[T]] = field(default_factory=list)
    stopped_by: str = ""                    # why the search ended

    @property
    def zero_loss_pps(self) -> float:
        return self.best.achieved_pps if self.best else 0.0

    @property
    def publisher_limited(self) -> bool:
        return self.stopped_by == "publisher"


def find_zero_loss_rate(run_trial: Callable[[float], TrialOutcome[T]], start_pps: float, *,
                        factor: float = 2.0, precision: float = 1.1, min_pps: float = 100.0,
                        max_pps: float = 20e6, max_trials: int = 20,
                        confirm_loss: int = 0) -> SearchResult[T]:
    if not (factor > 1 and precision > 1):
        raise ValueError(f"factor ({factor}) and precision ({precision}) must both be > 1")
    if not 0 < min_pps <= start_pps <= max_pps:
        raise ValueError(f"need 0 < min_pps <= start_pps <= max_pps, got {min_pps}, {start_pps}, {max_pps}")
    result: SearchResult[T] = SearchResult()

    def trial(rate: float) -> TrialOutcome[T]:
        for attempt in range(confirm_loss + 1):
            outcome = run_trial(rate)
            result.trials.append(outcome)
            if outcome.zero_loss:
                if result.best is None or outcome.achieved_pps > result.best.achieved_pps:
                    result.best = outcome
                break
            if len(result.trials) >= max_trials:
                break
        return outcome

    # 1. Bracket: the highest clean rate `low` and the lowest lossy rate `high`.
    low = high = None
    rate = start_pps
    while len(result.trials) < max_trials:
        outcome = trial(rate)
        if outcome.zero_loss:
            if outcome.publisher_limited:
                result.stopped_by = "publisher"
                return result
            low = rate
            if high is not None:
                break
            if rate * factor > max_pps:
                result.stopped_by = "max_pps"
                return result
            rate *= factor
        else:
            high = rate
            if low is not None:
                break
            if rate / factor < min_pps:
                result.stopped_by = "min_pps"
                return result
            rate /= factor
    else:
        result.stopped_by = "max_trials"
        return result

    # 2. Bisect geometrically: rates span orders of magnitude, so halve the ratio, not the range.
    while high / low > precision:
        if len(result.trials) >= max_trials:
            result.stopped_by = "max_trials"
            return result
        middle = math.sqrt(low * high)
        outcome = trial(middle)
        if outcome.zero_loss:
            if outcome.publisher_limited:
                result.stopped_by = "publisher"
                return result
            low = middle
        else:
            high = middle
    result.stopped_by = "precision"
    return result
