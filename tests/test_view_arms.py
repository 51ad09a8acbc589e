"""The range views of migration 36: what they read from raw in one arm, ``customer_daily``'s partial days from the
hours — equal to raw ``usage_events FINAL``, to the digit.

``usage_minutely``, ``usage_hourly``, ``customer_hourly``, ``customer_daily``, ``team_daily`` and ``feature_daily``
are compared with the same question asked of raw on ranges that start and end inside minutes, hours and days, on whole
hours that are not whole days, inside one day, and on whole days (``Date`` bounds for the day views that count
requests): before the maintainer ran (everything from raw), maintained, with re-deliveries, a conflicting re-send and
late events pending, and maintained again. A store at migration 33 with data upgrades to 36 with identical answers.
Real chdb; months 2020-08 (the shared store) and 2022-04 (the upgrade's own store) are this file's.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import orjson
import pytest

from spendstream.sinks import migrations, reader_views, rollups, shapes
from spendstream.sinks.store import sql_time
from tests.test_readers_on_rollups import CUSTOMER_DAILY, CUSTOMER_DAILY_RAW, WINDOW, _bursts, _rows, _write

pytestmark = pytest.mark.integration

RANGED = "since = {since:DateTime64(3, 'UTC')}, until = {until:DateTime64(3, 'UTC')}"
# (the view's question, raw's): per period and key, every kind of measure (counts, money, request sets, max)
QUESTIONS = {
    "usage_minutely": (
        f"SELECT minute, team, provider, sum(attempts), sum(cost_usd), uniqExactMerge(requests), max(max_attempt) "
        f"FROM usage_minutely({RANGED}) GROUP BY ALL ORDER BY ALL",
        f"SELECT toStartOfMinute(ts) AS minute, team, provider, count(), sumIf(total_cost, priced), "
        f"uniqExact(request_id), max(attempt) FROM usage_events FINAL WHERE {WINDOW} GROUP BY ALL ORDER BY ALL"),
    "usage_hourly": (
        f"SELECT hour, team, feature, mode, sum(attempts), sum(cost_usd), uniqExactMerge(successful_requests), "
        f"sum(failed_attempts), sum(output_tokens) FROM usage_hourly({RANGED}) GROUP BY ALL ORDER BY ALL",
        f"SELECT toStartOfHour(ts) AS hour, team, feature, mode, count(), sumIf(total_cost, priced), "
        f"uniqExactIf(request_id, status = 'ok'), countIf(status != 'ok'), sum(output_tokens) "
        f"FROM usage_events FINAL WHERE {WINDOW} GROUP BY ALL ORDER BY ALL"),
    "customer_hourly": (
        f"SELECT hour, team, feature, customer, sum(attempts), sum(cost_usd), sum(list_cost_usd), "
        f"uniqExactMerge(requests), sum(unpriced_attempts) FROM customer_hourly({RANGED}) GROUP BY ALL ORDER BY ALL",
        f"SELECT toStartOfHour(ts) AS hour, team, feature, customer, count(), sumIf(total_cost, priced), "
        f"sumIf(list_cost, priced), uniqExact(request_id), countIf(NOT priced) "
        f"FROM usage_events FINAL WHERE {WINDOW} GROUP BY ALL ORDER BY ALL"),
    "customer_daily": (CUSTOMER_DAILY, CUSTOMER_DAILY_RAW),
}
DAYS = {  # Date bounds: requests are counted per day
    view: (f"SELECT day, {keys}, sum(requests), sum(successful_requests), sum(attempts), sum(cost_usd) "
           f"FROM {view}(since = {{since:Date}}, until = {{until:Date}}) GROUP BY ALL ORDER BY ALL",
           f"SELECT toDate(ts) AS day, {keys}, uniqExact(request_id), uniqExactIf(request_id, status = 'ok'), count(), "
           f"sumIf(total_cost, priced) FROM usage_events FINAL WHERE toDate(ts) >= {{since:Date}} "
           f"AND toDate(ts) < {{until:Date}} GROUP BY ALL ORDER BY ALL")
    for view, keys in (("team_daily", "team"), ("feature_daily", "team, feature"))}
VIEWS = ("usage_minutely", "usage_hourly", "customer_hourly", "override_hourly", "unpriced_hourly",
         "feature_requests_hourly", "customer_daily", "team_daily", "feature_daily")


def _spans(now: datetime) -> dict[str, tuple[datetime, datetime]]:
    ms = timedelta(milliseconds=1)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return {
        "days, inside minutes": (day - timedelta(days=9, hours=17, minutes=3, seconds=7) + 411 * ms,
                                 day - timedelta(days=2, hours=6, minutes=22, seconds=50) - 3 * ms),
        "whole hours, not days": (day - timedelta(days=8, hours=7), day - timedelta(days=3, hours=5)),
        "a dashboard's day": (now - timedelta(days=2, hours=1), now - timedelta(days=1, hours=1)),
        "inside one day": (day - timedelta(days=5, hours=20, seconds=1), day - timedelta(days=5, hours=2, minutes=1)),
        "whole days": (day - timedelta(days=10), day - timedelta(days=1)),
        "one millisecond over a midnight": (day - timedelta(days=4, milliseconds=1), day - timedelta(days=4) + ms),
        "to the end": (day - timedelta(days=6, hours=3, minutes=30), now + timedelta(days=2)),
    }


def _differences(store, spans: dict[str, tuple[datetime, datetime]]) -> list[str]:
    found = []
    for span, (since, until) in spans.items():
        p = {"since": sql_time(since), "until": sql_time(until)}
        for view, (rolled, raw) in QUESTIONS.items():
            a, b = _rows(store.query(rolled, p)), _rows(store.query(raw, p))
            if not b and span != "one millisecond over a midnight":
                found.append(f"{view} ({span}): nothing to compare")
            if a != b:
                found.append(f"{view} ({span}): {len(a)} rows against raw's {len(b)}; first differing: "
                             f"{next(((x, y) for x, y in zip(a, b, strict=False) if x != y), None)}")
        dates = {"since": since.date().isoformat(), "until": until.date().isoformat()}
        for view, (rolled, raw) in DAYS.items():
            a, b = _rows(store.query(rolled, dates)), _rows(store.query(raw, dates))
            if a != b:
                found.append(f"{view} ({span}, Date bounds): {len(a)} rows against raw's {len(b)}")
    return found


def _maintain(store) -> None:
    rollups.maintain(store, now=datetime.now(timezone.utc), max_periods=100_000, quiet_s=0, busy_every_s=0)


def test_the_range_views_equal_raw_through_duplicates_conflicts_and_late_events(embedded_store) -> None:
    store = embedded_store
    run = f"va-{uuid.uuid4().hex[:6]}"
    now = datetime(2020, 8, 21, 5, 31, 17, 250_000, tzinfo=timezone.utc)  # twelve days of bursts before it
    _starts, events = _bursts(run, now)
    assert min(e["ts"] for e in events) >= "2020-08-01"
    _write(store, events)
    spans = _spans(now)
    assert _differences(store, spans) == [], "before maintaining"
    _maintain(store)
    assert _differences(store, spans) == [], "maintained"
    _write(store, events[:70], partition=1)  # re-delivered
    _write(store, [{**events[9], "output_tokens": 55_555, "customer": "someone-else"}], partition=2)  # conflicting
    late = [{**events[150 + k], "event_id": f"{run}-late-{k}", "attempt": 4,
             "ts": (datetime.fromisoformat(events[150 + k]["ts"]) + timedelta(seconds=2)).isoformat()}
            for k in range(6)]
    _write(store, late)
    assert _differences(store, spans) == [], "late events pending"
    _maintain(store)
    assert _differences(store, spans) == [], "maintained again"


def test_each_range_view_reads_raw_in_one_arm(embedded_store) -> None:
    """Every arm of a query costs its plan, whatever it reads (BENCHMARKS.md, s21): the views read raw once."""
    rows = embedded_store.query(
        "SELECT name, countSubstrings(create_table_query, 'usage_events FINAL') FROM system.tables "
        f"WHERE database = currentDatabase() AND name IN {VIEWS} ORDER BY name").rows
    assert rows == [[name, 1] for name in sorted(VIEWS)]


def test_a_store_with_data_upgrades_to_the_one_arm_views_with_identical_answers(tmp_path) -> None:
    from tests.conftest import run_in_own_process

    report = orjson.loads(run_in_own_process("test_view_arms", "upgrade_check", tmp_path / "old"))
    for view in (*QUESTIONS, *DAYS):  # (some spans of this store's bursts hold nothing)
        assert sum(bool(v) for k, v in report["before"].items() if k.startswith(f"{view} ")) >= 3, view
    assert report["after"] == report["before"]
    # whole hours that are not whole days: with their raw events gone, customer_daily answers from the hours, as
    # before; migration 25's view read the partial days from raw
    assert report["raw_gone"] != report["hours_kept"] and report["hours_kept"]
    assert report["one_arm_view"] == report["hours_kept"]
    assert report["layered_view"] != report["hours_kept"]


def upgrade_check(path: str) -> None:
    """A store at migration 33 with twelve days of bursts (2022-04), maintained: every view's answers, migrated to
    36, the same answers; then ``customer_daily`` over whole hours that are not whole days with their raw events
    deleted (no marks: the rollups stand), beside migration 25's view asked the same."""
    from spendstream.sinks.embedded import EmbeddedStore

    store = EmbeddedStore(path)
    every = migrations.MIGRATIONS
    migrations.MIGRATIONS = tuple(m for m in every if m.version <= 33)
    migrations.migrate(store)
    now = datetime(2022, 4, 19, 13, 44, 3, tzinfo=timezone.utc)
    _starts, events = _bursts("up", now)
    _write(store, events)
    _write(store, events[::5], partition=1)
    from spendstream.sinks import key_lists

    every_grain = rollups.all_grains
    rollups.all_grains = lambda: tuple(g for g in every_grain() if g not in key_lists.LIST_GRAINS)  # 33's grains
    _maintain(store)
    rollups.all_grains = every_grain
    spans = _spans(now)
    hours = {"since": sql_time(spans["whole hours, not days"][0]), "until": sql_time(spans["whole hours, not days"][1])}

    def answers() -> dict[str, list]:
        found = {}
        for span, (since, until) in spans.items():
            p = {"since": sql_time(since), "until": sql_time(until)}
            dates = {"since": since.date().isoformat(), "until": until.date().isoformat()}
            found |= {f"{view} {span}": _rows(store.query(q, p)) for view, (q, _raw) in QUESTIONS.items()}
            found |= {f"{view} {span}": _rows(store.query(q, dates)) for view, (q, _raw) in DAYS.items()}
        return {k: v for k, v in found.items() if "millisecond" not in k}

    report = {"before": answers()}
    migrations.MIGRATIONS = every
    assert 36 in migrations.migrate(store)
    report["after"] = answers()
    report["hours_kept"] = _rows(store.query(CUSTOMER_DAILY, hours))
    store.command(f"ALTER TABLE usage_events DELETE WHERE ts >= toDateTime64('{hours['since']}', 3, 'UTC') "
                  f"AND ts < toDateTime64('{hours['until']}', 3, 'UTC') SETTINGS mutations_sync = 2")
    report["raw_gone"] = _rows(store.query(CUSTOMER_DAILY_RAW, hours))
    report["one_arm_view"] = _rows(store.query(CUSTOMER_DAILY, hours))
    layered = reader_views.layered_view("x", shapes.CUSTOMER_DAYS).split(" AS\n", 1)[1]
    report["layered_view"] = _rows(store.query(CUSTOMER_DAILY.replace(
        f"customer_daily({RANGED})", f"({layered})"), hours))
    store.close()
    print(orjson.dumps(report).decode())
