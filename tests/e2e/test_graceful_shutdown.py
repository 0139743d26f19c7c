"""SIGTERM under load: every process drains, exits 0 within its grace period, and nothing
accepted is lost or done twice.

A load of submissions runs throughout. Each submission carries an ``Idempotency-Key`` and
is retried with it until the server answers 202 (as ``aimtp submit`` does), so a request
cut by the server's own shutdown is neither lost nor doubled. After the stopped process
is started again, every accepted DAG must reach SUCCEEDED, created exactly once at the
reference Controller.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import aiohttp
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.serve import GRACE_SECONDS as SERVER_GRACE_SECONDS
from tests.e2e.conftest import EXAMPLE, TENANT_TOKEN, Stack
from tests.polling import wait_until

pytestmark = pytest.mark.e2e

GRACE_SECONDS = 10.0
STACK_ENV = {
    "AIMTP_RELAY_GRACE_SECONDS": str(GRACE_SECONDS),
    "AIMTP_TRIGGER_GRACE_SECONDS": str(GRACE_SECONDS),
    "AIMTP_WATCHER_GRACE_SECONDS": str(GRACE_SECONDS),
    # Sweeps often, so a SIGTERM is likely to land while one is running.
    "AIMTP_WATCHER_INTERVAL_SECONDS": "0.5",
    # Status callbacks sent while the server is down are lost; the watcher asks the
    # Controller after this long (60 s by default), which bounds the recovery.
    "AIMTP_RUNNING_STATUS_SECONDS": "3",
}
# The example's tasks take 10 simulated seconds in all: 0.2 s here.
STACK_SIM_ARGS = ["--default-task-seconds", "0.05", "--time-scale", "0.02"]
GRACE = {
    "server": float(SERVER_GRACE_SECONDS),
    "relay": GRACE_SECONDS,
    "trigger": GRACE_SECONDS,
    "watcher": GRACE_SECONDS,
}


class Load:
    """Submitters that keep sending DAGs until stopped; ``accepted`` holds every 202."""

    def __init__(self, stack: Stack, workers: int = 4, pause: float = 0.05) -> None:
        self.stack = stack
        self.accepted: list[str] = []
        self.retried = 0
        self._pause = pause
        self._stopping = asyncio.Event()
        self._tasks = [asyncio.create_task(self._worker()) for _ in range(workers)]

    async def _worker(self) -> None:
        while not self._stopping.is_set():
            self.accepted.append(await self._submit_one())
            await asyncio.sleep(self._pause)

    async def _submit_one(self) -> str:
        """One DAG, retried with its key until accepted, however long the server is away."""
        headers = {"Authorization": f"Bearer {TENANT_TOKEN}", "Idempotency-Key": uuid.uuid4().hex}
        timeout = aiohttp.ClientTimeout(total=10)
        while True:
            try:
                async with self.stack.http.post(
                    f"{self.stack.api_url}/v1/dags", json=EXAMPLE, headers=headers, timeout=timeout
                ) as response:
                    if response.status == 202:
                        body: dict[str, Any] = await response.json()
                        dag_id: str = body["id"]
                        return dag_id
                    # Throttled or cut short by a shutdown: retry; anything else is a bug.
                    assert response.status in (429, 503), await response.text()
            except (aiohttp.ClientError, TimeoutError):
                pass
            self.retried += 1
            await asyncio.sleep(0.1)

    async def until(self, count: int, timeout: float = 30) -> None:
        async def reached() -> bool:
            return len(self.accepted) >= count

        await wait_until(reached, timeout=timeout)

    async def stop(self) -> list[str]:
        """Stops submitting; every submission already started is seen through."""
        self._stopping.set()
        await asyncio.gather(*self._tasks)
        return self.accepted


@pytest.mark.timeout(150)
@pytest.mark.parametrize("name", ["server", "relay", "trigger", "watcher"])
async def test_sigterm_under_load_exits_zero_and_loses_nothing(
    stack: Stack, engine: AsyncEngine, name: str
) -> None:
    load = Load(stack)
    try:
        await load.until(20)
        process = stack.processes[name]

        started = time.monotonic()
        code = await process.terminate(timeout=GRACE[name] + 10)
        stopped_after = time.monotonic() - started

        assert code == 0, process.tail()
        assert stopped_after < GRACE[name], f"{name} took {stopped_after:.1f}s to stop"
        during = len(load.accepted)
        await stack.restart(name)
        await load.until(during + 20)
    finally:
        dag_ids = await load.stop()

    assert len(set(dag_ids)) == len(dag_ids), "a retried submission created a second DAG"
    await stack.wait_all(engine, dag_ids, "SUCCEEDED", timeout=60)
    creations = await stack.creations()
    assert {d: creations.get(d) for d in dag_ids} == dict.fromkeys(dag_ids, 1)
