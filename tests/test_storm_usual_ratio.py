"""A storm is measured against how its subject fails lately, not against itself: the usual failure ratio is the
last week less its worst day (``baseline.usual_fail_ratio``)."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from spendstream.detect import baseline
from spendstream.detect.retry_storm import detect_retry_storms
from tests.test_retry_storm import _store

NOW = datetime(2023, 11, 15, 12, 0, tzinfo=timezone.utc)  # a month no other test writes to


def test_the_worst_day_is_left_out_unless_it_is_the_only_one() -> None:
    hours = baseline.FAIL_HOURS
    attempts, failed = np.zeros((4, hours)), np.zeros((4, hours))
    attempts[0], failed[0, ::50] = 10.0, 10.0           # steady: 2 % of its attempts fail, every day alike
    attempts[1], failed[1, ::50] = 10.0, 10.0
    attempts[1, 30:32], failed[1, 30:32] = 500.0, 400.0  # ... and a storm on its second day
    attempts[2, 100], failed[2, 100] = 40.0, 10.0        # one active hour: nothing else to compare it with
    ratio = baseline.usual_fail_ratio(attempts, failed)
    assert ratio[0] == pytest.approx(failed[0, :144].sum() / attempts[0, :144].sum(), rel=0.3)  # its usual
    assert ratio[1] < 0.03                               # the storm's day is not its usual
    assert ratio[2] == 0.25 and ratio[3] == 0.0


@pytest.mark.integration
def test_a_second_storm_in_a_week_is_found_though_the_first_is_in_the_baseline(embedded_store) -> None:
    feature = f"quiet-{uuid.uuid4().hex[:8]}"
    events, n = [], 0

    def calls(start: datetime, minutes: int, per_minute: int, failures: int, every: int) -> None:
        nonlocal n, events
        for m in range(minutes):
            for k in range(per_minute):
                n += 1
                fails = failures if n % every == 0 else 0
                ok = {"event_id": f"{feature}-{n}", "request_id": f"{feature}-r{n}",
                      "ts": (start + timedelta(minutes=m, seconds=k % 60)).isoformat(), "attempt": fails + 1,
                      "status": "ok", "provider": "openai", "model": "gpt-4o-mini", "feature": feature,
                      "input_tokens": 1_000 + n % 500, "output_tokens": 20}
                events.append(ok)
                events += [{**ok, "event_id": f"{feature}-{n}-a{a}", "attempt": a, "status": "error",
                            "http_status": 500} for a in range(1, fails + 1)]

    calls(NOW - timedelta(hours=72), 72 * 60 - 5, 2, 1, 50)  # the usual: 2 % of requests fail once
    calls(NOW - timedelta(hours=48), 60, 40, 2, 1)            # a storm two days ago: every request fails twice
    calls(NOW - timedelta(minutes=5), 5, 40, 1, 1)            # another now: every request fails once
    _store(embedded_store, events)
    baseline.refresh(embedded_store, NOW)
    fired = [a for a in detect_retry_storms(embedded_store, NOW) if a.subject == f"feature={feature}"]
    # the week through now fails at ~31 % (the first storm's 4,800 failures), and this storm at 50 %: held to the
    # week, it would read as usual
    assert [a.state for a in fired] == ["firing"]
    expected = float(re.search(r"expected ([0-9.]+)%", fired[0].message).group(1))
    assert expected < 10  # held to its usual few per cent, not to the week the first storm filled
