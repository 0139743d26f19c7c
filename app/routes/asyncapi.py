"""``GET /docs/asyncapi.json``: the AsyncAPI document of the Kafka topics, for subscribers."""

from __future__ import annotations

from functools import cache

import msgspec
from litestar import get
from litestar.response import Response

from aimtp.asyncapi import asyncapi_document
from aimtp.settings import KafkaSettings, load


@cache
def _document() -> bytes:
    # Built on first request: it describes this deployment's topics and never changes.
    return msgspec.json.encode(asyncapi_document(load(KafkaSettings)))


@get(
    "/docs/asyncapi.json",
    exclude_from_auth=True,
    tags=["events"],
    summary="AsyncAPI document of the DAG events topic",
    description="How to subscribe to DAG lifecycle events on Kafka: topic, key, headers, "
    "payload schema and every event type.",
)
async def asyncapi_json() -> Response[bytes]:
    return Response(_document(), media_type="application/json")
