"""A spike on one model of a busy feature × customer pair, on a real store: the feature × customer × model sees it.

Each pair is served by two models: most of its dollars are o3 calls ($1 each, two a minute), and a
small leaf of gpt-4o calls ($0.25, one in ten minutes) that runs a batch of 12 calls at 13:52 every day.
The customer and the feature have busy traffic of their own. A spike of $10 on the small leaf is half
the pair's usual 10 minutes, under the pair's line (twice its expected dollars), and less still of
the feature and the customer: only the leaf sees it. The leaf's own batch at its usual time is its
usual busiest 10 minutes, and does not fire.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest

from spendstream.detect import baseline
from spendstream.detect.anomaly import detect_spend_anomalies
from tests.test_spend_anomaly import _calls, _store  # $0.25 gpt-4o calls at given times; stored as a worker does

NOW = datetime(2024, 9, 12, 14, 0, tzinfo=timezone.utc)  # a Thursday, in months no other test writes to (the
# baselines' refresh records the hours it learned as done for every key: in 2021-03 it put days of another file's
# history out of its reach)
LATER = NOW + timedelta(days=28)  # a Thursday: a refresh of its own (one per hour and store)
DAYS = 10


def _two_model_pair(tag: str, name: str, events: list[dict], *, today: int, now: datetime = NOW) -> None:
    """``events`` += a busy customer and feature, their pair on o3 and its small gpt-4o leaf over the ``DAYS`` days
    before ``now``; today's gpt-4o batch is ``today`` calls in the last 8 minutes (12: the usual batch)."""
    start = now - timedelta(days=DAYS)
    customer, feature = f"{tag}-{name}", f"{tag}-{name}-chat"
    minutes = range(DAYS * 1440)
    # the customer's and the feature's own traffic ($1 a minute each), so the pair is a part of both
    events += _calls(tag, len(events), [start + timedelta(minutes=m, seconds=20) for m in minutes],
                     customer=f"{tag}-{name}-other", feature=feature, model="o3")
    events += _calls(tag, len(events), [start + timedelta(minutes=m, seconds=40) for m in minutes],
                     customer=customer, feature=f"{tag}-{name}-search", model="o3")
    # the pair's o3 leaf: two calls a minute ($20 in ten minutes)
    events += _calls(tag, len(events), [start + timedelta(minutes=m, seconds=s) for m in minutes for s in (5, 35)],
                     customer=customer, feature=feature, model="o3")
    # its gpt-4o leaf: a call in ten minutes, and at 13:52 every day a batch of 12 (today: ``today``)
    events += _calls(tag, len(events), [start + timedelta(minutes=m, seconds=50) for m in range(0, DAYS * 1440, 10)],
                     customer=customer, feature=feature)
    for day in range(DAYS):
        at, n = start + timedelta(days=day + 1, minutes=-8), today if day == DAYS - 1 else 12
        events += _calls(tag, len(events), [at + timedelta(seconds=470 * k / n) for k in range(n)],
                         customer=customer, feature=feature)


def _fired(store, tag: str, now: datetime = NOW) -> list:
    assert baseline.refresh(store, now)
    return [a for at in (now, now + timedelta(minutes=5)) for a in detect_spend_anomalies(store, at)
            if tag in a.subject and a.state == "firing"]


@pytest.mark.integration
def test_a_spike_on_a_small_model_of_a_busy_pair_fires_on_that_model_alone_and_its_usual_batch_does_not(
        embedded_store) -> None:
    tag = f"leaf-{uuid.uuid4().hex[:8]}"
    events: list[dict] = []
    _two_model_pair(tag, "spike", events, today=40)  # $10 in 8 minutes where its batch is $3
    _two_model_pair(tag, "usual", events, today=12)
    _store(embedded_store, events)
    fired = _fired(embedded_store, tag)
    assert [(a.subject, a.correlated_with) for a in fired] == [
        (f"feature={tag}-spike-chat,customer={tag}-spike,model=gpt-4o", None)]
    assert fired[0].message.startswith("$10.")  # its window: the spike and a call; nothing attached to it


@pytest.mark.integration
def test_a_spike_that_lifts_the_pair_its_feature_and_customer_is_one_incident_named_by_the_model(
        embedded_store) -> None:
    tag = f"leaf1-{uuid.uuid4().hex[:8]}"
    events: list[dict] = []
    _two_model_pair(tag, "big", events, today=240, now=LATER)  # $60 in 8 minutes: the pair, feature and customer
    _store(embedded_store, events)                              # rise too
    fired = _fired(embedded_store, tag, LATER)
    leaf = f"feature={tag}-big-chat,customer={tag}-big,model=gpt-4o"
    delivered = [a for a in fired if a.correlated_with is None]
    assert [a.subject for a in delivered] == [leaf]
    attached = {a.subject for a in fired if a.correlated_with == delivered[0].dedup_key}
    assert f"feature={tag}-big-chat,customer={tag}-big" in attached  # the pair: the same incident, not a page
    assert attached | {leaf} == {a.subject for a in fired}


@pytest.mark.integration
def test_a_spike_on_a_model_of_a_pair_that_never_runs_two_models_in_one_hour_fires_on_that_model_alone(
        embedded_store) -> None:
    """No hour of the pair holds both its models, so the store keeps no row of either leaf (each hour's row is the
    pair's, naming its model): the leaves are learned from those, and the small model's spike fires as before
    (2022-11 and 2022-12: no other test writes there)."""
    tag = f"leafh-{uuid.uuid4().hex[:8]}"
    now = datetime(2022, 12, 15, 14, 0, tzinfo=timezone.utc)  # a Thursday
    start = now - timedelta(days=DAYS)
    customer, feature = f"{tag}-c", f"{tag}-chat"
    minutes = range(DAYS * 1440)
    events = _calls(tag, 0, [start + timedelta(minutes=m, seconds=20) for m in minutes],
                    customer=f"{tag}-other", feature=feature, model="o3")
    events += _calls(tag, len(events), [start + timedelta(minutes=m, seconds=40) for m in minutes],
                     customer=customer, feature=f"{tag}-search", model="o3")
    # the pair: o3 in even hours (two calls a minute), gpt-4o in odd ones (a call in ten minutes, and a batch of 12
    # at 13:52 every day; today 40, $10)
    events += _calls(tag, len(events), [start + timedelta(minutes=m, seconds=s) for m in minutes for s in (5, 35)
                                        if m // 60 % 2 == 0], customer=customer, feature=feature, model="o3")
    events += _calls(tag, len(events), [start + timedelta(minutes=m, seconds=50) for m in range(0, DAYS * 1440, 10)
                                        if m // 60 % 2 == 1], customer=customer, feature=feature)
    for day in range(DAYS):
        at, n = start + timedelta(days=day + 1, minutes=-8), 40 if day == DAYS - 1 else 12
        events += _calls(tag, len(events), [at + timedelta(seconds=470 * k / n) for k in range(n)],
                         customer=customer, feature=feature)
    _store(embedded_store, events)
    fired = _fired(embedded_store, tag, now)
    assert [(a.subject, a.correlated_with) for a in fired] == [
        (f"feature={feature},customer={customer},model=gpt-4o", None)]
    assert not embedded_store.query(  # learned from the pair's rows: the store holds no leaf hour of the pair
        "SELECT count() FROM detector_subject_hours WHERE startsWith(subject, {p:String})",
        {"p": f"feature={feature},customer={customer},model="}).scalar()
