"""The broker the suite runs against: a real Apache Kafka round trip on a topic of its own."""

from __future__ import annotations

from aiokafka import AIOKafkaProducer

from aimtp.settings import KafkaSettings, load
from tests.kafka_reader import read_topic
from tests.services import create_topic, unique_topic


async def test_records_produced_with_acks_all_are_consumed_in_order_per_key() -> None:
    topic = unique_topic("aimtp.test.smoke")
    await create_topic(topic, partitions=3)
    producer = AIOKafkaProducer(
        bootstrap_servers=load(KafkaSettings).kafka_bootstrap,
        acks="all",
        enable_idempotence=True,
    )
    await producer.start()
    try:
        for seq in range(20):
            await producer.send_and_wait(
                topic, str(seq).encode(), key=f"k{seq % 2}".encode(), headers=[("n", b"%d" % seq)]
            )
    finally:
        await producer.stop()

    records = await read_topic(topic, expected=20)

    assert len(records) == 20
    for key in ("k0", "k1"):
        mine = sorted((r for r in records if r.key == key), key=lambda r: r.offset)
        assert len({r.partition for r in mine}) == 1  # one key, one partition
        assert [int(r.value) for r in mine] == list(range(int(key[1]), 20, 2))
        assert [r.headers["n"] for r in mine] == [r.value.decode() for r in mine]
