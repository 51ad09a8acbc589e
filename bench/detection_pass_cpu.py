"""The whole detection pass (budgets, retry storms, spend anomalies, as notify runs them): wall and CPU per run.

A pass computes the rollups' watermarks once for budgets and storms, and the baselines' hour and the copy of the
fast windows' raw events once for storms and spend, as a round of ``alerting/cycle.py`` does.

    python bench/detection_pass_cpu.py DIR --result /work/scratch/rs/read_scale_5000000.json --runs 9
    python bench/detection_pass_cpu.py DIR --result ... --at 10:17 --refresh   # at that time of the last day

``--at HH:MM`` runs the passes at that time of the history's last day rather than at its end, so two stores
loaded at different times of day are compared at the same hour: the generated traffic follows a daily profile,
and the 50M store's end (13:26) is a busier hour than the 5M store's (10:17). ``--refresh`` first learns that
hour's baselines (untimed, as the first pass of an hour does). Events after that time are in the store, and
every read of a pass is bounded by its ``now``.

On a store `bench/read_scale.py --keep` left behind (a copy: an embedded store opens once), at the loaded
history's end, with the budgets `bench/read_scale_readers.py` evaluates and this hour's baselines as the store
holds them (no refresh). CPU is the process's (chdb runs in-process): on a machine shared with other work it
moves less with the load than wall time does. One warm-up pass, then ``--runs`` timed ones.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from spendstream.alerting.cycle import FAST_WINDOW  # noqa: E402
from spendstream.detect import raw_window  # noqa: E402
from spendstream.detect.anomaly import detect_spend_anomalies  # noqa: E402
from spendstream.detect.baseline import newest_hour, refresh  # noqa: E402
from spendstream.detect.budgets import Budget, evaluate  # noqa: E402
from spendstream.detect.pass_marks import pass_marks  # noqa: E402
from spendstream.detect.retry_storm import detect_retry_storms  # noqa: E402
from spendstream.sinks.embedded import EmbeddedStore  # noqa: E402
from spendstream.sinks.migrations import migrate  # noqa: E402
from spendstream.sinks.store import sql_time  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--result", type=Path, required=True, help="the JSON the loading run wrote")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--at", help="HH:MM (UTC) of the history's last day to run at, instead of its end")
    parser.add_argument("--refresh", action="store_true", help="learn this hour's baselines first (untimed)")
    args = parser.parse_args()
    result = json.loads(args.result.read_text())
    now = datetime.fromisoformat(result["started"])
    if args.at:
        hour, minute = (int(part) for part in args.at.split(":"))
        at = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
        now = at if at <= now else at - timedelta(days=1)
    per_event = Decimal(result["events"]) / 1_000_000
    budgets = [Budget(name="all-monthly", amount_usd=8_000 * per_event),
               Budget(name="team-daily", team="team-00", period="daily", amount_usd=200 * per_event),
               Budget(name="customer-monthly", customer="cust-00000", amount_usd=400 * per_event)]
    store = EmbeddedStore(args.data_dir)
    migrate(store)  # a store kept from before a migration was added, as a worker would
    if args.refresh:
        began = time.perf_counter()
        refresh(store, now)
        print(f"baselines for {now:%Y-%m-%d %H:%M} learned in {time.perf_counter() - began:.1f} s", flush=True)
    window_events = store.query(
        "SELECT count() FROM usage_events FINAL WHERE ts >= {a:DateTime64(3, 'UTC')} AND ts < {b:DateTime64(3, 'UTC')}",
        {"a": sql_time(now - timedelta(minutes=10)), "b": sql_time(now)}).rows[0][0]
    print(f"now {now:%Y-%m-%d %H:%M:%S} UTC: {window_events:,} events in the last 10 minutes", flush=True)
    walls: list[float] = []
    cpus: list[float] = []
    try:
        for run in range(args.runs + 1):
            began, cpu = time.perf_counter(), time.process_time()
            marks = pass_marks(store, budgets)  # once for budgets and storms, as a round of the cycle
            hour = newest_hour(store, now)  # once for storms and spend, as a round of the cycle
            raw = raw_window.read(store, start=now - FAST_WINDOW, end=now)  # once for storms and spend, as a round
            evaluate(store, budgets, now, marks=marks) + detect_retry_storms(
                store, now, marks=marks, hour=hour, raw=raw) + detect_spend_anomalies(store, now, hour=hour, raw=raw)
            raw_window.drop(store, raw)
            if run:
                walls.append(time.perf_counter() - began)
                cpus.append(time.process_time() - cpu)
    finally:
        store.close()

    def p95(values: list[float]) -> float:
        return sorted(values)[math.ceil(0.95 * len(values)) - 1]

    print(f"pass wall median {statistics.median(walls) * 1000:.0f} p95 {p95(walls) * 1000:.0f} ms | "
          f"CPU median {statistics.median(cpus) * 1000:.0f} p95 {p95(cpus) * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
