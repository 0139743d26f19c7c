"""What the trigger does with an event: claim the DAG, call the Controller, record the answer.

Each state change is a conditional update written with its outbox event
(``aimtp.lifecycle``); the final one also records the event in ``processed_events`` in
the same transaction. A redelivered event is therefore recognised and calls nothing,
while one whose handling was cut short (the DAG still TRIGGERING for the same attempt)
is picked up again: the Controller's PUT is idempotent by DAG id, so repeating it
after a crash creates nothing twice.
"""

from __future__ import annotations

import asyncio
import logging
from enum import Enum, StrEnum
from typing import Any, Final

import msgspec
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from aimtp.controller import ControllerClient, ControllerRejected, PutResult, WorkloadRequest
from aimtp.db import QUERIES
from aimtp.db.direct import execute_write
from aimtp.db.records import DagRecord, utcnow
from aimtp.events import Actor, DagEvent, EventType
from aimtp.lifecycle import transition
from aimtp.states import DagState
from aimtp.status import dag_timeout_at, naive_utc
from aimtp.telemetry import span
from aimtp.tracing import child_traceparent
from consumers.retry import Interrupted, RetriesExhausted, RetryPolicy, call_with_retries

log = logging.getLogger(__name__)

HANDLED: Final = frozenset({EventType.SUBMITTED, EventType.CANCEL_REQUESTED})
"""The event types the trigger acts on; the others are for other subscribers."""

_CANCELLED_STATES: Final = frozenset({DagState.CANCELLING, DagState.CANCELLED})

# A conditional update lost to another writer is re-read and decided again, this often.
_CONFLICT_ROUNDS: Final = 3

_encoder: Final = msgspec.json.Encoder()


class Result(StrEnum):
    """How the trigger finished an event (the ``result`` label of its metric)."""

    TRIGGERED = "triggered"
    """The Controller has the workload and the DAG is RUNNING."""
    FAILED = "failed"
    """The Controller rejected the DAG for good; the DAG is FAILED with its message."""
    DEFERRED = "deferred"
    """The Controller stayed unavailable past the retry budget; the watcher takes over."""
    CANCELLED = "cancelled"
    RACED = "raced"
    """Another writer recorded the outcome first: a status callback that overtook the
    Controller's answer, a cancel, or the watcher."""
    DUPLICATE = "duplicate"
    STALE = "stale"
    """The DAG has moved past what the event asks for (or it is another attempt's)."""
    UNKNOWN_DAG = "unknown_dag"
    IGNORED = "ignored"


class SubmitStep(Enum):
    CLAIM = "claim"
    """PENDING: move to TRIGGERING, then call the Controller."""
    RESUME = "resume"
    """Already TRIGGERING for this attempt: a handling that was cut short; call again."""
    SKIP = "skip"


def submit_step(dag: DagRecord, event: DagEvent) -> SubmitStep:
    """What a ``dag.submitted`` event asks of the DAG as it is now."""
    if dag.attempt != event.attempt:
        return SubmitStep.SKIP
    if dag.state is DagState.PENDING:
        return SubmitStep.CLAIM
    if dag.state is DagState.TRIGGERING:
        return SubmitStep.RESUME
    return SubmitStep.SKIP


def cancel_applies(dag: DagRecord, event: DagEvent) -> bool:
    """Whether a ``dag.cancel_requested`` event still has work to do."""
    return dag.state is DagState.CANCELLING and dag.attempt == event.attempt


class TriggerHandler:
    """Handles decoded events against the database and the Controller."""

    def __init__(
        self,
        engine: AsyncEngine,
        controller: ControllerClient,
        *,
        consumer: str,
        public_url: str,
        policy: RetryPolicy,
        stop: asyncio.Event,
    ) -> None:
        self._engine = engine
        self._controller = controller
        self._consumer = consumer
        self._public_url = public_url.rstrip("/")
        self._policy = policy
        self._stop = stop

    async def handle(self, event: DagEvent, traceparent: str | None = None) -> Result:
        """Act on ``event``; raises ``consumers.retry.Interrupted`` when stopping mid-way."""
        with span(f"aimtp.trigger {event.type}", traceparent, dag_id=event.dag_id) as current:
            if event.type is EventType.SUBMITTED:
                return await self._submitted(event, child_traceparent(current))
            if event.type is EventType.CANCEL_REQUESTED:
                return await self._cancel_requested(event, child_traceparent(current))
        return Result.IGNORED

    def callback_url(self, dag_id: str) -> str:
        return f"{self._public_url}/v1/dags/{dag_id}/status"

    # ------------------------------------------------------------ dag.submitted

    async def _submitted(self, event: DagEvent, traceparent: str) -> Result:
        for _ in range(_CONFLICT_ROUNDS):
            # Read and claim in one transaction: one round trip less per DAG.
            async with self._engine.begin() as conn:
                dag, processed = await self._load(conn, event)
                if dag is None:
                    log.warning("event for an unknown DAG", extra={"dag_id": event.dag_id})
                    return Result.UNKNOWN_DAG
                if processed:
                    return Result.DUPLICATE
                step = submit_step(dag, event)
                if step is SubmitStep.SKIP:
                    return Result.STALE
                if step is SubmitStep.CLAIM:
                    claimed = await transition(
                        conn, dag, DagState.TRIGGERING, actor=Actor.TRIGGER, traceparent=traceparent
                    )
                    if claimed is None:
                        continue  # changed since read (a cancel, a racing trigger): decide again
                    dag = claimed
            return await self._create_workload(dag, event, traceparent)
        return Result.RACED

    async def _create_workload(self, dag: DagRecord, event: DagEvent, traceparent: str) -> Result:
        request = WorkloadRequest(
            dag_id=dag.id,
            attempt=dag.attempt,
            spec=msgspec.json.decode(dag.spec),
            callback_url=self.callback_url(dag.id),
            traceparent=traceparent,
        )
        try:
            answer = await call_with_retries(
                lambda: self._controller.put_workload(request), self._policy, self._stop
            )
        except ControllerRejected as exc:
            message = f"the Controller rejected the DAG (HTTP {exc.status}): {exc.detail}"
            log.info("DAG rejected by the Controller", extra={"dag_id": dag.id, "error": message})
            return await self._record(
                dag,
                DagState.FAILED,
                event,
                traceparent,
                Result.FAILED,
                reason=message,
                error=message,
            )
        except RetriesExhausted as exc:
            extra = {"dag_id": dag.id, "attempts": exc.attempts, "error": str(exc.last)}
            if isinstance(exc.last, ControllerRejected):
                log.error(
                    "the Controller refuses AIMTP's credential (check AIMTP_CONTROLLER_TOKEN); "
                    "the DAG stays TRIGGERING for the watcher",
                    extra=extra,
                )
            else:
                log.warning(
                    "Controller unavailable; the DAG stays TRIGGERING for the watcher", extra=extra
                )
            return Result.DEFERRED
        result = await self._record(
            dag,
            DagState.RUNNING,
            event,
            traceparent,
            Result.TRIGGERED,
            **_running_changes(dag, answer),
        )
        if result is Result.RACED:
            await self._delete_if_cancelled(dag)
        return result

    async def _delete_if_cancelled(self, dag: DagRecord) -> None:
        """Delete the workload just created for a DAG that was cancelled meanwhile.

        The cancel may have reached the Controller before this PUT did (a retry after a
        503, a slow call) and found nothing to delete: without this, the workload would
        run for a CANCELLED DAG. DELETE is idempotent, so doing it twice costs nothing.
        """
        async with self._engine.connect() as conn:
            row = (await conn.execute(QUERIES["get_dag"], {"id": dag.id})).first()
        if row is None:
            return
        current = DagRecord.from_row(row)
        if current.attempt != dag.attempt or current.state not in _CANCELLED_STATES:
            return
        try:
            await call_with_retries(
                lambda: self._controller.delete_workload(dag.id), self._policy, self._stop
            )
        except (ControllerRejected, RetriesExhausted, Interrupted) as exc:
            log.error(
                "cannot delete the workload of a cancelled DAG; the watcher reports it as "
                "an orphan",
                extra={"dag_id": dag.id, "error": str(exc)},
            )
            return
        log.info(
            "deleted the workload of a DAG cancelled during its trigger", extra={"dag_id": dag.id}
        )

    # ------------------------------------------------------------ dag.cancel_requested

    async def _cancel_requested(self, event: DagEvent, traceparent: str) -> Result:
        async with self._engine.connect() as conn:
            dag, processed = await self._load(conn, event)
        if dag is None:
            log.warning("event for an unknown DAG", extra={"dag_id": event.dag_id})
            return Result.UNKNOWN_DAG
        if processed:
            return Result.DUPLICATE
        if not cancel_applies(dag, event):
            return Result.STALE
        try:
            # False (404) means there was nothing to delete: cancelled all the same.
            await call_with_retries(
                lambda: self._controller.delete_workload(dag.id), self._policy, self._stop
            )
        except (ControllerRejected, RetriesExhausted) as exc:
            log.error(
                "cannot delete the workload; the DAG stays CANCELLING for the watcher",
                extra={"dag_id": dag.id, "error": str(exc)},
            )
            return Result.DEFERRED
        return await self._record(dag, DagState.CANCELLED, event, traceparent, Result.CANCELLED)

    # ------------------------------------------------------------ database

    async def _load(self, conn: AsyncConnection, event: DagEvent) -> tuple[DagRecord | None, bool]:
        """The DAG, and whether this event was handled already (one round trip)."""
        row = (
            await conn.execute(
                QUERIES["get_dag_for_event"],
                {"id": event.dag_id, "consumer": self._consumer, "event_id": event.event_id},
            )
        ).first()
        if row is None:
            return None, False
        return DagRecord.from_row(row), bool(row.event_processed)

    async def _record(
        self,
        dag: DagRecord,
        target: DagState,
        event: DagEvent,
        traceparent: str,
        result: Result,
        *,
        reason: str | None = None,
        **changes: Any,
    ) -> Result:
        """Move ``dag`` to ``target`` and mark ``event`` handled, in one transaction.

        When another writer changed the DAG first, its outcome stands (a callback may
        well report RUNNING before the Controller's answer to our PUT arrives).
        """
        try:
            for _ in range(_CONFLICT_ROUNDS):
                async with self._engine.begin() as conn:
                    updated = await transition(
                        conn,
                        dag,
                        target,
                        actor=Actor.TRIGGER,
                        reason=reason,
                        traceparent=traceparent,
                        **changes,
                    )
                    if updated is not None:
                        await self._mark(conn, event)
                        return result
                    current, _ = await self._load(conn, event)
                    if current is None:
                        return Result.UNKNOWN_DAG
                    if current.state is dag.state and current.attempt == dag.attempt:
                        dag = current  # only the version moved: try again on the fresh row
                        continue
                    await self._mark(conn, event)
                    return Result.RACED
        except IntegrityError:
            return Result.DUPLICATE  # another trigger recorded this very event
        return Result.RACED

    async def _mark(self, conn: AsyncConnection, event: DagEvent) -> None:
        await execute_write(
            conn,
            "insert_processed_event",
            {"consumer": self._consumer, "event_id": event.event_id, "processed_at": utcnow()},
        )


def _running_changes(dag: DagRecord, answer: PutResult) -> dict[str, Any]:
    """Columns set with RUNNING: the Controller's reference, the DAG's own deadline and
    the task phases the Controller answered with."""
    workload = answer.workload
    return {
        "controller_ref": workload.reference,
        "timeout_at": dag_timeout_at(dag, utcnow()),
        "task_phases": msgspec.Raw(_encoder.encode(workload.tasks)),
        "status_at": naive_utc(workload.updated_at),
    }
