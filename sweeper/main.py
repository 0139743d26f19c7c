"""``aimtp watcher [--once]``: the watcher process wired from settings."""

from __future__ import annotations

import asyncio
import logging

import uvloop

from aimtp.controller import controller_client
from aimtp.db import create_engine, is_reachable
from aimtp.leader import LeaderLock
from aimtp.logs import configure_logging
from aimtp.ops import ops_server
from aimtp.runner import run_process
from aimtp.settings import (
    DatabaseSettings,
    DeadlineSettings,
    LogSettings,
    OpsSettings,
    WatcherSettings,
    load,
)
from sweeper.rules import Rules
from sweeper.watcher import Watcher

log = logging.getLogger(__name__)


async def watcher_main(*, once: bool = False, stop: asyncio.Event | None = None) -> int:
    database = load(DatabaseSettings)
    settings = load(WatcherSettings)
    engine = create_engine(database, pool_size=settings.watcher_concurrency + 2)
    lock = LeaderLock(database.database_url, settings.watcher_lock_name)
    controller = controller_client()
    await controller.start()
    try:
        watcher = Watcher(
            Rules(engine, controller, settings, load(DeadlineSettings)),
            lock,
            settings.watcher_interval_seconds,
        )
        if once:
            try:
                report = await watcher.once()
            except Exception:
                log.error("the sweep did not run; exiting 1 so the CronJob records a failure")
                return 1
            if report is None:
                log.info("another watcher holds the lock; nothing to do")
            return 0

        async def readiness() -> dict[str, bool]:
            return {"database": await is_reachable(engine)}

        return await run_process(
            "aimtp-watcher",
            watcher.run,
            {
                "ops": ops_server(
                    load(OpsSettings).ops_host, settings.watcher_metrics_port, readiness
                )
            },
            grace_seconds=settings.watcher_grace_seconds,
            stop=stop,
        )
    finally:
        await controller.close()
        await lock.close()
        await engine.dispose()


def run_watcher(once: bool) -> int:
    configure_logging("aimtp-watcher", load(LogSettings).log_level)
    return uvloop.run(watcher_main(once=once))
