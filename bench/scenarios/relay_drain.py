"""Scenario 3: one relay drains a backlog of outbox rows, vs aiokafka producing the same records."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from aimtp.ids import new_id
from aimtp.settings import KafkaSettings, RelaySettings
from bench.baselines import raw_produce, records_of
from bench.dags import OUTBOX_COLUMNS, RowFactory, insert_sql, naive_utc_now
from bench.db import execute, scalar
from bench.report import Load, ScenarioResult, Target
from bench.scenarios.base import Context, CpuWindow, Scenario, wait_for
from bench.stack import TENANT, create_topics
from bench.stats import ratio
from outbox.main import create_producer

_CHUNK = 1000


@dataclass(frozen=True)
class Params:
    rows: int
    timeout: float


PARAMS = {False: Params(rows=100_000, timeout=600), True: Params(rows=10_000, timeout=120)}


def _load(quick: bool) -> Load:
    p = PARAMS[quick]
    return Load(
        offered=f"{p.rows:,} pending outbox rows at once",
        duration="until drained",
        concurrency="1 relay (defaults: batch 500); baseline: 1 aiokafka producer",
    )


async def insert_backlog(ctx: Context, rows: list[dict[str, Any]]) -> None:
    """All rows in ONE transaction, so they become visible to the relay at the same instant."""
    conn = await ctx.db.connect(autocommit=False)
    try:
        for start in range(0, len(rows), _CHUNK):
            chunk = rows[start : start + _CHUNK]
            args = [row[c] for row in chunk for c in OUTBOX_COLUMNS]
            await execute(conn, insert_sql("outbox", OUTBOX_COLUMNS, rows=len(chunk)), args)
        await conn.commit()
    finally:
        await conn.ensure_closed()


async def _run(ctx: Context, result: ScenarioResult) -> None:
    p = PARAMS[ctx.quick]
    factory = RowFactory(TENANT)
    now = naive_utc_now()
    # One DAG per row, like a backlog of submissions: every row is its own key.
    rows = [factory.outbox_row(new_id(), now) for _ in range(p.rows)]
    async with ctx.stack(result, ["relay"]) as stack:
        await stack.wait_relay_active()
        await insert_backlog(ctx, rows)
        started = time.monotonic()
        poll = await ctx.db.connect()
        try:

            async def drained() -> bool:
                pending = await scalar(
                    poll, "SELECT 1 FROM outbox WHERE status = 'pending' LIMIT 1"
                )
                return pending is None

            async with CpuWindow(stack) as cpu:
                await wait_for(drained, timeout=p.timeout, interval=0.02, what="relay drain")
            drain_s = time.monotonic() - started
            published = await scalar(poll, "SELECT COUNT(*) FROM outbox WHERE status = 'published'")
        finally:
            await poll.ensure_closed()

    # The baseline: the same records through a producer configured exactly like the relay's.
    kafka = KafkaSettings(kafka_bootstrap=ctx.environment.kafka_bootstrap)
    topic = f"aimtp.bench.{ctx.environment.run_id.lower().replace('t', '-')}.raw-produce"
    await create_topics(ctx.environment, [topic])
    producer = create_producer(kafka, RelaySettings())
    await producer.start()
    try:
        raw_s = await raw_produce(producer, topic, records_of(rows))
    finally:
        await producer.stop()

    relay_rate = p.rows / drain_s
    raw_rate = p.rows / raw_s
    result.figures.update(
        {
            "events_per_s": round(relay_rate, 1),
            "raw_events_per_s": round(raw_rate, 1),
            "ratio": round(ratio(relay_rate, raw_rate), 3),
            "drain_s": round(drain_s, 3),
        }
    )
    result.details.update(
        {
            "rows": p.rows,
            "published": int(published),
            "payload_bytes": len(rows[0]["payload"]),
            "raw_produce_s": round(raw_s, 3),
            "cpu": cpu.as_dict(),
        }
    )


RELAY_DRAIN = Scenario(
    name="relay_drain",
    title="Relay drain vs aiokafka producing the same records",
    method=(
        "rows of distinct DAGs (payload, key, headers as the API writes them) are committed "
        "in one transaction while one relay idles as leader; drain_s = commit .. no pending "
        "row left (polled every 20 ms); events_per_s = rows / drain_s. raw_events_per_s = "
        "the same records (key, value, headers) sent back to back through aiokafka with the "
        "relay's own producer settings (acks=all, idempotent, linger 2 ms, 512 KiB batches) "
        "until every ack; ratio = events_per_s / raw_events_per_s."
    ),
    targets=(
        Target("relay_drain.events_per_s", ">=", 10_000),
        Target("relay_drain.ratio", ">=", 0.4),
    ),
    load=_load,
    run=_run,
)
