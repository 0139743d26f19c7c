"""Concurrency with per-DAG order, and the offsets that may safely be committed.

Kafka orders records per partition; AIMTP needs order only per DAG, which is the record
key. Every key gets a lane that handles its records one at a time, in arrival order,
while the lanes of different keys run concurrently, up to a limit. A slow Controller
call for one DAG therefore holds up that DAG alone.

Records finish out of order, so a partition's offset is committed only up to its
oldest unfinished record (``PartitionLog``). After a crash, Kafka redelivers from
there: finished records after it come again, and the handler recognises them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from aiokafka.structs import TopicPartition

log = logging.getLogger(__name__)

_T = TypeVar("_T")

Work = Callable[[_T], Awaitable[bool]]
"""Handles one payload; True when it is finished for good, False to have it redelivered."""


class PartitionLog:
    """The records taken from one partition in one assignment, and which have finished."""

    def __init__(self) -> None:
        self._taken: deque[int] = deque()
        self._finished: set[int] = set()
        self._position: int | None = None
        self._committed: int | None = None
        self._running = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.revoked = False
        """Set when the partition went to another consumer: records not started are dropped."""

    def take(self, offset: int) -> None:
        """Record that ``offset`` was handed out for handling (offsets arrive in order)."""
        self._taken.append(offset)

    def finish(self, offset: int) -> None:
        """Mark ``offset`` handled for good; the commit position moves past a finished prefix."""
        self._finished.add(offset)
        while self._taken and self._taken[0] in self._finished:
            done = self._taken.popleft()
            self._finished.discard(done)
            self._position = done + 1

    @property
    def position(self) -> int | None:
        """The offset to commit: the oldest unfinished record, or one past the last finished."""
        return self._position

    def commit_position(self) -> int | None:
        """``position`` when it moved since the last ``committed`` call, else None."""
        if self._position is None or self._position == self._committed:
            return None
        return self._position

    def committed(self, position: int) -> None:
        self._committed = position

    def started(self) -> None:
        self._running += 1
        self._idle.clear()

    def ended(self) -> None:
        self._running -= 1
        if self._running == 0:
            self._idle.set()

    async def wait_idle(self) -> None:
        """Until no record of this partition is being handled."""
        await self._idle.wait()


@dataclass(slots=True, eq=False)
class _Item(Generic[_T]):
    log: PartitionLog
    offset: int
    payload: _T


class Dispatcher(Generic[_T]):
    """Runs ``work`` on submitted records: in order per key, concurrently across keys.

    At most ``limit`` records are taken and not yet finished; ``submit`` waits for room,
    which in turn slows the consumer down (backpressure instead of unbounded memory).
    ``work`` must not raise: an exception is a bug, recorded in ``failure`` so the
    process stops loudly rather than leave a partition's commits stuck behind it.
    """

    def __init__(self, work: Work[_T], limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self._work = work
        self._slots = asyncio.Semaphore(limit)
        self._logs: dict[TopicPartition, PartitionLog] = {}
        self._lanes: dict[Hashable, deque[_Item[_T]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_flight = 0
        self._closing = False
        self.failed = asyncio.Event()
        self.failure: BaseException | None = None

    @property
    def in_flight(self) -> int:
        """Records taken and not yet finished (or dropped)."""
        return self._in_flight

    @property
    def partitions(self) -> list[TopicPartition]:
        return list(self._logs)

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        """Start tracking newly assigned partitions, each with a fresh log."""
        for partition in partitions:
            self._logs[partition] = PartitionLog()

    async def revoke(
        self, partitions: Iterable[TopicPartition], timeout: float
    ) -> dict[TopicPartition, int]:
        """Stop tracking ``partitions``; returns the positions to commit for them.

        Records not yet started are dropped (the next owner reads them again); those
        being handled get up to ``timeout`` seconds to finish, so their offsets can be
        committed before the partitions change hands.
        """
        logs = {tp: self._logs.pop(tp) for tp in partitions if tp in self._logs}
        for partition_log in logs.values():
            partition_log.revoked = True
        if logs:
            waits = [partition_log.wait_idle() for partition_log in logs.values()]
            try:
                async with asyncio.timeout(timeout):
                    await asyncio.gather(*waits)
            except TimeoutError:
                log.warning("records still running after a revocation; they will be redelivered")
        return {tp: pos for tp, plog in logs.items() if (pos := plog.position) is not None}

    async def submit(
        self, partition: TopicPartition, offset: int, key: Hashable, payload: _T
    ) -> bool:
        """Queue ``payload`` behind earlier records of ``key``; False when it was not taken
        (closing, or the partition is no longer ours) and must not count as handled."""
        # The log is looked up before waiting for room: the record belongs to the
        # assignment it was fetched in, even if the partition is revoked and assigned
        # back meanwhile (then it is dropped and read again from the committed offset).
        partition_log = self._logs.get(partition)
        if self._closing or partition_log is None:
            return False
        await self._slots.acquire()
        if self._closing or partition_log.revoked:
            self._slots.release()
            return False
        partition_log.take(offset)
        self._in_flight += 1
        item = _Item(partition_log, offset, payload)
        lane = self._lanes.get(key)
        if lane is not None:
            lane.append(item)
            return True
        lane = self._lanes[key] = deque([item])
        task = asyncio.create_task(self._run_lane(key, lane), name=f"lane-{key!r}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    def positions(self) -> dict[TopicPartition, int]:
        """Commit positions of assigned partitions that moved since they were last committed."""
        return {
            tp: pos
            for tp, plog in self._logs.items()
            if (pos := plog.commit_position()) is not None
        }

    def all_positions(self) -> dict[TopicPartition, int]:
        """Commit positions of every assigned partition that has one."""
        return {tp: pos for tp, plog in self._logs.items() if (pos := plog.position) is not None}

    def committed(self, positions: dict[TopicPartition, int]) -> None:
        for partition, position in positions.items():
            if (partition_log := self._logs.get(partition)) is not None:
                partition_log.committed(position)

    async def drain(self, timeout: float) -> bool:
        """Take nothing more, let running records finish, drop queued ones.

        True when every lane ended within ``timeout``; the rest are cancelled.
        """
        self._closing = True
        tasks = set(self._tasks)
        if not tasks:
            return True
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*pending, return_exceptions=True)
        return not pending

    async def _run_lane(self, key: Hashable, lane: deque[_Item[_T]]) -> None:
        try:
            while lane:
                item = lane[0]
                try:
                    if not (self._closing or item.log.revoked):
                        await self._run(item)
                finally:
                    lane.popleft()
                    self._in_flight -= 1
                    self._slots.release()
        finally:
            # Nothing awaits between the empty check above and here, so a record
            # submitted for this key either joined this lane or will start a new one.
            if self._lanes.get(key) is lane:
                del self._lanes[key]

    async def _run(self, item: _Item[_T]) -> None:
        item.log.started()
        try:
            finished = await self._work(item.payload)
        except Exception as exc:
            log.exception("record handler failed; stopping")
            self.failure = exc
            self._closing = True
            self.failed.set()
            return
        finally:
            item.log.ended()
        if finished:
            item.log.finish(item.offset)
