"""aimtp-trigger on FastStream: consume, hand records to per-DAG lanes, commit finished offsets.

FastStream runs the Kafka consumer (group membership, fetching, rebalances), the
dead-letter publisher and the AsyncAPI declarations. Its subscriber hands records to
its handler one at a time and, with manual acknowledgement, commits "everything
consumed so far"; its concurrent modes either commit before handling or handle each
partition sequentially, which caps one process at a few partitions' worth of 200 ms
Controller calls. So the handler here only dispatches the record to the lane of its
DAG (``consumers.lanes``) and returns, and this module commits explicit offsets per
partition, up to the oldest record not yet finished, through the subscriber's consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Final, cast

from aiokafka import ConsumerRebalanceListener, ConsumerRecord
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition
from faststream.kafka import KafkaBroker, Topic
from faststream.kafka.subscriber.usecase import DefaultSubscriber
from faststream.message import StreamMessage
from faststream.middlewares import AckPolicy

from aimtp import metrics
from aimtp.asyncapi import dead_letter_publisher
from aimtp.backoff import Backoff
from aimtp.kafka import ensure_topics, start_with_retry
from aimtp.logs import dag_id_var, trace_id_var
from aimtp.settings import KafkaSettings, TriggerSettings
from aimtp.tracing import trace_id_of
from consumers.dlq import DeadLetters
from consumers.envelope import KafkaRecord, Unreadable, read_envelope
from consumers.handlers import HANDLED, Result, TriggerHandler
from consumers.lanes import Dispatcher
from consumers.retry import Interrupted, stopped_within

log = logging.getLogger(__name__)

# Part of the grace period kept for the final commit and leaving the group.
_SHUTDOWN_MARGIN_SECONDS: Final = 3.0


def build_broker(kafka: KafkaSettings) -> KafkaBroker:
    """The trigger's broker: the dead-letter producer waits for every in-sync replica."""
    return KafkaBroker(
        kafka.kafka_bootstrap,
        client_id="aimtp-trigger",
        acks="all",
        enable_idempotence=True,
        logger=logging.getLogger("aimtp.trigger.broker"),
        # FastStream logs every message it handles; at our rates that belongs in DEBUG.
        log_level=logging.DEBUG,
    )


class Trigger:
    """The trigger's consumer: FastStream subscriber -> lanes -> ``TriggerHandler``."""

    def __init__(
        self,
        handler: TriggerHandler,
        kafka: KafkaSettings,
        settings: TriggerSettings,
        stop: asyncio.Event,
        *,
        broker: KafkaBroker | None = None,
    ) -> None:
        self.broker = broker or build_broker(kafka)
        self._handler = handler
        self._kafka = kafka
        self._settings = settings
        self._stop = stop
        self._dead_letters = DeadLetters(
            dead_letter_publisher(self.broker, kafka), settings.trigger_group
        )
        self.dispatcher: Dispatcher[KafkaRecord] = Dispatcher(
            self.process, settings.trigger_concurrency
        )
        metrics.TRIGGER_IN_FLIGHT.set_function(lambda: self.dispatcher.in_flight)
        self._commit_lock = asyncio.Lock()
        self.subscriber: DefaultSubscriber = self.broker.subscriber(
            # Created by ensure_topics with the configured partitions, not by FastStream.
            Topic(kafka.kafka_topic, declare=False),
            group_id=settings.trigger_group,
            ack_policy=AckPolicy.MANUAL,
            auto_offset_reset="earliest",
            listener=_Rebalance(self),
            parser=_lenient_parser,
            decoder=_raw_record,
            title="trigger",
            description="aimtp-trigger: acts on dag.submitted and dag.cancel_requested.",
            include_in_schema=False,
        )
        self.subscriber(self._on_message)

    # ------------------------------------------------------------ lifecycle

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop``; then drain: finish running records, commit, leave."""
        if not await start_with_retry(self._start, stop, what="Kafka consumer"):
            return
        committer = asyncio.create_task(self._commit_periodically(stop), name="trigger.commit")
        failed = asyncio.create_task(self.dispatcher.failed.wait(), name="trigger.failed")
        stopping = asyncio.create_task(stop.wait(), name="trigger.stopping")
        try:
            await asyncio.wait({failed, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (failed, stopping):
                task.cancel()
            await self._shutdown(committer)
        if self.dispatcher.failure is not None:
            raise RuntimeError("a record handler failed") from self.dispatcher.failure

    async def _start(self) -> None:
        await ensure_topics(self._kafka)
        try:
            await self.broker.start()
        except BaseException:
            with contextlib.suppress(Exception):
                await self.broker.stop()
            raise
        log.info("trigger consuming", extra={"topic": self._kafka.kafka_topic})

    async def _shutdown(self, committer: asyncio.Task[None]) -> None:
        # Handlers cut their retry waits short once this is set.
        self._stop.set()
        consumer = self.subscriber.consumer
        if consumer is not None:
            consumer.pause(*consumer.assignment())
        grace = max(1.0, self._settings.trigger_grace_seconds - _SHUTDOWN_MARGIN_SECONDS)
        if not await self.dispatcher.drain(timeout=grace):
            log.warning("records still running at the end of the grace period; redelivered later")
        committer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await committer
        await self.commit(self.dispatcher.positions())
        await self.broker.stop()
        log.info("trigger stopped")

    # ------------------------------------------------------------ records

    async def _on_message(self, record: Any) -> None:
        # The decoder hands over the record itself (see _raw_record); ``Any`` keeps
        # FastStream from validating it.
        partition = TopicPartition(record.topic, record.partition)
        # Keyless records are not AIMTP events; they keep their partition's order.
        key: Hashable = record.key if record.key is not None else ("no-key", record.partition)
        await self.dispatcher.submit(partition, record.offset, key, record)

    async def process(self, record: KafkaRecord) -> bool:
        """Handle one record until it is done; False leaves it for redelivery (stopping).

        Failures other than the Controller's (the database unreachable, say) are retried
        here without end: the record's DAG waits, the other lanes go on.
        """
        backoff = Backoff(base=0.2, cap=10.0)
        while True:
            try:
                await self.handle(record)
                return True
            except Interrupted:
                return False
            except Exception:
                metrics.TRIGGER_HANDLER_ERRORS.inc()
                log.exception(
                    "cannot handle a record; retrying",
                    extra={"partition": record.partition, "offset": record.offset},
                )
                if await stopped_within(self._stop, backoff.next_delay()):
                    return False

    async def handle(self, record: KafkaRecord) -> None:
        """Read the record and act on it, or send it to the dead-letter topic."""
        try:
            envelope = read_envelope(record.key, record.value, record.headers)
        except Unreadable as reason:
            await self._dead_letters.send(record, reason)
            return
        event = envelope.event
        dag_id_var.set(event.dag_id)
        trace_id_var.set(trace_id_of(envelope.traceparent))
        result = (
            await self._handler.handle(event, envelope.traceparent)
            if event.type in HANDLED
            else Result.IGNORED
        )
        metrics.TRIGGER_EVENTS.labels(event.type.value, result.value).inc()
        if result is not Result.IGNORED:
            log.debug("event handled", extra={"event_type": event.type.value, "result": result})

    # ------------------------------------------------------------ offsets

    async def commit(self, positions: dict[TopicPartition, int]) -> None:
        """Commit ``positions`` (offsets of the next records to read) for this group."""
        consumer = self.subscriber.consumer
        if not positions or consumer is None:
            return
        async with self._commit_lock:
            try:
                await consumer.commit(positions)
            except KafkaError as exc:
                # Nothing is lost: the offsets are committed next time, or the records
                # are redelivered to the partition's next owner, which skips them.
                log.warning("offset commit failed", extra={"error": repr(exc)})
                return
            self.dispatcher.committed(positions)

    async def _commit_periodically(self, stop: asyncio.Event) -> None:
        interval = self._settings.trigger_commit_interval_ms / 1000
        while not await stopped_within(stop, interval):
            await self.commit(self.dispatcher.positions())

    async def on_revoked(self, partitions: set[TopicPartition]) -> None:
        positions = await self.dispatcher.revoke(
            partitions, timeout=self._settings.trigger_grace_seconds
        )
        await self.commit(positions)

    def on_assigned(self, partitions: set[TopicPartition]) -> None:
        self.dispatcher.assign(partitions)

    async def report_lag(self, stop: asyncio.Event, interval: float = 5.0) -> None:
        """Consumer lag per owned partition: high watermark minus committed offset."""
        reported: set[int] = set()
        while not await stopped_within(stop, interval):
            consumer = self.subscriber.consumer
            if consumer is None:
                continue
            owned: set[int] = set()
            for partition in consumer.assignment():
                highwater = consumer.highwater(partition)
                if highwater is None:
                    continue  # nothing fetched yet from this partition
                try:
                    committed = await consumer.committed(partition)
                except KafkaError:
                    continue
                lag = max(0, highwater - (committed or 0))
                metrics.TRIGGER_CONSUMER_LAG.labels(str(partition.partition)).set(lag)
                owned.add(partition.partition)
            for gone in reported - owned:  # moved to another trigger: it reports them now
                metrics.TRIGGER_CONSUMER_LAG.remove(str(gone))
            reported = owned


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Commits what is finished before partitions move; tracks the new ones."""

    def __init__(self, trigger: Trigger) -> None:
        self._trigger = trigger

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._trigger.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._trigger.on_assigned(assigned)


async def _lenient_parser(
    record: ConsumerRecord, original: Callable[[ConsumerRecord], Awaitable[StreamMessage[Any]]]
) -> StreamMessage[Any]:
    """FastStream's parser, for records whose header values are not all text.

    FastStream decodes every header as UTF-8; such a record must still reach the
    handler (and then the dead-letter topic), so FastStream is shown escaped headers
    while the handler keeps the original record.
    """
    try:
        return await original(record)
    except (UnicodeDecodeError, AttributeError):
        readable = [
            (name, b"" if raw is None else raw.decode("utf-8", "backslashreplace").encode())
            for name, raw in record.headers
        ]
        message = await original(dataclasses.replace(record, headers=readable))
        message.raw_message = record
        return message


async def _raw_record(message: StreamMessage[Any]) -> KafkaRecord:
    """The whole aiokafka record, as the handler's one argument: events are decoded by
    ``consumers.envelope``, garbage included.

    The handler could ask FastStream for the message instead, but that argument is
    injected by a synchronous resolver that FastStream runs in a worker thread: a thread
    hop per record, which a profile of the trigger showed among its larger costs.
    """
    return cast("KafkaRecord", message.raw_message)
