"""A model switch resolves when its requests are back at their usual price (issue 18, session s18).

The slow window's price test judges closed hours: a switch that ended at 14:20 keeps 13:00 and 14:00 over their
line until the refresh at 16:00 (the outside evaluation: switches open 4-5 h after). The current window's own
requests say sooner that the price is back (:meth:`~spendstream.detect.spend.SpendAnomalyRule.price_back`).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from spendstream.detect import baseline
from spendstream.detect.anomaly import detect_spend_anomalies
from spendstream.detect.incidents import Hysteresis
from spendstream.detect.spend import SpendAnomalyRule
from tests.test_spend_anomaly import _calls, _store  # $0.25 gpt-4o calls at given times; stored as a worker does

NOW = datetime(2023, 2, 16, 14, 0, tzinfo=timezone.utc)  # a Thursday; this file's months: 2023-02 and 2023-04 only


def test_a_window_prices_its_requests_only_where_the_closed_hours_found_a_new_price() -> None:
    rule = SpendAnomalyRule()
    usual, new = np.full(5, 0.25), np.full(5, 1.0)
    first = rule.price_back(price_hours=np.array([2, 2, 2, 2, 0]), usual_per_request=usual, per_request=new,
                            observed_usd=np.array([2.5, 10.0, 1.25, 0.75, 2.5]),
                            observed_requests=np.array([10, 10, 5, 3, 10]))
    # ten requests back at $0.25; ten still at $1.00; five too few to tell $0.25 from $1.00 apart, three too few
    # to price; no new price to be over
    assert first.tolist() == [True, False, False, False, False]
    # once seen back: over until a window is over the price test's own line (ten at $1.00), not at $0.40 a request
    # or with three requests
    seen = rule.price_back(price_hours=np.array([2, 2, 2, 2, 0]), usual_per_request=usual, per_request=new,
                           observed_usd=np.array([2.5, 10.0, 4.0, 3.0, 2.5]),
                           observed_requests=np.array([10, 10, 10, 3, 10]), seen_back=np.ones(5, dtype=bool))
    assert seen.tolist() == [True, False, True, True, False]


def test_a_calm_that_only_a_slow_window_let_go_waits_the_longest() -> None:
    """An incident hot for two passes resolves after three calm ones; calm only because the slow window that held
    it was let go (a new price over, a band from before the rise), after the most (six): a rise in waves, which the
    slow window held as one incident, stays one."""
    h = Hysteresis(fire_after=2, resolve_after=3, resolve_after_max=6)

    def calm_passes_to_resolve(patient: bool) -> int:
        incident = None
        for _ in range(2):
            incident, _ = h.step(incident, kind="k", subject="s", hot=True, very_hot=False, calm=False, onset=NOW,
                                 severity="warning")
        for n in range(1, 10):
            incident, transition = h.step(incident, kind="k", subject="s", hot=False, very_hot=False, calm=True,
                                          onset=NOW, severity="warning", patient=patient)
            if transition == "resolved":
                return n
        return 0

    assert (calm_passes_to_resolve(False), calm_passes_to_resolve(True)) == (3, 6)


@pytest.mark.integration
def test_a_switch_to_a_pricier_model_resolves_when_its_requests_cost_what_they_did(embedded_store) -> None:
    """A pair's calls (one a minute) cost $1.00 instead of $0.25 from 12:00 to 14:20. Its incident opens on the
    price test at 14:00-14:05; by 14:30 its window's requests cost $0.25 again. Before: the closed hours 13:00
    and 14:00 held it past the refresh at 15:00, and it was still open at 16:00 (main's code: trigger only).
    Now it resolves within the hour, and the refresh at 15:00, whose closed hours still run at the new price,
    does not open it again."""
    tag = f"priceback-{uuid.uuid4().hex[:8]}"
    customer, feature = f"{tag}-c", f"{tag}-chat"
    start, switched, ended = NOW - timedelta(days=10), NOW - timedelta(hours=2), NOW + timedelta(minutes=20)
    events: list[dict] = []
    # the customer's and the feature's own busy traffic ($1 calls every 30 s), so the pair is a small part of both
    busy = [start + timedelta(seconds=30 * k) for k in range(2 * (10 * 1440 + 180))]
    events += _calls(tag, len(events), busy, customer=f"{tag}-other", feature=feature, model="o3")
    events += _calls(tag, len(events), [at + timedelta(seconds=15) for at in busy], customer=customer,
                     feature=f"{tag}-search", model="o3")
    # the pair: a call a minute at $0.25, and from 12:00 to 14:20 the same calls at $1.00 (o3)
    calls = [start + timedelta(minutes=m, seconds=5) for m in range(10 * 1440 + 180)]
    events += _calls(tag, len(events), [at for at in calls if not switched <= at < ended], customer=customer,
                     feature=feature)
    events += _calls(tag, len(events), [at for at in calls if switched <= at < ended], customer=customer,
                     feature=feature, model="o3")
    _store(embedded_store, events)
    pair = f"feature={feature},customer={customer}"
    alerts = []
    for minute in range(0, 125, 5):  # 14:00 to 16:00, refreshed on the hour as the refresher does
        at = NOW + timedelta(minutes=minute)
        if at.minute == 0:
            assert baseline.refresh(embedded_store, at)
        alerts += [(minute, a.state) for a in detect_spend_anomalies(embedded_store, at)
                   if a.subject == pair and not a.correlated_with]
    known = baseline.load(embedded_store, NOW + timedelta(hours=1), subjects=[pair])
    assert known.price_hours[0] > 0 and not known.slow_calm[0]  # 15:00: the closed hours still at the new price
    assert [state for _, state in alerts] == ["firing", "resolved"], alerts
    assert alerts[1][0] <= 20 + 10 + 30  # the end, its window clearing, the calm passes
