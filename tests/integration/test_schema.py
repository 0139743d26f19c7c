"""db/schema.sql is the source of truth: the live database must match it exactly."""

from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from aimtp.db import apply_schema, schema_statements
from aimtp.settings import DatabaseSettings, load

DEV_ENV = Path(__file__).parents[2] / "infra" / "local" / "dev.env"


def _dev_database_url() -> str:
    for line in DEV_ENV.read_text().splitlines():
        if line.startswith("AIMTP_DATABASE_URL="):
            return line.split("=", 1)[1]
    raise AssertionError("dev.env has no AIMTP_DATABASE_URL")


async def _definitions(engine: AsyncEngine) -> dict[str, str]:
    async with engine.connect() as conn:
        tables = [row[0] for row in await conn.execute(text("SHOW TABLES"))]
        result = {}
        for table in tables:
            ddl = (await conn.execute(text(f"SHOW CREATE TABLE `{table}`"))).one()[1]
            result[table] = re.sub(r" AUTO_INCREMENT=\d+", "", ddl)
        return result


async def test_live_database_matches_schema_sql(engine: AsyncEngine) -> None:
    """The database `make run` uses, after `aimtp db init`, against schema.sql applied fresh
    (the test database). A column added to schema.sql but not to an existing database fails
    here: CREATE TABLE IF NOT EXISTS does not alter tables."""
    live = create_async_engine(_dev_database_url())
    try:
        await apply_schema(live)  # what `aimtp db init` does; idempotent
        assert await _definitions(live) == await _definitions(engine), (
            "the live database differs from db/schema.sql: recreate it "
            "(make down; rm -rf .local/mariadb; make up)"
        )
    finally:
        await live.dispose()


async def test_schema_applies_twice_without_change(engine: AsyncEngine) -> None:
    before = await _definitions(engine)
    await apply_schema(engine)
    assert await _definitions(engine) == before
    assert set(before) == {
        "dags",
        "dag_labels",
        "outbox",
        "outbox_fence",
        "dag_transitions",
        "processed_events",
    }


def test_schema_sql_splits_into_create_statements() -> None:
    statements = schema_statements()
    assert len(statements) == 6
    assert all(s.startswith("CREATE TABLE IF NOT EXISTS") for s in statements)


def test_test_database_is_not_the_live_one() -> None:
    assert (
        make_url(load(DatabaseSettings).database_url).database
        != make_url(_dev_database_url()).database
    )
