"""The refresh's history, computed once per hour: each subject's requests, attempts, failures and dollars.

The hourly refresh (:mod:`spendstream.detect.baseline`) learns from four weeks of subject-hours (and
a few spans months back, :mod:`spendstream.detect.schedules`). Merging four weeks of request sets
from ``usage_hours`` and ``customer_hours`` every hour to learn one more hour grew with history
(18.7 s of CPU a refresh at 5M events). So each hour's subject-hours are computed once, from the
rollups (raw after their watermarks: the same numbers as raw ``FINAL``), and kept in
``detector_subject_hours`` as small numeric rows, which a refresh reads.

**Exact.** Late events, re-deliveries and re-pricing change old hours. Every insert into
``usage_events`` marks its minutes in ``rollup_marks`` (the rollups' own mechanism, see
:mod:`spendstream.sinks.rollups`), after its rows are durable. An hour is stored with the latest mark
of its minutes *read before* it was computed, in a row for subject ``''`` beside its subjects' rows;
an hour whose minutes have a later mark now (or that has no row) is computed again. Rows marked
before the stored mark were in the computation; any row made durable after it is marked later. A
read takes, per hour, the rows of its newest computation only, so a subject that left an hour (a
re-pricing that unpriced it) leaves with it.

A store upgraded from before this table fills it on its first refresh: the refresh's four weeks
and its remembered spans, a day of hours per read.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import numpy as np
import pyarrow as pa

from spendstream.sinks import rollups
from spendstream.sinks.store import ArrowQuerier, Store, sql_time

TABLE = "detector_subject_hours"
RUN_HOURS = 24  # hours computed per read (a first fill reads four weeks a day at a time)
_HOUR = timedelta(hours=1)
_NO_MARK = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MONEY = pa.decimal128(38, 18)  # the table's cost_usd (migration 27)

# a feature × customer: a spike of a few % of a busy customer (or feature) is most of one of its pairs.
# A pair missing either key is named so that it ends in '=', as an empty key does, and is dropped.
PAIR_SQL = ("if(ifNull(feature, '') = '' OR ifNull(customer, '') = '', 'feature=,customer=', "
            "concat('feature=', feature, ',customer=', customer))")
PAIR_MARK = ",customer="  # in a pair's name (and a leaf's: its line is a pair's)
# a feature × customer × model, a *leaf* of its pair: a spike on one model of a busy pair is a few % of the pair and
# most of the leaf. A leaf missing any key is named so that it ends in '=', and is dropped.
MODEL_SQL = ("if(ifNull(feature, '') = '' OR ifNull(customer, '') = '' OR ifNull(model, '') = '', "
             "'feature=,customer=,model=', concat('feature=', feature, ',customer=', customer, ',model=', model))")
MODEL_MARK = ",model="  # in a leaf's name only

def _by_key(hour: str, values: str) -> str:
    """Per subject and hour in ``[a, b)``: ``values`` (SQL over the rollups' measures), and ``model``: a pair's
    only model in that hour ('' when it had several, or calls without one; always '' for other subjects)."""
    bounds = "{t} >= {a:DateTime64(3, 'UTC')} AND {t} < {b:DateTime64(3, 'UTC')}"
    measures = ["requests", "attempts", "failed_attempts", "cost_usd"]

    def source(rollup: rollups.Rollup) -> str:
        return rollups.columns(rollup, "{t}", measures, where_rollup=bounds, where_raw=bounds.replace("{t}", "ts"))

    # teams and features from the compact usage_hours, customers, pairs and leaves from customer_hours (the only
    # rollup with customers); a pair's rows carry their model (m), the others ''
    by_key = (f"SELECT arrayJoin([concat('team=', ifNull(team, '')), concat('feature=', ifNull(feature, ''))]) "
              f"AS subject, '' AS m, period, requests, attempts, failed_attempts, cost_usd "
              f"FROM {source(rollups.HOURS)} "
              f"UNION ALL SELECT _sm.1, _sm.2, period, requests, attempts, failed_attempts, cost_usd FROM ("
              f"SELECT arrayJoin([(concat('customer=', ifNull(customer, '')), ''), ({PAIR_SQL}, ifNull(model, '')), "
              f"({MODEL_SQL}, '')]) AS _sm, period, requests, attempts, failed_attempts, cost_usd "
              f"FROM {source(rollups.CUSTOMER_HOURS)})")
    return f"""
        SELECT subject, {hour} AS h, {values}, if(min(m) = max(m), min(m), '') AS model
        FROM ({by_key})
        WHERE NOT endsWith(subject, '=')
        GROUP BY subject, h"""


def by_subject_sql(hour: str, *, as_float: bool) -> str:
    """Per subject and hour in ``[a, b)`` (whole hours): requests, attempts, failed attempts, USD; ``hour`` is
    SQL over the rollup's ``period``. ``as_float``: Float64 columns ``requests, attempts, failed, cost`` (the
    refresh's arrays) of every subject, every leaf included; else the rows :func:`ensure` stores (stored types)."""
    if as_float:
        values = ("toFloat64(uniqExactMerge(requests)) AS requests, toFloat64(sum(attempts)) AS attempts, "
                  "toFloat64(sum(failed_attempts)) AS failed, toFloat64(ifNull(sum(cost_usd), 0)) AS cost")
        return f"SELECT * EXCEPT model FROM ({_by_key(hour, values)}) ORDER BY subject, h"
    values = ("toUInt64(uniqExactMerge(requests)) AS requests, toUInt64(sum(attempts)) AS attempts, "
              "toUInt64(sum(failed_attempts)) AS failed_attempts, "
              "toDecimal128(ifNull(sum(cost_usd), 0), 18) AS cost_usd")
    # A pair's hour served by one model is that model's leaf hour, to the last digit: its row names the model and
    # no leaf row is stored (a read makes it: READ_SQL). Only the leaves of a pair's hours with several models (or
    # calls without one) are stored. Most pair-hours hold one model (a pair has few calls an hour): the leaves
    # were a third of the stored rows. (Stored for all pairs: which pairs have several models over the four weeks
    # a read asks about is known only when it reads.)
    return f"""
        SELECT subject, h, requests, attempts, failed_attempts, cost_usd, model FROM (
            SELECT *, max(model) OVER (PARTITION BY
                       if(position(subject, '{MODEL_MARK}') > 0,
                          substring(subject, 1, position(subject, '{MODEL_MARK}') - 1), subject), h) AS pair_model
            FROM ({_by_key(hour, values)}))
        WHERE position(subject, '{MODEL_MARK}') = 0 OR pair_model = ''"""


# The stored rows in the refresh's shape: (subject, hour index from `a`, requests, attempts, failed, USD) as
# Float64, the newest computation of each hour only (FINAL collapses two refreshes that stored one at once).
# Pairs (feature × customer, up to features × customers of them) only the `pairs` costliest over the range,
# ranked here, on exact dollars, ties by name: most of the rows are pairs the refresh does not learn. Leaves
# (feature × customer × model) only of pairs served by two models or more over the range (a pair's only model
# is the pair: the same numbers, the same verdicts), the `leaves` costliest of those; a leaf's hour is its stored
# row, or its pair's row where that names the leaf's model (the pair's only model that hour: `by_subject_sql`).
# In no order: the refresh places each row by its subject and hour (sorting ~10^6 rows took a third of the read).
_NEWEST = f"""(hour, mark) IN (SELECT hour, max(mark) FROM {TABLE}
                               WHERE subject = '' AND hour >= {{a:DateTime64(3, 'UTC')}}
                                     AND hour < {{b:DateTime64(3, 'UTC')}} GROUP BY hour)"""
_RANGE = "hour >= {a:DateTime64(3, 'UTC')} AND hour < {b:DateTime64(3, 'UTC')}"
# every subject's rows, a pair's row twice where it names its model: as the pair, and as that leaf (`name`, not
# `subject`: an alias of a column's name would replace the column in this statement's WHERE)
_ROWS = f"""(SELECT arrayJoin(if(model = '', [subject], [subject, concat(subject, '{MODEL_MARK}', model)])) AS name,
                    hour, requests, attempts, failed_attempts, cost_usd
             FROM {TABLE} FINAL
             WHERE {_RANGE} AND subject != '' AND {_NEWEST})"""
READ_SQL = f"""
    SELECT name AS subject, toUInt32(dateDiff('hour', {{a:DateTime64(3, 'UTC')}}, hour)) AS h,
           toFloat64(requests) AS requests, toFloat64(attempts) AS attempts,
           toFloat64(failed_attempts) AS failed, toFloat64(cost_usd) AS cost
    FROM {_ROWS}
    WHERE position(name, '{PAIR_MARK}') = 0 OR name IN (
              SELECT subject FROM {TABLE} FINAL
              WHERE {_RANGE} AND position(subject, '{PAIR_MARK}') > 0 AND position(subject, '{MODEL_MARK}') = 0
                    AND {_NEWEST}
              GROUP BY subject ORDER BY sum(cost_usd) DESC, subject LIMIT {{pairs:UInt64}}) OR name IN (
              SELECT name FROM (
                  SELECT name, usd, count() OVER (PARTITION BY pair) AS models
                  FROM (SELECT name, substring(name, 1, position(name, '{MODEL_MARK}') - 1) AS pair,
                               sum(cost_usd) AS usd
                        FROM {_ROWS}
                        WHERE position(name, '{MODEL_MARK}') > 0
                        GROUP BY name))
              WHERE models > 1 ORDER BY usd DESC, name LIMIT {{leaves:UInt64}})
    SETTINGS do_not_merge_across_partitions_select_final = 1"""


def read(reader: ArrowQuerier, *, start: datetime, end: datetime, pairs: int | None = None,
         leaves: int | None = None) -> pa.Table:
    """The stored subject-hours of ``[start, end)``, of every team, feature and customer, of the ``pairs``
    costliest feature × customer pairs and of the ``leaves`` costliest feature × customer × model of the pairs
    served by two models or more in that range (None: all; call :func:`ensure` for that range first)."""
    return reader.query_arrow(READ_SQL, {"a": sql_time(start), "b": sql_time(end),
                                         "pairs": 2**63 if pairs is None else pairs,
                                         "leaves": 2**63 if leaves is None else leaves})


def ensure(store: Store, reader: ArrowQuerier, ranges: Iterable[tuple[datetime, datetime]]) -> int:
    """Compute and store every hour of ``ranges`` (whole hours) that has no stored computation or whose minutes
    were marked since; how many hours were computed. Reads go to ``reader``, the inserts to ``store``."""
    wanted = sorted({start + k * _HOUR for start, end in ranges
                     for k in range(int((end - start) / _HOUR))})
    if not wanted:
        return 0
    bounds = {"a": sql_time(wanted[0]), "b": sql_time(wanted[-1] + _HOUR)}
    # the marks first: whatever is marked after this read is computed again by a later refresh
    marks = _by_hour(reader.query_arrow("""
        SELECT toStartOfHour(minute) AS hour, max(marked_at) AS mark FROM rollup_marks
        WHERE minute >= {a:DateTime64(3, 'UTC')} AND minute < {b:DateTime64(3, 'UTC')} GROUP BY hour""", bounds))
    stored = _by_hour(reader.query_arrow(f"""
        SELECT hour, max(mark) AS mark FROM {TABLE}
        WHERE subject = '' AND hour >= {{a:DateTime64(3, 'UTC')}} AND hour < {{b:DateTime64(3, 'UTC')}}
        GROUP BY hour""", bounds))
    stale = [h for h in wanted if h not in stored or marks.get(h, _NO_MARK) > stored[h]]
    for run in _runs(stale):
        _compute(store, reader, run, marks)
    return len(stale)


def _compute(store: Store, reader: ArrowQuerier, run: list[datetime], marks: dict[datetime, datetime]) -> None:
    """One read for the consecutive hours of ``run``; one insert of their rows and of each hour's mark row."""
    table = reader.query_arrow(by_subject_sql("toInt64(toUnixTimestamp(period))", as_float=False),
                               {"a": sql_time(run[0]), "b": sql_time(run[-1] + _HOUR)})
    if not table.num_rows:
        table = pa.table({"subject": pa.array([], pa.string()), "h": pa.array([], pa.int64()),
                          **{n: pa.array([], pa.uint64()) for n in ("requests", "attempts", "failed_attempts")},
                          "cost_usd": pa.array([], _MONEY), "model": pa.array([], pa.string())})
    # per row, its hour's mark (a run is a day of hours at most: one comparison per hour)
    epochs = np.concatenate([table["h"].to_numpy().astype(np.int64),
                             np.array([int(h.timestamp()) for h in run], dtype=np.int64)])
    mark_ms = np.zeros(len(epochs), dtype=np.int64)
    for h in run:
        mark_ms[epochs == int(h.timestamp())] = int(marks.get(h, _NO_MARK).timestamp() * 1000)

    def column(name: str, type_: pa.DataType, empty: object) -> pa.Array:
        return pa.concat_arrays([table[name].combine_chunks().cast(type_), pa.array([empty] * len(run), type_)])

    store.insert_arrow(TABLE, pa.table({
        "hour": pa.array(epochs, pa.int64()).cast(pa.timestamp("s", tz="UTC")),
        "subject": column("subject", pa.string(), ""),
        "model": column("model", pa.string(), ""),
        **{name: column(name, pa.uint64(), 0) for name in ("requests", "attempts", "failed_attempts")},
        "cost_usd": column("cost_usd", _MONEY, Decimal(0)),
        "mark": pa.array(mark_ms, pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
    }))


def _runs(hours: list[datetime]) -> list[list[datetime]]:
    runs: list[list[datetime]] = []
    for h in hours:
        if runs and h - runs[-1][-1] == _HOUR and len(runs[-1]) < RUN_HOURS:
            runs[-1].append(h)
        else:
            runs.append([h])
    return runs


def _by_hour(table: pa.Table) -> dict[datetime, datetime]:
    if not table.num_rows:
        return {}
    return {_utc(h): _utc(m) for h, m in zip(table["hour"].to_pylist(), table["mark"].to_pylist(), strict=True)}


def _utc(at: datetime | int) -> datetime:
    """A DateTime from Arrow: seconds since the epoch (chdb's DateTime is uint32) or a timestamp."""
    if isinstance(at, int):
        return datetime.fromtimestamp(at, timezone.utc)
    return at.replace(tzinfo=timezone.utc) if at.tzinfo is None else at.astimezone(timezone.utc)
