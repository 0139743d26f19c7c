"""The trigger's decisions without services: what an event asks, what to retry, what to reject."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from aimtp.controller import (
    ControllerError,
    ControllerRejected,
    ControllerUnavailable,
    Phase,
    StatusReport,
    TaskStatus,
)
from aimtp.db.records import DagRecord, utcnow
from aimtp.events import (
    SCHEMA_VERSION,
    Actor,
    DagEvent,
    EventType,
    cloudevent_headers,
    encode_event,
)
from aimtp.ids import new_id
from aimtp.states import DagState
from aimtp.status import status_path
from consumers.dlq import dead_letter_headers
from consumers.envelope import Unreadable, read_envelope
from consumers.handlers import SubmitStep, cancel_applies, submit_step
from consumers.retry import (
    Interrupted,
    RetriesExhausted,
    RetryPolicy,
    call_with_retries,
    is_retryable,
)

S = DagState


def dag(state: DagState, attempt: int = 1, **changes: Any) -> DagRecord:
    now = utcnow()
    record = DagRecord(
        id=new_id(),
        tenant="t",
        name="d",
        spec=msgspec.Raw(b'{"name":"d","tasks":[],"timeout_seconds":60}'),
        labels={},
        state=state,
        version=3,
        attempt=attempt,
        deadline_at=None,
        timeout_at=None,
        reemits=0,
        idempotency_key=None,
        request_hash=None,
        controller_ref=None,
        error=None,
        task_phases=None,
        status_at=None,
        created_at=now,
        updated_at=now,
    )
    return msgspec.structs.replace(record, **changes)


def event(kind: EventType, record: DagRecord, attempt: int | None = None) -> DagEvent:
    return DagEvent(
        schema_version=SCHEMA_VERSION,
        event_id=new_id(),
        type=kind,
        dag_id=record.id,
        tenant=record.tenant,
        dag_name=record.name,
        state=record.state,
        previous_state=None,
        attempt=record.attempt if attempt is None else attempt,
        occurred_at=datetime.now(UTC),
        actor=Actor.SERVER,
    )


# ---------------------------------------------------------------- what an event asks


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (S.PENDING, SubmitStep.CLAIM),
        (S.TRIGGERING, SubmitStep.RESUME),
        (S.RUNNING, SubmitStep.SKIP),
        (S.SUCCEEDED, SubmitStep.SKIP),
        (S.FAILED, SubmitStep.SKIP),
        (S.CANCELLING, SubmitStep.SKIP),
        (S.CANCELLED, SubmitStep.SKIP),
    ],
)
def test_submitted_claims_pending_resumes_triggering_and_skips_the_rest(
    state: DagState, expected: SubmitStep
) -> None:
    record = dag(state)
    assert submit_step(record, event(EventType.SUBMITTED, record)) is expected


def test_submitted_for_another_attempt_is_skipped() -> None:
    record = dag(S.PENDING, attempt=2)
    assert submit_step(record, event(EventType.SUBMITTED, record, attempt=1)) is SubmitStep.SKIP


def test_cancel_applies_only_to_a_cancelling_dag_of_that_attempt() -> None:
    cancelling = dag(S.CANCELLING, attempt=2)
    assert cancel_applies(cancelling, event(EventType.CANCEL_REQUESTED, cancelling))
    assert not cancel_applies(cancelling, event(EventType.CANCEL_REQUESTED, cancelling, 1))
    cancelled = dag(S.CANCELLED)
    assert not cancel_applies(cancelled, event(EventType.CANCEL_REQUESTED, cancelled))


# ---------------------------------------------------------------- retry classification


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (ControllerUnavailable("HTTP 503", status=503), True),
        (ControllerUnavailable("timed out"), True),
        (ControllerUnavailable("HTTP 429", status=429), True),
        (ControllerRejected(401, "bad token"), True),
        (ControllerRejected(403, "forbidden"), True),
        (ControllerRejected(422, "image not allowed"), False),
        (ControllerRejected(400, "bad request"), False),
        (ControllerRejected(409, "conflict"), False),
    ],
)
def test_only_the_dags_own_rejections_are_permanent(
    error: ControllerError, retryable: bool
) -> None:
    assert is_retryable(error) is retryable


def test_delay_honours_retry_after_up_to_the_cap() -> None:
    policy = RetryPolicy(base=0.1, cap=5.0)
    rng = random.Random(1)
    assert policy.delay(1, retry_after=3.0, rng=rng) == 3.0
    assert policy.delay(1, retry_after=60.0, rng=rng) == 5.0
    assert all(policy.delay(1, rng=rng) <= 0.1 for _ in range(100))


@dataclass
class FakeController:
    """Fails with ``errors`` in turn, then answers ``"ok"``; counts calls."""

    errors: list[Exception]
    calls: int = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def fast_policy(**overrides: Any) -> RetryPolicy:
    values: dict[str, Any] = {"attempts": 5, "base": 0.001, "cap": 0.002, "budget": 10.0}
    return RetryPolicy(**{**values, **overrides})


async def test_unavailable_is_retried_until_it_answers() -> None:
    controller = FakeController([ControllerUnavailable("503"), ControllerUnavailable("503")])
    assert await call_with_retries(controller, fast_policy(), asyncio.Event()) == "ok"
    assert controller.calls == 3


async def test_a_rejection_is_raised_at_once() -> None:
    controller = FakeController([ControllerRejected(422, "no")])
    with pytest.raises(ControllerRejected):
        await call_with_retries(controller, fast_policy(), asyncio.Event())
    assert controller.calls == 1


async def test_attempts_are_bounded() -> None:
    controller = FakeController([ControllerRejected(401, "bad token")] * 10)
    with pytest.raises(RetriesExhausted) as raised:
        await call_with_retries(controller, fast_policy(attempts=3), asyncio.Event())
    assert controller.calls == 3
    assert raised.value.attempts == 3


async def test_time_is_bounded() -> None:
    now = [0.0]
    controller = FakeController([ControllerUnavailable("timed out")] * 10)

    async def slow_call() -> str:
        now[0] += 4.0  # each call takes four seconds before it fails
        return await controller()

    policy = fast_policy(attempts=100, budget=10.0)
    with pytest.raises(RetriesExhausted):
        await call_with_retries(slow_call, policy, asyncio.Event(), clock=lambda: now[0])
    assert controller.calls == 3  # at 12 s the budget of 10 s is spent


async def test_stopping_interrupts_the_wait_between_calls() -> None:
    stop = asyncio.Event()
    stop.set()
    controller = FakeController([ControllerUnavailable("503", retry_after=30.0)])
    policy = RetryPolicy(attempts=5, base=1, cap=30, budget=60)
    with pytest.raises(Interrupted):
        await asyncio.wait_for(call_with_retries(controller, policy, stop), timeout=1)
    assert controller.calls == 1


# ---------------------------------------------------------------- status reports


def report(
    record: DagRecord,
    phase: Phase,
    *,
    attempt: int | None = None,
    at: datetime | None = None,
    reference: str = "wl-1",
) -> StatusReport:
    return StatusReport(
        dag_id=record.id,
        attempt=record.attempt if attempt is None else attempt,
        reference=reference,
        phase=phase,
        tasks={"train": TaskStatus(phase="Running")},
        observed_at=at or datetime.now(UTC),
    )


@pytest.mark.parametrize(
    ("state", "phase", "path"),
    [
        (S.TRIGGERING, "Pending", (S.RUNNING,)),
        (S.TRIGGERING, "Running", (S.RUNNING,)),
        (S.TRIGGERING, "Succeeded", (S.RUNNING, S.SUCCEEDED)),
        (S.TRIGGERING, "Failed", (S.RUNNING, S.FAILED)),
        (S.RUNNING, "Running", ()),
        (S.RUNNING, "Succeeded", (S.SUCCEEDED,)),
        (S.RUNNING, "Failed", (S.FAILED,)),
        (S.SUCCEEDED, "Running", None),
        (S.FAILED, "Succeeded", None),
        (S.CANCELLING, "Running", None),
        (S.PENDING, "Running", None),
    ],
)
def test_status_path(state: DagState, phase: Phase, path: tuple[DagState, ...] | None) -> None:
    record = dag(state)
    assert status_path(record, report(record, phase)) == path


def test_phases_older_than_the_stored_ones_are_stale() -> None:
    now = datetime.now(UTC)
    record = dag(S.RUNNING, status_at=now.replace(tzinfo=None))
    assert status_path(record, report(record, "Running", at=now - timedelta(seconds=1))) is None
    assert status_path(record, report(record, "Running", at=now)) is None  # a repeat
    assert status_path(record, report(record, "Running", at=now + timedelta(seconds=1))) == ()
    # An old timestamp cannot hide the end of the workload.
    late = now - timedelta(seconds=1)
    assert status_path(record, report(record, "Succeeded", at=late)) == (S.SUCCEEDED,)


def test_an_earlier_attempts_report_is_ignored_unless_it_is_this_dags_workload() -> None:
    record = dag(S.RUNNING, attempt=2, controller_ref="wl-kept")
    assert status_path(record, report(record, "Succeeded", attempt=1, reference="wl-old")) is None
    adopted = report(record, "Succeeded", attempt=1, reference="wl-kept")
    assert status_path(record, adopted) == (S.SUCCEEDED,)


# ---------------------------------------------------------------- reading records


def record_parts(
    ev: DagEvent, **header_overrides: bytes | None
) -> tuple[bytes, bytes, list[tuple[str, bytes | None]]]:
    headers: list[tuple[str, bytes | None]] = list(
        cloudevent_headers(
            event_id=ev.event_id,
            event_type=ev.type.value,
            source="server",
            time=ev.occurred_at,
            traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
    )
    headers = [(k, header_overrides.get(k, v)) for k, v in headers if header_overrides.get(k, v)]
    return ev.dag_id.encode(), encode_event(ev), headers


def test_a_well_formed_record_is_read() -> None:
    ev = event(EventType.SUBMITTED, dag(S.PENDING))
    envelope = read_envelope(*record_parts(ev))
    assert envelope.event == ev
    assert envelope.traceparent == "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _broken_version(ev: DagEvent) -> bytes:
    data = msgspec.json.decode(encode_event(ev))
    data["schema_version"] = SCHEMA_VERSION + 1
    return msgspec.json.encode(data)


def _without_field(ev: DagEvent, name: str) -> bytes:
    data = msgspec.json.decode(encode_event(ev))
    del data[name]
    return msgspec.json.encode(data)


@pytest.mark.parametrize(
    ("mutate", "kind"),
    [
        (lambda ev, parts: (parts[0], b"\x00\xffnot json", parts[2]), "malformed"),
        (lambda ev, parts: (parts[0], parts[1][: len(parts[1]) // 2], parts[2]), "malformed"),
        (lambda ev, parts: (parts[0], _broken_version(ev), parts[2]), "schema_version"),
        (lambda ev, parts: (parts[0], _without_field(ev, "dag_id"), parts[2]), "malformed"),
        (lambda ev, parts: (parts[0], b"", parts[2]), "empty"),
        (lambda ev, parts: (None, parts[1], parts[2]), "key_mismatch"),
        (lambda ev, parts: (b"other", parts[1], parts[2]), "key_mismatch"),
    ],
)
def test_unreadable_records_are_rejected_with_their_reason(
    mutate: Callable[[DagEvent, tuple[Any, ...]], tuple[Any, ...]], kind: str
) -> None:
    ev = event(EventType.SUBMITTED, dag(S.PENDING))
    with pytest.raises(Unreadable) as raised:
        read_envelope(*mutate(ev, record_parts(ev)))
    assert raised.value.kind == kind


@pytest.mark.parametrize(
    ("header", "value", "kind"),
    [
        ("ce_id", None, "missing_header"),
        ("ce_type", None, "missing_header"),
        ("ce_specversion", None, "missing_header"),
        ("ce_type", b"dag.running", "header_mismatch"),
        ("ce_id", b"another-id", "header_mismatch"),
        ("ce_specversion", b"0.3", "header_mismatch"),
        ("ce_source", b"\xff\xfe", "malformed_header"),
    ],
)
def test_cloudevents_headers_must_match_the_body(
    header: str, value: bytes | None, kind: str
) -> None:
    ev = event(EventType.SUBMITTED, dag(S.PENDING))
    with pytest.raises(Unreadable) as raised:
        read_envelope(*record_parts(ev, **{header: value}))
    assert raised.value.kind == kind


def test_a_binary_traceparent_is_ignored_not_rejected() -> None:
    ev = event(EventType.SUBMITTED, dag(S.PENDING))
    assert read_envelope(*record_parts(ev, traceparent=b"\xff")).traceparent is None


@dataclass
class Consumed:
    topic: str = "events"
    partition: int = 4
    offset: int = 1234
    key: bytes | None = b"k"
    value: bytes | None = b"garbage"
    headers: list[tuple[str, bytes | None]] = field(
        default_factory=lambda: [("ce_id", b"abc"), ("odd", b"\xff"), ("ce_id", b"second")]
    )


def test_dead_letters_keep_the_original_headers_and_say_why() -> None:
    headers = dead_letter_headers(Consumed(), Unreadable("malformed", "not JSON"), "aimtp-trigger")
    assert headers == {
        "ce_id": "abc",
        "odd": "\\xff",
        "aimtp_dlq_reason": "malformed: not JSON",
        "aimtp_dlq_topic": "events",
        "aimtp_dlq_partition": "4",
        "aimtp_dlq_offset": "1234",
        "aimtp_dlq_consumer": "aimtp-trigger",
    }
