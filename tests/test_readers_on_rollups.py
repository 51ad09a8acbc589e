"""Every reader switched to the rollups answers as the same question asked of raw FINAL does, to the last digit.

The raw questions here are the readers' SQL from before the switch, kept as the
reference (rankings get a tie-breaker by name on both sides: which of two equal
costs came first was arbitrary). Each reader is asked over ranges that start and end
inside minutes and hours, that lie inside one minute or across two partial ones, and
that are whole hours — before the rollups are maintained, after, with re-deliveries,
a conflicting re-send and late events pending, and after maintaining again. The
store is the session's shared one, so other tests' rows take part too.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest

from spendstream.advisor import CACHE_RULES, HAIKU_MIN_CACHEABLE, busiest_shares, caching_potential
from spendstream.agents.app import store_usage
from spendstream.agents.stages import process
from spendstream.batches import SourceRecord
from spendstream.focus import unpriced_events
from spendstream.pricing import Pricer
from spendstream.reconcile import stored_per_minute
from spendstream.report import report_step, report_tables
from spendstream.sinks import migrations, ranges, rollups, shapes
from spendstream.sinks.store import query_result, sql_time
from spendstream.sinks.writer import SinkWriter
from tests.test_deploy import grafana_macros
from tests.test_sql_cookbook import EXAMPLES

pytestmark = pytest.mark.integration

PRICER = Pricer()
WINDOW = "ts >= {since:DateTime64(3, 'UTC')} AND ts < {until:DateTime64(3, 'UTC')}"


# The report's "Requests": distinct requests per UTC day × team × feature, summed (a request whose attempts fall
# on two days counts in each, as the cookbook's cost per request counts them)
REQUESTS_PER_DAY = ("SELECT sum(n) FROM (SELECT uniqExact(request_id) AS n FROM usage_events FINAL "
                    f"WHERE {WINDOW} GROUP BY toDate(ts), team, feature)")


def _report_raw(step: str) -> dict[str, str]:
    bucket = f"toStartOfInterval(ts, INTERVAL {step})"
    return {
        "totals": f"SELECT sumIf(total_cost, priced) AS cost_usd, ({REQUESTS_PER_DAY}) AS requests, "
                  f"count() AS attempts, countIf(NOT priced) AS unpriced FROM usage_events FINAL WHERE {WINDOW}",
        "spend": f"SELECT toString({bucket}) AS period, ifNull(team, '(none)') AS team, "
                 f"sumIf(total_cost, priced) AS cost_usd FROM usage_events FINAL WHERE {WINDOW} "
                 "GROUP BY period, team ORDER BY period, team",
        "features": "SELECT ifNull(feature, '(none)') AS feature, sumIf(total_cost, priced) AS cost_usd, "
                    f"count() AS attempts FROM usage_events FINAL WHERE {WINDOW} "
                    "GROUP BY feature ORDER BY cost_usd DESC, feature LIMIT 10",
        "customers": "SELECT ifNull(customer, '(none)') AS customer, sumIf(total_cost, priced) AS cost_usd "
                     f"FROM usage_events FINAL WHERE {WINDOW} GROUP BY customer "
                     "ORDER BY cost_usd DESC, customer LIMIT 10",
        "models": "SELECT model, sumIf(total_cost, priced) AS cost_usd, countIf(NOT priced) AS unpriced, "
                  f"sum(input_tokens + output_tokens) AS tokens FROM usage_events FINAL WHERE {WINDOW} "
                  "GROUP BY model ORDER BY tokens DESC, model LIMIT 10",
        "unit": (f"SELECT toString({bucket}) AS period, ifNull(feature, '(none)') AS feature, "
                 "if(uniqExact(request_id) = 0, 0, toFloat64(sumIf(total_cost, priced) / uniqExact(request_id))) "
                 f"AS usd_per_request FROM usage_events FINAL WHERE {WINDOW} GROUP BY period, feature "
                 "ORDER BY period, feature") if step != "1 DAY" else (
            # by days: a day's cost over its requests counted per team (a request counts once per day and team)
            "SELECT period, ifNull(feature, '(none)') AS feature, "
            "if(sum(n) = 0, 0, toFloat64(sum(cost) / sum(n))) AS usd_per_request "
            f"FROM (SELECT toString({bucket}) AS period, team, feature, sumIf(total_cost, priced) AS cost, "
            f"uniqExact(request_id) AS n FROM usage_events FINAL WHERE {WINDOW} GROUP BY period, team, feature) "
            "GROUP BY period, feature ORDER BY period, feature"),
        "waste": "SELECT ifNull(feature, '(none)') AS feature, countIf(status != 'ok') AS failed_attempts, "
                 "sumIf(total_cost, status != 'ok' AND priced) AS wasted_usd "
                 f"FROM usage_events FINAL WHERE {WINDOW} GROUP BY feature ORDER BY wasted_usd DESC, feature",
    }


RECONCILE_RAW = f"""
    SELECT ifNull(service, ''), formatDateTime(ts, '%F %R'), count() FROM usage_events FINAL
    WHERE {WINDOW} GROUP BY 1, 2"""
BUSIEST = 2
BURSTS_RAW = f"""
    SELECT feature, sum(c) / any(total) AS busiest_share FROM (
        SELECT feature, c, sum(c) OVER (PARTITION BY feature) AS total,
               row_number() OVER (PARTITION BY feature ORDER BY c DESC) AS rank
        FROM (SELECT feature, toStartOfMinute(ts) AS minute, count() AS c FROM usage_events FINAL
              WHERE {WINDOW} AND feature IS NOT NULL GROUP BY feature, minute))
    WHERE rank <= {BUSIEST}
    GROUP BY feature"""
UNPRICED_RAW = f"SELECT count() FROM usage_events FINAL WHERE NOT priced AND {WINDOW}"

COOKBOOK_RAW = {
    "Cost by team per day": """
        SELECT toDate(ts) AS day, team, sumIf(total_cost, priced) AS cost_usd, uniqExact(request_id) AS requests
        FROM usage_events FINAL WHERE ts >= {since:Date} AND ts < {until:Date}
        GROUP BY day, team ORDER BY day, cost_usd DESC, team""",
    "Model mix per day": """
        SELECT day, provider, model, cost_usd,
               toFloat64(cost_usd / sum(cost_usd) OVER (PARTITION BY day)) AS share_of_day
        FROM (SELECT toDate(ts) AS day, provider, model, sumIf(total_cost, priced) AS cost_usd
              FROM usage_events FINAL WHERE ts >= {since:Date} AND ts < {until:Date}
              GROUP BY day, provider, model HAVING cost_usd > 0)
        ORDER BY day, cost_usd DESC, provider, model""",
    "Cost per request, per successful request and per 1k tokens": """
        SELECT toDate(ts) AS day, team, feature,
               if(uniqExact(request_id) = 0, NULL, sumIf(total_cost, priced) / uniqExact(request_id))
                   AS cost_per_request,
               if(uniqExactIf(request_id, status = 'ok') = 0, NULL,
                  sumIf(total_cost, priced) / uniqExactIf(request_id, status = 'ok')) AS cost_per_successful_request,
               if(sum(input_tokens) + sum(output_tokens) = 0, NULL,
                  sumIf(total_cost, priced) * 1000 / (sum(input_tokens) + sum(output_tokens))) AS cost_per_1k_tokens
        FROM usage_events FINAL WHERE ts >= {since:Date} AND ts < {until:Date}
        GROUP BY day, team, feature ORDER BY day, team, feature""",
    "Cost by customer per month (chargeback)": """
        SELECT toStartOfMonth(ts) AS month, customer, sumIf(total_cost, priced) AS cost_usd,
               sumIf(list_cost, priced) AS list_cost_usd, sum(input_tokens) AS input_tokens,
               sum(output_tokens) AS output_tokens
        FROM usage_events FINAL WHERE ts >= toStartOfMonth({since:Date}) AND ts < {until:Date}
        GROUP BY month, customer ORDER BY month, cost_usd DESC, customer""",
    "Top spenders over a period": """
        SELECT team, feature, customer, sum(total_cost) AS cost_usd
        FROM usage_events FINAL
        WHERE priced AND ts >= {since:Date} AND ts < {until:Date}
        GROUP BY team, feature, customer
        ORDER BY cost_usd DESC, team, feature, customer
        LIMIT {top:UInt32}""",
    "Top customers over a period": """
        SELECT customer, sumIf(total_cost, priced) AS cost_usd, sum(input_tokens) AS input_tokens,
               sum(output_tokens) AS output_tokens
        FROM usage_events FINAL
        WHERE ts >= {since:Date} AND ts < {until:Date}
        GROUP BY customer
        HAVING countIf(priced) > 0
        ORDER BY cost_usd DESC, customer
        LIMIT {top:UInt32}""",
}
# ranked on values that tie (an override that saved nothing; one count per model): compared as sets of rows
COOKBOOK_RAW_UNORDERED = {
    "Negotiated savings: list price against what applied": """
        SELECT provider, model, override_id, sum(list_cost) AS list_cost_usd, sum(total_cost) AS cost_usd,
               list_cost_usd - cost_usd AS saved_usd
        FROM usage_events FINAL WHERE priced AND ts >= {since:Date} AND ts < {until:Date}
        GROUP BY provider, model, override_id""",
    "Models without a price": """
        SELECT provider, model, count() AS events, any(unpriced_reason) AS reason
        FROM usage_events FINAL WHERE NOT priced AND ts >= {since:Date} AND ts < {until:Date}
        GROUP BY provider, model""",
}
# asked at now(): compared within one query, so both sides see the same now()
COOKBOOK_RAW_NOW = {
    "Cost by feature per hour, last 24 hours": """
        SELECT toStartOfHour(ts) AS hour, feature, sumIf(total_cost, priced) AS cost_usd, count() AS attempts
        FROM usage_events FINAL
        WHERE ts >= toStartOfHour(now()) - INTERVAL 23 HOUR AND ts < toStartOfHour(now()) + INTERVAL 1 HOUR
        GROUP BY hour, feature""",
    "Spend, requests and failures per team, last 24 hours": """
        SELECT team, sumIf(total_cost, priced) AS cost_usd, uniqExact(request_id) AS requests, count() AS attempts,
               countIf(status != 'ok') AS failed_attempts
        FROM usage_events FINAL
        WHERE ts >= now() - INTERVAL 24 HOUR AND ts < now()
        GROUP BY team
        ORDER BY cost_usd DESC, team""",
}

DASHBOARD = json.loads((Path(__file__).parent.parent / "deploy/grafana/dashboards/spendstream.json").read_text())
PANELS_RAW = {
    "Spend by team": """
        SELECT $__timeInterval(ts) AS time, ifNull(team, '(none)') AS team, sum(total_cost) AS cost_usd
        FROM usage_events FINAL WHERE $__timeFilter(ts) AND priced GROUP BY time, team ORDER BY time, team""",
    "Top features": """
        SELECT ifNull(feature, '(none)') AS feature, sum(total_cost) AS cost_usd
        FROM usage_events FINAL WHERE $__timeFilter(ts) AND priced
        GROUP BY feature ORDER BY cost_usd DESC, feature LIMIT 10""",
    "Top customers": """
        SELECT ifNull(customer, '(none)') AS customer, sum(total_cost) AS cost_usd
        FROM usage_events FINAL WHERE $__timeFilter(ts) AND priced
        GROUP BY customer ORDER BY cost_usd DESC, customer LIMIT 10""",
    "Model mix (tokens)": """
        SELECT model, sum(input_tokens + output_tokens) AS tokens
        FROM usage_events FINAL WHERE $__timeFilter(ts) GROUP BY model ORDER BY tokens DESC, model""",
    "Cost per request by feature": """
        SELECT $__timeInterval(ts) AS time, ifNull(feature, '(none)') AS feature,
               toFloat64(sumIf(total_cost, priced) / uniqExact(request_id)) AS usd_per_request
        FROM usage_events FINAL WHERE $__timeFilter(ts) GROUP BY time, feature ORDER BY time, feature""",
}

# the Top customers panel under its variables: what Grafana passes, and the raw filter it means
TOP_CUSTOMERS_FILTERED = (
    ({"customer": ["(none)"]}, "ifNull(customer, '(none)') = '(none)'"),
    ({"team": ["(none)"]}, "team IS NULL"),
    ({"feature": ["(none)"], "customer": ["(none)"]}, "feature IS NULL AND ifNull(customer, '(none)') = '(none)'"),
    ({"environment": ["prod"]}, "environment = 'prod'"),
)
# Cost per request by feature: requests counted per hour and feature at every team and environment with buckets
# of an hour; the hours' request sets under a filter or with longer buckets (a distinct count adds up only over
# its own keys and periods). What Grafana passes, the raw filter it means, and the bucket in seconds.
COST_PER_REQUEST_CASES = (
    (None, "1", 3600),
    (None, "1", 7200),
    ({"team": ["(none)"]}, "team IS NULL", 3600),
    ({"environment": ["prod"]}, "environment = 'prod'", 3600),
    ({"feature": ["(none)"]}, "ifNull(feature, '(none)') = '(none)'", 3600),  # `feature` is the raw query's alias
)
CUSTOMER_DAILY = """
    SELECT day, customer, sum(attempts), sum(input_tokens), sum(output_tokens), sum(cost_usd), sum(list_cost_usd),
           sum(unpriced_attempts)
    FROM customer_daily(since = {since:DateTime64(3, 'UTC')}, until = {until:DateTime64(3, 'UTC')})
    GROUP BY day, customer ORDER BY day, customer"""
CUSTOMER_DAILY_RAW = f"""
    SELECT toDate(ts) AS day, customer, count(), sum(input_tokens), sum(output_tokens), sumIf(total_cost, priced),
           sumIf(list_cost, priced), countIf(NOT priced)
    FROM usage_events FINAL WHERE {WINDOW} GROUP BY day, customer ORDER BY day, customer"""

# -- the data: bursts of traffic across twelve days, none of it on a minute ----------------------------

def _bursts(run: str, now: datetime) -> tuple[list[datetime], list[dict]]:
    """Bursts every 9 h 7 min over twelve days, each ~10 minutes of events 37.7 s apart, retries crossing minutes."""
    first = now.replace(second=3, microsecond=0) - timedelta(days=12)
    starts = [first + timedelta(hours=9, minutes=7) * b for b in range(32)]
    events = []
    for b, start in enumerate(starts):
        for k in range(16):
            i = b * 16 + k
            events.append({
                "event_id": f"{run}-{i}", "ts": (start + timedelta(seconds=37.7 * k)).isoformat(),
                "request_id": f"{run}-r{i // 3}", "attempt": 1 + i % 3,
                "status": ["ok", "ok", "error", "rate_limited", "ok", "timeout", "invalid_output"][i % 7],
                "provider": "openai" if i % 5 else "self-hosted",
                "model": ("gpt-4o-mini", "gpt-4o")[i % 2] if i % 5 else "rr-llama",
                "deployment": None if i % 5 else f"{run}-llama",
                "service": (f"{run}-api", f"{run}-batch", None)[i % 3],
                "team": None if i % 11 == 0 else f"{run}-t{i % 3}",
                "feature": None if i % 13 == 0 else f"{run}-f{i % 4}",
                "customer": None if i % 17 == 0 else f"{run}-c{i % 9}",
                "environment": "prod", "input_tokens": 900 + 37 * i, "cached_input_tokens": i % 40,
                "output_tokens": 80 + 11 * i + (4_000 if i % 23 == 0 else 0), "reasoning_tokens": i % 15,
                # what the advisor's rollups keep: prompt prefixes (one repeated across windows), tags, caps, mode
                **({"prefix_fingerprint": f"{run}-p{i % 2}", "prefix_tokens": 1_200 + 900 * (i % 2)}
                   if i % 4 else {}),
                "tags": {"latency_sensitive": "false"} if i % 6 == 0 else {"user_facing": "true"} if i % 6 == 1 else {},
                **({"max_tokens": 4_096} if i % 8 == 0 else {}), "mode": "batch" if i % 19 == 0 else "realtime"})
    # a request retried across a midnight that the longer ranges hold (the report counts it in each day)
    midnight = (now - timedelta(days=6)).replace(hour=0, minute=0, second=0, microsecond=0)
    for k, at in enumerate((midnight - timedelta(seconds=10), midnight + timedelta(seconds=10))):
        events.append({**events[k], "event_id": f"{run}-midnight-{k}", "ts": at.isoformat(),
                       "request_id": f"{run}-midnight", "attempt": 1 + k, "team": f"{run}-t0",
                       "feature": f"{run}-f0", "status": ("error", "ok")[k]})
    return [s for s in starts if s < now], [e for e in events if datetime.fromisoformat(e["ts"]) < now]


def _write(store, events: list[dict], partition: int = 0) -> None:
    batch = process([SourceRecord("usage", partition, 0, orjson.dumps(events))], PRICER)
    asyncio.run(store_usage(SinkWriter(store), batch))


def _ranges(starts: list[datetime], now: datetime) -> dict[str, tuple[datetime, datetime]]:
    ms = timedelta(milliseconds=1)
    return {
        "days, inside minutes and hours": (starts[3] + timedelta(minutes=2, seconds=13) + 457 * ms,
                                           starts[20] + timedelta(minutes=4, seconds=41) + 3 * ms),
        "two days, hourly step": (starts[10] + timedelta(minutes=7, seconds=1) + 500 * ms,
                                  starts[15] + timedelta(minutes=1, seconds=2) + 250 * ms),
        "an hour, 5-minute step": (starts[7] - timedelta(hours=1, seconds=10) - 500 * ms,
                                   starts[7] + timedelta(minutes=5, seconds=5) + 500 * ms),
        "inside one minute": (starts[5] + timedelta(seconds=5) + 100 * ms,
                              starts[5] + timedelta(seconds=50) + 200 * ms),
        "two partial minutes": (starts[5] + timedelta(seconds=30), starts[5] + timedelta(minutes=1, seconds=20)),
        "whole hours": (starts[2].replace(minute=0, second=0), starts[25].replace(minute=0, second=0)),
        "the last week": (now - timedelta(days=7), now),
    }


PANEL_SPANS = ("days, inside minutes and hours", "two partial minutes")


# -- the comparisons ------------------------------------------------------------------------------------

def _rows(result) -> list[tuple[str, ...]]:
    return [tuple(str(v) for v in row) for row in result.rows]


def _same_now(store, raw: str, rolled: str, params: dict | None = None) -> tuple[list[str], list[str]]:
    """Both questions in one query (the same now()), as sorted row strings."""
    def side(sql: str) -> str:
        return f"(SELECT arraySort(groupArray(toString(tuple(*)))) FROM ({sql}))"
    return tuple(store.query(f"SELECT {side(raw)}, {side(rolled)}", params).rows[0])


CACHING_RAW = """
    SELECT feature, price_provider_id AS provider, price_model_id AS model, count() AS calls,
           countIf(hit) AS hits, ifNull(sumIf(prefix_tokens, hit), 0) AS repeated_prefix_tokens,
           ifNull(sumIf(least(cached_input_tokens, prefix_tokens), hit), 0) AS already_cached_tokens,
           sumIf(ifNull(toDecimal128(greatest(toInt64(prefix_tokens) - toInt64(cached_input_tokens), 0), 0)
                 * (input_price_per_mtok - cached_input_price_per_mtok) / 1000000, 0), hit) AS saving_usd
    FROM (
        SELECT *, n > 1 AND gap_ms <= TTL AND prefix_tokens >= MIN_TOKENS AND TTL > 0 AS hit
        FROM (
            SELECT feature, price_provider_id, price_model_id, prefix_tokens, cached_input_tokens,
                   input_price_per_mtok, cached_input_price_per_mtok,
                   row_number() OVER w AS n,
                   dateDiff('millisecond', lagInFrame(ts, 1, ts) OVER w, ts) AS gap_ms
            FROM usage_events FINAL
            WHERE WINDOW AND priced AND prefix_fingerprint IS NOT NULL AND prefix_tokens IS NOT NULL
              AND input_price_per_mtok IS NOT NULL
            WINDOW w AS (PARTITION BY feature, price_provider_id, price_model_id, prefix_fingerprint, prefix_tokens
                         ORDER BY ts, event_id ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)))
    GROUP BY feature, provider, model""".replace("WINDOW AND", f"{WINDOW} AND")


def _shape_answers(store, rollup: rollups.Rollup, p: dict) -> tuple[list[str], list[str]]:
    """Every measure of one of the advisor's rollups per period and key over the range: from the rollup
    (``ranges.between``) and from raw, as sorted row strings."""
    keys = ", ".join(rollup.keys)
    rolled = ", ".join(f"{m.of_rollup} AS {m.name}_" for m in rollup.measures)
    # a request set is a uniqExact state in the rollup: raw's side counts the same requests
    raw = ", ".join(f"{m.of_raw.replace('uniqExactState', 'uniqExact')} AS {m.name}_" for m in rollup.measures)
    span = ranges.between(rollup, "{t}", since="{since:DateTime64(3, 'UTC')}", until="{until:DateTime64(3, 'UTC')}")
    return _same_now(store, f"SELECT {rollup.bucket} AS p, {keys}, {raw} FROM usage_events FINAL "
                            f"WHERE {WINDOW} AND {rollup.where} GROUP BY p, {keys}{rollups.having_sql(rollup)}",
                     f"SELECT period, {keys}, {rolled} FROM {span} GROUP BY period, {keys}", p)


def _caching_raw() -> str:
    providers = list(CACHE_RULES)
    ttl = f"transform(price_provider_id, {providers}, {[r[1] * 1000 for r in CACHE_RULES.values()]}, 0)"
    min_tokens = (f"if(positionCaseInsensitive(price_model_id, 'haiku') > 0, {HAIKU_MIN_CACHEABLE}, "
                  f"transform(price_provider_id, {providers}, {[r[0] for r in CACHE_RULES.values()]}, 0))")
    return CACHING_RAW.replace("TTL", ttl).replace("MIN_TOKENS", min_tokens)


def _differences(store, spans: dict[str, tuple[datetime, datetime]]) -> list[str]:
    found = []

    def check(name: str, rolled: list, raw: list) -> None:
        if rolled != raw:
            at = next((i for i, (a, b) in enumerate(zip(rolled, raw, strict=False)) if a != b),
                      min(len(rolled), len(raw)))
            found.append(f"{name}: {len(rolled)} rows from the rollups, {len(raw)} from raw; from row {at}: "
                         f"{rolled[at:at + 1]} against {raw[at:at + 1]}")

    for span, (since, until) in spans.items():
        p = {"since": sql_time(since), "until": sql_time(until)}
        tables = report_tables(store, since, until)
        for name, raw in _report_raw(report_step(since, until)).items():
            check(f"report {name} ({span})", _rows(tables[name]), _rows(store.query(raw, p)))
            assert tables[name].columns == store.query(raw, p).columns, name
        check(f"reconcile stored ({span})", sorted(_rows(stored_per_minute(store, p))),
              sorted(_rows(store.query(RECONCILE_RAW, p))))
        check(f"advisor bursts ({span})", sorted(busiest_shares(store, p, BUSIEST).items()),
              sorted((r["feature"], float(r["busiest_share"])) for r in store.query(BURSTS_RAW, p).dicts()))
        check(f"focus unpriced ({span})", [unpriced_events(store, p)], [store.query(UNPRICED_RAW, p).scalar()])
        for rollup in (*shapes.SHAPES, *rollups.READER_GRAINS, *rollups.DETECTOR_GRAINS, *rollups.PANEL_GRAINS):
            raw, rolled = _shape_answers(store, rollup, p)
            check(f"{rollup.name} ({span})", rolled, raw)
        check(f"advisor caching ({span})", sorted(str(sorted(r.items())) for r in caching_potential(store, p)),
              sorted(str(sorted(r.items())) for r in query_result(store, _caching_raw(), p).dicts()))
        # customer_daily for ranges that start and end inside days, as Grafana's do (its partial days from the hours)
        check(f"customer_daily ({span})", _rows(store.query(CUSTOMER_DAILY, p)),
              _rows(store.query(CUSTOMER_DAILY_RAW, p)))
        if span not in PANEL_SPANS:
            continue
        # Grafana, in whole seconds as the plugin passes them
        for interval_s in (60, 3600):
            for panel in DASHBOARD["panels"]:
                # Grafana never passes an interval below the panel's minimum (the hour panels' is 1h)
                expand = {"from_s": int(since.timestamp()), "to_s": int(until.timestamp()),
                          "interval_s": max(interval_s, _seconds(panel.get("interval", "1s")))}
                if panel["title"] in PANELS_RAW:
                    rolled = store.query(grafana_macros(panel["targets"][0]["rawSql"], **expand))
                    raw = store.query(grafana_macros(PANELS_RAW[panel["title"]], **expand))
                    check(f"panel {panel['title']} ({span}, {interval_s} s)", sorted(_rows(rolled)), sorted(_rows(raw)))
        # the Top customers panel under its variables (above: at All)
        panel = next(p for p in DASHBOARD["panels"] if p["title"] == "Top customers")
        for variables, where in TOP_CUSTOMERS_FILTERED:
            expand = {"from_s": int(since.timestamp()), "to_s": int(until.timestamp()), "interval_s": 60}
            rolled = store.query(grafana_macros(panel["targets"][0]["rawSql"], variables=variables, **expand))
            raw_sql = PANELS_RAW["Top customers"].replace("AND priced", f"AND priced AND {where}")
            raw = store.query(grafana_macros(raw_sql, **expand))
            check(f"panel Top customers ({span}, {variables})", _rows(rolled), _rows(raw))
        panel = next(p for p in DASHBOARD["panels"] if p["title"] == "Cost per request by feature")
        for variables, where, interval_s in COST_PER_REQUEST_CASES:
            expand = {"from_s": int(since.timestamp()), "to_s": int(until.timestamp()), "interval_s": interval_s}
            rolled = store.query(grafana_macros(panel["targets"][0]["rawSql"], variables=variables, **expand))
            raw_sql = PANELS_RAW["Cost per request by feature"].replace("$__timeFilter(ts)",
                                                                        f"$__timeFilter(ts) AND {where}")
            raw = store.query(grafana_macros(raw_sql, **expand))
            check(f"panel Cost per request by feature ({span}, {variables}, {interval_s} s)", _rows(rolled), _rows(raw))
    since, until = spans["days, inside minutes and hours"]
    dates = {"since": since.date().isoformat(), "until": until.date().isoformat(), "top": 10}
    compared = set()
    for heading, _, _, sql in EXAMPLES:
        title = heading.split("\n", 1)[0]  # the heading line (an example may have prose under it)
        compared.add(title)
        if title in COOKBOOK_RAW:
            check(f"cookbook {title}", _rows(store.query(sql, dates)), _rows(store.query(COOKBOOK_RAW[title], dates)))
        if title in COOKBOOK_RAW_UNORDERED:
            check(f"cookbook {title}", sorted(_rows(store.query(sql, dates))),
                  sorted(_rows(store.query(COOKBOOK_RAW_UNORDERED[title], dates))))
    for heading, _, params, sql in EXAMPLES:
        title = heading.split("\n", 1)[0]
        if title in COOKBOOK_RAW_NOW:
            raw, rolled = _same_now(store, COOKBOOK_RAW_NOW[title], sql, params)
            check(f"cookbook {title}", rolled, raw)
    assert {*COOKBOOK_RAW, *COOKBOOK_RAW_UNORDERED, *COOKBOOK_RAW_NOW} <= compared, "a reference without its example"
    movers_raw = migrations._MOVERS.split("CREATE OR REPLACE VIEW spend_movers_weekly AS", 1)[1]
    raw, rolled = _same_now(store, movers_raw, "SELECT * FROM spend_movers_weekly")
    check("spend_movers_weekly", rolled, raw)
    return found


def _seconds(interval: str) -> int:
    """A Grafana interval ("1m", "1h") in seconds."""
    return int(interval[:-1]) * {"s": 1, "m": 60, "h": 3600, "d": 86_400}[interval[-1]]


def _maintain(store) -> None:
    rollups.maintain(store, now=datetime.now(timezone.utc), max_periods=100_000, quiet_s=0, busy_every_s=0)


def test_readers_on_the_rollups_equal_raw_through_duplicates_conflicts_and_late_events(embedded_store) -> None:
    store = embedded_store
    run = f"rr-{uuid.uuid4().hex[:6]}"
    now = datetime.now(timezone.utc)
    starts, events = _bursts(run, now)
    _write(store, events)
    spans = _ranges(starts, now)
    assert store.query(f"SELECT count() FROM usage_events FINAL WHERE {WINDOW} AND startsWith(event_id, {{r:String}})",
                       {"r": run, "since": sql_time(spans["inside one minute"][0]),
                        "until": sql_time(spans["inside one minute"][1])}).scalar() > 0

    assert _differences(store, spans) == [], "before maintaining"
    _maintain(store)
    watermark = store.query("SELECT usage_minutes, usage_hours, advice_hours, prefix_windows, prefix_hours, "
                            "burst_hours FROM rollup_watermarks").rows[0]
    assert min(str(w) for w in watermark) > sql_time(starts[-2])  # what follows reads the rollups, not raw
    # the cookbook's days (days ago) are in the day rollups (read from them unless another test's late
    # event keeps an older day pending: the comparisons stay exact either way)
    assert store.query("SELECT count() FROM team_days FINAL WHERE day < toStartOfDay(now())").scalar() > 0
    assert _differences(store, spans) == [], "maintained"

    # re-deliveries change nothing; a conflicting copy is not applied; late events reopen old minutes,
    # one of them a retry of a request whose first attempt is already rolled up
    _write(store, events[:60], partition=1)
    _write(store, [{**events[7], "output_tokens": 77_777}], partition=2)
    late = [{**events[200 + k], "event_id": f"{run}-late-{k}", "attempt": 4,
             "ts": (datetime.fromisoformat(events[200 + k]["ts"]) + timedelta(seconds=1)).isoformat()}
            for k in range(5)]
    # and a third attempt of the request retried across midnight, into its second day (rolled up by now)
    midnight = events[-1]
    late.append({**midnight, "event_id": f"{run}-late-midnight", "attempt": 3,
                 "ts": (datetime.fromisoformat(midnight["ts"]) + timedelta(seconds=5)).isoformat()})
    _write(store, late)
    watermark = store.query("SELECT usage_minutes FROM rollup_watermarks").scalar()
    assert str(watermark) <= late[0]["ts"][:19].replace("T", " ")
    assert _differences(store, spans) == [], "late events pending"
    _maintain(store)
    assert _differences(store, spans) == [], "maintained again"


def test_cost_per_request_by_feature_counts_requests_per_hour_only_at_all_and_hour_buckets(embedded_store) -> None:
    """At every team and environment, in buckets of an hour, the panel reads requests counted per hour and feature
    (``feature_request_hours``) instead of merging ``usage_hours``' request sets (a week of request ids: ~0.9 s
    of the panel's ~1 s CPU at 50M events, BENCHMARKS.md s18); with a team or environment filter, or buckets
    longer than an hour, it merges the sets. The answers are checked against raw in the test above; this checks
    which branch each case takes: the panel's ``counted`` flag, and that its branch is the one read."""
    store = embedded_store
    migrations.migrate(store)
    panel = next(p for p in DASHBOARD["panels"] if p["title"] == "Cost per request by feature")
    raw_sql = panel["targets"][0]["rawSql"]
    until = datetime(2022, 6, 8, 0, 0, 30, tzinfo=timezone.utc)  # a month of this task's; nothing is written

    def expand(interval_s: int, variables: dict | None) -> str:
        return grafana_macros(raw_sql, from_s=int((until - timedelta(days=7)).timestamp()), to_s=int(until.timestamp()),
                              interval_s=interval_s, variables=variables)

    def counted(interval_s: int, variables: dict | None = None) -> bool:
        sql = expand(interval_s, variables)
        flag = sql.split("WITH ", 1)[1].split(" AS counted\n", 1)[0]
        return bool(store.query(f"SELECT {flag}").scalar())

    assert counted(3600) and counted(1800) and counted(60)  # Grafana passes at least the panel's hour
    for interval_s in (7200, 5400, 3 * 3600, 86_400):
        assert not counted(interval_s), interval_s
    for variables in ({"team": ["t"]}, {"environment": ["prod"]}, {"team": ["t"], "environment": ["prod"]}):
        assert not counted(3600, variables), variables
    assert counted(3600, {"feature": ["f"]})  # a feature filter applies to either branch
    # and the branch it takes is the only one read: a constant WHERE rules the other's parts out
    parts = {t: int(n) for _db, t, n, _rows, _marks in store.query(f"EXPLAIN ESTIMATE {expand(7200, None)}").rows}
    assert parts.get("feature_request_hours", 0) == 0, parts


def test_the_ranges_make_the_partial_periods_matter(embedded_store) -> None:
    """Guard against a vacuous comparison: whole minutes alone miss events the ranges above hold at their ends."""
    store = embedded_store
    run = f"rr-{uuid.uuid4().hex[:6]}"
    now = datetime.now(timezone.utc)
    starts, events = _bursts(run, now)
    _write(store, events[:64])
    _maintain(store)
    since, until = starts[1] + timedelta(seconds=20), starts[3] + timedelta(minutes=3, seconds=30)
    p = {"since": sql_time(since), "until": sql_time(until)}
    exact = ranges.between(rollups.MINUTES, "0", ["attempts"], since="{since:DateTime64(3, 'UTC')}",
                           until="{until:DateTime64(3, 'UTC')}")
    whole = rollups.columns(rollups.MINUTES, "0", ["attempts"],
                            where_rollup="{t} >= toStartOfMinute({since:DateTime64(3, 'UTC')}) + 60 "
                                         "AND {t} < toStartOfMinute({until:DateTime64(3, 'UTC')})",
                            where_raw="{t} >= toStartOfMinute({since:DateTime64(3, 'UTC')}) + 60 "
                                      "AND {t} < toStartOfMinute({until:DateTime64(3, 'UTC')})")
    raw = store.query(f"SELECT count() FROM usage_events FINAL WHERE {WINDOW}", p).scalar()
    assert store.query(f"SELECT sum(attempts) FROM {exact}", p).scalar() == raw
    assert store.query(f"SELECT sum(attempts) FROM {whole}", p).scalar() < raw


def test_the_report_counts_a_request_retried_across_midnight_in_both_days(embedded_store) -> None:
    """The report's "Requests" are counted per UTC day (× team × feature): a request with attempts at 23:59:50
    and 00:00:10 is a request of each day, whether its days come from the request sets (partial days) or from
    ``feature_days`` (whole days), while the exact distinct count over the range would count it once."""
    store = embedded_store
    run = f"md-{uuid.uuid4().hex[:6]}"
    midnight = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=47)
    team, feature = f"{run}-t", f"{run}-f"

    def event(n: int, at: timedelta, request: int, attempt: int, status: str = "ok") -> dict:
        return {"event_id": f"{run}-{n}", "ts": (midnight + at).isoformat(), "request_id": f"{run}-r{request}",
                "attempt": attempt, "status": status, "provider": "openai", "model": "gpt-4o-mini", "team": team,
                "feature": feature, "environment": "prod", "input_tokens": 1_000 + n, "output_tokens": 100}

    _write(store, [event(0, timedelta(seconds=-10), 0, 1, "error"), event(1, timedelta(seconds=10), 0, 2),
                   event(2, timedelta(hours=-2), 1, 1), event(3, timedelta(hours=3), 2, 1)])
    ranges_ = {"two partial days, by hours": (midnight - timedelta(hours=12), midnight + timedelta(hours=12)),
               "a whole day and a partial one, by hours": (midnight - timedelta(days=1),
                                                           midnight + timedelta(hours=12, seconds=1)),
               "days": (midnight - timedelta(days=2, hours=5), midnight + timedelta(days=2))}
    mine = "ifNull(team, '') = {team:String}"
    for state in ("pending", "maintained"):
        if state == "maintained":
            _maintain(store)
            # the whole days of the range by days now come from feature_days, not from the hours' request sets
            assert str(store.query("SELECT feature_days FROM rollup_watermarks").scalar()) > sql_time(midnight)
            assert store.query("SELECT sum(requests) FROM feature_days FINAL WHERE team = {team:String}",
                               {"team": team}).scalar() == 4
        for name, (since, until) in ranges_.items():
            p = {"since": sql_time(since), "until": sql_time(until), "team": team}
            tables = report_tables(store, since, until)
            others = store.query(REQUESTS_PER_DAY.replace("WHERE", f"WHERE NOT {mine} AND"), p).scalar()
            # r0 in both days, r1 and r2 once: 4 requests, where a distinct count over the range says 3
            assert int(tables["totals"].dicts()[0]["requests"]) - others == 4, (state, name)
            assert store.query(f"SELECT uniqExact(request_id) FROM usage_events FINAL WHERE {WINDOW} AND {mine}",
                               p).scalar() == 3
            assert _rows(tables["totals"]) == _rows(store.query(_report_raw(report_step(since, until))["totals"], p))
        # by days, the feature's cost per request on the second day is its cost over r0 and r2
        since, until = ranges_["days"]
        p = {"since": sql_time(since), "until": sql_time(until), "team": team}
        unit = {(r["period"], r["feature"]): r["usd_per_request"] for r in report_tables(store, since, until)
                ["unit"].dicts()}
        cost = store.query("SELECT toFloat64(sumIf(total_cost, priced) / 2) FROM usage_events FINAL "
                           "WHERE ts >= {m:DateTime64(3, 'UTC')} AND ts < {m:DateTime64(3, 'UTC')} + INTERVAL 1 DAY "
                           f"AND {mine}", {**p, "m": sql_time(midnight)}).scalar()
        assert unit[(f"{midnight:%Y-%m-%d %H:%M:%S}", feature)] == cost > 0
    # an hour without usage still has a totals row, as raw's
    since, until = midnight - timedelta(hours=5), midnight - timedelta(hours=4)
    p = {"since": sql_time(since), "until": sql_time(until)}
    assert _rows(report_tables(store, since, until)["totals"]) == _rows(
        store.query(_report_raw(report_step(since, until))["totals"], p)) == [("None", "0", "0", "0")]


def test_between_refuses_a_time_filter_in_where_and_unknown_measures() -> None:
    with pytest.raises(ValueError, match="keys only"):
        ranges.between(rollups.MINUTES, "{t}", since="now()", where="{t} > now()")
    with pytest.raises(ValueError, match="no such measures"):
        ranges.between(rollups.MINUTES, "{t}", ["attempts", "cost"], since="now()")


def test_prefix_hits_and_bursts_per_hour_equal_raw_when_gaps_straddle_the_lifetime(embedded_store) -> None:
    """``prefix_hours`` counts an hour's hits from its calls in order, and ``burst_hours`` keeps each minute's
    calls: calls of one prefix whose gaps fall just inside and just outside the cache lifetime, within an hour
    and across hour boundaries, and ties in the busiest minutes, answer as raw does — maintained or not."""
    store = embedded_store
    run = f"ph-{uuid.uuid4().hex[:6]}"
    hour = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) - timedelta(days=3)
    lifetime = timedelta(seconds=CACHE_RULES["openai"][1])
    ms = timedelta(milliseconds=1)
    # gaps: inside, exactly the lifetime (a hit), just over (none), a tie at one instant, across the hour
    # boundary inside it, then over, just inside, over, and after a long pause
    offsets = [timedelta(minutes=40)]
    for gap in (timedelta(seconds=100), lifetime, lifetime + ms, timedelta(0), timedelta(seconds=2),
                timedelta(minutes=4), timedelta(seconds=290), timedelta(minutes=9), lifetime - ms,
                lifetime + timedelta(seconds=30), timedelta(hours=2)):
        offsets.append(offsets[-1] + gap)
    events = [{"event_id": f"{run}-{i}", "ts": (hour + at).isoformat(), "request_id": f"{run}-r{i}",
               "provider": "openai", "model": "gpt-4o", "feature": f"{run}-f", "input_tokens": 3_000,
               "cached_input_tokens": 500 * (i % 3), "output_tokens": 50, "prefix_fingerprint": f"{run}-p",
               "prefix_tokens": 2_000} for i, at in enumerate(offsets)]
    # a second feature: two minutes with equal calls, so the busiest two minutes tie with a third
    events += [{"event_id": f"{run}-b{i}", "ts": (hour + timedelta(minutes=m, seconds=i)).isoformat(),
                "request_id": f"{run}-br{i}", "provider": "openai", "model": "gpt-4o-mini",
                "feature": f"{run}-bursty", "input_tokens": 10, "output_tokens": 5}
               for i, m in enumerate([3, 3, 3, 7, 7, 7, 12, 12, 12, 50, 75, 75])]
    _write(store, events)
    ranges_ = {"all": (hour, hour + timedelta(hours=5)),
               "from inside the first hour": (hour + timedelta(minutes=41), hour + timedelta(hours=5))}
    for maintained in (False, True):
        if maintained:
            _maintain(store)
        for name, (since, until) in ranges_.items():
            p = {"since": sql_time(since), "until": sql_time(until)}
            rolled = [r for r in caching_potential(store, p) if r["feature"] == f"{run}-f"]
            raw = [r for r in query_result(store, _caching_raw(), p).dicts() if r["feature"] == f"{run}-f"]
            assert rolled == raw, (name, maintained)
            bursts = {k: v for k, v in busiest_shares(store, p, BUSIEST).items() if k.startswith(run)}
            assert bursts == {r["feature"]: float(r["busiest_share"]) for r in store.query(BURSTS_RAW, p).dicts()
                              if r["feature"].startswith(run)}, (name, maintained)
    # the data does what it says: some gaps were hits and some not, and the busiest minutes tie
    (row,) = [r for r in caching_potential(store, {"since": sql_time(hour), "until": sql_time(hour + timedelta(
        hours=5))}) if r["feature"] == f"{run}-f"]
    assert (row["calls"], row["hits"]) == (12, 7), row
    assert busiest_shares(store, {"since": sql_time(hour), "until": sql_time(hour + timedelta(hours=5))},
                          BUSIEST)[f"{run}-bursty"] == 6 / 12


def test_cache_lifetimes_are_shorter_than_an_hour() -> None:
    """The caching estimate asks only the previous hour of ``prefix_hours`` whether an hour's first call
    repeats a prefix: true only while every lifetime is shorter than the rollup's hour."""
    assert all(ttl_s < shapes.PREFIX_HOURS.step.total_seconds() for _, ttl_s in CACHE_RULES.values()), CACHE_RULES
