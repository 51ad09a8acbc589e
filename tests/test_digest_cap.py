"""A destination's hourly message budget holds on the cycle's clock (held-out evaluation, issue 18).

The held-out run drives the alert cycle with a simulated clock weeks behind the wall clock, as the
detector evaluation and any replay of an old day do, and a Slack channel capped at 4 an hour got 5-10
messages in one simulated hour: the count of messages sent (``alert_messages``) expired by the time
the cycle's clock stamped on them, so every row was dropped as it was inserted and the budget always
looked unspent. These tests send through the real delivery path to receivers on 127.0.0.1.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from spendstream.alerting.delivery import AlertRouting, Notifier, Route, store_new_alerts
from spendstream.alerting.destinations import Destination
from spendstream.alerting.outbox import messages_sent
from spendstream.schemas.alert import Alert
from tests.test_alert_delivery import Receiver

KINDS = ["spend_anomaly", "retry_storm", "new_spender", "budget_burn", "idle_gpu", "unpriced_model"]
CAP = 4


def _alert(tag: str, n: int, state: str, at: datetime) -> Alert:
    return Alert(kind=KINDS[n % len(KINDS)], severity="error", state=state, subject=f"feature={tag}-{n}",
                 window_start=at - timedelta(minutes=10), window_end=at, observed=Decimal(2), expected=Decimal(1),
                 dedup_key=f"cap:{tag}:{n}", message=f"{state} {n}", created_at=at)


@pytest.mark.integration
@pytest.mark.parametrize("weeks_behind", [0, 4])  # on the wall clock, and a month back as a simulation runs
def test_a_burst_to_one_destination_gets_at_most_its_hourly_budget(embedded_store, weeks_behind: int) -> None:
    tag = f"cap-{uuid.uuid4().hex[:8]}"
    start = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(weeks=weeks_behind)
    clock = {"now": start}
    slack, hook = Receiver(), Receiver()
    arrivals: dict[str, list[datetime]] = {"slack": [], "hook": []}
    stored = 0
    try:
        routing = AlertRouting(
            destinations=[Destination(name=f"slack-{tag}", kind="slack", url=slack.url("/hook"), max_per_hour=CAP),
                          Destination(name=f"hook-{tag}", kind="webhook", url=hook.url("/alerts"),
                                      max_per_hour=CAP)],
            routes=[Route(destination=f"slack-{tag}", subjects=[tag]), Route(destination=f"hook-{tag}",
                                                                             subjects=[tag])])
        notifier = Notifier(embedded_store, routing, clock=lambda: clock["now"])
        # 12 distinct alerts of 6 kinds at once, then every 5 minutes for 70 minutes 2 more and 1 resolve
        for p in range(15):
            clock["now"] = start + timedelta(minutes=5 * p)
            new = ([_alert(tag, n, "firing", clock["now"]) for n in range(12)] if p == 0 else
                   [_alert(tag, 10 + 2 * p + k, "firing", clock["now"]) for k in range(2)]
                   + [_alert(tag, p, "resolved", clock["now"])])
            stored += store_new_alerts(embedded_store, new)
            seen = len(slack.requests), len(hook.requests)
            notifier.run_pass()
            arrivals["slack"] += [clock["now"]] * (len(slack.requests) - seen[0])
            arrivals["hook"] += [clock["now"]] * (len(hook.requests) - seen[1])
            if p == 0:  # six kinds over a budget of four: one digest of all twelve
                assert len(slack.requests) == 1 and slack.bodies()[0]["text"].startswith(":bell: digest of 12")
                counted = messages_sent(embedded_store, since=start)
                assert (counted.get(f"slack-{tag}"), counted.get(f"hook-{tag}")) == (1, 1)  # what the budget sees
    finally:
        slack.close()
        hook.close()
    for name, times in arrivals.items():
        busiest = max(sum(1 for t in times if at <= t < at + timedelta(hours=1)) for at in times)
        assert busiest <= CAP, (name, times)
    # nothing is lost to the budget: what waited went with a later digest
    assert sum(body["count"] for body in hook.bodies()) == stored == 12 + 14 * 3
