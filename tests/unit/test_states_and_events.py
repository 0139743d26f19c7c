from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest

from aimtp.events import (
    EVENT_FOR_STATE,
    SCHEMA_VERSION,
    Actor,
    DagEvent,
    EventType,
    UnsupportedSchemaVersion,
    cloudevent_headers,
    decode_event,
    encode_event,
)
from aimtp.ids import new_id
from aimtp.states import TERMINAL_STATES, TRANSITIONS, DagState, IllegalTransition, check_transition


@pytest.mark.parametrize(
    ("source", "target"),
    [
        (DagState.PENDING, DagState.TRIGGERING),
        (DagState.TRIGGERING, DagState.RUNNING),
        (DagState.RUNNING, DagState.SUCCEEDED),
        (DagState.RUNNING, DagState.FAILED),
        (DagState.RUNNING, DagState.TIMED_OUT),
        (DagState.PENDING, DagState.CANCELLING),
        (DagState.TRIGGERING, DagState.CANCELLING),
        (DagState.RUNNING, DagState.CANCELLING),
        (DagState.CANCELLING, DagState.CANCELLED),
        (DagState.PENDING, DagState.FAILED),
        (DagState.TRIGGERING, DagState.FAILED),
    ],
)
def test_designed_transitions_are_allowed(source: DagState, target: DagState) -> None:
    check_transition(source, target)


@pytest.mark.parametrize(
    ("source", "target"),
    [
        (DagState.SUCCEEDED, DagState.RUNNING),
        (DagState.PENDING, DagState.RUNNING),
        (DagState.PENDING, DagState.SUCCEEDED),
        (DagState.CANCELLING, DagState.RUNNING),
        (DagState.CANCELLED, DagState.RUNNING),
        (DagState.TRIGGERING, DagState.TIMED_OUT),
    ],
)
def test_other_transitions_are_refused(source: DagState, target: DagState) -> None:
    with pytest.raises(IllegalTransition):
        check_transition(source, target)


def test_every_state_has_an_event_and_terminal_states_end_the_run() -> None:
    assert set(EVENT_FOR_STATE) == set(DagState)
    assert TRANSITIONS[DagState.SUCCEEDED] == frozenset()
    for state in TERMINAL_STATES:
        assert state.terminal
        assert DagState.RUNNING not in TRANSITIONS[state]


def _event(**overrides: object) -> DagEvent:
    fields: dict[str, object] = {
        "schema_version": SCHEMA_VERSION,
        "event_id": new_id(),
        "type": EventType.SUBMITTED,
        "dag_id": new_id(),
        "tenant": "t",
        "dag_name": "d",
        "state": DagState.PENDING,
        "previous_state": None,
        "attempt": 1,
        "occurred_at": datetime(2026, 12, 3, tzinfo=UTC),
        "actor": Actor.SERVER,
    }
    fields.update(overrides)
    return DagEvent(**fields)  # type: ignore[arg-type]


def test_event_round_trips() -> None:
    event = _event(labels={"team": "nlp"}, reason="why")
    assert decode_event(encode_event(event)) == event


def test_unknown_schema_version_is_reported_as_such() -> None:
    data = encode_event(_event(schema_version=SCHEMA_VERSION + 1))
    with pytest.raises(UnsupportedSchemaVersion, match="not supported"):
        decode_event(data)


@pytest.mark.parametrize(
    "data", [b"", b"garbage", b'{"schema_version": 1', b'{"schema_version": 1}']
)
def test_undecodable_events_raise(data: bytes) -> None:
    with pytest.raises(msgspec.DecodeError):
        decode_event(data)


def test_cloudevent_headers_follow_the_kafka_binding() -> None:
    headers = dict(
        cloudevent_headers(
            event_id="e1",
            event_type="dag.running",
            source="trigger",
            time=datetime(2026, 12, 3, 10, 0, 0, 123456),
            traceparent=None,
        )
    )
    assert headers == {
        "ce_specversion": b"1.0",
        "ce_id": b"e1",
        "ce_type": b"dag.running",
        "ce_source": b"/aimtp/trigger",
        "ce_time": b"2026-12-03T10:00:00.123456Z",
        "content-type": b"application/json",
    }


def test_ids_are_time_ordered_uuid7() -> None:
    ids = [new_id() for _ in range(1000)]
    assert all(i[14] == "7" for i in ids)
    assert len(set(ids)) == 1000
    assert [i[:13] for i in ids] == sorted(i[:13] for i in ids)
