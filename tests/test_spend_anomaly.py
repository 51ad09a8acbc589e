"""Spend anomalies: the detector on stored events, and its measured quality on injected incidents."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import orjson
import pytest

from spendstream.agents.stages import process
from spendstream.batches import SourceRecord
from spendstream.detect.anomaly import SpendAnomalyDetector, detect_spend_anomalies
from spendstream.pricing import Pricer
from spendstream.sinks import rollups
from spendstream.sinks.rows import usage_table

NOW = datetime(2025, 10, 15, 14, 0, tzinfo=timezone.utc)


def test_detector_fires_against_the_same_time_in_past_days_and_weeks_and_resolves() -> None:
    detector = SpendAnomalyDetector()
    fired = detector.evaluate("team=search", 6.0, [1.0, 1.2, None, None, 0.9, 1.1], None, NOW)
    assert fired is not None and fired.state == "firing" and "usually $1.05" in fired.message
    assert detector.evaluate("team=search", 2.5, [1.0, 1.2, None, None, 0.9, 1.1], None, NOW) is None
    assert detector.evaluate("team=tiny", 0.6, [0.01] * 6, None, NOW) is None  # below the minimum spend
    resolved = detector.evaluate("team=search", 1.1, [1.0, 1.2, None, None, 0.9, 1.1], NOW - timedelta(minutes=20),
                                 NOW)
    assert resolved is not None and resolved.state == "resolved"


@pytest.mark.integration
def test_stored_events_make_one_anomaly_for_the_key_that_spiked(embedded_store) -> None:
    team = f"team-{uuid.uuid4().hex[:8]}"
    events = []
    for day, calls in ((2, 4), (1, 4), (0, 40)):  # the same 10 minutes on three days: 4, 4, then 40 calls
        for i in range(calls):
            events.append({"event_id": f"{team}-{day}-{i}", "provider": "openai", "model": "gpt-4o",
                           "ts": (NOW - timedelta(days=day, minutes=9, seconds=-10 * i)).isoformat(), "team": team,
                           "feature": f"{team}-f", "input_tokens": 100_000, "output_tokens": 0})
    embedded_store.insert_arrow("usage_events", usage_table(process(
        [SourceRecord("usage", 0, 0, orjson.dumps(events))], Pricer())))
    alerts = [a for a in detect_spend_anomalies(embedded_store, NOW) if team in a.subject]
    # $0.25 a call: usually $1.00 in these 10 minutes, today $10.00
    assert sorted(a.subject for a in alerts) == [f"feature={team}-f", f"team={team}"]
    assert all(a.state == "firing" and "$10.00 in the last 10 min, usually $1.00" in a.message for a in alerts)
    rollups.maintain(embedded_store, now=datetime.now(timezone.utc), max_periods=100_000)  # now from the rollups
    assert [a for a in detect_spend_anomalies(embedded_store, NOW) if team in a.subject] == alerts
