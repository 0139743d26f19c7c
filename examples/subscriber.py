"""Follow AIMTP's DAG lifecycle events from Kafka: a runnable FastStream subscriber.

    python examples/subscriber.py

It reads ``aimtp.dag.events`` in its own consumer group (``SUBSCRIBER_GROUP``, default
``example-subscriber``), decodes each value with AIMTP's own ``DagEvent`` Struct, skips
redeliveries by their ``ce_id`` header and prints one line per state change. The broker
and topic come from ``AIMTP_KAFKA_BOOTSTRAP`` and ``AIMTP_KAFKA_TOPIC`` as for AIMTP.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import OrderedDict

from faststream import FastStream
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.middlewares import AckPolicy

from aimtp.events import DagEvent, UnsupportedSchemaVersion, decode_event
from aimtp.settings import KafkaSettings
from aimtp.states import DagState

log = logging.getLogger("subscriber")


class DagFollower:
    """Keeps the latest state of every DAG, counting each event once.

    Kafka delivers at least once, and AIMTP may publish an event again after a crash;
    the ``ce_id`` header (the event id) tells repeats apart. This example remembers
    the last ``window`` ids in memory. A subscriber with side effects should store the
    id in the same transaction as its effect instead, so a restart forgets nothing.
    """

    def __init__(self, window: int = 100_000) -> None:
        self.window = window
        self.seen: OrderedDict[str, None] = OrderedDict()
        self.states: dict[str, DagState] = {}

    def accept(self, ce_id: str | None, value: bytes) -> DagEvent | None:
        """The event in ``value``, or None for a repeat or an event this code cannot read."""
        if ce_id is not None and ce_id in self.seen:
            return None
        try:
            event = decode_event(value)
        except UnsupportedSchemaVersion:
            # A newer AIMTP: upgrade this subscriber rather than guess at the fields.
            log.warning("skipping an event of an unknown schema version", extra={"ce_id": ce_id})
            return None
        self.seen[ce_id or event.event_id] = None
        if len(self.seen) > self.window:
            self.seen.popitem(last=False)
        self.states[event.dag_id] = event.state
        return event


kafka = KafkaSettings.from_env()
broker = KafkaBroker(kafka.kafka_bootstrap, client_id="example-subscriber")
app = FastStream(broker)
follower = DagFollower()


@broker.subscriber(
    kafka.kafka_topic,
    # Your own group: AIMTP's consumers use theirs, and every group gets every event.
    group_id=os.environ.get("SUBSCRIBER_GROUP", "example-subscriber"),
    auto_offset_reset="earliest",
    # Commit after the handler returned: a crash redelivers, the ce_id check dedupes.
    ack_policy=AckPolicy.ACK,
)
async def on_event(message: KafkaMessage) -> None:
    event = follower.accept(message.headers.get("ce_id"), message.body)
    if event is None:
        return
    print(
        f"{event.occurred_at:%H:%M:%S} {event.type.value:<22} {event.dag_id} "
        f"{event.previous_state or '-'} -> {event.state} (attempt {event.attempt})"
        + (f": {event.reason}" if event.reason else "")
    )


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(app.run())
