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
    # one call every 2 minutes for 10 days, then 1.6x for the last two
    store_customer_calls(embedded_store, tag, NOW, lambda at: 1.6 if at >= NOW - timedelta(days=2) else 1.0, seed=5)
    assert baseline.refresh(embedded_store, NOW)
    mine = lambda at: [a for a in detect_spend_anomalies(embedded_store, at) if a.subject == f"customer={tag}"]  # noqa: E731
    assert mine(NOW) == []  # one pass over the threshold is not yet an incident (a minimum duration)
    (alert,) = mine(NOW + timedelta(minutes=5))
    assert alert.state == "firing" and alert.severity == "warning"  # a slow shift: business hours, not a page
    assert "the last 24 h ran $" in alert.message and "sustained shift" in alert.message


def _calls(tag: str, first: int, times: list[datetime], **keys) -> list[dict]:
    """gpt-4o calls of about 100k input tokens ($0.25 each), at ``times``."""
    return [{"event_id": f"{tag}-{first + k}", "request_id": f"{tag}-r{first + k}",
             "ts": at.isoformat(timespec="milliseconds"), "provider": "openai", "model": "gpt-4o",
             "input_tokens": 100_000 + (first + k) % 97, "output_tokens": 0, **keys} for k, at in enumerate(times)]


def _store(store, events: list[dict]) -> None:
    store.insert_arrow("usage_events", usage_table(process([SourceRecord("usage", 0, 0, orjson.dumps(events))],
                                                           Pricer())))


def store_customer_calls(store, tag: str, now: datetime, rate, *, seed: int) -> None:
    """A customer's $0.10 gpt-4o calls over the 12 days before ``now``: Poisson(``rate(at)``) every 2 minutes."""
    rng = np.random.default_rng(seed)
    events = []
    start = now - timedelta(days=12)
    for minute in range(0, 12 * 1440, 2):
        at = start + timedelta(minutes=minute)
        for _ in range(rng.poisson(rate(at))):
            events.append({"event_id": f"{tag}-{len(events)}", "request_id": f"{tag}-r{len(events)}",
                           "ts": (at + timedelta(seconds=int(rng.integers(0, 120)))).isoformat(),
                           "provider": "openai", "model": "gpt-4o", "input_tokens": 40_000 + len(events) % 89,
                           "output_tokens": 0, "customer": tag})
    _store(store, events)


@pytest.mark.integration
def test_a_small_spike_on_a_busy_customer_and_feature_fires_on_their_pair_alone(embedded_store) -> None:
    tag = f"pair-{uuid.uuid4().hex[:8]}"
    rng = np.random.default_rng(7)
    now = datetime(2023, 10, 12, 14, 0, tzinfo=timezone.utc)  # a Thursday
    start = now - timedelta(days=9)
    busy, chat, other = f"{tag}-busy", f"{tag}-chat", f"{tag}-other"
    jitter = lambda minute, spread: start + timedelta(minutes=minute, seconds=int(rng.integers(0, spread)))  # noqa: E731
    events = []
    for keys, every in (({"customer": busy, "feature": f"{tag}-search"}, 1),   # the customer's busy feature
                        ({"customer": other, "feature": chat}, 1),             # the feature's busy customer
                        ({"customer": busy, "feature": chat}, 10)):            # the pair: a call in ten minutes
        events += _calls(tag, len(events), [jitter(m, 60 * every) for m in range(0, 9 * 1440, every)], **keys)
    # the spike: 12 calls ($3) in the last 8 minutes, a tenth of the customer's and of the feature's 10 minutes
    events += _calls(tag, len(events), [now - timedelta(minutes=8, seconds=-40 * k) for k in range(12)],
                     customer=busy, feature=chat)
    _store(embedded_store, events)
    baseline.refresh(embedded_store, now)
    fired = [a for at in (now, now + timedelta(minutes=5)) for a in detect_spend_anomalies(embedded_store, at)
             if tag in a.subject and a.state == "firing"]
    assert [a.subject for a in fired] == [f"feature={chat},customer={busy}"]
    assert fired[0].kind == "spend_anomaly"


@pytest.mark.integration
def test_a_month_end_job_is_new_once_then_expected_and_ten_times_its_size_still_fires(embedded_store) -> None:
    tag = f"eom-{uuid.uuid4().hex[:8]}"
    ends = [datetime(2022, 8, 31, 2, tzinfo=timezone.utc), datetime(2022, 9, 30, 2, tzinfo=timezone.utc),
            datetime(2022, 10, 31, 2, tzinfo=timezone.utc)]   # the last day of three months, 02:00
    job = lambda at, per: [at + timedelta(seconds=45 * k / per) for k in range(int(120 * per))]  # noqa: E731
    events: list[dict] = []
    for name, months, last in (("job", ends, 1), ("young", ends[1:], 1), ("grown", ends, 10)):
        for at in months:  # $30 over 90 minutes each month; "grown" runs ten times that in the third month
            events += _calls(tag, len(events), job(at, last if at == ends[-1] else 1), customer=f"{tag}-{name}")
    _store(embedded_store, events)

    def run(at: datetime) -> list:
        baseline.refresh(embedded_store, at)
        return [a for a in detect_spend_anomalies(embedded_store, at) if tag in a.subject]

    third = ends[-1]
    fired = [a for m in (10, 30, 65, 70, 125, 605, 23 * 60 + 5) for a in run(third + timedelta(minutes=m))]
    # the job on its third month: expected (two earlier months hold it); seen once before: still new
    assert not [a for a in fired if a.subject == f"customer={tag}-job"]
    assert [(a.kind, a.subject) for a in fired if a.subject == f"customer={tag}-young"] == [
        ("new_spender", f"customer={tag}-young")]
    grown = [a for a in fired if a.subject == f"customer={tag}-grown" and a.state == "firing"]
    assert [a.kind for a in grown] == ["spend_anomaly"]


def test_a_day_falls_at_the_same_day_of_the_month_and_at_the_same_distance_from_its_end() -> None:
    from datetime import date

    from spendstream.detect.schedules import places

    assert places(date(2022, 10, 31), 1) == {date(2022, 9, 30)}            # the last day stays the last
    assert places(date(2022, 10, 31), 2) == {date(2022, 8, 31)}
    assert places(date(2022, 3, 30), 1) == {date(2022, 2, 27)}             # February has no 30th
    assert places(date(2022, 11, 15), 1) == {date(2022, 10, 15), date(2022, 10, 16)}
    assert places(date(2023, 1, 1), 1) == {date(2022, 12, 1)}              # across the year



@pytest.mark.integration
def test_a_second_day_of_growth_under_the_day_floor_fires_from_the_refresh(embedded_store) -> None:
    """The refresh hands the slow window the day before the last: a $72-a-day customer 12 % over its usual
    yesterday and 25 % over today (about $18, under the $20 one day's shift needs) is growing, not wobbling."""
    tag = f"creep2-{uuid.uuid4().hex[:8]}"
    now = datetime(2023, 11, 15, 14, 0, tzinfo=timezone.utc)  # an hour no other test learns baselines for
    # one $0.10 call every 2 minutes for 10 days, then 1.12x, then 1.25x
    store_customer_calls(embedded_store, tag, now, lambda at: 1.25 if at >= now - timedelta(days=1)
                         else 1.12 if at >= now - timedelta(days=2) else 1.0, seed=11)
    baseline.refresh(embedded_store, now)
    (excess,) = baseline.load(embedded_store, now, subjects=[f"customer={tag}"]).slow_excess_usd
    assert 10 < excess < 20  # over the day's own noise, under the floor of a single day's shift
    fired = [a for at in (now, now + timedelta(minutes=5)) for a in detect_spend_anomalies(embedded_store, at)
             if a.subject == f"customer={tag}" and a.state == "firing"]
    assert len(fired) == 1 and "sustained shift" in fired[0].message


def _nightly_job(store, tag: str, first_night: datetime, *, tonight: float) -> tuple[datetime, list[int]]:
    """A job at 02:00 ± 5 min on 28 nights from ``first_night``, its size night to night lognormal (sigma 0.2,
    about 40 $0.25 calls over 8 minutes, $7-13 a night as in issue 18's case), then on the 29th night at 02:02
    ``tonight`` × the largest night so far; that night's 02:00 and the calls per night."""
    rng = np.random.default_rng(1)
    sizes = [int(n) for n in np.round(40 * rng.lognormal(0.0, 0.2, size=28))]
    sizes.append(int(round(tonight * max(sizes))))
    keys = {"team": f"{tag}-data", "feature": f"{tag}-nightly", "customer": f"{tag}-etl"}
    events: list[dict] = []
    for night, calls in enumerate(sizes):
        start = first_night + timedelta(days=night, minutes=2 if night == 28 else int(rng.integers(-5, 6)))
        events += _calls(tag, len(events), [start + timedelta(seconds=480 * k / calls) for k in range(calls)],
                         **keys)
    _store(store, events)
    return first_night + timedelta(days=28), sizes


def _night_alerts(store, tag: str, night: datetime) -> list:
    """Every pass from 01:50 to 02:40 of ``night``, each after its hour's refresh: the job's spend alerts."""
    fired = []
    for minutes in range(-10, 45, 5):
        at = night + timedelta(minutes=minutes)
        baseline.refresh(store, at)
        fired += [a for a in detect_spend_anomalies(store, at) if tag in a.subject and a.kind == "spend_anomaly"]
    return fired


@pytest.mark.integration
def test_a_nightly_job_at_the_top_of_its_own_night_to_night_spread_is_not_an_anomaly(embedded_store) -> None:
    """Issue 18's held-out case: a job's busiest 10 minutes vary night to night, and a typical night times a
    margin sits inside that spread. A night as large as its largest (30 % over its usual, $13) is the job."""
    tag = f"night-{uuid.uuid4().hex[:8]}"
    night, sizes = _nightly_job(embedded_store, tag, datetime(2021, 5, 3, 2, tzinfo=timezone.utc), tonight=1.0)
    assert sizes[-1] >= 1.3 * np.median(sizes[:-1])  # over a typical night's peak margin: the case
    assert _night_alerts(embedded_store, tag, night) == []


@pytest.mark.integration
def test_a_nightly_job_at_three_times_its_largest_night_still_fires(embedded_store) -> None:
    tag = f"night3-{uuid.uuid4().hex[:8]}"
    night, _ = _nightly_job(embedded_store, tag, datetime(2021, 7, 5, 2, tzinfo=timezone.utc), tonight=3.0)
    fired = [a for a in _night_alerts(embedded_store, tag, night) if a.state == "firing"]
    assert f"feature={tag}-nightly,customer={tag}-etl" in {a.subject for a in fired}
    assert {a.subject for a in fired} <= {f"team={tag}-data", f"feature={tag}-nightly", f"customer={tag}-etl",
                                          f"feature={tag}-nightly,customer={tag}-etl"}


@pytest.mark.integration
def test_one_request_longer_than_any_before_is_not_a_rise_and_the_same_dollars_over_several_requests_are(
        embedded_store) -> None:
    """Session s24's outside evaluation (code trace): three of four noise pages were a single request of 150k–255k
    output tokens ($1.5–3.1), longer than anything its customer or feature had sent in nine days, seen by two
    passes in a row. Two customers of $0.10 calls, 5 every 10 minutes for 12 days and on; 5 minutes into the hour
    one of them sends one call of 600k output tokens ($6.25) beside them, the other eight of 60k ($0.85 each): the
    second pages, the first does not."""
    tag = f"one-{uuid.uuid4().hex[:8]}"
    now = datetime(2026, 9, 9, 14, 0, tzinfo=timezone.utc)  # 2026-09: a month no other test uses
    one, several = f"{tag}-one", f"{tag}-several"
    for k, customer in enumerate((one, several)):
        store_customer_calls(embedded_store, customer, now, lambda at: 1.0, seed=40 + k)
    assert baseline.refresh(embedded_store, now)
    at = now + timedelta(minutes=5)
    extra = [{"event_id": f"{one}-x", "request_id": f"{one}-rx", "ts": at.isoformat(), "provider": "openai",
              "model": "gpt-4o", "input_tokens": 100_000, "output_tokens": 600_000, "customer": one}]
    extra += [{"event_id": f"{several}-x{j}", "request_id": f"{several}-rx{j}",
               "ts": (at + timedelta(seconds=10 * j)).isoformat(), "provider": "openai", "model": "gpt-4o",
               "input_tokens": 100_000, "output_tokens": 60_000, "customer": several} for j in range(8)]
    extra += [{"event_id": f"{customer}-o{j}", "request_id": f"{customer}-ro{j}",  # their usual calls go on
               "ts": (now + timedelta(minutes=2 * j, seconds=30)).isoformat(), "provider": "openai", "model": "gpt-4o",
               "input_tokens": 40_000, "output_tokens": 0, "customer": customer}
              for customer in (one, several) for j in range(8)]
    _store(embedded_store, extra)
    fired = {a.subject for m in (10, 15) for a in detect_spend_anomalies(embedded_store, now + timedelta(minutes=m))
             if a.state == "firing" and tag in a.subject}
    assert fired == {f"customer={several}"}
