"""Typed views of database rows."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
from sqlalchemy import Row

from aimtp.states import DagState


def utcnow() -> datetime:
    """Now in UTC, naive, as DATETIME(6) columns store it."""
    return datetime.now(UTC).replace(tzinfo=None)


class DagRecord(msgspec.Struct, kw_only=True):
    """One ``dags`` row. ``spec`` and ``task_phases`` stay raw JSON until someone needs them."""

    id: str
    tenant: str
    name: str
    spec: msgspec.Raw
    labels: dict[str, str]
    state: DagState
    version: int
    attempt: int
    deadline_at: datetime | None
    timeout_at: datetime | None
    reemits: int
    idempotency_key: str | None
    request_hash: str | None
    controller_ref: str | None
    error: str | None
    task_phases: msgspec.Raw | None
    status_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Row[Any]) -> DagRecord:
        m = row._mapping
        phases = m["task_phases"]
        return cls(
            id=m["id"],
            tenant=m["tenant"],
            name=m["name"],
            spec=msgspec.Raw(_as_bytes(m["spec"])),
            labels=msgspec.json.decode(_as_bytes(m["labels"]), type=dict[str, str]),
            state=DagState(m["state"]),
            version=m["version"],
            attempt=m["attempt"],
            deadline_at=m["deadline_at"],
            timeout_at=m["timeout_at"],
            reemits=m["reemits"],
            idempotency_key=m["idempotency_key"],
            request_hash=m["request_hash"],
            controller_ref=m["controller_ref"],
            error=m["error"],
            task_phases=None if phases is None else msgspec.Raw(_as_bytes(phases)),
            status_at=m["status_at"],
            created_at=m["created_at"],
            updated_at=m["updated_at"],
        )

    def to_params(self) -> dict[str, Any]:
        """Bind parameters for ``insert_dag`` / ``update_dag``."""
        return {
            "id": self.id,
            "tenant": self.tenant,
            "name": self.name,
            "spec": bytes(self.spec).decode(),
            "labels": msgspec.json.encode(self.labels).decode(),
            "state": self.state.value,
            "version": self.version,
            "attempt": self.attempt,
            "deadline_at": self.deadline_at,
            "timeout_at": self.timeout_at,
            "reemits": self.reemits,
            "idempotency_key": self.idempotency_key,
            "request_hash": self.request_hash,
            "controller_ref": self.controller_ref,
            "error": self.error,
            "task_phases": None if self.task_phases is None else bytes(self.task_phases).decode(),
            "status_at": self.status_at,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


def _as_bytes(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else value
