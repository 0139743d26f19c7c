"""aimtp-watcher's rules from constructed stuck states, against the real MariaDB and a
real (in-process) reference Controller."""

from __future__ import annotations

import dataclasses
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
from aimtp.leader import LeaderLock
from aimtp.lifecycle import submit_dag, transition
from aimtp.settings import DatabaseSettings, DeadlineSettings, WatcherSettings, load
from aimtp.states import DagState
from controller_sim.server import ControllerSim, SimConfig
from sweeper import Rules, SweepReport, Watcher
from tests.polling import wait_until

EXAMPLE = (Path(__file__).parents[2] / "examples" / "dag.json").read_bytes()
SETTINGS = dataclasses.replace(
    load(WatcherSettings), watcher_max_reemits=2, watcher_max_attempts=3, watcher_batch_size=50
)
DEADLINES = load(DeadlineSettings)
PAST = timedelta(minutes=10)


@pytest.fixture
def rules(engine: AsyncEngine, controller: ControllerClient) -> Rules:
    return Rules(engine, controller, SETTINGS, DEADLINES)


async def make_dag(engine: AsyncEngine, *path: DagState, **changes: Any) -> DagRecord:
    """A DAG walked through ``path`` and then made overdue in its last state."""
    async with engine.begin() as conn:
        dag = await submit_dag(conn, tenant="t", name="stuck", spec_json=EXAMPLE, labels={})
        for state in path:
            moved = await transition(conn, dag, state, actor=Actor.TRIGGER, **changes)
            assert moved is not None
            dag = moved
        await conn.execute(
            text("UPDATE dags SET deadline_at = :t WHERE id = :id"),
            {"t": utcnow() - PAST, "id": dag.id},
        )
    return await reload(engine, dag.id)


async def reload(engine: AsyncEngine, dag_id: str) -> DagRecord:
    async with engine.connect() as conn:
        return DagRecord.from_row((await conn.execute(QUERIES["get_dag"], {"id": dag_id})).one())


async def events_of(engine: AsyncEngine, dag_id: str) -> list[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT event_type FROM outbox WHERE dag_id = :id ORDER BY id"), {"id": dag_id}
        )
        return list(rows.scalars())


async def last_transition(engine: AsyncEngine, dag_id: str) -> tuple[str, str, str]:
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


async def create_workload(controller: ControllerClient, dag: DagRecord) -> None:
    await controller.put_workload(
        WorkloadRequest(
            dag_id=dag.id,
            attempt=dag.attempt,
            spec=json.loads(EXAMPLE),
            callback_url="http://127.0.0.1:9/unused",
        )
    )


async def test_pending_past_deadline_is_reemitted_then_failed(
    engine: AsyncEngine, rules: Rules
) -> None:
    dag = await make_dag(engine)

    report = await rules.sweep()

    dag = await reload(engine, dag.id)
    assert (dag.state, dag.reemits) == (DagState.PENDING, 1)
    assert dag.deadline_at is not None
    assert dag.deadline_at > utcnow()
    assert report.actions["reemit"] == 1
    assert await events_of(engine, dag.id) == ["dag.submitted", "dag.submitted"]
    assert (await last_transition(engine, dag.id))[1] == "watcher"

    for _ in range(SETTINGS.watcher_max_reemits):
        async with engine.begin() as conn:
            await conn.execute(
                text("UPDATE dags SET deadline_at = :t WHERE id = :id"),
                {"t": utcnow() - PAST, "id": dag.id},
            )
        await rules.sweep()
    dag = await reload(engine, dag.id)
    assert dag.state is DagState.FAILED
    assert dag.error is None  # the reason is in the history
    state, actor, reason = await last_transition(engine, dag.id)
    assert (state, actor) == ("FAILED", "watcher")
    assert "re-emits" in reason


async def test_triggering_past_deadline_starts_a_new_attempt_until_exhausted(
    engine: AsyncEngine, rules: Rules
) -> None:
    dag = await make_dag(engine, DagState.TRIGGERING)

    await rules.sweep()

    dag = await reload(engine, dag.id)
    assert (dag.state, dag.attempt) == (DagState.PENDING, 2)
    assert (await events_of(engine, dag.id))[-1] == "dag.submitted"

    for attempt in (2, 3):
        async with engine.begin() as conn:
            moved = await transition(conn, dag, DagState.TRIGGERING, actor=Actor.TRIGGER)
            assert moved is not None
            await conn.execute(
                text("UPDATE dags SET deadline_at = :t WHERE id = :id"),
                {"t": utcnow() - PAST, "id": dag.id},
            )
        await rules.sweep()
        dag = await reload(engine, dag.id)
        if attempt < SETTINGS.watcher_max_attempts:
            assert (dag.state, dag.attempt) == (DagState.PENDING, attempt + 1)
    assert dag.state is DagState.FAILED
    assert "trigger attempts exhausted" in (await last_transition(engine, dag.id))[2]


async def test_running_with_stale_status_asks_the_controller(
    engine: AsyncEngine, rules: Rules, controller: ControllerClient
) -> None:
    dag = await make_dag(engine, DagState.TRIGGERING, DagState.RUNNING)
    await create_workload(controller, dag)

    report = await rules.sweep()

    refreshed = await reload(engine, dag.id)
    assert report.actions["refresh"] == 1
    assert refreshed.state is DagState.RUNNING
    assert refreshed.deadline_at is not None
    assert refreshed.deadline_at > utcnow()
    assert refreshed.task_phases is not None
    phases = msgspec.json.decode(refreshed.task_phases)
    assert set(phases) == {"prepare-data", "train", "evaluate", "register-model"}


async def test_running_whose_workload_finished_takes_the_controllers_word(
    engine: AsyncEngine,
) -> None:
    """The callbacks were lost (they go nowhere here); the watcher learns the outcome."""
    fast = ControllerSim(SimConfig(token="ctl", time_scale=0.001))
    await fast.start()
    try:
        async with ControllerClient(fast.url, "ctl") as controller:
            succeeded = await make_dag(engine, DagState.TRIGGERING, DagState.RUNNING)
            await create_workload(controller, succeeded)
            await wait_for_phase(controller, succeeded.id, "Succeeded")
            fast.state.faults.update({"fail_task": "train"})
            failed = await make_dag(engine, DagState.TRIGGERING, DagState.RUNNING)
            await create_workload(controller, failed)
            await wait_for_phase(controller, failed.id, "Failed")

            await Rules(engine, controller, SETTINGS, DEADLINES).sweep()
    finally:
        await fast.stop()

    assert (await reload(engine, succeeded.id)).state is DagState.SUCCEEDED
    assert (await reload(engine, failed.id)).state is DagState.FAILED
    assert "simulated failure" in (await last_transition(engine, failed.id))[2]


async def wait_for_phase(controller: ControllerClient, dag_id: str, phase: str) -> None:
    async def reached() -> bool:
        workload = await controller.get_workload(dag_id)
        return workload is not None and workload.phase == phase

    await wait_until(reached, timeout=10)


async def test_running_whose_workload_was_lost_is_retriggered(
    engine: AsyncEngine, rules: Rules
) -> None:
    dag = await make_dag(engine, DagState.TRIGGERING, DagState.RUNNING, controller_ref="wl-x")

    await rules.sweep()

    dag = await reload(engine, dag.id)
    assert (dag.state, dag.attempt, dag.controller_ref) == (DagState.PENDING, 2, None)
    assert "workload lost" in (await last_transition(engine, dag.id))[2]
    assert (await events_of(engine, dag.id))[-1] == "dag.submitted"


async def test_running_past_its_timeout_is_timed_out_and_deleted(
    engine: AsyncEngine, rules: Rules, controller: ControllerClient
) -> None:
    dag = await make_dag(
        engine, DagState.TRIGGERING, DagState.RUNNING, timeout_at=utcnow() - timedelta(seconds=1)
    )
    async with engine.begin() as conn:  # status is fresh: only the timeout is due
        await conn.execute(
            text("UPDATE dags SET deadline_at = :t WHERE id = :id"),
            {"t": utcnow() + PAST, "id": dag.id},
        )
    await create_workload(controller, dag)

    report = await rules.sweep()

    assert report.actions["timeout"] == 1
    assert (await reload(engine, dag.id)).state is DagState.TIMED_OUT
    assert await controller.get_workload(dag.id) is None
    assert (await events_of(engine, dag.id))[-1] == "dag.timed_out"


async def test_cancelling_past_deadline_deletes_again_then_cancelled(
    engine: AsyncEngine, rules: Rules, controller: ControllerClient
) -> None:
    dag = await make_dag(engine, DagState.TRIGGERING, DagState.RUNNING, DagState.CANCELLING)
    await create_workload(controller, dag)

    await rules.sweep()

    assert (await reload(engine, dag.id)).state is DagState.CANCELLED
    assert await controller.get_workload(dag.id) is None


async def test_controller_down_leaves_the_dag_for_the_next_sweep(
    engine: AsyncEngine, rules: Rules, sim: ControllerSim
) -> None:
    dag = await make_dag(engine, DagState.TRIGGERING, DagState.RUNNING, DagState.CANCELLING)
    sim.state.faults.update({"unavailable_for_seconds": 60})

    report = await rules.sweep()

    assert report.actions["skipped"] == 1
    assert (await reload(engine, dag.id)).version == dag.version


async def test_dags_the_controller_could_not_serve_do_not_hide_the_ones_behind_them(
    engine: AsyncEngine, controller: ControllerClient, sim: ControllerSim
) -> None:
    dags = [
        await make_dag(engine, DagState.TRIGGERING, DagState.RUNNING, DagState.CANCELLING)
        for _ in range(5)
    ]
    sim.state.faults.update({"unavailable_for_seconds": 60})
    small_batches = dataclasses.replace(SETTINGS, watcher_batch_size=2)

    report = await Rules(engine, controller, small_batches, DEADLINES).sweep()

    assert report.overdue["CANCELLING"] == len(dags)  # every one tried, each once
    assert report.actions["skipped"] == len(dags)


async def test_a_stale_read_changes_nothing(engine: AsyncEngine, rules: Rules) -> None:
    """The watcher read the DAG, then a trigger moved it: the watcher's action is void."""
    stale = await make_dag(engine)
    async with engine.begin() as conn:
        assert await transition(conn, stale, DagState.TRIGGERING, actor=Actor.TRIGGER)

    report = SweepReport()
    await rules._reemit(stale, report)

    assert report.actions == {}
    assert (await reload(engine, stale.id)).state is DagState.TRIGGERING
    assert await events_of(engine, stale.id) == ["dag.submitted", "dag.triggering"]


async def test_orphan_workloads_are_reported_and_deleted_when_configured(
    engine: AsyncEngine, controller: ControllerClient
) -> None:
    finished = await make_dag(engine, DagState.TRIGGERING, DagState.RUNNING, DagState.CANCELLING)
    live = await make_dag(engine, DagState.TRIGGERING, DagState.RUNNING)
    async with engine.begin() as conn:
        assert await transition(conn, finished, DagState.CANCELLED, actor=Actor.TRIGGER)
        await conn.execute(text("UPDATE dags SET deadline_at = :t"), {"t": utcnow() + PAST})
    unknown = msgspec.structs.replace(live, id="00000000-0000-7000-8000-0000000000ee")
    for dag in (finished, live, unknown):
        await create_workload(controller, dag)

    report = await Rules(engine, controller, SETTINGS, DEADLINES).sweep()
    assert sorted(report.orphans) == sorted([finished.id, unknown.id])
    assert await controller.get_workload(finished.id) is not None  # reported only

    deleting = dataclasses.replace(SETTINGS, watcher_delete_orphans=True)
    report = await Rules(engine, controller, deleting, DEADLINES).sweep()
    assert report.actions["orphan_deleted"] == 2
    assert await controller.get_workload(finished.id) is None
    assert await controller.get_workload(live.id) is not None


async def test_overdue_scan_is_served_by_the_state_deadline_index(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        plan = (
            (
                await conn.execute(
                    text("EXPLAIN " + str(QUERIES["overdue_dags"])),
                    {"state": "PENDING", "now": utcnow(), "limit": 10},
                )
            )
            .mappings()
            .one()
        )
    assert plan["key"] == "ix_dags_state_deadline"


async def test_a_failed_sweep_fails_the_once_run_but_not_the_schedule(
    rules: Rules, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken() -> None:
        raise RuntimeError("the database went away mid-sweep")

    monkeypatch.setattr(rules, "sweep", broken)
    lock = LeaderLock(load(DatabaseSettings).database_url, "test-broken")
    watcher = Watcher(rules, lock, 1)
    try:
        assert await watcher.tick() is None  # the scheduled form logs and tries again
        with pytest.raises(RuntimeError, match="went away"):
            await watcher.once()  # the CronJob form fails its run
        assert not lock.held  # and releases the lock either way
    finally:
        await lock.close()


async def test_only_one_watcher_sweeps(engine: AsyncEngine, rules: Rules) -> None:
    url = load(DatabaseSettings).database_url
    first = Watcher(rules, LeaderLock(url, "test-watcher"), 1)
    second = Watcher(rules, LeaderLock(url, "test-watcher"), 1)
    try:
        assert await first.tick() is not None
        assert await second.tick() is None
        assert await second.once() is None  # an overlapping CronJob run does nothing
    finally:
        await first.once()  # releases
        assert await second.tick() is not None  # the standby takes over
        await second.once()
