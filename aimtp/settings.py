"""Typed settings, one object per concern, read once from ``AIMTP_*`` variables.

Every field documents itself (``help``); ``aimtp config`` and the README table are
generated from the same declarations, so there is one place for each setting.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Mapping
from functools import cache
from typing import Any, TypeVar, get_type_hints

_T = TypeVar("_T")


def setting(default: Any, help: str) -> Any:
    """Declare a settings field with its default and its one-line description."""
    return dataclasses.field(default=default, metadata={"help": help})


def _parse(raw: str, kind: type, name: str) -> Any:
    if kind is bool:
        lowered = raw.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off", ""}:
            return False
        raise ValueError(f"{name}: expected a boolean, got {raw!r}")
    try:
        return kind(raw)
    except ValueError:
        raise ValueError(f"{name}: expected {kind.__name__}, got {raw!r}") from None


class EnvSettings:
    """Base for settings dataclasses: fields map to ``{PREFIX}{FIELD_NAME}`` variables."""

    env_prefix = "AIMTP_"

    @classmethod
    def from_env(cls: type[_T], environ: Mapping[str, str] | None = None) -> _T:
        env = os.environ if environ is None else environ
        hints = get_type_hints(cls)
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):  # type: ignore[arg-type]
            name = cls.env_prefix + field.name.upper()  # type: ignore[attr-defined]
            if name in env:
                values[field.name] = _parse(env[name], hints[field.name], name)
        return cls(**values)

    @classmethod
    def describe(cls) -> Iterator[tuple[str, Any, str]]:
        """Yield (variable, default, help) for documentation."""
        for field in dataclasses.fields(cls):  # type: ignore[arg-type]
            yield cls.env_prefix + field.name.upper(), field.default, field.metadata["help"]


@dataclasses.dataclass(frozen=True)
class DatabaseSettings(EnvSettings):
    database_url: str = setting(
        "mysql+asyncmy://aimtp:aimtp@127.0.0.1:3306/aimtp",
        "SQLAlchemy URL of the MySQL (or MariaDB) database, driver asyncmy.",
    )
    database_pool_size: int = setting(20, "Connections kept open per process.")
    database_max_overflow: int = setting(20, "Extra connections allowed under bursts.")
    database_pool_timeout: float = setting(5.0, "Seconds to wait for a free connection.")


@dataclasses.dataclass(frozen=True)
class KafkaSettings(EnvSettings):
    kafka_bootstrap: str = setting("127.0.0.1:9092", "Kafka bootstrap servers, comma-separated.")
    kafka_topic: str = setting("aimtp.dag.events", "Topic of DAG lifecycle events.")
    kafka_dlq_topic: str = setting(
        "aimtp.dag.events.dlq", "Dead-letter topic for events the trigger cannot decode."
    )
    kafka_partitions: int = setting(12, "Partitions created by `aimtp kafka init`.")
    kafka_replication_factor: int = setting(1, "Replication factor for `aimtp kafka init`.")


@dataclasses.dataclass(frozen=True)
class ServerSettings(EnvSettings):
    http_host: str = setting("127.0.0.1", "Address aimtp-server binds; loopback unless set.")
    http_port: int = setting(8000, "Port of the HTTP API.")
    grpc_port: int = setting(
        50051, "Port of the gRPC API, served by the same process on AIMTP_HTTP_HOST (0: off)."
    )
    api_tokens: str = setting(
        "",
        "Tenant credentials as comma-separated token:tenant pairs. Each token "
        "authenticates one tenant; tokens are hashed in memory and never logged.",
    )
    controller_callback_token: str = setting(
        "", "Bearer credential the Controller presents on status callbacks."
    )
    max_body_bytes: int = setting(1024 * 1024, "Largest request body accepted (413 above).")
    rate_limit_per_second: int = setting(
        200, "Requests per second one tenant may make to one server process (429 above; 0: off)."
    )
    max_concurrent_requests: int = setting(
        256,
        "Requests one server process serves at once; one more is answered 503 with "
        "Retry-After instead of queueing (0: no limit).",
    )
    request_timeout_seconds: float = setting(
        30.0, "A request still running after this long is abandoned with a 503."
    )
    idempotency_window_seconds: int = setting(
        86400, "How long an Idempotency-Key keeps answering with the DAG it created."
    )
    public_url: str = setting(
        "http://127.0.0.1:8000", "Base URL the Controller uses to reach this API."
    )


@dataclasses.dataclass(frozen=True)
class SpecSettings(EnvSettings):
    max_tasks: int = setting(500, "Most tasks one DAG may have.")
    max_timeout_seconds: int = setting(7 * 86400, "Largest timeout_seconds a DAG may ask for.")
    max_retries: int = setting(10, "Largest retries a DAG may ask for.")


@dataclasses.dataclass(frozen=True)
class DeadlineSettings(EnvSettings):
    """How long a DAG may stay in each non-terminal state before the watcher acts."""

    pending_deadline_seconds: float = setting(
        30.0, "PENDING longer than this: the watcher re-emits dag.submitted."
    )
    triggering_deadline_seconds: float = setting(
        60.0, "TRIGGERING longer than this: the trigger died mid-call; a new attempt starts."
    )
    running_status_seconds: float = setting(
        60.0, "RUNNING without a status callback for this long: the watcher asks the Controller."
    )
    cancelling_deadline_seconds: float = setting(
        30.0, "CANCELLING longer than this: the watcher deletes at the Controller again."
    )


@dataclasses.dataclass(frozen=True)
class RelaySettings(EnvSettings):
    relay_batch_size: int = setting(500, "Outbox rows claimed and published per batch.")
    relay_idle_poll_min_ms: float = setting(
        5.0, "Pause after a partial batch; doubles while the outbox stays empty."
    )
    relay_idle_poll_max_ms: float = setting(100.0, "Longest pause between polls when idle.")
    relay_leader_wait_seconds: float = setting(
        1.0, "A standby waits this long in GET_LOCK per try; bounds failover time."
    )
    relay_lock_name: str = setting("aimtp.relay", "MySQL lock name that elects the active relay.")
    relay_publish_timeout_seconds: float = setting(
        15.0, "How long a batch waits for broker acks before it is retried."
    )
    relay_retention_hours: float = setting(24.0, "Published rows are purged after this long.")
    relay_purge_interval_seconds: float = setting(60.0, "How often the purge runs.")
    relay_purge_batch: int = setting(1000, "Rows deleted per purge statement.")
    relay_metrics_port: int = setting(9101, "Port of the relay's /metrics, /healthz, /readyz.")
    relay_grace_seconds: float = setting(20.0, "SIGTERM drain limit before in-flight work is cut.")


@dataclasses.dataclass(frozen=True)
class ControllerSettings(EnvSettings):
    controller_url: str = setting("http://127.0.0.1:8001", "Base URL of the Controller API.")
    controller_token: str = setting("", "Bearer credential AIMTP presents to the Controller.")
    controller_timeout_seconds: float = setting(
        10.0, "Longest a Controller call may take; a slower one counts as unavailable."
    )
    controller_connect_timeout_seconds: float = setting(
        3.0, "Longest wait for a TCP connection to the Controller."
    )
    controller_max_connections: int = setting(
        100, "Connections to the Controller kept per process; further calls queue for one."
    )


@dataclasses.dataclass(frozen=True)
class TriggerSettings(EnvSettings):
    trigger_group: str = setting("aimtp-trigger", "Kafka consumer group of the triggers.")
    trigger_concurrency: int = setting(
        256, "Events one trigger works on at once (across DAGs; one DAG's events run in order)."
    )
    trigger_retry_attempts: int = setting(
        6, "Controller calls per event before a DAG is left to the watcher."
    )
    trigger_retry_base_seconds: float = setting(
        0.5, "First retry waits up to this long; doubles per retry (full jitter)."
    )
    trigger_retry_cap_seconds: float = setting(
        10.0, "Longest wait between two Controller calls (also caps Retry-After)."
    )
    trigger_retry_budget_seconds: float = setting(
        30.0, "Time one event may spend retrying the Controller; below the TRIGGERING deadline."
    )
    trigger_commit_interval_ms: float = setting(
        250.0, "How often finished offsets are committed to Kafka."
    )
    trigger_processed_retention_hours: float = setting(
        168.0, "Handled-event records are kept this long for duplicate detection."
    )
    trigger_metrics_port: int = setting(9102, "Port of the trigger's /metrics, /healthz, /readyz.")
    trigger_grace_seconds: float = setting(
        20.0, "SIGTERM drain limit: in-flight events finish and offsets are committed."
    )


@dataclasses.dataclass(frozen=True)
class WatcherSettings(EnvSettings):
    watcher_interval_seconds: float = setting(
        5.0, "Time between sweeps; a standby takes over within one interval."
    )
    watcher_batch_size: int = setting(200, "DAGs handled per rule and batch of a sweep.")
    watcher_max_batches: int = setting(
        10, "Batches per rule and sweep; the rest waits for the next sweep."
    )
    watcher_concurrency: int = setting(16, "DAGs acted on at once within a batch.")
    watcher_max_reemits: int = setting(
        3, "dag.submitted re-emits per attempt before a PENDING DAG is FAILED."
    )
    watcher_max_attempts: int = setting(
        3, "Trigger attempts (first one included) before a DAG is FAILED."
    )
    watcher_delete_orphans: bool = setting(
        False, "Delete workloads the Controller runs for DAGs that are gone or finished here."
    )
    watcher_lock_name: str = setting("aimtp.watcher", "MySQL lock name that elects the sweeper.")
    watcher_metrics_port: int = setting(9103, "Port of the watcher's /metrics, /healthz, /readyz.")
    watcher_grace_seconds: float = setting(
        20.0, "SIGTERM drain limit: the sweep in flight finishes first."
    )


@dataclasses.dataclass(frozen=True)
class OpsSettings(EnvSettings):
    ops_host: str = setting(
        "127.0.0.1", "Bind address of the background processes' metrics and probes."
    )


@dataclasses.dataclass(frozen=True)
class LogSettings(EnvSettings):
    log_level: str = setting("INFO", "Log level of every process (logs are JSON lines).")


def all_settings() -> Iterator[type[EnvSettings]]:
    """Every settings class, for documentation and `aimtp config`."""
    yield from (
        DatabaseSettings,
        KafkaSettings,
        ServerSettings,
        SpecSettings,
        DeadlineSettings,
        RelaySettings,
        ControllerSettings,
        TriggerSettings,
        WatcherSettings,
        OpsSettings,
        LogSettings,
    )


@cache
def load(kind: type[_T]) -> _T:
    """The process-wide settings of one concern, read from the environment once."""
    return kind.from_env()  # type: ignore[attr-defined, no-any-return]
