"""aimtp-relay: publishes the transactional outbox to Kafka, in order per DAG."""

from outbox.main import run_relay
from outbox.relay import Relay

__all__ = ["Relay", "run_relay"]
