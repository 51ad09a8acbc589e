"""Where the slow cookbook and Grafana questions spend their time: closed days, today's hours, raw tail, returning rows.

    PYTHONPATH=. .venv/bin/python bench/customer_split.py COPY --result RESULT.json --rounds 3 [--only NAME]

For each question over 300 ms at 50M (BENCHMARKS.md, s10's quiet table), the question as the cookbook or the
dashboard asks it, and its pieces asked alone, each the same grouping over one source:

- *closed days*: the range's periods before today (00:00 of the store's last day), from the rollup it reads;
- *today*: today's periods from the rollup, up to that rollup's watermark;
- *raw tail*: ``usage_events FINAL`` after the watermark (the open hour), grouped the same way;
- *counted*: the whole question wrapped in ``SELECT count()``: what it costs without returning its rows;
- *empty*: the question over an empty range (its views' fixed cost: watermarks, plans).

``now`` is the loaded history's end (``started`` in the result file), as ``read_scale_retime.py`` uses it.
Pieces run in one process, interleaved, the order reversed every round; printed per piece: wall and process
CPU (chdb runs in the process) median of the rounds, result rows, and the rows and bytes chdb says it read.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.read_scale_readers import cookbook_examples, grafana_sql  # noqa: E402
from spendstream.sinks import rollups, shapes  # noqa: E402
from spendstream.sinks.embedded import EmbeddedStore  # noqa: E402
from spendstream.sinks.migrations import migrate  # noqa: E402

DASHBOARD = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "dashboards" / "spendstream.json"


def _t(at: datetime) -> str:
    return f"toDateTime('{at:%Y-%m-%d %H:%M:%S}', 'UTC')"


def questions(store: EmbeddedStore, now: datetime) -> dict[str, str]:
    """name -> SQL, every question and piece measured."""
    cookbook = {title: (params, sql) for title, params, sql in cookbook_examples()}
    panels = {p["title"]: p for p in json.loads(DASHBOARD.read_text())["panels"]}
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    wm = store.query(f"SELECT {rollups.watermark_sql(rollups.CUSTOMER_HOURS)}, "
                     f"{rollups.watermark_sql(rollups.HOURS)}, {rollups.watermark_sql(shapes.CUSTOMER_DAYS)}, "
                     f"{rollups.watermark_sql(rollups.FEATURE_DAYS)}").rows[0]
    wm_ch, wm_h, wm_cd, wm_fd = (rollups._as_datetime(w) for w in wm)
    print(f"now {now}; watermarks: customer_hours {wm_ch}, usage_hours {wm_h}, customer_days {wm_cd}, "
          f"feature_days {wm_fd}", flush=True)
    q: dict[str, str] = {}

    def cook(title: str, since: datetime, until: str = "2100-01-01") -> str:
        params, sql = cookbook[title]
        for name, value in (params | {"since": since.date().isoformat(), "until": until}).items():
            kind = "UInt32" if name == "top" else "Date"
            sql = sql.replace(f"{{{name}:{kind}}}", f"toDate('{value}')" if kind == "Date" else value)
        return sql

    key = "team, feature, customer"
    top = (f"SELECT {key}, sum(cost_usd) AS c FROM {{src}} GROUP BY {key} "
           f"HAVING sum(attempts) > sum(unpriced_attempts) ORDER BY c DESC, {key} LIMIT 10")
    for span_name, days in (("day", 1), ("week", 7)):
        since = (now - timedelta(days=days)).replace(hour=0, minute=0, second=0, microsecond=0)
        sql = cook("Top spenders over a period", since)
        q[f"top spenders {span_name}: question"] = sql
        q[f"top spenders {span_name}: empty"] = cook("Top spenders over a period", now + timedelta(days=3),
                                                     (now + timedelta(days=3)).date().isoformat())
        q[f"top spenders {span_name}: closed days"] = top.format(
            src=f"customer_hours FINAL WHERE hour >= {_t(since)} AND hour < {_t(today)}")
        q[f"top spenders {span_name}: today"] = top.format(
            src=f"customer_hours FINAL WHERE hour >= {_t(today)} AND hour < {_t(wm_ch)}")
        q[f"top spenders {span_name}: raw tail"] = top.replace("sum(cost_usd)", "sumIf(total_cost, priced)").replace(
            "sum(attempts) > sum(unpriced_attempts)", "countIf(priced) > 0").format(
            src=f"usage_events FINAL WHERE ts >= {_t(wm_ch)}")

        sql = cook("Cost by customer per month (chargeback)", since)
        month = since.replace(day=1)
        q[f"chargeback {span_name}: question"] = sql
        q[f"chargeback {span_name}: counted"] = f"SELECT count() FROM ({sql})"
        q[f"chargeback {span_name}: closed days"] = (
            f"SELECT count() FROM (SELECT toStartOfMonth(day) AS m, customer, sum(cost_usd), sum(list_cost_usd), "
            f"sum(input_tokens), sum(output_tokens) FROM customer_days FINAL WHERE day >= {_t(month)} "
            f"AND day < {_t(min(today, wm_cd))} GROUP BY m, customer)")
        q[f"chargeback {span_name}: today"] = (
            f"SELECT count() FROM (SELECT customer, sum(cost_usd), sum(list_cost_usd), sum(input_tokens), "
            f"sum(output_tokens) FROM customer_hours FINAL WHERE hour >= {_t(today)} AND hour < {_t(wm_ch)} "
            f"GROUP BY customer)")

        sql = cook("Cost per request, per successful request and per 1k tokens", since)
        q[f"cost per request {span_name}: question"] = sql
        q[f"cost per request {span_name}: closed days"] = (
            f"SELECT day, team, feature, sum(cost_usd), sum(requests), sum(successful_requests) FROM feature_days "
            f"FINAL WHERE day >= {_t(since)} AND day < {_t(min(today, wm_fd))} GROUP BY day, team, feature")
        q[f"cost per request {span_name}: today"] = (
            f"SELECT team, feature, sum(cost_usd), uniqExactMerge(requests), uniqExactMerge(successful_requests) "
            f"FROM usage_hours FINAL WHERE hour >= {_t(today)} AND hour < {_t(wm_h)} GROUP BY team, feature")
        q[f"cost per request {span_name}: raw tail"] = (
            f"SELECT team, feature, sumIf(total_cost, priced), uniqExact(request_id), "
            f"uniqExactIf(request_id, status = 'ok') FROM usage_events FINAL WHERE ts >= {_t(wm_h)} "
            f"GROUP BY team, feature")

        start = now - timedelta(days=days)
        for title in ("Top customers", "Cost per request by feature"):
            raw = panels[title]["targets"][0]["rawSql"]
            interval = "1 HOUR" if panels[title].get("interval") == "1h" else ("1 MINUTE" if days == 1
                                                                               else "10 MINUTE")
            q[f"grafana {title.lower()} {span_name}: question"] = grafana_sql(
                raw, now=now, span=timedelta(days=days), interval=interval)
        first_hour = start.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        per_customer = ("SELECT customer, sum(cost_usd) AS c FROM {src} GROUP BY customer "
                        "HAVING sum(attempts) > sum(unpriced_attempts) ORDER BY c DESC, customer LIMIT 10")
        q[f"grafana top customers {span_name}: closed days"] = per_customer.format(
            src=f"customer_hours FINAL WHERE hour >= {_t(first_hour)} AND hour < {_t(today)}")
        q[f"grafana top customers {span_name}: today"] = per_customer.format(
            src=f"customer_hours FINAL WHERE hour >= {_t(today)} AND hour < {_t(wm_ch)}")
        per_hour = ("SELECT hour, feature, toFloat64(sum(cost_usd) / uniqExactMerge(requests)) FROM {src} "
                    "GROUP BY hour, feature")
        q[f"grafana cost per request by feature {span_name}: closed days"] = per_hour.format(
            src=f"usage_hours FINAL WHERE hour >= {_t(first_hour)} AND hour < {_t(today)}")
        q[f"grafana cost per request by feature {span_name}: today"] = per_hour.format(
            src=f"usage_hours FINAL WHERE hour >= {_t(today)} AND hour < {_t(wm_h)}")

    movers = [sql for title, (_, sql) in cookbook.items() if title.startswith("Movers")][0]
    q["movers: question"] = movers
    q["movers: counted"] = "SELECT count() FROM spend_movers_weekly"
    q["movers: before today"] = (f"SELECT count() FROM (SELECT {key}, sum(cost_usd) FROM customer_hours FINAL "
                                 f"WHERE hour >= {_t(now - timedelta(days=14))} AND hour < {_t(today)} "
                                 f"GROUP BY {key})")
    q["movers: today"] = (f"SELECT count() FROM (SELECT {key}, sum(cost_usd) FROM customer_hours FINAL "
                          f"WHERE hour >= {_t(today)} AND hour < {_t(wm_ch)} GROUP BY {key})")
    return q


def _estimate(store: EmbeddedStore, sql: str) -> str:
    """Rows ``EXPLAIN ESTIMATE`` says ``sql`` reads, per table (a rough count: marks × granule)."""
    rows: dict[str, int] = {}
    for _db, table, _parts, n, _marks in store.query(f"EXPLAIN ESTIMATE {sql}").rows:
        rows[table] = rows.get(table, 0) + int(n)
    return ", ".join(f"{n:,} {t}" for t, n in rows.items())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--result", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", action="append", default=[], help="pieces whose name starts with this")
    args = parser.parse_args()
    now = datetime.fromisoformat(json.loads(args.result.read_text())["started"])
    store = EmbeddedStore(args.data_dir)
    try:
        print(f"migrations {migrate(store)} applied", flush=True)
        chosen = {n: s for n, s in questions(store, now).items() if not args.only or n.startswith(tuple(args.only))}
        session = store._session
        times: dict[str, list[tuple[float, float, int]]] = {n: [] for n in chosen}
        print(f"load {os.getloadavg()}", flush=True)
        for r in range(args.rounds):
            for name in (list(chosen) if r % 2 == 0 else list(reversed(chosen))):
                wall, cpu = time.perf_counter(), time.process_time()
                res = session.query(chosen[name], "CSV")
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                times[name].append((wall, cpu, len(res.bytes().splitlines())))
        print(f"load {os.getloadavg()}", flush=True)
        print("| piece | wall ms | CPU ms | rows out | rows read (EXPLAIN ESTIMATE) |\n|---|---|---|---|---|")
        for name, runs in times.items():
            print(f"| {name} | {statistics.median(r[0] for r in runs) * 1000:,.0f} | "
                  f"{statistics.median(r[1] for r in runs) * 1000:,.0f} | {runs[-1][2]:,} | "
                  f"{_estimate(store, chosen[name])} |", flush=True)
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
