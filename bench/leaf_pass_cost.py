"""What the spend pass's window scan costs with the feature × customer × model subject: every leaf, only the leaves
the baselines hold, or none (four subjects per event, as before s15). Rows read, groups out, CPU (A B C C B A).

    PYTHONPATH=. .venv/bin/python bench/leaf_pass_cost.py DIR --result LOAD.json [--minutes 10 960] [--runs 7]

On a copy of a store ``bench/read_scale.py --keep`` left, whose baselines were refreshed for its last hour
(``bench/detection_pass_cpu.py DIR --result … --refresh``). The statement is ``anomaly.recent_spend``'s, with the
subjects swapped; rows and bytes are ClickHouse's own count (JSON statistics), CPU the process's (chdb runs
in-process). A longer window stands in for a bigger store's ten minutes (960 minutes of the 525k-event store hold
about as many events as ten minutes of the 50M one, over a day's mix of keys rather than ten minutes').
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from datetime import datetime, timedelta
from pathlib import Path

from spendstream.detect import baseline
from spendstream.detect.subject_hours import MODEL_SQL
from spendstream.sinks.embedded import EmbeddedStore
from spendstream.sinks.store import sql_time

VARIANTS = {
    "every leaf (main)": baseline.SUBJECTS_SQL,
    "leaves the baselines hold": baseline.PASS_SUBJECTS_SQL,
    "no leaf (before s15)": baseline.SUBJECTS_SQL.replace(MODEL_SQL, "'feature=,customer=,model='"),
}


def scan(subjects: str) -> str:
    return f"""
        SELECT subject, toFloat64(sumIf(ifNull(total_cost, 0), priced)) AS usd, toFloat64(count()) AS attempts,
               toFloat64(sumIf(ifNull(total_cost, 0), priced AND ts >= {{c:DateTime64(3, 'UTC')}})) AS late_usd,
               toFloat64(countIf(ts >= {{c:DateTime64(3, 'UTC')}})) AS late_attempts
        FROM (SELECT {subjects} AS subject, ts, total_cost, priced
              FROM usage_events FINAL WHERE ts >= {{a:DateTime64(3, 'UTC')}} AND ts < {{b:DateTime64(3, 'UTC')}})
        WHERE NOT endsWith(subject, '=') GROUP BY subject"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--result", type=Path, required=True, help="the JSON the loading run wrote")
    parser.add_argument("--minutes", type=int, nargs="+", default=[10, 960])
    parser.add_argument("--runs", type=int, default=7, help="timed runs per variant, after one warm-up each")
    args = parser.parse_args()
    now = datetime.fromisoformat(json.loads(args.result.read_text())["started"])
    store = EmbeddedStore(args.data_dir)
    try:
        leaves = baseline.leaves_params(baseline.newest_hour(store, now))
        for minutes in args.minutes:
            params = {"a": sql_time(now - timedelta(minutes=minutes)), "b": sql_time(now),
                      "c": sql_time(now - timedelta(minutes=minutes / 2)), **leaves}
            events = store.query("SELECT count() FROM usage_events FINAL WHERE ts >= {a:DateTime64(3, 'UTC')} "
                                 "AND ts < {b:DateTime64(3, 'UTC')}", params).scalar()
            print(f"\n{minutes} minutes to {now:%Y-%m-%d %H:%M} UTC: {events:,} events")
            order = [*VARIANTS, *reversed(VARIANTS)]
            cpu: dict[str, list[float]] = {name: [] for name in VARIANTS}
            stats: dict[str, dict] = {}
            for name in VARIANTS:  # warm-up, and the counts (they do not move with the load)
                out = json.loads(store.query_text(scan(VARIANTS[name]), params, fmt="JSON"))
                stats[name] = {"rows": out["statistics"]["rows_read"], "bytes": out["statistics"]["bytes_read"],
                               "groups": len(out["data"]),
                               "leaves": sum(",model=" in row["subject"] for row in out["data"])}
            for _ in range((args.runs + 1) // 2):
                for name in order:
                    began = time.process_time()
                    store.query_text(scan(VARIANTS[name]), params, fmt="JSON")
                    cpu[name].append(time.process_time() - began)
            print("| subjects | rows read | MB read | groups | of them leaves | CPU median | CPU min |")
            print("|---|---|---|---|---|---|---|")
            for name, s in stats.items():
                print(f"| {name} | {s['rows']:,} | {s['bytes'] / 1e6:.1f} | {s['groups']:,} | {s['leaves']:,} | "
                      f"{statistics.median(cpu[name]) * 1000:.1f} ms | {min(cpu[name]) * 1000:.1f} ms |")
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
