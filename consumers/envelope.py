"""Reading a record of the events topic: CloudEvents headers and the ``DagEvent`` body.

A record that does not hold a readable event raises ``Unreadable`` with a short,
bounded ``kind`` (a metric label) and a human ``detail``; the trigger sends it to the
dead-letter topic instead of guessing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Protocol

import msgspec

from aimtp.events import DagEvent, UnsupportedSchemaVersion, decode_event
from aimtp.tracing import valid_traceparent

# The attributes CloudEvents 1.0 requires, in their Kafka binary-mode header names.
REQUIRED_HEADERS: Final = ("ce_specversion", "ce_id", "ce_type", "ce_source")
_READ: Final = frozenset({*REQUIRED_HEADERS, "traceparent"})

Headers = Sequence[tuple[str, bytes | None]]


class KafkaRecord(Protocol):
    """The parts of a consumed record the trigger uses (aiokafka's ``ConsumerRecord``)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Headers: ...


class Unreadable(Exception):
    """The record is not a readable AIMTP event."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Envelope:
    event: DagEvent
    traceparent: str | None


def read_envelope(key: bytes | None, value: bytes | None, headers: Headers) -> Envelope:
    """The event in a record, checked against its headers and key; raises ``Unreadable``."""
    if not value:
        raise Unreadable("empty", "the record has no value")
    try:
        event = decode_event(value)
    except UnsupportedSchemaVersion as exc:
        raise Unreadable("schema_version", str(exc)) from None
    except msgspec.DecodeError as exc:  # ValidationError (missing or wrong fields) included
        raise Unreadable("malformed", str(exc)) from None
    found = _text_headers(headers)
    missing = [name for name in REQUIRED_HEADERS if name not in found]
    if missing:
        raise Unreadable("missing_header", f"missing CloudEvents header(s): {', '.join(missing)}")
    if found["ce_specversion"] != "1.0":
        raise Unreadable(
            "header_mismatch", f"ce_specversion {found['ce_specversion']!r} is not 1.0"
        )
    if found["ce_id"] != event.event_id:
        raise Unreadable("header_mismatch", "ce_id does not match the event_id of the body")
    if found["ce_type"] != event.type.value:
        raise Unreadable("header_mismatch", "ce_type does not match the type of the body")
    # The key decides the partition and so the order of a DAG's events: a record keyed
    # otherwise may overtake, or be overtaken by, that DAG's other events.
    if key is None or key != event.dag_id.encode():
        raise Unreadable("key_mismatch", "the record key is not the DAG id of the body")
    return Envelope(event=event, traceparent=valid_traceparent(found.get("traceparent")))


def _text_headers(headers: Headers) -> dict[str, str]:
    """The values of the headers the trigger reads, as text (first occurrence wins).

    Other headers are left alone: whatever else a producer adds is not our business.
    """
    found: dict[str, str] = {}
    for name, raw in headers:
        if name not in _READ or name in found or raw is None:
            continue
        try:
            found[name] = raw.decode()
        except UnicodeDecodeError:
            if name == "traceparent":
                continue  # tracing is best effort
            raise Unreadable("malformed_header", f"header {name!r} is not UTF-8") from None
    return found
