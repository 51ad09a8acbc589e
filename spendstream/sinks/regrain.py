"""Migration 12: the rollups change grain in place, from the rows they hold (not from raw, which may have expired).

Migration 10's ``usage_minutes`` (minute × nine keys) and ``usage_hours`` (hour × ten
keys, customer included) become the grains of :mod:`spendstream.sinks.rollups`: the
new ``usage_minutes`` and ``usage_hours`` group the old rows by fewer keys, and
``customer_hours`` takes the customer keys from the old ``usage_hours``. Regrouping
gives the rows a recomputation from raw would give (counts and money add up, request
sets merge), so what was done stays done: ``customer_hours`` inherits the old
``usage_hours``' done periods.

Each step is safe to run again after a crash at any point: a table already in its new
shape is left alone, and ``customer_hours`` is filled before ``usage_hours`` loses its
customers (re-inserting the same rows collapses in the ReplacingMergeTree).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from spendstream.sinks import rollups
from spendstream.sinks.store import Store

log = logging.getLogger(__name__)


def regrain(store: Store, run: Callable[[str], None]) -> None:
    """Bring migration 10's rollups to the current grains, keeping every period they hold."""
    if _has_column(store, rollups.V10_HOURS.name, "customer"):
        run(rollups.table_ddl(rollups.CUSTOMER_HOURS))
        store.command(rollups.regroup(rollups.V10_HOURS, rollups.CUSTOMER_HOURS, into=rollups.CUSTOMER_HOURS.name))
        for table, column in (("rollup_done", "period, mark"), ("rollup_state", "through")):
            store.command(f"INSERT INTO {table} (rollup, {column}) SELECT 'customer_hours', {column} "
                          f"FROM {table} FINAL WHERE rollup = 'usage_hours'")
    else:
        run(rollups.table_ddl(rollups.CUSTOMER_HOURS))
    for old, new in ((rollups.V10_MINUTES, rollups.MINUTES), (rollups.V10_HOURS, rollups.HOURS)):
        scratch = f"{new.name}_regrain"
        run(f"DROP TABLE IF EXISTS {scratch}")
        if not _has_column(store, old.name, "mode" if new is rollups.MINUTES else "customer"):
            continue  # already in its new shape
        run(rollups.table_ddl(new, name=scratch))
        store.command(rollups.regroup(old, new, into=scratch))
        run(f"EXCHANGE TABLES {new.name} AND {scratch}")
        run(f"DROP TABLE IF EXISTS {scratch}")
        log.info("%s regrouped by %s", new.name, ", ".join(new.keys))


def _has_column(store: Store, table: str, column: str) -> bool:
    return bool(store.query_text("SELECT count() FROM system.columns WHERE database = currentDatabase() "
                                 "AND table = {t:String} AND name = {c:String}",
                                 {"t": table, "c": column}, fmt="TSV").strip() != "0")
