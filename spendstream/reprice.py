"""Re-pricing a past period: after an override changes, or a catalog upgrade.

``spendstream reprice --since … --until …`` reads the stored events of the period,
prices them again with today's catalog and overrides *at each event's own
timestamp*, and for every event whose price changed:

- writes the re-priced row with the stored row's own ``ingested_at`` (so its
  ``precedence`` is the stored row's, and of rows with equal version
  ``ReplacingMergeTree`` keeps the one inserted last: the re-priced one), and
- records the correction in ``cost_corrections`` with the old and the new total,
  so both stay visible: a correction, not a silent rewrite.

Running it again with the same prices changes nothing (it is idempotent).
Restart the workers after changing the overrides file, then re-price: a worker
keeps the overrides it started with.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import numpy as np
import pyarrow as pa

from spendstream.pricing.engine import PricedBatch, Pricer, UsageColumns
from spendstream.sinks.rollups import forget_periods, minutes_of
from spendstream.sinks.rows import price_columns
from spendstream.sinks.store import Store, sql_time

# The columns of usage_events that a price decides.
_COMPARED = ("priced", "total_cost", "list_cost", "price_source", "override_id")
_TS = pa.timestamp("ms", tz="UTC")


@dataclass(frozen=True, slots=True)
class RepriceSummary:
    reprice_id: str
    since: datetime
    until: datetime
    examined: int
    changed: int
    old_total: Decimal
    new_total: Decimal
    dry_run: bool

    @property
    def delta(self) -> Decimal:
        return self.new_total - self.old_total


def reprice(store: Store, pricer: Pricer, since: datetime, until: datetime, *, dry_run: bool = False,
            chunk: timedelta = timedelta(days=1), now: datetime | None = None) -> RepriceSummary:
    """Re-price events with ``since <= ts < until``, a chunk of time at a time."""
    if until <= since:
        raise ValueError(f"--until ({until:%Y-%m-%d %H:%M}) must be after --since ({since:%Y-%m-%d %H:%M})")
    now = now or datetime.now(timezone.utc)
    reprice_id = f"{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    examined = changed = 0
    old_total = new_total = Decimal(0)
    start = since
    while start < until:
        end = min(start + chunk, until)
        rows = store.query_arrow(
            "SELECT * FROM usage_events FINAL WHERE ts >= {a:DateTime64(3, 'UTC')} AND ts < {b:DateTime64(3, 'UTC')}",
            {"a": sql_time(start), "b": sql_time(end)})
        start = end
        if rows.num_rows == 0:
            continue
        priced = pricer.price_columns(_columns(rows))
        mask = _changed(rows, priced)
        examined += rows.num_rows
        changed += int(mask.sum())
        old_total += sum((v for v in rows["total_cost"].to_pylist() if v is not None), Decimal(0))
        new_total += sum((v for v in priced.total_cost.to_pylist() if v is not None), Decimal(0))
        if mask.any() and not dry_run:
            index = pa.array(np.flatnonzero(mask))
            repriced = _repriced_rows(rows, priced, index)
            store.insert_arrow("usage_events", repriced)
            # the rollups of these minutes are recomputed with the new prices (sinks/rollups.py), from empty
            # periods: a re-priced row can leave a rollup's keys (unpriced_hours, an override id)
            minutes = minutes_of(repriced["ts"])
            store.insert_arrow("rollup_marks", minutes)
            forget_periods(store, minutes)
            store.insert_arrow("cost_corrections", _corrections(rows, priced, index, reprice_id, now))
    return RepriceSummary(reprice_id, since, until, examined, changed, old_total, new_total, dry_run)



def _columns(rows: pa.Table) -> UsageColumns:
    return UsageColumns.from_table(rows)


def _changed(rows: pa.Table, priced: PricedBatch) -> np.ndarray:
    mask = np.zeros(rows.num_rows, dtype=bool)
    for name in _COMPARED:
        old, new = rows[name].to_pylist(), getattr(priced, name).to_pylist()
        mask |= np.fromiter((a != b for a, b in zip(old, new, strict=True)), dtype=bool, count=len(old))
    return mask


def _repriced_rows(rows: pa.Table, priced: PricedBatch, index: pa.Array) -> pa.Table:
    table = rows.take(index)
    replacements = {name: column.take(index) for name, column in price_columns(priced).items()}
    for name, column in replacements.items():
        table = table.set_column(table.schema.get_field_index(name), name, column)
    return table


def _corrections(rows: pa.Table, priced: PricedBatch, index: pa.Array, reprice_id: str, now: datetime) -> pa.Table:
    n = len(index)
    old = rows.take(index)
    return pa.table({
        "reprice_id": pa.array([reprice_id] * n, pa.string()),
        "repriced_at": pa.array([now] * n, _TS),
        "event_id": old["event_id"], "ts": old["ts"],
        "old_priced": old["priced"], "new_priced": priced.priced.take(index),
        "old_total_cost": old["total_cost"], "new_total_cost": priced.total_cost.take(index),
        "old_price_source": old["price_source"], "new_price_source": priced.price_source.take(index),
        "old_overrides_version": old["overrides_version"],
        "new_overrides_version": pa.array([priced.overrides_version] * n, pa.string()),
    })
