"""Scenario 5: from the client's 202 to the Controller's PUT, the whole pipeline running."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Final

from bench.report import Load, ScenarioResult, Target
from bench.scenarios.base import Context, CpuWindow, Scenario, wait_for
from bench.scenarios.pipeline import accepted, first_puts, submit_target, warm_pipeline
from bench.stats import LatencySummary
from bench.vegeta import Attack

ALL_PROCESSES: Final = ("server", "controller-sim", "relay", "trigger", "watcher")
# Simulated tasks run 60x their annotated seconds, so every DAG is still running when the
# scenario ends: like real training runs, each reports "Running" once and nothing more
# within the window, instead of a burst of completion callbacks no real workload sends.
SIM_ARGS: Final = ("--time-scale", "60")


@dataclass(frozen=True)
class Params:
    rate: float
    duration: float
    settle: float
    """Longest wait after the load for the last PUT."""


PARAMS = {
    False: Params(rate=300, duration=30, settle=90),
    True: Params(rate=300, duration=5, settle=60),
}


def _load(quick: bool) -> Load:
    p = PARAMS[quick]
    return Load(
        offered=f"{p.rate:g} DAGs/s, open loop",
        duration=f"{p.duration:g} s (after one warm-up DAG went through)",
        concurrency="server, relay, trigger, watcher, reference Controller (defaults)",
    )


async def _run(ctx: Context, result: ScenarioResult) -> None:
    p = PARAMS[ctx.quick]
    async with ctx.stack(result, ALL_PROCESSES, sim_args=SIM_ARGS) as stack:
        warm_s = await warm_pipeline(stack)
        async with CpuWindow(stack) as cpu:
            outcome = await ctx.vegeta.attack(
                Attack("e2e", [submit_target(stack)], rate=p.rate, duration=p.duration)
            )
        ids = accepted(outcome)
        puts: dict[str, float] = {}

        async def all_delivered() -> bool:
            puts.update(await first_puts(stack))
            return all(dag_id in puts for dag_id in ids)

        # Past the settle time, what has not arrived is reported as missing.
        with contextlib.suppress(TimeoutError):
            await wait_for(all_delivered, timeout=p.settle, interval=1.0, what="every PUT")
    delays = [puts[dag_id] - at for dag_id, at in ids.items() if dag_id in puts]
    missing = sum(1 for dag_id in ids if dag_id not in puts)
    e2e = LatencySummary.of_seconds(delays)
    result.figures.update(
        {
            "p50_ms": round(e2e.p50_ms, 1),
            "p99_ms": round(e2e.p99_ms, 1),
            "max_ms": round(e2e.max_ms, 1),
            "missing": missing,
            "sent_rps": round(outcome.sent_rate(), 1),
            "accepted_rps": round(outcome.throughput(202), 1),
            "api_p99_ms": round(outcome.latency().p99_ms, 2),
            "errors": outcome.errors(202),
        }
    )
    result.details.update(
        {
            "accepted": len(ids),
            "e2e": e2e.as_dict(),
            "api_latency": outcome.latency().as_dict(),
            "statuses": outcome.status_counts(),
            "warm_up_dag_s": round(warm_s, 2),
            "cpu": cpu.as_dict(),
        }
    )


E2E = Scenario(
    name="e2e",
    title="End to end: HTTP 202 -> Controller PUT",
    method=(
        "per DAG: wall time of the reference Controller's first PUT (/admin/first-put) "
        "minus the wall time vegeta received the 202 (send time + latency), same machine "
        "clock; missing = accepted DAGs with no PUT within the settle time."
    ),
    targets=(
        Target("e2e.p99_ms", "<=", 300),
        Target("e2e.missing", "==", 0),
        Target("e2e.errors", "==", 0),
    ),
    load=_load,
    run=_run,
)
