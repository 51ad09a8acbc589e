"""A detection pass split by statement: which detector and function ran it, rows the engine read, CPU and wall.

    PYTHONPATH=. .venv/bin/python bench/detection_pass_split.py DIR --result LOAD.json --at 16:50 --runs 7

The pass as ``bench/detection_pass_cpu.py`` runs it (watermarks, the baselines' hour and the raw window's copy once,
budgets, retry storms, spend anomalies), at ``--at`` of the history's last day; medians over ``--runs`` after one
warm-up. Rows are chdb's own count of what each statement read from storage (``storage_rows_read``); CPU is the
process's around the statement (the engine runs in-process), so the pass's CPU less the statements' is Python's (and
Arrow inserts').
Run it on two stores (5M and 50M events) to see which statements, or how much Python, grow with the window.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import traceback
from collections import defaultdict
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import spendstream.sinks.embedded as embedded
from spendstream.alerting.cycle import FAST_WINDOW
from spendstream.detect import raw_window
from spendstream.detect.anomaly import detect_spend_anomalies
from spendstream.detect.baseline import newest_hour
from spendstream.detect.budgets import Budget, evaluate
from spendstream.detect.pass_marks import pass_marks
from spendstream.detect.retry_storm import detect_retry_storms
from spendstream.sinks.embedded import EmbeddedStore
from spendstream.sinks.migrations import migrate

_OURS = ("spendstream/detect", "spendstream/sinks/rollups")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--result", type=Path, required=True, help="the JSON the loading run wrote")
    parser.add_argument("--at", default="16:50", help="HH:MM (UTC) of the history's last day")
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    result = json.loads(args.result.read_text())
    end = datetime.fromisoformat(result["started"])
    hour, minute = (int(part) for part in args.at.split(":"))
    now = end.replace(hour=hour, minute=minute, second=0, microsecond=0)
    now = now if now <= end else now - timedelta(days=1)
    per_event = Decimal(result["events"]) / 1_000_000  # the budgets detection_pass_cpu.py evaluates
    budgets = [Budget(name="all-monthly", amount_usd=8_000 * per_event),
               Budget(name="team-daily", team="team-00", period="daily", amount_usd=200 * per_event),
               Budget(name="customer-monthly", customer="cust-00000", amount_usd=400 * per_event)]
    log: list[tuple[str, int, float, float]] = []

    def output(session: Any, sql: str, fmt: str, params: dict[str, Any] | None) -> bytes:
        frames = [f for f in traceback.extract_stack()[:-1] if any(part in f.filename for part in _OURS)]
        label = " < ".join(f"{Path(f.filename).stem}.{f.name}" for f in reversed(frames[-3:]))
        cpu, wall = time.process_time(), time.perf_counter()
        try:
            answer = session.query(sql, fmt, params=params or None)
        except Exception as exc:  # as embedded._output
            raise embedded.StoreError(str(exc)) from exc
        out = answer.bytes() if hasattr(answer, "bytes") else str(answer).encode()
        log.append((label, answer.storage_rows_read(), (time.process_time() - cpu) * 1000,
                    (time.perf_counter() - wall) * 1000))
        return out

    embedded._output = output  # type: ignore[assignment]  (every statement of the store passes here)
    store = EmbeddedStore(args.data_dir)
    migrate(store)
    per: dict[str, list[list[float]]] = defaultdict(lambda: [[], [], [], []])
    passes: list[float] = []
    try:
        for run in range(args.runs + 1):
            log.clear()
            cpu = time.process_time()
            marks = pass_marks(store, budgets)
            hour = newest_hour(store, now)  # once for storms and spend, as a round of the cycle
            evaluate(store, budgets, now, marks=marks)
            raw = raw_window.read(store, start=now - FAST_WINDOW, end=now)  # once for storms and spend, as a round
            detect_retry_storms(store, now, marks=marks, hour=hour, raw=raw)
            detect_spend_anomalies(store, now, hour=hour, raw=raw)
            raw_window.drop(store, raw)
            if not run:
                continue
            passes.append((time.process_time() - cpu) * 1000)
            summed: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0, 0])
            for label, rows, cpu_ms, wall_ms in log:
                for i, value in enumerate((rows, cpu_ms, wall_ms, 1)):
                    summed[label][i] += value
            for label, values in summed.items():
                for i, value in enumerate(values):
                    per[label][i].append(value)
    finally:
        store.close()
    statements = sum(statistics.median(v[1]) for v in per.values())
    print(f"{args.data_dir} at {now:%Y-%m-%d %H:%M}: pass CPU median {statistics.median(passes):.0f} ms, "
          f"statements {statements:.0f} ms (the rest: Python)")
    for label, (rows, cpu_ms, wall_ms, count) in sorted(per.items(), key=lambda kv: -statistics.median(kv[1][1])):
        print(f"| {label} | x{int(count[0])} | {int(statistics.median(rows)):,} rows | "
              f"CPU {statistics.median(cpu_ms):.1f} ms | wall {statistics.median(wall_ms):.1f} ms |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
