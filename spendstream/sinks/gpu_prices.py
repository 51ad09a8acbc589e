"""Effective-dated GPU prices in the store, and re-pricing GPU cost.

The deployments file is the operator's word; ``gpu_prices`` is what GPU cost was
computed with, period by period (the views price each sample at the period in
force at its time). So that a price change never rewrites the past silently:

- a worker starting (:func:`sync_prices`) stores the file's periods that are not
  stored yet and leaves a stored period alone even if the file now says another
  price for it (it logs that, and the way to apply it). An undated price that
  changed becomes a new period starting now: the past keeps the old price;
- :func:`reprice_gpu` (``spendstream gpu-reprice``) makes the stored periods of
  the named deployments exactly the file's, and records every day whose GPU cost
  changed in ``gpu_cost_corrections`` with the old and the new cost.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal

import pyarrow as pa

from spendstream.pricing.deployments import Deployment, PricePeriod
from spendstream.sinks.store import Store, sql_time

log = logging.getLogger(__name__)

_MONEY = pa.decimal128(38, 18)
_TS = pa.timestamp("ms", tz="UTC")
_Key = tuple[str, datetime]


def price_table(rows: list[tuple[Deployment, PricePeriod]], *, now: datetime) -> pa.Table:
    return pa.table({
        "name": pa.array([d.name for d, _ in rows], pa.string()),
        "effective_from": pa.array([p.effective_from for _, p in rows], _TS),
        "gpu_type": pa.array([d.gpu_type for d, _ in rows], pa.string()),
        "gpu_count": pa.array([p.gpu_count for _, p in rows], pa.uint32()),
        "usd_per_gpu_hour": pa.array([p.usd_per_gpu_hour for _, p in rows], _MONEY),
        "pricing": pa.array([p.pricing for _, p in rows], pa.string()),
        "loaded_at": pa.array([now] * len(rows), _TS),
    })


def stored_periods(store: Store, names: Collection[str] | None = None) -> dict[_Key, PricePeriod]:
    """The stored price periods by (deployment, start)."""
    where = "" if names is None else " WHERE name IN {names:Array(String)}"
    params = {"names": _array(sorted(names))} if names is not None else None
    rows = store.query_arrow("SELECT name, effective_from, usd_per_gpu_hour, gpu_count, pricing "
                             f"FROM gpu_prices FINAL{where}", params)
    return {(r["name"], r["effective_from"]): PricePeriod(
        effective_from=r["effective_from"], usd_per_gpu_hour=r["usd_per_gpu_hour"], gpu_count=r["gpu_count"],
        pricing=r["pricing"]) for r in rows.to_pylist()}


def sync_prices(store: Store, deployments: Mapping[str, Deployment], *, now: datetime | None = None) -> list[str]:
    """Store the file's price periods the store does not have; never change a stored one.

    Returns what was left unapplied, one sentence each (also logged as warnings).
    """
    now = now or datetime.now(timezone.utc)
    stored = stored_periods(store, deployments.keys())
    new: list[tuple[Deployment, PricePeriod]] = []
    unapplied: list[str] = []
    for d in deployments.values():
        if d.usd_per_gpu_hour is not None and _any_stored(stored, d.name):
            _undated(d, stored, now, new)
            continue
        for period in d.periods:
            have = stored.get((d.name, period.effective_from))
            if have is None:
                new.append((d, period))
            elif have != period:
                unapplied.append(f"{d.name}: the price from {period.effective_from:%Y-%m-%d %H:%M} UTC is stored as "
                                 f"{have.gpu_count} × {have.usd_per_gpu_hour:f}/h ({have.pricing}); the file now says "
                                 f"{period.gpu_count} × {period.usd_per_gpu_hour:f}/h ({period.pricing}). Not "
                                 f"applied: a past price changes only through `spendstream gpu-reprice "
                                 f"--deployment {d.name}`")
    for sentence in unapplied:
        log.warning("%s", sentence)
    if new:
        store.insert_arrow("gpu_prices", price_table(new, now=now))
        for name in sorted({d.name for d, _ in new}):
            mark_samples(store, name, since=min(p.effective_from for d, p in new if d.name == name))
    return unapplied


def mark_samples(store: Store, name: str, *, since: datetime | None = None) -> None:
    """Mark the minutes of ``name``'s samples from ``since`` on (all of them without) in ``gpu_marks``: their GPU
    cost follows the price periods, so the rollups of it (``gpu_allocated_hours``) recompute them. After the
    periods are stored, as the writer marks after its rows are durable (sinks/rollups.py)."""
    start = "toDateTime64(0, 3, 'UTC')" if since is None else f"toDateTime64('{sql_time(since)}', 3, 'UTC')"
    store.command(f"INSERT INTO gpu_marks (minute) SELECT DISTINCT toStartOfMinute(ts) FROM gpu_samples "
                  f"WHERE deployment = '{_quoted(name)}' AND ts >= {start}")


def _undated(d: Deployment, stored: Mapping[_Key, PricePeriod], now: datetime,
             new: list[tuple[Deployment, PricePeriod]]) -> None:
    """An undated price that differs from the one in force now starts a period now: the past keeps its price."""
    period = d.periods[0]
    current = _in_force(stored, d.name, now)
    if current is not None and current == period.model_copy(update={"effective_from": current.effective_from}):
        return
    new.append((d, period.model_copy(update={"effective_from": now})))
    log.warning("%s: the undated GPU price is now %s × %s/GPU-hour from %s on; earlier samples keep their price "
                "(`spendstream gpu-reprice --deployment %s` corrects the past)", d.name, period.gpu_count,
                f"{period.usd_per_gpu_hour:f}", f"{now:%Y-%m-%d %H:%M} UTC", d.name)


def _any_stored(stored: Mapping[_Key, PricePeriod], name: str) -> bool:
    return any(key[0] == name for key in stored)


def _in_force(stored: Mapping[_Key, PricePeriod], name: str, at: datetime) -> PricePeriod | None:
    starts = sorted(start for n, start in stored if n == name and start <= at)
    return stored[(name, starts[-1])] if starts else None


@dataclass(frozen=True, slots=True)
class GpuRepriceSummary:
    reprice_id: str
    deployments: tuple[str, ...]
    days_changed: int
    old_total: Decimal
    new_total: Decimal

    @property
    def delta(self) -> Decimal:
        return self.new_total - self.old_total


def reprice_gpu(store: Store, deployments: Mapping[str, Deployment], names: Collection[str] | None = None, *,
                now: datetime | None = None) -> GpuRepriceSummary:
    """Make the stored price periods of ``names`` (default: every deployment in the file) the file's,
    and record each day whose GPU cost changed in ``gpu_cost_corrections``."""
    now = now or datetime.now(timezone.utc)
    names = sorted(names if names is not None else deployments)
    if unknown := [n for n in names if n not in deployments]:
        raise ValueError(f"not in the deployments file: {', '.join(unknown)}")
    reprice_id = f"{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    before = _daily_cost(store, names)
    for name in names:
        starts = [p.effective_from for p in deployments[name].periods]
        store.command(f"ALTER TABLE gpu_prices DELETE WHERE name = '{_quoted(name)}' AND effective_from NOT IN "
                      f"({', '.join(repr(sql_time(s)) for s in starts)}) SETTINGS mutations_sync = 2")
        store.insert_arrow("gpu_prices", price_table([(deployments[name], p) for p in deployments[name].periods],
                                                     now=now))
        mark_samples(store, name)  # every sample: a deleted period's samples move to another price too
    after = _daily_cost(store, names)
    changed = sorted(key for key in before.keys() | after.keys()
                     if before.get(key, Decimal(0)) != after.get(key, Decimal(0)))
    if changed:
        store.insert_arrow("gpu_cost_corrections", pa.table({
            "reprice_id": pa.array([reprice_id] * len(changed), pa.string()),
            "day": pa.array([day for day, _ in changed], pa.date32()),
            "deployment": pa.array([name for _, name in changed], pa.string()),
            "old_cost_usd": pa.array([before.get(k, Decimal(0)) for k in changed], _MONEY),
            "new_cost_usd": pa.array([after.get(k, Decimal(0)) for k in changed], _MONEY),
            "corrected_at": pa.array([now] * len(changed), _TS),
        }))
    return GpuRepriceSummary(reprice_id, tuple(names), len(changed), sum(before.values(), Decimal(0)),
                             sum(after.values(), Decimal(0)))


def _daily_cost(store: Store, names: list[str]) -> dict[tuple[date, str], Decimal]:
    rows = store.query_arrow("SELECT toDate(minute) AS day, deployment, sum(gpu_cost_usd) AS cost FROM gpu_minutely "
                             "WHERE deployment IN {names:Array(String)} GROUP BY day, deployment",
                             {"names": _array(names)})
    return {(r["day"], r["deployment"]): r["cost"] for r in rows.to_pylist()}


def _quoted(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")


def _array(names: list[str]) -> str:
    """An Array(String) query parameter in ClickHouse's text form."""
    return "[" + ",".join(f"'{_quoted(n)}'" for n in names) + "]"
