"""The cookbook's Top spenders as another checkout has it (A) against this checkout's (B), on one store.

    PYTHONPATH=. .venv/bin/python bench/top_spenders_ab.py COPY --result RESULT.json --other /path/to/main \
        --rounds 5

Both queries in one process, alternated A B B A (the order reversed every round), their rows asserted equal every
round; wall and the process's CPU (chdb runs in the process), median and p95 per case. Cases: a day and a week as
``read_scale_retime.py`` asks them (``since`` that many days before ``now``'s date, ``until`` the example's default:
today's hours included), the same ending at today's start (closed days only), top 50, today alone, and a top 2,000
the lists cannot settle. ``now`` is the loaded history's end (``started`` in the result file).
``key_lists.TOP_SPENDERS_SETTLED`` says whether B's lists settled it.
The store is migrated first, as a worker would.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spendstream.sinks.embedded import EmbeddedStore  # noqa: E402
from spendstream.sinks.key_lists import TOP_SPENDERS_SETTLED  # noqa: E402
from spendstream.sinks.migrations import migrate  # noqa: E402

TITLE = "### Top spenders over a period"
_SQL = re.compile(r"```sql\n(?P<sql>.*?)```", re.S)


def _example(checkout: Path) -> str:
    text = (checkout / "docs" / "sql.md").read_text()
    return _SQL.search(text, text.index(TITLE))["sql"].strip()


def cpu_s() -> float:
    used = resource.getrusage(resource.RUSAGE_SELF)
    return used.ru_utime + used.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--result", type=Path, required=True, help="the JSON the loading run wrote")
    parser.add_argument("--other", type=Path, required=True, help="the other checkout (A)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    store = EmbeddedStore(args.data_dir)
    try:
        print("migrations applied", migrate(store), "load average", os.getloadavg(), flush=True)
        now = datetime.fromisoformat(json.loads(args.result.read_text())["started"])
        today = now.date()
        forms = {"A": _example(args.other), "B": _example(Path(__file__).resolve().parents[1])}
        cases = {
            "day (yesterday + today)": {"since": str(today - timedelta(days=1)), "until": "2100-01-01", "top": 10},
            "week (+ today)": {"since": str(today - timedelta(days=7)), "until": "2100-01-01", "top": 10},
            "yesterday (closed)": {"since": str(today - timedelta(days=1)), "until": str(today), "top": 10},
            "week (closed days)": {"since": str(today - timedelta(days=7)), "until": str(today), "top": 10},
            "week (+ today), top 50": {"since": str(today - timedelta(days=7)), "until": "2100-01-01", "top": 50},
            "today (no closed day)": {"since": str(today), "until": "2100-01-01", "top": 10},
            "week, top 2,000 (past the lists)": {"since": str(today - timedelta(days=7)), "until": str(today),
                                                 "top": 2000},
        }
        print("| case | A wall med / p95 · CPU med / p95 ms | B wall med / p95 · CPU med / p95 ms | B from lists |",
              flush=True)
        print("|---|---|---|---|", flush=True)
        for case, params in cases.items():
            bound = store.query(TOP_SPENDERS_SETTLED, params).rows[0]
            expected = store.query(forms["A"], params).rows  # (a warm-up of both)
            store.query(forms["B"], params)
            wall: dict[str, list[float]] = {"A": [], "B": []}
            cpu: dict[str, list[float]] = {"A": [], "B": []}
            for i in range(args.rounds):
                for name in ("A", "B") if i % 2 == 0 else ("B", "A"):
                    started, used = time.perf_counter(), cpu_s()
                    rows = store.query(forms[name], params).rows
                    wall[name].append(time.perf_counter() - started)
                    cpu[name].append(cpu_s() - used)
                    if rows != expected:
                        raise AssertionError(f"{case}: {name}'s rows are not A's")

            def cell(name: str, wall: dict = wall, cpu: dict = cpu) -> str:
                def p95(xs: list[float]) -> float:
                    return sorted(xs)[max(0, round(0.95 * len(xs)) - 1)]
                return (f"{statistics.median(wall[name]) * 1000:,.0f} / {p95(wall[name]) * 1000:,.0f} · "
                        f"{statistics.median(cpu[name]) * 1000:,.0f} / {p95(cpu[name]) * 1000:,.0f}")

            verdict = (f"yes (floor {float(bound[1]):.2f} > unlisted {float(bound[2]):.2f}, lists to {bound[3]})"
                       if bound[0] else f"no: every key summed (floor {float(bound[1] or 0):.2f}, unlisted "
                                        f"{float(bound[2] or 0):.2f})")
            print(f"| {case} | {cell('A')} | {cell('B')} | {verdict} |", flush=True)
        print("load average", os.getloadavg(), flush=True)
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
