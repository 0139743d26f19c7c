"""Overload is answered, not queued: a cap on requests in flight, and a request deadline."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import AsyncEngine

import app.service
from aimtp import lifecycle
from aimtp.settings import ServerSettings, load
from app import create_app
from tests.conftest import TENANT_TOKENS
from tests.polling import wait_until
from tests.services import row_counts

BODY = (Path(__file__).parents[2] / "examples" / "dag.json").read_bytes()
TOKEN, _ = TENANT_TOKENS
HEADERS = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


class HeldSubmissions:
    def __init__(self) -> None:
        self.waiting = 0
        self.release = asyncio.Event()

    async def all_waiting(self, count: int) -> None:
        async def reached() -> bool:
            return self.waiting == count

        await wait_until(reached, timeout=5, interval=0.01)


@pytest.fixture
def held_submissions(monkeypatch: pytest.MonkeyPatch) -> HeldSubmissions:
    """Submissions wait for ``release`` before they touch the database."""
    held = HeldSubmissions()
    original: Callable[..., Awaitable[Any]] = app.service.DagService.submit

    async def submit(self: app.service.DagService, *args: Any, **kwargs: Any) -> Any:
        held.waiting += 1
        await held.release.wait()
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(app.service.DagService, "submit", submit)
    return held


@asynccontextmanager
async def capped_client(limit: int) -> AsyncIterator[httpx.AsyncClient]:
    """Serves the app on the test's own event loop, so requests really overlap (Litestar's
    test client runs each request to its end before the next)."""
    server = dataclasses.replace(load(ServerSettings), max_concurrent_requests=limit)
    capped = create_app(server=server)
    transport = httpx.ASGITransport(app=capped)  # type: ignore[arg-type]  # narrower scope types
    async with capped.lifespan(), httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        yield c


async def test_a_request_over_the_cap_is_answered_503_at_once_and_writes_nothing(
    held_submissions: HeldSubmissions, engine: AsyncEngine
) -> None:
    async with capped_client(limit=2) as client:
        in_flight = [
            asyncio.create_task(client.post("/v1/dags", content=BODY, headers=HEADERS))
            for _ in range(2)
        ]
        await held_submissions.all_waiting(2)

        shed = await client.post("/v1/dags", content=BODY, headers=HEADERS)
        probe = await client.get("/healthz")
        held_submissions.release.set()
        finished = await asyncio.gather(*in_flight)
        again = await client.post("/v1/dags", content=BODY, headers=HEADERS)

    assert shed.status_code == 503
    assert shed.headers["content-type"].startswith("application/problem+json")
    assert shed.headers["retry-after"] == "1"
    assert shed.json()["type"].endswith(":overloaded")
    assert probe.status_code == 200  # probes are never shed
    assert [r.status_code for r in finished] == [202, 202]
    assert again.status_code == 202  # room again once the others finished
    assert (await row_counts(engine))["dags"] == 3


async def test_a_request_past_the_deadline_is_503_and_rolled_back(
    monkeypatch: pytest.MonkeyPatch, engine: AsyncEngine
) -> None:
    original: Callable[..., Awaitable[Any]] = lifecycle.submit_dag

    async def slow_submit_dag(*args: Any, **kwargs: Any) -> Any:
        dag = await original(*args, **kwargs)  # written, not yet committed
        await asyncio.sleep(10)
        return dag

    monkeypatch.setattr(app.service, "submit_dag", slow_submit_dag)
    server = dataclasses.replace(load(ServerSettings), request_timeout_seconds=0.3)
    async with AsyncTestClient(app=create_app(server=server)) as client:
        response = await client.post("/v1/dags", content=BODY, headers=HEADERS)

    assert response.status_code == 503
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "0.3s" in response.json()["detail"]
    assert set((await row_counts(engine)).values()) == {0}
