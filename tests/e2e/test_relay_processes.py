"""Relay processes for real: two at once, kill -9, a broker outage, SIGTERM."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from aimtp.db import QUERIES
from aimtp.db.records import utcnow
from aimtp.ids import new_id
from tests.kafka_reader import Record, read_topic
from tests.polling import wait_until
from tests.processes import ROOT, Process, free_port
from tests.services import create_topic, unique_topic

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("clean_tables")]


class Seq(msgspec.Struct):
    dag: str
    seq: int


class Relays:
    """Relay processes sharing one database, topic and leader lock."""

    def __init__(self, topic: str, log_dir: Path) -> None:
        self.topic = topic
        self.log_dir = log_dir
        self.lock = f"e2e-relay-{uuid.uuid4().hex[:8]}"
        self.processes: list[tuple[Process, int]] = []

    async def start(self, count: int = 1) -> list[Process]:
        started = []
        for _ in range(count):
            port = free_port()
            process = Process(
                f"relay-{len(self.processes)}",
                ["relay"],
                {
                    "AIMTP_KAFKA_TOPIC": self.topic,
                    "AIMTP_RELAY_METRICS_PORT": str(port),
                    "AIMTP_RELAY_LOCK_NAME": self.lock,
                    "AIMTP_RELAY_LEADER_WAIT_SECONDS": "0.5",
                    "AIMTP_LOG_LEVEL": "INFO",
                },
                self.log_dir,
            ).start()
            self.processes.append((process, port))
            started.append(process)
        for process in started:
            await process.wait_http(f"http://127.0.0.1:{self.port(process)}/healthz")
        return started

    def port(self, process: Process) -> int:
        return next(port for p, port in self.processes if p is process)

    def active(self) -> list[Process]:
        return [p for p, port in self.processes if p.alive() and _is_active(port)]

    def stop_all(self) -> None:
        for process, _ in self.processes:
            process.kill()


def _is_active(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            body = r.read().decode()
    except OSError:
        return False
    return "aimtp_relay_active 1.0" in body


@pytest.fixture
async def relays(tmp_path: Path) -> AsyncIterator[Relays]:
    topic = unique_topic("aimtp.test.relayproc")
    await create_topic(topic, partitions=3)
    group = Relays(topic, tmp_path)
    yield group
    group.stop_all()


async def insert_events(engine: AsyncEngine, dags: list[str], start: int, count: int) -> None:
    async with engine.begin() as conn:
        for seq in range(start, start + count):
            for dag in dags:
                await conn.execute(
                    QUERIES["insert_outbox"],
                    {
                        "event_id": new_id(),
                        "dag_id": dag,
                        "event_type": "dag.submitted",
                        "source": "test",
                        "payload": msgspec.json.encode(Seq(dag, seq)),
                        "traceparent": None,
                        "created_at": utcnow(),
                    },
                )


async def pending(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(
            (
                await conn.execute(text("SELECT COUNT(*) FROM outbox WHERE status = 'pending'"))
            ).scalar_one()
        )


def assert_in_order_once(records: list[Record], dags: list[str], count: int, *, once: bool) -> None:
    seen: dict[str, list[int]] = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        seen[record.key].append(msgspec.json.decode(record.value, type=Seq).seq)
    for dag in dags:
        first_seen = list(dict.fromkeys(seen[dag]))  # order of first appearance
        assert first_seen == list(range(count)), f"DAG {dag}: {seen[dag][:20]}"
        if once:
            assert len(seen[dag]) == count, f"DAG {dag} published twice"


@pytest.mark.timeout(120)
async def test_two_relays_publish_each_row_once_in_order(
    engine: AsyncEngine, relays: Relays
) -> None:
    await relays.start(2)
    dags = [new_id() for _ in range(10)]
    for start in range(0, 100, 10):
        await insert_events(engine, dags, start, 10)
        await asyncio.sleep(0.05)

    records = await read_topic(relays.topic, expected=1000, timeout=60)

    assert len(relays.active()) == 1
    assert_in_order_once(records, dags, 100, once=True)


@pytest.mark.timeout(120)
async def test_standby_takes_over_within_five_seconds_of_kill_9(
    engine: AsyncEngine, relays: Relays
) -> None:
    await relays.start(2)
    await wait_until(lambda: _async(len(relays.active()) == 1), timeout=10)
    dags = [new_id() for _ in range(5)]
    await insert_events(engine, dags, 0, 20)
    await wait_until(lambda: _pending_is(engine, 0), timeout=20)

    [leader] = relays.active()
    leader.kill()
    killed_at = time.monotonic()
    await insert_events(engine, dags, 20, 20)
    await wait_until(lambda: _pending_is(engine, 0), timeout=15)
    failover = time.monotonic() - killed_at

    assert failover <= 5.0, f"standby took {failover:.1f}s"
    records = await read_topic(relays.topic, expected=200, timeout=30)
    assert_in_order_once(records, dags, 40, once=False)


@pytest.mark.timeout(180)
async def test_broker_outage_mid_stream_loses_nothing(engine: AsyncEngine, relays: Relays) -> None:
    await relays.start(1)
    dags = [new_id() for _ in range(5)]
    await insert_events(engine, dags, 0, 20)
    await wait_until(lambda: _pending_is(engine, 0), timeout=20)

    kafka = ROOT / "infra" / "local" / "kafka.sh"
    await asyncio.to_thread(subprocess.run, ["bash", str(kafka), "down"], check=True)
    assert not _port_open(9092), (
        "the broker still runs: this test stops the broker that this checkout's "
        "infra/local/kafka.sh started, and this one was started elsewhere"
    )
    try:
        await insert_events(engine, dags, 20, 20)  # accepted while the broker is down
        await asyncio.sleep(3)
        assert await pending(engine) == 100  # nothing marked without an ack
    finally:
        await asyncio.to_thread(subprocess.run, ["bash", str(kafka), "up"], check=True)

    await wait_until(lambda: _pending_is(engine, 0), timeout=60)
    records = await read_topic(relays.topic, expected=200, timeout=30)
    assert_in_order_once(records, dags, 40, once=False)


@pytest.mark.timeout(60)
async def test_sigterm_finishes_and_hands_leadership_over(
    engine: AsyncEngine, relays: Relays
) -> None:
    _first, _second = await relays.start(2)
    await wait_until(lambda: _async(len(relays.active()) == 1), timeout=10)
    [leader] = relays.active()

    assert await leader.terminate(timeout=25) == 0

    await wait_until(lambda: _async(len(relays.active()) == 1), timeout=5)
    dags = [new_id()]
    await insert_events(engine, dags, 0, 10)
    await wait_until(lambda: _pending_is(engine, 0), timeout=10)


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def _async(value: bool) -> bool:
    return value


async def _pending_is(engine: AsyncEngine, count: int) -> bool:
    return await pending(engine) == count
