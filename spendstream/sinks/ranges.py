"""Exact answers over any time range from the rollups: whole periods from ``rollups.columns``, the rest from raw.

A rollup answers whole periods only: a minute rollup cannot say what happened in the
last 20 seconds of a minute. Readers ask about ranges that start and end anywhere
(``report --since 7d`` starts at now − 7 days to the millisecond), so a range
``since <= ts < until`` is cut in three:

- the whole periods inside it, ``[ceil(since), floor(until))``, read through
  ``rollups.columns`` (the rollup before its watermark, raw after it);
- the partial periods at its two ends, ``[since, ceil(since))`` and
  ``[floor(until), until)``, read from ``usage_events FINAL`` and grouped the same way.

The partial ends are taken from raw rather than the range being aligned, because
aligning would change the question (an event 30 s before ``since`` would count):
answers stay equal to the raw query over the same range, to the last digit. What
raw reads for the ends is at most two periods, which the time-ordered ``usage_events``
finds by its sort key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from spendstream.sinks import rollups
from spendstream.sinks.rollups import Rollup


def between(rollup: Rollup, bucket: str, measures: Sequence[str] | None = None, *, since: str,
            until: str | None = None, where: str = "1", marks: Mapping[str, datetime] | None = None) -> str:
    """A subquery of ``rollup``'s mergeable rows for ``since <= ts < until`` (no upper bound when ``until`` is None).

    Its columns are those of ``rollups.columns``: ``period`` (``bucket``, SQL over ``{t}``,
    the start of a period of ``rollup``'s grain), the rollup's keys, and the measures in
    ``rollup.measures`` order, to be grouped by the caller with each ``Measure.of_rollup``.
    ``since``/``until`` are SQL expressions of a point in time (a query parameter,
    ``now() - INTERVAL 7 DAY``); ``where`` filters on the rollup's keys only, by name.
    Every event of the range is in exactly one row: the result equals grouping the raw
    events of the range by ``bucket`` over their period start. ``marks``: watermarks read beforehand
    (``rollups.watermarks``, for a reader that asks several ranges), else the rollup's is computed in the query.
    """
    if "{t}" in where:
        raise ValueError("`where` filters keys only: the time range is since/until")
    floor = rollup.floor
    step_s = int(rollup.step.total_seconds())
    since = f"toDateTime64({since}, 3, 'UTC')"
    start = f"{floor}({since})"
    first = f"if({start} = {since}, {start}, {start} + INTERVAL {step_s} SECOND)"  # first whole period's start
    wanted = [m for m in rollup.measures if measures is None or m.name in measures]
    unknown = set(measures or ()) - {m.name for m in wanted}
    if unknown:
        raise ValueError(f"no such measures: {sorted(unknown)}")
    if until is None:
        whole = f"{{t}} >= {first} AND ({where})"
        ends = f"ts >= {since} AND ts < {first}"
    else:
        until = f"toDateTime64({until}, 3, 'UTC')"
        last = f"{floor}({until})"  # the end of the last whole period
        whole = f"{{t}} >= {first} AND {{t}} < {last} AND ({where})"
        # When the range lies within one period there are no whole periods (first >= last),
        # and the two ends below are together the whole range.
        ends = (f"(ts >= {since} AND ts < least({first}, {until}) "
                f"OR ts >= greatest({first}, {last}) AND ts < {until})")
    keys = ", ".join(rollup.keys)
    inner = rollups.columns(rollup, bucket, [m.name for m in wanted], where_rollup=whole, where_raw=whole,
                             marks=marks)
    from_raw = ", ".join(f"{m.of_raw} AS {m.name}" for m in wanted)
    return (f"(SELECT * FROM {inner} UNION ALL "
            f"SELECT {bucket.replace('{t}', rollup.bucket)} AS period, {keys}, {from_raw} "
            f"FROM usage_events FINAL WHERE {ends} AND ({where}) AND ({rollup.where}) GROUP BY period, {keys}"
            f"{rollups.having_sql(rollup)})")

