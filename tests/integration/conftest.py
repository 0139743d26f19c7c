"""Integration tests: the real MariaDB, tables emptied before each test."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _isolated(clean_tables: None) -> None:
    """Each test starts from empty tables."""
