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
from spendstream.alerting.delivery import store_new_alerts
from spendstream.batches import SourceRecord
from spendstream.detect.anomaly import LOOKBACKS, KeySpend, SpendAnomalyDetector, detect_spend_anomalies, spend_windows
from spendstream.detect.budgets import Budget, evaluate, spend_so_far
from spendstream.detect.retry_storm import FeatureWindow, RetryStormDetector, detect_retry_storms, retry_baselines
from spendstream.detect.windows import Window, split
from spendstream.pricing import Pricer
from spendstream.schemas.alert import Alert
from spendstream.sinks import rollups
from spendstream.sinks.store import query_result, sql_time
from spendstream.sinks.writer import SinkWriter

# mid-minute, mid-millisecond: every window has partial minutes and hours at its edges
NOW = datetime(2025, 11, 12, 9, 41, 23, 456789, tzinfo=timezone.utc)
MINUTE, HOUR = timedelta(minutes=1), timedelta(hours=1)
PRICER = Pricer()


# -- the references: the readers as they were, on raw FINAL ------------------------------------

def raw_spend_windows(store, now: datetime, window: timedelta) -> list[KeySpend]:
    starts = [now - window] + [now - window - back for back in LOOKBACKS]
    params = {f"s{i}": sql_time(s) for i, s in enumerate(starts)} | {
        f"e{i}": sql_time(s + window) for i, s in enumerate(starts)}
    sums = ", ".join(
        f"sumIf(total_cost, ts >= {{s{i}:DateTime64(3, 'UTC')}} AND ts < {{e{i}:DateTime64(3, 'UTC')}}) AS w{i}, "
        f"countIf(ts >= {{s{i}:DateTime64(3, 'UTC')}} AND ts < {{e{i}:DateTime64(3, 'UTC')}}) AS n{i}"
        for i in range(len(starts)))
    params["oldest"] = sql_time(min(starts))
    rows = query_result(store, f"""
        SELECT key, toString(min(ts)) AS first_seen, {sums} FROM (
            SELECT arrayJoin([concat('team=', ifNull(team, '')), concat('feature=', ifNull(feature, '')),
                              concat('customer=', ifNull(customer, ''))]) AS key, ts, total_cost
            FROM usage_events FINAL
            WHERE priced AND ts >= {{oldest:DateTime64(3, 'UTC')}})
        WHERE NOT endsWith(key, '=')
        GROUP BY key""", params).dicts()
    out = []
    for row in rows:
        first_seen = datetime.fromisoformat(row["first_seen"]).replace(tzinfo=now.tzinfo)
        history = tuple((row[f"w{i}"] or Decimal(0)) if starts[i] + window > first_seen else None
                        for i in range(1, len(starts)))
        out.append(KeySpend(row["key"], row["w0"] or Decimal(0), history))
    return sorted(out, key=lambda k: k.key)


def raw_spend_anomalies(store, now: datetime, detector: SpendAnomalyDetector) -> list[Alert]:
    firing = {r[0]: datetime.fromisoformat(r[1]).replace(tzinfo=now.tzinfo) for r in query_result(store, """
        SELECT subject, toString(argMax(window_start, created_at)) FROM alerts FINAL WHERE kind = 'spend_anomaly'
        GROUP BY subject HAVING argMax(state, created_at) = 'firing'""").rows}
    alerts = []
    for spend in raw_spend_windows(store, now, detector.window):
        history = [float(h) if h is not None else None for h in spend.history]
        alert = detector.evaluate(spend.key, float(spend.observed), history, firing.get(spend.key), now)
        alerts += [alert] if alert else []
    return alerts


def raw_retry_baselines(store, start: datetime, end: datetime) -> dict[str, float]:
    return {r[0]: float(r[1]) for r in query_result(store, """
        SELECT feature, countIf(attempt > 1) / count() FROM usage_events FINAL
        WHERE ts >= {day:DateTime64(3, 'UTC')} AND ts < {start:DateTime64(3, 'UTC')} AND feature IS NOT NULL
        GROUP BY feature""", {"day": sql_time(start), "start": sql_time(end)}).rows}


def raw_retry_storms(store, now: datetime, detector: RetryStormDetector) -> list[Alert]:
    params = {"start": sql_time(now - detector.window), "now": sql_time(now)}
    windows = {r["feature"]: FeatureWindow(**r) for r in query_result(store, """
        SELECT feature, toInt64(count()) AS attempts, toInt64(countIf(attempt > 1)) AS retries,
               toInt64(countIf(status = 'rate_limited' OR http_status = 429)) AS rate_limited,
               toInt64(countIf(http_status >= 500)) AS server_errors,
               toInt64(countIf(status = 'timeout')) AS timeouts,
               toInt64(countIf(status = 'invalid_output')) AS invalid_outputs,
               sumIf(ifNull(total_cost, 0), status != 'ok') AS failed_cost,
               toInt64(max(attempt)) AS max_attempt
        FROM usage_events FINAL
        WHERE ts >= {start:DateTime64(3, 'UTC')} AND ts < {now:DateTime64(3, 'UTC')} AND feature IS NOT NULL
        GROUP BY feature""", params).dicts()}
    baselines = raw_retry_baselines(store, now - detector.window - timedelta(days=1), now - detector.window)
    firing = {r[0].removeprefix("feature="): datetime.fromisoformat(r[1]).replace(tzinfo=now.tzinfo)
              for r in query_result(store, """
        SELECT subject, toString(argMax(window_start, created_at)) FROM alerts FINAL WHERE kind = 'retry_storm'
        GROUP BY subject HAVING argMax(state, created_at) = 'firing'""").rows}
    alerts = []
    for feature in sorted(windows.keys() | firing.keys()):
        window = windows.get(feature) or FeatureWindow(feature, 0, 0, 0, 0, 0, 0, Decimal(0), 0)
        alert = detector.evaluate(window, baselines.get(feature, 0.0), firing.get(feature), now)
        alerts += [alert] if alert else []
    return alerts


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

    window = SpendAnomalyDetector().window
    spiky = {"team": f"{run}-spiky", "feature": f"{run}-chat", "customer": f"{run}-c0"}
    for back in (timedelta(0), *LOOKBACKS):
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
    anomaly, storms = SpendAnomalyDetector(), RetryStormDetector()
    for now in nows:
        assert spend_windows(store, now, window=anomaly.window) == raw_spend_windows(store, now, anomaly.window)
        start, end = now - storms.window - timedelta(days=1), now - storms.window
        assert retry_baselines(store, start=start, end=end) == raw_retry_baselines(store, start, end)
        budgets = _budgets(run)
        assert spend_so_far(store, budgets, now) == [raw_spent(store, b, b.period_of(now)[0], now) for b in budgets]
        assert _sorted(detect_spend_anomalies(store, now)) == _sorted(raw_spend_anomalies(store, now, anomaly))
        assert _sorted(detect_retry_storms(store, now)) == _sorted(raw_retry_storms(store, now, storms))


def _sorted(alerts: list[Alert]) -> list[Alert]:
    return sorted(alerts, key=lambda a: (a.subject, a.dedup_key, a.state))


def _maintain(store) -> None:
    rollups.maintain(store, now=datetime.now(timezone.utc), max_periods=100_000, quiet_s=0, busy_every_s=0)


@pytest.mark.integration
def test_detector_windows_and_alerts_from_rollups_equal_raw_through_duplicates_conflicts_and_late_events(
        seeded_store) -> None:
    store, run = seeded_store, f"det-{uuid.uuid4().hex[:6]}"
    real_now = datetime.now(timezone.utc)
    nows = [NOW, NOW.replace(second=0, microsecond=0), NOW + timedelta(seconds=30), real_now]
    events = _traffic(run)
    _write(store, events)
    # a firing spend anomaly for a key that spends nothing now: it resolves, from both readers
    store_new_alerts(store, [Alert(kind="spend_anomaly", severity="warning", state="firing",
                                   subject=f"customer={run}-future", window_start=NOW - HOUR, window_end=NOW,
                                   dedup_key=f"{run}-future", message="test", created_at=NOW - HOUR)])
    _assert_same_as_raw(store, run, nows)   # nothing maintained yet: the watermark keeps the readers on raw
    _maintain(store)
    assert str(store.query("SELECT usage_minutes FROM rollup_watermarks").scalar()) > str(NOW)  # the rollups answer now
    _assert_same_as_raw(store, run, nows)

    alerts = detect_spend_anomalies(store, NOW) + detect_retry_storms(store, NOW)
    fired = {(a.subject, a.state) for a in alerts if run in a.subject}
    assert {(f"team={run}-spiky", "firing"), (f"feature={run}-chat", "firing"), (f"customer={run}-c0", "firing"),
            (f"customer={run}-future", "resolved"), (f"feature={run}-storm", "firing")} <= fired
    assert any(run in a.subject for a in evaluate(store, _budgets(run), NOW))
    spiky = {s.key: s for s in spend_windows(store, NOW, window=timedelta(minutes=10)) if run in s.key}
    assert spiky[f"team={run}-spiky"].observed == Decimal("10.50")   # 40 calls and the two edge calls inside
    # LOOKBACKS are 7, 14, 21, 28 days, then 1 and 2 days
    assert spiky[f"team={run}-new"].history == (None, None, None, None, Decimal(0), Decimal("0.25"))
    assert spiky[f"feature={run}-edge"].history[0] == Decimal(0) and spiky[f"feature={run}-edge"].history[1] is None
    assert f"team={run}-unpriced" not in spiky and f"customer={run}-future" in spiky

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
        keys = {s.key: s.observed for s in spend_windows(store, NOW, window=timedelta(minutes=10))}
        assert keys.get(f"team={team}") == Decimal("7.5")
        day = retry_baselines(store, start=minute - timedelta(days=1), end=minute + MINUTE)
        assert day[f"{team}-f"] == 0.5
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
