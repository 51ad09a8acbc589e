"""Exact top-k over team × feature × customer from kept day lists (migration 34): what Top spenders reads.

Ranking team × feature × customer keys over a week grouped every key of the week (at 50M events ~7M
``customer_hours`` rows, ~3 s CPU), though the answer is ten keys that are large every day. So the maintainer
keeps, per closed day:

- ``key_days``: day × team × feature × customer (cost, attempts, unpriced attempts), sorted key first
  (``key_id``, a 64-bit hash of the three names and their NULL flags, then the day): a few keys' days are a few
  ranges of the sort key;
- ``key_day_tops``: the day's ``LIST_LENGTH`` most costly keys of ``key_days`` (``rank``, ``key_id``, cost), computed
  from ``key_days`` right after it (the maintainer recomputes grains in ``all_grains`` order, one day per run, and a
  pass records both done or neither), so a day's list is the list of the rows ``key_days`` holds for it.

Both are rollups like every other (recomputed from their source when marked, versioned by the mark, read before
their watermark); a day is recomputed at most every ten minutes after a late event, like ``customer_days``.

**The reader** (``TOP_SPENDERS``, the cookbook's Top spenders; migration 35's views) ranks without reading every
key, and is exact (BENCHMARKS.md, s19 "rankings", the ``nra`` plan): no cost is negative, so on a listed day a key's
cost is known if it is listed and at most the day's ``LIST_LENGTH``-th cost if not. Summed over the range's listed
days (those before the lists' watermark), each listed key has ``lo`` (its listed costs) and ``hi`` (plus the
``LIST_LENGTH``-th of each day it is not listed on); an unlisted key costs at most ``unlisted`` (every day's
``LIST_LENGTH``-th summed). ``floor`` = the lists' ``top``-th largest ``lo``: at least ``top`` keys cost that much.
The hours after the watermark (today, a day a late event reopened: ``key_lists_open``) are grouped whole per key,
once, and added to ``lo`` and ``hi``. When ``floor > unlisted`` only keys whose ``hi`` reaches ``floor`` can rank or
tie: their rows are read (``key_days`` key first, and the open rows kept), grouped by name and ranked; else every
key's rows are (``key_days`` whole for the listed days: exact, dearer than the grouping of ``customer_hours``).

One scalar (``bound``) holds the chosen ids, whether they settle it, and the open rows to add: ClickHouse analyses a
scalar subquery again in every scope that names it, so the query names few, and the watermarks through a view.

A 64-bit collision of two keys' ids merges their sums in the lists and the bound: unchosen ids cannot reach ``floor``
even merged; a chosen id holding two names stops the query with an error (``throwIf``) rather than answer wrong.
"""

from __future__ import annotations

from datetime import timedelta

from spendstream.sinks.rollups import (
    CUSTOMER_HOURS,
    MEASURES,
    MONEY,
    Measure,
    Rollup,
    columns,
    table_ddl,
    watermark_sql,
    watermarks_select,
)

KEYS = "team, feature, customer"
KEY_ID = ("sipHash64(isNull(team), ifNull(team, ''), isNull(feature), ifNull(feature, ''), "
          "isNull(customer), ifNull(customer, ''))")
LIST_LENGTH = 1000  # keys a day's list holds: 100 did not end Movers' bound at 5M or 50M, 1,000 did (s19)

KEY_DAYS = Rollup("key_days", "day", "toStartOfDay(ts)", timedelta(days=1), ("team", "feature", "customer"),
                  measures=tuple(m for m in MEASURES if m.name in ("attempts", "cost_usd", "unpriced_attempts")),
                  min_recompute_s=600.0)

# A day's list from the key_days rows just recomputed (whole days: a migration's backfill passes a month).
_TOPS_SOURCE = f"""
    SELECT day, rank, key_id, c FROM (
      SELECT day, key_id, ifNull(cost_usd, 0) AS c,
             row_number() OVER (PARTITION BY day ORDER BY c DESC, key_id) AS rank
      FROM key_days FINAL WHERE day >= {{since}} AND day < {{until}})
    WHERE rank <= {LIST_LENGTH}"""
KEY_DAY_TOPS = Rollup("key_day_tops", "day", "toStartOfDay(ts)", timedelta(days=1), ("rank",),
                      measures=(Measure("key_id", "UInt64", "", "any(key_id)"),
                                Measure("cost_usd", MONEY.removeprefix("Nullable(").removesuffix(")"), "",
                                        "sum(cost_usd)")),
                      key_types=(("rank", "UInt32"),), min_recompute_s=600.0, source=_TOPS_SOURCE)
LIST_GRAINS = (KEY_DAYS, KEY_DAY_TOPS)  # migration 34's, in this order: the lists are computed from key_days


def key_days_ddl() -> str:
    """``key_days``: a rollup's table, with ``key_id`` computed from the names, sorted by it first (granules of
    256 rows: a chosen key's days are a few hundred rows, not 8,192)."""
    ddl = table_ddl(KEY_DAYS)
    for old, new in (
        ("ORDER BY (day, team, feature, customer)", "ORDER BY (key_id, day, team, feature, customer)"),
        ("SETTINGS allow_nullable_key = 1", "SETTINGS allow_nullable_key = 1, index_granularity = 256"),
        ("            version DateTime64", f"            key_id UInt64 MATERIALIZED {KEY_ID},\n"
                                         "            version DateTime64"),
    ):
        if old not in ddl:
            raise ValueError(f"key_days' DDL no longer has {old!r}")
        ddl = ddl.replace(old, new)
    return ddl


MEASURES_READ = ("cost_usd", "attempts", "unpriced_attempts")


def watermarks_view() -> str:
    """``key_lists_watermarks``: one row, ``customer_hours`` (its watermark) and ``key_lists`` (the days before it
    are in both ``key_days`` and ``key_day_tops``). A view, not the watermarks' SQL: Top spenders names the
    watermarks in several scopes, and ClickHouse analyses a scalar subquery again in each (s21: ~7 ms a copy at
    5M, ~30 copies), where a view's is read once."""
    columns = ("customer_hours", "key_days", "key_day_tops")
    return f"""
        CREATE OR REPLACE VIEW key_lists_watermarks AS
        SELECT customer_hours, least(key_days, key_day_tops) AS key_lists
        FROM ({watermarks_select((CUSTOMER_HOURS, KEY_DAYS, KEY_DAY_TOPS), columns)})
        """


def open_view() -> str:
    """``key_lists_open``: what the lists do not hold yet, per hour and key (``period``, the names, cost, attempts,
    unpriced attempts): ``customer_hours`` from the lists' watermark on (today, a day a late event reopened), raw
    after ``customer_hours``' own. A reader filters ``period`` to its range and hashes the names to ``key_id`` after
    grouping them (at 50M, today's rows grouped by name 124 ms CPU, by id computed per row 188, by both 264)."""
    wm = "(SELECT {} FROM key_lists_watermarks)"
    rows = columns(CUSTOMER_HOURS, "{t}", list(MEASURES_READ), where_rollup=f"{{t}} >= {wm.format('key_lists')}",
                   where_raw=f"ts >= {wm.format('key_lists')}")
    hoisted = watermark_sql(CUSTOMER_HOURS)
    if hoisted not in rows:
        raise ValueError("columns() no longer names customer_hours' watermark as watermark_sql")
    rows = rows.replace(hoisted, wm.format("customer_hours").strip("()"))
    return f"""
        CREATE OR REPLACE VIEW key_lists_open AS
        SELECT period, {KEYS}, {", ".join(MEASURES_READ)} FROM {rows}
        """


def _key_id(column: int) -> str:
    """``KEY_ID`` on two lines, the second starting at ``column``."""
    return KEY_ID.replace(" isNull(customer)", "\n" + " " * column + "isNull(customer)")


# The cookbook's Top spenders (docs/sql.md holds the same text: tests/test_top_spenders_lists.py compares them).
# `bound`: the keys that can rank (their `hi` reaches `floor`), whether that settles it, and the open rows to add.
_BOUND = f"""WITH toDateTime({{since:Date}}, 'UTC') AS since_t, toDateTime({{until:Date}}, 'UTC') AS until_t,
     greatest(since_t, least(until_t, (SELECT key_lists FROM key_lists_watermarks))) AS listed_end,
     (SELECT (groupArrayIf(key_id, hi >= floor), any(floor > unlisted),
              groupArrayIf((key_id, team, feature, customer, cost_usd, attempts, unpriced_attempts),
                           opened AND floor > unlisted AND hi >= floor), any(floor), any(unlisted))
      FROM (SELECT key_id, team, feature, customer, cost_usd, attempts, unpriced_attempts, opened,
                   max(l.unlisted) OVER () AS unlisted, max(l.floor) OVER () AS floor,
                   if(l.listed, l.lo + unlisted - l.nl, unlisted) + ifNull(cost_usd, 0) AS hi
            FROM (SELECT {_key_id(35)} AS key_id,
                         team, feature, customer, sum(cost_usd) AS cost_usd, sum(attempts) AS attempts,
                         sum(unpriced_attempts) AS unpriced_attempts, 1 AS opened
                  FROM key_lists_open WHERE listed_end > since_t AND period >= since_t AND period < until_t
                  GROUP BY team, feature, customer) AS o
            FULL OUTER JOIN
                 (SELECT key_id, sum(cost_usd) AS lo, sum(nth) AS nl, any(every_nth) AS unlisted, 1 AS listed,
                         nth_value(lo, {{top:UInt32}}) OVER (ORDER BY lo DESC ROWS BETWEEN UNBOUNDED PRECEDING
                                                           AND UNBOUNDED FOLLOWING) AS floor
                  FROM (SELECT key_id, cost_usd, sumIf(cost_usd, rank = {LIST_LENGTH}) OVER (PARTITION BY day) AS nth,
                               sumIf(cost_usd, rank = {LIST_LENGTH}) OVER () AS every_nth
                        FROM key_day_tops FINAL WHERE day >= since_t AND day < listed_end)
                  GROUP BY key_id) AS l USING (key_id))) AS bound"""
TOP_SPENDERS = f"""{_BOUND}
SELECT team, feature, customer, cost_usd
FROM (SELECT team, feature, customer, sum(cost_usd) AS cost_usd, sum(attempts) > sum(unpriced_attempts) AS priced,
             throwIf(bound.2 AND count() OVER (PARTITION BY key_id) > 1,
                     'two keys share a key_id: group customer_hourly instead') AS shared
      FROM (SELECT key_id, team, feature, customer, cost_usd, attempts, unpriced_attempts FROM key_days FINAL
            WHERE listed_end > since_t AND day >= since_t AND day < listed_end AND (NOT bound.2 OR has(bound.1, key_id))
            UNION ALL
            SELECT o.1, o.2, o.3, o.4, o.5, o.6, o.7 FROM (SELECT arrayJoin(bound.3) AS o)
            UNION ALL
            SELECT {_key_id(29)},
                   team, feature, customer, sum(cost_usd), sum(attempts), sum(unpriced_attempts)
            FROM key_lists_open WHERE NOT bound.2 AND period >= since_t AND period < until_t
            GROUP BY team, feature, customer)
      GROUP BY key_id, team, feature, customer)
WHERE priced AND shared = 0
ORDER BY cost_usd DESC, team, feature, customer
LIMIT {{top:UInt32}}"""
# Whether the lists settled a range (else every key of it was grouped), and the numbers that decide it.
TOP_SPENDERS_SETTLED = f"{_BOUND}\nSELECT bound.2 AS settled, bound.4 AS floor, bound.5 AS unlisted, listed_end"

STATEMENTS = (key_days_ddl(), table_ddl(KEY_DAY_TOPS))  # migration 34's
READER_STATEMENTS = ("DROP VIEW IF EXISTS top_spenders", "DROP VIEW IF EXISTS top_spenders_bound", watermarks_view(),
                     open_view())  # migration 35's
