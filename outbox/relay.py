"""The relay: claim unpublished outbox rows, publish them, mark them published.

One relay is active at a time (``aimtp.leader``); standbys wait in ``GET_LOCK`` and
take over when the leader's connection goes. Each batch runs in one transaction:
enter the fence (a row lock that keeps a deposed leader's open batch and its
successor's apart), claim (``FOR UPDATE SKIP LOCKED``), publish, mark published in
one statement, commit. A row is marked only after the broker acknowledged it, so a
crash between the ack and the commit re-publishes the row (at-least-once;
subscribers dedupe on ``ce_id``) but never loses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    CorruptRecordException,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
    UnsupportedForMessageFormatError,
)
from sqlalchemy import bindparam
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from aimtp import metrics
from aimtp.backoff import Backoff
from aimtp.db import QUERIES
from aimtp.db.records import utcnow
from aimtp.events import cloudevent_headers
from aimtp.kafka import start_with_retry
from aimtp.leader import LeaderLock
from aimtp.settings import RelaySettings
from aimtp.tracing import trace_id_of

log = logging.getLogger(__name__)

# Refusals that retrying the same bytes cannot fix: the row is parked, not retried.
PERMANENT_ERRORS: tuple[type[Exception], ...] = (
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
    CorruptRecordException,
    UnsupportedForMessageFormatError,
)

_MARK_PUBLISHED = QUERIES["mark_outbox_published"].bindparams(bindparam("ids", expanding=True))


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    event_id: str
    dag_id: str
    event_type: str
    source: str
    payload: bytes
    traceparent: str | None
    created_at: datetime


@dataclass
class BatchOutcome:
    claimed: int = 0
    published: list[OutboxRow] = field(default_factory=list)
    parked: list[tuple[OutboxRow, str]] = field(default_factory=list)
    failure: Exception | None = None
    """A transient error that stopped the batch early; its unpublished rows stay pending."""


def waves(rows: Sequence[OutboxRow]) -> list[list[OutboxRow]]:
    """Split a batch so that no wave holds two rows of one DAG.

    Wave k holds the k-th row of every DAG in the batch. A wave is sent only after the
    previous one was acknowledged, so a DAG's later event can never reach the topic
    ahead of an earlier one that failed. Most batches are a single wave.
    """
    position: dict[str, int] = {}
    result: list[list[OutboxRow]] = []
    for row in rows:
        k = position.get(row.dag_id, 0)
        position[row.dag_id] = k + 1
        if k == len(result):
            result.append([])
        result[k].append(row)
    return result


class Relay:
    def __init__(
        self,
        engine: AsyncEngine,
        producer: AIOKafkaProducer,
        lock: LeaderLock,
        settings: RelaySettings,
        topic: str,
    ) -> None:
        self._engine = engine
        self._producer = producer
        self._lock = lock
        self._settings = settings
        self._topic = topic

    # ------------------------------------------------------------ leadership loop

    async def run(self, stop: asyncio.Event) -> None:
        """Wait for leadership, relay while leading, step down on stop or loss."""
        retry = Backoff(base=0.2, cap=5.0)
        if not await start_with_retry(self._producer.start, stop, what="Kafka producer"):
            return
        try:
            while not stop.is_set():
                if not self._lock.held:
                    try:
                        acquired = await self._lock.try_acquire(
                            self._settings.relay_leader_wait_seconds
                        )
                    except Exception:
                        log.warning("cannot reach the database for leadership", exc_info=True)
                        await _sleep_unless_stopped(stop, retry.next_delay())
                        continue
                    retry.reset()
                    if not acquired:
                        continue
                metrics.RELAY_ACTIVE.set(1)
                try:
                    await self._lead(stop)
                finally:
                    metrics.RELAY_ACTIVE.set(0)
        finally:
            await self._lock.release()
            log.info("relay stopped")

    async def _lead(self, stop: asyncio.Event) -> None:
        settings = self._settings
        min_pause = settings.relay_idle_poll_min_ms / 1000
        max_pause = settings.relay_idle_poll_max_ms / 1000
        pause = min_pause
        failures = Backoff(base=0.2, cap=10.0)
        while not stop.is_set():
            # Checked before every batch: a relay whose lock connection died must stop
            # before a standby could have taken over.
            if not await self._lock.still_held():
                log.warning("leadership lost; standing by")
                return
            try:
                outcome = await self.relay_batch()
            except Exception:
                metrics.OUTBOX_PUBLISH_FAILURES.inc()
                log.warning("relay batch failed; retrying", exc_info=True)
                await _sleep_unless_stopped(stop, failures.next_delay())
                continue
            if outcome.failure is not None:
                await _sleep_unless_stopped(stop, failures.next_delay())
                continue
            failures.reset()
            if outcome.claimed >= settings.relay_batch_size:
                continue  # more is waiting: poll again at once
            pause = min_pause if outcome.claimed else min(pause * 2, max_pause)
            await _sleep_unless_stopped(stop, pause)

    # ------------------------------------------------------------ one batch

    async def relay_batch(self) -> BatchOutcome:
        """Claim, publish and mark one batch in one transaction."""
        async with self._engine.begin() as conn:
            await conn.execute(QUERIES["enter_outbox_fence"])
            result = await conn.execute(
                QUERIES["claim_outbox_batch"], {"limit": self._settings.relay_batch_size}
            )
            rows = [OutboxRow(*row) for row in result]
            if not rows:
                return BatchOutcome()
            metrics.RELAY_BATCH_SIZE.observe(len(rows))
            outcome = await self._publish(rows)
            await self._record(conn, outcome)
        self._observe(outcome)
        return outcome

    async def _publish(self, rows: list[OutboxRow]) -> BatchOutcome:
        outcome = BatchOutcome(claimed=len(rows))
        held_back: set[str] = set()  # DAGs whose earlier row did not get through
        for wave in waves(rows):
            sendable = [row for row in wave if row.dag_id not in held_back]
            sent: list[tuple[OutboxRow, asyncio.Future[Any]]] = []
            for row in sendable:
                try:
                    sent.append((row, await self._send(row)))
                except PERMANENT_ERRORS as exc:
                    outcome.parked.append((row, _reason(exc)))
                    held_back.add(row.dag_id)
                except Exception as exc:
                    outcome.failure = exc
                    held_back.add(row.dag_id)
                    break
            if sent:
                futures = [future for _, future in sent]
                try:
                    results = await asyncio.wait_for(
                        asyncio.gather(*futures, return_exceptions=True),
                        timeout=self._settings.relay_publish_timeout_seconds,
                    )
                except TimeoutError as exc:
                    outcome.failure = exc
                    return outcome
                acked_at = utcnow()
                for (row, _), result in zip(sent, results, strict=True):
                    if isinstance(result, PERMANENT_ERRORS):
                        outcome.parked.append((row, _reason(result)))
                        held_back.add(row.dag_id)
                    elif isinstance(result, BaseException):
                        outcome.failure = outcome.failure or Exception(result)
                        held_back.add(row.dag_id)
                    else:
                        outcome.published.append(row)
                        delay = (acked_at - row.created_at).total_seconds()
                        metrics.OUTBOX_PUBLISH_DELAY.observe(delay)
            if outcome.failure is not None:
                log.warning(
                    "broker did not take the batch; %d rows stay pending",
                    outcome.claimed - len(outcome.published) - len(outcome.parked),
                    extra={"error": repr(outcome.failure)},
                )
                break
        return outcome

    async def _send(self, row: OutboxRow) -> asyncio.Future[Any]:
        headers = cloudevent_headers(
            event_id=row.event_id,
            event_type=row.event_type,
            source=row.source,
            time=row.created_at,
            traceparent=row.traceparent,
        )
        future: asyncio.Future[Any] = await self._producer.send(
            self._topic, value=row.payload, key=row.dag_id.encode(), headers=headers
        )
        return future

    async def _record(self, conn: AsyncConnection, outcome: BatchOutcome) -> None:
        if outcome.published:
            await conn.execute(
                _MARK_PUBLISHED,
                {"ids": [row.id for row in outcome.published], "published_at": utcnow()},
            )
        for row, reason in outcome.parked:
            log.error(
                "outbox row parked: the broker refused it",
                extra={
                    "outbox_id": row.id,
                    "dag_id": row.dag_id,
                    "trace_id": trace_id_of(row.traceparent),
                    "reason": reason,
                },
            )
            await conn.execute(QUERIES["park_outbox_row"], {"id": row.id, "reason": reason})

    def _observe(self, outcome: BatchOutcome) -> None:
        if outcome.published:
            metrics.OUTBOX_PUBLISHED.inc(len(outcome.published))
        if outcome.parked:
            metrics.OUTBOX_PARKED.inc(len(outcome.parked))
        if outcome.failure is not None:
            metrics.OUTBOX_PUBLISH_FAILURES.inc()

    # ------------------------------------------------------------ side tasks

    async def report_backlog(self, stop: asyncio.Event, interval: float = 2.0) -> None:
        """Keep the pending-rows and lag gauges current (every relay, leader or not)."""
        while not stop.is_set():
            try:
                await self.refresh_backlog_gauges()
            except Exception:
                log.warning("cannot read outbox backlog", exc_info=True)
            await _sleep_unless_stopped(stop, interval)

    async def refresh_backlog_gauges(self) -> None:
        async with self._engine.connect() as conn:
            pending, oldest, parked = (await conn.execute(QUERIES["outbox_pending_stats"])).one()
        metrics.OUTBOX_PENDING_ROWS.set(pending)
        metrics.OUTBOX_PARKED_ROWS.set(parked)
        age = 0.0 if oldest is None else max(0.0, (utcnow() - oldest).total_seconds())
        metrics.OUTBOX_OLDEST_PENDING_AGE.set(age)

    async def purge_published(self, stop: asyncio.Event) -> None:
        """Delete published rows past retention in small batches (leader only)."""
        while not stop.is_set():
            await _sleep_unless_stopped(stop, self._settings.relay_purge_interval_seconds)
            if stop.is_set() or not self._lock.held:
                continue
            try:
                await self.purge_once()
            except Exception:
                log.warning("outbox purge failed", exc_info=True)

    async def purge_once(self) -> int:
        cutoff = utcnow() - timedelta(hours=self._settings.relay_retention_hours)
        limit = self._settings.relay_purge_batch
        total = 0
        while True:
            async with self._engine.begin() as conn:
                deleted = (
                    await conn.execute(QUERIES["purge_outbox"], {"cutoff": cutoff, "limit": limit})
                ).rowcount
            total += deleted
            metrics.OUTBOX_PURGED.inc(deleted)
            if deleted < limit:
                return total
            await asyncio.sleep(0.05)  # small statements with gaps keep the hot path fast


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:1024]


async def _sleep_unless_stopped(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
