"""aimtp-server as a real process: the README's curl, then a clean SIGTERM."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.processes import ROOT, Process, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("clean_tables")]


@pytest.mark.timeout(60)
async def test_submit_example_over_http_then_sigterm(engine: AsyncEngine, tmp_path: Path) -> None:
    port = free_port()
    server = Process("server", ["server"], {"AIMTP_HTTP_PORT": str(port)}, tmp_path).start()
    base = f"http://127.0.0.1:{port}"
    try:
        await server.wait_http(f"{base}/readyz")
        body = (ROOT / "examples" / "dag.json").read_bytes()
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"{base}/v1/dags",
                data=body,
                headers={
                    "Authorization": "Bearer tenant-a-token",
                    "Content-Type": "application/json",
                },
            ) as response:
                assert response.status == 202, await response.text()
                created = await response.json()
                location = response.headers["Location"]
            async with http.get(
                f"{base}{location}", headers={"Authorization": "Bearer tenant-a-token"}
            ) as response:
                assert response.status == 200
                fetched = await response.json()
            async with http.get(f"{base}/metrics") as response:
                assert response.status == 200
                assert "aimtp_http" in await response.text()
        assert created["state"] == "PENDING"
        example = json.loads(body)
        assert fetched["id"] == created["id"]
        assert [t["name"] for t in fetched["spec"]["tasks"]] == [
            t["name"] for t in example["tasks"]
        ]
        assert fetched["spec"]["tasks"][1]["resources"] == example["tasks"][1]["resources"]
        async with engine.connect() as conn:
            events = (
                (
                    await conn.execute(
                        text("SELECT event_type FROM outbox WHERE dag_id = :id"),
                        {"id": created["id"]},
                    )
                )
                .scalars()
                .all()
            )
        assert events == ["dag.submitted"]
    finally:
        code = await server.terminate(timeout=30)
    assert code == 0, server.tail()
