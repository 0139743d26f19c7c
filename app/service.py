"""The DAG service behind the API: validation, the submission transaction, reads.

Transport-free on purpose: HTTP handlers (and any other transport) call these
methods and map the exceptions below to their own error shapes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta

import msgspec
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from aimtp.db import QUERIES
from aimtp.db.records import DagRecord, utcnow
from aimtp.lifecycle import submit_dag
from aimtp.spec import DagSpec, SpecLimits, decode_dag_spec


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

        Raises ``SpecError`` (nothing written) or ``IdempotencyConflict``.
        """
        spec = decode_dag_spec(body, self._limits)
        spec_json = _canonical.encode(spec)
        request_hash = hashlib.sha256(spec_json).hexdigest() if idempotency_key else None
        for _ in range(2):
            try:
                async with self._engine.begin() as conn:
                    if idempotency_key is not None:
                        existing = await self._replay(conn, tenant, idempotency_key)
                        if existing is not None:
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
            row = (
                await conn.execute(QUERIES["get_tenant_dag"], {"id": dag_id, "tenant": tenant})
            ).first()
        if row is None:
            raise DagNotFound(dag_id)
        return DagRecord.from_row(row)
