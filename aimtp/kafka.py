"""Kafka plumbing shared by the processes: topic creation, start-up retries, probes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from aimtp.backoff import Backoff
from aimtp.settings import KafkaSettings

log = logging.getLogger(__name__)


async def ensure_topics(settings: KafkaSettings) -> list[str]:
    """Create the events topic and its DLQ if missing; returns the names created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, client_id="aimtp-admin")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(name, settings.kafka_partitions, settings.kafka_replication_factor)
            for name in (settings.kafka_topic, settings.kafka_dlq_topic)
            if name not in existing
        ]
        if wanted:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(wanted)
        return [topic.name for topic in wanted]
    finally:
        await admin.close()


async def start_with_retry(
    start: Callable[[], Awaitable[Any]], stop: asyncio.Event, *, what: str
) -> bool:
    """Call ``start`` until it succeeds (True) or ``stop`` is set (False).

    Processes start even while the broker is down and connect once it is up.
    """
    backoff = Backoff(base=0.5, cap=10.0)
    while not stop.is_set():
        try:
            await start()
            return True
        except Exception as exc:
            delay = backoff.next_delay()
            log.warning("%s cannot start (%r); retrying in %.1fs", what, exc, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)
    return False


async def broker_reachable(client: Any, timeout: float = 3.0) -> bool:
    """A metadata round trip through an aiokafka client."""
    try:
        await asyncio.wait_for(client.fetch_all_metadata(), timeout=timeout)
    except Exception:
        return False
    return True
