"""The pool rolls back a returned connection only when a transaction is open on it."""

from __future__ import annotations

from typing import cast

import asyncmy
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from aimtp.db import create_engine
from aimtp.settings import DatabaseSettings, load


async def _global_rollbacks(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        row = (await conn.execute(text("SHOW GLOBAL STATUS LIKE 'Com_rollback'"))).one()
        return int(row[1])


async def test_a_committed_connection_goes_back_without_a_rollback(engine: AsyncEngine) -> None:
    pool = create_engine(load(DatabaseSettings), pool_size=1)
    try:
        before = await _global_rollbacks(engine)
        for _ in range(20):
            async with pool.begin() as conn:
                await conn.execute(text("SELECT COUNT(*) FROM dags"))
        # The default reset sends one ROLLBACK per transaction (20). The probe's own read
        # and the new pool's first connect roll back too, a few at most.
        assert await _global_rollbacks(engine) - before < 5
    finally:
        await pool.dispose()


async def test_an_open_transaction_is_rolled_back_on_return(engine: AsyncEngine) -> None:
    pool = create_engine(load(DatabaseSettings), pool_size=1)
    try:
        async with pool.connect() as conn:
            # Straight on the driver, behind SQLAlchemy's back: only the pool can end it.
            driver = cast("asyncmy.Connection", (await conn.get_raw_connection()).driver_connection)
            async with driver.cursor() as cursor:
                await cursor.execute("INSERT INTO outbox_fence (id) VALUES (99)")
            assert driver.get_transaction_status()
        async with pool.connect() as conn:
            rows = (await conn.execute(text("SELECT id FROM outbox_fence WHERE id = 99"))).all()
        assert rows == []
    finally:
        await pool.dispose()
