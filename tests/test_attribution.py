"""Attribution: the tag cardinality guard and the showback/chargeback views."""

from __future__ import annotations

import uuid
from decimal import Decimal

import orjson
import pytest

from spendstream.agents.attribution import TagGuard
from spendstream.agents.stages import process
from spendstream.batches import OTHER, SourceRecord
from spendstream.pricing import Pricer
from spendstream.sinks.rows import usage_table


def test_guard_folds_new_values_past_the_limit_and_counts_them() -> None:
    guard = TagGuard(limit=2)
    assert guard.fold({"route": "a", "region": "eu"}) == ({"route": "a", "region": "eu"}, [])
    assert guard.fold({"route": "b"}) == ({"route": "b"}, [])
    assert guard.fold({"route": "c", "region": "us"}) == ({"route": OTHER, "region": "us"}, ["route"])
    assert guard.fold({"route": "a"}) == ({"route": "a"}, [])  # values already kept stay themselves
    assert guard.fold({"route": "d"}) == ({"route": OTHER}, ["route"])
    assert guard.folded == {"route": 2}



# 400 keys: past the per-key column path, entry by entry
@pytest.mark.parametrize(("distinct_keys", "limit"), [(3, 25), (400, 4)])
def test_folding_columns_agrees_with_folding_event_by_event(distinct_keys: int, limit: int) -> None:
    import random

    import pyarrow as pa

    rng = random.Random(distinct_keys)
    by_event, by_columns = TagGuard(limit=limit), TagGuard(limit=limit)
    for batch in range(6):
        events = [{f"k{rng.randrange(distinct_keys)}": f"v{rng.randrange(60)}" for _ in range(rng.randrange(4))}
                  for _ in range(300)]
        expected = []
        for tags in events:
            folded_keys = by_event.fold(tags)[1]
            expected += [key in folded_keys for key in tags]
        keys = pa.array([key for tags in events for key in tags], pa.string())
        values = pa.array([value for tags in events for value in tags.values()], pa.string())
        assert by_columns.fold_entries(keys, values).tolist() == expected, f"batch {batch}"
    assert by_columns.folded == by_event.folded and sum(by_event.folded.values()) > 0


@pytest.mark.integration
def test_views_give_cost_per_request_and_per_successful_request(embedded_store) -> None:
    team = f"team-{uuid.uuid4().hex[:8]}"
    base = {"provider": "openai", "model": "gpt-4o-mini", "team": team, "feature": "search",
            "input_tokens": 1_000_000, "output_tokens": 0}
    # request r1: a 429 then a success; r2: a success; r3 on the next day: a success.
    # gpt-4o-mini: $0.15 per million input tokens, so each attempt costs $0.15.
    events = [
        {**base, "event_id": f"{team}-1", "request_id": f"{team}-r1", "attempt": 1, "status": "rate_limited",
         "ts": "2025-05-01T10:00:00Z", "tags": {"route": f"{team}-x"}},
        {**base, "event_id": f"{team}-2", "request_id": f"{team}-r1", "attempt": 2, "ts": "2025-05-01T10:00:05Z"},
        {**base, "event_id": f"{team}-3", "request_id": f"{team}-r2", "ts": "2025-05-01T11:00:00Z"},
        {**base, "event_id": f"{team}-4", "request_id": f"{team}-r3", "ts": "2025-05-02T09:00:00Z"},
    ]
    guard = TagGuard(limit=1)
    guard.fold({"route": "already-seen"})
    batch = process([SourceRecord("usage", 0, 0, orjson.dumps(events))], Pricer(), guard)
    embedded_store.insert_arrow("usage_events", usage_table(batch))

    folded = embedded_store.query("SELECT tags['route'], folded_tags FROM usage_events FINAL "
                                  "WHERE event_id = {e:String}", {"e": f"{team}-1"}).rows
    assert folded == [[OTHER, ["route"]]]

    daily = embedded_store.query(
        "SELECT toString(day), requests, successful_requests, cost_usd, cost_per_request, "
        "cost_per_successful_request, cost_per_1k_tokens FROM unit_costs_daily WHERE team = {t:String} ORDER BY day",
        {"t": team}).rows
    assert daily == [
        ["2025-05-01", 2, 2, Decimal("0.45"), Decimal("0.225"), Decimal("0.225"), Decimal("0.00015")],
        ["2025-05-02", 1, 1, Decimal("0.15"), Decimal("0.15"), Decimal("0.15"), Decimal("0.00015")],
    ]
    hourly = embedded_store.query("SELECT count(), sum(attempts), sum(cost_usd) FROM cost_hourly "
                                  "WHERE team = {t:String}", {"t": team}).rows[0]
    assert hourly == [3, 4, Decimal("0.6")]
    monthly = embedded_store.query("SELECT requests, cost_usd FROM cost_monthly WHERE team = {t:String}",
                                   {"t": team}).rows
    assert monthly == [[3, Decimal("0.6")]]
