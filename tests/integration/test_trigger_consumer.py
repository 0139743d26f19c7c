"""The trigger's Kafka consumer in-process: real MariaDB, real Kafka, the reference Controller."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from aimtp.controller import ControllerClient
from aimtp.events import SCHEMA_VERSION, cloudevent_headers
from aimtp.leader import LeaderLock
from aimtp.settings import DatabaseSettings, KafkaSettings, RelaySettings, TriggerSettings, load
from aimtp.spec import SpecLimits
from app.service import DagService
from consumers.app import Trigger
from consumers.handlers import TriggerHandler
from consumers.retry import RetryPolicy
from controller_sim.server import ControllerSim, SimConfig
from outbox.main import create_producer
from outbox.relay import Relay
from tests.kafka_reader import read_topic
from tests.polling import wait_until
from tests.services import create_topic, unique_topic

pytestmark = pytest.mark.integration

EXAMPLE = (Path(__file__).parents[2] / "examples" / "dag.json").read_bytes()
PARTITIONS = 3


@dataclass
class Running:
    """A trigger consuming its own topic, plus what feeds it."""

    kafka: KafkaSettings
    group: str
    sim: ControllerSim
    trigger: Trigger
    relay: Relay
    producer: AIOKafkaProducer
    stop: asyncio.Event
    task: asyncio.Task[None]


@pytest.fixture
async def running(engine: AsyncEngine) -> AsyncIterator[Running]:
    topic = unique_topic("aimtp.test.trigger")
    kafka = KafkaSettings(
        kafka_bootstrap=load(KafkaSettings).kafka_bootstrap,
        kafka_topic=topic,
        kafka_dlq_topic=f"{topic}.dlq",
    )
    await create_topic(topic, partitions=PARTITIONS)
    await create_topic(kafka.kafka_dlq_topic, partitions=1)
    group = f"test-trigger-{uuid.uuid4().hex[:8]}"
    settings = TriggerSettings(trigger_group=group, trigger_commit_interval_ms=50)
    stop = asyncio.Event()
    producer = create_producer(kafka, load(RelaySettings))
    await producer.start()
    lock = LeaderLock(load(DatabaseSettings).database_url, f"test-{group}")
    async with (
        ControllerSim(SimConfig(time_scale=10.0, callback_attempts=1)) as sim,
        ControllerClient(sim.url, "") as controller,
    ):
        handler = TriggerHandler(
            engine,
            controller,
            consumer=group,
            public_url="http://127.0.0.1:9",
            policy=RetryPolicy(attempts=2, base=0.01, cap=0.01, budget=1.0),
            stop=stop,
        )
        trigger = Trigger(handler, kafka, settings, stop)
        relay = Relay(engine, producer, lock, load(RelaySettings), topic)
        task = asyncio.create_task(trigger.run(stop))
        try:
            yield Running(kafka, group, sim, trigger, relay, producer, stop, task)
        finally:
            stop.set()
            await asyncio.wait_for(task, timeout=30)
            await producer.stop()
            await lock.close()


async def submit(engine: AsyncEngine, count: int) -> list[str]:
    service = DagService(engine, SpecLimits(), timedelta(days=1))
    return [(await service.submit("tenant-a", EXAMPLE)).dag.id for _ in range(count)]


async def publish_outbox(running: Running) -> None:
    while (await running.relay.relay_batch()).claimed:
        pass


async def states(engine: AsyncEngine) -> dict[str, int]:
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT state, COUNT(*) FROM dags GROUP BY state"))
        return {row[0]: row[1] for row in rows}


async def committed_everything(running: Running) -> bool:
    """Whether the group's committed offsets reached the end of every partition."""
    bootstrap = running.kafka.kafka_bootstrap
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await admin.start()
    await reader.start()
    try:
        committed = await admin.list_consumer_group_offsets(running.group)
        partitions = [TopicPartition(running.kafka.kafka_topic, p) for p in range(PARTITIONS)]
        ends = await reader.end_offsets(partitions)
    finally:
        await reader.stop()
        await admin.close()
    return all(
        ends[tp] == 0 or (tp in committed and committed[tp].offset == ends[tp]) for tp in partitions
    )


async def test_dags_go_running_and_offsets_are_committed(
    engine: AsyncEngine, running: Running
) -> None:
    dags = await submit(engine, 30)
    await publish_outbox(running)

    await wait_until(lambda: _states_are(engine, {"RUNNING": 30}), timeout=30)
    await publish_outbox(running)  # dag.triggering / dag.running: read and ignored
    await wait_until(lambda: committed_everything(running), timeout=20)

    assert running.sim.state.store.creations == dict.fromkeys(dags, 1)


async def test_events_published_twice_trigger_once(engine: AsyncEngine, running: Running) -> None:
    dags = await submit(engine, 10)
    await publish_outbox(running)
    await wait_until(lambda: _states_are(engine, {"RUNNING": 10}), timeout=30)
    before = _metric("duplicate")

    # A relay that crashed between the broker's ack and its commit publishes again.
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE outbox SET status = 'pending'"))
    await publish_outbox(running)
    await wait_until(lambda: _async(_metric("duplicate") - before >= 10), timeout=20)

    assert running.sim.state.store.requests == dict.fromkeys(dags, 1)
    assert await states(engine) == {"RUNNING": 10}


async def test_unreadable_records_go_to_the_dead_letter_topic_and_the_stream_goes_on(
    engine: AsyncEngine, running: Running
) -> None:
    topic = running.kafka.kafka_topic
    headers = cloudevent_headers(
        event_id="e-1",
        event_type="dag.submitted",
        source="server",
        time=datetime.now(UTC),
        traceparent=None,
    )
    future_version = msgspec.json.encode({"schema_version": SCHEMA_VERSION + 1, "dag_id": "x"})
    garbage = [
        (b"dag-x", b"\x00\x01 not json at all", headers),
        (b"dag-y", b'{"schema_version": 1, "event_id": "e-1", "type": "dag.subm', headers),
        (b"dag-z", future_version, headers),
        (b"dag-w", b'{"schema_version": 1}', [("odd", b"\xff\xfe")]),
    ]
    for key, value, record_headers in garbage:
        await running.producer.send_and_wait(topic, value, key=key, headers=record_headers)
    dags = await submit(engine, 3)
    await publish_outbox(running)

    await wait_until(lambda: _states_are(engine, {"RUNNING": 3}), timeout=30)
    dead = await read_topic(running.kafka.kafka_dlq_topic, expected=len(garbage), timeout=20)

    assert sorted(r.value for r in dead) == sorted(value for _, value, _ in garbage)
    by_key = {r.key: r for r in dead}
    assert set(by_key) == {"dag-x", "dag-y", "dag-z", "dag-w"}
    assert by_key["dag-x"].headers["aimtp_dlq_reason"].startswith("malformed:")
    assert by_key["dag-y"].headers["aimtp_dlq_reason"].startswith("malformed:")
    assert by_key["dag-z"].headers["aimtp_dlq_reason"].startswith("schema_version:")
    assert by_key["dag-w"].headers["odd"] == "\\xff\\xfe"
    assert by_key["dag-x"].headers["ce_id"] == "e-1"
    assert by_key["dag-x"].headers["aimtp_dlq_topic"] == topic
    assert by_key["dag-x"].headers["aimtp_dlq_consumer"] == running.group
    assert running.sim.state.store.creations == dict.fromkeys(dags, 1)
    await wait_until(lambda: committed_everything(running), timeout=20)


def _event(dag_id: str, event_type: str = "dag.submitted") -> tuple[bytes, list[Any]]:
    """A well-formed record body and its CloudEvents headers."""
    event_id = str(uuid.uuid4())
    body = {
        "schema_version": SCHEMA_VERSION,
        "event_id": event_id,
        "type": event_type,
        "dag_id": dag_id,
        "tenant": "t",
        "dag_name": "d",
        "state": "PENDING",
        "previous_state": None,
        "attempt": 1,
        "occurred_at": datetime.now(UTC).isoformat(),
        "actor": "server",
    }
    headers = cloudevent_headers(
        event_id=event_id,
        event_type=event_type,
        source="server",
        time=datetime.now(UTC),
        traceparent=None,
    )
    return msgspec.json.encode(body), headers


async def test_events_without_headers_of_unknown_types_or_dags_are_handled_as_designed(
    engine: AsyncEngine, running: Running
) -> None:
    """No CloudEvents headers or an unknown event type: the DLQ. A well-formed event of a
    DAG this database never had: counted and skipped. The stream goes on either way."""
    topic = running.kafka.kafka_topic
    headerless, _ = _event("dag-h")
    unknown_type, unknown_type_headers = _event("dag-t", "dag.exploded")
    stranger, stranger_headers = _event(str(uuid.uuid4()))
    stranger_key = msgspec.json.decode(stranger)["dag_id"].encode()
    unknown_before = _metric("unknown_dag")

    await running.producer.send_and_wait(topic, headerless, key=b"dag-h", headers=[])
    await running.producer.send_and_wait(
        topic, unknown_type, key=b"dag-t", headers=unknown_type_headers
    )
    await running.producer.send_and_wait(
        topic, stranger, key=stranger_key, headers=stranger_headers
    )
    dags = await submit(engine, 3)
    await publish_outbox(running)

    await wait_until(lambda: _states_are(engine, {"RUNNING": 3}), timeout=30)
    dead = {r.key: r for r in await read_topic(running.kafka.kafka_dlq_topic, expected=2)}
    assert set(dead) == {"dag-h", "dag-t"}
    assert dead["dag-h"].headers["aimtp_dlq_reason"].startswith("missing_header:")
    assert dead["dag-t"].headers["aimtp_dlq_reason"].startswith("malformed:")
    await wait_until(lambda: _async(_metric("unknown_dag") - unknown_before == 1), timeout=20)
    assert running.sim.state.store.creations == dict.fromkeys(dags, 1)
    await wait_until(lambda: committed_everything(running), timeout=20)


async def test_a_second_trigger_takes_over_partitions_losing_and_duplicating_nothing(
    engine: AsyncEngine, running: Running
) -> None:
    first = await submit(engine, 40)
    await publish_outbox(running)
    stop = asyncio.Event()
    async with ControllerClient(running.sim.url, "") as controller:
        handler = TriggerHandler(
            engine,
            controller,
            consumer=running.group,
            public_url="http://127.0.0.1:9",
            policy=RetryPolicy(attempts=2, base=0.01, cap=0.01, budget=1.0),
            stop=stop,
        )
        settings = TriggerSettings(trigger_group=running.group, trigger_commit_interval_ms=50)
        second = Trigger(handler, running.kafka, settings, stop)
        task = asyncio.create_task(second.run(stop))
        try:
            await wait_until(lambda: _async(bool(second.dispatcher.partitions)), timeout=30)
            more = await submit(engine, 40)
            await publish_outbox(running)
            await wait_until(lambda: _states_are(engine, {"RUNNING": 80}), timeout=30)
            shares = (running.trigger.dispatcher.partitions, second.dispatcher.partitions)
        finally:
            stop.set()
            await asyncio.wait_for(task, timeout=30)

    assert all(shares), shares  # the partitions were split between the two
    assert running.sim.state.store.creations == dict.fromkeys(first + more, 1)
    async with engine.connect() as conn:
        claims = (
            await conn.execute(
                text("SELECT COUNT(*) FROM dag_transitions WHERE to_state = 'TRIGGERING'")
            )
        ).scalar_one()
    assert claims == 80


async def test_stopping_drains_and_commits(engine: AsyncEngine, running: Running) -> None:
    await submit(engine, 5)
    await publish_outbox(running)
    await wait_until(lambda: _states_are(engine, {"RUNNING": 5}), timeout=30)

    running.stop.set()
    await asyncio.wait_for(running.task, timeout=30)

    assert await committed_everything(running)
    assert running.trigger.dispatcher.in_flight == 0


async def _states_are(engine: AsyncEngine, expected: dict[str, int]) -> bool:
    return await states(engine) == expected


async def _async(value: bool) -> bool:
    return value


def _metric(result: str) -> float:
    labels = {"event_type": "dag.submitted", "result": result}
    return REGISTRY.get_sample_value("aimtp_trigger_events_total", labels) or 0.0
