"""``aimtp trigger``: the trigger process wired from settings."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from aimtp.controller import controller_client
from aimtp.db import QUERIES, create_engine, is_reachable
from aimtp.db.records import utcnow
from aimtp.logs import configure_logging
from aimtp.ops import ops_server
from aimtp.runner import SideTask, run_process
from aimtp.settings import (
    DatabaseSettings,
    KafkaSettings,
    LogSettings,
    OpsSettings,
    ServerSettings,
    TriggerSettings,
    load,
)
from aimtp.telemetry import configure_tracing
from consumers.app import Trigger
from consumers.handlers import TriggerHandler
from consumers.retry import RetryPolicy, stopped_within

log = logging.getLogger(__name__)

_PURGE_INTERVAL_SECONDS = 300.0
_PURGE_BATCH = 5000


async def purge_processed_events(engine: AsyncEngine, older_than: timedelta) -> int:
    """Delete handled-event records past retention, in small statements."""
    cutoff = utcnow() - older_than
    total = 0
    while True:
        async with engine.begin() as conn:
            result = await conn.execute(
                QUERIES["purge_processed_events"], {"cutoff": cutoff, "limit": _PURGE_BATCH}
            )
        total += result.rowcount
        if result.rowcount < _PURGE_BATCH:
            return total


def _purge_loop(engine: AsyncEngine, retention: timedelta) -> SideTask:
    # Every replica runs it: the deletes are idempotent and cheap.
    async def purge(stop: asyncio.Event) -> None:
        while not await stopped_within(stop, _PURGE_INTERVAL_SECONDS):
            try:
                await purge_processed_events(engine, retention)
            except Exception:
                log.warning("purge of processed events failed", exc_info=True)

    return purge


async def trigger_main(stop: asyncio.Event | None = None) -> int:
    settings = load(TriggerSettings)
    kafka = load(KafkaSettings)
    stop = stop or asyncio.Event()
    engine = create_engine(load(DatabaseSettings))
    # Its on_call hook feeds the Controller latency histogram (operation, status).
    controller = controller_client()
    handler = TriggerHandler(
        engine,
        controller,
        consumer=settings.trigger_group,
        public_url=load(ServerSettings).public_url,
        policy=RetryPolicy.from_settings(settings),
        stop=stop,
    )
    trigger = Trigger(handler, kafka, settings, stop)

    async def readiness() -> dict[str, bool]:
        return {
            "database": await is_reachable(engine),
            "broker": await trigger.broker.ping(timeout=3.0),
        }

    await controller.start()
    try:
        return await run_process(
            "aimtp-trigger",
            trigger.run,
            {
                "ops": ops_server(
                    load(OpsSettings).ops_host, settings.trigger_metrics_port, readiness
                ),
                "lag": trigger.report_lag,
                "purge": _purge_loop(
                    engine, timedelta(hours=settings.trigger_processed_retention_hours)
                ),
            },
            grace_seconds=settings.trigger_grace_seconds,
            stop=stop,
        )
    finally:
        await controller.close()
        await engine.dispose()


def run_trigger() -> int:
    configure_logging("aimtp-trigger", load(LogSettings).log_level)
    configure_tracing("aimtp-trigger")
    import uvloop

    return uvloop.run(trigger_main())
