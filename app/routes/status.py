"""``POST /v1/dags/{id}/status``: the Controller reports how a DAG's workload is doing."""

from __future__ import annotations

from litestar import post
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, JSONBody

from aimtp import metrics
from aimtp.controller import StatusReport
from aimtp.logs import dag_id_var
from aimtp.status import StatusConflict, StatusResult, apply_status
from app.auth import CONTROLLER_ONLY
from app.problems import PROBLEM_JSON, Problem, ProblemError


def _problem(description: str) -> ResponseSpec:
    return ResponseSpec(
        data_container=Problem,
        description=description,
        media_type=PROBLEM_JSON,
        generate_examples=False,
    )


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
        400: _problem("The body is not a StatusReport, or names another DAG."),
        401: _problem("No or invalid Controller credential."),
        404: _problem("No such DAG."),
        503: _problem("The DAG kept changing concurrently; retry the report."),
    },
)
async def report_status(state: State, dag_id: FromPath[str], data: JSONBody[StatusReport]) -> None:
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
