"""One async SQLAlchemy engine per process, on the asyncmy driver."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import PoolResetState

from aimtp.settings import DatabaseSettings


def create_engine(settings: DatabaseSettings, *, pool_size: int | None = None) -> AsyncEngine:
    """An engine with UTC sessions and READ COMMITTED isolation.

    READ COMMITTED matters for the relay: its ``FOR UPDATE SKIP LOCKED`` claim must not
    take gap locks that would block the API's outbox inserts.
    """
    engine = create_async_engine(
        settings.database_url,
        pool_size=settings.database_pool_size if pool_size is None else pool_size,
        max_overflow=settings.database_max_overflow,
        pool_timeout=settings.database_pool_timeout,
        pool_pre_ping=True,
        pool_recycle=3600,
        isolation_level="READ COMMITTED",
        connect_args={"init_command": "SET time_zone = '+00:00'", "connect_timeout": 5},
        pool_reset_on_return=None,  # _rollback_if_open does it
    )
    event.listen(engine.sync_engine.pool, "reset", _rollback_if_open)
    return engine


def _rollback_if_open(dbapi_connection: Any, _record: Any, reset_state: PoolResetState) -> None:
    """Roll back a connection handed back to the pool, but only if it is in a transaction.

    The default reset sends ROLLBACK every time, a round trip wasted after each commit.
    The status flags of the server's last reply say whether a transaction is open.
    """
    if reset_state.transaction_was_reset or not reset_state.asyncio_safe:
        return
    if dbapi_connection.driver_connection.get_transaction_status():
        dbapi_connection.rollback()


async def is_reachable(engine: AsyncEngine) -> bool:
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception:
        return False
    return True


# Can't connect (2002, 2003), connection lost (2006, 2013), too many connections (1040),
# lock wait timeout (1205), deadlock (1213).
TRANSIENT_MYSQL_ERRORS = frozenset({2002, 2003, 2006, 2013, 1040, 1205, 1213})


def is_database_unavailable(exc: BaseException) -> bool:
    """The database could not serve the transaction (down, saturated, a lock wait timed
    out): it was rolled back, and the same request may succeed when retried."""
    if isinstance(exc, PoolTimeoutError):
        return True
    if isinstance(exc, OperationalError):
        code = getattr(exc.orig, "args", (None,))[0]
        return code in TRANSIENT_MYSQL_ERRORS
    return False
