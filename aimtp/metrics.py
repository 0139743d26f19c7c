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
