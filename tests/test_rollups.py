"""Windows as data: rollup-backed answers equal raw FINAL answers, to the last digit, whatever arrives.

The store is the session's shared one: the comparisons are over everything in it, so
every other test's rows (inserted by the writer or by hand) take part too.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import datetime, timedelta, timezone

import orjson
import pytest

from spendstream.agents.app import store_usage
from spendstream.agents.stages import process
from spendstream.batches import SourceRecord
from spendstream.pricing import Pricer
from spendstream.sinks import migrations, rollups, shapes
from spendstream.sinks.store import sql_time
from spendstream.sinks.writer import SinkWriter

PRICER = Pricer()


def _raw(view_sql: str) -> str:
    """The SELECT of a view as it was before rollups (migrations 3 and 5): what every answer must equal."""
    return re.split(r"CREATE OR REPLACE VIEW \w+ AS", view_sql, maxsplit=1)[1]


RAW = {
    "cost_hourly": _raw(migrations._cost_view("cost_hourly", "toStartOfHour(ts)")),
    "cost_daily": _raw(migrations._cost_view("cost_daily", "toDate(ts)")),
    "cost_monthly": _raw(migrations._cost_view("cost_monthly", "toStartOfMonth(ts)")),
    "retry_waste_daily": _raw(migrations._RETRY_WASTE),
}


def _answers(store, sql: str) -> list[tuple]:
    rows = store.query(f"SELECT * FROM ({sql}) ORDER BY ALL").rows
    return [tuple(str(v) for v in row) for row in rows]


def _assert_views_equal_raw(store) -> None:
    for view, raw in RAW.items():
        by_view, by_raw = _answers(store, f"SELECT * FROM {view}"), _answers(store, raw)
        assert by_view == by_raw, f"{view}: {len(by_view)} rows from the rollups, {len(by_raw)} from raw"
    unit = _answers(store, "SELECT * FROM unit_costs_daily")
    assert unit, "unit_costs_daily answers"


def _events(run: str, start: datetime, n: int, **extra) -> list[dict]:
    return [{"event_id": f"{run}-{i}", "ts": (start + timedelta(minutes=7 * i, seconds=i)).isoformat(),
             "request_id": f"{run}-r{i // 2}", "attempt": 1 + i % 2,
             "status": ["ok", "ok", "error", "rate_limited", "ok", "timeout"][i % 6],
             "provider": "openai" if i % 5 else "self-hosted", "model": "gpt-4o-mini" if i % 5 else "my-llama",
             "team": f"{run}-t{i % 3}", "feature": f"f{i % 4}", "customer": f"c{i % 11}",
             "environment": "prod", "input_tokens": 1_000 + 13 * i, "cached_input_tokens": i % 50,
             "output_tokens": 100 + i, "reasoning_tokens": i % 20, **extra} for i in range(n)]


def _write(store, events: list[dict], partition: int = 0) -> None:
    batch = process([SourceRecord("usage", partition, 0, orjson.dumps(events))], PRICER)
    asyncio.run(store_usage(SinkWriter(store), batch))


def _maintain(store) -> rollups.Maintained:
    return rollups.maintain(store, now=datetime.now(timezone.utc), max_periods=100_000, quiet_s=0, busy_every_s=0)


@pytest.mark.integration
def test_rollup_backed_views_equal_raw_through_duplicates_conflicts_late_events_and_repricing(embedded_store) -> None:
    store = embedded_store
    run = f"roll-{uuid.uuid4().hex[:6]}"
    now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    events = _events(run, now - timedelta(hours=30), 300)  # 35 hours of traffic, a minute every 7
    _write(store, events)
    _assert_views_equal_raw(store)  # nothing maintained yet: the watermark keeps readers on raw
    done = _maintain(store)
    assert done.periods > 0 and done.seconds_behind == 0
    _assert_views_equal_raw(store)
    assert store.query("SELECT count() FROM usage_minutes WHERE startsWith(team, {r:String})",
                       {"r": run}).scalar() > 0

    # Re-deliveries and conflicting copies change nothing; a late event reopens an old minute.
    _write(store, events[:40], partition=1)
    _write(store, [{**events[5], "output_tokens": 99_999}], partition=2)
    late = _events(f"{run}-late", now - timedelta(hours=20), 3)
    _write(store, late)
    watermark = store.query("SELECT usage_minutes FROM rollup_watermarks").scalar()
    assert str(watermark) <= (now - timedelta(hours=20)).strftime("%Y-%m-%d %H:%M:%S")  # readers read raw from there
    _assert_views_equal_raw(store)
    _maintain(store)
    _assert_views_equal_raw(store)

    # Re-pricing rewrites rows (an override now prices the self-hosted model): the rollups follow.
    from decimal import Decimal

    from spendstream.pricing.overrides import Override, OverrideSet, TokenPrices
    from spendstream.reprice import reprice

    cheap = OverrideSet((Override(id="llama", provider="self-hosted", model="my-llama",
                                  effective_from=now - timedelta(days=30),
                                  prices=TokenPrices(input=Decimal("0.5"), output=Decimal("1.5"))),), "test")
    summary = reprice(store, Pricer(cheap), now - timedelta(hours=31), now + timedelta(minutes=1))
    assert summary.changed > 0
    _assert_views_equal_raw(store)
    _maintain(store)
    _assert_views_equal_raw(store)
    priced = store.query("SELECT sum(cost_usd) FROM cost_daily WHERE startsWith(team, {r:String}) "
                         "AND model = 'my-llama'", {"r": run}).scalar()
    assert priced is not None and priced > 0
    # the re-priced model left unpriced_hours (a recomputation alone would have kept its old rows); the
    # closed hours (the open one is read from raw)
    span = {"a": sql_time(now - timedelta(hours=32)), "b": sql_time(now - timedelta(hours=1))}
    rolled = store.query("SELECT sum(attempts) FROM unpriced_hours FINAL WHERE model = 'my-llama' "
                         "AND hour >= toStartOfHour({a:DateTime64(3, 'UTC')}) "
                         "AND hour < toStartOfHour({b:DateTime64(3, 'UTC')})",
                         span).scalar()
    raw = store.query("SELECT countIf(NOT priced) FROM usage_events FINAL WHERE model = 'my-llama' "
                      "AND ts >= toStartOfHour({a:DateTime64(3, 'UTC')}) "
                      "AND ts < toStartOfHour({b:DateTime64(3, 'UTC')})",
                      span).scalar()
    assert (rolled or 0) == raw


@pytest.mark.integration
def test_forgetting_periods_waits_for_its_deletes_and_says_when_one_fails(embedded_store) -> None:
    """forget_periods starts its deletes together and waits for them all (rollups.wait_for_mutations): once it
    returns the periods are empty; a mutation that fails is raised with the engine's reason, not waited for."""
    from spendstream.sinks.store import StoreError

    store = embedded_store
    run = f"forget-{uuid.uuid4().hex[:6]}"
    now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    events = _events(run, now - timedelta(hours=3), 10)
    _write(store, events)
    _maintain(store)
    rows = f"SELECT count() FROM usage_minutes WHERE startsWith(team, '{run}')"
    assert store.query(rows).scalar() > 0
    rollups.forget_periods(store, rollups.minutes_of(
        store.query_arrow(f"SELECT ts FROM usage_events WHERE startsWith(team, '{run}')")["ts"]))
    assert store.query(rows).scalar() == 0
    _maintain(store)  # marked again: recomputed
    assert store.query(rows).scalar() > 0

    table = f"failing_{uuid.uuid4().hex[:6]}"
    store.command(f"CREATE TABLE {table} (k UInt8, v UInt8) ENGINE = MergeTree ORDER BY k")
    store.command(f"INSERT INTO {table} VALUES (1, 1)")
    try:
        store.command(f"ALTER TABLE {table} UPDATE v = throwIf(v = 1, 'no such luck') WHERE 1 "
                      "SETTINGS mutations_sync = 0")
        with pytest.raises(StoreError, match="no such luck"):
            rollups.wait_for_mutations(store, [table])
    finally:
        store.command(f"KILL MUTATION WHERE database = currentDatabase() AND table = '{table}' SYNC")
        store.command(f"DROP TABLE {table}")


def test_close_pending_periods_are_recomputed_with_one_query_and_far_ones_apart() -> None:
    minute = timedelta(minutes=1)
    t0 = datetime(2026, 11, 30, 10, 0, tzinfo=timezone.utc)
    pending = [(t0, "a"), (t0 + minute, "b"), (t0 + 30 * minute, "c"), (t0 + 200 * minute, "d")]
    assert [len(run) for run in rollups._runs(pending, minute)] == [3, 1]
    day = [(t0 + k * minute, "m") for k in range(0, 3000, 30)]  # every half hour for two days: a run a day
    assert [len(run) for run in rollups._runs(day, minute)] == [48, 48, 4]


def test_retention_keeps_rollups_at_least_as_long_as_raw_and_applies_what_is_set(embedded_store) -> None:
    from spendstream.sinks.retention import retention_statements

    with pytest.raises(ValueError, match="at least as long"):
        retention_statements(raw_days=400, rollup_days=30, dead_letter_days=None)
    assert retention_statements(raw_days=None, rollup_days=None, dead_letter_days=None) == []
    with pytest.raises(ValueError, match="overflows"):
        retention_statements(raw_days=36_500, rollup_days=None, dead_letter_days=None)
    statements = retention_statements(raw_days=400, rollup_days=3650, dead_letter_days=90)
    assert "ALTER TABLE usage_events MODIFY TTL toDateTime(ts) + INTERVAL 400 DAY" in statements
    assert "ALTER TABLE usage_hours MODIFY TTL toDateTime(hour) + INTERVAL 3650 DAY" in statements
    kept = {name for name, in embedded_store.query(
        "SELECT name FROM system.tables WHERE database = currentDatabase() AND engine LIKE '%MergeTree' AND "
        "(name LIKE 'usage\\_%' OR name LIKE 'customer\\_%' OR name IN ('advice_hours', 'prefix_windows'))").rows}
    assert kept - {"usage_events"} and all(f"ALTER TABLE {name} MODIFY TTL" in " ".join(statements) for name in kept)
    # each is valid ClickHouse for its table; applied with 40 years, so that nothing here expires (a TTL
    # past 2106 would overflow DateTime and expire everything at once)
    for statement in statements:
        embedded_store.command(re.sub(r"INTERVAL \d+ DAY", "INTERVAL 14600 DAY", statement))
    assert "TTL" in embedded_store.query("SELECT create_table_query FROM system.tables WHERE name = 'usage_hours' "
                                         "AND database = currentDatabase()").scalar()


def test_a_late_event_older_than_the_raw_retention_leaves_its_rollup_as_it_was(embedded_store) -> None:
    run = f"old-{uuid.uuid4().hex[:6]}"
    long_ago = datetime.now(timezone.utc).replace(second=0, microsecond=0) - timedelta(days=100)
    _write(embedded_store, _events(run, long_ago, 2))
    _maintain(embedded_store)
    before = _answers(embedded_store, "SELECT minute, team, attempts FROM usage_minutes FINAL "
                                      f"WHERE startsWith(team, '{run}')")
    embedded_store.command(f"DELETE FROM usage_events WHERE startsWith(team, '{run}')")  # as a TTL would
    embedded_store.command(f"INSERT INTO rollup_marks (minute) VALUES ('{long_ago:%Y-%m-%d %H:%M:%S}')")
    rollups.maintain(embedded_store, now=datetime.now(timezone.utc), max_periods=100_000, raw_retention_days=30,
                     quiet_s=0, busy_every_s=0)
    after = _answers(embedded_store, "SELECT minute, team, attempts FROM usage_minutes FINAL "
                                     f"WHERE startsWith(team, '{run}')")
    assert before and after == before
    pending = embedded_store.query("SELECT usage_minutes FROM rollup_watermarks").scalar()
    assert str(pending) > f"{long_ago:%Y-%m-%d %H:%M:%S}"  # not held back by it
    for table in ("usage_minutes", "usage_hours", "customer_hours"):  # the shared store's rollups equal raw again
        embedded_store.command(f"DELETE FROM {table} WHERE startsWith(team, '{run}')")


def _grouped(store, rollup: rollups.Rollup, source: str) -> list[tuple]:
    """Every period × key of ``rollup`` with each measure's answer, from its table or from raw."""
    keys = ", ".join(rollup.keys)
    answers = ", ".join(f"{m.of_rollup if source == 'rollup' else m.of_raw.replace('uniqExactState', 'uniqExact')} "
                        f"AS {m.name}_" for m in rollup.measures)
    table = f"{rollup.name} FINAL" if source == "rollup" else f"usage_events FINAL WHERE {rollup.where}"
    period = rollup.period if source == "rollup" else f"{rollup.bucket} AS {rollup.period}"
    having = rollups.having_sql(rollup) if source == "raw" else ""
    return _answers(store, f"SELECT {period}, {keys}, {answers} FROM {table} GROUP BY {rollup.period}, {keys}{having}")


def test_old_grains_with_data_become_the_new_grains_in_place(tmp_path) -> None:
    """Migration 12 on a store whose rollups have migration 10's grains: the new rollups hold what a
    recomputation from raw gives, the periods done stay done (customer_hours too), and running the
    regrouping again changes nothing. (In a process of its own: chdb opens one data directory per process.)"""
    from tests.conftest import run_in_own_process

    assert run_in_own_process("test_rollups", "regrain_check", tmp_path / "old") == "regrained"


def regrain_check(path: str) -> None:
    from spendstream.sinks.embedded import EmbeddedStore
    from spendstream.sinks.regrain import regrain

    store = EmbeddedStore(path)
    every = migrations.MIGRATIONS
    migrations.MIGRATIONS = every[:11]
    migrations.migrate(store)
    run = f"grain-{uuid.uuid4().hex[:6]}"
    now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    # rows as a worker of that time wrote them: the columns of its time only
    from spendstream.sinks.rows import usage_table

    columns = {r[0] for r in store.query("SELECT name FROM system.columns WHERE table = 'usage_events' "
                                         "AND database = currentDatabase()").rows}
    events = _events(run, now - timedelta(hours=30), 200, prefix_fingerprint=f"{run}-prefix", prefix_tokens=1_500)
    rows = usage_table(process([SourceRecord("usage", 0, 0, orjson.dumps(events))], PRICER))
    store.insert_arrow("usage_events", rows.select([name for name in rows.column_names if name in columns]))
    names = ", ".join(m.name for m in rollups.MEASURES)
    measures = ", ".join(f"{m.of_raw} AS {m.name}" for m in rollups.MEASURES)
    for old in (rollups.V10_MINUTES, rollups.V10_HOURS):  # as migration 10's maintainer kept them
        keys = ", ".join(old.keys)
        store.command(f"INSERT INTO {old.name} ({old.period}, {keys}, {names}, version) SELECT {old.bucket} AS p, "
                      f"{keys}, {measures}, now64(3) FROM usage_events FINAL GROUP BY p, {keys}")
        store.command(f"INSERT INTO rollup_done (rollup, period, mark) SELECT DISTINCT '{old.name}', "
                      f"{old.bucket}, now64(3) FROM usage_events")
    store.command("INSERT INTO rollup_state (rollup, through) VALUES ('usage_hours', now64(3))")
    migrations.MIGRATIONS = every
    assert 12 in migrations.migrate(store)
    for rollup in rollups.ROLLUPS:
        assert _grouped(store, rollup, "rollup") == _grouped(store, rollup, "raw"), rollup.name
    done = [tuple(r) for r in store.query("SELECT rollup, count() FROM rollup_done FINAL GROUP BY 1 ORDER BY 1").rows]
    hours = store.query("SELECT uniqExact(toStartOfHour(ts)) FROM usage_events").scalar()
    windows = store.query("SELECT uniqExact(toStartOfFiveMinutes(ts)) FROM usage_events").scalar()
    days = store.query("SELECT uniqExact(toDate(ts)) FROM usage_events").scalar()
    tens = store.query("SELECT uniqExact(toStartOfTenMinutes(ts)) FROM usage_events").scalar()
    # migrations 17, 19-22, 28, 31, 33 and 34 compute the readers' rollups from the raw rows, and record their
    # periods done
    assert done == [("advice_hours", hours), ("burst_hours", hours), ("customer_days", days),
                    ("customer_hours", hours), ("customer_provider_hours", hours), ("deployment_minutes", 200),
                    ("feature_days", days), ("feature_failures", windows), ("feature_request_hours", hours),
                    ("gpu_allocated_hours", hours), ("key_day_tops", days), ("key_days", days), ("loop_shapes", tens),
                    ("override_hours", hours),
                    ("prefix_hours", hours), ("prefix_windows", windows), ("report_hours", hours),
                    ("team_days", days), ("unpriced_hours", hours), ("usage_hours", hours), ("usage_minutes", 200)]
    for rollup in (*shapes.SHAPES, *rollups.READER_GRAINS, *rollups.DETECTOR_GRAINS, *rollups.PANEL_GRAINS):
        assert _grouped(store, rollup, "rollup") == _grouped(store, rollup, "raw"), rollup.name
    assert store.query("SELECT count() FROM prefix_windows").scalar() > 0
    assert str(store.query("SELECT customer_hours FROM rollup_watermarks").scalar()) >= f"{now:%Y-%m-%d %H}"
    before = [_grouped(store, r, "rollup") for r in rollups.ROLLUPS]
    regrain(store, store.command)  # again, as after a crash: already in shape, left alone
    assert [_grouped(store, r, "rollup") for r in rollups.ROLLUPS] == before
    store.close()
    print("regrained")
