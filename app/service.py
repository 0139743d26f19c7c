"""The DAG service behind the API: validation, the submission transaction, reads.

Transport-free on purpose: HTTP handlers (and any other transport) call these
methods and map the exceptions below to their own error shapes.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from aimtp.db import QUERIES
from aimtp.db.records import DagRecord, utcnow
from aimtp.events import Actor
from aimtp.lifecycle import submit_dag, transition
from aimtp.logs import dag_id_var, trace_id_var
from aimtp.spec import DagSpec, FieldError, SpecLimits, decode_dag_spec
from aimtp.states import DagState
from aimtp.telemetry import span
from aimtp.tracing import new_traceparent, trace_id_of, valid_traceparent
from app.listing import DagFilter, list_dags

MAX_IDEMPOTENCY_KEY = 255
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
WATCH_POLL_SECONDS = 0.25
"""How often a watch looks for new transitions: one indexed read per watcher and tick."""
_WATCH_BATCH = 500


class DagNotFound(LookupError):
    def __init__(self, dag_id: str) -> None:
        super().__init__(f"DAG {dag_id!r} not found")
        self.dag_id = dag_id


class IdempotencyConflict(Exception):
    """The Idempotency-Key was used for a different request."""

    def __init__(self, key: str, dag_id: str) -> None:
        super().__init__(
            f"Idempotency-Key {key!r} was already used with a different request body "
            f"(DAG {dag_id}); use a new key for a new DAG"
        )
        self.dag_id = dag_id


class InvalidState(Exception):
    """The DAG's state does not allow the requested operation."""

    def __init__(self, dag: DagRecord, operation: str, allowed: str) -> None:
        super().__init__(f"cannot {operation} a DAG in state {dag.state}; allowed from {allowed}")
        self.dag = dag


class BusyDag(Exception):
    """The DAG kept changing under a request; the client may retry."""


class InvalidRequest(ValueError):
    """A request parameter other than the spec is malformed; ``errors`` names each."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in errors))
        self.errors = errors


@dataclass(frozen=True)
class Transition:
    id: int
    """Increases with every transition of every DAG: a watch resumes after it."""
    from_state: DagState | None
    to_state: DagState
    attempt: int
    actor: str
    reason: str | None
    at: datetime


@dataclass(frozen=True)
class Submission:
    dag: DagRecord
    spec: DagSpec
    created: bool
    """False when an Idempotency-Key replay returned the DAG created before."""


_canonical = msgspec.json.Encoder(order="sorted")


class DagService:
    def __init__(
        self, engine: AsyncEngine, limits: SpecLimits, idempotency_window: timedelta
    ) -> None:
        self._engine = engine
        self._limits = limits
        self._window = idempotency_window

    async def submit(
        self,
        tenant: str,
        body: bytes,
        *,
        idempotency_key: str | None = None,
        traceparent: str | None = None,
    ) -> Submission:
        """Validate ``body`` and store the DAG with its ``dag.submitted`` event atomically.

        Raises ``SpecError`` (nothing written), ``InvalidRequest`` or ``IdempotencyConflict``.
        """
        idempotency_key = idempotency_key or None
        if idempotency_key is not None and len(idempotency_key) > MAX_IDEMPOTENCY_KEY:
            raise InvalidRequest(
                [
                    FieldError(
                        field="Idempotency-Key",
                        message=f"at most {MAX_IDEMPOTENCY_KEY} characters",
                    )
                ]
            )
        traceparent = valid_traceparent(traceparent) or new_traceparent()
        spec = decode_dag_spec(body, self._limits)
        spec_json = _canonical.encode(spec)
        request_hash = hashlib.sha256(spec_json).hexdigest() if idempotency_key else None
        with span("aimtp.submit", traceparent, tenant=tenant) as traceparent:
            trace_id_var.set(trace_id_of(traceparent))  # this request's log lines carry it
            for _ in range(2):
                try:
                    async with self._engine.begin() as conn:
                        if idempotency_key is not None:
                            existing = await self._replay(conn, tenant, idempotency_key)
                            if existing is not None:
                                dag_id_var.set(existing.id)
                                if existing.request_hash != request_hash:
                                    raise IdempotencyConflict(idempotency_key, existing.id)
                                return Submission(existing, spec, created=False)
                        dag = await submit_dag(
                            conn,
                            tenant=tenant,
                            name=spec.name,
                            spec_json=spec_json,
                            labels=spec.labels,
                            idempotency_key=idempotency_key,
                            request_hash=request_hash,
                            traceparent=traceparent,
                        )
                    dag_id_var.set(dag.id)
                    return Submission(dag, spec, created=True)
                except IntegrityError:
                    # A concurrent request with the same key committed first: read its DAG.
                    if idempotency_key is None:
                        raise
        raise RuntimeError("idempotency key kept conflicting")  # pragma: no cover

    async def _replay(self, conn: AsyncConnection, tenant: str, key: str) -> DagRecord | None:
        """The live DAG created with ``key``; an expired key is released for reuse."""
        row = (
            await conn.execute(
                QUERIES["get_dag_by_idempotency_key"], {"tenant": tenant, "idempotency_key": key}
            )
        ).first()
        if row is None:
            return None
        dag = DagRecord.from_row(row)
        if dag.created_at + self._window > utcnow():
            return dag
        await conn.execute(QUERIES["release_idempotency_key"], {"id": dag.id, "tenant": tenant})
        return None

    async def get(self, tenant: str, dag_id: str) -> DagRecord:
        async with self._engine.connect() as conn:
            return await _tenant_dag(conn, tenant, dag_id)

    async def search(
        self, tenant: str, filters: DagFilter, limit: int, page_token: str | None
    ) -> tuple[list[DagRecord], str | None]:
        """Raises ``InvalidPageToken`` or ``InvalidRequest`` (a page size out of range)."""
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise InvalidRequest(
                [FieldError(field="limit", message=f"must be between 1 and {MAX_PAGE_SIZE}")]
            )
        async with self._engine.connect() as conn:
            return await list_dags(conn, tenant, filters, limit, page_token)

    async def cancel(
        self, tenant: str, dag_id: str, *, traceparent: str | None = None
    ) -> DagRecord:
        """Ask for the DAG to be cancelled: CANCELLING plus ``dag.cancel_requested``.

        Idempotent: a DAG already cancelling or cancelled is returned as it is.
        """

        def change(dag: DagRecord) -> tuple[DagState, dict[str, Any]] | None:
            if dag.state in (DagState.CANCELLING, DagState.CANCELLED):
                return None
            if dag.state.terminal:
                raise InvalidState(dag, "cancel", "PENDING, TRIGGERING or RUNNING")
            return DagState.CANCELLING, {}

        return await self._change(
            tenant, dag_id, change, f"cancel requested by {tenant}", traceparent
        )

    async def retry(self, tenant: str, dag_id: str, *, traceparent: str | None = None) -> DagRecord:
        """Run a FAILED, TIMED_OUT or CANCELLED DAG again as a new attempt."""

        def change(dag: DagRecord) -> tuple[DagState, dict[str, Any]]:
            if dag.state not in RETRYABLE_STATES:
                raise InvalidState(dag, "retry", "FAILED, TIMED_OUT or CANCELLED")
            return DagState.PENDING, {
                "attempt": dag.attempt + 1,
                "reemits": 0,
                "error": None,
                "controller_ref": None,
                "task_phases": None,
                "status_at": None,
                "timeout_at": None,
            }

        return await self._change(
            tenant, dag_id, change, f"retry requested by {tenant}", traceparent
        )

    async def history(self, tenant: str, dag_id: str, limit: int = 1000) -> list[Transition]:
        async with self._engine.connect() as conn:
            await _tenant_dag(conn, tenant, dag_id)
            rows = await conn.execute(QUERIES["dag_history"], {"dag_id": dag_id, "limit": limit})
            return [_transition(row) for row in rows]

    async def watch(
        self,
        tenant: str,
        dag_id: str,
        after: int = 0,
        *,
        stop: asyncio.Event | None = None,
        poll: float = WATCH_POLL_SECONDS,
    ) -> AsyncIterator[DagRecord | Transition]:
        """The DAG as it is now, then each transition with an id above ``after``, live,
        and the DAG again whenever its task phases changed.

        Ends once the DAG is in a terminal state and every transition up to it was
        yielded, or early once ``stop`` is set (the server is shutting down; the
        client resumes elsewhere). Raises ``DagNotFound`` before yielding anything.
        Each poll reads the DAG before its new transitions: a state change and its
        transition row commit together, so a terminal state seen in the first read has
        all its transitions visible to the second, and none is left unread. A DAG
        yielded for its task phases follows that poll's transitions; its state is as of
        the read before them, so follow the state by the transitions.
        """
        stop = stop or asyncio.Event()
        async with self._engine.connect() as conn:
            dag = await _tenant_dag(conn, tenant, dag_id)
        yield dag
        phases = dag.task_phases
        cursor = after
        while True:
            async with self._engine.connect() as conn:
                dag = await _tenant_dag(conn, tenant, dag_id)
                rows = (
                    await conn.execute(
                        QUERIES["dag_transitions_after"],
                        {"dag_id": dag_id, "after": cursor, "limit": _WATCH_BATCH},
                    )
                ).all()
            for row in rows:
                transition = _transition(row)
                cursor = transition.id
                yield transition
            if _raw(dag.task_phases) != _raw(phases):
                phases = dag.task_phases
                yield dag
            if len(rows) == _WATCH_BATCH:
                continue
            if dag.state.terminal:
                return
            try:
                async with asyncio.timeout(poll):
                    await stop.wait()
                return
            except TimeoutError:
                pass

    async def _change(
        self,
        tenant: str,
        dag_id: str,
        decide: Callable[[DagRecord], tuple[DagState, dict[str, Any]] | None],
        reason: str,
        traceparent: str | None,
    ) -> DagRecord:
        """Read, decide, apply conditionally; re-read when another writer won the race."""
        dag_id_var.set(dag_id)
        trace_id_var.set(trace_id_of(traceparent))
        for _ in range(5):
            async with self._engine.begin() as conn:
                dag = await _tenant_dag(conn, tenant, dag_id)
                decision = decide(dag)
                if decision is None:
                    return dag
                target, changes = decision
                moved = await transition(
                    conn,
                    dag,
                    target,
                    actor=Actor.SERVER,
                    reason=reason,
                    traceparent=traceparent,
                    **changes,
                )
                if moved is not None:
                    return moved
        raise BusyDag(f"DAG {dag_id} kept changing; try again")


def _raw(value: msgspec.Raw | None) -> bytes | None:
    return None if value is None else bytes(value)


RETRYABLE_STATES = frozenset({DagState.FAILED, DagState.TIMED_OUT, DagState.CANCELLED})


def dag_filter(
    states: Iterable[DagState] = (),
    label_selectors: Sequence[str] = (),
    name_prefix: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
) -> DagFilter:
    """The filter of a listing from its request parameters, whatever the transport.

    ``label_selectors`` are ``key=value`` items, each possibly comma-separated; all
    must match. Raises ``InvalidRequest`` for a malformed selector.
    """
    if name_prefix is not None and not name_prefix.isascii():
        # Names are DNS labels in an ASCII column: say so rather than fail the query.
        raise InvalidRequest(
            [FieldError(field="name_prefix", message="DAG names are ASCII (DNS-1123 labels)")]
        )
    labels: list[tuple[str, str]] = []
    for selector in label_selectors:
        for part in filter(None, (p.strip() for p in selector.split(","))):
            key, sep, value = part.partition("=")
            if not sep or not key or not part.isascii():
                raise InvalidRequest(
                    [
                        FieldError(
                            field="label",
                            message=f"label selector {part!r} must look like key=value "
                            "(ASCII, as Kubernetes labels are)",
                        )
                    ]
                )
            labels.append((key, value))
    return DagFilter(
        states=tuple(dict.fromkeys(states)),
        labels=tuple(labels),
        name_prefix=name_prefix or None,
        created_after=_naive_utc(created_after),
        created_before=_naive_utc(created_before),
    )


def _naive_utc(moment: datetime | None) -> datetime | None:
    """Times are stored as naive UTC; an aware time is converted, a naive one taken as UTC."""
    if moment is None or moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)


def _transition(row: Any) -> Transition:
    return Transition(
        id=row.id,
        from_state=None if row.from_state is None else DagState(row.from_state),
        to_state=DagState(row.to_state),
        attempt=row.attempt,
        actor=row.actor,
        reason=row.reason,
        at=row.created_at,
    )


async def _tenant_dag(conn: AsyncConnection, tenant: str, dag_id: str) -> DagRecord:
    if not dag_id.isascii():
        # Ids are ASCII (an ASCII column): no such DAG, and MySQL refuses to compare.
        raise DagNotFound(dag_id)
    row = (await conn.execute(QUERIES["get_tenant_dag"], {"id": dag_id, "tenant": tenant})).first()
    if row is None:
        raise DagNotFound(dag_id)
    return DagRecord.from_row(row)
