"""The trigger's handler against the real MariaDB and an in-process reference Controller."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from aimtp.controller import (
    ControllerClient,
    PutResult,
    StatusReport,
    WorkloadRequest,
)
from aimtp.db import QUERIES
from aimtp.db.records import DagRecord, utcnow
from aimtp.events import SCHEMA_VERSION, Actor, DagEvent, EventType, decode_event
from aimtp.ids import new_id
from aimtp.lifecycle import transition
from aimtp.spec import SpecLimits
from aimtp.states import DagState
from aimtp.status import StatusResult, apply_status
from aimtp.tracing import trace_id_of
from app.service import DagService
from consumers.handlers import Result, TriggerHandler
from consumers.retry import RetryPolicy
from controller_sim.server import ControllerSim, SimConfig

EXAMPLE = (Path(__file__).parents[2] / "examples" / "dag.json").read_bytes()
TOKEN = "controller-token"
CONSUMER = "test-trigger"
PUBLIC_URL = "http://127.0.0.1:9"  # callbacks are applied by the tests themselves
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
FAST_RETRIES = RetryPolicy(attempts=3, base=0.01, cap=0.02, budget=5.0)


@pytest.fixture
async def sim() -> AsyncIterator[ControllerSim]:
    # Slow tasks keep workloads Running for the whole test; callbacks go nowhere.
    config = SimConfig(token=TOKEN, time_scale=10.0, callback_attempts=1)
    async with ControllerSim(config) as sim:
        yield sim


@pytest.fixture
async def controller(sim: ControllerSim) -> AsyncIterator[ControllerClient]:
    async with ControllerClient(sim.url, TOKEN, timeout_seconds=5) as client:
        yield client


def make_handler(
    engine: AsyncEngine, controller: ControllerClient, policy: RetryPolicy = FAST_RETRIES
) -> TriggerHandler:
    return TriggerHandler(
        engine,
        controller,
        consumer=CONSUMER,
        public_url=PUBLIC_URL,
        policy=policy,
        stop=asyncio.Event(),
    )


@pytest.fixture
def handler(engine: AsyncEngine, controller: ControllerClient) -> TriggerHandler:
    return make_handler(engine, controller)


async def submit(engine: AsyncEngine) -> DagRecord:
    service = DagService(engine, SpecLimits(), timedelta(days=1))
    return (await service.submit("tenant-a", EXAMPLE, traceparent=TRACEPARENT)).dag


async def events(engine: AsyncEngine, dag_id: str) -> list[DagEvent]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT payload FROM outbox WHERE dag_id = :id ORDER BY id"), {"id": dag_id}
        )
        return [decode_event(row[0]) for row in rows]


async def last_event(engine: AsyncEngine, dag_id: str, kind: EventType) -> DagEvent:
    return [e for e in await events(engine, dag_id) if e.type is kind][-1]


async def load_dag(engine: AsyncEngine, dag_id: str) -> DagRecord:
    async with engine.connect() as conn:
        return DagRecord.from_row((await conn.execute(QUERIES["get_dag"], {"id": dag_id})).one())


async def history(engine: AsyncEngine, dag_id: str) -> list[tuple[str | None, str, str]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT from_state, to_state, actor FROM dag_transitions "
                "WHERE dag_id = :id ORDER BY id"
            ),
            {"id": dag_id},
        )
        return [(r[0], r[1], r[2]) for r in rows]


async def processed(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        count = (await conn.execute(text("SELECT COUNT(*) FROM processed_events"))).scalar_one()
        return int(count)


async def move(engine: AsyncEngine, dag: DagRecord, target: DagState, actor: Actor) -> DagRecord:
    async with engine.begin() as conn:
        moved = await transition(conn, dag, target, actor=actor)
    assert moved is not None
    return moved


async def test_a_submitted_dag_is_created_at_the_controller_and_running(
    engine: AsyncEngine, handler: TriggerHandler, sim: ControllerSim
) -> None:
    dag = await submit(engine)
    submitted = await last_event(engine, dag.id, EventType.SUBMITTED)

    assert await handler.handle(submitted, TRACEPARENT) is Result.TRIGGERED

    running = await load_dag(engine, dag.id)
    workload = sim.state.store.get(dag.id)
    assert workload is not None
    assert running.state is DagState.RUNNING
    assert running.controller_ref == workload.state.reference
    assert running.timeout_at is not None
    assert abs((running.timeout_at - utcnow()).total_seconds() - 3600) < 60  # the DAG's own
    assert set(msgspec.json.decode(running.task_phases or b"{}")) == {
        "prepare-data",
        "train",
        "evaluate",
        "register-model",
    }
    assert workload.callback_url == f"{PUBLIC_URL}/v1/dags/{dag.id}/status"
    assert trace_id_of(workload.traceparent) == trace_id_of(TRACEPARENT)
    assert workload.traceparent != TRACEPARENT  # a child span, same trace
    assert sim.state.store.creations == {dag.id: 1}
    assert await history(engine, dag.id) == [
        (None, "PENDING", "server"),
        ("PENDING", "TRIGGERING", "trigger"),
        ("TRIGGERING", "RUNNING", "trigger"),
    ]
    assert [e.type for e in await events(engine, dag.id)] == [
        EventType.SUBMITTED,
        EventType.TRIGGERING,
        EventType.RUNNING,
    ]


async def test_the_same_event_twice_is_one_put_and_one_transition(
    engine: AsyncEngine, handler: TriggerHandler, sim: ControllerSim
) -> None:
    dag = await submit(engine)
    submitted = await last_event(engine, dag.id, EventType.SUBMITTED)

    first, second = [await handler.handle(submitted) for _ in range(2)]

    assert (first, second) == (Result.TRIGGERED, Result.DUPLICATE)
    assert sim.state.store.requests == {dag.id: 1}
    assert len(await history(engine, dag.id)) == 3
    assert await processed(engine) == 1


async def test_a_re_emitted_event_for_a_running_dag_calls_nothing(
    engine: AsyncEngine, handler: TriggerHandler, sim: ControllerSim
) -> None:
    dag = await submit(engine)
    submitted = await last_event(engine, dag.id, EventType.SUBMITTED)
    await handler.handle(submitted)
    # The watcher's re-emit carries a new event id, so only the DAG's state says "done".
    re_emitted = msgspec.structs.replace(submitted, event_id=new_id())

    assert await handler.handle(re_emitted) is Result.STALE
    assert sim.state.store.requests == {dag.id: 1}


async def test_a_handling_cut_short_after_the_put_resumes_without_a_second_workload(
    engine: AsyncEngine, handler: TriggerHandler, controller: ControllerClient, sim: ControllerSim
) -> None:
    dag = await submit(engine)
    submitted = await last_event(engine, dag.id, EventType.SUBMITTED)
    # A trigger claimed the DAG, created the workload and died before recording it.
    claimed = await move(engine, dag, DagState.TRIGGERING, Actor.TRIGGER)
    await controller.put_workload(
        WorkloadRequest(
            dag_id=dag.id,
            attempt=1,
            spec=msgspec.json.decode(claimed.spec),
            callback_url=handler.callback_url(dag.id),
        )
    )

    assert await handler.handle(submitted) is Result.TRIGGERED  # Kafka redelivered it

    assert sim.state.store.creations == {dag.id: 1}
    assert sim.state.store.requests == {dag.id: 2}
    assert (await load_dag(engine, dag.id)).state is DagState.RUNNING


class CallbackFirst(ControllerClient):
    """A client that receives the Controller's answer only after its status callback
    has been applied: the order the reference Controller may produce."""

    def __init__(self, engine: AsyncEngine, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.engine = engine
        self.callback_results: list[StatusResult] = []

    async def put_workload(self, req: WorkloadRequest) -> PutResult:
        answer = await super().put_workload(req)
        workload = answer.workload
        report = StatusReport(
            dag_id=req.dag_id,
            attempt=workload.attempt,
            reference=workload.reference,
            phase="Running",
            tasks=workload.tasks,
            observed_at=workload.updated_at,
        )
        self.callback_results.append(await apply_status(self.engine, req.dag_id, report))
        return answer


async def test_a_callback_that_overtakes_the_controllers_answer_wins_quietly(
    engine: AsyncEngine, sim: ControllerSim
) -> None:
    dag = await submit(engine)
    submitted = await last_event(engine, dag.id, EventType.SUBMITTED)
    async with CallbackFirst(engine, sim.url, TOKEN) as racing:
        handler = make_handler(engine, racing)

        assert await handler.handle(submitted) is Result.RACED
        assert await handler.handle(submitted) is Result.DUPLICATE

    assert racing.callback_results == [StatusResult.APPLIED]
    running = await load_dag(engine, dag.id)
    assert running.state is DagState.RUNNING
    workload = sim.state.store.get(dag.id)
    assert workload is not None
    assert running.controller_ref == workload.state.reference
    assert await history(engine, dag.id) == [
        (None, "PENDING", "server"),
        ("PENDING", "TRIGGERING", "trigger"),
        ("TRIGGERING", "RUNNING", "controller"),
    ]
    assert sim.state.store.requests == {dag.id: 1}


async def test_a_dag_the_controller_rejects_fails_with_its_message(
    engine: AsyncEngine, handler: TriggerHandler, sim: ControllerSim
) -> None:
    sim.state.faults.update({"reject_image_pattern": "nlp/trainer"})
    dag = await submit(engine)

    result = await handler.handle(await last_event(engine, dag.id, EventType.SUBMITTED))

    assert result is Result.FAILED
    failed = await load_dag(engine, dag.id)
    assert failed.state is DagState.FAILED
    assert failed.error is not None
    assert "HTTP 422" in failed.error
    assert "image 'registry.example.com/nlp/trainer:2.4.1' is not allowed" in failed.error
    assert sim.state.store.requests == {dag.id: 1}  # a rejection is not retried
    assert (await last_event(engine, dag.id, EventType.FAILED)).reason == failed.error


async def test_an_unavailable_controller_leaves_the_dag_triggering_after_bounded_retries(
    engine: AsyncEngine, handler: TriggerHandler, sim: ControllerSim
) -> None:
    sim.state.faults.update({"unavailable_for_seconds": 60})
    dag = await submit(engine)
    submitted = await last_event(engine, dag.id, EventType.SUBMITTED)

    assert await handler.handle(submitted) is Result.DEFERRED

    assert (await load_dag(engine, dag.id)).state is DagState.TRIGGERING
    assert sim.state.store.requests == {dag.id: FAST_RETRIES.attempts}
    assert await processed(engine) == 0  # not handled: a redelivery tries again

    sim.state.faults.clear()
    assert await handler.handle(submitted) is Result.TRIGGERED
    assert sim.state.store.creations == {dag.id: 1}


async def test_our_own_bad_credential_never_fails_the_users_dag(
    engine: AsyncEngine, sim: ControllerSim
) -> None:
    dag = await submit(engine)
    async with ControllerClient(sim.url, "not-the-token") as wrong:
        handler = make_handler(engine, wrong)
        result = await handler.handle(await last_event(engine, dag.id, EventType.SUBMITTED))

    assert result is Result.DEFERRED
    assert (await load_dag(engine, dag.id)).state is DagState.TRIGGERING
    assert sim.state.store.requests == {dag.id: FAST_RETRIES.attempts}
    assert sim.state.store.creations == {}


async def test_cancel_deletes_the_workload_then_cancels_the_dag(
    engine: AsyncEngine, handler: TriggerHandler, sim: ControllerSim
) -> None:
    dag = await submit(engine)
    await handler.handle(await last_event(engine, dag.id, EventType.SUBMITTED))
    await move(engine, await load_dag(engine, dag.id), DagState.CANCELLING, Actor.SERVER)
    cancel = await last_event(engine, dag.id, EventType.CANCEL_REQUESTED)

    assert await handler.handle(cancel) is Result.CANCELLED
    assert await handler.handle(cancel) is Result.DUPLICATE

    assert sim.state.store.get(dag.id) is None
    cancelled = await load_dag(engine, dag.id)
    assert cancelled.state is DagState.CANCELLED
    assert (await history(engine, dag.id))[-1] == ("CANCELLING", "CANCELLED", "trigger")
    assert (await events(engine, dag.id))[-1].type is EventType.CANCELLED


async def test_cancelling_a_dag_the_controller_never_saw_cancels_it(
    engine: AsyncEngine, handler: TriggerHandler, sim: ControllerSim
) -> None:
    dag = await submit(engine)
    submitted = await last_event(engine, dag.id, EventType.SUBMITTED)
    await move(engine, dag, DagState.CANCELLING, Actor.SERVER)

    assert await handler.handle(submitted) is Result.STALE  # too late to trigger it
    cancel = await last_event(engine, dag.id, EventType.CANCEL_REQUESTED)
    assert await handler.handle(cancel) is Result.CANCELLED
    assert sim.state.store.creations == {}
    assert (await load_dag(engine, dag.id)).state is DagState.CANCELLED


async def test_an_event_for_an_unknown_dag_is_ignored(
    engine: AsyncEngine, handler: TriggerHandler, sim: ControllerSim
) -> None:
    dag = await submit(engine)
    stray = msgspec.structs.replace(
        await last_event(engine, dag.id, EventType.SUBMITTED), dag_id=new_id(), event_id=new_id()
    )

    assert await handler.handle(stray) is Result.UNKNOWN_DAG
    assert sim.state.store.requests == {}
    assert await processed(engine) == 0


async def test_events_for_other_subscribers_are_ignored(
    engine: AsyncEngine, handler: TriggerHandler, sim: ControllerSim
) -> None:
    dag = await submit(engine)
    for kind in set(EventType) - {EventType.SUBMITTED, EventType.CANCEL_REQUESTED}:
        other = DagEvent(
            schema_version=SCHEMA_VERSION,
            event_id=new_id(),
            type=kind,
            dag_id=dag.id,
            tenant=dag.tenant,
            dag_name=dag.name,
            state=DagState.PENDING,
            previous_state=None,
            attempt=1,
            occurred_at=utcnow(),
            actor=Actor.SERVER,
        )
        assert await handler.handle(other) is Result.IGNORED
    assert sim.state.store.requests == {}
    assert (await load_dag(engine, dag.id)).state is DagState.PENDING
