"""Top spenders: the cookbook's question as main asked it (every key of ``customer_hourly``) against
``top_spenders`` (migration 29), on one migrated store in one process, alternated, rows asserted equal.

    PYTHONPATH=. .venv/bin/python bench/top_spenders_view.py COPY --result RESULT.json --rounds 6

``COPY`` is a copy of a ``read_scale.py --keep`` store (migrated here first); the ranges are the cookbook
runs' (``read_scale_readers``: since the day of ``now`` minus a day or a week, until 2100). Prints wall and
process CPU (chdb runs in this process), median / p95, and the rows ``EXPLAIN ESTIMATE`` lists per table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time
from datetime import datetime, timedelta
from pathlib import Path

from spendstream.sinks.embedded import EmbeddedStore
from spendstream.sinks.migrations import migrate

FULL = """
    SELECT team, feature, customer, sum(cost_usd) AS cost_usd
    FROM customer_hourly(since = {since:Date}, until = {until:Date})
    GROUP BY team, feature, customer
    HAVING sum(attempts) > sum(unpriced_attempts)
    ORDER BY cost_usd DESC, team, feature, customer
    LIMIT {top:UInt32}"""
VIEW = """
    SELECT team, feature, customer, cost_usd
    FROM top_spenders(since = {since:Date}, until = {until:Date}, top = {top:UInt32})
    ORDER BY cost_usd DESC, team, feature, customer"""


def cpu_s() -> float:
    used = resource.getrusage(resource.RUSAGE_SELF)
    return used.ru_utime + used.ru_stime


def p95(values: list[float]) -> float:
    return sorted(values)[max(0, round(0.95 * len(values)) - 1)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--result", type=Path, required=True, help="the loading run's JSON (its start is now)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--top", default="10")
    args = parser.parse_args()
    now = datetime.fromisoformat(json.loads(args.result.read_text())["started"])
    store = EmbeddedStore(args.data_dir)
    try:
        print("migrations applied", migrate(store), flush=True)
        print("load average", os.getloadavg(), flush=True)
        forms = {"main (customer_hourly)": FULL, "top_spenders": VIEW}
        for label, span in (("day", timedelta(days=1)), ("week", timedelta(days=7))):
            params = {"since": (now - span).date().isoformat(), "until": "2100-01-01", "top": args.top}
            expected = store.query(FULL, params).rows
            wall: dict[str, list[float]] = {n: [] for n in forms}
            cpu: dict[str, list[float]] = {n: [] for n in forms}
            for i in range(args.rounds):
                for name in list(forms) if i % 2 == 0 else list(forms)[::-1]:  # A B, B A, ...
                    started, used = time.perf_counter(), cpu_s()
                    rows = store.query(forms[name], params).rows
                    wall[name].append(time.perf_counter() - started)
                    cpu[name].append(cpu_s() - used)
                    if rows != expected:
                        raise AssertionError(f"{label}, {name}: not main's rows")
            for name, sql in forms.items():
                read = store.query(f"EXPLAIN ESTIMATE {sql}", params).dicts()
                tables = ", ".join(f"{r['table']} {int(r['rows']):,}" for r in read)
                times = [f"{statistics.median(v) * 1000:,.0f} / {p95(v) * 1000:,.0f}" for v in (wall[name], cpu[name])]
                print(f"| {label} | {name} | {' | '.join(times)} | {tables} |", flush=True)
        print("load average", os.getloadavg(), flush=True)
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
