"""Retry storms end to end: stored events -> baselines -> passes -> one incident -> one message and its resolve."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import orjson
import pytest

from spendstream.agents.stages import process
from spendstream.alerting.delivery import AlertRouting, Notifier, Route, store_new_alerts
from spendstream.alerting.destinations import Destination
from spendstream.batches import SourceRecord
from spendstream.detect import baseline
from spendstream.detect.retry_storm import detect_retry_storms
from spendstream.pricing import Pricer
from spendstream.sinks.rows import usage_table
from tests.test_alert_delivery import Receiver

NOW = datetime(2023, 8, 16, 12, 0, tzinfo=timezone.utc)  # a year no other test writes to


def _store(store, events: list[dict]) -> None:
    store.insert_arrow("usage_events", usage_table(process([SourceRecord("usage", 0, 0, orjson.dumps(events))],
                                                           Pricer())))


@pytest.mark.integration
def test_an_injected_storm_gives_one_incident_one_message_and_a_resolve(embedded_store) -> None:
    feature = f"checkout-{uuid.uuid4().hex[:8]}"
    events, n = [], 0

    def calls(start: datetime, minutes: int, per_minute: int, retry_every: int) -> None:
        nonlocal n
        for m in range(minutes):
            for k in range(per_minute):
                n += 1
                retried = retry_every and n % retry_every == 0
                events.append({"event_id": f"{feature}-{n}", "request_id": f"{feature}-r{n}",
                               "ts": (start + timedelta(minutes=m, seconds=k % 60)).isoformat(),
                               "attempt": 2 if retried else 1, "status": "ok", "provider": "openai",
                               "model": "gpt-4o-mini", "feature": feature, "input_tokens": 1_000 + n % 500,
                               "output_tokens": 20})
                if retried:  # the failed first attempt, a 429
                    events.append({**events[-1], "event_id": f"{feature}-{n}-a1", "attempt": 1,
                                   "status": "rate_limited", "http_status": 429})

    calls(NOW - timedelta(hours=30), 30 * 60 - 5, 2, 50)  # the usual: 2 % retried, for more than a day
    calls(NOW - timedelta(minutes=5), 5, 40, 2)           # the storm: half the requests retried
    calls(NOW + timedelta(minutes=10), 30, 10, 0)         # after the fix
    _store(embedded_store, events)

    def storms(at: datetime) -> list:
        baseline.refresh(embedded_store, at)
        return [a for a in detect_retry_storms(embedded_store, at) if a.subject == f"feature={feature}"]

    (firing,) = storms(NOW)
    assert firing.state == "firing" and firing.severity == "error"
    assert "rate-limited (429)" in firing.message and "(32%, expected " in firing.message
    assert "wasted on failed attempts and repeated calls" in firing.message
    assert store_new_alerts(embedded_store, [firing]) == 1
    assert storms(NOW + timedelta(minutes=5)) == []       # still storming: the same incident, no message
    quiet = [storms(NOW + timedelta(minutes=m)) for m in (25, 30, 35)]
    (resolved,) = [a for batch in quiet for a in batch]
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


@pytest.mark.integration
def test_an_agent_loop_with_new_request_ids_is_caught_and_its_cost_stated(embedded_store) -> None:
    agent = f"agent-{uuid.uuid4().hex[:8]}"
    loop = [{"event_id": f"{agent}-{k}", "request_id": f"{agent}-r{k}",  # a new id every time, no failure at all
             "ts": (NOW - timedelta(minutes=9) + timedelta(seconds=30 * k)).isoformat(), "provider": "openai",
             "model": "gpt-4o", "feature": agent, "customer": f"{agent}-c", "prefix_fingerprint": "f00d",
             "input_tokens": 40_000, "output_tokens": 500} for k in range(16)]
    _store(embedded_store, loop)
    alerts = [a for a in detect_retry_storms(embedded_store, NOW) if agent in a.subject]
    assert sorted(a.subject for a in alerts) == [f"customer={agent}-c", f"feature={agent}"]
    # 16 calls of $0.105 ($0.10 input, $0.005 output): 15 are repeats
    assert all("most repeated request shape 16 requests" in a.message and "$1.57 wasted" in a.message
               for a in alerts)
