"""The detectors read their windows from the rollups: the same inputs and the same alerts as raw FINAL, to the digit.

Each reference below is the detector's reader as it was before rollups (raw
``usage_events FINAL``), kept verbatim. The comparisons are over everything in the
session's shared store, so other tests' rows take part too, before the rollups are
maintained, after, and after duplicates, a conflicting re-send and a late event.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import orjson
import pytest

from spendstream.agents.app import store_usage
from spendstream.agents.stages import process
from spendstream.batches import SourceRecord
from spendstream.detect.baseline import floor_hour, subject_hours
from spendstream.detect.budgets import Budget, evaluate, spend_so_far
from spendstream.detect.windows import Window, split
from spendstream.pricing import Pricer
from spendstream.sinks import rollups
from spendstream.sinks.store import query_result, sql_time
from spendstream.sinks.writer import SinkWriter

# mid-minute, mid-millisecond: every window has partial minutes and hours at its edges
NOW = datetime(2025, 11, 12, 9, 41, 23, 456789, tzinfo=timezone.utc)
MINUTE, HOUR = timedelta(minutes=1), timedelta(hours=1)
PRICER = Pricer()


# -- the references: the readers as they were, on raw FINAL ------------------------------------

def raw_subject_hours(store, start: datetime, end: datetime) -> list[tuple]:
    """The detectors' hourly history as raw FINAL answers it (the reference for subject_hours)."""
    return query_result(store, """
        SELECT subject, toUInt32(dateDiff('hour', {a:DateTime64(3, 'UTC')}, toStartOfHour(ts))) AS h,
               toFloat64(uniqExact(request_id)), toFloat64(count()), toFloat64(countIf(status != 'ok')),
               toFloat64(ifNull(sumIf(total_cost, priced), 0))
        FROM (SELECT arrayJoin([concat('team=', ifNull(team, '')), concat('feature=', ifNull(feature, '')),
                                concat('customer=', ifNull(customer, '')),
                                if(ifNull(feature, '') = '' OR ifNull(customer, '') = '', 'feature=,customer=',
                                   concat('feature=', feature, ',customer=', customer)),
                                if(ifNull(feature, '') = '' OR ifNull(customer, '') = '' OR ifNull(model, '') = '',
                                   'feature=,customer=,model=',
                                   concat('feature=', feature, ',customer=', customer, ',model=', model))])
                   AS subject, *
              FROM usage_events FINAL WHERE ts >= {a:DateTime64(3, 'UTC')} AND ts < {b:DateTime64(3, 'UTC')})
        WHERE NOT endsWith(subject, '=')
        GROUP BY subject, h ORDER BY subject, h""", {"a": sql_time(start), "b": sql_time(end)}).rows


def raw_spent(store, budget: Budget, start: datetime, end: datetime) -> Decimal:
    where = "priced AND ts >= {start:DateTime64(3, 'UTC')} AND ts < {now:DateTime64(3, 'UTC')}"
    params = {"start": sql_time(start), "now": sql_time(end)}
    if budget.scope:
        where += f" AND {budget.scope[0]} = {{value:String}}"
        params["value"] = budget.scope[1]
    return query_result(store, f"SELECT sum(total_cost) FROM usage_events FINAL WHERE {where}",
                        params).scalar() or Decimal(0)


# -- traffic ----------------------------------------------------------------------------------

def _call(run: str, n: int, ts: datetime, **fields) -> dict:
    """gpt-4o, 100k input tokens: $0.25 a call."""
    return {"event_id": f"{run}-{n}", "request_id": f"{run}-r{n}", "ts": ts.isoformat(timespec="milliseconds"),
            "provider": "openai", "model": "gpt-4o", "input_tokens": 100_000, "output_tokens": 0, **fields}


def _traffic(run: str) -> list[dict]:
    events: list[dict] = []

    def add(ts: datetime, **fields) -> None:
        events.append(_call(run, len(events), ts, **fields))

    window = timedelta(minutes=10)
    spiky = {"team": f"{run}-spiky", "feature": f"{run}-chat", "customer": f"{run}-c0"}
    lookbacks = [timedelta(days=d) for d in (7, 14, 21, 28, 1, 2)]
    for back in (timedelta(0), *lookbacks):
        start = NOW - window - back
        exact_start = datetime.fromisoformat(sql_time(start)).replace(tzinfo=timezone.utc)
        exact_end = datetime.fromisoformat(sql_time(start + window)).replace(tzinfo=timezone.utc)
        for k in range(40 if back == timedelta(0) else 4):  # a spike now, 4 calls a window before
            add(start + timedelta(seconds=14 * k + 1), **spiky)
        # at the windows' millisecond edges: in, in, out, out
        for at in (exact_start, exact_end - timedelta(milliseconds=1), exact_start - timedelta(milliseconds=1),
                   exact_end):
            add(at, **spiky, environment="edge")
    # first seen inside the 2-day lookback window: the older windows are unknown, not $0
    add(NOW - window - timedelta(days=2) + timedelta(minutes=3), team=f"{run}-new", customer=f"{run}-c1")
    # first seen exactly at the (millisecond) end of the 7-day window: that window is $0, the older ones unknown
    add(datetime.fromisoformat(sql_time(NOW - timedelta(days=7))).replace(tzinfo=timezone.utc),
        feature=f"{run}-edge")
    # through the customer's day in Kolkata (from 18:30 UTC): whole hours, and both sides of its first instant
    kolkata_day = datetime(2025, 11, 11, 18, 30, tzinfo=timezone.utc)
    for at in (NOW - 5 * HOUR, NOW - 10 * HOUR, kolkata_day, kolkata_day - timedelta(milliseconds=1)):
        add(at, customer=f"{run}-c0")
    add(NOW + HOUR, customer=f"{run}-future")                       # only in the future: a key, spending $0 now
    add(NOW - timedelta(minutes=2), team=f"{run}-unpriced", provider="self-hosted", model="my-llama")
    add(NOW - timedelta(minutes=3), feature=f"{run}-chat")          # no team: no 'team=' key
    # retries: 2 % through the day before the window, then a storm of 429s and 503s
    storm = f"{run}-storm"
    day_start = NOW - timedelta(minutes=5) - timedelta(days=1)
    for m in range(0, 24 * 60, 6):
        for k in range(5):
            retried = (m // 6 * 5 + k) % 50 == 0
            add(day_start + timedelta(minutes=m, seconds=11 * k), feature=storm, attempt=2 if retried else 1)
    add(datetime.fromisoformat(sql_time(day_start)).replace(tzinfo=timezone.utc), feature=storm, attempt=3)
    for k in range(60):
        add(NOW - timedelta(minutes=5) + timedelta(seconds=5 * k), feature=storm, attempt=1 + k % 2,
            status="ok" if k % 2 else "rate_limited" if k % 4 else "error",
            http_status=200 if k % 2 else 429 if k % 4 else 503)
    return events


def _write(store, events: list[dict], partition: int = 0) -> None:
    asyncio.run(store_usage(SinkWriter(store), process(
        [SourceRecord("usage", partition, 0, orjson.dumps(events))], PRICER)))


def _budgets(run: str) -> list[Budget]:
    return [Budget(name=f"{run}-team", team=f"{run}-spiky", amount_usd=Decimal(20)),
            Budget(name=f"{run}-feature", feature=f"{run}-storm", period="daily", amount_usd=Decimal(50),
                   timezone="Asia/Kolkata"),  # a day starting at :30 UTC: partial hours at both ends
            Budget(name=f"{run}-customer", customer=f"{run}-c0", period="daily", amount_usd=Decimal(5),
                   timezone="Asia/Kolkata"),
            Budget(name=f"{run}-all", amount_usd=Decimal(1))]


def _assert_same_as_raw(store, run: str, nows: list[datetime]) -> None:
    for now in nows:
        # what the hourly baseline refresh reads: 30 days of hours, through the open one
        start, end = floor_hour(now) - timedelta(days=30), floor_hour(now) + HOUR
        assert subject_hours(store, start=start, end=end) == raw_subject_hours(store, start, end)
        budgets = _budgets(run)
        assert spend_so_far(store, budgets, now) == [raw_spent(store, b, b.period_of(now)[0], now) for b in budgets]


def _maintain(store) -> None:
    rollups.maintain(store, now=datetime.now(timezone.utc), max_periods=100_000, quiet_s=0, busy_every_s=0)


@pytest.mark.integration
def test_detector_windows_from_rollups_equal_raw_through_duplicates_conflicts_and_late_events(seeded_store) -> None:
    store, run = seeded_store, f"det-{uuid.uuid4().hex[:6]}"
    real_now = datetime.now(timezone.utc)
    nows = [NOW, NOW.replace(second=0, microsecond=0), NOW + timedelta(seconds=30), real_now]
    events = _traffic(run)
    _write(store, events)
    _assert_same_as_raw(store, run, nows)   # nothing maintained yet: the watermark keeps the readers on raw
    _maintain(store)
    assert str(store.query("SELECT usage_minutes FROM rollup_watermarks").scalar()) > str(NOW)  # the rollups answer now
    _assert_same_as_raw(store, run, nows)

    assert any(run in a.subject for a in evaluate(store, _budgets(run), NOW))
    hours = {(r[0], r[1]): r[2:] for r in subject_hours(store, start=floor_hour(NOW), end=floor_hour(NOW) + HOUR)}
    # the spike: 40 calls, 4 more from the 1- and 2-day lookbacks' minutes are other hours; $0.25 a call
    assert hours[(f"team={run}-spiky", 0)][3] >= 10.0
    assert (f"team={run}-unpriced", 0) in hours and hours[(f"team={run}-unpriced", 0)][3] == 0.0

    # Re-deliveries change nothing; a conflicting copy is not applied; a late event reopens a week-old minute.
    _write(store, events[:200], partition=1)
    _write(store, [{**events[3], "input_tokens": 9_000_000}], partition=2)
    late = _call(f"{run}-late", 0, NOW - timedelta(days=7, minutes=4), **{"team": f"{run}-spiky"})
    _write(store, [late])
    assert str(store.query("SELECT usage_minutes FROM rollup_watermarks").scalar()) <= str(NOW - timedelta(days=7))
    _assert_same_as_raw(store, run, nows)
    _maintain(store)
    _assert_same_as_raw(store, run, nows)


@pytest.mark.integration
def test_the_readers_answer_from_the_rollup_where_it_is_maintained(seeded_store) -> None:
    """A rollup row that raw does not back shows up in the answers: the readers do read the rollup."""
    store, team = seeded_store, f"ghost-{uuid.uuid4().hex[:6]}"
    _maintain(store)
    minute = NOW.replace(second=0, microsecond=0) - 3 * MINUTE
    for rollup in rollups.ROLLUPS:  # (the anomaly reader knows a key by its hours; budgets read closed hours)
        at = minute.replace(minute=0) - HOUR if rollup.step == HOUR else minute
        store.command(f"INSERT INTO {rollup.name} ({rollup.period}, team, feature, attempts, retries, cost_usd, "
                      f"version) VALUES ('{at:%Y-%m-%d %H:%M:%S}', '{team}', '{team}-f', 10, 5, 7.5, now64(3))")
    try:
        assert str(store.query("SELECT usage_minutes FROM rollup_watermarks").scalar()) > str(minute)
        budget = Budget(name=team, team=team, amount_usd=Decimal(1))
        assert spend_so_far(store, [budget], NOW) == [Decimal("7.5")]
        assert raw_spent(store, budget, budget.period_of(NOW)[0], NOW) == 0
        closed = floor_hour(minute) - HOUR  # the hour rollups' ghost rows are in the last closed hour
        hours = {r[0]: r[2:] for r in subject_hours(store, start=closed, end=closed + HOUR)}
        assert list(hours[f"team={team}"][1:]) == [10.0, 0.0, 7.5]  # attempts, failed, USD: only the rollup has them
    finally:
        for rollup in rollups.ROLLUPS:
            store.command(f"ALTER TABLE {rollup.name} DELETE WHERE team = '{team}' SETTINGS mutations_sync = 2")


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def test_a_window_is_whole_periods_and_partial_ones_at_its_edges() -> None:
    mid = split(Window(_at("2025-01-01 10:00:30.250750"), _at("2025-01-01 10:10:05.999999")), MINUTE)
    assert mid == ((_at("2025-01-01 10:01"), _at("2025-01-01 10:10")),
                     [(_at("2025-01-01 10:00:30.250"), _at("2025-01-01 10:01")),
                      (_at("2025-01-01 10:10"), _at("2025-01-01 10:10:05.999"))])
    aligned = split(Window(_at("2025-01-01 10:00"), _at("2025-01-01 12:00")), HOUR)
    assert aligned == ((_at("2025-01-01 10:00"), _at("2025-01-01 12:00")), [])
    # shorter than a period, or across one boundary without a whole period: all raw
    assert split(Window(_at("2025-01-01 10:20"), _at("2025-01-01 10:30")), HOUR) == (
        None, [(_at("2025-01-01 10:20"), _at("2025-01-01 10:30"))])
    assert split(Window(_at("2025-01-01 10:50"), _at("2025-01-01 11:10")), HOUR) == (
        None, [(_at("2025-01-01 10:50"), _at("2025-01-01 11:10"))])
    assert split(Window(_at("2025-01-01 10:00"), _at("2025-01-01 10:00")), HOUR) == (None, [])
    assert split(Window(_at("2025-01-01 10:00:01"), None), MINUTE) == (
        (_at("2025-01-01 10:01"), None), [(_at("2025-01-01 10:00:01"), _at("2025-01-01 10:01"))])


@pytest.mark.integration
def test_budgets_spend_nothing_at_the_first_instant_of_a_period_and_many_are_read_in_batches(embedded_store) -> None:
    budget = Budget(name="empty", amount_usd=Decimal(1), period="daily")
    assert spend_so_far(embedded_store, [budget], budget.period_of(NOW)[0]) == [0]
    many = [Budget(name=f"b{i}", team=f"nobody-{i}", amount_usd=Decimal(1)) for i in range(45)]
    assert spend_so_far(embedded_store, many, NOW) == [0] * 45  # in several queries
