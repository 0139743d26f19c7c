"""Leadership through a MySQL named lock (``GET_LOCK``), for singletons with hot standbys.

The lock belongs to one dedicated connection: if the process dies, the server drops
the connection and frees the lock at once, and a standby blocked in ``GET_LOCK``
takes over. A leader confirms it still holds the lock before every unit of work, so
one whose connection died stops before a standby can have started.
"""

from __future__ import annotations

import logging

from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

log = logging.getLogger(__name__)

_ACQUIRE = text("SELECT GET_LOCK(:name, :wait)")
_HOLDS = text("SELECT IS_USED_LOCK(:name) = CONNECTION_ID()")
_RELEASE = text("SELECT RELEASE_LOCK(:name)")


class LeaderLock:
    def __init__(self, database_url: str, name: str) -> None:
        # NullPool: the lock's connection is never shared or recycled behind our back.
        self._engine: AsyncEngine = create_async_engine(
            database_url,
            poolclass=NullPool,
            isolation_level="AUTOCOMMIT",
            connect_args={"connect_timeout": 5},
        )
        # GET_LOCK names are server-wide: scope them to the database, so installations
        # (and test suites) sharing one MySQL server elect their leaders separately.
        self.name = f"{make_url(database_url).database}:{name}"
        self._conn: AsyncConnection | None = None
        # Not "a connection is open": a standby keeps its connection between waits.
        self._held = False

    @property
    def held(self) -> bool:
        return self._held

    async def try_acquire(self, wait_seconds: float) -> bool:
        """Block up to ``wait_seconds`` for the lock; True when this process now leads."""
        if self._conn is None:
            self._conn = await self._engine.connect()
        try:
            got = (
                await self._conn.execute(_ACQUIRE, {"name": self.name, "wait": wait_seconds})
            ).scalar()
        except Exception:
            await self._drop()
            raise
        self._held = got == 1
        if self._held:
            log.info("leadership acquired", extra={"lock": self.name})
        return self._held

    async def still_held(self) -> bool:
        """Ask the server; any failure means the lock may be gone, so leadership is over."""
        if self._conn is None:
            return False
        try:
            held = (await self._conn.execute(_HOLDS, {"name": self.name})).scalar() == 1
        except Exception:
            log.warning("leadership check failed; stepping down", exc_info=True)
            held = False
        if not held:
            await self._drop()
        return held

    async def release(self) -> None:
        if self._conn is not None:
            try:
                await self._conn.execute(_RELEASE, {"name": self.name})
            except Exception:
                log.warning("could not release leadership cleanly", exc_info=True)
            await self._drop()

    async def close(self) -> None:
        await self.release()
        await self._engine.dispose()

    async def _drop(self) -> None:
        self._held = False
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.close()
            except Exception:
                await conn.invalidate()
