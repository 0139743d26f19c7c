"""Per-DAG lanes and the offsets the trigger may commit."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import pytest
from aiokafka.structs import TopicPartition

from consumers.lanes import Dispatcher, PartitionLog

P0 = TopicPartition("events", 0)
P1 = TopicPartition("events", 1)


def test_commit_position_waits_for_the_oldest_unfinished_offset() -> None:
    log = PartitionLog()
    for offset in (10, 11, 12, 13):
        log.take(offset)

    log.finish(12)
    log.finish(11)
    assert log.commit_position() is None  # 10 still running: committing 11+ would skip it

    log.finish(10)
    assert log.commit_position() == 13
    log.committed(13)
    assert log.commit_position() is None  # nothing new since

    log.finish(13)
    assert log.commit_position() == 14


def test_an_unfinished_record_holds_its_partition_back_for_good() -> None:
    log = PartitionLog()
    log.take(0)
    log.take(1)
    log.finish(1)
    assert log.position is None


class Recorder:
    """Work that records the order it ran in and can be held per payload."""

    def __init__(self) -> None:
        self.ran: list[str] = []
        self.gates: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self.running: set[str] = set()
        self.peak = 0
        self.result = True

    def release(self, *payloads: str) -> None:
        for payload in payloads:
            self.gates[payload].set()

    def release_all(self) -> None:
        for gate in self.gates.values():
            gate.set()

    async def work(self, payload: str) -> bool:
        self.running.add(payload)
        self.peak = max(self.peak, len(self.running))
        try:
            await self.gates[payload].wait()
        finally:
            self.running.discard(payload)
        self.ran.append(payload)
        return self.result


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_one_key_runs_in_order_while_other_keys_overtake_it() -> None:
    recorder = Recorder()
    dispatcher: Dispatcher[str] = Dispatcher(recorder.work, limit=10)
    dispatcher.assign([P0])
    await dispatcher.submit(P0, 0, "dag-a", "a1")
    await dispatcher.submit(P0, 1, "dag-a", "a2")
    await dispatcher.submit(P0, 2, "dag-b", "b1")
    await settle()

    assert recorder.running == {"a1", "b1"}  # a2 waits behind a1; b1 does not
    recorder.release("b1", "a2")
    await settle()
    assert recorder.ran == ["b1"]  # a2 is released but a1 still holds its lane
    assert dispatcher.positions() == {}  # offset 0 unfinished: nothing to commit

    recorder.release("a1")
    await settle()
    assert recorder.ran == ["b1", "a1", "a2"]
    assert dispatcher.positions() == {P0: 3}


async def test_in_flight_records_are_bounded() -> None:
    recorder = Recorder()
    dispatcher: Dispatcher[str] = Dispatcher(recorder.work, limit=2)
    dispatcher.assign([P0])
    await dispatcher.submit(P0, 0, "a", "a")
    await dispatcher.submit(P0, 1, "b", "b")
    third = asyncio.create_task(dispatcher.submit(P0, 2, "c", "c"))
    await settle()

    assert not third.done()  # backpressure: the consumer waits for room
    assert dispatcher.in_flight == 2
    recorder.release("a")
    assert await third
    recorder.release_all()
    await settle()
    assert recorder.peak == 2
    assert dispatcher.in_flight == 0
    assert dispatcher.positions() == {P0: 3}


async def test_unfinished_work_is_not_committed() -> None:
    recorder = Recorder()
    recorder.result = False  # e.g. interrupted by shutdown
    dispatcher: Dispatcher[str] = Dispatcher(recorder.work, limit=5)
    dispatcher.assign([P0])
    await dispatcher.submit(P0, 7, "a", "a")
    recorder.release("a")
    await settle()
    assert recorder.ran == ["a"]
    assert dispatcher.positions() == {}


async def test_revoke_drops_queued_records_and_waits_for_running_ones() -> None:
    recorder = Recorder()
    dispatcher: Dispatcher[str] = Dispatcher(recorder.work, limit=10)
    dispatcher.assign([P0, P1])
    await dispatcher.submit(P0, 0, "a", "a0")
    await dispatcher.submit(P0, 1, "a", "a1")  # queued behind a0
    await dispatcher.submit(P1, 0, "b", "b0")
    await settle()

    revoking = asyncio.create_task(dispatcher.revoke([P0], timeout=5))
    await settle()
    assert not revoking.done()  # a0 is running: its offset should be committed first
    recorder.release("a0", "a1")
    positions = await revoking

    assert positions == {P0: 1}  # a0 finished; a1 is left to the partition's next owner
    await settle()
    assert "a1" not in recorder.ran
    assert dispatcher.partitions == [P1]
    assert not await dispatcher.submit(P0, 2, "a", "a2")  # no longer ours
    recorder.release("b0")
    await settle()
    assert dispatcher.positions() == {P1: 1}


async def test_a_record_fetched_before_a_reassignment_is_dropped() -> None:
    recorder = Recorder()
    dispatcher: Dispatcher[str] = Dispatcher(recorder.work, limit=1)
    dispatcher.assign([P0])
    await dispatcher.submit(P0, 0, "a", "a0")
    waiting = asyncio.create_task(dispatcher.submit(P0, 5, "b", "old"))  # waits for room
    await settle()
    revoking = asyncio.create_task(dispatcher.revoke([P0], timeout=5))
    await settle()
    dispatcher.assign([P0])  # the partition comes back, to be read from the commit again
    recorder.release("a0")
    await revoking

    assert not await waiting
    await dispatcher.submit(P0, 1, "a", "a1")
    recorder.release("a1")
    await settle()
    assert dispatcher.positions() == {P0: 2}  # offset 5 of the old assignment never counted


async def test_drain_finishes_running_records_and_skips_queued_ones() -> None:
    recorder = Recorder()
    dispatcher: Dispatcher[str] = Dispatcher(recorder.work, limit=10)
    dispatcher.assign([P0])
    await dispatcher.submit(P0, 0, "a", "a0")
    await dispatcher.submit(P0, 1, "a", "a1")
    await settle()

    draining = asyncio.create_task(dispatcher.drain(timeout=5))
    await settle()
    recorder.release_all()
    assert await draining

    assert recorder.ran == ["a0"]
    assert dispatcher.positions() == {P0: 1}
    assert not await dispatcher.submit(P0, 2, "b", "b")


async def test_drain_gives_up_after_its_timeout() -> None:
    recorder = Recorder()
    dispatcher: Dispatcher[str] = Dispatcher(recorder.work, limit=10)
    dispatcher.assign([P0])
    await dispatcher.submit(P0, 0, "a", "stuck")
    await settle()
    assert not await dispatcher.drain(timeout=0.05)
    assert dispatcher.positions() == {}


async def test_a_failing_handler_stops_the_dispatcher_loudly() -> None:
    async def broken(payload: str) -> bool:
        raise RuntimeError("bug")

    dispatcher: Dispatcher[str] = Dispatcher(broken, limit=10)
    dispatcher.assign([P0])
    await dispatcher.submit(P0, 0, "a", "x")
    await asyncio.wait_for(dispatcher.failed.wait(), timeout=1)
    assert isinstance(dispatcher.failure, RuntimeError)
    assert dispatcher.positions() == {}
    assert not await dispatcher.submit(P0, 1, "b", "y")


def test_limit_must_be_positive() -> None:
    async def work(payload: str) -> bool:
        return True

    with pytest.raises(ValueError, match="at least 1"):
        Dispatcher(work, limit=0)
