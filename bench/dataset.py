"""The listing dataset: many finished DAGs over several tenants, bulk-loaded once and reused.

Loading a million rows takes minutes, so a loaded dataset is kept in the benchmark
database with a fingerprint of everything that shapes it (schema, generator version,
spec, tenants). A later run whose fingerprint matches, and that finds at least as many
rows as it wants, reuses it; anything else drops and reloads. Rows are in terminal
states only, so the watcher of other scenarios never touches them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

import msgspec
from asyncmy.converters import escape_string

from bench.dags import BODY, RowFactory, naive_utc_now, uuid7_at
from bench.db import Database, execute, get_meta, scalar, schema_fingerprint, set_meta

# Bump when the generated rows change shape, so stale datasets are reloaded.
GENERATOR_VERSION: Final = 1
META_KEY: Final = "dataset:list"

TEAMS: Final = ("nlp", "vision", "speech", "recsys", "search", "ads", "robotics", "infra")
PLATFORMS: Final = ("llm-platform", "cv-platform", "ml-core", "batch")
# Finished DAGs only: (state, weight). Terminal rows have no deadline for the watcher.
STATES: Final = (("SUCCEEDED", 70), ("FAILED", 15), ("CANCELLED", 10), ("TIMED_OUT", 5))
_ERRORS: Final = {
    "FAILED": "task 'train' failed: OOMKilled (exit 137)",
    "CANCELLED": None,
    "TIMED_OUT": "the DAG ran longer than its timeout_seconds; workload deleted",
    "SUCCEEDED": None,
}
_ROWS_PER_INSERT: Final = 500
_DAG_COLUMNS: Final = (
    "id, tenant, name, spec, labels, state, version, attempt, deadline_at, timeout_at, "
    "reemits, idempotency_key, request_hash, controller_ref, error, task_phases, status_at, "
    "created_at, updated_at"
)


@dataclass(frozen=True)
class ListDataset:
    tenants: tuple[str, ...]
    per_tenant: int
    days: int = 30
    seed: int = 20240601

    @property
    def rows(self) -> int:
        return len(self.tenants) * self.per_tenant

    def fingerprint(self) -> str:
        """Everything but the size: a bigger dataset of the same shape serves a smaller ask."""
        shape = {
            "generator": GENERATOR_VERSION,
            "schema": schema_fingerprint(),
            "spec": hashlib.sha256(BODY).hexdigest(),
            "tenants": self.tenants,
            "days": self.days,
            "seed": self.seed,
            "teams": TEAMS,
            "platforms": PLATFORMS,
            "states": STATES,
        }
        return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()


def _literal(value: str | None) -> str:
    return "NULL" if value is None else f"'{escape_string(value)}'"


def _time(moment: datetime) -> str:
    return f"'{moment:%Y-%m-%d %H:%M:%S.%f}'"


def _task_phases(created: datetime, state: str) -> str:
    tasks = ("prepare-data", "tokenize", "train", "evaluate", "register-model")
    # An unsuccessful DAG got through its data tasks and ended in training or later.
    phases = {
        name: {
            "phase": "Succeeded" if state == "SUCCEEDED" or i < 2 else "Failed",
            "started_at": f"{created + timedelta(minutes=10 * i):%Y-%m-%dT%H:%M:%SZ}",
            "finished_at": f"{created + timedelta(minutes=10 * i + 9):%Y-%m-%dT%H:%M:%SZ}",
            "message": "",
        }
        for i, name in enumerate(tasks)
    }
    return msgspec.json.encode(phases).decode()


@dataclass(frozen=True)
class _Batch:
    dags: str
    labels: str
    rows: int


class _TenantRows:
    """One tenant's DAG rows, oldest first, from its own seeded generator."""

    def __init__(self, dataset: ListDataset, tenant: str, now: datetime) -> None:
        self.tenant = tenant
        self._rng = random.Random(f"{dataset.seed}:{tenant}")
        self._start = now - timedelta(days=dataset.days)
        self._step = timedelta(days=dataset.days) / dataset.per_tenant
        self._spec = _literal(RowFactory(tenant).spec_json)
        self._phases = {s: _literal(_task_phases(self._start, s)) for s, _ in STATES}
        self._errors = {s: _literal(_ERRORS[s]) for s, _ in STATES}

    def row(self, i: int) -> tuple[str, list[str]]:
        """The ``dags`` VALUES tuple of the i-th DAG and its ``dag_labels`` tuples."""
        rng = self._rng
        created = self._start + self._step * i + timedelta(microseconds=rng.randrange(1000))
        finished = created + timedelta(minutes=50)
        dag_id = uuid7_at(created)
        team = rng.choice(TEAMS)
        state = rng.choices(_STATE_NAMES, _STATE_WEIGHTS)[0]
        labels = {"app.kubernetes.io/part-of": rng.choice(PLATFORMS), "team": team}
        tenant = self.tenant
        dag = (
            f"('{dag_id}','{tenant}','{team}-finetune',{self._spec},"
            f"{_literal(msgspec.json.encode(labels).decode())},'{state}',4,1,NULL,NULL,0,NULL,"
            f"NULL,'wl-{dag_id}',{self._errors[state]},{self._phases[state]},{_time(finished)},"
            f"{_time(created)},{_time(finished)})"
        )
        label_rows = [
            f"('{tenant}','{key}','{value}',{_time(created)},'{dag_id}')"
            for key, value in labels.items()
        ]
        return dag, label_rows


_STATE_NAMES: Final = [state for state, _ in STATES]
_STATE_WEIGHTS: Final = [weight for _, weight in STATES]


def _batches(dataset: ListDataset, now: datetime) -> Iterator[_Batch]:
    """Multi-row INSERT statements in creation-time order across all tenants.

    Time order, as in production, appends to the time-ordered primary key instead of
    splitting pages all over it: a denser table, and a load several times faster.
    """
    tenants = [_TenantRows(dataset, tenant, now) for tenant in dataset.tenants]
    dag_rows: list[str] = []
    label_rows: list[str] = []
    for i in range(dataset.per_tenant):
        for tenant in tenants:
            dag, labels = tenant.row(i)
            dag_rows.append(dag)
            label_rows += labels
        if len(dag_rows) >= _ROWS_PER_INSERT or i == dataset.per_tenant - 1:
            yield _Batch(
                dags=f"INSERT INTO dags ({_DAG_COLUMNS}) VALUES " + ",".join(dag_rows),
                labels="INSERT INTO dag_labels (tenant, label_key, label_value, created_at, "
                "dag_id) VALUES " + ",".join(label_rows),
                rows=len(dag_rows),
            )
            dag_rows, label_rows = [], []


async def _present(db: Database, dataset: ListDataset) -> int | None:
    """Rows of a matching dataset already loaded, or None when it must be (re)loaded."""
    conn = await db.connect()
    try:
        raw = await get_meta(conn, META_KEY)
        if raw is None:
            return None
        meta = json.loads(raw)
        if meta.get("fingerprint") != dataset.fingerprint() or meta.get("rows", 0) < dataset.rows:
            return None
        marks = ", ".join(["%s"] * len(dataset.tenants))
        count = int(
            await scalar(
                conn, f"SELECT COUNT(*) FROM dags WHERE tenant IN ({marks})", list(dataset.tenants)
            )
        )
        return count if count == meta["rows"] else None
    finally:
        await conn.ensure_closed()


async def ensure_dataset(
    db: Database, dataset: ListDataset, say: Callable[[str], None]
) -> dict[str, Any]:
    """Reuse the loaded dataset when it fits, else load it; what happened, for the results."""
    present = await _present(db, dataset)
    if present is not None:
        conn = await db.connect()
        try:
            meta = json.loads(await get_meta(conn, META_KEY) or "{}")
        finally:
            await conn.ensure_closed()
        return {
            "reused": True,
            "rows": present,
            **{k: meta.get(k) for k in ("loaded_at", "load_s")},
        }
    say(f"  loading {dataset.rows:,} DAG rows (+{2 * dataset.rows:,} label rows); reused next run")
    started = time.monotonic()
    await _load(db, dataset, say)
    load_s = time.monotonic() - started
    meta = {
        "fingerprint": dataset.fingerprint(),
        "rows": dataset.rows,
        "loaded_at": f"{naive_utc_now():%Y-%m-%dT%H:%M:%SZ}",
        "load_s": round(load_s, 1),
    }
    conn = await db.connect()
    try:
        await set_meta(conn, META_KEY, json.dumps(meta))
    finally:
        await conn.ensure_closed()
    return {
        "reused": False,
        "rows": dataset.rows,
        "loaded_at": meta["loaded_at"],
        "load_s": meta["load_s"],
    }


async def _load(db: Database, dataset: ListDataset, say: Callable[[str], None]) -> None:
    conn = await db.connect()
    try:
        await execute(conn, f"DELETE FROM bench_meta WHERE name = '{META_KEY}'")
        # The dataset owns these tables' contents; other scenarios' rows are transient.
        await execute(conn, "TRUNCATE TABLE dag_labels")
        await execute(conn, "TRUNCATE TABLE dags")
    finally:
        await conn.ensure_closed()
    now = naive_utc_now()
    # Two writers: while one statement executes on the server, Python builds the next.
    # A TaskGroup, so that a failing writer cancels the producer instead of leaving it
    # blocked on a full queue.
    queue: asyncio.Queue[_Batch | None] = asyncio.Queue(maxsize=4)
    writers = 2

    async def write() -> None:
        conn = await db.connect()
        try:
            # Bulk-load session: skip uniqueness re-checks; the generator's ids are unique.
            await execute(conn, "SET SESSION unique_checks = 0")
            while (batch := await queue.get()) is not None:
                await execute(conn, batch.dags)
                await execute(conn, batch.labels)
        finally:
            await conn.ensure_closed()

    async def produce() -> None:
        queued = 0
        reported = time.monotonic()
        for batch in _batches(dataset, now):
            await queue.put(batch)
            queued += batch.rows
            if time.monotonic() - reported > 15:
                say(f"    {queued:,} / {dataset.rows:,} rows")
                reported = time.monotonic()
        for _ in range(writers):
            await queue.put(None)

    async with asyncio.TaskGroup() as group:
        for _ in range(writers):
            group.create_task(write())
        group.create_task(produce())
