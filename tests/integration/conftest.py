"""Integration fixtures: the real MariaDB (fresh schema once, tables emptied per test)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.services import fresh_test_database, truncate_all


@pytest.fixture(scope="session")
async def engine() -> AsyncIterator[AsyncEngine]:
    engine = await fresh_test_database()
    yield engine
    await engine.dispose()


@pytest.fixture(autouse=True)
async def clean_tables(engine: AsyncEngine) -> None:
    await truncate_all(engine)
