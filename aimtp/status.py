"""Workload status from the Controller, applied to a DAG.

The Controller reports by callback (aimtp-server's ``POST /v1/dags/{id}/status``); the
watcher asks it when callbacks stop (``report_of`` its answer). Both apply what they learn
through ``apply_status``, so a report means the same thing whichever way it arrived.
Reports may repeat, arrive late or out of order, or belong to an older attempt: those
change nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Final

import msgspec
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from aimtp.controller import Phase, StatusReport, Workload
from aimtp.db import QUERIES
from aimtp.db.records import DagRecord, utcnow
from aimtp.events import Actor
from aimtp.lifecycle import deadline_for, transition, update_in_place
from aimtp.settings import DeadlineSettings, load
from aimtp.spec import DagSpec
from aimtp.states import DagState

__all__ = [
    "PHASE_STATES",
    "StatusConflict",
    "StatusResult",
    "apply_status",
    "dag_timeout_at",
    "naive_utc",
    "report_of",
    "same_run",
    "status_path",
]

PHASE_STATES: Final[dict[Phase, DagState]] = {
    # A workload the Controller accepted but has not started is, for the user, running.
    "Pending": DagState.RUNNING,
    "Running": DagState.RUNNING,
    "Succeeded": DagState.SUCCEEDED,
    "Failed": DagState.FAILED,
}

_WORKLOAD_FAILED: Final = "the Controller reported the workload failed"
_tasks_encoder: Final = msgspec.json.Encoder()
_spec_decoder: Final = msgspec.json.Decoder(DagSpec)


class StatusResult(StrEnum):
    APPLIED = "applied"
    CONFIRMED = "confirmed"
    """Polled only: nothing new, but the workload is still running; the deadline moved."""
    STALE = "stale"
    UNKNOWN_DAG = "unknown_dag"


class StatusConflict(Exception):
    """Other writers kept changing the DAG while the report was being applied."""


class _Changed(Exception):
    """A conditional update lost to a concurrent writer; re-read and decide again."""


def naive_utc(moment: datetime) -> datetime:
    """``moment`` as the naive UTC value DATETIME columns hold (naive input is UTC)."""
    return moment if moment.tzinfo is None else moment.astimezone(UTC).replace(tzinfo=None)


def dag_timeout_at(dag: DagRecord, started: datetime) -> datetime:
    """When a DAG that starts running at ``started`` times out (its ``timeout_seconds``)."""
    return started + timedelta(seconds=_spec_decoder.decode(dag.spec).timeout_seconds)


def report_of(workload: Workload) -> StatusReport:
    """The Controller's answer to ``GET /v1/workloads/{id}`` as the report a callback sends."""
    return StatusReport(
        dag_id=workload.dag_id,
        attempt=workload.attempt,
        reference=workload.reference,
        phase=workload.phase,
        tasks=workload.tasks,
        message=workload.message,
        observed_at=workload.updated_at,
    )


def status_path(dag: DagRecord, report: StatusReport) -> tuple[DagState, ...] | None:
    """The states ``report`` moves ``dag`` through, in order.

    ``()`` means the state stays RUNNING and only the task phases change; None means the
    report is stale and changes nothing: another attempt's, phases older than those
    stored, or for a DAG that is not (or no longer) with the Controller.
    """
    if dag.state not in (DagState.TRIGGERING, DagState.RUNNING) or not same_run(dag, report):
        return None
    target = PHASE_STATES[report.phase]
    # TRIGGERING: the callback overtook the trigger's own record of the Controller's
    # answer. The DAG still passes through RUNNING, so subscribers see every step.
    path = (DagState.RUNNING,) if dag.state is DagState.TRIGGERING else ()
    if target is not DagState.RUNNING:
        # A finished workload never runs again, so its report is news whenever it comes.
        return (*path, target)
    if not path and dag.status_at is not None and naive_utc(report.observed_at) <= dag.status_at:
        return None
    return path


def same_run(dag: DagRecord, report: StatusReport) -> bool:
    """Whether ``report`` is about the workload this DAG's current attempt runs as.

    Usually that is the same attempt. A new attempt may also have been answered with
    the workload of an earlier one (PUT is idempotent by DAG id and a running workload
    is kept): then the reference recorded with RUNNING identifies it.
    """
    if report.attempt == dag.attempt:
        return True
    return dag.controller_ref is not None and report.reference == dag.controller_ref


async def apply_status(
    engine: AsyncEngine,
    dag_id: str,
    report: StatusReport,
    *,
    actor: Actor = Actor.CONTROLLER,
    polled: bool = False,
    attempts: int = 5,
) -> StatusResult:
    """Apply ``report`` to DAG ``dag_id`` in one transaction; raises ``StatusConflict``.

    ``actor`` is recorded with the transitions it causes. ``polled`` says the report was
    just read from the Controller rather than pushed by it: then, even with nothing new
    in it, it proves the workload still running, so the RUNNING status deadline moves
    out (``CONFIRMED``) instead of the DAG being polled again at once.
    """
    if not dag_id.isascii():
        return StatusResult.UNKNOWN_DAG  # ids are ASCII; MySQL refuses to compare others
    for _ in range(attempts):
        try:
            async with engine.begin() as conn:
                row = (await conn.execute(QUERIES["get_dag"], {"id": dag_id})).first()
                if row is None:
                    return StatusResult.UNKNOWN_DAG
                dag = DagRecord.from_row(row)
                path = status_path(dag, report)
                if path is None:
                    if polled and dag.state is DagState.RUNNING and same_run(dag, report):
                        await _confirm(conn, dag)
                        return StatusResult.CONFIRMED
                    return StatusResult.STALE
                await _apply(conn, dag, path, report, actor)
                return StatusResult.APPLIED
        except _Changed:
            continue
    raise StatusConflict(f"DAG {dag_id} kept changing while its status was applied")


def _running_deadline() -> datetime | None:
    return deadline_for(DagState.RUNNING, utcnow(), load(DeadlineSettings))


async def _confirm(conn: AsyncConnection, dag: DagRecord) -> None:
    if await update_in_place(conn, dag, deadline_at=_running_deadline()) is None:
        raise _Changed


async def _apply(
    conn: AsyncConnection,
    dag: DagRecord,
    path: tuple[DagState, ...],
    report: StatusReport,
    actor: Actor,
) -> None:
    observed: dict[str, Any] = {
        "task_phases": msgspec.Raw(_tasks_encoder.encode(report.tasks)),
        "status_at": naive_utc(report.observed_at),
    }
    current: DagRecord | None = dag
    if not path:
        # Fresh news from the Controller pushes the "status is stale" deadline out.
        current = await update_in_place(conn, dag, deadline_at=_running_deadline(), **observed)
    for target in path:
        assert current is not None
        changes = dict(observed)
        reason = None
        if target is DagState.RUNNING:
            changes["controller_ref"] = report.reference
            changes["timeout_at"] = dag_timeout_at(dag, utcnow())
        elif target is DagState.FAILED:
            reason = changes["error"] = report.message or _WORKLOAD_FAILED
        current = await transition(conn, current, target, actor=actor, reason=reason, **changes)
        if current is None:
            break
    if current is None:
        raise _Changed
