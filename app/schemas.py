"""Response bodies of the HTTP API."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final, Literal

import msgspec

from aimtp.db.records import DagRecord
from aimtp.spec import DagSpec
from aimtp.states import DagState


class TaskView(msgspec.Struct, kw_only=True):
    """One task of a DAG as the Controller last reported it."""

    phase: Literal["Pending", "Running", "Succeeded", "Failed"] = "Pending"
    started_at: datetime | None = None
    finished_at: datetime | None = None
    message: str = ""


_tasks_decoder: Final = msgspec.json.Decoder(dict[str, TaskView])


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
    # Added after the first release, with defaults, so older readers are unaffected.
    tasks: dict[str, TaskView] = msgspec.field(default_factory=dict)
    """Per-task phases from the Controller's last report; empty until it reported."""
    controller_ref: str | None = None
    """The Controller's own id of the workload, once it was created."""

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
            tasks={} if dag.task_phases is None else _tasks_decoder.decode(dag.task_phases),
            controller_ref=dag.controller_ref,
        )


class Health(msgspec.Struct):
    status: str
    checks: dict[str, str] = msgspec.field(default_factory=dict)


class DagSummary(msgspec.Struct, kw_only=True):
    """A DAG in a listing: everything but its spec."""

    id: str
    name: str
    state: DagState
    attempt: int
    labels: dict[str, str]
    error: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, dag: DagRecord) -> DagSummary:
        return cls(
            id=dag.id,
            name=dag.name,
            state=dag.state,
            attempt=dag.attempt,
            labels=dag.labels,
            error=dag.error,
            created_at=dag.created_at.replace(tzinfo=UTC),
            updated_at=dag.updated_at.replace(tzinfo=UTC),
        )


class DagPage(msgspec.Struct, kw_only=True):
    items: list[DagSummary]
    next_page_token: str | None
    """Pass as ``page_token`` for the next page; null on the last page."""


class TransitionView(msgspec.Struct, kw_only=True):
    """One state change: when, from what to what, by whom and why."""

    at: datetime
    from_state: DagState | None
    to_state: DagState
    attempt: int
    actor: str
    reason: str | None


class DagHistory(msgspec.Struct, kw_only=True):
    dag_id: str
    events: list[TransitionView]
