"""Write, then commit: the consumer loop that feeds ClickHouse, with offsets under our control.

faust's own offset handling re-processes a commit interval after every crash,
can stop committing a partition for good after a rebalance race, and was seen to
lose records (measured on tansu in 7 crash runs; the faust-streaming issue #596,
"race condition in recovery causes unrecoverable gaps in acked offsets and
consequently blocks committing"). A meter cannot trust that, so the ingest path is
a plain aiokafka consumer in the worker's consumer group:

1. ``getmany`` a batch (many events per record, up to ``max_records`` records);
2. hand it to ``handle``, which returns only once the rows are durable in
   ClickHouse (the sink retries with backoff while ClickHouse is away, so
   consumption pauses instead of dropping anything);
3. commit exactly the offsets after the last record of that batch, per partition.

Nothing is committed that was not written. A crash or rebalance between 2 and 3
re-delivers the batch, which the ``ReplacingMergeTree`` tables absorb (every
table is keyed by the event id or by the record's topic/partition/offset).

One batch may be in flight while the next is fetched and processed: ClickHouse
inserts in a thread without the GIL, so decoding and pricing batch k+1 overlaps
the insert of batch k. Batch k is still committed only once its insert returned,
and before batch k+1 is (commits stay in order).

A partition whose commits stop advancing while records keep arriving is
reported (a warning, and in :meth:`ConsumerLoop.health`). :meth:`ConsumerLoop.lag`
says, per partition this worker holds, how many records are not yet stored.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import IllegalStateError, KafkaError

from spendstream.batches import SourceRecord

log = logging.getLogger(__name__)


@dataclass
class PartitionState:
    committed: int | None = None        # the next offset to read, as committed
    committed_at: float | None = None   # monotonic time of that commit
    fetched: int | None = None          # the next offset after what we last fetched
    fetched_at: float | None = None
    stalled: bool = False
    start: int | None = None            # where this worker started reading it (the group's position then)
    high_water: int | None = None       # the offset after the partition's last record, as the broker last said


@dataclass
class ConsumerLoop:
    bootstrap_servers: str
    topic: str
    group_id: str
    handle: Callable[[list[SourceRecord]], Awaitable[None]]
    max_records: int = 100  # Kafka records per batch: SPENDSTREAM_BATCH_MAX_RECORDS's default
    max_wait_s: float = 0.5
    top_up_ms: int = 20
    fetch_partition_bytes: int = 8 * 1024 * 1024  # a block record is ~300 kB: fetch many per round trip
    stall_after_s: float = 60.0
    client_id: str = "spendstream-worker"
    partitions: dict[int, PartitionState] = field(default_factory=dict)
    batches: int = 0
    commit_failures: int = 0
    records: int = 0                    # Kafka records fetched (a re-delivered record counts again)
    assigned: frozenset[int] | None = None  # partitions held now; None until the group assigned some (or none)
    stopped: bool = False

    async def run(self) -> None:
        """Consume until cancelled; ``stopped`` is set once it returns or raises."""
        try:
            await self._consume()
        finally:
            self.stopped = True

    async def _consume(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers,
            group_id=self.group_id,
            client_id=self.client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.max_records,
            # tansu holds a join for half the session timeout; 6 s is Kafka's lower bound
            session_timeout_ms=6_000,
            heartbeat_interval_ms=1_500,
            # a long ClickHouse outage pauses polling; do not get expelled from the group for it
            max_poll_interval_ms=3_600_000,
            fetch_max_bytes=64 * 1024 * 1024,
            max_partition_fetch_bytes=self.fetch_partition_bytes,
        )
        consumer.subscribe([self.topic], listener=_Assignment(self))
        await consumer.start()
        log.info("consuming %s as group %s (write, then commit)", self.topic, self.group_id)
        in_flight: tuple[asyncio.Task[None], dict[TopicPartition, int]] | None = None
        try:
            while True:
                batches = await self._fetch(consumer)
                records = [SourceRecord(tp.topic, tp.partition, m.offset, m.value)
                           for tp, messages in batches.items() for m in messages]
                now = time.monotonic()
                self.records += len(records)
                for tp, messages in batches.items():
                    state = self.partitions.setdefault(tp.partition, PartitionState())
                    if state.start is None:
                        state.start = messages[0].offset
                    state.fetched, state.fetched_at = messages[-1].offset + 1, now
                await self._note_high_water(consumer)
                if records:
                    # Start this batch; it is processed while the previous one's insert finishes.
                    previous = in_flight
                    in_flight = (asyncio.create_task(self.handle(records)),
                                 {tp: messages[-1].offset + 1 for tp, messages in batches.items()})
                    if previous is not None:
                        await self._complete(consumer, *previous)
                elif in_flight is not None:
                    await self._complete(consumer, *in_flight)
                    in_flight = None
                self._check_stalls()
        finally:
            try:
                await self._abandon(consumer, in_flight)
            finally:
                await consumer.stop()

    async def _fetch(self, consumer: AIOKafkaConsumer) -> dict[TopicPartition, list[ConsumerRecord]]:
        return await fetch_batch(consumer, self.max_records, self.max_wait_s, self.top_up_ms)

    async def _complete(self, consumer: AIOKafkaConsumer, task: asyncio.Task[None],
                        offsets: dict[TopicPartition, int]) -> None:
        await task  # durable before its offsets are committed
        await self._commit(consumer, offsets)
        self.batches += 1

    async def _abandon(self, consumer: AIOKafkaConsumer,
                       in_flight: tuple[asyncio.Task[None], dict[TopicPartition, int]] | None) -> None:
        """On the way out: commit the last batch if it was written, else stop it (it will come again)."""
        if in_flight is None:
            return
        task, offsets = in_flight
        if task.done() and not task.cancelled() and task.exception() is None:
            await self._commit(consumer, offsets)
        else:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _commit(self, consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
        try:
            await consumer.commit(offsets)
        except (KafkaError, asyncio.TimeoutError) as exc:
            # The rows are written; the batch will be delivered again and stored once.
            self.commit_failures += 1
            log.warning("commit of %s failed (%s); the batch will be re-delivered and deduplicated",
                        {tp.partition: o for tp, o in offsets.items()}, type(exc).__name__)
            return
        now = time.monotonic()
        for tp, offset in offsets.items():
            state = self.partitions.setdefault(tp.partition, PartitionState())
            state.committed, state.committed_at = offset, now
            if state.stalled:
                log.info("partition %d of %s commits again (offset %d)", tp.partition, self.topic, offset)
                state.stalled = False

    async def _note_high_water(self, consumer: AIOKafkaConsumer) -> None:
        for tp in consumer.assignment():
            try:
                high_water = consumer.highwater(tp)  # known once a fetch response for it arrived
                if high_water is None:
                    continue
                state = self.partitions.setdefault(tp.partition, PartitionState())
                state.high_water = high_water
                if state.start is None:  # fetched, nothing there: its position is where the group left off
                    state.start = await consumer.position(tp)
            except (AssertionError, IllegalStateError):
                continue  # revoked meanwhile (a rebalance): the next assignment starts it afresh

    def lag(self) -> dict[int, int]:
        """Per partition held now: records in it that are not stored yet (the last high water the broker
        reported minus the offset committed, or, before this worker's first commit, minus where it started).
        A partition the broker has not reported on yet is absent."""
        lag = {}
        for partition in sorted(self.assigned or ()):
            state = self.partitions.get(partition)
            base = None if state is None else state.committed if state.committed is not None else state.start
            if state is not None and state.high_water is not None and base is not None:
                lag[partition] = max(state.high_water - base, 0)
        return lag

    def _check_stalls(self) -> None:
        now = time.monotonic()
        for partition, state in self.partitions.items():
            behind = state.fetched is not None and (state.committed is None or state.committed < state.fetched)
            since = state.committed_at or state.fetched_at or now
            if behind and now - since > self.stall_after_s and not state.stalled:
                state.stalled = True
                log.warning("partition %d of %s: commits have not advanced for %.0f s (committed %s, fetched up to "
                            "%s); check ClickHouse and the worker log", partition, self.topic, now - since,
                            state.committed, state.fetched)

    def health(self) -> dict[str, object]:
        now = time.monotonic()
        return {
            "topic": self.topic, "batches": self.batches, "commit_failures": self.commit_failures,
            "partitions": {p: {"committed": s.committed, "fetched": s.fetched, "stalled": s.stalled,
                               "seconds_since_commit": round(now - s.committed_at, 1) if s.committed_at else None}
                           for p, s in sorted(self.partitions.items())},
        }


class _Assignment(ConsumerRebalanceListener):
    """Keeps ``loop.assigned`` current; a partition assigned anew starts a fresh state (another worker may
    have moved its offsets meanwhile)."""

    def __init__(self, loop: ConsumerLoop) -> None:
        self.loop = loop

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.loop.assigned = None

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        partitions = frozenset(tp.partition for tp in assigned)
        for partition in partitions:
            self.loop.partitions[partition] = PartitionState()
        self.loop.assigned = partitions
        log.info("%s: holding partitions %s", self.loop.topic, sorted(partitions) or "none (more workers than "
                 "partitions: this one stands by)")


async def fetch_batch(consumer: AIOKafkaConsumer, max_records: int, max_wait_s: float,
                      top_up_ms: int) -> dict[TopicPartition, list[ConsumerRecord]]:
    """Up to ``max_records`` records: wait up to ``max_wait_s`` for the first, then take what keeps coming.

    A backlog fills the batch (one big insert makes one part, where many small ones
    make ClickHouse merge them later: 5.0 against 2.6 µs of insert and merge CPU an
    event at 25k against 200k events an insert, BENCHMARKS.md); under light load
    nothing more arrives within ``top_up_ms`` and the batch goes at once.
    """
    batches = await consumer.getmany(timeout_ms=int(max_wait_s * 1000), max_records=max_records)
    count = sum(len(messages) for messages in batches.values())
    deadline = time.monotonic() + max_wait_s
    while 0 < count < max_records and time.monotonic() < deadline:
        more = await consumer.getmany(timeout_ms=top_up_ms, max_records=max_records - count)
        if not more:
            break
        for tp, messages in more.items():
            batches.setdefault(tp, []).extend(messages)
            count += len(messages)
    return batches
