"""The aimtp-server application: Litestar wired to the shared package."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from litestar import Litestar, Request
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.middleware import DefineMiddleware
from litestar.middleware.rate_limit import RateLimitConfig
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.plugins.prometheus import PrometheusConfig

from aimtp.db import create_engine
from aimtp.settings import DatabaseSettings, ServerSettings, SpecSettings, load
from aimtp.spec import SpecLimits
from app.admission import ConcurrencyLimitMiddleware
from app.auth import BearerAuthMiddleware, Tenant, TokenRegistry
from app.grpc import GrpcServer
from app.problems import EXCEPTION_HANDLERS
from app.routes import asyncapi, dags, health, status
from app.service import DagService
from app.timeouts import RequestTimeoutMiddleware

# Paths that need no token: probes, metrics and the API documentation.
PUBLIC_PATHS = ["^/healthz$", "^/readyz$", "^/metrics$", "^/docs"]
# Unary gRPC calls in flight get this long to finish at shutdown; watches end at once.
GRPC_GRACE_SECONDS = 10.0


def _tenant_of(request: Request[Any, Any, Any]) -> str:
    user = request.scope.get("user")
    return f"tenant:{user.name}" if isinstance(user, Tenant) else "anonymous"


def _rate_limit(server: ServerSettings) -> list[DefineMiddleware]:
    """Per-tenant request rate, counted in each server process (0 turns it off)."""
    if server.rate_limit_per_second <= 0:
        return []
    config = RateLimitConfig(
        rate_limit=("second", server.rate_limit_per_second),
        identifier_for_request=_tenant_of,
        # Probes, docs and the Controller's status callbacks are never throttled.
        exclude=[*PUBLIC_PATHS, r"^/v1/dags/[^/]+/status$"],
    )
    return [config.middleware]


def _concurrency_limit(server: ServerSettings) -> list[ConcurrencyLimitMiddleware]:
    if server.max_concurrent_requests <= 0:
        return []
    return [ConcurrencyLimitMiddleware(server.max_concurrent_requests, exclude=PUBLIC_PATHS)]


def create_app(
    server: ServerSettings | None = None,
    database: DatabaseSettings | None = None,
    spec: SpecSettings | None = None,
    *,
    grpc_port: int | None = None,
) -> Litestar:
    """The HTTP application; with ``grpc_port`` its lifespan also serves the gRPC API
    (port 0: any free port, published as ``app.state.grpc_port``) on the same service."""
    server = server or load(ServerSettings)
    database = database or load(DatabaseSettings)
    spec = spec or load(SpecSettings)
    registry = TokenRegistry.parse(server.api_tokens, server.controller_callback_token)
    limits = SpecLimits(
        max_tasks=spec.max_tasks,
        max_timeout_seconds=spec.max_timeout_seconds,
        max_retries=spec.max_retries,
    )

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        engine = create_engine(database)
        app.state.engine = engine
        app.state.dag_service = service = DagService(
            engine, limits, timedelta(seconds=server.idempotency_window_seconds)
        )
        grpc_server = None
        try:
            if grpc_port is not None:
                grpc_server = GrpcServer(service, registry, server)
                app.state.grpc_port = await grpc_server.start(server.http_host, grpc_port)
            yield
        finally:
            if grpc_server is not None:
                await grpc_server.stop(GRPC_GRACE_SECONDS)
            await engine.dispose()

    prometheus = PrometheusConfig(app_name="aimtp-server", prefix="aimtp_http", group_path=True)
    return Litestar(
        route_handlers=[
            dags.submit_dag,
            dags.list_dags,
            dags.get_dag,
            dags.cancel_dag,
            dags.retry_dag,
            dags.dag_events,
            status.report_status,
            asyncapi.asyncapi_json,
            health.healthz,
            health.readyz,
            health.metrics,
        ],
        lifespan=[lifespan],
        state=State({}),
        middleware=[
            prometheus.middleware,
            DefineMiddleware(BearerAuthMiddleware, registry=registry, exclude=PUBLIC_PATHS),
            *_rate_limit(server),
            *_concurrency_limit(server),
            RequestTimeoutMiddleware(server.request_timeout_seconds),
        ],
        exception_handlers=dict(EXCEPTION_HANDLERS),
        request_max_body_size=server.max_body_bytes,
        cors_config=CORSConfig(allow_origins=[]),
        openapi_config=OpenAPIConfig(
            title="AIMTP",
            version="1",
            description=(
                "Submit AI training pipelines (DAGs). Every accepted DAG reaches the "
                "Controller exactly once in effect. Errors are RFC 9457 problem+json."
            ),
            path="/docs",
            render_plugins=[ScalarRenderPlugin(), SwaggerRenderPlugin(path="/swagger")],
            components=Components(
                security_schemes={
                    "bearer": SecurityScheme(
                        type="http", scheme="bearer", description="Tenant token"
                    )
                }
            ),
            security=[{"bearer": []}],
        ),
        logging_config=None,  # aimtp.logs owns logging: JSON lines
        debug=False,
    )
