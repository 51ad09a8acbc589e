"""Replaying dead letters after a fix: their stored bytes go through the normal path again.

A dead letter keeps the exact bytes that could not be stored (a whole record, or
one event of it). Once the cause is fixed — an override for an unknown price, a
new catalog, a bug fix in the worker — ``spendstream dead-letters replay``:

1. selects dead letters (by reason, by age; by default those never replayed),
2. says for each what processing it with this installation's code and prices
   gives now (events stored, or the reason it is still refused),
3. unless ``--dry-run``: produces the bytes to the topic they first came from,
   records the replay in ``dead_letter_replays`` (so a second run does not send
   them again), and waits to see what the workers did with each.

Replaying is idempotent: events are keyed by ``event_id``, so an event that was
already stored (or replayed twice) is a re-delivery and changes nothing. A record
that fails again becomes a new dead letter (its own coordinates), which a later
replay can select in turn; the first one is kept, as every dead letter is.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import orjson

from spendstream.agents.attribution import TagGuard
from spendstream.agents.spans import process_spans
from spendstream.agents.stages import process, process_gpu, process_ledger
from spendstream.batches import SourceRecord
from spendstream.ingest.genai import Attribution
from spendstream.pricing.engine import Pricer
from spendstream.settings import Settings
from spendstream.sinks.store import Store, sql_time

KEY = ("source_topic", "source_partition", "source_offset", "item_index", "raw_digest")


@dataclass(slots=True)
class Replay:
    """One dead letter and what became of it."""

    source_topic: str
    source_partition: int
    source_offset: int
    item_index: int
    raw_digest: int
    reason: str
    raw: bytes
    expected: str = ""          # what processing the bytes now gives
    ids: list[str] = field(default_factory=list)  # the events (or GPU samples) it would store
    table: str = "usage_events"  # where those would be stored, keyed by `ids`
    outcome: str = "not sent"   # after sending: stored / dead-lettered again / not seen yet

    @property
    def where(self) -> str:
        item = "" if self.item_index < 0 else f" item {self.item_index}"
        return f"{self.source_topic}[{self.source_partition}]@{self.source_offset}{item}"


def select(store: Store, *, since: datetime, reason: str | None, again: bool, limit: int) -> list[Replay]:
    """Dead letters received since ``since`` whose reason contains ``reason``; unless ``again``, never replayed."""
    where = ["received_at >= {since:DateTime64(3, 'UTC')}"]
    params: dict[str, object] = {"since": sql_time(since), "limit": limit}
    if reason:
        where.append("positionCaseInsensitiveUTF8(reason, {reason:String}) > 0")
        params["reason"] = reason
    if not again:
        keys = ", ".join(KEY)
        where.append(f"({keys}) NOT IN (SELECT {keys} FROM dead_letter_replays)")
    rows = store.query(
        f"SELECT {', '.join(KEY)}, reason, hex(raw) FROM dead_letters FINAL WHERE {' AND '.join(where)} "
        "ORDER BY received_at, source_topic, source_partition, source_offset, item_index LIMIT {limit:UInt32}",
        params).rows
    return [Replay(topic, int(partition), int(offset), int(item), int(digest), why, bytes.fromhex(raw_hex))
            for topic, partition, offset, item, digest, why, raw_hex in rows]


def predict(replays: Sequence[Replay], settings: Settings, pricer: Pricer) -> None:
    """Fill in what processing each dead letter's bytes with this installation gives now."""
    for replay in replays:
        record = SourceRecord(replay.source_topic, replay.source_partition, replay.source_offset, replay.raw)
        if replay.source_topic == settings.gpu_topic:
            gpu = process_gpu([record])
            dead, replay.ids, replay.table = gpu.dead_letters, [s.sample_id for s in gpu.samples], "gpu_samples"
        elif replay.source_topic == settings.ledger_topic:
            ledger = process_ledger([record])
            dead, replay.ids, replay.table = ledger.dead_letters, [], "emitter_ledger"
            stored_reports = len(ledger.entries)
        else:
            batch = (process_spans([record], pricer, TagGuard(settings.tag_value_limit),
                                   attribution=Attribution(settings.otlp_attribution), encoding=settings.otlp_encoding)
                     if replay.source_topic == settings.otlp_topic else
                     process([record], pricer, TagGuard(settings.tag_value_limit)))
            dead = batch.dead_letters
            replay.ids = batch.events["event_id"].to_pylist() if batch.events is not None else []
        count = stored_reports if replay.table == "emitter_ledger" else len(replay.ids)
        if dead:
            replay.expected = f"refused again: {dead[0].reason}"
        else:
            replay.expected = f"stores {count} {'record' if replay.table == 'emitter_ledger' else 'event'}" + \
                ("" if count == 1 else "s")


def send(replays: Sequence[Replay], bootstrap_servers: str) -> None:
    """Produce each dead letter's bytes to the topic it came from; returns once the broker has them all."""
    from aiokafka import AIOKafkaProducer

    async def run() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all",
                                    max_request_size=16 * 1024 * 1024)
        await producer.start()
        try:
            sent = [await producer.send(r.source_topic, r.raw) for r in replays]
            await asyncio.gather(*sent)
        finally:
            await producer.stop()

    asyncio.run(run())
    for replay in replays:
        replay.outcome = "sent"


def record(store: Store, replays: Sequence[Replay], *, now: datetime) -> None:
    """Remember that these dead letters were sent again (a plain INSERT: works through any store)."""
    rows = b"\n".join(orjson.dumps({
        "replayed_at": sql_time(now), "source_topic": r.source_topic, "source_partition": r.source_partition,
        "source_offset": r.source_offset, "item_index": r.item_index, "raw_digest": r.raw_digest,
        "topic": r.source_topic, "expected": r.expected[:2000],
    }) for r in replays)
    store.query_text("INSERT INTO dead_letter_replays SELECT * FROM format(JSONEachRow, "
                     "'replayed_at DateTime64(3, \\'UTC\\'), source_topic String, source_partition UInt32, "
                     "source_offset UInt64, item_index Int32, raw_digest UInt64, topic String, expected String', "
                     "{rows:String})", {"rows": _escaped(rows.decode())}, fmt="CSV")


def _array(values: Sequence[str | int]) -> str:
    """An Array query parameter's value, in ClickHouse's text form (strings quoted and escaped)."""
    def quoted(value: str | int) -> str:
        return str(value) if isinstance(value, int) else "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return _escaped("[" + ",".join(map(quoted, values)) + "]")


def _escaped(text: str) -> str:
    """A String query parameter's value: ClickHouse reads parameters in its escaped (TSV) form."""
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")


def await_outcomes(store: Store, replays: Sequence[Replay], *, since: datetime, wait_s: float) -> None:
    """Watch the store until every sent dead letter is stored or dead-lettered again, or ``wait_s`` passed."""
    deadline = time.monotonic() + wait_s
    pending = [r for r in replays if r.outcome == "sent"]
    key = {"usage_events": "event_id", "gpu_samples": "sample_id"}
    while pending:
        again = {int(digest): why for digest, why in store.query(
            "SELECT raw_digest, any(reason) FROM dead_letters WHERE received_at >= {since:DateTime64(3, 'UTC')} "
            "AND raw_digest IN {d:Array(UInt64)} GROUP BY raw_digest",
            {"since": sql_time(since), "d": _array(sorted({r.raw_digest for r in pending}))}).rows}
        stored: set[str] = set()
        for table, column in key.items():
            ids = sorted({i for r in pending if r.table == table for i in r.ids})
            if ids:
                stored |= {row[0] for row in store.query(
                    f"SELECT DISTINCT {column} FROM {table} WHERE {column} IN {{ids:Array(String)}}",
                    {"ids": _array(ids)}).rows}
        for replay in pending:
            if replay.raw_digest in again:
                replay.outcome = f"dead-lettered again: {again[replay.raw_digest]}"
            elif replay.ids and set(replay.ids) <= stored:
                replay.outcome = f"stored ({len(replay.ids)})"
        pending = [r for r in pending if r.outcome == "sent"]
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    for replay in pending:
        replay.outcome = "sent; not seen in the store yet (is a worker running?)"
