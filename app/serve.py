"""Run aimtp-server under uvicorn (uvloop, httptools)."""

from __future__ import annotations

from types import FrameType

import uvicorn

from aimtp.logs import configure_logging
from aimtp.runner import freeze_startup_heap
from aimtp.settings import LogSettings, ServerSettings, load
from aimtp.telemetry import configure_tracing
from app.main import create_app

GRACE_SECONDS = 20


class _GracefulServer(uvicorn.Server):
    """Exits 0 after a SIGTERM/SIGINT drain.

    uvicorn re-raises the caught signal once it has shut down, so a clean stop would
    end with "killed by SIGTERM"; supervisors should see a clean exit instead.
    """

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self._captured_signals.clear()


def serve(host: str | None = None, port: int | None = None) -> int:
    settings = load(ServerSettings)
    configure_logging("aimtp-server", load(LogSettings).log_level)
    configure_tracing("aimtp-server")
    # The gRPC API runs in uvicorn's event loop, started and stopped by the app's lifespan.
    config = uvicorn.Config(
        create_app(grpc_port=settings.grpc_port or None),
        host=host or settings.http_host,
        port=port or settings.http_port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_config=None,
        server_header=False,
        timeout_graceful_shutdown=GRACE_SECONDS,
    )
    freeze_startup_heap()
    _GracefulServer(config).run()
    return 0
