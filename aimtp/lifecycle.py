"""DAG lifecycle writes: submission and every state change, each with its outbox event.

These are the only functions that change a DAG. Each runs inside the caller's
transaction and writes three things together: the conditional row change, a
``dag_transitions`` history row and an ``outbox`` event. Nothing publishes to Kafka.
The writes go straight to the driver (``aimtp.db.direct``): they are the hot path.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from sqlalchemy.ext.asyncio import AsyncConnection

from aimtp import metrics
from aimtp.db.direct import execute_write
from aimtp.db.records import DagRecord, utcnow
from aimtp.events import EVENT_FOR_STATE, SCHEMA_VERSION, Actor, DagEvent, encode_event
from aimtp.ids import new_id
from aimtp.settings import DeadlineSettings, load
from aimtp.states import DagState, check_transition


def deadline_for(state: DagState, now: datetime, deadlines: DeadlineSettings) -> datetime | None:
    seconds = {
        DagState.PENDING: deadlines.pending_deadline_seconds,
        DagState.TRIGGERING: deadlines.triggering_deadline_seconds,
        DagState.RUNNING: deadlines.running_status_seconds,
        DagState.CANCELLING: deadlines.cancelling_deadline_seconds,
    }.get(state)
    return None if seconds is None else now + timedelta(seconds=seconds)


async def submit_dag(
    conn: AsyncConnection,
    *,
    tenant: str,
    name: str,
    spec_json: bytes,
    labels: dict[str, str],
    idempotency_key: str | None = None,
    request_hash: str | None = None,
    traceparent: str | None = None,
    actor: Actor = Actor.SERVER,
) -> DagRecord:
    """Insert a PENDING DAG and its ``dag.submitted`` event."""
    now = utcnow()
    dag = DagRecord(
        id=new_id(),
        tenant=tenant,
        name=name,
        spec=msgspec.Raw(spec_json),
        labels=labels,
        state=DagState.PENDING,
        version=1,
        attempt=1,
        deadline_at=deadline_for(DagState.PENDING, now, load(DeadlineSettings)),
        timeout_at=None,
        reemits=0,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        controller_ref=None,
        error=None,
        task_phases=None,
        status_at=None,
        created_at=now,
        updated_at=now,
    )
    await execute_write(conn, "insert_dag", dag.to_params())
    if labels:
        await execute_write(
            conn,
            "insert_dag_label",
            [
                {
                    "tenant": tenant,
                    "label_key": key,
                    "label_value": value,
                    "created_at": now,
                    "dag_id": dag.id,
                }
                for key, value in labels.items()
            ],
        )
    await _record_change(
        conn, dag, previous=None, actor=actor, reason=None, traceparent=traceparent
    )
    return dag


async def transition(
    conn: AsyncConnection,
    dag: DagRecord,
    target: DagState,
    *,
    actor: Actor,
    reason: str | None = None,
    traceparent: str | None = None,
    **changes: Any,
) -> DagRecord | None:
    """Move ``dag`` to ``target`` if nobody changed it since it was read.

    Returns the updated record, or None when another writer got there first (the
    state or version no longer match): the caller re-reads or gives up, never retries
    blindly. ``changes`` sets other columns in the same statement.
    """
    check_transition(dag.state, target)
    now = utcnow()
    updated = msgspec.structs.replace(
        dag,
        state=target,
        version=dag.version + 1,
        deadline_at=deadline_for(target, now, load(DeadlineSettings)),
        updated_at=now,
        **changes,
    )
    if not await _update(conn, dag, updated):
        return None
    await _record_change(
        conn, updated, previous=dag.state, actor=actor, reason=reason, traceparent=traceparent
    )
    return updated


async def update_in_place(
    conn: AsyncConnection, dag: DagRecord, **changes: Any
) -> DagRecord | None:
    """Change columns other than the state (task phases, status time), still conditionally."""
    updated = msgspec.structs.replace(dag, version=dag.version + 1, updated_at=utcnow(), **changes)
    return updated if await _update(conn, dag, updated) else None


async def _update(conn: AsyncConnection, old: DagRecord, new: DagRecord) -> bool:
    params = new.to_params()
    params["expected_state"] = old.state.value
    params["expected_version"] = old.version
    return await execute_write(conn, "update_dag", params) == 1


async def _record_change(
    conn: AsyncConnection,
    dag: DagRecord,
    *,
    previous: DagState | None,
    actor: Actor,
    reason: str | None,
    traceparent: str | None,
) -> None:
    now = dag.updated_at
    # Counted when written; a transaction rolled back afterwards over-counts by one.
    metrics.DAG_TRANSITIONS.labels(
        "none" if previous is None else previous.value, dag.state.value
    ).inc()
    await execute_write(
        conn,
        "insert_transition",
        {
            "dag_id": dag.id,
            "from_state": None if previous is None else previous.value,
            "to_state": dag.state.value,
            "attempt": dag.attempt,
            "actor": actor.value,
            "reason": reason,
            "created_at": now,
        },
    )
    event = DagEvent(
        schema_version=SCHEMA_VERSION,
        event_id=new_id(),
        type=EVENT_FOR_STATE[dag.state],
        dag_id=dag.id,
        tenant=dag.tenant,
        dag_name=dag.name,
        state=dag.state,
        previous_state=previous,
        attempt=dag.attempt,
        occurred_at=now.replace(tzinfo=UTC),
        actor=actor,
        reason=reason,
        labels=dag.labels,
    )
    await execute_write(
        conn,
        "insert_outbox",
        {
            "event_id": event.event_id,
            "dag_id": dag.id,
            "event_type": event.type.value,
            "source": actor.value,
            "payload": encode_event(event),
            "traceparent": traceparent,
            "created_at": now,
        },
    )
