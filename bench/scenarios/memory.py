"""Scenario 8: peak memory of each AIMTP process over the scenarios that ran before it."""

from __future__ import annotations

from typing import Final

from bench.report import Load, ScenarioResult, Target
from bench.scenarios.base import Context, Scenario

SOURCES: Final = ("submit", "submit_latency", "relay_drain", "outbox_lag", "e2e", "burst")
# The processes AIMTP deploys. The reference Controller is a test double that keeps every
# workload in memory; it is reported, but the target is not about it.
DEPLOYED: Final = ("server", "relay", "trigger", "watcher")


def _load(quick: bool) -> Load:
    return Load(
        offered="the loads of scenarios 1-6",
        duration="their durations",
        concurrency="each process as started by those scenarios",
    )


async def _run(ctx: Context, result: ScenarioResult) -> None:
    peaks: dict[str, tuple[float, str]] = {}
    for scenario, stats in ctx.process_stats:
        if scenario not in SOURCES or stats.peak_rss_mb is None:
            continue
        best = peaks.get(stats.name)
        if best is None or stats.peak_rss_mb > best[0]:
            peaks[stats.name] = (stats.peak_rss_mb, scenario)
    deployed = [peaks[name][0] for name in DEPLOYED if name in peaks]
    if not deployed:
        raise RuntimeError("no AIMTP process of scenarios 1-6 ran in this invocation")
    result.figures["max_rss_mb"] = round(max(deployed), 1)
    for name in (*DEPLOYED, "controller-sim"):
        if name in peaks:
            result.figures[f"{name.replace('-', '_')}_mb"] = round(peaks[name][0], 1)
    result.details.update(
        {
            "peak_in_scenario": {name: scenario for name, (_, scenario) in peaks.items()},
            "not_run": [name for name in DEPLOYED if name not in peaks],
            "excluded_from_target": {"controller-sim": "reference Controller, not deployed"},
        }
    )


MEMORY = Scenario(
    name="memory",
    title="Peak RSS of each AIMTP process during scenarios 1-6",
    method=(
        "VmHWM (peak resident set) from /proc/PID/status of every process, read just before "
        "it is stopped at the end of its scenario; per process the maximum over scenarios "
        "1-6 of this run; max_rss_mb = the largest of server, relay, trigger, watcher."
    ),
    targets=(Target("memory.max_rss_mb", "<=", 150),),
    load=_load,
    run=_run,
)
