"""Run aimtp-server under uvicorn (uvloop, httptools)."""

from __future__ import annotations

import uvicorn

from aimtp.logs import configure_logging
from aimtp.settings import LogSettings, ServerSettings, load
from app.main import create_app


def serve(host: str | None = None, port: int | None = None) -> int:
    settings = load(ServerSettings)
    configure_logging("aimtp-server", load(LogSettings).log_level)
    config = uvicorn.Config(
        create_app(),
        host=host or settings.http_host,
        port=port or settings.http_port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_config=None,
        server_header=False,
        timeout_graceful_shutdown=20,
    )
    uvicorn.Server(config).run()
    return 0
