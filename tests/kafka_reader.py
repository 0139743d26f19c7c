"""Read back what reached a topic, as a subscriber would."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer

from aimtp.settings import KafkaSettings, load


@dataclass(frozen=True)
class Record:
    key: str
    value: bytes
    headers: dict[str, str]
    partition: int
    offset: int

    @classmethod
    def of(cls, message: Any) -> Record:
        return cls(
            key=message.key.decode() if message.key else "",
            value=message.value or b"",
            headers={k: v.decode() for k, v in message.headers},
            partition=message.partition,
            offset=message.offset,
        )


async def read_topic(topic: str, expected: int, timeout: float = 30.0) -> list[Record]:
    """Records of ``topic`` until ``expected`` arrived (or ``timeout``), then a short
    grace so that duplicates beyond the expected count show up too."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=load(KafkaSettings).kafka_bootstrap,
        group_id=f"test-reader-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list[Record] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            done = len(records) >= expected
            batch = await consumer.getmany(timeout_ms=500 if done else 200, max_records=5000)
            fresh = [Record.of(m) for messages in batch.values() for m in messages]
            records.extend(fresh)
            if done and not fresh:
                break
    finally:
        await consumer.stop()
    return records
