"""One storm, one page (issue 18, the outside evaluation): a root stays open while a part it carries is open, and
what rises beside that part joins the open incident instead of paging as a new one.

The evaluation saw ``retry_storm:feature=tag-suggest,customer=cust-025`` page with its feature attached; twenty minutes
later another customer's pair on the same feature fired, took the feature (it explained more of it now), paged as a
new root, and the first root resolved while the feature it had carried still fired: two triggers, two resolves for
one storm on one feature."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import orjson
import pytest

from spendstream.agents.stages import process
from spendstream.batches import SourceRecord
from spendstream.detect.correlate import Step, correlate
from spendstream.detect.incidents import Incident
from spendstream.detect.retry_storm import detect_retry_storms
from spendstream.pricing import Pricer
from spendstream.sinks.rows import usage_table
from tests.test_alert_routing import deliver_passes

T = datetime(2020, 1, 15, 20, 15, tzinfo=timezone.utc)  # this file's months: 2020-01 and 2020-02 only
FEATURE, FIRST, SECOND = "feature=tag", "feature=tag,customer=c25", "feature=tag,customer=c3"


def _step(subject: str, excess: float, *, before: Incident | None, resolves: bool = False) -> Step:
    """A subject's pass: hot and firing (new, or still), or calm and resolved by its own state machine."""
    if resolves:
        return Step(before, None, "resolved", excess, False)
    after = before or Incident("retry_storm", subject, "firing", T, "error")
    return Step(before, after, None if before else "firing", excess, True)


def test_a_pair_rising_under_a_feature_an_open_root_carries_joins_that_root_which_waits_for_it() -> None:
    first = Incident("retry_storm", FIRST, "firing", T, "error")
    feature = Incident("retry_storm", FEATURE, "firing", T, "error", root=first.dedup_key)
    # the first pair calms and its own state machine resolves it; the feature still fires, now mostly the second
    # pair's, which fires this pass
    steps = {FIRST: _step(FIRST, 0.0, before=first, resolves=True), FEATURE: _step(FEATURE, 12.0, before=feature),
             SECOND: _step(SECOND, 11.0, before=None)}
    out = correlate(steps, {}, follow_parts=True)  # as retry storms correlate
    assert out[SECOND].after.root == first.dedup_key and out[FEATURE].after.root == first.dedup_key
    assert out[FIRST].transition is None and out[FIRST].after == first  # its resolve waits for what it carries
    # the second pair was never paged on its own: no trigger leaves (its alert is stored attached)
    assert not any(st.after is not None and not st.after.root and st.transition == "firing" for st in out.values())
    # spend anomalies (no ``follow_parts``): a second customer's rise on a feature is an actor of its own and pages;
    # the feature goes with it, and the first pair, carrying nothing open, resolves
    spend = correlate(steps, {})
    assert spend[SECOND].after.root == "" and spend[SECOND].transition == "firing"
    assert spend[FEATURE].after.root == spend[SECOND].after.dedup_key and spend[FIRST].transition == "resolved"


@pytest.mark.integration
def test_a_storm_moving_from_one_customer_of_a_feature_to_another_pages_once_and_resolves_once(embedded_store) -> None:
    """A feature of two customers fails 2 % for a day; customer c25's calls then fail half the time for 20 minutes,
    and from 10 minutes into that, customer c3's for 30 minutes. The first pair pages with its feature and customer
    attached; the second rises while the feature is still part of the first page. Before: the second pair paged as
    a new root (Slack and PagerDuty each got a second trigger) and the first resolved while the feature it carried
    still fired. Now: one trigger per destination, and one resolve, sent after every part of it has resolved."""
    run = uuid.uuid4().hex[:8]
    tag = f"carry-{run}"
    feature, c25, c3, other = f"{tag}", f"{tag}-c25", f"{tag}-c3", f"{tag}-other"
    events, n = [], 0
    storms = {c25: (T - timedelta(minutes=10), T + timedelta(minutes=10)),
              c3: (T, T + timedelta(minutes=30))}
    for m in range(-30 * 60, 60):
        at = T + timedelta(minutes=m)
        for customer, on in ((c25, feature), (c3, feature), (other, f"{tag}-elsewhere")):
            for k in range(4):
                n += 1
                start, end = storms.get(customer, (at, at))
                fails = n % 2 == 0 if start <= at < end else n % 50 == 0
                ok = {"event_id": f"{run}-{n}", "request_id": f"{run}-r{n}", "attempt": 2 if fails else 1,
                      "ts": (at + timedelta(seconds=15 * k)).isoformat(), "status": "ok", "provider": "openai",
                      "model": "gpt-4o-mini", "feature": on, "customer": customer, "input_tokens": 1_000,
                      "output_tokens": 20}
                events.append(ok)
                if fails:  # the failed first attempt, a 500
                    events.append({**ok, "event_id": f"{run}-{n}-a1", "attempt": 1, "status": "error",
                                   "http_status": 500})
    for chunk in range(0, len(events), 20_000):
        embedded_store.insert_arrow("usage_events", usage_table(process(
            [SourceRecord("usage", 0, 0, orjson.dumps(events[chunk:chunk + 20_000]))], Pricer())))
    pages, slack, stored = deliver_passes(embedded_store, tag, [T + timedelta(minutes=m) for m in range(0, 85, 5)],
                                          detect_retry_storms, refresh=True)
    pairs = {f"feature={feature},customer={c}" for c in (c25, c3)}
    assert {a.subject for a in stored if a.state == "firing"} >= pairs | {f"feature={feature}"}
    assert [b["event_action"] for b in pages] == ["trigger", "resolve"]
    assert pages[0]["dedup_key"] == pages[1]["dedup_key"]
    assert pages[0]["payload"]["component"] == f"feature={feature},customer={c25}"
    assert len(slack) == 2
    # every part of the page resolved (stored, attached) no later than the page's one resolve
    (resolve,) = [a for a in stored if not a.correlated_with and a.state == "resolved"]
    parts = [a for a in stored if a.correlated_with]
    assert {a.correlated_with for a in parts} == {pages[0]["dedup_key"]}
    assert f"feature={feature},customer={c3}" in {a.subject for a in parts}
    assert all(a.created_at <= resolve.created_at for a in parts if a.state == "resolved")
    assert resolve.created_at >= T + timedelta(minutes=40)  # after the second customer's storm ended
