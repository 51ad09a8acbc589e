"""Write, then commit: offsets move only after the handler has made the rows durable."""

from __future__ import annotations

import asyncio
import uuid
from types import SimpleNamespace

import pytest
from aiokafka import TopicPartition

from spendstream.agents.consumer import ConsumerLoop
from spendstream.kafka_admin import ensure_topics
from tests.conftest import produce_raw

pytestmark = pytest.mark.integration


async def _run_until(loop: ConsumerLoop, done: asyncio.Event, timeout_s: float = 45) -> None:
    task = asyncio.create_task(loop.run())
    try:
        await asyncio.wait_for(done.wait(), timeout_s)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_a_batch_that_was_not_written_is_delivered_again_and_a_written_one_is_not(broker) -> None:
    topic, group = f"commit.{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    ensure_topics(broker, {topic: 2})
    produce_raw(broker, topic, [f"record-{n}".encode() for n in range(20)])

    async def scenario() -> tuple[list[bytes], list[bytes], list[bytes], dict]:
        # 1. the handler "crashes" before the rows are durable: nothing may be committed
        crashed: list[bytes] = []
        first_batch = asyncio.Event()

        async def crash(records):
            crashed.extend(r.value for r in records)
            first_batch.set()
            await asyncio.sleep(3600)  # never returns: the process dies here

        await _run_until(ConsumerLoop(broker, topic, group, crash, max_wait_s=0.2), first_batch)

        # 2. a new worker in the group gets everything again, writes it, commits
        written: list[bytes] = []
        all_written = asyncio.Event()

        async def write(records):
            written.extend(r.value for r in records)

        loop = ConsumerLoop(broker, topic, group, write, max_wait_s=0.2)

        async def until_committed():
            while sum(s.committed or 0 for s in loop.partitions.values()) < 20:
                await asyncio.sleep(0.05)
            all_written.set()

        watcher = asyncio.create_task(until_committed())
        await _run_until(loop, all_written)
        watcher.cancel()

        # 3. after that commit, another worker starts where it left off: nothing is re-delivered
        again: list[bytes] = []

        async def record(records):
            again.extend(r.value for r in records)

        probe = ConsumerLoop(broker, topic, group, record, max_wait_s=0.2)
        task = asyncio.create_task(probe.run())
        await asyncio.sleep(12)  # time to join the group and poll a few times
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return crashed, written, again, loop.health()

    crashed, written, again, health = asyncio.run(scenario())
    assert crashed, "the first worker received records"
    assert sorted(written) == sorted(f"record-{n}".encode() for n in range(20))
    assert set(crashed) <= set(written)  # everything the crashed worker held came again
    assert again == []
    assert health["commit_failures"] == 0 and sum(p["committed"] for p in health["partitions"].values()) == 20


def test_a_partition_whose_commits_stop_advancing_is_reported(caplog) -> None:
    import logging
    import time

    from spendstream.agents.consumer import PartitionState

    loop = ConsumerLoop("unused:9092", "usage", "g", handle=None, stall_after_s=60)  # type: ignore[arg-type]
    now = time.monotonic()
    loop.partitions[0] = PartitionState(committed=5, committed_at=now - 120, fetched=10, fetched_at=now)
    loop.partitions[1] = PartitionState(committed=10, committed_at=now - 120, fetched=10, fetched_at=now - 120)
    with caplog.at_level(logging.WARNING):
        loop._check_stalls()
        loop._check_stalls()  # reported once, not on every poll
    stalled = [r.getMessage() for r in caplog.records if "have not advanced" in r.getMessage()]
    assert len(stalled) == 1 and "partition 0" in stalled[0]
    health = loop.health()["partitions"]
    assert health[0]["stalled"] is True and health[1]["stalled"] is False  # caught up: idle, not stalled



class _ScriptedConsumer:
    """Answers getmany from a script of fetches, as aiokafka would hand them over one by one."""

    def __init__(self, fetches: list[dict[TopicPartition, list[int]]]) -> None:
        self.fetches, self.calls = fetches, []

    async def getmany(self, *, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[SimpleNamespace]]:
        self.calls.append((timeout_ms, max_records))
        if not self.fetches:
            return {}
        fetch = self.fetches.pop(0)
        assert sum(map(len, fetch.values())) <= max_records, "the loop asked for fewer than the script hands over"
        return {tp: [SimpleNamespace(offset=o) for o in offsets] for tp, offsets in fetch.items()}


def test_a_backlog_fills_the_batch_and_a_lull_closes_it() -> None:
    p0, p1 = TopicPartition("t", 0), TopicPartition("t", 1)
    consumer = _ScriptedConsumer([{p0: [0, 1], p1: [0]}, {p0: [2]}, {p1: [1, 2]}, {}, {p0: [3]}])
    loop = ConsumerLoop("unused:9092", "t", "g", handle=None, max_records=10, max_wait_s=0.5, top_up_ms=20)

    batch = asyncio.run(loop._fetch(consumer))
    # three fetches joined in order per partition, then a top-up that brought nothing closed the batch
    assert {tp: [m.offset for m in messages] for tp, messages in batch.items()} == {p0: [0, 1, 2], p1: [0, 1, 2]}
    assert consumer.calls == [(500, 10), (20, 7), (20, 6), (20, 4)]
    assert consumer.fetches == [{p0: [3]}]  # left for the next batch


def test_a_full_batch_goes_without_waiting_for_more() -> None:
    p0 = TopicPartition("t", 0)
    consumer = _ScriptedConsumer([{p0: [0, 1, 2]}, {p0: [3, 4]}, {p0: [5]}])
    loop = ConsumerLoop("unused:9092", "t", "g", handle=None, max_records=5)

    batch = asyncio.run(loop._fetch(consumer))
    assert [m.offset for m in batch[p0]] == [0, 1, 2, 3, 4]
    assert consumer.calls == [(500, 5), (20, 2)]
