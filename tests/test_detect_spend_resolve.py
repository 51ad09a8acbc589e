"""A spend incident resolves when its rise is over (issue 18, session s17): the slow window holds only the incidents
it was hot on while they were open (:func:`~spendstream.detect.spend.resolve_calm`).

Pure cases of the rule, then the whole path on a real store through real delivery (the fixtures of
``tests/test_detect_correlate.py``): stored events -> hourly baselines -> passes every 5 minutes -> Slack and
PagerDuty receivers on 127.0.0.1.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from spendstream.detect import baseline
from spendstream.detect.anomaly import detect_spend_anomalies
from spendstream.detect.spend import resolve_calm
from tests.test_alert_routing import deliver_passes
from tests.test_detect_correlate import _world
from tests.test_spend_anomaly import _calls, _store


def test_the_slow_window_holds_a_resolve_unless_its_band_was_there_before_the_incident() -> None:
    fast_calm = np.array([True, True, True, False])
    slow_calm = np.array([False, False, True, True])
    held = np.array([False, True, True, False])
    # a fast rise on a day already in the slow band resolves; one whose slow window it lifted (or was hot) waits for
    # it; fast not calm waits
    assert resolve_calm(fast_calm, slow_calm, held).tolist() == [True, False, True, False]


@pytest.mark.integration
def test_a_night_abuse_on_a_feature_whose_day_runs_a_little_over_resolves_when_the_abuse_is_over(
        embedded_store) -> None:
    """The abused pair's feature has run 1.11-1.14 x its usual for a day (another customer a little busier): its
    slow window is neither hot (a sustained shift needs 1.15) nor calm (under 1.1), in the hour the abuse began
    in as in the next. Before, that band held the
    feature, attached to the pair's incident, open, and the root waited for it: the abuse, 28 minutes, paged and
    never resolved in 90 minutes (nor until the day's hours aged out). Now: one trigger, one resolve."""
    tag = f"band-{uuid.uuid4().hex[:6]}"
    now = datetime(2023, 4, 20, 3, 0, tzinfo=timezone.utc)
    # one more call of customer c3 on chat every 14 minutes for the last 30 hours: chat's hours (36 calls each)
    # run 4-5 calls over, customer c3 (6 calls an hour) and the team stay under what the slow window counts
    extra = [now - timedelta(hours=30) + timedelta(minutes=14 * j) for j in range(30 * 60 // 14)]
    _store(embedded_store, _calls(f"{tag}x", 0, extra, team=f"{tag}-team", feature=f"{tag}-chat",
                                  customer=f"{tag}-c3"))
    _world(embedded_store, tag, now, [("chat", "c1", 40)])
    baseline.refresh(embedded_store, now - timedelta(hours=1))  # the hour the abuse began in: the band was there
    pages, slack, stored = deliver_passes(embedded_store, tag, [now + timedelta(minutes=m) for m in range(0, 95, 5)],
                                          detect_spend_anomalies, refresh=True)
    known = baseline.load(embedded_store, now, subjects=[f"feature={tag}-chat"])
    assert known.subjects == [f"feature={tag}-chat"]
    assert not known.slow_hot[0] and not known.slow_calm[0]  # the band: the case this test is about
    assert [b["event_action"] for b in pages] == ["trigger", "resolve"]
    assert pages[0]["dedup_key"] == pages[1]["dedup_key"]
    assert len(slack) == 2  # Slack: the same trigger and resolve
    delivered = [a for a in stored if not a.correlated_with]
    assert [a.state for a in delivered] == ["firing", "resolved"]
    # the abuse ends 20 minutes after the first pass; its window clears 10 later; then the calm passes
    assert delivered[1].created_at <= now + timedelta(minutes=20 + 10 + 35)
    attached = [a for a in stored if a.correlated_with]
    assert f"feature={tag}-chat" in {a.subject for a in attached if a.state == "resolved"}
