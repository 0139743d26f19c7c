"""Every accepted DAG runs exactly once: the whole stack as real processes.

One stack serves the module; the tests run in order and each clears the reference
Controller's faults first.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncEngine

from aimtp.settings import KafkaSettings, load
from tests.e2e.conftest import EXAMPLE, Stack
from tests.kafka_reader import read_topic
from tests.polling import wait_until

pytestmark = pytest.mark.e2e

STACK_ENV = {
    # Enough retrying to ride out the 10 s Controller outage below.
    "AIMTP_TRIGGER_RETRY_ATTEMPTS": "30",
    "AIMTP_TRIGGER_RETRY_BASE_SECONDS": "0.2",
    "AIMTP_TRIGGER_RETRY_CAP_SECONDS": "2",
    "AIMTP_TRIGGER_RETRY_BUDGET_SECONDS": "40",
    "AIMTP_TRIGGER_GRACE_SECONDS": "10",
}
# The example's tasks take 10 simulated seconds in all: 0.2 s here.
STACK_SIM_ARGS = ["--default-task-seconds", "0.05", "--time-scale", "0.02"]

_HISTORY = text(
    "SELECT dag_id, GROUP_CONCAT(to_state ORDER BY id SEPARATOR ' ') FROM dag_transitions "
    "WHERE dag_id IN :ids GROUP BY dag_id"
).bindparams(bindparam("ids", expanding=True))


async def histories(engine: AsyncEngine, dag_ids: list[str]) -> dict[str, str]:
    async with engine.connect() as conn:
        return {row[0]: row[1] for row in await conn.execute(_HISTORY, {"ids": dag_ids})}


async def assert_created_once(stack: Stack, dag_ids: list[str]) -> None:
    creations = await stack.creations()
    assert {dag_id: creations.get(dag_id) for dag_id in dag_ids} == dict.fromkeys(dag_ids, 1)


@pytest.mark.timeout(180)
async def test_300_dags_all_succeed_each_created_once(stack: Stack, engine: AsyncEngine) -> None:
    await stack.clear_faults()

    dag_ids = await stack.submit_many(300)
    await stack.wait_all(engine, dag_ids, "SUCCEEDED", timeout=120)

    await assert_created_once(stack, dag_ids)
    assert set((await histories(engine, dag_ids)).values()) == {
        "PENDING TRIGGERING RUNNING SUCCEEDED"
    }
    view = await stack.dag(dag_ids[0])
    assert view["controller_ref"]
    assert {task["phase"] for task in view["tasks"].values()} == {"Succeeded"}


@pytest.mark.timeout(60)
async def test_a_dag_the_controller_rejects_fails_with_its_message(
    stack: Stack, engine: AsyncEngine
) -> None:
    await stack.clear_faults()
    await stack.set_faults(reject_image_pattern="/blocked/")
    spec: dict[str, Any] = copy.deepcopy(EXAMPLE)
    spec["tasks"][1]["image"] = "registry.example.com/blocked/trainer:2.4.1"

    dag_id = await stack.submit(spec)
    await stack.wait_all(engine, [dag_id], "FAILED", timeout=30)

    error = (await stack.dag(dag_id))["error"]
    assert "image 'registry.example.com/blocked/trainer:2.4.1' is not allowed" in error
    assert dag_id not in await stack.creations()


@pytest.mark.timeout(120)
async def test_a_controller_outage_delays_but_loses_nothing(
    stack: Stack, engine: AsyncEngine
) -> None:
    await stack.clear_faults()
    await stack.set_faults(unavailable_for_seconds=10)

    dag_ids = await stack.submit_many(50)
    await asyncio.sleep(3)
    during = await stack.states(engine, dag_ids)
    await stack.wait_all(engine, dag_ids, "SUCCEEDED", timeout=60)

    assert set(during) <= {"PENDING", "TRIGGERING"}, during
    await assert_created_once(stack, dag_ids)


@pytest.mark.timeout(150)
async def test_kill_9_of_the_trigger_mid_batch_loses_and_duplicates_nothing(
    stack: Stack, engine: AsyncEngine
) -> None:
    await stack.clear_faults()
    # The Controller creates 25 workloads a second and asks the rest to come back
    # (503 + Retry-After): the batch takes ~8 s, so the kill lands in the middle of it.
    await stack.set_faults(max_creations_per_second=25)

    dag_ids = await stack.submit_many(200)

    async def some_started() -> bool:
        started = await stack.states(engine, dag_ids)
        return started.get("RUNNING", 0) + started.get("SUCCEEDED", 0) >= 20

    await wait_until(some_started, timeout=60)
    stack.processes["trigger"].kill()
    at_kill = await stack.states(engine, dag_ids)
    await stack.restart("trigger")
    await stack.wait_all(engine, dag_ids, "SUCCEEDED", timeout=90)

    assert at_kill.get("SUCCEEDED", 0) < len(dag_ids), "the batch was over before the kill"
    await assert_created_once(stack, dag_ids)
    # No DAG was claimed twice or moved twice: the new trigger resumed the old claims.
    assert set((await histories(engine, dag_ids)).values()) == {
        "PENDING TRIGGERING RUNNING SUCCEEDED"
    }


@pytest.mark.timeout(60)
async def test_a_garbage_record_goes_to_the_dlq_while_the_stream_goes_on(
    stack: Stack, engine: AsyncEngine
) -> None:
    await stack.clear_faults()
    producer = AIOKafkaProducer(bootstrap_servers=load(KafkaSettings).kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(stack.topic, b'{"schema_version": 1, "dag', key=b"junk")
    finally:
        await producer.stop()

    dag_ids = await stack.submit_many(5)
    await stack.wait_all(engine, dag_ids, "SUCCEEDED", timeout=30)
    dead = await read_topic(stack.dlq_topic, expected=1, timeout=20)

    assert [(r.key, r.value) for r in dead] == [("junk", b'{"schema_version": 1, "dag')]
    assert dead[0].headers["aimtp_dlq_reason"].startswith("malformed:")
    assert dead[0].headers["aimtp_dlq_topic"] == stack.topic


@pytest.mark.timeout(60)
async def test_sigterm_drains_the_trigger_and_exits_0(stack: Stack) -> None:
    assert await stack.processes["trigger"].terminate(timeout=30) == 0
    log = stack.processes["trigger"].log_path.read_text()
    assert "trigger stopped" in log
