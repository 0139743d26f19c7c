from __future__ import annotations

import random

import pytest

from aimtp.backoff import Backoff, backoff_delay


def test_delay_grows_exponentially_under_the_cap() -> None:
    rng = random.Random(7)
    ceilings = [0.1, 0.2, 0.4, 0.8, 1.6]
    for attempt, ceiling in enumerate(ceilings, start=1):
        draws = [backoff_delay(attempt, base=0.1, cap=100, rng=rng) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in draws)
        assert max(draws) > ceiling * 0.8  # full jitter spans the whole range


def test_delay_is_capped_even_for_huge_attempts() -> None:
    assert all(backoff_delay(10_000, base=1, cap=5) <= 5 for _ in range(100))


def test_attempts_start_at_one() -> None:
    with pytest.raises(ValueError, match="starts at 1"):
        backoff_delay(0)


def test_backoff_counter_resets_after_success() -> None:
    backoff = Backoff(base=1, cap=1000)
    for _ in range(5):
        backoff.next_delay()
    assert backoff.failures == 5
    backoff.reset()
    assert backoff.failures == 0
    assert backoff.next_delay() <= 1
