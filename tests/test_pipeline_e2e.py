"""End to end through a real broker (tansu) into a worker process writing to real chdb."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest

from spendstream.emitter import Emitter
from spendstream.schemas import UsageEvent
from spendstream.sinks.store import query_result
from tests.conftest import produce_raw, wait_for_count
from tests.reference import genai_total

pytestmark = pytest.mark.integration


def test_events_are_priced_stored_once_and_bad_input_is_dead_lettered(broker, topic, worker) -> None:
    querier = worker.query_client()
    good = [UsageEvent(event_id=f"ok-{n}", provider="openai", model="gpt-4o-mini", input_tokens=1000 + n,
                       cached_input_tokens=n, output_tokens=10 * n, team=f"team-{n % 3}") for n in range(500)]
    with Emitter(bootstrap_servers=broker, topic=topic, max_batch_events=64, register_atexit=False) as emitter:
        for event in good:
            emitter.emit(event)
        for event in good[:50]:  # the emitter re-sends some events: they must not count twice
            emitter.emit(event)
        assert emitter.flush(30)
    # Records the emitter would never make: a single object, garbage, and a batch whose
    # middle event has a field of the wrong type.
    single = UsageEvent(event_id="single", provider="anthropic", model="claude-3-5-haiku-latest",
                        input_tokens=100, output_tokens=5)
    mixed = [{"event_id": "mixed-1", "ts": "2026-11-01T00:00:00Z", "provider": "openai", "model": "gpt-4o",
              "input_tokens": 10},
             {"event_id": "mixed-bad", "ts": "2026-11-01T00:00:00Z", "provider": "openai", "model": "gpt-4o",
              "input_tokens": "ten"},
             {"event_id": "mixed-2", "ts": "2026-11-01T00:00:00Z", "provider": "self-hosted", "model": "llama",
              "input_tokens": 10}]
    produce_raw(broker, topic, [single.model_dump_json().encode(), b"{definitely not json", orjson.dumps(mixed)])

    stored = wait_for_count(querier, "SELECT count() FROM usage_events FINAL", 500 + 1 + 2)
    dead = wait_for_count(querier, "SELECT count() FROM dead_letters FINAL", 2)
    assert (stored, dead) == (503, 2)

    reasons = dict(query_result(querier, "SELECT ifNull(event_id, 'whole record'), reason FROM dead_letters").rows)
    assert "input_tokens" in reasons["mixed-bad"] and "integer" in reasons["mixed-bad"]
    assert "not valid JSON" in reasons["whole record"]
    raw = query_result(querier, "SELECT raw FROM dead_letters WHERE item_index = -1").scalar()
    assert raw == "{definitely not json"

    expected = sum((genai_total(e) for e in good), Decimal(0))
    got = query_result(querier, "SELECT sum(total_cost) FROM usage_events FINAL WHERE startsWith(event_id, 'ok-')")
    assert got.scalar() == expected

    unpriced = query_result(querier, "SELECT priced, total_cost, unpriced_reason FROM usage_events FINAL "
                                     "WHERE event_id = 'mixed-2'").rows
    assert unpriced[0][0] is False and unpriced[0][1] is None and "self-hosted" in unpriced[0][2]
