"""RFC 9457 problem details: every error aimtp-server returns, one shape.

Handlers raise ``ProblemError`` (or Litestar's HTTP exceptions); the exception
handlers here turn them into ``application/problem+json`` without stack traces.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as SATimeoutError

from aimtp.db import is_database_unavailable
from aimtp.spec import FieldError

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "urn:aimtp:problem:"


class Problem(msgspec.Struct, omit_defaults=True, kw_only=True):
    """An RFC 9457 problem document. ``errors`` names each offending field."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[FieldError] | None = None
    state: str | None = None


class ProblemError(Exception):
    """Raise from a handler to answer with a problem document."""

    def __init__(
        self,
        status: int,
        slug: str,
        detail: str,
        *,
        errors: list[FieldError] | None = None,
        headers: Mapping[str, str] | None = None,
        state: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.detail = detail
        self.errors = errors
        self.headers = dict(headers or {})
        self.state = state

    def to_problem(self, instance: str | None) -> Problem:
        return Problem(
            type=PROBLEM_BASE + self.slug,
            title=HTTPStatus(self.status).phrase,
            status=self.status,
            detail=self.detail,
            instance=instance,
            errors=self.errors,
            state=self.state,
        )


def problem_spec(description: str, example: Problem) -> ResponseSpec:
    """An error response for the OpenAPI document, with ``example`` as its body."""
    return ResponseSpec(
        data_container=Problem,
        description=description,
        media_type=PROBLEM_JSON,
        generate_examples=False,
        examples=[Example(summary=example.title, value=example)],
    )


def problem_response(problem: Problem, headers: Mapping[str, str] | None = None) -> Response[Any]:
    return Response(
        content=msgspec.json.encode(problem),
        status_code=problem.status,
        media_type=PROBLEM_JSON,
        headers=dict(headers or {}),
    )


def _on_problem(request: Request[Any, Any, Any], exc: ProblemError) -> Response[Any]:
    return problem_response(exc.to_problem(request.url.path), exc.headers)


_SLUGS = {
    400: "bad-request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    413: "body-too-large",
    415: "unsupported-media-type",
    429: "rate-limited",
}


def _on_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    status = exc.status_code
    errors = None
    if isinstance(exc, ValidationException) and isinstance(exc.extra, list):
        # Litestar's own parameter validation: keep its field keys.
        errors = [
            FieldError(field=str(item.get("key", "")), message=str(item.get("message", "")))
            for item in exc.extra
            if isinstance(item, dict)
        ]
    slug = _SLUGS.get(status, "error" if status < 500 else "internal")
    # 5xx details might carry internals; 4xx details are written for users.
    detail = exc.detail if status < 500 else "the server could not complete the request"
    problem = Problem(
        type=PROBLEM_BASE + slug,
        title=HTTPStatus(status).phrase,
        status=status,
        detail=detail,
        instance=request.url.path,
        errors=errors or None,
    )
    headers = dict(exc.headers or {})
    if status == 429 and "Retry-After" not in headers:
        # Litestar's limiter says when the window resets; RFC 9110 clients read Retry-After.
        headers["Retry-After"] = str(max(1, int(headers.get("RateLimit-Reset", "1"))))
    return problem_response(problem, headers)


def _on_too_deep(request: Request[Any, Any, Any], exc: RecursionError) -> Response[Any]:
    # Only a hostile body nests deep enough to exhaust the JSON decoder's recursion.
    log.warning("request body nested too deeply", extra={"path": request.url.path})
    problem = Problem(
        type=PROBLEM_BASE + "malformed-json",
        title=HTTPStatus.BAD_REQUEST.phrase,
        status=400,
        detail="the request body is nested too deeply",
        instance=request.url.path,
    )
    return problem_response(problem)


def _on_database_unavailable(
    request: Request[Any, Any, Any], exc: OperationalError | SATimeoutError
) -> Response[Any]:
    """No connection to be had (pool exhausted, database down, lock wait timeout): the
    transaction was rolled back and a retry may succeed, so a 503, not a 500."""
    if not is_database_unavailable(exc):
        return _on_unexpected(request, exc)
    log.warning(
        "database unavailable", extra={"path": request.url.path, "error": type(exc).__name__}
    )
    problem = Problem(
        type=PROBLEM_BASE + "unavailable",
        title=HTTPStatus.SERVICE_UNAVAILABLE.phrase,
        status=503,
        detail="the database is unavailable or saturated; retry shortly "
        "(with the same Idempotency-Key for submissions)",
        instance=request.url.path,
    )
    return problem_response(problem, {"Retry-After": "1"})


def _on_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.exception("unhandled error", extra={"path": request.url.path})
    problem = Problem(
        type=PROBLEM_BASE + "internal",
        title=HTTPStatus.INTERNAL_SERVER_ERROR.phrase,
        status=500,
        detail="the server could not complete the request; it has been logged",
        instance=request.url.path,
    )
    return problem_response(problem)


EXCEPTION_HANDLERS: Mapping[Any, Any] = {
    ProblemError: _on_problem,
    HTTPException: _on_http_exception,
    SATimeoutError: _on_database_unavailable,
    OperationalError: _on_database_unavailable,
    RecursionError: _on_too_deep,
    Exception: _on_unexpected,
}

__all__ = ["EXCEPTION_HANDLERS", "PROBLEM_JSON", "Problem", "ProblemError", "problem_spec"]
