"""The dead-letter topic: records the trigger cannot read, kept with the reason why."""

from __future__ import annotations

import logging
from typing import Any

from faststream.kafka.publisher import DefaultPublisher

from aimtp import metrics
from consumers.envelope import KafkaRecord, Unreadable

log = logging.getLogger(__name__)

_MAX_REASON_CHARS = 1000


def dead_letter_headers(record: KafkaRecord, reason: Unreadable, consumer: str) -> dict[str, str]:
    """The original headers plus where the record came from and why it was rejected.

    FastStream publishes text headers: an original value that is not UTF-8 is kept with
    its bytes escaped, and of a name repeated only the first value is kept.
    """
    headers: dict[str, str] = {}
    for name, raw in record.headers:
        if name not in headers:
            headers[name] = "" if raw is None else raw.decode("utf-8", "backslashreplace")
    headers.update(
        {
            "aimtp_dlq_reason": f"{reason.kind}: {reason.detail}"[:_MAX_REASON_CHARS],
            "aimtp_dlq_topic": record.topic,
            "aimtp_dlq_partition": str(record.partition),
            "aimtp_dlq_offset": str(record.offset),
            "aimtp_dlq_consumer": consumer,
        }
    )
    return headers


class DeadLetters:
    """Publishes rejected records to the dead-letter topic and counts them."""

    def __init__(self, publisher: DefaultPublisher, consumer: str) -> None:
        self._publisher = publisher
        self._consumer = consumer

    async def send(self, record: KafkaRecord, reason: Unreadable) -> None:
        """Publish and wait for the broker's acknowledgement (then the offset may move on)."""
        extra: dict[str, Any] = {
            "topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
            "reason": reason.kind,
            "detail": reason.detail[:_MAX_REASON_CHARS],
        }
        await self._publisher.publish(
            record.value or b"",
            key=record.key,
            headers=dead_letter_headers(record, reason, self._consumer),
        )
        metrics.TRIGGER_DEAD_LETTERS.labels(reason.kind).inc()
        log.warning("unreadable record sent to the dead-letter topic", extra=extra)
