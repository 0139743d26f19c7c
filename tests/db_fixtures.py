"""Database fixtures for the integration and end-to-end suites (registered in conftest)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.services import fresh_test_database, truncate_all


@pytest.fixture(scope="session")
async def engine() -> AsyncIterator[AsyncEngine]:
    """The test database, schema applied fresh once per run."""
    engine = await fresh_test_database()
    yield engine
    await engine.dispose()


@pytest.fixture
async def clean_tables(engine: AsyncEngine) -> None:
    """Every table emptied before the test."""
    await truncate_all(engine)
