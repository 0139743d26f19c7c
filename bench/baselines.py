"""Raw baselines, measured in the same run as the product: the ceiling each ratio is against.

- ``raw_submit``: the submission's database transaction straight through asyncmy, at the
  same concurrency, without HTTP, validation, SQLAlchemy or the pool.
- ``raw_produce``: the relay's Kafka records straight through aiokafka with the relay's
  own producer settings, without the database round trips.
"""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer

from bench.dags import DAG_COLUMNS, OUTBOX_COLUMNS, RowFactory, insert_sql, record_headers
from bench.db import Database
from bench.stats import LatencySummary

_INSERT_DAG = insert_sql("dags", DAG_COLUMNS)
_INSERT_OUTBOX = insert_sql("outbox", OUTBOX_COLUMNS)
_LABEL_COLUMNS = ("tenant", "label_key", "label_value", "created_at", "dag_id")
_INSERT_TRANSITION = insert_sql(
    "dag_transitions",
    ("dag_id", "from_state", "to_state", "attempt", "actor", "reason", "created_at"),
)


@dataclass(frozen=True)
class RawOutcome:
    transactions: int
    seconds: float
    latency: LatencySummary | None
    client_cores: float
    """CPU the benchmark process itself used, in cores: near 1.0 means the baseline was
    limited by its own Python client, so the real ceiling is higher (a conservative ratio)."""

    @property
    def per_second(self) -> float:
        return self.transactions / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "transactions": self.transactions,
            "seconds": round(self.seconds, 3),
            "per_second": round(self.per_second, 1),
            "latency": None if self.latency is None else self.latency.as_dict(),
            "client_cores": round(self.client_cores, 2),
        }


async def raw_submit(
    db: Database,
    factory: RowFactory,
    *,
    concurrency: int,
    duration: float,
    warmup: float,
    full_rows: bool = False,
) -> RawOutcome:
    """Closed loop of ``concurrency`` connections, each committing submissions back to back.

    Only transactions that start after the warm-up and commit before the end count; the
    rate is their number over the measured window. ``full_rows`` adds what the API's
    transaction also writes (two label rows, the history row), for analysis.
    """
    conns = [await db.connect(autocommit=False) for _ in range(concurrency)]
    loop = asyncio.get_running_loop()
    start = loop.time() + warmup
    end = start + duration
    latencies: list[float] = []
    insert_labels = insert_sql("dag_labels", _LABEL_COLUMNS, rows=len(factory.spec.labels))

    async def worker(conn: Any) -> None:
        while (began := loop.time()) < end:
            sub = factory.submission()
            async with conn.cursor() as cur:
                await cur.execute(_INSERT_DAG, [sub.dag[c] for c in DAG_COLUMNS])
                if full_rows:
                    await cur.execute(insert_labels, _label_args(factory, sub.dag))
                    await cur.execute(_INSERT_TRANSITION, _transition_args(sub.dag))
                await cur.execute(_INSERT_OUTBOX, [sub.outbox[c] for c in OUTBOX_COLUMNS])
            await conn.commit()
            finished = loop.time()
            if began >= start and finished <= end:
                latencies.append(finished - began)

    cpu_before = _own_cpu()
    try:
        await asyncio.gather(*(worker(conn) for conn in conns))
    finally:
        for conn in conns:
            await conn.ensure_closed()
    return RawOutcome(
        transactions=len(latencies),
        seconds=duration,
        latency=LatencySummary.of_seconds(latencies) if latencies else None,
        client_cores=(_own_cpu() - cpu_before) / (warmup + duration),
    )


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _label_args(factory: RowFactory, dag: dict[str, Any]) -> list[Any]:
    args: list[Any] = []
    for key, value in factory.spec.labels.items():
        args += [dag["tenant"], key, value, dag["created_at"], dag["id"]]
    return args


def _transition_args(dag: dict[str, Any]) -> list[Any]:
    return [dag["id"], None, "PENDING", 1, "server", None, dag["created_at"]]


@dataclass(frozen=True)
class Record:
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


def records_of(outbox_rows: Sequence[dict[str, Any]]) -> list[Record]:
    """The Kafka records the relay produces for these outbox rows."""
    return [
        Record(key=row["dag_id"].encode(), value=row["payload"], headers=record_headers(row))
        for row in outbox_rows
    ]


async def raw_produce(producer: AIOKafkaProducer, topic: str, records: Sequence[Record]) -> float:
    """Seconds to have every record acknowledged, sent back to back (no waves, no DB).

    The producer is started and has the topic's metadata before the clock starts, as the
    relay has by the time it drains a backlog.
    """
    warm = await producer.send(topic, value=b"{}", key=b"warm-up")
    await warm
    started = time.monotonic()
    futures = [
        await producer.send(topic, value=r.value, key=r.key, headers=r.headers) for r in records
    ]
    await asyncio.gather(*futures)
    return time.monotonic() - started
