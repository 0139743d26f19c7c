"""Fixtures' building blocks for the real services: the test database and Kafka topics."""

from __future__ import annotations

import asyncio
import uuid

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from aimtp.db import apply_schema, create_engine, schema_tables
from aimtp.settings import DatabaseSettings, KafkaSettings, load

TABLES = tuple(schema_tables())

NOT_RUNNING = (
    "{what} is not reachable at {where}. The suite needs the real services: "
    "run `make test` (or `make infra` first when running pytest by hand)."
)


async def fresh_test_database() -> AsyncEngine:
    """An engine on the test database with every table dropped and schema.sql applied."""
    settings = load(DatabaseSettings)
    engine = create_engine(settings, pool_size=5)
    try:
        async with engine.begin() as conn:
            for table in TABLES:
                await conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
    except Exception as exc:
        await engine.dispose()
        raise RuntimeError(NOT_RUNNING.format(what="MariaDB", where=settings.database_url)) from exc
    await apply_schema(engine)
    return engine


async def truncate_all(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        for table in TABLES:
            await conn.execute(text(f"DELETE FROM {table}"))


async def row_counts(engine: AsyncEngine) -> dict[str, int]:
    async with engine.connect() as conn:
        return {
            table: (await conn.execute(text(f"SELECT COUNT(*) FROM {table}"))).scalar_one()
            for table in TABLES
        }


def unique_topic(prefix: str = "aimtp.test") -> str:
    return f"{prefix}.{uuid.uuid4().hex[:12]}"


async def create_topic(name: str, partitions: int = 3) -> None:
    bootstrap = load(KafkaSettings).kafka_bootstrap
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        await asyncio.wait_for(admin.start(), timeout=15)
    except Exception as exc:
        raise RuntimeError(NOT_RUNNING.format(what="Kafka", where=bootstrap)) from exc
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()
