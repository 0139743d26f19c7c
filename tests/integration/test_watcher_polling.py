"""The watcher's poll of a RUNNING DAG applies the Controller's answer as a status
callback would (``aimtp.status``), against the real MariaDB and an in-process reference
Controller."""

from __future__ import annotations

import copy
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from aimtp.controller import ControllerClient, WorkloadRequest
from aimtp.db import QUERIES
from aimtp.db.records import DagRecord, utcnow
from aimtp.events import Actor
from aimtp.lifecycle import submit_dag, transition
from aimtp.settings import DeadlineSettings, WatcherSettings, load
from aimtp.states import DagState
from controller_sim.server import ControllerSim
from sweeper import Rules
from tests.polling import wait_until

SPEC: dict[str, Any] = json.loads((Path(__file__).parents[2] / "examples" / "dag.json").read_text())
PAST = timedelta(minutes=10)


@pytest.fixture
def rules(engine: AsyncEngine, controller: ControllerClient) -> Rules:
    return Rules(engine, controller, load(WatcherSettings), load(DeadlineSettings))


async def running_dag(engine: AsyncEngine, controller: ControllerClient, spec: Any) -> DagRecord:
    """A RUNNING DAG with its workload at the Controller, its status overdue."""
    async with engine.begin() as conn:
        dag = await submit_dag(
            conn, tenant="t", name="polled", spec_json=json.dumps(spec).encode(), labels={}
        )
        for state in (DagState.TRIGGERING, DagState.RUNNING):
            moved = await transition(conn, dag, state, actor=Actor.TRIGGER)
            assert moved is not None
            dag = moved
    await controller.put_workload(
        WorkloadRequest(
            dag_id=dag.id, attempt=1, spec=spec, callback_url="http://127.0.0.1:9/unused"
        )
    )
    await make_overdue(engine, dag.id)
    return await reload(engine, dag.id)


async def make_overdue(engine: AsyncEngine, dag_id: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE dags SET deadline_at = :t WHERE id = :id"),
            {"t": utcnow() - PAST, "id": dag_id},
        )


async def reload(engine: AsyncEngine, dag_id: str) -> DagRecord:
    async with engine.connect() as conn:
        return DagRecord.from_row((await conn.execute(QUERIES["get_dag"], {"id": dag_id})).one())


async def last_transition(engine: AsyncEngine, dag_id: str) -> tuple[str, str, str | None]:
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT to_state, actor, reason FROM dag_transitions "
                    "WHERE dag_id = :id ORDER BY id DESC LIMIT 1"
                ),
                {"id": dag_id},
            )
        ).one()
    return row[0], row[1], row[2]


async def test_a_poll_with_nothing_new_still_moves_the_deadline_out(
    engine: AsyncEngine, rules: Rules, controller: ControllerClient
) -> None:
    """A long task reports nothing for hours: each poll must push the next one a whole
    RUNNING_STATUS period away, not leave the DAG overdue for every sweep."""
    dag = await running_dag(engine, controller, SPEC)
    first = await rules.sweep()
    polled = await reload(engine, dag.id)
    await make_overdue(engine, dag.id)

    second = await rules.sweep()

    again = await reload(engine, dag.id)
    assert (first.actions["refresh"], second.actions["refresh"]) == (1, 1)
    assert again.state is DagState.RUNNING
    assert again.deadline_at is not None
    assert again.deadline_at > utcnow()
    # The workload did not change: what the first poll stored stands.
    assert (again.status_at, again.task_phases) == (polled.status_at, polled.task_phases)


async def test_an_outcome_learned_by_polling_is_recorded_as_a_callback_would_record_it(
    engine: AsyncEngine, sim: ControllerSim, controller: ControllerClient, rules: Rules
) -> None:
    fast = copy.deepcopy(SPEC)
    for task in fast["tasks"]:
        task["annotations"] = {"sim.aimtp.io/duration-seconds": "0.01"}
    sim.state.faults.update({"fail_task": "evaluate"})
    dag = await running_dag(engine, controller, fast)

    async def failed() -> bool:
        workload = await controller.get_workload(dag.id)
        return workload is not None and workload.phase == "Failed"

    await wait_until(failed, timeout=10)
    report = await rules.sweep()

    ended = await reload(engine, dag.id)
    assert report.actions["fail"] == 1
    assert ended.state is DagState.FAILED
    assert ended.error == "task 'evaluate' failed: simulated failure"
    assert ended.task_phases is not None
    phases = {name: task["phase"] for name, task in msgspec.json.decode(ended.task_phases).items()}
    assert phases == {
        "prepare-data": "Succeeded",
        "train": "Succeeded",
        "evaluate": "Failed",
        "register-model": "Pending",
    }
    assert await last_transition(engine, dag.id) == ("FAILED", "watcher", ended.error)
