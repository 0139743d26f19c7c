"""examples/subscriber.py against FastStream's in-memory broker: decodes, dedupes by ce_id."""

from __future__ import annotations

import importlib.util
from datetime import UTC, datetime
from types import ModuleType

import msgspec
import pytest
from faststream.kafka import TestKafkaBroker

from aimtp.events import SCHEMA_VERSION, Actor, DagEvent, EventType, encode_event
from aimtp.ids import new_id
from aimtp.states import DagState
from tests.processes import ROOT


@pytest.fixture
def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "example_subscriber", ROOT / "examples" / "subscriber.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def event(dag_id: str, kind: EventType, state: DagState, previous: DagState | None) -> DagEvent:
    return DagEvent(
        schema_version=SCHEMA_VERSION,
        event_id=new_id(),
        type=kind,
        dag_id=dag_id,
        tenant="t",
        dag_name="d",
        state=state,
        previous_state=previous,
        attempt=1,
        occurred_at=datetime.now(UTC),
        actor=Actor.TRIGGER,
    )


async def test_each_event_is_handled_once(
    example: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    dag_id = new_id()
    running = event(dag_id, EventType.RUNNING, DagState.RUNNING, DagState.TRIGGERING)
    succeeded = event(dag_id, EventType.SUCCEEDED, DagState.SUCCEEDED, DagState.RUNNING)
    topic = example.kafka.kafka_topic

    async with TestKafkaBroker(example.broker) as broker:
        for ev in (running, running, succeeded):  # the second one is a redelivery
            await broker.publish(
                encode_event(ev),
                topic,
                key=dag_id.encode(),
                headers={"ce_id": ev.event_id, "ce_type": ev.type.value},
            )
        future = msgspec.json.encode({"schema_version": SCHEMA_VERSION + 1})
        await broker.publish(future, topic, key=dag_id.encode(), headers={"ce_id": "x"})

    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert "dag.running" in lines[0]
    assert "RUNNING -> SUCCEEDED" in lines[1]
    assert example.follower.states == {dag_id: DagState.SUCCEEDED}


def test_the_dedupe_window_is_bounded(example: ModuleType) -> None:
    follower = example.DagFollower(window=2)
    events = [event(new_id(), EventType.SUBMITTED, DagState.PENDING, None) for _ in range(3)]
    for ev in events:
        assert follower.accept(ev.event_id, encode_event(ev)) == ev
    assert list(follower.seen) == [events[1].event_id, events[2].event_id]
    assert follower.accept(events[2].event_id, encode_event(events[2])) is None
