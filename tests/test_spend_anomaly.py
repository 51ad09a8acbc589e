"""Spend anomalies end to end: a creep over days is a sustained shift, seen by the slow window, not paged."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import numpy as np
import orjson
import pytest

from spendstream.agents.stages import process
from spendstream.batches import SourceRecord
from spendstream.detect import baseline
from spendstream.detect.anomaly import detect_spend_anomalies
from spendstream.pricing import Pricer
from spendstream.sinks.rows import usage_table

NOW = datetime(2023, 9, 20, 14, 0, tzinfo=timezone.utc)  # a year no other test writes to


@pytest.mark.integration
def test_a_creep_over_days_fires_one_warning_from_the_slow_window(embedded_store) -> None:
    tag = f"creep-{uuid.uuid4().hex[:8]}"
    rng = np.random.default_rng(5)
    events = []
    start = NOW - timedelta(days=12)
    for minute in range(0, 12 * 1440, 2):  # one call every 2 minutes for 10 days, then 1.6x for the last two
        at = start + timedelta(minutes=minute)
        for _ in range(rng.poisson(1.6 if at >= NOW - timedelta(days=2) else 1.0)):
            events.append({"event_id": f"{tag}-{len(events)}", "request_id": f"{tag}-r{len(events)}",
                           "ts": (at + timedelta(seconds=int(rng.integers(0, 120)))).isoformat(),
                           "provider": "openai", "model": "gpt-4o", "input_tokens": 40_000 + len(events) % 89,
                           "output_tokens": 0, "customer": tag})
    embedded_store.insert_arrow("usage_events", usage_table(process(
        [SourceRecord("usage", 0, 0, orjson.dumps(events))], Pricer())))
    assert baseline.refresh(embedded_store, NOW)
    mine = lambda at: [a for a in detect_spend_anomalies(embedded_store, at) if a.subject == f"customer={tag}"]  # noqa: E731
    assert mine(NOW) == []  # one pass over the threshold is not yet an incident (a minimum duration)
    (alert,) = mine(NOW + timedelta(minutes=5))
    assert alert.state == "firing" and alert.severity == "warning"  # a slow shift: business hours, not a page
    assert "the last 24 h ran $" in alert.message and "sustained shift" in alert.message
