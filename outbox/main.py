"""``aimtp relay``: the relay process wired from settings."""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaProducer

from aimtp.db import create_engine, is_reachable
from aimtp.kafka import broker_reachable
from aimtp.leader import LeaderLock
from aimtp.logs import configure_logging
from aimtp.ops import ops_server
from aimtp.runner import run_process
from aimtp.settings import (
    DatabaseSettings,
    KafkaSettings,
    LogSettings,
    OpsSettings,
    RelaySettings,
    load,
)
from outbox.relay import Relay

log = logging.getLogger(__name__)


def create_producer(kafka: KafkaSettings, relay: RelaySettings) -> AIOKafkaProducer:
    """acks=all with the idempotent producer: an acknowledged record is on every
    in-sync replica, and the producer's own retries never duplicate or reorder it."""
    return AIOKafkaProducer(
        bootstrap_servers=kafka.kafka_bootstrap,
        client_id="aimtp-relay",
        acks="all",
        enable_idempotence=True,
        linger_ms=2,
        max_batch_size=512 * 1024,
        request_timeout_ms=int(relay.relay_publish_timeout_seconds * 1000),
        retry_backoff_ms=200,
    )


async def relay_main(stop: asyncio.Event | None = None) -> int:
    database = load(DatabaseSettings)
    kafka = load(KafkaSettings)
    settings = load(RelaySettings)
    stop = stop or asyncio.Event()
    engine = create_engine(database, pool_size=4)
    producer = create_producer(kafka, settings)
    lock = LeaderLock(database.database_url, settings.relay_lock_name)
    try:
        relay = Relay(engine, producer, lock, settings, kafka.kafka_topic)

        async def readiness() -> dict[str, bool]:
            return {
                "database": await is_reachable(engine),
                "broker": await broker_reachable(producer.client),
            }

        return await run_process(
            "aimtp-relay",
            relay.run,
            {
                "ops": ops_server(
                    load(OpsSettings).ops_host, settings.relay_metrics_port, readiness
                ),
                "backlog": relay.report_backlog,
                "purge": relay.purge_published,
            },
            grace_seconds=settings.relay_grace_seconds,
            stop=stop,
        )
    finally:
        await producer.stop()
        await lock.close()
        await engine.dispose()


def run_relay() -> int:
    configure_logging("aimtp-relay", load(LogSettings).log_level)
    import uvloop

    return uvloop.run(relay_main())
