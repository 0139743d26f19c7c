"""The Controller's status callback over HTTP, and what users then see on the DAG."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from aimtp.asyncapi import asyncapi_document
from aimtp.controller import Phase, StatusReport, TaskStatus
from aimtp.db import QUERIES
from aimtp.db.records import DagRecord
from aimtp.events import Actor
from aimtp.ids import new_id
from aimtp.lifecycle import transition
from aimtp.settings import KafkaSettings, load
from aimtp.spec import SpecLimits
from aimtp.states import DagState
from app import create_app
from app.service import DagService
from tests.conftest import CONTROLLER_CALLBACK_TOKEN

EXAMPLE = (Path(__file__).parents[2] / "examples" / "dag.json").read_bytes()
CONTROLLER = {"Authorization": f"Bearer {CONTROLLER_CALLBACK_TOKEN}"}
TENANT = {"Authorization": "Bearer tenant-a-token"}
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
async def client() -> AsyncIterator[AsyncTestClient[Any]]:
    async with AsyncTestClient(app=create_app()) as client:
        yield client


async def dag_in(engine: AsyncEngine, *path: DagState, **changes: Any) -> DagRecord:
    """A submitted DAG walked through ``path``."""
    service = DagService(engine, SpecLimits(), timedelta(days=1))
    dag = (await service.submit("tenant-a", EXAMPLE)).dag
    for index, state in enumerate(path):
        async with engine.begin() as conn:
            extra = changes if index == len(path) - 1 else {}
            moved = await transition(conn, dag, state, actor=Actor.TRIGGER, **extra)
        assert moved is not None
        dag = moved
    return dag


async def load_dag(engine: AsyncEngine, dag_id: str) -> DagRecord:
    async with engine.connect() as conn:
        return DagRecord.from_row((await conn.execute(QUERIES["get_dag"], {"id": dag_id})).one())


async def transitions(engine: AsyncEngine, dag_id: str) -> list[tuple[str, str]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT to_state, actor FROM dag_transitions WHERE dag_id = :id ORDER BY id"),
            {"id": dag_id},
        )
        return [(row[0], row[1]) for row in rows]


def report(
    dag: DagRecord,
    phase: Phase,
    *,
    at: datetime = T0,
    attempt: int | None = None,
    train: Phase = "Running",
    message: str = "",
    reference: str = "wl-1",
) -> dict[str, Any]:
    body = StatusReport(
        dag_id=dag.id,
        attempt=dag.attempt if attempt is None else attempt,
        reference=reference,
        phase=phase,
        tasks={
            "prepare-data": TaskStatus(phase="Succeeded", started_at=T0, finished_at=T0),
            "train": TaskStatus(phase=train, started_at=T0),
        },
        message=message,
        observed_at=at,
    )
    result: dict[str, Any] = msgspec.to_builtins(body)
    return result


async def test_a_callback_that_beats_the_trigger_makes_the_dag_running(
    client: AsyncTestClient[Any], engine: AsyncEngine
) -> None:
    dag = await dag_in(engine, DagState.TRIGGERING)

    response = await client.post(
        f"/v1/dags/{dag.id}/status", json=report(dag, "Running"), headers=CONTROLLER
    )

    assert response.status_code == 204, response.text
    running = await load_dag(engine, dag.id)
    assert running.state is DagState.RUNNING
    assert running.controller_ref == "wl-1"
    assert running.timeout_at is not None
    assert (await transitions(engine, dag.id))[-1] == ("RUNNING", "controller")

    view = (await client.get(f"/v1/dags/{dag.id}", headers=TENANT)).json()
    assert view["state"] == "RUNNING"
    assert view["controller_ref"] == "wl-1"
    assert view["tasks"]["train"]["phase"] == "Running"
    assert view["tasks"]["prepare-data"]["phase"] == "Succeeded"
    assert view["tasks"]["prepare-data"]["finished_at"].startswith("2026-01-01T12:00:00")


async def test_success_is_final_and_a_late_running_report_changes_nothing(
    client: AsyncTestClient[Any], engine: AsyncEngine
) -> None:
    dag = await dag_in(engine, DagState.TRIGGERING, DagState.RUNNING)
    url = f"/v1/dags/{dag.id}/status"

    done = report(dag, "Succeeded", at=T0 + timedelta(seconds=5), train="Succeeded")
    assert (await client.post(url, json=done, headers=CONTROLLER)).status_code == 204
    history = await transitions(engine, dag.id)
    late = report(dag, "Running", at=T0 + timedelta(seconds=2))
    assert (await client.post(url, json=late, headers=CONTROLLER)).status_code == 204
    assert (await client.post(url, json=done, headers=CONTROLLER)).status_code == 204

    finished = await load_dag(engine, dag.id)
    assert finished.state is DagState.SUCCEEDED
    assert await transitions(engine, dag.id) == history
    assert history[-1] == ("SUCCEEDED", "controller")
    view = (await client.get(f"/v1/dags/{dag.id}", headers=TENANT)).json()
    assert view["tasks"]["train"]["phase"] == "Succeeded"


async def test_out_of_order_phase_reports_keep_the_newest(
    client: AsyncTestClient[Any], engine: AsyncEngine
) -> None:
    dag = await dag_in(engine, DagState.TRIGGERING, DagState.RUNNING)
    url = f"/v1/dags/{dag.id}/status"
    newer = report(dag, "Running", at=T0 + timedelta(seconds=10), train="Running")
    older = report(dag, "Running", at=T0, train="Pending")

    assert (await client.post(url, json=newer, headers=CONTROLLER)).status_code == 204
    version = (await load_dag(engine, dag.id)).version
    assert (await client.post(url, json=older, headers=CONTROLLER)).status_code == 204

    current = await load_dag(engine, dag.id)
    assert current.version == version  # the older report wrote nothing
    assert msgspec.json.decode(current.task_phases or b"{}")["train"]["phase"] == "Running"
    assert current.status_at == (T0 + timedelta(seconds=10)).replace(tzinfo=None)


async def test_a_failed_workload_fails_the_dag_with_its_message(
    client: AsyncTestClient[Any], engine: AsyncEngine
) -> None:
    dag = await dag_in(engine, DagState.TRIGGERING, DagState.RUNNING)
    failed = report(dag, "Failed", train="Failed", message="task 'train' failed: OOMKilled")

    response = await client.post(f"/v1/dags/{dag.id}/status", json=failed, headers=CONTROLLER)

    assert response.status_code == 204
    view = (await client.get(f"/v1/dags/{dag.id}", headers=TENANT)).json()
    assert view["state"] == "FAILED"
    assert view["error"] == "task 'train' failed: OOMKilled"
    assert view["tasks"]["train"]["phase"] == "Failed"


async def test_a_report_of_an_earlier_attempt_is_accepted_and_ignored(
    client: AsyncTestClient[Any], engine: AsyncEngine
) -> None:
    dag = await dag_in(
        engine,
        DagState.TRIGGERING,
        DagState.PENDING,
        DagState.TRIGGERING,
        DagState.RUNNING,
        attempt=2,
        controller_ref="wl-2",
    )
    stale = report(dag, "Failed", attempt=1, reference="wl-1", message="old attempt failed")

    response = await client.post(f"/v1/dags/{dag.id}/status", json=stale, headers=CONTROLLER)

    assert response.status_code == 204
    assert (await load_dag(engine, dag.id)).state is DagState.RUNNING


async def test_only_the_controller_credential_may_report(
    client: AsyncTestClient[Any], engine: AsyncEngine
) -> None:
    dag = await dag_in(engine, DagState.TRIGGERING)
    url = f"/v1/dags/{dag.id}/status"
    body = report(dag, "Running")

    assert (await client.post(url, json=body, headers=TENANT)).status_code == 401
    assert (await client.post(url, json=body)).status_code == 401
    wrong = {"Authorization": "Bearer not-the-controller"}
    assert (await client.post(url, json=body, headers=wrong)).status_code == 401
    # ... and the Controller's credential opens nothing else.
    assert (await client.get(f"/v1/dags/{dag.id}", headers=CONTROLLER)).status_code == 401
    assert (await load_dag(engine, dag.id)).state is DagState.TRIGGERING


async def test_unknown_dag_mismatched_and_malformed_reports_are_problems(
    client: AsyncTestClient[Any], engine: AsyncEngine
) -> None:
    dag = await dag_in(engine, DagState.TRIGGERING)
    body = report(dag, "Running")

    nobody = new_id()
    unknown = await client.post(
        f"/v1/dags/{nobody}/status", json={**body, "dag_id": nobody}, headers=CONTROLLER
    )
    assert unknown.status_code == 404
    assert unknown.headers["content-type"].startswith("application/problem+json")

    mismatched = await dag_in(engine, DagState.TRIGGERING)
    response = await client.post(f"/v1/dags/{mismatched.id}/status", json=body, headers=CONTROLLER)
    assert response.status_code == 400
    assert response.json()["type"].endswith("dag-id-mismatch")

    broken = await client.post(
        f"/v1/dags/{dag.id}/status", json={"phase": "Sideways"}, headers=CONTROLLER
    )
    assert broken.status_code == 400
    assert (await load_dag(engine, dag.id)).state is DagState.TRIGGERING
    assert (await load_dag(engine, mismatched.id)).state is DagState.TRIGGERING


async def test_the_asyncapi_document_is_public(client: AsyncTestClient[Any]) -> None:
    response = await client.get("/docs/asyncapi.json")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == asyncapi_document(load(KafkaSettings))
