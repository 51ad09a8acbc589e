"""Top-N by team × feature × customer, pruned by a customer bound, against the full grouping (measured, not kept).

The cookbook's "Top spenders over a period" and "Movers" group every team × feature × customer key of
their range (~400k keys for a week at 5M events, ~600k for Movers' fortnight), and the grouping, not the
read, is their cost (BENCHMARKS.md, s9). Since costs are never negative (the contract refuses a negative
price or provider cost), a key's cost is at most its customer's over the same range, and a Movers key's
|this week - last week| at most the larger of its customer's two weekly totals. Forms timed here, each
asserted equal to the full grouping, row for row, every round:

- ``full``: the cookbook's question as written (``customer_hourly`` / ``spend_movers_weekly``'s SQL);
- ``two-pass``: the customers' totals from ``customer_days`` (+ hours after its watermark), the
  ``top``-th largest key among the 20 biggest customers as a floor, then only customers whose total
  reaches the floor grouped (NULL customers always: one key per team × feature at most);
- ``one-pass+fallback`` (Top spenders only): the 400 biggest customers' keys grouped once; the answer
  stands when its last cost exceeds the 401st customer's total, else a full grouping runs (its range
  switched to empty when not needed).

The scalars (totals, floor) are computed once in one ``WITH``. Written as ``IN (subquery)`` inside a
parameterized view, or inside each ``UNION ALL`` branch of a range, every copy was computed again.

    PYTHONPATH=. .venv/bin/python bench/topn_pruning.py COPY_OF_THE_5M_STORE --rounds 5

``now`` (Movers' week boundary) is a parameter, so that the rounds ask the same question.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time
from collections.abc import Sequence
from datetime import date, timedelta
from pathlib import Path

from spendstream.sinks.embedded import EmbeddedStore
from spendstream.sinks.ranges import between
from spendstream.sinks.reader_views import SINCE, UNTIL, movers
from spendstream.sinks.rollups import CUSTOMER_HOURS, Rollup, watermark_sql
from spendstream.sinks.shapes import CUSTOMER_DAYS

MEASURES = ["cost_usd", "attempts", "unpriced_attempts"]
PRICED = "GROUP BY team, feature, customer HAVING sum(attempts) > sum(unpriced_attempts)"
PROBED, ONE_PASS = 20, 400  # customers whose keys give the floor; customers grouped by the one-pass form
NOW = "{now:DateTime64(3, 'UTC')}"
NEVER = "toDateTime64('2100-01-01 00:00:00', 3, 'UTC')"


def with_scalars(select: str, grains: Sequence[Rollup], scalars: Sequence[str]) -> str:
    """``select`` under one ``WITH``: each rollup's watermark (as ``reader_views.computed_once``), then ``scalars``."""
    hoisted = []
    for rollup in grains:
        name = f"{rollup.name}_watermark"
        select = select.replace(watermark_sql(rollup), name)
        scalars = [s.replace(watermark_sql(rollup), name) for s in scalars]
        hoisted.append(f"({watermark_sql(rollup)}) AS {name}")
    return f"WITH {', '.join([*hoisted, *scalars])}\n{select}"


def customer_days(since: str, until: str) -> str:
    """Per day × customer, cost only: ``customer_daily``'s pieces for ``since <= ts < until``."""
    cut = f"({watermark_sql(CUSTOMER_DAYS)})"
    before = between(CUSTOMER_DAYS, "toDate({t})", ["cost_usd"], since=since, until=f"least({until}, {cut})")
    after = between(CUSTOMER_HOURS, "toDate({t})", ["cost_usd"], since=f"greatest({since}, {cut})", until=until)
    return (f"SELECT period AS day, customer, cost_usd FROM {before} "
            f"UNION ALL SELECT period AS day, customer, cost_usd FROM {after}")


def only(rows: str, customers: str) -> str:
    # outside `between`: a scalar referenced inside its branches was computed once per branch
    return f"{rows} WHERE customer IS NULL OR customer IN (SELECT arrayJoin({customers}))"


def top_spenders() -> dict[str, str]:
    order = "ORDER BY cost_usd DESC, team, feature, customer LIMIT {top:UInt32}"
    rows = between(CUSTOMER_HOURS, "{t}", MEASURES, since=SINCE, until=UNTIL)
    full = (f"SELECT team, feature, customer, sum(cost_usd) AS cost_usd "
            f"FROM customer_hourly(since = {SINCE}, until = {UNTIL}) {PRICED} {order}")
    ranked = f"""(SELECT (groupArray(customer), groupArray(total)) FROM (
        SELECT customer, ifNull(sum(cost_usd), 0) AS total FROM ({customer_days(SINCE, UNTIL)})
        WHERE customer IS NOT NULL GROUP BY customer ORDER BY total DESC)) AS ranked"""
    floor = f"""(SELECT if(count() < {{top:UInt32}}, 0, min(cost_usd)) FROM (
        SELECT sum(cost_usd) AS cost_usd FROM {only(rows, f"arraySlice(ranked.1, 1, {PROBED})")} {PRICED}
        ORDER BY cost_usd DESC LIMIT {{top:UInt32}})) AS floor"""
    candidates = "arraySlice(ranked.1, 1, arrayCount(total -> total >= floor, ranked.2))"
    two_pass = with_scalars(f"SELECT team, feature, customer, sum(cost_usd) AS cost_usd "
                            f"FROM {only(rows, candidates)} {PRICED} {order}",
                            (CUSTOMER_DAYS, CUSTOMER_HOURS), (ranked, floor))
    biggest = ranked.replace("ORDER BY total DESC)", f"ORDER BY total DESC LIMIT {ONE_PASS + 1})")
    pruned = f"""(SELECT groupArray((team, feature, customer, cost_usd)) FROM (
        SELECT team, feature, customer, sum(cost_usd) AS cost_usd
        FROM {only(rows, f"arraySlice(ranked.1, 1, {ONE_PASS})")} {PRICED} {order})) AS pruned"""
    # strictly above the next customer's total: a tie could sort before the last row
    exact = (f"(length(pruned) = {{top:UInt32}} AND (length(ranked.2) <= {ONE_PASS} "
             f"OR pruned[-1].4 > ranked.2[{ONE_PASS + 1}])) AS exact")
    fallback = between(CUSTOMER_HOURS, "{t}", MEASURES, since=f"if(exact, {UNTIL}, {SINCE})", until=UNTIL)
    one_pass = with_scalars(f"""SELECT * FROM (
        SELECT t.1 AS team, t.2 AS feature, t.3 AS customer, t.4 AS cost_usd
        FROM (SELECT arrayJoin(pruned) AS t) WHERE exact
        UNION ALL SELECT team, feature, customer, sum(cost_usd) AS cost_usd FROM {fallback} {PRICED}) {order}""",
                            (CUSTOMER_DAYS, CUSTOMER_HOURS), (biggest, pruned, exact))
    return {"full": full, "two-pass": two_pass, "one-pass+fallback": one_pass}


def spend_movers() -> dict[str, str]:
    columns = "team, feature, customer, this_week_usd, last_week_usd, change_usd, change_ratio"
    order = "ORDER BY abs(change_usd) DESC, team, feature, customer LIMIT {top:UInt32}"
    full = f"SELECT {columns} FROM ({movers().split(' AS', 1)[1].replace('now()', NOW)}) {order}"
    this_week = between(CUSTOMER_HOURS, "'this'", MEASURES, since=f"{NOW} - INTERVAL 7 DAY")
    last_week = between(CUSTOMER_HOURS, "'last'", MEASURES, since=f"{NOW} - INTERVAL 14 DAY",
                        until=f"{NOW} - INTERVAL 7 DAY")
    rows = f"(SELECT * FROM {this_week} UNION ALL SELECT * FROM {last_week})"

    def movers_of(customers: str) -> str:
        return f"""SELECT team, feature, customer, sumIf(cost_usd, period = 'this') AS this_week_usd,
                   sumIf(cost_usd, period = 'last') AS last_week_usd, this_week_usd - last_week_usd AS change_usd,
                   if(last_week_usd = 0, NULL, toFloat64(this_week_usd / last_week_usd) - 1) AS change_ratio
            FROM {only(rows, customers)} {PRICED}"""

    # the day holding the weeks' boundary counts in both weeks: an upper bound either way
    boundary = f"toDate({NOW} - INTERVAL 7 DAY)"
    ranked = f"""(SELECT (groupArray(customer), groupArray(bound)) FROM (
        SELECT customer, greatest(ifNull(sumIf(cost_usd, day >= {boundary}), 0),
                                  ifNull(sumIf(cost_usd, day <= {boundary}), 0)) AS bound
        FROM ({customer_days(f"{NOW} - INTERVAL 14 DAY", NEVER)})
        WHERE customer IS NOT NULL GROUP BY customer ORDER BY bound DESC)) AS ranked"""
    floor = f"""(SELECT if(count() < {{top:UInt32}}, 0, min(c)) FROM (
        SELECT abs(change_usd) AS c FROM ({movers_of(f"arraySlice(ranked.1, 1, {PROBED})")})
        ORDER BY c DESC LIMIT {{top:UInt32}})) AS floor"""
    candidates = "arraySlice(ranked.1, 1, arrayCount(b -> b >= floor, ranked.2))"
    two_pass = with_scalars(f"SELECT {columns} FROM ({movers_of(candidates)}) {order}",
                            (CUSTOMER_DAYS, CUSTOMER_HOURS), (ranked, floor))
    return {"full": full, "two-pass": two_pass}


def cpu_s() -> float:
    used = resource.getrusage(resource.RUSAGE_SELF)  # chdb runs in this process
    return used.ru_utime + used.ru_stime


def timed(store: EmbeddedStore, title: str, forms: dict[str, str], params: dict[str, str], rounds: int) -> None:
    expected = store.query(forms["full"], params).rows
    wall: dict[str, list[float]] = {name: [] for name in forms}
    cpu: dict[str, list[float]] = {name: [] for name in forms}
    for i in range(rounds):
        for name in list(forms) if i % 2 == 0 else list(forms)[::-1]:  # A B C, C B A, ...
            started, used = time.perf_counter(), cpu_s()
            rows = store.query(forms[name], params).rows
            wall[name].append(time.perf_counter() - started)
            cpu[name].append(cpu_s() - used)
            if rows != expected:
                raise AssertionError(f"{title}, {name}: not the full grouping's rows")
    for name in forms:
        print(f"| {title} | {name} | {statistics.median(wall[name]) * 1000:.0f} ms "
              f"| {statistics.median(cpu[name]) * 1000:.0f} ms |", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", type=Path, help="a copy of a read_scale.py store (opened by this process alone)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--now", default="2026-12-01 19:30:00", help="Movers' now (UTC)")
    parser.add_argument("--day", default="2026-11-30", help="the day range's start (a week starts 6 days earlier)")
    args = parser.parse_args()
    store = EmbeddedStore(args.data_dir)
    try:
        print("load average", os.getloadavg())
        print("| question | form | wall, median | CPU, median |\n|---|---|---|---|")
        week = (date.fromisoformat(args.day) - timedelta(days=6)).isoformat()
        for label, since in (("day", args.day), ("week", week)):
            params = {"since": f"{since} 00:00:00", "until": "2100-01-01 00:00:00", "top": "10"}
            timed(store, f"Top spenders, from {label}", top_spenders(), params, args.rounds)
        timed(store, "Movers, top 20", spend_movers(), {"now": args.now, "top": "20"}, args.rounds)
        print("load average", os.getloadavg())
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
