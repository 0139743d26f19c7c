"""Liveness and readiness probes, and the Prometheus metrics."""

from __future__ import annotations

from litestar import get
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example
from litestar.response import Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from aimtp.db import is_reachable
from app import examples
from app.examples import example_response
from app.schemas import Health


@get(
    "/healthz",
    exclude_from_auth=True,
    tags=["health"],
    summary="Liveness probe",
    responses={200: example_response(Health, "The process is up.", Health(status="ok"), "Up")},
)
async def healthz() -> Health:
    """The process is up and serving."""
    return Health(status="ok")


@get(
    "/readyz",
    exclude_from_auth=True,
    tags=["health"],
    summary="Readiness probe",
    responses={
        200: example_response(Health, "Ready to serve.", examples.HEALTHY, "Ready"),
        503: example_response(
            Health, "The database is unreachable.", examples.UNHEALTHY, "Not ready"
        ),
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
    responses={
        200: ResponseSpec(
            data_container=str,
            description="The Prometheus text format.",
            media_type="text/plain",
            generate_examples=False,
            examples=[
                Example(
                    summary="Two of the samples",
                    value='aimtp_http_requests_total{method="POST",path="/v1/dags",'
                    'status_code="202",app_name="aimtp-server"} 1234.0\n'
                    'aimtp_dag_transitions_total{from_state="none",to_state="PENDING"} 1234.0\n',
                )
            ],
        )
    },
)
async def metrics() -> Response[bytes]:
    """The process's metrics in the Prometheus text format (documented as text, not JSON)."""
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
