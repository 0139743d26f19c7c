"""Scenario 4: how long a submission's event waits in the outbox under steady load."""

from __future__ import annotations

from dataclasses import dataclass

from bench.db import fetch, scalar
from bench.report import Load, ScenarioResult, Target
from bench.scenarios.base import Context, CpuWindow, Scenario, wait_for
from bench.scenarios.pipeline import accepted, submit_target
from bench.stats import LatencySummary
from bench.vegeta import Attack


@dataclass(frozen=True)
class Params:
    rate: float
    duration: float
    warmup: float


PARAMS = {
    False: Params(rate=500, duration=60, warmup=3),
    True: Params(rate=500, duration=5, warmup=1),
}

# The dag.submitted event of every submission the measured attack got a 202 for.
_DELAYS = """SELECT TIMESTAMPDIFF(MICROSECOND, created_at, published_at)
FROM outbox
WHERE event_type = 'dag.submitted' AND status = 'published' AND dag_id IN ({marks})"""
_CHUNK = 1000


def _load(quick: bool) -> Load:
    p = PARAMS[quick]
    return Load(
        offered=f"{p.rate:g} submissions/s, open loop",
        duration=f"{p.duration:g} s (after {p.warmup:g} s warm-up)",
        concurrency="server + 1 relay (defaults)",
    )


async def _run(ctx: Context, result: ScenarioResult) -> None:
    p = PARAMS[ctx.quick]
    async with ctx.stack(result, ["server", "relay"]) as stack:
        await stack.wait_relay_active()
        target = submit_target(stack)
        await ctx.vegeta.attack(Attack("lag-warmup", [target], rate=p.rate, duration=p.warmup))
        async with CpuWindow(stack) as cpu:
            outcome = await ctx.vegeta.attack(
                Attack("lag", [target], rate=p.rate, duration=p.duration)
            )
        ids = list(accepted(outcome))
        conn = await ctx.db.connect()
        try:

            async def drained() -> bool:
                row = await scalar(conn, "SELECT 1 FROM outbox WHERE status = 'pending' LIMIT 1")
                return row is None

            await wait_for(drained, timeout=120, interval=0.1, what="outbox drained")
            delays: list[float] = []
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                sql = _DELAYS.format(marks=", ".join(["%s"] * len(chunk)))
                delays += [int(row[0]) / 1e6 for row in await fetch(conn, sql, chunk)]
        finally:
            await conn.ensure_closed()
    lag = LatencySummary.of_seconds(delays)
    api = outcome.latency()
    result.figures.update(
        {
            "p50_ms": round(lag.p50_ms, 2),
            "p99_ms": round(lag.p99_ms, 2),
            "max_ms": round(lag.max_ms, 2),
            "sent_rps": round(outcome.sent_rate(), 1),
            "accepted_rps": round(outcome.throughput(202), 1),
            "api_p99_ms": round(api.p99_ms, 2),
            "errors": outcome.errors(202),
        }
    )
    result.details.update(
        {
            "events": lag.count,
            "unpublished": len(ids) - lag.count,
            "lag": lag.as_dict(),
            "api_latency": api.as_dict(),
            "statuses": outcome.status_counts(),
            "cpu": cpu.as_dict(),
        }
    )


OUTBOX_LAG = Scenario(
    name="outbox_lag",
    title="Outbox lag (created -> acknowledged) under steady submissions",
    method=(
        "published_at - created_at of the dag.submitted row of every submission accepted "
        "(202) during the measured attack, read from the database once the relay drained "
        "(created_at is set by the API before commit, published_at by the relay after the "
        "broker acks); the trigger does not run (it is not on this path)."
    ),
    targets=(
        Target("outbox_lag.p99_ms", "<=", 100),
        Target("outbox_lag.errors", "==", 0),
    ),
    load=_load,
    run=_run,
)
