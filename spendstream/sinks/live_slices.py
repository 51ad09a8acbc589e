"""Live minutes from 10-second slices: what keeps ``usage_minutes`` current while a minute fills.

A minute still being written (the open one, and the one before while the worker catches up)
is marked by every batch. Recomputing it from raw each time reads all of its events again:
at 20,000 events/s, up to 1.2M rows a pass, while the writer waits for the same store. So
the live minutes are kept from slices instead:

1. The writer's marks name their 10-second slice (``rollup_marks.slice``).
2. Each pass recomputes, from ``usage_events FINAL``, only the live slices marked since they
   were last computed (``rollup_done`` per slice, as for every rollup) into
   ``rollup_live_slices`` (same keys and measures as ``usage_minutes``; rows expire after an hour).
3. The live minutes still being marked are summed from their slices into ``usage_minutes``,
   versioned by the minute's latest mark, and are *not* recorded done: they stay pending.
4. Once a live minute went quiet and every one of its marks names a slice computed for it, the
   maintainer sums it from its slices once more and records it done (readers take only done
   periods from the rollup): its raw rows are not read again. A minute no longer live, or one
   with a mark naming no slice, is recomputed from raw as any other period.

A slice recomputed for mark ``m`` holds every row marked before ``m`` (the writer marks after
its rows are durable), so a minute summed from slices all computed for their latest marks
holds every row marked before its own latest mark: the same rows a recomputation from raw
would give, counted through the same measures (sums, maxima and merged request sets).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc

from spendstream.sinks import rollups
from spendstream.sinks.store import Store, sql_time

SLICE = timedelta(seconds=10)
SLICES_PER_MINUTE = 6

LIVE_SLICES = rollups.Rollup("rollup_live_slices", "slice", "toStartOfInterval(toDateTime(ts, 'UTC'), "
                             "INTERVAL 10 SECOND)", SLICE, rollups.MINUTE_KEYS, of_mark="slice")

SLICES_DDL = rollups.table_ddl(LIVE_SLICES).rstrip().replace(
    "SETTINGS allow_nullable_key = 1", "TTL slice + INTERVAL 1 HOUR\n        SETTINGS allow_nullable_key = 1")

# The writer's marks name their slice. Two slices of one minute are two rows: the mark table collapses by
# (minute, slice). A mark made before, or by hand without a slice, names none (1970, never live): its minute
# is recomputed from raw (a sorting key cannot take a new column with a default).
MARKS_SLICE = "ALTER TABLE rollup_marks ADD COLUMN IF NOT EXISTS slice DateTime('UTC'), MODIFY ORDER BY (minute, slice)"
# the safety net (every insert into usage_events marks what it touched) marks slices too
MARKS_MV = ("DROP TABLE IF EXISTS rollup_marks_mv",
            "CREATE MATERIALIZED VIEW IF NOT EXISTS rollup_marks_mv TO rollup_marks AS "
            "SELECT DISTINCT toStartOfMinute(ts) AS minute, "
            "toStartOfInterval(toDateTime(ts, 'UTC'), INTERVAL 10 SECOND) AS slice FROM usage_events")

MARK_SCHEMA = pa.schema([("minute", pa.timestamp("s", tz="UTC")), ("slice", pa.timestamp("s", tz="UTC"))])


def marks_of(ts: pa.Array | pa.ChunkedArray) -> pa.Table:
    """The distinct (minute, slice) of a batch's timestamps, as rows for ``rollup_marks``."""
    slices = pc.unique(pc.floor_temporal(ts, multiple=10, unit="second").cast(pa.timestamp("s", tz="UTC")))
    minutes = pc.floor_temporal(slices, unit="minute")
    return pa.table({"minute": minutes, "slice": slices}, schema=MARK_SCHEMA)


def every_slice_of(minutes: pa.Array | pa.ChunkedArray) -> pa.Table:
    """Marks for all the slices of these minutes (a period emptied whole must be recomputed whole)."""
    distinct = pc.unique(pc.floor_temporal(minutes, unit="minute").cast(pa.timestamp("s", tz="UTC"))).to_pylist()
    starts = [m for m in distinct for _ in range(SLICES_PER_MINUTE)]
    slices = [m + k * SLICE for m in distinct for k in range(SLICES_PER_MINUTE)]
    return pa.table({"minute": starts, "slice": slices}, schema=MARK_SCHEMA)


def is_live(minute: datetime, *, now: datetime, live_s: float) -> bool:
    """Whether ``minute`` (its start, or a slice's) ends less than ``live_s`` before ``now``: its slices are kept."""
    return minute + timedelta(minutes=1) > now - timedelta(seconds=live_s)


def build_minutes(store: Store, minutes: list[tuple[datetime, datetime]]) -> None:
    """Sum each live ``(minute, mark)`` from its slices into ``usage_minutes``, versioned by the mark.

    The slices must be current for the mark (:func:`rollups.maintain` recomputes them first).
    One ``INSERT … SELECT`` for all of them: live minutes are few and adjacent.

    A slice is read at its latest version only, not through ``FINAL``: each recomputation writes
    every key of its slice (keys never leave raw; re-pricing empties the slices first), so the
    latest version is the whole slice, and ``PREWHERE`` skips the request sets of the older
    versions not merged away yet (``FINAL`` read them all: the live minute's ids, once per pass
    it was recomputed). Two maintainers racing may write one version twice: ``any`` keeps one.
    """
    if not minutes:
        return
    target = rollups.MINUTES
    keys = ", ".join(target.keys)
    names = ", ".join(m.name for m in target.measures)
    merged = ", ".join(m.of_rollup.replace("uniqExactMerge(", "uniqExactMergeState(") + f" AS {m.name}"
                       for m in target.measures)
    one_copy = ", ".join(f"any({m.name}) AS {m.name}" for m in target.measures)
    periods = ", ".join(f"toDateTime('{p:%Y-%m-%d %H:%M:%S}', 'UTC')" for p, _ in minutes)
    versions = ", ".join(f"toDateTime64('{sql_time(m)}', 3, 'UTC')" for _, m in minutes)
    live = f"toStartOfMinute(slice) IN ({periods})"
    latest = (f"SELECT slice, {keys}, {one_copy} FROM {LIVE_SLICES.name} "
              f"PREWHERE (slice, version) IN (SELECT slice, max(version) FROM {LIVE_SLICES.name} WHERE {live} "
              f"GROUP BY slice) WHERE {live} GROUP BY slice, {keys}")
    store.command(
        f"INSERT INTO {target.name} ({target.period}, {keys}, {names}, version) "
        f"SELECT toStartOfMinute(slice) AS p, {keys}, {merged}, "
        f"transform(p, [{periods}], [{versions}], toDateTime64(0, 3, 'UTC')) "
        f"FROM ({latest}) GROUP BY p, {keys}")


def forget(store: Store, listed: str) -> None:
    """Start emptying the slices of the minutes ``listed`` (SQL ``DateTime`` values, comma-separated); the
    caller waits for it (:func:`rollups.wait_for_mutations`), with its other deletes."""
    store.command(f"DELETE FROM {LIVE_SLICES.name} WHERE toStartOfMinute(slice) IN "
                  f"(SELECT arrayJoin([{listed}])) SETTINGS lightweight_deletes_sync = 0")
