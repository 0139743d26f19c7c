"""Retry delays: exponential growth, capped, with full jitter."""

from __future__ import annotations

import random


def backoff_delay(
    attempt: int,
    *,
    base: float = 0.1,
    cap: float = 30.0,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before retry number ``attempt`` (1 for the first retry).

    Full jitter (a uniform draw below the exponential ceiling) spreads the retries of
    many clients that failed together, so they do not hit a recovering dependency in
    lockstep.
    """
    if attempt < 1:
        raise ValueError("attempt starts at 1")
    ceiling = min(cap, base * 2 ** min(attempt - 1, 62))
    return (rng or random).uniform(0, ceiling)


class Backoff:
    """Consecutive-failure counter around ``backoff_delay``; ``reset()`` after a success."""

    def __init__(self, *, base: float = 0.1, cap: float = 30.0) -> None:
        self.base = base
        self.cap = cap
        self.failures = 0

    def next_delay(self) -> float:
        self.failures += 1
        return backoff_delay(self.failures, base=self.base, cap=self.cap)

    def reset(self) -> None:
        self.failures = 0
