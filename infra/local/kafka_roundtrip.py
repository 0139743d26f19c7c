"""Readiness probe for the local broker: produce one record to a fresh topic and
read it back. Exits 0 only when the round trip completed."""

import asyncio
import sys
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer


async def round_trip(bootstrap: str) -> None:
    topic = f"aimtp.readiness.{uuid.uuid4().hex}"
    token = uuid.uuid4().bytes
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, token)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), timeout=20)
    finally:
        await consumer.stop()
    if record.value != token:
        raise SystemExit("round trip returned a different record")


if __name__ == "__main__":
    asyncio.run(asyncio.wait_for(round_trip(sys.argv[1]), timeout=30))
