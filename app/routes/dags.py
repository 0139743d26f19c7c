"""``/v1/dags``: submit a DAG, read it back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from litestar import Request, get, post
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example, OpenAPIMediaType, Operation, Reference, RequestBody
from litestar.params import FromPath, HeaderParameter
from litestar.response import Response

from aimtp.spec import MalformedBody, SpecError
from aimtp.tracing import new_traceparent, valid_traceparent
from app.auth import Tenant
from app.problems import PROBLEM_JSON, Problem, ProblemError
from app.schemas import DagView
from app.service import DagNotFound, DagService, IdempotencyConflict

MAX_IDEMPOTENCY_KEY = 255


@dataclass
class _SubmitOperation(Operation):
    """Documents the DAG spec body that the handler decodes itself (for exact error paths)."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            required=True,
            description="The DAG to run.",
            content={
                "application/json": OpenAPIMediaType(
                    schema=Reference(ref="#/components/schemas/DagSpec")
                )
            },
        )


def _problem(status: int, description: str, example: Problem) -> ResponseSpec:
    return ResponseSpec(
        data_container=Problem,
        description=description,
        media_type=PROBLEM_JSON,
        generate_examples=False,
        examples=[Example(summary=example.title, value=example)],
    )


_UNAUTHENTICATED = _problem(
    401,
    "No or invalid bearer token.",
    Problem(title="Unauthorized", status=401, detail="invalid bearer token"),
)
_NOT_FOUND = _problem(
    404,
    "No such DAG for this tenant.",
    Problem(title="Not Found", status=404, detail="DAG '0190...' not found"),
)


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
        400: _problem(
            400,
            "The body is not JSON.",
            Problem(title="Bad Request", status=400, detail="request body is not valid JSON"),
        ),
        401: _UNAUTHENTICATED,
        409: _problem(
            409,
            "The Idempotency-Key was used with a different body.",
            Problem(title="Conflict", status=409, detail="Idempotency-Key 'k1' was already used"),
        ),
        413: _problem(
            413,
            "Body larger than the limit.",
            Problem(title="Request Entity Too Large", status=413, detail="body too large"),
        ),
        415: _problem(
            415,
            "Body is not JSON.",
            Problem(title="Unsupported Media Type", status=415, detail="send application/json"),
        ),
        422: _problem(
            422,
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
    dag = submission.dag
    headers = {"Location": f"/v1/dags/{dag.id}"}
    if not submission.created:
        headers["Idempotent-Replayed"] = "true"
    return Response(DagView.of(dag, submission.spec), status_code=202, headers=headers)


@get(
    "/v1/dags/{dag_id:str}",
    tags=["dags"],
    summary="Get a DAG",
    responses={401: _UNAUTHENTICATED, 404: _NOT_FOUND},
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
