"""Batches as Arrow tables shaped like the ClickHouse tables (big columnar blocks)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime, timezone

import orjson
import pyarrow as pa

from spendstream.batches import BatchResult, DeadLetter, contract_columns
from spendstream.pricing.deployments import Deployment
from spendstream.pricing.engine import PricedBatch
from spendstream.pricing.fees import FEE_KINDS
from spendstream.pricing.rates import KINDS
from spendstream.schemas.alert import Alert
from spendstream.schemas.gpu import GpuSample
from spendstream.schemas.ledger import LedgerEntry

MONEY = pa.decimal128(38, 18)
TS = pa.timestamp("ms", tz="UTC")

DEAD_LETTER_SCHEMA = pa.schema([
    ("received_at", TS), ("source_topic", pa.string()), ("source_partition", pa.uint32()),
    ("source_offset", pa.uint64()), ("item_index", pa.int32()), ("event_id", pa.string()),
    ("reason", pa.string()), ("raw", pa.binary()), ("raw_digest", pa.uint64()),
])

# Per-call columns taken from the PricedBatch as they are.
PRICE_COLUMNS = ("priced", "unpriced_reason", "price_model_id", "price_provider_id", "price_source", "override_id",
                 "input_cost", "output_cost", "fee_cost", "total_cost", "list_cost")


def usage_table(batch: BatchResult, *, now: datetime | None = None, billing_policy: str = "computed") -> pa.Table:
    """One row per priced event of ``batch``, named like the ``usage_events`` columns.

    ``billing_policy`` (``SPENDSTREAM_BILLING_POLICY``) is stored with each row: the table
    derives the billed cost from it (migration "money II")."""
    assert batch.events is not None and batch.priced is not None, "usage_table needs a priced batch"
    ingested_at = pa.scalar(now or datetime.now(timezone.utc), TS)
    columns = dict(zip(batch.events.column_names, batch.events.columns, strict=True)) | price_columns(batch.priced)
    columns["ingested_at"] = pa.repeat(ingested_at, batch.events.num_rows)
    columns["billing_policy"] = pa.repeat(pa.scalar(billing_policy, pa.string()), batch.events.num_rows)
    return pa.table(columns)


def price_columns(priced: PricedBatch) -> dict[str, pa.Array]:
    """The ``usage_events`` columns a price decides, from a priced batch."""
    n = len(priced.priced)
    columns = {name: getattr(priced, name) for name in PRICE_COLUMNS}
    columns |= {f"{kind}_price_per_mtok": priced.unit_prices[kind] for kind in KINDS}
    columns |= {f"list_{kind}_price_per_mtok": priced.list_unit_prices[kind] for kind in KINDS}
    columns |= {f"{kind}_price_per_call": priced.fee_prices[kind] for kind in FEE_KINDS}
    columns |= {f"list_{kind}_price_per_call": priced.list_fee_prices[kind] for kind in FEE_KINDS}
    columns |= {name: pa.repeat(pa.scalar(getattr(priced, name), pa.string()), n)
                for name in ("catalog", "catalog_version", "overrides_version")}
    return columns


def raw_digest(raw: bytes) -> int:
    """The dead letter's identity beside its Kafka coordinates (which restart with a broker or topic)."""
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "big")


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
            "raw": d.raw,  # byte for byte, so that a replay submits exactly what arrived
            "raw_digest": raw_digest(d.raw),
        } for d in dead],
        schema=DEAD_LETTER_SCHEMA,
    )


ALERT_COLUMNS = [
    ("created_at", TS), ("kind", pa.string()), ("severity", pa.string()), ("state", pa.string()),
    ("subject", pa.string()), ("window_start", TS), ("window_end", TS), ("observed", MONEY), ("expected", MONEY),
    ("dedup_key", pa.string()), ("message", pa.string()),
]


def alert_table(alerts: Sequence[Alert]) -> pa.Table:
    return pa.table({name: pa.array([getattr(a, name) for a in alerts], type_) for name, type_ in ALERT_COLUMNS})


# The gpu_samples and emitter_ledger columns a record decides, from its contract (migrations 4 and 6).
GPU_COLUMNS = contract_columns(GpuSample, widths={"gpu_count": pa.uint32(), "dropped_readings": pa.uint32()})
LEDGER_COLUMNS = contract_columns(LedgerEntry)

_CLICKHOUSE_TYPES = {
    pa.string(): "String", pa.bool_(): "Bool", pa.float64(): "Float64", pa.int64(): "Int64", pa.uint16(): "UInt16",
    pa.uint32(): "UInt32", pa.uint64(): "UInt64", TS: "DateTime64(3, 'UTC')",
    pa.map_(pa.string(), pa.string()): "Map(String, String)",
}


def clickhouse_type(type_: pa.DataType, *, nullable: bool) -> str:
    """The ClickHouse type of a contract column (the Arrow types of ``contract_columns``), as a
    migration that adds one would declare it (LowCardinality, where wanted, is the migration's choice)."""
    base = _CLICKHOUSE_TYPES[type_]
    return f"Nullable({base})" if nullable else base


def gpu_sample_table(samples: Sequence[GpuSample], *, now: datetime | None = None) -> pa.Table:
    columns = {name: pa.array([getattr(s, name) for s in samples], type_) for name, type_ in GPU_COLUMNS}
    columns["extra"] = pa.array([orjson.dumps(s.__pydantic_extra__, default=str).decode() if s.__pydantic_extra__
                                 else "" for s in samples], pa.string())
    columns["ingested_at"] = pa.array([now or datetime.now(timezone.utc)] * len(samples), TS)
    return pa.table(columns)


def deployment_table(deployments: Sequence[Deployment], *, now: datetime | None = None) -> pa.Table:
    loaded_at = now or datetime.now(timezone.utc)
    return pa.table({
        "name": pa.array([d.name for d in deployments], pa.string()),
        "gpu_type": pa.array([d.gpu_type for d in deployments], pa.string()),
        # the latest price period: what this table has always held (dated ones: gpu_prices)
        "gpu_count": pa.array([d.periods[-1].gpu_count for d in deployments], pa.uint32()),
        "usd_per_gpu_hour": pa.array([d.periods[-1].usd_per_gpu_hour for d in deployments], MONEY),
        "pricing": pa.array([d.periods[-1].pricing for d in deployments], pa.string()),
        "idle_below_tokens_per_s": pa.array([d.idle_below_tokens_per_s for d in deployments], pa.float64()),
        "prefill_cost_multiplier": pa.array([d.prefill_cost_multiplier for d in deployments], MONEY),
        "loaded_at": pa.array([loaded_at] * len(deployments), TS),
    })


def ledger_table(entries: Sequence[LedgerEntry]) -> pa.Table:
    return pa.table({name: pa.array([getattr(e, name) for e in entries], type_) for name, type_ in LEDGER_COLUMNS})
