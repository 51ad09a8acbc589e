"""What a storm's periods cost a pass that reads them: ``storm_periods`` beside the fast window's own read.

    PYTHONPATH=. .venv/bin/python bench/storm_periods_cost.py DIR --result /work/scratch/lead19/rs5.json \
        --at 16:50 --runs 21

A pass reads a storm's periods (:func:`spendstream.detect.retry_storm.storm_periods`: the last half hour of raw,
five-minute periods) only for subjects whose storm sent nothing in its newest minutes, so most passes read none.
On a store ``bench/read_scale.py --keep`` left behind (a copy: an embedded store opens once), at ``--at`` of the
history's last day: the busiest feature and customer of the half hour and their pair, and, for scale, the fast
window's read (:func:`~spendstream.detect.retry_storm.fast_rows` from raw, no round copy) at the same time,
interleaved (A B B A). Wall and process CPU (chdb runs in-process), medians; one warm-up of each.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from datetime import datetime, timedelta
from pathlib import Path

from spendstream.detect.retry_storm import fast_rows, storm_periods
from spendstream.detect.storm import RetryStormRule
from spendstream.sinks.embedded import EmbeddedStore
from spendstream.sinks.store import query_result, sql_time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--result", type=Path, required=True, help="the JSON the loading run wrote")
    parser.add_argument("--at", required=True, help="HH:MM (UTC) of the history's last day")
    parser.add_argument("--runs", type=int, default=21)
    args = parser.parse_args()
    end = datetime.fromisoformat(json.loads(args.result.read_text())["started"])
    hour, minute = (int(part) for part in args.at.split(":"))
    now = end.replace(hour=hour, minute=minute, second=0, microsecond=0)
    now = now if now <= end else now - timedelta(days=1)
    rule = RetryStormRule()
    store = EmbeddedStore(args.data_dir)
    start = now - timedelta(minutes=rule.storm_long_minutes)
    (feature, customer, events), = query_result(store, """
        SELECT (SELECT topK(1)(feature)[1] FROM usage_events WHERE ts >= {a:DateTime64(3, 'UTC')}
                AND ts < {b:DateTime64(3, 'UTC')}),
               (SELECT topK(1)(customer)[1] FROM usage_events WHERE ts >= {a:DateTime64(3, 'UTC')}
                AND ts < {b:DateTime64(3, 'UTC')}),
               (SELECT count() FROM usage_events WHERE ts >= {a:DateTime64(3, 'UTC')}
                AND ts < {b:DateTime64(3, 'UTC')})""", {"a": sql_time(start), "b": sql_time(now)}).rows
    subjects = [f"feature={feature}", f"customer={customer}", f"feature={feature},customer={customer}"]
    reads = {
        "storm_periods (3 subjects, 30 min)": lambda: storm_periods(store, end=now, rule=rule, subjects=subjects),
        "fast_rows (every subject, 10 min)": lambda: fast_rows(store, start=now - timedelta(minutes=10), end=now),
    }
    timed: dict[str, list[tuple[float, float]]] = {name: [] for name in reads}
    for read in reads.values():
        read()  # warm-up
    order = list(reads)
    for k in range(args.runs):
        for name in (order if k % 2 == 0 else order[::-1]):
            wall, cpu = time.perf_counter(), time.process_time()
            reads[name]()
            timed[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    store.close()
    print(f"{args.data_dir} at {now:%Y-%m-%d %H:%M}: {events:,} events in the half hour; {args.runs} runs each")
    for name, runs in timed.items():
        print(f"  {name}: wall median {1000 * statistics.median(w for w, _ in runs):.1f} ms, "
              f"CPU median {1000 * statistics.median(c for _, c in runs):.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
