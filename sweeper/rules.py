"""The watcher's rules: what to do with a DAG that outlived the deadline of its state.

Every action is a conditional transition (``aimtp.lifecycle``) in its own transaction,
so a watcher racing a trigger or a status callback changes nothing twice: whoever
commits second finds the version moved and does nothing. Controller calls happen
outside any transaction.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam
from sqlalchemy.ext.asyncio import AsyncEngine

from aimtp import metrics
from aimtp.controller import ControllerClient, ControllerError
from aimtp.db import QUERIES
from aimtp.db.records import DagRecord, utcnow
from aimtp.events import Actor
from aimtp.lifecycle import transition
from aimtp.settings import DeadlineSettings, WatcherSettings
from aimtp.states import DagState
from aimtp.status import (
    PHASE_STATES,
    StatusConflict,
    StatusResult,
    apply_status,
    report_of,
    same_run,
)

log = logging.getLogger(__name__)

_STATES_BY_ID = QUERIES["dag_states_by_id"].bindparams(bindparam("ids", expanding=True))
_LIVE_WORKLOAD_PHASES = frozenset({"Pending", "Running"})
_POLLED_ACTIONS = {"Succeeded": "succeed", "Failed": "fail"}


@dataclass
class SweepReport:
    """What one sweep found and did."""

    overdue: Counter[str] = field(default_factory=Counter)
    actions: Counter[str] = field(default_factory=Counter)
    orphans: list[str] = field(default_factory=list)


class Rules:
    def __init__(
        self,
        engine: AsyncEngine,
        controller: ControllerClient,
        settings: WatcherSettings,
        deadlines: DeadlineSettings,
    ) -> None:
        self._engine = engine
        self._controller = controller
        self._settings = settings
        self._deadlines = deadlines
        self._limit = asyncio.Semaphore(settings.watcher_concurrency)

    async def sweep(self) -> SweepReport:
        report = SweepReport()
        await self._scan("RUNNING_TIMEOUT", self._timed_out_batch, self._time_out, report)
        await self._scan(DagState.PENDING, self._overdue(DagState.PENDING), self._reemit, report)
        await self._scan(
            DagState.TRIGGERING, self._overdue(DagState.TRIGGERING), self._retrigger, report
        )
        await self._scan(
            DagState.RUNNING, self._overdue(DagState.RUNNING), self._reconcile_running, report
        )
        await self._scan(
            DagState.CANCELLING, self._overdue(DagState.CANCELLING), self._finish_cancel, report
        )
        await self._find_orphans(report)
        await self._count_live_dags()
        return report

    # ------------------------------------------------------------ scanning

    async def _scan(
        self,
        label: str,
        fetch: Callable[[int], Awaitable[list[DagRecord]]],
        act: Callable[[DagRecord, SweepReport], Awaitable[None]],
        report: SweepReport,
    ) -> None:
        """Fetch overdue DAGs in bounded batches and act on each once per sweep.

        A DAG whose action could not be done (the Controller is down) is still overdue
        when the next batch is fetched, so each fetch reaches past the ones already
        handled: they must not hide the DAGs behind them until the next sweep.
        """
        size = self._settings.watcher_batch_size
        handled: set[str] = set()
        for _ in range(self._settings.watcher_max_batches):
            limit = size + len(handled)
            fetched = await fetch(limit)
            batch = [dag for dag in fetched if dag.id not in handled][:size]
            if not batch:
                break
            report.overdue[label] += len(batch)
            handled.update(dag.id for dag in batch)
            await asyncio.gather(*(self._guarded(act, dag, report) for dag in batch))
            if len(fetched) < limit:
                break
        metrics.WATCHER_OVERDUE.labels(label).set(report.overdue[label])

    async def _guarded(
        self,
        act: Callable[[DagRecord, SweepReport], Awaitable[None]],
        dag: DagRecord,
        report: SweepReport,
    ) -> None:
        async with self._limit:
            try:
                await act(dag, report)
            except ControllerError as exc:
                # The Controller is down or slow: leave the DAG for the next sweep.
                self._count(report, "skipped")
                log.warning(
                    "controller unavailable; retrying next sweep",
                    extra={"dag_id": dag.id, "error": str(exc)},
                )

    def _overdue(self, state: DagState) -> Callable[[int], Awaitable[list[DagRecord]]]:
        async def fetch(limit: int) -> list[DagRecord]:
            async with self._engine.connect() as conn:
                rows = await conn.execute(
                    QUERIES["overdue_dags"], {"state": state.value, "now": utcnow(), "limit": limit}
                )
                return [DagRecord.from_row(row) for row in rows]

        return fetch

    async def _timed_out_batch(self, limit: int) -> list[DagRecord]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(QUERIES["timed_out_dags"], {"now": utcnow(), "limit": limit})
            return [DagRecord.from_row(row) for row in rows]

    # ------------------------------------------------------------ rules

    async def _reemit(self, dag: DagRecord, report: SweepReport) -> None:
        """PENDING too long: the event was lost or no trigger runs. Re-emit, boundedly."""
        if dag.reemits >= self._settings.watcher_max_reemits:
            await self._move(
                dag,
                DagState.FAILED,
                report,
                "fail",
                f"not picked up by a trigger after {dag.reemits} re-emits of dag.submitted",
            )
            return
        await self._move(
            dag,
            DagState.PENDING,
            report,
            "reemit",
            f"dag.submitted re-emitted: still PENDING after "
            f"{self._deadlines.pending_deadline_seconds:g}s",
            reemits=dag.reemits + 1,
        )

    async def _retrigger(self, dag: DagRecord, report: SweepReport) -> None:
        """TRIGGERING too long: the trigger died mid-call. The Controller's idempotency by
        DAG id makes a new attempt safe."""
        await self._new_attempt(dag, report, "trigger did not finish within the deadline")

    async def _reconcile_running(self, dag: DagRecord, report: SweepReport) -> None:
        """RUNNING without a status callback for a while: ask the Controller, and apply
        its answer exactly as a callback carrying it would be applied."""
        workload = await self._controller.get_workload(dag.id)
        status = None if workload is None else report_of(workload)
        if status is None or not same_run(dag, status):
            await self._new_attempt(dag, report, "workload lost at the Controller")
            return
        try:
            result = await apply_status(
                self._engine, dag.id, status, actor=Actor.WATCHER, polled=True
            )
        except StatusConflict:
            self._count(report, "skipped")  # busy with callbacks: it is not stuck
            return
        if result in (StatusResult.APPLIED, StatusResult.CONFIRMED):
            action = _POLLED_ACTIONS.get(status.phase, "refresh")
            self._count(report, action)
            if action != "refresh":
                log.info(
                    "watcher %s: Controller reports %s",
                    action,
                    status.phase,
                    extra={"dag_id": dag.id, "state": PHASE_STATES[status.phase].value},
                )

    async def _time_out(self, dag: DagRecord, report: SweepReport) -> None:
        """RUNNING past the DAG's own timeout: delete the workload, then TIMED_OUT."""
        await self._controller.delete_workload(dag.id)
        await self._move(
            dag,
            DagState.TIMED_OUT,
            report,
            "timeout",
            "the DAG ran longer than its timeout_seconds; workload deleted",
        )

    async def _finish_cancel(self, dag: DagRecord, report: SweepReport) -> None:
        """CANCELLING too long: delete again; once the Controller confirms, CANCELLED."""
        await self._controller.delete_workload(dag.id)
        await self._move(
            dag, DagState.CANCELLED, report, "cancel", "workload deleted at the Controller"
        )

    # ------------------------------------------------------------ actions

    async def _new_attempt(self, dag: DagRecord, report: SweepReport, why: str) -> None:
        if dag.attempt >= self._settings.watcher_max_attempts:
            await self._move(
                dag,
                DagState.FAILED,
                report,
                "fail",
                f"trigger attempts exhausted ({dag.attempt}): {why}",
            )
            return
        await self._move(
            dag,
            DagState.PENDING,
            report,
            "retrigger",
            f"attempt {dag.attempt + 1}: {why}",
            attempt=dag.attempt + 1,
            reemits=0,
            controller_ref=None,
            timeout_at=None,
            task_phases=None,
            status_at=None,
        )

    async def _move(
        self,
        dag: DagRecord,
        target: DagState,
        report: SweepReport,
        action: str,
        reason: str,
        **changes: Any,
    ) -> None:
        async with self._engine.begin() as conn:
            moved = await transition(
                conn, dag, target, actor=Actor.WATCHER, reason=reason, **changes
            )
        if moved is None:
            return  # someone else changed the DAG first; their change stands
        self._count(report, action)
        log.info("watcher %s: %s", action, reason, extra={"dag_id": dag.id, "state": target.value})

    @staticmethod
    def _count(report: SweepReport, action: str) -> None:
        report.actions[action] += 1
        metrics.WATCHER_ACTIONS.labels(action).inc()

    # ------------------------------------------------------------ reconciliation

    async def _find_orphans(self, report: SweepReport) -> None:
        """Workloads running at the Controller for DAGs that are gone or finished here."""
        try:
            workloads = await self._controller.list_workloads()
        except ControllerError as exc:
            log.warning("cannot list workloads for orphan detection", extra={"error": str(exc)})
            return
        live = [w for w in workloads if w.phase in _LIVE_WORKLOAD_PHASES]
        states: dict[str, str] = {}
        for start in range(0, len(live), 500):
            ids = [w.dag_id for w in live[start : start + 500]]
            async with self._engine.connect() as conn:
                states.update(
                    {row[0]: row[1] for row in await conn.execute(_STATES_BY_ID, {"ids": ids})}
                )
        for workload in live:
            state = states.get(workload.dag_id)
            if state is not None and not DagState(state).terminal:
                continue
            report.orphans.append(workload.dag_id)
            log.warning(
                "orphan workload at the Controller",
                extra={"dag_id": workload.dag_id, "dag_state": state or "unknown"},
            )
            if self._settings.watcher_delete_orphans:
                try:
                    await self._controller.delete_workload(workload.dag_id)
                    self._count(report, "orphan_deleted")
                except ControllerError as exc:
                    log.warning(
                        "cannot delete orphan", extra={"dag_id": workload.dag_id, "error": str(exc)}
                    )
        metrics.WATCHER_ORPHANS.set(len(report.orphans))

    async def _count_live_dags(self) -> None:
        async with self._engine.connect() as conn:
            counts: dict[str, int] = {
                row[0]: row[1] for row in await conn.execute(QUERIES["count_live_dags"])
            }
        for state in (DagState.PENDING, DagState.TRIGGERING, DagState.RUNNING, DagState.CANCELLING):
            metrics.DAGS_BY_STATE.labels(state.value).set(counts.get(state.value, 0))
