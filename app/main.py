"""The aimtp-server application: Litestar wired to the shared package."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.plugins.prometheus import PrometheusConfig, PrometheusController

from aimtp.db import create_engine
from aimtp.settings import DatabaseSettings, ServerSettings, SpecSettings, load
from aimtp.spec import SpecLimits
from app.auth import BearerAuthMiddleware, TokenRegistry
from app.problems import EXCEPTION_HANDLERS
from app.routes import dags, health
from app.service import DagService

# Paths that need no token: probes, metrics and the API documentation.
PUBLIC_PATHS = ["^/healthz$", "^/readyz$", "^/metrics$", "^/docs"]


def create_app(
    server: ServerSettings | None = None,
    database: DatabaseSettings | None = None,
    spec: SpecSettings | None = None,
) -> Litestar:
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
        app.state.dag_service = DagService(
            engine, limits, timedelta(seconds=server.idempotency_window_seconds)
        )
        try:
            yield
        finally:
            await engine.dispose()

    prometheus = PrometheusConfig(app_name="aimtp-server", prefix="aimtp_http", group_path=True)
    return Litestar(
        route_handlers=[
            dags.submit_dag,
            dags.get_dag,
            health.healthz,
            health.readyz,
            PrometheusController,
        ],
        lifespan=[lifespan],
        state=State({}),
        middleware=[
            prometheus.middleware,
            DefineMiddleware(BearerAuthMiddleware, registry=registry, exclude=PUBLIC_PATHS),
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
