"""aimtp-server: the HTTP API that accepts DAGs."""

from app.main import create_app

__all__ = ["create_app"]
