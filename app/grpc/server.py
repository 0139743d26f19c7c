"""The grpc.aio server of aimtp-server: DagService, health checking and reflection."""

from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from aimtp.settings import ServerSettings
from aimtp.v1 import dags_pb2, dags_pb2_grpc
from app.auth import TokenRegistry
from app.grpc.servicer import DagServicer, TenantRateLimiter
from app.service import DagService

SERVICE_NAME = dags_pb2.DESCRIPTOR.services_by_name["DagService"].full_name


class GrpcServer:
    """Runs in the event loop of the HTTP server and shares its ``DagService``."""

    def __init__(
        self, service: DagService, registry: TokenRegistry, settings: ServerSettings
    ) -> None:
        self._stopping = asyncio.Event()
        # The same body limit as HTTP: a larger message is RESOURCE_EXHAUSTED.
        self._server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", settings.max_body_bytes),
                ("grpc.so_reuseport", 0),
            ]
        )
        dags_pb2_grpc.add_DagServiceServicer_to_server(
            DagServicer(
                service,
                registry,
                TenantRateLimiter(settings.rate_limit_per_second),
                settings.request_timeout_seconds,
                self._stopping,
            ),
            self._server,
        )
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        reflection.enable_server_reflection(
            [SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME], self._server
        )

    async def start(self, host: str, port: int) -> int:
        """Listen on ``host:port`` (plaintext; TLS ends at the ingress); the bound port."""
        bound = self._server.add_insecure_port(f"{host}:{port}")
        if bound == 0:
            raise OSError(f"cannot listen for gRPC on {host}:{port}")
        await self._server.start()
        for name in ("", SERVICE_NAME):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        return bound

    async def stop(self, grace: float) -> None:
        """Report NOT_SERVING, end watches (clients resume elsewhere), drain unary calls."""
        self._stopping.set()
        await self._health.enter_graceful_shutdown()
        await self._server.stop(grace)
