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

**The reader** (``top_spenders(since, until, top)``, the cookbook's Top spenders) ranks without reading every key,
and is exact (BENCHMARKS.md, s19 "rankings", the ``nra`` plan): no cost is negative, so on a listed day a key's cost
is known if it is listed and at most the day's ``LIST_LENGTH``-th cost if not. Summed over the range's listed days
(those before the lists' watermark), each listed key has ``lo`` (its listed costs) and ``hi`` (plus the
``LIST_LENGTH``-th of each day it is not listed on); an unlisted key costs at most ``unlisted`` (every day's
``LIST_LENGTH``-th summed). ``floor`` = the ``top``-th largest ``lo``: at least ``top`` keys cost that much. The days
after the watermark (today, a day a late event reopened) are grouped whole per key, once (``customer_hourly``'s
sources), and a key can rank or tie only if its ``hi`` (or ``unlisted``) plus its cost there reaches ``floor``; those
keys' exact sums are read, key first, and ranked. That is the answer when ``floor > unlisted`` (no key outside the
lists and the open days can reach it); else the full grouping answers.

A 64-bit collision of two keys' ids merges their sums in the lists: the chosen keys' rows are checked (as many ids
as names, else the full grouping answers); unchosen keys cannot reach ``floor`` even merged.
"""

from __future__ import annotations

from datetime import timedelta

from spendstream.sinks.rollups import MEASURES, MONEY, Measure, Rollup, table_ddl, watermark_sql

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


def _top_spenders_parts() -> tuple[str, str]:
    """(the ``WITH`` clause, the full grouping) of ``top_spenders``: the clause names the lists' answer
    (``listed_answer.2``) and whether it is the answer (``exact``)."""
    from spendstream.sinks.ranges import between
    from spendstream.sinks.rollups import CUSTOMER_HOURS

    measures = ["cost_usd", "attempts", "unpriced_attempts"]
    # the days after the lists' watermark, grouped whole (customer_hourly's sources: customer_hours, raw after it)
    rest = between(CUSTOMER_HOURS, "{t}", measures, since="listed_end", until="until_t")
    full = between(CUSTOMER_HOURS, "{t}", measures, since="since_t", until="until_t")
    listed = "day >= since_t AND day < listed_end"

    # one pass over the open days, grouped by the names; only the keys that can reach the floor are kept. Scalars
    # (computed once for the whole query, where a named subquery is computed wherever it is named): the open days'
    # chosen rows, and the lists' answer with whether its ids were as many as its names
    bounded = "enough AND floor > unlisted"
    rows = (f"SELECT key_id, {KEYS}, cost_usd, attempts, unpriced_attempts FROM key_days FINAL "
            f"WHERE {listed} AND has(chosen, key_id) "
            f"UNION ALL SELECT t.1 AS key_id, t.2 AS team, t.3 AS feature, t.4 AS customer, t.5 AS cost_usd, "
            f"t.6 AS attempts, t.7 AS unpriced_attempts FROM (SELECT arrayJoin(opened) AS t)")
    with_ = f"""WITH
        ({watermark_sql(CUSTOMER_HOURS)}) AS customer_hours_watermark,
        toDateTime({{since:Date}}, 'UTC') AS since_t, toDateTime({{until:Date}}, 'UTC') AS until_t,
        ({watermark_sql(KEY_DAYS)}) AS key_days_watermark,
        ({watermark_sql(KEY_DAY_TOPS)}) AS key_day_tops_watermark,
        greatest(since_t, least(until_t, key_days_watermark, key_day_tops_watermark)) AS listed_end,
        nth AS (SELECT day, cost_usd AS nth FROM key_day_tops FINAL WHERE {listed} AND rank = {LIST_LENGTH}),
        (SELECT sum(nth) FROM nth) AS unlisted,
        (SELECT (groupArray(key_id), groupArray(lo), groupArray(hi)) FROM (
           SELECT key_id, sum(t.cost_usd) AS lo, lo + unlisted - sum(n.nth) AS hi
           FROM key_day_tops AS t FINAL LEFT JOIN nth AS n ON t.day = n.day
           WHERE t.day >= since_t AND t.day < listed_end GROUP BY key_id)) AS lists,
        length(lists.1) >= {{top:UInt32}} AS enough,
        if(enough, arrayReverseSort(lists.2)[{{top:UInt32}}], 0) AS floor,
        (SELECT groupArray((key_id, {KEYS}, cost_usd, attempts, unpriced_attempts)) FROM (
           SELECT {KEY_ID} AS key_id, {KEYS}, sum(cost_usd) AS cost_usd, sum(attempts) AS attempts,
                  sum(unpriced_attempts) AS unpriced_attempts FROM {rest} GROUP BY {KEYS})
         WHERE if(transform(key_id, lists.1, arrayEnumerate(lists.1), 0) AS at = 0, unlisted, lists.3[at])
               + ifNull(cost_usd, 0) >= floor AND {bounded}) AS opened,
        (SELECT arrayDistinct(arrayConcat(arrayFilter((k, hi) -> hi >= floor AND {bounded}, lists.1, lists.3),
                                          arrayMap(t -> t.1, opened)))) AS chosen,
        answer_rows AS (SELECT {KEYS}, sum(cost_usd) AS cost_usd, sum(attempts) > sum(unpriced_attempts) AS priced,
                               any(key_id) AS key_id FROM ({rows}) GROUP BY {KEYS}),
        (SELECT (min(distinct_ids), groupArray(({KEYS}, cost_usd))) FROM (
           SELECT {KEYS}, cost_usd, (uniqExact(key_id) OVER ()) = (count() OVER ()) AS distinct_ids FROM answer_rows
           ORDER BY priced DESC, cost_usd DESC, {KEYS} LIMIT {{top:UInt32}})) AS listed_answer,
        {bounded} AND listed_answer.1 = 1 AS exact"""
    grouped = (f"SELECT {KEYS}, sum(cost_usd) AS cost_usd FROM {full} GROUP BY {KEYS} "
               f"HAVING sum(attempts) > sum(unpriced_attempts) ORDER BY cost_usd DESC, {KEYS} LIMIT {{top:UInt32}}")
    parts = (with_, grouped)
    # customer_hours' watermark once (ClickHouse analyses every copy of a scalar subquery: reader_views.computed_once)
    hoisted = watermark_sql(CUSTOMER_HOURS)
    first, *others = (p.replace(hoisted, "customer_hours_watermark") for p in parts)
    return first.replace("(customer_hours_watermark) AS customer_hours_watermark", f"({hoisted}) AS "
                         "customer_hours_watermark", 1), *others


def top_spenders_view() -> str:
    """``top_spenders(since, until, top)`` (``Date``, ``Date``, ``UInt32``): team, feature, customer, cost_usd of the
    ``top`` most costly keys with something priced in ``since <= day < until``, ordered as the cookbook's grouping
    over ``customer_hourly`` orders them, and to the last digit its rows.

    One ``SELECT`` whose rows are an array, the lists' answer or the full grouping's: a ``UNION ALL`` of the two,
    each under its constant ``WHERE``, computed the bound's scalars once per branch (ClickHouse shares no scalar
    between them): twice the cost."""
    with_, full = _top_spenders_parts()
    return f"""
        CREATE OR REPLACE VIEW top_spenders AS
        {with_},
        (SELECT groupArray(({KEYS}, cost_usd)) FROM ({full}) WHERE NOT exact) AS grouped
        SELECT t.1 AS team, t.2 AS feature, t.3 AS customer, t.4 AS cost_usd
        FROM (SELECT arrayJoin(if(exact, listed_answer.2, grouped)) AS t)
        """


def top_spenders_bound_view() -> str:
    """``top_spenders_bound(since, until, top)``: whether ``top_spenders`` answers from the lists (``exact``), and
    the numbers that decide it: ``floor`` (the ``top``-th largest known cost) against ``unlisted`` (what a key no
    list holds can cost at most), and where the lists end (``listed_end``)."""
    with_, _ = _top_spenders_parts()
    return f"""
        CREATE OR REPLACE VIEW top_spenders_bound AS
        {with_}
        SELECT exact, floor, unlisted, listed_end
        """


STATEMENTS = (key_days_ddl(), table_ddl(KEY_DAY_TOPS), top_spenders_view(), top_spenders_bound_view())
