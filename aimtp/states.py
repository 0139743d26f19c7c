"""The DAG state machine: which transitions exist and which event each one emits."""

from __future__ import annotations

from enum import StrEnum


class DagState(StrEnum):
    PENDING = "PENDING"
    TRIGGERING = "TRIGGERING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLING = "CANCELLING"
    CANCELLED = "CANCELLED"
    TIMED_OUT = "TIMED_OUT"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset(
    {DagState.SUCCEEDED, DagState.FAILED, DagState.CANCELLED, DagState.TIMED_OUT}
)

_S = DagState
TRANSITIONS: dict[DagState, frozenset[DagState]] = {
    # PENDING -> PENDING is the watcher re-emitting a lost dag.submitted.
    _S.PENDING: frozenset({_S.PENDING, _S.TRIGGERING, _S.CANCELLING, _S.FAILED}),
    # TRIGGERING -> PENDING: a trigger died mid-call, the watcher starts a new attempt.
    _S.TRIGGERING: frozenset({_S.RUNNING, _S.FAILED, _S.CANCELLING, _S.PENDING}),
    # RUNNING -> PENDING: the Controller lost the workload, a new attempt is made.
    _S.RUNNING: frozenset({_S.SUCCEEDED, _S.FAILED, _S.CANCELLING, _S.TIMED_OUT, _S.PENDING}),
    _S.CANCELLING: frozenset({_S.CANCELLED}),
    # A user retry starts a terminal DAG over as a new attempt.
    _S.FAILED: frozenset({_S.PENDING}),
    _S.TIMED_OUT: frozenset({_S.PENDING}),
    _S.CANCELLED: frozenset({_S.PENDING}),
    _S.SUCCEEDED: frozenset(),
}


class IllegalTransition(ValueError):
    def __init__(self, source: DagState, target: DagState) -> None:
        super().__init__(f"no transition from {source} to {target}")
        self.source = source
        self.target = target


def check_transition(source: DagState, target: DagState) -> None:
    if target not in TRANSITIONS[source]:
        raise IllegalTransition(source, target)
