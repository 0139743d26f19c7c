"""The gRPC API (``aimtp.v1.DagService``), served beside HTTP by aimtp-server.

A second transport over the same ``DagService``: it authenticates, converts messages
and maps the service's exceptions to canonical status codes, nothing else.
"""

from app.grpc.server import GrpcServer

__all__ = ["GrpcServer"]
