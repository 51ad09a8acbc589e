"""Retry storms: the pure detector, and end to end from stored events to a delivered message and its resolve."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import orjson
import pytest

from spendstream.agents.stages import process
from spendstream.alerting.delivery import AlertRouting, Notifier, Route, store_new_alerts
from spendstream.alerting.destinations import Destination
from spendstream.batches import SourceRecord
from spendstream.detect.retry_storm import FeatureWindow, RetryStormDetector, detect_retry_storms
from spendstream.pricing import Pricer
from spendstream.sinks import rollups
from spendstream.sinks.rows import usage_table
from tests.test_alert_delivery import Receiver

NOW = datetime(2025, 8, 20, 12, 0, tzinfo=timezone.utc)


def _window(attempts: int, retries: int, max_attempt: int = 2) -> FeatureWindow:
    return FeatureWindow("checkout", attempts, retries, retries // 2, retries // 4, retries // 4, 0, Decimal("1.25"),
                         max_attempt)


def test_detector_fires_on_a_jump_over_the_features_own_baseline_and_resolves() -> None:
    detector = RetryStormDetector()
    fired = detector.evaluate(_window(200, 80), baseline_ratio=0.02, firing_since=None, now=NOW)
    assert fired is not None and fired.state == "firing" and fired.subject == "feature=checkout"
    assert "80 retries in 200 attempts (40%, usually 2%)" in fired.message and "$1.25 spent" in fired.message
    assert "40 rate-limited (429), 20 server errors (5xx), 20 timeouts" in fired.message
    assert detector.evaluate(_window(200, 80), 0.02, firing_since=NOW, now=NOW) is None  # already firing
    resolved = detector.evaluate(_window(200, 4), 0.02, firing_since=NOW - timedelta(minutes=5), now=NOW)
    assert resolved is not None and resolved.state == "resolved" and resolved.dedup_key == (
        "retry_storm:checkout:" + (NOW - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M"))


def test_detector_stays_quiet_on_small_numbers_and_on_a_feature_that_always_retries() -> None:
    detector = RetryStormDetector()
    assert detector.evaluate(_window(20, 10), 0.02, None, NOW) is None          # 10 retries: too few to page
    assert detector.evaluate(_window(1000, 300), 0.25, None, NOW) is None       # 30 % is this feature's normal
    assert detector.evaluate(_window(10, 1, max_attempt=7), 0.0, None, NOW) is not None  # one request hammered


@pytest.mark.integration
def test_an_injected_storm_gives_one_alert_one_message_and_a_resolve(embedded_store) -> None:
    feature = f"checkout-{uuid.uuid4().hex[:8]}"
    events, n = [], 0

    def calls(start: datetime, minutes: int, per_minute: int, retry_every: int) -> None:
        nonlocal n
        for m in range(minutes):
            for k in range(per_minute):
                n += 1
                retried = retry_every and k % retry_every == 0
                events.append({"event_id": f"{feature}-{n}", "request_id": f"{feature}-r{n}",
                               "ts": (start + timedelta(minutes=m, seconds=k % 60)).isoformat(),
                               "attempt": 2 if retried else 1, "status": "ok", "provider": "openai",
                               "model": "gpt-4o-mini", "feature": feature, "input_tokens": 1_000,
                               "output_tokens": 20})
                if retried:  # the failed first attempt, a 429
                    events.append({**events[-1], "event_id": f"{feature}-{n}-a1", "attempt": 1,
                                   "status": "rate_limited", "http_status": 429})

    calls(NOW - timedelta(hours=6), 300, 10, 50)         # the usual day: 2 % retried
    calls(NOW - timedelta(minutes=5), 5, 40, 2)          # the storm: half the requests retried
    calls(NOW + timedelta(minutes=10), 5, 40, 0)         # after the fix
    embedded_store.insert_arrow("usage_events", usage_table(process(
        [SourceRecord("usage", 0, 0, orjson.dumps(events))], Pricer())))

    def storms(at: datetime) -> list:
        return [a for a in detect_retry_storms(embedded_store, at) if a.subject == f"feature={feature}"]

    (firing,) = storms(NOW)
    assert firing.state == "firing" and "rate-limited (429)" in firing.message
    rollups.maintain(embedded_store, now=datetime.now(timezone.utc), max_periods=100_000)  # the baseline from rollups
    assert storms(NOW) == [firing]
    assert store_new_alerts(embedded_store, [firing]) == 1
    assert storms(NOW + timedelta(minutes=1)) == []      # still storming: no second alert
    (resolved,) = storms(NOW + timedelta(minutes=15))
    assert resolved.state == "resolved" and resolved.dedup_key == firing.dedup_key
    assert store_new_alerts(embedded_store, [resolved]) == 1

    receiver = Receiver()
    try:
        routing = AlertRouting(destinations=[Destination(name=f"slack-{feature}", kind="slack",
                                                         url=receiver.url("/hook"))],
                               routes=[Route(destination=f"slack-{feature}", kinds=["retry_storm"],
                                             subjects=[feature])])
        assert Notifier(embedded_store, routing).run_pass().delivered == 2
    finally:
        receiver.close()
    texts = [b["text"] for b in receiver.bodies()]
    assert len(texts) == 2 and "retry storm firing" in texts[0] and "retry storm resolved" in texts[1]
