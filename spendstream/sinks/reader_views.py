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

Migration 36 recreated them to cost less whatever the range holds: each reads raw in one arm (``ranges.spans``),
and ``customer_daily`` takes only whole days from ``customer_days``, its partial days from the hours
(``whole_days_view``).
"""

from __future__ import annotations

from collections.abc import Sequence

from spendstream.sinks.ranges import between, spans
from spendstream.sinks.rollups import CUSTOMER_HOURS, HOURS, MEASURES, Rollup, watermark_sql

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


def range_view(name: str, rollup: Rollup, *, raw_once: bool = False) -> str:
    """A parameterized view of every measure per period × key, exact for ``since <= ts < until``.

    ``SELECT … FROM usage_minutely(since = …, until = …)``. Its period column is named
    after the rollup's (``minute``, ``hour``). Each row holds one period and key's
    measures, to be combined like ``Measure.of_rollup``: ``sum`` for counts, tokens and
    money, ``max`` for ``max_attempt``, ``uniqExactMerge`` for ``requests`` and
    ``successful_requests`` (``uniqExact`` states: a request retried across two periods
    counts once). ``raw_once`` (migration 36): what is read from raw in one arm (``ranges.spans``).
    """
    keys = ", ".join(rollup.keys)
    names = ", ".join(m.name for m in rollup.measures)
    return f"""
        CREATE OR REPLACE VIEW {name} AS
        SELECT period AS {rollup.period}, {keys}, {names}
        FROM {between(rollup, "{t}", since=SINCE, until=UNTIL, raw_once=raw_once)}
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


def whole_days_view(name: str, days: Rollup, hours: Rollup = CUSTOMER_HOURS) -> str:
    """``layered_view``'s columns and answers (migration 36), read from fewer places: ``days`` keeps only the range's
    whole days before its watermark; everything else — the partial days at the range's ends, today, a day a late
    event reopened — is ``hours``' (``ranges.spans`` over the range before and after those days: its whole hours
    from the rollup, the rest from raw in one arm).

    A range that does not start at midnight (a dashboard's "last 24 hours") read its first partial day from raw
    events in ``layered_view`` (17 hours of raw FINAL at 50M events: ~1 s CPU); from the hours it reads what
    ``customer_hourly`` reads. Three arms where ``layered_view`` planned six (each ~5-10 ms whatever it reads).
    """
    keys = ", ".join(days.keys)
    names = ", ".join(m.name for m in days.measures)
    since, until = f"toDateTime64({SINCE}, 3, 'UTC')", f"toDateTime64({UNTIL}, 3, 'UTC')"
    first_day = f"if(toStartOfDay({since}) = {since}, toStartOfDay({since}), toStartOfDay({since}) + INTERVAL 1 DAY)"
    # [first_day, days_end): whole days of the range before the day rollup's watermark (empty when days_end = first_day)
    days_end = f"greatest(wd_first_day, least(toStartOfDay({until}), {days.name}_watermark))"
    rest = spans(hours, "toDate({t})", [m.name for m in days.measures],
                 [(SINCE, f"least(wd_first_day, {UNTIL})"), ("wd_days_end", UNTIL)])
    return f"""
        CREATE OR REPLACE VIEW {name} AS
        WITH ({watermark_sql(days)}) AS {days.name}_watermark, ({watermark_sql(hours)}) AS {hours.name}_watermark,
             {first_day} AS wd_first_day, {days_end} AS wd_days_end
        SELECT toDate(day) AS day, {keys}, {names} FROM {days.name} FINAL
        WHERE day >= wd_first_day AND day < wd_days_end
        UNION ALL
        SELECT period AS day, {keys}, {names} FROM {rest.replace(watermark_sql(hours), f"{hours.name}_watermark")}
        """


def counted_days_view(name: str, days: Rollup, hours: Rollup = HOURS, *, raw_once: bool = False) -> str:
    """A parameterized view per day × ``days``' keys for the days ``since <= day < until`` (``Date`` parameters),
    exact: the days before ``days``' watermark from it, the rest from ``hours`` (``ranges.between``: the rollup,
    raw after its watermark), their request sets merged per day and key.

    ``SELECT … FROM team_daily(since = …, until = …)``. Unlike ``layered_view``, a day is never split between
    the two sources (the watermark of a day rollup is a day's start), so each day and key is one row and its
    ``requests`` and ``successful_requests`` are distinct counts: add them only over other days, never over
    keys (one request can have attempts under two keys). ``raw_once`` (migration 36): the hours' raw in one arm.
    """
    keys = ", ".join(days.keys)
    names = ", ".join(m.name for m in days.measures)
    since, until = "toDateTime({since:Date}, 'UTC')", "toDateTime({until:Date}, 'UTC')"
    cut = f"({watermark_sql(days)})"
    of_hours = {m.name: m.of_rollup for m in MEASURES}
    merged = ", ".join(f"{of_hours[m.name]} AS {m.name}" for m in days.measures)
    after = between(hours, "toDate({t})", [m.name for m in days.measures], since=f"greatest({since}, {cut})",
                    until=until, raw_once=raw_once)
    select = f"""
        SELECT toDate(day) AS day, {keys}, {names} FROM {days.name} FINAL
        WHERE day >= {since} AND day < least({until}, {cut})
        UNION ALL
        SELECT period AS day, {keys}, {merged} FROM {after} GROUP BY day, {keys}
        """
    return f"CREATE OR REPLACE VIEW {name} AS\n{computed_once(select, (days, hours))}"
