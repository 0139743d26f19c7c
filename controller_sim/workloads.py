"""In-memory workload store of the reference Controller and the simulated DAG execution."""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from graphlib import CycleError, TopologicalSorter
from typing import Any, Final

import msgspec

from aimtp.controller import Phase, StatusReport, TaskStatus, Workload, WorkloadRequest
from controller_sim.callbacks import CallbackSender
from controller_sim.faults import Faults

log = logging.getLogger(__name__)

DURATION_ANNOTATION: Final = "sim.aimtp.io/duration-seconds"
SIMULATED_FAILURE: Final = "simulated failure"

_report_encoder: Final = msgspec.json.Encoder()


class SpecError(ValueError):
    """The DAG spec cannot be simulated (bad shape, unknown dependency, cycle...)."""


@dataclass(slots=True, frozen=True)
class Plan:
    """What the simulation needs from a DAG spec; the spec itself is not kept."""

    graph: dict[str, tuple[str, ...]]
    durations: dict[str, float]
    images: tuple[tuple[str, str], ...]


def plan_from_spec(spec: Mapping[str, Any], default_seconds: float) -> Plan:
    """Validate the task graph of ``spec`` and read each task's simulated duration."""
    tasks = spec.get("tasks")
    if not isinstance(tasks, list):
        raise SpecError("spec.tasks must be a list")
    graph: dict[str, tuple[str, ...]] = {}
    durations: dict[str, float] = {}
    images: list[tuple[str, str]] = []
    for index, task in enumerate(tasks):
        if not isinstance(task, dict):
            raise SpecError(f"spec.tasks[{index}] must be an object")
        name = task.get("name")
        if not isinstance(name, str) or not name:
            raise SpecError(f"spec.tasks[{index}].name must be a non-empty string")
        if name in graph:
            raise SpecError(f"duplicate task name {name!r}")
        deps = task.get("depends_on") or []
        if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
            raise SpecError(f"task {name!r}: depends_on must be a list of task names")
        graph[name] = tuple(deps)
        durations[name] = _duration(name, task.get("annotations"), default_seconds)
        image = task.get("image")
        if isinstance(image, str):
            images.append((name, image))
    for name, deps in graph.items():
        unknown = [d for d in deps if d not in graph]
        if unknown:
            raise SpecError(f"task {name!r} depends on unknown task(s) {unknown}")
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as exc:
        raise SpecError(f"dependency cycle: {exc.args[1]}") from exc
    return Plan(graph=graph, durations=durations, images=tuple(images))


def _duration(task: str, annotations: object, default_seconds: float) -> float:
    if not isinstance(annotations, dict) or DURATION_ANNOTATION not in annotations:
        return default_seconds
    raw = annotations[DURATION_ANNOTATION]
    try:
        seconds = float(raw)
    except (TypeError, ValueError):
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        raise SpecError(f"task {task!r}: {DURATION_ANNOTATION} must be seconds >= 0, got {raw!r}")
    return seconds


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True, eq=False)
class SimWorkload:
    """A workload's public state plus what is needed to run it and report on it."""

    state: Workload
    callback_url: str
    traceparent: str | None
    runner: asyncio.Task[None] | None = None
    report_scheduled: bool = False


class WorkloadStore:
    """Workloads by dag id, the creation/request counters, and their simulations."""

    def __init__(
        self,
        faults: Faults,
        callbacks: CallbackSender,
        *,
        default_task_seconds: float = 1.0,
        time_scale: float = 1.0,
    ) -> None:
        self._faults = faults
        self._callbacks = callbacks
        self.default_task_seconds = default_task_seconds
        self._time_scale = time_scale
        self._workloads: dict[str, SimWorkload] = {}
        self.creations: dict[str, int] = {}
        self.requests: dict[str, int] = {}
        self.first_put: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self._workloads)

    def __iter__(self) -> Iterator[SimWorkload]:
        return iter(list(self._workloads.values()))

    def get(self, dag_id: str) -> SimWorkload | None:
        return self._workloads.get(dag_id)

    def note_put(self, dag_id: str) -> None:
        """Count a PUT as it arrives (before any fault decides its fate)."""
        self.requests[dag_id] = self.requests.get(dag_id, 0) + 1
        if dag_id not in self.first_put:
            self.first_put[dag_id] = time.time()

    def existing_for(self, req: WorkloadRequest) -> SimWorkload | None:
        """The workload that answers ``req`` as-is, or None when ``req`` must create one."""
        current = self._workloads.get(req.dag_id)
        if current is None:
            return None
        # Only a retry of a failed workload replaces it; anything else is idempotent.
        if req.attempt > current.state.attempt and current.state.phase == "Failed":
            return None
        return current

    def create(self, req: WorkloadRequest, plan: Plan) -> SimWorkload:
        """Create the workload for ``req`` (replacing a failed one) and start simulating it."""
        self._drop(req.dag_id)
        now = _now()
        state = Workload(
            dag_id=req.dag_id,
            attempt=req.attempt,
            reference=f"wl-{uuid.uuid4()}",
            phase="Pending",
            tasks={name: TaskStatus() for name in plan.graph},
            created_at=now,
            updated_at=now,
        )
        wl = SimWorkload(state=state, callback_url=req.callback_url, traceparent=req.traceparent)
        self._workloads[req.dag_id] = wl
        self.creations[req.dag_id] = self.creations.get(req.dag_id, 0) + 1
        wl.runner = asyncio.create_task(self._simulate(wl, plan), name=f"sim-{req.dag_id}")
        log.info(
            "workload created",
            extra={"dag_id": req.dag_id, "attempt": req.attempt, "reference": state.reference},
        )
        return wl

    def delete(self, dag_id: str) -> SimWorkload | None:
        """Stop and remove the workload; None when there was none."""
        wl = self._drop(dag_id)
        if wl is not None:
            log.info("workload deleted", extra={"dag_id": dag_id})
        return wl

    def forget(self, dag_id: str) -> bool:
        """Lose the workload silently, as a crashing Controller would; creations stay."""
        wl = self._drop(dag_id)
        if wl is not None:
            log.info("workload forgotten", extra={"dag_id": dag_id})
        return wl is not None

    async def close(self) -> None:
        """Stop every simulation."""
        runners = [wl.runner for wl in self._workloads.values() if wl.runner is not None]
        for runner in runners:
            runner.cancel()
        await asyncio.gather(*runners, return_exceptions=True)

    def _drop(self, dag_id: str) -> SimWorkload | None:
        wl = self._workloads.pop(dag_id, None)
        if wl is None:
            return None
        if wl.runner is not None:
            wl.runner.cancel()
            wl.runner = None
        self._callbacks.discard(dag_id)
        return wl

    async def _simulate(self, wl: SimWorkload, plan: Plan) -> None:
        """Run the tasks as their dependencies complete; stop scheduling at the first failure."""
        sorter = TopologicalSorter(plan.graph)
        sorter.prepare()
        wl.state.phase = "Running"
        self._changed(wl)
        running: dict[asyncio.Task[bool], str] = {}
        failed: str | None = None
        try:
            while True:
                for name in sorter.get_ready():
                    seconds = plan.durations[name] * self._time_scale
                    running[asyncio.create_task(self._run_task(wl, name, seconds))] = name
                if not running:
                    break
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    name = running.pop(task)
                    if task.result():
                        sorter.done(name)
                    elif failed is None:
                        failed = name
                if failed is not None:
                    break
        finally:
            # Reached on failure and on cancellation (delete): siblings must not outlive us.
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
        if failed is None:
            self._finish(wl, "Succeeded", "")
        else:
            for name in running.values():
                self._abort(wl.state.tasks[name], f"aborted: task {failed!r} failed")
            self._finish(wl, "Failed", f"task {failed!r} failed: {SIMULATED_FAILURE}")
        wl.runner = None

    async def _run_task(self, wl: SimWorkload, name: str, seconds: float) -> bool:
        status = wl.state.tasks[name]
        status.phase = "Running"
        status.started_at = _now()
        self._changed(wl)
        await asyncio.sleep(seconds)
        status.finished_at = _now()
        # Read at finish time so a fault set while the task runs still applies.
        ok = name != self._faults.fail_task
        if ok:
            status.phase = "Succeeded"
        else:
            status.phase = "Failed"
            status.message = SIMULATED_FAILURE
        self._changed(wl)
        return ok

    def _abort(self, status: TaskStatus, message: str) -> None:
        status.phase = "Failed"
        status.finished_at = _now()
        status.message = message

    def _finish(self, wl: SimWorkload, phase: Phase, message: str) -> None:
        wl.state.phase = phase
        wl.state.message = message
        self._changed(wl)
        log.info("workload finished", extra={"dag_id": wl.state.dag_id, "phase": phase})

    def _changed(self, wl: SimWorkload) -> None:
        """Record a phase change; changes made in the same loop tick share one report."""
        wl.state.updated_at = _now()
        if not wl.report_scheduled:
            wl.report_scheduled = True
            asyncio.get_running_loop().call_soon(self._report, wl)

    def _report(self, wl: SimWorkload) -> None:
        wl.report_scheduled = False
        if self._workloads.get(wl.state.dag_id) is not wl:
            return  # deleted or replaced meanwhile: nobody should hear about it any more
        state = wl.state
        report = StatusReport(
            dag_id=state.dag_id,
            attempt=state.attempt,
            reference=state.reference,
            phase=state.phase,
            tasks=state.tasks,
            message=state.message,
            observed_at=state.updated_at,
        )
        body = _report_encoder.encode(report)
        self._callbacks.send(state.dag_id, wl.callback_url, body, wl.traceparent)
