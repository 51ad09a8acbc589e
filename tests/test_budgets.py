"""Budgets: thresholds once per period, periods in the budget's time zone, a burn-rate forecast."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import orjson
import pytest

from spendstream.agents.stages import process
from spendstream.alerting.delivery import store_new_alerts
from spendstream.batches import SourceRecord
from spendstream.configfile import ConfigFileError
from spendstream.detect.budgets import Budget, evaluate, load_budgets
from spendstream.pricing import Pricer
from spendstream.sinks import rollups
from spendstream.sinks.rows import usage_table


def test_periods_follow_the_calendar_in_the_budgets_time_zone() -> None:
    berlin = Budget(name="b", amount_usd=Decimal(10), timezone="Europe/Berlin")
    # 2026-03-31 23:30 UTC is already April 1st in Berlin (CEST, UTC+2)
    start, end = berlin.period_of(datetime(2026, 3, 31, 23, 30, tzinfo=timezone.utc))
    assert (start, end) == (datetime(2026, 3, 31, 22, 0, tzinfo=timezone.utc),
                            datetime(2026, 4, 30, 22, 0, tzinfo=timezone.utc))
    daily = Budget(name="d", amount_usd=Decimal(1), period="daily", timezone="America/New_York")
    start, end = daily.period_of(datetime(2026, 3, 8, 12, 0, tzinfo=timezone.utc))  # the day DST starts there
    assert (start, end - start) == (datetime(2026, 3, 8, 5, 0, tzinfo=timezone.utc), timedelta(hours=23))


def test_budget_file_errors_name_the_line(tmp_path) -> None:
    path = tmp_path / "budgets.yaml"
    path.write_text("budgets:\n  - name: x\n    amount_usd: 10\n    timezone: Mars/Olympus\n")
    with pytest.raises(ConfigFileError, match=r"budgets.yaml:4: budgets.0.timezone: Value error, unknown time zone"):
        load_budgets(path)


@pytest.mark.integration
def test_thresholds_fire_once_per_period_with_a_forecast(embedded_store) -> None:
    team = f"team-{uuid.uuid4().hex[:8]}"
    now = datetime(2025, 9, 10, 12, 0, tzinfo=timezone.utc)
    # gpt-4o-mini at $0.15 per million input tokens: 30 calls × 1M tokens = $4.50 in the first 9.5 days
    events = [{"event_id": f"{team}-{i}", "ts": (now - timedelta(hours=5 * i, minutes=1)).isoformat(),
               "provider": "openai", "model": "gpt-4o-mini", "team": team, "input_tokens": 1_000_000,
               "output_tokens": 0} for i in range(30)]
    embedded_store.insert_arrow("usage_events", usage_table(process(
        [SourceRecord("usage", 0, 0, orjson.dumps(events))], Pricer())))
    budget = Budget(name=f"{team}-monthly", team=team, amount_usd=Decimal(5))
    alerts = evaluate(embedded_store, [budget], now)
    rollups.maintain(embedded_store, now=datetime.now(timezone.utc), max_periods=100_000,
                     quiet_s=0, busy_every_s=0)  # now from the rollups
    assert evaluate(embedded_store, [budget], now) == alerts
    assert [(a.expected, a.severity) for a in alerts] == [
        (Decimal("2.5"), "info"), (Decimal("4"), "warning"), (Decimal("4.5"), "error")]
    assert alerts[0].observed == Decimal("4.5") and "90% used" in alerts[0].message
    # $4.50 in 9.5 days: $5 lasts 10.56 days from September 1st
    assert "runs out 2025-09-11 13:2" in alerts[0].message
    assert len({a.dedup_key for a in alerts}) == 3
    assert store_new_alerts(embedded_store, alerts) == 3
    assert store_new_alerts(embedded_store, evaluate(embedded_store, [budget], now)) == 0  # once per period
    # next month: a new period, nothing spent yet, nothing new fires (September, just closed, is evaluated
    # again for crossings in its last minutes: those above, already stored)
    october = evaluate(embedded_store, [budget], datetime(2025, 10, 1, 0, 5, tzinfo=timezone.utc))
    assert {a.dedup_key for a in october} == {a.dedup_key for a in alerts}
    assert store_new_alerts(embedded_store, october) == 0
