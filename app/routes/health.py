"""Liveness and readiness probes."""

from __future__ import annotations

from litestar import get
from litestar.datastructures import State
from litestar.response import Response

from aimtp.db import is_reachable
from app.schemas import Health


@get("/healthz", exclude_from_auth=True, tags=["health"], summary="Liveness probe")
async def healthz() -> Health:
    """The process is up and serving."""
    return Health(status="ok")


@get("/readyz", exclude_from_auth=True, tags=["health"], summary="Readiness probe")
async def readyz(state: State) -> Response[Health]:
    """The database is reachable: 200, else 503 so traffic goes elsewhere."""
    db_ok = await is_reachable(state.engine)
    health = Health(
        status="ok" if db_ok else "unavailable",
        checks={"database": "ok" if db_ok else "unreachable"},
    )
    return Response(health, status_code=200 if db_ok else 503)
