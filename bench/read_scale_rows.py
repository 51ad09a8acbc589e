"""Rows each cookbook example and Grafana panel reads, a day and a week, on a store read_scale.py kept.

    PYTHONPATH=. python bench/read_scale_rows.py DIR --result RESULT.json

The same queries and bindings as read_scale_retime.py's ``--kind cookbook`` and ``--kind grafana``
(that run's "now"). Rows read (every table, bookkeeping included) are the engine's own count
(the ``statistics`` of a JSON answer): unlike times, not moved by the machine's load, so before and
after compare exactly. Prints the median of 3 times beside them. Migrates nothing: run it on a store
the retime has already migrated.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from read_scale_readers import DASHBOARD, WINDOWS, cookbook_examples, grafana_sql  # noqa: E402

from spendstream.sinks.embedded import EmbeddedStore  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--result", type=Path, required=True, help="the JSON the loading run wrote")
    args = parser.parse_args()
    now = datetime.fromisoformat(json.loads(args.result.read_text())["started"])
    store = EmbeddedStore(args.data_dir)
    try:
        for title, window, sql, params in _questions(now):
            times, rows = [], 0
            for _ in range(3):
                started = time.perf_counter()
                answer = json.loads(store.query_text(sql, params, fmt="JSON"))
                times.append(time.perf_counter() - started)
                rows = answer["statistics"]["rows_read"]
            print(f"| {title} | {window} | {sorted(times)[1] * 1000:.0f} ms | {rows:,} |", flush=True)
    finally:
        store.close()
    return 0


def _questions(now: datetime):
    for title, params, sql in cookbook_examples():
        if "{since:" not in sql:
            yield title.split("\n")[0], "as written", sql, params
            continue
        for name, (span, _) in WINDOWS.items():
            yield title.split("\n")[0], name, sql, params | {"since": (now - span).date().isoformat()}
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        raw = panel["targets"][0]["rawSql"]
        ranged = "$__time" in raw or "$__fromTime" in raw
        for name, (span, interval) in WINDOWS.items():
            if not ranged and name != "day":
                continue
            if panel.get("interval") == "1h":
                interval = "1 HOUR"
            yield f"Grafana: {panel['title']}", name if ranged else "as written", grafana_sql(
                raw, now=now, span=span, interval=interval), {}


if __name__ == "__main__":
    raise SystemExit(main())
