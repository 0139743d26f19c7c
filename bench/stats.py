"""The arithmetic behind every figure: percentiles, rates and ratios, kept pure for tests."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0..100) by linear interpolation between closest ranks.

    The same definition as numpy's default ("type 7"), so figures can be re-checked with
    any common tool. Raises ``ValueError`` on an empty sample: a percentile of nothing
    must never turn into a zero that looks like a result.
    """
    if not values:
        raise ValueError("percentile of an empty sample")
    if not 0 <= p <= 100:
        raise ValueError(f"percentile must be within 0..100, got {p}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = math.floor(rank)
    high = math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class LatencySummary:
    """Latency percentiles of one sample, in milliseconds."""

    count: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float

    @classmethod
    def of_seconds(cls, seconds: Iterable[float]) -> LatencySummary:
        millis = sorted(s * 1000 for s in seconds)
        if not millis:
            raise ValueError("latency summary of an empty sample")
        return cls(
            count=len(millis),
            p50_ms=percentile(millis, 50),
            p90_ms=percentile(millis, 90),
            p99_ms=percentile(millis, 99),
            max_ms=millis[-1],
            mean_ms=sum(millis) / len(millis),
        )

    def as_dict(self) -> dict[str, float]:
        return {
            "count": self.count,
            "p50_ms": round(self.p50_ms, 3),
            "p90_ms": round(self.p90_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "max_ms": round(self.max_ms, 3),
            "mean_ms": round(self.mean_ms, 3),
        }


def rate(count: int, seconds: float) -> float:
    """Events per second; a window of no length has no rate."""
    if seconds <= 0:
        raise ValueError(f"rate over a window of {seconds}s")
    return count / seconds


def ratio(measured: float, baseline: float) -> float:
    """``measured / baseline``; a baseline of zero cannot anchor a ratio."""
    if baseline <= 0:
        raise ValueError(f"ratio against a baseline of {baseline}")
    return measured / baseline
