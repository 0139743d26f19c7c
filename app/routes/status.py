"""``POST /v1/dags/{id}/status``: the Controller reports how a DAG's workload is doing."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import post
from litestar.datastructures import State
from litestar.openapi.spec import Example
from litestar.params import Body, FromPath

from aimtp import metrics
from aimtp.controller import StatusReport
from aimtp.logs import dag_id_var
from aimtp.status import StatusConflict, StatusResult, apply_status
from app import examples
from app.auth import CONTROLLER_ONLY
from app.problems import Problem, ProblemError, problem_spec


@post(
    "/v1/dags/{dag_id:str}/status",
    status_code=204,
    opt={CONTROLLER_ONLY: True},
    tags=["controller"],
    summary="Report workload status (Controller only)",
    description=(
        "The Controller's status callback, authenticated with the Controller credential "
        "(tenant tokens are refused). Applies the workload's phase to the DAG (RUNNING, "
        "SUCCEEDED, FAILED) and stores the per-task phases. Repeated, late, out-of-order "
        "reports and reports of an earlier attempt are accepted and change nothing."
    ),
    responses={
        400: problem_spec(
            "The body is not a StatusReport, or names another DAG.",
            Problem(
                title="Bad Request",
                status=400,
                detail="the report is for DAG '0193a4f2-...', not '0193b001-...'",
            ),
        ),
        401: problem_spec(
            "No or invalid Controller credential.",
            Problem(title="Unauthorized", status=401, detail="invalid Controller credential"),
        ),
        404: problem_spec(
            "No such DAG.",
            Problem(title="Not Found", status=404, detail="DAG '0193a4f2-...' not found"),
        ),
        503: problem_spec(
            "The DAG kept changing concurrently; retry the report.",
            Problem(title="Service Unavailable", status=503, detail="DAG kept changing; retry"),
        ),
    },
)
async def report_status(
    state: State,
    dag_id: FromPath[str],
    data: Annotated[
        StatusReport,
        Body(
            examples=[
                Example(
                    summary="prepare done, train running",
                    value=msgspec.to_builtins(examples.STATUS_REPORT),
                )
            ]
        ),
    ],
) -> None:
    dag_id_var.set(dag_id)
    if data.dag_id != dag_id:
        raise ProblemError(
            400,
            "dag-id-mismatch",
            f"the report is for DAG {data.dag_id!r}, not {dag_id!r}",
        )
    try:
        result = await apply_status(state.engine, dag_id, data)
    except StatusConflict as exc:
        raise ProblemError(503, "busy", str(exc), headers={"Retry-After": "1"}) from None
    metrics.STATUS_CALLBACKS.labels(result.value).inc()
    if result is StatusResult.UNKNOWN_DAG:
        raise ProblemError(404, "not-found", f"DAG {dag_id!r} not found")
