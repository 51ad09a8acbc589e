"""A new price per request on a real store: a feature × customer moved to a pricier model, its requests unchanged.

The pair is a small part of its busy customer and feature, and bursty (a daily batch), so
its 10-minute windows at four times the price stay under its usual busiest 10 minutes, and
two hours do not move a day's median: only its price says what changed. Its control has the
same history and twice its requests in the same hours at the usual price: more requests,
not a new price.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from spendstream.detect import baseline
from spendstream.detect.anomaly import detect_spend_anomalies
from tests.test_spend_anomaly import _calls, _store  # $0.25 gpt-4o calls at given times; stored as a worker does


def busy_pair(tag: str, events: list[dict], start: datetime, switched: datetime, *, customer: str, feature: str,
              others: str) -> list[datetime]:
    """Append 10 days from ``start`` of a feature × customer that is a small part of both: the customer's and the
    feature's own busy traffic ($1 o3 calls, ``others``-other and ``others``-search) and the pair's call every 2
    minutes ($0.25 gpt-4o) before ``switched``. Returns the pair's call times, for the caller to send after it."""
    events += _calls(tag, len(events), [start + timedelta(minutes=m) for m in range(10 * 1440)],
                     customer=f"{others}-other", feature=feature, model="o3")
    events += _calls(tag, len(events), [start + timedelta(minutes=m, seconds=30) for m in range(10 * 1440)],
                     customer=customer, feature=f"{others}-search", model="o3")
    calls = [start + timedelta(minutes=m) for m in range(1, 10 * 1440, 2)]
    events += _calls(tag, len(events), [at for at in calls if at < switched], customer=customer, feature=feature)
    return calls


@pytest.mark.integration
def test_a_pair_moved_to_a_pricier_model_fires_on_its_price_and_twice_its_requests_does_not(embedded_store) -> None:
    tag = f"price-{uuid.uuid4().hex[:8]}"
    rng = np.random.default_rng(14)
    now = datetime(2020, 11, 12, 14, 0, tzinfo=timezone.utc)  # a Thursday
    start = now - timedelta(days=10)
    switched = now - timedelta(hours=2)
    events: list[dict] = []
    batch = lambda end: [end - timedelta(minutes=8) + timedelta(seconds=12 * k) for k in range(40)]  # noqa: E731
    for name in ("switch", "busier"):
        customer, feature = f"{tag}-{name}", f"{tag}-{name}-chat"
        calls = busy_pair(tag, events, start, switched, customer=customer, feature=feature, others=f"{tag}-{name}")
        # and once a day a batch of 40 at a random hour (its usual peak: $10)
        for day in range(10):
            hour = int(rng.choice([h for h in range(24) if not 11 <= h <= 14]))
            events += _calls(tag, len(events), batch(start + timedelta(days=day, hours=hour, minutes=30)),
                             customer=customer, feature=feature)
        last = [at for at in calls if at >= switched]
        if name == "switch":  # the same calls, each at four times the price (o3: $1.00 where gpt-4o was $0.25)
            events += _calls(tag, len(events), last, customer=customer, feature=feature, model="o3")
        else:  # twice the calls at the usual price
            events += _calls(tag, len(events), last + [at + timedelta(seconds=60) for at in last],
                             customer=customer, feature=feature)
    _store(embedded_store, events)
    assert baseline.refresh(embedded_store, now)
    fired = [a for at in (now, now + timedelta(minutes=5)) for a in detect_spend_anomalies(embedded_store, at)
             if tag in a.subject and a.state == "firing"]
    assert [(a.kind, a.subject, a.severity) for a in fired] == [
        ("spend_anomaly", f"feature={tag}-switch-chat,customer={tag}-switch", "warning")]
