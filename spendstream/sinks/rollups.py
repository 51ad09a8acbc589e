"""Windows as data: exact rollups of the deduplicated raw events, kept current as events arrive.

Three grains, chosen per question. A rollup is only worth its upkeep where its rows
hold many events, and customers (tens of thousands, most of them sparse) keep any
grain that includes them close to the size of raw (measured in BENCHMARKS.md, "Which
grains"): at 10M events over four weeks, minute × team × feature × model holds 2.3
events a row, hour × customer × team × feature 1.6, while hour × every key but
customer holds 17 and a day of that 173. So customers get their own rollup, and every
question without customers reads the compact hours:

- ``usage_minutes``: per minute × team, feature, environment, provider, model, service —
  what sub-hour windows read (detectors' recent windows, 1-minute dashboard panels,
  reconcile against the emitters' per-minute ledger, burstiness);
- ``usage_hours``: per hour × team, feature, environment, provider, model, mode,
  service tier, deployment, service — what everything over hours, days and weeks
  reads (reports, budgets, retry waste, the advisor's spend, baselines);
- ``customer_hours``: per hour × customer, team, feature, environment, provider, model —
  the keys of the showback/chargeback views (``cost_hourly``, ``cost_daily``,
  ``cost_monthly``): what customer questions read.

**How they stay exact.** Rollups are never incremented; a period is *recomputed* from
``usage_events FINAL`` and replaces what was there, so re-deliveries, conflicting
copies (never applied), late events and re-pricing cannot make a rollup drift:

1. After a batch's rows are durable, the writer *marks* the minutes it touched
   (``rollup_marks``; the mark's time is the server's ``now64()`` at insert).
2. The maintainer (one per worker group: a faust leader timer) finds periods whose
   latest mark is newer than the mark they were last computed for (``rollup_done``),
   recomputes them from raw, and records the mark it computed for. Rows marked before
   that mark were durable before it, so they are in the recomputation; rows marked
   later make the period pending again. Rollup rows are versioned by that mark, so of
   two maintainers racing (a leader handing over) the newer computation stands.
3. Readers take periods before the rollup's *watermark* — the earliest pending period,
   and at most the current minute (hour) — from the rollup, and the rest from raw. A
   late event makes its period pending, so for the moment until it is recomputed the
   readers read raw from there: answers stay exact while the rollup catches up.

Hours are computed once closed (and again when a late event marks one); the open hour
is read from raw. The live minutes of ``usage_minutes`` are kept current from 10-second
slices while they fill (:mod:`spendstream.sinks.live_slices`) and finished from them once
quiet (from raw where a slice is not current, or the minute is no longer live). A store
created before rollups is backfilled by the maintainer, oldest first: until then the
watermark stays back and readers read raw.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pyarrow as pa

from spendstream.sinks.store import Store, StoreError, TextQuerier, query_result, sql_time

log = logging.getLogger(__name__)

MONEY = "Nullable(Decimal(38, 18))"
REQUESTS = "AggregateFunction(uniqExact, String)"

MINUTE_KEYS = ("team", "feature", "environment", "provider", "model", "service")
HOUR_KEYS = ("team", "feature", "environment", "provider", "model", "mode", "service_tier", "deployment", "service")
CUSTOMER_KEYS = ("team", "feature", "customer", "environment", "provider", "model")


@dataclass(frozen=True, slots=True)
class Measure:
    name: str
    type: str
    of_raw: str      # the aggregate over raw usage_events rows
    of_rollup: str   # the same answer over rollup rows (or a mix of both: see ``columns``)


MEASURES: tuple[Measure, ...] = (
    Measure("attempts", "UInt64", "count()", "sum(attempts)"),
    Measure("requests", REQUESTS, "uniqExactState(request_id)", "uniqExactMerge(requests)"),
    Measure("successful_requests", REQUESTS, "uniqExactStateIf(request_id, status = 'ok')",
            "uniqExactMerge(successful_requests)"),
    Measure("retries", "UInt64", "countIf(attempt > 1)", "sum(retries)"),
    Measure("max_attempt", "UInt32", "max(attempt)", "max(max_attempt)"),
    Measure("failed_attempts", "UInt64", "countIf(status != 'ok')", "sum(failed_attempts)"),
    Measure("errors", "UInt64", "countIf(status = 'error')", "sum(errors)"),
    Measure("timeouts", "UInt64", "countIf(status = 'timeout')", "sum(timeouts)"),
    Measure("rate_limited", "UInt64", "countIf(status = 'rate_limited')", "sum(rate_limited)"),
    Measure("invalid_outputs", "UInt64", "countIf(status = 'invalid_output')", "sum(invalid_outputs)"),
    Measure("input_tokens", "UInt64", "sum(input_tokens)", "sum(input_tokens)"),
    Measure("cached_input_tokens", "UInt64", "sum(cached_input_tokens)", "sum(cached_input_tokens)"),
    Measure("cache_write_tokens", "UInt64", "sum(cache_write_tokens)", "sum(cache_write_tokens)"),
    Measure("cache_write_1h_tokens", "UInt64", "sum(cache_write_1h_tokens)", "sum(cache_write_1h_tokens)"),
    Measure("output_tokens", "UInt64", "sum(output_tokens)", "sum(output_tokens)"),
    Measure("reasoning_tokens", "UInt64", "sum(reasoning_tokens)", "sum(reasoning_tokens)"),
    Measure("cost_usd", MONEY, "sumIf(total_cost, priced)", "sum(cost_usd)"),
    Measure("list_cost_usd", MONEY, "sumIf(list_cost, priced)", "sum(list_cost_usd)"),
    Measure("input_cost_usd", MONEY, "sumIf(input_cost, priced)", "sum(input_cost_usd)"),
    Measure("output_cost_usd", MONEY, "sumIf(output_cost, priced)", "sum(output_cost_usd)"),
    Measure("failed_cost_usd", MONEY, "sumIf(total_cost, status != 'ok' AND priced)", "sum(failed_cost_usd)"),
    Measure("unpriced_attempts", "UInt64", "countIf(NOT priced)", "sum(unpriced_attempts)"),
)


@dataclass(frozen=True, slots=True)
class Rollup:
    name: str          # the table
    period: str        # its period column
    bucket: str        # the period of a raw row, as SQL over `ts`
    step: timedelta
    keys: tuple[str, ...]
    watermark: str = ""  # its column in the rollup_watermarks view (default: the table's name)
    measures: tuple[Measure, ...] = MEASURES
    where: str = "1"     # which raw rows it rolls up (SQL over usage_events' columns)
    key_types: tuple[tuple[str, str], ...] = ()  # a key's column type where it is not a low-cardinality string
    min_recompute_s: float = 0.0  # at least this long between two recomputations of one period
    # which groups of a period it keeps (a condition on aggregates of raw rows): a rollup of the rare, say the
    # request shapes repeated within a period, stays small where one of everything would be raw's size. A
    # partial period is then another question (it has fewer repeats): ``windows.windowed`` refuses such a rollup.
    having: str = "1"
    of_mark: str = ""  # SQL: its period of a rollup_marks row, where not the ``floor`` of its minute
    # its sort key, where not (period, keys…): the period and every key, in another order (a reader that asks
    # for a few keys' periods reads their rows, not every key's of those periods)
    order: tuple[str, ...] = ()
    # a table of (minute, marked_at) whose marks reopen its periods too, besides rollup_marks (the usage events')
    extra_marks: str = ""
    # SQL that computes its rows for ``{since} <= ts < {until}`` (whole periods), where not a grouping of raw usage
    # events: (period, keys…, measures…) in the table's order, without the version
    source: str = ""

    @property
    def watermark_column(self) -> str:
        return self.watermark or self.name

    @property
    def marks(self) -> str:
        """Where its marks come from: ``rollup_marks``, or that and ``extra_marks`` (a subquery)."""
        if not self.extra_marks:
            return "rollup_marks"
        return (f"(SELECT minute, marked_at FROM rollup_marks UNION ALL "
                f"SELECT minute, marked_at FROM {self.extra_marks})")

    @property
    def period_of_mark(self) -> str:
        """SQL: the period of this rollup a ``rollup_marks`` row (its ``minute``) falls in."""
        if self.of_mark:
            return self.of_mark
        return "minute" if self.step == timedelta(minutes=1) else f"{self.floor}(minute)"

    @property
    def floor(self) -> str:
        """The ClickHouse function giving the start of the period an instant is in."""
        return {timedelta(minutes=1): "toStartOfMinute", timedelta(minutes=5): "toStartOfFiveMinutes",
                timedelta(minutes=10): "toStartOfTenMinutes", timedelta(hours=1): "toStartOfHour",
                timedelta(days=1): "toStartOfDay"}[self.step]

    def key_type(self, key: str) -> str:
        return dict(self.key_types).get(key, "Nullable(String)" if key == "customer"
                                        else "LowCardinality(Nullable(String))")


MINUTES = Rollup("usage_minutes", "minute", "toStartOfMinute(ts)", timedelta(minutes=1), MINUTE_KEYS)
HOURS = Rollup("usage_hours", "hour", "toStartOfHour(ts)", timedelta(hours=1), HOUR_KEYS)
CUSTOMER_HOURS = Rollup("customer_hours", "hour", "toStartOfHour(ts)", timedelta(hours=1), CUSTOMER_KEYS)
ROLLUPS = (MINUTES, HOURS, CUSTOMER_HOURS)

# The grains migrations 10 and 11 created (migration 12 replaced them): those migrations still
# build what they built, so that a store upgrades through the same steps whatever its age.
V10_MINUTES = Rollup("usage_minutes", "minute", "toStartOfMinute(ts)", timedelta(minutes=1),
                     ("team", "feature", "environment", "provider", "model", "mode", "service_tier", "deployment",
                      "service"), watermark="minutes")
V10_HOURS = Rollup("usage_hours", "hour", "toStartOfHour(ts)", timedelta(hours=1),
                   ("team", "feature", "customer", "environment", "provider", "model", "mode", "service_tier",
                    "deployment", "service"), watermark="hours")


# -- schema (used by migration 10) --------------------------------------------------------

def table_ddl(rollup: Rollup, *, name: str | None = None) -> str:
    keys = ",\n".join(f"            {k} {rollup.key_type(k)}" for k in rollup.keys)
    measures = ",\n".join(f"            {m.name} {m.type}" for m in rollup.measures)
    return f"""
        CREATE TABLE IF NOT EXISTS {name or rollup.name} (
            {rollup.period} DateTime('UTC'),
{keys},
{measures},
            version DateTime64(3, 'UTC') COMMENT 'the mark this row was computed for (rollup_done)'
        )
        ENGINE = ReplacingMergeTree(version)
        PARTITION BY toYYYYMM({rollup.period})
        ORDER BY ({", ".join(_sort_key(rollup))})
        SETTINGS allow_nullable_key = 1
        """


def _sort_key(rollup: Rollup) -> tuple[str, ...]:
    """``rollup``'s sort key: its ``order``, else the period, then the keys. Rows that share it are versions of one
    row (``ReplacingMergeTree``), so it holds the period and every key, once each."""
    if not rollup.order:
        return (rollup.period, *rollup.keys)
    if sorted(rollup.order) != sorted((rollup.period, *rollup.keys)):
        raise ValueError(f"{rollup.name}'s order {rollup.order} is not its period and keys, once each")
    return rollup.order


def regroup(source: Rollup, target: Rollup, *, into: str) -> str:
    """``INSERT`` ``source``'s rows into ``into`` (a table of ``target``'s shape), grouped by ``target``'s
    coarser keys: counts, tokens and money summed, ``max_attempt`` maxed, request sets merged. The
    same rows a recomputation from raw would give, without raw (which may have expired)."""
    if source.step != target.step or not set(target.keys) <= set(source.keys):
        raise ValueError(f"{target.name} is not a coarser grouping of {source.name}")
    keys = ", ".join(target.keys)
    measures = ", ".join(m.of_rollup.replace("uniqExactMerge(", "uniqExactMergeState(") + f" AS {m.name}"
                         for m in source.measures)
    return (f"INSERT INTO {into} ({target.period}, {keys}, {', '.join(m.name for m in source.measures)}, version) "
            f"SELECT {source.period}, {keys}, {measures}, max(version) FROM {source.name} FINAL "
            f"GROUP BY {source.period}, {keys}")


# One row per minute once merged; the index finds the recent marks without reading the rest.
MARKS_DDL = """
    CREATE TABLE IF NOT EXISTS rollup_marks (
        minute DateTime('UTC'),
        marked_at DateTime64(3, 'UTC') DEFAULT now64(3),
        INDEX by_mark marked_at TYPE minmax GRANULARITY 1
    )
    ENGINE = ReplacingMergeTree(marked_at)
    ORDER BY minute
    """

# Every insert into usage_events marks its minutes, whoever makes it (a re-pricing, a hand-written
# INSERT): a safety net. The writer also marks after its rows are durable, which the
# maintainer's reasoning relies on (a view's mark may be seen before the rows it was made for).
MARKS_MV_DDL = """
    CREATE MATERIALIZED VIEW IF NOT EXISTS rollup_marks_mv TO rollup_marks
    AS SELECT DISTINCT toStartOfMinute(ts) AS minute FROM usage_events
    """

# Per rollup, a mark time all marks up to which are done: the pending search starts there.
STATE_DDL = """
    CREATE TABLE IF NOT EXISTS rollup_state (
        rollup LowCardinality(String),
        through DateTime64(3, 'UTC')
    )
    ENGINE = ReplacingMergeTree(through)
    ORDER BY rollup
    """

DONE_DDL = """
    CREATE TABLE IF NOT EXISTS rollup_done (
        rollup LowCardinality(String),
        period DateTime('UTC'),
        mark DateTime64(3, 'UTC')
    )
    ENGINE = ReplacingMergeTree(mark)
    ORDER BY (rollup, period)
    """


def _pending_sql(rollup: Rollup) -> str:
    """Periods of ``rollup`` whose latest mark is newer than the one they were computed for: (period, mark).

    Only marks after the rollup's ``through`` are looked at (all before it are done), so
    the search costs what was marked lately, not what history holds.
    """
    period = rollup.period_of_mark
    recent = (f"{rollup.marks} WHERE marked_at > (SELECT max(through) FROM rollup_state "
              f"WHERE rollup = '{rollup.name}')")
    # a period never computed joins to the default 1970 mark (join_use_nulls is off)
    return (f"SELECT m.period AS period, m.mark AS mark, d.done AS done "
            f"FROM (SELECT {period} AS period, max(marked_at) AS mark FROM {recent} GROUP BY period) AS m "
            f"LEFT JOIN (SELECT period, max(mark) AS done FROM rollup_done WHERE rollup = '{rollup.name}' "
            f"AND period IN (SELECT {period} FROM {recent}) GROUP BY period) AS d ON m.period = d.period "
            f"WHERE m.mark > d.done")


_NEVER = "toDateTime('2106-01-01 00:00:00', 'UTC')"


def watermark_sql(rollup: Rollup) -> str:
    """SQL: the start of the first period readers must take from raw: the rollup's earliest pending
    period, and at most the current (open) one."""
    return (f"least(ifNull((SELECT minOrNull(period) FROM ({_pending_sql(rollup)})), {_NEVER}), "
            f"{rollup.floor}(now('UTC')))")


def watermarks(querier: TextQuerier, grains: Sequence[Rollup]) -> dict[str, datetime]:
    """Each rollup's ``watermark_sql``, for several rollups in one statement: name -> watermark.

    For a reader that asks several rollups (a detection pass): ``watermark_sql`` reads
    ``rollup_state`` twice, ``rollup_marks`` twice and ``rollup_done`` once per rollup, ~12 ms of
    fixed cost each on 2 cores, while this reads each of them once for all. Pass the values to
    ``windows.windowed``/``windows.layered``/``columns``: they stand for the SQL they replace,
    computed a moment earlier (an event marked in between is read next pass, as one marked during a
    statement is).
    """
    if not grains:
        return {}
    opens = ", ".join(f"('{r.name}', {r.floor}(now('UTC')))" for r in grains)
    rows = query_result(querier, f"""
        {_watermarks_with(grains)}
        SELECT g.1, toString(least(transform(g.1, pend.1, pend.2, {_NEVER}), g.2))
        FROM (SELECT arrayJoin([{opens}]) AS g)""").rows
    return {name: _as_datetime(at) for name, at in rows}


def _watermarks_with(grains: Sequence[Rollup]) -> str:
    """``WITH th, pend``: every grain's ``through`` and its first pending period, each table read once for all."""
    names = [r.name for r in grains]
    listed = ", ".join(f"'{n}'" for n in names)
    epoch = "toDateTime64(0, 3, 'UTC')"
    # every rollup's `through` at once (a rollup never maintained has none: all its marks are recent)
    through = (f"(SELECT (groupArray(name), groupArray(t)) FROM (SELECT toString(rollup) AS name, max(through) "
               f"AS t FROM rollup_state WHERE rollup IN ({listed}) GROUP BY name))")  # (`rollup`: GROUP BY ROLLUP)
    since = f"if(length(th.1) < {len(names)}, {epoch}, arrayMin(th.2))"
    recent = _marks_of(grains, lambda _: since, lambda _: f"HAVING mark > transform(grain, th.1, th.2, {epoch})")
    # a period never computed joins to the default 1970 mark (join_use_nulls is off)
    pending = (f"SELECT m.grain AS grain, min(m.period) AS first FROM ({recent}) AS m "
               f"LEFT JOIN (SELECT toString(rollup) AS grain, period, max(mark) AS done FROM rollup_done "
               f"WHERE (rollup, period) IN (SELECT grain, period FROM ({recent})) GROUP BY grain, period) AS d "
               f"ON m.grain = d.grain AND m.period = d.period WHERE m.mark > d.done GROUP BY m.grain")
    return f"WITH {through} AS th, (SELECT (groupArray(grain), groupArray(first)) FROM ({pending})) AS pend"


def watermarks_select(grains: Sequence[Rollup], columns: Sequence[str] | None = None) -> str:
    """SQL: one row, a column per grain (``columns``, else each grain's name) holding its ``watermark_sql``, the
    state tables read once for all (``watermarks``' statement): ~one watermark's cost (~30 ms at 5M) for three.
    For a view that readers name wherever they need a watermark: ClickHouse analyses a scalar subquery again
    in every scope that names it, and a view's is cheap to name again where the watermark's own SQL is not."""
    names = columns or [r.name for r in grains]
    each = ", ".join(f"least(transform('{r.name}', pend.1, pend.2, {_NEVER}), {r.floor}(now('UTC'))) AS {name}"
                     for r, name in zip(grains, names, strict=True))
    return f"{_watermarks_with(grains)} SELECT {each}"


def _marks_of(grains: Sequence[Rollup], since: Callable[[Sequence[Rollup]], str],
              having: Callable[[Sequence[Rollup]], str]) -> str:
    """SQL: (grain, period, mark) of the marks that reopen a period of one of ``grains``, the latest per source,
    after ``since(its grains)`` and filtered by ``having(its grains)``: ``rollup_marks`` for every grain, read once
    for all, and each ``extra_marks`` table for its own grains. A period marked in two sources is two rows
    (regrouping them, or one filter naming every grain per source, cost the idle pass ~30-45 ms at 5M)."""
    arms: dict[str, list[Rollup]] = {"rollup_marks": list(grains)}
    for r in grains:
        if r.extra_marks:
            arms.setdefault(r.extra_marks, []).append(r)
    return " UNION ALL ".join(
        f"SELECT p.1 AS grain, p.2 AS period, max(marked_at) AS mark FROM {table} "
        f"ARRAY JOIN [{', '.join(f'({r.name!r}, {r.period_of_mark})' for r in of)}] AS p "
        f"WHERE marked_at > {since(of)} GROUP BY grain, period {having(of)}" for table, of in arms.items())


def watermark_of(rollup: Rollup, marks: Mapping[str, datetime] | None) -> str:
    """SQL: ``rollup``'s watermark as ``watermarks`` gave it in ``marks``, else ``watermark_sql`` (computed here)."""
    if marks is None or rollup.name not in marks:
        return watermark_sql(rollup)
    return f"toDateTime('{marks[rollup.name]:%Y-%m-%d %H:%M:%S}', 'UTC')"


def watermarks_view(grains: Sequence[Rollup]) -> str:
    """Per rollup, its ``watermark_sql``: a column per rollup, for people and dashboards."""
    columns = ",\n           ".join(f"{watermark_sql(r)} AS {r.watermark_column}" for r in grains)
    return f"""
    CREATE OR REPLACE VIEW rollup_watermarks AS
    SELECT {columns}
    """


WATERMARKS_VIEW = watermarks_view(ROLLUPS)


def backfill_marks() -> str:
    """Marks for every minute already in raw (a store made before rollups): the maintainer backfills them."""
    return "INSERT INTO rollup_marks (minute) SELECT DISTINCT toStartOfMinute(ts) FROM usage_events"


def columns(rollup: Rollup, bucket: str, measures: Sequence[str] | None = None, *,
            where_rollup: str = "1", where_raw: str = "1", marks: Mapping[str, datetime] | None = None) -> str:
    """A subquery with the rollup's rows before its watermark and raw rows after, per ``bucket``.

    ``bucket`` is SQL over a column ``t`` (the period start, e.g. ``toDate(t)``); the
    subquery has ``period``, the rollup's keys, and the measures as mergeable columns
    (states for ``requests``), to be grouped by the caller with ``Measure.of_rollup``.
    ``where_rollup``/``where_raw`` filter each side (in terms of the keys, and ``t``/``ts``); ``marks``:
    watermarks computed beforehand (``watermarks``), else it is computed here.
    """
    wanted = [m for m in rollup.measures if measures is None or m.name in measures]
    if rollup.having != "1" and bucket != "{t}":
        raise ValueError(f"{rollup.name} keeps only some groups of a period: read it by its own periods")
    keys = ", ".join(rollup.keys)
    # this rollup's watermark alone: the view computes every rollup's, which costs more than most reads
    watermark = f"({watermark_of(rollup, marks)})"
    from_rollup = ", ".join(m.name for m in wanted)
    from_raw = ", ".join(f"{m.of_raw} AS {m.name}" for m in wanted)
    return (
        f"(SELECT {_bucket(bucket, rollup.period)} AS period, "
        f"{keys}, {from_rollup} FROM {rollup.name} FINAL "
        f"WHERE {rollup.period} < {watermark} AND {where_rollup.replace('{t}', rollup.period)} "
        f"UNION ALL "
        f"SELECT {_bucket(bucket, rollup.bucket)} AS period, {keys}, {from_raw} FROM usage_events FINAL "
        f"WHERE ts >= {watermark} AND {where_raw.replace('{t}', 'ts')} AND ({rollup.where}) "
        f"GROUP BY period, {keys}{having_sql(rollup)})"
    )


def having_sql(rollup: Rollup) -> str:
    """`` HAVING …`` for a raw ``GROUP BY`` of ``rollup``'s periods and keys, or nothing."""
    return "" if rollup.having == "1" else f" HAVING {rollup.having}"


def _bucket(bucket: str, of: str) -> str:
    return bucket.replace("{t}", of)


def cost_view(name: str, bucket: str, rollup: Rollup = CUSTOMER_HOURS) -> str:
    """Showback/chargeback per time bucket and attribution key: ``customer_hours`` before its watermark, raw after.

    The same columns, and to the last digit the same answers, as the raw view it replaces
    (migration 3's ``_cost_view``); ``bucket`` is SQL over ``{t}``, an hour's start.
    """
    keys = "team, feature, customer, environment, provider, model"
    measures = {m.name: m for m in MEASURES}
    answer = ", ".join(f"{measures[name].of_rollup} AS {name}" for name in (
        "requests", "attempts", "successful_requests", "input_tokens", "output_tokens"))
    return f"""
        CREATE OR REPLACE VIEW {name} AS
        SELECT period, {keys}, {answer},
               sum(cost_usd) AS cost_usd, sum(list_cost_usd) AS list_cost_usd,
               sum(unpriced_attempts) AS unpriced_attempts
        FROM {columns(rollup, bucket, ["requests", "attempts", "successful_requests", "input_tokens",
                                      "output_tokens", "cost_usd", "list_cost_usd", "unpriced_attempts"])}
        GROUP BY period, {keys}
        """


def retry_waste_view(rollup: Rollup = HOURS) -> str:
    """Per day, team and feature: what failed attempts cost (migration 5's columns and answers)."""
    return f"""
    CREATE OR REPLACE VIEW retry_waste_daily AS
    SELECT period AS day, team, feature,
           sum(attempts) AS attempts, sum(failed_attempts) AS failed_attempts, sum(retries) AS retries,
           sum(failed_cost_usd) AS wasted_cost_usd, sum(cost_usd) AS cost_usd,
           sum(rate_limited) AS rate_limited, sum(errors) AS errors, sum(timeouts) AS timeouts,
           sum(invalid_outputs) AS invalid_outputs
    FROM {columns(rollup, "toDate({t})", ["attempts", "failed_attempts", "retries", "failed_cost_usd", "cost_usd",
                                              "rate_limited", "errors", "timeouts", "invalid_outputs"])}
    GROUP BY day, team, feature
    """


# -- the writer's side: marks --------------------------------------------------------------

MARK_SCHEMA = pa.schema([("minute", pa.timestamp("s", tz="UTC"))])


def minutes_of(ts: pa.Array | pa.ChunkedArray) -> pa.Table:
    """The distinct minutes of a batch's timestamps, as rows for ``rollup_marks``."""
    import pyarrow.compute as pc

    minutes = pc.unique(pc.floor_temporal(ts, unit="minute").cast(pa.timestamp("s", tz="UTC")))
    return pa.table({"minute": minutes}, schema=MARK_SCHEMA)


def all_grains() -> tuple[Rollup, ...]:
    """Every rollup the maintainer keeps, in the order it recomputes them: ``ROLLUPS``, the readers' shapes,
    ``READER_GRAINS``, ``DETECTOR_GRAINS``, ``PANEL_GRAINS``, ``gpu_views.GPU_GRAINS`` and ``key_lists.LIST_GRAINS``
    (whose lists are computed from the day rows recomputed just before them)."""
    from spendstream.sinks.gpu_views import GPU_GRAINS  # its source is the allocation's SQL, defined there
    from spendstream.sinks.key_lists import LIST_GRAINS  # the day lists, computed from key_days (after it)
    from spendstream.sinks.shapes import SHAPES  # shapes defines its rollups with this module's types

    return (*ROLLUPS, *SHAPES, *READER_GRAINS, *DETECTOR_GRAINS, *PANEL_GRAINS, *GPU_GRAINS, *LIST_GRAINS)


def forget_periods(store: Store, minutes: pa.Table) -> None:
    """Empty every rollup's periods that hold these minutes, which must already be marked.

    A recomputation replaces the rows of the keys it finds in raw; a key that is gone from a period stays.
    Keys go only when rows are rewritten: a re-priced event leaves ``unpriced_hours`` (its model now has a
    price), moves to another ``override_id`` or leaves a rollup whose filter names ``priced``. The marked
    periods are read from raw until recomputed (the watermark stops before them), so emptying them changes no
    answer; the minutes are marked again afterwards, so that a pass that recomputed one of them between the
    first mark and the delete recomputes it once more.
    """
    from spendstream.sinks import live_slices

    if minutes.num_rows == 0:
        return
    listed = ", ".join(f"toDateTime('{m:%Y-%m-%d %H:%M:%S}', 'UTC')" for m in minutes["minute"].to_pylist())
    # Every delete is started before any is waited for: a synchronous one waits idle until the engine's
    # background pool schedules its mutation, and one after another those waits added up (BENCHMARKS.md,
    # "Session s14"); started together, they run side by side and the waits overlap.
    grains = all_grains()
    for rollup in grains:
        store.command(f"DELETE FROM {rollup.name} WHERE {rollup.period} IN "
                      f"(SELECT DISTINCT {rollup.period_of_mark} FROM (SELECT arrayJoin([{listed}]) AS minute)) "
                      f"SETTINGS lightweight_deletes_sync = 0")
    live_slices.forget(store, listed)
    wait_for_mutations(store, [*(r.name for r in grains), live_slices.LIVE_SLICES.name])
    store.insert_arrow("rollup_marks", live_slices.every_slice_of(minutes["minute"]))  # a live minute's slices too


def wait_for_mutations(store: Store, tables: Sequence[str], *, poll_s: float = 0.02) -> None:
    """Return once no mutation of ``tables`` (in the store's database) is left to run; raise
    :class:`~spendstream.sinks.store.StoreError` with the engine's reason if one fails (it would be retried
    forever, and the rows it was to delete would stay)."""
    listed = ", ".join(f"'{t}'" for t in tables)
    while True:
        left, failed = store.query(f"SELECT count(), anyIf(latest_fail_reason, latest_fail_reason != '') "
                                   f"FROM system.mutations WHERE database = currentDatabase() "
                                   f"AND table IN ({listed}) AND NOT is_done").rows[0]
        if failed:
            raise StoreError(f"a mutation of {', '.join(tables)} failed: {failed}")
        if not int(left):
            return
        time.sleep(poll_s)


# -- the maintainer -------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Maintained:
    periods: int           # periods recomputed, all rollups (live minutes finished from their slices too)
    seconds_behind: float  # how old the oldest minute left pending by this pass is (0 when none)


@dataclass(frozen=True, slots=True)
class Cadence:
    """When a pending period is recomputed (see :func:`due`). Any cadence is exact: a period not yet
    recomputed is read from raw. It only decides what the rollups cost the write path and how soon
    a new event counts in them."""

    quiet_s: float = 1.0          # a period nothing marked for this long is recomputed at once
    live_s: float = 120.0         # minutes ending less than this before the server's clock are live
    live_every_s: float = 5.0     # usage_minutes' live minute still being marked, recomputed from raw this often
    #                               where busy_every_s is 0 (else it is summed from its slices every pass)
    busy_every_s: float = 30.0    # any other period still being marked (a backlog, a late stream): this often;
    #                               0: every pending period at once, a rollup's min_recompute_s too (tests, loads)
    slices_every_s: float = 2.0   # the live slices and the minutes summed from them: at most this often


def due(rollup: Rollup, period: datetime, *, mark: datetime, computed: datetime, now: datetime,
        cadence: Cadence) -> bool:
    """Whether a pending ``period`` of ``rollup`` is recomputed from raw in a pass at server time ``now``.

    ``mark`` is its latest mark, ``computed`` the mark it was last computed for (1970 if never).
    Periods wait until they are closed (the open one is read from raw), except ``usage_minutes``'
    open minute, which readers of recent minutes and the rollup lag wait for. A period that went
    quiet is due; one still being marked is due again only ``busy_every_s`` after it was last
    computed — a backlog that touches the same hour batch after batch would otherwise be
    recomputed from raw every pass while it drains. A live minute of ``usage_minutes`` still being
    marked is not recomputed from raw at all: each pass sums it from its 10-second slices
    (:mod:`spendstream.sinks.live_slices`), and once quiet it is finished from them (``maintain``).
    Other minute grains (``deployment_minutes``) wait like any other closed period: their readers
    (GPU cost allocation over hours and weeks) read a pending minute from raw, and recomputing a
    closed minute every few seconds while a backlog still marks it read all its raw rows each time,
    though most batches bring it none of the rows the grain keeps.
    """
    end = period + rollup.step
    if rollup.name != MINUTES.name and end > now:
        return False
    if cadence.busy_every_s and computed > now - timedelta(seconds=rollup.min_recompute_s):
        return False  # a coarse period (a day) is not recomputed for every late event: readers use finer rollups
    if mark <= now - timedelta(seconds=cadence.quiet_s):
        return True
    live = rollup.name == MINUTES.name and end > now - timedelta(seconds=cadence.live_s)
    if live and cadence.busy_every_s:
        return False  # summed from its slices instead, every pass
    return computed <= now - timedelta(seconds=cadence.live_every_s if live else cadence.busy_every_s)


def maintain(store: Store, *, now: datetime, max_periods: int = 1440, raw_retention_days: int | None = None,
             quiet_s: float | None = None, busy_every_s: float | None = None,
             cadence: Cadence = Cadence()) -> Maintained:
    """Recompute the due pending periods of every rollup (at most ``max_periods`` each, oldest first):
    ``ROLLUPS``, the readers' own grains (:mod:`spendstream.sinks.shapes`) and ``READER_GRAINS``.

    ``cadence`` says which pending periods are due (:func:`due`); ``quiet_s`` and ``busy_every_s``
    override it (``quiet_s=0, busy_every_s=0``: every pending period now, what tests and
    benchmarks that load history use). One pass is two queries (the server's clock, then
    every rollup's pending periods at once), one ``INSERT … SELECT`` per run of close due
    periods (live slices first), one summing the live minutes from their slices (those still being
    marked, and those gone quiet whose slices are current: finished so, without reading their raw
    rows again; one small query over their marks says which), and one insert each into
    ``rollup_done`` and ``rollup_state``.

    A period older than the raw retention is not recomputed (its raw rows are expiring, and a
    recomputation would shrink the rollup to what is left): it is recorded as done, unchanged.
    """
    from spendstream.sinks import live_slices  # it defines its slices with this module's types

    if quiet_s is not None or busy_every_s is not None:
        cadence = Cadence(
            quiet_s=cadence.quiet_s if quiet_s is None else quiet_s,
            live_s=cadence.live_s,
            live_every_s=cadence.live_every_s if busy_every_s is None else min(cadence.live_every_s, busy_every_s),
            busy_every_s=cadence.busy_every_s if busy_every_s is None else busy_every_s,
            slices_every_s=cadence.slices_every_s if busy_every_s is None else min(cadence.slices_every_s,
                                                                                   busy_every_s))
    oldest = now - timedelta(days=raw_retention_days - 1) if raw_retention_days else None
    grains = all_grains()
    # the server's clock: marks carry it, and `through` must trail the marks still in flight
    server_now = _as_datetime(store.query("SELECT now64(3, 'UTC')").scalar())
    pending = _pending(store, (*grains, live_slices.LIVE_SLICES))
    recomputed, done_rows, state_rows, live = _refresh_slices(store, pending, now=server_now, cadence=cadence)
    left_minutes: list[datetime] = []
    for rollup in grains:
        periods = pending.get(rollup.name, [])
        chosen = [(p, m) for p, m, computed in periods
                  if due(rollup, p, mark=m, computed=computed, now=server_now, cadence=cadence)][:max_periods]
        expired = [(p, m) for p, m in chosen if oldest is not None and p < oldest]
        if expired:
            log.warning("%d %s period(s) older than the raw retention were marked again (a late event?); their "
                        "rollup rows are kept as they were", len(expired), rollup.name)
        finished: list[tuple[datetime, datetime]] = []
        waiting: set[tuple[datetime, datetime]] = set()
        if rollup is MINUTES:
            # a live minute gone quiet is finished from its slices when they are current for its marks (the same
            # rows as from raw: live_slices' docstring); one whose slices wait for the next live work waits with them
            finished, waiting = _finish_from_slices(store, [
                (p, m) for p, m in chosen if live_slices.is_live(p, now=server_now, live_s=cadence.live_s)],
                slices_done=[(p, m) for r, p, m in done_rows if r is live_slices.LIVE_SLICES], refreshed=live)
            chosen = [pm for pm in chosen if pm not in waiting]
        from_raw = [pm for pm in chosen if pm not in set(finished) and (oldest is None or pm[0] >= oldest)]
        for run in _runs(from_raw, rollup.step):
            _recompute(store, rollup, run)
            recomputed += len(run)
        done_rows += [(rollup, p, m) for p, m in chosen]
        taken = set(chosen)  # (a backfill can have tens of thousands pending)
        left = [(p, m) for p, m, _ in periods if (p, m) not in taken]
        if rollup is MINUTES:
            # still pending (recomputed from raw once quiet), but current from their slices meanwhile
            built = [(p, m) for p, m in left if live_slices.is_live(p, now=server_now, live_s=cadence.live_s)]
            # (without this pass's live work their slices were left pending: those minutes stand as last summed)
            live_slices.build_minutes(store, [*finished, *(built if live else [])])
            recomputed += len(finished)
            summed = set(built)
            left_minutes = [p for p, m in left if (p, m) not in summed]
        state_rows.append((rollup, _through(server_now, [m for _, m in left])))
    # after the recomputations: a pass cut short leaves its periods pending, to be done again
    _record_done(store, done_rows)
    _advance(store, state_rows)
    behind = 0.0 if not left_minutes else max((now - min(left_minutes)).total_seconds(), 0.0)
    return Maintained(periods=recomputed, seconds_behind=behind)


def _refresh_slices(store: Store, pending: dict[str, list[tuple[datetime, datetime, datetime]]], *, now: datetime,
                    cadence: Cadence) -> tuple[int, list, list, bool]:
    """Recompute the live slices marked since they were last computed (before the minutes summed from them).

    All of them or none: a pass does the live work once ``slices_every_s`` has passed since a pending
    slice was last computed (each pass would cost the writer the current slice's rows every second),
    and then the minutes summed from them are current for their latest marks. Slices of minutes no
    longer live are not kept (their minutes are recomputed from raw): they leave the search once
    ``through`` passes them. Returns the maintainer's tallies so far and whether the live work ran.
    """
    from spendstream.sinks import live_slices

    slices = live_slices.LIVE_SLICES
    fresh = [(p, m, computed) for p, m, computed in pending.get(slices.name, [])
             if live_slices.is_live(p.replace(second=0), now=now, live_s=cadence.live_s)]
    if not fresh:
        return 0, [], [(slices, _through(now, []))], True
    if all(computed > now - timedelta(seconds=cadence.slices_every_s) for _, _, computed in fresh):
        return 0, [], [(slices, _through(now, [m for _, m, _ in fresh]))], False
    chosen = [(p, m) for p, m, _ in fresh]
    for run in _runs(chosen, slices.step, gap=live_slices.SLICES_PER_MINUTE):
        _recompute(store, slices, run)
    return len(chosen), [(slices, p, m) for p, m in chosen], [(slices, _through(now, []))], True


def _finish_from_slices(store: Store, minutes: list[tuple[datetime, datetime]], *,
                        slices_done: list[tuple[datetime, datetime]], refreshed: bool
                        ) -> tuple[list[tuple[datetime, datetime]], set[tuple[datetime, datetime]]]:
    """Of due live ``(minute, mark)``s of ``usage_minutes``: those to finish from their slices, and those to leave
    pending for the next pass's live work.

    A minute is finished from its slices when every mark it has names one of its slices and each of those slices
    was computed for its latest mark (``rollup_done``, or ``slices_done`` by this pass): then the slices hold every
    row marked before the minute's latest mark (:mod:`spendstream.sinks.live_slices`), the rows a recomputation
    from raw would read. One whose slices are behind waits for them when this pass skipped the live work
    (``refreshed`` false: the next does it within ``slices_every_s``), and is recomputed from raw otherwise (a mark
    naming no slice, made by hand or before slices).
    """
    from spendstream.sinks.live_slices import LIVE_SLICES

    if not minutes:
        return [], set()
    listed = ", ".join(f"toDateTime('{p:%Y-%m-%d %H:%M:%S}', 'UTC')" for p, _ in minutes)
    rows = store.query(
        f"SELECT m.minute, m.slice, m.mark, d.done FROM (SELECT minute, slice, max(marked_at) AS mark "
        f"FROM rollup_marks WHERE minute IN ({listed}) GROUP BY minute, slice) AS m "
        f"LEFT JOIN (SELECT period, max(mark) AS done FROM rollup_done WHERE rollup = '{LIVE_SLICES.name}' "
        f"AND toStartOfMinute(period) IN ({listed}) GROUP BY period) AS d ON m.slice = d.period").rows
    done = dict(slices_done)
    behind: set[datetime] = set()
    for minute, slice_, mark, computed in rows:
        minute, slice_, computed = _as_datetime(minute), _as_datetime(slice_), _as_datetime(computed)
        computed = max(computed, done.get(slice_, computed))
        if not minute <= slice_ < minute + timedelta(minutes=1) or computed < _as_datetime(mark):
            behind.add(minute)
    finished = [(p, m) for p, m in minutes if p not in behind]
    waiting = set() if refreshed else {(p, m) for p, m in minutes if p in behind}
    return finished, waiting


def _pending(store: Store, grains: Sequence[Rollup]) -> dict[str, list[tuple[datetime, datetime, datetime]]]:
    """Every rollup's pending periods, oldest first: name -> [(period, mark, computed)].

    The same periods as ``_pending_sql`` gives per rollup (the watermarks view's), in one
    statement that reads the recent marks and ``rollup_done`` once for all rollups: the
    query runs every pass, holding the store the writer waits for.
    """
    def through(r: Rollup) -> str:
        return f"(SELECT max(through) FROM rollup_state WHERE rollup = '{r.name}')"

    def earliest(of: Sequence[Rollup]) -> str:
        listed = ", ".join(f"('{r.name}', {through(r)})" for r in of)
        return f"(SELECT min(t.2) FROM (SELECT arrayJoin([{listed}]) AS t))"

    # a period's latest mark after its rollup's `through`: the latest after the earliest `through`, if that is later
    # (`grain`, not `rollup`, which would read as GROUP BY ROLLUP)
    recent = _marks_of(grains, earliest, lambda of: (
        f"HAVING mark > transform(grain, [{', '.join(repr(r.name) for r in of)}], "
        f"[{', '.join(through(r) for r in of)}], toDateTime64(0, 3, 'UTC'))"))
    # a period never computed joins to the default 1970 mark (join_use_nulls is off)
    sql = (f"SELECT m.grain, m.period, m.mark, d.done FROM ({recent}) AS m "
           f"LEFT JOIN (SELECT rollup AS grain, period, max(mark) AS done FROM rollup_done "
           f"WHERE (rollup, period) IN (SELECT grain, period FROM ({recent})) GROUP BY grain, period) AS d "
           f"ON m.grain = d.grain AND m.period = d.period WHERE m.mark > d.done ORDER BY m.grain, m.period")
    latest: dict[tuple[str, datetime], tuple[datetime, datetime]] = {}
    for name, period, mark, computed in store.query(sql).rows:  # a period marked in two sources: its latest mark
        key, mark = (name, _as_datetime(period)), _as_datetime(mark)
        if key not in latest or mark > latest[key][0]:
            latest[key] = (mark, _as_datetime(computed))
    found: dict[str, list[tuple[datetime, datetime, datetime]]] = {}
    for (name, period), (mark, computed) in latest.items():  # in the query's order: grain, then period
        found.setdefault(name, []).append((period, mark, computed))
    return found


# A mark is made when its insert starts and seen when it ends (a big insert's materialized
# view marks take that long): `through` stays this far behind the server's clock.
_IN_FLIGHT = timedelta(seconds=60)


def _through(server_now: datetime, left_marks: list[datetime]) -> datetime:
    """What is surely done: before any mark still in flight or left pending."""
    through = server_now - _IN_FLIGHT
    if left_marks:
        through = min(through, min(left_marks) - timedelta(milliseconds=1))
    return through


def _advance(store: Store, state: list[tuple[Rollup, datetime]]) -> None:
    rows = ", ".join(f"('{rollup.name}', toDateTime64('{sql_time(through)}', 3, 'UTC'))" for rollup, through in state)
    store.query_text(f"INSERT INTO rollup_state (rollup, through) VALUES {rows}", fmt="CSV")


def _runs(pending: list[tuple[datetime, object]], step: timedelta, *, gap: int = 60,
          longest: timedelta = timedelta(days=1)) -> list[list[tuple]]:
    """Pending periods grouped for one INSERT … SELECT each: close ones together (recomputing the
    up to ``gap`` periods between them is cheaper than another query), at most ``longest`` a run."""
    runs: list[list[tuple]] = []
    for period, mark in pending:
        if runs and period - runs[-1][-1][0] <= gap * step and period - runs[-1][0][0] < longest:
            runs[-1].append((period, mark))
        else:
            runs.append([(period, mark)])
    return runs


def _recompute(store: Store, rollup: Rollup, run: list[tuple]) -> None:
    """Recompute the periods from the first to the last of ``run`` (those between, too: the same rows
    again), versioned by the newest mark of the run."""
    first, last = run[0][0], run[-1][0] + rollup.step
    version = max(_as_datetime(mark) for _, mark in run)
    store.query_text(
        recompute_sql(rollup, "toDateTime64({v:String}, 3, 'UTC')",
                      "{a:DateTime64(3, 'UTC')}", "{b:DateTime64(3, 'UTC')}"),
        {"a": sql_time(first), "b": sql_time(last), "v": sql_time(version)}, fmt="CSV")


def recompute_sql(rollup: Rollup, version: str, since: str, until: str) -> str:
    """``INSERT`` into ``rollup`` its rows computed for ``since <= ts < until`` (SQL; whole periods): from the raw
    events, or from the rollup's ``source``."""
    keys = ", ".join(rollup.keys)
    names = ", ".join(m.name for m in rollup.measures)
    into = f"INSERT INTO {rollup.name} ({rollup.period}, {keys}, {names}, version) "
    if rollup.source:
        computed = rollup.source.replace("{since}", since).replace("{until}", until)
        return f"{into}SELECT *, {version} FROM ({computed})"
    measures = ", ".join(f"{m.of_raw} AS {m.name}" for m in rollup.measures)
    return (f"{into}SELECT {rollup.bucket} AS p, {keys}, {measures}, {version} "
            f"FROM usage_events FINAL WHERE ts >= {since} AND ts < {until} AND ({rollup.where}) "
            f"GROUP BY p, {keys}{having_sql(rollup)}")


def _record_done(store: Store, periods: list[tuple[Rollup, datetime, datetime]]) -> None:
    """Record each period as computed for its mark (``rollup_done``), all rollups in one insert."""
    if not periods:
        return
    rows = ", ".join(f"('{rollup.name}', toDateTime('{p:%Y-%m-%d %H:%M:%S}', 'UTC'), "
                     f"toDateTime64('{sql_time(m)}', 3, 'UTC'))" for rollup, p, m in periods)
    store.query_text(f"INSERT INTO rollup_done (rollup, period, mark) VALUES {rows}", fmt="CSV")


def _as_datetime(value: object) -> datetime:
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value)).replace(tzinfo=timezone.utc)


# -- grains added for the cookbook and the dashboard (issue 17) -----------------------------------------

# Self-hosted usage per minute × deployment and who used it: what GPU cost allocation splits each minute's
# GPU cost by (gpu_views). Only the events that name a deployment (a few percent of traffic), so a week of
# allocation reads a week of these rows rather than a week of raw events; customers stay in the keys
# because the allocation truncates each (team, feature, customer) share, and sums of truncations are exact
# only over the same rows.
DEPLOYMENT_MINUTES = Rollup("deployment_minutes", "minute", "toStartOfMinute(ts)", timedelta(minutes=1),
                            ("deployment", "team", "feature", "customer"),
                            measures=tuple(m for m in MEASURES if m.name in ("input_tokens", "output_tokens")),
                            where="deployment IS NOT NULL")

# Requests per day as numbers, for the day questions that count them (cost per request, requests per team):
# merging a week of the hours' request sets reads as many request ids as the week has requests. A distinct
# count is exact only for the keys it was counted over, so each question's keys are their own grain; read
# through ``reader_views.counted_days_view``. Days are recomputed once closed, and at most every ten minutes
# after a late event (a day of raw events each time); readers take a pending day from the hours meanwhile.
_DAY_MEASURES = tuple(m for m in MEASURES if m.name in ("attempts", "input_tokens", "output_tokens", "cost_usd",
                                                        "unpriced_attempts"))
REQUEST_COUNTS = (Measure("requests", "UInt64", "uniqExact(request_id)", "sum(requests)"),
                  Measure("successful_requests", "UInt64", "uniqExactIf(request_id, status = 'ok')",
                          "sum(successful_requests)"))
TEAM_DAYS = Rollup("team_days", "day", "toStartOfDay(ts)", timedelta(days=1), ("team",),
                   measures=(*_DAY_MEASURES, *REQUEST_COUNTS), min_recompute_s=600.0)
FEATURE_DAYS = Rollup("feature_days", "day", "toStartOfDay(ts)", timedelta(days=1), ("team", "feature"),
                      measures=(*_DAY_MEASURES, *REQUEST_COUNTS), min_recompute_s=600.0)
# Two questions the other rollups cannot answer (they keep no override id and no unpriced reason), which read
# a period of raw events: what negotiated prices saved, and which models have no price. A few dozen rows an
# hour; hours rather than days, so that what is read from raw (after the watermark) is at most the open hour.
OVERRIDE_HOURS = Rollup("override_hours", "hour", "toStartOfHour(ts)", timedelta(hours=1),
                        ("provider", "model", "override_id"),
                        measures=tuple(m for m in MEASURES if m.name in ("attempts", "cost_usd", "list_cost_usd")),
                        where="priced")
UNPRICED_HOURS = Rollup("unpriced_hours", "hour", "toStartOfHour(ts)", timedelta(hours=1),
                        ("provider", "model", "unpriced_reason"),
                        measures=tuple(m for m in MEASURES if m.name == "attempts"), where="NOT priced",
                        key_types=(("unpriced_reason", "Nullable(String)"),))
LATER_GRAINS = (TEAM_DAYS, FEATURE_DAYS, OVERRIDE_HOURS, UNPRICED_HOURS)  # migration 22's
READER_GRAINS = (DEPLOYMENT_MINUTES, *LATER_GRAINS)

# A customer's hours, customer first: what a customer budget's today and the retry-storm pass's named customers
# read (detect/budgets.py, detect/retry_storm.py). customer_hours is sorted by (hour, team, feature, customer, …),
# so a few customers' hours read every customer's rows of those hours: a customer budget's today at 50M events
# read 425,984 rows for a few hundred. Sorted by customer, a customer's hours are a range of the key. Hours, as
# customer_hours: what is read from raw is at most the open hour and the partial hours at a window's edges.
CUSTOMER_PROVIDER_HOURS = Rollup("customer_provider_hours", "hour", "toStartOfHour(ts)", timedelta(hours=1),
                                 ("customer", "provider"), order=("customer", "hour", "provider"),
                                 measures=tuple(m for m in MEASURES if m.name in (
                                     "attempts", "failed_attempts", "cost_usd", "failed_cost_usd")))
DETECTOR_GRAINS = (CUSTOMER_PROVIDER_HOURS,)  # migration 28's

# Requests per hour × feature as numbers, for the dashboard's cost per request by feature at every team and
# environment: merging a week of usage_hours' request sets read every request id of the week (at 50M events
# ~860 of the panel's ~950 ms CPU). A distinct count is exact only over the keys it was counted for, so this is
# read per hour and feature only (the panel's buckets of one hour, no filter); read through
# ``feature_requests_hourly`` (reader_views.range_view: whole hours from here, partial ones from raw).
FEATURE_REQUEST_HOURS = Rollup("feature_request_hours", "hour", "toStartOfHour(ts)", timedelta(hours=1),
                               ("feature",),
                               measures=(*(m for m in MEASURES if m.name == "cost_usd"), REQUEST_COUNTS[0]))
PANEL_GRAINS = (FEATURE_REQUEST_HOURS,)  # migration 31's


def backfill_grains(grains: Sequence[Rollup]) -> Callable[[Store, Callable[[str], None]], None]:
    """A migration step: compute ``grains`` from the raw events already stored, a month at a time, and record
    their periods done at the marks made before the computation began (as ``shapes.backfill`` does: a row
    marked later was perhaps not durable yet, so its period stays pending and the maintainer recomputes it)."""
    def backfill(store: Store, run: Callable[[str], None]) -> None:
        began = str(store.query("SELECT toString(now64(3, 'UTC'))").scalar())
        version = f"toDateTime64('{began}', 3, 'UTC')"
        for rollup in grains:
            # a grain of its own source (GPU allocation) has periods wherever its sources have rows
            of = ("usage_events" if not rollup.source
                  else "(SELECT ts FROM usage_events UNION ALL SELECT ts FROM gpu_samples)")
            months = [str(r[0]) for r in store.query(f"SELECT DISTINCT toString(toStartOfMonth(ts)) FROM {of} "
                                                     "ORDER BY 1").rows]
            for month in months:
                start = f"toDateTime64('{month}', 3, 'UTC')"
                store.command(recompute_sql(rollup, version, start, f"{start} + INTERVAL 1 MONTH"))
            store.command(f"INSERT INTO rollup_done (rollup, period, mark) SELECT '{rollup.name}', "
                          f"{rollup.period_of_mark} AS p, max(marked_at) FROM {rollup.marks} "
                          f"WHERE marked_at <= {version} GROUP BY p")
            # and where the pending search starts, as a maintainer's pass leaves it (trailing marks in flight):
            # without it every watermark reads every mark ever made until the maintainer first runs
            store.command(f"INSERT INTO rollup_state (rollup, through) VALUES ('{rollup.name}', "
                          f"{version} - INTERVAL {int(_IN_FLIGHT.total_seconds())} SECOND)")
            log.info("%s computed from the raw events of %d month(s)", rollup.name, len(months))
    return backfill
