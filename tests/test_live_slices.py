"""Live minutes summed from 10-second slices equal raw FINAL, whatever arrives while they fill.

The store is the session's shared one: comparisons are over this test's teams only, but every
other test's pending periods take part in the passes.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import orjson
import pyarrow as pa
import pytest

from spendstream.sinks import live_slices, migrations, rollups
from spendstream.sinks.rollups import Cadence
from tests.test_rollup_cadence import _minutes
from tests.test_rollups import _answers, _assert_views_equal_raw, _grouped, _write

# a minute still being marked stays live: summed from its slices, not recomputed from raw
FILLING = Cadence(quiet_s=3600, live_s=120, live_every_s=5, busy_every_s=3600, slices_every_s=0)


def _in_minute(run: str, minute: datetime, seconds: range, **extra) -> list[dict]:
    return [{"event_id": f"{run}-{s}", "ts": (minute + timedelta(seconds=s, milliseconds=7 * s)).isoformat(),
             "request_id": f"{run}-r{s // 3}", "attempt": 1 + s % 3,
             "status": ["ok", "ok", "error", "rate_limited", "ok", "timeout"][s % 6],
             "provider": "openai" if s % 5 else "self-hosted", "model": "gpt-4o-mini" if s % 5 else "my-llama",
             "team": f"{run}-t{s % 2}", "feature": f"f{s % 3}", "customer": f"c{s % 7}", "environment": "prod",
             "input_tokens": 1_000 + 13 * s, "cached_input_tokens": s % 50, "output_tokens": 100 + s,
             "reasoning_tokens": s % 20, **extra} for s in seconds]


def _pass(store, cadence: Cadence = FILLING) -> None:
    rollups.maintain(store, now=datetime.now(timezone.utc), max_periods=100_000, cadence=cadence)


def _one_minute(store, run: str, minute: datetime, source: str) -> list[tuple]:
    return [r for r in _minutes(store, run, source) if r[0] == f"{minute:%Y-%m-%d %H:%M:%S}"]


def _done(store, minute: datetime) -> int:
    return int(store.query(f"SELECT count() FROM rollup_done WHERE rollup = 'usage_minutes' "
                           f"AND period = toDateTime('{minute:%Y-%m-%d %H:%M:%S}', 'UTC')").scalar())


def test_a_batch_marks_its_minutes_and_slices() -> None:
    ts = pa.array([datetime(2026, 11, 30, 12, 0, s, tzinfo=timezone.utc) for s in (1, 9, 10, 59)] +
                  [datetime(2026, 11, 30, 12, 1, 0, 500_000, tzinfo=timezone.utc)], pa.timestamp("ms", tz="UTC"))
    marks = live_slices.marks_of(ts).sort_by("slice").to_pylist()
    assert [(m["minute"].minute, m["slice"].minute, m["slice"].second) for m in marks] == [
        (0, 0, 0), (0, 0, 10), (0, 0, 50), (1, 1, 0)]
    whole = live_slices.every_slice_of(pa.array([marks[1]["minute"]], pa.timestamp("s", tz="UTC")))
    assert [m.second for m in whole["slice"].to_pylist()] == [0, 10, 20, 30, 40, 50]


@pytest.mark.integration
def test_a_live_minute_from_its_slices_equals_raw_through_late_events_redeliveries_and_conflicts(
        embedded_store) -> None:
    store = embedded_store
    run = f"live-{uuid.uuid4().hex[:6]}"
    # live: closed 0-60 s ago
    minute = datetime.now(timezone.utc).replace(second=0, microsecond=0) - timedelta(minutes=1)
    first = _in_minute(run, minute, range(0, 60, 2))
    _write(store, first[:12])
    _pass(store)
    assert _one_minute(store, run, minute, "rollup") == _one_minute(store, run, minute, "raw") != []
    slices = store.query(f"SELECT uniqExact(slice) FROM rollup_live_slices WHERE startsWith(team, '{run}')").scalar()
    assert slices == 3  # built from slices ...
    assert _done(store, minute) == 0  # ... and still pending: readers read it from raw
    _assert_views_equal_raw(store)

    # more of the minute, an event late into a slice already summed, re-deliveries, a conflicting copy
    _write(store, first[12:])
    _write(store, _in_minute(f"{run}-late", minute, range(1, 4)) + _in_minute(run, minute, range(1, 2)))
    _write(store, first[:5], partition=1)
    _write(store, [{**first[3], "output_tokens": 77_777, "status": "ok"}], partition=2)
    _pass(store)
    by_slices = _one_minute(store, run, minute, "rollup")
    assert by_slices == _one_minute(store, run, minute, "raw")
    assert sum(int(r[7]) for r in by_slices) == 34  # attempts: 30 + 1 + 3 late (teams run-late too), none twice
    assert _done(store, minute) == 0
    _assert_views_equal_raw(store)

    # the live work waits `slices_every_s` after a slice was computed: the minute stands as last summed,
    # still pending, so readers read it from raw
    _write(store, _in_minute(f"{run}-soon", minute, range(31, 32)))
    _pass(store, Cadence(quiet_s=3600, live_s=120, live_every_s=5, busy_every_s=3600, slices_every_s=3600))
    assert _one_minute(store, run, minute, "rollup") == by_slices != _one_minute(store, run, minute, "raw")
    _assert_views_equal_raw(store)
    _pass(store)
    by_slices = _one_minute(store, run, minute, "rollup")
    assert by_slices == _one_minute(store, run, minute, "raw")

    # the minute goes quiet: finished from its slices, recorded done, the same rows
    _pass(store, Cadence(quiet_s=0, live_s=120, live_every_s=5, busy_every_s=3600))
    assert _one_minute(store, run, minute, "rollup") == by_slices
    assert _done(store, minute) == 1
    _assert_views_equal_raw(store)


@pytest.mark.integration
def test_a_minute_that_closes_while_filling_keeps_what_its_slices_held(embedded_store) -> None:
    store = embedded_store
    run = f"close-{uuid.uuid4().hex[:6]}"
    now = datetime.now(timezone.utc)
    minute = now.replace(second=0, microsecond=0)
    _write(store, _in_minute(run, minute, range(0, now.second + 1)))  # the open minute, so far
    _pass(store)
    assert _one_minute(store, run, minute, "rollup") == _one_minute(store, run, minute, "raw") != []
    # the minute closes, its last seconds arrive late (the worker behind), then a later minute starts
    _write(store, _in_minute(f"{run}-rest", minute, range(now.second, 60)))
    _write(store, _in_minute(f"{run}-next", minute + timedelta(minutes=1), range(0, 5)))
    _pass(store)
    assert _one_minute(store, run, minute, "rollup") == _one_minute(store, run, minute, "raw")
    for name in (f"{run}-rest", f"{run}-next"):
        assert _minutes(store, name, "rollup") == _minutes(store, name, "raw") != []


@pytest.mark.integration
def test_a_minute_no_longer_live_is_recomputed_from_raw_not_from_slices(embedded_store) -> None:
    store = embedded_store
    run = f"old-{uuid.uuid4().hex[:6]}"
    minute = datetime.now(timezone.utc).replace(second=0, microsecond=0) - timedelta(minutes=10)
    _write(store, _in_minute(run, minute, range(0, 60, 5)))
    _pass(store, Cadence(quiet_s=0, live_s=120, live_every_s=5, busy_every_s=3600))
    assert _one_minute(store, run, minute, "rollup") == _one_minute(store, run, minute, "raw") != []
    assert store.query(f"SELECT count() FROM rollup_live_slices WHERE startsWith(team, '{run}')").scalar() == 0
    assert _done(store, minute) == 1


def _current(store, minute: datetime) -> bool:
    """Whether ``usage_minutes``' ``minute`` is done for its latest mark (other tests may have done it before)."""
    at = f"toDateTime('{minute:%Y-%m-%d %H:%M:%S}', 'UTC')"
    return bool(store.query(f"SELECT (SELECT max(mark) FROM rollup_done WHERE rollup = 'usage_minutes' AND period = "
                            f"{at}) >= (SELECT max(marked_at) FROM rollup_marks WHERE minute = {at})").scalar())


class _Recorded:
    """The store, with every statement a pass runs through it kept (SQL, parameters): which raw rows it read."""

    def __init__(self, store) -> None:
        self._store = store
        self.statements: list[tuple[str, dict | None]] = []

    def query(self, sql: str, params: dict | None = None):
        self.statements.append((sql, params))
        return self._store.query(sql, params)

    def query_text(self, sql: str, params: dict | None = None, fmt: str = "PrettyCompact") -> str:
        self.statements.append((sql, params))
        return self._store.query_text(sql, params, fmt=fmt)

    def command(self, sql: str) -> None:
        self.statements.append((sql, None))
        self._store.command(sql)

    def minute_from_raw(self, minute: datetime) -> bool:
        """Whether a statement recomputed ``minute`` of ``usage_minutes`` from the raw events."""
        def covers(params: dict | None) -> bool:
            return bool(params) and (datetime.fromisoformat(params["a"]).replace(tzinfo=timezone.utc) <= minute
                                     < datetime.fromisoformat(params["b"]).replace(tzinfo=timezone.utc))

        return any(sql.startswith("INSERT INTO usage_minutes ") and "FROM usage_events" in sql and covers(params)
                   for sql, params in self.statements)


QUIET = Cadence(quiet_s=0, live_s=120, live_every_s=5, busy_every_s=3600, slices_every_s=0)


@pytest.mark.integration
def test_a_quiet_live_minute_is_finished_from_its_slices_equal_to_raw_without_reading_its_raw_rows_again(
        embedded_store) -> None:
    store = embedded_store
    run = f"fin-{uuid.uuid4().hex[:6]}"
    minute = datetime.now(timezone.utc).replace(second=0, microsecond=0) - timedelta(minutes=1)
    first = _in_minute(run, minute, range(0, 60, 2))
    _write(store, first)
    _pass(store)  # filling: summed from its slices, still pending
    # then a late event into a slice already computed, re-deliveries and a conflicting re-send (never applied)
    _write(store, _in_minute(f"{run}-late", minute, range(1, 4)) + _in_minute(run, minute, range(1, 2)))
    _write(store, first[:5], partition=1)
    _write(store, [{**first[3], "output_tokens": 77_777, "status": "ok"}], partition=2)

    # quiet, but the live work waits (a slice was computed less than `slices_every_s` ago): the minute waits for
    # its slices rather than reading its raw rows, and stays pending (readers read it from raw)
    waiting = _Recorded(store)
    rollups.maintain(waiting, now=datetime.now(timezone.utc), max_periods=100_000,
                     cadence=Cadence(quiet_s=0, live_s=120, live_every_s=5, busy_every_s=3600, slices_every_s=3600))
    assert not _current(store, minute) and not waiting.minute_from_raw(minute)
    _assert_views_equal_raw(store)

    finishing = _Recorded(store)
    rollups.maintain(finishing, now=datetime.now(timezone.utc), max_periods=100_000, cadence=QUIET)
    assert _current(store, minute)  # done: readers take it from the rollup now
    assert not finishing.minute_from_raw(minute)  # from the slices the live work just made current
    finished = _one_minute(store, run, minute, "rollup")
    assert finished == _one_minute(store, run, minute, "raw") != []
    assert sum(int(r[7]) for r in finished) == 34  # attempts: 30 + 1 + 3 late, none twice, the conflict not applied
    for name in (f"{run}-late",):
        assert _minutes(store, name, "rollup") == _minutes(store, name, "raw") != []
    _assert_views_equal_raw(store)

    # marked again later (a re-delivery): pending, and finished from its slices again
    _write(store, first[:2], partition=3)
    again = _Recorded(store)
    rollups.maintain(again, now=datetime.now(timezone.utc), max_periods=100_000, cadence=QUIET)
    assert _one_minute(store, run, minute, "rollup") == finished and not again.minute_from_raw(minute)
    _assert_views_equal_raw(store)


@pytest.mark.integration
def test_a_live_minute_marked_without_a_slice_is_finished_from_raw(embedded_store) -> None:
    """Rows deleted by hand and their minute marked (as for a retention): the slices still hold those rows and the
    mark names none of them, so the minute is recomputed from raw, where the rows are gone."""
    store = embedded_store
    run = f"hand-{uuid.uuid4().hex[:6]}"
    minute = datetime.now(timezone.utc).replace(second=0, microsecond=0) - timedelta(minutes=1)
    _write(store, _in_minute(run, minute, range(0, 60, 3)))
    _pass(store)
    store.command(f"DELETE FROM usage_events WHERE event_id IN ('{run}-3', '{run}-9')")  # two of the 20
    store.command(f"INSERT INTO rollup_marks (minute) VALUES ('{minute:%Y-%m-%d %H:%M:%S}')")
    recorded = _Recorded(store)
    rollups.maintain(recorded, now=datetime.now(timezone.utc), max_periods=100_000, cadence=QUIET)
    assert recorded.minute_from_raw(minute) and _current(store, minute)
    after = _one_minute(store, run, minute, "rollup")
    assert after == _one_minute(store, run, minute, "raw") and sum(int(r[7]) for r in after) == 18


def test_migration_24_upgrades_a_store_with_data_in_place(tmp_path) -> None:
    """An old store (migrations 1-22) with raw rows and rollups: after migration 24 every answer is the
    same, and new writes mark slices that the maintainer sums. (In a process of its own.)"""
    from tests.conftest import run_in_own_process

    assert run_in_own_process("test_live_slices", "upgrade_check", tmp_path / "old") == "upgraded"


def upgrade_check(path: str) -> None:
    from spendstream.sinks.embedded import EmbeddedStore

    store = EmbeddedStore(path)
    every = migrations.MIGRATIONS
    migrations.MIGRATIONS = tuple(m for m in every if m.version <= 22)
    migrations.migrate(store)
    run = f"up-{uuid.uuid4().hex[:6]}"
    minute = datetime.now(timezone.utc).replace(second=0, microsecond=0) - timedelta(hours=2)
    # rows and rollups as that version left them: rows inserted (its marks name minutes only), rollups
    # computed from raw and their periods recorded done
    from spendstream.agents.stages import process
    from spendstream.batches import SourceRecord
    from spendstream.sinks.rows import usage_table
    from tests.test_rollups import PRICER

    events = _in_minute(run, minute, range(0, 60, 3)) + _in_minute(f"{run}-b", minute + timedelta(minutes=7), range(9))
    store.insert_arrow("usage_events", usage_table(process([SourceRecord("usage", 0, 0, orjson.dumps(events))],
                                                           PRICER)))
    for rollup in rollups.ROLLUPS:
        store.command(rollups.recompute_sql(rollup, "now64(3)", "toDateTime64(0, 3, 'UTC')",
                                            "toDateTime64('2200-01-01', 3, 'UTC')"))
        store.command(f"INSERT INTO rollup_done (rollup, period, mark) SELECT '{rollup.name}', "
                      f"{rollup.period_of_mark} AS p, max(marked_at) FROM rollup_marks GROUP BY p")
    views = ("cost_hourly", "cost_daily", "cost_monthly", "retry_waste_daily")
    names = tuple(r.name for r in rollups.ROLLUPS)

    def snapshot() -> list:
        return ([_answers(store, f"SELECT * FROM {v}") for v in views]
                + [_grouped(store, r, "rollup") for r in rollups.ROLLUPS]
                + [_answers(store, "SELECT count() FROM rollup_marks FINAL")]
                # the periods done of the rollups compared (a later migration's grain records its own: 28)
                + [_answers(store, f"SELECT count() FROM rollup_done FINAL WHERE rollup IN {names}")])

    before = snapshot()
    migrations.MIGRATIONS = every
    assert migrations.migrate(store) == [v.version for v in every if v.version > 22]
    assert snapshot() == before
    _assert_views_equal_raw(store)
    # after the upgrade: writes mark slices, a live minute is summed from them, all still equal raw
    live = datetime.now(timezone.utc).replace(second=0, microsecond=0) - timedelta(minutes=1)
    _write(store, _in_minute(f"{run}-new", live, range(0, 60, 4)))
    assert store.query("SELECT uniqExact(slice) FROM rollup_marks WHERE minute = "
                       f"toDateTime('{live:%Y-%m-%d %H:%M:%S}', 'UTC')").scalar() == 6
    _pass(store)
    assert _one_minute(store, f"{run}-new", live, "rollup") == _one_minute(store, f"{run}-new", live, "raw") != []
    rollups.maintain(store, now=datetime.now(timezone.utc), max_periods=100_000, quiet_s=0, busy_every_s=0)
    assert _minutes(store, run, "rollup") == _minutes(store, run, "raw") != []
    _assert_views_equal_raw(store)
    store.close()
    print("upgraded")

