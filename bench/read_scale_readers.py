"""Every reader the read-side benchmark times, as the project runs it, in-process against the store.

The detectors, report, advisor, reconcile and the FOCUS export are called with the
arguments ``spendstream notify`` / ``report --since 7d`` / ``advise --since 30d`` /
``reconcile --since 1h`` / ``export focus --since 1d`` pass (spendstream/cli.py),
with one difference: ``now`` is the end of the generated history, not the wall
clock, so that "the last hour" holds an hour of events at every size however long
the load took. The SQL cookbook's examples are read from docs/sql.md and the Grafana
panels' queries from the dashboard JSON, as their tests read them.
"""

from __future__ import annotations

import json
import math
import re
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from spendstream.advisor import advise
from spendstream.detect.anomaly import detect_spend_anomalies
from spendstream.detect.baseline import refresh as refresh_baselines
from spendstream.detect.budgets import Budget, evaluate
from spendstream.detect.retry_storm import detect_retry_storms
from spendstream.focus import export_focus
from spendstream.pricing import Pricer
from spendstream.reconcile import reconcile
from spendstream.report import write_report
from spendstream.sinks.store import Store, sql_time

ROOT = Path(__file__).resolve().parent.parent
COOKBOOK = ROOT / "docs" / "sql.md"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "spendstream.json"
# As tests/test_sql_cookbook.py finds the examples: a columns line, maybe a params line, the SQL.
_EXAMPLE = re.compile(r"<!-- columns: (?P<columns>[^>]*) -->\n(?:<!-- params: (?P<params>[^>]*) -->\n)?```sql\n"
                      r"(?P<sql>.*?)```", re.S)
# What the Grafana ClickHouse plugin makes of its macros for a day and a week on a panel ~1,000 points wide.
WINDOWS = {"day": (timedelta(days=1), "1 MINUTE"), "week": (timedelta(days=7), "10 MINUTE")}


@dataclass(frozen=True, slots=True)
class Reader:
    name: str
    group: str    # detection, command, cookbook, grafana, sql
    window: str   # day, week, 1h, 7d, 30d, ..., or "as written" for SQL that names its own period
    run: Callable[[], Any]


@dataclass(frozen=True, slots=True)
class Timing:
    reader: Reader
    runs_s: list[float]
    result_rows: int | None
    cpu_s: tuple[float, ...] = ()  # process CPU of each timed run (chdb runs in the process)

    @property
    def median_s(self) -> float:
        return statistics.median(self.runs_s)

    @property
    def p95_s(self) -> float:
        """Nearest rank: with 3 runs this is the slowest."""
        ordered = sorted(self.runs_s)
        return ordered[math.ceil(0.95 * len(ordered)) - 1]

    @property
    def cpu_median_s(self) -> float | None:
        return statistics.median(self.cpu_s) if self.cpu_s else None

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.reader.name, "group": self.reader.group, "window": self.reader.window,
                "median_s": round(self.median_s, 4), "p95_s": round(self.p95_s, 4),
                "runs_s": [round(r, 4) for r in self.runs_s], "result_rows": self.result_rows,
                "cpu_s": [round(c, 4) for c in self.cpu_s]}


def time_readers(readers: list[Reader], *, runs: int, log=print) -> list[Timing]:
    """One untimed round over every reader, then ``runs`` timed rounds.

    Round-robin rather than reader by reader: on a machine shared with other work a
    burst of load then costs one run of several readers, which the median drops,
    instead of every run of one reader.
    """
    times: list[list[float]] = [[] for _ in readers]
    cpus: list[list[float]] = [[] for _ in readers]
    results: list[Any] = [None] * len(readers)
    for round_ in range(runs + 1):
        began = time.perf_counter()
        for i, reader in enumerate(readers):
            start, cpu_start = time.perf_counter(), time.process_time()
            results[i] = reader.run()
            if round_ > 0:
                times[i].append(time.perf_counter() - start)
                cpus[i].append(time.process_time() - cpu_start)
        log(f"  round {round_} ({'warm-up' if round_ == 0 else 'timed'}): {time.perf_counter() - began:.0f} s",
            flush=True)
    return [Timing(reader, runs_s, _rows(result), tuple(cpu_s))
            for reader, runs_s, cpu_s, result in zip(readers, times, cpus, results, strict=True)]


def _rows(result: Any) -> int | None:
    return result if isinstance(result, int) else len(result) if hasattr(result, "__len__") else None


def cookbook_examples() -> list[tuple[str, dict[str, str], str]]:
    """(title, params, sql) of every example in docs/sql.md."""
    text = COOKBOOK.read_text()
    found = []
    for match in _EXAMPLE.finditer(text):
        title = text[:match.start()].rstrip().rsplit("### ", 1)[-1].strip().split("\n", 1)[0]
        params = dict(p.strip().split("=", 1) for p in (match["params"] or "").split(",") if p.strip())
        found.append((title, params, match["sql"].strip()))
    return found


def grafana_sql(sql: str, *, now: datetime, span: timedelta, interval: str) -> str:
    """A panel's query with the plugin's macros expanded for ``now - span .. now``."""
    start, end = int((now - span).timestamp()), int(now.timestamp())
    sql = re.sub(r"\$__timeFilter\((\w+)\)", rf"\1 >= toDateTime({start}) AND \1 <= toDateTime({end})", sql)
    sql = sql.replace("$__fromTime", f"toDateTime({start})").replace("$__toTime", f"toDateTime({end})")
    sql = re.sub(r"\$\{\w+:singlequote\}", "'__all__'", sql)  # every template variable at All (its all value)
    return re.sub(r"\$__timeInterval\((\w+)\)", rf"toStartOfInterval(toDateTime(\1), INTERVAL {interval})", sql)


def readers(store: Store, *, now: datetime, events: int, out_dir: Path) -> Iterator[Reader]:
    """Every reader, in the order the results table lists them."""
    window = {"start": sql_time(now - timedelta(hours=1)), "now": sql_time(now)}
    yesterday = {"day": (now - timedelta(days=1)).date().isoformat()}
    yield Reader("count() FINAL", "sql", "all", lambda: store.query("SELECT count() FROM usage_events FINAL").scalar())
    yield Reader("one day by team (cost_daily view)", "sql", "day", lambda: store.query(
        "SELECT team, sum(cost_usd) AS cost_usd FROM cost_daily WHERE period = {day:Date} GROUP BY team",
        yesterday).rows)
    yield Reader("last hour by team (raw FINAL)", "sql", "1h", lambda: store.query(
        "SELECT team, sum(total_cost) AS cost_usd FROM usage_events FINAL "
        "WHERE ts >= {start:DateTime64(3, 'UTC')} AND ts < {now:DateTime64(3, 'UTC')} GROUP BY team", window).rows)

    # amounts in proportion to the traffic, so that the same thresholds are crossed at every size
    per_event = Decimal(events) / 1_000_000
    budgets = [Budget(name="all-monthly", amount_usd=8_000 * per_event),
               Budget(name="team-daily", team="team-00", period="daily", amount_usd=200 * per_event),
               Budget(name="customer-monthly", customer="cust-00000", amount_usd=400 * per_event)]

    def relearn() -> int | None:
        """The hourly refresh as its first run of an hour does it (the 14 days of 10-minute peaks are
        computed once, in the warm-up round, as a worker does on its first refresh)."""
        store.command("DELETE FROM detector_baselines WHERE for_hour = toStartOfHour({now:DateTime64(3, 'UTC')})"
                      .replace("{now:DateTime64(3, 'UTC')}", f"toDateTime64('{sql_time(now)}', 3, 'UTC')"))
        return refresh_baselines(store, now)

    # first in the round, so that every detection pass below has this hour's baselines
    yield Reader("baseline refresh (once an hour: 4 weeks of hour rollups)", "detection", "6w", relearn)
    yield Reader("retry-storm pass (detect_retry_storms)", "detection", "10m+2h",
                 lambda: detect_retry_storms(store, now))
    yield Reader("spend-anomaly pass (detect_spend_anomalies)", "detection", "10m",
                 lambda: detect_spend_anomalies(store, now))
    yield Reader(f"budgets ({len(budgets)}, evaluate)", "detection", "period", lambda: evaluate(store, budgets, now))
    yield Reader("whole detection pass (all three, as notify)", "detection", "period", lambda: (
        evaluate(store, budgets, now) + detect_retry_storms(store, now) + detect_spend_anomalies(store, now)))

    pricer = Pricer()
    yield Reader("report --since 7d (write_report)", "command", "7d",
                 lambda: write_report(store, now - timedelta(days=7), now, out_dir / "report.html").stat().st_size)
    yield Reader("advise --since 30d (advise)", "command", "30d",
                 lambda: advise(store, now - timedelta(days=30), now, pricer))
    yield Reader("reconcile --since 1h (reconcile)", "command", "1h",
                 lambda: reconcile(store, now - timedelta(hours=1), now))
    yield Reader("export focus --since 1d (export_focus)", "command", "1d",
                 lambda: export_focus(store, now - timedelta(days=1), now, out_dir / "focus.csv").rows)

    for title, params, sql in cookbook_examples():
        if "{since:" not in sql:  # the example names its own period (or none: all history)
            yield Reader(title, "cookbook", "as written", _query(store, sql, params))
            continue
        for name, (span, _) in WINDOWS.items():
            bound = params | {"since": (now - span).date().isoformat()}
            yield Reader(title, "cookbook", name, _query(store, sql, bound))

    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        raw = panel["targets"][0]["rawSql"]
        ranged = "$__time" in raw or "$__fromTime" in raw
        for name, (span, interval) in WINDOWS.items():
            if not ranged and name != "day":
                continue  # the panel ignores the dashboard's range: once is enough
            if panel.get("interval") == "1h":  # Grafana passes no interval below the panel's minimum
                interval = "1 HOUR"
            yield Reader(panel["title"], "grafana", name if ranged else "as written",
                         _query(store, grafana_sql(raw, now=now, span=span, interval=interval), {}))


def _query(store: Store, sql: str, params: dict[str, str]) -> Callable[[], list]:
    return lambda: store.query(sql, params).rows
