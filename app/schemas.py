"""Response bodies of the HTTP API."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from aimtp.db.records import DagRecord
from aimtp.spec import DagSpec
from aimtp.states import DagState


class DagView(msgspec.Struct, kw_only=True):
    """A DAG as its owner sees it."""

    id: str
    name: str
    state: DagState
    attempt: int
    labels: dict[str, str]
    spec: DagSpec
    error: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, dag: DagRecord, spec: DagSpec | None = None) -> DagView:
        return cls(
            id=dag.id,
            name=dag.name,
            state=dag.state,
            attempt=dag.attempt,
            labels=dag.labels,
            spec=spec if spec is not None else msgspec.json.decode(dag.spec, type=DagSpec),
            error=dag.error,
            created_at=dag.created_at.replace(tzinfo=UTC),
            updated_at=dag.updated_at.replace(tzinfo=UTC),
        )


class Health(msgspec.Struct):
    status: str
    checks: dict[str, str] = msgspec.field(default_factory=dict)
