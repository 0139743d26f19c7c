"""Every Prometheus metric AIMTP exports, declared once. Labels never carry DAG ids."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# Publish delay spans sub-millisecond (idle relay) to minutes (broker outage).
_DELAY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

# ---------------------------------------------------------------- relay
OUTBOX_PENDING_ROWS = Gauge(
    "aimtp_outbox_pending_rows", "Outbox rows not yet published (parked rows excluded)."
)
OUTBOX_OLDEST_PENDING_AGE = Gauge(
    "aimtp_outbox_oldest_pending_age_seconds",
    "Age of the oldest unpublished outbox row: the publication lag.",
)
OUTBOX_PARKED_ROWS = Gauge(
    "aimtp_outbox_parked_rows", "Outbox rows parked after a permanent broker refusal."
)
OUTBOX_PUBLISH_DELAY = Histogram(
    "aimtp_outbox_publish_delay_seconds",
    "From outbox row created to broker acknowledgement.",
    buckets=_DELAY_BUCKETS,
)
OUTBOX_PUBLISHED = Counter("aimtp_outbox_published_total", "Outbox rows published to Kafka.")
OUTBOX_PARKED = Counter(
    "aimtp_outbox_parked_total", "Outbox rows parked because the broker refused them for good."
)
OUTBOX_PUBLISH_FAILURES = Counter(
    "aimtp_outbox_publish_failures_total", "Batches that failed transiently and were retried."
)
OUTBOX_PURGED = Counter("aimtp_outbox_purged_total", "Published rows removed after retention.")
RELAY_BATCH_SIZE = Histogram(
    "aimtp_relay_batch_size",
    "Rows per claimed batch.",
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500),
)
RELAY_ACTIVE = Gauge("aimtp_relay_active", "1 while this relay holds the leadership, else 0.")

# ---------------------------------------------------------------- trigger
# Controller calls take milliseconds when healthy and up to the client timeout when not.
_CALL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

TRIGGER_EVENTS = Counter(
    "aimtp_trigger_events_total",
    "Events the trigger finished, by event type and result (triggered, failed, deferred, "
    "cancelled, duplicate, stale, unknown_dag, ignored).",
    ["event_type", "result"],
)
TRIGGER_DEAD_LETTERS = Counter(
    "aimtp_trigger_dead_letters_total",
    "Records the trigger could not read, sent to the dead-letter topic, by reason.",
    ["reason"],
)
TRIGGER_IN_FLIGHT = Gauge(
    "aimtp_trigger_in_flight", "Records taken from Kafka whose handling has not finished."
)
TRIGGER_CONSUMER_LAG = Gauge(
    "aimtp_trigger_consumer_lag",
    "Records not yet committed by the trigger group, per partition this process owns.",
    ["partition"],
)
TRIGGER_HANDLER_ERRORS = Counter(
    "aimtp_trigger_handler_errors_total",
    "Unexpected failures while handling a record (database down, bugs); the record is retried.",
)
CONTROLLER_CALL_SECONDS = Histogram(
    "aimtp_controller_call_seconds",
    "Controller API calls by operation and HTTP status (or timeout / error).",
    ["operation", "status"],
    buckets=_CALL_BUCKETS,
)

# ---------------------------------------------------------------- status callbacks
STATUS_CALLBACKS = Counter(
    "aimtp_status_callbacks_total",
    "Controller status reports received, by result (applied, stale, unknown_dag).",
    ["result"],
)

# ---------------------------------------------------------------- watcher
WATCHER_SWEEPS = Counter("aimtp_watcher_sweeps_total", "Sweeps run, by result.", ["result"])
WATCHER_SWEEP_SECONDS = Histogram(
    "aimtp_watcher_sweep_duration_seconds",
    "Duration of one sweep.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
WATCHER_OVERDUE = Gauge(
    "aimtp_watcher_overdue_dags",
    "DAGs found past a deadline in the last sweep, by state (RUNNING_TIMEOUT for timeouts).",
    ["state"],
)
WATCHER_ACTIONS = Counter(
    "aimtp_watcher_actions_total",
    "Recoveries the watcher made, by kind (reemit, retrigger, fail, refresh, succeed, "
    "timeout, cancel, orphan_deleted, skipped).",
    ["action"],
)
WATCHER_ORPHANS = Gauge(
    "aimtp_watcher_orphan_workloads",
    "Workloads the Controller runs with no live DAG here, at the last sweep.",
)
WATCHER_ACTIVE = Gauge("aimtp_watcher_active", "1 while this watcher holds the leadership, else 0.")
DAGS_BY_STATE = Gauge(
    "aimtp_dags", "DAGs in each non-terminal state, refreshed every sweep.", ["state"]
)
for _action in (
    "reemit", "retrigger", "fail", "refresh", "succeed", "timeout", "cancel",
    "orphan_deleted", "skipped",
):  # fmt: skip
    WATCHER_ACTIONS.labels(_action)  # present at 0, so dashboards show a flat line

# ---------------------------------------------------------------- lifecycle
DAG_TRANSITIONS = Counter(
    "aimtp_dag_transitions_total",
    "DAG state transitions written, by from and to state (from_state 'none' on submit).",
    ["from_state", "to_state"],
)
