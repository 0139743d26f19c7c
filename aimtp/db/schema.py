"""``db/schema.sql`` applied idempotently (``aimtp db init``)."""

from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "db" / "schema.sql"


def schema_statements(path: Path = SCHEMA_PATH) -> list[str]:
    """The statements of a SQL file, comments removed, split on ``;`` at line ends."""
    lines = [line for line in path.read_text().splitlines() if not line.lstrip().startswith("--")]
    return [stmt.strip() for stmt in "\n".join(lines).split(";\n") if stmt.strip().strip(";")]


def schema_tables(path: Path = SCHEMA_PATH) -> list[str]:
    """The tables schema.sql creates, in its order."""
    return [
        match.group(1)
        for statement in schema_statements(path)
        if (match := re.match(r"CREATE TABLE IF NOT EXISTS (\w+)", statement))
    ]


async def apply_schema(engine: AsyncEngine, path: Path = SCHEMA_PATH) -> None:
    async with engine.begin() as conn:
        for statement in schema_statements(path):
            await conn.execute(text(statement.rstrip(";")))
