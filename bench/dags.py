"""The DAG the benchmarks submit, and rows byte-for-byte like the ones the API writes.

The raw baselines and the bulk loads must write rows of the same size and shape as the
product, or the ratios compare different work. So the rows are built with the shared
package's own encoders (canonical spec JSON, ``DagEvent``), never approximated.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import msgspec

from aimtp.events import (
    SCHEMA_VERSION,
    Actor,
    DagEvent,
    EventType,
    cloudevent_headers,
    encode_event,
)
from aimtp.ids import new_id
from aimtp.settings import DeadlineSettings
from aimtp.spec import DagSpec, decode_dag_spec
from aimtp.states import DagState
from aimtp.tracing import new_traceparent

# A realistic fine-tuning pipeline: five tasks, a fan-in, GPUs, env, labels and annotations.
# Task durations are annotations the reference Controller reads (seconds, before its
# --time-scale), so a DAG stays RUNNING for the whole scenario instead of flooding the API
# with completion callbacks that a real multi-hour training run would not send.
DAG_SPEC: Final[dict[str, Any]] = {
    "name": "llm-finetune",
    "labels": {"team": "nlp", "app.kubernetes.io/part-of": "llm-platform"},
    "annotations": {"aimtp.io/owner": "nlp-platform@example.com"},
    "timeout_seconds": 3600,
    "retries": 2,
    "tasks": [
        {
            "name": "prepare-data",
            "image": "registry.example.com/nlp/data-prep:1.7.0",
            "command": ["python", "-m", "dataprep"],
            "args": ["--source", "s3://datasets/support-chats/v3", "--output", "/data/raw"],
            "env": {"NUM_WORKERS": "16"},
            "resources": {"cpu": "8", "memory": "32Gi"},
            "labels": {"stage": "data"},
            "annotations": {"sim.aimtp.io/duration-seconds": "2"},
        },
        {
            "name": "tokenize",
            "image": "registry.example.com/nlp/tokenizer:0.4.2",
            "args": ["--input", "/data/raw", "--output", "/data/tokenized"],
            "env": {"TOKENIZER": "llama-3"},
            "depends_on": ["prepare-data"],
            "resources": {"cpu": "16", "memory": "64Gi"},
            "labels": {"stage": "data"},
            "annotations": {"sim.aimtp.io/duration-seconds": "2"},
        },
        {
            "name": "train",
            "image": "registry.example.com/nlp/trainer:2.4.1",
            "command": ["torchrun", "--nproc_per_node=8"],
            "args": ["train.py", "--data", "/data/tokenized", "--epochs", "3", "--lr", "2e-5"],
            "env": {"NCCL_DEBUG": "WARN", "WANDB_PROJECT": "llm-finetune"},
            "depends_on": ["tokenize"],
            "resources": {"cpu": "32", "memory": "256Gi", "gpu": 8},
            "labels": {"stage": "train"},
            "annotations": {"sim.aimtp.io/duration-seconds": "5"},
        },
        {
            "name": "evaluate",
            "image": "registry.example.com/nlp/evaluator:1.2.0",
            "command": ["python", "-m", "evaluate"],
            "args": ["--checkpoint", "/models/latest", "--suite", "support-v2"],
            "depends_on": ["train"],
            "resources": {"cpu": "4", "memory": "64Gi", "gpu": 1},
            "labels": {"stage": "eval"},
            "annotations": {"sim.aimtp.io/duration-seconds": "2"},
        },
        {
            "name": "register-model",
            "image": "registry.example.com/mlops/model-registry-cli:0.9.3",
            "args": ["register", "--name", "support-llm", "--path", "/models/latest"],
            "depends_on": ["evaluate", "tokenize"],
            "resources": {"cpu": "500m", "memory": "512Mi"},
            "labels": {"stage": "release"},
            "annotations": {"sim.aimtp.io/duration-seconds": "1"},
        },
    ],
}

BODY: Final = msgspec.json.encode(DAG_SPEC)
"""The request body every submission scenario sends."""

_canonical: Final = msgspec.json.Encoder(order="sorted")


def stored_spec_json(spec: DagSpec) -> bytes:
    """The spec as the API stores it (``app.service``: canonical, sorted keys)."""
    return _canonical.encode(spec)


def uuid7_at(moment: datetime) -> str:
    """A UUIDv7 for a given time, so bulk-loaded ids sort like the product's (time first)."""
    millis = int(moment.replace(tzinfo=UTC).timestamp() * 1000)
    value = (millis & ((1 << 48) - 1)) << 80 | int.from_bytes(os.urandom(10), "big")
    value = (value & ~(0xF << 76)) | (0x7 << 76)
    value = (value & ~(0x3 << 62)) | (0x2 << 62)
    return str(uuid.UUID(int=value))


@dataclass(frozen=True)
class Submission:
    """What ``POST /v1/dags`` writes for one DAG: the dags row and the outbox row."""

    dag: dict[str, Any]
    outbox: dict[str, Any]


def naive_utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class RowFactory:
    """Builds the rows the API would write for ``DAG_SPEC``, with fresh ids each time."""

    def __init__(self, tenant: str, deadlines: DeadlineSettings | None = None) -> None:
        self.tenant = tenant
        self.spec = decode_dag_spec(BODY)
        self.spec_json = stored_spec_json(self.spec).decode()
        self.labels_json = msgspec.json.encode(self.spec.labels).decode()
        self._pending_deadline = timedelta(
            seconds=(deadlines or DeadlineSettings()).pending_deadline_seconds
        )

    def submission(self, now: datetime | None = None) -> Submission:
        now = now or naive_utc_now()
        dag_id = new_id()
        dag = {
            "id": dag_id,
            "tenant": self.tenant,
            "name": self.spec.name,
            "spec": self.spec_json,
            "labels": self.labels_json,
            "state": DagState.PENDING.value,
            "version": 1,
            "attempt": 1,
            "deadline_at": now + self._pending_deadline,
            "timeout_at": None,
            "reemits": 0,
            "idempotency_key": None,
            "request_hash": None,
            "controller_ref": None,
            "error": None,
            "task_phases": None,
            "status_at": None,
            "created_at": now,
            "updated_at": now,
        }
        return Submission(dag=dag, outbox=self.outbox_row(dag_id, now))

    def outbox_row(self, dag_id: str, now: datetime) -> dict[str, Any]:
        event = DagEvent(
            schema_version=SCHEMA_VERSION,
            event_id=new_id(),
            type=EventType.SUBMITTED,
            dag_id=dag_id,
            tenant=self.tenant,
            dag_name=self.spec.name,
            state=DagState.PENDING,
            previous_state=None,
            attempt=1,
            occurred_at=now.replace(tzinfo=UTC),
            actor=Actor.SERVER,
            reason=None,
            labels=self.spec.labels,
        )
        return {
            "event_id": event.event_id,
            "dag_id": dag_id,
            "event_type": event.type.value,
            "source": Actor.SERVER.value,
            "payload": encode_event(event),
            "traceparent": new_traceparent(),
            "created_at": now,
        }


DAG_COLUMNS: Final = (
    "id",
    "tenant",
    "name",
    "spec",
    "labels",
    "state",
    "version",
    "attempt",
    "deadline_at",
    "timeout_at",
    "reemits",
    "idempotency_key",
    "request_hash",
    "controller_ref",
    "error",
    "task_phases",
    "status_at",
    "created_at",
    "updated_at",
)
OUTBOX_COLUMNS: Final = (
    "event_id",
    "dag_id",
    "event_type",
    "source",
    "payload",
    "traceparent",
    "created_at",
)


def insert_sql(table: str, columns: tuple[str, ...], rows: int = 1) -> str:
    """``INSERT`` with ``rows`` groups of ``%s`` placeholders (asyncmy's paramstyle)."""
    group = "(" + ", ".join(["%s"] * len(columns)) + ")"
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES " + ", ".join([group] * rows)


def record_headers(outbox: dict[str, Any]) -> list[tuple[str, bytes]]:
    """The Kafka headers the relay sends for an outbox row (CloudEvents + traceparent)."""
    return cloudevent_headers(
        event_id=outbox["event_id"],
        event_type=outbox["event_type"],
        source=outbox["source"],
        time=outbox["created_at"],
        traceparent=outbox["traceparent"],
    )
