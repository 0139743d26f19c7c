"""Integration tests: the real MariaDB, tables emptied before each test, and a reference
Controller served in-process for the tests that need one."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from aimtp.controller import ControllerClient
from controller_sim.server import ControllerSim, SimConfig


@pytest.fixture(autouse=True)
def _isolated(clean_tables: None) -> None:
    """Each test starts from empty tables."""


@pytest.fixture
async def sim() -> AsyncIterator[ControllerSim]:
    sim = ControllerSim(SimConfig(token="ctl", default_task_seconds=60))
    await sim.start()
    yield sim
    await sim.stop()


@pytest.fixture
async def controller(sim: ControllerSim) -> AsyncIterator[ControllerClient]:
    async with ControllerClient(sim.url, "ctl", timeout_seconds=2) as client:
        yield client
