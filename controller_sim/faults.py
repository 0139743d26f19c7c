"""Fault injection for the reference Controller: configuration and per-request decisions."""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Annotated, Any

import msgspec

NonNegative = Annotated[float, msgspec.Meta(ge=0)]


class FaultConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Faults to inject; every field defaults to "off"."""

    latency_ms: NonNegative = 0.0
    """Extra latency added to every /v1 call."""
    error_rate: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.0
    """Probability of answering a /v1 call with 500."""
    unavailable_for_seconds: NonNegative = 0.0
    """Answer /v1 calls with 503 for this long, counted from when it is set."""
    hang: bool = False
    """Accept /v1 requests but do not answer them until the faults are cleared."""
    hang_for_seconds: NonNegative = 0.0
    """Like ``hang`` but only for this long, counted from when it is set."""
    reject_image_pattern: str | None = None
    """Regex: a PUT creating a workload with a task image matching it gets 422."""
    fail_task: str | None = None
    """Name of the task whose simulated execution ends Failed."""
    max_creations_per_second: Annotated[float, msgspec.Meta(gt=0)] | None = None
    """Rate cap on workload creations; PUTs beyond it get 503 with Retry-After."""


class FaultError(ValueError):
    """A fault update was invalid; nothing was changed."""


class Outage(msgspec.Struct, frozen=True):
    """A decision to fail a /v1 call with ``status`` before it reaches its handler."""

    status: int
    detail: str
    retry_after: float | None = None


class Faults:
    """Current faults plus the state behind them (time windows, hang release, rate bucket)."""

    def __init__(
        self,
        config: FaultConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._clock = clock
        self._rng = rng
        self._config = FaultConfig()
        self._pattern: re.Pattern[str] | None = None
        self._unavailable_until = 0.0
        self._hang_until = 0.0
        # Hung requests wait on this event; releasing sets it and a new hang replaces it.
        self._release = asyncio.Event()
        self._release.set()
        self._tokens = 0.0
        self._refilled_at = 0.0
        if config is not None:
            self.update(msgspec.structs.asdict(config))

    @property
    def config(self) -> FaultConfig:
        return self._config

    @property
    def fail_task(self) -> str | None:
        return self._config.fail_task

    def update(self, patch: Mapping[str, Any]) -> None:
        """Merge ``patch`` into the config; windows given in it start now."""
        merged = {**msgspec.structs.asdict(self._config), **patch}
        try:
            config = msgspec.convert(merged, FaultConfig)
        except msgspec.ValidationError as exc:
            raise FaultError(str(exc)) from exc
        try:
            pattern = (
                re.compile(config.reject_image_pattern) if config.reject_image_pattern else None
            )
        except re.error as exc:
            raise FaultError(f"invalid reject_image_pattern: {exc}") from exc

        now = self._clock()
        self._config = config
        self._pattern = pattern
        if "unavailable_for_seconds" in patch:
            self._unavailable_until = now + config.unavailable_for_seconds
        if "hang_for_seconds" in patch:
            self._hang_until = now + config.hang_for_seconds
        if "max_creations_per_second" in patch:
            self._reset_bucket(now)
        if self._hanging(now):
            if self._release.is_set():
                self._release = asyncio.Event()
        else:
            self._release.set()

    def clear(self) -> None:
        """Turn every fault off and answer every hung request."""
        self._config = FaultConfig()
        self._pattern = None
        self._unavailable_until = 0.0
        self._hang_until = 0.0
        self._release.set()

    def release_hung(self) -> None:
        """Answer requests that are hanging now (server shutdown) without changing config."""
        self._release.set()

    def snapshot(self) -> dict[str, Any]:
        """The config plus how long the timed faults still last."""
        now = self._clock()
        return {
            **msgspec.structs.asdict(self._config),
            "unavailable_remaining_seconds": max(0.0, self._unavailable_until - now),
            "hang_remaining_seconds": max(0.0, self._hang_until - now),
        }

    async def delay(self) -> None:
        """Apply the hang and latency faults to one /v1 call."""
        release = self._release
        if not release.is_set():
            if self._config.hang:
                await release.wait()
            else:
                remaining = self._hang_until - self._clock()
                if remaining > 0:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(remaining):
                            await release.wait()
        if self._config.latency_ms > 0:
            await asyncio.sleep(self._config.latency_ms / 1000)

    def outage(self) -> Outage | None:
        """Whether this /v1 call is answered with an error instead of being handled."""
        remaining = self._unavailable_until - self._clock()
        if remaining > 0:
            return Outage(503, "controller unavailable (injected)", retry_after=remaining)
        if self._config.error_rate > 0 and self._rng() < self._config.error_rate:
            return Outage(500, "internal error (injected)")
        return None

    def rejected_image(self, images: Iterable[tuple[str, str]]) -> tuple[str, str] | None:
        """The first ``(task, image)`` whose image matches the reject pattern."""
        if self._pattern is None:
            return None
        for task, image in images:
            if self._pattern.search(image):
                return task, image
        return None

    def creation_wait(self) -> float | None:
        """None when a creation may proceed (consuming a token), else seconds to wait."""
        rate = self._config.max_creations_per_second
        if rate is None:
            return None
        now = self._clock()
        # Token bucket holding one second's worth of creations, so bursts stay bounded.
        capacity = max(1.0, rate)
        self._tokens = min(capacity, self._tokens + (now - self._refilled_at) * rate)
        self._refilled_at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return None
        return (1.0 - self._tokens) / rate

    def _hanging(self, now: float) -> bool:
        return self._config.hang or self._hang_until > now

    def _reset_bucket(self, now: float) -> None:
        rate = self._config.max_creations_per_second
        self._tokens = max(1.0, rate) if rate is not None else 0.0
        self._refilled_at = now


def retry_after_header(seconds: float | None) -> dict[str, str]:
    """A Retry-After header in whole seconds (at least 1), or nothing."""
    if seconds is None:
        return {}
    return {"Retry-After": str(max(1, math.ceil(seconds)))}
