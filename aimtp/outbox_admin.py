"""Operator tasks on the outbox: list parked rows, re-queue or drop one."""

from __future__ import annotations

from datetime import datetime

import msgspec
from sqlalchemy.ext.asyncio import AsyncEngine

from aimtp.db import QUERIES
from aimtp.db.records import utcnow


class ParkedRow(msgspec.Struct):
    id: int
    event_id: str
    dag_id: str
    event_type: str
    created_at: datetime
    reason: str | None


async def list_parked(engine: AsyncEngine) -> list[ParkedRow]:
    async with engine.connect() as conn:
        result = await conn.execute(QUERIES["list_parked_outbox"])
        return [ParkedRow(*row) for row in result]


async def release_parked(engine: AsyncEngine, outbox_id: int, *, drop: bool = False) -> bool:
    """Re-queue a parked row (or drop it, recorded); False if no such parked row."""
    async with engine.begin() as conn:
        if drop:
            result = await conn.execute(
                QUERIES["drop_parked_outbox"], {"id": outbox_id, "now": utcnow()}
            )
        else:
            result = await conn.execute(QUERIES["release_parked_outbox"], {"id": outbox_id})
        return result.rowcount == 1
