"""Optional OpenTelemetry export: with an OTLP endpoint configured, the server and the
trigger export spans of the submission's trace."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.e2e.conftest import EXAMPLE, TENANT_TOKEN, Stack
from tests.polling import wait_until
from tests.processes import free_port

pytestmark = pytest.mark.e2e

RECEIVER_PORT = free_port()
STACK_ENV = {
    "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{RECEIVER_PORT}",
    "OTEL_BSP_SCHEDULE_DELAY": "200",
}
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


@pytest.fixture(scope="module")
async def exported() -> AsyncIterator[list[bytes]]:
    """An OTLP/HTTP receiver keeping every export request body."""
    bodies: list[bytes] = []

    async def traces(request: web.Request) -> web.Response:
        bodies.append(await request.read())
        return web.Response(body=b"", content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/traces", traces)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", RECEIVER_PORT).start()
    yield bodies
    await runner.cleanup()


@pytest.mark.timeout(90)
async def test_server_and_trigger_export_spans_of_the_request_trace(
    exported: list[bytes], stack: Stack, engine: AsyncEngine
) -> None:
    async with stack.http.post(
        f"{stack.api_url}/v1/dags",
        json=EXAMPLE,
        headers={"Authorization": f"Bearer {TENANT_TOKEN}", "traceparent": TRACEPARENT},
    ) as response:
        assert response.status == 202
        dag_id = (await response.json())["id"]
    await stack.wait_all(engine, [dag_id], "SUCCEEDED", timeout=60)

    trace_id = bytes.fromhex(TRACE_ID)

    async def both_exported() -> bool:
        ours = [body for body in exported if trace_id in body]
        return any(b"aimtp-server" in b for b in ours) and any(b"aimtp-trigger" in b for b in ours)

    await wait_until(both_exported, timeout=15)
    async with engine.connect() as conn:
        stored = (
            await conn.execute(
                text("SELECT traceparent FROM outbox WHERE dag_id = :id ORDER BY id LIMIT 1"),
                {"id": dag_id},
            )
        ).scalar_one()
    # The stored context is the server's span, a child within the caller's trace.
    assert stored.split("-")[1] == TRACE_ID
    assert stored != TRACEPARENT
