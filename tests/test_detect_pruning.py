"""What a pass leaves out can never alert: the retry-storm pass judges only customers its fast window can make
hot, the spend pass reads baselines only for subjects its window can make hot (issue 17: a pass costs what its
windows read). Checked on the rules themselves over many random draws that straddle every threshold."""

from __future__ import annotations

import numpy as np
import pytest

from spendstream.detect.noise import Expectation
from spendstream.detect.spend import SpendAnomalyRule
from spendstream.detect.storm import RetryStormRule


def _storm_inputs(rng: np.random.Generator, subjects: int, providers: int) -> dict[str, np.ndarray]:
    attempts = rng.integers(0, 40, (subjects, providers)).astype(float)
    attempts[rng.random((subjects, providers)) < 0.4] = 0
    failed = np.minimum(attempts, rng.integers(0, 9, (subjects, providers))).astype(float)
    slow_attempts = attempts + rng.integers(0, 400, (subjects, providers))
    slow_failed = np.minimum(slow_attempts, failed + rng.integers(0, 60, (subjects, providers)))
    guard_attempts = attempts + rng.integers(0, 60, (subjects, providers))
    guard_failed = np.minimum(guard_attempts, failed + rng.integers(0, 6, (subjects, providers)))
    features = rng.random(subjects) < 0.3
    # a customer's burn window is its fast one (retry_storm.merged); a feature's its guard window
    now_attempts = np.where(features[:, None], guard_attempts, attempts)
    now_failed = np.where(features[:, None], guard_failed, failed)
    return dict(failed=failed, attempts=attempts, own_ratio=rng.choice([0.0, 0.01, 0.05, 0.2], subjects),
                slow_failed=slow_failed, slow_attempts=slow_attempts,
                max_attempt=rng.integers(1, 10, subjects).astype(float) * (attempts.sum(axis=1) > 0),
                repeats=rng.choice([0.0, 2.0, 11.0, 12.0, 30.0], subjects, p=[0.6, 0.2, 0.1, 0.05, 0.05]),
                slow_repeats=rng.choice([0.0, 5.0, 39.0, 40.0], subjects, p=[0.7, 0.2, 0.05, 0.05]),
                counted=features, now_failed=now_failed, now_attempts=now_attempts)


@pytest.mark.parametrize("seed", range(40))
def test_storm_pass_customers_left_out_can_never_be_hot_and_change_no_other_verdict(seed: int) -> None:
    rule, rng = RetryStormRule(), np.random.default_rng(seed)
    inputs = _storm_inputs(rng, subjects=300, providers=3)
    verdict = rule.judge(**inputs)
    customers = ~inputs["counted"]
    fires = rule.can_fire(failed=inputs["failed"].sum(axis=1), max_attempt=inputs["max_attempt"],
                          repeats=inputs["repeats"], slow_repeats=inputs["slow_repeats"])
    left_out = customers & ~fires
    assert left_out.any() and (customers & fires).any()  # the draw exercises both sides
    assert not (verdict.hot & left_out).any()
    assert not (verdict.very_hot & left_out).any()
    # judged without them, every other subject gets the very same verdict
    kept = ~left_out
    pruned = rule.judge(**{k: v[kept] for k, v in inputs.items()})
    for field in ("hot", "very_hot", "calm", "expected_ratio", "z"):
        assert np.array_equal(getattr(pruned, field), getattr(verdict, field)[kept]), field


@pytest.mark.parametrize("seed", range(40))
def test_spend_pass_subjects_without_a_baseline_lookup_can_never_be_hot(seed: int) -> None:
    rule, rng = SpendAnomalyRule(), np.random.default_rng(seed)
    n = 2000
    cost = rng.choice([0.0, 0.01, 0.3, 2.0], n) * rng.random(n)
    expected = Expectation(cost=cost, sigma=rng.random(n) * cost, peak=cost * rng.random(n) * 2,
                           requests=rng.random(n) * 20)
    observed = rng.choice([0.0, 0.5, 0.99, 1.0, 1.5, 5.0], n) * rng.uniform(0.9, 1.1, n)
    requests = rng.choice([0.0, 1.0, 4.0, 5.0, 30.0], n)
    verdict = rule.fast(expected, observed_usd=observed, observed_requests=requests,
                        history_hours=np.full(n, float(rule.warmup_hours)))
    fires = rule.could_fire(observed_usd=observed, observed_requests=requests)
    assert verdict.hot.any() and (~fires).any()
    assert not (verdict.hot & ~fires).any()
    assert not (verdict.very_hot & ~fires).any()
