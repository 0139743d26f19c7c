"""The watcher's rules against the real failures behind them, on a whole running stack.

Each test causes one failure the watcher exists for (an event lost between the outbox
and Kafka, a trigger killed mid-call, status callbacks lost, a Controller that forgets a
workload, a DAG that outlives its timeout, a Controller down while a DAG is cancelled)
and checks what a user cares about: the DAG still ends where it should, and the
Controller ran it exactly as often as it had to. One stack serves the module; each test
clears the faults first.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from aimtp.db.records import utcnow
from tests.e2e.conftest import EXAMPLE, TENANT_TOKEN, Stack
from tests.polling import wait_until

pytestmark = pytest.mark.e2e

STACK_ENV = {
    "AIMTP_WATCHER_INTERVAL_SECONDS": "1",
    "AIMTP_PENDING_DEADLINE_SECONDS": "2",
    "AIMTP_TRIGGERING_DEADLINE_SECONDS": "3",
    "AIMTP_RUNNING_STATUS_SECONDS": "2",
    "AIMTP_CANCELLING_DEADLINE_SECONDS": "2",
    # The trigger's retrying stays below the TRIGGERING deadline, as in production.
    "AIMTP_TRIGGER_RETRY_BUDGET_SECONDS": "2",
    # A restarted trigger waits for Kafka to drop the killed one from the group (~10 s):
    # the watcher re-emits meanwhile and must not give up on the DAGs for that.
    "AIMTP_WATCHER_MAX_REEMITS": "20",
}
# Simulated seconds run 50x faster: the example DAG (10 s of tasks) takes 0.2 s.
TIME_SCALE = 0.02
STACK_SIM_ARGS = ["--default-task-seconds", "0.05", "--time-scale", str(TIME_SCALE)]

Step = tuple[str | None, str, str]
"""One transition of a DAG's history: (from_state, to_state, actor)."""


def one_task_dag(seconds: float, **fields: Any) -> dict[str, Any]:
    """A single-task DAG whose task runs ``seconds`` of real time at the Controller."""
    spec: dict[str, Any] = copy.deepcopy(EXAMPLE)
    task = spec["tasks"][0]
    task["annotations"] = {"sim.aimtp.io/duration-seconds": str(seconds / TIME_SCALE)}
    spec["tasks"] = [task]
    spec.update(fields)
    return spec


def steps(events: list[dict[str, Any]]) -> list[Step]:
    return [(e["from_state"], e["to_state"], e["actor"]) for e in events]


@pytest.mark.timeout(60)
async def test_an_event_marked_published_but_never_sent_is_reemitted(
    stack: Stack, engine: AsyncEngine
) -> None:
    await stack.clear_faults()
    assert await stack.processes["relay"].terminate() == 0
    dag_id = await stack.submit()
    # The relay "published" the row, but the record never reached Kafka.
    async with engine.begin() as conn:
        marked = await conn.execute(
            text(
                "UPDATE outbox SET status = 'published', published_at = :now "
                "WHERE dag_id = :id AND status = 'pending'"
            ),
            {"now": utcnow(), "id": dag_id},
        )
    assert marked.rowcount == 1
    await stack.restart("relay")

    await stack.wait_all(engine, [dag_id], "SUCCEEDED", timeout=30)

    assert (await stack.creations()).get(dag_id) == 1
    events = await stack.history(dag_id)
    assert steps(events)[:2] == [(None, "PENDING", "server"), ("PENDING", "PENDING", "watcher")]
    assert "re-emitted" in events[1]["reason"]
    assert steps(events)[-1][1] == "SUCCEEDED"


@pytest.mark.timeout(90)
async def test_a_trigger_killed_mid_call_leaves_every_dag_created_exactly_once(
    stack: Stack, engine: AsyncEngine
) -> None:
    await stack.clear_faults()
    await stack.set_faults(hang=True)
    dag_ids = await stack.submit_many(6)

    async def all_calls_in_flight() -> bool:
        requests = await stack.put_requests()
        return all(requests.get(dag_id, 0) >= 1 for dag_id in dag_ids)

    await wait_until(all_calls_in_flight, timeout=20)
    # None got an answer (the watcher may already have started a new attempt of some).
    assert set(await stack.states(engine, dag_ids)) <= {"PENDING", "TRIGGERING"}
    stack.processes["trigger"].kill()
    # The hung calls now complete at the Controller, with nobody left to hear the answer.
    await stack.clear_faults()
    await stack.restart("trigger")

    await stack.wait_all(engine, dag_ids, "SUCCEEDED", timeout=60)

    creations = await stack.creations()
    assert {dag_id: creations.get(dag_id) for dag_id in dag_ids} == dict.fromkeys(dag_ids, 1)


@pytest.mark.timeout(90)
async def test_outcomes_whose_callbacks_were_lost_are_learned_from_the_controller(
    stack: Stack, engine: AsyncEngine
) -> None:
    """The server is down while the workloads run and end, so every status callback is
    dropped: the watcher asks the Controller and records what a callback would have."""
    await stack.clear_faults()
    await stack.set_faults(fail_task="doomed")
    succeeds = await stack.submit(one_task_dag(seconds=2))
    failing = one_task_dag(seconds=2)
    failing["tasks"][0]["name"] = "doomed"
    fails = await stack.submit(failing)
    assert await stack.processes["server"].terminate() == 0

    # The trigger records RUNNING from the Controller's answer; the rest is the watcher's.
    await stack.wait_all(engine, [succeeds, fails], "RUNNING", timeout=20)
    await stack.wait_all(engine, [succeeds], "SUCCEEDED", timeout=20)
    await stack.wait_all(engine, [fails], "FAILED", timeout=20)
    await stack.restart("server")

    succeeded, failed = await stack.dag(succeeds), await stack.dag(fails)
    assert {name: task["phase"] for name, task in succeeded["tasks"].items()} == {
        "prepare-data": "Succeeded"
    }
    assert {name: task["phase"] for name, task in failed["tasks"].items()} == {"doomed": "Failed"}
    assert failed["error"] == "task 'doomed' failed: simulated failure"
    assert steps(await stack.history(succeeds))[-1] == ("RUNNING", "SUCCEEDED", "watcher")
    assert steps(await stack.history(fails))[-1] == ("RUNNING", "FAILED", "watcher")


@pytest.mark.timeout(60)
async def test_a_workload_the_controller_forgot_is_run_again_as_a_new_attempt(
    stack: Stack, engine: AsyncEngine
) -> None:
    await stack.clear_faults()
    dag_id = await stack.submit(one_task_dag(seconds=4))
    await stack.wait_all(engine, [dag_id], "RUNNING", timeout=20)

    async with stack.http.post(f"{stack.controller_url}/admin/forget/{dag_id}") as response:
        assert response.status == 200, "the workload ended before it could be forgotten"

    await stack.wait_all(engine, [dag_id], "SUCCEEDED", timeout=40)

    assert (await stack.dag(dag_id))["attempt"] == 2
    assert (await stack.creations()).get(dag_id) == 2
    events = await stack.history(dag_id)
    lost = [e for e in events if (e["from_state"], e["to_state"]) == ("RUNNING", "PENDING")]
    assert [(e["actor"], e["attempt"]) for e in lost] == [("watcher", 2)]
    assert "workload lost at the Controller" in lost[0]["reason"]
    assert steps(events)[-1] == ("RUNNING", "SUCCEEDED", "controller")


@pytest.mark.timeout(60)
async def test_a_dag_past_its_timeout_is_timed_out_and_deleted_at_the_controller(
    stack: Stack, engine: AsyncEngine
) -> None:
    await stack.clear_faults()
    dag_id = await stack.submit(one_task_dag(seconds=120, timeout_seconds=2))
    await stack.wait_all(engine, [dag_id], "RUNNING", timeout=20)

    await stack.wait_all(engine, [dag_id], "TIMED_OUT", timeout=20)

    assert await stack.workload_status(dag_id) == 404
    assert (await stack.creations()).get(dag_id) == 1
    assert steps(await stack.history(dag_id))[-1] == ("RUNNING", "TIMED_OUT", "watcher")


@pytest.mark.timeout(60)
async def test_a_cancel_the_trigger_could_not_deliver_is_finished_by_the_watcher(
    stack: Stack, engine: AsyncEngine
) -> None:
    await stack.clear_faults()
    dag_id = await stack.submit(one_task_dag(seconds=120))
    await stack.wait_all(engine, [dag_id], "RUNNING", timeout=20)
    # Longer than the trigger's retry budget: the trigger gives up on the DELETE.
    await stack.set_faults(unavailable_for_seconds=5)

    async with stack.http.post(
        f"{stack.api_url}/v1/dags/{dag_id}/cancel",
        headers={"Authorization": f"Bearer {TENANT_TOKEN}"},
    ) as response:
        assert response.status == 202, await response.text()

    await stack.wait_all(engine, [dag_id], "CANCELLED", timeout=30)

    assert await stack.workload_status(dag_id) == 404
    assert steps(await stack.history(dag_id))[-1] == ("CANCELLING", "CANCELLED", "watcher")
