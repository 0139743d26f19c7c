"""What every scenario is given (``Context``) and what it declares (``Scenario``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from bench import procfs
from bench.db import Database
from bench.report import Load, ScenarioResult, Target
from bench.stack import Environment, ProcessStats, Stack
from bench.vegeta import Vegeta


@dataclass
class Context:
    """Shared by the scenarios of one run."""

    environment: Environment
    db: Database
    vegeta: Vegeta
    quick: bool
    say: Callable[[str], None]
    results: dict[str, ScenarioResult] = field(default_factory=dict)
    process_stats: list[tuple[str, ProcessStats]] = field(default_factory=list)
    """(scenario, stats) of every AIMTP process stopped so far: the memory scenario's input."""
    stack_settings: dict[str, Any] = field(default_factory=dict)
    """The settings of each scenario's stack, for the results file."""

    @asynccontextmanager
    async def stack(
        self,
        result: ScenarioResult,
        processes: Sequence[str],
        *,
        env: Mapping[str, tuple[str, str]] | None = None,
        sim_args: Sequence[str] = (),
    ) -> AsyncIterator[Stack]:
        """Start the scenario's processes; on exit stop them and record what they cost."""
        stack = Stack(self.environment, result.name, processes, env=env, sim_args=sim_args)
        self.stack_settings[result.name] = stack.settings()
        try:
            await stack.start()
            yield stack
        finally:
            stats = await stack.stop()
            for process in stats.values():
                self.process_stats.append((result.name, process))
            result.details["processes"] = {
                name: {
                    "peak_rss_mb": _round(s.peak_rss_mb),
                    "cpu_seconds": _round(s.cpu_seconds),
                    "exit_code": s.exit_code,
                }
                for name, s in stats.items()
            }


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


@dataclass(frozen=True)
class Scenario:
    """A scenario's contract: what it offers, how it computes its figures, its targets."""

    name: str
    title: str
    method: str
    targets: tuple[Target, ...]
    load: Callable[[bool], Load]
    """The offered load, duration and concurrency, given ``quick``."""
    run: Callable[[Context, ScenarioResult], Awaitable[None]]

    def new_result(self, quick: bool) -> ScenarioResult:
        return ScenarioResult(
            name=self.name,
            title=self.title,
            load=self.load(quick),
            method=self.method,
            targets=list(self.targets),
        )


@dataclass
class CpuWindow:
    """CPU used by the stack's processes and by the whole machine over a window."""

    stack: Stack
    machine_busy_pct: float | None = None
    process_cpu_s: dict[str, float | None] = field(default_factory=dict)
    seconds: float = 0.0

    async def __aenter__(self) -> CpuWindow:
        self._machine = procfs.machine_cpu()
        self._processes = self.stack.cpu_seconds()
        self._started = time.monotonic()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.seconds = time.monotonic() - self._started
        self.machine_busy_pct = procfs.busy_percent(self._machine, procfs.machine_cpu())
        after = self.stack.cpu_seconds()
        for name, before in self._processes.items():
            now = after.get(name)
            self.process_cpu_s[name] = (
                None if before is None or now is None else round(now - before, 2)
            )

    def as_dict(self) -> dict[str, Any]:
        """CPU figures as shares of one core, plus the machine's busy share (all cores)."""
        cores = {
            name: None if cpu is None or not self.seconds else round(cpu / self.seconds, 2)
            for name, cpu in self.process_cpu_s.items()
        }
        return {
            "window_s": round(self.seconds, 2),
            "machine_busy_pct": _round(self.machine_busy_pct),
            "process_cores": cores,
        }


async def wait_for(
    check: Callable[[], Awaitable[bool]], *, timeout: float, interval: float, what: str
) -> float:
    """Poll ``check`` until true; the seconds it took. TimeoutError names ``what``."""
    started = time.monotonic()
    while True:
        if await check():
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{what}: not reached within {timeout:g}s")
        await asyncio.sleep(interval)
