"""Migration 26: ``customer_daily`` takes a range's partial days from ``customer_hours``, not from raw.

A store at migration 25 with twelve days of bursts (none on a minute), rolled up, is migrated in place:
``customer_daily`` over ranges that start and end inside days (Grafana's "last 7 days") answers the same
to the digit before and after, and the same as raw ``usage_events FINAL``; a late event that reopens a
partial day is counted. (What it reads instead is measured on the 5M store: BENCHMARKS.md, session s9.)
In a process of its own: chdb opens one data directory per process.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import orjson
import pytest

pytestmark = pytest.mark.integration

ANSWER = """
    SELECT day, customer, sum(attempts), sum(input_tokens), sum(output_tokens), sum(cost_usd), sum(list_cost_usd),
           sum(unpriced_attempts)
    FROM customer_daily(since = {since:DateTime64(3, 'UTC')}, until = {until:DateTime64(3, 'UTC')})
    GROUP BY day, customer ORDER BY day, customer"""
RAW = """
    SELECT toDate(ts) AS day, customer, count(), sum(input_tokens), sum(output_tokens), sumIf(total_cost, priced),
           sumIf(list_cost, priced), countIf(NOT priced)
    FROM usage_events FINAL WHERE ts >= {since:DateTime64(3, 'UTC')} AND ts < {until:DateTime64(3, 'UTC')}
    GROUP BY day, customer ORDER BY day, customer"""


def test_customer_daily_upgrades_in_place_and_reads_partial_days_from_hours(tmp_path) -> None:
    from tests.conftest import run_in_own_process

    report = orjson.loads(run_in_own_process("test_customer_daily_partial_days", "upgrade_check", tmp_path / "s"))
    for name, answers in report["answers"].items():
        assert answers["before"] == answers["after"] == answers["raw"], name
        assert answers["raw"], name  # not a comparison of two empty answers
    assert report["late"]["after"] == report["late"]["raw"]
    assert report["late"]["raw"] != report["answers"]["eight days, inside hours"]["raw"]  # the late event counts


def upgrade_check(path: str) -> None:
    from spendstream.sinks import migrations
    from spendstream.sinks.embedded import EmbeddedStore
    from spendstream.sinks.store import sql_time
    from tests.test_readers_on_rollups import _bursts, _maintain, _write

    store = EmbeddedStore(path)
    every = migrations.MIGRATIONS
    migrations.MIGRATIONS = tuple(m for m in every if m.version < 26)
    migrations.migrate(store)
    now = datetime.now(timezone.utc)
    starts, events = _bursts("cd26", now)
    _write(store, events)
    _maintain(store)
    ranges = {
        "eight days, inside hours": (starts[2] + timedelta(minutes=3, seconds=7, milliseconds=250),
                                     starts[24] + timedelta(minutes=5, seconds=1)),
        "inside one day": (starts[4] + timedelta(seconds=40), starts[4] + timedelta(minutes=6)),
        "whole days": (starts[3].replace(hour=0, minute=0, second=0), starts[20].replace(hour=0, minute=0, second=0)),
        "to now": (starts[5] + timedelta(minutes=1, seconds=1), now),
    }
    params = {name: {"since": sql_time(since), "until": sql_time(until)} for name, (since, until) in ranges.items()}

    def answers() -> dict[str, list]:
        return {name: [[str(v) for v in row] for row in store.query(ANSWER, p).rows] for name, p in params.items()}

    before = answers()
    migrations.MIGRATIONS = every
    assert 26 in migrations.migrate(store)
    after = answers()
    raw = {name: [[str(v) for v in row] for row in store.query(RAW, p).rows] for name, p in params.items()}
    report = {"answers": {name: {"before": before[name], "after": after[name], "raw": raw[name]} for name in params}}
    # a late event inside the first (partial) day of the range reopens its hour and day
    late = {**events[40], "event_id": "cd26-late", "ts": (ranges["eight days, inside hours"][0]
                                                          + timedelta(minutes=1)).isoformat()}
    _write(store, [late])
    p = params["eight days, inside hours"]
    report["late"] = {"after": [[str(v) for v in row] for row in store.query(ANSWER, p).rows],
                      "raw": [[str(v) for v in row] for row in store.query(RAW, p).rows]}
    print(orjson.dumps(report, default=str).decode())
