"""The range views as migration 36 defines them (B) against their former definitions (A): one store, one process.

    PYTHONPATH=. .venv/bin/python bench/view_ab.py COPY --result RESULT.json --rounds 5

For a change to a view's definition, where ``panel_ab.py`` (two checkouts' panel SQL on one store) compares nothing:
the previous definitions are created beside the store's under ``<name>_v33`` (``reader_views`` with its defaults:
what migrations 12-31 created), and every cookbook example and Grafana panel that reads one of them is asked both
ways — the SQL as written (B) and with the views renamed (A) — alternated, the order reversed every round, rows
asserted equal every round; the process's CPU (chdb runs in the process) median and p95. Plus each view alone over
an empty range and over one closed hour (its fixed cost). ``now`` is the loaded history's end, as
``read_scale_retime.py`` uses it. The store must be at migration 36 (a copy: the ``_v33`` views stay in it).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.ab_rounds import alternate, table_rows  # noqa: E402
from bench.read_scale_readers import DASHBOARD, WINDOWS, cookbook_examples, grafana_sql  # noqa: E402
from spendstream.sinks import reader_views, rollups, shapes  # noqa: E402
from spendstream.sinks.embedded import EmbeddedStore  # noqa: E402

OLD = {
    **{name: reader_views.range_view(f"{name}_v33", rollup) for name, rollup in (
        ("usage_minutely", rollups.MINUTES), ("usage_hourly", rollups.HOURS),
        ("customer_hourly", rollups.CUSTOMER_HOURS), ("override_hourly", rollups.OVERRIDE_HOURS),
        ("unpriced_hourly", rollups.UNPRICED_HOURS), ("feature_requests_hourly", rollups.FEATURE_REQUEST_HOURS))},
    "customer_daily": reader_views.layered_view("customer_daily_v33", shapes.CUSTOMER_DAYS),
    "team_daily": reader_views.counted_days_view("team_daily_v33", rollups.TEAM_DAYS),
    "feature_daily": reader_views.counted_days_view("feature_daily_v33", rollups.FEATURE_DAYS),
}
_CALL = re.compile(r"(?<![\w])(" + "|".join(OLD) + r")\(")


def _cases(now: datetime) -> dict[str, tuple[str, dict[str, str]]]:
    """name -> (B's SQL, params) of every cookbook example and panel that reads one of the views, a day and a week."""
    cases = {}
    for title, params, sql in cookbook_examples():
        if not _CALL.search(sql):
            continue
        if "{since:" not in sql:
            cases[f"cookbook {title}"] = (sql, params)
            continue
        for name, (span, _) in WINDOWS.items():
            cases[f"cookbook {title}, {name}"] = (sql, params | {"since": (now - span).date().isoformat()})
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        raw = panel["targets"][0]["rawSql"]
        if not _CALL.search(raw):
            continue
        for name, (span, interval) in WINDOWS.items():
            interval = "1 HOUR" if panel.get("interval") == "1h" else interval
            cases[f"panel {panel['title']}, {name}"] = (grafana_sql(raw, now=now, span=span, interval=interval), {})
    hour = (now - timedelta(days=1)).replace(minute=0, second=0, microsecond=0)
    for view in OLD:
        dated = view in ("team_daily", "feature_daily")
        for label, (since, until) in (("empty", (datetime(2019, 6, 1), datetime(2019, 6, 1, 1))),
                                      ("one closed hour" if not dated else "one closed day",
                                       (hour, hour + timedelta(hours=1)))):
            bounds = ((f"toDate('{since.date()}')", f"toDate('{since.date() + timedelta(days=1)}')") if dated else
                      (f"toDateTime64('{since:%Y-%m-%d %H:%M:%S}', 3, 'UTC')",
                       f"toDateTime64('{until:%Y-%m-%d %H:%M:%S}', 3, 'UTC')"))
            measure = "cost_usd" if view == "feature_requests_hourly" else "attempts"
            cases[f"{view} alone, {label}"] = (f"SELECT sum({measure}) FROM {view}(since = {bounds[0]}, "
                                               f"until = {bounds[1]})", {})
    return cases


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--result", type=Path, required=True, help="the JSON the loading run wrote")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", action="append", default=[], help="cases whose name contains this; repeatable")
    args = parser.parse_args()
    store = EmbeddedStore(args.data_dir)
    try:
        if store.query("SELECT max(version) FROM schema_migrations FINAL").scalar() < 36:
            raise SystemExit("the store is not at migration 36: migrate a copy first")
        for ddl in OLD.values():
            store.command(ddl)
        now = datetime.fromisoformat(json.loads(args.result.read_text())["started"])
        cases = {name: case for name, case in _cases(now).items()
                 if not args.only or any(o in name for o in args.only)}
        both = {name: ((_CALL.sub(lambda m: f"{m[1]}_v33(", sql), params), (sql, params))
                for name, (sql, params) in cases.items()}

        def agree(name: str, a_rows: list, b_rows: list) -> bool:
            # (sorted: an example may order by a value two rows share, "Negotiated savings" by saved_usd; an
            # example of now() asks two different moments)
            return sorted(map(str, a_rows)) == sorted(map(str, b_rows)) or "now()" in both[name][1][0]

        cpu = alternate(both, lambda case: store.query(*case).rows, rounds=args.rounds, agree=agree, announce=True)
        print("| question | A (v33 views) CPU median / p95 ms | B (migration 36) | B/A |\n|---|---|---|---|")
        print("\n".join(table_rows(cpu, ratio=True)))
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
