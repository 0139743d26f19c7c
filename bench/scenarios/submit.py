"""Scenarios 1 and 2: how fast the API takes submissions, and how quickly it answers.

Only aimtp-server runs: the relay and the trigger would compete for the same two cores
and turn the figure into "the machine's share left for the API". What the API costs
with the whole pipeline running is what ``outbox_lag``, ``e2e`` and ``burst`` measure.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.baselines import raw_submit
from bench.dags import RowFactory
from bench.report import Load, ScenarioResult, Target
from bench.scenarios.base import Context, CpuWindow, Scenario
from bench.scenarios.pipeline import submit_target
from bench.stack import TENANT
from bench.stats import ratio
from bench.vegeta import Attack
from bench.vegeta import Target as HttpTarget

CONCURRENCY = 64


# ---------------------------------------------------------------- 1. throughput


@dataclass(frozen=True)
class ThroughputParams:
    duration: float
    warmup: float
    generator_check: float
    raw_full_duration: float


THROUGHPUT = {
    False: ThroughputParams(duration=15, warmup=3, generator_check=3, raw_full_duration=5),
    True: ThroughputParams(duration=3, warmup=1, generator_check=1, raw_full_duration=1),
}


def _throughput_load(quick: bool) -> Load:
    p = THROUGHPUT[quick]
    return Load(
        offered="max rate, closed loop",
        duration=f"{p.duration:g} s each (after {p.warmup:g} s warm-up)",
        concurrency=f"{CONCURRENCY} workers / {CONCURRENCY} connections",
    )


async def _throughput(ctx: Context, result: ScenarioResult) -> None:
    p = THROUGHPUT[ctx.quick]
    async with ctx.stack(result, ["server"]) as stack:
        target = submit_target(stack)
        # The generator must outpace the server: its rate against the cheapest endpoint
        # bounds what it could offer to the submit endpoint.
        healthz = await ctx.vegeta.attack(
            Attack(
                "healthz",
                [HttpTarget("GET", f"{stack.api_url}/healthz")],
                rate=0,
                duration=p.generator_check,
                workers=CONCURRENCY,
            )
        )
        await ctx.vegeta.attack(
            Attack("submit-warmup", [target], rate=0, duration=p.warmup, workers=CONCURRENCY)
        )
        async with CpuWindow(stack) as cpu:
            api = await ctx.vegeta.attack(
                Attack("submit", [target], rate=0, duration=p.duration, workers=CONCURRENCY)
            )
        factory = RowFactory(TENANT)
        raw = await raw_submit(
            ctx.db, factory, concurrency=CONCURRENCY, duration=p.duration, warmup=p.warmup
        )
        raw_full = await raw_submit(
            ctx.db,
            factory,
            concurrency=CONCURRENCY,
            duration=p.raw_full_duration,
            warmup=min(1.0, p.warmup),
            full_rows=True,
        )
    api_rps = api.throughput(202)
    healthz_rps = healthz.throughput(200)
    result.figures.update(
        {
            "ratio": round(ratio(api_rps, raw.per_second), 3),
            "api_rps": round(api_rps, 1),
            "raw_rps": round(raw.per_second, 1),
            "api_p99_ms": round(api.latency().p99_ms, 2),
            "errors": api.errors(202),
        }
    )
    generator = {
        "tool": "vegeta",
        "healthz_max_rps": round(healthz_rps, 1),
        "submit_max_rps": round(api_rps, 1),
        "headroom": round(healthz_rps / api_rps, 2) if api_rps else None,
        "vegeta_cores_during_submit": round(api.cpu_seconds / p.duration, 3),
        "outpaces_server": bool(api_rps and healthz_rps > 1.5 * api_rps),
    }
    result.details.update(
        {
            "api": {
                "statuses": api.status_counts(),
                "latency": api.latency().as_dict(),
                "cpu": cpu.as_dict(),
            },
            "raw_two_rows": raw.as_dict(),
            "raw_api_rows": {
                "what": "the API's full write set: dags + 2 dag_labels + history + outbox",
                **raw_full.as_dict(),
            },
            "generator": generator,
        }
    )
    result.figures["raw_api_rows_rps"] = round(raw_full.per_second, 1)


SUBMIT = Scenario(
    name="submit",
    title="Submit throughput vs the raw two-row transaction",
    method=(
        "api_rps = 202 answers / (first request sent .. last answer) from vegeta with "
        f"{CONCURRENCY} workers posting the 5-task DAG; raw_rps = committed transactions "
        "per second of the same dags + outbox rows (same bytes) inserted through asyncmy on "
        f"{CONCURRENCY} connections, no HTTP; ratio = api_rps / raw_rps. raw_api_rows_rps "
        "adds the 2 label rows and the history row the API also writes (for analysis)."
    ),
    targets=(Target("submit.ratio", ">=", 0.5),),
    load=_throughput_load,
    run=_throughput,
)


# ---------------------------------------------------------------- 2. latency


@dataclass(frozen=True)
class LatencyParams:
    rate: float
    duration: float
    warmup: float


LATENCY = {
    False: LatencyParams(rate=300, duration=30, warmup=3),
    True: LatencyParams(rate=300, duration=3, warmup=1),
}


def _latency_load(quick: bool) -> Load:
    p = LATENCY[quick]
    return Load(
        offered=f"{p.rate:g} req/s, open loop",
        duration=f"{p.duration:g} s (after {p.warmup:g} s warm-up)",
        concurrency="as many connections as vegeta needs to keep the schedule",
    )


async def _latency(ctx: Context, result: ScenarioResult) -> None:
    p = LATENCY[ctx.quick]
    async with ctx.stack(result, ["server"]) as stack:
        target = submit_target(stack)
        await ctx.vegeta.attack(Attack("latency-warmup", [target], rate=p.rate, duration=p.warmup))
        async with CpuWindow(stack) as cpu:
            outcome = await ctx.vegeta.attack(
                Attack("latency", [target], rate=p.rate, duration=p.duration)
            )
    latency = outcome.latency()
    result.figures.update(
        {
            "p50_ms": round(latency.p50_ms, 2),
            "p99_ms": round(latency.p99_ms, 2),
            "errors": outcome.errors(202),
            "sent_rps": round(outcome.sent_rate(), 1),
        }
    )
    result.details.update(
        {
            "latency": latency.as_dict(),
            "statuses": outcome.status_counts(),
            "cpu": cpu.as_dict(),
            "vegeta_cpu_seconds": round(outcome.cpu_seconds, 2),
        }
    )


SUBMIT_LATENCY = Scenario(
    name="submit_latency",
    title="Submit latency at a fixed offered load",
    method=(
        "client-side latency of every POST /v1/dags (send to full answer) at a constant "
        "arrival rate, errors included; p50/p99 by linear interpolation; sent_rps checks "
        "the generator kept the schedule."
    ),
    targets=(
        Target("submit_latency.p99_ms", "<=", 25),
        Target("submit_latency.errors", "==", 0),
    ),
    load=_latency_load,
    run=_latency,
)
