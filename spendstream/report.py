"""``spendstream report``: one self-contained HTML file with charts, for people who would rather look.

The charts are Vega-Lite, rendered to static SVG when the report is written
(:mod:`spendstream.report_charts`), from the rollups docs/sql.md reads (see
``report_tables``): no JavaScript, no CDN, nothing fetched when the file is opened — it
can be mailed, archived, or opened offline, on a phone (390 px) as on a desk. Each chart
keeps the table behind it underneath.
"""

from __future__ import annotations

import html
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

from spendstream import report_charts as charts
from spendstream.advisor import Opportunity, advise
from spendstream.invoices.compare import compare_invoices
from spendstream.sinks.ranges import between
from spendstream.sinks.rollups import CUSTOMER_PROVIDER_HOURS, FEATURE_DAYS, MINUTES, Rollup, watermark_sql, watermarks
from spendstream.sinks.shapes import CUSTOMER_DAYS, REPORT_HOURS
from spendstream.sinks.store import QueryResult, SecondReader, TextQuerier, query_result, sql_time


@dataclass(frozen=True, slots=True)
class Section:
    title: str
    chart: charts.Chart
    table: QueryResult
    note: str = ""


def report_tables(querier: TextQuerier, since: datetime, until: datetime) -> dict[str, QueryResult]:
    """The tables behind the report's charts, for ``since <= ts < until``, by section name.

    Usage comes from the rollups through ``ranges.between``: exact for any range (the
    partial periods at its ends are read from raw), and equal to the same questions
    asked of ``usage_events FINAL`` (tests/test_readers_on_rollups.py keeps those as the
    reference). The usage sections' sums are one read of one rollup, answering four
    sections through ``GROUPING SETS`` (:func:`_usage_sums`): ``usage_minutes``
    when the charts step by 5 minutes, ``report_hours`` (hour × team, feature and model:
    rows bounded by those keys, not by the events) when by hours or days. Requests are
    counted per UTC day × team × feature (:func:`_usage_counts`; over more than three days
    the whole days are numbers from ``feature_days``, :func:`day_counts`). Customers come
    from ``customer_days`` for the range's whole days and ``customer_provider_hours`` for the rest
    (:func:`customer_costs`). Rankings break ties by name, so the top ten are the same ten
    every time.
    """
    tables: dict[str, QueryResult] = {}
    for read in report_reads(querier, since, until):
        tables |= read()
    return tables


def report_reads(querier: TextQuerier, since: datetime, until: datetime) -> list[Callable[[], dict[str, QueryResult]]]:
    """:func:`report_tables`' reads, each answering some of its sections, in the order the report draws them:
    the merge of the request sets (the slowest; only the totals and the cost per request wait for it) last,
    so that the other charts are drawn while it runs.

    The rollups' watermarks are read here, all in one statement (``rollups.watermarks``), and the reads take
    them as values: seven reads of a watermark each (~16 ms CPU apiece at 50M events) become one. They stand
    for the SQL they replace computed a moment earlier, as a day rollup's watermark already was (:func:`_whole_days`):
    an event marked in between is read once its period is recomputed.
    """
    p = {"since": sql_time(since), "until": sql_time(until)}
    step = report_step(since, until)
    marks = watermarks(querier, [_usage_span(step)[0], CUSTOMER_PROVIDER_HOURS, FEATURE_DAYS, CUSTOMER_DAYS])

    def q(sql: str) -> QueryResult:
        return query_result(querier, sql, p)

    def customers() -> dict[str, QueryResult]:
        by_day = dict(p)  # the customers' query also names the range's whole days
        return {"customers": query_result(
            querier, "SELECT ifNull(customer, '(none)') AS customer, sum(cost_usd) AS cost_usd "
                     f"FROM {customer_costs(querier, since, until, by_day, marks)} "
                     "GROUP BY customer ORDER BY cost_usd DESC, customer LIMIT 10", by_day)}

    return [
        lambda: {
            "dead": q("SELECT count() AS n FROM dead_letters FINAL WHERE received_at >= {since:DateTime64(3, 'UTC')} "
                      "AND received_at < {until:DateTime64(3, 'UTC')}"),
            "alerts": q("SELECT toString(created_at) AS at, toString(window_start) AS since, kind, state, subject, "
                        "message FROM alerts FINAL WHERE window_end >= {since:DateTime64(3, 'UTC')} "
                        "AND window_start < {until:DateTime64(3, 'UTC')} ORDER BY window_start")},
        lambda: _usage_sums(querier, p, step, marks),
        customers,
        # GPU samples stay raw: about four rows a minute per deployment, and no rollup keeps them
        lambda: {"gpu": q(f"SELECT toString(toStartOfInterval(minute, INTERVAL {step})) AS period, deployment, "
                          "sum(gpu_cost_usd) AS gpu_cost_usd, avg(gpu_utilization) AS gpu_utilization, "
                          "avg(kv_cache_utilization) AS kv_cache_utilization, sum(tokens) AS tokens "
                          "FROM gpu_minutely WHERE minute >= {since:DateTime64(3, 'UTC')} "
                          "AND minute < {until:DateTime64(3, 'UTC')} GROUP BY period, deployment "
                          "ORDER BY period, deployment")},
        lambda: _usage_counts(querier, since, until, p, step, marks),
    ]


def _usage_span(step: str) -> tuple[Rollup, str, dict[str, str]]:
    """The rollup the usage sections read at ``step``, its bucket expression and the range's bounds."""
    grain = MINUTES if step.endswith("MINUTE") else REPORT_HOURS
    span = {"since": "{since:DateTime64(3, 'UTC')}", "until": "{until:DateTime64(3, 'UTC')}"}
    return grain, f"toString(toStartOfInterval({{t}}, INTERVAL {step}))", span


def _usage_sums(querier: TextQuerier, params: dict[str, str], step: str,
                marks: Mapping[str, datetime] | None = None) -> dict[str, QueryResult]:
    """The report's usage tables that need no request sets — spend, features, models, waste (totals and
    unit: :func:`_usage_counts`) — in one read.

    The read groups the range's rows once per section with ``GROUPING SETS``, so the rollup's
    rows, its watermark and the partial periods from raw are read once rather than four times.
    Each section's rows are then ordered and cut as its own query would (``ORDER BY … LIMIT``:
    NULL costs last, ties by name).
    """
    grain, bucket, span = _usage_span(step)
    sums = between(grain, bucket, ["cost_usd", "attempts", "unpriced_attempts", "input_tokens", "output_tokens",
                                   "failed_attempts", "failed_cost_usd"], marks=marks, **span)
    # grouping(period, team, feature, model): a bit per column left out of the set, the first the highest
    spend_set, feature_set, model_set = 0b0011, 0b1101, 0b1110
    by_key = query_result(querier, (
        "SELECT grouping(period, team, feature, model) AS g, period, team, feature, model, "
        "sum(cost_usd) AS cost_usd, sum(attempts) AS attempts, sum(unpriced_attempts) AS unpriced, "
        "sum(input_tokens) + sum(output_tokens) AS tokens, sum(failed_attempts) AS failed_attempts, "
        "sum(failed_cost_usd) AS wasted_usd "
        "FROM (SELECT period, ifNull(team, '(none)') AS team, ifNull(feature, '(none)') AS feature, model, "
        "cost_usd, attempts, unpriced_attempts, input_tokens, output_tokens, failed_attempts, failed_cost_usd "
        f"FROM {sums}) GROUP BY GROUPING SETS ((period, team), (feature), (model))"), params)
    rows = {g: [r for r in by_key.dicts() if r["g"] == g] for g in (spend_set, feature_set, model_set)}
    return {
        "spend": _section(by_key, sorted(rows[spend_set], key=lambda r: (r["period"], r["team"])),
                          ("period", "team", "cost_usd")),
        "features": _section(by_key, _ranked(rows[feature_set], "cost_usd", "feature")[:10],
                             ("feature", "cost_usd", "attempts")),
        "models": _section(by_key, _ranked(rows[model_set], "tokens", "model")[:10],
                           ("model", "cost_usd", "unpriced", "tokens")),
        "waste": _section(by_key, _ranked(rows[feature_set], "wasted_usd", "feature"),
                          ("feature", "failed_attempts", "wasted_usd")),
    }


def _usage_counts(querier: TextQuerier, since: datetime, until: datetime, params: dict[str, str],
                  step: str, marks: Mapping[str, datetime] | None = None) -> dict[str, QueryResult]:
    """The totals and the cost per request, with requests counted per UTC day × team × feature (:func:`day_counts`).

    When the charts step by days, both come from those counts: the range's whole days are numbers. When they
    step by hours or 5 minutes (three days or less), one read merges the range's request sets twice, per period
    × feature for the cost per request (a period lies inside one day: distinct requests of the period, as
    before) and per day × team × feature for the totals; the same sets as a read of the totals alone would
    merge, so the whole days are not worth a second read there.
    """
    params = dict(params)  # day_counts adds its bounds
    if step == "1 DAY":
        counted = query_result(querier, (
            "SELECT grouping(period, feature) AS g, period, feature, sum(cost_usd) AS cost_usd, "
            "sum(requests) AS requests, sum(attempts) AS attempts, sum(unpriced_attempts) AS unpriced, "
            "if(requests = 0, 0, toFloat64(cost_usd / requests)) AS usd_per_request "
            "FROM (SELECT toString(day) AS period, ifNull(feature, '(none)') AS feature, cost_usd, requests, "
            f"attempts, unpriced_attempts FROM {day_counts(querier, since, until, params, marks)}) "
            "GROUP BY GROUPING SETS ((), (period, feature))"), params)
        totals = [r for r in counted.dicts() if r["g"] == 0b11]  # () is always a row
        unit = [r for r in counted.dicts() if r["g"] == 0]
    else:
        grain, _, span = _usage_span(step)
        sets = between(grain, f"toStartOfInterval({{t}}, INTERVAL {step})",
                       ["cost_usd", "requests", "attempts", "unpriced_attempts"], marks=marks, **span)
        # inside: grouping(period, named, day, team, feature) is 0b00111 per period × feature, 0b11000 per day ×
        # team × feature; outside, each of the first is a row of its own (g, period, named) and the second are
        # summed (g)
        per_period, per_day = 0b00111, 0b11000
        counted = query_result(querier, (
            "SELECT grouping(g, period, named) AS outer_g, g, period, named AS feature, sum(cost_usd) AS cost_usd, "
            "sum(requests) AS requests, sum(attempts) AS attempts, sum(unpriced) AS unpriced, "
            "if(requests = 0, 0, toFloat64(cost_usd / requests)) AS usd_per_request "
            "FROM (SELECT grouping(period, named, day, team, feature) AS g, toString(period) AS period, named, "
            "sum(cost_usd) AS cost_usd, uniqExactMerge(requests) AS requests, sum(attempts) AS attempts, "
            "sum(unpriced_attempts) AS unpriced "
            "FROM (SELECT period, ifNull(feature, '(none)') AS named, toStartOfDay(period) AS day, team, feature, "
            f"cost_usd, requests, attempts, unpriced_attempts FROM {sets}) "
            "GROUP BY GROUPING SETS ((period, named), (day, team, feature))) "
            "GROUP BY GROUPING SETS ((g, period, named), (g))"), params)
        rows = counted.dicts()
        totals = [r for r in rows if r["outer_g"] == 0b011 and r["g"] == per_day] or [
            {"cost_usd": None, "requests": 0, "attempts": 0, "unpriced": 0}]  # no usage in the range
        unit = [r for r in rows if r["outer_g"] == 0 and r["g"] == per_period]
    return {
        "totals": _section(counted, totals, ("cost_usd", "requests", "attempts", "unpriced")),
        "unit": _section(counted, sorted(unit, key=lambda r: (r["period"], r["feature"])),
                         ("period", "feature", "usd_per_request")),
    }


def day_counts(querier: TextQuerier, since: datetime, until: datetime, params: dict[str, str],
               marks: Mapping[str, datetime] | None = None) -> str:
    """A subquery of (day, team, feature, cost_usd, requests, attempts, unpriced_attempts) rows for
    ``since <= ts < until``, one per UTC day × team × feature, ``requests`` the distinct requests of that day
    (within the range) and key: a request whose attempts fall on two days counts once in each, as the
    cookbook's cost per request (``feature_daily``) counts them.

    The range's whole days up to ``feature_days``' watermark (read here, once) are numbers from that rollup;
    only the rest — the partial days at the range's ends, and days the day rollup has not caught up with —
    merge request sets (``report_hours``, their partial hours from raw). A week's count then reads about a
    day's request ids, not the week's. ``feature_daily`` answers the whole days the same, but its text
    computes two watermarks and reads the hours after them: ~0.1-0.4 s a read at 5M events against ~0.02 s
    here. Adds the pieces' bounds to ``params``; ``marks``: watermarks read beforehand (``rollups.watermarks``).
    """
    first_day, days_end, _ = _whole_days(querier, since, until, FEATURE_DAYS, marks)
    params |= {"first_day": sql_time(first_day), "days_end": sql_time(days_end)}
    measures = ["cost_usd", "requests", "attempts", "unpriced_attempts"]
    # without a whole day inside the range, days_end = first_day: the two pieces from the sets are the range,
    # cut at its midnight if it has one
    head = between(REPORT_HOURS, "toStartOfDay({t})", measures, since="{since:DateTime64(3, 'UTC')}",
                   until="least({first_day:DateTime64(3, 'UTC')}, {until:DateTime64(3, 'UTC')})", marks=marks)
    rest = between(REPORT_HOURS, "toStartOfDay({t})", measures,
                   since="greatest({days_end:DateTime64(3, 'UTC')}, {since:DateTime64(3, 'UTC')})",
                   until="{until:DateTime64(3, 'UTC')}", marks=marks)
    return (f"(SELECT day, team, feature, cost_usd, requests, attempts, unpriced_attempts FROM {FEATURE_DAYS.name} "
            "FINAL WHERE day >= {first_day:DateTime64(3, 'UTC')} AND day < {days_end:DateTime64(3, 'UTC')} "
            "UNION ALL SELECT period AS day, team, feature, sum(cost_usd) AS cost_usd, "
            "uniqExactMerge(requests) AS requests, sum(attempts) AS attempts, "
            f"sum(unpriced_attempts) AS unpriced_attempts FROM (SELECT * FROM {head} UNION ALL SELECT * FROM {rest}) "
            "GROUP BY day, team, feature)")


def _whole_days(querier: TextQuerier, since: datetime, until: datetime, days: Rollup,
                marks: Mapping[str, datetime] | None = None) -> tuple[datetime, datetime, datetime]:
    """``(first_day, days_end, last_day)``: the range's whole UTC days are ``[first_day, last_day)``, and
    ``days``' rows hold ``[first_day, days_end)`` (its watermark, read here unless the range has no whole day;
    then all three are the same, the first midnight after ``since``). ``marks``: watermarks read beforehand
    (``rollups.watermarks``), used where they hold ``days``'.

    The watermark is read a moment before the rows, as a view's scalar subquery is: a late event stored in
    between is read once its day is recomputed, as it would be through the view.
    """
    start, end = since.astimezone(timezone.utc), until.astimezone(timezone.utc)
    first_day = start.replace(hour=0, minute=0, second=0, microsecond=0)
    first_day += timedelta(days=1) if first_day < start else timedelta(0)
    last_day = max(end.replace(hour=0, minute=0, second=0, microsecond=0), first_day)
    if first_day == last_day:
        return first_day, first_day, last_day
    if marks is not None and days.name in marks:
        cut = marks[days.name].astimezone(timezone.utc)
    else:
        read = query_result(querier, f"SELECT toString({watermark_sql(days)})").scalar()
        cut = datetime.fromisoformat(str(read)).replace(tzinfo=timezone.utc)
    # the days before the watermark are rolled up
    days_end = min(max(cut, first_day), last_day)
    return first_day, days_end, last_day


def _ranked(rows: list[dict[str, Any]], by: str, name: str) -> list[dict[str, Any]]:
    """``ORDER BY {by} DESC, {name}`` as ClickHouse orders: NULLs last in both, names by their bytes
    (UTF-8 keeps code point order, which Python's compares)."""
    by_name = sorted(rows, key=lambda r: (r[name] is None, r[name] or ""))
    return sorted(by_name, key=lambda r: (r[by] is None, -r[by] if r[by] is not None else 0))


def _section(read: QueryResult, rows: list[dict[str, Any]], columns: Sequence[str]) -> QueryResult:
    """``columns`` of ``rows`` (some of ``read``'s), as the section's own query would have returned them."""
    types = dict(zip(read.columns, read.types, strict=True))
    return QueryResult(list(columns), [types[c] for c in columns], [[r[c] for c in columns] for r in rows])


def customer_costs(querier: TextQuerier, since: datetime, until: datetime, params: dict[str, str],
                   marks: Mapping[str, datetime] | None = None) -> str:
    """A subquery of (customer, cost_usd) rows for ``since <= ts < until`` (rows to be summed per customer).

    Hours per customer are many at 50,000 customers, so the range's whole days come from ``customer_days`` up
    to its watermark (read once: :func:`_whole_days`), and the rest — the partial days at the range's ends, and
    days the day rollup has not caught up with — from ``customer_provider_hours`` (their partial hours from raw):
    a week reads about a day's worth of hours, however the range falls. Its hours are per customer × provider,
    where ``customer_hours``' are per customer × team × feature × environment × provider × model: the same sums
    per customer from fewer rows (a day at 50M events: 520,791 rows against 1,174,925). The ``customer_daily``
    view answers the same, but its text repeats the day rollup's watermark in every bound, which costs a fixed
    ~0.1 s a read at 5M events, whatever the range. Adds the pieces' bounds to ``params``; ``marks``:
    watermarks read beforehand (``rollups.watermarks``).
    """
    first_day, days_end, last_day = _whole_days(querier, since, until, CUSTOMER_DAYS, marks)
    span = {"since": "{since:DateTime64(3, 'UTC')}", "until": "{until:DateTime64(3, 'UTC')}"}
    if first_day >= last_day:  # no whole day inside the range
        return between(CUSTOMER_PROVIDER_HOURS, "0", ["cost_usd"], marks=marks, **span)
    params |= {"first_day": sql_time(first_day), "days_end": sql_time(days_end)}
    days = {"since": "{first_day:DateTime64(3, 'UTC')}", "until": "{days_end:DateTime64(3, 'UTC')}"}
    head = between(CUSTOMER_PROVIDER_HOURS, "0", ["cost_usd"], since=span["since"], until=days["since"], marks=marks)
    rest = between(CUSTOMER_PROVIDER_HOURS, "0", ["cost_usd"], since=days["until"], until=span["until"], marks=marks)
    return (f"(SELECT customer, cost_usd FROM {head} UNION ALL "
            f"SELECT customer, cost_usd FROM {CUSTOMER_DAYS.name} FINAL "
            f"WHERE day >= {days['since']} AND day < {days['until']} "
            f"UNION ALL SELECT customer, cost_usd FROM {rest})")


def report_step(since: datetime, until: datetime) -> str:
    """The charts' time step: about a hundred bars or fewer for any period."""
    hours = (until - since).total_seconds() / 3600
    return "5 MINUTE" if hours <= 3 else "1 HOUR" if hours <= 72 else "1 DAY"


def report_periods(since: datetime, until: datetime) -> list[str]:
    """The starts of the buckets of :func:`report_step` that ``since <= ts < until`` touches, as ClickHouse's
    ``toString(toStartOfInterval(…))`` writes them (UTC)."""
    step = timedelta(**{{"MINUTE": "minutes", "HOUR": "hours", "DAY": "days"}[unit]: int(n)
                        for n, unit in [report_step(since, until).split()]})
    start = since.astimezone(timezone.utc).replace(tzinfo=None)
    at = datetime.min + (start - datetime.min) // step * step
    end = until.astimezone(timezone.utc).replace(tzinfo=None)
    periods = []
    while at < end:
        periods.append(f"{at:%Y-%m-%d %H:%M:%S}")
        at += step
    return periods


def build_report(querier: TextQuerier, since: datetime, until: datetime) -> str:
    """The report's HTML for ``since <= ts < until``.

    Three things run at once (vl-convert and chdb both release the GIL), and only their order changes, not
    what any table holds: the charts are drawn on threads of their own, each as soon as the tables it shows
    are read (vl-convert starts its JavaScript runtime on its first call, about a second, so that starts
    before the first query); and when the store can read on a second connection (:class:`SecondReader`), the
    advisor's and the invoices' queries run there beside the report's tables, else after them.
    """
    with ExitStack() as stack:  # left in reverse: the threads are done before the second reader closes
        other = stack.enter_context(querier.second_reader()) if isinstance(querier, SecondReader) else None
        beside = stack.enter_context(ThreadPoolExecutor(max_workers=2, thread_name_prefix="report"))
        beside.submit(charts.warm_up)
        reads = beside.submit(_advice_and_invoices, other, since, until) if other is not None else None
        tables: dict[str, QueryResult] = {}
        drawn: dict[str, Future[charts.Chart]] = {}
        for read in report_reads(querier, since, until):
            tables |= read()
            for name, (_, shown, _) in _SECTIONS.items():
                if name not in drawn and all(table in tables for table in shown):
                    drawn[name] = beside.submit(charts.render, *_chart(name, since, until, tables))
        opportunities, after = reads.result() if reads is not None else _advice_and_invoices(querier, since, until)
        gpu_note = "" if tables["gpu"].rows else "No GPU samples in this period."
        sections = [Section(title, drawn[name].result(), tables[name], gpu_note if name == "gpu" else note)
                    for name, (title, _, note) in _SECTIONS.items()]
    return _page(since, until, tables["totals"].dicts()[0], int(tables["dead"].scalar()), sections, opportunities,
                 after=after)


def _advice_and_invoices(querier: TextQuerier, since: datetime, until: datetime) -> tuple[list[Opportunity], str]:
    return advise(querier, since, until), _invoice_gaps(querier, since, until)


# What "Requests" means on the page (the totals: :func:`day_counts`)
REQUESTS_NOTE = ("Requests are counted per UTC day, team and feature, and summed: a request retried across midnight "
                 "counts in each day.")

# Each section by the name of its table: its title, the tables its chart shows, and its note.
_SECTIONS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "spend": ("Spend over time, by team", ("spend", "alerts"), "Dashed lines mark alerts."),
    "features": ("Top features", ("features",), ""),
    "customers": ("Top customers", ("customers",), ""),
    "models": ("Model mix (tokens)", ("models",),
               "Unpriced models are listed with their unpriced attempts; their tokens still count here."),
    "unit": ("Cost per request, by feature", ("unit", "features", "spend"),
             "The chart draws the ten features that spend most; the table lists every feature. By days, a day's "
             "requests are counted per team (see the totals); by hours or 5 minutes, once in their period."),
    "waste": ("Retry waste: what failed attempts cost", ("waste",), ""),
    "alerts": ("Alerts on the timeline", ("alerts", "spend"), ""),
    "gpu": ("Self-hosted GPUs: cost and utilisation", ("gpu", "spend"), ""),
}


def _chart(name: str, since: datetime, until: datetime, tables: dict[str, QueryResult]) -> tuple[dict[str, Any], str]:
    """The chart of section ``name`` (its Vega-Lite specification and what it shows, for screen readers),
    from the tables :data:`_SECTIONS` says it shows."""
    if name in ("features", "customers", "waste", "models"):
        column, kind = {"features": (1, "spend by feature"), "customers": (1, "spend by customer"),
                        "waste": (2, "cost of failed attempts by feature"), "models": (3, "tokens by model")}[name]
        items = [(r[0], float(r[column] or 0)) for r in tables[name].rows]
        spec = charts.ranking(items, unit=charts.TOKENS, title="tokens") if name == "models" else charts.ranking(items)
        return spec, kind
    spend = tables["spend"]
    # every bucket of the period, not only those with spend: a quiet day shows as a gap on the axis
    periods = sorted(set(report_periods(since, until)) | {r[0] for r in spend.rows})
    if name == "spend":
        by_team: dict[str, list[float]] = defaultdict(lambda: [0.0] * len(periods))
        for period, team, cost in spend.rows:
            by_team[team][periods.index(period)] = float(cost or 0)
        return charts.stacked_bars(periods, dict(by_team), _markers(tables["alerts"])), "spend by team over time"
    if name == "alerts":
        return charts.timeline(periods, _markers(tables["alerts"])), "alerts over time"
    if name == "unit":
        # the ten features that spend most (the "Top features" section's): a line per feature of hundreds is
        # neither readable nor cheap to draw; the table underneath keeps every feature
        top = {r[0] for r in tables["features"].rows}
        unit_series: dict[str, list[float | None]] = defaultdict(lambda: [None] * len(periods))
        for period, feature, usd in tables["unit"].rows:
            if period in periods and usd is not None and feature in top:  # None: the feature's model has no price
                unit_series[feature][periods.index(period)] = float(usd)
        return (charts.lines(periods, dict(unit_series), title="USD per request"),
                "cost per request by feature over time")
    gpu = tables["gpu"]
    gpu_periods = sorted(set(periods) | {r[0] for r in gpu.rows}) if gpu.rows else []
    gpu_cost = [sum(float(r[2] or 0) for r in gpu.rows if r[0] == p_) for p_ in gpu_periods]
    utilisation = [_mean([r[3] for r in gpu.rows if r[0] == p_]) for p_ in gpu_periods]
    if all(u is None for u in utilisation):  # no GPU utilisation source (dcgm/NVML): show KV-cache use instead
        utilisation = [_mean([r[4] for r in gpu.rows if r[0] == p_]) for p_ in gpu_periods]
        line_label = "KV cache use"
    else:
        line_label = "GPU utilisation"
    return (charts.cost_and_utilisation(gpu_periods, gpu_cost, utilisation, line_label),
            "GPU cost and utilisation over time")


def _markers(alerts: QueryResult) -> list[tuple[str, str]]:
    return [(a["since"], f"{a['kind']} ({a['state']})") for a in alerts.dicts()]


def write_report(querier: TextQuerier, since: datetime, until: datetime, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(build_report(querier, since, until), encoding="utf-8")
    return out


def _mean(values: Sequence[Any]) -> float | None:
    present = [float(v) for v in values if v is not None]
    return sum(present) / len(present) if present else None


# -- page ---------------------------------------------------------------------------------------------------


# Narrow screens (a phone is ~390 px) get the narrow drawing of each chart, the rest the wide one; both scale
# down to their column. Tables scroll sideways inside their box rather than widening the page.
_CSS = """
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:812px;padding:0 16px;
color:#222}
h1{font-size:1.5rem;margin-bottom:.2rem}.sub{color:#666;margin-top:0}
.kpis{display:flex;flex-wrap:wrap;gap:.6rem;margin:1rem 0}.kpi{background:#f5f5f7;border-radius:8px;padding:.5rem .9rem}
.kpi b{display:block;font-size:1.3rem}figure{margin:2rem 0}figcaption{font-weight:600;margin-bottom:.4rem}
.chart{display:block;width:100%;height:auto;background:#fff;border:1px solid #eee;border-radius:6px}
.chart.narrow{display:none}
@media (max-width:600px){body{margin:1rem auto}.chart.wide{display:none}.chart.narrow{display:block}}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;font-size:12px;margin-top:.5rem}td,th{border-bottom:1px solid #eee;padding:2px 8px;
text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}.note{color:#666;font-size:12px}
h2{font-size:1.1rem;margin-top:2rem}.advice td{vertical-align:top}
"""


def _page(since: datetime, until: datetime, totals: dict[str, Any], dead: int, sections: list[Section],
          opportunities: list[Opportunity], after: str = "") -> str:
    cost = Decimal(totals["cost_usd"] or 0)
    kpis = [("Cost", f"${cost:,.2f}" if cost >= 1 or cost == 0 else f"${cost:.4f}"),
            ("Requests", f"{int(totals['requests']):,}"),
            ("Attempts", f"{int(totals['attempts']):,}"), ("Unpriced attempts", f"{int(totals['unpriced']):,}"),
            ("Dead letters", f"{dead:,}")]
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>spendstream report</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>AI inference spend</h1><p class=\"sub\">{since:%Y-%m-%d %H:%M} to {until:%Y-%m-%d %H:%M} UTC "
        f"· generated {generated} by spendstream</p>",
        "<div class=\"kpis\">" + "".join(f"<div class=\"kpi\">{k}<b>{v}</b></div>" for k, v in kpis) + "</div>",
        f"<p class=\"note\">{html.escape(REQUESTS_NOTE)}</p>",
    ]
    parts.append(_opportunities(opportunities))
    for section in sections:
        note = f'<p class="note">{html.escape(section.note)}</p>' if section.note else ""
        drawings = (section.chart.narrow_svg.replace("<svg ", '<svg class="chart narrow" ', 1)
                    + section.chart.wide_svg.replace("<svg ", '<svg class="chart wide" ', 1))
        parts.append(f"<figure><figcaption>{html.escape(section.title)}</figcaption>{drawings}{note}"
                     f"<details><summary>Table</summary>{_table(section.table)}</details></figure>")
    parts.append(after)
    parts.append("</body></html>")
    return "\n".join(parts)


def _invoice_gaps(querier: TextQuerier, since: datetime, until: datetime) -> str:
    """The provider's bill against the meter for the period's days (``spendstream reconcile --invoices``)."""
    head = "<h2>Invoices vs metered cost</h2>"
    # the comparison reads raw events of the period: only when there is a bill to compare with
    if not query_result(querier, "SELECT count() FROM invoice_lines WHERE day >= toDate({s:DateTime64(3, 'UTC')}) "
                                 "AND day < toDate({u:DateTime64(3, 'UTC')})",
                        {"s": sql_time(since), "u": sql_time(until)}).scalar():
        return head + ("<p class=\"note\">No invoice lines for these days: import the providers' cost exports with "
                       "<code>spendstream invoices import FILE</code>.</p>")
    comparison = compare_invoices(querier, since, until)
    table = QueryResult(["day", "provider", "model", "invoiced", "metered", "difference", "status"], [], [
        [str(r.day), r.provider, r.model or "(no model)", r.invoiced, r.metered, r.difference, r.status]
        for r in comparison.rows])
    matched = len(comparison.rows) - len(comparison.gaps)
    return (f"{head}<p class=\"note\">{len(comparison.gaps)} gap(s), {matched} match(es) per UTC day × provider × "
            "model; difference is invoiced minus metered.</p>" + _table(table))


def _opportunities(opportunities: list[Opportunity]) -> str:
    if not opportunities:
        return "<h2>Savings opportunities</h2><p class=\"note\">None worth a dollar a month in this period.</p>"
    rows = "".join(
        f"<tr><td class=\"n\">${o.monthly_saving_usd:,.2f}</td><td>{html.escape(o.kind)}</td>"
        f"<td>{html.escape(o.subject)}</td><td>{o.confidence}</td><td>{html.escape(o.evidence)}"
        f"<br><span class=\"note\">{html.escape(o.assumptions)}</span></td></tr>" for o in opportunities)
    return ("<h2>Savings opportunities</h2><p class=\"note\">Estimated monthly savings (this period scaled to 30 "
            "days), from <code>spendstream advise</code>.</p><div class=\"scroll\"><table class=\"advice\">"
            "<thead><tr><th>per month</th>"
            f"<th>lever</th><th>where</th><th>confidence</th><th>evidence and assumptions</th></tr></thead>"
            f"<tbody>{rows}</tbody></table></div>")


def _table(result: QueryResult) -> str:
    if not result.rows:
        return "<p class=\"note\">no rows</p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in result.columns)
    rows = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in result.rows[:200])
    return f"<div class=\"scroll\"><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>"


def _cell(value: Any) -> str:
    if isinstance(value, Decimal):
        return f'<td class="n">{value.normalize():f}</td>' if value else '<td class="n">0</td>'
    if isinstance(value, (int, float)):
        return f'<td class="n">{value:,.4g}</td>' if isinstance(value, float) else f'<td class="n">{value:,}</td>'
    return f"<td>{html.escape('' if value is None else str(value))}</td>"
