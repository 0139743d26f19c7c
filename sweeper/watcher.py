"""The watcher process: one active sweeper (MySQL lock), sweeps on an APScheduler interval.

A standby tries the lock on every tick, so it takes over within one interval after the
active watcher dies. ``--once`` takes the same lock: a CronJob run that overlaps a
running watcher (or another CronJob run) does nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from aimtp import metrics
from aimtp.leader import LeaderLock
from sweeper.rules import Rules, SweepReport

log = logging.getLogger(__name__)


class Watcher:
    def __init__(self, rules: Rules, lock: LeaderLock, interval_seconds: float) -> None:
        self._rules = rules
        self._lock = lock
        self._interval = interval_seconds
        self._sweeping = asyncio.Lock()

    async def tick(self) -> SweepReport | None:
        """One scheduled run: lead (or try to), then sweep. None when another leads, or
        when the sweep could not run (logged and counted; the next tick tries again)."""
        try:
            return await self._lead_and_sweep()
        except Exception:
            return None

    async def _lead_and_sweep(self) -> SweepReport | None:
        """A sweep if this process leads, None if another does; raises when either fails."""
        async with self._sweeping:
            try:
                leading = await self._lock.still_held() or await self._lock.try_acquire(0)
            except Exception:
                metrics.WATCHER_ACTIVE.set(0)
                log.warning("cannot reach the database for leadership", exc_info=True)
                raise
            metrics.WATCHER_ACTIVE.set(1 if leading else 0)
            if not leading:
                return None
            started = time.monotonic()
            try:
                report = await self._rules.sweep()
            except Exception:
                metrics.WATCHER_SWEEPS.labels("error").inc()
                log.exception("sweep failed")
                raise
            finally:
                metrics.WATCHER_SWEEP_SECONDS.observe(time.monotonic() - started)
            metrics.WATCHER_SWEEPS.labels("ok").inc()
            if report.actions or report.orphans:
                log.info(
                    "sweep done",
                    extra={"actions": dict(report.actions), "orphans": len(report.orphans)},
                )
            return report

    async def run(self, stop: asyncio.Event) -> None:
        """Sweep every interval until stop; the sweep in flight finishes before return."""
        scheduler = AsyncIOScheduler(timezone=UTC)
        scheduler.add_job(
            self.tick,
            "interval",
            seconds=self._interval,
            next_run_time=datetime.now(UTC),
            max_instances=1,
            coalesce=True,
            id="sweep",
        )
        scheduler.start()
        try:
            await stop.wait()
        finally:
            scheduler.shutdown(wait=False)
            async with self._sweeping:  # let a running sweep complete
                await self._lock.release()
                metrics.WATCHER_ACTIVE.set(0)

    async def once(self) -> SweepReport | None:
        """The CronJob form: one sweep if no other watcher holds the lock. Raises when the
        database cannot be reached or the sweep fails, so the Job run fails visibly."""
        try:
            return await self._lead_and_sweep()
        finally:
            await self._lock.release()
