"""Budgets read closed days from the day rollups, open days from the hour rollups and the partial hours from raw
(``windows.layered``): the spend equals raw ``FINAL``'s to the last digit, in UTC and in a zone whose days start
at :30, while a late event reopens a closed day, and the day rollups are what answers a closed day."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import orjson
import pytest

from spendstream.agents.stages import process
from spendstream.batches import SourceRecord
from spendstream.detect.budgets import Budget, spend_in, spend_so_far
from spendstream.detect.windows import Ask, Window, layered
from spendstream.pricing import Pricer
from spendstream.sinks import rollups, shapes
from spendstream.sinks.rows import usage_table
from spendstream.sinks.store import query_result, sql_time

# mid-hour, mid-millisecond; in Kolkata (UTC+5:30) its day began 2025-07-16 18:30 UTC
NOW = datetime(2025, 7, 17, 14, 41, 23, 456789, tzinfo=timezone.utc)
PRICER = Pricer()


def _write(store, events: list[dict]) -> None:
    store.insert_arrow("usage_events", usage_table(process([SourceRecord("usage", 0, 0, orjson.dumps(events))],
                                                           PRICER)))


def _traffic(run: str) -> list[dict]:
    """gpt-4o-mini, 1M input tokens: $0.15 a call; every 37 minutes for 20 days before NOW, and at the edges."""
    keys = {"team": f"{run}-t", "feature": f"{run}-f", "customer": f"{run}-c"}
    times = [NOW - timedelta(minutes=37 * k, milliseconds=k) for k in range(20 * 24 * 60 // 37)]
    kolkata_day = datetime(2025, 7, 16, 18, 30, tzinfo=timezone.utc)
    month = datetime(2025, 7, 1, tzinfo=timezone.utc)
    edge = timedelta(milliseconds=1)
    times += [kolkata_day, kolkata_day - edge, month, month - edge, NOW - edge, NOW,
              datetime.fromisoformat(sql_time(NOW)).replace(tzinfo=timezone.utc)]
    events = [{"event_id": f"{run}-{i}", "ts": at.isoformat(timespec="milliseconds"), "provider": "openai",
               "model": "gpt-4o-mini", "input_tokens": 1_000_000, "output_tokens": 0, **keys}
              for i, at in enumerate(times)]
    events.append({**events[0], "event_id": f"{run}-u", "model": "my-llama", "provider": "self-hosted"})  # unpriced
    return events


def _budgets(run: str) -> list[Budget]:
    out = []
    for zone in ("UTC", "Asia/Kolkata"):
        for period in ("daily", "monthly"):
            for scope in ({}, {"team": f"{run}-t"}, {"feature": f"{run}-f"}, {"customer": f"{run}-c"}):
                out.append(Budget(name=f"{run}-{zone}-{period}-{scope}", period=period, timezone=zone,
                                  amount_usd=Decimal(10), **scope))
    return out


def _raw_spent(store, budget: Budget, start: datetime, end: datetime) -> Decimal:
    where = "priced AND ts >= {a:DateTime64(3, 'UTC')} AND ts < {b:DateTime64(3, 'UTC')}"
    params = {"a": sql_time(start), "b": sql_time(end)}
    if budget.scope:
        where += f" AND {budget.scope[0]} = {{v:String}}"
        params["v"] = budget.scope[1]
    return query_result(store, f"SELECT sum(total_cost) FROM usage_events FINAL WHERE {where}",
                        params).scalar() or Decimal(0)


def _assert_same_as_raw(store, budgets: list[Budget]) -> None:
    nows = [NOW, NOW.replace(minute=0, second=0, microsecond=0), datetime(2025, 7, 17, 18, 30, tzinfo=timezone.utc),
            datetime(2025, 7, 17, tzinfo=timezone.utc)]
    for now in nows:
        expected = [_raw_spent(store, b, b.period_of(now)[0], now) for b in budgets]
        assert spend_so_far(store, budgets, now) == expected, now
    # a window shorter than an hour, and one across a day boundary without a whole day
    short = [(b, Window(NOW - timedelta(minutes=20), NOW)) for b in budgets[:4]]
    across = [(b, Window(datetime(2025, 7, 16, 23, 10, tzinfo=timezone.utc), NOW - timedelta(hours=13)))
              for b in budgets[:4]]
    asks = short + across
    assert spend_in(store, asks) == [_raw_spent(store, b, w.start, w.end) for b, w in asks]


def _maintain(store) -> None:
    rollups.maintain(store, now=datetime.now(timezone.utc), max_periods=100_000, quiet_s=0, busy_every_s=0)


@pytest.mark.integration
def test_budget_spend_from_days_hours_and_raw_equals_raw_final(embedded_store) -> None:
    store, run = embedded_store, f"bl-{uuid.uuid4().hex[:6]}"
    _write(store, _traffic(run))
    budgets = _budgets(run)
    _assert_same_as_raw(store, budgets)  # not maintained: the watermarks keep the reads on raw
    _maintain(store)
    assert str(store.query("SELECT team_days FROM rollup_watermarks").scalar()) > str(NOW)
    _assert_same_as_raw(store, budgets)
    assert spend_so_far(store, budgets[1:2], NOW)[0] > Decimal(0)

    # a late event reopens a closed day: the day rollup's watermark goes back to it, its hours answer meanwhile
    late_day = datetime(2025, 7, 9, tzinfo=timezone.utc)
    _write(store, [{**_traffic(run)[0], "event_id": f"{run}-late", "ts": (late_day + timedelta(hours=7, seconds=3))
                    .isoformat()}])
    assert str(store.query("SELECT team_days FROM rollup_watermarks").scalar()) <= str(late_day)
    _assert_same_as_raw(store, budgets)
    _maintain(store)
    _assert_same_as_raw(store, budgets)


@pytest.mark.integration
def test_a_closed_day_is_read_from_the_day_rollup(embedded_store) -> None:
    """A day-rollup row that raw does not back shows up in the spend: budgets do read the days."""
    store, team = embedded_store, f"ghost-{uuid.uuid4().hex[:6]}"
    _maintain(store)
    day = datetime(2025, 7, 10, tzinfo=timezone.utc)
    for rollup, feature in ((rollups.TEAM_DAYS, ""), (rollups.FEATURE_DAYS, f"{team}-f")):
        columns, values = ("feature, ", f"'{feature}', ") if feature else ("", "")
        store.command(f"INSERT INTO {rollup.name} (day, team, {columns}attempts, cost_usd, version) "
                      f"VALUES ('{day:%Y-%m-%d} 00:00:00', '{team}', {values}3, 2.5, now64(3))")
    store.command(f"INSERT INTO {shapes.CUSTOMER_DAYS.name} (day, customer, attempts, cost_usd, version) "
                  f"VALUES ('{day:%Y-%m-%d} 00:00:00', '{team}-c', 3, 1.25, now64(3))")
    try:
        budgets = [Budget(name="t", team=team, amount_usd=Decimal(1)),
                   Budget(name="f", feature=f"{team}-f", amount_usd=Decimal(1)),
                   Budget(name="c", customer=f"{team}-c", amount_usd=Decimal(1)),
                   Budget(name="t-day", team=team, period="daily", amount_usd=Decimal(1))]
        assert spend_so_far(store, budgets, NOW) == [Decimal("2.5"), Decimal("2.5"), Decimal("1.25"), Decimal(0)]
        assert all(_raw_spent(store, b, b.period_of(NOW)[0], NOW) == 0 for b in budgets)
        # a window that ends inside the day reads its hours instead (the day is not whole in it)
        assert spend_in(store, [(budgets[0], Window(day, day + timedelta(hours=23)))]) == [Decimal(0)]
    finally:
        for name in ("team_days", "feature_days", "customer_days"):
            store.command(f"ALTER TABLE {name} DELETE WHERE {'customer' if name == 'customer_days' else 'team'} "
                          f"LIKE '{team}%' SETTINGS mutations_sync = 2")


def test_layered_refuses_layers_that_cannot_stand_for_raw() -> None:
    window = Window(NOW - timedelta(days=3), NOW)
    with pytest.raises(ValueError, match="does not roll up every event"):
        layered([Ask(window, (shapes.FEATURE_FAILURES,))], ["attempts"], name="x")
    with pytest.raises(ValueError, match="not whole periods"):
        layered([Ask(window, (rollups.HOURS, rollups.TEAM_DAYS))], ["cost_usd"], name="x")
    with pytest.raises(ValueError, match="no summable"):
        layered([Ask(window, (rollups.TEAM_DAYS, rollups.HOURS))], ["requests"], name="x")
