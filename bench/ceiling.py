"""The plumbing ceiling: raw aiokafka consume + JSON parse + chdb insert of the same rows. Nothing else.

    python bench/ceiling.py BOOTSTRAP TOPIC EVENTS DATA_DIR      (run by bench/throughput.py)

Reads the blocks the emitter wrote, parses each with orjson into the event
columns, and inserts them as Arrow into a plain MergeTree table with the
event's columns (no validation, pricing, attribution, dead letters or
detection). Like the worker it fills batches the same way, overlaps one insert
with the next parse, and uses the same insert path and settings. Prints one JSON line of timings.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import orjson
import pyarrow as pa
from aiokafka import AIOKafkaConsumer

from spendstream.agents.consumer import ConsumerLoop, fetch_batch
from spendstream.batches import EVENT_COLUMNS
from spendstream.settings import Settings
from spendstream.sinks.embedded import EmbeddedStore

_CH_TYPES = {pa.string(): "Nullable(String)", pa.uint64(): "Nullable(UInt64)", pa.uint32(): "Nullable(UInt32)",
             pa.uint16(): "Nullable(UInt16)", pa.float64(): "Nullable(Float64)", pa.bool_(): "Nullable(Bool)"}
WORKER = Settings()  # batches are filled as the worker fills them
COLUMNS = [(name, type_) for name, type_ in EVENT_COLUMNS if name != "extra"]


def ddl() -> str:
    ts_type = "DateTime64(3, 'UTC')"
    columns = ", ".join(f"{name} {ts_type if name == 'ts' else _CH_TYPES[type_]}" for name, type_ in COLUMNS)
    return f"CREATE TABLE ceiling_events ({columns}) ENGINE = MergeTree ORDER BY tuple()"


def parse(values: list[bytes]) -> pa.Table:
    """Each block's columns straight into Arrow (absent columns as nulls), one table for the batch."""
    tables = []
    for value in values:
        doc = orjson.loads(value)
        n = len(doc["event_id"])
        columns = {}
        for name, type_ in COLUMNS:
            column = doc.get(name)
            if column is None:
                columns[name] = pa.nulls(n, type_)
            elif name == "ts":
                columns[name] = pa.array(column, pa.string()).cast(pa.timestamp("us", tz="UTC")).cast(
                    pa.timestamp("ms", tz="UTC"), safe=False)
            else:
                columns[name] = pa.array(column, type_)
        tables.append(pa.table(columns))
    return pa.concat_tables(tables)


async def run(bootstrap: str, topic: str, events: int, data_dir: Path) -> dict[str, float]:
    store = EmbeddedStore(data_dir)
    store.command(ddl())
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None, fetch_max_bytes=64 * 1024 * 1024,
                                max_partition_fetch_bytes=8 * 1024 * 1024)
    await consumer.start()
    stored, first, in_flight = 0, None, None
    try:
        while stored < events:
            batches = await fetch_batch(consumer, WORKER.batch_max_records, WORKER.batch_max_wait_s,
                                        ConsumerLoop.top_up_ms)
            values = [m.value for messages in batches.values() for m in messages]
            table = parse(values) if values else None
            if in_flight is not None:
                stored += await in_flight
                first = first or (time.perf_counter(), stored)
            in_flight = asyncio.ensure_future(_insert(store, table)) if table is not None else None
    finally:
        await consumer.stop()
    last = time.perf_counter()
    store.close()
    return {"events": stored, "first_s": first[0], "first_events": first[1], "last_s": last,
            "events_per_s": (stored - first[1]) / (last - first[0])}


async def _insert(store: EmbeddedStore, table: pa.Table) -> int:
    await asyncio.to_thread(store.insert_arrow, "ceiling_events", table)
    return table.num_rows


if __name__ == "__main__":
    bootstrap, topic, events, data_dir = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
    print(json.dumps(asyncio.run(run(bootstrap, topic, events, data_dir))))
