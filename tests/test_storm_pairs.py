"""A storm on one customer of a busy feature: a few per cent more failures in the feature's total and in the
customer's, most of its feature × customer pair. Found on the pair, on a real store; and what the pass leaves
out of its pairs can never be hot."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import numpy as np
import orjson
import pytest

from spendstream.agents.stages import process
from spendstream.batches import SourceRecord
from spendstream.detect import baseline
from spendstream.detect.retry_storm import detect_retry_storms
from spendstream.detect.storm import RetryStormRule
from spendstream.pricing import Pricer
from spendstream.sinks.rows import usage_table
from spendstream.sinks.store import query_result, sql_time
from tests.test_detect_pruning import _storm_inputs

NOW = datetime(2023, 9, 20, 12, 0, tzinfo=timezone.utc)  # a month no other test writes to


@pytest.mark.integration
def test_a_storm_hidden_in_its_feature_and_its_customer_is_found_on_their_pair(embedded_store) -> None:
    run = uuid.uuid4().hex[:8]
    feature, customer = f"search-{run}", f"acme-{run}"
    events, n = [], 0

    def calls(pair: tuple[str, str], start: datetime, minutes: int, per_minute: int, fail_every: int) -> None:
        nonlocal n
        for m in range(minutes):
            for k in range(per_minute):
                n += 1
                fails = n % fail_every == 0
                ok = {"event_id": f"{run}-{n}", "request_id": f"{run}-r{n}", "attempt": 2 if fails else 1,
                      "ts": (start + timedelta(minutes=m, seconds=(k * 7) % 60)).isoformat(), "status": "ok",
                      "provider": "openai", "model": "gpt-4o-mini", "feature": pair[0], "customer": pair[1],
                      "input_tokens": 1_000 + n % 500, "output_tokens": 20}
                events.append(ok)
                if fails:  # the failed first attempt, a 500
                    events.append({**ok, "event_id": f"{run}-{n}-a1", "attempt": 1, "status": "error",
                                   "http_status": 500})

    others = [(feature, f"{customer}-other"), (f"{feature}-other", customer)]
    for pair in [*others, (feature, customer)]:  # the usual: 2 % of requests fail once, for more than a day
        calls(pair, NOW - timedelta(hours=30), 30 * 60 - 10, 1, 50)
    for pair in others:  # the last ten minutes: both totals busy, failing as usual
        calls(pair, NOW - timedelta(minutes=10), 10, 80, 50)
    calls((feature, customer), NOW - timedelta(minutes=10), 10, 4, 2)  # the storm: half its requests fail
    embedded_store.insert_arrow("usage_events", usage_table(process(
        [SourceRecord("usage", 0, 0, orjson.dumps(events))], Pricer())))
    baseline.refresh(embedded_store, NOW)
    fired = {a.subject: a for a in detect_retry_storms(embedded_store, NOW) if run in a.subject}
    # 20 failed of 60 attempts on the pair against its usual 2 %; in the feature's (and the customer's) 876
    # attempts, 36 failed where about 17 are usual: 2.1x, under a storm's 2.5x
    assert sorted(fired) == [f"feature={feature},customer={customer}"]
    (alert,) = fired.values()
    assert alert.state == "firing" and alert.severity == "error"
    assert "20 failed of 60 attempts" in alert.message
    # its two hours are stated as measured (no verdict reads them), equal to raw's; no loop or longest request
    # is judged for a pair, so none is stated (before: "0 failed of 0 in 2 h ... $0.00 wasted")
    ((attempts, failed, usd),) = query_result(embedded_store, """
        SELECT count(), countIf(status != 'ok'), sumIf(total_cost, status != 'ok')
        FROM usage_events FINAL WHERE feature = {f:String} AND customer = {c:String}
              AND ts >= {a:DateTime64(3, 'UTC')} AND ts < {b:DateTime64(3, 'UTC')}""",
        {"f": feature, "c": customer, "a": sql_time(NOW - timedelta(hours=2)), "b": sql_time(NOW)}).rows
    assert int(failed) > 20 and int(attempts) > 60
    assert f"{failed} failed of {attempts} in 2 h" in alert.message
    assert f"${Decimal(usd):.2f} wasted on failed attempts in 2 h" in alert.message and Decimal(usd) > 0
    assert "longest request" not in alert.message and "repeated request shape" not in alert.message


@pytest.mark.parametrize("seed", range(20))
def test_pairs_left_out_can_never_be_hot_and_change_no_other_verdict(seed: int) -> None:
    """A pair is judged on its fast window alone (the pass reads no slow window, loop or longest request for it):
    one that :meth:`RetryStormRule.can_storm` rules out is never hot, and judging without it changes nothing."""
    rule, rng = RetryStormRule(), np.random.default_rng(seed)
    inputs = _storm_inputs(rng, subjects=300, providers=3)
    pairs = ~inputs["counted"] & (rng.random(300) < 0.5)
    for name in ("slow_failed", "slow_attempts"):
        inputs[name] = np.where(pairs[:, None], 0.0, inputs[name])
    for name in ("max_attempt", "repeats", "slow_repeats"):
        inputs[name] = np.where(pairs, 0.0, inputs[name])
    verdict = rule.judge(**inputs)
    left_out = pairs & ~rule.can_storm(inputs["failed"].sum(axis=1))
    assert left_out.any() and (pairs & ~left_out).any()  # the draw exercises both sides
    assert not (verdict.hot & left_out).any() and not (verdict.very_hot & left_out).any()
    kept = ~left_out
    pruned = rule.judge(**{k: v[kept] for k, v in inputs.items()})
    for field in ("hot", "very_hot", "calm", "expected_ratio", "z"):
        assert np.array_equal(getattr(pruned, field), getattr(verdict, field)[kept]), field


@pytest.mark.integration
def test_one_storm_lifting_its_pair_feature_and_customer_pages_once(embedded_store) -> None:
    """A quiet customer's only feature storms: its pair, its feature and its customer are all hot, with the same
    failures. One incident, delivered under the pair (the most specific) and naming the other two; their alerts
    are stored attached (``correlated_with``), not delivered on their own."""
    run, now = uuid.uuid4().hex[:8], datetime(2022, 5, 11, 12, 0, tzinfo=timezone.utc)  # a month no other test uses
    feature, customer = f"lonely-{run}", f"quiet-{run}"
    events, n = [], 0
    for m in range(30 * 60):  # a day and more: four requests a minute, 2 % fail once; the last 20 minutes half fail
        for k in range(4):
            n += 1
            storm = m >= 30 * 60 - 20
            fails = n % 2 == 0 if storm else n % 50 == 0
            ok = {"event_id": f"{run}-{n}", "request_id": f"{run}-r{n}", "attempt": 2 if fails else 1,
                  "ts": (now - timedelta(hours=30, minutes=-m, seconds=-15 * k)).isoformat(), "status": "ok",
                  "provider": "openai", "model": "gpt-4o-mini", "feature": feature, "customer": customer,
                  "input_tokens": 1_000, "output_tokens": 20}
            events.append(ok)
            if fails:
                events.append({**ok, "event_id": f"{run}-{n}-a1", "attempt": 1, "status": "error", "http_status": 500})
    embedded_store.insert_arrow("usage_events", usage_table(process(
        [SourceRecord("usage", 0, 0, orjson.dumps(events))], Pricer())))
    baseline.refresh(embedded_store, now)
    alerts = []
    for at in (now - timedelta(minutes=5), now):  # two hot passes: it fires
        alerts += [a for a in detect_retry_storms(embedded_store, at) if run in a.subject]
    pair = f"feature={feature},customer={customer}"
    fired = {a.subject: a for a in alerts if a.state == "firing"}
    assert sorted(fired) == sorted([pair, f"feature={feature}", f"customer={customer}"])
    delivered = [a for a in fired.values() if a.correlated_with is None]
    assert [a.subject for a in delivered] == [pair]
    assert {a.correlated_with for a in fired.values() if a.subject != pair} == {delivered[0].dedup_key}
    assert delivered[0].message.startswith(f"customer={customer} on feature={feature}: ")
    assert delivered[0].message.endswith(f"; also lifts customer={customer} and feature={feature}")
