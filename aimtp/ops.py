"""The operations endpoint of the background processes: /metrics, /healthz, /readyz.

aimtp-server serves the same paths from its own HTTP app; the relay, trigger and
watcher run this small aiohttp server on their metrics port as a side task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import msgspec
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from aimtp.runner import SideTask

ReadinessCheck = Callable[[], Awaitable[dict[str, bool]]]


def ops_app(readiness: ReadinessCheck) -> web.Application:
    async def metrics(_: web.Request) -> web.Response:
        body = await asyncio.to_thread(generate_latest, REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        checks = await readiness()
        ok = all(checks.values())
        body = {
            "status": "ok" if ok else "unavailable",
            "checks": {name: "ok" if good else "unreachable" for name, good in checks.items()},
        }
        return web.Response(
            body=msgspec.json.encode(body),
            status=200 if ok else 503,
            content_type="application/json",
        )

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


def ops_server(host: str, port: int, readiness: ReadinessCheck) -> SideTask:
    """A side task (see ``aimtp.runner``) serving the ops endpoints until stop."""

    async def serve(stop: asyncio.Event) -> None:
        runner = web.AppRunner(ops_app(readiness), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    return serve
