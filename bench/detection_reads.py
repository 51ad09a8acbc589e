"""What each detector of a detection pass reads: queries, rows, bytes, time and CPU, per detector and per query.

    python bench/detection_reads.py DIR --result /work/scratch/rs/read_scale_5000000.json [--queries 5]

On a store `bench/read_scale.py --keep` left behind (a copy: an embedded store opens once), at the
loaded history's end, with the detectors `spendstream notify` runs (alerting/cycle.py) and the
budgets `bench/read_scale_readers.py` evaluates. The hourly baseline refresh runs first, once, untimed
unless ``--refresh``: a pass reads its rows, it does not make them. Rows and bytes are ClickHouse's own
count (the ``statistics`` of each JSON result); Arrow reads and writes are counted by time only.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).parent))

from spendstream.detect.anomaly import detect_spend_anomalies  # noqa: E402
from spendstream.detect.baseline import newest_hour  # noqa: E402
from spendstream.detect.baseline import refresh as refresh_baselines  # noqa: E402
from spendstream.detect.budgets import Budget, evaluate  # noqa: E402
from spendstream.detect.cost_drift import CostDriftDetector, detect_cost_drift  # noqa: E402
from spendstream.detect.pass_marks import pass_marks  # noqa: E402
from spendstream.detect.retry_storm import detect_retry_storms  # noqa: E402
from spendstream.sinks.embedded import EmbeddedStore  # noqa: E402
from spendstream.sinks.migrations import migrate  # noqa: E402
from spendstream.sinks.store import QueryResult, query_result  # noqa: E402


class Recording:
    """A store that counts what each statement read (the detectors take any store)."""

    def __init__(self, store: EmbeddedStore) -> None:
        self.store = store
        self.queries: list[dict[str, Any]] = []

    def _note(self, sql: str, began: float, rows: int | None = None, read_bytes: int | None = None) -> None:
        self.queries.append({"sql": " ".join(sql.split())[:120], "s": time.perf_counter() - began, "rows": rows,
                             "bytes": read_bytes})

    def query_text(self, sql: str, params: dict[str, Any] | None = None, fmt: str = "PrettyCompact") -> str:
        began = time.perf_counter()
        out = self.store.query_text(sql, params, fmt)
        stats = json.loads(out).get("statistics", {}) if fmt.startswith("JSON") and out.strip() else {}
        self._note(sql, began, stats.get("rows_read"), stats.get("bytes_read"))
        return out

    def query(self, sql: str, params: dict[str, Any] | None = None) -> QueryResult:
        return query_result(self, sql, params)

    def query_arrow(self, sql: str, params: dict[str, Any] | None = None) -> pa.Table:
        began = time.perf_counter()
        out = self.store.query_arrow(sql, params)
        self._note(sql, began)
        return out

    def command(self, sql: str) -> None:
        began = time.perf_counter()
        self.store.command(sql)
        self._note(sql, began)

    def insert_arrow(self, table: str, data: pa.Table) -> None:
        began = time.perf_counter()
        self.store.insert_arrow(table, data)
        self._note(f"INSERT INTO {table} ({data.num_rows} rows)", began)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--result", type=Path, required=True, help="the JSON the loading run wrote")
    parser.add_argument("--queries", type=int, default=4, help="the costliest queries listed per detector")
    parser.add_argument("--refresh", action="store_true", help="count the hourly baseline refresh too")
    args = parser.parse_args()
    result = json.loads(args.result.read_text())
    now = datetime.fromisoformat(result["started"])
    per_event = Decimal(result["events"]) / 1_000_000  # the budgets bench/read_scale_readers.py evaluates
    budgets = [Budget(name="all-monthly", amount_usd=8_000 * per_event),
               Budget(name="team-daily", team="team-00", period="daily", amount_usd=200 * per_event),
               Budget(name="customer-monthly", customer="cust-00000", amount_usd=400 * per_event)]
    store = EmbeddedStore(args.data_dir)
    try:
        migrate(store)
        recording = Recording(store)
        marks: dict[str, datetime] = {}
        hours: dict[str, datetime | None] = {}
        detectors: dict[str, Callable[[], object]] = {
            "baselines (hourly)": lambda: refresh_baselines(recording, now),  # type: ignore[arg-type]
            # the round's watermarks, once for budgets and storms (alerting/cycle.py): counted on their own
            "watermarks": lambda: marks.update(pass_marks(recording, budgets)),
            "budgets": lambda: evaluate(recording, budgets, now, marks=marks),
            # the baselines' hour, once for storms and spend: counted with the storms, which ask first
            "retry storms": lambda: detect_retry_storms(recording, now, marks=marks,  # type: ignore[arg-type]
                                                        hour=hours.setdefault("h", newest_hour(recording, now))),
            "spend anomalies": lambda: detect_spend_anomalies(recording, now,  # type: ignore[arg-type]
                                                              hour=hours["h"]),
            "cost drift": lambda: detect_cost_drift(recording, now, CostDriftDetector()),
        }
        if not args.refresh:
            refresh_baselines(store, now)
            del detectors["baselines (hourly)"]
        for round_ in ("warm-up", "counted"):
            print(f"## {round_}" if round_ == "counted" else "", end="\n" if round_ == "counted" else "")
            for name, detect in detectors.items():
                recording.queries.clear()
                began, cpu = time.perf_counter(), time.process_time()
                detect()
                took, cpu = time.perf_counter() - began, time.process_time() - cpu  # (the engine runs in-process)
                if round_ == "warm-up":
                    continue
                rows = sum(q["rows"] or 0 for q in recording.queries)
                read = sum(q["bytes"] or 0 for q in recording.queries)
                print(f"| {name} | {len(recording.queries)} statements | {rows:,} rows | {read / 1e6:.1f} MB | "
                      f"{took * 1000:.0f} ms | CPU {cpu * 1000:.0f} ms |")
                for q in sorted(recording.queries, key=lambda q: -(q["rows"] or 0))[:args.queries]:
                    rows_text = "-" if q["rows"] is None else f"{q['rows']:,}"
                    print(f"|   | {rows_text} rows | {(q['bytes'] or 0) / 1e6:.1f} MB | {q['s'] * 1000:.0f} ms | "
                          f"{q['sql']} |")
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
