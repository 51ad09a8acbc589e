"""What a page on a new price says (issue 18, the outside evaluation): a pair moved to a pricier model fires on its
price per request alone, and its page said "$0.00 above what is expected; the last 24 h ran $… above their usual"
— the fast window's nothing and a day's total — never that each request now costs four times what it did."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from spendstream.detect import baseline
from spendstream.detect.anomaly import Price, detect_spend_anomalies, slow_news
from tests.test_detect_spend_price import busy_pair  # a feature × customer that is a small part of both
from tests.test_spend_anomaly import _calls, _store  # $0.25 gpt-4o calls at given times; stored as a worker does

NOW = datetime(2020, 2, 13, 14, 0, tzinfo=timezone.utc)  # a Thursday; this file's months: 2020-01 and 2020-02 only


@pytest.mark.integration
def test_a_switch_to_a_pricier_model_pages_its_price_per_request_from_what_to_what_since_when(embedded_store) -> None:
    tag = f"pricepage-{uuid.uuid4().hex[:8]}"
    customer, feature = f"{tag}-c", f"{tag}-chat"
    start, switched = NOW - timedelta(days=10), NOW - timedelta(hours=2)
    events: list[dict] = []
    # the pair, a small part of its busy customer and feature: a call every 2 minutes at $0.25; for the last two
    # hours the same calls at $1.00 (o3)
    calls = busy_pair(tag, events, start, switched, customer=customer, feature=feature, others=tag)
    events += _calls(tag, len(events), [at for at in calls if at >= switched], customer=customer, feature=feature,
                     model="o3")
    _store(embedded_store, events)
    assert baseline.refresh(embedded_store, NOW)
    fired = [a for at in (NOW, NOW + timedelta(minutes=5)) for a in detect_spend_anomalies(embedded_store, at)
             if tag in a.subject and a.state == "firing"]
    assert [a.subject for a in fired] == [f"feature={feature},customer={customer}"]
    message = fired[0].message
    # 30 calls an hour at $1.00 where $0.25 was usual: $22.50 over in each of the two hours since 12:00
    assert re.search(r"^price per request \$0\.250\d -> \$1\.00\d\d \(4\.0x\) since 2020-02-13 12:00 UTC on model o3 "
                     r"\(was gpt-4o\): \$45\.\d\d above what those requests usually cost \(\$22\.\d\d an hour\); ",
                     message), message
    assert "$0.00 above what is expected" not in message


def test_a_rise_in_volume_leads_with_the_day_and_a_dearer_hour_on_the_same_model_is_a_cost_not_a_price() -> None:
    """Session s22's outside evaluation: a customer growing 15 % a day whose requests ran dearer for an hour was
    paged "price per request … 1.7x on model gpt-4.1", as if a price had moved; the rise was mostly more requests."""
    hour = datetime(2026, 11, 19, 20, 0, tzinfo=timezone.utc)
    creep = Price(1, 0.0213, 0.0365, 1.43, hour, model="gpt-4.1", was="gpt-4.1")
    text = slow_news(creep, slow_excess=30.0)
    assert text.startswith("the last 24 h ran $30.00 above their usual (a sustained shift, $1.25 an hour); of that, "
                           "cost per request $0.0213 -> $0.0365 (1.7x) since 2026-11-19 19:00 UTC on model gpt-4.1, "
                           "the same model as before: $1.43 above"), text
    assert "price per request" not in text
    # a switch that explains the day's rise leads with its new price, from what model to what
    switch = Price(2, 0.25, 1.0, 45.0, hour, model="o3", was="gpt-4o")
    assert slow_news(switch, slow_excess=46.0).startswith("price per request $0.2500 -> $1.0000 (4.0x) since "
                                                          "2026-11-19 18:00 UTC on model o3 (was gpt-4o): $45.00")
    assert slow_news(None, slow_excess=24.0) == "the last 24 h ran $24.00 above their usual (a sustained shift, " \
                                                "$1.00 an hour)"


@pytest.mark.integration
def test_the_model_before_a_new_price_is_the_days_not_the_hours_just_before_it(embedded_store) -> None:
    """A customer of a feature switched from gpt-4o to o3 at 11:20, whose run of dearer hours counts from 13:00: the
    model before is the day's (gpt-4o), not 11:00–13:00's (o3 already). Session s23's outside evaluation paged such a
    customer "cost per request … on model o3, the same model as before"."""
    from spendstream.detect.anomaly import top_models

    tag = f"was-{uuid.uuid4().hex[:8]}"
    switched = datetime(2026, 7, 15, 11, 20, tzinfo=timezone.utc)  # 2026-07: a month no other test uses
    times = [switched - timedelta(hours=24) + timedelta(minutes=10 * k) for k in range(6 * 28)]  # to 15:20
    events = (_calls(tag, 0, [t for t in times if t < switched], customer=f"{tag}-c", feature=f"{tag}-f")
              + _calls(tag, 1_000, [t for t in times if t >= switched], customer=f"{tag}-c", feature=f"{tag}-f",
                       model="o3"))
    _store(embedded_store, events)
    since, end = switched.replace(hour=13, minute=0), switched.replace(hour=15, minute=0)
    assert top_models(embedded_store, f"customer={tag}-c", since=since, end=end) == ("o3", "gpt-4o")
