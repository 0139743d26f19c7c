"""aimtp-relay against the real MariaDB and Kafka: nothing skipped, lost or reordered."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import timedelta

import msgspec
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from aimtp.db import QUERIES
from aimtp.db.records import utcnow
from aimtp.events import decode_event
from aimtp.ids import new_id
from aimtp.leader import LeaderLock
from aimtp.lifecycle import submit_dag
from aimtp.outbox_admin import list_parked, release_parked
from aimtp.settings import DatabaseSettings, KafkaSettings, RelaySettings, load
from outbox.main import create_producer
from outbox.relay import Relay
from tests.kafka_reader import read_topic
from tests.services import create_topic, unique_topic

SETTINGS = dataclasses.replace(load(RelaySettings), relay_batch_size=200)


class Seq(msgspec.Struct):
    dag: str
    seq: int


@pytest.fixture
async def topic() -> str:
    name = unique_topic("aimtp.test.relay")
    await create_topic(name, partitions=3)
    return name


@pytest.fixture
async def relay(engine: AsyncEngine, topic: str) -> AsyncIterator[Relay]:
    producer = create_producer(load(KafkaSettings), SETTINGS)
    await producer.start()
    lock = LeaderLock(load(DatabaseSettings).database_url, f"test-relay-{topic}")
    try:
        yield Relay(engine, producer, lock, SETTINGS, topic)
    finally:
        await producer.stop()
        await lock.close()


async def insert_event(
    conn: AsyncConnection, dag_id: str, seq: int, payload: bytes | None = None
) -> None:
    await conn.execute(
        QUERIES["insert_outbox"],
        {
            "event_id": new_id(),
            "dag_id": dag_id,
            "event_type": "dag.submitted",
            "source": "test",
            "payload": payload if payload is not None else msgspec.json.encode(Seq(dag_id, seq)),
            "traceparent": None,
            "created_at": utcnow(),
        },
    )


async def drain(relay: Relay) -> int:
    total = 0
    while (outcome := await relay.relay_batch()).claimed:
        total += len(outcome.published)
    return total


async def statuses(engine: AsyncEngine) -> dict[str, int]:
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT status, COUNT(*) FROM outbox GROUP BY status"))
        return {row[0]: row[1] for row in rows}


async def test_round_trip_with_cloudevents_headers(
    engine: AsyncEngine, relay: Relay, topic: str
) -> None:
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    async with engine.begin() as conn:
        dag = await submit_dag(
            conn,
            tenant="tenant-a",
            name="round-trip",
            spec_json=b'{"name":"round-trip","tasks":[]}',
            labels={"team": "nlp"},
            traceparent=traceparent,
        )

    assert await drain(relay) == 1

    [record] = await read_topic(topic, expected=1)
    event = decode_event(record.value)
    assert record.key == dag.id
    assert (event.dag_id, event.type, event.labels) == (dag.id, "dag.submitted", {"team": "nlp"})
    assert record.headers["ce_id"] == event.event_id
    assert record.headers["ce_type"] == "dag.submitted"
    assert record.headers["ce_source"] == "/aimtp/server"
    assert record.headers["ce_specversion"] == "1.0"
    assert record.headers["ce_time"].endswith("Z")
    assert record.headers["content-type"] == "application/json"
    assert record.headers["traceparent"] == traceparent
    assert await statuses(engine) == {"published": 1}


async def test_row_whose_transaction_commits_late_is_still_published(
    engine: AsyncEngine, relay: Relay, topic: str
) -> None:
    late = "00000000-0000-7000-8000-00000000000a"
    early = "00000000-0000-7000-8000-00000000000b"
    async with engine.connect() as slow:
        transaction = await slow.begin()
        await insert_event(slow, late, 1)  # takes the lower id, commits later
        async with engine.begin() as fast:
            await insert_event(fast, early, 1)

        assert await drain(relay) == 1  # the committed row; the open one is skipped, not awaited
        await transaction.commit()

    assert await drain(relay) == 1
    records = await read_topic(topic, expected=2)
    assert sorted(r.key for r in records) == sorted([late, early])
    assert await statuses(engine) == {"published": 2}


async def test_per_dag_order_over_thousands_of_interleaved_events(
    engine: AsyncEngine, relay: Relay, topic: str
) -> None:
    dags = [new_id() for _ in range(25)]
    per_dag = 120
    async with engine.begin() as conn:
        for seq in range(per_dag):
            for dag in dags:
                await insert_event(conn, dag, seq)

    assert await drain(relay) == len(dags) * per_dag

    records = await read_topic(topic, expected=len(dags) * per_dag)
    seen: dict[str, list[int]] = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        body = msgspec.json.decode(record.value, type=Seq)
        assert body.dag == record.key
        seen[body.dag].append(body.seq)
    assert set(seen) == set(dags)
    for dag in dags:
        assert seen[dag] == list(range(per_dag)), f"DAG {dag} out of order"


async def test_crash_after_publish_before_mark_republishes_never_loses(
    engine: AsyncEngine, relay: Relay, topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with engine.begin() as conn:
        for seq in range(5):
            await insert_event(conn, "00000000-0000-7000-8000-0000000000cc", seq)

    async def crash(*_: object) -> None:
        raise ConnectionError("process died before marking")

    with monkeypatch.context() as patched:
        patched.setattr(relay, "_record", crash)
        with pytest.raises(ConnectionError):
            await relay.relay_batch()
    assert await statuses(engine) == {"pending": 5}  # the claim rolled back: nothing lost

    assert await drain(relay) == 5
    records = await read_topic(topic, expected=10)
    ids = [r.headers["ce_id"] for r in records]
    assert len(ids) == 10
    assert len(set(ids)) == 5
    assert await statuses(engine) == {"published": 5}


async def test_poison_row_is_parked_while_other_dags_flow(
    engine: AsyncEngine, relay: Relay, topic: str
) -> None:
    poisoned, healthy = new_id(), new_id()
    async with engine.begin() as conn:
        await insert_event(conn, poisoned, 0, payload=b"x" * (2 * 1024 * 1024))
        await insert_event(conn, poisoned, 1)
        await insert_event(conn, healthy, 0)
        await insert_event(conn, healthy, 1)

    assert await drain(relay) == 2

    records = await read_topic(topic, expected=2)
    assert [r.key for r in records] == [healthy, healthy]
    [parked] = await list_parked(engine)
    assert parked.dag_id == poisoned
    assert parked.reason is not None
    assert "TooLarge" in parked.reason
    assert await statuses(engine) == {"published": 2, "parked": 1, "pending": 1}

    # The poisoned DAG's later row waits behind the parked one until an operator decides.
    assert await drain(relay) == 0
    assert await release_parked(engine, parked.id, drop=True)
    assert await drain(relay) == 1
    assert await statuses(engine) == {"published": 3, "dropped": 1}


async def test_released_row_is_retried(engine: AsyncEngine, relay: Relay) -> None:
    dag = new_id()
    async with engine.begin() as conn:
        await insert_event(conn, dag, 0, payload=b"x" * (2 * 1024 * 1024))
    await drain(relay)
    [parked] = await list_parked(engine)
    async with engine.begin() as conn:  # the operator fixes the cause
        await conn.execute(
            text("UPDATE outbox SET payload = '{}' WHERE id = :id"), {"id": parked.id}
        )

    assert await release_parked(engine, parked.id)
    assert await drain(relay) == 1
    assert not await release_parked(engine, parked.id)  # no longer parked


async def test_purge_removes_only_old_published_rows(engine: AsyncEngine, relay: Relay) -> None:
    async with engine.begin() as conn:
        for seq in range(6):
            await insert_event(conn, new_id(), seq)
    await drain(relay)
    old = utcnow() - timedelta(hours=SETTINGS.relay_retention_hours + 1)
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE outbox SET published_at = :old ORDER BY id LIMIT 4"), {"old": old}
        )
        await conn.execute(text("UPDATE outbox SET created_at = :old"), {"old": old})
        await insert_event(conn, new_id(), 0)  # pending, never purged however old
        await conn.execute(
            text("UPDATE outbox SET created_at = :old WHERE status = 'pending'"), {"old": old}
        )

    assert await relay.purge_once() == 4
    assert await statuses(engine) == {"published": 2, "pending": 1}


async def test_backlog_gauges_report_pending_rows_and_lag(
    engine: AsyncEngine, relay: Relay
) -> None:
    from aimtp import metrics

    async with engine.begin() as conn:
        for seq in range(3):
            await insert_event(conn, new_id(), seq)
        await conn.execute(
            text("UPDATE outbox SET created_at = :t"), {"t": utcnow() - timedelta(seconds=42)}
        )
    await relay.refresh_backlog_gauges()
    assert metrics.OUTBOX_PENDING_ROWS._value.get() == 3
    assert 41 <= metrics.OUTBOX_OLDEST_PENDING_AGE._value.get() < 60

    await drain(relay)
    await relay.refresh_backlog_gauges()
    assert metrics.OUTBOX_PENDING_ROWS._value.get() == 0
    assert metrics.OUTBOX_OLDEST_PENDING_AGE._value.get() == 0


async def test_leader_that_lost_its_lock_connection_steps_down(engine: AsyncEngine) -> None:
    url = load(DatabaseSettings).database_url
    first = LeaderLock(url, "test-step-down")
    second = LeaderLock(url, "test-step-down")
    try:
        assert await first.try_acquire(0)
        assert not await second.try_acquire(0)
        # A standby that waited in vain keeps its connection but does not lead.
        assert (first.held, second.held) == (True, False)
        assert not await second.try_acquire(0)
        assert not second.held
        async with engine.begin() as conn:
            holder = (
                await conn.execute(text("SELECT IS_USED_LOCK(:n)"), {"n": first.name})
            ).scalar_one()
            await conn.execute(text(f"KILL CONNECTION {int(holder)}"))

        assert not await first.still_held()  # checked before every batch
        assert await second.try_acquire(2)
        assert await second.still_held()
    finally:
        await first.close()
        await second.close()


async def test_a_deposed_leaders_open_batch_keeps_its_successor_waiting(
    engine: AsyncEngine, relay: Relay, topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The leader's lock connection dies while its batch is open: the standby that takes
    over must not publish the DAG's later rows ahead of that batch (SKIP LOCKED alone
    would step over the old batch's rows and do exactly that)."""
    dag = new_id()
    async with engine.begin() as conn:
        for seq in range(3):
            await insert_event(conn, dag, seq)

    gate = asyncio.Event()
    record = relay._record

    async def record_when_let_go(conn: AsyncConnection, outcome: object) -> None:
        await gate.wait()  # published, not yet marked: the old leader's batch stays open
        await record(conn, outcome)  # type: ignore[arg-type]

    monkeypatch.setattr(relay, "_record", record_when_let_go)
    deposed = asyncio.create_task(relay.relay_batch())
    await asyncio.sleep(0.5)
    async with engine.begin() as conn:
        for seq in range(3, 6):
            await insert_event(conn, dag, seq)

    producer = create_producer(load(KafkaSettings), SETTINGS)
    await producer.start()
    lock = LeaderLock(load(DatabaseSettings).database_url, f"test-successor-{topic}")
    successor = Relay(engine, producer, lock, SETTINGS, topic)
    try:
        succeeding = asyncio.create_task(successor.relay_batch())
        await asyncio.sleep(1.0)
        assert not succeeding.done(), "the successor published while the old batch was open"
        gate.set()
        assert len((await deposed).published) == 3
        assert len((await asyncio.wait_for(succeeding, timeout=10)).published) == 3
    finally:
        gate.set()
        await producer.stop()
        await lock.close()

    records = await read_topic(topic, expected=6)
    ordered = sorted(records, key=lambda r: (r.partition, r.offset))
    assert [msgspec.json.decode(r.value, type=Seq).seq for r in ordered] == list(range(6))
    assert await statuses(engine) == {"published": 6}


async def test_relay_loop_publishes_continuously_and_stops_on_request(
    engine: AsyncEngine, relay: Relay, topic: str
) -> None:
    stop = asyncio.Event()
    running = asyncio.create_task(relay.run(stop))
    dag = new_id()
    for seq in range(50):
        async with engine.begin() as conn:
            await insert_event(conn, dag, seq)
        await asyncio.sleep(0.002)
    records = await read_topic(topic, expected=50, timeout=20)
    stop.set()
    await asyncio.wait_for(running, timeout=10)
    assert [msgspec.json.decode(r.value, type=Seq).seq for r in records] == list(range(50))
