"""The per-event baseline: a straightforward faust agent, one event per Kafka record.

    python bench/faust_baseline.py BOOTSTRAP TOPIC EVENTS DATA_DIR      (run by bench/throughput.py)

What a first version of the meter looks like: for every record, validate the
event with pydantic, look its price up (cached per model and minute, exact
Decimal arithmetic), and buffer a row; insert every 1,000 rows into chdb through
the same Arrow path. faust handles offsets and acks per record. Prints one JSON
line of timings when EVENTS rows are stored, then exits.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import faust
import pyarrow as pa
from pydantic import ValidationError

from spendstream.pricing.engine import Pricer, _exact_cost
from spendstream.schemas import UsageEvent
from spendstream.sinks.embedded import EmbeddedStore

BATCH = 1_000
DDL = """CREATE TABLE baseline_events (event_id String, ts DateTime64(3, 'UTC'), provider String, model String,
team Nullable(String), feature Nullable(String), customer Nullable(String), input_tokens UInt64, output_tokens UInt64,
total_cost Nullable(Decimal(38, 18))) ENGINE = MergeTree ORDER BY tuple()"""
SCHEMA = pa.schema([("event_id", pa.string()), ("ts", pa.timestamp("us", tz="UTC")), ("provider", pa.string()),
                    ("model", pa.string()), ("team", pa.string()), ("feature", pa.string()),
                    ("customer", pa.string()), ("input_tokens", pa.uint64()), ("output_tokens", pa.uint64()),
                    ("total_cost", pa.decimal128(38, 18))])


def main(bootstrap: str, topic_name: str, events: int, data_dir: Path) -> None:
    store = EmbeddedStore(data_dir)
    store.command(DDL)
    pricer = Pricer()
    app = faust.App("spendstream-bench-baseline", broker=f"kafka://{bootstrap}", store="memory://",
                    broker_session_timeout=6.0, broker_heartbeat_interval=1.5,
                    consumer_auto_offset_reset="earliest", web_enabled=False)
    topic = app.topic(topic_name, value_serializer="raw")
    state = {"stored": 0, "first": None}
    rows: list[dict] = []

    @app.agent(topic)
    async def meter(stream):  # noqa: ANN001 - faust's signature
        async for value in stream:
            try:
                event = UsageEvent.model_validate_json(value)
            except ValidationError:
                continue
            minute = datetime.fromtimestamp(int(event.ts.timestamp()) // 60 * 60, timezone.utc)
            applied = pricer.group_price(event.provider, event.model, minute, event.mode, event.service_tier).applied
            cost = None
            if applied.priced:
                counts = {name: getattr(event, name) for name in (
                    "input_tokens", "cached_input_tokens", "cache_write_tokens", "cache_write_1h_tokens",
                    "output_tokens", "reasoning_tokens")}
                input_cost, output_cost, _ = _exact_cost(applied, counts)
                cost = input_cost + output_cost
            rows.append({"event_id": event.event_id, "ts": event.ts, "provider": event.provider,
                         "model": event.model, "team": event.team, "feature": event.feature,
                         "customer": event.customer, "input_tokens": event.input_tokens,
                         "output_tokens": event.output_tokens, "total_cost": cost})
            if len(rows) >= BATCH or state["stored"] + len(rows) >= events:
                store.insert_arrow("baseline_events", pa.Table.from_pylist(rows, schema=SCHEMA))
                state["stored"] += len(rows)
                rows.clear()
                state["first"] = state["first"] or (time.perf_counter(), state["stored"])
                if state["stored"] >= events:
                    first_s, first_events = state["first"]
                    last = time.perf_counter()
                    print(json.dumps({"events": state["stored"], "first_s": first_s, "first_events": first_events,
                                      "last_s": last, "events_per_s": (state["stored"] - first_events)
                                      / (last - first_s)}), flush=True)
                    os._exit(0)  # measured; no need for faust's orderly shutdown

    sys.argv = [sys.argv[0], "worker", "-l", "warn", "--without-web"]
    app.main()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]))
