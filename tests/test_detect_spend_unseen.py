"""Spend anomalies on what a subject's own history holds but not at this hour of the week, on a real store.

A feature × customer pair has few requests an hour, so the hour-of-week peak it learns from two
weeks is mostly luck: its ordinary bursts, landing at random hours, must be held against its
usual busiest 10 minutes of a day. A monthly job seen once (last month) is expected at its size.
Each case has its control: the same key ten or five times over still fires.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from spendstream.detect import baseline
from spendstream.detect.anomaly import detect_spend_anomalies
from tests.test_spend_anomaly import _calls, _store  # $0.25 gpt-4o calls at given times; stored as a worker does


@pytest.mark.integration
def test_a_pairs_ordinary_burst_at_a_new_hour_is_not_an_anomaly_five_times_it_is(embedded_store) -> None:
    tag = f"unseen-{uuid.uuid4().hex[:8]}"
    rng = np.random.default_rng(18)
    now = datetime(2021, 6, 17, 14, 0, tzinfo=timezone.utc)  # a Thursday, in a year no other test writes to
    start = now - timedelta(days=10)
    events: list[dict] = []
    burst = lambda end, n: [end - timedelta(minutes=8) + timedelta(seconds=480 * k / n) for k in range(n)]  # noqa: E731
    for name, today in (("calm", 12), ("spike", 60)):  # today: its usual burst, or five times it
        customer, feature, other = f"{tag}-{name}", f"{tag}-{name}-chat", f"{tag}-{name}-other"
        # the feature's and the customer's own busy traffic, so the burst is the pair's news alone
        events += _calls(tag, len(events), [start + timedelta(minutes=m) for m in range(0, 10 * 1440)],
                         customer=other, feature=feature)
        events += _calls(tag, len(events), [start + timedelta(minutes=m, seconds=30) for m in range(0, 10 * 1440)],
                         customer=customer, feature=f"{tag}-{name}-search")
        # the pair: a call every 20 minutes, and once a day a burst of 12 at a random hour (never 12:00-16:00)
        events += _calls(tag, len(events), [start + timedelta(minutes=m) for m in range(7, 10 * 1440, 20)],
                         customer=customer, feature=feature)
        for day in range(10):
            hour = int(rng.choice([h for h in range(24) if not 12 <= h <= 16]))
            end = start + timedelta(days=day, hours=hour, minutes=int(rng.integers(10, 60)))
            events += _calls(tag, len(events), burst(end, 12), customer=customer, feature=feature)
        events += _calls(tag, len(events), burst(now, today), customer=customer, feature=feature)
    _store(embedded_store, events)
    baseline.refresh(embedded_store, now)
    fired = [a for at in (now, now + timedelta(minutes=5)) for a in detect_spend_anomalies(embedded_store, at)
             if tag in a.subject and a.state == "firing" and "customer=" in a.subject and "feature=" in a.subject]
    assert [a.subject for a in fired] == [f"feature={tag}-spike-chat,customer={tag}-spike"]


@pytest.mark.integration
def test_a_monthly_job_seen_once_is_expected_at_its_size_and_ten_times_it_fires(embedded_store) -> None:
    tag = f"monthly-{uuid.uuid4().hex[:8]}"
    last, this = datetime(2021, 9, 30, 2, tzinfo=timezone.utc), datetime(2021, 10, 31, 2, tzinfo=timezone.utc)
    job = lambda at, per: [at + timedelta(seconds=45 * k / per) for k in range(int(120 * per))]  # noqa: E731
    events: list[dict] = []
    for name, size in (("job", 1), ("grown", 10)):
        customer = f"{tag}-{name}"
        # a key quiet but for the job: a call an hour for six weeks (warm: not a new spender)
        hourly = [last - timedelta(days=10) + timedelta(hours=h, minutes=17) for h in range(42 * 24)]
        events += _calls(tag, len(events), [at for at in hourly if at < this + timedelta(hours=2)], customer=customer)
        # $30 over 90 minutes last month-end (outside the four learned weeks); this month-end, `size` times that
        events += _calls(tag, len(events), job(last, 1) + job(this, size), customer=customer)
    _store(embedded_store, events)

    def run(at: datetime) -> list:
        baseline.refresh(embedded_store, at)
        return [a for a in detect_spend_anomalies(embedded_store, at) if tag in a.subject and a.state == "firing"]

    fired = [a for m in (10, 30, 65, 70) for a in run(this + timedelta(minutes=m))]
    assert [(a.kind, a.subject) for a in fired] == [("spend_anomaly", f"customer={tag}-grown")]


@pytest.mark.integration
def test_a_pairs_night_burst_near_its_daily_peak_fires_and_half_of_it_does_not(embedded_store) -> None:
    """A pair's usual busiest 10 minutes of a day (here its 14:00 batch of 40 calls) is its business peak: at
    03:00 a window at 0.8 of it is news (night abuse, a weekend spike), half of it is still its usual."""
    tag = f"night-{uuid.uuid4().hex[:8]}"
    now = datetime(2021, 4, 15, 3, 0, tzinfo=timezone.utc)  # a Thursday, weeks before this file's other tests
    start = now - timedelta(days=10)
    events: list[dict] = []
    burst = lambda end, n: [end - timedelta(minutes=8) + timedelta(seconds=480 * k / n) for k in range(n)]  # noqa: E731
    for name, per_minute in (("half", 2.5), ("most", 4)):
        customer, feature = f"{tag}-{name}", f"{tag}-{name}-chat"
        # the feature's and the customer's own busy traffic, so the burst is the pair's news alone
        events += _calls(tag, len(events), [start + timedelta(minutes=m) for m in range(0, 10 * 1440)],
                         customer=f"{tag}-{name}-other", feature=feature)
        events += _calls(tag, len(events), [start + timedelta(minutes=m, seconds=30) for m in range(0, 10 * 1440)],
                         customer=customer, feature=f"{tag}-{name}-search")
        # the pair: a call every 20 minutes, and every day at 14:00 a batch of 40 calls ($10 in 8 minutes)
        events += _calls(tag, len(events), [start + timedelta(minutes=m) for m in range(7, 10 * 1440, 20)],
                         customer=customer, feature=feature)
        for day in range(10):
            events += _calls(tag, len(events), burst(start + timedelta(days=day, hours=11, minutes=8), 40),
                             customer=customer, feature=feature)
        # tonight, from 02:50 on, a steady flow at half (or 0.8) of that batch's rate
        tonight = [now - timedelta(minutes=10) + timedelta(seconds=60 * k / per_minute)
                   for k in range(int(15 * per_minute))]
        events += _calls(tag, len(events), tonight, customer=customer, feature=feature)
    _store(embedded_store, events)
    baseline.refresh(embedded_store, now)
    fired = [a for at in (now, now + timedelta(minutes=5)) for a in detect_spend_anomalies(embedded_store, at)
             if tag in a.subject and a.state == "firing" and "customer=" in a.subject and "feature=" in a.subject]
    assert [a.subject for a in fired] == [f"feature={tag}-most-chat,customer={tag}-most"]


@pytest.mark.integration
def test_a_pairs_weekend_is_held_against_a_weekend_days_busiest_10_minutes_not_a_weekdays(embedded_store) -> None:
    """A pair that runs at a quarter of its weekday level on weekends: at 03:00 on a Saturday, a window at 1.5x
    twice its usual weekend busiest 10 minutes is news (a weekend spike), though a weekday's batch is bigger;
    a window at 0.6 of that weekend peak is still its usual."""
    tag = f"weekend-{uuid.uuid4().hex[:8]}"
    now = datetime(2022, 3, 19, 3, 0, tzinfo=timezone.utc)  # a Saturday, in a year no other test writes to
    start = now - timedelta(days=24)
    events: list[dict] = []
    burst = lambda end, n: [end - timedelta(minutes=8) + timedelta(seconds=480 * k / n) for k in range(n)]  # noqa: E731
    for name, tonight in (("half", 6), ("twice", 20)):
        keys = {"customer": f"{tag}-{name}", "feature": f"{tag}-{name}-chat"}
        for day in range(24):
            midnight = start + timedelta(days=day)
            weekend = midnight.weekday() >= 5
            # weekdays a call every 10 minutes and a batch of 40 at 14:00; weekends a quarter of both
            every, batch = (40, 10) if weekend else (10, 40)
            events += _calls(tag, len(events), [midnight + timedelta(minutes=m) for m in range(3, 1440, every)],
                             **keys)
            events += _calls(tag, len(events), burst(midnight + timedelta(hours=14, minutes=8), batch), **keys)
        events += _calls(tag, len(events), burst(now, tonight), **keys)
    _store(embedded_store, events)
    baseline.refresh(embedded_store, now)
    fired = [a for at in (now, now + timedelta(minutes=5)) for a in detect_spend_anomalies(embedded_store, at)
             if tag in a.subject and a.state == "firing" and "customer=" in a.subject and "feature=" in a.subject]
    assert [a.subject for a in fired] == [f"feature={tag}-twice-chat,customer={tag}-twice"]


@pytest.mark.integration
def test_a_quiet_keys_window_of_uneven_requests_is_held_to_its_skewed_tail_and_twice_its_count_fires(
        embedded_store) -> None:
    """Two calls a minute of uneven sizes (a request's cost varies as much as its mean): a 10-minute window of
    29 calls at 1.8 times the usual size is the long tail of such a key (the harness's lunch-peak control fired
    on one); 45 such calls are an anomaly."""
    tag = f"skew-{uuid.uuid4().hex[:8]}"
    rng = np.random.default_rng(42)
    now = datetime(2021, 2, 17, 22, 30, tzinfo=timezone.utc)  # a Wednesday, weeks before this file's other tests
    start = now - timedelta(days=10)
    events: list[dict] = []
    for name, tonight in (("tail", 29), ("grown", 45)):
        customer = f"{tag}-{name}"
        times = [start + timedelta(minutes=m, seconds=s) for m in range(10 * 1440 - 10) for s in (10, 40)]
        tokens = rng.gamma(1 / 1.3, 100_000 * 1.3, size=len(times)).astype(int) + 1
        burst = [now - timedelta(minutes=10) + timedelta(seconds=600 * k / tonight) for k in range(tonight)]
        for at, n in zip(times + burst, list(tokens) + [180_000] * tonight, strict=True):
            events += [{"event_id": f"{tag}-{len(events)}", "request_id": f"{tag}-r{len(events)}",
                        "ts": at.isoformat(timespec="milliseconds"), "provider": "openai", "model": "gpt-4o",
                        "input_tokens": int(n), "output_tokens": 0, "customer": customer,
                        "feature": f"{customer}-chat"}]
    _store(embedded_store, events)
    baseline.refresh(embedded_store, now)
    fired = {a.subject for at in (now, now + timedelta(minutes=5)) for a in detect_spend_anomalies(embedded_store, at)
             if tag in a.subject and a.state == "firing"}
    assert fired == {f"customer={tag}-grown", f"feature={tag}-grown-chat",
                     f"feature={tag}-grown-chat,customer={tag}-grown"}


@pytest.mark.integration
def test_a_spike_on_a_bursty_key_fires_on_the_pass_whose_last_five_minutes_are_far_over_it(embedded_store) -> None:
    """Two calls a minute, and every hour a three-minute burst at ten a minute: the key's usual busiest
    10 minutes ($11) hold its window. Tonight $9.50 more: in the last five minutes it fires on this pass;
    spread over the ten minutes the window is as hot, but waits for the next pass to confirm it."""
    tag = f"late-{uuid.uuid4().hex[:8]}"
    now = datetime(2021, 3, 18, 14, 0, tzinfo=timezone.utc)  # a Thursday, weeks before this file's other tests
    start = now - timedelta(days=10)
    events: list[dict] = []
    for name, minutes in (("late", 5), ("spread", 10)):
        customer = f"{tag}-{name}"
        times = [start + timedelta(minutes=m, seconds=s) for m in range(10 * 1440) for s in (10, 40)]
        times += [start + timedelta(minutes=m, seconds=s) for m in range(10 * 1440) if m % 60 in (20, 21, 22)
                  for s in (2, 9, 17, 24, 32, 47, 54, 58)]
        times += [now - timedelta(minutes=minutes) + timedelta(seconds=60 * minutes * k / 38) for k in range(38)]
        events += _calls(tag, len(events), times, customer=customer, feature=f"{customer}-chat")
    _store(embedded_store, events)
    baseline.refresh(embedded_store, now)
    fired = {a.subject for a in detect_spend_anomalies(embedded_store, now) if tag in a.subject
             and a.state == "firing"}
    assert fired == {f"customer={tag}-late", f"feature={tag}-late-chat", f"feature={tag}-late-chat,customer={tag}-late"}


@pytest.mark.integration
def test_a_quiet_keys_window_at_twice_its_line_fires_at_once_with_the_minimum_excess(embedded_store) -> None:
    """Cent calls (4,000 tokens of gpt-4o): a quiet key of one a minute and a busy one of ten. Tonight each gets
    150 more in 10 minutes, $1.50 over its usual: the quiet key's window is six times its line and fires on
    this pass; the busy key's, 1.3-1.7 times its line, is hot and waits for the next pass (under $2 over it is
    not "far over")."""
    tag = f"far-{uuid.uuid4().hex[:8]}"
    now = datetime(2021, 4, 1, 3, 0, tzinfo=timezone.utc)  # a Thursday night, weeks before this file's other tests
    start = now - timedelta(days=10)
    events: list[dict] = []
    for name, per_minute in (("quiet", 1), ("busy", 10)):
        customer = f"{tag}-{name}"
        times = [start + timedelta(minutes=m, seconds=3 + 55 * k / per_minute) for m in range(10 * 1440)
                 for k in range(per_minute)]
        times += [now - timedelta(minutes=10) + timedelta(seconds=2 + 596 * k / 150) for k in range(150)]
        events += [{"event_id": f"{tag}-{len(events) + k}", "request_id": f"{tag}-r{len(events) + k}",
                    "ts": at.isoformat(timespec="milliseconds"), "provider": "openai", "model": "gpt-4o",
                    "input_tokens": 4_000, "output_tokens": 0, "customer": customer, "feature": f"{customer}-chat"}
                   for k, at in enumerate(times)]
    _store(embedded_store, events)
    baseline.refresh(embedded_store, now)
    fired = {a.subject for a in detect_spend_anomalies(embedded_store, now) if tag in a.subject
             and a.state == "firing"}
    assert fired == {f"customer={tag}-quiet", f"feature={tag}-quiet-chat",
                     f"feature={tag}-quiet-chat,customer={tag}-quiet"}
