"""Bearer-token authentication: tenant tokens for the API, one credential for the Controller.

Tokens are kept only as SHA-256 digests; a presented token is hashed and looked up,
so no comparison ever runs over the secret itself, and no token is logged.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult
from litestar.types import ASGIApp

CONTROLLER_ONLY = "controller_only"
"""Route ``opt`` key: the route takes the Controller credential instead of a tenant token."""


@dataclass(frozen=True)
class Tenant:
    name: str


@dataclass(frozen=True)
class ControllerIdentity:
    """The Controller, authenticated on the status callback."""


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class TokenRegistry:
    """Tenant tokens by digest, and the Controller's credential digest."""

    def __init__(self, tenant_tokens: dict[str, str], controller_token: str) -> None:
        self._tenants = {_digest(token): Tenant(name) for token, name in tenant_tokens.items()}
        self._controller = _digest(controller_token) if controller_token else None

    @classmethod
    def parse(cls, api_tokens: str, controller_token: str) -> TokenRegistry:
        """Read ``token:tenant`` pairs, comma-separated."""
        pairs: dict[str, str] = {}
        for item in filter(None, (part.strip() for part in api_tokens.split(","))):
            token, sep, tenant = item.rpartition(":")
            if not sep or not token or not tenant:
                raise ValueError("AIMTP_API_TOKENS entries must look like token:tenant")
            pairs[token] = tenant
        return cls(pairs, controller_token)

    def tenant_for(self, token: str) -> Tenant | None:
        return self._tenants.get(_digest(token))

    def is_controller(self, token: str) -> bool:
        return self._controller is not None and hmac.compare_digest(
            _digest(token), self._controller
        )


def bearer_token(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    scheme, _, token = connection.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise NotAuthorizedException(
            "missing bearer token: send 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": 'Bearer realm="aimtp"'},
        )
    return token.strip()


class BearerAuthMiddleware(AbstractAuthenticationMiddleware):
    """Authenticates every route except those excluded (health, metrics, docs)."""

    def __init__(self, app: ASGIApp, registry: TokenRegistry, exclude: list[str]) -> None:
        super().__init__(app, exclude=exclude)
        self._registry = registry

    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        token = bearer_token(connection)
        handler = connection.scope.get("route_handler")
        if handler is not None and handler.opt.get(CONTROLLER_ONLY):
            if self._registry.is_controller(token):
                return AuthenticationResult(user=ControllerIdentity(), auth=None)
        elif (tenant := self._registry.tenant_for(token)) is not None:
            return AuthenticationResult(user=tenant, auth=None)
        raise NotAuthorizedException(
            "invalid bearer token", headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
        )
