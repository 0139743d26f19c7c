"""Trigger throughput: one aimtp-trigger against a Controller that takes 200 ms per call."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from typing import Final

from bench.db import fetch
from bench.report import Load, ScenarioResult, Target
from bench.scenarios.base import Context, CpuWindow, Scenario, wait_for
from bench.scenarios.e2e import ALL_PROCESSES
from bench.scenarios.e2e import SIM_ARGS as SLOW_TASKS
from bench.scenarios.pipeline import accepted, submit_target, warm_pipeline
from bench.stack import Stack
from bench.vegeta import Attack

CONTROLLER_LATENCY_MS: Final = 200
SIM_ARGS: Final = (*SLOW_TASKS, "--latency-ms", str(CONTROLLER_LATENCY_MS))


@dataclass(frozen=True)
class Params:
    count: int
    rate: float
    settle: float
    """Longest wait after the resume for the last DAG to reach RUNNING."""


# The backlog is built while the trigger is paused (SIGSTOP), shorter than its consumer
# group's 10 s session timeout so that it keeps its partitions, then drained with the
# server idle: the figure is the trigger's own pace, not the share of two cores it gets
# while the server takes submissions beside it.
PARAMS = {
    False: Params(count=1_500, rate=300, settle=90),
    True: Params(count=600, rate=300, settle=60),
}


# When each DAG reached RUNNING (the table holds this scenario's transitions only): the
# trigger records it once the Controller's PUT answered, or the Controller's "Running"
# callback, sent after it created the workload, got there first.
_RUNNING_AT = (
    "SELECT dag_id, UNIX_TIMESTAMP(MIN(created_at)) FROM dag_transitions "
    "WHERE to_state = 'RUNNING' GROUP BY dag_id"
)


def _load(quick: bool) -> Load:
    p = PARAMS[quick]
    return Load(
        offered=f"a backlog of {p.count:,} DAGs; every Controller call takes "
        f"{CONTROLLER_LATENCY_MS} ms",
        duration="until every DAG is RUNNING",
        concurrency="one trigger process (defaults), server, relay, watcher",
    )


async def _running_times(ctx: Context) -> dict[str, float]:
    conn = await ctx.db.connect()
    try:
        return {row[0]: float(row[1]) for row in await fetch(conn, _RUNNING_AT)}
    finally:
        await conn.ensure_closed()


async def _published(stack: Stack) -> bool:
    return await stack.metric("relay", "aimtp_outbox_pending_rows") == 0


async def _run(ctx: Context, result: ScenarioResult) -> None:
    p = PARAMS[ctx.quick]
    async with ctx.stack(result, ALL_PROCESSES, sim_args=SIM_ARGS) as stack:
        await warm_pipeline(stack, timeout=90)
        before = set(await _running_times(ctx))
        trigger = stack.processes["trigger"]
        os.kill(trigger.pid, signal.SIGSTOP)
        try:
            outcome = await ctx.vegeta.attack(
                Attack("trigger", [submit_target(stack)], rate=p.rate, duration=p.count / p.rate)
            )
            await wait_for(
                lambda: _published(stack), timeout=5, interval=0.2, what="the backlog published"
            )
        finally:
            os.kill(trigger.pid, signal.SIGCONT)
        resumed = time.time()
        ids = accepted(outcome)
        running: dict[str, float] = {}

        async def all_running() -> bool:
            running.update(
                (dag_id, at)
                for dag_id, at in (await _running_times(ctx)).items()
                if dag_id not in before
            )
            return all(dag_id in running for dag_id in ids)

        async with CpuWindow(stack) as cpu:
            # Past the settle time, what has not started is reported as missing.
            with contextlib.suppress(TimeoutError):
                await wait_for(all_running, timeout=p.settle, interval=0.5, what="RUNNING")
    times = sorted(running[dag_id] for dag_id in ids if dag_id in running)
    drain_s = times[-1] - resumed if times else 0.0
    result.figures.update(
        {
            "dags_per_s": round(len(times) / drain_s, 1) if drain_s > 0 else None,
            "missing": sum(1 for dag_id in ids if dag_id not in running),
            "errors": outcome.errors(202),
        }
    )
    result.details.update(
        {
            "accepted": len(ids),
            "drain_s": round(drain_s, 2),
            "controller_latency_ms": CONTROLLER_LATENCY_MS,
            "cpu": cpu.as_dict(),
        }
    )


TRIGGER = Scenario(
    name="trigger",
    title="Trigger throughput against a 200 ms Controller",
    method=(
        "the reference Controller adds 200 ms to every call; the trigger is paused "
        "(SIGSTOP) while the backlog is submitted and published, then resumed (SIGCONT); "
        "dags_per_s = n / (time the last of the n accepted DAGs reached RUNNING - resume "
        "time), RUNNING being recorded when the PUT answered or the workload's first "
        "callback arrived. A trigger calling one DAG at a time would reach 5/s."
    ),
    targets=(
        Target("trigger.dags_per_s", ">=", 100),
        Target("trigger.missing", "==", 0),
        Target("trigger.errors", "==", 0),
    ),
    load=_load,
    run=_run,
)
