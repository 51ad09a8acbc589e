"""The raw events of a pass's fast window, read once and handed to every detector that reads them (issue 17).

Retry storms (the fast window, request shapes) and spend anomalies (the spend window, requests, a feature's teams)
each read the last ten minutes of ``usage_events FINAL``: five statements decoding and merging the same rows (57k
at 50M events), each paying the scan. A round copies those rows once, the columns those statements use, into a
table of a ``Memory`` database (:func:`read`); each statement then reads the copy where the copy holds its time range
(:func:`source`) and raw otherwise, with its own ``WHERE ts …`` either way. The copy is of ``FINAL`` filtered by
time, which is what each statement read: the table is sorted by (``ts``, ``event_id``), so a filter on ``ts`` keeps
or drops every version of an event together, and a narrower range read from the copy is the same rows as from raw.

The statements of one round see one snapshot: an event stored after the copy is read by the next round, as an event
stored after a statement was. A ``Memory`` database's tables are not written to disk: a round drops its copy
(:func:`drop`), and one a crash left behind is gone with the process. Only the embedded store copies: it is one
engine in this process, so every statement of the round reaches the copy. A ClickHouse server may be replicas behind
one address, where a statement can reach a replica without the copy: a server store reads raw, as before (not
measured there). A copy the engine refuses costs the saving, not the detectors: they read raw.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime

from spendstream.sinks.embedded import EmbeddedStore
from spendstream.sinks.store import StoreError, TextQuerier, sql_time

log = logging.getLogger(__name__)

RAW = "usage_events FINAL"
DATABASE = "detect_pass"  # ENGINE = Memory: a crash's leftovers are not kept
# every column a statement over the fast window reads (retry_storm.fast_rows, repeated_shapes; anomaly.spend_window,
# recent_requests, teams_of): a statement reading another fails loudly on the copy, not silently
COLUMNS = ("ts", "event_id", "request_id", "attempt", "team", "feature", "customer", "model", "provider", "status",
           "http_status", "total_cost", "priced", "prefix_fingerprint", "input_tokens")


@dataclass(frozen=True, slots=True)
class RawWindow:
    """A copy of ``usage_events FINAL`` in ``[start, end)`` (:data:`COLUMNS`), in ``table``."""

    start: datetime
    end: datetime
    table: str


def source(window: RawWindow | None, *, start: datetime, end: datetime) -> str:
    """What a statement over ``[start, end)`` reads from: ``window``'s copy where it holds that range, else raw."""
    if window is not None and window.start <= start and end <= window.end:
        return window.table
    return RAW


def read(querier: TextQuerier, *, start: datetime, end: datetime) -> RawWindow | None:
    """Copy raw ``[start, end)`` once for the statements of a round; None (they read raw) on a server store, or where
    the store refuses.

    Three statements: the database (if missing), the table (a ``Memory`` database cannot create one from a query in
    one statement), the copy."""
    if not isinstance(querier, EmbeddedStore):
        return None
    table = f"{DATABASE}.w_{uuid.uuid4().hex}"
    columns = ", ".join(COLUMNS)
    try:
        querier.query_text(f"CREATE DATABASE IF NOT EXISTS {DATABASE} ENGINE = Memory", None, "CSV")
        querier.query_text(f"CREATE TABLE {table} ENGINE = Memory EMPTY AS SELECT {columns} FROM usage_events",
                           None, "CSV")
        # one thread: ten minutes are a few granules, and a second thread's handoff cost a third of the copy's CPU
        querier.query_text(f"INSERT INTO {table} SELECT {columns} FROM {RAW} "
                           "WHERE ts >= {a:DateTime64(3, 'UTC')} AND ts < {b:DateTime64(3, 'UTC')} "
                           "SETTINGS max_threads = 1", {"a": sql_time(start), "b": sql_time(end)}, "CSV")
    except StoreError:
        log.warning("the pass's raw window could not be copied; its detectors read raw", exc_info=True)
        drop(querier, RawWindow(start, end, table))
        return None
    return RawWindow(start, end, table)


def drop(querier: TextQuerier, window: RawWindow | None) -> None:
    """Free ``window``'s copy (nothing if None); a failure is logged: the copy goes at the next restart."""
    if window is None:
        return
    try:
        querier.query_text(f"DROP TABLE IF EXISTS {window.table}", None, "CSV")
    except StoreError:
        log.warning("the pass's raw window %s could not be dropped", window.table, exc_info=True)
