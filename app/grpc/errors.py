"""Service exceptions to canonical gRPC status codes with ``google.rpc`` details.

The same exceptions the HTTP routes map to problem+json; each maps to one code here:
INVALID_ARGUMENT (with ``BadRequest`` naming each field), NOT_FOUND, ALREADY_EXISTS
(an idempotency key reused with another spec), FAILED_PRECONDITION (wrong state,
with ``PreconditionFailure``), ABORTED (the DAG kept changing), UNAVAILABLE (timed
out, or the database is unavailable; retry, with ``RetryInfo``), UNAUTHENTICATED and
RESOURCE_EXHAUSTED (with ``RetryInfo``).
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from aimtp.db import is_database_unavailable
from aimtp.spec import FieldError, SpecError
from app.listing import InvalidPageToken
from app.service import BusyDag, DagNotFound, IdempotencyConflict, InvalidRequest, InvalidState

# The service names request parameters as HTTP does; gRPC clients know the proto fields.
_GRPC_FIELD = {"limit": "page_size", "label": "labels", "Idempotency-Key": "idempotency-key"}


class RpcError(Exception):
    """Ends a call with ``code``; raised by the servicer, turned into a status once."""

    def __init__(
        self, code: grpc.StatusCode, message: str, details: Iterable[Message] = ()
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = list(details)

    def to_status(self) -> grpc.Status:
        status = status_pb2.Status(code=self.code.value[0], message=self.message)
        for detail in self.details:
            packed = any_pb2.Any()
            packed.Pack(detail)
            status.details.append(packed)
        return rpc_status.to_status(status)


def bad_request(message: str, errors: Iterable[FieldError]) -> RpcError:
    violations = [
        error_details_pb2.BadRequest.FieldViolation(
            field=_GRPC_FIELD.get(error.field, error.field), description=error.message
        )
        for error in errors
    ]
    return RpcError(
        grpc.StatusCode.INVALID_ARGUMENT,
        message,
        [error_details_pb2.BadRequest(field_violations=violations)],
    )


def rate_limited(retry_after_seconds: float) -> RpcError:
    return RpcError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "rate limit exceeded for this tenant; retry later",
        [_retry_info(retry_after_seconds)],
    )


def _retry_info(seconds: float) -> error_details_pb2.RetryInfo:
    delay = duration_pb2.Duration()
    delay.FromNanoseconds(int(seconds * 1e9))
    return error_details_pb2.RetryInfo(retry_delay=delay)


def from_service(exc: Exception) -> RpcError | None:
    """The status for a service exception; None for one that is a server fault."""
    if isinstance(exc, RpcError):
        return exc
    if isinstance(exc, SpecError | InvalidRequest):
        return bad_request(str(exc), exc.errors)
    if isinstance(exc, InvalidPageToken):
        return bad_request(str(exc), [FieldError(field="page_token", message=str(exc))])
    if isinstance(exc, DagNotFound):
        return RpcError(
            grpc.StatusCode.NOT_FOUND,
            str(exc),
            [
                error_details_pb2.ResourceInfo(
                    resource_type="aimtp.v1.Dag", resource_name=exc.dag_id
                )
            ],
        )
    if isinstance(exc, IdempotencyConflict):
        return RpcError(grpc.StatusCode.ALREADY_EXISTS, str(exc))
    if isinstance(exc, InvalidState):
        violation = error_details_pb2.PreconditionFailure.Violation(
            type="STATE", subject=f"dags/{exc.dag.id}", description=exc.dag.state.value
        )
        return RpcError(
            grpc.StatusCode.FAILED_PRECONDITION,
            str(exc),
            [error_details_pb2.PreconditionFailure(violations=[violation])],
        )
    if isinstance(exc, BusyDag):
        return RpcError(grpc.StatusCode.ABORTED, str(exc))
    if is_database_unavailable(exc):
        return RpcError(
            grpc.StatusCode.UNAVAILABLE,
            "the database is unavailable or saturated; retry shortly "
            "(with the same idempotency-key for submissions)",
            [_retry_info(1.0)],
        )
    return None
