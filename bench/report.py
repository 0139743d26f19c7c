"""Scenario results, their targets, the printed table and the JSON files.

Everything here is pure (no services), so the unit tests check it on synthetic data.
"""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

Figure = float | int | None

_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    "==": operator.eq,
}


@dataclass(frozen=True)
class Target:
    """A goal for one figure, e.g. ``submit.ratio >= 0.5``."""

    key: str
    op: str
    threshold: float

    def __post_init__(self) -> None:
        if self.op not in _OPERATORS:
            raise ValueError(f"unknown operator {self.op!r}")

    def check(self, value: Figure) -> bool | None:
        """True or False; None when the figure was not measured (never a silent pass)."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return None
        return _OPERATORS[self.op](float(value), self.threshold)

    def describe(self) -> str:
        return f"{self.op} {_number(self.threshold)}"


@dataclass(frozen=True)
class Load:
    """What a scenario offers the system: stated before it runs, stored with its figures."""

    offered: str
    """e.g. "300 req/s, open loop" or "as fast as possible (closed loop)"."""
    duration: str
    concurrency: str

    def as_dict(self) -> dict[str, str]:
        return {"offered": self.offered, "duration": self.duration, "concurrency": self.concurrency}

    def short(self) -> str:
        return f"{self.offered}; {self.duration}; {self.concurrency}"


@dataclass
class ScenarioResult:
    """The outcome of one scenario: headline figures, targets, and everything else measured."""

    name: str
    title: str
    load: Load
    method: str
    """How the figures are computed, in a sentence or two."""
    figures: dict[str, Figure] = field(default_factory=dict)
    """Headline figures by short key (``ratio``); the full key is ``name.ratio``."""
    targets: list[Target] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    """Set when the scenario could not complete; its figures are then partial."""

    def key(self, figure: str) -> str:
        return f"{self.name}.{figure}"

    def value(self, key: str) -> Figure:
        prefix = f"{self.name}."
        return self.figures.get(key.removeprefix(prefix)) if key.startswith(prefix) else None

    def verdicts(self) -> dict[str, bool | None]:
        return {t.key: t.check(self.value(t.key)) for t in self.targets}

    def as_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "load": self.load.as_dict(),
            "method": self.method,
            "figures": dict(self.figures),
            "targets": {
                t.key: {
                    "target": t.describe(),
                    "value": self.value(t.key),
                    "pass": t.check(self.value(t.key)),
                }
                for t in self.targets
            },
            "details": self.details,
            "error": self.error,
        }


def _number(value: float) -> str:
    if isinstance(value, int) or float(value).is_integer():
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"


def format_value(key: str, value: Figure) -> str:
    """A figure with the unit its key names (``_ms``, ``_s``, ``_per_s``, ``_mb``, ratios)."""
    if value is None:
        return "n/a"
    if key.endswith("_ms"):
        return f"{_number(value)} ms"
    if key.endswith(("_per_s", "_rps")):
        return f"{_number(value)}/s"
    if key.endswith("_s"):
        return f"{_number(value)} s"
    if key.endswith("_mb"):
        return f"{_number(value)} MB"
    if key.endswith("ratio"):
        return f"{value:.2f}x"
    return _number(value)


def verdict_text(verdict: bool | None, has_target: bool) -> str:
    if not has_target:
        return ""
    return {True: "PASS", False: "FAIL", None: "n/a"}[verdict]


def table_rows(results: Iterable[ScenarioResult]) -> list[list[str]]:
    """One row per figure: targets first (in their order), then the other figures."""
    rows: list[list[str]] = []
    for result in results:
        targets = {t.key: t for t in result.targets}
        ordered = [t.key.removeprefix(f"{result.name}.") for t in result.targets]
        ordered += [k for k in result.figures if k not in ordered]
        first = True
        for short in ordered:
            key = result.key(short)
            target = targets.get(key)
            value = result.figures.get(short)
            rows.append(
                [
                    result.name if first else "",
                    result.load.offered if first else "",
                    key,
                    format_value(key, value),
                    target.describe() if target else "",
                    verdict_text(target.check(value) if target else None, target is not None),
                ]
            )
            first = False
        if result.error is not None:
            rows.append(["", "", f"{result.name} error", result.error[:60], "", "FAIL"])
        elif not ordered:
            rows.append([result.name, result.load.offered, "(no figures)", "", "", ""])
    return rows


HEADER = ["scenario", "offered load", "figure", "value", "target", "result"]


def render_table(results: Iterable[ScenarioResult]) -> str:
    rows = [HEADER, *table_rows(results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    out = [line]
    for index, row in enumerate(rows):
        out.append(
            "| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) + " |"
        )
        if index == 0:
            out.append(line.replace("-", "="))
    out.append(line)
    return "\n".join(out)


def summary(results: Iterable[ScenarioResult]) -> dict[str, int]:
    """How many targets passed, failed, or could not be judged."""
    counts = {"pass": 0, "fail": 0, "n/a": 0}
    for result in results:
        for verdict in result.verdicts().values():
            counts[verdict_text(verdict, True).lower()] += 1
    return counts


def build_document(
    *,
    run: Mapping[str, Any],
    machine: Mapping[str, Any],
    versions: Mapping[str, Any],
    stack: Mapping[str, Any],
    results: Iterable[ScenarioResult],
) -> dict[str, Any]:
    """The JSON written to ``bench/results``: scenario -> figures, plus the context to judge
    them by (machine, versions, settings), and flat ``scenario.figure`` keys for diffing."""
    results = list(results)
    flat: dict[str, Figure] = {}
    targets: dict[str, Any] = {}
    for result in results:
        for short, value in result.figures.items():
            flat[result.key(short)] = value
        for target in result.targets:
            value = result.value(target.key)
            targets[target.key] = {
                "target": target.describe(),
                "value": value,
                "pass": target.check(value),
            }
    return {
        "run": dict(run),
        "machine": dict(machine),
        "versions": dict(versions),
        "stack": dict(stack),
        "scenarios": {result.name: result.as_dict() for result in results},
        "figures": flat,
        "targets": targets,
        "summary": summary(results),
    }


def run_id(moment: datetime) -> str:
    """``YYYY-MM-DDTHH-MM-SS`` in UTC: sortable, and safe in file names."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H-%M-%S")


def write_results(document: Mapping[str, Any], directory: Path, identifier: str) -> list[Path]:
    """Write ``latest.json`` and the dated copy; returns both paths."""
    directory.mkdir(parents=True, exist_ok=True)
    text = json.dumps(document, indent=2, sort_keys=False, default=str) + "\n"
    paths = [directory / "latest.json", directory / f"{identifier}.json"]
    for path in paths:
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return paths
