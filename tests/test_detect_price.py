"""A subject's usual price per request and how it wanders (``noise.learn``), and the slow window's price verdict."""

from __future__ import annotations

import numpy as np

from spendstream.detect.noise import SIZE_CV2, learn
from spendstream.detect.spend import SpendAnomalyRule

HOURS = 21 * 24


def _learned(requests: np.ndarray, cost: np.ndarray):
    zeros = np.zeros_like(requests)
    return learn(requests=requests, cost=cost, attempts=requests, failed=zeros, peak_cost=cost / 6,
                 first_hour_of_week=0, first_hour=np.zeros(len(requests), dtype=int))


def test_one_models_price_wanders_with_its_sizes_a_mix_of_two_models_wanders_more() -> None:
    rng = np.random.default_rng(3)
    requests = rng.poisson(40, size=(2, HOURS)).astype(float)
    # one model: $0.25 a request, sizes gamma with cv² 1; two: each hour a random share at $1 and the rest at $0.10
    one = rng.gamma(requests[0], 0.25)
    share = rng.uniform(0, 1, size=HOURS)
    two = rng.gamma(requests[1] * share + 1e-9, 1.0) + rng.gamma(requests[1] * (1 - share) + 1e-9, 0.10)
    profiles = _learned(requests, np.stack([one, two]))
    assert np.allclose(profiles.per_request[0], 0.25, rtol=0.2)  # four weekend days of an hour: ± 8 %
    assert SIZE_CV2 <= profiles.price_cv2[0] < 1.5 * SIZE_CV2
    assert profiles.price_cv2[1] > 5 * profiles.price_cv2[0]


def test_two_hours_at_four_times_the_price_are_hot_one_hour_or_twice_the_requests_are_not() -> None:
    rule = SpendAnomalyRule()
    usual = 0.25
    requests = np.full((4, 24), 30.0)
    cost = requests * usual
    cost[0, -2:] *= 4          # a switch for two hours
    cost[1, -1] *= 4           # one hour
    requests[2, -2:] *= 2      # twice the requests at the usual price
    cost[2, -2:] *= 2
    verdict = rule.slow(observed_usd=cost, expected_usd=np.full((4, 24), 30 * usual),
                        expected_requests=np.full((4, 24), 30.0), history_hours=np.full(4, 24 * 28),
                        observed_requests=requests, per_request=np.full((4, rule.price_hours), usual),
                        price_cv2=np.full(4, SIZE_CV2))
    assert verdict.hot.tolist() == [True, False, False, False]
    assert verdict.calm.tolist() == [False, False, True, True]  # the last hour still at its new price: not calm
    assert verdict.excess_usd[0] >= 2 * 30 * usual * 3 - 1e-9
