"""Every verdict a detection pass hands its hysteresis, and every alert, over passes 5 minutes apart: JSON lines.

    PYTHONPATH=. .venv/bin/python bench/detection_verdicts.py COPY --result LOAD.json --hours 3 > this.jsonl

Run it from two checkouts on the same store copy and compare the files (``cmp``): a change to what a detector
reads must leave them identical. Read-only: the detectors' incident state is neither read nor written (each pass
starts from no open incident), so the order of the runs does not matter. Verdicts: kind, subject, hot, very hot,
calm, severity and observed value of every subject hot or with an incident; the budgets are set low so that
they cross thresholds.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from spendstream.alerting.cycle import FAST_WINDOW
from spendstream.detect import raw_window, state
from spendstream.detect.anomaly import detect_spend_anomalies
from spendstream.detect.baseline import newest_hour
from spendstream.detect.budgets import Budget, evaluate
from spendstream.detect.incidents import Hysteresis
from spendstream.detect.pass_marks import pass_marks
from spendstream.detect.retry_storm import detect_retry_storms
from spendstream.sinks.embedded import EmbeddedStore


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--result", type=Path, required=True, help="the JSON the loading run wrote")
    parser.add_argument("--hours", type=float, default=3.0, help="the store's last hours to pass over")
    args = parser.parse_args()
    result = json.loads(args.result.read_text())
    end = datetime.fromisoformat(result["started"])
    per_event = Decimal(result["events"]) / 1_000_000
    budgets = [Budget(name="all-monthly", amount_usd=200 * per_event),
               Budget(name="team-daily", team="team-00", period="daily", amount_usd=5 * per_event),
               Budget(name="feature-daily", feature="feature-000", period="daily", amount_usd=per_event),
               Budget(name="customer-monthly", customer="cust-00000", amount_usd=10 * per_event)]
    out: list[dict[str, Any]] = []
    state.save = lambda *_, **__: None  # type: ignore[assignment]
    state.load_open = lambda *_, **__: {}  # type: ignore[assignment]
    state.load = lambda *_, **__: ({}, {})  # type: ignore[assignment]  (retry storms: open incidents and marks)
    step = Hysteresis.step

    def recorded(self: Hysteresis, before: Any, **verdict: Any) -> Any:
        out.append({k: round(v, 9) if isinstance(v, float) else str(v) for k, v in verdict.items() if k != "onset"})
        return step(self, before, **verdict)

    Hysteresis.step = recorded  # type: ignore[method-assign]
    store = EmbeddedStore(args.data_dir)
    try:
        now = end - timedelta(hours=args.hours)
        while now <= end:
            out.append({"now": str(now)})
            marks = pass_marks(store, budgets)  # once for budgets and storms, as a round of the cycle
            hour = newest_hour(store, now)  # once for storms and spend, as a round of the cycle
            raw = raw_window.read(store, start=now - FAST_WINDOW, end=now)  # once for storms and spend, as a round
            for alert in (evaluate(store, budgets, now, marks=marks)
                          + detect_retry_storms(store, now, marks=marks, hour=hour, raw=raw)
                          + detect_spend_anomalies(store, now, hour=hour, raw=raw)):
                out.append({k: str(v) for k, v in alert.model_dump().items() if k != "id"})
            raw_window.drop(store, raw)
            now += timedelta(minutes=5)
    finally:
        store.close()
    for line in out:
        print(json.dumps(line, sort_keys=True))
    print(f"{sum('hot' in o for o in out)} verdicts, {sum('dedup_key' in o for o in out)} alerts", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
