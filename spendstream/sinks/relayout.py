"""Rebuilding a table with another engine or sort key, keeping every row.

ClickHouse cannot change a table's engine or the head of its sort key in place, so
the table is copied: a new table beside the old one (same columns, new engine),
every row copied, the two swapped by name in one atomic ``EXCHANGE TABLES``,
then the rows that writers still in flight put into the old table during the
copy are copied once more (the engine collapses what arrived twice), and the
old table is dropped.

Each step is safe to run again after a crash at any point: the scratch table is
dropped first, and after the swap it holds the old layout, whose rows the new
table already has.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from spendstream.sinks.store import Store, sql_time

log = logging.getLogger(__name__)

# Writers that had an insert in flight when the copy began finish within this.
_STRAGGLERS = timedelta(minutes=10)


def relayout(store: Store, run: Callable[[str], None], *, table: str, engine: str, version_column: str) -> None:
    """Rebuild ``table`` as ``engine`` (a full ENGINE/PARTITION BY/ORDER BY clause), keeping every row.

    ``run`` executes DDL (on every replica of a cluster when there is one); the
    copies are plain inserts, which a replicated table passes on by itself.
    ``version_column`` is the column whose time says when a row was stored (rows
    stored since the copy began are copied again after the swap).
    """
    scratch = f"{table}_relayout"
    run(f"DROP TABLE IF EXISTS {scratch}")
    run(f"CREATE TABLE IF NOT EXISTS {scratch} AS {table} {engine}")
    started = datetime.now(timezone.utc)
    # FINAL: the rows the old engine counts, one per old key, not copies it has yet to merge.
    store.command(f"INSERT INTO {scratch} SELECT * FROM {table} FINAL")
    run(f"EXCHANGE TABLES {table} AND {scratch}")
    store.query_text(f"INSERT INTO {table} SELECT * FROM {scratch} FINAL "
                     f"WHERE {version_column} >= {{since:DateTime64(3, 'UTC')}}",
                     {"since": sql_time(started - _STRAGGLERS)}, fmt="CSV")
    missing = store.query(f"SELECT (SELECT count() FROM {scratch} FINAL) "
                          f"- (SELECT count() FROM {table} FINAL)").scalar()
    if missing > 0:  # never drop data on a doubt
        raise RuntimeError(f"relayout of {table}: the new table counts {missing} rows fewer than the old; "
                           f"the old rows are kept in {scratch}")
    run(f"DROP TABLE IF EXISTS {scratch}")
    log.info("rebuilt %s: %s", table, " ".join(engine.split()))
