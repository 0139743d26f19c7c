"""Example bodies for the OpenAPI document, built from the real types.

Each example is an instance of the struct the API sends or reads, so it cannot drift
from the schema: a field renamed or a rule tightened fails here, at import.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

import msgspec
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example

from aimtp.controller import StatusReport, TaskStatus
from aimtp.spec import DagSpec, SpecLimits, validate_dag_spec
from aimtp.states import DagState
from app.schemas import DagHistory, DagPage, DagSummary, DagView, Health, TaskView, TransitionView

DAG_ID: Final = "0193a4f2-7c1e-7d3a-9b1f-2f6c8e4d5a10"
_CREATED: Final = datetime(2026, 12, 4, 9, 30, 0, 125000, tzinfo=UTC)
_UPDATED: Final = datetime(2026, 12, 4, 9, 30, 2, 480000, tzinfo=UTC)

SPEC: Final = msgspec.convert(
    {
        "name": "resnet-finetune",
        "labels": {"team": "vision"},
        "timeout_seconds": 7200,
        "tasks": [
            {
                "name": "prepare",
                "image": "registry.example.com/vision/prep:1.3.0",
                "args": ["--dataset", "s3://datasets/imagenet-subset"],
                "resources": {"cpu": "4", "memory": "16Gi"},
            },
            {
                "name": "train",
                "image": "registry.example.com/vision/train:2.0.1",
                "depends_on": ["prepare"],
                "resources": {"cpu": "16", "memory": "64Gi", "gpu": 4},
            },
        ],
    },
    DagSpec,
)
validate_dag_spec(SPEC, SpecLimits())

DAG: Final = DagView(
    id=DAG_ID,
    name=SPEC.name,
    state=DagState.RUNNING,
    attempt=1,
    labels=SPEC.labels,
    spec=SPEC,
    error=None,
    created_at=_CREATED,
    updated_at=_UPDATED,
    tasks={
        "prepare": TaskView(phase="Running", started_at=_UPDATED),
        "train": TaskView(phase="Pending"),
    },
    controller_ref="wl-7f3c2a",
)
ACCEPTED: Final = msgspec.structs.replace(
    DAG, state=DagState.PENDING, updated_at=_CREATED, tasks={}, controller_ref=None
)
CANCELLING: Final = msgspec.structs.replace(DAG, state=DagState.CANCELLING)
RETRIED: Final = msgspec.structs.replace(
    DAG, state=DagState.PENDING, attempt=2, tasks={}, controller_ref=None
)

PAGE: Final = DagPage(
    items=[
        DagSummary(
            id=DAG_ID,
            name=SPEC.name,
            state=DagState.RUNNING,
            attempt=1,
            labels=SPEC.labels,
            error=None,
            created_at=_CREATED,
            updated_at=_UPDATED,
        )
    ],
    next_page_token="eyJjIjoiMjAyNi0xMi0wNFQwOTozMDowMC4xMjVaIn0",  # noqa: S106 - a page token
)

HISTORY: Final = DagHistory(
    dag_id=DAG_ID,
    events=[
        TransitionView(
            at=at, from_state=before, to_state=after, attempt=1, actor=actor, reason=None
        )
        for at, before, after, actor in (
            (_CREATED, None, DagState.PENDING, "server"),
            (_UPDATED, DagState.PENDING, DagState.TRIGGERING, "trigger"),
            (_UPDATED, DagState.TRIGGERING, DagState.RUNNING, "trigger"),
        )
    ],
)

STATUS_REPORT: Final = StatusReport(
    dag_id=DAG_ID,
    attempt=1,
    reference="wl-7f3c2a",
    phase="Running",
    tasks={
        "prepare": TaskStatus(phase="Succeeded", started_at=_CREATED, finished_at=_UPDATED),
        "train": TaskStatus(phase="Running", started_at=_UPDATED),
    },
    observed_at=_UPDATED,
)

HEALTHY: Final = Health(status="ok", checks={"database": "ok"})
UNHEALTHY: Final = Health(status="unavailable", checks={"database": "unreachable"})


def example_response(
    data_container: type[Any], description: str, value: msgspec.Struct, summary: str
) -> ResponseSpec:
    """A documented response whose example is ``value``, encoded as the API sends it."""
    return ResponseSpec(
        data_container=data_container,
        description=description,
        generate_examples=False,
        examples=[Example(summary=summary, value=msgspec.to_builtins(value))],
    )
