"""The benchmark database, reached directly through asyncmy (no SQLAlchemy, no pool).

Raw connections serve three purposes: the submit baseline (the product's transaction
without the product), bulk loads as multi-row INSERTs, and bookkeeping between scenarios.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncmy
from sqlalchemy import make_url

from aimtp.db import SCHEMA_PATH, schema_statements, schema_tables

# Every product table; the benchmark's own bookkeeping lives in bench_meta.
PRODUCT_TABLES = tuple(schema_tables())
# Tables whose rows only ever belong to one scenario: emptied between scenarios.
TRANSIENT_TABLES = ("outbox", "dag_transitions", "processed_events")

_META = """CREATE TABLE IF NOT EXISTS bench_meta (
  name       VARCHAR(64) CHARACTER SET ascii NOT NULL PRIMARY KEY,
  value      TEXT NOT NULL,
  updated_at DATETIME(6) NOT NULL
) ENGINE=InnoDB"""


@dataclass(frozen=True)
class Database:
    host: str
    port: int
    user: str
    password: str
    name: str
    url: str

    @classmethod
    def from_url(cls, url: str) -> Database:
        parsed = make_url(url)
        if not parsed.database:
            raise ValueError(f"database URL names no database: {url}")
        return cls(
            host=parsed.host or "127.0.0.1",
            port=parsed.port or 3306,
            user=parsed.username or "",
            password=parsed.password or "",
            name=parsed.database,
            url=url,
        )

    async def connect(self, *, autocommit: bool = True) -> Any:
        """A raw asyncmy connection, UTC and READ COMMITTED like the product's engine."""
        conn = await asyncmy.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            database=self.name,
            autocommit=autocommit,
            init_command="SET time_zone = '+00:00'",
            connect_timeout=5,
        )
        await execute(conn, "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        return conn


async def fetch(conn: Any, sql: str, args: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
    async with conn.cursor() as cur:
        await cur.execute(sql, args)
        rows: list[tuple[Any, ...]] = list(await cur.fetchall())
        return rows


async def scalar(conn: Any, sql: str, args: Sequence[Any] | None = None) -> Any:
    rows = await fetch(conn, sql, args)
    return rows[0][0] if rows else None


async def execute(conn: Any, sql: str, args: Sequence[Any] | None = None) -> int:
    async with conn.cursor() as cur:
        affected: int = await cur.execute(sql, args)
        return affected


def schema_fingerprint() -> str:
    return hashlib.sha256(SCHEMA_PATH.read_bytes()).hexdigest()


async def get_meta(conn: Any, name: str) -> str | None:
    value: str | None = await scalar(conn, "SELECT value FROM bench_meta WHERE name = %s", [name])
    return value


async def set_meta(conn: Any, name: str, value: str) -> None:
    await execute(
        conn,
        "INSERT INTO bench_meta (name, value, updated_at) VALUES (%s, %s, UTC_TIMESTAMP(6)) "
        "ON DUPLICATE KEY UPDATE value = VALUES(value), updated_at = VALUES(updated_at)",
        [name, value],
    )


async def prepare_schema(db: Database) -> bool:
    """Make the tables match ``db/schema.sql``; True when they were (re)created.

    ``CREATE TABLE IF NOT EXISTS`` would keep a stale table after a schema change, and the
    benchmark would then measure a schema the product no longer has: a changed
    schema.sql drops and recreates every product table (and so any loaded dataset).
    """
    conn = await db.connect()
    try:
        # "Unknown table" / "already exists" notes are expected here, not news.
        await execute(conn, "SET SESSION sql_notes = 0")
        await execute(conn, _META)
        fingerprint = schema_fingerprint()
        if await get_meta(conn, "schema") == fingerprint:
            return False
        for table in PRODUCT_TABLES:
            await execute(conn, f"DROP TABLE IF EXISTS {table}")
        for statement in schema_statements():
            await execute(conn, statement.rstrip(";"))
        await execute(conn, "DELETE FROM bench_meta")
        await set_meta(conn, "schema", fingerprint)
        return True
    finally:
        await conn.ensure_closed()


async def clear_scenario_rows(db: Database, tenant: str) -> None:
    """Remove what one scenario wrote, keeping the bulk-loaded listing dataset."""
    conn = await db.connect()
    try:
        for table in TRANSIENT_TABLES:
            await execute(conn, f"TRUNCATE TABLE {table}")
        # Batched so that no single statement holds locks on tens of thousands of rows.
        for table in ("dag_labels", "dags"):
            while await execute(
                conn, f"DELETE FROM {table} WHERE tenant = %s LIMIT 20000", [tenant]
            ):
                pass
    finally:
        await conn.ensure_closed()


async def server_version(db: Database) -> str:
    conn = await db.connect()
    try:
        return str(await scalar(conn, "SELECT VERSION()"))
    finally:
        await conn.ensure_closed()
