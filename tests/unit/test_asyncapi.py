"""The AsyncAPI document subscribers read: generated, complete, and checked in."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec

from aimtp.asyncapi import EVENT_MEANINGS, asyncapi_document, asyncapi_json
from aimtp.events import DagEvent, EventType
from aimtp.settings import KafkaSettings

CHECKED_IN = Path(__file__).parents[2] / "docs" / "asyncapi.json"


def test_checked_in_document_is_what_the_code_generates() -> None:
    assert CHECKED_IN.read_text() == asyncapi_json(KafkaSettings()), (
        "docs/asyncapi.json is stale: regenerate it with "
        "`aimtp asyncapi --defaults > docs/asyncapi.json`"
    )


def test_every_event_type_is_documented() -> None:
    assert set(EVENT_MEANINGS) == set(EventType)
    document = asyncapi_document(KafkaSettings())
    description = document["channels"]["dagEvents"]["description"]
    assert all(f"`{kind.value}`" in description for kind in EventType)
    headers = document["components"]["messages"]["dagEvents:Message"]["headers"]
    assert headers["properties"]["ce_type"]["enum"] == [kind.value for kind in EventType]


def test_the_payload_schema_is_the_dag_event_struct() -> None:
    document = asyncapi_document(KafkaSettings())
    payload = document["components"]["schemas"]["dagEvents:Message:Payload"]
    expected = msgspec.json.schema(DagEvent)["$defs"]["DagEvent"]
    assert payload["required"] == expected["required"]
    assert list(payload["properties"]) == list(expected["properties"])
    assert sorted(payload["properties"]["type"]["enum"]) == sorted(k.value for k in EventType)
    assert "$ref" not in json.dumps(payload)


def test_the_document_names_the_configured_topics() -> None:
    kafka = KafkaSettings(kafka_topic="acme.dags", kafka_dlq_topic="acme.dags.dlq")
    channels = asyncapi_document(kafka)["channels"]
    assert channels["dagEvents"]["address"] == "acme.dags"
    assert channels["deadLetters"]["address"] == "acme.dags.dlq"
