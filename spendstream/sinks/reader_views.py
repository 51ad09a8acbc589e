"""Views for people and dashboards that read the rollups, exact for any time range (created by migration 11).

- ``usage_minutely(since, until)``, ``usage_hourly(since, until)`` and
  ``customer_hourly(since, until)``: every measure per
  period × key for ``since <= ts < until``, from ``ranges.between`` (whole periods from
  the rollup or raw, the partial ends from raw). Parameterized views, because a view
  without parameters cannot know which partial periods to take from raw.
- ``spend_movers_weekly``: the same columns and answers as migration 5's, from ``customer_hours``.
- ``customer_daily(since, until)`` (migration 17): per day × customer, from ``customer_days``
  up to its watermark and ``customer_hourly``'s sources after it.
- ``team_daily(since, until)`` and ``feature_daily(since, until)`` (migration 22): requests counted per
  day × team (× feature), from ``team_days``/``feature_days`` up to their watermark and the hours' request
  sets after it.
- ``top_spenders(since, until, top)`` (migration 29): the ``top`` team × feature × customer keys by cost over
  whole days, reading ``customer_key_days`` (sorted customer first) for the few customers that can hold one.
"""

from __future__ import annotations

from collections.abc import Sequence

from spendstream.sinks.ranges import between
from spendstream.sinks.rollups import CUSTOMER_HOURS, HOURS, MEASURES, Rollup, columns, watermark_sql

SINCE, UNTIL = "{since:DateTime64(3, 'UTC')}", "{until:DateTime64(3, 'UTC')}"


def computed_once(select: str, grains: Sequence[Rollup]) -> str:
    """``select`` with each of ``grains``' watermark computed once, in a ``WITH`` clause, where it was repeated.

    ``ranges.between`` writes a rollup's watermark into every bound it derives from the range (a
    day view's ``least(until, watermark)`` ends up in a dozen places), and ClickHouse analyses each
    copy: ``customer_daily`` held 26. At 5M events (BENCHMARKS.md) its fixed cost, ``WHERE 0``, fell
    from ~0.13 s to ~0.08 s with one, and a week's read to ~0.65×. The answer is the same: every copy
    was the same scalar subquery.
    """
    hoisted = []
    for rollup in grains:
        name = f"{rollup.name}_watermark"
        select = select.replace(watermark_sql(rollup), name)
        hoisted.append(f"({watermark_sql(rollup)}) AS {name}")
    return f"WITH {', '.join(hoisted)}\n{select}"


def range_view(name: str, rollup: Rollup) -> str:
    """A parameterized view of every measure per period × key, exact for ``since <= ts < until``.

    ``SELECT … FROM usage_minutely(since = …, until = …)``. Its period column is named
    after the rollup's (``minute``, ``hour``). Each row holds one period and key's
    measures, to be combined like ``Measure.of_rollup``: ``sum`` for counts, tokens and
    money, ``max`` for ``max_attempt``, ``uniqExactMerge`` for ``requests`` and
    ``successful_requests`` (``uniqExact`` states: a request retried across two periods
    counts once).
    """
    keys = ", ".join(rollup.keys)
    names = ", ".join(m.name for m in rollup.measures)
    return f"""
        CREATE OR REPLACE VIEW {name} AS
        SELECT period AS {rollup.period}, {keys}, {names}
        FROM {between(rollup, "{t}", since=SINCE, until=UNTIL)}
        """


def movers(rollup: Rollup = CUSTOMER_HOURS) -> str:
    """Spend in the last 7 days against the 7 before, per team/feature/customer (migration 5's ``_MOVERS``).

    Both weeks start at ``now()`` minus whole days, not on an hour: ``between`` takes the
    whole hours from ``usage_hours`` and the partial hours at both ends from raw. The
    raw view read priced events only, so a key with nothing priced in the fortnight is
    not a row (its costs would be NULL).
    """
    measures = ["cost_usd", "attempts", "unpriced_attempts"]
    this_week = between(rollup, "'this'", measures, since="now() - INTERVAL 7 DAY")  # and later: no upper bound
    last_week = between(rollup, "'last'", measures, since="now() - INTERVAL 14 DAY", until="now() - INTERVAL 7 DAY")
    return f"""
        CREATE OR REPLACE VIEW spend_movers_weekly AS
        SELECT team, feature, customer,
               sumIf(cost_usd, period = 'this') AS this_week_usd,
               sumIf(cost_usd, period = 'last') AS last_week_usd,
               this_week_usd - last_week_usd AS change_usd,
               if(last_week_usd = 0, NULL, toFloat64(this_week_usd / last_week_usd) - 1) AS change_ratio
        FROM (SELECT * FROM {this_week} UNION ALL SELECT * FROM {last_week})
        GROUP BY team, feature, customer
        HAVING sum(attempts) > sum(unpriced_attempts)
        """




def layered_view(name: str, days: Rollup, hours: Rollup = CUSTOMER_HOURS) -> str:
    """A parameterized view per day × ``days``' keys, exact for ``since <= ts < until``: the days before
    ``days``' watermark from it, the rest (today, a day a late event reopened) from ``hours``, and
    the partial periods at the range's ends from raw (``ranges.between`` on each side).

    ``SELECT … FROM customer_daily(since = …, until = …)``; a day that is half from the day
    rollup and half from hours is two rows, to be summed.
    """
    keys = ", ".join(days.keys)
    names = ", ".join(m.name for m in days.measures)
    cut = f"({watermark_sql(days)})"
    before = between(days, "toDate({t})", [m.name for m in days.measures], since=SINCE, until=f"least({UNTIL}, {cut})")
    after = between(hours, "toDate({t})", [m.name for m in days.measures], since=f"greatest({SINCE}, {cut})",
                    until=UNTIL)
    select = f"""
        SELECT period AS day, {keys}, {names} FROM {before}
        UNION ALL
        SELECT period AS day, {keys}, {names} FROM {after}
        """
    return f"CREATE OR REPLACE VIEW {name} AS\n{computed_once(select, (days, hours))}"


def counted_days_view(name: str, days: Rollup, hours: Rollup = HOURS) -> str:
    """A parameterized view per day × ``days``' keys for the days ``since <= day < until`` (``Date`` parameters),
    exact: the days before ``days``' watermark from it, the rest from ``hours`` (``ranges.between``: the rollup,
    raw after its watermark), their request sets merged per day and key.

    ``SELECT … FROM team_daily(since = …, until = …)``. Unlike ``layered_view``, a day is never split between
    the two sources (the watermark of a day rollup is a day's start), so each day and key is one row and its
    ``requests`` and ``successful_requests`` are distinct counts: add them only over other days, never over
    keys (one request can have attempts under two keys).
    """
    keys = ", ".join(days.keys)
    names = ", ".join(m.name for m in days.measures)
    since, until = "toDateTime({since:Date}, 'UTC')", "toDateTime({until:Date}, 'UTC')"
    cut = f"({watermark_sql(days)})"
    of_hours = {m.name: m.of_rollup for m in MEASURES}
    merged = ", ".join(f"{of_hours[m.name]} AS {m.name}" for m in days.measures)
    after = between(hours, "toDate({t})", [m.name for m in days.measures], since=f"greatest({since}, {cut})",
                    until=until)
    select = f"""
        SELECT toDate(day) AS day, {keys}, {names} FROM {days.name} FINAL
        WHERE day >= {since} AND day < least({until}, {cut})
        UNION ALL
        SELECT period AS day, {keys}, {merged} FROM {after} GROUP BY day, {keys}
        """
    return f"CREATE OR REPLACE VIEW {name} AS\n{computed_once(select, (days, hours))}"


def top_spenders_view(name: str, keys_days: Rollup, customer_days: Rollup, hours: Rollup = CUSTOMER_HOURS) -> str:
    """``top_spenders(since, until, top)``: the ``top`` team × feature × customer keys by cost over the days
    ``since <= day < until`` (``Date`` parameters; keys with something priced), exact, ordered by cost, then keys.

    No stored cost is negative, so a key costs at most its customer's total, and at least its cost over
    part of the range. The ``top`` largest customers' keys over the closed days give a floor under the
    ``top``-th key (0 when they hold fewer), and only a customer whose total reaches it can hold a key of
    the answer (a key tied at the last place included): those customers' keys alone are grouped, read
    from ``keys_days``, sorted customer first, so its sort key skips the rest. NULL and '' customers are
    one candidate (a wider set, never a narrower one).

    Whole days before ``cut`` (both day rollups' watermarks) come from the day rollups; the rest (today,
    a day a late event reopened) from ``hours`` and raw, read twice: grouped per customer for the totals,
    and filtered to the candidates for the answer (grouping it per key, nearly one key an event, is what
    costs). Migration 29 passes ``customer_key_hours``, sorted by day, then customer: today is one key range
    of it for the totals, and the candidates' hours of today a few smaller ones (``customer_hours``, sorted
    hour first, was read in full twice). The totals and the floor are top-level ``WITH`` scalars, computed
    once per query: written as nested subqueries, each was computed again wherever it was written
    (BENCHMARKS.md, s8-topk8).
    """
    since, until = "toDateTime({since:Date}, 'UTC')", "toDateTime({until:Date}, 'UTC')"
    measures = ["attempts", "cost_usd", "unpriced_attempts"]
    after = columns(hours, "{t}", measures, where_rollup="{t} >= greatest(ts_since, cut) AND {t} < ts_until",
                    where_raw="{t} >= greatest(ts_since, cut) AND {t} < ts_until")
    after = after.replace(watermark_sql(hours), "hours_watermark")  # written twice by ``columns``
    closed = "day >= ts_since AND day < least(ts_until, cut)"
    # `has(array, customer)` lets the sort key skip other customers' rows; `customer IN array` read them all
    of = "(has({customers}, customer) OR customer IS NULL AND has({customers}, ''))"

    def ranked(customers: str, *, tail: bool) -> str:
        today = (f"UNION ALL SELECT team, feature, customer, cost_usd, attempts, unpriced_attempts FROM {after} "
                 f"WHERE {of.format(customers=customers)}") if tail else ""
        return f"""
            SELECT team, feature, customer, sum(cost_usd) AS cost_usd
            FROM (SELECT team, feature, customer, cost_usd, attempts, unpriced_attempts FROM {keys_days.name} FINAL
                  WHERE {closed} AND {of.format(customers=customers)} {today})
            GROUP BY team, feature, customer HAVING sum(attempts) > sum(unpriced_attempts)
            ORDER BY cost_usd DESC, team, feature, customer LIMIT {{top:UInt32}}"""

    return f"""
        CREATE OR REPLACE VIEW {name} AS
        WITH {since} AS ts_since, {until} AS ts_until,
             ({watermark_sql(keys_days)}) AS keys_watermark,
             ({watermark_sql(customer_days)}) AS customers_watermark,
             ({watermark_sql(hours)}) AS hours_watermark,
             least(keys_watermark, customers_watermark) AS cut,
             (SELECT arrayReverseSort(x -> x.1, groupArray((total, c)))
              FROM (SELECT ifNull(customer, '') AS c, sum(cost_usd) AS total
                    FROM (SELECT customer, cost_usd FROM {customer_days.name} FINAL WHERE {closed}
                          UNION ALL SELECT customer, cost_usd FROM {after})
                    GROUP BY c)) AS totals,
             arrayMap(x -> x.2, arraySlice(totals, 1, {{top:UInt32}})) AS leaders,
             (SELECT if(count() < {{top:UInt32}}, 0, min(cost_usd)) FROM ({ranked("leaders", tail=False)})) AS floor,
             arrayMap(x -> x.2, arrayFilter(x -> x.1 >= floor, totals)) AS candidates
        {ranked("candidates", tail=True)}
        """
