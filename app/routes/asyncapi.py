"""``GET /docs/asyncapi.json``: the AsyncAPI document of the Kafka topics, for subscribers."""

from __future__ import annotations

from functools import cache
from typing import Any

from litestar import get
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example

from aimtp.asyncapi import asyncapi_document
from aimtp.settings import KafkaSettings, load


@cache
def _document() -> dict[str, Any]:
    # Built on first request: it describes this deployment's topics and never changes.
    return asyncapi_document(load(KafkaSettings))


@get(
    "/docs/asyncapi.json",
    exclude_from_auth=True,
    tags=["events"],
    summary="AsyncAPI document of the DAG events topic",
    description="How to subscribe to DAG lifecycle events on Kafka: topic, key, headers, "
    "payload schema and every event type.",
    responses={
        200: ResponseSpec(
            data_container=dict[str, Any],
            description="The AsyncAPI 3.0 document (abridged in this example).",
            generate_examples=False,
            examples=[
                Example(
                    summary="Abridged",
                    value={
                        "asyncapi": "3.0.0",
                        "info": {"title": "AIMTP DAG events", "version": "1"},
                        "channels": {"dagEvents": {"address": "aimtp.dag.events"}},
                    },
                )
            ],
        )
    },
)
async def asyncapi_json() -> dict[str, Any]:
    # Typed as the JSON object it is, so the OpenAPI document says so (not "a string").
    return _document()
