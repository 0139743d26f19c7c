"""Service records to ``aimtp.v1`` messages."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from aimtp.db.records import DagRecord
from aimtp.states import DagState
from aimtp.v1 import dags_pb2 as pb
from app.schemas import DagView
from app.service import Transition

_PREFIX = "DAG_STATE_"


def state_to_pb(state: DagState | None) -> pb.DagState.ValueType:
    return pb.DAG_STATE_UNSPECIFIED if state is None else pb.DagState.Value(_PREFIX + state.value)


_FROM_PB = {state_to_pb(state): state for state in DagState}


def state_from_pb(value: int) -> DagState:
    """Raises ``ValueError`` for UNSPECIFIED or a number this server does not know."""
    try:
        return _FROM_PB[pb.DagState.ValueType(value)]
    except KeyError:
        raise ValueError(f"unknown DAG state {value}") from None


def timestamp(moment: datetime) -> Timestamp:
    """Rows hold naive UTC; a naive time is taken as UTC."""
    stamp = Timestamp()
    stamp.FromDatetime(moment if moment.tzinfo else moment.replace(tzinfo=UTC))
    return stamp


def dag_to_pb(dag: DagRecord) -> pb.Dag:
    view = DagView.of(dag)  # decodes the task phases exactly as the HTTP API shows them
    message = pb.Dag(
        id=dag.id,
        name=dag.name,
        state=state_to_pb(dag.state),
        attempt=dag.attempt,
        labels=dag.labels,
        spec_json=bytes(dag.spec),
        error=dag.error,
        created_at=timestamp(dag.created_at),
        updated_at=timestamp(dag.updated_at),
        controller_ref=dag.controller_ref,
    )
    for name, task in view.tasks.items():
        status = message.tasks[name]
        status.phase = task.phase
        status.message = task.message
        if task.started_at is not None:
            status.started_at.CopyFrom(timestamp(task.started_at))
        if task.finished_at is not None:
            status.finished_at.CopyFrom(timestamp(task.finished_at))
    return message


def summary_to_pb(dag: DagRecord) -> pb.DagSummary:
    return pb.DagSummary(
        id=dag.id,
        name=dag.name,
        state=state_to_pb(dag.state),
        attempt=dag.attempt,
        labels=dag.labels,
        error=dag.error,
        created_at=timestamp(dag.created_at),
        updated_at=timestamp(dag.updated_at),
    )


def transition_to_pb(dag_id: str, transition: Transition) -> pb.DagTransition:
    return pb.DagTransition(
        id=transition.id,
        dag_id=dag_id,
        from_state=state_to_pb(transition.from_state),
        to_state=state_to_pb(transition.to_state),
        attempt=transition.attempt,
        actor=transition.actor,
        reason=transition.reason,
        at=timestamp(transition.at),
    )
