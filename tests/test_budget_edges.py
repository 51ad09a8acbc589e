"""Budget crossings at a period's edge (held-out evaluation, issue 18): a crossing in the last minutes of a period
is first seen by a pass in the next one, and must still be alerted, once."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import orjson
import pytest

from spendstream.agents.stages import process
from spendstream.alerting.cycle import AlertCycle, AlertingConfig
from spendstream.alerting.delivery import store_new_alerts
from spendstream.batches import SourceRecord
from spendstream.detect.budgets import CLOSED_PERIOD_GRACE, Budget, evaluate, periods
from spendstream.pricing import Pricer
from spendstream.sinks import rollups
from spendstream.sinks.rows import usage_table
from spendstream.sinks.store import query_result

NEW_YORK = ZoneInfo("America/New_York")


def _local(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=NEW_YORK).astimezone(timezone.utc)


def _customer_crossing_at_2359(store) -> Budget:
    """A $5 daily New York budget of a new customer: $1.50 during 2026-05-31, then $1.05 at 23:59 local (51 %)."""
    customer = f"edge-{uuid.uuid4().hex[:8]}"
    # gpt-4o-mini at $0.15 per million input tokens: $0.15 a call
    times = [_local(f"2026-05-31T{9 + h:02d}:15") for h in range(10)] + [
        _local("2026-05-31T23:59:00") + timedelta(seconds=5 * i) for i in range(7)]
    events = [{"event_id": f"{customer}-{i}", "ts": at.isoformat(), "provider": "openai", "model": "gpt-4o-mini",
               "customer": customer, "input_tokens": 1_000_000, "output_tokens": 0} for i, at in enumerate(times)]
    store.insert_arrow("usage_events", usage_table(process([SourceRecord("usage", 0, 0, orjson.dumps(events))],
                                                           Pricer())))
    return Budget(name=f"{customer}-daily", customer=customer, period="daily", amount_usd=Decimal(5),
                  timezone="America/New_York")


def _stored(store, budget: Budget) -> list[tuple[str, str]]:
    return [tuple(r) for r in query_result(
        store, "SELECT dedup_key, message FROM alerts FINAL WHERE dedup_key LIKE {p:String} ORDER BY dedup_key",
        {"p": f"budget:{budget.name}:%"}).rows]


def test_a_pass_just_after_midnight_also_evaluates_the_day_that_closed() -> None:
    budget = Budget(name="b", amount_usd=Decimal(1), period="daily", timezone="America/New_York")
    # 00:30 on the day after DST started in New York (2026-03-08, a 23-hour day)
    assert periods(budget, _local("2026-03-09T00:30")) == [
        (_local("2026-03-08T00:00"), _local("2026-03-09T00:00")), (_local("2026-03-09T00:00"),
                                                                    _local("2026-03-10T00:00"))]
    assert _local("2026-03-09T00:00") - _local("2026-03-08T00:00") == timedelta(hours=23)
    later = _local("2026-03-09T00:00") + CLOSED_PERIOD_GRACE
    assert periods(budget, later) == [(_local("2026-03-09T00:00"), _local("2026-03-10T00:00"))]
    monthly = Budget(name="m", amount_usd=Decimal(1), timezone="America/New_York")
    assert periods(monthly, _local("2026-06-01T00:03"))[0] == (_local("2026-05-01T00:00"), _local("2026-06-01T00:00"))


@pytest.mark.integration
def test_a_crossing_at_2359_is_alerted_once_by_the_first_pass_of_the_next_day(embedded_store) -> None:
    budget = _customer_crossing_at_2359(embedded_store)
    clock = {"now": _local("2026-05-31T23:55")}
    cycle = AlertCycle(embedded_store, AlertingConfig(budgets=(budget,)), pass_deadline_s=10,
                       clock=lambda: clock["now"])

    assert "budgets" not in cycle.run().detector_errors
    assert _stored(embedded_store, budget) == []  # 30 % used at 23:55

    clock["now"] = _local("2026-06-01T00:03")  # the next pass is in the next New York day
    assert "budgets" not in cycle.run().detector_errors
    stored = _stored(embedded_store, budget)
    # the day started at 04:00 UTC (EDT); 51 % crosses only the 50 % threshold
    assert [key for key, _ in stored] == [f"budget:{budget.name}:2026-05-31T04:00:50"]
    assert "51% used: $2.55 spent" in stored[0][1] and "the period closed at 2026-06-01 04:00 UTC" in stored[0][1]

    rollups.maintain(embedded_store, now=datetime.now(timezone.utc), max_periods=100_000, quiet_s=0,
                     busy_every_s=0)  # the next passes read the closed day from the rollups
    for minutes in (5, 60):
        clock["now"] = _local("2026-06-01T00:03") + timedelta(minutes=minutes)
        cycle.run()
        assert _stored(embedded_store, budget) == stored  # already alerted: nothing new


@pytest.mark.integration
def test_a_crossing_alerted_before_the_boundary_is_not_alerted_again_after_it(embedded_store) -> None:
    budget = _customer_crossing_at_2359(embedded_store)
    before = evaluate(embedded_store, [budget], _local("2026-05-31T23:59:50"))
    assert [a.expected for a in before] == [Decimal("2.5")] and "lasts the period" in before[0].message
    assert store_new_alerts(embedded_store, before) == 1
    after = evaluate(embedded_store, [budget], _local("2026-06-01T00:03"))
    assert [a.dedup_key for a in after] == [a.dedup_key for a in before]  # the same crossing, the same key
    assert store_new_alerts(embedded_store, after) == 0


@pytest.mark.integration
def test_a_period_is_evaluated_only_within_the_grace_after_it_closed(embedded_store) -> None:
    budget = _customer_crossing_at_2359(embedded_store)
    closed = _local("2026-06-01T00:00")
    assert len(evaluate(embedded_store, [budget], closed + CLOSED_PERIOD_GRACE - timedelta(minutes=1))) == 1
    assert evaluate(embedded_store, [budget], closed + CLOSED_PERIOD_GRACE) == []
