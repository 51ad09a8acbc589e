"""The maintainer's cadence: which pending periods a pass recomputes, and that any cadence stays exact.

A period the pass leaves pending is read from raw (the watermark stays before it), so the
answers equal raw FINAL whatever is deferred; the rollup rows themselves equal raw once the
period is recomputed.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest

from spendstream.sinks import rollups
from spendstream.sinks.rollups import DEPLOYMENT_MINUTES, HOURS, MINUTES, Cadence, due
from spendstream.sinks.shapes import SHAPES
from tests.test_rollups import _answers, _assert_views_equal_raw, _events, _write

NOW = datetime(2026, 11, 30, 12, 0, 30, tzinfo=timezone.utc)
NEVER = datetime(1970, 1, 1, tzinfo=timezone.utc)
CADENCE = Cadence(quiet_s=1, live_s=120, live_every_s=1, busy_every_s=30)


def _due(rollup: rollups.Rollup, period: datetime, *, mark_ago_s: float, computed_ago_s: float | None) -> bool:
    computed = NEVER if computed_ago_s is None else NOW - timedelta(seconds=computed_ago_s)
    return due(rollup, period, mark=NOW - timedelta(seconds=mark_ago_s), computed=computed, now=NOW,
               cadence=CADENCE)


def test_a_live_minute_still_being_marked_is_summed_from_slices_not_raw_an_old_busy_one_waits() -> None:
    live, old = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc), datetime(2026, 11, 30, 10, 0, tzinfo=timezone.utc)
    assert not _due(MINUTES, live, mark_ago_s=0.1, computed_ago_s=None)  # live_slices keeps it, every pass
    assert not _due(MINUTES, live - timedelta(minutes=1), mark_ago_s=0.1, computed_ago_s=None)
    assert _due(MINUTES, live, mark_ago_s=2, computed_ago_s=None)        # quiet: recomputed from raw
    assert not _due(MINUTES, old, mark_ago_s=0.1, computed_ago_s=5)     # a backlog still writing into it
    assert _due(MINUTES, old, mark_ago_s=0.1, computed_ago_s=31)        # ... is recomputed now and then
    assert _due(MINUTES, old, mark_ago_s=2, computed_ago_s=5)           # and at once when it goes quiet
    assert _due(MINUTES, old, mark_ago_s=0.1, computed_ago_s=None)      # never computed: now


def test_a_deployment_minute_waits_for_its_minute_to_close_and_then_like_any_closed_period() -> None:
    open_minute = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)
    assert not _due(DEPLOYMENT_MINUTES, open_minute, mark_ago_s=0.1, computed_ago_s=None)
    assert not _due(DEPLOYMENT_MINUTES, open_minute, mark_ago_s=5, computed_ago_s=None)
    closed = open_minute - timedelta(minutes=1)
    # just closed and still marked (a backlog draining into it): not recomputed every `live_every_s`, all its raw
    # rows each time, but every `busy_every_s`, as any closed period; at once when it goes quiet
    assert not _due(DEPLOYMENT_MINUTES, closed, mark_ago_s=0.1, computed_ago_s=1.5)
    assert not _due(DEPLOYMENT_MINUTES, closed, mark_ago_s=0.1, computed_ago_s=29)
    assert _due(DEPLOYMENT_MINUTES, closed, mark_ago_s=0.1, computed_ago_s=31)
    assert _due(DEPLOYMENT_MINUTES, closed, mark_ago_s=0.1, computed_ago_s=None)  # never computed: now
    assert _due(DEPLOYMENT_MINUTES, closed, mark_ago_s=2, computed_ago_s=0.5)


def test_an_hour_waits_until_it_is_closed_and_a_busy_closed_hour_waits_like_an_old_minute() -> None:
    open_hour, closed = datetime(2026, 11, 30, 12, tzinfo=timezone.utc), datetime(2026, 11, 30, 11, tzinfo=timezone.utc)
    assert not _due(HOURS, open_hour, mark_ago_s=60, computed_ago_s=None)
    assert _due(HOURS, closed, mark_ago_s=2, computed_ago_s=5)
    assert not _due(HOURS, closed, mark_ago_s=0.1, computed_ago_s=5)   # a closed hour is never "live"
    assert _due(HOURS, closed, mark_ago_s=0.1, computed_ago_s=31)


def _minutes(store, run: str, source: str) -> list[tuple]:
    """Per minute and key of ``usage_minutes``: every measure, from the rollup table or from raw FINAL."""
    keys = ", ".join(MINUTES.keys)
    answers = ", ".join(f"{m.of_rollup if source == 'rollup' else m.of_raw.replace('uniqExactState', 'uniqExact')} "
                        f"AS {m.name}" for m in rollups.MEASURES)
    table, period = (("usage_minutes FINAL", "minute") if source == "rollup"
                     else ("usage_events FINAL", f"{MINUTES.bucket} AS minute"))
    return _answers(store, f"SELECT {period}, {keys}, {answers} FROM {table} WHERE startsWith(team, '{run}') "
                           f"GROUP BY minute, {keys}")


@pytest.mark.integration
def test_deferred_busy_periods_stay_exact_and_the_live_minute_is_recomputed_meanwhile(embedded_store) -> None:
    store = embedded_store
    run = f"cad-{uuid.uuid4().hex[:6]}"
    now = datetime.now(timezone.utc)
    start = now.replace(second=0, microsecond=0) - timedelta(hours=5)
    history = _events(run, start, 40)
    _write(store, history)
    rollups.maintain(store, now=now, max_periods=100_000, quiet_s=0, busy_every_s=0)
    assert _minutes(store, run, "rollup") == _minutes(store, run, "raw")

    # A backlog still writing into computed minutes (late events, re-deliveries, a conflicting copy), and the
    # live minute.
    _write(store, _events(f"{run}-late", start, 3))
    _write(store, history[:10], partition=1)
    _write(store, [{**history[3], "output_tokens": 77_777}], partition=2)
    live = [{**e, "ts": now.isoformat()} for e in _events(f"{run}-live", now, 5)]
    _write(store, live)
    deferring = Cadence(quiet_s=3600, live_s=120, live_every_s=0, busy_every_s=3600)
    rollups.maintain(store, now=now, max_periods=100_000, cadence=deferring)
    by_rollup, by_raw = _minutes(store, run, "rollup"), _minutes(store, run, "raw")
    live_minute = f"{now:%Y-%m-%d %H:%M}:00"
    assert [r for r in by_rollup if r[0] == live_minute] == [r for r in by_raw if r[0] == live_minute] != []
    assert by_rollup != by_raw  # the late minute was left pending ...
    watermark = str(store.query("SELECT usage_minutes FROM rollup_watermarks").scalar())
    assert watermark <= f"{start:%Y-%m-%d %H:%M:%S}"  # ... so readers read it from raw
    _assert_views_equal_raw(store)

    rollups.maintain(store, now=now, max_periods=100_000, quiet_s=0, busy_every_s=0)  # it went quiet
    assert _minutes(store, run, "rollup") == _minutes(store, run, "raw")
    _assert_views_equal_raw(store)


@pytest.mark.integration
def test_the_maintainers_one_pending_query_finds_what_the_watermarks_view_finds_per_rollup(embedded_store) -> None:
    store = embedded_store
    store.command("INSERT INTO rollup_marks (minute) SELECT toStartOfMinute(now() - INTERVAL number * 13 MINUTE) "
                  "FROM numbers(30)")  # marks a day back, some in periods computed before, some not
    per_rollup = {}
    grains = (*rollups.ROLLUPS, *SHAPES)
    for rollup in grains:
        rows = store.query(f"SELECT period, mark, done FROM ({rollups._pending_sql(rollup)}) ORDER BY period").rows
        if rows:
            per_rollup[rollup.name] = [tuple(rollups._as_datetime(v) for v in row) for row in rows]
    assert len(per_rollup.get("usage_minutes", [])) >= 30
    assert rollups._pending(store, grains) == per_rollup
    rollups.maintain(store, now=datetime.now(timezone.utc), max_periods=100_000, quiet_s=0, busy_every_s=0)
