"""The hourly baseline refresh beside the rounds: a round does not wait for it, and it runs once an hour."""

from __future__ import annotations

import threading
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from spendstream.alerting.cycle import AlertCycle, AlertingConfig
from spendstream.alerting.refresher import BackgroundRefresh
from spendstream.detect import baseline
from spendstream.sinks.store import StoreError, query_result
from tests.test_spend_anomaly import store_customer_calls

HOUR = datetime(2023, 3, 15, 14, 0, tzinfo=timezone.utc)  # a month no other test writes to


class SlowRefresh:
    """The real refresh, held at its start until released; counts how often it was started."""

    def __init__(self, fail_first: bool = False) -> None:
        self.release, self.entered = threading.Event(), threading.Event()
        self.started, self.fail_first = 0, fail_first

    def __call__(self, store, now, **kwargs):
        self.started += 1
        self.entered.set()
        if self.fail_first and self.started == 1:
            raise StoreError("connection reset while reading usage_hours")
        assert self.release.wait(60)
        return baseline.refresh(store, now, **kwargs)


def _creep(store, tag: str, now: datetime) -> None:
    """A customer calling every 2 minutes for ten days, then 1.6x for two: a sustained shift."""
    store_customer_calls(store, tag, now, lambda at: 1.6 if at >= now - timedelta(days=2) else 1.0, seed=5)


def _baseline_rows(store, hour: datetime) -> int:
    return query_result(store, "SELECT count() FROM detector_baselines FINAL WHERE for_hour = {h:DateTime('UTC')}",
                        {"h": f"{hour:%Y-%m-%d %H:%M:%S}"}).scalar()


@pytest.mark.integration
def test_a_round_during_a_slow_refresh_raises_its_alerts_from_last_hours_baselines(embedded_store) -> None:
    tag = f"beside-{uuid.uuid4().hex[:8]}"
    _creep(embedded_store, tag, HOUR)
    assert baseline.refresh(embedded_store, HOUR - timedelta(hours=1))  # the previous hour's, stored
    slow = SlowRefresh()
    clock = [HOUR + timedelta(minutes=1)]
    cycle = AlertCycle(embedded_store, AlertingConfig(), pass_deadline_s=10, clock=lambda: clock[0],
                       refresher=BackgroundRefresh(embedded_store, refresh=slow))
    try:
        first = cycle.run()  # starts the refresh of 14:00, which stays held
        assert slow.entered.wait(30)
        clock[0] += timedelta(minutes=5)
        second = cycle.run()  # a minimum duration: the second pass over the threshold fires
        assert cycle.refresher is not None and cycle.refresher.running()
        assert _baseline_rows(embedded_store, HOUR) == 0  # both rounds ran on 13:00's baselines
    finally:
        slow.release.set()
    assert first.detector_errors == {} and second.detector_errors == {}
    fired = query_result(embedded_store, "SELECT kind, state FROM alerts WHERE subject = {s:String}",
                         {"s": f"customer={tag}"}).rows
    assert fired == [["spend_anomaly", "firing"]] and second.raised >= 1
    assert cycle.refresher.wait(120)
    assert _baseline_rows(embedded_store, HOUR) > 0
    clock[0] += timedelta(minutes=5)
    assert cycle.run().detector_errors == {}
    assert slow.started == 1  # three rounds, one refresh: not started while running, nor once done


@pytest.mark.integration
def test_a_failed_background_refresh_is_the_next_rounds_baselines_error_and_is_tried_again(embedded_store) -> None:
    at = HOUR + timedelta(days=3, minutes=2)
    slow = SlowRefresh(fail_first=True)
    slow.release.set()
    cycle = AlertCycle(embedded_store, AlertingConfig(), pass_deadline_s=10, clock=lambda: at,
                       refresher=BackgroundRefresh(embedded_store, refresh=slow))
    assert cycle.run().detector_errors == {}
    assert cycle.refresher is not None and cycle.refresher.wait(60)
    errors = cycle.run().detector_errors  # reports the failure and starts the refresh again
    assert set(errors) == {"baselines"} and "connection reset" in errors["baselines"]
    assert cycle.refresher.wait(120)
    assert cycle.run().detector_errors == {}
    assert slow.started == 2 and _baseline_rows(embedded_store, baseline.floor_hour(at)) > 0
