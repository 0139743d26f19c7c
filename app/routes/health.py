"""Liveness and readiness probes, and the Prometheus metrics."""

from __future__ import annotations

from litestar import get
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec
from litestar.response import Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from aimtp.db import is_reachable
from app.schemas import Health


@get("/healthz", exclude_from_auth=True, tags=["health"], summary="Liveness probe")
async def healthz() -> Health:
    """The process is up and serving."""
    return Health(status="ok")


@get(
    "/readyz",
    exclude_from_auth=True,
    tags=["health"],
    summary="Readiness probe",
    responses={
        503: ResponseSpec(
            data_container=Health, description="The database is unreachable.", examples=[]
        )
    },
)
async def readyz(state: State) -> Response[Health]:
    """The database is reachable: 200, else 503 so traffic goes elsewhere."""
    db_ok = await is_reachable(state.engine)
    health = Health(
        status="ok" if db_ok else "unavailable",
        checks={"database": "ok" if db_ok else "unreachable"},
    )
    return Response(health, status_code=200 if db_ok else 503)


@get(
    "/metrics",
    exclude_from_auth=True,
    media_type="text/plain",
    tags=["health"],
    summary="Prometheus metrics",
)
async def metrics() -> Response[bytes]:
    """The process's metrics in the Prometheus text format (documented as text, not JSON)."""
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
