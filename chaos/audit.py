"""What a chaos scenario is judged by, computed from the evidence of three witnesses.

- the client (``chaos.load``): which DAGs it was told were accepted;
- the reference Controller: how many times it CREATED each DAG's workload;
- an independent consumer of the topic (``TopicRecorder``, not the trigger): every record,
  in partition order, compared with the outbox rows the database committed.

The judgements are pure functions of that evidence so that they are unit-tested apart
from any fault.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition

from aimtp.states import TERMINAL_STATES, DagState


@dataclass(frozen=True)
class DagOutcome:
    """A DAG as the database has it at the end of a scenario."""

    state: DagState
    error: str | None


@dataclass
class Verdict:
    accepted: int = 0
    terminal: int = 0
    states: dict[str, int] = field(default_factory=dict)
    lost: list[str] = field(default_factory=list)
    """Accepted, never created at the Controller, and not FAILED with a reason."""
    duplicates: list[str] = field(default_factory=list)
    """Created at the Controller more than once."""
    order_violations: list[str] = field(default_factory=list)
    """DAGs whose events reached the topic out of their commit order."""
    missing_events: int = 0
    """Committed outbox events that never reached the topic."""
    redelivered_events: int = 0
    """Records published more than once (at-least-once, deduped by ``ce_id``): allowed."""

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicates or self.order_violations or self.missing_events)


def judge_delivery(
    accepted: Iterable[str],
    creations: Mapping[str, int],
    outcomes: Mapping[str, DagOutcome],
) -> Verdict:
    """Lost and duplicated DAGs among those the client was told were accepted."""
    verdict = Verdict()
    states: dict[str, int] = defaultdict(int)
    for dag_id in dict.fromkeys(accepted):
        verdict.accepted += 1
        outcome = outcomes.get(dag_id)
        states[outcome.state.value if outcome else "ABSENT"] += 1
        if outcome is not None and outcome.state in TERMINAL_STATES:
            verdict.terminal += 1
        created = creations.get(dag_id, 0)
        if created > 1:
            verdict.duplicates.append(dag_id)
        failed_with_reason = (
            outcome is not None and outcome.state is DagState.FAILED and bool(outcome.error)
        )
        if created == 0 and not failed_with_reason:
            verdict.lost.append(dag_id)
    verdict.states = dict(sorted(states.items()))
    return verdict


def judge_order(
    verdict: Verdict,
    committed: Mapping[str, Sequence[str]],
    published: Mapping[str, Sequence[str]],
) -> Verdict:
    """Compare, per DAG, the event ids on the topic with those committed to the outbox.

    ``committed`` is each DAG's outbox event ids in outbox id order, which is their commit
    order (a DAG's writes are serialised by its version); ``published`` is each key's
    ``ce_id`` values in partition order. Redeliveries are allowed and skipped (first
    occurrence counts); a committed event that never arrived is missing; the rest must
    arrive in commit order.
    """
    for dag_id, events in committed.items():
        seen: list[str] = []
        first: set[str] = set()
        for event_id in published.get(dag_id, ()):
            if event_id in first:
                verdict.redelivered_events += 1
                continue
            first.add(event_id)
            seen.append(event_id)
        verdict.missing_events += sum(1 for e in events if e not in first)
        arrived = [e for e in events if e in first]
        if [e for e in seen if e in set(events)] != arrived:
            verdict.order_violations.append(dag_id)
    return verdict


class TopicRecorder:
    """Reads every partition of a topic from the beginning, outside any consumer group."""

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        self._bootstrap = bootstrap
        self._partitions = [TopicPartition(topic, p) for p in range(partitions)]
        self.events: dict[str, list[str]] = defaultdict(list)
        """Record key (DAG id) -> ``ce_id`` of each record, in partition order."""
        self.records = 0
        self.without_id = 0
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            enable_auto_commit=False,
            group_id=None,
            # The broker is stopped on purpose in one scenario: keep retrying, quietly.
            request_timeout_ms=15_000,
            retry_backoff_ms=500,
        )
        await self._consumer.start()
        self._consumer.assign(self._partitions)
        await self._consumer.seek_to_beginning(*self._partitions)
        self._task = asyncio.create_task(self._consume(), name="topic-recorder")

    async def _consume(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(timeout_ms=500, max_records=5000)
            for records in batches.values():
                for record in records:
                    self.records += 1
                    ce_id = dict(record.headers).get("ce_id")
                    if record.key is None or ce_id is None:
                        self.without_id += 1
                        continue
                    self.events[record.key.decode()].append(ce_id.decode())

    async def caught_up(self) -> bool:
        """True once every record the broker holds now has been read."""
        assert self._consumer is not None
        if self._task is not None and self._task.done():
            self._task.result()  # a dead recorder must not pass for an idle topic
        try:
            ends = await self._consumer.end_offsets(self._partitions)
        except Exception:
            return False
        for partition, end in ends.items():
            if await self._consumer.position(partition) < end:
                return False
        return True

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()
