"""``/v1/dags``: submit a DAG, read it back."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from litestar import Request, get, post
from litestar.datastructures import State
from litestar.openapi.spec import (
    Example,
    OpenAPIFormat,
    OpenAPIMediaType,
    Operation,
    Reference,
    RequestBody,
)
from litestar.params import FromHeader, FromPath, HeaderParameter, QueryParameter
from litestar.response import Response

from aimtp.db.records import DagRecord
from aimtp.spec import FieldError, MalformedBody, SpecError
from aimtp.states import DagState
from aimtp.tracing import new_traceparent, valid_traceparent
from app import examples
from app.auth import Tenant
from app.examples import example_response
from app.listing import DagFilter, InvalidPageToken
from app.problems import Problem, ProblemError, problem_spec
from app.schemas import DagHistory, DagPage, DagSummary, DagView, TransitionView
from app.service import (
    DEFAULT_PAGE_SIZE,
    MAX_IDEMPOTENCY_KEY,
    MAX_PAGE_SIZE,
    BusyDag,
    DagNotFound,
    DagService,
    IdempotencyConflict,
    InvalidRequest,
    InvalidState,
    dag_filter,
)


@dataclass
class _SubmitOperation(Operation):
    """Documents the DAG spec body that the handler decodes itself (for exact error paths)."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            required=True,
            description="The DAG to run.",
            content={
                "application/json": OpenAPIMediaType(
                    schema=Reference(ref="#/components/schemas/DagSpec"),
                    examples={
                        "two-tasks": Example(
                            summary="Prepare a dataset, then train on 4 GPUs",
                            value=msgspec.to_builtins(examples.SPEC),
                        )
                    },
                )
            },
        )


_UNAUTHENTICATED = problem_spec(
    "No or invalid bearer token.",
    Problem(title="Unauthorized", status=401, detail="invalid bearer token"),
)
_NOT_FOUND = problem_spec(
    "No such DAG for this tenant.",
    Problem(title="Not Found", status=404, detail="DAG '0190...' not found"),
)

# Litestar's own parameter checks (a header or path value it cannot read).
_BAD_PARAMETER = problem_spec(
    "A path or header parameter is malformed.",
    Problem(
        title="Bad Request",
        status=400,
        detail="Validation failed for POST /v1/dags/0193a4f2/cancel",
        errors=[FieldError(field="traceparent", message="expected a string")],
    ),
)

# Every tenant route can be throttled or abandoned (README "Limits"), so each documents both.
_LIMITS = {
    429: problem_spec(
        "Over the tenant's request rate; `Retry-After` says when to try again.",
        Problem(title="Too Many Requests", status=429, detail="rate limit exceeded"),
    ),
    503: problem_spec(
        "The database is unavailable, or the request ran past the time limit; retry it.",
        Problem(title="Service Unavailable", status=503, detail="request timed out"),
    ),
}


def _service(state: State) -> DagService:
    service: DagService = state.dag_service
    return service


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


@post(
    "/v1/dags",
    status_code=202,
    operation_class=_SubmitOperation,
    tags=["dags"],
    summary="Submit a DAG",
    description=(
        "Validates the DAG and records it with its `dag.submitted` event in one "
        "transaction, then answers 202: the DAG is durable and will reach the Controller. "
        "Send an `Idempotency-Key` to retry safely: the same key with the same body "
        "returns the same DAG."
    ),
    responses={
        202: example_response(
            DagView, "Accepted: the DAG is durable.", examples.ACCEPTED, "Accepted"
        ),
        400: problem_spec(
            "The body is not JSON.",
            Problem(title="Bad Request", status=400, detail="request body is not valid JSON"),
        ),
        401: _UNAUTHENTICATED,
        **_LIMITS,
        409: problem_spec(
            "The Idempotency-Key was used with a different body.",
            Problem(title="Conflict", status=409, detail="Idempotency-Key 'k1' was already used"),
        ),
        413: problem_spec(
            "Body larger than the limit.",
            Problem(title="Request Entity Too Large", status=413, detail="body too large"),
        ),
        415: problem_spec(
            "Body is not JSON.",
            Problem(title="Unsupported Media Type", status=415, detail="send application/json"),
        ),
        422: problem_spec(
            "The DAG is invalid; `errors` names every offending field.",
            Problem(
                title="Unprocessable Content",
                status=422,
                detail="the DAG is invalid",
                errors=[],
            ),
        ),
    },
)
async def submit_dag(
    request: Request[Tenant, Any, Any],
    state: State,
    idempotency_key: Annotated[
        str | None,
        HeaderParameter(
            name="Idempotency-Key",
            required=False,
            max_length=MAX_IDEMPOTENCY_KEY,
            description="Makes retries safe: unique per tenant, kept for 24 h by default.",
        ),
    ] = None,
    traceparent: Annotated[
        str | None,
        HeaderParameter(name="traceparent", required=False, description="W3C trace context."),
    ] = None,
) -> Response[DagView]:
    if not _is_json(request.headers.get("content-type", "")):
        raise ProblemError(
            415,
            "unsupported-media-type",
            "the body must be JSON: send Content-Type: application/json",
        )
    body = await request.body()
    try:
        submission = await _service(state).submit(
            request.user.name,
            body,
            idempotency_key=idempotency_key or None,
            traceparent=valid_traceparent(traceparent) or new_traceparent(),
        )
    except MalformedBody as exc:
        raise ProblemError(400, "malformed-json", str(exc), errors=exc.errors) from None
    except SpecError as exc:
        raise ProblemError(422, "invalid-dag", str(exc), errors=exc.errors) from None
    except IdempotencyConflict as exc:
        raise ProblemError(409, "idempotency-key-reused", str(exc)) from None
    except InvalidRequest as exc:
        raise ProblemError(400, "bad-request", str(exc), errors=exc.errors) from None
    dag = submission.dag
    headers = {"Location": f"/v1/dags/{dag.id}"}
    if not submission.created:
        headers["Idempotent-Replayed"] = "true"
    return Response(DagView.of(dag, submission.spec), status_code=202, headers=headers)


_BAD_QUERY = problem_spec(
    "A query parameter is malformed.",
    Problem(title="Bad Request", status=400, detail="label must look like key=value"),
)
_WRONG_STATE = problem_spec(
    "The DAG's state does not allow this; `state` says which it is in.",
    Problem(
        title="Conflict",
        status=409,
        detail="cannot cancel a DAG in state SUCCEEDED",
        state="SUCCEEDED",
    ),
)


def _filters(
    state: list[DagState] | None,
    label: list[str] | None,
    name_prefix: str | None,
    created_after: datetime | None,
    created_before: datetime | None,
) -> DagFilter:
    try:
        return dag_filter(state or (), label or (), name_prefix, created_after, created_before)
    except InvalidRequest as exc:
        raise ProblemError(400, "bad-query", str(exc), errors=exc.errors) from None


_TIME = QueryParameter(
    format=OpenAPIFormat.DATE_TIME, description="ISO 8601 time, e.g. 2026-01-01T00:00:00Z."
)


def _moment(field: str, value: str | None) -> datetime | None:
    """An ISO 8601 query time, in UTC; only ISO 8601 (no bare numbers), as documented."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
        return moment if moment.tzinfo is None else moment.astimezone(UTC)
    except (ValueError, OverflowError):
        message = "must be an ISO 8601 time such as 2026-01-01T00:00:00Z"
        raise ProblemError(
            400,
            "bad-query",
            f"{field} {message}",
            errors=[FieldError(field=field, message=message)],
        ) from None


@get(
    "/v1/dags",
    tags=["dags"],
    summary="List and search DAGs",
    responses={
        200: example_response(DagPage, "The page, newest first.", examples.PAGE, "One page"),
        **_LIMITS,
        400: _BAD_QUERY,
        401: _UNAUTHENTICATED,
    },
)
async def list_dags(
    request: Request[Tenant, Any, Any],
    states: Annotated[
        list[DagState] | None,
        QueryParameter(name="state", description="Only DAGs in these states; repeatable."),
    ] = None,
    label: Annotated[
        list[str] | None,
        QueryParameter(description="Label selector `key=value`; repeat or comma-separate for AND."),
    ] = None,
    name_prefix: Annotated[str | None, QueryParameter(max_length=63)] = None,
    created_after: Annotated[str | None, _TIME] = None,
    created_before: Annotated[str | None, _TIME] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
    page_token: Annotated[str | None, QueryParameter(max_length=512)] = None,
) -> DagPage:
    """The caller's DAGs, newest first, filtered; follow `next_page_token` for more.

    Pages stay stable while new DAGs arrive: a walk sees every DAG that existed when it
    began exactly once.
    """
    filters = _filters(
        states,
        label,
        name_prefix,
        _moment("created_after", created_after),
        _moment("created_before", created_before),
    )
    try:
        dags, token = await _service(request.app.state).search(
            request.user.name, filters, limit, page_token
        )
    except InvalidPageToken as exc:
        raise ProblemError(
            400, "bad-query", str(exc), errors=[FieldError(field="page_token", message=str(exc))]
        ) from None
    except InvalidRequest as exc:
        raise ProblemError(400, "bad-query", str(exc), errors=exc.errors) from None
    return DagPage(items=[DagSummary.of(dag) for dag in dags], next_page_token=token)


@get(
    "/v1/dags/{dag_id:str}",
    tags=["dags"],
    summary="Get a DAG",
    responses={
        200: example_response(DagView, "The DAG.", examples.DAG, "Running"),
        400: _BAD_PARAMETER,
        **_LIMITS,
        401: _UNAUTHENTICATED,
        404: _NOT_FOUND,
    },
)
async def get_dag(
    request: Request[Tenant, Any, Any], state: State, dag_id: FromPath[str]
) -> DagView:
    """The DAG with its current state. Another tenant's DAG is a 404."""
    try:
        dag = await _service(state).get(request.user.name, dag_id)
    except DagNotFound as exc:
        raise ProblemError(404, "not-found", str(exc)) from None
    return DagView.of(dag)


@post(
    "/v1/dags/{dag_id:str}/cancel",
    status_code=202,
    tags=["dags"],
    summary="Cancel a DAG",
    responses={
        202: example_response(
            DagView, "Cancelling (or already cancelled).", examples.CANCELLING, "Cancelling"
        ),
        400: _BAD_PARAMETER,
        **_LIMITS,
        401: _UNAUTHENTICATED,
        404: _NOT_FOUND,
        409: _WRONG_STATE,
    },
)
async def cancel_dag(
    request: Request[Tenant, Any, Any],
    dag_id: FromPath[str],
    traceparent: FromHeader[str | None] = None,
) -> DagView:
    """Moves the DAG to CANCELLING; the trigger deletes its workload at the Controller,
    then it is CANCELLED. Idempotent: cancelling a cancelling or cancelled DAG returns it
    unchanged. A DAG that already ended otherwise is a 409."""
    return await _apply(
        request,
        dag_id,
        lambda service, tenant, tp: service.cancel(tenant, dag_id, traceparent=tp),
        traceparent,
    )


@post(
    "/v1/dags/{dag_id:str}/retry",
    status_code=202,
    tags=["dags"],
    summary="Retry a DAG",
    responses={
        202: example_response(
            DagView, "A new attempt, back to PENDING.", examples.RETRIED, "Retried"
        ),
        400: _BAD_PARAMETER,
        **_LIMITS,
        401: _UNAUTHENTICATED,
        404: _NOT_FOUND,
        409: _WRONG_STATE,
    },
)
async def retry_dag(
    request: Request[Tenant, Any, Any],
    dag_id: FromPath[str],
    traceparent: FromHeader[str | None] = None,
) -> DagView:
    """Runs a FAILED, TIMED_OUT or CANCELLED DAG again as a new attempt, through the
    normal pipeline. Any other state is a 409."""
    return await _apply(
        request,
        dag_id,
        lambda service, tenant, tp: service.retry(tenant, dag_id, traceparent=tp),
        traceparent,
    )


@get(
    "/v1/dags/{dag_id:str}/events",
    tags=["dags"],
    summary="A DAG's history",
    responses={
        200: example_response(
            DagHistory, "Every transition, oldest first.", examples.HISTORY, "History"
        ),
        400: _BAD_PARAMETER,
        **_LIMITS,
        401: _UNAUTHENTICATED,
        404: _NOT_FOUND,
    },
)
async def dag_events(request: Request[Tenant, Any, Any], dag_id: FromPath[str]) -> DagHistory:
    """Every state transition of the DAG, oldest first, with time, actor (server,
    trigger, watcher, controller) and reason."""
    try:
        history = await _service(request.app.state).history(request.user.name, dag_id)
    except DagNotFound as exc:
        raise ProblemError(404, "not-found", str(exc)) from None
    return DagHistory(
        dag_id=dag_id,
        events=[
            TransitionView(
                at=t.at.replace(tzinfo=UTC),
                from_state=t.from_state,
                to_state=t.to_state,
                attempt=t.attempt,
                actor=t.actor,
                reason=t.reason,
            )
            for t in history
        ],
    )


async def _apply(
    request: Request[Tenant, Any, Any],
    dag_id: str,
    operation: Callable[[DagService, str, str], Awaitable[DagRecord]],
    traceparent: str | None,
) -> DagView:
    try:
        dag = await operation(
            _service(request.app.state),
            request.user.name,
            valid_traceparent(traceparent) or new_traceparent(),
        )
    except DagNotFound as exc:
        raise ProblemError(404, "not-found", str(exc)) from None
    except InvalidState as exc:
        raise ProblemError(409, "invalid-state", str(exc), state=exc.dag.state.value) from None
    except BusyDag as exc:
        raise ProblemError(409, "busy", str(exc)) from None
    return DagView.of(dag)
