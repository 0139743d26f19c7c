"""Retrying Controller calls: which failures are worth retrying, how often, for how long."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, TypeVar

from aimtp.backoff import backoff_delay
from aimtp.controller import ControllerError, ControllerRejected, ControllerUnavailable
from aimtp.settings import TriggerSettings

_T = TypeVar("_T")

# The Controller refusing OUR credentials says nothing about the DAG: failing the user's
# DAG for it would turn a deployment mistake into lost work, so these are retried (and
# left for the watcher) while the Controller-call metrics show the 401s.
CREDENTIAL_STATUSES: Final = frozenset({401, 403})


def is_retryable(exc: ControllerError) -> bool:
    """Whether the same call may succeed later; False means the Controller refused the DAG."""
    if isinstance(exc, ControllerRejected):
        return exc.status in CREDENTIAL_STATUSES
    return isinstance(exc, ControllerUnavailable)


class RetriesExhausted(Exception):
    """The Controller stayed unavailable for every attempt the policy allows."""

    def __init__(self, last: ControllerError, attempts: int) -> None:
        super().__init__(f"gave up after {attempts} attempt(s): {last}")
        self.last = last
        self.attempts = attempts


class Interrupted(Exception):
    """The process is stopping; the record is left unfinished so that it is redelivered."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 6
    base: float = 0.5
    cap: float = 10.0
    budget: float = 30.0

    @classmethod
    def from_settings(cls, settings: TriggerSettings) -> RetryPolicy:
        return cls(
            attempts=max(1, settings.trigger_retry_attempts),
            base=settings.trigger_retry_base_seconds,
            cap=settings.trigger_retry_cap_seconds,
            budget=settings.trigger_retry_budget_seconds,
        )

    def delay(
        self, retry: int, retry_after: float | None = None, rng: random.Random | None = None
    ) -> float:
        """Seconds before retry number ``retry``; a Retry-After is honoured up to ``cap``."""
        wait = backoff_delay(retry, base=self.base, cap=self.cap, rng=rng)
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.cap))
        return wait


async def call_with_retries(
    call: Callable[[], Awaitable[_T]],
    policy: RetryPolicy,
    stop: asyncio.Event,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> _T:
    """``call()`` until it succeeds, a permanent rejection, or the policy gives up.

    Raises the ``ControllerRejected`` that is not retryable, ``RetriesExhausted`` when
    the attempts or the time budget run out, and ``Interrupted`` when ``stop`` is set
    during a wait (the call in progress is never cut off).
    """
    started = clock()
    attempt = 0
    while True:
        attempt += 1
        try:
            return await call()
        except ControllerError as exc:
            if not is_retryable(exc):
                raise
            last = exc
        if attempt >= policy.attempts:
            raise RetriesExhausted(last, attempt)
        retry_after = last.retry_after if isinstance(last, ControllerUnavailable) else None
        wait = policy.delay(attempt, retry_after)
        if clock() - started + wait > policy.budget:
            raise RetriesExhausted(last, attempt)
        if await stopped_within(stop, wait):
            raise Interrupted


async def stopped_within(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds`` or until ``stop`` is set; True when it was set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    return stop.is_set()
