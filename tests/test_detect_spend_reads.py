"""The spend pass's window reads equal raw ``FINAL``: the scan counts attempts (a bound on requests, which is all
that choosing the subjects to judge needs), and the distinct requests of the judged subjects are read apart
(issue 17: a set of request ids per subject was most of the scan). Re-deliveries, a request retried, one without a
request id, and events at the short window's millisecond edge. The pass judges every subject by its attempts
first and counts requests only for those hot by them: that needs a verdict that never falls as requests rise."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import numpy as np
import orjson
import pytest

from spendstream.agents.stages import process
from spendstream.batches import SourceRecord
from spendstream.detect.anomaly import recent_requests, recent_spend
from spendstream.detect.noise import Expectation
from spendstream.detect.spend import SpendAnomalyRule
from spendstream.pricing import Pricer
from spendstream.sinks.rows import usage_table
from spendstream.sinks.store import sql_time

NOW = datetime(2024, 3, 6, 14, 0, 0, 250_000, tzinfo=timezone.utc)


def _store(store, events: list[dict]) -> None:
    store.insert_arrow("usage_events", usage_table(process([SourceRecord("usage", 0, 0, orjson.dumps(events))],
                                                           Pricer())))


def _raw(store, subject_column: str, value: str, *, start: datetime, end: datetime) -> tuple[float, float, float]:
    """(USD, attempts, distinct requests) of one key's events in [start, end), straight from raw FINAL."""
    row = store.query(f"""
        SELECT toFloat64(sumIf(ifNull(total_cost, 0), priced)), toFloat64(count()),
               toFloat64(uniqExact(ifNull(request_id, event_id)))
        FROM usage_events FINAL WHERE {subject_column} = {{v:String}}
          AND ts >= {{a:DateTime64(3, 'UTC')}} AND ts < {{b:DateTime64(3, 'UTC')}}""",
                      {"v": value, "a": sql_time(start), "b": sql_time(end)}).rows[0]
    return float(row[0]), float(row[1]), float(row[2])


def _dearest(store, subject_column: str, value: str, *, start: datetime, end: datetime) -> float:
    """The priced dollars of one key's dearest request (its attempts) in [start, end), straight from raw FINAL."""
    return float(store.query(f"""
        SELECT toFloat64(max(usd)) FROM (
            SELECT sumIf(ifNull(total_cost, 0), priced) AS usd FROM usage_events FINAL
            WHERE {subject_column} = {{v:String}}
              AND ts >= {{a:DateTime64(3, 'UTC')}} AND ts < {{b:DateTime64(3, 'UTC')}}
            GROUP BY ifNull(request_id, event_id))""",
                             {"v": value, "a": sql_time(start), "b": sql_time(end)}).scalar())


@pytest.mark.integration
def test_the_window_scan_counts_attempts_and_the_judged_subjects_requests_equal_raw_final(embedded_store) -> None:
    tag = f"reads-{uuid.uuid4().hex[:8]}"
    customer, other = f"{tag}-looping", f"{tag}-quiet"
    short_start = datetime.fromisoformat(sql_time(NOW - timedelta(minutes=5))).replace(tzinfo=timezone.utc)
    events = []

    def call(at: datetime, request: str | None, attempt: int = 1, **keys) -> None:
        events.append({"event_id": f"{tag}-{len(events)}", "ts": at.isoformat(timespec="milliseconds"),
                       "provider": "openai", "model": "gpt-4o", "input_tokens": 100_000, "output_tokens": 0,
                       "attempt": attempt, "customer": customer, "feature": f"{tag}-chat", **keys,
                       **({"request_id": request} if request else {})})

    for r in range(4):  # four requests, three attempts each: 12 attempts, 4 requests
        for attempt in (1, 2, 3):
            call(NOW - timedelta(minutes=9 - 2 * r, seconds=-10 * attempt), f"{tag}-r{r}", attempt)
    call(short_start - timedelta(milliseconds=1), f"{tag}-edge")   # just before the short window
    call(short_start, f"{tag}-edge", attempt=2)                    # its retry, just inside: one request in both
    call(short_start + timedelta(seconds=5), None)                 # no request id: the event is the request
    call(NOW - timedelta(minutes=11), f"{tag}-old")                # before the window
    call(NOW - timedelta(minutes=1), f"{tag}-q", customer=other, feature=None)  # another customer, no feature
    _store(embedded_store, events)
    _store(embedded_store, events[:6])  # re-delivered: FINAL keeps one copy

    start = NOW - timedelta(minutes=10)
    spent = recent_spend(embedded_store, start=start, end=NOW, since=short_start)
    subjects = [f"customer={customer}", f"feature={tag}-chat,customer={customer}", f"customer={other}"]
    assert all(s in spent for s in subjects)
    requests = recent_requests(embedded_store, subjects, start=start, end=NOW, since=short_start)
    assert set(requests) == set(subjects)  # only those asked for
    for subject, column, value in ((subjects[0], "customer", customer), (subjects[2], "customer", other)):
        usd, attempts, distinct = _raw(embedded_store, column, value, start=start, end=NOW)
        late_usd, late_attempts, late_distinct = _raw(embedded_store, column, value, start=short_start, end=NOW)
        assert spent[subject] == (usd, attempts, late_usd, late_attempts)
        assert requests[subject] == (distinct, late_distinct,
                                     _dearest(embedded_store, column, value, start=start, end=NOW))
    # 12 + 3 attempts, 8 of them in the last 5 minutes; 4 + 2 requests, 2 + 2 of them in the last 5 minutes; the
    # dearest request is one of the four of three attempts (the edge's two straddle the short window, not the window)
    assert spent[subjects[0]][1::2] == (15, 8) and requests[subjects[0]][:2] == (6.0, 4.0)
    assert requests[subjects[0]][2] == pytest.approx(3 * spent[subjects[0]][0] / 15)
    assert requests[subjects[1]] == requests[subjects[0]]
    assert spent[f"feature={tag}-chat"][1] == 15 and f"feature=,customer={other}" not in spent
    assert recent_requests(embedded_store, [], start=start, end=NOW) == {}


@pytest.mark.parametrize("seed", range(30))
def test_a_spend_verdict_never_falls_as_requests_rise_so_attempts_find_every_hot_subject(seed: int) -> None:
    rule, rng = SpendAnomalyRule(), np.random.default_rng(seed)
    n = 3000
    cost = rng.choice([0.0, 0.05, 0.3, 2.0, 20.0], n) * rng.random(n)
    expected = Expectation(cost=cost, sigma=rng.random(n) * cost, peak=cost * rng.random(n) * 2,
                           requests=rng.random(n) * 30, dispersion=rng.choice([0.0, 0.1, 1.0], n))
    short = Expectation(cost=cost / 2, sigma=rng.random(n) * cost / 2, peak=expected.peak,
                        requests=expected.requests / 2, dispersion=expected.dispersion)
    observed = cost * rng.choice([0.5, 1.0, 1.6, 3.0, 10.0], n) + rng.choice([0.0, 0.9, 1.1, 3.0], n)
    requests = rng.choice([0.0, 1.0, 4.0, 5.0, 8.0, 30.0], n)
    attempts = requests + rng.choice([0.0, 0.0, 1.0, 3.0, 40.0], n)
    late_requests = np.minimum(requests, rng.choice([0.0, 2.0, 5.0, 20.0], n))
    late_attempts = late_requests + (attempts - requests) * rng.random(n).round()
    pair = rng.random(n) < 0.3
    history = np.full(n, float(rule.warmup_hours))

    def judge(req: np.ndarray, late_req: np.ndarray):
        return rule.fast(expected, observed_usd=observed, observed_requests=req, history_hours=history, pair=pair,
                         short=short, short_usd=observed * rng_share, short_requests=late_req)

    rng_share = rng.choice([0.2, 0.6, 0.9], n)
    exact, bound = judge(requests, late_requests), judge(attempts, late_attempts)
    assert exact.hot.any() and (bound.hot & ~exact.hot).any()  # the draws straddle the thresholds
    assert not (exact.hot & ~bound.hot).any() and not (exact.very_hot & ~bound.very_hot).any()
    assert (exact.calm == bound.calm).all() and (exact.excess_usd == bound.excess_usd).all()
