"""One Grafana panel's query as another checkout has it (A) against this checkout's (B), on one store.

    PYTHONPATH=. .venv/bin/python bench/panel_ab.py COPY --result RESULT.json --other /path/to/main-worktree \
        --panel "Cost per request by feature" --rounds 5

For a change to a panel's SQL: both queries in one process, alternated, the order reversed every round, their rows
asserted equal every round; the process's CPU (chdb runs in the process) median and p95 per case. Cases: a day and a
week at every variable's All, the same with a team filter (``team-03``), and a week in 2-hour buckets. ``now`` is
the loaded history's end (``started`` in the result file), as ``read_scale_retime.py`` uses it. The store is
migrated first, as a worker would (the other checkout's query must run on the migrated store).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.ab_rounds import alternate, table_rows  # noqa: E402
from bench.read_scale_readers import DASHBOARD, grafana_sql  # noqa: E402
from spendstream.sinks.embedded import EmbeddedStore  # noqa: E402
from spendstream.sinks.migrations import migrate  # noqa: E402

TEAM = "'team-03'"


def _panel_sql(dashboard: Path, title: str) -> str:
    return next(p for p in json.loads(dashboard.read_text())["panels"] if p["title"] == title)["targets"][0]["rawSql"]


def _team_filtered(sql: str) -> str:
    """``sql`` (expanded at All) with the team variable set to one team, as Grafana's singlequote writes it."""
    return sql.replace("'__all__' IN ('__all__') OR ifNull(team", f"'__all__' IN ({TEAM}) OR ifNull(team").replace(
        "ifNull(team, '(none)') IN ('__all__')", f"ifNull(team, '(none)') IN ({TEAM})").replace(
        "WITH '__all__' IN ('__all__') AND", f"WITH '__all__' IN ({TEAM}) AND")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--result", type=Path, required=True, help="the JSON the loading run wrote")
    parser.add_argument("--other", type=Path, required=True, help="the other checkout (A)")
    parser.add_argument("--panel", required=True)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    store = EmbeddedStore(args.data_dir)
    try:
        print("migrations applied", migrate(store), flush=True)
        now = datetime.fromisoformat(json.loads(args.result.read_text())["started"])
        a_raw = _panel_sql(args.other / "deploy/grafana/dashboards/spendstream.json", args.panel)
        b_raw = _panel_sql(DASHBOARD, args.panel)
        cases: dict[str, tuple[str, str]] = {}
        spans = (("day", 1, "1 HOUR"), ("week", 7, "1 HOUR"), ("week, 2-hour buckets", 7, "2 HOUR"))
        for name, days, interval in spans:
            a, b = (grafana_sql(raw, now=now, span=timedelta(days=days), interval=interval) for raw in (a_raw, b_raw))
            cases[name] = (a, b)
            if "2-hour" not in name:
                cases[f"{name}, a team filter"] = (_team_filtered(a), _team_filtered(b))
        cpu = alternate(cases, lambda sql: store.query(sql).rows, rounds=args.rounds)
        print(f"| {args.panel} | A CPU median / p95 ms | B CPU median / p95 ms |\n|---|---|---|")
        print("\n".join(table_rows(cpu)))
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
