"""The spend pass counts the requests of its hot subjects building only the kinds of subject they are
(``baseline.subjects_sql``): the same counts as with every kind built, for each kind alone and mixed, including
names another kind could also make (a customer named like a leaf, a feature named like a pair)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import orjson
import pytest

from spendstream.agents.stages import process
from spendstream.batches import SourceRecord
from spendstream.detect import anomaly, baseline
from spendstream.pricing import Pricer
from spendstream.sinks.rows import usage_table

NOW = datetime(2021, 1, 12, 10, 0, tzinfo=timezone.utc)  # (this file's month: 2021-01)


def test_only_the_kinds_a_name_can_be_are_built_and_every_kind_for_all_of_them() -> None:
    assert baseline.subjects_sql(["customer=c"]) == "arrayJoin([concat('customer=', ifNull(customer, ''))])"
    assert baseline.MODEL_SQL in baseline.subjects_sql(["feature=f,customer=c,model=m"])
    assert baseline.MODEL_SQL in baseline.subjects_sql(["customer=c,model=m"])  # a customer named like a leaf
    assert baseline.subjects_sql(["team=t", "feature=f", "customer=c", "feature=f,customer=c,model=m"]) == \
        baseline.SUBJECTS_SQL


@pytest.mark.integration
def test_requests_counted_by_the_kinds_of_the_names_equal_every_kind_built(embedded_store, monkeypatch) -> None:
    tag = f"kinds-{uuid.uuid4().hex[:8]}"
    events = []
    for k in range(40):
        keys = {"team": f"{tag}-t{k % 2}", "feature": f"{tag}-f{k % 3}", "customer": f"{tag}-c{k % 5}",
                "model": ("gpt-4o", "gpt-4o-mini")[k % 2]}
        if k % 7 == 0:
            keys["customer"] = f"{tag}-c0,model=gpt-4o"  # a customer whose pair reads like another pair's leaf
        events.append({"event_id": f"{tag}-{k}", "ts": (NOW - timedelta(seconds=13 * k + 1)).isoformat(),
                       "provider": "openai", "input_tokens": 1000, "output_tokens": 10, "attempt": 1 + k % 2,
                       "request_id": f"{tag}-r{k // 2}", **keys})
    embedded_store.insert_arrow("usage_events", usage_table(process(
        [SourceRecord("usage", 0, 0, orjson.dumps(events))], Pricer())))
    names = [f"team={tag}-t0", f"feature={tag}-f1", f"customer={tag}-c2", f"feature={tag}-f0,customer={tag}-c0",
             f"feature={tag}-f0,customer={tag}-c0,model=gpt-4o", f"customer={tag}-c0,model=gpt-4o"]
    window = {"start": NOW - timedelta(minutes=10), "end": NOW, "since": NOW - timedelta(minutes=5)}
    asked = [[n] for n in names] + [names, names[1:3], names[3:]]
    by_kinds = [anomaly.recent_requests(embedded_store, a, **window) for a in asked]
    monkeypatch.setattr(baseline, "subjects_sql", lambda _: baseline.SUBJECTS_SQL)
    assert by_kinds == [anomaly.recent_requests(embedded_store, a, **window) for a in asked]
    assert all(by_kinds[:5]) and by_kinds[4] != by_kinds[3]  # (each found; the leaf is a part of its pair)
