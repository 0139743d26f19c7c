"""The event contract of topic ``aimtp.dag.events``: what subscribers receive.

The record value is a msgspec-JSON ``DagEvent``; the record key is the DAG id, so one
DAG's events stay on one partition in commit order. Headers follow the CloudEvents 1.0
Kafka binding (see ``cloudevent_headers``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

import msgspec

from aimtp.states import DagState

SCHEMA_VERSION = 1
"""Bumped on an incompatible change of ``DagEvent``; consumers reject versions they don't know."""

CONTENT_TYPE = "application/json"


class EventType(StrEnum):
    SUBMITTED = "dag.submitted"
    TRIGGERING = "dag.triggering"
    RUNNING = "dag.running"
    SUCCEEDED = "dag.succeeded"
    FAILED = "dag.failed"
    CANCEL_REQUESTED = "dag.cancel_requested"
    CANCELLED = "dag.cancelled"
    TIMED_OUT = "dag.timed_out"


EVENT_FOR_STATE: dict[DagState, EventType] = {
    DagState.PENDING: EventType.SUBMITTED,
    DagState.TRIGGERING: EventType.TRIGGERING,
    DagState.RUNNING: EventType.RUNNING,
    DagState.SUCCEEDED: EventType.SUCCEEDED,
    DagState.FAILED: EventType.FAILED,
    DagState.CANCELLING: EventType.CANCEL_REQUESTED,
    DagState.CANCELLED: EventType.CANCELLED,
    DagState.TIMED_OUT: EventType.TIMED_OUT,
}


class Actor(StrEnum):
    """Who made a state change; also the CloudEvents source."""

    SERVER = "server"
    TRIGGER = "trigger"
    WATCHER = "watcher"
    CONTROLLER = "controller"


class DagEvent(msgspec.Struct, kw_only=True, frozen=True):
    """One state change of one DAG, as published to Kafka."""

    schema_version: int
    event_id: str
    type: EventType
    dag_id: str
    tenant: str
    dag_name: str
    state: DagState
    previous_state: DagState | None
    attempt: int
    occurred_at: datetime
    actor: Actor
    reason: str | None = None
    labels: dict[str, str] = msgspec.field(default_factory=dict)


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(DagEvent)


class _VersionProbe(msgspec.Struct):
    schema_version: int


_version_decoder = msgspec.json.Decoder(_VersionProbe)


class UnsupportedSchemaVersion(ValueError):
    pass


def encode_event(event: DagEvent) -> bytes:
    return _encoder.encode(event)


def decode_event(data: bytes) -> DagEvent:
    """Decode a record value; raises ``msgspec.DecodeError`` or ``UnsupportedSchemaVersion``.

    The version is checked first so that a future schema is reported as such rather
    than as whatever field it happens to break.
    """
    version = _version_decoder.decode(data).schema_version
    if version != SCHEMA_VERSION:
        raise UnsupportedSchemaVersion(
            f"schema_version {version} is not supported (expected {SCHEMA_VERSION})"
        )
    return _decoder.decode(data)


def cloudevent_headers(
    *,
    event_id: str,
    event_type: str,
    source: str,
    time: datetime,
    traceparent: str | None,
) -> list[tuple[str, bytes]]:
    """Kafka headers of the CloudEvents 1.0 Kafka protocol binding (binary mode)."""
    if time.tzinfo is None:
        time = time.replace(tzinfo=UTC)
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", event_id.encode()),
        ("ce_type", event_type.encode()),
        ("ce_source", f"/aimtp/{source}".encode()),
        ("ce_time", time.isoformat().replace("+00:00", "Z").encode()),
        ("content-type", CONTENT_TYPE.encode()),
    ]
    if traceparent:
        headers.append(("traceparent", traceparent.encode()))
    return headers
