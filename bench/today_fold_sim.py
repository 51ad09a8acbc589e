"""What Top spenders and chargeback would cost if today were read once, or folded into day rows: a measurement.

    PYTHONPATH=. .venv/bin/python bench/today_fold_sim.py COPY --result RESULT.json --rounds 4

Nothing here is a reader: it builds scratch tables (``sim13_*``) on a *copy* of a read-scale store, from its
``customer_hours``, asks the forms below and drops the tables. ``now`` is the loaded history's end; ``today``
its day's 00:00; ``open`` the start of its open hour. Every form's rows are asserted equal to the cookbook
question's (main's ``customer_hourly``/``customer_daily`` reads), every round.

Top spenders over a period (top 10; the customer bound of s7-topk … s12-top12: no cost is negative, so a key
costs at most its customer's total; the floor is the 10th key among the 10 largest customers' keys):

- ``main``: the cookbook question (``customer_hourly``: every key of every hour of the range, grouped);
- ``s12``: s12-top12's ``top_spenders``: closed days from a customer-first day grain (``sim13_ckd``, ORDER BY
  customer, day, team, feature), today's hours from ``customer_hours`` read twice (totals, candidates);
- ``hour-grain``: today from a customer-first hour grain of today (``sim13_ckh``, customer, hour, team,
  feature: a day partition), read once for the totals and by key range for the candidates;
- ``folded``: today's closed hours folded into the day rows as they close (a row per key in ``sim13_ckd``
  and per customer in ``sim13_cd`` for today up to ``open``): today is one day row plus the open hour,
  read from raw ``usage_events FINAL``.

The forms leave out the watermarks a view would compute (~30 ms CPU, s12): they are an upper bound on what
the storage buys, not a view's time. Chargeback: ``main`` (the cookbook question) against ``folded``
(``sim13_cd``'s days of the month + the open hour from raw).
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

from spendstream.sinks.embedded import EmbeddedStore  # noqa: E402
from spendstream.sinks.migrations import migrate  # noqa: E402

KEY = "team, feature, customer"
MEASURES = "attempts, cost_usd, unpriced_attempts, list_cost_usd, input_tokens, output_tokens"
SUMS = ", ".join(f"sum({m}) AS {m}" for m in MEASURES.split(", "))
RAW = ("count() AS attempts, sumIf(total_cost, priced) AS cost_usd, countIf(NOT priced) AS unpriced_attempts, "
       "sumIf(list_cost, priced) AS list_cost_usd, sum(input_tokens) AS input_tokens, "
       "sum(output_tokens) AS output_tokens")
OF = "(has({c}, ifNull(customer, '')))"


def _t(at: datetime) -> str:
    return f"toDateTime('{at:%Y-%m-%d %H:%M:%S}', 'UTC')"


def build(store: EmbeddedStore, today: datetime, open_: datetime) -> None:
    drop(store)
    t, o = _t(today), _t(open_)
    store.command("""CREATE TABLE sim13_ckd (day DateTime('UTC'), customer Nullable(String),
        team LowCardinality(Nullable(String)), feature LowCardinality(Nullable(String)),
        attempts UInt64, cost_usd Nullable(Decimal(38, 18)), unpriced_attempts UInt64)
        ENGINE = ReplacingMergeTree ORDER BY (customer, day, team, feature) SETTINGS allow_nullable_key = 1""")
    store.command(f"INSERT INTO sim13_ckd SELECT toStartOfDay(hour) AS day, customer, team, feature, sum(attempts), "
                  f"sum(cost_usd), sum(unpriced_attempts) FROM customer_hours FINAL WHERE hour < {o} "
                  f"GROUP BY day, customer, team, feature")
    store.command("""CREATE TABLE sim13_ckh (hour DateTime('UTC'), customer Nullable(String),
        team LowCardinality(Nullable(String)), feature LowCardinality(Nullable(String)),
        attempts UInt64, cost_usd Nullable(Decimal(38, 18)), unpriced_attempts UInt64)
        ENGINE = ReplacingMergeTree ORDER BY (customer, hour, team, feature) SETTINGS allow_nullable_key = 1""")
    store.command(f"INSERT INTO sim13_ckh SELECT hour, customer, team, feature, sum(attempts), sum(cost_usd), "
                  f"sum(unpriced_attempts) FROM customer_hours FINAL WHERE hour >= {t} AND hour < {o} "
                  f"GROUP BY hour, customer, team, feature")
    store.command("""CREATE TABLE sim13_cd (day DateTime('UTC'), customer Nullable(String), attempts UInt64,
        cost_usd Nullable(Decimal(38, 18)), unpriced_attempts UInt64, list_cost_usd Nullable(Decimal(38, 18)),
        input_tokens UInt64, output_tokens UInt64)
        ENGINE = ReplacingMergeTree ORDER BY (day, customer) SETTINGS allow_nullable_key = 1""")
    store.command(f"INSERT INTO sim13_cd SELECT day, customer, {MEASURES} FROM customer_days FINAL WHERE day < {t}")
    store.command(f"INSERT INTO sim13_cd SELECT toStartOfDay(hour) AS day, customer, {SUMS} FROM customer_hours "
                  f"FINAL WHERE hour >= {t} AND hour < {o} GROUP BY day, customer")
    for table in ("sim13_ckd", "sim13_ckh", "sim13_cd"):
        store.command(f"OPTIMIZE TABLE {table} FINAL")


def drop(store: EmbeddedStore) -> None:
    for table in ("sim13_ckd", "sim13_ckh", "sim13_cd"):
        store.command(f"DROP TABLE IF EXISTS {table}")


def bound(totals: str, leaders_keys: str, answer: str) -> str:
    """The customer bound with every piece a top-level WITH scalar (s12-top12's form); ``leaders_keys`` and
    ``answer`` are subqueries of (team, feature, customer, cost_usd, attempts, unpriced_attempts) filtered by
    ``{c}`` (an array of customers, NULL as '')."""
    ranked = ("SELECT team, feature, customer, sum(cost_usd) AS cost_usd FROM ({rows}) GROUP BY team, feature, "
              "customer HAVING sum(attempts) > sum(unpriced_attempts) ORDER BY cost_usd DESC, team, feature, "
              "customer LIMIT 10")
    return f"""
        WITH (SELECT arrayReverseSort(x -> x.1, groupArray((total, c)))
              FROM (SELECT ifNull(customer, '') AS c, sum(cost_usd) AS total FROM ({totals}) GROUP BY c)) AS totals,
             arrayMap(x -> x.2, arraySlice(totals, 1, 10)) AS leaders,
             (SELECT if(count() < 10, 0, min(cost_usd)) FROM ({ranked.format(rows=leaders_keys.format(c='leaders'))}))
                 AS floor,
             arrayMap(x -> x.2, arrayFilter(x -> x.1 >= floor, totals)) AS candidates
        {ranked.format(rows=answer.format(c='candidates'))}"""


def forms(since: datetime, today: datetime, open_: datetime) -> dict[str, str]:
    s, t, o = _t(since), _t(today), _t(open_)
    cols = "team, feature, customer, cost_usd, attempts, unpriced_attempts"
    raw_keys = (f"SELECT {KEY}, sumIf(total_cost, priced) AS cost_usd, count() AS attempts, "
                f"countIf(NOT priced) AS unpriced_attempts FROM usage_events FINAL WHERE ts >= {o} "
                f"AND {OF} GROUP BY {KEY}")
    raw_customers = (f"SELECT customer, sumIf(total_cost, priced) AS cost_usd FROM usage_events FINAL "
                     f"WHERE ts >= {o} GROUP BY customer")
    main = (f"SELECT {KEY}, sum(cost_usd) AS cost_usd FROM customer_hourly(since = toDate('{since:%Y-%m-%d}'), "
            f"until = toDate('2100-01-01')) GROUP BY {KEY} HAVING sum(attempts) > sum(unpriced_attempts) "
            f"ORDER BY cost_usd DESC, {KEY} LIMIT 10")
    closed_keys = f"SELECT {cols} FROM sim13_ckd FINAL WHERE day >= {s} AND day < {t} AND {OF}"
    hours_today = f"SELECT {cols} FROM customer_hours FINAL WHERE hour >= {t} AND hour < {o}"
    s12 = bound(
        totals=(f"SELECT customer, cost_usd FROM customer_days FINAL WHERE day >= {s} AND day < {t} UNION ALL "
                f"SELECT customer, cost_usd FROM customer_hours FINAL WHERE hour >= {t} AND hour < {o} "
                f"UNION ALL {raw_customers}"),
        leaders_keys=closed_keys,
        answer=f"{closed_keys} UNION ALL {hours_today} AND {OF} UNION ALL {raw_keys}")
    hour_grain = bound(
        totals=(f"SELECT customer, cost_usd FROM customer_days FINAL WHERE day >= {s} AND day < {t} UNION ALL "
                f"SELECT customer, cost_usd FROM sim13_ckh FINAL UNION ALL {raw_customers}"),
        leaders_keys=closed_keys,
        answer=f"{closed_keys} UNION ALL SELECT {cols} FROM sim13_ckh FINAL WHERE {OF} UNION ALL {raw_keys}")
    days_keys = f"SELECT {cols} FROM sim13_ckd FINAL WHERE day >= {s} AND {OF}"
    folded = bound(
        totals=f"SELECT customer, cost_usd FROM sim13_cd FINAL WHERE day >= {s} UNION ALL {raw_customers}",
        leaders_keys=days_keys,
        answer=f"{days_keys} UNION ALL {raw_keys}")
    month = since.replace(day=1)
    chargeback_main = (f"SELECT toStartOfMonth(day) AS month, customer, sum(cost_usd) AS cost_usd, "
                       f"sum(list_cost_usd) AS list_cost_usd, sum(input_tokens) AS input_tokens, "
                       f"sum(output_tokens) AS output_tokens FROM customer_daily(since = toDate('{month:%Y-%m-%d}'), "
                       f"until = toDate('2100-01-01')) GROUP BY month, customer "
                       f"ORDER BY month, cost_usd DESC, customer")
    chargeback_folded = (f"SELECT toStartOfMonth(day) AS month, customer, sum(cost_usd) AS cost_usd, "
                         f"sum(list_cost_usd) AS list_cost_usd, sum(input_tokens) AS input_tokens, "
                         f"sum(output_tokens) AS output_tokens FROM (SELECT day, customer, {MEASURES} FROM sim13_cd "
                         f"FINAL WHERE day >= {_t(month)} UNION ALL SELECT toStartOfDay(ts) AS day, customer, {RAW} "
                         f"FROM usage_events FINAL WHERE ts >= {o} GROUP BY day, customer) GROUP BY month, customer "
                         f"ORDER BY month, cost_usd DESC, customer")
    return {"top spenders: main": main, "top spenders: s12": s12, "top spenders: hour-grain": hour_grain,
            "top spenders: folded": folded, "chargeback: main": chargeback_main,
            "chargeback: folded": chargeback_folded}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--result", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--keep", action="store_true", help="leave the sim13_* tables")
    args = parser.parse_args()
    now = datetime.fromisoformat(json.loads(args.result.read_text())["started"])
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    open_ = now.replace(minute=0, second=0, microsecond=0)
    store = EmbeddedStore(args.data_dir)
    try:
        print(f"migrations {migrate(store)} applied", flush=True)
        started = time.perf_counter()
        build(store, today, open_)
        print(f"scratch tables built in {time.perf_counter() - started:.1f} s; rows: " + ", ".join(
            f"{t} {store.query(f'SELECT count() FROM {t}').scalar():,}" for t in ("sim13_ckd", "sim13_ckh",
                                                                                 "sim13_cd")), flush=True)
        session = store._session
        print(f"load {os.getloadavg()}", flush=True)
        for span, days in (("day", 1), ("week", 7)):
            since = today - timedelta(days=days)
            chosen = {n: s for n, s in forms(since, today, open_).items()
                      if span == "week" or not n.startswith("chargeback")}  # the same month either way
            times: dict[str, list[tuple[float, float]]] = {n: [] for n in chosen}
            for r in range(args.rounds):
                answers = {}
                for name in (list(chosen) if r % 2 == 0 else list(reversed(chosen))):
                    wall, cpu = time.perf_counter(), time.process_time()
                    answers[name] = session.query(chosen[name], "CSV").bytes()
                    times[name].append((time.perf_counter() - wall, time.process_time() - cpu))
                for name, answer in answers.items():
                    reference = answers[name.split(":")[0] + ": main"]
                    assert answer == reference, f"{span} {name}: not the question's rows"
            for name, runs in times.items():
                walls, cpus = sorted(r[0] for r in runs), sorted(r[1] for r in runs)
                print(f"| {name}, {span} | {statistics.median(walls) * 1000:,.0f} / {walls[-1] * 1000:,.0f} | "
                      f"{statistics.median(cpus) * 1000:,.0f} / {cpus[-1] * 1000:,.0f} |", flush=True)
        print(f"load {os.getloadavg()}", flush=True)
    finally:
        if not args.keep:
            drop(store)
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
