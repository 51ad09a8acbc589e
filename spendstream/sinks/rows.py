"""Batches as Arrow tables shaped like the ClickHouse tables (big columnar blocks)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone

import orjson
import pyarrow as pa

from spendstream.agents.stages import DeadLetter, Priced

MONEY = pa.decimal128(38, 18)
TS = pa.timestamp("ms", tz="UTC")

USAGE_SCHEMA = pa.schema([
    ("event_id", pa.string()), ("ts", TS), ("request_id", pa.string()), ("attempt", pa.uint32()),
    ("provider", pa.string()), ("model", pa.string()), ("deployment", pa.string()), ("mode", pa.string()),
    ("service_tier", pa.string()),
    ("input_tokens", pa.uint64()), ("cached_input_tokens", pa.uint64()), ("cache_write_tokens", pa.uint64()),
    ("output_tokens", pa.uint64()), ("reasoning_tokens", pa.uint64()), ("tokens_estimated", pa.bool_()),
    ("latency_ms", pa.float64()), ("ttft_ms", pa.float64()), ("status", pa.string()), ("http_status", pa.uint16()),
    ("team", pa.string()), ("feature", pa.string()), ("customer", pa.string()), ("environment", pa.string()),
    ("user_hash", pa.string()), ("tags", pa.map_(pa.string(), pa.string())),
    ("prefix_fingerprint", pa.string()), ("prefix_tokens", pa.uint64()), ("max_tokens", pa.uint64()),
    ("service", pa.string()), ("extra", pa.string()),
    ("priced", pa.bool_()), ("unpriced_reason", pa.string()), ("catalog", pa.string()),
    ("catalog_version", pa.string()), ("price_model_id", pa.string()), ("price_provider_id", pa.string()),
    ("input_price_per_mtok", MONEY), ("cached_input_price_per_mtok", MONEY), ("cache_write_price_per_mtok", MONEY),
    ("output_price_per_mtok", MONEY), ("input_cost", MONEY), ("output_cost", MONEY), ("total_cost", MONEY),
    ("source_topic", pa.string()), ("source_partition", pa.uint32()), ("source_offset", pa.uint64()),
    ("ingested_at", TS),
])

DEAD_LETTER_SCHEMA = pa.schema([
    ("received_at", TS), ("source_topic", pa.string()), ("source_partition", pa.uint32()),
    ("source_offset", pa.uint64()), ("item_index", pa.int32()), ("event_id", pa.string()),
    ("reason", pa.string()), ("raw", pa.string()),
])

# Columns copied as they are from the UsageEvent and from the CostRecord.
_EVENT_COLUMNS = ("event_id", "ts", "attempt", "provider", "model", "deployment", "mode", "service_tier",
                  "input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens",
                  "tokens_estimated", "latency_ms", "ttft_ms", "status", "http_status", "team", "feature",
                  "customer", "environment", "user_hash", "prefix_fingerprint", "prefix_tokens", "max_tokens",
                  "service")
_COST_COLUMNS = ("priced", "unpriced_reason", "catalog", "catalog_version", "price_model_id", "price_provider_id",
                 "input_price_per_mtok", "cached_input_price_per_mtok", "cache_write_price_per_mtok",
                 "output_price_per_mtok", "input_cost", "output_cost", "total_cost")


def usage_table(priced: Sequence[Priced], *, now: datetime | None = None) -> pa.Table:
    """One row per priced event, in ``usage_events`` column order."""
    ingested_at = now or datetime.now(timezone.utc)
    columns: dict[str, list[object]] = {name: [] for name in USAGE_SCHEMA.names}
    for item in priced:
        record, event, source = item.record, item.record.event, item.source
        for name in _EVENT_COLUMNS:
            columns[name].append(getattr(event, name))
        for name in _COST_COLUMNS:
            columns[name].append(getattr(record, name))
        columns["request_id"].append(event.request_id or event.event_id)
        columns["tags"].append(list(event.tags.items()))
        extra = event.extra_fields
        columns["extra"].append(orjson.dumps(extra, default=str).decode() if extra else "")
        columns["source_topic"].append(source.topic)
        columns["source_partition"].append(source.partition)
        columns["source_offset"].append(source.offset)
        columns["ingested_at"].append(ingested_at)
    return pa.Table.from_pydict(columns, schema=USAGE_SCHEMA)


def dead_letter_table(dead: Sequence[DeadLetter], *, now: datetime | None = None) -> pa.Table:
    received_at = now or datetime.now(timezone.utc)
    return pa.Table.from_pylist(
        [{
            "received_at": received_at,
            "source_topic": d.source.topic,
            "source_partition": d.source.partition,
            "source_offset": d.source.offset,
            "item_index": d.item_index,
            "event_id": d.event_id,
            "reason": d.reason,
            # raw is kept byte for byte where it is text; undecodable bytes are escaped
            "raw": d.raw.decode("utf-8", errors="backslashreplace"),
        } for d in dead],
        schema=DEAD_LETTER_SCHEMA,
    )
